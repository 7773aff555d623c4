use super::*;
use std::sync::Arc;

const UNIX_EPOCH_NTP_S: u64 = 2_208_988_800;

#[test]
fn unix_epoch_and_fractions() {
    assert_eq!(unix_ns_to_ntp(0), UNIX_EPOCH_NTP_S << 32);
    assert_eq!(
        unix_ns_to_ntp(500_000_000),
        UNIX_EPOCH_NTP_S << 32 | 0x8000_0000
    );
    assert_eq!(
        unix_ns_to_ntp(250_000_000),
        UNIX_EPOCH_NTP_S << 32 | 0x4000_0000
    );
    // 1 ns = 4.294967296 units of 2^-32 s: rounds to 4.
    assert_eq!(unix_ns_to_ntp(1), UNIX_EPOCH_NTP_S << 32 | 4);
    // The largest fraction stays in the second (no carry): round(0.999999999 * 2^32).
    assert_eq!(
        unix_ns_to_ntp(999_999_999),
        UNIX_EPOCH_NTP_S << 32 | 4_294_967_292
    );
    // Before 1970: 1 ns before the epoch is the previous second's last fraction.
    assert_eq!(
        unix_ns_to_ntp(-1),
        (UNIX_EPOCH_NTP_S - 1) << 32 | 4_294_967_292
    );
    // 2001-09-09T01:46:40Z.
    assert_eq!(
        unix_ns_to_ntp(1_000_000_000 * NS_PER_S + 123_456_789),
        (UNIX_EPOCH_NTP_S + 1_000_000_000) << 32 | 530_242_871
    );
    // Back: one unit of 2^-32 s is 0.23 ns and rounds to 0; 0x8000_0000 is 0.5 s.
    assert_eq!(ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 1, 0), 0);
    assert_eq!(ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 3, 0), 1);
    assert_eq!(
        ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 0x8000_0000, 0),
        500_000_000
    );
    // Timestamp 0 read near 1900 is 1900 itself (near 1970 it would be 2036).
    let y1900 = -NTP_UNIX_OFFSET_S * NS_PER_S;
    assert_eq!(ntp_to_unix_ns(0, y1900 + NS_PER_S), y1900);
}

#[test]
fn round_trip_is_exact_to_the_ns() {
    // ns -> 2^-32 s -> ns loses less than 0.12 ns + rounding: always the same ns back.
    let now = i128::from(realtime_ns());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..200_000i128 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ns = now + i128::from(x % 4_000_000_000_000) - 2_000_000_000_000 + i;
        assert_eq!(ntp_to_unix_ns(unix_ns_to_ntp(ns), now), ns, "{ns}");
    }
    for sub in [0, 1, 2, 499_999_999, 500_000_000, 999_999_998, 999_999_999] {
        let ns = 1_700_000_000 * NS_PER_S + sub;
        assert_eq!(ntp_to_unix_ns(unix_ns_to_ntp(ns), ns), ns);
    }
}

#[test]
fn era_wrap_in_2036() {
    // Era 1 begins 2036-02-07T06:28:16Z = Unix 2085978496 s.
    let era1_unix_s: i128 = (1 << 32) - NTP_UNIX_OFFSET_S;
    assert_eq!(era1_unix_s, 2_085_978_496);
    let just_after = era1_unix_s * NS_PER_S + 250_000_000;
    assert_eq!(unix_ns_to_ntp(just_after), 0x4000_0000);
    // The same timestamp read near 2036 is in era 1; read near 1950, in era 0 (1900).
    assert_eq!(
        ntp_to_unix_ns(0x4000_0000, just_after - 10 * NS_PER_S),
        just_after
    );
    // (1970 itself is nearer to 2036 than to 1900: the pivot decides, not the epoch.)
    assert_eq!(ntp_to_unix_ns(0x4000_0000, 0), just_after);
    let y1950 = -20 * 365 * 86_400 * NS_PER_S;
    assert_eq!(
        ntp_to_unix_ns(0x4000_0000, y1950),
        -NTP_UNIX_OFFSET_S * NS_PER_S + 250_000_000
    );
    let just_before = era1_unix_s * NS_PER_S - 1;
    assert_eq!(
        ntp_to_unix_ns(unix_ns_to_ntp(just_before), just_after),
        just_before
    );
}

/// A leap second at a midnight: announced until it, then applied as a kernel does.
#[test]
fn ref_clock_leap_second() {
    let midnight_s = 1_798_761_600; // 2027-01-01T00:00:00Z
                                    // The reference reads 10 s before the midnight at raw 0.
    let base = RefClock {
        k_ns: (midnight_s - 10) * 1_000_000_000,
        raw0_ns: 0,
        offset_ns: 0,
        freq_ppm: 0.0,
        leap: None,
        steps: Vec::new(),
    };
    let s = |n: i64| n * 1_000_000_000;
    let inserted = RefClock {
        leap: Some((midnight_s, 1)),
        ..base.clone()
    };
    assert_eq!(inserted.at(s(9)), base.at(s(9)));
    assert_eq!(inserted.leap_indicator(1, s(9)), 1);
    // 23:59:59 twice: at the midnight the reference reads 23:59:59 again.
    assert_eq!(inserted.at(s(10)), i128::from(midnight_s - 1) * NS_PER_S);
    assert_eq!(inserted.at(s(11)), i128::from(midnight_s) * NS_PER_S);
    assert_eq!(inserted.leap_indicator(1, s(10)), 0);
    // Deleted: 23:59:59 is skipped, a second before the midnight.
    let deleted = RefClock {
        leap: Some((midnight_s, -1)),
        ..base.clone()
    };
    assert_eq!(deleted.at(s(8)), base.at(s(8)));
    assert_eq!(deleted.at(s(9)), i128::from(midnight_s) * NS_PER_S);
    assert_eq!(deleted.leap_indicator(2, s(9) - 1), 2);
    assert_eq!(deleted.leap_indicator(2, s(9)), 0);
    // The params carry it to `offset` and `watch`.
    let listen: SocketAddr = "127.0.0.1:123".parse().unwrap();
    let back = RefClock::from_json(&inserted.to_json(&listen)).unwrap();
    assert_eq!(back.leap, inserted.leap);
    assert_eq!(
        RefClock::from_json(&base.to_json(&listen)).unwrap().leap,
        None
    );
}

#[test]
fn ref_clock_formula() {
    let clock = RefClock {
        k_ns: 1_700_000_000 * 1_000_000_000 - 5_000_000_000,
        raw0_ns: 5_000_000_000,
        offset_ns: 11_000_000_000,
        freq_ppm: 0.0,
        leap: None,
        steps: Vec::new(),
    };
    // At raw0: realtime at start + offset.
    assert_eq!(
        clock.at(5_000_000_000),
        1_700_000_000 * NS_PER_S + 11 * NS_PER_S
    );
    assert_eq!(
        clock.at(6_000_000_000),
        1_700_000_001 * NS_PER_S + 11 * NS_PER_S
    );
    // +100 ppm: 100 µs more per second of raw time, nothing at raw0.
    let fast = RefClock {
        freq_ppm: 100.0,
        ..clock.clone()
    };
    assert_eq!(fast.at(5_000_000_000), clock.at(5_000_000_000));
    assert_eq!(
        fast.at(15_000_000_000),
        clock.at(15_000_000_000) + 1_000_000
    );
    // -12.5 ppm over 1000 s: 12.5 ms less; before raw0 the drift is the other way.
    let slow = RefClock {
        freq_ppm: -12.5,
        ..clock.clone()
    };
    assert_eq!(
        slow.at(1_005_000_000_000),
        clock.at(1_005_000_000_000) - 12_500_000
    );
    assert_eq!(slow.at(4_000_000_000), clock.at(4_000_000_000) + 12_500);
}

#[test]
fn ref_clock_started_now_is_offset_from_realtime() {
    let clock = RefClock::start(11_000_000_000, 0.0, None);
    let s = clock.sample_offset();
    // REALTIME - ref = -11 s, give or take the clock reads and any slew in progress.
    assert!(
        (s.offset_ns + 11_000_000_000).abs() < 1_000_000,
        "{}",
        s.offset_ns
    );
    assert_eq!(s.realtime_ns - s.ref_ns, s.offset_ns);
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cg-ntpref-test-{}-{name}", std::process::id()))
}

#[test]
fn params_file_round_trip_and_overwrite() {
    let path = temp_path("params.json");
    let addr: SocketAddr = "127.0.0.1:12345".parse().unwrap();
    let first = RefClock::start(-3_000_000_000, 7.25, None);
    write_atomically(&path, &first.to_json(&addr)).unwrap();
    assert_eq!(RefClock::load(&path).unwrap(), first);
    let second = RefClock::start(5, 0.0, None);
    write_atomically(&path, &second.to_json(&addr)).unwrap();
    assert_eq!(RefClock::load(&path).unwrap(), second);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["listen"], "127.0.0.1:12345");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn packet_encode_decode() {
    let p = Packet {
        leap: 1,
        version: 3,
        mode: 4,
        stratum: 2,
        poll: -3,
        precision: PRECISION,
        root_delay: 0x0001_8000,
        root_dispersion: ROOT_DISPERSION,
        refid: *b"CGRF",
        reference: 1,
        origin: 0x0102_0304_0506_0708,
        receive: u64::MAX,
        transmit: 42,
    };
    let b = p.encode();
    assert_eq!(b[0], 0b01_011_100);
    assert_eq!(b[3], 0xEC);
    assert_eq!(&b[12..16], b"CGRF");
    assert_eq!(Packet::decode(&b), Some(p));
    assert_eq!(Packet::decode(&b[..47]), None);
    assert_eq!(refid_text(*b"CGRF"), "CGRF");
    assert_eq!(refid_text(*b"GPS\0"), "GPS");
    assert_eq!(refid_text([127, 0, 0, 1]), "127.0.0.1");
    assert_eq!(parse_refid("GPS").unwrap(), *b"GPS\0");
    assert_eq!(parse_refid("10.1.2.3").unwrap(), [10, 1, 2, 3]);
    assert!(parse_refid("TOOLONG").is_err());
}

#[test]
fn server_answers_only_client_requests() {
    let server = Server {
        clock: Params::fixed(RefClock::start(0, 0.0, None)),
        stratum: 1,
        refid: *b"CGRF",
        leap: 0,
        hostile_every: 0,
    };
    let mut req = [0u8; PACKET_LEN];
    req[0] = 3 << 3 | 3; // v3, mode 3
    req[2] = 10;
    req[40..48].copy_from_slice(&0xDEAD_BEEF_0000_0001u64.to_be_bytes());
    let rx = 1_700_000_000 * NS_PER_S + 750_000_000;
    let reply = server.reply(&req, rx, server.leap).unwrap();
    assert_eq!((reply.mode, reply.version, reply.stratum), (4, 3, 1));
    assert_eq!(reply.poll, 10);
    assert_eq!(reply.origin, 0xDEAD_BEEF_0000_0001);
    assert_eq!(reply.receive, unix_ns_to_ntp(rx));
    assert_eq!(reply.reference >> 32, reply.receive >> 32);
    // A MAC or extension field behind the header is fine.
    let mut long = req.to_vec();
    long.extend_from_slice(&[0; 20]);
    assert!(server.reply(&long, rx, server.leap).is_some());
    // Ignored: short, unaligned, other modes, version 0 and 5..7.
    assert!(server.reply(&req[..47], rx, server.leap).is_none());
    assert!(server
        .reply(&[req.as_slice(), &[0]].concat(), rx, server.leap)
        .is_none());
    for mode in [0, 1, 2, 4, 5, 6, 7] {
        req[0] = 4 << 3 | mode;
        assert!(server.reply(&req, rx, server.leap).is_none(), "mode {mode}");
    }
    for version in [0, 5, 6, 7] {
        req[0] = version << 3 | 3;
        assert!(
            server.reply(&req, rx, server.leap).is_none(),
            "version {version}"
        );
    }
}

/// A server on an ephemeral loopback port in a thread, stopped when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<ServeCounts>>,
}

impl TestServer {
    fn start(offset_ns: i64, leap: u8, hostile_every: u64) -> TestServer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            clock: Params::fixed(RefClock::start(offset_ns, 0.0, None)),
            stratum: 1,
            refid: *b"CGRF",
            leap,
            hostile_every,
        };
        let flag = stop.clone();
        let thread = std::thread::spawn(move || server.serve(&sock, &flag).unwrap());
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> ServeCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn loopback_query_measures_the_offset() {
    let server = TestServer::start(5_000_000_000, 0, 0);
    let (report, ok) = query(server.addr, 4, Duration::from_secs(1), QUERY_SPACING);
    println!("loopback query, server 5 s ahead: {report}");
    assert!(ok, "{report}");
    assert_eq!(report["replies"], 4, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let offset = report["offset_ns"].as_i64().unwrap();
    assert!(
        (offset - 5_000_000_000).abs() < 5_000_000,
        "offset {offset} ns, not 5 s ± 5 ms: {report}"
    );
    let delay = report["delay_ns"].as_i64().unwrap();
    assert!((0..5_000_000).contains(&delay), "{report}");
    assert_eq!(report["stratum"], 1);
    assert_eq!(report["refid"], "CGRF");
    assert_eq!(report["leap"], 0);
    assert_eq!(report["version"], 4);
    assert_eq!(report["reply_len"], 48);

    // Malformed datagrams get no answer; a well-formed one does.
    let timeout = Duration::from_millis(300);
    let v = query_raw(server.addr, &[0x1b; 47], timeout);
    assert_eq!(v["reply"], false, "{v}");
    let mut mode1 = [0u8; 48];
    mode1[0] = 4 << 3 | 1;
    assert_eq!(query_raw(server.addr, &mode1, timeout)["reply"], false);
    let mut ok_req = [0u8; 48];
    ok_req[0] = 4 << 3 | 3;
    let v = query_raw(server.addr, &ok_req, timeout);
    assert_eq!(
        (v["reply"].clone(), v["reply_len"].clone()),
        (json!(true), json!(48))
    );

    let counts = server.stop();
    assert_eq!((counts.served, counts.ignored), (5, 2), "{counts:?}");
}

#[test]
fn a_hostile_server_sends_bad_datagrams_that_a_careful_client_skips() {
    let server = TestServer::start(1_000_000_000, 0, 1);
    let (report, ok) = query(server.addr, 2, Duration::from_secs(1), QUERY_SPACING);
    assert!(ok, "{report}");
    assert_eq!(report["replies"], 2, "{report}");
    let offset = report["offset_ns"].as_i64().unwrap();
    assert!((offset - 1_000_000_000).abs() < 5_000_000, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    let counts = server.stop();
    assert_eq!((counts.served, counts.hostile), (2, 2), "{counts:?}");
}

#[test]
fn query_rejects_an_unsynchronised_server() {
    let server = TestServer::start(0, LEAP_UNSYNC, 0);
    let (report, ok) = query(server.addr, 1, Duration::from_millis(500), QUERY_SPACING);
    assert!(!ok, "{report}");
    assert_eq!(report["replies"], 0);
    assert!(report["errors"][0]
        .as_str()
        .unwrap()
        .contains("unsynchronised"));
    server.stop();
}

#[test]
fn watch_stops_at_the_stopfile_or_when_converged() {
    let far = RefClock::start(-2_000_000_000, 0.0, None);
    let stopfile = temp_path("stop");
    std::fs::write(&stopfile, b"").unwrap();
    let v = watch(
        &far,
        1_000_000,
        &stopfile,
        Duration::from_millis(10),
        Duration::ZERO,
    );
    std::fs::remove_file(&stopfile).unwrap();
    assert_eq!(v["converged"], false, "{v}");
    assert_eq!(v["converged_after_s"], Value::Null);
    assert_eq!(v["stopped_by"], "stopfile");
    assert!((v["final_offset_ns"].as_i64().unwrap() - 2_000_000_000).abs() < 1_000_000);

    let near = RefClock::start(0, 0.0, None);
    let v = watch(
        &near,
        1_000_000,
        &temp_path("absent"),
        Duration::from_millis(10),
        Duration::from_millis(100),
    );
    assert_eq!(v["converged"], true, "{v}");
    // The first sample was already below the limit.
    assert!(v["converged_after_s"].as_f64().unwrap() < 0.01, "{v}");
    assert!(v["samples"].as_u64().unwrap() >= 11, "{v}");
    assert!(v["max_abs_offset_after_converged_ns"].as_i64().unwrap() < 1_000_000);
}

#[test]
fn command_line_errors() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(run(&args("")).is_err());
    assert!(run(&args("bogus")).is_err());
    assert!(run(&args("serve --params /nonexistent/x")).is_err());
    assert!(run(&args("serve --listen 127.0.0.1:0 --params p --leap maybe")).is_err());
    // --leap-at must be a midnight and come with a leap to apply.
    let serve = "serve --listen 127.0.0.1:0 --params /nonexistent/p";
    let err = run(&args(&format!("{serve} --leap ins --leap-at 1798761601"))).unwrap_err();
    assert!(err.contains("not a midnight"), "{err}");
    let err = run(&args(&format!("{serve} --leap-at 1798761600"))).unwrap_err();
    assert!(err.contains("needs --leap ins"), "{err}");
    assert!(run(&args("query")).is_err());
    assert!(run(&args("query 127.0.0.1:1 --count x")).is_err());
    assert!(run(&args("query 127.0.0.1:1 --raw-bytes 1b0")).is_err());
    assert!(run(&args("watch --params p --until-abs-ns 0 --stopfile s")).is_err());
    assert!(run(&args("offset --params /nonexistent/params.json")).is_err());
    assert_eq!(parse_hex("1b 00:ff").unwrap(), vec![0x1b, 0, 0xff]);
    assert_eq!(seconds_to_ns("x", "-0.25").unwrap(), -250_000_000);
    assert_eq!(seconds_to_ns("x", "11").unwrap(), 11_000_000_000);
}

/// `step` adds a step to the params ahead of time; the clock applies it from then on, and
/// a reader of the params (`Params`) picks the new file up.
#[test]
fn a_step_is_scheduled_in_the_params_and_reloaded() {
    let path = temp_path("step.json");
    let addr: SocketAddr = "127.0.0.1:12345".parse().unwrap();
    write_atomically(&path, &RefClock::start(0, 0.0, None).to_json(&addr)).unwrap();
    let mut params = Params::load(&path).unwrap();
    let before = params.current().clone();
    let args = |a: &[&str]| a.iter().map(ToString::to_string).collect::<Vec<_>>();
    let p = path.to_str().unwrap();
    assert!(step_cmd(&args(&["--params", p, "--by-ns", "0"])).is_err());
    assert!(step_cmd(&args(&["--params", p, "--by-ns", "5", "--in-ms", "50"])).is_err());
    let out = step_cmd(&args(&[
        "--params",
        p,
        "--by-ns",
        "2000000000",
        "--in-ms",
        "1000",
    ]))
    .unwrap();
    let at = out["at_raw_ns"].as_i64().unwrap();
    // The file keeps what it had (the listen address) and gains the step.
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["listen"], "127.0.0.1:12345");
    let stepped = RefClock::load(&path).unwrap();
    assert_eq!(stepped.steps, vec![(at, 2_000_000_000)]);
    assert_eq!(stepped.at(at - 1), before.at(at - 1));
    assert_eq!(stepped.at(at), before.at(at) + 2 * NS_PER_S);
    // A second step adds to the first.
    let out = step_cmd(&args(&[
        "--params", p, "--by-ns", "-500", "--in-ms", "1000",
    ]))
    .unwrap();
    let at2 = out["at_raw_ns"].as_i64().unwrap();
    assert_eq!(
        RefClock::load(&path).unwrap().at(at2),
        before.at(at2) + 2 * NS_PER_S - 500
    );
    // The reader sees the new file once it looks again.
    std::thread::sleep(Duration::from_millis(150));
    params.refresh().unwrap();
    assert_eq!(params.current().steps.len(), 2);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_relay_moves_both_server_timestamps_by_the_forged_amount() {
    let rx = unix_ns_to_ntp(1_800_000_000_000_000_000);
    let tx = unix_ns_to_ntp(1_800_000_000_000_250_000);
    let mut reply = [0u8; PACKET_LEN];
    reply[24..32].copy_from_slice(&7u64.to_be_bytes());
    reply[32..40].copy_from_slice(&rx.to_be_bytes());
    reply[40..48].copy_from_slice(&tx.to_be_bytes());
    assert!(forge_reply(&mut reply, 5_000_000_000));
    let at = |i: usize| u64::from_be_bytes(reply[i..i + 8].try_into().unwrap());
    assert_eq!(at(32), unix_ns_to_ntp(1_800_000_005_000_000_000));
    // 5 s is a whole number of seconds: the fraction is untouched, so exact.
    assert_eq!(at(40), tx + (5 << 32));
    assert_eq!(
        at(24),
        7,
        "the origin timestamp (the client's cookie) is kept"
    );
    // Backwards by half a second.
    assert_eq!(
        shift_timestamp(5 << 32, -500_000_000),
        (4 << 32) | 0x8000_0000
    );
    assert!(
        !forge_reply(&mut [0u8; 20], 5_000_000_000),
        "not an NTP reply"
    );
}
