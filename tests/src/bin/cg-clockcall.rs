//! cg-clockcall: makes clock syscalls for clockguard's end-to-end tests and benchmarks.
//!
//! Safe on any machine: `settime-invalid`, `settimeofday-invalid`, `adjtime-invalid`,
//! `storm` and `adjtimex-read` make calls the kernel rejects (or only reads), so no clock
//! changes. `setoffset` really steps the clock and refuses to run outside the test VM
//! (CG_IN_VM=1).

#![forbid(unsafe_code)]

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clockguard_sys::{adjtimex, test_calls as raw, timex};
use clockguard_tests::{
    read_ns,
    witness::{self, ClockState},
};
use serde_json::{json, Value};

const USAGE: &str = "usage: cg-clockcall COMMAND
  settime-invalid N        N x clock_settime(CLOCK_REALTIME, tv_nsec = 2e9): EINVAL
  settimeofday-invalid N   N x settimeofday(tv_usec = 2e6): EINVAL
  adjtime-invalid N        N x clock_adjtime(clock 99, ADJ_FREQUENCY): EINVAL
  adjtimex-read N          N x adjtimex(modes = 0): a read
  storm N                  N calls, the three invalid kinds in turn
  paced-storm N PER_S      the same N calls at PER_S calls per second
  setoffset NS             adjtimex(ADJ_SETOFFSET|ADJ_NANO) by NS ns (test VM only)
  set-status HEX           adjtimex(ADJ_STATUS) to HEX, e.g. 0x10 = STA_INS (test VM only)
  settime-by NS            clock_settime(CLOCK_REALTIME, now + NS ns) (test VM only)
  freq PPM                 adjtimex(ADJ_FREQUENCY) to PPM (test VM only)
  settime-loop N           N x clock_settime(CLOCK_REALTIME, now + 10 us): N real steps,
                           each forward (test VM only)
  freq-loop N              N x adjtimex(ADJ_FREQUENCY) to the frequency already set: a
                           discipline call that changes nothing (test VM only)
  capcheck-loop N          N x setuid(own uid): a capability check (CAP_SETUID) that is not
                           about the clock, what every other program costs the capable hook
  gettime-loop N           N x clock_gettime(CLOCK_REALTIME) through libc (the vDSO)
  gettime-syscall-loop N   N x the clock_gettime syscall itself, for comparison
  timex                    the kernel's discipline state (adjtimex read): status, freq
  offset                   CLOCK_REALTIME - CLOCK_MONOTONIC now, ns (changes only by steps)
  offset-raw               CLOCK_REALTIME - CLOCK_MONOTONIC_RAW now, ns (moves with slews too)
  witness                  the clocks and the kernel's discipline state, for witness-changes
  witness-changes JSON     what changed this machine's clock since the witness reading JSON
                           (steps, slews, rate changes, a leap second): a list of changes
  sample STOPFILE          every 1 ms until STOPFILE exists (at most 10 min): the largest
                           change of REALTIME - MONOTONIC between samples (a step) and
                           every backward move of CLOCK_REALTIME
  bound-latency N --segment PATH
                           N steps of +1 us, each timed from the syscall's return to the
                           ClockBound segment showing a new disruption marker (test VM only)
  latency N --runtime-dir DIR
                           syscall-to-journal latency through the daemon's event stream
  hold-connections SOCKET N SECONDS READY
                           opens N connections to a control socket and sends nothing,
                           creates the file READY, holds them SECONDS, then says what each
                           got: too_many, timed_out (closed for sending no request), other,
                           or nothing yet (open)
Prints one JSON object.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cg-clockcall: {err}");
            ExitCode::from(2)
        }
    }
}

fn count_arg(args: &[String]) -> Result<u64, String> {
    args.get(1)
        .ok_or("missing N")?
        .parse()
        .map_err(|e| format!("N: {e}"))
}

fn run(args: &[String]) -> Result<Value, String> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    match cmd {
        "settime-invalid" => Ok(repeat(count_arg(args)?, |_| settime_invalid(0))),
        "settimeofday-invalid" => Ok(repeat(count_arg(args)?, |_| settimeofday_invalid())),
        "adjtime-invalid" => Ok(repeat(count_arg(args)?, |_| adjtime_invalid())),
        "adjtimex-read" => Ok(repeat(count_arg(args)?, |_| adjtimex_read())),
        "storm" => Ok(repeat(count_arg(args)?, storm_call)),
        "paced-storm" => {
            let per_s: u64 = args
                .get(2)
                .ok_or("missing PER_S")?
                .parse()
                .map_err(|e| format!("PER_S: {e}"))?;
            if per_s == 0 {
                return Err("PER_S must be at least 1".into());
            }
            let n = count_arg(args)?;
            // Call i is due at i / PER_S s from the start; the loop sleeps until then in
            // steps of at least 1 ms, so the kernel sees bursts of PER_S / 1000 calls.
            let start = Instant::now();
            let mut result = repeat(n, |i| {
                let due = Duration::from_nanos(i * 1_000_000_000 / per_s);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    if wait >= Duration::from_millis(1) {
                        std::thread::sleep(wait);
                    }
                }
                storm_call(i)
            });
            result["seconds"] = json!(start.elapsed().as_secs_f64());
            Ok(result)
        }
        "setoffset" => {
            if std::env::var("CG_IN_VM").as_deref() != Ok("1") {
                return Err(
                    "setoffset steps the clock: it only runs in the test VM (CG_IN_VM=1)".into(),
                );
            }
            let ns: i64 = args
                .get(1)
                .ok_or("missing NS")?
                .parse()
                .map_err(|e| format!("NS: {e}"))?;
            setoffset(ns)
        }
        "set-status" => {
            if std::env::var("CG_IN_VM").as_deref() != Ok("1") {
                return Err(
                    "set-status changes the kernel's clock state: test VM only (CG_IN_VM=1)".into(),
                );
            }
            let text = args.get(1).ok_or("missing HEX")?;
            let status = i32::from_str_radix(text.trim_start_matches("0x"), 16)
                .map_err(|e| format!("HEX: {e}"))?;
            set_status(status)
        }
        "capcheck-loop" => Ok(repeat(count_arg(args)?, |_| setuid_to_self())),
        "gettime-loop" => Ok(repeat(count_arg(args)?, |_| {
            std::hint::black_box(read_ns(libc::CLOCK_REALTIME));
            0
        })),
        "gettime-syscall-loop" => Ok(repeat(count_arg(args)?, |_| gettime_syscall())),
        "settime-loop" | "freq-loop" => {
            if std::env::var("CG_IN_VM").as_deref() != Ok("1") {
                return Err(format!(
                    "{cmd} changes the clock: test VM only (CG_IN_VM=1)"
                ));
            }
            let n = count_arg(args)?;
            if cmd == "settime-loop" {
                Ok(repeat(n, |_| settime_forward(10_000)))
            } else {
                let freq = current_frequency()?;
                Ok(repeat(n, |_| write_frequency(freq)))
            }
        }
        "settime-by" | "freq" => {
            if std::env::var("CG_IN_VM").as_deref() != Ok("1") {
                return Err(format!(
                    "{cmd} changes the clock: test VM only (CG_IN_VM=1)"
                ));
            }
            let value = args.get(1).ok_or("missing value")?;
            if cmd == "freq" {
                set_frequency(value.parse().map_err(|e| format!("PPM: {e}"))?)
            } else {
                settime_by(value.parse().map_err(|e| format!("NS: {e}"))?)
            }
        }
        "timex" => {
            let (state, tx) = read_timex()?;
            Ok(json!({
                "clock_state": state,
                "status": tx.status,
                "freq_ppm": tx.freq as f64 / 65536.0,
                "tick_us": tx.tick,
            }))
        }
        "offset" => Ok(json!({"realtime_minus_monotonic_ns": realtime_minus_monotonic_ns()})),
        "hold-connections" => hold_connections(args),
        "offset-raw" => Ok(json!({"realtime_minus_raw_ns": realtime_minus_raw_ns()})),
        "witness" => Ok(witness()?.to_json()),
        "witness-changes" => {
            let text = args.get(1).ok_or("missing JSON (a witness reading)")?;
            let value: Value =
                serde_json::from_str(text).map_err(|e| format!("the witness reading: {e}"))?;
            let before = ClockState::from_json(&value)?;
            Ok(json!({ "changes": witness::changes(&before, &witness()?) }))
        }
        "sample" => Ok(sample(std::path::Path::new(
            args.get(1).ok_or("missing STOPFILE")?,
        ))),
        "bound-latency" => {
            if std::env::var("CG_IN_VM").as_deref() != Ok("1") {
                return Err("bound-latency steps the clock: test VM only (CG_IN_VM=1)".into());
            }
            let n = count_arg(args)?;
            let segment = args
                .iter()
                .position(|a| a == "--segment")
                .and_then(|i| args.get(i + 1))
                .ok_or("bound-latency needs --segment PATH")?;
            bound_latency(n, &PathBuf::from(segment))
        }
        "latency" => {
            let n = count_arg(args)?;
            let dir = args
                .iter()
                .position(|a| a == "--runtime-dir")
                .and_then(|i| args.get(i + 1))
                .ok_or("latency needs --runtime-dir DIR")?;
            latency(n, &PathBuf::from(dir))
        }
        _ => Err(USAGE.into()),
    }
}

/// 0 for success, else the call's errno (the counts `repeat` keeps).
fn errno_of<T>(result: std::io::Result<T>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(err) => err.raw_os_error().unwrap_or(-1),
    }
}

/// Runs `call` n times; reports the errno counts and the cost per call.
/// The storms' call `i`: the three invalid kinds in turn (each refused with EINVAL).
fn storm_call(i: u64) -> i32 {
    match i % 3 {
        0 => settime_invalid(0),
        1 => settimeofday_invalid(),
        _ => adjtime_invalid(),
    }
}

fn repeat(n: u64, mut call: impl FnMut(u64) -> i32) -> Value {
    let mut einval = 0u64;
    let mut ok = 0u64;
    let mut other = 0u64;
    let start = Instant::now();
    for i in 0..n {
        match call(i) {
            0 => ok += 1,
            libc::EINVAL => einval += 1,
            _ => other += 1,
        }
    }
    let elapsed = start.elapsed();
    json!({
        "pid": std::process::id(),
        "calls": n,
        "einval": einval,
        "ok": ok,
        "other_errors": other,
        "ns_per_call": if n > 0 { elapsed.as_nanos() as f64 / n as f64 } else { 0.0 },
    })
}

/// clock_settime(CLOCK_REALTIME) with tv_nsec = 2e9: the kernel refuses it (EINVAL) before
/// touching the clock. `marker` goes in tv_sec, so a test can find this very call.
fn settime_invalid(marker: i64) -> i32 {
    // The raw syscall: glibc's wrapper rejects tv_nsec itself and never enters the kernel.
    errno_of(raw::clock_settime(
        libc::CLOCK_REALTIME,
        marker,
        2_000_000_000,
    ))
}

fn settimeofday_invalid() -> i32 {
    // tv_usec out of range: EINVAL before any change.
    errno_of(raw::settimeofday(0, 2_000_000))
}

fn adjtime_invalid() -> i32 {
    let mut tx = timex();
    tx.modes = libc::ADJ_FREQUENCY;
    // clockid 99 does not exist: EINVAL before anything is looked at.
    errno_of(raw::clock_adjtime(99, &mut tx))
}

fn adjtimex_read() -> i32 {
    // modes = 0 only reads.
    errno_of(raw::adjtimex(&mut timex()))
}

/// REALTIME read between two reads of `reference`, against their midpoint (ns).
fn realtime_minus(reference: libc::clockid_t) -> i64 {
    clock_minus(libc::CLOCK_REALTIME, reference)
}

/// `clock` − `reference` now, `clock` read between two reads of `reference`.
fn clock_minus(clock: libc::clockid_t, reference: libc::clockid_t) -> i64 {
    clock_minus_bracketed(clock, reference).0
}

/// `clock` − `reference` now, and the time between the two reads of `reference` that
/// `clock` was read between (ns): the difference is within half of it of the truth, so a
/// stall of the reader (an emulator's, a preemption) is told apart from a step.
fn clock_minus_bracketed(clock: libc::clockid_t, reference: libc::clockid_t) -> (i64, i64) {
    let m1 = read_ns(reference);
    let c = read_ns(clock);
    let m2 = read_ns(reference);
    (c - (m1 + (m2 - m1) / 2), m2 - m1)
}

/// REALTIME − MONOTONIC: changes only by steps (slews move both clocks alike).
fn realtime_minus_monotonic_ns() -> i64 {
    realtime_minus(libc::CLOCK_MONOTONIC)
}

/// REALTIME − MONOTONIC_RAW: unlike REALTIME − MONOTONIC it moves while the clock slews
/// (MONOTONIC_RAW is never adjusted), so it shows a slew's progress.
fn realtime_minus_raw_ns() -> i64 {
    realtime_minus(libc::CLOCK_MONOTONIC_RAW)
}

/// One reading of the clocks and the discipline state (see clockguard_tests::witness).
fn witness() -> Result<ClockState, String> {
    let (_, tx) = read_timex()?;
    Ok(ClockState {
        realtime_minus_monotonic_ns: realtime_minus_monotonic_ns(),
        monotonic_minus_raw_ns: clock_minus(libc::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC_RAW),
        raw_ns: read_ns(libc::CLOCK_MONOTONIC_RAW),
        freq_scaled_ppm: tx.freq,
        tick_us: tx.tick,
        status: i64::from(tx.status),
    })
}

/// The 1 ms sampler of the guard tests: a step shows as a change of REALTIME − MONOTONIC
/// between two samples (slews move both clocks alike); a backward move as REALTIME
/// decreasing.
fn sample(stop: &std::path::Path) -> Value {
    let start = Instant::now();
    let mut samples = 0u64;
    let bracketed = || clock_minus_bracketed(libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC);
    let mut prev_real = read_ns(libc::CLOCK_REALTIME);
    let (mut prev_offset, mut prev_spread) = bracketed();
    let mut max_step_ns = 0i64;
    let mut max_step_beyond_spread_ns = 0i64;
    let mut max_read_spread_ns = prev_spread;
    let mut backward_moves = 0u64;
    let mut worst_backward_ns = 0i64;
    while !stop.exists() && start.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(1));
        let real = read_ns(libc::CLOCK_REALTIME);
        let (offset, spread) = bracketed();
        samples += 1;
        // Each offset is within half its spread of the truth: a change the two spreads
        // cannot explain is a step (by at least what is left over), the rest may be a
        // stall between the reads.
        let step = offset - prev_offset;
        if step.abs() > max_step_ns.abs() {
            max_step_ns = step;
        }
        let beyond = (step.abs() - (prev_spread + spread) / 2).max(0) * step.signum();
        if beyond.abs() > max_step_beyond_spread_ns.abs() {
            max_step_beyond_spread_ns = beyond;
        }
        max_read_spread_ns = max_read_spread_ns.max(spread);
        if real < prev_real {
            backward_moves += 1;
            worst_backward_ns = worst_backward_ns.min(real - prev_real);
        }
        prev_real = real;
        prev_offset = offset;
        prev_spread = spread;
    }
    json!({
        "samples": samples,
        "seconds": start.elapsed().as_secs_f64(),
        "max_step_ns": max_step_ns,
        "max_step_beyond_spread_ns": max_step_beyond_spread_ns,
        "max_read_spread_ns": max_read_spread_ns,
        "backward_moves": backward_moves,
        "worst_backward_ns": worst_backward_ns,
    })
}

fn settime_by(ns: i64) -> Result<Value, String> {
    match settime_forward(ns) {
        0 => Ok(json!({"pid": std::process::id(), "settime_by_ns": ns})),
        e => Err(format!(
            "clock_settime: {}",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

/// clock_settime(CLOCK_REALTIME, now + ns): a real step (errno on failure, 0 on success).
fn settime_forward(ns: i64) -> i32 {
    let target = read_ns(libc::CLOCK_REALTIME) + ns;
    let ts = libc::timespec {
        tv_sec: target.div_euclid(1_000_000_000),
        tv_nsec: target.rem_euclid(1_000_000_000),
    };
    errno_of(raw::clock_settime(
        libc::CLOCK_REALTIME,
        ts.tv_sec,
        ts.tv_nsec,
    ))
}

/// The kernel's discipline state: adjtimex's clock state (TIME_OK, ...) and the timex.
fn read_timex() -> Result<(i32, libc::timex), String> {
    let mut tx = timex();
    // modes = 0 only reads.
    let state = adjtimex(&mut tx).map_err(|err| format!("adjtimex: {err}"))?;
    Ok((state, tx))
}

/// The kernel's frequency offset now, in scaled ppm (ppm << 16).
fn current_frequency() -> Result<libc::c_long, String> {
    Ok(read_timex()?.1.freq)
}

/// adjtimex(ADJ_FREQUENCY) to `scaled_ppm` (errno on failure, 0 on success).
fn write_frequency(scaled_ppm: libc::c_long) -> i32 {
    let mut tx = timex();
    tx.modes = libc::ADJ_FREQUENCY;
    tx.freq = scaled_ppm;
    errno_of(adjtimex(&mut tx))
}

/// setuid(own uid): the kernel asks capable(CAP_SETUID) first, whatever the uid.
fn setuid_to_self() -> i32 {
    // The raw syscall, so glibc's all-threads setxid broadcast is not in the measure.
    errno_of(raw::setuid(nix::unistd::getuid().as_raw()))
}

/// clock_gettime(CLOCK_REALTIME) as a real syscall, past the vDSO.
fn gettime_syscall() -> i32 {
    errno_of(raw::clock_gettime_syscall())
}

fn set_frequency(ppm: f64) -> Result<Value, String> {
    // Scaled ppm: ppm << 16.
    match write_frequency((ppm * 65536.0) as libc::c_long) {
        0 => Ok(json!({"pid": std::process::id(), "freq_ppm": ppm})),
        e => Err(format!(
            "adjtimex(ADJ_FREQUENCY): {}",
            std::io::Error::from_raw_os_error(e)
        )),
    }
}

fn set_status(status: i32) -> Result<Value, String> {
    let mut tx = timex();
    tx.modes = libc::ADJ_STATUS;
    tx.status = status;
    let rc = adjtimex(&mut tx).map_err(|err| format!("adjtimex(ADJ_STATUS): {err}"))?;
    Ok(json!({"pid": std::process::id(), "status": status, "clock_state": rc}))
}

fn setoffset(ns: i64) -> Result<Value, String> {
    let mut tx = timex();
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    tx.time.tv_sec = ns.div_euclid(1_000_000_000);
    tx.time.tv_usec = ns.rem_euclid(1_000_000_000);
    adjtimex(&mut tx).map_err(|err| format!("adjtimex(ADJ_SETOFFSET): {err}"))?;
    Ok(json!({"pid": std::process::id(), "setoffset_ns": ns}))
}

/// Time from each syscall to its record on the daemon's event stream (which is published
/// right after the journal write), one call at a time.
fn latency(n: u64, runtime_dir: &std::path::Path) -> Result<Value, String> {
    let socket = runtime_dir.join("control.sock");
    let mut stream = UnixStream::connect(&socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    stream
        .write_all(b"{\"cmd\":\"events\",\"follow\":true}\n")
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let pid = std::process::id();
    let mut samples = Vec::with_capacity(n as usize);
    // Markers well away from what anything else passes.
    let base = 900_000_000 + (i64::from(pid) % 1000) * 100_000;
    for i in 0..n as i64 {
        let marker = base + i;
        let start = Instant::now();
        settime_invalid(marker);
        loop {
            let mut line = String::new();
            let read = reader
                .read_line(&mut line)
                .map_err(|e| format!("no record for call {i} within 5 s: {e}"))?;
            if read == 0 {
                return Err("the daemon closed the event stream".into());
            }
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if record["pid"] == json!(pid) && record["requested"]["sec"] == json!(marker) {
                samples.push(start.elapsed().as_nanos() as f64 / 1000.0);
                break;
            }
        }
    }
    let mut out = latency_summary(samples);
    out["calls"] = json!(n);
    Ok(out)
}

/// p50, p99 and max of latencies in µs (nearest rank; none given: an empty object).
fn latency_summary(mut samples: Vec<f64>) -> Value {
    if samples.is_empty() {
        return json!({});
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    json!({
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": samples.last().copied().unwrap_or(0.0),
    })
}

/// The segment's disruption marker now (None while it is unreadable or being written).
fn segment_marker(file: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; clockguard_core::clockbound::SEGMENT_SIZE];
    file.read_exact_at(&mut bytes, 0).ok()?;
    clockguard_core::clockbound::decode(&bytes)
        .ok()
        .map(|(_, bound)| bound.disruption_marker)
}

/// `n` steps of +1 µs (each one a disruption of the error bound), each timed on
/// CLOCK_MONOTONIC from the return of clock_settime to the segment showing a new marker:
/// the daemon's path from the kernel's event through the ring buffer to the segment. A
/// step whose marker does not change within a second is counted as missed.
fn bound_latency(n: u64, segment: &std::path::Path) -> Result<Value, String> {
    let file = std::fs::File::open(segment).map_err(|e| format!("{}: {e}", segment.display()))?;
    let mut samples = Vec::new();
    let mut missed = 0u64;
    for _ in 0..n {
        let before = segment_marker(&file).ok_or("the segment is not readable")?;
        let errno = settime_forward(1_000);
        if errno != 0 {
            return Err(format!("clock_settime: errno {errno}"));
        }
        let stepped = read_ns(libc::CLOCK_MONOTONIC);
        loop {
            let now = read_ns(libc::CLOCK_MONOTONIC);
            if segment_marker(&file).is_some_and(|m| m != before) {
                samples.push((now - stepped) as f64 / 1000.0);
                break;
            }
            if now - stepped > 1_000_000_000 {
                missed += 1;
                break;
            }
            std::hint::spin_loop();
        }
        // Each step its own event (and its own ring-buffer wake-up).
        std::thread::sleep(Duration::from_millis(20));
    }
    if samples.is_empty() {
        return Err(format!(
            "no step changed the segment's marker ({missed} missed)"
        ));
    }
    let mut out = latency_summary(samples);
    out["steps"] = json!(n);
    out["missed"] = json!(missed);
    Ok(out)
}

/// `hold-connections SOCKET N SECONDS READY`: a local user's flood of idle connections.
fn hold_connections(args: &[String]) -> Result<Value, String> {
    let [_, socket, n, seconds, ready] = args else {
        return Err("hold-connections SOCKET N SECONDS READY".into());
    };
    let n: usize = n.parse().map_err(|e| format!("N: {e}"))?;
    let seconds: f64 = seconds.parse().map_err(|e| format!("SECONDS: {e}"))?;
    let mut streams = Vec::with_capacity(n);
    let mut connect_errors: Vec<String> = Vec::new();
    for _ in 0..n {
        match UnixStream::connect(socket) {
            Ok(stream) => streams.push(stream),
            Err(err) => connect_errors.push(err.to_string()),
        }
    }
    std::fs::write(ready, b"").map_err(|e| format!("{ready}: {e}"))?;
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (mut too_many, mut timed_out, mut other, mut open) = (0, 0, 0, 0);
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        match BufReader::new(&*stream).read_line(&mut line) {
            Ok(_) if line.contains("too many connections") => too_many += 1,
            Ok(_) if line.contains("no request within") => timed_out += 1,
            Ok(_) => other += 1,
            Err(_) => open += 1,
        }
    }
    connect_errors.dedup();
    Ok(json!({
        "connected": streams.len(),
        "connect_errors": connect_errors,
        "too_many": too_many,
        "timed_out": timed_out,
        "other": other,
        "open": open,
    }))
}
