//! The tracked services in the `status` and `service-check` answers.

use serde::{Deserialize, Serialize};

use super::*;

/// The health of a tracked service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Not checked yet.
    Unknown,
    Healthy,
    /// keepalived's track file says 1 and `service-check` fails.
    Fault,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Unknown => "unknown",
            ServiceState::Healthy => "healthy",
            ServiceState::Fault => "fault",
        }
    }
}

/// One tracked service, as `status` and `service-check` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    /// Why it is in fault ("died_from_time_jump", "check_failed", ...).
    pub reason: Option<String>,
    /// How long it has been in fault, s, and how much of the fault's hold is left, s.
    pub fault_for_s: Option<f64>,
    pub hold_left_s: Option<f64>,
    pub restart_due: bool,
    /// Processes tracked at the last scan.
    pub processes: u64,
    pub check: ServiceCheck,
    pub track_file: Option<PathBuf>,
    /// What the track file was last set to (0 | 1), and when (RFC 3339, CLOCK_REALTIME);
    /// when it was last set to 1.
    pub track_file_value: Option<u8>,
    pub track_file_written: Option<String>,
    pub track_file_fault_written: Option<String>,
    pub clean_exits: u64,
    pub deaths: u64,
    pub deaths_after_time_jump: u64,
    pub last_event: Option<ServiceEvent>,
}

/// A service's health check: what it checks, its last outcome, and the counts that decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheck {
    /// "a process running" | "tcp 127.0.0.1:143, expect \"* OK\""
    pub target: String,
    pub last: Option<CheckOutcome>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
    pub fall: u32,
    pub rise: u32,
}

/// The last health check of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub ok: bool,
    /// What was found ("connected, got \"* OK\"", "connection refused", "2 processes").
    pub detail: String,
    /// When it was checked (the daemon's own; not in the JSON).
    #[serde(skip)]
    pub at: crate::time::Monotonic,
}

/// The last journaled verdict about a service's processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// The record's kind ("died", "died_after_time_jump", ...).
    pub kind: String,
    /// One line: "died: cgsvc-worker (pid 812) killed by SIGABRT after a 5.000 s step".
    pub summary: String,
    /// How long ago, s.
    pub age_s: f64,
}

/// The daemon's `services` answer (`service-check` reads it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServicesAnswer {
    pub services: Vec<ServiceStatus>,
}
