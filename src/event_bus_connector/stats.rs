//! Connector counters shared between the ring thread (the only writer) and handles, and the
//! [`ConnectorStats`] snapshot. Relaxed atomics: each figure is exact on its own; a snapshot
//! is not one instant across figures.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::wal::WalStats;

/// Where the broker link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LinkState {
    /// `connect()` has not been called: events are made durable and kept.
    Idle,
    /// Connecting to the socket.
    Connecting,
    /// Connected, hello sent, waiting for the welcome.
    AwaitingWelcome,
    /// Connected to a broker that acknowledges (welcome received).
    Connected,
    /// Connected to a legacy broker (no welcome): written to the socket counts as delivered.
    ConnectedLegacy,
    /// Disconnected; waiting before the next attempt.
    Backoff,
    /// Shut down.
    Stopped,
}

impl LinkState {
    const ALL: [LinkState; 7] = [
        LinkState::Idle,
        LinkState::Connecting,
        LinkState::AwaitingWelcome,
        LinkState::Connected,
        LinkState::ConnectedLegacy,
        LinkState::Backoff,
        LinkState::Stopped,
    ];

    fn index(self) -> u8 {
        LinkState::ALL
            .iter()
            .position(|state| *state == self)
            .unwrap_or(0) as u8
    }

    /// Whether a socket is connected in this state.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            LinkState::AwaitingWelcome | LinkState::Connected | LinkState::ConnectedLegacy
        )
    }
}

/// Live counters.
#[derive(Debug)]
pub(crate) struct Shared {
    link_state: AtomicU8,
    pub connections: AtomicU64,
    pub connect_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub events_sent: AtomicU64,
    pub replayed: AtomicU64,
    pub read_back: AtomicU64,
    pub acked_through: AtomicU64,
    pub checkpoints_written: AtomicU64,
    pub checkpointed_through: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub buffered_events: AtomicU64,
    pub spilled_events: AtomicU64,
    pub spilled_total: AtomicU64,
    pub occupied_bytes: AtomicU64,
    pub backpressure_active: AtomicBool,
    pub legacy_broker: AtomicBool,
}

impl Shared {
    pub fn new(acked_through: u64) -> Shared {
        Shared {
            link_state: AtomicU8::new(LinkState::Idle.index()),
            connections: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            read_back: AtomicU64::new(0),
            acked_through: AtomicU64::new(acked_through),
            checkpoints_written: AtomicU64::new(0),
            checkpointed_through: AtomicU64::new(acked_through),
            buffer_bytes: AtomicU64::new(0),
            buffered_events: AtomicU64::new(0),
            spilled_events: AtomicU64::new(0),
            spilled_total: AtomicU64::new(0),
            occupied_bytes: AtomicU64::new(0),
            backpressure_active: AtomicBool::new(false),
            legacy_broker: AtomicBool::new(false),
        }
    }

    pub fn set_state(&self, state: LinkState) {
        self.link_state.store(state.index(), Relaxed);
    }

    pub fn state(&self) -> LinkState {
        let index = usize::from(self.link_state.load(Relaxed));
        LinkState::ALL
            .get(index)
            .copied()
            .unwrap_or(LinkState::Idle)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// A snapshot of the connector: the WAL's figures plus the link's.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ConnectorStats {
    /// The write-ahead log's counters.
    pub wal: WalStats,
    /// The publisher id sent in hello.
    pub publisher_id: String,
    /// Where the link is.
    pub link_state: LinkState,
    /// Whether the current (or last) broker is a legacy one (no welcome, no acks).
    pub legacy_broker: bool,
    /// Connections established since start.
    pub connections: u64,
    /// Connections after the first (reconnects).
    pub reconnects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Connections closed because the broker broke the protocol.
    pub protocol_errors: u64,
    /// Event frames written to the socket (resends included).
    pub events_sent: u64,
    /// Event frames sent again after a reconnect or restart.
    pub replayed: u64,
    /// Events read back from the WAL on disk to be sent.
    pub read_back_from_wal: u64,
    /// Highest sequence the broker acknowledged (or, with a legacy broker, written).
    pub acked_through: u64,
    /// Checkpoints written to the WAL by the connector.
    pub checkpoints_written: u64,
    /// Encoded frame bytes of unacknowledged events held in memory.
    pub buffer_bytes: u64,
    /// Unacknowledged events held in memory.
    pub buffered_events: u64,
    /// Unacknowledged events held only in the WAL (spilled, or found at start-up).
    pub spilled_events: u64,
    /// Events spilled to the WAL since start, each counted once (when it first went to the
    /// WAL only); the start-up backlog is not counted. Cumulative: do not add up snapshots.
    pub spilled_total: u64,
    /// Occupancy used for backpressure: memory bytes plus spilled bytes, in frame bytes
    /// (exact, see `docs/design.md` on partly acknowledged spilled ranges).
    pub occupied_bytes: u64,
    /// Occupancy in percent of the buffer limit (capped at 100).
    pub buffer_usage_percent: u8,
    /// Whether backpressure is active.
    pub backpressure_active: bool,
}
