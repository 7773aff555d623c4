//! Did something outside a test change this machine's clock while the test ran? On the
//! host no test changes the clock (tests/host/README.md), yet a hypervisor's time sync or an NTP
//! client may; run-suite.sh compares two readings of [`ClockState`] around each host test
//! and says what changed (and retries a failed test once when something did).

use clockguard_core::slew::KernelRate;
use serde_json::{json, Value};

/// A step smaller than this is read noise between the clock reads (ns).
const STEP_NOISE_NS: i64 = 100_000;
/// A change of the kernel's rate matters when it could move the clock by this much over
/// the interval (ns): an NTP client's updates of a few ppm over a test do not.
const RATE_EFFECT_NS: i64 = 1_000_000;
/// adjtimex status bits STA_INS | STA_DEL: a leap second armed.
const STA_LEAP_BITS: i64 = 0x10 | 0x20;
/// A slew is CLOCK_MONOTONIC running apart from CLOCK_MONOTONIC_RAW faster or slower than
/// the kernel's frequency and tick say; below this (ns, plus SLEW_NOISE_PPB of the time
/// between the readings) it is the kernel's own rounding.
const SLEW_NOISE_NS: i64 = 100_000;
const SLEW_NOISE_PPB: i64 = 5_000;

/// One reading of the clocks and the kernel's discipline state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockState {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, ns: changes only by steps.
    pub realtime_minus_monotonic_ns: i64,
    /// CLOCK_MONOTONIC − CLOCK_MONOTONIC_RAW, ns: changes with the frequency, tick and slews.
    pub monotonic_minus_raw_ns: i64,
    /// CLOCK_MONOTONIC_RAW, ns.
    pub raw_ns: i64,
    /// The kernel's frequency offset, ppm << 16 (adjtimex `freq`).
    pub freq_scaled_ppm: i64,
    /// adjtimex `tick`, µs per tick (10000 at USER_HZ 100 when nobody changed it).
    pub tick_us: i64,
    /// adjtimex `status` bits.
    pub status: i64,
}

impl ClockState {
    /// The kernel's rate (frequency and tick), ppb.
    fn rate_ppb(&self) -> i64 {
        let rate = KernelRate {
            tick_us: self.tick_us,
            freq_scaled_ppm: self.freq_scaled_ppm,
        };
        (rate.ppm() * 1e3).round() as i64
    }

    pub fn to_json(self) -> Value {
        json!({
            "realtime_minus_monotonic_ns": self.realtime_minus_monotonic_ns,
            "monotonic_minus_raw_ns": self.monotonic_minus_raw_ns,
            "raw_ns": self.raw_ns,
            "freq_scaled_ppm": self.freq_scaled_ppm,
            "tick_us": self.tick_us,
            "status": self.status,
        })
    }

    pub fn from_json(value: &Value) -> Result<ClockState, String> {
        let field = |name: &str| {
            value[name]
                .as_i64()
                .ok_or_else(|| format!("the reading has no integer {name}: {value}"))
        };
        Ok(ClockState {
            realtime_minus_monotonic_ns: field("realtime_minus_monotonic_ns")?,
            monotonic_minus_raw_ns: field("monotonic_minus_raw_ns")?,
            raw_ns: field("raw_ns")?,
            freq_scaled_ppm: field("freq_scaled_ppm")?,
            tick_us: field("tick_us")?,
            status: field("status")?,
        })
    }
}

/// What changed the clock between `before` and `after`, one phrase per change; empty
/// when nothing did. Judged by effect, so that an NTP client's routine frequency updates
/// on a host that runs one are no finding: a step; a slew beyond what the kernel's rate
/// (frequency and tick) at either reading explains; a change of that rate that could move
/// the clock by more than RATE_EFFECT_NS over the interval; a leap second armed or
/// disarmed.
pub fn changes(before: &ClockState, after: &ClockState) -> Vec<String> {
    let mut found = Vec::new();
    let step_ns = after.realtime_minus_monotonic_ns - before.realtime_minus_monotonic_ns;
    if step_ns.abs() > STEP_NOISE_NS {
        found.push(format!("stepped by {:+.3} ms", step_ns as f64 / 1e6));
    }
    let elapsed_ns = after.raw_ns - before.raw_ns;
    let (rate_before, rate_after) = (before.rate_ppb(), after.rate_ppb());
    if ppb_of(elapsed_ns, (rate_after - rate_before).abs()) > RATE_EFFECT_NS {
        found.push(format!(
            "its rate changed from {:+.3} to {:+.3} ppm",
            rate_before as f64 / 1e3,
            rate_after as f64 / 1e3
        ));
    }
    // MONOTONIC runs apart from RAW at the kernel's rate; whatever rate between the two
    // readings held meanwhile, more than that is a slew (adjtime, a PLL offset).
    let moved_ns = after.monotonic_minus_raw_ns - before.monotonic_minus_raw_ns;
    let low = ppb_of(elapsed_ns, rate_before.min(rate_after));
    let high = ppb_of(elapsed_ns, rate_before.max(rate_after));
    let slew_ns = moved_ns - moved_ns.clamp(low, high);
    if slew_ns.abs() > SLEW_NOISE_NS + ppb_of(elapsed_ns, SLEW_NOISE_PPB) {
        found.push(format!("slewed by {:+.3} ms", slew_ns as f64 / 1e6));
    }
    let leap = |state: &ClockState| state.status & STA_LEAP_BITS;
    if leap(after) != leap(before) {
        found.push(format!(
            "a leap second was {} (status {:#x} to {:#x})",
            if leap(after) != 0 {
                "armed"
            } else {
                "disarmed"
            },
            before.status,
            after.status
        ));
    }
    found
}

/// `ppb` parts per billion of `ns`, without overflow.
fn ppb_of(ns: i64, ppb: i64) -> i64 {
    (i128::from(ns) * i128::from(ppb) / 1_000_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn still() -> ClockState {
        ClockState {
            realtime_minus_monotonic_ns: 1_796_529_135_039_725_168,
            monotonic_minus_raw_ns: 2_000,
            raw_ns: 100 * S,
            freq_scaled_ppm: 0,
            tick_us: 10_000,
            status: 0x2040,
        }
    }

    #[test]
    fn an_untouched_clock_shows_no_change() {
        let mut later = still();
        later.raw_ns += 60 * S;
        later.realtime_minus_monotonic_ns += 3_000; // read noise
        later.monotonic_minus_raw_ns += 50_000; // rounding
        assert_eq!(changes(&still(), &later), Vec::<String>::new());
    }

    #[test]
    fn a_clock_running_at_its_frequency_is_not_slewed() {
        // +20 ppm for 30 s: MONOTONIC gains 600 µs on RAW, as the kernel was told.
        let mut before = still();
        before.freq_scaled_ppm = 20 << 16;
        let mut after = before;
        after.raw_ns += 30 * S;
        after.monotonic_minus_raw_ns += 600_000;
        assert_eq!(changes(&before, &after), Vec::<String>::new());
        // The same with the tick at 10001 µs (+100 ppm): 3.6 ms in all.
        before.tick_us = 10_001;
        after.tick_us = 10_001;
        after.monotonic_minus_raw_ns += 3_000_000;
        assert_eq!(changes(&before, &after), Vec::<String>::new());
    }

    #[test]
    fn steps_slews_and_discipline_changes_are_named() {
        let mut after = still();
        after.raw_ns += 10 * S;
        after.realtime_minus_monotonic_ns += 2_000_000;
        assert_eq!(changes(&still(), &after), ["stepped by +2.000 ms"]);

        let mut after = still();
        after.raw_ns += 2 * S;
        after.monotonic_minus_raw_ns += 14_000_000;
        assert_eq!(changes(&still(), &after), ["slewed by +14.000 ms"]);

        // The tick to 10100 µs (+10 000 ppm) 1 s before the reading, and a leap second
        // armed: MONOTONIC gained 10 ms on RAW, which the new rate explains.
        let mut after = still();
        after.raw_ns += S;
        after.tick_us = 10_100;
        after.monotonic_minus_raw_ns += 10_000_000;
        after.status = 0x2050;
        assert_eq!(
            changes(&still(), &after),
            [
                "its rate changed from +0.000 to +10000.000 ppm",
                "a leap second was armed (status 0x2040 to 0x2050)"
            ]
        );
    }

    #[test]
    fn an_ntp_clients_frequency_updates_are_no_finding() {
        // chronyd moved the frequency from +12 to +15 ppm during a 30 s test (an effect of
        // 90 µs at most), and the clock ran at a rate in between; it cleared STA_UNSYNC.
        let mut before = still();
        before.freq_scaled_ppm = 12 << 16;
        let mut after = before;
        after.raw_ns += 30 * S;
        after.freq_scaled_ppm = 15 << 16;
        after.monotonic_minus_raw_ns += 400_000;
        after.status = 0x2001;
        assert_eq!(changes(&before, &after), Vec::<String>::new());
    }

    #[test]
    fn a_reading_round_trips_through_json() {
        let state = still();
        assert_eq!(ClockState::from_json(&state.to_json()), Ok(state));
        let err = ClockState::from_json(&json!({"raw_ns": 1})).unwrap_err();
        assert!(err.contains("realtime_minus_monotonic_ns"), "{err}");
    }
}
