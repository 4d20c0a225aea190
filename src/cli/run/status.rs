//! The live status of `run`: one line with durable, delivered, acknowledged, buffer
//! occupancy, backpressure, link state and events/s.
//!
//! On a terminal (stderr) it is an `indicatif` spinner line redrawn in place, and event lines
//! printed meanwhile go above it; otherwise it is a plain log line on stderr every few
//! seconds. The live line is registered with [`crate::cli::logs`], so log output goes above
//! it instead of through it. Owns only presentation: the figures come from the caller.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use procmond_wal::event_bus_connector::LinkState;

use crate::cli::logs::set_live_line;

/// How often the terminal line is redrawn.
pub const TERMINAL_REFRESH: Duration = Duration::from_millis(250);

/// How often a plain status line is logged when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// One status sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusSample {
    /// Events of this run made durable.
    pub durable: u64,
    /// Events of this run received by the embedded subscriber (`None`: external broker).
    pub delivered: Option<u64>,
    /// Events of this run acknowledged by the broker.
    pub acknowledged: u64,
    /// Publish buffer occupancy in percent of its limit.
    pub buffer_percent: u8,
    /// Whether backpressure is active.
    pub backpressure: bool,
    /// Where the broker link is.
    pub link: LinkState,
    /// Events made durable per second over the last sample interval.
    pub events_per_s: f64,
}

/// A short name for a link state.
pub fn link_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Idle => "idle",
        LinkState::Connecting => "connecting",
        LinkState::AwaitingWelcome => "awaiting-welcome",
        LinkState::Connected => "connected",
        LinkState::ConnectedLegacy => "connected-legacy",
        LinkState::Backoff => "backoff",
        LinkState::Stopped => "stopped",
        _ => "unknown",
    }
}

/// The line shown on a terminal.
pub fn terminal_line(sample: &StatusSample) -> String {
    format!(
        "durable {} · delivered {} · acked {} · buffer {}% · backpressure {} · link {} · {:.0} ev/s",
        sample.durable,
        sample
            .delivered
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        sample.acknowledged,
        sample.buffer_percent,
        if sample.backpressure { "ON" } else { "off" },
        link_name(sample.link),
        sample.events_per_s
    )
}

/// The key=value line logged when not on a terminal.
pub fn plain_line(sample: &StatusSample) -> String {
    format!(
        "status durable={} delivered={} acknowledged={} buffer_percent={} backpressure={} link={} events_per_s={:.0}",
        sample.durable,
        sample
            .delivered
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        sample.acknowledged,
        sample.buffer_percent,
        sample.backpressure,
        link_name(sample.link),
        sample.events_per_s
    )
}

/// Shows status samples and prints event lines without tearing the status line.
#[derive(Debug, Clone)]
pub struct Console {
    bar: Option<ProgressBar>,
}

impl Console {
    /// A console drawing a live line on stderr when `terminal`, plain lines otherwise.
    pub fn new(terminal: bool) -> Console {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(TERMINAL_REFRESH);
            set_live_line(Some(&bar));
            bar
        });
        Console { bar }
    }

    /// Whether the live line is drawn.
    pub fn is_terminal(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows a sample: redraws the live line, or logs a plain line.
    pub fn show(&self, sample: &StatusSample) {
        match &self.bar {
            Some(bar) => bar.set_message(terminal_line(sample)),
            None => eprintln!("procmond-wal run: {}", plain_line(sample)),
        }
    }

    /// Prints one line on stdout (above the live line on a terminal). Returns false once
    /// stdout is gone (a closed pipe), so the caller can stop printing.
    pub fn print_stdout(&self, line: &str) -> bool {
        let write = || {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Prints one line on stderr (above the live line on a terminal).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the live line; log output goes straight to stderr again.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            set_live_line(None);
            bar.finish_and_clear();
        }
    }
}

/// Turns successive durable counts into events/s.
#[derive(Debug)]
pub struct RateMeter {
    last_count: u64,
    last_at: Instant,
}

impl RateMeter {
    /// A meter starting at zero now.
    pub fn new(now: Instant) -> RateMeter {
        RateMeter {
            last_count: 0,
            last_at: now,
        }
    }

    /// Events per second since the previous call.
    pub fn sample(&mut self, count: u64, now: Instant) -> f64 {
        let seconds = now.duration_since(self.last_at).as_secs_f64();
        let rate = if seconds > 0.0 {
            count.saturating_sub(self.last_count) as f64 / seconds
        } else {
            0.0
        };
        self.last_count = count;
        self.last_at = now;
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::logs::live_line;

    fn sample() -> StatusSample {
        StatusSample {
            durable: 10,
            delivered: Some(9),
            acknowledged: 8,
            buffer_percent: 71,
            backpressure: true,
            link: LinkState::Connected,
            events_per_s: 123.4,
        }
    }

    #[test]
    fn lines_carry_every_figure() {
        let line = terminal_line(&sample());
        for part in [
            "durable 10",
            "delivered 9",
            "acked 8",
            "buffer 71%",
            "backpressure ON",
            "link connected",
            "123 ev/s",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
        let plain = plain_line(&StatusSample {
            delivered: None,
            backpressure: false,
            link: LinkState::Backoff,
            ..sample()
        });
        assert!(plain.contains("delivered=- "), "{plain}");
        assert!(plain.contains("backpressure=false link=backoff"), "{plain}");
    }

    #[test]
    fn a_terminal_console_registers_its_line_until_finished() {
        let _serial = crate::cli::logs::LIVE_LINE_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set_live_line(None);
        let plain = Console::new(false);
        assert!(live_line().is_none());
        plain.finish();
        let console = Console::new(true);
        assert!(live_line().is_some());
        console.finish();
        assert!(live_line().is_none());
        // Dropped without `finish` (an early return): the registration does not keep it.
        drop(Console::new(true));
        assert!(live_line().is_none());
    }

    #[test]
    fn the_rate_is_the_difference_over_the_interval() {
        let start = Instant::now();
        let mut meter = RateMeter::new(start);
        assert_eq!(
            meter.sample(500, start + Duration::from_millis(500)),
            1000.0
        );
        assert_eq!(meter.sample(500, start + Duration::from_secs(1)), 0.0);
        assert_eq!(meter.sample(600, start + Duration::from_secs(1)), 0.0);
    }
}
