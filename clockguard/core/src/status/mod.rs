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

mod ntp;
mod services;
mod timers;

pub use ntp::*;
pub use services::*;
pub use timers::*;

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
    /// The clock error bound (absent while none is kept: `[bound]` off, or no NTP client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<crate::bound::Answer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub path: PathBuf,
    pub next_seq: u64,
    /// The last record written and its hash (`audit --verify` compares with them).
    pub head_seq: u64,
    pub head_hash: String,
    /// Forward-secure sealing: the key id and the current epoch (None: not sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing: Option<SealingStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SealingStatus {
    pub key_id: String,
    pub epoch: u64,
    /// Seconds between seals (and at every stop and rotation).
    pub interval_s: u64,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nts_servers: Vec<String>,
    /// The address the NTP server was configured to listen on.
    pub serve: Option<String>,
    /// The NTS-KE server's configured address, when NTS is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nts_ke: Option<String>,
    /// The clock is disciplined only with the slew engine, i.e. in guard mode.
    pub disciplining: bool,
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
    /// The hypervisor's vmclock device, or why none is followed.
    #[serde(default)]
    pub vmclock: crate::vmclock::VmclockStatus,
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
    /// Records sent to the systemd journal, and those it did not take (clockguard's own
    /// journal has them all).
    #[serde(default)]
    pub journald_entries: u64,
    #[serde(default)]
    pub journald_dropped: u64,
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
