//! Group forming: turning the queue of accepted commands into one block-aligned group write.
//!
//! A group is the active segment's carried tail block (or nothing, when every group starts on
//! a fresh block) followed by frames: events in queue order with consecutive sequences, and at
//! most one checkpoint record, holding the highest checkpoint taken into the group. Checkpoint
//! and watermark frames count against `group_max_bytes` and the buffer like any frame, and may
//! use the segment's reserve between the rotation point and its end, so acknowledging events
//! never needs a new segment.
//!
//! Must never: write past the group buffer or the segment's end, assign a sequence out of
//! order, or put an event past the rotation point (except a lone oversized record in an empty
//! segment).

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use chrono::{DateTime, Utc};

use super::super::config::GroupStart;
use super::super::error::WalError;
use super::super::format::{
    self, BLOCK_BYTES, CHECKPOINT_FRAME_BYTES, CheckpointEntry, EVENT_FIXED_PAYLOAD_BYTES,
    SEGMENT_HEADER_BYTES, WATERMARK_FRAME_BYTES,
};
use super::super::staging;
use super::Writer;
use super::pipeline::{WriteDone, WriteFuture};
use super::replies::{self, Completion, EventsReply, Reply, Waiter};
use crate::event::EventKind;
use crate::io::Backend;

/// An accepted command waiting to be put into a group.
pub(super) enum Pending {
    Events {
        items: Items,
        first_sequence: Option<u64>,
        reply: EventsReply,
    },
    Checkpoint {
        acked_through: u64,
        reply: Reply<()>,
    },
    Barrier {
        reply: Reply<u64>,
    },
    /// A clean close: one watermark record once everything before it is durable.
    Watermark,
}

impl Pending {
    /// Fails this command with `error`.
    pub fn fail(self, error: &WalError) {
        match self {
            Pending::Events { reply, .. } => replies::fail_events(reply, error),
            Pending::Checkpoint { reply, .. } => drop(reply.send(Err(error.clone()))),
            Pending::Barrier { reply } => drop(reply.send(Err(error.clone()))),
            Pending::Watermark => {}
        }
    }
}

/// The encoded events of one append or batch, consumed from the front. A single append (the
/// common case) is stored inline so accepting it allocates nothing on the ring thread. The
/// byte buffers go back to `wal::staging` for reuse once their bytes are in a group.
pub(super) enum Items {
    One(Option<(EventKind, Vec<u8>)>),
    Many(VecDeque<(EventKind, Vec<u8>)>),
}

impl Items {
    fn front(&self) -> Option<&(EventKind, Vec<u8>)> {
        match self {
            Items::One(item) => item.as_ref(),
            Items::Many(items) => items.front(),
        }
    }

    /// Events not yet put into a group.
    pub(super) fn len(&self) -> usize {
        match self {
            Items::One(item) => usize::from(item.is_some()),
            Items::Many(items) => items.len(),
        }
    }

    /// Removes the front event, returning its buffer.
    fn pop_front(&mut self) -> Option<Vec<u8>> {
        match self {
            Items::One(item) => item.take(),
            Items::Many(items) => items.pop_front(),
        }
        .map(|(_, bytes)| bytes)
    }
}

/// One group: what was written and who waits for it.
#[derive(Default)]
pub(super) struct GroupMeta {
    /// Position of the group in formation order (1, 2, …).
    pub id: u64,
    /// The segment it was written to.
    pub segment: u64,
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    /// The value of the checkpoint record in it, if any.
    pub checkpoint: Option<u64>,
    pub completions: Vec<Completion>,
    pub events: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub device_bytes: u64,
}

/// What forming a group produced.
pub(super) enum Formed<Buf> {
    Write(WriteFuture<Buf>),
    Nothing,
    NeedRotation,
}

impl<B: Backend> Writer<B> {
    /// Forms the next group from the front of the queue and starts its write.
    pub(super) fn form_group(&mut self) -> Formed<B::Buf> {
        let Some(mut buf) = self.buffers.pop() else {
            return Formed::Nothing;
        };
        let segment_max = self.config.segment_max_bytes;
        let rotate_at = self.config.segment_rotate_bytes();
        let group_max = self.config.group_max_bytes;
        let capacity = buf.len() - BLOCK_BYTES; // room for the padding to a block
        // Every group after the first record starts on a fresh block in that mode, leaving
        // the previous group's last block as it was written.
        let fresh_block = self.config.group_start == GroupStart::FreshBlock
            && self.active.has_records
            && !self.active.tail.is_empty();
        let (base, tail_len) = if fresh_block {
            (self.active.tail_offset + BLOCK_BYTES as u64, 0)
        } else {
            let tail_len = self.active.tail.len();
            buf[..tail_len].copy_from_slice(&self.active.tail);
            (self.active.tail_offset, tail_len)
        };
        let mut pos = tail_len;
        let mut meta = GroupMeta {
            id: self.groups_formed + 1,
            segment: self.active.number,
            // A list grown by earlier groups: no reallocation as this one fills.
            completions: self.completion_lists.pop().unwrap_or_default(),
            ..GroupMeta::default()
        };
        // The durable watermark as this group is formed: every frame of the group carries it.
        let watermark = self.durable_sequence;
        let seed = self.active.frame_seed;
        let crc_start = seed.crc_start();
        let mut checkpoint: Option<u64> = None;
        let mut reserved = 0usize;
        let mut barriers = Vec::new();
        let mut repeated = Vec::new();
        let mut need_rotation = false;
        // One clock reading per group, taken when its first record is framed: every record
        // of the group gets the same time (the reading costs more than framing a small event).
        let mut group_time: Option<DateTime<Utc>> = None;
        let mut group_time_ns: Option<i64> = None;
        'queue: while let Some(front) = self.queue.front_mut() {
            match front {
                Pending::Barrier { .. } => {
                    if let Some(Pending::Barrier { reply }) = self.queue.pop_front() {
                        barriers.push(reply);
                    }
                }
                Pending::Watermark => {
                    let group_bytes = pos - tail_len + reserved;
                    if group_bytes > 0 || base + (pos + WATERMARK_FRAME_BYTES) as u64 > segment_max
                    {
                        if group_bytes == 0 {
                            // No room left in the segment: the records are durable anyway.
                            self.queue.pop_front();
                        }
                        break 'queue;
                    }
                    self.queue.pop_front();
                    let len = put_watermark(&mut buf[pos..], seed, watermark);
                    pos += len;
                    meta.records += 1;
                    meta.record_bytes += len as u64;
                    break 'queue;
                }
                Pending::Checkpoint { acked_through, .. } => {
                    let acked = *acked_through;
                    if acked >= self.next_sequence || acked <= self.acked_through {
                        let Some(Pending::Checkpoint { reply, .. }) = self.queue.pop_front() else {
                            unreachable!("front was a checkpoint");
                        };
                        let _ = reply.send(if acked >= self.next_sequence {
                            Err(WalError::CheckpointAhead {
                                requested: acked,
                                last_sequence: self.next_sequence - 1,
                            })
                        } else {
                            Ok(())
                        });
                        continue;
                    }
                    if checkpoint.is_none_or(|taken| acked > taken) && acked <= self.acked_queued {
                        // An equal or lower checkpoint is in an earlier group that is not
                        // durable yet: answer this one when that one is.
                        if let Some(Pending::Checkpoint { reply, .. }) = self.queue.pop_front() {
                            repeated.push(reply);
                        }
                        continue;
                    }
                    if checkpoint.is_none() {
                        let group_bytes = pos - tail_len;
                        if group_bytes > 0 && group_bytes + CHECKPOINT_FRAME_BYTES > group_max {
                            break 'queue;
                        }
                        if base + (pos + CHECKPOINT_FRAME_BYTES) as u64 > segment_max {
                            need_rotation = pos == tail_len;
                            break 'queue;
                        }
                        assert!(pos + CHECKPOINT_FRAME_BYTES <= capacity);
                        reserved = CHECKPOINT_FRAME_BYTES;
                    }
                    checkpoint = checkpoint.max(Some(acked));
                    if let Some(Pending::Checkpoint { reply, .. }) = self.queue.pop_front() {
                        meta.completions.push(Completion::Checkpoint { reply });
                    }
                }
                Pending::Events {
                    items,
                    first_sequence,
                    ..
                } => {
                    while let Some((kind, bytes)) = items.front() {
                        let frame_len = format::frame_len(EVENT_FIXED_PAYLOAD_BYTES + bytes.len());
                        let group_bytes = pos - tail_len + reserved;
                        if group_bytes > 0 && group_bytes + frame_len > group_max {
                            break 'queue;
                        }
                        let end = base + (pos + frame_len) as u64;
                        let segment_empty = !self.active.has_records && pos == tail_len;
                        let fits = end <= rotate_at
                            || (segment_empty && end + reserved as u64 <= segment_max);
                        if !fits {
                            if SEGMENT_HEADER_BYTES + frame_len > segment_max as usize {
                                // Even an empty segment cannot hold it.
                                let error = WalError::RecordTooLarge {
                                    frame_bytes: frame_len,
                                    segment_max_bytes: segment_max,
                                };
                                if let Some(pending) = self.queue.pop_front() {
                                    pending.fail(&error);
                                }
                                continue 'queue;
                            }
                            need_rotation = pos == tail_len && reserved == 0;
                            break 'queue;
                        }
                        assert!(
                            pos + frame_len + reserved <= capacity,
                            "group buffer overrun"
                        );
                        let sequence = self.next_sequence;
                        self.next_sequence += 1;
                        let time = *group_time.get_or_insert_with(Utc::now);
                        let len = format::write_event_frame_seeded(
                            &mut buf[pos..],
                            crc_start,
                            watermark,
                            sequence,
                            *group_time_ns.get_or_insert_with(|| format::timestamp_ns(time)),
                            *kind,
                            bytes,
                        );
                        pos += len;
                        first_sequence.get_or_insert(sequence);
                        meta.first_sequence.get_or_insert(sequence);
                        meta.last_sequence = Some(sequence);
                        meta.events += 1;
                        meta.records += 1;
                        meta.record_bytes += len as u64;
                        if let Some(bytes) = items.pop_front() {
                            self.spent_buffers.push(bytes);
                        }
                    }
                    if let Some(Pending::Events {
                        first_sequence: Some(first),
                        reply,
                        ..
                    }) = self.queue.pop_front()
                    {
                        meta.completions.push(Completion::Events {
                            reply,
                            first,
                            last: self.next_sequence - 1,
                        });
                    }
                }
            }
        }
        if let Some(acked) = checkpoint {
            let entry = CheckpointEntry {
                acked_through: acked,
                timestamp: *group_time.get_or_insert_with(Utc::now),
            };
            let len = put_checkpoint(&mut buf[pos..], seed, watermark, &entry);
            debug_assert_eq!(len, reserved);
            pos += len;
            meta.records += 1;
            meta.record_bytes += len as u64;
            meta.checkpoint = Some(acked);
            self.acked_queued = acked;
            self.acked_queued_group = meta.id;
        }
        staging::recycle(&mut self.spent_buffers);
        self.note_queue_len();
        let has_records = pos > tail_len;
        // A barrier waits for the last group formed so far (this one if it has records).
        let last_group = if has_records {
            meta.id
        } else {
            self.groups_formed
        };
        for reply in barriers {
            if last_group <= self.groups_durable {
                let _ = reply.send(Ok(self.durable_sequence));
            } else {
                self.waiters.push(last_group, Waiter::Sync(reply));
                // The interval policy syncs on demand; the default policy syncs anyway.
                self.sync_requested = true;
            }
        }
        for reply in repeated {
            if checkpoint.is_some() {
                // This group holds a checkpoint at least as high; it becomes durable after
                // (or with) the earlier one.
                meta.completions.push(Completion::Checkpoint { reply });
            } else {
                self.waiters
                    .push(self.acked_queued_group, Waiter::Checkpoint(reply));
                self.sync_requested = true;
            }
        }
        if !has_records {
            // Only checkpoints answered at once, barriers and repeats: nothing to complete.
            debug_assert!(meta.completions.is_empty());
            self.completion_lists
                .push(std::mem::take(&mut meta.completions));
            self.buffers.push(buf);
            return if need_rotation {
                Formed::NeedRotation
            } else {
                Formed::Nothing
            };
        }
        self.groups_formed = meta.id;
        // Pad to a whole block: the zeros also mark the end of the records.
        let write_len = format::align_up(pos, BLOCK_BYTES);
        assert!(write_len <= buf.len(), "group buffer overrun");
        buf[pos..write_len].fill(0);
        let new_head = base + pos as u64;
        assert!(new_head <= segment_max, "group past the segment's end");
        let new_tail_offset = format::align_down_u64(new_head, BLOCK_BYTES as u64);
        let keep_from = (new_tail_offset - base) as usize;
        self.active.tail.clear();
        self.active.tail.extend_from_slice(&buf[keep_from..pos]);
        self.active.tail_offset = new_tail_offset;
        self.active.has_records = true;
        if let Some(last) = meta.last_sequence {
            self.active.last_sequence = Some(last);
        }
        meta.device_bytes = write_len as u64;
        self.shared.next_sequence.store(self.next_sequence, Relaxed);
        let backend = Rc::clone(&self.backend);
        let file = Rc::clone(&self.active.file);
        let path = self.active.path.clone();
        Formed::Write(Box::pin(async move {
            let started = std::time::Instant::now();
            let (result, buf) = backend.write_at(&file, buf, write_len, base).await;
            WriteDone {
                result,
                latency_us: started.elapsed().as_micros() as u64,
                buf,
                meta,
                path,
            }
        }))
    }
}

/// How frames of one segment are sealed (the CRC seed).
pub(super) type FrameSeed = format::FrameSeed;

fn put_checkpoint(
    out: &mut [u8],
    seed: FrameSeed,
    watermark: u64,
    entry: &CheckpointEntry,
) -> usize {
    format::write_checkpoint_frame(out, seed, watermark, entry)
}

fn put_watermark(out: &mut [u8], seed: FrameSeed, watermark: u64) -> usize {
    format::write_watermark_frame(out, seed, watermark, Utc::now())
}
