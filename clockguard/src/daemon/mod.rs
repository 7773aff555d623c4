//! `clockguard run`: kernel hook → ring buffer → decode → enrich → journal → subscribers.
//! Data flows one way; the control socket only reads the daemon's state through queries.
//!
//! - `setup`: start-up wiring (journal, control socket, eBPF programs, guard, NTP, the
//!   services' probes and log followers) giving the [`Daemon`] and its [`Inputs`];
//! - `event_loop`: waits on the inputs, hands each to the daemon, and stops it cleanly;
//! - `events`: what the daemon does with a kernel event, a timer, a service's exit or check,
//!   a kernel message (the decisions themselves are in clockguard-core);
//! - `queries`: the control socket's questions, the reload, the status report;
//! - `systemd`: sd_notify and the watchdog.

mod bound;
mod event_loop;
mod events;
mod queries;
mod setup;
mod systemd;
mod vmclock;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use clockguard_ebpf::{ClockEvent, ServiceExitEvent, TimerLateEvent};
use serde_json::{json, Value};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::{broadcast, mpsc},
};

use clockguard_core::{
    config::ReloadPlan,
    correlation::{jump_cause, service_trigger},
    lifecycle::{previous_stop, Heartbeat, PreviousStop},
    notify::notify_env,
    status::{
        DaemonStats, EnforcementStatus, JournalStatus, NtpStatus, SealingStatus, ServicesAnswer,
        Status, Summaries, TimersStatus, VmStatus,
    },
};

use crate::{
    bpf::{self, HookStatus, LoadOptions, Probes},
    clock,
    config::{Config, ConfigSource},
    control::{self, Query},
    enrich::Enricher,
    fallback::{self, Reconciler},
    guard::{self, Enforcement, PolicyEntry, TimeService},
    journal::{daemon_record, Appended, Journal},
    journald::Journald,
    kmsg::{self, ClockMessage},
    ntp,
    record::{self, Record, Source, Verdict},
    service_io::{self, ProcessInfo},
    services::{self, CheckOutcome, Tracker},
    slew::{LinuxClock, SlewConfig, SlewHandle},
    timers::{self, LateTimer, LatenessSummary, TimerWatch},
    vmfacts,
};

/// How often the error bound is published again between the discipline's updates: well
/// within the 5 s after which ClockBound's readers take a bound for FreeRunning.
const BOUND_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the slew engine measures its progress and re-programs the kernel.
pub(crate) const SLEW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Records kept in memory for `clockguard events` (the journal has them all).
const RECENT: usize = 256;
/// Events taken from the ring buffer per step.
const BATCH: usize = 256;
/// Records a slow `events --follow` subscriber may fall behind before it is told it lagged.
const LIVE_BACKLOG: usize = 1024;
/// Records kept in memory while the journal cannot be written (disk full, I/O error);
/// beyond this they are counted as lost.
const MAX_UNWRITTEN: usize = 65_536;

struct Daemon {
    config: Config,
    config_origin: String,
    /// Where the configuration is read from again on a reload.
    config_source: ConfigSource,
    started: Instant,
    started_wall: String,
    probes: Option<Probes>,
    load_error: Option<String>,
    /// Why the guard is not pinned although guard mode asked for it.
    not_pinned: Option<String>,
    hooks: Vec<HookStatus>,
    journal: Journal,
    /// Each journaled record also goes to the systemd journal, when there is one.
    journald: Journald,
    enricher: Enricher,
    reconciler: Reconciler,
    recent: VecDeque<Arc<str>>,
    live: broadcast::Sender<Arc<str>>,
    unwritten: Vec<Record>,
    stats: DaemonStats,
    last_tai_offset_s: i64,
    enforcement: Enforcement,
    policy: Vec<PolicyEntry>,
    time_services: Vec<TimeService>,
    /// The slew engine, running only while the guard enforces.
    slew: Option<SlewHandle>,
    /// The NTP service (servers or `serve` configured).
    ntp: Option<ntp::client::NtpHandle>,
    /// The clock error bound (`[bound]`, while the NTP client runs).
    bound: Option<bound::Publisher>,
    timers: TimerWatch,
    vmclock: vmclock::VmclockWatch,
    /// Keeps the kernel's per-program statistics on (`measure_hook_cost`) while held.
    hook_stats: Option<std::os::fd::OwnedFd>,
    /// Tracked services (`[[service]]`), and their processes as the last scan found them.
    services: Tracker,
    service_processes: std::collections::HashMap<u32, ProcessInfo>,
    /// The kernel's recent messages about its clocks (/dev/kmsg), oldest first; None when
    /// /dev/kmsg cannot be read.
    kernel_clock_messages: Option<VecDeque<ClockMessage>>,
    /// When the heartbeat file was last written.
    last_heartbeat: Option<Instant>,
    /// `stats.records_journaled` at the last heap trim and at the last sample: a burst that
    /// is over gives its freed heap back (see `trim_after_burst`).
    journaled_at_trim: u64,
    journaled_at_sample: u64,
    /// The epoch the kernel counts repeats under (REPEAT_EPOCH), advanced every
    /// `audit.summary_interval_ms`.
    repeat_epoch: u32,
}

/// Kernel clock messages kept for `status`.
const KERNEL_CLOCK_MESSAGES: usize = 32;

/// How often tracked services' processes are scanned (and, for a service without a probe,
/// checked: is a process running?).
const SERVICE_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// A notify or restart command still running after this long is killed.
const SERVICE_COMMAND_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the event loop waits on, as start-up left it (an absent source's arm is off).
struct Inputs {
    /// The clock events' ring buffer (None without eBPF).
    events: Option<AsyncFd<RingBuf<MapData>>>,
    /// Late timers (None unless the hrtimer hook is attached).
    timer_events: Option<AsyncFd<RingBuf<MapData>>>,
    /// Tracked services' exits (None without services or the sched_process_exit hook).
    service_events: Option<AsyncFd<RingBuf<MapData>>>,
    checks: mpsc::Receiver<(usize, CheckOutcome)>,
    log_matches: mpsc::Receiver<services::LogMatch>,
    service_scan: tokio::time::Interval,
    have_services: bool,
    /// /dev/kmsg (None when it cannot be read).
    kernel_messages: Option<AsyncFd<std::fs::File>>,
    sampler: tokio::time::Interval,
    repeat_interval: tokio::time::Interval,
    fallback_jumps: mpsc::Receiver<fallback::Jump>,
    queries: mpsc::Receiver<Query>,
    ntp: Option<ntp::client::NtpHandle>,
    /// Every second while the error bound is kept: published again, dated then.
    bound_refresh: Option<tokio::time::Interval>,
    /// The NTP service's measurements for the error bound (None without a bound).
    bound_updates: Option<tokio::sync::watch::Receiver<Option<clockguard_core::bound::Update>>>,
    /// A seal every `audit.seal_interval_s` (None while the journal is not sealed).
    seal_interval: Option<tokio::time::Interval>,
    /// The vmclock page's reads (None while no device is followed).
    vmclock_poll: Option<tokio::time::Interval>,
}

pub async fn run(config: Config, config_origin: String, config_source: ConfigSource) -> Result<()> {
    let (daemon, inputs) = setup::start(config, config_origin, config_source).await?;
    event_loop::run(daemon, inputs).await
}

/// In the runtime directory (gone at reboot, like the pins).
const HEARTBEAT_FILE: &str = "heartbeat.json";
const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
