//! What the daemon feeds the tracker: time jumps as journaled, the deaths of tracked
//! processes (from the kernel's sched_process_exit hook) and matching log lines.

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::record::{Record, Verdict};
use crate::time::Monotonic;

/// A time jump, as journaled: what moved the clock, by how much, and who did it.
#[derive(Clone, Debug, PartialEq)]
pub struct Jump {
    /// The journal record that reported it.
    pub seq: u64,
    /// When the clock jumped: the kernel's time of the change when the record has it,
    /// else when the daemon learnt of it (a stall: when it ended).
    pub at: Monotonic,
    /// step | refused_step | kernel | unexplained | vm_paused | suspend | ...
    pub cause: String,
    pub delta_ns: Option<i64>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub verdict: Verdict,
}

impl Jump {
    pub fn from_record(record: &Record, cause: String, seen: Monotonic) -> Jump {
        Jump {
            seq: record.seq,
            at: record.mono_ns.map_or(seen, Monotonic::from_ns),
            cause,
            // A refused step moved nothing: what it asked for is the size that matters.
            delta_ns: record.delta_ns.or(record.requested_delta_ns),
            pid: record.pid,
            comm: record.comm.clone(),
            exe: record.exe.clone(),
            verdict: record.verdict,
        }
    }

    /// "a -10.000 s step by date (pid 312)"
    pub(super) fn describe(&self) -> String {
        let size = self
            .delta_ns
            .map(|d| format!("{:+.3} s ", d as f64 / 1e9))
            .unwrap_or_default();
        let by = match (&self.comm, self.pid) {
            (Some(comm), Some(pid)) => format!(" by {comm} (pid {pid})"),
            _ => String::new(),
        };
        format!("a {size}{}{by}", self.cause)
    }
}

/// How a process ended, from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled { signal: i32, core_dumped: bool },
    Unknown,
}

impl ExitStatus {
    /// From the kernel's `task->exit_code` (the wait(2) status encoding).
    pub fn from_wait_status(status: i32) -> ExitStatus {
        match status & 0x7f {
            0 => ExitStatus::Exited((status >> 8) & 0xff),
            signal => ExitStatus::Signaled {
                signal,
                core_dumped: status & 0x80 != 0,
            },
        }
    }

    /// Exit status 0: a worker that finished its job, not a death.
    pub fn is_clean(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// "exit 89", "SIGKILL", "SIGSEGV (core dumped)", "unknown"
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Exited(code) => format!("exit {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => format!(
                "{}{}",
                signal_name(signal),
                if core_dumped { " (core dumped)" } else { "" }
            ),
            ExitStatus::Unknown => "unknown".into(),
        }
    }

    pub(super) fn json(self) -> Value {
        match self {
            ExitStatus::Exited(code) => json!({ "code": code }),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => json!({ "signal": signal_name(signal), "core_dumped": core_dumped }),
            ExitStatus::Unknown => json!({}),
        }
    }
}

/// "SIGKILL" for 9, "signal 77" for a number that names no signal here.
fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().into())
}

/// A tracked process that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Death {
    pub service: usize,
    /// When it exited (the kernel's time).
    pub at: Monotonic,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub exe: Option<String>,
    pub status: ExitStatus,
}

/// A new line of a service's log file containing one of its `log_patterns`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogMatch {
    pub service: usize,
    /// When the line was read.
    pub at: Monotonic,
    pub pattern: String,
    pub line: String,
}
