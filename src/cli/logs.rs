//! Log output of the command-line tool on stderr, above whichever live line (`run`'s status
//! line, `load`'s progress bar) is drawn at the moment, so log lines and the live line never
//! tear each other. Owns only where log bytes go; the format is `tracing_subscriber`'s.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use indicatif::{ProgressBar, WeakProgressBar};

/// The live line being drawn, if any. Weak, so a line dropped without being unregistered
/// (and its ticker) does not stay alive for it.
static LIVE_LINE: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// The live line log output must go above, if one is drawn.
pub fn live_line() -> Option<ProgressBar> {
    LIVE_LINE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(WeakProgressBar::upgrade)
}

/// Registers the live line being drawn (`None`: none any more).
pub fn set_live_line(bar: Option<&ProgressBar>) {
    *LIVE_LINE.lock().unwrap_or_else(PoisonError::into_inner) = bar.map(ProgressBar::downgrade);
}

/// The log writer for `tracing_subscriber` (`.with_writer(StderrLogs)`): stderr, with the
/// registered live line cleared before each write and redrawn after it. The formatter hands
/// over each log line in one `write` call, so a line is never split.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLogs;

impl Write for StderrLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let write = || {
            let mut err = std::io::stderr().lock();
            err.write_all(buf).and_then(|()| err.flush())
        };
        match live_line() {
            Some(bar) => bar.suspend(write)?,
            None => write()?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLogs {
    type Writer = StderrLogs;

    fn make_writer(&'a self) -> Self::Writer {
        StderrLogs
    }
}

/// Serialises the tests that register live lines (the slot is process-wide).
#[cfg(test)]
pub static LIVE_LINE_TESTS: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_registered_line_still_alive_is_returned() {
        let _serial = LIVE_LINE_TESTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set_live_line(None);
        assert!(live_line().is_none());
        let bar = ProgressBar::hidden();
        set_live_line(Some(&bar));
        assert!(live_line().is_some());
        // A log line while the line is registered goes through it.
        assert_eq!(StderrLogs.write(b"a log line\n").ok(), Some(11));
        set_live_line(None);
        assert!(live_line().is_none());
        // A line dropped while registered is not kept alive by the registration.
        let dropped = ProgressBar::hidden();
        set_live_line(Some(&dropped));
        drop(dropped);
        assert!(live_line().is_none());
        set_live_line(None);
    }
}
