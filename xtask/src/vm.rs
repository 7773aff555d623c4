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
}

/// Boot the VM once on `kernel` and run `command` in it, from the repository root, with CG_BIN_DIR,
/// CG_REPO, CG_IN_VM=1 (and the host's other CG_* variables) exported. One argument is
/// taken as a shell command line; several are quoted word by word. stdout is echoed and,
/// with `capture`, also returned.
pub fn run_in_vm(kernel: &Kernel, command: &[String], capture: bool) -> Result<VmRun> {
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
        DEFAULT_TIMEOUT_SECS,
    ));
    let cpus = std::env::var("CLOCKGUARD_VM_CPUS").unwrap_or_else(|_| "2".into());
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
    let script = format!(
        "export {}; cd {} || exit 125; {}",
        exports
            .iter()
            .map(|(k, v)| format!("{k}={}", sh_quote(v)))
            .collect::<Vec<_>>()
            .join(" "),
        sh_quote(&repo_s),
        user_cmd
    );

    let mut c = cmd(&vng);
    c.arg("-r")
        .arg(kernel)
        .args([
            "--disable-kvm",
            "--user",
            "root",
            "--cpus",
            &cpus,
            "--memory",
            &memory,
        ])
        .args(["--rwdir", "/tmp", "--rwdir"])
        .arg(&target)
        .arg("--cwd")
        .arg(&repo)
        .arg("--")
        .arg(&script);
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
                    lines.lock().unwrap().push(line);
                }
            }
        })
    });
    let err_reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::stderr());
        })
    });

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
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    let _ = fs::remove_dir_all(&pause.dir);
    Ok(VmRun {
        code,
        lines,
        elapsed,
    })
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
        let answer = match self.pause(vng_pid, text.trim()) {
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

    fn pause(&self, vng_pid: u32, request: &str) -> Result<f64> {
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
pub fn vm(command: &[String]) -> Result<i32> {
    let r = run_in_vm(&crate::kernels::default_kernel()?, command, false)?;
    Ok(r.code.unwrap_or(124))
}
