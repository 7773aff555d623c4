//! The hypervisor's vmclock device (Linux's ptp_vmclock, `/dev/vmclock0`; QEMU's
//! `-device vmclock`, AWS's Nitro): a page the host keeps, whose disruption marker changes
//! when the relation between the guest's CPU counter and true time breaks (a live
//! migration, a snapshot restored), and whose flags warn of maintenance to come. What the
//! page says and what a change means are decided here; the daemon reads the page.
//!
//! The layout is Linux's `include/uapi/linux/vmclock-abi.h` (version 1, little-endian):
//! magic "VCLK" at 0, size at 4, version at 8, counter id at 10, time type at 11, the
//! seqlock's count at 12, the disruption marker at 16, the flags at 24, the clock status
//! at 34, and (when the size covers it and the flag says so) the VM generation counter at
//! 104. The driver's read() copies the page under the seqlock, so a page read whole is
//! consistent.

use serde::{Deserialize, Serialize};

use crate::record::{rfc3339_ns, Record, Source, Verdict};
use crate::time::{Monotonic, Realtime};

/// "VCLK", little-endian.
pub const MAGIC: u32 = 0x4b4c_4356;
/// The one version of the ABI.
pub const VERSION: u16 = 1;
/// Bytes of the page clockguard reads: the whole structure, through the VM generation
/// counter.
pub const ABI_LEN: usize = 112;
/// Bytes a page must have for the fields clockguard uses (through the flags).
const MIN_LEN: usize = 32;

/// Maintenance in about a day (the host's warning).
pub const FLAG_DISRUPTION_SOON: u64 = 1 << 1;
/// Maintenance in about an hour.
pub const FLAG_DISRUPTION_IMMINENT: u64 = 1 << 2;
/// The VM generation counter changes whenever the guest is loaded from a saved state.
pub const FLAG_VM_GEN_COUNTER_PRESENT: u64 = 1 << 8;
/// The host notifies the guest (ACPI) of each update: poll() on the device wakes then
/// (not used yet: QEMU 10 does not notify).
pub const FLAG_NOTIFICATION_PRESENT: u64 = 1 << 9;

/// Where ClockBound's readers open the device themselves (their default path).
pub const READERS_PATH: &str = "/dev/vmclock0";

/// Whether the ClockBound segment may announce disruption support for the device followed
/// at `path`, whose file mode is `mode`: readers then open READERS_PATH themselves and
/// compare its marker with the segment's, so it must be that device, and every user must
/// be able to read it (a reader that cannot open it can read no bound at all). Else why
/// not; the segment still says Disrupted on a new marker, from clockguard's own reads.
pub fn readers_can_compare(path: &std::path::Path, mode: u32) -> Result<(), String> {
    if path != std::path::Path::new(READERS_PATH) {
        return Err(format!(
            "ClockBound's readers compare with {READERS_PATH}, not {}",
            path.display()
        ));
    }
    if mode & 0o004 == 0 {
        return Err(format!(
            "{READERS_PATH} is not readable by every user (mode {:04o}): ClockBound's readers \
             that do not run as root could not open it; the clockguard package's udev rule \
             (60-clockguard-vmclock.rules) makes it 0444",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// One consistent reading of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub seq_count: u32,
    pub disruption_marker: u64,
    pub flags: u64,
    /// The host's view of its own clock: 0 unknown, 1 initializing, 2 synchronized,
    /// 3 free running, 4 unreliable.
    pub clock_status: u8,
    /// Present only when the page is long enough and its flag says so.
    pub vm_generation: Option<u64>,
}

impl Page {
    pub fn disruption_soon(&self) -> bool {
        self.flags & FLAG_DISRUPTION_SOON != 0
    }
    pub fn disruption_imminent(&self) -> bool {
        self.flags & FLAG_DISRUPTION_IMMINENT != 0
    }
    /// The host's maintenance warning, the nearer one when both flags are set.
    pub fn maintenance_warning(&self) -> Option<&'static str> {
        if self.disruption_imminent() {
            Some("maintenance within about an hour")
        } else if self.disruption_soon() {
            Some("maintenance within about a day")
        } else {
            None
        }
    }
    pub fn notifies(&self) -> bool {
        self.flags & FLAG_NOTIFICATION_PRESENT != 0
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The page as read from the device, or what makes it not a vmclock page of version 1.
pub fn parse(bytes: &[u8]) -> Result<Page, String> {
    if bytes.len() < MIN_LEN {
        return Err(format!(
            "{} bytes read, a vmclock page has at least {MIN_LEN}",
            bytes.len()
        ));
    }
    let magic = le_u32(bytes, 0);
    if magic != MAGIC {
        return Err(format!("magic {magic:#010x}, not \"VCLK\" ({MAGIC:#010x})"));
    }
    let version = le_u16(bytes, 8);
    if version != VERSION {
        return Err(format!(
            "version {version}, clockguard reads version {VERSION}"
        ));
    }
    let seq_count = le_u32(bytes, 12);
    if seq_count & 1 != 0 {
        // The driver's read() retries until the count is even; an odd one is a page copied
        // some other way, mid-update.
        return Err(format!(
            "read during an update (sequence count {seq_count} is odd)"
        ));
    }
    let size = le_u32(bytes, 4) as usize;
    let flags = le_u64(bytes, 24);
    let covers_generation = size >= ABI_LEN && bytes.len() >= ABI_LEN;
    Ok(Page {
        seq_count,
        disruption_marker: le_u64(bytes, 16),
        flags,
        clock_status: bytes.get(34).copied().unwrap_or(0),
        vm_generation: (covers_generation && flags & FLAG_VM_GEN_COUNTER_PRESENT != 0)
            .then(|| le_u64(bytes, 104)),
    })
}

/// What changed on the page since the last reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The disruption marker (or the VM generation) changed: the guest's clock is no
    /// longer calibrated against true time.
    Disrupted {
        from_marker: u64,
        to_marker: u64,
        restored_from_snapshot: bool,
    },
    /// The host's maintenance warning changed.
    Warning { soon: bool, imminent: bool },
}

/// Follows the page: the first reading is the baseline (nothing happened before
/// clockguard looked), and each later one is compared with the one before.
#[derive(Clone, Debug, Default)]
pub struct Follower {
    last: Option<Page>,
    disruptions: u64,
}

impl Follower {
    pub fn last(&self) -> Option<&Page> {
        self.last.as_ref()
    }
    /// Marker changes seen since clockguard started.
    pub fn disruptions(&self) -> u64 {
        self.disruptions
    }

    /// The changes a new reading shows, in the order they matter (a disruption first).
    pub fn observe(&mut self, page: Page) -> Vec<Change> {
        let Some(before) = self.last.replace(page) else {
            return Vec::new();
        };
        let mut changes = Vec::new();
        let generation_changed = matches!(
            (before.vm_generation, page.vm_generation),
            (Some(was), Some(now)) if was != now
        );
        if page.disruption_marker != before.disruption_marker || generation_changed {
            self.disruptions += 1;
            changes.push(Change::Disrupted {
                from_marker: before.disruption_marker,
                to_marker: page.disruption_marker,
                restored_from_snapshot: generation_changed,
            });
        }
        let warning = |p: &Page| (p.disruption_soon(), p.disruption_imminent());
        if warning(&page) != warning(&before) {
            changes.push(Change::Warning {
                soon: page.disruption_soon(),
                imminent: page.disruption_imminent(),
            });
        }
        changes
    }
}

/// The journal's record of a disruption seen at `at` (CLOCK_MONOTONIC): source timers,
/// kind `vmclock_disruption`, so that it counts as a time jump (for tracked services and
/// the metrics) and disrupts the error bound with the device's new marker
/// ([`crate::bound::disruption_of`]).
pub fn disruption_record(
    from_marker: u64,
    to_marker: u64,
    restored_from_snapshot: bool,
    at: Monotonic,
    wall: Realtime,
) -> Record {
    let cause = if restored_from_snapshot {
        "snapshot_restored"
    } else {
        "migrated"
    };
    Record {
        time: rfc3339_ns(wall.ns()),
        source: Source::Timers,
        clock: Some("CLOCK_MONOTONIC".into()),
        kind: "vmclock_disruption".into(),
        cause: Some(cause.into()),
        detail: Some(serde_json::json!({
            "from_marker": from_marker,
            "marker": to_marker,
            "restored_from_snapshot": restored_from_snapshot,
            "at_mono_ns": at.ns(),
        })),
        requested: serde_json::json!({}),
        result: "0".into(),
        verdict: Verdict::Observed,
        // When tracked services' deaths are set against it.
        mono_ns: Some(at.ns()),
        ..Default::default()
    }
}

/// What `status` says of the vmclock device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmclockStatus {
    /// The device followed, or None when `timers.vmclock` is empty (not looked for).
    pub device: Option<String>,
    /// Why it is not followed: "no vmclock device (ptp_vmclock)", or the read error.
    pub not_followed: Option<String>,
    /// The last reading, while followed.
    pub page: Option<Page>,
    /// Marker changes seen since clockguard started.
    pub disruptions: u64,
    /// Readings that failed (tried again at the next tick).
    pub read_errors: u64,
    /// How the device is read: "read every N ms".
    pub watched_by: Option<String>,
    /// Whether the ClockBound segment announces disruption support (readers then compare
    /// its marker with the device's), and if not, why.
    #[serde(default)]
    pub readers_compare: Option<bool>,
    #[serde(default)]
    pub readers_compare_not_because: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as the host writes it.
    fn page_bytes(marker: u64, flags: u64, generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&4096u32.to_le_bytes());
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = 0xff; // no counter
        b[12..16].copy_from_slice(&6u32.to_le_bytes());
        b[16..24].copy_from_slice(&marker.to_le_bytes());
        b[24..32].copy_from_slice(&flags.to_le_bytes());
        b[34] = 2;
        b[104..112].copy_from_slice(&generation.to_le_bytes());
        b
    }

    #[test]
    fn a_page_reads_with_its_marker_flags_and_generation() {
        let flags = FLAG_DISRUPTION_SOON | FLAG_VM_GEN_COUNTER_PRESENT;
        let page = parse(&page_bytes(0x1234_5678_9abc, flags, 7)).unwrap();
        assert_eq!(page.disruption_marker, 0x1234_5678_9abc);
        assert_eq!(page.seq_count, 6);
        assert_eq!(page.clock_status, 2);
        assert_eq!(page.vm_generation, Some(7));
        assert!(page.disruption_soon());
        assert!(!page.disruption_imminent());
        assert_eq!(
            page.maintenance_warning(),
            Some("maintenance within about a day")
        );
        let both = parse(&page_bytes(
            1,
            FLAG_DISRUPTION_SOON | FLAG_DISRUPTION_IMMINENT,
            0,
        ));
        assert_eq!(
            both.unwrap().maintenance_warning(),
            Some("maintenance within about an hour"),
            "the nearer one"
        );
        assert!(!page.notifies());
        // Without the flag, the generation field means nothing.
        let page = parse(&page_bytes(1, 0, 7)).unwrap();
        assert_eq!(page.vm_generation, None);
        // Read only through the flags: no generation, whatever the flag says.
        let short = &page_bytes(1, FLAG_VM_GEN_COUNTER_PRESENT, 7)[..40];
        assert_eq!(parse(short).unwrap().vm_generation, None);
    }

    #[test]
    fn what_is_not_a_vmclock_page_is_named() {
        let err = parse(&[0u8; 8]).unwrap_err();
        assert!(err.contains("8 bytes read"), "{err}");
        let mut b = page_bytes(1, 0, 0);
        b[0] = b'X';
        assert!(parse(&b).unwrap_err().contains("magic"));
        let mut b = page_bytes(1, 0, 0);
        b[8] = 2;
        assert!(parse(&b).unwrap_err().contains("version 2"));
        let mut b = page_bytes(1, 0, 0);
        b[12] = 7;
        assert!(parse(&b).unwrap_err().contains("odd"));
    }

    #[test]
    fn the_first_reading_is_the_baseline_and_a_new_marker_a_disruption() {
        let mut follower = Follower::default();
        let at = |marker, flags, generation| parse(&page_bytes(marker, flags, generation)).unwrap();
        assert_eq!(follower.observe(at(41, 0, 0)), vec![]);
        assert_eq!(follower.observe(at(41, 0, 0)), vec![], "nothing changed");
        // A generation that only one of two readings has is no change.
        let with_generation = at(41, FLAG_VM_GEN_COUNTER_PRESENT, 3);
        assert_eq!(follower.observe(with_generation), vec![]);
        assert_eq!(follower.observe(at(41, 0, 0)), vec![]);
        assert_eq!(
            follower.observe(at(42, 0, 0)),
            vec![Change::Disrupted {
                from_marker: 41,
                to_marker: 42,
                restored_from_snapshot: false
            }]
        );
        assert_eq!(follower.disruptions(), 1);
        assert_eq!(follower.last().unwrap().disruption_marker, 42);
    }

    #[test]
    fn a_new_generation_alone_is_a_restore() {
        let mut follower = Follower::default();
        let gen = FLAG_VM_GEN_COUNTER_PRESENT;
        let at = |generation| parse(&page_bytes(5, gen, generation)).unwrap();
        follower.observe(at(1));
        assert_eq!(
            follower.observe(at(2)),
            vec![Change::Disrupted {
                from_marker: 5,
                to_marker: 5,
                restored_from_snapshot: true
            }]
        );
    }

    #[test]
    fn warnings_are_reported_when_they_change_after_a_disruption() {
        let mut follower = Follower::default();
        let at = |marker, flags| parse(&page_bytes(marker, flags, 0)).unwrap();
        follower.observe(at(1, 0));
        assert_eq!(
            follower.observe(at(1, FLAG_DISRUPTION_SOON)),
            vec![Change::Warning {
                soon: true,
                imminent: false
            }]
        );
        assert_eq!(follower.observe(at(1, FLAG_DISRUPTION_SOON)), vec![]);
        let changes = follower.observe(at(2, 0));
        assert!(matches!(changes[0], Change::Disrupted { to_marker: 2, .. }));
        assert_eq!(
            changes[1],
            Change::Warning {
                soon: false,
                imminent: false
            }
        );
    }

    #[test]
    fn readers_compare_only_the_device_they_open_and_only_when_they_all_can() {
        let dev = std::path::Path::new(READERS_PATH);
        assert_eq!(readers_can_compare(dev, 0o20444), Ok(()));
        let root_only = readers_can_compare(dev, 0o20600).unwrap_err();
        assert!(root_only.contains("mode 0600"), "{root_only}");
        let other = readers_can_compare(std::path::Path::new("/dev/vmclock1"), 0o444);
        assert!(other.unwrap_err().contains("not /dev/vmclock1"));
    }

    #[test]
    fn the_record_disrupts_the_bound_with_the_device_s_marker_and_counts_as_a_jump() {
        let record = disruption_record(
            41,
            42,
            false,
            Monotonic::from_ns(5_000_000_000),
            Realtime::from_ns(1_700_000_000_000_000_000),
        );
        assert_eq!(
            crate::bound::disruption_of(&record, 1),
            Some((
                crate::bound::Disruption::Vmclock { marker: 42 },
                Some(Monotonic::from_ns(5_000_000_000))
            ))
        );
        assert_eq!(
            crate::correlation::jump_cause(&record).as_deref(),
            Some("vmclock_disruption")
        );
        // It reads back as the journal writes it (mono_ns is the daemon's, not journaled).
        let line = serde_json::to_string(&record).unwrap();
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(
            back,
            Record {
                mono_ns: None,
                ..record
            }
        );
    }
}
