//! The slew engine's decisions: how fast to run CLOCK_REALTIME against CLOCK_MONOTONIC_RAW
//! so that a correction is absorbed without a step (adjtimex `tick` + `freq`, as chrony's
//! sys_linux.c does).
//!
//! A negative correction still runs the clock forward, only slower: the slew rate is at
//! most ±100 500 ppm (the kernel's limits), far from the −1e6 ppm that would stop it.
//! [`Slew`] is a pure state machine fed with [`Reading`]s; the daemon's driver reads the
//! clocks, programs the kernel and calls it at a steady cadence.

use crate::status::SlewStatus;
use crate::time::{Raw, Reading};
use serde::{Deserialize, Serialize};
use std::fmt;
use tracing::warn;

/// A slew is finished when less than this (ns) is left; the sub-µs residual stays pending
/// and is merged with the next correction.
pub const FINISH_NS: f64 = 1_000.0;
/// Horizon (ns) of the controller before any update interval has been measured.
const DEFAULT_HORIZON_NS: f64 = 1e9;
/// Shortest horizon (ns) of the controller.
const MIN_HORIZON_NS: f64 = 1e6;
/// Slack (ns) before an interval's progress is blamed on someone else stepping the clock.
const STEP_SLACK_NS: f64 = 1e6;
const MAX_TICK_DELTA_US: i64 = 1_000;
const MAX_FREQ_SCALED: i64 = 500 << 16;

/// The kernel's frequency setting (adjtimex `tick` and `freq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRate {
    /// µs per clock tick of USER_HZ = 100; 10 000 nominal, 9 000..=11 000 accepted;
    /// 1 µs of tick = 100 ppm.
    pub tick_us: i64,
    /// Frequency offset in scaled ppm (ppm × 65536), ±500 ppm (±32 768 000) accepted.
    pub freq_scaled_ppm: i64,
}

impl KernelRate {
    /// Nominal tick, µs.
    pub const NOMINAL_TICK_US: i64 = 10_000;
    /// The kernel's nominal setting: nominal tick, no frequency offset (0 ppm).
    pub const NOMINAL: KernelRate = KernelRate {
        tick_us: Self::NOMINAL_TICK_US,
        freq_scaled_ppm: 0,
    };
    /// Largest |rate| representable, ppm: 1000 µs of tick + 500 ppm of freq.
    pub const MAX_PPM: f64 = 100_500.0;

    /// The setting for a total rate of `total_ppm` ppm: the bulk in tick (rounded to the
    /// nearest 100 ppm), the rest in freq; clamped to what the kernel accepts.
    pub fn from_ppm(total_ppm: f64) -> KernelRate {
        let total = total_ppm.clamp(-Self::MAX_PPM, Self::MAX_PPM); // NaN stays NaN → 0 below
        let tick_delta =
            ((total / 100.0).round() as i64).clamp(-MAX_TICK_DELTA_US, MAX_TICK_DELTA_US);
        let rest_ppm = total - (tick_delta * 100) as f64;
        let freq = ((rest_ppm * 65536.0).round() as i64).clamp(-MAX_FREQ_SCALED, MAX_FREQ_SCALED);
        KernelRate {
            tick_us: Self::NOMINAL_TICK_US + tick_delta,
            freq_scaled_ppm: freq,
        }
    }

    /// The total rate this setting represents, ppm (realtime against raw).
    pub fn ppm(&self) -> f64 {
        ((self.tick_us - Self::NOMINAL_TICK_US) * 100) as f64
            + self.freq_scaled_ppm as f64 / 65536.0
    }

    /// Whether the kernel accepts this setting.
    pub fn is_valid(&self) -> bool {
        (self.tick_us - Self::NOMINAL_TICK_US).abs() <= MAX_TICK_DELTA_US
            && self.freq_scaled_ppm.abs() <= MAX_FREQ_SCALED
    }
}

/// Limits of the slew engine (`[guard]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlewConfig {
    /// Fastest slew, ppm (chrony's maxslewrate: 83 333 ppm = 1 s per 12 s).
    pub max_slew_ppm: f64,
    /// Largest correction pending at once, ns (24 h by default, as Oracle CTSS).
    pub max_correction_ns: i64,
}

impl Default for SlewConfig {
    fn default() -> Self {
        SlewConfig {
            max_slew_ppm: 83_333.0,
            max_correction_ns: 86_400_000_000_000,
        }
    }
}

/// Why a correction was not accepted.
#[derive(Debug, PartialEq)]
pub enum SlewError {
    /// |pending + requested| would exceed max_correction; nothing was changed.
    TooLarge {
        requested_ns: i64,
        pending_ns: i64,
        max_ns: i64,
    },
    /// The engine's task has stopped (the daemon is shutting down).
    Stopped,
}

impl fmt::Display for SlewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlewError::TooLarge {
                requested_ns: r,
                pending_ns: p,
                max_ns: m,
            } => {
                let s = |ns: &i64| *ns as f64 / 1e9;
                write!(f, "refusing a correction of {:+.6} s: ", s(r))?;
                write!(f, "with {:+.6} s still pending it exceeds ", s(p))?;
                write!(f, "max_correction ({} s)", s(m))
            }
            SlewError::Stopped => write!(f, "the slew engine has stopped"),
        }
    }
}

impl std::error::Error for SlewError {}

/// The engine's view of the kernel's setting (see [`Slew::setting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    programmed: KernelRate,
    programmed_base: KernelRate,
    base: KernelRate,
}

/// The engine: a pure state machine, no clocks, no syscalls.
///
/// Control: rate = clamp(remaining / horizon, ±max_slew_ppm), a proportional controller
/// whose horizon is the last measured interval between `update` calls (1 s before the
/// first): full speed, then the last interval's worth is absorbed by the next update
/// (dead-beat), so the taper lasts about one interval. Call `update` at a steady cadence.
pub struct Slew {
    config: SlewConfig,
    base: KernelRate,
    /// The rate the kernel runs at (as far as the engine knows).
    programmed: KernelRate,
    /// The base in force when `programmed` was set.
    programmed_base: KernelRate,
    remaining: f64,
    /// The last reading progress was accounted at (an update or a request).
    last: Option<Reading>,
    /// When `update` last ran while active. The horizon is the interval between two
    /// updates, never the part of one since a request in between: a reply arriving
    /// 120 ms into a 250 ms interval would otherwise halve the horizon and double the
    /// rate, finishing in one update a correction the engine holds against a kernel
    /// rate bias (found when the NTP simulation's polls stopped landing just after an
    /// update).
    last_update: Option<Raw>,
    horizon_ns: f64,
    corrections: u64,
    refused: u64,
    external_steps: u64,
    absorbed: f64,
}

impl Slew {
    /// `base`: the rate the clock runs at when not slewing (the kernel's setting when the
    /// daemon started, or what the discipline sets); the kernel is assumed to be at it.
    pub fn new(config: SlewConfig, base: KernelRate) -> Slew {
        Slew {
            config,
            base,
            programmed: base,
            programmed_base: base,
            remaining: 0.0,
            last: None,
            last_update: None,
            horizon_ns: DEFAULT_HORIZON_NS,
            corrections: 0,
            refused: 0,
            external_steps: 0,
            absorbed: 0.0,
        }
    }

    pub fn base(&self) -> KernelRate {
        self.base
    }

    /// Makes `total_ns` the whole correction still to apply, replacing what is pending (the
    /// progress up to `now` is accounted first). Refused like `add` beyond max_correction.
    pub fn replace(&mut self, total_ns: i64, now: Reading) -> Result<(), SlewError> {
        self.replace_part(total_ns, total_ns, now)
    }

    /// [`replace`](Self::replace) with `total_ns`, the part of a measured correction of
    /// `whole_ns` known for certain so far (the NTP client's first look): max_correction
    /// judges the whole, so that slewing the part first cannot get round it.
    pub fn replace_part(
        &mut self,
        total_ns: i64,
        whole_ns: i64,
        now: Reading,
    ) -> Result<(), SlewError> {
        if whole_ns.unsigned_abs() > self.config.max_correction_ns.unsigned_abs()
            || total_ns.unsigned_abs() > self.config.max_correction_ns.unsigned_abs()
        {
            self.refused += 1;
            return Err(SlewError::TooLarge {
                requested_ns: whole_ns,
                pending_ns: self.remaining_ns(),
                max_ns: self.config.max_correction_ns,
            });
        }
        self.account_until(now);
        self.remaining = total_ns as f64;
        self.corrections += 1;
        Ok(())
    }

    /// Accounts the progress up to `now` between two updates (the controller's horizon
    /// stays: a partial interval says nothing about the update cadence).
    fn account_until(&mut self, now: Reading) {
        if self.active() {
            if let Some(last) = self.last {
                self.account(last, now);
            }
        } else {
            // Idle (the driver does not update then): the update that follows this request
            // measures from it, not from the one that ended the last slew, maybe hours ago.
            self.last_update = None;
        }
        self.last = Some(now);
    }

    /// Accounts the progress since the last sample and returns the rate to program now
    /// when it differs from the one programmed (None: leave it). The caller must program
    /// it right away (the engine assumes it takes effect at `now`).
    pub fn update(&mut self, now: Reading) -> Option<KernelRate> {
        if !self.active() {
            self.last = None;
            return None;
        }
        if let Some(last) = self.last {
            // The first update after the engine became active measures from the request
            // that woke it (`account_until` forgot the last update then). The driver makes
            // that update at the request itself: a zero interval, so the horizon stays.
            let interval_ns = now.raw.ns_since(self.last_update.unwrap_or(last.raw));
            if interval_ns > 0 {
                self.horizon_ns = (interval_ns as f64).max(MIN_HORIZON_NS);
            }
            self.account(last, now);
        }
        self.last = Some(now);
        self.last_update = Some(now.raw);
        self.retarget()
    }

    /// A new base rate (the NTP discipline's frequency estimate): the progress so far is
    /// accounted at the old base, then the rate to program now is returned as by `update`.
    pub fn set_base(&mut self, base: KernelRate, now: Reading) -> Option<KernelRate> {
        self.account_until(now);
        self.base = base;
        self.retarget()
    }

    fn retarget(&mut self) -> Option<KernelRate> {
        let target = if self.remaining.abs() < FINISH_NS {
            self.base
        } else {
            let max = self.config.max_slew_ppm.abs().min(KernelRate::MAX_PPM);
            let rate = (self.remaining / self.horizon_ns * 1e6).clamp(-max, max);
            KernelRate::from_ppm(self.base.ppm() + rate)
        };
        if target == self.programmed {
            return None;
        }
        self.programmed = target;
        self.programmed_base = self.base;
        Some(target)
    }

    /// The interval `last`..`now`: what realtime gained on raw, minus the base's part.
    fn account(&mut self, last: Reading, now: Reading) {
        let d_raw = i128::from(now.raw.ns()) - i128::from(last.raw.ns());
        if d_raw <= 0 {
            return;
        }
        let gained = (i128::from(now.realtime.ns()) - i128::from(now.raw.ns()))
            - (i128::from(last.realtime.ns()) - i128::from(last.raw.ns()));
        let ns_per_ppm = d_raw as f64 * 1e-6;
        let slew_ppm = self.programmed.ppm() - self.programmed_base.ppm();
        let measured = gained as f64 - self.programmed_base.ppm() * ns_per_ppm;
        let expected = slew_ppm * ns_per_ppm;
        let mut progress = measured;
        let off = measured - expected;
        if off.abs() > slew_ppm.abs() * ns_per_ppm * 1.1 + STEP_SLACK_NS {
            self.external_steps += 1;
            warn!(
                "clock stepped by another party during a slew (~{:+.6} s)",
                off / 1e9
            );
            progress = expected;
        }
        self.remaining -= progress;
        self.absorbed += progress;
    }

    /// What the engine holds about the kernel's setting, to give back to
    /// [`Slew::program_failed`] when programming what it returned fails.
    pub fn setting(&self) -> Setting {
        Setting {
            programmed: self.programmed,
            programmed_base: self.programmed_base,
            base: self.base,
        }
    }

    /// The rate the kernel runs at, as far as the engine knows.
    pub fn programmed(&self) -> KernelRate {
        self.programmed
    }

    /// The kernel refused the rate the last `update` or `set_base` returned: it still runs
    /// as it did at `before` (taken just before that call), and a refused base is dropped.
    pub fn program_failed(&mut self, before: Setting) {
        self.programmed = before.programmed;
        self.programmed_base = before.programmed_base;
        self.base = before.base;
    }

    /// The kernel was set back to the base rate (the driver stops): whatever was pending
    /// stays pending, and no slew runs.
    pub fn back_at_base(&mut self) {
        self.programmed = self.base;
        self.programmed_base = self.base;
    }

    /// Correction still pending, ns.
    pub fn remaining_ns(&self) -> i64 {
        self.remaining.round() as i64
    }

    /// A correction is pending, or the kernel is not yet back at the base rate.
    pub fn active(&self) -> bool {
        self.remaining.abs() >= FINISH_NS || self.programmed != self.base
    }

    pub fn status(&self) -> SlewStatus {
        let active = self.active();
        let rate_ppm = self.programmed.ppm() - self.programmed_base.ppm();
        let eta_s = active.then(|| {
            let same_way = rate_ppm != 0.0 && rate_ppm.signum() == self.remaining.signum();
            let max = self.config.max_slew_ppm.abs().min(KernelRate::MAX_PPM);
            // 1 ppm = 1000 ns per s.
            self.remaining.abs() / (if same_way { rate_ppm.abs() } else { max } * 1e3)
        });
        SlewStatus {
            active,
            remaining_ns: self.remaining_ns(),
            rate_ppm,
            corrections: self.corrections,
            refused: self.refused,
            absorbed_ns: self.absorbed.round() as i64,
            external_steps: self.external_steps,
            eta_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Realtime;

    const S: i64 = 1_000_000_000;
    const NOMINAL: KernelRate = KernelRate::NOMINAL;

    const fn kr(tick_us: i64, freq_scaled_ppm: i64) -> KernelRate {
        KernelRate {
            tick_us,
            freq_scaled_ppm,
        }
    }

    /// Simulated kernel: realtime advances on raw at the set rate, integrated exactly;
    /// every sample() first advances raw by `step_ns`.
    struct SimClock {
        now: (i64, i64), // (raw, realtime) ns
        frac: i128,      // fraction of a ns gained, in 1 / (65536e6) ns
        rate: KernelRate,
        step_ns: i64,
        sets: Vec<KernelRate>,
    }

    impl SimClock {
        fn new(rate: KernelRate, step_ns: i64) -> SimClock {
            SimClock {
                now: (1_000 * S, 1_700_000_000 * S),
                frac: 0,
                rate,
                step_ns,
                sets: Vec::new(),
            }
        }
        fn rate(&self) -> KernelRate {
            self.rate
        }
        fn sample(&mut self) -> Reading {
            let (d, rate) = (self.step_ns, self.rate);
            let scaled = (rate.tick_us - 10_000) * 100 * 65536 + rate.freq_scaled_ppm;
            let (acc, den) = (
                self.frac + i128::from(d) * i128::from(scaled),
                65_536_000_000i128,
            );
            self.frac = acc.rem_euclid(den);
            self.now.0 += d;
            self.now.1 += d + acc.div_euclid(den) as i64;
            Reading {
                raw: Raw::from_ns(self.now.0),
                realtime: Realtime::from_ns(self.now.1),
            }
        }
        fn set_rate(&mut self, rate: KernelRate) {
            assert!(rate.is_valid() && rate.ppm() > -1e6, "{rate:?}");
            self.rate = rate;
            self.sets.push(rate);
        }
    }

    /// Drives the core through a correction until it is idle; `jump` steps realtime by
    /// (after update n, ns). Returns the first and last samples.
    fn run(core: &mut Slew, sim: &mut SimClock, delta_ns: i64, jump: (usize, i64)) -> [Reading; 2] {
        let start = sim.sample();
        core.replace(delta_ns, start).unwrap();
        let mut now = start;
        for n in 0..1_000_000 {
            if let Some(rate) = core.update(now) {
                sim.set_rate(rate);
            }
            if !core.active() {
                return [start, now];
            }
            if n == jump.0 {
                sim.now.1 += jump.1;
            }
            let next = sim.sample();
            assert!(
                next.realtime.ns() > now.realtime.ns(),
                "realtime went backward"
            );
            now = next;
        }
        panic!("slew not finished: {:?}", core.status());
    }

    /// (raw time taken in s, realtime − raw gained in ns).
    fn took_gained([a, b]: [Reading; 2]) -> (f64, i64) {
        let gained = (b.realtime.ns() - b.raw.ns()) - (a.realtime.ns() - a.raw.ns());
        ((b.raw.ns() - a.raw.ns()) as f64 / 1e9, gained)
    }

    #[test]
    fn kernel_rate_from_ppm_splits_and_clamps() {
        assert_eq!(KernelRate::from_ppm(83_333.0), kr(10_833, 33 << 16));
        assert_eq!(KernelRate::from_ppm(-83_333.0), kr(9_167, -33 << 16));
        assert_eq!(KernelRate::from_ppm(0.0), NOMINAL);
        assert_eq!(KernelRate::from_ppm(f64::NAN), NOMINAL);
        assert_eq!(KernelRate::from_ppm(12.5), kr(10_000, 819_200));
        assert_eq!(KernelRate::from_ppm(200_000.0), kr(11_000, 500 << 16));
        assert_eq!(KernelRate::from_ppm(-200_000.0), kr(9_000, -500 << 16));
        for i in -2_010_000..=2_010_000 {
            let ppm = f64::from(i) * 0.05 + 0.0123;
            let k = KernelRate::from_ppm(ppm);
            assert!(k.is_valid(), "{k:?}");
            assert!(k.freq_scaled_ppm.abs() <= 50 << 16 || ppm.abs() > 100_050.0);
            let want = ppm.clamp(-KernelRate::MAX_PPM, KernelRate::MAX_PPM);
            assert!((k.ppm() - want).abs() <= 1.0 / 65536.0, "{ppm} → {k:?}");
            assert!(k.ppm().abs() < 1e6); // the clock can never run backward
        }
    }

    #[test]
    fn plus_2s_finishes_in_24s() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let (took, gained) = took_gained(run(&mut core, &mut sim, 2 * S, (usize::MAX, 0)));
        assert!((took - 24.0).abs() < 24.0 * 0.03, "took {took} s");
        assert!((gained - 2 * S).abs() <= 1_000, "gained {gained}");
        assert_eq!(sim.rate(), NOMINAL);
        let st = core.status();
        assert!(
            !st.active && st.eta_s.is_none() && st.rate_ppm == 0.0,
            "{st:?}"
        );
        assert_eq!((st.corrections, st.external_steps), (1, 0));
        assert!((st.absorbed_ns - 2 * S).abs() <= 1_000);
    }

    #[test]
    fn minus_11s_never_goes_backward() {
        let base = KernelRate::from_ppm(-15.5);
        let mut sim = SimClock::new(base, 1_000_000); // sampled every 1 ms
        let mut core = Slew::new(SlewConfig::default(), base);
        let (took, gained) = took_gained(run(&mut core, &mut sim, -11 * S, (usize::MAX, 0)));
        assert!((took - 132.0).abs() < 132.0 * 0.01, "took {took} s");
        let slewed = gained as f64 - base.ppm() * took * 1e3;
        assert!((slewed + 11e9).abs() <= 1_000.0, "slewed {slewed}");
        assert_eq!(sim.rate(), base);
        assert!(sim.sets.iter().all(|r| r.ppm() > -100_000.0));
    }

    #[test]
    fn refuses_too_large_and_replaces() {
        let config = SlewConfig {
            max_slew_ppm: 83_333.0,
            max_correction_ns: 10 * S,
        };
        let mut core = Slew::new(config, NOMINAL);
        let now = Reading {
            raw: Raw::from_ns(0),
            realtime: Realtime::from_ns(0),
        };
        assert_eq!(core.replace(S / 2, now), Ok(()));
        let err = core.replace(12 * S, now).unwrap_err();
        let (requested_ns, pending_ns, max_ns) = (12 * S, S / 2, 10 * S);
        assert_eq!(
            err,
            SlewError::TooLarge {
                requested_ns,
                pending_ns,
                max_ns
            }
        );
        let msg = "refusing a correction of +12.000000 s: with +0.500000 s still pending it \
                   exceeds max_correction (10 s)";
        assert_eq!(err.to_string(), msg);
        assert!(core.replace(i64::MIN, now).is_err());
        let st = core.status();
        assert_eq!((st.remaining_ns, st.corrections, st.refused), (S / 2, 1, 2));
        // A new total replaces the pending one; it is not added to it.
        assert_eq!(core.replace(-3 * S, now), Ok(()));
        assert_eq!(core.replace(-10 * S, now), Ok(()));
        assert_eq!(core.remaining_ns(), -10 * S);
        assert!(core.replace(-10 * S - 1, now).is_err());
        assert_eq!(core.remaining_ns(), -10 * S);
        // The certain part of a larger measured correction is judged by the whole.
        let err = core.replace_part(9 * S, 11 * S, now).unwrap_err();
        assert!(
            matches!(err, SlewError::TooLarge { requested_ns, .. } if requested_ns == 11 * S),
            "{err:?}"
        );
        assert_eq!(core.remaining_ns(), -10 * S);
        assert_eq!(core.replace_part(9 * S, 10 * S, now), Ok(()));
        assert_eq!(core.remaining_ns(), 9 * S);
    }

    /// A kernel that runs 67.75 ppm fast (as the test VM's did) and a correction the
    /// engine holds against it: updates every 250 ms, and a new base rate 120 ms into one
    /// interval. The update after it still targets the 250 ms cadence (the rate that holds
    /// the bias); before the fix it took 130 ms as its horizon, nearly doubled the rate
    /// and finished the held correction, leaving the bias to run free until the next NTP
    /// sample.
    #[test]
    fn a_request_between_updates_does_not_shorten_the_horizon() {
        const MS: i64 = 1_000_000;
        let bias_ppm = 67.75;
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let reading = |raw_ns: i64, realtime_ppm: f64| Reading {
            raw: Raw::from_ns(raw_ns),
            realtime: Realtime::from_ns(raw_ns + (raw_ns as f64 * realtime_ppm * 1e-6) as i64),
        };
        // Held: −17 µs pending, programmed at −67.75 ppm, which the bias cancels, so
        // realtime keeps pace with raw and nothing is absorbed.
        core.replace(-16_937, reading(0, 0.0)).unwrap();
        let first = core.update(reading(250 * MS, 0.0)).expect("slews");
        let held_ppm = first.ppm() - NOMINAL.ppm();
        assert!((held_ppm + bias_ppm).abs() < 0.1, "{held_ppm} ppm");
        // From here the kernel runs at the programmed rate + the bias: realtime = raw.
        assert_eq!(core.update(reading(500 * MS, 0.0)), None);
        let rebased = core.set_base(NOMINAL, reading(620 * MS, 0.0));
        assert_eq!(rebased, None, "the same base: nothing to reprogram");
        let after = core.update(reading(750 * MS, 0.0));
        assert_eq!(
            after, None,
            "the horizon stayed 250 ms: the held rate stays"
        );
        assert!(
            (core.remaining_ns() + 16_937).abs() < 10,
            "{}",
            core.remaining_ns()
        );
    }

    /// The first update after an idle spell: the driver updates right at the request that
    /// wakes the engine, and the horizon must stay the update cadence (250 ms here), not
    /// become the time since the last slew ended (100 s), which would start at ~0 ppm.
    #[test]
    fn a_slew_after_an_idle_spell_starts_at_the_update_cadence() {
        const MS: i64 = 1_000_000;
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let at = |raw_ns: i64| Reading {
            raw: Raw::from_ns(raw_ns),
            realtime: Realtime::from_ns(raw_ns),
        };
        core.replace(100_000, at(0)).unwrap();
        core.update(at(0));
        core.update(at(250 * MS));
        // Done: nothing left, back at the base, idle.
        core.replace(0, at(300 * MS)).unwrap();
        core.update(at(500 * MS));
        assert!(!core.active());
        core.replace(-50_000, at(100_500 * MS)).unwrap();
        let rate = core.update(at(100_500 * MS)).expect("slews");
        let slew_ppm = rate.ppm() - NOMINAL.ppm();
        // −50 µs over 250 ms.
        assert!((slew_ppm + 200.0).abs() < 1.0, "{slew_ppm} ppm");
    }

    #[test]
    fn a_new_base_rate_is_programmed_and_a_slew_runs_on_top_of_it() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        // Idle: the new base is programmed at once and the engine stays idle.
        let base = KernelRate::from_ppm(12.5);
        assert_eq!(core.set_base(base, sim.sample()), Some(base));
        sim.set_rate(base);
        assert!(!core.active());
        // A slew of +1 s on top of the base ends back at the base, having absorbed the
        // second; the base's own rate is not counted as progress.
        let [first, last] = run(&mut core, &mut sim, S, (usize::MAX, 0));
        assert_eq!(sim.rate(), base);
        let (took, gained) = took_gained([first, last]);
        let base_part = base.ppm() * took * 1e3;
        assert!(
            (gained as f64 - base_part - S as f64).abs() < 2_000.0,
            "gained {gained}"
        );
        // A base change in the middle of a slew: accounted at the old base up to the
        // change, and the slew still absorbs exactly what was asked.
        let start = sim.sample();
        core.replace(S, start).unwrap();
        let mut now = start;
        let new_base = KernelRate::from_ppm(-40.0);
        for n in 0..1_000 {
            let rate = if n == 10 {
                core.set_base(new_base, now)
            } else {
                core.update(now)
            };
            if let Some(rate) = rate {
                sim.set_rate(rate);
            }
            if !core.active() {
                break;
            }
            now = sim.sample();
        }
        assert_eq!(sim.rate(), new_base);
        assert_eq!(core.status().external_steps, 0);
        let (_, gained) = took_gained([start, now]);
        // Base parts: 10 updates of 250 ms at +12.5 ppm, the rest at −40 ppm.
        let rest_s = (now.raw.ns() - start.raw.ns()) as f64 / 1e9 - 2.5;
        let base_part = 12.5 * 2.5 * 1e3 - 40.0 * rest_s * 1e3;
        assert!(
            (gained as f64 - base_part - S as f64).abs() < 2_000.0,
            "gained {gained}"
        );
    }

    /// The kernel refuses a new base in the middle of a slew: it keeps running at the
    /// slew on the old base, and that is what the engine accounts (before the setting was
    /// restored whole, the next interval was measured against the refused base: 50 ppm ×
    /// 250 ms = 12.5 µs of phantom progress).
    #[test]
    fn a_refused_base_leaves_the_slew_on_the_old_base() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let start = sim.sample();
        core.replace(S, start).unwrap();
        let slewing = core.update(start).expect("slews");
        sim.set_rate(slewing);
        let now = sim.sample();
        let before = core.setting();
        assert!(core.set_base(KernelRate::from_ppm(50.0), now).is_some());
        core.program_failed(before);
        assert_eq!((core.base(), core.programmed()), (NOMINAL, slewing));
        let remaining_then = core.remaining_ns();
        let later = sim.sample();
        core.update(later);
        let absorbed = remaining_then - core.remaining_ns();
        let gained = (later.realtime.ns() - later.raw.ns()) - (now.realtime.ns() - now.raw.ns());
        assert!(
            (absorbed - gained).abs() <= 1,
            "absorbed {absorbed} ns, gained {gained} ns"
        );
        assert_eq!(core.status().external_steps, 0);
    }

    #[test]
    fn external_step_is_not_progress() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let (took, gained) = took_gained(run(&mut core, &mut sim, 2 * S, (20, 5 * S)));
        let st = core.status();
        assert!(!st.active && st.external_steps == 1, "{st:?}");
        assert!((gained - 7 * S).abs() <= 1_000, "gained {gained}");
        assert!((took - 24.0).abs() < 24.0 * 0.03, "took {took} s");
    }
}
