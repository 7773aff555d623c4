//! `cargo xtask vm`: boot the test VM (virtme-ng, TCG) once and run a command in it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kernels::Kernel;
use crate::util::{self, cmd, sh_quote};

pub const DEFAULT_TIMEOUT_SECS: u64 = 30 * 60;

/// Find `vng`: PATH (with ~/.cargo/bin), the usual pip script dirs, then wherever
/// `python3 -m pip show -f virtme-ng` says its files are (pyenv, venvs, --user). A pyenv
/// shim on PATH is used only if the real script cannot be found (shims need pyenv's env).
pub fn find_vng() -> Option<PathBuf> {
    let on_path = util::which("vng");
    if let Some(p) = &on_path {
        if !p.to_string_lossy().contains("/shims/") {
            return on_path;
        }
    }
    let candidates = [
        util::home().join(".local/bin/vng"),
        PathBuf::from("/usr/local/bin/vng"),
        PathBuf::from("/usr/bin/vng"),
    ];
    if let Some(p) = candidates.into_iter().find(|p| util::is_executable(p)) {
        return Some(p);
    }
    vng_from_pip().or(on_path)
}

fn vng_from_pip() -> Option<PathBuf> {
    let show = util::output_ok(cmd("python3").args(["-m", "pip", "show", "-f", "virtme-ng"]))?;
    let location = show
        .lines()
        .find_map(|l| l.strip_prefix("Location:"))
        .map(|l| PathBuf::from(l.trim()))?;
    show.lines()
        .map(str::trim)
        .filter(|l| l.ends_with("bin/vng"))
        .map(|rel| location.join(rel))
        .filter_map(|p| p.canonicalize().ok())
        .find(|p| util::is_executable(p))
}

/// Result of one VM run.
pub struct VmRun {
    /// Exit code of the command in the VM (vng passes it through); None on timeout.
    pub code: Option<i32>,
    /// stdout lines, when captured.
    pub lines: Vec<String>,
    pub elapsed: Duration,
    /// The guest stopped without handing back its command's exit status (vng's 255): a
    /// kernel panic, or QEMU died.
    pub guest_died: bool,
    /// The guest's kernel console.
    pub console_log: PathBuf,
}

/// What the guest boots into.
pub enum Machine {
    /// The host's own root file system, read-only over 9p (/tmp and target/ writable), with
    /// virtme-ng's init as PID 1: quick to boot, for the clock tests.
    HostRoot,
    /// The Debian disk image of systemd_vm.rs with systemd as PID 1. Writes go to QEMU's
    /// throwaway snapshot, so every boot starts from the same image; the repository is
    /// shared read-write at its host path. The command runs in serial-getty@ttyS0.service.
    Systemd(PathBuf),
    /// As `Systemd`, on a copy of the image that keeps the boot's writes (the bench's first
    /// boot installs the package into it, so that the second boots with clockguard enabled).
    /// The command must `sync` before it ends: the guest is not shut down cleanly.
    SystemdKeepingWrites(PathBuf),
}

/// Sourced in the systemd machine after GUEST_PRELUDE (the script says why).
const SYSTEMD_PRELUDE: &str = "tests/systemd/guest-prelude.sh";

/// Boot the VM once on `kernel` and run `command` in it, from the repository root, with CG_BIN_DIR,
/// CG_REPO, CG_IN_VM=1 (and the host's other CG_* variables) exported. One argument is
/// taken as a shell command line; several are quoted word by word. stdout is echoed and,
/// with `capture`, also returned.
pub fn run_in_vm(
    kernel: &Kernel,
    machine: &Machine,
    command: &[String],
    capture: bool,
) -> Result<VmRun> {
    run_in_vm_within(kernel, machine, command, capture, DEFAULT_TIMEOUT_SECS)
}

/// As `run_in_vm`, with the time limit (s) when CLOCKGUARD_VM_TIMEOUT does not set one.
pub fn run_in_vm_within(
    kernel: &Kernel,
    machine: &Machine,
    command: &[String],
    capture: bool,
    default_timeout_secs: u64,
) -> Result<VmRun> {
    let repo = util::repo_root();
    let target = repo.join("target");
    let bin_dir = target.join("release");
    fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;

    let vng = find_vng().context("vng (virtme-ng) not found: run `cargo xtask setup`")?;
    let kernel_label = &kernel.label;
    let kernel = &kernel.image;
    if fs::File::open(kernel).is_err() {
        bail!(
            "cannot read {} (run as root, or make it readable)",
            kernel.display()
        );
    }
    let timeout = Duration::from_secs(util::env_secs(
        "CLOCKGUARD_VM_TIMEOUT",
        default_timeout_secs,
    ));
    // The systemd machine gets one vCPU: with two, QEMU's multi-threaded TCG hung the guest
    // in text_poke_bp while GUEST_PRELUDE enabled its tracepoints (a soft lockup, one vCPU
    // spinning on an int3 in __schedule), with systemd's services busy on the other vCPU.
    // One vCPU cannot run a stale translation of text another vCPU patched, and its tests
    // need no second CPU.
    let default_cpus = match machine {
        Machine::HostRoot => "2",
        Machine::Systemd(_) | Machine::SystemdKeepingWrites(_) => "1",
    };
    let cpus = std::env::var("CLOCKGUARD_VM_CPUS").unwrap_or_else(|_| default_cpus.into());
    let memory = std::env::var("CLOCKGUARD_VM_MEMORY").unwrap_or_else(|_| "2G".into());

    let repo_s = repo.to_string_lossy().into_owned();
    let pause = PauseService::create(&target)?;
    let mut exports = vec![
        (
            "CG_VM_CONTROL".to_string(),
            pause.dir.to_string_lossy().into_owned(),
        ),
        (
            "CG_BIN_DIR".to_string(),
            bin_dir.to_string_lossy().into_owned(),
        ),
        ("CG_REPO".to_string(), repo_s.clone()),
        ("CG_IN_VM".to_string(), "1".to_string()),
    ];
    for (k, v) in std::env::vars() {
        let pass = (k.starts_with("CG_") && !exports.iter().any(|(e, _)| *e == k))
            || k == "RUST_LOG"
            || k == "RUST_BACKTRACE";
        if pass {
            exports.push((k, v));
        }
    }
    let user_cmd = match command {
        [] => "uname -a".to_string(),
        [one] => one.clone(),
        many => many
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    };
    // Numbered per boot of this xtask run, so a second boot keeps the first one's logs.
    let boot = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let exports = exports
        .iter()
        .map(|(k, v)| format!("{k}={}", sh_quote(v)))
        .collect::<Vec<_>>()
        .join(" ");
    let prelude = format!(". {}/{GUEST_PRELUDE}", sh_quote(&repo_s));
    // Under systemd the command's first bytes on the serial console can be lost while the
    // getty sets up its terminal (seen: the first two lines of output missing), so its
    // output also goes to a file on the shared target/, and that file is what is captured.
    let output_file = match machine {
        Machine::HostRoot => None,
        Machine::Systemd(_) | Machine::SystemdKeepingWrites(_) => {
            Some(target.join("test-logs").join(format!(
                "systemd-vm-{}-boot{boot}.out",
                file_safe(kernel_label)
            )))
        }
    };
    let script = match &output_file {
        None => format!(
            "{prelude}; export {exports}; cd {} || exit 125; {user_cmd}",
            sh_quote(&repo_s)
        ),
        // bash for pipefail: the getty's shell is sh.
        Some(out) => format!(
            "exec bash -c {}",
            sh_quote(&format!(
                "{prelude}; . {}/{SYSTEMD_PRELUDE}; export {exports}; cd {} || exit 125; \
                 set -o pipefail; {{ {user_cmd}\n}} 2>&1 | tee {}",
                sh_quote(&repo_s),
                sh_quote(&repo_s),
                sh_quote(&out.to_string_lossy())
            ))
        ),
    };

    // A file left by an earlier xtask run with the same boot number must not pass for this
    // boot's output when the guest never gets to run the command.
    if let Some(out) = &output_file {
        let _ = fs::remove_file(out);
    }

    // The guest's kernel console (--verbose sends it to vng's stderr) is kept in a file:
    // when the guest dies (a panic, an oops, QEMU killed) it is the only witness.
    let console_path = target.join("test-logs").join(format!(
        "vm-console-{}-boot{boot}.log",
        file_safe(kernel_label)
    ));
    if let Some(dir) = console_path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let console = fs::File::create(&console_path)
        .with_context(|| format!("cannot create {}", console_path.display()))?;

    let mut c = cmd(&vng);
    c.arg("-r").arg(kernel).args([
        // The kernel console to vng's stderr, but not the boot's info and notice lines:
        // printing the whole boot log on the emulated UART slows the boot enough that the
        // kernel can find the vCPUs' TSCs unsynchronised and fall back to hpet. Level 5
        // still prints warnings and messages of the default level (4), which an oops's
        // lines are, and panic() turns the console fully verbose.
        "--verbose",
        "--append",
        "loglevel=5",
        "--disable-kvm",
        "--user",
        "root",
        "--cpus",
        &cpus,
        "--memory",
        &memory,
    ]);
    match machine {
        Machine::HostRoot => {
            c.args(["--rwdir", "/tmp", "--rwdir"]).arg(&target);
        }
        Machine::Systemd(disk) | Machine::SystemdKeepingWrites(disk) => {
            c.args(["--systemd", "--root-disk"])
                .arg(disk)
                .args(["--root-fstype", "ext4", "--rw"]);
            if matches!(machine, Machine::Systemd(_)) {
                c.arg("--qemu-opts=-snapshot");
            }
            c.arg("--rwdir").arg(&repo);
        }
    }
    c.arg("--cwd").arg(&repo).arg("--").arg(&script);
    // Always pipes: QEMU opens /proc/self/fd/1 and /proc/self/fd/2 as "file" chardevs with
    // O_TRUNC, which would wipe (and, with several opens, overwrite) a log file that our
    // output is redirected to. stdin: nothing to read; the VM runs a script.
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {}", util::describe(&c));
    eprintln!(
        "vm: booting kernel {kernel_label} ({}) under TCG (timeout {}s, CLOCKGUARD_VM_TIMEOUT)",
        kernel.display(),
        timeout.as_secs()
    );

    let start = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start {}", vng.display()))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out_reader = child.stdout.take().map(|out| {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                let _ = writeln!(stdout, "{line}");
                if capture {
                    lines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(line);
                }
            }
        })
    });
    let err_reader = child
        .stderr
        .take()
        .map(|err| std::thread::spawn(move || split_console(err, console, std::io::stderr())));

    let code = loop {
        if let Some(st) = child.try_wait()? {
            break Some(util::exit_code(st));
        }
        pause.poll(child.id());
        if start.elapsed() > timeout {
            eprintln!(
                "vm: TIMEOUT after {}s: killing the VM (set CLOCKGUARD_VM_TIMEOUT to change)",
                timeout.as_secs()
            );
            util::kill_tree(&mut child, Duration::from_secs(10));
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in [out_reader, err_reader].into_iter().flatten() {
        let _ = r.join();
    }
    let elapsed = start.elapsed();
    eprintln!(
        "vm: finished in {:.1}s, {}",
        elapsed.as_secs_f64(),
        match code {
            Some(c) => format!("exit status {c}"),
            None => "timed out".into(),
        }
    );
    // vng answers 255 when the guest stopped without handing back its command's exit status.
    let guest_died = code == Some(GUEST_DIED);
    if code.is_none() || guest_died {
        let why = if guest_died {
            "the guest stopped without its command's exit status (a kernel panic, or QEMU died)"
        } else {
            "the VM was killed after its timeout"
        };
        show_console_tail(&console_path, CONSOLE_TAIL_LINES, why);
    }
    let mut lines = std::mem::take(
        &mut *lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if let (Some(out), true) = (&output_file, capture) {
        lines = fs::read_to_string(out)
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_else(|e| {
                eprintln!("vm: the command's output file {}: {e}", out.display());
                Vec::new()
            });
    }
    let _ = fs::remove_dir_all(&pause.dir);
    Ok(VmRun {
        code,
        lines,
        elapsed,
        guest_died,
        console_log: console_path,
    })
}

/// Run in the guest before its command. QEMU's multi-threaded TCG can go on running a stale
/// translation of kernel text that the other vCPU has just patched with text_poke_bp (seen on
/// 6.12: "Oops: int3" in __hrtimer_run_queues, a kernel panic, while a daemon attached or
/// detached its hrtimer hook). Real CPUs serialise text_poke_bp correctly: this is for the
/// emulator only.
///
/// A tracepoint's hot code is patched when its static key turns on (0 -> 1 probe) and when
/// its static call changes target: with one probe it calls that probe directly, with two or
/// more it calls the iterator (kernel/tracepoint.c, tracepoint_add_func and
/// tracepoint_remove_func: 1 -> 2 and 2 -> 1 patch, N -> N+1 for N >= 2 does not). So the
/// guest keeps two probes on each hot tracepoint clockguard uses for the whole boot: the
/// trace event enabled in the top instance and in a second instance (each instance's event
/// registers its own probe), with tracing off and tiny buffers (nothing is recorded).
/// Attaching or detaching our programs is then 2 -> 3 -> 2 and patches nothing.
///
/// The script is a file of the repository, sourced, not inlined: virtme-ng hands the guest
/// its command on the kernel command line (base64), which the kernel cuts at 2048 bytes;
/// a retry boot's long test filter with the prelude inlined went over it and the guest
/// panicked before it started (a fortify panic in start_kernel).
const GUEST_PRELUDE: &str = "tests/vm/guest-prelude.sh";

/// Boots so far in this process (names the console logs).
static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// vng's exit status when the guest wrote no exit status of its command.
const GUEST_DIED: i32 = 255;

/// How much of the guest's kernel console to show when the guest died.
const CONSOLE_TAIL_LINES: usize = 80;

/// Reads vng's stderr, where the guest's kernel console and its command's stderr meet:
/// every line goes to `console`, and the lines that are not kernel messages are echoed to
/// `echo` (the command's own errors stay visible; the boot log does not flood the output).
fn split_console(from: impl std::io::Read, mut console: fs::File, mut echo: impl Write) {
    for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
        let _ = console.write_all(&line);
        let _ = console.write_all(b"\n");
        let text = String::from_utf8_lossy(&line);
        if !is_kernel_console_line(&text) {
            let _ = writeln!(echo, "{}", text.trim_end_matches('\r'));
        }
    }
}

/// A printk line as Debian's kernels (CONFIG_PRINTK_TIME=y) print it: "[   12.345678] ...".
fn is_kernel_console_line(line: &str) -> bool {
    let Some(rest) = line.trim_start_matches('\r').strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim_start();
    match stamp.split_once('.') {
        Some((secs, frac)) => {
            !secs.is_empty()
                && !frac.is_empty()
                && secs.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn show_console_tail(path: &std::path::Path, lines: usize, why: &str) {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    eprintln!(
        "vm: {why}; the last {} lines of its kernel console ({}):",
        lines.min(all.len()),
        path.display()
    );
    for line in &all[all.len().saturating_sub(lines)..] {
        eprintln!("    {}", line.trim_end_matches('\r'));
    }
}

fn file_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Pauses the whole VM from outside on the guest's request, as a host under load, a live
/// migration or a snapshot does: the guest writes a number of seconds to
/// `$CG_VM_CONTROL/pause-request`; the host stops QEMU with SIGSTOP, resumes it with SIGCONT
/// that much later, and answers in `pause-done` with the measured pause (`paused_s=5.001`)
/// or `error=...`.
struct PauseService {
    dir: PathBuf,
}

impl PauseService {
    fn create(target: &std::path::Path) -> Result<PauseService> {
        let dir = target
            .join("vm-control")
            .join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(PauseService { dir })
    }

    /// Serves one pending request, if any (called from the VM's wait loop).
    fn poll(&self, vng_pid: u32) {
        let request = self.dir.join("pause-request");
        let Ok(text) = fs::read_to_string(&request) else {
            return;
        };
        let _ = fs::remove_file(&request);
        let answer = match Self::pause(vng_pid, text.trim()) {
            Ok(seconds) => format!("paused_s={seconds:.6}\n"),
            Err(err) => format!("error={err:#}\n"),
        };
        eprintln!("vm: pause request {:?}: {}", text.trim(), answer.trim());
        // Written whole, then renamed: the guest never reads half an answer.
        let partial = self.dir.join("pause-done.tmp");
        if fs::write(&partial, answer).is_ok() {
            let _ = fs::rename(&partial, self.dir.join("pause-done"));
        }
    }

    fn pause(vng_pid: u32, request: &str) -> Result<f64> {
        let seconds: f64 = request
            .parse()
            .ok()
            .filter(|s| (0.0..=60.0).contains(s))
            .with_context(|| format!("{request:?} is not a number of seconds (0 to 60)"))?;
        let qemu = util::descendants(vng_pid)
            .into_iter()
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.starts_with("qemu-system"))
            })
            .context("no qemu-system process under vng")?;
        util::send_signal(&[qemu], "STOP");
        let stopped = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        util::send_signal(&[qemu], "CONT");
        Ok(stopped.elapsed().as_secs_f64())
    }
}

/// `cargo xtask vm [-- CMD...]`: returns the exit code to forward.
pub fn vm(systemd: bool, command: &[String]) -> Result<i32> {
    let machine = if systemd {
        Machine::Systemd(crate::systemd_vm::ensure_image()?)
    } else {
        Machine::HostRoot
    };
    let r = run_in_vm(&crate::kernels::default_kernel()?, &machine, command, false)?;
    Ok(r.code.unwrap_or(124))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_console_lines_are_told_from_command_stderr() {
        assert!(is_kernel_console_line(
            "[    0.000000] Linux version 6.12.117"
        ));
        assert!(is_kernel_console_line(
            "[12345.678901] BUG: kernel NULL pointer"
        ));
        assert!(is_kernel_console_line("\r[    3.1] x"));
        assert!(!is_kernel_console_line("run-suite: no tests found"));
        assert!(!is_kernel_console_line("[run-suite] timed out after 300s"));
        assert!(!is_kernel_console_line("[ 12.] half a stamp"));
        assert!(!is_kernel_console_line("[1.5 no closing bracket"));
        assert!(!is_kernel_console_line(""));
    }

    #[test]
    fn console_keeps_every_line_and_echoes_only_the_command_s() {
        let dir = std::env::temp_dir().join(format!("xtask-console-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let input = "[    1.000000] booting\nerror: from the command\n[    2.5] panic\n";
        let mut echoed = Vec::new();
        split_console(
            input.as_bytes(),
            fs::File::create(&path).unwrap(),
            &mut echoed,
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), input);
        assert_eq!(
            String::from_utf8(echoed).unwrap(),
            "error: from the command\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn console_file_names_are_plain() {
        assert_eq!(file_safe("6.12"), "6.12");
        assert_eq!(
            file_safe("/boot/vmlinuz-6.1.0-50-amd64"),
            "_boot_vmlinuz-6.1.0-50-amd64"
        );
    }
}
