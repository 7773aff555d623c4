//! The journal record: one line of `journal.jsonl`, what one clock change (or attempt, or
//! event around the clock) was. The serde names here are the journal's format: a record
//! read and written again is the same bytes (tests/golden.rs), so the hash chain over
//! those bytes holds across versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who or what a record is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A clock syscall (clock_settime, settimeofday, adjtimex, clock_adjtime). The default
    /// only so that a record can be filled in field by field: every constructor names its
    /// source.
    #[default]
    Syscall,
    /// clock_was_set() outside a traced syscall: a leap second, RTC sleep-time injection.
    Kernel,
    /// The userspace detector saw a jump that no hook explained.
    Fallback,
    /// A stall, suspend or clocksource event, from the timers.
    Timers,
    /// A tracked service (death, probe, restart).
    Service,
    /// clockguard's own acts: start, stop, a configuration reload.
    Daemon,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::Syscall,
        Source::Kernel,
        Source::Fallback,
        Source::Timers,
        Source::Service,
        Source::Daemon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Syscall => "syscall",
            Source::Kernel => "kernel",
            Source::Fallback => "fallback",
            Source::Timers => "timers",
            Source::Service => "service",
            Source::Daemon => "daemon",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What became of the change (clock records), or how a service record is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No guard decision: not a step, or no guard hook ran.
    #[default]
    Observed,
    /// The guard let the step through (an allowed executable).
    Allowed,
    /// The guard refused the step: the caller got EPERM.
    Denied,
    /// Refused, and clockguard slews the requested delta in instead.
    Slewed,
    /// Observe mode: guard mode would have refused it.
    #[serde(rename = "would-deny")]
    WouldDeny,
    /// A service record that counts as a fault (a death or a failed probe that may be a
    /// time jump's doing).
    Fault,
    /// A service's probe passes again.
    Healthy,
    /// clockguard runs the service's restart command.
    Restarting,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Observed,
        Verdict::Allowed,
        Verdict::Denied,
        Verdict::Slewed,
        Verdict::WouldDeny,
        Verdict::Fault,
        Verdict::Healthy,
        Verdict::Restarting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Observed => "observed",
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::Slewed => "slewed",
            Verdict::WouldDeny => "would-deny",
            Verdict::Fault => "fault",
            Verdict::Healthy => "healthy",
            Verdict::Restarting => "restarting",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One line of the journal. Unknown values are `null`, never dropped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Position in the journal, counting from 1 across rotations and restarts.
    pub seq: u64,
    /// When the change was made (RFC 3339 with ns, UTC), on the clock as it was before it.
    pub time: String,
    pub source: Source,
    pub syscall: Option<String>,
    pub clock: Option<String>,
    /// step | slew | frequency | tick | status | params | tai | tz | read | unknown, or
    /// summary (repeated calls the kernel counted: `detail` says of which kind); from the
    /// timers: stall | suspend | clocksource_change | clocksource_jump |
    /// clocksource_unstable; from a service: died | probe_failed | ...; from the daemon:
    /// start | stop | reload | seal (ends a sealing epoch) | rotate (the
    /// first record of a new file after a rotation, without sealing)
    pub kind: String,
    /// Why time moved, when clockguard can tell (timers: vm_paused, hypervisor_steal,
    /// machine_stall, cpu_stall, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The measurements behind a timers record (CPUs, steal, late timers, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// The requested value, as the caller passed it.
    pub requested: Value,
    /// The measured jump of CLOCK_REALTIME against CLOCK_MONOTONIC across the change, in ns;
    /// null when it cannot be measured.
    pub delta_ns: Option<i64>,
    /// The step the caller asked for, in ns: the requested time minus the clock at the call
    /// (settimeofday, clock_settime), or the ADJ_SETOFFSET offset. Null when not a step.
    #[serde(default)]
    pub requested_delta_ns: Option<i64>,
    /// "0" or the errno name ("EINVAL", "EPERM"); a service record's outcome in words.
    pub result: String,
    pub verdict: Verdict,
    /// The guard's judgement: {"class": allow|slew_instead|self|other, "judged":
    /// step|discipline}, when a guard hook ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Value>,
    /// What the slew engine did with a refused step of a `slew_instead` agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slew: Option<Value>,
    /// The kernel ran clock_was_set(): CLOCK_REALTIME really moved.
    pub clock_was_set: bool,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub ppid: Option<u32>,
    pub parent_comm: Option<String>,
    /// Ancestors from the parent up (a few levels), as far as they are still alive.
    #[serde(default)]
    pub parents: Vec<Ancestor>,
    pub cgroup: Option<String>,
    pub unit: Option<String>,
    /// Kernel stack (function names) for in-kernel changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// The hash chain (the daemon's journal): `hash` of the record before this one, and
    /// this record's own SHA-256 (hex) over its line up to `hash`, `prev` included. Always
    /// the last two fields, so the line's bytes are what is hashed, not a re-serialisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Forward-secure sealing (`clockguard audit --setup-keys`): the sealing epoch and this
    /// record's MAC with that epoch's key (see `seal`). After `hash`, outside what it
    /// hashes; absent while sealing is not set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// CLOCK_MONOTONIC ns when the change was made (the kernel's clock), for correlating
    /// it with other kernel events in the daemon; not journaled.
    #[serde(skip)]
    pub mono_ns: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

/// ns since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_ns(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => format!("@{unix_ns}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_journal_s() {
        for source in Source::ALL {
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(json, format!("\"{source}\""));
            assert_eq!(serde_json::from_str::<Source>(&json).unwrap(), source);
        }
        for verdict in Verdict::ALL {
            let json = serde_json::to_string(&verdict).unwrap();
            assert_eq!(json, format!("\"{verdict}\""));
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), verdict);
        }
        assert_eq!(Verdict::WouldDeny.as_str(), "would-deny");
        // The audit table pads them to its columns.
        assert_eq!(
            format!("{:<8}|{:>9}|", Source::Daemon, Verdict::Denied),
            "daemon  |   denied|"
        );
    }

    #[test]
    fn an_unknown_verdict_is_an_error_not_a_default() {
        let err = serde_json::from_str::<Verdict>("\"maybe\"").unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
    }
}
