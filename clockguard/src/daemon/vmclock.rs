//! The hypervisor's vmclock device, followed: a new disruption marker (a live migration,
//! a snapshot restored) makes the error bound Disrupted with the device's marker at once,
//! is journaled as a time jump, and the NTP sources are polled at once; the host's
//! maintenance warnings are logged and shown in `status` and the metrics. A device that
//! is not there at start (its driver loads after clockguard under systemd) is looked for
//! again at every clock sample.

use clockguard_core::bound::Disruption;
use clockguard_core::config::TimersConfig;

use crate::vmclock::{self, Change, Device, NotFollowed, VmclockStatus};

use super::*;

/// The device, and what has been read from it.
pub(super) struct VmclockWatch {
    device: Option<Device>,
    follower: vmclock::Follower,
    /// None when `timers.vmclock` is "" (not looked for).
    configured: Option<PathBuf>,
    not_followed: Option<String>,
    /// Absent so far: looked for again at each clock sample.
    looking: bool,
    /// Whether the segment may announce disruption support (`readers_can_compare`).
    readers_compare: Option<Result<(), String>>,
    poll_ms: u64,
    read_errors: u64,
    /// The last read failed (logged once until a read works again).
    failing: bool,
}

impl VmclockWatch {
    /// Opens the configured device and takes its first reading as the baseline.
    pub(super) fn start(config: &TimersConfig) -> VmclockWatch {
        let mut watch = VmclockWatch {
            device: None,
            follower: vmclock::Follower::default(),
            configured: None,
            not_followed: None,
            looking: false,
            readers_compare: None,
            poll_ms: config.vmclock_poll_ms,
            read_errors: 0,
            failing: false,
        };
        if config.vmclock.as_os_str().is_empty() {
            return watch;
        }
        watch.configured = Some(config.vmclock.clone());
        watch.open(true);
        watch
    }

    /// Tries the device; true when it is followed from now on.
    fn open(&mut self, at_start: bool) -> bool {
        let Some(path) = self.configured.clone() else {
            return false;
        };
        match Device::open(&path) {
            Ok((device, page)) => {
                let compare = vmclock::readers_can_compare(device.path(), device.mode());
                tracing::info!(
                    "vmclock: following {}{} (disruption marker {:#x}, flags {:#x}), read every \
                     {} ms",
                    device.path().display(),
                    if at_start { "" } else { ", which appeared" },
                    page.disruption_marker,
                    page.flags,
                    self.poll_ms
                );
                if let Err(why) = &compare {
                    tracing::warn!(
                        "vmclock: {why}; the ClockBound segment does not announce disruption \
                         support (readers learn of a migration from its status alone)"
                    );
                }
                warn_of_maintenance(&page);
                self.follower.observe(page);
                self.device = Some(device);
                self.readers_compare = Some(compare);
                self.not_followed = None;
                self.looking = false;
                true
            }
            Err(NotFollowed::Absent(why)) => {
                if at_start {
                    tracing::info!("vmclock: {why}; looked for again every clock sample");
                }
                self.not_followed = Some(why);
                self.looking = true;
                false
            }
            Err(NotFollowed::Unusable(why)) => {
                tracing::warn!("vmclock: {why}; not followed");
                self.not_followed = Some(why);
                self.looking = false;
                false
            }
        }
    }

    /// The device's marker, when one is followed and readers compare it with the
    /// segment's: the error bound's marker then.
    pub(super) fn readers_marker(&self) -> Option<u64> {
        match (&self.device, &self.readers_compare) {
            (Some(_), Some(Ok(()))) => self.follower.last().map(|p| p.disruption_marker),
            _ => None,
        }
    }

    /// How often the page is read, once a device is followed.
    pub(super) fn poll_interval(&self) -> Option<tokio::time::Interval> {
        self.device.as_ref()?;
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(self.poll_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(interval)
    }

    pub(super) fn status(&self) -> VmclockStatus {
        let followed = self.device.is_some();
        VmclockStatus {
            device: self.configured.as_ref().map(|p| p.display().to_string()),
            not_followed: self.not_followed.clone(),
            page: self.device.as_ref().and(self.follower.last().copied()),
            disruptions: self.follower.disruptions(),
            read_errors: self.read_errors,
            watched_by: followed.then(|| format!("read every {} ms", self.poll_ms)),
            readers_compare: self.readers_compare.as_ref().map(Result::is_ok),
            readers_compare_not_because: self
                .readers_compare
                .as_ref()
                .and_then(|r| r.clone().err()),
        }
    }
}

fn warn_of_maintenance(page: &vmclock::Page) {
    if let Some(warning) = page.maintenance_warning() {
        tracing::warn!("vmclock: the host warns of {warning}");
    }
}

impl Daemon {
    /// At each clock sample: a device absent so far is looked for again. One that
    /// appears gives the error bound its marker (and readers the comparison).
    pub(super) fn vmclock_look_again(&mut self) {
        if !self.vmclock.looking || !self.vmclock.open(false) {
            return;
        }
        if let Some(marker) = self.vmclock.readers_marker() {
            self.bound_follow_vmclock(marker);
        }
    }

    /// The page's reads, once a device is followed (the event loop asks after each clock
    /// sample until there is one).
    pub(super) fn vmclock_poll_interval(&self) -> Option<tokio::time::Interval> {
        self.vmclock.poll_interval()
    }

    /// Reads the vmclock page and acts on what changed.
    pub(super) fn on_vmclock_poll(&mut self) {
        let Some(device) = self.vmclock.device.as_ref() else {
            return;
        };
        let page = match device.read() {
            Ok(page) => page,
            Err(why) => {
                // Tried again at the next tick; said once, not every 10 ms. Readers are
                // safe meanwhile (ClockBound's client compares the device's marker itself),
                // but a migration is journaled only once a read works again.
                self.vmclock.read_errors += 1;
                if !self.vmclock.failing {
                    tracing::warn!(
                        "vmclock: {why}; tried again every {} ms",
                        self.vmclock.poll_ms
                    );
                    self.vmclock.failing = true;
                }
                return;
            }
        };
        if self.vmclock.failing {
            tracing::info!(
                "vmclock: {} reads again ({} failed reads so far)",
                device.path().display(),
                self.vmclock.read_errors
            );
            self.vmclock.failing = false;
        }
        let at = clock::monotonic();
        for change in self.vmclock.follower.observe(page) {
            match change {
                Change::Disrupted {
                    from_marker,
                    to_marker,
                    restored_from_snapshot,
                } => {
                    // The segment first: readers that compare markers distrust it until it
                    // carries the new one (ClockBound's client says Unknown meanwhile);
                    // `bound_disrupted` also polls the NTP sources at once.
                    self.bound_disrupted(Disruption::Vmclock { marker: to_marker }, Some(at));
                    tracing::warn!(
                        "vmclock: disruption marker {from_marker:#x} -> {to_marker:#x}{}: the \
                         clock's calibration against true time is void",
                        if restored_from_snapshot {
                            " (restored from a snapshot)"
                        } else {
                            ""
                        }
                    );
                    let record = vmclock::disruption_record(
                        from_marker,
                        to_marker,
                        restored_from_snapshot,
                        at,
                        clock::realtime(),
                    );
                    self.journal_records(vec![record]);
                    // Without an error bound, `bound_disrupted` polled nothing.
                    if self.bound.is_none() {
                        if let Some(ntp) = &self.ntp {
                            ntp.burst_forced();
                        }
                    }
                }
                Change::Warning { .. } => match page.maintenance_warning() {
                    Some(_) => warn_of_maintenance(&page),
                    None => tracing::info!("vmclock: the host's maintenance warning is withdrawn"),
                },
            }
        }
    }
}
