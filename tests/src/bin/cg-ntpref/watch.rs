//! `watch`: samples the system clock against the reference until |offset| has held under a
//! bound.

use super::*;

pub(crate) fn watch_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(
        args,
        &[
            "--params",
            "--until-abs-ns",
            "--stopfile",
            "--interval-ms",
            "--hold-s",
            "--measure-s",
            "--settle-s",
        ],
        0,
    )?;
    let clock = RefClock::load(Path::new(opts.required("--params")?))?;
    let limit: i64 = opts
        .required("--until-abs-ns")?
        .parse()
        .map_err(|e| format!("--until-abs-ns: {e}"))?;
    if limit <= 0 {
        return Err("--until-abs-ns must be positive".into());
    }
    let stopfile = PathBuf::from(opts.required("--stopfile")?);
    let interval_ms: u64 = opts.parsed("--interval-ms", 100)?;
    if interval_ms == 0 {
        return Err("--interval-ms must be positive".into());
    }
    let hold_s: f64 = opts.parsed("--hold-s", 0.0)?;
    if !hold_s.is_finite() || !(0.0..=WATCH_LIMIT.as_secs_f64()).contains(&hold_s) {
        return Err(format!("--hold-s {hold_s}: out of range"));
    }
    let measure_s: f64 = opts.parsed("--measure-s", 0.0)?;
    if !measure_s.is_finite() || !(0.0..=86_400.0).contains(&measure_s) {
        return Err(format!(
            "--measure-s {measure_s}: out of range (0 to 86400)"
        ));
    }
    let settle_s: f64 = opts.parsed("--settle-s", 0.0)?;
    if !settle_s.is_finite() || !(0.0..=86_400.0).contains(&settle_s) {
        return Err(format!("--settle-s {settle_s}: out of range (0 to 86400)"));
    }
    let interval = Duration::from_millis(interval_ms);
    let mut out = watch(
        &clock,
        limit,
        &stopfile,
        interval,
        Duration::from_secs_f64(hold_s),
    );
    if measure_s > 0.0 && out["converged"] == json!(true) {
        std::thread::sleep(Duration::from_secs_f64(settle_s));
        out["settled_s"] = json!(settle_s);
        out["measured"] = measure(&clock, interval, Duration::from_secs_f64(measure_s));
    }
    Ok(out)
}

/// Samples the offset every `interval` for `length` (on CLOCK_MONOTONIC_RAW) and sums it up:
/// RMS, p99 and the largest |offset| in ns. The p99 is stated from 100 samples on.
pub(crate) fn measure(clock: &RefClock, interval: Duration, length: Duration) -> Value {
    let start = Instant::now();
    let start_raw = raw_ns();
    let mut offsets: Vec<i64> = Vec::new();
    loop {
        offsets.push(clock.sample_offset().offset_ns);
        if raw_ns() - start_raw >= length.as_nanos() as i64 {
            break;
        }
        // On a fixed grid, as in `watch`.
        let next = interval * (offsets.len() as u32);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let mut abs: Vec<i64> = offsets.iter().map(|o| o.abs()).collect();
    abs.sort_unstable();
    let rms =
        (offsets.iter().map(|&o| (o as f64).powi(2)).sum::<f64>() / offsets.len() as f64).sqrt();
    let p99 = p99_of_sorted(&abs);
    json!({
        "seconds": length.as_secs_f64(),
        "samples": offsets.len(),
        "rms_ns": rms.round() as i64,
        "p99_abs_ns": p99,
        "max_abs_ns": abs.last(),
        "mean_ns": (offsets.iter().map(|&o| o as f64).sum::<f64>() / offsets.len() as f64).round() as i64,
    })
}

/// The `q` quantile (0..=1) of sorted values, by nearest rank; None when there are none.
pub(crate) fn quantile_of_sorted(sorted: &[i64], q: f64) -> Option<i64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q).round() as usize])
}

/// The p99 of sorted values, stated from 100 values on (fewer cannot say it).
pub(crate) fn p99_of_sorted(sorted: &[i64]) -> Option<i64> {
    if sorted.len() >= 100 {
        quantile_of_sorted(sorted, 0.99)
    } else {
        None
    }
}

/// Samples the offset until |offset| < limit has held for `hold` (from the first sample
/// of the run below the limit to the latest), `stopfile` exists or WATCH_LIMIT passed.
pub(crate) fn watch(
    clock: &RefClock,
    limit: i64,
    stopfile: &Path,
    interval: Duration,
    hold: Duration,
) -> Value {
    let start = Instant::now();
    // Durations on CLOCK_MONOTONIC_RAW: Instant (CLOCK_MONOTONIC) runs up to 10 % fast or
    // slow while the clock is slewed, which is what is being watched.
    let start_raw = raw_ns();
    let mut samples = 0u64;
    // The current run below the limit: its start (since `start`), its largest |offset| and
    // the sum of its squared offsets (ns², for the RMS) over `run_samples`.
    let mut run: Option<(Duration, i64)> = None;
    // CLOCK_REALTIME when the current run began: what a daemon's own report of the same
    // moment can be compared with, however late the watch itself started.
    let mut run_started_realtime_ns = 0;
    let (mut run_sum_sq, mut run_samples) = (0f64, 0u64);
    let mut last_offset;
    let reason = loop {
        let at = Duration::from_nanos((raw_ns() - start_raw).max(0) as u64);
        last_offset = clock.sample_offset().offset_ns;
        samples += 1;
        if last_offset.abs() < limit {
            if run.is_none() {
                (run_sum_sq, run_samples) = (0.0, 0);
                run_started_realtime_ns = realtime_ns();
            }
            let (since, max) = run.get_or_insert((at, 0));
            *max = (*max).max(last_offset.abs());
            run_sum_sq += (last_offset as f64).powi(2);
            run_samples += 1;
            if at.saturating_sub(*since) >= hold {
                break "converged";
            }
        } else {
            run = None;
        }
        if stopfile.exists() {
            break "stopfile";
        }
        if at >= WATCH_LIMIT {
            break "time limit";
        }
        // On a fixed grid, so the sampling itself does not stretch the interval.
        let next = interval * (samples as u32);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    };
    json!({
        "converged": reason == "converged",
        "converged_after_s": run.map(|(since, _)| since.as_secs_f64()),
        "converged_at_realtime_ns": run.map(|_| run_started_realtime_ns),
        "final_offset_ns": last_offset,
        "max_abs_offset_after_converged_ns": run.map(|(_, max)| max),
        "rms_offset_after_converged_ns": run
            .map(|_| (run_sum_sq / run_samples.max(1) as f64).sqrt().round() as i64),
        "samples": samples,
        "stopped_by": reason,
        "elapsed_s": start.elapsed().as_secs_f64(),
    })
}
