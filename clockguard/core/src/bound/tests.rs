use super::*;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn policy(disruption_support: bool) -> Policy {
    Policy {
        drift_floor_ppb: 10_000,
        void_after_ns: 1_000 * S,
        error_sigmas: 3.0,
        disruption_support,
        exclusive_discipline: true,
        slew_in_flight_ns: 50 * MS,
        pause_disrupts_ns: S,
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
        unconfirmed_ns: 0,
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
    let d = b.disrupted(at(110), at(110), Disruption::Step { by_ns: -2 * S });
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
        b.disrupted(at(130), at(130), Disruption::Pause { ns: 5 * S })
            .bound_ns,
        again.as_read_at(at(130)).unwrap().0 + 5 * S
    );
    assert_eq!(
        b.disrupted(at(131), at(131), Disruption::ClocksourceSwitch)
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
    let step = b.disrupted(at(101), at(101), Disruption::Step { by_ns: S });
    assert_eq!(
        (step.disruption_marker, step.status),
        (40, ClockStatus::Disrupted)
    );
    assert!(step.disruption_support);
    let migrated = b.disrupted(at(102), at(102), Disruption::Vmclock { marker: 41 });
    assert_eq!(migrated.disruption_marker, 41);
}

#[test]
fn a_device_found_late_gives_its_marker_and_leaves_the_status() {
    let mut b = Bound::new(policy(false), 0, at(0));
    b.measured(measured(100));
    b.disrupted(at(101), at(101), Disruption::Step { by_ns: S });
    let followed = b.follow_device(77, policy(true));
    assert_eq!(
        (
            followed.disruption_marker,
            followed.disruption_support,
            followed.status
        ),
        (77, true, ClockStatus::Disrupted)
    );
    // Our own disruptions now leave the device's marker.
    let step = b.disrupted(at(102), at(102), Disruption::Step { by_ns: S });
    assert_eq!(step.disruption_marker, 77);
}

#[test]
fn a_correction_slewed_in_widens_the_bound_at_once_until_the_discipline_replaces_it() {
    let mut b = Bound::new(policy(false), 0, at(0));
    assert_eq!(
        b.slewing_in(at(1), 2 * S).status,
        ClockStatus::Unknown,
        "nothing to widen yet"
    );
    // The discipline's update after it replaced the correction: its offset says where
    // the clock is, and the old correction may run on for one slew update (50 ms here).
    let synced = b.measured(measured(100));
    assert_eq!(synced.bound_ns, 185_000 + 50 * MS);
    assert_eq!(b.why().slewing_in_ns, 0);
    // By the next update it has long been taken up.
    assert_eq!(b.measured(measured(101)).bound_ns, 185_000);
    // A refused step taken as a slew: widened at once, as of now, not a disruption.
    let before = b.last();
    let widened = b.slewing_in(at(102), 2 * S);
    let grown = before.as_read_at(at(102)).unwrap().0;
    assert_eq!((widened.as_of, widened.bound_ns), (at(102), grown + 2 * S));
    assert_eq!(widened.status, ClockStatus::Synchronized);
    // Another agent's step replaces it before the discipline measured: the first may have
    // moved the clock already, so the new one is added in full.
    let again = b.slewing_in(at(103), S);
    assert_eq!(again.bound_ns, widened.as_read_at(at(103)).unwrap().0 + S);
    // A request the slew engine refused widens nothing.
    assert_eq!(b.slewing_in(at(104), 0), again);
    b.slewing_in(at(104), S);
    // An update computed before the slew began (it reached us late) still adds all of it.
    let late = b.measured(measured(100));
    assert_eq!(late.bound_ns, 185_000 + S);
    // One after it: what may still be in flight.
    assert_eq!(b.measured(measured(110)).bound_ns, 185_000 + 50 * MS);
    // Less when less is left.
    b.slewing_in(at(111), 20 * MS);
    assert_eq!(b.measured(measured(120)).bound_ns, 185_000 + 20 * MS);
}

#[test]
fn others_may_slew_at_the_kernel_s_limit_unless_the_discipline_is_exclusive() {
    let shared = Policy {
        exclusive_discipline: false,
        ..policy(false)
    };
    let mut b = Bound::new(shared, 0, at(0));
    let e = b.measured(measured(100));
    assert_eq!(e.max_drift_ppb, 4_502 + KERNEL_SLEW_PPB);
    // The guard takes the discipline: republished at once with the narrower drift,
    // grown to now at the old one.
    let narrowed = b.set_policy(at(102), policy(false));
    assert_eq!(narrowed.max_drift_ppb, 4_502 + 10_000);
    assert_eq!(narrowed.as_of, at(102));
    assert_eq!(narrowed.bound_ns, e.as_read_at(at(102)).unwrap().0);
    assert_eq!(b.why().drift_floor_ppb, 10_000);
    // The same policy again changes nothing.
    assert_eq!(b.set_policy(at(200), policy(false)), narrowed);
}

#[test]
fn records_that_break_the_clock_are_disruptions_and_refused_ones_are_not() {
    let own = 42;
    let record = |source, kind: &str, delta_ns: Option<i64>, verdict, pid| Record {
        source,
        kind: kind.into(),
        delta_ns,
        verdict,
        pid,
        result: "0".into(),
        ..Default::default()
    };
    use Source::*;
    let cases = [
        (
            record(Syscall, "step", Some(-3 * S), Verdict::Allowed, Some(7)),
            Some(Disruption::Step { by_ns: -3 * S }),
        ),
        (
            record(Syscall, "step", Some(0), Verdict::Observed, Some(7)),
            None,
        ),
        (
            record(Syscall, "step", None, Verdict::Denied, Some(7)),
            None,
        ),
        (
            record(Syscall, "step", Some(2 * S), Verdict::Slewed, Some(7)),
            None,
        ),
        (
            record(Kernel, "step", Some(-S), Verdict::Observed, None),
            Some(Disruption::Step { by_ns: -S }),
        ),
        (
            record(Fallback, "step", Some(S), Verdict::Observed, None),
            Some(Disruption::Step { by_ns: S }),
        ),
        (
            record(Timers, "stall", Some(5 * S), Verdict::Observed, None),
            Some(Disruption::Pause { ns: 5 * S }),
        ),
        (
            record(Timers, "suspend", Some(60 * S), Verdict::Observed, None),
            Some(Disruption::Resume),
        ),
        (
            record(
                Timers,
                "clocksource_jump",
                Some(-MS),
                Verdict::Observed,
                None,
            ),
            Some(Disruption::ClocksourceJump { by_ns: -MS }),
        ),
        (
            record(Timers, "clocksource_change", None, Verdict::Observed, None),
            Some(Disruption::ClocksourceSwitch),
        ),
        (
            record(Syscall, "tick", None, Verdict::Observed, Some(7)),
            Some(Disruption::RateChange),
        ),
        (
            record(Syscall, "tick", None, Verdict::Observed, Some(own)),
            None,
        ),
        (
            record(Syscall, "tick", None, Verdict::Denied, Some(7)),
            None,
        ),
        (
            record(Syscall, "frequency", None, Verdict::Observed, Some(7)),
            None,
        ),
        (record(Daemon, "start", None, Verdict::Observed, None), None),
    ];
    for (record, expected) in cases {
        assert_eq!(
            disruption_of(&record, own).map(|(what, _)| what),
            expected,
            "{record:?}"
        );
    }
    // When it happened, where the record says: a stall's end, a finding's time.
    let mut stall = record(Timers, "stall", Some(5 * S), Verdict::Observed, None);
    stall.detail = Some(serde_json::json!({"started_mono_ns": 10 * S, "ended_mono_ns": 15 * S}));
    assert_eq!(disruption_of(&stall, own).unwrap().1, Some(at(15)));
    let mut switch = record(Timers, "clocksource_change", None, Verdict::Observed, None);
    switch.detail = Some(serde_json::json!({"at_mono_ns": 12 * S}));
    assert_eq!(disruption_of(&switch, own).unwrap().1, Some(at(12)));
    let step = record(Syscall, "step", Some(S), Verdict::Allowed, Some(7));
    assert_eq!(disruption_of(&step, own).unwrap().1, None);
    let mut failed_tick = record(Syscall, "tick", None, Verdict::Observed, Some(7));
    failed_tick.result = "EINVAL".into();
    assert_eq!(disruption_of(&failed_tick, own), None);
}

#[test]
fn a_sample_is_placed_on_monotonic_no_later_than_it_was() {
    let now = Monotonic::from_ns(1_000 * S);
    let now_raw = Raw::from_ns(500 * S);
    assert_eq!(sample_on_monotonic(now_raw, now_raw, now), now);
    // 10 s ago on the raw clock: up to 10.05 % more on the slewed one.
    assert_eq!(
        sample_on_monotonic(now_raw.plus_ns(-10 * S), now_raw, now),
        now.plus_ns(-11_005 * MS)
    );
}

#[test]
fn why_names_the_terms_and_the_last_disruption() {
    let mut b = Bound::new(policy(false), 0, at(0));
    b.measured(measured(100));
    b.disrupted(at(105), at(105), Disruption::Pause { ns: 5 * S });
    let why = b.why();
    assert_eq!(
        why.measured,
        Some(Terms {
            offset_ns: 40_000,
            estimate_error_ns: 15_000,
            half_root_delay_ns: 100_000,
            root_dispersion_ns: 30_000,
            slewing_in_ns: 0,
            unconfirmed_ns: 0,
        })
    );
    assert_eq!(
        (why.drift_from_skew_ppb, why.drift_floor_ppb),
        (4_502, 10_000)
    );
    assert_eq!(why.last_disruption, Some(Disruption::Pause { ns: 5 * S }));
    assert!(why.disrupted && !why.sources_lost);
    let json = serde_json::to_value(&why).unwrap();
    assert_eq!(json["last_disruption"]["kind"], "pause");
    assert_eq!(json["last_disruption_at"], 105 * S);
}

#[test]
fn a_refresh_dates_the_bound_now_grown_and_keeps_status_and_void_after() {
    let mut b = Bound::new(policy(false), 0, at(0));
    assert_eq!(b.refresh(at(5)), b.last(), "Unknown stays as it is");
    let synced = b.measured(measured(100));
    let fresh = b.refresh(at(104));
    assert_eq!(fresh.as_of, at(104));
    assert_eq!(fresh.bound_ns, synced.as_read_at(at(104)).unwrap().0);
    assert_eq!(
        (fresh.status, fresh.void_after),
        (ClockStatus::Synchronized, synced.void_after)
    );
    // A reader 8 s after the update, 4 s after the refresh: still synchronized.
    assert_eq!(
        fresh.as_read_at(at(108)).unwrap().1,
        ClockStatus::Synchronized
    );
    assert_eq!(
        synced.as_read_at(at(108)).unwrap().1,
        ClockStatus::FreeRunning
    );
}

#[test]
fn a_stall_seen_twice_counts_once_and_one_measured_past_counts_not_at_all() {
    let mut b = Bound::new(policy(false), 0, at(0));
    let synced = b.measured(measured(100));
    // The first late timer at 106 s, of a 5 s pause; the stall record a second later.
    let first = b.disrupted(at(106), at(106), Disruption::Pause { ns: 5 * S });
    assert_eq!(
        first.bound_ns,
        synced.as_read_at(at(106)).unwrap().0 + 5 * S
    );
    assert_eq!(
        b.disrupted(at(107), at(106), Disruption::Pause { ns: 5 * S }),
        first
    );
    // Measured again with a sample from 106.5 s: synchronized.
    let again = b.measured(Measured {
        newest_sample: Monotonic::from_ns(106 * S + S / 2),
        ..measured(107)
    });
    assert_eq!(again.status, ClockStatus::Synchronized);
    // The stall record arriving after that (it ended at 106 s) changes nothing.
    assert_eq!(
        b.disrupted(at(108), at(106), Disruption::Pause { ns: 5 * S }),
        again
    );
    // A new pause, later: disrupted.
    let later = b.disrupted(at(120), at(120), Disruption::Pause { ns: S });
    assert_eq!(later.status, ClockStatus::Disrupted);
    // A second, longer pause before the discipline measured: both count.
    let longer = b.disrupted(at(125), at(125), Disruption::Pause { ns: 3 * S });
    assert_eq!(
        longer.bound_ns,
        later.as_read_at(at(125)).unwrap().0 + 3 * S
    );
}

#[test]
fn a_short_pause_widens_the_bound_by_its_length_and_a_long_one_disrupts_it() {
    let mut b = Bound::new(policy(false), 3, at(0));
    // Before the first measurement: a short pause changes nothing (there is no bound).
    assert_eq!(
        b.disrupted(at(1), at(1), Disruption::Pause { ns: 100 * MS })
            .status,
        ClockStatus::Unknown
    );
    let synced = b.measured(measured(100));
    let short = b.disrupted(at(105), at(105), Disruption::Pause { ns: 100 * MS });
    assert_eq!(
        (short.status, short.disruption_marker),
        (ClockStatus::Synchronized, 3),
        "no disruption"
    );
    assert_eq!(
        short.bound_ns,
        synced.as_read_at(at(105)).unwrap().0 + 100 * MS
    );
    // The same stall again (its record): nothing more.
    assert_eq!(
        b.disrupted(at(106), at(105), Disruption::Pause { ns: 100 * MS }),
        short
    );
    // A pause of a second or more disrupts.
    let long = b.disrupted(at(110), at(110), Disruption::Pause { ns: 2 * S });
    assert_eq!(
        (long.status, long.disruption_marker),
        (ClockStatus::Disrupted, 4)
    );
}

#[test]
fn a_stall_whose_record_says_it_was_longer_adds_only_the_excess() {
    let mut b = Bound::new(policy(false), 0, at(0));
    b.measured(measured(100));
    // The first late timer fired at 106 s, 4.9 s late; the stall record says the stall
    // lasted 5 s and ended at 106.05 s: the same stall, 0.1 s longer than counted.
    let first = b.disrupted(at(106), at(106), Disruption::Pause { ns: 4_900 * MS });
    let record = b.disrupted(
        at(107),
        Monotonic::from_ns(106 * S + 50 * MS),
        Disruption::Pause { ns: 5 * S },
    );
    assert_eq!(
        record.bound_ns,
        first.as_read_at(at(107)).unwrap().0 + 100 * MS
    );
    assert_eq!(
        (record.status, record.disruption_marker),
        (first.status, first.disruption_marker)
    );
}

/// Samples the discipline holds back as outliers may be a server that stepped: the bound
/// holds them until the discipline decides, and lets them go when it does.
#[test]
fn samples_held_back_as_outliers_widen_the_bound_until_decided() {
    let mut b = Bound::new(policy(true), 0, at(0));
    let steady = b.measured(measured(100)).bound_ns;
    let held = b
        .measured(Measured {
            unconfirmed_ns: 2 * S,
            ..measured(116)
        })
        .bound_ns;
    assert_eq!(held - steady, 2 * S);
    assert_eq!(b.why().measured.map(|t| t.unconfirmed_ns), Some(2 * S));
    // Decided (a spike: the next sample agreed; or a reset: the offset says it now).
    assert_eq!(b.measured(measured(132)).bound_ns, steady);
}
