//! A small async client for tests and tools (the drills, `run`'s printing subscriber) —
//! **not** the production connector (which speaks the client side on its own io_uring ring).
//!
//! Owns nothing but convenience: connect, send frames, hello, publish, subscribe (also from
//! resume [`Positions`]), wait for welcome/acks/events, answering `PING`s on the way. Reads
//! are buffered, so a subscriber keeps up with a broker's replay bursts. Events that arrive
//! while waiting for something else are kept and returned by [`TestClient::next_event`] in
//! order.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::event::{EventKind, ProcessEvent};
use crate::wire::control::{ControlPayload, ResumePosition, SubscribeFrom};
use crate::wire::frame::{self, FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES};
use crate::wire::payload::{PUBLISHER_TAG, event_message};
use crate::wire::{
    Ack, Body, Hello, Message, MessageType, PROTOCOL_VERSION, Subscribe, Subscribed, Welcome,
    WireError, WireTime,
};

/// A test client failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket call failed.
    #[error("cannot {operation}: {source}")]
    Io {
        /// `connect`, `read` or `write`.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker sent bytes that do not decode, or we could not encode ours.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The broker closed the connection while we waited for something.
    #[error("the broker closed the connection")]
    Closed,
}

/// Read buffer of a client connection: room for a burst of events, so a subscriber drains a
/// replay with few system calls.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// A connection to a broker.
#[derive(Debug)]
pub struct TestClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    publisher_id: String,
    stashed_events: VecDeque<Message>,
    control_sequence: u64,
}

/// Where a subscriber is: per publisher, the highest sequence it holds. Sent with
/// [`TestClient::subscribe_from`] when it (re)subscribes, so the broker forwards only newer
/// events and a publisher's replay after a broker restart arrives once.
///
/// Events are attributed to publishers by their `procmond.publisher_id` correlation tag
/// (docs/protocol.md §3), which our publishers set to their hello's id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    held: BTreeMap<String, u64>,
}

/// What a received event was, measured against the [`Positions`] before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Above its publisher's position (or the publisher's first); the position moved to it.
    New,
    /// At or below its publisher's position: the subscriber already had it.
    AlreadyHeld,
    /// No publisher tag: cannot be placed (an upstream publisher's event).
    Untracked,
}

impl Positions {
    /// No positions: a subscriber that holds nothing yet.
    pub fn new() -> Positions {
        Positions::default()
    }

    /// Records a received event.
    pub fn record(&mut self, message: &Message) -> Received {
        let Some(publisher_id) = message
            .correlation_metadata
            .correlation_tags
            .get(PUBLISHER_TAG)
        else {
            return Received::Untracked;
        };
        match self.held.get_mut(publisher_id) {
            Some(held) if message.sequence <= *held => Received::AlreadyHeld,
            Some(held) => {
                *held = message.sequence;
                Received::New
            }
            None => {
                self.held.insert(publisher_id.clone(), message.sequence);
                Received::New
            }
        }
    }

    /// Sets a publisher's position outright (e.g. restored from the subscriber's own
    /// storage): it holds everything of `publisher_id` up to `sequence`.
    pub fn insert(&mut self, publisher_id: impl Into<String>, sequence: u64) {
        self.held.insert(publisher_id.into(), sequence);
    }

    /// The highest sequence held of `publisher_id`.
    pub fn get(&self, publisher_id: &str) -> Option<u64> {
        self.held.get(publisher_id).copied()
    }

    /// The positions as sent in a `subscribe-from` message.
    pub fn to_wire(&self) -> Vec<ResumePosition> {
        self.held
            .iter()
            .map(|(publisher_id, &sequence)| ResumePosition {
                publisher_id: publisher_id.clone(),
                sequence,
            })
            .collect()
    }
}

impl TestClient {
    /// Connects to the broker at `path`.
    pub async fn connect(path: &Path) -> Result<TestClient, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Io {
                operation: "connect",
                source,
            })?;
        let (read_half, writer) = stream.into_split();
        Ok(TestClient {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, read_half),
            writer,
            publisher_id: "anonymous".to_owned(),
            stashed_events: VecDeque::new(),
            control_sequence: 0,
        })
    }

    /// Writes raw bytes (for misbehaving-peer tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|source| ClientError::Io {
                operation: "write",
                source,
            })
    }

    /// Sends one envelope as one frame.
    pub async fn send_message(&mut self, message: &Message) -> Result<(), ClientError> {
        let frame = message.encode_frame()?;
        self.send_raw(&frame).await
    }

    /// Sends a control payload.
    pub async fn send_control<T: ControlPayload>(
        &mut self,
        payload: &T,
    ) -> Result<(), ClientError> {
        self.control_sequence += 1;
        let message =
            payload.to_message(&self.publisher_id, self.control_sequence, WireTime::now())?;
        self.send_message(&message).await
    }

    /// Sends `PING` and waits for `PONG`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send_raw(&Body::Ping.encode_frame()?).await?;
        loop {
            match self.next_body().await?.ok_or(ClientError::Closed)? {
                Body::Pong => return Ok(()),
                Body::Ping => self.answer_ping().await?,
                Body::Message(message) => self.keep(message),
            }
        }
    }

    /// Says hello as `publisher_id` and returns the broker's welcome.
    pub async fn hello(&mut self, publisher_id: &str) -> Result<Welcome, ClientError> {
        self.publisher_id = publisher_id.to_owned();
        let hello = Hello {
            publisher_id: publisher_id.to_owned(),
            protocol_version: PROTOCOL_VERSION,
        };
        self.send_control(&hello).await?;
        self.wait_for(|message| Welcome::from_message(message).ok())
            .await
    }

    /// Publishes one event with the given (WAL) sequence.
    pub async fn publish(
        &mut self,
        sequence: u64,
        kind: EventKind,
        event: &ProcessEvent,
    ) -> Result<(), ClientError> {
        let message = event_message(&self.publisher_id, sequence, kind, event, WireTime::now())?;
        self.send_message(&message).await
    }

    /// Waits for a cumulative ack covering `sequence`.
    pub async fn wait_for_ack(&mut self, sequence: u64) -> Result<Ack, ClientError> {
        self.wait_for(|message| {
            Ack::from_message(message)
                .ok()
                .filter(|ack| ack.highest_sequence >= sequence)
        })
        .await
    }

    /// Subscribes to `patterns` and waits until the broker confirms.
    pub async fn subscribe(&mut self, patterns: &[&str]) -> Result<Subscribed, ClientError> {
        let subscribe = Subscribe {
            patterns: patterns
                .iter()
                .map(|pattern| (*pattern).to_owned())
                .collect(),
        };
        self.send_control(&subscribe).await?;
        self.wait_for(|message| Subscribed::from_message(message).ok())
            .await
    }

    /// Subscribes to `patterns` from `positions` (what this subscriber already holds; see
    /// [`Positions`]) and waits until the broker confirms. Needs a broker that knows
    /// `control.eventbus.subscribe-from` (ours); an older one ignores it and never confirms.
    pub async fn subscribe_from(
        &mut self,
        patterns: &[&str],
        positions: &Positions,
    ) -> Result<Subscribed, ClientError> {
        let subscribe = SubscribeFrom {
            patterns: patterns
                .iter()
                .map(|pattern| (*pattern).to_owned())
                .collect(),
            positions: positions.to_wire(),
        };
        self.send_control(&subscribe).await?;
        self.wait_for(|message| Subscribed::from_message(message).ok())
            .await
    }

    /// The next event, or `None` once the broker's stream has ended: closed between frames,
    /// reset, or cut off inside a frame (as when the broker dies mid-write; a frame the
    /// broker never finished writing was never delivered).
    pub async fn next_event_or_end(&mut self) -> Result<Option<Message>, ClientError> {
        match self.next_event().await {
            Ok(message) => Ok(Some(message)),
            Err(ClientError::Closed) => Ok(None),
            Err(ClientError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The next event delivered to this connection.
    pub async fn next_event(&mut self) -> Result<Message, ClientError> {
        if let Some(message) = self.stashed_events.pop_front() {
            return Ok(message);
        }
        self.wait_for(|message| {
            (message.message_type == MessageType::Event).then(|| message.clone())
        })
        .await
    }

    /// Reads frames until the broker closes the connection (for tests of disconnection),
    /// also mid-frame, as when a slow subscriber is cut off. Frames that arrive first are
    /// discarded.
    pub async fn wait_until_closed(&mut self) -> Result<(), ClientError> {
        loop {
            match self.next_body().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(ClientError::Io { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads the next frame; `None` when the broker closed the connection between frames.
    pub async fn next_body(&mut self) -> Result<Option<Body>, ClientError> {
        let read_failed = |source| ClientError::Io {
            operation: "read",
            source,
        };
        let mut prefix = [0u8; FRAME_LENGTH_BYTES];
        if self
            .reader
            .read(&mut prefix[..1])
            .await
            .map_err(read_failed)?
            == 0
        {
            return Ok(None);
        }
        self.reader
            .read_exact(&mut prefix[1..])
            .await
            .map_err(read_failed)?;
        let body_bytes = frame::body_length(prefix, MAX_FRAME_BODY_BYTES)?;
        let mut body = vec![0u8; body_bytes];
        self.reader
            .read_exact(&mut body)
            .await
            .map_err(read_failed)?;
        Ok(Some(Body::decode(&body)?))
    }

    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> Result<T, ClientError> {
        loop {
            match self.next_body().await?.ok_or(ClientError::Closed)? {
                Body::Ping => self.answer_ping().await?,
                Body::Pong => {}
                Body::Message(message) => match pick(&message) {
                    Some(found) => return Ok(found),
                    None => self.keep(message),
                },
            }
        }
    }

    async fn answer_ping(&mut self) -> Result<(), ClientError> {
        self.send_raw(&Body::Pong.encode_frame()?).await
    }

    /// Keeps events for [`TestClient::next_event`]; other unrequested messages (older acks)
    /// are superseded by later ones and dropped.
    fn keep(&mut self, message: Message) {
        if message.message_type == MessageType::Event {
            self.stashed_events.push_back(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(publisher_id: &str, sequence: u64) -> Message {
        let event = ProcessEvent::new(1, "x", chrono::DateTime::UNIX_EPOCH);
        event_message(
            publisher_id,
            sequence,
            EventKind::Start,
            &event,
            WireTime::EPOCH,
        )
        .expect("encode")
    }

    #[test]
    fn positions_follow_each_publisher_and_spot_what_is_already_held() {
        let mut positions = Positions::new();
        positions.insert("q", 10);
        assert_eq!(positions.record(&event_of("p", 3)), Received::New);
        assert_eq!(positions.record(&event_of("p", 5)), Received::New);
        assert_eq!(positions.record(&event_of("p", 5)), Received::AlreadyHeld);
        assert_eq!(positions.record(&event_of("p", 4)), Received::AlreadyHeld);
        assert_eq!(positions.record(&event_of("q", 10)), Received::AlreadyHeld);
        assert_eq!(positions.record(&event_of("q", 11)), Received::New);
        let mut untagged = event_of("p", 9);
        untagged.correlation_metadata.correlation_tags.clear();
        assert_eq!(positions.record(&untagged), Received::Untracked);
        assert_eq!(positions.get("p"), Some(5));
        assert_eq!(
            positions.to_wire(),
            [
                ResumePosition {
                    publisher_id: "p".into(),
                    sequence: 5
                },
                ResumePosition {
                    publisher_id: "q".into(),
                    sequence: 11
                },
            ]
        );
    }
}
