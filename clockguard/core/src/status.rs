//! The daemon's `status` answer, typed: what `clockguard status` prints, what `check` judges,
//! what the metrics expose and what `status --json` shows, all read from these structs, so
//! renaming a key breaks the build instead of a reader.
//!
//! The JSON is unchanged from the untyped tree it replaced (golden/status-host.json reads and
//! writes back byte for byte): the daemon turns a `Status` into a `serde_json::Value`, whose
//! map keeps its keys sorted, before sending it, as the `json!` tree did.
//!
//! Units are in the names: `_ns`, `_s`, `_ms`, `_ppm`. Which clock a time is on is said per
//! field; the RFC 3339 strings are CLOCK_REALTIME.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `clockguard status` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// The mode in effect ("guard" | "observe"), which may differ from the configured one.
    pub mode: String,
    pub mode_configured: String,
    /// Where the configuration came from (a path, or the embedded default).
    pub config: String,
    /// When the daemon started (RFC 3339, CLOCK_REALTIME).
    pub started: String,
    pub uptime_s: f64,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub journal: JournalStatus,
    pub enforcement: EnforcementStatus,
    /// Why the eBPF object did not load (then every hook is missing).
    pub ebpf_load_error: Option<String>,
    /// The running kernel: what each hook's outcome is about.
    pub kernel_release: Option<String>,
    pub bpf_lsm_active: Option<bool>,
    pub lsms: ActiveLsms,
    pub hooks: Vec<HookStatus>,
    pub ring_buffer_drops: Option<u64>,
    /// Runs the kernel skipped, by hook (a program preempted inside itself).
    pub hook_misses: Option<BTreeMap<String, u64>>,
    pub summaries: Summaries,
    pub kernel: Option<Counters>,
    pub ntp: NtpStatus,
    pub hook_costs: Option<Vec<HookCost>>,
    pub timers: TimersStatus,
    pub services: Vec<ServiceStatus>,
    pub vm: VmStatus,
    pub daemon: DaemonStats,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub path: PathBuf,
    pub next_seq: u64,
    /// The last record written and its hash (`audit --verify` compares with them).
    pub head_seq: u64,
    pub head_hash: String,
}

/// Whether the kernel refuses steps now, why (not), and what the guard is made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnforcementStatus {
    pub active: bool,
    /// The mode in effect: "guard" only when enforcement is active or was asked for and
    /// cannot be; "observe" when configured so or deferring to another time service.
    pub mode: String,
    pub reason: String,
    /// Paths of the guard that do not work, although enforcement is on.
    pub gaps: Vec<String>,
    /// Only clockguard may discipline the clock (`[guard] exclusive_discipline`, in force).
    pub exclusive_discipline: bool,
    /// The bpffs directory the guard is pinned in: it stays in force if the daemon dies.
    pub pinned: Option<PathBuf>,
    pub not_pinned_because: Option<String>,
    pub self_exe: Option<PathBuf>,
    pub policy: Vec<PolicyEntry>,
    pub other_time_services: Vec<TimeService>,
    /// The slew engine, in guard mode.
    pub slew: Option<SlewStatus>,
}

/// One executable of the guard's policy, as resolved on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub path: PathBuf,
    /// allow | slew_instead
    pub class: String,
    /// "major:minor" and inode of the file, when it exists.
    pub dev: Option<String>,
    pub ino: Option<u64>,
    /// Why it is not in the kernel's map (missing file).
    pub problem: Option<String>,
}

/// Another time service, and how we know.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimeService {
    pub name: String,
    /// "running: pid 812" | "configured: /etc/chrony/chrony.conf" | "enabled: <unit link>"
    pub evidence: String,
}

/// What the slew engine is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlewStatus {
    pub active: bool,
    /// Correction still to apply, ns (positive: the clock must gain it).
    pub remaining_ns: i64,
    /// Slew rate programmed now, ppm, excluding the base rate.
    pub rate_ppm: f64,
    /// Corrections accepted by `add`.
    pub corrections: u64,
    /// Corrections refused by `add`.
    pub refused: u64,
    /// Total slew progress so far, ns.
    pub absorbed_ns: i64,
    /// Intervals whose measured progress was impossible (someone else stepped the clock)
    /// and were counted at the expected progress instead.
    pub external_steps: u64,
    /// Estimated time to finish, s (None when idle).
    pub eta_s: Option<f64>,
}

/// What clockguard knows about the active LSMs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveLsms {
    /// The active LSMs in the kernel's order; None when it could not be found out.
    pub list: Option<Vec<String>>,
    /// Where the list came from, or why there is none.
    pub source: String,
}

impl ActiveLsms {
    /// Some(true) when `bpf` is active, Some(false) when the list lacks it, None when
    /// unknown.
    pub fn bpf_active(&self) -> Option<bool> {
        self.list
            .as_ref()
            .map(|list| list.iter().any(|lsm| lsm == "bpf"))
    }
}

/// The outcome of one hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// The name `disabled_hooks` and `status` use.
    pub name: String,
    /// tracepoint | fentry | fexit | tp_btf | lsm | userspace
    pub kind: String,
    /// Where it attaches (tracepoint category:name, kernel function, LSM hook).
    pub target: String,
    pub attached: bool,
    /// Why not attached (or a caveat when attached), in the kernel's words.
    pub error: Option<String>,
    /// The errno behind `error`, when there is one ("EPERM").
    pub errno: Option<String>,
    /// Its link is pinned in bpffs: it stays attached if the daemon dies (guard mode).
    #[serde(default)]
    pub pinned: bool,
    /// Taken over from a previous daemon that left it pinned (its program kept running).
    #[serde(default)]
    pub adopted: bool,
    /// Not attached because these hooks do its work (a syscall tracepoint whose syscall
    /// is seen by fentry/fexit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

impl HookStatus {
    /// A hook not (yet) attached.
    pub fn new(name: &str, kind: &str, target: String) -> Self {
        HookStatus {
            name: name.into(),
            kind: kind.into(),
            target,
            attached: false,
            error: None,
            errno: None,
            pinned: false,
            adopted: false,
            replaced_by: None,
        }
    }

    /// How `status` names its state: attached, adopted, pinned, not needed, NOT attached.
    pub fn state(&self) -> &'static str {
        match (self.attached, self.adopted, self.pinned) {
            (false, _, _) if self.replaced_by.is_some() => "not needed",
            (false, _, _) => "NOT attached",
            (true, true, _) => "adopted",
            (true, false, true) => "pinned",
            (true, false, false) => "attached",
        }
    }
}

/// What one eBPF program cost so far (kernel statistics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookCost {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: Option<f64>,
}

/// The kernel side's counters (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub ring_buffer_drops: u64,
    pub readonly_adjtimex: u64,
    pub kernel_events: u64,
    pub pending_full: u64,
    pub clock_syscalls: u64,
    /// Clock changes the guard refused (EPERM).
    pub guard_denied: u64,
    /// Clock changes guard mode would have refused (seen in observe mode).
    pub guard_would_deny: u64,
    /// Guard decisions on a caller whose executable could not be read (kernel threads).
    pub guard_unidentified_callers: u64,
    /// hrtimer expiries late by the threshold or more, sent as events / lost (ring full).
    pub timer_late_events: u64,
    pub timer_late_drops: u64,
    /// hrtimer expiries whose fields could not be read.
    pub timer_read_faults: u64,
    /// Exits of tracked processes lost (their ring full) / children not tracked (map full).
    pub service_exit_drops: u64,
    pub tracked_full: u64,
    /// Clock calls counted in a summary record instead of sent in full.
    pub events_summarised: u64,
    /// Repeats sent in full because the kernel's REPEATS map was full.
    pub repeats_map_full: u64,
}

/// In-kernel summarising of repeats: the counts of an epoch are journaled when the epoch
/// after it ends, so every call made before epoch N began is in the journal once `epoch`
/// reaches N + 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summaries {
    pub repeats_in_full: u32,
    pub interval_ms: u64,
    /// None without the eBPF side.
    pub epoch: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NtpStatus {
    pub running: bool,
    pub servers: Vec<String>,
    pub pools: Vec<String>,
    /// The address the NTP server was configured to listen on.
    pub serve: Option<String>,
    /// The clock is disciplined only with the slew engine, i.e. in guard mode.
    pub disciplining: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimersStatus {
    pub stall_threshold_ms: f64,
    pub sample_interval_ms: u64,
    /// None while the hrtimer hook is not attached.
    pub lateness: Option<LatenessSummary>,
    pub late_events: Option<u64>,
    pub late_events_lost: Option<u64>,
    pub read_faults: Option<u64>,
    pub found: TimerStats,
}

/// The upper edge of a lateness bucket, ns: bucket 0 holds expiries exactly on time,
/// bucket i those in [2^(i-1), 2^i), i.e. at most 2^i − 1 ns late.
pub fn bucket_le_ns(bucket: usize) -> u64 {
    match bucket {
        0 => 0,
        b if b >= u64::BITS as usize => u64::MAX,
        b => (1u64 << b) - 1,
    }
}

/// The lateness histogram as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatenessSummary {
    /// hrtimer expiries (CLOCK_MONOTONIC timers) since the hook attached.
    pub expiries: u64,
    /// Their total lateness, ns.
    pub sum_ns: u64,
    /// Upper bucket edges (ns) under which 50 %, 99 %, 99.9 % and all expiries fell.
    pub p50_le_ns: u64,
    pub p99_le_ns: u64,
    pub p999_le_ns: u64,
    pub max_le_ns: u64,
    /// The non-empty buckets: (upper edge ns, count).
    pub buckets: Vec<(u64, u64)>,
}

impl LatenessSummary {
    /// From the kernel's per-bucket counts (index = bucket) and total lateness (ns).
    pub fn from_buckets(counts: &[u64], sum_ns: u64) -> LatenessSummary {
        let expiries: u64 = counts.iter().sum();
        let quantile = |q: f64| -> u64 {
            let want = (q * expiries as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (bucket, &count) in counts.iter().enumerate() {
                seen += count;
                if seen >= want {
                    return bucket_le_ns(bucket);
                }
            }
            0
        };
        let max_bucket = counts.iter().rposition(|&c| c > 0);
        LatenessSummary {
            expiries,
            sum_ns,
            p50_le_ns: quantile(0.5),
            p99_le_ns: quantile(0.99),
            p999_le_ns: quantile(0.999),
            max_le_ns: max_bucket.map_or(0, bucket_le_ns),
            buckets: counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| (bucket_le_ns(b), c))
                .collect(),
        }
    }
}

/// What the timer watch counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerStats {
    pub stalls: u64,
    pub suspends: u64,
    pub clocksource_changes: u64,
    pub clocksource_jumps: u64,
    pub last_stall: Option<Stall>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallCause {
    /// Every CPU of a virtual machine stopped at once, and the hypervisor did not account
    /// it as steal: the guest was paused, migrated, snapshotted or descheduled by the host.
    VmPaused,
    /// The hypervisor ran something else: the steal time grew by at least half the stall.
    HypervisorSteal,
    /// Every CPU of a physical machine stopped (SMI, firmware, an NMI storm).
    MachineStall,
    /// Some CPUs only: interrupts off too long, or a CPU hog above the timer's priority.
    CpuStall,
    /// Only the sampler saw it (no hrtimer hook), and the steal time does not explain it.
    Unknown,
}

impl StallCause {
    pub fn as_str(self) -> &'static str {
        match self {
            StallCause::VmPaused => "vm_paused",
            StallCause::HypervisorSteal => "hypervisor_steal",
            StallCause::MachineStall => "machine_stall",
            StallCause::CpuStall => "cpu_stall",
            StallCause::Unknown => "unknown",
        }
    }

    /// The sentence a stall record carries.
    pub fn explain(self) -> &'static str {
        match self {
            StallCause::VmPaused => {
                "every CPU of this virtual machine stopped at once without steal time: the \
                 guest was paused, migrated or descheduled by the host"
            }
            StallCause::HypervisorSteal => {
                "the hypervisor ran other work (steal time grew by at least half the stall)"
            }
            StallCause::MachineStall => {
                "every CPU stopped at once on a physical machine (SMI, firmware, NMI)"
            }
            StallCause::CpuStall => {
                "timers on some CPUs only ran late: interrupts off or a CPU hog"
            }
            StallCause::Unknown => "the sampler woke late; no kernel hook saw the timers",
        }
    }
}

/// A time during which timers did not run: what `audit` journals as kind "stall".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// CLOCK_MONOTONIC when the stall began and ended, ns.
    pub started_mono_ns: i64,
    pub ended_mono_ns: i64,
    /// How long timers were held up: the largest lateness seen, ns.
    pub duration_ns: i64,
    pub cause: StallCause,
    pub explanation: String,
    /// The CPUs whose timers ran late, and how many are online.
    pub cpus: Vec<u32>,
    pub online_cpus: u32,
    /// Steal time accounted during the stall, ns (None: no steal data).
    pub steal_ns: Option<i64>,
    pub hypervisor: Option<String>,
    pub late_timers: u32,
    /// Up to 5 of the callbacks that ran late.
    pub timers: Vec<String>,
}

/// The health of a tracked service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Not checked yet.
    Unknown,
    Healthy,
    /// keepalived's track file says 1 and `service-check` fails.
    Fault,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Unknown => "unknown",
            ServiceState::Healthy => "healthy",
            ServiceState::Fault => "fault",
        }
    }
}

/// One tracked service, as `status` and `service-check` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    /// Why it is in fault ("died_from_time_jump", "check_failed", ...).
    pub reason: Option<String>,
    /// How long it has been in fault, s, and how much of the fault's hold is left, s.
    pub fault_for_s: Option<f64>,
    pub hold_left_s: Option<f64>,
    pub restart_due: bool,
    /// Processes tracked at the last scan.
    pub processes: u64,
    pub check: ServiceCheck,
    pub track_file: Option<PathBuf>,
    /// What the track file was last set to (0 | 1), and when (RFC 3339, CLOCK_REALTIME);
    /// when it was last set to 1.
    pub track_file_value: Option<u8>,
    pub track_file_written: Option<String>,
    pub track_file_fault_written: Option<String>,
    pub clean_exits: u64,
    pub deaths: u64,
    pub deaths_after_time_jump: u64,
    pub last_event: Option<ServiceEvent>,
}

/// A service's health check: what it checks, its last outcome, and the counts that decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheck {
    /// "a process running" | "tcp 127.0.0.1:143, expect \"* OK\""
    pub target: String,
    pub last: Option<CheckOutcome>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub fall: u32,
    pub rise: u32,
}

/// The last health check of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub ok: bool,
    /// What was found ("connected, got \"* OK\"", "connection refused", "2 processes").
    pub detail: String,
    /// When it was checked (the daemon's own; not in the JSON).
    #[serde(skip)]
    pub at: crate::time::Monotonic,
}

/// The last journaled verdict about a service's processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// The record's kind ("died", "died_after_time_jump", ...).
    pub kind: String,
    /// One line: "died: cgsvc-worker (pid 812) killed by SIGABRT after a 5.000 s step".
    pub summary: String,
    /// How long ago, s.
    pub age_s: f64,
}

/// The daemon's `services` answer (`service-check` reads it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServicesAnswer {
    pub services: Vec<ServiceStatus>,
}

/// Facts about the machine's time sources that explain VM clock trouble.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFacts {
    /// The hypervisor's name, None on bare metal.
    pub hypervisor: Option<String>,
    /// How it was recognised ("cpuid 0x40000000", "cpuid hypervisor bit", "dmi").
    pub hypervisor_evidence: Option<String>,
    pub dmi_vendor: Option<String>,
    pub dmi_product: Option<String>,
    pub clocksource: Option<String>,
    pub available_clocksources: Vec<String>,
    /// Guest agents that can set the clock, running now: "qemu-ga (pid 312)".
    pub time_agents: Vec<String>,
    /// Under KVM: whether the host promises a kvm-clock without per-CPU warps
    /// (KVM_FEATURE_CLOCKSOURCE_STABLE_BIT, CPUID 0x40000001 EAX bit 24). None elsewhere.
    pub kvmclock_stable_bit: Option<bool>,
}

/// The machine's facts and the kernel's recent clock messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    #[serde(flatten)]
    pub facts: VmFacts,
    /// None when /dev/kmsg cannot be read.
    pub kernel_clock_messages: Option<Vec<ClockMessage>>,
}

/// A kernel message about clocks (/dev/kmsg).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockMessage {
    /// The kernel's sequence number of the record.
    pub seq: u64,
    /// When the kernel logged it, seconds since boot (its local clock).
    pub uptime_s: f64,
    /// clocksource_unstable | tsc_unstable | clocksource_switch | clocksource_watchdog |
    /// kvm_clock
    pub kind: String,
    pub text: String,
    /// Logged before clockguard started (read from the buffer's history).
    pub before_start: bool,
}

impl ClockMessage {
    /// The kernel found a clocksource unreliable (the watchdog's verdict).
    pub fn is_instability(&self) -> bool {
        matches!(self.kind.as_str(), "clocksource_unstable" | "tsc_unstable")
    }
}

/// The daemon's own counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStats {
    pub records_journaled: u64,
    pub abi_mismatches: u64,
    pub journal_errors: u64,
    pub records_lost_unwritable: u64,
    pub fallback_jumps: u64,
    pub fallback_unexplained: u64,
    /// Refused steps of `slew_instead` agents handed to the slew engine, and refused by it.
    pub slews_requested: u64,
    pub slews_refused: u64,
    /// clockguard's own read-only adjtimex calls, seen with journal_readonly and skipped
    /// (in full or in a summary count).
    pub own_reads_not_journaled: u64,
    /// Summary records journaled (one per key and interval of repeated calls).
    pub summary_records: u64,
    /// Times the clock moved under running programs, by cause (see `jump_cause`).
    pub jumps: BTreeMap<String, u64>,
    /// Track files that could not be written.
    pub track_file_errors: u64,
}

/// The NTP client's `tracking` answer (like `chronyc tracking`). Offsets are the system
/// clock (CLOCK_REALTIME) − NTP time, s: positive when the clock is ahead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    /// A source is selected and the selection is sound.
    pub synchronized: bool,
    pub unsynchronized_reason: Option<String>,
    /// The clock is slewed towards NTP time (guard mode); else only measured.
    pub disciplining: bool,
    /// The selected source: its name and address, and its reference ID ("7F000001").
    pub reference: Option<String>,
    pub reference_address: Option<String>,
    pub reference_id: Option<String>,
    pub stratum: Option<u8>,
    /// The last clock update (RFC 3339, CLOCK_REALTIME).
    pub ref_time: Option<String>,
    pub offset_s: Option<f64>,
    pub last_offset_s: Option<f64>,
    pub rms_offset_s: Option<f64>,
    /// The frequency correction applied to the kernel clock, and the one estimated, ppm.
    pub frequency_ppm: Option<f64>,
    pub estimated_frequency_ppm: Option<f64>,
    pub residual_freq_ppm: Option<f64>,
    pub skew_ppm: Option<f64>,
    pub root_delay_s: Option<f64>,
    pub root_dispersion_s: Option<f64>,
    pub update_interval_s: Option<f64>,
    /// "normal", "insert second", "delete second" or "not synchronised".
    pub leap_status: String,
    pub leap_seconds: Vec<LeapSecond>,
    pub corrections: u64,
    pub corrections_refused: u64,
    pub last_convergence: Option<Convergence>,
    /// The latest convergences, oldest first.
    pub convergences: Vec<Convergence>,
    /// The offset when a correction of 1 ms or more began, while it lasts, s.
    pub converging_from_offset_s: Option<f64>,
    pub slew: Option<SlewStatus>,
    /// The NTP server, when serving.
    pub server: Option<ServerStatus>,
}

/// A leap second announced by the sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeapSecond {
    /// +1: inserted (23:59:60), −1: deleted (23:59:59 skipped).
    pub delta_s: i64,
    /// The midnight UTC it comes before, Unix s.
    pub at_unix_s: i64,
    /// The leap is behind: UTC is the timescale less it.
    pub passed: bool,
    /// The sources that announced it (indices).
    pub sources: Vec<usize>,
}

/// How long the clock took to come within 1 ms of NTP time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// System clock − NTP time when the correction started, s.
    pub from_offset_s: f64,
    /// Time taken, s (CLOCK_MONOTONIC_RAW: the slewed clocks run up to 10 % fast).
    pub took_s: f64,
    /// When it came within (RFC 3339, CLOCK_REALTIME).
    pub ended: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The address bound (the configured port 0 becomes the one the kernel chose).
    pub listen: String,
    pub counters: ServerCounters,
}

/// What the NTP server did with the datagrams it received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounters {
    pub answered: u64,
    pub kiss_rate: u64,
    pub malformed: u64,
    pub not_a_request: u64,
    pub rate_limited: u64,
    pub send_errors: u64,
}

/// The NTP client's `sources` answer (like `chronyc sources`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcesAnswer {
    pub sources: Vec<SourceReport>,
    /// Configured names that did not resolve (yet).
    pub unresolved: Vec<String>,
}

/// One NTP source. Offsets are the source's time − the system clock, s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    pub name: String,
    pub address: String,
    pub state: SourceState,
    pub stratum: Option<u8>,
    pub reference_id: Option<String>,
    /// log2 of the poll interval, s.
    pub poll: i8,
    /// The reach register in octal ("377": the last 8 polls answered).
    pub reach: String,
    /// Since the last valid reply, s.
    pub last_rx_s: Option<f64>,
    pub offset_s: Option<f64>,
    pub error_s: Option<f64>,
    pub frequency_ppm: Option<f64>,
    pub skew_ppm: Option<f64>,
    pub last_delay_s: Option<f64>,
    /// Samples in the source's fit.
    pub samples: u64,
    /// The kiss code (DENY, RSTR) that stopped polling it.
    pub kiss_denied: Option<String>,
    pub counters: SourceCounters,
}

impl SourceReport {
    /// Whether any of the last 8 polls was answered.
    pub fn reachable(&self) -> bool {
        !self.reach.trim_matches('0').is_empty()
    }
}

/// A source's part in the selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// The one the clock follows.
    Selected,
    /// Agrees with the selected one and is combined with it.
    Combined,
    /// Disagrees with the majority.
    Falseticker,
    /// Its server says it is unsynchronised (leap 3 or stratum 16).
    Unsynchronised,
    /// Too few samples yet.
    Collecting,
    #[serde(rename = "not selectable")]
    NotSelectable,
    /// Not polled yet / no answer in the last 8 polls / a DENY or RSTR kiss.
    New,
    Unreachable,
    Denied,
}

impl SourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Selected => "selected",
            SourceState::Combined => "combined",
            SourceState::Falseticker => "falseticker",
            SourceState::Unsynchronised => "unsynchronised",
            SourceState::Collecting => "collecting",
            SourceState::NotSelectable => "not selectable",
            SourceState::New => "new",
            SourceState::Unreachable => "unreachable",
            SourceState::Denied => "denied",
        }
    }
}

/// What a source's replies came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounters {
    pub sent: u64,
    pub received: u64,
    pub accepted: u64,
    pub malformed: u64,
    pub not_a_reply: u64,
    pub bad_origin: u64,
    pub duplicate: u64,
    pub kiss: u64,
    pub unsynchronised: u64,
    pub bogus: u64,
    pub outliers: u64,
    pub resets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles_are_bucket_edges() {
        let mut counts = vec![0u64; 64];
        counts[10] = 990; // < 1024 ns
        counts[20] = 9; // < ~1 ms
        counts[33] = 1; // ~5 s
        let s = LatenessSummary::from_buckets(&counts, 7);
        assert_eq!(s.expiries, 1000);
        assert_eq!(s.p50_le_ns, 1023);
        assert_eq!(s.p99_le_ns, 1023);
        assert_eq!(s.p999_le_ns, (1 << 20) - 1);
        assert_eq!(s.max_le_ns, (1 << 33) - 1);
        assert_eq!(s.buckets.len(), 3);
        assert_eq!(LatenessSummary::from_buckets(&[0; 64], 0).max_le_ns, 0);
        assert_eq!(bucket_le_ns(0), 0);
        assert_eq!(bucket_le_ns(64), u64::MAX);
    }

    #[test]
    fn source_states_serialise_as_their_names() {
        for state in [
            SourceState::Selected,
            SourceState::Combined,
            SourceState::Falseticker,
            SourceState::Unsynchronised,
            SourceState::Collecting,
            SourceState::NotSelectable,
            SourceState::New,
            SourceState::Unreachable,
            SourceState::Denied,
        ] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str());
            assert_eq!(serde_json::from_value::<SourceState>(json).unwrap(), state);
        }
    }

    #[test]
    fn hook_states_read_as_status_prints_them() {
        let mut hook = HookStatus::new("settime", "lsm", "settime".into());
        assert_eq!(hook.state(), "NOT attached");
        hook.replaced_by = Some("fentry/fexit".into());
        assert_eq!(hook.state(), "not needed");
        hook.attached = true;
        assert_eq!(hook.state(), "attached");
        hook.pinned = true;
        assert_eq!(hook.state(), "pinned");
        hook.adopted = true;
        assert_eq!(hook.state(), "adopted");
    }
}
