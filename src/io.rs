//! The narrow I/O layer (docs/design.md §2): the only place that makes syscalls on WAL segment
//! files. Two backends implement [`Backend`]: [`uring`] (tokio-uring, O_DIRECT, registered
//! buffers) and [`portable`] (positional writes + `fdatasync` on a blocking thread).
//!
//! Contract: writes are whole blocks at block-aligned offsets from [`AlignedBuf`]-backed
//! buffers; a write or sync future, once started, is always driven to completion (dropping an
//! in-flight io_uring operation does not cancel it, so its bytes may still land).

use std::fmt;
use std::io;
use std::ops::DerefMut;
use std::path::Path;

pub mod aligned;
pub mod portable;
pub mod probe;
pub mod read;
#[cfg(any(test, feature = "testing"))]
pub mod sim;
pub mod uring;

pub use aligned::AlignedBuf;

/// Which backend a log runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// io_uring via tokio-uring, O_DIRECT files, registered buffers.
    Uring,
    /// `pwrite` + `fdatasync` through the page cache.
    Portable,
    /// The fault-injection model of [`sim`] (tests only: the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    Simulated,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Uring => "uring",
            BackendKind::Portable => "portable",
            #[cfg(any(test, feature = "testing"))]
            BackendKind::Simulated => "simulated",
        })
    }
}

/// How a new segment file's space is reserved before records are written to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// `fallocate` the whole segment (extents exist but are marked unwritten).
    #[default]
    Fallocate,
    /// Write zeros over the whole segment and sync (later syncs need no metadata update).
    ZeroFill,
    /// Nothing: the file grows with each write.
    None,
}

/// The operations the WAL writer needs, implemented once per backend.
///
/// All methods run on the ring thread; none may block it for long (the portable backend
/// moves its syscalls to tokio's blocking pool).
#[allow(async_fn_in_trait)] // Single-threaded use: the futures never need to be Send.
pub trait Backend: 'static {
    /// An open segment file.
    type File: 'static;
    /// A group buffer the writer fills and hands to [`Backend::write_at`].
    type Buf: DerefMut<Target = [u8]> + 'static;

    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Takes the group buffers created at start (each `buffer_bytes` long, block-aligned).
    fn take_buffers(&mut self) -> Vec<Self::Buf>;

    /// Creates a new segment file (mode 0600, must not exist), reserves `len_bytes` as
    /// `preallocation` says and makes the file's size and allocation durable.
    async fn create_segment(
        &self,
        path: &Path,
        len_bytes: u64,
        preallocation: Preallocation,
    ) -> io::Result<Self::File>;

    /// Opens an existing segment file for writing.
    async fn open_segment(&self, path: &Path) -> io::Result<Self::File>;

    /// Writes `buf[..len]` at `offset` (both block multiples) and returns the buffer.
    async fn write_at(
        &self,
        file: &Self::File,
        buf: Self::Buf,
        len: usize,
        offset: u64,
    ) -> (io::Result<()>, Self::Buf);

    /// `fdatasync` on the file.
    async fn sync_data(&self, file: &Self::File) -> io::Result<()>;

    /// `fsync` on a directory, making creations and deletions in it durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Removes a file.
    async fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Renames a file within its directory (durable only after [`Backend::sync_dir`]).
    async fn rename_file(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// Opens an existing file read-only for scanning (recovery and replay read through the page
/// cache with ordinary reads, which see O_DIRECT writes once they complete).
pub fn open_for_read(path: &Path) -> io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Writes zeros over `[offset, offset + len)` of a file and `fdatasync`s it; used once at
/// open to cut a torn tail before the writer starts (never on the hot path).
pub fn zero_range_and_sync(path: &Path, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset + done)?;
        done += chunk as u64;
    }
    file.sync_data()
}

/// `fsync` on a directory (synchronous; for open and tools, not the ring thread).
pub fn sync_dir_blocking(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
