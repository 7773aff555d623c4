//! The slew engine's driver: carries out the decisions of [`clockguard_core::slew::Slew`]
//! against the kernel (adjtimex ADJ_TICK | ADJ_FREQUENCY through a [`KernelClock`]) from a
//! tokio task, at a steady cadence, and keeps the rate it found in a state file so that a
//! crashed run's slew is undone at the next start. [`SlewHandle`] is its API.

use clockguard_core::slew::FINISH_NS;
pub use clockguard_core::slew::{KernelRate, Slew, SlewConfig, SlewError};
/// What the engine is doing.
pub use clockguard_core::status::SlewStatus;
use clockguard_core::time::Reading;
#[cfg(test)]
use clockguard_core::time::{Raw, Realtime};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

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
        /// What max_correction judges (see `Slew::replace_part`).
        whole_ns: i64,
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
        self.replace_part(total_ns, total_ns).await
    }

    /// [`replace`](Self::replace) with the certain part `total_ns` of a measured
    /// correction of `whole_ns`, which max_correction judges (`Slew::replace_part`).
    pub async fn replace_part(
        &self,
        total_ns: i64,
        whole_ns: i64,
    ) -> Result<SlewStatus, SlewError> {
        let (reply, rx) = oneshot::channel();
        let request = Request::Replace {
            total_ns,
            whole_ns,
            reply,
        };
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
                Some(Request::Replace {
                    total_ns,
                    whole_ns,
                    reply,
                }) => {
                    let was_active = self.core.active();
                    let result = self.replace_part(total_ns, whole_ns);
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

    pub(crate) fn replace_part(
        &mut self,
        total_ns: i64,
        whole_ns: i64,
    ) -> Result<SlewStatus, SlewError> {
        let now = self.kernel.sample();
        let was_active = self.core.active();
        let result = self.core.replace_part(total_ns, whole_ns, now);
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
        let before = self.core.setting();
        if let Some(rate) = self.core.set_base(base, now) {
            // The state file holds the base to restore after a crash: keep it current.
            if self.state_written {
                self.write_state(base);
            }
            if let Err(err) = self.program(rate) {
                error!("setting the base clock rate to {rate:?}: {err}");
                self.core.program_failed(before);
                // The refused base must not be what a crash restores.
                if self.state_written {
                    self.write_state(self.core.base());
                }
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
                self.core.status().absorbed_ns as f64 / 1e9
            );
        }
        self.status_tx.send_replace(self.core.status());
    }

    fn update(&mut self, now: Reading) {
        let before = self.core.setting();
        if let Some(rate) = self.core.update(now) {
            if let Err(err) = self.program(rate) {
                if !self.failing {
                    error!("setting the clock rate to {rate:?}: {err}; retrying");
                }
                self.failing = true;
                self.core.program_failed(before);
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
        if self.core.programmed() != base {
            match self.program(base) {
                Ok(()) => self.core.back_at_base(),
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
    const NOMINAL: KernelRate = KernelRate::NOMINAL;

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
        let saved = KernelRate {
            freq_scaled_ppm: 1234,
            ..NOMINAL
        };
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

    /// A new base the kernel refuses during a slew: the state file (what a crash
    /// restores) keeps the base the kernel runs on, not the refused one.
    #[tokio::test]
    async fn a_refused_base_is_not_what_a_crash_restores() {
        let sim = SimClock::new(NOMINAL, 100_000_000);
        let (_dir, path) = temp_state();
        let handle = spawn(&sim, &path).unwrap();
        handle.replace(10 * S).await.unwrap();
        assert_eq!(read_json(&path), NOMINAL);
        let slewing = sim.rate();
        sim.sim().fail_sets = 1;
        handle.set_base(KernelRate::from_ppm(50.0)).unwrap();
        for _ in 0..1_000 {
            if sim.sim().fail_sets == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(sim.sim().fail_sets, 0, "the new base was never programmed");
        // A status answer comes from the driver's task: the request before it is done.
        handle.replace(10 * S).await.unwrap();
        assert_eq!(read_json(&path), NOMINAL);
        assert_eq!(sim.rate(), slewing);
        handle.shutdown().await;
        assert_eq!(sim.rate(), NOMINAL);
    }
}
