//! `query`: one-shot NTP client exchanges (and raw datagrams) against a server.

use super::*;

/// One valid reply: offset and delay against CLOCK_REALTIME, and the server's header.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) offset_ns: i128,
    pub(crate) delay_ns: i128,
    pub(crate) stratum: u8,
    pub(crate) refid: [u8; 4],
    pub(crate) leap: u8,
    pub(crate) version: u8,
    pub(crate) reply_len: usize,
}

pub(crate) fn urandom_u64() -> Result<u64, String> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(u64::from_ne_bytes(b))
}

pub(crate) fn client_socket(server: SocketAddr) -> Result<UdpSocket, String> {
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
pub(crate) fn recv_until(
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
pub(crate) fn exchange(sock: &UdpSocket, timeout: Duration) -> Result<Sample, String> {
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
pub(crate) fn query(
    server: SocketAddr,
    count: u32,
    timeout: Duration,
    spacing: Duration,
) -> (Value, bool) {
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

pub(crate) fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
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
pub(crate) fn query_raw(server: SocketAddr, datagram: &[u8], timeout: Duration) -> Value {
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

pub(crate) fn query_cmd(args: &[String]) -> Result<(Value, u8), String> {
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
