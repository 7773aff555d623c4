//! Audit: every clock syscall (by fentry/fexit where the kernel allows it, else by its
//! syscall tracepoints), paired enter/exit per thread with the measured jump, and
//! clock_was_set for the kernel's own changes.

use super::*;

/// Starts the current thread's pending call: its entry zeroed in place, or a zeroed value
/// inserted at the thread's first call (a zero-filled value on the BPF stack is a
/// memset, which BPF cannot call). Only what must be read before the kernel acts: the
/// offset before, and (by the caller) the requested value.
#[inline(always)]
fn begin(syscall: u32, clock_id: i32) -> Option<*mut PendingCall> {
    count(COUNTER_SYSCALLS);
    let (pending, reused) = thread_entry(bpf_get_current_pid_tgid() as u32)?;
    let p = unsafe { &mut *pending };
    if reused {
        send_unfinished(p);
        copy_words(p, unsafe { &*ZERO_PENDING.get_ptr(0)? });
    }
    p.syscall = syscall;
    p.clock_id = clock_id;
    (p.enter_mono_ns, p.offset_before_ns) = clock_now();
    p.flags = FLAG_HAS_OFFSET_BEFORE;
    Some(pending)
}

/// Completes the current thread's pending call with the result, the offset after and the
/// caller's identity, built once straight in a ring-buffer slot, and emits it.
#[inline(always)]
fn finish(ret: i64, syscall: u32) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let entry = PENDING.get_ptr_mut(tid);
    let p = match entry {
        Some(p) if unsafe { (*p).syscall } != SYSCALL_NONE => unsafe { &mut *p },
        // Read-only adjtimex (counted at enter), or the enter run was skipped.
        _ => {
            finish_unbegun(entry, ret, syscall);
            return 0;
        }
    };
    if p.syscall != syscall {
        // An earlier call whose exit we missed, and this call's enter missed too.
        send_unfinished(p);
        return 0;
    }
    let (exit_mono_ns, offset_after_ns) = clock_now();
    remember_offset(offset_after_ns);
    let modes = timex_modes(p);
    let offset_change = offset_after_ns.wrapping_sub(p.offset_before_ns);
    if may_summarise(ret, p.flags, p.guard.action, modes)
        && offset_change.abs() <= SUMMARY_MAX_OFFSET_CHANGE_NS
        && counted_as_repeat(p, ret, modes, exit_mono_ns, offset_after_ns)
    {
        p.syscall = SYSCALL_NONE;
        return 0;
    }
    send_call(p, ret, exit_mono_ns, offset_after_ns);
    p.syscall = SYSCALL_NONE;
    0
}

/// The exit of a call whose enter run the kernel skipped (or that began before the hook
/// attached). A clock_settime that returned 0 set a clock: sent with FLAG_NO_ENTER, unless
/// clock_was_set() already sent the change as its own event (FLAG_KERNEL_SENT). Other
/// calls stay in the skipped-runs count: reads, failures, and settimeofday, which may have
/// set only the timezone.
#[inline(always)]
fn finish_unbegun(entry: Option<*mut PendingCall>, ret: i64, syscall: u32) {
    // The mark is for this call, whatever it was: cleared at its exit.
    if let Some(entry) = entry {
        let entry = unsafe { &mut *entry };
        if entry.flags & FLAG_KERNEL_SENT != 0 {
            entry.flags &= !FLAG_KERNEL_SENT;
            return;
        }
    }
    if ret != 0 || syscall != SYSCALL_CLOCK_SETTIME {
        return;
    }
    let Some(mut slot) = reserve_zeroed_event() else {
        return;
    };
    let e = unsafe { &mut *slot.as_mut_ptr() };
    let (now_mono_ns, offset_now_ns) = clock_now();
    e.kind = EVENT_SYSCALL;
    e.syscall = syscall;
    e.flags = FLAG_NO_ENTER;
    e.enter_mono_ns = now_mono_ns;
    e.exit_mono_ns = now_mono_ns;
    e.offset_after_ns = offset_now_ns;
    e.stack_id = -1;
    fill_caller(e);
    slot.submit(0);
    count(COUNTER_EVENTS);
}

/// Marks the current thread's entry: clock_was_set() sent its own event for the call in
/// progress, whose enter run was skipped (see `finish_unbegun`). The entry is made if the
/// thread has none yet (its first clock call); the next enter clears the mark.
#[inline(always)]
fn mark_kernel_sent() {
    if let Some((entry, _)) = thread_entry(bpf_get_current_pid_tgid() as u32) {
        unsafe { (*entry).flags |= FLAG_KERNEL_SENT };
    }
}

/// The thread's PENDING entry, and whether it existed: made zeroed at its first use (a
/// full map is counted in COUNTER_PENDING_FULL).
#[inline(always)]
fn thread_entry(tid: u32) -> Option<(*mut PendingCall, bool)> {
    if let Some(entry) = PENDING.get_ptr_mut(tid) {
        return Some((entry, true));
    }
    let zero = ZERO_PENDING.get(0)?;
    if PENDING.insert(tid, zero, BPF_ANY as u64).is_err() {
        count(COUNTER_PENDING_FULL);
        return None;
    }
    Some((PENDING.get_ptr_mut(tid)?, false))
}

/// A ring-buffer slot for a ClockEvent, zero-filled (a full ring buffer is counted in
/// COUNTER_RINGBUF_DROPS).
#[inline(always)]
fn reserve_zeroed_event() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<ClockEvent>> {
    let zero = ZERO_EVENT.get(0)?;
    let Some(mut slot) = EVENTS.reserve::<ClockEvent>(0) else {
        count(COUNTER_RINGBUF_DROPS);
        return None;
    };
    copy_words(unsafe { &mut *slot.as_mut_ptr() }, zero);
    Some(slot)
}

/// The adjtimex modes of the call, 0 for a call without a timex.
#[inline(always)]
fn timex_modes(p: &PendingCall) -> u32 {
    if p.flags & FLAG_HAS_TIMEX != 0 {
        p.timex.modes
    } else {
        0
    }
}

/// Builds the call's event once, straight in a ring-buffer slot, with the caller's
/// identity, and emits it (a full ring buffer is counted in COUNTER_RINGBUF_DROPS).
#[inline(always)]
fn send_call(p: &PendingCall, ret: i64, exit_mono_ns: u64, offset_after_ns: i64) {
    let Some(mut slot) = EVENTS.reserve::<ClockEvent>(0) else {
        count(COUNTER_RINGBUF_DROPS);
        return;
    };
    // Every field is written: the slot is not zeroed.
    let e = unsafe { &mut *slot.as_mut_ptr() };
    e.kind = EVENT_SYSCALL;
    e.syscall = p.syscall;
    e.clock_id = p.clock_id;
    e.flags = p.flags;
    e.ret = ret;
    e.enter_mono_ns = p.enter_mono_ns;
    e.exit_mono_ns = exit_mono_ns;
    e.offset_before_ns = p.offset_before_ns;
    e.offset_after_ns = offset_after_ns;
    e.req_sec = p.req_sec;
    e.req_nsec = p.req_nsec;
    e.tz_minuteswest = p.tz_minuteswest;
    e.tz_dsttime = p.tz_dsttime;
    copy_words(&mut e.timex, &p.timex);
    e.stack_id = -1;
    e.clock_was_set_bases = p.clock_was_set_bases;
    copy_words(&mut e.guard, &p.guard);
    fill_caller(e);
    slot.submit(0);
    count(COUNTER_EVENTS);
}

/// Sends the thread's pending call if its exit hook never ran (see FLAG_NO_EXIT) and
/// something inside it must be named (`unfinished_is_sent`): a step whose exit run was
/// skipped still has its own record, its jump measured up to clock_was_set(). Called when
/// the thread's next clock call begins, when the thread exits, and by clock_was_set() for
/// an earlier call it finds still pending.
#[inline(always)]
pub(super) fn send_unfinished(p: &mut PendingCall) {
    if p.syscall == SYSCALL_NONE {
        return;
    }
    if unfinished_is_sent(p.flags, p.guard.action) {
        p.flags |= FLAG_NO_EXIT;
        if p.flags & FLAG_CLOCK_WAS_SET != 0 {
            send_call(p, 0, p.clock_was_set_mono_ns, p.clock_was_set_offset_ns);
        } else {
            send_call(p, 0, p.enter_mono_ns, p.offset_before_ns);
        }
    }
    p.syscall = SYSCALL_NONE;
}

/// Counts the call in its REPEATS entry; true when it is only counted there (the key
/// already had `repeats_in_full` calls this epoch), false when it must be sent in full.
/// Two CPUs racing on one key may both send in full: every call is still either sent
/// or counted, never both, never neither.
#[inline(always)]
fn counted_as_repeat(
    p: &PendingCall,
    ret: i64,
    modes: u32,
    exit_mono_ns: u64,
    offset_after_ns: i64,
) -> bool {
    let Some(cfg) = config() else { return false };
    let in_full = cfg.repeats_in_full as u64;
    if in_full == 0 {
        return false;
    }
    let Some(&epoch) = REPEAT_EPOCH.get(0) else {
        return false;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = RepeatKey {
        tgid,
        syscall: p.syscall,
        clock_id: p.clock_id,
        request: repeat_request(p.syscall, p.flags, modes),
        ret: ret as i32,
        epoch,
    };
    let entry = match REPEATS.get_ptr_mut(&key) {
        Some(entry) => entry,
        None => {
            let Some(zero) = ZERO_REPEAT.get(0) else {
                return false;
            };
            // BPF_NOEXIST: of two CPUs creating one key, the second finds the first's.
            match REPEATS.insert(&key, zero, BPF_NOEXIST as u64) {
                Ok(()) => {
                    let Some(entry) = REPEATS.get_ptr_mut(&key) else {
                        return false;
                    };
                    let e = unsafe { &mut *entry };
                    fill_identity(
                        tgid,
                        Identity {
                            uid: &mut e.uid,
                            gid: &mut e.gid,
                            cgroup_id: &mut e.cgroup_id,
                            comm: &mut e.comm,
                            flags: &mut e.flags,
                            ppid: &mut e.ppid,
                            parent_comm: &mut e.parent_comm,
                            exe: &mut e.exe,
                        },
                    );
                    entry
                }
                Err(err) if i64::from(err) == -EEXIST => match REPEATS.get_ptr_mut(&key) {
                    Some(entry) => entry,
                    None => return false,
                },
                Err(_) => {
                    count(COUNTER_REPEATS_FULL);
                    return false;
                }
            }
        }
    };
    let e = unsafe { &mut *entry };
    let seen = unsafe { core::ptr::read_volatile(&e.seen) };
    atomic_increment(&mut e.seen);
    if seen < in_full {
        return false;
    }
    if unsafe { core::ptr::read_volatile(&e.summarised) } == 0 {
        e.first_mono_ns = p.enter_mono_ns;
        e.first_offset_ns = p.offset_before_ns;
    }
    atomic_increment(&mut e.summarised);
    e.last_mono_ns = exit_mono_ns;
    e.last_offset_ns = offset_after_ns;
    count(COUNTER_SUMMARISED);
    true
}

/// Syscall tracepoint args start at byte 16 (after the common header and __syscall_nr),
/// 8 bytes each; an exit's return value is at byte 16 too.
const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;

/// A syscall tracepoint's argument or return value (fixed offsets inside the record). A
/// plain load: the verifier allows tracepoint programs to read their record, where
/// `read_at` makes a bpf_probe_read_kernel call (tens of ns) for each.
#[inline(always)]
fn syscall_field(ctx: &TracePointContext, offset: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset).cast::<u64>() }
}

#[repr(C)]
struct UserTimespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
struct UserTimezone {
    minuteswest: i32,
    dsttime: i32,
}

/// The first 96 bytes of `struct __kernel_timex` (see clockguard_ebpf::kernel_timex).
#[repr(C)]
struct UserTimexHead {
    modes: u32,
    _pad0: i32,
    offset: i64,
    freq: i64,
    maxerror: i64,
    esterror: i64,
    status: i32,
    _pad1: i32,
    constant: i64,
    _precision: i64,
    _tolerance: i64,
    time_sec: i64,
    time_usec: i64,
    tick: i64,
}

/// clock_settime(clockid_t, const struct __kernel_timespec *tp).
#[inline(always)]
fn enter_clock_settime(clock_id: i32, tp: u64) -> u32 {
    let tp = tp as *const UserTimespec;
    let Some(event) = begin(SYSCALL_CLOCK_SETTIME, clock_id) else {
        return 0;
    };
    let e = unsafe { &mut *event };
    match unsafe { bpf_probe_read_user(tp) } {
        Ok(ts) => {
            e.req_sec = ts.sec;
            e.req_nsec = ts.nsec;
            e.flags |= FLAG_HAS_TIME;
        }
        Err(_) => e.flags |= FLAG_ARG_FAULT,
    }
    0
}

/// settimeofday(struct __kernel_old_timeval *tv, struct timezone *tz).
#[inline(always)]
fn enter_settimeofday(tv: u64, tz: u64) -> u32 {
    let Some(event) = begin(SYSCALL_SETTIMEOFDAY, CLOCK_REALTIME) else {
        return 0;
    };
    let e = unsafe { &mut *event };
    if tv != 0 {
        // struct __kernel_old_timeval { long tv_sec; long tv_usec; }: same shape.
        match unsafe { bpf_probe_read_user(tv as *const UserTimespec) } {
            Ok(t) => {
                e.req_sec = t.sec;
                e.req_nsec = t.nsec.wrapping_mul(1000);
                e.flags |= FLAG_HAS_TIME;
            }
            Err(_) => e.flags |= FLAG_ARG_FAULT,
        }
    }
    if tz != 0 {
        match unsafe { bpf_probe_read_user(tz as *const UserTimezone) } {
            Ok(z) => {
                e.tz_minuteswest = z.minuteswest;
                e.tz_dsttime = z.dsttime;
                e.flags |= FLAG_HAS_TZ;
            }
            Err(_) => e.flags |= FLAG_ARG_FAULT,
        }
    }
    0
}

/// Shared by adjtimex and clock_adjtime: reads the timex; a read-only call (modes == 0)
/// is only counted unless the daemon asked for them.
#[inline(always)]
fn enter_timex(syscall: u32, clock_id: i32, txc: u64) -> u32 {
    // `modes` alone first: most calls are reads (chronyd, monitoring) and stop here.
    if let Ok(0) = unsafe { bpf_probe_read_user(txc as *const u32) } {
        let emit_reads = config().map(|c| c.flags & CONFIG_EMIT_READONLY != 0);
        if emit_reads != Some(true) {
            count(COUNTER_SYSCALLS);
            count(COUNTER_READONLY_ADJTIMEX);
            return 0;
        }
    }
    let Some(event) = begin(syscall, clock_id) else {
        return 0;
    };
    let e = unsafe { &mut *event };
    // The whole head is read and copied in one block, so no field of it lives across
    // the branches above (LLVM once spilled an unset register there, which the
    // verifier rightly refuses).
    match unsafe { bpf_probe_read_user(txc as *const UserTimexHead) } {
        Ok(h) => {
            e.timex.modes = h.modes;
            e.timex.status = h.status;
            e.timex.offset = h.offset;
            e.timex.freq = h.freq;
            e.timex.maxerror = h.maxerror;
            e.timex.esterror = h.esterror;
            e.timex.constant = h.constant;
            e.timex.time_sec = h.time_sec;
            e.timex.time_usec = h.time_usec;
            e.timex.tick = h.tick;
            e.flags |= FLAG_HAS_TIMEX;
        }
        Err(_) => e.flags |= FLAG_ARG_FAULT,
    }
    0
}

// Each clock syscall is seen one of two ways, chosen by the daemon per syscall:
// - fentry/fexit on its x86-64 entry point (`__x64_sys_*`, whose one argument is the
//   caller's `struct pt_regs`), where the kernel allows fentry;
// - else its syscall tracepoints. While any syscall tracepoint is attached the kernel
//   sends every syscall of every process through its tracing path (+40 ns each on this
//   project's test host), which is why they are only the fallback.
// Both run the same enter_*/finish, so a syscall seen both ways (one of a pair failed to
// attach) still makes one event: the later enter rewrites the same pending call, and the
// first exit completes it.

#[tracepoint(category = "syscalls", name = "sys_enter_clock_settime")]
pub fn sys_enter_clock_settime(ctx: TracePointContext) -> u32 {
    enter_clock_settime(syscall_field(&ctx, ARG0) as i32, syscall_field(&ctx, ARG1))
}

#[tracepoint(category = "syscalls", name = "sys_exit_clock_settime")]
pub fn sys_exit_clock_settime(ctx: TracePointContext) -> u32 {
    finish(syscall_field(&ctx, RET) as i64, SYSCALL_CLOCK_SETTIME)
}

#[tracepoint(category = "syscalls", name = "sys_enter_settimeofday")]
pub fn sys_enter_settimeofday(ctx: TracePointContext) -> u32 {
    enter_settimeofday(syscall_field(&ctx, ARG0), syscall_field(&ctx, ARG1))
}

#[tracepoint(category = "syscalls", name = "sys_exit_settimeofday")]
pub fn sys_exit_settimeofday(ctx: TracePointContext) -> u32 {
    finish(syscall_field(&ctx, RET) as i64, SYSCALL_SETTIMEOFDAY)
}

#[tracepoint(category = "syscalls", name = "sys_enter_adjtimex")]
pub fn sys_enter_adjtimex(ctx: TracePointContext) -> u32 {
    enter_timex(SYSCALL_ADJTIMEX, CLOCK_REALTIME, syscall_field(&ctx, ARG0))
}

#[tracepoint(category = "syscalls", name = "sys_exit_adjtimex")]
pub fn sys_exit_adjtimex(ctx: TracePointContext) -> u32 {
    finish(syscall_field(&ctx, RET) as i64, SYSCALL_ADJTIMEX)
}

#[tracepoint(category = "syscalls", name = "sys_enter_clock_adjtime")]
pub fn sys_enter_clock_adjtime(ctx: TracePointContext) -> u32 {
    let clock_id = syscall_field(&ctx, ARG0) as i32;
    enter_timex(SYSCALL_CLOCK_ADJTIME, clock_id, syscall_field(&ctx, ARG1))
}

#[tracepoint(category = "syscalls", name = "sys_exit_clock_adjtime")]
pub fn sys_exit_clock_adjtime(ctx: TracePointContext) -> u32 {
    finish(syscall_field(&ctx, RET) as i64, SYSCALL_CLOCK_ADJTIME)
}

/// x86-64 `struct pt_regs` (arch/x86/include/asm/ptrace.h): byte offsets of `di` and
/// `si`, the first two syscall arguments. Fixed: the entry assembly depends on them.
const PT_REGS_DI: usize = 112;
const PT_REGS_SI: usize = 104;

/// A syscall argument from the `struct pt_regs *` that a `__x64_sys_*` entry point
/// takes. A plain load: the verifier checks it against the BTF of `struct pt_regs`.
#[inline(always)]
fn regs_arg(ctx: &FEntryContext, offset: usize) -> u64 {
    let regs: *const u8 = ctx.arg(0);
    unsafe { *(regs.add(offset) as *const u64) }
}

/// The return value an fexit program sees after its function's one argument.
#[inline(always)]
fn syscall_ret(ctx: &FExitContext) -> i64 {
    ctx.arg(1)
}

#[fentry(function = "__x64_sys_clock_settime")]
pub fn fentry_clock_settime(ctx: FEntryContext) -> u32 {
    enter_clock_settime(
        regs_arg(&ctx, PT_REGS_DI) as i32,
        regs_arg(&ctx, PT_REGS_SI),
    )
}

#[fexit(function = "__x64_sys_clock_settime")]
pub fn fexit_clock_settime(ctx: FExitContext) -> u32 {
    finish(syscall_ret(&ctx), SYSCALL_CLOCK_SETTIME)
}

#[fentry(function = "__x64_sys_settimeofday")]
pub fn fentry_settimeofday(ctx: FEntryContext) -> u32 {
    enter_settimeofday(regs_arg(&ctx, PT_REGS_DI), regs_arg(&ctx, PT_REGS_SI))
}

#[fexit(function = "__x64_sys_settimeofday")]
pub fn fexit_settimeofday(ctx: FExitContext) -> u32 {
    finish(syscall_ret(&ctx), SYSCALL_SETTIMEOFDAY)
}

#[fentry(function = "__x64_sys_adjtimex")]
pub fn fentry_adjtimex(ctx: FEntryContext) -> u32 {
    enter_timex(SYSCALL_ADJTIMEX, CLOCK_REALTIME, regs_arg(&ctx, PT_REGS_DI))
}

#[fexit(function = "__x64_sys_adjtimex")]
pub fn fexit_adjtimex(ctx: FExitContext) -> u32 {
    finish(syscall_ret(&ctx), SYSCALL_ADJTIMEX)
}

#[fentry(function = "__x64_sys_clock_adjtime")]
pub fn fentry_clock_adjtime(ctx: FEntryContext) -> u32 {
    let clock_id = regs_arg(&ctx, PT_REGS_DI) as i32;
    enter_timex(SYSCALL_CLOCK_ADJTIME, clock_id, regs_arg(&ctx, PT_REGS_SI))
}

#[fexit(function = "__x64_sys_clock_adjtime")]
pub fn fexit_clock_adjtime(ctx: FExitContext) -> u32 {
    finish(syscall_ret(&ctx), SYSCALL_CLOCK_ADJTIME)
}

/// clock_was_set(bases) runs whenever CLOCK_REALTIME is set relative to CLOCK_MONOTONIC:
/// settimeofday/clock_settime, ADJ_SETOFFSET, leap seconds, RTC sleep-time injection.
/// Not on resume since Linux 5.14: timekeeping_resume() notifies timerfds directly
/// (timerfd_resume), so the daemon's timers sampler and fallback detector see that.
/// Inside a traced syscall it only marks that syscall's pending event; anywhere else it
/// is an event of its own, measured against the last known offset, with a kernel stack.
#[fentry(function = "clock_was_set")]
pub fn clock_was_set(ctx: FEntryContext) -> u32 {
    let bases: u32 = ctx.arg(0);
    let (mono_now, offset_now) = clock_now();
    if let Some(e) = pending_call() {
        // clock_settime and settimeofday run clock_was_set() once: an entry of theirs
        // already marked is an earlier call whose exit hook run the kernel skipped, and
        // this call's enter hook run was skipped too (7.2, 10 processes stepping at once).
        // Marking it again would fold this step into that call's record: send that call
        // and this change as its own, measured from the last known offset.
        let settime = e.syscall == SYSCALL_CLOCK_SETTIME || e.syscall == SYSCALL_SETTIMEOFDAY;
        if !(settime && e.flags & FLAG_CLOCK_WAS_SET != 0) {
            e.flags |= FLAG_CLOCK_WAS_SET;
            e.clock_was_set_bases = bases;
            e.clock_was_set_mono_ns = mono_now;
            e.clock_was_set_offset_ns = offset_now;
            // The offset as the kernel just set it: what a later change is measured from.
            remember_offset(offset_now);
            return 0;
        }
        send_unfinished(e);
    }
    aya_log_ebpf::debug!(
        &ctx,
        "clock_was_set outside a traced syscall: bases {}, offset now {} ns",
        bases,
        offset_now
    );
    // Built in a reserved ring-buffer slot: too large for the stack.
    let Some(mut slot) = reserve_zeroed_event() else {
        return 0;
    };
    let e = unsafe { &mut *slot.as_mut_ptr() };
    e.kind = EVENT_CLOCK_WAS_SET;
    e.syscall = SYSCALL_NONE;
    e.clock_id = CLOCK_REALTIME;
    e.clock_was_set_bases = bases;
    e.enter_mono_ns = mono_now;
    e.exit_mono_ns = mono_now;
    e.offset_after_ns = offset_now;
    if let (Some(last), Some(valid)) = (LAST_OFFSET.get(0), LAST_OFFSET.get(1)) {
        if *valid != 0 {
            e.offset_before_ns = *last;
            e.flags |= FLAG_HAS_OFFSET_BEFORE;
        }
    }
    e.stack_id = -1;
    fill_caller(e);
    if let Ok(id) = aya_ebpf::programs::tracing::StackIdContext::get_stackid(
        &ctx,
        &STACKS,
        BPF_F_FAST_STACK_CMP as u64,
    ) {
        e.stack_id = id;
        e.flags |= FLAG_HAS_STACK;
    }
    remember_offset(offset_now);
    slot.submit(0);
    count(COUNTER_EVENTS);
    // Its exit (if it is a clock syscall whose enter run was skipped) sends nothing more.
    // Outside a syscall (a leap second, from a kworker via clock_was_set_delayed) this
    // marks that thread, whose next clock call clears it.
    mark_kernel_sent();
    0
}
