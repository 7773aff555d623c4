//! The scenarios: each runs the client in the simulated world and asserts the figures the
//! README states (convergence, steady-state offset, falsetickers, leap seconds, loss,
//! asymmetry, a netem link).

use super::*;

/// 100 ppm, 10 µs of jitter, one server, realtime 11 s ahead: the clock slews back (at
/// 83 333 ppm, so −11 s take 132 s) and then holds the time. chrony's clknetsim tests
/// report 35 ± 8 µs RMS for 10 µs of jitter (with clknetsim's 1e-9 wander).
#[test]
fn converges_from_11_s_by_slewing_and_holds_the_time() {
    let started = Instant::now();
    let sc = Scenario::new(vec![ServerSpec::lan(10e3)], 4 * HOUR);
    let run = simulate(sc.clone());
    let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
    let settled_100us = settled_at(&run.trace, 0, 100 * US).expect("converged under 100 µs");
    let (rms, mean, max) = stats(&run.trace, 2 * HOUR, 4 * HOUR);
    let c = counters(&run, 0);
    eprintln!(
        "11 s ahead, +100 ppm, 1e-9 wander, 10 µs jitter: within 1 ms after {:.0} s, within \
         100 µs after {:.0} s; 2 h..4 h: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; {} \
         requests, {} outliers, {} resets; realtime rate {:+.0}..{:+.0} ppm over {} checks; \
         took {:?}",
        secs(settled),
        secs(settled_100us),
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        c.sent,
        c.outliers,
        c.resets,
        run.rate_range_ppm.0,
        run.rate_range_ppm.1,
        run.checks,
        started.elapsed()
    );
    // 132 s of slewing from the first reply on (what it makes certain; the estimate, 3
    // samples 2 s apart, takes over 4 s later). Waiting for the estimate took 136 s.
    assert!(secs(settled) < 134.0, "settled after {} s", secs(settled));
    // 16 seeds gave 15.6 µs median, 28 µs worst over 2 h..6 h (78 µs before the poll
    // interval followed the wander).
    assert!(rms < 30e3, "steady RMS {rms} ns");
    assert!(max < 100e3, "steady max {max} ns");
    assert_eq!(run.slew_external_steps, 0);
    // Slewing back never came near stopping the clock (−1e6 ppm).
    assert!(
        run.rate_range_ppm.0 >= -83_500.0,
        "{:?}",
        run.rate_range_ppm
    );

    // An oscillator that does not wander: the line fits, the error is the noise left
    // after the regression.
    let still = simulate(Scenario { wander: 0.0, ..sc });
    let (rms, mean, max) = stats(&still.trace, 2 * HOUR, 4 * HOUR);
    eprintln!(
        "... without wander: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; {} requests",
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        counters(&still, 0).sent
    );
    assert!(rms < 5e3 && max < 10e3, "RMS {rms} ns, max {max} ns");
}

/// A kernel whose CLOCK_REALTIME runs faster against the raw clock than its setting says
/// (the test VM: +67.75 ppm at the nominal setting). The fit is against the raw clock and
/// cannot see it; the slew engine counts it as progress and keeps correcting, so the clock
/// holds about one slew interval's worth of it (67.75 ppm × 250 ms ≈ 17 µs) off. Over four
/// seeds: with polls on CLOCK_MONOTONIC_RAW, replies land anywhere in a slew interval, and
/// two of these seeds showed the engine dropping the held correction when a new base rate
/// came mid-interval (`a_request_between_updates_does_not_shorten_the_horizon` in slew.rs).
#[test]
fn a_kernel_rate_bias_costs_one_slew_interval_of_it() {
    for (bias_ppm, seed) in [(67.75, 1), (67.75, 2), (67.75, 3), (67.75, 4), (400.0, 1)] {
        let sc = Scenario {
            seed,
            kernel_bias_ppm: bias_ppm,
            wander: 0.0,
            ..Scenario::new(vec![ServerSpec::lan(10e3)], 2 * HOUR)
        };
        let run = simulate(sc);
        let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
        let (rms, mean, max) = stats(&run.trace, HOUR, 2 * HOUR);
        eprintln!(
            "kernel rate bias {bias_ppm:+} ppm: within 1 ms after {:.0} s; 1 h..2 h: RMS \
             {:.1} µs, mean {:+.1} µs, max {:.1} µs",
            secs(settled),
            rms / 1e3,
            mean / 1e3,
            max / 1e3,
        );
        // Uncorrected between polls it would be 1..69 ms (16..1024 s at 67.75 ppm).
        let interval_worth_ns = bias_ppm * 1e-6 * SLEW_INTERVAL_NS as f64;
        assert!(
            (mean - interval_worth_ns).abs() < 0.25 * interval_worth_ns + 5e3,
            "mean {mean} ns, expected about {interval_worth_ns} ns"
        );
        assert!(max < 1.5 * interval_worth_ns + 20e3, "max {max} ns");
    }
}

/// The steady state of the first test over 16 seeds (one seed can be lucky): 6 h each,
/// judged over 2 h..6 h.
#[test]
fn steady_state_across_seeds() {
    let started = Instant::now();
    let (mut rms_all, mut max_all, mut requests, mut resets) = (Vec::new(), Vec::new(), 0, 0);
    for seed in 1..=16 {
        let sc = Scenario {
            seed,
            ..Scenario::new(vec![ServerSpec::lan(10e3)], 6 * HOUR)
        };
        let run = simulate(sc);
        let (rms, _, max) = stats(&run.trace, 2 * HOUR, 6 * HOUR);
        rms_all.push(rms);
        max_all.push(max);
        requests += counters(&run, 0).sent;
        resets += counters(&run, 0).resets;
    }
    let pooled = (rms_all.iter().map(|r| r * r).sum::<f64>() / 16.0).sqrt();
    rms_all.sort_by(f64::total_cmp);
    max_all.sort_by(f64::total_cmp);
    eprintln!(
        "16 seeds, 2 h..6 h: RMS pooled {:.1} µs, median {:.1} µs, worst {:.1} µs; max \
         median {:.1} µs, worst {:.1} µs; {} requests per run (6 h), {resets} resets in all; \
         took {:?}",
        pooled / 1e3,
        rms_all[8] / 1e3,
        rms_all[15] / 1e3,
        max_all[8] / 1e3,
        max_all[15] / 1e3,
        requests / 16,
        started.elapsed()
    );
    // Before the poll interval followed the wander: pooled 78 µs, worst 107 µs, max 320 µs,
    // 25 resets (wander taken for steps).
    assert!(pooled < 25e3 && rms_all[15] < 35e3, "{rms_all:?}");
    assert!(max_all[15] < 250e3, "{max_all:?}");
    assert!(resets <= 4, "{resets} resets");
}

/// The first test's world with noisy timestamps at both ends: each reading of the server's
/// clock (receive, transmit) and of the client's raw clock around an exchange is off by a
/// normal error of 5 µs standard deviation (a server's and a user-space client's
/// timestamping), over 16 seeds. The regression averages the noise down; what is left is
/// stated beside the noiseless figure in the README.
#[test]
fn holds_the_time_with_noisy_timestamps_at_both_ends() {
    const SEEDS: u64 = 16;
    let started = Instant::now();
    let (mut rms_all, mut max_all, mut slowest) = (Vec::new(), Vec::new(), 0.0f64);
    for seed in 1..=SEEDS {
        let server = ServerSpec {
            clock_noise_ns: 5e3,
            ..ServerSpec::lan(10e3)
        };
        let sc = Scenario {
            seed,
            client_stamp_noise_ns: 5e3,
            ..Scenario::new(vec![server], 4 * HOUR)
        };
        let run = simulate(sc);
        let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
        slowest = slowest.max(secs(settled));
        let (rms, _, max) = stats(&run.trace, 2 * HOUR, 4 * HOUR);
        rms_all.push(rms);
        max_all.push(max);
        assert_eq!(run.slew_external_steps, 0, "seed {seed}");
    }
    let pooled = (rms_all.iter().map(|r| r * r).sum::<f64>() / SEEDS as f64).sqrt();
    let worst_rms = rms_all.iter().copied().fold(0.0, f64::max);
    let worst_max = max_all.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "noisy timestamps (5 µs sd at the server and at the client), 10 µs jitter, {SEEDS} seeds, \
         2 h..4 h: RMS pooled {:.1} µs, worst {:.1} µs; max worst {:.1} µs; slowest to 1 ms \
         {slowest:.0} s; took {:?}",
        pooled / 1e3,
        worst_rms / 1e3,
        worst_max / 1e3,
        started.elapsed()
    );
    assert!(slowest < 140.0, "settled after {slowest} s");
    // The worst seed is a tail figure: over 32 seeds the copy of the client this test ran
    // before it drove the real core gave pooled 25.1 µs, worst 71.1 µs; the core (polls on
    // CLOCK_MONOTONIC_RAW) gives pooled 23.3 µs, worst 44.7 µs. Hence 16 seeds here, and
    // the worst bound at 50 µs where it was 40 µs over 8 seeds.
    assert!(pooled < 25e3 && worst_rms < 50e3, "{rms_all:?}");
    assert!(worst_max < 160e3, "{max_all:?}");
}

#[test]
fn asymmetric_delay_biases_by_half_the_asymmetry() {
    let started = Instant::now();
    // 1 ms out, nothing back (plus the jitter): the client cannot tell, and ends half
    // the difference ahead, +500 µs.
    let server = ServerSpec {
        out_ns: MS,
        back_ns: 0,
        ..ServerSpec::lan(10e3)
    };
    let run = simulate(Scenario::new(vec![server], 3 * HOUR));
    let (rms, mean, max) = stats(&run.trace, HOUR, 3 * HOUR);
    let spread = (rms * rms - mean * mean).max(0.0).sqrt();
    eprintln!(
        "asymmetry 1 ms / 0: realtime − true {:+.1} µs on average (expected +500), spread \
         {:.1} µs, max {:.1} µs; took {:?}",
        mean / 1e3,
        spread / 1e3,
        max / 1e3,
        started.elapsed()
    );
    assert!((mean - 500e3).abs() < 25e3, "mean {mean} ns");
    assert!(spread < 30e3, "spread {spread} ns");
}

#[test]
fn a_falseticker_is_outvoted() {
    let started = Instant::now();
    // Source 0 answers first and is 5 s ahead; 1..3 are good.
    let mut servers = vec![ServerSpec::lan(10e3); 4];
    servers[0].offsets = vec![(0, 5 * S)];
    let run = simulate(Scenario::new(servers, 2 * HOUR));
    let states: Vec<&str> = (0..4)
        .map(|id| run.core.engine().source_state(id).as_str())
        .collect();
    let settled = settled_at(&run.trace, 0, MS).expect("converged to the majority");
    let (rms, mean, max) = stats(&run.trace, HOUR, 2 * HOUR);
    let system = run.core.engine().system().expect("synchronised");
    eprintln!(
        "falseticker 5 s ahead among 4: states {states:?}; within 1 ms of true time after \
         {:.0} s; 1 h..2 h: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; took {:?}",
        secs(settled),
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        started.elapsed()
    );
    assert_eq!(states[0], "falseticker");
    assert!(
        states[1..]
            .iter()
            .all(|s| *s == "selected" || *s == "combined"),
        "{states:?}"
    );
    assert_eq!(system.falsetickers, vec![0]);
    assert!(secs(settled) < 140.0, "settled after {} s", secs(settled));
    assert!(rms < 30e3 && max < 100e3, "RMS {rms} ns, max {max} ns");
}

#[test]
fn a_server_that_steps_is_followed_by_a_slew() {
    let started = Instant::now();
    let step_at = 2 * HOUR;
    let mut server = ServerSpec::lan(10e3);
    server.offsets = vec![(0, 0), (step_at, 2 * S)];
    // On time from the start, so that the only slew after the step is the one following
    // it; no wander, so that the poll interval is long (512 s, doubled from 16 s after
    // every 8 good samples) when it comes.
    let sc = Scenario {
        start_offset_ns: 0,
        wander: 0.0,
        watch_rates_from_ns: step_at,
        bound_follows_server0: true,
        ..Scenario::new(vec![server], 4 * HOUR)
    };
    let run = simulate(sc);
    let c = counters(&run, 0);
    let after: Vec<(i64, i64)> = run
        .trace
        .iter()
        .copied()
        .filter(|&(t, _)| t >= step_at)
        .collect();
    let followed = settled_at(&after, 2 * S, MS).expect("followed the step") - step_at;
    let reset = run.resets_at.first().map(|&t| t - step_at);
    let (rms, mean, _) = stats(&run.trace, 3 * HOUR, 4 * HOUR);
    eprintln!(
        "server steps +2 s at 2 h: filter reset {:.0} s after the step ({} outliers, {} \
         resets), within 1 ms of the server {:.0} s after it, then {:+.1} µs (RMS {:.1} µs \
         around +2 s); realtime rate {:+.0}..{:+.0} ppm from the step on; took {:?}",
        secs(reset.unwrap_or(0)),
        c.outliers,
        c.resets,
        secs(followed),
        (mean - 2e9) / 1e3,
        (rms * rms - mean * mean).max(0.0).sqrt() / 1e3,
        run.rate_range_ppm.0,
        run.rate_range_ppm.1,
        started.elapsed()
    );
    assert_eq!((c.resets, c.outliers), (1, 2), "{c:?}");
    // Three samples disagree (the first up to a poll interval, 512 s, after the step,
    // then each outlier halves the interval: 256 s, 128 s), then 2 s are slewed at
    // 83 333 ppm in 24 s.
    let reset = reset.expect("reset");
    assert!(
        secs(reset) <= 512.0 + 256.0 + 128.0 + 1.0,
        "reset after {reset}"
    );
    assert!(secs(followed - reset) < 30.0, "followed {followed}");
    assert!((mean - 2e9).abs() < 10e3, "mean {mean}");
    // Forward only: +2 s gained by running fast, at most at the slew limit.
    assert!(
        run.rate_range_ppm.1 < 83_500.0 && run.rate_range_ppm.0 > -1_000.0,
        "{:?}",
        run.rate_range_ppm
    );
    assert_eq!(run.slew_external_steps, 0);
    // The error bound (held against the server, whose time the client must follow): out
    // from the step until the first sample after it, which nothing can know sooner; from
    // that sample on, while the filter holds it back as an outlier, the bound holds it.
    let first_seen = run
        .outliers_at
        .iter()
        .copied()
        .find(|&t| t >= step_at)
        .expect("an outlier after the step");
    let cov = &run.coverage;
    eprintln!(
        "error bound: {} checks, {} outside, the first at {:?}, the last at {:?} (true time \
         since the start, realtime − the server, bound; ns); first sample after the step \
         {:.0} s after it",
        cov.checks,
        cov.misses,
        cov.first_miss,
        cov.last_miss,
        secs(first_seen - step_at)
    );
    let (first, _, _) = cov
        .first_miss
        .expect("the step is missed until it is sampled");
    let (last, _, _) = cov
        .last_miss
        .expect("the step is missed until it is sampled");
    assert!(
        first >= step_at,
        "outside before the step: {:?}",
        cov.first_miss
    );
    assert!(
        last <= first_seen,
        "outside after the step was sampled: {:?}",
        cov.last_miss
    );
}

/// 2026-12-31T22:00:00Z: two hours before a midnight where a leap second may come.
const T0_BEFORE_NEW_YEAR_NS: i64 = 1_798_754_400 * S;

/// The sources announce a leap second for the midnight (one inserted, then one deleted):
/// the clock is on time before it, follows UTC after it within 1 ms about 12 s later
/// (1 s at 83 333 ppm), never stepping, and the filter keeps its line (no reset).
#[test]
fn an_announced_leap_second_is_slewed_never_stepped() {
    let midnight = 2 * HOUR;
    for delta_s in [1, -1] {
        let started = Instant::now();
        let sc = Scenario {
            start_offset_ns: 0,
            wander: 0.0,
            t0_unix_ns: T0_BEFORE_NEW_YEAR_NS,
            watch_rates_from_ns: midnight - 2 * S,
            ..Scenario::new(
                vec![ServerSpec::lan(10e3).leaping(midnight, delta_s)],
                3 * HOUR,
            )
        };
        let run = simulate(sc);
        let c = counters(&run, 0);
        let leaps = run.core.engine().leap_seconds();
        let after: Vec<(i64, i64)> = run
            .trace
            .iter()
            .copied()
            .filter(|&(t, _)| t >= midnight - S)
            .collect();
        // UTC after the leap is the continuous true time less the second inserted.
        let utc_after = -delta_s * S;
        let followed = settled_at(&after, utc_after, MS).expect("followed UTC") - midnight;
        let (_, before_mean, before_max) = stats(&run.trace, HOUR, midnight - 2 * S);
        let (_, after_mean, _) = stats(&run.trace, midnight + 60 * S, 3 * HOUR);
        eprintln!(
            "leap second {delta_s:+}: before it {:+.1} µs (max {:.1} µs); within 1 ms of \
             UTC {:.1} s after it, then {:+.1} µs; realtime rate {:+.0}..{:+.0} ppm; {} \
             outliers, {} resets; took {:?}",
            before_mean / 1e3,
            before_max / 1e3,
            secs(followed),
            (after_mean - utc_after as f64) / 1e3,
            run.rate_range_ppm.0,
            run.rate_range_ppm.1,
            c.outliers,
            c.resets,
            started.elapsed()
        );
        assert_eq!(leaps.len(), 1, "{leaps:?}");
        assert!(leaps[0].passed && leaps[0].delta_s == delta_s, "{leaps:?}");
        assert_eq!(leaps[0].at_unix_s, 1_798_761_600, "2027-01-01T00:00:00Z");
        assert!(before_max < 100e3, "off before the leap: {before_max} ns");
        // The second deleted goes a second before the midnight; 1 s at 83 333 ppm is 12 s.
        assert!(
            (0.0..14.0).contains(&secs(followed)),
            "followed after {followed} ns"
        );
        assert!(
            (after_mean - utc_after as f64).abs() < 20e3,
            "mean {after_mean} ns after"
        );
        // The server's timescale was carried through the leap: no reset, at most the one
        // exchange that straddled it is an outlier.
        assert_eq!(c.resets, 0, "{c:?}");
        assert!(c.outliers <= 1, "{c:?}");
        // Slewed: an inserted second makes the clock run slow, never backward.
        let (slowest, fastest) = run.rate_range_ppm;
        if delta_s > 0 {
            assert!(
                slowest >= -83_500.0 && fastest < 1_000.0,
                "{slowest}..{fastest}"
            );
        } else {
            assert!(
                fastest <= 83_500.0 && slowest > -1_000.0,
                "{slowest}..{fastest}"
            );
        }
        assert_eq!(run.slew_external_steps, 0);
    }
}

/// One server of three announces and applies a leap second the other two do not: no leap
/// is taken (a majority must announce it), the clock stays on the majority's time, and the
/// lone server ends as a falseticker.
#[test]
fn a_leap_second_announced_by_a_minority_is_not_taken() {
    let midnight = 2 * HOUR;
    let sc = Scenario {
        start_offset_ns: 0,
        wander: 0.0,
        t0_unix_ns: T0_BEFORE_NEW_YEAR_NS,
        ..Scenario::new(
            vec![
                ServerSpec::lan(10e3).leaping(midnight, 1),
                ServerSpec::lan(10e3),
                ServerSpec::lan(10e3),
            ],
            3 * HOUR,
        )
    };
    let run = simulate(sc);
    let (_, mean, max) = stats(&run.trace, midnight, 3 * HOUR);
    let system = run.core.engine().system().expect("synchronised");
    eprintln!(
        "leap second from 1 of 3: after the midnight {:+.1} µs (max {:.1} µs); falsetickers {:?}",
        mean / 1e3,
        max / 1e3,
        system.falsetickers
    );
    assert!(
        run.core.engine().leap_seconds().is_empty(),
        "{:?}",
        run.core.engine().leap_seconds()
    );
    assert_eq!(system.leap, Leap::None);
    assert!(max < 200e3, "left the majority's time: max {max} ns");
    assert_eq!(system.falsetickers, vec![0]);
}

#[test]
fn converges_through_packet_loss() {
    let started = Instant::now();
    let server = ServerSpec {
        loss: 0.3,
        ..ServerSpec::lan(10e3)
    };
    let run = simulate(Scenario::new(vec![server], 3 * HOUR));
    let c = counters(&run, 0);
    let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
    let (rms, _, max) = stats(&run.trace, HOUR, 3 * HOUR);
    let reach = &run.reach[0];
    // Registers that are full of replies but for some (the first 8 polls fill it).
    let gappy = reach[8..].iter().filter(|r| r.count_ones() < 8).count();
    let lost = 1.0 - c.accepted as f64 / c.sent as f64;
    let octal: Vec<String> = reach.iter().take(24).map(|r| format!("{r:o}")).collect();
    eprintln!(
        "30 % loss per packet: {} requests, {} answered ({:.0} % of exchanges lost, 51 % \
         expected); within 1 ms after {:.0} s; 1 h..3 h: RMS {:.1} µs, max {:.1} µs; reach \
         below 377 at {gappy} of {} polls, first ones {octal:?}; took {:?}",
        c.sent,
        c.accepted,
        lost * 100.0,
        secs(settled),
        rms / 1e3,
        max / 1e3,
        reach.len() - 8,
        started.elapsed()
    );
    assert!((0.4..0.6).contains(&lost), "lost {lost}");
    // With 49 % of exchanges answered, 8 in a row come 0.3 % of the time.
    assert_eq!(gappy, reach.len() - 8, "{reach:?}");
    assert!(secs(settled) < 300.0, "settled after {} s", secs(settled));
    assert!(rms < 40e3 && max < 150e3, "RMS {rms} ns, max {max} ns");
}

#[test]
fn forged_and_broken_datagrams_change_nothing() {
    let started = Instant::now();
    let sc = Scenario::new(vec![ServerSpec::lan(10e3)], 2 * HOUR);
    let clean = simulate(sc.clone());
    let attacked = simulate(Scenario { inject: true, ..sc });
    let (c, a) = (counters(&clean, 0), counters(&attacked, 0));
    let inj = attacked.injected;
    eprintln!(
        "injected {inj:?}: counters {a:?} (clean run: {c:?}); took {:?}",
        started.elapsed()
    );
    assert!(inj.spoofed >= 5 && inj.malformed >= 5 && inj.not_a_reply >= 2);
    assert!(inj.duplicate >= 3);
    assert_eq!(a.bad_origin, inj.spoofed);
    assert_eq!(a.malformed, inj.malformed);
    assert_eq!(a.not_a_reply, inj.not_a_reply);
    assert_eq!(a.duplicate, inj.duplicate);
    let injected = inj.spoofed + inj.malformed + inj.not_a_reply + inj.duplicate;
    assert_eq!(a.received, c.received + injected);
    assert_eq!(
        SourceCounters {
            received: c.received,
            bad_origin: 0,
            malformed: 0,
            not_a_reply: 0,
            duplicate: 0,
            ..a
        },
        c
    );
    // The clock did exactly the same: same estimate, same time at every second.
    assert_eq!(
        attacked.core.engine().system(),
        clean.core.engine().system()
    );
    assert_eq!(attacked.trace, clean.trace);
}

/// The bench's network (tests/bench/vm_ntp_netem.sh): netem's 1 ms ± 200 µs, uniform, each
/// way, a 50 ppm oscillator and the clock on time at the start, over 8 seeds. A sample's
/// offset is then off by about 80 µs (SD); the fastest of a few samples by less, but not by
/// nothing: weighting it as if it were exact made the fit follow each new fastest sample
/// (pooled RMS 297 µs over the bench's hold and 160 µs later, max 1.9 ms; polling up after
/// 4 good samples instead of 8 took the poll to 1024 s before the fit had the samples).
#[test]
fn holds_the_time_over_a_netem_link() {
    let started = Instant::now();
    let (mut hold, mut later) = (Vec::new(), Vec::new());
    for seed in 1..=8 {
        let sc = Scenario {
            seed,
            raw_freq: 50e-6,
            start_offset_ns: 0,
            ..Scenario::new(vec![ServerSpec::netem(MS, 200e3)], HOUR)
        };
        let run = simulate(sc);
        assert_eq!(run.slew_external_steps, 0);
        // The bench measures 600 s after 20 s in the band and 120 s of settling.
        hold.push(stats(&run.trace, 140 * S, 740 * S));
        later.push(stats(&run.trace, 1200 * S, HOUR));
    }
    let pooled = |all: &[(f64, f64, f64)]| {
        (all.iter().map(|s| s.0 * s.0).sum::<f64>() / all.len() as f64).sqrt()
    };
    let worst_max = |all: &[(f64, f64, f64)]| all.iter().map(|s| s.2).fold(0.0, f64::max);
    eprintln!(
        "netem 1 ms ± 200 µs each way, 50 ppm, 8 seeds: 140..740 s RMS pooled {:.1} µs, max \
         {:.1} µs; 1200..3600 s RMS pooled {:.1} µs, max {:.1} µs; took {:?}",
        pooled(&hold) / 1e3,
        worst_max(&hold) / 1e3,
        pooled(&later) / 1e3,
        worst_max(&later) / 1e3,
        started.elapsed()
    );
    assert!(pooled(&hold) < 100e3, "{hold:?}");
    assert!(pooled(&later) < 80e3, "{later:?}");
}

/// `[guard] max_correction_s` = 5 and the clock 11 s ahead: the correction is refused, the
/// alert is raised once (not at every poll), and the clock is neither stepped nor slewed
/// (the frequency is still disciplined). When the server moves to within 5 s (+10 s at
/// 1 h), the correction is taken and slewed, which re-arms the alert; when it moves back
/// (to 0 at 2.5 h) the alert is raised again.
#[test]
fn a_refused_correction_alerts_once_per_spell_and_never_steps() {
    let started = Instant::now();
    let (near_at, far_again_at) = (HOUR, 5 * HOUR / 2);
    let mut server = ServerSpec::lan(10e3);
    server.offsets = vec![(0, 0), (near_at, 10 * S), (far_again_at, 0)];
    let sc = Scenario {
        slew: SlewConfig {
            max_correction_ns: 5 * S,
            ..SlewConfig::default()
        },
        ..Scenario::new(vec![server], 4 * HOUR)
    };
    let run = simulate(sc);
    let refused = run.core.tracking(run.end).corrections_refused;
    let during = |from: i64, to: i64| -> Vec<(i64, i64)> {
        run.trace
            .iter()
            .copied()
            .filter(|&(t, _)| t >= from && t < to)
            .collect()
    };
    let followed = settled_at(&during(near_at, far_again_at), 10 * S, MS);
    eprintln!(
        "max_correction 5 s, 11 s ahead: alerts at {:?} s, {refused} corrections refused; \
         within 1 ms of a server 10 s ahead {:?} s after it moved; realtime rate \
         {:+.0}..{:+.0} ppm; took {:?}",
        run.alerts_at.iter().map(|&t| secs(t)).collect::<Vec<_>>(),
        followed.map(|t| secs(t - near_at)),
        run.rate_range_ppm.0,
        run.rate_range_ppm.1,
        started.elapsed()
    );
    assert_eq!(run.alerts_at.len(), 2, "{:?}", run.alerts_at);
    assert!(run.alerts_at[0] < 60 * S, "{:?}", run.alerts_at);
    assert!(run.alerts_at[1] > far_again_at, "{:?}", run.alerts_at);
    // Refused at every poll of both spells, alerted twice.
    assert!(refused > 10, "{refused}");
    // Refused: the offset stayed, in both spells (to within what the frequency discipline
    // moves it): 11 s ahead at first, then the 10 s it had slewed to. The simulation checks
    // at every event that realtime only moved forward, at most at the slew limit.
    let (_, first_spell_mean, _) = stats(&run.trace, 10 * S, near_at);
    assert!((first_spell_mean - 11e9).abs() < 5e6, "{first_spell_mean}");
    let (_, second_spell_mean, _) = stats(&run.trace, run.alerts_at[1] + 60 * S, 4 * HOUR);
    assert!(
        (second_spell_mean - 10e9).abs() < 5e6,
        "{second_spell_mean}"
    );
    // Taken once within reach: the filter resets after its outliers (at most 1024 + 512 +
    // 256 s at the longest poll), then 1 s is slewed in 12 s and the server's time held.
    let followed = followed.expect("followed the server") - near_at;
    assert!(secs(followed) < 1024.0 + 512.0 + 256.0 + 30.0, "{followed}");
}

/// The error bound clockguard publishes (ClockBound's segment), fed by this same client,
/// held against true time at every event of the run (tens of millions of checks): it must
/// never exclude it while a reader would trust it (synchronized or free running), from the
/// first estimate through an 11 s slew and hours of holding, over a LAN, a netem link,
/// noisy timestamps at both ends, 30 % loss and a 1 ms path asymmetry that no client can
/// see. The widths are reported (the README's simulated figures).
#[test]
fn the_published_error_bound_always_holds_true_time() {
    let started = Instant::now();
    let lan = ServerSpec::lan(10e3);
    let cases = [
        (
            "LAN, 11 s ahead",
            Scenario::new(vec![lan.clone()], 4 * HOUR),
        ),
        (
            "netem 1 ms ± 200 µs",
            Scenario {
                raw_freq: 50e-6,
                start_offset_ns: 0,
                ..Scenario::new(vec![ServerSpec::netem(MS, 200e3)], HOUR)
            },
        ),
        (
            "noisy stamps 5 µs both ends",
            Scenario {
                client_stamp_noise_ns: 5e3,
                ..Scenario::new(
                    vec![ServerSpec {
                        clock_noise_ns: 5e3,
                        ..lan.clone()
                    }],
                    2 * HOUR,
                )
            },
        ),
        (
            "30 % loss",
            Scenario::new(
                vec![ServerSpec {
                    loss: 0.3,
                    ..lan.clone()
                }],
                2 * HOUR,
            ),
        ),
        (
            "1 ms asymmetry",
            Scenario::new(
                vec![ServerSpec {
                    out_ns: MS,
                    back_ns: 0,
                    ..lan
                }],
                2 * HOUR,
            ),
        ),
    ];
    for (name, sc) in cases {
        for seed in 1..=2 {
            let run = simulate(Scenario { seed, ..sc.clone() });
            let c = &run.coverage;
            // The width once the clock has come to the time (after 20 min).
            let mut widths: Vec<i64> = c
                .widths
                .iter()
                .filter(|(t, _)| *t >= 1_200 * S)
                .map(|(_, w)| *w)
                .collect();
            widths.sort_unstable();
            let at = |q: f64| widths[((widths.len() - 1) as f64 * q) as usize] as f64 / 1e3;
            let synchronised_s = c.widths.len();
            eprintln!(
                "{name}, seed {seed}: {} checks, {} outside; synchronised {synchronised_s} s; \
                 bound after 20 min p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
                c.checks,
                c.misses,
                at(0.5),
                at(0.99),
                at(1.0),
            );
            assert!(c.checks > 10_000, "{name}: {} checks", c.checks);
            // Every second from the first estimate (seconds after the start) on.
            assert!(
                synchronised_s as i64 >= sc.duration_ns / S - 30,
                "{name}: synchronised only {synchronised_s} s"
            );
            assert_eq!(
                c.misses, 0,
                "{name}, seed {seed}: first miss (t ns, realtime − true ns, bound ns) {:?}",
                c.first_miss
            );
        }
    }
    eprintln!("took {:?}", started.elapsed());
}
