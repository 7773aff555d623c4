//! tracefs: where it is mounted, and the layout of the fork/exec tracepoints the process
//! tracking reads (their fields moved between kernels: `__data_loc` comm in 6.18).

use super::*;

/// Where the fork/exec tracepoints keep the fields we read, parsed from tracefs.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcInfoLayout {
    pub parent_comm_offset: u16,
    pub parent_comm_dataloc: bool,
    pub child_pid_offset: u16,
    pub exec_filename_offset: u16,
}

impl ProcInfoLayout {
    pub(super) fn apply(&self, config: &mut abi::Config) {
        config.flags |= abi::CONFIG_PROCINFO_LAYOUT;
        config.fork_parent_comm_offset = self.parent_comm_offset;
        config.fork_parent_comm_dataloc = u16::from(self.parent_comm_dataloc);
        config.fork_child_pid_offset = self.child_pid_offset;
        config.exec_filename_offset = self.exec_filename_offset;
    }
}

pub(super) fn read_procinfo_layout(tracefs: &Path) -> Result<ProcInfoLayout> {
    let read = |event: &str| {
        let path = tracefs.join("events/sched").join(event).join("format");
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    parse_procinfo_layout(&read("sched_process_fork")?, &read("sched_process_exec")?)
}

/// A field of a tracefs `format` file: (offset, declaration).
fn format_field<'a>(format: &'a str, name: &str) -> Option<(u16, &'a str)> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        let field_name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if field_name != name {
            return None;
        }
        let offset = line
            .split("offset:")
            .nth(1)?
            .split(';')
            .next()?
            .parse()
            .ok()?;
        Some((offset, decl))
    })
}

pub fn parse_procinfo_layout(fork: &str, exec: &str) -> Result<ProcInfoLayout> {
    let (parent_comm_offset, decl) =
        format_field(fork, "parent_comm").context("sched_process_fork has no parent_comm field")?;
    let (child_pid_offset, _) =
        format_field(fork, "child_pid").context("sched_process_fork has no child_pid field")?;
    let (exec_filename_offset, exec_decl) =
        format_field(exec, "filename").context("sched_process_exec has no filename field")?;
    if !exec_decl.contains("__data_loc") {
        return Err(anyhow!(
            "sched_process_exec's filename is `{exec_decl}`, not a __data_loc"
        ));
    }
    Ok(ProcInfoLayout {
        parent_comm_offset,
        parent_comm_dataloc: decl.contains("__data_loc"),
        child_pid_offset,
        exec_filename_offset,
    })
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is visible (aya resolves
/// tracepoint ids through it). Returns the tracefs path in use.
pub fn ensure_tracefs() -> Result<&'static Path> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(Path::new(candidate));
        }
    }
    clockguard_sys::mount_pseudo_fs("nodev", Path::new("/sys/kernel/tracing"), "tracefs")
        .context("tracefs is not mounted and mounting it at /sys/kernel/tracing failed")?;
    Ok(Path::new("/sys/kernel/tracing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK_6_1: &str = "name: sched_process_fork
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";
    const FORK_6_18: &str = "format:
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const EXEC: &str = "format:
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;
";

    #[test]
    fn fork_layout_of_6_1_has_inline_comm() {
        let l = parse_procinfo_layout(FORK_6_1, EXEC).unwrap();
        assert_eq!(
            l,
            ProcInfoLayout {
                parent_comm_offset: 8,
                parent_comm_dataloc: false,
                child_pid_offset: 44,
                exec_filename_offset: 8,
            }
        );
    }

    #[test]
    fn fork_layout_of_6_18_has_data_loc_comm() {
        let l = parse_procinfo_layout(FORK_6_18, EXEC).unwrap();
        assert!(l.parent_comm_dataloc);
        assert_eq!(l.child_pid_offset, 20);
    }

    #[test]
    fn missing_field_is_named() {
        let err = parse_procinfo_layout("format:\n", EXEC)
            .unwrap_err()
            .to_string();
        assert!(err.contains("parent_comm"), "{err}");
    }
}
