//! The guard: LSM hooks that judge each step of the clock by the policy the daemon
//! wrote (allow, refuse, or refuse so that the daemon slews instead).

use aya_log_ebpf::{debug, info};

use super::*;

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
/// recorded in the thread's pending event, counted, returned as the LSM verdict, and said
/// at `ebpf_log_level` info (refused) or debug (allowed).
#[inline(always)]
fn judge(ctx: &LsmContext, guarded: u16) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let exe = current_exe(cfg);
    // The tgid alone would hand clockguard's rights, after a crash, to whatever process
    // reuses its pid; with the executable known, both must match.
    let is_self = cfg.self_tgid != 0
        && tgid == cfg.self_tgid
        && (cfg.flags & CONFIG_SELF_EXE == 0 || exe.as_ref() == Some(&cfg.self_exe));
    let class = if is_self {
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
    match action {
        GUARD_DENIED => info!(
            ctx,
            "guard: refused change {} (1 step, 2 discipline) by tgid {}, class {} (0 other, 2 slew_instead)",
            guarded,
            tgid,
            class
        ),
        GUARD_WOULD_DENY => info!(
            ctx,
            "guard: observing, would refuse change {} (1 step, 2 discipline) by tgid {}, class {}",
            guarded,
            tgid,
            class
        ),
        _ => debug!(
            ctx,
            "guard: allowed change {} (1 step, 2 discipline) by tgid {}, class {} (1 allow, 3 clockguard)",
            guarded,
            tgid,
            class
        ),
    }
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
        return judge(&ctx, GUARDED_STEP);
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
    judge(&ctx, GUARDED_STEP)
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
        judge(&ctx, GUARDED_STEP)
    } else {
        judge(&ctx, GUARDED_DISCIPLINE)
    }
}
