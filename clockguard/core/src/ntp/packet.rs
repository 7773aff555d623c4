//! The NTPv4 packet (RFC 5905 §7.3), sans-IO: parsing and encoding of the 48-byte header
//! (through `bytes`' `Buf`/`BufMut`, which keep the offsets and the byte order), the 64-bit
//! timestamp and 32-bit short formats, and the era arithmetic around them.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |LI | VN  |Mode |    Stratum    |     Poll      |   Precision   |  0
//! |                          Root Delay                           |  4
//! |                       Root Dispersion                         |  8
//! |                          Reference ID                         | 12
//! |                     Reference Timestamp (64)                  | 16
//! |                      Origin Timestamp (64)                    | 24
//! |                      Receive Timestamp (64)                   | 32
//! |                      Transmit Timestamp (64)                  | 40
//! |          Extension fields, MAC (optional, ignored)            | 48
//! ```

use std::fmt;

use bytes::{Buf, BufMut};

/// Length (bytes) of the NTP header; every packet has at least this much.
pub const HEADER_LEN: usize = 48;

/// Seconds from the NTP epoch (1900-01-01T00:00:00Z) to the Unix epoch.
const NTP_UNIX_OFFSET_S: i128 = 2_208_988_800;
const NS_PER_S: i128 = 1_000_000_000;
/// The Unix epoch in ns since the NTP epoch (era 0).
const NTP_UNIX_OFFSET_NS: i128 = NTP_UNIX_OFFSET_S * NS_PER_S;

/// Longest MAC trailer (bytes): key id (4) + SHA-1 digest (20).
const MAC_SHA1_LEN: usize = 24;
/// MAC trailer with an MD5 digest (bytes): key id (4) + 16.
const MAC_MD5_LEN: usize = 20;
/// Crypto-NAK trailer (bytes): a key id of zero alone.
const CRYPTO_NAK_LEN: usize = 4;
/// Shortest extension field (bytes, RFC 7822 §3).
const MIN_EXTENSION_LEN: usize = 16;

/// `x / d` rounded to the nearest integer (halves up), for `d > 0`.
fn div_round(x: i128, d: i128) -> i128 {
    (x + d / 2).div_euclid(d)
}

/// 64-bit NTP timestamp: seconds since 1900 (era-relative) << 32 | fraction.
///
/// One unit is 2^-32 s (≈ 0.233 ns); the value wraps every 2^32 s (≈ 136 years), first on
/// 2036-02-07T06:28:16Z (the start of era 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The all-zero timestamp, which NTP uses for "unknown / not set".
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    /// The timestamp of `ns` nanoseconds since the Unix epoch, rounded to the nearest
    /// 2^-32 s. Times before 1900 or from 2036 on are reduced into the era.
    pub fn from_unix_ns(ns: i64) -> NtpTimestamp {
        let units = div_round((i128::from(ns) + NTP_UNIX_OFFSET_NS) << 32, NS_PER_S);
        // Truncation to the low 64 bits is the reduction modulo one era.
        NtpTimestamp(units as u64)
    }

    /// The Unix time in ns this timestamp denotes, choosing the NTP era that puts it
    /// nearest to `pivot_unix_ns` (handles the 2036 era rollover).
    ///
    /// Rounds to the nearest ns; saturates at the ends of `i64` (years 1677 and 2262).
    pub fn to_unix_ns(self, pivot_unix_ns: i64) -> i64 {
        // The pivot, in units since the NTP epoch of era 0 (not reduced to an era).
        let pivot = div_round(
            (i128::from(pivot_unix_ns) + NTP_UNIX_OFFSET_NS) << 32,
            NS_PER_S,
        );
        // Signed distance (units) from the pivot to self within one era: |d| <= 2^63.
        let d = self.0.wrapping_sub(pivot as u64) as i64;
        let units = pivot + i128::from(d);
        let ns = div_round(units * NS_PER_S, 1 << 32) - NTP_UNIX_OFFSET_NS;
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    #[cfg(test)]
    /// Signed difference self − other in ns, wrapping correctly across eras (the answer
    /// is the one with |d| < 68 years). Rounds to the nearest ns.
    pub fn diff_ns(self, other: NtpTimestamp) -> i64 {
        let d = self.0.wrapping_sub(other.0) as i64;
        // |d| <= 2^63 units = 2^31 s, well inside i64 in ns.
        div_round(i128::from(d) * NS_PER_S, 1 << 32) as i64
    }

    #[cfg(test)]
    /// The seconds field (era-relative seconds since 1900).
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    #[cfg(test)]
    /// The fraction field (units of 2^-32 s).
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }
}

/// 32-bit NTP short format: 16.16 seconds (root delay / dispersion).
///
/// One unit is 2^-16 s (≈ 15.3 µs); the largest value is 65536 s − 1 unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NtpShort(pub u32);

impl NtpShort {
    /// `s` seconds, rounded to the nearest 2^-16 s; saturating at the largest value, and
    /// negative values (and NaN) give 0.
    pub fn from_secs_f64(s: f64) -> NtpShort {
        let units = (s * 65536.0).round();
        if units.is_nan() || units <= 0.0 {
            NtpShort(0)
        } else if units >= f64::from(u32::MAX) {
            NtpShort(u32::MAX)
        } else {
            NtpShort(units as u32)
        }
    }

    /// The value in seconds.
    pub fn to_secs_f64(self) -> f64 {
        f64::from(self.0) / 65536.0
    }
}

/// Leap indicator (2 bits on the wire: 0..3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leap {
    /// 0: no warning.
    None,
    /// 1: the last minute of the day has 61 seconds.
    AddSecond,
    /// 2: the last minute of the day has 59 seconds.
    DeleteSecond,
    /// 3: the clock is unsynchronized.
    Unsynchronized,
}

impl Leap {
    /// The leap indicator of the low 2 bits of `bits`.
    pub fn from_bits(bits: u8) -> Leap {
        match bits & 0b11 {
            0 => Leap::None,
            1 => Leap::AddSecond,
            2 => Leap::DeleteSecond,
            _ => Leap::Unsynchronized,
        }
    }

    /// The 2-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Leap::None => 0,
            Leap::AddSecond => 1,
            Leap::DeleteSecond => 2,
            Leap::Unsynchronized => 3,
        }
    }
}

/// Association mode (3 bits on the wire: 0..7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Reserved,
    SymmetricActive,
    SymmetricPassive,
    Client,
    Server,
    Broadcast,
    /// NTP control message (mode 6, RFC 1305 appendix B / RFC 9327).
    Control,
    /// Reserved for private use (mode 7, ntpd's ntpdc).
    Private,
}

impl Mode {
    /// The mode of the low 3 bits of `bits`.
    pub fn from_bits(bits: u8) -> Mode {
        match bits & 0b111 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }

    /// The 3-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Mode::Reserved => 0,
            Mode::SymmetricActive => 1,
            Mode::SymmetricPassive => 2,
            Mode::Client => 3,
            Mode::Server => 4,
            Mode::Broadcast => 5,
            Mode::Control => 6,
            Mode::Private => 7,
        }
    }
}

/// The NTP header (RFC 5905 §7.3). Extension fields and MAC are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub leap: Leap,
    /// Version number, 1..=4 in a parsed packet (3 bits on the wire).
    pub version: u8,
    pub mode: Mode,
    /// 0 = unspecified / Kiss-o'-Death, 1 = primary, 2..=15 secondary, 16 = unsynchronized.
    pub stratum: u8,
    /// Poll interval, log2 s.
    pub poll: i8,
    /// Precision of the sender's clock, log2 s (e.g. −20 ≈ 1 µs).
    pub precision: i8,
    /// Round-trip delay to the reference clock (s, 16.16).
    pub root_delay: NtpShort,
    /// Dispersion to the reference clock (s, 16.16).
    pub root_dispersion: NtpShort,
    /// Reference id: an IPv4 address, a hash of an IPv6 address, a source code such as
    /// b"GPS\0" (stratum 1), or a kiss code (stratum 0).
    pub reference_id: [u8; 4],
    /// When the sender's clock was last set or corrected.
    pub reference_ts: NtpTimestamp,
    /// In a reply: the request's transmit timestamp (T1).
    pub origin_ts: NtpTimestamp,
    /// In a reply: when the server received the request (T2).
    pub receive_ts: NtpTimestamp,
    /// When the packet left the sender (T1 in a request, T3 in a reply).
    pub transmit_ts: NtpTimestamp,
}

/// Why a datagram is not an NTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than [`HEADER_LEN`] bytes.
    TooShort { len: usize },
    /// The version (bits 3..=5 of byte 0) is not 1..=4.
    BadVersion(u8),
    /// The datagram is not a multiple of 4 bytes long.
    BadLength { len: usize },
    /// The trailer after the header is neither extension fields nor a MAC: the field at
    /// byte `offset` of the datagram is malformed.
    BadExtension { offset: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort { len } => write!(
                f,
                "NTP packet too short: {len} bytes, the header alone is {HEADER_LEN} bytes"
            ),
            ParseError::BadVersion(v) => write!(
                f,
                "unsupported NTP version {v} (byte 0, bits 3-5): only versions 1 to 4 are accepted"
            ),
            ParseError::BadLength { len } => write!(
                f,
                "NTP packet length {len} bytes is not a multiple of 4 (extension fields and MAC \
                 after byte {HEADER_LEN} are whole 32-bit words)"
            ),
            ParseError::BadExtension { offset } => write!(
                f,
                "malformed NTP trailer at byte offset {offset}: neither an extension field \
                 (length >= {MIN_EXTENSION_LEN}, a multiple of 4, within the packet) nor a MAC \
                 ({CRYPTO_NAK_LEN}, {MAC_MD5_LEN} or {MAC_SHA1_LEN} bytes)"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Checks the trailer after the header (RFC 7822): extension fields (type 16 bits,
/// length 16 bits covering the whole field, >= 16 and a multiple of 4), then optionally a
/// MAC (key id + MD5 = 20 bytes, key id + SHA-1 = 24 bytes) or a crypto-NAK (4 bytes).
///
/// A remainder of exactly 4, 20 or 24 bytes is taken as the MAC (like ntpd: a final
/// extension field of 20 or 24 bytes is then accepted too, both being well-formed); any
/// other remainder must start with an extension field.
fn check_trailer(bytes: &[u8]) -> Result<(), ParseError> {
    let mut trailer = &bytes[HEADER_LEN..];
    loop {
        let offset = bytes.len() - trailer.remaining();
        match trailer.remaining() {
            0 | CRYPTO_NAK_LEN | MAC_MD5_LEN | MAC_SHA1_LEN => return Ok(()),
            rest if rest < MIN_EXTENSION_LEN => return Err(ParseError::BadExtension { offset }),
            rest => {
                // Field type (16 bits), then the field's whole length (16 bits).
                let len = usize::from((&trailer[2..4]).get_u16());
                if len < MIN_EXTENSION_LEN || !len.is_multiple_of(4) || len > rest {
                    return Err(ParseError::BadExtension { offset });
                }
                trailer.advance(len);
            }
        }
    }
}

impl Packet {
    /// Parses a datagram. Accepts versions 1..=4, the 48-byte header followed by NTPv4
    /// extension fields and/or a MAC (trailer ignored but must be well-formed: total length a
    /// multiple of 4; extension fields are type(16) length(16) with length >= 16, multiple of 4,
    /// not past the end; a trailing MAC of 20 or 24 bytes, or 4 bytes crypto-NAK).
    ///
    /// Checks in this order: length >= 48, version, length a multiple of 4, trailer.
    pub fn parse(bytes: &[u8]) -> Result<Packet, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::TooShort { len: bytes.len() });
        }
        let version = (bytes[0] >> 3) & 0b111;
        if !(1..=4).contains(&version) {
            return Err(ParseError::BadVersion(version));
        }
        if !bytes.len().is_multiple_of(4) {
            return Err(ParseError::BadLength { len: bytes.len() });
        }
        check_trailer(bytes)?;
        let mut header = &bytes[..HEADER_LEN];
        let first = header.get_u8();
        let stratum = header.get_u8();
        let poll = header.get_i8();
        let precision = header.get_i8();
        let root_delay = NtpShort(header.get_u32());
        let root_dispersion = NtpShort(header.get_u32());
        let mut reference_id = [0; 4];
        header.copy_to_slice(&mut reference_id);
        Ok(Packet {
            leap: Leap::from_bits(first >> 6),
            version,
            mode: Mode::from_bits(first),
            stratum,
            poll,
            precision,
            root_delay,
            root_dispersion,
            reference_id,
            reference_ts: NtpTimestamp(header.get_u64()),
            origin_ts: NtpTimestamp(header.get_u64()),
            receive_ts: NtpTimestamp(header.get_u64()),
            transmit_ts: NtpTimestamp(header.get_u64()),
        })
    }

    /// The 48-byte header on the wire. Only the low 3 bits of `version` are encoded.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        self.write_header(&mut &mut bytes[..]);
        bytes
    }

    /// Appends the 48-byte header to `out` (extension fields, when there are any, follow).
    pub fn write_header(&self, out: &mut impl BufMut) {
        out.put_u8((self.leap.bits() << 6) | ((self.version & 0b111) << 3) | self.mode.bits());
        out.put_u8(self.stratum);
        out.put_i8(self.poll);
        out.put_i8(self.precision);
        out.put_u32(self.root_delay.0);
        out.put_u32(self.root_dispersion.0);
        out.put_slice(&self.reference_id);
        out.put_u64(self.reference_ts.0);
        out.put_u64(self.origin_ts.0);
        out.put_u64(self.receive_ts.0);
        out.put_u64(self.transmit_ts.0);
    }

    /// A client request (mode 3, version 4) whose transmit timestamp is `transmit` (the client
    /// puts a random cookie there; the server echoes it as origin), all else zero/unsync.
    /// `poll` is the client's poll interval (log2 s).
    pub fn client_request(transmit: NtpTimestamp, poll: i8) -> Packet {
        Packet {
            leap: Leap::Unsynchronized,
            version: 4,
            mode: Mode::Client,
            stratum: 0,
            poll,
            precision: 0,
            root_delay: NtpShort(0),
            root_dispersion: NtpShort(0),
            reference_id: [0; 4],
            reference_ts: NtpTimestamp::ZERO,
            origin_ts: NtpTimestamp::ZERO,
            receive_ts: NtpTimestamp::ZERO,
            transmit_ts: transmit,
        }
    }

    /// Some(code) for a Kiss-o'-Death: mode Server, stratum 0; the code is reference_id as ASCII (e.g. b"RATE", b"DENY", b"RSTR").
    pub fn kiss_code(&self) -> Option<[u8; 4]> {
        (self.mode == Mode::Server && self.stratum == 0).then_some(self.reference_id)
    }
}

#[cfg(test)]
mod tests {
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
}
