//! `bound`: reads a ClockBound segment through ClockBound's own client crate, as a database
//! would, and holds each reading's [earliest, latest] against the reference's time at that
//! moment. The reference is the yardstick: a reading whose interval cannot contain it is
//! counted as outside, with by how much.

use std::collections::BTreeMap;

use clock_bound_client::{ClockBoundClient, ClockStatus};

use super::*;

/// How long `bound` waits for the segment to become readable (the daemon writes it at
/// start).
const OPEN_WAIT: Duration = Duration::from_secs(30);
/// Status changes listed in the report, at most.
const CHANGES_LISTED: usize = 64;

pub(crate) fn bound_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(
        args,
        &[
            "--params",
            "--segment",
            "--stopfile",
            "--interval-ms",
            "--vmclock",
            "--trace",
        ],
        0,
    )?;
    let mut params = Params::load(Path::new(opts.required("--params")?))?;
    let segment = opts.required("--segment")?;
    let stopfile = PathBuf::from(opts.required("--stopfile")?);
    let vmclock = opts.get("--vmclock").unwrap_or("/dev/vmclock0");
    let interval_ms: u64 = opts.parsed("--interval-ms", 1)?;
    if interval_ms == 0 {
        return Err("--interval-ms must be positive".into());
    }
    // Every 100th reading: s from the start, status, bound and true time − the interval's
    // middle (ns), one line each.
    let mut trace = match opts.get("--trace") {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("--trace {path}: {e}"))?,
        )),
        None => None,
    };
    let mut client = open_client(segment, vmclock)?;
    let interval = Duration::from_millis(interval_ms);
    let start = Instant::now();
    let start_raw = raw_ns();
    let mut tally = Tally::default();
    let mut reads = 0u32;
    while !stopfile.exists() && start.elapsed() < WATCH_LIMIT {
        // The reference as it is now (a `step` may have been added to the params).
        params.refresh()?;
        let clock = params.current();
        let before = raw_ns();
        let now = client.now();
        let after = raw_ns();
        let at_s = (after - start_raw) as f64 / 1e9;
        match now {
            Ok(now) => {
                let reading = Reading {
                    at_s,
                    status: status_name(now.clock_status),
                    earliest_ns: i128::from(now.earliest.tv_sec()) * NS_PER_S
                        + i128::from(now.earliest.tv_nsec()),
                    latest_ns: i128::from(now.latest.tv_sec()) * NS_PER_S
                        + i128::from(now.latest.tv_nsec()),
                    truth_from_ns: clock.at(before),
                    truth_to_ns: clock.at(after),
                };
                if let Some(out) = trace.as_mut().filter(|_| reads.is_multiple_of(100)) {
                    let middle = (reading.earliest_ns + reading.latest_ns) / 2;
                    writeln!(
                        out,
                        "{at_s:.3} {} {} {}",
                        reading.status,
                        (reading.latest_ns - reading.earliest_ns) / 2,
                        reading.truth_from_ns - middle
                    )
                    .map_err(|e| format!("--trace: {e}"))?;
                }
                tally.add(&reading);
            }
            Err(err) => tally.error(format!("{:?}", err.kind)),
        }
        reads = reads.saturating_add(1);
        // On a fixed grid, as in `watch`.
        if let Some(wait) = (interval * reads).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    if let Some(mut out) = trace {
        out.flush().map_err(|e| format!("--trace: {e}"))?;
    }
    let mut report = tally.report(start.elapsed().as_secs_f64());
    // The readings' seconds count from this CLOCK_MONOTONIC_RAW instant.
    report["started_raw_ns"] = json!(start_raw);
    Ok(report)
}

/// Rounds of `read-cost`, alternating the two reads; the median round counts.
const COST_ROUNDS: usize = 7;

/// `read-cost`: what an application pays per [earliest, latest]: ns per
/// `ClockBoundClient::now()` on the segment, against ns per clock_gettime(CLOCK_REALTIME)
/// through the vDSO (what it pays for the time alone), and per pair of the two reads the
/// client makes (CLOCK_REALTIME, then CLOCK_MONOTONIC_COARSE: its floor, whatever the
/// segment), in alternating rounds of `--reads` calls each; medians of the rounds.
pub(crate) fn read_cost_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(args, &["--segment", "--reads", "--vmclock"], 0)?;
    let segment = opts.required("--segment")?;
    let vmclock = opts.get("--vmclock").unwrap_or("/dev/vmclock0");
    let reads: u32 = opts.parsed("--reads", 1_000_000)?;
    if reads == 0 {
        return Err("--reads must be positive".into());
    }
    let mut client = open_client(segment, vmclock)?;
    let status = client
        .now()
        .map(|now| status_name(now.clock_status))
        .map_err(|e| format!("cannot read {segment}: {:?} {}", e.kind, e.detail))?;
    let (mut bound_ns, mut vdso_ns, mut pair_ns) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors = 0u64;
    let mut sink = 0i64;
    for _ in 0..COST_ROUNDS {
        let start = Instant::now();
        for _ in 0..reads {
            match client.now() {
                Ok(now) => sink ^= now.earliest.tv_nsec(),
                Err(_) => errors += 1,
            }
        }
        bound_ns.push(start.elapsed().as_nanos() as f64 / f64::from(reads));
        let start = Instant::now();
        for _ in 0..reads {
            sink ^= read_ns(libc::CLOCK_REALTIME);
        }
        vdso_ns.push(start.elapsed().as_nanos() as f64 / f64::from(reads));
        let start = Instant::now();
        for _ in 0..reads {
            sink ^= read_ns(libc::CLOCK_REALTIME) ^ read_ns(libc::CLOCK_MONOTONIC_COARSE);
        }
        pair_ns.push(start.elapsed().as_nanos() as f64 / f64::from(reads));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bound, vdso, pair) = (
        median(&mut bound_ns),
        median(&mut vdso_ns),
        median(&mut pair_ns),
    );
    Ok(json!({
        "status": status,
        "reads_per_round": reads,
        "rounds": COST_ROUNDS,
        "ns_per_clockbound_now": bound,
        "ns_per_vdso_gettime": vdso,
        "ratio": bound / vdso,
        "ns_per_client_clock_reads": pair,
        "client_clock_reads_ratio": pair / vdso,
        "errors": errors,
        // Keeps the reads from being optimised away.
        "sink": sink & 1,
    }))
}

/// The client, once the segment can be read (the daemon may still be starting).
fn open_client(segment: &str, vmclock: &str) -> Result<ClockBoundClient, String> {
    let start = Instant::now();
    loop {
        match ClockBoundClient::new_with_paths(segment, vmclock) {
            Ok(client) => return Ok(client),
            Err(err) if start.elapsed() >= OPEN_WAIT => {
                return Err(format!(
                    "cannot read the ClockBound segment {segment} after {} s: {:?} {}",
                    OPEN_WAIT.as_secs(),
                    err.kind,
                    err.detail
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn status_name(status: ClockStatus) -> &'static str {
    match status {
        ClockStatus::Unknown => "unknown",
        ClockStatus::Synchronized => "synchronized",
        ClockStatus::FreeRunning => "free_running",
        ClockStatus::Disrupted => "disrupted",
    }
}

/// One reading: the client's interval and status, and the reference's time just before
/// and just after the client read its clocks (UTC ns).
#[derive(Clone, Debug)]
pub(crate) struct Reading {
    pub(crate) at_s: f64,
    pub(crate) status: &'static str,
    pub(crate) earliest_ns: i128,
    pub(crate) latest_ns: i128,
    pub(crate) truth_from_ns: i128,
    pub(crate) truth_to_ns: i128,
}

impl Reading {
    /// How far the reference was outside the interval, ns: it cannot have been inside at
    /// the moment of the read (it was later than `latest` all along, or earlier than
    /// `earliest` all along). None when it can have been inside.
    pub(crate) fn miss_ns(&self) -> Option<i128> {
        if self.truth_from_ns > self.latest_ns {
            Some(self.truth_from_ns - self.latest_ns)
        } else if self.truth_to_ns < self.earliest_ns {
            Some(self.earliest_ns - self.truth_to_ns)
        } else {
            None
        }
    }
}

#[derive(Default, Debug)]
pub(crate) struct PerStatus {
    pub(crate) samples: u64,
    pub(crate) outside: u64,
    pub(crate) worst_miss_ns: i128,
    /// When the first and the last reading outside were taken (s from the start), and
    /// the worst miss's.
    pub(crate) miss_span_s: Option<(f64, f64)>,
    pub(crate) worst_miss_at_s: f64,
    /// Half widths (latest − earliest) / 2, ns.
    pub(crate) bounds_ns: Vec<i64>,
}

#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub(crate) by_status: BTreeMap<&'static str, PerStatus>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) changes: Vec<(f64, &'static str)>,
    /// The first reading outside whose status a client may trust (not unknown).
    pub(crate) changes_total: u64,
    pub(crate) last_status: Option<&'static str>,
    pub(crate) first_outside: Option<Reading>,
}

impl Tally {
    pub(crate) fn add(&mut self, r: &Reading) {
        if self.last_status != Some(r.status) {
            self.last_status = Some(r.status);
            self.changes_total += 1;
            if self.changes.len() < CHANGES_LISTED {
                self.changes.push((r.at_s, r.status));
            }
        }
        let per = self.by_status.entry(r.status).or_default();
        per.samples += 1;
        per.bounds_ns.push(
            ((r.latest_ns - r.earliest_ns) / 2)
                .try_into()
                .unwrap_or(i64::MAX),
        );
        if let Some(miss) = r.miss_ns() {
            per.outside += 1;
            if miss > per.worst_miss_ns {
                per.worst_miss_ns = miss;
                per.worst_miss_at_s = r.at_s;
            }
            per.miss_span_s = Some(
                per.miss_span_s
                    .map_or((r.at_s, r.at_s), |(first, _)| (first, r.at_s)),
            );
            // The first a client may trust (an unknown status says: do not use it).
            if self.first_outside.is_none() && r.status != "unknown" {
                self.first_outside = Some(r.clone());
            }
        }
    }

    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn report(&self, seconds: f64) -> Value {
        let by_status: serde_json::Map<String, Value> = self
            .by_status
            .iter()
            .map(|(status, per)| {
                let mut bounds = per.bounds_ns.clone();
                bounds.sort_unstable();
                (
                    (*status).to_string(),
                    json!({
                        "samples": per.samples,
                        "outside": per.outside,
                        "worst_miss_ns": (per.outside > 0).then_some(per.worst_miss_ns as i64),
                        "worst_miss_at_s": (per.outside > 0).then_some(per.worst_miss_at_s),
                        "outside_from_s": per.miss_span_s.map(|(first, _)| first),
                        "outside_to_s": per.miss_span_s.map(|(_, last)| last),
                        "bound_p50_ns": quantile_of_sorted(&bounds, 0.5),
                        // Below 100 samples only the largest is stated.
                        "bound_p99_ns": p99_of_sorted(&bounds),
                        "bound_max_ns": bounds.last(),
                    }),
                )
            })
            .collect();
        json!({
            "seconds": seconds,
            "samples": self.by_status.values().map(|p| p.samples).sum::<u64>(),
            "outside": self.by_status.values().map(|p| p.outside).sum::<u64>(),
            "by_status": by_status,
            "errors": self.errors,
            "status_changes": self.changes_total,
            "changes": self.changes.iter().map(|(at, s)| json!([at, s])).collect::<Vec<_>>(),
            "first_outside": self.first_outside.as_ref().map(|r| json!({
                "at_s": r.at_s,
                "status": r.status,
                "earliest_ns": r.earliest_ns.to_string(),
                "latest_ns": r.latest_ns.to_string(),
                "truth_ns": r.truth_from_ns.to_string(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(
        status: &'static str,
        earliest_ns: i128,
        latest_ns: i128,
        truth_ns: i128,
    ) -> Reading {
        Reading {
            at_s: 0.0,
            status,
            earliest_ns,
            latest_ns,
            truth_from_ns: truth_ns,
            truth_to_ns: truth_ns + 10,
        }
    }

    #[test]
    fn the_reference_outside_the_interval_is_counted_with_its_miss() {
        assert_eq!(reading("synchronized", 100, 200, 150).miss_ns(), None);
        // The read spans 195..205: the reference can have been at 200.
        assert_eq!(reading("synchronized", 100, 200, 195).miss_ns(), None);
        assert_eq!(reading("synchronized", 100, 200, 230).miss_ns(), Some(30));
        assert_eq!(reading("synchronized", 100, 200, 60).miss_ns(), Some(30));
    }

    #[test]
    fn a_tally_counts_by_status_and_lists_the_changes() {
        let mut t = Tally::default();
        for i in 0..150 {
            t.add(&reading("synchronized", 1_000 - i, 1_000 + i, 1_000));
        }
        t.add(&reading("disrupted", 0, 10, 500));
        t.add(&reading("disrupted", 0, 10, 500));
        t.add(&reading("synchronized", 0, 2_000, 1_000));
        t.error("CausalityBreach".into());
        let r = t.report(1.0);
        assert_eq!(r["samples"], 153);
        assert_eq!(r["outside"], 2);
        assert_eq!(r["status_changes"], 3);
        assert_eq!(r["by_status"]["disrupted"]["worst_miss_ns"], 490);
        assert_eq!(r["by_status"]["synchronized"]["outside"], 0);
        assert_eq!(r["by_status"]["synchronized"]["bound_max_ns"], 1_000);
        assert!(r["by_status"]["synchronized"]["bound_p99_ns"].is_number());
        assert!(
            r["by_status"]["disrupted"]["bound_p99_ns"].is_null(),
            "2 samples: no p99"
        );
        assert_eq!(r["errors"]["CausalityBreach"], 1);
        assert_eq!(r["first_outside"]["status"], "disrupted");
        assert_eq!(r["by_status"]["disrupted"]["outside_from_s"], 0.0);
    }
}
