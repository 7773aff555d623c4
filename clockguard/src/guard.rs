//! Guard mode, userspace side: the policy the kernel enforces (executables by inode), the
//! other time services that make clockguard defer, and whether enforcement is really on.
//! The refusing itself happens in the kernel (clockguard-ebpf: `settime`, `capable`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clockguard_ebpf::{self as abi, ExeKey, ExeOffsets};

use clockguard_core::status;

use crate::{btf::KernelBtf, config::GuardConfig};

/// One executable of the policy, as resolved on this machine: what `status` shows, and what
/// goes into the kernel's map.
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    pub shown: status::PolicyEntry,
    /// The inode the kernel sees, when the file exists.
    pub key: Option<ExeKey>,
    pub class_id: u16,
}

/// The kernel's internal dev_t: major << 20 | minor (MKDEV).
fn mkdev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// The `sb->s_dev` of mount `mount_id`, from /proc/self/mountinfo ("36 35 98:0 / /mnt ...":
/// the third field is the super block's major:minor).
fn mount_dev(mountinfo: &str, mount_id: u64) -> Option<u32> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let id: u64 = fields.next()?.parse().ok()?;
        if id != mount_id {
            return None;
        }
        let (major, minor) = fields.nth(1)?.split_once(':')?;
        Some(mkdev(major.parse().ok()?, minor.parse().ok()?))
    })
}

/// How the kernel identifies the executable at `path` (symlinks followed) in
/// `mm->exe_file->f_inode`: the inode number and its super block's dev_t. stat()'s st_dev
/// is not always that: overlayfs reports the lower layer's device, btrfs a per-subvolume
/// one. So the dev comes from the file's mount in mountinfo (statx's mount id), which is
/// the super block's; st_dev only when the mount cannot be found.
fn kernel_identity(path: &Path, mountinfo: &str) -> Result<ExeKey, String> {
    let file = clockguard_sys::file_identity(path).map_err(|err| err.to_string())?;
    if !file.is_regular_file {
        return Err("not a regular file".into());
    }
    let dev = file
        .mount_id
        .and_then(|id| mount_dev(mountinfo, id))
        .unwrap_or_else(|| mkdev(file.dev_major, file.dev_minor));
    Ok(ExeKey {
        ino: file.ino,
        dev,
        _pad: 0,
    })
}

/// Resolves every configured path to the inode the kernel will see as `mm->exe_file`.
/// Paths that do not exist are kept with their problem, so `status` shows them; the
/// default list names agents of several distributions.
pub fn resolve_policy(config: &GuardConfig) -> Vec<PolicyEntry> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let classes = [
        ("allow", abi::CLASS_ALLOW, &config.allow),
        (
            "slew_instead",
            abi::CLASS_SLEW_INSTEAD,
            &config.slew_instead,
        ),
    ];
    let mut entries = Vec::new();
    for (class, class_id, paths) in classes {
        for path in paths {
            let mut entry = PolicyEntry {
                shown: status::PolicyEntry {
                    path: path.clone(),
                    class: class.into(),
                    dev: None,
                    ino: None,
                    problem: None,
                },
                key: None,
                class_id,
            };
            match kernel_identity(path, &mountinfo) {
                Ok(key) => {
                    entry.shown.dev = Some(format!("{}:{}", key.dev >> 20, key.dev & 0xfffff));
                    entry.shown.ino = Some(key.ino);
                    entry.key = Some(key);
                }
                Err(problem) => entry.shown.problem = Some(problem),
            }
            entries.push(entry);
        }
    }
    entries
}

/// clockguard's own executable as the kernel identifies it (`mm->exe_file`): the guard
/// knows the daemon by its tgid and this, not by a pid another process may reuse.
pub fn self_identity() -> Result<ExeKey, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    kernel_identity(Path::new("/proc/self/exe"), &mountinfo)
}

/// The kernel's own executable, always allowed by tgid; also returned for `status`.
pub fn self_exe() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/exe").ok()
}

/// Offsets (bytes) of `current->mm->exe_file->f_inode->{i_ino, i_sb->s_dev}` in the
/// running kernel; each one checked to lie inside its struct with room for the field the
/// kernel side reads (8 bytes, 4 for s_dev).
pub fn exe_offsets(btf: &KernelBtf) -> Result<ExeOffsets> {
    let member = |strukt: &str, name: &str, width: u32| -> Result<u32> {
        let offset = btf.member_offset(strukt, name)?;
        let size = btf.struct_size(strukt)?;
        if offset + width > size {
            anyhow::bail!(
                "struct {strukt} member {name} at {offset} lies outside its {size} bytes"
            );
        }
        Ok(offset)
    };
    Ok(ExeOffsets {
        task_mm: member("task_struct", "mm", 8)?,
        mm_exe_file: member("mm_struct", "exe_file", 8)?,
        file_f_inode: member("file", "f_inode", 8)?,
        inode_i_ino: member("inode", "i_ino", 8)?,
        inode_i_sb: member("inode", "i_sb", 8)?,
        sb_s_dev: member("super_block", "s_dev", 4)?,
    })
}

/// Another time service, and how we know.
pub use clockguard_core::status::TimeService;

/// Daemons that discipline the clock, by process name (comm).
const TIME_DAEMONS: &[(&str, &str)] = &[
    ("chronyd", "chronyd"),
    ("ntpd", "ntpd"),
    ("openntpd", "ntpd"),
    ("systemd-timesyncd", "systemd-timesyn"),
    ("ptp4l", "ptp4l"),
    ("phc2sys", "phc2sys"),
];

/// Their configuration files: present means the package is installed and would start.
const TIME_CONFIGS: &[(&str, &str)] = &[
    ("chronyd", "etc/chrony/chrony.conf"),
    ("chronyd", "etc/chrony.conf"),
    ("ntpd", "etc/ntp.conf"),
    ("ntpd", "etc/ntpsec/ntp.conf"),
    ("openntpd", "etc/openntpd/ntpd.conf"),
];

/// systemd units that, enabled, start a time service at boot.
const TIME_UNITS: &[(&str, &str)] = &[
    ("chronyd", "chrony.service"),
    ("chronyd", "chronyd.service"),
    ("ntpd", "ntp.service"),
    ("ntpd", "ntpsec.service"),
    ("ntpd", "ntpd.service"),
    ("openntpd", "openntpd.service"),
    ("systemd-timesyncd", "systemd-timesyncd.service"),
];

/// Every process under `proc` as (pid, comm). A process that exits while we look is
/// skipped, not an error.
pub fn process_comms(proc: &Path) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            Some((pid, comm.trim().to_string()))
        })
        .collect()
}

/// Other time services running (in `proc`) or configured (under `root`): what makes
/// clockguard defer to observe mode. Our own process is never one of them.
pub fn other_time_services(root: &Path, proc: &Path) -> Vec<TimeService> {
    let mut found = Vec::new();
    for (pid, comm) in process_comms(proc) {
        if let Some((name, _)) = TIME_DAEMONS.iter().find(|(_, c)| *c == comm) {
            found.push(TimeService {
                name: name.to_string(),
                evidence: format!("running: pid {pid}"),
            });
        }
    }
    for (name, file) in TIME_CONFIGS {
        let path = root.join(file);
        if path.is_file() {
            found.push(TimeService {
                name: name.to_string(),
                evidence: format!("configured: {}", Path::new("/").join(file).display()),
            });
        }
    }
    let wants = root.join("etc/systemd/system");
    if let Ok(dir) = std::fs::read_dir(&wants) {
        for target in dir.flatten() {
            if !target.file_name().to_string_lossy().ends_with(".wants") {
                continue;
            }
            for (name, unit) in TIME_UNITS {
                let link = target.path().join(unit);
                if link.symlink_metadata().is_ok() {
                    let shown = Path::new("/")
                        .join(link.strip_prefix(root).unwrap_or(&link))
                        .display()
                        .to_string();
                    found.push(TimeService {
                        name: name.to_string(),
                        evidence: format!("enabled: {shown}"),
                    });
                }
            }
        }
    }
    found
}

/// Whether the kernel refuses steps now, and why (not).
#[derive(Clone, Debug)]
pub struct Enforcement {
    pub active: bool,
    /// The mode in effect: "guard" only when enforcement is active or was asked for and
    /// cannot be; "observe" when configured so or deferring to another time service.
    pub mode: &'static str,
    pub reason: String,
    /// Paths of the guard that do not work, although enforcement is on.
    pub gaps: Vec<String>,
}

/// What the guard's hooks look like to `decide`.
pub struct GuardHooks<'a> {
    pub settime: Option<&'a crate::bpf::HookStatus>,
    pub capable: Option<&'a crate::bpf::HookStatus>,
    pub adjtimex: Option<&'a crate::bpf::HookStatus>,
    /// The active LSMs: the kernel calls the LSM hooks only when `bpf` is one of them.
    pub lsms: &'a crate::lsm::ActiveLsms,
    /// Why the caller's executable cannot be identified in the kernel (BTF offsets).
    pub exe_layout_error: Option<&'a str>,
}

fn hook_problem(hook: Option<&crate::bpf::HookStatus>) -> Option<String> {
    match hook {
        None => Some("not in the eBPF object".into()),
        Some(h) if !h.attached => Some(
            h.error
                .clone()
                .unwrap_or_else(|| "not attached".to_string()),
        ),
        _ => None,
    }
}

/// Decides whether guard mode really enforces, and says why in words an operator can act
/// on. Never claims enforcement that the kernel does not do.
pub fn decide(
    mode: crate::config::Mode,
    config: &GuardConfig,
    services: &[TimeService],
    hooks: &GuardHooks,
) -> Enforcement {
    use crate::config::Mode;
    if mode == Mode::Observe {
        return Enforcement {
            active: false,
            mode: "observe",
            reason: "observe mode: clock changes are audited, none is refused".into(),
            gaps: Vec::new(),
        };
    }
    if config.defer_to_time_services && !services.is_empty() {
        let list: Vec<String> = services
            .iter()
            .map(|s| format!("{} ({})", s.name, s.evidence))
            .collect();
        return Enforcement {
            active: false,
            mode: "observe",
            reason: format!(
                "guard mode requested, observing instead: another time service is running or \
                 configured: {}. Remove it, or set [guard] defer_to_time_services = false to \
                 guard anyway",
                list.join(", ")
            ),
            gaps: Vec::new(),
        };
    }
    let off = |why: String| Enforcement {
        active: false,
        mode: "guard",
        reason: format!(
            "guard mode requested but enforcement is OFF: {why}; clock changes are audited only"
        ),
        gaps: Vec::new(),
    };
    if let Some(problem) = hook_problem(hooks.settime) {
        return off(format!(
            "the BPF-LSM settime hook could not attach ({problem})"
        ));
    }
    if hooks.lsms.bpf_active() == Some(false) {
        return off(format!(
            "`bpf` is not among the active LSMs ({}, from {}), so BPF-LSM hooks are never \
             called (boot with lsm=...,bpf)",
            hooks.lsms.list.as_deref().unwrap_or_default().join(","),
            hooks.lsms.source
        ));
    }
    if let Some(problem) = hooks.exe_layout_error {
        return off(format!(
            "the caller's executable cannot be identified in the kernel ({problem})"
        ));
    }
    let mut gaps = Vec::new();
    if hooks.lsms.bpf_active().is_none() {
        gaps.push(format!(
            "the LSM hooks attached, but whether the kernel calls them is {}",
            hooks.lsms.source
        ));
    }
    for (hook, what) in [
        (hooks.capable, "the LSM capable hook"),
        (hooks.adjtimex, "the do_adjtimex hooks"),
    ] {
        if let Some(problem) = hook_problem(hook) {
            gaps.push(format!(
                "ADJ_SETOFFSET steps (adjtimex, clock_adjtime) are NOT refused: {what} could \
                 not attach ({problem})"
            ));
        }
    }
    Enforcement {
        active: true,
        mode: "guard",
        reason: if gaps.is_empty() {
            "clock steps are refused in the kernel for every executable not allowed".into()
        } else {
            "settimeofday/clock_settime steps are refused in the kernel; see gaps".into()
        },
        gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bpf::HookStatus, config::Mode};
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cg-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn mount_dev_reads_the_super_block_of_the_mount() {
        let info = "23 1 0:21 / / ro,relatime - 9p /dev/root ro\n\
                    31 23 0:40 / /usr rw,relatime - overlay virtme_rw_overlay5 rw\n";
        assert_eq!(mount_dev(info, 31), Some(40));
        assert_eq!(mkdev(259, 300), (259 << 20) | 300);
        assert_eq!(mount_dev(info, 23), Some(21));
        assert_eq!(mount_dev(info, 99), None);
        assert_eq!(mount_dev("garbage line\n", 1), None);
    }

    #[test]
    fn policy_resolves_inodes_and_keeps_missing_paths() {
        let dir = scratch("policy");
        let agent = dir.join("agent");
        std::fs::write(&agent, "x").unwrap();
        let link = dir.join("agent-link");
        std::os::unix::fs::symlink(&agent, &link).unwrap();
        let config = GuardConfig {
            allow: vec![link.clone()],
            slew_instead: vec![dir.join("missing")],
            ..Default::default()
        };
        let entries = resolve_policy(&config);
        assert_eq!(entries.len(), 2);
        let meta = std::fs::metadata(&agent).unwrap();
        assert_eq!(entries[0].class_id, abi::CLASS_ALLOW);
        assert_eq!(entries[0].key.unwrap().ino, meta.ino(), "symlink followed");
        assert_eq!(entries[1].key, None);
        let dir_entry = resolve_policy(&GuardConfig {
            allow: vec![dir.clone()],
            slew_instead: Vec::new(),
            ..Default::default()
        });
        assert_eq!(
            dir_entry[0].shown.problem.as_deref(),
            Some("not a regular file")
        );
        assert!(entries[1]
            .shown
            .problem
            .as_deref()
            .unwrap()
            .contains("No such file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn time_services_found_by_config_unit_and_process() {
        let root = scratch("root");
        let proc = scratch("proc");
        std::fs::create_dir_all(root.join("etc/chrony")).unwrap();
        std::fs::write(root.join("etc/chrony/chrony.conf"), "pool x\n").unwrap();
        let wants = root.join("etc/systemd/system/sysinit.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/systemd-timesyncd.service",
            wants.join("systemd-timesyncd.service"),
        )
        .unwrap();
        std::fs::create_dir_all(proc.join("812")).unwrap();
        std::fs::write(proc.join("812/comm"), "ntpd\n").unwrap();
        std::fs::create_dir_all(proc.join("900")).unwrap(); // exited: no comm
        std::fs::create_dir_all(proc.join("self")).unwrap();
        let mut found = other_time_services(&root, &proc);
        found.sort_by(|a, b| a.evidence.cmp(&b.evidence));
        let shown: Vec<String> = found
            .iter()
            .map(|s| format!("{} {}", s.name, s.evidence))
            .collect();
        assert_eq!(
            shown,
            [
                "chronyd configured: /etc/chrony/chrony.conf",
                "systemd-timesyncd enabled: /etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service",
                "ntpd running: pid 812",
            ]
        );
        let empty = scratch("empty");
        assert!(other_time_services(&empty, &empty).is_empty());
        for d in [root, proc, empty] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    fn hook(attached: bool) -> HookStatus {
        HookStatus {
            name: "h".into(),
            kind: "lsm".into(),
            target: "t".into(),
            attached,
            error: (!attached).then(|| "EPERM: load failed".to_string()),
            errno: None,
            pinned: false,
            adopted: false,
            replaced_by: None,
        }
    }

    #[test]
    fn enforcement_is_never_claimed_without_the_kernel() {
        let (on, off) = (hook(true), hook(false));
        let lsms = |list: Option<&str>, source: &str| crate::lsm::ActiveLsms {
            list: list.map(crate::lsm::parse_lsm_file),
            source: source.into(),
        };
        let with_bpf = lsms(Some("capability,bpf"), crate::lsm::LSM_FILE);
        let all = GuardHooks {
            settime: Some(&on),
            capable: Some(&on),
            adjtimex: Some(&on),
            lsms: &with_bpf,
            exe_layout_error: None,
        };
        let config = GuardConfig::default();
        let e = decide(Mode::Guard, &config, &[], &all);
        assert!(e.active && e.gaps.is_empty(), "{e:?}");
        assert!(!decide(Mode::Observe, &config, &[], &all).active);

        let chrony = [TimeService {
            name: "chronyd".into(),
            evidence: "running: pid 1".into(),
        }];
        let e = decide(Mode::Guard, &config, &chrony, &all);
        assert!(!e.active);
        assert_eq!(e.mode, "observe");
        assert!(
            e.reason.contains("chronyd (running: pid 1)"),
            "{}",
            e.reason
        );
        let forced = GuardConfig {
            defer_to_time_services: false,
            ..Default::default()
        };
        assert!(decide(Mode::Guard, &forced, &chrony, &all).active);

        let no_lsm = GuardHooks {
            settime: Some(&off),
            ..all
        };
        let e = decide(Mode::Guard, &config, &[], &no_lsm);
        assert!(!e.active && e.reason.contains("EPERM"), "{e:?}");
        let without_bpf = lsms(Some("capability,apparmor"), crate::lsm::LSM_FILE);
        let inactive = GuardHooks {
            lsms: &without_bpf,
            settime: Some(&on),
            ..no_lsm
        };
        let e = decide(Mode::Guard, &config, &[], &inactive);
        assert!(!e.active && e.reason.contains("lsm=...,bpf"), "{e:?}");
        assert!(e.reason.contains("capability,apparmor"), "{e:?}");
        // Unknown is not "without bpf": enforcement stays on and the gap says why.
        let unknown = lsms(None, "unknown: no securityfs here");
        let unverified = GuardHooks {
            lsms: &unknown,
            ..all
        };
        let e = decide(Mode::Guard, &config, &[], &unverified);
        assert!(
            e.active && e.gaps[0].contains("no securityfs here"),
            "{e:?}"
        );
        let no_capable = GuardHooks {
            capable: Some(&off),
            settime: Some(&on),
            adjtimex: Some(&on),
            lsms: &with_bpf,
            exe_layout_error: None,
        };
        let e = decide(Mode::Guard, &config, &[], &no_capable);
        assert!(e.active && e.gaps[0].contains("ADJ_SETOFFSET"), "{e:?}");
    }

    #[test]
    fn exe_offsets_of_this_kernel() {
        let btf = KernelBtf::from_sys().expect("this machine has /sys/kernel/btf/vmlinux");
        let off = exe_offsets(&btf).unwrap();
        assert!(
            off.task_mm > 0 && off.mm_exe_file > 0 && off.inode_i_sb > 0,
            "{off:?}"
        );
        assert_ne!(off.inode_i_ino, off.inode_i_sb);
    }
}
