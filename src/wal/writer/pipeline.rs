//! The write/sync pipeline: starting a group's write, starting a sync that covers every
//! written group, and what their completions mean (watermarks advance, callers are answered,
//! durable checkpoints allow deletions, failures poison the log).
//!
//! Must never: drop an in-flight write or sync future, retry a failed sync, answer a caller
//! before its group is durable (default policy) or written (interval policy), or let a
//! checkpoint allow a deletion before the checkpoint record is durable.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::super::config::SyncPolicy;
use super::super::error::WalError;
use super::Writer;
use super::group::{Formed, GroupMeta, Pending};
use super::replies::{self, Completion};
use super::segments::RotateError;
use crate::io::Backend;

/// What a finished group write hands back.
pub(super) struct WriteDone<Buf> {
    pub result: io::Result<()>,
    /// From handing the write to the backend until its completion was polled.
    pub latency_us: u64,
    pub buf: Buf,
    pub meta: GroupMeta,
    pub path: PathBuf,
}

/// What a finished sync hands back.
pub(super) struct SyncDone {
    result: io::Result<()>,
    path: PathBuf,
    latency_us: u64,
}

pub(super) type WriteFuture<Buf> = Pin<Box<dyn Future<Output = WriteDone<Buf>>>>;
pub(super) type SyncFuture = Pin<Box<dyn Future<Output = SyncDone>>>;

/// A sync in flight and the groups it makes durable.
pub(super) struct Syncing {
    groups: Vec<GroupMeta>,
    through_sequence: u64,
    through_group: u64,
}

impl<B: Backend> Writer<B> {
    /// The next group write, if anything is queued and the write slot is free. Rotation waits
    /// until no I/O is in flight and everything written is durable (`io_idle`), because a sync
    /// of the new segment would not cover the old one.
    pub(super) async fn next_write(&mut self, io_idle: bool) -> Option<WriteFuture<B::Buf>> {
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
                        self.fail_events_after_rotation_error(&error);
                        if self.queue.is_empty() {
                            return None;
                        }
                        // What is left (checkpoints, barriers) fits the active segment's
                        // reserve; a checkpoint that does not is failed by the next try.
                        match self.form_group() {
                            Formed::Write(io) => return Some(io),
                            Formed::Nothing => return None,
                            Formed::NeedRotation => {
                                // Only a checkpoint past the reserve gets here (the reserve
                                // is used up): it fails like the appends. Everything written
                                // is durable (rotation needs that), so barriers are answered.
                                let durable = self.durable_sequence;
                                for pending in std::mem::take(&mut self.queue) {
                                    match pending {
                                        Pending::Barrier { reply } => drop(reply.send(Ok(durable))),
                                        other => other.fail(&error),
                                    }
                                }
                                self.note_queue_len();
                                return None;
                            }
                        }
                    }
                },
            }
        }
    }

    /// A sync covering every written group, when one is due: always under the default
    /// policy; under the interval policy when requested or the interval has passed.
    pub(super) fn next_sync(&mut self) -> Option<(SyncFuture, Syncing)> {
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

    /// A group's write finished: it joins the unsynced groups (and, under the interval
    /// policy, its callers are answered).
    pub(super) fn complete_write(&mut self, done: WriteDone<B::Buf>) {
        self.buffers.push(done.buf);
        let mut meta = done.meta;
        if let Some(poison) = &self.poison {
            replies::fail_poisoned(meta.completions, self.durable_sequence, poison);
            return;
        }
        if let Err(error) = done.result {
            self.poison_with("write segment", done.path, error, meta.completions);
            return;
        }
        // Groups complete in formation order, so sequences stay contiguous.
        assert_eq!(
            meta.id,
            self.groups_written + 1,
            "groups written out of order"
        );
        if let Some(first) = meta.first_sequence {
            assert_eq!(
                first,
                self.written_sequence + 1,
                "sequence gap between groups"
            );
        }
        let shared = &self.shared;
        shared.group_writes.fetch_add(1, Relaxed);
        shared.write_latency.record_us(done.latency_us);
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
            // Explicitly weaker: callers hear back once the write is done. What their
            // checkpoints allow (deletion) still waits for the sync.
            replies::answer(&mut meta.completions);
            if self.sync_deadline.is_none() {
                self.sync_deadline =
                    Some(tokio::time::Instant::now() + Duration::from_millis(sync_interval_ms));
            }
        }
        self.replies_awaiting_sync += meta.completions.len();
        self.unsynced.push(meta);
        self.check_invariants();
    }

    /// A sync finished: every group written before it started is durable.
    pub(super) fn complete_sync(&mut self, done: SyncDone, syncing: Syncing) {
        let records: u64 = syncing.groups.iter().map(|group| group.records).sum();
        let mut checkpoint = None;
        for group in &syncing.groups {
            self.replies_awaiting_sync -= group.completions.len();
            if let Some(acked) = group.checkpoint {
                checkpoint = Some((acked, group.segment));
            }
        }
        if let Some(poison) = &self.poison {
            for group in syncing.groups {
                replies::fail_poisoned(group.completions, self.durable_sequence, poison);
            }
            return;
        }
        if let Err(error) = done.result {
            let completions = syncing
                .groups
                .into_iter()
                .flat_map(|group| group.completions)
                .collect();
            self.poison_with("fdatasync segment", done.path, error, completions);
            return;
        }
        assert!(syncing.through_group >= self.groups_durable);
        assert!(syncing.through_sequence >= self.durable_sequence);
        self.durable_sequence = syncing.through_sequence;
        self.groups_durable = syncing.through_group;
        let shared = &self.shared;
        shared
            .durable_sequence
            .store(self.durable_sequence, Relaxed);
        shared.syncs.fetch_add(1, Relaxed);
        shared.records_synced.fetch_add(records, Relaxed);
        shared.sync_latency.record_us(done.latency_us);
        if let Some((acked, segment)) = checkpoint {
            // Checkpoints are taken into groups only when higher than every earlier one.
            assert!(acked > self.acked_through, "checkpoints out of order");
            self.acked_through = acked;
            self.checkpoint_segment = segment;
            self.shared.acked_through.store(acked, Relaxed);
        }
        // Groups in order, each group's callers in order: the same order as before the
        // lists were reused.
        for mut group in syncing.groups {
            replies::answer(&mut group.completions);
            self.completion_lists.push(group.completions);
        }
        self.waiters
            .resolve_through(self.groups_durable, self.durable_sequence);
        // Durable progress: deletions a checkpoint allows, and unlinks to retry.
        self.start_deletions();
        self.check_invariants();
    }

    /// Stores the poison and fails everyone waiting.
    pub(super) fn poison_with(
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
        replies::fail_poisoned(completions, self.durable_sequence, &poison);
        for group in std::mem::take(&mut self.unsynced) {
            self.replies_awaiting_sync -= group.completions.len();
            replies::fail_poisoned(group.completions, self.durable_sequence, &poison);
        }
        self.fail_all_queued(&poison);
        self.waiters.fail_all(&poison);
        self.sync_deadline = None;
    }

    /// Fails every queued command.
    pub(super) fn fail_all_queued(&mut self, error: &WalError) {
        // Only the front command can be partly in groups already.
        let assigned_last = self.next_sequence - 1;
        let durable_sequence = self.durable_sequence;
        for pending in self.queue.drain(..) {
            match pending {
                Pending::Events {
                    first_sequence: Some(first),
                    reply,
                    items,
                    ..
                } => replies::fail_events_after(
                    reply,
                    first,
                    assigned_last,
                    items.len(),
                    durable_sequence,
                    error,
                ),
                other => other.fail(error),
            }
        }
        self.note_queue_len();
    }
}
