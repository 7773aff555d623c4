//! The kernels the VM suite runs on: Debian's own packages, fetched with a private apt
//! configuration under target/kernels/apt and unpacked with `dpkg -x` under target/kernels/.
//! Nothing is installed: the system's apt sources, its package lists, /boot and /lib/modules
//! stay as they are.
//!
//! virtme-ng finds an unpacked kernel's modules by itself: it walks up from the image to the
//! directory holding `lib/modules` (or `usr/lib/modules`) and links
//! `/lib/modules/$(uname -r)` to them inside the guest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd, output_ok, run};

/// One kernel series of the matrix, resolved to its newest package at setup time.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    /// What `--kernel` and the summary table call it.
    pub label: &'static str,
    /// The Debian suite that carries it.
    pub suite: &'static str,
    /// Why it is in the matrix.
    pub why: &'static str,
}

/// Debian 12, Debian 13, and the newest kernels (sid) that rolling distributions run.
pub const MATRIX: &[Series] = &[
    Series {
        label: "6.1",
        suite: "bookworm",
        why: "Debian 12",
    },
    Series {
        label: "6.12",
        suite: "trixie",
        why: "Debian 13",
    },
    Series {
        label: "7.2",
        suite: "sid",
        why: "the newest kernels (Debian sid)",
    },
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A kernel unpacked under target/kernels, ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The series label ("6.12"), or the file name of a kernel given by path.
    pub label: String,
    /// `uname -r` of that kernel, e.g. "6.12.117+deb13-amd64".
    pub release: String,
    /// The image vng boots.
    pub image: PathBuf,
    /// The Debian package it came from (None for a kernel given by path).
    pub package: Option<String>,
}

pub fn kernels_dir() -> PathBuf {
    util::repo_root().join("target/kernels")
}

/// The record setup leaves beside a complete unpack; a half-unpacked kernel has none.
const READY: &str = "clockguard-kernel.ready";

/// "linux-image-6.12.117+deb13-amd64" belongs to series "6.12"; the -dbg, -unsigned,
/// cloud and rt flavours do not count.
fn image_package_of(series: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("linux-image-") else {
        return false;
    };
    let Some(version) = rest.strip_suffix("-amd64") else {
        return false;
    };
    let in_series = version
        .strip_prefix(series)
        .is_some_and(|tail| tail.starts_with('.'));
    in_series && !version.contains("-cloud") && !version.contains("-rt")
}

/// "6.12.117+deb13" -> [6, 12, 117, 13]: numeric runs compared as numbers.
pub fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The newest image package of `series` among `names`.
fn newest_image_package<'a>(series: &str, names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter(|n| image_package_of(series, n))
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

/// From a `Depends:` line, the packages that hold the kernel's own files: sid splits its
/// image package into `linux-binary-*` (the image) and `linux-modules-*`.
fn payload_dependencies(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .flat_map(|alternatives| alternatives.split('|'))
        .filter_map(|dep| dep.split_whitespace().next())
        .filter(|name| name.starts_with("linux-binary-") || name.starts_with("linux-modules-"))
        .map(str::to_string)
        .collect()
}

/// The first Debian mirror of the system's own apt configuration (deb822 `URIs:` or a
/// one-line `deb URI suite ...`), security archives left out.
pub fn system_mirror() -> Result<String> {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = fs::read_dir(dir) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let name = p.to_string_lossy().into_owned();
                if name.ends_with(".sources")
                    || std::path::Path::new(&name)
                        .extension()
                        .is_some_and(|ext| ext.eq_ignore_ascii_case("list"))
                {
                    texts.push(fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .context("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d")
}

fn mirror_in(text: &str) -> Option<String> {
    let is_debian = |uri: &str| uri.contains("/debian") && !uri.contains("security");
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let uri = if let Some(uris) = line.strip_prefix("URIs:") {
            uris.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // `deb [options] URI suite components`
            rest.split_whitespace().find(|w| w.contains("://"))
        } else {
            None
        };
        if let Some(uri) = uri.filter(|u| is_debian(u)) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// Suites listed besides the matrix's: bookworm-backports for QEMU 10, whose
/// `-device vmclock` the vmclock machine needs (vmclock_vm.rs).
const EXTRA_SUITES: &[&str] = &["bookworm-backports"];

/// A private apt: its own sources list, package lists and cache under target/kernels/apt.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new() -> Result<PrivateApt> {
        let dir = kernels_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        Ok(PrivateApt { dir })
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = cmd(program);
        let options = [
            format!(
                "Dir::Etc::sourcelist={}",
                self.dir.join("sources.list").display()
            ),
            "Dir::Etc::sourceparts=/dev/null".into(),
            format!("Dir::State::Lists={}", self.dir.join("lists").display()),
            format!("Dir::Cache={}", self.dir.join("cache").display()),
            // What this machine has installed is no candidate: only the archive's packages.
            "Dir::State::status=/dev/null".into(),
            // The downloads land in target/, which apt's unprivileged _apt user may not reach.
            "APT::Sandbox::User=root".into(),
            // Our own lists and cache: the system's apt lock is not ours to take.
            "Debug::NoLocking=1".into(),
        ];
        for o in options {
            c.arg("-o").arg(o);
        }
        c
    }

    /// Writes the sources list for the matrix's suites and fetches their package lists.
    fn update(&self) -> Result<()> {
        let mirror = system_mirror()?;
        let mut list = String::new();
        for suite in MATRIX
            .iter()
            .map(|s| s.suite)
            .chain(EXTRA_SUITES.iter().copied())
        {
            list.push_str(&format!(
                "deb [signed-by={KEYRING}] {mirror} {suite} main\n"
            ));
        }
        fs::write(self.dir.join("sources.list"), list)?;
        println!(
            "setup: kernels: package lists of {} from {mirror}",
            suites()
        );
        run(self.command("apt-get").arg("update").arg("-qq"))
            .context("apt-get update (private lists under target/kernels/apt) failed")
    }

    fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let out = output_ok(self.command("apt-cache").args(["pkgnames", prefix]))
            .with_context(|| format!("apt-cache pkgnames {prefix} failed"))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    fn depends(&self, package: &str) -> Result<String> {
        let out = output_ok(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", package]),
        )
        .with_context(|| format!("apt-cache show {package} failed"))?;
        Ok(out
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .unwrap_or("")
            .to_string())
    }

    /// Downloads `package` into debs/ and returns the .deb's path. Kernel package names
    /// carry their version, so the name alone picks the suite; `NAME/SUITE` picks another.
    fn download(&self, package: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        run(self
            .command("apt-get")
            .current_dir(&debs)
            .args(["download", "-qq", package]))
        .with_context(|| format!("apt-get download {package} failed"))?;
        let name = package.split('/').next().unwrap_or(package);
        let prefix = format!("{name}_");
        fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&prefix)
                        && std::path::Path::new(n)
                            .extension()
                            .is_some_and(|ext| ext.eq_ignore_ascii_case("deb"))
                })
            })
            .with_context(|| format!("apt-get download {package} left no {prefix}*.deb"))
    }
}

fn suites() -> String {
    MATRIX
        .iter()
        .map(|s| s.suite)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel unpacked at `root`, if its unpack finished.
fn read_ready(root: &Path, label: &str) -> Option<Kernel> {
    let text = fs::read_to_string(root.join(READY)).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let image = root.join(field("image")?);
    image.is_file().then(|| Kernel {
        label: label.to_string(),
        release: field("release").unwrap_or_default(),
        image,
        package: field("package"),
    })
}

/// The newest complete unpack of `series` under target/kernels.
pub fn unpacked(series: &Series) -> Option<Kernel> {
    let entries = fs::read_dir(kernels_dir()).ok()?;
    entries
        .flatten()
        .filter(|e| image_package_of(series.label, &e.file_name().to_string_lossy()))
        .filter_map(|e| read_ready(&e.path(), series.label))
        .max_by_key(|k| version_key(k.package.as_deref().unwrap_or("")))
}

/// The kernel's release and image inside an unpacked package tree.
fn find_release_and_image(root: &Path) -> Result<(String, PathBuf)> {
    for modules in ["lib/modules", "usr/lib/modules"] {
        let Ok(entries) = fs::read_dir(root.join(modules)) else {
            continue;
        };
        for e in entries.flatten() {
            let release = e.file_name().to_string_lossy().into_owned();
            let candidates = [
                root.join("boot").join(format!("vmlinuz-{release}")),
                e.path().join("vmlinuz"),
            ];
            if let Some(image) = candidates.into_iter().find(|p| p.is_file()) {
                return Ok((release, image));
            }
        }
    }
    bail!(
        "no lib/modules/<release> with a vmlinuz under {}",
        root.display()
    )
}

/// Makes sure the series `wanted` names (every series of the matrix when it is empty) are
/// unpacked, fetching only what is missing; names that are no series (kernel image paths)
/// are left to `select`. Returns setup's report: one line per kernel already there, and
/// one per kernel fetched now.
pub fn ensure(wanted: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut present = Vec::new();
    let mut fetched = Vec::new();
    // One `apt-get update` per call, and only when a kernel is missing.
    let mut apt: Option<PrivateApt> = None;
    let series = MATRIX
        .iter()
        .filter(|s| wanted.is_empty() || wanted.iter().any(|w| w == s.label));
    for series in series {
        if let Some(k) = unpacked(series) {
            present.push(describe(&k));
            continue;
        }
        if apt.is_none() {
            let fresh = PrivateApt::new()?;
            fresh.update()?;
            apt = Some(fresh);
        }
        let apt = apt.as_ref().expect("set just above");
        fetched.push(describe(&fetch(apt, series)?));
    }
    Ok((present, fetched))
}

/// Downloads `package` from the matrix's suites (the newest version any of them has, e.g.
/// sid's ntpd-rs) through the private apt, and returns the .deb's path.
pub fn download_from_matrix_suites(package: &str) -> Result<PathBuf> {
    let apt = PrivateApt::new()?;
    // Package lists fetched once; a package no list names makes them fetched again.
    let listed = fs::read_dir(apt.dir.join("lists"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(false);
    if !listed
        || apt
            .package_names(package)
            .map_or(true, |n| !n.iter().any(|p| p == package))
    {
        apt.update()?;
    }
    apt.download(package)
}

/// Downloads `package` as `suite` has it (e.g. bookworm-backports' QEMU 10) through the
/// private apt, and returns the .deb's path; the package lists are fetched again when
/// they lack that suite.
pub fn download_from_suite(package: &str, suite: &str) -> Result<PathBuf> {
    let apt = PrivateApt::new()?;
    let suite_listed = fs::read_dir(apt.dir.join("lists"))
        .map(|d| {
            d.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                // Packages, or Packages.lz4 when apt keeps its lists compressed.
                name.contains(&format!("_{suite}_")) && name.contains("_Packages")
            })
        })
        .unwrap_or(false);
    if !suite_listed {
        apt.update()?;
    }
    let wanted = format!("{package}/{suite}");
    // Lists older than the suite's last update name a version the mirror no longer has.
    apt.download(&wanted).or_else(|_| {
        apt.update()?;
        apt.download(&wanted)
    })
}

fn describe(k: &Kernel) -> String {
    format!(
        "kernel {} ({}): {} from {}",
        k.label,
        k.release,
        k.image.display(),
        k.package.as_deref().unwrap_or("?")
    )
}

fn fetch(apt: &PrivateApt, series: &Series) -> Result<Kernel> {
    let names = apt.package_names(&format!("linux-image-{}.", series.label))?;
    let Some(package) = newest_image_package(series.label, names.iter().map(String::as_str)) else {
        bail!(
            "{} has no linux-image-{}.*-amd64 package any more (the archive moved on): \
             change the series in xtask/src/kernels.rs",
            series.suite,
            series.label
        );
    };
    let mut packages = vec![package.clone()];
    packages.extend(payload_dependencies(&apt.depends(&package)?));
    println!(
        "setup: kernels: fetching {} ({}, {}): {}",
        series.label,
        series.suite,
        series.why,
        packages.join(" ")
    );
    let root = kernels_dir().join(&package);
    // A half-finished unpack from an earlier run is started over.
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    for p in &packages {
        let deb = apt.download(p)?;
        run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        fs::remove_file(&deb)?;
    }
    let (release, image) = find_release_and_image(&root)?;
    // depmod -b BASE looks in BASE/lib/modules: for a merged-/usr package that is root/usr.
    let base = if root.join("lib/modules").is_dir() {
        root.clone()
    } else {
        root.join("usr")
    };
    run(cmd("depmod").arg("-b").arg(&base).arg(&release))
        .with_context(|| format!("depmod -b {} {release} failed", base.display()))?;
    let relative = image.strip_prefix(&root).unwrap_or(&image);
    fs::write(
        root.join(READY),
        format!(
            "package={package}\nrelease={release}\nimage={}\n",
            relative.display()
        ),
    )?;
    read_ready(&root, series.label).context("the kernel just unpacked is not readable")
}

/// The kernels `--kernel` names: a series label ("6.12"), a kernel image path, or all;
/// a series not unpacked yet is fetched first.
pub fn select(wanted: &[String]) -> Result<Vec<Kernel>> {
    for line in ensure(wanted)?.1 {
        println!("setup: fetched {line}");
    }
    let pick = |label: &str| -> Result<Kernel> {
        if let Some(series) = MATRIX.iter().find(|s| s.label == label) {
            return unpacked(series).with_context(|| {
                format!(
                    "kernel {label} is not unpacked under target/kernels: run `cargo xtask setup`"
                )
            });
        }
        let path = PathBuf::from(label);
        if path.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| label.to_string());
            return Ok(Kernel {
                release: name.trim_start_matches("vmlinuz-").to_string(),
                label: name,
                image: path,
                package: None,
            });
        }
        bail!(
            "--kernel {label}: neither a series of the matrix ({}) nor a kernel image file",
            MATRIX
                .iter()
                .map(|s| s.label)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if wanted.is_empty() {
        MATRIX.iter().map(|s| pick(s.label)).collect()
    } else {
        wanted.iter().map(|w| pick(w)).collect()
    }
}

/// The kernel of `cargo xtask vm` and the bench rows: CLOCKGUARD_VM_KERNEL (a series label
/// or an image path), else the matrix's first.
pub fn default_kernel() -> Result<Kernel> {
    let wanted = std::env::var("CLOCKGUARD_VM_KERNEL").unwrap_or_else(|_| MATRIX[0].label.into());
    Ok(select(&[wanted])?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_packages_by_series() {
        let names = [
            "linux-image-6.12.117+deb13-amd64",
            "linux-image-6.12.117+deb13-amd64-dbg",
            "linux-image-6.12.117+deb13-amd64-unsigned",
            "linux-image-6.12.117+deb13-cloud-amd64",
            "linux-image-6.12.117+deb13-rt-amd64",
            "linux-image-6.12.9+deb13-amd64",
            "linux-image-6.1.0-41-amd64",
            "linux-image-6.1.0-9-amd64",
            "linux-image-7.2.13+deb14-amd64",
            "linux-image-amd64",
        ];
        let newest = |s| newest_image_package(s, names.iter().copied());
        assert_eq!(
            newest("6.12").as_deref(),
            Some("linux-image-6.12.117+deb13-amd64")
        );
        assert_eq!(newest("6.1").as_deref(), Some("linux-image-6.1.0-41-amd64"));
        assert_eq!(
            newest("7.2").as_deref(),
            Some("linux-image-7.2.13+deb14-amd64")
        );
        assert_eq!(newest("7.3"), None);
    }

    #[test]
    fn sid_payload_packages() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
            linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 \
            (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)";
        assert_eq!(
            payload_dependencies(depends),
            [
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64"
            ]
        );
        assert!(payload_dependencies("kmod, initramfs-tools (>= 0.120+deb8u2)").is_empty());
    }

    #[test]
    fn mirror_from_either_format() {
        let deb822 =
            "Types: deb\n# URIs: http://old.example/debian\nURIs: http://mirror.test/debian\n\
            Suites: bookworm\n\nTypes: deb\nURIs: http://mirror.test/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.test/debian")
        );
        let one_line = "deb http://mirror.test/debian-security bookworm-security main\n\
            deb [arch=amd64] http://mirror.test/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("http://mirror.test/debian")
        );
        assert_eq!(mirror_in("deb http://other.test/ubuntu jammy main\n"), None);
    }

    #[test]
    fn kernel_order() {
        assert!(version_key("vmlinuz-6.10.0-1-amd64") > version_key("vmlinuz-6.9.0-9-amd64"));
        assert!(version_key("vmlinuz-6.1.0-56-amd64") > version_key("vmlinuz-6.1.0-9-amd64"));
    }
}
