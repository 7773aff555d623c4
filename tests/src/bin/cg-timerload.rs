//! cg-timerload: an hrtimer-heavy workload for the timer-hook benchmark. Threads sleep
//! 50 µs in a loop (clock_nanosleep on CLOCK_MONOTONIC) while one thread reads a timerfd
//! armed at 10 kHz; every wakeup is an hrtimer expiry. Prints one JSON object: the wakeups
//! and this process's CPU time (the scheduler's exact runtime, not tick samples: /proc/stat's
//! tick-sampled busy time misses most of a workload that sleeps 50 µs at a time).
//! Changes no clock.

use std::{
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

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
    // SAFETY: plain out struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn sleeper(stop: Arc<AtomicBool>, wakeups: Arc<AtomicU64>, sleep_us: u64) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (sleep_us * 1000) as i64,
    };
    let mut local = 0;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: valid timespec; a relative sleep on CLOCK_MONOTONIC.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                0,
                &raw const ts,
                std::ptr::null_mut(),
            )
        };
        local += 1;
    }
    wakeups.fetch_add(local, Ordering::Relaxed);
}

fn timerfd_reader(
    stop: Arc<AtomicBool>,
    expirations: Arc<AtomicU64>,
    hz: u64,
) -> Result<(), String> {
    // SAFETY: plain syscalls on an fd we own and close.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "timerfd_create: {}",
            std::io::Error::last_os_error()
        ));
    }
    let period = libc::timespec {
        tv_sec: 0,
        tv_nsec: (1_000_000_000 / hz) as i64,
    };
    let spec = libc::itimerspec {
        it_interval: period,
        it_value: period,
    };
    if unsafe { libc::timerfd_settime(fd, 0, &raw const spec, std::ptr::null_mut()) } != 0 {
        return Err(format!(
            "timerfd_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut total = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut count = 0u64;
        let n = unsafe { libc::read(fd, (&raw mut count).cast(), 8) };
        if n == 8 {
            total += count;
        }
    }
    unsafe { libc::close(fd) };
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
