//! The ABI shared by clockguard's eBPF programs and its daemon: event structs, map value
//! types and constants. Compiled for the kernel (bpfel) and for the host; everything here is
//! `#[repr(C)]` plain data so both sides agree byte for byte. It stays one file (a little
//! over 700 lines, most of them documented constants): the list both sides compile against
//! is easier to keep in step when it is read in one place.
#![no_std]

/// Length of a task's `comm` in the kernel (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd file name kept in the kernel per process (longer names are truncated).
pub const EXE_LEN: usize = 128;

/// `ClockEvent::kind`: a clock syscall, paired enter/exit in the kernel.
pub const EVENT_SYSCALL: u32 = 1;
/// `ClockEvent::kind`: `clock_was_set()` ran outside any traced clock syscall (leap second,
/// RTC sleep-time injection, a path we do not trace): an in-kernel realtime discontinuity.
pub const EVENT_CLOCK_WAS_SET: u32 = 2;

/// `ClockEvent::syscall`: which clock syscall (our own numbering, stable across arches).
pub const SYSCALL_NONE: u32 = 0;
pub const SYSCALL_CLOCK_SETTIME: u32 = 1;
pub const SYSCALL_SETTIMEOFDAY: u32 = 2;
pub const SYSCALL_ADJTIMEX: u32 = 3;
pub const SYSCALL_CLOCK_ADJTIME: u32 = 4;

/// `ClockEvent::flags` bits.
/// `req_sec`/`req_nsec` hold the requested time (timespec, or timeval converted to ns).
pub const FLAG_HAS_TIME: u32 = 1 << 0;
/// `tz_minuteswest`/`tz_dsttime` hold the requested timezone (settimeofday).
pub const FLAG_HAS_TZ: u32 = 1 << 1;
/// `timex` holds the caller's `struct __kernel_timex` (adjtimex, clock_adjtime).
pub const FLAG_HAS_TIMEX: u32 = 1 << 2;
/// Reading the caller's argument from user memory failed (bad pointer: the kernel will
/// answer EFAULT); the requested value is unknown.
pub const FLAG_ARG_FAULT: u32 = 1 << 3;
/// `clock_was_set()` ran inside this syscall: the kernel really changed CLOCK_REALTIME.
pub const FLAG_CLOCK_WAS_SET: u32 = 1 << 4;
/// `ppid`, `parent_comm`, `exe` come from the kernel's fork/exec tracepoints.
pub const FLAG_HAS_PROCINFO: u32 = 1 << 5;
/// `offset_before_ns` is known (for EVENT_CLOCK_WAS_SET it is the last offset seen).
pub const FLAG_HAS_OFFSET_BEFORE: u32 = 1 << 6;
/// `stack_id` is a valid id in the STACKS map (kernel stack of an in-kernel event).
pub const FLAG_HAS_STACK: u32 = 1 << 7;
/// The enter side was not seen (the kernel skipped the enter hook's run, or the hook
/// attached mid-syscall): only the exit is known, the caller and the result. Sent for a
/// clock_settime that returned 0 (it set a clock), unless clock_was_set() already sent the
/// change as its own event: what it asked and its jump are unknown.
pub const FLAG_NO_ENTER: u32 = 1 << 8;
/// `guard.exe_dev`/`guard.exe_ino` identify the caller's executable (read by a guard hook).
pub const FLAG_HAS_EXE_ID: u32 = 1 << 9;
/// The exit side was not seen: the kernel skipped the exit hook's run (a hook miss: on a
/// preemptible kernel it skips a program's run while another task on the same CPU is
/// preempted inside it). The call is sent when the thread's next clock call begins or the
/// thread exits, `ret` unknown (0); `exit_mono_ns`/`offset_after_ns` are from when
/// clock_was_set() ran inside it (the jump measured exactly), else the enter's own (a
/// refused call: nothing seen changed).
pub const FLAG_NO_EXIT: u32 = 1 << 10;
/// In a thread's PENDING entry only: clock_was_set() sent its own event for the thread's
/// current call (whose enter run was skipped), so the call's exit sends nothing more.
pub const FLAG_KERNEL_SENT: u32 = 1 << 11;

/// Indices into the per-CPU `COUNTERS` map (summed over CPUs in userspace).
/// Events that could not be written to the ring buffer (full): lost, but counted.
pub const COUNTER_RINGBUF_DROPS: u32 = 0;
/// Read-only adjtimex/clock_adjtime calls (modes == 0) that were counted, not emitted.
pub const COUNTER_READONLY_ADJTIMEX: u32 = 1;
/// Events written to the ring buffer.
pub const COUNTER_EVENTS: u32 = 2;
/// Enter records that could not be stored in the pending map (it is full).
pub const COUNTER_PENDING_FULL: u32 = 3;
/// Clock syscall enters seen (all, including read-only ones).
pub const COUNTER_SYSCALLS: u32 = 4;
/// Clock changes the guard refused (the caller got EPERM).
pub const COUNTER_GUARD_DENIED: u32 = 5;
/// Clock changes guard mode would have refused, seen while not enforcing (observe mode).
pub const COUNTER_GUARD_WOULD_DENY: u32 = 6;
/// Guard decisions for which the caller's executable could not be read (kernel thread, or
/// a read through the exe offsets failed): treated as "other", i.e. not allowed.
pub const COUNTER_GUARD_NO_EXE: u32 = 7;
/// Late hrtimer expiries (at or over the threshold) sent to TIMER_EVENTS.
pub const COUNTER_TIMER_LATE_EVENTS: u32 = 8;
/// Late hrtimer expiries that could not be sent (TIMER_EVENTS full): counted in the
/// histogram all the same, but without their own event.
pub const COUNTER_TIMER_LATE_DROPS: u32 = 9;
/// hrtimer expiries whose fields could not be read (should stay 0).
pub const COUNTER_TIMER_READ_FAULTS: u32 = 10;
/// Exits of tracked processes that did not fit in SERVICE_EVENTS (the daemon was behind).
pub const COUNTER_SERVICE_EXIT_DROPS: u32 = 11;
/// Children of tracked processes that could not be added to TRACKED (map full).
pub const COUNTER_TRACKED_FULL: u32 = 12;
/// Clock syscalls counted in a summary (the REPEATS map) instead of sent in full.
pub const COUNTER_SUMMARISED: u32 = 13;
/// Repeats that found REPEATS full: sent in full instead (never lost for it).
pub const COUNTER_REPEATS_FULL: u32 = 14;
pub const COUNTER_COUNT: u32 = 15;

/// Buckets of the per-CPU hrtimer lateness histogram (`LATENESS`): bucket 0 counts
/// expiries exactly on time; bucket i (1..=63) those late by [2^(i-1), 2^i) ns.
pub const LATENESS_BUCKETS: u32 = 64;

/// The value of the one-entry per-CPU `LATENESS` map: one lookup per expiry updates both
/// the bucket and the sum (Prometheus histograms carry the sum).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatenessHistogram {
    pub buckets: [u64; LATENESS_BUCKETS as usize],
    /// Sum of all lateness, ns (wraps after 584 years of accumulated lateness).
    pub sum_ns: u64,
}

/// The histogram bucket of a lateness in ns (see LATENESS_BUCKETS). Shared by the kernel
/// program and the daemon, so both agree on the bucket edges.
#[inline(always)]
pub fn lateness_bucket(lateness_ns: u64) -> u32 {
    // 64 − leading zeros = the bit length of the value: 0 → 0, 1 → 1, 2..3 → 2, ...
    // Capped so that the index always lies inside the map.
    let bits = 64 - lateness_ns.leading_zeros();
    if bits >= LATENESS_BUCKETS {
        LATENESS_BUCKETS - 1
    } else {
        bits
    }
}

/// Index 0 of the `TIMER_CONFIG` array: where the hrtimer hook finds its fields (byte
/// offsets from the kernel's BTF; Rust eBPF has no CO-RE) and its threshold. The hook does
/// nothing until the daemon sets TIMER_CONFIG_VALID.
///
/// The hook reads `struct hrtimer`'s `_softexpires` (ktime_t), `function` and `base`
/// (pointers) in one read of TIMER_BLOCK_WORDS 8-byte words starting at `hrtimer_block`;
/// the `*_word` fields say which word holds which. Their order differs between kernels
/// (6.1: _softexpires, function, base; 7.2: base, 8 bytes apart, then _softexpires, function).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerConfig {
    pub flags: u32,
    /// Byte offset in `struct hrtimer` of the block read in one go.
    pub hrtimer_block: u16,
    /// `struct hrtimer_clock_base`: `clockid` (clockid_t).
    pub clock_base_clockid: u16,
    /// Word indices in the block, each < TIMER_BLOCK_WORDS.
    pub softexpires_word: u8,
    pub function_word: u8,
    pub base_word: u8,
    pub _pad: [u8; 5],
    /// Expiries late by this much or more (ns) are also sent as a TimerLateEvent.
    pub late_threshold_ns: u64,
}

/// The hrtimer hook's one read: 4 words (32 bytes), a power of two so that a masked index
/// is in bounds for the verifier.
pub const TIMER_BLOCK_WORDS: usize = 4;

pub const TIMER_CONFIG_VALID: u32 = 1 << 0;
/// The tracepoint passes `now` as a `ktime_t` value (7.2), not a `ktime_t *` (6.1, 6.12).
pub const TIMER_CONFIG_NOW_BY_VALUE: u32 = 1 << 1;

/// An hrtimer that expired late by `TimerConfig::late_threshold_ns` or more.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerLateEvent {
    /// CLOCK_MONOTONIC ns when the expiry ran (the hrtimer base's `now`).
    pub mono_ns: u64,
    /// now − the timer's soft expiry, ns.
    pub lateness_ns: u64,
    /// Kernel address of the timer's callback (symbolised by the daemon).
    pub function: u64,
    pub cpu: u32,
    pub _pad: u32,
}

impl TimerLateEvent {
    #[cfg(not(target_arch = "bpf"))]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked; plain integers, any bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Guard classes: the value of the GUARD_EXES map for an executable, by (dev, inode).
/// Not listed: refused in guard mode.
pub const CLASS_OTHER: u16 = 0;
/// Listed under `[guard] allow`: may step the clock.
pub const CLASS_ALLOW: u16 = 1;
/// Listed under `[guard] slew_instead`: a time agent whose refused step clockguard slews in.
pub const CLASS_SLEW_INSTEAD: u16 = 2;
/// clockguard itself (its tgid is in `Config::self_tgid`): always allowed.
pub const CLASS_SELF: u16 = 3;

/// `GuardDecision::action`: what the guard decided for this call.
/// No guard hook ran (not a step, or the hooks are not attached).
pub const GUARD_NONE: u16 = 0;
pub const GUARD_ALLOWED: u16 = 1;
/// Refused: the caller got EPERM.
pub const GUARD_DENIED: u16 = 2;
/// Not enforcing (observe mode): guard mode would have refused it.
pub const GUARD_WOULD_DENY: u16 = 3;

/// What the guard judged: a step of CLOCK_REALTIME (settime hook, ADJ_SETOFFSET), or a
/// change of the kernel's discipline (frequency, tick, PLL offset) that only clockguard may
/// make when `CONFIG_GUARD_EXCLUSIVE_DISCIPLINE` is set.
pub const GUARDED_STEP: u16 = 1;
pub const GUARDED_DISCIPLINE: u16 = 2;

/// `struct __kernel_timex` mode bits (include/uapi/linux/timex.h).
pub const ADJ_OFFSET: u32 = 0x0001;
pub const ADJ_FREQUENCY: u32 = 0x0002;
pub const ADJ_MAXERROR: u32 = 0x0004;
pub const ADJ_ESTERROR: u32 = 0x0008;
pub const ADJ_STATUS: u32 = 0x0010;
pub const ADJ_TIMECONST: u32 = 0x0020;
pub const ADJ_TAI: u32 = 0x0080;
pub const ADJ_SETOFFSET: u32 = 0x0100;
pub const ADJ_MICRO: u32 = 0x1000;
pub const ADJ_NANO: u32 = 0x2000;
pub const ADJ_TICK: u32 = 0x4000;
/// ADJ_OFFSET_SINGLESHOT is 0x8001 (adjtime(3)); with ADJ_OFFSET_READONLY it is
/// ADJ_OFFSET_SS_READ, a read that changes nothing.
pub const ADJ_ADJTIME: u32 = 0x8000;
pub const ADJ_OFFSET_READONLY: u32 = 0x2000;
/// The modes that change the kernel's discipline: frequency, tick, PLL offset, adjtime().
pub const DISCIPLINE_MODES: u32 = ADJ_OFFSET | ADJ_FREQUENCY | ADJ_TICK | ADJ_ADJTIME;

/// Key of the GUARD_EXES map: an executable by the kernel's identity of its inode. `dev` is
/// the kernel's internal dev_t of the inode's super block (major << 20 | minor), not the
/// userspace encoding that stat() returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Byte offsets, read from the running kernel's BTF by the daemon, of the chain
/// `current->mm->exe_file->f_inode->{i_ino, i_sb->s_dev}` (Rust eBPF has no CO-RE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
}

/// Index 0 of the `CONFIG` array: a `Config` set by the daemon before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// CONFIG_* bits.
    pub flags: u32,
    /// sched_process_fork layout, parsed from its tracefs `format` file by the daemon because
    /// it changed across kernels (6.1 has `char parent_comm[16]`, 6.18 a `__data_loc`).
    pub fork_parent_comm_offset: u16,
    /// 1 when parent_comm is a `__data_loc` (u32: offset in the low 16 bits).
    pub fork_parent_comm_dataloc: u16,
    pub fork_child_pid_offset: u16,
    /// sched_process_exec: offset of the `__data_loc char[] filename`.
    pub exec_filename_offset: u16,
    /// `struct task_struct`: `exit_code` (int), from BTF; valid with CONFIG_EXIT_CODE_LAYOUT.
    pub task_exit_code_offset: u16,
    pub _pad: u16,
    /// clockguard's own tgid: always allowed (CLASS_SELF).
    pub self_tgid: u32,
    /// Valid when CONFIG_EXE_LAYOUT is set.
    pub exe_offsets: ExeOffsets,
    /// Calls per REPEATS key and epoch sent in full before the rest are only counted;
    /// 0: every call in full (no summarising).
    pub repeats_in_full: u32,
    /// clockguard's own executable, valid with CONFIG_SELF_EXE: a process is clockguard
    /// only with its tgid *and* this executable, so after a crash a process that reuses
    /// the dead daemon's pid gets none of its rights.
    pub self_exe: ExeKey,
}

/// Emit read-only adjtimex calls (modes == 0) instead of only counting them.
pub const CONFIG_EMIT_READONLY: u32 = 1 << 0;
/// The fork/exec layouts in `Config` are valid (parsed from tracefs).
pub const CONFIG_PROCINFO_LAYOUT: u32 = 1 << 1;
/// Guard mode: refuse what the policy does not allow (EPERM). Without it the guard hooks
/// only record what they would have done.
pub const CONFIG_GUARD_ENFORCE: u32 = 1 << 2;
/// Only clockguard may change the kernel's frequency, tick or PLL offset.
pub const CONFIG_GUARD_EXCLUSIVE_DISCIPLINE: u32 = 1 << 3;
/// `Config::exe_offsets` are valid: the guard can identify the caller's executable.
pub const CONFIG_EXE_LAYOUT: u32 = 1 << 4;
/// `Config::task_exit_code_offset` is valid: service exits carry their wait status.
pub const CONFIG_EXIT_CODE_LAYOUT: u32 = 1 << 5;
/// `Config::self_exe` is valid (and CONFIG_EXE_LAYOUT set): CLASS_SELF needs it too.
pub const CONFIG_SELF_EXE: u32 = 1 << 6;

/// A process of a tracked service (TRACKED map: tgid → service index) exited; sent by the
/// sched_process_exit hook, filtered in the kernel: untracked exits cost one map lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceExitEvent {
    /// CLOCK_MONOTONIC ns at the exit.
    pub mono_ns: u64,
    pub tgid: u32,
    /// Index of the service in the configuration.
    pub service: u32,
    /// The task's wait status (SERVICE_EXIT_HAS_CODE): the killing signal in the low 7
    /// bits, 0x80 for a core dump, the exit status in bits 8..16.
    pub exit_code: i32,
    pub flags: u32,
    /// From what fork/exec recorded (SERVICE_EXIT_HAS_PROCINFO): the forking process and
    /// the executable (as passed to execve). A worker forked and exec'd since the daemon's
    /// last /proc scan is still named.
    pub ppid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    pub exe: [u8; EXE_LEN],
}

impl Default for ServiceExitEvent {
    fn default() -> Self {
        ServiceExitEvent {
            mono_ns: 0,
            tgid: 0,
            service: 0,
            exit_code: 0,
            flags: 0,
            ppid: 0,
            _pad: 0,
            comm: [0; COMM_LEN],
            exe: [0; EXE_LEN],
        }
    }
}

pub const SERVICE_EXIT_HAS_CODE: u32 = 1 << 0;
pub const SERVICE_EXIT_HAS_PROCINFO: u32 = 1 << 1;
/// `exe` is set (the process exec'd while the hooks were attached).
pub const SERVICE_EXIT_HAS_EXE: u32 = 1 << 2;

impl ServiceExitEvent {
    #[cfg(not(target_arch = "bpf"))]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: length checked; plain integers, any bit pattern is valid.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Whether a finished clock syscall may be counted in a summary instead of sent in full:
/// only calls that changed nothing the trail must name one by one. Never one a guard hook
/// judged (allowed, refused or would-refuse), one inside which clock_was_set() ran (the
/// clock really moved), a successful clock_settime or settimeofday, any ADJ_SETOFFSET or
/// ADJ_TAI, any call with a timezone (settimeofday sets it before it checks the time), and
/// any call whose argument we could not read (the kernel may have: adjtimex applies the
/// change, then fails with EFAULT writing the result back). What remains: failed calls
/// that were refused before they changed anything, and successful adjtimex/clock_adjtime
/// calls that are not steps (frequency, status, reads). `finish` also sends in full any
/// call across which CLOCK_TAI − MONOTONIC moved, whichever hooks are attached.
#[inline(always)]
pub fn may_summarise(ret: i64, flags: u32, guard_action: u16, modes: u32) -> bool {
    !always_in_full(flags, guard_action, modes) && (ret < 0 || flags & FLAG_HAS_TIMEX != 0)
}

/// The calls `may_summarise` sends in full whatever their result: judged by a guard hook,
/// clock_was_set() ran inside, a timezone, an argument we could not read, ADJ_SETOFFSET
/// or ADJ_TAI.
#[inline(always)]
fn always_in_full(flags: u32, guard_action: u16, modes: u32) -> bool {
    guard_action != GUARD_NONE
        || flags & (FLAG_CLOCK_WAS_SET | FLAG_ARG_FAULT | FLAG_HAS_TZ) != 0
        || flags & FLAG_HAS_TIMEX != 0 && modes & (ADJ_SETOFFSET | ADJ_TAI) != 0
}

/// Whether a call whose exit hook never ran (FLAG_NO_EXIT) is sent: when something inside
/// it happened that the trail names one by one, clock_was_set() ran (the clock moved) or a
/// guard hook judged it. Its result is unknown. The others failed or changed nothing seen;
/// they stay in the kernel's count of skipped hook runs, as before, so that a storm's
/// skipped exits (up to a third of 100 processes' calls on a preemptible 7.2 under TCG) do
/// not flood the ring buffer. Nothing else: a change of the offset since the call began
/// may be another thread's step, and an entry that a syscall tracepoint began is begun
/// again by fentry when both are attached (a half-attached pair), before anything ran.
#[inline(always)]
pub fn unfinished_is_sent(flags: u32, guard_action: u16) -> bool {
    flags & FLAG_CLOCK_WAS_SET != 0 || guard_action != GUARD_NONE
}

/// CLOCK_TAI − MONOTONIC moving by more than this (ns) across a call means the call (or
/// something during it) stepped the clock: never summarised. Clock-read jitter is a few
/// ns to a few µs (see the daemon's measurement resolution).
pub const SUMMARY_MAX_OFFSET_CHANGE_NS: i64 = 1_000;

/// `RepeatKey::request` of a call, from its pending call's flags and timex modes.
#[inline(always)]
pub fn repeat_request(syscall: u32, flags: u32, modes: u32) -> u32 {
    if flags & FLAG_HAS_TIMEX != 0 {
        modes
    } else if syscall == SYSCALL_SETTIMEOFDAY {
        flags & (FLAG_HAS_TIME | FLAG_HAS_TZ)
    } else {
        0
    }
}

/// Key of the REPEATS map: what makes two calls repeats of each other, in one epoch (the
/// daemon's summary interval; it bumps `REPEAT_EPOCH` every interval and collects the
/// epochs before the last one, so no program is still counting into what it reads).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    pub tgid: u32,
    /// SYSCALL_*.
    pub syscall: u32,
    pub clock_id: i32,
    /// What the call asked to change: the timex modes (adjtimex, clock_adjtime), or
    /// settimeofday's FLAG_HAS_TIME | FLAG_HAS_TZ; 0 for clock_settime. See `repeat_request`.
    pub request: u32,
    /// The syscall's return value: -errno, or adjtimex's clock state.
    pub ret: i32,
    pub epoch: u32,
}

/// Value of the REPEATS map: how many calls of the key the epoch saw, how many of them were
/// only counted, and who made them (written by the program that created the entry).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RepeatCount {
    /// Every call of the key in this epoch: sent in full or counted. Increments are atomic.
    pub seen: u64,
    /// The calls only counted here (not sent in full).
    pub summarised: u64,
    /// CLOCK_MONOTONIC ns at the entry of the first and the exit of the last counted call.
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
    /// CLOCK_TAI − CLOCK_MONOTONIC (ns) at the first and the last counted call, to date
    /// them. First and last are plain writes: for a caller with threads on several CPUs
    /// they are approximate (a call of the interval, not necessarily the very first/last).
    pub first_offset_ns: i64,
    pub last_offset_ns: i64,
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    /// FLAG_HAS_PROCINFO when `ppid`, `parent_comm` and `exe` are known.
    pub flags: u32,
    pub ppid: u32,
    pub comm: [u8; COMM_LEN],
    pub parent_comm: [u8; COMM_LEN],
    pub exe: [u8; EXE_LEN],
}

impl RepeatCount {
    /// An all-zero count (host side; the kernel side zeroes from a map).
    #[cfg(not(target_arch = "bpf"))]
    pub fn zeroed() -> Self {
        // SAFETY: every field is an integer or an integer array: zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// The fields of `struct __kernel_timex` (include/uapi/linux/timex.h) that select or carry a
/// change. Units are the kernel's: `offset` µs (ns with ADJ_NANO), `freq` scaled ppm
/// (ppm << 16), `time` sec + µs (ns with ADJ_NANO), `tick` µs per tick.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimexArgs {
    pub modes: u32,
    pub status: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub constant: i64,
    pub time_sec: i64,
    pub time_usec: i64,
    pub tick: i64,
}

/// Byte offsets in the 64-bit `struct __kernel_timex` (it is the same on every 64-bit arch).
pub mod kernel_timex {
    pub const MODES: usize = 0;
    pub const OFFSET: usize = 8;
    pub const FREQ: usize = 16;
    pub const MAXERROR: usize = 24;
    pub const ESTERROR: usize = 32;
    pub const STATUS: usize = 40;
    pub const CONSTANT: usize = 48;
    pub const TIME_SEC: usize = 72;
    pub const TIME_USEC: usize = 80;
    pub const TICK: usize = 88;
    /// Bytes of the struct read from user memory (up to and including `tick`).
    pub const READ_LEN: usize = 96;
}

/// One clock change (or attempt), as the kernel saw it. Written into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ClockEvent {
    /// EVENT_*.
    pub kind: u32,
    /// SYSCALL_*.
    pub syscall: u32,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The clockid argument (clock_settime, clock_adjtime); CLOCK_REALTIME (0) for
    /// settimeofday/adjtimex.
    pub clock_id: i32,
    /// FLAG_* bits.
    pub flags: u32,
    /// The syscall's return value (0 or -errno); 0 for EVENT_CLOCK_WAS_SET.
    pub ret: i64,
    /// CLOCK_MONOTONIC ns at the syscall's entry and exit (bpf_ktime_get_ns).
    pub enter_mono_ns: u64,
    pub exit_mono_ns: u64,
    /// CLOCK_TAI − CLOCK_MONOTONIC in ns at entry and exit. Slewing moves both clocks alike,
    /// so this only changes when CLOCK_REALTIME is stepped (or the TAI offset is set): the
    /// difference is the measured jump. Each is read right after `*_mono_ns`, so it is late
    /// by the time of one clock read (tens of ns), alike on both sides.
    pub offset_before_ns: i64,
    pub offset_after_ns: i64,
    /// Requested time (FLAG_HAS_TIME): seconds and nanoseconds (timeval µs converted to ns).
    pub req_sec: i64,
    pub req_nsec: i64,
    /// Requested timezone (FLAG_HAS_TZ).
    pub tz_minuteswest: i32,
    pub tz_dsttime: i32,
    pub timex: TimexArgs,
    /// cgroup v2 id of the caller (the cgroup directory's inode number).
    pub cgroup_id: u64,
    /// STACKS id of the kernel stack (FLAG_HAS_STACK).
    pub stack_id: i64,
    /// The `bases` argument of clock_was_set(): a bit per hrtimer base whose clock moved
    /// (CLOCK_SET_WALL = 0xaa: REALTIME and TAI, hard and soft; CLOCK_SET_BOOT = 0x44).
    pub clock_was_set_bases: u32,
    /// Parent tgid at fork time (FLAG_HAS_PROCINFO).
    pub ppid: u32,
    pub comm: [u8; COMM_LEN],
    pub parent_comm: [u8; COMM_LEN],
    /// The file name given to execve (FLAG_HAS_PROCINFO), NUL-terminated.
    pub exe: [u8; EXE_LEN],
    pub guard: GuardDecision,
}

/// What a guard hook decided about the call, written while the call runs: in the pending
/// call, then copied into the event. 24 bytes, 8-aligned, so it copies as words.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GuardDecision {
    /// The caller's executable as the guard identified it (FLAG_HAS_EXE_ID).
    pub exe_ino: u64,
    pub exe_dev: u32,
    /// GUARD_* decision, CLASS_* of the caller, GUARDED_* of what was judged.
    pub action: u16,
    pub class: u16,
    pub guarded: u16,
    pub _pad: [u16; 3],
}

/// The enter half of a clock syscall, kept per thread (the `PENDING` map) until its exit
/// builds the `ClockEvent` in the ring buffer. Less than half the event's size, since the
/// insert copies it; the caller's identity is read once, at exit. The guard hooks and
/// `clock_was_set` write their fields here while the call runs. Fields as in `ClockEvent`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingCall {
    pub syscall: u32,
    pub clock_id: i32,
    pub flags: u32,
    pub clock_was_set_bases: u32,
    pub enter_mono_ns: u64,
    pub offset_before_ns: i64,
    pub req_sec: i64,
    pub req_nsec: i64,
    pub tz_minuteswest: i32,
    pub tz_dsttime: i32,
    pub timex: TimexArgs,
    pub guard: GuardDecision,
    /// When clock_was_set() ran inside the call (FLAG_CLOCK_WAS_SET): CLOCK_MONOTONIC (ns)
    /// and CLOCK_TAI − MONOTONIC (ns) right after the kernel's change. A call whose exit
    /// run was skipped is measured up to here (FLAG_NO_EXIT).
    pub clock_was_set_mono_ns: u64,
    pub clock_was_set_offset_ns: i64,
}

/// What the kernel remembers of a process from its fork and exec (the `PROCS` LRU map, keyed
/// by tgid), so that a short-lived caller (`date -s`) can be attributed after it exits.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcInfo {
    pub ppid: u32,
    /// 1 once `exe` was set by sched_process_exec.
    pub has_exe: u32,
    pub parent_comm: [u8; COMM_LEN],
    pub exe: [u8; EXE_LEN],
}

impl ClockEvent {
    /// Decodes an event from ring-buffer bytes; `None` when the record is too short (a
    /// different ABI), so a mismatch is reported instead of reading garbage.
    #[cfg(not(target_arch = "bpf"))]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, ClockEvent is plain old data (every bit
        // pattern is valid) and read_unaligned copes with any alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The bytes of the event, as the kernel writes them (used by tests to build events).
    #[cfg(not(target_arch = "bpf"))]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) plain data with no padding holes that matter to a reader.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// An all-zero event (host side; the kernel side zeroes from a map).
    #[cfg(not(target_arch = "bpf"))]
    pub fn zeroed() -> Self {
        // SAFETY: every field is an integer or an integer array: zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// The part of a fixed-size C string before its first NUL (the whole array when none).
pub fn c_str_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips_through_bytes() {
        let mut event = ClockEvent::zeroed();
        event.kind = EVENT_SYSCALL;
        event.tgid = 4242;
        event.offset_after_ns = -11_000_000_000;
        event.comm[..4].copy_from_slice(b"date");
        let decoded = ClockEvent::from_bytes(event.as_bytes()).unwrap();
        assert_eq!(decoded.tgid, 4242);
        assert_eq!(decoded.offset_after_ns, -11_000_000_000);
        assert_eq!(c_str_bytes(&decoded.comm), b"date");
    }

    #[test]
    fn short_record_is_refused() {
        let event = ClockEvent::zeroed();
        assert!(ClockEvent::from_bytes(&event.as_bytes()[..10]).is_none());
    }

    #[test]
    fn layout_is_stable() {
        // The ABI is shared with the kernel object: a size change must be deliberate.
        assert_eq!(core::mem::size_of::<TimexArgs>(), 72);
        assert_eq!(core::mem::size_of::<ClockEvent>(), 376);
        assert_eq!(core::mem::size_of::<PendingCall>(), 168);
        assert_eq!(core::mem::size_of::<GuardDecision>(), 24);
        assert_eq!(core::mem::size_of::<Config>(), 64);
        assert_eq!(core::mem::size_of::<RepeatKey>(), 24);
        assert_eq!(core::mem::size_of::<RepeatCount>(), 232);
        assert_eq!(core::mem::size_of::<ExeKey>(), 16);
        assert_eq!(core::mem::size_of::<ProcInfo>(), 152);
        assert_eq!(core::mem::size_of::<TimerConfig>(), 24);
        assert_eq!(core::mem::size_of::<TimerLateEvent>(), 32);
        assert_eq!(core::mem::size_of::<LatenessHistogram>(), 65 * 8);
    }

    #[test]
    fn a_call_whose_exit_was_not_seen_is_sent_when_the_clock_moved_or_a_guard_judged_it() {
        let settime = FLAG_HAS_OFFSET_BEFORE | FLAG_HAS_TIME;
        let timex = FLAG_HAS_OFFSET_BEFORE | FLAG_HAS_TIMEX;
        assert!(unfinished_is_sent(settime | FLAG_CLOCK_WAS_SET, GUARD_NONE));
        assert!(unfinished_is_sent(timex | FLAG_CLOCK_WAS_SET, GUARD_NONE));
        assert!(unfinished_is_sent(settime, GUARD_DENIED));
        assert!(unfinished_is_sent(settime, GUARD_WOULD_DENY));
        // Nothing ran inside yet (or the call failed): a tz, a fault, ADJ_SETOFFSET alone
        // are not enough.
        assert!(!unfinished_is_sent(settime, GUARD_NONE));
        assert!(!unfinished_is_sent(settime | FLAG_HAS_TZ, GUARD_NONE));
        assert!(!unfinished_is_sent(timex | FLAG_ARG_FAULT, GUARD_NONE));
    }

    #[test]
    fn only_calls_that_changed_nothing_are_summarised() {
        let timex = FLAG_HAS_OFFSET_BEFORE | FLAG_HAS_TIMEX;
        let settime = FLAG_HAS_OFFSET_BEFORE | FLAG_HAS_TIME;
        // Failed calls of every kind: the kernel refused them before changing anything.
        assert!(may_summarise(-22, settime, GUARD_NONE, 0));
        assert!(may_summarise(-1, settime, GUARD_NONE, 0));
        assert!(may_summarise(-22, timex, GUARD_NONE, ADJ_FREQUENCY));
        // Successful discipline writes and reads that are not steps.
        assert!(may_summarise(
            0,
            timex,
            GUARD_NONE,
            ADJ_FREQUENCY | ADJ_STATUS
        ));
        assert!(may_summarise(5, timex, GUARD_NONE, 0));
        // Steps, whatever their outcome, and anything a guard hook judged.
        assert!(!may_summarise(0, settime, GUARD_NONE, 0));
        assert!(!may_summarise(
            0,
            settime | FLAG_CLOCK_WAS_SET,
            GUARD_NONE,
            0
        ));
        assert!(!may_summarise(
            0,
            timex,
            GUARD_NONE,
            ADJ_SETOFFSET | ADJ_NANO
        ));
        assert!(!may_summarise(-22, timex, GUARD_NONE, ADJ_SETOFFSET));
        assert!(!may_summarise(-1, settime, GUARD_DENIED, 0));
        assert!(!may_summarise(0, settime, GUARD_ALLOWED, 0));
        assert!(!may_summarise(0, settime, GUARD_WOULD_DENY, 0));
        assert!(!may_summarise(-1, timex, GUARD_DENIED, ADJ_FREQUENCY));
        // A timezone-only settimeofday changes what local time reads: in full; so does a
        // failed one with a timezone (the kernel set the timezone before it failed).
        let tz = FLAG_HAS_OFFSET_BEFORE | FLAG_HAS_TZ;
        assert!(!may_summarise(0, tz, GUARD_NONE, 0));
        assert!(!may_summarise(-22, settime | FLAG_HAS_TZ, GUARD_NONE, 0));
        // An argument we could not read: the kernel may have applied it (EFAULT comes from
        // writing the result back).
        let fault = FLAG_HAS_OFFSET_BEFORE | FLAG_ARG_FAULT;
        assert!(!may_summarise(-14, fault, GUARD_NONE, 0));
        // ADJ_TAI moves CLOCK_TAI.
        assert!(!may_summarise(0, timex, GUARD_NONE, ADJ_TAI));
    }

    #[test]
    fn lateness_buckets_are_powers_of_two() {
        assert_eq!(lateness_bucket(0), 0);
        assert_eq!(lateness_bucket(1), 1);
        assert_eq!(lateness_bucket(2), 2);
        assert_eq!(lateness_bucket(3), 2);
        assert_eq!(lateness_bucket(4), 3);
        // 5 s lies in [2^32, 2^33) ns.
        assert_eq!(lateness_bucket(5_000_000_000), 33);
        assert_eq!(lateness_bucket(u64::MAX), LATENESS_BUCKETS - 1);
    }
}

/// The structs the daemon puts into maps or reads out of them, as aya needs them.
#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY (each): repr(C) structs of plain integers (and byte arrays), Copy and 'static,
    // with any padding spelled out as a field, so every byte is initialised and any bit
    // pattern the kernel writes is a valid value.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for LatenessHistogram {}
    unsafe impl aya::Pod for TimerConfig {}
    unsafe impl aya::Pod for ExeKey {}
    unsafe impl aya::Pod for RepeatKey {}
    unsafe impl aya::Pod for RepeatCount {}
}
