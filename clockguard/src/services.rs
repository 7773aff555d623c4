//! Tracked services (`[[service]]`): their deaths (from the kernel's sched_process_exit
//! hook), their health checks, and the correlation with time jumps that decides the
//! failover. This is the state machine only, without I/O: the daemon feeds it jumps,
//! deaths, check results and ticks (CLOCK_MONOTONIC ns) and carries out the `Action`s it
//! returns (journal, keepalived track file, notify command, restart).
//!
//! A service is `unknown` until its first check, `healthy`, or `fault`:
//! - a death (any exit but status 0) within `jump_window_s` after a time jump is "died
//!   from a time jump": journaled with the whole chain and a fault;
//! - a death without a jump is journaled as such, and faults only with `on_any_death`;
//! - `fall` failed checks in a row fault too (the service is down, whatever the cause);
//! - a fault lasts at least `hold_s` (after a backward jump, at least the jump's size, so
//!   the old timeline has caught up), then clears after `rise` good checks in a row;
//!   with `restart` configured, a time-jump fault first restarts the service.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::{json, Value};

use clockguard_core::status::{ServiceCheck, ServiceEvent, ServiceState, ServiceStatus};

use crate::config::ServiceConfig;
use crate::record::{Record, Source, Verdict};

/// How long a death waits for the jump that explains it, ns. A stall is journaled when it
/// ends, and a step is processed a little after the worker may already have died.
pub const DEATH_GRACE_NS: i64 = 2_000_000_000;
/// Jumps remembered for correlation (older ones are also dropped once out of every window).
const MAX_JUMPS: usize = 64;

/// A time jump, as journaled: what moved the clock, by how much, and who did it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Jump {
    /// The journal record that reported it.
    pub seq: u64,
    /// CLOCK_MONOTONIC ns of the jump: the kernel's time of the change when the record
    /// has it, else when the daemon learnt of it (a stall: when it ended).
    pub mono_ns: i64,
    /// step | refused_step | kernel | unexplained | vm_paused | suspend | ...
    pub cause: String,
    pub delta_ns: Option<i64>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub verdict: Verdict,
}

impl Jump {
    pub fn from_record(record: &Record, cause: String, seen_mono_ns: i64) -> Jump {
        Jump {
            seq: record.seq,
            mono_ns: record.mono_ns.unwrap_or(seen_mono_ns),
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
    fn describe(&self) -> String {
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

    fn json(self) -> Value {
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

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.into()
}

/// A tracked process that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Death {
    pub service: usize,
    /// CLOCK_MONOTONIC ns of the exit (the kernel's).
    pub mono_ns: i64,
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
    /// CLOCK_MONOTONIC ns when the line was read.
    pub mono_ns: i64,
    pub pattern: String,
    pub line: String,
}

/// Log lines kept in a record at most (bytes).
const MAX_LOG_LINE: usize = 512;

#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Unknown,
    Healthy,
    Fault {
        /// The kind of the record that caused it (died_from_time_jump, probe_failed, ...).
        reason: String,
        since_mono_ns: i64,
        /// Good checks count toward `rise` only from here on.
        hold_until_mono_ns: i64,
    },
}

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Journal this record (its `time` is stamped from `mono_ns`); then, with `notify`,
    /// run the service's notify command with it.
    Journal {
        service: usize,
        record: Box<Record>,
        mono_ns: i64,
        notify: bool,
    },
    /// Write the service's keepalived track file: 1 while faulty, 0 when healthy.
    TrackFile { service: usize, fault: bool },
    /// Run the service's restart command.
    Restart { service: usize },
}

pub use clockguard_core::status::CheckOutcome;

struct Service {
    config: ServiceConfig,
    health: Health,
    consecutive_ok: u32,
    consecutive_failed: u32,
    last_check: Option<CheckOutcome>,
    /// Processes tracked at the last scan.
    processes: usize,
    clean_exits: u64,
    deaths: u64,
    deaths_after_time_jump: u64,
    /// The restart is still due for the current time-jump fault.
    restart_due: bool,
    /// The last verdict journaled about its processes, and when (CLOCK_MONOTONIC ns).
    last_event: Option<(LastEvent, i64)>,
    /// What the track file was last set to, and when (CLOCK_REALTIME ns); when it was last
    /// set to 1.
    track_written: Option<(bool, i64)>,
    track_fault_written_ns: Option<i64>,
}

pub struct Tracker {
    services: Vec<Service>,
    jumps: VecDeque<Jump>,
    /// Deaths no known jump explains yet (waiting DEATH_GRACE_NS).
    pending: Vec<Death>,
}

impl Tracker {
    /// `faulted[i]`: service i's track file already said FAULT when clockguard started (a
    /// fault carried over from before a restart): it must earn `rise` good checks again.
    pub fn new(configs: &[ServiceConfig], faulted: &[bool], now_mono_ns: i64) -> Tracker {
        let services = configs
            .iter()
            .enumerate()
            .map(|(index, config)| Service {
                config: config.clone(),
                health: if faulted.get(index).copied().unwrap_or(false) {
                    Health::Fault {
                        reason: "carried_over".into(),
                        since_mono_ns: now_mono_ns,
                        hold_until_mono_ns: now_mono_ns,
                    }
                } else {
                    Health::Unknown
                },
                consecutive_ok: 0,
                consecutive_failed: 0,
                last_check: None,
                processes: 0,
                clean_exits: 0,
                deaths: 0,
                deaths_after_time_jump: 0,
                restart_due: false,
                last_event: None,
                track_written: None,
                track_fault_written_ns: None,
            })
            .collect();
        Tracker {
            services,
            jumps: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn config(&self, service: usize) -> &ServiceConfig {
        &self.services[service].config
    }

    #[cfg(test)]
    pub fn health(&self, service: usize) -> &Health {
        &self.services[service].health
    }

    pub fn set_processes(&mut self, service: usize, count: usize) {
        if let Some(s) = self.services.get_mut(service) {
            s.processes = count;
        }
    }

    /// The daemon wrote the service's track file (`fault`: 1) at `wall_ns`.
    pub fn track_file_written(&mut self, service: usize, fault: bool, wall_ns: i64) {
        if let Some(s) = self.services.get_mut(service) {
            s.track_written = Some((fault, wall_ns));
            if fault {
                s.track_fault_written_ns = Some(wall_ns);
            }
        }
    }

    /// A time jump was journaled. Deaths waiting for an explanation that it explains are
    /// charged to it now.
    pub fn on_jump(&mut self, jump: Jump) -> Vec<Action> {
        let mut explained = Vec::new();
        let mut index = 0;
        while index < self.pending.len() {
            let death = &self.pending[index];
            let window = window_ns(&self.services[death.service].config);
            if explains(&jump, death.mono_ns, window) {
                explained.push(self.pending.remove(index));
            } else {
                index += 1;
            }
        }
        if self.jumps.len() == MAX_JUMPS {
            self.jumps.pop_front();
        }
        self.jumps.push_back(jump.clone());
        let mut actions = Vec::new();
        for death in explained {
            actions.extend(self.died(death, Some(&jump)));
        }
        actions
    }

    /// A tracked process ended.
    pub fn on_death(&mut self, death: Death) -> Vec<Action> {
        let Some(service) = self.services.get_mut(death.service) else {
            return Vec::new();
        };
        if death.status.is_clean() {
            service.clean_exits += 1;
            return Vec::new();
        }
        match self.jump_explaining(death.service, death.mono_ns) {
            Some(jump) => self.died(death, Some(&jump)),
            None => {
                // With on_any_death the fault cannot wait for the grace: the record can.
                let actions = match self.services[death.service].config.on_any_death {
                    true => self.fault(death.service, "died", death.mono_ns, None),
                    false => Vec::new(),
                };
                self.pending.push(death);
                actions
            }
        }
    }

    /// A log line of the service matched one of its patterns: like a death, charged to a
    /// time jump within the window (a fault), else journaled (a fault with on_any_death).
    pub fn on_log_match(&mut self, found: LogMatch) -> Vec<Action> {
        let service = found.service;
        if service >= self.services.len() {
            return Vec::new();
        }
        let jump = self.jump_explaining(service, found.mono_ns);
        let faults = jump.is_some() || self.services[service].config.on_any_death;
        let kind = match jump {
            Some(_) => "log_match_after_time_jump",
            None => "log_match",
        };
        let mut record = self.service_record(service, kind, jump.as_ref());
        let mut line = found.line;
        if line.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        record.result = line;
        record.verdict = if faults {
            Verdict::Fault
        } else {
            Verdict::Observed
        };
        let s = &self.services[service];
        record.detail = Some(json!({
            "service": s.config.name,
            "pattern": found.pattern,
            "file": s.config.log_file,
            "jump": jump.as_ref().map(|j| jump_json(j, found.mono_ns)),
            "track_file": s.config.track_file.as_ref().filter(|_| faults),
        }));
        self.report(service, record, found.mono_ns, faults, jump.as_ref())
    }

    /// A health check's result (a probe, or whether a process runs).
    pub fn on_check(&mut self, service: usize, check: CheckOutcome) -> Vec<Action> {
        let now = check.mono_ns;
        let jump = self.jump_explaining(service, now);
        let Some(s) = self.services.get_mut(service) else {
            return Vec::new();
        };
        let ok = check.ok;
        let detail = check.detail.clone();
        s.last_check = Some(check);
        if ok {
            s.consecutive_ok += 1;
            s.consecutive_failed = 0;
        } else {
            s.consecutive_failed += 1;
            s.consecutive_ok = 0;
        }
        match s.health.clone() {
            Health::Unknown if ok => {
                s.health = Health::Healthy;
                vec![Action::TrackFile {
                    service,
                    fault: false,
                }]
            }
            Health::Unknown | Health::Healthy if s.consecutive_failed >= s.config.fall => {
                // "probe_failed", or "not_running" for a service without a probe.
                let failed = match s.config.probe {
                    Some(_) => "probe_failed",
                    None => "not_running",
                };
                let kind = match jump {
                    Some(_) => format!("{failed}_after_time_jump"),
                    None => failed.to_string(),
                };
                let kind = kind.as_str();
                let mut record = self.service_record(service, kind, jump.as_ref());
                record.result.clone_from(&detail);
                record.verdict = Verdict::Fault;
                let s = &self.services[service];
                record.detail = Some(json!({
                    "service": s.config.name,
                    "check": check_target(&s.config),
                    "failed": s.consecutive_failed,
                    "error": detail,
                    "jump": jump.as_ref().map(|j| jump_json(j, now)),
                    "track_file": s.config.track_file,
                }));
                self.note_event(service, kind, &record, now);
                let mut actions = vec![Action::Journal {
                    service,
                    record: Box::new(record),
                    mono_ns: now,
                    notify: true,
                }];
                actions.extend(self.fault(service, kind, now, jump.as_ref()));
                actions
            }
            Health::Fault {
                hold_until_mono_ns, ..
            } => {
                if now < hold_until_mono_ns || s.restart_due {
                    // Good checks during the hold (or before the restart) do not count.
                    s.consecutive_ok = 0;
                    return Vec::new();
                }
                if s.consecutive_ok < s.config.rise {
                    return Vec::new();
                }
                s.health = Health::Healthy;
                let mut record = self.service_record(service, "recovered", None);
                record.result = detail;
                record.verdict = Verdict::Healthy;
                let s = &self.services[service];
                record.detail = Some(json!({
                    "service": s.config.name,
                    "check": check_target(&s.config),
                    "good_checks": s.consecutive_ok,
                    "track_file": s.config.track_file,
                }));
                self.note_event(service, "recovered", &record, now);
                vec![
                    Action::Journal {
                        service,
                        record: Box::new(record),
                        mono_ns: now,
                        notify: true,
                    },
                    Action::TrackFile {
                        service,
                        fault: false,
                    },
                ]
            }
            _ => Vec::new(),
        }
    }

    /// Time passes: deaths no jump explained within DEATH_GRACE_NS are journaled as plain
    /// deaths, old jumps are forgotten, and due restarts are started.
    pub fn tick(&mut self, now_mono_ns: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        let (expired, waiting): (Vec<Death>, Vec<Death>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|d| now_mono_ns - d.mono_ns >= DEATH_GRACE_NS);
        self.pending = waiting;
        for death in expired {
            actions.extend(self.died(death, None));
        }
        let longest = self
            .services
            .iter()
            .map(|s| window_ns(&s.config))
            .max()
            .unwrap_or(0);
        while self
            .jumps
            .front()
            .is_some_and(|j| now_mono_ns - j.mono_ns > longest + DEATH_GRACE_NS)
        {
            self.jumps.pop_front();
        }
        for service in 0..self.services.len() {
            let s = &mut self.services[service];
            let Health::Fault {
                hold_until_mono_ns, ..
            } = s.health
            else {
                continue;
            };
            if !s.restart_due || now_mono_ns < hold_until_mono_ns {
                continue;
            }
            s.restart_due = false;
            s.consecutive_ok = 0;
            let mut record = self.service_record(service, "restart", None);
            record.verdict = Verdict::Restarting;
            record.result = self.services[service].config.restart.join(" ");
            record.detail = Some(json!({ "service": self.services[service].config.name }));
            self.note_event(service, "restart", &record, now_mono_ns);
            actions.push(Action::Journal {
                service,
                record: Box::new(record),
                mono_ns: now_mono_ns,
                notify: true,
            });
            actions.push(Action::Restart { service });
        }
        actions
    }

    /// The latest jump whose window holds `mono_ns`.
    fn jump_explaining(&self, service: usize, mono_ns: i64) -> Option<Jump> {
        let window = window_ns(&self.services.get(service)?.config);
        self.jumps
            .iter()
            .rev()
            .find(|j| explains(j, mono_ns, window))
            .cloned()
    }

    fn died(&mut self, death: Death, jump: Option<&Jump>) -> Vec<Action> {
        let service = death.service;
        let s = &mut self.services[service];
        s.deaths += 1;
        if jump.is_some() {
            s.deaths_after_time_jump += 1;
        }
        let faults = jump.is_some() || s.config.on_any_death;
        let kind = if jump.is_some() {
            "died_from_time_jump"
        } else {
            "died"
        };
        let mut record = self.service_record(service, kind, jump);
        let s = &self.services[service];
        record.pid = Some(death.pid);
        record.ppid = death.ppid;
        record.comm = Some(death.comm.clone());
        record.exe.clone_from(&death.exe);
        record.result = death.status.describe();
        record.verdict = if faults {
            Verdict::Fault
        } else {
            Verdict::Observed
        };
        record.detail = Some(json!({
            "service": s.config.name,
            "exit": death.status.json(),
            "jump": jump.map(|j| jump_json(j, death.mono_ns)),
            "track_file": s.config.track_file.as_ref().filter(|_| faults),
        }));
        self.report(service, record, death.mono_ns, faults, jump)
    }

    /// Journals a death-like record (notified when it faults) and, when it `faults`,
    /// puts the service in fault for the record's kind.
    fn report(
        &mut self,
        service: usize,
        record: Record,
        mono_ns: i64,
        faults: bool,
        jump: Option<&Jump>,
    ) -> Vec<Action> {
        let kind = record.kind.clone();
        self.note_event(service, &kind, &record, mono_ns);
        let mut actions = vec![Action::Journal {
            service,
            record: Box::new(record),
            mono_ns,
            notify: faults,
        }];
        if faults {
            actions.extend(self.fault(service, &kind, mono_ns, jump));
        }
        actions
    }

    /// Puts the service in fault (or extends its fault) and flips the track file.
    fn fault(
        &mut self,
        service: usize,
        reason: &str,
        now: i64,
        jump: Option<&Jump>,
    ) -> Vec<Action> {
        let s = &mut self.services[service];
        let mut hold_ns = (s.config.hold_s * 1e9) as i64;
        if let Some(backward) = jump.and_then(|j| j.delta_ns).filter(|d| *d < 0) {
            hold_ns = hold_ns.max(-backward);
        }
        let hold_until = now + hold_ns;
        s.consecutive_ok = 0;
        if jump.is_some() && !s.config.restart.is_empty() {
            s.restart_due = true;
        }
        match &mut s.health {
            Health::Fault {
                reason: why,
                hold_until_mono_ns,
                ..
            } => {
                *why = reason.into();
                *hold_until_mono_ns = (*hold_until_mono_ns).max(hold_until);
                Vec::new()
            }
            _ => {
                s.health = Health::Fault {
                    reason: reason.into(),
                    since_mono_ns: now,
                    hold_until_mono_ns: hold_until,
                };
                vec![Action::TrackFile {
                    service,
                    fault: true,
                }]
            }
        }
    }

    /// A record of this service, with the jump that explains it (if any) as its cause.
    fn service_record(&self, service: usize, kind: &str, jump: Option<&Jump>) -> Record {
        Record {
            source: Source::Service,
            kind: kind.into(),
            cause: jump.map(|j| j.cause.clone()),
            delta_ns: jump.and_then(|j| j.delta_ns),
            requested: json!({}),
            result: String::new(),
            unit: self.services[service].config.unit.clone(),
            ..Default::default()
        }
    }

    fn note_event(&mut self, service: usize, kind: &str, record: &Record, mono_ns: i64) {
        let who = match (&record.comm, record.pid) {
            (Some(comm), Some(pid)) => format!("{comm} (pid {pid}) "),
            _ => String::new(),
        };
        let jump = record
            .detail
            .as_ref()
            .and_then(|d| d.get("jump"))
            .and_then(|j| j.get("described"))
            .and_then(Value::as_str)
            .map(|j| format!(" after {j}"))
            .unwrap_or_default();
        self.services[service].last_event = Some((
            LastEvent {
                kind: kind.to_string(),
                summary: format!("{kind}: {who}{}{jump}", record.result),
            },
            mono_ns,
        ));
    }

    /// Each service: state, checks, processes, counts and the last verdict.
    pub fn status(&self, now_mono_ns: i64) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|s| {
                let (state, reason, fault_for_s, hold_left_s) = match &s.health {
                    Health::Unknown => (ServiceState::Unknown, None, None, None),
                    Health::Healthy => (ServiceState::Healthy, None, None, None),
                    Health::Fault {
                        reason,
                        since_mono_ns,
                        hold_until_mono_ns,
                    } => (
                        ServiceState::Fault,
                        Some(reason.clone()),
                        Some((now_mono_ns - since_mono_ns) as f64 / 1e9),
                        Some(((hold_until_mono_ns - now_mono_ns).max(0)) as f64 / 1e9),
                    ),
                };
                ServiceStatus {
                    name: s.config.name.clone(),
                    state,
                    reason,
                    fault_for_s,
                    hold_left_s,
                    restart_due: s.restart_due,
                    processes: s.processes as u64,
                    check: ServiceCheck {
                        target: check_target(&s.config),
                        last: s.last_check.clone(),
                        consecutive_ok: s.consecutive_ok,
                        consecutive_failed: s.consecutive_failed,
                        fall: s.config.fall,
                        rise: s.config.rise,
                    },
                    track_file: s.config.track_file.clone(),
                    track_file_value: s.track_written.map(|(fault, _)| u8::from(fault)),
                    track_file_written: s
                        .track_written
                        .map(|(_, ns)| crate::record::rfc3339_ns(ns)),
                    track_file_fault_written: s
                        .track_fault_written_ns
                        .map(crate::record::rfc3339_ns),
                    clean_exits: s.clean_exits,
                    deaths: s.deaths,
                    deaths_after_time_jump: s.deaths_after_time_jump,
                    last_event: s
                        .last_event
                        .as_ref()
                        .map(|(event, at_mono_ns)| ServiceEvent {
                            kind: event.kind.clone(),
                            summary: event.summary.clone(),
                            age_s: (now_mono_ns - at_mono_ns) as f64 / 1e9,
                        }),
                }
            })
            .collect()
    }
}

/// The last verdict journaled about a service's processes (its age is added in `status`).
#[derive(Clone, Debug, PartialEq)]
struct LastEvent {
    kind: String,
    summary: String,
}

fn window_ns(config: &ServiceConfig) -> i64 {
    (config.jump_window_s * 1e9) as i64
}

/// Does `jump` explain something at `mono_ns`? From a little before the daemon learnt of
/// the jump (DEATH_GRACE_NS: the record trails the event) to the end of the window.
fn explains(jump: &Jump, mono_ns: i64, window_ns: i64) -> bool {
    mono_ns >= jump.mono_ns - DEATH_GRACE_NS && mono_ns <= jump.mono_ns + window_ns
}

fn jump_json(jump: &Jump, at_mono_ns: i64) -> Value {
    json!({
        "seq": jump.seq,
        "cause": jump.cause,
        "delta_ns": jump.delta_ns,
        "pid": jump.pid,
        "comm": jump.comm,
        "exe": jump.exe,
        "verdict": jump.verdict,
        "seconds_before": (at_mono_ns - jump.mono_ns) as f64 / 1e9,
        "described": jump.describe(),
    })
}

/// "tcp 127.0.0.1:143, expect \"* OK\"" or "a process running".
fn check_target(config: &ServiceConfig) -> String {
    match (&config.probe, &config.probe_expect) {
        (Some(probe), Some(expect)) => format!("tcp {probe}, expect {expect:?}"),
        (Some(probe), None) => format!("tcp {probe}"),
        (None, _) => "a process running".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn config(name: &str) -> ServiceConfig {
        let text = format!("[[service]]\nname = \"{name}\"\ncomm = [\"x\"]\nprobe = \"127.0.0.1:143\"\ntrack_file = \"/run/t\"\n");
        crate::config::Config::parse(&text, "t").unwrap().services[0].clone()
    }

    fn step(seq: u64, mono_ns: i64, delta_s: i64) -> Jump {
        Jump {
            seq,
            mono_ns,
            cause: "step".into(),
            delta_ns: Some(delta_s * S),
            pid: Some(300),
            comm: Some("date".into()),
            exe: Some("/usr/bin/date".into()),
            verdict: Verdict::Observed,
        }
    }

    fn death(mono_ns: i64, status: ExitStatus) -> Death {
        Death {
            service: 0,
            mono_ns,
            pid: 339,
            ppid: Some(273),
            comm: "imap".into(),
            exe: Some("/usr/lib/dovecot/imap".into()),
            status,
        }
    }

    fn check(ok: bool, mono_ns: i64) -> CheckOutcome {
        CheckOutcome {
            ok,
            detail: if ok { "connected" } else { "refused" }.into(),
            mono_ns,
        }
    }

    fn journaled(actions: &[Action]) -> Vec<&Record> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Journal { record, .. } => Some(&**record),
                _ => None,
            })
            .collect()
    }

    fn track(actions: &[Action]) -> Option<bool> {
        actions.iter().find_map(|a| match a {
            Action::TrackFile { fault, .. } => Some(*fault),
            _ => None,
        })
    }

    fn healthy_tracker() -> Tracker {
        let mut t = Tracker::new(&[config("dovecot")], &[false], 0);
        assert_eq!(track(&t.on_check(0, check(true, S))), Some(false));
        assert_eq!(t.health(0), &Health::Healthy);
        t
    }

    #[test]
    fn wait_status_decodes_exit_codes_and_signals() {
        assert_eq!(
            ExitStatus::from_wait_status(89 << 8),
            ExitStatus::Exited(89)
        );
        assert!(ExitStatus::from_wait_status(0).is_clean());
        assert_eq!(ExitStatus::from_wait_status(9).describe(), "SIGKILL");
        assert_eq!(
            ExitStatus::from_wait_status(11 | 0x80).describe(),
            "SIGSEGV (core dumped)"
        );
    }

    #[test]
    fn a_death_after_a_step_is_charged_to_it_and_faults() {
        let mut t = healthy_tracker();
        assert!(t.on_jump(step(7, 10 * S, -10)).is_empty());
        let actions = t.on_death(death(13 * S, ExitStatus::Exited(89)));
        let records = journaled(&actions);
        assert_eq!(records.len(), 1);
        let r = records[0];
        assert_eq!(r.kind, "died_from_time_jump");
        assert_eq!(r.cause.as_deref(), Some("step"));
        assert_eq!(r.delta_ns, Some(-10 * S));
        assert_eq!((r.pid, r.comm.as_deref()), (Some(339), Some("imap")));
        assert_eq!(r.result, "exit 89");
        let jump = &r.detail.as_ref().unwrap()["jump"];
        assert_eq!(jump["seq"], 7);
        assert_eq!(jump["comm"], "date");
        assert_eq!(jump["seconds_before"], 3.0);
        assert_eq!(track(&actions), Some(true));
        assert!(
            matches!(t.health(0), Health::Fault { reason, .. } if reason == "died_from_time_jump")
        );
    }

    #[test]
    fn a_death_before_its_jump_is_journaled_waits_for_it() {
        let mut t = healthy_tracker();
        // The worker died first; the stall that explains it is journaled 1 s later.
        assert!(t
            .on_death(death(
                20 * S,
                ExitStatus::Signaled {
                    signal: 6,
                    core_dumped: false
                }
            ))
            .is_empty());
        let mut stall = step(9, 21 * S, 5);
        stall.cause = "vm_paused".into();
        let actions = t.on_jump(stall);
        let records = journaled(&actions);
        assert_eq!(records[0].kind, "died_from_time_jump");
        assert_eq!(records[0].cause.as_deref(), Some("vm_paused"));
        assert_eq!(records[0].result, "SIGABRT");
        assert_eq!(track(&actions), Some(true));
    }

    #[test]
    fn a_death_without_a_jump_is_reported_but_does_not_fault() {
        let mut t = healthy_tracker();
        // A jump long before the window does not count.
        t.on_jump(step(1, 0, -10));
        assert!(t.on_death(death(100 * S, ExitStatus::Exited(1))).is_empty());
        assert!(t.tick(100 * S + DEATH_GRACE_NS - 1).is_empty());
        let actions = t.tick(100 * S + DEATH_GRACE_NS);
        let records = journaled(&actions);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].kind, "died");
        assert_eq!(records[0].verdict, Verdict::Observed);
        assert_eq!(track(&actions), None);
        assert_eq!(t.health(0), &Health::Healthy);
        // Clean exits are workers finishing their job: not deaths at all.
        assert!(t.on_death(death(110 * S, ExitStatus::Exited(0))).is_empty());
        assert!(t.tick(120 * S).is_empty());
    }

    #[test]
    fn on_any_death_faults_without_a_jump() {
        let mut cfg = config("svc");
        cfg.on_any_death = true;
        let mut t = Tracker::new(&[cfg], &[false], 0);
        t.on_check(0, check(true, S));
        // The fault at once, the record once no jump turned up within the grace.
        let actions = t.on_death(death(
            5 * S,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
        ));
        assert_eq!(track(&actions), Some(true));
        assert!(journaled(&actions).is_empty());
        let actions = t.tick(5 * S + DEATH_GRACE_NS);
        assert_eq!(journaled(&actions)[0].verdict, Verdict::Fault);
        assert_eq!(journaled(&actions)[0].kind, "died");
    }

    #[test]
    fn the_fault_clears_after_hold_and_rise_good_checks_only() {
        let mut t = healthy_tracker();
        t.on_jump(step(7, 10 * S, -10));
        t.on_death(death(11 * S, ExitStatus::Exited(89)));
        // Hold: max(hold_s = 10 s, the 10 s backward jump) from the death at 11 s.
        for second in 12..21 {
            assert!(
                t.on_check(0, check(true, second * S)).is_empty(),
                "at {second} s"
            );
        }
        // From 21 s on, rise = 3 good checks in a row, and a failure starts over.
        assert!(t.on_check(0, check(true, 21 * S)).is_empty());
        assert!(t.on_check(0, check(true, 22 * S)).is_empty());
        assert!(t.on_check(0, check(false, 23 * S)).is_empty());
        assert!(t.on_check(0, check(true, 24 * S)).is_empty());
        assert!(t.on_check(0, check(true, 25 * S)).is_empty());
        let actions = t.on_check(0, check(true, 26 * S));
        assert_eq!(journaled(&actions)[0].kind, "recovered");
        assert_eq!(track(&actions), Some(false));
        assert_eq!(t.health(0), &Health::Healthy);
    }

    #[test]
    fn a_long_backward_jump_holds_the_fault_as_long_as_the_jump() {
        let mut t = healthy_tracker();
        t.on_jump(step(7, 10 * S, -600));
        t.on_death(death(11 * S, ExitStatus::Exited(89)));
        for second in [20, 300, 600] {
            assert!(t.on_check(0, check(true, second * S)).is_empty());
        }
        assert!(matches!(t.health(0), Health::Fault { .. }));
    }

    #[test]
    fn failed_checks_fault_after_fall_and_name_the_jump_in_the_window() {
        let mut t = healthy_tracker();
        t.on_jump(step(3, 2 * S, -10));
        assert!(t.on_check(0, check(false, 3 * S)).is_empty());
        let actions = t.on_check(0, check(false, 4 * S));
        let records = journaled(&actions);
        assert_eq!(records[0].kind, "probe_failed_after_time_jump");
        assert_eq!(records[0].result, "refused");
        assert_eq!(track(&actions), Some(true));
        // Without a jump: still a fault (the service is down), named as such.
        let mut t = healthy_tracker();
        t.on_check(0, check(false, 3 * S));
        let actions = t.on_check(0, check(false, 4 * S));
        assert_eq!(journaled(&actions)[0].kind, "probe_failed");
        assert_eq!(track(&actions), Some(true));
    }

    #[test]
    fn a_time_jump_fault_restarts_once_after_the_hold() {
        let mut cfg = config("svc");
        cfg.restart = vec!["/bin/systemctl".into(), "restart".into(), "svc".into()];
        let mut t = Tracker::new(&[cfg], &[false], 0);
        t.on_check(0, check(true, S));
        t.on_jump(step(7, 10 * S, 30));
        t.on_death(death(11 * S, ExitStatus::Exited(89)));
        assert!(t.tick(20 * S).is_empty(), "restart before the hold ended");
        let actions = t.tick(21 * S);
        assert!(actions.contains(&Action::Restart { service: 0 }));
        assert_eq!(journaled(&actions)[0].kind, "restart");
        assert!(!t.tick(22 * S).contains(&Action::Restart { service: 0 }));
    }

    #[test]
    fn a_carried_over_fault_needs_rise_good_checks() {
        let mut t = Tracker::new(&[config("svc")], &[true], 0);
        assert!(t.on_check(0, check(true, S)).is_empty());
        assert!(t.on_check(0, check(true, 2 * S)).is_empty());
        let actions = t.on_check(0, check(true, 3 * S));
        assert_eq!(track(&actions), Some(false));
    }

    #[test]
    fn a_log_line_after_a_jump_faults_like_a_death() {
        let mut t = healthy_tracker();
        let line = |mono_ns: i64| LogMatch {
            service: 0,
            mono_ns,
            pattern: "moved backwards".into(),
            line: "imap(339): Fatal: Time just moved backwards by 10.0 seconds".into(),
        };
        // Without a jump: journaled, no fault.
        let actions = t.on_log_match(line(5 * S));
        assert_eq!(journaled(&actions)[0].kind, "log_match");
        assert_eq!(track(&actions), None);
        t.on_jump(step(7, 10 * S, -10));
        let actions = t.on_log_match(line(11 * S));
        let r = journaled(&actions)[0];
        assert_eq!(r.kind, "log_match_after_time_jump");
        assert!(r.result.contains("Fatal: Time just moved backwards"));
        assert_eq!(r.detail.as_ref().unwrap()["pattern"], "moved backwards");
        assert_eq!(track(&actions), Some(true));
    }

    #[test]
    fn status_shows_state_and_last_verdict() {
        let mut t = healthy_tracker();
        t.on_jump(step(7, 10 * S, -10));
        t.on_death(death(11 * S, ExitStatus::Exited(89)));
        let status = t.status(12 * S);
        let s = &status[0];
        assert_eq!(s.state, ServiceState::Fault);
        assert_eq!(s.reason.as_deref(), Some("died_from_time_jump"));
        assert_eq!(s.deaths_after_time_jump, 1);
        let event = s.last_event.as_ref().unwrap();
        assert!(
            event
                .summary
                .contains("imap (pid 339) exit 89 after a -10.000 s step by date (pid 300)"),
            "{}",
            event.summary
        );
        assert_eq!(event.age_s, 1.0);
    }
}
