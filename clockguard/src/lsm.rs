//! Is `bpf` among the kernel's active LSMs? BPF-LSM programs load and attach whether or
//! not it is, but the kernel calls them only when it is, so guard mode must know.
//!
//! The kernel lists its active LSMs in securityfs (`/sys/kernel/security/lsm`). A mount
//! namespace may lack securityfs: `ip netns exec` remounts /sys without it, and so do
//! containers and systemd-nspawn. A file that cannot be read is not a list without `bpf`:
//! clockguard then mounts securityfs in its own mount namespace (as it mounts bpffs), and
//! where that fails asks the kernel through `lsm_list_modules(2)` (Linux 6.8 and later).
//! `status` says which of these answered.

use std::sync::OnceLock;

pub const LSM_FILE: &str = "/sys/kernel/security/lsm";

pub use clockguard_core::status::ActiveLsms;

/// The securityfs file's comma-separated list.
pub fn parse_lsm_file(text: &str) -> Vec<String> {
    text.trim()
        .split(',')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The names of `lsm_list_modules(2)`'s ids (include/uapi/linux/lsm.h); an id this table
/// does not know is kept as `lsm-<id>`.
pub fn lsm_names(ids: &[u64]) -> Vec<String> {
    ids.iter()
        .map(|&id| {
            let known = match id {
                100 => "capability",
                101 => "selinux",
                102 => "smack",
                103 => "tomoyo",
                104 => "apparmor",
                105 => "yama",
                106 => "loadpin",
                107 => "safesetid",
                108 => "lockdown",
                109 => "bpf",
                110 => "landlock",
                111 => "ima",
                112 => "evm",
                113 => "ipe",
                _ => return format!("lsm-{id}"),
            };
            known.to_string()
        })
        .collect()
}

/// The active LSMs as the daemon finds them out, once per process (the list cannot change
/// while the kernel runs; a mount, if one is needed, is made once).
pub fn active_lsms() -> &'static ActiveLsms {
    static ONCE: OnceLock<ActiveLsms> = OnceLock::new();
    ONCE.get_or_init(|| probe(true))
}

/// The active LSMs; securityfs is mounted (in this mount namespace) only if `may_mount`.
/// Commands that only look (`check`) pass false.
pub fn probe(may_mount: bool) -> ActiveLsms {
    let read = || std::fs::read_to_string(LSM_FILE).map(|t| parse_lsm_file(&t));
    let first_error = match read() {
        Ok(list) => {
            return ActiveLsms {
                list: Some(list),
                source: LSM_FILE.into(),
            }
        }
        Err(err) => err,
    };
    let mount_error = if !may_mount {
        "not tried by this command".to_string()
    } else {
        match crate::pinning::mount_if_absent(
            "securityfs",
            "/sys/kernel/security",
            SECURITYFS_MAGIC,
        ) {
            Ok(mounted) => match read() {
                Ok(list) => {
                    return ActiveLsms {
                        list: Some(list),
                        source: format!(
                            "{LSM_FILE}, after clockguard mounted securityfs in its mount \
                             namespace (it was not mounted: {first_error})"
                        ),
                    }
                }
                Err(err) if mounted => format!("mounted securityfs, but still {err}"),
                Err(err) => format!("securityfs is mounted, but {err}"),
            },
            Err(err) => format!("{err:#}"),
        }
    };
    match clockguard_sys::lsm_list_modules() {
        Ok(ids) => ActiveLsms {
            list: Some(lsm_names(&ids)),
            source: format!(
                "lsm_list_modules(2): {LSM_FILE} cannot be read ({first_error}) and \
                 securityfs could not be mounted ({mount_error})"
            ),
        },
        Err(err) => ActiveLsms {
            list: None,
            source: format!(
                "unknown: {LSM_FILE} cannot be read ({first_error}), securityfs could not be \
                 mounted ({mount_error}), and lsm_list_modules(2) failed ({err})"
            ),
        },
    }
}

/// statfs(2) f_type of securityfs.
const SECURITYFS_MAGIC: i64 = 0x7363_6673;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_syscall_name_the_same_lsms() {
        let from_file = parse_lsm_file("lockdown,capability,landlock,yama,apparmor,bpf\n");
        let from_ids = lsm_names(&[108, 100, 110, 105, 104, 109]);
        assert_eq!(from_file, from_ids);
        assert_eq!(lsm_names(&[250]), ["lsm-250"]);
    }

    #[test]
    fn bpf_is_active_only_when_listed() {
        let known = |list: &[&str]| ActiveLsms {
            list: Some(list.iter().map(ToString::to_string).collect()),
            source: LSM_FILE.into(),
        };
        assert_eq!(known(&["capability", "bpf"]).bpf_active(), Some(true));
        assert_eq!(known(&["capability", "apparmor"]).bpf_active(), Some(false));
        assert_eq!(known(&[]).bpf_active(), Some(false));
        let unknown = ActiveLsms {
            list: None,
            source: "unknown".into(),
        };
        assert_eq!(unknown.bpf_active(), None);
    }
}
