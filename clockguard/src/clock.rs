//! Reading the system clocks (never setting them).

use clockguard_core::time::{Monotonic, Raw, Reading, Realtime};

/// A clock's value in ns (clock_gettime).
pub use clockguard_sys::clock_ns as read_ns;

/// `clock` − CLOCK_MONOTONIC in ns, read between two monotonic reads; the error is half
/// the read gap. Of a few tries the tightest counts: one preempted between its reads (a
/// busy VM, a vCPU descheduled) would be off by milliseconds, and a fallback jump
/// measured against it would look unexplained.
fn minus_monotonic_ns(clock: libc::clockid_t) -> i64 {
    (0..5)
        .map(|_| {
            let m1 = read_ns(libc::CLOCK_MONOTONIC);
            let c = read_ns(clock);
            let m2 = read_ns(libc::CLOCK_MONOTONIC);
            (m2 - m1, c - (m1 + (m2 - m1) / 2))
        })
        .min_by_key(|(gap, _)| *gap)
        .map(|(_, offset)| offset)
        .unwrap_or_default()
}

/// CLOCK_TAI − CLOCK_MONOTONIC in ns: what the kernel side measures (bpf_ktime_get_tai_ns
/// − bpf_ktime_get_ns).
pub fn tai_minus_monotonic_ns() -> i64 {
    minus_monotonic_ns(libc::CLOCK_TAI)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC in ns: constant while the clock is only slewed, it
/// changes by exactly the size of a step.
pub fn realtime_minus_monotonic_ns() -> i64 {
    minus_monotonic_ns(libc::CLOCK_REALTIME)
}

/// The kernel's TAI offset (CLOCK_TAI − CLOCK_REALTIME) in whole seconds; read from the
/// clocks rather than adjtimex, so that reading it is not itself a traced clock syscall.
pub fn tai_offset_s() -> i64 {
    let diff = read_ns(libc::CLOCK_TAI) - read_ns(libc::CLOCK_REALTIME);
    (diff as f64 / 1e9).round() as i64
}

pub fn realtime_ns() -> i64 {
    read_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_REALTIME now.
pub fn realtime() -> Realtime {
    Realtime::from_ns(realtime_ns())
}

/// CLOCK_MONOTONIC now.
pub fn monotonic() -> Monotonic {
    Monotonic::from_ns(read_ns(libc::CLOCK_MONOTONIC))
}

/// CLOCK_MONOTONIC_COARSE now: CLOCK_MONOTONIC as of the last tick, the clock ClockBound's
/// readers date the bound on (see clockguard_core::clockbound).
pub fn monotonic_coarse() -> Monotonic {
    Monotonic::from_ns(read_ns(libc::CLOCK_MONOTONIC_COARSE))
}

/// CLOCK_MONOTONIC_RAW and CLOCK_REALTIME, back to back: REALTIME between two RAW reads,
/// RAW taken as their midpoint.
pub fn reading() -> Reading {
    let raw_before = read_ns(libc::CLOCK_MONOTONIC_RAW);
    let realtime = read_ns(libc::CLOCK_REALTIME);
    let raw_after = read_ns(libc::CLOCK_MONOTONIC_RAW);
    Reading {
        raw: Raw::from_ns(raw_before + (raw_after - raw_before) / 2),
        realtime: Realtime::from_ns(realtime),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_consistent() {
        // TAI − MONO − (REALTIME − MONO) is the TAI offset, within the read gaps.
        let tai = tai_minus_monotonic_ns();
        let real = realtime_minus_monotonic_ns();
        let tai_s = tai_offset_s();
        let residual = tai - real - tai_s * 1_000_000_000;
        assert!(residual.abs() < 1_000_000, "residual {residual} ns");
        assert!((0..=100).contains(&tai_s), "TAI offset {tai_s} s");
    }
}
