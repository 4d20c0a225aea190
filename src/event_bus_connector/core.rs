//! The ring thread's connector state, shared by its tasks (hand-over, link, checkpointer):
//! the publish buffer, the backpressure monitor and the published figures.
//!
//! Owns the rule that every change of occupancy goes through one place, which updates the
//! counters, the acknowledged watermark and the backpressure state together. Lives on the
//! ring thread only (`Rc<RefCell<_>>`); never awaits while borrowed.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::{Notify, watch};

use super::backpressure::{BackpressureSignal, Hysteresis};
use super::buffer::PublishBuffer;
use super::held::HeldEvent;
use super::stats::Shared;
use crate::wire::budget::EventFramer;

/// Most backpressure signals kept while the receiver does not read. Signals alternate, so
/// dropping the oldest pair keeps both the alternation and the final state.
const SIGNAL_QUEUE_MAX: usize = 64;

/// The connector's state on the ring thread.
pub(crate) struct Core {
    pub buffer: PublishBuffer<HeldEvent>,
    hysteresis: Hysteresis,
    limit_bytes: u64,
    pub shared: Arc<Shared>,
    acked: watch::Sender<u64>,
    /// Wakes the link when there is something new to send.
    pub wake_link: Rc<Notify>,
    signals: VecDeque<BackpressureSignal>,
    pub wake_signals: Rc<Notify>,
    pub publisher_id: Arc<str>,
    /// Writes this publisher's event frames.
    pub framer: EventFramer,
    /// Highest sequence of the backlog found at start-up (0: none).
    pub backlog_end: u64,
    /// Highest sequence written to any connection so far.
    pub highest_sent: u64,
}

impl Core {
    pub fn new(
        buffer: PublishBuffer<HeldEvent>,
        hysteresis: Hysteresis,
        limit_bytes: usize,
        shared: Arc<Shared>,
        acked: watch::Sender<u64>,
        publisher_id: Arc<str>,
    ) -> Core {
        let backlog_end = buffer.highest();
        let mut core = Core {
            buffer,
            hysteresis,
            limit_bytes: limit_bytes as u64,
            shared,
            acked,
            wake_link: Rc::new(Notify::new()),
            signals: VecDeque::new(),
            wake_signals: Rc::new(Notify::new()),
            framer: EventFramer::new(&publisher_id),
            publisher_id,
            backlog_end,
            highest_sent: 0,
        };
        core.occupancy_changed();
        core
    }

    /// A durable event arrives from the hand-over; [`Core::handed_over`] follows each
    /// group of them.
    pub fn ingest(&mut self, sequence: u64, held: HeldEvent) {
        self.buffer.ingest(sequence, held);
    }

    /// A durable event that is only in the WAL (its frame could not be kept).
    pub fn ingest_spilled(&mut self, sequence: u64) {
        self.buffer.spill_only(sequence);
    }

    /// After a group of hand-overs (one event or a batch): figures, backpressure, and the
    /// link, once per group rather than per event.
    pub fn handed_over(&mut self) {
        self.occupancy_changed();
        self.wake_link.notify_one();
    }

    /// The broker acknowledged (or, for a legacy broker, we wrote) everything up to `through`.
    pub fn ack(&mut self, through: u64) {
        if through <= self.buffer.acked() {
            return;
        }
        self.buffer.ack(through);
        let acked = self.buffer.acked();
        self.shared.acked_through.store(acked, Relaxed);
        // Figures first, then waiters: whoever wakes on the watermark sees them updated.
        self.occupancy_changed();
        self.acked.send_if_modified(|current| {
            let changed = *current != acked;
            *current = acked;
            changed
        });
    }

    fn occupancy_changed(&mut self) {
        let occupied = self.buffer.occupied_bytes();
        let shared = &self.shared;
        shared.occupied_bytes.store(occupied, Relaxed);
        shared
            .buffer_bytes
            .store(self.buffer.memory_bytes() as u64, Relaxed);
        shared.buffered_events.store(
            self.buffer.memory_events() as u64 + self.buffer.spilled_events(),
            Relaxed,
        );
        shared
            .spilled_events
            .store(self.buffer.spilled_events(), Relaxed);
        shared
            .spilled_total
            .store(self.buffer.spilled_total(), Relaxed);
        if let Some(signal) = self.hysteresis.update(occupied, self.limit_bytes) {
            shared
                .backpressure_active
                .store(self.hysteresis.is_active(), Relaxed);
            tracing::info!(
                ?signal,
                occupied_bytes = occupied,
                limit_bytes = self.limit_bytes,
                "backpressure"
            );
            if self.signals.len() >= SIGNAL_QUEUE_MAX {
                self.signals.pop_front();
                self.signals.pop_front();
            }
            self.signals.push_back(signal);
            self.wake_signals.notify_one();
        }
    }

    /// The oldest backpressure signal not yet delivered.
    pub fn next_signal(&mut self) -> Option<BackpressureSignal> {
        self.signals.pop_front()
    }
}
