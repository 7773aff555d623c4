//! The audit records to the systemd journal: the entries are made in
//! [`clockguard_core::journald`]; this sends them to journald's native socket.
//!
//! Never in the way: without journald (no socket: a container, a minimal init) nothing is
//! sent and nothing breaks; the socket is non-blocking, so a journald that is behind costs
//! an entry (counted in `status`) rather than stalling the event loop. clockguard's own
//! hash-chained journal is written first and stays complete either way.

use std::{
    io::{self, Write},
    os::{fd::AsFd, unix::net::UnixDatagram},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clockguard_core::{journald, record::Record};
use nix::{
    fcntl::{fcntl, FcntlArg, SealFlag},
    sys::{
        memfd::{memfd_create, MFdFlags},
        socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr},
    },
};

pub struct Journald {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    pub sent: u64,
    pub dropped: u64,
    /// The last send error, said once until a send succeeds again.
    failing: bool,
}

impl Journald {
    /// Entries go to the socket at `path` when `enabled` and it exists.
    pub fn new(path: &Path, enabled: bool) -> Journald {
        let mut sink = Journald {
            socket: None,
            path: path.to_path_buf(),
            sent: 0,
            dropped: 0,
            failing: false,
        };
        if !enabled {
            return sink;
        }
        if !path.exists() {
            tracing::info!(
                "no journald socket at {}: records go to clockguard's journal only",
                path.display()
            );
            return sink;
        }
        match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(socket) => {
                tracing::info!("journald: each record also goes to {}", path.display());
                sink.socket = Some(socket);
            }
            Err(err) => tracing::warn!("journald: cannot make a socket: {err}"),
        }
        sink
    }

    /// `record` (journaled as `line`) as one journal entry.
    pub fn send(&mut self, record: &Record, line: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        let entry = journald::encode(&journald::fields(record, line));
        let sent = match socket.send_to(&entry, &self.path) {
            // Larger than a datagram may be: journald takes it from a sealed memfd.
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => {
                send_as_memfd(socket, &self.path, &entry)
            }
            other => other.map(|_| ()).map_err(anyhow::Error::from),
        };
        match sent {
            Ok(()) => {
                self.sent += 1;
                self.failing = false;
            }
            Err(err) => {
                self.dropped += 1;
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        "journald: record {} not sent to {} ({err:#}); it is in clockguard's \
                         journal, and further failures are counted in status",
                        record.seq,
                        self.path.display()
                    );
                }
            }
        }
    }
}

/// The native protocol's way for a large entry: the bytes in a memfd, sealed, its fd sent
/// alone (SCM_RIGHTS) in an empty datagram.
fn send_as_memfd(socket: &UnixDatagram, path: &Path, entry: &[u8]) -> Result<()> {
    let memfd = memfd_create(
        c"clockguard-journal-entry",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .context("memfd_create")?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(entry).context("cannot write the memfd")?;
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("cannot seal the memfd")?;
    let addr = UnixAddr::new(path).context("journald socket path")?;
    let fds = [std::os::fd::AsRawFd::as_raw_fd(&file)];
    sendmsg(
        std::os::fd::AsRawFd::as_raw_fd(&socket.as_fd()),
        &[io::IoSlice::new(&[])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .context("sendmsg")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::AsRawFd;

    /// A large entry arrives as journald reads it: an empty datagram with one fd, a memfd
    /// sealed against change, holding the entry.
    #[test]
    fn a_large_entry_goes_as_a_sealed_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let journald = UnixDatagram::bind(&path).unwrap();
        let sender = UnixDatagram::unbound().unwrap();
        let entry = vec![b'x'; 300_000];
        send_as_memfd(&sender, &path, &entry).unwrap();

        let mut buf = [0u8; 16];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<UnixAddr>(
            journald.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(msg.bytes, 0);
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("an fd");
        // The memfd reopened through procfs (owning the received fd would need unsafe):
        // the same file, seals and all.
        let memfd = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        let seals = fcntl(&memfd, FcntlArg::F_GET_SEALS).unwrap();
        assert_eq!(
            SealFlag::from_bits_truncate(seals),
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL
        );
        assert_eq!(std::fs::read(format!("/proc/self/fd/{fd}")).unwrap(), entry);
    }
}
