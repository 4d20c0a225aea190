//! Broker counters: what happened to connections and events, for tests and operators.
//!
//! Owns the atomic counters and their snapshot. Counting never blocks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every task of one broker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_closed_for_protocol_errors: AtomicU64,
    pub(crate) events_received: AtomicU64,
    pub(crate) events_duplicate: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) deliveries_already_held: AtomicU64,
    pub(crate) subscribers_disconnected_slow: AtomicU64,
    pub(crate) pings_answered: AtomicU64,
    pub(crate) acks_sent: AtomicU64,
    pub(crate) state_write_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BrokerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        BrokerStats {
            connections_accepted: read(&self.connections_accepted),
            connections_refused: read(&self.connections_refused),
            connections_closed_for_protocol_errors: read(
                &self.connections_closed_for_protocol_errors,
            ),
            events_received: read(&self.events_received),
            events_duplicate: read(&self.events_duplicate),
            deliveries: read(&self.deliveries),
            deliveries_already_held: read(&self.deliveries_already_held),
            subscribers_disconnected_slow: read(&self.subscribers_disconnected_slow),
            pings_answered: read(&self.pings_answered),
            acks_sent: read(&self.acks_sent),
            state_write_failures: read(&self.state_write_failures),
        }
    }
}

/// A snapshot of the broker's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed because the peer broke the protocol (malformed or oversized
    /// frame, invalid topic or pattern, misplaced hello, …).
    pub connections_closed_for_protocol_errors: u64,
    /// Event messages received (including duplicates).
    pub events_received: u64,
    /// Events dropped as duplicates by (publisher id, sequence).
    pub events_duplicate: u64,
    /// Event deliveries queued to subscribers (one per matching subscriber).
    pub deliveries: u64,
    /// Deliveries skipped because the subscriber's resume position showed it already held
    /// the event (it resubscribed after a broker restart).
    pub deliveries_already_held: u64,
    /// Subscribers disconnected as slow: their queue overflowed, or an event frame waited
    /// longer than `subscriber_write_timeout_ms` for their socket.
    pub subscribers_disconnected_slow: u64,
    /// `PING` frames answered.
    pub pings_answered: u64,
    /// Cumulative acks sent.
    pub acks_sent: u64,
    /// High-water marks that could not be persisted (the connection was closed unacked).
    pub state_write_failures: u64,
}
