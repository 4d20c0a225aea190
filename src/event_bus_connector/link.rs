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
//!
//! This file does the I/O (connecting, the reader and writer tasks, timers); what each
//! message means and what to send next is decided in [`super::session`].

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::config::{SocketPresence, classify_connect_error, probe_socket_path};
use super::core::Core;
use super::error::EventBusConnectorError;
use super::frames::FrameReader;
use super::replay::{DiskStream, ReadBack};
use super::session::{CloseReason, Connection, Incoming, Phase, Step, WriteJob, protocol};
use super::socket::{LinkSocket, TokioSocket, UringSocket};
use super::stats::{LinkState, Shared};
use crate::wal::Wal;

/// Bytes read per socket read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Decoded frames queued from the reader before it waits.
const INCOMING_QUEUE_FRAMES: usize = 64;
/// Write jobs queued for the writer before the link waits.
const WRITE_QUEUE_JOBS: usize = 4;

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

/// The writer's report.
enum Written {
    /// A write finished: the highest event in it, and its buffer for reuse.
    Done(Option<u64>, Vec<u8>),
    Failed(io::Error),
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
                            Some(Written::Done(last_event, buffer)) => {
                                connection.written(last_event, &self.core);
                                connection.recycle(buffer);
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
                            connection.read_back(item, &self.core)
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

async fn next_from_disk(disk: &mut Option<DiskStream>) -> Option<ReadBack> {
    match disk {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
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
        let (result, buffer) = socket.write_all(job.bytes).await;
        let report = match result {
            Ok(()) => Written::Done(job.last_event, buffer),
            Err(error) => Written::Failed(error),
        };
        let failed = matches!(report, Written::Failed(_));
        if written.send(report).is_err() || failed {
            return;
        }
    }
}
