//! The clock discipline: a weighted least-squares line through the combined offsets of the
//! selected sources against CLOCK_MONOTONIC_RAW, as chrony's regression does.
//!
//! Why a regression against the raw clock rather than a PLL/FLL on the system clock: the
//! raw clock is never steered (not by clockguard's slews, not by anyone's frequency
//! changes), so every sample lies on one line, offset(raw) = a + b·(raw − raw_ref), whatever
//! the slew engine did in between. The fit gives both the time (a) and the frequency error
//! of the oscillator (b) directly; there is no loop whose gain and damping interact with
//! the slew, and so no overshoot or ringing. Applying the estimate is the slew engine's job:
//! the base rate is set to b and the difference between the fitted time and
//! CLOCK_REALTIME is slewed away, at the kernel's fastest rate when it is large.
//!
//! A prior on b (the drift file, or the last estimate before a reset) regularises fits of
//! one or two samples. Three consecutive samples that disagree with the fit mean the
//! reference moved (a server that stepped): the window restarts from them.

use std::collections::VecDeque;

use crate::time::Raw;

/// A combined sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When the sample was taken.
    pub at: Raw,
    /// Reference time − local timescale (raw + a constant), s.
    pub offset_s: f64,
    /// Standard error of `offset_s` apart from queueing (timestamping, the server's
    /// precision), s (> 0).
    pub error_s: f64,
    /// Round-trip delay, s. A sample that queued longer than the fastest one in the window
    /// carries half the extra delay as error (the queueing may have been on either leg);
    /// the weights are recomputed as the fastest sample changes, so a slow first sample is
    /// not trusted once faster ones arrive.
    pub delay_s: f64,
}

/// The fitted line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// The instant the line is anchored at (weighted mean of the samples).
    pub anchor: Raw,
    /// Offset at `anchor`, s.
    pub offset_s: f64,
    /// Frequency of the reference against the raw clock, s/s (1e-6 = 1 ppm).
    pub freq: f64,
    /// Standard error of `freq`, s/s (chronyc's "skew").
    pub freq_sigma: f64,
    /// Standard error of `offset_s` at `anchor`, s.
    pub offset_sigma_s: f64,
    /// Weighted RMS of the residuals, s.
    pub residual_rms_s: f64,
    /// Samples in the fit.
    pub samples: usize,
    /// When the newest sample was taken.
    pub last: Raw,
}

impl Fit {
    /// The fitted offset at `at`, s.
    pub fn offset_at(&self, at: Raw) -> f64 {
        self.offset_s + self.freq * (at.ns_since(self.anchor) as f64 / 1e9)
    }

    /// Standard error of the fitted offset at `at`, s.
    pub fn sigma_at(&self, at: Raw) -> f64 {
        let dt = at.ns_since(self.anchor) as f64 / 1e9;
        (self.offset_sigma_s.powi(2) + (self.freq_sigma * dt).powi(2)).sqrt()
    }

    /// Expected standard deviation of a new sample (of error `error_s`) at `at` from the
    /// fitted line: the line's own error there, the sample's and the scatter so far.
    pub fn prediction_sigma(&self, at: Raw, error_s: f64) -> f64 {
        (self.sigma_at(at).powi(2) + error_s.powi(2) + self.residual_rms_s.powi(2)).sqrt()
    }
}

/// What [`Discipline::add`] did with a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// In the fit; `residual_s` is the sample minus the prediction before it was added.
    Accepted { residual_s: f64 },
    /// Held back: it disagrees with the fit (a spike), `residual_s` away.
    Outlier { residual_s: f64 },
    /// The reference moved: the fit restarted from the last outliers.
    Reset { residual_s: f64 },
}

#[derive(Clone, Debug)]
pub struct Discipline {
    max_samples: usize,
    samples: VecDeque<Held>,
    /// Consecutive outliers, newest last.
    outliers: Vec<Held>,
    prior_freq: f64,
    prior_sigma: f64,
    fit: Option<Fit>,
}

/// A sample in the window, with its error as it was judged when it came (against the
/// fastest recent sample then). Its weight uses the larger of that and its error against
/// the fastest sample now: an error can grow when a faster sample comes, never shrink.
#[derive(Clone, Copy, Debug)]
struct Held {
    point: Point,
    error_when_added_s: f64,
}

impl Held {
    fn error(&self, base: DelayBase) -> f64 {
        self.error_when_added_s
            .max(effective_error(&self.point, base))
    }
}

/// What a sample's delay is judged against: the fastest recent delay, and how far that
/// fastest one itself may be from a delay without queueing.
#[derive(Clone, Copy, Debug, PartialEq)]
struct DelayBase {
    /// The least delay among the recent samples, s.
    min_s: f64,
    /// Standard error of the fastest sample's offset, s: a quarter of the mean excess
    /// delay of the recent samples. The fastest of a few samples queued too (over netem's
    /// uniform 1 ms ± 200 µs each way, the fastest of 8 is about 160 µs above the least
    /// possible delay); without this floor its weight would be the timestamping error's
    /// alone and the fit would follow each new fastest sample.
    floor_s: f64,
}

/// Consecutive outliers that mean the reference moved.
const OUTLIERS_FOR_RESET: usize = 3;
/// A sample is an outlier beyond this many standard errors from the prediction.
const OUTLIER_SIGMAS: f64 = 5.0;
/// Outlier threshold floor, s: below it nothing is an outlier (samples agreeing within
/// 100 µs are never thrown away, however tight the fit).
const OUTLIER_FLOOR_S: f64 = 100e-6;
/// The fastest of this many recent samples is the delay without queueing.
const DELAY_WINDOW: usize = 8;
/// Least frequency uncertainty kept in a prior after a reset, s/s.
const MIN_PRIOR_SIGMA: f64 = 0.1e-6;

impl Discipline {
    /// `prior_freq` (s/s) with standard error `prior_sigma` (s/s): what is known of the
    /// oscillator before any sample (the drift file, or 0 ± 500 ppm).
    pub fn new(max_samples: usize, prior_freq: f64, prior_sigma: f64) -> Discipline {
        Discipline {
            max_samples: max_samples.max(2),
            samples: VecDeque::new(),
            outliers: Vec::new(),
            prior_freq,
            prior_sigma: prior_sigma.max(1e-12),
            fit: None,
        }
    }

    pub fn fit(&self) -> Option<Fit> {
        self.fit
    }

    /// How far (s) the held-back outliers lie from the fitted line, the farthest; 0 with
    /// none. Until more samples say whether they were spikes or the reference moving,
    /// either may be the truth.
    pub fn unconfirmed_s(&self) -> f64 {
        let Some(fit) = self.fit else { return 0.0 };
        self.outliers
            .iter()
            .map(|held| (held.point.offset_s - fit.offset_at(held.point.at)).abs())
            .fold(0.0, f64::max)
    }

    /// The delays of the recent samples of the window and `point`.
    fn delay_base(&self, point: Option<&Point>) -> DelayBase {
        let recent = self.samples.len().saturating_sub(DELAY_WINDOW);
        let delays = || {
            self.samples
                .iter()
                .skip(recent)
                .map(|h| &h.point)
                .chain(point)
                .map(|p| p.delay_s)
        };
        let min_s = delays().fold(f64::INFINITY, f64::min);
        let (sum, n) = delays().fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
        let floor_s = if n > 1 {
            (sum / n as f64 - min_s) / 4.0
        } else {
            0.0
        };
        DelayBase { min_s, floor_s }
    }

    /// The whole standard error of `point` (s) against the fastest sample of the window.
    pub fn error_of(&self, point: &Point) -> f64 {
        effective_error(point, self.delay_base(Some(point)))
    }

    /// Adds a sample (in raw-time order).
    pub fn add(&mut self, point: Point) -> Outcome {
        let held = Held {
            point,
            error_when_added_s: self.error_of(&point),
        };
        if self.fit.is_none() {
            self.samples.push_back(held);
            self.refit();
            return Outcome::Accepted { residual_s: 0.0 };
        }
        // A faster sample than any in the window first re-weighs the window: the earlier
        // samples queued, and the prediction is only as good as they were.
        let base = self.delay_base(None);
        if point.delay_s < base.min_s {
            self.refit_with(DelayBase {
                min_s: point.delay_s,
                ..base
            });
        }
        let fit = self.fit.expect("refit keeps a fit for a non-empty window");
        let residual_s = point.offset_s - fit.offset_at(point.at);
        let sigma = fit.prediction_sigma(point.at, self.error_of(&point));
        if residual_s.abs() > (OUTLIER_SIGMAS * sigma).max(OUTLIER_FLOOR_S) {
            self.outliers.push(held);
            if self.outliers.len() < OUTLIERS_FOR_RESET {
                self.refit();
                return Outcome::Outlier { residual_s };
            }
            // Keep the frequency: a reference that steps has not changed its rate.
            self.prior_freq = fit.freq;
            self.prior_sigma = fit.freq_sigma.max(MIN_PRIOR_SIGMA);
            self.samples = std::mem::take(&mut self.outliers).into();
            self.refit();
            return Outcome::Reset { residual_s };
        }
        self.outliers.clear();
        self.samples.push_back(held);
        while self.samples.len() > self.max_samples {
            self.samples.pop_front();
        }
        self.refit();
        Outcome::Accepted { residual_s }
    }

    fn refit(&mut self) {
        self.refit_with(self.delay_base(None));
    }

    /// Weighted least squares of offset = a + b·x (x = raw − mean, s) with the prior as a
    /// pseudo-observation on b: minimise Σ w(y − a − b·x)² + (b − b0)²/σ0². With x centred
    /// on the weighted mean, a = Σwy/Σw and b = (Σwxy + b0/σ0²)/(Σwx² + 1/σ0²).
    fn refit_with(&mut self, base: DelayBase) {
        let Some(last) = self.samples.back() else {
            self.fit = None;
            return;
        };
        let last_at = last.point.at;
        let first_at = self.samples[0].point.at;
        let x_of = |h: &Held| h.point.at.ns_since(first_at) as f64 / 1e9;
        let weight = |h: &Held| 1.0 / h.error(base).max(1e-9).powi(2);
        let sw: f64 = self.samples.iter().map(weight).sum();
        let mean_x = self
            .samples
            .iter()
            .map(|h| weight(h) * x_of(h))
            .sum::<f64>()
            / sw;
        let mean_y = self
            .samples
            .iter()
            .map(|h| weight(h) * h.point.offset_s)
            .sum::<f64>()
            / sw;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for h in &self.samples {
            let (x, y) = (x_of(h) - mean_x, h.point.offset_s - mean_y);
            sxx += weight(h) * x * x;
            sxy += weight(h) * x * y;
        }
        let prior = 1.0 / self.prior_sigma.powi(2);
        let freq = (sxy + self.prior_freq * prior) / (sxx + prior);
        let n = self.samples.len();
        let mut chi2 = 0.0;
        for h in &self.samples {
            let r = h.point.offset_s - mean_y - freq * (x_of(h) - mean_x);
            chi2 += weight(h) * r * r;
        }
        // Scale the formal errors by the observed scatter when there are degrees of
        // freedom left (the sample errors are estimates, not truths).
        let scale = if n > 2 {
            (chi2 / (n - 2) as f64).max(1.0)
        } else {
            1.0
        };
        self.fit = Some(Fit {
            anchor: first_at.plus_ns((mean_x * 1e9).round() as i64),
            offset_s: mean_y,
            freq,
            freq_sigma: (scale / (sxx + prior)).sqrt(),
            offset_sigma_s: (scale / sw).sqrt(),
            residual_rms_s: (chi2 / sw).sqrt(),
            samples: n,
            last: last_at,
        });
    }
}

/// A sample's error (s): its own and half its excess delay, combined in quadrature with the
/// window's floor. Spelled as a square root rather than `f64::hypot`, which is libm's: that
/// one call linked libm.so.6 into the daemon and cost 300 KiB of resident memory. The terms
/// are seconds (at most a few, never near overflow), where hypot's guard buys nothing.
fn effective_error(point: &Point, base: DelayBase) -> f64 {
    let own = point.error_s + (point.delay_s - base.min_s).max(0.0) / 2.0;
    (own * own + base.floor_s * base.floor_s).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn point(t_s: i64, offset_s: f64) -> Point {
        Point {
            at: Raw::from_ns(t_s * S),
            offset_s,
            error_s: 10e-6,
            delay_s: 0.001,
        }
    }

    /// Deterministic noise in [−1, 1] (a tiny LCG: tests must not be flaky).
    fn noise(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn one_sample_uses_the_prior_frequency() {
        let mut d = Discipline::new(16, 12e-6, 1e-6);
        d.add(point(100, 11.0));
        let fit = d.fit().unwrap();
        assert_eq!(fit.freq, 12e-6);
        assert!((fit.offset_at(Raw::from_ns(200 * S)) - (11.0 + 12e-6 * 100.0)).abs() < 1e-12);
    }

    #[test]
    fn frequency_and_offset_are_found_through_noise() {
        // 100 ppm oscillator error, 11 s offset, ±20 µs noise, 16 s polls.
        let mut d = Discipline::new(16, 0.0, 500e-6);
        let mut rng = 7;
        for i in 0..32 {
            let t = i * 16;
            let outcome = d.add(point(t, 11.0 + 100e-6 * t as f64 + 20e-6 * noise(&mut rng)));
            assert!(
                matches!(outcome, Outcome::Accepted { .. }),
                "{i}: {outcome:?}"
            );
        }
        let fit = d.fit().unwrap();
        assert_eq!(fit.samples, 16, "window is bounded");
        assert!((fit.freq - 100e-6).abs() < 0.2e-6, "freq {}", fit.freq);
        let now = Raw::from_ns(31 * 16 * S);
        let truth = 11.0 + 100e-6 * f64::from(31 * 16);
        assert!((fit.offset_at(now) - truth).abs() < 20e-6);
        assert!(fit.residual_rms_s < 20e-6 && fit.residual_rms_s > 1e-6);
        assert!(fit.freq_sigma < 1e-6);
    }

    #[test]
    fn a_slow_first_sample_is_outweighed_once_faster_ones_arrive() {
        // Seen in the test VM: the first reply of a burst queued 25 ms (offset 8 ms off),
        // the next ones took about 1 ms. The slow one must neither make the fast ones
        // outliers nor tilt the frequency.
        let mut d = Discipline::new(16, 0.0, 500e-6);
        let at = |t: i64, offset_s: f64, delay_s: f64| Point {
            at: Raw::from_ns(t * S),
            offset_s,
            error_s: 1e-6,
            delay_s,
        };
        d.add(at(0, 10.991_645_5, 0.025));
        for (t, offset, delay) in [
            (2, 11.000_216, 0.0008),
            (4, 11.000_602, 0.0017),
            (6, 11.000_144, 0.0014),
        ] {
            let outcome = d.add(at(t, offset, delay));
            assert!(
                matches!(outcome, Outcome::Accepted { .. }),
                "{t}: {outcome:?}"
            );
        }
        let fit = d.fit().unwrap();
        assert!(fit.freq.abs() < 100e-6, "freq {} ppm", fit.freq * 1e6);
        assert!(
            (fit.offset_at(Raw::from_ns(6 * S)) - 11.0003).abs() < 0.0005,
            "{fit:?}"
        );
    }

    #[test]
    fn a_spike_is_held_back() {
        let mut d = Discipline::new(16, 0.0, 500e-6);
        for i in 0..8 {
            d.add(point(i * 16, 0.5));
        }
        let outcome = d.add(point(8 * 16, 0.5 + 0.05));
        assert!(
            matches!(outcome, Outcome::Outlier { residual_s } if (residual_s - 0.05).abs() < 1e-6)
        );
        assert!(matches!(
            d.add(point(9 * 16, 0.5)),
            Outcome::Accepted { .. }
        ));
        assert!((d.fit().unwrap().offset_at(Raw::from_ns(9 * 16 * S)) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_spike_is_unconfirmed_until_the_next_sample_agrees_with_the_fit() {
        let mut d = Discipline::new(16, 0.0, 500e-6);
        for i in 0..8 {
            d.add(point(i * 16, 1.0));
        }
        assert!(matches!(d.add(point(8 * 16, 1.5)), Outcome::Outlier { .. }));
        assert!((d.unconfirmed_s() - 0.5).abs() < 1e-6);
        assert!(matches!(
            d.add(point(9 * 16, 1.0)),
            Outcome::Accepted { .. }
        ));
        assert_eq!(d.unconfirmed_s(), 0.0);
    }

    #[test]
    fn a_reference_that_steps_is_followed_after_three_samples() {
        let mut d = Discipline::new(16, 0.0, 500e-6);
        for i in 0..8 {
            d.add(point(i * 16, 1.0 + 50e-6 * (i * 16) as f64));
        }
        let freq_before = d.fit().unwrap().freq;
        assert_eq!(d.unconfirmed_s(), 0.0);
        let stepped = |i: i64| 3.0 + 50e-6 * (i * 16) as f64;
        assert!(matches!(
            d.add(point(8 * 16, stepped(8))),
            Outcome::Outlier { .. }
        ));
        // Held back, not yet decided: the 2 s may be the truth.
        assert!(
            (d.unconfirmed_s() - 2.0).abs() < 1e-6,
            "{}",
            d.unconfirmed_s()
        );
        assert!(matches!(
            d.add(point(9 * 16, stepped(9))),
            Outcome::Outlier { .. }
        ));
        assert!((d.unconfirmed_s() - 2.0).abs() < 1e-6);
        assert!(matches!(
            d.add(point(10 * 16, stepped(10))),
            Outcome::Reset { .. }
        ));
        assert_eq!(
            d.unconfirmed_s(),
            0.0,
            "decided: the fit is on the new line"
        );
        let fit = d.fit().unwrap();
        assert_eq!(fit.samples, 3);
        assert!((fit.freq - freq_before).abs() < 1e-8, "frequency kept");
        assert!((fit.offset_at(Raw::from_ns(10 * 16 * S)) - stepped(10)).abs() < 1e-6);
    }
}
