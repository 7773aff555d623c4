//! cg-timerload: an hrtimer-heavy workload for the timer-hook benchmark. Threads sleep
//! 50 µs in a loop (clock_nanosleep on CLOCK_MONOTONIC) while one thread reads a timerfd
//! armed at 10 kHz; every wakeup is an hrtimer expiry. Prints one JSON object: the wakeups
//! and this process's CPU time (the scheduler's exact runtime, not tick samples: /proc/stat's
//! tick-sampled busy time misses most of a workload that sleeps 50 µs at a time).
//! Changes no clock.

#![forbid(unsafe_code)]

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nix::sys::time::TimeSpec;
use serde_json::json;

const USAGE: &str =
    "usage: cg-timerload [--threads N] [--sleep-us US] [--timerfd-hz HZ] [--seconds S]
  defaults: 4 threads sleeping 50 us, a timerfd at 10000 Hz, 5 s";

struct Options {
    threads: usize,
    sleep_us: u64,
    timerfd_hz: u64,
    seconds: f64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        threads: 4,
        sleep_us: 50,
        timerfd_hz: 10_000,
        seconds: 5.0,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag} {value}: not a valid number\n{USAGE}");
        match flag.as_str() {
            "--threads" => o.threads = value.parse().map_err(|_| bad())?,
            "--sleep-us" => o.sleep_us = value.parse().map_err(|_| bad())?,
            "--timerfd-hz" => o.timerfd_hz = value.parse().map_err(|_| bad())?,
            "--seconds" => o.seconds = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if o.timerfd_hz == 0 || o.timerfd_hz > 1_000_000 || o.sleep_us == 0 || o.seconds <= 0.0 {
        return Err(format!("values out of range\n{USAGE}"));
    }
    Ok(o)
}

fn process_cpu_s() -> f64 {
    use nix::sys::{resource, time::TimeValLike};
    resource::getrusage(resource::UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        (usage.user_time().num_microseconds() + usage.system_time().num_microseconds()) as f64 / 1e6
    })
}

fn sleeper(stop: Arc<AtomicBool>, wakeups: Arc<AtomicU64>, sleep_us: u64) {
    use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};
    let pause = TimeSpec::from_duration(Duration::from_micros(sleep_us));
    let mut local = 0;
    while !stop.load(Ordering::Relaxed) {
        // A relative sleep on CLOCK_MONOTONIC; an interrupted one counts as a wake-up too.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::empty(),
            &pause,
        );
        local += 1;
    }
    wakeups.fetch_add(local, Ordering::Relaxed);
}

fn timerfd_reader(
    stop: Arc<AtomicBool>,
    expirations: Arc<AtomicU64>,
    hz: u64,
) -> Result<(), String> {
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)
        .map_err(|e| format!("timerfd_create: {e}"))?;
    let period = TimeSpec::from_duration(Duration::from_nanos(1_000_000_000 / hz));
    timer
        .set(Expiration::Interval(period), TimerSetTimeFlags::empty())
        .map_err(|e| format!("timerfd_settime: {e}"))?;
    let mut total = 0;
    while !stop.load(Ordering::Relaxed) {
        // Each read blocks until the next expiry and returns how many passed (a u64).
        let mut count = [0u8; 8];
        if nix::unistd::read(&timer, &mut count) == Ok(8) {
            total += u64::from_ne_bytes(count);
        }
    }
    expirations.fetch_add(total, Ordering::Relaxed);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cg-timerload: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let wakeups = Arc::new(AtomicU64::new(0));
    let expirations = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_s();
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..o.threads {
        let (stop, wakeups) = (stop.clone(), wakeups.clone());
        handles.push(std::thread::spawn(move || {
            sleeper(stop, wakeups, o.sleep_us);
            Ok(())
        }));
    }
    {
        let (stop, expirations) = (stop.clone(), expirations.clone());
        handles.push(std::thread::spawn(move || {
            timerfd_reader(stop, expirations, o.timerfd_hz)
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            eprintln!("cg-timerload: {e}");
            return ExitCode::from(1);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sleeps = wakeups.load(Ordering::Relaxed);
    let timerfd = expirations.load(Ordering::Relaxed);
    let out = json!({
        "seconds": elapsed,
        "threads": o.threads,
        "sleep_us": o.sleep_us,
        "timerfd_hz": o.timerfd_hz,
        "sleep_wakeups": sleeps,
        "timerfd_expirations": timerfd,
        "wakeups_per_s": (sleeps + timerfd) as f64 / elapsed,
        "process_cpu_s": process_cpu_s() - cpu_before,
    });
    println!("{out}");
    ExitCode::SUCCESS
}
