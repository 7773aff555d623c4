//! The TOML configuration (/etc/clockguard/clockguard.toml), parsed and checked. Unknown
//! keys are refused with their line, so a typo never silently turns a setting off. Reading
//! the file is the daemon's (clockguard/src/config.rs).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Audit only: nothing is refused.
    #[default]
    Observe,
    /// Refuse clock steps in the kernel (needs the BPF LSM).
    Guard,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Guard => "guard",
        }
    }
}

/// `ebpf_log_level`: how much the eBPF programs say about themselves (aya-log). Off by
/// default, and then free: the level is a constant of the loaded object, so the kernel's
/// verifier drops the logging code as dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EbpfLogLevel {
    #[default]
    Off,
    Error,
    Warn,
    /// Adds what the guard refused (or would refuse, observing) and why.
    Info,
    /// Adds what the guard allowed, and clock changes made inside the kernel.
    Debug,
    Trace,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// tracing filter (RUST_LOG syntax), overridden by RUST_LOG.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The eBPF programs' own diagnostics, logged through the daemon's log (so `log_level`
    /// filters them too).
    #[serde(default)]
    pub ebpf_log_level: EbpfLogLevel,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub ntp: NtpConfig,
    #[serde(default)]
    pub timers: TimersConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub control: ControlConfig,
    /// `[[service]]` tables: services whose deaths after a time jump drive the failover.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
}

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
fn default_hold_s() -> f64 {
    10.0
}

impl ServiceConfig {
    fn validate(&self) -> Result<()> {
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
        if !(self.hold_s >= 0.0 && self.hold_s <= 86_400.0) {
            bail!("hold_s = {} is out of range (0 to 86400)", self.hold_s);
        }
        Ok(())
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve GET /metrics on this address ("127.0.0.1:9474"); unset: off.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[control]`: who may use the control socket (runtime_dir/control.sock).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// A group (name or gid) whose members may use the read-only requests (status, events,
    /// tracking, sources, services): the socket becomes 0660 root:GROUP. Unset: 0600, root
    /// only. Changing the daemon (reload) always needs root.
    #[serde(default)]
    pub read_group: Option<String>,
}

/// `[timers]`: timer lateness, stalls and clocksource watching.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimersConfig {
    /// An hrtimer expiry late by this much (ms) or more is an event, and a machine or CPU
    /// whose timers ran that late is journaled as a stall.
    #[serde(default = "default_stall_threshold_ms")]
    pub stall_threshold_ms: f64,
    /// How often the clocks (REALTIME, MONOTONIC, MONOTONIC_RAW, BOOTTIME), steal time and
    /// the clocksource are sampled, ms.
    #[serde(default = "default_sample_interval_ms")]
    pub sample_interval_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [timers] key has a default")
    }
}

fn default_stall_threshold_ms() -> f64 {
    100.0
}
fn default_sample_interval_ms() -> u64 {
    1000
}

impl TimersConfig {
    fn validate(&self) -> Result<()> {
        if !(self.stall_threshold_ms >= 1.0 && self.stall_threshold_ms <= 60_000.0) {
            bail!(
                "timers.stall_threshold_ms = {} is out of range (1 to 60000 ms)",
                self.stall_threshold_ms
            );
        }
        if !(100..=60_000).contains(&self.sample_interval_ms) {
            bail!(
                "timers.sample_interval_ms = {} is out of range (100 to 60000 ms)",
                self.sample_interval_ms
            );
        }
        Ok(())
    }
}

/// `[ntp]`: the NTP client (slew-only discipline) and server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NtpConfig {
    /// Servers: "host", "host:port", "1.2.3.4", "[::1]:123". Names are resolved at start
    /// and again while a server stays unreachable.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Pools: each name gives up to `pool_size` servers.
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Start each source with a burst of 4 requests 2 s apart.
    #[serde(default = "default_true")]
    pub iburst: bool,
    /// log2 of the shortest and longest poll interval, s (4 = 16 s, 10 = 1024 s).
    #[serde(default = "default_minpoll")]
    pub minpoll: i8,
    #[serde(default = "default_maxpoll")]
    pub maxpoll: i8,
    /// Answer NTP clients on this address ("0.0.0.0:123"); unset: no server.
    #[serde(default)]
    pub serve: Option<String>,
    /// Serve at this stratum while no source is selected (chrony's `local stratum`), so an
    /// isolated cluster keeps one time; unset: answer "unsynchronised" instead.
    #[serde(default)]
    pub local_stratum: Option<u8>,
    /// Per-client rate limit: the average interval (log2 s) and burst (chrony's
    /// `ratelimit interval 3 burst 8`).
    #[serde(default = "default_rate_limit_interval")]
    pub rate_limit_interval: i8,
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
}

impl Default for NtpConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [ntp] key has a default")
    }
}

fn default_pool_size() -> usize {
    4
}
fn default_minpoll() -> i8 {
    4
}
fn default_maxpoll() -> i8 {
    10
}
fn default_rate_limit_interval() -> i8 {
    3
}
fn default_rate_limit_burst() -> u32 {
    8
}

/// `[guard]`: who may step the clock, and how a refused step is slewed in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Executables (paths) that may step the clock. clockguard itself always may.
    #[serde(default)]
    pub allow: Vec<PathBuf>,
    /// Time agents whose refused step clockguard applies as a slew.
    #[serde(default = "default_slew_instead")]
    pub slew_instead: Vec<PathBuf>,
    /// Only clockguard may change the kernel's frequency, tick or PLL offset (two daemons
    /// fighting over the kernel discipline is a classic failure).
    #[serde(default)]
    pub exclusive_discipline: bool,
    /// Start in observe mode when another time service (chronyd, ntpd, systemd-timesyncd)
    /// is running or configured, as Oracle CTSS does.
    #[serde(default = "default_true")]
    pub defer_to_time_services: bool,
    /// Fastest slew, in ppm (chrony's maxslewrate default: 83333 ppm = 83.3 ms/s).
    #[serde(default = "default_max_slew_ppm")]
    pub max_slew_ppm: f64,
    /// Largest correction slewed in, in seconds; beyond it a step is refused with an alert
    /// (Oracle CTSS: 24 h).
    #[serde(default = "default_max_correction_s")]
    pub max_correction_s: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            allow: Vec::new(),
            slew_instead: default_slew_instead(),
            exclusive_discipline: false,
            defer_to_time_services: true,
            max_slew_ppm: default_max_slew_ppm(),
            max_correction_s: default_max_correction_s(),
        }
    }
}

/// Guest agents (qemu-ga, VirtualBox, VMware) and one-shot NTP tools, at the paths Debian,
/// RHEL and SUSE install them; paths that do not exist are skipped (shown in `status`).
fn default_slew_instead() -> Vec<PathBuf> {
    [
        "/usr/sbin/qemu-ga",
        "/usr/bin/qemu-ga",
        "/usr/sbin/VBoxService",
        "/usr/bin/VBoxService",
        "/opt/VBoxGuestAdditions/sbin/VBoxService",
        "/usr/bin/vmtoolsd",
        "/usr/sbin/ntpdate",
        "/usr/bin/sntp",
        "/usr/sbin/sntp",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}
fn default_max_slew_ppm() -> f64 {
    83_333.0
}
fn default_max_correction_s() -> f64 {
    86_400.0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Journal read-only adjtimex calls (modes = 0: chronyc tracking, ntptime, monitoring).
    /// They are counted either way.
    #[serde(default)]
    pub journal_readonly: bool,
    /// Rotate the journal when it would grow past this many bytes.
    #[serde(default = "default_max_journal_bytes")]
    pub max_journal_bytes: u64,
    /// Rotated journals kept (journal.jsonl.1 .. .N).
    #[serde(default = "default_keep_journals")]
    pub keep_journals: u32,
    /// Hooks not to attach, by the names `clockguard status` shows.
    #[serde(default)]
    pub disabled_hooks: Vec<String>,
    /// The userspace detector (timerfd TFD_TIMER_CANCEL_ON_SET): journals a jump that no
    /// kernel hook explained.
    #[serde(default = "default_true")]
    pub fallback_detector: bool,
    /// Have the kernel time every run of clockguard's eBPF programs (BPF_ENABLE_STATS) and
    /// show the cost per run in `status`. Timing costs two clock reads per run, so it is
    /// off unless you are measuring.
    #[serde(default)]
    pub measure_hook_cost: bool,
    /// In a storm of clock calls that change nothing (failed calls, frequency and status
    /// writes, reads), the kernel sends this many calls per process, syscall, clock, modes
    /// and result in each summary interval in full and only counts the rest; each count is
    /// journaled as one `summary` record. 0: every call in full.
    #[serde(default = "default_repeats_in_full")]
    pub repeats_in_full: u32,
    /// The summary interval (ms).
    #[serde(default = "default_summary_interval_ms")]
    pub summary_interval_ms: u64,
}

fn default_repeats_in_full() -> u32 {
    8
}
fn default_summary_interval_ms() -> u64 {
    2000
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            journal_readonly: false,
            max_journal_bytes: default_max_journal_bytes(),
            keep_journals: default_keep_journals(),
            disabled_hooks: Vec::new(),
            fallback_detector: true,
            measure_hook_cost: false,
            repeats_in_full: default_repeats_in_full(),
            summary_interval_ms: default_summary_interval_ms(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/clockguard")
}
fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/clockguard")
}
fn default_log_level() -> String {
    "info".into()
}
fn default_max_journal_bytes() -> u64 {
    64 << 20
}
fn default_keep_journals() -> u32 {
    4
}
fn default_true() -> bool {
    true
}

impl NtpConfig {
    fn validate(&self) -> Result<()> {
        // RFC 5905 allows 2^3..2^17 s; clockguard polls at least every 16 s.
        if !(4..=17).contains(&self.minpoll) || !(self.minpoll..=17).contains(&self.maxpoll) {
            bail!(
                "ntp: minpoll = {} and maxpoll = {} must satisfy 4 <= minpoll <= maxpoll <= 17",
                self.minpoll,
                self.maxpoll
            );
        }
        if let Some(stratum) = self.local_stratum {
            if !(1..=15).contains(&stratum) {
                bail!("ntp.local_stratum = {stratum} is out of range (1 to 15)");
            }
        }
        if let Some(serve) = &self.serve {
            serve.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "ntp.serve = {serve:?} is not an ADDRESS:PORT (e.g. \"0.0.0.0:123\")"
                )
            })?;
        }
        if !(-4..=12).contains(&self.rate_limit_interval) || self.rate_limit_burst == 0 {
            bail!(
                "ntp: rate_limit_interval = {} (-4 to 12) or rate_limit_burst = {} (at least 1) \
                 is out of range",
                self.rate_limit_interval,
                self.rate_limit_burst
            );
        }
        if self.pool_size == 0 || self.pool_size > 16 {
            bail!(
                "ntp.pool_size = {} is out of range (1 to 16)",
                self.pool_size
            );
        }
        for server in self.servers.iter().chain(&self.pools) {
            split_host_port(server)
                .map_err(|why| anyhow::anyhow!("ntp: server {server:?}: {why}"))?;
        }
        Ok(())
    }
}

/// The line (from 1) of the `name = "NAME"` inside a `[[service]]` table, if found.
fn line_of_service(text: &str, name: &str) -> Option<usize> {
    line_of_key(text, "[[service]]", "name", Some(name))
}

/// The line (from 1) where `key` is set inside the table whose header is `table`
/// ("[guard]", "[[service]]"), with this value if one is given.
fn line_of_key(text: &str, table: &str, key: &str, value: Option<&str>) -> Option<usize> {
    let mut in_table = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line.replace(' ', "") == table;
            continue;
        }
        if !in_table {
            continue;
        }
        if let Some((name, set_to)) = line.split_once('=') {
            let set_to = set_to.trim().trim_matches(|c| c == '"' || c == '\'');
            if name.trim() == key && value.is_none_or(|v| v == set_to) {
                return Some(index + 1);
            }
        }
    }
    None
}

/// The key a validation message starts with: `table.key = ...` or `table: key = ...`.
fn key_named_by(message: &str) -> Option<(&str, &str)> {
    let (head, _) = message.split_once(" = ")?;
    let (table, key) = head.split_once(": ").or_else(|| head.split_once('.'))?;
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    (word(table) && word(key)).then_some((table, key))
}

/// Line and column (from 1) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|err| {
            let message = err.message().trim_end();
            match err.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    anyhow::anyhow!("{origin}: line {line}, column {column}: {message}")
                }
                None => anyhow::anyhow!("{origin}: {message}"),
            }
        })?;
        if let Err(err) = config.validate() {
            let message = format!("{err:#}");
            let line = key_named_by(&message)
                .and_then(|(table, key)| line_of_key(text, &format!("[{table}]"), key, None));
            match line {
                Some(line) => bail!("{origin}: line {line}: {message}"),
                None => bail!("{origin}: {message}"),
            }
        }
        let mut names = std::collections::HashSet::new();
        for service in &config.services {
            // Name the table by its line: the table itself has no key to point at.
            let line = line_of_service(text, &service.name)
                .map(|n| format!(" (line {n})"))
                .unwrap_or_default();
            service
                .validate()
                .with_context(|| format!("{origin}: service {:?}{line}", service.name))?;
            if !names.insert(&service.name) {
                bail!(
                    "{origin}: service {:?}{line} is defined twice",
                    service.name
                );
            }
        }
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.audit.max_journal_bytes < 4096 {
            bail!(
                "audit.max_journal_bytes = {} is too small (at least 4096)",
                self.audit.max_journal_bytes
            );
        }
        if !(100..=3_600_000).contains(&self.audit.summary_interval_ms) {
            bail!(
                "audit.summary_interval_ms = {} is out of range (100 to 3600000 ms)",
                self.audit.summary_interval_ms
            );
        }
        // The kernel takes ±10 % through the tick and ±500 ppm through the frequency.
        if !(1.0..=100_500.0).contains(&self.guard.max_slew_ppm) {
            bail!(
                "guard.max_slew_ppm = {} is out of range (1 to 100500 ppm: the kernel's tick \
                 and frequency limits)",
                self.guard.max_slew_ppm
            );
        }
        if !(self.guard.max_correction_s > 0.0 && self.guard.max_correction_s <= 1e9) {
            bail!(
                "guard.max_correction_s = {} is out of range (more than 0, at most 1e9 s)",
                self.guard.max_correction_s
            );
        }
        self.timers.validate()?;
        if let Some(listen) = &self.metrics.listen {
            listen.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "metrics.listen = {listen:?} is not an ADDRESS:PORT (e.g. \"127.0.0.1:9474\")"
                )
            })?;
        }
        self.ntp.validate()?;
        for path in self.guard.allow.iter().chain(&self.guard.slew_instead) {
            if !path.is_absolute() {
                bail!(
                    "guard: executable {} is not an absolute path",
                    path.display()
                );
            }
        }
        if let Some(path) = self
            .guard
            .allow
            .iter()
            .find(|p| self.guard.slew_instead.contains(p))
        {
            bail!(
                "guard: {} is listed in both allow and slew_instead",
                path.display()
            );
        }
        Ok(())
    }
}

/// "host", "host:port", "1.2.3.4", "1.2.3.4:123", "[::1]" or "[::1]:123" → (host, port).
pub fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty server name".into());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), 123));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' after an IPv6 address")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().map_err(|_| format!("bad port {port:?}"))?,
            None if after.is_empty() => 123,
            None => return Err(format!("unexpected {after:?} after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| format!("bad port {port:?}"))?,
        ),
        None => (text, 123),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !host.chars().all(valid) {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok((host.to_string(), port))
}

/// What a reload does with a new configuration: the changed keys (`section.key`, or `key`
/// at the top level) it applies at once, and those that wait for a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadPlan {
    pub applied: Vec<String>,
    pub needs_restart: Vec<String>,
}

impl ReloadPlan {
    /// The configuration keys a reload applies at once: the guard's policy.
    pub const RELOADABLE: &'static [&'static str] = &[
        "guard.allow",
        "guard.slew_instead",
        "guard.exclusive_discipline",
    ];

    pub fn between(old: &Config, new: &Config) -> ReloadPlan {
        let (applied, needs_restart) = changed_keys(old, new)
            .into_iter()
            .partition(|key| Self::RELOADABLE.contains(&key.as_str()));
        ReloadPlan {
            applied,
            needs_restart,
        }
    }
}

/// The keys whose values differ, compared as the configuration serialises: every table's
/// keys one by one, anything else (the `[[service]]` list) as a whole.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    use serde_json::Value;
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["(configuration)".into()];
    };
    let mut changed = Vec::new();
    for (key, before) in &old {
        let after = &new[key];
        match (before, after) {
            (Value::Object(before), Value::Object(after)) => {
                for (inner, value) in before {
                    if after.get(inner) != Some(value) {
                        changed.push(format!("{key}.{inner}"));
                    }
                }
            }
            _ if before != after => changed.push(key.clone()),
            _ => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMBEDDED_DEFAULT: &str = include_str!("../../clockguard.toml");

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.mode, Mode::Observe);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/clockguard"));
        assert!(!c.audit.journal_readonly);
        assert!(c.audit.fallback_detector);
        assert_eq!(c.ebpf_log_level, EbpfLogLevel::Off);
    }

    #[test]
    fn ebpf_log_level_takes_the_log_crate_names_and_refuses_others_with_its_line() {
        let c = Config::parse("ebpf_log_level = \"info\"\n", "t.toml").unwrap();
        assert_eq!(c.ebpf_log_level, EbpfLogLevel::Info);
        assert!(
            EbpfLogLevel::Off < EbpfLogLevel::Error && EbpfLogLevel::Debug < EbpfLogLevel::Trace
        );
        let err = Config::parse(
            "mode = \"observe\"\nebpf_log_level = \"verbose\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("verbose"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = Config::parse(
            "mode = \"observe\"\n\n[audit]\njournal_reads = true\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("journal_reads"), "{err}");
    }

    #[test]
    fn services_parse_with_defaults_and_bad_ones_name_their_line() {
        let text = "mode = \"observe\"\n\n[[service]]\nname = \"dovecot\"\npidfile = \"/run/dovecot/master.pid\"\nprobe = \"127.0.0.1:143\"\nprobe_expect = \"* OK\"\ntrack_file = \"/run/cg/dovecot\"\n\n[[service]]\nname = \"web\"\ncomm = [\"nginx\"]\n";
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(c.services.len(), 2);
        let dovecot = &c.services[0];
        assert_eq!(
            (dovecot.fall, dovecot.rise, dovecot.interval_ms),
            (2, 3, 1000)
        );
        assert_eq!(dovecot.jump_window_s, 60.0);
        assert_eq!(c.services[1].comm, vec!["nginx".to_string()]);

        let bad = |text: &str| format!("{:#}", Config::parse(text, "t.toml").unwrap_err());
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"a\"]\n\n[[service]]\nname = \"b\"\nprobe = \"localhost\"\n");
        assert!(
            err.contains("service \"b\" (line 6)") && err.contains("probe"),
            "{err}"
        );
        let err = bad("[[service]]\nname = \"a\"\n");
        assert!(err.contains("nothing to track"), "{err}");
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"a-very-long-process-name\"]\n");
        assert!(err.contains("15 bytes"), "{err}");
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"x\"]\ntrack_file = \"rel\"\n");
        assert!(
            err.contains("track_file") && err.contains("absolute"),
            "{err}"
        );
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"x\"]\n[[service]]\nname = \"a\"\ncomm = [\"y\"]\n");
        assert!(err.contains("twice"), "{err}");
        let err = bad("[[service]]\nname = \"a\"\nlog_file = \"/var/log/a\"\n");
        assert!(err.contains("log_patterns"), "{err}");
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"x\"]\nrise = 0\n");
        assert!(err.contains("rise"), "{err}");
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"x\"]\nfal = 2\n");
        assert!(err.contains("line 4") && err.contains("fal"), "{err}");
    }

    /// The commented [[service]] example of the embedded config parses once uncommented.
    #[test]
    fn embedded_service_example_parses() {
        let example = EMBEDDED_DEFAULT
            .lines()
            .skip_while(|l| *l != "# [[service]]")
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(example.starts_with("[[service]]"), "{example}");
        let c = Config::parse(&example, "example").unwrap();
        let dovecot = &c.services[0];
        assert_eq!(dovecot.unit.as_deref(), Some("dovecot.service"));
        assert_eq!(dovecot.probe_expect.as_deref(), Some("* OK"));
        assert_eq!(dovecot.restart.len(), 3);
    }

    #[test]
    fn bad_mode_is_refused() {
        let err = Config::parse("mode = \"enforce\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("enforce"), "{err}");
    }

    #[test]
    fn guard_defaults_and_checks() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.guard, GuardConfig::default());
        assert!(c
            .guard
            .slew_instead
            .contains(&PathBuf::from("/usr/sbin/qemu-ga")));
        let err = Config::parse("[guard]\nmax_slew_ppm = 200000\n", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("max_slew_ppm"), "{err:#}");
        let err = Config::parse("[guard]\nallow = [\"date\"]\n", "t.toml").unwrap_err();
        assert!(
            format!("{err:#}").contains("not an absolute path"),
            "{err:#}"
        );
        let err = Config::parse(
            "[guard]\nallow = [\"/bin/x\"]\nslew_instead = [\"/bin/x\"]\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("both"), "{err:#}");
    }

    #[test]
    fn ntp_defaults_and_bad_values_name_the_key() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!((c.ntp.minpoll, c.ntp.maxpoll, c.ntp.iburst), (4, 10, true));
        assert!(c.ntp.servers.is_empty() && c.ntp.serve.is_none());
        let ok = "[ntp]\nservers = [\"ntp1.example\", \"10.0.0.1:1123\", \"[::1]\"]\n\
                  serve = \"0.0.0.0:123\"\nlocal_stratum = 10\n";
        Config::parse(ok, "t").unwrap();
        for (text, says) in [
            ("[ntp]\nminpoll = 3\n", "minpoll = 3"),
            ("[ntp]\nminpoll = 8\nmaxpoll = 6\n", "maxpoll = 6"),
            ("[ntp]\nserve = \"123\"\n", "ntp.serve"),
            ("[ntp]\nlocal_stratum = 16\n", "local_stratum = 16"),
            ("[ntp]\nservers = [\"bad name\"]\n", "not a host name"),
            ("[ntp]\nservers = [\"host:99999\"]\n", "bad port"),
            ("[ntp]\nrate_limit_burst = 0\n", "rate_limit_burst = 0"),
            ("[ntp]\npool_size = 0\n", "pool_size = 0"),
        ] {
            let err = format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
            assert!(
                err.contains(says) && err.contains("f.toml"),
                "{text:?}: {err}"
            );
        }
        let err = format!(
            "{:#}",
            Config::parse("[ntp]\nserver = []\n", "f.toml").unwrap_err()
        );
        assert!(err.contains("line 2") && err.contains("server"), "{err}");
    }

    #[test]
    fn tiny_journal_limit_is_refused() {
        let err = Config::parse("[audit]\nmax_journal_bytes = 10\n", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("max_journal_bytes"));
    }

    #[test]
    fn bad_values_name_their_line_on_one_line() {
        for (text, says) in [
            (
                "[guard]\nallow = []\n\nmax_slew_ppm = 0\n",
                "t.toml: line 4: guard.max_slew_ppm = 0",
            ),
            (
                "[ntp]\nminpoll = 9\nmaxpoll = 5\n",
                "t.toml: line 2: ntp: minpoll = 9",
            ),
            (
                "[ntp]\nminpoll = \"x\"\n",
                "t.toml: line 2, column 11: invalid type",
            ),
            (
                "mode = \"observe\"\n[control]\nread_grup = \"adm\"\n",
                "t.toml: line 3, column 1: unknown field `read_grup`",
            ),
        ] {
            let err = format!("{:#}", Config::parse(text, "t.toml").unwrap_err());
            assert!(err.starts_with(says), "{text:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert_eq!(
            key_named_by("timers.sample_interval_ms = 5 is"),
            Some(("timers", "sample_interval_ms"))
        );
        assert_eq!(key_named_by("guard: executable x is not absolute"), None);
        let c = Config::parse("[control]\nread_group = \"adm\"\n", "t").unwrap();
        assert_eq!(c.control.read_group.as_deref(), Some("adm"));
    }

    #[test]
    fn timers_defaults_and_bad_values_name_the_key() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.timers.stall_threshold_ms, 100.0);
        assert_eq!(c.timers.sample_interval_ms, 1000);
        for (text, says) in [
            (
                "[timers]\nstall_threshold_ms = 0.5\n",
                "stall_threshold_ms = 0.5",
            ),
            (
                "[timers]\nsample_interval_ms = 10\n",
                "sample_interval_ms = 10",
            ),
            ("[timers]\nstall_ms = 10\n", "line 2"),
            ("[metrics]\nlisten = \"9474\"\n", "metrics.listen"),
        ] {
            let err = format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
            assert!(
                err.contains(says) && err.contains("f.toml"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("pool.ntp.org"),
            Ok(("pool.ntp.org".into(), 123))
        );
        assert_eq!(split_host_port("ntp1:1123"), Ok(("ntp1".into(), 1123)));
        assert_eq!(split_host_port("10.0.0.1"), Ok(("10.0.0.1".into(), 123)));
        assert_eq!(
            split_host_port("10.0.0.1:124"),
            Ok(("10.0.0.1".into(), 124))
        );
        assert_eq!(split_host_port("[::1]:5"), Ok(("::1".into(), 5)));
        assert_eq!(split_host_port("[::1]"), Ok(("::1".into(), 123)));
        assert_eq!(split_host_port("::1"), Ok(("::1".into(), 123)));
        assert!(split_host_port("").is_err());
        assert!(split_host_port("host:99999")
            .unwrap_err()
            .contains("bad port"));
        assert!(split_host_port("a b")
            .unwrap_err()
            .contains("not a host name"));
        assert!(split_host_port("[::1").unwrap_err().contains("']'"));
    }

    #[test]
    fn a_reload_applies_the_guard_policy_and_defers_the_rest() {
        let old = Config::parse(EMBEDDED_DEFAULT, "old").unwrap();
        assert_eq!(ReloadPlan::between(&old, &old), ReloadPlan::default());
        let new = Config::parse(
            "mode = \"guard\"\n[guard]\nallow = [\"/usr/sbin/chronyd\"]\n\
             exclusive_discipline = true\n[ntp]\nservers = [\"10.0.0.1\"]\n\
             [[service]]\nname = \"imap\"\ncomm = [\"dovecot\"]\n",
            "new",
        )
        .unwrap();
        let plan = ReloadPlan::between(&old, &new);
        assert_eq!(plan.applied, ["guard.allow", "guard.exclusive_discipline"]);
        assert_eq!(plan.needs_restart, ["mode", "ntp.servers", "service"]);
        // Back again: the same keys, the other way.
        assert_eq!(ReloadPlan::between(&new, &old), plan);
    }
}
