//! The ring thread's writer: group commit, rotation, checkpoints and segment deletion.
//!
//! One task on the ring thread owns every segment file. Appends arrive on a bounded channel
//! and queue while I/O is in flight; whenever the write slot frees, everything queued (up to
//! `group_max_bytes`) becomes the next group — no timer, no added delay. One group write and
//! one `fdatasync` may be in flight together (the next write overlaps the current sync).
//! Callers are answered only after a sync that started after their group's write completed
//! (docs/design.md §3).
//!
//! Must never: drop an in-flight write or sync future, retry a failed sync, or answer a caller
//! before its bytes are durable (under the default policy).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{SyncPolicy, WalConfig};
use super::error::WalError;
use super::format::{
    self, BLOCK_BYTES, CHECKPOINT_FRAME_BYTES, CheckpointEntry, EVENT_FIXED_PAYLOAD_BYTES,
    FORMAT_VERSION, SEGMENT_HEADER_BYTES, SegmentHeader,
};
use super::naming::segment_path;
use super::stats::Shared;
use crate::event::EventKind;
use crate::io::Backend;

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, WalError>>;

/// A request to the ring thread.
pub(crate) enum Command {
    Append {
        kind: EventKind,
        timestamp: DateTime<Utc>,
        event_bytes: Vec<u8>,
        reply: Reply<u64>,
    },
    AppendBatch {
        timestamp: DateTime<Utc>,
        items: Vec<(EventKind, Vec<u8>)>,
        reply: Reply<RangeInclusive<u64>>,
    },
    Checkpoint {
        acked_through: u64,
        reply: Reply<()>,
    },
    Sync {
        reply: Reply<u64>,
    },
    Close {
        reply: Reply<()>,
    },
}

/// A segment with no more writes coming.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub number: u64,
    pub path: PathBuf,
    /// Highest event sequence in it (None: no events).
    pub last_sequence: Option<u64>,
}

/// Where writing resumes, decided by recovery.
pub(crate) struct Resume {
    pub number: u64,
    pub tail_offset: u64,
    pub tail_bytes: Vec<u8>,
    pub last_sequence: Option<u64>,
    pub has_records: bool,
}

/// Everything the writer needs from open/recovery.
pub(crate) struct Plan {
    pub config: WalConfig,
    pub resume: Option<Resume>,
    /// A blank segment prepared before the last run stopped, reusable as the next segment.
    pub prepared_blank: Option<u64>,
    pub sealed: VecDeque<Sealed>,
    pub next_sequence: u64,
    pub acked_through: u64,
    /// The segment holding the newest durable checkpoint (0: none).
    pub checkpoint_segment: u64,
    pub next_segment_number: u64,
}

enum EventsReply {
    One(Reply<u64>),
    Batch(Reply<RangeInclusive<u64>>),
}

enum Pending {
    Events {
        timestamp: DateTime<Utc>,
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
}

/// The encoded events of one append or batch, consumed from the front. A single append (the
/// common case) is stored inline so accepting it allocates nothing on the ring thread.
enum Items {
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

    fn pop_front(&mut self) {
        match self {
            Items::One(item) => *item = None,
            Items::Many(items) => drop(items.pop_front()),
        }
    }
}

enum Completion {
    Events {
        reply: EventsReply,
        first: u64,
        last: u64,
    },
    Checkpoint {
        reply: Reply<()>,
        acked_through: u64,
    },
}

/// One group: what was written and who waits for it.
#[derive(Default)]
struct GroupMeta {
    /// Position of the group in formation order (1, 2, …); barriers wait on it.
    id: u64,
    completions: Vec<Completion>,
    last_sequence: Option<u64>,
    events: u64,
    records: u64,
    record_bytes: u64,
    device_bytes: u64,
}

struct WriteDone<Buf> {
    result: io::Result<()>,
    buf: Buf,
    meta: GroupMeta,
    path: PathBuf,
}

struct SyncDone {
    result: io::Result<()>,
    path: PathBuf,
    latency_us: u64,
}

type WriteFuture<Buf> = Pin<Box<dyn Future<Output = WriteDone<Buf>>>>;
type SyncFuture = Pin<Box<dyn Future<Output = SyncDone>>>;

/// A sync in flight and the groups it makes durable.
struct Syncing {
    groups: Vec<GroupMeta>,
    through_sequence: u64,
    through_group: u64,
}

struct Active<F> {
    number: u64,
    path: PathBuf,
    file: Rc<F>,
    /// File offset of the first byte of `tail` (block-aligned).
    tail_offset: u64,
    /// Bytes from `tail_offset` to the write head: rewritten at the start of the next group.
    tail: Vec<u8>,
    has_records: bool,
    last_sequence: Option<u64>,
}

enum RotateError {
    /// No space in the budget: fail the waiting appends, keep going.
    Full(WalError),
    /// The next segment could not be created: fail the waiting appends, keep going.
    Failed(WalError),
}

/// The writer state on the ring thread.
pub(crate) struct Writer<B: Backend> {
    backend: Rc<B>,
    config: WalConfig,
    shared: Arc<Shared>,
    buffers: Vec<B::Buf>,
    active: Active<B::File>,
    sealed: VecDeque<Sealed>,
    prepared: Option<(u64, Rc<B::File>)>,
    preparing: Option<(u64, JoinHandle<io::Result<B::File>>)>,
    deleting: Option<JoinHandle<usize>>,
    deletion_wanted: bool,
    next_segment_number: u64,
    segments_on_disk: u64,
    queue: VecDeque<Pending>,
    next_sequence: u64,
    written_sequence: u64,
    durable_sequence: u64,
    acked_through: u64,
    /// The segment holding the newest durable checkpoint record (0: none). Only segments
    /// before it may be deleted, so the newest checkpoint — which keeps sequence numbers from
    /// being reused after everything else is deleted — always survives.
    checkpoint_segment: u64,
    /// Highest checkpoint put into a group (durable or not).
    acked_queued: u64,
    /// Groups formed so far; a group's id is its position.
    groups_formed: u64,
    /// Highest group id whose write completed.
    groups_written: u64,
    /// Highest group id covered by a completed sync.
    groups_durable: u64,
    /// Written groups no sync covers yet, in order.
    unsynced: Vec<GroupMeta>,
    /// `sync()` callers: (group id they wait for, reply).
    sync_waiters: Vec<(u64, Reply<u64>)>,
    /// Under the interval policy: when the next sync is due (None: nothing unsynced).
    sync_deadline: Option<tokio::time::Instant>,
    /// A sync is wanted now (interval policy: barrier, rotation, shutdown).
    sync_requested: bool,
    poison: Option<WalError>,
}

impl<B: Backend> Writer<B> {
    /// Opens or creates the active segment and starts preparing the next one.
    pub async fn start(
        mut backend: B,
        plan: Plan,
        shared: Arc<Shared>,
    ) -> Result<Writer<B>, WalError> {
        let buffers = backend.take_buffers();
        let backend = Rc::new(backend);
        let dir = plan.config.dir.clone();
        let mut segments_on_disk = plan.sealed.len() as u64;
        let mut next_segment_number = plan.next_segment_number;
        let active = match plan.resume {
            Some(resume) => {
                let path = segment_path(&dir, resume.number);
                let file = backend
                    .open_segment(&path)
                    .await
                    .map_err(|e| WalError::io("open segment", &path, e))?;
                segments_on_disk += 1;
                if let Some(blank) = plan.prepared_blank {
                    // Counted now; reused below as the prepared segment.
                    segments_on_disk += 1;
                    next_segment_number = next_segment_number.max(blank + 1);
                }
                Active {
                    number: resume.number,
                    path,
                    file: Rc::new(file),
                    tail_offset: resume.tail_offset,
                    tail: resume.tail_bytes,
                    has_records: resume.has_records,
                    last_sequence: resume.last_sequence,
                }
            }
            None => {
                let (number, file) = match plan.prepared_blank {
                    Some(number) => {
                        let path = segment_path(&dir, number);
                        let file = backend
                            .open_segment(&path)
                            .await
                            .map_err(|e| WalError::io("open segment", &path, e))?;
                        (number, file)
                    }
                    None => {
                        let number = next_segment_number;
                        let path = segment_path(&dir, number);
                        let file = create_and_sync(&*backend, &plan.config, &path).await?;
                        (number, file)
                    }
                };
                next_segment_number = next_segment_number.max(number + 1);
                segments_on_disk += 1;
                new_active(&dir, number, Rc::new(file), plan.next_sequence)
            }
        };
        let prepared = match (plan.prepared_blank, active.number) {
            (Some(blank), active_number) if blank != active_number => {
                let path = segment_path(&dir, blank);
                let file = backend
                    .open_segment(&path)
                    .await
                    .map_err(|e| WalError::io("open segment", &path, e))?;
                Some((blank, Rc::new(file)))
            }
            _ => None,
        };
        let durable = plan.next_sequence - 1;
        shared.next_sequence.store(plan.next_sequence, Relaxed);
        shared.durable_sequence.store(durable, Relaxed);
        shared.acked_through.store(plan.acked_through, Relaxed);
        shared.segments.store(segments_on_disk, Relaxed);
        let mut writer = Writer {
            backend,
            config: plan.config,
            shared,
            buffers,
            active,
            sealed: plan.sealed,
            prepared,
            preparing: None,
            deleting: None,
            deletion_wanted: false,
            next_segment_number,
            segments_on_disk,
            queue: VecDeque::new(),
            next_sequence: plan.next_sequence,
            written_sequence: durable,
            durable_sequence: durable,
            acked_through: plan.acked_through,
            checkpoint_segment: plan.checkpoint_segment,
            acked_queued: plan.acked_through,
            groups_formed: 0,
            groups_written: 0,
            groups_durable: 0,
            unsynced: Vec::new(),
            sync_waiters: Vec::new(),
            sync_deadline: None,
            sync_requested: false,
            poison: None,
        };
        writer.maybe_prepare();
        writer.start_deletions();
        Ok(writer)
    }

    /// Serves commands until closed (or every handle is dropped), then flushes and returns.
    ///
    /// Pipeline: at most one group write and one sync are in flight. While group N's sync
    /// runs, group N+1 is formed and written; its sync starts when N's completes. A write
    /// or sync future, once started, is always polled to completion, even after poisoning.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut write: Option<WriteFuture<B::Buf>> = None;
        let mut sync: Option<(SyncFuture, Syncing)> = None;
        let mut receiving = true;
        let mut close_replies: Vec<Reply<()>> = Vec::new();
        loop {
            if self.poison.is_none() {
                if write.is_none() {
                    let io_idle = sync.is_none() && self.unsynced.is_empty();
                    write = self.next_write(io_idle).await;
                }
                if sync.is_none() {
                    if !receiving {
                        self.sync_requested = true;
                    }
                    sync = self.next_sync();
                }
            }
            let idle = write.is_none()
                && sync.is_none()
                && self.queue.is_empty()
                && (self.unsynced.is_empty() || self.poison.is_some());
            if !receiving && idle {
                break;
            }
            let sync_due = self.sync_deadline.filter(|_| sync.is_none());
            let preparing = self.preparing.is_some();
            let deleting = self.deleting.is_some();
            tokio::select! {
                biased;
                done = async { write.as_mut().expect("guarded").await }, if write.is_some() => {
                    write = None;
                    self.complete_write(done);
                }
                done = async { sync.as_mut().expect("guarded").0.as_mut().await }, if sync.is_some() => {
                    if let Some((_, syncing)) = sync.take() {
                        self.complete_sync(done, syncing);
                    }
                }
                command = commands.recv(), if receiving => match command {
                    Some(Command::Close { reply }) => {
                        close_replies.push(reply);
                        receiving = false;
                        commands.close();
                    }
                    Some(command) => {
                        self.accept(command);
                        // Take everything already waiting: this is what makes groups large.
                        while let Ok(command) = commands.try_recv() {
                            match command {
                                Command::Close { reply } => {
                                    close_replies.push(reply);
                                    receiving = false;
                                    commands.close();
                                    break;
                                }
                                command => self.accept(command),
                            }
                        }
                    }
                    None => receiving = false,
                },
                prepared = async { (&mut self.preparing.as_mut().expect("guarded").1).await }, if preparing => {
                    self.prepared_done(prepared);
                }
                deleted = async { self.deleting.as_mut().expect("guarded").await }, if deleting => {
                    self.deleting = None;
                    self.deletions_done(deleted.unwrap_or(0));
                }
                () = sleep_until(sync_due), if sync_due.is_some() => {
                    self.sync_deadline = None;
                    self.sync_requested = true;
                }
            }
        }
        self.shutdown(close_replies).await;
    }

    async fn shutdown(mut self, close_replies: Vec<Reply<()>>) {
        if let Some((_, handle)) = self.preparing.take() {
            let _ = handle.await;
        }
        if let Some(handle) = self.deleting.take() {
            let _ = handle.await;
        }
        let result = match &self.poison {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        };
        for reply in close_replies {
            let _ = reply.send(result.clone());
        }
    }

    fn accept(&mut self, command: Command) {
        if let Some(error) = &self.poison {
            let error = error.clone();
            match command {
                Command::Append { reply, .. } => drop(reply.send(Err(error))),
                Command::AppendBatch { reply, .. } => drop(reply.send(Err(error))),
                Command::Checkpoint { reply, .. } => drop(reply.send(Err(error))),
                Command::Sync { reply } => drop(reply.send(Err(error))),
                Command::Close { reply } => drop(reply.send(Err(error))),
            }
            return;
        }
        let pending = match command {
            Command::Append {
                kind,
                timestamp,
                event_bytes,
                reply,
            } => Pending::Events {
                timestamp,
                items: Items::One(Some((kind, event_bytes))),
                first_sequence: None,
                reply: EventsReply::One(reply),
            },
            Command::AppendBatch {
                timestamp,
                items,
                reply,
            } => {
                if items.is_empty() {
                    let _ = reply.send(Ok(self.next_sequence..=self.next_sequence - 1));
                    return;
                }
                Pending::Events {
                    timestamp,
                    items: Items::Many(items.into()),
                    first_sequence: None,
                    reply: EventsReply::Batch(reply),
                }
            }
            Command::Checkpoint {
                acked_through,
                reply,
            } => Pending::Checkpoint {
                acked_through,
                reply,
            },
            Command::Sync { reply } => Pending::Barrier { reply },
            Command::Close { .. } => unreachable!("handled by run"),
        };
        self.queue.push_back(pending);
        self.note_queue_len();
    }

    fn note_queue_len(&self) {
        let len = self.queue.len() as u64;
        self.shared.queued_commands.store(len, Relaxed);
        self.shared.queued_commands_max.fetch_max(len, Relaxed);
    }

    /// The next group write, if anything is queued and the write slot is free. Rotation waits
    /// until no I/O is in flight and everything written is durable (`io_idle`), because a sync
    /// of the new segment would not cover the old one.
    async fn next_write(&mut self, io_idle: bool) -> Option<WriteFuture<B::Buf>> {
        loop {
            if self.queue.is_empty() {
                return None;
            }
            match self.form_group() {
                Formed::Write(io) => return Some(io),
                Formed::Nothing => return None,
                Formed::NeedRotation if !io_idle => {
                    self.sync_requested = true;
                    return None;
                }
                Formed::NeedRotation => match self.rotate().await {
                    Ok(()) => continue,
                    Err(RotateError::Full(error) | RotateError::Failed(error)) => {
                        self.fail_after_rotation_error(&error);
                        continue;
                    }
                },
            }
        }
    }

    /// A sync covering every written group, when one is due: always under the default
    /// policy; under the interval policy when requested or the interval has passed.
    fn next_sync(&mut self) -> Option<(SyncFuture, Syncing)> {
        if self.unsynced.is_empty() {
            return None;
        }
        if !self.sync_requested && self.config.sync != SyncPolicy::EveryGroup {
            return None;
        }
        self.sync_requested = false;
        self.sync_deadline = None;
        let syncing = Syncing {
            groups: std::mem::take(&mut self.unsynced),
            through_sequence: self.written_sequence,
            through_group: self.groups_written,
        };
        let backend = Rc::clone(&self.backend);
        let file = Rc::clone(&self.active.file);
        let path = self.active.path.clone();
        let future: SyncFuture = Box::pin(async move {
            let started = Instant::now();
            let result = backend.sync_data(&file).await;
            SyncDone {
                result,
                path,
                latency_us: started.elapsed().as_micros() as u64,
            }
        });
        Some((future, syncing))
    }

    fn form_group(&mut self) -> Formed<B::Buf> {
        let Some(mut buf) = self.buffers.pop() else {
            return Formed::Nothing;
        };
        let segment_max = self.config.segment_max_bytes;
        let rotate_at = self.config.segment_rotate_bytes();
        let group_max = self.config.group_max_bytes;
        let tail_len = self.active.tail.len();
        buf[..tail_len].copy_from_slice(&self.active.tail);
        let mut pos = tail_len;
        let mut meta = GroupMeta {
            id: self.groups_formed + 1,
            ..GroupMeta::default()
        };
        let mut barriers = Vec::new();
        let mut need_rotation = false;
        let segment_number = self.active.number;
        let base = self.active.tail_offset;
        'queue: while let Some(front) = self.queue.front_mut() {
            match front {
                Pending::Barrier { .. } => {
                    if let Some(Pending::Barrier { reply }) = self.queue.pop_front() {
                        barriers.push(reply);
                    }
                }
                Pending::Checkpoint { acked_through, .. } => {
                    let acked = *acked_through;
                    if acked >= self.next_sequence || acked <= self.acked_queued {
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
                    // Checkpoints may use the space between the rotation point and the segment
                    // end, so acknowledging never needs a new segment (which a full budget
                    // would refuse).
                    if base + (pos + CHECKPOINT_FRAME_BYTES) as u64 > segment_max {
                        need_rotation = pos == tail_len;
                        break 'queue;
                    }
                    let checkpoint = CheckpointEntry {
                        acked_through: acked,
                        timestamp: Utc::now(),
                    };
                    let len = format::write_checkpoint_frame(
                        &mut buf[pos..],
                        segment_number,
                        &checkpoint,
                    );
                    pos += len;
                    meta.records += 1;
                    meta.record_bytes += len as u64;
                    self.acked_queued = acked;
                    if let Some(Pending::Checkpoint { reply, .. }) = self.queue.pop_front() {
                        meta.completions.push(Completion::Checkpoint {
                            reply,
                            acked_through: acked,
                        });
                    }
                }
                Pending::Events {
                    timestamp,
                    items,
                    first_sequence,
                    ..
                } => {
                    while let Some((kind, bytes)) = items.front() {
                        let frame_len = format::frame_len(EVENT_FIXED_PAYLOAD_BYTES + bytes.len());
                        let group_bytes = pos - tail_len;
                        if group_bytes > 0 && group_bytes + frame_len > group_max {
                            break 'queue;
                        }
                        let end = base + (pos + frame_len) as u64;
                        if end > rotate_at {
                            let segment_empty = !self.active.has_records && pos == tail_len;
                            if !(segment_empty && end <= segment_max) {
                                if segment_empty {
                                    // Even an empty segment cannot hold it.
                                    let error = WalError::RecordTooLarge {
                                        frame_bytes: frame_len,
                                        segment_max_bytes: segment_max,
                                    };
                                    if let Some(pending) = self.queue.pop_front() {
                                        fail_pending(pending, &error);
                                    }
                                    continue 'queue;
                                }
                                need_rotation = pos == tail_len;
                                break 'queue;
                            }
                        }
                        let sequence = self.next_sequence;
                        self.next_sequence += 1;
                        let len = format::write_event_frame(
                            &mut buf[pos..],
                            segment_number,
                            sequence,
                            *timestamp,
                            *kind,
                            bytes,
                        );
                        pos += len;
                        first_sequence.get_or_insert(sequence);
                        meta.last_sequence = Some(sequence);
                        meta.events += 1;
                        meta.records += 1;
                        meta.record_bytes += len as u64;
                        items.pop_front();
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
        self.note_queue_len();
        let has_records = pos > tail_len;
        // A barrier waits for the last group formed so far (this one if it has records).
        let barrier_group = if has_records {
            meta.id
        } else {
            self.groups_formed
        };
        for reply in barriers {
            if barrier_group <= self.groups_durable {
                let _ = reply.send(Ok(self.durable_sequence));
            } else {
                self.sync_waiters.push((barrier_group, reply));
                // The interval policy syncs on demand; the default policy syncs anyway.
                self.sync_requested = true;
            }
        }
        if !has_records {
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
        buf[pos..write_len].fill(0);
        let new_head = base + pos as u64;
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
            let (result, buf) = backend.write_at(&file, buf, write_len, base).await;
            WriteDone {
                result,
                buf,
                meta,
                path,
            }
        }))
    }

    fn complete_write(&mut self, done: WriteDone<B::Buf>) {
        self.buffers.push(done.buf);
        let mut meta = done.meta;
        if self.poison.is_some() {
            self.fail_completions(meta.completions);
            return;
        }
        if let Err(error) = done.result {
            self.poison_with("write segment", done.path, error, meta.completions);
            return;
        }
        let shared = &self.shared;
        shared.group_writes.fetch_add(1, Relaxed);
        shared
            .device_bytes_written
            .fetch_add(meta.device_bytes, Relaxed);
        shared.record_bytes.fetch_add(meta.record_bytes, Relaxed);
        shared.events_appended.fetch_add(meta.events, Relaxed);
        if let Some(last) = meta.last_sequence {
            self.written_sequence = last;
        }
        self.groups_written = meta.id;
        if let SyncPolicy::Interval { sync_interval_ms } = self.config.sync {
            // Explicitly weaker: callers hear back once the write is done.
            let completions = std::mem::take(&mut meta.completions);
            self.resolve(completions);
            if self.sync_deadline.is_none() {
                self.sync_deadline =
                    Some(tokio::time::Instant::now() + Duration::from_millis(sync_interval_ms));
            }
        }
        self.unsynced.push(meta);
    }

    fn complete_sync(&mut self, done: SyncDone, syncing: Syncing) {
        let records: u64 = syncing.groups.iter().map(|group| group.records).sum();
        let mut completions = Vec::new();
        for group in syncing.groups {
            completions.extend(group.completions);
        }
        if self.poison.is_some() {
            self.fail_completions(completions);
            return;
        }
        if let Err(error) = done.result {
            self.poison_with("fdatasync segment", done.path, error, completions);
            return;
        }
        self.durable_sequence = syncing.through_sequence;
        self.groups_durable = syncing.through_group;
        let shared = &self.shared;
        shared
            .durable_sequence
            .store(self.durable_sequence, Relaxed);
        shared.syncs.fetch_add(1, Relaxed);
        shared.records_synced.fetch_add(records, Relaxed);
        shared.sync_latency.record_us(done.latency_us);
        self.resolve(completions);
        let durable_group = self.groups_durable;
        let durable_sequence = self.durable_sequence;
        for (_, reply) in self
            .sync_waiters
            .extract_if(.., |(group, _)| *group <= durable_group)
        {
            let _ = reply.send(Ok(durable_sequence));
        }
    }

    /// Answers the callers of written (default policy: durable) groups.
    fn resolve(&mut self, completions: Vec<Completion>) {
        let mut acked = None;
        for completion in completions {
            match completion {
                Completion::Events { reply, first, last } => match reply {
                    EventsReply::One(reply) => drop(reply.send(Ok(first))),
                    EventsReply::Batch(reply) => drop(reply.send(Ok(first..=last))),
                },
                Completion::Checkpoint {
                    reply,
                    acked_through,
                } => {
                    acked = acked.max(Some(acked_through));
                    let _ = reply.send(Ok(()));
                }
            }
        }
        if let Some(acked_through) = acked
            && acked_through > self.acked_through
        {
            // Groups are resolved before any rotation (rotation waits for every sync), so the
            // record is in the active segment.
            self.acked_through = acked_through;
            self.checkpoint_segment = self.active.number;
            self.shared.acked_through.store(acked_through, Relaxed);
            self.start_deletions();
        }
    }

    fn fail_completions(&mut self, completions: Vec<Completion>) {
        let Some(poison) = self.poison.clone() else {
            return;
        };
        for completion in completions {
            match completion {
                Completion::Events { reply, .. } => fail_events_reply(reply, &poison),
                Completion::Checkpoint { reply, .. } => drop(reply.send(Err(poison.clone()))),
            }
        }
    }

    fn poison_with(
        &mut self,
        op: &'static str,
        path: PathBuf,
        error: io::Error,
        completions: Vec<Completion>,
    ) {
        tracing::error!(op, path = %path.display(), %error, "WAL write path failed; log poisoned");
        let poison = WalError::Poisoned {
            op,
            path,
            source: Arc::new(error),
        };
        if let Ok(mut slot) = self.shared.poison.lock() {
            *slot = Some(poison.clone());
        }
        self.shared.poisoned.store(true, Relaxed);
        self.poison = Some(poison.clone());
        self.fail_completions(completions);
        for group in std::mem::take(&mut self.unsynced) {
            self.fail_completions(group.completions);
        }
        for pending in self.queue.drain(..) {
            fail_pending(pending, &poison);
        }
        for (_, reply) in self.sync_waiters.drain(..) {
            let _ = reply.send(Err(poison.clone()));
        }
        self.sync_deadline = None;
    }

    /// After a rotation was refused (budget or ENOSPC): every queued append and checkpoint
    /// fails with that error, and sync barriers resolve (all that was written is durable).
    /// A refused checkpoint's watermark still lets acknowledged segments be deleted, so a
    /// full log can always free space; the record itself is written by a later checkpoint.
    fn fail_after_rotation_error(&mut self, error: &WalError) {
        let mut acked = None;
        for pending in std::mem::take(&mut self.queue) {
            match pending {
                Pending::Barrier { reply } => drop(reply.send(Ok(self.durable_sequence))),
                Pending::Checkpoint { acked_through, .. } if acked_through < self.next_sequence => {
                    acked = acked.max(Some(acked_through));
                    fail_pending(pending, error);
                }
                other => fail_pending(other, error),
            }
        }
        if let Some(acked_through) = acked
            && acked_through > self.acked_through
        {
            self.acked_through = acked_through;
            self.start_deletions();
        }
    }

    fn budget_allows_one_more(&self) -> bool {
        (self.segments_on_disk + 1).saturating_mul(self.config.segment_max_bytes)
            <= self.config.wal_max_bytes
    }

    fn full_error(&self) -> WalError {
        WalError::WalFull {
            used_bytes: self.segments_on_disk * self.config.segment_max_bytes,
            budget_bytes: self.config.wal_max_bytes,
        }
    }

    /// Starts creating the next segment in the background if none is ready and the budget
    /// allows one more file.
    fn maybe_prepare(&mut self) {
        if self.prepared.is_some() || self.preparing.is_some() || !self.budget_allows_one_more() {
            return;
        }
        let number = self.next_segment_number;
        self.next_segment_number += 1;
        self.segments_on_disk += 1;
        self.shared.segments.store(self.segments_on_disk, Relaxed);
        let backend = Rc::clone(&self.backend);
        let config = self.config.clone();
        let path = segment_path(&config.dir, number);
        let handle = tokio::task::spawn_local(async move {
            let result = create_raw(&*backend, &config, &path).await;
            if result.is_err() {
                let _ = backend.remove_file(&path).await;
            }
            result
        });
        self.preparing = Some((number, handle));
    }

    fn prepared_done(&mut self, result: Result<io::Result<B::File>, tokio::task::JoinError>) {
        let Some((number, _)) = self.preparing.take() else {
            return;
        };
        match flatten_join(result) {
            Ok(file) => self.prepared = Some((number, Rc::new(file))),
            Err(error) => {
                let error = self.preparation_failed(number, error);
                tracing::warn!(%error, "preparing the next WAL segment failed; will retry at rotation");
            }
        }
    }

    /// Gives back the number and budget share of a segment whose preparation failed (its
    /// file was removed), so numbering stays contiguous.
    fn preparation_failed(&mut self, number: u64, error: io::Error) -> WalError {
        self.next_segment_number = number;
        self.segments_on_disk -= 1;
        self.shared.segments.store(self.segments_on_disk, Relaxed);
        WalError::io(
            "create segment",
            segment_path(&self.config.dir, number),
            error,
        )
    }

    /// Switches to the next segment. Called only when no I/O is in flight and everything
    /// written is durable.
    async fn rotate(&mut self) -> Result<(), RotateError> {
        debug_assert!(self.unsynced.is_empty() && self.written_sequence == self.durable_sequence);
        let (number, file) = match self.prepared.take() {
            Some(prepared) => prepared,
            None => {
                if self.preparing.is_none() {
                    self.maybe_prepare();
                }
                let Some((number, handle)) = self.preparing.take() else {
                    return Err(RotateError::Full(self.full_error()));
                };
                match flatten_join(handle.await) {
                    Ok(file) => (number, Rc::new(file)),
                    Err(error) => {
                        return Err(RotateError::Failed(self.preparation_failed(number, error)));
                    }
                }
            }
        };
        let next = new_active(&self.config.dir, number, file, self.next_sequence);
        let old = std::mem::replace(&mut self.active, next);
        tracing::debug!(sealed = old.number, active = number, "WAL segment rotated");
        self.sealed.push_back(Sealed {
            number: old.number,
            path: old.path,
            last_sequence: old.last_sequence,
        });
        self.maybe_prepare();
        self.start_deletions();
        Ok(())
    }

    /// Deletes (in the background) the oldest sealed segments whose events are all acked.
    fn start_deletions(&mut self) {
        if self.deleting.is_some() {
            self.deletion_wanted = true;
            return;
        }
        let mut doomed = Vec::new();
        while let Some(front) = self.sealed.front() {
            let acked = front
                .last_sequence
                .is_none_or(|last| last <= self.acked_through);
            if !acked || front.number >= self.checkpoint_segment {
                break;
            }
            if let Some(sealed) = self.sealed.pop_front() {
                doomed.push(sealed.path);
            }
        }
        if doomed.is_empty() {
            return;
        }
        let backend = Rc::clone(&self.backend);
        let dir = self.config.dir.clone();
        self.deleting = Some(tokio::task::spawn_local(async move {
            let mut removed = 0;
            for path in &doomed {
                match backend.remove_file(path).await {
                    Ok(()) => removed += 1,
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "deleting an acknowledged WAL segment failed")
                    }
                }
            }
            if let Err(error) = backend.sync_dir(&dir).await {
                tracing::warn!(dir = %dir.display(), %error, "fsync of the WAL directory after deletion failed");
            }
            removed
        }));
    }

    fn deletions_done(&mut self, removed: usize) {
        self.segments_on_disk = self.segments_on_disk.saturating_sub(removed as u64);
        self.shared.segments.store(self.segments_on_disk, Relaxed);
        self.shared
            .segments_deleted
            .fetch_add(removed as u64, Relaxed);
        if std::mem::take(&mut self.deletion_wanted) {
            self.start_deletions();
        }
        self.maybe_prepare();
    }
}

enum Formed<Buf> {
    Write(WriteFuture<Buf>),
    Nothing,
    NeedRotation,
}

fn new_active<F>(
    dir: &std::path::Path,
    number: u64,
    file: Rc<F>,
    first_sequence: u64,
) -> Active<F> {
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        segment_number: number,
        first_sequence,
        created_unix_ns: Utc::now().timestamp_nanos_opt().unwrap_or(0),
    };
    Active {
        number,
        path: segment_path(dir, number),
        file,
        tail_offset: 0,
        tail: header.encode_block().to_vec(),
        has_records: false,
        last_sequence: None,
    }
}

async fn create_raw<B: Backend>(
    backend: &B,
    config: &WalConfig,
    path: &std::path::Path,
) -> io::Result<B::File> {
    let file = backend
        .create_segment(path, config.segment_max_bytes, config.preallocation)
        .await?;
    backend.sync_dir(&config.dir).await?;
    Ok(file)
}

async fn create_and_sync<B: Backend>(
    backend: &B,
    config: &WalConfig,
    path: &std::path::Path,
) -> Result<B::File, WalError> {
    create_raw(backend, config, path)
        .await
        .map_err(|e| WalError::io("create segment", path, e))
}

fn flatten_join<T>(result: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    match result {
        Ok(inner) => inner,
        Err(join) => Err(io::Error::other(format!("background task failed: {join}"))),
    }
}

fn fail_events_reply(reply: EventsReply, error: &WalError) {
    match reply {
        EventsReply::One(reply) => drop(reply.send(Err(error.clone()))),
        EventsReply::Batch(reply) => drop(reply.send(Err(error.clone()))),
    }
}

fn fail_pending(pending: Pending, error: &WalError) {
    match pending {
        Pending::Events { reply, .. } => fail_events_reply(reply, error),
        Pending::Checkpoint { reply, .. } => drop(reply.send(Err(error.clone()))),
        Pending::Barrier { reply } => drop(reply.send(Err(error.clone()))),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Block size sanity: the header block is exactly one block, so data starts aligned.
const _: () = assert!(SEGMENT_HEADER_BYTES == BLOCK_BYTES);
