//! The sections of the file other than `[[service]]`: `[metrics]`, `[control]`,
//! `[timers]`, `[ntp]`, `[guard]` and `[audit]`, with their defaults and checks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::*;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve GET /metrics on this address ("127.0.0.1:9474"); unset: off.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[bound]`: the clock error bound, published as a ClockBound segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoundConfig {
    /// Publish it (while the NTP client runs: without sources there is no bound).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The segment (ClockBound's clients read /var/run/clockbound/shm0).
    #[serde(default = "default_bound_path")]
    pub path: PathBuf,
    /// The least drift published, ppb: what the oscillator may wander unmeasured.
    #[serde(default = "default_drift_floor_ppb")]
    pub drift_floor_ppb: u32,
    /// Standard errors of the offset and frequency estimates in the bound.
    #[serde(default = "default_error_sigmas")]
    pub error_sigmas: f64,
    /// A bound not renewed for this long is void (readers say unknown), s.
    #[serde(default = "default_void_after_s")]
    pub void_after_s: u64,
}

impl Default for BoundConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [bound] key has a default")
    }
}

fn default_bound_path() -> PathBuf {
    PathBuf::from("/var/run/clockbound/shm0")
}
fn default_drift_floor_ppb() -> u32 {
    1_000
}
fn default_error_sigmas() -> f64 {
    3.0
}
fn default_void_after_s() -> u64 {
    1_000
}

impl BoundConfig {
    pub(super) fn validate(&self) -> Result<()> {
        if !self.path.is_absolute() || self.path.file_name().is_none() {
            bail!(
                "bound.path = {:?} is not an absolute path to a file",
                self.path.display().to_string()
            );
        }
        if self.drift_floor_ppb > 100_000_000 {
            bail!(
                "bound.drift_floor_ppb = {} is out of range (0 to 100000000 ppb)",
                self.drift_floor_ppb
            );
        }
        if !(1.0..=10.0).contains(&self.error_sigmas) {
            bail!(
                "bound.error_sigmas = {} is out of range (1 to 10)",
                self.error_sigmas
            );
        }
        if !(10..=86_400).contains(&self.void_after_s) {
            bail!(
                "bound.void_after_s = {} is out of range (10 to 86400 s)",
                self.void_after_s
            );
        }
        Ok(())
    }
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
    /// The hypervisor's vmclock device (Linux's ptp_vmclock), followed for its disruption
    /// marker (a live migration, a snapshot restored) and maintenance warnings; "" = not
    /// looked for. A machine without one is told in `status`.
    #[serde(default = "default_vmclock")]
    pub vmclock: PathBuf,
    /// How often the vmclock page is read, ms.
    #[serde(default = "default_vmclock_poll_ms")]
    pub vmclock_poll_ms: u64,
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
fn default_vmclock() -> PathBuf {
    PathBuf::from("/dev/vmclock0")
}
fn default_vmclock_poll_ms() -> u64 {
    10
}

impl TimersConfig {
    pub(super) fn validate(&self) -> Result<()> {
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
        if !(1..=1000).contains(&self.vmclock_poll_ms) {
            bail!(
                "timers.vmclock_poll_ms = {} is out of range (1 to 1000 ms)",
                self.vmclock_poll_ms
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
    /// Servers polled with Network Time Security (RFC 8915): "host" or "host:port" of the
    /// NTS-KE server (TLS 1.3, port 4460 by default), which names the NTP server and port.
    /// Replies that do not authenticate are dropped. chrony's `server HOST nts`.
    #[serde(default)]
    pub nts_servers: Vec<String>,
    /// PEM file of CA certificates trusted for NTS-KE, besides the system's trust store
    /// (chrony's `ntstrustedcerts`).
    #[serde(default)]
    pub nts_ca: Option<PathBuf>,
    /// Use authenticated time only: `servers` and `pools` are then a configuration error.
    #[serde(default)]
    pub require_nts: bool,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Start each source with a burst of 4 requests 2 s apart.
    #[serde(default = "default_true")]
    pub iburst: bool,
    /// log2 of the shortest and longest poll interval, s (4 = 16 s, 10 = 1024 s; at least
    /// 0 = 1 s, below 4 only against a server one runs).
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
    /// Serve NTS (RFC 8915): the NTS-KE server's address ("0.0.0.0:4460"; TLS 1.3), which
    /// hands clients cookies for the NTP server on `serve`. Needs `nts_cert` and
    /// `nts_key` (chrony's `ntsserverkey` and `ntsservercert`).
    #[serde(default)]
    pub nts_ke: Option<String>,
    /// PEM files: the server's certificate chain (leaf first) and its private key.
    #[serde(default)]
    pub nts_cert: Option<PathBuf>,
    #[serde(default)]
    pub nts_key: Option<PathBuf>,
    /// How often the key that seals the server's cookies is replaced, s (chrony's
    /// `ntsrotate`, one week). A cookie stays valid for two periods after its key was
    /// replaced. The keys are kept in the state directory (`nts-server-keys`, root only),
    /// so that clients' cookies outlive a restart, which also replaces the key.
    #[serde(default = "default_nts_key_rotation_s")]
    pub nts_key_rotation_s: u64,
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
/// The longest cookie key rotation period (s).
const YEAR_S: u64 = 365 * 24 * 3600;
fn default_nts_key_rotation_s() -> u64 {
    7 * 24 * 3600
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
    /// Also send each record to the systemd journal as a structured entry (journald's
    /// native protocol), when its socket exists.
    #[serde(default = "default_true")]
    pub journald: bool,
    /// journald's native socket.
    #[serde(default = "default_journald_socket")]
    pub journald_socket: PathBuf,
    /// Once sealing is set up (`clockguard audit --setup-keys`), a seal record ends a
    /// sealing epoch this often (s), and at every stop and rotation; the key then evolves.
    /// Whoever takes the host can rewrite at most the records since the last seal.
    #[serde(default = "default_seal_interval_s")]
    pub seal_interval_s: u64,
}

fn default_seal_interval_s() -> u64 {
    // journald's Forward Secure Sealing default.
    900
}

fn default_journald_socket() -> PathBuf {
    PathBuf::from("/run/systemd/journal/socket")
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
            journald: true,
            journald_socket: default_journald_socket(),
            seal_interval_s: default_seal_interval_s(),
        }
    }
}

impl NtpConfig {
    pub(super) fn validate(&self) -> Result<()> {
        // RFC 5905's longest is 2^17 s. Below 16 s (chrony goes down to 2^-6 s) only for a
        // server on a network one runs: public servers answer faster polls with a RATE kiss,
        // and clockguard's own server rate-limits below 8 s (rate_limit_interval = 3).
        if !(0..=17).contains(&self.minpoll) || !(self.minpoll..=17).contains(&self.maxpoll) {
            bail!(
                "ntp: minpoll = {} and maxpoll = {} must satisfy 0 <= minpoll <= maxpoll <= 17",
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
        for server in &self.nts_servers {
            split_host_port_or(server, crate::ntp::nts::KE_PORT)
                .map_err(|why| anyhow::anyhow!("ntp: NTS server {server:?}: {why}"))?;
        }
        if self.require_nts && !(self.servers.is_empty() && self.pools.is_empty()) {
            bail!(
                "ntp.require_nts = true, but servers {:?} and pools {:?} would be polled \
                 without authentication: move them to nts_servers, or drop require_nts",
                self.servers,
                self.pools
            );
        }
        match (&self.nts_ke, &self.nts_cert, &self.nts_key) {
            (Some(ke), Some(_), Some(_)) => {
                ke.parse::<std::net::SocketAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "ntp.nts_ke = {ke:?} is not an ADDRESS:PORT (e.g. \"0.0.0.0:4460\")"
                    )
                })?;
                if self.serve.is_none() {
                    bail!(
                        "ntp.nts_ke = {ke:?}, but ntp.serve is unset: NTS-KE hands out cookies \
                         for the NTP server, so set serve (e.g. \"0.0.0.0:123\")"
                    );
                }
            }
            (Some(ke), _, _) => bail!(
                "ntp.nts_ke = {ke:?} needs both nts_cert and nts_key (PEM files: the \
                 certificate chain and its private key)"
            ),
            (None, None, None) => {}
            (None, _, _) => bail!("ntp.nts_cert and nts_key are set, but nts_ke is not"),
        }
        if !(60..=YEAR_S).contains(&self.nts_key_rotation_s) {
            bail!(
                "ntp.nts_key_rotation_s = {} is out of range (60 s to {YEAR_S} s, a year; \
                 chrony's default is 604800, one week)",
                self.nts_key_rotation_s
            );
        }
        if self.require_nts && self.nts_servers.is_empty() {
            bail!("ntp.require_nts = true, but nts_servers is empty: no source would be polled");
        }
        Ok(())
    }

    /// Whether any source is configured (plain or NTS): the NTP client runs.
    pub fn has_sources(&self) -> bool {
        !(self.servers.is_empty() && self.pools.is_empty() && self.nts_servers.is_empty())
    }
}

/// "host", "host:port", "1.2.3.4", "1.2.3.4:123", "[::1]" or "[::1]:123" → (host, port).
pub fn split_host_port(text: &str) -> Result<(String, u16), String> {
    split_host_port_or(text, 123)
}

/// As [`split_host_port`], with `default_port` where the text gives none.
pub fn split_host_port_or(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty server name".into());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("missing ']' after an IPv6 address")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().map_err(|_| format!("bad port {port:?}"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected {after:?} after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| format!("bad port {port:?}"))?,
        ),
        None => (text, default_port),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if host.is_empty() || !host.chars().all(valid) {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok((host.to_string(), port))
}
