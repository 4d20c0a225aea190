//! The reference broker (docs/protocol.md §8): a real Unix-socket broker that speaks the
//! daemoneye-eventbus wire protocol plus our hello/welcome/ack extension, for tests, demos
//! and benchmarks.
//!
//! Owns the broker's configuration, start-up and shutdown. It accepts many publishers and
//! subscribers, answers `PING`, sends welcome and cumulative acks, de-duplicates by
//! (publisher id, sequence) — persistently with a state directory — and routes events to
//! subscribers by topic pattern, from each subscriber's resume positions. A publisher's mark
//! is persisted and acked only once its events are in every current subscriber's socket, so
//! a broker crash loses and repeats nothing (docs/protocol.md §8). Every peer is untrusted: frames, connections, publishers,
//! patterns and outgoing queues are all bounded. The protocol is `docs/protocol.md`.
//!
//! - `socket`: the listening socket's path rules and cleanup.
//! - `connection`: one peer's protocol state machine.
//! - `router`: subscriptions and bounded per-connection queues.
//! - `state`: per-publisher high-water marks.
//! - `printer`: `--print` JSON lines.
//! - [`client`]: a small client for tests and tools (not the production connector).

pub mod client;
mod connection;
pub mod error;
mod frame_reader;
mod printer;
mod router;
mod socket;
mod state;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use error::{BrokerError, Operation};
pub use socket::MAX_SOCKET_PATH_BYTES;
pub use stats::BrokerStats;

use crate::wire::{FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES};
use printer::Printer;
use router::Router;
use socket::SocketIdentity;
use state::PublisherTable;
use stats::Counters;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Broker configuration; [`BrokerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// Unix socket path to listen on (≤ [`MAX_SOCKET_PATH_BYTES`]).
    pub socket_path: PathBuf,
    /// Where each publisher's high-water mark is persisted; `None` keeps them in memory.
    pub state_dir: Option<PathBuf>,
    /// Print every accepted event as one JSON line on stdout.
    pub print_events: bool,
    /// Most simultaneous connections; more are closed at once. Default 256.
    pub max_connections: usize,
    /// Largest accepted frame body. Default (and maximum) 1 MiB.
    pub max_frame_bytes: usize,
    /// Most distinct publisher ids remembered. Default 4096.
    pub max_publishers: usize,
    /// Most subscription patterns per connection. Default 64.
    pub max_patterns_per_connection: usize,
    /// Most frames queued for one connection. Default 16 384: with the byte bound below it
    /// lets a burst of small events through to a subscriber that reads as fast as it can
    /// (the broker reads a publisher's frames much faster than it can write them one by
    /// one to a subscriber), while the bytes stay bounded.
    pub subscriber_queue_max_messages: usize,
    /// Most bytes of event frames queued for one connection. Default 16 MiB.
    pub subscriber_queue_max_bytes: usize,
    /// Longest a subscriber's socket may refuse an event frame before the subscriber is
    /// disconnected as slow. Acks wait until every current subscriber's socket holds the
    /// events (docs/protocol.md §8), so this bounds how long a stuck subscriber delays
    /// them when nothing else overflows its queue. Default 10 000 ms.
    pub subscriber_write_timeout_ms: u64,
    /// Read buffer per connection. Default 64 KiB.
    pub read_buffer_bytes: usize,
}

impl BrokerConfig {
    /// The defaults, listening on `socket_path`.
    pub fn new(socket_path: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            socket_path: socket_path.into(),
            state_dir: None,
            print_events: false,
            max_connections: 256,
            max_frame_bytes: MAX_FRAME_BODY_BYTES,
            max_publishers: 4096,
            max_patterns_per_connection: 64,
            subscriber_queue_max_messages: 16 * 1024,
            subscriber_queue_max_bytes: 16 * 1024 * 1024,
            subscriber_write_timeout_ms: 10_000,
            read_buffer_bytes: 64 * 1024,
        }
    }

    fn validate(&self) -> Result<(), BrokerError> {
        let ranges = [
            ("max_connections", self.max_connections, 1, 1 << 20),
            (
                "max_frame_bytes",
                self.max_frame_bytes,
                16,
                MAX_FRAME_BODY_BYTES,
            ),
            ("max_publishers", self.max_publishers, 1, 1 << 24),
            (
                "max_patterns_per_connection",
                self.max_patterns_per_connection,
                1,
                1 << 16,
            ),
            (
                "subscriber_queue_max_messages",
                self.subscriber_queue_max_messages,
                1,
                1 << 20,
            ),
            // A queue must hold at least one largest frame, or big events could never pass.
            (
                "subscriber_queue_max_bytes",
                self.subscriber_queue_max_bytes,
                self.max_frame_bytes + FRAME_LENGTH_BYTES,
                1 << 34,
            ),
            ("read_buffer_bytes", self.read_buffer_bytes, 4096, 1 << 24),
            (
                "subscriber_write_timeout_ms",
                usize::try_from(self.subscriber_write_timeout_ms).unwrap_or(usize::MAX),
                1,
                3_600_000,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(BrokerError::InvalidConfig {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) router: Router,
    pub(crate) publishers: PublisherTable,
    pub(crate) counters: Counters,
    pub(crate) printer: Option<Printer>,
}

/// The reference broker.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// Validates the configuration, loads the state directory, binds the socket (see
    /// [`BrokerError`] for what is refused) and starts accepting. Must be called inside a
    /// tokio runtime; the broker runs on it until [`BrokerHandle::shutdown`].
    pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, BrokerError> {
        config.validate()?;
        let publishers = PublisherTable::open(config.state_dir.clone(), config.max_publishers)?;
        let bound = socket::bind(&config.socket_path)?;
        let identity = bound.identity();
        let listener = match UnixListener::from_std(bound.listener) {
            Ok(listener) => listener,
            Err(source) => {
                identity.remove();
                return Err(BrokerError::Io {
                    operation: Operation::BindSocket,
                    path: identity.path,
                    source,
                });
            }
        };
        let shared = Arc::new(Shared {
            printer: config.print_events.then(Printer::start),
            config,
            router: Router::default(),
            publishers,
            counters: Counters::default(),
        });
        let (shutdown_sender, shutdown_receiver) = watch::channel(());
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown_receiver,
            identity.clone(),
        ));
        tracing::info!(path = %identity.path.display(), "broker listening");
        Ok(BrokerHandle {
            socket_path: identity.path,
            shared,
            shutdown_sender,
            task,
        })
    }
}

/// A running broker. Dropping it also stops the broker (without waiting).
#[derive(Debug)]
pub struct BrokerHandle {
    socket_path: PathBuf,
    shared: Arc<Shared>,
    shutdown_sender: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BrokerHandle {
    /// The path the broker listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BrokerStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, closes every connection and removes the socket file.
    pub async fn shutdown(self) {
        // A send error means the accept loop is already gone, which is what we want.
        let _ = self.shutdown_sender.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "broker accept loop ended abnormally");
        }
    }
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<()>,
    identity: SocketIdentity,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = JoinSet::new();
    let mut next_connection_id: u64 = 0;
    loop {
        tokio::select! {
            // Either a shutdown request or the handle was dropped.
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        Counters::bump(&shared.counters.connections_accepted);
                        next_connection_id += 1;
                        let id = next_connection_id;
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            connection::serve(stream, id, shared).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        Counters::bump(&shared.counters.connections_refused);
                        tracing::warn!(max_connections = shared.config.max_connections, "connection limit reached; closing new connection");
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
    identity.remove();
    tracing::info!(path = %identity.path.display(), "broker stopped");
}
