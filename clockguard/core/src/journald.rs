//! Each audit record as a structured entry of the systemd journal, in journald's native
//! protocol (systemd's "Native Journal Protocol": one datagram of fields), so that a fleet's
//! log pipeline (journald forwarding, rsyslog, Vector, Fluent Bit, Loki) gets clockguard's
//! records with no glue: `journalctl -u clockguard CLOCKGUARD_VERDICT=denied` finds every
//! refused step. The hash-chained journal stays the record of truth; these entries carry
//! its seq and hash to tie back to it.
//!
//! Pure: the bytes of an entry. Sending them is the daemon's (clockguard/src/journald.rs).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::record::{Record, Source, Verdict};

/// The entry's MESSAGE_ID for records of `source` and `kind`: 128 bits of SHA-256 over
/// "clockguard:SOURCE:KIND", as 32 lowercase hex digits (systemd's form). Derived, so that
/// every kind has one and it never changes while the names do not.
pub fn message_id(source: Source, kind: &str) -> String {
    let digest = Sha256::digest(format!("clockguard:{source}:{kind}").as_bytes());
    hex::encode(&digest[..16])
}

/// syslog priority: a refused or would-be-refused step and a service fault are warnings
/// (4), any other clock change a notice (5), the rest (reads, summaries, the daemon's own
/// acts, recoveries) info (6).
pub fn priority(record: &Record) -> u8 {
    match record.verdict {
        Verdict::Denied | Verdict::WouldDeny | Verdict::Fault => 4,
        Verdict::Slewed | Verdict::Allowed => 5,
        Verdict::Observed if record.clock_was_set || record.delta_ns.is_some_and(|d| d != 0) => 5,
        _ => 6,
    }
}

/// One line a person reads in `journalctl`: what happened, the verdict, who, how far.
pub fn message(record: &Record) -> String {
    let mut m = match record.source {
        Source::Syscall => format!("clock {}", record.kind),
        Source::Kernel => format!("clock {} in the kernel", record.kind),
        Source::Fallback => format!("clock {} that no kernel hook reported", record.kind),
        Source::Timers => record.kind.replace('_', " "),
        Source::Service => {
            let service = record
                .detail
                .as_ref()
                .and_then(|d| d.get("service"))
                .and_then(|s| s.as_str())
                .unwrap_or("?");
            format!("service {service}: {}", record.kind.replace('_', " "))
        }
        Source::Daemon => format!("clockguard {}", record.kind),
    };
    if let Some(cause) = &record.cause {
        let _ = write!(m, " ({cause})");
    }
    if record.verdict != Verdict::Observed {
        let _ = write!(m, ", {}", record.verdict);
    }
    if let Some(comm) = &record.comm {
        let _ = write!(m, ", by {comm}");
        if let Some(pid) = record.pid {
            let _ = write!(m, "[{pid}]");
        }
        if let Some(exe) = &record.exe {
            let _ = write!(m, " ({exe})");
        }
    }
    if let Some(syscall) = &record.syscall {
        let _ = write!(m, " via {syscall}");
    }
    match (record.delta_ns, record.requested_delta_ns) {
        (Some(moved), _) if moved != 0 => {
            let _ = write!(m, ": moved {:+.6} s", moved as f64 / 1e9);
        }
        (_, Some(asked)) => {
            let _ = write!(m, ": asked {:+.6} s", asked as f64 / 1e9);
        }
        _ => {}
    }
    if record.result != "0" && !record.result.is_empty() && record.source == Source::Syscall {
        let _ = write!(m, " -> {}", record.result);
    }
    // One line: a field with a newline would still be sent whole, but `journalctl` shows
    // MESSAGE as the line.
    m.replace(['\n', '\r'], " ")
}

/// The entry's fields, in order: MESSAGE and the journal's own, then CLOCKGUARD_* (absent
/// when unknown), then the whole record as CLOCKGUARD_RECORD (the journal line, `line`).
pub fn fields(record: &Record, line: &str) -> Vec<(&'static str, String)> {
    let mut f: Vec<(&'static str, String)> = vec![
        ("MESSAGE", message(record)),
        ("MESSAGE_ID", message_id(record.source, &record.kind)),
        ("PRIORITY", priority(record).to_string()),
        ("SYSLOG_IDENTIFIER", "clockguard".into()),
        ("CLOCKGUARD_SEQ", record.seq.to_string()),
        ("CLOCKGUARD_SOURCE", record.source.to_string()),
        ("CLOCKGUARD_KIND", record.kind.clone()),
        ("CLOCKGUARD_VERDICT", record.verdict.to_string()),
        ("CLOCKGUARD_RESULT", record.result.clone()),
        ("CLOCKGUARD_TIME", record.time.clone()),
    ];
    let optional = [
        ("CLOCKGUARD_CAUSE", record.cause.clone()),
        ("CLOCKGUARD_SYSCALL", record.syscall.clone()),
        ("CLOCKGUARD_CLOCK", record.clock.clone()),
        (
            "CLOCKGUARD_DELTA_NS",
            record.delta_ns.map(|d| d.to_string()),
        ),
        (
            "CLOCKGUARD_REQUESTED_DELTA_NS",
            record.requested_delta_ns.map(|d| d.to_string()),
        ),
        ("CLOCKGUARD_PID", record.pid.map(|p| p.to_string())),
        ("CLOCKGUARD_UID", record.uid.map(|u| u.to_string())),
        ("CLOCKGUARD_COMM", record.comm.clone()),
        ("CLOCKGUARD_EXE", record.exe.clone()),
        ("CLOCKGUARD_UNIT", record.unit.clone()),
        ("CLOCKGUARD_HASH", record.hash.clone()),
    ];
    f.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v))),
    );
    f.push(("CLOCKGUARD_RECORD", line.to_string()));
    f
}

/// The datagram journald reads: `NAME=value\n` per field, or, for a value with a newline,
/// `NAME\n`, its length as 64-bit little-endian, the value and `\n` (the native protocol's
/// binary-safe form).
pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 10).sum());
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The kinds the catalog explains: (source, kind, subject, what it means and what to do).
const CATALOG: &[(Source, &str, &str, &str)] = &[
    (
        Source::Syscall,
        "step",
        "The system clock was stepped, or a step was refused",
        "A process asked to set the system clock (@CLOCKGUARD_SYSCALL@): @MESSAGE@. \
         CLOCKGUARD_VERDICT says what became of it: observed or allowed (the clock moved by \
         CLOCKGUARD_DELTA_NS), denied (the guard refused it, the caller got EPERM), slewed \
         (refused, and clockguard slews the requested delta in instead), would-deny (observe \
         mode). `clockguard audit` shows the record, CLOCKGUARD_SEQ and CLOCKGUARD_HASH tie \
         this entry to clockguard's hash-chained journal.",
    ),
    (
        Source::Syscall,
        "slew",
        "A slew of the system clock was started",
        "A process asked the kernel to slew the clock (adjtimex ADJ_OFFSET or adjtime): \
         @MESSAGE@.",
    ),
    (
        Source::Syscall,
        "frequency",
        "The system clock's frequency was changed",
        "A process changed the kernel clock's frequency correction: @MESSAGE@. With \
         exclusive_discipline in guard mode only clockguard may.",
    ),
    (
        Source::Syscall,
        "summary",
        "Repeated clock calls, counted",
        "A storm of clock calls that change nothing was summarised in the kernel: \
         CLOCKGUARD_RECORD's detail says how many, of which kind and by whom.",
    ),
    (
        Source::Kernel,
        "step",
        "The kernel moved the system clock",
        "The kernel ran clock_was_set() outside a clock syscall (a leap second, sleep time \
         injected by the RTC): @MESSAGE@.",
    ),
    (
        Source::Fallback,
        "step",
        "The clock jumped and no kernel hook reported it",
        "clockguard's userspace detector saw the clock move (@MESSAGE@) and none of its \
         kernel hooks explained it. `clockguard status` lists the hooks that are not \
         attached.",
    ),
    (
        Source::Timers,
        "stall",
        "Timers did not run: the machine or a CPU stalled",
        "hrtimers fired late by the time in CLOCKGUARD_RECORD: @MESSAGE@. CLOCKGUARD_CAUSE \
         says why where clockguard can tell (vm_paused, hypervisor_steal, machine_stall, \
         cpu_stall). Programs that measure time saw it jump.",
    ),
    (
        Source::Timers,
        "suspend",
        "The machine was suspended",
        "CLOCK_BOOTTIME moved past CLOCK_MONOTONIC: the machine slept for the time in \
         CLOCKGUARD_RECORD.",
    ),
    (
        Source::Timers,
        "clocksource_jump",
        "The clocksource jumped",
        "The kernel's clocksource moved against the others: @MESSAGE@.",
    ),
    (
        Source::Timers,
        "clocksource_unstable",
        "The kernel marked a clocksource unstable",
        "The kernel's clocksource watchdog gave up a clocksource (@CLOCKGUARD_CAUSE@) and \
         switches to another: timekeeping may have jumped.",
    ),
    (
        Source::Service,
        "died_from_time_jump",
        "A tracked service died after a time jump",
        "@MESSAGE@. The death came within the service's jump_window_s of the time jump \
         named in CLOCKGUARD_RECORD's detail.jump; the service is in fault for its hold, and \
         keepalived, following its track file, moves the address.",
    ),
    (
        Source::Service,
        "log_match_after_time_jump",
        "A tracked service logged a time-jump failure",
        "@MESSAGE@. A line of the service's log matched one of its log_patterns after a \
         time jump: it counts as a death.",
    ),
    (
        Source::Service,
        "recovered",
        "A tracked service is healthy again",
        "@MESSAGE@. Its probe passed rise times after the hold: the fault is cleared.",
    ),
    (
        Source::Daemon,
        "start",
        "clockguard started",
        "clockguard attached its kernel hooks and journals clock changes (@MESSAGE@).",
    ),
    (
        Source::Daemon,
        "seal",
        "clockguard sealed its audit journal",
        "A forward-secure sealing epoch ended: every record up to this one (CLOCKGUARD_SEQ, \
         CLOCKGUARD_HASH) is MACed with a key that has now evolved and been overwritten. A \
         remote copy of this entry is an outside witness of the journal's head; `clockguard \
         audit --verify --verify-key KEY` proves the records up to it.",
    ),
    (
        Source::Daemon,
        "reload",
        "clockguard reloaded its configuration",
        "The configuration was reloaded: CLOCKGUARD_RECORD's detail lists what was applied \
         at once and what waits for a restart.",
    ),
];

/// The message catalog (systemd's format, installed in /usr/lib/systemd/catalog/):
/// `journalctl -x` shows each entry's explanation by its MESSAGE_ID.
pub fn catalog() -> String {
    let mut out = String::from(
        "# clockguard's journal message catalog: `journalctl -x` explains its entries by\n\
         # MESSAGE_ID. Generated by `clockguard generate-docs`.\n",
    );
    for (source, kind, subject, text) in CATALOG {
        let _ = write!(
            out,
            "\n-- {}\nSubject: {subject}\nDefined-By: clockguard\nDocumentation: man:clockguard(8)\n\n{text}\n",
            message_id(*source, kind)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_step() -> Record {
        Record {
            seq: 42,
            time: "2026-12-06T10:00:00.000000001Z".into(),
            source: Source::Syscall,
            syscall: Some("clock_settime".into()),
            clock: Some("CLOCK_REALTIME".into()),
            kind: "step".into(),
            requested_delta_ns: Some(-10_000_000_000),
            result: "EPERM".into(),
            verdict: Verdict::Denied,
            pid: Some(4518),
            comm: Some("date".into()),
            exe: Some("/usr/bin/date".into()),
            unit: Some("ssh.service".into()),
            hash: Some("ab".repeat(32)),
            ..Record::default()
        }
    }

    #[test]
    fn a_refused_step_reads_as_one_line_with_who_and_how_far() {
        assert_eq!(
            message(&refused_step()),
            "clock step, denied, by date[4518] (/usr/bin/date) via clock_settime: asked \
             -10.000000 s -> EPERM"
        );
        assert_eq!(priority(&refused_step()), 4);
        let mut observed = refused_step();
        observed.verdict = Verdict::Observed;
        observed.result = "0".into();
        observed.delta_ns = Some(2_500_000_000);
        observed.comm = Some("evil\nname".into());
        let m = message(&observed);
        assert!(m.ends_with("via clock_settime: moved +2.500000 s"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        assert_eq!(priority(&observed), 5);
        let read = Record {
            kind: "read".into(),
            result: "0".into(),
            ..Record::default()
        };
        assert_eq!(priority(&read), 6);
    }

    #[test]
    fn fields_carry_the_record_and_skip_what_is_unknown() {
        let record = refused_step();
        let fields = fields(&record, "{\"seq\":42}");
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("CLOCKGUARD_SEQ"), Some("42"));
        assert_eq!(get("CLOCKGUARD_VERDICT"), Some("denied"));
        assert_eq!(get("CLOCKGUARD_REQUESTED_DELTA_NS"), Some("-10000000000"));
        assert_eq!(get("CLOCKGUARD_UNIT"), Some("ssh.service"));
        assert_eq!(get("CLOCKGUARD_HASH"), record.hash.as_deref());
        assert_eq!(get("CLOCKGUARD_RECORD"), Some("{\"seq\":42}"));
        assert_eq!(
            get("CLOCKGUARD_DELTA_NS"),
            None,
            "unknown is absent, not empty"
        );
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(fields[0].0, "MESSAGE");
    }

    #[test]
    fn values_with_a_newline_go_length_prefixed() {
        let bytes = encode(&[("A", "x".into()), ("B", "1\n2".into())]);
        let mut want = b"A=x\nB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"1\n2\n");
        assert_eq!(bytes, want);
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        // Pinned: a MESSAGE_ID is an interface (catalogs, alert queries) and must not move.
        assert_eq!(
            message_id(Source::Syscall, "step"),
            "f628fdd1f7cb018e7311f46832c60678"
        );
        assert_ne!(
            message_id(Source::Syscall, "step"),
            message_id(Source::Kernel, "step")
        );
        assert_ne!(
            message_id(Source::Syscall, "step"),
            message_id(Source::Syscall, "slew")
        );
        let catalog = catalog();
        for (source, kind, subject, _) in CATALOG {
            assert!(
                catalog.contains(&format!(
                    "-- {}\nSubject: {subject}\n",
                    message_id(*source, kind)
                )),
                "{source}:{kind}"
            );
        }
    }
}
