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
mod tests;
