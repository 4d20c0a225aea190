//! Reading segment files for recovery, `verify` and replay: positional reads that bypass the
//! page cache (O_DIRECT) where the filesystem allows it, and a resilient chunk read that
//! survives unreadable blocks by falling back to one block at a time.
//!
//! Owns only reading. It must never write, and never decide what bytes mean: unreadable
//! blocks are handed back as byte ranges (filled with zeros in the caller's buffer) for the
//! scanner to report as damage.
//!
//! Why O_DIRECT: after a failed `fdatasync` the kernel may keep the written pages in its cache
//! (marked clean) although the device never stored them. A buffered read in the same boot
//! would then see data that is not on the device. Reading with O_DIRECT asks the device.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::AlignedBuf;

/// The unit of O_DIRECT reads and of the block-by-block fallback.
pub const READ_BLOCK_BYTES: usize = 4096;

/// Positional reads from one segment file. Implemented by [`SegmentFile`] and, in tests, by
/// sources that inject read errors.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` at or past the end of the file.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The file's size in bytes.
    fn len_bytes(&mut self) -> io::Result<u64>;
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn len_bytes(&mut self) -> io::Result<u64> {
        (**self).len_bytes()
    }
}

impl ReadAt for &[u8] {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }

    fn len_bytes(&mut self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// Opens segment files for reading; the one place recovery and replay get their bytes from,
/// so tests can substitute failing sources.
pub trait SegmentOpener {
    /// Opens `path` for reading.
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn ReadAt + Send>>;
}

/// The real filesystem, through [`SegmentFile`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OsOpener;

impl SegmentOpener for OsOpener {
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn ReadAt + Send>> {
        Ok(Box::new(SegmentFile::open(path)?))
    }
}

/// The real filesystem through the page cache ([`SegmentFile::open_buffered`]): for replay,
/// which reads only what was already synced (the cache then holds what the device holds) and
/// gains from the cache's read-ahead and from data still cached after it was written.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedOpener;

impl SegmentOpener for BufferedOpener {
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn ReadAt + Send>> {
        Ok(Box::new(SegmentFile::open_buffered(path)?))
    }
}

/// A segment file opened for reading: O_DIRECT where the filesystem accepts it (reads go to
/// the device, not the page cache), buffered reads otherwise.
pub struct SegmentFile {
    file: File,
    direct: bool,
    /// Block-aligned bounce buffer for O_DIRECT reads (allocated on first use, kept).
    bounce: Option<AlignedBuf>,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl SegmentFile {
    /// Opens `path` read-only, with O_DIRECT if the filesystem accepts it.
    pub fn open(path: &Path) -> io::Result<SegmentFile> {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => Ok(SegmentFile {
                file,
                direct: true,
                bounce: None,
                path: path.to_path_buf(),
            }),
            // EINVAL: the filesystem does not do O_DIRECT. Anything else (not found, no
            // permission) is the same for a buffered open, which reports it.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Self::open_buffered(path),
            Err(error) => Err(error),
        }
    }

    /// Opens `path` read-only through the page cache.
    pub fn open_buffered(path: &Path) -> io::Result<SegmentFile> {
        Ok(SegmentFile {
            file: File::open(path)?,
            direct: false,
            bounce: None,
            path: path.to_path_buf(),
        })
    }

    /// Whether reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn read_direct(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let aligned = offset.is_multiple_of(READ_BLOCK_BYTES as u64)
            && buf.len().is_multiple_of(READ_BLOCK_BYTES)
            && (buf.as_ptr() as usize).is_multiple_of(READ_BLOCK_BYTES);
        if aligned {
            // The caller's buffer is usable as is (the scan keeps it so): no bounce copy.
            return read_blocks(&self.file, buf, offset);
        }
        let block = READ_BLOCK_BYTES as u64;
        let start = offset / block * block;
        let skip = (offset - start) as usize;
        let span = (skip + buf.len()).div_ceil(READ_BLOCK_BYTES) * READ_BLOCK_BYTES;
        if self
            .bounce
            .as_ref()
            .is_none_or(|bounce| bounce.len() < span)
        {
            self.bounce = Some(AlignedBuf::zeroed(span));
        }
        let Some(bounce) = self.bounce.as_mut() else {
            unreachable!("allocated above");
        };
        let filled = read_blocks(&self.file, &mut bounce[..span], start)?;
        let available = filled.saturating_sub(skip).min(buf.len());
        buf[..available].copy_from_slice(&bounce[skip..skip + available]);
        Ok(available)
    }
}

/// Fills `buf` (block-aligned in memory, offset and length) with O_DIRECT reads at `offset`,
/// as far as the file goes; returns the bytes read.
fn read_blocks(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                // A short read that is not block-aligned is the end of the file.
                if n % READ_BLOCK_BYTES != 0 {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

impl ReadAt for SegmentFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.direct {
            match self.read_direct(buf, offset) {
                // Some filesystems accept the O_DIRECT open but refuse the read itself.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(path = %self.path.display(), "O_DIRECT read refused; reading through the page cache");
                    self.file = File::open(&self.path)?;
                    self.direct = false;
                    self.bounce = None;
                }
                other => return other,
            }
        }
        loop {
            match self.file.read_at(buf, offset) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn len_bytes(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// What [`read_resilient`] got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkRead {
    /// Bytes now valid in the buffer (read, or zero-filled for unreadable blocks), from its
    /// start; less than its length only at the end of the file.
    pub bytes: usize,
    /// Unreadable ranges `(offset, len_bytes)` in file offsets, zero-filled in the buffer.
    pub unreadable: Vec<(u64, u64)>,
}

/// Fills `buf` from `offset` as far as the file goes. A read error does not end the read: the
/// range is retried one [`READ_BLOCK_BYTES`] block at a time, and each block that still fails
/// is zero-filled and listed as unreadable. Only a failure to learn the file's size is an
/// error.
pub fn read_resilient(
    source: &mut dyn ReadAt,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<ChunkRead> {
    let mut result = ChunkRead::default();
    // After the first error the rest of the buffer is read one block at a time, so a bad
    // block costs one failed read, not one per retried chunk.
    let mut file_len: Option<u64> = None;
    while result.bytes < buf.len() {
        let position = offset + result.bytes as u64;
        if file_len.is_none() {
            match source.read_at(&mut buf[result.bytes..], position) {
                Ok(0) => break,
                Ok(n) => result.bytes += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(offset = position, %error, "WAL segment read failed; reading block by block");
                    file_len = Some(source.len_bytes()?);
                }
            }
            continue;
        }
        let len = file_len.unwrap_or(0);
        if position >= len {
            break;
        }
        let block = READ_BLOCK_BYTES as u64;
        let block_end = (position / block + 1) * block;
        let want = (block_end.min(len) - position).min((buf.len() - result.bytes) as u64) as usize;
        let chunk = &mut buf[result.bytes..result.bytes + want];
        match read_fully(source, chunk, position) {
            Ok(n) if n == want => {}
            Ok(n) => {
                // The file shrank under us: what is there is all there is.
                result.bytes += n;
                break;
            }
            Err(error) => {
                chunk.fill(0);
                tracing::warn!(
                    offset = position,
                    len_bytes = want,
                    %error,
                    "unreadable block in a WAL segment"
                );
                match result.unreadable.last_mut() {
                    Some((start, len)) if *start + *len == position => *len += want as u64,
                    _ => result.unreadable.push((position, want as u64)),
                }
            }
        }
        result.bytes += want;
    }
    Ok(result)
}

/// Reads exactly `buf.len()` bytes unless the file ends first; errors are returned.
pub fn read_fully(source: &mut dyn ReadAt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes with some blocks that fail every read touching them.
    struct Failing {
        bytes: Vec<u8>,
        bad_blocks: Vec<u64>,
    }

    impl ReadAt for Failing {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let end = offset + buf.len() as u64;
            let block = READ_BLOCK_BYTES as u64;
            if self
                .bad_blocks
                .iter()
                .any(|&b| b * block < end && (b + 1) * block > offset)
            {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let mut slice = &self.bytes[..];
            slice.read_at(buf, offset)
        }

        fn len_bytes(&mut self) -> io::Result<u64> {
            Ok(self.bytes.len() as u64)
        }
    }

    #[test]
    fn unreadable_blocks_are_zero_filled_and_listed() {
        let bytes: Vec<u8> = (0..5 * READ_BLOCK_BYTES + 100)
            .map(|i| (i % 251) as u8 + 1)
            .collect();
        let mut source = Failing {
            bytes: bytes.clone(),
            bad_blocks: vec![1, 2, 5],
        };
        let mut buf = vec![0xaau8; bytes.len() + 500];
        let got = read_resilient(&mut source, &mut buf, 0).unwrap();
        assert_eq!(got.bytes, bytes.len());
        let block = READ_BLOCK_BYTES as u64;
        assert_eq!(got.unreadable, vec![(block, 2 * block), (5 * block, 100)]);
        assert_eq!(&buf[..READ_BLOCK_BYTES], &bytes[..READ_BLOCK_BYTES]);
        assert!(
            buf[READ_BLOCK_BYTES..3 * READ_BLOCK_BYTES]
                .iter()
                .all(|&b| b == 0)
        );
        assert_eq!(
            &buf[3 * READ_BLOCK_BYTES..5 * READ_BLOCK_BYTES],
            &bytes[3 * READ_BLOCK_BYTES..5 * READ_BLOCK_BYTES]
        );
        // From an unaligned offset too.
        let mut buf = vec![0u8; 3000];
        let got = read_resilient(&mut source, &mut buf, block - 1000).unwrap();
        assert_eq!(got.bytes, 3000);
        assert_eq!(got.unreadable, vec![(block, 2000)]);
        assert_eq!(&buf[..1000], &bytes[3096..4096]);
    }

    #[test]
    fn direct_and_buffered_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let bytes: Vec<u8> = (0..3 * READ_BLOCK_BYTES + 777)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut direct = SegmentFile::open(&path).unwrap();
        let mut buffered = SegmentFile::open_buffered(&path).unwrap();
        assert!(!buffered.is_direct());
        for (offset, len) in [(0, 10), (5, 5000), (4096, 4096), (12000, 5000), (20000, 10)] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let na = read_fully(&mut direct, &mut a, offset).unwrap();
            let nb = read_fully(&mut buffered, &mut b, offset).unwrap();
            assert_eq!((na, &a[..na]), (nb, &b[..nb]), "offset {offset} len {len}");
        }
        assert_eq!(direct.len_bytes().unwrap(), bytes.len() as u64);
    }
}
