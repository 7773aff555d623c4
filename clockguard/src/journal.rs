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
//!
//! Against root after the fact: once `clockguard audit --setup-keys` has written a sealing
//! key, every record also carries its epoch and a MAC with that epoch's key, and a `seal`
//! record ends each epoch, after which the key evolves one way ([`Sealer`],
//! `clockguard_core::seal`); `verify` with the verification key then proves every record
//! up to the last seal. Each file after a rotation begins with the first seq still kept,
//! so a deleted rotated file is a gap `verify` names.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::record::{rfc3339_ns, Record, Source, Verdict};
use serde_json::{json, Value};

mod sealer;
mod verify;
pub use sealer::Sealer;
pub use verify::{verify, Verification};

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
    /// Forward-secure sealing, once `clockguard audit --setup-keys` has set it up.
    sealer: Option<Sealer>,
}

/// What `Journal::append` did: the records written (numbered and chained, to publish),
/// and when a write or a rotation failed, why and the records still to write.
pub struct Appended {
    pub written: Vec<Record>,
    pub failed: Option<(anyhow::Error, Vec<Record>)>,
}

/// Records composed into one write, not yet in the file.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    records: Vec<Record>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`, with its sealing state when there is one.
    /// Returns it and the problems found (a torn last line, a sealing state that cannot be
    /// used), which the caller reports.
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
        let ended_with_stop = last.as_ref().map(Link::is_clean_stop);
        let sealer = match Sealer::open(dir) {
            Ok(Some(mut sealer)) => {
                if let Some(problem) = catch_up(&mut sealer, last.as_ref()) {
                    problems.push(problem);
                }
                Some(sealer)
            }
            Ok(None) => None,
            Err(err) => {
                problems.push(format!("{err:#}; the journal is written unsealed"));
                None
            }
        };
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
                sealer,
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

    /// The sealing key's id and current epoch, when the journal is sealed.
    pub fn sealing(&self) -> Option<(String, u64)> {
        let key = self.sealer.as_ref()?.key();
        Some((key.key_id(), key.epoch()))
    }

    /// A seal record ending the current epoch (None when the journal is not sealed), for
    /// `append`. `reason`: interval | stop | rotation.
    pub fn seal_record(&self, reason: &str) -> Option<Record> {
        let key = self.sealer.as_ref()?.key();
        Some(daemon_record(
            "seal",
            json!({ "reason": reason, "key_id": key.key_id() }),
        ))
    }

    /// Numbers, chains (and seals) the records and appends them, one write per file and
    /// seal; rotates first when the batch would take the file past `max_bytes`, and then
    /// begins the new file with a record of the first seq still kept (a seal, when
    /// sealed). After a seal record is written the sealing key evolves. Returns every
    /// record written (the rotation's included) even when a later write or rotation
    /// failed; then also the error and the records not written, to retry: the chain goes
    /// on from the last written.
    pub fn append(&mut self, records: Vec<Record>) -> Appended {
        let mut queue: VecDeque<Record> = records.into();
        let mut pending = Pending::default();
        let mut written = Vec::with_capacity(queue.len());
        let failed = match self.append_queue(&mut queue, &mut pending, &mut written) {
            Ok(()) => None,
            Err(err) => {
                let mut unwritten: Vec<Record> =
                    pending.records.into_iter().map(unchained).collect();
                unwritten.extend(queue);
                Some((err, unwritten))
            }
        };
        Appended { written, failed }
    }

    fn append_queue(
        &mut self,
        queue: &mut VecDeque<Record>,
        pending: &mut Pending,
        written: &mut Vec<Record>,
    ) -> Result<()> {
        while let Some(mut record) = queue.pop_front() {
            let start = pending.bytes.len();
            let (seq, prev) = match pending.records.last() {
                Some(last) => (last.seq + 1, last.hash.clone().unwrap_or_default()),
                None => (self.next_seq, self.head_hash.clone()),
            };
            self.compose(&mut record, seq, prev, &mut pending.bytes)?;
            let line_len = (pending.bytes.len() - start) as u64;
            if self.size > 0 && self.size + start as u64 + line_len > self.max_bytes {
                // Flush what fits in the current file, rotate, and begin the new file with
                // the rotation's record; this record comes after it.
                pending.bytes.truncate(start);
                queue.push_front(unchained(record));
                self.flush(pending, written)?;
                self.rotate()?;
                queue.push_front(self.rotation_record()?);
                continue;
            }
            let seal = is_seal(&record);
            pending.records.push(record);
            if seal {
                self.flush(pending, written)?;
                self.end_epoch();
            }
        }
        self.flush(pending, written)
    }

    /// Serialises `record` as number `seq` after the record whose hash is `prev` onto
    /// `out`: its line, hashed up to `hash`, then the epoch and MAC when sealed.
    fn compose(
        &self,
        record: &mut Record,
        seq: u64,
        prev: String,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        record.seq = seq;
        record.prev = Some(prev);
        record.hash = None;
        record.epoch = None;
        record.mac = None;
        serde_json::to_writer(&mut *out, &*record)?;
        let hash = hex_sha256(&out[start..]);
        // The hashed line ends `..."prev":"…"}`: `hash` goes before the closing brace.
        out.pop();
        write!(out, ",\"hash\":\"{hash}\"")?;
        if let Some(sealer) = &self.sealer {
            let key = sealer.key();
            let mac = key.record_mac(seq, &hash);
            write!(out, ",\"epoch\":{},\"mac\":\"{mac}\"", key.epoch())?;
            record.epoch = Some(key.epoch());
            record.mac = Some(mac);
        }
        out.extend_from_slice(b"}\n");
        record.hash = Some(hash);
        Ok(())
    }

    /// Writes the pending records and moves them to `written`.
    fn flush(&mut self, pending: &mut Pending, written: &mut Vec<Record>) -> Result<()> {
        self.write_all(&pending.bytes)?;
        pending.bytes.clear();
        if let Some(last) = pending.records.last() {
            self.next_seq = last.seq + 1;
            self.head_hash = last.hash.clone().unwrap_or_else(|| GENESIS.into());
        }
        written.append(&mut pending.records);
        Ok(())
    }

    /// After a seal record is in the file: makes it durable, then evolves the key (the
    /// other order would leave, after a crash, an epoch that no seal ends). The key
    /// evolves even when the sync fails: the seal is written, and a record after it MACed
    /// with the sealed epoch's key would read as rewritten.
    fn end_epoch(&mut self) {
        if let Err(err) = self.sync() {
            tracing::error!("{err:#}: the seal may not be on disk yet");
        }
        let (seq, hash) = (self.next_seq - 1, self.head_hash.clone());
        let Some(sealer) = self.sealer.as_mut() else {
            return;
        };
        let (key_id, epoch) = (sealer.key().key_id(), sealer.key().epoch());
        // The system log keeps a copy outside the state directory.
        tracing::info!(
            "journal sealed: epoch {epoch} ends at seq {seq}, hash {hash}, key id {key_id}"
        );
        if let Err(err) = sealer.evolve() {
            tracing::error!("{err:#}");
        }
    }

    /// The first record of a new file: the first seq the kept files still hold, so that a
    /// rotated file deleted later is a gap `--verify` names. A seal when sealed.
    fn rotation_record(&self) -> Result<Record> {
        let first_kept_seq = journal_files(&self.dir)
            .iter()
            .find(|path| **path != self.path())
            .map(|oldest| first_seq_in(oldest))
            .transpose()?
            .flatten()
            // Nothing kept (keep_journals = 0): the new file begins with this record.
            .unwrap_or(self.next_seq);
        let mut record = self
            .seal_record("rotation")
            .unwrap_or_else(|| daemon_record("rotate", json!({})));
        if let Some(Value::Object(detail)) = record.detail.as_mut() {
            detail.insert("first_kept_seq".into(), first_kept_seq.into());
        }
        Ok(record)
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
        let rename = |from: &Path, to: &Path| {
            fs::rename(from, to).with_context(|| {
                format!(
                    "cannot rotate the journal: renaming {} to {}",
                    from.display(),
                    to.display()
                )
            })
        };
        if self.keep == 0 {
            fs::remove_file(&current).with_context(|| {
                format!("cannot rotate the journal: removing {}", current.display())
            })?;
        } else {
            let _ = fs::remove_file(rotated_path(&self.dir, self.keep));
            for n in (1..self.keep).rev() {
                let from = rotated_path(&self.dir, n);
                if from.exists() {
                    rename(&from, &rotated_path(&self.dir, n + 1))?;
                }
            }
            rename(&current, &rotated_path(&self.dir, 1))?;
        }
        self.file = open_append(&current)?;
        self.size = 0;
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path().display()))
    }
}

/// A record as the caller gave it, without what `compose` added (to be composed again).
fn unchained(mut record: Record) -> Record {
    record.prev = None;
    record.hash = None;
    record.epoch = None;
    record.mac = None;
    record
}

fn is_seal(record: &Record) -> bool {
    record.source == Source::Daemon && record.kind == "seal"
}

/// The daemon's own records (start, stop, seal, ...).
pub fn daemon_record(kind: &str, detail: Value) -> Record {
    Record {
        time: rfc3339_ns(crate::clock::realtime_ns()),
        source: Source::Daemon,
        kind: kind.into(),
        detail: Some(detail),
        result: "0".into(),
        verdict: Verdict::Observed,
        ..Default::default()
    }
}

/// Brings the sealing key up to the journal: after a crash between a seal's write and
/// the key's evolution, the key is still the sealed epoch's. Returns what to report.
fn catch_up(sealer: &mut Sealer, last: Option<&Link>) -> Option<String> {
    let last = last?;
    let epoch = last.epoch?;
    let current = if last.is_seal() { epoch + 1 } else { epoch };
    let mut problem = None;
    while sealer.key().epoch() < current {
        problem = Some(format!(
            "the sealing key was at epoch {} but the journal's last record (seq {}) is of \
             epoch {epoch}{}: the key moved on to epoch {current}",
            sealer.key().epoch(),
            last.seq,
            if last.is_seal() { ", a seal" } else { "" }
        ));
        if let Err(err) = sealer.evolve() {
            return Some(format!("{err:#}"));
        }
    }
    problem
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
    epoch: Option<u64>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    detail: Option<LinkDetail>,
}

/// What the daemon's seal and rotation records say in `detail`.
#[derive(serde::Deserialize, Default)]
struct LinkDetail {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    first_kept_seq: Option<u64>,
}

impl Link {
    fn is_seal(&self) -> bool {
        self.source == "daemon" && self.kind == "seal"
    }

    /// The daemon's last record at a clean stop: "stop", or the seal written after it.
    fn is_clean_stop(&self) -> bool {
        self.source == "daemon"
            && (self.kind == "stop"
                || (self.is_seal()
                    && self
                        .detail
                        .as_ref()
                        .is_some_and(|d| d.reason.as_deref() == Some("stop"))))
    }
}

/// The seq of the first record of a file (None when it has none).
fn first_seq_in(path: &Path) -> Result<Option<u64>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    for line in BufReader::new(file).split(b'\n') {
        if let Ok(link) = serde_json::from_slice::<Link>(&line?) {
            return Ok(Some(link.seq));
        }
    }
    Ok(None)
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
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if read == 0 {
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

#[cfg(test)]
mod tests;
