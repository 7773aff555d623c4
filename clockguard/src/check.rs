//! `clockguard check`: is this host's time setup sound? One verdict per finding (PASS,
//! WARN, FAIL) with the remedy, so it can gate a deployment (exit status 2 on FAIL).
//!
//! The judgement is pure: it reads a [`Facts`] gathered beforehand (files, the LSM list,
//! and the daemon's `status` and `sources` when it runs), so every rule is unit-tested.

use serde::Serialize;

use clockguard_core::status::{HookStatus, SourceReport, SourcesAnswer, Status};

use crate::{config::Config, guard::TimeService};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// A stable name for scripts ("time_services", "rtc_local_time", ...).
    pub check: &'static str,
    pub verdict: Verdict,
    pub message: String,
    /// What to do about it (None on PASS).
    pub remedy: Option<String>,
}

/// What the checks look at.
pub struct Facts<'a> {
    pub config: &'a Config,
    /// Other time services configured, enabled or running.
    pub time_services: Vec<TimeService>,
    /// /etc/adjtime, when it exists.
    pub adjtime: Option<String>,
    /// The active LSMs, and where that came from.
    pub lsms: crate::lsm::ActiveLsms,
    /// The daemon's `status` and `sources` answers (None: not running, or not reachable).
    pub status: Option<Status>,
    pub sources: Option<SourcesAnswer>,
    /// Why the daemon could not be asked.
    pub daemon_error: Option<String>,
}

/// p99 timer lateness above this (ns) is worth a warning; at the stall threshold it fails.
const LATENESS_WARN_NS: u64 = 10_000_000;

fn finding(
    check: &'static str,
    verdict: Verdict,
    message: String,
    remedy: Option<String>,
) -> Finding {
    Finding {
        check,
        verdict,
        message,
        remedy,
    }
}

pub fn run(facts: &Facts) -> Vec<Finding> {
    let mut out = vec![
        time_services(facts),
        rtc_local_time(facts),
        bpf_lsm(facts),
        daemon_hooks(facts),
    ];
    out.extend(ntp_sources(facts));
    out.extend(kvm_clock(facts));
    out.extend(clocksource_stability(facts));
    out.extend(timer_lateness(facts));
    out
}

/// The worst verdict of all findings (PASS when there are none).
pub fn overall(findings: &[Finding]) -> Verdict {
    findings
        .iter()
        .map(|f| f.verdict)
        .max()
        .unwrap_or(Verdict::Pass)
}

fn time_services(facts: &Facts) -> Finding {
    let mut names: Vec<&str> = facts
        .time_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    names.sort();
    names.dedup();
    let evidence = facts
        .time_services
        .iter()
        .map(|s| format!("{} ({})", s.name, s.evidence))
        .collect::<Vec<_>>()
        .join(", ");
    let clockguard_ntp = facts.config.ntp.has_sources();
    match names.len() {
        0 if clockguard_ntp => finding(
            "time_services",
            Verdict::Pass,
            "no other time service; clockguard's own NTP client disciplines the clock".into(),
            None,
        ),
        0 => finding(
            "time_services",
            Verdict::Warn,
            "no time service is configured: nothing keeps this clock on time".into(),
            Some(
                "set [ntp] servers in clockguard's config (slew only), or install one time \
                 daemon"
                    .into(),
            ),
        ),
        1 => finding(
            "time_services",
            Verdict::Pass,
            format!("one time service: {evidence}"),
            None,
        ),
        _ => finding(
            "time_services",
            Verdict::Fail,
            format!(
                "{} time services are configured at once: {evidence}. They conflict at boot: \
                 each one steers the kernel clock and steps it back when the other moved it",
                names.len()
            ),
            Some({
                // Keep chrony when it is one of them (it slews fastest), else the first.
                let keep = names
                    .iter()
                    .copied()
                    .find(|n| *n == "chronyd")
                    .unwrap_or(names[0]);
                let others: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| *n != keep)
                    .map(unit_of)
                    .collect();
                format!(
                    "keep one time service (e.g. {keep}) and disable and remove the others: \
                     `systemctl disable --now {}`, then remove their packages or \
                     configuration files, and run clockguard check again",
                    others.join(" ")
                )
            }),
        ),
    }
}

fn unit_of(service: &str) -> &'static str {
    match service {
        "chronyd" => "chrony",
        "ntpd" => "ntp",
        "openntpd" => "openntpd",
        "systemd-timesyncd" => "systemd-timesyncd",
        _ => "<the unit>",
    }
}

fn rtc_local_time(facts: &Facts) -> Finding {
    // /etc/adjtime: line 3 is UTC or LOCAL (hwclock(8)); no file means UTC.
    let local = facts
        .adjtime
        .as_deref()
        .and_then(|text| text.lines().nth(2))
        .is_some_and(|line| line.trim() == "LOCAL");
    if local {
        finding(
            "rtc_local_time",
            Verdict::Warn,
            "the RTC keeps local time (/etc/adjtime says LOCAL): every DST change and every \
             boot before NTP answers puts the clock off by the zone's offset"
                .into(),
            Some("`timedatectl set-local-rtc 0` (or `hwclock --systohc --utc`)".into()),
        )
    } else {
        finding(
            "rtc_local_time",
            Verdict::Pass,
            "the RTC keeps UTC".into(),
            None,
        )
    }
}

fn bpf_lsm(facts: &Facts) -> Finding {
    let guard_wanted = facts.config.mode == crate::config::Mode::Guard;
    let lsms = &facts.lsms;
    let list = lsms.list.as_ref().map(|l| l.join(","));
    match lsms.bpf_active() {
        Some(true) => finding(
            "bpf_lsm",
            Verdict::Pass,
            format!(
                "the BPF LSM is active ({}; from {})",
                list.unwrap_or_default(),
                lsms.source
            ),
            None,
        ),
        None => finding(
            "bpf_lsm",
            Verdict::Warn,
            format!(
                "whether the BPF LSM is active is {}: whether guard mode can refuse a step \
                 is unknown",
                lsms.source
            ),
            Some("`mount -t securityfs securityfs /sys/kernel/security`, then check again".into()),
        ),
        Some(false) => finding(
            "bpf_lsm",
            if guard_wanted {
                Verdict::Fail
            } else {
                Verdict::Warn
            },
            format!(
                "the BPF LSM is not active (active: {}): guard mode cannot refuse a step{}",
                list.as_deref().unwrap_or(""),
                if guard_wanted {
                    ", and the config asks for guard mode"
                } else {
                    ""
                }
            ),
            Some(format!(
                "boot with lsm={}bpf on the kernel command line (GRUB_CMDLINE_LINUX in \
                 /etc/default/grub, then update-grub and reboot)",
                list.filter(|l| !l.is_empty())
                    .map(|l| format!("{l},"))
                    .unwrap_or_default()
            )),
        ),
    }
}

/// The hooks not attached, grouped by reason (the first line of the kernel's error), in the
/// order the reasons first appear: a kernel that refuses fentry refuses it for every hook,
/// and one sentence with a count says that better than thirteen.
fn missing_hooks_by_reason(hooks: &[HookStatus]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let missing = hooks
        .iter()
        .filter(|h| !h.attached)
        // A syscall tracepoint whose syscall fentry/fexit sees is not missing.
        .filter(|h| h.replaced_by.is_none());
    for hook in missing {
        let reason = hook
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("not attached")
            .to_string();
        let name = hook.name.clone();
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, names)) => names.push(name),
            None => groups.push((reason, vec![name])),
        }
    }
    groups
}

fn daemon_hooks(facts: &Facts) -> Finding {
    let Some(status) = &facts.status else {
        return finding(
            "clockguard_hooks",
            Verdict::Warn,
            format!(
                "clockguard is not running ({}): nothing audits or guards the clock",
                facts.daemon_error.as_deref().unwrap_or("no answer")
            ),
            Some("start it: `systemctl start clockguard` (or `clockguard run`)".into()),
        );
    };
    let missing = missing_hooks_by_reason(&status.hooks);
    let guard_configured = status.mode_configured == "guard";
    let enforcing = status.enforcement.active;
    if guard_configured && !enforcing {
        return finding(
            "clockguard_hooks",
            Verdict::Fail,
            format!(
                "guard mode is configured but not enforced: {}",
                status.enforcement.reason
            ),
            Some("see `clockguard status` for each hook and the reason".into()),
        );
    }
    if missing.is_empty() {
        finding(
            "clockguard_hooks",
            Verdict::Pass,
            "every clockguard hook is attached".into(),
            None,
        )
    } else {
        finding(
            "clockguard_hooks",
            Verdict::Warn,
            format!(
                "hooks missing on kernel {}: {}",
                status.kernel_release.as_deref().unwrap_or("?"),
                missing
                    .iter()
                    .map(|(reason, names)| format!(
                        "{} ({}): {reason}",
                        names.len(),
                        names.join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Some(
                "a locked-down kernel refuses fentry/LSM (EPERM); hooks disabled in the \
                 config are listed too: see `clockguard status`"
                    .into(),
            ),
        )
    }
}

fn ntp_sources(facts: &Facts) -> Option<Finding> {
    let ntp = &facts.config.ntp;
    let configured = ntp.servers.len() + ntp.pools.len() + ntp.nts_servers.len();
    if configured == 0 {
        return None;
    }
    let report = facts.sources.as_ref()?;
    let sources = &report.sources;
    let reachable: Vec<&SourceReport> = sources.iter().filter(|s| s.reachable()).collect();
    let mut unreachable: Vec<String> = sources
        .iter()
        .filter(|s| !s.reachable())
        .map(|s| s.name.clone())
        .collect();
    // Names that did not resolve have no source at all.
    unreachable.extend(
        report
            .unresolved
            .iter()
            .map(|n| format!("{n} (does not resolve)")),
    );
    // NTS servers whose key exchange never worked have no source either.
    unreachable.extend(report.nts.iter().filter(|n| n.address.is_none()).map(|n| {
        format!(
            "{} (NTS key exchange: {})",
            n.name,
            n.last_error.as_deref().unwrap_or("not done yet")
        )
    }));
    Some(if reachable.is_empty() {
        finding(
            "ntp_sources",
            Verdict::Fail,
            format!(
                "no NTP server answers ({} configured{})",
                configured,
                if unreachable.is_empty() {
                    String::new()
                } else {
                    format!(": {}", unreachable.join(", "))
                }
            ),
            Some(if ntp.nts_servers.is_empty() {
                "check the names, the route and UDP port 123 (firewall) to them".into()
            } else {
                "check the names, the route, UDP port 123 and, for NTS, TCP port 4460 (the \
                 key exchange) and the server's certificate (ntp.nts_ca)"
                    .into()
            }),
        )
    } else if !unreachable.is_empty() {
        finding(
            "ntp_sources",
            Verdict::Warn,
            format!(
                "{} of {} NTP sources unreachable: {}",
                unreachable.len(),
                reachable.len() + unreachable.len(),
                unreachable.join(", ")
            ),
            Some("check those servers, or remove them from [ntp]".into()),
        )
    } else {
        finding(
            "ntp_sources",
            Verdict::Pass,
            match sources.len() {
                1 => "the NTP source answers".to_string(),
                n => format!("all {n} NTP sources answer"),
            },
            None,
        )
    })
}

/// What the kernel's clocksource watchdog said since boot (/dev/kmsg, through the daemon).
fn clocksource_stability(facts: &Facts) -> Option<Finding> {
    let messages = facts.status.as_ref()?.vm.kernel_clock_messages.as_ref()?;
    let unstable: Vec<&str> = messages
        .iter()
        .filter(|m| m.is_instability())
        .map(|m| m.text.as_str())
        .collect();
    Some(match unstable.last() {
        Some(last) => finding(
            "clocksource_stability",
            Verdict::Warn,
            format!(
                "the kernel marked a clocksource unstable {} time(s) since boot, last: {last}",
                unstable.len()
            ),
            Some(
                "the kernel switched to another clocksource: look at the host's load and \
                 time setup; on KVM prefer a host with an invariant TSC and the stable \
                 kvmclock bit"
                    .into(),
            ),
        ),
        None => finding(
            "clocksource_stability",
            Verdict::Pass,
            "no clocksource marked unstable by the kernel".into(),
            None,
        ),
    })
}

fn kvm_clock(facts: &Facts) -> Option<Finding> {
    let status = facts.status.as_ref()?;
    if status.vm.facts.clocksource.as_deref() != Some("kvm-clock") {
        return None;
    }
    let found = &status.timers.found;
    let (jumps, stalls) = (found.clocksource_jumps, found.stalls);
    Some(if jumps + stalls > 0 {
        finding(
            "kvm_clock",
            Verdict::Fail,
            format!(
                "kvm-clock is the clocksource and clockguard saw {jumps} clocksource jumps \
                 and {stalls} stalls"
            ),
            Some(
                "with an invariant TSC, boot with clocksource=tsc tsc=reliable (the field's \
                 fix for kvmclock jumps); otherwise look at the host's load and its kvmclock"
                    .into(),
            ),
        )
    } else if status.vm.facts.kvmclock_stable_bit == Some(false) {
        finding(
            "kvm_clock",
            Verdict::Warn,
            "kvm-clock is the clocksource and the host does not promise it stable \
             (KVM_FEATURE_CLOCKSOURCE_STABLE_BIT is clear): CPUs may see it warp"
                .into(),
            Some(
                "with an invariant TSC, boot with clocksource=tsc tsc=reliable; otherwise \
                 watch `clockguard status` for clocksource jumps"
                    .into(),
            ),
        )
    } else {
        finding(
            "kvm_clock",
            Verdict::Pass,
            "kvm-clock is the clocksource and no jump was seen".into(),
            None,
        )
    })
}

fn timer_lateness(facts: &Facts) -> Option<Finding> {
    let status = facts.status.as_ref()?;
    let lateness = status.timers.lateness.as_ref()?;
    let (p99, expiries) = (lateness.p99_le_ns, lateness.expiries);
    let stall_ns = (status.timers.stall_threshold_ms * 1e6) as u64;
    let text = format!(
        "99 % of {expiries} timer expiries ran within {:.3} ms of their time",
        p99 as f64 / 1e6
    );
    Some(if p99 >= stall_ns {
        finding(
            "timer_lateness",
            Verdict::Fail,
            format!("{text}: timers routinely stall"),
            Some(
                "find what holds the CPUs (steal time in top, an RT hog, interrupts off); \
                 on a VM, the host's load"
                    .into(),
            ),
        )
    } else if p99 >= LATENESS_WARN_NS {
        finding(
            "timer_lateness",
            Verdict::Warn,
            format!("{text}: the tail is long"),
            Some("look at CPU load and steal time".into()),
        )
    } else {
        finding("timer_lateness", Verdict::Pass, text, None)
    })
}

#[cfg(test)]
mod tests;
