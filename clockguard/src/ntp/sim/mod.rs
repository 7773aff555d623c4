//! Closed-loop simulation of the NTP client: a simulated world (true time; a local raw
//! oscillator with a frequency error that wanders; a CLOCK_REALTIME that runs on it at the
//! rate the simulated kernel is programmed to), simulated servers answering the engine's
//! requests over a simulated network (delay, jitter, asymmetry, loss), and the client's
//! own code in the loop: [`ClientCore`], which decides when to poll and how to steer (the
//! daemon's shell runs the same core), and the slew engine's [`Driver`] for the kernel
//! rate, ticked every 250 ms while active as its task does. The simulation carries out
//! the core's actions as the shell does.
//!
//! Deterministic (seeded PRNG) and event driven: time jumps from one event to the next (a
//! datagram arriving, a poll, a slew update, an observation), so hours take milliseconds.
//! No sockets, no real clock.
//!
//! At every event realtime must have increased strictly and at a rate within the kernel's
//! slew limits (no step); while the slew engine is active there is an event every 1 ms.
//! realtime − true time is recorded every second.
//!
//! The world follows clknetsim, with which chrony is tested: delays are a base plus an
//! exponential with the jitter as its mean, and the oscillator's frequency takes a
//! normal random-walk step every second (clknetsim's default wander: 1e-9).

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use clockguard_core::{
    bound::{self, Bound, Measured},
    clockbound::ClockStatus,
    ntp::client::{Action, ClientCore},
    time::{Monotonic, Raw, Reading, Realtime},
};

use super::{
    packet::{Leap, Mode, NtpShort, NtpTimestamp, Packet},
    server::{self, RateLimiter, Response, ServerClock},
    source::{SourceConfig, SourceCounters},
};
use crate::slew::{Driver, KernelClock, KernelRate, Slew, SlewConfig};

mod scenarios;
mod world;

use world::*;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const US: i64 = 1_000;
const HOUR: i64 = 3_600 * S;
/// True time at the start of every run, Unix ns (2026-01-15T12:00:00Z).
const T0_UNIX_NS: i64 = 1_768_478_400 * S;
/// CLOCK_MONOTONIC_RAW at the start, ns.
const RAW0_NS: i64 = 1_000 * S;
/// The slew engine's update period, as the daemon runs it.
const SLEW_INTERVAL_NS: i64 = crate::daemon::SLEW_INTERVAL.as_nanos() as i64;
/// Time a simulated server takes from a request to its reply, ns.
const SERVER_PROCESSING_NS: i64 = 20 * US;
/// clknetsim's default oscillator wander (frequency random-walk step per second).
const WANDER: f64 = 1e-9;

#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    /// Frequency error of the raw oscillator against true time at the start, s/s
    /// (+100e-6: it gains 100 µs per s), and its wander (random-walk step per s, s/s).
    raw_freq: f64,
    wander: f64,
    /// CLOCK_REALTIME − true time at the start, ns.
    start_offset_ns: i64,
    servers: Vec<ServerSpec>,
    duration_ns: i64,
    /// Inject spoofed, malformed, non-reply and duplicate datagrams.
    inject: bool,
    /// The realtime rate range is recorded from this true time on (ns since the start).
    watch_rates_from_ns: i64,
    /// The simulated kernel's realtime runs this much faster than its setting, ppm.
    kernel_bias_ppm: f64,
    /// True time at the start, Unix ns (a continuous timescale: UTC less the leap seconds
    /// the servers apply during the run).
    t0_unix_ns: i64,
    /// Standard deviation of the client's timestamping noise, ns: the raw clock read in
    /// user space before a send and after a receive, with a scheduler in between.
    client_stamp_noise_ns: f64,
    /// The slew engine's limits (`[guard] max_correction_s` refuses larger corrections).
    slew: SlewConfig,
    /// The error bound is held against the first server's clock (a reference that steps
    /// and that the client must follow) instead of true time.
    bound_follows_server0: bool,
}

impl Scenario {
    /// +100 ppm oscillator with clknetsim's wander, realtime 11 s ahead.
    fn new(servers: Vec<ServerSpec>, duration_ns: i64) -> Scenario {
        Scenario {
            seed: 1,
            raw_freq: 100e-6,
            wander: WANDER,
            start_offset_ns: 11 * S,
            servers,
            duration_ns,
            inject: false,
            watch_rates_from_ns: 0,
            kernel_bias_ppm: 0.0,
            t0_unix_ns: T0_UNIX_NS,
            client_stamp_noise_ns: 0.0,
            slew: SlewConfig::default(),
            bound_follows_server0: false,
        }
    }
}

enum Flight {
    ToServer { server: usize, bytes: Vec<u8> },
    ToClient { id: usize, bytes: Vec<u8> },
}

/// Datagrams injected, by the rejection they must get.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Injected {
    spoofed: u64,
    malformed: u64,
    not_a_reply: u64,
    duplicate: u64,
}

/// What one run saw.
struct Run {
    /// (true time since the start, realtime − true time), ns, every second.
    trace: Vec<(i64, i64)>,
    core: ClientCore,
    /// Events at which realtime was checked against the previous one.
    checks: u64,
    /// Slowest and fastest realtime rate between two events ≥ 1 ms apart, ppm against
    /// raw (from `watch_rates_from_ns` on).
    rate_range_ppm: (f64, f64),
    /// The reach register before each request, per source.
    reach: Vec<Vec<u8>>,
    injected: Injected,
    /// True times at which a source's filter reset.
    resets_at: Vec<i64>,
    /// True times at which a sample was held back as an outlier.
    outliers_at: Vec<i64>,
    slew_external_steps: u64,
    /// True times at which a refused correction raised the alert (once per refusal spell).
    alerts_at: Vec<i64>,
    /// The simulated clocks at the end.
    end: Reading,
    /// The published error bound held against true time at every event.
    coverage: Coverage,
}

/// How the error bound clockguard would publish fared against true time: checked at
/// every event while a reader would trust it (Synchronized or FreeRunning, as read).
#[derive(Debug, Default)]
struct Coverage {
    checks: u64,
    misses: u64,
    /// The first and the last miss: (true time since the start, realtime − true time,
    /// bound), ns.
    first_miss: Option<(i64, i64, i64)>,
    last_miss: Option<(i64, i64, i64)>,
    /// The bound as read at each observation (every second) while synchronised: (true
    /// time since the start, bound), ns.
    widths: Vec<(i64, i64)>,
}

/// The bound's policy in the simulation: the defaults, and clockguard alone steers the
/// simulated kernel.
fn bound_policy() -> bound::Policy {
    bound::Policy {
        drift_floor_ppb: 1_000,
        void_after_ns: 1_000 * S,
        error_sigmas: 3.0,
        disruption_support: false,
        exclusive_discipline: true,
        slew_in_flight_ns: (83_333e-6 * 2.0 * SLEW_INTERVAL_NS as f64) as i64,
        pause_disrupts_ns: S,
    }
}

struct Sim {
    sc: Scenario,
    net: Rng,
    cookies: Rng,
    inject: Rng,
    /// Timestamping noise, client's and servers'.
    stamps: Rng,
    oscillator: Oscillator,
    kernel: SimKernel,
    driver: Driver<SimKernel>,
    core: ClientCore,
    limiters: Vec<RateLimiter>,
    next_tick: Option<i64>,
    next_obs: i64,
    next_check: Option<i64>,
    flights: BTreeMap<(i64, u64), Flight>,
    seq: u64,
    injections: u64,
    t: i64,
    last: Reading,
    trace: Vec<(i64, i64)>,
    checks: u64,
    rate_range_ppm: (f64, f64),
    reach: Vec<Vec<u8>>,
    injected: Injected,
    resets_at: Vec<i64>,
    /// True times at which a sample was held back as an outlier.
    outliers_at: Vec<i64>,
    alerts_at: Vec<i64>,
    bound: Bound,
    coverage: Coverage,
}

fn addr(id: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + id as u8)), 123)
}

impl Sim {
    fn new(sc: Scenario) -> Sim {
        let realtime0 = sc.t0_unix_ns + sc.start_offset_ns;
        let kernel = SimKernel::new(RAW0_NS, realtime0, sc.kernel_bias_ppm);
        let base = kernel.clocks().rate;
        let core = Slew::new(sc.slew.clone(), base);
        let (driver, _status) = Driver::new(core, kernel.clone(), None);
        // As client::spawn: local timescale = raw + (realtime − raw at the start).
        let epoch_ns = realtime0 - RAW0_NS;
        let config = SourceConfig {
            minpoll: 4,
            maxpoll: 10,
            iburst: true,
        };
        let mut core = ClientCore::new(epoch_ns, config, 0.0, true, None);
        let n = sc.servers.len();
        for i in 0..n {
            core.add_source(format!("sim{i}"), addr(i), Raw::from_ns(RAW0_NS));
        }
        let last = kernel.now();
        Sim {
            net: Rng(sc.seed),
            cookies: Rng(sc.seed ^ 0x5eed_c00c_1e00_0000),
            inject: Rng(sc.seed ^ 0x1111_2222_3333_4444),
            stamps: Rng(sc.seed ^ 0x5a5a_0f0f_7777_0001),
            oscillator: Oscillator::new(sc.raw_freq, sc.wander, sc.seed ^ 0x0dd0_5c11),
            kernel,
            driver,
            core,
            limiters: (0..n).map(|_| RateLimiter::new(3, 8, 16)).collect(),
            next_tick: None,
            next_obs: 0,
            next_check: None,
            flights: BTreeMap::new(),
            seq: 0,
            injections: 0,
            t: 0,
            last,
            trace: Vec::new(),
            checks: 0,
            rate_range_ppm: (f64::INFINITY, f64::NEG_INFINITY),
            reach: vec![Vec::new(); n],
            injected: Injected::default(),
            resets_at: Vec::new(),
            outliers_at: Vec::new(),
            alerts_at: Vec::new(),
            bound: Bound::new(bound_policy(), 0, Monotonic::from_ns(RAW0_NS)),
            coverage: Coverage::default(),
            sc,
        }
    }

    fn run(mut self) -> Run {
        loop {
            let flight = self.flights.keys().next().map(|k| k.0);
            // The core's timer (polls, the leap second, convergence checks) is on raw
            // time, which runs at the oscillator's rate: the true time it comes at is
            // approached in steps of at least 1 µs, as a timer that fires early (or whose
            // reading's noise puts it early) finds nothing due and is set again.
            let raw_now = self.kernel.now().raw;
            let core_due = self
                .core
                .next_wakeup()
                .map(|due| self.t + due.ns_since(raw_now).max(US));
            let t = [
                flight,
                self.next_tick,
                core_due,
                Some(self.next_obs),
                self.next_check,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("observations are always due");
            if t > self.sc.duration_ns {
                break;
            }
            self.advance(t);
            if flight == Some(t) {
                let (_, flight) = self.flights.pop_first().expect("due");
                match flight {
                    Flight::ToServer { server, bytes } => self.serve(server, &bytes),
                    Flight::ToClient { id, bytes } => self.on_datagram(id, &bytes),
                }
            } else if self.next_tick == Some(t) {
                self.driver.tick();
                self.next_tick = self.driver.core().active().then_some(t + SLEW_INTERVAL_NS);
            } else if core_due == Some(t) {
                self.on_timer();
            } else if self.next_obs == t {
                let now = self.kernel.now();
                // The daemon's sampler refreshes the segment every second.
                self.bound.refresh(self.monotonic(now));
                self.trace
                    .push((t, now.realtime.ns() - (self.sc.t0_unix_ns + t)));
                self.next_obs = t + S;
            }
            // Realtime is checked every 1 ms while the slew engine is at work.
            if self.next_check.is_none_or(|c| c <= t) {
                self.next_check = self.driver.core().active().then_some(t + MS);
            }
        }
        Run {
            trace: self.trace,
            checks: self.checks,
            rate_range_ppm: self.rate_range_ppm,
            reach: self.reach,
            injected: self.injected,
            resets_at: self.resets_at,
            outliers_at: self.outliers_at,
            slew_external_steps: self.driver.core().status().external_steps,
            alerts_at: self.alerts_at,
            end: self.last,
            core: self.core,
            coverage: self.coverage,
        }
    }

    /// CLOCK_MONOTONIC in the simulation: it runs with realtime, which is never stepped
    /// here, from RAW0_NS at the start.
    fn monotonic(&self, now: Reading) -> Monotonic {
        Monotonic::from_ns(
            now.realtime.ns() - (self.sc.t0_unix_ns + self.sc.start_offset_ns) + RAW0_NS,
        )
    }

    /// Is true time (or, with `bound_follows_server0`, the first server's time) within the
    /// bound a reader takes now?
    fn check_bound(&mut self, now: Reading, observation: bool) {
        let published = self.bound.last();
        let Some((bound_ns, status)) = published.as_read_at(self.monotonic(now)) else {
            return;
        };
        if !matches!(status, ClockStatus::Synchronized | ClockStatus::FreeRunning) {
            return;
        }
        let followed_ns = if self.sc.bound_follows_server0 {
            self.sc.servers[0].offset_at(self.t)
        } else {
            0
        };
        let reference_ns = self.sc.t0_unix_ns + self.t + followed_ns;
        let error_ns = now.realtime.ns() - reference_ns;
        let c = &mut self.coverage;
        c.checks += 1;
        if error_ns.abs() > bound_ns {
            c.misses += 1;
            c.first_miss.get_or_insert((self.t, error_ns, bound_ns));
            c.last_miss = Some((self.t, error_ns, bound_ns));
        }
        if observation && status == ClockStatus::Synchronized {
            c.widths.push((self.t, bound_ns));
        }
    }

    /// True time moves on to `t`: realtime must have moved forward, within the slew
    /// limits.
    fn advance(&mut self, t: i64) {
        self.t = t;
        self.kernel.advance(self.oscillator.raw_at(t));
        let now = self.kernel.now();
        let d_raw = now.raw.ns_since(self.last.raw);
        let d_real = now.realtime.ns_since(self.last.realtime);
        if d_raw > 0 {
            assert!(
                d_real > 0,
                "realtime did not increase at t = {} s: {:?} → {:?}",
                secs(t),
                self.last,
                now
            );
            let ppm = (d_real - d_raw) as f64 / d_raw as f64 * 1e6;
            // Rounding to the ns: 1 ns over the interval.
            let slack = 1e6 / d_raw as f64;
            assert!(
                ppm.abs() <= KernelRate::MAX_PPM + slack,
                "realtime stepped at t = {} s: {ppm} ppm over {d_raw} ns",
                secs(t)
            );
            if d_raw >= MS && t >= self.sc.watch_rates_from_ns {
                let r = &mut self.rate_range_ppm;
                *r = (r.0.min(ppm), r.1.max(ppm));
            }
            self.checks += 1;
        } else {
            assert_eq!(d_real, 0, "realtime moved while raw did not");
        }
        self.last = now;
        let observation = t == self.next_obs;
        self.check_bound(now, observation);
    }

    fn send(&mut self, at: i64, flight: Flight) {
        self.seq += 1;
        self.flights.insert((at, self.seq), flight);
    }

    /// A timestamp's reading error, ns: normal with standard deviation `sd_ns`.
    fn noise(&mut self, sd_ns: f64) -> i64 {
        if sd_ns == 0.0 {
            return 0;
        }
        (sd_ns * self.stamps.normal()).round() as i64
    }

    /// One leg's delay to or from `server` (`out`: client → server), ns; None: lost.
    fn leg(&mut self, server: usize, out: bool) -> Option<i64> {
        let spec = &self.sc.servers[server];
        let base = if out { spec.out_ns } else { spec.back_ns };
        let (jitter, uniform, loss) = (spec.jitter_ns, spec.uniform_jitter_ns, spec.loss);
        if loss > 0.0 && self.net.chance(loss) {
            return None;
        }
        let uniform_ns = if uniform > 0.0 {
            uniform * (2.0 * self.net.uniform() - 1.0)
        } else {
            0.0
        };
        Some(base + (jitter * self.net.exponential() + uniform_ns).round() as i64)
    }

    /// The core's timer: its polls, the leap second, the convergence check. When a poll
    /// is due, the reading carries the timestamping noise (it is the request's departure
    /// stamp); the timer fires late enough (raw runs 100 ppm fast: 200 µs over the
    /// shortest interval) that the noise does not make the poll look early.
    fn on_timer(&mut self) {
        let now = self.kernel.now();
        let due: Vec<usize> = (0..self.reach.len())
            .filter(|&id| self.core.next_poll(id).is_some_and(|due| due <= now.raw))
            .collect();
        let stamped = if due.is_empty() {
            now
        } else {
            Reading {
                raw: now.raw.plus_ns(self.noise(self.sc.client_stamp_noise_ns)),
                ..now
            }
        };
        // The reach register before each request.
        for id in due {
            if self
                .core
                .next_poll(id)
                .is_some_and(|due| due <= stamped.raw)
            {
                let reach = self.core.engine().sources()[id].reach();
                self.reach[id].push(reach);
            }
        }
        let cookies = &mut self.cookies;
        let actions = self
            .core
            .on_timer(stamped, Some(self.driver.core().remaining_ns()), || {
                NtpTimestamp(cookies.next_u64())
            });
        self.execute(actions);
    }

    /// A simulated server answers through the server's own code (its clock: true time +
    /// its offset).
    fn serve(&mut self, server: usize, bytes: &[u8]) {
        let spec = &self.sc.servers[server];
        let clock_ns = self.sc.t0_unix_ns + self.t + spec.offset_at(self.t);
        let noise_ns = spec.clock_noise_ns;
        let leap = match spec.leap {
            Some((at, delta_s)) if self.t < at => {
                if delta_s > 0 {
                    Leap::AddSecond
                } else {
                    Leap::DeleteSecond
                }
            }
            _ => Leap::None,
        };
        let clock = ServerClock {
            leap,
            stratum: 1,
            precision: -20,
            reference_id: *b"GPS\0",
            reference_ts: NtpTimestamp::from_unix_ns(clock_ns - 8 * S),
            root_delay_s: 0.0,
            root_dispersion_s: 10e-6,
        };
        let rx = NtpTimestamp::from_unix_ns(clock_ns + self.noise(noise_ns));
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let limiter = &mut self.limiters[server];
        let mut reply = match server::respond(
            bytes,
            client,
            rx,
            Monotonic::from_ns(self.t),
            &clock,
            limiter,
        ) {
            Response::Reply(packet) => packet,
            Response::Drop(why) => panic!("server {server} dropped a request: {why:?}"),
        };
        reply.transmit_ts =
            NtpTimestamp::from_unix_ns(clock_ns + SERVER_PROCESSING_NS + self.noise(noise_ns));
        let Some(delay) = self.leg(server, false) else {
            return;
        };
        let at = self.t + SERVER_PROCESSING_NS + delay;
        let bytes = reply.to_bytes().to_vec();
        if self.sc.inject && self.inject.chance(0.3) {
            // The network duplicates the reply: the copy comes 1 ms later.
            self.injected.duplicate += 1;
            let copy = bytes.clone();
            self.send(
                at + MS,
                Flight::ToClient {
                    id: server,
                    bytes: copy,
                },
            );
        }
        self.send(at, Flight::ToClient { id: server, bytes });
    }

    /// A reply arrives (its receive stamp carries the timestamping noise).
    fn on_datagram(&mut self, id: usize, bytes: &[u8]) {
        let now = self.kernel.now();
        let arrived = now.raw.plus_ns(self.noise(self.sc.client_stamp_noise_ns));
        let counters = self.core.engine().sources()[id].counters;
        let remaining_ns = Some(self.driver.core().remaining_ns());
        let Ok(actions) = self.core.on_datagram(id, bytes, arrived, now, remaining_ns) else {
            return;
        };
        let after = &self.core.engine().sources()[id].counters;
        if after.resets != counters.resets {
            self.resets_at.push(self.t);
        }
        if after.outliers != counters.outliers {
            self.outliers_at.push(self.t);
        }
        self.execute(actions);
    }

    /// The core's actions, carried out as the daemon's shell does.
    fn execute(&mut self, actions: Vec<Action>) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Send {
                    source, request, ..
                } => {
                    if let Some(delay) = self.leg(source, true) {
                        let bytes = request.to_vec();
                        self.send(
                            self.t + delay,
                            Flight::ToServer {
                                server: source,
                                bytes,
                            },
                        );
                    }
                    if self.sc.inject {
                        self.inject_after_request(source);
                    }
                }
                Action::SetFrequency { freq } => {
                    self.slew_request(|d| d.set_base(KernelRate::from_ppm(freq * 1e6)));
                    let remaining_ns = self.driver.core().remaining_ns();
                    actions.extend(self.core.frequency_set(freq, true, remaining_ns));
                }
                Action::Slew { by_ns, whole_ns } => {
                    // As the shell: a correction beyond max_correction is refused (nothing
                    // changes) and raises the alert once per refusal spell.
                    let mut accepted = false;
                    self.slew_request(|d| accepted = d.replace_part(by_ns, whole_ns).is_ok());
                    if accepted {
                        self.core.correction_started();
                    } else if self.core.correction_refused() {
                        self.alerts_at.push(self.t);
                    }
                }
                Action::Measured(Some(e)) => {
                    let now = self.kernel.now();
                    let mono = self.monotonic(now);
                    self.bound
                        .measured(Measured::from_discipline(&e, now.raw, mono));
                }
                Action::Measured(None) => {
                    self.bound.sources_lost();
                }
                Action::Serve(_) | Action::WriteDrift(_) => {}
            }
        }
    }

    /// A request to the slew engine's task, which ticks one interval after it becomes
    /// active and then every interval while it stays active (`Driver::run`).
    fn slew_request(&mut self, request: impl FnOnce(&mut Driver<SimKernel>)) {
        let was_active = self.driver.core().active();
        request(&mut self.driver);
        if !was_active && self.driver.core().active() {
            self.next_tick = Some(self.t + SLEW_INTERVAL_NS);
        }
        self.next_check = Some(self.t);
    }

    /// Forged and broken datagrams "from" the source while its request is outstanding:
    /// they arrive before the genuine reply. An off-path attacker cannot know the cookie.
    fn inject_after_request(&mut self, id: usize) {
        let evil_ns = self.sc.t0_unix_ns + self.t + HOUR;
        let forged = |origin: NtpTimestamp, mode: Mode| Packet {
            leap: Leap::None,
            version: 4,
            mode,
            stratum: 1,
            poll: 4,
            precision: -20,
            root_delay: NtpShort(0),
            root_dispersion: NtpShort(0),
            reference_id: *b"EVIL",
            reference_ts: NtpTimestamp::from_unix_ns(evil_ns),
            origin_ts: origin,
            receive_ts: NtpTimestamp::from_unix_ns(evil_ns),
            transmit_ts: NtpTimestamp::from_unix_ns(evil_ns),
        };
        let guess = NtpTimestamp(self.inject.next_u64());
        let reply = forged(guess, Mode::Server).to_bytes();
        self.injections += 1;
        let bytes = match self.injections % 6 {
            0 | 1 => {
                self.injected.spoofed += 1;
                reply.to_vec()
            }
            2 => {
                self.injected.malformed += 1;
                reply[..47].to_vec() // truncated
            }
            3 => {
                self.injected.malformed += 1;
                let mut b = reply.to_vec();
                b[0] = (b[0] & !0b0011_1000) | (7 << 3); // version 7
                b
            }
            4 => {
                self.injected.malformed += 1;
                let mut b = reply.to_vec();
                b.extend_from_slice(&[0, 1, 0, 200, 0, 0, 0, 0]); // extension past the end
                b
            }
            _ => {
                self.injected.not_a_reply += 1;
                forged(guess, Mode::Client).to_bytes().to_vec()
            }
        };
        self.send(self.t + 10 * US, Flight::ToClient { id, bytes });
    }
}

fn simulate(sc: Scenario) -> Run {
    Sim::new(sc).run()
}

/// The first observation after which |realtime − true − bias| stays below `bound_ns`.
fn settled_at(trace: &[(i64, i64)], bias_ns: i64, bound_ns: i64) -> Option<i64> {
    match trace
        .iter()
        .rposition(|&(_, e)| (e - bias_ns).abs() >= bound_ns)
    {
        None => trace.first().map(|&(t, _)| t),
        Some(i) => trace.get(i + 1).map(|&(t, _)| t),
    }
}

/// RMS, mean and largest |value| of realtime − true over [from, to), ns.
fn stats(trace: &[(i64, i64)], from: i64, to: i64) -> (f64, f64, f64) {
    let errors: Vec<f64> = trace
        .iter()
        .filter(|&&(t, _)| t >= from && t < to)
        .map(|&(_, e)| e as f64)
        .collect();
    assert!(!errors.is_empty());
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let rms = (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
    let max = errors.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    (rms, mean, max)
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn counters(run: &Run, id: usize) -> SourceCounters {
    run.core.engine().sources()[id].counters
}
