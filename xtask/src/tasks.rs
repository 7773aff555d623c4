//! `build`, `run` and `test`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd, parse_summary, root_cmd};
use crate::{setup, vm};

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
    setup::setup(false)?;
    build(true)?;
    let bin = bin_dir(true).join("clockguard");
    let mut c = root_cmd(&bin, &[]);
    c.arg("run").args(args);
    eprintln!("+ {}", util::describe(&c));
    let err = c.exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}

/// A suite's outcome: Some((passed, failed)) from its summary line.
struct Suite {
    name: &'static str,
    result: Option<(u32, u32)>,
    /// The runner's exit code (None: skipped or timed out).
    rc: Option<i32>,
    note: String,
}

/// Run a command, echo its stdout line by line, return the last "N passed, M failed".
fn run_and_parse(c: &mut std::process::Command) -> Result<(Option<(u32, u32)>, i32)> {
    eprintln!("+ {}", util::describe(c));
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", util::describe(c)))?;
    let out = child.stdout.take().expect("piped");
    let mut summary = None;
    let mut stdout = std::io::stdout();
    for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).into_owned();
        let _ = writeln!(stdout, "{line}");
        if let Some(s) = parse_summary(&line) {
            summary = Some(s);
        }
    }
    let st = child.wait()?;
    Ok((summary, util::exit_code(st)))
}

fn banner(msg: &str) {
    let bar = "!".repeat(msg.len() + 8);
    println!("\n{bar}\n!!! {msg} !!!\n{bar}\n");
}

/// `cargo xtask test [--no-vm]`.
pub fn test(no_vm: bool, fuzz: bool) -> Result<i32> {
    setup::setup(false)?;
    if fuzz {
        setup::ensure_cargo_fuzz()?;
    }
    build(true)?;
    let repo = util::repo_root();
    let bins = bin_dir(true);

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
    let (host, host_rc) = run_and_parse(&mut c)?;
    let mut suites = vec![Suite {
        name: "host",
        result: host,
        rc: Some(host_rc),
        note: if host.is_none() {
            format!("no summary line (exit {host_rc})")
        } else {
            String::new()
        },
    }];

    // 3. VM suite: one boot.
    let env_skip = std::env::var("CLOCKGUARD_NO_VM").is_ok_and(|v| v == "1");
    let mut vm_failed = false;
    if no_vm || env_skip {
        banner(&format!(
            "VM SUITE SKIPPED ({}): clock-changing and enforcement tests did NOT run",
            if no_vm {
                "--no-vm"
            } else {
                "CLOCKGUARD_NO_VM=1"
            }
        ));
        suites.push(Suite {
            name: "vm",
            result: None,
            rc: None,
            note: "SKIPPED".into(),
        });
    } else {
        println!("\n=== vm suite: tests/vm (one VM boot) ===");
        let cmdline = vec![
            "bash".to_string(),
            "tests/run-suite.sh".to_string(),
            "tests/vm".to_string(),
        ];
        let r = vm::run_in_vm(&cmdline, true)?;
        let summary = r.lines.iter().rev().find_map(|l| parse_summary(l));
        let note = match (r.code, summary) {
            (None, _) => {
                vm_failed = true;
                format!("VM timed out after {:.0}s", r.elapsed.as_secs_f64())
            }
            (Some(c), None) => {
                vm_failed = true;
                format!("VM did not boot or the suite did not finish (exit {c})")
            }
            _ => format!("one boot, {:.0}s", r.elapsed.as_secs_f64()),
        };
        suites.push(Suite {
            name: "vm",
            result: summary,
            rc: r.code,
            note,
        });
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
    let fuzz_ok = fuzz_results.iter().all(|r| r.ok);
    let (mut passed, mut failed) = (0, 0);
    let mut suite_broken = false;
    for s in &suites {
        match s.result {
            Some((p, f)) => {
                passed += p;
                failed += f;
                // e.g. "no tests found": the runner fails without a failed test.
                let bad_exit = f == 0 && s.rc.is_some_and(|rc| rc != 0);
                if bad_exit {
                    suite_broken = true;
                }
                println!(
                    "{} suite: {p} passed, {f} failed{}{}",
                    s.name,
                    if s.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", s.note)
                    },
                    if bad_exit {
                        format!(" -- but the runner exited {}", s.rc.unwrap_or(0))
                    } else {
                        String::new()
                    },
                );
            }
            None => {
                if s.note != "SKIPPED" {
                    suite_broken = true;
                }
                println!("{} suite: {}", s.name, s.note);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    let ok = unit_ok && failed == 0 && !vm_failed && !suite_broken && fuzz_ok;
    Ok(if ok { 0 } else { 1 })
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
