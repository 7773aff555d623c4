//! The clock error bound clockguard publishes: how far CLOCK_REALTIME can be from true time,
//! kept from what clockguard knows (the NTP discipline's estimate, a correction still being
//! slewed in, every disruption it sees), and written as a ClockBound segment
//! ([`crate::clockbound`]) that readers grow at the maximum drift between updates.
//!
//! - Unknown until the discipline is first synchronised (bound 0, as ClockBound's daemon
//!   writes before its first update: readers must not use an Unknown bound).
//! - Synchronized while it is: the bound at the update is |NTP time − CLOCK_REALTIME| (the
//!   correction the slew engine still has to make) + `error_sigmas` × the estimate's
//!   standard error + root delay / 2 + root dispersion + any other correction being slewed
//!   in (a refused step taken as a slew); the maximum drift is `error_sigmas` × the
//!   frequency estimate's standard error (skew) + the configured floor.
//! - FreeRunning when the sources are lost: the last bound, growing at its drift.
//! - Disrupted from the moment something breaks the line between CLOCK_MONOTONIC and true
//!   time (a step, a pause of a second or more, a clocksource jump or switch, a resume, a
//!   vmclock disruption) until the discipline has measured again with a sample taken after
//!   it. The disruption marker changes with each one (with vmclock, it is the device's
//!   marker, which readers compare with the device itself). A shorter pause only widens
//!   the bound by its length.
//!
//! Instants are on CLOCK_MONOTONIC_COARSE, the protocol's clock (see `clockbound`).

use serde::{Deserialize, Serialize};

use crate::clockbound::{ClockStatus, ErrorBound};
use crate::ntp::client::ClockError;
use crate::record::{rfc3339_ns, Record, Source, Verdict};
use crate::time::{Monotonic, Raw, Realtime};

/// The largest max drift a reader accepts is below 1e9 ppb (one second per second).
const MAX_DRIFT_PPB: u32 = 999_999_999;
/// How fast any process with CAP_SYS_TIME may make the clock run off between two updates
/// when clockguard does not hold the discipline alone, ppb: the kernel's limit on a
/// frequency change (MAXFREQ) and on an adjtime() or PLL slew (500 ppm). A tick change
/// (up to 10 %) is seen as it is made and is a disruption ([`disruption_of`]).
pub const KERNEL_SLEW_PPB: u32 = 500_000;
/// How far CLOCK_MONOTONIC and CLOCK_MONOTONIC_RAW can drift apart, as a fraction: the
/// kernel slews at most 10 % through the tick and 500 ppm through the frequency.
const MONOTONIC_VS_RAW_MAX: f64 = 0.1005;

/// How the bound is kept (the `[bound]` settings, and who may change the clock's rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// The least max drift published, ppb: what the oscillator may wander that the
    /// discipline has not measured (temperature, ageing).
    pub drift_floor_ppb: u32,
    /// How long a bound stays usable without a newer one, ns (readers then say Unknown).
    pub void_after_ns: i64,
    /// How many standard errors of the estimate and of the frequency go into the bound.
    pub error_sigmas: f64,
    /// A vmclock device is followed: the marker is the device's, and readers compare it.
    pub disruption_support: bool,
    /// Only clockguard may change the clock's rate (the guard enforces
    /// `exclusive_discipline`). Otherwise the drift is at least [`KERNEL_SLEW_PPB`].
    pub exclusive_discipline: bool,
    /// How far a correction in progress may still move the clock after the discipline
    /// replaced it, ns: the slew engine picks a new correction up at its next update, so
    /// the old one runs on for up to an update interval (and a scheduling delay) at the
    /// fastest slew.
    pub slew_in_flight_ns: i64,
    /// A pause (a stall, a VM stopped) this long or longer disrupts the bound; a shorter
    /// one only widens it by its length, ns. Under an emulator or on a loaded host, timers
    /// 100 ms late come and go; making each a disruption would leave the bound Disrupted
    /// (unusable) until the next poll.
    pub pause_disrupts_ns: i64,
}

impl Policy {
    /// The least max drift published, ppb.
    fn drift_floor_ppb(&self) -> u32 {
        if self.exclusive_discipline {
            self.drift_floor_ppb
        } else {
            self.drift_floor_ppb.max(KERNEL_SLEW_PPB)
        }
    }
}

/// What the NTP discipline knows at an update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub at: Monotonic,
    /// When the newest sample in the estimate was taken: a disruption before it has been
    /// measured again.
    pub newest_sample: Monotonic,
    /// NTP time − CLOCK_REALTIME at `at`, as estimated, ns.
    pub offset_ns: i64,
    /// The estimate's standard error, ns.
    pub offset_sigma_ns: f64,
    pub root_delay_ns: i64,
    pub root_dispersion_ns: i64,
    /// The frequency estimate's standard error (chronyc's skew), ppb.
    pub skew_ppb: f64,
    /// Samples held back as outliers disagree with the estimate by this much, ns.
    pub unconfirmed_ns: i64,
}

impl Measured {
    /// The discipline's report, dated on CLOCK_MONOTONIC from `now` and `now_raw` read
    /// together after it: its instants placed no later than they were
    /// ([`sample_on_monotonic`]), so that the bound is never dated after what it measured.
    pub fn from_discipline(e: &ClockError, now_raw: Raw, now: Monotonic) -> Measured {
        Measured {
            at: sample_on_monotonic(e.at.raw, now_raw, now),
            newest_sample: sample_on_monotonic(e.newest_sample, now_raw, now),
            offset_ns: e.offset_ns,
            offset_sigma_ns: e.offset_sigma_ns,
            root_delay_ns: e.root_delay_ns,
            root_dispersion_ns: e.root_dispersion_ns,
            skew_ppb: e.skew_ppb,
            unconfirmed_ns: e.unconfirmed_ns,
        }
    }
}

/// What the NTP service tells the bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    Measured(Measured),
    SourcesLost,
}

/// Something that breaks the relation between CLOCK_MONOTONIC and true time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disruption {
    /// CLOCK_REALTIME was stepped by this much (an allowed step), ns.
    Step { by_ns: i64 },
    /// Timers stood still this long (a stall, a VM pause), ns.
    Pause { ns: i64 },
    /// CLOCK_MONOTONIC jumped against CLOCK_MONOTONIC_RAW by this much, ns.
    ClocksourceJump { by_ns: i64 },
    /// The kernel changed clocksource.
    ClocksourceSwitch,
    /// The machine resumed from suspend.
    Resume,
    /// Another process changed the kernel's tick: the clock may run up to 10 % off.
    RateChange,
    /// The hypervisor's vmclock device changed its disruption marker (a live migration, a
    /// snapshot restored).
    Vmclock { marker: u64 },
}

impl Disruption {
    /// How far CLOCK_REALTIME may have moved from true time by it, as far as known, ns.
    fn known_size_ns(self) -> i64 {
        match self {
            Disruption::Step { by_ns } | Disruption::ClocksourceJump { by_ns } => by_ns.abs(),
            Disruption::Pause { ns } => ns.max(0),
            Disruption::ClocksourceSwitch
            | Disruption::Resume
            | Disruption::RateChange
            | Disruption::Vmclock { .. } => 0,
        }
    }
}

/// The disruption a journaled record reports, if any, and when it happened when the record
/// says (a stall's end, a timers finding's time; else it is taken to be now): a step that
/// moved the clock (by a process, by the kernel, or found by the fallback detector), a
/// stall, a suspend, a clocksource jump, switch or instability, or a tick change by another
/// process than clockguard (`own_pid`). A refused step is none: it did not happen, and one
/// slewed in instead is [`Bound::slewing_in`]'s.
pub fn disruption_of(record: &Record, own_pid: u32) -> Option<(Disruption, Option<Monotonic>)> {
    let delta_ns = record.delta_ns.unwrap_or(0);
    let refused = matches!(record.verdict, Verdict::Denied | Verdict::Slewed);
    let detail_instant = |key: &str| {
        record
            .detail
            .as_ref()
            .and_then(|d| d[key].as_i64())
            .map(Monotonic::from_ns)
    };
    let what = match (record.source, record.kind.as_str()) {
        (Source::Timers, "stall") => {
            return Some((
                Disruption::Pause { ns: delta_ns },
                detail_instant("ended_mono_ns"),
            ))
        }
        (Source::Timers, "suspend") => Disruption::Resume,
        (Source::Timers, "clocksource_jump") => Disruption::ClocksourceJump { by_ns: delta_ns },
        (Source::Timers, "vmclock_disruption") => Disruption::Vmclock {
            marker: record
                .detail
                .as_ref()
                .and_then(|d| d["marker"].as_u64())
                .unwrap_or(0),
        },
        (Source::Timers, "clocksource_change" | "clocksource_unstable") => {
            Disruption::ClocksourceSwitch
        }
        (Source::Fallback, _) => Disruption::Step { by_ns: delta_ns },
        (Source::Kernel, _) if delta_ns != 0 => Disruption::Step { by_ns: delta_ns },
        (Source::Syscall, "step") if delta_ns != 0 && !refused => {
            Disruption::Step { by_ns: delta_ns }
        }
        (Source::Syscall, "tick")
            if record.result == "0" && !refused && record.pid != Some(own_pid) =>
        {
            Disruption::RateChange
        }
        _ => return None,
    };
    let at = match record.source {
        Source::Timers => detail_instant("at_mono_ns"),
        _ => None,
    };
    Some((what, at))
}

/// A sample's time (CLOCK_MONOTONIC_RAW) on CLOCK_MONOTONIC, given both read now: never
/// later than it was, however the clock was slewed in between (the raw time elapsed is
/// stretched by the kernel's largest slew), so that a sample is never taken to follow a
/// disruption it preceded.
pub fn sample_on_monotonic(sample: Raw, now_raw: Raw, now: Monotonic) -> Monotonic {
    let elapsed_ns = now_raw.ns_since(sample).max(0) as f64;
    now.plus_ns(-(elapsed_ns * (1.0 + MONOTONIC_VS_RAW_MAX)).ceil() as i64)
}

/// The terms of a measured bound, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// |NTP time − CLOCK_REALTIME|: the correction still to be slewed.
    pub offset_ns: i64,
    /// `error_sigmas` × the estimate's standard error.
    pub estimate_error_ns: i64,
    /// Half the root delay (the path's asymmetry can be at most that).
    pub half_root_delay_ns: i64,
    pub root_dispersion_ns: i64,
    /// A correction clockguard slews in that the discipline did not ask for (once the
    /// discipline replaced it: what it may still move the clock, see
    /// [`Policy::slew_in_flight_ns`]).
    pub slewing_in_ns: i64,
    /// How far samples the discipline held back as outliers lie from its estimate: they
    /// may be the first sight of a reference that moved (a server that stepped), so the
    /// bound holds them too until the discipline has decided.
    #[serde(default)]
    pub unconfirmed_ns: i64,
}

impl Terms {
    fn sum_ns(&self) -> i64 {
        self.offset_ns
            .saturating_add(self.estimate_error_ns)
            .saturating_add(self.half_root_delay_ns)
            .saturating_add(self.root_dispersion_ns)
            .saturating_add(self.slewing_in_ns)
            .saturating_add(self.unconfirmed_ns)
    }
}

/// Why the bound is what it is: `clockguard now` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Why {
    /// The last measured bound's terms and when it was measured (CLOCK_MONOTONIC ns).
    pub measured: Option<Terms>,
    pub measured_at: Option<Monotonic>,
    /// The drift's terms, ppb: `error_sigmas` × the frequency's standard error, and the
    /// floor (the configured one, or the kernel's slew limit when others may slew).
    pub drift_from_skew_ppb: u32,
    pub drift_floor_ppb: u32,
    /// The last disruption and when it was seen (CLOCK_MONOTONIC ns); `disrupted` while it
    /// has not been measured again.
    pub last_disruption: Option<Disruption>,
    pub last_disruption_at: Option<Monotonic>,
    pub disrupted: bool,
    /// No source is selected (the bound runs free).
    pub sources_lost: bool,
    /// What clockguard is still slewing in that the discipline did not ask for, ns.
    pub slewing_in_ns: i64,
}

/// `clockguard now`, and the `bound` part of `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// CLOCK_REALTIME − and + the bound now: true time is in [earliest, latest]
    /// (RFC 3339 and Unix ns), if the status is synchronized or free_running.
    pub earliest: String,
    pub latest: String,
    pub earliest_ns: i64,
    pub latest_ns: i64,
    pub bound_ns: i64,
    /// As a ClockBound reader sees it now (a stale bound turns free_running, then
    /// unknown), and as published.
    pub status: ClockStatus,
    pub published_status: ClockStatus,
    /// Since the bound was published, and until it is void, s.
    pub as_of_age_s: f64,
    pub void_in_s: f64,
    pub max_drift_ppb: u32,
    pub disruption_marker: u64,
    pub why: Why,
    /// The ClockBound segment written, why it is not, and how many times it was written.
    pub segment: Option<String>,
    pub segment_error: Option<String>,
    pub segment_writes: u64,
}

/// The bound's state: feed it the discipline's updates and every disruption; each call
/// returns what to publish.
#[derive(Clone, Debug)]
pub struct Bound {
    policy: Policy,
    status: ClockStatus,
    marker: u64,
    /// The last bound published.
    last: ErrorBound,
    /// When the last disruption was seen, while Disrupted.
    disrupted_at: Option<Monotonic>,
    last_disruption: Option<(Monotonic, Disruption)>,
    /// A correction being slewed in that the discipline did not ask for, ns, and since when.
    slewing_in_ns: i64,
    slewing_in_since: Option<Monotonic>,
    /// The last measured bound's terms and drift from the frequency's error, ppb.
    terms: Option<(Monotonic, Terms)>,
    /// When the newest sample of the last accepted measurement was taken.
    newest_sample: Option<Monotonic>,
    /// The last pause counted (when it ended, how long), so that a stall seen twice counts
    /// once.
    last_pause: Option<(Monotonic, i64)>,
    drift_from_skew_ppb: u32,
    sources_lost: bool,
}

impl Bound {
    /// Unknown, with `marker` as the disruption marker (the vmclock device's, with
    /// disruption support).
    pub fn new(policy: Policy, marker: u64, at: Monotonic) -> Bound {
        Bound {
            policy,
            status: ClockStatus::Unknown,
            marker,
            last: ErrorBound {
                as_of: at,
                void_after: at,
                bound_ns: 0,
                disruption_marker: marker,
                max_drift_ppb: 0,
                status: ClockStatus::Unknown,
                disruption_support: policy.disruption_support,
            },
            disrupted_at: None,
            last_disruption: None,
            slewing_in_ns: 0,
            slewing_in_since: None,
            terms: None,
            newest_sample: None,
            last_pause: None,
            drift_from_skew_ppb: 0,
            sources_lost: false,
        }
    }

    pub fn status(&self) -> ClockStatus {
        self.status
    }

    /// The last bound published.
    pub fn last(&self) -> ErrorBound {
        self.last
    }

    pub fn why(&self) -> Why {
        Why {
            measured: self.terms.map(|(_, terms)| terms),
            measured_at: self.terms.map(|(at, _)| at),
            drift_from_skew_ppb: self.drift_from_skew_ppb,
            drift_floor_ppb: self.policy.drift_floor_ppb(),
            last_disruption: self.last_disruption.map(|(_, what)| what),
            last_disruption_at: self.last_disruption.map(|(at, _)| at),
            disrupted: self.disrupted_at.is_some(),
            sources_lost: self.sources_lost,
            slewing_in_ns: self.slewing_in_ns,
        }
    }

    /// The discipline measured: a Synchronized bound, unless a disruption came after the
    /// newest sample (then still Disrupted, with the bound grown since). The discipline's
    /// update also replaced any correction the slew engine had from before it (its own
    /// offset says what is left), so a correction slewed in since earlier is no longer
    /// added.
    pub fn measured(&mut self, m: Measured) -> ErrorBound {
        self.sources_lost = false;
        // A correction the discipline did not ask for, replaced by this update: what it
        // may still move the clock before the slew engine takes the new one up.
        let mut in_flight_ns = self.slewing_in_ns.saturating_abs();
        if self.slewing_in_since.is_some_and(|since| since < m.at) {
            in_flight_ns = in_flight_ns.min(self.policy.slew_in_flight_ns);
            self.slewing_in_ns = 0;
            self.slewing_in_since = None;
        }
        if let Some(disrupted_at) = self.disrupted_at {
            if m.newest_sample <= disrupted_at {
                return self.widen(m.at, 0);
            }
        }
        self.disrupted_at = None;
        self.newest_sample = Some(m.newest_sample);
        self.status = ClockStatus::Synchronized;
        let sigmas = self.policy.error_sigmas;
        let terms = Terms {
            offset_ns: m.offset_ns.saturating_abs(),
            estimate_error_ns: (sigmas * m.offset_sigma_ns.max(0.0)).ceil() as i64,
            half_root_delay_ns: (m.root_delay_ns.max(0) as u64).div_ceil(2) as i64,
            root_dispersion_ns: m.root_dispersion_ns.max(0),
            slewing_in_ns: in_flight_ns,
            unconfirmed_ns: m.unconfirmed_ns.max(0),
        };
        self.terms = Some((m.at, terms));
        self.drift_from_skew_ppb = (sigmas * m.skew_ppb.max(0.0))
            .ceil()
            .min(f64::from(MAX_DRIFT_PPB)) as u32;
        self.last = ErrorBound {
            as_of: m.at,
            void_after: m.at.plus_ns(self.policy.void_after_ns),
            bound_ns: terms.sum_ns(),
            disruption_marker: self.marker,
            max_drift_ppb: self.max_drift_ppb(),
            status: ClockStatus::Synchronized,
            disruption_support: self.policy.disruption_support,
        };
        self.last
    }

    fn max_drift_ppb(&self) -> u32 {
        self.drift_from_skew_ppb
            .saturating_add(self.policy.drift_floor_ppb())
            .min(MAX_DRIFT_PPB)
    }

    /// The NTP service's news.
    pub fn update(&mut self, update: Update) -> ErrorBound {
        match update {
            Update::Measured(m) => self.measured(m),
            Update::SourcesLost => self.sources_lost(),
        }
    }

    /// `clockguard now`: the interval a reader takes at `now` (CLOCK_MONOTONIC, read with
    /// `realtime` CLOCK_REALTIME) from the last bound published, and why it is so.
    pub fn answer(&self, now: Monotonic, realtime: Realtime) -> Answer {
        let last = self.last;
        // A reader refuses a bound from its future; asked in the same tick it was
        // published, it is the bound as published.
        let (bound_ns, status) = last
            .as_read_at(now.max(last.as_of))
            .unwrap_or((last.bound_ns, last.status));
        Answer {
            earliest: rfc3339_ns(realtime.ns().saturating_sub(bound_ns)),
            latest: rfc3339_ns(realtime.ns().saturating_add(bound_ns)),
            earliest_ns: realtime.ns().saturating_sub(bound_ns),
            latest_ns: realtime.ns().saturating_add(bound_ns),
            bound_ns,
            status,
            published_status: last.status,
            as_of_age_s: now.ns_since(last.as_of).max(0) as f64 / 1e9,
            void_in_s: last.void_after.ns_since(now) as f64 / 1e9,
            max_drift_ppb: last.max_drift_ppb,
            disruption_marker: last.disruption_marker,
            why: self.why(),
            segment: None,
            segment_error: None,
            segment_writes: 0,
        }
    }

    /// The policy changed (a reload, the guard's enforcement or exclusivity): the bound
    /// is published again as of `at` with the drift it now implies.
    pub fn set_policy(&mut self, at: Monotonic, policy: Policy) -> ErrorBound {
        if policy == self.policy {
            return self.last;
        }
        self.policy = policy;
        if self.status == ClockStatus::Unknown {
            return self.last;
        }
        let drift = self.max_drift_ppb();
        self.widen(at, 0);
        self.last.max_drift_ppb = drift;
        self.last
    }

    /// A vmclock device followed from now on (found after start: its driver loaded
    /// late): the marker is the device's, which readers then compare with it. What
    /// happened before it was found is unknown to readers and to clockguard alike, so the
    /// status stays as it is.
    pub fn follow_device(&mut self, marker: u64, policy: Policy) -> ErrorBound {
        self.policy = policy;
        self.marker = marker;
        self.last.disruption_marker = marker;
        self.last.disruption_support = policy.disruption_support;
        self.last
    }

    /// The sources are lost: a synchronised bound goes on as FreeRunning (readers grow it
    /// from its as_of); Unknown and Disrupted stay as they are.
    pub fn sources_lost(&mut self) -> ErrorBound {
        self.sources_lost = true;
        if self.status == ClockStatus::Synchronized {
            self.status = ClockStatus::FreeRunning;
            self.last.status = ClockStatus::FreeRunning;
        }
        self.last
    }

    /// A disruption that happened at `happened`, seen at `now` (the bound is dated then):
    /// Disrupted until a sample taken after it is measured, the marker changed, the bound
    /// grown to `now` and by what is known of the disruption's size. A pause shorter than
    /// [`Policy::pause_disrupts_ns`] only widens the bound by its length (the clock can
    /// have stood still that long at most) and leaves the status as it is. One the
    /// discipline has already measured past changes nothing, and a stall seen twice (as its
    /// first late timer, then as the stall record) counts once.
    pub fn disrupted(
        &mut self,
        now: Monotonic,
        happened: Monotonic,
        what: Disruption,
    ) -> ErrorBound {
        if self.newest_sample.is_some_and(|sample| happened < sample) {
            return self.last;
        }
        if let Disruption::Pause { ns } = what {
            // The same stall seen again (its record after its first late timer): only what
            // it lasted beyond what was counted.
            if let Some((seen_at, seen_ns)) = self.last_pause {
                let overlaps =
                    happened.plus_ns(-ns) <= seen_at && seen_at.plus_ns(-seen_ns) <= happened;
                if overlaps {
                    let extra_ns = ns.saturating_sub(seen_ns);
                    if extra_ns <= 0 || self.status == ClockStatus::Unknown {
                        return self.last;
                    }
                    self.last_pause = Some((happened.max(seen_at), ns));
                    return self.widen(now, extra_ns);
                }
            }
            self.last_pause = Some((happened, ns));
            if ns < self.policy.pause_disrupts_ns {
                // Unknown: there is no bound to widen yet.
                if self.status == ClockStatus::Unknown {
                    return self.last;
                }
                return self.widen(now, ns.max(0));
            }
        }
        self.marker = match what {
            Disruption::Vmclock { marker } => marker,
            // With vmclock, readers distrust a marker other than the device's.
            _ if self.policy.disruption_support => self.marker,
            _ => self.marker.wrapping_add(1),
        };
        self.last_disruption = Some((happened, what));
        let grown_ns = self.grown_bound_ns(now);
        self.status = ClockStatus::Disrupted;
        self.disrupted_at = Some(
            self.disrupted_at
                .map_or(happened, |before| before.max(happened)),
        );
        self.last = ErrorBound {
            as_of: now.max(self.last.as_of),
            bound_ns: grown_ns.saturating_add(what.known_size_ns()),
            disruption_marker: self.marker,
            status: ClockStatus::Disrupted,
            ..self.last
        };
        self.last
    }

    /// A correction the discipline did not ask for (a refused step taken as a slew),
    /// `requested_ns`, replaces whatever the slew engine had pending: until the discipline
    /// measures again, CLOCK_REALTIME may move that much more, on top of what an earlier
    /// one has already moved it (how much of that is unknown here), and the bound says so
    /// at once. 0: nothing will be slewed after all (the request was refused).
    pub fn slewing_in(&mut self, at: Monotonic, requested_ns: i64) -> ErrorBound {
        self.slewing_in_ns = requested_ns;
        self.slewing_in_since = Some(at);
        if self.status == ClockStatus::Unknown || requested_ns == 0 {
            return self.last;
        }
        self.widen(at, requested_ns.saturating_abs())
    }

    /// The same bound, grown to `at` and dated then: readers take a bound more than 5 s
    /// old for FreeRunning (READER_GRACE_NS), so it is published again every second
    /// between the discipline's updates, as ClockBound's daemon does. The status and
    /// void_after stay; an Unknown bound stays as it is.
    pub fn refresh(&mut self, at: Monotonic) -> ErrorBound {
        if self.status == ClockStatus::Unknown {
            return self.last;
        }
        self.widen(at, 0)
    }

    /// The last bound again as of `at`, grown to it and widened by `by_ns` more; status,
    /// marker and void_after stay.
    fn widen(&mut self, at: Monotonic, by_ns: i64) -> ErrorBound {
        let grown_ns = self.grown_bound_ns(at);
        self.last = ErrorBound {
            as_of: at.max(self.last.as_of),
            bound_ns: grown_ns.saturating_add(by_ns),
            ..self.last
        };
        self.last
    }

    /// The last bound as a reader computes it at `at` (grown at its drift); as published
    /// when `at` is before its as_of.
    fn grown_bound_ns(&self, at: Monotonic) -> i64 {
        self.last
            .as_read_at(at.max(self.last.as_of))
            .map_or(self.last.bound_ns, |(bound_ns, _)| bound_ns)
    }
}

#[cfg(test)]
mod tests;
