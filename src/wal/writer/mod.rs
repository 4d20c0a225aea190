//! The ring thread's writer: the group-commit protocol, in numbered steps in [`Writer::run`].
//!
//! One task on the ring thread owns every segment file. Appends arrive on a bounded channel;
//! the writer takes at most `queue_max_commands` of them into its own queue, so a stalled
//! disk holds callers back instead of growing memory. Whenever the write slot frees,
//! everything queued (up to `group_max_bytes`) becomes the next group: no timer, no added
//! delay. One group write and one `fdatasync` may be in flight together. Callers are answered
//! only after a sync that started after their group's write completed (docs/design.md §3).
//!
//! The concerns live in submodules: [`group`] (forming a group), [`pipeline`] (write and sync
//! in flight, completions, poisoning), [`segments`] (prepare, rotate, seal, delete),
//! [`budget`] (segment files against `wal_max_bytes`) and [`replies`] (answering callers).
//!
//! Invariants, asserted where they can change: groups and sequences are durable ≤ written ≤
//! formed; sequences are contiguous from group to group; the carried tail is shorter than a
//! block and starts block-aligned; checkpoints become durable in increasing order, and a
//! segment is deleted only after a durable checkpoint record covers it.
//!
//! Must never: drop an in-flight write or sync future, retry a failed sync, or answer a caller
//! before its bytes are durable (under the default policy).

use std::collections::VecDeque;
use std::future::Future;
use std::ops::RangeInclusive;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::WalConfig;
use super::error::WalError;
use super::format::{BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use super::naming::segment_path;
use super::stats::Shared;
use crate::event::EventKind;
use crate::io::Backend;

mod budget;
mod group;
mod pipeline;
mod replies;
mod segments;

use budget::Budget;
use group::{GroupMeta, Items, Pending};
use pipeline::{SyncFuture, Syncing, WriteFuture};
pub(crate) use replies::Reply;
use replies::{Completion, EventsReply, Waiters};
pub(crate) use segments::Sealed;
use segments::{Active, Deleted, Recycler, create_raw, new_active};

/// A request to the ring thread.
pub(crate) enum Command {
    /// One event, encoded on the caller's thread into a reused buffer (`wal::staging`).
    Append {
        kind: EventKind,
        event_bytes: Vec<u8>,
        reply: Reply<u64>,
    },
    AppendBatch {
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

/// How long a write or sync may be in flight before the ring thread takes new commands into
/// its queue anyway (and then at most this often until an I/O completes). A group write or
/// an `fdatasync` on a healthy disk completes within about this time.
const ACCEPT_WHILE_BUSY: std::time::Duration = std::time::Duration::from_millis(1);

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
    /// The per-log value every segment header and frame CRC carries.
    pub salt: u64,
}

/// The writer state on the ring thread.
pub(crate) struct Writer<B: Backend> {
    backend: Rc<B>,
    config: WalConfig,
    shared: Arc<Shared>,
    salt: u64,
    buffers: Vec<B::Buf>,
    active: Active<B::File>,
    sealed: VecDeque<Sealed>,
    prepared: Option<(u64, Rc<B::File>)>,
    preparing: Option<(u64, JoinHandle<std::io::Result<B::File>>)>,
    deleting: Option<JoinHandle<Deleted>>,
    deletion_wanted: bool,
    /// Sealed segments whose unlink failed; retried after the next durable sync.
    unlink_retry: Vec<Sealed>,
    /// Acknowledged segments kept for recycling (`recycle_segments_max`).
    recycler: Recycler,
    next_segment_number: u64,
    budget: Budget,
    /// Accepted commands not yet in a group; at most `queue_max_commands`.
    queue: VecDeque<Pending>,
    /// The sequence the next event gets (everything below it is in a formed group).
    next_sequence: u64,
    written_sequence: u64,
    durable_sequence: u64,
    /// The newest durable checkpoint.
    acked_through: u64,
    /// The segment holding the newest durable checkpoint record (0: none). Only segments
    /// before it may be deleted, so the newest checkpoint — which keeps sequence numbers from
    /// being reused after everything else is deleted — always survives.
    checkpoint_segment: u64,
    /// Highest checkpoint put into a group (durable or not), and that group's id.
    acked_queued: u64,
    acked_queued_group: u64,
    /// Groups formed so far; a group's id is its position.
    groups_formed: u64,
    /// Highest group id whose write completed.
    groups_written: u64,
    /// Highest group id covered by a completed sync.
    groups_durable: u64,
    /// Written groups no sync covers yet, in order.
    unsynced: Vec<GroupMeta>,
    /// Replies held by written groups until a sync covers them (unsynced or syncing).
    replies_awaiting_sync: usize,
    /// Callers waiting for a group to become durable.
    waiters: Waiters,
    /// Event buffers whose bytes are in a formed group, returned to `wal::staging` for reuse.
    spent_buffers: Vec<Vec<u8>>,
    /// Emptied completion lists of durable groups, reused by the next groups formed.
    completion_lists: Vec<Vec<Completion>>,
    /// Under the interval policy: when the next sync is due (None: nothing unsynced).
    sync_deadline: Option<tokio::time::Instant>,
    /// A sync is wanted now (interval policy: barrier, rotation, shutdown).
    sync_requested: bool,
    poison: Option<WalError>,
}

impl<B: Backend> Writer<B> {
    /// Opens or creates the active segment and starts preparing the next one. The caller has
    /// made everything recovery trusts durable before this.
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
                let seed = group::FrameSeed {
                    segment_number: resume.number,
                    salt: plan.salt,
                };
                Active {
                    number: resume.number,
                    path,
                    file: Rc::new(file),
                    frame_seed: seed,
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
                        let file = create_raw(&*backend, &plan.config, &path)
                            .await
                            .map_err(|e| WalError::io("create segment", &path, e))?;
                        (number, file)
                    }
                };
                next_segment_number = next_segment_number.max(number + 1);
                segments_on_disk += 1;
                new_active(
                    &dir,
                    number,
                    Rc::new(file),
                    plan.next_sequence,
                    plan.salt,
                    false,
                )
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
        let budget = Budget::new(
            segments_on_disk,
            plan.config.segment_max_bytes,
            plan.config.wal_max_bytes,
        );
        let mut writer = Writer {
            backend,
            config: plan.config,
            shared,
            salt: plan.salt,
            buffers,
            active,
            sealed: plan.sealed,
            prepared,
            preparing: None,
            deleting: None,
            deletion_wanted: false,
            unlink_retry: Vec::new(),
            recycler: Recycler::default(),
            next_segment_number,
            budget,
            queue: VecDeque::new(),
            next_sequence: plan.next_sequence,
            written_sequence: durable,
            durable_sequence: durable,
            acked_through: plan.acked_through,
            checkpoint_segment: plan.checkpoint_segment,
            acked_queued: plan.acked_through,
            acked_queued_group: 0,
            groups_formed: 0,
            groups_written: 0,
            groups_durable: 0,
            unsynced: Vec::new(),
            replies_awaiting_sync: 0,
            waiters: Waiters::default(),
            spent_buffers: Vec::new(),
            completion_lists: Vec::new(),
            sync_deadline: None,
            sync_requested: false,
            poison: None,
        };
        writer.check_invariants();
        // Deletions first: a segment they keep for recycling can be the next one prepared.
        writer.start_deletions();
        writer.maybe_prepare();
        Ok(writer)
    }

    /// Serves commands until closed (or every handle is dropped), then flushes and returns.
    ///
    /// The group-commit protocol, one loop turn at a time:
    ///
    /// 1. **Accept.** While the writer's queue holds fewer than `queue_max_commands`, take
    ///    everything waiting in the channel (up to that bound) in one go. While a write or
    ///    sync is in flight, do so at each I/O completion (and after `ACCEPT_WHILE_BUSY` on a
    ///    slow disk) rather than waiting on the channel. A full queue stops receiving, so the
    ///    channel fills and senders wait.
    /// 2. **Form and write.** When the write slot is free (and written groups waiting for a
    ///    sync hold fewer than `queue_max_commands` replies), form a group from the queue:
    ///    the carried tail block plus frames, sequences assigned in queue order, the durable
    ///    watermark of this moment in every frame. A group that would pass the rotation
    ///    point waits until every written group is durable, then the segment rotates.
    /// 3. **Sync.** When no sync is in flight and groups are written but not durable, start
    ///    one `fdatasync` covering all of them (interval policy: only when due or requested).
    /// 4. **Write done.** The group joins the unsynced list (interval policy: its callers are
    ///    answered now).
    /// 5. **Sync done.** Every group it covers is durable: the durable watermark advances,
    ///    callers and sync waiters are answered, a checkpoint in those groups becomes the
    ///    acknowledged watermark, and the sealed segments it covers are deleted in the
    ///    background (then the directory is synced).
    /// 6. **Close.** Once nothing is queued and everything written is durable, a clean close
    ///    writes one watermark record and syncs it, then the loop ends.
    ///
    /// A write or sync future, once started, is always polled to completion, even after
    /// poisoning.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut write: Option<WriteFuture<B::Buf>> = None;
        let mut sync: Option<(SyncFuture, Syncing)> = None;
        let mut receiving = true;
        let mut watermark_queued = false;
        let mut close_replies: Vec<Reply<()>> = Vec::new();
        let queue_max = self.config.queue_max_commands;
        let mut incoming: Vec<Command> = Vec::new();
        // While a write or sync is in flight, commands are taken when one completes or, on a
        // slow disk, after `ACCEPT_WHILE_BUSY` (then again at most that often).
        let mut accept_deadline: Option<tokio::time::Instant> = None;
        let mut io_completed = false;
        loop {
            // Step 1 at an I/O completion: take what waited meanwhile, without waiting.
            if io_completed && receiving && self.queue.len() < queue_max {
                let limit = queue_max - self.queue.len();
                if let Some(received) = recv_ready(&mut commands, &mut incoming, limit) {
                    self.take_commands(received, &mut incoming, &mut receiving, &mut close_replies);
                    if !receiving {
                        commands.close();
                    }
                }
            }
            io_completed = false;
            if self.poison.is_none() {
                // Step 2.
                // Written groups wait for a sync holding their callers' replies; a slow sync
                // must not let them grow without bound, so at most `queue_max_commands`.
                let replies_bounded = self.replies_awaiting_sync < queue_max;
                if write.is_none() && replies_bounded {
                    let io_idle = sync.is_none() && self.unsynced.is_empty();
                    write = self.next_write(io_idle).await;
                    if write.is_some() {
                        accept_deadline = Some(tokio::time::Instant::now() + ACCEPT_WHILE_BUSY);
                    }
                }
                // Step 3.
                if sync.is_none() {
                    if !receiving {
                        self.sync_requested = true;
                    }
                    sync = self.next_sync();
                    if sync.is_some() {
                        accept_deadline = Some(tokio::time::Instant::now() + ACCEPT_WHILE_BUSY);
                    }
                }
                // Step 6.
                let drained = write.is_none()
                    && sync.is_none()
                    && self.queue.is_empty()
                    && self.unsynced.is_empty();
                if !receiving && drained && !watermark_queued {
                    watermark_queued = true;
                    if self.durable_sequence > 0 {
                        self.queue.push_back(Pending::Watermark);
                        continue;
                    }
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
            let room = self.queue.len() < queue_max;
            let io_busy = write.is_some() || sync.is_some();
            let accepting = receiving && room && (!io_busy || accept_deadline.is_none());
            let accept_due = accept_deadline.filter(|_| receiving && room && io_busy);
            tokio::select! {
                biased;
                // Step 4.
                done = async { write.as_mut().expect("guarded").await }, if write.is_some() => {
                    write = None;
                    io_completed = true;
                    self.complete_write(done);
                    if matches!(self.config.sync, super::config::SyncPolicy::Interval { .. }) {
                        // Callers were answered (see the sync arm).
                        tokio::task::yield_now().await;
                    }
                }
                // Step 5.
                done = async { sync.as_mut().expect("guarded").0.as_mut().await }, if sync.is_some() => {
                    if let Some((_, syncing)) = sync.take() {
                        io_completed = true;
                        self.complete_sync(done, syncing);
                        // Let the ring thread's other tasks run before the next group is
                        // formed: an answer relayed by one of them (the connector's
                        // hand-over answers its publishers only after it gets ours) should
                        // leave as soon as a direct answer does. Otherwise the next group can
                        // form before those callers are even answered, and they all miss it
                        // (with 16 awaiting publishers on busy cores this halved the records
                        // per sync). One yield per sync costs about a microsecond.
                        tokio::task::yield_now().await;
                    }
                }
                prepared = async { (&mut self.preparing.as_mut().expect("guarded").1).await }, if preparing => {
                    self.prepared_done(prepared);
                }
                deleted = async { self.deleting.as_mut().expect("guarded").await }, if deleting => {
                    self.deleting = None;
                    match deleted {
                        Ok(deleted) => self.deletions_done(deleted),
                        Err(error) => tracing::warn!(%error, "WAL segment deletion task failed"),
                    }
                }
                // Step 1. Everything waiting, up to the bound, in one go: this is what makes
                // groups large, and it releases the channel's permits once per batch. While a
                // write or sync is in flight the ring thread does not wait on the channel
                // (every send would wake it, which cost more CPU than the append itself):
                // commands wait there and are taken at the next I/O completion, or after
                // `ACCEPT_WHILE_BUSY` when the disk is slow, so a stalled disk still fills the
                // writer's bounded queue.
                received = commands.recv_many(&mut incoming, queue_max - self.queue.len()),
                    if accepting =>
                {
                    if io_busy {
                        accept_deadline = Some(tokio::time::Instant::now() + ACCEPT_WHILE_BUSY);
                    }
                    self.take_commands(received, &mut incoming, &mut receiving, &mut close_replies);
                    if !receiving {
                        commands.close();
                    }
                }
                () = sleep_until(accept_due), if accept_due.is_some() => {
                    accept_deadline = None;
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
        // A deletion in flight finishes. Then what a checkpoint made durable meanwhile allows
        // (its deletion was wanted while that one ran) is deleted too, and an unlink that
        // failed earlier gets one more try: at most two more rounds, so a persistent error
        // cannot hold the close.
        for _ in 0..3 {
            if let Some(handle) = self.deleting.take()
                && let Ok(deleted) = handle.await
            {
                self.count_deletions(&deleted);
                self.unlink_retry.extend(deleted.failed);
            }
            let wanted = std::mem::take(&mut self.deletion_wanted);
            if self.poison.is_some() || (self.unlink_retry.is_empty() && !wanted) {
                break;
            }
            self.start_deletions();
        }
        let result = match &self.poison {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        };
        for reply in close_replies {
            let _ = reply.send(result.clone());
        }
    }

    /// Step 1: a batch of `received` commands from the channel (0: the channel is closed)
    /// into the queue. A close stops receiving; commands after it in the batch are dropped
    /// unanswered, so their callers get `Closed` as if the channel had refused them.
    fn take_commands(
        &mut self,
        received: usize,
        incoming: &mut Vec<Command>,
        receiving: &mut bool,
        close_replies: &mut Vec<Reply<()>>,
    ) {
        if received == 0 {
            *receiving = false;
        }
        for command in incoming.drain(..) {
            if !*receiving {
                continue;
            }
            match command {
                Command::Close { reply } => {
                    close_replies.push(reply);
                    *receiving = false;
                }
                command => self.accept(command),
            }
        }
        self.note_queue_len();
    }

    /// Step 1: one command into the queue.
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
                event_bytes,
                reply,
            } => Pending::Events {
                items: Items::One(Some((kind, event_bytes))),
                first_sequence: None,
                reply: EventsReply::One(reply),
            },
            Command::AppendBatch { items, reply } => {
                if items.is_empty() {
                    let _ = reply.send(Ok(self.next_sequence..=self.next_sequence - 1));
                    return;
                }
                Pending::Events {
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
    }

    /// Publishes the queue length (and its high-water mark) for `stats()`.
    fn note_queue_len(&self) {
        let len = self.queue.len() as u64;
        assert!(
            self.queue.len() <= self.config.queue_max_commands + 1,
            "the writer's queue passed its bound"
        );
        self.shared.queued_commands.store(len, Relaxed);
        self.shared.queued_commands_max.fetch_max(len, Relaxed);
    }

    /// The writer's invariants; O(1), checked at every group completion.
    fn check_invariants(&self) {
        assert!(
            self.groups_durable <= self.groups_written && self.groups_written <= self.groups_formed,
            "groups: durable {} written {} formed {}",
            self.groups_durable,
            self.groups_written,
            self.groups_formed
        );
        assert!(
            self.durable_sequence <= self.written_sequence
                && self.written_sequence < self.next_sequence,
            "sequences: durable {} written {} next {}",
            self.durable_sequence,
            self.written_sequence,
            self.next_sequence
        );
        assert!(self.active.tail_offset.is_multiple_of(BLOCK_BYTES as u64));
        assert!(
            self.active.tail.len() < BLOCK_BYTES
                || (self.active.tail_offset == 0
                    && !self.active.has_records
                    && self.active.tail.len() == SEGMENT_HEADER_BYTES),
            "carried tail of {} bytes",
            self.active.tail.len()
        );
        assert!(self.acked_through <= self.acked_queued && self.acked_queued < self.next_sequence);
        debug_assert!(
            self.unsynced
                .windows(2)
                .all(|pair| pair[1].id == pair[0].id + 1),
            "unsynced groups not contiguous"
        );
    }
}

/// Takes the commands already waiting in the channel without waiting for more: `None` when
/// there are none (or the task's cooperative budget is spent; the next turn takes them).
fn recv_ready(
    commands: &mut mpsc::Receiver<Command>,
    incoming: &mut Vec<Command>,
    limit: usize,
) -> Option<usize> {
    // A no-op waker: a send must not wake the ring thread for this poll. The next real wait
    // on the channel registers the task's own waker again.
    let mut context = Context::from_waker(Waker::noop());
    match std::pin::pin!(commands.recv_many(incoming, limit)).poll(&mut context) {
        Poll::Ready(received) => Some(received),
        Poll::Pending => None,
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
