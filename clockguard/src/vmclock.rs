//! The hypervisor's vmclock device, read: the page through the driver's read() (which
//! copies it under the host's seqlock), every `timers.vmclock_poll_ms`. What a reading
//! means is decided in `clockguard_core::vmclock`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use clockguard_core::vmclock::*;

/// An open vmclock device.
pub struct Device {
    file: File,
    path: PathBuf,
}

/// Why no device is followed: there is none, or it cannot be used.
pub enum NotFollowed {
    Absent(String),
    Unusable(String),
}

impl Device {
    /// The device and its first reading. A machine without one (no such file: no
    /// hypervisor support, or no ptp_vmclock driver) is `Absent`; one that cannot be read
    /// or is not a vmclock page is `Unusable`, with the reason.
    pub fn open(path: &Path) -> Result<(Device, Page), NotFollowed> {
        let file = File::open(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => NotFollowed::Absent(format!(
                "no vmclock device at {} (the hypervisor offers none, or the ptp_vmclock \
                 driver is not loaded)",
                path.display()
            )),
            _ => NotFollowed::Unusable(format!("cannot open {}: {err}", path.display())),
        })?;
        let device = Device {
            file,
            path: path.to_owned(),
        };
        let page = device.read().map_err(NotFollowed::Unusable)?;
        Ok((device, page))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device file's mode (who may open it), 0 when it cannot be read.
    pub fn mode(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        self.file
            .metadata()
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    }

    /// The page now, or what went wrong, naming the device.
    pub fn read(&self) -> Result<Page, String> {
        let mut buf = [0u8; ABI_LEN];
        let n = self
            .file
            .read_at(&mut buf, 0)
            .map_err(|err| format!("cannot read {}: {err}", self.path.display()))?;
        parse(&buf[..n]).map_err(|why| format!("{}: {why}", self.path.display()))
    }
}
