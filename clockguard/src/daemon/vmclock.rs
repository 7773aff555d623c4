//! The hypervisor's vmclock device, followed: a new disruption marker (a live migration,
//! a snapshot restored) is journaled as a time jump, which disrupts the error bound with
//! the device's marker, and the NTP sources are polled at once; the host's maintenance
//! warnings are logged and shown in `status` and the metrics.

use clockguard_core::bound::Disruption;

use crate::vmclock::{self, Change, Device, NotFollowed, VmclockStatus};

use super::*;
use clockguard_core::config::TimersConfig;

/// The device as start-up found it, and what has been read from it since.
pub(super) struct VmclockWatch {
    device: Option<Device>,
    follower: vmclock::Follower,
    /// None when `timers.vmclock` is "" (not looked for).
    configured: Option<PathBuf>,
    not_followed: Option<String>,
    poll_ms: u64,
    read_errors: u64,
}

impl VmclockWatch {
    /// Opens the configured device and takes its first reading as the baseline.
    pub(super) fn start(config: &TimersConfig) -> VmclockWatch {
        let mut watch = VmclockWatch {
            device: None,
            follower: vmclock::Follower::default(),
            configured: None,
            not_followed: None,
            poll_ms: config.vmclock_poll_ms,
            read_errors: 0,
        };
        if config.vmclock.as_os_str().is_empty() {
            return watch;
        }
        watch.configured = Some(config.vmclock.clone());
        match Device::open(&config.vmclock) {
            Ok((device, page)) => {
                tracing::info!(
                    "vmclock: following {} (disruption marker {:#x}, flags {:#x}), read every \
                     {} ms",
                    device.path().display(),
                    page.disruption_marker,
                    page.flags,
                    watch.poll_ms
                );
                warn_of_maintenance(&page);
                watch.follower.observe(page);
                watch.device = Some(device);
            }
            Err(NotFollowed::Absent(why)) => {
                tracing::info!("vmclock: {why}");
                watch.not_followed = Some(why);
            }
            Err(NotFollowed::Unusable(why)) => {
                tracing::warn!("vmclock: {why}; not followed");
                watch.not_followed = Some(why);
            }
        }
        watch
    }

    /// The device's marker at start, when one is followed: the error bound's marker then,
    /// which readers compare with the device's.
    pub(super) fn marker(&self) -> Option<u64> {
        self.device
            .as_ref()
            .and(self.follower.last())
            .map(|p| p.disruption_marker)
    }

    /// How often the page is read, when a device is followed.
    pub(super) fn poll_interval(&self) -> Option<tokio::time::Interval> {
        self.device.as_ref()?;
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(self.poll_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(interval)
    }

    pub(super) fn status(&self) -> VmclockStatus {
        VmclockStatus {
            device: self.configured.as_ref().map(|p| p.display().to_string()),
            not_followed: self.not_followed.clone(),
            page: self.device.as_ref().and(self.follower.last().copied()),
            disruptions: self.follower.disruptions(),
            read_errors: self.read_errors,
            watched_by: self
                .device
                .as_ref()
                .map(|_| format!("read every {} ms", self.poll_ms)),
        }
    }
}

fn warn_of_maintenance(page: &vmclock::Page) {
    if page.disruption_imminent() {
        tracing::warn!("vmclock: the host warns of maintenance within about an hour");
    } else if page.disruption_soon() {
        tracing::warn!("vmclock: the host warns of maintenance within about a day");
    }
}

impl Daemon {
    /// Reads the vmclock page and acts on what changed.
    pub(super) fn on_vmclock_poll(&mut self) {
        let Some(device) = self.vmclock.device.as_ref() else {
            return;
        };
        let page = match device.read() {
            Ok(page) => page,
            Err(why) => {
                // The page is the host's; a read that fails now and then (the driver gives
                // up on a seqlock held too long) is tried again at the next tick.
                self.vmclock.read_errors += 1;
                tracing::debug!("vmclock: {why}");
                return;
            }
        };
        let at = clock::monotonic();
        for change in self.vmclock.follower.observe(page) {
            match change {
                Change::Disrupted {
                    from_marker,
                    to_marker,
                    restored_from_snapshot,
                } => {
                    // The segment first: readers distrust it until it carries the device's
                    // new marker (ClockBound's client says Unknown meanwhile).
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
                    // Measured again at once, with or without an error bound to keep (with
                    // one, bound_disrupted has asked already: a burst is asked for once).
                    if let Some(ntp) = &self.ntp {
                        ntp.burst();
                    }
                }
                Change::Warning { soon, imminent } => {
                    if soon || imminent {
                        warn_of_maintenance(&page);
                    } else {
                        tracing::info!("vmclock: the host's maintenance warning is withdrawn");
                    }
                }
            }
        }
    }
}
