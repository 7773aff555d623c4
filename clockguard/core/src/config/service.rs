//! `[[service]]`: a tracked service, its health checks and its failover.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[[service]]`: a tracked service. Its processes are those matching `unit`, `pidfile`,
/// `exe` or `comm`, and all their descendants (workers).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The name `status`, `service-check` and the journal use.
    pub name: String,
    /// A systemd unit ("dovecot.service"): the processes in its cgroup.
    #[serde(default)]
    pub unit: Option<String>,
    /// A pid file holding the main process's pid.
    #[serde(default)]
    pub pidfile: Option<PathBuf>,
    /// An executable path.
    #[serde(default)]
    pub exe: Option<PathBuf>,
    /// Process names as the kernel keeps them (at most 15 characters).
    #[serde(default)]
    pub comm: Vec<String>,
    /// Health probe: a TCP connect to ADDRESS:PORT ("127.0.0.1:143").
    #[serde(default)]
    pub probe: Option<String>,
    /// With a probe: what the server's first bytes must start with ("* OK" for IMAP).
    #[serde(default)]
    pub probe_expect: Option<String>,
    /// Time between health checks, ms (a probe, or "is a process running" without one).
    #[serde(default = "default_check_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Consecutive failed checks that make the service faulty, and good ones that make it
    /// healthy again (keepalived's fall and rise).
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// A death or failed check within this many seconds after a time jump (step, refused
    /// step, stall, clocksource jump) is charged to the jump.
    #[serde(default = "default_jump_window_s")]
    pub jump_window_s: f64,
    /// A jump smaller than this (ms, either way) explains nothing: a hypervisor's or an NTP
    /// client's millisecond correction does not kill services, and a crash that follows
    /// one by chance must not fail the service over. Jumps of unknown size always count.
    #[serde(default = "default_jump_min_ms")]
    pub jump_min_ms: f64,
    /// A fault lasts at least this long (s) before good checks count toward `rise`; after a
    /// backward jump, at least as long as the jump, so the old timeline has caught up.
    #[serde(default = "default_hold_s")]
    pub hold_s: f64,
    /// Also fault on a death that no time jump explains (default: only reported).
    #[serde(default)]
    pub on_any_death: bool,
    /// A log file the service writes, and text whose appearance in a new line of it counts
    /// like a death ("Time just moved backwards"). Plain substrings, not regexes.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    #[serde(default)]
    pub log_patterns: Vec<String>,
    /// keepalived track_file (weight 0: non-zero is FAULT): clockguard writes 1 while the
    /// service is faulty, 0 when healthy, by rename (never by deleting it).
    #[serde(default)]
    pub track_file: Option<PathBuf>,
    /// Command run on each of the service's events (argv; the event in CLOCKGUARD_*
    /// variables and as JSON on stdin).
    #[serde(default)]
    pub notify: Vec<String>,
    /// Command that restarts the service, run once a time-jump fault's hold is over.
    #[serde(default)]
    pub restart: Vec<String>,
}

fn default_check_interval_ms() -> u64 {
    1000
}
fn default_probe_timeout_ms() -> u64 {
    1000
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    3
}
fn default_jump_window_s() -> f64 {
    60.0
}
fn default_jump_min_ms() -> f64 {
    100.0
}
fn default_hold_s() -> f64 {
    10.0
}

impl ServiceConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
        if !valid_name {
            bail!("the name must be 1 to 64 letters, digits or _.@-");
        }
        if self.unit.is_none()
            && self.pidfile.is_none()
            && self.exe.is_none()
            && self.comm.is_empty()
            && self.probe.is_none()
            && self.log_file.is_none()
        {
            bail!("nothing to track: set unit, pidfile, exe, comm, probe or log_file");
        }
        if let Some(comm) = self.comm.iter().find(|c| c.is_empty() || c.len() > 15) {
            bail!("comm {comm:?} is empty or longer than 15 bytes (the kernel's limit)");
        }
        for (key, path) in [
            ("pidfile", &self.pidfile),
            ("exe", &self.exe),
            ("track_file", &self.track_file),
            ("log_file", &self.log_file),
        ] {
            if let Some(path) = path.as_ref().filter(|p| !p.is_absolute()) {
                bail!("{key} = {} is not an absolute path", path.display());
            }
        }
        for (key, argv) in [("notify", &self.notify), ("restart", &self.restart)] {
            if argv
                .first()
                .is_some_and(|cmd| !Path::new(cmd).is_absolute())
            {
                bail!("{key}: the command {:?} is not an absolute path", argv[0]);
            }
        }
        if let Some(probe) = &self.probe {
            probe.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow::anyhow!("probe = {probe:?} is not an ADDRESS:PORT (e.g. \"127.0.0.1:143\")")
            })?;
        }
        if self.probe_expect.is_some() && self.probe.is_none() {
            bail!("probe_expect is set without a probe");
        }
        if self.log_file.is_some() == self.log_patterns.is_empty() {
            bail!("log_file and log_patterns go together: set both or neither");
        }
        if self.log_patterns.iter().any(String::is_empty) {
            bail!("log_patterns: an empty pattern would match every line");
        }
        if !(100..=3_600_000).contains(&self.interval_ms) {
            bail!(
                "interval_ms = {} is out of range (100 to 3600000)",
                self.interval_ms
            );
        }
        // A probe slower than interval_ms delays the next one (no overlap).
        if !(10..=60_000).contains(&self.probe_timeout_ms) {
            bail!(
                "probe_timeout_ms = {} is out of range (10 to 60000)",
                self.probe_timeout_ms
            );
        }
        if !(1..=100).contains(&self.fall) || !(1..=100).contains(&self.rise) {
            bail!(
                "fall = {} and rise = {} must be 1 to 100",
                self.fall,
                self.rise
            );
        }
        if !(self.jump_window_s > 0.0 && self.jump_window_s <= 86_400.0) {
            bail!(
                "jump_window_s = {} is out of range (more than 0, at most 86400)",
                self.jump_window_s
            );
        }
        if !(self.jump_min_ms >= 0.0 && self.jump_min_ms <= 3_600_000.0) {
            bail!(
                "jump_min_ms = {} is out of range (0 to 3600000)",
                self.jump_min_ms
            );
        }
        if !(self.hold_s >= 0.0 && self.hold_s <= 86_400.0) {
            bail!("hold_s = {} is out of range (0 to 86400)", self.hold_s);
        }
        Ok(())
    }
}
