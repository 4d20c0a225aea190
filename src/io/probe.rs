//! Backend selection at open: is io_uring usable here, and does the WAL's filesystem accept
//! O_DIRECT? Both answers are logged once by the caller.
//!
//! Owns the probes and the `PROCMOND_WAL_DISABLE_URING` switch. It must never leave a
//! tokio-uring runtime to be dropped on the caller's thread: the caller may be inside a tokio
//! runtime, where dropping another runtime panics, so the ring probe runs on a thread of its
//! own.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::AlignedBuf;

/// Environment variable that turns io_uring off for this process: `Auto` then picks the
/// portable backend and `Uring` fails with a clear error. Any value except empty and `0`
/// disables io_uring; it exists to test the fallback without changing system settings.
pub const DISABLE_URING_ENV: &str = "PROCMOND_WAL_DISABLE_URING";

/// Submission queue entries of the ring thread's ring. The probe builds a ring of the same
/// size, so a limit that only bites at this size (before Linux 5.12 ring memory counts
/// against `RLIMIT_MEMLOCK`) sends `Auto` to the portable backend instead of failing open.
pub const RING_ENTRIES: u32 = 256;

/// Why the io_uring backend cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum UringUnavailable {
    /// `io_uring_setup` failed (old kernel, seccomp, `kernel.io_uring_disabled`).
    Ring(io::Error),
    /// The filesystem rejected an O_DIRECT open or aligned write.
    Direct(io::Error),
    /// [`DISABLE_URING_ENV`] is set.
    DisabledByEnv,
}

impl UringUnavailable {
    /// The same reason as an `io::Error` (for error chains that carry one).
    pub fn into_io_error(self) -> io::Error {
        match self {
            UringUnavailable::Ring(error) | UringUnavailable::Direct(error) => error,
            UringUnavailable::DisabledByEnv => io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring is disabled by {DISABLE_URING_ENV}"),
            ),
        }
    }
}

impl std::fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UringUnavailable::Ring(error) => write!(f, "io_uring unavailable: {error}"),
            UringUnavailable::Direct(error) => {
                write!(f, "O_DIRECT rejected by the filesystem: {error}")
            }
            UringUnavailable::DisabledByEnv => {
                write!(f, "io_uring disabled by {DISABLE_URING_ENV}")
            }
        }
    }
}

/// Whether [`DISABLE_URING_ENV`] asks for io_uring to be left alone.
pub fn uring_disabled_by_env() -> bool {
    std::env::var_os(DISABLE_URING_ENV).is_some_and(|value| !value.is_empty() && value != "0")
}

/// Everything the io_uring backend needs in `dir`: the switch is off, a ring can be created
/// (see [`probe_ring`]) and the filesystem accepts O_DIRECT (see [`probe_direct_io`]).
/// Blocks for a few milliseconds; safe to call from any thread, inside a runtime or not.
pub fn probe_uring(dir: &Path) -> Result<(), UringUnavailable> {
    probe_ring()?;
    probe_direct_io(dir).map_err(UringUnavailable::Direct)
}

/// Checks that an io_uring ring can be created here (and that [`DISABLE_URING_ENV`] is not
/// set). The probe runtime is created and dropped on a short-lived thread of its own, so
/// this works from plain threads and from inside any tokio runtime alike.
pub fn probe_ring() -> Result<(), UringUnavailable> {
    if uring_disabled_by_env() {
        return Err(UringUnavailable::DisabledByEnv);
    }
    let prober = std::thread::Builder::new()
        .name("procmond-wal-probe".into())
        .spawn(|| uring_runtime(RING_ENTRIES).map(drop))
        .map_err(UringUnavailable::Ring)?;
    match prober.join() {
        Ok(result) => result,
        Err(_) => Err(UringUnavailable::Ring(io::Error::other(
            "the io_uring probe thread panicked",
        ))),
    }
}

/// Checks that the directory's filesystem accepts an O_DIRECT open and a 4 KiB aligned write,
/// using a scratch file that is removed afterwards. (tmpfs accepts O_DIRECT since Linux 6.6;
/// older tmpfs, and some network and FUSE filesystems, refuse it.)
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

/// Builds a tokio-uring runtime, or says why it cannot be built. The runtime must be dropped
/// outside any tokio runtime: call this only on a thread that runs no other runtime (the
/// ring thread, or the probe thread of [`probe_ring`]).
pub fn uring_runtime(entries: u32) -> Result<tokio_uring::Runtime, UringUnavailable> {
    if uring_disabled_by_env() {
        return Err(UringUnavailable::DisabledByEnv);
    }
    tokio_uring::Runtime::new(tokio_uring::builder().entries(entries))
        .map_err(UringUnavailable::Ring)
}
