//! The NTP client's sans-IO core: the sources, selection and combining into one system
//! estimate (the reference time as a line against CLOCK_MONOTONIC_RAW). The I/O shell
//! (`client.rs`) feeds it datagrams and times and applies its estimate through the slew
//! engine; the simulation tests drive it with a simulated clock and network.

use std::net::SocketAddr;

use crate::{
    status::{self, SourceState},
    time::Raw,
};
use chrono::{DateTime, Datelike};
use serde::Serialize;

use super::{
    packet::{Leap, NtpTimestamp},
    select::{self, Candidate},
    source::{Rejected, Sample, Source, SourceConfig},
};

/// Root distance beyond which a source is not selectable, s (chrony's maxdistance: 3 s).
const MAX_DISTANCE_S: f64 = 3.0;

/// Before the first estimate, a clock at least this far (s) from what every source's first
/// reply makes certain is slewed at once (see [`Engine::first_look`]): where Debian's
/// chrony configuration (`makestep 1 3`) would step. Nearer, the 4 s until the estimate
/// cost little, and a slew started on first replies can run into a server whose own time
/// is still settling (t_71: chronyd -x on the same clock followed the slew for a minute).
pub const FIRST_LOOK_MIN_S: f64 = 1.0;

const NS_PER_S: i64 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// A leap second the sources announced.
///
/// clockguard never lets the kernel apply it (STA_INS repeats 23:59:59: CLOCK_REALTIME
/// goes back 1 s). Its timescale runs on through the leap; the servers that announced it
/// are read 1 s later from then on, so their samples stay on one line; and UTC, which the
/// clock follows, is the timescale less the leap: the clock is slewed by 1 s after it,
/// as chrony's `leapsecmode slew` does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeapSecond {
    /// +1: inserted (23:59:60), −1: deleted (23:59:59 skipped).
    pub delta_s: i64,
    /// The midnight UTC it comes before, Unix s.
    pub at_unix_s: i64,
    /// Where the leap is on the engine's timescale, Unix s: the midnight, with the leap
    /// seconds passed before it; a deleted second goes at 23:59:59, a second earlier.
    #[serde(skip)]
    timescale_at_s: i64,
    /// The leap is behind: UTC is the timescale less it.
    pub passed: bool,
    /// The sources that announced it (indices), which are read `delta_s` later after it.
    pub sources: Vec<usize>,
}

impl LeapSecond {
    /// As `tracking` shows it.
    pub fn report(&self) -> status::LeapSecond {
        status::LeapSecond {
            delta_s: self.delta_s,
            at_unix_s: self.at_unix_s,
            passed: self.passed,
            sources: self.sources.clone(),
        }
    }

    /// As the leap indicator the servers use.
    pub fn leap(&self) -> Leap {
        if self.delta_s > 0 {
            Leap::AddSecond
        } else {
            Leap::DeleteSecond
        }
    }
}

/// The midnight UTC after `unix_s` when a leap second may come then: the ends of June and
/// December (as chrony accepts them; every leap second so far was at one of the two).
fn leap_midnight_after(unix_s: i64) -> Option<i64> {
    let day = DateTime::from_timestamp(unix_s, 0)?;
    let last_day = (day.month() == 6 && day.day() == 30) || (day.month() == 12 && day.day() == 31);
    last_day.then(|| (unix_s.div_euclid(SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY)
}

/// The combined estimate of the selected sources.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemEstimate {
    /// When the estimate was made (it is a line through this point).
    pub anchored: Raw,
    /// The engine's timescale − local timescale at `anchored`, s. It runs through leap
    /// seconds; UTC is it less `leap_seconds_passed`.
    pub offset_s: f64,
    /// Leap seconds passed since the engine started (+1 per inserted second).
    pub leap_seconds_passed: i64,
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
    /// Standard error of the peer's fitted offset at `anchored`, s (see
    /// [`offset_sigma_at`](Self::offset_sigma_at)).
    pub offset_sigma_s: f64,
    /// When the peer's newest sample was taken.
    pub newest_sample: Raw,
    /// How far a truechimer's samples held back as outliers lie from its fit, s, the
    /// farthest (0: none held). They may be spikes, or the first sight of a reference that
    /// moved: until that is known the truth may be as far.
    pub unconfirmed_s: f64,
}

impl SystemEstimate {
    /// Reference time (UTC) − local timescale at `at`, s.
    pub fn offset_at(&self, at: Raw) -> f64 {
        self.timescale_offset_at(at) - self.leap_seconds_passed as f64
    }

    /// Standard error of [`offset_at`](Self::offset_at) at `at`, s: the fit's at its
    /// anchor and the frequency's error carried from there.
    pub fn offset_sigma_at(&self, at: Raw) -> f64 {
        let dt_s = at.ns_since(self.anchored) as f64 / 1e9;
        (self.offset_sigma_s.powi(2) + (self.freq_sigma * dt_s).powi(2)).sqrt()
    }

    /// The engine's timescale (through leap seconds) − local timescale at `at`, s.
    fn timescale_offset_at(&self, at: Raw) -> f64 {
        self.offset_s + self.freq * (at.ns_since(self.anchored) as f64 / 1e9)
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
    /// Leap seconds announced, the last one possibly still ahead.
    leaps: Vec<LeapSecond>,
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
            leaps: Vec::new(),
        }
    }

    /// Leap seconds announced since the start, the last one possibly still ahead.
    pub fn leap_seconds(&self) -> &[LeapSecond] {
        &self.leaps
    }

    fn leap_seconds_passed(&self) -> i64 {
        self.leaps
            .iter()
            .filter(|l| l.passed)
            .map(|l| l.delta_s)
            .sum()
    }

    /// The leap second still ahead, if the sources announced one.
    pub fn pending_leap(&self) -> Option<&LeapSecond> {
        self.leaps.last().filter(|l| !l.passed)
    }

    /// When the pending leap second comes, by the estimate.
    pub fn pending_leap_at(&self) -> Option<Raw> {
        let leap = self.pending_leap()?;
        let system = self.system.as_ref()?;
        let timescale_now_ns =
            system.anchored.ns() as f64 + self.epoch_ns as f64 + system.offset_s * 1e9;
        let to_go_ns = leap.timescale_at_s as f64 * 1e9 - timescale_now_ns;
        Some(
            system
                .anchored
                .plus_ns((to_go_ns / (1.0 + system.freq)).round() as i64),
        )
    }

    /// Passes the pending leap second once the timescale has reached it at `now`: the
    /// sources that announced it are read `delta_s` later from now on, and UTC (the
    /// estimate's `offset_at`) moves by it.
    fn pass_due_leap(&mut self, now: Raw) {
        let Some(system) = self.system.as_mut() else {
            return;
        };
        let timescale_ns = i128::from(now.ns())
            + i128::from(self.epoch_ns)
            + (system.timescale_offset_at(now) * 1e9) as i128;
        let Some(leap) = self.leaps.last_mut().filter(|l| !l.passed) else {
            return;
        };
        if timescale_ns < i128::from(leap.timescale_at_s) * i128::from(NS_PER_S) {
            return;
        }
        leap.passed = true;
        system.leap_seconds_passed += leap.delta_s;
        system.leap = Leap::None;
        for &id in &leap.sources {
            self.sources[id].passed_leap(leap.delta_s);
        }
        tracing::info!(
            "NTP: leap second {} at {}: the clock is slewed by {:+} s, never stepped",
            if leap.delta_s > 0 {
                "inserted"
            } else {
                "deleted"
            },
            crate::record::rfc3339_ns(leap.at_unix_s * NS_PER_S),
            -leap.delta_s
        );
    }

    /// The leap second the selected sources announce (a majority of them must), taken
    /// on the day it can come; withdrawn when the majority stops announcing it before.
    fn follow_leap_announcements(&mut self, utc_now_ns: i64) {
        let Some(system) = self.system.as_ref() else {
            return;
        };
        let truechimers = &system.truechimers;
        let count = |leap: Leap| {
            truechimers
                .iter()
                .filter(|&&id| self.sources[id].server_leap() == leap)
                .count()
        };
        let majority = |n: usize| 2 * n > truechimers.len();
        let announced = [Leap::AddSecond, Leap::DeleteSecond]
            .into_iter()
            .find(|&leap| majority(count(leap)));
        let at = leap_midnight_after(utc_now_ns.div_euclid(NS_PER_S));
        match (announced, at) {
            (Some(leap), Some(at_unix_s)) => {
                let delta_s = if leap == Leap::AddSecond { 1 } else { -1 };
                let announcers: Vec<usize> = (0..self.sources.len())
                    .filter(|&id| self.sources[id].server_leap() == leap)
                    .collect();
                match self.leaps.last_mut() {
                    Some(pending) if !pending.passed && pending.delta_s == delta_s => {
                        for id in announcers {
                            if !pending.sources.contains(&id) {
                                pending.sources.push(id);
                            }
                        }
                    }
                    Some(passed) if passed.passed && passed.at_unix_s == at_unix_s => {}
                    _ => {
                        self.leaps.retain(|l| l.passed);
                        tracing::info!(
                            "NTP: the sources announce a leap second ({}) before {}: the \
                             clock will be slewed by {:+} s after it, never stepped",
                            if delta_s > 0 { "inserted" } else { "deleted" },
                            crate::record::rfc3339_ns(at_unix_s * NS_PER_S),
                            -delta_s
                        );
                        let timescale_at_s =
                            at_unix_s + self.leap_seconds_passed() - i64::from(delta_s < 0);
                        self.leaps.push(LeapSecond {
                            delta_s,
                            at_unix_s,
                            timescale_at_s,
                            passed: false,
                            sources: announcers,
                        });
                    }
                }
            }
            _ => {
                if let Some(withdrawn) = self.pending_leap() {
                    tracing::warn!(
                        "NTP: the sources no longer announce the leap second before {}",
                        crate::record::rfc3339_ns(withdrawn.at_unix_s * NS_PER_S)
                    );
                    self.leaps.pop();
                }
            }
        }
        let leap = self.pending_leap().map_or(Leap::None, LeapSecond::leap);
        if let Some(system) = self.system.as_mut() {
            system.leap = leap;
        }
    }

    pub fn epoch_ns(&self) -> i64 {
        self.epoch_ns
    }

    pub fn add_source(&mut self, name: String, addr: SocketAddr) -> usize {
        let freq = self.system.as_ref().map_or(self.prior_freq, |s| s.freq);
        // A server found after a leap second already counts it.
        let shift = self.leap_seconds_passed();
        self.sources
            .push(Source::new(name, addr, self.config.clone(), freq, shift));
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

    /// Before there has ever been an estimate (a source needs [`MIN_SAMPLES`] samples,
    /// about 4 s into the start's burst): the sources' newest replies taken alone, when
    /// all of them (every source not denied has answered) put the local timescale at least
    /// [`FIRST_LOOK_MIN_S`] off in the same direction, however their round trips split.
    /// That much of the correction is certain (a server's time is within its root distance
    /// of its reply), so the clock may be slewed by it at once rather than a few seconds
    /// later. Gives (the nearest source's offset, the certain part of it), s, on the local
    /// timescale as [`Sample::offset_s`].
    ///
    /// [`MIN_SAMPLES`]: super::source::MIN_SAMPLES
    pub fn first_look(&self, now: Raw) -> Option<(f64, f64)> {
        if self.system.is_some() {
            return None;
        }
        let mut nearest: Option<(f64, f64)> = None;
        let mut direction = 0.0;
        for source in self.sources.iter().filter(|s| s.denied().is_none()) {
            let (offset_s, distance_s) = source.first_look(now)?;
            if distance_s > MAX_DISTANCE_S {
                return None;
            }
            let certain_s = offset_s.abs() - distance_s;
            if certain_s < FIRST_LOOK_MIN_S || (direction != 0.0 && offset_s.signum() != direction)
            {
                return None;
            }
            direction = offset_s.signum();
            if nearest.is_none_or(|(_, c)| certain_s < c.abs()) {
                nearest = Some((offset_s, direction * certain_s));
            }
        }
        nearest
    }

    /// Source `id`'s next requests go out as a burst.
    pub fn burst(&mut self, id: usize) {
        self.sources[id].burst();
    }

    /// The request for source `id` (None: the source is not polled any more).
    pub fn request(&mut self, id: usize, cookie: NtpTimestamp, now: Raw) -> Option<[u8; 48]> {
        self.sources[id].request(cookie, now)
    }

    /// The kernel's time of departure of source `id`'s request with `cookie`.
    pub fn sent_at(&mut self, id: usize, cookie: NtpTimestamp, departed: Raw) {
        self.sources[id].sent_at(cookie, departed);
    }

    /// A datagram from source `id`'s address; on a new sample, the system estimate is
    /// recomputed at `arrived`.
    pub fn receive(&mut self, id: usize, bytes: &[u8], arrived: Raw) -> Result<Sample, Rejected> {
        // A reply from after a leap second is read on the timescale from before it.
        self.pass_due_leap(arrived);
        let sample = self.sources[id].receive(bytes, arrived, self.epoch_ns)?;
        self.update(arrived);
        Ok(sample)
    }

    /// Selection and combining at `now`.
    pub fn update(&mut self, now: Raw) {
        self.pass_due_leap(now);
        let mut ids = Vec::new();
        let mut candidates = Vec::new();
        for (id, source) in self.sources.iter().enumerate() {
            if let Some((offset_s, distance_s, jitter_s)) = source.estimate(now) {
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
        let peer_fit = peer.fit().expect("a candidate has a fit");
        let leap_seconds_passed = self.leap_seconds_passed();
        self.system = Some(SystemEstimate {
            anchored: now,
            offset_s: selection.offset_s,
            leap_seconds_passed,
            freq: freq_sum / freq_weights,
            freq_sigma: (1.0 / freq_weights).sqrt(),
            peer: peer_id,
            truechimers: selection.truechimers.iter().map(|&i| ids[i]).collect(),
            falsetickers: selection.falsetickers.iter().map(|&i| ids[i]).collect(),
            stratum: server.stratum.saturating_add(1).min(16),
            reference_id: reference_id_of(peer.addr),
            leap: Leap::None,
            root_delay_s: server.root_delay_s + delay,
            root_dispersion_s: server.root_dispersion_s + peer_candidate.jitter_s,
            offset_sigma_s: peer_fit.sigma_at(now),
            newest_sample: peer_fit.last,
            unconfirmed_s: selection
                .truechimers
                .iter()
                .map(|&i| self.sources[ids[i]].unconfirmed_s())
                .fold(0.0, f64::max),
        });
        self.unsynchronised_why = None;
        let utc_now_ns = now.ns() + self.epoch_ns + (selection.offset_s * 1e9) as i64
            - leap_seconds_passed * NS_PER_S;
        self.follow_leap_announcements(utc_now_ns);
    }

    /// The state chronyc's `sources` shows for source `id`.
    pub fn source_state(&self, id: usize) -> SourceState {
        let source = &self.sources[id];
        if source.denied().is_some() {
            return SourceState::Denied;
        }
        if source.reach() == 0 {
            return if source.counters.sent == 0 {
                SourceState::New
            } else {
                SourceState::Unreachable
            };
        }
        match &self.system {
            Some(s) if self.unsynchronised_why.is_none() && s.peer == id => SourceState::Selected,
            Some(s) if self.unsynchronised_why.is_none() && s.truechimers.contains(&id) => {
                SourceState::Combined
            }
            Some(s) if self.unsynchronised_why.is_none() && s.falsetickers.contains(&id) => {
                SourceState::Falseticker
            }
            _ if source.server_leap() == Leap::Unsynchronized => SourceState::Unsynchronised,
            _ if source
                .fit()
                .is_none_or(|f| f.samples < super::source::MIN_SAMPLES) =>
            {
                SourceState::Collecting
            }
            _ => SourceState::NotSelectable,
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
