//! clockguard's eBPF programs: every change to the system clock, paired enter/exit per thread,
//! with the measured jump, written to one ring buffer.
//!
//! Built for `bpfel-unknown-none` by clockguard/build.rs. A host build of this binary is an
//! empty stub, so `cargo build --workspace` works on the host.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// BPF has atomic adds but no core::sync::atomic RMW types: the intrinsic reaches them.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The programs' license as the kernel reads it: GPL-compatible, which the LSM hooks and
/// the GPL-only helpers (bpf_probe_read_kernel, the stack map) require. Without this
/// section aya would declare "GPL" on the programs' behalf.
#[cfg(target_arch = "bpf")]
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
mod programs;
