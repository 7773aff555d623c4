//! Prometheus metrics (`[metrics] listen`, off by default): the daemon's status and the NTP
//! tracking state, encoded by the prometheus-client crate (OpenMetrics text) and served on
//! GET /metrics. Names follow Prometheus conventions: base units in the name (`_seconds`),
//! counters end in `_total`.
//!
//! The exposition is built from the same `status` object `clockguard status --json`
//! prints, so the two never disagree.

use std::{
    fmt,
    sync::atomic::{AtomicI64, AtomicU64},
    time::Duration,
};

use anyhow::Result;
use prometheus_client::{
    encoding::{text::encode, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType},
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};

use clockguard_core::status::{bucket_le_ns, NtsReport, ServiceState, Status, Tracking};

use crate::{control::Query, ntp::client::NtpHandle};
use clockguard_core::clockbound::ClockStatus;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The lateness histogram's exposed buckets: bucket indices 10..=36, i.e. upper edges
/// from 1 µs to 69 s (2^i − 1 ns), then +Inf. A fixed set, so that rates across scrapes
/// line up; the kernel's finer and coarser buckets fold into the neighbours.
const EXPOSED_BUCKETS: std::ops::RangeInclusive<usize> = 10..=36;

/// A histogram whose buckets were counted elsewhere (in the kernel).
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    /// (upper edge, count in this bucket only), the last one +Inf.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The kernel's log2 buckets (counts per bucket) folded into EXPOSED_BUCKETS, in seconds.
fn lateness_histogram(counts: &[u64], sum_ns: u64) -> CountedHistogram {
    let mut buckets = Vec::new();
    let mut carried = 0;
    for (index, &count) in counts.iter().enumerate() {
        carried += count;
        if index >= *EXPOSED_BUCKETS.start() && index <= *EXPOSED_BUCKETS.end() {
            buckets.push((bucket_le_ns(index) as f64 / 1e9, carried));
            carried = 0;
        }
    }
    buckets.push((f64::INFINITY, carried));
    CountedHistogram {
        sum: sum_ns as f64 / 1e9,
        count: counts.iter().sum(),
        buckets,
    }
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: f64) -> FloatGauge {
    let g = FloatGauge::default();
    g.set(value);
    g
}

fn int_gauge(value: i64) -> Gauge<i64, AtomicI64> {
    let g = Gauge::<i64, AtomicI64>::default();
    g.set(value);
    g
}

/// The OpenMetrics text for a status object and, when NTP runs, its tracking object and
/// its NTS servers.
pub fn exposition(
    status: &Status,
    tracking: Option<&Tracking>,
    nts: &[NtsReport],
) -> Result<String> {
    let mut r = Registry::with_prefix("clockguard");

    // A gauge of 1 rather than an OpenMetrics `info`: the Prometheus text parser (promtool)
    // knows no info type.
    let build = Family::<Labels, Gauge>::default();
    build
        .get_or_create(&vec![
            ("version".to_string(), status.version.clone()),
            ("mode".to_string(), status.mode.clone()),
            // The mode asked for: an alert on guard configured but not enforcing needs it
            // (`mode` says observe while deferring to another time service).
            (
                "mode_configured".to_string(),
                status.mode_configured.clone(),
            ),
        ])
        .set(1);
    r.register(
        "build_info",
        "clockguard's version, the mode in effect and the mode configured",
        build,
    );
    r.register(
        "guard_enforcing",
        "1 while the guard refuses clock steps in the kernel",
        int_gauge(i64::from(status.enforcement.active)),
    );
    let hooks = Family::<Labels, Gauge>::default();
    for hook in &status.hooks {
        if hook.replaced_by.is_some() {
            // A syscall tracepoint that fentry/fexit made unnecessary: a 0 here would
            // look like a missing hook to an alert on `hook_attached == 0`.
            continue;
        }
        let labels = vec![
            ("hook".to_string(), hook.name.clone()),
            ("kind".to_string(), hook.kind.clone()),
        ];
        hooks.get_or_create(&labels).set(i64::from(hook.attached));
    }
    r.register("hook_attached", "1 if the hook is attached", hooks);
    let misses = Family::<Labels, Counter>::default();
    for (hook, &n) in status.hook_misses.iter().flatten() {
        misses
            .get_or_create(&vec![("hook".to_string(), hook.clone())])
            .inc_by(n);
    }
    r.register(
        "hook_misses",
        "Runs of a hook the kernel skipped (the program was already running on that CPU, \
         e.g. preempted inside it): events lost before clockguard could count them",
        misses,
    );

    // Zeros without the eBPF side, as before the status was typed.
    let kernel = status.kernel.unwrap_or_default();
    r.register(
        "ring_buffer_drops",
        "Clock events the kernel could not deliver (ring buffer full)",
        counter(kernel.ring_buffer_drops),
    );
    r.register(
        "events_summarised",
        "Repeated clock calls counted in a summary record instead of journaled one by one",
        counter(kernel.events_summarised),
    );
    r.register(
        "clock_syscalls",
        "Clock-setting syscalls seen (read-only adjtimex included)",
        counter(kernel.clock_syscalls),
    );
    r.register(
        "steps_refused",
        "Clock steps the guard refused (the caller got EPERM)",
        counter(kernel.guard_denied),
    );
    r.register(
        "steps_would_refuse",
        "Clock steps guard mode would have refused, seen in observe mode",
        counter(kernel.guard_would_deny),
    );
    r.register(
        "journal_records",
        "Records written to the journal",
        counter(status.daemon.records_journaled),
    );
    let jumps = Family::<Labels, Counter>::default();
    for (cause, &n) in &status.daemon.jumps {
        jumps
            .get_or_create(&vec![("cause".to_string(), cause.clone())])
            .inc_by(n);
    }
    r.register(
        "time_jumps",
        "Times the clock moved under running programs, by cause (step, kernel, unexplained, \
         vm_paused, hypervisor_steal, machine_stall, cpu_stall, suspend, clocksource_jump)",
        jumps,
    );

    let services = &status.services;
    if !services.is_empty() {
        let healthy = Family::<Labels, Gauge>::default();
        let deaths = Family::<Labels, Counter>::default();
        for service in services {
            let name = service.name.clone();
            healthy
                .get_or_create(&vec![("service".to_string(), name.clone())])
                .set(i64::from(service.state != ServiceState::Fault));
            let after_jump = service.deaths_after_time_jump;
            for (label, n) in [
                ("true", after_jump),
                ("false", service.deaths.saturating_sub(after_jump)),
            ] {
                deaths
                    .get_or_create(&vec![
                        ("service".to_string(), name.clone()),
                        ("after_time_jump".to_string(), label.to_string()),
                    ])
                    .inc_by(n);
            }
        }
        r.register(
            "service_healthy",
            "0 while the tracked service is in fault (its keepalived track file says 1)",
            healthy,
        );
        r.register(
            "service_deaths",
            "Deaths (exits with a non-zero status or a signal) of a tracked service's processes",
            deaths,
        );
    }

    let timers = &status.timers;
    let found = &timers.found;
    r.register(
        "stalls",
        "Stalls: times when timers did not run for stall_threshold_ms or more",
        counter(found.stalls),
    );
    if let Some(duration) = found.last_stall.as_ref().map(|s| s.duration_ns as f64) {
        r.register_with_unit(
            "last_stall",
            "How long the last stall held timers up",
            Unit::Seconds,
            gauge(duration / 1e9),
        );
    }
    r.register(
        "timer_late_events_lost",
        "Late hrtimer expiries that could not be sent (ring buffer full)",
        counter(timers.late_events_lost.unwrap_or(0)),
    );
    if let Some(lateness) = &timers.lateness {
        let mut counts = vec![0u64; 64];
        for &(le, count) in &lateness.buckets {
            // (upper edge ns, count): the edge is 2^i − 1, so i = bit length of edge.
            let index = (64 - le.leading_zeros()) as usize;
            counts[index.min(63)] += count;
        }
        r.register_with_unit(
            "timer_lateness",
            "How late CLOCK_MONOTONIC hrtimers expired (now - soft expiry)",
            Unit::Seconds,
            lateness_histogram(&counts, lateness.sum_ns),
        );
    }

    // Only while a vmclock device is followed: elsewhere there is nothing to count.
    let vmclock = &status.vm.vmclock;
    if let Some(page) = &vmclock.page {
        r.register(
            "vmclock_disruptions",
            "Changes of the vmclock device's disruption marker (live migrations, snapshots \
             restored) since clockguard started",
            counter(vmclock.disruptions),
        );
        r.register(
            "vmclock_disruption_soon",
            "1 while the host warns of maintenance within about a day (vmclock)",
            int_gauge(i64::from(page.disruption_soon())),
        );
        r.register(
            "vmclock_disruption_imminent",
            "1 while the host warns of maintenance within about an hour (vmclock)",
            int_gauge(i64::from(page.disruption_imminent())),
        );
    }

    if let Some(t) = tracking {
        r.register(
            "ntp_synchronized",
            "1 while a source is selected",
            int_gauge(i64::from(t.synchronized)),
        );
        if let Some(offset) = t.offset_s {
            r.register_with_unit(
                "ntp_offset",
                "System clock minus NTP time (positive: the clock is ahead)",
                Unit::Seconds,
                gauge(offset),
            );
        }
        if let Some(freq) = t.frequency_ppm {
            r.register_with_unit(
                "ntp_frequency",
                "Frequency correction applied to the kernel clock, ppm",
                Unit::Other("ppm".into()),
                gauge(freq),
            );
        }
        if let Some(dispersion) = t.root_dispersion_s {
            r.register_with_unit(
                "ntp_root_dispersion",
                "Root dispersion of the time served",
                Unit::Seconds,
                gauge(dispersion),
            );
        }
        if let Some(stratum) = t.stratum {
            r.register("ntp_stratum", "Stratum", int_gauge(stratum.into()));
        }
        if let Some(server) = &t.server {
            let c = &server.counters;
            let packets = Family::<Labels, Counter>::default();
            for (result, n) in [
                ("answered", c.answered),
                ("nts_answered", c.nts_answered),
                ("nts_nak", c.nts_naks),
                ("kiss_rate", c.kiss_rate),
                ("rate_limited", c.rate_limited),
                ("malformed", c.malformed),
                ("not_a_request", c.not_a_request),
                ("send_error", c.send_errors),
            ] {
                packets
                    .get_or_create(&vec![("result".to_string(), result.to_string())])
                    .inc_by(n);
            }
            r.register(
                "ntp_server_requests",
                "Datagrams the NTP server received, by what became of them: answered plain or \
                 with NTS, an NTS NAK, a RATE kiss, or dropped",
                packets,
            );
            if server.nts_ke.is_some() {
                let exchanges = Family::<Labels, Counter>::default();
                for (result, n) in [
                    ("ok", c.nts_key_exchanges),
                    ("failed", c.nts_key_exchange_errors),
                ] {
                    exchanges
                        .get_or_create(&vec![("result".to_string(), result.to_string())])
                        .inc_by(n);
                }
                r.register(
                    "nts_server_key_exchanges",
                    "NTS-KE exchanges clients made with this server, by result",
                    exchanges,
                );
            }
        }
    }
    if !nts.is_empty() {
        let packets = Family::<Labels, Counter>::default();
        let exchanges = Family::<Labels, Counter>::default();
        let cookies = Family::<Labels, Gauge>::default();
        for server in nts {
            let label = |result: &str| {
                vec![
                    ("server".to_string(), server.name.clone()),
                    ("result".to_string(), result.to_string()),
                ]
            };
            for (result, n) in [
                ("authenticated", server.authenticated),
                ("rejected", server.rejected),
                ("nak", server.naks),
            ] {
                packets.get_or_create(&label(result)).inc_by(n);
            }
            exchanges
                .get_or_create(&label("ok"))
                .inc_by(server.key_exchanges);
            exchanges
                .get_or_create(&label("failed"))
                .inc_by(server.key_exchange_errors);
            cookies
                .get_or_create(&vec![("server".to_string(), server.name.clone())])
                .set(server.cookies as i64);
        }
        r.register(
            "nts_packets",
            "NTP replies from NTS servers: authenticated (the only ones used), rejected \
             (forged, foreign or malformed) and NTS NAKs",
            packets,
        );
        r.register(
            "nts_key_exchanges",
            "NTS-KE exchanges with each NTS server, by result",
            exchanges,
        );
        r.register("nts_cookies", "NTS cookies held per server", cookies);
    }
    if let Some(bound) = &status.bound {
        r.register_with_unit(
            "clock_error_bound",
            "How far CLOCK_REALTIME may be from true time now, as ClockBound's readers take \
             it (the half width of [earliest, latest])",
            Unit::Seconds,
            gauge(bound.bound_ns as f64 / 1e9),
        );
        let states = Family::<Labels, Gauge>::default();
        for (name, state) in [
            ("unknown", ClockStatus::Unknown),
            ("synchronized", ClockStatus::Synchronized),
            ("free_running", ClockStatus::FreeRunning),
            ("disrupted", ClockStatus::Disrupted),
        ] {
            states
                .get_or_create(&vec![("status".to_string(), name.to_string())])
                .set(i64::from(bound.status == state));
        }
        r.register(
            "clock_error_bound_status",
            "1 for the clock status ClockBound's readers see now",
            states,
        );
        r.register(
            "clock_error_bound_segment_ok",
            "1 while the ClockBound segment is written",
            int_gauge(i64::from(bound.segment_error.is_none())),
        );
    }
    if let Some(remaining) = status
        .enforcement
        .slew
        .as_ref()
        .map(|s| s.remaining_ns as f64)
    {
        r.register_with_unit(
            "slew_remaining",
            "Correction the slew engine still has to apply",
            Unit::Seconds,
            gauge(remaining / 1e9),
        );
    }

    let mut text = String::new();
    encode(&mut text, &r)?;
    Ok(text)
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition, for scrapers and tools
/// that do not ask for OpenMetrics (promtool, curl): the same samples; a counter family's
/// HELP and TYPE carry the `_total` name its samples have, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Binds the metrics listener (config errors are caught at load; this is the bind).
pub async fn bind(listen: &str) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {listen}: {e}"))
}

pub async fn serve(listener: TcpListener, queries: mpsc::Sender<Query>, ntp: Option<NtpHandle>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("metrics accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (queries, ntp) = (queries.clone(), ntp.clone());
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(Duration::from_secs(10), handle(stream, queries, ntp)).await;
            if let Ok(Err(err)) = answered {
                tracing::debug!("metrics connection: {err:#}");
            }
        });
    }
}

/// A request head longer than this is refused.
const MAX_HEAD: usize = 8192;

/// The request line's method and path, once the head is complete; Err on a bad request.
pub fn parse_head(head: &[u8]) -> Result<Option<(String, String)>, &'static str> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if head.len() >= MAX_HEAD {
            Err("request head too large")
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&head[..end]).map_err(|_| "request head is not UTF-8")?;
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(path), Some(version)) if version.starts_with("HTTP/1.") => {
            Ok(Some((method.to_string(), path.to_string())))
        }
        _ => Err("not an HTTP/1.x request line"),
    }
}

async fn handle(
    mut stream: TcpStream,
    queries: mpsc::Sender<Query>,
    ntp: Option<NtpHandle>,
) -> Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let request: Result<(String, String), &str> = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        match parse_head(&head) {
            Ok(Some(request)) => break Ok(request),
            Ok(None) => continue,
            Err(why) => break Err(why),
        }
    };
    let (status_line, content_type, body) = match request {
        Err(why) => ("400 Bad Request", "text/plain", format!("{why}\n")),
        Ok((method, _)) if method != "GET" && method != "HEAD" => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Ok((_, path)) if path != "/metrics" && !path.starts_with("/metrics?") => (
            "404 Not Found",
            "text/plain",
            "clockguard serves /metrics\n".to_string(),
        ),
        Ok(_) => {
            let (tx, rx) = oneshot::channel();
            queries.send(Query::Status(tx)).await?;
            let status = rx.await?;
            let (tracking, nts) = match &ntp {
                Some(ntp) => (
                    ntp.tracking().await.ok(),
                    ntp.sources().await.map(|s| s.nts).unwrap_or_default(),
                ),
                None => (None, Vec::new()),
            };
            let text = exposition(&status, tracking.as_ref(), &nts)?;
            // Prometheus asks for OpenMetrics in its Accept header; anything else gets the
            // classic text format.
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            if head.contains("application/openmetrics-text") {
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                )
            } else {
                (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    prometheus_text(&text),
                )
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clockguard_core::status::{Counters, HookStatus, LatenessSummary, SlewStatus};

    /// The golden status with every family populated: guard enforcing, a slew, hooks
    /// attached and not, kernel counters, jumps, hook misses, a stall, timer lateness, a
    /// tracked service in fault, NTP tracking and a disrupted bound.
    fn full_status() -> (Status, Tracking) {
        let mut status = crate::golden::status();
        status.mode = "guard".into();
        status.enforcement.active = true;
        status.enforcement.slew = Some(SlewStatus {
            active: true,
            remaining_ns: 2_500_000_000,
            rate_ppm: 500.0,
            corrections: 1,
            refused: 0,
            absorbed_ns: 0,
            external_steps: 0,
            eta_s: Some(5.0),
        });
        status.hooks = vec![
            attached_hook("settime", "lsm", true),
            attached_hook("clock_was_set", "fentry", false),
            HookStatus {
                replaced_by: Some("fentry_adjtimex".into()),
                ..attached_hook("sys_enter_adjtimex", "tracepoint", false)
            },
        ];
        status.kernel = Some(Counters {
            ring_buffer_drops: 3,
            clock_syscalls: 10,
            guard_denied: 2,
            events_summarised: 99_000,
            ..Counters::default()
        });
        status.daemon.records_journaled = 12;
        status.daemon.jumps = [("step".to_string(), 4), ("vm_paused".to_string(), 1)].into();
        status.hook_misses = Some([("fexit_clock_settime".to_string(), 7)].into());
        let found = &mut status.timers.found;
        found.stalls = 1;
        found.last_stall = Some(crate::golden::stall());
        status.timers.late_events_lost = Some(0);
        status.timers.lateness = Some(LatenessSummary {
            sum_ns: 5_000_100_000,
            buckets: vec![(1023, 90), (131_071, 9), (8_589_934_591, 1)],
            ..LatenessSummary::default()
        });
        let mut dovecot = status.services[0].clone();
        dovecot.name = "dovecot".into();
        dovecot.state = ServiceState::Fault;
        dovecot.deaths = 3;
        dovecot.deaths_after_time_jump = 1;
        status.services = vec![dovecot];
        let mut tracking = crate::golden::tracking();
        tracking.offset_s = Some(-0.000_012);
        tracking.frequency_ppm = Some(12.5);
        tracking.root_dispersion_s = Some(0.001);
        let mut bound = clockguard_core::bound::Bound::new(
            clockguard_core::bound::Policy {
                drift_floor_ppb: 1_000,
                void_after_ns: 1_000_000_000_000,
                error_sigmas: 3.0,
                disruption_support: false,
                exclusive_discipline: true,
                slew_in_flight_ns: 0,
                pause_disrupts_ns: 1_000_000_000,
            },
            0,
            clockguard_core::time::Monotonic::from_ns(1_000_000_000),
        );
        bound.disrupted(
            clockguard_core::time::Monotonic::from_ns(2_000_000_000),
            clockguard_core::time::Monotonic::from_ns(2_000_000_000),
            clockguard_core::bound::Disruption::Pause { ns: 2_500_000_000 },
        );
        status.bound = Some(bound.answer(
            clockguard_core::time::Monotonic::from_ns(2_000_000_000),
            clockguard_core::time::Realtime::from_ns(1_800_000_000_000_000_000),
        ));
        (status, tracking)
    }

    #[test]
    fn the_exposition_names_units_and_counters_by_convention() {
        let (status, tracking) = full_status();
        let nts = NtsReport {
            name: "time.example:4460".into(),
            cookies: 7,
            key_exchanges: 2,
            key_exchange_errors: 1,
            authenticated: 40,
            rejected: 3,
            ..NtsReport::default()
        };
        let mut tracking = tracking;
        let server = tracking
            .server
            .as_mut()
            .expect("the golden tracking serves");
        server.nts_ke = Some("0.0.0.0:4460".into());
        server.counters.nts_answered = 12;
        server.counters.nts_key_exchanges = 3;
        let text = exposition(&status, Some(&tracking), &[nts]).unwrap();
        for line in [
            "clockguard_ntp_server_requests_total{result=\"nts_answered\"} 12",
            "clockguard_ntp_server_requests_total{result=\"nts_nak\"} 0",
            "clockguard_nts_server_key_exchanges_total{result=\"ok\"} 3",
            "clockguard_nts_packets_total{server=\"time.example:4460\",result=\"authenticated\"} 40",
            "clockguard_nts_packets_total{server=\"time.example:4460\",result=\"rejected\"} 3",
            "clockguard_nts_packets_total{server=\"time.example:4460\",result=\"nak\"} 0",
            "clockguard_nts_key_exchanges_total{server=\"time.example:4460\",result=\"failed\"} 1",
            "clockguard_nts_cookies{server=\"time.example:4460\"} 7",
            "clockguard_clock_error_bound_seconds 2.5",
            "clockguard_clock_error_bound_status{status=\"disrupted\"} 1",
            "clockguard_clock_error_bound_status{status=\"synchronized\"} 0",
            "clockguard_clock_error_bound_segment_ok 1",
            "clockguard_steps_refused_total 2",
            "clockguard_ring_buffer_drops_total 3",
            "clockguard_events_summarised_total 99000",
            "clockguard_hook_misses_total{hook=\"fexit_clock_settime\"} 7",
            "clockguard_time_jumps_total{cause=\"step\"} 4",
            "clockguard_time_jumps_total{cause=\"vm_paused\"} 1",
            "clockguard_hook_attached{hook=\"clock_was_set\",kind=\"fentry\"} 0",
            "clockguard_guard_enforcing 1",
            "clockguard_stalls_total 1",
            "clockguard_last_stall_seconds 5.002",
            "clockguard_slew_remaining_seconds 2.5",
            "clockguard_ntp_offset_seconds -0.000012",
            "clockguard_ntp_synchronized 1",
            "clockguard_timer_lateness_seconds_count 100",
            "clockguard_timer_lateness_seconds_sum 5.0001",
            // 90 expiries under 1 µs: all in the first exposed bucket.
            "clockguard_timer_lateness_seconds_bucket{le=\"0.000001023\"} 90",
            "clockguard_timer_lateness_seconds_bucket{le=\"+Inf\"} 100",
            "clockguard_service_healthy{service=\"dovecot\"} 0",
            "clockguard_service_deaths_total{service=\"dovecot\",after_time_jump=\"true\"} 1",
            "clockguard_service_deaths_total{service=\"dovecot\",after_time_jump=\"false\"} 2",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // A tracepoint that fentry/fexit replaced is not a missing hook.
        assert!(!text.contains("sys_enter_adjtimex"), "{text}");
        // The 5 s expiry lies above 4.29 s and within 8.59 s.
        assert!(text.contains("clockguard_timer_lateness_seconds_bucket{le=\"4.294967295\"} 99"));
        assert!(text.contains("clockguard_timer_lateness_seconds_bucket{le=\"8.589934591\"} 100"));
    }

    fn attached_hook(name: &str, kind: &str, attached: bool) -> HookStatus {
        HookStatus {
            attached,
            ..HookStatus::new(name, kind, name.into())
        }
    }

    #[test]
    fn a_followed_vmclock_device_has_its_disruptions_and_warnings() {
        let mut status = crate::golden::status();
        let text = exposition(&status, None, &[]).unwrap();
        assert!(!text.contains("vmclock"), "no device, no vmclock metrics");
        let mut page = [0u8; clockguard_core::vmclock::ABI_LEN];
        page[0..4].copy_from_slice(&clockguard_core::vmclock::MAGIC.to_le_bytes());
        page[8] = 1;
        page[24] = clockguard_core::vmclock::FLAG_DISRUPTION_IMMINENT as u8;
        status.vm.vmclock.page = Some(clockguard_core::vmclock::parse(&page).unwrap());
        status.vm.vmclock.disruptions = 2;
        let text = exposition(&status, None, &[]).unwrap();
        for line in [
            "clockguard_vmclock_disruptions_total 2",
            "clockguard_vmclock_disruption_soon 0",
            "clockguard_vmclock_disruption_imminent 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn without_ntp_or_hook_those_metrics_are_absent() {
        let mut status = crate::golden::status();
        status.timers.lateness = None;
        let text = exposition(&status, None, &[]).unwrap();
        assert!(!text.contains("ntp_offset"));
        assert!(!text.contains("timer_lateness"));
        assert!(text.contains("clockguard_stalls_total 0"));
    }

    #[test]
    fn the_text_format_names_counter_families_by_their_samples() {
        let mut status = crate::golden::status();
        status.kernel = Some(Counters {
            guard_denied: 2,
            ..Counters::default()
        });
        let text = exposition(&status, None, &[]).unwrap();
        let classic = prometheus_text(&text);
        assert!(classic.contains("# TYPE clockguard_steps_refused_total counter\n"));
        assert!(classic.contains("# HELP clockguard_steps_refused_total Clock steps"));
        assert!(classic.contains("clockguard_steps_refused_total 2\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        // Gauges keep their names.
        assert!(classic.contains("# TYPE clockguard_guard_enforcing gauge\n"));
    }

    /// The alerting rules the package ships name only samples clockguard exposes (an alert
    /// on a misspelt metric would never fire), and labels those samples carry.
    #[test]
    fn the_shipped_alert_rules_name_only_exposed_metrics() {
        let (status, tracking) = full_status();
        let text = exposition(&status, Some(&tracking), &[]).unwrap();
        let rules = include_str!("../../packaging/prometheus/clockguard-rules.yml");
        let mut named = 0;
        for expr in rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr: "))
        {
            for (at, _) in expr.match_indices("clockguard_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let samples: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                    })
                    .collect();
                assert!(
                    !samples.is_empty(),
                    "{name} (in `{expr}`) is not exposed:\n{text}"
                );
                // A label matcher `name{label="..."}` needs that label on the samples.
                if let Some(matchers) = expr[at + name.len()..].strip_prefix('{') {
                    let matchers = &matchers[..matchers.find('}').expect("closed matcher")];
                    for label in matchers
                        .split(',')
                        .filter_map(|m| m.split_once('='))
                        .map(|(l, _)| l.trim())
                    {
                        assert!(
                            samples.iter().all(|s| s.contains(&format!("{label}=\""))),
                            "{name} has no label {label}: {samples:?}"
                        );
                    }
                }
                named += 1;
            }
        }
        assert!(named >= 7, "only {named} metrics named in the rules");
    }

    /// The exposition of the golden status is the one the clockguard of before the typed
    /// status wrote for it (golden/metrics-host*.txt, 2026-12-05; build_info's
    /// mode_configured label since 2026-12-06, the NTP server's requests since 2026-12-07). A family's samples come in
    /// the order of a hash map, so they are compared as a set; the families keep their order.
    #[test]
    fn the_exposition_is_unchanged() {
        let status = crate::golden::status();
        let tracking = crate::golden::tracking();
        for (text, golden) in [
            (
                exposition(&status, Some(&tracking), &[]).unwrap(),
                include_str!("../core/tests/golden/metrics-host.txt"),
            ),
            (
                exposition(&status, None, &[]).unwrap(),
                include_str!("../core/tests/golden/metrics-host-no-ntp.txt"),
            ),
        ] {
            assert_eq!(families(&text), families(golden));
        }
    }

    /// The exposition's families in order, each with its lines sorted.
    fn families(text: &str) -> Vec<Vec<&str>> {
        let mut families: Vec<Vec<&str>> = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP") || families.is_empty() {
                families.push(Vec::new());
            }
            families.last_mut().unwrap().push(line);
        }
        for family in &mut families {
            family.sort_unstable();
        }
        families
    }

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(("GET".into(), "/metrics".into())))
        );
        assert!(parse_head(b"\x16\x03\x01 tls hello\r\n\r\n").is_err());
        assert!(parse_head(&[b'a'; MAX_HEAD]).is_err());
    }
}
