//! clockguard's one door to the kernel: every `unsafe` block of the daemon and every
//! syscall wrapper it needs, each with its safety argument. Where nix has the call, it is
//! nix's (safe) wrapper; what nix lacks (adjtimex, statx, membarrier, the bpf syscall's
//! program info, lsm_list_modules, SO_PEERGROUPS, getrandom, malloc_trim, registering a
//! descriptor with tokio) is here, small and reviewed in one place. The `clockguard` crate
//! itself forbids unsafe code.
//!
//! Nothing here sets a clock: the only clock-changing call is `adjtimex` with the modes
//! its caller chose (the slew engine's frequency), and it reads the clock otherwise. The
//! test programs' raw clock calls are in `test_calls`, behind the `test-calls` feature,
//! which only the tests crate turns on.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod segment;
#[cfg(feature = "test-calls")]
pub mod test_calls;

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::Path,
};

use nix::{
    errno::Errno,
    sys::{
        socket::{
            recvmsg, setsockopt,
            sockopt::{ReceiveTimestampns, Timestamping},
            ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, TimestampingFlag,
            Timestamps,
        },
        time::TimeSpec,
        timerfd::{ClockId as TimerClock, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
};
use tokio::io::{unix::AsyncFd, Interest};

/// Converts nix's error into std's (the rest of clockguard speaks `io::Error`).
fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

// ---------------------------------------------------------------------------------------
// Clocks (read only)

/// A clock's value in ns (clock_gettime). These clocks cannot fail to read; were one to,
/// the answer would be 0.
pub fn clock_ns(clock: libc::clockid_t) -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::from_raw(clock))
        .map(|ts| ts.tv_sec() * 1_000_000_000 + ts.tv_nsec())
        .unwrap_or(0)
}

/// A clock's resolution in ns (clock_getres); None when the kernel will not say.
pub fn clock_resolution_ns(clock: libc::clockid_t) -> Option<i64> {
    nix::time::clock_getres(nix::time::ClockId::from_raw(clock))
        .ok()
        .map(|ts| ts.tv_sec() * 1_000_000_000 + ts.tv_nsec())
}

/// The kernel's clock ticks per second for /proc/stat's counters (USER_HZ, 100 nearly
/// everywhere).
pub fn clock_ticks_per_s() -> i64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
}

/// An adjtimex(2) argument with every field 0: `modes` 0 is a read.
pub fn timex() -> libc::timex {
    // SAFETY: libc::timex is a plain C struct of integers (and padding), for which all
    // zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// adjtimex(2): reads the kernel's clock discipline, and changes what `tx.modes` says.
/// Returns the clock state (TIME_OK, TIME_INS, ...).
pub fn adjtimex(tx: &mut libc::timex) -> io::Result<i32> {
    // SAFETY: `tx` is a valid, exclusive timex for the duration of the call; the kernel
    // reads and writes only that struct.
    match unsafe { libc::adjtimex(tx) } {
        -1 => Err(io::Error::last_os_error()),
        state => Ok(state),
    }
}

// ---------------------------------------------------------------------------------------
// A timer the kernel cancels when the clock is set

/// A timerfd on CLOCK_REALTIME armed with TFD_TIMER_CANCEL_ON_SET: it becomes readable
/// (and reads ECANCELED) whenever anyone sets the clock, however the change was made.
pub struct ClockSetTimer {
    timer: TimerFd,
}

/// What reading a `ClockSetTimer` found.
#[derive(Debug, PartialEq, Eq)]
pub enum ClockSetTimerRead {
    /// The clock was set, or the far-off expiry passed (a ten-year jump): re-arm.
    Fired,
    /// Nothing yet (a spurious wake-up).
    Nothing,
}

impl ClockSetTimer {
    /// A non-blocking timer, not armed yet.
    pub fn new() -> io::Result<ClockSetTimer> {
        let timer = TimerFd::new(
            TimerClock::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io_error)?;
        Ok(ClockSetTimer { timer })
    }

    /// Arms it to expire at `at_unix_s` (CLOCK_REALTIME, absolute) and to be cancelled by
    /// any setting of the clock before then.
    pub fn arm(&self, at_unix_s: i64) -> io::Result<()> {
        self.timer
            .set(
                Expiration::OneShot(TimeSpec::new(at_unix_s, 0)),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
            )
            .map_err(io_error)
    }

    /// Reads it without blocking.
    pub fn read(&self) -> io::Result<ClockSetTimerRead> {
        // nix's wait() reads the expiry count and takes ECANCELED (the clock was set) as
        // the end of the wait; on a non-blocking timer that has not fired the read fails
        // with EAGAIN.
        match self.timer.wait() {
            Ok(()) => Ok(ClockSetTimerRead::Fired),
            Err(Errno::EAGAIN) => Ok(ClockSetTimerRead::Nothing),
            Err(errno) => Err(io_error(errno)),
        }
    }
}

impl AsRawFd for ClockSetTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_fd().as_raw_fd()
    }
}

// ---------------------------------------------------------------------------------------
// Readiness through tokio

/// A value that owns its file descriptor for as long as it lives, and always answers the
/// same one: what tokio asks of a descriptor it polls. Sealed: only the types below, each
/// of which holds its descriptor as an `OwnedFd` (a map's `MapData`, a `File`, a timerfd,
/// the eBPF log reader's ring buffer).
pub trait OwnsItsFd: AsRawFd + private::Sealed {}

mod private {
    pub trait Sealed {}
}

impl private::Sealed for OwnedFd {}
impl OwnsItsFd for OwnedFd {}
impl private::Sealed for std::fs::File {}
impl OwnsItsFd for std::fs::File {}
impl private::Sealed for ClockSetTimer {}
impl OwnsItsFd for ClockSetTimer {}
impl private::Sealed for aya::maps::RingBuf<aya::maps::MapData> {}
impl OwnsItsFd for aya::maps::RingBuf<aya::maps::MapData> {}
// It holds the AYA_LOGS ring buffer's `MapData`.
impl<T> private::Sealed for aya_log::EbpfLogger<T> {}
impl<T> OwnsItsFd for aya_log::EbpfLogger<T> {}

/// Registers `inner` with the tokio reactor for readability.
pub fn poll_readable<T: OwnsItsFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: tokio requires the descriptor to stay open and the same for the AsyncFd's
    // life; `OwnsItsFd` is implemented only for types that own their descriptor and never
    // swap it, and the AsyncFd owns `inner`.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

// ---------------------------------------------------------------------------------------
// Sockets

/// Asks the kernel to stamp every datagram `socket` receives with CLOCK_REALTIME as it
/// arrives (SO_TIMESTAMPNS).
pub fn enable_rx_timestamps(socket: &impl AsFd) -> io::Result<()> {
    setsockopt(socket, ReceiveTimestampns, &true).map_err(io_error)
}

/// Asks the kernel for a software transmit timestamp of every datagram sent on `socket`
/// (SO_TIMESTAMPING TX_SOFTWARE): CLOCK_REALTIME when the packet was handed to the device,
/// queued on the socket's error queue without the packet (OPT_TSONLY); `take_tx_timestamp`
/// reads it. A user-space time taken before the send is early by the whole send path.
pub fn enable_tx_timestamps(socket: &impl AsFd) -> io::Result<()> {
    let flags = TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_TSONLY;
    setsockopt(socket, Timestamping, &flags).map_err(io_error)
}

/// Empties `fd`'s error queue without blocking and returns the newest software transmit
/// timestamp found there (CLOCK_REALTIME ns), if any. Read right after a send on a virtual
/// or most physical devices, the stamp of that send is already there; an older, unread one
/// is the caller's to tell apart (it is older than the send).
pub fn take_tx_timestamp(fd: RawFd) -> Option<i64> {
    let mut newest = None;
    // Each message is a timestamp and the sock_extended_err that carries it; a bounded
    // number, so that a queue that refills cannot hold us here.
    for _ in 0..16 {
        let mut data = [0u8; 64];
        let mut iov = [io::IoSliceMut::new(&mut data)];
        let mut control = nix::cmsg_space!(Timestamps, libc::sock_extended_err, libc::sockaddr_in6);
        let Ok(msg) = recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) else {
            break;
        };
        let Ok(cmsgs) = msg.cmsgs() else { continue };
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmTimestampsns(ts) = cmsg {
                let ns = ts.system.tv_sec() * 1_000_000_000 + ts.system.tv_nsec();
                if ns != 0 {
                    newest = newest.max(Some(ns));
                }
            }
        }
    }
    newest
}

/// One datagram, without blocking: its length, its sender and the kernel's receive time
/// (CLOCK_REALTIME ns; None when the kernel gave none).
pub fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<i64>)> {
    let mut iov = [io::IoSliceMut::new(buf)];
    // Room for SO_TIMESTAMPNS's stamp and for SO_TIMESTAMPING's, which a socket that asked
    // for transmit stamps may also be given on receive.
    let mut control = nix::cmsg_space!(TimeSpec, Timestamps);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)
        .map_err(io_error)?;
    let stamp = msg.cmsgs().map_err(io_error)?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::ScmTimestampns(ts) => Some(ts.tv_sec() * 1_000_000_000 + ts.tv_nsec()),
        _ => None,
    });
    let from = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| {
            io::Error::other(format!(
                "datagram from address family {:?}",
                msg.address.as_ref().and_then(SockaddrLike::family)
            ))
        })?;
    Ok((msg.bytes, from, stamp))
}

/// The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13), empty when unknown.
pub fn peer_groups(stream: &impl AsFd) -> Vec<u32> {
    let fd = stream.as_fd().as_raw_fd();
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes; the kernel writes at most that many and
        // says how many in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / 4);
            return groups;
        }
        // ERANGE: the kernel said how much room it needs.
        let needed = len as usize / 4;
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || needed <= groups.len()
            || needed > 65_536
        {
            return Vec::new();
        }
        groups.resize(needed, 0);
    }
}

// ---------------------------------------------------------------------------------------
// Users, groups, the process

/// The effective uid.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The name of a uid through NSS; None when it has none.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// The gid of a group name through NSS; None when there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    nix::unistd::Group::from_name(name)
        .map(|group| group.map(|g| g.gid.as_raw()))
        .map_err(io_error)
}

/// No transparent huge pages for this process (PR_SET_THP_DISABLE).
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    nix::sys::prctl::set_thp_disable(true).map_err(io_error)
}

/// Gives the heap's free pages back to the kernel (glibc's malloc_trim).
pub fn malloc_trim() {
    // SAFETY: malloc_trim takes an integer and only walks glibc's own heap.
    unsafe { libc::malloc_trim(0) };
}

/// Makes `command`'s child ignore SIGTERM, so it outlives a stop in progress: systemd
/// sends SIGTERM to every process of the unit's cgroup while it stops the unit, and keeps
/// sending it to processes that appear meanwhile. A child that must finish its work during
/// the stop (asking systemd what the stop is for) ignores it; SIGKILL at TimeoutStopSec
/// still ends it.
pub fn ignore_sigterm_in_child(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only signal(2)
    // through nix, which is async-signal-safe; an ignored disposition survives exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::SigHandler::SigIgn,
            )
            .map(drop)
            .map_err(io_error)
        });
    }
}

// ---------------------------------------------------------------------------------------
// Files and file systems

/// statfs(2) f_type of the file system holding `path`.
pub fn fs_type(path: &Path) -> io::Result<i64> {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0)
        .map_err(io_error)
}

/// Mounts a pseudo file system (`fstype`, source "nodev"-like `source`) at `target`.
pub fn mount_pseudo_fs(source: &str, target: &Path, fstype: &str) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io_error)
}

/// What statx(2) says of a file: its type and inode, and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    pub is_regular_file: bool,
    pub ino: u64,
    /// The mount's id, when the kernel gave it (STATX_MNT_ID, Linux 5.8).
    pub mount_id: Option<u64>,
    pub dev_major: u32,
    pub dev_minor: u32,
}

/// statx(2) of `path`, symlinks followed.
pub fn file_identity(path: &Path) -> io::Result<FileIdentity> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: libc::statx is plain data; all zeroes is a valid initial value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and an exclusive out pointer for the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID,
            &raw mut stx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileIdentity {
        is_regular_file: u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFREG,
        ino: stx.stx_ino,
        mount_id: (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id),
        dev_major: stx.stx_dev_major,
        dev_minor: stx.stx_dev_minor,
    })
}

// ---------------------------------------------------------------------------------------
// Kernel interfaces nix does not wrap

/// `lsm_list_modules(2)`: the ids of the active LSMs, in order. Linux 6.8 and later; the
/// libc crate has no number for it yet (461 on x86-64 and in the generic table alike).
pub fn lsm_list_modules() -> io::Result<Vec<u64>> {
    const SYS_LSM_LIST_MODULES: libc::c_long = 461;
    let mut ids = [0u64; 32];
    let mut size = std::mem::size_of_val(&ids) as u32;
    // SAFETY: the kernel writes at most `size` bytes into `ids` and updates `size`; both
    // live until the call returns.
    let count =
        unsafe { libc::syscall(SYS_LSM_LIST_MODULES, ids.as_mut_ptr(), &raw mut size, 0u32) };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = (count as usize).min(ids.len());
    Ok(ids[..count].to_vec())
}

/// membarrier(MEMBARRIER_CMD_GLOBAL): returns once every CPU has passed an RCU grace
/// period.
pub fn membarrier_global() -> io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `bpf_prog_info.recursion_misses` of the program behind `fd` (Linux 5.12+; aya 0.14 does
/// not expose it).
pub fn bpf_recursion_misses(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    // SAFETY: both are plain C structs of integers, for which all zeroes are valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = std::ptr::addr_of_mut!(info) as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most info_len bytes into `info`, which lives
    // until the call returns; `attr` is as large as the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_read_and_move_forward() {
        let a = clock_ns(libc::CLOCK_MONOTONIC);
        let b = clock_ns(libc::CLOCK_MONOTONIC);
        assert!(a > 0 && b >= a);
        // CLOCK_REALTIME is after 2020 on any machine this runs on.
        assert!(clock_ns(libc::CLOCK_REALTIME) > 1_577_836_800 * 1_000_000_000);
        assert!(clock_ticks_per_s() > 0);
    }

    #[test]
    fn adjtimex_with_no_modes_reads() {
        let mut tx = timex();
        adjtimex(&mut tx).unwrap();
        // tick is 10 000 µs ± 10 %: the kernel's own range.
        assert!((9_000..=11_000).contains(&tx.tick), "tick {}", tx.tick);
    }

    #[test]
    fn a_clock_set_timer_is_quiet_until_the_clock_is_set() {
        let timer = ClockSetTimer::new().unwrap();
        let now_s = clock_ns(libc::CLOCK_REALTIME) / 1_000_000_000;
        timer.arm(now_s + 3600).unwrap();
        assert_eq!(timer.read().unwrap(), ClockSetTimerRead::Nothing);
        // An expiry in the past fires at once (what a forward jump past it looks like).
        timer.arm(now_s - 1).unwrap();
        assert_eq!(timer.read().unwrap(), ClockSetTimerRead::Fired);
    }

    #[test]
    fn file_identity_tells_files_from_directories() {
        let exe = std::env::current_exe().unwrap();
        let file = file_identity(&exe).unwrap();
        assert!(file.is_regular_file && file.ino > 0);
        let dir = file_identity(exe.parent().unwrap()).unwrap();
        assert!(!dir.is_regular_file);
        assert!(file_identity(Path::new("/nonexistent/x")).is_err());
    }

    #[test]
    fn a_stamped_datagram_says_who_sent_it_and_when() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(&rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = clock_ns(libc::CLOCK_REALTIME);
        tx.send_to(b"ntp", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let mut got = None;
        for _ in 0..100 {
            match recv_stamped(rx.as_raw_fd(), &mut buf) {
                Ok(datagram) => {
                    got = Some(datagram);
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(err) => panic!("{err}"),
            }
        }
        let (n, from, stamp) = got.expect("the datagram arrived");
        assert_eq!(&buf[..n], b"ntp");
        assert_eq!(from, tx.local_addr().unwrap());
        let stamp = stamp.expect("the kernel stamped it");
        assert!(stamp >= before && stamp <= clock_ns(libc::CLOCK_REALTIME));
    }

    #[test]
    fn a_sent_datagram_has_a_transmit_stamp() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        enable_tx_timestamps(&tx).unwrap();
        enable_rx_timestamps(&tx).unwrap();
        assert_eq!(take_tx_timestamp(tx.as_raw_fd()), None);
        let before = clock_ns(libc::CLOCK_REALTIME);
        tx.send(b"ntp").unwrap();
        let stamp = take_tx_timestamp(tx.as_raw_fd()).expect("the loopback device stamps it");
        assert!(stamp >= before && stamp <= clock_ns(libc::CLOCK_REALTIME));
        // Read: the queue is empty again.
        assert_eq!(take_tx_timestamp(tx.as_raw_fd()), None);
        // A reply to a socket that asked for both kinds of stamp still gives its receive
        // stamp.
        rx.send_to(b"reply", tx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (n, _, rx_stamp) = recv_stamped(tx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"reply");
        assert!(rx_stamp.is_some_and(|s| s >= stamp));
    }

    #[test]
    fn users_and_groups_resolve() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-cg").unwrap(), None);
    }
}
