//! cg-ntpref: an independent reference NTP implementation for clockguard's tests.
//!
//! It shares no NTP code with clockguard, nor its socket code (its own receive timestamps):
//! it is the yardstick clockguard's own NTP client and clock discipline are measured
//! against. From clockguard-sys it takes only a clock read (clock_gettime) and the
//! set-up of its stop signals, where the unsafe code lives.
//!
//! `serve` answers NTPv4 client requests (RFC 5905, mode 3 in, mode 4 out) from a
//! *reference clock* that is not the system clock but a function of CLOCK_MONOTONIC_RAW:
//!
//! ```text
//! ref(raw) = K + raw + offset_ns + (raw - raw0) * freq_ppm * 1e-6        (all ns)
//! ```
//!
//! with K = CLOCK_REALTIME - CLOCK_MONOTONIC_RAW and raw0 = CLOCK_MONOTONIC_RAW, both taken
//! at start. MONOTONIC_RAW is never slewed or stepped, so the reference keeps its course
//! whatever happens to the system clock afterwards. The server writes K, raw0, the offset
//! and the frequency to a params file, from which `offset` and `watch` compute the same
//! reference clock in another process and compare the system clock against it.
//!
//! `load --nts-ke` and `nts-ke-load` are the exception: they load clockguard's NTS server
//! with clockguard's own NTS codec (see `nts`).
//!
//! Nothing here changes any clock: the program only reads clocks and sends UDP datagrams.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, ToSocketAddrs, UdpSocket},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clockguard_tests::read_ns;
use serde_json::{json, Value};

mod bound;
mod clock;
mod load;
mod nts;
mod opts;
mod packet;
mod query;
mod relay;
mod serve;
mod vmclock;
mod watch;

use bound::*;
use clock::*;
use load::*;
use opts::*;
use packet::*;
use query::*;
use relay::*;
use serve::*;
use watch::*;

const USAGE: &str = "usage: cg-ntpref COMMAND
  serve --listen ADDR:PORT --params FILE [--offset-s S] [--freq-ppm P] [--stratum N]
        [--refid ABCD|A.B.C.D] [--leap none|ins|del|unsync [--leap-at UNIX_S]] [--hostile N]
        NTPv4 server (mode 4 replies to mode 3 requests) whose clock is the reference
        clock ref(raw) = K + raw + offset + (raw - raw0) * P * 1e-6, K = REALTIME - RAW
        and raw0 = RAW at start. Port 0 binds an ephemeral port. Writes FILE (JSON:
        k_ns, raw0_ns, offset_ns, freq_ppm, listen), prints {\"listening\": ADDR:PORT},
        serves until SIGTERM/SIGINT, then prints {\"served\": .., \"ignored\": ..}.
        Defaults: offset 0 s, 0 ppm, stratum 1, refid CGRF, leap none.
        --leap-at UNIX_S (a midnight UTC, with --leap ins or del): the leap second is
        announced until then and applied then, as a kernel does (an inserted second is
        23:59:59 twice; a deleted one is skipped), and `offset`/`watch` read UTC with it.
        --hostile N: every Nth reply is preceded by a truncated copy (20 bytes), a copy
        with a wrong origin timestamp (spoofed) and followed by a duplicate of itself.
  offset --params FILE
        CLOCK_REALTIME - ref(now) in ns (negative: the system clock is behind)
  watch --params FILE --until-abs-ns N --stopfile F [--interval-ms 100] [--hold-s 0]
        [--measure-s 0] [--settle-s 0]
        samples the offset every interval until |offset| < N has held for the hold
        time, F exists or 15 minutes passed; times on CLOCK_MONOTONIC_RAW (the
        slewed clocks run up to 10 % fast); always exits 0. With --measure-s M, once
        converged (and S seconds more with --settle-s S: the client's start-up is
        not its steady state) it samples M seconds, whatever the offset, and reports
        their RMS, p99 and largest |offset| (\"measured\")
  query ADDR:PORT [--count 4] [--timeout-ms 1000]
        SNTP client: N mode-3 requests 200 ms apart; offset (server - CLOCK_REALTIME)
        and delay of the reply with the smallest delay; exit 1 without a valid reply
  query ADDR:PORT --raw-bytes HEX [--timeout-ms 1000]
        sends the datagram HEX once and reports whether any reply came
  load 127.0.0.1:PORT --rate R --seconds S [--clients N]
        R requests per second for S seconds from N clients (default 100), each from its
        own loopback address 127.0.0.(2+i), so per-client rate limits see N clients;
        counts replies (KoD apart) and late or missing ones
  load 127.0.0.1:PORT --rate R --seconds S [--clients N] --nts-ke ADDR:PORT --ca FILE
        the same with NTS: each client makes a key exchange first (the certificate
        verified against the CA in FILE), then sends NTS requests to the NTP port the
        exchange named; replies count when they authenticate (NAKs and rejected apart)
  nts-ke-load ADDR:PORT --ca FILE [--seconds 10] [--threads 4]
        NTS key exchanges back to back from N threads; how many completed per second
  bound --params FILE --segment PATH --stopfile F [--interval-ms 1] [--vmclock DEV] [--trace T]
        reads the ClockBound segment PATH through ClockBound's own client crate every
        interval until F exists or 15 minutes passed, and holds each reading's
        [earliest, latest] against the reference's time then: samples, how many had the
        reference outside (and by how much), the bound's p50/p99/max by status, the
        status changes and the client's errors. Waits up to 30 s for the segment. --trace:
        every 100th reading to T as \"S STATUS BOUND_NS TRUE_MINUS_MIDDLE_NS\".
  step --params FILE --by-ns N [--in-ms 1000]
        the reference's time steps by N ns, in --in-ms ms (on CLOCK_MONOTONIC_RAW): the
        step is added to FILE, which `serve` and `bound` look at again every 100 ms
        (`offset` reads FILE each time, `watch` once at its start); prints {\"at_raw_ns\", \"by_ns\"}
  read-cost --segment PATH [--reads N] [--vmclock DEV]
        ns per ClockBoundClient::now() on the segment against ns per clock_gettime
        (CLOCK_REALTIME) through the vDSO: 7 alternating rounds of N (1000000) reads each,
        medians
  relay --listen ADDR:PORT --upstream ADDR:PORT [--forge-s S]
        an on-path attacker: forwards each datagram to the upstream server and its
        replies back to the client heard last, every reply's receive and transmit
        timestamps moved on by S seconds (default 0); until SIGTERM/SIGINT, then prints
        {\"relayed_requests\": .., \"forged_replies\": ..}
  vmclock-watch --segment PATH --ready FILE [--vmclock DEV] [--resync-s 120]
        in a guest with a vmclock device (default /dev/vmclock0): checks that the segment
        carries the device's marker, creates FILE, waits up to 300 s for the marker to
        change (a restore), then times from that first reading ClockBound's client
        reporting Disrupted and the segment saying Disrupted with the new marker, and
        how long until the segment is synchronized again
Prints one JSON object (serve and relay: one when listening, one when stopped).";

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch).
const NTP_UNIX_OFFSET_S: i128 = 2_208_988_800;
const NS_PER_S: i128 = 1_000_000_000;
/// One NTP era (2^32 s) in ns.
const ERA_NS: i128 = (1i128 << 32) * NS_PER_S;

const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const LEAP_UNSYNC: u8 = 3;
const PACKET_LEN: usize = 48;
/// Precision advertised by the server: 2^-20 s, about 1 µs.
const PRECISION: i8 = -20;
/// Root dispersion advertised by the server: 1 ms in NTP short format (16.16 s).
const ROOT_DISPERSION: u32 = 66;
/// `watch` gives up after this long.
const WATCH_LIMIT: Duration = Duration::from_secs(15 * 60);
/// `query` sends its requests this far apart.
const QUERY_SPACING: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok((out, code)) => {
            println!("{out}");
            ExitCode::from(code)
        }
        Err(err) => {
            eprintln!("cg-ntpref: {err}");
            ExitCode::from(2)
        }
    }
}

/// The command's JSON result and exit code, or an input error (exit 2).
fn run(args: &[String]) -> Result<(Value, u8), String> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    match cmd {
        "serve" => serve_cmd(rest).map(|v| (v, 0)),
        "offset" => {
            let opts = Opts::parse(rest, &["--params"], 0)?;
            let clock = RefClock::load(Path::new(opts.required("--params")?))?;
            let s = clock.sample_offset();
            Ok((
                json!({"offset_ns": s.offset_ns, "realtime_ns": s.realtime_ns, "ref_ns": s.ref_ns}),
                0,
            ))
        }
        "watch" => watch_cmd(rest).map(|v| (v, 0)),
        "query" => query_cmd(rest),
        "load" => load_cmd(rest).map(|v| (v, 0)),
        "nts-ke-load" => nts::nts_ke_load_cmd(rest).map(|v| (v, 0)),
        "bound" => bound_cmd(rest).map(|v| (v, 0)),
        "read-cost" => read_cost_cmd(rest).map(|v| (v, 0)),
        "step" => step_cmd(rest).map(|v| (v, 0)),
        "relay" => relay_cmd(rest).map(|v| (v, 0)),
        "vmclock-watch" => vmclock::vmclock_watch_cmd(rest).map(|v| (v, 0)),
        _ => Err(USAGE.into()),
    }
}

#[cfg(test)]
mod tests;
