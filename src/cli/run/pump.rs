//! Moves events from the chosen source into the connector until told to stop, and turns
//! the connector's backpressure signals into a slower /proc poll.
//!
//! Owns the source loop and its counters. Sources only produce; the connector makes events
//! durable and delivers them. A publish error is counted and reported, never retried here
//! (the event was not made durable; the WAL's error says why); errors after which nothing
//! can be accepted any more (shut down, log poisoned) end the loop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use procmond_wal::event_bus_connector::{BackpressureSignal, EventBusConnectorError};
use procmond_wal::source::proc::ProcPoller;
use procmond_wal::source::synthetic::SyntheticSource;
use procmond_wal::wal::WalError;
use procmond_wal::{EventBusConnector, EventKind, ProcessEvent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::status::Console;
use super::summary::ProcFigures;

/// Synthetic batches being made durable at once: enough to keep group commits full,
/// few enough to bound the memory they hold.
const SYNTHETIC_BATCHES_IN_FLIGHT: usize = 4;

/// A ready source.
#[derive(Debug)]
pub enum Source {
    /// This host's processes.
    Proc(Box<ProcPoller>),
    /// Generated events.
    Synthetic(Box<SyntheticSource>),
}

/// What the loop counted, shared with the status line and the summary.
#[derive(Debug, Default)]
pub struct PumpCounters {
    /// Events the source produced.
    pub observed: AtomicU64,
    /// Publishes that returned an error.
    pub failed: AtomicU64,
    /// Backpressure activations received.
    pub activations: AtomicU64,
    /// The first publish error.
    pub first_error: Mutex<Option<String>>,
    /// The /proc source's figures.
    pub proc: Mutex<Option<ProcFigures>>,
}

impl PumpCounters {
    fn record_failure(&self, events: u64, error: &EventBusConnectorError, console: &Console) {
        let failed = events.saturating_sub(durable_prefix_events(error));
        let first = self.failed.fetch_add(failed, Relaxed) == 0;
        if first && let Ok(mut slot) = self.first_error.lock() {
            *slot = Some(error.to_string());
        }
        if first {
            console.note(&format!(
                "procmond-wal run: events could not be made durable: {error}"
            ));
        }
    }

    /// The first publish error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|slot| slot.clone())
    }

    /// The /proc figures, if the source is /proc.
    pub fn proc_figures(&self) -> Option<ProcFigures> {
        self.proc.lock().ok().and_then(|slot| *slot)
    }
}

/// How many events of a failed batch became durable all the same (the connector delivers
/// them; they are not failures).
fn durable_prefix_events(error: &EventBusConnectorError) -> u64 {
    match error {
        EventBusConnectorError::Wal(wal) => wal
            .durable_batch_prefix()
            .map_or(0, |range| range.end() - range.start() + 1),
        _ => 0,
    }
}

/// Whether nothing can be published after this error.
fn is_final(error: &EventBusConnectorError) -> bool {
    matches!(
        error,
        EventBusConnectorError::ShutDown
            | EventBusConnectorError::Wal(WalError::Poisoned { .. } | WalError::Closed)
    )
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// Told to stop.
    Stopped,
    /// The connector can accept nothing more.
    Failed,
}

/// Runs the source into the connector until `stop` turns true (or its sender is dropped).
pub async fn pump(
    source: Source,
    connector: EventBusConnector,
    backpressure: mpsc::Receiver<BackpressureSignal>,
    stop: watch::Receiver<bool>,
    counters: Arc<PumpCounters>,
    console: Console,
) -> PumpEnd {
    match source {
        Source::Proc(poller) => {
            pump_proc(*poller, connector, backpressure, stop, counters, console).await
        }
        Source::Synthetic(source) => {
            pump_synthetic(*source, connector, backpressure, stop, counters, console).await
        }
    }
}

async fn pump_proc(
    mut poller: ProcPoller,
    connector: EventBusConnector,
    mut backpressure: mpsc::Receiver<BackpressureSignal>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<PumpCounters>,
    console: Console,
) -> PumpEnd {
    let mut figures = ProcFigures::default();
    loop {
        tokio::select! {
            biased;
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => return PumpEnd::Stopped,
            Some(signal) = backpressure.recv() => {
                let active = matches!(signal, BackpressureSignal::Activated);
                if active {
                    counters.activations.fetch_add(1, Relaxed);
                }
                poller.slow_down(active);
            }
            batch = poller.next_batch() => {
                let slowed = poller.schedule().is_slowed();
                let batch = match batch {
                    Ok(batch) => Some(batch),
                    Err(error) => {
                        // One failed poll is not the end: the next one may succeed.
                        console.note(&format!("procmond-wal run: /proc poll failed: {error}"));
                        None
                    }
                };
                let stats = poller.stats();
                figures = ProcFigures {
                    polls: stats.polls,
                    failed_polls: stats.failed_polls,
                    starts: stats.starts,
                    stops: stats.stops,
                    modifies: stats.modifies,
                    skipped_entries: stats.read.skipped(),
                    partial_entries: stats.read.partial,
                    processes_tracked: stats.processes_tracked,
                    slowed_polls: figures.slowed_polls + u64::from(slowed && batch.is_some()),
                };
                if let Ok(mut slot) = counters.proc.lock() {
                    *slot = Some(figures);
                }
                let Some(batch) = batch else { continue };
                if batch.events.is_empty() {
                    continue;
                }
                let events = batch.events.len() as u64;
                counters.observed.fetch_add(events, Relaxed);
                // In poll order (a reused pid's stop before its start), one batch at a time.
                if let Err(error) = connector.publish_batch(batch.events).await {
                    counters.record_failure(events, &error, &console);
                    if is_final(&error) {
                        return PumpEnd::Failed;
                    }
                }
            }
        }
    }
}

async fn pump_synthetic(
    mut source: SyntheticSource,
    connector: EventBusConnector,
    mut backpressure: mpsc::Receiver<BackpressureSignal>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<PumpCounters>,
    console: Console,
) -> PumpEnd {
    let mut in_flight: JoinSet<(u64, Result<Vec<u64>, EventBusConnectorError>)> = JoinSet::new();
    let mut end = PumpEnd::Stopped;
    loop {
        tokio::select! {
            biased;
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => break,
            Some(signal) = backpressure.recv() => {
                // The synthetic source is a load generator: it keeps its rate, so the
                // buffer fills and spills to the WAL as it would under a real burst.
                if matches!(signal, BackpressureSignal::Activated) {
                    counters.activations.fetch_add(1, Relaxed);
                }
            }
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                if !settle(joined, &counters, &console) {
                    end = PumpEnd::Failed;
                    break;
                }
            }
            batch = source.next_batch(), if in_flight.len() < SYNTHETIC_BATCHES_IN_FLIGHT => {
                let events = batch.len() as u64;
                counters.observed.fetch_add(events, Relaxed);
                let connector = connector.clone();
                in_flight.spawn(publish(connector, batch, events));
            }
        }
    }
    // Accepted batches finish (they are durable or failed) before the connector shuts down.
    while let Some(joined) = in_flight.join_next().await {
        settle(joined, &counters, &console);
    }
    end
}

async fn publish(
    connector: EventBusConnector,
    batch: Vec<(ProcessEvent, EventKind)>,
    events: u64,
) -> (u64, Result<Vec<u64>, EventBusConnectorError>) {
    (events, connector.publish_batch(batch).await)
}

/// Records a finished batch; false if nothing more can be published.
fn settle(
    joined: Result<(u64, Result<Vec<u64>, EventBusConnectorError>), tokio::task::JoinError>,
    counters: &PumpCounters,
    console: &Console,
) -> bool {
    match joined {
        Ok((_, Ok(_))) => true,
        Ok((events, Err(error))) => {
            counters.record_failure(events, &error, console);
            !is_final(&error)
        }
        Err(error) => {
            console.note(&format!(
                "procmond-wal run: publishing task failed: {error}"
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procmond_wal::wal::WalError;

    #[test]
    fn the_durable_prefix_of_a_failed_batch_is_not_counted_as_failed() {
        let partly = EventBusConnectorError::Wal(WalError::BatchPartlyDurable {
            durable_first: 11,
            durable_last: 14,
            failed_events: 6,
            source: Box::new(WalError::Closed),
        });
        assert_eq!(durable_prefix_events(&partly), 4);
        assert_eq!(
            durable_prefix_events(&EventBusConnectorError::Wal(WalError::Closed)),
            0
        );
    }
}
