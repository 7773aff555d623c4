//! The ClockBound shared-memory segment, protocol version 2: the format AWS ClockBound's
//! daemon writes at /var/run/clockbound/shm0 and its client libraries (the
//! `clock-bound-client` crate, libclockbound) read, so that applications that ask
//! "what is the earliest and latest it can be now" read clockguard's bound with no change.
//!
//! The segment is 80 bytes, native-endian, as the readers map it (`#[repr(C)]` structs):
//!
//! ```text
//! offset  size  field
//!      0     8  magic: 0x414D5A4E, 0x43420200 (two u32)
//!      8     4  segment size, bytes (u32)
//!     12     2  version (u16): 2
//!     14     2  generation (u16): a seqlock, odd while the writer is in the body, never 0
//!               once a body was written (0: not initialised yet)
//!     16    16  as_of: CLOCK_MONOTONIC timespec (i64 s, i64 ns) of the bound
//!     32    16  void_after: CLOCK_MONOTONIC timespec after which the bound is void
//!     48     8  bound_nsec (i64): |true time − CLOCK_REALTIME| at most this at as_of
//!     56     8  disruption_marker (u64)
//!     64     4  max_drift_ppb (u32): the bound grows this fast after as_of
//!     68     4  clock_status (i32): 0 Unknown, 1 Synchronized, 2 FreeRunning, 3 Disrupted
//!     72     1  clock disruption support (bool): readers then compare the marker with
//!               the hypervisor's vmclock device and distrust a segment that lags it
//!     73     7  padding
//! ```
//!
//! A reader takes CLOCK_REALTIME ± (bound_nsec + max_drift_ppb × (now − as_of)) and the
//! status, which it turns from Synchronized to FreeRunning when as_of is more than 5 s old
//! and to Unknown after void_after. This module encodes and decodes the bytes and keeps the
//! seqlock's generation rule; mapping the file is the system crate's.
//!
//! "CLOCK_MONOTONIC" in the protocol is CLOCK_MONOTONIC_COARSE on Linux: ClockBound's
//! reader takes `now` from it (clock-bound-shm's common.rs), and refuses a segment whose
//! as_of is more than 1 µs after its `now` (a causality breach). The coarse clock is the
//! monotonic clock as of the last tick (up to 4 ms behind at HZ=250), so an as_of read on
//! CLOCK_MONOTONIC would be refused for up to a tick after each update: as_of and
//! void_after must be read on CLOCK_MONOTONIC_COARSE too, and `Monotonic` instants here
//! are on it. A bound dated at the last tick is only larger for it.

use serde::{Deserialize, Serialize};

use crate::time::Monotonic;

/// The segment's first eight bytes, as two native-endian u32.
pub const MAGIC: [u32; 2] = [0x414D_5A4E, 0x4342_0200];
/// The protocol version this module writes and reads.
pub const VERSION: u16 = 2;
/// Header bytes (magic, size, version, generation).
pub const HEADER_SIZE: usize = 16;
/// Body bytes (the clock error bound).
pub const BODY_SIZE: usize = 64;
/// The whole segment, bytes.
pub const SEGMENT_SIZE: usize = HEADER_SIZE + BODY_SIZE;
/// Where the generation (u16) sits.
pub const GENERATION_OFFSET: usize = 14;
/// Where the version (u16) sits.
pub const VERSION_OFFSET: usize = 12;
/// How long a reader trusts a Synchronized or FreeRunning status after as_of without a
/// newer one (ClockBound's restart grace period), ns.
pub const READER_GRACE_NS: i64 = 5_000_000_000;

/// The clock's status, as the readers know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    /// Never synchronised, or the bound is void.
    Unknown = 0,
    /// Disciplined to its sources: the bound holds.
    Synchronized = 1,
    /// Sources lost: the bound still holds and grows at the maximum drift.
    FreeRunning = 2,
    /// The relation between CLOCK_MONOTONIC and true time broke (a step, a pause, a
    /// migration) and has not been measured again.
    Disrupted = 3,
}

impl ClockStatus {
    fn from_i32(value: i32) -> Option<ClockStatus> {
        Some(match value {
            0 => ClockStatus::Unknown,
            1 => ClockStatus::Synchronized,
            2 => ClockStatus::FreeRunning,
            3 => ClockStatus::Disrupted,
            _ => return None,
        })
    }
}

/// The clock error bound: the segment's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorBound {
    pub as_of: Monotonic,
    pub void_after: Monotonic,
    /// |true time − CLOCK_REALTIME| is at most this at `as_of`, ns (≥ 0).
    pub bound_ns: i64,
    pub disruption_marker: u64,
    /// The bound grows this fast after `as_of`, ppb (< 1e9).
    pub max_drift_ppb: u32,
    pub status: ClockStatus,
    pub disruption_support: bool,
}

impl ErrorBound {
    /// The body's bytes, as the readers lay out their `#[repr(C)]` struct.
    pub fn encode(&self) -> [u8; BODY_SIZE] {
        let mut body = [0u8; BODY_SIZE];
        let (as_of_s, as_of_ns) = timespec(self.as_of);
        let (void_s, void_ns) = timespec(self.void_after);
        body[0..8].copy_from_slice(&as_of_s.to_ne_bytes());
        body[8..16].copy_from_slice(&as_of_ns.to_ne_bytes());
        body[16..24].copy_from_slice(&void_s.to_ne_bytes());
        body[24..32].copy_from_slice(&void_ns.to_ne_bytes());
        body[32..40].copy_from_slice(&self.bound_ns.to_ne_bytes());
        body[40..48].copy_from_slice(&self.disruption_marker.to_ne_bytes());
        body[48..52].copy_from_slice(&self.max_drift_ppb.to_ne_bytes());
        body[52..56].copy_from_slice(&(self.status as i32).to_ne_bytes());
        body[56] = u8::from(self.disruption_support);
        body
    }

    /// The bound a reader computes at `now` (CLOCK_MONOTONIC): half the width of its
    /// [earliest, latest], ns, and the status it reports, as ClockBound's reader does.
    /// None when `now` is more than 1 µs before `as_of` (the reader's causality error).
    pub fn as_read_at(&self, now: Monotonic) -> Option<(i64, ClockStatus)> {
        let elapsed_ns = now.ns_since(self.as_of);
        if elapsed_ns < -1_000 {
            return None;
        }
        let elapsed_s = elapsed_ns.max(0) as f64 / 1e9;
        let grown_ns = (elapsed_s * f64::from(self.max_drift_ppb)) as i64;
        let status = match self.status {
            ClockStatus::Unknown | ClockStatus::Disrupted => self.status,
            ClockStatus::Synchronized | ClockStatus::FreeRunning => {
                if elapsed_ns < READER_GRACE_NS {
                    self.status
                } else if now < self.void_after {
                    ClockStatus::FreeRunning
                } else {
                    ClockStatus::Unknown
                }
            }
        };
        Some((self.bound_ns.saturating_add(grown_ns), status))
    }
}

/// A CLOCK_MONOTONIC instant as a timespec (s, ns); the clock is never negative.
fn timespec(at: Monotonic) -> (i64, i64) {
    (
        at.ns().div_euclid(1_000_000_000),
        at.ns().rem_euclid(1_000_000_000),
    )
}

/// The header of a segment this module writes, with `generation`.
pub fn encode_header(generation: u16) -> [u8; HEADER_SIZE] {
    let mut header = [0u8; HEADER_SIZE];
    header[0..4].copy_from_slice(&MAGIC[0].to_ne_bytes());
    header[4..8].copy_from_slice(&MAGIC[1].to_ne_bytes());
    header[8..12].copy_from_slice(&(SEGMENT_SIZE as u32).to_ne_bytes());
    header[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&VERSION.to_ne_bytes());
    header[GENERATION_OFFSET..GENERATION_OFFSET + 2].copy_from_slice(&generation.to_ne_bytes());
    header
}

/// What is wrong with a segment's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// Fewer bytes than a version-2 segment.
    Truncated { len: usize },
    /// Not a ClockBound segment.
    BadMagic,
    /// Another version of the protocol.
    Version(u16),
    /// The header says the segment is smaller than a header and body.
    BadSize(u32),
    /// No body was written yet (generation 0).
    NotInitialised,
    /// A writer is in the middle of the body (odd generation).
    BeingWritten,
    /// A status no version-2 writer uses.
    BadStatus(i32),
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentError::Truncated { len } => {
                write!(
                    f,
                    "{len} bytes, not the {SEGMENT_SIZE} of a version 2 segment"
                )
            }
            SegmentError::BadMagic => f.write_str("no ClockBound magic number"),
            SegmentError::Version(v) => write!(f, "protocol version {v}, not {VERSION}"),
            SegmentError::BadSize(size) => write!(f, "its header gives a size of {size} bytes"),
            SegmentError::NotInitialised => f.write_str("no bound written yet (generation 0)"),
            SegmentError::BeingWritten => f.write_str("a writer is in the middle of it"),
            SegmentError::BadStatus(s) => write!(f, "clock status {s} is none of 0..3"),
        }
    }
}

impl std::error::Error for SegmentError {}

/// Reads a segment's bytes (a consistent copy: the caller compares generations around its
/// copy, as a seqlock reader does). Returns the generation and the bound.
pub fn decode(bytes: &[u8]) -> Result<(u16, ErrorBound), SegmentError> {
    if bytes.len() < SEGMENT_SIZE {
        return Err(SegmentError::Truncated { len: bytes.len() });
    }
    let u16_at = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let i64_at = |at: usize| i64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if [u32_at(0), u32_at(4)] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u16_at(VERSION_OFFSET);
    if version != VERSION {
        return Err(SegmentError::Version(version));
    }
    let size = u32_at(8);
    if (size as usize) < SEGMENT_SIZE {
        return Err(SegmentError::BadSize(size));
    }
    let generation = u16_at(GENERATION_OFFSET);
    if generation == 0 {
        return Err(SegmentError::NotInitialised);
    }
    if !generation.is_multiple_of(2) {
        return Err(SegmentError::BeingWritten);
    }
    let body = HEADER_SIZE;
    let instant = |at: usize| {
        Monotonic::from_ns(
            i64_at(at)
                .saturating_mul(1_000_000_000)
                .saturating_add(i64_at(at + 8)),
        )
    };
    let raw_status = i32::from_ne_bytes(bytes[body + 52..body + 56].try_into().expect("4 bytes"));
    let status = ClockStatus::from_i32(raw_status).ok_or(SegmentError::BadStatus(raw_status))?;
    Ok((
        generation,
        ErrorBound {
            as_of: instant(body),
            void_after: instant(body + 16),
            bound_ns: i64_at(body + 32),
            disruption_marker: u64::from_ne_bytes(
                bytes[body + 40..body + 48].try_into().expect("8 bytes"),
            ),
            max_drift_ppb: u32_at(body + 48),
            status,
            disruption_support: bytes[body + 56] != 0,
        },
    ))
}

/// The seqlock's generations around one write of the body: the odd value to store before
/// (a reader that sees it keeps its previous copy) and the even one after. ClockBound's
/// readers take 0 for "never written", so the even value skips it when the u16 wraps.
pub fn generations_around_write(current: u16) -> (u16, u16) {
    let during = if current.is_multiple_of(2) {
        current.wrapping_add(1)
    } else {
        current
    };
    let after = match during.wrapping_add(1) {
        0 => 2,
        even => even,
    };
    (during, after)
}

#[cfg(test)]
mod tests;
