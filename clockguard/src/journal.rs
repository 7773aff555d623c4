//! The audit journal: append-only JSON Lines in the state directory, rotated by size.
//!
//! `journal.jsonl` is the current file, `journal.jsonl.1` the newest rotated one, up to
//! `.N`. A line torn by a crash is terminated at the next open and skipped (with a report)
//! when reading; the records before and after it are kept. Nothing is ever truncated.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::record::Record;

pub const JOURNAL_FILE: &str = "journal.jsonl";

pub struct Journal {
    dir: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    max_bytes: u64,
    keep: u32,
}

impl Journal {
    /// Opens (creating) the journal in `dir`. Returns it and the problems found (a torn last
    /// line), which the caller reports.
    pub fn open(dir: &Path, max_bytes: u64, keep: u32) -> Result<(Journal, Vec<String>)> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join(JOURNAL_FILE);
        let mut file = open_append(&path)?;
        let mut problems = Vec::new();
        let mut size = file.metadata()?.len();
        if size > 0 && last_byte(&path)? != Some(b'\n') {
            problems.push(format!(
                "{}: the last record (ending at byte {size}) was torn, probably by a crash \
                 while writing; it is kept as is and skipped when reading",
                path.display()
            ));
            file.write_all(b"\n")?;
            size += 1;
        }
        let last_seq = last_seq_in(&path)?
            .or(last_seq_in(&rotated_path(dir, 1))?)
            .unwrap_or(0);
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                size,
                next_seq: last_seq + 1,
                max_bytes,
                keep,
            },
            problems,
        ))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers the records and appends them, one write per file; rotates first when the
    /// batch would take the file past `max_bytes`.
    pub fn append(&mut self, records: &mut [Record]) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for record in records.iter_mut() {
            record.seq = self.next_seq;
            let start = buf.len();
            serde_json::to_writer(&mut buf, record)?;
            buf.push(b'\n');
            let line_len = (buf.len() - start) as u64;
            if self.size > 0 && self.size + start as u64 + line_len > self.max_bytes {
                // Flush what fits in the current file, then rotate.
                self.write_all(&buf[..start])?;
                buf.drain(..start);
                self.rotate()?;
            }
            self.next_seq += 1;
        }
        self.write_all(&buf)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(bytes)
            .with_context(|| format!("cannot append to {}", self.path().display()))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let current = self.path();
        if self.keep == 0 {
            fs::remove_file(&current)?;
        } else {
            let _ = fs::remove_file(rotated_path(&self.dir, self.keep));
            for n in (1..self.keep).rev() {
                let from = rotated_path(&self.dir, n);
                if from.exists() {
                    fs::rename(&from, rotated_path(&self.dir, n + 1))?;
                }
            }
            fs::rename(&current, rotated_path(&self.dir, 1))?;
        }
        self.file = open_append(&current)?;
        self.size = 0;
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("cannot open journal {}", path.display()))
}

fn rotated_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{JOURNAL_FILE}.{n}"))
}

fn last_byte(path: &Path) -> Result<Option<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(Some(b[0]))
}

/// The seq of the last valid record of a file (None when it has none or does not exist).
fn last_seq_in(path: &Path) -> Result<Option<u64>> {
    let Ok(mut f) = File::open(path) else {
        return Ok(None);
    };
    let len = f.metadata()?.len();
    // Records are well under 64 KiB; read the tail and look back for a parsable line.
    let tail = len.min(256 * 1024);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf)?;
    for line in buf.split(|&b| b == b'\n').rev() {
        if let Ok(record) = serde_json::from_slice::<SeqOnly>(line) {
            return Ok(Some(record.seq));
        }
    }
    Ok(None)
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The journal files of `dir`, oldest first.
pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix(JOURNAL_FILE)?
                .strip_prefix('.')?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(JOURNAL_FILE);
    if current.exists() {
        files.push(current);
    }
    files
}

/// Reads every record of the journal in `dir`, oldest first, calling `each` for each.
/// Lines that are not records (torn by a crash, edited) are skipped and reported in the
/// returned list as `file:line: reason`.
pub fn read_records(dir: &Path, mut each: impl FnMut(Record)) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for path in journal_files(dir) {
        let file = File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(text) {
                Ok(record) => each(record),
                Err(err) => problems.push(format!(
                    "{}:{number}: skipped, not a journal record ({err})",
                    path.display()
                )),
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(comm: &str) -> Record {
        Record {
            time: "2026-11-22T00:00:00.000000000Z".into(),
            source: "syscall".into(),
            kind: "step".into(),
            result: "0".into(),
            verdict: "observed".into(),
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
        j.append(&mut [rec("a"), rec("b")]).unwrap();
        j.append(&mut [rec("c")]).unwrap();
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
        j.append(&mut [rec("a"), rec("b")]).unwrap();
        drop(j);
        let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
        assert_eq!(j.next_seq(), 3);
        j.append(&mut [rec("c")]).unwrap();
        let (records, _) = read(tmp.path());
        assert_eq!(records.last().unwrap().seq, 3);
    }

    #[test]
    fn torn_last_line_is_reported_skipped_and_earlier_records_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), 1 << 20, 2).unwrap();
        j.append(&mut [rec("a"), rec("b")]).unwrap();
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
        j.append(&mut [rec("c")]).unwrap();
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
            j.append(&mut [rec(&format!("r{i}"))]).unwrap();
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
}
