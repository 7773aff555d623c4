//! `clockguard run`: kernel hook → ring buffer → decode → enrich → journal → subscribers.
//! Data flows one way; the control socket only reads the daemon's state through queries.

use std::{collections::VecDeque, path::Path, sync::Arc, time::Instant};

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
        DaemonStats, EnforcementStatus, JournalStatus, NtpStatus, ServicesAnswer, Status,
        Summaries, TimersStatus, VmStatus,
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
    journal::Journal,
    kmsg::{self, ClockMessage},
    ntp,
    record::{self, Record, Source, Verdict},
    service_io::{self, ProcessInfo},
    services::{self, CheckOutcome, Tracker},
    slew::{LinuxClock, SlewConfig, SlewHandle},
    timers::{self, LateTimer, LatenessSummary, TimerWatch},
    vmfacts,
};

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
    /// The NTP service runs (servers or `serve` configured).
    ntp_running: bool,
    timers: TimerWatch,
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

fn mono_ns() -> i64 {
    clock::read_ns(libc::CLOCK_MONOTONIC)
}

pub async fn run(config: Config, config_origin: String, config_source: ConfigSource) -> Result<()> {
    // No transparent huge pages for the daemon: with THP "always" (the test VM's Debian
    // kernel) khugepaged folds its small, sparse heap into 2 MiB pages some seconds after a
    // burst, +4 MB of RSS with nothing allocated, and heap trims no longer give memory
    // back. Huge pages buy a heap this size nothing. Failure only loses that saving.
    if let Err(err) = clockguard_sys::disable_transparent_huge_pages() {
        tracing::debug!("PR_SET_THP_DISABLE: {err}");
    }
    let (journal, journal_problems) = Journal::open(
        &config.state_dir,
        config.audit.max_journal_bytes,
        config.audit.keep_journals,
    )?;
    for problem in journal_problems {
        tracing::warn!("{problem}");
    }
    let read_gid = config
        .control
        .read_group
        .as_deref()
        .map(control::resolve_group)
        .transpose()?;
    let listener = control::bind(&config.runtime_dir, read_gid).await?;

    let tracefs = match bpf::ensure_tracefs() {
        Ok(path) => path,
        Err(err) => {
            tracing::warn!("{err:#}");
            std::path::Path::new("/sys/kernel/tracing")
        }
    };
    let guard_wanted = config.mode == crate::config::Mode::Guard
        && crate::lsm::active_lsms().bpf_active() != Some(false);
    let not_pinned = guard_wanted
        .then(crate::pinning::pins_would_end_with_daemon)
        .flatten();
    if let Some(why) = &not_pinned {
        tracing::warn!("guard not pinned: {why}; it ends with the daemon");
    }
    let (mut probes, load_error) = match Probes::load(&LoadOptions {
        disabled_hooks: &config.audit.disabled_hooks,
        emit_readonly: config.audit.journal_readonly,
        tracefs,
        timer_late_threshold_ns: (config.timers.stall_threshold_ms * 1e6) as u64,
        // Only a guard that can enforce is worth keeping in force without the daemon, and
        // only where the pins can outlive it.
        pin: guard_wanted && not_pinned.is_none(),
        repeats_in_full: config.audit.repeats_in_full,
    }) {
        Ok(p) => (Some(p), None),
        Err(err) => {
            tracing::error!("no eBPF hook at all: {err:#}; only the fallback detector runs");
            (None, Some(format!("{err:#}")))
        }
    };
    // Loading parsed the eBPF object and the kernel's BTF (megabytes, freed since): give
    // that memory back to the system instead of keeping it as the daemon's RSS for good.
    clockguard_sys::malloc_trim();
    let mut hooks = probes.as_ref().map(|p| p.hooks.clone()).unwrap_or_default();
    for hook in &hooks {
        if let Some(by) = &hook.replaced_by {
            tracing::info!(
                "hook {} ({}) not needed: {by} attached",
                hook.name,
                hook.kind
            );
            continue;
        }
        match (&hook.attached, &hook.error) {
            (true, None) => tracing::info!("hook {} ({}) attached", hook.name, hook.kind),
            (true, Some(note)) => tracing::warn!("hook {} attached: {note}", hook.name),
            (false, Some(why)) => {
                tracing::warn!("hook {} ({}) not attached: {why}", hook.name, hook.kind)
            }
            (false, None) => {}
        }
    }
    if probes.is_some() {
        // A name that matches no hook is a typo (or a name from another version): say so,
        // or the hook it meant stays attached without a word.
        for name in &config.audit.disabled_hooks {
            if !hooks.iter().any(|h| h.name == *name) {
                let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
                tracing::warn!(
                    "audit.disabled_hooks: no hook is named {name:?} (the hooks are: {})",
                    names.join(", ")
                );
            }
        }
    }
    let mut events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p) => {
            let ring = p.take_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?)
        }
        None => None,
    };

    let mut timer_events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p) if p.hook("hrtimer_expire_entry").is_some_and(|h| h.attached) => {
            let ring = p.take_timer_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the timer ring: {e}"))?)
        }
        _ => None,
    };
    // Tracked services: their track files are checked before anything is written, their
    // exits come from the kernel, their probes run as tasks of their own.
    let mut faulted = Vec::new();
    for service in &config.services {
        let carried = match &service.track_file {
            Some(path) => {
                service_io::prepare_track_file(&service.name, path)?;
                service_io::read_track_file(path) == Some(true)
            }
            None => false,
        };
        faulted.push(carried);
    }
    let tracker = Tracker::new(&config.services, &faulted, mono_ns());
    let mut service_events: Option<AsyncFd<RingBuf<MapData>>> = match probes.as_mut() {
        Some(p)
            if !config.services.is_empty()
                && p.hook("sched_process_exit").is_some_and(|h| h.attached) =>
        {
            let ring = p.take_service_events()?;
            let registered = clockguard_sys::poll_readable(ring);
            Some(registered.map_err(|e| anyhow::anyhow!("cannot poll the service ring: {e}"))?)
        }
        _ => None,
    };
    if !config.services.is_empty() && service_events.is_none() {
        tracing::warn!(
            "tracked services: the sched_process_exit hook is not attached; deaths are not \
             seen, only health checks run"
        );
    }
    let (check_tx, mut check_rx) = mpsc::channel::<(usize, CheckOutcome)>(64);
    for (index, service) in config.services.iter().enumerate() {
        if let Some(probe) = &service.probe {
            // Validated when the configuration was parsed.
            let addr: std::net::SocketAddr = probe.parse()?;
            tokio::spawn(probe_loop(
                index,
                addr,
                service.probe_expect.clone(),
                service.interval_ms,
                service.probe_timeout_ms,
                check_tx.clone(),
            ));
        }
    }
    drop(check_tx);
    let (log_tx, mut log_rx) = mpsc::channel::<services::LogMatch>(64);
    for (index, service) in config.services.iter().enumerate() {
        if let Some(path) = &service.log_file {
            tokio::spawn(log_loop(
                index,
                service_io::LogTail::new(path),
                service.log_patterns.clone(),
                log_tx.clone(),
            ));
        }
    }
    drop(log_tx);
    // The first scan runs before the loop (below).
    let mut service_scan = tokio::time::interval_at(
        tokio::time::Instant::now() + SERVICE_SCAN_INTERVAL,
        SERVICE_SCAN_INTERVAL,
    );
    service_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let have_services = !config.services.is_empty();

    // The kernel's own word on its clocks: the boot's history now, new messages as logged.
    let (mut kernel_messages, history) = match kmsg::open() {
        Ok(mut file) => {
            let history = kmsg::read_available(&mut file, true).unwrap_or_else(|err| {
                tracing::warn!("/dev/kmsg: {err}");
                Vec::new()
            });
            match clockguard_sys::poll_readable(file) {
                Ok(fd) => (Some(fd), history),
                Err(err) => {
                    tracing::warn!("cannot poll /dev/kmsg: {err}");
                    (None, history)
                }
            }
        }
        Err(err) => {
            tracing::warn!(
                "cannot read /dev/kmsg ({err}): the kernel's clocksource messages are not followed"
            );
            (None, Vec::new())
        }
    };
    for message in history.iter().filter(|m| m.is_instability()) {
        tracing::warn!(
            "before clockguard started, the kernel logged: {}",
            message.text
        );
    }

    let vm = vmfacts::read(Path::new("/sys"), Path::new("/proc"));
    if let Some(hypervisor) = &vm.hypervisor {
        tracing::info!(
            "running in a {hypervisor} virtual machine, clocksource {}",
            vm.clocksource.as_deref().unwrap_or("?")
        );
    }
    let mut sampler = tokio::time::interval(std::time::Duration::from_millis(
        config.timers.sample_interval_ms,
    ));
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut repeat_interval = tokio::time::interval(std::time::Duration::from_millis(
        config.audit.summary_interval_ms,
    ));
    repeat_interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pinned map goes on from a previous daemon's epoch, so its counts are older.
    let repeat_epoch = probes
        .as_ref()
        .and_then(|p| p.repeat_epoch().ok())
        .unwrap_or(0);

    let (jump_tx, mut jump_rx) = mpsc::channel(16);
    let mut fallback_status = HookStatus::new(
        "timerfd_cancel_on_set",
        "userspace",
        "timerfd(CLOCK_REALTIME, TFD_TIMER_CANCEL_ON_SET)".into(),
    );
    if config.audit.fallback_detector {
        match fallback::open() {
            Ok(timer) => {
                fallback_status.attached = true;
                tokio::spawn(async move {
                    if let Err(err) = fallback::run(timer, jump_tx).await {
                        tracing::error!("fallback detector stopped: {err:#}");
                    }
                });
            }
            Err(err) => {
                let (message, errno) = bpf::describe_error(err.as_ref());
                fallback_status.error = Some(message);
                fallback_status.errno = errno;
            }
        }
    } else {
        fallback_status.error = Some("disabled in the configuration".into());
    }
    hooks.push(fallback_status);

    let guard = start_guard(&config, probes.as_mut())?;
    let previous_heartbeat = read_heartbeat(&config.runtime_dir);

    let ntp = ntp::client::spawn(&config.ntp, guard.slew.clone(), &config.state_dir).await?;
    if ntp.is_some() && guard.slew.is_none() {
        tracing::info!(
            "NTP: measuring only ({} mode): the clock is disciplined in guard mode",
            guard.enforcement.mode
        );
    }

    let (query_tx, mut query_rx) = mpsc::channel(64);
    if let Some(listen) = &config.metrics.listen {
        let listener = crate::metrics::bind(listen).await?;
        tracing::info!(
            "metrics: serving GET /metrics on {}",
            listener.local_addr()?
        );
        tokio::spawn(crate::metrics::serve(
            listener,
            query_tx.clone(),
            ntp.clone(),
        ));
    }
    let (live, _) = broadcast::channel(LIVE_BACKLOG);
    let access = control::Access {
        admin_uid: clockguard_sys::effective_uid(),
        read_gid,
    };
    tokio::spawn(control::serve(
        listener,
        access,
        query_tx,
        live.clone(),
        ntp.clone(),
    ));

    let hook_stats = if config.audit.measure_hook_cost {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                tracing::warn!("measure_hook_cost: the kernel refused BPF_ENABLE_STATS: {err}");
                None
            }
        }
    } else {
        None
    };
    let mut daemon = Daemon {
        timers: TimerWatch::new(&config.timers, vm.hypervisor),
        started: Instant::now(),
        started_wall: record::rfc3339_ns(clock::realtime_ns()),
        config_origin,
        config_source,
        probes,
        load_error,
        not_pinned,
        hooks,
        journal,
        enricher: Enricher::system(),
        reconciler: Reconciler::default(),
        recent: VecDeque::with_capacity(RECENT),
        live,
        unwritten: Vec::new(),
        stats: DaemonStats::default(),
        last_tai_offset_s: clock::tai_offset_s(),
        config,
        enforcement: guard.enforcement,
        policy: guard.policy,
        time_services: guard.time_services,
        slew: guard.slew,
        last_heartbeat: None,
        journaled_at_trim: 0,
        journaled_at_sample: 0,
        repeat_epoch,
        ntp_running: ntp.is_some(),
        hook_stats,
        services: tracker,
        service_processes: Default::default(),
        kernel_clock_messages: kernel_messages.is_some().then(VecDeque::new),
    };
    daemon.journal_start(previous_heartbeat, guard.pins);
    daemon.on_kernel_messages(history);
    if have_services {
        // Track the services' processes before the first exit can be missed.
        daemon.on_service_scan();
    }
    let (head_seq, head_hash) = daemon.journal.head();
    tracing::info!(
        "clockguard {} running in {} mode (config: {}), journal {} (head seq {head_seq}, \
         hash {head_hash})",
        env!("CARGO_PKG_VERSION"),
        daemon.enforcement.mode,
        daemon.config_origin,
        daemon.journal.path().display()
    );
    notify_systemd("READY=1");

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // systemd's watchdog: pinged from this loop, so a loop that hangs is restarted.
    let watchdog_period = systemd_watchdog_period();
    // Without the watchdog the interval exists but its branch is off.
    let mut watchdog =
        tokio::time::interval(watchdog_period.unwrap_or(std::time::Duration::from_secs(3600)));
    if let Some(period) = watchdog_period {
        tracing::info!("systemd watchdog: pinging every {period:?}");
    }
    loop {
        tokio::select! {
            ready = readable(events.as_mut()), if events.is_some() => {
                let mut guard = ready?;
                // Bounded batches: a storm is journaled in steps of BATCH events, so memory
                // stays flat whatever the burst, and queries are answered in between.
                let batch = drain(guard.get_inner_mut(), BATCH);
                let more = batch.len() == BATCH;
                daemon.process(batch).await;
                if !more {
                    guard.clear_ready();
                }
            }
            ready = readable(timer_events.as_mut()), if timer_events.is_some() => {
                let mut guard = ready?;
                let batch = drain_decoded(guard.get_inner_mut(), BATCH, TimerLateEvent::from_bytes);
                let more = batch.len() == BATCH;
                daemon.on_late_timers(batch);
                if !more {
                    guard.clear_ready();
                }
            }
            ready = readable(service_events.as_mut()), if service_events.is_some() => {
                let mut guard = ready?;
                let batch = drain_decoded(guard.get_inner_mut(), BATCH, ServiceExitEvent::from_bytes);
                let more = batch.len() == BATCH;
                daemon.on_service_exits(batch);
                if !more {
                    guard.clear_ready();
                }
            }
            Some((service, outcome)) = check_rx.recv() => {
                let actions = daemon.services.on_check(service, outcome);
                daemon.apply_service_actions(actions);
            }
            Some(found) = log_rx.recv() => {
                let actions = daemon.services.on_log_match(found);
                daemon.apply_service_actions(actions);
            }
            _ = service_scan.tick(), if have_services => daemon.on_service_scan(),
            ready = readable(kernel_messages.as_mut()), if kernel_messages.is_some() => {
                let mut guard = ready?;
                match kmsg::read_available(guard.get_inner_mut(), false) {
                    Ok(messages) => daemon.on_kernel_messages(messages),
                    Err(err) => {
                        tracing::warn!("/dev/kmsg: {err}; no longer followed");
                        kernel_messages = None;
                        continue;
                    }
                }
                guard.clear_ready();
            }
            _ = sampler.tick() => daemon.on_sample(),
            _ = repeat_interval.tick(), if events.is_some() => daemon.on_repeat_interval(),
            Some(jump) = jump_rx.recv() => daemon.on_fallback_jump(jump),
            Some(query) = query_rx.recv() => daemon.answer(query),
            _ = watchdog.tick(), if watchdog_period.is_some() => notify_systemd("WATCHDOG=1"),
            _ = sighup.recv() => {
                daemon.reload(None);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    notify_systemd("STOPPING=1");
    // New repeats go to a new epoch while the ring buffer is drained; then, once no
    // program can still be counting into the old ones, every count is journaled.
    daemon.advance_repeat_epoch();
    // Whatever is still in the ring buffer is journaled before leaving.
    if let Some(ring) = events.as_mut() {
        loop {
            let batch = drain(ring.get_mut(), BATCH);
            let more = batch.len() == BATCH;
            daemon.process(batch).await;
            if !more {
                break;
            }
        }
    }
    crate::bpf::wait_for_running_programs();
    daemon.journal_repeats(u32::MAX);
    // The NTP service first: it writes the drift file and stops asking for corrections.
    if let Some(ntp) = &ntp {
        ntp.shutdown().await;
    }
    if let Some(slew) = &daemon.slew {
        slew.shutdown().await;
    }
    // A clean stop ends the guard with the daemon (a crash leaves it pinned, in force).
    let guard_released = daemon.probes.as_mut().is_some_and(Probes::release_pins);
    daemon.journal_and_publish(vec![daemon_record(
        "stop",
        json!({ "guard_released": guard_released }),
    )]);
    let _ = std::fs::remove_file(daemon.config.runtime_dir.join(HEARTBEAT_FILE));
    daemon.flush_unwritten();
    daemon.journal.sync().ok();
    let (head_seq, head_hash) = daemon.journal.head();
    tracing::info!("clockguard stopped; journal head seq {head_seq}, hash {head_hash}");
    Ok(())
}

/// The guard as this kernel and configuration allow it.
struct GuardSetup {
    enforcement: Enforcement,
    policy: Vec<PolicyEntry>,
    time_services: Vec<TimeService>,
    /// The slew engine, running only while the guard enforces.
    slew: Option<SlewHandle>,
    /// What became of the pinned guard: this daemon's pins, the hooks adopted, the pins of
    /// other builds released (null when not pinned).
    pins: Value,
}

/// Decides whether the guard enforces (and says why in the log), writes the policy into
/// the kernel, and starts the slew engine when it does.
fn start_guard(config: &Config, probes: Option<&mut Probes>) -> Result<GuardSetup> {
    let policy = guard::resolve_policy(&config.guard);
    let time_services = guard::other_time_services(Path::new("/"), Path::new("/proc"));
    let no_layout = "no eBPF object loaded".to_string();
    let enforcement = guard::decide(
        config.mode,
        &config.guard,
        &time_services,
        &guard::GuardHooks {
            settime: probes.as_deref().and_then(|p| p.hook("settime")),
            capable: probes.as_deref().and_then(|p| p.hook("capable")),
            // Both halves are needed: the one that failed, if any, says why.
            adjtimex: probes.as_deref().and_then(|p| {
                let exit = p.hook("do_adjtimex_exit").filter(|h| !h.attached);
                exit.or_else(|| p.hook("do_adjtimex"))
            }),
            lsms: crate::lsm::active_lsms(),
            exe_layout_error: match &probes {
                Some(p) => p.exe_layout_error.as_deref(),
                None => Some(&no_layout),
            },
        },
    );
    let mut pins = Value::Null;
    if let Some(p) = probes {
        // Written in observe mode too: the hooks then record what guard mode would refuse.
        p.set_guard(
            enforcement.active,
            config.guard.exclusive_discipline,
            &policy,
        )?;
        if enforcement.active {
            // This guard is in place: an older build's pinned one may go.
            let released = p.release_stale_pins();
            if let Some(dir) = p.pin_dir() {
                let adopted: Vec<&str> = p
                    .hooks
                    .iter()
                    .filter(|h| h.adopted)
                    .map(|h| h.name.as_str())
                    .collect();
                if !adopted.is_empty() {
                    tracing::warn!(
                        "guard: adopted {} hooks a previous clockguard left pinned in {}",
                        adopted.len(),
                        dir.display()
                    );
                }
                pins = json!({ "dir": dir, "adopted": adopted, "stale_released": released });
            }
        } else {
            // Nothing to keep in force when the daemon is gone.
            p.release_pins();
        }
    }
    for entry in policy
        .iter()
        .map(|e| &e.shown)
        .filter(|e| e.problem.is_none())
    {
        tracing::info!("guard policy: {} {}", entry.class, entry.path.display());
    }
    if enforcement.active {
        tracing::info!("guard: {}", enforcement.reason);
    } else {
        tracing::warn!("guard: {}", enforcement.reason);
    }
    for gap in &enforcement.gaps {
        tracing::warn!("guard: {gap}");
    }
    let slew = if enforcement.active {
        let slew_config = SlewConfig {
            max_slew_ppm: config.guard.max_slew_ppm,
            max_correction_ns: (config.guard.max_correction_s * 1e9) as i64,
        };
        let state = config.runtime_dir.join("slew-state.json");
        Some(
            SlewHandle::spawn(slew_config, LinuxClock, SLEW_INTERVAL, Some(state))
                .map_err(|e| anyhow::anyhow!("cannot start the slew engine: {e}"))?,
        )
    } else {
        None
    };

    Ok(GuardSetup {
        enforcement,
        policy,
        time_services,
        slew,
        pins,
    })
}

/// Up to `max` events from the ring buffer, decoded; an undecodable record is `None`.
fn drain(ring: &mut RingBuf<MapData>, max: usize) -> Vec<Option<ClockEvent>> {
    let mut out = Vec::with_capacity(max.min(64));
    while out.len() < max {
        let Some(item) = ring.next() else { break };
        out.push(ClockEvent::from_bytes(&item));
    }
    out
}

/// Probes one service every `interval_ms` and hands each result to the daemon.
async fn probe_loop(
    service: usize,
    addr: std::net::SocketAddr,
    expect: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    results: mpsc::Sender<(usize, CheckOutcome)>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let result = service_io::probe(
            addr,
            expect.as_deref(),
            std::time::Duration::from_millis(timeout_ms),
        )
        .await;
        let outcome = CheckOutcome {
            ok: result.is_ok(),
            detail: result.unwrap_or_else(|e| e),
            mono_ns: mono_ns(),
        };
        if results.send((service, outcome)).await.is_err() {
            return;
        }
    }
}

/// How often a service's log file is read for new lines.
const LOG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Follows one service's log file and hands each line with one of `patterns` to the
/// daemon. A read error is logged when it starts and when it ends, not every poll.
async fn log_loop(
    service: usize,
    mut tail: service_io::LogTail,
    patterns: Vec<String>,
    matches: mpsc::Sender<services::LogMatch>,
) {
    let mut every = tokio::time::interval(LOG_POLL_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        let lines = match tail.read_new_lines() {
            Ok(lines) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("{} is readable again", tail.path().display());
                }
                lines
            }
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot read {}: {err}", tail.path().display());
                }
                continue;
            }
        };
        for line in lines {
            let Some(pattern) = patterns.iter().find(|p| line.contains(p.as_str())) else {
                continue;
            };
            let found = services::LogMatch {
                service,
                mono_ns: mono_ns(),
                pattern: pattern.clone(),
                line,
            };
            if matches.send(found).await.is_err() {
                return;
            }
        }
    }
}

/// Up to `max` records from a ring buffer, decoded by `decode`; short records (another
/// ABI) are skipped.
fn drain_decoded<T>(
    ring: &mut RingBuf<MapData>,
    max: usize,
    decode: fn(&[u8]) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < max {
        let Some(item) = ring.next() else { break };
        out.extend(decode(&item));
    }
    out
}

impl Daemon {
    fn on_late_timers(&mut self, batch: Vec<TimerLateEvent>) {
        // One pass over kallsyms names the whole batch's callbacks.
        let addresses: Vec<u64> = batch.iter().map(|e| e.function).collect();
        let functions = match self.probes.as_mut() {
            Some(probes) => probes.kernel_functions(&addresses),
            None => Vec::new(),
        };
        for (index, event) in batch.into_iter().enumerate() {
            self.timers.late(LateTimer {
                cpu: Some(event.cpu),
                mono_ns: event.mono_ns as i64,
                lateness_ns: event.lateness_ns as i64,
                function: functions
                    .get(index)
                    .filter(|_| event.function != 0)
                    .cloned(),
            });
        }
    }

    /// Once a whole sample interval passed without records after some were journaled (an
    /// event storm, or one event), gives the heap they freed back to the system: glibc
    /// keeps freed chunks as RSS (in the VM, a 100,000-call storm left 2.1 MB of heap
    /// instead of 1.3). Never during a burst: trimming between batches would only fault
    /// the pages back in. A trim costs well under a millisecond.
    fn trim_after_burst(&mut self) {
        let journaled = self.stats.records_journaled;
        if journaled != self.journaled_at_trim && journaled == self.journaled_at_sample {
            clockguard_sys::malloc_trim();
            self.journaled_at_trim = journaled;
        }
        self.journaled_at_sample = journaled;
    }

    /// The sampler's tick: clocks, steal and clocksource; closes stalls that are over.
    fn on_sample(&mut self) {
        if self
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= HEARTBEAT_INTERVAL)
        {
            self.write_heartbeat();
        }
        self.trim_after_burst();
        let sys = Path::new("/sys");
        let sample = timers::read_sample(sys);
        // While clockguard slews, the kernel's rate changes between samples.
        let slew_ppm_limit = match &self.slew {
            Some(_) => self.config.guard.max_slew_ppm,
            None => 0.0,
        };
        let kernel_sees_timers = self.timer_hook_attached();
        let records = self.timers.sample(
            sample,
            timers::read_steal_ns(Path::new("/proc")),
            timers::online_cpus(sys),
            slew_ppm_limit,
            kernel_sees_timers,
            clock::realtime_minus_monotonic_ns(),
        );
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    async fn process(&mut self, batch: Vec<Option<ClockEvent>>) {
        if batch.is_empty() {
            return;
        }
        let tai_now = clock::tai_offset_s();
        let tai_change = tai_now - self.last_tai_offset_s;
        self.last_tai_offset_s = tai_now;
        let mut records = Vec::with_capacity(batch.len());
        for event in batch {
            let Some(event) = event else {
                self.stats.abi_mismatches += 1;
                continue;
            };
            // A TAI offset change (leap second) is charged to the in-kernel event of the
            // batch; syscall events measure across their own call.
            let change = if event.kind == clockguard_ebpf::EVENT_CLOCK_WAS_SET {
                tai_change
            } else {
                0
            };
            let mut record = record::decode(&event, tai_now, change);
            // clockguard's own reads of the kernel's rate (the clock sampler, each
            // sample_interval_ms) would fill a journal_readonly journal with itself.
            if record.kind == "read" && event.tgid == std::process::id() {
                self.stats.own_reads_not_journaled += 1;
                continue;
            }
            if record.verdict == Verdict::Denied
                && event.guard.class == clockguard_ebpf::CLASS_SLEW_INSTEAD
            {
                self.slew_instead(&mut record).await;
            }
            if let Some(delta) = record.delta_ns {
                self.reconciler.explained(delta);
            }
            self.enricher.enrich(&mut record, event.cgroup_id);
            if event.flags & clockguard_ebpf::FLAG_HAS_STACK != 0 {
                if let Some(probes) = self.probes.as_mut() {
                    record.stack = probes.kernel_stack(event.stack_id);
                }
            }
            records.push(record);
        }
        self.journal_and_publish(records);
    }

    /// Every summary interval: the kernel counts new repeats under a new epoch, and the
    /// counts of the epochs before the one that just ended are journaled. The one that
    /// just ended waits an interval more, and an RCU grace period passes first (see
    /// `wait_for_running_programs`), so that no program is still counting into what is
    /// read and deleted: a program preempted between reading the epoch and adding to its
    /// entry would otherwise add to an entry already freed, or to another key's.
    fn on_repeat_interval(&mut self) {
        let ended = self.repeat_epoch;
        self.advance_repeat_epoch();
        crate::bpf::wait_for_running_programs();
        self.journal_repeats(ended);
    }

    fn advance_repeat_epoch(&mut self) {
        let Some(probes) = self.probes.as_mut() else {
            return;
        };
        let next = self.repeat_epoch.wrapping_add(1);
        match probes.set_repeat_epoch(next) {
            Ok(()) => self.repeat_epoch = next,
            Err(err) => tracing::warn!("cannot advance the kernel's repeat epoch: {err:#}"),
        }
    }

    /// Journals one summary record per repeat count of the epochs before `before`, taking
    /// the counts out of the kernel.
    fn journal_repeats(&mut self, before: u32) {
        let Some(probes) = self.probes.as_mut() else {
            return;
        };
        let mut counts = match probes.take_repeats(before) {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!("cannot read the kernel's repeat counts: {err:#}");
                return;
            }
        };
        // In the order the calls were made.
        counts.sort_by_key(|(_, count)| count.first_mono_ns);
        let tai_offset_s = clock::tai_offset_s();
        let own = std::process::id();
        let mut records = Vec::new();
        for (key, count) in counts {
            let Some(mut record) = record::summary(&key, &count, tai_offset_s) else {
                continue;
            };
            // clockguard's own reads of the kernel's rate (journal_readonly), judged by the
            // same kind as in process() (decode names the calls' kind in `detail`).
            let of_kind = record.detail.as_ref().and_then(|d| d["kind"].as_str());
            if key.tgid == own && of_kind == Some("read") {
                self.stats.own_reads_not_journaled += count.summarised;
                continue;
            }
            self.enricher.enrich(&mut record, count.cgroup_id);
            records.push(record);
        }
        self.stats.summary_records += records.len() as u64;
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    fn on_fallback_jump(&mut self, jump: fallback::Jump) {
        self.stats.fallback_jumps += 1;
        let Some(unexplained) = self.reconciler.reconcile(&jump) else {
            return;
        };
        self.stats.fallback_unexplained += 1;
        // REALTIME at detection, in the new timeline.
        let wall = jump.seen_mono_ns + clock::realtime_minus_monotonic_ns();
        let record = Record {
            time: record::rfc3339_ns(wall),
            source: Source::Fallback,
            syscall: None,
            clock: Some("CLOCK_REALTIME".into()),
            kind: "step".into(),
            requested: json!({}),
            delta_ns: Some(unexplained),
            result: "0".into(),
            verdict: Verdict::Observed,
            clock_was_set: true,
            ..Default::default()
        };
        tracing::warn!(
            "clock jump of {:+.6} s that no kernel hook reported",
            unexplained as f64 / 1e9
        );
        self.journal_and_publish(vec![record]);
    }

    fn journal_and_publish(&mut self, mut records: Vec<Record>) {
        if !self.unwritten.is_empty() {
            let mut pending = std::mem::take(&mut self.unwritten);
            pending.append(&mut records);
            records = pending;
        }
        if let Err(err) = self.journal.append(&mut records) {
            self.stats.journal_errors += 1;
            tracing::error!(
                "{err:#}; keeping {} records in memory to retry",
                records.len()
            );
            if records.len() > MAX_UNWRITTEN {
                let lost = records.len() - MAX_UNWRITTEN;
                self.stats.records_lost_unwritable += lost as u64;
                records.drain(..lost);
            }
            self.unwritten = records;
            return;
        }
        self.stats.records_journaled += records.len() as u64;
        for cause in records.iter().filter_map(jump_cause) {
            *self.stats.jumps.entry(cause).or_default() += 1;
        }
        // Time jumps, for the tracked services (their own records never are one).
        let jumps: Vec<services::Jump> = if self.services.len() > 0 {
            let now = mono_ns();
            records
                .iter()
                .filter_map(|r| {
                    service_trigger(r).map(|cause| services::Jump::from_record(r, cause, now))
                })
                .collect()
        } else {
            Vec::new()
        };
        for record in records {
            let line: Arc<str> = match serde_json::to_string(&record) {
                Ok(s) => s.into(),
                Err(_) => continue,
            };
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(line.clone());
            let _ = self.live.send(line);
        }
        for jump in jumps {
            let actions = self.services.on_jump(jump);
            self.apply_service_actions(actions);
        }
    }

    /// The kernel's clock messages: kept for `status`; the watchdog marking a clocksource
    /// unstable while clockguard runs is journaled (source timers, kind
    /// clocksource_unstable), as the kernel switches clocksource right after.
    fn on_kernel_messages(&mut self, messages: Vec<ClockMessage>) {
        let mut records = Vec::new();
        for message in messages {
            if message.is_instability() && !message.before_start {
                tracing::warn!("the kernel: {}", message.text);
                records.push(Record {
                    time: record::rfc3339_ns(clock::realtime_ns()),
                    source: Source::Timers,
                    kind: "clocksource_unstable".into(),
                    cause: Some(message.kind.clone()),
                    detail: Some(json!({
                        "kernel_message": message.text,
                        "kmsg_seq": message.seq,
                        "uptime_s": message.uptime_s,
                        "clocksource": crate::vmfacts::current_clocksource(Path::new("/sys")),
                    })),
                    requested: json!({}),
                    result: "0".into(),
                    verdict: Verdict::Observed,
                    ..Default::default()
                });
            }
            let kept = self.kernel_clock_messages.get_or_insert_with(VecDeque::new);
            if kept.len() == KERNEL_CLOCK_MESSAGES {
                kept.pop_front();
            }
            kept.push_back(message);
        }
        if !records.is_empty() {
            self.journal_and_publish(records);
        }
    }

    /// Exits of tracked processes, from the kernel.
    fn on_service_exits(&mut self, batch: Vec<ServiceExitEvent>) {
        for event in batch {
            let scanned = self.service_processes.remove(&event.tgid);
            let exe = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_EXE != 0 {
                record::text(&event.exe)
            } else {
                scanned.as_ref().and_then(|p| p.exe.clone())
            };
            let ppid = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_PROCINFO != 0 {
                Some(event.ppid)
            } else {
                scanned.as_ref().map(|p| p.ppid)
            };
            let status = if event.flags & clockguard_ebpf::SERVICE_EXIT_HAS_CODE != 0 {
                services::ExitStatus::from_wait_status(event.exit_code)
            } else {
                services::ExitStatus::Unknown
            };
            let death = services::Death {
                service: event.service as usize,
                mono_ns: event.mono_ns as i64,
                pid: event.tgid,
                ppid,
                comm: record::text(&event.comm).unwrap_or_default(),
                exe,
                status,
            };
            let actions = self.services.on_death(death);
            self.apply_service_actions(actions);
        }
    }

    /// Every SERVICE_SCAN_INTERVAL: which processes belong to the services (the kernel
    /// tracks them from here on, and their children from fork), the "is it running" check
    /// of services without a probe, and the trackers' clock.
    fn on_service_scan(&mut self) {
        let found = service_io::scan(Path::new("/proc"), &self.config.services);
        let mut per_service = vec![0usize; self.services.len()];
        for info in found.values() {
            per_service[info.service as usize] += 1;
        }
        if let Some(probes) = self.probes.as_mut() {
            let wanted = found
                .iter()
                .map(|(pid, info)| (*pid, info.service))
                .collect();
            if let Err(err) = probes.sync_tracked(&wanted) {
                tracing::warn!("tracked services: {err:#}");
            }
        }
        self.service_processes = found;
        let now = mono_ns();
        let mut actions = Vec::new();
        for (index, count) in per_service.into_iter().enumerate() {
            self.services.set_processes(index, count);
            if self.services.config(index).probe.is_none() {
                actions.extend(self.services.on_check(
                    index,
                    CheckOutcome {
                        ok: count > 0,
                        detail: format!("{count} processes running"),
                        mono_ns: now,
                    },
                ));
            }
        }
        actions.extend(self.services.tick(now));
        self.apply_service_actions(actions);
    }

    fn apply_service_actions(&mut self, actions: Vec<services::Action>) {
        for action in actions {
            match action {
                services::Action::Journal {
                    service,
                    mut record,
                    mono_ns,
                    notify,
                } => {
                    record.time =
                        record::rfc3339_ns(mono_ns + clock::realtime_minus_monotonic_ns());
                    let name = self.services.config(service).name.clone();
                    let line = format!(
                        "service {name}: {} {}{}{}",
                        record.kind,
                        record
                            .comm
                            .as_deref()
                            .map(|c| format!("{c} (pid {}) ", record.pid.unwrap_or(0)))
                            .unwrap_or_default(),
                        record.result,
                        record
                            .cause
                            .as_deref()
                            .map(|c| format!(" (cause: {c})"))
                            .unwrap_or_default(),
                    );
                    if record.verdict == Verdict::Fault {
                        tracing::warn!("{line}");
                    } else {
                        tracing::info!("{line}");
                    }
                    // The notify command's input, taken before the record moves into the
                    // journal (only when there is a command to run).
                    let argv = self.services.config(service).notify.clone();
                    let notify_input = (notify && !argv.is_empty()).then(|| {
                        let unjournaled = serde_json::to_string(&record).unwrap_or_default();
                        (notify_env(&name, &record), unjournaled)
                    });
                    self.journal_and_publish(vec![*record]);
                    if let Some((env, unjournaled)) = notify_input {
                        // The journaled line (with its seq) when it was written.
                        let json = match self.unwritten.is_empty() {
                            true => self
                                .recent
                                .back()
                                .map(|l| l.to_string())
                                .unwrap_or(unjournaled),
                            false => unjournaled,
                        };
                        service_io::spawn_command(
                            &argv,
                            env,
                            json,
                            format!("service {name}: notify"),
                            SERVICE_COMMAND_LIMIT,
                        );
                    }
                }
                services::Action::TrackFile { service, fault } => {
                    let config = self.services.config(service);
                    let Some(path) = config.track_file.clone() else {
                        continue;
                    };
                    let name = config.name.clone();
                    match service_io::write_track_file(&path, fault) {
                        Ok(()) => {
                            self.services
                                .track_file_written(service, fault, clock::realtime_ns());
                            tracing::info!(
                                "service {name}: track file {} = {} ({})",
                                path.display(),
                                u8::from(fault),
                                if fault { "FAULT" } else { "healthy" }
                            );
                        }
                        Err(err) => {
                            self.stats.track_file_errors += 1;
                            tracing::error!(
                                "service {name}: cannot write track file {}: {err}",
                                path.display()
                            );
                        }
                    }
                }
                services::Action::Restart { service } => {
                    let config = self.services.config(service);
                    let env = vec![("CLOCKGUARD_SERVICE".to_string(), config.name.clone())];
                    service_io::spawn_command(
                        &config.restart,
                        env,
                        String::new(),
                        format!("service {}: restart", config.name),
                        SERVICE_COMMAND_LIMIT,
                    );
                }
            }
        }
    }

    fn flush_unwritten(&mut self) {
        if !self.unwritten.is_empty() {
            self.journal_and_publish(Vec::new());
        }
    }

    fn answer(&mut self, query: Query) {
        match query {
            Query::Status(reply) => {
                let _ = reply.send(Box::new(self.status()));
            }
            Query::Services(reply) => {
                let _ = reply.send(ServicesAnswer {
                    services: self.services.status(mono_ns()),
                });
            }
            Query::Recent(reply) => {
                let _ = reply.send(self.recent.iter().cloned().collect());
            }
            Query::Reload { peer, reply } => {
                let _ = reply.send(self.reload(peer));
            }
        }
    }

    /// Journals this start: how the previous run ended (a clean stop, or killed: then the
    /// time it was last alive and the events lost while it was down) and what became of
    /// the pinned guard. The events the adopted hooks wrote while no daemon ran follow it.
    fn journal_start(&mut self, previous: Option<Heartbeat>, pins: Value) {
        let stop = previous_stop(
            self.journal.previous_run_ended_cleanly(),
            previous.as_ref(),
            clock::realtime_ns(),
            self.ring_buffer_drops(),
        );
        let mut detail = json!({ "pid": std::process::id(), "guard": pins });
        detail["previous_stop"] = json!(stop.as_str());
        if let PreviousStop::Unclean {
            pid,
            last_alive_ns,
            down_at_most_s,
            ring_buffer_drops_while_down,
        } = stop
        {
            let last_alive = record::rfc3339_ns(last_alive_ns);
            tracing::warn!(
                "the previous clockguard (pid {pid}) did not stop cleanly: last alive \
                 {last_alive}, {down_at_most_s:.1} s ago"
            );
            detail["previous_pid"] = json!(pid);
            detail["last_alive"] = json!(last_alive);
            detail["down_at_most_s"] = json!(down_at_most_s);
            detail["ring_buffer_drops_while_down"] = json!(ring_buffer_drops_while_down);
        }
        self.journal_and_publish(vec![daemon_record("start", detail)]);
    }

    /// The kernel's count of events lost to a full ring buffer (None without eBPF).
    fn ring_buffer_drops(&self) -> Option<u64> {
        let counters = self.probes.as_ref()?.counters().ok()?;
        Some(counters.ring_buffer_drops)
    }

    /// The heartbeat file: when this daemon was last alive, for the next one to say how
    /// long no daemon ran if this one is killed.
    fn write_heartbeat(&mut self) {
        self.last_heartbeat = Some(Instant::now());
        let heartbeat = Heartbeat {
            pid: std::process::id(),
            realtime_ns: clock::realtime_ns(),
            ring_buffer_drops: self.ring_buffer_drops().unwrap_or(0),
        };
        let path = self.config.runtime_dir.join(HEARTBEAT_FILE);
        let written = serde_json::to_vec(&heartbeat)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&path, bytes));
        if let Err(err) = written {
            tracing::debug!("cannot write {}: {err}", path.display());
        }
    }

    /// Reads the configuration again (SIGHUP, or `clockguard reload` from `peer`). The
    /// guard policy (allow, slew_instead, exclusive_discipline) is written into the kernel
    /// at once; other changes are listed as taking effect at the next restart. An invalid
    /// file changes nothing. Journaled as source "daemon", kind "reload", with the
    /// requester.
    fn reload(&mut self, peer: Option<tokio::net::unix::UCred>) -> Value {
        notify_systemd(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            clock::read_ns(libc::CLOCK_MONOTONIC) / 1000
        ));
        let answer = match self.config_source.load() {
            Ok((new, origin)) => self.apply_config(new, origin),
            Err(err) => {
                let why = format!("{err:#}; the configuration in use is kept");
                tracing::error!("reload: {why}");
                json!({ "error": why })
            }
        };
        notify_systemd("READY=1");
        let mut record = daemon_record("reload", answer.clone());
        if answer.get("error").is_some() {
            record.result = "EINVAL".into();
        }
        record.pid = peer.and_then(|p| p.pid()).map(|p| p as u32);
        record.uid = peer.map(|p| p.uid());
        if let Some(pid) = record.pid {
            record.comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim_end().to_string());
            self.enricher.enrich(&mut record, 0);
        }
        self.journal_and_publish(vec![record]);
        answer
    }

    fn apply_config(&mut self, new: Config, origin: String) -> Value {
        let ReloadPlan {
            applied,
            needs_restart,
        } = ReloadPlan::between(&self.config, &new);
        if !applied.is_empty() {
            let policy = guard::resolve_policy(&new.guard);
            if let Some(probes) = self.probes.as_mut() {
                let written = probes.set_guard(
                    self.enforcement.active,
                    new.guard.exclusive_discipline,
                    &policy,
                );
                if let Err(err) = written {
                    // Put back what was in force: the maps may hold half of the new policy.
                    let restored = probes.set_guard(
                        self.enforcement.active,
                        self.config.guard.exclusive_discipline,
                        &self.policy,
                    );
                    let why = format!(
                        "cannot write the new guard policy into the kernel ({err:#}); the \
                         policy in use is {}",
                        if restored.is_ok() {
                            "kept"
                        } else {
                            "damaged: restart clockguard"
                        }
                    );
                    tracing::error!("reload: {why}");
                    return json!({ "error": why });
                }
            }
            for entry in policy.iter().map(|e| &e.shown) {
                match &entry.problem {
                    None => {
                        tracing::info!("guard policy: {} {}", entry.class, entry.path.display())
                    }
                    Some(problem) => tracing::warn!(
                        "guard policy: {} {}: {problem}",
                        entry.class,
                        entry.path.display()
                    ),
                }
            }
            self.policy = policy;
            self.config.guard.allow = new.guard.allow;
            self.config.guard.slew_instead = new.guard.slew_instead;
            self.config.guard.exclusive_discipline = new.guard.exclusive_discipline;
        }
        for key in &needs_restart {
            tracing::warn!("reload: {key} changed; it takes effect at the next restart");
        }
        tracing::info!(
            "reloaded {origin}: applied {}",
            if applied.is_empty() {
                "nothing".to_string()
            } else {
                applied.join(", ")
            }
        );
        self.config_origin = origin.clone();
        json!({ "config": origin, "applied": applied, "needs_restart": needs_restart })
    }

    /// A `slew_instead` agent's step was refused in the kernel: apply what it asked for as a
    /// slew. Agents repeat their request while the clock is still off (VBoxService every
    /// 10 s, a cron'd ntpdate), each time measured against the clock as it is then, so a new
    /// request replaces what is still pending instead of adding to it.
    async fn slew_instead(&mut self, record: &mut Record) {
        let Some(slew) = &self.slew else { return };
        let Some(requested) = record.requested_delta_ns else {
            record.slew = Some(json!({"refused": "the requested time is unknown"}));
            return;
        };
        self.stats.slews_requested += 1;
        let pending = slew.status().remaining_ns;
        match slew.replace(requested).await {
            Ok(status) => {
                record.verdict = Verdict::Slewed;
                record.slew = Some(json!({
                    "correction_ns": requested,
                    "replaced_pending_ns": pending,
                    "rate_ppm": status.rate_ppm,
                    "eta_s": status.eta_s,
                }));
                tracing::info!(
                    "refused a {:+.6} s step by {} (pid {}): slewing it in instead",
                    requested as f64 / 1e9,
                    record.comm.as_deref().unwrap_or("?"),
                    record.pid.unwrap_or(0)
                );
            }
            Err(err) => {
                self.stats.slews_refused += 1;
                tracing::error!(
                    "ALERT: refused a {:+.6} s step by {} (pid {}) and will not slew it: {err}",
                    requested as f64 / 1e9,
                    record.comm.as_deref().unwrap_or("?"),
                    record.pid.unwrap_or(0)
                );
                record.slew = Some(json!({"refused": err.to_string()}));
            }
        }
    }

    fn enforcement(&self) -> EnforcementStatus {
        EnforcementStatus {
            active: self.enforcement.active,
            mode: self.enforcement.mode.into(),
            reason: self.enforcement.reason.clone(),
            gaps: self.enforcement.gaps.clone(),
            exclusive_discipline: self.enforcement.active && self.config.guard.exclusive_discipline,
            pinned: self
                .probes
                .as_ref()
                .and_then(|p| p.pin_dir())
                .map(Path::to_path_buf),
            not_pinned_because: self.not_pinned.clone(),
            self_exe: guard::self_exe(),
            policy: self.policy.iter().map(|e| e.shown.clone()).collect(),
            other_time_services: self.time_services.clone(),
            slew: self.slew.as_ref().map(|s| s.status()),
        }
    }

    fn status(&self) -> Status {
        let counters = self
            .probes
            .as_ref()
            .map(|p| p.counters())
            .transpose()
            .unwrap_or_else(|err| {
                tracing::warn!("cannot read the kernel counters: {err:#}");
                None
            });
        let (head_seq, head_hash) = self.journal.head();
        let lsms = crate::lsm::active_lsms().clone();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: self.enforcement.mode.into(),
            mode_configured: self.config.mode.as_str().into(),
            config: self.config_origin.clone(),
            started: self.started_wall.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            state_dir: self.config.state_dir.clone(),
            runtime_dir: self.config.runtime_dir.clone(),
            journal: JournalStatus {
                path: self.journal.path().to_path_buf(),
                next_seq: self.journal.next_seq(),
                head_seq,
                head_hash: head_hash.into(),
            },
            enforcement: self.enforcement(),
            ebpf_load_error: self.load_error.clone(),
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| r.trim().to_string()),
            bpf_lsm_active: lsms.bpf_active(),
            lsms,
            hooks: self.hooks.clone(),
            ring_buffer_drops: counters.map(|c| c.ring_buffer_drops),
            hook_misses: self.probes.as_ref().map(|p| p.hook_misses()),
            summaries: Summaries {
                repeats_in_full: self.config.audit.repeats_in_full,
                interval_ms: self.config.audit.summary_interval_ms,
                epoch: self.probes.is_some().then_some(self.repeat_epoch),
            },
            kernel: counters,
            ntp: NtpStatus {
                running: self.ntp_running,
                servers: self.config.ntp.servers.clone(),
                pools: self.config.ntp.pools.clone(),
                serve: self.config.ntp.serve.clone(),
                disciplining: self.ntp_running && self.slew.is_some(),
            },
            hook_costs: self
                .hook_stats
                .as_ref()
                .and(self.probes.as_ref())
                .map(|p| p.hook_costs()),
            timers: self.timers_status(counters.as_ref()),
            services: self.services.status(mono_ns()),
            vm: VmStatus {
                facts: vmfacts::read(Path::new("/sys"), Path::new("/proc")),
                kernel_clock_messages: self
                    .kernel_clock_messages
                    .as_ref()
                    .map(|m| m.iter().cloned().collect()),
            },
            daemon: self.stats.clone(),
        }
    }

    fn timer_hook_attached(&self) -> bool {
        self.hooks
            .iter()
            .any(|h| h.name == "hrtimer_expire_entry" && h.attached)
    }

    fn timers_status(&self, counters: Option<&bpf::Counters>) -> TimersStatus {
        let histogram = self
            .probes
            .as_ref()
            .filter(|_| self.timer_hook_attached())
            .and_then(|p| p.lateness_histogram().ok());
        TimersStatus {
            stall_threshold_ms: self.config.timers.stall_threshold_ms,
            sample_interval_ms: self.config.timers.sample_interval_ms,
            lateness: histogram.map(|h| LatenessSummary::from_buckets(&h.buckets, h.sum_ns)),
            late_events: counters.map(|c| c.timer_late_events),
            late_events_lost: counters.map(|c| c.timer_late_drops),
            read_faults: counters.map(|c| c.timer_read_faults),
            found: self.timers.stats.clone(),
        }
    }
}

/// Readiness of an optional event source, for a `select!` arm that is disabled while the
/// source is absent (then it is never ready: no unwrap in the arm).
async fn readable<T: std::os::fd::AsRawFd>(
    source: Option<&mut AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match source {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// A record of clockguard's own (source "daemon"): start, stop, reload.
fn daemon_record(kind: &str, detail: Value) -> Record {
    Record {
        time: record::rfc3339_ns(clock::realtime_ns()),
        source: Source::Daemon,
        kind: kind.into(),
        detail: Some(detail),
        result: "0".into(),
        verdict: Verdict::Observed,
        ..Default::default()
    }
}

/// In the runtime directory (gone at reboot, like the pins).
const HEARTBEAT_FILE: &str = "heartbeat.json";
const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The previous daemon's heartbeat, if it left one.
fn read_heartbeat(runtime_dir: &Path) -> Option<Heartbeat> {
    let bytes = std::fs::read(runtime_dir.join(HEARTBEAT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// systemd's watchdog period, half of WATCHDOG_USEC (as sd_watchdog_enabled(3) advises),
/// when the watchdog is on for this process.
fn systemd_watchdog_period() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, when set.
fn notify_systemd(message: &str) {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    if let Ok(addr) = addr {
        let _ = socket.send_to_addr(message.as_bytes(), &addr);
    }
}
