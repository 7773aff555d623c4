//! The vmclock machine: a guest of QEMU 10 (bookworm-backports' qemu-system-x86, unpacked
//! under target/tools/qemu10; the system's QEMU 7.2 has no vmclock device) with
//! `-device vmclock`, booted from an initramfs (tests/vmclock/guest-init.sh as /init) that
//! holds the tests of tests/vmclock, clockguard's binaries, the tools the tests run and
//! the kernel's ptp_vmclock module. Nothing is shared with the host: QEMU refuses to
//! migrate a guest that has a 9p share mounted, and the suite's point is a migration.
//!
//! When a test prints "CG-VMCLOCK-MIGRATE" on the guest's console, the host migrates the
//! guest to a file over QMP, stops that QEMU and restores the guest in a new one from the
//! file (QEMU changes the device's disruption marker on the restore, as on a live
//! migration). The guest's console (both boots) is the suite's output.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::kernels::{self, Kernel};
use crate::util::{self, cmd};

/// What the guest prints for the host to migrate it, and as its last line.
const MIGRATE_MARK: &str = "CG-VMCLOCK-MIGRATE";
const EXIT_MARK: &str = "CG-VMCLOCK-EXIT ";
/// bookworm-backports' packages that make up QEMU 10 for x86 (the firmware is the system's
/// seabios and ipxe, as for QEMU 7.2).
const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-common", "qemu-system-data"];
const QEMU_SUITE: &str = "bookworm-backports";
/// Programs the tests run, copied from this machine with their libraries (GNU's, where
/// busybox's applets differ: run-suite.sh's `timeout --kill-after`, `date +%N`, ...).
const GUEST_TOOLS: &[&str] = &[
    "bash",
    "jq",
    "timeout",
    "date",
    "grep",
    "sed",
    "awk",
    "find",
    "sort",
    "mktemp",
    "env",
    "mountpoint",
    "sleep",
    "seq",
    "cut",
    "head",
    "tail",
    "cat",
    "tee",
    "basename",
    "dirname",
    "mkdir",
    "rm",
    "tr",
    "wc",
    "kill",
];
/// Files of the repository the guest needs, relative to its root.
const GUEST_REPO_FILES: &[&str] = &["tests/run-suite.sh", "tests/vm/lib.sh"];
const GUEST_BINARIES: &[&str] = &["clockguard", "cg-ntpref", "cg-clockcall"];
/// The whole suite, both boots and the migration between them, at most.
const SUITE_TIMEOUT: Duration = Duration::from_secs(900);

fn dir() -> PathBuf {
    util::repo_root().join("target").join("vmclock-vm")
}

fn qemu_root() -> PathBuf {
    util::repo_root().join("target/tools/qemu10")
}

/// QEMU 10's qemu-system-x86_64, downloaded and unpacked once.
pub fn ensure_qemu() -> Result<PathBuf> {
    let root = qemu_root();
    let binary = root.join("usr/bin/qemu-system-x86_64");
    let done = root.join(".unpacked");
    if done.is_file() && binary.is_file() {
        return Ok(binary);
    }
    println!(
        "setup: QEMU 10 (the vmclock device) from {QEMU_SUITE}, into {}",
        root.display()
    );
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    for package in QEMU_PACKAGES {
        let deb = kernels::download_from_suite(package, QEMU_SUITE)?;
        util::run(cmd("dpkg-deb").arg("-x").arg(&deb).arg(&root))
            .with_context(|| format!("cannot unpack {}", deb.display()))?;
    }
    if !binary.is_file() {
        bail!("{} is not in {QEMU_SUITE}'s packages", binary.display());
    }
    // QEMU looks for its loadable modules in the system's directory (QEMU 7.2's, which it
    // refuses); an empty directory of its own keeps it quiet.
    fs::create_dir_all(root.join("modules"))?;
    fs::write(&done, b"")?;
    Ok(binary)
}

/// The ptp_vmclock module of `kernel`, or None when the kernel has none (only sid's 7.2
/// of the matrix does).
fn vmclock_module(kernel: &Kernel) -> Option<PathBuf> {
    // Kernels unpacked from Debian's archive boot from usr/lib/modules/<release>/vmlinuz.
    let modules = kernel.image.parent()?;
    let module = modules.join("kernel/drivers/ptp/ptp_vmclock.ko.xz");
    module.is_file().then_some(module)
}

/// The newest kernel of `kernels` with the ptp_vmclock driver.
pub fn pick_kernel(kernels: &[Kernel]) -> Option<&Kernel> {
    kernels
        .iter()
        .filter(|k| vmclock_module(k).is_some())
        .max_by_key(|k| kernels::version_key(&k.release))
}

/// Copies `from` (symlinks followed) to `root` + its absolute path.
fn copy_into(root: &Path, from: &Path) -> Result<()> {
    let to = root.join(from.strip_prefix("/").unwrap_or(from));
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// Copies `program` to `to` inside `root`, and the shared libraries ldd names for it to
/// their own paths.
fn copy_with_libraries(root: &Path, program: &Path, to: &Path) -> Result<()> {
    let dest = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(program, &dest).with_context(|| format!("cannot copy {}", program.display()))?;
    let ldd = util::output_ok(cmd("ldd").arg(program)).unwrap_or_default();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            copy_into(root, Path::new(path))?;
        }
    }
    Ok(())
}

/// The guest's initramfs (a newc cpio made by busybox's cpio), built from scratch each run.
fn build_initramfs(kernel: &Kernel) -> Result<PathBuf> {
    let repo = util::repo_root();
    let stage = dir().join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for d in [
        "bin",
        "usr/bin",
        "proc",
        "sys",
        "dev",
        "lib",
        "root",
        "repo/tests/vmclock",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = util::which("busybox").context("busybox not found: run `cargo xtask setup`")?;
    fs::copy(&busybox, stage.join("bin/busybox"))?;
    for tool in GUEST_TOOLS {
        let path = util::which(tool).with_context(|| format!("{tool} not found on PATH"))?;
        copy_with_libraries(&stage, &path, &Path::new("/usr/bin").join(tool))?;
    }
    let bin_dir = crate::tasks::bin_dir(true);
    for binary in GUEST_BINARIES {
        copy_with_libraries(
            &stage,
            &bin_dir.join(binary),
            &Path::new("/repo/target/release").join(binary),
        )?;
    }
    for file in GUEST_REPO_FILES {
        let to = stage.join("repo").join(file);
        fs::create_dir_all(to.parent().expect("a file in a directory"))?;
        fs::copy(repo.join(file), to)?;
    }
    for entry in fs::read_dir(repo.join("tests/vmclock"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") {
            let name = path.file_name().expect("a file name");
            fs::copy(&path, stage.join("repo/tests/vmclock").join(name))?;
        }
    }
    fs::rename(
        stage.join("repo/tests/vmclock/guest-init.sh"),
        stage.join("init"),
    )
    .context("tests/vmclock/guest-init.sh is missing")?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(stage.join("init"), fs::Permissions::from_mode(0o755))?;
    }
    let module = vmclock_module(kernel)
        .with_context(|| format!("kernel {} has no ptp_vmclock module", kernel.label))?;
    let xz = cmd("xz")
        .arg("-dc")
        .arg(&module)
        .output()
        .context("cannot run xz")?;
    if !xz.status.success() {
        bail!("xz -dc {} failed ({})", module.display(), xz.status);
    }
    fs::write(stage.join("lib/ptp_vmclock.ko"), xz.stdout)?;

    let cpio = dir().join("initramfs.cpio");
    let out = fs::File::create(&cpio)?;
    let status = cmd("sh")
        .arg("-c")
        .arg("find . | busybox cpio -o -H newc 2>/dev/null")
        .current_dir(&stage)
        .stdout(out)
        .status()?;
    if !status.success() {
        bail!("busybox cpio failed ({status})");
    }
    Ok(cpio)
}

/// A QEMU process, killed (with anything it started) when dropped: an error, a panic or
/// a timeout of the runner never leaves a guest running.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            util::kill_tree(&mut self.0, Duration::from_secs(2));
        }
    }
}

/// Waits up to `grace` for QEMU to end by itself (the guest powered off), then ends it.
fn finish(qemu: &mut Qemu, grace: Duration) {
    let stop = Instant::now() + grace;
    while matches!(qemu.0.try_wait(), Ok(None)) && Instant::now() < stop {
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(qemu.0.try_wait(), Ok(None)) {
        util::kill_tree(&mut qemu.0, Duration::from_secs(2));
    }
}

/// One QEMU process of the machine, its console in `console`, QMP at `qmp`.
fn start_qemu(
    qemu: &Path,
    kernel: &Kernel,
    initramfs: &Path,
    console: &Path,
    qmp: &Path,
    incoming: Option<&Path>,
) -> Result<Qemu> {
    let _ = fs::remove_file(qmp);
    let mut c = cmd(qemu);
    c.env("QEMU_MODULE_DIR", qemu_root().join("modules"))
        .args(["-L"])
        .arg(qemu_root().join("usr/share/qemu"))
        .args(["-L", "/usr/share/seabios"])
        .args(["-machine", "q35", "-accel", "tcg", "-m", "1G", "-smp", "1"])
        .args([
            "-nographic",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 loglevel=5 panic=-1"])
        .args(["-device", "vmclock"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    if let Some(state) = incoming {
        c.arg("-incoming").arg(format!("file:{}", state.display()));
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    eprintln!("+ {}", util::describe(&c));
    c.spawn()
        .map(Qemu)
        .with_context(|| format!("cannot start {}", qemu.display()))
}

/// A QMP session: one command at a time, events skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Qmp> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => bail!("QMP {}: {err}", path.display()),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        qmp.message()?; // the greeting
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn message(&mut self) -> Result<Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("QMP closed");
            }
            let message: Value = serde_json::from_str(&line).context("QMP sent no JSON")?;
            if message.get("event").is_none() {
                return Ok(message);
            }
        }
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}")?;
        let answer = self.message()?;
        if let Some(err) = answer.get("error") {
            bail!("QMP {command}: {err}");
        }
        Ok(answer["return"].clone())
    }
}

/// Waits until `console` holds a line with `mark` (or the exit mark), QEMU exits, or the
/// deadline passes; says which.
fn wait_for(console: &Path, mark: &str, qemu: &mut Qemu, deadline: Instant) -> Result<bool> {
    loop {
        // Lossy: the guest's console may carry a byte that is not UTF-8 (a BIOS's escape).
        let text = String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned();
        if text.lines().any(|l| l.contains(mark)) {
            return Ok(true);
        }
        if text.lines().any(|l| l.contains(EXIT_MARK)) || qemu.0.try_wait()?.is_some() {
            return Ok(false);
        }
        if Instant::now() > deadline {
            bail!("the guest did not print {mark} in time");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Saves the running guest to `state` and stops that QEMU.
fn migrate_to_file(qmp_path: &Path, state: &Path, qemu: &mut Qemu) -> Result<Duration> {
    let mut qmp = Qmp::connect(qmp_path)?;
    let start = Instant::now();
    qmp.execute(
        "migrate",
        json!({ "uri": format!("file:{}", state.display()) }),
    )?;
    loop {
        let status = qmp.execute("query-migrate", json!({}))?;
        match status["status"].as_str() {
            Some("completed") => break,
            Some("failed" | "cancelled") => bail!("the migration failed: {status}"),
            _ if start.elapsed() > Duration::from_secs(120) => {
                bail!("the migration did not complete in 120 s: {status}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let took = start.elapsed();
    let _ = qmp.execute("quit", json!({}));
    finish(qemu, Duration::from_secs(20));
    Ok(took)
}

/// What a run of the suite printed, its exit status (None: the guest never said) and
/// how long it took.
pub struct SuiteOutput {
    pub lines: Vec<String>,
    pub code: Option<i32>,
    pub elapsed: Duration,
}

/// Boots the machine on `kernel`, migrates it when the suite asks, and returns the
/// guest's console (both boots). Logs: target/test-logs/vmclock-console-boot{1,2}.log.
pub fn run_suite(kernel: &Kernel) -> Result<SuiteOutput> {
    let start = Instant::now();
    let deadline = start + SUITE_TIMEOUT;
    let qemu = ensure_qemu()?;
    fs::create_dir_all(dir())?;
    let initramfs = build_initramfs(kernel)?;
    let logs = util::repo_root().join("target/test-logs");
    fs::create_dir_all(&logs)?;
    let consoles = [
        logs.join("vmclock-console-boot1.log"),
        logs.join("vmclock-console-boot2.log"),
    ];
    for c in &consoles {
        let _ = fs::remove_file(c);
    }
    let qmp = dir().join("qmp.sock");
    let state = dir().join("migration.state");
    let _ = fs::remove_file(&state);
    eprintln!(
        "vmclock-vm: booting kernel {} ({}) under QEMU 10 (TCG) with -device vmclock",
        kernel.label, kernel.release
    );
    let mut first = start_qemu(&qemu, kernel, &initramfs, &consoles[0], &qmp, None)?;
    let outcome = (|| -> Result<()> {
        if !wait_for(&consoles[0], MIGRATE_MARK, &mut first, deadline)? {
            return Ok(());
        }
        let took = migrate_to_file(&qmp, &state, &mut first)?;
        eprintln!(
            "vmclock-vm: the guest saved to {} in {:.1} s; restoring it in a new QEMU",
            state.display(),
            took.as_secs_f64()
        );
        let mut second = start_qemu(&qemu, kernel, &initramfs, &consoles[1], &qmp, Some(&state))?;
        let result = wait_for(&consoles[1], EXIT_MARK, &mut second, deadline);
        // poweroff -f ends QEMU (-no-reboot); give it a moment, then make sure.
        finish(&mut second, Duration::from_secs(10));
        result.map(|_| ())
    })();
    // No migration asked for: the first boot ran to its end (or failed).
    finish(&mut first, Duration::from_secs(10));
    let _ = fs::remove_file(&state);
    let mut lines = Vec::new();
    for console in &consoles {
        let text = fs::read(console).unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            let line = line.trim_end_matches('\r').to_string();
            println!("{line}");
            lines.push(line);
        }
    }
    if let Err(err) = outcome {
        println!("vmclock-vm: {err:#}");
    }
    let code = lines
        .iter()
        .rev()
        .find_map(|l| l.split(EXIT_MARK).nth(1))
        .and_then(|rc| rc.trim().parse().ok());
    Ok(SuiteOutput {
        lines,
        code,
        elapsed: start.elapsed(),
    })
}

/// `cargo xtask vmclock-vm`: the suite once, on the newest kernel of the matrix with
/// ptp_vmclock; exit 0 when it passed.
pub fn vm() -> Result<i32> {
    crate::tasks::build(true)?;
    let kernels = kernels::select(&[])?;
    let kernel = pick_kernel(&kernels).context("no kernel of the matrix has ptp_vmclock")?;
    let out = run_suite(kernel)?;
    eprintln!("vmclock-vm: {:.0} s", out.elapsed.as_secs_f64());
    Ok(match out.code {
        Some(0) => 0,
        _ => 1,
    })
}
