//! The progress output of `load`, on stderr only (stdout carries the report or the `--json`
//! object): on a terminal an `indicatif` bar redrawn in place, as `run`'s status line is;
//! otherwise a plain line every [`PLAIN_INTERVAL`]. The bar is registered with
//! [`crate::cli::logs`] while drawn, so log lines go above it. Owns only presentation: the
//! count comes from the publishers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;

use crate::cli::logs::set_live_line;

/// How often the terminal bar is updated.
pub const TERMINAL_REFRESH: Duration = Duration::from_millis(100);

/// How often a plain progress line is printed when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// The plain progress line:
/// `procmond-wal load: progress 45% 45000/100000 events, 123456 events/s`.
pub fn plain_line(count: u64, total: u64, events_per_s: f64) -> String {
    format!(
        "procmond-wal load: progress {}% {count}/{total} events, {events_per_s:.0} events/s",
        percent(count, total)
    )
}

/// Whole percent of `total` done (100 when `total` is 0).
pub fn percent(count: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    // u128: `count * 100` cannot overflow.
    (u128::from(count.min(total)) * 100 / u128::from(total)) as u64
}

/// Progress of one `load` run. Cheap to clone (the bar is shared).
#[derive(Debug, Clone)]
pub struct LoadProgress {
    bar: Option<ProgressBar>,
    total: u64,
}

impl LoadProgress {
    /// A bar on stderr when `terminal`, plain lines otherwise.
    pub fn new(total: u64, terminal: bool) -> LoadProgress {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("[{bar:30}] {percent:>3}%  {msg}")
                .map(|style| style.progress_chars("## "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            set_live_line(Some(&bar));
            bar
        });
        LoadProgress { bar, total }
    }

    /// Prints a line on stderr, above the bar when there is one.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Shows `completed` until `done` fires (or its sender is dropped), then removes the bar.
    pub async fn run(self, completed: Arc<AtomicU64>, mut done: oneshot::Receiver<()>) {
        let started = Instant::now();
        let period = if self.bar.is_some() {
            TERMINAL_REFRESH
        } else {
            PLAIN_INTERVAL
        };
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut done => break,
            }
            let count = completed.load(Relaxed).min(self.total);
            let rate = count as f64 / started.elapsed().as_secs_f64().max(1e-9);
            match &self.bar {
                Some(bar) => {
                    bar.set_position(count);
                    bar.set_message(format!("{rate:>10.0} events/s"));
                }
                None => eprintln!("{}", plain_line(count, self.total, rate)),
            }
        }
        if let Some(bar) = &self.bar {
            set_live_line(None);
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_whole_and_bounded() {
        assert_eq!(percent(0, 200), 0);
        assert_eq!(percent(99, 200), 49);
        assert_eq!(percent(200, 200), 100);
        assert_eq!(percent(300, 200), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
        assert_eq!(percent(5, 0), 100);
    }

    #[test]
    fn the_plain_line_carries_every_figure() {
        let line = plain_line(45_000, 100_000, 123_456.7);
        assert_eq!(
            line,
            "procmond-wal load: progress 45% 45000/100000 events, 123457 events/s"
        );
    }
}
