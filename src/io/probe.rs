//! Backend selection at open: is io_uring usable here, and does the WAL's filesystem accept
//! O_DIRECT? Both answers are logged once by the caller.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::AlignedBuf;

/// Why the io_uring backend cannot be used.
#[derive(Debug)]
pub enum UringUnavailable {
    /// `io_uring_setup` failed (old kernel, seccomp, `kernel.io_uring_disabled`).
    Ring(io::Error),
    /// The filesystem rejected an O_DIRECT open or aligned write (e.g. tmpfs).
    Direct(io::Error),
}

impl std::fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UringUnavailable::Ring(error) => write!(f, "io_uring unavailable: {error}"),
            UringUnavailable::Direct(error) => {
                write!(f, "O_DIRECT rejected by the filesystem: {error}")
            }
        }
    }
}

/// Checks that the directory's filesystem accepts an O_DIRECT open and a 4 KiB aligned write,
/// using a scratch file that is removed afterwards.
pub fn probe_direct_io(dir: &Path) -> io::Result<()> {
    let path = dir.join(".procmond-wal-direct-probe");
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_DIRECT)
            .open(&path)?;
        let block = AlignedBuf::zeroed(4096);
        file.write_all_at(&block, 0)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Builds a tokio-uring runtime, or says why it cannot be built.
pub fn uring_runtime(entries: u32) -> Result<tokio_uring::Runtime, UringUnavailable> {
    tokio_uring::Runtime::new(tokio_uring::builder().entries(entries))
        .map_err(UringUnavailable::Ring)
}
