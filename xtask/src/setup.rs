//! `cargo xtask setup`: check every prerequisite, install only what is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd, output_ok, root_cmd, run};
use crate::{kernels, vm};

/// Debian packages needed on the host besides llvm-<N>-dev.
const DEB_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "QEMU for the test VM"),
    (
        "kmod",
        "depmod for the kernels unpacked under target/kernels",
    ),
    (
        "busybox-static",
        "virtme-ng builds its initramfs from a static busybox, and so does the vmclock machine",
    ),
    (
        "xz-utils",
        "unpacks the kernel's ptp_vmclock.ko.xz into the vmclock machine's initramfs",
    ),
    (
        "udev",
        "the VM boots over this file system and its init starts systemd-udevd to name the \
         virtio ports (/dev/virtio-ports/virtme.*) through which vng hands back the guest \
         command's output and exit status; without it every VM run ends in exit status 255",
    ),
    ("util-linux", "hwclock"),
    (
        "mmdebstrap",
        "builds the systemd test machine's Debian image (once, cached under target/systemd-vm)",
    ),
    (
        "e2fsprogs",
        "mke2fs -d: the systemd test machine's ext4 image",
    ),
    ("qemu-guest-agent", "guest-set-time peer in VM tests"),
    ("iproute2", "network namespaces in VM tests"),
    ("procps", "ps/pgrep in tests"),
    ("jq", "JSON checks in the end-to-end tests"),
    (
        "keepalived",
        "VRRP peer of the failover test (never started on the host)",
    ),
    (
        "dovecot-imapd",
        "kills its workers on a backward jump: the failover test's service",
    ),
    ("lintian", "checks the .deb `cargo xtask package` builds"),
    (
        "dpkg-dev",
        "dpkg-shlibdeps: the .deb's Depends, found by cargo-deb",
    ),
];

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

struct Setup {
    verbose: bool,
    ok: Vec<String>,
    done: Vec<String>,
}

impl Setup {
    fn ok(&mut self, what: String) {
        if self.verbose {
            println!("ok: {what}");
        }
        self.ok.push(what);
    }

    fn doing(&mut self, what: String) {
        println!("setup: {what}");
        self.done.push(what);
    }
}

/// Check (and install) everything, and the test kernels `kernels_wanted` names (None: no
/// kernel; an empty list: every kernel of the matrix). With `verbose`, one "ok: ..." line
/// per prerequisite; otherwise only actions and a one-line summary are printed.
pub fn setup(verbose: bool, kernels_wanted: Option<&[String]>) -> Result<()> {
    let mut s = Setup {
        verbose,
        ok: Vec::new(),
        done: Vec::new(),
    };

    rust_toolchain(&mut s)?;
    let llvm = llvm_major()?;
    s.ok(format!("rustc +nightly uses LLVM {llvm}"));
    debian_packages(&mut s, llvm)?;
    bpf_linker(&mut s, llvm)?;
    virtme_ng(&mut s)?;
    unpacked(
        &mut s,
        "chrony",
        &chronyd_path(),
        &["-v"],
        "the VM tests run it",
    )?;
    let (present, fetched) = match kernels_wanted {
        Some(wanted) => kernels::ensure(wanted)?,
        None => Default::default(),
    };
    for k in present {
        s.ok(k);
    }
    for k in fetched {
        s.doing(format!("fetched {k}"));
    }
    unpacked(
        &mut s,
        "prometheus",
        &promtool_path(),
        &["--version"],
        "the metrics test checks the exposition with promtool",
    )?;

    if s.done.is_empty() {
        println!(
            "setup: all {} prerequisites present, nothing installed",
            s.ok.len()
        );
    } else {
        println!(
            "setup: {} present, {} installed/changed:",
            s.ok.len(),
            s.done.len()
        );
        for d in &s.done {
            println!("  - {d}");
        }
    }
    Ok(())
}

fn rust_toolchain(s: &mut Setup) -> Result<()> {
    let list = output_ok(cmd("rustup").args(["toolchain", "list"]))
        .context("`rustup toolchain list` failed: is rustup installed?")?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        s.ok("rust nightly toolchain".into());
    } else {
        s.doing("installing the rust nightly toolchain".into());
        run(cmd("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }

    let comps = output_ok(cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if comps.lines().any(|l| l.trim().starts_with("rust-src")) {
        s.ok("rust-src for nightly".into());
    } else {
        s.doing("adding rust-src to the nightly toolchain".into());
        run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }

    // `cargo xtask test` starts with `cargo fmt --check` and `cargo clippy`.
    let default_comps =
        output_ok(cmd("rustup").args(["component", "list", "--installed"])).unwrap_or_default();
    for comp in ["clippy", "rustfmt"] {
        if default_comps.lines().any(|l| l.trim().starts_with(comp)) {
            s.ok(format!("{comp} for the default toolchain"));
        } else {
            s.doing(format!("adding {comp} to the default toolchain"));
            run(cmd("rustup").args(["component", "add", comp]))?;
        }
    }
    Ok(())
}

/// LLVM major version of the nightly rustc ("LLVM version: 22.1.4" -> 22).
pub fn llvm_major() -> Result<u32> {
    let out =
        output_ok(cmd("rustc").args(["+nightly", "-vV"])).context("`rustc +nightly -vV` failed")?;
    out.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc +nightly -vV`:\n{out}"))
}

pub fn deb_installed(pkg: &str) -> bool {
    output_ok(cmd("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

fn python_has_pip() -> bool {
    output_ok(cmd("python3").args(["-m", "pip", "--version"])).is_some()
}

fn debian_packages(s: &mut Setup, llvm: u32) -> Result<()> {
    let llvm_dev = format!("llvm-{llvm}-dev");
    let llvm_why = format!("bpf-linker links against LLVM {llvm} like rustc");
    let mut wanted: Vec<(String, String)> = vec![(llvm_dev, llvm_why)];
    wanted.extend(
        DEB_PACKAGES
            .iter()
            .map(|(p, w)| (p.to_string(), w.to_string())),
    );
    if util::which("python3").is_none() {
        wanted.push(("python3".into(), "virtme-ng is a python program".into()));
    }
    if util::which("vng").is_none() && vm::find_vng().is_none() && !python_has_pip() {
        wanted.push(("python3-pip".into(), "to install virtme-ng".into()));
    }

    let mut missing = Vec::new();
    for (pkg, why) in wanted {
        if deb_installed(&pkg) {
            s.ok(format!("package {pkg} ({why})"));
        } else {
            missing.push(pkg);
        }
    }

    if !missing.is_empty() {
        s.doing(format!("apt-get install {}", missing.join(" ")));
        ensure_policy_rc_d(s)?;
        let env = [("DEBIAN_FRONTEND", "noninteractive")];
        run(root_cmd("apt-get", &env).args(["update"]))?;
        run(root_cmd("apt-get", &env)
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing))
        .context("apt-get install failed")?;
    }

    Ok(())
}

/// chronyd for the VM tests (a real NTP peer: client and server), unpacked from Debian's
/// package into target/tools/chrony rather than installed: installing chrony would remove
/// systemd-timesyncd from this machine and start a daemon that disciplines its clock.
pub fn chronyd_path() -> PathBuf {
    util::repo_root().join("target/tools/chrony/usr/sbin/chronyd")
}

/// ntpd-rs's daemon for the like-for-like NTP bench, unpacked from Debian's (sid) package
/// into target/tools/ntpd-rs: bookworm has no ntpd-rs, and installing it would start a
/// daemon that disciplines this machine's clock.
pub fn ntpd_rs_path() -> PathBuf {
    util::repo_root().join("target/tools/ntpd-rs/usr/bin/ntp-daemon")
}

/// Unpacks ntpd-rs (see `ntpd_rs_path`) unless it is there and runs.
pub fn ensure_ntpd_rs() -> Result<PathBuf> {
    let binary = ntpd_rs_path();
    if output_ok(cmd(&binary).arg("--version")).is_some() {
        return Ok(binary);
    }
    println!(
        "setup: unpacking Debian's ntpd-rs into {} (not installed: it would discipline this \
         machine's clock)",
        binary.display()
    );
    let deb = kernels::download_from_matrix_suites("ntpd-rs")?;
    let _ = fs::remove_dir_all(util::repo_root().join("target/tools/ntpd-rs"));
    unpack_into_tools(&deb, "ntpd-rs", &binary, &["--version"])?;
    Ok(binary)
}

/// ClockBound's own daemon (`clockbound`, crate clock-bound-d) for the side-by-side bound
/// bench: built from crates.io into target/tools/clockbound with its lock file, at the
/// version whose segment layout clockguard writes.
pub fn clockbound_d_path() -> PathBuf {
    util::repo_root().join("target/tools/clockbound/bin/clockbound")
}

/// The crate and version `ensure_clockbound_d` builds.
const CLOCKBOUND_D: (&str, &str) = ("clock-bound-d", "2.0.3");

/// Builds ClockBound's daemon (see `clockbound_d_path`) unless it is there and runs.
pub fn ensure_clockbound_d() -> Result<PathBuf> {
    let binary = clockbound_d_path();
    if output_ok(cmd(&binary).arg("--help")).is_some() {
        return Ok(binary);
    }
    cargo_install(CLOCKBOUND_D, "clockbound")?;
    Ok(binary)
}

/// `cargo install --locked` of the crate and version `(krate, version)` into
/// target/tools/DIR (its binaries in DIR/bin).
fn cargo_install((krate, version): (&str, &str), dir: &str) -> Result<()> {
    println!("setup: building {krate} {version} into target/tools/{dir}");
    let root = util::repo_root().join("target/tools").join(dir);
    util::run(
        cmd("cargo")
            .args(["install", "--locked", "--version", version, "--root"])
            .arg(&root)
            .arg(krate),
    )
    .with_context(|| format!("cannot build {krate} {version}"))
}

/// The crate and version `ensure_cargo_deb` builds.
const CARGO_DEB: (&str, &str) = ("cargo-deb", "3.6.2");

/// cargo-deb, the packager `cargo xtask package` uses, built into target/tools/cargo-deb
/// unless it is there and runs.
pub fn ensure_cargo_deb() -> Result<PathBuf> {
    let binary = util::repo_root().join("target/tools/cargo-deb/bin/cargo-deb");
    if output_ok(cmd(&binary).arg("--version")).is_some_and(|v| v.contains(CARGO_DEB.1)) {
        return Ok(binary);
    }
    cargo_install(CARGO_DEB, "cargo-deb")?;
    Ok(binary)
}

/// promtool, Prometheus's own checker of the metrics exposition format, unpacked from
/// Debian's prometheus package (installing it would start a Prometheus server).
pub fn promtool_path() -> PathBuf {
    util::repo_root().join("target/tools/prometheus/usr/bin/promtool")
}

/// Unpacks Debian's `package` into target/tools/PACKAGE (not installed: no maintainer
/// script, no daemon) unless `binary` there already runs with `check_args`.
fn unpacked(
    s: &mut Setup,
    package: &str,
    binary: &Path,
    check_args: &[&str],
    why: &str,
) -> Result<()> {
    if output_ok(cmd(binary).args(check_args)).is_some() {
        s.ok(format!("{} (unpacked, not installed)", binary.display()));
        return Ok(());
    }
    s.doing(format!(
        "unpacking Debian's {package} into {} (not installed: {why})",
        binary.display()
    ));
    let dir = util::repo_root().join("target/tools");
    fs::create_dir_all(&dir)?;
    let download = |dir: &Path| run(cmd("apt-get").current_dir(dir).args(["download", package]));
    if download(&dir).is_err() {
        // A fresh machine may have no package lists yet.
        run(root_cmd("apt-get", &[("DEBIAN_FRONTEND", "noninteractive")]).arg("update"))?;
        download(&dir).with_context(|| format!("apt-get download {package} failed"))?;
    }
    let prefix = format!("{package}_");
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&prefix)
                    && std::path::Path::new(n)
                        .extension()
                        .is_some_and(|ext| ext.eq_ignore_ascii_case("deb"))
            })
        })
        .max()
        .with_context(|| format!("apt-get download {package} left no {prefix}*.deb"))?;
    unpack_into_tools(&deb, package, binary, check_args)
}

/// Unpacks `deb` into target/tools/PACKAGE, deletes it, and checks that `binary` (in
/// there) runs with `check_args`.
fn unpack_into_tools(deb: &Path, package: &str, binary: &Path, check_args: &[&str]) -> Result<()> {
    let dir = util::repo_root().join("target/tools").join(package);
    run(cmd("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    let _ = fs::remove_file(deb);
    output_ok(cmd(binary).args(check_args))
        .with_context(|| format!("{} does not run after unpacking", binary.display()))?;
    Ok(())
}

/// Make sure no package we install starts a daemon on the host.
fn ensure_policy_rc_d(s: &mut Setup) -> Result<()> {
    let p = Path::new(POLICY_RC_D);
    let good = fs::read_to_string(p).is_ok_and(|c| c.lines().any(|l| l.trim() == "exit 101"))
        && fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if good {
        s.ok(format!(
            "{POLICY_RC_D} (exit 101: no daemon starts on install)"
        ));
        return Ok(());
    }
    s.doing(format!(
        "writing {POLICY_RC_D} (exit 101) so no daemon starts on the host"
    ));
    if util::is_root() {
        fs::write(p, "#!/bin/sh\nexit 101\n")
            .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        fs::set_permissions(p, fs::Permissions::from_mode(0o755))?;
    } else {
        run(root_cmd("sh", &[]).args([
            "-c",
            &format!(
                "printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 0755 {POLICY_RC_D}"
            ),
        ]))?;
    }
    Ok(())
}

fn find_bpf_linker() -> Option<PathBuf> {
    util::which("bpf-linker").or_else(|| {
        let p = util::home().join(".cargo/bin/bpf-linker");
        util::is_executable(&p).then_some(p)
    })
}

fn bpf_linker(s: &mut Setup, llvm: u32) -> Result<()> {
    let mut force = false;
    if let Some(p) = find_bpf_linker() {
        match output_ok(cmd(&p).arg("--version")) {
            Some(v) => {
                s.ok(format!("bpf-linker {} ({})", v.trim(), p.display()));
                return Ok(());
            }
            None => {
                println!(
                    "setup: {} is there but `--version` fails (LLVM library gone?): reinstalling",
                    p.display()
                );
                force = true;
            }
        }
    }
    let prefix = format!("/usr/lib/llvm-{llvm}");
    s.doing(format!("cargo install bpf-linker (LLVM_PREFIX={prefix})"));
    let install = |locked: bool| {
        let mut c = cmd("cargo");
        c.env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker"]);
        if locked {
            c.arg("--locked");
        }
        if force {
            c.arg("--force");
        }
        util::status(&mut c)
    };
    if !install(true)?.success() {
        println!("setup: `cargo install bpf-linker --locked` failed; retrying without --locked");
        if !install(false)?.success() {
            bail!("cargo install bpf-linker failed (is llvm-{llvm}-dev installed?)");
        }
    }
    if find_bpf_linker().is_none() {
        bail!(
            "bpf-linker installed but not found in {}",
            util::cargo_bin_dir().display()
        );
    }
    Ok(())
}

fn virtme_ng(s: &mut Setup) -> Result<()> {
    if let Some(v) = vm::find_vng() {
        s.ok(format!("virtme-ng ({})", v.display()));
        return Ok(());
    }
    s.doing("pip install virtme-ng".into());
    let pip = |extra: &[&str]| -> Result<(bool, String)> {
        let mut c = root_cmd("python3", &[]);
        c.args(["-m", "pip", "install", "virtme-ng"]).args(extra);
        eprintln!("+ {}", util::describe(&c));
        let out = c.output().context("cannot run python3 -m pip")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{text}");
        Ok((out.status.success(), text))
    };
    let (ok, text) = pip(&[])?;
    if !ok {
        if text.contains("externally-managed-environment") {
            println!(
                "setup: pip refuses (externally managed python); adding --break-system-packages"
            );
            let (ok2, _) = pip(&["--break-system-packages"])?;
            if !ok2 {
                bail!("pip install virtme-ng --break-system-packages failed");
            }
        } else {
            bail!("pip install virtme-ng failed");
        }
    }
    match vm::find_vng() {
        Some(v) => println!("setup: vng is at {}", v.display()),
        None => bail!("virtme-ng installed but no `vng` found (PATH, pip show -f virtme-ng)"),
    }
    Ok(())
}

/// cargo-fuzz, for the fuzz targets of `cargo xtask test` (they build with nightly).
pub fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(version) = output_ok(cmd("cargo").args(["+nightly", "fuzz", "--version"])) {
        println!("ok: {}", version.trim());
        return Ok(());
    }
    println!("setup: cargo install cargo-fuzz --locked");
    if !util::status(cmd("cargo").args(["install", "cargo-fuzz", "--locked"]))?.success() {
        bail!("cargo install cargo-fuzz failed");
    }
    Ok(())
}
