//! The audit journal: append-only JSON Lines in the state directory, rotated by size.
//!
//! `journal.jsonl` is the current file, `journal.jsonl.1` the newest rotated one, up to
//! `.N`. A line torn by a crash is terminated at the next open and skipped (with a report)
//! when reading; the records before and after it are kept. Nothing is ever truncated.
//!
//! Tamper evidence: every record ends with `"prev"`, the hash of the record before it, and
//! `"hash"`, the SHA-256 of its own line up to that field (`prev` included), so a record
//! edited, removed or moved anywhere breaks the chain at that place, which
//! `clockguard audit --verify` ([`verify`]) names. The first record's `prev` is
//! [`GENESIS`]. A root user who rewrites the whole chain from some record on is not caught
//! by the files alone: the daemon's head (`status`: journal.head_seq/head_hash, and its log
//! at start and stop) is the outside reference `--verify` compares the files with.

use std::{
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::record::Record;

pub const JOURNAL_FILE: &str = "journal.jsonl";

/// The `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct Journal {
    dir: PathBuf,
    file: File,
    size: u64,
    next_seq: u64,
    /// The hash of the last record written: the next record's `prev`.
    head_hash: String,
    /// Whether the journal ended, when opened, with the daemon's "stop" record (None: it
    /// was empty).
    ended_with_stop: Option<bool>,
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
        let last = match last_link_in(&path)? {
            Some(link) => Some(link),
            None => last_link_in(&rotated_path(dir, 1))?,
        };
        let ended_with_stop = last
            .as_ref()
            .map(|link| link.source == "daemon" && link.kind == "stop");
        let (last_seq, head_hash) = match last {
            // A record written before the journal was chained starts a new chain.
            Some(link) => (link.seq, link.hash.unwrap_or_else(|| GENESIS.into())),
            None => (0, GENESIS.into()),
        };
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                size,
                next_seq: last_seq + 1,
                head_hash,
                ended_with_stop,
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

    /// Whether the previous daemon's last record was its clean "stop" (None: no record).
    pub fn previous_run_ended_cleanly(&self) -> Option<bool> {
        self.ended_with_stop
    }

    /// The last record written: its seq (0 when none) and hash.
    pub fn head(&self) -> (u64, &str) {
        (self.next_seq - 1, &self.head_hash)
    }

    /// Numbers and chains the records and appends them, one write per file; rotates first
    /// when the batch would take the file past `max_bytes`. On an error, `records` keeps
    /// only those not written (to be retried), and the chain goes on from the last written.
    pub fn append(&mut self, records: &mut Vec<Record>) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        let mut head = self.head_hash.clone();
        // Records [..written] are in the file; those in `buf` are not yet.
        let mut written = 0;
        for (index, seq) in (0..records.len()).zip(self.next_seq..) {
            let start = buf.len();
            let record = &mut records[index];
            record.seq = seq;
            record.prev = Some(head);
            record.hash = None;
            serde_json::to_writer(&mut buf, &*record)?;
            let hash = hex_sha256(&buf[start..]);
            // The hashed line ends `..."prev":"…"}`: `hash` goes before the closing brace.
            buf.pop();
            writeln!(buf, ",\"hash\":\"{hash}\"}}")?;
            record.hash = Some(hash.clone());
            head = hash;
            let line_len = (buf.len() - start) as u64;
            if self.size > 0 && self.size + start as u64 + line_len > self.max_bytes {
                // Flush what fits in the current file, then rotate.
                if let Err(err) = self.write_all(&buf[..start]) {
                    records.drain(..written);
                    return Err(err);
                }
                written = index;
                self.commit(&records[..written]);
                buf.drain(..start);
                if let Err(err) = self.rotate() {
                    records.drain(..written);
                    return Err(err);
                }
            }
        }
        if let Err(err) = self.write_all(&buf) {
            records.drain(..written);
            return Err(err);
        }
        self.commit(records);
        Ok(())
    }

    /// The chain's head after `records` (the last of them) were written.
    fn commit(&mut self, records: &[Record]) {
        if let Some(last) = records.last() {
            self.next_seq = last.seq + 1;
            self.head_hash = last.hash.clone().unwrap_or_else(|| GENESIS.into());
        }
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

/// The last valid record of a file (None when it has none or does not exist).
fn last_link_in(path: &Path) -> Result<Option<Link>> {
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
        if let Ok(link) = serde_json::from_slice::<Link>(line) {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// A record's place in the chain (what `--verify` reads of each line).
#[derive(serde::Deserialize)]
struct Link {
    seq: u64,
    #[serde(default)]
    prev: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// Calls `each(file, line number, line)` for every non-empty line of the journal in `dir`,
/// oldest first (without its newline). Returns how many files there were.
fn each_line(dir: &Path, mut each: impl FnMut(&Path, u64, &[u8])) -> Result<usize> {
    let files = journal_files(dir);
    for path in &files {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
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
            if !text.is_empty() {
                each(path, number, text);
            }
        }
    }
    Ok(files.len())
}

/// Reads every record of the journal in `dir`, oldest first, calling `each` for each.
/// Lines that are not records (torn by a crash, edited) are skipped and reported in the
/// returned list as `file:line: reason`.
pub fn read_records(dir: &Path, mut each: impl FnMut(Record)) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    each_line(dir, |path, number, text| {
        match serde_json::from_slice::<Record>(text) {
            Ok(record) => each(record),
            Err(err) => problems.push(format!(
                "{}:{number}: skipped, not a journal record ({err})",
                path.display()
            )),
        }
    })?;
    Ok(problems)
}

/// What `audit --verify` found in a journal.
#[derive(Debug, Default)]
pub struct Verification {
    pub files: usize,
    /// Records read, and of them those carrying a hash.
    pub records: u64,
    pub chained: u64,
    /// The last chained record: seq and hash (compared with the daemon's head).
    pub last: Option<(u64, String)>,
    /// Where the chain is broken (tampering, or damage): `file:line: what`, in file order.
    pub failures: Vec<String>,
    /// What is irregular but no break: a line torn by a crash that the chain goes on
    /// around, records from before the journal was chained, a start rotated out.
    pub notes: Vec<String>,
}

/// Walks the hash chain of the journal in `dir`, oldest record first.
pub fn verify(dir: &Path) -> Result<Verification> {
    let mut found = Verification::default();
    // The last chained record read: seq, hash, and where it is.
    let mut previous: Option<(u64, String, String)> = None;
    // Lines that are no record, since the last record read.
    let mut unreadable: Vec<String> = Vec::new();
    let files = each_line(dir, |path, number, text| {
        let place = format!("{}:{number}", path.display());
        let link = match serde_json::from_slice::<Link>(text) {
            Ok(link) => link,
            Err(err) => {
                unreadable.push(format!("{place}: not a journal record ({err})"));
                return;
            }
        };
        let first_record = found.records == 0;
        found.records += 1;
        let Some(hash) = link.hash else {
            match &previous {
                Some((seq, _, at)) => found.failures.push(format!(
                    "{place}: record seq {} has no hash, but the chain began before it \
                         (seq {seq} at {at}): its hash was removed",
                    link.seq
                )),
                None => found.notes.push(format!(
                    "{place}: record seq {} was written before the journal was chained",
                    link.seq
                )),
            }
            found.notes.append(&mut unreadable);
            return;
        };
        found.chained += 1;
        if !line_matches_hash(text, &hash) {
            found.failures.push(format!(
                "{place}: record seq {} was edited: its content does not match its hash",
                link.seq
            ));
        }
        let prev = link.prev.as_deref().unwrap_or("");
        let broken = match &previous {
            Some((seq, hash, at)) if prev != hash => Some(format!(
                "{place}: record seq {} does not follow the record before it (seq {seq} \
                     at {at}): {}",
                link.seq,
                chain_break(*seq, link.seq)
            )),
            Some(_) => None,
            None if prev == GENESIS => None,
            None if first_record => {
                found.notes.push(format!(
                    "{place}: the chain begins at seq {}; the records before it were \
                         rotated out",
                    link.seq
                ));
                None
            }
            None => Some(format!(
                "{place}: record seq {} follows a record that is not in the journal",
                link.seq
            )),
        };
        match broken {
            Some(failure) => {
                found.failures.append(&mut unreadable);
                found.failures.push(failure);
            }
            None => {
                for torn in unreadable.drain(..) {
                    found.notes.push(format!(
                        "{torn}; torn by a crash while writing (the chain goes on around it)"
                    ));
                }
            }
        }
        previous = Some((link.seq, hash, place));
    })?;
    found.files = files;
    // After the last record, only the daemon's head can tell a torn write from an edit.
    found.notes.append(&mut unreadable);
    found.last = previous.map(|(seq, hash, _)| (seq, hash));
    Ok(found)
}

/// Whether a journal line is intact: it ends with its `hash` field, and that is the hash
/// of the line without it.
fn line_matches_hash(line: &[u8], hash: &str) -> bool {
    let suffix = format!(",\"hash\":\"{hash}\"}}");
    let Some(body) = line.strip_suffix(suffix.as_bytes()) else {
        return false;
    };
    let mut hashed = body.to_vec();
    hashed.push(b'}');
    hex_sha256(&hashed) == hash
}

/// What a record whose `prev` is not the hash of the record read before it (seq
/// `before`) says about the journal.
fn chain_break(before: u64, seq: u64) -> String {
    if seq == before + 2 {
        format!("record seq {} is missing", before + 1)
    } else if seq > before + 2 {
        format!("records seq {} to {} are missing", before + 1, seq - 1)
    } else if seq <= before {
        "the records are out of order".into()
    } else {
        format!("seq {before} is not the record it was written after: it was replaced")
    }
}

#[cfg(test)]
mod tests;
