//! The event bus connector: every process event is made durable in the WAL, then delivered
//! to the DaemonEye broker, across broker outages and process crashes, with bounded memory
//! and backpressure.
//!
//! [`EventBusConnector`] keeps the names and meanings of upstream procmond's connector
//! (`new(wal_dir)`, `connect`, `publish(event, ProcessEventType)`,
//! `take_backpressure_receiver`, `replay_wal`, `shutdown`, `is_connected`,
//! `buffer_usage_percent`, `buffer_size_bytes`, `buffered_event_count`) but is a
//! `Send + Sync + Clone` handle taking `&self`, so many tasks share one connector without a
//! lock. Everything runs on the WAL's ring thread: the hand-over from the WAL, the publish
//! buffer, and the broker socket. States and recovery rules are in `docs/design.md`
//! ("Connector"); the client side of the protocol is in `docs/protocol.md`.
//!
//! Submodules: [`config`] (configuration and socket path checks), [`redact`] (argv
//! secrets), [`backpressure`] (hysteresis), [`buffer`] (occupancy and spill accounting),
//! [`backoff`] (reconnect delays), [`error`], [`stats`]; the ring-side tasks (hand-over,
//! link, replay from disk, checkpoints) are private.
//!
//! # Example (procmond side)
//!
//! ```no_run
//! use procmond_wal::{BackpressureSignal, EventBusConnector, ProcessEvent, ProcessEventType};
//!
//! # async fn collector() -> Result<(), procmond_wal::EventBusConnectorError> {
//! // Start: opens (or recovers) the WAL and starts the ring thread.
//! let connector = EventBusConnector::new("/var/lib/procmond/wal").await?;
//! // Reads DAEMONEYE_BROKER_SOCKET; a broker that is not running yet is not an error.
//! connector.connect().await?;
//!
//! // React to backpressure from another task.
//! let mut signals = connector.take_backpressure_receiver().expect("taken once");
//! tokio::spawn(async move {
//!     while let Some(signal) = signals.recv().await {
//!         match signal {
//!             BackpressureSignal::Activated => { /* slow the collection interval down */ }
//!             BackpressureSignal::Released => { /* back to the normal interval */ }
//!             _ => {}
//!         }
//!     }
//! });
//!
//! // Publish: resolves with the WAL sequence once the event is durable (never waits for
//! // the broker). Clones of the handle can publish from any task concurrently.
//! let event = ProcessEvent::new(1234, "sshd", chrono::Utc::now());
//! let sequence = connector.publish(event, ProcessEventType::Start).await?;
//! assert!(sequence > 0);
//!
//! // Shut down: stops accepting, delivers what it can within the drain time, writes a
//! // final checkpoint and closes the WAL.
//! connector.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod backpressure;
pub mod buffer;
mod checkpoint;
pub mod config;
mod core;
pub mod error;
mod frames;
mod held;
mod ingest;
mod link;
mod publisher_id;
mod receipt;
pub mod redact;
mod replay;
mod ring;
mod session;
mod socket;
pub mod stats;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use backpressure::BackpressureSignal;
pub use config::{BROKER_SOCKET_ENV, ConnectorConfig, SocketSource};
pub use error::{EventBusConnectorError, EventBusConnectorResult};
pub use publisher_id::PUBLISHER_ID_FILE;
pub use receipt::{BatchPublishReceipt, PublishReceipt};
pub use redact::Redaction;
pub use stats::{ConnectorStats, LinkState};

use crate::event::{EventKind, ProcessEvent};
use crate::wal::{Wal, WalError};
use crate::wire::budget::{
    EventFramer, event_wire_time, fit_event_payload, fit_event_payload_into, payload_size_hint,
};
use ingest::Ingest;
use link::LinkCommand;
use ring::RingSetup;
use stats::Shared;

/// The kind of a process event, which picks its topic (upstream's name for
/// [`EventKind`]).
pub type ProcessEventType = EventKind;

/// A handle to the connector. Cheap to clone; `Send + Sync`; every method takes `&self`.
/// Dropping the last handle shuts down like [`EventBusConnector::shutdown`], without
/// waiting for it.
#[derive(Clone)]
pub struct EventBusConnector {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Wal,
    redaction: Redaction,
    socket: SocketSource,
    ingest: mpsc::UnboundedSender<Ingest>,
    commands: mpsc::UnboundedSender<LinkCommand>,
    shared: Arc<Shared>,
    acked: watch::Receiver<u64>,
    backpressure: Mutex<Option<mpsc::Receiver<BackpressureSignal>>>,
    accepting: AtomicBool,
    shut_down: AtomicBool,
    buffer_max_bytes: usize,
    drain_timeout: Duration,
    publisher_id: Arc<str>,
    /// The WAL's `segment_max_bytes`: a batch is checked against it before it is written.
    segment_max_bytes: u64,
    /// Whether a segment holds the largest record of an event within the stored limits, so
    /// that no event of a batch needs checking.
    every_record_fits: bool,
}

impl std::fmt::Debug for EventBusConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusConnector")
            .field("wal_dir", &self.inner.wal.dir())
            .field("publisher_id", &self.inner.publisher_id)
            .field("link_state", &self.inner.shared.state())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shut_down.swap(true, Relaxed) {
            // The link drains for the configured time and writes the final checkpoint; the
            // WAL closes when the ring's handles are dropped after it.
            let _ = self.commands.send(LinkCommand::Shutdown {
                drain_timeout: self.drain_timeout,
                done: None,
            });
        }
    }
}

impl EventBusConnector {
    /// Opens (or recovers) the WAL in `wal_dir` with the default configuration and starts
    /// the ring thread. The link stays idle until [`EventBusConnector::connect`]; events
    /// published before are kept.
    pub async fn new(wal_dir: impl Into<PathBuf>) -> EventBusConnectorResult<EventBusConnector> {
        EventBusConnector::with_config(ConnectorConfig::new(wal_dir)).await
    }

    /// Like [`EventBusConnector::new`] with a configuration.
    pub async fn with_config(
        config: ConnectorConfig,
    ) -> EventBusConnectorResult<EventBusConnector> {
        config.validate()?;
        // Opening reads the whole directory: off the caller's runtime threads.
        tokio::task::spawn_blocking(move || open(config))
            .await
            .map_err(|error| {
                EventBusConnectorError::io(
                    "run the WAL opening thread for",
                    PathBuf::new(),
                    std::io::Error::other(error.to_string()),
                )
            })?
    }

    /// Starts connecting to the broker in the background, at the configured path or
    /// `DAEMONEYE_BROKER_SOCKET`, and returns once the first attempt is made.
    ///
    /// Configuration problems are errors: the variable unset or empty, a path longer than
    /// a socket address allows, something that is not a socket, permission denied. A broker
    /// that is not running (yet) is not: events are kept and the link keeps trying with
    /// backoff. Calling it again while connecting is harmless.
    pub async fn connect(&self) -> EventBusConnectorResult<()> {
        self.check_accepting()?;
        let path = config::resolve_socket_path(&self.inner.socket)?;
        let (first_attempt, result) = oneshot::channel();
        self.inner
            .commands
            .send(LinkCommand::Connect {
                path,
                first_attempt,
            })
            .map_err(|_| EventBusConnectorError::ShutDown)?;
        result
            .await
            .unwrap_or(Err(EventBusConnectorError::ShutDown))
    }

    /// Publishes one event: argv secrets are redacted, the event is written to the WAL, and
    /// this resolves with its sequence once it is durable. It never waits for the broker;
    /// delivery follows in the background. Many calls may be in flight at once (from one
    /// task or many): they share the WAL's group commits.
    pub async fn publish(
        &self,
        event: ProcessEvent,
        kind: ProcessEventType,
    ) -> EventBusConnectorResult<u64> {
        self.enqueue(event, kind).await?.await
    }

    /// The first half of [`EventBusConnector::publish`]: redacts, encodes and hands the
    /// event over, and returns once its place in the log is fixed (events enqueued one after
    /// the other get increasing sequences). The receipt resolves like `publish` does, once
    /// the event is durable. This is how one task keeps many publishes in flight: enqueue
    /// several, then await their receipts in order. Dropping a receipt does not withdraw the
    /// event: it is still made durable and delivered.
    pub async fn enqueue(
        &self,
        event: ProcessEvent,
        kind: ProcessEventType,
    ) -> EventBusConnectorResult<PublishReceipt> {
        let receiver = self.hand_over(event, kind).await?;
        Ok(PublishReceipt { receiver })
    }

    /// Publishes several events with consecutive sequences; returns them (in order) once
    /// all are durable. One WAL command and one hand-over for the whole batch.
    ///
    /// The batch is checked as a whole before anything of it is written: an event that
    /// cannot be encoded, or whose record would not fit in an empty WAL segment (only with a
    /// tiny `segment_max_bytes`), fails the call with
    /// [`EventBusConnectorError::BatchEventRejected`] naming its index, and none of the batch
    /// is written or takes a sequence.
    ///
    /// Once accepted, a batch is not atomic: when the WAL cannot continue part-way (it runs
    /// out of room, or a write or sync fails and poisons it), the error is
    /// [`WalError::BatchPartlyDurable`] (inside [`EventBusConnectorError::Wal`]) naming the
    /// durable prefix and the cause; that prefix is delivered like any published event, the
    /// rest of the batch is not durable and may be published again (after a poisoned log,
    /// once the connector is started again). Any other error means none of the batch is
    /// durable.
    pub async fn publish_batch(
        &self,
        events: Vec<(ProcessEvent, ProcessEventType)>,
    ) -> EventBusConnectorResult<Vec<u64>> {
        if events.is_empty() {
            self.check_accepting()?;
            return Ok(Vec::new());
        }
        self.enqueue_batch(events).await?.await
    }

    /// The first half of [`EventBusConnector::publish_batch`], as
    /// [`EventBusConnector::enqueue`] is of `publish`: checks and hands the batch over, and
    /// returns once its place in the log is fixed; the receipt resolves once all of it is
    /// durable (or fails as `publish_batch` does). An empty batch resolves to no sequences.
    pub async fn enqueue_batch(
        &self,
        events: Vec<(ProcessEvent, ProcessEventType)>,
    ) -> EventBusConnectorResult<BatchPublishReceipt> {
        self.check_accepting()?;
        if events.is_empty() {
            return Ok(BatchPublishReceipt { receiver: None });
        }
        // Every payload goes into one buffer: one allocation per batch, shared by the
        // events' slices until the broker has acknowledged them all.
        let mut payloads = Vec::with_capacity(
            events
                .iter()
                .map(|(event, _)| payload_size_hint(event))
                .sum(),
        );
        let mut spans = Vec::with_capacity(events.len());
        let mut prepared = Vec::with_capacity(events.len());
        for (index, (mut event, kind)) in events.into_iter().enumerate() {
            self.inner.redaction.redact_argv(&mut event.command_line);
            event.truncate_to_limits();
            let start = payloads.len();
            fit_event_payload_into(kind, &event, &mut payloads).map_err(|error| {
                EventBusConnectorError::BatchEventRejected {
                    index,
                    source: Box::new(EventBusConnectorError::Encode(error)),
                }
            })?;
            self.check_record_fits(&event).map_err(|error| {
                EventBusConnectorError::BatchEventRejected {
                    index,
                    source: Box::new(EventBusConnectorError::Wal(error)),
                }
            })?;
            spans.push((kind, start..payloads.len(), event_wire_time(&event)));
            prepared.push((event, kind));
        }
        let payloads = bytes::Bytes::from(payloads);
        let items = spans
            .into_iter()
            .map(|(kind, span, timestamp)| (kind, payloads.slice(span), timestamp))
            .collect();
        // Redacted and cut above: the WAL encodes them as they are.
        let receipt = self
            .inner
            .wal
            .enqueue_batch_truncated(&prepared)
            .await
            .map_err(wal_error)?;
        let (reply, receiver) = oneshot::channel();
        // No await between enqueue and this send: a cancelled publish cannot lose it.
        self.inner
            .ingest
            .send(Ingest::Batch {
                receipt,
                items,
                reply,
            })
            .map_err(|_| EventBusConnectorError::ShutDown)?;
        Ok(BatchPublishReceipt {
            receiver: Some(receiver),
        })
    }

    /// Whether the event's WAL record fits in an empty segment (the WAL refuses it
    /// otherwise, after the events before it in a batch were written). `event` is within
    /// the stored limits (`truncate_to_limits` ran). With segments that hold the largest
    /// such record (any size from about 300 KiB, so the default) there is nothing to check;
    /// otherwise a bound on the record's size settles it without encoding, except for huge
    /// events in tiny segments.
    fn check_record_fits(&self, event: &ProcessEvent) -> Result<(), WalError> {
        if self.inner.every_record_fits {
            return Ok(());
        }
        let segment_max_bytes = self.inner.segment_max_bytes;
        if record_fits_segment(event_record_bound_bytes(event), segment_max_bytes) {
            return Ok(());
        }
        let record_bytes =
            crate::wal::format::encode_event(event).map_or(usize::MAX / 2, |bytes| bytes.len());
        if record_fits_segment(record_bytes, segment_max_bytes) {
            Ok(())
        } else {
            Err(WalError::RecordTooLarge {
                frame_bytes: segment_bytes_for_record(record_bytes),
                segment_max_bytes,
            })
        }
    }

    /// Redacts argv, applies the stored limits and encodes the wire payload.
    fn prepare(
        &self,
        mut event: ProcessEvent,
        kind: EventKind,
    ) -> EventBusConnectorResult<(ProcessEvent, Vec<u8>, crate::wire::WireTime)> {
        self.inner.redaction.redact_argv(&mut event.command_line);
        event.truncate_to_limits();
        let payload = fit_event_payload(kind, &event)?;
        let timestamp = event_wire_time(&event);
        Ok((event, payload, timestamp))
    }

    /// Redacts, encodes, enqueues in the WAL and hands the receipt to the ring thread.
    async fn hand_over(
        &self,
        event: ProcessEvent,
        kind: EventKind,
    ) -> EventBusConnectorResult<oneshot::Receiver<Result<u64, WalError>>> {
        self.check_accepting()?;
        let (event, payload, timestamp) = self.prepare(event, kind)?;
        let receipt = self
            .inner
            .wal
            .enqueue_truncated(&event, kind)
            .await
            .map_err(wal_error)?;
        let (reply, receiver) = oneshot::channel();
        // No await between enqueue and this send: a cancelled publish cannot lose it.
        self.inner
            .ingest
            .send(Ingest::Event {
                receipt,
                kind,
                payload: bytes::Bytes::from(payload),
                timestamp,
                reply,
            })
            .map_err(|_| EventBusConnectorError::ShutDown)?;
        Ok(receiver)
    }

    fn check_accepting(&self) -> EventBusConnectorResult<()> {
        if self.inner.accepting.load(Relaxed) {
            Ok(())
        } else {
            Err(EventBusConnectorError::ShutDown)
        }
    }

    /// The backpressure signal receiver; `Some` the first time only. Signals arrive in
    /// order, one per threshold crossing, `Activated` first.
    pub fn take_backpressure_receiver(&self) -> Option<mpsc::Receiver<BackpressureSignal>> {
        self.inner
            .backpressure
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
    }

    /// Whether backpressure is active now.
    pub fn backpressure_active(&self) -> bool {
        self.inner.shared.backpressure_active.load(Relaxed)
    }

    /// Replay is automatic: after every (re)connection the link sends everything not
    /// acknowledged, in order, from memory or from the WAL. This asks for a reconnect now
    /// if the link is waiting out a backoff, and returns how many events are waiting for
    /// acknowledgement.
    pub async fn replay_wal(&self) -> EventBusConnectorResult<usize> {
        self.check_accepting()?;
        let _ = self.inner.commands.send(LinkCommand::Nudge);
        Ok(self.buffered_event_count())
    }

    /// Waits until the broker has acknowledged every event up to `sequence` (with a legacy
    /// broker: until it was written to the socket).
    pub async fn acknowledged(&self, sequence: u64) -> EventBusConnectorResult<()> {
        let mut acked = self.inner.acked.clone();
        acked
            .wait_for(|through| *through >= sequence)
            .await
            .map(|_| ())
            .map_err(|_| EventBusConnectorError::ShutDown)
    }

    /// Stops accepting events, waits until every accepted event is durable, gives the link
    /// the drain time to deliver what is pending, writes a final checkpoint and closes the
    /// WAL. Publishing afterwards fails with [`EventBusConnectorError::ShutDown`]. A second
    /// call returns at once.
    pub async fn shutdown(&self) -> EventBusConnectorResult<()> {
        self.inner.accepting.store(false, Relaxed);
        if self.inner.shut_down.swap(true, Relaxed) {
            return Ok(());
        }
        let (flushed, flush) = oneshot::channel();
        if self
            .inner
            .ingest
            .send(Ingest::Flush { reply: flushed })
            .is_ok()
        {
            let _ = flush.await;
        }
        let (done, stopped) = oneshot::channel();
        if self
            .inner
            .commands
            .send(LinkCommand::Shutdown {
                drain_timeout: self.inner.drain_timeout,
                done: Some(done),
            })
            .is_ok()
        {
            let _ = stopped.await;
        }
        let stats = self.stats();
        tracing::info!(
            acked_through = stats.acked_through,
            unacknowledged = stats.buffered_events,
            "connector shut down"
        );
        match self.inner.wal.clone().close().await {
            Ok(()) | Err(WalError::Closed) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether a socket to the broker is connected now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.state().is_connected()
    }

    /// Occupancy in percent of the buffer limit (0–100): unacknowledged events in memory
    /// plus those spilled to the WAL.
    pub fn buffer_usage_percent(&self) -> u8 {
        backpressure::usage_percent(
            self.inner.shared.occupied_bytes.load(Relaxed),
            self.inner.buffer_max_bytes as u64,
        )
    }

    /// Encoded frame bytes of unacknowledged events held in memory.
    pub fn buffer_size_bytes(&self) -> usize {
        usize::try_from(self.inner.shared.buffer_bytes.load(Relaxed)).unwrap_or(usize::MAX)
    }

    /// Unacknowledged events (in memory and spilled to the WAL).
    pub fn buffered_event_count(&self) -> usize {
        usize::try_from(self.inner.shared.buffered_events.load(Relaxed)).unwrap_or(usize::MAX)
    }

    /// The publisher id sent in hello (persisted in the WAL directory by default).
    pub fn publisher_id(&self) -> &str {
        &self.inner.publisher_id
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> &Path {
        self.inner.wal.dir()
    }

    /// A snapshot: the WAL's figures plus the link's.
    pub fn stats(&self) -> ConnectorStats {
        let shared = &self.inner.shared;
        let occupied_bytes = Shared::get(&shared.occupied_bytes);
        let connections = Shared::get(&shared.connections);
        ConnectorStats {
            wal: self.inner.wal.stats(),
            publisher_id: self.inner.publisher_id.to_string(),
            link_state: shared.state(),
            legacy_broker: shared.legacy_broker.load(Relaxed),
            connections,
            reconnects: connections.saturating_sub(1),
            connect_failures: Shared::get(&shared.connect_failures),
            protocol_errors: Shared::get(&shared.protocol_errors),
            events_sent: Shared::get(&shared.events_sent),
            replayed: Shared::get(&shared.replayed),
            read_back_from_wal: Shared::get(&shared.read_back),
            acked_through: Shared::get(&shared.acked_through),
            checkpoints_written: Shared::get(&shared.checkpoints_written),
            buffer_bytes: Shared::get(&shared.buffer_bytes),
            buffered_events: Shared::get(&shared.buffered_events),
            spilled_events: Shared::get(&shared.spilled_events),
            spilled_total: Shared::get(&shared.spilled_total),
            occupied_bytes,
            buffer_usage_percent: backpressure::usage_percent(
                occupied_bytes,
                self.inner.buffer_max_bytes as u64,
            ),
            backpressure_active: shared.backpressure_active.load(Relaxed),
        }
    }
}

fn wal_error(error: WalError) -> EventBusConnectorError {
    match error {
        WalError::Closed => EventBusConnectorError::ShutDown,
        error => EventBusConnectorError::Wal(error),
    }
}

/// Opens the WAL with the connector's ring task, then hands the task its setup.
fn open(config: ConnectorConfig) -> EventBusConnectorResult<EventBusConnector> {
    let (setup_sender, setup_receiver) = oneshot::channel();
    let (wal, report) =
        Wal::open_with_ring_task(config.wal.clone(), Some(ring::ring_task(setup_receiver)))?;
    let publisher_id = match &config.publisher_id {
        Some(id) => id.clone(),
        // The WAL's directory lock is held: no other process creates the file meanwhile.
        None => match publisher_id::load_or_create(&config.wal.dir) {
            Ok(id) => id,
            Err(error) => {
                drop(setup_sender);
                let _ = close_blocking(wal);
                return Err(error);
            }
        },
    };
    let publisher_id: Arc<str> = Arc::from(publisher_id);
    let acked_at_open = report.acked_through;
    let backlog = report
        .last_sequence
        .filter(|last| *last > acked_at_open)
        .map(|last| {
            let first = acked_at_open + 1;
            let mean_record_bytes = report.record_bytes / report.events.max(1);
            let frame_bytes =
                backlog_frame_bytes(&wal, first, last, &publisher_id, mean_record_bytes);
            (first, last, frame_bytes)
        });
    if let Some((first, last, _)) = backlog {
        tracing::info!(
            first,
            last,
            "unacknowledged events in the WAL will be delivered"
        );
    }
    let shared = Arc::new(Shared::new(acked_at_open));
    if let Some((first, last, frame_bytes)) = backlog {
        // The figures hold the backlog from the start, not only once the ring task has set
        // up: a caller asking right after `new` sees it.
        let events = last - first + 1;
        shared.occupied_bytes.store(frame_bytes, Relaxed);
        shared.buffered_events.store(events, Relaxed);
        shared.spilled_events.store(events, Relaxed);
    }
    // Unbounded in type only. Every hand-over follows a WAL enqueue, and it leaves the queue
    // when that enqueue's receipt resolves, so the WAL's bounded queue (`queue_max_commands`,
    // plus the replies it holds for groups awaiting a sync) bounds it. Link commands are
    // connect, nudge and shutdown: a handful per connector.
    let (ingest, ingest_receiver) = mpsc::unbounded_channel();
    let (commands, command_receiver) = mpsc::unbounded_channel();
    let (backpressure_sender, backpressure_receiver) =
        mpsc::channel(config.backpressure_channel_capacity);
    let (acked_sender, acked_receiver) = watch::channel(acked_at_open);
    let inner = Inner {
        wal: wal.clone(),
        redaction: config.redaction.clone(),
        socket: config.socket.clone(),
        ingest,
        commands,
        shared: Arc::clone(&shared),
        acked: acked_receiver,
        backpressure: Mutex::new(Some(backpressure_receiver)),
        accepting: AtomicBool::new(true),
        shut_down: AtomicBool::new(false),
        buffer_max_bytes: config.buffer_max_bytes,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        publisher_id: Arc::clone(&publisher_id),
        segment_max_bytes: config.wal.segment_max_bytes,
        every_record_fits: record_fits_segment(
            largest_record_bound_bytes(),
            config.wal.segment_max_bytes,
        ),
    };
    let setup = RingSetup {
        wal,
        config,
        publisher_id,
        shared,
        acked_at_open,
        backlog,
        ingest: ingest_receiver,
        commands: command_receiver,
        backpressure: backpressure_sender,
        acked: acked_sender,
        jitter_seed: publisher_id::jitter_seed(),
    };
    if setup_sender.send(setup).is_err() {
        return Err(EventBusConnectorError::ShutDown);
    }
    Ok(EventBusConnector {
        inner: Arc::new(inner),
    })
}

/// The frame bytes of the start-up backlog `first..=last`, summed while reading it once:
/// its share of the buffer occupancy is then exact (backpressure at start-up reflects what
/// the link must still deliver). Events lost to damage count nothing, as they are never
/// sent. Should reading fail part-way, the events not read are counted at the mean stored
/// record size, with a warning; the link then meets the same failure and retries.
fn backlog_frame_bytes(
    wal: &Wal,
    first: u64,
    last: u64,
    publisher_id: &str,
    mean_record_bytes: u64,
) -> u64 {
    let framer = EventFramer::new(publisher_id);
    let mut payload = Vec::new();
    let mut frame_bytes = 0u64;
    let mut next = first;
    let failure = match wal.replay_from(first) {
        Ok(reader) => reader
            .map_while(|entry| match entry {
                Ok(entry) if entry.sequence > last => None,
                other => Some(other),
            })
            .find_map(|entry| match entry {
                Ok(entry) => {
                    payload.clear();
                    let timestamp = event_wire_time(&entry.event);
                    match fit_event_payload_into(entry.kind, &entry.event, &mut payload) {
                        Ok(()) => {
                            frame_bytes += framer.frame_len(
                                entry.sequence,
                                entry.kind,
                                payload.len(),
                                timestamp,
                            ) as u64;
                        }
                        // Never sent (the link skips what it cannot frame): counts nothing.
                        Err(error) => {
                            tracing::error!(sequence = entry.sequence, %error, "cannot frame a stored event");
                        }
                    }
                    next = entry.sequence + 1;
                    None
                }
                Err(error) => Some(error),
            }),
        Err(error) => Some(error),
    };
    if let Some(error) = failure {
        let unread = (last + 1).saturating_sub(next);
        tracing::warn!(
            %error,
            unread,
            "cannot read the whole start-up backlog; its unread part counts at the mean record size"
        );
        frame_bytes += unread.saturating_mul(mean_record_bytes);
    }
    frame_bytes
}

/// Bytes an empty segment needs to hold one event record of `record_bytes`.
fn segment_bytes_for_record(record_bytes: usize) -> usize {
    use crate::wal::format::{EVENT_FIXED_PAYLOAD_BYTES, SEGMENT_HEADER_BYTES, frame_len};
    SEGMENT_HEADER_BYTES + frame_len(EVENT_FIXED_PAYLOAD_BYTES + record_bytes)
}

/// Whether an empty segment of `segment_max_bytes` holds an event record of `record_bytes`.
fn record_fits_segment(record_bytes: usize, segment_max_bytes: u64) -> bool {
    segment_bytes_for_record(record_bytes) as u64 <= segment_max_bytes
}

/// An upper bound on the encoded record of an event with `text_bytes` of text in `strings`
/// strings: bincode's legacy configuration costs each string its bytes plus an 8-byte length
/// (and an option its tag); the fixed fields take well under 512 bytes.
fn record_bound_bytes(text_bytes: usize, strings: usize) -> usize {
    text_bytes + 9 * strings + 512
}

/// [`record_bound_bytes`] for `event`: its text, in its name, four optional fields, argv
/// entries and metadata keys and values.
fn event_record_bound_bytes(event: &ProcessEvent) -> usize {
    let strings = 5 + event.command_line.len() + 2 * event.platform_metadata.len();
    record_bound_bytes(event.text_bytes(), strings)
}

/// [`record_bound_bytes`] for the largest event within the stored limits (what
/// `ProcessEvent::truncate_to_limits` leaves), about 290 KiB.
fn largest_record_bound_bytes() -> usize {
    use crate::event::limits;
    let text_bytes = limits::NAME_BYTES
        + 4 * limits::SHORT_FIELD_BYTES
        + limits::ARGV_TOTAL_BYTES
        + limits::METADATA_TOTAL_BYTES;
    let strings = 5 + limits::ARGV_ENTRIES + 2 * limits::METADATA_ENTRIES;
    record_bound_bytes(text_bytes, strings)
}

/// Closes a WAL from a blocking context (opening failed half-way).
fn close_blocking(wal: Wal) -> Result<(), WalError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|error| WalError::io("start runtime to close", wal.dir().to_owned(), error))?
        .block_on(wal.close())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::event::limits;

    /// An event at every stored limit at once (or past them, with `oversize`), truncated.
    fn largest_event(oversize: bool) -> ProcessEvent {
        let grow = if oversize { 2 } else { 1 };
        let mut event =
            ProcessEvent::new(u32::MAX, "n".repeat(limits::NAME_BYTES * grow), Utc::now());
        event.ppid = Some(u32::MAX);
        event.executable_path = Some("p".repeat(limits::SHORT_FIELD_BYTES * grow));
        event.executable_hash = Some("h".repeat(limits::SHORT_FIELD_BYTES * grow));
        event.hash_algorithm = Some("a".repeat(limits::SHORT_FIELD_BYTES * grow));
        event.user_id = Some("u".repeat(limits::SHORT_FIELD_BYTES * grow));
        event.start_time = Some(Utc::now());
        event.cpu_usage_percent = Some(f64::MAX);
        event.memory_usage_bytes = Some(u64::MAX);
        let arg_bytes = limits::ARGV_TOTAL_BYTES / limits::ARGV_ENTRIES;
        event.command_line = vec!["x".repeat(arg_bytes * grow); limits::ARGV_ENTRIES * grow];
        let entry_bytes = limits::METADATA_TOTAL_BYTES / limits::METADATA_ENTRIES;
        for index in 0..limits::METADATA_ENTRIES * grow {
            let key = format!("{index:0>width$}", width = entry_bytes / 2);
            event
                .platform_metadata
                .insert(key, "v".repeat(entry_bytes / 2 * grow));
        }
        event.truncate_to_limits();
        event
    }

    #[test]
    fn no_event_within_the_stored_limits_encodes_past_the_largest_record_bound() {
        for oversize in [false, true] {
            let event = largest_event(oversize);
            assert_eq!(event.truncated, oversize);
            let bound = event_record_bound_bytes(&event);
            let encoded = crate::wal::format::encode_event(&event).expect("encodes");
            assert!(encoded.len() <= bound, "{} > {bound}", encoded.len());
            assert!(bound <= largest_record_bound_bytes());
            // The event is close to the limits: the bound is not loose by orders of magnitude.
            assert!(encoded.len() * 2 > largest_record_bound_bytes());
        }
    }

    #[test]
    fn default_segments_hold_every_record_and_the_smallest_ones_do_not() {
        let default_segment = crate::wal::WalConfig::new("/unused").segment_max_bytes;
        assert!(record_fits_segment(
            largest_record_bound_bytes(),
            default_segment
        ));
        assert!(!record_fits_segment(
            largest_record_bound_bytes(),
            64 * 1024
        ));
    }
}
