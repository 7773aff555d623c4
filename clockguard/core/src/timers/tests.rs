use super::*;

const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;

/// The CLOCK_MONOTONIC instant `ns`.
fn at(ns: i64) -> Monotonic {
    Monotonic::from_ns(ns)
}

fn late(cpu: u32, mono_ns: i64, lateness_ns: i64, function: &str) -> LateTimer {
    LateTimer {
        cpu: Some(cpu),
        at: at(mono_ns),
        lateness_ns,
        function: Some(function.into()),
    }
}

#[test]
fn a_paused_guest_is_one_stall_of_the_largest_lateness() {
    let mut d = StallDetector::new(100 * MS, Some("KVM".into()));
    d.steal_sample(at(99 * S), 7 * S);
    // Resumed at 105 s after a 5 s pause: the tick and watchdog timers of both CPUs.
    d.late(late(0, 105 * S, 4_998 * MS, "tick_sched_timer"));
    d.late(late(1, 105 * S + MS, 3_100 * MS, "watchdog_timer_fn"));
    d.late(late(0, 105 * S + 2 * MS, 2 * MS, "tick_sched_timer")); // under threshold
    d.steal_sample(at(106 * S), 7 * S);
    assert_eq!(d.tick(at(105 * S + 100 * MS), 2), None, "still open");
    assert_eq!(d.tick(at(106 * S), 2), None, "still open after 1 s");
    let stall = d
        .tick(at(107 * S + 2 * MS), 2)
        .expect("closed after 2 s quiet");
    assert_eq!(stall.duration_ns, 4_998 * MS);
    assert_eq!(stall.cause, StallCause::VmPaused);
    assert_eq!(stall.cpus, vec![0, 1]);
    assert_eq!(stall.late_timers, 2);
    assert_eq!(stall.steal_ns, Some(0));
    assert_eq!(stall.timers, vec!["tick_sched_timer", "watchdog_timer_fn"]);
    assert_eq!(stall.started, Monotonic::from_ns(105 * S - 4_998 * MS));
    assert_eq!(d.tick(at(109 * S), 2), None, "reported once");
}

#[test]
fn a_vcpu_that_resumes_late_joins_the_same_pause() {
    // A 5 s pause; the second vCPU ran its late timers 1.5 s after the first (TCG).
    let mut d = StallDetector::new(100 * MS, Some("QEMU (TCG)".into()));
    d.late(late(1, 105 * S, 5_000 * MS, "watchdog_timer_fn"));
    assert_eq!(d.tick(at(106 * S), 2), None, "still open after 1 s");
    d.late(late(0, 106 * S + 500 * MS, 5_000 * MS, "tick_sched_timer"));
    assert_eq!(d.tick(at(108 * S), 2), None, "quiet for 1.5 s only");
    let stall = d.tick(at(108 * S + 600 * MS), 2).expect("closed");
    assert_eq!(stall.cause, StallCause::VmPaused);
    assert_eq!(stall.cpus, vec![0, 1]);
}

#[test]
fn a_timer_armed_in_the_past_is_no_stall() {
    // systemd's sd-event arms its timerfd at 1 ns to be woken at once: 121 s after boot
    // that expiry is "late" by 121 s. A timer due 1 s after boot, run 125 s late, counts.
    let mut w = TimerWatch::new(
        &crate::config::TimersConfig::default(),
        Some("QEMU (TCG)".into()),
    );
    let clock = |mono_s: f64| sample(mono_s, mono_s, mono_s, 0.0, "tsc");
    assert!(w
        .sample(clock(120.0), Some(0), 1, 500.0, true, 0)
        .is_empty());
    w.late(late(0, 121 * S, 121 * S - 1, "timerfd_tmrproc"));
    let later = w.sample(clock(125.0), Some(0), 1, 500.0, true, 0);
    assert!(later.is_empty(), "{later:?}");
    assert_eq!((w.stats.armed_in_the_past, w.stats.stalls), (1, 0));

    w.late(late(0, 126 * S, 125 * S, "hrtimer_wakeup"));
    let stalls = w.sample(clock(130.0), Some(0), 1, 500.0, true, 0);
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    assert_eq!(stalls[0].delta_ns, Some(125 * S));
    assert_eq!((w.stats.armed_in_the_past, w.stats.stalls), (1, 1));
}

#[test]
fn the_cause_follows_steal_cpus_and_hypervisor() {
    let run = |hypervisor: Option<&str>, cpus: &[u32], steal_s: i64| {
        let mut d = StallDetector::new(100 * MS, hypervisor.map(Into::into));
        d.steal_sample(at(7 * S), 0);
        for &cpu in cpus {
            d.late(late(cpu, 10 * S, 2 * S, "tick_sched_timer"));
        }
        if cpus.is_empty() {
            // The sampler's own late wakeup (no hook): no CPU known.
            d.late(LateTimer {
                cpu: None,
                ..late(0, 10 * S, 2 * S, "sampler")
            });
        }
        d.steal_sample(at(11 * S), steal_s * S);
        d.tick(at(12 * S), 4).unwrap().cause
    };
    assert_eq!(run(Some("KVM"), &[0, 1, 2, 3], 0), StallCause::VmPaused);
    assert_eq!(
        run(Some("KVM"), &[0, 1, 2, 3], 1),
        StallCause::HypervisorSteal
    );
    assert_eq!(run(None, &[0, 1, 2, 3], 0), StallCause::MachineStall);
    assert_eq!(run(Some("KVM"), &[2], 0), StallCause::CpuStall);
    assert_eq!(run(None, &[], 0), StallCause::Unknown);
}

#[test]
fn steal_is_measured_from_before_the_stall_began() {
    // A sample taken right after the resume already holds the stall's steal: the
    // baseline must be the one before the stall started.
    let mut d = StallDetector::new(100 * MS, Some("KVM".into()));
    d.steal_sample(at(S), 10 * S);
    d.steal_sample(at(5 * S + MS), 14 * S); // after the resume, before the events arrive
    d.late(late(0, 5 * S, 4 * S, "tick_sched_timer"));
    let stall = d.tick(at(7 * S), 1).unwrap();
    assert_eq!(stall.steal_ns, Some(4 * S));
    assert_eq!(stall.cause, StallCause::HypervisorSteal);
}

#[test]
fn without_steal_history_the_steal_is_unknown() {
    let mut d = StallDetector::new(100 * MS, None);
    d.late(late(0, 5 * S, 300 * MS, "x"));
    let stall = d.tick(at(7 * S), 1).unwrap();
    assert_eq!(stall.steal_ns, None);
    assert_eq!(stall.cause, StallCause::MachineStall);
}

fn sample(mono_s: f64, raw_s: f64, boot_s: f64, rate_ppm: f64, cs: &str) -> ClockSample {
    ClockSample {
        mono: Monotonic::from_ns((mono_s * 1e9) as i64),
        raw: Raw::from_ns((raw_s * 1e9) as i64),
        read_spread_ns: 0,
        boot_ns: (boot_s * 1e9) as i64,
        kernel_rate_ppm: Some(rate_ppm),
        clocksource: Some(cs.into()),
    }
}

#[test]
fn a_disciplined_clock_is_quiet() {
    let mut w = ClockWatch::default();
    assert!(w
        .sample(sample(10.0, 10.0, 10.0, 100.0, "tsc"), 0.0)
        .is_empty());
    // 1 s of raw at +100 ppm: MONOTONIC gains 100 µs; plus 300 µs of PLL slew.
    let found = w.sample(sample(11.0004, 11.0, 11.0004, 100.0, "tsc"), 0.0);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn suspend_switch_and_jump_are_found() {
    let mut w = ClockWatch::default();
    w.sample(sample(10.0, 10.0, 10.0, 0.0, "kvm-clock"), 0.0);
    let found = w.sample(sample(11.0, 11.0, 71.0, 0.0, "tsc"), 0.0);
    assert_eq!(
        found,
        vec![
            ClockFinding::Suspend {
                at: at(11 * S),
                duration_ns: 60 * S
            },
            ClockFinding::ClocksourceChange {
                at: at(11 * S),
                from: "kvm-clock".into(),
                to: "tsc".into()
            },
        ]
    );
    // MONOTONIC jumps 15 ms against RAW in one second (the ocfs2 cluster's kvmclock).
    let found = w.sample(sample(12.015, 12.0, 72.015, 0.0, "tsc"), 0.0);
    let [ClockFinding::ClocksourceJump {
        divergence_ns,
        allowance_ns,
        ..
    }] = found.as_slice()
    else {
        panic!("{found:?}")
    };
    assert!((divergence_ns - 15 * MS).abs() < 1000, "{divergence_ns}");
    assert_eq!(*allowance_ns, 600_000);
}

#[test]
fn a_slow_clock_read_is_no_jump() {
    let mut w = ClockWatch::default();
    w.sample(sample(10.0, 10.0, 10.0, 0.0, "hpet"), 0.0);
    // MONOTONIC 1.6 ms ahead of the RAW midpoint, but the two RAW reads around it were
    // 3.2 ms apart (an emulated HPET read that trapped, the sampler descheduled).
    let slow = ClockSample {
        read_spread_ns: 3_200_000,
        ..sample(11.0016, 11.0, 11.0016, 0.0, "hpet")
    };
    let found = w.sample(slow, 0.0);
    assert!(found.is_empty(), "{found:?}");
    assert!(w
        .sample(sample(12.0016, 12.0, 12.0016, 0.0, "hpet"), 0.0)
        .is_empty());
    // The same divergence between reads a few µs apart is a jump.
    let found = w.sample(sample(13.0032, 13.0, 13.0032, 0.0, "hpet"), 0.0);
    assert!(
        matches!(found.as_slice(), [ClockFinding::ClocksourceJump { .. }]),
        "{found:?}"
    );
}

#[test]
fn a_slew_in_progress_widens_the_allowance() {
    let mut w = ClockWatch::default();
    w.sample(sample(10.0, 10.0, 10.0, 0.0, "tsc"), 0.0);
    // 50 ms gained in 1 s while clockguard slews at up to 83 333 ppm: explained.
    let found = w.sample(sample(11.05, 11.0, 11.05, 0.0, "tsc"), 83_333.0);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn proc_stat_and_cpu_lists_parse() {
    let stat = "cpu  4705 150 1120 1664397 2013 0 163 4242 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
    assert_eq!(parse_steal_ns(stat, 100), Some(42_420_000_000));
    assert_eq!(parse_steal_ns("cpu  1 2 3\n", 100), None);
    assert_eq!(parse_cpu_list("0-3,5,7-8\n"), Some(7));
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("x"), None);
}

/// A finding is a record's `detail` as it was before its instants were typed.
#[test]
fn findings_keep_their_json_keys() {
    let suspend = ClockFinding::Suspend {
        at: at(11 * S),
        duration_ns: 60 * S,
    };
    assert_eq!(
        serde_json::to_value(&suspend).unwrap(),
        serde_json::json!({"kind": "suspend", "at_mono_ns": 11 * S, "duration_ns": 60 * S})
    );
    let change = ClockFinding::ClocksourceChange {
        at: at(12 * S),
        from: "kvm-clock".into(),
        to: "tsc".into(),
    };
    assert_eq!(
        serde_json::to_value(&change).unwrap(),
        serde_json::json!({"kind": "clocksource_change", "at_mono_ns": 12 * S, "from": "kvm-clock", "to": "tsc"})
    );
}
