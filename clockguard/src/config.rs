//! Reading the configuration: the file given, the one in /etc, or the one compiled in. What
//! it may say, and the checks, are clockguard_core::config.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
pub use clockguard_core::config::*;

/// The configuration compiled into the binary: what `clockguard run` uses when no file is
/// given and /etc/clockguard/clockguard.toml does not exist.
pub const EMBEDDED_DEFAULT: &str = include_str!("../clockguard.toml");
pub const DEFAULT_PATH: &str = "/etc/clockguard/clockguard.toml";

/// The file given, else /etc/clockguard/clockguard.toml when it exists, else the embedded
/// default. Returns the config and where it came from.
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

/// The daemon's log filter: `log_level`. (The parser's message repeats its cause, so the
/// cause is not chained again.)
pub fn log_filter(config: &Config) -> Result<tracing_subscriber::EnvFilter> {
    tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|err| anyhow::anyhow!("bad log_level {:?}: {err}", config.log_level))
}

/// What the daemon checks at start beyond the file's own rules (the log filter, the
/// control socket's group, where the track files go), without starting anything: with
/// `Config::parse`, what `run --check-config` needs to promise that `run` will start.
pub fn check_startable(config: &Config) -> Result<()> {
    log_filter(config)?;
    if let Some(group) = &config.control.read_group {
        crate::control::resolve_group(group)?;
    }
    for service in &config.services {
        if let Some(path) = &service.track_file {
            crate::service_io::check_track_file(&service.name, path)?;
        }
    }
    Ok(())
}

/// Where the daemon's configuration comes from: the file (or the default) and the command
/// line's overrides, so a reload (SIGHUP, `clockguard reload`) reads it as `run` did.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<(Config, String)> {
        let (mut config, origin) = load(self.path.as_deref())?;
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir.clone_from(dir);
        }
        if let Some(dir) = &self.runtime_dir {
            config.runtime_dir.clone_from(dir);
        }
        Ok((config, origin))
    }
}
