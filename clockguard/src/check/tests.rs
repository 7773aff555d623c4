use super::*;
use clockguard_core::status::{ClockMessage, LatenessSummary};
use serde_json::json;
use serde_json::Value;

fn config(text: &str) -> Config {
    Config::parse(text, "t").unwrap()
}

fn lsms(list: &str) -> crate::lsm::ActiveLsms {
    crate::lsm::ActiveLsms {
        list: Some(crate::lsm::parse_lsm_file(list)),
        source: crate::lsm::LSM_FILE.into(),
    }
}

fn facts<'a>(config: &'a Config) -> Facts<'a> {
    Facts {
        config,
        time_services: Vec::new(),
        adjtime: None,
        lsms: lsms("lockdown,capability,landlock,yama,apparmor,bpf"),
        status: Some(status()),
        sources: None,
        daemon_error: None,
    }
}

/// The golden status with one attached hook, no kernel messages, the TSC as
/// clocksource and a short lateness tail.
fn status() -> Status {
    let mut status = crate::golden::status();
    status.hooks = vec![hook("settime", true, None)];
    status.mode_configured = "observe".into();
    status.enforcement.active = false;
    status.vm.facts.clocksource = Some("tsc".into());
    status.vm.kernel_clock_messages = Some(Vec::new());
    status.timers.stall_threshold_ms = 100.0;
    status.timers.found = Default::default();
    status.timers.lateness = Some(LatenessSummary {
        p99_le_ns: 131_071,
        expiries: 5000,
        ..LatenessSummary::default()
    });
    status
}

fn hook(name: &str, attached: bool, error: Option<&str>) -> HookStatus {
    HookStatus {
        attached,
        error: error.map(String::from),
        ..HookStatus::new(name, "fentry", name.into())
    }
}

/// The golden source under each (name, reach), and the names that did not resolve.
fn sources(rows: &[(&str, &str)], unresolved: &[&str]) -> SourcesAnswer {
    let golden = crate::golden::sources().sources[0].clone();
    SourcesAnswer {
        sources: rows
            .iter()
            .map(|(name, reach)| SourceReport {
                name: name.to_string(),
                reach: reach.to_string(),
                ..golden.clone()
            })
            .collect(),
        unresolved: unresolved.iter().map(ToString::to_string).collect(),
        nts: Vec::new(),
    }
}

fn clock_message(kind: &str, text: &str) -> ClockMessage {
    ClockMessage {
        seq: 1,
        uptime_s: 0.5,
        kind: kind.into(),
        text: text.into(),
        before_start: true,
    }
}

/// `check` judges the golden answers as the clockguard of before the typed status did
/// (golden/check-host.json, 2026-12-05), with one other time service and an RTC in
/// local time.
#[test]
fn the_findings_on_the_golden_answers_are_unchanged() {
    let c = config("[ntp]\nservers = [\"127.0.0.1:34014\"]\n");
    let status = crate::golden::status();
    let f = Facts {
        config: &c,
        time_services: vec![service("chronyd", "running: pid 812")],
        adjtime: Some("0.0 0 0.0\n0\nLOCAL\n".into()),
        lsms: status.lsms.clone(),
        status: Some(status),
        sources: Some(crate::golden::sources()),
        daemon_error: None,
    };
    let findings = run(&f);
    let now = json!({"overall": overall(&findings), "findings": findings});
    let then: Value =
        serde_json::from_str(include_str!("../../core/tests/golden/check-host.json")).unwrap();
    assert_eq!(now, then);
}

fn service(name: &str, evidence: &str) -> TimeService {
    TimeService {
        name: name.into(),
        evidence: evidence.into(),
    }
}

fn verdict_of(findings: &[Finding], check: &str) -> Verdict {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
        .verdict
}

#[test]
fn chrony_and_ntp_both_configured_fail_with_a_remedy() {
    let c = config("");
    let mut f = facts(&c);
    f.time_services = vec![
        service("chronyd", "configured: /etc/chrony/chrony.conf"),
        service("ntpd", "configured: /etc/ntp.conf"),
    ];
    let findings = run(&f);
    let bad = findings
        .iter()
        .find(|x| x.check == "time_services")
        .unwrap();
    assert_eq!(bad.verdict, Verdict::Fail);
    assert!(bad.message.contains("chrony.conf") && bad.message.contains("ntp.conf"));
    assert!(bad
        .remedy
        .as_deref()
        .unwrap()
        .contains("systemctl disable --now ntp"));
    assert_eq!(overall(&findings), Verdict::Fail);
}

#[test]
fn a_clean_host_passes() {
    let c = config("[ntp]\nservers = [\"10.0.0.1\"]\n");
    let mut f = facts(&c);
    f.sources = Some(sources(&[("10.0.0.1", "377")], &[]));
    let findings = run(&f);
    assert_eq!(overall(&findings), Verdict::Pass, "{findings:?}");
    assert_eq!(verdict_of(&findings, "ntp_sources"), Verdict::Pass);
    assert!(findings.iter().all(|x| x.remedy.is_none()));
}

#[test]
fn rtc_in_local_time_warns() {
    let c = config("");
    let mut f = facts(&c);
    f.adjtime = Some("0.0 0 0.0\n0\nLOCAL\n".into());
    assert_eq!(verdict_of(&run(&f), "rtc_local_time"), Verdict::Warn);
    f.adjtime = Some("0.0 0 0.0\n0\nUTC\n".into());
    assert_eq!(verdict_of(&run(&f), "rtc_local_time"), Verdict::Pass);
}

#[test]
fn no_bpf_lsm_fails_only_when_guard_is_configured() {
    let observe = config("");
    let mut f = facts(&observe);
    f.lsms = lsms("lockdown,capability,apparmor");
    let findings = run(&f);
    let lsm = findings.iter().find(|x| x.check == "bpf_lsm").unwrap();
    assert_eq!(lsm.verdict, Verdict::Warn);
    assert!(lsm
        .remedy
        .as_deref()
        .unwrap()
        .contains("lsm=lockdown,capability,apparmor,bpf"));
    let guard = config("mode = \"guard\"\n");
    let mut f = facts(&guard);
    f.lsms = lsms("capability");
    assert_eq!(verdict_of(&run(&f), "bpf_lsm"), Verdict::Fail);
    // Unknown is a warning that says why, never a list without bpf.
    f.lsms = crate::lsm::ActiveLsms {
        list: None,
        source: "unknown: no securityfs".into(),
    };
    let findings = run(&f);
    let lsm = findings.iter().find(|x| x.check == "bpf_lsm").unwrap();
    assert_eq!(lsm.verdict, Verdict::Warn);
    assert!(
        lsm.message.contains("unknown: no securityfs"),
        "{}",
        lsm.message
    );
}

#[test]
fn hooks_missing_or_guard_not_enforced() {
    let c = config("");
    let mut f = facts(&c);
    f.status.as_mut().unwrap().hooks = vec![hook("settime", false, Some("EPERM"))];
    assert_eq!(verdict_of(&run(&f), "clockguard_hooks"), Verdict::Warn);
    f.status.as_mut().unwrap().hooks = vec![
        hook("fentry_adjtimex", true, None),
        HookStatus {
            replaced_by: Some("fentry_adjtimex".into()),
            ..hook("sys_enter_adjtimex", false, None)
        },
    ];
    assert_eq!(verdict_of(&run(&f), "clockguard_hooks"), Verdict::Pass);
    // One reason, one group with a count, not one sentence per hook.
    f.status.as_mut().unwrap().hooks = vec![
        hook(
            "fentry_adjtimex",
            false,
            Some("loading: EPERM\nVerifier output: x"),
        ),
        hook("settime", false, Some("loading: EPERM")),
        hook("clock_was_set", false, Some("loading: EPERM")),
        hook("hrtimer_expire_entry", false, None),
    ];
    f.status.as_mut().unwrap().kernel_release = Some("6.18.44".into());
    let findings = run(&f);
    let hooks = findings
        .iter()
        .find(|x| x.check == "clockguard_hooks")
        .unwrap();
    assert_eq!(
        hooks.message,
        "hooks missing on kernel 6.18.44: 3 (fentry_adjtimex, settime, clock_was_set): \
         loading: EPERM; 1 (hrtimer_expire_entry): not attached"
    );
    f.status.as_mut().unwrap().hooks = vec![hook("settime", false, Some("EPERM"))];
    f.status.as_mut().unwrap().mode_configured = "guard".into();
    assert_eq!(verdict_of(&run(&f), "clockguard_hooks"), Verdict::Fail);
    f.status = None;
    f.daemon_error = Some("no such socket".into());
    let findings = run(&f);
    assert_eq!(verdict_of(&findings, "clockguard_hooks"), Verdict::Warn);
    // Without the daemon the checks that need it are left out, not guessed.
    assert!(findings.iter().all(|x| x.check != "timer_lateness"));
}

#[test]
fn unreachable_ntp_servers() {
    let c = config("[ntp]\nservers = [\"a\", \"b\"]\n");
    let mut f = facts(&c);
    f.sources = Some(sources(&[("a", "0")], &["b"]));
    assert_eq!(verdict_of(&run(&f), "ntp_sources"), Verdict::Fail);
    f.sources = Some(sources(&[("a", "7"), ("b", "0")], &[]));
    let findings = run(&f);
    let x = findings.iter().find(|x| x.check == "ntp_sources").unwrap();
    assert_eq!(x.verdict, Verdict::Warn);
    assert!(x.message.contains('b'));
}

#[test]
fn an_nts_server_whose_key_exchange_fails_is_named_with_its_error() {
    let c = config("[ntp]\nnts_servers = [\"time.example\"]\n");
    let mut f = facts(&c);
    let mut answer = sources(&[], &[]);
    answer.nts = vec![clockguard_core::status::NtsReport {
        name: "time.example:4460".into(),
        key_exchange_errors: 3,
        last_error: Some("key exchange failed: TLS handshake: invalid peer certificate".into()),
        ..Default::default()
    }];
    f.sources = Some(answer);
    let findings = run(&f);
    let x = findings.iter().find(|x| x.check == "ntp_sources").unwrap();
    assert_eq!(x.verdict, Verdict::Fail);
    assert!(
        x.message.contains(
            "time.example:4460 (NTS key exchange: key exchange failed: TLS handshake: \
             invalid peer certificate)"
        ),
        "{}",
        x.message
    );
    assert!(x.remedy.as_deref().unwrap_or("").contains("TCP port 4460"));
}

#[test]
fn kernel_instability_warns_and_an_unpromised_kvmclock_too() {
    let c = config("");
    let mut f = facts(&c);
    let status = f.status.as_mut().unwrap();
    status.vm.kernel_clock_messages = Some(vec![clock_message(
        "clocksource_switch",
        "clocksource: Switched to clocksource kvm-clock",
    )]);
    assert_eq!(verdict_of(&run(&f), "clocksource_stability"), Verdict::Pass);
    let status = f.status.as_mut().unwrap();
    status.vm.kernel_clock_messages = Some(vec![clock_message(
        "tsc_unstable",
        "tsc: Marking TSC unstable due to clocksource watchdog",
    )]);
    status.vm.facts.clocksource = Some("kvm-clock".into());
    status.vm.facts.kvmclock_stable_bit = Some(false);
    let findings = run(&f);
    let x = findings
        .iter()
        .find(|x| x.check == "clocksource_stability")
        .unwrap();
    assert_eq!(x.verdict, Verdict::Warn);
    assert!(x.message.contains("Marking TSC unstable"), "{}", x.message);
    assert_eq!(verdict_of(&findings, "kvm_clock"), Verdict::Warn);
    f.status.as_mut().unwrap().vm.facts.kvmclock_stable_bit = Some(true);
    assert_eq!(verdict_of(&run(&f), "kvm_clock"), Verdict::Pass);
}

#[test]
fn kvm_clock_with_jumps_fails_and_lateness_tail_is_judged() {
    let c = config("");
    let mut f = facts(&c);
    let status = f.status.as_mut().unwrap();
    status.vm.facts.clocksource = Some("kvm-clock".into());
    status.timers.found.stalls = 2;
    status.timers.found.clocksource_jumps = 1;
    status.timers.lateness.as_mut().unwrap().p99_le_ns = 16_777_215;
    let findings = run(&f);
    assert_eq!(verdict_of(&findings, "kvm_clock"), Verdict::Fail);
    assert_eq!(verdict_of(&findings, "timer_lateness"), Verdict::Warn);
    f.status
        .as_mut()
        .unwrap()
        .timers
        .lateness
        .as_mut()
        .unwrap()
        .p99_le_ns = 268_435_455;
    assert_eq!(verdict_of(&run(&f), "timer_lateness"), Verdict::Fail);
}
