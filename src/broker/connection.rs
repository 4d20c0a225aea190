//! One peer connection: reading frames, answering health checks, hello/welcome, acks,
//! de-duplication, subscriptions, and routing its events.
//!
//! Owns the per-connection protocol state and the order of a publisher's acknowledgement
//! (docs/protocol.md §8): route, then wait until every current subscriber's socket holds
//! the routed events, then persist the high-water mark, then ack. The wait runs beside the
//! read loop (the acker), so a slow subscriber delays acks but never stalls routing: it is
//! cut off when its queue overflows, which releases the wait. Every peer is untrusted: a
//! frame's length is checked before its buffer is allocated, and any protocol error closes
//! this connection (logged with the reason and counted) without affecting any other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use crate::broker::Shared;
use crate::broker::error::BrokerError;
use crate::broker::frame_reader::{FrameReadError, FrameReader};
use crate::broker::router::{Barrier, Origin, Outbox, Outgoing};
use crate::broker::state::PublisherEntry;
use crate::broker::stats::Counters;
use crate::wire::control::{
    ControlPayload, HELLO_TOPIC, ResumePosition, SUBSCRIBE_FROM_TOPIC, SUBSCRIBE_TOPIC,
    SubscribeFrom,
};
use crate::wire::frame::{FRAME_LENGTH_BYTES, PING_BODY, PONG_BODY};
use crate::wire::topic::{Pattern, Topic};
use crate::wire::{
    Ack, Body, Hello, Message, MessageType, MessageView, PROTOCOL_VERSION, Subscribe, Subscribed,
    Welcome, WireError, WireTime,
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
    #[error("subscription would have {positions} resume positions (limit {max_positions})")]
    TooManyPositions {
        positions: usize,
        max_positions: usize,
    },
    #[error("cannot persist the high-water mark: {0}")]
    State(#[from] BrokerError),
    #[error("outgoing queue overflowed (slow subscriber)")]
    SlowSubscriber,
    #[error("an event frame waited longer than {timeout_ms} ms for the socket (stuck subscriber)")]
    StuckSubscriber { timeout_ms: u64 },
    #[error("writer stopped (peer gone)")]
    WriterGone,
}

impl From<FrameReadError> for CloseReason {
    fn from(error: FrameReadError) -> CloseReason {
        match error {
            FrameReadError::Io(error) => CloseReason::Io(error),
            FrameReadError::Wire(error) => CloseReason::Wire(error),
        }
    }
}

impl CloseReason {
    /// Whether the peer broke the protocol (as opposed to going away or being slow).
    fn is_protocol_error(&self) -> bool {
        !matches!(
            self,
            CloseReason::Io(_)
                | CloseReason::State(_)
                | CloseReason::SlowSubscriber
                | CloseReason::StuckSubscriber { .. }
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
    replies: Arc<ReplyNumbers>,
}

/// Numbers the broker's replies on one connection (message ids derive from them); shared by
/// the read loop and the acker.
#[derive(Debug, Default)]
struct ReplyNumbers(AtomicU64);

impl ReplyNumbers {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Acknowledge `entry` through `high_water` once `barrier` is passed. Only the newest
/// request matters: its barrier covers everything an older one did.
struct AckRequest {
    entry: PublisherEntry,
    high_water: u64,
    barrier: Barrier,
}

/// The read loop's side of the acker: the newest request replaces an unserved one.
type AckRequests = watch::Sender<Option<Arc<AckRequest>>>;

/// Closes the outbox however the connection ends (even if its task is aborted), so no
/// publisher's acker waits for writes that will never happen.
struct CloseOnDrop(Arc<Outbox>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Serves one connection until the peer leaves, breaks the protocol, or is too slow.
pub(crate) async fn serve(stream: UnixStream, id: u64, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    let (outbox, queue) = Outbox::new(
        shared.config.subscriber_queue_max_messages,
        shared.config.subscriber_queue_max_bytes,
    );
    let _close_outbox = CloseOnDrop(Arc::clone(&outbox));
    let write_timeout_ms = shared.config.subscriber_write_timeout_ms;
    let mut writer = tokio::spawn(write_frames(
        write_half,
        queue,
        Arc::clone(&outbox),
        Arc::clone(&shared),
    ));
    let replies = Arc::new(ReplyNumbers::default());
    let mut connection = Connection {
        id,
        shared: Arc::clone(&shared),
        outbox: Arc::clone(&outbox),
        publisher: None,
        publisher_id: None,
        messages_seen: 0,
        ack_pending: false,
        replies: Arc::clone(&replies),
    };
    let acker = Acker {
        shared,
        outbox: Arc::clone(&outbox),
        replies,
    };
    let (ack_requests, ack_receiver) = watch::channel(None);
    let mut reader = FrameReader::new(
        read_half,
        connection.shared.config.read_buffer_bytes,
        connection.shared.config.max_frame_bytes,
    );
    let outcome = tokio::select! {
        // The acker ends after the read loop (which drops `ack_requests`) once it has served
        // the last request, or first with an error.
        outcome = async {
            tokio::try_join!(
                connection.read_loop(&mut reader, ack_requests),
                acker.run(ack_receiver),
            )
        } => outcome.map(|((), ())| ()),
        () = outbox.overflowed() => Err(CloseReason::SlowSubscriber),
        ended = &mut writer => match ended {
            Ok(WriterEnd::Stuck) => Err(CloseReason::StuckSubscriber { timeout_ms: write_timeout_ms }),
            Ok(WriterEnd::PeerGone) | Err(_) => Err(CloseReason::WriterGone),
        },
    };
    connection.shared.router.unsubscribe(id);
    outbox.close();
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

/// Why a connection's writer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterEnd {
    /// A write failed: the peer is gone.
    PeerGone,
    /// An event frame waited longer than the write timeout.
    Stuck,
}

async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
) -> WriterEnd {
    let delivery_timeout = Duration::from_millis(shared.config.subscriber_write_timeout_ms);
    while let Some(outgoing) = queue.recv().await {
        // One write call per frame: upstream readers assume a frame arrives whole. Only
        // event frames have a deadline (acks wait for them); a peer that does not read its
        // own replies only stalls itself.
        let write = writer.write_all(&outgoing.frame);
        let written = if outgoing.delivery {
            match tokio::time::timeout(delivery_timeout, write).await {
                Ok(written) => written,
                Err(_) => {
                    // Counted before anything is released or closed, so whoever sees the
                    // effects also sees the count. The connection is closed next; the peer
                    // may see a partial last frame.
                    Counters::bump(&shared.counters.subscribers_disconnected_slow);
                    outbox.close();
                    return WriterEnd::Stuck;
                }
            }
        } else {
            write.await
        };
        if let Err(error) = written {
            tracing::debug!(%error, "write failed");
            outbox.close();
            return WriterEnd::PeerGone;
        }
        // The socket holds the whole frame now: the peer can read it even if this process
        // dies the next instant, which is what lets a barrier count it as delivered.
        outbox.written(&outgoing);
    }
    WriterEnd::PeerGone
}

impl Connection {
    /// Reads and handles frames until the peer leaves; hands ack requests to the acker
    /// (dropping `acks` at the end lets the acker finish).
    async fn read_loop(
        &mut self,
        reader: &mut FrameReader<OwnedReadHalf>,
        acks: AckRequests,
    ) -> Result<(), CloseReason> {
        while let Some(frame) = reader.next_frame().await? {
            if !self.handle_frame(frame).await? {
                return Ok(());
            }
            // Acks are coalesced: one per batch of frames that arrived together.
            if !reader.has_buffered_frame() {
                self.request_ack(&acks).await;
            }
        }
        self.request_ack(&acks).await;
        Ok(())
    }

    /// Handles one frame; false when the peer announced shutdown.
    ///
    /// Events, the bulk of the traffic, are routed from a borrowing view of the envelope;
    /// the rare control messages are decoded in full.
    async fn handle_frame(&mut self, frame: Bytes) -> Result<bool, CloseReason> {
        let body = &frame[FRAME_LENGTH_BYTES..];
        if body == PING_BODY {
            self.reply(Bytes::from(Body::Pong.encode_frame()?)).await?;
            Counters::bump(&self.shared.counters.pings_answered);
            return Ok(true);
        }
        if body == PONG_BODY {
            return Ok(true);
        }
        let view = MessageView::decode(body)?;
        self.messages_seen += 1;
        match view.message_type {
            MessageType::Event => {
                let (topic, sequence) = (view.topic, view.sequence);
                self.handle_event(topic, sequence, &frame).await?
            }
            MessageType::Control => {
                let message = Message::decode(body)?;
                match message.topic.as_str() {
                    HELLO_TOPIC => self.handle_hello(&message).await?,
                    SUBSCRIBE_TOPIC => {
                        let subscribe = Subscribe::from_message(&message)?;
                        self.subscribe(subscribe.patterns, Vec::new()).await?
                    }
                    SUBSCRIBE_FROM_TOPIC => {
                        let subscribe = SubscribeFrom::from_message(&message)?;
                        self.subscribe(subscribe.patterns, subscribe.positions)
                            .await?
                    }
                    topic => {
                        tracing::debug!(connection_id = self.id, topic, "ignoring message");
                    }
                }
            }
            MessageType::Heartbeat => {
                tracing::debug!(
                    connection_id = self.id,
                    topic = view.topic,
                    "ignoring message"
                );
            }
            MessageType::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    async fn handle_event(
        &mut self,
        topic: &str,
        sequence: u64,
        frame: &Bytes,
    ) -> Result<(), CloseReason> {
        Counters::bump(&self.shared.counters.events_received);
        Topic::parse(topic)?;
        let Some(entry) = &self.publisher else {
            // An upstream publisher (no hello): its sequence restarts per connection, so it
            // cannot be de-duplicated and gets no acks.
            self.route(topic, frame, None).await;
            return Ok(());
        };
        let entry = Arc::clone(entry);
        // Held while routing: an overlapping old connection of the same publisher cannot
        // interleave, so order and de-duplication hold across reconnects. Raising the mark
        // and queueing the deliveries under one lock is also what lets a barrier taken
        // later cover every event at or below the mark.
        let mut state = entry.lock().await;
        self.ack_pending = true;
        if state.high_water >= Some(sequence) {
            Counters::bump(&self.shared.counters.events_duplicate);
            return Ok(());
        }
        state.high_water = Some(sequence);
        let origin = Origin {
            publisher_id: &state.id,
            sequence,
        };
        self.route(topic, frame, Some(origin)).await;
        Ok(())
    }

    async fn route(&self, topic: &str, frame: &Bytes, origin: Option<Origin<'_>>) {
        self.shared
            .router
            .route(topic, frame, origin, &self.shared.counters);
        if let Some(printer) = &self.shared.printer {
            // Only the printer needs the whole envelope; the view already checked it.
            if let Ok(message) = Message::decode(&frame[FRAME_LENGTH_BYTES..]) {
                printer
                    .print(&message, origin.map(|origin| origin.publisher_id))
                    .await;
            }
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
        // The welcome counts as an ack up to its mark (the client stops resending below it),
        // so it follows the same order: an earlier connection of this publisher may have had
        // events accepted whose ack it never got.
        let (highest_sequence, barrier) = {
            let state = entry.lock().await;
            (state.high_water, self.shared.router.barrier())
        };
        if let Some(high_water) = highest_sequence {
            hold(&self.shared, &entry, high_water, &barrier).await?;
        }
        tracing::info!(connection_id = self.id, publisher_id = %hello.publisher_id, ?highest_sequence, "publisher said hello");
        self.publisher = Some(entry);
        self.publisher_id = Some(hello.publisher_id);
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            highest_sequence,
        };
        self.reply_control(&welcome).await
    }

    /// Adds patterns and resume positions (from `subscribe` or `subscribe-from`) and confirms.
    async fn subscribe(
        &mut self,
        patterns: Vec<String>,
        positions: Vec<ResumePosition>,
    ) -> Result<(), CloseReason> {
        let (active_patterns, active_positions) = self.shared.router.counts(self.id);
        let max_patterns = self.shared.config.max_patterns_per_connection;
        let pattern_total = active_patterns + patterns.len();
        if pattern_total > max_patterns {
            return Err(CloseReason::TooManyPatterns {
                patterns: pattern_total,
                max_patterns,
            });
        }
        // The broker never remembers more publishers than this, so more positions are noise.
        let max_positions = self.shared.config.max_publishers;
        let position_total = active_positions + positions.len();
        if position_total > max_positions {
            return Err(CloseReason::TooManyPositions {
                positions: position_total,
                max_positions,
            });
        }
        let parsed = patterns
            .iter()
            .map(|pattern| Pattern::parse(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        let resumed = positions.len();
        let active = self
            .shared
            .router
            .subscribe(self.id, parsed, positions, &self.outbox);
        tracing::info!(connection_id = self.id, patterns = ?active, resumed, "subscribed");
        reply_control(
            &self.outbox,
            &self.replies,
            &Subscribed { patterns: active },
        )
        .await
    }

    /// Hands the acker a request for the publisher's current mark, behind a barrier over
    /// everything routed so far (taken under the publisher's lock, so it covers every event
    /// at or below the mark, whichever connection routed it).
    async fn request_ack(&mut self, acks: &AckRequests) {
        if !std::mem::take(&mut self.ack_pending) {
            return;
        }
        let Some(entry) = &self.publisher else {
            return;
        };
        let state = entry.lock().await;
        let Some(high_water) = state.high_water else {
            return;
        };
        let barrier = self.shared.router.barrier();
        drop(state);
        acks.send_replace(Some(Arc::new(AckRequest {
            entry: Arc::clone(entry),
            high_water,
            barrier,
        })));
    }

    async fn reply_control<T: ControlPayload>(&mut self, payload: &T) -> Result<(), CloseReason> {
        reply_control(&self.outbox, &self.replies, payload).await
    }

    async fn reply(&self, frame: Bytes) -> Result<(), CloseReason> {
        reply(&self.outbox, frame).await
    }
}

/// Serves a publisher's ack requests in order: wait for the barrier (the events are in every
/// current subscriber's socket), persist the mark, then ack it.
struct Acker {
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    replies: Arc<ReplyNumbers>,
}

impl Acker {
    /// Runs until the read loop drops its sender and the last request is served.
    async fn run(
        self,
        mut requests: watch::Receiver<Option<Arc<AckRequest>>>,
    ) -> Result<(), CloseReason> {
        // A value sent just before the sender was dropped is still seen before the error.
        while requests.changed().await.is_ok() {
            let Some(request) = requests.borrow_and_update().clone() else {
                continue;
            };
            self.acknowledge(&request).await?;
        }
        Ok(())
    }

    async fn acknowledge(&self, request: &AckRequest) -> Result<(), CloseReason> {
        hold(
            &self.shared,
            &request.entry,
            request.high_water,
            &request.barrier,
        )
        .await?;
        let ack = Ack {
            highest_sequence: request.high_water,
        };
        reply_control(&self.outbox, &self.replies, &ack).await?;
        Counters::bump(&self.shared.counters.acks_sent);
        Ok(())
    }
}

/// Step 2 of the delivery order (docs/protocol.md §8) before a mark may be reported to its
/// publisher: wait until `barrier` (taken after every event at or below `high_water` was
/// queued) is passed, then persist `high_water`.
async fn hold(
    shared: &Shared,
    entry: &PublisherEntry,
    high_water: u64,
    barrier: &Barrier,
) -> Result<(), CloseReason> {
    barrier.wait().await;
    let mut state = entry.lock().await;
    if let Err(error) = shared.publishers.persist(&mut state, high_water).await {
        Counters::bump(&shared.counters.state_write_failures);
        return Err(error.into());
    }
    Ok(())
}

async fn reply_control<T: ControlPayload>(
    outbox: &Outbox,
    replies: &ReplyNumbers,
    payload: &T,
) -> Result<(), CloseReason> {
    let frame = payload
        .to_message(BROKER_ORIGIN, replies.next(), WireTime::now())?
        .encode_frame()?;
    reply(outbox, Bytes::from(frame)).await
}

async fn reply(outbox: &Outbox, frame: Bytes) -> Result<(), CloseReason> {
    outbox
        .send_reply(frame)
        .await
        .map_err(|_| CloseReason::WriterGone)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::broker::BrokerConfig;
    use crate::broker::router::Router;
    use crate::broker::state::PublisherTable;

    /// Polls once without a runtime wake-up: `Some(output)` if it finished right now.
    fn poll_once<T>(future: &mut std::pin::Pin<&mut impl Future<Output = T>>) -> Option<T> {
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    /// Broker state; marks persisted in `state_dir`, or only in memory without one (then
    /// persisting completes without waiting, so a future that skipped the barrier would
    /// finish on its first poll: the ordering checks below are deterministic).
    fn shared(state_dir: Option<&std::path::Path>) -> Arc<Shared> {
        let config = BrokerConfig::new("/nonexistent/unused.sock");
        Arc::new(Shared {
            publishers: PublisherTable::open(state_dir.map(ToOwned::to_owned), 16).expect("open"),
            config,
            router: Router::default(),
            counters: Counters::default(),
            printer: None,
        })
    }

    fn subscriber(shared: &Shared, connection_id: u64) -> (Arc<Outbox>, mpsc::Receiver<Outgoing>) {
        let (outbox, queue) = Outbox::new(64, 1 << 20);
        let pattern = Pattern::parse("events.#").expect("valid");
        shared
            .router
            .subscribe(connection_id, vec![pattern], vec![], &outbox);
        (outbox, queue)
    }

    /// Accepts `sequences` of publisher `p` as a connection does: mark raised and deliveries
    /// queued under the publisher's lock.
    async fn accept(
        shared: &Shared,
        entry: &PublisherEntry,
        sequences: std::ops::RangeInclusive<u64>,
    ) {
        let mut state = entry.lock().await;
        for sequence in sequences {
            state.high_water = Some(sequence);
            let origin = Origin {
                publisher_id: &state.id,
                sequence,
            };
            let frame = Bytes::from(format!("event {sequence}"));
            shared.router.route(
                "events.process.start",
                &frame,
                Some(origin),
                &shared.counters,
            );
        }
    }

    /// The acker of a publisher's connection, and that connection's outgoing queue.
    fn publisher_acker(shared: &Arc<Shared>) -> (Acker, mpsc::Receiver<Outgoing>) {
        let (outbox, queue) = Outbox::new(16, 1 << 20);
        let acker = Acker {
            shared: Arc::clone(shared),
            outbox,
            replies: Arc::default(),
        };
        (acker, queue)
    }

    fn mark_on_disk(dir: &std::path::Path) -> Option<String> {
        // "p" is 70 in hex.
        std::fs::read_to_string(dir.join("70.hwm")).ok()
    }

    fn acks_in(queue: &mut mpsc::Receiver<Outgoing>) -> Vec<u64> {
        let mut acks = Vec::new();
        while let Ok(outgoing) = queue.try_recv() {
            let Ok(crate::wire::Body::Message(message)) =
                crate::wire::Body::decode(&outgoing.frame[FRAME_LENGTH_BYTES..])
            else {
                panic!("a reply frame");
            };
            acks.push(
                Ack::from_message(&message)
                    .expect("an ack")
                    .highest_sequence,
            );
        }
        acks
    }

    /// The rule: an event is in every current subscriber's socket before the mark covering
    /// it is persisted, and the publisher is acked only after the mark is persisted.
    #[tokio::test]
    async fn the_mark_is_acked_only_once_every_subscriber_holds_the_events() {
        let shared = shared(None);
        let (first, mut first_queue) = subscriber(&shared, 1);
        let (second, mut second_queue) = subscriber(&shared, 2);
        let entry = shared.publishers.entry("p").expect("room");
        accept(&shared, &entry, 1..=3).await;
        let request = AckRequest {
            entry: Arc::clone(&entry),
            high_water: 3,
            barrier: shared.router.barrier(),
        };
        let (acker, mut publisher_queue) = publisher_acker(&shared);
        let mut acknowledging = pin!(acker.acknowledge(&request));
        let write = |outbox: &Outbox, queue: &mut mpsc::Receiver<Outgoing>| {
            let outgoing = queue.try_recv().expect("a queued delivery");
            outbox.written(&outgoing);
        };

        // Nothing written yet: no ack.
        assert!(poll_once(&mut acknowledging).is_none());
        assert_eq!(acks_in(&mut publisher_queue), Vec::<u64>::new());
        for _ in 0..3 {
            write(&first, &mut first_queue);
        }
        write(&second, &mut second_queue);
        write(&second, &mut second_queue);
        // The second subscriber's socket still lacks event 3.
        assert!(poll_once(&mut acknowledging).is_none());
        assert_eq!(acks_in(&mut publisher_queue), Vec::<u64>::new());

        write(&second, &mut second_queue);
        assert!(poll_once(&mut acknowledging).is_some_and(|done| done.is_ok()));
        assert_eq!(acks_in(&mut publisher_queue), vec![3]);
        assert_eq!(entry.lock().await.persisted_mark(), Some(3));
        assert_eq!(shared.counters.snapshot().acks_sent, 1);
    }

    /// Events accepted after the request was made are not waited for, and the mark persisted
    /// is the request's, not the publisher's newer one (whose events may still be queued).
    #[tokio::test]
    async fn only_the_requested_mark_is_persisted_while_newer_events_are_queued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = shared(Some(dir.path()));
        let (outbox, mut queue) = subscriber(&shared, 1);
        let entry = shared.publishers.entry("p").expect("room");
        accept(&shared, &entry, 1..=2).await;
        let request = AckRequest {
            entry: Arc::clone(&entry),
            high_water: 2,
            barrier: shared.router.barrier(),
        };
        accept(&shared, &entry, 3..=5).await;
        for _ in 0..2 {
            let outgoing = queue.try_recv().expect("queued");
            outbox.written(&outgoing);
        }
        let (acker, mut publisher_queue) = publisher_acker(&shared);
        acker.acknowledge(&request).await.expect("acknowledged");
        assert_eq!(mark_on_disk(dir.path()).as_deref(), Some("2\n"));
        assert_eq!(acks_in(&mut publisher_queue), vec![2]);
        assert_eq!(entry.lock().await.high_water, Some(5));
    }

    /// A welcome reports a mark like an ack does: only once the subscribers hold the events
    /// and the mark is persisted (an earlier connection may have left events unacked).
    #[tokio::test]
    async fn a_welcome_waits_like_an_ack() {
        let shared = shared(None);
        let (subscriber_outbox, mut subscriber_queue) = subscriber(&shared, 1);
        let entry = shared.publishers.entry("p").expect("room");
        accept(&shared, &entry, 1..=2).await;
        let (outbox, mut queue) = Outbox::new(16, 1 << 20);
        let mut connection = Connection {
            id: 2,
            shared: Arc::clone(&shared),
            outbox,
            publisher: None,
            publisher_id: None,
            messages_seen: 1,
            ack_pending: false,
            replies: Arc::default(),
        };
        let hello = Hello {
            publisher_id: "p".into(),
            protocol_version: PROTOCOL_VERSION,
        }
        .to_message("p", 1, WireTime::EPOCH)
        .expect("encode");
        let mut greeting = pin!(connection.handle_hello(&hello));
        assert!(poll_once(&mut greeting).is_none());
        let outgoing = subscriber_queue.try_recv().expect("queued");
        subscriber_outbox.written(&outgoing);
        assert!(poll_once(&mut greeting).is_none());
        assert!(queue.try_recv().is_err(), "no welcome yet");
        let outgoing = subscriber_queue.try_recv().expect("queued");
        subscriber_outbox.written(&outgoing);
        assert!(poll_once(&mut greeting).is_some_and(|done| done.is_ok()));
        let frame = queue.try_recv().expect("the welcome").frame;
        let Ok(crate::wire::Body::Message(message)) =
            crate::wire::Body::decode(&frame[FRAME_LENGTH_BYTES..])
        else {
            panic!("a welcome frame");
        };
        let welcome = Welcome::from_message(&message).expect("a welcome");
        assert_eq!(welcome.highest_sequence, Some(2));
        assert_eq!(entry.lock().await.persisted_mark(), Some(2));
    }

    /// A subscriber that goes away is not waited for: its connection closes its outbox
    /// however it ends, so the publisher is still acknowledged.
    #[tokio::test]
    async fn a_departed_subscriber_does_not_hold_back_acks() {
        let shared = shared(None);
        let (outbox, _queue) = subscriber(&shared, 1);
        let entry = shared.publishers.entry("p").expect("room");
        accept(&shared, &entry, 1..=1).await;
        let request = AckRequest {
            entry: Arc::clone(&entry),
            high_water: 1,
            barrier: shared.router.barrier(),
        };
        let (acker, mut publisher_queue) = publisher_acker(&shared);
        let mut acknowledging = pin!(acker.acknowledge(&request));
        assert!(poll_once(&mut acknowledging).is_none());
        drop(CloseOnDrop(outbox));
        assert!(poll_once(&mut acknowledging).is_some_and(|done| done.is_ok()));
        assert_eq!(acks_in(&mut publisher_queue), vec![1]);
    }
}
