//! One NTP server as the client sees it: the request/response exchange (origin check, KoD,
//! reachability, polling) and its per-source clock filter (a [`Discipline`] regression of
//! its samples against CLOCK_MONOTONIC_RAW, weighted by excess delay). Sans-IO: times come
//! in as arguments, datagrams as bytes.

use std::net::SocketAddr;

use crate::status::{SourceReport, SourceState};
use crate::time::Raw;
use serde::Serialize;

use super::{
    discipline::{Discipline, Fit, Outcome, Point},
    packet::{Leap, Mode, NtpTimestamp, Packet},
};

/// Seconds to wait between the requests of an initial burst (chrony's iburst: 2 s).
pub const BURST_INTERVAL_S: f64 = 2.0;
/// Requests in an initial burst.
const BURST_REQUESTS: u8 = 4;
/// Frequency tolerance of a server's clock, s/s (RFC 5905 PHI: 15 ppm): dispersion grows
/// at this rate with the age of a sample.
pub const PHI: f64 = 15e-6;
/// Samples a source needs before it may be selected.
pub const MIN_SAMPLES: usize = 3;
/// How fast the local timescale (CLOCK_MONOTONIC_RAW) may drift from true time before any
/// frequency is measured, s/s: the most the kernel could correct (500 ppm), the prior's
/// own spread.
const UNMEASURED_DRIFT: f64 = 500e-6;
/// Samples in a source's regression (its clock filter).
const MAX_SAMPLES: usize = 16;
/// Floor of a sample's error, s (timestamping in user space).
const MIN_ERROR_S: f64 = 1e-6;
/// Consecutive good samples before the poll interval doubles: 8, so that the regression
/// holds that many samples at each poll interval before the next doubles it (with 4, a
/// noisy path reached 1024 s polls with a fit of few, old samples).
const POLL_UP_AFTER: u32 = 8;
/// A sample further than this many expected standard deviations from the filter's
/// prediction (yet not an outlier) halves the poll interval: the oscillator's frequency
/// wandered more over the interval than the fitted line could extrapolate.
const POLL_DOWN_SIGMAS: f64 = 2.0;

#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// log2 of the shortest and longest poll interval, s.
    pub minpoll: i8,
    pub maxpoll: i8,
    /// Start with a burst of requests 2 s apart.
    pub iburst: bool,
}

/// Why a datagram from the source was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejected {
    /// Not a parsable NTP packet (truncated, bad version, bad extension field).
    Malformed,
    /// Not a server reply (mode ≠ 4).
    NotAReply,
    /// The origin timestamp is not the cookie of the outstanding request: a spoofed or
    /// stale reply.
    BadOrigin,
    /// A reply to a request that was already answered (duplicate or replay).
    Duplicate,
    /// Kiss-o'-Death.
    Kiss,
    /// The server says it is unsynchronised (leap 3, stratum 0 or ≥ 16).
    Unsynchronised,
    /// Timestamps that cannot be (negative delay, receive after transmit, or zero: unset).
    Bogus,
}

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Halfway between our transmit and receive (serialised as `raw_ns`, its ns).
    #[serde(rename = "raw_ns")]
    pub at: Raw,
    /// Server time − local timescale (raw + epoch), s.
    pub offset_s: f64,
    /// Round-trip delay, s.
    pub delay_s: f64,
}

pub use crate::status::SourceCounters;

struct Pending {
    cookie: NtpTimestamp,
    sent: Raw,
}

/// What the server said about itself in its last valid reply.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerInfo {
    pub stratum: u8,
    pub leap: &'static str,
    pub reference_id: String,
    pub root_delay_s: f64,
    pub root_dispersion_s: f64,
    pub precision_s: f64,
}

pub struct Source {
    pub name: String,
    pub addr: SocketAddr,
    config: SourceConfig,
    poll: i8,
    good_in_a_row: u32,
    reach: u8,
    burst_left: u8,
    pending: Option<Pending>,
    answered: Option<NtpTimestamp>,
    filter: Discipline,
    last_sample: Option<Sample>,
    last_outcome: Option<Outcome>,
    server: Option<ServerInfo>,
    server_leap: Leap,
    /// The KoD code that stopped this source (DENY, RSTR).
    denied: Option<String>,
    /// Seconds added to the server's time to put it on the engine's timescale: the leap
    /// seconds the server applied (+1 per inserted second) since the engine started, so
    /// that its samples lie on one line across a leap.
    timescale_shift_s: i64,
    pub counters: SourceCounters,
}

/// Where a server's reference ID names an address (stratum ≥ 2) or a code (stratum 1).
pub fn reference_id_text(stratum: u8, id: [u8; 4]) -> String {
    if stratum <= 1 {
        id.iter()
            .take_while(|&&b| b != 0)
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
            .collect()
    } else {
        std::net::Ipv4Addr::from(id).to_string()
    }
}

/// The leap indicator in chronyc's words (`sources` and `tracking` both use it).
pub fn leap_text(leap: Leap) -> &'static str {
    match leap {
        Leap::None => "normal",
        Leap::AddSecond => "insert second",
        Leap::DeleteSecond => "delete second",
        Leap::Unsynchronized => "not synchronised",
    }
}

impl Source {
    /// `prior_freq` (s/s): the system's current frequency estimate, the filter's prior.
    /// `timescale_shift_s`: the leap seconds (+1 inserted, −1 deleted) the engine has seen
    /// pass, which this server's time already includes.
    pub fn new(
        name: String,
        addr: SocketAddr,
        config: SourceConfig,
        prior_freq: f64,
        timescale_shift_s: i64,
    ) -> Source {
        let poll = config.minpoll;
        let burst_left = if config.iburst { BURST_REQUESTS } else { 0 };
        Source {
            name,
            addr,
            config,
            poll,
            good_in_a_row: 0,
            reach: 0,
            burst_left,
            pending: None,
            answered: None,
            filter: Discipline::new(MAX_SAMPLES, prior_freq, 500e-6),
            last_sample: None,
            last_outcome: None,
            server: None,
            server_leap: Leap::Unsynchronized,
            denied: None,
            timescale_shift_s,
            counters: SourceCounters::default(),
        }
    }

    /// The server applied a leap second (`delta_s`: +1 inserted, −1 deleted): its time
    /// from now on is read `delta_s` later, on the engine's timescale.
    pub fn passed_leap(&mut self, delta_s: i64) {
        self.timescale_shift_s += delta_s;
    }

    pub fn reach(&self) -> u8 {
        self.reach
    }

    pub fn denied(&self) -> Option<&str> {
        self.denied.as_deref()
    }

    pub fn fit(&self) -> Option<Fit> {
        self.filter.fit()
    }

    /// See [`Discipline::unconfirmed_s`].
    pub fn unconfirmed_s(&self) -> f64 {
        self.filter.unconfirmed_s()
    }

    pub fn last_sample(&self) -> Option<Sample> {
        self.last_sample
    }

    /// The newest sample alone, for before the source can be selected: server time − local
    /// timescale (s), and how far the server's time at `now` can be from that (s): half the
    /// round trip (the reply's delay on either leg), the server's own root distance, and
    /// the local clock's drift since at up to [`UNMEASURED_DRIFT`]. None for a source that
    /// is denied, unreachable, unsynchronised or has not answered.
    pub fn first_look(&self, now: Raw) -> Option<(f64, f64)> {
        let server = self.server.as_ref()?;
        let last = self.last_sample?;
        if self.denied.is_some() || self.reach == 0 || self.server_leap == Leap::Unsynchronized {
            return None;
        }
        let age_s = (now.ns_since(last.at) as f64 / 1e9).max(0.0);
        let distance_s = server.root_delay_s / 2.0
            + server.root_dispersion_s
            + last.delay_s / 2.0
            + UNMEASURED_DRIFT * age_s;
        Some((last.offset_s, distance_s))
    }

    pub fn server(&self) -> Option<&ServerInfo> {
        self.server.as_ref()
    }

    pub fn server_leap(&self) -> Leap {
        self.server_leap
    }

    /// Seconds from one request to the next.
    pub fn interval_s(&self) -> f64 {
        if self.burst_left > 0 {
            BURST_INTERVAL_S
        } else {
            2f64.powi(i32::from(self.poll))
        }
    }

    /// The next requests go out as a burst (4, 2 s apart), as at the start with iburst:
    /// the clock was disrupted and must be measured again soon.
    pub fn burst(&mut self) {
        if self.denied.is_none() {
            self.burst_left = BURST_REQUESTS;
        }
    }

    /// The request to send now, with `cookie` (random) as its transmit timestamp. An
    /// outstanding request that was not answered is forgotten (and the reach register
    /// says so).
    pub fn request(&mut self, cookie: NtpTimestamp, now: Raw) -> Option<[u8; 48]> {
        if self.denied.is_some() {
            return None;
        }
        self.reach <<= 1;
        self.burst_left = self.burst_left.saturating_sub(1);
        self.pending = Some(Pending { cookie, sent: now });
        self.counters.sent += 1;
        Some(Packet::client_request(cookie, self.poll).to_bytes())
    }

    /// The kernel's time of departure of the request with `cookie`, which replaces
    /// the time taken before the send: that one is early by the whole send path (hundreds of
    /// µs in a loaded VM), which would count as outbound delay and bias the offset by half
    /// of it. Ignored unless it belongs to the request still outstanding and is not before
    /// the send began.
    pub fn sent_at(&mut self, cookie: NtpTimestamp, departed: Raw) {
        if let Some(pending) = self.pending.as_mut() {
            if pending.cookie == cookie && departed >= pending.sent {
                pending.sent = departed;
            }
        }
    }

    /// A datagram from the source's address, received at `received`. `epoch_ns` is the
    /// local timescale's offset from the raw clock (local = raw + epoch, Unix ns).
    pub fn receive(
        &mut self,
        bytes: &[u8],
        received: Raw,
        epoch_ns: i64,
    ) -> Result<Sample, Rejected> {
        self.counters.received += 1;
        let result = self.check(bytes, received, epoch_ns);
        if let Err(why) = result {
            let counter = match why {
                Rejected::Malformed => &mut self.counters.malformed,
                Rejected::NotAReply => &mut self.counters.not_a_reply,
                Rejected::BadOrigin => &mut self.counters.bad_origin,
                Rejected::Duplicate => &mut self.counters.duplicate,
                Rejected::Kiss => &mut self.counters.kiss,
                Rejected::Unsynchronised => &mut self.counters.unsynchronised,
                Rejected::Bogus => &mut self.counters.bogus,
            };
            *counter += 1;
        }
        result
    }

    fn check(&mut self, bytes: &[u8], received: Raw, epoch_ns: i64) -> Result<Sample, Rejected> {
        let packet = Packet::parse(bytes).map_err(|_| Rejected::Malformed)?;
        if packet.mode != Mode::Server {
            return Err(Rejected::NotAReply);
        }
        let Some(pending) = self.pending.as_ref() else {
            return Err(if self.answered == Some(packet.origin_ts) {
                Rejected::Duplicate
            } else {
                Rejected::BadOrigin
            });
        };
        if packet.origin_ts != pending.cookie {
            return Err(Rejected::BadOrigin);
        }
        let sent = pending.sent;
        // Authentic from here on (it knew the cookie): the exchange is over.
        self.answered = self.pending.take().map(|p| p.cookie);
        if let Some(code) = packet.kiss_code() {
            self.on_kiss(code, packet.poll);
            return Err(Rejected::Kiss);
        }
        self.reach |= 1;
        self.server_leap = packet.leap;
        self.server = Some(ServerInfo {
            stratum: packet.stratum,
            leap: leap_text(packet.leap),
            reference_id: reference_id_text(packet.stratum, packet.reference_id),
            root_delay_s: packet.root_delay.to_secs_f64(),
            root_dispersion_s: packet.root_dispersion.to_secs_f64(),
            precision_s: 2f64.powi(i32::from(packet.precision)),
        });
        if packet.leap == Leap::Unsynchronized || packet.stratum == 0 || packet.stratum >= 16 {
            return Err(Rejected::Unsynchronised);
        }
        // A server that answered with our cookie but left its receive or transmit time
        // unset (zero means "unknown" in NTP) would make a sample ~126 years off.
        if packet.receive_ts == NtpTimestamp::ZERO || packet.transmit_ts == NtpTimestamp::ZERO {
            return Err(Rejected::Bogus);
        }
        let local = |at: Raw| at.ns() + epoch_ns;
        let t1 = local(sent);
        let t4 = local(received);
        let t2 = packet.receive_ts.to_unix_ns(t1);
        let t3 = packet.transmit_ts.to_unix_ns(t4);
        let server_ns = t3 - t2;
        let delay_ns = (t4 - t1) - server_ns;
        if server_ns < 0 || t4 < t1 || delay_ns < 0 {
            return Err(Rejected::Bogus);
        }
        let offset_ns = ((i128::from(t2) - i128::from(t1)) + (i128::from(t3) - i128::from(t4))) / 2
            + i128::from(self.timescale_shift_s) * 1_000_000_000;
        let sample = Sample {
            at: sent.plus_ns(received.ns_since(sent) / 2),
            offset_s: offset_ns as f64 / 1e9,
            delay_s: delay_ns as f64 / 1e9,
        };
        self.add_sample(sample);
        self.counters.accepted += 1;
        Ok(sample)
    }

    fn add_sample(&mut self, sample: Sample) {
        let precision = self.server.as_ref().map_or(0.0, |s| s.precision_s);
        let point = Point {
            at: sample.at,
            offset_s: sample.offset_s,
            error_s: MIN_ERROR_S + precision,
            delay_s: sample.delay_s,
        };
        let error_s = self.filter.error_of(&point);
        let before = self.filter.fit();
        let outcome = self.filter.add(point);
        match outcome {
            Outcome::Accepted { residual_s } => {
                let sigma =
                    before.map_or(f64::INFINITY, |f| f.prediction_sigma(sample.at, error_s));
                if residual_s.abs() > POLL_DOWN_SIGMAS * sigma {
                    // Polled too seldom to follow the oscillator: poll more often.
                    self.good_in_a_row = 0;
                    self.poll = (self.poll - 1).max(self.config.minpoll);
                } else {
                    self.good_in_a_row += 1;
                    if self.good_in_a_row >= POLL_UP_AFTER && self.poll < self.config.maxpoll {
                        self.poll += 1;
                        self.good_in_a_row = 0;
                    }
                }
            }
            Outcome::Outlier { .. } | Outcome::Reset { .. } => {
                if matches!(outcome, Outcome::Reset { .. }) {
                    self.counters.resets += 1;
                } else {
                    self.counters.outliers += 1;
                }
                self.good_in_a_row = 0;
                self.poll = (self.poll - 1).max(self.config.minpoll);
            }
        }
        self.last_sample = Some(sample);
        self.last_outcome = Some(outcome);
    }

    /// RATE: poll less often (at least as slowly as the server asks). DENY/RSTR: stop.
    fn on_kiss(&mut self, code: [u8; 4], server_poll: i8) {
        let text = reference_id_text(1, code);
        match &code {
            b"DENY" | b"RSTR" => {
                tracing::warn!(
                    "NTP source {}: kiss-o'-death {text}: no longer polled",
                    self.name
                );
                self.denied = Some(text);
            }
            b"RATE" => {
                let slower = (self.poll + 1).max(server_poll).min(self.config.maxpoll);
                tracing::info!(
                    "NTP source {}: kiss-o'-death RATE: polling every {} s",
                    self.name,
                    1u64 << slower.max(0)
                );
                self.poll = slower;
                self.burst_left = 0;
            }
            // Unknown codes: RFC 5905 says to treat the packet as a non-answer.
            _ => {}
        }
    }

    /// The source's offset (s) at `now`, its root distance (s) and jitter (s), when it
    /// can take part in selection.
    pub fn estimate(&self, now: Raw) -> Option<(f64, f64, f64)> {
        let fit = self.filter.fit()?;
        let server = self.server.as_ref()?;
        if self.denied.is_some()
            || self.reach == 0
            || fit.samples < MIN_SAMPLES
            || self.server_leap == Leap::Unsynchronized
        {
            return None;
        }
        let last = self.last_sample?;
        let age_s = (now.ns_since(fit.last) as f64 / 1e9).max(0.0);
        let jitter = fit.residual_rms_s.max(fit.sigma_at(now));
        let distance = server.root_delay_s / 2.0
            + server.root_dispersion_s
            + last.delay_s / 2.0
            + PHI * age_s
            + jitter;
        Some((fit.offset_at(now), distance, jitter))
    }

    /// The `clockguard sources` row (chronyc's vocabulary). `clock_s`: CLOCK_REALTIME −
    /// local timescale now, s, so that offsets are against the system clock (positive: the
    /// server is ahead), in the server's own time (leap seconds included).
    pub fn report(&self, now: Raw, clock_s: f64, state: SourceState) -> SourceReport {
        let fit = self.filter.fit();
        let clock_s = clock_s + self.timescale_shift_s as f64;
        SourceReport {
            name: self.name.clone(),
            address: self.addr.to_string(),
            state,
            stratum: self.server.as_ref().map(|s| s.stratum),
            reference_id: self.server.as_ref().map(|s| s.reference_id.clone()),
            poll: self.poll,
            reach: format!("{:o}", self.reach),
            last_rx_s: self.last_sample.map(|s| now.ns_since(s.at) as f64 / 1e9),
            offset_s: fit.map(|f| f.offset_at(now) - clock_s),
            error_s: fit.map(|f| f.sigma_at(now).max(f.residual_rms_s)),
            frequency_ppm: fit.map(|f| f.freq * 1e6),
            skew_ppm: fit.map(|f| f.freq_sigma * 1e6),
            last_delay_s: self.last_sample.map(|s| s.delay_s),
            samples: fit.map_or(0, |f| f.samples as u64),
            kiss_denied: self.denied.clone(),
            counters: self.counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local timescale: raw + EPOCH = Unix ns (2026-01-15T12:00:00Z at raw 0).
    const EPOCH_NS: i64 = 1_768_478_400 * 1_000_000_000;
    const MS: i64 = 1_000_000;

    /// A named change to a reply.
    type Case = (&'static str, fn(&mut Packet));

    fn source() -> Source {
        let config = SourceConfig {
            minpoll: 4,
            maxpoll: 10,
            iburst: false,
        };
        Source::new(
            "ref".into(),
            "127.0.0.1:123".parse().unwrap(),
            config,
            0.0,
            0,
        )
    }

    /// A server's answer to the request with `cookie`, made 1 ms after `sent_raw_ns` by a
    /// server `offset_ns` ahead, left 10 µs later.
    fn reply(cookie: NtpTimestamp, sent_raw_ns: i64, offset_ns: i64) -> Packet {
        let server_rx = EPOCH_NS + sent_raw_ns + MS + offset_ns;
        Packet {
            leap: Leap::None,
            version: 4,
            mode: Mode::Server,
            stratum: 2,
            poll: 4,
            precision: -20,
            root_delay: Default::default(),
            root_dispersion: Default::default(),
            reference_id: [10, 0, 0, 1],
            reference_ts: NtpTimestamp::from_unix_ns(server_rx - 1_000 * MS),
            origin_ts: cookie,
            receive_ts: NtpTimestamp::from_unix_ns(server_rx),
            transmit_ts: NtpTimestamp::from_unix_ns(server_rx + 10_000),
        }
    }

    /// Sends a request at `at_raw_ns` and feeds `edit(reply)` back 1 ms after the server
    /// sent it: symmetric paths.
    fn exchange(
        s: &mut Source,
        at_raw_ns: i64,
        edit: impl FnOnce(&mut Packet),
    ) -> Result<Sample, Rejected> {
        let cookie = NtpTimestamp(0x1234_5678_9abc_def0 ^ at_raw_ns as u64);
        s.request(cookie, Raw::from_ns(at_raw_ns))
            .expect("a request");
        let mut packet = reply(cookie, at_raw_ns, 3 * MS);
        edit(&mut packet);
        s.receive(
            &packet.to_bytes(),
            Raw::from_ns(at_raw_ns + 2 * MS + 10_000),
            EPOCH_NS,
        )
    }

    #[test]
    fn a_good_reply_is_a_sample_of_the_server_s_offset() {
        let mut s = source();
        let sample = exchange(&mut s, 0, |_| {}).unwrap();
        // 1 ms each way, 10 µs in the server: offset 3 ms, delay 2 ms.
        assert!((sample.offset_s - 0.003).abs() < 1e-8, "{sample:?}");
        assert!((sample.delay_s - 0.002).abs() < 1e-8, "{sample:?}");
        assert_eq!(s.counters.accepted, 1);
        assert_eq!(s.reach(), 1);
    }

    #[test]
    fn the_kernel_s_departure_time_replaces_the_one_taken_before_the_send() {
        // The request was timed 400 µs before it left: with that time the outbound leg
        // looks 400 µs longer, the offset 200 µs larger.
        let early = 400_000;
        let cookie = NtpTimestamp(0x55);
        let mut s = source();
        s.request(cookie, Raw::from_ns(-early)).unwrap();
        let packet = reply(cookie, 0, 3 * MS);
        let biased = s
            .receive(&packet.to_bytes(), Raw::from_ns(2 * MS + 10_000), EPOCH_NS)
            .unwrap();
        assert!((biased.offset_s - 0.0032).abs() < 1e-8, "{biased:?}");
        // With the kernel's stamp: the true 3 ms. A stamp of another request, or one from
        // before the send began, is ignored.
        let mut s = source();
        s.request(cookie, Raw::from_ns(-early)).unwrap();
        s.sent_at(NtpTimestamp(0x56), Raw::from_ns(0));
        s.sent_at(cookie, Raw::from_ns(-early - 1));
        s.sent_at(cookie, Raw::from_ns(0));
        let sample = s
            .receive(&packet.to_bytes(), Raw::from_ns(2 * MS + 10_000), EPOCH_NS)
            .unwrap();
        assert!((sample.offset_s - 0.003).abs() < 1e-8, "{sample:?}");
        assert!((sample.delay_s - 0.002).abs() < 1e-8, "{sample:?}");
    }

    #[test]
    fn kiss_rate_slows_polling_and_deny_or_rstr_stop_it() {
        let mut s = source();
        let before = s.interval_s();
        let got = exchange(&mut s, 0, |p| {
            p.stratum = 0;
            p.reference_id = *b"RATE";
            p.poll = 6;
        });
        assert_eq!(got, Err(Rejected::Kiss));
        assert_eq!(s.counters.kiss, 1);
        assert_eq!(s.interval_s(), 64.0, "at least as slow as the server asks");
        assert!(s.interval_s() > before);
        assert_eq!(s.denied(), None, "RATE does not stop the source");
        assert_eq!(s.counters.accepted, 0);

        for code in [*b"DENY", *b"RSTR"] {
            let mut s = source();
            let got = exchange(&mut s, 0, |p| {
                p.stratum = 0;
                p.reference_id = code;
            });
            assert_eq!(got, Err(Rejected::Kiss));
            assert_eq!(s.denied(), Some(std::str::from_utf8(&code).unwrap()));
            assert_eq!(
                s.request(NtpTimestamp(7), Raw::from_ns(10 * MS)),
                None,
                "no longer polled"
            );
            assert_eq!(s.estimate(Raw::from_ns(10 * MS)), None);
        }
    }

    #[test]
    fn an_unknown_kiss_code_is_no_answer_and_changes_nothing() {
        let mut s = source();
        let interval = s.interval_s();
        let got = exchange(&mut s, 0, |p| {
            p.stratum = 0;
            p.reference_id = *b"XYZZ";
        });
        assert_eq!(got, Err(Rejected::Kiss));
        assert_eq!((s.interval_s(), s.denied()), (interval, None));
        assert_eq!(s.reach(), 0, "a kiss is not a reachable answer");
    }

    #[test]
    fn an_unsynchronised_server_is_heard_but_not_used() {
        let cases: [Case; 2] = [
            ("leap 3", |p| p.leap = Leap::Unsynchronized),
            ("stratum 16", |p| p.stratum = 16),
        ];
        for (what, edit) in cases {
            let mut s = source();
            assert_eq!(
                exchange(&mut s, 0, edit),
                Err(Rejected::Unsynchronised),
                "{what}"
            );
            assert_eq!(s.counters.unsynchronised, 1, "{what}");
            assert_eq!(s.counters.accepted, 0, "{what}");
            // It answered: reachable, and what it says of itself is shown.
            assert_eq!(s.reach(), 1, "{what}");
            assert!(s.server().is_some(), "{what}");
            assert_eq!(s.last_sample(), None, "{what}");
        }
    }

    #[test]
    fn zero_timestamps_in_a_reply_with_our_cookie_are_dropped_and_counted() {
        let cases: [Case; 3] = [
            ("receive", |p| p.receive_ts = NtpTimestamp::ZERO),
            ("transmit", |p| p.transmit_ts = NtpTimestamp::ZERO),
            ("both", |p| {
                p.receive_ts = NtpTimestamp::ZERO;
                p.transmit_ts = NtpTimestamp::ZERO;
            }),
        ];
        for (what, edit) in cases {
            let mut s = source();
            assert_eq!(exchange(&mut s, 0, edit), Err(Rejected::Bogus), "{what}");
            assert_eq!(s.counters.bogus, 1, "{what}");
            assert_eq!(s.counters.accepted, 0, "{what}");
            assert_eq!(s.last_sample(), None, "{what}");
            assert!(s.fit().is_none(), "{what}: nothing reached the filter");
        }
    }

    #[test]
    fn a_reply_without_our_cookie_or_a_second_one_is_counted_apart() {
        let mut s = source();
        s.request(NtpTimestamp(42), Raw::from_ns(0)).unwrap();
        let spoofed = reply(NtpTimestamp(41), 0, 3 * MS).to_bytes();
        assert_eq!(
            s.receive(&spoofed, Raw::from_ns(2 * MS), EPOCH_NS),
            Err(Rejected::BadOrigin)
        );
        let real = reply(NtpTimestamp(42), 0, 3 * MS).to_bytes();
        assert!(s.receive(&real, Raw::from_ns(2 * MS), EPOCH_NS).is_ok());
        assert_eq!(
            s.receive(&real, Raw::from_ns(3 * MS), EPOCH_NS),
            Err(Rejected::Duplicate)
        );
        assert_eq!(
            s.receive(&real[..40], Raw::from_ns(3 * MS), EPOCH_NS),
            Err(Rejected::Malformed)
        );
        let c = s.counters;
        assert_eq!(
            (
                c.received,
                c.accepted,
                c.bad_origin,
                c.duplicate,
                c.malformed
            ),
            (4, 1, 1, 1, 1)
        );
    }
}
