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

mod inputs;

pub use inputs::{Death, ExitStatus, Jump, LogMatch};

use std::collections::VecDeque;

use serde_json::{json, Value};

use crate::config::ServiceConfig;
use crate::record::{rfc3339_ns, Record, Source, Verdict};
use crate::status::{ServiceCheck, ServiceEvent, ServiceState, ServiceStatus};
use crate::time::{Monotonic, Realtime};

/// How long a death waits for the jump that explains it, ns. A stall is journaled when it
/// ends, and a step is processed a little after the worker may already have died.
pub const DEATH_GRACE_NS: i64 = 2_000_000_000;
/// Jumps remembered for correlation (older ones are also dropped once out of every window).
const MAX_JUMPS: usize = 64;

/// Log lines kept in a record at most (bytes).
const MAX_LOG_LINE: usize = 512;

#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Unknown,
    Healthy,
    Fault {
        /// The kind of the record that caused it (died_from_time_jump, probe_failed, ...).
        reason: String,
        since: Monotonic,
        /// Good checks count toward `rise` only from here on.
        hold_until: Monotonic,
    },
}

/// What the daemon must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Journal this record (its `time` is stamped from `at`); then, with `notify`,
    /// run the service's notify command with it.
    Journal {
        service: usize,
        record: Box<Record>,
        at: Monotonic,
        notify: bool,
    },
    /// Write the service's keepalived track file: 1 while faulty, 0 when healthy.
    TrackFile { service: usize, fault: bool },
    /// Run the service's restart command.
    Restart { service: usize },
}

pub use crate::status::CheckOutcome;

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
    /// The last verdict journaled about its processes, and when.
    last_event: Option<(LastEvent, Monotonic)>,
    /// What the track file was last set to, and when; when it was last set to 1.
    track_written: Option<(bool, Realtime)>,
    track_fault_written: Option<Realtime>,
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
    pub fn new(configs: &[ServiceConfig], faulted: &[bool], now: Monotonic) -> Tracker {
        let services = configs
            .iter()
            .enumerate()
            .map(|(index, config)| Service {
                config: config.clone(),
                health: if faulted.get(index).copied().unwrap_or(false) {
                    Health::Fault {
                        reason: "carried_over".into(),
                        since: now,
                        hold_until: now,
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
                track_fault_written: None,
            })
            .collect();
        Tracker {
            services,
            jumps: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    /// How many services are tracked.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// No `[[service]]` is configured.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
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

    /// The daemon wrote the service's track file (`fault`: 1) at `written`.
    pub fn track_file_written(&mut self, service: usize, fault: bool, written: Realtime) {
        if let Some(s) = self.services.get_mut(service) {
            s.track_written = Some((fault, written));
            if fault {
                s.track_fault_written = Some(written);
            }
        }
    }

    /// A time jump was journaled. Deaths waiting for an explanation that it explains are
    /// charged to it now.
    pub fn on_jump(&mut self, jump: Jump) -> Vec<Action> {
        // Too small for every service: kept, it could only push a real jump out of the
        // bounded history (a hypervisor correcting the clock every second).
        if !self.services.iter().any(|s| big_enough(&jump, &s.config)) {
            return Vec::new();
        }
        let mut explained = Vec::new();
        let mut index = 0;
        while index < self.pending.len() {
            let death = &self.pending[index];
            if explains(&jump, death.at, &self.services[death.service].config) {
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
        match self.jump_explaining(death.service, death.at) {
            Some(jump) => self.died(death, Some(&jump)),
            None => {
                // With on_any_death the fault cannot wait for the grace: the record can.
                let actions = match self.services[death.service].config.on_any_death {
                    true => self.fault(death.service, "died", death.at, None),
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
        let jump = self.jump_explaining(service, found.at);
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
            "jump": jump.as_ref().map(|j| jump_json(j, found.at)),
            "track_file": s.config.track_file.as_ref().filter(|_| faults),
        }));
        self.report(service, record, found.at, faults, jump.as_ref())
    }

    /// A health check's result (a probe, or whether a process runs).
    pub fn on_check(&mut self, service: usize, check: CheckOutcome) -> Vec<Action> {
        let now = check.at;
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
                    at: now,
                    notify: true,
                }];
                actions.extend(self.fault(service, kind, now, jump.as_ref()));
                actions
            }
            Health::Fault { hold_until, .. } => {
                if now < hold_until || s.restart_due {
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
                        at: now,
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
    pub fn tick(&mut self, now: Monotonic) -> Vec<Action> {
        let mut actions = Vec::new();
        let (expired, waiting): (Vec<Death>, Vec<Death>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|d| now.ns_since(d.at) >= DEATH_GRACE_NS);
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
            .is_some_and(|j| now.ns_since(j.at) > longest + DEATH_GRACE_NS)
        {
            self.jumps.pop_front();
        }
        for service in 0..self.services.len() {
            let s = &mut self.services[service];
            let Health::Fault { hold_until, .. } = s.health else {
                continue;
            };
            if !s.restart_due || now < hold_until {
                continue;
            }
            s.restart_due = false;
            s.consecutive_ok = 0;
            let mut record = self.service_record(service, "restart", None);
            record.verdict = Verdict::Restarting;
            record.result = self.services[service].config.restart.join(" ");
            record.detail = Some(json!({ "service": self.services[service].config.name }));
            self.note_event(service, "restart", &record, now);
            actions.push(Action::Journal {
                service,
                record: Box::new(record),
                at: now,
                notify: true,
            });
            actions.push(Action::Restart { service });
        }
        actions
    }

    /// The latest jump whose window holds `at`.
    fn jump_explaining(&self, service: usize, at: Monotonic) -> Option<Jump> {
        let config = &self.services.get(service)?.config;
        self.jumps
            .iter()
            .rev()
            .find(|j| explains(j, at, config))
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
            "jump": jump.map(|j| jump_json(j, death.at)),
            "track_file": s.config.track_file.as_ref().filter(|_| faults),
        }));
        self.report(service, record, death.at, faults, jump)
    }

    /// Journals a death-like record (notified when it faults) and, when it `faults`,
    /// puts the service in fault for the record's kind.
    fn report(
        &mut self,
        service: usize,
        record: Record,
        at: Monotonic,
        faults: bool,
        jump: Option<&Jump>,
    ) -> Vec<Action> {
        let kind = record.kind.clone();
        self.note_event(service, &kind, &record, at);
        let mut actions = vec![Action::Journal {
            service,
            record: Box::new(record),
            at,
            notify: faults,
        }];
        if faults {
            actions.extend(self.fault(service, &kind, at, jump));
        }
        actions
    }

    /// Puts the service in fault (or extends its fault) and flips the track file.
    fn fault(
        &mut self,
        service: usize,
        reason: &str,
        now: Monotonic,
        jump: Option<&Jump>,
    ) -> Vec<Action> {
        let s = &mut self.services[service];
        let mut hold_ns = (s.config.hold_s * 1e9) as i64;
        if let Some(backward) = jump.and_then(|j| j.delta_ns).filter(|d| *d < 0) {
            hold_ns = hold_ns.max(-backward);
        }
        let hold_until = now.plus_ns(hold_ns);
        s.consecutive_ok = 0;
        if jump.is_some() && !s.config.restart.is_empty() {
            s.restart_due = true;
        }
        match &mut s.health {
            Health::Fault {
                reason: why,
                hold_until: held_until,
                ..
            } => {
                *why = reason.into();
                *held_until = (*held_until).max(hold_until);
                Vec::new()
            }
            _ => {
                s.health = Health::Fault {
                    reason: reason.into(),
                    since: now,
                    hold_until,
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

    fn note_event(&mut self, service: usize, kind: &str, record: &Record, at: Monotonic) {
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
            at,
        ));
    }

    /// Each service: state, checks, processes, counts and the last verdict.
    pub fn status(&self, now: Monotonic) -> Vec<ServiceStatus> {
        self.services
            .iter()
            .map(|s| {
                let (state, reason, fault_for_s, hold_left_s) = match &s.health {
                    Health::Unknown => (ServiceState::Unknown, None, None, None),
                    Health::Healthy => (ServiceState::Healthy, None, None, None),
                    Health::Fault {
                        reason,
                        since,
                        hold_until,
                    } => (
                        ServiceState::Fault,
                        Some(reason.clone()),
                        Some(now.ns_since(*since) as f64 / 1e9),
                        Some(hold_until.ns_since(now).max(0) as f64 / 1e9),
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
                        .map(|(_, written)| rfc3339_ns(written.ns())),
                    track_file_fault_written: s
                        .track_fault_written
                        .map(|written| rfc3339_ns(written.ns())),
                    clean_exits: s.clean_exits,
                    deaths: s.deaths,
                    deaths_after_time_jump: s.deaths_after_time_jump,
                    last_event: s.last_event.as_ref().map(|(event, at)| ServiceEvent {
                        kind: event.kind.clone(),
                        summary: event.summary.clone(),
                        age_s: now.ns_since(*at) as f64 / 1e9,
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

/// Does `jump` explain something at `at` for a service configured so? A jump of at least
/// `jump_min_ms` (or of unknown size), from a little before the daemon learnt of it
/// (DEATH_GRACE_NS: the record trails the event) to the end of the window.
fn explains(jump: &Jump, at: Monotonic, config: &ServiceConfig) -> bool {
    big_enough(jump, config)
        && (-DEATH_GRACE_NS..=window_ns(config)).contains(&at.ns_since(jump.at))
}

/// At least the service's `jump_min_ms` either way, or of unknown size.
fn big_enough(jump: &Jump, config: &ServiceConfig) -> bool {
    jump.delta_ns
        .is_none_or(|d| d.unsigned_abs() as f64 >= config.jump_min_ms * 1e6)
}

/// The jump as a record's `detail.jump`, seen from `at`.
fn jump_json(jump: &Jump, at: Monotonic) -> Value {
    json!({
        "seq": jump.seq,
        "cause": jump.cause,
        "delta_ns": jump.delta_ns,
        "pid": jump.pid,
        "comm": jump.comm,
        "exe": jump.exe,
        "verdict": jump.verdict,
        "seconds_before": at.ns_since(jump.at) as f64 / 1e9,
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
mod tests;
