//! Segment lifecycle: the active segment, preparing the next one in the background, rotating
//! to it, and deleting sealed segments a durable checkpoint covers (retrying failed unlinks),
//! or keeping up to `recycle_segments_max` of them to be renamed to the next number and
//! overwritten (recycling, docs/format.md §7.8).
//!
//! Must never: rotate while a written group is not durable (a sync of the new file would not
//! cover the old one), delete a segment before a durable checkpoint record covers every event
//! in it, or delete the segment holding the newest durable checkpoint (or anything after it):
//! that record keeps sequence numbers from being reused once everything else is gone. The
//! same holds for recycling, which destroys a segment's content as deletion does; and only the
//! oldest segment on disk is ever deleted or recycled, so numbers on disk stay contiguous.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use chrono::Utc;

use super::super::config::WalConfig;
use super::super::error::WalError;
use super::super::format::{FORMAT_VERSION, SegmentHeader};
use super::super::naming::segment_path;
use super::super::recycle;
use super::Writer;
use super::group::{FrameSeed, Pending};
use super::replies;
use crate::io::Backend;

/// A segment with no more writes coming.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub number: u64,
    pub path: PathBuf,
    /// Highest event sequence in it (None: no events).
    pub last_sequence: Option<u64>,
    /// Its file may be recycled once acknowledged: it has the configured segment size.
    pub recyclable: bool,
}

/// The segment receiving groups.
pub(super) struct Active<F> {
    pub number: u64,
    pub path: PathBuf,
    pub file: Rc<F>,
    /// How this segment's frames are sealed.
    pub frame_seed: FrameSeed,
    /// File offset of the first byte of `tail` (block-aligned).
    pub tail_offset: u64,
    /// Bytes from `tail_offset` to the write head: rewritten at the start of the next group.
    /// Shorter than a block, except the header block of a segment nothing is written to yet.
    pub tail: Vec<u8>,
    pub has_records: bool,
    pub last_sequence: Option<u64>,
}

/// Sealed, acknowledged segments kept for reuse, and which prepared segment is one of them.
#[derive(Debug, Default)]
pub(super) struct Recycler {
    /// At most `recycle_segments_max`, oldest first; each is still on disk under its own
    /// number (a reader sees an old, fully acknowledged segment) and counted in the budget.
    pool: std::collections::VecDeque<Sealed>,
    /// The number of the prepared (or preparing) segment when it is a recycled file.
    prepared_number: Option<u64>,
}

/// Why a rotation did not happen.
pub(super) enum RotateError {
    /// No space in the budget: fail the waiting appends, keep going.
    Full(WalError),
    /// The next segment could not be created: fail the waiting appends, keep going.
    Failed(WalError),
}

/// A fresh active segment whose header block is the tail of its first group.
pub(super) fn new_active<F>(
    dir: &Path,
    number: u64,
    file: Rc<F>,
    first_sequence: u64,
    salt: u64,
    recycled: bool,
) -> Active<F> {
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        segment_number: number,
        first_sequence,
        created_unix_ns: Utc::now().timestamp_nanos_opt().unwrap_or(0),
        salt,
    };
    let mut block = header.encode_block();
    if recycled {
        // The file holds an earlier segment's bytes past what this one writes: the flag tells
        // readers they are left over, not damage (docs/format.md §7.8).
        recycle::mark_recycled(&mut block);
    }
    Active {
        number,
        path: segment_path(dir, number),
        file,
        frame_seed: header.frame_seed(),
        tail_offset: 0,
        tail: block.to_vec(),
        has_records: false,
        last_sequence: None,
    }
}

impl<B: Backend> Writer<B> {
    /// Starts preparing the next segment in the background if none is ready: by recycling the
    /// oldest kept segment if there is one, else by creating a file if the budget allows one
    /// more.
    pub(super) fn maybe_prepare(&mut self) {
        if self.prepared.is_some() || self.preparing.is_some() {
            return;
        }
        if self.maybe_prepare_recycled() {
            return;
        }
        if !self.budget.allows_one_more() {
            return;
        }
        let number = self.next_segment_number;
        self.next_segment_number += 1;
        self.budget.add();
        self.shared.segments.store(self.budget.segments(), Relaxed);
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

    /// Starts renaming the oldest kept segment to the next number (then syncing the
    /// directory and opening it), if one is kept and nothing older is still on disk. Returns
    /// whether it did.
    fn maybe_prepare_recycled(&mut self) -> bool {
        // An unlink that failed leaves an older segment on disk; a deletion in flight may be
        // removing one. Recycling a newer one then would open a hole in the numbers.
        if !self.unlink_retry.is_empty() || self.deleting.is_some() {
            return false;
        }
        let Some(old) = self.recycler.pool.pop_front() else {
            return false;
        };
        let number = self.next_segment_number;
        self.next_segment_number += 1;
        self.recycler.prepared_number = Some(number);
        let backend = Rc::clone(&self.backend);
        let dir = self.config.dir.clone();
        let path = segment_path(&dir, number);
        tracing::debug!(from = old.number, to = number, "recycling a WAL segment");
        let handle = tokio::task::spawn_local(async move {
            let result = recycle_raw(&*backend, &dir, &old.path, &path).await;
            if result.is_err() {
                // Acknowledged content only: whatever name it has now, it goes.
                let _ = backend.remove_file(&path).await;
                let _ = backend.remove_file(&old.path).await;
                let _ = backend.sync_dir(&dir).await;
            }
            result
        });
        self.preparing = Some((number, handle));
        true
    }

    pub(super) fn prepared_done(
        &mut self,
        result: Result<io::Result<B::File>, tokio::task::JoinError>,
    ) {
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
        if self.recycler.prepared_number == Some(number) {
            // The recycled file was removed (or will be found acknowledged at the next open):
            // its share goes back like a failed creation's.
            self.recycler.prepared_number = None;
        }
        self.next_segment_number = number;
        self.budget.release(1);
        self.shared.segments.store(self.budget.segments(), Relaxed);
        WalError::io(
            "create segment",
            segment_path(&self.config.dir, number),
            error,
        )
    }

    /// Switches to the next segment. Called only when no I/O is in flight and everything
    /// written is durable.
    pub(super) async fn rotate(&mut self) -> Result<(), RotateError> {
        assert!(
            self.unsynced.is_empty() && self.written_sequence == self.durable_sequence,
            "rotation with groups not durable"
        );
        let (number, file) = match self.prepared.take() {
            Some(prepared) => prepared,
            None => {
                if self.preparing.is_none() {
                    self.maybe_prepare();
                }
                let Some((number, handle)) = self.preparing.take() else {
                    return Err(RotateError::Full(self.budget.full_error()));
                };
                match flatten_join(handle.await) {
                    Ok(file) => (number, Rc::new(file)),
                    Err(error) => {
                        return Err(RotateError::Failed(self.preparation_failed(number, error)));
                    }
                }
            }
        };
        let recycled = self.recycler.prepared_number.take() == Some(number);
        let next = new_active(
            &self.config.dir,
            number,
            file,
            self.next_sequence,
            self.salt,
            recycled,
        );
        let old = std::mem::replace(&mut self.active, next);
        tracing::debug!(sealed = old.number, active = number, "WAL segment rotated");
        self.sealed.push_back(Sealed {
            number: old.number,
            path: old.path,
            last_sequence: old.last_sequence,
            // Created (or recycled) by this run at the configured size.
            recyclable: true,
        });
        // Deletions first: a segment they keep for recycling can be the next one prepared.
        self.start_deletions();
        self.maybe_prepare();
        Ok(())
    }

    /// After a rotation was refused (budget or ENOSPC): every queued append fails with that
    /// error. Checkpoints and sync barriers stay queued: they fit the active segment's reserve,
    /// and a durable checkpoint is what frees space. A batch already partly written (only
    /// the front one can be) fails naming its durable prefix, so that prefix is delivered.
    pub(super) fn fail_events_after_rotation_error(&mut self, error: &WalError) {
        let mut kept = std::collections::VecDeque::new();
        for pending in std::mem::take(&mut self.queue) {
            match pending {
                Pending::Events {
                    first_sequence: Some(first),
                    reply,
                    items,
                    ..
                } => {
                    // Rotation runs only with everything formed written and durable.
                    let last = self.next_sequence - 1;
                    assert!(
                        first <= last && last == self.durable_sequence,
                        "a partly written batch's prefix {first}..={last} is not durable \
                         (durable {})",
                        self.durable_sequence
                    );
                    replies::fail_events_partly(reply, first, last, items.len(), error);
                }
                Pending::Events { .. } => pending.fail(error),
                other => kept.push_back(other),
            }
        }
        self.queue = kept;
        self.note_queue_len();
    }

    /// Deletes (in the background) the oldest sealed segments whose events a durable
    /// checkpoint covers, and retries unlinks that failed before.
    pub(super) fn start_deletions(&mut self) {
        if self.deleting.is_some() {
            self.deletion_wanted = true;
            return;
        }
        let mut doomed: Vec<Sealed> = std::mem::take(&mut self.unlink_retry);
        let keep = self.config.recycle_segments_max;
        while let Some(front) = self.sealed.front() {
            let acked = front
                .last_sequence
                .is_none_or(|last| last <= self.acked_through);
            if !acked || front.number >= self.checkpoint_segment {
                break;
            }
            if let Some(sealed) = self.sealed.pop_front() {
                if sealed.recyclable {
                    // Kept for recycling (with recycling off, deleted at once).
                    self.recycler.pool.push_back(sealed);
                } else {
                    // Deleted, and the older ones kept before it with it, so that no hole
                    // opens in the numbers.
                    doomed.extend(self.recycler.pool.drain(..));
                    doomed.push(sealed);
                }
            }
        }
        // When more are kept than allowed, the oldest go: only the oldest segment on disk is
        // ever deleted or recycled, so the numbers on disk stay contiguous.
        while self.recycler.pool.len() > keep {
            if let Some(oldest) = self.recycler.pool.pop_front() {
                doomed.push(oldest);
            }
        }
        if doomed.is_empty() {
            if !self.recycler.pool.is_empty() {
                // A segment just kept may be what the next segment is made from.
                self.maybe_prepare();
            }
            return;
        }
        let backend = Rc::clone(&self.backend);
        let dir = self.config.dir.clone();
        self.deleting = Some(tokio::task::spawn_local(async move {
            let mut failed = Vec::new();
            let mut removed = 0;
            for sealed in doomed {
                match backend.remove_file(&sealed.path).await {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => removed += 1,
                    Err(error) => {
                        tracing::warn!(path = %sealed.path.display(), %error, "deleting an acknowledged WAL segment failed; will retry");
                        failed.push(sealed);
                    }
                }
            }
            if removed > 0
                && let Err(error) = backend.sync_dir(&dir).await
            {
                tracing::warn!(dir = %dir.display(), %error, "fsync of the WAL directory after deletion failed");
            }
            Deleted { removed, failed }
        }));
    }

    /// Gives back the budget of removed files.
    pub(super) fn count_deletions(&mut self, deleted: &Deleted) {
        let removed = deleted.removed as u64;
        self.budget.release(removed);
        self.shared.segments.store(self.budget.segments(), Relaxed);
        self.shared.segments_deleted.fetch_add(removed, Relaxed);
    }

    pub(super) fn deletions_done(&mut self, deleted: Deleted) {
        self.count_deletions(&deleted);
        if std::mem::take(&mut self.deletion_wanted) {
            self.start_deletions();
        }
        // Retried at the next durable sync or rotation, not at once: a persistent error
        // would otherwise spin.
        self.unlink_retry.extend(deleted.failed);
        self.maybe_prepare();
    }
}

/// What a deletion task did.
pub(super) struct Deleted {
    removed: usize,
    pub failed: Vec<Sealed>,
}

/// Renames an acknowledged segment to the next number and makes the new name durable before
/// the file is opened: its first write (header and records) must never reach a file whose
/// name a power loss could turn back into the old one.
async fn recycle_raw<B: Backend>(
    backend: &B,
    dir: &Path,
    from: &Path,
    to: &Path,
) -> io::Result<B::File> {
    backend.rename_file(from, to).await?;
    backend.sync_dir(dir).await?;
    backend.open_segment(to).await
}

/// Creates a segment file and makes its name durable.
pub(super) async fn create_raw<B: Backend>(
    backend: &B,
    config: &WalConfig,
    path: &Path,
) -> io::Result<B::File> {
    let file = backend
        .create_segment(path, config.segment_max_bytes, config.preallocation)
        .await?;
    backend.sync_dir(&config.dir).await?;
    Ok(file)
}

pub(super) fn flatten_join<T>(
    result: Result<io::Result<T>, tokio::task::JoinError>,
) -> io::Result<T> {
    match result {
        Ok(inner) => inner,
        Err(join) => Err(io::Error::other(format!("background task failed: {join}"))),
    }
}
