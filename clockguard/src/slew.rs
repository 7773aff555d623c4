//! The slew engine: applies a clock correction by running CLOCK_REALTIME faster or slower
//! (adjtimex ADJ_TICK | ADJ_FREQUENCY, as chrony's sys_linux.c does), never by stepping.
//!
//! A negative correction still runs the clock forward, only slower: the slew rate is at
//! most ±100 500 ppm (the kernel's limits), far from the −1e6 ppm that would stop it.
//! [`Slew`] is the sans-IO core (pure state machine); [`SlewHandle`] drives it from a
//! tokio task against a [`KernelClock`].

use clockguard_core::time::Raw;
use clockguard_core::time::Reading;
#[cfg(test)]
use clockguard_core::time::Realtime;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

/// A slew is finished when less than this (ns) is left; the sub-µs residual stays pending
/// and is merged with the next correction.
const FINISH_NS: f64 = 1_000.0;
/// Horizon (ns) of the controller before any update interval has been measured.
const DEFAULT_HORIZON_NS: f64 = 1e9;
/// Shortest horizon (ns) of the controller.
const MIN_HORIZON_NS: f64 = 1e6;
/// Slack (ns) before an interval's progress is blamed on someone else stepping the clock.
const STEP_SLACK_NS: f64 = 1e6;
const MAX_TICK_DELTA_US: i64 = 1_000;
const MAX_FREQ_SCALED: i64 = 500 << 16;

/// The kernel's frequency setting (adjtimex `tick` and `freq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRate {
    /// µs per clock tick of USER_HZ = 100; 10 000 nominal, 9 000..=11 000 accepted;
    /// 1 µs of tick = 100 ppm.
    pub tick_us: i64,
    /// Frequency offset in scaled ppm (ppm × 65536), ±500 ppm (±32 768 000) accepted.
    pub freq_scaled_ppm: i64,
}

impl KernelRate {
    /// Nominal tick, µs.
    pub const NOMINAL_TICK_US: i64 = 10_000;
    /// Largest |rate| representable, ppm: 1000 µs of tick + 500 ppm of freq.
    pub const MAX_PPM: f64 = 100_500.0;

    /// The setting for a total rate of `total_ppm` ppm: the bulk in tick (rounded to the
    /// nearest 100 ppm), the rest in freq; clamped to what the kernel accepts.
    pub fn from_ppm(total_ppm: f64) -> KernelRate {
        let total = total_ppm.clamp(-Self::MAX_PPM, Self::MAX_PPM); // NaN stays NaN → 0 below
        let tick_delta =
            ((total / 100.0).round() as i64).clamp(-MAX_TICK_DELTA_US, MAX_TICK_DELTA_US);
        let rest_ppm = total - (tick_delta * 100) as f64;
        let freq = ((rest_ppm * 65536.0).round() as i64).clamp(-MAX_FREQ_SCALED, MAX_FREQ_SCALED);
        KernelRate {
            tick_us: Self::NOMINAL_TICK_US + tick_delta,
            freq_scaled_ppm: freq,
        }
    }

    /// The total rate this setting represents, ppm (realtime against raw).
    pub fn ppm(&self) -> f64 {
        ((self.tick_us - Self::NOMINAL_TICK_US) * 100) as f64
            + self.freq_scaled_ppm as f64 / 65536.0
    }

    fn is_valid(&self) -> bool {
        (self.tick_us - Self::NOMINAL_TICK_US).abs() <= MAX_TICK_DELTA_US
            && self.freq_scaled_ppm.abs() <= MAX_FREQ_SCALED
    }
}

/// Limits of the slew engine (`[guard]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlewConfig {
    /// Fastest slew, ppm (chrony's maxslewrate: 83 333 ppm = 1 s per 12 s).
    pub max_slew_ppm: f64,
    /// Largest correction pending at once, ns (24 h by default, as Oracle CTSS).
    pub max_correction_ns: i64,
}

impl Default for SlewConfig {
    fn default() -> Self {
        SlewConfig {
            max_slew_ppm: 83_333.0,
            max_correction_ns: 86_400_000_000_000,
        }
    }
}

/// Why a correction was not accepted.
#[derive(Debug, PartialEq)]
pub enum SlewError {
    /// |pending + requested| would exceed max_correction; nothing was changed.
    TooLarge {
        requested_ns: i64,
        pending_ns: i64,
        max_ns: i64,
    },
    /// The engine's task has stopped (after [`SlewHandle::shutdown`]).
    Stopped,
}

impl fmt::Display for SlewError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlewError::TooLarge {
                requested_ns: r,
                pending_ns: p,
                max_ns: m,
            } => {
                let s = |ns: &i64| *ns as f64 / 1e9;
                write!(f, "refusing a correction of {:+.6} s: ", s(r))?;
                write!(f, "with {:+.6} s still pending it exceeds ", s(p))?;
                write!(f, "max_correction ({} s)", s(m))
            }
            SlewError::Stopped => write!(f, "the slew engine has stopped"),
        }
    }
}

impl std::error::Error for SlewError {}

/// What the engine is doing.
pub use clockguard_core::status::SlewStatus;

/// Sans-IO core: pure state machine, no clocks, no syscalls.
///
/// Control: rate = clamp(remaining / horizon, ±max_slew_ppm), a proportional controller
/// whose horizon is the last measured interval between `update` calls (1 s before the
/// first): full speed, then the last interval's worth is absorbed by the next update
/// (dead-beat), so the taper lasts about one interval. Call `update` at a steady cadence.
pub struct Slew {
    config: SlewConfig,
    base: KernelRate,
    /// The rate the kernel runs at (as far as the engine knows).
    programmed: KernelRate,
    /// The base in force when `programmed` was set.
    programmed_base: KernelRate,
    remaining: f64,
    /// The last reading progress was accounted at (an update or a request).
    last: Option<Reading>,
    /// When `update` last ran while active. The horizon is the interval between two
    /// updates, never the part of one since a request in between: a reply arriving
    /// 120 ms into a 250 ms interval would otherwise halve the horizon and double the
    /// rate, finishing in one update a correction the engine holds against a kernel
    /// rate bias (found when the NTP simulation's polls stopped landing just after an
    /// update).
    last_update: Option<Raw>,
    horizon_ns: f64,
    corrections: u64,
    refused: u64,
    external_steps: u64,
    absorbed: f64,
}

impl Slew {
    /// `base`: the rate the clock runs at when not slewing (the kernel's setting when the
    /// daemon started, or what the discipline sets); the kernel is assumed to be at it.
    pub fn new(config: SlewConfig, base: KernelRate) -> Slew {
        Slew {
            config,
            base,
            programmed: base,
            programmed_base: base,
            remaining: 0.0,
            last: None,
            last_update: None,
            horizon_ns: DEFAULT_HORIZON_NS,
            corrections: 0,
            refused: 0,
            external_steps: 0,
            absorbed: 0.0,
        }
    }

    pub fn base(&self) -> KernelRate {
        self.base
    }

    /// Makes `total_ns` the whole correction still to apply, replacing what is pending (the
    /// progress up to `now` is accounted first). Refused like `add` beyond max_correction.
    pub fn replace(&mut self, total_ns: i64, now: Reading) -> Result<(), SlewError> {
        if total_ns.unsigned_abs() > self.config.max_correction_ns.unsigned_abs() {
            self.refused += 1;
            return Err(SlewError::TooLarge {
                requested_ns: total_ns,
                pending_ns: self.remaining_ns(),
                max_ns: self.config.max_correction_ns,
            });
        }
        self.account_until(now);
        self.remaining = total_ns as f64;
        self.corrections += 1;
        Ok(())
    }

    /// Accounts the progress up to `now` between two updates (the controller's horizon
    /// stays: a partial interval says nothing about the update cadence).
    fn account_until(&mut self, now: Reading) {
        if self.active() {
            if let Some(last) = self.last {
                self.account(last, now);
            }
        } else {
            // Idle (the driver does not update then): the update that follows this request
            // measures from it, not from the one that ended the last slew, maybe hours ago.
            self.last_update = None;
        }
        self.last = Some(now);
    }

    /// Accounts the progress since the last sample and returns the rate to program now
    /// when it differs from the one programmed (None: leave it). The caller must program
    /// it right away (the engine assumes it takes effect at `now`).
    pub fn update(&mut self, now: Reading) -> Option<KernelRate> {
        if !self.active() {
            self.last = None;
            return None;
        }
        if let Some(last) = self.last {
            // The first update after the engine became active measures from the request
            // that woke it (`account_until` forgot the last update then). The driver makes
            // that update at the request itself: a zero interval, so the horizon stays.
            let interval_ns = now.raw.ns_since(self.last_update.unwrap_or(last.raw));
            if interval_ns > 0 {
                self.horizon_ns = (interval_ns as f64).max(MIN_HORIZON_NS);
            }
            self.account(last, now);
        }
        self.last = Some(now);
        self.last_update = Some(now.raw);
        self.retarget()
    }

    /// A new base rate (the NTP discipline's frequency estimate): the progress so far is
    /// accounted at the old base, then the rate to program now is returned as by `update`.
    pub fn set_base(&mut self, base: KernelRate, now: Reading) -> Option<KernelRate> {
        self.account_until(now);
        self.base = base;
        self.retarget()
    }

    fn retarget(&mut self) -> Option<KernelRate> {
        let target = if self.remaining.abs() < FINISH_NS {
            self.base
        } else {
            let max = self.config.max_slew_ppm.abs().min(KernelRate::MAX_PPM);
            let rate = (self.remaining / self.horizon_ns * 1e6).clamp(-max, max);
            KernelRate::from_ppm(self.base.ppm() + rate)
        };
        if target == self.programmed {
            return None;
        }
        self.programmed = target;
        self.programmed_base = self.base;
        Some(target)
    }

    /// The interval `last`..`now`: what realtime gained on raw, minus the base's part.
    fn account(&mut self, last: Reading, now: Reading) {
        let d_raw = i128::from(now.raw.ns()) - i128::from(last.raw.ns());
        if d_raw <= 0 {
            return;
        }
        let gained = (i128::from(now.realtime.ns()) - i128::from(now.raw.ns()))
            - (i128::from(last.realtime.ns()) - i128::from(last.raw.ns()));
        let ns_per_ppm = d_raw as f64 * 1e-6;
        let slew_ppm = self.programmed.ppm() - self.programmed_base.ppm();
        let measured = gained as f64 - self.programmed_base.ppm() * ns_per_ppm;
        let expected = slew_ppm * ns_per_ppm;
        let mut progress = measured;
        let off = measured - expected;
        if off.abs() > slew_ppm.abs() * ns_per_ppm * 1.1 + STEP_SLACK_NS {
            self.external_steps += 1;
            warn!(
                "clock stepped by another party during a slew (~{:+.6} s)",
                off / 1e9
            );
            progress = expected;
        }
        self.remaining -= progress;
        self.absorbed += progress;
    }

    /// The kernel's setting is not what the last `update` returned but `previous`.
    fn program_failed(&mut self, previous: KernelRate) {
        self.programmed = previous;
    }

    /// Correction still pending, ns.
    pub fn remaining_ns(&self) -> i64 {
        self.remaining.round() as i64
    }

    /// A correction is pending, or the kernel is not yet back at the base rate.
    pub fn active(&self) -> bool {
        self.remaining.abs() >= FINISH_NS || self.programmed != self.base
    }

    pub fn status(&self) -> SlewStatus {
        let active = self.active();
        let rate_ppm = self.programmed.ppm() - self.programmed_base.ppm();
        let eta_s = active.then(|| {
            let same_way = rate_ppm != 0.0 && rate_ppm.signum() == self.remaining.signum();
            let max = self.config.max_slew_ppm.abs().min(KernelRate::MAX_PPM);
            // 1 ppm = 1000 ns per s.
            self.remaining.abs() / (if same_way { rate_ppm.abs() } else { max } * 1e3)
        });
        SlewStatus {
            active,
            remaining_ns: self.remaining_ns(),
            rate_ppm,
            corrections: self.corrections,
            refused: self.refused,
            absorbed_ns: self.absorbed.round() as i64,
            external_steps: self.external_steps,
            eta_s,
        }
    }
}

/// The kernel the driver slews: clocks and the frequency setting.
pub trait KernelClock: Send + 'static {
    fn sample(&mut self) -> Reading;
    /// The current setting (adjtimex modes = 0 in the real one).
    fn read_rate(&mut self) -> io::Result<KernelRate>;
    /// Programs `rate` (adjtimex ADJ_TICK | ADJ_FREQUENCY in the real one).
    fn set_rate(&mut self, rate: KernelRate) -> io::Result<()>;
}

/// The real kernel: adjtimex(2). Only ever used by the daemon (never in cargo test).
pub struct LinuxClock;

impl KernelClock for LinuxClock {
    fn sample(&mut self) -> Reading {
        crate::clock::reading()
    }

    fn read_rate(&mut self) -> io::Result<KernelRate> {
        let mut tx = clockguard_sys::timex();
        clockguard_sys::adjtimex(&mut tx)?;
        Ok(KernelRate {
            tick_us: tx.tick as i64,
            freq_scaled_ppm: tx.freq as i64,
        })
    }

    fn set_rate(&mut self, rate: KernelRate) -> io::Result<()> {
        let mut tx = clockguard_sys::timex();
        tx.modes = libc::ADJ_TICK | libc::ADJ_FREQUENCY;
        tx.tick = rate.tick_us as _;
        tx.freq = rate.freq_scaled_ppm as _;
        clockguard_sys::adjtimex(&mut tx).map(drop)
    }
}

enum Request {
    Replace {
        total_ns: i64,
        reply: oneshot::Sender<Result<SlewStatus, SlewError>>,
    },
    SetBase {
        base: KernelRate,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle the daemon keeps. Requests go to a tokio task that owns the core and the
/// [`KernelClock`]; when every handle is dropped the task restores the base rate and ends.
#[derive(Clone)]
pub struct SlewHandle {
    requests: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<SlewStatus>,
}

impl SlewHandle {
    /// Reads the base rate from the kernel and starts the task (needs a tokio runtime);
    /// `interval` is the update period while slewing (250 ms in the daemon).
    ///
    /// `state_file` (best on a tmpfs such as /run) holds the base rate as JSON while a
    /// slew runs. If it exists at spawn, a previous run died mid-slew and left the kernel
    /// fast: the rate recorded there is restored and becomes the base.
    pub fn spawn<K: KernelClock>(
        config: SlewConfig,
        mut kernel: K,
        interval: Duration,
        state_file: Option<PathBuf>,
    ) -> io::Result<SlewHandle> {
        let mut base = kernel.read_rate()?;
        if let Some(path) = &state_file {
            if let Some(saved) = read_state(path)? {
                kernel.set_rate(saved)?;
                warn!(
                    "a previous run died mid-slew ({} exists): restored the base rate {:?} \
                     ({:+.3} ppm), the kernel was at {:?} ({:+.3} ppm)",
                    path.display(),
                    saved,
                    saved.ppm(),
                    base,
                    base.ppm()
                );
                if let Err(err) = std::fs::remove_file(path) {
                    error!("removing {}: {err}", path.display());
                }
                base = saved;
            }
        }
        let (driver, status) = Driver::new(Slew::new(config, base), kernel, state_file);
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(driver.run(rx, interval.max(Duration::from_millis(1))));
        Ok(SlewHandle { requests, status })
    }

    /// Makes `total_ns` ns the whole correction still to apply (positive: the clock must
    /// gain it), replacing what is pending: callers measure the clock as it is now, so
    /// their new figure already includes what was slewed so far.
    pub async fn replace(&self, total_ns: i64) -> Result<SlewStatus, SlewError> {
        let (reply, rx) = oneshot::channel();
        let request = Request::Replace { total_ns, reply };
        match self.requests.send(request) {
            Ok(()) => rx.await.unwrap_or(Err(SlewError::Stopped)),
            Err(_) => Err(SlewError::Stopped),
        }
    }

    /// Makes `base` the rate the clock runs at when not slewing (the discipline's
    /// frequency); a slew in progress continues on top of it.
    pub fn set_base(&self, base: KernelRate) -> Result<(), SlewError> {
        self.requests
            .send(Request::SetBase { base })
            .map_err(|_| SlewError::Stopped)
    }

    /// The latest status.
    pub fn status(&self) -> SlewStatus {
        self.status.borrow().clone()
    }

    /// Stops the task; the base rate is restored before this returns.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.requests.send(Request::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Ok(None) when there is no state file.
fn read_state(path: &Path) -> io::Result<Option<KernelRate>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    match serde_json::from_slice::<KernelRate>(&bytes) {
        Ok(rate) if rate.is_valid() => Ok(Some(rate)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a valid slew state file", path.display()),
        )),
    }
}

/// The engine's task: the core, the kernel it programs and the state file. [`Driver::run`]
/// is its loop; the NTP simulation tests call `replace`, `set_base` and `tick` directly, on
/// the schedule `run` keeps (a tick every interval while active, the first one interval
/// after becoming active).
pub(crate) struct Driver<K: KernelClock> {
    core: Slew,
    kernel: K,
    state_file: Option<PathBuf>,
    state_written: bool,
    failing: bool,
    stopped: bool,
    status_tx: watch::Sender<SlewStatus>,
}

impl<K: KernelClock> Driver<K> {
    pub(crate) fn new(
        core: Slew,
        kernel: K,
        state_file: Option<PathBuf>,
    ) -> (Driver<K>, watch::Receiver<SlewStatus>) {
        let (status_tx, status) = watch::channel(core.status());
        let driver = Driver {
            core,
            kernel,
            state_file,
            state_written: false,
            failing: false,
            stopped: false,
            status_tx,
        };
        (driver, status)
    }

    #[cfg(test)]
    pub(crate) fn core(&self) -> &Slew {
        &self.core
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let request = if self.core.active() {
                tokio::select! {
                    request = rx.recv() => request,
                    _ = ticker.tick() => {
                        self.tick();
                        continue;
                    }
                }
            } else {
                rx.recv().await // idle: no ticking at all
            };
            match request {
                Some(Request::Replace { total_ns, reply }) => {
                    let was_active = self.core.active();
                    let result = self.replace(total_ns);
                    if !was_active && self.core.active() {
                        ticker.reset(); // first update one interval from now
                    }
                    let _ = reply.send(result);
                }
                Some(Request::SetBase { base }) => {
                    let was_active = self.core.active();
                    self.set_base(base);
                    if !was_active && self.core.active() {
                        ticker.reset();
                    }
                }
                Some(Request::Shutdown { reply }) => {
                    self.stop();
                    let _ = reply.send(());
                    return;
                }
                None => return self.stop(),
            }
        }
    }

    pub(crate) fn replace(&mut self, total_ns: i64) -> Result<SlewStatus, SlewError> {
        let now = self.kernel.sample();
        let was_active = self.core.active();
        let result = self.core.replace(total_ns, now);
        match &result {
            // The caller reports the outcome; this is for debugging the engine.
            Ok(()) => debug!("correction of {:+} ns accepted", total_ns),
            Err(err) => debug!("{err}"),
        }
        // While active, the new total is picked up at the next tick (a mid-interval update
        // would shorten the controller's horizon).
        if result.is_ok() && !was_active {
            self.update(now);
        }
        let status = self.core.status();
        self.status_tx.send_replace(status.clone());
        result.map(|()| status)
    }

    pub(crate) fn set_base(&mut self, base: KernelRate) {
        if !base.is_valid() || base == self.core.base() {
            return;
        }
        let now = self.kernel.sample();
        let previous = (self.core.programmed, self.core.base);
        if let Some(rate) = self.core.set_base(base, now) {
            // The state file holds the base to restore after a crash: keep it current.
            if self.state_written {
                self.write_state(base);
            }
            if let Err(err) = self.program(rate) {
                error!("setting the base clock rate to {rate:?}: {err}");
                self.core.program_failed(previous.0);
                self.core.base = previous.1;
                return;
            }
        }
        debug!("base rate {:+.3} ppm", base.ppm());
        self.status_tx.send_replace(self.core.status());
    }

    pub(crate) fn tick(&mut self) {
        let now = self.kernel.sample();
        self.update(now);
        if !self.core.active() {
            info!(
                "slew finished ({:+.6} s absorbed in all)",
                self.core.absorbed / 1e9
            );
        }
        self.status_tx.send_replace(self.core.status());
    }

    fn update(&mut self, now: Reading) {
        let previous = self.core.programmed;
        if let Some(rate) = self.core.update(now) {
            if let Err(err) = self.program(rate) {
                if !self.failing {
                    error!("setting the clock rate to {rate:?}: {err}; retrying");
                }
                self.failing = true;
                self.core.program_failed(previous);
            } else if std::mem::take(&mut self.failing) {
                info!("setting the clock rate works again");
            }
        }
    }

    /// set_rate, with the state file written before leaving the base and removed after
    /// returning to it.
    fn program(&mut self, rate: KernelRate) -> io::Result<()> {
        let base = self.core.base();
        if rate != base && !self.state_written {
            self.write_state(base);
        }
        self.kernel.set_rate(rate)?;
        if rate == base {
            self.remove_state();
        }
        Ok(())
    }

    fn write_state(&mut self, base: KernelRate) {
        let Some(path) = &self.state_file else { return };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let json = serde_json::to_vec(&base).expect("KernelRate serializes");
        match std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => self.state_written = true,
            Err(err) => error!("writing the slew state file {}: {err}", path.display()),
        }
    }

    fn remove_state(&mut self) {
        let Some(path) = &self.state_file else { return };
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                error!("removing the slew state file {}: {err}", path.display());
            }
            _ => self.state_written = false,
        }
    }

    /// Back to the base rate (idempotent; also run on drop, e.g. when the runtime ends).
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let pending = self.core.remaining_ns();
        if pending.abs() as f64 >= FINISH_NS {
            warn!(
                "slew stopped with {:+.6} s still pending",
                pending as f64 / 1e9
            );
        }
        let base = self.core.base();
        if self.core.programmed != base {
            match self.program(base) {
                Ok(()) => (self.core.programmed, self.core.programmed_base) = (base, base),
                Err(err) => error!("restoring the base clock rate {base:?}: {err}"),
            }
        }
        let status = SlewStatus {
            active: false,
            eta_s: None,
            ..self.core.status()
        };
        self.status_tx.send_replace(status);
    }
}

impl<K: KernelClock> Drop for Driver<K> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex, MutexGuard};

    const S: i64 = 1_000_000_000;
    const NOMINAL: KernelRate = kr(10_000, 0);

    const fn kr(tick_us: i64, freq_scaled_ppm: i64) -> KernelRate {
        KernelRate {
            tick_us,
            freq_scaled_ppm,
        }
    }

    #[derive(Default)]
    struct Sim {
        now: (i64, i64), // (raw, realtime) ns
        frac: i128,      // fraction of a ns gained, in 1 / (65536e6) ns
        rate: Option<KernelRate>,
        step_ns: i64,
        sets: Vec<KernelRate>,
        fail_sets: u32,
    }

    /// Simulated kernel: realtime advances on raw at the set rate, integrated exactly;
    /// every sample() first advances raw by `step_ns`.
    #[derive(Clone)]
    struct SimClock(Arc<Mutex<Sim>>);

    impl SimClock {
        fn new(rate: KernelRate, step_ns: i64) -> SimClock {
            let now = (1_000 * S, 1_700_000_000 * S);
            let sim = Sim {
                now,
                rate: Some(rate),
                step_ns,
                ..Sim::default()
            };
            SimClock(Arc::new(Mutex::new(sim)))
        }
        fn sim(&self) -> MutexGuard<'_, Sim> {
            self.0.lock().unwrap()
        }
        fn rate(&self) -> KernelRate {
            self.sim().rate.unwrap()
        }
    }

    impl KernelClock for SimClock {
        fn sample(&mut self) -> Reading {
            let mut sim = self.sim();
            let (d, rate) = (sim.step_ns, sim.rate.unwrap());
            let scaled = (rate.tick_us - 10_000) * 100 * 65536 + rate.freq_scaled_ppm;
            let (acc, den) = (
                sim.frac + i128::from(d) * i128::from(scaled),
                65_536_000_000i128,
            );
            sim.frac = acc.rem_euclid(den);
            sim.now.0 += d;
            sim.now.1 += d + acc.div_euclid(den) as i64;
            Reading {
                raw: Raw::from_ns(sim.now.0),
                realtime: Realtime::from_ns(sim.now.1),
            }
        }
        fn read_rate(&mut self) -> io::Result<KernelRate> {
            Ok(self.rate())
        }
        fn set_rate(&mut self, rate: KernelRate) -> io::Result<()> {
            let mut sim = self.sim();
            if sim.fail_sets > 0 {
                sim.fail_sets -= 1;
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            assert!(rate.is_valid() && rate.ppm() > -1e6, "{rate:?}");
            sim.rate = Some(rate);
            sim.sets.push(rate);
            Ok(())
        }
    }

    /// Drives the core through a correction until it is idle; `jump` steps realtime by
    /// (after update n, ns). Returns the first and last samples.
    fn run(core: &mut Slew, sim: &mut SimClock, delta_ns: i64, jump: (usize, i64)) -> [Reading; 2] {
        let start = sim.sample();
        core.replace(delta_ns, start).unwrap();
        let mut now = start;
        for n in 0..1_000_000 {
            if let Some(rate) = core.update(now) {
                sim.set_rate(rate).unwrap();
            }
            if !core.active() {
                return [start, now];
            }
            if n == jump.0 {
                sim.sim().now.1 += jump.1;
            }
            let next = sim.sample();
            assert!(
                next.realtime.ns() > now.realtime.ns(),
                "realtime went backward"
            );
            now = next;
        }
        panic!("slew not finished: {:?}", core.status());
    }

    /// (raw time taken in s, realtime − raw gained in ns).
    fn took_gained([a, b]: [Reading; 2]) -> (f64, i64) {
        let gained = (b.realtime.ns() - b.raw.ns()) - (a.realtime.ns() - a.raw.ns());
        ((b.raw.ns() - a.raw.ns()) as f64 / 1e9, gained)
    }

    #[test]
    fn kernel_rate_from_ppm_splits_and_clamps() {
        assert_eq!(KernelRate::from_ppm(83_333.0), kr(10_833, 33 << 16));
        assert_eq!(KernelRate::from_ppm(-83_333.0), kr(9_167, -33 << 16));
        assert_eq!(KernelRate::from_ppm(0.0), NOMINAL);
        assert_eq!(KernelRate::from_ppm(f64::NAN), NOMINAL);
        assert_eq!(KernelRate::from_ppm(12.5), kr(10_000, 819_200));
        assert_eq!(KernelRate::from_ppm(200_000.0), kr(11_000, 500 << 16));
        assert_eq!(KernelRate::from_ppm(-200_000.0), kr(9_000, -500 << 16));
        for i in -2_010_000..=2_010_000 {
            let ppm = f64::from(i) * 0.05 + 0.0123;
            let k = KernelRate::from_ppm(ppm);
            assert!(k.is_valid(), "{k:?}");
            assert!(k.freq_scaled_ppm.abs() <= 50 << 16 || ppm.abs() > 100_050.0);
            let want = ppm.clamp(-KernelRate::MAX_PPM, KernelRate::MAX_PPM);
            assert!((k.ppm() - want).abs() <= 1.0 / 65536.0, "{ppm} → {k:?}");
            assert!(k.ppm().abs() < 1e6); // the clock can never run backward
        }
    }

    #[test]
    fn plus_2s_finishes_in_24s() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let (took, gained) = took_gained(run(&mut core, &mut sim, 2 * S, (usize::MAX, 0)));
        assert!((took - 24.0).abs() < 24.0 * 0.03, "took {took} s");
        assert!((gained - 2 * S).abs() <= 1_000, "gained {gained}");
        assert_eq!(sim.rate(), NOMINAL);
        let st = core.status();
        assert!(
            !st.active && st.eta_s.is_none() && st.rate_ppm == 0.0,
            "{st:?}"
        );
        assert_eq!((st.corrections, st.external_steps), (1, 0));
        assert!((st.absorbed_ns - 2 * S).abs() <= 1_000);
    }

    #[test]
    fn minus_11s_never_goes_backward() {
        let base = KernelRate::from_ppm(-15.5);
        let mut sim = SimClock::new(base, 1_000_000); // sampled every 1 ms
        let mut core = Slew::new(SlewConfig::default(), base);
        let (took, gained) = took_gained(run(&mut core, &mut sim, -11 * S, (usize::MAX, 0)));
        assert!((took - 132.0).abs() < 132.0 * 0.01, "took {took} s");
        let slewed = gained as f64 - base.ppm() * took * 1e3;
        assert!((slewed + 11e9).abs() <= 1_000.0, "slewed {slewed}");
        assert_eq!(sim.rate(), base);
        assert!(sim.sim().sets.iter().all(|r| r.ppm() > -100_000.0));
    }

    #[test]
    fn refuses_too_large_and_replaces() {
        let config = SlewConfig {
            max_slew_ppm: 83_333.0,
            max_correction_ns: 10 * S,
        };
        let mut core = Slew::new(config, NOMINAL);
        let now = Reading {
            raw: Raw::from_ns(0),
            realtime: Realtime::from_ns(0),
        };
        assert_eq!(core.replace(S / 2, now), Ok(()));
        let err = core.replace(12 * S, now).unwrap_err();
        let (requested_ns, pending_ns, max_ns) = (12 * S, S / 2, 10 * S);
        assert_eq!(
            err,
            SlewError::TooLarge {
                requested_ns,
                pending_ns,
                max_ns
            }
        );
        let msg = "refusing a correction of +12.000000 s: with +0.500000 s still pending it \
                   exceeds max_correction (10 s)";
        assert_eq!(err.to_string(), msg);
        assert!(core.replace(i64::MIN, now).is_err());
        let st = core.status();
        assert_eq!((st.remaining_ns, st.corrections, st.refused), (S / 2, 1, 2));
        // A new total replaces the pending one; it is not added to it.
        assert_eq!(core.replace(-3 * S, now), Ok(()));
        assert_eq!(core.replace(-10 * S, now), Ok(()));
        assert_eq!(core.remaining_ns(), -10 * S);
        assert!(core.replace(-10 * S - 1, now).is_err());
        assert_eq!(core.remaining_ns(), -10 * S);
    }

    /// A kernel that runs 67.75 ppm fast (as the test VM's did) and a correction the
    /// engine holds against it: updates every 250 ms, and a new base rate 120 ms into one
    /// interval. The update after it still targets the 250 ms cadence (the rate that holds
    /// the bias); before the fix it took 130 ms as its horizon, nearly doubled the rate
    /// and finished the held correction, leaving the bias to run free until the next NTP
    /// sample.
    #[test]
    fn a_request_between_updates_does_not_shorten_the_horizon() {
        const MS: i64 = 1_000_000;
        let bias_ppm = 67.75;
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let reading = |raw_ns: i64, realtime_ppm: f64| Reading {
            raw: Raw::from_ns(raw_ns),
            realtime: Realtime::from_ns(raw_ns + (raw_ns as f64 * realtime_ppm * 1e-6) as i64),
        };
        // Held: −17 µs pending, programmed at −67.75 ppm, which the bias cancels, so
        // realtime keeps pace with raw and nothing is absorbed.
        core.replace(-16_937, reading(0, 0.0)).unwrap();
        let first = core.update(reading(250 * MS, 0.0)).expect("slews");
        let held_ppm = first.ppm() - NOMINAL.ppm();
        assert!((held_ppm + bias_ppm).abs() < 0.1, "{held_ppm} ppm");
        // From here the kernel runs at the programmed rate + the bias: realtime = raw.
        assert_eq!(core.update(reading(500 * MS, 0.0)), None);
        let rebased = core.set_base(NOMINAL, reading(620 * MS, 0.0));
        assert_eq!(rebased, None, "the same base: nothing to reprogram");
        let after = core.update(reading(750 * MS, 0.0));
        assert_eq!(
            after, None,
            "the horizon stayed 250 ms: the held rate stays"
        );
        assert!(
            (core.remaining_ns() + 16_937).abs() < 10,
            "{}",
            core.remaining_ns()
        );
    }

    /// The first update after an idle spell: the driver updates right at the request that
    /// wakes the engine, and the horizon must stay the update cadence (250 ms here), not
    /// become the time since the last slew ended (100 s), which would start at ~0 ppm.
    #[test]
    fn a_slew_after_an_idle_spell_starts_at_the_update_cadence() {
        const MS: i64 = 1_000_000;
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let at = |raw_ns: i64| Reading {
            raw: Raw::from_ns(raw_ns),
            realtime: Realtime::from_ns(raw_ns),
        };
        core.replace(100_000, at(0)).unwrap();
        core.update(at(0));
        core.update(at(250 * MS));
        // Done: nothing left, back at the base, idle.
        core.replace(0, at(300 * MS)).unwrap();
        core.update(at(500 * MS));
        assert!(!core.active());
        core.replace(-50_000, at(100_500 * MS)).unwrap();
        let rate = core.update(at(100_500 * MS)).expect("slews");
        let slew_ppm = rate.ppm() - NOMINAL.ppm();
        // −50 µs over 250 ms.
        assert!((slew_ppm + 200.0).abs() < 1.0, "{slew_ppm} ppm");
    }

    #[test]
    fn a_new_base_rate_is_programmed_and_a_slew_runs_on_top_of_it() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        // Idle: the new base is programmed at once and the engine stays idle.
        let base = KernelRate::from_ppm(12.5);
        assert_eq!(core.set_base(base, sim.sample()), Some(base));
        sim.set_rate(base).unwrap();
        assert!(!core.active());
        // A slew of +1 s on top of the base ends back at the base, having absorbed the
        // second; the base's own rate is not counted as progress.
        let [first, last] = run(&mut core, &mut sim, S, (usize::MAX, 0));
        assert_eq!(sim.rate(), base);
        let (took, gained) = took_gained([first, last]);
        let base_part = base.ppm() * took * 1e3;
        assert!(
            (gained as f64 - base_part - S as f64).abs() < 2_000.0,
            "gained {gained}"
        );
        // A base change in the middle of a slew: accounted at the old base up to the
        // change, and the slew still absorbs exactly what was asked.
        let start = sim.sample();
        core.replace(S, start).unwrap();
        let mut now = start;
        let new_base = KernelRate::from_ppm(-40.0);
        for n in 0..1_000 {
            let rate = if n == 10 {
                core.set_base(new_base, now)
            } else {
                core.update(now)
            };
            if let Some(rate) = rate {
                sim.set_rate(rate).unwrap();
            }
            if !core.active() {
                break;
            }
            now = sim.sample();
        }
        assert_eq!(sim.rate(), new_base);
        assert_eq!(core.status().external_steps, 0);
        let (_, gained) = took_gained([start, now]);
        // Base parts: 10 updates of 250 ms at +12.5 ppm, the rest at −40 ppm.
        let rest_s = (now.raw.ns() - start.raw.ns()) as f64 / 1e9 - 2.5;
        let base_part = 12.5 * 2.5 * 1e3 - 40.0 * rest_s * 1e3;
        assert!(
            (gained as f64 - base_part - S as f64).abs() < 2_000.0,
            "gained {gained}"
        );
    }

    #[test]
    fn external_step_is_not_progress() {
        let mut sim = SimClock::new(NOMINAL, 250_000_000);
        let mut core = Slew::new(SlewConfig::default(), NOMINAL);
        let (took, gained) = took_gained(run(&mut core, &mut sim, 2 * S, (20, 5 * S)));
        let st = core.status();
        assert!(!st.active && st.external_steps == 1, "{st:?}");
        assert!((gained - 7 * S).abs() <= 1_000, "gained {gained}");
        assert!((took - 24.0).abs() < 24.0 * 0.03, "took {took} s");
    }

    /// A state file path in a fresh directory under std::env::temp_dir().
    fn temp_state() -> (tempfile::TempDir, PathBuf) {
        let mut builder = tempfile::Builder::new();
        let dir = builder
            .prefix("clockguard-slew-")
            .tempdir_in(std::env::temp_dir());
        let dir = dir.unwrap();
        let path = dir.path().join("slew.json");
        (dir, path)
    }

    /// Real tokio time (tokio's test-util, for paused time, is not enabled): ticks 1 ms
    /// apart, the simulated raw clock advances 100 ms per sample.
    fn spawn(sim: &SimClock, path: &Path) -> io::Result<SlewHandle> {
        let interval = Duration::from_millis(1);
        SlewHandle::spawn(
            SlewConfig::default(),
            sim.clone(),
            interval,
            Some(path.into()),
        )
    }

    async fn wait_idle(handle: &SlewHandle) -> SlewStatus {
        for _ in 0..10_000 {
            match handle.status() {
                st if !st.active => return st,
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        panic!("slew did not finish: {:?}", handle.status());
    }

    fn read_json(path: &Path) -> KernelRate {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn driver_slews_and_writes_state() {
        let base = KernelRate::from_ppm(20.0);
        let sim = SimClock::new(base, 100_000_000);
        let (_dir, path) = temp_state();
        let handle = spawn(&sim, &path).unwrap();
        let st = handle.replace(2 * S).await.unwrap();
        assert!(st.active && st.rate_ppm > 83_000.0, "{st:?}");
        assert_eq!(read_json(&path), base);
        let st = wait_idle(&handle).await;
        assert!((st.absorbed_ns - 2 * S).abs() <= 1_000, "{st:?}");
        assert_eq!(sim.sim().sets.last(), Some(&base));
        assert!(!path.exists());
        assert!(handle.replace(100 * 86_400 * S).await.is_err());
        assert_eq!(handle.status().refused, 1);
        handle.shutdown().await;
        assert_eq!(handle.replace(S).await, Err(SlewError::Stopped));
    }

    #[tokio::test]
    async fn driver_restores_rate_left_by_crashed_run() {
        let saved = kr(10_000, 1234);
        let (_dir, path) = temp_state();
        std::fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
        let sim = SimClock::new(KernelRate::from_ppm(83_333.0), 100_000_000);
        let handle = spawn(&sim, &path).unwrap();
        assert_eq!(sim.sim().sets, vec![saved]);
        assert!(!path.exists());
        handle.replace(-S).await.unwrap();
        wait_idle(&handle).await;
        assert_eq!(sim.rate(), saved);
        std::fs::write(&path, "garbage").unwrap();
        assert!(spawn(&sim, &path).is_err());
    }

    #[tokio::test]
    async fn driver_retries_failed_set_rate_and_restores_on_shutdown() {
        let sim = SimClock::new(NOMINAL, 100_000_000);
        let (_dir, path) = temp_state();
        let handle = spawn(&sim, &path).unwrap();
        sim.sim().fail_sets = 3;
        let st = handle.replace(S).await.unwrap();
        assert_eq!(st.rate_ppm, 0.0); // not programmed yet
        let st = wait_idle(&handle).await;
        assert!(
            (st.absorbed_ns - S).abs() <= 1_000 && st.external_steps == 0,
            "{st:?}"
        );
        assert_eq!(sim.rate(), NOMINAL);
        handle.replace(10 * S).await.unwrap();
        assert!(path.exists() && sim.rate() != NOMINAL);
        handle.shutdown().await;
        assert_eq!(sim.rate(), NOMINAL);
        assert!(!path.exists());
        let st = handle.status();
        assert!(
            !st.active && st.rate_ppm == 0.0 && st.remaining_ns > 8 * S,
            "{st:?}"
        );
    }
}
