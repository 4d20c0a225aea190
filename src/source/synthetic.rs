//! The synthetic event source: generated process events at a chosen rate and size, for load
//! through the whole pipeline.
//!
//! - [`generator`]: the deterministic event stream (pure; seed + times → events).
//! - [`pacing`]: the rate (pure; elapsed time → events due).
//! - [`rng`]: the seeded pseudo-random generator.
//!
//! [`SyntheticSource`] adds the only async part: waiting (`tokio::time`) until the next
//! events are due. Every generated event carries `synthetic` metadata (the seed) so it can
//! never be taken for a real observation.

pub mod generator;
pub mod pacing;
pub mod rng;

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Instant;

use chrono::Utc;

pub use generator::{Generator, MAX_EVENT_BYTES, record_bytes};
pub use pacing::Pacer;

use crate::event::{EventKind, ProcessEvent};
use crate::source::error::SourceError;

/// How fast events are generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// This many events per second on average.
    EventsPerSecond(NonZeroU64),
    /// As fast as the consumer takes them.
    Max,
}

impl FromStr for Rate {
    type Err = SourceError;

    /// `max`, or a positive number of events per second.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        text.parse::<NonZeroU64>()
            .map(Rate::EventsPerSecond)
            .map_err(|_| SourceError::InvalidConfig {
                field: "events_per_s",
                requirement: "`max` or a whole number of events per second from 1",
            })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::EventsPerSecond(rate) => write!(f, "{rate}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// How the synthetic source runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticConfig {
    /// Determines every event's content.
    pub seed: u64,
    /// Events per second, or max.
    pub rate: Rate,
    /// Target WAL record size of each event in bytes (see [`record_bytes`]); at most
    /// [`MAX_EVENT_BYTES`]. Targets below the natural size (at most 256 bytes for
    /// seeds under 10 000) give the natural size.
    pub event_bytes: u64,
    /// Most events in one batch (and the most a slow consumer can fall behind the rate).
    pub max_batch_events: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            rate: Rate::Max,
            event_bytes: 256,
            max_batch_events: 256,
        }
    }
}

// The source moves into a task of a multi-threaded runtime: it must stay `Send`.
const _: fn() = || {
    fn must_be_send<T: Send + 'static>() {}
    must_be_send::<SyntheticSource>();
};

/// Generated events, paced.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    generator: Generator,
    pacer: Pacer,
    started: Option<Instant>,
}

impl SyntheticSource {
    /// A source for `config` (validated here).
    pub fn new(config: &SyntheticConfig) -> Result<Self, SourceError> {
        if config.max_batch_events == 0 {
            return Err(SourceError::InvalidConfig {
                field: "max_batch_events",
                requirement: "at least 1",
            });
        }
        let events_per_s = match config.rate {
            Rate::EventsPerSecond(rate) => Some(rate),
            Rate::Max => None,
        };
        Ok(SyntheticSource {
            generator: Generator::new(config.seed, config.event_bytes)?,
            pacer: Pacer::new(events_per_s, config.max_batch_events),
            started: None,
        })
    }

    /// Events generated so far.
    pub fn generated(&self) -> u64 {
        self.generator.generated()
    }

    /// Rate slots skipped because the consumer fell more than a batch behind (the rate was
    /// not reached by that many events; none was generated and lost).
    pub fn forgiven(&self) -> u64 {
        self.pacer.forgiven()
    }

    /// Waits until at least one event is due and returns the due events (at most one
    /// batch), all stamped with the current time. The clock starts at the first call.
    ///
    /// Cancel-safe: events are taken and generated only after the last await, so dropping
    /// the future (e.g. in `tokio::select!`) loses and skips nothing. Needs a tokio runtime
    /// with the time driver when a rate is set.
    pub async fn next_batch(&mut self) -> Vec<(ProcessEvent, EventKind)> {
        let started = *self.started.get_or_insert_with(Instant::now);
        loop {
            let wait = self.pacer.wait(started.elapsed());
            if wait.is_zero() {
                // Unpaced or due: still give other tasks on this runtime a turn.
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(wait).await;
            }
            let due = self.pacer.take(started.elapsed());
            if due > 0 {
                let now = Utc::now();
                return (0..due).map(|_| self.generator.next_event(now)).collect();
            }
        }
    }
}
