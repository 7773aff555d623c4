//! The daemon answers recorded before the status was typed (core/tests/golden, see
//! core/tests/golden.rs): fixtures for the unit tests of the readers (CLI printers, `check`,
//! metrics), which change the one field a test is about.

use clockguard_core::status::{SourcesAnswer, Stall, StallCause, Status, Tracking};
use clockguard_core::time::Monotonic;

/// The host's `status` answer: observe mode, NTP from a loopback reference 11 s off, two
/// tracked services, every fentry/LSM hook refused with EPERM.
pub fn status() -> Status {
    serde_json::from_str(include_str!("../core/tests/golden/status-host.json"))
        .expect("the golden status reads")
}

/// A 5.002 s pause of the whole VM (CPUs 0 and 1): what the golden status lacks.
pub fn stall() -> Stall {
    Stall {
        started: Monotonic::from_ns(0),
        ended: Monotonic::from_ns(5_002_000_000),
        duration_ns: 5_002_000_000,
        cause: StallCause::VmPaused,
        explanation: StallCause::VmPaused.explain().into(),
        cpus: vec![0, 1],
        online_cpus: 2,
        steal_ns: None,
        hypervisor: None,
        late_timers: 2,
        timers: vec![],
    }
}

/// The `tracking` answer recorded with it.
pub fn tracking() -> Tracking {
    serde_json::from_str(include_str!("../core/tests/golden/tracking-host.json"))
        .expect("the golden tracking reads")
}

/// The `sources` answer recorded with it.
pub fn sources() -> SourcesAnswer {
    serde_json::from_str(include_str!("../core/tests/golden/sources-host.json"))
        .expect("the golden sources reads")
}
