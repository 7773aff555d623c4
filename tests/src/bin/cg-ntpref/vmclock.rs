//! `vmclock-watch`: in a guest with a vmclock device, waits for its disruption marker to
//! change (the host restored the guest from a migration stream or a snapshot) and times
//! what ClockBound's readers see then: ClockBound's own client, which compares the device's
//! marker with the segment's itself (and says Unknown while they differ), and clockguard's
//! segment, which clockguard rewrites from the device (Disrupted, with the device's new
//! marker). Then how long until the
//! segment is synchronized again (the NTP sources measured after the disruption). Times
//! are on CLOCK_MONOTONIC from the first reading of the device that showed the new marker.

use std::fs::File;
use std::os::unix::fs::FileExt;

use clock_bound_client::{ClockBoundClient, ClockStatus as Theirs};
use clockguard_core::clockbound::{self, ClockStatus, ErrorBound};
use clockguard_core::vmclock;

use super::*;

/// The host gets this long to migrate the guest after `--ready` appears.
const MIGRATION_WAIT: Duration = Duration::from_secs(300);
/// After the marker changed, the segment must say Disrupted within this long.
const DISRUPTED_WAIT: Duration = Duration::from_secs(5);

fn page(device: &File, path: &str) -> Result<vmclock::Page, String> {
    let mut buf = [0u8; vmclock::ABI_LEN];
    let n = device
        .read_at(&mut buf, 0)
        .map_err(|e| format!("{path}: {e}"))?;
    vmclock::parse(&buf[..n]).map_err(|e| format!("{path}: {e}"))
}

fn segment(file: &File) -> Option<ErrorBound> {
    let mut bytes = [0u8; clockbound::SEGMENT_SIZE];
    file.read_exact_at(&mut bytes, 0).ok()?;
    clockbound::decode(&bytes).ok().map(|(_, bound)| bound)
}

fn mono_ns() -> i64 {
    read_ns(libc::CLOCK_MONOTONIC)
}

pub(crate) fn vmclock_watch_cmd(args: &[String]) -> Result<Value, String> {
    let opts = Opts::parse(
        args,
        &["--segment", "--vmclock", "--ready", "--resync-s"],
        0,
    )?;
    let segment_path = opts.required("--segment")?;
    let device_path = opts.get("--vmclock").unwrap_or("/dev/vmclock0");
    let ready = opts.required("--ready")?;
    let resync_s: u64 = opts.parsed("--resync-s", 120)?;
    let device = File::open(device_path).map_err(|e| format!("{device_path}: {e}"))?;
    let before = page(&device, device_path)?;
    let segment_file = File::open(segment_path).map_err(|e| format!("{segment_path}: {e}"))?;
    let published = segment(&segment_file).ok_or("the segment cannot be read")?;
    if !published.disruption_support {
        return Err("the segment does not announce disruption support".into());
    }
    if published.disruption_marker != before.disruption_marker {
        return Err(format!(
            "the segment's marker {:#x} is not the device's {:#x}",
            published.disruption_marker, before.disruption_marker
        ));
    }
    let mut client = ClockBoundClient::new_with_paths(segment_path, device_path)
        .map_err(|e| format!("ClockBound's client: {:?} {}", e.kind, e.detail))?;
    let client_before = client
        .now()
        .map_err(|e| format!("ClockBound's client: {:?} {}", e.kind, e.detail))?
        .clock_status;
    std::fs::write(ready, b"").map_err(|e| format!("--ready {ready}: {e}"))?;

    // The host stops, saves and restores the guest now: the first reading with a new
    // marker is the restore as the guest can see it (1 ms apart).
    let waiting = Instant::now();
    let (after, seen_ns) = loop {
        let now = page(&device, device_path)?;
        if now.disruption_marker != before.disruption_marker {
            break (now, mono_ns());
        }
        if waiting.elapsed() > MIGRATION_WAIT {
            return Err(format!(
                "the marker stayed {:#x} for {} s",
                before.disruption_marker,
                MIGRATION_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let since = |ns: i64| (ns - seen_ns) as f64 / 1e3;
    // ClockBound's client says Unknown on its own while the segment's marker is not the
    // device's, and Disrupted once the segment says so.
    let (mut client_distrusts_us, mut client_disrupted_us, mut segment_disrupted_us) =
        (None, None, None);
    let mut segment_then = None;
    let mut stale_trusted_reads = 0u64;
    while since(mono_ns()) < DISRUPTED_WAIT.as_secs_f64() * 1e6
        && (client_disrupted_us.is_none() || segment_disrupted_us.is_none())
    {
        if let Ok(now) = client.now() {
            let at = since(mono_ns());
            // Synchronized now could only be the bound from before the restore.
            if now.clock_status == Theirs::Synchronized {
                stale_trusted_reads += 1;
            }
            if client_distrusts_us.is_none() && now.clock_status != Theirs::Synchronized {
                client_distrusts_us = Some(at);
            }
            if client_disrupted_us.is_none() && now.clock_status == Theirs::Disrupted {
                client_disrupted_us = Some(at);
            }
        }
        if segment_disrupted_us.is_none() {
            if let Some(bound) = segment(&segment_file).filter(|b| {
                b.status == ClockStatus::Disrupted && b.disruption_marker == after.disruption_marker
            }) {
                segment_disrupted_us = Some(since(mono_ns()));
                segment_then = Some(bound);
            }
        }
        // 1 ms, as ClockBound's readers would poll at most: on the guest's one vCPU a
        // tighter loop takes the CPU from the daemon it times.
        std::thread::sleep(Duration::from_millis(1));
    }
    // Measured again after the disruption: synchronized, with the device's marker.
    let resync = Instant::now();
    let resynchronized_s = loop {
        let synced = segment(&segment_file).is_some_and(|b| {
            b.status == ClockStatus::Synchronized && b.disruption_marker == after.disruption_marker
        });
        if synced {
            break Some(since(mono_ns()) / 1e6);
        }
        if resync.elapsed() > Duration::from_secs(resync_s) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let client_after = client
        .now()
        .ok()
        .map(|now| format!("{:?}", now.clock_status));
    Ok(json!({
        "from_marker": before.disruption_marker,
        "to_marker": after.disruption_marker,
        "seen_mono_ns": seen_ns,
        "client_status_before": format!("{client_before:?}"),
        "client_distrusts_after_us": client_distrusts_us,
        "client_disrupted_after_us": client_disrupted_us,
        "client_synchronized_reads_before_disrupted": stale_trusted_reads,
        "segment_disrupted_after_us": segment_disrupted_us,
        "segment_marker_then": segment_then.map(|b| b.disruption_marker),
        "resynchronized_after_s": resynchronized_s,
        "client_status_after": client_after,
    }))
}
