//! Topic routing and per-connection outgoing queues.
//!
//! Owns the subscription registry and the [`Outbox`], the bounded queue in front of each
//! connection's socket. Routing never waits: a subscriber whose queue is full (by messages or
//! bytes) is marked overflowed and disconnected by its own connection task, so a slow
//! subscriber can never stall a publisher, and a subscriber never sees a silently gapped
//! stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::broker::stats::Counters;
use crate::wire::topic::Pattern;

/// The bounded queue of frames waiting to be written to one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    sender: mpsc::Sender<Bytes>,
    queued_bytes: AtomicUsize,
    queue_max_bytes: usize,
    overflowed: AtomicBool,
    overflow_notice: Notify,
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
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
    ) -> (Arc<Outbox>, mpsc::Receiver<Bytes>) {
        let (sender, receiver) = mpsc::channel(queue_max_messages);
        let outbox = Outbox {
            sender,
            queued_bytes: AtomicUsize::new(0),
            queue_max_bytes,
            overflowed: AtomicBool::new(false),
            overflow_notice: Notify::new(),
        };
        (Arc::new(outbox), receiver)
    }

    /// Queues an event delivery without waiting. The first delivery that does not fit flags
    /// the queue and tells the connection to close; later ones are dropped quietly.
    fn deliver(&self, frame: &Bytes) -> Delivery {
        if self.overflowed.load(Ordering::Relaxed) {
            return Delivery::AlreadyOverflowed;
        }
        let queued = self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        let fits = queued + frame.len() <= self.queue_max_bytes;
        if fits && self.sender.try_send(frame.clone()).is_ok() {
            return Delivery::Queued;
        }
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        if self.overflowed.swap(true, Ordering::Relaxed) {
            return Delivery::AlreadyOverflowed;
        }
        self.overflow_notice.notify_one();
        Delivery::Overflowed
    }

    /// Queues a reply (PONG, welcome, ack, …), waiting for room: a peer that does not read
    /// its replies only stalls its own connection.
    pub(crate) async fn send_reply(&self, frame: Bytes) -> Result<(), OutboxClosed> {
        let frame_bytes = frame.len();
        self.queued_bytes.fetch_add(frame_bytes, Ordering::Relaxed);
        self.sender.send(frame).await.map_err(|_| {
            self.queued_bytes.fetch_sub(frame_bytes, Ordering::Relaxed);
            OutboxClosed
        })
    }

    /// The writer wrote a frame of `frame_bytes`.
    pub(crate) fn written(&self, frame_bytes: usize) {
        self.queued_bytes.fetch_sub(frame_bytes, Ordering::Relaxed);
    }

    /// Resolves once a delivery has overflowed this queue.
    pub(crate) async fn overflowed(&self) {
        self.overflow_notice.notified().await;
    }
}

struct Subscription {
    patterns: Vec<Pattern>,
    outbox: Arc<Outbox>,
}

/// Which connection wants which topics.
#[derive(Default)]
pub(crate) struct Router {
    subscriptions: RwLock<HashMap<u64, Subscription>>,
}

impl Router {
    /// Adds patterns to a connection's subscription; returns all its patterns.
    pub(crate) fn subscribe(
        &self,
        connection_id: u64,
        patterns: Vec<Pattern>,
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
                outbox: Arc::clone(outbox),
            });
        for pattern in patterns {
            if !subscription.patterns.contains(&pattern) {
                subscription.patterns.push(pattern);
            }
        }
        subscription
            .patterns
            .iter()
            .map(|pattern| pattern.as_str().to_owned())
            .collect()
    }

    /// Number of patterns a connection has.
    pub(crate) fn pattern_count(&self, connection_id: u64) -> usize {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        subscriptions
            .get(&connection_id)
            .map_or(0, |subscription| subscription.patterns.len())
    }

    /// Removes a connection's subscription.
    pub(crate) fn unsubscribe(&self, connection_id: u64) {
        let mut subscriptions = self
            .subscriptions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        subscriptions.remove(&connection_id);
    }

    /// Queues `frame` to every subscriber with a pattern matching `topic`, without waiting.
    pub(crate) fn route(&self, topic: &str, frame: &Bytes, counters: &Counters) {
        let subscriptions = self
            .subscriptions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for (connection_id, subscription) in subscriptions.iter() {
            if !subscription
                .patterns
                .iter()
                .any(|pattern| pattern.matches(topic))
            {
                continue;
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_overflowing_subscriber_is_flagged_once_and_others_still_get_events() {
        let router = Router::default();
        let counters = Counters::default();
        let (slow, _slow_receiver) = Outbox::new(2, 1024);
        let (fast, mut fast_receiver) = Outbox::new(16, 1024);
        let pattern = || Pattern::parse("events.#").expect("valid");
        router.subscribe(1, vec![pattern()], &slow);
        router.subscribe(2, vec![pattern()], &fast);
        let frame = Bytes::from_static(b"frame");
        for _ in 0..4 {
            router.route("events.process.start", &frame, &counters);
            assert_eq!(fast_receiver.recv().await.as_deref(), Some(&b"frame"[..]));
        }
        let stats = counters.snapshot();
        assert_eq!(stats.subscribers_disconnected_slow, 1);
        assert_eq!(stats.deliveries, 4 + 2);
        slow.overflowed().await;
        router.route("control.x", &frame, &counters);
        assert_eq!(counters.snapshot().deliveries, 6);
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
}
