//! Reply fan-out: who waits for what, and answering them. No I/O and no writer state: the
//! writer decides *when* a completion is due; this file only delivers results.
//!
//! Must never: answer a waiter before the writer has established what it waits for (its
//! group written or durable), or drop a waiter without an answer while the log is running.

use std::ops::RangeInclusive;

use tokio::sync::oneshot;

use super::super::error::WalError;

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, WalError>>;

/// The reply of one append or batch.
pub(super) enum EventsReply {
    One(Reply<u64>),
    Batch(Reply<RangeInclusive<u64>>),
}

/// An answer owed once a group is written (interval policy) or durable.
pub(super) enum Completion {
    Events {
        reply: EventsReply,
        first: u64,
        last: u64,
    },
    Checkpoint {
        reply: Reply<()>,
    },
}

/// Someone waiting for a group to become durable, outside any group's completions.
pub(super) enum Waiter {
    /// `Wal::sync`: answered with the durable sequence.
    Sync(Reply<u64>),
    /// A checkpoint equal to one that is not durable yet: answered when that one is.
    Checkpoint(Reply<()>),
}

/// Waiters keyed by the group they wait for, in ascending group order.
#[derive(Default)]
pub(super) struct Waiters {
    waiting: Vec<(u64, Waiter)>,
}

impl Waiters {
    /// Registers a waiter for group `group_id`.
    pub fn push(&mut self, group_id: u64, waiter: Waiter) {
        self.waiting.push((group_id, waiter));
    }

    /// Answers everyone waiting for a group up to `durable_group`.
    pub fn resolve_through(&mut self, durable_group: u64, durable_sequence: u64) {
        for (_, waiter) in self
            .waiting
            .extract_if(.., |(group, _)| *group <= durable_group)
        {
            match waiter {
                Waiter::Sync(reply) => drop(reply.send(Ok(durable_sequence))),
                Waiter::Checkpoint(reply) => drop(reply.send(Ok(()))),
            }
        }
    }

    /// Fails every waiter.
    pub fn fail_all(&mut self, error: &WalError) {
        for (_, waiter) in self.waiting.drain(..) {
            match waiter {
                Waiter::Sync(reply) => drop(reply.send(Err(error.clone()))),
                Waiter::Checkpoint(reply) => drop(reply.send(Err(error.clone()))),
            }
        }
    }
}

/// Answers the callers of a written (interval policy) or durable group, emptying the list
/// (which keeps its capacity for reuse).
pub(super) fn answer(completions: &mut Vec<Completion>) {
    for completion in completions.drain(..) {
        match completion {
            Completion::Events { reply, first, last } => match reply {
                EventsReply::One(reply) => drop(reply.send(Ok(first))),
                EventsReply::Batch(reply) => drop(reply.send(Ok(first..=last))),
            },
            Completion::Checkpoint { reply } => drop(reply.send(Ok(()))),
        }
    }
}

/// Fails every completion with `error` once the log is poisoned. A batch of which a prefix
/// is durable (through `durable_sequence`, the last successful sync) learns that prefix, as
/// after a refused segment, so it can be delivered.
pub(super) fn fail_poisoned(completions: Vec<Completion>, durable_sequence: u64, error: &WalError) {
    for completion in completions {
        match completion {
            Completion::Events { reply, first, last } => {
                fail_events_after(reply, first, last, 0, durable_sequence, error)
            }
            Completion::Checkpoint { reply } => drop(reply.send(Err(error.clone()))),
        }
    }
}

/// Fails an append or batch whose events `first..=assigned_last` took sequences (and
/// `unassigned` more did not). A batch with a durable prefix (through `durable_sequence`)
/// fails naming it; anything else fails plainly.
pub(super) fn fail_events_after(
    reply: EventsReply,
    first: u64,
    assigned_last: u64,
    unassigned: usize,
    durable_sequence: u64,
    error: &WalError,
) {
    if matches!(reply, EventsReply::Batch(_)) && durable_sequence >= first {
        let durable_last = durable_sequence.min(assigned_last);
        let failed_events = (assigned_last - durable_last) as usize + unassigned;
        if failed_events > 0 {
            fail_events_partly(reply, first, durable_last, failed_events, error);
            return;
        }
    }
    fail_events(reply, error)
}

/// Fails a batch of which `durable_first..=durable_last` is already durable: the caller
/// learns that prefix (so it can deliver it) and why the other `failed_events` failed.
pub(super) fn fail_events_partly(
    reply: EventsReply,
    durable_first: u64,
    durable_last: u64,
    failed_events: usize,
    error: &WalError,
) {
    assert!(durable_first <= durable_last, "an empty durable prefix");
    match reply {
        EventsReply::Batch(reply) => drop(reply.send(Err(WalError::BatchPartlyDurable {
            durable_first,
            durable_last,
            failed_events,
            source: Box::new(error.clone()),
        }))),
        // A single event is written whole or not at all; it has no prefix.
        EventsReply::One(_) => unreachable!("a single append cannot be partly durable"),
    }
}

/// Fails one append or batch.
pub(super) fn fail_events(reply: EventsReply, error: &WalError) {
    match reply {
        EventsReply::One(reply) => drop(reply.send(Err(error.clone()))),
        EventsReply::Batch(reply) => drop(reply.send(Err(error.clone()))),
    }
}
