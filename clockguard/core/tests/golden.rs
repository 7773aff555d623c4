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

/// The daemon's `status`, `services`, `tracking` and `sources` answers, as the clockguard of before the typed status
/// sent them (recorded on the development host, 2026-12-05: observe mode, NTP from a loopback
/// reference 11 s off, a server, metrics, a process-tracked and a probe-tracked service), read
/// into the typed structs and written back: the same bytes.
#[test]
fn the_golden_answers_read_and_write_back_byte_for_byte() {
    use clockguard_core::status::{ServicesAnswer, SourcesAnswer, Status, Tracking};
    let status_line = include_str!("golden/status-host.json").trim_end();
    let status: Status = serde_json::from_str(status_line).unwrap();
    assert_eq!(
        serde_json::to_value(&status).unwrap().to_string(),
        status_line
    );
    let services_line = include_str!("golden/services-host.json").trim_end();
    let services: ServicesAnswer = serde_json::from_str(services_line).unwrap();
    assert_eq!(
        serde_json::to_value(&services).unwrap().to_string(),
        services_line
    );
    for (line, read_back) in [
        (
            include_str!("golden/tracking-host.json").trim_end(),
            serde_json::to_value(
                serde_json::from_str::<Tracking>(include_str!("golden/tracking-host.json"))
                    .unwrap(),
            ),
        ),
        (
            include_str!("golden/sources-host.json").trim_end(),
            serde_json::to_value(
                serde_json::from_str::<SourcesAnswer>(include_str!("golden/sources-host.json"))
                    .unwrap(),
            ),
        ),
    ] {
        assert_eq!(read_back.unwrap().to_string(), line);
    }
    // The answers are not empty where it matters.
    assert!(status.hooks.len() > 20 && status.services.len() == 2);
    assert!(status.timers.lateness.is_some() && status.kernel.is_some());
}
