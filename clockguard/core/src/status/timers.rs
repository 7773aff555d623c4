//! The timer watch in the `status` answer: hrtimer lateness, stalls and their causes.

use serde::{Deserialize, Serialize};

use crate::time::Monotonic;

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
    /// Late expiries not counted as lateness: their deadline was set in the past (see
    /// timers::ARMED_IN_THE_PAST_NS), so they were never waiting to run.
    pub armed_in_the_past: u64,
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
    /// When the stall began and ended (serialised as their ns, under the keys they had).
    #[serde(rename = "started_mono_ns")]
    pub started: Monotonic,
    #[serde(rename = "ended_mono_ns")]
    pub ended: Monotonic,
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
