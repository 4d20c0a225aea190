//! The io_uring backend: tokio-uring on the ring thread, segment files opened with O_DIRECT,
//! group buffers registered with the kernel (`write_fixed_at`) when the memlock limit allows.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::buf::fixed::{FixedBuf, FixedBufRegistry};
use tokio_uring::fs::{File, OpenOptions};

use super::{AlignedBuf, Backend, BackendKind, Preallocation};

/// A group buffer: registered with the ring when possible, plain aligned memory otherwise.
pub enum UringBuf {
    /// Registered (`IORING_REGISTER_BUFFERS`): the kernel skips page pinning per write.
    Fixed(FixedBuf),
    /// Not registered (registration failed, e.g. RLIMIT_MEMLOCK).
    Plain(AlignedBuf),
}

impl Deref for UringBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            UringBuf::Fixed(buf) => buf,
            UringBuf::Plain(buf) => buf,
        }
    }
}

impl DerefMut for UringBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            UringBuf::Fixed(buf) => buf,
            UringBuf::Plain(buf) => buf,
        }
    }
}

/// The io_uring backend. Must be created and used inside a tokio-uring runtime.
pub struct UringBackend {
    buffers: Vec<UringBuf>,
    registered: bool,
}

impl UringBackend {
    /// Creates the group buffers and tries to register them with the current ring.
    pub fn new(buffer_bytes: usize, buffer_count: usize) -> UringBackend {
        let plain: Vec<AlignedBuf> = (0..buffer_count)
            .map(|_| AlignedBuf::zeroed(buffer_bytes))
            .collect();
        let registry = FixedBufRegistry::new(plain);
        match registry.register() {
            Ok(()) => {
                let buffers = (0..buffer_count)
                    .filter_map(|index| registry.check_out(index).map(UringBuf::Fixed))
                    .collect::<Vec<_>>();
                assert_eq!(
                    buffers.len(),
                    buffer_count,
                    "fresh registry hands out every buffer"
                );
                UringBackend {
                    buffers,
                    registered: true,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "io_uring buffer registration failed; using unregistered buffers");
                UringBackend {
                    buffers: (0..buffer_count)
                        .map(|_| UringBuf::Plain(AlignedBuf::zeroed(buffer_bytes)))
                        .collect(),
                    registered: false,
                }
            }
        }
    }

    /// Whether the group buffers are registered with the ring.
    pub fn registered(&self) -> bool {
        self.registered
    }

    async fn open_direct(path: &Path, create: bool) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).custom_flags(libc::O_DIRECT);
        if create {
            options.create_new(true).mode(0o600);
        }
        options.open(path).await
    }
}

impl Backend for UringBackend {
    type File = File;
    type Buf = UringBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn take_buffers(&mut self) -> Vec<UringBuf> {
        std::mem::take(&mut self.buffers)
    }

    async fn create_segment(
        &self,
        path: &Path,
        len_bytes: u64,
        preallocation: Preallocation,
    ) -> io::Result<File> {
        let file = Self::open_direct(path, true).await?;
        match preallocation {
            Preallocation::Fallocate => file.fallocate(0, len_bytes, 0).await?,
            Preallocation::ZeroFill => {
                let chunk_bytes = (1usize << 20).min(len_bytes as usize).max(4096);
                let mut zeros = AlignedBuf::zeroed(chunk_bytes);
                let mut done = 0u64;
                while done < len_bytes {
                    let len = (len_bytes - done).min(chunk_bytes as u64) as usize;
                    let (result, slice) = file.write_all_at(zeros.slice(..len), done).await;
                    zeros = slice.into_inner();
                    result?;
                    done += len as u64;
                }
            }
            Preallocation::None => {}
        }
        file.sync_all().await?;
        Ok(file)
    }

    async fn open_segment(&self, path: &Path) -> io::Result<File> {
        Self::open_direct(path, false).await
    }

    async fn write_at(
        &self,
        file: &File,
        buf: UringBuf,
        len: usize,
        offset: u64,
    ) -> (io::Result<()>, UringBuf) {
        match buf {
            UringBuf::Fixed(fixed) => {
                let (result, slice) = file.write_fixed_all_at(fixed.slice(..len), offset).await;
                (result, UringBuf::Fixed(slice.into_inner()))
            }
            UringBuf::Plain(plain) => {
                let (result, slice) = file.write_all_at(plain.slice(..len), offset).await;
                (result, UringBuf::Plain(slice.into_inner()))
            }
        }
    }

    async fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data().await
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let handle = File::open(dir).await?;
        let result = handle.sync_all().await;
        let closed = handle.close().await;
        result.and(closed)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        tokio_uring::fs::remove_file(path).await
    }

    async fn rename_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        tokio_uring::fs::rename(from, to).await
    }
}
