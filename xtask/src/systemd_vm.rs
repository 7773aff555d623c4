//! The systemd test machine: a Debian 12 disk image built once from Debian's packages
//! (mmdebstrap) and cached under target/systemd-vm, booted by vm.rs with systemd as PID 1.
//! The tests in tests/systemd install the .deb in it and drive clockguard through systemctl,
//! journalctl and the peers an operator runs beside it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd};

/// Debian 12, the release whose kernel (6.1) heads the kernel matrix.
const SUITE: &str = "bookworm";

/// What the image holds beyond a minimal Debian, and why. Recommends are not installed.
const PACKAGES: &[(&str, &str)] = &[
    ("systemd", "PID 1, journald, systemctl"),
    ("systemd-sysv", "/sbin/init is systemd"),
    ("dbus", "systemd-logind and systemctl's bus"),
    ("udev", "device units, /dev/virtio-ports for vng's channel"),
    ("kmod", "modules of the kernel under test"),
    ("iproute2", "network namespaces and addresses in tests"),
    ("procps", "ps, pgrep, pidof"),
    (
        "dovecot-imapd",
        "the service that kills itself when time moves backwards",
    ),
    ("keepalived", "VRRP peer of the failover scenario"),
    (
        "prometheus",
        "scrapes clockguard and evaluates the shipped alert rules",
    ),
    ("man-db", "man clockguard"),
    (
        "bash-completion",
        "tab completion of the shipped completions",
    ),
    ("zsh", "the shipped zsh completion"),
    ("fish", "the shipped fish completion"),
    ("jq", "JSON checks"),
    ("curl", "Prometheus's HTTP API"),
    (
        "ca-certificates",
        "curl's trust store (nothing is fetched from outside)",
    ),
];

/// Size of the ext4 file system (sparse: the packages take about 700 MB of it).
const IMAGE_SIZE: &str = "3G";

fn dir() -> PathBuf {
    util::repo_root().join("target").join("systemd-vm")
}

/// PACKAGES' names, as mmdebstrap's --include takes them.
fn package_list() -> String {
    PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .collect::<Vec<_>>()
        .join(",")
}

/// What the cached image was built from: a different manifest builds it again.
fn manifest() -> String {
    format!(
        "suite={SUITE}\nvariant=minbase\nsize={IMAGE_SIZE}\npackages={}\n",
        package_list()
    )
}

/// The image, built if missing or built from another manifest. Needs root (mmdebstrap's
/// root mode, files owned by the image's users) and the system's own Debian mirror.
pub fn ensure_image() -> Result<PathBuf> {
    let dir = dir();
    let image = dir.join(format!("debian-{SUITE}.img"));
    let manifest_path = dir.join(format!("debian-{SUITE}.manifest"));
    let wanted = manifest();
    if image.is_file() && fs::read_to_string(&manifest_path).is_ok_and(|m| m == wanted) {
        return Ok(image);
    }
    if !util::is_root() {
        bail!("building the systemd test image needs root (mmdebstrap --mode=root)");
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mirror = crate::kernels::system_mirror()?;
    let root = dir.join("root.tmp");
    let partial = dir.join("image.tmp");
    remove_tree(&root)?;
    let _ = fs::remove_file(&partial);
    let _ = fs::remove_file(&manifest_path);

    println!(
        "systemd-vm: building a Debian {SUITE} image from {mirror} (once; cached in {})",
        dir.display()
    );
    util::run(
        cmd("mmdebstrap")
            .args(["--mode=root", "--variant=minbase", "--quiet"])
            .arg(format!("--include={}", package_list()))
            .arg(SUITE)
            .arg(&root)
            .arg(&mirror),
    )
    .context("mmdebstrap failed (is the mirror in /etc/apt/sources.list.d reachable?)")?;
    util::run(
        cmd("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "cgroot", "-d"])
            .arg(&root)
            .arg(&partial)
            .arg(IMAGE_SIZE),
    )?;
    remove_tree(&root)?;
    fs::rename(&partial, &image)
        .with_context(|| format!("cannot move {} to {}", partial.display(), image.display()))?;
    fs::write(&manifest_path, wanted)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    Ok(image)
}

fn remove_tree(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_every_package_once() {
        let m = manifest();
        let line = m.lines().find_map(|l| l.strip_prefix("packages=")).unwrap();
        let names: Vec<&str> = line.split(',').collect();
        assert_eq!(names.len(), PACKAGES.len());
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a package listed twice: {line}");
        assert!(names.contains(&"systemd-sysv"), "systemd must be PID 1");
    }
}
