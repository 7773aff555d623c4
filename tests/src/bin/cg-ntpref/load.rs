//! `load`: many clients querying a server at a set rate, for the benchmarks; with
//! `--nts-ke`, each client makes a key exchange first and sends NTS requests.

use clockguard_core::ntp::nts::{ClientSession, ReplyOutcome, NONCE_LEN, UNIQUE_ID_LEN};

use super::*;

pub(crate) fn load_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(
        args,
        &["--rate", "--seconds", "--clients", "--nts-ke", "--ca"],
        1,
    )?;
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
    // With NTS: one key exchange per client, before the clock starts; the NTP server is
    // the one the exchange named.
    let mut sessions: Vec<Option<ClientSession>> = Vec::with_capacity(clients);
    let mut target = server;
    if let Some(ke) = opts.get("--nts-ke") {
        let config = super::nts::tls_config(Path::new(opts.required("--ca")?))?;
        for _ in 0..clients {
            let (session, ntp) = super::nts::key_exchange(&config, resolve(ke)?)?;
            sessions.push(Some(session));
            target = ntp;
        }
    } else {
        sessions.resize_with(clients, || None);
    }
    let mut socks = Vec::with_capacity(clients);
    for i in 0..clients {
        let local = SocketAddr::from(([127, 0, 0, 2 + i as u8], 0));
        let sock = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
        sock.connect(target)
            .map_err(|e| format!("connect {target}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(sock);
    }
    let mut header = [0u8; PACKET_LEN];
    header[0] = 4 << 3 | MODE_CLIENT;
    let total = (rate * seconds).round() as u64;
    let start = Instant::now();
    let mut counts = Counts::default();
    let mut buf = [0u8; 2048];
    while counts.sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while counts.sent < due {
            let client = (counts.sent % clients as u64) as usize;
            let serial = (counts.sent + 1).to_be_bytes();
            header[40..48].copy_from_slice(&serial);
            let request = match &mut sessions[client] {
                None => Some(header.to_vec()),
                Some(session) => {
                    // Unique per request; the bench needs no secrecy.
                    let mut unique_id = [0u8; UNIQUE_ID_LEN];
                    unique_id[..8].copy_from_slice(&serial);
                    let mut nonce = [0u8; NONCE_LEN];
                    nonce[..8].copy_from_slice(&serial);
                    session.request(&header, unique_id, &nonce)
                }
            };
            match request {
                Some(request) if socks[client].send(&request).is_err() => counts.send_errors += 1,
                Some(_) => {}
                None => counts.no_cookie += 1,
            }
            counts.sent += 1;
        }
        counts.drain(&socks, &mut sessions, &mut buf);
        std::thread::sleep(Duration::from_micros(500));
    }
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        counts.drain(&socks, &mut sessions, &mut buf);
        std::thread::sleep(Duration::from_millis(5));
    }
    let Counts {
        sent,
        replies,
        kod,
        naks,
        rejected,
        no_cookie,
        send_errors,
    } = counts;
    Ok(json!({
        "nts": opts.get("--nts-ke").is_some(),
        "sent": sent,
        "replies": replies,
        "kod": kod,
        "nts_naks": naks,
        "nts_rejected": rejected,
        "nts_no_cookie": no_cookie,
        "unanswered": sent.saturating_sub(replies + kod + naks + no_cookie),
        "send_errors": send_errors,
        "seconds": start.elapsed().as_secs_f64(),
    }))
}

/// What became of the requests: replies (authenticated ones, with NTS), RATE kisses, NTS
/// NAKs and replies that did not authenticate.
#[derive(Default)]
struct Counts {
    sent: u64,
    replies: u64,
    kod: u64,
    naks: u64,
    rejected: u64,
    no_cookie: u64,
    send_errors: u64,
}

impl Counts {
    fn drain(
        &mut self,
        socks: &[UdpSocket],
        sessions: &mut [Option<ClientSession>],
        buf: &mut [u8],
    ) {
        for (sock, session) in socks.iter().zip(sessions.iter_mut()) {
            while let Ok(len) = sock.recv(buf) {
                if len < PACKET_LEN {
                    continue;
                }
                match session {
                    _ if buf[1] == 0 && &buf[12..16] != b"NTSN" => self.kod += 1,
                    None => self.replies += 1,
                    Some(session) => match session.reply(&buf[..len]) {
                        Ok(ReplyOutcome::Authentic) => self.replies += 1,
                        Ok(ReplyOutcome::Nak) => self.naks += 1,
                        Err(_) => self.rejected += 1,
                    },
                }
            }
        }
    }
}
