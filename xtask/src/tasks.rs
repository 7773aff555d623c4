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

/// The longest reason quoted per failed test in the summary, in bytes (the whole log is
/// on disk; a CI excerpt may keep only the summary).
const FAIL_REASON_MAX: usize = 400;

/// Each failed test with the first "FAIL: " line it printed after run-suite.sh's
/// "FAIL t_name" (run-suite echoes the reason first, indented), shortened to
/// FAIL_REASON_MAX bytes.
fn fail_reasons(lines: &[String]) -> Vec<(String, String)> {
    let mut reasons = Vec::new();
    let mut failed: Option<String> = None;
    for line in lines {
        if let Some((name, outcome)) = parse_outcome(line) {
            failed = (outcome == Outcome::Fail).then_some(name);
            continue;
        }
        if let Some(reason) = line.trim_start().strip_prefix("FAIL: ") {
            if let Some(name) = failed.take() {
                let mut end = reason.len().min(FAIL_REASON_MAX);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let ellipsis = if end < reason.len() { " …" } else { "" };
                reasons.push((name, format!("{}{ellipsis}", &reason[..end])));
            }
        }
    }
    reasons
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

/// The tests run-suite.sh ran twice because this machine's clock was changed by
/// something else while they failed ("RETRY t_40_ntp_observe (3.6s): it failed while ..."):
/// each is a warning, whatever the second run gave.
fn retries(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("RETRY "))
        .map(|what| format!("retried {what}"))
        .collect()
}

/// One run of a suite (the host's, or the VM's on one kernel).
struct SuiteRun {
    name: String,
    outcomes: Vec<(String, Outcome)>,
    /// Why each failed test failed, in its own words (fail_reasons).
    fail_reasons: Vec<(String, String)>,
    counts: Option<Counts>,
    /// Why the run as a whole is not to be trusted (no summary, timeout, tests missing).
    problems: Vec<String>,
    /// What went wrong around the tests without failing them (a guest that died and was
    /// booted again): printed with the suite's line, loudly.
    warnings: Vec<String>,
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
                problems.push("no summary line: the suite did not finish".to_string());
            }
            // e.g. "no tests found": the runner fails without a failed test.
            (Some(rc), Some(c)) if rc != 0 && c.failed == 0 => {
                problems.push(format!("the runner exited {rc} with no test failed"));
            }
            _ => {}
        }
        let mut run = SuiteRun {
            name,
            outcomes,
            fail_reasons: fail_reasons(lines),
            counts,
            problems,
            warnings: retries(lines),
            note: String::new(),
        };
        if !filtered {
            run.problems.extend(run.missing_problem(expected));
        }
        run
    }

    /// The tests of `expected` that printed no outcome, in the order they run.
    fn not_run<'a>(&self, expected: &'a [String]) -> Vec<&'a str> {
        expected
            .iter()
            .filter(|t| self.outcome(t).is_none())
            .map(String::as_str)
            .collect()
    }

    fn missing_problem(&self, expected: &[String]) -> Option<String> {
        let missing = self.not_run(expected);
        (!missing.is_empty()).then(|| {
            format!(
                "{} of {} tests did not run: {}",
                missing.len(),
                expected.len(),
                missing.join(", ")
            )
        })
    }

    /// A first boot whose guest died, then a second boot that ran the tests the first did
    /// not reach: one run of the whole suite, with the death kept as a warning. `second`
    /// is read as a filtered run (`from_lines(.., true)`): it ran only the rest.
    fn resumed(
        first: SuiteRun,
        second: SuiteRun,
        expected: &[String],
        filtered: bool,
        death: String,
    ) -> SuiteRun {
        let earlier = first.tally();
        let mut outcomes = first.outcomes;
        outcomes.extend(second.outcomes);
        let mut fail_reasons = first.fail_reasons;
        fail_reasons.extend(second.fail_reasons);
        let counts = second.counts.map(|c| Counts {
            passed: c.passed + earlier.passed,
            failed: c.failed + earlier.failed,
            skipped: c.skipped + earlier.skipped,
        });
        let mut run = SuiteRun {
            name: first.name,
            outcomes,
            fail_reasons,
            counts,
            // The second boot's own problems (it timed out, it died too): it ran filtered,
            // so which tests are missing is judged here, over both boots.
            problems: second.problems,
            warnings: [vec![death], first.warnings, second.warnings].concat(),
            note: String::new(),
        };
        if !filtered {
            run.problems.extend(run.missing_problem(expected));
        }
        run
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

    /// The runner's own summary; when it never printed one (the VM died), the outcomes it
    /// printed before it stopped.
    fn tally(&self) -> Counts {
        self.counts.unwrap_or_else(|| {
            let mut c = Counts::default();
            for (_, outcome) in &self.outcomes {
                match outcome {
                    Outcome::Pass => c.passed += 1,
                    Outcome::Fail => c.failed += 1,
                    Outcome::Skip(_) => c.skipped += 1,
                }
            }
            c
        })
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

/// The VM tests a kernel of the run gets: all of them on the first and the last kernel;
/// on a kernel between them, all but the NTP client, server and error-bound tests (t_7*).
/// Those exercise clockguard's userspace and adjtimex, which behave alike from 6.1 to 7.2,
/// and they are half of each kernel's suite (t_70 alone 190 s): without them on 6.12 a
/// fresh-clone run stays under 60 min.
fn vm_tests_for_kernel(tests: &[String], outer: bool) -> Vec<String> {
    tests
        .iter()
        .filter(|t| outer || !t.starts_with("t_7"))
        .cloned()
        .collect()
}

/// The guest's command that runs only `tests` of the VM suite.
fn vm_suite_command_for<T: AsRef<str>>(tests: &[T]) -> Vec<String> {
    let names: Vec<&str> = tests.iter().map(AsRef::as_ref).collect();
    vec![format!(
        "CG_TEST_FILTER={} bash tests/run-suite.sh tests/vm",
        util::sh_quote(&format!("^({})$", names.join("|")))
    )]
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

/// What makes a run of `cargo xtask test` less than the whole suite on every kernel.
fn partial_run_reasons(
    vm_skipped: bool,
    filtered: bool,
    kernels_wanted: &[String],
    fuzz: bool,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if !fuzz {
        reasons.push("fuzzing is skipped (--no-fuzz)".to_string());
    }
    if vm_skipped {
        reasons.push("the VM suite is skipped (--no-vm or CLOCKGUARD_NO_VM=1)".to_string());
    }
    if filtered {
        reasons.push("CG_TEST_FILTER is set".to_string());
    }
    if !kernels_wanted.is_empty() {
        reasons.push(format!(
            "--kernel {} picks kernels",
            kernels_wanted.join(",")
        ));
    }
    reasons
}

fn banner(msg: &str) {
    let bar = "!".repeat(msg.len() + 8);
    println!("\n{bar}\n!!! {msg} !!!\n{bar}\n");
}

/// `cargo xtask test [--no-vm] [--kernel K]...`: the host suite once, the VM suite once per
/// kernel (every kernel of the matrix unless `--kernel` names some).
/// Time limit of the systemd machine's boot (s), unless CLOCKGUARD_VM_TIMEOUT sets one.
const SYSTEMD_SUITE_TIMEOUT_SECS: u64 = 15 * 60;

pub fn test(no_vm: bool, kernels_wanted: &[String], fuzz: bool) -> Result<i32> {
    let vm_skipped = no_vm || std::env::var("CLOCKGUARD_NO_VM").is_ok_and(|v| v == "1");
    let filtered = std::env::var("CG_TEST_FILTER").is_ok_and(|f| !f.is_empty());
    if util::in_ci() {
        let partial = partial_run_reasons(vm_skipped, filtered, kernels_wanted, fuzz);
        if !partial.is_empty() {
            bail!(
                "CI must run the whole suite on every kernel, but {} (CI is set)",
                partial.join(", ")
            );
        }
    }
    setup::setup(false, (!vm_skipped).then_some(kernels_wanted))?;
    if fuzz {
        setup::ensure_cargo_fuzz()?;
    }
    build(true)?;
    let repo = util::repo_root();
    let bins = bin_dir(true);

    // 0. The fast checks first: formatting, then clippy with every warning an error.
    println!("\n=== cargo fmt --check, cargo clippy -D warnings ===");
    let fmt_ok = util::status(
        cmd("cargo")
            .current_dir(&repo)
            .args(["fmt", "--all", "--check"]),
    )?
    .success();
    let clippy_ok = util::status(cmd("cargo").current_dir(&repo).args([
        "clippy",
        "--workspace",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?
    .success();

    // 1. Unit tests on the host, the eBPF crate's ABI (its host build) included.
    println!("\n=== cargo test (host unit tests) ===");
    let unit_ok =
        util::status(
            cmd("cargo")
                .current_dir(&repo)
                .args(["test", "--workspace", "--release"]),
        )?
        .success();

    // 2. The Debian package, which the host suite's t_80_package inspects.
    println!("\n=== cargo xtask package ===");
    let package_ok = match crate::package::package() {
        Ok(_) => true,
        Err(err) => {
            println!("package: FAILED: {err:#}");
            false
        }
    };

    // 3. Host suite (as root; these tests never change the clock).
    println!("\n=== host suite: tests/host ===");
    let bins_s = bins.to_string_lossy().into_owned();
    let mut c = root_cmd("bash", &[("CG_BIN_DIR", &bins_s)]);
    c.current_dir(&repo)
        .args(["tests/run-suite.sh", "tests/host"]);
    let (lines, host_rc) = run_and_capture(&mut c)?;
    let host_tests = suite_tests(&repo.join("tests/host"))?;
    let host = SuiteRun::from_lines("host".into(), &lines, Some(host_rc), &host_tests, filtered);

    // 4. The VM suite, one boot per kernel.
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
        let kernels = kernels::select(kernels_wanted)?;
        let last = kernels.len().saturating_sub(1);
        for (position, kernel) in kernels.into_iter().enumerate() {
            let outer = position == 0 || position == last;
            let tests = vm_tests_for_kernel(&vm_tests, outer);
            println!(
                "\n=== vm suite: tests/vm on kernel {} ({}), one boot{} ===",
                kernel.label,
                kernel.release,
                if outer {
                    ""
                } else {
                    ", without the NTP tests (t_7*: first and last kernel only)"
                }
            );
            let name = format!("vm {}", kernel.label);
            let cmdline = if outer || filtered {
                cmdline.clone()
            } else {
                vm_suite_command_for(&tests)
            };
            let r = vm::run_in_vm(&kernel, &vm::Machine::HostRoot, &cmdline, true)?;
            let mut elapsed = r.elapsed;
            let mut run = SuiteRun::from_lines(name.clone(), &r.lines, r.code, &tests, filtered);
            let rest = run.not_run(&tests);
            // A guest that dies (its console is shown above) is booted once more for the
            // test it died in and those after it; a second death fails the run.
            if r.guest_died && !filtered && !rest.is_empty() {
                let death = format!(
                    "the guest died during {} (its kernel console: {}); that test and the {} \
                     after it ran in a second boot",
                    rest[0],
                    r.console_log.display(),
                    rest.len() - 1
                );
                println!("\nvm: {death}");
                let again = vm_suite_command_for(&rest);
                let r2 = vm::run_in_vm(&kernel, &vm::Machine::HostRoot, &again, true)?;
                elapsed += r2.elapsed;
                let second = SuiteRun::from_lines(name, &r2.lines, r2.code, &tests, true);
                run = SuiteRun::resumed(run, second, &tests, filtered, death);
            }
            run.note = format!("{}, {:.0}s", kernel.release, elapsed.as_secs_f64());
            vm_runs.push(run);
        }
    }

    // 5. The systemd machine: the package installed and driven under systemd as PID 1,
    // one boot on the first kernel of the run (Debian 12's own by default).
    let systemd_tests = suite_tests(&repo.join("tests/systemd"))?;
    let mut systemd_run = None;
    if !vm_skipped {
        let kernel = kernels::select(kernels_wanted)?.remove(0);
        println!(
            "\n=== systemd suite: tests/systemd in the systemd machine, kernel {} ({}), one boot ===",
            kernel.label, kernel.release
        );
        let name = format!("systemd {}", kernel.label);
        let run = match crate::systemd_vm::ensure_image() {
            Ok(image) => {
                let cmdline = vec![
                    "bash".to_string(),
                    "tests/run-suite.sh".to_string(),
                    "tests/systemd".to_string(),
                ];
                // The suite takes about 4 min; a guest that hangs must not hold CI for the
                // default 30.
                let r = vm::run_in_vm_within(
                    &kernel,
                    &vm::Machine::Systemd(image),
                    &cmdline,
                    true,
                    SYSTEMD_SUITE_TIMEOUT_SECS,
                )?;
                let mut run =
                    SuiteRun::from_lines(name, &r.lines, r.code, &systemd_tests, filtered);
                run.note = format!("{}, {:.0}s", kernel.release, r.elapsed.as_secs_f64());
                run
            }
            Err(err) => {
                println!("systemd-vm: FAILED to build the image: {err:#}");
                SuiteRun::from_lines(name, &[], None, &systemd_tests, filtered)
            }
        };
        systemd_run = Some(run);
    }

    // 6. The vmclock machine: a guest of QEMU 10 with a vmclock device, migrated to a file
    // and restored, on the newest kernel of the run with the ptp_vmclock driver (7.2).
    let vmclock_tests = suite_tests(&repo.join("tests/vmclock"))?;
    let mut vmclock_run = None;
    if !vm_skipped {
        let kernels = kernels::select(kernels_wanted)?;
        let run = match crate::vmclock_vm::pick_kernel(&kernels) {
            Some(kernel) => {
                println!(
                    "\n=== vmclock suite: tests/vmclock in the vmclock machine (QEMU 10, \
                     -device vmclock), kernel {} ({}), migrated once ===",
                    kernel.label, kernel.release
                );
                let name = format!("vmclock {}", kernel.label);
                match crate::vmclock_vm::run_suite(kernel) {
                    Ok(out) => {
                        let mut run = SuiteRun::from_lines(
                            name,
                            &out.lines,
                            out.code,
                            &vmclock_tests,
                            filtered,
                        );
                        run.note = format!("{}, {:.0}s", kernel.release, out.elapsed.as_secs_f64());
                        run
                    }
                    Err(err) => {
                        println!("vmclock-vm: FAILED: {err:#}");
                        SuiteRun::from_lines(name, &[], None, &vmclock_tests, filtered)
                    }
                }
            }
            // Only a run limited to older kernels (--kernel, refused under CI) gets here.
            None => {
                let lines: Vec<String> = vmclock_tests
                    .iter()
                    .map(|t| format!("SKIP {t} (no kernel of this run has the ptp_vmclock driver)"))
                    .chain(std::iter::once(format!(
                        "0 passed, 0 failed, {} skipped",
                        vmclock_tests.len()
                    )))
                    .collect();
                SuiteRun::from_lines("vmclock".into(), &lines, Some(0), &vmclock_tests, filtered)
            }
        };
        vmclock_run = Some(run);
    }

    let fuzz_results = if fuzz {
        run_fuzzers(&repo)?
    } else {
        Vec::new()
    };

    println!("\n=== summary ===");
    let verdict = |ok: bool| if ok { "ok" } else { "FAILED" };
    println!("cargo fmt --check: {}", verdict(fmt_ok));
    println!("cargo clippy -D warnings: {}", verdict(clippy_ok));
    println!("cargo test: {}", verdict(unit_ok));
    println!("cargo xtask package (lintian): {}", verdict(package_ok));
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
    let reasons: Vec<String> = std::iter::once(&host)
        .chain(&vm_runs)
        .chain(&systemd_run)
        .chain(&vmclock_run)
        .flat_map(|run| {
            run.fail_reasons
                .iter()
                .map(move |(test, why)| format!("  {} {test}: {why}", run.name))
        })
        .collect();
    if !reasons.is_empty() {
        println!("Why the failed tests failed (first FAIL: line; logs in target/test-logs):");
        println!("{}\n", reasons.join("\n"));
    }
    let mut total = Counts::default();
    let mut failures: Vec<String> = Vec::new();
    if !fmt_ok {
        failures.push("cargo fmt --check (run `cargo fmt`)".into());
    }
    if !clippy_ok {
        failures.push("cargo clippy -D warnings".into());
    }
    if !unit_ok {
        failures.push("cargo test".into());
    }
    if !package_ok {
        failures.push("cargo xtask package".into());
    }
    failures.extend(
        fuzz_results
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.summary.clone()),
    );
    for run in std::iter::once(&host)
        .chain(&vm_runs)
        .chain(&systemd_run)
        .chain(&vmclock_run)
    {
        let counts = run.tally();
        total.passed += counts.passed;
        total.failed += counts.failed;
        total.skipped += counts.skipped;
        if !run.ok() {
            failures.push(format!("{} suite", run.name));
        }
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
        for w in &run.warnings {
            line.push_str(&format!(" -- WARNING: {w}"));
        }
        println!("{line}");
    }
    if vm_skipped {
        println!("vm suite: SKIPPED");
        // The clock-changing and enforcement tests are most of what the suite proves.
        failures.push("the VM suite did not run".into());
    }
    if filtered {
        println!("CG_TEST_FILTER is set: not a full run");
    }
    if !fuzz {
        println!("fuzzing: SKIPPED (--no-fuzz): not a full run");
    }
    println!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    if failures.is_empty() {
        Ok(0)
    } else {
        println!("FAILED: {}", failures.join("; "));
        Ok(1)
    }
}

struct FuzzResult {
    ok: bool,
    summary: String,
}

/// Each fuzz target for its budget, from the seeds in fuzz/seeds/<target> and the corpus
/// kept in target/fuzz-corpus/<target>; libFuzzer's log in target/fuzz-logs/<target>.log,
/// a crashing input in fuzz/artifacts/<target>/.
fn run_fuzzers(repo: &Path) -> Result<Vec<FuzzResult>> {
    let seconds = std::env::var("CG_FUZZ_SECONDS").unwrap_or_else(|_| "30".into());
    let budget = format!("-max_total_time={seconds}");
    let targets = [
        "ntp_packet",
        "control_framing",
        "control_request",
        "nts_ke",
        "nts_packet",
    ]
    .map(|target| (target, budget.clone()));
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
mod tests;
