//! The TOML configuration (/etc/clockguard/clockguard.toml). Unknown keys are refused with
//! their line, so a typo never silently turns a setting off.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The configuration compiled into the binary: what `clockguard run` uses when no file is
/// given and /etc/clockguard/clockguard.toml does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("../clockguard.toml");
pub const DEFAULT_PATH: &str = "/etc/clockguard/clockguard.toml";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
    #[serde(default)]
    pub audit: AuditConfig,
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
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            journal_readonly: false,
            max_journal_bytes: default_max_journal_bytes(),
            keep_journals: default_keep_journals(),
            disabled_hooks: Vec::new(),
            fallback_detector: true,
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

impl Config {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|err| anyhow::anyhow!("{origin}: {}", err.to_string().trim_end()))?;
        config.validate().with_context(|| origin.to_string())?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.audit.max_journal_bytes < 4096 {
            bail!(
                "audit.max_journal_bytes = {} is too small (at least 4096)",
                self.audit.max_journal_bytes
            );
        }
        Ok(())
    }

    /// The file given, else /etc/clockguard/clockguard.toml when it exists, else the
    /// embedded default. Returns the config and where it came from.
    pub fn load(path: Option<&Path>) -> Result<(Config, String)> {
        let path = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read config {}", p.display()))?;
                let origin = p.display().to_string();
                Ok((Config::parse(&text, &origin)?, origin))
            }
            None => Ok((
                Config::parse(EMBEDDED_DEFAULT, "embedded default config")?,
                "embedded default".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert_eq!(c.mode, Mode::Observe);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/clockguard"));
        assert!(!c.audit.journal_readonly);
        assert!(c.audit.fallback_detector);
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
    fn bad_mode_is_refused() {
        let err = Config::parse("mode = \"enforce\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("enforce"), "{err}");
    }

    #[test]
    fn tiny_journal_limit_is_refused() {
        let err = Config::parse("[audit]\nmax_journal_bytes = 10\n", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("max_journal_bytes"));
    }
}
