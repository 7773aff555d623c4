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

type RowFn = fn(&mut Ctx) -> Result<Row>;

/// The benchmark rows, in the order they run.
const ROWS: &[(&str, RowFn)] = &[
    ("clock_settime cost", row_settime_cost),
    ("daemon RSS", row_daemon_rss),
    ("syscall to journal latency", row_latency),
    ("NTP server at 1000 requests/s", row_ntp_server_load),
    ("guard hooks on allowed calls (VM)", row_guard_cost_vm),
    (
        "clock_settime cost and journal latency (VM)",
        row_audit_cost_vm,
    ),
    ("11 s off: NTP and a refused step (VM)", row_ntp_converge_vm),
    (
        "NTP like for like over netem: clockguard, chronyd, ntpd-rs (VM)",
        row_ntp_netem_vm,
    ),
    ("hrtimer workload, timer hook", row_timer_hook),
    ("failover from a time jump (VM)", row_failover_vm),
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
        self.stop_daemon();
        self.starts += 1;
        let n = self.starts;
        let state_dir = self.root.join(format!("state-{n}"));
        let runtime_dir = self.root.join(format!("run-{n}"));
        let log = self.root.join(format!("daemon-{n}.log"));
        fs::create_dir_all(&state_dir)?;
        fs::create_dir_all(&runtime_dir)?;
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

/// a. clock_settime cost without and with the daemon (off, on, off, on; medians); a syscall
/// clockguard does not audit (clock_gettime past the vDSO), which pays the kernel's syscall
/// tracepoint path all the same; and clock_gettime through the vDSO, which no hook sees.
fn row_settime_cost(ctx: &mut Ctx) -> Result<Row> {
    const LOOPS: [(&str, &str, &str); 3] = [
        ("settime-invalid", SETTIME_CALLS, "settime"),
        ("gettime-syscall-loop", GETTIME_CALLS, "other_syscall"),
        ("gettime-loop", GETTIME_CALLS, "gettime_vdso"),
    ];
    let measure = |ctx: &Ctx| -> Result<Vec<f64>> {
        LOOPS
            .iter()
            .map(|(cmd, n, _)| num_field(&ctx.clockcall(&[cmd, n])?, "ns_per_call"))
            .collect()
    };
    // "on": the default, where the kernel sends a key's first calls per interval in full
    // and counts the rest (a loop of identical rejected calls is a storm of repeats);
    // "on_full": repeats_in_full = 0, every call through the ring buffer to the journal.
    let every_call_in_full = every_call_in_full_config(ctx)?;
    let (mut off, mut on, mut on_full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..2 {
        ctx.stop_daemon();
        off.push(measure(ctx)?);
        ctx.start_daemon()?;
        on.push(measure(ctx)?);
        ctx.start_daemon_with(Some(&every_call_in_full))?;
        on_full.push(measure(ctx)?);
    }
    ctx.stop_daemon();
    let median_of = |v: &[Vec<f64>], i: usize| median(&v.iter().map(|s| s[i]).collect::<Vec<_>>());
    let (m_off, m_on, m_full) = (
        median_of(&off, 0),
        median_of(&on, 0),
        median_of(&on_full, 0),
    );
    let mut row = Row::new();
    row.set("calls_per_sample", num(SETTIME_CALLS.parse::<f64>()?));
    row.set("ns_per_call_off", num(m_off));
    row.set("ns_per_call_on", num(m_on));
    row.set("added_ns_per_call", num(m_on - m_off));
    row.set("ratio_on_off", num(m_on / m_off));
    row.set("ns_per_call_on_full", num(m_full));
    row.set("added_ns_per_call_full", num(m_full - m_off));
    for (i, (_, _, name)) in LOOPS.iter().enumerate().skip(1) {
        row.set(&format!("{name}_ns_per_call_off"), num(median_of(&off, i)));
        row.set(&format!("{name}_ns_per_call_on"), num(median_of(&on, i)));
    }
    let samples = |v: &[Vec<f64>]| {
        Value::Array(
            v.iter()
                .map(|s| {
                    Value::Object(
                        LOOPS
                            .iter()
                            .zip(s)
                            .map(|((_, _, name), ns)| (format!("{name}_ns"), num(*ns)))
                            .collect(),
                    )
                })
                .collect(),
        )
    };
    row.set("samples_off", samples(&off));
    row.set("samples_on", samples(&on));
    row.set("samples_on_full", samples(&on_full));
    Ok(row)
}

/// A configuration with summarising off (`repeats_in_full = 0`): every clock call is sent
/// in full, for the rows that time a call's own way to the journal.
fn every_call_in_full_config(ctx: &Ctx) -> Result<PathBuf> {
    let config = ctx.root.join("every-call-in-full.toml");
    fs::write(&config, "[audit]\nrepeats_in_full = 0\n")?;
    Ok(config)
}

/// b. Daemon RSS idle and after a storm of audited calls; journal lines and drops.
fn row_daemon_rss(ctx: &mut Ctx) -> Result<Row> {
    ctx.start_daemon()?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = ctx.daemon_rss_kib()?;
    let storm = ctx.clockcall(&["storm", STORM_CALLS]);
    if let Err(e) = &storm {
        eprintln!("bench: cg-clockcall storm: {e:#}");
    }
    let storm = storm?;

    // Wait until the journal stops growing (bounded 60 s); summary records come one to two
    // summary intervals (2 to 4 s) after the calls, so it must stand still for 5 s.
    let start = Instant::now();
    let mut lines = ctx.journal_lines()?;
    let mut still_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = ctx.journal_lines()?;
        if now != lines {
            still_since = Instant::now();
        }
        lines = now;
        if still_since.elapsed() >= Duration::from_secs(5)
            || start.elapsed() > Duration::from_secs(60)
        {
            break;
        }
    }
    let settle = start.elapsed().as_secs_f64();
    let post = ctx.daemon_rss_kib()?;
    // The daemon trims its heap once a sample interval (1 s) passed without records.
    std::thread::sleep(Duration::from_secs(3));
    let quiet = ctx.daemon_rss_kib()?;
    let status = ctx.status().ok();
    let drops = status
        .as_ref()
        .and_then(|s| s.get("ring_buffer_drops").and_then(Value::as_f64));
    let summarised = status
        .as_ref()
        .and_then(|s| s["kernel"].get("events_summarised").and_then(Value::as_f64));

    let mut row = Row::new();
    row.set("storm_calls", num(STORM_CALLS.parse::<f64>()?));
    row.set("idle_rss_kib", num(idle as f64));
    row.set("post_storm_rss_kib", num(post as f64));
    row.set("rss_3s_later_kib", num(quiet as f64));
    row.set("journal_lines", num(lines as f64));
    row.set("ring_buffer_drops", opt(drops));
    row.set("events_summarised", opt(summarised));
    row.set("journal_settle_s", num((settle * 10.0).round() / 10.0));
    row.set("storm_output", storm);
    Ok(row)
}

/// A bench setting from the environment: `default` when unset, an error naming the
/// variable when it is not a number.
fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// CPU ticks (utime + stime, 1/100 s) a process has used.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("bad /proc/PID/stat")
    };
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    Ok(field(11)? + field(12)?)
}

/// The daemon's NTP server answering 1000 requests per second from 100 loopback clients:
/// its CPU share and RSS while it does (the host clock is not touched: observe mode).
fn row_ntp_server_load(ctx: &mut Ctx) -> Result<Row> {
    let config = ctx.root.join("ntp-load.toml");
    fs::write(
        &config,
        format!(
            "mode = \"observe\"\n[ntp]\nserve = \"127.0.0.1:{NTP_LOAD_PORT}\"\n\
             # 100 clients at 10 requests/s each: allow 16/s, bursts of 16.\n\
             rate_limit_interval = -4\nrate_limit_burst = 16\n"
        ),
    )?;
    ctx.start_daemon_with(Some(&config))?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = ctx.daemon()?.pid();
    let rss_before = ctx.daemon_rss_kib()?;
    let ticks_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let out = capture(
        root_cmd(ctx.bin("cg-ntpref"), &[])
            .arg("load")
            .arg(format!("127.0.0.1:{NTP_LOAD_PORT}"))
            .args(["--rate", NTP_LOAD_RATE, "--seconds", NTP_LOAD_SECONDS])
            .args(["--clients", NTP_LOAD_CLIENTS]),
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid)? - ticks_before;
    let rss_after = ctx.daemon_rss_kib()?;
    let load = last_object(&out).context("cg-ntpref load printed no JSON object")?;
    ctx.stop_daemon();
    let mut row = Row::new();
    row.set("requests_per_s", num(NTP_LOAD_RATE.parse()?));
    row.set("clients", num(NTP_LOAD_CLIENTS.parse()?));
    row.set("sent", load["sent"].clone());
    row.set("answered", load["replies"].clone());
    row.set(
        "kod_or_unanswered",
        num(num_field(&load, "kod")? + num_field(&load, "unanswered")?),
    );
    // 100 ticks are one CPU second: ticks per second of wall time is the percentage.
    row.set(
        "cpu_percent",
        num((ticks as f64 / elapsed * 10.0).round() / 10.0),
    );
    row.set("rss_before_kib", num(rss_before as f64));
    row.set("rss_after_kib", num(rss_after as f64));
    row.set("load_output", load);
    Ok(row)
}

/// The soak row's loopback NTP port.
const SOAK_NTP_PORT: u16 = 12499;

/// One daemon under a steady load for CG_SOAK_MINUTES (default 60): 100 audited clock
/// calls per second from a new process each second (the enricher's cache churns), 200 NTP
/// requests per second from 20 loopback clients, a `status` query every 10 s, and the
/// journal rotating at 8 MiB. Its RSS is sampled every CG_SOAK_SAMPLE_S (default 60) s:
/// after the warm-up (the first 5 minutes: caches fill, the journal first rotates) it must
/// stay flat.
fn row_soak(ctx: &mut Ctx) -> Result<Row> {
    let minutes = env_u64("CG_SOAK_MINUTES", 60)?;
    let sample_every = Duration::from_secs(env_u64("CG_SOAK_SAMPLE_S", 60)?.max(1));
    let config = ctx.root.join("soak.toml");
    fs::write(
        &config,
        format!(
            "mode = \"observe\"\n[audit]\nmax_journal_bytes = 8388608\nkeep_journals = 2\n\
             # Every call journaled on its own: the soak is about the journaling path.\n\
             repeats_in_full = 0\n\
             [ntp]\nserve = \"127.0.0.1:{SOAK_NTP_PORT}\"\n\
             # 20 clients at 10 requests/s each: allow 16/s, bursts of 16.\n\
             rate_limit_interval = -4\nrate_limit_burst = 16\n"
        ),
    )?;
    ctx.start_daemon_with(Some(&config))?;
    std::thread::sleep(Duration::from_secs(2));
    let total = Duration::from_secs(minutes * 60);
    let ntp_load = root_cmd(ctx.bin("cg-ntpref"), &[])
        .arg("load")
        .arg(format!("127.0.0.1:{SOAK_NTP_PORT}"))
        .args(["--rate", "200", "--clients", "20", "--seconds"])
        .arg(total.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cg-ntpref load")?;
    let started = Instant::now();
    let mut series: Vec<(f64, u64)> = vec![(0.0, ctx.daemon_rss_kib()?)];
    let mut next_sample = started + sample_every;
    let mut next_query = started;
    let (mut clock_calls, mut queries) = (0u64, 0u64);
    while started.elapsed() < total {
        let second = Instant::now();
        ctx.clockcall(&["storm", "100"])?;
        clock_calls += 100;
        if second >= next_query {
            ctx.status()?;
            queries += 1;
            next_query += Duration::from_secs(10);
        }
        if second >= next_sample {
            let minute = started.elapsed().as_secs_f64() / 60.0;
            let rss = ctx.daemon_rss_kib()?;
            println!("bench: soak {minute:.1} min: RSS {rss} KiB");
            series.push((minute, rss));
            next_sample += sample_every;
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let minute = started.elapsed().as_secs_f64() / 60.0;
    series.push((minute, ctx.daemon_rss_kib()?));
    let load_out = ntp_load.wait_with_output()?;
    let load = last_object(&String::from_utf8_lossy(&load_out.stdout))
        .context("cg-ntpref load printed no JSON object")?;
    let status = ctx.status()?;
    ctx.stop_daemon();

    let warm: Vec<f64> = series
        .iter()
        .filter(|(m, _)| *m >= 5.0_f64.min(minutes as f64 / 2.0))
        .map(|(_, kib)| *kib as f64)
        .collect();
    let after_warmup = *warm.first().context("no RSS sample after the warm-up")?;
    let end = *warm.last().context("no RSS sample")?;
    let max = warm.iter().copied().fold(f64::MIN, f64::max);
    let min = warm.iter().copied().fold(f64::MAX, f64::min);
    let mut row = Row::new();
    row.set("minutes", num(minutes as f64));
    row.set("clock_calls", num(clock_calls as f64));
    row.set(
        "records_journaled",
        status["daemon"]["records_journaled"].clone(),
    );
    row.set("ring_buffer_drops", status["ring_buffer_drops"].clone());
    row.set("ntp_sent", load["sent"].clone());
    row.set("ntp_answered", load["replies"].clone());
    row.set("status_queries", num(queries as f64));
    row.set("rss_start_kib", num(series[0].1 as f64));
    row.set("rss_after_warmup_kib", num(after_warmup));
    row.set("rss_end_kib", num(end));
    row.set("rss_min_after_warmup_kib", num(min));
    row.set("rss_max_after_warmup_kib", num(max));
    row.set("growth_after_warmup_kib", num(end - after_warmup));
    row.set(
        "rss_series_kib",
        Value::from(
            series
                .iter()
                .map(|(m, kib)| json!({ "minute": (m * 10.0).round() / 10.0, "rss_kib": kib }))
                .collect::<Vec<_>>(),
        ),
    );
    row.set("load_output", load);
    Ok(row)
}

/// An hrtimer-heavy workload (cg-timerload) without and with the daemon (off, on, off, on;
/// medians): wakeups/s and the workload's CPU. Then once more with the kernel timing
/// the hook (measure_hook_cost) for its cost per expiry, which the CPU difference is
/// too noisy to show on its own.
fn row_timer_hook(ctx: &mut Ctx) -> Result<Row> {
    let workload = |ctx: &Ctx| -> Result<Value> {
        let out =
            capture(root_cmd(ctx.bin("cg-timerload"), &[]).args(["--seconds", TIMERLOAD_SECONDS]))?;
        last_object(&out).context("cg-timerload printed no JSON object")
    };
    let cpu_percent = |v: &Value| -> Result<f64> {
        Ok(num_field(v, "process_cpu_s")? / num_field(v, "seconds")? * 100.0)
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut expiries_per_s = Vec::new();
    for _ in 0..2 {
        ctx.stop_daemon();
        off.push(workload(ctx)?);
        ctx.start_daemon()?;
        if ctx.status()?["timers"]["lateness"].is_null() {
            return Ok(Row::not_available(
                "the hrtimer hook did not attach on this kernel".into(),
            ));
        }
        let before = num_field(&ctx.status()?["timers"]["lateness"], "expiries")?;
        let started = Instant::now();
        on.push(workload(ctx)?);
        let after = num_field(&ctx.status()?["timers"]["lateness"], "expiries")?;
        expiries_per_s.push((after - before) / started.elapsed().as_secs_f64());
    }
    let config = ctx.root.join("hook-cost.toml");
    fs::write(&config, "[audit]\nmeasure_hook_cost = true\n")?;
    ctx.start_daemon_with(Some(&config))?;
    workload(ctx)?;
    let costs = ctx.status()?["hook_costs"].clone();
    ctx.stop_daemon();
    let hook = costs
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "hrtimer_expire_entry")
        .with_context(|| format!("no hrtimer_expire_entry in hook_costs: {costs}"))?;
    let ns_per_expiry = num_field(hook, "ns_per_run")?;

    let median_of = |runs: &[Value], f: &dyn Fn(&Value) -> Result<f64>| -> Result<f64> {
        Ok(median(&runs.iter().map(f).collect::<Result<Vec<_>>>()?))
    };
    let wakeups = |v: &Value| num_field(v, "wakeups_per_s");
    let (cpu_off, cpu_on) = (
        median_of(&off, &cpu_percent)?,
        median_of(&on, &cpu_percent)?,
    );
    let expiries = median(&expiries_per_s);
    // The hook's own time as a share of one CPU, and of the workload's CPU. The hook runs in
    // the timer interrupt, charged to whatever task it interrupts (often the idle task), so
    // the workload's CPU with and without the daemon differ by less than run-to-run noise:
    // the kernel's own timing of the program is the measure.
    let hook_percent_of_cpu = expiries * ns_per_expiry / 1e9 * 100.0;
    let round = |x: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    };
    let mut row = Row::new();
    row.set(
        "wakeups_per_s_off",
        num(round(median_of(&off, &wakeups)?, 0)),
    );
    row.set("wakeups_per_s_on", num(round(median_of(&on, &wakeups)?, 0)));
    row.set("workload_cpu_percent_off", num(round(cpu_off, 1)));
    row.set("workload_cpu_percent_on", num(round(cpu_on, 1)));
    row.set("hooked_expiries_per_s", num(round(expiries, 0)));
    row.set("hook_ns_per_expiry", num(round(ns_per_expiry, 1)));
    row.set(
        "hook_cpu_percent_of_one_cpu",
        num(round(hook_percent_of_cpu, 3)),
    );
    row.set(
        "hook_extra_cpu_percent_of_workload",
        num(round(hook_percent_of_cpu / cpu_off * 100.0, 2)),
    );
    row.set("samples_off", Value::Array(off));
    row.set("samples_on", Value::Array(on));
    Ok(row)
}

/// In the test VM, side by side: each loop's ns per call without and with the guard
/// enforcing (its executable allowed), and the programs the kernel ran for it, timed by
/// the kernel (tests/bench/vm_guard_cost.sh).
fn row_guard_cost_vm(ctx: &mut Ctx) -> Result<Row> {
    let results = vm_results(ctx, "tests/bench/vm_guard_cost.sh")?;
    let mut row = Row::new();
    for r in &results {
        let name = r["loop"].as_str().unwrap_or("?").trim_end_matches("-loop");
        let name = name.replace('-', "_");
        row.set(&format!("{name}_ns_off"), r["ns_per_call_off"].clone());
        row.set(&format!("{name}_ns_on"), r["ns_per_call_on"].clone());
        // The programs that ran for each call, "name ns" (empty: none ran).
        let per_call: Vec<String> = r["per_call"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} {} ns",
                    p["name"].as_str().unwrap_or("?"),
                    p["ns_per_run"]
                )
            })
            .collect();
        row.set(
            &format!("{name}_programs_per_call"),
            Value::from(if per_call.is_empty() {
                "none".to_string()
            } else {
                per_call.join(", ")
            }),
        );
    }
    if let Some(cs) = results.first().and_then(|r| r["clocksource"].as_str()) {
        row.set("clocksource", Value::from(cs));
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// In the test VM, on each kernel: the host rows "clock_settime cost" (rejected
/// clock_settime calls without and with clockguard, medians of two rounds) and "syscall to
/// journal latency" (tests/bench/vm_audit_cost.sh).
fn row_audit_cost_vm(ctx: &mut Ctx) -> Result<Row> {
    let results = vm_results(ctx, "tests/bench/vm_audit_cost.sh")?;
    let r = &results[0];
    let (off, on) = (numbers(&r["settime_ns_off"]), numbers(&r["settime_ns_on"]));
    if off.is_empty() || on.is_empty() {
        bail!("vm_audit_cost.sh gave no rounds: {r}");
    }
    let on_full = numbers(&r["settime_ns_on_full"]);
    if on_full.is_empty() {
        bail!("vm_audit_cost.sh gave no rounds with every call in full: {r}");
    }
    let (m_off, m_on, m_full) = (median(&off), median(&on), median(&on_full));
    let mut row = Row::new();
    row.set("calls_per_sample", r["calls"].clone());
    row.set("settime_ns_per_call_off", num(m_off));
    row.set("settime_ns_per_call_on", num(m_on));
    row.set("settime_added_ns_per_call", num(m_on - m_off));
    row.set("settime_ns_per_call_on_full", num(m_full));
    row.set("settime_added_ns_per_call_full", num(m_full - m_off));
    row.set("latency_p50_us", r["latency_p50_us"].clone());
    row.set("latency_p99_us", r["latency_p99_us"].clone());
    row.set("results", Value::Array(results.clone()));
    Ok(row)
}

/// In the test VM, side by side: clockguard and chronyd from 11 s behind a reference, and
/// a slew_instead agent's refused +11 s step slewed in by the guard
/// (tests/bench/vm_ntp_converge.sh). Times are on CLOCK_MONOTONIC_RAW.
fn row_ntp_converge_vm(ctx: &mut Ctx) -> Result<Row> {
    let results = vm_results(ctx, "tests/bench/vm_ntp_converge.sh")?;
    let mut row = Row::new();
    for r in &results {
        let client = r["client"].as_str().unwrap_or("?");
        row.set(
            &format!("{client}_converged_after_s"),
            r["converged_after_s"].clone(),
        );
        row.set(
            &format!("{client}_held_rms_ns"),
            r["rms_offset_after_converged_ns"].clone(),
        );
        row.set(
            &format!("{client}_held_max_ns"),
            r["max_abs_offset_after_converged_ns"].clone(),
        );
        row.set(
            &format!("{client}_largest_step_ns"),
            r["max_step_ns"].clone(),
        );
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// In the test VM, one boot, one reference behind netem (1 ms ± 200 µs each way), one
/// client at a time, none stepping, minpoll 4 / maxpoll 10 for all: clockguard, chronyd
/// and ntpd-rs, each from 11 s off (ntpd-rs from 0 s: it slews at most 495 ppm) and with
/// the reference 50 ppm fast; the time to |offset| < 1 ms held 20 s, then, after
/// CG_BENCH_SETTLE_S (120 s) for the client's start-up, a hold of CG_BENCH_HOLD_S (600 s)
/// with RMS, p99 and largest |offset| sampled every 100 ms, and the largest step a 1 ms
/// sampler saw (tests/bench/vm_ntp_netem.sh).
fn row_ntp_netem_vm(ctx: &mut Ctx) -> Result<Row> {
    crate::setup::ensure_ntpd_rs()?;
    let hold_s = env_u64("CG_BENCH_HOLD_S", 600)?;
    let settle_s = env_u64("CG_BENCH_SETTLE_S", 120)?;
    // Six rounds of at most 15 minutes to converge, the settling and the hold each, and
    // the boot.
    let limit_s = 6 * (900 + settle_s + hold_s) + 600;
    let results = vm_results_within(ctx, "tests/bench/vm_ntp_netem.sh", limit_s)?;
    let mut row = Row::new();
    row.set("hold_s", num(hold_s as f64));
    row.set("settle_s", num(settle_s as f64));
    for r in &results {
        let key = format!(
            "{}_{}",
            r["client"].as_str().unwrap_or("?"),
            r["round"].as_str().unwrap_or("?")
        );
        let m = &r["measured"];
        row.set(
            &format!("{key}_converged_after_s"),
            r["converged_after_s"].clone(),
        );
        row.set(&format!("{key}_rms_ns"), m["rms_ns"].clone());
        row.set(&format!("{key}_p99_ns"), m["p99_abs_ns"].clone());
        row.set(&format!("{key}_max_ns"), m["max_abs_ns"].clone());
        row.set(&format!("{key}_samples"), m["samples"].clone());
        row.set(&format!("{key}_largest_step_ns"), r["max_step_ns"].clone());
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// Runs a bench script in the test VM and returns its `RESULT {json}` lines. The row fails
/// when the script did not finish well (partial results are not measurements) or when a
/// name its `EXPECT` line announced has no RESULT (see `script_problems`).
fn vm_results(ctx: &Ctx, script: &str) -> Result<Vec<Value>> {
    vm_results_within(ctx, script, crate::vm::DEFAULT_TIMEOUT_SECS)
}

/// As `vm_results`, for a script that needs more than the VM's default time limit (s).
fn vm_results_within(ctx: &Ctx, script: &str, limit_s: u64) -> Result<Vec<Value>> {
    let command = ["bash".to_string(), script.to_string()];
    let kernel = match &ctx.vm_kernel {
        Some(k) => k.clone(),
        None => crate::kernels::default_kernel()?,
    };
    let run = crate::vm::run_in_vm_within(&kernel, &command, true, limit_s)?;
    let results: Vec<Value> = run
        .lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("RESULT "))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    let problems = script_problems(run.code, &run.lines, &results);
    if !problems.is_empty() {
        bail!(
            "{script}: {}; last lines:\n{}",
            problems.join("; "),
            run.lines[run.lines.len().saturating_sub(20)..].join("\n")
        );
    }
    Ok(results)
}

/// What makes a bench script's output no measurement: it exited non-zero or timed out, it
/// printed no RESULT, or an `EXPECT KEY NAME...` line of its own names a NAME that no
/// RESULT carries as its KEY (a client, mode or loop that failed or was skipped).
fn script_problems(code: Option<i32>, lines: &[String], results: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    match code {
        Some(0) => {}
        Some(c) => problems.push(format!("exited {c}")),
        None => problems.push("timed out".to_string()),
    }
    if results.is_empty() {
        problems.push("printed no RESULT line".to_string());
    }
    for expect in lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("EXPECT "))
    {
        let mut words = expect.split_whitespace();
        let Some(key) = words.next() else {
            continue;
        };
        let missing: Vec<&str> = words
            .filter(|name| !results.iter().any(|r| r[key].as_str() == Some(*name)))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("no RESULT for {key} {}", missing.join(", ")));
        }
    }
    problems
}

/// The numbers of a JSON array (a script's series); empty for anything else.
fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

/// Below this many samples a bench states no p99: it would be the maximum under another name.
const MIN_SAMPLES_FOR_P99: usize = 100;

/// The upper tail of `values` as a bench may state it: ("p99", value) from
/// MIN_SAMPLES_FOR_P99 samples on, else ("max_of_N", the maximum). None when empty.
fn upper_tail(values: &[f64]) -> Option<(String, f64)> {
    if values.len() >= MIN_SAMPLES_FOR_P99 {
        return percentile(values, 99.0).map(|p| ("p99".to_string(), p));
    }
    let max = values.iter().copied().reduce(f64::max)?;
    Some((format!("max_of_{}", values.len()), max))
}

/// The p-th percentile (0..=100, nearest rank) of `values`, None when empty.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// In the test VM, side by side: an IMAP worker killed by a backward step, and the time to
/// the VIP answering on the other node with keepalived following clockguard's track file,
/// polling `clockguard service-check`, or polling port 143 (tests/bench/vm_failover.sh).
fn row_failover_vm(ctx: &mut Ctx) -> Result<Row> {
    let results = vm_results(ctx, "tests/bench/vm_failover.sh")?;
    let mut row = Row::new();
    for r in &results {
        let mode = r["mode"].as_str().unwrap_or("?");
        let series = |key: &str| numbers(&r[key]);
        let to_vip = series("death_to_vip_ms");
        let to_track = series("death_to_track_file_ms");
        row.set(&format!("{mode}_rounds"), r["rounds"].clone());
        row.set(&format!("{mode}_failovers"), r["failovers"].clone());
        let p50 = |v: &[f64]| (!v.is_empty()).then(|| median(v));
        // A handful of rounds: their maximum, named so, not a "p99".
        let tail = |what: &str, v: &[f64]| match upper_tail(v) {
            Some((label, value)) => (format!("{what}_{label}_ms"), num(value)),
            None => (format!("{what}_max_ms"), Value::Null),
        };
        row.set(&format!("{mode}_death_to_vip_p50_ms"), opt(p50(&to_vip)));
        let (key, value) = tail(&format!("{mode}_death_to_vip"), &to_vip);
        row.set(&key, value);
        if mode == "track_file" {
            row.set("death_to_track_file_p50_ms", opt(p50(&to_track)));
            let (key, value) = tail("death_to_track_file", &to_track);
            row.set(&key, value);
        }
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// c. Latency from the syscall to its journal entry (cg-clockcall latency).
fn row_latency(ctx: &mut Ctx) -> Result<Row> {
    // Each call must reach the journal on its own, not as part of a summary count.
    let every_call_in_full = every_call_in_full_config(ctx)?;
    ctx.start_daemon_with(Some(&every_call_in_full))?;
    let runtime = ctx.daemon()?.runtime_dir.to_string_lossy().into_owned();
    match ctx.clockcall(&["latency", LATENCY_SAMPLES, "--runtime-dir", &runtime]) {
        Err(e) => Ok(Row::not_available(format!("{e:#}"))),
        Ok(v) => {
            let mut row = Row::new();
            row.set("samples", num(LATENCY_SAMPLES.parse::<f64>()?));
            row.set("p50_us", opt(v.get("p50_us").and_then(Value::as_f64)));
            row.set("p99_us", opt(v.get("p99_us").and_then(Value::as_f64)));
            row.set("output", v);
            Ok(row)
        }
    }
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
    // CG_BENCH_FILTER=text runs only the rows whose name contains it.
    let filter = std::env::var("CG_BENCH_FILTER").unwrap_or_default();
    for (name, f) in ROWS
        .iter()
        .filter(|(name, _)| name.contains(filter.as_str()))
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_obj() {
        let v = last_object("noise\n{\"ns_per_call\": 812.5}\n\n").unwrap();
        assert_eq!(num_field(&v, "ns_per_call").unwrap(), 812.5);
        assert!(last_object("nothing").is_none());
        // The last object wins; a trailing non-object JSON line is skipped.
        let v = last_object("{\"a\":1}\n{\"a\":2}\n[3]\n42\n").unwrap();
        assert_eq!(v, json!({"a": 2}));
    }

    #[test]
    fn number_series_from_json() {
        assert_eq!(
            super::numbers(&serde_json::json!([1, 2.5, "x", null])),
            [1.0, 2.5]
        );
        assert!(super::numbers(&serde_json::json!({"a": 1})).is_empty());
    }

    #[test]
    fn a_p99_needs_a_hundred_samples_else_it_is_a_max() {
        let eight = [5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 4.0, 7.0];
        assert_eq!(upper_tail(&eight), Some(("max_of_8".to_string(), 9.0)));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(upper_tail(&hundred), Some(("p99".to_string(), 99.0)));
        assert_eq!(upper_tail(&[]), None);
    }

    #[test]
    fn a_script_that_failed_or_lost_a_client_is_no_measurement() {
        let lines = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
        let both = [
            json!({"client": "a", "x": 1}),
            json!({"client": "b", "x": 2}),
        ];
        let out = lines("EXPECT client a b\nRESULT ...\nRESULT ...");
        assert!(script_problems(Some(0), &out, &both).is_empty());
        // Exit status 1 after printing both: still not a measurement.
        assert_eq!(script_problems(Some(1), &out, &both), ["exited 1"]);
        assert_eq!(script_problems(None, &out, &both), ["timed out"]);
        // Client b failed midway: a RESULT for a only.
        assert_eq!(
            script_problems(Some(0), &out, &both[..1]),
            ["no RESULT for client b"]
        );
        assert_eq!(
            script_problems(Some(0), &lines("EXPECT mode m"), &[]),
            ["printed no RESULT line", "no RESULT for mode m"]
        );
        // No EXPECT line: any RESULT will do.
        assert!(script_problems(Some(0), &lines("RESULT {}"), &both[..1]).is_empty());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 80.0), Some(4.0));
        assert_eq!(percentile(&v, 99.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(num(200_000.0).to_string(), "200000");
        assert_eq!(num(812.5).to_string(), "812.5");
        assert_eq!(num(f64::NAN), Value::Null);
        assert_eq!(opt(None), Value::Null);
        assert_eq!(fmt_value(&num(3.0)), "3");
        assert_eq!(fmt_value(&num(1.23456)), "1.235");
        assert_eq!(fmt_value(&num(812.54)), "812.5");
        assert_eq!(fmt_value(&json!([1, 2.5])), "1, 2.5");
        assert_eq!(fmt_value(&json!("x")), "\"x\"");
        assert_eq!(fmt_value(&Value::Null), "null");
    }
}
