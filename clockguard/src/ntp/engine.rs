//! The NTP client's sans-IO core: the sources, selection and combining into one system
//! estimate (the reference time as a line against CLOCK_MONOTONIC_RAW). The I/O shell
//! (`client.rs`) feeds it datagrams and times and applies its estimate through the slew
//! engine; the simulation tests drive it with a simulated clock and network.

use std::net::SocketAddr;

use super::{
    packet::{Leap, NtpTimestamp},
    select::{self, Candidate},
    source::{Rejected, Sample, Source, SourceConfig},
};

/// Root distance beyond which a source is not selectable, s (chrony's maxdistance: 3 s).
const MAX_DISTANCE_S: f64 = 3.0;

/// The combined estimate of the selected sources.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemEstimate {
    /// CLOCK_MONOTONIC_RAW the estimate is anchored at, ns.
    pub raw_ns: i64,
    /// Reference time − local timescale at `raw_ns`, s.
    pub offset_s: f64,
    /// Reference frequency against the raw clock, s/s.
    pub freq: f64,
    /// Standard error of `freq`, s/s.
    pub freq_sigma: f64,
    /// Index of the system peer.
    pub peer: usize,
    pub truechimers: Vec<usize>,
    pub falsetickers: Vec<usize>,
    /// Our stratum (the peer's + 1).
    pub stratum: u8,
    pub reference_id: [u8; 4],
    pub leap: Leap,
    /// Root delay and dispersion through the peer, s.
    pub root_delay_s: f64,
    pub root_dispersion_s: f64,
}

impl SystemEstimate {
    /// Reference time − local timescale at `raw_ns`, s.
    pub fn offset_at(&self, raw_ns: i64) -> f64 {
        self.offset_s + self.freq * ((raw_ns - self.raw_ns) as f64 / 1e9)
    }
}

pub struct Engine {
    /// Local timescale = CLOCK_MONOTONIC_RAW + epoch, Unix ns: fixed for the daemon's
    /// life, so every sample of every source is on the same never-steered scale.
    epoch_ns: i64,
    config: SourceConfig,
    sources: Vec<Source>,
    /// The frequency known before any fit (drift file), s/s.
    prior_freq: f64,
    system: Option<SystemEstimate>,
    /// Why there is no estimate (None while there is one).
    unsynchronised_why: Option<String>,
}

impl Engine {
    pub fn new(epoch_ns: i64, config: SourceConfig, prior_freq: f64) -> Engine {
        Engine {
            epoch_ns,
            config,
            sources: Vec::new(),
            prior_freq,
            system: None,
            unsynchronised_why: Some("no reply from any source yet".into()),
        }
    }

    pub fn epoch_ns(&self) -> i64 {
        self.epoch_ns
    }

    pub fn add_source(&mut self, name: String, addr: SocketAddr) -> usize {
        let freq = self.system.as_ref().map_or(self.prior_freq, |s| s.freq);
        self.sources
            .push(Source::new(name, addr, self.config.clone(), freq));
        self.sources.len() - 1
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub fn system(&self) -> Option<&SystemEstimate> {
        self.system.as_ref()
    }

    pub fn unsynchronised_why(&self) -> Option<&str> {
        self.unsynchronised_why.as_deref()
    }

    /// The request for source `id` (None: the source is not polled any more).
    pub fn request(
        &mut self,
        id: usize,
        cookie: NtpTimestamp,
        raw_now_ns: i64,
    ) -> Option<[u8; 48]> {
        self.sources[id].request(cookie, raw_now_ns)
    }

    /// A datagram from source `id`'s address; on a new sample, the system estimate is
    /// recomputed at `raw_rx_ns`.
    pub fn receive(&mut self, id: usize, bytes: &[u8], raw_rx_ns: i64) -> Result<Sample, Rejected> {
        let sample = self.sources[id].receive(bytes, raw_rx_ns, self.epoch_ns)?;
        self.update(raw_rx_ns);
        Ok(sample)
    }

    /// Selection and combining at `raw_ns`.
    pub fn update(&mut self, raw_ns: i64) {
        let mut ids = Vec::new();
        let mut candidates = Vec::new();
        for (id, source) in self.sources.iter().enumerate() {
            if let Some((offset_s, distance_s, jitter_s)) = source.estimate(raw_ns) {
                if distance_s <= MAX_DISTANCE_S {
                    ids.push(id);
                    candidates.push(Candidate {
                        offset_s,
                        distance_s,
                        jitter_s,
                    });
                }
            }
        }
        let selection = match select::select(&candidates) {
            Ok(selection) => selection,
            Err(why) => {
                // Keep the last estimate: it extrapolates (the clock holds its frequency);
                // only the reason changes, and the status says we are not synchronised.
                let why = why.to_string();
                if self.unsynchronised_why.is_none() {
                    tracing::warn!("NTP: lost synchronisation: {why}");
                }
                self.unsynchronised_why = Some(why);
                return;
            }
        };
        let (mut freq_sum, mut freq_weights) = (0.0, 0.0);
        for &i in &selection.truechimers {
            let fit = self.sources[ids[i]].fit().expect("a candidate has a fit");
            let weight = 1.0 / fit.freq_sigma.max(1e-12).powi(2);
            freq_sum += fit.freq * weight;
            freq_weights += weight;
        }
        let peer_id = ids[selection.system_peer];
        let peer = &self.sources[peer_id];
        let server = peer.server().expect("a candidate has server info").clone();
        let peer_candidate = candidates[selection.system_peer];
        let previous_peer = self.system.as_ref().map(|s| s.peer);
        if previous_peer != Some(peer_id) {
            tracing::info!("NTP: selected source {} ({})", peer.name, peer.addr);
        }
        let delay = peer.last_sample().map_or(0.0, |s| s.delay_s);
        self.system = Some(SystemEstimate {
            raw_ns,
            offset_s: selection.offset_s,
            freq: freq_sum / freq_weights,
            freq_sigma: (1.0 / freq_weights).sqrt(),
            peer: peer_id,
            truechimers: selection.truechimers.iter().map(|&i| ids[i]).collect(),
            falsetickers: selection.falsetickers.iter().map(|&i| ids[i]).collect(),
            stratum: server.stratum.saturating_add(1).min(16),
            reference_id: reference_id_of(peer.addr),
            leap: peer.server_leap(),
            root_delay_s: server.root_delay_s + delay,
            root_dispersion_s: server.root_dispersion_s + peer_candidate.jitter_s,
        });
        self.unsynchronised_why = None;
    }

    /// The state chronyc's `sources` shows for source `id`.
    pub fn source_state(&self, id: usize) -> &'static str {
        let source = &self.sources[id];
        if source.denied().is_some() {
            return "denied";
        }
        if source.reach() == 0 {
            return if source.counters.sent == 0 {
                "new"
            } else {
                "unreachable"
            };
        }
        match &self.system {
            Some(s) if self.unsynchronised_why.is_none() && s.peer == id => "selected",
            Some(s) if self.unsynchronised_why.is_none() && s.truechimers.contains(&id) => {
                "combined"
            }
            Some(s) if self.unsynchronised_why.is_none() && s.falsetickers.contains(&id) => {
                "falseticker"
            }
            _ if source.server_leap() == Leap::Unsynchronized => "unsynchronised",
            _ if source
                .fit()
                .is_none_or(|f| f.samples < super::source::MIN_SAMPLES) =>
            {
                "collecting"
            }
            _ => "not selectable",
        }
    }
}

/// Our reference ID when serving: the peer's IPv4 address, or the first four bytes of the
/// MD5 of an IPv6 address per RFC 5905 — here a simpler fold of the address bytes, which
/// only needs to be stable and unlikely to collide (it is used for loop detection).
fn reference_id_of(addr: SocketAddr) -> [u8; 4] {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(v6) => {
            let mut id = [0u8; 4];
            for (i, b) in v6.octets().iter().enumerate() {
                id[i % 4] ^= b.rotate_left(i as u32 / 4);
            }
            id
        }
    }
}
