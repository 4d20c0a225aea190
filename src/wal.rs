//! The write-ahead log (docs/design.md §3–§7): every event is on stable storage before `append`
//! returns its sequence.
//!
//! [`Wal`] is a `Send + Sync + Clone` handle; the log itself lives on one ring thread that
//! owns the segment files (see `docs/design.md`). Submodules: [`format`](mod@format)
//! (bytes), [`naming`] (file names), [`scan`] and [`recovery`] (reading), [`reader`]
//! (replay), [`config`], [`error`], [`stats`], [`lock`]; the writer and open logic are
//! private.

use std::future::Future;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

pub mod config;
pub mod error;
pub mod format;
pub mod lock;
pub mod naming;
mod open;
pub mod reader;
pub mod recovery;
pub mod recycle;
pub mod scan;
mod staging;
pub mod stats;
mod writer;

pub use config::{BackendChoice, GroupStart, SyncPolicy, WalConfig};
pub use error::WalError;
pub use reader::{ReplayItem, WalReader};
pub use recovery::OpenReport;
pub use stats::WalStats;

pub(crate) use open::RingTask;

use crate::event::{EventKind, ProcessEvent};
use crate::io::BackendKind;
use stats::Shared;
use writer::Command;

/// A handle to an open write-ahead log. Cheap to clone; usable from any thread and any tokio
/// runtime. The log closes when [`Wal::close`] is called or the last handle is dropped (then
/// everything already accepted is still made durable before the ring thread exits).
#[derive(Clone)]
pub struct Wal {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    backend: BackendKind,
    dir: Arc<PathBuf>,
    /// The configured segment size: a record larger than an empty segment can hold is
    /// refused before anything of its batch is queued.
    segment_max_bytes: u64,
    skipped_at_open: u64,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Resolves to an event's sequence once it is durable; see [`Wal::enqueue`].
#[must_use = "the event is only known to be durable when the receipt resolves"]
pub struct AppendReceipt {
    receiver: oneshot::Receiver<Result<u64, WalError>>,
}

impl Future for AppendReceipt {
    type Output = Result<u64, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(WalError::Closed)))
    }
}

/// Resolves to a batch's sequence range once all of it is durable; see
/// [`Wal::enqueue_batch`]. A batch that fails part-way resolves to
/// [`WalError::BatchPartlyDurable`] naming its durable prefix.
#[must_use = "the batch is only known to be durable when the receipt resolves"]
pub struct BatchReceipt {
    receiver: oneshot::Receiver<Result<RangeInclusive<u64>, WalError>>,
}

impl Future for BatchReceipt {
    type Output = Result<RangeInclusive<u64>, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(WalError::Closed)))
    }
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`: validates the configuration, takes the
    /// directory lock, reads every segment (skipping damage with a warning), cuts a torn tail,
    /// starts the ring thread and returns the handle with what was found.
    ///
    /// Works from any thread, inside a tokio runtime (multi-thread or current-thread) or not:
    /// the io_uring probe and the ring run on threads of their own.
    ///
    /// It **blocks** the calling thread until the log is ready: it reads every segment,
    /// probes the backend and waits for the ring thread to start. That is milliseconds for a
    /// small directory but grows with the bytes in it (a full 4 GiB log is read once). From
    /// async code that must not stall a worker, call it in `tokio::task::spawn_blocking`.
    pub fn open(config: WalConfig) -> Result<(Wal, OpenReport), WalError> {
        Self::open_with_ring_task(config, None)
    }

    /// [`Wal::open`], also starting `ring_task` on the ring thread (the connector's link).
    pub(crate) fn open_with_ring_task(
        config: WalConfig,
        ring_task: Option<open::RingTask>,
    ) -> Result<(Wal, OpenReport), WalError> {
        let opened = open::open(config.clone(), ring_task)?;
        let skipped = opened.report.skipped_regions() as u64;
        let wal = Wal {
            commands: opened.commands,
            shared: opened.shared,
            backend: opened.backend,
            dir: Arc::new(config.dir),
            segment_max_bytes: config.segment_max_bytes,
            skipped_at_open: skipped,
            thread: Arc::new(Mutex::new(Some(opened.thread))),
        };
        Ok((wal, opened.report))
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The I/O backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    fn check_poison(&self) -> Result<(), WalError> {
        match self.shared.poison_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn send(&self, command: Command) -> Result<(), WalError> {
        self.check_poison()?;
        self.commands
            .send(command)
            .await
            .map_err(|_| WalError::Closed)
    }

    /// Appends an event and returns its sequence once it is durable.
    ///
    /// Oversized fields are truncated (see [`ProcessEvent::truncate_to_limits`]), never
    /// rejected. Many concurrent `append`s share one `fdatasync` (group commit).
    pub async fn append(&self, event: ProcessEvent, kind: EventKind) -> Result<u64, WalError> {
        self.enqueue(event, kind).await?.await
    }

    /// Hands an event to the log and returns a receipt that resolves when it is durable, so a
    /// single caller can keep many appends in flight (pipelining). Waits only while the
    /// command queue is full.
    pub async fn enqueue(
        &self,
        mut event: ProcessEvent,
        kind: EventKind,
    ) -> Result<AppendReceipt, WalError> {
        event.truncate_to_limits();
        self.enqueue_truncated(&event, kind).await
    }

    /// [`Wal::enqueue`] for an event the caller has already cut to the stored limits
    /// ([`ProcessEvent::truncate_to_limits`]) and keeps: it is encoded from the reference,
    /// neither moved nor checked again.
    pub(crate) async fn enqueue_truncated(
        &self,
        event: &ProcessEvent,
        kind: EventKind,
    ) -> Result<AppendReceipt, WalError> {
        let event_bytes = encode(event)?;
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Append {
            kind,
            event_bytes,
            reply,
        })
        .await?;
        Ok(AppendReceipt { receiver })
    }

    /// Appends events with consecutive sequences; returns their range once all are durable.
    ///
    /// The batch is checked whole before any of it is queued: an event that cannot be
    /// encoded, or whose record no segment can hold ([`WalError::RecordTooLarge`]), fails the
    /// call and nothing of the batch is written or takes a sequence.
    ///
    /// Writing is not atomic: a batch may span groups and segments. If a segment cannot be
    /// created part-way (disk budget or ENOSPC), or the log is poisoned part-way, the error
    /// is [`WalError::BatchPartlyDurable`], naming the durable prefix (those events keep
    /// their sequences; [`WalError::durable_batch_prefix`] gives the range) and why the rest
    /// failed. On any other error none of the batch is durable.
    pub async fn append_batch(
        &self,
        events: Vec<(ProcessEvent, EventKind)>,
    ) -> Result<RangeInclusive<u64>, WalError> {
        self.enqueue_batch(events).await?.await
    }

    /// [`Wal::append_batch`] split like [`Wal::enqueue`]: returns once the batch is queued,
    /// with a receipt that resolves to the range once all of it is durable.
    pub async fn enqueue_batch(
        &self,
        events: Vec<(ProcessEvent, EventKind)>,
    ) -> Result<BatchReceipt, WalError> {
        let mut events = events;
        for (event, _) in &mut events {
            event.truncate_to_limits();
        }
        self.enqueue_batch_truncated(&events).await
    }

    /// [`Wal::enqueue_batch`] for events the caller has already cut to the stored limits and
    /// keeps (see [`Wal::enqueue_truncated`]).
    pub(crate) async fn enqueue_batch_truncated(
        &self,
        events: &[(ProcessEvent, EventKind)],
    ) -> Result<BatchReceipt, WalError> {
        let mut items = Vec::with_capacity(events.len());
        for (event, kind) in events {
            let bytes = encode(event)?;
            self.check_fits_a_segment(bytes.len())?;
            items.push((*kind, bytes));
        }
        let (reply, receiver) = oneshot::channel();
        self.send(Command::AppendBatch { items, reply }).await?;
        Ok(BatchReceipt { receiver })
    }

    /// Refuses a record of `record_bytes` encoded bytes that even an empty segment cannot
    /// hold (the writer would refuse it too, but only after the batch's earlier events).
    fn check_fits_a_segment(&self, record_bytes: usize) -> Result<(), WalError> {
        let frame_bytes = format::frame_len(format::EVENT_FIXED_PAYLOAD_BYTES + record_bytes);
        if (format::SEGMENT_HEADER_BYTES + frame_bytes) as u64 > self.segment_max_bytes {
            return Err(WalError::RecordTooLarge {
                frame_bytes,
                segment_max_bytes: self.segment_max_bytes,
            });
        }
        Ok(())
    }

    /// Waits until everything appended before this call is durable; returns the durable
    /// sequence. Under [`SyncPolicy::Interval`] it forces the sync.
    pub async fn sync(&self) -> Result<u64, WalError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Sync { reply }).await?;
        receiver.await.unwrap_or(Err(WalError::Closed))
    }

    /// Records durably that the broker acknowledged every event up to `acked_through`; sealed
    /// segments holding only acknowledged events are then deleted. Lower values than the
    /// current watermark are ignored.
    pub async fn checkpoint(&self, acked_through: u64) -> Result<(), WalError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Checkpoint {
            acked_through,
            reply,
        })
        .await?;
        receiver.await.unwrap_or(Err(WalError::Closed))
    }

    /// A snapshot of the counters (no round trip to the ring thread).
    pub fn stats(&self) -> WalStats {
        self.shared.snapshot(self.backend, self.skipped_at_open)
    }

    /// Highest sequence on stable storage.
    pub fn durable_sequence(&self) -> u64 {
        self.shared
            .durable_sequence
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens a reader over this log's directory that yields the durable events from
    /// `from_sequence` on: those at or below [`Wal::durable_sequence`] when this is called.
    /// Safe while appends continue: it ends at the first event above that bound, and never
    /// steps over a group that is still being written (see [`WalReader`]). Call it again
    /// from the next sequence for later events.
    pub fn replay_from(&self, from_sequence: u64) -> Result<WalReader, WalError> {
        WalReader::open_durable(&self.dir, from_sequence, self.durable_sequence())
    }

    /// Makes everything accepted durable, stops the ring thread and releases the directory
    /// lock. Other handles get [`WalError::Closed`] afterwards.
    pub async fn close(self) -> Result<(), WalError> {
        let (reply, receiver) = oneshot::channel();
        let sent = self.commands.send(Command::Close { reply }).await;
        let result = match sent {
            Ok(()) => receiver.await.unwrap_or(Err(WalError::Closed)),
            Err(_) => Err(WalError::Closed),
        };
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread {
            // The ring thread has answered Close and is only returning; joining is brief and
            // needs no runtime (callers may use any executor).
            let _ = thread.join();
        }
        result
    }
}

fn encode(event: &ProcessEvent) -> Result<Vec<u8>, WalError> {
    // After truncation an event is far below the payload limit; failing here means a bug.
    staging::encode_event(event).map_err(|error| WalError::RecordTooLarge {
        frame_bytes: match error {
            format::EncodeError::TooLarge { payload_bytes } => payload_bytes,
            _ => 0,
        },
        segment_max_bytes: 0,
    })
}
