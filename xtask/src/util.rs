//! Small process and path helpers shared by the tasks.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The repository root (the parent of xtask/).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Where `cargo install` puts binaries ($CARGO_HOME/bin, else ~/.cargo/bin).
pub fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join("bin"),
        _ => home().join(".cargo/bin"),
    }
}

/// PATH for child processes: the cargo bin dir first, then our own PATH.
pub fn child_path() -> OsString {
    let mut dirs = vec![cargo_bin_dir(), home().join(".cargo/bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    std::env::join_paths(seen).unwrap_or_default()
}

/// Look a program up in the child PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&child_path())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A Command with the child PATH, and without the toolchain pin that `cargo run` gives us
/// (so nested cargo/rustc calls pick their toolchain as if run from a shell).
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", child_path());
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_TOOLCHAIN_SOURCE",
        "RUST_RECURSION_COUNT",
    ] {
        c.env_remove(var);
    }
    c
}

/// Effective uid 0?
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A Command that runs `program` as root: directly when we are root, else via sudo.
/// `envs` are set for the program in both cases (sudo would drop them otherwise).
pub fn root_cmd(program: impl AsRef<OsStr>, envs: &[(&str, &str)]) -> Command {
    if is_root() {
        let mut c = cmd(program);
        c.envs(envs.iter().copied());
        c
    } else {
        let mut c = cmd("sudo");
        c.arg("env");
        for (k, v) in envs {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program);
        c
    }
}

/// Quote for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn describe(c: &Command) -> String {
    let mut parts: Vec<String> = c
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .map(|s| sh_quote(&s))
        .collect();
    parts.push(sh_quote(&c.get_program().to_string_lossy()));
    parts.extend(c.get_args().map(|a| sh_quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Print and run a command, inheriting stdio; fail unless it exits 0.
pub fn run(c: &mut Command) -> Result<()> {
    let st = status(c)?;
    if !st.success() {
        bail!("command failed ({}): {}", exit_desc(st), describe(c));
    }
    Ok(())
}

/// Print and run a command, inheriting stdio; return its status.
pub fn status(c: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", describe(c));
    c.status()
        .with_context(|| format!("cannot start {}", describe(c)))
}

/// Run quietly and return stdout if it exited 0.
pub fn output_ok(c: &mut Command) -> Option<String> {
    let out = c.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn exit_desc(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Exit code to forward for a child's status (128+signal like a shell).
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Process ids of all descendants of `root` (children first found via /proc).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may contain spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

pub fn send_signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let mut c = if is_root() {
        Command::new("kill")
    } else {
        let mut c = Command::new("sudo");
        c.arg("kill");
        c
    };
    c.arg(format!("-{sig}"))
        .args(pids.iter().map(ToString::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = c.status();
}

/// Terminate a child and everything below it: SIGTERM, then SIGKILL after `grace`.
pub fn kill_tree(child: &mut std::process::Child, grace: Duration) {
    let root = child.id();
    let mut pids = descendants(root);
    pids.push(root);
    send_signal(&pids, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest: Vec<u32> = pids
        .into_iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    rest.extend(descendants(root));
    send_signal(&rest, "KILL");
    let _ = child.wait();
}

/// A suite runner's closing counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// Parse "N passed, M failed" (optionally ", K skipped") from a line.
pub fn parse_summary(line: &str) -> Option<Counts> {
    let line = line.trim();
    let (p, rest) = line.split_once(" passed, ")?;
    let (f, rest) = rest.split_once(" failed")?;
    let skipped = match rest {
        "" => 0,
        more => more
            .strip_prefix(", ")?
            .strip_suffix(" skipped")?
            .parse()
            .ok()?,
    };
    Some(Counts {
        passed: p.parse().ok()?,
        failed: f.parse().ok()?,
        skipped,
    })
}

/// Seconds from an environment variable, else the default.
/// Running under CI (`CI` set and not "false" or "0", as CI services and .ci/run set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub fn env_secs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let counts = |passed, failed, skipped| Counts {
            passed,
            failed,
            skipped,
        };
        assert_eq!(parse_summary("3 passed, 1 failed"), Some(counts(3, 1, 0)));
        assert_eq!(
            parse_summary("  0 passed, 0 failed\r"),
            Some(counts(0, 0, 0))
        );
        assert_eq!(
            parse_summary("15 passed, 1 failed, 2 skipped"),
            Some(counts(15, 1, 2))
        );
        assert_eq!(parse_summary("3 passed, 1 failed, many skipped"), None);
        assert_eq!(parse_summary("PASS x"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc/d"), "abc/d");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
