//! How the CLI prints the daemon's answers as text (`status`, `tracking`, `sources`,
//! `service-check`, the `audit` table). Golden tests pin every byte of it.

use clockguard_core::status::{
    NtsReport, ServiceState, ServiceStatus, SourcesAnswer, Status, TimersStatus, Tracking, VmStatus,
};

use crate::record::Record;
use clockguard_core::{bound, clockbound::ClockStatus};

/// "dovecot: fault (died_from_time_jump, 3.2 s, hold 6.8 s), 7 processes, last: ..."
pub(crate) fn service_line(s: &ServiceStatus) -> String {
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

pub(crate) fn audit_header() -> String {
    format!(
        "{:<30} {:<8} {:<13} {:<9} {:>15} {:<7} {:>7} {:<15} {}",
        "TIME", "SOURCE", "SYSCALL", "KIND", "DELTA", "RESULT", "PID", "COMM", "EXE / UNIT"
    )
}

pub(crate) fn format_delta(delta_ns: Option<i64>) -> String {
    match delta_ns {
        Some(d) => format!("{:+.6}s", d as f64 / 1e9),
        None => "-".into(),
    }
}

pub(crate) fn audit_row(r: &Record) -> String {
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
pub(crate) fn status_text(s: &Status) -> String {
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
            "ntp: {} ({} servers, {} pools{}{}); `clockguard tracking` and `sources` for details",
            if ntp.disciplining {
                "disciplining the clock, slew only"
            } else {
                "measuring only"
            },
            ntp.servers.len(),
            ntp.pools.len(),
            if ntp.nts_servers.is_empty() {
                String::new()
            } else {
                format!(", {} NTS servers", ntp.nts_servers.len())
            },
            match (&ntp.serve, &ntp.nts_ke) {
                (Some(ntp), Some(ke)) => format!(", serving on {ntp} with NTS-KE on {ke}"),
                (Some(ntp), None) => format!(", serving on {ntp}"),
                _ => String::new(),
            }
        );
    }
    if let Some(bound) = &s.bound {
        push_line!(
            out,
            "bound: ±{} ({}){}; `clockguard now` for details",
            duration_text(bound.bound_ns as f64),
            status_name(bound.status),
            match (&bound.segment, &bound.segment_error) {
                (_, Some(err)) => format!(", segment NOT written: {err}"),
                (Some(path), None) => format!(", published at {path}"),
                (None, None) => String::new(),
            }
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
    match &s.journal.sealing {
        Some(sealing) => push_line!(
            out,
            "sealing: key id {}, epoch {}, a seal every {} s",
            sealing.key_id,
            sealing.epoch,
            sealing.interval_s
        ),
        None => push_line!(out, "sealing: off (clockguard audit --setup-keys)"),
    }
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
    // Only when journald is there: a machine without it has nothing to say here.
    if s.daemon.journald_entries + s.daemon.journald_dropped > 0 {
        push_line!(
            out,
            "systemd journal: {} entries sent, {} not taken",
            s.daemon.journald_entries,
            s.daemon.journald_dropped
        );
    }
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
pub(crate) fn duration_text(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

pub(crate) fn timers_text(out: &mut String, timers: &TimersStatus, vm: &VmStatus) {
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
    push_line!(out, "vmclock: {}", vmclock_text(&vm.vmclock));
}

/// The vmclock device's line of `status`: followed (marker, warnings, disruptions seen),
/// absent, or not looked for.
fn vmclock_text(v: &clockguard_core::vmclock::VmclockStatus) -> String {
    let Some(device) = &v.device else {
        return "not looked for (timers.vmclock is empty)".into();
    };
    let Some(page) = &v.page else {
        return v
            .not_followed
            .clone()
            .unwrap_or_else(|| format!("{device} not followed"));
    };
    // The nearer warning shouted.
    let warning = match page.maintenance_warning() {
        Some(w) if page.disruption_imminent() => format!(", {}", w.to_uppercase()),
        Some(w) => format!(", {w}"),
        None => String::new(),
    };
    let readers = match (&v.readers_compare, &v.readers_compare_not_because) {
        (Some(false), Some(why)) => format!("; the segment announces no disruption support: {why}"),
        _ => String::new(),
    };
    format!(
        "{device}, disruption marker {:#x}, {} disruptions seen{warning} ({}{}){readers}",
        page.disruption_marker,
        v.disruptions,
        v.watched_by.as_deref().unwrap_or("-"),
        if v.read_errors > 0 {
            format!(", {} failed reads", v.read_errors)
        } else {
            String::new()
        }
    )
}

/// Seconds with a sign and the unit that reads best (chronyc prints seconds too).
pub(crate) fn seconds(s: Option<f64>) -> String {
    match s {
        Some(s) if s.abs() >= 1.0 => format!("{s:+.6} s"),
        Some(s) if s.abs() >= 1e-3 => format!("{:+.3} ms", s * 1e3),
        Some(s) => format!("{:+.1} us", s * 1e6),
        None => "-".into(),
    }
}

/// What `clockguard tracking` prints (without its last newline).
fn status_name(status: ClockStatus) -> &'static str {
    match status {
        ClockStatus::Unknown => "unknown",
        ClockStatus::Synchronized => "synchronized",
        ClockStatus::FreeRunning => "free running",
        ClockStatus::Disrupted => "DISRUPTED",
    }
}

/// `clockguard now`: the interval, and what it is made of.
pub(crate) fn now_text(a: &bound::Answer) -> String {
    let mut out = String::new();
    let usable = matches!(
        a.status,
        ClockStatus::Synchronized | ClockStatus::FreeRunning
    );
    push_line!(
        out,
        "Status            : {}{}",
        status_name(a.status),
        if usable {
            ""
        } else {
            " (readers must not use the interval)"
        }
    );
    push_line!(out, "Earliest (UTC)    : {}", a.earliest);
    push_line!(out, "Latest (UTC)      : {}", a.latest);
    push_line!(
        out,
        "Bound             : ±{}, published {:.1} s ago, growing {:.3} ppm; void in {:.0} s",
        duration_text(a.bound_ns as f64),
        a.as_of_age_s,
        f64::from(a.max_drift_ppb) / 1e3,
        a.void_in_s.max(0.0)
    );
    let why = &a.why;
    if let Some(t) = &why.measured {
        push_line!(
            out,
            "Measured          : offset {} + {} estimate error + {} half root delay + {} root \
             dispersion + {} slewing in",
            duration_text(t.offset_ns as f64),
            duration_text(t.estimate_error_ns as f64),
            duration_text(t.half_root_delay_ns as f64),
            duration_text(t.root_dispersion_ns as f64),
            duration_text(t.slewing_in_ns as f64)
        );
        if t.unconfirmed_ns != 0 {
            push_line!(
                out,
                "Unconfirmed       : + {} (samples held back as outliers: spikes, or the \
                 server stepped)",
                duration_text(t.unconfirmed_ns as f64)
            );
        }
    } else {
        push_line!(out, "Measured          : not yet (no NTP estimate)");
    }
    push_line!(
        out,
        "Drift             : {:.3} ppm from the frequency's error + {:.3} ppm floor{}",
        f64::from(why.drift_from_skew_ppb) / 1e3,
        f64::from(why.drift_floor_ppb) / 1e3,
        if why.drift_floor_ppb >= clockguard_core::bound::KERNEL_SLEW_PPB {
            " (others may slew the clock: the guard does not hold exclusive_discipline)"
        } else {
            ""
        }
    );
    if why.slewing_in_ns != 0 {
        push_line!(
            out,
            "Slewing in        : {} (a refused step)",
            duration_text(why.slewing_in_ns as f64)
        );
    }
    if let Some(d) = &why.last_disruption {
        push_line!(
            out,
            "Last disruption   : {d:?}{}",
            if why.disrupted {
                ", not measured again yet"
            } else {
                ""
            }
        );
    }
    if why.sources_lost {
        push_line!(
            out,
            "Sources           : LOST (the bound grows at the drift)"
        );
    }
    match (&a.segment, &a.segment_error) {
        (Some(path), None) => push_line!(
            out,
            "Segment           : {path} (ClockBound protocol 2, {} writes)",
            a.segment_writes
        ),
        (path, Some(err)) => push_line!(
            out,
            "Segment           : NOT written{}: {err}",
            path.as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ),
        (None, None) => {}
    }
    out.trim_end().to_string()
}

pub(crate) fn tracking_text(t: &Tracking) -> String {
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
pub(crate) fn sources_text(s: &SourcesAnswer) -> String {
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
    for nts in &s.nts {
        push_line!(out, "{}", nts_line(nts));
    }
    out.pop();
    out
}

/// An NTS server's line under the sources table.
fn nts_line(nts: &NtsReport) -> String {
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut line = format!("NTS {}", nts.name);
    match &nts.address {
        Some(address) => line.push_str(&format!(
            " (NTP at {address}): {}, {}, {} authenticated, {} rejected",
            plural(nts.cookies as u64, "cookie"),
            plural(nts.key_exchanges, "key exchange"),
            nts.authenticated,
            nts.rejected
        )),
        None => line.push_str(": no key exchange has worked yet"),
    }
    if nts.naks > 0 {
        line.push_str(&format!(", {}", plural(nts.naks, "NTS NAK")));
    }
    if let Some(error) = &nts.last_error {
        line.push_str(&format!(
            "; {} failed, the last: {error}",
            plural(nts.key_exchange_errors, "key exchange")
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clockguard_core::status::ServicesAnswer;

    /// `clockguard status` and `service-check` print the golden answers as the clockguard of
    /// before the typed status did (its output for the very same answers, served by a
    /// stand-in control socket, 2026-12-05).
    #[test]
    fn status_text_is_unchanged() {
        let status = crate::golden::status();
        let golden = include_str!("../../core/tests/golden/status-host.txt");
        let printed = status_text(&status) + "\n";
        for (n, (now, then)) in printed.lines().zip(golden.lines()).enumerate() {
            assert_eq!(now, then, "line {} of the status text", n + 1);
        }
        assert_eq!(printed, golden);
        let services: ServicesAnswer =
            serde_json::from_str(include_str!("../../core/tests/golden/services-host.json"))
                .unwrap();
        let lines: Vec<String> = ["strict", "imap"]
            .iter()
            .map(|name| {
                let service = services.services.iter().find(|s| s.name == *name).unwrap();
                service_line(service) + "\n"
            })
            .collect();
        assert_eq!(
            lines.concat(),
            include_str!("../../core/tests/golden/service-check-host.txt")
        );
    }

    #[test]
    fn the_vmclock_line_says_what_is_followed_and_what_readers_can_do() {
        use clockguard_core::vmclock::{self, VmclockStatus};
        let mut page = [0u8; vmclock::ABI_LEN];
        page[0..4].copy_from_slice(&vmclock::MAGIC.to_le_bytes());
        page[8] = 1;
        page[16] = 2;
        page[24] = vmclock::FLAG_DISRUPTION_SOON as u8;
        let mut followed = VmclockStatus {
            device: Some("/dev/vmclock0".into()),
            page: Some(vmclock::parse(&page).unwrap()),
            disruptions: 1,
            watched_by: Some("read every 10 ms".into()),
            readers_compare: Some(true),
            ..Default::default()
        };
        assert_eq!(
            vmclock_text(&followed),
            "/dev/vmclock0, disruption marker 0x2, 1 disruptions seen, maintenance within \
             about a day (read every 10 ms)"
        );
        followed.readers_compare = Some(false);
        followed.readers_compare_not_because = Some("mode 0600".into());
        followed.read_errors = 3;
        assert!(vmclock_text(&followed).ends_with(
            "(read every 10 ms, 3 failed reads); the segment announces no disruption \
             support: mode 0600"
        ));
        let off = VmclockStatus::default();
        assert_eq!(
            vmclock_text(&off),
            "not looked for (timers.vmclock is empty)"
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
            include_str!("../../core/tests/golden/tracking-host.txt")
        );
        assert_eq!(
            sources_text(&crate::golden::sources()) + "\n",
            include_str!("../../core/tests/golden/sources-host.txt")
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
        s.nts = vec![
            NtsReport {
                name: "time.example:4460".into(),
                address: Some("192.0.2.1:123".into()),
                cookies: 7,
                key_exchanges: 1,
                authenticated: 40,
                rejected: 3,
                ..NtsReport::default()
            },
            NtsReport {
                name: "down.example:4460".into(),
                key_exchange_errors: 2,
                last_error: Some("connection refused".into()),
                ..NtsReport::default()
            },
        ];
        let text = sources_text(&s);
        assert!(
            text.contains(
                "\nNTS time.example:4460 (NTP at 192.0.2.1:123): 7 cookies, 1 key exchange, \
                 40 authenticated, 3 rejected\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "NTS down.example:4460: no key exchange has worked yet; 2 key exchanges \
                 failed, the last: connection refused"
            ),
            "{text}"
        );
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
        let records = include_str!("../../core/tests/golden/records.jsonl");
        let golden = include_str!("../../core/tests/golden/audit.txt");
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
