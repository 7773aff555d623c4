//! The TOML configuration (/etc/clockguard/clockguard.toml), parsed and checked. Unknown
//! keys are refused with their line, so a typo never silently turns a setting off. Reading
//! the file is the daemon's (clockguard/src/config.rs).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

mod reload;
mod sections;
mod service;

pub use reload::*;
pub use sections::*;
pub use service::*;

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
    #[serde(default)]
    pub bound: BoundConfig,
    /// `[[service]]` tables: services whose deaths after a time jump drive the failover.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
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
        let config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|err| {
                // The key the error is about ("guard.max_slew_ppm"); "." is the top level,
                // where an error (a syntax error, an unknown table) has no key to name.
                let key = err.path().to_string();
                let key = if key == "." {
                    String::new()
                } else {
                    format!("{key}: ")
                };
                let err = err.into_inner();
                // One line: a syntax error comes as "invalid array\nexpected `]`".
                let message = err
                    .message()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                match err.span() {
                    Some(span) => {
                        let (line, column) = line_and_column(text, span.start);
                        anyhow::anyhow!("{origin}: line {line}, column {column}: {key}{message}")
                    }
                    None => anyhow::anyhow!("{origin}: {key}{message}"),
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
        if !(1..=86_400).contains(&self.audit.seal_interval_s) {
            bail!(
                "audit.seal_interval_s = {} is out of range (1 to 86400 s)",
                self.audit.seal_interval_s
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
        self.bound.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const EMBEDDED_DEFAULT: &str = include_str!("../../../clockguard.toml");

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
    fn the_bound_section_has_defaults_and_bad_values_name_their_line() {
        let c = Config::parse("", "t.toml").unwrap();
        assert!(c.bound.enabled);
        assert_eq!(c.bound.path, PathBuf::from("/var/run/clockbound/shm0"));
        assert_eq!(
            (c.bound.drift_floor_ppb, c.bound.void_after_s),
            (1_000, 1_000)
        );
        assert_eq!(c.bound, Config::parse(EMBEDDED_DEFAULT, "e").unwrap().bound);
        let bad = |text: &str| format!("{:#}", Config::parse(text, "t.toml").unwrap_err());
        let err = bad("[bound]\npath = \"shm0\"\n");
        assert!(err.contains("line 2") && err.contains("absolute"), "{err}");
        let err = bad("[bound]\nenabled = true\nerror_sigmas = 0.5\n");
        assert!(err.contains("line 3") && err.contains("1 to 10"), "{err}");
        let err = bad("[bound]\nvoid_after_s = 5\n");
        assert!(err.contains("void_after_s"), "{err}");
        let err = bad("[bound]\ndrift_floor_ppb = -1\n");
        assert!(err.contains("line 2"), "{err}");
        // A restart applies it, as every key but the guard policy.
        let on = Config::parse("", "t").unwrap();
        let off = Config::parse("[bound]\nenabled = false\n", "t").unwrap();
        assert_eq!(
            ReloadPlan::between(&on, &off).needs_restart,
            ["bound.enabled"]
        );
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
        assert_eq!((dovecot.jump_window_s, dovecot.jump_min_ms), (60.0, 100.0));
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
        let err = bad("[[service]]\nname = \"a\"\ncomm = [\"x\"]\njump_min_ms = -1\n");
        assert!(err.contains("jump_min_ms = -1 is out of range"), "{err}");
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
        // A LAN server one runs may be polled every second.
        let fast = Config::parse("[ntp]\nminpoll = 0\nmaxpoll = 2\n", "t").unwrap();
        assert!(!fast.ntp.has_sources());
        let nts = Config::parse(
            "[ntp]\nnts_servers = [\"time.example\", \"10.0.0.2:4461\"]\nrequire_nts = true\n",
            "t",
        )
        .unwrap();
        assert!(nts.ntp.has_sources() && nts.ntp.require_nts);
        assert_eq!(
            split_host_port_or(&nts.ntp.nts_servers[0], 4460),
            Ok(("time.example".into(), 4460))
        );
        assert_eq!((fast.ntp.minpoll, fast.ntp.maxpoll), (0, 2));
        let nts_server = Config::parse(
            "[ntp]\nserve = \"0.0.0.0:123\"\nnts_ke = \"0.0.0.0:4460\"\n\
             nts_cert = \"/etc/clockguard/nts.pem\"\nnts_key = \"/etc/clockguard/nts.key\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(nts_server.ntp.nts_key_rotation_s, 604_800);
        for (text, says) in [
            ("[ntp]\nminpoll = -1\n", "minpoll = -1"),
            ("[ntp]\nmaxpoll = 18\n", "maxpoll = 18"),
            ("[ntp]\nminpoll = 8\nmaxpoll = 6\n", "maxpoll = 6"),
            ("[ntp]\nserve = \"123\"\n", "ntp.serve"),
            ("[ntp]\nlocal_stratum = 16\n", "local_stratum = 16"),
            ("[ntp]\nservers = [\"bad name\"]\n", "not a host name"),
            ("[ntp]\nservers = [\"host:99999\"]\n", "bad port"),
            ("[ntp]\nrate_limit_burst = 0\n", "rate_limit_burst = 0"),
            ("[ntp]\npool_size = 0\n", "pool_size = 0"),
            (
                "[ntp]\nnts_servers = [\"nts:x\"]\n",
                "NTS server \"nts:x\": bad port",
            ),
            (
                "[ntp]\nservers = [\"10.0.0.1\"]\nnts_servers = [\"nts\"]\nrequire_nts = true\n",
                "would be polled without authentication",
            ),
            ("[ntp]\nrequire_nts = true\n", "nts_servers is empty"),
            (
                "[ntp]\nnts_ke = \"0.0.0.0:4460\"\nserve = \"0.0.0.0:123\"\nnts_cert = \"c.pem\"\n",
                "needs both nts_cert and nts_key",
            ),
            (
                "[ntp]\nnts_ke = \"0.0.0.0:4460\"\nnts_cert = \"c.pem\"\nnts_key = \"k.pem\"\n",
                "ntp.serve is unset",
            ),
            (
                "[ntp]\nnts_ke = \"4460\"\nserve = \"0.0.0.0:123\"\nnts_cert = \"c\"\nnts_key = \"k\"\n",
                "is not an ADDRESS:PORT",
            ),
            ("[ntp]\nnts_key = \"k.pem\"\n", "nts_ke is not"),
            ("[ntp]\nnts_key_rotation_s = 10\n", "out of range"),
            (
                "[ntp]\nnts_key_rotation_s = 100000000000\n",
                "60 s to 31536000 s",
            ),
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
    fn seal_interval_out_of_range_is_refused() {
        for bad in ["0", "86401"] {
            let text = format!("[audit]\nseal_interval_s = {bad}\n");
            let err = format!("{:#}", Config::parse(&text, "t.toml").unwrap_err());
            assert!(
                err.contains("seal_interval_s") && err.contains(bad),
                "{err}"
            );
        }
        let c = Config::parse("[audit]\nseal_interval_s = 2\n", "t.toml").unwrap();
        assert_eq!(c.audit.seal_interval_s, 2);
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
                "t.toml: line 2, column 11: ntp.minpoll: invalid type",
            ),
            (
                "mode = \"observe\"\n[control]\nread_grup = \"adm\"\n",
                "t.toml: line 3, column 1: control.read_grup: unknown field `read_grup`",
            ),
            (
                "mode = \"guard\"\n[guard]\nmax_slew_ppm = \"fast\"\n",
                "t.toml: line 3, column 16: guard.max_slew_ppm: invalid type",
            ),
            (
                "mode = \"guard\"\n[guard]\nallow = [\"/usr/bin/date\"\nx = 1\n",
                "t.toml: line 4, column 1: invalid array: expected `]`",
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
