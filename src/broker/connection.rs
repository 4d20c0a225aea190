//! One peer connection: reading frames, answering health checks, hello/welcome, acks,
//! de-duplication, subscriptions, and routing its events.
//!
//! Owns the per-connection protocol state. Every peer is untrusted: a frame's length is
//! checked before its buffer is allocated, and any protocol error closes this connection
//! (logged with the reason and counted) without affecting any other.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::broker::Shared;
use crate::broker::error::BrokerError;
use crate::broker::router::Outbox;
use crate::broker::state::PublisherEntry;
use crate::broker::stats::Counters;
use crate::wire::control::{ControlPayload, HELLO_TOPIC, SUBSCRIBE_TOPIC};
use crate::wire::frame::{self, FRAME_LENGTH_BYTES};
use crate::wire::topic::{Pattern, Topic};
use crate::wire::{
    Ack, Body, Hello, Message, MessageType, PROTOCOL_VERSION, Subscribe, Subscribed, Welcome,
    WireError, WireTime,
};

/// Origin used for the ids of messages the broker sends.
const BROKER_ORIGIN: &str = "procmond-wal-broker";

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed input: {0}")]
    Wire(#[from] WireError),
    #[error("hello must be the first message and sent once")]
    MisplacedHello,
    #[error("unsupported protocol version {version} (broker speaks {PROTOCOL_VERSION})")]
    UnsupportedProtocolVersion { version: u32 },
    #[error("publisher table is full ({max_publishers} publishers)")]
    TooManyPublishers { max_publishers: usize },
    #[error("subscription would have {patterns} patterns (limit {max_patterns})")]
    TooManyPatterns {
        patterns: usize,
        max_patterns: usize,
    },
    #[error("cannot persist the high-water mark: {0}")]
    State(#[from] BrokerError),
    #[error("outgoing queue overflowed (slow subscriber)")]
    SlowSubscriber,
    #[error("writer stopped (peer gone)")]
    WriterGone,
}

impl CloseReason {
    /// Whether the peer broke the protocol (as opposed to going away or being slow).
    fn is_protocol_error(&self) -> bool {
        !matches!(
            self,
            CloseReason::Io(_)
                | CloseReason::State(_)
                | CloseReason::SlowSubscriber
                | CloseReason::WriterGone
        )
    }
}

struct Connection {
    id: u64,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    publisher: Option<PublisherEntry>,
    publisher_id: Option<String>,
    messages_seen: u64,
    ack_pending: bool,
    reply_sequence: u64,
}

/// Serves one connection until the peer leaves, breaks the protocol, or is too slow.
pub(crate) async fn serve(stream: UnixStream, id: u64, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    let (outbox, queue) = Outbox::new(
        shared.config.subscriber_queue_max_messages,
        shared.config.subscriber_queue_max_bytes,
    );
    let mut writer = tokio::spawn(write_frames(write_half, queue, Arc::clone(&outbox)));
    let mut connection = Connection {
        id,
        shared,
        outbox,
        publisher: None,
        publisher_id: None,
        messages_seen: 0,
        ack_pending: false,
        reply_sequence: 0,
    };
    let mut reader =
        BufReader::with_capacity(connection.shared.config.read_buffer_bytes, read_half);
    let outbox = Arc::clone(&connection.outbox);
    let outcome = tokio::select! {
        outcome = connection.read_loop(&mut reader) => outcome,
        () = outbox.overflowed() => Err(CloseReason::SlowSubscriber),
        _ = &mut writer => Err(CloseReason::WriterGone),
    };
    connection.shared.router.unsubscribe(id);
    writer.abort();
    match outcome {
        Ok(()) => tracing::debug!(connection_id = id, "peer closed the connection"),
        Err(reason) => {
            if reason.is_protocol_error() {
                Counters::bump(
                    &connection
                        .shared
                        .counters
                        .connections_closed_for_protocol_errors,
                );
            }
            tracing::warn!(connection_id = id, publisher_id = connection.publisher_id.as_deref(), %reason, "closing connection");
        }
    }
}

async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    outbox: Arc<Outbox>,
) {
    while let Some(frame) = queue.recv().await {
        // One write call per frame: upstream readers assume a frame arrives whole.
        if let Err(error) = writer.write_all(&frame).await {
            tracing::debug!(%error, "write failed");
            return;
        }
        outbox.written(frame.len());
    }
}

/// Reads one frame (prefix and body, in one buffer so it can be forwarded as is); `None` at
/// a clean end of stream between frames.
async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
    max_frame_bytes: usize,
) -> Result<Option<Vec<u8>>, CloseReason> {
    let mut prefix = [0u8; FRAME_LENGTH_BYTES];
    if reader.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut prefix[1..]).await?;
    // Checked before allocating: a claimed 4 GiB body is refused, not reserved.
    let body_bytes = frame::body_length(prefix, max_frame_bytes)?;
    let mut frame = vec![0u8; FRAME_LENGTH_BYTES + body_bytes];
    frame[..FRAME_LENGTH_BYTES].copy_from_slice(&prefix);
    reader.read_exact(&mut frame[FRAME_LENGTH_BYTES..]).await?;
    Ok(Some(frame))
}

impl Connection {
    async fn read_loop(
        &mut self,
        reader: &mut BufReader<OwnedReadHalf>,
    ) -> Result<(), CloseReason> {
        let max_frame_bytes = self.shared.config.max_frame_bytes;
        while let Some(frame) = read_frame(reader, max_frame_bytes).await? {
            if !self.handle_frame(frame).await? {
                return Ok(());
            }
            // Acks are coalesced: one per batch of frames that arrived together.
            if reader.buffer().is_empty() {
                self.flush_ack().await?;
            }
        }
        self.flush_ack().await
    }

    /// Handles one frame; false when the peer announced shutdown.
    async fn handle_frame(&mut self, frame: Vec<u8>) -> Result<bool, CloseReason> {
        let message = match Body::decode(&frame[FRAME_LENGTH_BYTES..])? {
            Body::Ping => {
                self.reply(Bytes::from(Body::Pong.encode_frame()?)).await?;
                Counters::bump(&self.shared.counters.pings_answered);
                return Ok(true);
            }
            Body::Pong => return Ok(true),
            Body::Message(message) => message,
        };
        self.messages_seen += 1;
        match message.message_type {
            MessageType::Event => self.handle_event(message, Bytes::from(frame)).await?,
            MessageType::Control if message.topic == HELLO_TOPIC => {
                self.handle_hello(&message).await?
            }
            MessageType::Control if message.topic == SUBSCRIBE_TOPIC => {
                self.handle_subscribe(&message).await?
            }
            MessageType::Control | MessageType::Heartbeat => {
                tracing::debug!(connection_id = self.id, topic = %message.topic, "ignoring message");
            }
            MessageType::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    async fn handle_event(&mut self, message: Message, frame: Bytes) -> Result<(), CloseReason> {
        Counters::bump(&self.shared.counters.events_received);
        Topic::parse(&message.topic)?;
        let Some(entry) = &self.publisher else {
            // An upstream publisher (no hello): its sequence restarts per connection, so it
            // cannot be de-duplicated and gets no acks.
            self.route(&message, frame, None).await;
            return Ok(());
        };
        let entry = Arc::clone(entry);
        // Held while routing: an overlapping old connection of the same publisher cannot
        // interleave, so order and de-duplication hold across reconnects.
        let mut state = entry.lock().await;
        self.ack_pending = true;
        if state.high_water >= Some(message.sequence) {
            Counters::bump(&self.shared.counters.events_duplicate);
            return Ok(());
        }
        state.high_water = Some(message.sequence);
        let publisher_id = state.id.clone();
        self.route(&message, frame, Some(&publisher_id)).await;
        Ok(())
    }

    async fn route(&self, message: &Message, frame: Bytes, publisher_id: Option<&str>) {
        self.shared
            .router
            .route(&message.topic, &frame, &self.shared.counters);
        if let Some(printer) = &self.shared.printer {
            printer.print(message, publisher_id).await;
        }
    }

    async fn handle_hello(&mut self, message: &Message) -> Result<(), CloseReason> {
        if self.messages_seen != 1 {
            return Err(CloseReason::MisplacedHello);
        }
        let hello = Hello::from_message(message)?;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(CloseReason::UnsupportedProtocolVersion {
                version: hello.protocol_version,
            });
        }
        let entry = self.shared.publishers.entry(&hello.publisher_id).ok_or(
            CloseReason::TooManyPublishers {
                max_publishers: self.shared.config.max_publishers,
            },
        )?;
        let highest_sequence = entry.lock().await.high_water;
        tracing::info!(connection_id = self.id, publisher_id = %hello.publisher_id, ?highest_sequence, "publisher said hello");
        self.publisher = Some(entry);
        self.publisher_id = Some(hello.publisher_id);
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            highest_sequence,
        };
        self.reply_control(&welcome).await
    }

    async fn handle_subscribe(&mut self, message: &Message) -> Result<(), CloseReason> {
        let subscribe = Subscribe::from_message(message)?;
        let max_patterns = self.shared.config.max_patterns_per_connection;
        let patterns = self.shared.router.pattern_count(self.id) + subscribe.patterns.len();
        if patterns > max_patterns {
            return Err(CloseReason::TooManyPatterns {
                patterns,
                max_patterns,
            });
        }
        let parsed = subscribe
            .patterns
            .iter()
            .map(|pattern| Pattern::parse(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        let active = self.shared.router.subscribe(self.id, parsed, &self.outbox);
        tracing::info!(connection_id = self.id, patterns = ?active, "subscribed");
        self.reply_control(&Subscribed { patterns: active }).await
    }

    /// Persists the publisher's high-water mark (with a state directory) and then acks it.
    async fn flush_ack(&mut self) -> Result<(), CloseReason> {
        if !self.ack_pending {
            return Ok(());
        }
        self.ack_pending = false;
        let Some(entry) = &self.publisher else {
            return Ok(());
        };
        let entry = Arc::clone(entry);
        let mut state = entry.lock().await;
        if let Err(error) = self.shared.publishers.persist(&mut state).await {
            Counters::bump(&self.shared.counters.state_write_failures);
            return Err(error.into());
        }
        let Some(highest_sequence) = state.high_water else {
            return Ok(());
        };
        drop(state);
        self.reply_control(&Ack { highest_sequence }).await?;
        Counters::bump(&self.shared.counters.acks_sent);
        Ok(())
    }

    async fn reply_control<T: ControlPayload>(&mut self, payload: &T) -> Result<(), CloseReason> {
        self.reply_sequence += 1;
        let frame = payload
            .to_message(BROKER_ORIGIN, self.reply_sequence, WireTime::now())?
            .encode_frame()?;
        self.reply(Bytes::from(frame)).await
    }

    async fn reply(&self, frame: Bytes) -> Result<(), CloseReason> {
        self.outbox
            .send_reply(frame)
            .await
            .map_err(|_| CloseReason::WriterGone)
    }
}
