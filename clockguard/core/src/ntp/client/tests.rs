use super::*;
use crate::{
    ntp::packet::{Mode, NtpShort, Packet},
    time::Realtime,
};

const S: i64 = 1_000_000_000;
/// CLOCK_REALTIME − CLOCK_MONOTONIC_RAW in these tests, ns.
const EPOCH_NS: i64 = 1_768_478_400 * S;

fn at(raw_ns: i64, clock_error_ns: i64) -> Reading {
    Reading {
        raw: Raw::from_ns(raw_ns),
        realtime: Realtime::from_ns(raw_ns + EPOCH_NS + clock_error_ns),
    }
}

fn config() -> SourceConfig {
    SourceConfig {
        minpoll: 4,
        maxpoll: 10,
        iburst: false,
    }
}

fn cookies() -> impl FnMut() -> NtpTimestamp {
    let mut next = 0x1234_5678_0000_0000_u64;
    move || {
        next += 1;
        NtpTimestamp(next)
    }
}

/// A stratum-1 server's reply to `request`, whose clock is `server_ahead_ns` ahead of
/// the local timescale, with `delay_ns` each way; sent at raw `sent_ns`.
fn reply(request: &[u8; 48], sent_ns: i64, delay_ns: i64, server_ahead_ns: i64) -> Vec<u8> {
    let request = Packet::parse(request).expect("a request");
    let server_ns = |raw_ns: i64| raw_ns + EPOCH_NS + server_ahead_ns;
    Packet {
        leap: Leap::None,
        version: 4,
        mode: Mode::Server,
        stratum: 1,
        poll: request.poll,
        precision: -20,
        root_delay: NtpShort(0),
        root_dispersion: NtpShort(0),
        reference_id: *b"GPS\0",
        reference_ts: NtpTimestamp::from_unix_ns(server_ns(sent_ns) - 8 * S),
        origin_ts: request.transmit_ts,
        receive_ts: NtpTimestamp::from_unix_ns(server_ns(sent_ns + delay_ns)),
        transmit_ts: NtpTimestamp::from_unix_ns(server_ns(sent_ns + delay_ns)),
    }
    .to_bytes()
    .to_vec()
}

/// A disciplining core with one source, added at raw 1 s.
fn disciplining_one_source() -> ClientCore {
    let mut core = ClientCore::new(EPOCH_NS, config(), 0.0, true, None);
    core.add_source(
        "s".into(),
        SocketAddr::from(([192, 0, 2, 1], 123)),
        Raw::from_ns(S),
    );
    core
}

fn sends(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { source, .. } => Some(*source),
            _ => None,
        })
        .collect()
}

#[test]
fn sources_are_polled_apart_and_a_retired_one_never() {
    let mut core = ClientCore::new(EPOCH_NS, config(), 0.0, true, None);
    let start = Raw::from_ns(1_000 * S);
    let addr = |i: u8| SocketAddr::from(([192, 0, 2, i], 123));
    for i in 0..3 {
        core.add_source(format!("s{i}"), addr(i), start);
    }
    assert_eq!(core.next_wakeup(), Some(start));
    let first = core.on_timer(at(1_000 * S, 0), Some(0), cookies());
    assert_eq!(sends(&first), [0]);
    assert_eq!(core.next_wakeup(), Some(start.plus_ns(START_SPREAD_NS)));
    core.retire(2);
    let second = core.on_timer(at(1_000 * S + START_SPREAD_NS, 0), Some(0), cookies());
    assert_eq!(sends(&second), [1]);
    // Source 0 next, one minpoll (16 s) after its first request.
    assert_eq!(core.next_wakeup(), Some(start.plus_ns(16 * S)));
    assert_eq!(core.next_poll(2), None);
    let much_later = core.on_timer(at(2_000 * S, 0), Some(0), cookies());
    assert_eq!(sends(&much_later), [0, 1]);
}

/// Four samples from a server 20 ms ahead (the first gives no estimate yet): the core
/// serves unsynchronised until then, then asks to slew by 20 ms and follows the
/// correction to its convergence.
#[test]
fn a_clock_20_ms_behind_is_slewed_and_its_convergence_reported() {
    let mut core = disciplining_one_source();
    let ahead_ns = 20_000_000;
    let mut slews = Vec::new();
    let mut raw_ns = S;
    let mut replies = 0;
    while replies < 8 {
        // Polls and, once a correction runs, convergence checks (the clock is not
        // moved here, so none converges yet).
        let actions = core.on_timer(at(raw_ns, 0), Some(0), cookies());
        if let Some(Action::Send { request, .. }) = actions.first() {
            let bytes = reply(request, raw_ns, 1_000_000, ahead_ns);
            let back = raw_ns + 2_000_000;
            let actions = core
                .on_datagram(0, &bytes, Raw::from_ns(back), at(back, 0), Some(0))
                .expect("a genuine reply");
            replies += 1;
            assert!(matches!(actions[0], Action::Serve(_)), "{actions:?}");
            let mut actions = std::collections::VecDeque::from(actions);
            while let Some(action) = actions.pop_front() {
                match action {
                    Action::SetFrequency { freq } => {
                        actions.extend(core.frequency_set(freq, true, 0));
                    }
                    Action::Slew { by_ns, .. } => {
                        slews.push(by_ns);
                        core.correction_started();
                    }
                    _ => {}
                }
            }
        }
        raw_ns = core.next_wakeup().expect("polls are due").ns();
    }
    let first = *slews.first().expect("a correction was asked for");
    assert!((first - ahead_ns).abs() < 100_000, "slew by {first} ns");
    let tracking = core.tracking(at(raw_ns, 0));
    assert!(tracking.synchronized, "{tracking:?}");
    assert_eq!(tracking.converging_from_offset_s, Some(-first as f64 / 1e9));
    // The clock has come to the server's time: the next check reports the convergence.
    let check = core
        .tracking
        .next_convergence_check
        .expect("checked while converging");
    let done = at(check.ns(), ahead_ns);
    core.on_timer(done, Some(0), cookies());
    let tracking = core.tracking(done);
    assert_eq!(tracking.converging_from_offset_s, None);
    let convergence = tracking.last_convergence.expect("reported");
    assert_eq!(convergence.from_offset_s, -first as f64 / 1e9);
    assert!(convergence.took_s > 0.0, "{convergence:?}");
    assert_eq!(tracking.corrections, slews.len() as u64);
}

#[test]
fn corrections_under_1_us_of_what_is_pending_are_not_asked_for() {
    assert!(!correction_wanted(5_000, 4_500));
    assert!(correction_wanted(5_000, 3_999));
    assert!(correction_wanted(-1_000, 0));
}

#[test]
fn a_refused_correction_is_alerted_once_until_one_succeeds() {
    let mut core = ClientCore::new(EPOCH_NS, config(), 0.0, true, None);
    assert!(core.correction_refused());
    assert!(!core.correction_refused());
    core.correction_started();
    assert!(core.correction_refused());
    let tracking = core.tracking(at(S, 0));
    assert_eq!((tracking.corrections, tracking.corrections_refused), (1, 3));
}

#[test]
fn unsynchronised_it_serves_its_local_stratum_or_stratum_16() {
    let local = ClientCore::new(EPOCH_NS, config(), 0.0, false, Some(10));
    let clock = local.unsynchronised_clock(at(S, 0));
    assert_eq!((clock.stratum, clock.reference_id), (10, *b"LOCL"));
    let none = ClientCore::new(EPOCH_NS, config(), 0.0, false, None);
    let clock = none.unsynchronised_clock(at(S, 0));
    assert_eq!((clock.stratum, clock.leap), (16, Leap::Unsynchronized));
}

/// What the core tells the error bound: nothing usable until it has an estimate, then the
/// clock's error at each update (here the server stays 20 ms ahead: the clock is not
/// moved), and the loss once the server stops answering.
#[test]
fn the_error_bound_is_told_each_measurement_and_the_loss_of_the_sources() {
    let mut core = disciplining_one_source();
    let ahead_ns = 20_000_000;
    let mut raw_ns = S;
    let mut reports = Vec::new();
    let mut last_arrival = Raw::from_ns(0);
    for _ in 0..8 {
        let actions = core.on_timer(at(raw_ns, 0), Some(0), cookies());
        if let Some(Action::Send { request, .. }) = actions.first() {
            let bytes = reply(request, raw_ns, 1_000_000, ahead_ns);
            last_arrival = Raw::from_ns(raw_ns + 2_000_000);
            let actions = core
                .on_datagram(0, &bytes, last_arrival, at(last_arrival.ns(), 0), Some(0))
                .expect("a genuine reply");
            reports.extend(actions.into_iter().filter_map(|a| match a {
                Action::Measured(report) => Some(report),
                _ => None,
            }));
        }
        raw_ns = core.next_wakeup().expect("polls are due").ns();
    }
    assert_eq!(reports.first(), Some(&None), "no estimate from one sample");
    let last = reports.last().copied().flatten().expect("measured");
    assert!((last.offset_ns - ahead_ns).abs() < 100_000, "{last:?}");
    // A sample is dated at the middle of its round trip.
    assert_eq!(last.newest_sample, last_arrival.plus_ns(-1_000_000));
    assert_eq!(last.at.raw, last_arrival);
    // The round trip is 2 ms: root delay 2 ms (the server adds none).
    assert!((last.root_delay_ns - 2_000_000).abs() < 10_000, "{last:?}");
    assert!(
        last.offset_sigma_ns >= 0.0 && last.skew_ppb > 0.0,
        "{last:?}"
    );
    // No more answers: the source becomes unreachable and the bound is told.
    let silent_from_ns = raw_ns;
    let mut lost_after_s = None;
    while raw_ns < silent_from_ns + 3_600 * S {
        let actions = core.on_timer(at(raw_ns, 0), Some(0), cookies());
        if actions.contains(&Action::Measured(None)) {
            lost_after_s = Some((raw_ns - silent_from_ns) / S);
            break;
        }
        raw_ns = core.next_wakeup().expect("polls are due").ns();
    }
    // Eight unanswered polls at 16 s.
    let lost_after_s = lost_after_s.expect("the loss is told");
    assert!((100..=160).contains(&lost_after_s), "{lost_after_s} s");
}

#[test]
fn a_burst_polls_every_source_now_then_every_2_s_and_not_again_within_a_minute() {
    let mut core = ClientCore::new(EPOCH_NS, config(), 0.0, true, None);
    let start = Raw::from_ns(1_000 * S);
    for i in 0..2 {
        core.add_source(
            format!("s{i}"),
            SocketAddr::from(([192, 0, 2, i], 123)),
            start,
        );
    }
    core.retire(1);
    core.on_timer(at(start.ns(), 0), Some(0), cookies());
    let later = Raw::from_ns(1_005 * S);
    assert!(core.burst(later, false));
    assert_eq!(core.next_poll(0), Some(later));
    assert_eq!(core.next_poll(1), None, "a retired source stays retired");
    let polled = core.on_timer(at(later.ns(), 0), Some(0), cookies());
    assert_eq!(sends(&polled), [0]);
    assert_eq!(core.next_poll(0), Some(later.plus_ns(2 * S)));
    assert!(!core.burst(later.plus_ns(59 * S), false), "too soon");
    assert!(core.burst(later.plus_ns(60 * S), false));
    // A migration's burst is not held back by one a moment before.
    assert!(core.burst(later.plus_ns(61 * S), true));
    assert_eq!(core.next_poll(0), Some(later.plus_ns(61 * S)));
}

/// Polls the next source due, which must be `id`, and hands the core the reply of a server
/// `ahead_ns` ahead of the local timescale (1 ms each way), CLOCK_REALTIME reading
/// `clock_error_ns` ahead of the local timescale and `remaining_ns` still to slew: the
/// slews asked for, as (by_ns, whole_ns), each reported as started.
fn reply_to_next_poll(
    core: &mut ClientCore,
    id: usize,
    ahead_ns: i64,
    clock_error_ns: i64,
    remaining_ns: i64,
) -> Vec<(i64, i64)> {
    reply_to_next_poll_with(core, id, ahead_ns, clock_error_ns, remaining_ns, true)
}

/// [`reply_to_next_poll`], the slews reported as started (`accepted`) or refused.
fn reply_to_next_poll_with(
    core: &mut ClientCore,
    id: usize,
    ahead_ns: i64,
    clock_error_ns: i64,
    remaining_ns: i64,
    accepted: bool,
) -> Vec<(i64, i64)> {
    // Convergence checks come due in between (the clock is not moved here).
    let (raw_ns, actions) = loop {
        let raw_ns = core.next_wakeup().expect("a poll is due").ns();
        let actions = core.on_timer(at(raw_ns, clock_error_ns), Some(remaining_ns), cookies());
        if !actions.is_empty() {
            break (raw_ns, actions);
        }
    };
    let Some(Action::Send {
        request, source, ..
    }) = actions.first()
    else {
        panic!("source {id} polled: {actions:?}");
    };
    assert_eq!(*source, id);
    let bytes = reply(request, raw_ns, 1_000_000, ahead_ns);
    let back = raw_ns + 2_000_000;
    let actions = core
        .on_datagram(
            id,
            &bytes,
            Raw::from_ns(back),
            at(back, clock_error_ns),
            Some(remaining_ns),
        )
        .expect("a genuine reply");
    assert!(actions.contains(&Action::Measured(None)), "no estimate yet");
    let mut slews = Vec::new();
    for action in actions {
        if let Action::Slew { by_ns, whole_ns } = action {
            slews.push((by_ns, whole_ns));
            if accepted {
                core.correction_started();
            } else {
                core.correction_refused();
            }
        }
    }
    slews
}

/// A core (disciplining or only measuring) with `n` sources added at raw 1000 s.
fn core_with_sources(n: usize, disciplining: bool) -> ClientCore {
    let mut core = ClientCore::new(EPOCH_NS, config(), 0.0, disciplining, None);
    let start = Raw::from_ns(1_000 * S);
    for i in 0..n {
        core.add_source(
            format!("s{i}"),
            SocketAddr::from(([192, 0, 2, i as u8], 123)),
            start,
        );
    }
    core
}

/// The first reply of each of `servers_ahead_ns`, through a core that disciplines (or
/// only measures): the slews it asks for, in order.
fn slews_after_first_replies(servers_ahead_ns: &[i64], disciplining: bool) -> Vec<i64> {
    let mut core = core_with_sources(servers_ahead_ns.len(), disciplining);
    let mut slews = Vec::new();
    for (id, &ahead_ns) in servers_ahead_ns.iter().enumerate() {
        let asked = reply_to_next_poll(&mut core, id, ahead_ns, 0, 0);
        slews.extend(asked.into_iter().map(|(by_ns, _)| by_ns));
    }
    if let Some(&first) = slews.first() {
        let tracking = core.tracking(at(1_010 * S, 0));
        let from_s = tracking
            .converging_from_offset_s
            .expect("timed from the first look");
        assert!(
            (from_s + first as f64 / 1e9).abs() < 0.01,
            "{from_s} s, slew {first} ns"
        );
    }
    slews
}

/// A clock 11 s behind its one server is slewed from the first reply on, by the 11 s less
/// what the 2 ms round trip leaves uncertain (1 ms), not 4 s later at the third; a clock
/// nearer than 1 s waits for the estimate, as does one that is only measured.
#[test]
fn a_clock_far_off_is_slewed_from_the_first_reply_by_what_it_makes_certain() {
    let slews = slews_after_first_replies(&[11 * S], true);
    assert_eq!(slews.len(), 1, "{slews:?}");
    assert!(
        (slews[0] - (11 * S - 1_000_000)).abs() < 1_000,
        "slew by {} ns",
        slews[0]
    );
    let behind = slews_after_first_replies(&[-11 * S], true);
    assert!((behind[0] + 11 * S - 1_000_000).abs() < 1_000, "{behind:?}");
    assert_eq!(
        slews_after_first_replies(&[900_000_000], true),
        Vec::<i64>::new()
    );
    assert_eq!(
        slews_after_first_replies(&[11 * S], false),
        Vec::<i64>::new()
    );
}

/// Several sources: only once every one has answered, and only the part of the way they
/// all agree on (the nearest's); sources on either side of the clock give nothing to do
/// before selection can tell a falseticker.
#[test]
fn first_replies_of_several_sources_are_slewed_by_only_what_all_agree_on() {
    let slews = slews_after_first_replies(&[11 * S, 5 * S, 8 * S], true);
    assert_eq!(slews.len(), 1, "after the third reply only: {slews:?}");
    // Less the 1 ms of the round trip and the drift since the reply (at most 500 ppm ×
    // the 0.1 s between the sources' polls, from the middle of the round trip).
    assert!(
        (slews[0] - (5 * S - 1_000_000)).abs() <= 51_000,
        "{slews:?}"
    );
    assert_eq!(
        slews_after_first_replies(&[11 * S, -3 * S], true),
        Vec::<i64>::new()
    );
    assert_eq!(
        slews_after_first_replies(&[11 * S, 0], true),
        Vec::<i64>::new()
    );
}

/// The first look is measured against the clock as it reads now: once the clock has
/// gained part of it, the next reply asks only for the rest. max_correction judges the
/// whole measured offset (`whole_ns`), not the certain part.
#[test]
fn the_first_look_asks_for_what_is_left_and_is_judged_whole() {
    let mut core = disciplining_one_source();
    let first = reply_to_next_poll(&mut core, 0, 11 * S, 0, 0);
    let [(by_ns, whole_ns)] = first[..] else {
        panic!("one slew: {first:?}");
    };
    assert!((by_ns - (11 * S - 1_000_000)).abs() < 1_000, "{first:?}");
    assert!((whole_ns - 11 * S).abs() < 1_000, "{first:?}");
    // A poll later the clock reads 1.3 s nearer the server; the engine has 9.7 s left.
    let second = reply_to_next_poll(&mut core, 0, 11 * S, 1_300_000_000, 9_700_000_000);
    let [(by_ns, whole_ns)] = second[..] else {
        panic!("one slew: {second:?}");
    };
    assert!(
        (by_ns - (9_700_000_000 - 1_000_000)).abs() < 10_000,
        "{second:?}"
    );
    assert!((whole_ns - 9_700_000_000).abs() < 10_000, "{second:?}");
}

/// Replies that stop agreeing before there is an estimate drop what is left of the first
/// look's correction (once), and selection decides from then on.
#[test]
fn first_replies_that_stop_agreeing_drop_their_correction() {
    let mut core = core_with_sources(2, true);
    assert_eq!(reply_to_next_poll(&mut core, 0, 11 * S, 0, 0), []);
    let agreed = reply_to_next_poll(&mut core, 1, 11 * S, 0, 0);
    assert_eq!(agreed.len(), 1, "{agreed:?}");
    // Source 0 now says the clock is right: nothing more of the 11 s is slewed.
    let dropped = reply_to_next_poll(&mut core, 0, 0, 0, 10 * S);
    assert_eq!(dropped, [(0, 0)]);
    // Nor is the convergence timed from an offset the sources no longer agree on.
    let tracking = core.tracking(at(1_020 * S, 0));
    assert_eq!(tracking.converging_from_offset_s, None, "{tracking:?}");
    assert_eq!(reply_to_next_poll(&mut core, 1, 11 * S, 0, 10 * S), []);
}

/// A first look the slew engine refused (max_correction) took nothing: when the replies
/// part, what is pending (another correction) is left alone.
#[test]
fn a_refused_first_look_drops_nothing_when_replies_part() {
    let mut core = core_with_sources(2, true);
    assert_eq!(reply_to_next_poll(&mut core, 0, 11 * S, 0, 0), []);
    let refused = reply_to_next_poll_with(&mut core, 1, 11 * S, 0, 0, false);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(reply_to_next_poll(&mut core, 0, 0, 0, 2 * S), []);
}
