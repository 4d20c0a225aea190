//! Topic routing, resume positions and per-connection outgoing queues.
//!
//! Owns the subscription registry and the [`Outbox`], the bounded queue in front of each
//! connection's socket. Routing never waits: a subscriber whose queue is full (by messages or
//! bytes) is marked overflowed and disconnected by its own connection task, so a slow
//! subscriber can never stall a publisher, and a subscriber never sees a silently gapped
//! stream.
//!
//! It also keeps the books for the delivery rule (docs/protocol.md §8): each delivery gets a
//! ticket in its queue's order, the writer reports how many deliveries have reached the
//! socket, and a [`Barrier`] taken after routing resolves once everything routed before it
//! is written (or its subscriber is gone). A publisher's mark is persisted and acknowledged
//! only behind such a barrier. Nothing here does socket or file I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

use crate::broker::stats::Counters;
use crate::wire::control::ResumePosition;
use crate::wire::topic::Pattern;

/// One frame waiting for a connection's writer.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The whole frame (prefix and body).
    pub(crate) frame: Bytes,
    /// A routed event (counted for barriers), as opposed to a reply.
    pub(crate) delivery: bool,
}

/// How far a connection's writer has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Deliveries whose every byte the socket has taken.
    deliveries_written: u64,
    /// The connection is closing or closed: nothing more will be written.
    closed: bool,
}

/// The bounded queue of frames waiting to be written to one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    queued_bytes: AtomicUsize,
    queue_max_bytes: usize,
    overflowed: AtomicBool,
    overflow_notice: Notify,
    /// Deliveries queued so far. The lock is held while a delivery is queued, so the n-th
    /// ticket is the n-th delivery in the queue (routings from several publishers race).
    deliveries_queued: Mutex<u64>,
    progress: watch::Sender<Progress>,
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    /// This delivery overflowed the queue.
    Overflowed,
    /// The queue overflowed earlier; its connection is closing.
    AlreadyOverflowed,
}

/// The writer side is gone (peer closed or write failed).
#[derive(Debug)]
pub(crate) struct OutboxClosed;

impl Outbox {
    /// A queue of at most `queue_max_messages` frames and (for deliveries) `queue_max_bytes`.
    pub(crate) fn new(
        queue_max_messages: usize,
        queue_max_bytes: usize,
    ) -> (Arc<Outbox>, mpsc::Receiver<Outgoing>) {
        let (sender, receiver) = mpsc::channel(queue_max_messages);
        let outbox = Outbox {
            sender,
            queued_bytes: AtomicUsize::new(0),
            queue_max_bytes,
            overflowed: AtomicBool::new(false),
            overflow_notice: Notify::new(),
            deliveries_queued: Mutex::new(0),
            progress: watch::Sender::new(Progress::default()),
        };
        (Arc::new(outbox), receiver)
    }

    /// Queues an event delivery without waiting. The first delivery that does not fit flags
    /// the queue, closes it for barriers and tells the connection to close; later ones are
    /// dropped quietly.
    pub(crate) fn deliver(&self, frame: &Bytes) -> Delivery {
        let mut deliveries_queued = self
            .deliveries_queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.overflowed.load(Ordering::Relaxed) {
            return Delivery::AlreadyOverflowed;
        }
        let queued = self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        let fits = queued + frame.len() <= self.queue_max_bytes;
        let outgoing = Outgoing {
            frame: frame.clone(),
            delivery: true,
        };
        if fits && self.sender.try_send(outgoing).is_ok() {
            *deliveries_queued += 1;
            return Delivery::Queued;
        }
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        if self.overflowed.swap(true, Ordering::Relaxed) {
            return Delivery::AlreadyOverflowed;
        }
        // The subscriber is being cut off: nobody may wait for its writes any more.
        self.close();
        self.overflow_notice.notify_one();
        Delivery::Overflowed
    }

    /// Queues a reply (PONG, welcome, ack, …), waiting for room: a peer that does not read
    /// its replies only stalls its own connection.
    pub(crate) async fn send_reply(&self, frame: Bytes) -> Result<(), OutboxClosed> {
        let frame_bytes = frame.len();
        self.queued_bytes.fetch_add(frame_bytes, Ordering::Relaxed);
        let outgoing = Outgoing {
            frame,
            delivery: false,
        };
        self.sender.send(outgoing).await.map_err(|_| {
            self.queued_bytes.fetch_sub(frame_bytes, Ordering::Relaxed);
            OutboxClosed
        })
    }

    /// The writer wrote `outgoing` completely (the socket holds all of it).
    pub(crate) fn written(&self, outgoing: &Outgoing) {
        self.queued_bytes
            .fetch_sub(outgoing.frame.len(), Ordering::Relaxed);
        if outgoing.delivery {
            self.progress
                .send_modify(|progress| progress.deliveries_written += 1);
        }
    }

    /// Nothing more will be written (the connection is closing): releases every barrier
    /// waiting on this queue. Idempotent.
    pub(crate) fn close(&self) {
        self.progress.send_if_modified(|progress| {
            let changed = !progress.closed;
            progress.closed = true;
            changed
        });
    }

    /// Resolves once a delivery has overflowed this queue.
    pub(crate) async fn overflowed(&self) {
        self.overflow_notice.notified().await;
    }

    /// The ticket of the latest delivery queued here, if it may still be unwritten.
    fn unwritten_ticket(&self) -> Option<u64> {
        let ticket = *self
            .deliveries_queued
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let progress = *self.progress.borrow();
        (!progress.closed && progress.deliveries_written < ticket).then_some(ticket)
    }

    /// Resolves once delivery number `ticket` is written or the queue is closed.
    async fn written_through(&self, ticket: u64) {
        let mut progress = self.progress.subscribe();
        // Err only if the sender is dropped, which cannot happen while `self` lives.
        let _ = progress
            .wait_for(|progress| progress.closed || progress.deliveries_written >= ticket)
            .await;
    }
}

/// Deliveries routed before a point in time, per queue; [`Barrier::wait`] resolves once all
/// of them are written to their sockets or their subscribers are gone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Barrier {
    pending: Vec<(Arc<Outbox>, u64)>,
}

impl Barrier {
    /// Waits until every delivery this barrier covers is written (or its queue closed).
    pub(crate) async fn wait(&self) {
        for (outbox, ticket) in &self.pending {
            outbox.written_through(*ticket).await;
        }
    }

    /// Whether nothing was pending when the barrier was taken.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The publisher and sequence of a de-duplicated event, for resume positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    /// Publisher id from the connection's hello.
    pub(crate) publisher_id: &'a str,
    /// The event's sequence.
    pub(crate) sequence: u64,
}

struct Subscription {
    patterns: Vec<Pattern>,
    /// Per publisher, the highest sequence the subscriber already holds: that publisher's
    /// events at or below it are not forwarded.
    positions: HashMap<String, u64>,
    outbox: Arc<Outbox>,
}

/// Which connection wants which topics.
#[derive(Default)]
pub(crate) struct Router {
    subscriptions: RwLock<HashMap<u64, Subscription>>,
}

impl Router {
    /// Adds patterns and resume positions to a connection's subscription (a position only
    /// ever moves up); returns all its patterns.
    pub(crate) fn subscribe(
        &self,
        connection_id: u64,
        patterns: Vec<Pattern>,
        positions: Vec<ResumePosition>,
        outbox: &Arc<Outbox>,
    ) -> Vec<String> {
        let mut subscriptions = self
            .subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let subscription = subscriptions
            .entry(connection_id)
            .or_insert_with(|| Subscription {
                patterns: Vec::new(),
                positions: HashMap::new(),
                outbox: Arc::clone(outbox),
            });
        for pattern in patterns {
            if !subscription.patterns.contains(&pattern) {
                subscription.patterns.push(pattern);
            }
        }
        for position in positions {
            let held = subscription
                .positions
                .entry(position.publisher_id)
                .or_insert(position.sequence);
            *held = (*held).max(position.sequence);
        }
        subscription
            .patterns
            .iter()
            .map(|pattern| pattern.as_str().to_owned())
            .collect()
    }

    /// Number of patterns and of resume positions a connection has.
    pub(crate) fn counts(&self, connection_id: u64) -> (usize, usize) {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        subscriptions
            .get(&connection_id)
            .map_or((0, 0), |subscription| {
                (subscription.patterns.len(), subscription.positions.len())
            })
    }

    /// Removes a connection's subscription.
    pub(crate) fn unsubscribe(&self, connection_id: u64) {
        let mut subscriptions = self
            .subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        subscriptions.remove(&connection_id);
    }

    /// Queues `frame` to every subscriber with a pattern matching `topic` that does not
    /// already hold it (by its resume position for `origin`), without waiting.
    ///
    /// `frame` may be a slice of a connection's whole receive buffer. A queued frame is
    /// copied into its own allocation first (once, shared by every subscriber it goes to):
    /// otherwise a slow subscriber of a rare topic would keep a whole receive chunk alive
    /// per queued frame, and its queue's byte bound would no longer bound memory.
    pub(crate) fn route(
        &self,
        topic: &str,
        frame: &Bytes,
        origin: Option<Origin<'_>>,
        counters: &Counters,
    ) {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut own_copy: Option<Bytes> = None;
        for (connection_id, subscription) in subscriptions.iter() {
            if !subscription
                .patterns
                .iter()
                .any(|pattern| pattern.matches(topic))
            {
                continue;
            }
            let held = origin.is_some_and(|origin| {
                subscription
                    .positions
                    .get(origin.publisher_id)
                    .is_some_and(|&position| origin.sequence <= position)
            });
            if held {
                Counters::bump(&counters.deliveries_already_held);
                continue;
            }
            let frame = own_copy.get_or_insert_with(|| Bytes::copy_from_slice(frame));
            match subscription.outbox.deliver(frame) {
                Delivery::Queued => Counters::bump(&counters.deliveries),
                Delivery::Overflowed => {
                    Counters::bump(&counters.subscribers_disconnected_slow);
                    tracing::warn!(
                        connection_id,
                        "subscriber queue overflowed; disconnecting it"
                    );
                }
                Delivery::AlreadyOverflowed => {}
            }
        }
    }

    /// A barrier behind every delivery queued so far to any subscriber.
    pub(crate) fn barrier(&self) -> Barrier {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let pending = subscriptions
            .values()
            .filter_map(|subscription| {
                let ticket = subscription.outbox.unwritten_ticket()?;
                Some((Arc::clone(&subscription.outbox), ticket))
            })
            .collect();
        Barrier { pending }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    fn pattern() -> Pattern {
        Pattern::parse("events.#").expect("valid")
    }

    /// Polls a future once, without a runtime wake-up: whether it is ready right now.
    fn is_ready(future: impl Future<Output = ()>) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        pin!(future).poll(&mut context).is_ready()
    }

    /// What a connection's writer does after the socket took a frame.
    async fn write_one(outbox: &Outbox, queue: &mut mpsc::Receiver<Outgoing>) -> Bytes {
        let outgoing = queue.recv().await.expect("a queued frame");
        outbox.written(&outgoing);
        outgoing.frame
    }

    #[tokio::test]
    async fn an_overflowing_subscriber_is_flagged_once_and_others_still_get_events() {
        let router = Router::default();
        let counters = Counters::default();
        let (slow, _slow_receiver) = Outbox::new(2, 1024);
        let (fast, mut fast_receiver) = Outbox::new(16, 1024);
        router.subscribe(1, vec![pattern()], vec![], &slow);
        router.subscribe(2, vec![pattern()], vec![], &fast);
        let frame = Bytes::from_static(b"frame");
        for _ in 0..4 {
            router.route("events.process.start", &frame, None, &counters);
            assert_eq!(write_one(&fast, &mut fast_receiver).await, &b"frame"[..]);
        }
        let stats = counters.snapshot();
        assert_eq!(stats.subscribers_disconnected_slow, 1);
        assert_eq!(stats.deliveries, 4 + 2);
        slow.overflowed().await;
        router.route("control.x", &frame, None, &counters);
        assert_eq!(counters.snapshot().deliveries, 6);
    }

    /// A routed frame that is a slice of a larger receive buffer is queued as a copy of its
    /// own bytes, the same copy for every subscriber: the buffer is not kept alive by it.
    #[tokio::test]
    async fn a_queued_frame_does_not_keep_the_receive_buffer_alive() {
        let router = Router::default();
        let counters = Counters::default();
        let (first, mut first_queue) = Outbox::new(16, 1 << 20);
        let (second, mut second_queue) = Outbox::new(16, 1 << 20);
        router.subscribe(1, vec![pattern()], vec![], &first);
        router.subscribe(2, vec![pattern()], vec![], &second);
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        let frame = chunk.slice(100..200);
        router.route("events.process.start", &frame, None, &counters);
        let to_first = write_one(&first, &mut first_queue).await;
        let to_second = write_one(&second, &mut second_queue).await;
        assert_eq!(to_first, frame);
        assert_eq!(to_second, frame);
        let chunk_range = chunk.as_ptr_range();
        assert!(
            !chunk_range.contains(&to_first.as_ptr()),
            "the chunk is shared"
        );
        assert_eq!(to_first.as_ptr(), to_second.as_ptr(), "one copy for both");
        // Unrouted frames are not copied at all: nothing matched, nothing queued.
        router.route("control.x", &frame, None, &counters);
        assert_eq!(counters.snapshot().deliveries, 2);
    }

    #[test]
    fn byte_budget_is_enforced() {
        let (outbox, _receiver) = Outbox::new(100, 8);
        assert_eq!(
            outbox.deliver(&Bytes::from_static(b"12345")),
            Delivery::Queued
        );
        assert_eq!(
            outbox.deliver(&Bytes::from_static(b"12345")),
            Delivery::Overflowed
        );
        assert_eq!(
            outbox.deliver(&Bytes::from_static(b"1")),
            Delivery::AlreadyOverflowed
        );
    }

    #[tokio::test]
    async fn a_barrier_resolves_only_once_every_earlier_delivery_is_written() {
        let router = Router::default();
        let counters = Counters::default();
        let (first, mut first_queue) = Outbox::new(16, 1024);
        let (second, mut second_queue) = Outbox::new(16, 1024);
        router.subscribe(1, vec![pattern()], vec![], &first);
        router.subscribe(2, vec![pattern()], vec![], &second);
        for frame in [&b"one"[..], b"two"] {
            router.route(
                "events.process.start",
                &Bytes::copy_from_slice(frame),
                None,
                &counters,
            );
        }
        // A reply queued between deliveries is written like any frame but covers nothing.
        first
            .send_reply(Bytes::from_static(b"pong"))
            .await
            .expect("open");
        let barrier = router.barrier();
        // Routed after the barrier: not covered by it.
        router.route(
            "events.process.start",
            &Bytes::from_static(b"three"),
            None,
            &counters,
        );
        assert!(!is_ready(barrier.wait()));
        assert_eq!(write_one(&first, &mut first_queue).await, &b"one"[..]);
        assert_eq!(write_one(&first, &mut first_queue).await, &b"two"[..]);
        assert_eq!(write_one(&second, &mut second_queue).await, &b"one"[..]);
        // The second subscriber still has "two" unwritten.
        assert!(!is_ready(barrier.wait()));
        assert_eq!(write_one(&second, &mut second_queue).await, &b"two"[..]);
        assert!(is_ready(barrier.wait()));
        // A barrier taken now waits for "three" as well.
        assert!(!is_ready(router.barrier().wait()));
    }

    #[tokio::test]
    async fn a_closed_or_overflowed_subscriber_releases_barriers() {
        let router = Router::default();
        let counters = Counters::default();
        let (gone, _gone_queue) = Outbox::new(16, 1024);
        let (slow, _slow_queue) = Outbox::new(1, 1024);
        router.subscribe(1, vec![pattern()], vec![], &gone);
        router.subscribe(2, vec![pattern()], vec![], &slow);
        let frame = Bytes::from_static(b"event");
        router.route("events.process.start", &frame, None, &counters);
        let barrier = router.barrier();
        assert!(!is_ready(barrier.wait()));
        gone.close();
        assert!(!is_ready(barrier.wait()));
        // The slow subscriber's queue (one frame) overflows: it is cut off, not waited for.
        router.route("events.process.start", &frame, None, &counters);
        assert_eq!(counters.snapshot().subscribers_disconnected_slow, 1);
        assert!(is_ready(barrier.wait()));
        assert!(router.barrier().is_empty());
    }

    #[tokio::test]
    async fn resume_positions_hold_back_what_a_subscriber_already_has() {
        let router = Router::default();
        let counters = Counters::default();
        let (resumed, mut resumed_queue) = Outbox::new(16, 1024);
        let (fresh, mut fresh_queue) = Outbox::new(16, 1024);
        let at = |publisher_id: &str, sequence| ResumePosition {
            publisher_id: publisher_id.to_owned(),
            sequence,
        };
        router.subscribe(1, vec![pattern()], vec![at("p", 5), at("q", 1)], &resumed);
        // A later, lower position does not move it back.
        router.subscribe(1, vec![], vec![at("p", 2)], &resumed);
        assert_eq!(router.counts(1), (1, 2));
        router.subscribe(2, vec![pattern()], vec![], &fresh);
        for (publisher_id, sequence) in [("p", 4), ("p", 5), ("p", 6), ("r", 1)] {
            let frame = Bytes::from(format!("{publisher_id}{sequence}"));
            let origin = Origin {
                publisher_id,
                sequence,
            };
            router.route("events.process.start", &frame, Some(origin), &counters);
        }
        // An upstream publisher (no hello, no origin) is never held back.
        router.route(
            "events.process.start",
            &Bytes::from_static(b"up"),
            None,
            &counters,
        );
        for expected in [&b"p6"[..], b"r1", b"up"] {
            assert_eq!(write_one(&resumed, &mut resumed_queue).await, expected);
        }
        for expected in [&b"p4"[..], b"p5", b"p6", b"r1", b"up"] {
            assert_eq!(write_one(&fresh, &mut fresh_queue).await, expected);
        }
        assert!(resumed_queue.try_recv().is_err());
        assert_eq!(counters.snapshot().deliveries_already_held, 2);
    }
}
