//! Drives the event bus connector end to end: publishers on a two-worker tokio runtime call
//! `publish` (awaiting each event) or `publish_batch` (awaiting each batch) on one
//! [`EventBusConnector`], whose link delivers to the reference broker running on a thread
//! and runtime of its own in this process; measures publish → durable and publish → broker
//! acknowledgement. The WAL-only reference of the same workload is [`super::walrun::run`].
//!
//! Owns only the measurement: the connector, the WAL and the broker are the library's.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use procmond_wal::broker::{Broker, BrokerConfig, BrokerStats};
use procmond_wal::event_bus_connector::ConnectorConfig;
use procmond_wal::wal::WalConfig;
use procmond_wal::{EventBusConnector, ProcessEvent};
use serde::Serialize;
use tokio::sync::mpsc;

use super::events::kind_for;
use super::latency::{LatencyRecorder, LatencySummary};
use super::walrun::{runtime, wait_for_prepared_segment};
use super::{BenchError, BenchResult, Workload, backend_name};

/// How long the connector may take to reach the broker before the run is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEndResult {
    /// `connector`.
    pub system: String,
    /// I/O backend of the connector's WAL.
    pub backend: String,
    /// `await` (one `publish` at a time per publisher) or `batch` (`publish_batch`).
    pub mode: String,
    /// Encoded event size.
    pub event_bytes: usize,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Events per `publish_batch` call (1 in `await` mode).
    pub batch_events: usize,
    /// Events published (all of them durable and acknowledged at the end of the run).
    pub events: u64,
    /// Wall time from the first publish until the last one resolved (durable).
    pub durable_elapsed_s: f64,
    /// Durable events per second.
    pub durable_events_per_s: f64,
    /// Wall time from the first publish until the broker acknowledged the last event.
    pub acked_elapsed_s: f64,
    /// Acknowledged events per second: the end-to-end throughput.
    pub acked_events_per_s: f64,
    /// Acknowledged event bytes per second, 10^6 bytes.
    pub acked_mb_per_s: f64,
    /// Per event: publish call to durable (the call resolving).
    pub durable_latency: LatencySummary,
    /// Per event: publish call to the broker's acknowledgement being seen by the publisher's
    /// side (observed by one task in sequence order, so an event can be reported up to one
    /// acknowledgement interval late, never early).
    pub ack_latency: LatencySummary,
    /// Mean records per fdatasync of the connector's WAL.
    pub records_per_sync: f64,
    /// Events that did not fit in the publish buffer (delivered from the WAL instead).
    pub spilled_total: u64,
    /// Events read back from the WAL for delivery.
    pub read_back_from_wal: u64,
    /// Cumulative acknowledgements the broker sent.
    pub broker_acks_sent: u64,
    /// Event messages the broker received.
    pub broker_events_received: u64,
    /// Round of an interleaved measurement.
    pub round: usize,
}

/// The reference broker on a thread with its own current-thread tokio runtime, so its work
/// is not scheduled behind the publishers' tasks and its runtime never meets the WAL's
/// tokio-uring ring (which lives on a thread of its own as well).
struct BrokerThread {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<BrokerStats>>,
}

impl BrokerThread {
    fn start(socket: &Path) -> BenchResult<BrokerThread> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = BrokerConfig::new(socket);
        let thread = std::thread::Builder::new()
            .name("bench-broker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started_tx.send(Err(error.to_string()));
                        return BrokerStats::default();
                    }
                };
                runtime.block_on(async move {
                    let broker = match Broker::start(config).await {
                        Ok(broker) => broker,
                        Err(error) => {
                            let _ = started_tx.send(Err(error.to_string()));
                            return BrokerStats::default();
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    // A dropped sender (the bench failed) also stops the broker.
                    let _ = stop_rx.await;
                    let stats = broker.stats();
                    broker.shutdown().await;
                    stats
                })
            })
            .map_err(|e| BenchError::Runtime {
                op: "spawn broker thread",
                detail: e.to_string(),
            })?;
        let started = started_rx.recv().map_err(|_| BenchError::Runtime {
            op: "start broker",
            detail: "broker thread ended before starting".into(),
        })?;
        started.map_err(|detail| BenchError::Runtime {
            op: "start broker",
            detail,
        })?;
        Ok(BrokerThread {
            socket: socket.to_path_buf(),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the broker and returns its counters.
    fn stop(mut self) -> BenchResult<BrokerStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| BenchError::Runtime {
                op: "join broker thread",
                detail: "broker thread panicked".into(),
            }),
            None => Ok(BrokerStats::default()),
        }
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connector_error(
    op: &'static str,
) -> impl Fn(procmond_wal::EventBusConnectorError) -> BenchError {
    move |e| BenchError::Runtime {
        op,
        detail: e.to_string(),
    }
}

/// What the publishers tell the acknowledgement observer: the highest sequence of a durable
/// publish (or batch), when it was called, and how many events it carried.
type Published = (u64, Instant, u64);

/// Runs `workload` through a connector whose WAL is configured by `config` (its directory is
/// the connector's), delivering to a reference broker on a socket in `socket_dir`.
/// `workload.batch_events` > 1 uses `publish_batch`; otherwise each publisher awaits each
/// `publish`. Returns once every published event is acknowledged and everything is shut down.
pub fn run(
    config: WalConfig,
    socket_dir: &Path,
    workload: &Workload,
    event: &ProcessEvent,
) -> BenchResult<EndToEndResult> {
    let backend = config.backend;
    let dir = config.dir.clone();
    let segment_max_bytes = config.segment_max_bytes;
    let socket = socket_dir.join("broker.sock");
    let broker = BrokerThread::start(&socket)?;
    let rt = runtime()?;
    let connector_config = ConnectorConfig::new(&dir)
        .with_wal_config(config)
        .with_socket_path(&broker.socket);
    let connector = rt
        .block_on(EventBusConnector::with_config(connector_config))
        .map_err(connector_error("open connector"))?;
    // Steady state, as in the WAL-only runs: the next segment prepared, the link up.
    wait_for_prepared_segment(&dir, segment_max_bytes)?;
    let measured = rt.block_on(async {
        connector
            .connect()
            .await
            .map_err(connector_error("connect"))?;
        let give_up = Instant::now() + CONNECT_TIMEOUT;
        while !connector.is_connected() {
            if Instant::now() >= give_up {
                return Err(BenchError::Runtime {
                    op: "connect to the broker",
                    detail: format!("not connected after {CONNECT_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        publish(&connector, workload, event).await
    });
    let stats = connector.stats();
    let closed = rt.block_on(connector.shutdown());
    drop(rt);
    let broker_stats = broker.stop()?;
    let measured = measured?;
    closed.map_err(connector_error("shut down connector"))?;
    let events = measured.events;
    let durable_s = measured.durable_elapsed.as_secs_f64().max(1e-9);
    let acked_s = measured.acked_elapsed.as_secs_f64().max(1e-9);
    let acked_events_per_s = events as f64 / acked_s;
    Ok(EndToEndResult {
        system: "connector".into(),
        backend: backend_name(backend),
        mode: workload.mode().into(),
        event_bytes: workload.event_bytes,
        publishers: workload.publishers,
        batch_events: workload.batch_events,
        events,
        durable_elapsed_s: durable_s,
        durable_events_per_s: events as f64 / durable_s,
        acked_elapsed_s: acked_s,
        acked_events_per_s,
        acked_mb_per_s: acked_events_per_s * workload.event_bytes as f64 / 1e6,
        durable_latency: measured.durable_latency.summary(),
        ack_latency: measured.ack_latency.summary(),
        records_per_sync: stats.wal.records_per_sync,
        spilled_total: stats.spilled_total,
        read_back_from_wal: stats.read_back_from_wal,
        broker_acks_sent: broker_stats.acks_sent,
        broker_events_received: broker_stats.events_received,
        round: 0,
    })
}

struct Measured {
    events: u64,
    durable_elapsed: Duration,
    acked_elapsed: Duration,
    durable_latency: LatencyRecorder,
    ack_latency: LatencyRecorder,
}

async fn publish(
    connector: &EventBusConnector,
    workload: &Workload,
    event: &ProcessEvent,
) -> BenchResult<Measured> {
    let issued = Arc::new(AtomicU64::new(0));
    let (published_tx, published_rx) = mpsc::unbounded_channel::<Published>();
    let observer = tokio::spawn(observe_acks(connector.clone(), published_rx));
    let start = Instant::now();
    let deadline = start + workload.duration;
    let mut tasks = Vec::with_capacity(workload.publishers);
    for _ in 0..workload.publishers {
        let connector = connector.clone();
        let event = event.clone();
        let issued = Arc::clone(&issued);
        let published = published_tx.clone();
        let max_events = workload.max_events;
        let batch_events = workload.batch_events.max(1) as u64;
        tasks.push(tokio::spawn(async move {
            let mut recorder = LatencyRecorder::default();
            let mut done = 0u64;
            let mut highest = 0u64;
            loop {
                let first = issued.fetch_add(batch_events, Relaxed);
                if first >= max_events || Instant::now() >= deadline {
                    break;
                }
                let count = (max_events - first).min(batch_events);
                let began = Instant::now();
                let sequence = if batch_events == 1 {
                    connector
                        .publish(event.clone(), kind_for(first))
                        .await
                        .map_err(connector_error("publish"))?
                } else {
                    let batch = (first..first + count)
                        .map(|index| (event.clone(), kind_for(index)))
                        .collect();
                    let sequences = connector
                        .publish_batch(batch)
                        .await
                        .map_err(connector_error("publish_batch"))?;
                    sequences.into_iter().max().unwrap_or(0)
                };
                recorder.record_n(began.elapsed(), count);
                // The observer only ends after every publisher has dropped its sender.
                let _ = published.send((sequence, began, count));
                highest = highest.max(sequence);
                done += count;
            }
            Ok::<_, BenchError>((done, highest, recorder))
        }));
    }
    drop(published_tx);
    let mut events = 0;
    let mut highest = 0;
    let mut durable_latency = LatencyRecorder::default();
    for task in tasks {
        let (done, top, recorder) = task.await.map_err(|e| BenchError::Runtime {
            op: "join publisher task",
            detail: e.to_string(),
        })??;
        events += done;
        highest = highest.max(top);
        durable_latency.merge(recorder);
    }
    let durable_elapsed = start.elapsed();
    connector
        .acknowledged(highest)
        .await
        .map_err(connector_error("wait for the last acknowledgement"))?;
    let acked_elapsed = start.elapsed();
    let ack_latency = observer.await.map_err(|e| BenchError::Runtime {
        op: "join acknowledgement observer",
        detail: e.to_string(),
    })??;
    Ok(Measured {
        events,
        durable_elapsed,
        acked_elapsed,
        durable_latency,
        ack_latency,
    })
}

/// Records publish → acknowledgement latencies: takes the lowest published sequence not yet
/// seen acknowledged, waits for the broker's cumulative acknowledgement to cover it, and
/// records the time since its publish call, for each of its events.
async fn observe_acks(
    connector: EventBusConnector,
    mut published: mpsc::UnboundedReceiver<Published>,
) -> BenchResult<LatencyRecorder> {
    let mut recorder = LatencyRecorder::default();
    let mut waiting: BinaryHeap<Reverse<(u64, Instant, u64)>> = BinaryHeap::new();
    loop {
        // Take everything reported so far, so the lowest sequence is the one waited for.
        while let Ok(item) = published.try_recv() {
            waiting.push(Reverse(item));
        }
        let Some(Reverse((sequence, began, count))) = waiting.pop() else {
            match published.recv().await {
                Some(item) => {
                    waiting.push(Reverse(item));
                    continue;
                }
                None => return Ok(recorder),
            }
        };
        connector
            .acknowledged(sequence)
            .await
            .map_err(connector_error("wait for an acknowledgement"))?;
        recorder.record_n(began.elapsed(), count);
    }
}
