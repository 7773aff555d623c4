//! clockguard: an eBPF clock guard. One binary: the daemon (`run`) and its CLI.
//!
//! No unsafe code here: every syscall nix does not wrap, and every other unsafe block, is
//! in clockguard-sys (clockguard/sys), with its safety argument.

#![forbid(unsafe_code)]

mod bpf;
mod btf;
mod check;
mod cli;
use cli::{
    ask, audit, audit_setup_keys, audit_verify, reload, run_check, service_check, stdout_error,
    text::{audit_header, audit_row, now_text, sources_text, status_text, tracking_text},
    StdoutClosed,
};
mod clock;
mod config;
mod control;
use clockguard_core::control_protocol;
mod daemon;
mod docs;
mod enrich;
mod fallback;
#[cfg(test)]
mod golden;
mod guard;
mod journal;
mod journald;
mod kmsg;
mod ksyms;
mod lsm;
mod metrics;
mod ntp;
mod pinning;
mod record;
mod service_io;
use clockguard_core::services;
mod slew;
mod timers;
mod vmclock;
mod vmfacts;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::{
    config::{Config, ConfigSource},
    record::Record,
};

#[derive(Parser)]
#[command(
    name = "clockguard",
    version,
    about = "Audits every change to the system clock, and who made it",
    long_about = "Audits every change to the system clock, and who made it.\n\n\
        clockguard sees every change to the system clock in the kernel (eBPF) and journals \
        who made it and how far the clock moved. In guard mode it refuses clock steps with \
        the BPF LSM (a refused step from a time agent is slewed in instead), disciplines the \
        clock from NTP by slewing only, publishes a clock error bound in ClockBound's format, \
        watches timers for VM stalls, and drives keepalived failover when a time jump kills \
        a tracked service.\n\n\
        `clockguard run` is the daemon (as root; the systemd unit clockguard.service runs \
        it); the other commands ask the running daemon over its control socket, or read its \
        journal. Configuration: /etc/clockguard/clockguard.toml, see clockguard.toml(5)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (as root): attach the kernel hooks, journal every clock change.
    Run {
        /// Configuration file [default: /etc/clockguard/clockguard.toml if it exists, else
        /// the embedded default].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides the configuration's `mode`: observe (audit only) or guard (refuse
        /// clock steps in the kernel).
        #[arg(long, value_enum)]
        mode: Option<config::Mode>,
        /// Where the journal is kept [default: /var/lib/clockguard].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Where the control socket is [default: /run/clockguard].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
        /// Only read and check the configuration, say whether it is valid (exit status 0)
        /// or where it is not (1), and exit, as `keepalived --config-test` and `sshd -t` do.
        /// The package's upgrade runs it before restarting the daemon.
        #[arg(long)]
        check_config: bool,
    },
    /// Print the journal (works without the daemon).
    Audit {
        /// Only records at or after T: RFC 3339 (2026-11-22T10:00:00Z) or an age (10m, 2h).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Check the hash chain instead of printing: exit status 2 when a record was
        /// edited, removed or reordered (each is named by file and line).
        #[arg(long, conflicts_with_all = ["since", "json"])]
        verify: bool,
        /// With --verify: also check the seals with the verification key that
        /// --setup-keys printed (exit status 2 names the first record not as written;
        /// records after the last seal are reported as unsealed, not as proven).
        #[arg(long, value_name = "KEY", requires = "verify")]
        verify_key: Option<String>,
        /// Set up forward-secure sealing of the journal: writes a new sealing key to the
        /// state directory and prints the verification key, to keep off this machine (as
        /// `journalctl --setup-keys`). The daemon seals from its next start.
        #[arg(long, conflicts_with_all = ["since", "json", "verify"])]
        setup_keys: bool,
        /// With --setup-keys: replace an existing sealing key.
        #[arg(long, requires = "setup_keys")]
        force: bool,
        /// Where the journal is [default: state_dir of the config].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The running daemon's runtime directory, whose journal head --verify compares the
        /// files with [default: runtime_dir of the config].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
        /// The configuration file whose directories to use [default:
        /// /etc/clockguard/clockguard.toml if it exists, else the embedded default].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Recent clock events from the daemon; with --follow, stream new ones as they happen.
    Events {
        /// Stay connected and print each new event as it happens.
        #[arg(long, short)]
        follow: bool,
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The daemon's hooks (attached or not, and why), mode and counters.
    Status {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The NTP discipline: reference, offset, frequency (chronyc tracking).
    Tracking {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The clock error bound now: earliest and latest true time can be, the status
    /// ClockBound's readers see, and what the bound is made of.
    Now {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The NTP sources: state, stratum, poll, reach, offset (chronyc sources).
    Sources {
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Is this host's time setup sound? PASS/WARN/FAIL per finding, with the remedy;
    /// exit status 2 when anything FAILs (to gate deployments).
    Check {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Reload the daemon's configuration (as SIGHUP does) and say what changed: the guard
    /// policy takes effect at once, other changes at the next restart. An invalid file is
    /// refused with its line, and the configuration in use is kept. Needs root.
    Reload {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// For keepalived's track_script: exit status 0 while the tracked service NAME is not
    /// in fault (healthy, or not checked yet), 1 when it is or the daemon does not answer.
    ServiceCheck {
        /// The service's `name` in the configuration.
        name: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Write the man pages and shell completions into DIR (for packaging: `cargo xtask
    /// package`), and list the files written.
    #[command(hide = true)]
    GenerateDocs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Where to reach the daemon: its runtime dir, from the command line or the config.
#[derive(clap::Args)]
struct DaemonArgs {
    /// The daemon's runtime directory [default: runtime_dir of the config].
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    /// The configuration file whose runtime_dir to use [default:
    /// /etc/clockguard/clockguard.toml if it exists, else the embedded default].
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err)
            if err
                .chain()
                .any(<dyn std::error::Error + 'static>::is::<StdoutClosed>) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("clockguard: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The directories from the config, overridden by the command line.
fn dirs(config: Option<&Path>, state: Option<PathBuf>, runtime: Option<PathBuf>) -> Result<Config> {
    let source = ConfigSource {
        path: config.map(Path::to_path_buf),
        mode: None,
        state_dir: state,
        runtime_dir: runtime,
    };
    Ok(source.load()?.0)
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            mode,
            state_dir,
            runtime_dir,
            check_config,
        } => {
            let source = ConfigSource {
                path: config,
                mode,
                state_dir,
                runtime_dir,
            };
            let (cfg, origin) = source.load()?;
            if check_config {
                config::check_startable(&cfg).with_context(|| origin.clone())?;
                println!(
                    "{origin}: the configuration is valid (mode {})",
                    cfg.mode.as_str()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
                Ok(filter) => filter,
                Err(_) => config::log_filter(&cfg)?,
            };
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(io::stderr)
                .init();
            runtime()?.block_on(daemon::run(cfg, origin, source))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            since,
            json,
            verify,
            verify_key,
            setup_keys,
            force,
            state_dir,
            runtime_dir,
            config,
        } => {
            let cfg = dirs(config.as_deref(), state_dir, runtime_dir)?;
            if setup_keys {
                audit_setup_keys(&cfg.state_dir, force)
            } else if verify {
                let seed = verify_key
                    .as_deref()
                    .map(clockguard_core::seal::parse_verification_key)
                    .transpose()
                    .context("--verify-key")?;
                audit_verify(&cfg.state_dir, &cfg.runtime_dir, seed)
            } else {
                audit(&cfg.state_dir, since.as_deref(), json)
            }
        }
        Command::Events {
            follow,
            json,
            daemon,
        } => {
            let cfg = dirs(daemon.config.as_deref(), None, daemon.runtime_dir)?;
            let request = json!({"cmd": "events", "follow": follow});
            let mut out = io::stdout().lock();
            if !json {
                writeln!(out, "{}", audit_header()).map_err(stdout_error)?;
            }
            runtime()?.block_on(control::request(&cfg.runtime_dir, &request, |line| {
                let written = if json {
                    writeln!(out, "{line}")
                } else {
                    match serde_json::from_str::<Record>(line) {
                        Ok(r) => writeln!(out, "{}", audit_row(&r)),
                        Err(_) => writeln!(out, "# {line}"),
                    }
                };
                written.and_then(|()| out.flush()).map_err(stdout_error)
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, daemon } => ask(&daemon, "status", json, status_text),
        Command::Tracking { json, daemon } => ask(&daemon, "tracking", json, tracking_text),
        Command::Sources { json, daemon } => ask(&daemon, "sources", json, sources_text),
        Command::Now { json, daemon } => ask(&daemon, "now", json, now_text),
        Command::Check { json, daemon } => run_check(&daemon, json),
        Command::ServiceCheck { name, daemon } => service_check(&daemon, &name),
        Command::Reload { daemon } => reload(&daemon),
        Command::GenerateDocs { out } => {
            use clap::CommandFactory;
            for file in docs::write_all(&Cli::command(), &out)? {
                writeln!(io::stdout(), "{}", out.join(file).display()).map_err(stdout_error)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// What the package ships: a page per visible command, the configuration's page, and
    /// completions that offer the commands but not the hidden generate-docs.
    #[test]
    fn docs_cover_every_command_and_hide_the_generator() {
        use clap::CommandFactory;
        let out = tempfile::tempdir().unwrap();
        let written = docs::write_all(&Cli::command(), out.path()).unwrap();
        for file in [
            "man/clockguard.8",
            "man/clockguard-run.8",
            "man/clockguard-service-check.8",
            "man/clockguard.toml.5",
            "completions/_clockguard",
            "completions/clockguard.fish",
        ] {
            assert!(
                written.iter().any(|w| w == file),
                "{file} not in {written:?}"
            );
        }
        assert!(
            written.iter().all(|w| !w.contains("generate")),
            "{written:?}"
        );
        let main_page = std::fs::read_to_string(out.path().join("man/clockguard.8")).unwrap();
        assert!(
            main_page.contains("clockguard\\-service\\-check(8)"),
            "{main_page}"
        );
        let bash = std::fs::read_to_string(out.path().join("completions/clockguard")).unwrap();
        assert!(bash.contains("service-check") && bash.contains("--runtime-dir"));
        assert!(
            !bash.contains("generate-docs"),
            "the hidden command is offered"
        );
    }
}
