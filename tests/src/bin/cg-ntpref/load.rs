//! `load`: many clients querying a server at a set rate, for the benchmarks.

use super::*;

pub(crate) fn load_cmd(args: &[String]) -> Result<Value, String> {
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
