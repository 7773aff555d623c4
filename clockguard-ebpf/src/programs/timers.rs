//! Timers: every hrtimer expiry's lateness into a per-CPU histogram, late ones to
//! their own ring buffer.

use super::*;

/// Where the hrtimer hook finds its fields, and its threshold. Set by the daemon.
#[map]
static TIMER_CONFIG: Array<TimerConfig> = Array::with_max_entries(1, 0);

/// Per-CPU log2 histogram of hrtimer expiry lateness (see LATENESS_BUCKETS), summed by
/// the daemon. Per CPU, so an expiry costs one increment and no lock or atomic.
#[map]
static LATENESS: PerCpuArray<LatenessHistogram> = PerCpuArray::with_max_entries(1, 0);

/// Expiries late by the threshold or more. Their own small ring buffer, so that a burst
/// of late timers after a stall can never crowd out clock events (and vice versa).
#[map]
static TIMER_EVENTS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

const CLOCK_MONOTONIC: i32 = 1;

/// Every hrtimer expiry: lateness = the base's `now` − the timer's soft expiry, into the
/// histogram; only an expiry at or over the threshold reaches the ring buffer.
///
/// Only CLOCK_MONOTONIC timers count: a REALTIME or TAI timer "expires late" by the size
/// of any forward step, and a BOOTTIME one by the length of a suspend, which says
/// nothing about timer delivery (steps and suspends are reported on their own).
/// An expiry that interrupts this program on the same CPU (a hard timer during a soft
/// one) is skipped by the kernel's recursion guard, so the per-CPU adds never race.
#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn hrtimer_expire_entry(ctx: BtfTracePointContext) -> u32 {
    let Some(cfg) = TIMER_CONFIG.get(0) else {
        return 0;
    };
    if cfg.flags & TIMER_CONFIG_VALID == 0 {
        return 0;
    }
    let timer: u64 = ctx.arg(0);
    let now_arg: u64 = ctx.arg(1);
    // One read for `_softexpires`, `function` and `base`: the daemon found them within
    // TIMER_BLOCK_WORDS words of each other before it set TIMER_CONFIG_VALID. Every
    // helper call counts on this path: it runs on every timer expiry of the machine.
    let now = if cfg.flags & TIMER_CONFIG_NOW_BY_VALUE != 0 {
        Some(now_arg as i64)
    } else {
        read_kernel::<i64>(now_arg, 0)
    };
    let (Some(now), Some(block)) = (
        now,
        read_kernel::<[u64; TIMER_BLOCK_WORDS]>(timer, cfg.hrtimer_block as u32),
    ) else {
        count(COUNTER_TIMER_READ_FAULTS);
        return 0;
    };
    // The mask restates the bound for the verifier (the daemon checked each index).
    let word = |index: u8| block[index as usize & (TIMER_BLOCK_WORDS - 1)];
    let soft = word(cfg.softexpires_word) as i64;
    let base = word(cfg.base_word);
    let Some(clockid) = read_kernel::<i32>(base, cfg.clock_base_clockid as u32) else {
        count(COUNTER_TIMER_READ_FAULTS);
        return 0;
    };
    if clockid != CLOCK_MONOTONIC {
        return 0;
    }
    let lateness = if now > soft { (now - soft) as u64 } else { 0 };
    if let Some(histogram) = LATENESS.get_ptr_mut(0) {
        // The mask restates the bound (lateness_bucket() < 64) for the verifier.
        let bucket = (lateness_bucket(lateness) & (LATENESS_BUCKETS - 1)) as usize;
        unsafe {
            (*histogram).buckets[bucket] += 1;
            (*histogram).sum_ns += lateness;
        }
    }
    if lateness < cfg.late_threshold_ns {
        return 0;
    }
    let event = TimerLateEvent {
        mono_ns: now as u64,
        lateness_ns: lateness,
        function: word(cfg.function_word),
        cpu: unsafe { generated::bpf_get_smp_processor_id() },
        _pad: 0,
    };
    if TIMER_EVENTS.output::<TimerLateEvent>(&event, 0).is_ok() {
        count(COUNTER_TIMER_LATE_EVENTS);
    } else {
        count(COUNTER_TIMER_LATE_DROPS);
    }
    0
}
