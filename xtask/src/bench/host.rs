//! The rows measured on this host: the audit hooks' cost on clock_settime, the daemon's
//! RSS, syscall-to-journal latency, the NTP server under load, the timer hook and the soak.

use super::*;

/// a. clock_settime cost without and with the daemon (off, on, off, on; medians); a syscall
/// clockguard does not audit (clock_gettime past the vDSO), which pays the kernel's syscall
/// tracepoint path all the same; and clock_gettime through the vDSO, which no hook sees.
pub(super) fn row_settime_cost(ctx: &mut Ctx) -> Result<Row> {
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
pub(super) fn every_call_in_full_config(ctx: &Ctx) -> Result<PathBuf> {
    let config = ctx.root.join("every-call-in-full.toml");
    fs::write(&config, "[audit]\nrepeats_in_full = 0\n")?;
    Ok(config)
}

/// b. Daemon RSS idle and after a storm of audited calls; journal lines and drops.
pub(super) fn row_daemon_rss(ctx: &mut Ctx) -> Result<Row> {
    ctx.start_daemon()?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = ctx.daemon_rss_kib()?;
    let storm = ctx.clockcall(&["storm", STORM_CALLS]);
    if let Err(e) = &storm {
        eprintln!("bench: cg-clockcall storm: {e:#}");
    }
    let storm = storm?;

    let (lines, settle) = ctx.journal_settled()?;
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

/// The cost of sealing the journal: 100,000 calls with every call journaled on its own
/// (`repeats_in_full = 0`), with a sealing key and without, in alternating rounds (two
/// each): records journaled, ring buffer drops and the daemon's CPU time per record. The
/// calls are paced at SEALING_CALLS_PER_S: unpaced, a storm outruns the ring buffer on any
/// daemon and most calls are dropped before the journal (the "daemon RSS" row's count), so
/// the rounds would time the drops, not the journal.
const SEALING_CALLS_PER_S: &str = "10000";

/// The sealing row (see `SEALING_CALLS_PER_S`).
pub(super) fn row_sealing_cost(ctx: &mut Ctx) -> Result<Row> {
    let every_call_in_full = every_call_in_full_config(ctx)?;
    let mut rounds: Vec<Value> = Vec::new();
    for _ in 0..2 {
        for sealed in [false, true] {
            ctx.start_daemon_sealed(Some(&every_call_in_full), sealed)?;
            let (lines_before, _) = ctx.journal_settled()?;
            let cpu_before = ctx.daemon_cpu_s()?;
            ctx.clockcall(&["paced-storm", STORM_CALLS, SEALING_CALLS_PER_S])?;
            let (lines_after, _) = ctx.journal_settled()?;
            let cpu_s = ctx.daemon_cpu_s()? - cpu_before;
            let records = (lines_after - lines_before) as f64;
            let drops = ctx
                .status()?
                .get("ring_buffer_drops")
                .and_then(Value::as_f64);
            let mut round = serde_json::Map::new();
            round.insert("sealed".into(), Value::Bool(sealed));
            round.insert("records".into(), num(records));
            round.insert("daemon_cpu_s".into(), num(cpu_s));
            round.insert("ring_buffer_drops".into(), opt(drops));
            rounds.push(Value::Object(round));
        }
    }
    ctx.stop_daemon();
    let mut row = Row::new();
    row.set("calls", num(STORM_CALLS.parse::<f64>()?));
    row.set("calls_per_s", num(SEALING_CALLS_PER_S.parse::<f64>()?));
    for (sealed, name) in [(false, "off"), (true, "on")] {
        let of: Vec<&Value> = rounds.iter().filter(|r| r["sealed"] == sealed).collect();
        let median_of = |key: &str| {
            median(
                &of.iter()
                    .filter_map(|r| r[key].as_f64())
                    .collect::<Vec<_>>(),
            )
        };
        let (records, cpu_s) = (median_of("records"), median_of("daemon_cpu_s"));
        row.set(&format!("sealing_{name}_records"), num(records));
        row.set(&format!("sealing_{name}_daemon_cpu_s"), num(cpu_s));
        row.set(
            &format!("sealing_{name}_cpu_us_per_record"),
            num((cpu_s / records.max(1.0) * 1e7).round() / 10.0),
        );
        row.set(
            &format!("sealing_{name}_records_per_cpu_s"),
            num((records / cpu_s.max(1e-9)).round()),
        );
        row.set(
            &format!("sealing_{name}_ring_buffer_drops"),
            num(median_of("ring_buffer_drops")),
        );
    }
    row.set("rounds", Value::Array(rounds));
    Ok(row)
}

/// A bench setting from the environment: `default` when unset, an error naming the
/// variable when it is not a number.
pub(super) fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// CPU ticks (utime + stime, 1/100 s) a process has used.
pub(super) fn cpu_ticks(pid: u32) -> Result<u64> {
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

/// The daemon's NTP server, plain and with NTS side by side in one daemon (observe mode:
/// the host clock is not touched): 1000 requests per second from 100 loopback clients,
/// plain, then NTS (each client's key exchange made first, within the phase's CPU time);
/// then NTS key exchanges (TLS 1.3 handshakes) back to back from 4 threads for 10 s.
/// The daemon's CPU share and RSS in each phase. The load generator runs on the same two
/// cores, so the key exchanges per second are those of this machine, both ends included.
pub(super) fn row_ntp_server_load(ctx: &mut Ctx) -> Result<Row> {
    let pki = ctx.root.join("pki");
    capture(
        std::process::Command::new(util::repo_root().join("tests/make-test-pki.sh")).arg(&pki),
    )?;
    let config = ctx.root.join("ntp-load.toml");
    fs::write(
        &config,
        format!(
            "mode = \"observe\"\n[ntp]\nserve = \"127.0.0.1:{NTP_LOAD_PORT}\"\n\
             # 100 clients at 10 requests/s each: allow 16/s, bursts of 16.\n\
             rate_limit_interval = -4\nrate_limit_burst = 16\n\
             nts_ke = \"127.0.0.1:{NTS_KE_LOAD_PORT}\"\n\
             nts_cert = \"{}\"\nnts_key = \"{}\"\n",
            pki.join("server.pem").display(),
            pki.join("server.key").display()
        ),
    )?;
    ctx.start_daemon_with(Some(&config))?;
    std::thread::sleep(Duration::from_secs(1));
    let pid = ctx.daemon()?.pid();
    let mut row = Row::new();
    row.set("requests_per_s", num(NTP_LOAD_RATE.parse()?));
    row.set("clients", num(NTP_LOAD_CLIENTS.parse()?));
    row.set("rss_before_kib", num(ctx.daemon_rss_kib()? as f64));
    let ca = pki.join("ca.pem");
    let ke = format!("127.0.0.1:{NTS_KE_LOAD_PORT}");
    let ntp = format!("127.0.0.1:{NTP_LOAD_PORT}");
    let load = |nts: bool| {
        let mut c = root_cmd(ctx.bin("cg-ntpref"), &[]);
        c.args([
            "load",
            &ntp,
            "--rate",
            NTP_LOAD_RATE,
            "--seconds",
            NTP_LOAD_SECONDS,
        ])
        .args(["--clients", NTP_LOAD_CLIENTS]);
        if nts {
            c.args(["--nts-ke", &ke, "--ca"]).arg(&ca);
        }
        c
    };
    // (prefix of the row's keys, the load command)
    let phases = [
        ("", load(false)),
        ("nts_", load(true)),
        ("ke_", {
            let mut c = root_cmd(ctx.bin("cg-ntpref"), &[]);
            c.args(["nts-ke-load", &ke, "--seconds", NTS_KE_LOAD_SECONDS, "--ca"])
                .arg(&ca);
            c
        }),
    ];
    for (prefix, mut command) in phases {
        let ticks_before = cpu_ticks(pid)?;
        let started = Instant::now();
        let out = capture(&mut command)?;
        let elapsed = started.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid)? - ticks_before;
        let output = last_object(&out).context("cg-ntpref printed no JSON object")?;
        if prefix == "ke_" {
            row.set("ke_per_s", output["exchanges_per_s"].clone());
            row.set("ke_failed", output["failed"].clone());
        } else {
            row.set(&format!("{prefix}sent"), output["sent"].clone());
            row.set(&format!("{prefix}answered"), output["replies"].clone());
            row.set(
                &format!("{prefix}kod_or_unanswered"),
                num(num_field(&output, "kod")? + num_field(&output, "unanswered")?),
            );
        }
        // 100 ticks are one CPU second: ticks per second of wall time is the percentage.
        row.set(
            &format!("{prefix}cpu_percent"),
            num((ticks as f64 / elapsed * 10.0).round() / 10.0),
        );
        row.set(
            &format!("{prefix}rss_after_kib"),
            num(ctx.daemon_rss_kib()? as f64),
        );
        row.set(&format!("{prefix}load_output"), output);
    }
    ctx.stop_daemon();
    Ok(row)
}

/// What an application pays to read clockguard's error bound: ns per
/// `ClockBoundClient::now()` (ClockBound's own client crate) on the segment of a daemon
/// synchronised to a reference on loopback, against ns per clock_gettime(CLOCK_REALTIME)
/// through the vDSO and per pair of the two clock reads the client makes (its floor), in
/// one program, alternating rounds. Changes no clock (observe mode).
pub(super) fn row_bound_read_cost(ctx: &mut Ctx) -> Result<Row> {
    let params = ctx.root.join("bound-ref.json");
    let segment = ctx.root.join("clockbound/shm0");
    let mut reference = root_cmd(ctx.bin("cg-ntpref"), &[])
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{BOUND_REF_PORT}"))
        .arg("--params")
        .arg(&params)
        .args(["--offset-s", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the reference (cg-ntpref serve)")?;
    let measured = (|| -> Result<Value> {
        let config = ctx.root.join("bound.toml");
        fs::write(
            &config,
            format!(
                "mode = \"observe\"\n[ntp]\nservers = [\"127.0.0.1:{BOUND_REF_PORT}\"]\n\
                 [bound]\npath = \"{}\"\n",
                segment.display()
            ),
        )?;
        ctx.start_daemon_with(Some(&config))?;
        let runtime_dir = ctx.daemon()?.runtime_dir.clone();
        let started = Instant::now();
        loop {
            let now = capture(
                root_cmd(ctx.bin("clockguard"), &[])
                    .args(["now", "--json", "--runtime-dir"])
                    .arg(&runtime_dir),
            )
            .ok()
            .and_then(|out| last_object(&out));
            if now.as_ref().is_some_and(|n| n["status"] == "synchronized") {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the bound was not synchronized after 60 s: {now:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = capture(
            root_cmd(ctx.bin("cg-ntpref"), &[])
                .arg("read-cost")
                .arg("--segment")
                .arg(&segment)
                .args(["--reads", BOUND_READS]),
        )?;
        last_object(&out).context("cg-ntpref read-cost printed no JSON object")
    })();
    let _ = reference.kill();
    let _ = reference.wait();
    ctx.stop_daemon();
    let cost = measured?;
    if cost["errors"] != 0 {
        bail!("ClockBound's client failed some reads: {cost}");
    }
    let mut row = Row::new();
    row.set("status_read", cost["status"].clone());
    row.set("reads_per_round", cost["reads_per_round"].clone());
    row.set(
        "ns_per_clockbound_now",
        cost["ns_per_clockbound_now"].clone(),
    );
    row.set("ns_per_vdso_gettime", cost["ns_per_vdso_gettime"].clone());
    row.set("ratio", cost["ratio"].clone());
    row.set(
        "ns_per_client_clock_reads",
        cost["ns_per_client_clock_reads"].clone(),
    );
    row.set(
        "client_clock_reads_ratio",
        cost["client_clock_reads_ratio"].clone(),
    );
    Ok(row)
}

/// The soak row's loopback NTP port.
pub(super) const SOAK_NTP_PORT: u16 = 12499;

/// One daemon under a steady load for CG_SOAK_MINUTES (default 60): 100 audited clock
/// calls per second from a new process each second (the enricher's cache churns), 200 NTP
/// requests per second from 20 loopback clients, a `status` query every 10 s, and the
/// journal rotating at 8 MiB. Its RSS is sampled every CG_SOAK_SAMPLE_S (default 60) s:
/// after the warm-up (the first 5 minutes: caches fill, the journal first rotates) it must
/// stay flat.
pub(super) fn row_soak(ctx: &mut Ctx) -> Result<Row> {
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
pub(super) fn row_timer_hook(ctx: &mut Ctx) -> Result<Row> {
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

/// c. Latency from the syscall to its journal entry (cg-clockcall latency).
pub(super) fn row_latency(ctx: &mut Ctx) -> Result<Row> {
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
