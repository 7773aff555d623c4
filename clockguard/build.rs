//! Builds the eBPF object (clockguard-ebpf, for bpfel-unknown-none with nightly and
//! bpf-linker) and hands its path to the daemon, which embeds it: the release binary is one
//! self-contained file.
//!
//! Set CLOCKGUARD_EBPF_OBJECT to a prebuilt object to skip the nested build.
//!
//! The linked object carries DWARF (1.1 MB of its 1.4 MB): rustc needs `-Cdebuginfo=2` for
//! bpf-linker to emit BTF, but neither aya nor the kernel reads the DWARF. What is embedded
//! is a copy with the debug sections stripped (.BTF and .BTF.ext stay): the daemon hashes
//! the whole object at start to name its pin directory, so every byte embedded is resident.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-env-changed=CLOCKGUARD_EBPF_OBJECT");
    if let Ok(prebuilt) = env::var("CLOCKGUARD_EBPF_OBJECT") {
        println!("cargo:rerun-if-changed={prebuilt}");
        println!("cargo:rustc-env=CLOCKGUARD_EBPF_OBJECT={prebuilt}");
        return;
    }
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("the clockguard crate sits in the workspace's directory");
    let ebpf_dir = workspace.join("clockguard-ebpf");
    for watched in ["src", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            ebpf_dir.join(watched).display()
        );
    }
    // A target dir of its own: the BPF build must not contend with the host build's lock,
    // and debug and release host builds share the one object.
    let target_dir = workspace.join("target").join("ebpf");
    let linked = build_ebpf(workspace, &target_dir);
    let object = strip_debug(&linked);
    println!(
        "cargo:rustc-env=CLOCKGUARD_EBPF_OBJECT={}",
        object.display()
    );
}

fn build_ebpf(workspace: &Path, target_dir: &Path) -> PathBuf {
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(workspace)
        .args([
            "+nightly",
            "build",
            "--package",
            "clockguard-ebpf",
            "--bin",
            "clockguard-ebpf",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--profile",
            "bpf",
            "--target-dir",
        ])
        .arg(target_dir);
    // The outer cargo's settings are for the host build; the nested one picks its own.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    // BTF in the object (aya reads it; the kernel uses it to describe maps and programs).
    cargo.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Cdebuginfo=2\x1f-Clink-arg=--btf",
    );
    let status = cargo.status().unwrap_or_else(|err| {
        panic!(
            "cannot run `cargo +nightly` to build the eBPF object: {err}; run `cargo xtask setup`"
        )
    });
    if !status.success() {
        panic!(
            "building the eBPF object failed ({status}); it needs the nightly toolchain with \
             rust-src and bpf-linker on PATH: run `cargo xtask setup`"
        );
    }
    target_dir
        .join("bpfel-unknown-none")
        .join("bpf")
        .join("clockguard-ebpf")
}

/// Writes `<object>.stripped`, the object without its DWARF sections, with LLVM's strip: the
/// LLVM that `cargo xtask setup` installs for bpf-linker ships it (Debian's llvm-<N> package,
/// /usr/lib/llvm-<N>/bin). LLVM_STRIP names another one.
fn strip_debug(object: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=LLVM_STRIP");
    let strip = env::var_os("LLVM_STRIP")
        .map(PathBuf::from)
        .or_else(newest_llvm_strip)
        .unwrap_or_else(|| PathBuf::from("llvm-strip"));
    let mut stripped = object.as_os_str().to_owned();
    stripped.push(".stripped");
    let stripped = PathBuf::from(stripped);
    let status = Command::new(&strip)
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(object)
        .status()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {} to strip the eBPF object's DWARF: {err}; run `cargo xtask setup` \
                 (it installs LLVM) or set LLVM_STRIP",
                strip.display()
            )
        });
    if !status.success() {
        panic!(
            "{} --strip-debug {} failed ({status})",
            strip.display(),
            object.display()
        );
    }
    stripped
}

/// The llvm-strip of the newest LLVM under /usr/lib/llvm-<N>, if any.
fn newest_llvm_strip() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let major: u32 = name.to_str()?.strip_prefix("llvm-")?.parse().ok()?;
            let strip = Path::new("/usr/lib").join(&name).join("bin/llvm-strip");
            strip.is_file().then_some((major, strip))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, strip)| strip)
}
