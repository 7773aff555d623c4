//! clockguard's ClockBound segment read by ClockBound's own published client crate: the
//! layout is checked against the code applications run, not only against the protocol's
//! text. Changes no clock (the client only reads CLOCK_REALTIME and CLOCK_MONOTONIC).

use clock_bound_client::{ClockBoundClient, ClockBoundErrorKind, ClockStatus as Theirs};
use clockguard_core::{
    clockbound::{ClockStatus, ErrorBound},
    time::Monotonic,
};
use clockguard_sys::segment::{ClockBoundWriter, SegmentOpenError};

use crate::read_ns;

const S: i64 = 1_000_000_000;

/// CLOCK_MONOTONIC as ClockBound's reader takes it: the coarse one (see
/// clockguard_core::clockbound).
fn monotonic() -> Monotonic {
    Monotonic::from_ns(read_ns(libc::CLOCK_MONOTONIC_COARSE))
}

fn theirs(status: ClockStatus) -> Theirs {
    match status {
        ClockStatus::Unknown => Theirs::Unknown,
        ClockStatus::Synchronized => Theirs::Synchronized,
        ClockStatus::FreeRunning => Theirs::FreeRunning,
        ClockStatus::Disrupted => Theirs::Disrupted,
    }
}

/// Reads through the client; checks the interval is centred on CLOCK_REALTIME and as wide
/// as `bound` says at that moment. Returns the status the client reported.
fn read_and_check(client: &mut ClockBoundClient, bound: &ErrorBound) -> Theirs {
    let mono_before = monotonic();
    let real_before = read_ns(libc::CLOCK_REALTIME);
    let now = client.now().expect("the client reads the segment");
    let real_after = read_ns(libc::CLOCK_REALTIME);
    let mono_after = monotonic();
    // The client's TimeSpec is nix's, of the version clock-bound-client uses.
    let earliest = now.earliest.tv_sec() * S + now.earliest.tv_nsec();
    let latest = now.latest.tv_sec() * S + now.latest.tv_nsec();
    let half_width = (latest - earliest) / 2;
    let (low, _) = bound.as_read_at(mono_before).expect("not before as_of");
    let (high, _) = bound.as_read_at(mono_after).expect("not before as_of");
    assert!(
        (low - 1..=high + 1).contains(&half_width),
        "half width {half_width} ns, expected {low}..={high} ns ({bound:?})"
    );
    let centre = earliest + half_width;
    assert!(
        (real_before - 1..=real_after + 1).contains(&centre),
        "centred on {centre}, realtime {real_before}..{real_after}"
    );
    now.clock_status
}

fn bound(status: ClockStatus, as_of: Monotonic) -> ErrorBound {
    ErrorBound {
        as_of,
        void_after: as_of.plus_ns(60 * S),
        bound_ns: 37_500,
        disruption_marker: 1,
        max_drift_ppb: 15_000,
        status,
        disruption_support: false,
    }
}

#[test]
fn clockbound_s_client_reads_what_clockguard_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm0");
    let path_text = path.to_str().unwrap();
    // No vmclock: disruption support off, so the client never opens this path.
    let no_vmclock = "/nonexistent/vmclock0";
    let mut writer = ClockBoundWriter::open(&path).unwrap();

    // Before the first bound: the client refuses the segment, as it refuses ClockBound's
    // own before its daemon wrote one.
    let refused = ClockBoundClient::new_with_paths(path_text, no_vmclock).err();
    assert_eq!(
        refused.map(|e| e.kind),
        Some(ClockBoundErrorKind::SegmentNotInitialized)
    );

    // Each status as written, the interval centred on CLOCK_REALTIME and as wide as the
    // bound grown at the drift (the fields at the offsets the client reads). Every publish
    // is a new generation, which the client's cache must notice.
    let first = bound(ClockStatus::Synchronized, monotonic());
    writer.publish(&first);
    let mut client = ClockBoundClient::new_with_paths(path_text, no_vmclock).unwrap();
    for status in [
        ClockStatus::Synchronized,
        ClockStatus::FreeRunning,
        ClockStatus::Disrupted,
        ClockStatus::Unknown,
        ClockStatus::Synchronized,
    ] {
        let b = bound(status, monotonic());
        writer.publish(&b);
        assert_eq!(read_and_check(&mut client, &b), theirs(status));
    }

    // A bound 6 s old: grown by 6 s × 15 ppm = 90 µs, and FreeRunning to the client once
    // past its 5 s grace; past void_after, Unknown. The same as `as_read_at` says.
    let old = bound(ClockStatus::Synchronized, monotonic().plus_ns(-6 * S));
    writer.publish(&old);
    assert_eq!(read_and_check(&mut client, &old), Theirs::FreeRunning);
    let void = ErrorBound {
        void_after: monotonic().plus_ns(-S),
        ..old
    };
    writer.publish(&void);
    assert_eq!(read_and_check(&mut client, &void), Theirs::Unknown);
    assert_eq!(
        void.as_read_at(monotonic()).map(|r| r.1),
        Some(ClockStatus::Unknown)
    );

    // A second writer is refused while the first holds the segment.
    assert!(matches!(
        ClockBoundWriter::open(&path),
        Err(SegmentOpenError::Owned)
    ));

    // A restarted writer takes the segment over in place: the client that mapped it
    // before sees the new bound (a new file would leave it reading the old one).
    drop(writer);
    let mut restarted = ClockBoundWriter::open(&path).unwrap();
    let after_restart = bound(ClockStatus::Disrupted, monotonic());
    restarted.publish(&after_restart);
    assert_eq!(
        read_and_check(&mut client, &after_restart),
        Theirs::Disrupted
    );
}

#[test]
fn a_segment_path_in_a_missing_directory_is_a_clear_error() {
    let err = ClockBoundWriter::open(std::path::Path::new("/nonexistent-dir/shm0"))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "open: No such file or directory (os error 2)"
    );
}

/// A segment cut short (a writer that died while creating it, a stray file) is never read
/// as a usable bound by ClockBound's client (it maps the header's size, and the page past
/// the file's end reads as zeros: status Unknown, bound 0), and clockguard takes it over as
/// a fresh segment that the client then reads.
#[test]
fn a_truncated_segment_is_never_usable_for_the_client_and_rewritten_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm0");
    let whole = {
        let mut writer = ClockBoundWriter::open(&path).unwrap();
        writer.publish(&bound(ClockStatus::Synchronized, monotonic()));
        std::fs::read(&path).unwrap()
    };
    std::fs::write(&path, &whole[..40]).unwrap();
    let (segment, vmclock) = (
        path.to_str().unwrap(),
        dir.path().join("no-vmclock").to_str().unwrap().to_string(),
    );
    let refused = ClockBoundClient::new_with_paths(segment, &vmclock)
        .and_then(|mut client| client.now().map(|now| now.clock_status));
    assert!(
        matches!(refused, Ok(Theirs::Unknown) | Err(_)),
        "a 40-byte segment read as {refused:?}"
    );
    let mut writer = ClockBoundWriter::open(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole.len() as u64);
    let published = bound(ClockStatus::Synchronized, monotonic());
    writer.publish(&published);
    let mut client = ClockBoundClient::new_with_paths(segment, &vmclock).unwrap();
    assert_eq!(
        read_and_check(&mut client, &published),
        Theirs::Synchronized
    );
}
