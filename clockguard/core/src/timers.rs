//! Timer and clock health, decided: late hrtimer expiries grouped into stalls (a paused or
//! starved VM, a stalled CPU) with their cause, and the clock samples compared for
//! suspends, clocksource switches and jumps. These move time under running programs as
//! surely as a step does, without anyone calling settimeofday.
//!
//! Plain data in, journal records out; the daemon reads the kernel (the hrtimer hook,
//! the clocks, /proc/stat) and feeds them in (clockguard/src/timers.rs).

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

use crate::record::{rfc3339_ns, Record, Source, Verdict};
use crate::status::{Stall, StallCause, TimerStats};
use crate::time::{Monotonic, Raw, Realtime};

/// One hrtimer that expired late (from the kernel), or the sampler's own wakeup that came
/// late (`cpu` None: used only where the hook is not attached).
#[derive(Clone, Debug, PartialEq)]
pub struct LateTimer {
    pub cpu: Option<u32>,
    /// When it finally ran.
    pub at: Monotonic,
    pub lateness_ns: i64,
    /// The timer's callback ("tick_sched_timer").
    pub function: Option<String>,
}

impl LateTimer {
    /// When it was due: its soft expiry, on CLOCK_MONOTONIC.
    fn due(&self) -> Monotonic {
        self.at.plus_ns(-self.lateness_ns)
    }
}

/// Late expiries belonging to one stall, while it is still open.
struct Episode {
    started: Monotonic,
    last_event: Monotonic,
    duration_ns: i64,
    cpus: BTreeSet<u32>,
    late_timers: u32,
    timers: Vec<String>,
}

/// An episode closes once no late timer arrived for this long (ns). On one CPU the burst
/// of late expiries after a resume lasts a few ms, but the vCPUs of a resumed guest need not
/// run at once. With 500 ms here, CI (QEMU's TCG on a 2-core host) twice reported a 5 s
/// pause of the whole VM as a "CPU stall" of one CPU of two, though every CPU's 4 s
/// watchdog timer must have expired late: most likely the other vCPU's late timers came
/// more than 500 ms later and made an episode of their own.
const EPISODE_QUIET_NS: i64 = 2_000_000_000;
/// A timer whose soft expiry lies this close to the start of CLOCK_MONOTONIC (ns, so in
/// the first second after boot) was armed with a deadline in the past, to run at once, and
/// its "lateness" is the uptime, not a delay. systemd's sd-event does exactly that: to be
/// woken now it arms its timerfd at the absolute time 1 ns ("some time looooong ago", in
/// its source), which made every busy systemd look like a VM paused for its whole uptime.
/// No timer armed in earnest is still due from the first second of boot while the daemon
/// runs.
pub const ARMED_IN_THE_PAST_NS: i64 = 1_000_000_000;
/// Steal samples kept (one per sample interval).
const STEAL_HISTORY: usize = 64;

/// Groups late timers into stalls and says why each happened.
pub struct StallDetector {
    threshold_ns: i64,
    hypervisor: Option<String>,
    open: Option<Episode>,
    /// (when, cumulative steal ns) per sample, oldest first.
    steal: VecDeque<(Monotonic, i64)>,
}

impl StallDetector {
    pub fn new(threshold_ns: i64, hypervisor: Option<String>) -> Self {
        StallDetector {
            threshold_ns,
            hypervisor,
            open: None,
            steal: VecDeque::with_capacity(STEAL_HISTORY),
        }
    }

    pub fn steal_sample(&mut self, at: Monotonic, steal_ns: i64) {
        if self.steal.len() == STEAL_HISTORY {
            self.steal.pop_front();
        }
        self.steal.push_back((at, steal_ns));
    }

    pub fn late(&mut self, timer: LateTimer) {
        if timer.lateness_ns < self.threshold_ns {
            return;
        }
        let started = timer.due();
        let episode = self.open.get_or_insert_with(|| Episode {
            started,
            last_event: timer.at,
            duration_ns: 0,
            cpus: BTreeSet::new(),
            late_timers: 0,
            timers: Vec::new(),
        });
        episode.started = episode.started.min(started);
        episode.last_event = episode.last_event.max(timer.at);
        episode.duration_ns = episode.duration_ns.max(timer.lateness_ns);
        episode.late_timers += 1;
        if let Some(cpu) = timer.cpu {
            episode.cpus.insert(cpu);
        }
        if let Some(function) = timer.function {
            if episode.timers.len() < 5 && !episode.timers.contains(&function) {
                episode.timers.push(function);
            }
        }
    }

    /// Closes the open episode once it has been quiet long enough; `online_cpus`: the CPUs
    /// online now.
    pub fn tick(&mut self, now: Monotonic, online_cpus: u32) -> Option<Stall> {
        let quiet = now.ns_since(self.open.as_ref()?.last_event) >= EPISODE_QUIET_NS;
        if !quiet {
            return None;
        }
        let episode = self.open.take()?;
        let steal_ns = self.steal_since(episode.started);
        let whole_machine = episode.cpus.len() as u32 >= online_cpus.max(1);
        let cause = if steal_ns.is_some_and(|s| s * 2 >= episode.duration_ns) {
            StallCause::HypervisorSteal
        } else if episode.cpus.is_empty() {
            StallCause::Unknown
        } else if whole_machine && self.hypervisor.is_some() {
            StallCause::VmPaused
        } else if whole_machine {
            StallCause::MachineStall
        } else {
            StallCause::CpuStall
        };
        Some(Stall {
            started: episode.started,
            ended: episode.started.plus_ns(episode.duration_ns),
            duration_ns: episode.duration_ns,
            cause,
            explanation: cause.explain().into(),
            cpus: episode.cpus.into_iter().collect(),
            online_cpus,
            steal_ns,
            hypervisor: self.hypervisor.clone(),
            late_timers: episode.late_timers,
            timers: episode.timers,
        })
    }

    /// Steal accounted from the last sample at or before `from` to the newest sample.
    fn steal_since(&self, from: Monotonic) -> Option<i64> {
        let before = self.steal.iter().rev().find(|(at, _)| *at <= from)?;
        let newest = self.steal.back()?;
        Some(newest.1 - before.1)
    }
}

/// One reading of the clocks and what moves them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClockSample {
    pub mono: Monotonic,
    /// MONOTONIC_RAW at the MONOTONIC read: the midpoint of a RAW read before it and one
    /// after it.
    pub raw: Raw,
    /// The time between those two RAW reads, ns: how far `raw` may be from the moment
    /// MONOTONIC was read, twice over. A few µs on a TSC; under emulation, or on a slow
    /// clocksource such as the HPET (each read traps to the hypervisor), milliseconds.
    pub read_spread_ns: i64,
    /// CLOCK_BOOTTIME, ns (MONOTONIC plus the time suspended).
    pub boot_ns: i64,
    /// The kernel's rate setting (tick and frequency), ppm of MONOTONIC against RAW.
    pub kernel_rate_ppm: Option<f64>,
    pub clocksource: Option<String>,
}

/// What the clock sampler found besides stalls.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClockFinding {
    /// BOOTTIME advanced past MONOTONIC: the machine was suspended this long.
    Suspend {
        #[serde(rename = "at_mono_ns")]
        at: Monotonic,
        duration_ns: i64,
    },
    /// The kernel switched clocksource (the watchdog marked one unstable, or an admin did).
    ClocksourceChange {
        #[serde(rename = "at_mono_ns")]
        at: Monotonic,
        from: String,
        to: String,
    },
    /// MONOTONIC moved against MONOTONIC_RAW by more than the kernel's rate setting (and
    /// any slew in progress) allows: a jump of the timekeeping, not a discipline.
    ClocksourceJump {
        #[serde(rename = "at_mono_ns")]
        at: Monotonic,
        /// MONOTONIC's excess over what the rate explains, over the interval, ns.
        divergence_ns: i64,
        allowance_ns: i64,
        interval_ns: i64,
    },
}

/// BOOTTIME − MONOTONIC growing by more than this (ns) is a suspend, not read noise.
const SUSPEND_MIN_NS: i64 = 1_000_000;
/// The kernel's PLL (ADJ_OFFSET by ntpd) slews up to 500 ppm on top of the frequency.
const PLL_SLEW_PPM: f64 = 500.0;
/// Read jitter of the samples (ns): two clock reads, each a few µs apart at worst.
const SAMPLE_NOISE_NS: i64 = 100_000;

/// Compares each clock sample with the one before.
#[derive(Default)]
pub struct ClockWatch {
    last: Option<ClockSample>,
}

impl ClockWatch {
    /// `slew_ppm_limit`: the fastest rate clockguard's own slew engine may set between the
    /// samples (0 when it is not running): the kernel's setting at the two ends does not
    /// show the rates in between.
    pub fn sample(&mut self, now: ClockSample, slew_ppm_limit: f64) -> Vec<ClockFinding> {
        let mut found = Vec::new();
        let Some(last) = self.last.replace(now.clone()) else {
            return found;
        };
        let suspended = (now.boot_ns - now.mono.ns()) - (last.boot_ns - last.mono.ns());
        if suspended > SUSPEND_MIN_NS {
            found.push(ClockFinding::Suspend {
                at: now.mono,
                duration_ns: suspended,
            });
        }
        if let (Some(from), Some(to)) = (&last.clocksource, &now.clocksource) {
            if from != to {
                found.push(ClockFinding::ClocksourceChange {
                    at: now.mono,
                    from: from.clone(),
                    to: to.clone(),
                });
            }
        }
        if let (Some(rate_then), Some(rate_now)) = (last.kernel_rate_ppm, now.kernel_rate_ppm) {
            let interval = now.raw.ns_since(last.raw);
            let mean_rate = (rate_then + rate_now) / 2.0;
            let expected = interval as f64 * (1.0 + mean_rate * 1e-6);
            let divergence = now.mono.ns_since(last.mono) as f64 - expected;
            let spread_ppm = (rate_now - rate_then).abs() / 2.0 + PLL_SLEW_PPM + slew_ppm_limit;
            // Each end's RAW midpoint is off from its MONOTONIC read by at most half the
            // time its two RAW reads took.
            let read_uncertainty = (last.read_spread_ns + now.read_spread_ns) / 2;
            let allowance =
                (interval as f64 * spread_ppm * 1e-6) as i64 + SAMPLE_NOISE_NS + read_uncertainty;
            if divergence.abs() as i64 > allowance {
                found.push(ClockFinding::ClocksourceJump {
                    at: now.mono,
                    divergence_ns: divergence as i64,
                    allowance_ns: allowance,
                    interval_ns: interval,
                });
            }
        }
        found
    }
}

/// The stall detector and the clock sampler together, turning what they find into journal
/// records.
pub struct TimerWatch {
    stalls: StallDetector,
    clocks: ClockWatch,
    interval_ns: i64,
    threshold_ns: i64,
    last_sample: Option<Monotonic>,
    pub stats: TimerStats,
}

impl TimerWatch {
    pub fn new(config: &crate::config::TimersConfig, hypervisor: Option<String>) -> Self {
        let threshold_ns = (config.stall_threshold_ms * 1e6) as i64;
        TimerWatch {
            stalls: StallDetector::new(threshold_ns, hypervisor),
            clocks: ClockWatch::default(),
            interval_ns: config.sample_interval_ms as i64 * 1_000_000,
            threshold_ns,
            last_sample: None,
            stats: TimerStats::default(),
        }
    }

    pub fn late(&mut self, timer: LateTimer) {
        if timer.due() < Monotonic::from_ns(ARMED_IN_THE_PAST_NS) {
            self.stats.armed_in_the_past += 1;
            return;
        }
        self.stalls.late(timer);
    }

    /// One sample interval went by. `kernel_sees_timers`: the hrtimer hook is attached;
    /// without it the sampler's own late wakeup stands in for the kernel's late timers.
    /// `wall_minus_mono_ns` dates the records (CLOCK_REALTIME − CLOCK_MONOTONIC now).
    pub fn sample(
        &mut self,
        sample: ClockSample,
        steal_ns: Option<i64>,
        online_cpus: u32,
        slew_ppm_limit: f64,
        kernel_sees_timers: bool,
        wall_minus_mono_ns: i64,
    ) -> Vec<Record> {
        let now = sample.mono;
        if let Some(steal) = steal_ns {
            self.stalls.steal_sample(now, steal);
        }
        if let (Some(last), false) = (self.last_sample, kernel_sees_timers) {
            let late_by = now.ns_since(last) - self.interval_ns;
            if late_by >= self.threshold_ns {
                self.stalls.late(LateTimer {
                    cpu: None,
                    at: now,
                    lateness_ns: late_by,
                    function: Some("clockguard's sampler".into()),
                });
            }
        }
        self.last_sample = Some(now);
        let mut records: Vec<_> = self
            .clocks
            .sample(sample, slew_ppm_limit)
            .into_iter()
            .map(|finding| self.clock_record(finding, wall_minus_mono_ns))
            .collect();
        if let Some(stall) = self.stalls.tick(now, online_cpus) {
            self.stats.stalls += 1;
            records.push(stall_record(&stall, wall_minus_mono_ns));
            self.stats.last_stall = Some(stall);
        }
        records
    }

    fn clock_record(&mut self, finding: ClockFinding, wall_minus_mono_ns: i64) -> Record {
        let (at, kind, delta, cause) = match &finding {
            ClockFinding::Suspend { at, duration_ns } => {
                self.stats.suspends += 1;
                (*at, "suspend", Some(*duration_ns), "suspend")
            }
            ClockFinding::ClocksourceChange { at, .. } => {
                self.stats.clocksource_changes += 1;
                (*at, "clocksource_change", None, "clocksource_switched")
            }
            ClockFinding::ClocksourceJump {
                at, divergence_ns, ..
            } => {
                self.stats.clocksource_jumps += 1;
                (
                    *at,
                    "clocksource_jump",
                    Some(*divergence_ns),
                    "monotonic_vs_raw",
                )
            }
        };
        tracing::warn!("timers: {kind}: {finding:?}");
        timers_record(
            at.on_realtime(wall_minus_mono_ns),
            kind,
            delta,
            cause,
            serde_json::to_value(&finding).ok(),
        )
    }
}

fn timers_record(
    time: Realtime,
    kind: &str,
    delta_ns: Option<i64>,
    cause: &str,
    detail: Option<serde_json::Value>,
) -> Record {
    Record {
        time: rfc3339_ns(time.ns()),
        source: Source::Timers,
        clock: Some("CLOCK_MONOTONIC".into()),
        kind: kind.into(),
        cause: Some(cause.into()),
        detail,
        requested: serde_json::json!({}),
        delta_ns,
        result: "0".into(),
        verdict: Verdict::Observed,
        ..Default::default()
    }
}

/// A stall as a journal record: dated when it began, `delta_ns` = how long timers stood.
pub fn stall_record(stall: &Stall, wall_minus_mono_ns: i64) -> Record {
    tracing::warn!(
        "stall of {:.3} s ({}): {}; CPUs {:?} of {}, {} late timers ({})",
        stall.duration_ns as f64 / 1e9,
        stall.cause.as_str(),
        stall.explanation,
        stall.cpus,
        stall.online_cpus,
        stall.late_timers,
        stall.timers.join(", ")
    );
    timers_record(
        stall.started.on_realtime(wall_minus_mono_ns),
        "stall",
        Some(stall.duration_ns),
        stall.cause.as_str(),
        serde_json::to_value(stall).ok(),
    )
}

/// Cumulative steal time of all CPUs, ns: the 8th value of /proc/stat's "cpu" line, in
/// USER_HZ ticks (`ticks_per_s`). None when the line is missing or too short (old kernels).
pub fn parse_steal_ns(stat: &str, ticks_per_s: i64) -> Option<i64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let steal: i64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(steal * (1_000_000_000 / ticks_per_s.max(1)))
}

/// How many CPUs a kernel CPU list names ("0-3,5,7-8" → 7).
pub fn parse_cpu_list(list: &str) -> Option<u32> {
    let mut count = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    Some(count)
}

#[cfg(test)]
mod tests;
