//! The NTP client's decisions, as actions: when each source is polled, what the clock is
//! steered by, what the server tells its clients, when a correction has converged and
//! what `tracking` and `sources` report. It reads no clock and owns no socket: the daemon's
//! shell (`clockguard/src/ntp/client.rs`) reads the clocks, hands them in, and carries out
//! the [`Action`]s (sends, slew-engine requests, the drift file), reporting back what the
//! kernel did with a correction; the simulation tests drive this same code with a
//! simulated clock and network.
//!
//! Times are typed by clock: schedules are on CLOCK_MONOTONIC_RAW (never slewed, so a
//! poll interval does not stretch while the clock is corrected), corrections and the
//! served time on CLOCK_REALTIME.

use std::{collections::VecDeque, net::SocketAddr};

use super::{
    engine::{Engine, SystemEstimate},
    packet::{Leap, NtpTimestamp},
    server::ServerClock,
    source::{leap_text, Rejected, SourceConfig},
};
use crate::{
    record::rfc3339_ns,
    status::{Convergence, SourcesAnswer, Tracking},
    time::{Raw, Reading},
};

/// The fitted frequency is given to the kernel once its standard error is below this
/// (s/s); until then the clock keeps the drift file's (or the kernel's) frequency, because
/// a slope fitted over a few seconds of jittery samples is worse than none.
pub const FREQ_APPLY_MAX_SIGMA: f64 = 10e-6;
/// Corrections smaller than this are not worth a request to the slew engine, ns.
const MIN_CORRECTION_NS: i64 = 1_000;
/// A source is unreachable (its name is looked up again) after this many unanswered
/// requests.
const UNREACHABLE_AFTER_SENT: u64 = 8;
/// Offsets kept for the RMS offset.
const RMS_WINDOW: usize = 32;
/// Within this of NTP time (s), the clock has converged; checked every
/// `CONVERGENCE_CHECK_NS` while a correction runs.
pub const CONVERGED_S: f64 = 1e-3;
const CONVERGENCE_CHECK_NS: i64 = 1_000_000_000;
/// The drift file is rewritten at most this often, ns (CLOCK_MONOTONIC_RAW).
const DRIFT_WRITE_INTERVAL_NS: i64 = 3_600 * 1_000_000_000;
/// Convergences kept for `tracking`.
const CONVERGENCES_KEPT: usize = 8;
/// The leap-second timer fires this long after the leap by the estimate, so that the
/// engine finds it passed, ns.
const LEAP_MARGIN_NS: i64 = 1_000_000;
/// Sources start this far apart (modulo 2 s), so that their first bursts do not collide.
const START_SPREAD_NS: i64 = 100_000_000;
const START_SPREAD_MAX_NS: i64 = 2_000_000_000;
/// Bursts asked for after a disruption are at least this far apart, ns
/// (CLOCK_MONOTONIC_RAW), so that a run of disruptions cannot make clockguard a client
/// that servers rate-limit.
const BURST_MIN_GAP_NS: i64 = 60 * 1_000_000_000;

/// What the shell does for the core, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `request` to `source`; report its kernel transmit stamp with
    /// [`ClientCore::sent_at`].
    Send {
        source: usize,
        cookie: NtpTimestamp,
        request: [u8; 48],
    },
    /// Give the kernel this base frequency (s/s); report the outcome with
    /// [`ClientCore::frequency_set`], which gives the correction to make after it.
    SetFrequency { freq: f64 },
    /// Replace whatever correction the slew engine still has pending with this one: the
    /// reference time − CLOCK_REALTIME, ns. `whole_ns` is what max_correction judges: the
    /// same, except at the first look, where `by_ns` is only the part of the measured
    /// `whole_ns` that is certain. Report the outcome with
    /// [`ClientCore::correction_started`] or [`ClientCore::correction_refused`].
    Slew { by_ns: i64, whole_ns: i64 },
    /// Serve this clock to NTP clients from now on.
    Serve(ServerClock),
    /// Write this to the drift file (chrony's format: `freq_ppm skew_ppm`); report a
    /// failure with [`ClientCore::drift_write_failed`].
    WriteDrift(String),
    /// Tell the clock error bound ([`crate::bound`]) what the discipline knows: the
    /// clock's error as measured now, or None when no source is selected any more.
    Measured(Option<ClockError>),
}

/// The clock's error as the discipline measured it, for the error bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockError {
    /// When (the clocks read for the estimate).
    pub at: Reading,
    /// When the system peer's newest sample was taken.
    pub newest_sample: Raw,
    /// Reference time − CLOCK_REALTIME at `at`, ns: what is still to be slewed.
    pub offset_ns: i64,
    /// The estimate's standard error, ns.
    pub offset_sigma_ns: f64,
    pub root_delay_ns: i64,
    pub root_dispersion_ns: i64,
    /// The frequency estimate's standard error (chronyc's skew), ppb.
    pub skew_ppb: f64,
    /// Samples held back as outliers disagree with the estimate by this much, ns
    /// ([`SystemEstimate::unconfirmed_s`]).
    pub unconfirmed_ns: i64,
}

/// What bringing the clock to the estimate takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adjustment {
    /// Reference time − CLOCK_REALTIME now, ns: the whole correction still to slew.
    pub error_ns: i64,
    /// The base frequency (s/s) to give the kernel: the fitted one once its standard error
    /// is within `FREQ_APPLY_MAX_SIGMA` and it differs from the one applied.
    pub new_freq: Option<f64>,
}

/// The adjustment for `system` when the clocks read `now`; `epoch_ns` is the engine's
/// (local timescale = raw + epoch), `applied_freq` the base frequency given so far.
pub fn adjustment(
    system: &SystemEstimate,
    epoch_ns: i64,
    now: Reading,
    applied_freq: Option<f64>,
) -> Adjustment {
    let target_ns = i128::from(now.raw.ns())
        + i128::from(epoch_ns)
        + (system.offset_at(now.raw) * 1e9).round() as i128;
    let error_ns = (target_ns - i128::from(now.realtime.ns()))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    let new_freq = (system.freq_sigma <= FREQ_APPLY_MAX_SIGMA
        && applied_freq.is_none_or(|f| (f - system.freq).abs() > 1e-9))
    .then_some(system.freq);
    Adjustment { error_ns, new_freq }
}

/// Whether `error_ns` is worth a request to the slew engine, which has `remaining_ns`
/// still to apply.
pub fn correction_wanted(error_ns: i64, remaining_ns: i64) -> bool {
    (error_ns - remaining_ns).abs() >= MIN_CORRECTION_NS
}

/// The slew request for `error_ns`, if it is wanted (see [`correction_wanted`]).
fn slew_correction(error_ns: i64, remaining_ns: i64) -> Option<Action> {
    correction_wanted(error_ns, remaining_ns).then_some(Action::Slew {
        by_ns: error_ns,
        whole_ns: error_ns,
    })
}

/// Source `id`'s poll interval now, ns (it changes with the source's samples and bursts).
fn poll_interval_ns(engine: &Engine, id: usize) -> i64 {
    (engine.sources()[id].interval_s() * 1e9) as i64
}

/// When a source is polled.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    /// None once the source is retired (listed, never polled again).
    next_poll: Option<Raw>,
    last_poll: Raw,
}

/// What `tracking` is made from.
#[derive(Default)]
struct TrackingState {
    /// Offsets (system clock − NTP time, s) measured at each clock update.
    offsets: VecDeque<f64>,
    last_update: Option<Reading>,
    update_interval_s: Option<f64>,
    applied_freq: Option<f64>,
    corrections: u64,
    corrections_refused: u64,
    /// A correction of 1 ms or more in progress: when it started, and the offset then (s).
    converging: Option<(Raw, f64)>,
    next_convergence_check: Option<Raw>,
    /// The latest convergences, oldest first (the last is `last_convergence`): a small
    /// excursion corrected after a large one does not hide how long the large one took.
    convergences: VecDeque<Convergence>,
}

/// The NTP client's state and rules (see the module doc).
pub struct ClientCore {
    engine: Engine,
    schedules: Vec<Schedule>,
    tracking: TrackingState,
    /// The clock is slewed towards NTP time (guard mode); else only measured.
    disciplining: bool,
    /// When the last burst after a disruption was asked for.
    last_burst: Option<Raw>,
    /// The stratum served while unsynchronised (`ntp.local_stratum`).
    local_stratum: Option<u8>,
    /// A too-large correction was refused and said; said again only after one succeeds.
    too_large_alerted: bool,
    last_drift_write: Option<Raw>,
    /// The correction decided with an [`Action::SetFrequency`], to be asked for (or not)
    /// once the frequency is set: reference time − CLOCK_REALTIME, ns.
    correction_after_frequency: Option<i64>,
    /// The slew engine was just asked for a correction from the first look (before any
    /// estimate); `first_look_slewing` once it took it: dropped if the first replies stop
    /// agreeing before an estimate comes.
    first_look_asked: bool,
    first_look_slewing: bool,
}

impl ClientCore {
    /// `epoch_ns`: CLOCK_REALTIME − CLOCK_MONOTONIC_RAW at the start (the engine's local
    /// timescale); `prior_freq`: the drift file's frequency (s/s), the fit's prior.
    pub fn new(
        epoch_ns: i64,
        config: SourceConfig,
        prior_freq: f64,
        disciplining: bool,
        local_stratum: Option<u8>,
    ) -> ClientCore {
        ClientCore {
            engine: Engine::new(epoch_ns, config, prior_freq),
            schedules: Vec::new(),
            tracking: TrackingState::default(),
            disciplining,
            local_stratum,
            last_burst: None,
            too_large_alerted: false,
            last_drift_write: None,
            correction_after_frequency: None,
            first_look_asked: false,
            first_look_slewing: false,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A new source; its first poll is a little after `now`, spread from the others'.
    pub fn add_source(&mut self, name: String, addr: SocketAddr, now: Raw) -> usize {
        let id = self.engine.add_source(name, addr);
        let spread_ns = START_SPREAD_NS * id as i64 % START_SPREAD_MAX_NS;
        self.schedules.push(Schedule {
            next_poll: Some(now.plus_ns(spread_ns)),
            last_poll: now,
        });
        id
    }

    /// The clock was disrupted (a pause, a migration, a step): every source is polled now
    /// and then in a burst, so that the error bound is measured again within seconds
    /// rather than a poll interval. At most once per BURST_MIN_GAP_NS unless `forced` (a
    /// migration: the host says the clock's calibration is void, and nothing else will
    /// measure it again before the next poll); true when done.
    pub fn burst(&mut self, now: Raw, forced: bool) -> bool {
        if !forced
            && self
                .last_burst
                .is_some_and(|at| now.ns_since(at) < BURST_MIN_GAP_NS)
        {
            return false;
        }
        self.last_burst = Some(now);
        for (id, schedule) in self.schedules.iter_mut().enumerate() {
            if schedule.next_poll.is_some() {
                schedule.next_poll = Some(now);
                self.engine.burst(id);
            }
        }
        true
    }

    /// Source `id` stays listed (unreachable) but is no longer polled.
    pub fn retire(&mut self, id: usize) {
        self.schedules[id].next_poll = None;
    }

    /// When source `id` is polled next (None: retired).
    pub fn next_poll(&self, id: usize) -> Option<Raw> {
        self.schedules[id].next_poll
    }

    /// Source `id` has not answered its last requests: time to look its name up again.
    pub fn unreachable(&self, id: usize) -> bool {
        let source = &self.engine.sources()[id];
        source.reach() == 0 && source.counters.sent >= UNREACHABLE_AFTER_SENT
    }

    /// When [`on_timer`](Self::on_timer) is next due: the next poll, the pending leap
    /// second, or the next convergence check.
    pub fn next_wakeup(&self) -> Option<Raw> {
        let polls = self.schedules.iter().filter_map(|s| s.next_poll);
        let leap = self.leap_due();
        polls
            .chain(leap)
            .chain(self.tracking.next_convergence_check)
            .min()
    }

    fn leap_due(&self) -> Option<Raw> {
        self.engine
            .pending_leap_at()
            .map(|at| at.plus_ns(LEAP_MARGIN_NS))
    }

    /// Everything due at `now`: the polls (each with a cookie from `cookie`, which must be
    /// unguessable), the leap second, the convergence check. `slew_remaining_ns`: what the
    /// slew engine still has to apply (None when the clock is not disciplined).
    pub fn on_timer(
        &mut self,
        now: Reading,
        slew_remaining_ns: Option<i64>,
        mut cookie: impl FnMut() -> NtpTimestamp,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut polled = false;
        for id in 0..self.schedules.len() {
            let schedule = &mut self.schedules[id];
            if schedule.next_poll.is_none_or(|due| due > now.raw) {
                continue;
            }
            let interval_ns = poll_interval_ns(&self.engine, id);
            schedule.next_poll = Some(now.raw.plus_ns(interval_ns));
            schedule.last_poll = now.raw;
            polled = true;
            let cookie = cookie();
            // None: denied by a Kiss-o'-Death.
            if let Some(request) = self.engine.request(id, cookie, now.raw) {
                actions.push(Action::Send {
                    source: id,
                    cookie,
                    request,
                });
            }
        }
        // A poll's update below may pass a leap second that is due now: steered then too.
        let leap_pending = self.engine.pending_leap().is_some();
        if polled {
            // A source that stopped answering leaves the selection without a reply to
            // say so.
            let was_synchronised = self.engine.unsynchronised_why().is_none();
            self.engine.update(now.raw);
            if was_synchronised && self.engine.unsynchronised_why().is_some() {
                actions.push(Action::Serve(self.unsynchronised_clock(now)));
                actions.push(Action::Measured(None));
            }
        }
        let leap_passed = leap_pending && self.engine.pending_leap().is_none();
        if leap_passed || self.leap_due().is_some_and(|due| due <= now.raw) {
            self.engine.update(now.raw);
            actions.extend(self.steer(now, slew_remaining_ns));
        }
        if self
            .tracking
            .next_convergence_check
            .is_some_and(|due| due <= now.raw)
        {
            self.check_convergence(now);
        }
        actions
    }

    /// The kernel's time of departure of source `id`'s request with `cookie`.
    pub fn sent_at(&mut self, id: usize, cookie: NtpTimestamp, departed: Raw) {
        self.engine.sent_at(id, cookie, departed);
    }

    /// A datagram from source `id`'s address, received at `arrived`; `now` is read after
    /// it. A sample moves the source's next poll to one (possibly new) interval after its
    /// last and steers the clock.
    pub fn on_datagram(
        &mut self,
        id: usize,
        bytes: &[u8],
        arrived: Raw,
        now: Reading,
        slew_remaining_ns: Option<i64>,
    ) -> Result<Vec<Action>, Rejected> {
        self.engine.receive(id, bytes, arrived)?;
        let interval_ns = poll_interval_ns(&self.engine, id);
        let schedule = &mut self.schedules[id];
        if schedule.next_poll.is_some() {
            schedule.next_poll = Some(schedule.last_poll.plus_ns(interval_ns).max(now.raw));
        }
        Ok(self.steer(now, slew_remaining_ns))
    }

    /// Brings the clock to the estimate: the base rate to the fitted frequency (once it is
    /// known well enough), and the remaining difference to the slew engine, which replaces
    /// whatever correction it still had pending.
    fn steer(&mut self, now: Reading, slew_remaining_ns: Option<i64>) -> Vec<Action> {
        let system = match self.engine.system() {
            Some(system) if self.engine.unsynchronised_why().is_none() => system.clone(),
            _ => {
                let mut actions = vec![
                    Action::Serve(self.unsynchronised_clock(now)),
                    Action::Measured(None),
                ];
                actions.extend(self.steer_by_first_look(now, slew_remaining_ns));
                return actions;
            }
        };
        let Adjustment { error_ns, new_freq } = adjustment(
            &system,
            self.engine.epoch_ns(),
            now,
            self.tracking.applied_freq,
        );
        let offset_s = -(error_ns as f64) / 1e9;
        tracing::debug!(
            "NTP: estimate {:+.9} s ± {:.6} s at {:+.3} ± {:.3} ppm; the clock is {offset_s:+.9} s off",
            system.offset_at(now.raw),
            system.freq_sigma,
            system.freq * 1e6,
            system.freq_sigma * 1e6
        );
        self.record_update(offset_s, now);
        // The estimate takes over whatever the first look asked for.
        self.first_look_slewing = false;
        self.first_look_asked = false;
        let mut actions = vec![
            Action::Serve(self.served_clock(&system, now, slew_remaining_ns)),
            Action::Measured(Some(ClockError {
                at: now,
                newest_sample: system.newest_sample,
                offset_ns: error_ns,
                offset_sigma_ns: system.offset_sigma_at(now.raw) * 1e9,
                root_delay_ns: (system.root_delay_s * 1e9) as i64,
                root_dispersion_ns: (system.root_dispersion_s * 1e9) as i64,
                skew_ppb: system.freq_sigma * 1e9,
                unconfirmed_ns: (system.unconfirmed_s * 1e9).ceil() as i64,
            })),
        ];
        let Some(remaining_ns) = slew_remaining_ns.filter(|_| self.disciplining) else {
            return actions;
        };
        let Some(freq) = new_freq else {
            actions.extend(slew_correction(error_ns, remaining_ns));
            return actions;
        };
        // The slew engine accounts its progress when the base changes: whether the
        // correction is worth a request is decided on what it has left after that.
        self.correction_after_frequency = Some(error_ns);
        actions.push(Action::SetFrequency { freq });
        if self
            .last_drift_write
            .is_none_or(|at| now.raw.ns_since(at) >= DRIFT_WRITE_INTERVAL_NS)
        {
            if let Some(text) = self.drift_text() {
                self.last_drift_write = Some(now.raw);
                actions.push(Action::WriteDrift(text));
            }
        }
        actions
    }

    /// Before the first estimate: a clock far off by the sources' first replies
    /// ([`Engine::first_look`]) is slewed now by the part of the offset they make certain,
    /// so that an 11 s correction starts with the first reply instead of the third (4 s
    /// later; chrony as Debian configures it would step here). The estimate then replaces the
    /// correction; the error bound stays Unknown until it comes. If the replies stop
    /// agreeing first, what is left of it is dropped (selection judges them then).
    /// max_correction judges the whole measured offset, not the certain part. The
    /// convergence is timed from here.
    fn steer_by_first_look(
        &mut self,
        now: Reading,
        slew_remaining_ns: Option<i64>,
    ) -> Option<Action> {
        let remaining_ns = slew_remaining_ns.filter(|_| self.disciplining)?;
        let Some((offset_s, certain_s)) = self.engine.first_look(now.raw) else {
            if !std::mem::take(&mut self.first_look_slewing) {
                return None;
            }
            tracing::info!(
                "NTP: the first replies no longer agree: the rest of their slew is dropped \
                 until a source is selected"
            );
            // Nor does their offset say where the convergence started.
            self.tracking.converging = None;
            self.tracking.next_convergence_check = None;
            return (remaining_ns != 0).then_some(Action::Slew {
                by_ns: 0,
                whole_ns: 0,
            });
        };
        let local_ns = i128::from(now.raw.ns()) + i128::from(self.engine.epoch_ns());
        let realtime_error_ns = |offset_s: f64| {
            (local_ns + (offset_s * 1e9).round() as i128 - i128::from(now.realtime.ns()))
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        };
        let error_ns = realtime_error_ns(certain_s);
        let whole_ns = realtime_error_ns(offset_s);
        if self.tracking.converging.is_none() {
            let off_s = -(whole_ns as f64) / 1e9;
            tracing::info!(
                "NTP: the clock is {off_s:+.6} s off by the first replies; {:+.6} s of it \
                 is certain and slewed while samples are collected",
                -(error_ns as f64) / 1e9
            );
            self.tracking.converging = Some((now.raw, off_s));
            self.tracking.next_convergence_check = Some(now.raw.plus_ns(CONVERGENCE_CHECK_NS));
        }
        if !correction_wanted(error_ns, remaining_ns) {
            return None;
        }
        self.first_look_asked = true;
        Some(Action::Slew {
            by_ns: error_ns,
            whole_ns,
        })
    }

    /// The outcome of [`Action::SetFrequency`]: whether the kernel took `freq` (s/s), and
    /// what the slew engine has still to apply after it, ns. Gives the correction to make
    /// next, if any.
    pub fn frequency_set(
        &mut self,
        freq: f64,
        applied: bool,
        slew_remaining_ns: i64,
    ) -> Option<Action> {
        if applied {
            self.tracking.applied_freq = Some(freq);
        }
        let error_ns = self.correction_after_frequency.take()?;
        slew_correction(error_ns, slew_remaining_ns)
    }

    /// The slew engine took the correction.
    pub fn correction_started(&mut self) {
        self.tracking.corrections += 1;
        self.too_large_alerted = false;
        self.first_look_slewing |= std::mem::take(&mut self.first_look_asked);
    }

    /// The slew engine refused the correction as too large to slew: true when that is
    /// news (the first refusal since a correction last started), to be raised as an alert.
    pub fn correction_refused(&mut self) -> bool {
        self.tracking.corrections_refused += 1;
        self.first_look_asked = false;
        !std::mem::replace(&mut self.too_large_alerted, true)
    }

    /// Writing the drift file failed: it is asked for again with the next frequency.
    pub fn drift_write_failed(&mut self) {
        self.last_drift_write = None;
    }

    /// The drift file's contents (`freq_ppm skew_ppm`, as chrony's), once the frequency is
    /// known well enough to be worth keeping.
    pub fn drift_text(&self) -> Option<String> {
        let system = self.engine.system()?;
        (system.freq_sigma <= FREQ_APPLY_MAX_SIGMA)
            .then(|| format!("{:.6} {:.6}\n", system.freq * 1e6, system.freq_sigma * 1e6))
    }

    /// While a correction of 1 ms or more runs: has the clock come within 1 ms of the
    /// estimate? Then say how long it took.
    fn check_convergence(&mut self, now: Reading) {
        let Some((started, from_offset_s)) = self.tracking.converging else {
            self.tracking.next_convergence_check = None;
            return;
        };
        self.tracking.next_convergence_check = Some(now.raw.plus_ns(CONVERGENCE_CHECK_NS));
        let Some(system) = self.engine.system() else {
            return;
        };
        let error_ns = adjustment(system, self.engine.epoch_ns(), now, None).error_ns;
        if (error_ns as f64 / 1e9).abs() >= CONVERGED_S {
            return;
        }
        let took_s = now.raw.ns_since(started) as f64 / 1e9;
        tracing::info!(
            "NTP: the clock is within {} ms of NTP time, {took_s:.1} s after it was \
             {from_offset_s:+.6} s off (slewed, never stepped)",
            CONVERGED_S * 1e3
        );
        self.tracking.converging = None;
        self.tracking.next_convergence_check = None;
        let kept = &mut self.tracking.convergences;
        if kept.len() == CONVERGENCES_KEPT {
            kept.pop_front();
        }
        kept.push_back(Convergence {
            from_offset_s,
            took_s,
            ended: rfc3339_ns(now.realtime.ns()),
        });
    }

    fn record_update(&mut self, offset_s: f64, now: Reading) {
        let t = &mut self.tracking;
        if offset_s.abs() >= CONVERGED_S && t.converging.is_none() && self.disciplining {
            t.converging = Some((now.raw, offset_s));
            t.next_convergence_check = Some(now.raw.plus_ns(CONVERGENCE_CHECK_NS));
        }
        if t.offsets.len() == RMS_WINDOW {
            t.offsets.pop_front();
        }
        t.offsets.push_back(offset_s);
        if let Some(last) = t.last_update {
            t.update_interval_s = Some(now.raw.ns_since(last.raw) as f64 / 1e9);
        }
        t.last_update = Some(now);
    }

    /// What we serve while a source is selected: its stratum and reference, and as
    /// dispersion also what is still to slew (error the clients should know about).
    fn served_clock(
        &self,
        system: &SystemEstimate,
        now: Reading,
        slew_remaining_ns: Option<i64>,
    ) -> ServerClock {
        let unslewed_s = match slew_remaining_ns.filter(|_| self.disciplining) {
            Some(remaining_ns) => remaining_ns.abs() as f64 / 1e9,
            None => self.tracking.offsets.back().map_or(0.0, |o| o.abs()),
        };
        ServerClock {
            leap: system.leap,
            stratum: system.stratum,
            precision: -20,
            reference_id: system.reference_id,
            reference_ts: NtpTimestamp::from_unix_ns(now.realtime.ns()),
            root_delay_s: system.root_delay_s,
            root_dispersion_s: system.root_dispersion_s + unslewed_s,
        }
    }

    /// What we serve while no source is selected.
    pub fn unsynchronised_clock(&self, now: Reading) -> ServerClock {
        match self.local_stratum {
            Some(stratum) => ServerClock {
                leap: Leap::None,
                stratum,
                precision: -20,
                reference_id: *b"LOCL",
                reference_ts: NtpTimestamp::from_unix_ns(now.realtime.ns()),
                root_delay_s: 0.0,
                root_dispersion_s: 0.0,
            },
            None => ServerClock {
                leap: Leap::Unsynchronized,
                stratum: 16,
                precision: -20,
                reference_id: *b"INIT",
                reference_ts: NtpTimestamp::ZERO,
                root_delay_s: 0.0,
                root_dispersion_s: 0.0,
            },
        }
    }

    /// `tracking` at `now`, but for what the shell owns: the slew engine's status and the
    /// server's counters (`slew` and `server` are None).
    pub fn tracking(&self, now: Reading) -> Tracking {
        let system = self.engine.system();
        let synchronized = system.is_some() && self.engine.unsynchronised_why().is_none();
        // System clock − NTP time: the opposite of the correction still to make.
        let offset_s = system
            .map(|s| -(adjustment(s, self.engine.epoch_ns(), now, None).error_ns as f64) / 1e9);
        let offsets = &self.tracking.offsets;
        let rms = (!offsets.is_empty())
            .then(|| (offsets.iter().map(|o| o * o).sum::<f64>() / offsets.len() as f64).sqrt());
        let peer = system.map(|s| &self.engine.sources()[s.peer]);
        let applied = self.tracking.applied_freq;
        Tracking {
            synchronized,
            unsynchronized_reason: self.engine.unsynchronised_why().map(String::from),
            disciplining: self.disciplining,
            reference: peer.map(|p| p.name.clone()),
            reference_address: peer.map(|p| p.addr.to_string()),
            reference_id: system.map(|s| hex::encode_upper(s.reference_id)),
            stratum: system.map(|s| s.stratum),
            ref_time: self
                .tracking
                .last_update
                .map(|at| rfc3339_ns(at.realtime.ns())),
            offset_s,
            last_offset_s: offsets.back().copied(),
            rms_offset_s: rms,
            frequency_ppm: applied.map(|f| f * 1e6),
            estimated_frequency_ppm: system.map(|s| s.freq * 1e6),
            residual_freq_ppm: system.zip(applied).map(|(s, a)| (s.freq - a) * 1e6),
            skew_ppm: system.map(|s| s.freq_sigma * 1e6),
            root_delay_s: system.map(|s| s.root_delay_s),
            root_dispersion_s: system.map(|s| s.root_dispersion_s),
            update_interval_s: self.tracking.update_interval_s,
            leap_status: system
                .map_or("not synchronised", |s| leap_text(s.leap))
                .into(),
            leap_seconds: self
                .engine
                .leap_seconds()
                .iter()
                .map(super::engine::LeapSecond::report)
                .collect(),
            corrections: self.tracking.corrections,
            corrections_refused: self.tracking.corrections_refused,
            last_convergence: self.tracking.convergences.back().cloned(),
            convergences: self.tracking.convergences.iter().cloned().collect(),
            converging_from_offset_s: self.tracking.converging.map(|(_, from)| from),
            slew: None,
            server: None,
        }
    }

    /// `sources` at `now`; `unresolved`: the configured names that gave no source yet.
    pub fn sources(&self, now: Reading, unresolved: Vec<String>) -> SourcesAnswer {
        let clock_s = (now.realtime_minus_raw_ns() - self.engine.epoch_ns()) as f64 / 1e9;
        let sources = (0..self.engine.sources().len())
            .map(|id| {
                let state = self.engine.source_state(id);
                self.engine.sources()[id].report(now.raw, clock_s, state)
            })
            .collect();
        SourcesAnswer {
            sources,
            unresolved,
            nts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
