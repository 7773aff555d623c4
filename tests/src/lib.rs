//! What the test programs share.

/// A clock's value in ns (clock_gettime).
pub fn read_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
