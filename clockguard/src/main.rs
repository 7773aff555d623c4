//! clockguard: an eBPF clock guard. One binary: the daemon (`run`) and its CLI.

mod bpf;
mod btf;
mod check;
mod clock;
mod config;
mod control;
mod control_protocol;
mod daemon;
mod enrich;
mod fallback;
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
mod services;
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
        Err(err) if err.chain().any(|e| e.is::<StdoutClosed>()) => ExitCode::SUCCESS,
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
        Command::Status { json, daemon } => ask(&daemon, "status", json, print_status),
        Command::Tracking { json, daemon } => ask(&daemon, "tracking", json, print_tracking),
        Command::Sources { json, daemon } => ask(&daemon, "sources", json, print_sources),
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

/// `clockguard check`: gathers the facts, judges them, prints one line per finding.
fn run_check(daemon: &DaemonArgs, json: bool) -> Result<ExitCode> {
    let (mut cfg, _) = Config::load(daemon.config.as_deref())?;
    if let Some(r) = &daemon.runtime_dir {
        cfg.runtime_dir = r.clone();
    }
    let (status, daemon_error) = match query(&cfg.runtime_dir, "status") {
        Ok(status) => (Some(status), None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    // Only a running NTP service answers `sources`.
    let sources = status
        .as_ref()
        .filter(|s| s["ntp"]["running"].as_bool() == Some(true))
        .and_then(|_| query(&cfg.runtime_dir, "sources").ok());
    let facts = check::Facts {
        config: &cfg,
        time_services: guard::other_time_services(Path::new("/"), Path::new("/proc")),
        adjtime: std::fs::read_to_string("/etc/adjtime").ok(),
        // The daemon's answer when it runs; else found out here, without mounting anything.
        lsms: status
            .as_ref()
            .and_then(|s| serde_json::from_value(s["lsms"].clone()).ok())
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
    let answer = query(&cfg.runtime_dir, "services")?;
    let services = answer["services"].as_array().cloned().unwrap_or_default();
    let Some(service) = services.iter().find(|s| s["name"] == name) else {
        let known: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
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
    Ok(match service["state"].as_str() {
        Some("fault") => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// "dovecot: fault (died_from_time_jump, 3.2 s, hold 6.8 s), 7 processes, last: ..."
fn service_line(s: &Value) -> String {
    let state = s["state"].as_str().unwrap_or("?");
    let why = match state {
        "fault" => format!(
            " ({}, for {:.1} s{})",
            s["reason"].as_str().unwrap_or("?"),
            s["fault_for_s"].as_f64().unwrap_or(0.0),
            match s["hold_left_s"].as_f64() {
                Some(h) if h > 0.0 => format!(", held {h:.1} s more"),
                _ => String::new(),
            }
        ),
        _ => String::new(),
    };
    let last = s["last_event"]["summary"]
        .as_str()
        .map(|e| {
            format!(
                "; last: {e} ({:.0} s ago)",
                s["last_event"]["age_s"].as_f64().unwrap_or(0.0)
            )
        })
        .unwrap_or_default();
    format!(
        "{}: {state}{why}, {} processes, check {}: {}{last}",
        s["name"].as_str().unwrap_or("?"),
        s["processes"],
        s["check"]["target"].as_str().unwrap_or("?"),
        s["check"]["last"]["detail"].as_str().unwrap_or("not yet"),
    )
}

/// One request with a one-object answer, printed as JSON or by `print`.
fn ask(
    daemon: &DaemonArgs,
    cmd: &str,
    json: bool,
    print: fn(&Value) -> Result<()>,
) -> Result<ExitCode> {
    let cfg = dirs(daemon.config.as_deref(), None, daemon.runtime_dir.clone())?;
    let answer = query(&cfg.runtime_dir, cmd)?;
    if json {
        outln!("{answer}");
    } else {
        print(&answer)?;
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
    let head = |status: &Value| {
        (
            status["journal"]["head_seq"].as_u64(),
            status["journal"]["head_hash"].as_str().map(str::to_string),
        )
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = query(runtime_dir, "status").ok();
        let mut found = journal::verify(state_dir)?;
        let Some(before) = before else {
            found.notes.push(format!(
                "no daemon answers in {}: the end of the journal is not compared with its head",
                runtime_dir.display()
            ));
            return Ok(found);
        };
        let after = query(runtime_dir, "status").ok();
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

fn compare_with_daemon_head(state_dir: &Path, status: &Value, found: &mut journal::Verification) {
    let same_dir = status["state_dir"]
        .as_str()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .is_some_and(|d| std::fs::canonicalize(state_dir).is_ok_and(|s| s == d));
    let head_seq = status["journal"]["head_seq"].as_u64();
    let head_hash = status["journal"]["head_hash"].as_str();
    let (Some(head_seq), Some(head_hash), true) = (head_seq, head_hash, same_dir) else {
        found.notes.push(
            "the running daemon writes another journal: the end of this one is not compared".into(),
        );
        return;
    };
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

fn print_status(s: &Value) -> Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    outln!(
        "clockguard {} (pid {}), mode {}, up {:.0} s, config: {}",
        text(&s["version"]),
        s["pid"],
        text(&s["mode"]),
        s["uptime_s"].as_f64().unwrap_or(0.0),
        text(&s["config"])
    );
    outln!(
        "enforcement: {} ({})",
        if s["enforcement"]["active"].as_bool() == Some(true) {
            "ON"
        } else {
            "off"
        },
        text(&s["enforcement"]["reason"])
    );
    let ntp = &s["ntp"];
    if ntp["running"].as_bool() == Some(true) {
        outln!(
            "ntp: {} ({} servers, {} pools{}); `clockguard tracking` and `sources` for details",
            if ntp["disciplining"].as_bool() == Some(true) {
                "disciplining the clock, slew only"
            } else {
                "measuring only"
            },
            ntp["servers"].as_array().map_or(0, Vec::len),
            ntp["pools"].as_array().map_or(0, Vec::len),
            ntp["serve"]
                .as_str()
                .map(|a| format!(", serving on {a}"))
                .unwrap_or_default()
        );
    }
    if let Some(err) = s["ebpf_load_error"].as_str() {
        outln!("eBPF: not loaded: {err}");
    }
    if let Some(dir) = s["enforcement"]["pinned"].as_str() {
        outln!("guard pinned in {dir}: it stays in force if the daemon dies");
    }
    if let Some(why) = s["enforcement"]["not_pinned_because"].as_str() {
        outln!("guard NOT pinned: {why}");
    }
    outln!("journal: {}", text(&s["journal"]["path"]));
    outln!(
        "kernel {}; active LSMs: {} (from {})",
        text(&s["kernel_release"]),
        s["lsms"]["list"]
            .as_array()
            .map(|l| l.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "unknown".into()),
        text(&s["lsms"]["source"])
    );
    outln!();
    outln!("{:<26} {:<11} {:<13} DETAIL", "HOOK", "KIND", "STATE");
    for hook in s["hooks"].as_array().into_iter().flatten() {
        let flag = |key: &str| hook[key].as_bool() == Some(true);
        let replaced_by = hook["replaced_by"].as_str();
        let state = match (flag("attached"), flag("adopted"), flag("pinned")) {
            (false, _, _) if replaced_by.is_some() => "not needed",
            (false, _, _) => "NOT attached",
            (true, true, _) => "adopted",
            (true, false, true) => "pinned",
            (true, false, false) => "attached",
        };
        // The first line only: a verifier log follows it in `status --json`.
        let detail = match (replaced_by, hook["error"].as_str()) {
            (Some(by), _) => format!("{by} see this syscall"),
            (None, Some(error)) => error.lines().next().unwrap_or("").to_string(),
            (None, None) => text(&hook["target"]),
        };
        outln!(
            "{:<26} {:<11} {:<13} {}",
            text(&hook["name"]),
            text(&hook["kind"]),
            state,
            detail
        );
    }
    outln!();
    let num = |v: &Value| {
        v.as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    };
    outln!(
        "clock syscalls seen: {}   read-only adjtimex counted: {}   repeats summarised: {}   \
         ring buffer drops: {}",
        num(&s["kernel"]["clock_syscalls"]),
        num(&s["kernel"]["readonly_adjtimex"]),
        num(&s["kernel"]["events_summarised"]),
        num(&s["ring_buffer_drops"])
    );
    let misses: u64 = s["hook_misses"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    if misses > 0 {
        outln!(
            "hook runs the kernel skipped (a program preempted inside itself): {misses}; \
             by hook in `status --json` (hook_misses)"
        );
    }
    outln!(
        "records journaled: {}   unexplained jumps (fallback): {}",
        num(&s["daemon"]["records_journaled"]),
        num(&s["daemon"]["fallback_unexplained"])
    );
    print_timers(&s["timers"], &s["vm"])?;
    let services = s["services"].as_array().cloned().unwrap_or_default();
    if !services.is_empty() {
        outln!();
        for service in &services {
            outln!("service {}", service_line(service));
        }
    }
    Ok(())
}

/// A duration in ns as the unit that reads best.
fn duration_ns(v: &Value) -> String {
    match v.as_f64() {
        Some(ns) if ns >= 1e9 => format!("{:.3} s", ns / 1e9),
        Some(ns) if ns >= 1e6 => format!("{:.1} ms", ns / 1e6),
        Some(ns) => format!("{:.1} us", ns / 1e3),
        None => "?".into(),
    }
}

fn print_timers(timers: &Value, vm: &Value) -> Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let lateness = &timers["lateness"];
    if lateness.is_object() {
        outln!(
            "timer lateness: p50 <= {}  p99 <= {}  p99.9 <= {}  max <= {}  ({} expiries)",
            duration_ns(&lateness["p50_le_ns"]),
            duration_ns(&lateness["p99_le_ns"]),
            duration_ns(&lateness["p999_le_ns"]),
            duration_ns(&lateness["max_le_ns"]),
            lateness["expiries"]
        );
    } else {
        outln!("timer lateness: unknown (the hrtimer hook is not attached)");
    }
    let found = &timers["found"];
    let last = &found["last_stall"];
    outln!(
        "stalls: {}{}   suspends: {}   clocksource switches: {}   clocksource jumps: {}",
        found["stalls"],
        if last.is_object() {
            format!(
                " (last: {} {}, CPUs {})",
                duration_ns(&last["duration_ns"]),
                text(&last["cause"]),
                last["cpus"]
            )
        } else {
            String::new()
        },
        found["suspends"],
        found["clocksource_changes"],
        found["clocksource_jumps"]
    );
    let agents: Vec<&str> = vm["time_agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    outln!(
        "machine: {}, clocksource {} (available: {}), time agents: {}",
        match vm["hypervisor"].as_str() {
            Some(h) => format!("{h} virtual machine"),
            None => "bare metal".into(),
        },
        text(&vm["clocksource"]),
        vm["available_clocksources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        if agents.is_empty() {
            "none".to_string()
        } else {
            agents.join(", ")
        }
    );
    Ok(())
}

/// Seconds with a sign and the unit that reads best (chronyc prints seconds too).
fn seconds(v: &Value) -> String {
    match v.as_f64() {
        Some(s) if s.abs() >= 1.0 => format!("{s:+.6} s"),
        Some(s) if s.abs() >= 1e-3 => format!("{:+.3} ms", s * 1e3),
        Some(s) => format!("{:+.1} us", s * 1e6),
        None => "-".into(),
    }
}

fn print_tracking(t: &Value) -> Result<()> {
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    let ppm = |v: &Value| v.as_f64().map_or("-".into(), |p| format!("{p:+.3} ppm"));
    let synced = t["synchronized"].as_bool() == Some(true);
    outln!(
        "Reference         : {} ({}){}",
        text(&t["reference"]),
        text(&t["reference_address"]),
        if synced {
            String::new()
        } else {
            format!(", NOT synchronised: {}", text(&t["unsynchronized_reason"]))
        }
    );
    outln!("Stratum           : {}", t["stratum"]);
    outln!("Ref time (UTC)    : {}", text(&t["ref_time"]));
    outln!(
        "System time       : {} (positive: the clock is ahead of NTP time)",
        seconds(&t["offset_s"])
    );
    outln!("Last offset       : {}", seconds(&t["last_offset_s"]));
    outln!(
        "RMS offset        : {}",
        seconds(&t["rms_offset_s"]).trim_start_matches('+')
    );
    outln!(
        "Frequency         : {} (kernel, against the raw clock)",
        ppm(&t["frequency_ppm"])
    );
    outln!("Residual freq     : {}", ppm(&t["residual_freq_ppm"]));
    outln!("Skew              : {}", ppm(&t["skew_ppm"]));
    outln!("Root delay        : {}", seconds(&t["root_delay_s"]));
    outln!("Root dispersion   : {}", seconds(&t["root_dispersion_s"]));
    outln!("Update interval   : {}", seconds(&t["update_interval_s"]));
    outln!("Leap status       : {}", text(&t["leap_status"]));
    let last = &t["last_convergence"];
    if last.is_object() {
        outln!(
            "Last convergence  : {} to within 1 ms in {:.1} s (done {})",
            seconds(&last["from_offset_s"]),
            last["took_s"].as_f64().unwrap_or(0.0),
            text(&last["ended"])
        );
    }
    let slew = &t["slew"];
    if t["disciplining"].as_bool() == Some(true) {
        outln!(
            "Slewing           : {} left at {} (never a step)",
            seconds(&(slew["remaining_ns"].as_f64().map(|n| n / 1e9).into())),
            ppm(&slew["rate_ppm"])
        );
    } else {
        outln!("Slewing           : no (observe mode: measuring only)");
    }
    Ok(())
}

fn print_sources(s: &Value) -> Result<()> {
    let rows: Vec<&Value> = s["sources"].as_array().into_iter().flatten().collect();
    // "name (address)", or the address alone when the name is that address.
    let names: Vec<String> = rows
        .iter()
        .map(|row| {
            let name = row["name"].as_str().unwrap_or("?");
            let address = row["address"].as_str().unwrap_or("?");
            if name == address {
                address.to_string()
            } else {
                format!("{name} ({address})")
            }
        })
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    outln!(
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
    for (row, name) in rows.iter().zip(&names) {
        outln!(
            "{:<14} {:<width$} {:>2} {:>4} {:>5} {:>6}  {:>14} {:>12}",
            row["state"].as_str().unwrap_or("?"),
            name,
            row["stratum"]
                .as_u64()
                .map_or("-".into(), |n| n.to_string()),
            row["poll"],
            row["reach"].as_str().unwrap_or("0"),
            row["last_rx_s"]
                .as_f64()
                .map_or("-".into(), |s| format!("{s:.0}s")),
            seconds(&row["offset_s"]),
            seconds(&row["error_s"]).trim_start_matches('+').to_string(),
        );
    }
    for name in s["unresolved"].as_array().into_iter().flatten() {
        outln!("{:<14} {}", "unresolved", name.as_str().unwrap_or("?"));
    }
    Ok(())
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
