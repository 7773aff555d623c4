//! The clock error bound: kept from the NTP service's measurements and from every
//! disruption the daemon sees, and published as a ClockBound segment the moment either
//! changes it (clockguard_core::bound decides, clockguard_sys::segment writes).

use clockguard_core::{
    bound::{self, Bound, Disruption, Policy, Update},
    clockbound::ErrorBound,
    config::BoundConfig,
    time::Monotonic,
};
use clockguard_sys::segment::ClockBoundWriter;

use super::*;

/// The bound and the segment it is written to.
pub(super) struct Publisher {
    bound: Bound,
    /// None when the segment could not be opened (`segment_error` says why): the bound is
    /// kept all the same, for `now`, `status` and the metrics.
    writer: Option<ClockBoundWriter>,
    path: PathBuf,
    segment_error: Option<String>,
    writes: u64,
    /// How much earlier than the bound's own as_of the segment dates it, ns: one tick of
    /// CLOCK_MONOTONIC_COARSE (see `READER_MARGIN_MAX_NS`).
    reader_margin_ns: i64,
}

/// ClockBound's client refuses a bound dated after its own CLOCK_MONOTONIC_COARSE read
/// (CausalityBreach, with 1 µs of tolerance), and one reader in the VM saw that once in
/// 188,000 reads of a bound dated at the writer's coarse now (AWS's code notes the same
/// and leaves it unexplained). The segment dates the bound a tick earlier: readers grow it
/// from then, which makes it wider by the drift over a tick (at most 500 ppm × 4 ms =
/// 2 µs at HZ=250), never narrower. At most this much, whatever clock_getres says.
const READER_MARGIN_MAX_NS: i64 = 10_000_000;

impl Publisher {
    /// Opens the segment (creating its directory), publishes Unknown, and says in the log
    /// what it could not do: a bound that cannot be published stops nothing else.
    /// `marker`: the disruption marker to start from (the vmclock device's, when one is
    /// followed).
    pub(super) fn start(config: &BoundConfig, policy: Policy, marker: u64) -> Publisher {
        let path = config.path.clone();
        let (writer, segment_error) = match open_segment(&path) {
            Ok(writer) => {
                tracing::info!(
                    "bound: publishing the clock error bound at {}",
                    path.display()
                );
                (Some(writer), None)
            }
            Err(why) => {
                tracing::error!(
                    "bound: cannot write the ClockBound segment {}: {why}; the bound is \
                     kept (`clockguard now`) but not published",
                    path.display()
                );
                (None, Some(why))
            }
        };
        let mut publisher = Publisher {
            bound: Bound::new(policy, marker, clock::monotonic_coarse()),
            writer,
            path,
            segment_error,
            writes: 0,
            reader_margin_ns: clockguard_sys::clock_resolution_ns(libc::CLOCK_MONOTONIC_COARSE)
                .unwrap_or(READER_MARGIN_MAX_NS)
                .clamp(0, READER_MARGIN_MAX_NS),
        };
        publisher.write(publisher.bound.last());
        publisher
    }

    fn write(&mut self, published: ErrorBound) {
        if let Some(writer) = &mut self.writer {
            writer.publish(&ErrorBound {
                as_of: published.as_of.plus_ns(-self.reader_margin_ns),
                ..published
            });
            self.writes += 1;
        }
    }

    /// Applies `change` to the bound as of now and writes the result when it differs;
    /// gives the bound before and after. Now is CLOCK_MONOTONIC_COARSE, the readers' own
    /// clock: a bound dated after their now would be refused (a causality breach).
    fn change(
        &mut self,
        change: impl FnOnce(&mut Bound, Monotonic) -> ErrorBound,
    ) -> (ErrorBound, ErrorBound) {
        let before = self.bound.last();
        let published = change(&mut self.bound, clock::monotonic_coarse());
        if published != before {
            self.write(published);
        }
        (before, published)
    }

    /// What `now` and `status` show.
    pub(super) fn answer(&self) -> bound::Answer {
        let now = clock::monotonic_coarse();
        bound::Answer {
            segment: Some(self.path.display().to_string()),
            segment_error: self.segment_error.clone(),
            segment_writes: self.writes,
            ..self.bound.answer(now, clock::realtime())
        }
    }
}

/// The segment's writer, its directory created if missing; what went wrong, in words.
fn open_segment(path: &Path) -> std::result::Result<ClockBoundWriter, String> {
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::create_dir_all(dir)
            .map_err(|err| format!("cannot create its directory {}: {err}", dir.display()))?;
    }
    ClockBoundWriter::open(path).map_err(|err| err.to_string())
}

/// A pause this long disrupts the bound; a shorter one widens it by its length. A second:
/// a live migration's or a host's stop is longer, an emulator's or a loaded host's timer
/// hiccup (100 ms here and there under TCG) shorter.
const PAUSE_DISRUPTS: std::time::Duration = std::time::Duration::from_secs(1);

/// The bound's policy under `config` with the guard as it is enforced; `vmclock`: a
/// vmclock device is followed (readers then check the segment's marker against it).
pub(super) fn policy(config: &Config, enforcement: &Enforcement, vmclock: bool) -> Policy {
    Policy {
        drift_floor_ppb: config.bound.drift_floor_ppb,
        void_after_ns: (config.bound.void_after_s as i64).saturating_mul(1_000_000_000),
        error_sigmas: config.bound.error_sigmas,
        disruption_support: vmclock,
        exclusive_discipline: enforcement.active && config.guard.exclusive_discipline,
        // Two slew updates at the fastest slew: one interval, and as much again for the
        // engine's task to be scheduled (TCG VMs take tens of ms).
        slew_in_flight_ns: (config.guard.max_slew_ppm
            * 1e-6
            * 2.0
            * SLEW_INTERVAL.as_nanos() as f64) as i64,
        pause_disrupts_ns: PAUSE_DISRUPTS.as_nanos() as i64,
    }
}

impl Daemon {
    /// The NTP service measured the clock, or lost its sources.
    pub(super) fn on_bound_update(&mut self, update: Update) {
        if let Some(publisher) = self.bound.as_mut() {
            publisher.change(|bound, _| bound.update(update));
        }
    }

    /// Something broke the line between CLOCK_MONOTONIC and true time (at `happened`, on
    /// CLOCK_MONOTONIC, when known; else now): Disrupted at once, and the NTP sources are
    /// polled in a burst so that it is measured again soon.
    pub(super) fn bound_disrupted(&mut self, what: Disruption, happened: Option<Monotonic>) {
        let Some(publisher) = self.bound.as_mut() else {
            return;
        };
        let (before, published) =
            publisher.change(|bound, now| bound.disrupted(now, happened.unwrap_or(now), what));
        if published == before {
            // Already measured past it, or the same stall seen again.
            return;
        }
        if published.disruption_marker == before.disruption_marker
            && published.status == before.status
        {
            tracing::debug!("bound: widened by {what:?}");
            return;
        }
        tracing::info!("bound: disrupted ({what:?}) until measured again");
        if let Some(ntp) = &self.ntp {
            match what {
                // The host says the calibration is void: measured again even right after
                // another burst.
                Disruption::Vmclock { .. } => ntp.burst_forced(),
                _ => ntp.burst(),
            }
        }
    }

    /// The disruptions among records about to be journaled.
    pub(super) fn bound_disruptions(&mut self, records: &[Record]) {
        if self.bound.is_none() {
            return;
        }
        let own = std::process::id();
        for (what, happened) in records.iter().filter_map(|r| bound::disruption_of(r, own)) {
            self.bound_disrupted(what, happened);
        }
    }

    /// clockguard is about to slew in a correction the discipline did not ask for (a
    /// refused step), or (0) will not after all; the bound (ns) then published, if one is
    /// kept.
    pub(super) fn bound_slewing_in(&mut self, remaining_ns: i64) -> Option<i64> {
        let publisher = self.bound.as_mut()?;
        let (_, published) = publisher.change(|bound, now| bound.slewing_in(now, remaining_ns));
        Some(published.bound_ns)
    }

    /// Every BOUND_REFRESH: the bound dated now, so that readers do not take it for
    /// FreeRunning (they do once it is 5 s old).
    pub(super) fn bound_refresh(&mut self) {
        if let Some(publisher) = self.bound.as_mut() {
            publisher.change(Bound::refresh);
        }
    }

    /// The guard's policy may have changed who may slew (a reload).
    pub(super) fn bound_policy_changed(&mut self) {
        let policy = policy(
            &self.config,
            &self.enforcement,
            self.vmclock.readers_marker().is_some(),
        );
        if let Some(publisher) = self.bound.as_mut() {
            publisher.change(|bound, now| bound.set_policy(now, policy));
        }
    }

    /// A vmclock device found after start: the bound takes its marker, and the segment
    /// announces disruption support from now on.
    pub(super) fn bound_follow_vmclock(&mut self, marker: u64) {
        let policy = policy(&self.config, &self.enforcement, true);
        if let Some(publisher) = self.bound.as_mut() {
            publisher.change(|bound, _| bound.follow_device(marker, policy));
        }
    }

    pub(super) fn bound_answer(&self) -> Option<bound::Answer> {
        self.bound.as_ref().map(Publisher::answer)
    }
}
