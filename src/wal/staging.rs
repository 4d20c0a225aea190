//! Buffers that carry encoded events from a caller's thread to the ring thread, reused
//! instead of allocated and freed per event.
//!
//! A caller encodes into a buffer taken from its thread's small cache (refilled in batches
//! from a process-wide pool); the ring thread, once it has copied the bytes into a group,
//! hands the buffers of the whole group back to the pool in one go. An append therefore
//! neither allocates nor frees in the steady state, and the ring thread never frees memory
//! another thread allocated (such frees contend on the allocator's per-thread arena locks,
//! which is what per-event `Vec`s cost before). Reference-counted slices of a shared chunk
//! were measured too: the count's cache line, touched by both threads for every event, cost
//! the ring thread more than the frees did.
//!
//! Must never: hand out a buffer that still holds another event's bytes (buffers are cleared
//! before they are pooled), or grow without bound (the pool is capped in bytes, each thread's
//! cache in buffers, and buffers grown large by a big event are freed instead of kept).

use std::cell::RefCell;
use std::sync::Mutex;

use super::format::{self, EncodeError};
use crate::event::ProcessEvent;

/// Buffers a thread takes from the pool at a time.
const BATCH_BUFFERS: usize = 64;
/// Most bytes (of buffer capacity) the pool keeps; more buffers are freed. 16 MiB holds a
/// full group's worth of small events many times over.
const POOL_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Buffers larger than this are freed rather than reused, so one large event does not pin
/// its memory in the pool.
const REUSE_MAX_BYTES: usize = 16 * 1024;

/// Empty buffers ready for reuse, shared by every thread of the process.
static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffers: Vec::new(),
    bytes: 0,
});

/// The pool's buffers and their total capacity.
struct Pool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    /// This thread's buffers taken from the pool and not used yet.
    static CACHE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `event` (already truncated to the limits) into a reused buffer.
pub(crate) fn encode_event(event: &ProcessEvent) -> Result<Vec<u8>, EncodeError> {
    let mut buffer = take_buffer();
    format::encode_event_into(event, &mut buffer)?;
    Ok(buffer)
}

/// An empty buffer: from this thread's cache, refilled from the pool, or new.
fn take_buffer() -> Vec<u8> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.is_empty() {
            // A poisoned pool only means another thread panicked while holding the lock;
            // the buffers in it are still just empty buffers.
            let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let take = pool.buffers.len().min(BATCH_BUFFERS);
            let from = pool.buffers.len() - take;
            let taken: usize = pool.buffers[from..].iter().map(Vec::capacity).sum();
            pool.bytes -= taken;
            cache.extend(pool.buffers.drain(from..));
        }
        cache.pop().unwrap_or_default()
    })
}

/// Returns used buffers (cleared here) to the pool; empties `spent`. Called by the ring
/// thread once per group.
pub(crate) fn recycle(spent: &mut Vec<Vec<u8>>) {
    if spent.is_empty() {
        return;
    }
    spent.retain(|buffer| buffer.capacity() <= REUSE_MAX_BYTES);
    for buffer in spent.iter_mut() {
        buffer.clear();
    }
    let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    while let Some(buffer) = spent.pop() {
        if pool.bytes + buffer.capacity() > POOL_MAX_BYTES {
            spent.push(buffer);
            break;
        }
        pool.bytes += buffer.capacity();
        pool.buffers.push(buffer);
    }
    drop(pool);
    // Beyond the cap: freed (outside the lock).
    spent.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn event(pid: u32, argv_bytes: usize) -> ProcessEvent {
        let mut event = ProcessEvent::new(pid, "worker", DateTime::from_timestamp_nanos(7));
        event.command_line = vec!["/bin/worker".into(), "y".repeat(argv_bytes)];
        event
    }

    #[test]
    fn reused_buffers_hold_exactly_the_new_encoding() {
        // A large event first, so a reused buffer would show its leftovers if not cleared.
        let large = event(1, 8000);
        let mut spent = vec![encode_event(&large).unwrap()];
        recycle(&mut spent);
        assert!(spent.is_empty());
        for pid in 0..3 * BATCH_BUFFERS as u32 {
            let small = event(pid, 20);
            let bytes = encode_event(&small).unwrap();
            assert_eq!(bytes, format::encode_event(&small).unwrap());
            spent.push(bytes);
        }
        recycle(&mut spent);
        let again = event(9, 30);
        assert_eq!(
            encode_event(&again).unwrap(),
            format::encode_event(&again).unwrap()
        );
    }

    #[test]
    fn large_buffers_are_not_kept() {
        let mut spent = vec![
            Vec::with_capacity(REUSE_MAX_BYTES + 1),
            Vec::with_capacity(8),
        ];
        recycle(&mut spent);
        assert!(spent.is_empty());
        let pool = POOL.lock().unwrap();
        assert!(
            pool.buffers
                .iter()
                .all(|buffer| buffer.capacity() <= REUSE_MAX_BYTES)
        );
        assert!(pool.buffers.iter().all(Vec::is_empty));
        assert_eq!(
            pool.bytes,
            pool.buffers.iter().map(Vec::capacity).sum::<usize>()
        );
        assert!(pool.bytes <= POOL_MAX_BYTES);
    }

    #[test]
    fn an_oversized_event_is_an_error() {
        let huge = event(1, format::MAX_PAYLOAD_BYTES);
        assert!(matches!(
            encode_event(&huge),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
