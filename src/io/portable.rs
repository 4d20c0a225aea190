//! The portable backend: `pwrite` + `fdatasync` through the page cache, run on tokio's
//! blocking pool so the ring thread keeps accepting appends while a sync is in flight.
//! For kernels or containers without io_uring and filesystems that reject O_DIRECT.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AlignedBuf, Backend, BackendKind, Preallocation};

/// The portable backend.
pub struct PortableBackend {
    buffers: Vec<AlignedBuf>,
}

impl PortableBackend {
    /// A backend with `buffer_count` group buffers of `buffer_bytes` each.
    pub fn new(buffer_bytes: usize, buffer_count: usize) -> PortableBackend {
        PortableBackend {
            buffers: (0..buffer_count)
                .map(|_| AlignedBuf::zeroed(buffer_bytes))
                .collect(),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(io::Error::other(format!(
            "blocking I/O task failed: {join}"
        ))),
    }
}

/// Creates a segment file and reserves its space (shared with the io_uring backend's
/// zero-fill path, which needs no ring for this off-hot-path work).
pub fn create_segment_blocking(
    path: &Path,
    len_bytes: u64,
    preallocation: Preallocation,
) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    match preallocation {
        Preallocation::Fallocate => fallocate(&file, len_bytes)?,
        Preallocation::ZeroFill => {
            let zeros = vec![0u8; 1 << 20];
            let mut done = 0u64;
            while done < len_bytes {
                let chunk = (len_bytes - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..chunk], done)?;
                done += chunk as u64;
            }
        }
        Preallocation::None => {}
    }
    file.sync_all()?;
    Ok(file)
}

/// Reserves `[0, len_bytes)` with `fallocate(2)` (mode 0: allocate and extend the size).
pub fn fallocate(file: &File, len_bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    // SAFETY: fallocate only reads its integer arguments; the fd is valid for file's lifetime.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Backend for PortableBackend {
    type File = Arc<File>;
    type Buf = AlignedBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::Portable
    }

    fn take_buffers(&mut self) -> Vec<AlignedBuf> {
        std::mem::take(&mut self.buffers)
    }

    async fn create_segment(
        &self,
        path: &Path,
        len_bytes: u64,
        preallocation: Preallocation,
    ) -> io::Result<Arc<File>> {
        let path = path.to_path_buf();
        blocking(move || create_segment_blocking(&path, len_bytes, preallocation).map(Arc::new))
            .await
    }

    async fn open_segment(&self, path: &Path) -> io::Result<Arc<File>> {
        let path: PathBuf = path.to_path_buf();
        blocking(move || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map(Arc::new)
        })
        .await
    }

    async fn write_at(
        &self,
        file: &Arc<File>,
        buf: AlignedBuf,
        len: usize,
        offset: u64,
    ) -> (io::Result<()>, AlignedBuf) {
        let file = Arc::clone(file);
        let task = tokio::task::spawn_blocking(move || {
            let result = file.write_all_at(&buf[..len], offset);
            (result, buf)
        });
        match task.await {
            Ok(done) => done,
            // The closure cannot panic (slicing is within the checked length), but if the
            // task is lost the buffer is too: give the writer a fresh one with the error.
            Err(join) => (
                Err(io::Error::other(format!(
                    "blocking write task failed: {join}"
                ))),
                AlignedBuf::zeroed(len),
            ),
        }
    }

    async fn sync_data(&self, file: &Arc<File>) -> io::Result<()> {
        let file = Arc::clone(file);
        blocking(move || file.sync_data()).await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = dir.to_path_buf();
        blocking(move || super::sync_dir_blocking(&dir)).await
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        blocking(move || std::fs::remove_file(&path)).await
    }

    async fn rename_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        blocking(move || std::fs::rename(&from, &to)).await
    }
}
