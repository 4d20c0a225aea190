//! The publish buffer: durable events the broker has not acknowledged yet.
//!
//! Owns the occupancy accounting. Events live in one of two places until acknowledged:
//! in memory (what the link needs to write their frames, at most `buffer_max_bytes` of
//! frame bytes), or — when memory is full, and for the backlog found in the WAL at start-up
//! — only in the WAL, recorded here as ranges of sequences ("spilled") that the link reads
//! back from disk. Occupancy is memory bytes plus spilled bytes, so a stalled broker raises
//! it even though memory stays bounded. Pure: no I/O, no clocks; what is held per event is
//! opaque apart from its frame size ([`FrameSize`]).

use std::collections::VecDeque;

use bytes::Bytes;
use slab::Slab;

/// What the buffer needs to know about an event held in memory: the size of its frame.
pub trait FrameSize {
    /// Bytes of the event's frame on the wire (length prefix included).
    fn frame_bytes(&self) -> usize;
}

impl FrameSize for Bytes {
    fn frame_bytes(&self) -> usize {
        self.len()
    }
}

/// What the link should send at its cursor.
#[derive(Debug, PartialEq)]
pub enum Next<'a, F> {
    /// This event (it is in memory).
    Memory(&'a F),
    /// The event at the cursor is only in the WAL: read it back from disk.
    Disk,
    /// Nothing to send at the cursor yet (not durable, or still being handed over).
    Wait,
}

impl<F> Next<'_, F> {
    /// Whether the event must be read back from disk.
    pub fn is_disk(&self) -> bool {
        matches!(self, Next::Disk)
    }
}

/// A run of consecutive sequences held only in the WAL, with the frame bytes they take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpilledRange {
    first: u64,
    last: u64,
    /// Frame bytes of the range's events. Exact when the range is formed; a partial
    /// acknowledgement removes the range's mean per event, and the rest is removed exactly
    /// when the range is gone, so the error never outlives one range.
    bytes: u64,
}

impl SpilledRange {
    fn events(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Memory and spill accounting for unacknowledged events.
#[derive(Debug)]
pub struct PublishBuffer<F = Bytes> {
    max_bytes: usize,
    /// In-memory events, in slots reused after acknowledgement (nothing held ever moves).
    frames: Slab<F>,
    /// (sequence, slot) by ascending sequence: the order index is 16 bytes per event, so
    /// an out-of-order hand-over shifts pairs, not events.
    memory: VecDeque<(u64, usize)>,
    memory_bytes: usize,
    /// Disjoint ascending ranges of sequences held only in the WAL.
    spilled: VecDeque<SpilledRange>,
    /// Sequences covered by `spilled` (an upper bound for the start-up backlog, whose range
    /// may contain sequences lost to damage).
    spilled_events: u64,
    /// Frame bytes of the spilled events (the sum over `spilled`).
    spilled_bytes: u64,
    /// Events that went to the spilled state in this process, each counted once.
    spilled_total: u64,
    acked: u64,
    highest: u64,
}

impl<F: FrameSize> PublishBuffer<F> {
    /// An empty buffer whose acknowledged watermark is `acked`.
    pub fn new(max_bytes: usize, acked: u64) -> PublishBuffer<F> {
        PublishBuffer {
            max_bytes,
            frames: Slab::new(),
            memory: VecDeque::new(),
            memory_bytes: 0,
            spilled: VecDeque::new(),
            spilled_events: 0,
            spilled_bytes: 0,
            spilled_total: 0,
            acked,
            highest: acked,
        }
    }

    /// Records the start-up backlog: sequences `first..=last` are in the WAL but not
    /// acknowledged; `frame_bytes` is the total size of their frames.
    pub fn add_backlog(&mut self, first: u64, last: u64, frame_bytes: u64) {
        assert!(
            first > self.acked
                && first <= last
                && self.memory.is_empty()
                && self.spilled.is_empty(),
            "the backlog is added once, to an empty buffer, above the watermark"
        );
        self.spilled.push_back(SpilledRange {
            first,
            last,
            bytes: frame_bytes,
        });
        self.spilled_events = last - first + 1;
        self.spilled_bytes = frame_bytes;
        self.highest = last;
        self.check();
    }

    /// Adds a durable event: to memory if it fits, otherwise to the spilled ranges.
    /// Returns whether it was spilled.
    pub fn ingest(&mut self, sequence: u64, held: F) -> bool {
        if sequence <= self.acked {
            // Already acknowledged (a broker's welcome can run ahead of our hand-over).
            return false;
        }
        debug_assert!(!self.contains(sequence), "each sequence is ingested once");
        self.highest = self.highest.max(sequence);
        let frame_bytes = held.frame_bytes();
        if self.memory_bytes + frame_bytes <= self.max_bytes {
            self.memory_bytes += frame_bytes;
            // Hand-overs come in sequence order almost always: then this is the end.
            let at = match self.memory.back() {
                Some((back, _)) if *back > sequence => {
                    self.memory.partition_point(|(held, _)| *held < sequence)
                }
                _ => self.memory.len(),
            };
            let slot = self.frames.insert(held);
            self.memory.insert(at, (sequence, slot));
            return false;
        }
        self.spill(sequence, frame_bytes as u64);
        true
    }

    /// Records a durable event as held only in the WAL, whatever room memory has.
    pub fn spill_only(&mut self, sequence: u64) {
        if sequence > self.acked && !self.contains(sequence) {
            self.highest = self.highest.max(sequence);
            self.spill(sequence, 0);
        }
    }

    fn spill(&mut self, sequence: u64, frame_bytes: u64) {
        self.spilled_events += 1;
        self.spilled_bytes += frame_bytes;
        self.spilled_total += 1;
        let at = self.spilled.partition_point(|range| range.last < sequence);
        // Join the neighbouring range when contiguous (the usual case: appended at the end).
        if at > 0 && self.spilled[at - 1].last + 1 == sequence {
            let before = &mut self.spilled[at - 1];
            before.last = sequence;
            before.bytes += frame_bytes;
            if at < self.spilled.len() && self.spilled[at].first == sequence + 1 {
                let after = self.spilled.remove(at).expect("the range after");
                let before = &mut self.spilled[at - 1];
                before.last = after.last;
                before.bytes += after.bytes;
            }
        } else if at < self.spilled.len() && self.spilled[at].first == sequence + 1 {
            let after = &mut self.spilled[at];
            after.first = sequence;
            after.bytes += frame_bytes;
        } else {
            self.spilled.insert(
                at,
                SpilledRange {
                    first: sequence,
                    last: sequence,
                    bytes: frame_bytes,
                },
            );
        }
        self.check();
    }

    fn contains(&self, sequence: u64) -> bool {
        self.memory
            .binary_search_by_key(&sequence, |(held, _)| *held)
            .is_ok()
            || self.spilled_range_end(sequence).is_some()
    }

    /// Advances the acknowledged watermark to `through` (never backwards) and forgets what
    /// it covers; returns how many unacknowledged events it covered.
    pub fn ack(&mut self, through: u64) -> u64 {
        if through <= self.acked {
            return 0;
        }
        self.acked = through;
        self.highest = self.highest.max(through);
        let mut covered = 0;
        while let Some(&(sequence, slot)) = self.memory.front() {
            if sequence > through {
                break;
            }
            self.memory_bytes -= self.frames.remove(slot).frame_bytes();
            self.memory.pop_front();
            covered += 1;
        }
        while let Some(front) = self.spilled.front_mut() {
            if front.first > through {
                break;
            }
            if front.last <= through {
                covered += front.events();
                self.spilled_events -= front.events();
                self.spilled_bytes -= front.bytes;
                self.spilled.pop_front();
            } else {
                // Part of the range: its mean size per event (the rest leaves exactly when
                // the range does).
                let part = through + 1 - front.first;
                let removed = front.bytes / front.events() * part;
                covered += part;
                self.spilled_events -= part;
                self.spilled_bytes -= removed;
                front.bytes -= removed;
                front.first = through + 1;
                break;
            }
        }
        self.check();
        covered
    }

    /// What to send for the event at `cursor` (the next sequence the connection needs).
    pub fn next(&self, cursor: u64) -> Next<'_, F> {
        debug_assert!(cursor > self.acked, "the cursor is past the watermark");
        // Held sequences are usually contiguous: then the cursor's place is an offset from
        // the front, checked before searching.
        let at = match self.memory.front() {
            Some((front, _)) if *front <= cursor => {
                let guess = usize::try_from(cursor - front).unwrap_or(usize::MAX);
                match self.memory.get(guess) {
                    Some((held, _)) if *held == cursor => guess,
                    _ => self.memory.partition_point(|(held, _)| *held < cursor),
                }
            }
            _ => 0,
        };
        if let Some(&(sequence, slot)) = self.memory.get(at)
            && sequence == cursor
        {
            return Next::Memory(&self.frames[slot]);
        }
        if self.spilled_range_end(cursor).is_some() {
            return Next::Disk;
        }
        // A sequence missing from both places inside a spilled range's gap cannot happen;
        // past the highest we know of, the event is not durable yet.
        Next::Wait
    }

    /// Highest sequence held (or acknowledged).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// The acknowledged watermark.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The last sequence of the spilled range holding `sequence`, if it is spilled.
    pub fn spilled_range_end(&self, sequence: u64) -> Option<u64> {
        let at = self.spilled.partition_point(|range| range.last < sequence);
        self.spilled
            .get(at)
            .filter(|range| range.first <= sequence)
            .map(|range| range.last)
    }

    /// Memory bytes plus spilled bytes: what backpressure looks at.
    pub fn occupied_bytes(&self) -> u64 {
        self.memory_bytes as u64 + self.spilled_bytes
    }

    /// Bytes of frames held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Events held in memory.
    pub fn memory_events(&self) -> usize {
        self.memory.len()
    }

    /// Unacknowledged events held only in the WAL.
    pub fn spilled_events(&self) -> u64 {
        self.spilled_events
    }

    /// Events spilled since start (cumulative; each event counted once, when it first goes
    /// to the WAL-only state; the start-up backlog is not counted).
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    /// Whether every event handed over is acknowledged.
    pub fn is_drained(&self) -> bool {
        self.memory.is_empty() && self.spilled.is_empty()
    }

    /// The spilled totals are the sums over the ranges (cheap enough to check in debug
    /// builds: the number of ranges is small).
    fn check(&self) {
        debug_assert_eq!(
            self.spilled_events,
            self.spilled.iter().map(SpilledRange::events).sum::<u64>()
        );
        debug_assert_eq!(
            self.spilled_bytes,
            self.spilled.iter().map(|range| range.bytes).sum::<u64>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: usize) -> Bytes {
        Bytes::from(vec![7u8; bytes])
    }

    #[test]
    fn memory_holds_up_to_the_limit_then_events_spill() {
        let mut buffer: PublishBuffer = PublishBuffer::new(100, 0);
        assert!(!buffer.ingest(1, frame(40)));
        assert!(!buffer.ingest(2, frame(60)));
        assert!(buffer.ingest(3, frame(10)));
        assert!(buffer.ingest(4, frame(30)));
        assert_eq!(buffer.memory_bytes(), 100);
        assert_eq!(buffer.spilled_events(), 2);
        assert_eq!(buffer.occupied_bytes(), 140);
        assert_eq!(buffer.next(1), Next::Memory(&frame(40)));
        assert_eq!(buffer.next(3), Next::Disk);
        assert_eq!(buffer.spilled_range_end(3), Some(4));
        assert_eq!(buffer.next(5), Next::Wait);
        // Acks free memory; a new event fits again and sits after the spilled range.
        assert_eq!(buffer.ack(2), 2);
        assert!(!buffer.ingest(5, frame(10)));
        assert_eq!(buffer.next(3), Next::Disk);
        assert_eq!(buffer.next(5), Next::Memory(&frame(10)));
        assert_eq!(buffer.ack(4), 2);
        assert_eq!(buffer.spilled_events(), 0);
        assert_eq!(buffer.occupied_bytes(), 10);
        assert_eq!(buffer.ack(5), 1);
        assert!(buffer.is_drained());
        assert_eq!(buffer.spilled_total(), 2);
    }

    #[test]
    fn out_of_order_hand_over_is_sorted_and_acks_never_go_back() {
        let mut buffer: PublishBuffer = PublishBuffer::new(1000, 10);
        buffer.ingest(12, frame(1));
        assert_eq!(buffer.next(11), Next::Wait);
        buffer.ingest(11, frame(2));
        assert_eq!(buffer.next(11), Next::Memory(&frame(2)));
        assert_eq!(buffer.ack(11), 1);
        assert_eq!(buffer.ack(9), 0);
        assert_eq!(buffer.acked(), 11);
        assert!(
            !buffer.ingest(11, frame(3)),
            "at or below the watermark: ignored"
        );
        assert_eq!(buffer.memory_events(), 1);
    }

    fn ranges(buffer: &PublishBuffer) -> Vec<(u64, u64, u64)> {
        buffer
            .spilled
            .iter()
            .map(|range| (range.first, range.last, range.bytes))
            .collect()
    }

    #[test]
    fn spilled_ranges_merge_and_partial_acks_remove_the_mean_size() {
        let mut buffer: PublishBuffer = PublishBuffer::new(0, 0);
        for sequence in [1, 2, 4, 3, 6] {
            assert!(buffer.ingest(sequence, frame(10)));
        }
        assert_eq!(ranges(&buffer), [(1, 4, 40), (6, 6, 10)]);
        assert_eq!(buffer.occupied_bytes(), 50);
        assert_eq!(buffer.ack(2), 2);
        assert_eq!(ranges(&buffer), [(3, 4, 20), (6, 6, 10)]);
        assert_eq!(buffer.occupied_bytes(), 30);
        assert_eq!(buffer.ack(6), 3);
        assert_eq!(buffer.occupied_bytes(), 0);
        assert!(buffer.is_drained());
    }

    #[test]
    fn spilled_bytes_of_unequal_events_are_exact_once_a_range_is_acknowledged() {
        let mut buffer: PublishBuffer = PublishBuffer::new(0, 0);
        for (sequence, bytes) in [(1, 10), (2, 1000), (3, 7), (5, 300)] {
            assert!(buffer.ingest(sequence, frame(bytes)));
        }
        assert_eq!(buffer.occupied_bytes(), 1317);
        // Part of the first range: its mean (1017 / 3 = 339) per event; never below zero.
        buffer.ack(1);
        assert_eq!(ranges(&buffer), [(2, 3, 678), (5, 5, 300)]);
        // The rest of the range leaves with exactly what it still counts.
        buffer.ack(3);
        assert_eq!(buffer.occupied_bytes(), 300);
        buffer.ack(5);
        assert_eq!(buffer.occupied_bytes(), 0);
    }

    #[test]
    fn each_event_counts_once_in_spilled_total_across_stalls() {
        let mut buffer: PublishBuffer = PublishBuffer::new(20, 0);
        let mut sequence = 0;
        // Three stalls: each fills memory (two events) and spills three more, then all of
        // it is acknowledged.
        for stall in 1..=3u64 {
            for _ in 0..5 {
                sequence += 1;
                buffer.ingest(sequence, frame(10));
            }
            assert_eq!(buffer.spilled_events(), 3);
            assert_eq!(buffer.spilled_total(), 3 * stall);
            // The link reads spilled events back and they are acknowledged: nothing counts
            // again.
            assert_eq!(buffer.next(sequence), Next::Disk);
            buffer.ack(sequence);
            assert_eq!(buffer.spilled_total(), 3 * stall);
        }
        assert!(buffer.spilled_total() <= sequence);
    }

    #[test]
    fn the_start_up_backlog_is_spilled_and_counts_toward_occupancy() {
        let mut buffer: PublishBuffer = PublishBuffer::new(100, 5);
        buffer.add_backlog(6, 15, 1000);
        assert_eq!(buffer.spilled_events(), 10);
        assert_eq!(buffer.occupied_bytes(), 1000);
        assert_eq!(buffer.next(6), Next::Disk);
        assert_eq!(buffer.highest(), 15);
        assert_eq!(buffer.ack(10), 5);
        assert_eq!(buffer.occupied_bytes(), 500);
    }
}
