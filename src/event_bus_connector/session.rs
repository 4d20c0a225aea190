//! One connection's protocol decisions: what to send next at the cursor, and what the
//! broker's messages mean (welcome, acks, PINGs, hostile input).
//!
//! Owns the per-connection state (phase, cursor, last ack, owed PONGs, the frame read back
//! from disk) and the rules of `docs/protocol.md` §10 on the client side. No I/O of its own:
//! the link ([`super::link`]) moves bytes and calls in here; this decides, and updates the
//! shared state ([`super::core`]) — acknowledged watermark, replay counters.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use super::buffer::{FrameSize, Next};
use super::core::Core;
use super::replay::{DiskStream, ReadBack};
use super::stats::{LinkState, Shared};
use crate::wal::Wal;
use crate::wire::control::ControlPayload;
use crate::wire::{
    Ack, Body, Hello, Message, MessageType, PROTOCOL_VERSION, Welcome, WireError, WireTime,
};

/// Frames are gathered into writes of about this size (a frame is never split) when the
/// broker is ours (it acknowledges, so it reads frames properly).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// PONGs owed beyond this are dropped (a PING flood is answered, within reason).
const PONGS_OWED_MAX: usize = 1024;
/// Write buffers kept for reuse (the writer's queue plus the one being written).
const SPARE_BUFFERS_MAX: usize = 8;
/// A PONG frame: its length prefix, then the raw body.
const PONG_FRAME: &[u8] = &[4, 0, 0, 0, b'P', b'O', b'N', b'G'];

/// Warn about a legacy broker once per process, not per connection.
static LEGACY_WARNED: AtomicBool = AtomicBool::new(false);

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum CloseReason {
    /// The broker closed the stream.
    EndOfStream,
    /// The broker sent a Shutdown message.
    BrokerShutdown,
    /// A read or write failed.
    Io(io::Error),
    /// The broker broke the protocol (logged as a warning, counted).
    Protocol(String),
    /// Reading unacknowledged events back from the WAL failed.
    ReadBack(crate::wal::WalError),
    /// Shutdown: everything was delivered.
    Drained,
    /// Shutdown: the drain time ran out.
    DrainTimeout,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::EndOfStream => f.write_str("the broker closed the connection"),
            CloseReason::BrokerShutdown => f.write_str("the broker announced shutdown"),
            CloseReason::Io(error) => write!(f, "socket error: {error}"),
            CloseReason::Protocol(reason) => write!(f, "protocol error: {reason}"),
            CloseReason::ReadBack(error) => write!(f, "cannot read the WAL back: {error}"),
            CloseReason::Drained => f.write_str("shutdown: everything delivered"),
            CloseReason::DrainTimeout => f.write_str("shutdown: drain time ran out"),
        }
    }
}

pub(super) fn protocol(reason: impl Into<String>) -> CloseReason {
    CloseReason::Protocol(reason.into())
}

/// What the connection's reader hands to the link.
pub(super) enum Incoming {
    Body(Body),
    Malformed(WireError),
    Failed(io::Error),
    End,
}

/// One write: whole frames, and the highest event sequence among them.
pub(super) struct WriteJob {
    pub(super) bytes: Vec<u8>,
    pub(super) last_event: Option<u64>,
}

/// Where a connection is in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    AwaitingWelcome,
    Acknowledging,
    Legacy,
}

/// What the connection can do next at its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Something can be written now.
    Write,
    /// The event at the cursor must come from disk and is not read yet.
    NeedDisk,
    /// Nothing to send (not sending yet, or nothing new).
    Idle,
}

/// The per-connection state.
pub(super) struct Connection {
    pub(super) number: u64,
    pub(super) phase: Phase,
    /// The next sequence to send.
    pub(super) cursor: u64,
    /// Highest sequence the broker said it holds in its welcome.
    pub(super) welcome_sequence: u64,
    /// Highest ack on this connection.
    pub(super) last_ack: Option<u64>,
    /// Highest sequence sent on earlier connections (for counting replays).
    pub(super) sent_before: u64,
    pub(super) pongs_owed: usize,
    pub(super) disk: Option<DiskStream>,
    /// A frame read from disk and not sent yet.
    pub(super) disk_peek: Option<(u64, bytes::Bytes)>,
    /// Read-back frames after `disk_peek`, from the chunk the disk stream handed over.
    pub(super) disk_queue: VecDeque<(u64, bytes::Bytes)>,
    /// Whether the current disk stream yielded anything at or past the cursor.
    pub(super) disk_yielded: bool,
    pub(super) publisher_id: Arc<str>,
    /// Write buffers back from the writer, reused so a write allocates nothing.
    pub(super) spare_buffers: Vec<Vec<u8>>,
}

impl Connection {
    pub(super) fn new(core: &Rc<RefCell<Core>>, number: u64) -> Connection {
        let core = core.borrow();
        Connection {
            number,
            phase: Phase::AwaitingWelcome,
            cursor: core.buffer.acked() + 1,
            welcome_sequence: 0,
            last_ack: None,
            sent_before: core.highest_sent,
            pongs_owed: 0,
            disk: None,
            disk_peek: None,
            disk_queue: VecDeque::new(),
            disk_yielded: false,
            publisher_id: Arc::clone(&core.publisher_id),
            spare_buffers: Vec::new(),
        }
    }

    pub(super) fn hello_frame(&self) -> Result<WriteJob, WireError> {
        let hello = Hello {
            publisher_id: self.publisher_id.to_string(),
            protocol_version: PROTOCOL_VERSION,
        };
        let bytes = hello
            .to_message(&self.publisher_id, self.number, WireTime::now())?
            .encode_frame()?;
        Ok(WriteJob {
            bytes,
            last_event: None,
        })
    }

    pub(super) fn sending(&self) -> bool {
        self.phase != Phase::AwaitingWelcome
    }

    pub(super) fn next_step(&mut self, core: &Core) -> Step {
        if !self.sending() {
            return Step::Idle;
        }
        // Never send below the watermark (a welcome or ack may have passed the cursor).
        self.cursor = self.cursor.max(core.buffer.acked() + 1);
        match core.buffer.next(self.cursor) {
            Next::Memory(_) => Step::Write,
            Next::Wait => Step::Idle,
            Next::Disk => {
                self.settle_disk_peek(core);
                match &self.disk_peek {
                    Some((sequence, _)) if *sequence == self.cursor => Step::Write,
                    _ if !core.buffer.next(self.cursor).is_disk() => self.next_step(core),
                    _ => Step::NeedDisk,
                }
            }
        }
    }

    /// Drops read-back frames below the cursor and skips spilled sequences the WAL does
    /// not have (lost to damage before this process started).
    pub(super) fn settle_disk_peek(&mut self, core: &Core) {
        while let Some((sequence, _)) = &self.disk_peek
            && *sequence < self.cursor
        {
            self.disk_peek = self.disk_queue.pop_front();
        }
        if let Some((sequence, _)) = &self.disk_peek {
            let sequence = *sequence;
            if sequence > self.cursor
                && let Some(range_end) = core.buffer.spilled_range_end(self.cursor)
            {
                let resume = sequence.min(range_end + 1);
                report_missing(self.cursor, resume - 1, core.backlog_end);
                self.cursor = resume;
            }
        }
    }

    /// Takes the read-back frame at the front (the next one moves up).
    fn take_disk_frame(&mut self) -> Option<(u64, bytes::Bytes)> {
        let frame = self.disk_peek.take();
        self.disk_peek = self.disk_queue.pop_front();
        frame
    }

    /// A chunk of read-back frames (or the end of the disk stream) arrived.
    pub(super) fn read_back(
        &mut self,
        item: Option<ReadBack>,
        core: &Rc<RefCell<Core>>,
    ) -> Result<(), CloseReason> {
        match item {
            Some(Ok(chunk)) => {
                let before = self.disk_queue.len();
                let cursor = self.cursor;
                self.disk_queue.extend(
                    chunk
                        .into_iter()
                        .filter(|(sequence, _)| *sequence >= cursor),
                );
                let arrived = self.disk_queue.len() - before;
                if arrived > 0 {
                    self.disk_yielded = true;
                    core.borrow()
                        .shared
                        .read_back
                        .fetch_add(arrived as u64, Relaxed);
                }
                if self.disk_peek.is_none() {
                    self.disk_peek = self.disk_queue.pop_front();
                }
            }
            Some(Err(error)) => {
                // Retried on the next connection, after the reconnect backoff.
                self.disk = None;
                return Err(CloseReason::ReadBack(error));
            }
            None => {
                // The stream read what was on disk when it listed the segments.
                if !self.disk_yielded {
                    let core = core.borrow();
                    if let Some(range_end) = core.buffer.spilled_range_end(self.cursor) {
                        report_missing(self.cursor, range_end, core.backlog_end);
                        self.cursor = range_end + 1;
                    }
                }
                self.disk = None;
                self.disk_yielded = false;
            }
        }
        Ok(())
    }

    /// Gathers frames at the cursor (and owed PONGs) into one write, in a reused buffer:
    /// frames of events held in memory are written into it directly around their payload.
    pub(super) fn gather(&mut self, core: &Rc<RefCell<Core>>) -> Option<WriteJob> {
        let mut bytes = self
            .spare_buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_BATCH_BYTES));
        bytes.clear();
        while self.pongs_owed > 0 {
            bytes.extend_from_slice(PONG_FRAME);
            self.pongs_owed -= 1;
        }
        let mut last_event = None;
        let mut core = core.borrow_mut();
        let core = &mut *core;
        // A legacy (upstream) broker reads a frame's body with one read. A large write is
        // queued on a Unix stream socket as several buffers of about 32 KiB, so a frame that
        // straddles two of them can be read half-way. One frame per write keeps every frame
        // in one buffer (up to that size), so it arrives whole.
        let one_frame_per_write = self.phase == Phase::Legacy;
        while self.sending()
            && bytes.len() < WRITE_BATCH_BYTES
            && (!one_frame_per_write || bytes.is_empty())
        {
            self.cursor = self.cursor.max(core.buffer.acked() + 1);
            let cursor = self.cursor;
            match core.buffer.next(cursor) {
                Next::Memory(held) => {
                    if !bytes.is_empty() && bytes.len() + held.frame_bytes() > WRITE_BATCH_BYTES {
                        break;
                    }
                    if let Err(error) = held.write_frame(&core.framer, cursor, &mut bytes) {
                        // Cannot happen: hand-over keeps only events whose frame is within
                        // the budget. Logged as the bug it would be; the link moves on.
                        tracing::error!(sequence = cursor, %error, "cannot frame a held event");
                    }
                }
                Next::Disk => {
                    self.settle_disk_peek(core);
                    match &self.disk_peek {
                        Some((sequence, frame)) if *sequence == self.cursor => {
                            if !bytes.is_empty() && bytes.len() + frame.len() > WRITE_BATCH_BYTES {
                                // Kept for the next write.
                                break;
                            }
                            bytes.extend_from_slice(frame);
                            self.take_disk_frame();
                        }
                        _ => break,
                    }
                }
                Next::Wait => break,
            }
            Shared::bump(&core.shared.events_sent);
            if self.cursor <= self.sent_before || self.cursor <= core.backlog_end {
                Shared::bump(&core.shared.replayed);
            }
            core.highest_sent = core.highest_sent.max(self.cursor);
            last_event = Some(self.cursor);
            self.cursor += 1;
        }
        if bytes.is_empty() {
            self.spare_buffers.push(bytes);
            return None;
        }
        Some(WriteJob { bytes, last_event })
    }

    /// A write buffer the writer is done with, for the next [`Connection::gather`].
    pub(super) fn recycle(&mut self, mut buffer: Vec<u8>) {
        // Keep the usual size only: a buffer grown for one large frame is let go.
        if buffer.capacity() <= 2 * WRITE_BATCH_BYTES
            && self.spare_buffers.len() < SPARE_BUFFERS_MAX
        {
            buffer.clear();
            self.spare_buffers.push(buffer);
        }
    }

    /// The writer finished a write.
    pub(super) fn written(&mut self, last_event: Option<u64>, core: &Rc<RefCell<Core>>) {
        if self.phase == Phase::Legacy
            && let Some(sequence) = last_event
        {
            // A legacy broker never acknowledges: written counts as delivered.
            core.borrow_mut().ack(sequence);
        }
    }

    pub(super) fn legacy_fallback(
        &mut self,
        core: &Rc<RefCell<Core>>,
        shared: &Shared,
        timeout: Duration,
    ) {
        self.phase = Phase::Legacy;
        shared.set_state(LinkState::ConnectedLegacy);
        shared.legacy_broker.store(true, Relaxed);
        if !LEGACY_WARNED.swap(true, Relaxed) {
            tracing::warn!(
                hello_timeout_ms = timeout.as_millis() as u64,
                "the broker did not answer hello: assuming a legacy broker; events written to \
                 the socket count as delivered (no acknowledgements, no de-duplication)"
            );
        }
        self.cursor = core.borrow().buffer.acked() + 1;
        core.borrow().wake_link.notify_one();
    }

    /// Handles one thing from the reader; `Err` closes the connection.
    pub(super) fn incoming(
        &mut self,
        message: Incoming,
        core: &Rc<RefCell<Core>>,
        wal: &Wal,
        shared: &Shared,
    ) -> Result<(), CloseReason> {
        let message = match message {
            Incoming::Body(Body::Ping) => {
                self.pongs_owed = (self.pongs_owed + 1).min(PONGS_OWED_MAX);
                return Ok(());
            }
            Incoming::Body(Body::Pong) => return Ok(()),
            Incoming::Body(Body::Message(message)) => message,
            Incoming::Malformed(error) => {
                return Err(protocol(format!("malformed frame: {error}")));
            }
            Incoming::Failed(error) => return Err(CloseReason::Io(error)),
            Incoming::End => return Err(CloseReason::EndOfStream),
        };
        match message.message_type {
            MessageType::Control if message.topic == Welcome::TOPIC => {
                self.welcome(&message, core, wal, shared)
            }
            MessageType::Control if message.topic == Ack::TOPIC => self.ack(&message, core),
            MessageType::Shutdown => Err(CloseReason::BrokerShutdown),
            _ => {
                tracing::debug!(topic = %message.topic, "ignoring message from the broker");
                Ok(())
            }
        }
    }

    pub(super) fn welcome(
        &mut self,
        message: &Message,
        core: &Rc<RefCell<Core>>,
        wal: &Wal,
        shared: &Shared,
    ) -> Result<(), CloseReason> {
        let welcome = Welcome::from_message(message)
            .map_err(|error| protocol(format!("bad welcome: {error}")))?;
        if self.phase == Phase::Acknowledging {
            return Err(protocol("a second welcome"));
        }
        if welcome.protocol_version != PROTOCOL_VERSION {
            return Err(protocol(format!(
                "welcome for protocol version {} (we speak {PROTOCOL_VERSION})",
                welcome.protocol_version
            )));
        }
        if let Some(held) = welcome.highest_sequence {
            let durable = wal.durable_sequence().max(core.borrow().buffer.highest());
            if held > durable {
                return Err(protocol(format!(
                    "welcome claims sequence {held}, beyond the last durable sequence {durable}"
                )));
            }
            self.welcome_sequence = held;
            core.borrow_mut().ack(held);
        }
        if self.phase == Phase::Legacy {
            tracing::info!("a late welcome: the broker acknowledges after all");
        }
        self.phase = Phase::Acknowledging;
        shared.set_state(LinkState::Connected);
        shared.legacy_broker.store(false, Relaxed);
        // Send from the watermark (after a legacy start, writes not yet finished are sent
        // again); a disk stream positioned further on is restarted.
        let core = core.borrow();
        self.cursor = core.buffer.acked() + 1;
        self.disk = None;
        self.disk_peek = None;
        self.disk_queue.clear();
        self.disk_yielded = false;
        tracing::info!(
            resume_after = ?welcome.highest_sequence,
            next = self.cursor,
            "broker welcomed us"
        );
        Ok(())
    }

    pub(super) fn ack(
        &mut self,
        message: &Message,
        core: &Rc<RefCell<Core>>,
    ) -> Result<(), CloseReason> {
        let ack =
            Ack::from_message(message).map_err(|error| protocol(format!("bad ack: {error}")))?;
        let held = ack.highest_sequence;
        match self.phase {
            Phase::AwaitingWelcome => return Err(protocol("an ack before the welcome")),
            Phase::Legacy => return Ok(()),
            Phase::Acknowledging => {}
        }
        if let Some(last) = self.last_ack
            && held < last
        {
            return Err(protocol(format!(
                "ack went backwards from {last} to {held}"
            )));
        }
        let mut core = core.borrow_mut();
        let sent = core.highest_sent.max(self.welcome_sequence);
        if held > sent {
            return Err(protocol(format!(
                "ack for sequence {held}, never sent (highest sent {sent})"
            )));
        }
        self.last_ack = Some(held);
        core.ack(held);
        Ok(())
    }
}

/// Logs spilled sequences the WAL reader did not find. In the start-up backlog that is
/// damage found at open (already reported); for events spilled by this process it would be
/// a bug, so it is an error, but the link moves on rather than stalling every later event.
pub(super) fn report_missing(from: u64, to: u64, backlog_end: u64) {
    if to <= backlog_end {
        tracing::warn!(
            from,
            to,
            "events missing from the WAL (lost to damage); skipping them"
        );
    } else {
        tracing::error!(
            from,
            to,
            "spilled events not found in the WAL; skipping them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::event_bus_connector::backpressure::Hysteresis;
    use crate::event_bus_connector::buffer::PublishBuffer;
    use crate::event_bus_connector::held::HeldEvent;
    use tokio::sync::watch;

    fn core_with_frames(frames: u64) -> Rc<RefCell<Core>> {
        let (acked, _receiver) = watch::channel(0);
        let mut core = Core::new(
            PublishBuffer::new(1 << 20, 0),
            Hysteresis::new(70, 50),
            1 << 20,
            Arc::new(Shared::new(0)),
            acked,
            Arc::from("test-publisher"),
        );
        for sequence in 1..=frames {
            let held = HeldEvent::new(
                &core.framer,
                sequence,
                EventKind::Start,
                bytes::Bytes::from(vec![sequence as u8; 600]),
                WireTime::EPOCH,
            );
            core.ingest(sequence, held);
        }
        Rc::new(RefCell::new(core))
    }

    /// The frame `core_with_frames` holds for `sequence`, built the reference way.
    fn frame(sequence: u64) -> Vec<u8> {
        crate::wire::budget::frame_with_payload(
            "test-publisher",
            sequence,
            EventKind::Start,
            vec![sequence as u8; 600],
            WireTime::EPOCH,
        )
        .expect("frame")
    }

    fn frame_bytes(sequence: u64) -> usize {
        frame(sequence).len()
    }

    fn writes(
        connection: &mut Connection,
        core: &Rc<RefCell<Core>>,
    ) -> Vec<(Vec<u8>, Option<u64>)> {
        std::iter::from_fn(|| connection.gather(core))
            .map(|job| (job.bytes, job.last_event))
            .collect()
    }

    #[test]
    fn an_acknowledging_broker_gets_frames_gathered_into_one_write() {
        let core = core_with_frames(10);
        let mut connection = Connection::new(&core, 1);
        connection.phase = Phase::Acknowledging;
        let expected: Vec<u8> = (1..=10).flat_map(frame).collect();
        assert_eq!(writes(&mut connection, &core), vec![(expected, Some(10))]);
    }

    #[test]
    fn a_legacy_broker_gets_one_frame_per_write_and_pongs_alone() {
        let core = core_with_frames(3);
        let mut connection = Connection::new(&core, 1);
        connection.phase = Phase::Legacy;
        connection.pongs_owed = 2;
        let pong = Body::Pong.encode_frame().expect("pong");
        assert_eq!(pong, PONG_FRAME);
        let lengths: Vec<(usize, Option<u64>)> = writes(&mut connection, &core)
            .into_iter()
            .map(|(bytes, last)| (bytes.len(), last))
            .collect();
        assert_eq!(
            lengths,
            vec![
                (2 * pong.len(), None),
                (frame_bytes(1), Some(1)),
                (frame_bytes(2), Some(2)),
                (frame_bytes(3), Some(3)),
            ]
        );
    }

    #[test]
    fn writes_stop_at_the_batch_size_and_recycled_buffers_are_reused() {
        let events = (2 * WRITE_BATCH_BYTES / frame_bytes(1)) as u64;
        let core = core_with_frames(events);
        let mut connection = Connection::new(&core, 1);
        connection.phase = Phase::Acknowledging;
        let first = connection.gather(&core).expect("a write");
        assert!(first.bytes.len() <= WRITE_BATCH_BYTES);
        let address = first.bytes.as_ptr();
        connection.recycle(first.bytes);
        let second = connection.gather(&core).expect("a second write");
        assert_eq!(second.bytes.as_ptr(), address, "the buffer is reused");
        assert!(second.last_event > first.last_event);
    }
}
