//! The rows measured inside the test VM (the guard's and the audit's cost, NTP convergence,
//! the netem link, failover) and how a VM script's results are read.

use super::*;

/// In the test VM, side by side: each loop's ns per call without and with the guard
/// enforcing (its executable allowed), and the programs the kernel ran for it, timed by
/// the kernel (tests/bench/vm_guard_cost.sh).
pub(super) fn row_guard_cost_vm(ctx: &mut Ctx) -> Result<Row> {
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
pub(super) fn row_audit_cost_vm(ctx: &mut Ctx) -> Result<Row> {
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

/// In the test VM: from a step's return to the ClockBound segment showing it (a new
/// disruption marker), over 200 steps (tests/bench/vm_bound_latency.sh).
pub(super) fn row_bound_latency_vm(ctx: &mut Ctx) -> Result<Row> {
    let results = vm_results(ctx, "tests/bench/vm_bound_latency.sh")?;
    let r = &results[0];
    if r["missed"] != 0 {
        bail!("steps the segment did not show within a second: {r}");
    }
    let mut row = Row::new();
    row.set("steps", r["steps"].clone());
    row.set("step_to_segment_p50_us", r["p50_us"].clone());
    row.set("step_to_segment_p99_us", r["p99_us"].clone());
    row.set("step_to_segment_max_us", r["max_us"].clone());
    Ok(row)
}

/// In the test VM, one boot, the same reference and the same events (steady state, a time
/// agent's +2 s step, a 5 s VM pause): the bound read every millisecond through
/// ClockBound's client from clockguard's segment and from ClockBound's own daemon over
/// chronyd; readings a client may trust that miss the reference's time, and the width
/// while synchronized (tests/bench/vm_bound_side_by_side.sh).
pub(super) fn row_bound_side_by_side_vm(ctx: &mut Ctx) -> Result<Row> {
    crate::setup::ensure_clockbound_d()?;
    let results = vm_results(ctx, "tests/bench/vm_bound_side_by_side.sh")?;
    let mut row = Row::new();
    for r in &results {
        let daemon = r["daemon"].as_str().unwrap_or("?");
        for key in [
            "samples",
            "outside_trusted",
            "worst_miss_ns",
            "held_bound_p50_ns",
            "held_bound_p99_ns",
            "synchronized_bound_p50_ns",
            "synchronized_bound_p99_ns",
        ] {
            row.set(&format!("{daemon}_{key}"), r[key].clone());
        }
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// In the test VM, side by side: clockguard and chronyd from 11 s behind a reference, and
/// a slew_instead agent's refused +11 s step slewed in by the guard
/// (tests/bench/vm_ntp_converge.sh). Times are on CLOCK_MONOTONIC_RAW.
pub(super) fn row_ntp_converge_vm(ctx: &mut Ctx) -> Result<Row> {
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
        row.set(
            &format!("{client}_step_beyond_read_spread_ns"),
            r["max_step_beyond_spread_ns"].clone(),
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
/// sampler saw (as read, and beyond what its reads' own spread can explain: a stall of
/// the emulator between two reads is not a step) (tests/bench/vm_ntp_netem.sh).
pub(super) fn row_ntp_netem_vm(ctx: &mut Ctx) -> Result<Row> {
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
        row.set(
            &format!("{key}_step_beyond_read_spread_ns"),
            r["max_step_beyond_spread_ns"].clone(),
        );
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// In the systemd machine (tests/bench/systemd_startup.sh), two boots of one copy of the
/// image: the first installs the package, the second boots with clockguard enabled. Boot
/// to clockguard's READY=1; clockguard's and Debian's chronyd's start-up under systemd,
/// side by side (medians of alternating rounds); and the 100,000-call storm with journald
/// forwarding on and off, side by side.
pub(super) fn row_systemd_vm(ctx: &mut Ctx) -> Result<Row> {
    use crate::vm::Machine;
    crate::package::package()?;
    if !crate::setup::chronyd_path().is_file() {
        bail!("no chronyd in target/tools: run `cargo xtask setup`");
    }
    let image = crate::systemd_vm::ensure_image()?;
    let copy = image.with_file_name("bench-installed.img");
    util::run(
        util::cmd("cp")
            .arg("--sparse=always")
            .arg(&image)
            .arg(&copy),
    )?;
    let script = "tests/bench/systemd_startup.sh";
    let results = machine_results(
        ctx,
        &Machine::SystemdKeepingWrites(copy.clone()),
        &[script, "install"],
        900,
    )
    .and_then(|_| {
        machine_results(
            ctx,
            &Machine::Systemd(copy.clone()),
            &[script, "measure"],
            1800,
        )
    });
    let _ = fs::remove_file(&copy);
    let results = results?;
    let mut row = Row::new();
    let of = |what: &'static str| results.iter().filter(move |r| r["what"] == what);
    if let Some(boot) = of("boot").next() {
        row.set(
            "boot_to_clockguard_ready_s",
            boot["boot_to_ready_s"].clone(),
        );
        row.set("boot_userspace_start_s", boot["userspace_start_s"].clone());
        row.set("boot_exec_to_ready_ms", boot["exec_to_ready_ms"].clone());
    }
    let median_of = |rows: Vec<&Value>, key: &str| -> Value {
        let values: Vec<f64> = rows.iter().filter_map(|r| r[key].as_f64()).collect();
        if values.is_empty() {
            Value::Null
        } else {
            num((median(&values) * 10.0).round() / 10.0)
        }
    };
    for daemon in ["clockguard", "chronyd"] {
        let rounds: Vec<&Value> = of("startup").filter(|r| r["daemon"] == daemon).collect();
        row.set(&format!("{daemon}_rounds"), num(rounds.len() as f64));
        row.set(
            &format!("{daemon}_start_to_active_ms_median"),
            median_of(rounds.clone(), "start_to_active_ms"),
        );
        if daemon == "clockguard" {
            row.set(
                "clockguard_exec_to_ready_ms_median",
                median_of(rounds, "exec_to_ready_ms"),
            );
        }
    }
    for journald in ["on", "off"] {
        let rounds: Vec<&Value> = of("storm").filter(|r| r["journald"] == journald).collect();
        for key in [
            "records",
            "records_per_s",
            "ring_buffer_drops",
            "daemon_cpu_s",
            "journald_sent",
            "journald_not_taken",
            "journald_kept",
            "status_unanswered",
        ] {
            row.set(
                &format!("storm_journald_{journald}_{key}_median"),
                median_of(rounds.clone(), key),
            );
        }
    }
    row.set("results", Value::Array(results));
    Ok(row)
}

/// Runs a bench script in the test VM and returns its `RESULT {json}` lines. The row fails
/// when the script did not finish well (partial results are not measurements) or when a
/// name its `EXPECT` line announced has no RESULT (see `script_problems`).
pub(super) fn vm_results(ctx: &Ctx, script: &str) -> Result<Vec<Value>> {
    vm_results_within(ctx, script, crate::vm::DEFAULT_TIMEOUT_SECS)
}

/// As `vm_results`, for a script that needs more than the VM's default time limit (s).
pub(super) fn vm_results_within(ctx: &Ctx, script: &str, limit_s: u64) -> Result<Vec<Value>> {
    machine_results(ctx, &crate::vm::Machine::HostRoot, &[script], limit_s)
}

/// Runs `bash SCRIPT ARGS...` (`script_and_args`) in `machine` on the row's kernel and
/// returns its `RESULT {json}` lines, as `vm_results` says.
fn machine_results(
    ctx: &Ctx,
    machine: &crate::vm::Machine,
    script_and_args: &[&str],
    limit_s: u64,
) -> Result<Vec<Value>> {
    let script = script_and_args.first().copied().unwrap_or_default();
    let command: Vec<String> = std::iter::once("bash")
        .chain(script_and_args.iter().copied())
        .map(String::from)
        .collect();
    let kernel = match &ctx.vm_kernel {
        Some(k) => k.clone(),
        None => crate::kernels::default_kernel()?,
    };
    let run = crate::vm::run_in_vm_within(&kernel, machine, &command, true, limit_s)?;
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
pub(super) fn script_problems(
    code: Option<i32>,
    lines: &[String],
    results: &[Value],
) -> Vec<String> {
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
pub(super) fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

/// Below this many samples a bench states no p99: it would be the maximum under another name.
pub(super) const MIN_SAMPLES_FOR_P99: usize = 100;

/// The upper tail of `values` as a bench may state it: ("p99", value) from
/// MIN_SAMPLES_FOR_P99 samples on, else ("max_of_N", the maximum). None when empty.
pub(super) fn upper_tail(values: &[f64]) -> Option<(String, f64)> {
    if values.len() >= MIN_SAMPLES_FOR_P99 {
        return percentile(values, 99.0).map(|p| ("p99".to_string(), p));
    }
    let max = values.iter().copied().reduce(f64::max)?;
    Some((format!("max_of_{}", values.len()), max))
}

/// The p-th percentile (0..=100, nearest rank) of `values`, None when empty.
pub(super) fn percentile(values: &[f64], p: f64) -> Option<f64> {
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
pub(super) fn row_failover_vm(ctx: &mut Ctx) -> Result<Row> {
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
