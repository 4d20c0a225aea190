//! Waiting for a state another thread reaches, without timing assumptions.

/// Waits (yielding the thread) until `condition` holds; what it waits for is reached by the
/// ring thread without any timing assumption. Panics, naming `what`, after 50 million tries.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let mut spins = 0u64;
    while !condition() {
        spins += 1;
        assert!(spins < 50_000_000, "never reached: {what}");
        std::thread::yield_now();
    }
}
