//! The I/O side of tracked services (see `services` for the decisions): which processes
//! belong to each service (a /proc scan), the TCP health probe, keepalived track files and
//! the notify/restart commands.

use std::{
    collections::HashMap,
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::io::AsyncReadExt;

use crate::config::ServiceConfig;

/// statfs(2) f_type of a 9p share: inotify does not fire there, so keepalived would never
/// see a track file change.
const V9FS_MAGIC: i64 = 0x0102_1997;

/// A process found by the scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    pub service: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<String>,
}

/// The processes of every service: those matching `unit`, `pidfile`, `exe` or `comm`, and
/// all their descendants. A process matching several services belongs to the first.
/// Processes that vanish during the scan are skipped (a normal race, not an error).
pub fn scan(proc_root: &Path, services: &[ServiceConfig]) -> HashMap<u32, ProcessInfo> {
    struct Proc {
        ppid: u32,
        comm: String,
    }
    let mut procs: HashMap<u32, Proc> = HashMap::new();
    let Ok(dir) = fs::read_dir(proc_root) else {
        return HashMap::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) else {
            continue;
        };
        if let Some((comm, ppid)) = parse_stat(&stat) {
            // Kernel threads (children of kthreadd, pid 2) belong to no service.
            if pid != 2 && ppid != 2 {
                procs.insert(pid, Proc { ppid, comm });
            }
        }
    }
    let exe_of = |pid: u32| -> Option<String> {
        let link = fs::read_link(proc_root.join(pid.to_string()).join("exe")).ok()?;
        let text = link.to_string_lossy();
        Some(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
    };
    let pidfile_pids: Vec<Option<u32>> = services
        .iter()
        .map(|s| {
            let text = fs::read_to_string(s.pidfile.as_ref()?).ok()?;
            text.trim().parse().ok()
        })
        .collect();
    let any_exe = services.iter().any(|s| s.exe.is_some());
    let any_unit = services.iter().any(|s| s.unit.is_some());

    let mut found: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut roots: Vec<(u32, u32)> = Vec::new();
    // Executables read for matching, kept so a matched process's is not read twice.
    let mut exes: HashMap<u32, Option<String>> = HashMap::new();
    for (&pid, proc) in &procs {
        let exe = if any_exe {
            exes.entry(pid).or_insert_with(|| exe_of(pid)).clone()
        } else {
            None
        };
        let cgroup = if any_unit {
            fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()
        } else {
            None
        };
        let matching = services.iter().enumerate().position(|(index, s)| {
            pidfile_pids[index] == Some(pid)
                || s.exe
                    .as_ref()
                    .is_some_and(|want| exe.as_deref() == Some(&*want.to_string_lossy()))
                || s.comm.contains(&proc.comm)
                || s.unit
                    .as_ref()
                    .is_some_and(|unit| cgroup.as_deref().is_some_and(|c| in_unit(c, unit)))
        });
        if let Some(service) = matching {
            roots.push((pid, service as u32));
        }
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, proc) in &procs {
        children.entry(proc.ppid).or_default().push(pid);
    }
    // Roots in pid order, so that which service a process lands in does not depend on
    // the order of a hash map.
    roots.sort_unstable();
    let mut queue: Vec<(u32, u32)> = roots;
    while let Some((pid, service)) = queue.pop() {
        if found.contains_key(&pid) {
            continue;
        }
        let Some(proc) = procs.get(&pid) else {
            continue;
        };
        found.insert(
            pid,
            ProcessInfo {
                service,
                ppid: proc.ppid,
                comm: proc.comm.clone(),
                exe: exes.remove(&pid).unwrap_or_else(|| exe_of(pid)),
            },
        );
        for &child in children.get(&pid).into_iter().flatten() {
            queue.push((child, service));
        }
    }
    found
}

/// (comm, ppid) from /proc/PID/stat. The comm is in parentheses and may itself contain
/// spaces and parentheses: it ends at the last ')'.
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Is a process with this /proc/PID/cgroup in `unit` (or a cgroup below it)?
fn in_unit(cgroup: &str, unit: &str) -> bool {
    cgroup.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path.split('/').any(|component| component == unit)
    })
}

/// What a service's track file says: Some(true) for a fault (non-zero), None when absent
/// or unreadable.
pub fn read_track_file(path: &Path) -> Option<bool> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim().parse::<i64>() != Ok(0))
}

/// Writes 1 (fault) or 0 (healthy) into the track file by writing a temporary file next to
/// it and renaming it over: keepalived never reads a half-written file, and the file never
/// disappears (keepalived takes a deleted track file for 0, i.e. healthy).
pub fn write_track_file(path: &Path, fault: bool) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the track file has no file name"))?;
    let tmp = path.with_file_name(format!(".{}.clockguard-tmp", name.to_string_lossy()));
    fs::write(&tmp, if fault { "1\n" } else { "0\n" })?;
    fs::rename(&tmp, path)
}

/// Makes sure keepalived can watch `path`: its directory exists (created if not) and is not
/// on a 9p share, where inotify never fires.
pub fn prepare_track_file(service: &str, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "service {service:?}: cannot create the directory of track_file {}",
            path.display()
        )
    })?;
    check_track_file(service, path)
}

/// `prepare_track_file`'s check, creating nothing (`run --check-config`): a directory that
/// does not exist yet passes, the daemon makes it.
pub fn check_track_file(service: &str, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        return Ok(());
    }
    let fs_type = clockguard_sys::fs_type(dir)
        .with_context(|| format!("service {service:?}: statfs {}", dir.display()))?;
    if fs_type == V9FS_MAGIC {
        bail!(
            "service {service:?}: track_file {} is on a 9p share, where inotify does not fire: \
             keepalived would never see it change. Put it on a local file system or tmpfs \
             (e.g. /run/clockguard)",
            path.display()
        );
    }
    Ok(())
}

/// Follows a log file: the lines appended since the last read. Starts at the end of an
/// existing file (old lines are history); a file that appears later, is replaced (rotated:
/// another inode) or shrinks (truncated) is read from its start.
pub struct LogTail {
    path: PathBuf,
    inode: Option<u64>,
    offset: u64,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
}

/// Bytes read from a log per call, at most: a huge burst is read over several calls.
const LOG_READ_LIMIT: u64 = 1 << 20;

impl LogTail {
    pub fn new(path: &Path) -> LogTail {
        let meta = fs::metadata(path).ok();
        LogTail {
            path: path.to_path_buf(),
            inode: meta.as_ref().map(std::os::unix::fs::MetadataExt::ino),
            offset: meta.map_or(0, |m| m.len()),
            partial: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines appended since the last call (none while the file is absent).
    pub fn read_new_lines(&mut self) -> io::Result<Vec<String>> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut file = match fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let meta = file.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            self.inode = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        let n = file.take(LOG_READ_LIMIT).read_to_end(&mut bytes)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(complete
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect())
    }
}

/// One TCP health probe: connect, and with `expect`, read the server's first bytes and
/// compare. Ok(what was seen) or Err(why it failed), both one line for the journal.
pub async fn probe(
    addr: SocketAddr,
    expect: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let Some(expect) = expect else {
            return Ok(format!("connected to {addr}"));
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < expect.len() {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        let first_line = text.lines().next().unwrap_or("").trim_end();
        if got.starts_with(expect.as_bytes()) {
            Ok(format!("{addr} answered {first_line:?}"))
        } else {
            Err(format!("{addr} answered {first_line:?}, not {expect:?}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from {addr} within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Runs `argv` in the background with `env` set and `stdin` written to it; its outcome is
/// logged (a hook that hangs is killed after `limit`). `what` names it in the log.
pub fn spawn_command(
    argv: &[String],
    env: Vec<(String, String)>,
    stdin: String,
    what: String,
    limit: Duration,
) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true);
    let program = PathBuf::from(program);
    tokio::spawn(async move {
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                tracing::error!("{what}: cannot run {}: {err}", program.display());
                return;
            }
        };
        if let Some(mut input) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            // A command that does not read its stdin is fine.
            let _ = input.write_all(stdin.as_bytes()).await;
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) if status.success() => tracing::info!("{what}: done"),
            Ok(Ok(status)) => tracing::warn!("{what}: {} failed: {status}", program.display()),
            Ok(Err(err)) => tracing::warn!("{what}: {}: {err}", program.display()),
            Err(_) => {
                let _ = child.kill().await;
                tracing::warn!(
                    "{what}: {} still running after {} s: killed",
                    program.display(),
                    limit.as_secs()
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_comms_parse() {
        assert_eq!(
            parse_stat("339 (imap) S 273 273 273 0 -1"),
            Some(("imap".into(), 273))
        );
        assert_eq!(
            parse_stat("12 (a) b (c)) R 1 12 12"),
            Some(("a) b (c)".into(), 1))
        );
        assert_eq!(parse_stat("12 (trunc"), None);
    }

    #[test]
    fn units_match_their_cgroup_and_sub_cgroups() {
        assert!(in_unit(
            "0::/system.slice/dovecot.service\n",
            "dovecot.service"
        ));
        assert!(in_unit(
            "0::/system.slice/dovecot.service/imap\n",
            "dovecot.service"
        ));
        assert!(!in_unit(
            "0::/system.slice/nginx.service\n",
            "dovecot.service"
        ));
        assert!(!in_unit(
            "0::/system.slice/dovecot.service-x\n",
            "dovecot.service"
        ));
    }

    /// A fake /proc: a dovecot master (matched by pid file), its worker and a grandchild,
    /// an nginx (matched by comm), a kernel thread with a matching name, and a daemon
    /// matched by its executable (a deleted one, as after an upgrade in place).
    #[test]
    fn scan_finds_roots_and_their_descendants() {
        let root = tempfile::tempdir().unwrap();
        let proc_root = root.path().join("proc");
        let add = |pid: u32, comm: &str, ppid: u32| {
            let dir = proc_root.join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("stat"), format!("{pid} ({comm}) S {ppid} 0 0")).unwrap();
        };
        add(1, "init", 0);
        add(2, "kthreadd", 0);
        add(273, "dovecot", 1);
        add(339, "imap", 273);
        add(400, "sh", 339);
        add(500, "nginx", 1);
        add(501, "nginx", 2);
        add(600, "bash", 1);
        add(700, "cgtestd", 1);
        std::os::unix::fs::symlink("/usr/sbin/cgtestd (deleted)", proc_root.join("700/exe"))
            .unwrap();
        fs::create_dir_all(proc_root.join("self")).unwrap();
        let pidfile = root.path().join("master.pid");
        fs::write(&pidfile, "273\n").unwrap();
        let text = format!(
            "[[service]]\nname = \"dovecot\"\npidfile = \"{}\"\n[[service]]\nname = \"web\"\ncomm = [\"nginx\"]\n[[service]]\nname = \"t\"\nexe = \"/usr/sbin/cgtestd\"\n",
            pidfile.display()
        );
        let services = crate::config::Config::parse(&text, "t").unwrap().services;
        let found = scan(&proc_root, &services);
        let mut pids: Vec<(u32, u32)> = found.iter().map(|(p, i)| (*p, i.service)).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![(273, 0), (339, 0), (400, 0), (500, 1), (700, 2)]);
        assert_eq!(found[&700].exe.as_deref(), Some("/usr/sbin/cgtestd"));
        assert_eq!(found[&339].comm, "imap");
        assert_eq!(found[&339].ppid, 273);
    }

    #[test]
    fn track_files_are_replaced_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dovecot.track");
        assert_eq!(read_track_file(&path), None);
        prepare_track_file("dovecot", &path).unwrap();
        write_track_file(&path, true).unwrap();
        assert_eq!(read_track_file(&path), Some(true));
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        write_track_file(&path, false).unwrap();
        assert_eq!(read_track_file(&path), Some(false));
        // Only the track file is left: the temporary file was renamed over it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn log_tails_follow_appends_rotation_and_truncation() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dovecot.log");
        let append = |text: &str| {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        // Not there yet: nothing, and the file is read from its start once it appears.
        let mut tail = LogTail::new(&path);
        assert!(tail.read_new_lines().unwrap().is_empty());
        append("one\ntw");
        assert_eq!(tail.read_new_lines().unwrap(), vec!["one"]);
        append("o\nthree\n");
        assert_eq!(tail.read_new_lines().unwrap(), vec!["two", "three"]);
        // A tail started on an existing file skips its history.
        let mut late = LogTail::new(&path);
        append("four\n");
        assert_eq!(late.read_new_lines().unwrap(), vec!["four"]);
        // Rotated: a new file under the name is read from its start.
        fs::rename(&path, dir.path().join("dovecot.log.1")).unwrap();
        append("five\n");
        assert_eq!(late.read_new_lines().unwrap(), vec!["five"]);
        // Truncated in place (copytruncate).
        fs::write(&path, "").unwrap();
        append("six\n");
        assert_eq!(late.read_new_lines().unwrap(), vec!["six"]);
    }

    #[tokio::test]
    async fn probes_connect_and_check_the_greeting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                socket.write_all(b"* OK Dovecot ready.\r\n").await.unwrap();
            }
        });
        let limit = Duration::from_secs(2);
        assert!(probe(addr, None, limit).await.is_ok());
        let seen = probe(addr, Some("* OK"), limit).await.unwrap();
        assert!(seen.contains("Dovecot ready"), "{seen}");
        let err = probe(addr, Some("+OK"), limit).await.unwrap_err();
        assert!(err.contains("not \"+OK\""), "{err}");
        // Nothing listens on a port we just closed.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = probe(closed, None, limit).await.unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }
}
