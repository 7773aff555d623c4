//! Enrichment from procfs: exe, cmdline, user, parent chain, cgroup and systemd unit.
//!
//! The caller may have exited before we read /proc (`date -s` lives for a millisecond), or its
//! pid may already belong to another process. What the kernel recorded (pid, comm, exe from
//! exec, ppid and parent comm from fork, cgroup id) is kept; what procfs cannot tell any more
//! stays `null`. Every read tolerates the process vanishing half-way.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::record::{Ancestor, Record};

/// Ancestors listed above the parent, at most.
const PARENT_LEVELS: usize = 4;
/// How long an enrichment of the same process is reused: a storm of calls from one process
/// costs one procfs walk, not one per call.
const CACHE_TTL: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 1024;

#[derive(Clone, Debug, Default)]
struct ProcFacts {
    exe: Option<String>,
    cmdline: Option<String>,
    ppid: Option<u32>,
    parent_comm: Option<String>,
    parents: Vec<Ancestor>,
    cgroup: Option<String>,
}

pub struct Enricher {
    proc_root: PathBuf,
    /// Mount point of the cgroup v2 hierarchy, if any (to resolve a cgroup id after exit).
    cgroup2_root: Option<PathBuf>,
    cache: HashMap<(u32, String), (Instant, ProcFacts)>,
    cgroup_paths: HashMap<u64, String>,
    users: HashMap<u32, Option<String>>,
}

impl Enricher {
    pub fn new(proc_root: impl Into<PathBuf>, cgroup2_root: Option<PathBuf>) -> Self {
        Enricher {
            proc_root: proc_root.into(),
            cgroup2_root,
            cache: HashMap::new(),
            cgroup_paths: HashMap::new(),
            users: HashMap::new(),
        }
    }

    /// The enricher for this system: /proc and the cgroup2 mount found in mountinfo.
    pub fn system() -> Self {
        let cgroup2 = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| find_cgroup2_mount(&m));
        Enricher::new("/proc", cgroup2)
    }

    /// Fills the procfs-derived fields of `record` (pid and comm come from the kernel).
    pub fn enrich(&mut self, record: &mut Record, cgroup_id: u64) {
        let Some(pid) = record.pid else { return };
        if let Some(uid) = record.uid {
            record.user = self.user_name(uid);
        }
        let comm = record.comm.clone().unwrap_or_default();
        let now = Instant::now();
        let key = (pid, comm.clone());
        let facts = match self.cache.get(&key) {
            Some((at, facts)) if now.duration_since(*at) < CACHE_TTL => facts.clone(),
            _ => {
                let facts = self.read_process(pid, &comm);
                if self.cache.len() >= CACHE_MAX {
                    self.cache
                        .retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
                    if self.cache.len() >= CACHE_MAX {
                        self.cache.clear();
                    }
                }
                self.cache.insert(key, (now, facts.clone()));
                facts
            }
        };
        // procfs's exe is the resolved path of a live process; the kernel's is the name
        // given to execve and survives the exit. Prefer the live one.
        if facts.exe.is_some() {
            record.exe = facts.exe;
        } else if let Some(exec_name) = record.exe.as_deref().filter(|e| e.starts_with('/')) {
            // The name given to execve may go through links (/bin/date on a merged /usr):
            // resolve it now as procfs would have. Relative names stay as given (the
            // caller's working directory is gone).
            if let Ok(resolved) = fs::canonicalize(exec_name) {
                record.exe = Some(resolved.to_string_lossy().into_owned());
            }
        }
        record.cmdline = facts.cmdline;
        if record.ppid.is_none() {
            record.ppid = facts.ppid;
        }
        if record.parent_comm.is_none() {
            record.parent_comm = facts.parent_comm;
        }
        record.parents = facts.parents;
        if record.parents.is_empty() {
            if let Some(ppid) = record.ppid {
                record.parents = self.ancestors(ppid);
            }
        }
        record.cgroup = facts.cgroup.or_else(|| self.cgroup_path(cgroup_id));
        record.unit = record.cgroup.as_deref().and_then(unit_of_cgroup);
    }

    /// What procfs says of `pid`, if it is still the process that made the call (same comm).
    fn read_process(&self, pid: u32, comm: &str) -> ProcFacts {
        let dir = self.proc_root.join(pid.to_string());
        let Some(stat) = read_stat(&dir) else {
            return ProcFacts::default();
        };
        // A different comm: the caller exited and the pid was reused (or it exec'd since).
        // Then nothing procfs says is about the caller.
        if !comm.is_empty() && stat.comm != comm {
            return ProcFacts::default();
        }
        let exe = read_link(&dir.join("exe"));
        let cmdline = read_cmdline(&dir);
        let parents = self.ancestors(stat.ppid);
        let parent_comm = parents.first().and_then(|p| p.comm.clone());
        ProcFacts {
            exe,
            cmdline,
            ppid: (stat.ppid != 0).then_some(stat.ppid),
            parent_comm,
            parents,
            cgroup: read_cgroup(&dir),
        }
    }

    /// The chain from `ppid` up, PARENT_LEVELS deep at most, stopping at pid 0.
    fn ancestors(&self, mut ppid: u32) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        while ppid != 0 && chain.len() < PARENT_LEVELS {
            let dir = self.proc_root.join(ppid.to_string());
            let Some(stat) = read_stat(&dir) else { break };
            chain.push(Ancestor {
                pid: ppid,
                comm: Some(stat.comm),
                exe: read_link(&dir.join("exe")),
            });
            ppid = stat.ppid;
        }
        chain
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| lookup_user(uid))
            .clone()
    }

    /// The cgroup v2 path of an id (the directory's inode number), by walking the
    /// hierarchy once per unknown id.
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(path) = self.cgroup_paths.get(&id) {
            return Some(path.clone());
        }
        let root = self.cgroup2_root.clone()?;
        let found = find_cgroup_by_inode(&root, id)?;
        if self.cgroup_paths.len() >= CACHE_MAX {
            self.cgroup_paths.clear();
        }
        self.cgroup_paths.insert(id, found.clone());
        Some(found)
    }
}

struct Stat {
    comm: String,
    ppid: u32,
}

/// Parses /proc/PID/stat: `pid (comm) state ppid ...`; comm may hold spaces and ')', so
/// the last ')' ends it.
fn read_stat(dir: &Path) -> Option<Stat> {
    let text = fs::read_to_string(dir.join("stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Stat { comm, ppid })
}

fn read_link(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn read_cmdline(dir: &Path) -> Option<String> {
    let raw = fs::read(dir.join("cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// The cgroup v2 path from /proc/PID/cgroup (`0::/system.slice/chrony.service`).
pub fn read_cgroup(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

/// The systemd unit of a cgroup path: the deepest component that names a unit (service,
/// scope, socket, mount, swap, timer), not a slice.
pub fn unit_of_cgroup(path: &str) -> Option<String> {
    const UNIT_SUFFIXES: [&str; 6] = [".service", ".scope", ".socket", ".mount", ".swap", ".timer"];
    path.rsplit('/')
        .find(|part| UNIT_SUFFIXES.iter().any(|s| part.ends_with(s)))
        .map(str::to_string)
}

fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    // Fields: id parent major:minor root mountpoint options ... - fstype source superopts
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

fn find_cgroup_by_inode(root: &Path, id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    // Bounded walk: a host has thousands of cgroups at most.
    let mut budget = 20_000;
    while let Some(dir) = stack.pop() {
        let meta = fs::metadata(&dir).ok()?;
        if meta.ino() == id {
            let rel = dir.strip_prefix(root).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                budget -= 1;
                if budget == 0 {
                    return None;
                }
                stack.push(entry.path());
            }
        }
    }
    None
}

/// The user name of a uid through NSS; None when it has none.
fn lookup_user(uid: u32) -> Option<String> {
    clockguard_sys::user_name(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(root: &Path, pid: u32, comm: &str, ppid: u32, exe: &str, cmdline: &[&str]) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("stat"),
            format!("{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 100 0 0 0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        let mut raw = Vec::new();
        for arg in cmdline {
            raw.extend_from_slice(arg.as_bytes());
            raw.push(0);
        }
        fs::write(dir.join("cmdline"), raw).unwrap();
        fs::write(dir.join("cgroup"), "0::/system.slice/chrony.service\n").unwrap();
    }

    fn record(pid: u32, comm: &str) -> Record {
        Record {
            pid: Some(pid),
            comm: Some(comm.into()),
            uid: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn live_process_gets_exe_cmdline_parents_and_unit() {
        let tmp = tempfile::tempdir().unwrap();
        fake_proc(
            tmp.path(),
            1,
            "systemd",
            0,
            "/usr/lib/systemd/systemd",
            &["/sbin/init"],
        );
        fake_proc(tmp.path(), 50, "bash", 1, "/usr/bin/bash", &["-bash"]);
        fake_proc(
            tmp.path(),
            70,
            "chronyd",
            50,
            "/usr/sbin/chronyd",
            &["chronyd", "-d"],
        );
        let mut e = Enricher::new(tmp.path(), None);
        let mut r = record(70, "chronyd");
        e.enrich(&mut r, 0);
        assert_eq!(r.exe.as_deref(), Some("/usr/sbin/chronyd"));
        assert_eq!(r.cmdline.as_deref(), Some("chronyd -d"));
        assert_eq!(r.ppid, Some(50));
        assert_eq!(r.parent_comm.as_deref(), Some("bash"));
        let chain: Vec<u32> = r.parents.iter().map(|a| a.pid).collect();
        assert_eq!(chain, vec![50, 1]);
        assert_eq!(r.unit.as_deref(), Some("chrony.service"));
        assert_eq!(r.user.as_deref(), Some("root"));
    }

    #[test]
    fn exited_process_keeps_kernel_fields_and_the_rest_is_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let mut e = Enricher::new(tmp.path(), None);
        let mut r = record(4242, "date");
        r.exe = Some("relative/date".into()); // from the kernel's exec tracepoint
        r.ppid = Some(50);
        r.parent_comm = Some("bash".into());
        e.enrich(&mut r, 0);
        assert_eq!(r.pid, Some(4242));
        assert_eq!(r.comm.as_deref(), Some("date"));
        assert_eq!(r.exe.as_deref(), Some("relative/date"));
        assert_eq!(r.parent_comm.as_deref(), Some("bash"));
        assert_eq!(r.cmdline, None);
        assert_eq!(r.unit, None);
    }

    #[test]
    fn exec_name_of_an_exited_process_is_resolved_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("usr-bin-date");
        fs::write(&real, "").unwrap();
        let link = tmp.path().join("bin-date");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut e = Enricher::new(tmp.path().join("noproc"), None);
        let mut r = record(4242, "date");
        r.exe = Some(link.to_string_lossy().into_owned());
        e.enrich(&mut r, 0);
        assert_eq!(r.exe.as_deref(), Some(real.to_str().unwrap()));
    }

    #[test]
    fn reused_pid_is_not_attributed_to_the_new_process() {
        let tmp = tempfile::tempdir().unwrap();
        fake_proc(tmp.path(), 900, "sshd", 1, "/usr/sbin/sshd", &["sshd"]);
        let mut e = Enricher::new(tmp.path(), None);
        let mut r = record(900, "date");
        e.enrich(&mut r, 0);
        assert_eq!(r.exe, None, "sshd's exe must not be blamed for date's step");
        assert_eq!(r.cmdline, None);
    }

    #[test]
    fn stat_with_parens_in_comm() {
        let s = parse_stat("12 (a) b (c)) R 34 1 1").unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.ppid, 34);
        assert!(parse_stat("12 (trunc").is_none());
    }

    #[test]
    fn units_from_cgroup_paths() {
        assert_eq!(
            unit_of_cgroup("/system.slice/chrony.service").as_deref(),
            Some("chrony.service")
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit_of_cgroup("/user.slice"), None);
        assert_eq!(unit_of_cgroup("/"), None);
    }

    #[test]
    fn cgroup2_mount_found_in_mountinfo() {
        let m = "30 23 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                 31 23 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            find_cgroup2_mount(m),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn cgroup_id_resolves_to_its_directory() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("system.slice/dovecot.service");
        fs::create_dir_all(&dir).unwrap();
        let ino = fs::metadata(&dir).unwrap().ino();
        let mut e = Enricher::new(tmp.path().join("noproc"), Some(tmp.path().to_path_buf()));
        let mut r = record(1, "x");
        e.enrich(&mut r, ino);
        assert_eq!(r.cgroup.as_deref(), Some("/system.slice/dovecot.service"));
        assert_eq!(r.unit.as_deref(), Some("dovecot.service"));
    }
}
