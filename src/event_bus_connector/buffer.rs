//! The publish buffer: durable events the broker has not acknowledged yet.
//!
//! Owns the occupancy accounting. Events live in one of two places until acknowledged:
//! in memory (their encoded frames, at most `buffer_max_bytes` of them), or — when memory
//! is full, and for the backlog found in the WAL at start-up — only in the WAL, recorded
//! here as ranges of sequences ("spilled") that the link reads back from disk. Occupancy is
//! memory bytes plus spilled bytes, so a stalled broker raises it even though memory stays
//! bounded. Pure: no I/O, no clocks; frames are opaque bytes.

use std::collections::VecDeque;

use bytes::Bytes;
use slab::Slab;

/// What the link should send at its cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// This frame (the event at the cursor is in memory).
    Memory(Bytes),
    /// The event at the cursor is only in the WAL: read it back from disk.
    Disk,
    /// Nothing to send at the cursor yet (not durable, or still being handed over).
    Wait,
}

/// Memory and spill accounting for unacknowledged events.
#[derive(Debug)]
pub struct PublishBuffer {
    max_bytes: usize,
    /// In-memory frames, in slots reused after acknowledgement (no frame ever moves).
    frames: Slab<Bytes>,
    /// (sequence, slot) by ascending sequence: the order index is 16 bytes per event, so
    /// an out-of-order hand-over shifts pairs, not frames.
    memory: VecDeque<(u64, usize)>,
    memory_bytes: usize,
    /// Disjoint ascending inclusive ranges of sequences held only in the WAL.
    spilled: VecDeque<(u64, u64)>,
    /// Sequences covered by `spilled` (an upper bound for the start-up backlog, whose range
    /// may contain sequences lost to damage).
    spilled_events: u64,
    /// Frame bytes of the spilled events (exact for events spilled in this process; the
    /// start-up backlog is an estimate). Removed at the mean size when acknowledged.
    spilled_bytes: u64,
    spilled_total: u64,
    acked: u64,
    highest: u64,
}

impl PublishBuffer {
    /// An empty buffer whose acknowledged watermark is `acked`.
    pub fn new(max_bytes: usize, acked: u64) -> PublishBuffer {
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
    /// acknowledged; `estimated_bytes` is their estimated frame size in total.
    pub fn add_backlog(&mut self, first: u64, last: u64, estimated_bytes: u64) {
        assert!(
            first > self.acked
                && first <= last
                && self.memory.is_empty()
                && self.spilled.is_empty(),
            "the backlog is added once, to an empty buffer, above the watermark"
        );
        self.spilled.push_back((first, last));
        self.spilled_events = last - first + 1;
        self.spilled_bytes = estimated_bytes;
        self.highest = last;
    }

    /// Adds a durable event: to memory if it fits, otherwise to the spilled ranges.
    /// Returns whether it was spilled.
    pub fn ingest(&mut self, sequence: u64, frame: Bytes) -> bool {
        if sequence <= self.acked {
            // Already acknowledged (a broker's welcome can run ahead of our hand-over).
            return false;
        }
        debug_assert!(!self.contains(sequence), "each sequence is ingested once");
        self.highest = self.highest.max(sequence);
        if self.memory_bytes + frame.len() <= self.max_bytes {
            self.memory_bytes += frame.len();
            let at = self.memory.partition_point(|(held, _)| *held < sequence);
            let slot = self.frames.insert(frame);
            self.memory.insert(at, (sequence, slot));
            return false;
        }
        self.spill(sequence, frame.len() as u64);
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
        let at = self.spilled.partition_point(|(_, last)| *last < sequence);
        // Join the neighbouring range when contiguous (the usual case: appended at the end).
        if at > 0 && self.spilled[at - 1].1 + 1 == sequence {
            self.spilled[at - 1].1 = sequence;
            if at < self.spilled.len() && self.spilled[at].0 == sequence + 1 {
                let (_, last) = self.spilled[at];
                self.spilled[at - 1].1 = last;
                self.spilled.remove(at);
            }
        } else if at < self.spilled.len() && self.spilled[at].0 == sequence + 1 {
            self.spilled[at].0 = sequence;
        } else {
            self.spilled.insert(at, (sequence, sequence));
        }
    }

    fn contains(&self, sequence: u64) -> bool {
        self.memory
            .binary_search_by_key(&sequence, |(held, _)| *held)
            .is_ok()
            || self
                .spilled
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&sequence))
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
            self.memory_bytes -= self.frames.remove(slot).len();
            self.memory.pop_front();
            covered += 1;
        }
        let mut spilled_covered = 0;
        while let Some((first, last)) = self.spilled.front_mut() {
            if *first > through {
                break;
            }
            if *last <= through {
                spilled_covered += *last - *first + 1;
                self.spilled.pop_front();
            } else {
                spilled_covered += through + 1 - *first;
                *first = through + 1;
                break;
            }
        }
        if spilled_covered > 0 {
            if self.spilled.is_empty() {
                self.spilled_events = 0;
                self.spilled_bytes = 0;
            } else {
                let mean = self.spilled_bytes / self.spilled_events.max(1);
                self.spilled_events -= spilled_covered.min(self.spilled_events);
                self.spilled_bytes = self.spilled_bytes.saturating_sub(mean * spilled_covered);
            }
        }
        covered + spilled_covered
    }

    /// What to send for the event at `cursor` (the next sequence the connection needs).
    pub fn next(&self, cursor: u64) -> Next {
        debug_assert!(cursor > self.acked, "the cursor is past the watermark");
        let at = self.memory.partition_point(|(held, _)| *held < cursor);
        if let Some(&(sequence, slot)) = self.memory.get(at)
            && sequence == cursor
        {
            return Next::Memory(self.frames[slot].clone());
        }
        let in_spill = self
            .spilled
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&cursor));
        if in_spill {
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
        self.spilled
            .iter()
            .find(|(first, last)| (*first..=*last).contains(&sequence))
            .map(|(_, last)| *last)
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

    /// Events spilled since start (cumulative).
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    /// Whether every event handed over is acknowledged.
    pub fn is_drained(&self) -> bool {
        self.memory.is_empty() && self.spilled.is_empty()
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
        let mut buffer = PublishBuffer::new(100, 0);
        assert!(!buffer.ingest(1, frame(40)));
        assert!(!buffer.ingest(2, frame(60)));
        assert!(buffer.ingest(3, frame(10)));
        assert!(buffer.ingest(4, frame(30)));
        assert_eq!(buffer.memory_bytes(), 100);
        assert_eq!(buffer.spilled_events(), 2);
        assert_eq!(buffer.occupied_bytes(), 140);
        assert_eq!(buffer.next(1), Next::Memory(frame(40)));
        assert_eq!(buffer.next(3), Next::Disk);
        assert_eq!(buffer.spilled_range_end(3), Some(4));
        assert_eq!(buffer.next(5), Next::Wait);
        // Acks free memory; a new event fits again and sits after the spilled range.
        assert_eq!(buffer.ack(2), 2);
        assert!(!buffer.ingest(5, frame(10)));
        assert_eq!(buffer.next(3), Next::Disk);
        assert_eq!(buffer.next(5), Next::Memory(frame(10)));
        assert_eq!(buffer.ack(4), 2);
        assert_eq!(buffer.spilled_events(), 0);
        assert_eq!(buffer.occupied_bytes(), 10);
        assert_eq!(buffer.ack(5), 1);
        assert!(buffer.is_drained());
        assert_eq!(buffer.spilled_total(), 2);
    }

    #[test]
    fn out_of_order_hand_over_is_sorted_and_acks_never_go_back() {
        let mut buffer = PublishBuffer::new(1000, 10);
        buffer.ingest(12, frame(1));
        assert_eq!(buffer.next(11), Next::Wait);
        buffer.ingest(11, frame(2));
        assert_eq!(buffer.next(11), Next::Memory(frame(2)));
        assert_eq!(buffer.ack(11), 1);
        assert_eq!(buffer.ack(9), 0);
        assert_eq!(buffer.acked(), 11);
        assert!(
            !buffer.ingest(11, frame(3)),
            "at or below the watermark: ignored"
        );
        assert_eq!(buffer.memory_events(), 1);
    }

    #[test]
    fn spilled_ranges_merge_and_partial_acks_remove_the_mean_size() {
        let mut buffer = PublishBuffer::new(0, 0);
        for sequence in [1, 2, 4, 3, 6] {
            assert!(buffer.ingest(sequence, frame(10)));
        }
        assert_eq!(buffer.spilled, VecDeque::from([(1, 4), (6, 6)]));
        assert_eq!(buffer.occupied_bytes(), 50);
        assert_eq!(buffer.ack(2), 2);
        assert_eq!(buffer.spilled, VecDeque::from([(3, 4), (6, 6)]));
        assert_eq!(buffer.occupied_bytes(), 30);
        assert_eq!(buffer.ack(6), 3);
        assert_eq!(buffer.occupied_bytes(), 0);
        assert!(buffer.is_drained());
    }

    #[test]
    fn the_start_up_backlog_is_spilled_and_counts_toward_occupancy() {
        let mut buffer = PublishBuffer::new(100, 5);
        buffer.add_backlog(6, 15, 1000);
        assert_eq!(buffer.spilled_events(), 10);
        assert_eq!(buffer.occupied_bytes(), 1000);
        assert_eq!(buffer.next(6), Next::Disk);
        assert_eq!(buffer.highest(), 15);
        assert_eq!(buffer.ack(10), 5);
        assert_eq!(buffer.occupied_bytes(), 500);
    }
}
