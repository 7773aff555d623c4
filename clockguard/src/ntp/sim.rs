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
    ntp::client::{Action, ClientCore},
    time::{Raw, Reading, Realtime},
};

use super::{
    packet::{Leap, Mode, NtpShort, NtpTimestamp, Packet},
    server::{self, RateLimiter, Response, ServerClock},
    source::{SourceConfig, SourceCounters},
};
use crate::slew::{Driver, KernelClock, KernelRate, Slew, SlewConfig};

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

/// splitmix64: a tiny seeded PRNG (tests must not be flaky, and need no crate).
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with mean 1.
    fn exponential(&mut self) -> f64 {
        -(1.0 - self.uniform()).ln()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// The local oscillator: CLOCK_MONOTONIC_RAW as a function of true time. Its frequency
/// error is constant over each second and takes a random-walk step between seconds.
struct Oscillator {
    /// Start of the current second (true ns since the start) and raw time then (ns).
    t_ns: i64,
    raw_ns: f64,
    /// Frequency error during the current second, s/s.
    freq: f64,
    /// Standard deviation of the step from one second to the next, s/s.
    wander: f64,
    rng: Rng,
}

impl Oscillator {
    fn new(freq: f64, wander: f64, seed: u64) -> Oscillator {
        Oscillator {
            t_ns: 0,
            raw_ns: RAW0_NS as f64,
            freq,
            wander,
            rng: Rng(seed),
        }
    }

    /// Raw time at true time `t` (ns since the start; never earlier than the last call).
    fn raw_at(&mut self, t: i64) -> i64 {
        assert!(t >= self.t_ns, "the oscillator only runs forward");
        while t - self.t_ns >= S {
            self.raw_ns += S as f64 * (1.0 + self.freq);
            self.t_ns += S;
            if self.wander > 0.0 {
                self.freq += self.wander * self.rng.normal();
            }
        }
        (self.raw_ns + (t - self.t_ns) as f64 * (1.0 + self.freq)).floor() as i64
    }
}

/// The local kernel: CLOCK_MONOTONIC_RAW as the world sets it, and CLOCK_REALTIME
/// advancing on it at the programmed rate, integrated exactly (as `SimClock` in slew.rs's
/// tests).
struct Clocks {
    raw_ns: i64,
    realtime_ns: i64,
    /// Fraction of a ns gained, in 1 / (65536e6) ns.
    frac: i128,
    rate: KernelRate,
    /// CLOCK_REALTIME runs this much faster than `rate` says, in 1/65536 ppm (the test
    /// VM's kernel measured +67.75 ppm at the nominal setting).
    bias_scaled_ppm: i64,
}

#[derive(Clone)]
struct SimKernel(Arc<Mutex<Clocks>>);

impl SimKernel {
    fn new(raw_ns: i64, realtime_ns: i64, bias_ppm: f64) -> SimKernel {
        SimKernel(Arc::new(Mutex::new(Clocks {
            raw_ns,
            realtime_ns,
            frac: 0,
            rate: KernelRate::from_ppm(0.0),
            bias_scaled_ppm: (bias_ppm * 65536.0).round() as i64,
        })))
    }

    fn clocks(&self) -> MutexGuard<'_, Clocks> {
        self.0.lock().expect("not poisoned")
    }

    /// Raw time moves on to `raw_ns`; realtime follows at the programmed rate.
    fn advance(&self, raw_ns: i64) {
        let mut c = self.clocks();
        let d = raw_ns - c.raw_ns;
        assert!(d >= 0, "raw time went backward");
        let rate = c.rate;
        let scaled = (rate.tick_us - KernelRate::NOMINAL_TICK_US) * 100 * 65536
            + rate.freq_scaled_ppm
            + c.bias_scaled_ppm;
        let den = 65_536_000_000i128;
        let acc = c.frac + i128::from(d) * i128::from(scaled);
        c.frac = acc.rem_euclid(den);
        c.raw_ns = raw_ns;
        c.realtime_ns += d + acc.div_euclid(den) as i64;
    }

    fn now(&self) -> Reading {
        let c = self.clocks();
        Reading {
            raw: Raw::from_ns(c.raw_ns),
            realtime: Realtime::from_ns(c.realtime_ns),
        }
    }
}

impl KernelClock for SimKernel {
    fn sample(&mut self) -> Reading {
        self.now()
    }

    fn read_rate(&mut self) -> std::io::Result<KernelRate> {
        Ok(self.clocks().rate)
    }

    fn set_rate(&mut self, rate: KernelRate) -> std::io::Result<()> {
        assert!(
            (rate.tick_us - KernelRate::NOMINAL_TICK_US).abs() <= 1_000
                && rate.freq_scaled_ppm.abs() <= 500 << 16,
            "the kernel refuses {rate:?}"
        );
        self.clocks().rate = rate;
        Ok(())
    }
}

/// A simulated server and the path to it.
#[derive(Clone, Debug)]
struct ServerSpec {
    /// The server's clock − true time, ns, as `(from, offset)` in order of true time (ns
    /// since the start).
    offsets: Vec<(i64, i64)>,
    /// Base one-way delays, ns: client → server, server → client.
    out_ns: i64,
    back_ns: i64,
    /// Mean of the exponential delay added to each leg, ns.
    jitter_ns: f64,
    /// Half-width of a uniform delay added to each leg, ns: netem's `delay D J` draws each
    /// packet's delay uniformly from D ± J (a link emulator's jitter, not a queue's).
    uniform_jitter_ns: f64,
    /// Probability that a packet (either leg) is lost.
    loss: f64,
    /// Standard deviation of the noise in each reading of the server's clock (its receive
    /// and transmit timestamps), ns: a server's own timestamping is not exact either.
    clock_noise_ns: f64,
    /// A leap second the server announces until it applies it: (true time of the
    /// midnight, ns since the start; +1 inserted, −1 deleted). With `offsets` to match.
    leap: Option<(i64, i64)>,
}

impl ServerSpec {
    /// A good server: 100 µs each way (clknetsim's default base delay) plus `jitter_ns`
    /// of exponential delay on each leg, no loss.
    fn lan(jitter_ns: f64) -> ServerSpec {
        ServerSpec {
            offsets: vec![(0, 0)],
            out_ns: 100 * US,
            back_ns: 100 * US,
            jitter_ns,
            uniform_jitter_ns: 0.0,
            loss: 0.0,
            clock_noise_ns: 0.0,
            leap: None,
        }
    }

    /// The bench's link (tests/bench/vm_ntp_netem.sh): netem `delay 1ms 200us` each way.
    fn netem(delay_ns: i64, jitter_ns: f64) -> ServerSpec {
        ServerSpec {
            out_ns: delay_ns,
            back_ns: delay_ns,
            uniform_jitter_ns: jitter_ns,
            ..ServerSpec::lan(0.0)
        }
    }

    /// This server announces a leap second (+1 inserted, −1 deleted) before the midnight
    /// `at` (true time, ns since the start) and applies it then, as a kernel does: an
    /// inserted second is 23:59:59 twice (its clock goes 1 s back at the midnight), a
    /// deleted one skips 23:59:59 (1 s forward a second before the midnight).
    fn leaping(mut self, at: i64, delta_s: i64) -> ServerSpec {
        let applied_at = if delta_s > 0 { at } else { at - S };
        let offset = self.offset_at(applied_at);
        self.offsets.push((applied_at, offset - delta_s * S));
        self.leap = Some((applied_at, delta_s));
        self
    }

    fn offset_at(&self, t: i64) -> i64 {
        self.offsets
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map_or(0, |(_, offset)| *offset)
    }
}

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
    slew_external_steps: u64,
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
}

fn addr(id: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + id as u8)), 123)
}

impl Sim {
    fn new(sc: Scenario) -> Sim {
        let realtime0 = sc.t0_unix_ns + sc.start_offset_ns;
        let kernel = SimKernel::new(RAW0_NS, realtime0, sc.kernel_bias_ppm);
        let base = kernel.clocks().rate;
        let core = Slew::new(SlewConfig::default(), base);
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
            slew_external_steps: self.driver.core().status().external_steps,
            core: self.core,
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
        let mut reply = match server::respond(bytes, client, rx, self.t, &clock, limiter) {
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
        let resets = self.core.engine().sources()[id].counters.resets;
        let remaining_ns = Some(self.driver.core().remaining_ns());
        let Ok(actions) = self.core.on_datagram(id, bytes, arrived, now, remaining_ns) else {
            return;
        };
        if self.core.engine().sources()[id].counters.resets != resets {
            self.resets_at.push(self.t);
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
                Action::Slew { by_ns } => {
                    self.slew_request(|d| {
                        d.replace(by_ns).expect("within max_correction");
                    });
                    self.core.correction_started();
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

/// 100 ppm, 10 µs of jitter, one server, realtime 11 s ahead: the clock slews back (at
/// 83 333 ppm, so −11 s take 132 s) and then holds the time. chrony's clknetsim tests
/// report 35 ± 8 µs RMS for 10 µs of jitter (with clknetsim's 1e-9 wander).
#[test]
fn converges_from_11_s_by_slewing_and_holds_the_time() {
    let started = Instant::now();
    let sc = Scenario::new(vec![ServerSpec::lan(10e3)], 4 * HOUR);
    let run = simulate(sc.clone());
    let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
    let settled_100us = settled_at(&run.trace, 0, 100 * US).expect("converged under 100 µs");
    let (rms, mean, max) = stats(&run.trace, 2 * HOUR, 4 * HOUR);
    let c = counters(&run, 0);
    eprintln!(
        "11 s ahead, +100 ppm, 1e-9 wander, 10 µs jitter: within 1 ms after {:.0} s, within \
         100 µs after {:.0} s; 2 h..4 h: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; {} \
         requests, {} outliers, {} resets; realtime rate {:+.0}..{:+.0} ppm over {} checks; \
         took {:?}",
        secs(settled),
        secs(settled_100us),
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        c.sent,
        c.outliers,
        c.resets,
        run.rate_range_ppm.0,
        run.rate_range_ppm.1,
        run.checks,
        started.elapsed()
    );
    // The first estimate comes after 3 samples 2 s apart; then 132 s of slewing.
    assert!(secs(settled) < 140.0, "settled after {} s", secs(settled));
    // 16 seeds gave 15.6 µs median, 28 µs worst over 2 h..6 h (78 µs before the poll
    // interval followed the wander).
    assert!(rms < 30e3, "steady RMS {rms} ns");
    assert!(max < 100e3, "steady max {max} ns");
    assert_eq!(run.slew_external_steps, 0);
    // Slewing back never came near stopping the clock (−1e6 ppm).
    assert!(
        run.rate_range_ppm.0 >= -83_500.0,
        "{:?}",
        run.rate_range_ppm
    );

    // An oscillator that does not wander: the line fits, the error is the noise left
    // after the regression.
    let still = simulate(Scenario { wander: 0.0, ..sc });
    let (rms, mean, max) = stats(&still.trace, 2 * HOUR, 4 * HOUR);
    eprintln!(
        "... without wander: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; {} requests",
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        counters(&still, 0).sent
    );
    assert!(rms < 5e3 && max < 10e3, "RMS {rms} ns, max {max} ns");
}

/// A kernel whose CLOCK_REALTIME runs faster against the raw clock than its setting says
/// (the test VM: +67.75 ppm at the nominal setting). The fit is against the raw clock and
/// cannot see it; the slew engine counts it as progress and keeps correcting, so the clock
/// holds about one slew interval's worth of it (67.75 ppm × 250 ms ≈ 17 µs) off. Over four
/// seeds: with polls on CLOCK_MONOTONIC_RAW, replies land anywhere in a slew interval, and
/// two of these seeds showed the engine dropping the held correction when a new base rate
/// came mid-interval (`a_request_between_updates_does_not_shorten_the_horizon` in slew.rs).
#[test]
fn a_kernel_rate_bias_costs_one_slew_interval_of_it() {
    for (bias_ppm, seed) in [(67.75, 1), (67.75, 2), (67.75, 3), (67.75, 4), (400.0, 1)] {
        let sc = Scenario {
            seed,
            kernel_bias_ppm: bias_ppm,
            wander: 0.0,
            ..Scenario::new(vec![ServerSpec::lan(10e3)], 2 * HOUR)
        };
        let run = simulate(sc);
        let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
        let (rms, mean, max) = stats(&run.trace, HOUR, 2 * HOUR);
        eprintln!(
            "kernel rate bias {bias_ppm:+} ppm: within 1 ms after {:.0} s; 1 h..2 h: RMS \
             {:.1} µs, mean {:+.1} µs, max {:.1} µs",
            secs(settled),
            rms / 1e3,
            mean / 1e3,
            max / 1e3,
        );
        // Uncorrected between polls it would be 1..69 ms (16..1024 s at 67.75 ppm).
        let interval_worth_ns = bias_ppm * 1e-6 * SLEW_INTERVAL_NS as f64;
        assert!(
            (mean - interval_worth_ns).abs() < 0.25 * interval_worth_ns + 5e3,
            "mean {mean} ns, expected about {interval_worth_ns} ns"
        );
        assert!(max < 1.5 * interval_worth_ns + 20e3, "max {max} ns");
    }
}

/// The steady state of the first test over 16 seeds (one seed can be lucky): 6 h each,
/// judged over 2 h..6 h.
#[test]
fn steady_state_across_seeds() {
    let started = Instant::now();
    let (mut rms_all, mut max_all, mut requests, mut resets) = (Vec::new(), Vec::new(), 0, 0);
    for seed in 1..=16 {
        let sc = Scenario {
            seed,
            ..Scenario::new(vec![ServerSpec::lan(10e3)], 6 * HOUR)
        };
        let run = simulate(sc);
        let (rms, _, max) = stats(&run.trace, 2 * HOUR, 6 * HOUR);
        rms_all.push(rms);
        max_all.push(max);
        requests += counters(&run, 0).sent;
        resets += counters(&run, 0).resets;
    }
    let pooled = (rms_all.iter().map(|r| r * r).sum::<f64>() / 16.0).sqrt();
    rms_all.sort_by(f64::total_cmp);
    max_all.sort_by(f64::total_cmp);
    eprintln!(
        "16 seeds, 2 h..6 h: RMS pooled {:.1} µs, median {:.1} µs, worst {:.1} µs; max \
         median {:.1} µs, worst {:.1} µs; {} requests per run (6 h), {resets} resets in all; \
         took {:?}",
        pooled / 1e3,
        rms_all[8] / 1e3,
        rms_all[15] / 1e3,
        max_all[8] / 1e3,
        max_all[15] / 1e3,
        requests / 16,
        started.elapsed()
    );
    // Before the poll interval followed the wander: pooled 78 µs, worst 107 µs, max 320 µs,
    // 25 resets (wander taken for steps).
    assert!(pooled < 25e3 && rms_all[15] < 35e3, "{rms_all:?}");
    assert!(max_all[15] < 250e3, "{max_all:?}");
    assert!(resets <= 4, "{resets} resets");
}

/// The first test's world with noisy timestamps at both ends: each reading of the server's
/// clock (receive, transmit) and of the client's raw clock around an exchange is off by a
/// normal error of 5 µs standard deviation (a server's and a user-space client's
/// timestamping), over 16 seeds. The regression averages the noise down; what is left is
/// stated beside the noiseless figure in the README.
#[test]
fn holds_the_time_with_noisy_timestamps_at_both_ends() {
    const SEEDS: u64 = 16;
    let started = Instant::now();
    let (mut rms_all, mut max_all, mut slowest) = (Vec::new(), Vec::new(), 0.0f64);
    for seed in 1..=SEEDS {
        let server = ServerSpec {
            clock_noise_ns: 5e3,
            ..ServerSpec::lan(10e3)
        };
        let sc = Scenario {
            seed,
            client_stamp_noise_ns: 5e3,
            ..Scenario::new(vec![server], 4 * HOUR)
        };
        let run = simulate(sc);
        let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
        slowest = slowest.max(secs(settled));
        let (rms, _, max) = stats(&run.trace, 2 * HOUR, 4 * HOUR);
        rms_all.push(rms);
        max_all.push(max);
        assert_eq!(run.slew_external_steps, 0, "seed {seed}");
    }
    let pooled = (rms_all.iter().map(|r| r * r).sum::<f64>() / SEEDS as f64).sqrt();
    let worst_rms = rms_all.iter().copied().fold(0.0, f64::max);
    let worst_max = max_all.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "noisy timestamps (5 µs sd at the server and at the client), 10 µs jitter, {SEEDS} seeds, \
         2 h..4 h: RMS pooled {:.1} µs, worst {:.1} µs; max worst {:.1} µs; slowest to 1 ms \
         {slowest:.0} s; took {:?}",
        pooled / 1e3,
        worst_rms / 1e3,
        worst_max / 1e3,
        started.elapsed()
    );
    assert!(slowest < 140.0, "settled after {slowest} s");
    // The worst seed is a tail figure: over 32 seeds the copy of the client this test ran
    // before it drove the real core gave pooled 25.1 µs, worst 71.1 µs; the core (polls on
    // CLOCK_MONOTONIC_RAW) gives pooled 23.3 µs, worst 44.7 µs. Hence 16 seeds here, and
    // the worst bound at 50 µs where it was 40 µs over 8 seeds.
    assert!(pooled < 25e3 && worst_rms < 50e3, "{rms_all:?}");
    assert!(worst_max < 160e3, "{max_all:?}");
}

#[test]
fn asymmetric_delay_biases_by_half_the_asymmetry() {
    let started = Instant::now();
    // 1 ms out, nothing back (plus the jitter): the client cannot tell, and ends half
    // the difference ahead, +500 µs.
    let server = ServerSpec {
        out_ns: MS,
        back_ns: 0,
        ..ServerSpec::lan(10e3)
    };
    let run = simulate(Scenario::new(vec![server], 3 * HOUR));
    let (rms, mean, max) = stats(&run.trace, HOUR, 3 * HOUR);
    let spread = (rms * rms - mean * mean).max(0.0).sqrt();
    eprintln!(
        "asymmetry 1 ms / 0: realtime − true {:+.1} µs on average (expected +500), spread \
         {:.1} µs, max {:.1} µs; took {:?}",
        mean / 1e3,
        spread / 1e3,
        max / 1e3,
        started.elapsed()
    );
    assert!((mean - 500e3).abs() < 25e3, "mean {mean} ns");
    assert!(spread < 30e3, "spread {spread} ns");
}

#[test]
fn a_falseticker_is_outvoted() {
    let started = Instant::now();
    // Source 0 answers first and is 5 s ahead; 1..3 are good.
    let mut servers = vec![ServerSpec::lan(10e3); 4];
    servers[0].offsets = vec![(0, 5 * S)];
    let run = simulate(Scenario::new(servers, 2 * HOUR));
    let states: Vec<&str> = (0..4)
        .map(|id| run.core.engine().source_state(id).as_str())
        .collect();
    let settled = settled_at(&run.trace, 0, MS).expect("converged to the majority");
    let (rms, mean, max) = stats(&run.trace, HOUR, 2 * HOUR);
    let system = run.core.engine().system().expect("synchronised");
    eprintln!(
        "falseticker 5 s ahead among 4: states {states:?}; within 1 ms of true time after \
         {:.0} s; 1 h..2 h: RMS {:.1} µs, mean {:+.1} µs, max {:.1} µs; took {:?}",
        secs(settled),
        rms / 1e3,
        mean / 1e3,
        max / 1e3,
        started.elapsed()
    );
    assert_eq!(states[0], "falseticker");
    assert!(
        states[1..]
            .iter()
            .all(|s| *s == "selected" || *s == "combined"),
        "{states:?}"
    );
    assert_eq!(system.falsetickers, vec![0]);
    assert!(secs(settled) < 140.0, "settled after {} s", secs(settled));
    assert!(rms < 30e3 && max < 100e3, "RMS {rms} ns, max {max} ns");
}

#[test]
fn a_server_that_steps_is_followed_by_a_slew() {
    let started = Instant::now();
    let step_at = 2 * HOUR;
    let mut server = ServerSpec::lan(10e3);
    server.offsets = vec![(0, 0), (step_at, 2 * S)];
    // On time from the start, so that the only slew after the step is the one following
    // it; no wander, so that the poll interval is at its longest (1024 s) when it comes.
    let sc = Scenario {
        start_offset_ns: 0,
        wander: 0.0,
        watch_rates_from_ns: step_at,
        ..Scenario::new(vec![server], 4 * HOUR)
    };
    let run = simulate(sc);
    let c = counters(&run, 0);
    let after: Vec<(i64, i64)> = run
        .trace
        .iter()
        .copied()
        .filter(|&(t, _)| t >= step_at)
        .collect();
    let followed = settled_at(&after, 2 * S, MS).expect("followed the step") - step_at;
    let reset = run.resets_at.first().map(|&t| t - step_at);
    let (rms, mean, _) = stats(&run.trace, 3 * HOUR, 4 * HOUR);
    eprintln!(
        "server steps +2 s at 2 h: filter reset {:.0} s after the step ({} outliers, {} \
         resets), within 1 ms of the server {:.0} s after it, then {:+.1} µs (RMS {:.1} µs \
         around +2 s); realtime rate {:+.0}..{:+.0} ppm from the step on; took {:?}",
        secs(reset.unwrap_or(0)),
        c.outliers,
        c.resets,
        secs(followed),
        (mean - 2e9) / 1e3,
        (rms * rms - mean * mean).max(0.0).sqrt() / 1e3,
        run.rate_range_ppm.0,
        run.rate_range_ppm.1,
        started.elapsed()
    );
    assert_eq!((c.resets, c.outliers), (1, 2), "{c:?}");
    // Three samples disagree (the first up to 1024 s after the step, then each outlier
    // halves the interval: 512 s, 256 s), then 2 s are slewed at 83 333 ppm in 24 s.
    let reset = reset.expect("reset");
    assert!(
        secs(reset) <= 1024.0 + 512.0 + 256.0 + 1.0,
        "reset after {reset}"
    );
    assert!(secs(followed - reset) < 30.0, "followed {followed}");
    assert!((mean - 2e9).abs() < 10e3, "mean {mean}");
    // Forward only: +2 s gained by running fast, at most at the slew limit.
    assert!(
        run.rate_range_ppm.1 < 83_500.0 && run.rate_range_ppm.0 > -1_000.0,
        "{:?}",
        run.rate_range_ppm
    );
    assert_eq!(run.slew_external_steps, 0);
}

/// 2026-12-31T22:00:00Z: two hours before a midnight where a leap second may come.
const T0_BEFORE_NEW_YEAR_NS: i64 = 1_798_754_400 * S;

/// The sources announce a leap second for the midnight (one inserted, then one deleted):
/// the clock is on time before it, follows UTC after it within 1 ms about 12 s later
/// (1 s at 83 333 ppm), never stepping, and the filter keeps its line (no reset).
#[test]
fn an_announced_leap_second_is_slewed_never_stepped() {
    let midnight = 2 * HOUR;
    for delta_s in [1, -1] {
        let started = Instant::now();
        let sc = Scenario {
            start_offset_ns: 0,
            wander: 0.0,
            t0_unix_ns: T0_BEFORE_NEW_YEAR_NS,
            watch_rates_from_ns: midnight - 2 * S,
            ..Scenario::new(
                vec![ServerSpec::lan(10e3).leaping(midnight, delta_s)],
                3 * HOUR,
            )
        };
        let run = simulate(sc);
        let c = counters(&run, 0);
        let leaps = run.core.engine().leap_seconds();
        let after: Vec<(i64, i64)> = run
            .trace
            .iter()
            .copied()
            .filter(|&(t, _)| t >= midnight - S)
            .collect();
        // UTC after the leap is the continuous true time less the second inserted.
        let utc_after = -delta_s * S;
        let followed = settled_at(&after, utc_after, MS).expect("followed UTC") - midnight;
        let (_, before_mean, before_max) = stats(&run.trace, HOUR, midnight - 2 * S);
        let (_, after_mean, _) = stats(&run.trace, midnight + 60 * S, 3 * HOUR);
        eprintln!(
            "leap second {delta_s:+}: before it {:+.1} µs (max {:.1} µs); within 1 ms of \
             UTC {:.1} s after it, then {:+.1} µs; realtime rate {:+.0}..{:+.0} ppm; {} \
             outliers, {} resets; took {:?}",
            before_mean / 1e3,
            before_max / 1e3,
            secs(followed),
            (after_mean - utc_after as f64) / 1e3,
            run.rate_range_ppm.0,
            run.rate_range_ppm.1,
            c.outliers,
            c.resets,
            started.elapsed()
        );
        assert_eq!(leaps.len(), 1, "{leaps:?}");
        assert!(leaps[0].passed && leaps[0].delta_s == delta_s, "{leaps:?}");
        assert_eq!(leaps[0].at_unix_s, 1_798_761_600, "2027-01-01T00:00:00Z");
        assert!(before_max < 100e3, "off before the leap: {before_max} ns");
        // The second deleted goes a second before the midnight; 1 s at 83 333 ppm is 12 s.
        assert!(
            (0.0..14.0).contains(&secs(followed)),
            "followed after {followed} ns"
        );
        assert!(
            (after_mean - utc_after as f64).abs() < 20e3,
            "mean {after_mean} ns after"
        );
        // The server's timescale was carried through the leap: no reset, at most the one
        // exchange that straddled it is an outlier.
        assert_eq!(c.resets, 0, "{c:?}");
        assert!(c.outliers <= 1, "{c:?}");
        // Slewed: an inserted second makes the clock run slow, never backward.
        let (slowest, fastest) = run.rate_range_ppm;
        if delta_s > 0 {
            assert!(
                slowest >= -83_500.0 && fastest < 1_000.0,
                "{slowest}..{fastest}"
            );
        } else {
            assert!(
                fastest <= 83_500.0 && slowest > -1_000.0,
                "{slowest}..{fastest}"
            );
        }
        assert_eq!(run.slew_external_steps, 0);
    }
}

/// One server of three announces and applies a leap second the other two do not: no leap
/// is taken (a majority must announce it), the clock stays on the majority's time, and the
/// lone server ends as a falseticker.
#[test]
fn a_leap_second_announced_by_a_minority_is_not_taken() {
    let midnight = 2 * HOUR;
    let sc = Scenario {
        start_offset_ns: 0,
        wander: 0.0,
        t0_unix_ns: T0_BEFORE_NEW_YEAR_NS,
        ..Scenario::new(
            vec![
                ServerSpec::lan(10e3).leaping(midnight, 1),
                ServerSpec::lan(10e3),
                ServerSpec::lan(10e3),
            ],
            3 * HOUR,
        )
    };
    let run = simulate(sc);
    let (_, mean, max) = stats(&run.trace, midnight, 3 * HOUR);
    let system = run.core.engine().system().expect("synchronised");
    eprintln!(
        "leap second from 1 of 3: after the midnight {:+.1} µs (max {:.1} µs); falsetickers {:?}",
        mean / 1e3,
        max / 1e3,
        system.falsetickers
    );
    assert!(
        run.core.engine().leap_seconds().is_empty(),
        "{:?}",
        run.core.engine().leap_seconds()
    );
    assert_eq!(system.leap, Leap::None);
    assert!(max < 200e3, "left the majority's time: max {max} ns");
    assert_eq!(system.falsetickers, vec![0]);
}

#[test]
fn converges_through_packet_loss() {
    let started = Instant::now();
    let server = ServerSpec {
        loss: 0.3,
        ..ServerSpec::lan(10e3)
    };
    let run = simulate(Scenario::new(vec![server], 3 * HOUR));
    let c = counters(&run, 0);
    let settled = settled_at(&run.trace, 0, MS).expect("converged under 1 ms");
    let (rms, _, max) = stats(&run.trace, HOUR, 3 * HOUR);
    let reach = &run.reach[0];
    // Registers that are full of replies but for some (the first 8 polls fill it).
    let gappy = reach[8..].iter().filter(|r| r.count_ones() < 8).count();
    let lost = 1.0 - c.accepted as f64 / c.sent as f64;
    let octal: Vec<String> = reach.iter().take(24).map(|r| format!("{r:o}")).collect();
    eprintln!(
        "30 % loss per packet: {} requests, {} answered ({:.0} % of exchanges lost, 51 % \
         expected); within 1 ms after {:.0} s; 1 h..3 h: RMS {:.1} µs, max {:.1} µs; reach \
         below 377 at {gappy} of {} polls, first ones {octal:?}; took {:?}",
        c.sent,
        c.accepted,
        lost * 100.0,
        secs(settled),
        rms / 1e3,
        max / 1e3,
        reach.len() - 8,
        started.elapsed()
    );
    assert!((0.4..0.6).contains(&lost), "lost {lost}");
    // With 49 % of exchanges answered, 8 in a row come 0.3 % of the time.
    assert_eq!(gappy, reach.len() - 8, "{reach:?}");
    assert!(secs(settled) < 300.0, "settled after {} s", secs(settled));
    assert!(rms < 40e3 && max < 150e3, "RMS {rms} ns, max {max} ns");
}

#[test]
fn forged_and_broken_datagrams_change_nothing() {
    let started = Instant::now();
    let sc = Scenario::new(vec![ServerSpec::lan(10e3)], 2 * HOUR);
    let clean = simulate(sc.clone());
    let attacked = simulate(Scenario { inject: true, ..sc });
    let (c, a) = (counters(&clean, 0), counters(&attacked, 0));
    let inj = attacked.injected;
    eprintln!(
        "injected {inj:?}: counters {a:?} (clean run: {c:?}); took {:?}",
        started.elapsed()
    );
    assert!(inj.spoofed >= 5 && inj.malformed >= 5 && inj.not_a_reply >= 2);
    assert!(inj.duplicate >= 3);
    assert_eq!(a.bad_origin, inj.spoofed);
    assert_eq!(a.malformed, inj.malformed);
    assert_eq!(a.not_a_reply, inj.not_a_reply);
    assert_eq!(a.duplicate, inj.duplicate);
    let injected = inj.spoofed + inj.malformed + inj.not_a_reply + inj.duplicate;
    assert_eq!(a.received, c.received + injected);
    assert_eq!(
        SourceCounters {
            received: c.received,
            bad_origin: 0,
            malformed: 0,
            not_a_reply: 0,
            duplicate: 0,
            ..a
        },
        c
    );
    // The clock did exactly the same: same estimate, same time at every second.
    assert_eq!(
        attacked.core.engine().system(),
        clean.core.engine().system()
    );
    assert_eq!(attacked.trace, clean.trace);
}

/// The bench's network (tests/bench/vm_ntp_netem.sh): netem's 1 ms ± 200 µs, uniform, each
/// way, a 50 ppm oscillator and the clock on time at the start, over 8 seeds. A sample's
/// offset is then off by about 80 µs (SD); the fastest of a few samples by less, but not by
/// nothing: weighting it as if it were exact made the fit follow each new fastest sample
/// (pooled RMS 297 µs over the bench's hold and 160 µs later, max 1.9 ms; polling up after
/// 4 good samples instead of 8 took the poll to 1024 s before the fit had the samples).
#[test]
fn holds_the_time_over_a_netem_link() {
    let started = Instant::now();
    let (mut hold, mut later) = (Vec::new(), Vec::new());
    for seed in 1..=8 {
        let sc = Scenario {
            seed,
            raw_freq: 50e-6,
            start_offset_ns: 0,
            ..Scenario::new(vec![ServerSpec::netem(MS, 200e3)], HOUR)
        };
        let run = simulate(sc);
        assert_eq!(run.slew_external_steps, 0);
        // The bench measures 600 s after 20 s in the band and 120 s of settling.
        hold.push(stats(&run.trace, 140 * S, 740 * S));
        later.push(stats(&run.trace, 1200 * S, HOUR));
    }
    let pooled = |all: &[(f64, f64, f64)]| {
        (all.iter().map(|s| s.0 * s.0).sum::<f64>() / all.len() as f64).sqrt()
    };
    let worst_max = |all: &[(f64, f64, f64)]| all.iter().map(|s| s.2).fold(0.0, f64::max);
    eprintln!(
        "netem 1 ms ± 200 µs each way, 50 ppm, 8 seeds: 140..740 s RMS pooled {:.1} µs, max \
         {:.1} µs; 1200..3600 s RMS pooled {:.1} µs, max {:.1} µs; took {:?}",
        pooled(&hold) / 1e3,
        worst_max(&hold) / 1e3,
        pooled(&later) / 1e3,
        worst_max(&later) / 1e3,
        started.elapsed()
    );
    assert!(pooled(&hold) < 100e3, "{hold:?}");
    assert!(pooled(&later) < 80e3, "{later:?}");
}
