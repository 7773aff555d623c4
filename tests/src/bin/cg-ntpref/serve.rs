//! `serve`: answers NTPv4 client requests from the reference clock, optionally with hostile
//! datagrams mixed in.

use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};

use super::*;

pub(crate) struct Server {
    pub(crate) clock: Params,
    pub(crate) stratum: u8,
    pub(crate) refid: [u8; 4],
    pub(crate) leap: u8,
    /// Every Nth reply comes with bad datagrams around it (0: never).
    pub(crate) hostile_every: u64,
}

#[derive(Default, Debug)]
pub(crate) struct ServeCounts {
    pub(crate) served: u64,
    pub(crate) hostile: u64,
    pub(crate) ignored: u64,
    pub(crate) send_errors: u64,
    pub(crate) recv_errors: u64,
}

impl Server {
    /// The reply to datagram `req` received at `rx_ns` (reference time), with the
    /// transmit timestamp still zero; None when `req` is not an NTP client request.
    /// A request is at least 48 bytes, a multiple of 4 (extension fields and MACs are
    /// word-aligned, RFC 5905 §7.5), version 1 to 4, mode 3.
    pub(crate) fn reply(&self, req: &[u8], rx_ns: i128, leap: u8) -> Option<Packet> {
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
    pub(crate) fn serve(
        &mut self,
        sock: &UdpSocket,
        stop: &AtomicBool,
    ) -> Result<ServeCounts, String> {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        // SO_TIMESTAMPNS: the kernel stamps each datagram with CLOCK_REALTIME on arrival.
        nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
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
            // The reference as the params say now (a `step` may have been added).
            self.clock.refresh()?;
            let clock = self.clock.current();
            let rx_ns = clock.at(raw - waited);
            let leap = clock.leap_indicator(self.leap, raw - waited);
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
                spoofed[40..48].copy_from_slice(&unix_ns_to_ntp(clock.now()).to_be_bytes());
                let _ = sock.send_to(&bytes[..20], peer);
                let _ = sock.send_to(&spoofed, peer);
            }
            bytes[40..48].copy_from_slice(&unix_ns_to_ntp(clock.now()).to_be_bytes());
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

/// recv_from with the kernel's receive stamp (CLOCK_REALTIME ns, when there is one). A
/// blocking receive (the socket's read timeout bounds it). Written here, not taken from
/// clockguard: a stamping error shared by the reference and the client under test would
/// cancel out of the offset the test measures.
fn recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<i64>)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )?;
    let mut stamp = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
            stamp = Some(ts.tv_sec() * 1_000_000_000 + ts.tv_nsec());
        }
    }
    let peer = msg.address.as_ref().and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from(*v4))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
    });
    let peer = peer.ok_or_else(|| std::io::Error::other("a datagram from no IPv4/IPv6 address"))?;
    Ok((msg.bytes, peer, stamp))
}

pub(crate) fn parse_leap(text: &str) -> Result<u8, String> {
    match text {
        "none" => Ok(0),
        "ins" => Ok(1),
        "del" => Ok(2),
        "unsync" => Ok(LEAP_UNSYNC),
        _ => Err(format!("--leap {text:?}: none, ins, del or unsync")),
    }
}

pub(crate) fn serve_cmd(args: &[String]) -> Result<Value, String> {
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
    // SIGTERM and SIGINT set the flag; a blocked recv returns at once.
    let stop = clockguard_sys::test_calls::stop_on_sigterm_or_sigint()
        .map_err(|e| format!("sigaction: {e}"))?;
    let clock = RefClock::start(offset_ns, freq_ppm, leap_second);
    write_atomically(&params, &clock.to_json(&bound))?;
    let mut server = Server {
        clock: Params::load(&params)?,
        stratum,
        refid,
        leap,
        hostile_every,
    };
    let mut out = std::io::stdout();
    writeln!(out, "{}", json!({"listening": bound.to_string()}))
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    let counts = server.serve(&sock, stop)?;
    Ok(json!({
        "served": counts.served,
        "hostile": counts.hostile,
        "ignored": counts.ignored,
        "send_errors": counts.send_errors,
        "recv_errors": counts.recv_errors,
    }))
}
