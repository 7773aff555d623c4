use super::*;

const S: i64 = 1_000_000_000;

fn bound() -> ErrorBound {
    ErrorBound {
        as_of: Monotonic::from_ns(1_000 * S + 250),
        void_after: Monotonic::from_ns(2_000 * S),
        bound_ns: 37_500,
        disruption_marker: 0x0102_0304_0506_0708,
        max_drift_ppb: 15_000,
        status: ClockStatus::Synchronized,
        disruption_support: false,
    }
}

fn segment(generation: u16, body: &ErrorBound) -> Vec<u8> {
    let mut bytes = encode_header(generation).to_vec();
    bytes.extend_from_slice(&body.encode());
    bytes
}

#[test]
fn the_fields_sit_where_clockbound_s_repr_c_structs_put_them() {
    let bytes = segment(6, &bound());
    assert_eq!(bytes.len(), 80);
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let i64_at = |at: usize| i64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!([u32_at(0), u32_at(4)], [0x414D_5A4E, 0x4342_0200]);
    assert_eq!(u32_at(8), 80);
    assert_eq!(u16::from_ne_bytes([bytes[12], bytes[13]]), 2);
    assert_eq!(u16::from_ne_bytes([bytes[14], bytes[15]]), 6);
    assert_eq!((i64_at(16), i64_at(24)), (1_000, 250), "as_of timespec");
    assert_eq!((i64_at(32), i64_at(40)), (2_000, 0), "void_after timespec");
    assert_eq!(i64_at(48), 37_500);
    assert_eq!(i64_at(56), 0x0102_0304_0506_0708);
    assert_eq!(u32_at(64), 15_000);
    assert_eq!(u32_at(68), 1, "Synchronized");
    assert_eq!(bytes[72], 0);
    assert_eq!(&bytes[73..80], &[0; 7], "padding");
}

#[test]
fn what_is_encoded_decodes_to_the_same() {
    for status in [
        ClockStatus::Unknown,
        ClockStatus::Synchronized,
        ClockStatus::FreeRunning,
        ClockStatus::Disrupted,
    ] {
        let b = ErrorBound {
            status,
            disruption_support: status == ClockStatus::Disrupted,
            ..bound()
        };
        assert_eq!(decode(&segment(4, &b)), Ok((4, b)));
    }
}

#[test]
fn a_segment_that_is_not_a_readable_version_2_one_says_why() {
    let good = segment(2, &bound());
    assert_eq!(
        decode(&good[..79]),
        Err(SegmentError::Truncated { len: 79 })
    );
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(decode(&bad), Err(SegmentError::BadMagic));
    let mut bad = good.clone();
    bad[12..14].copy_from_slice(&1u16.to_ne_bytes());
    assert_eq!(decode(&bad), Err(SegmentError::Version(1)));
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&16u32.to_ne_bytes());
    assert_eq!(decode(&bad), Err(SegmentError::BadSize(16)));
    assert_eq!(
        decode(&segment(0, &bound())),
        Err(SegmentError::NotInitialised)
    );
    assert_eq!(
        decode(&segment(7, &bound())),
        Err(SegmentError::BeingWritten)
    );
    let mut bad = good;
    bad[68..72].copy_from_slice(&9i32.to_ne_bytes());
    assert_eq!(decode(&bad), Err(SegmentError::BadStatus(9)));
}

#[test]
fn the_generation_is_odd_during_a_write_and_never_0_after() {
    assert_eq!(generations_around_write(0), (1, 2));
    assert_eq!(generations_around_write(2), (3, 4));
    // A writer that died mid-write left it odd: the next write goes on from there.
    assert_eq!(generations_around_write(9), (9, 10));
    assert_eq!(generations_around_write(65_534), (65_535, 2));
    assert_eq!(generations_around_write(65_535), (65_535, 2));
}

#[test]
fn a_reader_grows_the_bound_at_the_drift_and_ages_the_status() {
    let b = bound();
    // At as_of: the bound as written.
    assert_eq!(
        b.as_read_at(b.as_of),
        Some((37_500, ClockStatus::Synchronized))
    );
    // 2 s later at 15 ppm: 30 µs more.
    assert_eq!(
        b.as_read_at(b.as_of.plus_ns(2 * S)),
        Some((67_500, ClockStatus::Synchronized))
    );
    // Past the 5 s grace without a newer bound: FreeRunning; past void_after: Unknown.
    assert_eq!(
        b.as_read_at(b.as_of.plus_ns(5 * S)).map(|r| r.1),
        Some(ClockStatus::FreeRunning)
    );
    assert_eq!(
        b.as_read_at(b.void_after).map(|r| r.1),
        Some(ClockStatus::Unknown)
    );
    // Disrupted and Unknown stay as written.
    let disrupted = ErrorBound {
        status: ClockStatus::Disrupted,
        ..b
    };
    assert_eq!(
        disrupted.as_read_at(b.void_after).map(|r| r.1),
        Some(ClockStatus::Disrupted)
    );
    // Up to 1 µs before as_of is read as as_of; more is a causality breach.
    assert_eq!(
        b.as_read_at(b.as_of.plus_ns(-1_000)).map(|r| r.0),
        Some(37_500)
    );
    assert_eq!(b.as_read_at(b.as_of.plus_ns(-1_001)), None);
}
