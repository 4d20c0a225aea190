//! Block-aligned, zero-initialised heap buffers for O_DIRECT I/O.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every buffer: the O_DIRECT block size.
pub const BUFFER_ALIGN_BYTES: usize = 4096;

/// A heap buffer whose start is 4096-aligned and whose bytes are always initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation (like Vec<u8>); moving it to another thread
// moves that ownership, and shared references only allow reads.
unsafe impl Send for AlignedBuf {}
// SAFETY: &AlignedBuf only hands out &[u8]; there is no interior mutability.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, rounded up to a multiple of the alignment (at least one
    /// block).
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(BUFFER_ALIGN_BYTES) * BUFFER_ALIGN_BYTES;
        let layout = Self::layout(len);
        // SAFETY: layout has a non-zero size (at least one block).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, BUFFER_ALIGN_BYTES) {
            Ok(layout) => layout,
            Err(_) => panic!("buffer of {len} bytes cannot be laid out"),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to len initialised bytes owned by self for self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: the pointer is stable for the buffer's lifetime (heap allocation never moved), and
// all len bytes are initialised (zeroed at allocation).
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as for IoBuf; every byte is always initialised, so set_init has nothing to record.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_zeroed_and_rounded_up() {
        let mut buf = AlignedBuf::zeroed(5000);
        assert_eq!(buf.len(), 8192);
        assert_eq!(buf.as_ptr() as usize % BUFFER_ALIGN_BYTES, 0);
        assert!(buf.iter().all(|&b| b == 0));
        buf[8191] = 1;
        assert_eq!(buf[8191], 1);
    }
}
