//! The guard pinned in bpffs, so that it outlives the daemon: in guard mode every link and
//! map is pinned under `/sys/fs/bpf/clockguard/<build>/{links,maps}/NAME`. A daemon killed
//! with SIGKILL (or crashing) leaves its programs attached, still refusing steps and still
//! writing their events into the pinned ring buffer; the next daemon of the same build
//! adopts them (maps reused by name, links taken over as they are), and reads what they
//! wrote while it was down. A clean stop releases the pins: the guard then ends with the
//! daemon, as an operator who stops it expects. A restart by systemd (`systemctl restart`,
//! the package's upgrade) leaves them to the next daemon (daemon::systemd::restart_pending).
//!
//! `<build>` is a hash of the eBPF object, so only programs and maps of identical layout
//! are ever shared. The pins of another build (an upgrade) are released once the new
//! daemon's own hooks are attached: the two guards overlap, there is no gap.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Where clockguard pins, in the kernel's BPF file system.
pub const PIN_ROOT: &str = "/sys/fs/bpf/clockguard";
/// statfs(2) f_type of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// This build's pin directory under `root`: 16 hex digits of the object's SHA-256.
pub fn build_dir(root: &Path, object: &[u8]) -> PathBuf {
    let digest = Sha256::digest(object);
    let id = hex::encode(&digest[..8]);
    root.join(id)
}

/// Why a guard pinned now would not outlive the daemon, if so: bpffs is not mounted in this
/// mount namespace, and the namespace is not init's (`ip netns exec`, a container). The
/// bpffs clockguard would mount there ends with the namespace, i.e. with the daemon, and
/// its pins with it. In init's namespace (a minimal init, the test VM) a bpffs clockguard
/// mounts stays.
pub fn pins_would_end_with_daemon() -> Option<String> {
    if fs_type(Path::new("/sys/fs/bpf")) == Some(BPF_FS_MAGIC) {
        return None;
    }
    let ours = fs::read_link("/proc/self/ns/mnt").ok()?;
    let init = fs::read_link("/proc/1/ns/mnt").ok()?;
    (ours != init).then(|| {
        format!(
            "bpffs is not mounted on /sys/fs/bpf in this mount namespace ({}, not init's {}): \
             a bpffs mounted here would end with the daemon, and the guard with it",
            ours.display(),
            init.display()
        )
    })
}

/// Mounts bpffs on /sys/fs/bpf when nothing is (a minimal init, the test VM); systemd
/// mounts it at boot.
pub fn ensure_bpffs() -> Result<()> {
    mount_if_absent("bpf", "/sys/fs/bpf", BPF_FS_MAGIC).map(|_mounted| ())
}

/// Mounts a pseudo file system of type `fstype` on `target` unless one with that statfs(2)
/// magic is there already; true if it mounted it. The mount lands in this process's mount
/// namespace only.
pub fn mount_if_absent(fstype: &str, target: &str, magic: i64) -> Result<bool> {
    if fs_type(Path::new(target)) == Some(magic) {
        return Ok(false);
    }
    fs::create_dir_all(target).ok();
    if let Err(err) = clockguard_sys::mount_pseudo_fs(fstype, Path::new(target), fstype) {
        bail!("{fstype} is not mounted on {target} and mounting it failed: {err}");
    }
    Ok(true)
}

fn fs_type(path: &Path) -> Option<i64> {
    clockguard_sys::fs_type(path).ok()
}

/// What is pinned when the daemon starts.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    /// The hooks pinned in this build's directory, by name, when the directory holds every
    /// map as well (a previous daemon of this build left its guard): to adopt.
    pub adoptable: Vec<String>,
    /// Directories whose guard is not adoptable (another build, or this build's with maps
    /// missing): released once this daemon's hooks are attached.
    pub stale: Vec<PathBuf>,
}

/// Looks at `root` before loading: `dir` is this build's directory, `maps` the object's
/// map names. This build's directory, when not adoptable, is renamed aside into `stale`
/// so that the new pins can take its place while the old programs keep guarding.
pub fn survey(root: &Path, dir: &Path, maps: &[String]) -> Result<Found> {
    let mut found = Found::default();
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(found);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != dir {
            found.stale.push(path);
        }
    }
    let links = names_in(&dir.join("links"));
    if links.is_empty() && !dir.exists() {
        return Ok(found);
    }
    let pinned_maps = names_in(&dir.join("maps"));
    if !links.is_empty() && maps.iter().all(|m| pinned_maps.contains(m)) {
        found.adoptable = links;
        return Ok(found);
    }
    let aside = dir.with_extension(format!("stale-{}", std::process::id()));
    fs::rename(dir, &aside)
        .with_context(|| format!("cannot move the incomplete pins of {} aside", dir.display()))?;
    found.stale.push(aside);
    Ok(found)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Removes a pin directory: each link whose pin goes (and that no process holds) is
/// detached, each map freed once no program uses it.
pub fn release(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => {
            Err(err).with_context(|| format!("cannot release the pins in {}", dir.display()))
        }
    }
}

/// Releases every pin directory under `root`; returns how many there were.
pub fn release_all(root: &Path) -> usize {
    let mut released = 0;
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        match release(&entry.path()) {
            Ok(()) => released += 1,
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dirs_differ_by_object() {
        let root = Path::new("/sys/fs/bpf/clockguard");
        let a = build_dir(root, b"object one");
        assert_eq!(a, build_dir(root, b"object one"));
        assert_ne!(a, build_dir(root, b"object two"));
        assert_eq!(a.file_name().unwrap().len(), 16);
    }

    #[test]
    fn survey_adopts_a_complete_build_and_sets_the_rest_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let maps = vec!["CONFIG".to_string(), "EVENTS".to_string()];
        let dir = root.join("aaaa");
        // Nothing pinned yet.
        assert_eq!(survey(root, &dir, &maps).unwrap(), Found::default());
        // A complete guard of this build, and one of another build.
        for sub in ["links", "maps"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("links/settime"), "").unwrap();
        fs::write(dir.join("maps/CONFIG"), "").unwrap();
        fs::write(dir.join("maps/EVENTS"), "").unwrap();
        fs::create_dir_all(root.join("bbbb/links")).unwrap();
        let found = survey(root, &dir, &maps).unwrap();
        assert_eq!(found.adoptable, vec!["settime".to_string()]);
        assert_eq!(found.stale, vec![root.join("bbbb")]);
        // A map missing: this build's pins are moved aside, not adopted.
        fs::remove_file(dir.join("maps/EVENTS")).unwrap();
        let found = survey(root, &dir, &maps).unwrap();
        assert!(found.adoptable.is_empty());
        assert_eq!(found.stale.len(), 2, "{found:?}");
        assert!(!dir.exists());
        assert_eq!(release_all(root), 2);
        assert!(fs::read_dir(root).unwrap().next().is_none());
    }
}
