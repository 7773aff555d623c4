//! The userspace fallback detector: a CLOCK_REALTIME timerfd armed with
//! TFD_TIMER_CANCEL_ON_SET is cancelled by the kernel whenever the realtime clock is set
//! (clock_was_set), so a discontinuity is noticed even where no eBPF hook could attach.
//! It measures the jump as the change of REALTIME − MONOTONIC; the daemon journals the part
//! that no kernel event explained.

use std::{io, time::Duration};

use anyhow::{Context, Result};
use clockguard_core::time::Monotonic;
use clockguard_sys::{ClockSetTimer, ClockSetTimerRead};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::clock;

/// Let the ring buffer's events for the same jump reach the daemon before this report.
const SETTLE: Duration = Duration::from_millis(300);
/// Changes of REALTIME − MONOTONIC below this are read noise, not jumps (ns).
const NOISE_NS: i64 = 100_000;

#[derive(Clone, Copy, Debug)]
pub struct Jump {
    /// REALTIME − MONOTONIC after minus before, ns.
    pub delta_ns: i64,
    /// When the cancellation was seen.
    pub seen: Monotonic,
}

fn arm(timer: &ClockSetTimer) -> io::Result<()> {
    // Ten years ahead, absolute: it never expires in practice; what we want is the
    // cancellation on any clock set.
    timer.arm(clock::realtime_ns() / 1_000_000_000 + 10 * 365 * 86_400)
}

pub fn open() -> Result<AsyncFd<ClockSetTimer>> {
    let timer = ClockSetTimer::new().context("timerfd_create(CLOCK_REALTIME)")?;
    arm(&timer).context("timerfd_settime(TFD_TIMER_CANCEL_ON_SET)")?;
    clockguard_sys::poll_readable(timer).context("cannot poll the timerfd")
}

/// Runs until the receiver is gone, sending one `Jump` per detected discontinuity.
pub async fn run(timer: AsyncFd<ClockSetTimer>, jumps: mpsc::Sender<Jump>) -> Result<()> {
    let mut last = clock::realtime_minus_monotonic_ns();
    loop {
        let mut guard = timer.readable().await?;
        match timer.get_ref().read().context("reading the timerfd")? {
            ClockSetTimerRead::Nothing => {
                guard.clear_ready();
                continue;
            }
            // The clock was set (what we are here for), or the timer expired.
            ClockSetTimerRead::Fired => {}
        }
        // Expired (a jump of ten years forward) or cancelled: re-arm against the new time.
        arm(timer.get_ref()).context("re-arming the timerfd")?;
        guard.clear_ready();
        tokio::time::sleep(SETTLE).await;
        // Read before the offset: every jump before `seen` is in the measurement.
        let seen = clock::monotonic();
        let now = clock::realtime_minus_monotonic_ns();
        let delta_ns = now - last;
        last = now;
        if delta_ns.abs() < NOISE_NS {
            continue;
        }
        let jump = Jump { delta_ns, seen };
        if jumps.send(jump).await.is_err() {
            return Ok(());
        }
    }
}

/// Tracks how much of the realtime movement the kernel hooks already explained, so the
/// fallback journals only what nobody reported.
#[derive(Debug, Default)]
pub struct Reconciler {
    /// Jumps the kernel's records measured and no measurement of the fallback has taken
    /// in yet: (when, CLOCK_MONOTONIC; ns).
    explained: Vec<(Monotonic, i64)>,
    /// When the fallback last measured (CLOCK_MONOTONIC): every jump before it is in that
    /// measurement.
    measured_at: Option<Monotonic>,
}

impl Reconciler {
    /// Tolerance between the kernel's measurement and ours (read gaps, rounding).
    pub const TOLERANCE_NS: i64 = 1_000_000;

    /// A kernel event measured a jump of `delta_ns`, made at `at` (CLOCK_MONOTONIC). A
    /// record that comes after the fallback measured its jump (a call whose exit hook
    /// the kernel skipped is sent at its thread's next clock call or exit) explains
    /// nothing any more: that measurement was reconciled without it, and counting it now
    /// would take it off the next jump.
    pub fn explained(&mut self, delta_ns: i64, at: Monotonic) {
        if delta_ns == 0 || self.measured_at.is_some_and(|measured| at <= measured) {
            return;
        }
        // The fallback measures within SETTLE of any clock change: a jump it has not
        // taken in after KEEP_NS is one it will never see (no fallback running).
        self.explained
            .retain(|(when, _)| at.ns_since(*when) < Self::KEEP_NS);
        self.explained.push((at, delta_ns));
    }

    /// How long a measured jump waits for the fallback's measurement (ns).
    const KEEP_NS: i64 = 10_000_000_000;

    /// The fallback saw `jump`: returns the unexplained part to journal, if any. Only the
    /// jumps made before its measurement count against it; a record already here of a
    /// later jump waits for the next one.
    pub fn reconcile(&mut self, jump: &Jump) -> Option<i64> {
        let mut explained_ns = 0i64;
        self.explained.retain(|&(when, delta_ns)| {
            let taken_in = when <= jump.seen;
            if taken_in {
                explained_ns = explained_ns.saturating_add(delta_ns);
            }
            !taken_in
        });
        self.measured_at = Some(jump.seen);
        let unexplained = jump.delta_ns - explained_ns;
        (unexplained.abs() > Self::TOLERANCE_NS).then_some(unexplained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A jump measured at 1 s.
    fn jump(delta_ns: i64) -> Jump {
        jump_seen_at(delta_ns, 1_000_000_000)
    }

    fn jump_seen_at(delta_ns: i64, seen_ns: i64) -> Jump {
        Jump {
            delta_ns,
            seen: Monotonic::from_ns(seen_ns),
        }
    }

    fn at(ns: i64) -> Monotonic {
        Monotonic::from_ns(ns)
    }

    #[test]
    fn jump_reported_by_the_kernel_is_not_journaled_twice() {
        let mut r = Reconciler::default();
        r.explained(-11_000_000_000, at(1));
        assert_eq!(r.reconcile(&jump(-11_000_000_150)), None);
    }

    #[test]
    fn a_record_that_comes_after_its_jump_was_measured_explains_nothing_later() {
        let mut r = Reconciler::default();
        // A step of +2 s at 1 s, measured by the fallback at 1.3 s before its record came.
        assert_eq!(
            r.reconcile(&jump_seen_at(2_000_000_000, 1_300_000_000)),
            Some(2_000_000_000)
        );
        r.explained(2_000_000_000, at(1_000_000_000));
        // The next step (-1 s at 5 s) is the only thing in the next measurement.
        r.explained(-1_000_000_000, at(5_000_000_000));
        assert_eq!(
            r.reconcile(&jump_seen_at(-1_000_000_000, 5_300_000_000)),
            None
        );
    }

    #[test]
    fn a_record_of_a_jump_after_the_measurement_counts_against_the_next_one() {
        let mut r = Reconciler::default();
        r.explained(3_000_000_000, at(1_000_000_000));
        // A second step at 1.5 s, recorded before the first measurement (at 1.3 s) is
        // reconciled.
        r.explained(-2_000_000_000, at(1_500_000_000));
        assert_eq!(
            r.reconcile(&jump_seen_at(3_000_000_000, 1_300_000_000)),
            None
        );
        assert_eq!(
            r.reconcile(&jump_seen_at(-2_000_000_000, 1_800_000_000)),
            None
        );
    }

    #[test]
    fn records_no_measurement_takes_in_are_not_kept_for_ever() {
        let mut r = Reconciler::default();
        for i in 0..1_000 {
            r.explained(1_000_000, at(i * 1_000_000_000));
        }
        assert!(r.explained.len() <= 11, "{} kept", r.explained.len());
    }

    #[test]
    fn unexplained_jump_is_journaled() {
        let mut r = Reconciler::default();
        assert_eq!(r.reconcile(&jump(5_000_000_000)), Some(5_000_000_000));
    }

    #[test]
    fn only_the_unexplained_part_is_journaled() {
        let mut r = Reconciler::default();
        r.explained(2_000_000_000, at(1));
        assert_eq!(r.reconcile(&jump(5_000_000_000)), Some(3_000_000_000));
        // The account starts over after each reconciliation.
        assert_eq!(r.reconcile(&jump(0)), None);
    }

    #[test]
    fn timerfd_arms_on_this_kernel() {
        // Creating and arming a timerfd changes no clock; it needs no privilege.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { open().unwrap() });
    }
}
