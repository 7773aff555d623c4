//! `serve`: answers NTPv4 client requests from the reference clock, optionally with hostile
//! datagrams mixed in.

use super::*;

pub(crate) struct Server {
    pub(crate) clock: RefClock,
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
    pub(crate) fn serve(&self, sock: &UdpSocket, stop: &AtomicBool) -> Result<ServeCounts, String> {
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
pub(crate) fn enable_rx_timestamps(sock: &UdpSocket) -> Result<(), String> {
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
pub(crate) fn recv_stamped(
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
pub(crate) fn install_stop_handlers() -> Result<(), String> {
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
