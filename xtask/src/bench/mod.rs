//! `cargo xtask bench`: benchmark rows measured on the host, side by side in one run.
//!
//! The host clock is never changed: cg-clockcall's calls are invalid and the kernel rejects
//! them, but they still fire the syscall tracepoints clockguard audits.
//!
//! Each row is a function in [`ROWS`]; add rows there. A row returns its values, or
//! `Row::not_available` when the thing it measures does not exist yet; an `Err` marks the
//! row as failed (and the bench exits non-zero) without stopping the other rows.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::tasks::{bin_dir, build};
use crate::util::{self, root_cmd};

mod host;
mod vm;

use host::*;
use vm::*;

type RowFn = fn(&mut Ctx) -> Result<Row>;

/// The benchmark rows, in the order they run.
const ROWS: &[(&str, RowFn)] = &[
    ("clock_settime cost", row_settime_cost),
    ("daemon RSS", row_daemon_rss),
    ("syscall to journal latency", row_latency),
    ("journal sealing on and off", row_sealing_cost),
    ("NTP server at 1000 requests/s", row_ntp_server_load),
    ("ClockBound read cost", row_bound_read_cost),
    ("guard hooks on allowed calls (VM)", row_guard_cost_vm),
    (
        "clock_settime cost and journal latency (VM)",
        row_audit_cost_vm,
    ),
    ("11 s off: NTP and a refused step (VM)", row_ntp_converge_vm),
    ("error bound: step to segment (VM)", row_bound_latency_vm),
    (
        "error bound side by side: clockguard, ClockBound over chronyd (VM)",
        row_bound_side_by_side_vm,
    ),
    (
        "NTP like for like over netem: clockguard, chronyd, ntpd-rs (VM)",
        row_ntp_netem_vm,
    ),
    ("hrtimer workload, timer hook", row_timer_hook),
    ("failover from a time jump (VM)", row_failover_vm),
    (
        "systemd machine: boot to READY, start-up beside chronyd, journald forwarding",
        row_systemd_vm,
    ),
    ("soak: an hour of events and NTP traffic", row_soak),
];

/// The timer-hook row: threads sleeping 50 µs in a loop and a 10 kHz timerfd, for this many
/// seconds per sample.
const TIMERLOAD_SECONDS: &str = "5";

/// The NTP server load row: loopback port, rate and clients (each client stays under the
/// per-client limit configured for the row, so every request deserves an answer).
const NTP_LOAD_PORT: u16 = 12399;
const NTP_LOAD_RATE: &str = "1000";
const NTP_LOAD_SECONDS: &str = "20";
const NTP_LOAD_CLIENTS: &str = "100";
/// Its NTS-KE port, and how long key exchanges are made back to back.
const NTS_KE_LOAD_PORT: u16 = 12397;
const NTS_KE_LOAD_SECONDS: &str = "10";

/// The ClockBound read-cost row: the loopback reference's port and the reads per round.
const BOUND_REF_PORT: u16 = 12398;
const BOUND_READS: &str = "1000000";

const SETTIME_CALLS: &str = "200000";
const GETTIME_CALLS: &str = "10000000";
const STORM_CALLS: &str = "100000";
const LATENCY_SAMPLES: &str = "2000";

pub struct Row {
    /// None when measured; Some(reason) when not available.
    unavailable: Option<String>,
    values: Vec<(String, Value)>,
}

impl Row {
    fn new() -> Row {
        Row {
            unavailable: None,
            values: Vec::new(),
        }
    }

    fn not_available(why: String) -> Row {
        Row {
            unavailable: Some(why),
            values: Vec::new(),
        }
    }

    fn set(&mut self, key: &str, v: Value) {
        self.values.push((key.to_string(), v));
    }
}

/// A clockguard daemon started by the bench; stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    state_dir: PathBuf,
    runtime_dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// The daemon's own pid (the child may be sudo).
    fn pid(&self) -> u32 {
        let root = self.child.id();
        std::iter::once(root)
            .chain(util::descendants(root))
            .find(|p| {
                fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "clockguard")
            })
            .unwrap_or(root)
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        util::send_signal(&[self.child.id()], "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench: daemon ignored SIGTERM for 10s; killing it");
        util::kill_tree(&mut self.child, Duration::from_secs(2));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Ctx {
    bins: PathBuf,
    root: PathBuf,
    daemon: Option<Daemon>,
    starts: u32,
    /// The kernel the VM rows boot (each "(VM)" row runs once per kernel).
    vm_kernel: Option<crate::kernels::Kernel>,
}

impl Ctx {
    fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    fn daemon(&self) -> Result<&Daemon> {
        self.daemon.as_ref().context("daemon not running")
    }

    fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// (Re)start the daemon in observe mode with fresh state and runtime dirs, and wait
    /// until `clockguard status` answers.
    fn start_daemon(&mut self) -> Result<()> {
        self.start_daemon_with(None)
    }

    /// As `start_daemon`, with a configuration file.
    fn start_daemon_with(&mut self, config: Option<&Path>) -> Result<()> {
        self.start_daemon_sealed(config, false)
    }

    /// As `start_daemon_with`; `sealed`: with a sealing key (`audit --setup-keys`) in the
    /// fresh state directory, so every record carries a MAC.
    fn start_daemon_sealed(&mut self, config: Option<&Path>, sealed: bool) -> Result<()> {
        self.stop_daemon();
        self.starts += 1;
        let n = self.starts;
        let state_dir = self.root.join(format!("state-{n}"));
        let runtime_dir = self.root.join(format!("run-{n}"));
        let log = self.root.join(format!("daemon-{n}.log"));
        fs::create_dir_all(&state_dir)?;
        fs::create_dir_all(&runtime_dir)?;
        if sealed {
            capture(
                root_cmd(self.bin("clockguard"), &[])
                    .args(["audit", "--setup-keys", "--state-dir"])
                    .arg(&state_dir),
            )
            .context("clockguard audit --setup-keys")?;
        }
        let logf = fs::File::create(&log)?;
        let mut c = root_cmd(self.bin("clockguard"), &[]);
        c.arg("run")
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--runtime-dir")
            .arg(&runtime_dir)
            .args(["--mode", "observe"])
            .args(config.iter().flat_map(|c| [Path::new("--config"), c]))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        eprintln!("+ {} (log: {})", util::describe(&c), log.display());
        let child = c.spawn().context("cannot start the clockguard daemon")?;
        let mut d = Daemon {
            child,
            state_dir,
            runtime_dir,
            log,
        };
        let start = Instant::now();
        loop {
            if let Some(st) = d.child.try_wait()? {
                bail!(
                    "daemon exited ({}) before it was ready; log tail:\n{}",
                    util::exit_desc(st),
                    tail(&d.log, 20)
                );
            }
            if self.status_of(&d).is_ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "daemon not ready after 60s (`clockguard status` keeps failing); log tail:\n{}",
                    tail(&d.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "bench: daemon ready in {:.1}s (pid {})",
            start.elapsed().as_secs_f64(),
            d.pid()
        );
        self.daemon = Some(d);
        Ok(())
    }

    fn status_of(&self, d: &Daemon) -> Result<Value> {
        let out = capture(
            root_cmd(self.bin("clockguard"), &[])
                .args(["status", "--json", "--runtime-dir"])
                .arg(&d.runtime_dir),
        )?;
        serde_json::from_str(out.trim())
            .or_else(|_| last_object(&out).context("no JSON"))
            .context("`clockguard status --json` printed no JSON object")
    }

    fn status(&self) -> Result<Value> {
        self.status_of(self.daemon()?)
    }

    /// Run cg-clockcall and return the JSON object it prints.
    fn clockcall(&self, args: &[&str]) -> Result<Value> {
        let out = capture(root_cmd(self.bin("cg-clockcall"), &[]).args(args))?;
        last_object(&out).with_context(|| {
            format!(
                "cg-clockcall {} printed no JSON object: {out}",
                args.join(" ")
            )
        })
    }

    /// Waits until the journal stops growing (still for 5 s, 60 s at most: summary records
    /// come one to two summary intervals after the calls); its lines then, and the wait (s).
    fn journal_settled(&self) -> Result<(usize, f64)> {
        let start = Instant::now();
        let mut lines = self.journal_lines()?;
        let mut still_since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.journal_lines()?;
            if now != lines {
                still_since = Instant::now();
            }
            lines = now;
            if still_since.elapsed() >= Duration::from_secs(5)
                || start.elapsed() > Duration::from_secs(60)
            {
                return Ok((lines, start.elapsed().as_secs_f64()));
            }
        }
    }

    /// CPU time the daemon has used (user + system, s).
    fn daemon_cpu_s(&self) -> Result<f64> {
        Ok(cpu_ticks(self.daemon()?.pid())? as f64 / 100.0)
    }

    fn journal_lines(&self) -> Result<usize> {
        let out = capture(
            root_cmd(self.bin("clockguard"), &[])
                .args(["audit", "--json", "--state-dir"])
                .arg(&self.daemon()?.state_dir),
        )?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
    }

    fn daemon_rss_kib(&self) -> Result<u64> {
        let pid = self.daemon()?.pid();
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }
}

/// Run, capture stdout; on failure the error is stderr's first line.
fn capture(c: &mut std::process::Command) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", util::describe(c)))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("{}: {first}", util::exit_desc(out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The last line of `text` that parses as a JSON object.
fn last_object(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(Value::is_object)
}

/// A JSON number; integral values are stored as integers (so they print as `5`, not `5.0`)
/// and non-finite values become null.
fn num(n: f64) -> Value {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        Value::from(n as i64)
    } else {
        Value::from(n) // null when not finite
    }
}

fn opt(n: Option<f64>) -> Value {
    n.map(num).unwrap_or(Value::Null)
}

fn num_field(v: &Value, key: &str) -> Result<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .with_context(|| format!("no numeric field `{key}` in {v}"))
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64().unwrap_or(f64::NAN) {
            n if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", n as i64),
            n if n.abs() < 10.0 => {
                let s = format!("{n:.3}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            n => format!("{n:.1}"),
        },
        Value::Array(a) => a.iter().map(fmt_value).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

pub fn bench() -> Result<i32> {
    build(true)?;
    let repo = util::repo_root();
    let out_dir = repo.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let root = std::env::temp_dir().join(format!("clockguard-bench.{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;

    let mut ctx = Ctx {
        bins: bin_dir(true),
        root: root.clone(),
        daemon: None,
        starts: 0,
        vm_kernel: None,
    };
    // The VM rows run on every kernel of the matrix, side by side, or on
    // CLOCKGUARD_VM_KERNEL alone when it is set.
    let vm_kernels = match std::env::var("CLOCKGUARD_VM_KERNEL") {
        Ok(k) => crate::kernels::select(&[k])?,
        Err(_) => crate::kernels::select(&[])?,
    };
    let mut results: Vec<(String, Result<Row>, f64)> = Vec::new();
    let filter = std::env::var("CG_BENCH_FILTER").unwrap_or_default();
    let selected: Vec<_> = ROWS
        .iter()
        .filter(|(name, _)| row_selected(&filter, name))
        .collect();
    if selected.is_empty() {
        bail!(
            "CG_BENCH_FILTER={filter:?} selects no bench row; the rows are: {}",
            ROWS.iter()
                .map(|(name, _)| format!("{name:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (name, f) in selected {
        let runs: Vec<(String, Option<&crate::kernels::Kernel>)> = match name.strip_suffix("(VM)") {
            Some(stem) => vm_kernels
                .iter()
                .map(|k| (format!("{stem}(VM {})", k.label), Some(k)))
                .collect(),
            None => vec![(name.to_string(), None)],
        };
        for (name, kernel) in runs {
            ctx.vm_kernel = kernel.cloned();
            println!("bench: {name} ...");
            let t = Instant::now();
            let r = f(&mut ctx);
            if let Err(e) = &r {
                eprintln!("bench: {name}: ERROR: {e:#}");
            }
            results.push((name, r, t.elapsed().as_secs_f64()));
        }
    }
    ctx.stop_daemon();

    // Table.
    let mut table: Vec<[String; 3]> = Vec::new();
    let mut rows_json = Vec::new();
    let mut any_error = false;
    for (name, r, secs) in &results {
        let (status, values) = match r {
            Ok(row) => match &row.unavailable {
                Some(why) => (format!("not available: {why}"), &row.values[..]),
                None => ("ok".to_string(), &row.values[..]),
            },
            Err(e) => {
                any_error = true;
                (format!("error: {e:#}"), &[][..])
            }
        };
        if status != "ok" {
            table.push([name.clone(), String::new(), status.clone()]);
        }
        for (k, v) in values {
            if v.is_object() || v.is_array() {
                continue; // raw tool output: JSON only
            }
            table.push([name.clone(), k.clone(), fmt_value(v)]);
        }
        rows_json.push(json!({
            "name": name,
            "status": status,
            "seconds": num((secs * 10.0).round() / 10.0),
            "values": values.iter().cloned().collect::<Map<String, Value>>(),
        }));
    }
    let w0 = table.iter().map(|r| r[0].len()).max().unwrap_or(0).max(3);
    let w1 = table.iter().map(|r| r[1].len()).max().unwrap_or(0).max(6);
    println!();
    println!("{:<w0$}  {:<w1$}  value", "row", "metric");
    println!("{}", "-".repeat(w0 + w1 + 12));
    for [a, b, c] in &table {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }

    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let doc = json!({
        "generated_unix": now,
        "kernel": kernel.trim(),
        "rows": rows_json,
    });
    let path = out_dir.join("results.json");
    fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    println!("\nbench: results written to {}", path.display());

    if any_error {
        println!(
            "bench: some rows failed; daemon logs kept in {}",
            root.display()
        );
        Ok(1)
    } else {
        let _ = fs::remove_dir_all(&root);
        Ok(0)
    }
}

/// Whether CG_BENCH_FILTER selects the row: `text` selects the rows whose name contains it,
/// `=name` the row of exactly that name (so "=clock_settime cost" leaves out its VM twin,
/// "clock_settime cost and journal latency (VM)"). An empty filter selects every row.
fn row_selected(filter: &str, name: &str) -> bool {
    match filter.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(filter),
    }
}

#[cfg(test)]
mod tests;
