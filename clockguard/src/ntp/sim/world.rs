//! The simulated world: a seeded PRNG, the local oscillator and its wander, the clocks the
//! simulated kernel keeps (raw, and realtime at the programmed rate), and the servers.

use super::*;

/// splitmix64: a tiny seeded PRNG (tests must not be flaky, and need no crate).
#[derive(Clone)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with mean 1.
    pub(super) fn exponential(&mut self) -> f64 {
        -(1.0 - self.uniform()).ln()
    }

    /// Standard normal (Box-Muller).
    pub(super) fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// The local oscillator: CLOCK_MONOTONIC_RAW as a function of true time. Its frequency
/// error is constant over each second and takes a random-walk step between seconds.
pub(super) struct Oscillator {
    /// Start of the current second (true ns since the start) and raw time then (ns).
    pub(super) t_ns: i64,
    pub(super) raw_ns: f64,
    /// Frequency error during the current second, s/s.
    pub(super) freq: f64,
    /// Standard deviation of the step from one second to the next, s/s.
    pub(super) wander: f64,
    pub(super) rng: Rng,
}

impl Oscillator {
    pub(super) fn new(freq: f64, wander: f64, seed: u64) -> Oscillator {
        Oscillator {
            t_ns: 0,
            raw_ns: RAW0_NS as f64,
            freq,
            wander,
            rng: Rng(seed),
        }
    }

    /// Raw time at true time `t` (ns since the start; never earlier than the last call).
    pub(super) fn raw_at(&mut self, t: i64) -> i64 {
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
pub(super) struct Clocks {
    pub(super) raw_ns: i64,
    pub(super) realtime_ns: i64,
    /// Fraction of a ns gained, in 1 / (65536e6) ns.
    pub(super) frac: i128,
    pub(super) rate: KernelRate,
    /// CLOCK_REALTIME runs this much faster than `rate` says, in 1/65536 ppm (the test
    /// VM's kernel measured +67.75 ppm at the nominal setting).
    pub(super) bias_scaled_ppm: i64,
}

#[derive(Clone)]
pub(super) struct SimKernel(pub(super) Arc<Mutex<Clocks>>);

impl SimKernel {
    pub(super) fn new(raw_ns: i64, realtime_ns: i64, bias_ppm: f64) -> SimKernel {
        SimKernel(Arc::new(Mutex::new(Clocks {
            raw_ns,
            realtime_ns,
            frac: 0,
            rate: KernelRate::NOMINAL,
            bias_scaled_ppm: (bias_ppm * 65536.0).round() as i64,
        })))
    }

    pub(super) fn clocks(&self) -> MutexGuard<'_, Clocks> {
        self.0.lock().expect("not poisoned")
    }

    /// Raw time moves on to `raw_ns`; realtime follows at the programmed rate.
    pub(super) fn advance(&self, raw_ns: i64) {
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

    pub(super) fn now(&self) -> Reading {
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
pub(super) struct ServerSpec {
    /// The server's clock − true time, ns, as `(from, offset)` in order of true time (ns
    /// since the start).
    pub(super) offsets: Vec<(i64, i64)>,
    /// Base one-way delays, ns: client → server, server → client.
    pub(super) out_ns: i64,
    pub(super) back_ns: i64,
    /// Mean of the exponential delay added to each leg, ns.
    pub(super) jitter_ns: f64,
    /// Half-width of a uniform delay added to each leg, ns: netem's `delay D J` draws each
    /// packet's delay uniformly from D ± J (a link emulator's jitter, not a queue's).
    pub(super) uniform_jitter_ns: f64,
    /// Probability that a packet (either leg) is lost.
    pub(super) loss: f64,
    /// Standard deviation of the noise in each reading of the server's clock (its receive
    /// and transmit timestamps), ns: a server's own timestamping is not exact either.
    pub(super) clock_noise_ns: f64,
    /// A leap second the server announces until it applies it: (true time of the
    /// midnight, ns since the start; +1 inserted, −1 deleted). With `offsets` to match.
    pub(super) leap: Option<(i64, i64)>,
}

impl ServerSpec {
    /// A good server: 100 µs each way (clknetsim's default base delay) plus `jitter_ns`
    /// of exponential delay on each leg, no loss.
    pub(super) fn lan(jitter_ns: f64) -> ServerSpec {
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
    pub(super) fn netem(delay_ns: i64, jitter_ns: f64) -> ServerSpec {
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
    pub(super) fn leaping(mut self, at: i64, delta_s: i64) -> ServerSpec {
        let applied_at = if delta_s > 0 { at } else { at - S };
        let offset = self.offset_at(applied_at);
        self.offsets.push((applied_at, offset - delta_s * S));
        self.leap = Some((applied_at, delta_s));
        self
    }

    pub(super) fn offset_at(&self, t: i64) -> i64 {
        self.offsets
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map_or(0, |(_, offset)| *offset)
    }
}
