//! cg-ntpref: an independent reference NTP implementation for clockguard's tests.
//!
//! It shares no code with clockguard: it is the yardstick clockguard's own NTP client and
//! clock discipline are measured against.
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
//! Nothing here changes any clock: the program only reads clocks and sends UDP datagrams.

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
Prints one JSON object (serve: one when listening, one when stopped).";

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

/// Set by SIGTERM/SIGINT: `serve` stops at the next packet or within 200 ms.
static STOP: AtomicBool = AtomicBool::new(false);

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
        _ => Err(USAGE.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Command-line options

/// `--name value` options (each at most once) and positional arguments.
struct Opts {
    values: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], known: &[&str], positional: usize) -> Result<Opts, String> {
        let mut values: Vec<(String, String)> = Vec::new();
        let mut pos = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if arg.starts_with("--") {
                if !known.contains(&arg.as_str()) {
                    return Err(format!("unknown option {arg}\n{USAGE}"));
                }
                let value = iter.next().ok_or(format!("{arg} needs a value"))?;
                if values.iter().any(|(k, _)| k == arg) {
                    return Err(format!("{arg} given twice"));
                }
                values.push((arg.clone(), value.clone()));
            } else {
                pos.push(arg.clone());
            }
        }
        if pos.len() != positional {
            return Err(format!(
                "expected {positional} positional argument(s), got {}\n{USAGE}",
                pos.len()
            ));
        }
        Ok(Opts {
            values,
            positional: pos,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or(format!("missing {name}"))
    }

    /// Parses `name`'s value, or returns `default` when it is absent.
    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("{name} {v:?}: {e}")),
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("address {addr:?}: {e}"))?
        .next()
        .ok_or(format!("address {addr:?}: nothing to connect to"))
}

/// Seconds (decimal, may be negative) to ns, rounded.
fn seconds_to_ns(name: &str, text: &str) -> Result<i64, String> {
    let s: f64 = text.parse().map_err(|e| format!("{name} {text:?}: {e}"))?;
    let ns = (s * 1e9).round();
    if !ns.is_finite() || ns.abs() > 1e18 {
        return Err(format!("{name} {text:?}: out of range"));
    }
    Ok(ns as i64)
}

// ---------------------------------------------------------------------------------------
// Clocks and NTP timestamps

fn realtime_ns() -> i64 {
    read_ns(libc::CLOCK_REALTIME)
}

fn raw_ns() -> i64 {
    read_ns(libc::CLOCK_MONOTONIC_RAW)
}

/// CLOCK_REALTIME read between two CLOCK_MONOTONIC_RAW reads: (realtime, raw midpoint).
fn realtime_and_raw() -> (i64, i64) {
    let r1 = raw_ns();
    let real = realtime_ns();
    let r2 = raw_ns();
    (real, r1 + (r2 - r1) / 2)
}

/// Unix time in ns to an NTP timestamp: seconds since 1900 (modulo the era) in the high
/// 32 bits, the fraction of a second in units of 2^-32 s in the low 32, rounded to nearest.
fn unix_ns_to_ntp(ns: i128) -> u64 {
    let mut secs = ns.div_euclid(NS_PER_S) + NTP_UNIX_OFFSET_S;
    let sub_ns = ns.rem_euclid(NS_PER_S);
    let mut frac = ((sub_ns << 32) + NS_PER_S / 2) / NS_PER_S;
    if frac >= 1 << 32 {
        // Cannot happen for sub_ns < 1e9 (the largest rounds to 2^32 - 4), kept for safety.
        frac -= 1 << 32;
        secs += 1;
    }
    ((secs.rem_euclid(1 << 32) as u64) << 32) | frac as u64
}

/// NTP timestamp to Unix time in ns, rounded to nearest; the era is the one that puts the
/// result nearest to `pivot_ns` (a Unix time known to be within 68 years of it).
fn ntp_to_unix_ns(ts: u64, pivot_ns: i128) -> i128 {
    let secs = i128::from(ts >> 32);
    let frac = i128::from(ts & 0xffff_ffff);
    let base = (secs - NTP_UNIX_OFFSET_S) * NS_PER_S + ((frac * NS_PER_S + (1 << 31)) >> 32);
    let eras = (pivot_ns - base + ERA_NS / 2).div_euclid(ERA_NS);
    base + eras * ERA_NS
}

/// The reference clock: a function of CLOCK_MONOTONIC_RAW, see the module comment.
#[derive(Clone, Debug, PartialEq)]
struct RefClock {
    k_ns: i64,
    raw0_ns: i64,
    offset_ns: i64,
    freq_ppm: f64,
    /// A leap second applied at a midnight UTC: (the midnight, Unix s; +1 inserted, −1
    /// deleted). From then on the reference reads UTC with it, as a kernel does: an
    /// inserted second is 23:59:59 twice, a deleted one is skipped.
    leap: Option<(i64, i64)>,
}

/// One comparison of the system clock with the reference clock.
struct OffsetSample {
    offset_ns: i64,
    realtime_ns: i64,
    ref_ns: i64,
}

impl RefClock {
    /// A reference clock starting now: `offset_ns` ahead of CLOCK_REALTIME, running
    /// `freq_ppm` fast against CLOCK_MONOTONIC_RAW.
    fn start(offset_ns: i64, freq_ppm: f64, leap: Option<(i64, i64)>) -> RefClock {
        let (real, raw) = realtime_and_raw();
        RefClock {
            k_ns: real - raw,
            raw0_ns: raw,
            offset_ns,
            freq_ppm,
            leap,
        }
    }

    /// The reference's continuous time (no leap second applied) at `raw_ns`, Unix ns.
    fn continuous_at(&self, raw_ns: i64) -> i128 {
        let elapsed = (i128::from(raw_ns) - i128::from(self.raw0_ns)) as f64;
        let drift = (elapsed * self.freq_ppm / 1e6).round() as i128;
        i128::from(self.k_ns) + i128::from(raw_ns) + i128::from(self.offset_ns) + drift
    }

    /// Whether the leap second is behind at `raw_ns` (a deleted second goes at 23:59:59).
    fn leap_applied(&self, raw_ns: i64) -> Option<i64> {
        let (midnight_s, delta_s) = self.leap?;
        let applied_s = if delta_s > 0 {
            midnight_s
        } else {
            midnight_s - 1
        };
        (self.continuous_at(raw_ns) >= i128::from(applied_s) * NS_PER_S).then_some(delta_s)
    }

    /// The leap indicator to send at `raw_ns`: `announced` until the leap second (when
    /// there is one to apply), nothing after it.
    fn leap_indicator(&self, announced: u8, raw_ns: i64) -> u8 {
        match self.leap_applied(raw_ns) {
            Some(_) => 0,
            None => announced,
        }
    }

    /// ref(raw) in ns (Unix time, UTC: with the leap second once it is behind).
    fn at(&self, raw_ns: i64) -> i128 {
        let leap_ns = i128::from(self.leap_applied(raw_ns).unwrap_or(0)) * NS_PER_S;
        self.continuous_at(raw_ns) - leap_ns
    }

    fn now(&self) -> i128 {
        self.at(raw_ns())
    }

    /// CLOCK_REALTIME − ref, with REALTIME read between two RAW reads.
    fn sample_offset(&self) -> OffsetSample {
        let (real, raw) = realtime_and_raw();
        let reference = self.at(raw) as i64;
        OffsetSample {
            offset_ns: real - reference,
            realtime_ns: real,
            ref_ns: reference,
        }
    }

    fn to_json(&self, listen: &SocketAddr) -> Value {
        json!({
            "k_ns": self.k_ns,
            "raw0_ns": self.raw0_ns,
            "offset_ns": self.offset_ns,
            "freq_ppm": self.freq_ppm,
            "leap": self.leap.map(|(at_s, delta_s)| json!({"at_unix_s": at_s, "delta_s": delta_s})),
            "listen": listen.to_string(),
        })
    }

    fn from_json(v: &Value) -> Result<RefClock, String> {
        let int = |name: &str| {
            v[name]
                .as_i64()
                .ok_or(format!("params: {name} missing or not an integer"))
        };
        Ok(RefClock {
            k_ns: int("k_ns")?,
            raw0_ns: int("raw0_ns")?,
            offset_ns: int("offset_ns")?,
            freq_ppm: v["freq_ppm"]
                .as_f64()
                .ok_or("params: freq_ppm missing or not a number")?,
            leap: match &v["leap"] {
                Value::Null => None,
                leap => Some((
                    leap["at_unix_s"]
                        .as_i64()
                        .ok_or("params: leap.at_unix_s missing or not an integer")?,
                    leap["delta_s"]
                        .as_i64()
                        .ok_or("params: leap.delta_s missing or not an integer")?,
                )),
            },
        })
    }

    fn load(path: &Path) -> Result<RefClock, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        RefClock::from_json(&v).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Writes `value` to `path` atomically: a temporary file next to it, then a rename (which
/// replaces an existing file).
fn write_atomically(path: &Path, value: &Value) -> Result<(), String> {
    let mut name = path
        .file_name()
        .ok_or(format!("{}: not a file name", path.display()))?
        .to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{value}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

// ---------------------------------------------------------------------------------------
// NTP packets

/// The 48-byte NTP header (RFC 5905, figure 8); extension fields and MACs are not used.
#[derive(Clone, Debug, PartialEq)]
struct Packet {
    leap: u8,
    version: u8,
    mode: u8,
    stratum: u8,
    poll: i8,
    precision: i8,
    root_delay: u32,
    root_dispersion: u32,
    refid: [u8; 4],
    reference: u64,
    origin: u64,
    receive: u64,
    transmit: u64,
}

impl Packet {
    fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.refid);
        b[16..24].copy_from_slice(&self.reference.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.to_be_bytes());
        b
    }

    /// The header of `b`, or None when it is shorter than 48 bytes.
    fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < PACKET_LEN {
            return None;
        }
        // Fixed offsets inside the 48 bytes checked above.
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Some(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            refid: [b[12], b[13], b[14], b[15]],
            reference: u64_at(16),
            origin: u64_at(24),
            receive: u64_at(32),
            transmit: u64_at(40),
        })
    }
}

/// A refid as text: its ASCII when printable (trailing NULs dropped), else a dotted quad.
fn refid_text(refid: [u8; 4]) -> String {
    let end = refid.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let text = &refid[..end];
    if !text.is_empty() && text.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        String::from_utf8_lossy(text).into_owned()
    } else {
        std::net::Ipv4Addr::from(refid).to_string()
    }
}

fn parse_refid(text: &str) -> Result<[u8; 4], String> {
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(ip.octets());
    }
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "--refid {text:?}: 1 to 4 printable ASCII characters or an IPv4 address"
        ));
    }
    let mut refid = [0u8; 4];
    refid[..text.len()].copy_from_slice(text.as_bytes());
    Ok(refid)
}

// ---------------------------------------------------------------------------------------
// serve

struct Server {
    clock: RefClock,
    stratum: u8,
    refid: [u8; 4],
    leap: u8,
    /// Every Nth reply comes with bad datagrams around it (0: never).
    hostile_every: u64,
}

#[derive(Default, Debug)]
struct ServeCounts {
    served: u64,
    hostile: u64,
    ignored: u64,
    send_errors: u64,
    recv_errors: u64,
}

impl Server {
    /// The reply to datagram `req` received at `rx_ns` (reference time), with the
    /// transmit timestamp still zero; None when `req` is not an NTP client request.
    /// A request is at least 48 bytes, a multiple of 4 (extension fields and MACs are
    /// word-aligned, RFC 5905 §7.5), version 1 to 4, mode 3.
    fn reply(&self, req: &[u8], rx_ns: i128, leap: u8) -> Option<Packet> {
        if !req.len().is_multiple_of(4) {
            return None;
        }
        let req = Packet::decode(req)?;
        if req.mode != MODE_CLIENT || !(1..=4).contains(&req.version) {
            return None;
        }
        Some(Packet {
            leap,
            version: req.version,
            mode: MODE_SERVER,
            stratum: self.stratum,
            poll: req.poll,
            precision: PRECISION,
            root_delay: 0,
            root_dispersion: ROOT_DISPERSION,
            refid: self.refid,
            // "Last set": the start of the current reference second.
            reference: unix_ns_to_ntp(rx_ns - rx_ns.rem_euclid(NS_PER_S)),
            origin: req.transmit,
            receive: unix_ns_to_ntp(rx_ns),
            transmit: 0,
        })
    }

    /// Answers requests on `sock` until `stop` is set (checked at least every 200 ms).
    fn serve(&self, sock: &UdpSocket, stop: &AtomicBool) -> Result<ServeCounts, String> {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        enable_rx_timestamps(sock)?;
        let mut counts = ServeCounts::default();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let (len, peer, stamp) = match recv_stamped(sock, &mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(_) => {
                    counts.recv_errors += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            // The kernel's receive stamp (CLOCK_REALTIME) taken back to the raw clock:
            // the wake-up of this thread is not part of the network delay.
            let (real, raw) = realtime_and_raw();
            let waited = stamp.map_or(0, |s| (real - s).clamp(0, 1_000_000_000));
            let rx_ns = self.clock.at(raw - waited);
            let leap = self.clock.leap_indicator(self.leap, raw - waited);
            let Some(reply) = self.reply(&buf[..len], rx_ns, leap) else {
                counts.ignored += 1;
                continue;
            };
            let mut bytes = reply.encode();
            let hostile = self.hostile_every > 0 && (counts.served + 1) % self.hostile_every == 0;
            if hostile {
                counts.hostile += 1;
                let mut spoofed = bytes;
                spoofed[24] ^= 0x80; // the origin timestamp (bytes 24..32) no longer matches
                spoofed[40..48].copy_from_slice(&unix_ns_to_ntp(self.clock.now()).to_be_bytes());
                let _ = sock.send_to(&bytes[..20], peer);
                let _ = sock.send_to(&spoofed, peer);
            }
            bytes[40..48].copy_from_slice(&unix_ns_to_ntp(self.clock.now()).to_be_bytes());
            match sock.send_to(&bytes, peer) {
                Ok(_) => counts.served += 1,
                Err(_) => counts.send_errors += 1,
            }
            if hostile {
                let _ = sock.send_to(&bytes, peer);
            }
        }
        Ok(counts)
    }
}

/// Turns on SO_TIMESTAMPNS: the kernel stamps each datagram with CLOCK_REALTIME on arrival.
fn enable_rx_timestamps(sock: &UdpSocket) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "SO_TIMESTAMPNS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// recv_from with the kernel's receive stamp (CLOCK_REALTIME ns, when there is one).
fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<i64>)> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain C structs, all-zero is valid; every pointer in `msg` points at a live
    // local of the stated size; the cmsg walk stays within msg_controllen.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut stamp = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                stamp = Some(ts.tv_sec * 1_000_000_000 + ts.tv_nsec);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
        let peer = match libc::c_int::from(addr.ss_family) {
            libc::AF_INET => {
                let a = &*(&raw const addr).cast::<libc::sockaddr_in>();
                SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                ))
            }
            libc::AF_INET6 => {
                let a = &*(&raw const addr).cast::<libc::sockaddr_in6>();
                SocketAddr::from((
                    std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                ))
            }
            family => return Err(std::io::Error::other(format!("address family {family}"))),
        };
        Ok((n as usize, peer, stamp))
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGTERM and SIGINT set STOP; without SA_RESTART, so a blocked recv returns at once.
fn install_stop_handlers() -> Result<(), String> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: sigaction is plain data; the handler only stores to an atomic.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn parse_leap(text: &str) -> Result<u8, String> {
    match text {
        "none" => Ok(0),
        "ins" => Ok(1),
        "del" => Ok(2),
        "unsync" => Ok(LEAP_UNSYNC),
        _ => Err(format!("--leap {text:?}: none, ins, del or unsync")),
    }
}

fn serve_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(
        args,
        &[
            "--listen",
            "--params",
            "--offset-s",
            "--freq-ppm",
            "--stratum",
            "--refid",
            "--leap",
            "--leap-at",
            "--hostile",
        ],
        0,
    )?;
    let hostile_every: u64 = opts.parsed("--hostile", 0)?;
    let listen = resolve(opts.required("--listen")?)?;
    let params = PathBuf::from(opts.required("--params")?);
    let offset_ns = match opts.get("--offset-s") {
        Some(text) => seconds_to_ns("--offset-s", text)?,
        None => 0,
    };
    let freq_ppm: f64 = opts.parsed("--freq-ppm", 0.0)?;
    if !freq_ppm.is_finite() || freq_ppm.abs() > 1e6 {
        return Err(format!("--freq-ppm {freq_ppm}: out of range"));
    }
    let stratum: u8 = opts.parsed("--stratum", 1)?;
    let refid = parse_refid(opts.get("--refid").unwrap_or("CGRF"))?;
    let leap = parse_leap(opts.get("--leap").unwrap_or("none"))?;
    let leap_second = match opts.get("--leap-at") {
        None => None,
        Some(text) => {
            let at_s: i64 = text
                .parse()
                .map_err(|e| format!("--leap-at {text:?}: {e}"))?;
            if at_s.rem_euclid(86_400) != 0 {
                return Err(format!("--leap-at {at_s}: not a midnight UTC"));
            }
            match leap {
                1 => Some((at_s, 1)),
                2 => Some((at_s, -1)),
                _ => return Err("--leap-at needs --leap ins or --leap del".into()),
            }
        }
    };

    let sock = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let bound = sock.local_addr().map_err(|e| e.to_string())?;
    install_stop_handlers()?;
    let server = Server {
        clock: RefClock::start(offset_ns, freq_ppm, leap_second),
        stratum,
        refid,
        leap,
        hostile_every,
    };
    write_atomically(&params, &server.clock.to_json(&bound))?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"listening": bound.to_string()}))
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    let counts = server.serve(&sock, &STOP)?;
    Ok(json!({
        "served": counts.served,
        "hostile": counts.hostile,
        "ignored": counts.ignored,
        "send_errors": counts.send_errors,
        "recv_errors": counts.recv_errors,
    }))
}

// ---------------------------------------------------------------------------------------
// load

fn load_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(args, &["--rate", "--seconds", "--clients"], 1)?;
    let server = resolve(&opts.positional[0])?;
    if !server.ip().is_loopback() || !server.is_ipv4() {
        return Err(format!("load: {server} is not an IPv4 loopback address"));
    }
    let rate: f64 = opts
        .required("--rate")?
        .parse()
        .map_err(|e| format!("--rate: {e}"))?;
    let seconds: f64 = opts
        .required("--seconds")?
        .parse()
        .map_err(|e| format!("--seconds: {e}"))?;
    let clients: usize = opts.parsed("--clients", 100)?;
    let valid = rate > 0.0
        && rate <= 1e6
        && seconds > 0.0
        && seconds <= 3600.0
        && (1..=250).contains(&clients);
    if !valid {
        return Err("load: --rate 0..1e6, --seconds 0..3600, --clients 1..250".into());
    }
    let mut socks = Vec::with_capacity(clients);
    for i in 0..clients {
        let local = SocketAddr::from(([127, 0, 0, 2 + i as u8], 0));
        let sock = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
        sock.connect(server)
            .map_err(|e| format!("connect {server}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(sock);
    }
    let mut request = [0u8; PACKET_LEN];
    request[0] = 4 << 3 | MODE_CLIENT;
    let total = (rate * seconds).round() as u64;
    let start = Instant::now();
    let (mut sent, mut replies, mut kod, mut send_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let drain = |socks: &[UdpSocket], buf: &mut [u8], replies: &mut u64, kod: &mut u64| {
        for sock in socks {
            while let Ok(len) = sock.recv(buf) {
                if len >= PACKET_LEN && buf[1] == 0 {
                    *kod += 1;
                } else if len >= PACKET_LEN {
                    *replies += 1;
                }
            }
        }
    };
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let sock = &socks[(sent % clients as u64) as usize];
            request[40..48].copy_from_slice(&(sent + 1).to_be_bytes());
            if sock.send(&request).is_err() {
                send_errors += 1;
            }
            sent += 1;
        }
        drain(&socks, &mut buf, &mut replies, &mut kod);
        std::thread::sleep(Duration::from_micros(500));
    }
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        drain(&socks, &mut buf, &mut replies, &mut kod);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(json!({
        "sent": sent,
        "replies": replies,
        "kod": kod,
        "unanswered": sent - replies - kod,
        "send_errors": send_errors,
        "seconds": start.elapsed().as_secs_f64(),
    }))
}

// ---------------------------------------------------------------------------------------
// watch

fn watch_cmd(args: &[String]) -> Result<Value, String> {
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
fn measure(clock: &RefClock, interval: Duration, length: Duration) -> Value {
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
    let p99 = (abs.len() >= 100).then(|| abs[((abs.len() - 1) as f64 * 0.99).round() as usize]);
    json!({
        "seconds": length.as_secs_f64(),
        "samples": offsets.len(),
        "rms_ns": rms.round() as i64,
        "p99_abs_ns": p99,
        "max_abs_ns": abs.last(),
        "mean_ns": (offsets.iter().map(|&o| o as f64).sum::<f64>() / offsets.len() as f64).round() as i64,
    })
}

/// Samples the offset until |offset| < limit has held for `hold` (from the first sample
/// of the run below the limit to the latest), `stopfile` exists or WATCH_LIMIT passed.
fn watch(
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
    let (mut run_sum_sq, mut run_samples) = (0f64, 0u64);
    let mut last_offset;
    let reason = loop {
        let at = Duration::from_nanos((raw_ns() - start_raw).max(0) as u64);
        last_offset = clock.sample_offset().offset_ns;
        samples += 1;
        if last_offset.abs() < limit {
            if run.is_none() {
                (run_sum_sq, run_samples) = (0.0, 0);
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
        "final_offset_ns": last_offset,
        "max_abs_offset_after_converged_ns": run.map(|(_, max)| max),
        "rms_offset_after_converged_ns": run
            .map(|_| (run_sum_sq / run_samples.max(1) as f64).sqrt().round() as i64),
        "samples": samples,
        "stopped_by": reason,
        "elapsed_s": start.elapsed().as_secs_f64(),
    })
}

// ---------------------------------------------------------------------------------------
// query

/// One valid reply: offset and delay against CLOCK_REALTIME, and the server's header.
#[derive(Debug)]
struct Sample {
    offset_ns: i128,
    delay_ns: i128,
    stratum: u8,
    refid: [u8; 4],
    leap: u8,
    version: u8,
    reply_len: usize,
}

fn urandom_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(u64::from_ne_bytes(b))
}

fn client_socket(server: SocketAddr) -> Result<UdpSocket, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("connect {server}: {e}"))?;
    Ok(sock)
}

/// Receives on `sock` until `deadline`: Ok(Some((len, CLOCK_REALTIME at receipt))), Ok(None)
/// at the deadline, Err on a socket error (e.g. ICMP port unreachable).
fn recv_until(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> std::io::Result<Option<(usize, i64)>> {
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv(buf) {
            Ok(len) => return Ok(Some((len, realtime_ns()))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One request/response exchange: Ok(sample) or the reason there is none.
fn exchange(sock: &UdpSocket, timeout: Duration) -> Result<Sample, String> {
    let mut cookie = urandom_u64()?;
    if cookie == 0 {
        cookie = 1;
    }
    let request = Packet {
        leap: 0,
        version: 4,
        mode: MODE_CLIENT,
        stratum: 0,
        poll: 6,
        precision: PRECISION,
        root_delay: 0,
        root_dispersion: 0,
        refid: [0; 4],
        reference: 0,
        origin: 0,
        receive: 0,
        transmit: cookie,
    }
    .encode();
    let mut buf = [0u8; 2048];
    let t1 = realtime_ns();
    sock.send(&request).map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut stale = 0;
    loop {
        let (len, t4) = match recv_until(sock, &mut buf, deadline) {
            Ok(Some(r)) => r,
            Ok(None) if stale > 0 => {
                return Err(format!(
                    "no matching reply within {} ms ({stale} short or with a wrong origin)",
                    timeout.as_millis()
                ))
            }
            Ok(None) => return Err(format!("no reply within {} ms", timeout.as_millis())),
            Err(e) => return Err(format!("recv: {e}")),
        };
        let Some(reply) = Packet::decode(&buf[..len]).filter(|r| r.origin == cookie) else {
            // Truncated, a late reply to an earlier request, or a forgery: keep waiting.
            stale += 1;
            continue;
        };
        if reply.mode != MODE_SERVER {
            return Err(format!("reply mode {}, not 4", reply.mode));
        }
        if !(1..=15).contains(&reply.stratum) {
            return Err(format!("reply stratum {}, not 1..15", reply.stratum));
        }
        if reply.leap == LEAP_UNSYNC {
            return Err("reply leap indicator 3 (unsynchronised)".into());
        }
        if reply.receive == 0 || reply.transmit == 0 {
            return Err("reply with a zero receive or transmit timestamp".into());
        }
        let (t1, t4) = (i128::from(t1), i128::from(t4));
        let t2 = ntp_to_unix_ns(reply.receive, t1);
        let t3 = ntp_to_unix_ns(reply.transmit, t1);
        return Ok(Sample {
            offset_ns: ((t2 - t1) + (t3 - t4)) / 2,
            delay_ns: (t4 - t1) - (t3 - t2),
            stratum: reply.stratum,
            refid: reply.refid,
            leap: reply.leap,
            version: reply.version,
            reply_len: len,
        });
    }
}

/// `count` exchanges `spacing` apart: the JSON report and whether any reply was valid.
fn query(server: SocketAddr, count: u32, timeout: Duration, spacing: Duration) -> (Value, bool) {
    let mut errors: Vec<String> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    match client_socket(server) {
        Err(e) => errors.push(e),
        Ok(sock) => {
            let start = Instant::now();
            for i in 0..count {
                if let Some(wait) = (spacing * i).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                match exchange(&sock, timeout) {
                    Ok(s) => samples.push(s),
                    Err(e) => errors.push(format!("request {}: {e}", i + 1)),
                }
            }
        }
    }
    let best = samples.iter().min_by_key(|s| s.delay_ns);
    let report = json!({
        "replies": samples.len(),
        "offset_ns": best.map(|s| s.offset_ns as i64),
        "delay_ns": best.map(|s| s.delay_ns as i64),
        "stratum": best.map(|s| s.stratum),
        "refid": best.map(|s| refid_text(s.refid)),
        "leap": best.map(|s| s.leap),
        "version": best.map(|s| s.version),
        "reply_len": best.map(|s| s.reply_len),
        "errors": errors,
    });
    (report, best.is_some())
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("--raw-bytes: odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "--raw-bytes: not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("--raw-bytes: {s:?} is not hex"))
        })
        .collect()
}

/// Sends `datagram` once and reports whether anything came back within `timeout`.
fn query_raw(server: SocketAddr, datagram: &[u8], timeout: Duration) -> Value {
    let mut errors: Vec<String> = Vec::new();
    let mut reply_len = None;
    match client_socket(server) {
        Err(e) => errors.push(e),
        Ok(sock) => match sock.send(datagram) {
            Err(e) => errors.push(format!("send: {e}")),
            Ok(_) => {
                let mut buf = vec![0u8; 65536];
                match recv_until(&sock, &mut buf, Instant::now() + timeout) {
                    Ok(Some((len, _))) => reply_len = Some(len),
                    Ok(None) => {}
                    Err(e) => errors.push(format!("recv: {e}")),
                }
            }
        },
    }
    json!({
        "reply": reply_len.is_some(),
        "reply_len": reply_len,
        "sent_len": datagram.len(),
        "errors": errors,
    })
}

fn query_cmd(args: &[String]) -> Result<(Value, u8), String> {
    let opts = Opts::parse(args, &["--count", "--timeout-ms", "--raw-bytes"], 1)?;
    let server = resolve(&opts.positional[0])?;
    let timeout_ms: u64 = opts.parsed("--timeout-ms", 1000)?;
    if timeout_ms == 0 {
        return Err("--timeout-ms must be positive".into());
    }
    let timeout = Duration::from_millis(timeout_ms);
    if let Some(hex) = opts.get("--raw-bytes") {
        if opts.get("--count").is_some() {
            return Err("--count does not apply to --raw-bytes".into());
        }
        return Ok((query_raw(server, &parse_hex(hex)?, timeout), 0));
    }
    let count: u32 = opts.parsed("--count", 4)?;
    if count == 0 {
        return Err("--count must be positive".into());
    }
    let (report, ok) = query(server, count, timeout, QUERY_SPACING);
    Ok((report, u8::from(!ok)))
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const UNIX_EPOCH_NTP_S: u64 = 2_208_988_800;

    #[test]
    fn unix_epoch_and_fractions() {
        assert_eq!(unix_ns_to_ntp(0), UNIX_EPOCH_NTP_S << 32);
        assert_eq!(
            unix_ns_to_ntp(500_000_000),
            UNIX_EPOCH_NTP_S << 32 | 0x8000_0000
        );
        assert_eq!(
            unix_ns_to_ntp(250_000_000),
            UNIX_EPOCH_NTP_S << 32 | 0x4000_0000
        );
        // 1 ns = 4.294967296 units of 2^-32 s: rounds to 4.
        assert_eq!(unix_ns_to_ntp(1), UNIX_EPOCH_NTP_S << 32 | 4);
        // The largest fraction stays in the second (no carry): round(0.999999999 * 2^32).
        assert_eq!(
            unix_ns_to_ntp(999_999_999),
            UNIX_EPOCH_NTP_S << 32 | 4_294_967_292
        );
        // Before 1970: 1 ns before the epoch is the previous second's last fraction.
        assert_eq!(
            unix_ns_to_ntp(-1),
            (UNIX_EPOCH_NTP_S - 1) << 32 | 4_294_967_292
        );
        // 2001-09-09T01:46:40Z.
        assert_eq!(
            unix_ns_to_ntp(1_000_000_000 * NS_PER_S + 123_456_789),
            (UNIX_EPOCH_NTP_S + 1_000_000_000) << 32 | 530_242_871
        );
        // Back: one unit of 2^-32 s is 0.23 ns and rounds to 0; 0x8000_0000 is 0.5 s.
        assert_eq!(ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 1, 0), 0);
        assert_eq!(ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 3, 0), 1);
        assert_eq!(
            ntp_to_unix_ns(UNIX_EPOCH_NTP_S << 32 | 0x8000_0000, 0),
            500_000_000
        );
        // Timestamp 0 read near 1900 is 1900 itself (near 1970 it would be 2036).
        let y1900 = -NTP_UNIX_OFFSET_S * NS_PER_S;
        assert_eq!(ntp_to_unix_ns(0, y1900 + NS_PER_S), y1900);
    }

    #[test]
    fn round_trip_is_exact_to_the_ns() {
        // ns -> 2^-32 s -> ns loses less than 0.12 ns + rounding: always the same ns back.
        let now = i128::from(realtime_ns());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200_000i128 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ns = now + i128::from(x % 4_000_000_000_000) - 2_000_000_000_000 + i;
            assert_eq!(ntp_to_unix_ns(unix_ns_to_ntp(ns), now), ns, "{ns}");
        }
        for sub in [0, 1, 2, 499_999_999, 500_000_000, 999_999_998, 999_999_999] {
            let ns = 1_700_000_000 * NS_PER_S + sub;
            assert_eq!(ntp_to_unix_ns(unix_ns_to_ntp(ns), ns), ns);
        }
    }

    #[test]
    fn era_wrap_in_2036() {
        // Era 1 begins 2036-02-07T06:28:16Z = Unix 2085978496 s.
        let era1_unix_s: i128 = (1 << 32) - NTP_UNIX_OFFSET_S;
        assert_eq!(era1_unix_s, 2_085_978_496);
        let just_after = era1_unix_s * NS_PER_S + 250_000_000;
        assert_eq!(unix_ns_to_ntp(just_after), 0x4000_0000);
        // The same timestamp read near 2036 is in era 1; read near 1950, in era 0 (1900).
        assert_eq!(
            ntp_to_unix_ns(0x4000_0000, just_after - 10 * NS_PER_S),
            just_after
        );
        // (1970 itself is nearer to 2036 than to 1900: the pivot decides, not the epoch.)
        assert_eq!(ntp_to_unix_ns(0x4000_0000, 0), just_after);
        let y1950 = -20 * 365 * 86_400 * NS_PER_S;
        assert_eq!(
            ntp_to_unix_ns(0x4000_0000, y1950),
            -NTP_UNIX_OFFSET_S * NS_PER_S + 250_000_000
        );
        let just_before = era1_unix_s * NS_PER_S - 1;
        assert_eq!(
            ntp_to_unix_ns(unix_ns_to_ntp(just_before), just_after),
            just_before
        );
    }

    /// A leap second at a midnight: announced until it, then applied as a kernel does.
    #[test]
    fn ref_clock_leap_second() {
        let midnight_s = 1_798_761_600; // 2027-01-01T00:00:00Z
                                        // The reference reads 10 s before the midnight at raw 0.
        let base = RefClock {
            k_ns: (midnight_s - 10) * 1_000_000_000,
            raw0_ns: 0,
            offset_ns: 0,
            freq_ppm: 0.0,
            leap: None,
        };
        let s = |n: i64| n * 1_000_000_000;
        let inserted = RefClock {
            leap: Some((midnight_s, 1)),
            ..base.clone()
        };
        assert_eq!(inserted.at(s(9)), base.at(s(9)));
        assert_eq!(inserted.leap_indicator(1, s(9)), 1);
        // 23:59:59 twice: at the midnight the reference reads 23:59:59 again.
        assert_eq!(inserted.at(s(10)), i128::from(midnight_s - 1) * NS_PER_S);
        assert_eq!(inserted.at(s(11)), i128::from(midnight_s) * NS_PER_S);
        assert_eq!(inserted.leap_indicator(1, s(10)), 0);
        // Deleted: 23:59:59 is skipped, a second before the midnight.
        let deleted = RefClock {
            leap: Some((midnight_s, -1)),
            ..base.clone()
        };
        assert_eq!(deleted.at(s(8)), base.at(s(8)));
        assert_eq!(deleted.at(s(9)), i128::from(midnight_s) * NS_PER_S);
        assert_eq!(deleted.leap_indicator(2, s(9) - 1), 2);
        assert_eq!(deleted.leap_indicator(2, s(9)), 0);
        // The params carry it to `offset` and `watch`.
        let listen: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let back = RefClock::from_json(&inserted.to_json(&listen)).unwrap();
        assert_eq!(back.leap, inserted.leap);
        assert_eq!(
            RefClock::from_json(&base.to_json(&listen)).unwrap().leap,
            None
        );
    }

    #[test]
    fn ref_clock_formula() {
        let clock = RefClock {
            k_ns: 1_700_000_000 * 1_000_000_000 - 5_000_000_000,
            raw0_ns: 5_000_000_000,
            offset_ns: 11_000_000_000,
            freq_ppm: 0.0,
            leap: None,
        };
        // At raw0: realtime at start + offset.
        assert_eq!(
            clock.at(5_000_000_000),
            1_700_000_000 * NS_PER_S + 11 * NS_PER_S
        );
        assert_eq!(
            clock.at(6_000_000_000),
            1_700_000_001 * NS_PER_S + 11 * NS_PER_S
        );
        // +100 ppm: 100 µs more per second of raw time, nothing at raw0.
        let fast = RefClock {
            freq_ppm: 100.0,
            ..clock.clone()
        };
        assert_eq!(fast.at(5_000_000_000), clock.at(5_000_000_000));
        assert_eq!(
            fast.at(15_000_000_000),
            clock.at(15_000_000_000) + 1_000_000
        );
        // -12.5 ppm over 1000 s: 12.5 ms less; before raw0 the drift is the other way.
        let slow = RefClock {
            freq_ppm: -12.5,
            ..clock.clone()
        };
        assert_eq!(
            slow.at(1_005_000_000_000),
            clock.at(1_005_000_000_000) - 12_500_000
        );
        assert_eq!(slow.at(4_000_000_000), clock.at(4_000_000_000) + 12_500);
    }

    #[test]
    fn ref_clock_started_now_is_offset_from_realtime() {
        let clock = RefClock::start(11_000_000_000, 0.0, None);
        let s = clock.sample_offset();
        // REALTIME - ref = -11 s, give or take the clock reads and any slew in progress.
        assert!(
            (s.offset_ns + 11_000_000_000).abs() < 1_000_000,
            "{}",
            s.offset_ns
        );
        assert_eq!(s.realtime_ns - s.ref_ns, s.offset_ns);
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cg-ntpref-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn params_file_round_trip_and_overwrite() {
        let path = temp_path("params.json");
        let addr: SocketAddr = "127.0.0.1:12345".parse().unwrap();
        let first = RefClock::start(-3_000_000_000, 7.25, None);
        write_atomically(&path, &first.to_json(&addr)).unwrap();
        assert_eq!(RefClock::load(&path).unwrap(), first);
        let second = RefClock::start(5, 0.0, None);
        write_atomically(&path, &second.to_json(&addr)).unwrap();
        assert_eq!(RefClock::load(&path).unwrap(), second);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["listen"], "127.0.0.1:12345");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn packet_encode_decode() {
        let p = Packet {
            leap: 1,
            version: 3,
            mode: 4,
            stratum: 2,
            poll: -3,
            precision: PRECISION,
            root_delay: 0x0001_8000,
            root_dispersion: ROOT_DISPERSION,
            refid: *b"CGRF",
            reference: 1,
            origin: 0x0102_0304_0506_0708,
            receive: u64::MAX,
            transmit: 42,
        };
        let b = p.encode();
        assert_eq!(b[0], 0b01_011_100);
        assert_eq!(b[3], 0xEC);
        assert_eq!(&b[12..16], b"CGRF");
        assert_eq!(Packet::decode(&b), Some(p));
        assert_eq!(Packet::decode(&b[..47]), None);
        assert_eq!(refid_text(*b"CGRF"), "CGRF");
        assert_eq!(refid_text(*b"GPS\0"), "GPS");
        assert_eq!(refid_text([127, 0, 0, 1]), "127.0.0.1");
        assert_eq!(parse_refid("GPS").unwrap(), *b"GPS\0");
        assert_eq!(parse_refid("10.1.2.3").unwrap(), [10, 1, 2, 3]);
        assert!(parse_refid("TOOLONG").is_err());
    }

    #[test]
    fn server_answers_only_client_requests() {
        let server = Server {
            clock: RefClock::start(0, 0.0, None),
            stratum: 1,
            refid: *b"CGRF",
            leap: 0,
            hostile_every: 0,
        };
        let mut req = [0u8; PACKET_LEN];
        req[0] = 3 << 3 | 3; // v3, mode 3
        req[2] = 10;
        req[40..48].copy_from_slice(&0xDEAD_BEEF_0000_0001u64.to_be_bytes());
        let rx = 1_700_000_000 * NS_PER_S + 750_000_000;
        let reply = server.reply(&req, rx, server.leap).unwrap();
        assert_eq!((reply.mode, reply.version, reply.stratum), (4, 3, 1));
        assert_eq!(reply.poll, 10);
        assert_eq!(reply.origin, 0xDEAD_BEEF_0000_0001);
        assert_eq!(reply.receive, unix_ns_to_ntp(rx));
        assert_eq!(reply.reference >> 32, reply.receive >> 32);
        // A MAC or extension field behind the header is fine.
        let mut long = req.to_vec();
        long.extend_from_slice(&[0; 20]);
        assert!(server.reply(&long, rx, server.leap).is_some());
        // Ignored: short, unaligned, other modes, version 0 and 5..7.
        assert!(server.reply(&req[..47], rx, server.leap).is_none());
        assert!(server
            .reply(&[req.as_slice(), &[0]].concat(), rx, server.leap)
            .is_none());
        for mode in [0, 1, 2, 4, 5, 6, 7] {
            req[0] = 4 << 3 | mode;
            assert!(server.reply(&req, rx, server.leap).is_none(), "mode {mode}");
        }
        for version in [0, 5, 6, 7] {
            req[0] = version << 3 | 3;
            assert!(
                server.reply(&req, rx, server.leap).is_none(),
                "version {version}"
            );
        }
    }

    /// A server on an ephemeral loopback port in a thread, stopped when dropped.
    struct TestServer {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<ServeCounts>>,
    }

    impl TestServer {
        fn start(offset_ns: i64, leap: u8, hostile_every: u64) -> TestServer {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = sock.local_addr().unwrap();
            assert_ne!(addr.port(), 0);
            let stop = Arc::new(AtomicBool::new(false));
            let server = Server {
                clock: RefClock::start(offset_ns, 0.0, None),
                stratum: 1,
                refid: *b"CGRF",
                leap,
                hostile_every,
            };
            let flag = stop.clone();
            let thread = std::thread::spawn(move || server.serve(&sock, &flag).unwrap());
            TestServer {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        fn stop(mut self) -> ServeCounts {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn loopback_query_measures_the_offset() {
        let server = TestServer::start(5_000_000_000, 0, 0);
        let (report, ok) = query(server.addr, 4, Duration::from_secs(1), QUERY_SPACING);
        println!("loopback query, server 5 s ahead: {report}");
        assert!(ok, "{report}");
        assert_eq!(report["replies"], 4, "{report}");
        assert_eq!(report["errors"], json!([]), "{report}");
        let offset = report["offset_ns"].as_i64().unwrap();
        assert!(
            (offset - 5_000_000_000).abs() < 5_000_000,
            "offset {offset} ns, not 5 s ± 5 ms: {report}"
        );
        let delay = report["delay_ns"].as_i64().unwrap();
        assert!((0..5_000_000).contains(&delay), "{report}");
        assert_eq!(report["stratum"], 1);
        assert_eq!(report["refid"], "CGRF");
        assert_eq!(report["leap"], 0);
        assert_eq!(report["version"], 4);
        assert_eq!(report["reply_len"], 48);

        // Malformed datagrams get no answer; a well-formed one does.
        let timeout = Duration::from_millis(300);
        let v = query_raw(server.addr, &[0x1b; 47], timeout);
        assert_eq!(v["reply"], false, "{v}");
        let mut mode1 = [0u8; 48];
        mode1[0] = 4 << 3 | 1;
        assert_eq!(query_raw(server.addr, &mode1, timeout)["reply"], false);
        let mut ok_req = [0u8; 48];
        ok_req[0] = 4 << 3 | 3;
        let v = query_raw(server.addr, &ok_req, timeout);
        assert_eq!(
            (v["reply"].clone(), v["reply_len"].clone()),
            (json!(true), json!(48))
        );

        let counts = server.stop();
        assert_eq!((counts.served, counts.ignored), (5, 2), "{counts:?}");
    }

    #[test]
    fn a_hostile_server_sends_bad_datagrams_that_a_careful_client_skips() {
        let server = TestServer::start(1_000_000_000, 0, 1);
        let (report, ok) = query(server.addr, 2, Duration::from_secs(1), QUERY_SPACING);
        assert!(ok, "{report}");
        assert_eq!(report["replies"], 2, "{report}");
        let offset = report["offset_ns"].as_i64().unwrap();
        assert!((offset - 1_000_000_000).abs() < 5_000_000, "{report}");
        assert_eq!(report["errors"], json!([]), "{report}");
        let counts = server.stop();
        assert_eq!((counts.served, counts.hostile), (2, 2), "{counts:?}");
    }

    #[test]
    fn query_rejects_an_unsynchronised_server() {
        let server = TestServer::start(0, LEAP_UNSYNC, 0);
        let (report, ok) = query(server.addr, 1, Duration::from_millis(500), QUERY_SPACING);
        assert!(!ok, "{report}");
        assert_eq!(report["replies"], 0);
        assert!(report["errors"][0]
            .as_str()
            .unwrap()
            .contains("unsynchronised"));
        server.stop();
    }

    #[test]
    fn watch_stops_at_the_stopfile_or_when_converged() {
        let far = RefClock::start(-2_000_000_000, 0.0, None);
        let stopfile = temp_path("stop");
        std::fs::write(&stopfile, b"").unwrap();
        let v = watch(
            &far,
            1_000_000,
            &stopfile,
            Duration::from_millis(10),
            Duration::ZERO,
        );
        std::fs::remove_file(&stopfile).unwrap();
        assert_eq!(v["converged"], false, "{v}");
        assert_eq!(v["converged_after_s"], Value::Null);
        assert_eq!(v["stopped_by"], "stopfile");
        assert!((v["final_offset_ns"].as_i64().unwrap() - 2_000_000_000).abs() < 1_000_000);

        let near = RefClock::start(0, 0.0, None);
        let v = watch(
            &near,
            1_000_000,
            &temp_path("absent"),
            Duration::from_millis(10),
            Duration::from_millis(100),
        );
        assert_eq!(v["converged"], true, "{v}");
        // The first sample was already below the limit.
        assert!(v["converged_after_s"].as_f64().unwrap() < 0.01, "{v}");
        assert!(v["samples"].as_u64().unwrap() >= 11, "{v}");
        assert!(v["max_abs_offset_after_converged_ns"].as_i64().unwrap() < 1_000_000);
    }

    #[test]
    fn command_line_errors() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(run(&args("")).is_err());
        assert!(run(&args("bogus")).is_err());
        assert!(run(&args("serve --params /nonexistent/x")).is_err());
        assert!(run(&args("serve --listen 127.0.0.1:0 --params p --leap maybe")).is_err());
        // --leap-at must be a midnight and come with a leap to apply.
        let serve = "serve --listen 127.0.0.1:0 --params /nonexistent/p";
        let err = run(&args(&format!("{serve} --leap ins --leap-at 1798761601"))).unwrap_err();
        assert!(err.contains("not a midnight"), "{err}");
        let err = run(&args(&format!("{serve} --leap-at 1798761600"))).unwrap_err();
        assert!(err.contains("needs --leap ins"), "{err}");
        assert!(run(&args("query")).is_err());
        assert!(run(&args("query 127.0.0.1:1 --count x")).is_err());
        assert!(run(&args("query 127.0.0.1:1 --raw-bytes 1b0")).is_err());
        assert!(run(&args("watch --params p --until-abs-ns 0 --stopfile s")).is_err());
        assert!(run(&args("offset --params /nonexistent/params.json")).is_err());
        assert_eq!(parse_hex("1b 00:ff").unwrap(), vec![0x1b, 0, 0xff]);
        assert_eq!(seconds_to_ns("x", "-0.25").unwrap(), -250_000_000);
        assert_eq!(seconds_to_ns("x", "11").unwrap(), 11_000_000_000);
    }
}
