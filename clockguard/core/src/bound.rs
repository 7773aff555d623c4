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
//!   time (a step, a pause, a clocksource jump or switch, a resume, a vmclock disruption)
//!   until the discipline has measured again with a sample taken after it. The disruption
//!   marker changes with each one (with vmclock, it is the device's marker, which readers
//!   compare with the device itself).
//!
//! Instants are on CLOCK_MONOTONIC_COARSE, the protocol's clock (see `clockbound`).

use crate::clockbound::{ClockStatus, ErrorBound};
use crate::time::Monotonic;

/// The largest max drift a reader accepts is below 1e9 ppb (one second per second).
const MAX_DRIFT_PPB: u32 = 999_999_999;

/// How the bound is kept (the `[bound]` settings).
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
}

/// Something that breaks the relation between CLOCK_MONOTONIC and true time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            Disruption::ClocksourceSwitch | Disruption::Resume | Disruption::Vmclock { .. } => 0,
        }
    }
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
    /// A correction being slewed in that the discipline did not ask for, ns, and the part
    /// of it the last measured bound includes.
    slewing_in_ns: i64,
    slewing_in_counted_ns: i64,
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
            slewing_in_ns: 0,
            slewing_in_counted_ns: 0,
        }
    }

    pub fn status(&self) -> ClockStatus {
        self.status
    }

    /// The last bound published.
    pub fn last(&self) -> ErrorBound {
        self.last
    }

    /// The discipline measured: a Synchronized bound, unless a disruption came after the
    /// newest sample (then still Disrupted, with the bound grown since).
    pub fn measured(&mut self, m: Measured) -> ErrorBound {
        if let Some(disrupted_at) = self.disrupted_at {
            if m.newest_sample <= disrupted_at {
                return self.republish(m.at);
            }
        }
        self.disrupted_at = None;
        self.status = ClockStatus::Synchronized;
        let sigmas = self.policy.error_sigmas;
        let bound_ns = m.offset_ns.unsigned_abs() as f64
            + sigmas * m.offset_sigma_ns.max(0.0)
            + m.root_delay_ns.max(0) as f64 / 2.0
            + m.root_dispersion_ns.max(0) as f64
            + self.slewing_in_ns.unsigned_abs() as f64;
        self.slewing_in_counted_ns = self.slewing_in_ns;
        let drift_ppb =
            (sigmas * m.skew_ppb.max(0.0)).ceil() + f64::from(self.policy.drift_floor_ppb);
        self.last = ErrorBound {
            as_of: m.at,
            void_after: m.at.plus_ns(self.policy.void_after_ns),
            bound_ns: bound_ns.ceil() as i64,
            disruption_marker: self.marker,
            max_drift_ppb: drift_ppb.min(f64::from(MAX_DRIFT_PPB)) as u32,
            status: ClockStatus::Synchronized,
            disruption_support: self.policy.disruption_support,
        };
        self.last
    }

    /// The sources are lost: a synchronised bound goes on as FreeRunning (readers grow it
    /// from its as_of); Unknown and Disrupted stay as they are.
    pub fn sources_lost(&mut self) -> ErrorBound {
        if self.status == ClockStatus::Synchronized {
            self.status = ClockStatus::FreeRunning;
            self.last.status = ClockStatus::FreeRunning;
        }
        self.last
    }

    /// A disruption at `at`: Disrupted from now until measured again, the marker changed,
    /// the bound grown to `at` and by what is known of the disruption's size.
    pub fn disrupted(&mut self, at: Monotonic, what: Disruption) -> ErrorBound {
        self.marker = match what {
            Disruption::Vmclock { marker } => marker,
            // With vmclock, readers distrust a marker other than the device's.
            _ if self.policy.disruption_support => self.marker,
            _ => self.marker.wrapping_add(1),
        };
        let grown_ns = self.grown_bound_ns(at);
        self.status = ClockStatus::Disrupted;
        self.disrupted_at = Some(at);
        self.last = ErrorBound {
            as_of: at,
            bound_ns: grown_ns.saturating_add(what.known_size_ns()),
            disruption_marker: self.marker,
            status: ClockStatus::Disrupted,
            ..self.last
        };
        self.last
    }

    /// A correction the discipline did not ask for (a refused step taken as a slew) has
    /// `remaining_ns` left to slew in: until it is absorbed, CLOCK_REALTIME may move that
    /// much more, and the bound says so at once.
    pub fn slewing_in(&mut self, at: Monotonic, remaining_ns: i64) -> ErrorBound {
        self.slewing_in_ns = remaining_ns;
        if self.status == ClockStatus::Unknown {
            return self.last;
        }
        let counted = self.slewing_in_counted_ns.unsigned_abs();
        let wanted = remaining_ns.unsigned_abs();
        if wanted > counted {
            let grown_ns = self.grown_bound_ns(at);
            self.last = ErrorBound {
                as_of: at,
                bound_ns: grown_ns.saturating_add((wanted - counted) as i64),
                ..self.last
            };
            self.slewing_in_counted_ns = remaining_ns;
        }
        self.last
    }

    /// The last bound again as of `at`, grown to it.
    fn republish(&mut self, at: Monotonic) -> ErrorBound {
        let grown_ns = self.grown_bound_ns(at);
        self.last = ErrorBound {
            as_of: at,
            bound_ns: grown_ns,
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
