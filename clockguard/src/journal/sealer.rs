//! The sealing state on disk (`seal.key` in the state directory): the current epoch's key,
//! overwritten in place at every evolution so the old key is gone (see
//! `clockguard_core::seal` for the scheme).

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use clockguard_core::seal::{SealKey, SEED_LEN};

pub const SEAL_KEY_FILE: &str = "seal.key";

pub struct Sealer {
    path: PathBuf,
    file: File,
    key: SealKey,
}

impl Sealer {
    /// The sealing state of `dir`, None when sealing was never set up there.
    pub fn open(dir: &Path) -> Result<Option<Sealer>> {
        let path = dir.join(SEAL_KEY_FILE);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let key = SealKey::from_state(&bytes)
            .with_context(|| format!("the sealing state {}", path.display()))?;
        Ok(Some(Sealer { path, file, key }))
    }

    /// Writes a new sealing state, epoch 0 of `seed`, readable by root only. Refuses to
    /// replace one unless `replace`.
    pub fn create(dir: &Path, seed: &[u8; SEED_LEN], replace: bool) -> Result<Sealer> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join(SEAL_KEY_FILE);
        if !replace && path.exists() {
            let what = match Sealer::open(dir) {
                Ok(Some(existing)) => format!(
                    "sealing is set up already (key id {}, epoch {})",
                    existing.key.key_id(),
                    existing.key.epoch()
                ),
                Ok(None) => "it was just created".into(),
                Err(err) => format!("it cannot be used ({err:#})"),
            };
            bail!(
                "{} exists: {what}. --force replaces it; the records sealed so far then \
                 verify only with the old verification key",
                path.display()
            );
        }
        let key = SealKey::from_seed(seed);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(&key.to_state())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Sealer { path, file, key })
    }

    pub fn key(&self) -> &SealKey {
        &self.key
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves to the next epoch and overwrites the old key on disk. The key in memory moves
    /// on even when the write fails (the error says so): the old epoch was sealed, and a
    /// record of the next must never be MACed with a key that sealed it.
    pub fn evolve(&mut self) -> Result<()> {
        self.key.evolve();
        self.file
            .write_all_at(&self.key.to_state(), 0)
            .and_then(|()| self.file.sync_data())
            .with_context(|| {
                format!(
                    "cannot write the sealing state {} (epoch {}): the previous epoch's key \
                     stays on disk until the next evolution",
                    self.path.display(),
                    self.key.epoch()
                )
            })
    }
}
