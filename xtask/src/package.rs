//! `cargo xtask package`: the Debian package, built by cargo-deb from the release build.
//!
//! The binary writes its own man pages and completions (`clockguard generate-docs`) into
//! `target/release/docs/`, where the `[package.metadata.deb]` assets of clockguard/Cargo.toml
//! find them (cargo-deb maps a `target/release/` prefix to the real target directory). The
//! unit and maintainer scripts are in `packaging/`; cargo-deb adds the deb-systemd-helper
//! steps dh_installsystemd would. lintian then checks the .deb: any error fails the task.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, cmd};
use crate::{setup, tasks};

/// The built package's path.
fn deb_path() -> Result<PathBuf> {
    let dir = util::repo_root().join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("no {}: run `cargo xtask package`", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    debs.pop()
        .with_context(|| format!("no .deb in {}", dir.display()))
}

/// setup's packaging tools, build --release, the docs, cargo-deb, lintian. Returns the
/// .deb's path.
pub fn package() -> Result<PathBuf> {
    let cargo_deb = setup::ensure_cargo_deb()?;
    tasks::build(true)?;
    let repo = util::repo_root();
    let docs = tasks::bin_dir(true).join("docs");
    generate_docs(&tasks::bin_dir(true).join("clockguard"), &docs)?;

    let out_dir = repo.join("target/debian");
    // Only this build's package in it, so that deb_path() cannot pick a stale one.
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir)
            .with_context(|| format!("cannot empty {}", out_dir.display()))?;
    }
    util::run(
        cmd(&cargo_deb)
            .current_dir(&repo)
            .args(["-p", "clockguard", "--no-build", "--output"])
            .arg(&out_dir),
    )
    .context("cargo-deb failed")?;
    let deb = deb_path()?;
    lintian(&deb)?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Man pages (gzipped as Debian policy asks, with no name or time in the header, so the
/// same build gives the same bytes) and completions, fresh each time.
fn generate_docs(clockguard: &Path, docs: &Path) -> Result<()> {
    if docs.exists() {
        std::fs::remove_dir_all(docs)
            .with_context(|| format!("cannot empty {}", docs.display()))?;
    }
    let listed = util::output_ok(cmd(clockguard).arg("generate-docs").arg("--out").arg(docs))
        .context("`clockguard generate-docs` failed")?;
    for page in listed.lines().filter(|f| f.contains("/man/")) {
        util::run(cmd("gzip").args(["-9", "-n", "-f", page]))?;
    }
    Ok(())
}

/// lintian's verdict: errors fail the package, warnings and notes are shown.
fn lintian(deb: &Path) -> Result<()> {
    let out = cmd("lintian")
        .args(["--no-tag-display-limit", "--display-info"])
        .arg(deb)
        .output()
        .context("cannot run lintian")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    for line in text.lines() {
        println!("lintian: {line}");
    }
    if !errors.is_empty() {
        bail!(
            "lintian found {} error(s) in {}",
            errors.len(),
            deb.display()
        );
    }
    // lintian exits 2 on a problem of its own (not on tags).
    if out.status.code() == Some(2) {
        bail!(
            "lintian could not check {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let warnings = text.lines().filter(|l| l.starts_with("W: ")).count();
    println!("lintian: no errors, {warnings} warning(s)");
    Ok(())
}
