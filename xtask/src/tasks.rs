//! `build`, `run` and `test`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd, parse_summary, root_cmd, Counts};
use crate::{kernels, setup, vm};

pub fn bin_dir(release: bool) -> PathBuf {
    util::repo_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
}

/// `cargo build -p clockguard -p clockguard-tests [--release]`. clockguard/build.rs builds
/// the eBPF object with nightly and needs bpf-linker, which cmd() puts on PATH.
pub fn build(release: bool) -> Result<()> {
    let mut c = cmd("cargo");
    c.current_dir(util::repo_root())
        .args(["build", "-p", "clockguard", "-p", "clockguard-tests"]);
    if release {
        c.arg("--release");
    }
    util::run(&mut c).context("build failed")?;
    let dir = bin_dir(release);
    const BINARIES: [&str; 4] = ["clockguard", "cg-clockcall", "cg-ntpref", "cg-timerload"];
    for b in BINARIES {
        let p = dir.join(b);
        if !util::is_executable(&p) {
            bail!("build succeeded but {} is missing", p.display());
        }
    }
    println!("build: {}/{{{}}}", dir.display(), BINARIES.join(","));
    Ok(())
}

/// `cargo xtask run [-- ARGS]`: setup, build --release, exec `clockguard run ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    setup::setup(false, None)?;
    build(true)?;
    let bin = bin_dir(true).join("clockguard");
    let mut c = root_cmd(&bin, &[]);
    c.arg("run").args(args);
    eprintln!("+ {}", util::describe(&c));
    let err = c.exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}

/// One test's outcome as run-suite.sh reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    /// Could not run here, with the test's reason: never counted as a pass.
    Skip(String),
}

/// "PASS t_10_hooks (12.3s)", "FAIL t_10_hooks (1.0s)", "SKIP t_10_hooks (no vmclock device)".
fn parse_outcome(line: &str) -> Option<(String, Outcome)> {
    let (word, rest) = line.trim_end().split_once(' ')?;
    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    if !name.starts_with("t_") {
        return None;
    }
    let outcome = match word {
        "PASS" => Outcome::Pass,
        "FAIL" => Outcome::Fail,
        "SKIP" => {
            let tail = tail.trim();
            let reason = tail
                .strip_prefix('(')
                .and_then(|t| t.strip_suffix(')'))
                .unwrap_or(tail);
            Outcome::Skip(reason.to_string())
        }
        _ => return None,
    };
    Some((name.to_string(), outcome))
}

/// One run of a suite (the host's, or the VM's on one kernel).
struct SuiteRun {
    name: String,
    outcomes: Vec<(String, Outcome)>,
    counts: Option<Counts>,
    /// Why the run as a whole is not to be trusted (no summary, timeout, tests missing).
    problems: Vec<String>,
    note: String,
}

impl SuiteRun {
    /// From the runner's output and its exit code (None: it timed out).
    fn from_lines(
        name: String,
        lines: &[String],
        rc: Option<i32>,
        expected: &[String],
        filtered: bool,
    ) -> SuiteRun {
        let outcomes: Vec<(String, Outcome)> =
            lines.iter().filter_map(|l| parse_outcome(l)).collect();
        let counts = lines.iter().rev().find_map(|l| parse_summary(l));
        let mut problems = Vec::new();
        match (rc, counts) {
            (None, _) => problems.push("timed out".to_string()),
            (Some(_), None) => {
                problems.push("no summary line: the suite did not finish".to_string())
            }
            // e.g. "no tests found": the runner fails without a failed test.
            (Some(rc), Some(c)) if rc != 0 && c.failed == 0 => {
                problems.push(format!("the runner exited {rc} with no test failed"))
            }
            _ => {}
        }
        if !filtered {
            let missing: Vec<&str> = expected
                .iter()
                .filter(|t| !outcomes.iter().any(|(n, _)| n == *t))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "{} of {} tests did not run: {}",
                    missing.len(),
                    expected.len(),
                    missing.join(", ")
                ));
            }
        }
        SuiteRun {
            name,
            outcomes,
            counts,
            problems,
            note: String::new(),
        }
    }

    fn outcome(&self, test: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(n, _)| n == test)
            .map(|(_, o)| o)
    }

    fn ok(&self) -> bool {
        self.problems.is_empty() && self.counts.is_some_and(|c| c.failed == 0)
    }
}

/// The t_*.sh tests of a suite directory, by name, sorted as run-suite.sh runs them.
fn suite_tests(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".sh")?;
            stem.starts_with("t_").then(|| stem.to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// kernel × test, one cell each: PASS, FAIL, SKIP, or "-" where the test did not run.
/// The skip reasons follow the table.
fn render_matrix(tests: &[String], runs: &[SuiteRun]) -> String {
    let width = tests.iter().map(String::len).max().unwrap_or(4).max(4);
    let columns: Vec<usize> = runs.iter().map(|r| r.name.len().max(4)).collect();
    let mut out = format!("{:width$}", "test");
    for (r, w) in runs.iter().zip(&columns) {
        out.push_str(&format!("  {:w$}", r.name));
    }
    out.push('\n');
    let mut reasons = Vec::new();
    for t in tests {
        out.push_str(&format!("{t:width$}"));
        for (r, w) in runs.iter().zip(&columns) {
            let cell = match r.outcome(t) {
                Some(Outcome::Pass) => "PASS",
                Some(Outcome::Fail) => "FAIL",
                Some(Outcome::Skip(why)) => {
                    reasons.push(format!("SKIP {t} on {}: {why}", r.name));
                    "SKIP"
                }
                None => "-",
            };
            out.push_str(&format!("  {cell:w$}"));
        }
        out.push('\n');
    }
    for line in reasons {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// What each kernel can do, and the VM tests that prove it: the README's kernel table is
/// filled from this.
const CAPABILITIES: &[(&str, &[&str])] = &[
    ("audit via fentry/fexit", &["t_10_hooks", "t_20_real_steps"]),
    ("guard refuses steps (BPF-LSM settime)", &["t_60_guard"]),
    (
        "ADJ_SETOFFSET refused",
        &["t_60_guard", "t_62_guard_chronyd_makestep"],
    ),
    (
        "clock_was_set (leap second, steps)",
        &["t_20_real_steps", "t_50_leap_second"],
    ),
    ("hrtimer lateness (tp_btf)", &["t_80_stall"]),
    ("guard pinned past kill -9", &["t_63_guard_pinned"]),
    ("guard under ip netns exec", &["t_64_guard_netns"]),
    ("service deaths (failover)", &["t_90_failover"]),
];

/// capability × kernel: "yes" when every test behind it passed on that kernel, else the
/// outcome that stood in the way.
fn render_capabilities(runs: &[SuiteRun]) -> String {
    let width = CAPABILITIES
        .iter()
        .map(|(c, _)| c.len())
        .max()
        .unwrap_or(10);
    let mut out = format!("{:width$}", "capability");
    for r in runs {
        out.push_str(&format!("  {:8}", r.name));
    }
    out.push('\n');
    for (capability, tests) in CAPABILITIES {
        out.push_str(&format!("{capability:width$}"));
        for r in runs {
            let cell = tests
                .iter()
                .map(|t| match r.outcome(t) {
                    Some(Outcome::Pass) => "yes",
                    Some(Outcome::Fail) => "FAIL",
                    Some(Outcome::Skip(_)) => "SKIP",
                    None => "-",
                })
                .find(|c| *c != "yes")
                .unwrap_or("yes");
            out.push_str(&format!("  {cell:8}"));
        }
        out.push('\n');
    }
    out
}

/// Run a command, echo its stdout line by line, and return the lines and the exit code.
fn run_and_capture(c: &mut std::process::Command) -> Result<(Vec<String>, i32)> {
    eprintln!("+ {}", util::describe(c));
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", util::describe(c)))?;
    let out = child.stdout.take().expect("piped");
    let mut lines = Vec::new();
    let mut stdout = std::io::stdout();
    for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).into_owned();
        let _ = writeln!(stdout, "{line}");
        lines.push(line);
    }
    let st = child.wait()?;
    Ok((lines, util::exit_code(st)))
}

fn banner(msg: &str) {
    let bar = "!".repeat(msg.len() + 8);
    println!("\n{bar}\n!!! {msg} !!!\n{bar}\n");
}

/// `cargo xtask test [--no-vm] [--kernel K]...`: the host suite once, the VM suite once per
/// kernel (every kernel of the matrix unless `--kernel` names some).
pub fn test(no_vm: bool, kernels_wanted: &[String], fuzz: bool) -> Result<i32> {
    let vm_skipped = no_vm || std::env::var("CLOCKGUARD_NO_VM").is_ok_and(|v| v == "1");
    setup::setup(false, (!vm_skipped).then_some(kernels_wanted))?;
    if fuzz {
        setup::ensure_cargo_fuzz()?;
    }
    build(true)?;
    let repo = util::repo_root();
    let bins = bin_dir(true);
    let filtered = std::env::var("CG_TEST_FILTER").is_ok_and(|f| !f.is_empty());

    // 1. Unit tests on the host, the eBPF crate's ABI (its host build) included.
    println!("\n=== cargo test (host unit tests) ===");
    let unit_ok =
        util::status(
            cmd("cargo")
                .current_dir(&repo)
                .args(["test", "--workspace", "--release"]),
        )?
        .success();

    // 2. Host suite (as root; these tests never change the clock).
    println!("\n=== host suite: tests/host ===");
    let bins_s = bins.to_string_lossy().into_owned();
    let mut c = root_cmd("bash", &[("CG_BIN_DIR", &bins_s)]);
    c.current_dir(&repo)
        .args(["tests/run-suite.sh", "tests/host"]);
    let (lines, host_rc) = run_and_capture(&mut c)?;
    let host_tests = suite_tests(&repo.join("tests/host"))?;
    let host = SuiteRun::from_lines("host".into(), &lines, Some(host_rc), &host_tests, filtered);

    // 3. The VM suite, one boot per kernel.
    let vm_tests = suite_tests(&repo.join("tests/vm"))?;
    let mut vm_runs = Vec::new();
    if vm_skipped {
        banner(&format!(
            "VM SUITE SKIPPED ({}): clock-changing and enforcement tests did NOT run",
            if no_vm {
                "--no-vm"
            } else {
                "CLOCKGUARD_NO_VM=1"
            }
        ));
    } else {
        let cmdline = vec![
            "bash".to_string(),
            "tests/run-suite.sh".to_string(),
            "tests/vm".to_string(),
        ];
        for kernel in kernels::select(kernels_wanted)? {
            println!(
                "\n=== vm suite: tests/vm on kernel {} ({}), one boot ===",
                kernel.label, kernel.release
            );
            let r = vm::run_in_vm(&kernel, &cmdline, true)?;
            let mut run = SuiteRun::from_lines(
                format!("vm {}", kernel.label),
                &r.lines,
                r.code,
                &vm_tests,
                filtered,
            );
            run.note = format!("{}, {:.0}s", kernel.release, r.elapsed.as_secs_f64());
            vm_runs.push(run);
        }
    }

    let fuzz_results = if fuzz {
        run_fuzzers(&repo)?
    } else {
        Vec::new()
    };

    println!("\n=== summary ===");
    println!("cargo test: {}", if unit_ok { "ok" } else { "FAILED" });
    for result in &fuzz_results {
        println!("fuzz {}", result.summary);
    }
    if !vm_runs.is_empty() {
        println!("\nVM suite, kernel × test:");
        print!("{}", render_matrix(&vm_tests, &vm_runs));
        println!("\nWhat each kernel can do (from the tests above):");
        print!("{}", render_capabilities(&vm_runs));
        println!();
    }
    let mut total = Counts::default();
    let mut all_ok = unit_ok && fuzz_results.iter().all(|r| r.ok);
    for run in std::iter::once(&host).chain(&vm_runs) {
        let counts = run.counts.unwrap_or_default();
        total.passed += counts.passed;
        total.failed += counts.failed;
        total.skipped += counts.skipped;
        all_ok &= run.ok();
        let mut line = format!(
            "{} suite: {} passed, {} failed, {} skipped",
            run.name, counts.passed, counts.failed, counts.skipped
        );
        if !run.note.is_empty() {
            line.push_str(&format!(" ({})", run.note));
        }
        for p in &run.problems {
            line.push_str(&format!(" -- {p}"));
        }
        println!("{line}");
    }
    if vm_skipped {
        println!("vm suite: SKIPPED");
    }
    if filtered {
        println!("CG_TEST_FILTER is set: not a full run");
    }
    println!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    Ok(if all_ok { 0 } else { 1 })
}

struct FuzzResult {
    ok: bool,
    summary: String,
}

/// Each fuzz target for its budget, from the seeds in fuzz/seeds/<target> and the corpus
/// kept in target/fuzz-corpus/<target>; libFuzzer's log in target/fuzz-logs/<target>.log,
/// a crashing input in fuzz/artifacts/<target>/.
fn run_fuzzers(repo: &Path) -> Result<Vec<FuzzResult>> {
    let runs = std::env::var("CG_FUZZ_RUNS").unwrap_or_else(|_| "10000000".into());
    let seconds = std::env::var("CG_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let targets = [
        ("ntp_packet", format!("-runs={runs}")),
        ("control_request", format!("-max_total_time={seconds}")),
    ];
    let logs = repo.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    let mut results = Vec::new();
    for (target, budget) in targets {
        println!("\n=== fuzz: {target} ({budget}) ===");
        let corpus = repo.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let log_path = logs.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)?;
        let status = util::status(
            cmd("cargo")
                .current_dir(repo.join("fuzz"))
                .args(["+nightly", "fuzz", "run", target])
                .arg(&corpus)
                .arg(repo.join("fuzz/seeds").join(target))
                .args(["--", &budget, "-print_final_stats=1"])
                .stderr(log),
        )?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        // libFuzzer's last words: "Done 10000000 runs in 41 second(s)".
        let done = text.lines().rev().find(|l| l.starts_with("Done "));
        let ok = status.success() && done.is_some();
        let summary = match done {
            Some(done) if ok => format!("{target}: {}, no crash", done.trim_start_matches("Done ")),
            _ => {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                for line in tail.iter().rev() {
                    println!("{line}");
                }
                format!(
                    "{target}: FAILED (exit {status}); log {}",
                    log_path.display()
                )
            }
        };
        println!("fuzz {summary}");
        results.push(FuzzResult { ok, summary });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
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
        let out =
            lines("PASS t_00_smoke (1.0s)\nSKIP t_10_hooks (why)\n1 passed, 0 failed, 1 skipped");
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
        let run = |lines: &[String], rc| {
            SuiteRun::from_lines("vm 6.1".into(), lines, rc, &expected, false)
        };
        assert!(run(&passed, Some(0)).ok());
        assert!(!run(&passed[..1], Some(0)).ok());
        // Timed out, or the runner failed although no test did ("no tests found").
        assert_eq!(run(&passed, None).problems, ["timed out"]);
        assert_eq!(
            run(&passed, Some(1)).problems,
            ["the runner exited 1 with no test failed"]
        );
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
            &lines(
                "FAIL t_00_smoke (1s)\nSKIP t_80_stall (no hrtimer)\n0 passed, 1 failed, 1 skipped",
            ),
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
}
