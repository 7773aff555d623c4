use super::*;
use crate::record::{Source, Verdict};

fn rec(comm: &str) -> Record {
    Record {
        time: "2026-11-22T00:00:00.000000000Z".into(),
        source: Source::Syscall,
        kind: "step".into(),
        result: "0".into(),
        verdict: Verdict::Observed,
        comm: Some(comm.into()),
        ..Default::default()
    }
}

fn read(dir: &Path) -> (Vec<Record>, Vec<String>) {
    let mut out = Vec::new();
    let problems = read_records(dir, |r| out.push(r)).unwrap();
    (out, problems)
}

#[test]
fn records_are_numbered_and_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, problems) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert!(problems.is_empty());
    j.append(&mut vec![rec("a"), rec("b")]).unwrap();
    j.append(&mut vec![rec("c")]).unwrap();
    let (records, problems) = read(tmp.path());
    assert!(problems.is_empty());
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(records[2].comm.as_deref(), Some("c"));
}

#[test]
fn seq_continues_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    j.append(&mut vec![rec("a"), rec("b")]).unwrap();
    drop(j);
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert_eq!(j.next_seq(), 3);
    j.append(&mut vec![rec("c")]).unwrap();
    let (records, _) = read(tmp.path());
    assert_eq!(records.last().unwrap().seq, 3);
}

#[test]
fn torn_last_line_is_reported_skipped_and_earlier_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    j.append(&mut vec![rec("a"), rec("b")]).unwrap();
    drop(j);
    // A crash in the middle of a write: half a record, no newline.
    let path = tmp.path().join(JOURNAL_FILE);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"seq":3,"time":"2026-11-22T00:0"#).unwrap();
    drop(f);
    let (mut j, problems) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("torn"), "{}", problems[0]);
    assert_eq!(j.next_seq(), 3, "the torn record never counted");
    j.append(&mut vec![rec("c")]).unwrap();
    let (records, problems) = read(tmp.path());
    let comms: Vec<&str> = records.iter().map(|r| r.comm.as_deref().unwrap()).collect();
    assert_eq!(comms, vec!["a", "b", "c"]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains(":3: skipped"), "{}", problems[0]);
}

#[test]
fn rotation_keeps_n_files_and_loses_nothing_in_between() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = serde_json::to_vec(&rec("x")).unwrap().len() as u64 + 10;
    // Room for about three records per file, two rotated files kept.
    let (mut j, _) = Journal::open(tmp.path(), one_line * 3, 2).unwrap();
    for i in 0..8 {
        j.append(&mut vec![rec(&format!("r{i}"))]).unwrap();
    }
    let files = journal_files(tmp.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let (records, problems) = read(tmp.path());
    assert!(problems.is_empty());
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    // The oldest rotated-out records are gone; what is kept is contiguous and ends at 8.
    assert_eq!(*seqs.last().unwrap(), 8);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs.len() >= 6, "{seqs:?}");
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= one_line * 3);
    }
}

#[test]
fn a_batch_larger_than_a_file_is_split_across_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = serde_json::to_vec(&rec("x")).unwrap().len() as u64 + 10;
    let (mut j, _) = Journal::open(tmp.path(), one_line * 2, 5).unwrap();
    let mut batch: Vec<Record> = (0..5).map(|i| rec(&format!("r{i}"))).collect();
    j.append(&mut batch).unwrap();
    let (records, _) = read(tmp.path());
    assert_eq!(records.len(), 5);
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A journal of `n` records in one file.
fn journal_of(n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let mut batch: Vec<Record> = (0..n).map(|i| rec(&format!("r{i}"))).collect();
    j.append(&mut batch).unwrap();
    let path = tmp.path().join(JOURNAL_FILE);
    (tmp, path)
}

#[test]
fn records_are_chained_and_the_line_is_what_subscribers_get() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let mut batch = vec![rec("a"), rec("b")];
    j.append(&mut batch).unwrap();
    assert_eq!(batch[0].prev.as_deref(), Some(GENESIS));
    assert_eq!(batch[1].prev, batch[0].hash);
    assert_eq!(j.head(), (2, batch[1].hash.as_deref().unwrap()));
    // The daemon publishes the record re-serialised: byte for byte the journal line.
    let on_disk = lines(&j.path());
    assert_eq!(on_disk[1], serde_json::to_string(&batch[1]).unwrap());
    assert!(on_disk[1].ends_with(&format!(
        ",\"hash\":\"{}\"}}",
        batch[1].hash.as_ref().unwrap()
    )));
    drop(j);
    // The chain goes on across a restart.
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let mut next = vec![rec("c")];
    j.append(&mut next).unwrap();
    assert_eq!(next[0].prev, batch[1].hash);
    let found = verify(tmp.path()).unwrap();
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert_eq!((found.records, found.chained), (3, 3));
    assert_eq!(found.last, Some((3, next[0].hash.clone().unwrap())));
}

#[test]
fn verify_passes_across_rotations_and_notes_the_rotated_out_start() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = serde_json::to_vec(&rec("x")).unwrap().len() as u64 + 160;
    let (mut j, _) = Journal::open(tmp.path(), one_line * 3, 2).unwrap();
    for i in 0..12 {
        j.append(&mut vec![rec(&format!("r{i}"))]).unwrap();
    }
    let found = verify(tmp.path()).unwrap();
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert_eq!(found.files, 3);
    assert_eq!(found.last.as_ref().unwrap().0, 12);
    assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    assert!(found.notes[0].contains("rotated out"), "{}", found.notes[0]);
}

#[test]
fn an_edited_record_is_named() {
    let (tmp, path) = journal_of(4);
    let mut on_disk = lines(&path);
    on_disk[2] = on_disk[2].replace("\"comm\":\"r2\"", "\"comm\":\"rX\"");
    write_lines(&path, &on_disk);
    let found = verify(tmp.path()).unwrap();
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert!(
        found.failures[0].contains("journal.jsonl:3: record seq 3 was edited"),
        "{}",
        found.failures[0]
    );
}

#[test]
fn a_removed_record_is_named() {
    let (tmp, path) = journal_of(5);
    let mut on_disk = lines(&path);
    on_disk.remove(2);
    write_lines(&path, &on_disk);
    let found = verify(tmp.path()).unwrap();
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert!(
        found.failures[0].contains("journal.jsonl:3: record seq 4 does not follow")
            && found.failures[0].contains("record seq 3 is missing"),
        "{}",
        found.failures[0]
    );
}

#[test]
fn reordered_records_are_found() {
    let (tmp, path) = journal_of(5);
    let mut on_disk = lines(&path);
    on_disk.swap(1, 2);
    write_lines(&path, &on_disk);
    let found = verify(tmp.path()).unwrap();
    assert!(
        found.failures.iter().any(|f| f.contains("out of order")),
        "{:?}",
        found.failures
    );
    assert!(
        found.failures[0].contains("journal.jsonl:2:"),
        "{:?}",
        found.failures
    );
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let (tmp, path) = journal_of(4);
    let mut on_disk = lines(&path);
    let mut forged: Record = serde_json::from_str(&on_disk[1]).unwrap();
    forged.comm = Some("innocent".into());
    forged.hash = None;
    let body = serde_json::to_vec(&forged).unwrap();
    forged.hash = Some(hex_sha256(&body));
    on_disk[1] = serde_json::to_string(&forged).unwrap();
    write_lines(&path, &on_disk);
    let found = verify(tmp.path()).unwrap();
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert!(
        found.failures[0].contains("journal.jsonl:3: record seq 3")
            && found.failures[0].contains("seq 2 is not the record it was written after"),
        "{}",
        found.failures[0]
    );
}

#[test]
fn a_torn_line_is_a_note_and_legacy_records_start_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(JOURNAL_FILE);
    // A record from before the chain, then a write torn by a crash.
    let legacy = serde_json::to_string(&Record {
        seq: 1,
        ..rec("old")
    })
    .unwrap();
    fs::write(&path, format!("{legacy}\n{{\"seq\":2,\"time\":\"2026")).unwrap();
    let (mut j, problems) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert_eq!(problems.len(), 1);
    j.append(&mut vec![rec("a"), rec("b")]).unwrap();
    let found = verify(tmp.path()).unwrap();
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert_eq!((found.records, found.chained), (3, 2));
    assert!(found
        .notes
        .iter()
        .any(|n| n.contains("before the journal was chained")));
    assert!(
        found
            .notes
            .iter()
            .any(|n| n.contains(":2: not a journal record")),
        "{:?}",
        found.notes
    );
    // Stripping the chain from a record after it began is a break.
    let mut on_disk = lines(&path);
    let mut stripped: Record = serde_json::from_str(&on_disk[3]).unwrap();
    (stripped.prev, stripped.hash) = (None, None);
    on_disk[3] = serde_json::to_string(&stripped).unwrap();
    write_lines(&path, &on_disk);
    let found = verify(tmp.path()).unwrap();
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert!(
        found.failures[0].contains("its hash was removed"),
        "{:?}",
        found.failures
    );
}
