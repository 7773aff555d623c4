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
mod programs {
    use core::ffi::c_void;

    use aya_ebpf::{
        bindings::{BPF_ANY, BPF_F_FAST_STACK_CMP, BPF_NOEXIST},
        helpers::{
            bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, generated,
        },
        macros::{btf_tracepoint, fentry, fexit, lsm, map, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
        programs::{
            BtfTracePointContext, FEntryContext, FExitContext, LsmContext, TracePointContext,
        },
        EbpfContext,
    };
    use clockguard_ebpf::*;

    /// Events to the daemon. 1 MiB holds about 2,900 events: room for a burst while the
    /// daemon is descheduled; anything beyond is counted in COUNTER_RINGBUF_DROPS.
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

    /// Enter half of a clock syscall, keyed by tid, completed and emitted at exit. A thread's
    /// entry is made at its first clock syscall and then reused in place: the exit marks it
    /// done (`syscall` = SYSCALL_NONE) and the next enter overwrites it. An insert or a
    /// delete takes the bucket lock, a lookup does not: with one of each per call the two
    /// programs took 744 ns on the host, reusing the entry 460 ns (BPF stats). The thread's
    /// exit (sched_process_exit) removes the entry; without that hook, entries of dead
    /// threads stay until the map is full, which is counted in COUNTER_PENDING_FULL, never
    /// silent. A plain, preallocated hash map: an LRU one could evict a call in flight, and
    /// cost ~150 ns more per insert.
    #[map]
    static PENDING: HashMap<u32, PendingCall> = HashMap::with_max_entries(8192, 0);

    /// What fork/exec told us about each process (by tgid), for attribution after exit.
    #[map]
    static PROCS: LruHashMap<u32, ProcInfo> = LruHashMap::with_max_entries(16384, 0);

    /// A zeroed ClockEvent / PendingCall / ProcInfo to initialise map values and ring-buffer
    /// slots from (array maps start zeroed; nothing writes these). Avoids zero-filling on
    /// the BPF stack, which bpf-linker rejects.
    #[map]
    static ZERO_EVENT: Array<ClockEvent> = Array::with_max_entries(1, 0);
    #[map]
    static ZERO_PENDING: Array<PendingCall> = Array::with_max_entries(1, 0);
    #[map]
    static ZERO_PROC: Array<ProcInfo> = Array::with_max_entries(1, 0);

    /// Repeats of clock calls that changed nothing (see `may_summarise`), counted per key
    /// and epoch: the first `Config::repeats_in_full` of a key in an epoch are sent in
    /// full, the rest only counted here, and the daemon journals one summary record per key
    /// from what it collects. A plain, preallocated hash: an LRU one could evict a count
    /// nobody journaled; a full map sends the call in full (COUNTER_REPEATS_FULL).
    #[map]
    static REPEATS: HashMap<RepeatKey, RepeatCount> = HashMap::with_max_entries(2048, 0);

    /// Index 0: the current epoch of REPEATS keys, advanced by the daemon every interval.
    #[map]
    static REPEAT_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

    /// A zeroed RepeatCount to insert new REPEATS entries from.
    #[map]
    static ZERO_REPEAT: Array<RepeatCount> = Array::with_max_entries(1, 0);

    /// Per-CPU counters (COUNTER_*), summed by the daemon.
    #[map]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

    /// Set by the daemon before attaching.
    #[map]
    static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

    /// The last CLOCK_TAI − CLOCK_MONOTONIC seen (ns), index 0; index 1 is 1 once valid.
    /// Seeded by the daemon and kept current here, so an in-kernel clock_was_set can be
    /// measured against the offset before it.
    #[map]
    static LAST_OFFSET: Array<i64> = Array::with_max_entries(2, 0);

    /// Kernel stacks of in-kernel clock changes (who called clock_was_set).
    #[map]
    static STACKS: StackTrace = StackTrace::with_max_entries(1024, 0);

    const CLOCK_REALTIME: i32 = 0;
    const EEXIST: i64 = 17;

    #[inline(always)]
    fn count(index: u32) {
        if let Some(counter) = COUNTERS.get_ptr_mut(index) {
            // Per-CPU value: no other CPU writes it, and tracepoint programs do not nest on
            // one CPU for these events, so a plain add is exact.
            unsafe { *counter += 1 };
        }
    }

    #[inline(always)]
    fn config() -> Option<&'static Config> {
        CONFIG.get(0)
    }

    /// CLOCK_MONOTONIC now and CLOCK_TAI − CLOCK_MONOTONIC, both in ns. The offset is
    /// constant between steps, because slewing (adjtimex frequency/tick) moves CLOCK_MONOTONIC
    /// and CLOCK_TAI alike. The TAI read follows the monotonic one, so the offset is larger
    /// by the time one read takes; that is the same before and after a change and cancels in
    /// the jump. Two reads and no more: each costs ~35 ns on a TSC host, and a third
    /// (a midpoint of two monotonic reads) cost 70 ns per call for a few ns of accuracy.
    #[inline(always)]
    fn clock_now() -> (u64, i64) {
        let mono = unsafe { generated::bpf_ktime_get_ns() };
        let tai = unsafe { generated::bpf_ktime_get_tai_ns() };
        (mono, (tai as i64).wrapping_sub(mono as i64))
    }

    #[inline(always)]
    fn remember_offset(offset: i64) {
        if let Some(slot) = LAST_OFFSET.get_ptr_mut(0) {
            unsafe { *slot = offset };
        }
        if let Some(valid) = LAST_OFFSET.get_ptr_mut(1) {
            unsafe { *valid = 1 };
        }
    }

    /// Fills the caller's identity into `event` (pid, uid, comm, cgroup, and what fork/exec
    /// left in PROCS). Every field it owns is written, so `event` may be uninitialised
    /// ring-buffer memory; without PROCS, `parent_comm` and `exe` are empty strings.
    #[inline(always)]
    fn fill_caller(event: &mut ClockEvent) {
        let pid_tgid = bpf_get_current_pid_tgid();
        event.tgid = (pid_tgid >> 32) as u32;
        event.tid = pid_tgid as u32;
        fill_identity(
            event.tgid,
            Identity {
                uid: &mut event.uid,
                gid: &mut event.gid,
                cgroup_id: &mut event.cgroup_id,
                comm: &mut event.comm,
                flags: &mut event.flags,
                ppid: &mut event.ppid,
                parent_comm: &mut event.parent_comm,
                exe: &mut event.exe,
            },
        );
    }

    /// Where a caller's identity goes: the same fields in a ClockEvent and a RepeatCount.
    struct Identity<'a> {
        uid: &'a mut u32,
        gid: &'a mut u32,
        cgroup_id: &'a mut u64,
        comm: &'a mut [u8; COMM_LEN],
        flags: &'a mut u32,
        ppid: &'a mut u32,
        parent_comm: &'a mut [u8; COMM_LEN],
        exe: &'a mut [u8; EXE_LEN],
    }

    /// Writes the current task's uid/gid, cgroup, comm and what fork/exec left in PROCS for
    /// `tgid` (FLAG_HAS_PROCINFO in `flags`; else `ppid` 0 and empty strings).
    #[inline(always)]
    fn fill_identity(tgid: u32, out: Identity) {
        let uid_gid = bpf_get_current_uid_gid();
        *out.uid = uid_gid as u32;
        *out.gid = (uid_gid >> 32) as u32;
        *out.cgroup_id = unsafe { generated::bpf_get_current_cgroup_id() };
        // The raw helper writes straight into the destination (see PLATFORM.md: the safe
        // wrapper zero-fills on the stack, which bpf-linker rejects with LLVM 22).
        unsafe {
            generated::bpf_get_current_comm(out.comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32)
        };
        if let Some(info) = unsafe { PROCS.get(tgid) } {
            *out.ppid = info.ppid;
            *out.flags |= FLAG_HAS_PROCINFO;
            // Plain loads from map memory cost less than a bpf_probe_read_kernel call each.
            copy_words(out.parent_comm, &info.parent_comm);
            copy_words(out.exe, &info.exe);
        } else {
            // Volatile: two adjacent zero stores could become a memset, which BPF cannot call.
            unsafe {
                core::ptr::write_volatile(out.ppid, 0);
                core::ptr::write_volatile(&mut out.parent_comm[0], 0);
                core::ptr::write_volatile(&mut out.exe[0], 0);
            }
        }
    }

    /// Copies a `T` 8 bytes at a time (its size is a multiple of 8, both sides 8-aligned: map
    /// values and ring-buffer slots are). Volatile, because LLVM turns a plain copy or loop
    /// into a memmove call, which BPF cannot make.
    #[inline(always)]
    fn copy_words<T>(dst: &mut T, src: &T) {
        let (dst, src) = (dst as *mut T as *mut u64, src as *const T as *const u64);
        for i in 0..core::mem::size_of::<T>() / 8 {
            unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        }
    }

    /// The current thread's pending call, if it is inside a traced clock syscall.
    #[inline(always)]
    fn pending_call() -> Option<&'static mut PendingCall> {
        let tid = bpf_get_current_pid_tgid() as u32;
        let pending = unsafe { &mut *PENDING.get_ptr_mut(tid)? };
        (pending.syscall != SYSCALL_NONE).then_some(pending)
    }

    /// Starts the current thread's pending call: its entry zeroed in place, or a zeroed value
    /// inserted at the thread's first call (a zero-filled value on the BPF stack is a
    /// memset, which BPF cannot call). Only what must be read before the kernel acts: the
    /// offset before, and (by the caller) the requested value.
    #[inline(always)]
    fn begin(syscall: u32, clock_id: i32) -> Option<*mut PendingCall> {
        count(COUNTER_SYSCALLS);
        let zero = unsafe { &*ZERO_PENDING.get_ptr(0)? };
        let tid = bpf_get_current_pid_tgid() as u32;
        let pending = match PENDING.get_ptr_mut(tid) {
            Some(pending) => {
                copy_words(unsafe { &mut *pending }, zero);
                pending
            }
            None => {
                if PENDING.insert(tid, zero, BPF_ANY as u64).is_err() {
                    count(COUNTER_PENDING_FULL);
                    return None;
                }
                PENDING.get_ptr_mut(tid)?
            }
        };
        let p = unsafe { &mut *pending };
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
        let Some(p) = pending_call() else {
            // Read-only adjtimex (counted at enter) or attached mid-call.
            return 0;
        };
        if p.syscall != syscall {
            // A stale entry from a call whose exit we missed: drop it.
            p.syscall = SYSCALL_NONE;
            return 0;
        }
        let (exit_mono_ns, offset_after_ns) = clock_now();
        remember_offset(offset_after_ns);
        let modes = if p.flags & FLAG_HAS_TIMEX != 0 {
            p.timex.modes
        } else {
            0
        };
        let offset_change = offset_after_ns.wrapping_sub(p.offset_before_ns);
        if may_summarise(ret, p.flags, p.guard.action, modes)
            && offset_change.abs() <= SUMMARY_MAX_OFFSET_CHANGE_NS
            && counted_as_repeat(p, ret, modes, exit_mono_ns, offset_after_ns)
        {
            p.syscall = SYSCALL_NONE;
            return 0;
        }
        let Some(mut slot) = EVENTS.reserve::<ClockEvent>(0) else {
            count(COUNTER_RINGBUF_DROPS);
            p.syscall = SYSCALL_NONE;
            return 0;
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
        p.syscall = SYSCALL_NONE;
        0
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

    /// +1 on a counter other CPUs may be adding to (a BPF atomic add; the old value is not
    /// used, so LLVM emits the plain add every BPF instruction set has).
    #[inline(always)]
    fn atomic_increment(counter: &mut u64) {
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                counter, 1,
            )
        };
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

    /// Reads a tracepoint `__data_loc` field: a u32 whose low 16 bits are the offset of the
    /// data from the start of the record.
    #[inline(always)]
    fn data_loc(ctx: &TracePointContext, field_offset: usize) -> Option<*const u8> {
        let loc = unsafe { ctx.read_at::<u32>(field_offset) }.ok()?;
        Some(unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) })
    }

    /// Processes of tracked services (`[[service]]`): tgid → service index. The daemon adds
    /// the processes it matched; fork adds their children at once (a new worker is tracked
    /// before it can die); exit removes them. Thread ids of tracked processes pass through
    /// too (fork cannot tell a thread from a process here) and leave at the thread's exit.
    #[map]
    static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

    /// Exits of tracked processes, with their wait status.
    #[map]
    static SERVICE_EVENTS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

    #[tracepoint(category = "sched", name = "sched_process_fork")]
    pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
        let Some(cfg) = config() else { return 0 };
        if cfg.flags & CONFIG_PROCINFO_LAYOUT == 0 {
            return 0;
        }
        let Ok(child_pid) = (unsafe { ctx.read_at::<i32>(cfg.fork_child_pid_offset as usize) })
        else {
            return 0;
        };
        let child = child_pid as u32;
        let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
        if let Some(&service) = unsafe { TRACKED.get(&parent) } {
            if TRACKED.insert(&child, &service, BPF_ANY as u64).is_err() {
                count(COUNTER_TRACKED_FULL);
            }
        }
        let Some(zero) = ZERO_PROC.get_ptr(0) else {
            return 0;
        };
        if PROCS
            .insert(child, unsafe { &*zero }, BPF_ANY as u64)
            .is_err()
        {
            return 0;
        }
        let Some(info) = PROCS.get_ptr_mut(child) else {
            return 0;
        };
        let info = unsafe { &mut *info };
        // The tracepoint runs in the forking task: its tgid is what a user calls the parent
        // (the event's parent_pid is the forking thread's tid).
        info.ppid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let comm_src = if cfg.fork_parent_comm_dataloc != 0 {
            data_loc(&ctx, cfg.fork_parent_comm_offset as usize)
        } else {
            Some(unsafe { (ctx.as_ptr() as *const u8).add(cfg.fork_parent_comm_offset as usize) })
        };
        if let Some(src) = comm_src {
            unsafe {
                generated::bpf_probe_read_kernel_str(
                    info.parent_comm.as_mut_ptr() as *mut c_void,
                    COMM_LEN as u32,
                    src as *const c_void,
                )
            };
        }
        0
    }

    #[tracepoint(category = "sched", name = "sched_process_exec")]
    pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
        let Some(cfg) = config() else { return 0 };
        if cfg.flags & CONFIG_PROCINFO_LAYOUT == 0 {
            return 0;
        }
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if PROCS.get_ptr_mut(tgid).is_none() {
            // Forked before we attached: start an entry without a parent.
            let Some(zero) = ZERO_PROC.get_ptr(0) else {
                return 0;
            };
            if PROCS
                .insert(tgid, unsafe { &*zero }, BPF_ANY as u64)
                .is_err()
            {
                return 0;
            }
        }
        let Some(info) = PROCS.get_ptr_mut(tgid) else {
            return 0;
        };
        let info = unsafe { &mut *info };
        if let Some(src) = data_loc(&ctx, cfg.exec_filename_offset as usize) {
            let n = unsafe {
                generated::bpf_probe_read_kernel_str(
                    info.exe.as_mut_ptr() as *mut c_void,
                    EXE_LEN as u32,
                    src as *const c_void,
                )
            };
            if n > 0 {
                info.has_exe = 1;
            }
        }
        0
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
            e.flags |= FLAG_CLOCK_WAS_SET;
            e.clock_was_set_bases = bases;
            return 0;
        }
        let Some(zero) = ZERO_EVENT.get(0) else {
            return 0;
        };
        // Built in a reserved ring-buffer slot: too large for the stack.
        let Some(mut slot) = EVENTS.reserve::<ClockEvent>(0) else {
            count(COUNTER_RINGBUF_DROPS);
            return 0;
        };
        let e = unsafe { &mut *slot.as_mut_ptr() };
        copy_words(e, zero);
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
        0
    }

    /// The guard's policy: executables by (dev, inode) → CLASS_*. Written by the daemon.
    #[map]
    static GUARD_EXES: HashMap<ExeKey, u16> = HashMap::with_max_entries(1024, 0);

    /// `modes` of the adjtimex/clock_adjtime call each thread is in (by tid), between the
    /// fentry and fexit of do_adjtimex, for the `capable` hook to judge. Only calls that
    /// step or change the discipline are kept.
    #[map]
    static ADJTIMEX_MODES: LruHashMap<u32, u32> = LruHashMap::with_max_entries(4096, 0);

    const EPERM: i32 = 1;
    const CAP_SYS_TIME: i32 = 25;

    #[inline(always)]
    fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
    }

    /// The current task's executable: `current->mm->exe_file->f_inode`'s (dev, ino), through
    /// the offsets the daemon read from BTF. None for kernel threads (no mm).
    #[inline(always)]
    fn current_exe(cfg: &Config) -> Option<ExeKey> {
        if cfg.flags & CONFIG_EXE_LAYOUT == 0 {
            return None;
        }
        let off = &cfg.exe_offsets;
        let task = unsafe { generated::bpf_get_current_task() };
        let mm: u64 = read_kernel(task, off.task_mm)?;
        if mm == 0 {
            return None;
        }
        let file: u64 = read_kernel(mm, off.mm_exe_file)?;
        if file == 0 {
            return None;
        }
        let inode: u64 = read_kernel(file, off.file_f_inode)?;
        let ino: u64 = read_kernel(inode, off.inode_i_ino)?;
        let sb: u64 = read_kernel(inode, off.inode_i_sb)?;
        let dev: u32 = read_kernel(sb, off.sb_s_dev)?;
        Some(ExeKey { ino, dev, _pad: 0 })
    }

    /// The guard's decision for the current task about a `guarded` change (GUARDED_*):
    /// recorded in the thread's pending event, counted, and returned as the LSM verdict.
    #[inline(always)]
    fn judge(guarded: u16) -> i32 {
        let Some(cfg) = config() else { return 0 };
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let exe = current_exe(cfg);
        let class = if cfg.self_tgid != 0 && tgid == cfg.self_tgid {
            CLASS_SELF
        } else if let Some(key) = &exe {
            unsafe { GUARD_EXES.get(key) }
                .copied()
                .unwrap_or(CLASS_OTHER)
        } else {
            count(COUNTER_GUARD_NO_EXE);
            CLASS_OTHER
        };
        let allowed = match guarded {
            // The discipline is clockguard's alone when the option is set.
            GUARDED_DISCIPLINE => class == CLASS_SELF,
            _ => class == CLASS_SELF || class == CLASS_ALLOW,
        };
        let enforce = cfg.flags & CONFIG_GUARD_ENFORCE != 0;
        let action = if allowed {
            GUARD_ALLOWED
        } else if enforce {
            count(COUNTER_GUARD_DENIED);
            GUARD_DENIED
        } else {
            count(COUNTER_GUARD_WOULD_DENY);
            GUARD_WOULD_DENY
        };
        if let Some(e) = pending_call() {
            e.guard.action = action;
            e.guard.class = class;
            e.guard.guarded = guarded;
            if let Some(key) = exe {
                e.guard.exe_ino = key.ino;
                e.guard.exe_dev = key.dev;
                e.flags |= FLAG_HAS_EXE_ID;
            }
        }
        if action == GUARD_DENIED {
            -EPERM
        } else {
            0
        }
    }

    /// A pointer argument of an LSM hook that may be NULL, as a plain number. The verifiers
    /// of 6.12 and 7.2 take a BTF-typed pointer argument (`ctx.arg(n)`) to be non-NULL and
    /// delete an `== 0` branch on it as dead code, although settime's `ts` is NULL for a
    /// timezone-only settimeofday (seen: hwclock's `settimeofday(NULL, {0, 0})` refused on
    /// 6.12, passed on 6.1). Read through a helper, the value is a scalar the verifier
    /// cannot reason about. None if the read fails.
    #[inline(always)]
    fn nullable_arg(ctx: &LsmContext, n: u32) -> Option<u64> {
        read_kernel::<u64>(ctx.as_ptr() as u64, n * 8)
    }

    #[repr(C)]
    struct KernelTimezone {
        minuteswest: i32,
        dsttime: i32,
    }

    /// The BPF-LSM `settime` hook: settimeofday, clock_settime(CLOCK_REALTIME), stime.
    /// Arguments: (const struct timespec64 *ts, const struct timezone *tz, int ret).
    ///
    /// Policy for a timezone-only settimeofday (ts == NULL): the first such call after boot
    /// shifts the clock by `tz_minuteswest` (warp_clock, for an RTC kept in local time), so a
    /// non-zero `minuteswest` is judged as a step; with 0 it cannot move the clock and passes.
    #[lsm(hook = "settime")]
    pub fn settime(ctx: LsmContext) -> i32 {
        let previous: i32 = ctx.arg(2);
        if previous != 0 {
            return previous;
        }
        let (Some(ts), Some(tz)) = (nullable_arg(&ctx, 0), nullable_arg(&ctx, 1)) else {
            return judge(GUARDED_STEP);
        };
        if ts == 0 {
            if tz == 0 {
                return 0;
            }
            match read_kernel::<KernelTimezone>(tz, 0) {
                Some(z) if z.minuteswest == 0 => return 0,
                _ => {}
            }
        }
        judge(GUARDED_STEP)
    }

    /// Offsets in `struct __kernel_timex` (UAPI, fixed layout): `time.tv_sec` and
    /// `time.tv_usec` (ns with ADJ_NANO), after modes, pad, offset, freq, maxerror,
    /// esterror, status, pad, constant, precision and tolerance.
    const TIMEX_TIME_SEC: u32 = 72;
    const TIMEX_TIME_FRAC: u32 = 80;

    /// do_adjtimex(struct __kernel_timex *txc): every adjtimex/clock_adjtime(CLOCK_REALTIME)
    /// goes through it with a kernel copy of the caller's timex (no TOCTOU). Keeps `modes`
    /// for the `capable` hook when the call steps (ADJ_SETOFFSET) or, with the exclusive
    /// option, changes the discipline.
    #[fentry(function = "do_adjtimex")]
    pub fn do_adjtimex(ctx: FEntryContext) -> u32 {
        let txc: u64 = ctx.arg(0);
        let Some(modes) = read_kernel::<u32>(txc, 0) else {
            return 0;
        };
        let exclusive = config()
            .map(|c| c.flags & CONFIG_GUARD_EXCLUSIVE_DISCIPLINE != 0)
            .unwrap_or(false);
        let adjtime_read = modes & ADJ_ADJTIME != 0 && modes & ADJ_OFFSET_READONLY != 0;
        let mut guarded = modes;
        if modes & ADJ_SETOFFSET != 0 {
            // A zero offset cannot move the clock: chronyd sends one at start to learn
            // whether the kernel has ADJ_SETOFFSET (refused, it decides it has not). Let it
            // pass, as a timezone-only settimeofday with minuteswest 0 does.
            let sec = read_kernel::<i64>(txc, TIMEX_TIME_SEC).unwrap_or(1);
            let frac = read_kernel::<i64>(txc, TIMEX_TIME_FRAC).unwrap_or(1);
            if sec == 0 && frac == 0 {
                guarded &= !ADJ_SETOFFSET;
            }
        }
        if guarded & ADJ_SETOFFSET != 0
            || (exclusive && guarded & DISCIPLINE_MODES != 0 && !adjtime_read)
        {
            let tid = bpf_get_current_pid_tgid() as u32;
            let _ = ADJTIMEX_MODES.insert(tid, guarded, BPF_ANY as u64);
        }
        0
    }

    /// The call is over: forget its modes, so a later `capable(CAP_SYS_TIME)` of the same
    /// thread (settimeofday's own check, RTC ioctls) is not judged as an adjtimex.
    #[fexit(function = "do_adjtimex")]
    pub fn do_adjtimex_exit(_ctx: FExitContext) -> u32 {
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = ADJTIMEX_MODES.remove(tid);
        0
    }

    /// The BPF-LSM `capable` hook: (const struct cred *, struct user_namespace *, int cap,
    /// unsigned int opts, int ret). ADJ_SETOFFSET never reaches `settime`; the kernel only
    /// asks capable(CAP_SYS_TIME) in timekeeping_validate_timex, so the step is refused here,
    /// and only while the thread is inside a do_adjtimex that steps.
    #[lsm(hook = "capable")]
    pub fn capable(ctx: LsmContext) -> i32 {
        let previous: i32 = ctx.arg(4);
        if previous != 0 {
            return previous;
        }
        let cap: i32 = ctx.arg(2);
        if cap != CAP_SYS_TIME {
            return 0;
        }
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(modes) = (unsafe { ADJTIMEX_MODES.get(&tid) }).copied() else {
            return 0;
        };
        if modes & ADJ_SETOFFSET != 0 {
            judge(GUARDED_STEP)
        } else {
            judge(GUARDED_DISCIPLINE)
        }
    }

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

    /// Every task exit costs two lookups (PENDING, TRACKED); a tracked process's exit becomes a
    /// ServiceExitEvent with its wait status (`exit_code` is set by do_exit before this
    /// tracepoint; a group exit gives every thread the group's code).
    #[tracepoint(category = "sched", name = "sched_process_exit")]
    pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tid = pid_tgid as u32;
        let tgid = (pid_tgid >> 32) as u32;
        // The thread's reused pending entry, if it ever made a clock syscall. Looked up
        // first: a delete takes the bucket lock even for a key that is not there.
        if unsafe { PENDING.get(&tid) }.is_some() {
            let _ = PENDING.remove(&tid);
        }
        let Some(&service) = (unsafe { TRACKED.get(&tid) }) else {
            return 0;
        };
        let _ = TRACKED.remove(&tid);
        if tid != tgid {
            // A thread of a tracked process: the process lives on.
            return 0;
        }
        // Built in the ring buffer itself: 176 bytes are too many for the BPF stack once
        // zero-filled (bpf-linker rejects large stack memsets).
        let Some(mut slot) = SERVICE_EVENTS.reserve::<ServiceExitEvent>(0) else {
            count(COUNTER_SERVICE_EXIT_DROPS);
            return 0;
        };
        let event = unsafe { &mut *slot.as_mut_ptr() };
        event.mono_ns = unsafe { generated::bpf_ktime_get_ns() };
        event.tgid = tgid;
        event.service = service;
        // Volatile: LLVM would merge the zero stores into a memset, which BPF cannot call.
        unsafe {
            core::ptr::write_volatile(&mut event.exit_code, 0);
            core::ptr::write_volatile(&mut event.flags, 0);
            core::ptr::write_volatile(&mut event.ppid, 0);
            core::ptr::write_volatile(&mut event._pad, 0);
        }
        unsafe {
            generated::bpf_get_current_comm(event.comm.as_mut_ptr() as *mut c_void, COMM_LEN as u32)
        };
        if let Some(info) = unsafe { PROCS.get(tgid) } {
            event.ppid = info.ppid;
            event.flags |= SERVICE_EXIT_HAS_PROCINFO;
            if info.has_exe != 0 {
                copy_words(&mut event.exe, &info.exe);
                event.flags |= SERVICE_EXIT_HAS_EXE;
            }
        }
        if let Some(cfg) = config() {
            if cfg.flags & CONFIG_EXIT_CODE_LAYOUT != 0 {
                let task = unsafe { generated::bpf_get_current_task() };
                if let Some(code) = read_kernel::<i32>(task, cfg.task_exit_code_offset as u32) {
                    event.exit_code = code;
                    event.flags |= SERVICE_EXIT_HAS_CODE;
                }
            }
        }
        slot.submit(0);
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
