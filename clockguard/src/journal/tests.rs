use super::*;
use crate::record::{Source, Verdict};
use sealer::SEAL_KEY_FILE;

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

/// Appends every record (the test fails on an error) and leaves them as written.
fn append_all(j: &mut Journal, records: &mut Vec<Record>) {
    let appended = j.append(std::mem::take(records));
    if let Some((err, _)) = appended.failed {
        panic!("append failed: {err:#}");
    }
    *records = appended.written;
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
    append_all(&mut j, &mut vec![rec("a"), rec("b")]);
    append_all(&mut j, &mut vec![rec("c")]);
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
    append_all(&mut j, &mut vec![rec("a"), rec("b")]);
    drop(j);
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert_eq!(j.next_seq(), 3);
    append_all(&mut j, &mut vec![rec("c")]);
    let (records, _) = read(tmp.path());
    assert_eq!(records.last().unwrap().seq, 3);
}

#[test]
fn torn_last_line_is_reported_skipped_and_earlier_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    append_all(&mut j, &mut vec![rec("a"), rec("b")]);
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
    append_all(&mut j, &mut vec![rec("c")]);
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
        append_all(&mut j, &mut vec![rec(&format!("r{i}"))]);
    }
    let files = journal_files(tmp.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let (records, problems) = read(tmp.path());
    assert!(problems.is_empty());
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    // The oldest rotated-out records are gone; what is kept is contiguous and ends with
    // the last record given. Each file after a rotation begins with the rotation's record.
    assert_eq!(records.last().unwrap().comm.as_deref(), Some("r7"));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let given = records
        .iter()
        .filter(|r| r.source != Source::Daemon)
        .count();
    assert!(given >= 3, "{seqs:?}");
    for file in &files[1..] {
        let first = first_seq_in(file).unwrap().unwrap();
        let record = records.iter().find(|r| r.seq == first).unwrap();
        assert_eq!(record.kind, "rotate", "{file:?} begins with {record:?}");
    }
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
    append_all(&mut j, &mut batch);
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
    append_all(&mut j, &mut batch);
    let path = tmp.path().join(JOURNAL_FILE);
    (tmp, path)
}

#[test]
fn records_are_chained_and_the_line_is_what_subscribers_get() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let mut batch = vec![rec("a"), rec("b")];
    append_all(&mut j, &mut batch);
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
    append_all(&mut j, &mut next);
    assert_eq!(next[0].prev, batch[1].hash);
    let found = verify(tmp.path(), None).unwrap();
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
        append_all(&mut j, &mut vec![rec(&format!("r{i}"))]);
    }
    let found = verify(tmp.path(), None).unwrap();
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert_eq!(found.files, 3);
    // 12 records, and one at each rotation.
    let (records, _) = read(tmp.path());
    assert_eq!(records.last().unwrap().comm.as_deref(), Some("r11"));
    assert_eq!(found.last.as_ref().unwrap().0, records.last().unwrap().seq);
    assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    assert!(found.notes[0].contains("rotated out"), "{}", found.notes[0]);
}

#[test]
fn an_edited_record_is_named() {
    let (tmp, path) = journal_of(4);
    let mut on_disk = lines(&path);
    on_disk[2] = on_disk[2].replace("\"comm\":\"r2\"", "\"comm\":\"rX\"");
    write_lines(&path, &on_disk);
    let found = verify(tmp.path(), None).unwrap();
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
    let found = verify(tmp.path(), None).unwrap();
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
    let found = verify(tmp.path(), None).unwrap();
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
    let found = verify(tmp.path(), None).unwrap();
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
    append_all(&mut j, &mut vec![rec("a"), rec("b")]);
    let found = verify(tmp.path(), None).unwrap();
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
    let found = verify(tmp.path(), None).unwrap();
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert!(
        found.failures[0].contains("its hash was removed"),
        "{:?}",
        found.failures
    );
}

// Forward-secure sealing.

const SEED: [u8; 32] = [42; 32];

/// A sealed journal: `before` records, a seal, `between` records, a seal, `after`
/// records. Returns the directory and the journal (still open).
fn sealed_journal(before: usize, between: usize, after: usize) -> (tempfile::TempDir, Journal) {
    let tmp = tempfile::tempdir().unwrap();
    Sealer::create(tmp.path(), &SEED, false).unwrap();
    let (mut j, problems) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut n = 0;
    for (count, seal) in [(before, true), (between, true), (after, false)] {
        let mut batch: Vec<Record> = (0..count)
            .map(|_| {
                n += 1;
                rec(&format!("r{n}"))
            })
            .collect();
        batch.extend(seal.then(|| j.seal_record("interval").unwrap()));
        append_all(&mut j, &mut batch);
    }
    (tmp, j)
}

fn seal_failures(dir: &Path, seed: [u8; 32]) -> (Verification, Vec<String>) {
    let found = verify(dir, Some(seed)).unwrap();
    let failures = found.failures.clone();
    (found, failures)
}

#[test]
fn a_sealed_journal_verifies_up_to_its_last_seal_and_the_key_moved_on() {
    let (tmp, j) = sealed_journal(3, 2, 2);
    // Seals at seq 4 and 7; records 8 and 9 after the last.
    assert_eq!(j.sealing().unwrap().1, 2, "two seals, two evolutions");
    let on_disk = fs::read(tmp.path().join(SEAL_KEY_FILE)).unwrap();
    assert_eq!(
        clockguard_core::seal::SealKey::from_state(&on_disk)
            .unwrap()
            .epoch(),
        2,
        "the evolved key is on disk, the old ones overwritten"
    );
    let (found, failures) = seal_failures(tmp.path(), SEED);
    assert!(failures.is_empty(), "{failures:?}");
    let sealing = found.sealing.unwrap();
    assert_eq!(sealing.proven_through, Some((7, 1)));
    assert_eq!(sealing.unsealed_after, 2);
    assert_eq!(sealing.macs_verified, 9);
    // Without the key, the chain alone still verifies.
    assert!(verify(tmp.path(), None).unwrap().failures.is_empty());
}

#[test]
fn a_suffix_rewritten_with_a_recomputed_chain_is_named_at_its_first_record() {
    let (tmp, j) = sealed_journal(3, 2, 2);
    drop(j);
    // Root, after the fact, holds the current key (epoch 2) and rewrites records 3 on
    // with a correct hash chain and MACs of its own.
    let path = tmp.path().join(JOURNAL_FILE);
    let kept: Vec<String> = lines(&path).into_iter().take(2).collect();
    write_lines(&path, &kept);
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let mut forged: Vec<Record> = (3..=6).map(|n| rec(&format!("forged{n}"))).collect();
    append_all(&mut j, &mut forged);
    drop(j);
    assert!(
        verify(tmp.path(), None).unwrap().failures.is_empty(),
        "the chain alone cannot tell"
    );
    let (_, failures) = seal_failures(tmp.path(), SEED);
    assert!(!failures.is_empty());
    assert!(
        failures[0].contains("record seq 3 was rewritten"),
        "{failures:?}"
    );
}

#[test]
fn a_mac_that_does_not_verify_and_a_removed_seal_are_named() {
    let (tmp, j) = sealed_journal(3, 2, 2);
    drop(j);
    let path = tmp.path().join(JOURNAL_FILE);
    let on_disk = lines(&path);
    // A record's MAC replaced (its epoch claimed again): the MAC no longer verifies.
    let mut edited = on_disk.clone();
    let mac_at = edited[1].rfind("\"mac\":\"").unwrap() + 7;
    edited[1].replace_range(mac_at..mac_at + 4, "0000");
    write_lines(&path, &edited);
    let (_, failures) = seal_failures(tmp.path(), SEED);
    assert!(
        failures[0].contains("record seq 2 was rewritten: its MAC does not verify"),
        "{failures:?}"
    );
    // The MACs stripped from record 5 on: sealing "removed".
    let stripped: Vec<String> = on_disk
        .iter()
        .enumerate()
        .map(|(i, line)| {
            if i < 4 {
                return line.clone();
            }
            let at = line.find(",\"epoch\":").unwrap();
            format!("{}}}", &line[..at])
        })
        .collect();
    write_lines(&path, &stripped);
    let (_, failures) = seal_failures(tmp.path(), SEED);
    assert!(
        failures[0].contains("record seq 5 is not sealed, but the journal is sealed from seq 1"),
        "{failures:?}"
    );
}

#[test]
fn another_key_is_told_apart_from_tampering() {
    let (tmp, j) = sealed_journal(2, 1, 0);
    drop(j);
    let (found, failures) = seal_failures(tmp.path(), [1; 32]);
    assert!(!failures.is_empty());
    let ours = clockguard_core::seal::SealKey::from_seed(&SEED).key_id();
    assert!(
        found
            .notes
            .iter()
            .any(|n| n.contains("is it this journal's verification key") && n.contains(&ours)),
        "{:?}",
        found.notes
    );
}

#[test]
fn a_crash_between_a_seal_and_the_key_evolution_is_caught_up_at_the_next_open() {
    let (tmp, j) = sealed_journal(2, 1, 0);
    drop(j);
    // The key as it was before the second seal (epoch 1): as if the evolution after it
    // never reached the disk.
    let mut key = clockguard_core::seal::SealKey::from_seed(&SEED);
    key.evolve();
    fs::write(tmp.path().join(SEAL_KEY_FILE), key.to_state()).unwrap();
    let (mut j, problems) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert!(problems[0].contains("moved on to epoch 2"), "{problems:?}");
    assert_eq!(j.sealing().unwrap().1, 2);
    append_all(&mut j, &mut vec![rec("after")]);
    let (_, failures) = seal_failures(tmp.path(), SEED);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn a_seal_after_the_stop_record_is_still_a_clean_stop() {
    let tmp = tempfile::tempdir().unwrap();
    Sealer::create(tmp.path(), &SEED, false).unwrap();
    let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    let stop = daemon_record("stop", json!({}));
    let seal = j.seal_record("stop").unwrap();
    append_all(&mut j, &mut vec![rec("a"), stop, seal]);
    drop(j);
    let (j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
    assert_eq!(j.previous_run_ended_cleanly(), Some(true));
    // And a second setup is refused unless forced.
    let err = Sealer::create(tmp.path(), &[1; 32], false).err().unwrap();
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
}

#[test]
fn a_deleted_rotated_file_is_a_gap_with_its_seq_range() {
    let tmp = tempfile::tempdir().unwrap();
    Sealer::create(tmp.path(), &SEED, false).unwrap();
    let one_line = serde_json::to_vec(&rec("x")).unwrap().len() as u64 + 300;
    let (mut j, _) = Journal::open(tmp.path(), one_line * 3, 3).unwrap();
    for i in 0..14 {
        append_all(&mut j, &mut vec![rec(&format!("r{i}"))]);
    }
    drop(j);
    let files = journal_files(tmp.path());
    assert_eq!(files.len(), 4, "{files:?}");
    let (found, failures) = seal_failures(tmp.path(), SEED);
    assert!(failures.is_empty(), "{failures:?}");
    // Every rotation sealed the file it closed.
    assert!(found.sealing.unwrap().proven_through.is_some());
    let oldest = first_seq_in(&files[0]).unwrap().unwrap();
    let next = first_seq_in(&files[1]).unwrap().unwrap();
    fs::remove_file(&files[0]).unwrap();
    let found = verify(tmp.path(), None).unwrap();
    let expected = format!("records seq {oldest} to {} are missing", next - 1);
    assert!(
        found
            .failures
            .iter()
            .any(|f| f.contains(&expected) && f.contains("deleted")),
        "{:?}",
        found.failures
    );
}

#[test]
fn a_rotation_that_fails_mid_batch_returns_what_was_written_and_what_was_not() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = serde_json::to_vec(&rec("x")).unwrap().len() as u64 + 10;
    let (mut j, _) = Journal::open(tmp.path(), one_line * 3, 1).unwrap();
    append_all(&mut j, &mut vec![rec("first")]);
    // The rotated file's name is taken by a directory that is not empty: the rename fails.
    fs::create_dir_all(tmp.path().join("journal.jsonl.1/in-the-way")).unwrap();
    let batch: Vec<Record> = (0..6).map(|i| rec(&format!("r{i}"))).collect();
    let appended = j.append(batch);
    let (err, unwritten) = appended.failed.expect("the rotation fails");
    assert!(format!("{err:#}").contains("rotate"), "{err:#}");
    let written: Vec<&str> = appended
        .written
        .iter()
        .map(|r| r.comm.as_deref().unwrap())
        .collect();
    assert!(!written.is_empty(), "the records that fitted were written");
    assert_eq!(
        written.len() + unwritten.len(),
        6,
        "{written:?} + {unwritten:?}"
    );
    // What was written is in the file, numbered; what was not is given back unchained.
    fs::remove_dir_all(tmp.path().join("journal.jsonl.1")).unwrap();
    let (records, _) = read(tmp.path());
    assert_eq!(
        records.last().unwrap().comm.as_deref(),
        Some(*written.last().unwrap())
    );
    assert_eq!(
        records.last().unwrap().seq,
        appended.written.last().unwrap().seq
    );
    assert!(unwritten
        .iter()
        .all(|r| r.hash.is_none() && r.prev.is_none()));
    // Once the way is clear, the retry goes on with the chain.
    let mut retry = unwritten;
    append_all(&mut j, &mut retry);
    assert!(verify(tmp.path(), None).unwrap().failures.is_empty());
}
