//! Forward-secure sealing of the audit journal: pure key handling, no I/O.
//!
//! The scheme is the forward-secure MAC of Bellare and Yee ("Forward-Security in
//! Private-Key Cryptography", 2003), built from maintained primitives only (HMAC-SHA-256
//! from the `hmac` and `sha2` crates):
//!
//! - `clockguard audit --setup-keys` draws a random 32-byte seed. The seed is the
//!   verification key, printed once and kept off the machine; the host keeps only the
//!   current key `k_e` of epoch `e` (`k_0` is derived from the seed).
//! - Every journal record carries `mac = HMAC(k_e, domain ‖ e ‖ seq ‖ hash)`; its `hash`
//!   already commits to the whole chain before it.
//! - A `seal` record ends epoch `e`. Right after it the key evolves one way,
//!   `k_{e+1} = SHA-256(domain ‖ k_e)`, and `k_e` is overwritten on disk.
//!
//! Whoever takes the host at epoch `n` learns `k_n` and nothing before it: a record of an
//! earlier epoch cannot be rewritten with a MAC that verifies, nor a seal of an earlier
//! epoch forged, so the verifier (who derives every `k_e` from the seed) names the first
//! record that is not as written. Records after the last seal are only as good as the
//! current key: reported as unsealed, not as proven.

use anyhow::{bail, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const SEED_LEN: usize = 32;

/// Domain separation: a key of this scheme is never used for anything else.
const KEY_FROM_SEED: &[u8] = b"clockguard journal seal v1: key 0";
const EVOLVE: &[u8] = b"clockguard journal seal v1: evolve";
const RECORD_MAC: &[u8] = b"clockguard journal seal v1: record";
const KEY_ID: &[u8] = b"clockguard journal seal v1: key id";

/// The state file: magic, key id, epoch (u64 LE), key. Fixed size, so that an evolution
/// overwrites the old key in place.
const STATE_MAGIC: &[u8; 8] = b"CGSEAL1\0";
pub const STATE_LEN: usize = 8 + 8 + 8 + 32;

/// The sealing key of one epoch, with the id of the seed it descends from.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey {
    key_id: [u8; 8],
    epoch: u64,
    key: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    // Never print the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey(id {}, epoch {})", self.key_id(), self.epoch)
    }
}

impl SealKey {
    /// Epoch 0 of the key that `seed` verifies.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> SealKey {
        SealKey {
            key_id: key_id_of(seed),
            epoch: 0,
            key: sha256(&[KEY_FROM_SEED, seed]),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// 16 hex digits naming the seed (and so the verification key) this key descends from.
    pub fn key_id(&self) -> String {
        hex::encode(self.key_id)
    }

    /// The next epoch's key; the caller drops (and overwrites) this one.
    pub fn evolve(&mut self) {
        self.key = sha256(&[EVOLVE, &self.key]);
        self.epoch += 1;
    }

    /// The MAC (hex) of the record `seq` whose chain hash is `hash` (hex), at this epoch.
    pub fn record_mac(&self, seq: u64, hash: &str) -> String {
        hex::encode(self.mac(seq, hash).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is this epoch's MAC of record `seq` with chain hash `hash`
    /// (compared in constant time).
    pub fn verify_record(&self, seq: u64, hash: &str, mac: &str) -> bool {
        match hex::decode(mac) {
            Ok(bytes) => self.mac(seq, hash).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, seq: u64, hash: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(RECORD_MAC);
        mac.update(&self.epoch.to_be_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(hash.as_bytes());
        mac
    }

    /// The state file's bytes.
    pub fn to_state(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        out[..8].copy_from_slice(STATE_MAGIC);
        out[8..16].copy_from_slice(&self.key_id);
        out[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        out[24..].copy_from_slice(&self.key);
        out
    }

    /// Reads a state file's bytes; the error says what is wrong with them.
    pub fn from_state(bytes: &[u8]) -> Result<SealKey> {
        if bytes.len() != STATE_LEN {
            bail!(
                "{} bytes, a sealing state has {STATE_LEN}: not a clockguard sealing state, or \
                 damaged",
                bytes.len()
            );
        }
        if &bytes[..8] != STATE_MAGIC {
            bail!(
                "it does not begin with the sealing state's magic: not a clockguard sealing state"
            );
        }
        let mut key = SealKey {
            key_id: [0; 8],
            epoch: 0,
            key: [0; 32],
        };
        key.key_id.copy_from_slice(&bytes[8..16]);
        key.epoch = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        key.key.copy_from_slice(&bytes[24..]);
        Ok(key)
    }
}

fn key_id_of(seed: &[u8; SEED_LEN]) -> [u8; 8] {
    let digest = sha256(&[KEY_ID, seed]);
    digest[..8]
        .try_into()
        .expect("a SHA-256 digest has 32 bytes")
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The verification key as printed: the seed in 8 groups of 8 hex digits.
pub fn format_verification_key(seed: &[u8; SEED_LEN]) -> String {
    hex::encode(seed)
        .as_bytes()
        .chunks(8)
        .map(|group| std::str::from_utf8(group).expect("hex is ASCII"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads a verification key (dashes and spaces optional).
pub fn parse_verification_key(text: &str) -> Result<[u8; SEED_LEN]> {
    let digits: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
    let Ok(bytes) = hex::decode(digits.trim()) else {
        bail!("the verification key is not hexadecimal (as `clockguard audit --setup-keys` prints it)");
    };
    match <[u8; SEED_LEN]>::try_from(bytes.as_slice()) {
        Ok(seed) => Ok(seed),
        Err(_) => bail!(
            "the verification key has {} bytes, one has {SEED_LEN} (64 hex digits)",
            bytes.len()
        ),
    }
}

/// The verifier's keys: derives `k_e` from the seed, moving forward epoch by epoch (a
/// journal is read oldest first) and starting over only when asked for an earlier one.
pub struct Verifier {
    seed: [u8; SEED_LEN],
    current: SealKey,
}

impl Verifier {
    pub fn new(seed: [u8; SEED_LEN]) -> Verifier {
        Verifier {
            current: SealKey::from_seed(&seed),
            seed,
        }
    }

    pub fn key_id(&self) -> String {
        self.current.key_id()
    }

    /// The key of `epoch`. Epochs are at most one per seal interval (15 min by default)
    /// plus one per stop and rotation: years of them derive in well under a second.
    pub fn at(&mut self, epoch: u64) -> &SealKey {
        if epoch < self.current.epoch {
            self.current = SealKey::from_seed(&self.seed);
        }
        while self.current.epoch < epoch {
            self.current.evolve();
        }
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];
    const HASH: &str = "5f0c2d4e8a7b6c1d9e3f20415263748596a7b8c9dae0f1021324354657687980";

    #[test]
    fn a_mac_verifies_only_with_its_epoch_seq_and_hash() {
        let key = SealKey::from_seed(&SEED);
        let mac = key.record_mac(42, HASH);
        assert!(key.verify_record(42, HASH, &mac));
        assert!(!key.verify_record(43, HASH, &mac), "another seq");
        assert!(
            !key.verify_record(42, &HASH.replace('5', "6"), &mac),
            "another hash"
        );
        let mut next = key.clone();
        next.evolve();
        assert!(!next.verify_record(42, HASH, &mac), "another epoch's key");
        assert!(!key.verify_record(42, HASH, "not hex"));
        assert!(!key.verify_record(42, HASH, &mac[..62]), "a truncated MAC");
    }

    #[test]
    fn the_verifier_derives_every_epoch_the_host_reaches() {
        let mut host = SealKey::from_seed(&SEED);
        let mut verifier = Verifier::new(SEED);
        let mut macs = Vec::new();
        for seq in 0..50 {
            macs.push((host.epoch(), seq, host.record_mac(seq, HASH)));
            host.evolve();
        }
        // Forward, then back to an earlier epoch (it starts over from the seed).
        for (epoch, seq, mac) in macs.iter().chain(macs.iter().take(3)) {
            assert!(verifier.at(*epoch).verify_record(*seq, HASH, mac));
        }
        assert_eq!(verifier.key_id(), host.key_id());
    }

    #[test]
    fn another_seed_has_another_id_and_keys() {
        let ours = SealKey::from_seed(&SEED);
        let theirs = SealKey::from_seed(&[8; 32]);
        assert_ne!(ours.key_id(), theirs.key_id());
        assert_eq!(ours.key_id().len(), 16);
        assert!(!theirs.verify_record(1, HASH, &ours.record_mac(1, HASH)));
    }

    #[test]
    fn the_state_round_trips_and_bad_state_is_named() {
        let mut key = SealKey::from_seed(&SEED);
        key.evolve();
        key.evolve();
        let back = SealKey::from_state(&key.to_state()).unwrap();
        assert_eq!(back, key);
        assert_eq!(back.epoch(), 2);
        let err = SealKey::from_state(&[0; 10]).unwrap_err().to_string();
        assert!(err.contains("10 bytes"), "{err}");
        let mut wrong = key.to_state();
        wrong[0] = b'X';
        let err = SealKey::from_state(&wrong).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
        // The key never reaches a log through Debug.
        let shown = format!("{key:?}");
        assert!(shown.contains("epoch 2") && !shown.contains(&hex::encode(key.key)));
    }

    #[test]
    fn the_verification_key_prints_in_groups_and_parses_back() {
        let text = format_verification_key(&SEED);
        assert_eq!(text.len(), 64 + 7);
        assert_eq!(text.split('-').count(), 8);
        assert_eq!(parse_verification_key(&text).unwrap(), SEED);
        assert_eq!(
            parse_verification_key(&text.replace('-', "")).unwrap(),
            SEED
        );
        let err = parse_verification_key("abcd").unwrap_err().to_string();
        assert!(err.contains("2 bytes"), "{err}");
        let err = parse_verification_key("not a key").unwrap_err().to_string();
        assert!(err.contains("not hexadecimal"), "{err}");
    }
}
