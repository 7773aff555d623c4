use super::*;

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

#[test]
fn outcomes_from_run_suite_lines() {
    assert_eq!(
        parse_outcome("PASS t_10_hooks (12.3s)"),
        Some(("t_10_hooks".into(), Outcome::Pass))
    );
    assert_eq!(
        parse_outcome("FAIL t_60_guard (80.0s)"),
        Some(("t_60_guard".into(), Outcome::Fail))
    );
    assert_eq!(
        parse_outcome("SKIP t_95_vmclock (no vmclock device (ptp_vmclock))"),
        Some((
            "t_95_vmclock".into(),
            Outcome::Skip("no vmclock device (ptp_vmclock)".into())
        ))
    );
    assert_eq!(parse_outcome("PASSED everything"), None);
    assert_eq!(parse_outcome("METRIC x=1"), None);
}

#[test]
fn a_test_that_did_not_run_is_a_problem() {
    let expected = lines("t_00_smoke\nt_10_hooks\nt_20_real_steps");
    let out = lines("PASS t_00_smoke (1.0s)\nSKIP t_10_hooks (why)\n1 passed, 0 failed, 1 skipped");
    let run = SuiteRun::from_lines("vm 7.2".into(), &out, Some(0), &expected, false);
    assert!(!run.ok());
    assert_eq!(run.problems, ["1 of 3 tests did not run: t_20_real_steps"]);
    // Filtered on purpose: not every test is expected.
    let run = SuiteRun::from_lines("vm 7.2".into(), &out, Some(0), &expected, true);
    assert!(run.ok());
    // A skip is not a failure, and not a pass either.
    assert_eq!(run.counts.map(|c| (c.passed, c.skipped)), Some((1, 1)));
}

#[test]
fn a_run_without_its_summary_or_exit_is_not_ok() {
    let expected = lines("t_00_smoke");
    let passed = lines("PASS t_00_smoke (1s)\n1 passed, 0 failed, 0 skipped");
    let run =
        |lines: &[String], rc| SuiteRun::from_lines("vm 6.1".into(), lines, rc, &expected, false);
    assert!(run(&passed, Some(0)).ok());
    // The VM died after the first test: what it printed is still counted.
    let died = run(&passed[..1], Some(255));
    assert!(!died.ok());
    assert_eq!(died.tally().passed, 1);
    // Timed out, or the runner failed although no test did ("no tests found").
    assert_eq!(run(&passed, None).problems, ["timed out"]);
    assert_eq!(
        run(&passed, Some(1)).problems,
        ["the runner exited 1 with no test failed"]
    );
}

#[test]
fn a_second_boot_completes_a_suite_whose_guest_died() {
    let expected = lines("t_00_smoke\nt_70_ntp\nt_80_stall");
    let first = SuiteRun::from_lines(
        "vm 6.12".into(),
        &lines("PASS t_00_smoke (1s)"),
        Some(255),
        &expected,
        false,
    );
    assert_eq!(first.not_run(&expected), ["t_70_ntp", "t_80_stall"]);
    let second = |out: &str, rc| {
        let second = SuiteRun::from_lines("vm 6.12".into(), &lines(out), rc, &expected, true);
        SuiteRun::resumed(
            SuiteRun::from_lines(
                "vm 6.12".into(),
                &lines("PASS t_00_smoke (1s)"),
                Some(255),
                &expected,
                false,
            ),
            second,
            &expected,
            false,
            "died".into(),
        )
    };
    let run = second(
        "PASS t_70_ntp (1s)\nFAIL t_80_stall (1s)\n1 passed, 1 failed, 0 skipped",
        Some(1),
    );
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    assert!(!run.ok(), "a failed test still fails");
    assert_eq!(
        run.counts.map(|c| (c.passed, c.failed)),
        Some((2, 1)),
        "both boots counted"
    );
    assert_eq!(run.warnings, ["died"]);
    let run = second(
        "PASS t_70_ntp (1s)\nPASS t_80_stall (1s)\n2 passed, 0 failed, 0 skipped",
        Some(0),
    );
    assert!(run.ok());
    // It died again: the tests it did not reach are missing, and there is no summary.
    let run = second("PASS t_70_ntp (1s)", Some(255));
    assert!(!run.ok());
    assert_eq!(
        run.problems,
        [
            "no summary line: the suite did not finish",
            "1 of 3 tests did not run: t_80_stall"
        ]
    );
}

#[test]
fn a_partial_run_says_why() {
    assert!(partial_run_reasons(false, false, &[], true).is_empty());
    let all = partial_run_reasons(true, true, &["6.12".into()], false);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[0].contains("--no-fuzz") && all[1].contains("--no-vm"));
    assert!(all[2].contains("CG_TEST_FILTER") && all[3].contains("6.12"));
}

#[test]
fn matrix_table() {
    let tests = lines("t_00_smoke\nt_80_stall");
    let a = SuiteRun::from_lines(
        "vm 6.1".into(),
        &lines("PASS t_00_smoke (1s)\nPASS t_80_stall (2s)\n2 passed, 0 failed, 0 skipped"),
        Some(0),
        &tests,
        false,
    );
    let b = SuiteRun::from_lines(
        "vm 7.2".into(),
        &lines("FAIL t_00_smoke (1s)\nSKIP t_80_stall (no hrtimer)\n0 passed, 1 failed, 1 skipped"),
        Some(1),
        &tests,
        false,
    );
    let table = render_matrix(&tests, &[a, b]);
    assert_eq!(
        table,
        "test        vm 6.1  vm 7.2\n\
         t_00_smoke  PASS    FAIL  \n\
         t_80_stall  PASS    SKIP  \n\
         SKIP t_80_stall on vm 7.2: no hrtimer\n"
    );
}

#[test]
fn every_capability_names_real_tests() {
    let vm_tests = suite_tests(&util::repo_root().join("tests/vm")).unwrap();
    for (capability, tests) in CAPABILITIES {
        for t in *tests {
            assert!(vm_tests.iter().any(|v| v == t), "{capability}: no test {t}");
        }
    }
}

#[test]
fn each_failed_test_keeps_its_first_fail_line() {
    let long = "x".repeat(FAIL_REASON_MAX + 10);
    let out = lines(&format!(
        "PASS t_00_smoke (1s)\n    FAIL: not this one, it passed\nFAIL t_74_bound_pause (9s)\n\
         METRIC a=1\n    exit status 1; full log: x\n    FAIL: true time outside\n    \
         FAIL: true time outside\nFAIL t_90_failover (5s)\n    FAIL: {long}\n\
         FAIL t_91_none (1s)\n    no reason printed\n1 passed, 3 failed, 0 skipped"
    ));
    let reasons = fail_reasons(&out);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        reasons[0],
        ("t_74_bound_pause".into(), "true time outside".into())
    );
    assert_eq!(reasons[1].0, "t_90_failover");
    assert_eq!(reasons[1].1, format!("{} …", &long[..FAIL_REASON_MAX]));
}

#[test]
fn a_retried_test_is_a_warning_and_counts_once() {
    let run = SuiteRun::from_lines(
        "host".into(),
        &lines("RETRY t_40_ntp (3.6s): it failed while this machine's clock was stepped by +2.000 ms\nPASS t_40_ntp (3.1s)\n1 passed, 0 failed, 0 skipped"),
        Some(0),
        &lines("t_40_ntp"),
        false,
    );
    assert!(run.ok());
    assert_eq!(run.counts.map(|c| c.passed), Some(1));
    assert_eq!(run.warnings.len(), 1);
    assert!(
        run.warnings[0].starts_with("retried t_40_ntp (3.6s)"),
        "{:?}",
        run.warnings
    );
}

#[test]
fn a_middle_kernel_runs_every_vm_test_but_the_ntp_ones() {
    let all: Vec<String> = ["t_40_storm", "t_70_ntp", "t_75_ntp_onpath", "t_90_failover"]
        .map(String::from)
        .to_vec();
    assert_eq!(vm_tests_for_kernel(&all, true), all);
    assert_eq!(
        vm_tests_for_kernel(&all, false),
        ["t_40_storm", "t_90_failover"].map(String::from).to_vec()
    );
}
