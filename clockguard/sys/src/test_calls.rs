//! The calls clockguard's test programs make (feature `test-calls`; the daemon never turns
//! it on, so nothing here is reachable from it): clock syscalls made raw, past glibc's own
//! argument checks and the vDSO, so that the kernel, and the hooks on its entry points,
//! see exactly the arguments a test chose: invalid ones the kernel refuses without
//! touching the clock, and, inside the test VM only, real steps and frequency changes.

use std::{
    io,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The result of a raw syscall: its return value, or the errno it set.
fn syscall_result(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// clock_settime(2) with these very fields: `tv_nsec` out of range (EINVAL) reaches the
/// kernel, which glibc's wrapper would refuse itself. A valid time sets `clock`.
pub fn clock_settime(clock: libc::clockid_t, tv_sec: i64, tv_nsec: i64) -> io::Result<()> {
    let ts = libc::timespec { tv_sec, tv_nsec };
    // SAFETY: `ts` is a valid timespec the kernel only reads, for the duration of the call.
    syscall_result(unsafe { libc::syscall(libc::SYS_clock_settime, clock, &raw const ts) })
        .map(drop)
}

/// settimeofday(2) with these very fields and no time zone.
pub fn settimeofday(tv_sec: i64, tv_usec: i64) -> io::Result<()> {
    let tv = libc::timeval { tv_sec, tv_usec };
    // SAFETY: `tv` is a valid timeval the kernel only reads; a null timezone is allowed.
    syscall_result(unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            &raw const tv,
            std::ptr::null::<libc::timezone>(),
        )
    })
    .map(drop)
}

/// clock_adjtime(2) on any clock id, existing or not. Returns the clock state.
pub fn clock_adjtime(clock: libc::clockid_t, tx: &mut libc::timex) -> io::Result<i32> {
    // SAFETY: `tx` is a valid, exclusive timex for the duration of the call.
    syscall_result(unsafe { libc::syscall(libc::SYS_clock_adjtime, clock, &raw mut *tx) })
        .map(|state| state as i32)
}

/// adjtimex(2) as the raw syscall. Returns the clock state.
pub fn adjtimex(tx: &mut libc::timex) -> io::Result<i32> {
    // SAFETY: `tx` is a valid, exclusive timex for the duration of the call.
    syscall_result(unsafe { libc::syscall(libc::SYS_adjtimex, &raw mut *tx) })
        .map(|state| state as i32)
}

/// clock_gettime(CLOCK_REALTIME) as a real syscall, past the vDSO (a syscall clockguard
/// does not audit, to measure what its tracepoints cost every other syscall).
pub fn clock_gettime_syscall() -> io::Result<()> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusive out pointer for the duration of the call.
    syscall_result(unsafe {
        libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &raw mut ts)
    })
    .map(drop)
}

/// setuid(2) as the raw syscall (glibc's wrapper broadcasts to every thread): the kernel
/// asks capable(CAP_SETUID) first, whatever the uid.
pub fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: no pointers; setting the uid the caller already has changes nothing.
    syscall_result(unsafe { libc::syscall(libc::SYS_setuid, uid) }).map(drop)
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// After this, SIGTERM and SIGINT set the returned flag instead of ending the process.
/// Without SA_RESTART: a call blocked in the kernel (a recv) returns EINTR at once.
pub fn stop_on_sigterm_or_sigint() -> io::Result<&'static AtomicBool> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(super::io_error)?;
    }
    Ok(&STOP_REQUESTED)
}
