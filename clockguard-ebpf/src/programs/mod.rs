//! The programs, by concern: `audit` (every clock syscall, paired enter/exit per thread,
//! and the kernel's own clock changes), `guard` (the LSM hooks that refuse steps),
//! `timers` (hrtimer expiry lateness) and `services` (fork/exec attribution and tracked
//! processes' exits). This module holds what they share: the clock events' ring buffer,
//! the per-thread pending calls, the process table, the counters and the configuration.

mod audit;
mod guard;
mod services;
mod timers;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_FAST_STACK_CMP, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_user, generated},
    macros::{btf_tracepoint, fentry, fexit, lsm, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, LsmContext, TracePointContext},
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

/// A kernel value at `base + offset` (bpf_probe_read_kernel; None when it faults).
#[inline(always)]
fn read_kernel<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// The current thread's pending call, if it is inside a traced clock syscall.
#[inline(always)]
fn pending_call() -> Option<&'static mut PendingCall> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let pending = unsafe { &mut *PENDING.get_ptr_mut(tid)? };
    (pending.syscall != SYSCALL_NONE).then_some(pending)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
