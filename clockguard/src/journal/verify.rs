//! `clockguard audit --verify`: the hash chain, the rotation records and, with the
//! verification key, the seals.

use clockguard_core::seal::{Verifier, SEED_LEN};

use super::*;

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
    /// The seals, when a verification key was given.
    pub sealing: Option<Sealing>,
}

/// The seals' verdict.
#[derive(Debug, Default)]
pub struct Sealing {
    /// The verification key's id.
    pub key_id: String,
    /// Records whose MAC verified.
    pub macs_verified: u64,
    /// The last seal that verified, with nothing before it failing: every record up to
    /// it is proven as written. (seq, epoch).
    pub proven_through: Option<(u64, u64)>,
    /// Records after the last seal: only as good as the key on the host.
    pub unsealed_after: u64,
}

/// The last chained record read.
struct Previous {
    seq: u64,
    hash: String,
    place: String,
}

/// The walk's state between lines.
struct Walk {
    found: Verification,
    previous: Option<Previous>,
    /// Lines that are no record, since the last record read.
    unreadable: Vec<String>,
    /// The first record read, and the newest rotation record's first kept seq (and its
    /// own seq).
    first_seq: Option<u64>,
    kept_from: Option<(u64, u64)>,
    seals: Option<SealWalk>,
}

/// The seals' walk: epochs go up by one at each seal, and only there.
struct SealWalk {
    verifier: Verifier,
    /// The epoch the next record must carry (None until the first sealed record), and
    /// the seq where that epoch's run of records began.
    epoch: Option<(u64, u64)>,
    /// The first sealed record (seq), for a record that is not sealed after it.
    sealed_from: Option<u64>,
    /// The last record written before sealing was set up.
    before_setup: Option<u64>,
    /// Key ids named by seal records other than the verification key's.
    other_key_ids: Vec<String>,
    failed: bool,
    report: Sealing,
}

/// Walks the hash chain of the journal in `dir`, oldest record first; with `seed` (the
/// verification key), the seals too.
pub fn verify(dir: &Path, seed: Option<[u8; SEED_LEN]>) -> Result<Verification> {
    let mut walk = Walk {
        found: Verification::default(),
        previous: None,
        unreadable: Vec::new(),
        first_seq: None,
        kept_from: None,
        seals: seed.map(|seed| {
            let verifier = Verifier::new(seed);
            SealWalk {
                report: Sealing {
                    key_id: verifier.key_id(),
                    ..Sealing::default()
                },
                verifier,
                epoch: None,
                sealed_from: None,
                before_setup: None,
                other_key_ids: Vec::new(),
                failed: false,
            }
        }),
    };
    let files = each_line(dir, |path, number, text| {
        walk.line(&format!("{}:{number}", path.display()), text);
    })?;
    Ok(walk.finish(files))
}

impl Walk {
    fn line(&mut self, place: &str, text: &[u8]) {
        let found = &mut self.found;
        let link = match serde_json::from_slice::<Link>(text) {
            Ok(link) => link,
            Err(err) => {
                self.unreadable
                    .push(format!("{place}: not a journal record ({err})"));
                return;
            }
        };
        let first_record = found.records == 0;
        found.records += 1;
        self.first_seq.get_or_insert(link.seq);
        // Only the daemon's rotation records say what a rotation kept.
        let rotation = link.source == "daemon" && (link.kind == "rotate" || link.is_seal());
        if let Some(first_kept) = link
            .detail
            .as_ref()
            .and_then(|d| d.first_kept_seq)
            .filter(|_| rotation)
        {
            self.kept_from = Some((first_kept, link.seq));
        }
        let Some(hash) = link.hash.clone() else {
            match &self.previous {
                Some(previous) => found.failures.push(format!(
                    "{place}: record seq {} has no hash, but the chain began before it \
                     (seq {} at {}): its hash was removed",
                    link.seq, previous.seq, previous.place
                )),
                None => found.notes.push(format!(
                    "{place}: record seq {} was written before the journal was chained",
                    link.seq
                )),
            }
            found.notes.append(&mut self.unreadable);
            return;
        };
        found.chained += 1;
        if !line_matches_hash(text, &link) {
            found.failures.push(format!(
                "{place}: record seq {} was edited: its content does not match its hash",
                link.seq
            ));
        }
        let prev = link.prev.as_deref().unwrap_or("");
        let broken = match &self.previous {
            Some(previous) if prev != previous.hash => Some(format!(
                "{place}: record seq {} does not follow the record before it (seq {} at \
                 {}): {}",
                link.seq,
                previous.seq,
                previous.place,
                chain_break(previous.seq, link.seq)
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
                found.failures.append(&mut self.unreadable);
                found.failures.push(failure);
            }
            None => {
                for torn in self.unreadable.drain(..) {
                    found.notes.push(format!(
                        "{torn}; torn by a crash while writing (the chain goes on around it)"
                    ));
                }
            }
        }
        if let Some(seals) = self.seals.as_mut() {
            if let Err(failure) = seals.record(&link, &hash) {
                seals.failed = true;
                found.failures.push(format!("{place}: {failure}"));
            }
        }
        self.previous = Some(Previous {
            seq: link.seq,
            hash,
            place: place.to_string(),
        });
    }

    fn finish(mut self, files: usize) -> Verification {
        let found = &mut self.found;
        found.files = files;
        // After the last record, only the daemon's head can tell a torn write from an edit.
        found.notes.append(&mut self.unreadable);
        if let (Some(first), Some((kept_from, at))) = (self.first_seq, self.kept_from) {
            if first > kept_from {
                found.failures.push(format!(
                    "records seq {kept_from} to {} are missing: the rotation at seq {at} \
                     kept the files from seq {kept_from} on, but the oldest file now begins \
                     at seq {first} (a rotated file was deleted)",
                    first - 1
                ));
            }
        }
        found.last = self.previous.map(|p| (p.seq, p.hash));
        if let Some(seals) = self.seals {
            found.sealing = Some(seals.finish(found));
        }
        self.found
    }
}

impl SealWalk {
    /// Checks one chained record's epoch and MAC; Err says what is wrong with it.
    fn record(&mut self, link: &Link, hash: &str) -> std::result::Result<(), String> {
        let seq = link.seq;
        if link.is_seal() {
            if let Some(id) = link.detail.as_ref().and_then(|d| d.key_id.clone()) {
                if id != self.verifier.key_id() && !self.other_key_ids.contains(&id) {
                    self.other_key_ids.push(id);
                }
            }
        }
        let (Some(epoch), Some(mac)) = (link.epoch, link.mac.as_deref()) else {
            return match self.sealed_from {
                Some(from) => Err(format!(
                    "record seq {seq} is not sealed, but the journal is sealed from seq \
                     {from} on: the sealing state was removed, or this record was written \
                     by another hand"
                )),
                None => {
                    self.before_setup = Some(seq);
                    Ok(())
                }
            };
        };
        self.sealed_from.get_or_insert(seq);
        self.report.unsealed_after += 1;
        let (expected, run_from) = *self.epoch.get_or_insert((epoch, seq));
        if epoch > expected {
            return Err(format!(
                "record seq {seq} was rewritten: it carries epoch {epoch}, but epoch \
                 {expected} has not been sealed before it (a later key MACed it)"
            ));
        }
        if epoch < expected {
            return Err(format!(
                "record seq {seq} carries epoch {epoch}, but the records from seq \
                 {run_from} on carry epoch {expected}: those were rewritten with a later key"
            ));
        }
        if !self.verifier.at(epoch).verify_record(seq, hash, mac) {
            return Err(format!(
                "record seq {seq} was rewritten: its MAC does not verify (epoch {epoch}, \
                 key id {})",
                self.verifier.key_id()
            ));
        }
        self.report.macs_verified += 1;
        if link.is_seal() {
            self.epoch = Some((epoch + 1, seq + 1));
            if !self.failed {
                self.report.proven_through = Some((seq, epoch));
                self.report.unsealed_after = 0;
            }
        }
        Ok(())
    }

    fn finish(self, found: &mut Verification) -> Sealing {
        if let Some(last) = self.before_setup {
            found.notes.push(format!(
                "records up to seq {last} were written before sealing was set up: chained, \
                 not sealed"
            ));
        }
        if self.sealed_from.is_none() {
            found.failures.push(
                "no record is sealed: sealing was not set up for this journal (clockguard \
                 audit --setup-keys), or the daemon has not run since"
                    .into(),
            );
        } else if self.report.macs_verified == 0 {
            found.notes.push(format!(
                "no record's MAC verifies with this key (key id {}): is it this journal's \
                 verification key?{}",
                self.report.key_id,
                if self.other_key_ids.is_empty() {
                    String::new()
                } else {
                    format!(
                        " The journal's seals name key id {}",
                        self.other_key_ids.join(", ")
                    )
                }
            ));
        }
        self.report
    }
}

/// Whether a journal line is intact: it ends with its `hash` field (then, when sealed,
/// `epoch` and `mac`), and that is the hash of the line before it.
fn line_matches_hash(line: &[u8], link: &Link) -> bool {
    let Some(hash) = link.hash.as_deref() else {
        return false;
    };
    let mut suffix = format!(",\"hash\":\"{hash}\"");
    if let (Some(epoch), Some(mac)) = (link.epoch, link.mac.as_deref()) {
        suffix.push_str(&format!(",\"epoch\":{epoch},\"mac\":\"{mac}\""));
    }
    suffix.push('}');
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
