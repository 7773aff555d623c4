//! The CLI's commands other than `run`: each asks the running daemon over its control
//! socket or reads the journal, and prints the answer (as text through [`text`], or as
//! the daemon's JSON with `--json`).

pub(crate) mod text;

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use clockguard_core::status::{ServiceState, ServicesAnswer, Status};

use crate::{check, config, control, dirs, guard, journal, lsm, runtime, DaemonArgs};
use text::{audit_header, audit_row, service_line};

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
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

pub(crate) fn stdout_error(err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(err).context("cannot write to stdout")
    }
}

pub(crate) fn reload(daemon: &DaemonArgs) -> Result<ExitCode> {
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
pub(crate) fn query(runtime_dir: &Path, cmd: &str) -> Result<Value> {
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
pub(crate) fn query_as<T: serde::de::DeserializeOwned>(runtime_dir: &Path, cmd: &str) -> Result<T> {
    typed_answer(cmd, query(runtime_dir, cmd)?)
}

/// A daemon answer read into its type; one that does not read comes, most likely, from a
/// daemon of another version.
pub(crate) fn typed_answer<T: serde::de::DeserializeOwned>(cmd: &str, answer: Value) -> Result<T> {
    serde_json::from_value(answer).with_context(|| {
        format!(
            "the daemon's {cmd} answer does not read as this clockguard ({}) expects: is the \
             running daemon another version? Restart it",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// `clockguard check`: gathers the facts, judges them, prints one line per finding.
pub(crate) fn run_check(daemon: &DaemonArgs, json: bool) -> Result<ExitCode> {
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
pub(crate) fn service_check(daemon: &DaemonArgs, name: &str) -> Result<ExitCode> {
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

/// One request with a one-object answer, printed as JSON or by `print`.
/// `--json` prints the daemon's answer as it came; otherwise it is read into its type and
/// printed as `text` makes it.
pub(crate) fn ask<T: serde::de::DeserializeOwned>(
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
pub(crate) fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
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

pub(crate) fn require_journal(state_dir: &Path) -> Result<()> {
    if journal::journal_files(state_dir).is_empty() {
        bail!(
            "no journal in {} (has `clockguard run` run with this state dir?)",
            state_dir.display()
        );
    }
    Ok(())
}

/// `audit --setup-keys`: a new sealing key in the state directory; the verification key
/// to stdout, once.
pub(crate) fn audit_setup_keys(state_dir: &Path, replace: bool) -> Result<ExitCode> {
    let mut seed = [0u8; clockguard_core::seal::SEED_LEN];
    getrandom::fill(&mut seed).map_err(|err| anyhow::anyhow!("cannot draw a random key: {err}"))?;
    let sealer = journal::Sealer::create(state_dir, &seed, replace)?;
    outln!(
        "A new sealing key is in {} (key id {}).",
        sealer.path().display(),
        sealer.key().key_id()
    );
    outln!();
    outln!("The verification key; keep it off this machine (it proves the journal to you,");
    outln!("and whoever has it can forge seals):");
    outln!();
    outln!(
        "    {}",
        clockguard_core::seal::format_verification_key(&seed)
    );
    outln!();
    outln!("clockguard seals the journal from its next start: systemctl restart clockguard");
    outln!("Check it with: clockguard audit --verify --verify-key KEY");
    Ok(ExitCode::SUCCESS)
}

/// `audit --verify`: the hash chain of the files, the seals with a verification key, then
/// the end of the files against the head of the daemon that writes them (removing the
/// last records leaves a chain that is intact).
pub(crate) fn audit_verify(
    state_dir: &Path,
    runtime_dir: &Path,
    seed: Option<[u8; clockguard_core::seal::SEED_LEN]>,
) -> Result<ExitCode> {
    require_journal(state_dir)?;
    let found = verify_against_daemon(state_dir, runtime_dir, seed)?;
    for note in &found.notes {
        outln!("note: {note}");
    }
    for failure in &found.failures {
        outln!("FAIL: {failure}");
    }
    if let Some(sealing) = &found.sealing {
        match sealing.proven_through {
            Some((seq, epoch)) => outln!(
                "sealed (key id {}): every record up to seq {seq} (the seal of epoch {epoch}) \
                 is as written; {} record(s) after it are not sealed yet",
                sealing.key_id,
                sealing.unsealed_after
            ),
            None => outln!(
                "sealed (key id {}): no seal proves any record ({} MAC(s) verified)",
                sealing.key_id,
                sealing.macs_verified
            ),
        }
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
pub(crate) fn verify_against_daemon(
    state_dir: &Path,
    runtime_dir: &Path,
    seed: Option<[u8; clockguard_core::seal::SEED_LEN]>,
) -> Result<journal::Verification> {
    const ATTEMPTS: usize = 5;
    let head = |status: &Status| (status.journal.head_seq, status.journal.head_hash.clone());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = query_as::<Status>(runtime_dir, "status").ok();
        let mut found = journal::verify(state_dir, seed)?;
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

pub(crate) fn compare_with_daemon_head(
    state_dir: &Path,
    status: &Status,
    found: &mut journal::Verification,
) {
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

pub(crate) fn audit(state_dir: &Path, since: Option<&str>, json: bool) -> Result<ExitCode> {
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
}
