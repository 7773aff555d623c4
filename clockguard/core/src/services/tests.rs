use super::*;

const S: i64 = 1_000_000_000;

/// The CLOCK_MONOTONIC instant `ns`.
fn at(ns: i64) -> Monotonic {
    Monotonic::from_ns(ns)
}

fn config(name: &str) -> ServiceConfig {
    let text = format!("[[service]]\nname = \"{name}\"\ncomm = [\"x\"]\nprobe = \"127.0.0.1:143\"\ntrack_file = \"/run/t\"\n");
    crate::config::Config::parse(&text, "t").unwrap().services[0].clone()
}

fn step(seq: u64, mono_ns: i64, delta_s: i64) -> Jump {
    Jump {
        seq,
        at: at(mono_ns),
        cause: "step".into(),
        delta_ns: Some(delta_s * S),
        pid: Some(300),
        comm: Some("date".into()),
        exe: Some("/usr/bin/date".into()),
        verdict: Verdict::Observed,
    }
}

fn death(mono_ns: i64, status: ExitStatus) -> Death {
    Death {
        service: 0,
        at: at(mono_ns),
        pid: 339,
        ppid: Some(273),
        comm: "imap".into(),
        exe: Some("/usr/lib/dovecot/imap".into()),
        status,
    }
}

fn check(ok: bool, mono_ns: i64) -> CheckOutcome {
    CheckOutcome {
        ok,
        detail: if ok { "connected" } else { "refused" }.into(),
        at: at(mono_ns),
    }
}

fn journaled(actions: &[Action]) -> Vec<&Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Journal { record, .. } => Some(&**record),
            _ => None,
        })
        .collect()
}

fn track(actions: &[Action]) -> Option<bool> {
    actions.iter().find_map(|a| match a {
        Action::TrackFile { fault, .. } => Some(*fault),
        _ => None,
    })
}

fn healthy_tracker() -> Tracker {
    let mut t = Tracker::new(&[config("dovecot")], &[false], at(0));
    assert_eq!(track(&t.on_check(0, check(true, S))), Some(false));
    assert_eq!(t.health(0), &Health::Healthy);
    t
}

#[test]
fn wait_status_decodes_exit_codes_and_signals() {
    assert_eq!(
        ExitStatus::from_wait_status(89 << 8),
        ExitStatus::Exited(89)
    );
    assert!(ExitStatus::from_wait_status(0).is_clean());
    assert_eq!(ExitStatus::from_wait_status(9).describe(), "SIGKILL");
    assert_eq!(
        ExitStatus::from_wait_status(11 | 0x80).describe(),
        "SIGSEGV (core dumped)"
    );
}

#[test]
fn a_death_after_a_step_is_charged_to_it_and_faults() {
    let mut t = healthy_tracker();
    assert!(t.on_jump(step(7, 10 * S, -10)).is_empty());
    let actions = t.on_death(death(13 * S, ExitStatus::Exited(89)));
    let records = journaled(&actions);
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(r.kind, "died_from_time_jump");
    assert_eq!(r.cause.as_deref(), Some("step"));
    assert_eq!(r.delta_ns, Some(-10 * S));
    assert_eq!((r.pid, r.comm.as_deref()), (Some(339), Some("imap")));
    assert_eq!(r.result, "exit 89");
    let jump = &r.detail.as_ref().unwrap()["jump"];
    assert_eq!(jump["seq"], 7);
    assert_eq!(jump["comm"], "date");
    assert_eq!(jump["seconds_before"], 3.0);
    assert_eq!(track(&actions), Some(true));
    assert!(matches!(t.health(0), Health::Fault { reason, .. } if reason == "died_from_time_jump"));
}

#[test]
fn a_death_before_its_jump_is_journaled_waits_for_it() {
    let mut t = healthy_tracker();
    // The worker died first; the stall that explains it is journaled 1 s later.
    assert!(t
        .on_death(death(
            20 * S,
            ExitStatus::Signaled {
                signal: 6,
                core_dumped: false
            }
        ))
        .is_empty());
    let mut stall = step(9, 21 * S, 5);
    stall.cause = "vm_paused".into();
    let actions = t.on_jump(stall);
    let records = journaled(&actions);
    assert_eq!(records[0].kind, "died_from_time_jump");
    assert_eq!(records[0].cause.as_deref(), Some("vm_paused"));
    assert_eq!(records[0].result, "SIGABRT");
    assert_eq!(track(&actions), Some(true));
}

#[test]
fn a_jump_below_jump_min_ms_explains_no_death() {
    // A hypervisor's 2 ms correction 1 s before a crash: the crash is a plain death.
    let mut t = healthy_tracker();
    let mut nudge = step(4, 10 * S, 0);
    nudge.cause = "unexplained".into();
    nudge.delta_ns = Some(-2_000_000);
    t.on_jump(nudge.clone());
    assert!(t.on_death(death(11 * S, ExitStatus::Exited(1))).is_empty());
    let actions = t.tick(at(11 * S + DEATH_GRACE_NS));
    assert_eq!(journaled(&actions)[0].kind, "died");
    assert_eq!(t.health(0), &Health::Healthy);

    // The default floor is 100 ms, either way; a jump of unknown size always counts.
    for (delta_ns, charged) in [
        (Some(100_000_000), true),
        (Some(-99_999_999), false),
        (None, true),
    ] {
        let mut t = healthy_tracker();
        let mut jump = nudge.clone();
        jump.delta_ns = delta_ns;
        t.on_jump(jump);
        let mut actions = t.on_death(death(11 * S, ExitStatus::Exited(1)));
        actions.extend(t.tick(at(11 * S + DEATH_GRACE_NS)));
        let kinds: Vec<&str> = journaled(&actions)
            .iter()
            .map(|r| r.kind.as_str())
            .collect();
        let expected = if charged {
            "died_from_time_jump"
        } else {
            "died"
        };
        assert_eq!(kinds, [expected], "{delta_ns:?}");
    }

    // A stream of small corrections does not push a real step out of the history.
    let mut t = healthy_tracker();
    t.on_jump(step(5, 10 * S, -10));
    for i in 0..200 {
        let mut small = nudge.clone();
        small.at = at(10 * S + i * 100_000_000);
        t.on_jump(small);
    }
    let records = journaled(&t.on_death(death(40 * S, ExitStatus::Exited(89)))).len();
    assert_eq!(
        records, 1,
        "charged to the step 30 s before, through 200 small jumps"
    );

    // jump_min_ms = 0: every jump counts.
    let mut every = config("dovecot");
    every.jump_min_ms = 0.0;
    let mut t = Tracker::new(&[every], &[false], at(0));
    t.on_check(0, check(true, S));
    t.on_jump(nudge);
    let records = journaled(&t.on_death(death(11 * S, ExitStatus::Exited(1)))).len();
    assert_eq!(records, 1, "charged at once to the 2 ms jump");
}

#[test]
fn a_death_without_a_jump_is_reported_but_does_not_fault() {
    let mut t = healthy_tracker();
    // A jump long before the window does not count.
    t.on_jump(step(1, 0, -10));
    assert!(t.on_death(death(100 * S, ExitStatus::Exited(1))).is_empty());
    assert!(t.tick(at(100 * S + DEATH_GRACE_NS - 1)).is_empty());
    let actions = t.tick(at(100 * S + DEATH_GRACE_NS));
    let records = journaled(&actions);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "died");
    assert_eq!(records[0].verdict, Verdict::Observed);
    assert_eq!(track(&actions), None);
    assert_eq!(t.health(0), &Health::Healthy);
    // Clean exits are workers finishing their job: not deaths at all.
    assert!(t.on_death(death(110 * S, ExitStatus::Exited(0))).is_empty());
    assert!(t.tick(at(120 * S)).is_empty());
}

#[test]
fn on_any_death_faults_without_a_jump() {
    let mut cfg = config("svc");
    cfg.on_any_death = true;
    let mut t = Tracker::new(&[cfg], &[false], at(0));
    t.on_check(0, check(true, S));
    // The fault at once, the record once no jump turned up within the grace.
    let actions = t.on_death(death(
        5 * S,
        ExitStatus::Signaled {
            signal: 9,
            core_dumped: false,
        },
    ));
    assert_eq!(track(&actions), Some(true));
    assert!(journaled(&actions).is_empty());
    let actions = t.tick(at(5 * S + DEATH_GRACE_NS));
    assert_eq!(journaled(&actions)[0].verdict, Verdict::Fault);
    assert_eq!(journaled(&actions)[0].kind, "died");
}

#[test]
fn the_fault_clears_after_hold_and_rise_good_checks_only() {
    let mut t = healthy_tracker();
    t.on_jump(step(7, 10 * S, -10));
    t.on_death(death(11 * S, ExitStatus::Exited(89)));
    // Hold: max(hold_s = 10 s, the 10 s backward jump) from the death at 11 s.
    for second in 12..21 {
        assert!(
            t.on_check(0, check(true, second * S)).is_empty(),
            "at {second} s"
        );
    }
    // From 21 s on, rise = 3 good checks in a row, and a failure starts over.
    assert!(t.on_check(0, check(true, 21 * S)).is_empty());
    assert!(t.on_check(0, check(true, 22 * S)).is_empty());
    assert!(t.on_check(0, check(false, 23 * S)).is_empty());
    assert!(t.on_check(0, check(true, 24 * S)).is_empty());
    assert!(t.on_check(0, check(true, 25 * S)).is_empty());
    let actions = t.on_check(0, check(true, 26 * S));
    assert_eq!(journaled(&actions)[0].kind, "recovered");
    assert_eq!(track(&actions), Some(false));
    assert_eq!(t.health(0), &Health::Healthy);
}

#[test]
fn a_long_backward_jump_holds_the_fault_as_long_as_the_jump() {
    let mut t = healthy_tracker();
    t.on_jump(step(7, 10 * S, -600));
    t.on_death(death(11 * S, ExitStatus::Exited(89)));
    for second in [20, 300, 600] {
        assert!(t.on_check(0, check(true, second * S)).is_empty());
    }
    assert!(matches!(t.health(0), Health::Fault { .. }));
}

#[test]
fn failed_checks_fault_after_fall_and_name_the_jump_in_the_window() {
    let mut t = healthy_tracker();
    t.on_jump(step(3, 2 * S, -10));
    assert!(t.on_check(0, check(false, 3 * S)).is_empty());
    let actions = t.on_check(0, check(false, 4 * S));
    let records = journaled(&actions);
    assert_eq!(records[0].kind, "probe_failed_after_time_jump");
    assert_eq!(records[0].result, "refused");
    assert_eq!(track(&actions), Some(true));
    // Without a jump: still a fault (the service is down), named as such.
    let mut t = healthy_tracker();
    t.on_check(0, check(false, 3 * S));
    let actions = t.on_check(0, check(false, 4 * S));
    assert_eq!(journaled(&actions)[0].kind, "probe_failed");
    assert_eq!(track(&actions), Some(true));
}

#[test]
fn a_time_jump_fault_restarts_once_after_the_hold() {
    let mut cfg = config("svc");
    cfg.restart = vec!["/bin/systemctl".into(), "restart".into(), "svc".into()];
    let mut t = Tracker::new(&[cfg], &[false], at(0));
    t.on_check(0, check(true, S));
    t.on_jump(step(7, 10 * S, 30));
    t.on_death(death(11 * S, ExitStatus::Exited(89)));
    assert!(
        t.tick(at(20 * S)).is_empty(),
        "restart before the hold ended"
    );
    let actions = t.tick(at(21 * S));
    assert!(actions.contains(&Action::Restart { service: 0 }));
    assert_eq!(journaled(&actions)[0].kind, "restart");
    assert!(!t.tick(at(22 * S)).contains(&Action::Restart { service: 0 }));
}

#[test]
fn a_carried_over_fault_needs_rise_good_checks() {
    let mut t = Tracker::new(&[config("svc")], &[true], at(0));
    assert!(t.on_check(0, check(true, S)).is_empty());
    assert!(t.on_check(0, check(true, 2 * S)).is_empty());
    let actions = t.on_check(0, check(true, 3 * S));
    assert_eq!(track(&actions), Some(false));
}

#[test]
fn a_log_line_after_a_jump_faults_like_a_death() {
    let mut t = healthy_tracker();
    let line = |mono_ns: i64| LogMatch {
        service: 0,
        at: at(mono_ns),
        pattern: "moved backwards".into(),
        line: "imap(339): Fatal: Time just moved backwards by 10.0 seconds".into(),
    };
    // Without a jump: journaled, no fault.
    let actions = t.on_log_match(line(5 * S));
    assert_eq!(journaled(&actions)[0].kind, "log_match");
    assert_eq!(track(&actions), None);
    t.on_jump(step(7, 10 * S, -10));
    let actions = t.on_log_match(line(11 * S));
    let r = journaled(&actions)[0];
    assert_eq!(r.kind, "log_match_after_time_jump");
    assert!(r.result.contains("Fatal: Time just moved backwards"));
    assert_eq!(r.detail.as_ref().unwrap()["pattern"], "moved backwards");
    assert_eq!(track(&actions), Some(true));
}

#[test]
fn status_shows_state_and_last_verdict() {
    let mut t = healthy_tracker();
    t.on_jump(step(7, 10 * S, -10));
    t.on_death(death(11 * S, ExitStatus::Exited(89)));
    let status = t.status(at(12 * S));
    let s = &status[0];
    assert_eq!(s.state, ServiceState::Fault);
    assert_eq!(s.reason.as_deref(), Some("died_from_time_jump"));
    assert_eq!(s.deaths_after_time_jump, 1);
    let event = s.last_event.as_ref().unwrap();
    assert!(
        event
            .summary
            .contains("imap (pid 339) exit 89 after a -10.000 s step by date (pid 300)"),
        "{}",
        event.summary
    );
    assert_eq!(event.age_s, 1.0);
}
