//! Timer and clock health, read from the kernel: the hrtimer hook's configuration from
//! BTF, and the clock samples. What they mean is decided in `clockguard_core::timers`.
//!
//! Two inputs, both plain data so the logic is tested without a kernel:
//! - late hrtimer expiries from the `hrtimer_expire_entry` hook (lateness = the base's now
//!   − the soft expiry, CLOCK_MONOTONIC timers only), grouped into stall episodes;
//! - a sample of CLOCK_MONOTONIC, MONOTONIC_RAW, BOOTTIME, the steal time, the kernel's rate
//!   setting and the clocksource, taken every `sample_interval_ms`.

use std::path::Path;

use anyhow::{Context, Result};
pub use clockguard_core::status::LatenessSummary;
use clockguard_core::time::{Monotonic, Raw};
pub use clockguard_core::timers::*;
use clockguard_ebpf::{
    TimerConfig, LATENESS_BUCKETS, TIMER_BLOCK_WORDS, TIMER_CONFIG_NOW_BY_VALUE, TIMER_CONFIG_VALID,
};

use crate::btf::KernelBtf;

/// The hrtimer hook's configuration: field offsets from the running kernel's BTF.
pub fn hrtimer_offsets(btf: &KernelBtf, late_threshold_ns: u64) -> Result<TimerConfig> {
    let offset = |strukt: &str, member: &str| -> Result<u16> {
        let at = btf.member_offset(strukt, member)?;
        u16::try_from(at).with_context(|| format!("struct {strukt}.{member} at byte {at}"))
    };
    let block = hrtimer_block(
        offset("hrtimer", "_softexpires")?,
        offset("hrtimer", "function")?,
        offset("hrtimer", "base")?,
    )?;
    let now_by_pointer = btf.tracepoint_arg_is_pointer("hrtimer_expire_entry", 1)?;
    Ok(TimerConfig {
        flags: TIMER_CONFIG_VALID
            | if now_by_pointer {
                0
            } else {
                TIMER_CONFIG_NOW_BY_VALUE
            },
        hrtimer_block: block.start,
        clock_base_clockid: offset("hrtimer_clock_base", "clockid")?,
        softexpires_word: block.words[0],
        function_word: block.words[1],
        base_word: block.words[2],
        _pad: [0; 5],
        late_threshold_ns,
    })
}

/// Where the hook's one read of `struct hrtimer` starts, and the word index of
/// `_softexpires`, `function` and `base` in it.
#[derive(Debug, PartialEq, Eq)]
pub struct HrtimerBlock {
    pub start: u16,
    pub words: [u8; 3],
}

/// The block that holds all three fields (byte offsets in `struct hrtimer`), or why none
/// of TIMER_BLOCK_WORDS words does. The order of the fields is the kernel's business: 6.1
/// has _softexpires, function, base; 7.2 has base at 48, then _softexpires at 64 and
/// function at 72.
pub fn hrtimer_block(softexpires: u16, function: u16, base: u16) -> Result<HrtimerBlock> {
    let fields = [softexpires, function, base];
    let start = *fields.iter().min().expect("three fields");
    let words = fields.map(|at| (at - start) / 8);
    let aligned = fields.iter().all(|at| (at - start).is_multiple_of(8));
    let fits = words.iter().all(|&w| (w as usize) < TIMER_BLOCK_WORDS);
    let distinct = words[0] != words[1] && words[1] != words[2] && words[0] != words[2];
    if !(aligned && fits && distinct) {
        anyhow::bail!(
            "struct hrtimer has _softexpires at {softexpires}, function at {function}, base at \
             {base}: not three 8-byte words within the {} bytes the hook reads in one block",
            TIMER_BLOCK_WORDS * 8
        );
    }
    Ok(HrtimerBlock {
        start,
        words: words.map(|w| w as u8),
    })
}

const _: () = assert!(LATENESS_BUCKETS == 64);

pub fn read_steal_ns(proc: &Path) -> Option<i64> {
    let ticks = clockguard_sys::clock_ticks_per_s();
    parse_steal_ns(&std::fs::read_to_string(proc.join("stat")).ok()?, ticks)
}

pub fn online_cpus(sys: &Path) -> u32 {
    std::fs::read_to_string(sys.join("devices/system/cpu/online"))
        .ok()
        .and_then(|list| parse_cpu_list(&list))
        .unwrap_or(1)
}

/// Reads the clocks, the kernel's rate setting and the clocksource now.
pub fn read_sample(sys: &Path) -> ClockSample {
    use crate::{
        clock::read_ns,
        slew::{KernelClock, LinuxClock},
    };
    // RAW on both sides of MONOTONIC: a read that stalls (an emulated clocksource, the
    // sampler descheduled) shows as spread instead of as a jump.
    let raw_before = read_ns(libc::CLOCK_MONOTONIC_RAW);
    let mono_ns = read_ns(libc::CLOCK_MONOTONIC);
    let raw_after = read_ns(libc::CLOCK_MONOTONIC_RAW);
    ClockSample {
        mono: Monotonic::from_ns(mono_ns),
        raw: Raw::from_ns(raw_before + (raw_after - raw_before) / 2),
        read_spread_ns: raw_after - raw_before,
        boot_ns: read_ns(libc::CLOCK_BOOTTIME),
        kernel_rate_ppm: LinuxClock.read_rate().ok().map(|rate| rate.ppm()),
        clocksource: crate::vmfacts::current_clocksource(sys),
    }
}

#[cfg(test)]
mod tests;
