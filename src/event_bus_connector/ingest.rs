//! The hand-over from the WAL to the publish buffer, on the ring thread.
//!
//! Owns the order of events: a publisher hands over its WAL receipt here right after
//! enqueueing (no await in between, so a cancelled `publish` cannot lose the hand-over);
//! this task waits for receipts in hand-over order, builds each durable event's frame,
//! adds it to the buffer and only then answers the publisher. It never waits for the
//! broker, so `publish` never does either.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::core::Core;
use crate::event::EventKind;
use crate::wal::{AppendReceipt, BatchReceipt, WalError};
use crate::wire::WireTime;
use crate::wire::budget::frame_with_payload;

/// A message from a handle to the hand-over task.
pub(crate) enum Ingest {
    /// One enqueued event.
    Event {
        receipt: AppendReceipt,
        kind: EventKind,
        /// The wire payload (already within the frame budget).
        payload: Vec<u8>,
        timestamp: WireTime,
        reply: oneshot::Sender<Result<u64, WalError>>,
    },
    /// A batch enqueued with consecutive sequences; one reply for all of it.
    Batch {
        receipt: BatchReceipt,
        /// Kind, wire payload and envelope timestamp of each event, in order.
        items: Vec<(EventKind, Vec<u8>, WireTime)>,
        reply: oneshot::Sender<Result<RangeInclusive<u64>, WalError>>,
    },
    /// Answered once every event handed over before it is in the buffer.
    Flush { reply: oneshot::Sender<()> },
}

/// Runs until every handle is gone and every receipt is answered.
pub(crate) async fn run(mut receiver: mpsc::UnboundedReceiver<Ingest>, core: Rc<RefCell<Core>>) {
    let mut pending: VecDeque<Ingest> = VecDeque::new();
    let mut open = true;
    loop {
        // Answer flushes at the front: everything before them is done.
        while let Some(Ingest::Flush { .. }) = pending.front() {
            if let Some(Ingest::Flush { reply }) = pending.pop_front() {
                let _ = reply.send(());
            }
        }
        if !open && pending.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            result = wait_front(&mut pending), if !pending.is_empty() => {
                if let Some(front) = pending.pop_front() {
                    finish(&core, front, result);
                }
            }
            message = receiver.recv(), if open => match message {
                Some(message) => pending.push_back(message),
                None => open = false,
            },
        }
    }
}

/// Waits for the front receipt; a single event resolves to a one-element range.
async fn wait_front(pending: &mut VecDeque<Ingest>) -> Result<RangeInclusive<u64>, WalError> {
    match pending.front_mut() {
        Some(Ingest::Event { receipt, .. }) => receipt.await.map(|sequence| sequence..=sequence),
        Some(Ingest::Batch { receipt, .. }) => receipt.await,
        // Flushes are answered before waiting; an empty queue is never waited on.
        _ => std::future::pending().await,
    }
}

/// Hands a resolved front entry over to the buffer, then answers its publisher (who may
/// have stopped waiting: the events are handed over anyway).
fn finish(core: &Rc<RefCell<Core>>, entry: Ingest, result: Result<RangeInclusive<u64>, WalError>) {
    match entry {
        Ingest::Event {
            kind,
            payload,
            timestamp,
            reply,
            ..
        } => {
            let result = result.map(|range| *range.start());
            if let Ok(sequence) = result {
                hand_over(core, sequence, kind, payload, timestamp);
                core.borrow_mut().handed_over();
            }
            let _ = reply.send(result);
        }
        Ingest::Batch { items, reply, .. } => {
            // Whatever of the batch is durable is handed over, also when the batch failed
            // part-way: the link delivers sequences in order, so a durable sequence that is
            // never handed over would stop delivery for good.
            let durable = match &result {
                Ok(range) => {
                    debug_assert_eq!(
                        range.clone().count(),
                        items.len(),
                        "a batch gets one sequence per event"
                    );
                    Some(range.clone())
                }
                Err(error) => error.durable_batch_prefix(),
            };
            if let Some(range) = durable {
                assert!(
                    range.clone().count() <= items.len(),
                    "durable range {range:?} longer than the batch of {}",
                    items.len()
                );
                for (sequence, (kind, payload, timestamp)) in range.zip(items) {
                    hand_over(core, sequence, kind, payload, timestamp);
                }
                core.borrow_mut().handed_over();
            }
            let _ = reply.send(result);
        }
        Ingest::Flush { reply } => {
            let _ = reply.send(());
        }
    }
}

fn hand_over(
    core: &Rc<RefCell<Core>>,
    sequence: u64,
    kind: EventKind,
    payload: Vec<u8>,
    timestamp: WireTime,
) {
    let mut core = core.borrow_mut();
    match frame_with_payload(&core.publisher_id, sequence, kind, payload, timestamp) {
        Ok(frame) => core.ingest(sequence, Bytes::from(frame)),
        // Cannot happen (the payload is within budget and the id valid); the event is in the
        // WAL, so it is recorded as spilled and read back from there.
        Err(error) => {
            tracing::error!(sequence, %error, "cannot frame a durable event");
            core.ingest_spilled(sequence);
        }
    }
}
