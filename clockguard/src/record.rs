//! The journal record: what one clock change (or attempt) was, decoded from the kernel's
//! `ClockEvent`. Pure code: no I/O, so the whole decoding is unit-tested.

use clockguard_ebpf::{self as abi, c_str_bytes, ClockEvent};
use serde_json::{json, Map, Value};

pub use clockguard_core::record::{rfc3339_ns, Ancestor, Record, Source, Verdict};

use abi::{
    ADJ_ADJTIME, ADJ_ESTERROR, ADJ_FREQUENCY, ADJ_MAXERROR, ADJ_MICRO, ADJ_NANO, ADJ_OFFSET,
    ADJ_OFFSET_READONLY, ADJ_SETOFFSET, ADJ_STATUS, ADJ_TAI, ADJ_TICK, ADJ_TIMECONST,
};

const MODE_NAMES: &[(u32, &str)] = &[
    (ADJ_OFFSET, "ADJ_OFFSET"),
    (ADJ_FREQUENCY, "ADJ_FREQUENCY"),
    (ADJ_MAXERROR, "ADJ_MAXERROR"),
    (ADJ_ESTERROR, "ADJ_ESTERROR"),
    (ADJ_STATUS, "ADJ_STATUS"),
    (ADJ_TIMECONST, "ADJ_TIMECONST"),
    (ADJ_TAI, "ADJ_TAI"),
    (ADJ_SETOFFSET, "ADJ_SETOFFSET"),
    (ADJ_MICRO, "ADJ_MICRO"),
    (ADJ_NANO, "ADJ_NANO"),
    (ADJ_TICK, "ADJ_TICK"),
    (ADJ_ADJTIME, "ADJ_OFFSET_SINGLESHOT"),
];

const STATUS_NAMES: &[(i32, &str)] = &[
    (0x0001, "STA_PLL"),
    (0x0002, "STA_PPSFREQ"),
    (0x0004, "STA_PPSTIME"),
    (0x0008, "STA_FLL"),
    (0x0010, "STA_INS"),
    (0x0020, "STA_DEL"),
    (0x0040, "STA_UNSYNC"),
    (0x0080, "STA_FREQHOLD"),
    (0x2000, "STA_NANO"),
];

/// Names of the set bits of an adjtimex `modes`; unknown bits as hex.
pub fn mode_names(modes: u32) -> Vec<String> {
    if modes & ADJ_ADJTIME != 0 {
        // adjtime(3) compatibility modes are whole values, not bit sets.
        let name = if modes & ADJ_OFFSET_READONLY != 0 {
            "ADJ_OFFSET_SS_READ"
        } else {
            "ADJ_OFFSET_SINGLESHOT"
        };
        return vec![name.to_string()];
    }
    let mut names = Vec::new();
    let mut rest = modes;
    for &(bit, name) in MODE_NAMES {
        if modes & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

fn status_names(status: i32) -> Vec<&'static str> {
    STATUS_NAMES
        .iter()
        .filter(|(bit, _)| status & bit != 0)
        .map(|&(_, name)| name)
        .collect()
}

/// What an adjtimex `modes` does, most significant first: a step outranks a slew, which
/// outranks a frequency change, and so on.
pub fn timex_kind(modes: u32) -> &'static str {
    if modes == 0 {
        return "read";
    }
    if modes & ADJ_ADJTIME != 0 {
        return if modes & ADJ_OFFSET_READONLY != 0 {
            "read"
        } else {
            "slew"
        };
    }
    if modes & ADJ_SETOFFSET != 0 {
        "step"
    } else if modes & ADJ_OFFSET != 0 {
        "slew"
    } else if modes & ADJ_TICK != 0 {
        "tick"
    } else if modes & ADJ_FREQUENCY != 0 {
        "frequency"
    } else if modes & ADJ_TAI != 0 {
        "tai"
    } else if modes & ADJ_STATUS != 0 {
        "status"
    } else {
        "params"
    }
}

pub fn syscall_name(syscall: u32) -> Option<&'static str> {
    match syscall {
        abi::SYSCALL_CLOCK_SETTIME => Some("clock_settime"),
        abi::SYSCALL_SETTIMEOFDAY => Some("settimeofday"),
        abi::SYSCALL_ADJTIMEX => Some("adjtimex"),
        abi::SYSCALL_CLOCK_ADJTIME => Some("clock_adjtime"),
        _ => None,
    }
}

/// The name of a clockid; dynamic (PTP, fd-based) clocks are negative: `FD(n)`.
pub fn clock_name(clock_id: i32) -> String {
    match clock_id {
        0 => "CLOCK_REALTIME".into(),
        1 => "CLOCK_MONOTONIC".into(),
        2 => "CLOCK_PROCESS_CPUTIME_ID".into(),
        3 => "CLOCK_THREAD_CPUTIME_ID".into(),
        4 => "CLOCK_MONOTONIC_RAW".into(),
        5 => "CLOCK_REALTIME_COARSE".into(),
        6 => "CLOCK_MONOTONIC_COARSE".into(),
        7 => "CLOCK_BOOTTIME".into(),
        8 => "CLOCK_REALTIME_ALARM".into(),
        9 => "CLOCK_BOOTTIME_ALARM".into(),
        11 => "CLOCK_TAI".into(),
        id if id < 0 && id & 7 == 3 => format!("FD({})", !(id >> 3)),
        id => format!("CLOCK_{id}"),
    }
}

/// "0" or the errno name of a syscall return value (-errno).
pub fn result_name(ret: i64) -> String {
    if ret >= 0 {
        return "0".into();
    }
    errno_name((-ret) as i32)
}

pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        _ => return format!("E{errno}"),
    };
    name.into()
}

fn time_value(sec: i64, nsec: i64) -> Value {
    if (0..1_000_000_000).contains(&nsec) {
        if let Some(ns) = sec
            .checked_mul(1_000_000_000)
            .and_then(|s| s.checked_add(nsec))
        {
            return Value::String(rfc3339_ns(ns));
        }
    }
    Value::Null
}

/// A NUL-terminated kernel string (comm, exe) as text; None when empty.
pub fn text(bytes: &[u8]) -> Option<String> {
    let bytes = c_str_bytes(bytes);
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// The requested value of a syscall event, as JSON, in the caller's own terms with units in
/// the key names (ns, µs as `_us`, ppm).
pub fn requested_json(event: &ClockEvent) -> Value {
    let mut out = Map::new();
    if event.flags & abi::FLAG_ARG_FAULT != 0 {
        out.insert("fault".into(), json!("argument not readable (EFAULT)"));
    }
    if event.flags & abi::FLAG_HAS_TIME != 0 {
        out.insert("sec".into(), json!(event.req_sec));
        if event.syscall == abi::SYSCALL_SETTIMEOFDAY {
            // Stored as ns by the kernel side; the caller passed µs.
            out.insert("usec".into(), json!(event.req_nsec / 1000));
        } else {
            out.insert("nsec".into(), json!(event.req_nsec));
        }
        out.insert("time".into(), time_value(event.req_sec, event.req_nsec));
    }
    if event.flags & abi::FLAG_HAS_TZ != 0 {
        out.insert(
            "tz".into(),
            json!({"minuteswest": event.tz_minuteswest, "dsttime": event.tz_dsttime}),
        );
    }
    if event.flags & abi::FLAG_HAS_TIMEX != 0 {
        let t = &event.timex;
        let modes = t.modes;
        out.insert("modes".into(), json!(mode_names(modes)));
        out.insert("modes_raw".into(), json!(modes));
        let nano = modes & ADJ_NANO != 0;
        if modes & ADJ_ADJTIME != 0 {
            // adjtime(3): offset in µs.
            out.insert("offset_us".into(), json!(t.offset));
        } else {
            if modes & ADJ_OFFSET != 0 {
                let key = if nano { "offset_ns" } else { "offset_us" };
                out.insert(key.into(), json!(t.offset));
            }
            if modes & ADJ_FREQUENCY != 0 {
                // Scaled ppm: ppm << 16.
                out.insert("freq_ppm".into(), json!(t.freq as f64 / 65536.0));
            }
            if modes & ADJ_MAXERROR != 0 {
                out.insert("maxerror_us".into(), json!(t.maxerror));
            }
            if modes & ADJ_ESTERROR != 0 {
                out.insert("esterror_us".into(), json!(t.esterror));
            }
            if modes & ADJ_STATUS != 0 {
                out.insert("status".into(), json!(status_names(t.status)));
            }
            if modes & ADJ_TIMECONST != 0 {
                out.insert("constant".into(), json!(t.constant));
            }
            if modes & ADJ_TAI != 0 {
                out.insert("tai_s".into(), json!(t.constant));
            }
            if modes & ADJ_TICK != 0 {
                out.insert("tick_us".into(), json!(t.tick));
            }
            if modes & ADJ_SETOFFSET != 0 {
                out.insert("setoffset_ns".into(), json!(setoffset_ns(t)));
            }
        }
    }
    Value::Object(out)
}

/// The clocks named by clock_was_set()'s `bases`: one bit per hrtimer base (enum
/// hrtimer_base_type: MONOTONIC 0, REALTIME 1, BOOTTIME 2, TAI 3, then the same + 4 for
/// the soft bases).
pub fn clocks_of_bases(bases: u32) -> Vec<&'static str> {
    const CLOCKS: [(u32, &str); 4] = [
        (0, "CLOCK_MONOTONIC"),
        (1, "CLOCK_REALTIME"),
        (2, "CLOCK_BOOTTIME"),
        (3, "CLOCK_TAI"),
    ];
    CLOCKS
        .iter()
        .filter(|(base, _)| bases & (1 << base | 1 << (base + 4)) != 0)
        .map(|&(_, name)| name)
        .collect()
}

/// The kind of a kernel event.
pub fn event_kind(event: &ClockEvent) -> &'static str {
    match event.kind {
        abi::EVENT_CLOCK_WAS_SET => "step",
        _ => match event.syscall {
            abi::SYSCALL_CLOCK_SETTIME => "step",
            abi::SYSCALL_SETTIMEOFDAY => {
                if event.flags & abi::FLAG_HAS_TIME != 0 {
                    "step"
                } else if event.flags & abi::FLAG_HAS_TZ != 0 {
                    "tz"
                } else {
                    "unknown"
                }
            }
            abi::SYSCALL_ADJTIMEX | abi::SYSCALL_CLOCK_ADJTIME
                if event.flags & abi::FLAG_HAS_TIMEX != 0 =>
            {
                timex_kind(event.timex.modes)
            }
            _ => "unknown",
        },
    }
}

/// The measured jump of CLOCK_REALTIME in ns. The kernel measures CLOCK_TAI − MONOTONIC;
/// a change of the TAI offset (leap second, ADJ_TAI) moves TAI without moving REALTIME,
/// so the daemon passes that change (`tai_change_s`, s) to subtract; an event that sets the
/// TAI offset itself cannot be separated and reports null.
pub fn measured_delta_ns(event: &ClockEvent, tai_change_s: i64) -> Option<i64> {
    if event.flags & abi::FLAG_HAS_OFFSET_BEFORE == 0 {
        return None;
    }
    if event.flags & abi::FLAG_HAS_TIMEX != 0 && event.timex.modes & ADJ_TAI != 0 {
        return None;
    }
    let tai_delta = event.offset_after_ns.wrapping_sub(event.offset_before_ns);
    let delta = tai_delta - tai_change_s * 1_000_000_000;
    // Below the resolution, the difference is the jitter of the clock reads, not a jump.
    Some(if delta.abs() < MEASUREMENT_RESOLUTION_NS {
        0
    } else {
        delta
    })
}

/// The ADJ_SETOFFSET offset of a timex in ns: `time` is sec + µs, or sec + ns with
/// ADJ_NANO. None when it does not fit in i64 ns.
fn setoffset_ns(t: &abi::TimexArgs) -> Option<i64> {
    let sub_ns = if t.modes & ADJ_NANO != 0 {
        t.time_usec
    } else {
        t.time_usec.checked_mul(1000)?
    };
    t.time_sec.checked_mul(1_000_000_000)?.checked_add(sub_ns)
}

/// The step a syscall asked for (ns): the requested time minus `wall_ns`, the clock at the
/// call; or the ADJ_SETOFFSET offset. None when the call is not a step or the request is
/// unknown (argument fault).
pub fn requested_delta_ns(event: &ClockEvent, wall_ns: i64) -> Option<i64> {
    if event.kind != abi::EVENT_SYSCALL || event.flags & abi::FLAG_ARG_FAULT != 0 {
        return None;
    }
    if event.flags & abi::FLAG_HAS_TIME != 0 && (0..1_000_000_000).contains(&event.req_nsec) {
        let requested = event
            .req_sec
            .checked_mul(1_000_000_000)?
            .checked_add(event.req_nsec)?;
        return requested.checked_sub(wall_ns);
    }
    if event.flags & abi::FLAG_HAS_TIMEX != 0 {
        let t = &event.timex;
        if t.modes & ADJ_ADJTIME == 0 && t.modes & ADJ_SETOFFSET != 0 {
            return setoffset_ns(t);
        }
    }
    None
}

/// The verdict the kernel's guard hooks recorded; the daemon turns `Denied` into `Slewed`
/// when it slews the request in.
pub fn verdict(event: &ClockEvent) -> Verdict {
    match event.guard.action {
        abi::GUARD_ALLOWED => Verdict::Allowed,
        abi::GUARD_DENIED => Verdict::Denied,
        abi::GUARD_WOULD_DENY => Verdict::WouldDeny,
        _ => Verdict::Observed,
    }
}

pub fn class_name(class: u16) -> &'static str {
    match class {
        abi::CLASS_ALLOW => "allow",
        abi::CLASS_SLEW_INSTEAD => "slew_instead",
        abi::CLASS_SELF => "self",
        _ => "other",
    }
}

fn guard_json(event: &ClockEvent) -> Option<Value> {
    if event.guard.action == abi::GUARD_NONE {
        return None;
    }
    let judged = match event.guard.guarded {
        abi::GUARDED_DISCIPLINE => "discipline",
        _ => "step",
    };
    let mut out = json!({"class": class_name(event.guard.class), "judged": judged});
    if event.flags & abi::FLAG_HAS_EXE_ID != 0 {
        out["exe_dev"] = json!(format!(
            "{}:{}",
            event.guard.exe_dev >> 20,
            event.guard.exe_dev & 0xfffff
        ));
        out["exe_ino"] = json!(event.guard.exe_ino);
    }
    Some(out)
}

/// Resolution of the measured jump (ns): each offset is a TAI read right after a monotonic
/// one, which leaves a few ns of jitter (more if an interrupt falls between the two).
pub const MEASUREMENT_RESOLUTION_NS: i64 = 1_000;

/// Decodes the kernel's part of a record: everything but the procfs enrichment and `seq`.
/// `tai_offset_s` is CLOCK_TAI − CLOCK_REALTIME (s) to convert the kernel's TAI-based
/// offsets to UTC; `tai_change_s` see `measured_delta_ns`.
pub fn decode(event: &ClockEvent, tai_offset_s: i64, tai_change_s: i64) -> Record {
    let is_kernel = event.kind == abi::EVENT_CLOCK_WAS_SET;
    // Wall time of the call on the clock as it was before it.
    let offset_before = if event.flags & abi::FLAG_HAS_OFFSET_BEFORE != 0 {
        event.offset_before_ns
    } else {
        event.offset_after_ns
    };
    let wall_ns = (event.enter_mono_ns as i64)
        .wrapping_add(offset_before)
        .wrapping_sub(tai_offset_s * 1_000_000_000);
    Record {
        seq: 0,
        time: rfc3339_ns(wall_ns),
        source: if is_kernel {
            Source::Kernel
        } else {
            Source::Syscall
        },
        syscall: syscall_name(event.syscall).map(String::from),
        // Which clock a call set is read at its enter (FLAG_NO_ENTER: not seen).
        clock: (event.flags & abi::FLAG_NO_ENTER == 0).then(|| clock_name(event.clock_id)),
        kind: event_kind(event).into(),
        cause: None,
        // The kernel skipped the exit hook's run (the result is unknown) or the enter's
        // (what the call asked and its jump are).
        detail: if event.flags & abi::FLAG_NO_EXIT != 0 {
            Some(json!({"exit_seen": false}))
        } else if event.flags & abi::FLAG_NO_ENTER != 0 {
            Some(json!({"enter_seen": false}))
        } else {
            None
        },
        requested: if is_kernel {
            json!({
                "bases": event.clock_was_set_bases,
                "clocks": clocks_of_bases(event.clock_was_set_bases),
            })
        } else {
            requested_json(event)
        },
        delta_ns: measured_delta_ns(event, tai_change_s),
        requested_delta_ns: requested_delta_ns(event, wall_ns),
        result: if event.flags & abi::FLAG_NO_EXIT != 0 {
            "unknown".into()
        } else {
            result_name(event.ret)
        },
        verdict: verdict(event),
        guard: guard_json(event),
        slew: None,
        clock_was_set: is_kernel || event.flags & abi::FLAG_CLOCK_WAS_SET != 0,
        pid: Some(event.tgid),
        tid: Some(event.tid),
        uid: Some(event.uid),
        user: None,
        comm: text(&event.comm),
        exe: (event.flags & abi::FLAG_HAS_PROCINFO != 0)
            .then(|| text(&event.exe))
            .flatten(),
        cmdline: None,
        ppid: (event.flags & abi::FLAG_HAS_PROCINFO != 0 && event.ppid != 0).then_some(event.ppid),
        parent_comm: (event.flags & abi::FLAG_HAS_PROCINFO != 0)
            .then(|| text(&event.parent_comm))
            .flatten(),
        parents: Vec::new(),
        cgroup: None,
        unit: None,
        stack: Vec::new(),
        prev: None,
        hash: None,
        epoch: None,
        mac: None,
        mono_ns: Some(event.exit_mono_ns.max(event.enter_mono_ns) as i64),
    }
}

/// The record of one REPEATS count: `count.summarised` calls of one key that the kernel
/// only counted (after sending the key's first calls of the interval in full). Kind
/// `summary`; `detail` says what the calls were (`kind`), how many (`count`), how many of
/// the interval's calls came in full before them (`in_full`) and when the first and last
/// counted call were made. `tai_offset_s` as in `decode`. None for a count with nothing
/// summarised (every call of the key came in full).
pub fn summary(
    key: &abi::RepeatKey,
    count: &abi::RepeatCount,
    tai_offset_s: i64,
) -> Option<Record> {
    if count.summarised == 0 {
        return None;
    }
    // The calls as one event: decode names the syscall, clock, result and caller as for
    // any record, from the same fields.
    let mut event = ClockEvent::zeroed();
    event.kind = abi::EVENT_SYSCALL;
    event.syscall = key.syscall;
    event.clock_id = key.clock_id;
    event.ret = key.ret.into();
    event.tgid = key.tgid;
    event.flags = abi::FLAG_HAS_OFFSET_BEFORE | (count.flags & abi::FLAG_HAS_PROCINFO);
    match key.syscall {
        abi::SYSCALL_ADJTIMEX | abi::SYSCALL_CLOCK_ADJTIME => {
            event.flags |= abi::FLAG_HAS_TIMEX;
            event.timex.modes = key.request;
        }
        abi::SYSCALL_SETTIMEOFDAY => {
            event.flags |= key.request & (abi::FLAG_HAS_TIME | abi::FLAG_HAS_TZ);
        }
        _ => event.flags |= abi::FLAG_HAS_TIME,
    }
    event.enter_mono_ns = count.first_mono_ns;
    event.exit_mono_ns = count.last_mono_ns;
    event.offset_before_ns = count.first_offset_ns;
    event.offset_after_ns = count.first_offset_ns;
    event.uid = count.uid;
    event.gid = count.gid;
    event.cgroup_id = count.cgroup_id;
    event.ppid = count.ppid;
    event.comm = count.comm;
    event.parent_comm = count.parent_comm;
    event.exe = count.exe;
    let mut record = decode(&event, tai_offset_s, 0);
    let last_wall_ns = (count.last_mono_ns as i64)
        .wrapping_add(count.last_offset_ns)
        .wrapping_sub(tai_offset_s * 1_000_000_000);
    record.detail = Some(json!({
        "kind": record.kind,
        "count": count.summarised,
        "in_full": count.seen.saturating_sub(count.summarised),
        "first": record.time,
        "last": rfc3339_ns(last_wall_ns),
        "span_s": count.last_mono_ns.saturating_sub(count.first_mono_ns) as f64 / 1e9,
    }));
    record.kind = "summary".into();
    // Each call asked for its own value: only what they asked to change is common.
    record.requested = match key.syscall {
        abi::SYSCALL_ADJTIMEX | abi::SYSCALL_CLOCK_ADJTIME => {
            json!({"modes": mode_names(key.request), "modes_raw": key.request})
        }
        _ => json!({}),
    };
    // Not measured call by call, and the calls are the process's, not one thread's.
    record.delta_ns = None;
    record.requested_delta_ns = None;
    record.tid = None;
    Some(record)
}

#[cfg(test)]
mod tests;
