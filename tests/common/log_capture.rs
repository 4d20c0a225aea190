//! Capturing what the library logs at WARN and above, for tests that check the wording an
//! operator sees. A test binary using this should hold only such tests: `tracing` caches each
//! call site's interest process-wide, so a test on another thread that reaches the call site
//! with no subscriber installed can race the scoped subscriber installed here.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// A `tracing` writer that keeps what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Runs `work` with a WARN-level subscriber installed on this thread and returns its result
/// with everything logged meanwhile, one event per line, without colours.
pub fn warnings_during<R>(work: impl FnOnce() -> R) -> (R, String) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, work);
    let bytes = captured
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (result, String::from_utf8_lossy(&bytes).into_owned())
}
