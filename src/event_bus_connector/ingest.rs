//! The hand-over from the WAL to the publish buffer, on the ring thread.
//!
//! Owns the order of events: a publisher hands over its WAL receipt here right after
//! enqueueing (no await in between, so a cancelled `publish` cannot lose the hand-over);
//! this task waits for receipts in hand-over order, adds each durable event (its payload,
//! as the publisher encoded it) to the buffer and only then answers the publisher. Every
//! receipt already resolved behind the first is taken in the same turn, so the figures and
//! the link are updated once per turn, not per event. It never waits for the broker, so
//! `publish` never does either.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::buffer::FrameSize;
use super::core::Core;
use super::held::HeldEvent;
use crate::event::EventKind;
use crate::wal::{AppendReceipt, BatchReceipt, WalError};
use crate::wire::WireTime;

/// A message from a handle to the hand-over task.
pub(crate) enum Ingest {
    /// One enqueued event.
    Event {
        receipt: AppendReceipt,
        kind: EventKind,
        /// The wire payload (already within the frame budget).
        payload: Bytes,
        timestamp: WireTime,
        reply: oneshot::Sender<Result<u64, WalError>>,
    },
    /// A batch enqueued with consecutive sequences; one reply for all of it.
    Batch {
        receipt: BatchReceipt,
        /// Kind, wire payload and envelope timestamp of each event, in order.
        items: Vec<(EventKind, Bytes, WireTime)>,
        reply: oneshot::Sender<Result<RangeInclusive<u64>, WalError>>,
    },
    /// Answered once every event handed over before it is in the buffer.
    Flush { reply: oneshot::Sender<()> },
}

/// A publisher's answer, sent once its group of hand-overs is accounted for.
enum Answer {
    One(
        oneshot::Sender<Result<u64, WalError>>,
        Result<u64, WalError>,
    ),
    Batch(
        oneshot::Sender<Result<RangeInclusive<u64>, WalError>>,
        Result<RangeInclusive<u64>, WalError>,
    ),
}

impl Answer {
    fn send(self) {
        // The publisher may have stopped waiting: the events are handed over anyway.
        match self {
            Answer::One(reply, result) => drop(reply.send(result)),
            Answer::Batch(reply, result) => drop(reply.send(result)),
        }
    }
}

/// Runs until every handle is gone and every receipt is answered.
///
/// Whenever the front receipt resolves, every receipt behind it that has resolved too
/// (they usually belong to the same WAL group) is handed over in the same turn: figures,
/// backpressure and the link's wake-up are updated once per turn, not per event, and the
/// publishers are answered after that.
pub(crate) async fn run(mut receiver: mpsc::UnboundedReceiver<Ingest>, core: Rc<RefCell<Core>>) {
    let mut pending: VecDeque<Ingest> = VecDeque::new();
    let mut answers: Vec<Answer> = Vec::new();
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
                    let mut handed_over = finish(&core, front, result, &mut answers);
                    loop {
                        while let Ok(message) = receiver.try_recv() {
                            pending.push_back(message);
                        }
                        let Some(result) = front_if_ready(&mut pending) else {
                            break;
                        };
                        if let Some(front) = pending.pop_front() {
                            handed_over |= finish(&core, front, result, &mut answers);
                        }
                    }
                    if handed_over {
                        core.borrow_mut().handed_over();
                    }
                    for answer in answers.drain(..) {
                        answer.send();
                    }
                }
            }
            // Only waited on when nothing is pending: a hand-over cannot be finished before
            // its receipt resolves, and the messages that arrive meanwhile are taken in bulk
            // once it does. So a publisher's send does not wake this thread while a group is
            // in flight (one wake-up per group, not per event).
            message = receiver.recv(), if open && pending.is_empty() => match message {
                Some(message) => pending.push_back(message),
                None => open = false,
            },
        }
    }
}

/// Waits for the front receipt; a single event resolves to a one-element range.
async fn wait_front(pending: &mut VecDeque<Ingest>) -> Result<RangeInclusive<u64>, WalError> {
    std::future::poll_fn(|cx| poll_front(pending, cx)).await
}

/// The front receipt's result if it has resolved already (a flush, or nothing, is not).
fn front_if_ready(pending: &mut VecDeque<Ingest>) -> Option<Result<RangeInclusive<u64>, WalError>> {
    let mut cx = Context::from_waker(Waker::noop());
    match pending.front() {
        Some(Ingest::Event { .. } | Ingest::Batch { .. }) => match poll_front(pending, &mut cx) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        },
        _ => None,
    }
}

fn poll_front(
    pending: &mut VecDeque<Ingest>,
    cx: &mut Context<'_>,
) -> Poll<Result<RangeInclusive<u64>, WalError>> {
    match pending.front_mut() {
        Some(Ingest::Event { receipt, .. }) => Pin::new(receipt)
            .poll(cx)
            .map(|result| result.map(|sequence| sequence..=sequence)),
        Some(Ingest::Batch { receipt, .. }) => Pin::new(receipt).poll(cx),
        // Flushes are answered before waiting; an empty queue is never waited on.
        _ => Poll::Pending,
    }
}

/// Hands a resolved front entry over to the buffer and queues its publisher's answer;
/// returns whether anything was handed over.
fn finish(
    core: &Rc<RefCell<Core>>,
    entry: Ingest,
    result: Result<RangeInclusive<u64>, WalError>,
    answers: &mut Vec<Answer>,
) -> bool {
    match entry {
        Ingest::Event {
            kind,
            payload,
            timestamp,
            reply,
            ..
        } => {
            let result = result.map(|range| *range.start());
            let handed_over = if let Ok(sequence) = result {
                hand_over(&mut core.borrow_mut(), sequence, kind, payload, timestamp);
                true
            } else {
                false
            };
            answers.push(Answer::One(reply, result));
            handed_over
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
            let handed_over = durable.is_some();
            if let Some(range) = durable {
                assert!(
                    range.clone().count() <= items.len(),
                    "durable range {range:?} longer than the batch of {}",
                    items.len()
                );
                let mut core = core.borrow_mut();
                for (sequence, (kind, payload, timestamp)) in range.zip(items) {
                    hand_over(&mut core, sequence, kind, payload, timestamp);
                }
            }
            answers.push(Answer::Batch(reply, result));
            handed_over
        }
        Ingest::Flush { reply } => {
            let _ = reply.send(());
            false
        }
    }
}

fn hand_over(core: &mut Core, sequence: u64, kind: EventKind, payload: Bytes, timestamp: WireTime) {
    let held = HeldEvent::new(&core.framer, sequence, kind, payload, timestamp);
    if held.frame_bytes() < crate::wire::budget::CONNECTOR_FRAME_MAX_BYTES {
        core.ingest(sequence, held);
    } else {
        // Cannot happen (the payload is within budget and the id valid); the event is in the
        // WAL, so it is recorded as spilled and read back from there.
        tracing::error!(sequence, "a durable event's frame is over the budget");
        core.ingest_spilled(sequence);
    }
}
