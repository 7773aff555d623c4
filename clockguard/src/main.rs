//! clockguard: an eBPF clock guard. One binary: the daemon (`run`) and its CLI.
//!
//! No unsafe code here: every syscall nix does not wrap, and every other unsafe block, is
//! in clockguard-sys (clockguard/sys), with its safety argument.

#![forbid(unsafe_code)]

mod bpf;
mod btf;
mod check;
mod clock;
mod config;
mod control;
use clockguard_core::control_protocol;
mod daemon;
mod enrich;
mod fallback;
#[cfg(test)]
mod golden;
mod guard;
mod journal;
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
mod vmfacts;

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use clockguard_core::status::{
    ServiceState, ServiceStatus, ServicesAnswer, SourcesAnswer, Status, TimersStatus, Tracking,
    VmStatus,
};

use crate::{
    config::{Config, ConfigSource},
    record::Record,
};

#[derive(Parser)]
#[command(
    name = "clockguard",
    version,
    about = "Audits every change to the system clock, and who made it"
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
        #[arg(long, value_enum)]
        mode: Option<config::Mode>,
        /// Where the journal is kept [default: /var/lib/clockguard].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Where the control socket is [default: /run/clockguard].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
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
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The running daemon's runtime directory, whose journal head --verify compares the
        /// files with [default: runtime_dir of the config].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Recent clock events from the daemon; with --follow, stream new ones as they happen.
    Events {
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The daemon's hooks (attached or not, and why), mode and counters.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The NTP discipline: reference, offset, frequency (chronyc tracking).
    Tracking {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// The NTP sources: state, stratum, poll, reach, offset (chronyc sources).
    Sources {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Is this host's time setup sound? PASS/WARN/FAIL per finding, with the remedy;
    /// exit status 2 when anything FAILs (to gate deployments).
    Check {
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
}

/// Where to reach the daemon: its runtime dir, from the command line or the config.
#[derive(clap::Args)]
struct DaemonArgs {
    /// The daemon's runtime directory [default: runtime_dir of the config].
    #[arg(long)]
    runtime_dir: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `println!` for the CLI's output: a write error goes back to the caller (`?`), and a reader
/// that went away (`clockguard status | head -3`) ends the command quietly in `main`, where
/// `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(io::stdout(), $($arg)*).map_err(stdout_error)?
    };
}

/// Whoever read our stdout closed it: not an error of ours.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

fn stdout_error(err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(err).context("cannot write to stdout")
    }
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
        } => {
            let source = ConfigSource {
                path: config,
                mode,
                state_dir,
                runtime_dir,
            };
            let (cfg, origin) = source.load()?;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log_level))
                .with_context(|| format!("bad log_level {:?}", cfg.log_level))?;
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
            state_dir,
            runtime_dir,
            config,
        } => {
            let cfg = dirs(config.as_deref(), state_dir, runtime_dir)?;
            if verify {
                audit_verify(&cfg.state_dir, &cfg.runtime_dir)
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
        Command::Check { json, daemon } => run_check(&daemon, json),
        Command::ServiceCheck { name, daemon } => service_check(&daemon, &name),
        Command::Reload { daemon } => reload(&daemon),
    }
}

fn reload(daemon: &DaemonArgs) -> Result<ExitCode> {
    let cfg = dirs(daemon.config.as_deref(), None, daemon.runtime_dir.clone())?;
    let answer = query(&cfg.runtime_dir, "reload")?;
    let list = |key: &str| {
        let keys: Vec<&str> = answer[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if keys.is_empty() {
            "nothing".to_string()
        } else {
            keys.join(", ")
        }
    };
    outln!(
        "reloaded {}: applied {}; at the next restart: {}",
        answer["config"].as_str().unwrap_or("?"),
        list("applied"),
        list("needs_restart")
    );
    Ok(ExitCode::SUCCESS)
}

/// The daemon's one-object answer to `cmd`.
fn query(runtime_dir: &Path, cmd: &str) -> Result<Value> {
    let mut answer = None;
    runtime()?.block_on(control::request(
        runtime_dir,
        &json!({ "cmd": cmd }),
        |line| {
            answer = Some(serde_json::from_str::<Value>(line)?);
            Ok(())
        },
    ))?;
    answer.with_context(|| format!("the daemon closed the connection without a {cmd} answer"))
}

/// The daemon's answer to `cmd`, read into its type.
fn query_as<T: serde::de::DeserializeOwned>(runtime_dir: &Path, cmd: &str) -> Result<T> {
    typed_answer(cmd, query(runtime_dir, cmd)?)
}

/// A daemon answer read into its type; one that does not read comes, most likely, from a
/// daemon of another version.
fn typed_answer<T: serde::de::DeserializeOwned>(cmd: &str, answer: Value) -> Result<T> {
    serde_json::from_value(answer).with_context(|| {
        format!(
            "the daemon's {cmd} answer does not read as this clockguard ({}) expects: is the \
             running daemon another version? Restart it",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// `clockguard check`: gathers the facts, judges them, prints one line per finding.
fn run_check(daemon: &DaemonArgs, json: bool) -> Result<ExitCode> {
    let (mut cfg, _) = config::load(daemon.config.as_deref())?;
    if let Some(r) = &daemon.runtime_dir {
        cfg.runtime_dir.clone_from(r);
    }
    let (status, daemon_error) = match query_as::<Status>(&cfg.runtime_dir, "status") {
        Ok(status) => (Some(status), None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    // Only a running NTP service answers `sources`.
    let sources = status
        .as_ref()
        .filter(|s| s.ntp.running)
        .and_then(|_| query_as(&cfg.runtime_dir, "sources").ok());
    let facts = check::Facts {
        config: &cfg,
        time_services: guard::other_time_services(Path::new("/"), Path::new("/proc")),
        adjtime: std::fs::read_to_string("/etc/adjtime").ok(),
        // The daemon's answer when it runs; else found out here, without mounting anything.
        lsms: status
            .as_ref()
            .map(|s| s.lsms.clone())
            .unwrap_or_else(|| lsm::probe(false)),
        status,
        sources,
        daemon_error,
    };
    let findings = check::run(&facts);
    let overall = check::overall(&findings);
    if json {
        outln!("{}", json!({ "overall": overall, "findings": findings }));
    } else {
        for f in &findings {
            outln!("{:<4}  {:<17} {}", f.verdict.as_str(), f.check, f.message);
            if let Some(remedy) = &f.remedy {
                outln!("{:<4}  {:<17} remedy: {remedy}", "", "");
            }
        }
        outln!("overall: {}", overall.as_str());
    }
    Ok(match overall {
        check::Verdict::Fail => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

/// `clockguard service-check NAME`: one line, and the exit status keepalived reads.
fn service_check(daemon: &DaemonArgs, name: &str) -> Result<ExitCode> {
    let cfg = dirs(daemon.config.as_deref(), None, daemon.runtime_dir.clone())?;
    let services = query_as::<ServicesAnswer>(&cfg.runtime_dir, "services")?.services;
    let Some(service) = services.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "no tracked service {name:?} (the daemon tracks: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    outln!("{}", service_line(service));
    Ok(match service.state {
        ServiceState::Fault => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// "dovecot: fault (died_from_time_jump, 3.2 s, hold 6.8 s), 7 processes, last: ..."
fn service_line(s: &ServiceStatus) -> String {
    let why = match s.state {
        ServiceState::Fault => format!(
            " ({}, for {:.1} s{})",
            s.reason.as_deref().unwrap_or("?"),
            s.fault_for_s.unwrap_or(0.0),
            match s.hold_left_s {
                Some(h) if h > 0.0 => format!(", held {h:.1} s more"),
                _ => String::new(),
            }
        ),
        _ => String::new(),
    };
    let last = s
        .last_event
        .as_ref()
        .map(|e| format!("; last: {} ({:.0} s ago)", e.summary, e.age_s))
        .unwrap_or_default();
    format!(
        "{}: {}{why}, {} processes, check {}: {}{last}",
        s.name,
        s.state.as_str(),
        s.processes,
        s.check.target,
        s.check
            .last
            .as_ref()
            .map_or("not yet", |last| last.detail.as_str()),
    )
}

/// One request with a one-object answer, printed as JSON or by `print`.
/// `--json` prints the daemon's answer as it came; otherwise it is read into its type and
/// printed as `text` makes it.
fn ask<T: serde::de::DeserializeOwned>(
    daemon: &DaemonArgs,
    cmd: &str,
    json: bool,
    text: fn(&T) -> String,
) -> Result<ExitCode> {
    let cfg = dirs(daemon.config.as_deref(), None, daemon.runtime_dir.clone())?;
    let answer = query(&cfg.runtime_dir, cmd)?;
    if json {
        outln!("{answer}");
    } else {
        outln!("{}", text(&typed_answer(cmd, answer)?));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses --since: an RFC 3339 time, or an age ("10m", "2h 30m") before now.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = text.trim_start_matches('-');
    match humantime::parse_duration(age) {
        Ok(d) => Ok(chrono::Utc::now() - chrono::Duration::from_std(d)?),
        Err(_) => bail!(
            "--since {text:?}: expected an RFC 3339 time (2026-11-22T10:00:00Z) or an age (10m, 2h)"
        ),
    }
}

fn require_journal(state_dir: &Path) -> Result<()> {
    if journal::journal_files(state_dir).is_empty() {
        bail!(
            "no journal in {} (has `clockguard run` run with this state dir?)",
            state_dir.display()
        );
    }
    Ok(())
}

/// `audit --verify`: the hash chain of the files, then their end against the head of the
/// daemon that writes them (removing the last records leaves a chain that is intact).
fn audit_verify(state_dir: &Path, runtime_dir: &Path) -> Result<ExitCode> {
    require_journal(state_dir)?;
    let found = verify_against_daemon(state_dir, runtime_dir)?;
    for note in &found.notes {
        outln!("note: {note}");
    }
    for failure in &found.failures {
        outln!("FAIL: {failure}");
    }
    let span = match &found.last {
        Some((seq, hash)) => format!(", the last seq {seq} (hash {hash})"),
        None => String::new(),
    };
    outln!(
        "journal {}: {} file(s), {} records ({} chained){span}: {}",
        state_dir.display(),
        found.files,
        found.records,
        found.chained,
        if found.failures.is_empty() {
            "the hash chain is intact".to_string()
        } else {
            format!("{} break(s) in the hash chain", found.failures.len())
        }
    );
    Ok(if found.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Reads the journal between two looks at the running daemon's head. The daemon appends to
/// the file before it moves its head, so when the head did not move meanwhile, the files
/// must end exactly there; when it did (a record was written while we read), read again.
fn verify_against_daemon(state_dir: &Path, runtime_dir: &Path) -> Result<journal::Verification> {
    const ATTEMPTS: usize = 5;
    let head = |status: &Status| (status.journal.head_seq, status.journal.head_hash.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = query_as::<Status>(runtime_dir, "status").ok();
        let mut found = journal::verify(state_dir)?;
        let Some(before) = before else {
            found.notes.push(format!(
                "no daemon answers in {}: the end of the journal is not compared with its head",
                runtime_dir.display()
            ));
            return Ok(found);
        };
        let after = query_as::<Status>(runtime_dir, "status").ok();
        if after
            .as_ref()
            .is_some_and(|after| head(after) == head(&before))
        {
            compare_with_daemon_head(state_dir, &before, &mut found);
            return Ok(found);
        }
        if attempt == ATTEMPTS {
            found.notes.push(format!(
                "the daemon wrote records while the journal was read, {ATTEMPTS} times: the \
                 end of the journal is not compared with its head"
            ));
            return Ok(found);
        }
    }
}

fn compare_with_daemon_head(state_dir: &Path, status: &Status, found: &mut journal::Verification) {
    let same_dir = std::fs::canonicalize(&status.state_dir)
        .is_ok_and(|d| std::fs::canonicalize(state_dir).is_ok_and(|s| s == d));
    let head_seq = status.journal.head_seq;
    let head_hash = status.journal.head_hash.as_str();
    if !same_dir {
        found.notes.push(
            "the running daemon writes another journal: the end of this one is not compared".into(),
        );
        return;
    }
    let last_seq = found.last.as_ref().map_or(0, |(seq, _)| *seq);
    let last_hash = found.last.as_ref().map(|(_, hash)| hash.as_str());
    if last_seq < head_seq {
        found.failures.push(format!(
            "the journal ends at seq {last_seq}, but the daemon has written up to seq \
             {head_seq}: the last records were removed"
        ));
    } else if last_seq > head_seq {
        found.failures.push(format!(
            "the journal goes on to seq {last_seq}, but the daemon wrote up to seq {head_seq}: \
             the records after it were not written by the daemon"
        ));
    } else if head_seq > 0 && last_hash != Some(head_hash) {
        found.failures.push(format!(
            "the last record (seq {last_seq}) is not the one the daemon wrote (hash {head_hash})"
        ));
    } else {
        found.notes.push(format!(
            "the journal ends at the daemon's head, seq {head_seq}"
        ));
    }
}

fn audit(state_dir: &Path, since: Option<&str>, json: bool) -> Result<ExitCode> {
    let since = since.map(parse_since).transpose()?;
    require_journal(state_dir)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if !json {
        writeln!(out, "{}", audit_header()).map_err(stdout_error)?;
    }
    let mut write_error = None;
    let problems = journal::read_records(state_dir, |r| {
        if write_error.is_some() {
            return;
        }
        if let Some(since) = since {
            match chrono::DateTime::parse_from_rfc3339(&r.time) {
                Ok(t) if t < since => return,
                _ => {}
            }
        }
        let result = if json {
            serde_json::to_string(&r)
                .map_err(io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            writeln!(out, "{}", audit_row(&r))
        };
        if let Err(err) = result {
            write_error = Some(err);
        }
    })?;
    let flushed = out.flush();
    for problem in &problems {
        eprintln!("clockguard: warning: {problem}");
    }
    // A closed pipe (`| head`) ends the command quietly (main).
    match write_error.map_or(flushed, Err) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(stdout_error(err)),
    }
}

fn audit_header() -> String {
    format!(
        "{:<30} {:<8} {:<13} {:<9} {:>15} {:<7} {:>7} {:<15} {}",
        "TIME", "SOURCE", "SYSCALL", "KIND", "DELTA", "RESULT", "PID", "COMM", "EXE / UNIT"
    )
}

fn format_delta(delta_ns: Option<i64>) -> String {
    match delta_ns {
        Some(d) => format!("{:+.6}s", d as f64 / 1e9),
        None => "-".into(),
    }
}

fn audit_row(r: &Record) -> String {
    let who = match (&r.exe, &r.unit, &r.cause) {
        (Some(exe), Some(unit), _) => format!("{exe} ({unit})"),
        (Some(exe), None, _) => exe.clone(),
        (None, Some(unit), _) => format!("? ({unit})"),
        // No process moved time (a stall, a suspend): say why instead.
        (None, None, Some(cause)) => format!("cause: {cause}"),
        (None, None, None) => "?".into(),
    };
    // A summary stands for many calls: say how many, of what, over how long.
    let who = match &r.detail {
        Some(d) if r.kind == "summary" => format!(
            "{who}: {} more {} in {:.1} s",
            d["count"],
            d["kind"].as_str().unwrap_or("?"),
            d["span_s"].as_f64().unwrap_or(0.0)
        ),
        _ => who,
    };
    format!(
        "{:<30} {:<8} {:<13} {:<9} {:>15} {:<7} {:>7} {:<15} {}",
        r.time,
        r.source,
        r.syscall.as_deref().unwrap_or("-"),
        r.kind,
        format_delta(r.delta_ns),
        r.result,
        r.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
        r.comm.as_deref().unwrap_or("?"),
        who
    )
}

/// `println!` into a String (the status text is built whole, then printed or compared).
macro_rules! push_line {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// What `clockguard status` prints (without its last newline).
fn status_text(s: &Status) -> String {
    let mut out = String::new();
    push_line!(
        out,
        "clockguard {} (pid {}), mode {}, up {:.0} s, config: {}",
        s.version,
        s.pid,
        s.mode,
        s.uptime_s,
        s.config
    );
    push_line!(
        out,
        "enforcement: {} ({})",
        if s.enforcement.active { "ON" } else { "off" },
        s.enforcement.reason
    );
    let ntp = &s.ntp;
    if ntp.running {
        push_line!(
            out,
            "ntp: {} ({} servers, {} pools{}); `clockguard tracking` and `sources` for details",
            if ntp.disciplining {
                "disciplining the clock, slew only"
            } else {
                "measuring only"
            },
            ntp.servers.len(),
            ntp.pools.len(),
            ntp.serve
                .as_deref()
                .map(|a| format!(", serving on {a}"))
                .unwrap_or_default()
        );
    }
    if let Some(err) = &s.ebpf_load_error {
        push_line!(out, "eBPF: not loaded: {err}");
    }
    if let Some(dir) = &s.enforcement.pinned {
        push_line!(
            out,
            "guard pinned in {}: it stays in force if the daemon dies",
            dir.display()
        );
    }
    if let Some(why) = &s.enforcement.not_pinned_because {
        push_line!(out, "guard NOT pinned: {why}");
    }
    push_line!(out, "journal: {}", s.journal.path.display());
    push_line!(
        out,
        "kernel {}; active LSMs: {} (from {})",
        s.kernel_release.as_deref().unwrap_or("?"),
        s.lsms
            .list
            .as_ref()
            .map(|l| l.join(","))
            .unwrap_or_else(|| "unknown".into()),
        s.lsms.source
    );
    push_line!(out);
    push_line!(out, "{:<26} {:<11} {:<13} DETAIL", "HOOK", "KIND", "STATE");
    for hook in &s.hooks {
        // The first line only: a verifier log follows it in `status --json`.
        let detail = match (&hook.replaced_by, &hook.error) {
            (Some(by), _) => format!("{by} see this syscall"),
            (None, Some(error)) => error.lines().next().unwrap_or("").to_string(),
            (None, None) => hook.target.clone(),
        };
        push_line!(
            out,
            "{:<26} {:<11} {:<13} {}",
            hook.name,
            hook.kind,
            hook.state(),
            detail
        );
    }
    push_line!(out);
    let num = |n: Option<u64>| n.map_or_else(|| "?".into(), |n| n.to_string());
    let kernel = s.kernel.as_ref();
    push_line!(
        out,
        "clock syscalls seen: {}   read-only adjtimex counted: {}   repeats summarised: {}   \
         ring buffer drops: {}",
        num(kernel.map(|k| k.clock_syscalls)),
        num(kernel.map(|k| k.readonly_adjtimex)),
        num(kernel.map(|k| k.events_summarised)),
        num(s.ring_buffer_drops)
    );
    let misses: u64 = s.hook_misses.iter().flat_map(|m| m.values()).sum();
    if misses > 0 {
        push_line!(
            out,
            "hook runs the kernel skipped (a program preempted inside itself): {misses}; \
             by hook in `status --json` (hook_misses)"
        );
    }
    push_line!(
        out,
        "records journaled: {}   unexplained jumps (fallback): {}",
        s.daemon.records_journaled,
        s.daemon.fallback_unexplained
    );
    timers_text(&mut out, &s.timers, &s.vm);
    if !s.services.is_empty() {
        push_line!(out);
        for service in &s.services {
            push_line!(out, "service {}", service_line(service));
        }
    }
    out.pop();
    out
}

/// A duration in ns as the unit that reads best.
fn duration_text(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

fn timers_text(out: &mut String, timers: &TimersStatus, vm: &VmStatus) {
    match &timers.lateness {
        Some(lateness) => push_line!(
            out,
            "timer lateness: p50 <= {}  p99 <= {}  p99.9 <= {}  max <= {}  ({} expiries)",
            duration_text(lateness.p50_le_ns as f64),
            duration_text(lateness.p99_le_ns as f64),
            duration_text(lateness.p999_le_ns as f64),
            duration_text(lateness.max_le_ns as f64),
            lateness.expiries
        ),
        None => push_line!(
            out,
            "timer lateness: unknown (the hrtimer hook is not attached)"
        ),
    }
    let found = &timers.found;
    push_line!(
        out,
        "stalls: {}{}   suspends: {}   clocksource switches: {}   clocksource jumps: {}",
        found.stalls,
        found
            .last_stall
            .as_ref()
            .map(|last| format!(
                " (last: {} {}, CPUs [{}])",
                duration_text(last.duration_ns as f64),
                last.cause.as_str(),
                last.cpus
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .unwrap_or_default(),
        found.suspends,
        found.clocksource_changes,
        found.clocksource_jumps
    );
    let facts = &vm.facts;
    push_line!(
        out,
        "machine: {}, clocksource {} (available: {}), time agents: {}",
        match &facts.hypervisor {
            Some(h) => format!("{h} virtual machine"),
            None => "bare metal".into(),
        },
        facts.clocksource.as_deref().unwrap_or("-"),
        facts.available_clocksources.join(" "),
        if facts.time_agents.is_empty() {
            "none".to_string()
        } else {
            facts.time_agents.join(", ")
        }
    );
}

/// Seconds with a sign and the unit that reads best (chronyc prints seconds too).
fn seconds(s: Option<f64>) -> String {
    match s {
        Some(s) if s.abs() >= 1.0 => format!("{s:+.6} s"),
        Some(s) if s.abs() >= 1e-3 => format!("{:+.3} ms", s * 1e3),
        Some(s) => format!("{:+.1} us", s * 1e6),
        None => "-".into(),
    }
}

/// What `clockguard tracking` prints (without its last newline).
fn tracking_text(t: &Tracking) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let ppm = |v: Option<f64>| v.map_or("-".into(), |p| format!("{p:+.3} ppm"));
    let mut out = String::new();
    push_line!(
        out,
        "Reference         : {} ({}){}",
        text(&t.reference),
        text(&t.reference_address),
        if t.synchronized {
            String::new()
        } else {
            format!(", NOT synchronised: {}", text(&t.unsynchronized_reason))
        }
    );
    push_line!(
        out,
        "Stratum           : {}",
        t.stratum.map_or("null".into(), |s| s.to_string())
    );
    push_line!(out, "Ref time (UTC)    : {}", text(&t.ref_time));
    push_line!(
        out,
        "System time       : {} (positive: the clock is ahead of NTP time)",
        seconds(t.offset_s)
    );
    push_line!(out, "Last offset       : {}", seconds(t.last_offset_s));
    push_line!(
        out,
        "RMS offset        : {}",
        seconds(t.rms_offset_s).trim_start_matches('+')
    );
    push_line!(
        out,
        "Frequency         : {} (kernel, against the raw clock)",
        ppm(t.frequency_ppm)
    );
    push_line!(out, "Residual freq     : {}", ppm(t.residual_freq_ppm));
    push_line!(out, "Skew              : {}", ppm(t.skew_ppm));
    push_line!(out, "Root delay        : {}", seconds(t.root_delay_s));
    push_line!(out, "Root dispersion   : {}", seconds(t.root_dispersion_s));
    push_line!(out, "Update interval   : {}", seconds(t.update_interval_s));
    push_line!(out, "Leap status       : {}", t.leap_status);
    if let Some(last) = &t.last_convergence {
        push_line!(
            out,
            "Last convergence  : {} to within 1 ms in {:.1} s (done {})",
            seconds(Some(last.from_offset_s)),
            last.took_s,
            last.ended
        );
    }
    match (&t.slew, t.disciplining) {
        (slew, true) => push_line!(
            out,
            "Slewing           : {} left at {} (never a step)",
            seconds(slew.as_ref().map(|s| s.remaining_ns as f64 / 1e9)),
            ppm(slew.as_ref().map(|s| s.rate_ppm))
        ),
        (_, false) => push_line!(out, "Slewing           : no (observe mode: measuring only)"),
    }
    out.pop();
    out
}

/// What `clockguard sources` prints (without its last newline).
fn sources_text(s: &SourcesAnswer) -> String {
    // "name (address)", or the address alone when the name is that address.
    let names: Vec<String> = s
        .sources
        .iter()
        .map(|row| {
            if row.name == row.address {
                row.address.clone()
            } else {
                format!("{} ({})", row.name, row.address)
            }
        })
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut out = String::new();
    push_line!(
        out,
        "{:<14} {:<width$} {:>2} {:>4} {:>5} {:>6}  {:>14} {:>12}",
        "STATE",
        "NAME/ADDRESS",
        "ST",
        "POLL",
        "REACH",
        "LASTRX",
        "OFFSET",
        "+/- ERROR"
    );
    for (row, name) in s.sources.iter().zip(&names) {
        push_line!(
            out,
            "{:<14} {:<width$} {:>2} {:>4} {:>5} {:>6}  {:>14} {:>12}",
            row.state.as_str(),
            name,
            row.stratum.map_or("-".into(), |n| n.to_string()),
            row.poll,
            row.reach,
            row.last_rx_s.map_or("-".into(), |s| format!("{s:.0}s")),
            seconds(row.offset_s),
            seconds(row.error_s).trim_start_matches('+').to_string(),
        );
    }
    for name in &s.unresolved {
        push_line!(out, "{:<14} {}", "unresolved", name);
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_ages() {
        let t = parse_since("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T10:00:00+00:00");
        let age = chrono::Utc::now() - parse_since("2h").unwrap();
        assert!((age.num_seconds() - 7200).abs() < 5);
        assert!(parse_since("yesterday-ish")
            .unwrap_err()
            .to_string()
            .contains("--since"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// `clockguard status` and `service-check` print the golden answers as the clockguard of
    /// before the typed status did (its output for the very same answers, served by a
    /// stand-in control socket, 2026-12-05).
    #[test]
    fn status_text_is_unchanged() {
        let status = crate::golden::status();
        let golden = include_str!("../core/tests/golden/status-host.txt");
        let printed = status_text(&status) + "\n";
        for (n, (now, then)) in printed.lines().zip(golden.lines()).enumerate() {
            assert_eq!(now, then, "line {} of the status text", n + 1);
        }
        assert_eq!(printed, golden);
        let services: ServicesAnswer =
            serde_json::from_str(include_str!("../core/tests/golden/services-host.json")).unwrap();
        let lines: Vec<String> = ["strict", "imap"]
            .iter()
            .map(|name| {
                let service = services.services.iter().find(|s| s.name == *name).unwrap();
                service_line(service) + "\n"
            })
            .collect();
        assert_eq!(
            lines.concat(),
            include_str!("../core/tests/golden/service-check-host.txt")
        );
    }

    /// `clockguard tracking` and `sources` print the golden answers as before (the old
    /// clockguard's output for the same answers, 2026-12-05), but for one mend the typed
    /// answer brought: `sources` printed POLL unpadded ("1 4    17"), because a JSON value's
    /// Display ignores the width; it is now right-aligned under its header like the other
    /// columns (golden/sources-host.txt was changed by hand for that one line).
    #[test]
    fn tracking_and_sources_text_is_unchanged() {
        assert_eq!(
            tracking_text(&crate::golden::tracking()) + "\n",
            include_str!("../core/tests/golden/tracking-host.txt")
        );
        assert_eq!(
            sources_text(&crate::golden::sources()) + "\n",
            include_str!("../core/tests/golden/sources-host.txt")
        );
    }

    /// What the golden tracking does not show: a clock being slewed, unsynchronised, a
    /// convergence; sources under a name, unreachable and unresolved.
    #[test]
    fn tracking_and_sources_text_show_slews_and_names() {
        let mut t = crate::golden::tracking();
        t.synchronized = false;
        t.unsynchronized_reason = Some("no source selectable".into());
        t.disciplining = true;
        t.slew = Some(clockguard_core::status::SlewStatus {
            active: true,
            remaining_ns: -2_500_000,
            rate_ppm: -500.0,
            corrections: 1,
            refused: 0,
            absorbed_ns: 0,
            external_steps: 0,
            eta_s: Some(5.0),
        });
        t.last_convergence = Some(clockguard_core::status::Convergence {
            from_offset_s: 11.0,
            took_s: 112.93,
            ended: "2026-12-05T14:56:00Z".into(),
        });
        let text = tracking_text(&t);
        for line in [
            "Reference         : 127.0.0.1:34014 (127.0.0.1:34014), NOT synchronised: no source \
             selectable",
            "Slewing           : -2.500 ms left at -500.000 ppm (never a step)",
            "Last convergence  : +11.000000 s to within 1 ms in 112.9 s (done \
             2026-12-05T14:56:00Z)",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let mut s = crate::golden::sources();
        s.sources[0].name = "ntp.example".into();
        s.sources[0].reach = "0".into();
        s.sources[0].last_rx_s = None;
        s.sources[0].state = clockguard_core::status::SourceState::Unreachable;
        s.unresolved = vec!["gone.example".into()];
        let text = sources_text(&s);
        assert!(
            text.contains("unreachable    ntp.example (127.0.0.1:34014)  1 "),
            "{text}"
        );
        assert!(text.ends_with("unresolved     gone.example"), "{text}");
    }

    /// What the golden status does not show: a stall, a fault, a pinned guard, no eBPF.
    #[test]
    fn status_text_shows_stalls_faults_and_pins() {
        let mut status = crate::golden::status();
        status.timers.found.stalls = 1;
        status.timers.found.last_stall = Some(crate::golden::stall());
        status.timers.lateness = None;
        status.enforcement.pinned = Some("/sys/fs/bpf/clockguard/x".into());
        status.ebpf_load_error = Some("no BTF".into());
        status.kernel = None;
        status.ring_buffer_drops = None;
        let service = &mut status.services[0];
        service.state = ServiceState::Fault;
        service.reason = Some("died_from_time_jump".into());
        service.fault_for_s = Some(3.24);
        service.hold_left_s = Some(6.76);
        service.last_event = Some(clockguard_core::status::ServiceEvent {
            kind: "died_after_time_jump".into(),
            summary: "died_after_time_jump: imap (pid 339) exit 89".into(),
            age_s: 3.2,
        });
        let text = status_text(&status);
        for line in [
            "stalls: 1 (last: 5.002 s vm_paused, CPUs [0,1])   suspends: 0   clocksource \
             switches: 0   clocksource jumps: 0",
            "timer lateness: unknown (the hrtimer hook is not attached)",
            "guard pinned in /sys/fs/bpf/clockguard/x: it stays in force if the daemon dies",
            "eBPF: not loaded: no BTF",
            "clock syscalls seen: ?   read-only adjtimex counted: ?   repeats summarised: ?   \
             ring buffer drops: ?",
            "service strict: fault (died_from_time_jump, for 3.2 s, held 6.8 s more), 2 \
             processes, check a process running: 2 processes running; last: \
             died_after_time_jump: imap (pid 339) exit 89 (3 s ago)",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    /// `clockguard audit` prints the golden journal as the clockguard of before the typed
    /// record did (its output, recorded 2026-12-05, is golden/audit.txt; the last line, a
    /// `summary` record, was added with the summarising of repeats, as it printed then).
    #[test]
    fn audit_table_is_unchanged() {
        let records = include_str!("../core/tests/golden/records.jsonl");
        let golden = include_str!("../core/tests/golden/audit.txt");
        let mut printed = vec![audit_header()];
        for line in records.lines() {
            let record: Record = serde_json::from_str(line).unwrap();
            printed.push(audit_row(&record));
        }
        let golden: Vec<&str> = golden.lines().collect();
        assert_eq!(printed.len(), golden.len());
        for (n, (now, then)) in printed.iter().zip(golden).enumerate() {
            assert_eq!(now, then, "line {} of the audit table", n + 1);
        }
    }
}
