use super::*;

/// 2036-02-07T06:28:16Z, the first NTP era rollover, in Unix s.
const ROLLOVER_UNIX_S: i64 = 2_085_978_496;
const NS: i64 = 1_000_000_000;
/// 2026-01-15T12:00:00Z in Unix s.
const T2026_S: i64 = 1_768_478_400;

fn request_bytes() -> Vec<u8> {
    // A client request as captured: LI 3 (unsync), VN 4, mode 3; stratum 0; poll 6
    // (64 s); precision −20; root delay/dispersion, refid, reference, origin, receive
    // all zero; transmit 2026-01-15T12:00:00.5Z.
    #[rustfmt::skip]
    let b = vec![
        0xe3, 0x00, 0x06, 0xec,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xed, 0x13, 0x55, 0x40, 0x80, 0x00, 0x00, 0x00,
    ];
    b
}

fn reply_bytes() -> Vec<u8> {
    // The server's reply: LI 0, VN 4, mode 4; stratum 2; poll 6; precision −23; root
    // delay 0x02a3 (≈ 10.3 ms); root dispersion 0x051e (≈ 20 ms); refid 192.168.1.1;
    // reference 2026-01-15T11:59:54Z; origin = the request's transmit; receive
    // 12:00:00.501; transmit 12:00:00.501025.
    #[rustfmt::skip]
    let b = vec![
        0x24, 0x02, 0x06, 0xe9,
        0x00, 0x00, 0x02, 0xa3,
        0x00, 0x00, 0x05, 0x1e,
        0xc0, 0xa8, 0x01, 0x01,
        0xed, 0x13, 0x55, 0x3a, 0x00, 0x00, 0x00, 0x00,
        0xed, 0x13, 0x55, 0x40, 0x80, 0x00, 0x00, 0x00,
        0xed, 0x13, 0x55, 0x40, 0x80, 0x41, 0x89, 0x37,
        0xed, 0x13, 0x55, 0x40, 0x80, 0x43, 0x2c, 0xa5,
    ];
    b
}

fn sample_packet() -> Packet {
    Packet {
        leap: Leap::AddSecond,
        version: 4,
        mode: Mode::Server,
        stratum: 3,
        poll: -2,
        precision: -24,
        root_delay: NtpShort(0x0001_8000),
        root_dispersion: NtpShort(0x0000_0123),
        reference_id: *b"GPS\0",
        reference_ts: NtpTimestamp(0x0102_0304_0506_0708),
        origin_ts: NtpTimestamp(0x1112_1314_1516_1718),
        receive_ts: NtpTimestamp(0x2122_2324_2526_2728),
        transmit_ts: NtpTimestamp(0xf1f2_f3f4_f5f6_f7f8),
    }
}

#[test]
fn round_trip() {
    let p = sample_packet();
    let bytes = p.to_bytes();
    assert_eq!(bytes[0], 0b01_100_100);
    assert_eq!(bytes[2], 0xfe);
    assert_eq!(bytes[3], 0xe8);
    assert_eq!(Packet::parse(&bytes), Ok(p));
    for leap in 0..4 {
        for version in 1..=4 {
            for mode in 0..8 {
                let mut b = [0u8; HEADER_LEN];
                b[0] = (leap << 6) | (version << 3) | mode;
                let p = Packet::parse(&b).unwrap();
                assert_eq!(p.leap.bits(), leap);
                assert_eq!(p.version, version);
                assert_eq!(p.mode.bits(), mode);
                assert_eq!(p.to_bytes(), b);
            }
        }
    }
}

#[test]
fn captured_request_and_reply() {
    let req = Packet::parse(&request_bytes()).unwrap();
    let t1 = NtpTimestamp::from_unix_ns(T2026_S * NS + 500_000_000);
    assert_eq!(
        req,
        Packet {
            precision: -20,
            ..Packet::client_request(t1, 6)
        }
    );
    assert_eq!(req.kiss_code(), None);
    assert_eq!(req.to_bytes().to_vec(), request_bytes());

    let rep = Packet::parse(&reply_bytes()).unwrap();
    assert_eq!(rep.leap, Leap::None);
    assert_eq!(rep.version, 4);
    assert_eq!(rep.mode, Mode::Server);
    assert_eq!(rep.stratum, 2);
    assert_eq!(rep.poll, 6);
    assert_eq!(rep.precision, -23);
    assert!((rep.root_delay.to_secs_f64() - 0.010_3).abs() < 1e-4);
    assert!((rep.root_dispersion.to_secs_f64() - 0.020).abs() < 1e-4);
    assert_eq!(rep.reference_id, [192, 168, 1, 1]);
    assert_eq!(rep.kiss_code(), None);
    let pivot = T2026_S * NS;
    assert_eq!(rep.reference_ts.to_unix_ns(pivot), (T2026_S - 6) * NS);
    assert_eq!(rep.origin_ts, req.transmit_ts);
    assert_eq!(rep.receive_ts.to_unix_ns(pivot), T2026_S * NS + 501_000_000);
    assert_eq!(
        rep.transmit_ts.to_unix_ns(pivot),
        T2026_S * NS + 501_025_000
    );
    assert_eq!(rep.transmit_ts.diff_ns(rep.receive_ts), 25_000);
    assert_eq!(rep.to_bytes().to_vec(), reply_bytes());
}

#[test]
fn client_request_layout() {
    let t = NtpTimestamp(0x0123_4567_89ab_cdef);
    let b = Packet::client_request(t, 10).to_bytes();
    assert_eq!(b[0], 0xe3);
    assert_eq!(b[1], 0);
    assert_eq!(b[2], 10);
    assert!(b[3..40].iter().all(|&x| x == 0));
    assert_eq!(&b[40..], &t.0.to_be_bytes());
}

#[test]
fn unix_ns_precision_2026() {
    let ns = T2026_S * NS + 123_456_789;
    let ts = NtpTimestamp::from_unix_ns(ns);
    assert_eq!(i64::from(ts.seconds()), T2026_S + 2_208_988_800);
    // The fraction is the nearest 2^-32 s: within half a unit (0.117 ns).
    let exact = 0.123_456_789 * 4_294_967_296.0;
    assert!((f64::from(ts.fraction()) - exact).abs() <= 0.5 + 1e-6);
    assert_eq!(ts.to_unix_ns(ns), ns);
    // Every ns in a stretch of 2026 survives the round trip exactly (< 1 ns error).
    for i in 0..10_000 {
        let ns = T2026_S * NS + 999_990_000 + i;
        assert_eq!(NtpTimestamp::from_unix_ns(ns).to_unix_ns(T2026_S * NS), ns);
    }
    // Rounding to the nearest unit, not truncating: 1 ns is 4.29 units.
    assert_eq!(
        NtpTimestamp::from_unix_ns(1).diff_ns(NtpTimestamp::from_unix_ns(0)),
        1
    );
    assert_eq!(NtpTimestamp::from_unix_ns(0).fraction(), 0);
    assert_eq!(NtpTimestamp::from_unix_ns(1).fraction(), 4);
    assert_eq!(NtpTimestamp::from_unix_ns(3).fraction(), 13);
}

#[test]
fn round_trip_everywhere_with_own_pivot() {
    for ns in [
        i64::MIN,
        i64::MIN + 1,
        -2_208_988_800 * NS - 1, // just before 1900
        -2_208_988_800 * NS,
        -1,
        0,
        1,
        ROLLOVER_UNIX_S * NS - 1,
        ROLLOVER_UNIX_S * NS,
        i64::MAX - 1,
        i64::MAX,
    ] {
        assert_eq!(NtpTimestamp::from_unix_ns(ns).to_unix_ns(ns), ns, "{ns}");
        // A pivot decades away still picks the right era.
        let pivot = ns.saturating_add(50 * 365 * 86_400 * NS);
        assert_eq!(NtpTimestamp::from_unix_ns(ns).to_unix_ns(pivot), ns, "{ns}");
        let pivot = ns.saturating_sub(50 * 365 * 86_400 * NS);
        assert_eq!(NtpTimestamp::from_unix_ns(ns).to_unix_ns(pivot), ns, "{ns}");
    }
}

#[test]
fn era_rollover_2036() {
    let at = NtpTimestamp::from_unix_ns(ROLLOVER_UNIX_S * NS);
    assert_eq!(at, NtpTimestamp::ZERO);
    let before = NtpTimestamp::from_unix_ns(ROLLOVER_UNIX_S * NS - NS);
    assert_eq!(before, NtpTimestamp(0xffff_ffff_0000_0000));
    let after = NtpTimestamp::from_unix_ns(ROLLOVER_UNIX_S * NS + NS);
    assert_eq!(after, NtpTimestamp(0x0000_0001_0000_0000));

    // Pivot in 2026: both sides of the rollover resolve to 2036.
    let pivot = T2026_S * NS;
    assert_eq!(before.to_unix_ns(pivot), (ROLLOVER_UNIX_S - 1) * NS);
    assert_eq!(at.to_unix_ns(pivot), ROLLOVER_UNIX_S * NS);
    assert_eq!(after.to_unix_ns(pivot), (ROLLOVER_UNIX_S + 1) * NS);
    // Pivot after the rollover (2040): same answers.
    let pivot = (ROLLOVER_UNIX_S + 4 * 365 * 86_400) * NS;
    assert_eq!(before.to_unix_ns(pivot), (ROLLOVER_UNIX_S - 1) * NS);
    assert_eq!(after.to_unix_ns(pivot), (ROLLOVER_UNIX_S + 1) * NS);
    // A small era-1 value is 1900 for a pivot in 1930.
    let pivot = (-2_208_988_800 + 30 * 365 * 86_400) * NS;
    assert_eq!(after.to_unix_ns(pivot), (-2_208_988_800 + 1) * NS);

    // The pivot halfway between 1900 and 2036 (2^31 s after 1900) decides the era.
    let halfway_s = -2_208_988_800 + (1i64 << 31);
    assert_eq!(at.to_unix_ns((halfway_s - 1) * NS), -2_208_988_800 * NS);
    assert_eq!(at.to_unix_ns((halfway_s + 1) * NS), ROLLOVER_UNIX_S * NS);
}

#[test]
fn diff_ns_across_eras() {
    let before = NtpTimestamp::from_unix_ns(ROLLOVER_UNIX_S * NS - 250_000_000);
    let after = NtpTimestamp::from_unix_ns(ROLLOVER_UNIX_S * NS + 750_000_000);
    assert_eq!(after.diff_ns(before), 1_000_000_000);
    assert_eq!(before.diff_ns(after), -1_000_000_000);
    assert_eq!(after.diff_ns(after), 0);
    // Sub-unit precision in differences: within 1 ns.
    let a = NtpTimestamp::from_unix_ns(T2026_S * NS + 17);
    let b = NtpTimestamp::from_unix_ns(T2026_S * NS + 5);
    assert_eq!(a.diff_ns(b), 12);
    // Large differences: 60 years either way (|d| < 68 years).
    let sixty_years = 60 * 365 * 86_400 * NS;
    let x = NtpTimestamp::from_unix_ns(T2026_S * NS);
    let y = NtpTimestamp::from_unix_ns(T2026_S * NS + sixty_years);
    assert_eq!(y.diff_ns(x), sixty_years);
    assert_eq!(x.diff_ns(y), -sixty_years);
}

#[test]
fn short_format() {
    assert_eq!(NtpShort::from_secs_f64(0.0), NtpShort(0));
    assert_eq!(NtpShort::from_secs_f64(1.5), NtpShort(0x0001_8000));
    assert_eq!(NtpShort::from_secs_f64(1.0 / 65536.0), NtpShort(1));
    assert_eq!(NtpShort::from_secs_f64(0.4 / 65536.0), NtpShort(0));
    assert_eq!(NtpShort::from_secs_f64(0.6 / 65536.0), NtpShort(1));
    assert_eq!(NtpShort::from_secs_f64(-1.0), NtpShort(0));
    assert_eq!(NtpShort::from_secs_f64(f64::NAN), NtpShort(0));
    assert_eq!(NtpShort::from_secs_f64(f64::NEG_INFINITY), NtpShort(0));
    assert_eq!(NtpShort::from_secs_f64(65536.0), NtpShort(u32::MAX));
    assert_eq!(NtpShort::from_secs_f64(1e12), NtpShort(u32::MAX));
    assert_eq!(NtpShort::from_secs_f64(f64::INFINITY), NtpShort(u32::MAX));
    assert_eq!(NtpShort(0x0001_8000).to_secs_f64(), 1.5);
    assert_eq!(NtpShort(u32::MAX).to_secs_f64(), 65536.0 - 1.0 / 65536.0);
    for ms in [0.0, 0.25, 1.0, 10.3, 999.9] {
        let s = ms / 1000.0;
        assert!((NtpShort::from_secs_f64(s).to_secs_f64() - s).abs() <= 0.5 / 65536.0);
    }
}

#[test]
fn kiss_o_death() {
    let mut p = Packet::parse(&reply_bytes()).unwrap();
    p.stratum = 0;
    for code in [*b"RATE", *b"DENY", *b"RSTR"] {
        p.reference_id = code;
        let parsed = Packet::parse(&p.to_bytes()).unwrap();
        assert_eq!(parsed.kiss_code(), Some(code));
    }
    // Stratum 0 in a client request is not a kiss.
    let req = Packet::client_request(NtpTimestamp(1), 6);
    assert_eq!(req.stratum, 0);
    assert_eq!(req.kiss_code(), None);
    // A server at stratum 1 with an ASCII refid is not a kiss either.
    p.stratum = 1;
    p.reference_id = *b"GPS\0";
    assert_eq!(p.kiss_code(), None);
}

#[test]
fn error_too_short() {
    assert_eq!(Packet::parse(&[]), Err(ParseError::TooShort { len: 0 }));
    assert_eq!(
        Packet::parse(&request_bytes()[..47]),
        Err(ParseError::TooShort { len: 47 })
    );
    let msg = ParseError::TooShort { len: 47 }.to_string();
    assert!(msg.contains("47") && msg.contains("48"), "{msg}");
}

#[test]
fn error_bad_version() {
    for v in [0u8, 5, 6, 7] {
        let mut b = request_bytes();
        b[0] = (b[0] & !0b0011_1000) | (v << 3);
        assert_eq!(Packet::parse(&b), Err(ParseError::BadVersion(v)));
    }
    let msg = ParseError::BadVersion(5).to_string();
    assert!(msg.contains('5') && msg.contains("byte 0"), "{msg}");
}

#[test]
fn error_bad_length() {
    for extra in [1usize, 2, 3, 5, 21] {
        let mut b = request_bytes();
        b.resize(HEADER_LEN + extra, 0);
        assert_eq!(
            Packet::parse(&b),
            Err(ParseError::BadLength {
                len: HEADER_LEN + extra
            })
        );
    }
    let msg = ParseError::BadLength { len: 49 }.to_string();
    assert!(msg.contains("49") && msg.contains("multiple of 4"), "{msg}");
}

fn with_trailer(trailer: &[u8]) -> Vec<u8> {
    let mut b = request_bytes();
    b.extend_from_slice(trailer);
    b
}

/// An extension field of `len` bytes (type 0x0104, zero body) with `len` in its header.
fn ext(len: usize) -> Vec<u8> {
    ext_claiming(len, len as u16)
}

/// `size` bytes that claim to be an extension field of `claimed` bytes.
fn ext_claiming(size: usize, claimed: u16) -> Vec<u8> {
    let mut e = vec![0u8; size];
    e[..2].copy_from_slice(&0x0104u16.to_be_bytes());
    e[2..4].copy_from_slice(&claimed.to_be_bytes());
    e
}

#[test]
fn extension_fields_and_mac() {
    let want = Packet::parse(&request_bytes()).unwrap();
    let mac = |n: usize| {
        let mut m = vec![0xa5u8; n];
        m[..4].copy_from_slice(&7u32.to_be_bytes()); // key id
        m
    };
    let good: Vec<Vec<u8>> = vec![
        vec![0; 4],                             // crypto-NAK
        mac(20),                                // key id + MD5
        mac(24),                                // key id + SHA-1
        ext(16),                                // one minimal field
        ext(28),                                // RFC 7822's last field without MAC
        [ext(16), ext(32), ext(16)].concat(),   // several fields
        [ext(16), mac(20)].concat(),            // field + MD5 MAC
        [ext(40), mac(24)].concat(),            // field + SHA-1 MAC
        [ext(16), vec![0; 4]].concat(),         // field + crypto-NAK
        [ext(20), ext(20), mac(20)].concat(),   // 20-byte fields before the MAC
        [ext(1000), ext(16), mac(24)].concat(), // a long field (e.g. NTS cookie)
    ];
    for (i, t) in good.iter().enumerate() {
        assert_eq!(
            Packet::parse(&with_trailer(t)).as_ref(),
            Ok(&want),
            "case {i}"
        );
    }
}

#[test]
fn error_bad_extension() {
    let h = HEADER_LEN;
    let bad: Vec<(Vec<u8>, usize)> = vec![
        (vec![0; 8], h),                         // too short for a field, not a MAC
        (vec![0; 12], h),                        // ditto
        (ext_claiming(16, 12), h),               // field length < 16
        (ext_claiming(16, 0), h),                // field length 0
        (ext_claiming(32, 18), h),               // field length not a multiple of 4
        (ext_claiming(16, 32), h),               // field runs past the end
        ([ext(16), zeros(12)].concat(), h + 16), // junk after a field
        ([ext(16), ext_claiming(16, 20)].concat(), h + 16), // 2nd field past the end
        ([ext(16), zeros(28)].concat(), h + 16), // no 28-byte MAC
    ];
    for (i, (t, offset)) in bad.iter().enumerate() {
        assert_eq!(
            Packet::parse(&with_trailer(t)),
            Err(ParseError::BadExtension { offset: *offset }),
            "case {i}"
        );
    }
    let msg = ParseError::BadExtension { offset: 64 }.to_string();
    assert!(msg.contains("offset 64"), "{msg}");
    // The errors are std errors.
    let e: Box<dyn std::error::Error> = Box::new(ParseError::BadExtension { offset: 48 });
    assert!(e.to_string().contains("48"));
}

/// `n` zero bytes: a field of length 0 if `n` >= 4.
fn zeros(n: usize) -> Vec<u8> {
    vec![0u8; n]
}
