//! A small file shared with readers through mmap(MAP_SHARED) and written under a seqlock,
//! and on it the writer of ClockBound's segment. The layout and the generation rule are
//! clockguard_core::clockbound's; here are the mapping, the lock that makes one writer the
//! owner, and the ordered stores.

use std::{
    fs::{File, OpenOptions},
    io,
    num::NonZeroUsize,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU16, Ordering},
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::mman::{mmap, munmap, MapFlags, ProtFlags},
};

/// A file of `len` bytes mapped shared and writable, locked (flock) against a second
/// writer for as long as this lives.
pub struct SharedSegment {
    map: NonNull<u8>,
    len: usize,
    path: PathBuf,
    _lock: Flock<File>,
}

// SAFETY: the mapping is owned by this value alone (no other handle to it exists in this
// process), and every access goes through `&mut self` or atomics.
unsafe impl Send for SharedSegment {}

/// Why a segment could not be opened.
#[derive(Debug)]
pub enum SegmentOpenError {
    /// Another process holds the segment's lock: it is that process's.
    Owned,
    /// open, flock, ftruncate or mmap failed.
    Io(&'static str, io::Error),
}

impl std::fmt::Display for SegmentOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentOpenError::Owned => {
                f.write_str("another process holds its lock (a second clockguard?)")
            }
            SegmentOpenError::Io(call, err) => write!(f, "{call}: {err}"),
        }
    }
}

impl std::error::Error for SegmentOpenError {}

impl SharedSegment {
    /// Opens (or creates, mode 0644) the file at `path`, takes its lock without waiting,
    /// makes it `len` bytes and maps it. An existing file is kept, not replaced: readers
    /// that mapped it go on seeing what is written to it. `fresh` says whether its size
    /// was not `len` (its content is then not to be trusted).
    pub fn open(path: &Path, len: usize) -> Result<(SharedSegment, bool), SegmentOpenError> {
        let size = NonZeroUsize::new(len).ok_or_else(|| {
            SegmentOpenError::Io("mmap", io::Error::from(io::ErrorKind::InvalidInput))
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| SegmentOpenError::Io("open", e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                SegmentOpenError::Owned
            } else {
                SegmentOpenError::Io("flock", super::io_error(errno))
            }
        })?;
        let current = lock
            .metadata()
            .map_err(|e| SegmentOpenError::Io("fstat", e))?
            .len();
        let fresh = current != len as u64;
        if fresh {
            lock.set_len(len as u64)
                .map_err(|e| SegmentOpenError::Io("ftruncate", e))?;
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), of a file this
        // process holds open and has just sized to `len`; it aliases no Rust object.
        let map = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &*lock,
                0,
            )
        }
        .map_err(|e| SegmentOpenError::Io("mmap", super::io_error(e)))?;
        Ok((
            SharedSegment {
                map: map.cast(),
                len,
                path: path.to_owned(),
                _lock: lock,
            },
            fresh,
        ))
    }

    /// A copy of the whole segment as it is now (no consistency promised).
    pub fn read(&self) -> Vec<u8> {
        (0..self.len)
            // SAFETY: in bounds of the live mapping. Volatile: the memory is a shared file's,
            // which the writer before us (or anyone with write access) may have changed.
            .map(|i| unsafe { self.map.as_ptr().add(i).read_volatile() })
            .collect()
    }

    /// Writes `bytes` at `offset` with plain (volatile) stores: for the header, before any
    /// reader may rely on it.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "write past the segment");
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: in bounds (asserted above) of the live mapping.
            unsafe { self.map.as_ptr().add(offset + i).write_volatile(*byte) };
        }
    }

    /// The u16 at `offset`, for a seqlock's generation.
    fn generation(&self, offset: usize) -> &AtomicU16 {
        assert!(
            offset + 2 <= self.len && offset.is_multiple_of(2),
            "a u16 in the segment"
        );
        // SAFETY: in bounds and 2-aligned (the mapping is page-aligned), valid for the
        // lifetime of `self`; other processes access it only atomically or by reads.
        unsafe { AtomicU16::from_ptr(self.map.as_ptr().add(offset).cast()) }
    }

    /// The u16 at `offset` now.
    pub fn load_u16(&self, offset: usize) -> u16 {
        self.generation(offset).load(Ordering::Acquire)
    }

    /// Writes `body` at `body_offset` under the seqlock whose generation is the u16 at
    /// `generation_offset`: `during` is stored first, then the body, then `after`, each
    /// store ordered after the one before, so a reader that sees `after` sees the whole
    /// body, and one that reads the generation odd or changed knows its copy is torn.
    pub fn write_seqlocked(
        &mut self,
        generation_offset: usize,
        (during, after): (u16, u16),
        body_offset: usize,
        body: &[u8],
    ) {
        self.generation(generation_offset)
            .store(during, Ordering::Relaxed);
        fence(Ordering::Release);
        self.write(body_offset, body);
        self.generation(generation_offset)
            .store(after, Ordering::Release);
    }
}

/// The writer of a ClockBound segment (protocol version 2).
pub struct ClockBoundWriter {
    segment: SharedSegment,
}

impl ClockBoundWriter {
    /// Opens the segment at `path` as its one writer. A segment another writer left
    /// (a previous clockguard, ClockBound's daemon) is taken over in place with its
    /// generation going on, so its readers keep reading; anything else gets a new header,
    /// and readers see "not initialised" until the first `publish`.
    pub fn open(path: &Path) -> Result<ClockBoundWriter, SegmentOpenError> {
        use clockguard_core::clockbound::{self, SegmentError};
        let (mut segment, fresh) = SharedSegment::open(path, clockbound::SEGMENT_SIZE)?;
        let readable_header = !fresh
            && matches!(
                clockbound::decode(&segment.read()),
                Ok(_)
                    | Err(SegmentError::NotInitialised
                        | SegmentError::BeingWritten
                        | SegmentError::BadStatus(_))
            );
        if !readable_header {
            segment.write(0, &clockbound::encode_header(0));
        }
        Ok(ClockBoundWriter { segment })
    }

    /// Makes `bound` what every reader sees from now on.
    pub fn publish(&mut self, bound: &clockguard_core::clockbound::ErrorBound) {
        use clockguard_core::clockbound::{
            generations_around_write, GENERATION_OFFSET, HEADER_SIZE,
        };
        let current = self.segment.load_u16(GENERATION_OFFSET);
        self.segment.write_seqlocked(
            GENERATION_OFFSET,
            generations_around_write(current),
            HEADER_SIZE,
            &bound.encode(),
        );
    }
}

impl Drop for SharedSegment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of this length, unmapped once; no reference
        // into it outlives `self`.
        if let Err(err) = unsafe { munmap(self.map.cast(), self.len) } {
            eprintln!("munmap of {}: {err}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_the_first_one_s_bytes_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shm0");
        let (mut first, fresh) = SharedSegment::open(&path, 80).unwrap();
        assert!(fresh);
        assert!(matches!(
            SharedSegment::open(&path, 80),
            Err(SegmentOpenError::Owned)
        ));
        first.write(0, b"clockguard");
        first.write_seqlocked(14, (1, 2), 16, &[7; 64]);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 80);
        assert_eq!(&on_disk[..10], b"clockguard");
        assert_eq!(u16::from_ne_bytes([on_disk[14], on_disk[15]]), 2);
        assert_eq!(&on_disk[16..], &[7; 64]);
        assert_eq!(first.read(), on_disk);
        assert_eq!(first.load_u16(14), 2);
        drop(first);
        // Reopened: the same file, the same bytes, not fresh.
        let (again, fresh) = SharedSegment::open(&path, 80).unwrap();
        assert!(!fresh);
        assert_eq!(again.read(), on_disk);
    }

    #[test]
    fn a_missing_directory_is_an_open_error() {
        let err = SharedSegment::open(Path::new("/nonexistent-clockguard-dir/shm0"), 80)
            .err()
            .unwrap();
        assert!(
            matches!(&err, SegmentOpenError::Io("open", e) if e.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
    }
}
