use super::*;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn policy(disruption_support: bool) -> Policy {
    Policy {
        drift_floor_ppb: 10_000,
        void_after_ns: 1_000 * S,
        error_sigmas: 3.0,
        disruption_support,
    }
}

fn at(s: i64) -> Monotonic {
    Monotonic::from_ns(s * S)
}

/// An update at `t` s whose newest sample was taken just before it.
fn measured(t: i64) -> Measured {
    Measured {
        at: at(t),
        newest_sample: at(t).plus_ns(-MS),
        offset_ns: -40_000,
        offset_sigma_ns: 5_000.0,
        root_delay_ns: 200_000,
        root_dispersion_ns: 30_000,
        skew_ppb: 1_500.4,
    }
}

#[test]
fn unknown_until_the_discipline_first_measures() {
    let b = Bound::new(policy(false), 7, at(10));
    assert_eq!(b.status(), ClockStatus::Unknown);
    let last = b.last();
    assert_eq!((last.bound_ns, last.max_drift_ppb), (0, 0));
    assert_eq!(last.void_after, last.as_of, "void at once");
    assert_eq!(last.disruption_marker, 7);
}

#[test]
fn a_measured_bound_adds_the_correction_the_errors_and_the_path() {
    let mut b = Bound::new(policy(false), 0, at(0));
    let e = b.measured(measured(100));
    // 40 µs to correct + 3 × 5 µs + 200 µs / 2 + 30 µs = 185 µs.
    assert_eq!(e.bound_ns, 185_000);
    // 3 × 1.5004 ppm, rounded up, + the 10 ppm floor.
    assert_eq!(e.max_drift_ppb, 4_502 + 10_000);
    assert_eq!((e.as_of, e.void_after), (at(100), at(1_100)));
    assert_eq!(e.status, ClockStatus::Synchronized);
    // A drift no reader accepts is capped below 1e9 ppb.
    let wild = b.measured(Measured {
        skew_ppb: 1e12,
        ..measured(101)
    });
    assert_eq!(wild.max_drift_ppb, 999_999_999);
}

#[test]
fn lost_sources_leave_the_bound_growing_as_free_running() {
    let mut b = Bound::new(policy(false), 0, at(0));
    assert_eq!(
        b.sources_lost().status,
        ClockStatus::Unknown,
        "never synchronised"
    );
    let synced = b.measured(measured(100));
    let lost = b.sources_lost();
    assert_eq!(lost.status, ClockStatus::FreeRunning);
    assert_eq!(
        ErrorBound {
            status: ClockStatus::Synchronized,
            ..lost
        },
        synced,
        "the same bound, which readers grow from its as_of"
    );
    assert_eq!(b.measured(measured(200)).status, ClockStatus::Synchronized);
}

#[test]
fn a_disruption_holds_until_a_sample_taken_after_it() {
    let mut b = Bound::new(policy(false), 4, at(0));
    let synced = b.measured(measured(100));
    // A 2 s step at 110 s: the bound grown over 10 s at the drift, plus the step.
    let d = b.disrupted(at(110), Disruption::Step { by_ns: -2 * S });
    let grown = synced.as_read_at(at(110)).unwrap().0;
    assert_eq!(d.bound_ns, grown + 2 * S);
    assert_eq!(
        (d.status, d.disruption_marker, d.as_of),
        (ClockStatus::Disrupted, 5, at(110))
    );
    // An update from samples taken before the step changes nothing but the growth.
    let stale = b.measured(Measured {
        newest_sample: at(109),
        ..measured(112)
    });
    assert_eq!(stale.status, ClockStatus::Disrupted);
    assert!(stale.bound_ns > d.bound_ns && stale.as_of == at(112));
    // Lost sources do not turn Disrupted into FreeRunning.
    assert_eq!(b.sources_lost().status, ClockStatus::Disrupted);
    // Measured again after the step: synchronised, the marker kept.
    let again = b.measured(measured(120));
    assert_eq!(
        (again.status, again.bound_ns, again.disruption_marker),
        (ClockStatus::Synchronized, 185_000, 5)
    );
    // A pause adds its length; a switch nothing known, but still disrupts.
    assert_eq!(
        b.disrupted(at(130), Disruption::Pause { ns: 5 * S })
            .bound_ns,
        again.as_read_at(at(130)).unwrap().0 + 5 * S
    );
    assert_eq!(
        b.disrupted(at(131), Disruption::ClocksourceSwitch)
            .disruption_marker,
        7
    );
}

#[test]
fn with_vmclock_the_marker_is_the_device_s() {
    let mut b = Bound::new(policy(true), 40, at(0));
    b.measured(measured(100));
    // Our own disruptions leave the marker as the device has it (a reader that finds
    // them different distrusts the segment).
    let step = b.disrupted(at(101), Disruption::Step { by_ns: S });
    assert_eq!(
        (step.disruption_marker, step.status),
        (40, ClockStatus::Disrupted)
    );
    assert!(step.disruption_support);
    let migrated = b.disrupted(at(102), Disruption::Vmclock { marker: 41 });
    assert_eq!(migrated.disruption_marker, 41);
}

#[test]
fn a_correction_slewed_in_widens_the_bound_at_once_until_measured() {
    let mut b = Bound::new(policy(false), 0, at(0));
    assert_eq!(
        b.slewing_in(at(1), 2 * S).status,
        ClockStatus::Unknown,
        "nothing to widen yet"
    );
    let synced = b.measured(measured(100));
    assert_eq!(
        synced.bound_ns,
        185_000 + 2 * S,
        "measured with 2 s still to slew in"
    );
    // It shrinks as it is absorbed: the bound stays as wide until the next update.
    let absorbing = b.slewing_in(at(101), S);
    assert_eq!(absorbing, synced);
    let remeasured = b.measured(measured(110));
    assert_eq!(remeasured.bound_ns, 185_000 + S);
    // A new refused step taken as a slew: widened at once, as of now.
    let widened = b.slewing_in(at(111), 3 * S);
    let grown = remeasured.as_read_at(at(111)).unwrap().0;
    assert_eq!((widened.as_of, widened.bound_ns), (at(111), grown + 2 * S));
    assert_eq!(
        widened.status,
        ClockStatus::Synchronized,
        "not a disruption"
    );
}
