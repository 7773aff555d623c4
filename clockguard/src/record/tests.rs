use super::*;

fn repeat(syscall: u32, request: u32, ret: i32) -> (abi::RepeatKey, abi::RepeatCount) {
    let key = abi::RepeatKey {
        tgid: 4242,
        syscall,
        clock_id: 0,
        request,
        ret,
        epoch: 7,
    };
    let mut count = abi::RepeatCount::zeroed();
    count.seen = 99_008;
    count.summarised = 99_000;
    count.first_mono_ns = 1_000_000_000;
    count.last_mono_ns = 3_000_000_000;
    // TAI − MONOTONIC: 2026-12-05T00:00:37Z at monotonic 0 (TAI = UTC + 37 s).
    count.first_offset_ns = 1_796_428_837_000_000_000;
    count.last_offset_ns = count.first_offset_ns;
    count.uid = 1000;
    count.flags = abi::FLAG_HAS_PROCINFO;
    count.ppid = 1;
    count.comm[..3].copy_from_slice(b"foo");
    count.exe[..12].copy_from_slice(b"/usr/bin/foo");
    (key, count)
}

#[test]
fn a_count_becomes_one_summary_record_with_the_callers_identity() {
    let (key, count) = repeat(abi::SYSCALL_CLOCK_SETTIME, 0, -22);
    let r = summary(&key, &count, 37).unwrap();
    assert_eq!(r.kind, "summary");
    assert_eq!(r.source, Source::Syscall);
    assert_eq!(r.syscall.as_deref(), Some("clock_settime"));
    assert_eq!(r.clock.as_deref(), Some("CLOCK_REALTIME"));
    assert_eq!(r.result, "EINVAL");
    assert_eq!(r.verdict, Verdict::Observed);
    assert_eq!(r.pid, Some(4242));
    assert_eq!(r.tid, None);
    assert_eq!(r.uid, Some(1000));
    assert_eq!(r.comm.as_deref(), Some("foo"));
    assert_eq!(r.exe.as_deref(), Some("/usr/bin/foo"));
    assert_eq!(r.delta_ns, None);
    assert_eq!(r.requested_delta_ns, None);
    assert!(!r.clock_was_set);
    assert_eq!(r.requested, json!({}));
    assert_eq!(r.time, "2026-12-05T00:00:01.000000000Z");
    let d = r.detail.unwrap();
    assert_eq!(d["kind"], "step");
    assert_eq!(d["count"], 99_000);
    assert_eq!(d["in_full"], 8);
    assert_eq!(d["first"], "2026-12-05T00:00:01.000000000Z");
    assert_eq!(d["last"], "2026-12-05T00:00:03.000000000Z");
    assert_eq!(d["span_s"], 2.0);
}

#[test]
fn the_last_call_is_dated_on_the_clock_as_it_was_then() {
    // A step of +10 s between the first and the last counted call (another process's).
    let (key, mut count) = repeat(abi::SYSCALL_CLOCK_SETTIME, 0, -22);
    count.last_offset_ns = count.first_offset_ns + 10_000_000_000;
    let d = summary(&key, &count, 37).unwrap().detail.unwrap();
    assert_eq!(d["first"], "2026-12-05T00:00:01.000000000Z");
    assert_eq!(d["last"], "2026-12-05T00:00:13.000000000Z");
}

#[test]
fn a_summary_names_what_the_calls_asked_to_change() {
    let (key, count) = repeat(abi::SYSCALL_CLOCK_ADJTIME, ADJ_FREQUENCY, -22);
    let r = summary(&key, &count, 37).unwrap();
    assert_eq!(r.detail.unwrap()["kind"], "frequency");
    assert_eq!(r.requested["modes"], json!(["ADJ_FREQUENCY"]));
    let (key, count) = repeat(abi::SYSCALL_SETTIMEOFDAY, abi::FLAG_HAS_TZ, 0);
    let r = summary(&key, &count, 37).unwrap();
    assert_eq!(r.detail.unwrap()["kind"], "tz");
    assert_eq!(r.result, "0");
    let (key, count) = repeat(abi::SYSCALL_SETTIMEOFDAY, abi::FLAG_HAS_TIME, -22);
    assert_eq!(
        summary(&key, &count, 37).unwrap().detail.unwrap()["kind"],
        "step"
    );
}

#[test]
fn a_count_with_nothing_summarised_is_no_record() {
    let (key, mut count) = repeat(abi::SYSCALL_CLOCK_SETTIME, 0, -22);
    count.seen = 3;
    count.summarised = 0;
    assert!(summary(&key, &count, 37).is_none());
}

fn settime_event(sec: i64, nsec: i64, ret: i64) -> ClockEvent {
    let mut e = ClockEvent::zeroed();
    e.kind = abi::EVENT_SYSCALL;
    e.syscall = abi::SYSCALL_CLOCK_SETTIME;
    e.tgid = 100;
    e.tid = 101;
    e.flags = abi::FLAG_HAS_TIME | abi::FLAG_HAS_OFFSET_BEFORE;
    e.req_sec = sec;
    e.req_nsec = nsec;
    e.ret = ret;
    e.comm[..4].copy_from_slice(b"date");
    e
}

#[test]
fn invalid_settime_decodes_with_einval_and_no_jump() {
    let mut e = settime_event(0, 2_000_000_000, -i64::from(libc::EINVAL));
    e.offset_before_ns = 5_000_000_000;
    e.offset_after_ns = 5_000_000_000;
    let r = decode(&e, 37, 0);
    assert_eq!(r.result, "EINVAL");
    assert_eq!(r.kind, "step");
    assert_eq!(r.syscall.as_deref(), Some("clock_settime"));
    assert_eq!(r.clock.as_deref(), Some("CLOCK_REALTIME"));
    assert_eq!(r.delta_ns, Some(0));
    assert_eq!(r.requested["nsec"], json!(2_000_000_000i64));
    assert_eq!(r.requested["time"], Value::Null);
    assert_eq!(r.comm.as_deref(), Some("date"));
    assert!(!r.clock_was_set);
}

#[test]
fn step_measures_the_jump_and_dates_it_before_the_change() {
    let mut e = settime_event(1_700_000_000, 0, 0);
    e.flags |= abi::FLAG_CLOCK_WAS_SET;
    // TAI − MONOTONIC before: 1.6e18 + 37 s; the step moves it back by 11 s.
    e.offset_before_ns = 1_600_000_037_000_000_000;
    e.offset_after_ns = e.offset_before_ns - 11_000_000_000;
    e.enter_mono_ns = 1_000;
    let r = decode(&e, 37, 0);
    assert_eq!(r.delta_ns, Some(-11_000_000_000));
    assert!(r.clock_was_set);
    assert_eq!(r.time, "2020-09-13T12:26:40.000001000Z");
    assert_eq!(r.requested["time"], json!("2023-11-14T22:13:20.000000000Z"));
}

#[test]
fn a_step_whose_exit_was_not_seen_keeps_its_record_with_an_unknown_result() {
    let mut e = settime_event(1_700_000_000, 0, 0);
    e.flags |= abi::FLAG_CLOCK_WAS_SET | abi::FLAG_NO_EXIT;
    e.offset_before_ns = 1_600_000_037_000_000_000;
    // Measured up to when the thread's exit noticed it: the step's 1 s is in it.
    e.offset_after_ns = e.offset_before_ns + 1_000_000_000;
    e.enter_mono_ns = 1_000;
    e.exit_mono_ns = 9_000;
    let r = decode(&e, 37, 0);
    assert_eq!(r.kind, "step");
    assert_eq!(r.result, "unknown");
    assert_eq!(r.detail, Some(json!({"exit_seen": false})));
    assert_eq!(r.delta_ns, Some(1_000_000_000));
    assert!(r.clock_was_set);
    assert_eq!(r.mono_ns, Some(9_000));
    // A call whose exit was seen says nothing of it.
    e.flags &= !abi::FLAG_NO_EXIT;
    assert_eq!(decode(&e, 37, 0).detail, None);
}

#[test]
fn a_settime_whose_enter_was_not_seen_is_a_step_of_unknown_size_on_an_unknown_clock() {
    let mut e = ClockEvent::zeroed();
    e.kind = abi::EVENT_SYSCALL;
    e.syscall = abi::SYSCALL_CLOCK_SETTIME;
    e.flags = abi::FLAG_NO_ENTER;
    e.tgid = 100;
    e.offset_after_ns = 1_600_000_037_000_000_000;
    e.enter_mono_ns = 5_000;
    e.exit_mono_ns = 5_000;
    let r = decode(&e, 37, 0);
    assert_eq!(r.kind, "step");
    assert_eq!(r.result, "0");
    assert_eq!(r.clock, None);
    assert_eq!(r.delta_ns, None);
    assert_eq!(r.requested, json!({}));
    assert_eq!(r.detail, Some(json!({"enter_seen": false})));
    assert_eq!(r.pid, Some(100));
}

#[test]
fn timex_kinds_rank_step_over_slew_over_frequency() {
    assert_eq!(timex_kind(0), "read");
    assert_eq!(timex_kind(ADJ_SETOFFSET | ADJ_NANO), "step");
    assert_eq!(timex_kind(ADJ_OFFSET | ADJ_FREQUENCY | ADJ_STATUS), "slew");
    assert_eq!(timex_kind(ADJ_TICK | ADJ_FREQUENCY), "tick");
    assert_eq!(timex_kind(ADJ_FREQUENCY), "frequency");
    assert_eq!(timex_kind(ADJ_STATUS), "status");
    assert_eq!(timex_kind(ADJ_MAXERROR | ADJ_ESTERROR), "params");
    assert_eq!(timex_kind(0x8001), "slew");
    assert_eq!(timex_kind(0xa001), "read");
}

#[test]
fn setoffset_is_read_in_ns_with_adj_nano_and_us_without() {
    let mut e = ClockEvent::zeroed();
    e.kind = abi::EVENT_SYSCALL;
    e.syscall = abi::SYSCALL_CLOCK_ADJTIME;
    e.flags = abi::FLAG_HAS_TIMEX;
    e.timex.modes = ADJ_SETOFFSET | ADJ_NANO;
    e.timex.time_sec = -2;
    e.timex.time_usec = 500_000_000;
    let req = requested_json(&e);
    assert_eq!(req["setoffset_ns"], json!(-1_500_000_000i64));
    assert_eq!(req["modes"], json!(["ADJ_SETOFFSET", "ADJ_NANO"]));
    e.timex.modes = ADJ_SETOFFSET;
    e.timex.time_usec = 250_000;
    assert_eq!(requested_json(&e)["setoffset_ns"], json!(-1_750_000_000i64));
}

#[test]
fn frequency_is_reported_in_ppm() {
    let mut e = ClockEvent::zeroed();
    e.syscall = abi::SYSCALL_ADJTIMEX;
    e.flags = abi::FLAG_HAS_TIMEX;
    e.timex.modes = ADJ_FREQUENCY | ADJ_STATUS;
    e.timex.freq = -90 * 65536 - 32768;
    e.timex.status = 0x0001 | 0x2000;
    let req = requested_json(&e);
    assert_eq!(req["freq_ppm"], json!(-90.5));
    assert_eq!(req["status"], json!(["STA_PLL", "STA_NANO"]));
}

#[test]
fn settimeofday_tz_only_is_a_tz_change() {
    let mut e = ClockEvent::zeroed();
    e.kind = abi::EVENT_SYSCALL;
    e.syscall = abi::SYSCALL_SETTIMEOFDAY;
    e.flags = abi::FLAG_HAS_TZ;
    e.tz_minuteswest = -60;
    let r = decode(&e, 0, 0);
    assert_eq!(r.kind, "tz");
    assert_eq!(r.requested["tz"]["minuteswest"], json!(-60));
    assert_eq!(r.delta_ns, None, "no offset_before: not measurable");
}

#[test]
fn leap_second_is_measured_through_the_tai_change() {
    let mut e = ClockEvent::zeroed();
    e.kind = abi::EVENT_CLOCK_WAS_SET;
    e.flags = abi::FLAG_HAS_OFFSET_BEFORE;
    // A leap second inserted: TAI − MONOTONIC unchanged, the TAI offset grows by 1 s.
    e.offset_before_ns = 42;
    e.offset_after_ns = 42;
    let r = decode(&e, 38, 1);
    assert_eq!(r.source, Source::Kernel);
    assert_eq!(r.delta_ns, Some(-1_000_000_000));
    assert!(r.clock_was_set);
}

#[test]
fn read_jitter_is_not_a_jump() {
    let mut e = settime_event(0, 2_000_000_000, -i64::from(libc::EINVAL));
    e.offset_before_ns = 1_000_000;
    e.offset_after_ns = 1_000_000 - 37;
    assert_eq!(measured_delta_ns(&e, 0), Some(0));
    e.offset_after_ns = 1_000_000 + 4_990_000_000;
    assert_eq!(measured_delta_ns(&e, 0), Some(4_990_000_000));
}

#[test]
fn clock_was_set_bases_name_their_clocks() {
    // CLOCK_SET_WALL and CLOCK_SET_BOOT of kernel/time/hrtimer.c.
    assert_eq!(clocks_of_bases(0xaa), vec!["CLOCK_REALTIME", "CLOCK_TAI"]);
    assert_eq!(clocks_of_bases(0x44), vec!["CLOCK_BOOTTIME"]);
    assert!(clocks_of_bases(0).is_empty());
}

#[test]
fn names_of_clocks_and_errnos() {
    assert_eq!(clock_name(11), "CLOCK_TAI");
    // A PTP clock opened as fd 3: clockid = (~3 << 3) | 3.
    assert_eq!(clock_name((!3 << 3) | 3), "FD(3)");
    assert_eq!(result_name(-i64::from(libc::EPERM)), "EPERM");
    assert_eq!(result_name(0), "0");
    assert_eq!(result_name(-4095), "E4095");
}

#[test]
fn requested_delta_is_the_request_minus_the_clock_at_the_call() {
    let mut e = settime_event(1_600_000_002, 500_000_000, 0);
    e.offset_before_ns = 1_600_000_037_000_000_000;
    e.enter_mono_ns = 1_000;
    // Clock at the call: 1.6e18 ns + 1 µs; asked for 1.6e18 + 2.5 s.
    let r = decode(&e, 37, 0);
    assert_eq!(r.requested_delta_ns, Some(2_500_000_000 - 1_000));

    let mut t = ClockEvent::zeroed();
    t.kind = abi::EVENT_SYSCALL;
    t.syscall = abi::SYSCALL_ADJTIMEX;
    t.flags = abi::FLAG_HAS_TIMEX;
    t.timex.modes = ADJ_SETOFFSET;
    t.timex.time_sec = -3;
    t.timex.time_usec = 250_000;
    assert_eq!(requested_delta_ns(&t, 0), Some(-2_750_000_000));
    t.timex.modes = ADJ_FREQUENCY;
    assert_eq!(
        requested_delta_ns(&t, 0),
        None,
        "a frequency change is no step"
    );
    e.flags |= abi::FLAG_ARG_FAULT;
    assert_eq!(requested_delta_ns(&e, 0), None);
}

#[test]
fn guard_decision_becomes_the_verdict() {
    let mut e = settime_event(1_700_000_000, 0, -i64::from(libc::EPERM));
    assert_eq!(decode(&e, 37, 0).verdict, Verdict::Observed);
    assert!(decode(&e, 37, 0).guard.is_none());
    e.guard.action = abi::GUARD_DENIED;
    e.guard.class = abi::CLASS_SLEW_INSTEAD;
    e.guard.guarded = abi::GUARDED_STEP;
    e.flags |= abi::FLAG_HAS_EXE_ID;
    e.guard.exe_dev = (8 << 20) | 1;
    e.guard.exe_ino = 4242;
    let r = decode(&e, 37, 0);
    assert_eq!(r.verdict, Verdict::Denied);
    assert_eq!(r.result, "EPERM");
    assert_eq!(
        r.guard,
        Some(json!({"class": "slew_instead", "judged": "step", "exe_dev": "8:1", "exe_ino": 4242}))
    );
    e.guard.action = abi::GUARD_WOULD_DENY;
    assert_eq!(decode(&e, 37, 0).verdict, Verdict::WouldDeny);
    e.guard.action = abi::GUARD_ALLOWED;
    e.guard.class = abi::CLASS_SELF;
    assert_eq!(decode(&e, 37, 0).verdict, Verdict::Allowed);
}
