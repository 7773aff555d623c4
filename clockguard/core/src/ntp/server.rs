//! The NTP server's answer to one request, sans-IO: no sockets and no clock reads; the
//! caller passes in the datagram, the receive timestamp (our clock) and monotonic time,
//! and stamps the reply's transmit timestamp itself just before sending.
//!
//! Only client requests (mode 3) are served, each client rate limited like chrony's
//! `ratelimit` directive; everything else is dropped without an answer.

use std::collections::HashMap;
use std::net::IpAddr;

use super::nts_server::{self, NtsRequest, ServerKeys};
use super::packet::{Leap, Mode, NtpShort, NtpTimestamp, Packet};
use crate::time::Monotonic;

/// What the server says about its own clock (filled by the daemon from the discipline).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerClock {
    pub leap: Leap,
    /// 1..=15; 0 and values above 16 are sent as 16 (unsynchronized), as stratum 0 on the
    /// wire would make the reply a Kiss-o'-Death.
    pub stratum: u8,
    /// Precision of our clock (log2 s).
    pub precision: i8,
    pub reference_id: [u8; 4],
    /// When our clock was last corrected.
    pub reference_ts: NtpTimestamp,
    /// Round-trip delay to the reference clock (s).
    pub root_delay_s: f64,
    /// Dispersion to the reference clock (s).
    pub root_dispersion_s: f64,
}

/// chrony's default `ratelimit interval`: one packet per 2^3 = 8 s on average.
pub const DEFAULT_INTERVAL_LOG2: i8 = 3;
/// chrony's default `ratelimit burst`: up to 8 packets back to back.
pub const DEFAULT_BURST: u32 = 8;
/// chrony's default `ratelimit leak`: 1 in 2^2 = 4 limited packets is answered (here with a
/// RATE Kiss-o'-Death), so a client whose address is spoofed is never cut off entirely.
pub const DEFAULT_LEAK_LOG2: u8 = 2;
/// Clients remembered by default (the least recently seen is forgotten first).
pub const DEFAULT_MAX_CLIENTS: usize = 4096;

/// Range of `interval_log2` (log2 s), as chrony accepts it.
const MIN_INTERVAL_LOG2: i8 = -19;
const MAX_INTERVAL_LOG2: i8 = 12;
const NS_PER_S: i64 = 1_000_000_000;
/// End of the recency list.
const NIL: usize = usize::MAX;

/// One remembered client.
#[derive(Debug)]
struct Client {
    addr: IpAddr,
    /// Theoretical arrival time of the GCRA: the client's bucket is full when this is at
    /// or before now, and empty when it is `tolerance_ns` past now.
    tat: Monotonic,
    /// Packets limited so far (wrapping), to answer every 2^leak-th with a KoD.
    limited: u32,
    /// Neighbours in the recency list (slot indices; `NIL` at the ends).
    newer: usize,
    older: usize,
}

/// Per-client rate limiting (chrony's `ratelimit`): a token bucket per source IP address,
/// `interval_log2` (average interval between packets, 2^x s, chrony default 3 → 8 s? choose
/// defaults like chrony: interval 3, burst 8, and `leak` every Nth dropped answered with KoD),
/// a bounded table (default 4096 clients; evicts the least recently seen), time passed in as
/// monotonic ns, no clock reads inside.
///
/// The bucket holds `burst` packets and refills by one every 2^`interval_log2` s (the
/// generic cell rate algorithm: one timestamp per client, exact integer arithmetic). A
/// limited packet is dropped, except the first of every 2^leak (default 4), which gets
/// a RATE Kiss-o'-Death. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from a dual-stack
/// socket) count as their IPv4 address. A client forgotten by eviction starts again with
/// a full bucket.
#[derive(Debug)]
pub struct RateLimiter {
    interval_log2: i8,
    /// Refill period of one packet (ns).
    interval_ns: i64,
    /// How far (ns) a client's theoretical arrival time may run ahead of now: (burst − 1)
    /// intervals.
    tolerance_ns: i64,
    /// Every 2^leak_log2-th limited packet of a client gets a KoD.
    leak_log2: u8,
    max_clients: usize,
    index: HashMap<IpAddr, usize>,
    slots: Vec<Client>,
    /// Most and least recently seen clients (slot indices).
    newest: usize,
    oldest: usize,
}

/// The rate limiter's verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the client's rate: answer normally.
    Pass,
    /// Over the rate, and this one is leaked: answer with a RATE Kiss-o'-Death.
    Kod,
    /// Over the rate: no answer.
    Drop,
}

impl Default for RateLimiter {
    /// chrony's defaults: interval 3 (8 s), burst 8, leak 2 (1 in 4); 4096 clients.
    fn default() -> RateLimiter {
        RateLimiter::new(DEFAULT_INTERVAL_LOG2, DEFAULT_BURST, DEFAULT_MAX_CLIENTS)
    }
}

impl RateLimiter {
    /// A limiter allowing each client on average one packet per 2^`interval_log2` s (clamped
    /// to chrony's range −19..=12), `burst` packets back to back (at least 1), remembering
    /// at most `max_clients` clients (at least 1). The leak is [`DEFAULT_LEAK_LOG2`]; see
    /// [`RateLimiter::with_leak`].
    pub fn new(interval_log2: i8, burst: u32, max_clients: usize) -> RateLimiter {
        let interval_log2 = interval_log2.clamp(MIN_INTERVAL_LOG2, MAX_INTERVAL_LOG2);
        let interval_ns = if interval_log2 >= 0 {
            NS_PER_S << interval_log2
        } else {
            NS_PER_S >> -interval_log2
        };
        let burst = burst.max(1);
        let max_clients = max_clients.max(1);
        RateLimiter {
            interval_log2,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(i64::from(burst) - 1),
            leak_log2: DEFAULT_LEAK_LOG2,
            max_clients,
            index: HashMap::with_capacity(max_clients.min(DEFAULT_MAX_CLIENTS)),
            slots: Vec::with_capacity(max_clients.min(DEFAULT_MAX_CLIENTS)),
            newest: NIL,
            oldest: NIL,
        }
    }

    #[cfg(test)]
    /// The same limiter answering one limited packet in 2^`leak_log2` with a KoD (clamped
    /// to 1..=31: a KoD for every limited packet would reflect a flood at full rate onto
    /// the address it spoofs).
    pub fn with_leak(mut self, leak_log2: u8) -> RateLimiter {
        self.leak_log2 = leak_log2.clamp(1, 31);
        self
    }

    /// The average interval between packets of one client (log2 s), after clamping.
    pub fn interval_log2(&self) -> i8 {
        self.interval_log2
    }

    #[cfg(test)]
    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the packet from `client` arriving at `now` is within the client's rate.
    /// Counts the packet (unless it is limited).
    pub fn check(&mut self, client: IpAddr, now: Monotonic) -> RateDecision {
        let addr = client.to_canonical();
        let i = match self.index.get(&addr) {
            Some(&i) => {
                self.unlink(i);
                i
            }
            None => self.admit(addr, now),
        };
        self.push_newest(i);

        let mask = (1u32 << self.leak_log2) - 1;
        let c = &mut self.slots[i];
        let tat = c.tat.max(now);
        if tat.ns_since(now) > self.tolerance_ns {
            c.limited = c.limited.wrapping_add(1);
            if c.limited.wrapping_sub(1) & mask == 0 {
                RateDecision::Kod
            } else {
                RateDecision::Drop
            }
        } else {
            c.tat = tat.plus_ns(self.interval_ns);
            RateDecision::Pass
        }
    }

    /// A slot for a client not in the table, with a full bucket, evicting the least
    /// recently seen client if the table is full. The slot is not in the recency list.
    fn admit(&mut self, addr: IpAddr, now: Monotonic) -> usize {
        let fresh = Client {
            addr,
            tat: now,
            limited: 0,
            newer: NIL,
            older: NIL,
        };
        let i = if self.slots.len() < self.max_clients {
            self.slots.push(fresh);
            self.slots.len() - 1
        } else {
            let i = self.oldest;
            self.unlink(i);
            self.index.remove(&self.slots[i].addr);
            self.slots[i] = fresh;
            i
        };
        self.index.insert(addr, i);
        i
    }

    /// Takes slot `i` out of the recency list.
    fn unlink(&mut self, i: usize) {
        let (newer, older) = (self.slots[i].newer, self.slots[i].older);
        match newer {
            NIL => self.newest = older,
            n => self.slots[n].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o].newer = newer,
        }
        self.slots[i].newer = NIL;
        self.slots[i].older = NIL;
    }

    /// Puts slot `i` (not in the list) at the newest end of the recency list.
    fn push_newest(&mut self, i: usize) {
        self.slots[i].older = self.newest;
        self.slots[i].newer = NIL;
        match self.newest {
            NIL => self.oldest = i,
            n => self.slots[n].newer = i,
        }
        self.newest = i;
    }
}

/// Why a datagram gets no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not an NTP packet ([`Packet::parse`] failed).
    Malformed,
    /// An NTP packet, but not a client request (mode 3).
    NotARequest,
    /// The client is over its rate and this packet is not leaked as a KoD.
    RateLimited,
}

/// The server's answer to one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Send this (after setting `transmit_ts`), as `Packet::to_bytes` (48 bytes).
    Reply(Packet),
    /// Send nothing.
    Drop(DropReason),
}

/// Decides the answer to `request` received at `rx` (our clock, as an NTP timestamp) from
/// `client`: parse (Malformed on error), only mode Client (3) — and symmetric active is NOT served —
/// (NotARequest otherwise), rate-limit (KoD RATE: stratum 0, refid "RATE", leap unsync, echo origin,
/// or Drop RateLimited), else a server reply: same version as the request (1..4), mode 4, our
/// stratum/leap/precision/refid/reference ts/root delay/dispersion, poll echoed, origin = request's
/// transmit, receive = rx. The transmit timestamp is left ZERO: the caller stamps it just before
/// sending (`Packet::transmit_ts = ...`). The reply is always 48 bytes, never larger than the request.
///
/// `now` is for the rate limiter only. A KoD carries the request's
/// version and transmit timestamp as origin, `receive = rx`, our precision, zero reference
/// timestamp / root delay / dispersion, and as poll the larger of the request's and the
/// limiter's interval (log2 s), the rate the client should slow down to; its transmit
/// timestamp is left ZERO for the caller too.
pub fn respond(
    request: &[u8],
    client: IpAddr,
    rx: NtpTimestamp,
    now: Monotonic,
    clock: &ServerClock,
    limiter: &mut RateLimiter,
) -> Response {
    let Ok(req) = Packet::parse(request) else {
        return Response::Drop(DropReason::Malformed);
    };
    if req.mode != Mode::Client {
        return Response::Drop(DropReason::NotARequest);
    }
    match limiter.check(client, now) {
        RateDecision::Pass => Response::Reply(Packet {
            leap: clock.leap,
            version: req.version,
            mode: Mode::Server,
            stratum: match clock.stratum {
                1..=16 => clock.stratum,
                _ => 16,
            },
            poll: req.poll,
            precision: clock.precision,
            root_delay: NtpShort::from_secs_f64(clock.root_delay_s),
            root_dispersion: NtpShort::from_secs_f64(clock.root_dispersion_s),
            reference_id: clock.reference_id,
            reference_ts: clock.reference_ts,
            origin_ts: req.transmit_ts,
            receive_ts: rx,
            transmit_ts: NtpTimestamp::ZERO,
        }),
        RateDecision::Kod => Response::Reply(Packet {
            leap: Leap::Unsynchronized,
            version: req.version,
            mode: Mode::Server,
            stratum: 0,
            poll: req.poll.max(limiter.interval_log2()),
            precision: clock.precision,
            root_delay: NtpShort(0),
            root_dispersion: NtpShort(0),
            reference_id: *b"RATE",
            reference_ts: NtpTimestamp::ZERO,
            origin_ts: req.transmit_ts,
            receive_ts: rx,
            transmit_ts: NtpTimestamp::ZERO,
        }),
        RateDecision::Drop => Response::Drop(DropReason::RateLimited),
    }
}

/// What the server did with one datagram (the daemon counts these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// A plain NTP reply.
    Answered,
    /// A RATE Kiss-o'-Death (to a plain request, or authenticated to an NTS one).
    Kiss,
    /// An authenticated reply to an NTS request, with fresh cookies.
    NtsAnswered,
    /// An NTS NAK: the request's cookie is not ours (any more), or it did not
    /// authenticate.
    NtsNak,
    Dropped(DropReason),
}

/// The server's whole answer to one datagram: [`respond`] (parse, mode, rate limit), and
/// with `nts_keys` (an NTS-KE server runs) the NTS request's authentication, the reply's
/// authenticator and fresh cookies, or an NTS NAK. The rate limiter comes first, so a
/// flood costs no cryptography beyond the leaked kisses. A RATE kiss to an authentic NTS
/// request is authenticated too, with its cookies (an NTS client ignores unauthenticated
/// kisses, RFC 8915 §5.7). `transmit` reads our clock for the transmit timestamp, as late
/// as possible: the authenticator covers it. `random` draws the nonces.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    request: &[u8],
    client: IpAddr,
    rx: NtpTimestamp,
    now: Monotonic,
    clock: &ServerClock,
    limiter: &mut RateLimiter,
    nts_keys: Option<&ServerKeys>,
    random: &mut dyn FnMut(&mut [u8]),
    transmit: &mut dyn FnMut() -> NtpTimestamp,
) -> (Served, Option<Vec<u8>>) {
    let mut packet = match respond(request, client, rx, now, clock, limiter) {
        Response::Reply(packet) => packet,
        Response::Drop(why) => return (Served::Dropped(why), None),
    };
    let kiss = packet.stratum == 0;
    let nts = nts_keys.map_or(NtsRequest::Plain, |keys| {
        nts_server::read_request(request, keys)
    });
    match (nts, nts_keys) {
        (NtsRequest::Malformed(_), _) => (Served::Dropped(DropReason::Malformed), None),
        (
            NtsRequest::Authentic {
                unique_id,
                session,
                cookies,
            },
            Some(keys),
        ) => {
            packet.transmit_ts = transmit();
            let bytes = nts_server::reply(
                &packet.to_bytes(),
                request.len(),
                &unique_id,
                &session,
                cookies,
                keys,
                random,
            );
            let served = if kiss {
                Served::Kiss
            } else {
                Served::NtsAnswered
            };
            (served, Some(bytes))
        }
        // Rate-limited with a cookie that is not ours: the plain kiss (below).
        (NtsRequest::Nak { unique_id }, _) if !kiss => {
            let nak = Packet {
                leap: Leap::Unsynchronized,
                stratum: 0,
                root_delay: NtpShort(0),
                root_dispersion: NtpShort(0),
                reference_id: *b"NTSN",
                reference_ts: NtpTimestamp::ZERO,
                transmit_ts: transmit(),
                ..packet
            };
            (
                Served::NtsNak,
                Some(nts_server::nak(&nak.to_bytes(), &unique_id)),
            )
        }
        _ => {
            packet.transmit_ts = transmit();
            let served = if kiss { Served::Kiss } else { Served::Answered };
            (served, Some(packet.to_bytes().to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::packet::HEADER_LEN;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S: i64 = 1_000_000_000;
    /// Some monotonic time (ns) to start at.
    const T0: Monotonic = Monotonic::from_ns(1_000 * S);

    fn clock() -> ServerClock {
        ServerClock {
            leap: Leap::None,
            stratum: 2,
            precision: -23,
            reference_id: [192, 168, 1, 1],
            reference_ts: NtpTimestamp(0xed13_553a_0000_0000),
            root_delay_s: 0.0103,
            root_dispersion_s: 0.020,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn request(version: u8, poll: i8, transmit: u64) -> Vec<u8> {
        let mut p = Packet::client_request(NtpTimestamp(transmit), poll);
        p.version = version;
        p.to_bytes().to_vec()
    }

    const RX: NtpTimestamp = NtpTimestamp(0xed13_5540_8041_8937);

    fn reply(r: Response) -> Packet {
        match r {
            Response::Reply(p) => p,
            Response::Drop(why) => panic!("dropped: {why:?}"),
        }
    }

    #[test]
    fn normal_reply_fields() {
        let mut lim = RateLimiter::default();
        let req = request(4, 6, 0xed13_5540_8000_0000);
        let p = reply(respond(&req, ip(1), RX, T0, &clock(), &mut lim));
        assert_eq!(
            p,
            Packet {
                leap: Leap::None,
                version: 4,
                mode: Mode::Server,
                stratum: 2,
                poll: 6,
                precision: -23,
                root_delay: NtpShort(0x02a3),
                root_dispersion: NtpShort(0x051f),
                reference_id: [192, 168, 1, 1],
                reference_ts: NtpTimestamp(0xed13_553a_0000_0000),
                origin_ts: NtpTimestamp(0xed13_5540_8000_0000),
                receive_ts: RX,
                transmit_ts: NtpTimestamp::ZERO,
            }
        );
        assert_eq!(p.kiss_code(), None);
        // The caller stamps transmit and sends 48 bytes that parse back.
        let mut p = p;
        p.transmit_ts = NtpTimestamp(0xed13_5540_8043_2ca5);
        assert_eq!(Packet::parse(&p.to_bytes()), Ok(p));
    }

    #[test]
    fn leap_and_stratum_from_clock() {
        let mut lim = RateLimiter::default();
        let req = request(4, 6, 1);
        for (leap, stratum, sent) in [
            (Leap::AddSecond, 1, 1),
            (Leap::DeleteSecond, 15, 15),
            (Leap::Unsynchronized, 16, 16),
            (Leap::Unsynchronized, 0, 16),
            (Leap::Unsynchronized, 200, 16),
        ] {
            let c = ServerClock {
                leap,
                stratum,
                ..clock()
            };
            let p = reply(respond(&req, ip(1), RX, T0, &c, &mut lim));
            assert_eq!((p.leap, p.stratum), (leap, sent));
            assert_eq!(p.kiss_code(), None);
        }
    }

    #[test]
    fn version_echoed() {
        let mut lim = RateLimiter::default();
        for v in 1..=4 {
            let p = reply(respond(
                &request(v, 10, 7),
                ip(v),
                RX,
                T0,
                &clock(),
                &mut lim,
            ));
            assert_eq!(p.version, v);
            assert_eq!(p.mode, Mode::Server);
            assert_eq!(p.poll, 10);
            assert_eq!(p.origin_ts, NtpTimestamp(7));
            assert_eq!(p.to_bytes()[0], (v << 3) | 4);
        }
    }

    #[test]
    fn non_client_modes_dropped() {
        let mut lim = RateLimiter::new(3, 1, 16);
        for mode in [0u8, 1, 2, 4, 5, 6, 7] {
            let mut req = request(4, 6, 1);
            req[0] = (req[0] & !0b111) | mode;
            assert_eq!(
                respond(&req, ip(1), RX, T0, &clock(), &mut lim),
                Response::Drop(DropReason::NotARequest),
                "mode {mode}"
            );
        }
        // Those did not use up the client's (one-packet) burst.
        assert!(matches!(
            respond(&request(4, 6, 1), ip(1), RX, T0, &clock(), &mut lim),
            Response::Reply(_)
        ));
    }

    #[test]
    fn malformed_dropped() {
        let mut lim = RateLimiter::default();
        let good = request(4, 6, 1);
        let mut bad_version = good.clone();
        bad_version[0] = (bad_version[0] & !0b0011_1000) | (5 << 3);
        let mut bad_trailer = good.clone();
        bad_trailer.extend_from_slice(&[0; 8]);
        for (i, req) in [
            Vec::new(),
            good[..47].to_vec(),
            bad_version,
            [good.as_slice(), &[0]].concat(),
            bad_trailer,
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(
                respond(req, ip(1), RX, T0, &clock(), &mut lim),
                Response::Drop(DropReason::Malformed),
                "case {i}"
            );
        }
        assert!(lim.is_empty());
    }

    #[test]
    fn reply_size_never_larger_than_request() {
        let mut lim = RateLimiter::default();
        // A request with an extension field and a MAC: the reply is still the bare header.
        let mut req = request(4, 6, 1);
        let mut ef = vec![0u8; 32];
        ef[..4].copy_from_slice(&[0x01, 0x04, 0x00, 0x20]);
        req.extend_from_slice(&ef);
        req.extend_from_slice(&[0u8; 24]);
        for req in [request(4, 6, 1), req] {
            let p = reply(respond(&req, ip(1), RX, T0, &clock(), &mut lim));
            assert_eq!(p.to_bytes().len(), HEADER_LEN);
            assert!(p.to_bytes().len() <= req.len());
        }
    }

    #[test]
    fn burst_then_kod_and_drop() {
        let mut lim = RateLimiter::default(); // interval 8 s, burst 8, leak 1 in 4
        let req = request(3, 4, 0x1234);
        for i in 0..8 {
            let p = reply(respond(&req, ip(1), RX, T0, &clock(), &mut lim));
            assert_eq!(p.kiss_code(), None, "packet {i}");
        }
        // The 9th: the first limited packet gets a KoD.
        let kod = reply(respond(&req, ip(1), RX, T0, &clock(), &mut lim));
        assert_eq!(kod.kiss_code(), Some(*b"RATE"));
        assert_eq!(kod.leap, Leap::Unsynchronized);
        assert_eq!(kod.stratum, 0);
        assert_eq!(kod.mode, Mode::Server);
        assert_eq!(kod.version, 3);
        assert_eq!(kod.origin_ts, NtpTimestamp(0x1234));
        assert_eq!(kod.transmit_ts, NtpTimestamp::ZERO);
        assert_eq!(kod.poll, 4); // request's poll 4 > interval 3
                                 // Then 3 drops, then a KoD again.
        for _ in 0..3 {
            assert_eq!(
                respond(&req, ip(1), RX, T0, &clock(), &mut lim),
                Response::Drop(DropReason::RateLimited)
            );
        }
        let kod = reply(respond(&req, ip(1), RX, T0, &clock(), &mut lim));
        assert_eq!(kod.kiss_code(), Some(*b"RATE"));
        // Another client is not affected.
        let p = reply(respond(&req, ip(2), RX, T0, &clock(), &mut lim));
        assert_eq!(p.kiss_code(), None);
        // A KoD tells a client polling faster than the limit the interval to use.
        let fast = request(4, 0, 1);
        let mut lim = RateLimiter::new(5, 1, 16);
        assert_eq!(lim.check(ip(1), T0), RateDecision::Pass);
        let kod = reply(respond(&fast, ip(1), RX, T0, &clock(), &mut lim));
        assert_eq!((kod.kiss_code(), kod.poll), (Some(*b"RATE"), 5));
    }

    #[test]
    fn leak_setting() {
        let mut lim = RateLimiter::new(0, 1, 16).with_leak(1);
        assert_eq!(lim.check(ip(1), T0), RateDecision::Pass);
        let got: Vec<_> = (0..6).map(|_| lim.check(ip(1), T0)).collect();
        use RateDecision::{Drop, Kod};
        assert_eq!(got, [Kod, Drop, Kod, Drop, Kod, Drop]);
        // Leak 0 is clamped to 1: never a KoD for every limited packet.
        let mut lim = RateLimiter::new(0, 1, 16).with_leak(0);
        assert_eq!(lim.check(ip(1), T0), RateDecision::Pass);
        let got: Vec<_> = (0..4).map(|_| lim.check(ip(1), T0)).collect();
        assert_eq!(got, [Kod, Drop, Kod, Drop]);
    }

    #[test]
    fn refills_with_time() {
        let mut lim = RateLimiter::new(3, 8, 16);
        let a = ip(1);
        for _ in 0..8 {
            assert_eq!(lim.check(a, T0), RateDecision::Pass);
        }
        assert_ne!(lim.check(a, T0), RateDecision::Pass);
        // Just under one interval later: still empty.
        assert_ne!(lim.check(a, T0.plus_ns(8 * S - 1)), RateDecision::Pass);
        // One interval (8 s) refills one packet.
        assert_eq!(lim.check(a, T0.plus_ns(8 * S)), RateDecision::Pass);
        assert_ne!(lim.check(a, T0.plus_ns(8 * S)), RateDecision::Pass);
        // A steady client at exactly the average rate is never limited.
        for k in 2..100 {
            assert_eq!(
                lim.check(a, T0.plus_ns(k * 8 * S)),
                RateDecision::Pass,
                "poll {k}"
            );
        }
        // A long silence refills the whole burst, and no more.
        let later = T0.plus_ns(10_000 * S);
        for _ in 0..8 {
            assert_eq!(lim.check(a, later), RateDecision::Pass);
        }
        assert_ne!(lim.check(a, later), RateDecision::Pass);
    }

    #[test]
    fn sub_second_interval_and_limits() {
        // interval −2: 250 ms, burst 1.
        let mut lim = RateLimiter::new(-2, 1, 16);
        assert_eq!(lim.check(ip(1), T0), RateDecision::Pass);
        assert_ne!(
            lim.check(ip(1), T0.plus_ns(249_999_999)),
            RateDecision::Pass
        );
        assert_eq!(
            lim.check(ip(1), T0.plus_ns(250_000_000)),
            RateDecision::Pass
        );
        // Out-of-range arguments are clamped, not trusted.
        let lim = RateLimiter::new(i8::MAX, 0, 0);
        assert_eq!(lim.interval_log2(), 12);
        let mut lim = RateLimiter::new(i8::MIN, 0, 0);
        assert_eq!(lim.interval_log2(), -19);
        assert_eq!(
            lim.check(ip(1), Monotonic::from_ns(i64::MIN)),
            RateDecision::Pass
        ); // burst 0 → 1
        assert_eq!(
            lim.check(ip(2), Monotonic::from_ns(i64::MAX)),
            RateDecision::Pass
        );
        assert_eq!(lim.len(), 1); // max_clients 0 → 1
    }

    #[test]
    fn table_bound_and_eviction() {
        let mut lim = RateLimiter::new(3, 1, 2);
        let (a, b, c) = (ip(1), ip(2), ip(3));
        assert_eq!(lim.check(a, T0), RateDecision::Pass);
        assert_eq!(lim.check(b, T0), RateDecision::Pass);
        assert_eq!(lim.len(), 2);
        // a is seen again (limited): now b is the least recently seen.
        assert_ne!(lim.check(a, T0), RateDecision::Pass);
        // c evicts b, not a.
        assert_eq!(lim.check(c, T0), RateDecision::Pass);
        assert_eq!(lim.len(), 2);
        assert_ne!(lim.check(a, T0), RateDecision::Pass); // a is still remembered
                                                          // b was forgotten: back with a full bucket; that evicts c (a was seen after c).
        assert_eq!(lim.check(b, T0), RateDecision::Pass);
        assert_ne!(lim.check(a, T0), RateDecision::Pass); // a still remembered
        assert_eq!(lim.check(c, T0), RateDecision::Pass); // c forgotten; evicts b
        assert_ne!(lim.check(c, T0), RateDecision::Pass);
        assert_eq!(lim.len(), 2);

        // A flood of distinct sources keeps the table at its bound.
        let mut lim = RateLimiter::new(3, 8, 100);
        for n in 0..10_000u32 {
            let addr = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | u128::from(n)));
            assert_eq!(lim.check(addr, T0), RateDecision::Pass);
        }
        assert_eq!(lim.len(), 100);
        assert_eq!(lim.index.len(), 100);
        // The recency list is intact: walking it visits every slot once, newest first.
        let mut seen = 0;
        let mut i = lim.newest;
        let mut prev = NIL;
        while i != NIL {
            assert_eq!(lim.slots[i].newer, prev);
            assert_eq!(lim.index[&lim.slots[i].addr], i);
            seen += 1;
            prev = i;
            i = lim.slots[i].older;
        }
        assert_eq!((seen, prev), (100, lim.oldest));
    }

    #[test]
    fn ipv4_mapped_shares_the_bucket() {
        let mut lim = RateLimiter::new(3, 2, 16);
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(lim.check(v4, T0), RateDecision::Pass);
        assert_eq!(lim.check(mapped, T0), RateDecision::Pass);
        assert_ne!(lim.check(v4, T0), RateDecision::Pass);
        assert_eq!(lim.len(), 1);
    }

    #[test]
    fn nts_requests_get_authenticated_replies_naks_or_nothing() {
        use crate::ntp::nts::{ClientSession, ReplyOutcome, KEY_LEN, NONCE_LEN};
        use crate::ntp::nts_server::SessionKeys;
        let keys = ServerKeys::new(1, [9; KEY_LEN]);
        let session = SessionKeys {
            c2s: [1; KEY_LEN],
            s2c: [2; KEY_LEN],
        };
        let jar = (0..4u8)
            .map(|i| keys.seal(&session, &[i; NONCE_LEN]))
            .collect();
        let mut client = ClientSession::new(session.c2s, session.s2c, jar);
        let header: [u8; HEADER_LEN] = request(4, 6, 0xed13_5540_8000_0000).try_into().unwrap();
        let mut lim = RateLimiter::default();
        let tx = NtpTimestamp(0xed13_5540_8043_2ca5);
        let serve = |bytes: &[u8], keys: Option<&ServerKeys>, lim: &mut RateLimiter| {
            answer(
                bytes,
                ip(1),
                RX,
                T0,
                &clock(),
                lim,
                keys,
                &mut |b| b.fill(7),
                &mut || tx,
            )
        };
        let nts_request = client.request(&header, [5; 32], &[6; NONCE_LEN]).unwrap();
        let (served, bytes) = serve(&nts_request, Some(&keys), &mut lim);
        let bytes = bytes.unwrap();
        assert_eq!(served, Served::NtsAnswered);
        assert_eq!(client.reply(&bytes), Ok(ReplyOutcome::Authentic));
        assert_eq!(client.cookies(), 8);
        // The header is the plain reply's, stamped.
        let plain = Packet::parse(&bytes).unwrap();
        assert_eq!(
            (plain.stratum, plain.origin_ts, plain.transmit_ts),
            (2, NtpTimestamp(0xed13_5540_8000_0000), tx)
        );
        // Without an NTS-KE server the same request is answered plain (and fails the
        // client's check).
        let nts_request = client.request(&header, [8; 32], &[6; NONCE_LEN]).unwrap();
        let (served, bytes) = serve(&nts_request, None, &mut lim);
        assert_eq!(
            (served, bytes.as_ref().map(Vec::len)),
            (Served::Answered, Some(HEADER_LEN))
        );
        assert!(client.reply(&bytes.unwrap()).is_err());
        // After a restart (new server keys) the cookie is not ours: an NTS NAK.
        let restarted = ServerKeys::new(2, [3; KEY_LEN]);
        let (served, bytes) = serve(&nts_request, Some(&restarted), &mut lim);
        assert_eq!(served, Served::NtsNak);
        assert_eq!(client.reply(&bytes.unwrap()), Ok(ReplyOutcome::Nak));
        // NTS fields that break the rules (a cookie without a unique identifier): nothing.
        let mut broken = header.to_vec();
        crate::ntp::nts::put_extension(
            &mut broken,
            crate::ntp::nts::EF_COOKIE,
            &keys.seal(&session, &[1; NONCE_LEN]),
        );
        crate::ntp::nts::append_authenticator(&mut broken, &session.c2s, &[6; NONCE_LEN], &[]);
        assert_eq!(
            serve(&broken, Some(&keys), &mut lim),
            (Served::Dropped(DropReason::Malformed), None)
        );
        // Over the rate (burst 8): a RATE kiss, authenticated, with the cookie back, which
        // the client takes (a plain one it would ignore).
        let jar = (0..8u8)
            .map(|i| keys.seal(&session, &[i; NONCE_LEN]))
            .collect();
        let mut client = ClientSession::new(session.c2s, session.s2c, jar);
        let mut kissed = None;
        for _ in 0..8 {
            let request = client.request(&header, [9; 32], &[6; NONCE_LEN]).unwrap();
            if let (Served::Kiss, Some(bytes)) = serve(&request, Some(&keys), &mut lim) {
                kissed = Some(bytes);
                break;
            }
        }
        let kissed = kissed.expect("a kiss within 8 requests after 4 of a burst of 8");
        assert_eq!(client.reply(&kissed), Ok(ReplyOutcome::Authentic));
        assert_eq!(Packet::parse(&kissed).unwrap().kiss_code(), Some(*b"RATE"));
        // A plain request over the rate gets the plain kiss.
        let mut plain_kisses = 0;
        for _ in 0..8 {
            if let (Served::Kiss, Some(bytes)) = serve(&header, Some(&keys), &mut lim) {
                assert_eq!(bytes.len(), HEADER_LEN);
                plain_kisses += 1;
            }
        }
        assert!(plain_kisses >= 1);
    }
}
