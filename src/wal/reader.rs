//! Streaming replay: yields events in sequence order from a given sequence, reading one
//! segment at a time with bounded memory (never the whole directory into a `Vec`). It only
//! reads; it must never modify a file.
//!
//! Reading beside a writer: a group being written can be seen half-done (a frame still
//! missing while a later one in the same write has landed). The reader must not step over
//! such a frame as if it were damage, or that event would be skipped for good. So it skips a
//! damaged region only when the sequences it hides are known to be durable (at or below the
//! caller's durable bound, or the durable watermark a later frame carries, or in a segment
//! written before the newest one); otherwise it stops there, and a later reader starting from
//! the next sequence sees the finished write.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::WalError;
use super::format::{
    EntryView, FrameLayout, HeaderError, RecordView, SEGMENT_HEADER_BYTES, SegmentHeader, WalEntry,
};
use super::recovery::{directory_salt, layout_for_damaged_header, list_segments};
use super::scan::{Resilient, ScanItem, SegmentScan};
use crate::io::read::{BufferedOpener, ReadAt, SegmentOpener, read_fully};

/// One replayed event.
pub type ReplayItem = WalEntry;

/// Opens segment files for a reader (shared, so the reader stays `Send`).
pub type SharedOpener = Arc<dyn SegmentOpener + Send + Sync>;

type Scan = SegmentScan<Resilient<Box<dyn ReadAt + Send>>>;

struct Current {
    number: u64,
    path: PathBuf,
    scan: Scan,
    /// The newest segment listed when the reader was opened: a write may be in progress here.
    newest: bool,
    /// Its frames carry durable watermarks (version 2).
    watermarks: bool,
}

/// A damaged region seen and not yet judged: real damage to step over, or a write still in
/// progress to stop at.
#[derive(Debug, Clone, Copy)]
struct PendingDamage {
    segment: u64,
    offset: u64,
    len_bytes: u64,
}

/// An iterator over the events of a WAL directory with `sequence >= from`.
///
/// Opened with [`WalReader::open_durable`] (what [`crate::wal::Wal::replay_from`] does), it
/// yields only events at or below the durable bound it is given and ends at the first event
/// above it. Opened with [`WalReader::open`], it yields whatever complete events are on disk,
/// which is only known to be durable for a log that is closed.
///
/// Damaged regions are skipped (with a warning, as at open) when they are known to hide only
/// durable sequences; a region that may be a write in progress ends the iteration instead
/// (see the module documentation). Unreadable blocks are skipped and counted. Segments
/// deleted while reading are passed over.
pub struct WalReader {
    segments: VecDeque<(u64, PathBuf)>,
    newest_listed: Option<u64>,
    current: Option<Current>,
    from_sequence: u64,
    progress: Progress,
    salt: Option<u64>,
    opener: SharedOpener,
}

/// What the reader has learned so far, apart from the segment being read (kept apart so it
/// can be updated while a record borrowed from that segment's scan is in hand).
#[derive(Debug)]
struct Progress {
    durable_through: Option<u64>,
    /// Highest event sequence seen so far (yielded or not).
    last_seen: Option<u64>,
    /// Highest durable watermark seen in a frame so far.
    watermark: u64,
    pending_damage: Option<PendingDamage>,
    skipped_regions: u64,
    stopped: bool,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("from_sequence", &self.from_sequence)
            .field("durable_through", &self.progress.durable_through)
            .field("last_seen", &self.progress.last_seen)
            .finish_non_exhaustive()
    }
}

impl WalReader {
    /// Lists the segments of `dir` and prepares to read every complete event on disk from
    /// `from_sequence` on. For a log that is being written, use [`WalReader::open_durable`]
    /// (or [`crate::wal::Wal::replay_from`]): events not yet synced may be yielded here.
    pub fn open(dir: &Path, from_sequence: u64) -> Result<WalReader, WalError> {
        Self::open_with(dir, from_sequence, None, Arc::new(BufferedOpener))
    }

    /// Like [`WalReader::open`], but yields only events with `sequence <= durable_through`
    /// (the caller's knowledge of what is durable, e.g. [`crate::wal::Wal::durable_sequence`])
    /// and ends at the first event above it.
    pub fn open_durable(
        dir: &Path,
        from_sequence: u64,
        durable_through: u64,
    ) -> Result<WalReader, WalError> {
        Self::open_with(
            dir,
            from_sequence,
            Some(durable_through),
            Arc::new(BufferedOpener),
        )
    }

    /// The general form: an optional durable bound and the source of the segment bytes
    /// (tests inject read errors through it). [`WalReader::open`] and
    /// [`WalReader::open_durable`] read through the page cache ([`BufferedOpener`]); pass
    /// [`crate::io::read::OsOpener`] to read from the device instead.
    pub fn open_with(
        dir: &Path,
        from_sequence: u64,
        durable_through: Option<u64>,
        opener: SharedOpener,
    ) -> Result<WalReader, WalError> {
        let listed = list_segments(dir)?;
        let salt = directory_salt(&listed, &*opener)?;
        let newest_listed = listed.last().map(|(number, _)| *number);
        let mut segments: VecDeque<(u64, PathBuf)> = listed.into();
        // Skip whole segments that end before `from_sequence`: a segment can be skipped when
        // the next one's header says it starts at or below the wanted sequence.
        while segments.len() >= 2 {
            let next_first = first_sequence_of(&segments[1].1, &*opener);
            match next_first {
                Some(first) if first <= from_sequence => {
                    segments.pop_front();
                }
                _ => break,
            }
        }
        Ok(WalReader {
            segments,
            newest_listed,
            current: None,
            from_sequence,
            progress: Progress {
                durable_through,
                last_seen: None,
                watermark: 0,
                pending_damage: None,
                skipped_regions: 0,
                stopped: false,
            },
            salt,
            opener,
        })
    }

    /// Damaged regions skipped so far (corrupt or unreadable bytes known to be damage).
    pub fn skipped_regions(&self) -> u64 {
        self.progress.skipped_regions
    }

    /// Whether the reader ended early: at an event above its durable bound, or at a damaged
    /// region that may be a write in progress. A new reader from the next sequence continues.
    pub fn stopped_early(&self) -> bool {
        self.progress.stopped
    }

    fn open_next_segment(&mut self) -> Result<bool, WalError> {
        let Some((number, path)) = self.segments.pop_front() else {
            return Ok(false);
        };
        let mut file = match self.opener.open_segment(&path) {
            Ok(file) => file,
            // Deleted after listing: everything in it was acknowledged.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(error) => return Err(WalError::io("open segment for replay", &path, error)),
        };
        let layout = match header_of(&mut *file) {
            Ok(header) if header.segment_number == number => header.frame_layout(),
            Err(HeaderError::Blank) => {
                layout_for_damaged_header(number, &path, self.salt, true, &*self.opener)?
            }
            _ => layout_for_damaged_header(number, &path, self.salt, false, &*self.opener)?,
        };
        self.current = Some(Current {
            number,
            path,
            scan: SegmentScan::resilient(file, layout),
            newest: Some(number) == self.newest_listed,
            watermarks: matches!(layout, FrameLayout::V2(_)),
        });
        Ok(true)
    }

    /// The next event, handed to `look` as a view borrowing the read buffer; returns what
    /// `look` returns. The borrowing form of [`Iterator::next`]: nothing is allocated for the
    /// event unless `look` does (e.g. [`EntryView::to_entry`], which is what `next` calls).
    /// Events below the starting sequence are skipped without being copied.
    pub fn next_with<T>(
        &mut self,
        look: impl FnOnce(&EntryView<'_>) -> T,
    ) -> Result<Option<T>, WalError> {
        loop {
            if self.progress.stopped {
                return Ok(None);
            }
            if self.current.is_none() {
                if !self.open_next_segment()? {
                    return Ok(None);
                }
                continue;
            }
            let Some(current) = self.current.as_mut() else {
                continue;
            };
            let (newest, watermarks, number) = (current.newest, current.watermarks, current.number);
            let progress = &mut self.progress;
            match current.scan.next_ref() {
                Ok(None) => {
                    progress.judge_damage(None, newest, watermarks);
                    self.current = None;
                }
                Err(error) => {
                    let path = current.path.clone();
                    return Err(WalError::io("read segment for replay", path, error));
                }
                Ok(Some(ScanItem::Record {
                    record,
                    durable_watermark,
                    ..
                })) => {
                    progress.watermark = progress.watermark.max(durable_watermark);
                    let entry = match record {
                        RecordView::Event(entry) => entry,
                        RecordView::Watermark(watermark) => {
                            progress.watermark =
                                progress.watermark.max(watermark.durable_watermark);
                            continue;
                        }
                        RecordView::Checkpoint(_) => continue,
                    };
                    if progress
                        .last_seen
                        .is_some_and(|last| entry.sequence <= last)
                    {
                        continue; // Out of order: damage, as recovery reports it.
                    }
                    if progress
                        .durable_through
                        .is_some_and(|bound| entry.sequence > bound)
                    {
                        progress.stopped = true;
                        return Ok(None);
                    }
                    if !progress.judge_damage(Some(entry.sequence), newest, watermarks) {
                        return Ok(None);
                    }
                    progress.last_seen = Some(entry.sequence);
                    if entry.sequence >= self.from_sequence {
                        return Ok(Some(look(&entry)));
                    }
                }
                Ok(Some(ScanItem::Damage {
                    offset, len_bytes, ..
                })) => {
                    // Judged at the next event; two regions in a row are judged as one.
                    let pending = progress.pending_damage.get_or_insert(PendingDamage {
                        segment: number,
                        offset,
                        len_bytes: 0,
                    });
                    pending.len_bytes = offset + len_bytes - pending.offset;
                }
                Ok(Some(ScanItem::Unreadable { offset, len_bytes })) => {
                    tracing::warn!(
                        segment = number,
                        offset,
                        len_bytes,
                        "replay skipping unreadable WAL bytes"
                    );
                    progress.skipped_regions += 1;
                }
                Ok(Some(ScanItem::Tail { .. })) => {}
            }
        }
    }
}

impl Progress {
    /// Decides a pending damaged region on reaching the event `sequence` (None: the end of
    /// the segment). Returns false when reading must stop here.
    fn judge_damage(&mut self, sequence: Option<u64>, newest: bool, watermarks: bool) -> bool {
        let Some(damage) = self.pending_damage.take() else {
            return true;
        };
        let hidden_up_to = match sequence {
            Some(sequence) => sequence.saturating_sub(1),
            // Damage at the end of a segment: a later segment or the watermark tells.
            None => self.last_seen.unwrap_or(0),
        };
        let durable = match self.durable_through {
            Some(bound) => hidden_up_to <= bound,
            None => !newest || !watermarks || hidden_up_to <= self.watermark,
        };
        let real = durable && (sequence.is_some() || !newest);
        if real {
            tracing::warn!(
                segment = damage.segment,
                offset = damage.offset,
                len_bytes = damage.len_bytes,
                "replay skipping corrupt WAL bytes"
            );
            self.skipped_regions += 1;
            return true;
        }
        if sequence.is_some() {
            tracing::debug!(
                segment = damage.segment,
                offset = damage.offset,
                "replay stops at bytes that may still be being written"
            );
            self.stopped = true;
            return false;
        }
        true
    }
}

fn first_sequence_of(path: &Path, opener: &dyn SegmentOpener) -> Option<u64> {
    let mut file = opener.open_segment(path).ok()?;
    header_of(&mut *file)
        .ok()
        .map(|header| header.first_sequence)
}

fn header_of(file: &mut dyn ReadAt) -> Result<SegmentHeader, HeaderError> {
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    let read = read_fully(file, &mut block, 0).map_err(|_| HeaderError::Unreadable)?;
    SegmentHeader::decode(&block[..read])
}

impl Iterator for WalReader {
    type Item = Result<WalEntry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|entry| entry.to_entry()).transpose()
    }
}
