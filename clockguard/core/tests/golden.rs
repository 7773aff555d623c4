//! The journal's format does not change under the typed record: every line of
//! golden/records.jsonl reads into a `Record` and writes back as the same bytes. The hash
//! chain is over those bytes, so this is what keeps old journals verifiable. The lines, one
//! per source × kind × verdict seen (and one with a kernel stack, one with a slew), come
//! from the host suite's journals written by clockguard before the record was typed (daemon,
//! syscall and service records) and from the VM suite's (kernel, fallback, timers, and every
//! guard verdict); the clockguard of before the change printed each of them back unchanged
//! too (`audit --json`, 2026-12-05).

use clockguard_core::record::{Record, Source, Verdict};

const GOLDEN: &str = include_str!("golden/records.jsonl");

#[test]
fn every_golden_line_reads_and_writes_back_byte_for_byte() {
    let mut lines = 0;
    for (n, line) in GOLDEN.lines().enumerate() {
        let record: Record = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("golden line {}: {err}\n{line}", n + 1));
        let again = serde_json::to_string(&record).unwrap();
        assert_eq!(again, line, "golden line {} changed", n + 1);
        lines += 1;
    }
    assert!(lines > 0, "no golden lines");
}

#[test]
fn the_golden_lines_cover_every_source_and_verdict() {
    let records: Vec<Record> = GOLDEN
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for source in Source::ALL {
        assert!(
            records.iter().any(|r| r.source == source),
            "no golden line from {source}"
        );
    }
    for verdict in Verdict::ALL {
        assert!(
            records.iter().any(|r| r.verdict == verdict),
            "no golden line with verdict {verdict}"
        );
    }
}
