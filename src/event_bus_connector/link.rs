//! The broker link: the socket state machine on the ring thread.
//!
//! Owns connecting (with backoff), hello → welcome (or the legacy fallback after the hello
//! timeout), sending in sequence order from the buffer or the WAL on disk, cumulative acks,
//! answering PINGs, and closing on hostile input. States: Idle → Connecting →
//! AwaitingWelcome → Connected | ConnectedLegacy → (closed) Backoff → Connecting … →
//! Stopped. Rules it keeps:
//! - the acknowledged watermark only moves forward and never past what this process has
//!   written to a socket (or what the WAL holds, for a welcome);
//! - after every (re)connection, sending restarts at the watermark + 1: everything not
//!   acknowledged is sent again, in order, each event once per connection;
//! - bad input closes the connection with a logged reason; it never panics;
//! - reads are never abandoned mid-flight: a connection is stopped by shutting the socket
//!   down, which completes its pending read and write.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::buffer::Next;
use super::config::{SocketPresence, classify_connect_error, probe_socket_path};
use super::core::Core;
use super::error::EventBusConnectorError;
use super::frames::FrameReader;
use super::replay::DiskStream;
use super::socket::{LinkSocket, TokioSocket, UringSocket};
use super::stats::{LinkState, Shared};
use crate::wal::Wal;
use crate::wire::control::ControlPayload;
use crate::wire::{
    Ack, Body, Hello, Message, MessageType, PROTOCOL_VERSION, Welcome, WireError, WireTime,
};

/// Bytes read per socket read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Decoded frames queued from the reader before it waits.
const INCOMING_QUEUE_FRAMES: usize = 64;
/// Write jobs queued for the writer before the link waits.
const WRITE_QUEUE_JOBS: usize = 4;
/// Frames are gathered into writes of about this size (a frame is never split).
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// PONGs owed beyond this are dropped (a PING flood is answered, within reason).
const PONGS_OWED_MAX: usize = 1024;

/// Warn about a legacy broker once per process, not per connection.
static LEGACY_WARNED: AtomicBool = AtomicBool::new(false);

/// A request from the handles to the link.
pub(crate) enum LinkCommand {
    /// Start connecting to `path` (again) and report how the first attempt went.
    Connect {
        path: PathBuf,
        first_attempt: oneshot::Sender<Result<(), EventBusConnectorError>>,
    },
    /// Skip the current backoff wait (a reconnect is wanted now).
    Nudge,
    /// Deliver what is pending for at most `drain_timeout`, then stop.
    Shutdown {
        drain_timeout: Duration,
        done: Option<oneshot::Sender<()>>,
    },
}

/// Opens a socket of the kind the ring runs.
#[allow(async_fn_in_trait)] // Used on one thread only.
pub(crate) trait Dialer: 'static {
    type Socket: LinkSocket;
    async fn dial(&self, path: &Path) -> io::Result<Self::Socket>;
}

/// tokio sockets (portable and simulated backends).
pub(crate) struct TokioDialer;

impl Dialer for TokioDialer {
    type Socket = TokioSocket;
    async fn dial(&self, path: &Path) -> io::Result<TokioSocket> {
        TokioSocket::connect(path).await
    }
}

/// tokio-uring sockets (io_uring backend).
pub(crate) struct UringDialer;

impl Dialer for UringDialer {
    type Socket = UringSocket;
    async fn dial(&self, path: &Path) -> io::Result<UringSocket> {
        UringSocket::connect(path).await
    }
}

/// Fixed settings of the link.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    pub hello_timeout: Duration,
    pub reconnect_base_ms: u64,
    pub reconnect_cap_ms: u64,
    pub jitter_seed: u64,
    pub wal_dir: PathBuf,
    /// Drain time when every handle is gone without an explicit shutdown.
    pub drain_timeout: Duration,
}

/// Why a connection ended.
#[derive(Debug)]
enum CloseReason {
    /// The broker closed the stream.
    EndOfStream,
    /// The broker sent a Shutdown message.
    BrokerShutdown,
    /// A read or write failed.
    Io(io::Error),
    /// The broker broke the protocol (logged as a warning, counted).
    Protocol(String),
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
            CloseReason::Drained => f.write_str("shutdown: everything delivered"),
            CloseReason::DrainTimeout => f.write_str("shutdown: drain time ran out"),
        }
    }
}

fn protocol(reason: impl Into<String>) -> CloseReason {
    CloseReason::Protocol(reason.into())
}

/// What the connection's reader hands to the link.
enum Incoming {
    Body(Body),
    Malformed(WireError),
    Failed(io::Error),
    End,
}

/// One write: whole frames, and the highest event sequence among them.
struct WriteJob {
    bytes: Vec<u8>,
    last_event: Option<u64>,
}

/// The writer's report.
enum Written {
    Done(Option<u64>),
    Failed(io::Error),
}

/// Where a connection is in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingWelcome,
    Acknowledging,
    Legacy,
}

/// The link task.
pub(crate) struct Link<D: Dialer> {
    dialer: D,
    core: Rc<RefCell<Core>>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<LinkCommand>,
    /// False once every handle is gone (the channel is closed and must not be polled).
    commands_open: bool,
    settings: LinkSettings,
    wal: Wal,
    backoff: Backoff,
    path: Option<PathBuf>,
    first_attempt: Option<oneshot::Sender<Result<(), EventBusConnectorError>>>,
    drain_deadline: Option<Instant>,
    done: Vec<oneshot::Sender<()>>,
    connection_number: u64,
}

impl<D: Dialer> Link<D> {
    pub(crate) fn new(
        dialer: D,
        core: Rc<RefCell<Core>>,
        commands: mpsc::UnboundedReceiver<LinkCommand>,
        settings: LinkSettings,
        wal: Wal,
    ) -> Link<D> {
        let shared = Arc::clone(&core.borrow().shared);
        let backoff = Backoff::new(
            settings.reconnect_base_ms,
            settings.reconnect_cap_ms,
            settings.jitter_seed,
        );
        Link {
            dialer,
            core,
            shared,
            commands,
            commands_open: true,
            settings,
            wal,
            backoff,
            path: None,
            first_attempt: None,
            drain_deadline: None,
            done: Vec::new(),
            connection_number: 0,
        }
    }

    /// Runs until shut down; returns whom to tell once the final checkpoint is written.
    pub(crate) async fn run(mut self) -> Vec<oneshot::Sender<()>> {
        loop {
            if self.finished() {
                break;
            }
            let Some(path) = self.path.clone() else {
                // Idle: nothing to connect to until `connect()`.
                let command = self.next_command().await;
                self.command_or_closed(command);
                if self.drain_deadline.is_some() && self.path.is_none() {
                    break;
                }
                continue;
            };
            self.shared.set_state(LinkState::Connecting);
            match self.attempt(&path).await {
                Ok(Some(socket)) => {
                    self.report_first_attempt(Ok(()));
                    Shared::bump(&self.shared.connections);
                    self.connection_number += 1;
                    let (reason, useful) = self.run_connection(socket).await;
                    match &reason {
                        CloseReason::Protocol(_) => {
                            Shared::bump(&self.shared.protocol_errors);
                            tracing::warn!(%reason, "closing broker connection");
                        }
                        CloseReason::Drained | CloseReason::DrainTimeout => {
                            tracing::info!(%reason, "broker connection closed")
                        }
                        _ => tracing::warn!(%reason, "broker connection lost; reconnecting"),
                    }
                    if useful {
                        self.backoff.reset();
                    }
                }
                Ok(None) => self.report_first_attempt(Ok(())),
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to the broker");
                    self.report_first_attempt(Err(error));
                }
            }
            if self.finished() {
                break;
            }
            self.wait_before_reconnect().await;
        }
        self.shared.set_state(LinkState::Stopped);
        self.report_first_attempt(Err(EventBusConnectorError::ShutDown));
        std::mem::take(&mut self.done)
    }

    /// Shut down, and either everything is delivered or the drain time is over.
    fn finished(&self) -> bool {
        match self.drain_deadline {
            None => false,
            Some(deadline) => self.core.borrow().buffer.is_drained() || Instant::now() >= deadline,
        }
    }

    /// The next command; never resolves once the channel is closed.
    async fn next_command(&mut self) -> Option<LinkCommand> {
        if self.commands_open {
            self.commands.recv().await
        } else {
            std::future::pending().await
        }
    }

    /// Handles a command, or the last handle going away: that drains like a shutdown.
    fn command_or_closed(&mut self, command: Option<LinkCommand>) {
        match command {
            Some(command) => self.command(command),
            None => {
                self.commands_open = false;
                self.start_draining(self.settings.drain_timeout, None);
            }
        }
    }

    fn command(&mut self, command: LinkCommand) {
        match command {
            LinkCommand::Connect {
                path,
                first_attempt,
            } => {
                // A new path takes effect at the next connection attempt.
                self.path = Some(path);
                self.report_first_attempt(Ok(()));
                if self.shared.state().is_connected() {
                    let _ = first_attempt.send(Ok(()));
                } else {
                    // Reported after the next attempt, which a backoff wait does not delay.
                    self.first_attempt = Some(first_attempt);
                }
            }
            LinkCommand::Nudge => {}
            LinkCommand::Shutdown {
                drain_timeout,
                done,
            } => self.start_draining(drain_timeout, done),
        }
    }

    fn start_draining(&mut self, drain_timeout: Duration, done: Option<oneshot::Sender<()>>) {
        let deadline = Instant::now() + drain_timeout;
        self.drain_deadline = Some(match self.drain_deadline {
            Some(earlier) => earlier.min(deadline),
            None => deadline,
        });
        self.done.extend(done);
    }

    fn report_first_attempt(&mut self, result: Result<(), EventBusConnectorError>) {
        if let Some(first) = self.first_attempt.take() {
            let _ = first.send(result);
        }
    }

    /// One connection attempt: `Ok(None)` when the broker is not there (yet).
    async fn attempt(&mut self, path: &Path) -> Result<Option<D::Socket>, EventBusConnectorError> {
        let failed = |shared: &Shared| Shared::bump(&shared.connect_failures);
        match probe_socket_path(path) {
            Ok(SocketPresence::Socket) => {}
            Ok(SocketPresence::Missing) => {
                failed(&self.shared);
                tracing::debug!(path = %path.display(), "broker socket not there yet");
                return Ok(None);
            }
            Err(error) => {
                failed(&self.shared);
                return Err(error);
            }
        }
        match self.dialer.dial(path).await {
            Ok(socket) => Ok(Some(socket)),
            Err(error) => {
                failed(&self.shared);
                tracing::debug!(path = %path.display(), %error, "broker not accepting");
                classify_connect_error(path, error).map(|()| None)
            }
        }
    }

    async fn wait_before_reconnect(&mut self) {
        self.shared.set_state(LinkState::Backoff);
        let mut wake_at = Instant::now() + self.backoff.next_delay();
        loop {
            if let Some(deadline) = self.drain_deadline {
                wake_at = wake_at.min(deadline);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => return,
                command = self.next_command() => match command {
                    Some(LinkCommand::Nudge) => return,
                    command => self.command_or_closed(command),
                },
            }
            if self.finished() || self.first_attempt.is_some() {
                return;
            }
        }
    }

    /// Serves one connection until it ends; returns why, and whether it got far enough
    /// (welcome, or the legacy fallback) to reset the backoff.
    async fn run_connection(&mut self, socket: D::Socket) -> (CloseReason, bool) {
        let socket = Rc::new(socket);
        let (incoming_sender, mut incoming) = mpsc::channel(INCOMING_QUEUE_FRAMES);
        let reader = tokio::task::spawn_local(read_loop(Rc::clone(&socket), incoming_sender));
        let (jobs, job_receiver) = mpsc::channel(WRITE_QUEUE_JOBS);
        let (written_sender, mut written) = mpsc::unbounded_channel();
        let writer =
            tokio::task::spawn_local(write_loop(Rc::clone(&socket), job_receiver, written_sender));
        let mut connection = Connection::new(&self.core, self.connection_number);
        self.shared.set_state(LinkState::AwaitingWelcome);
        let hello_deadline = Instant::now() + self.settings.hello_timeout;
        let reason = match connection.hello_frame() {
            Ok(hello) => match jobs.send(hello).await {
                Ok(()) => loop {
                    if let Some(reason) = self.drain_check() {
                        break reason;
                    }
                    let wake_link = Rc::clone(&self.core.borrow().wake_link);
                    let next = connection.next_step(&self.core.borrow());
                    if next == Step::NeedDisk && connection.disk.is_none() {
                        connection.disk = Some(DiskStream::start(
                            self.settings.wal_dir.clone(),
                            connection.cursor,
                            Arc::clone(&self.core.borrow().publisher_id),
                        ));
                    }
                    let can_write = next == Step::Write || connection.pongs_owed > 0;
                    let drain_deadline = self.drain_deadline;
                    let outcome = tokio::select! {
                        biased;
                        command = self.next_command() => {
                            self.command_or_closed(command);
                            Ok(())
                        }
                        message = incoming.recv() => match message {
                            Some(message) => connection.incoming(message, &self.core, &self.wal, &self.shared),
                            None => Err(CloseReason::EndOfStream),
                        },
                        report = written.recv() => match report {
                            Some(Written::Done(last_event)) => {
                                connection.written(last_event, &self.core);
                                Ok(())
                            }
                            Some(Written::Failed(error)) => Err(CloseReason::Io(error)),
                            None => Err(CloseReason::EndOfStream),
                        },
                        () = tokio::time::sleep_until(hello_deadline), if connection.phase == Phase::AwaitingWelcome => {
                            connection.legacy_fallback(&self.core, &self.shared, self.settings.hello_timeout);
                            Ok(())
                        }
                        () = sleep_until_option(drain_deadline), if drain_deadline.is_some() => Err(CloseReason::DrainTimeout),
                        permit = jobs.reserve(), if can_write => match permit {
                            Ok(permit) => {
                                if let Some(job) = connection.gather(&self.core) {
                                    permit.send(job);
                                }
                                Ok(())
                            }
                            Err(_) => Err(CloseReason::EndOfStream),
                        },
                        item = next_from_disk(&mut connection.disk), if next == Step::NeedDisk => {
                            connection.read_back(item, &self.core);
                            Ok(())
                        }
                        () = wake_link.notified() => Ok(()),
                    };
                    if let Err(reason) = outcome {
                        break reason;
                    }
                },
                Err(_) => CloseReason::EndOfStream,
            },
            Err(error) => protocol(format!("cannot encode hello: {error}")),
        };
        // Stop the connection: shutting the socket down completes the pending read and
        // write; the reader may be waiting for room in the incoming queue, so drop it first.
        socket.shut_down();
        drop(incoming);
        drop(jobs);
        let _ = writer.await;
        let _ = reader.await;
        self.shared.set_state(LinkState::Backoff);
        let useful = connection.phase != Phase::AwaitingWelcome;
        (reason, useful)
    }

    fn drain_check(&self) -> Option<CloseReason> {
        let deadline = self.drain_deadline?;
        if self.core.borrow().buffer.is_drained() {
            return Some(CloseReason::Drained);
        }
        (Instant::now() >= deadline).then_some(CloseReason::DrainTimeout)
    }
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_from_disk(disk: &mut Option<DiskStream>) -> Option<super::replay::ReadBack> {
    match disk {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// What the connection can do next at its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Something can be written now.
    Write,
    /// The event at the cursor must come from disk and is not read yet.
    NeedDisk,
    /// Nothing to send (not sending yet, or nothing new).
    Idle,
}

/// The per-connection state.
struct Connection {
    number: u64,
    phase: Phase,
    /// The next sequence to send.
    cursor: u64,
    /// Highest sequence the broker said it holds in its welcome.
    welcome_sequence: u64,
    /// Highest ack on this connection.
    last_ack: Option<u64>,
    /// Highest sequence sent on earlier connections (for counting replays).
    sent_before: u64,
    pongs_owed: usize,
    disk: Option<DiskStream>,
    /// A frame read from disk and not sent yet.
    disk_peek: Option<(u64, bytes::Bytes)>,
    /// Whether the current disk stream yielded anything at or past the cursor.
    disk_yielded: bool,
    publisher_id: Arc<str>,
}

impl Connection {
    fn new(core: &Rc<RefCell<Core>>, number: u64) -> Connection {
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
            disk_yielded: false,
            publisher_id: Arc::clone(&core.publisher_id),
        }
    }

    fn hello_frame(&self) -> Result<WriteJob, WireError> {
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

    fn sending(&self) -> bool {
        self.phase != Phase::AwaitingWelcome
    }

    fn next_step(&mut self, core: &Core) -> Step {
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
                    _ if core.buffer.next(self.cursor) != Next::Disk => self.next_step(core),
                    _ => Step::NeedDisk,
                }
            }
        }
    }

    /// Drops read-back frames below the cursor and skips spilled sequences the WAL does
    /// not have (lost to damage before this process started).
    fn settle_disk_peek(&mut self, core: &Core) {
        if let Some((sequence, _)) = &self.disk_peek {
            let sequence = *sequence;
            if sequence < self.cursor {
                self.disk_peek = None;
            } else if sequence > self.cursor
                && let Some(range_end) = core.buffer.spilled_range_end(self.cursor)
            {
                let resume = sequence.min(range_end + 1);
                report_missing(self.cursor, resume - 1, core.backlog_end);
                self.cursor = resume;
            }
        }
    }

    /// A read-back frame (or the end of the disk stream) arrived.
    fn read_back(&mut self, item: Option<super::replay::ReadBack>, core: &Rc<RefCell<Core>>) {
        match item {
            Some(Ok((sequence, frame))) => {
                if sequence >= self.cursor {
                    self.disk_yielded = true;
                    Shared::bump(&core.borrow().shared.read_back);
                    self.disk_peek = Some((sequence, frame));
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "reading the WAL back failed; retrying");
                self.disk = None;
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
    }

    /// Gathers frames at the cursor (and owed PONGs) into one write.
    fn gather(&mut self, core: &Rc<RefCell<Core>>) -> Option<WriteJob> {
        let mut bytes = Vec::with_capacity(WRITE_BATCH_BYTES);
        let pong = Body::Pong.encode_frame().unwrap_or_default();
        while self.pongs_owed > 0 {
            bytes.extend_from_slice(&pong);
            self.pongs_owed -= 1;
        }
        let mut last_event = None;
        let mut core = core.borrow_mut();
        while self.sending() && bytes.len() < WRITE_BATCH_BYTES {
            self.cursor = self.cursor.max(core.buffer.acked() + 1);
            let frame = match core.buffer.next(self.cursor) {
                Next::Memory(frame) => frame,
                Next::Disk => {
                    self.settle_disk_peek(&core);
                    match self.disk_peek.take() {
                        Some((sequence, frame)) if sequence == self.cursor => frame,
                        other => {
                            self.disk_peek = other;
                            break;
                        }
                    }
                }
                Next::Wait => break,
            };
            if !bytes.is_empty() && bytes.len() + frame.len() > WRITE_BATCH_BYTES {
                // Keep it for the next write (it stays where it came from, except a frame
                // read back from disk, which is put back).
                if core.buffer.next(self.cursor) == Next::Disk {
                    self.disk_peek = Some((self.cursor, frame));
                }
                break;
            }
            bytes.extend_from_slice(&frame);
            Shared::bump(&core.shared.events_sent);
            if self.cursor <= self.sent_before || self.cursor <= core.backlog_end {
                Shared::bump(&core.shared.replayed);
            }
            core.highest_sent = core.highest_sent.max(self.cursor);
            last_event = Some(self.cursor);
            self.cursor += 1;
        }
        (!bytes.is_empty()).then_some(WriteJob { bytes, last_event })
    }

    /// The writer finished a write.
    fn written(&mut self, last_event: Option<u64>, core: &Rc<RefCell<Core>>) {
        if self.phase == Phase::Legacy
            && let Some(sequence) = last_event
        {
            // A legacy broker never acknowledges: written counts as delivered.
            core.borrow_mut().ack(sequence);
        }
    }

    fn legacy_fallback(&mut self, core: &Rc<RefCell<Core>>, shared: &Shared, timeout: Duration) {
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
    fn incoming(
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

    fn welcome(
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
        self.disk_yielded = false;
        tracing::info!(
            resume_after = ?welcome.highest_sequence,
            next = self.cursor,
            "broker welcomed us"
        );
        Ok(())
    }

    fn ack(&mut self, message: &Message, core: &Rc<RefCell<Core>>) -> Result<(), CloseReason> {
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
fn report_missing(from: u64, to: u64, backlog_end: u64) {
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

/// Reads frames until the stream ends or fails, handing them to the link.
async fn read_loop<S: LinkSocket>(socket: Rc<S>, incoming: mpsc::Sender<Incoming>) {
    let mut frames = FrameReader::default();
    let mut buffer = Vec::with_capacity(READ_BUFFER_BYTES);
    loop {
        buffer.clear();
        let (result, returned) = socket.read(buffer).await;
        buffer = returned;
        let message = match result {
            Ok(0) => Incoming::End,
            Ok(_) => {
                frames.push(&buffer);
                let mut stop = false;
                loop {
                    match frames.next_body() {
                        Ok(Some(body)) => {
                            if incoming.send(Incoming::Body(body)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            let _ = incoming.send(Incoming::Malformed(error)).await;
                            stop = true;
                            break;
                        }
                    }
                }
                if stop {
                    return;
                }
                continue;
            }
            Err(error) => Incoming::Failed(error),
        };
        let _ = incoming.send(message).await;
        return;
    }
}

/// Writes jobs in order until the queue closes or a write fails.
async fn write_loop<S: LinkSocket>(
    socket: Rc<S>,
    mut jobs: mpsc::Receiver<WriteJob>,
    written: mpsc::UnboundedSender<Written>,
) {
    while let Some(job) = jobs.recv().await {
        let (result, _) = socket.write_all(job.bytes).await;
        let report = match result {
            Ok(()) => Written::Done(job.last_event),
            Err(error) => Written::Failed(error),
        };
        let failed = matches!(report, Written::Failed(_));
        if written.send(report).is_err() || failed {
            return;
        }
    }
}
