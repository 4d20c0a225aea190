//! Reading a whole WAL directory at open (and for `verify`/`stats`): which segments exist,
//! what each holds, where the damage is, which events were lost (and which of those had been
//! acknowledged as durable), and where writing resumes. Read-only: the decisions it returns
//! are carried out by the writer; it must never modify a file.
//!
//! Decision table (normative text: `docs/format.md`, "Reading"):
//! - header blank, no records, after the last written segment → prepared, unused segment;
//! - header valid but naming a lower number of this log, no records, after the last written
//!   segment → renamed for recycling, never written: unused (removed at open);
//! - header flagged recycled → the bytes from the first block boundary at or after the data
//!   end are left over from the file's earlier use: not read, not damage;
//! - header damaged but records valid → records kept (their CRC seed is the number in the
//!   file name and the directory's salt), header reported;
//! - header of a newer format version → open fails, nothing touched;
//! - invalid bytes followed by valid records → damage, skipped, counted;
//! - an unreadable block → damage, read as zeros, the scan goes on;
//! - invalid bytes in the newest segment after which no sequence at or below the durable
//!   watermark is missing (version 2), or after its last valid record (version 1) → torn
//!   tail: no acknowledged sequence is missing behind it, cut before writing;
//! - any sequence at or below the durable watermark that is not found → lost acknowledged
//!   events, reported; `next_sequence` never goes below the watermark + 1.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::WalError;
use super::format::{
    self, FORMAT_VERSION, FrameLayout, FrameProbe, FrameSeed, HeaderError, MAX_FRAME_BYTES, Record,
    RecordView, SEGMENT_HEADER_BYTES, SegmentHeader,
};
use super::naming::parse_segment_file_name;
use super::recycle;
use super::scan::{ScanItem, SegmentScan};
use crate::io::read::{OsOpener, ReadAt, SegmentOpener, read_resilient};

/// What one segment holds.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    /// Its number.
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
    /// Size of the file.
    pub file_bytes: u64,
    /// The decoded header, if valid.
    #[serde(skip)]
    pub header: Option<SegmentHeader>,
    /// Why the header was not accepted (`Blank` for a prepared segment).
    #[serde(serialize_with = "serialize_header_problem")]
    pub header_problem: Option<HeaderError>,
    /// Format version its frames were read as (1 or 2).
    pub frame_version: u32,
    /// How its frames were read (version, segment number and salt of the CRC).
    #[serde(skip)]
    pub frame_layout: FrameLayout,
    /// Sequence of the first valid event.
    pub first_sequence: Option<u64>,
    /// Sequence of the last valid event.
    pub last_sequence: Option<u64>,
    /// Valid events.
    pub events: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// Bytes of valid frames.
    pub record_bytes: u64,
    /// Offset where the records end (where the next write goes).
    pub data_end: u64,
    /// End of non-zero bytes after `data_end` (== `data_end` for a clean end).
    pub tail_nonzero_end: u64,
    /// Bytes that could not be read (I/O errors), scanned as zeros.
    pub unreadable_bytes: u64,
    /// Its valid header carries the recycled flag: the bytes from the first block boundary
    /// at or after `data_end` are left over from the file's earlier use (docs/format.md
    /// §7.8) and were not read as part of it.
    pub recycled: bool,
    /// Its header is valid but names this lower segment number of the same log: the file was
    /// renamed for recycling and its new header never reached the disk.
    pub stale_header_number: Option<u64>,
}

fn serialize_header_problem<S: serde::Serializer>(
    problem: &Option<HeaderError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match problem {
        Some(problem) => serializer.serialize_some(&problem.to_string()),
        None => serializer.serialize_none(),
    }
}

impl SegmentReport {
    /// A segment that was prepared ahead of time and never written.
    pub fn is_blank(&self) -> bool {
        self.header_problem == Some(HeaderError::Blank)
            && self.events == 0
            && self.checkpoints == 0
            && self.tail_nonzero_end == self.data_end
            && self.unreadable_bytes == 0
    }

    /// A segment renamed for recycling whose new header never reached the disk and that holds
    /// no record of its new number: unused (docs/format.md §7.8). Its bytes are the earlier
    /// segment's, all acknowledged before the rename.
    pub fn is_unused_recycled(&self) -> bool {
        self.stale_header_number.is_some()
            && self.events == 0
            && self.checkpoints == 0
            && self.unreadable_bytes == 0
    }

    /// Blank, or recycled and unused: holds nothing of its own.
    pub fn holds_nothing(&self) -> bool {
        self.is_blank() || self.is_unused_recycled()
    }
}

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// Bytes that are not valid frames, followed by valid frames (skipped).
    CorruptRecords,
    /// A frame whose CRC holds but whose payload does not decode (skipped).
    UndecodableRecord,
    /// The segment header is invalid (records were still read).
    BadHeader,
    /// Invalid bytes after the last record of a sealed segment, or of the newest segment
    /// when acknowledged sequences are missing there.
    DamagedEnd,
    /// Invalid bytes at the end of the newest segment that hide no acknowledged sequence:
    /// cut when the log is opened for writing. Not counted as loss (reported as
    /// [`OpenReport::torn_tail_bytes`], not as a damage entry).
    TornTail,
    /// A segment number is missing between two present segments.
    MissingSegment,
    /// A valid event whose sequence is not above the previous one (skipped).
    OutOfOrder,
    /// A valid record whose frame padding is not zero (the record is kept; nothing lost).
    NonzeroPadding,
    /// Bytes that could not be read (an I/O error even when read block by block).
    UnreadableBlock,
}

/// One damaged place.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment file.
    pub offset: u64,
    /// Bytes affected.
    pub len_bytes: u64,
    /// What it is.
    pub kind: DamageKind,
}

/// Events known to be missing.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceGap {
    /// First missing sequence.
    pub first_missing: u64,
    /// How many are missing.
    pub count: u64,
    /// How many of them (from `first_missing` on) are at or below the durable watermark, so
    /// were acknowledged to their callers as durable.
    pub acknowledged: u64,
}

/// The result of reading a WAL directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenReport {
    /// Every segment, in number order.
    pub segments: Vec<SegmentReport>,
    /// Valid events.
    pub events: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// Bytes of valid frames.
    pub record_bytes: u64,
    /// Every damaged place, in order.
    pub damage: Vec<Damage>,
    /// Sequences known to be missing (events lost to damage).
    pub gaps: Vec<SequenceGap>,
    /// Total events lost (sum of `gaps`).
    pub lost_events: u64,
    /// Of those, events that had been acknowledged as durable.
    pub lost_acknowledged_events: u64,
    /// Torn bytes at the end of the newest segment (cut when opened for writing).
    pub torn_tail_bytes: u64,
    /// Lowest valid event sequence.
    pub first_sequence: Option<u64>,
    /// Highest valid event sequence.
    pub last_sequence: Option<u64>,
    /// Newest checkpoint: highest sequence acknowledged by the broker (0: none).
    pub acked_through: u64,
    /// The segment holding that checkpoint (None: no checkpoint).
    pub checkpoint_segment: Option<u64>,
    /// Sequence the next appended event gets.
    pub next_sequence: u64,
    /// The WAL's salt, from a valid version 2 segment header (None: no such header).
    pub salt: Option<u64>,
    /// Highest durable watermark in any valid frame: every sequence up to it was
    /// acknowledged to a caller as durable (0: none known).
    pub durable_watermark: u64,
}

impl OpenReport {
    /// Whether no damage was found. A torn tail alone is clean: the bytes after the last
    /// valid record hide no sequence that was acknowledged, and opening the log cuts them.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.gaps.is_empty()
    }

    /// Damaged regions skipped inside segments (corrupt, undecodable or unreadable).
    pub fn skipped_regions(&self) -> usize {
        self.damage
            .iter()
            .filter(|d| {
                matches!(
                    d.kind,
                    DamageKind::CorruptRecords
                        | DamageKind::UndecodableRecord
                        | DamageKind::UnreadableBlock
                )
            })
            .count()
    }

    /// The last segment that holds anything (the one writing resumes in), by index.
    pub fn last_written_index(&self) -> Option<usize> {
        self.segments
            .iter()
            .rposition(|segment| !segment.holds_nothing())
    }
}

/// Lists the segment files of `dir`, sorted by number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("list WAL directory", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list WAL directory", dir, e))?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((number, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|&(number, _)| number);
    Ok(segments)
}

/// Reads every segment of `dir` and reports; modifies nothing. Records are passed to
/// `on_record` in file order (sequence order for an undamaged log), so tools can stream them.
pub fn read_dir_with(
    dir: &Path,
    on_record: impl FnMut(u64, u64, &Record),
) -> Result<OpenReport, WalError> {
    read_dir_from(dir, &OsOpener, on_record)
}

/// [`read_dir_with`] without a record callback: records are only looked at, never copied.
pub fn read_dir(dir: &Path) -> Result<OpenReport, WalError> {
    read_dir_views(dir, &OsOpener, |_, _, _| {})
}

/// [`read_dir_with`], reading the segment files through `opener` (tests inject read errors
/// here; [`OsOpener`] reads with O_DIRECT where the filesystem allows it).
pub fn read_dir_from(
    dir: &Path,
    opener: &dyn SegmentOpener,
    mut on_record: impl FnMut(u64, u64, &Record),
) -> Result<OpenReport, WalError> {
    read_dir_views(dir, opener, |segment, offset, view| {
        on_record(segment, offset, &view.to_record())
    })
}

/// [`read_dir_from`] with the records handed over as views of the read buffer.
fn read_dir_views(
    dir: &Path,
    opener: &dyn SegmentOpener,
    mut on_record: impl FnMut(u64, u64, &RecordView<'_>),
) -> Result<OpenReport, WalError> {
    let segments = list_segments(dir)?;
    let mut state = ReadState {
        report: OpenReport {
            salt: directory_salt(&segments, opener)?,
            ..OpenReport::default()
        },
        expected_next: None,
        marks: Vec::new(),
    };
    let mut max_first_sequence = 0u64;
    let mut previous_number: Option<u64> = None;
    let mut newest_marks: Vec<Mark> = Vec::new();
    for (number, path) in segments {
        state.marks.clear();
        let Some(segment) = read_segment(number, &path, opener, &mut state, &mut on_record)? else {
            // Deleted since it was listed (a running writer deletes acknowledged segments,
            // oldest first): nothing of it is needed.
            continue;
        };
        if let Some(previous) = previous_number
            && number > previous + 1
        {
            state.report.damage.push(Damage {
                segment: previous + 1,
                offset: 0,
                len_bytes: 0,
                kind: DamageKind::MissingSegment,
            });
        }
        previous_number = Some(number);
        if let Some(header) = &segment.header {
            max_first_sequence = max_first_sequence.max(header.first_sequence);
        }
        if !segment.holds_nothing() {
            newest_marks = std::mem::take(&mut state.marks);
        }
        state.report.segments.push(segment);
    }
    let ReadState {
        mut report,
        expected_next,
        ..
    } = state;
    let mut torn_cut = cut_torn_suffix(&mut report, &newest_marks);
    if torn_cut.is_some_and(|mark| mark.offset >= mark.scanned_data_end)
        && tail_is_a_corrupted_frame(&report, opener)?
    {
        torn_cut = None;
    }
    // Acknowledged sequences past the last one found are lost, whatever the bytes look like.
    let last_found = report
        .last_sequence
        .unwrap_or(0)
        .max(expected_next.unwrap_or(1).saturating_sub(1));
    let last_found = match torn_cut {
        Some(mark) => mark.last_found,
        None => last_found,
    };
    let watermark = report.durable_watermark;
    if watermark > last_found {
        push_gap(&mut report, last_found + 1, watermark - last_found);
    }
    classify_tails(&mut report, torn_cut.is_some());
    for damage in &report.damage {
        if matches!(
            damage.kind,
            DamageKind::CorruptRecords | DamageKind::UndecodableRecord
        ) {
            tracing::warn!(
                segment = damage.segment,
                offset = damage.offset,
                len_bytes = damage.len_bytes,
                kind = ?damage.kind,
                "skipping corrupt WAL bytes"
            );
        }
    }
    for gap in &mut report.gaps {
        gap.acknowledged = report
            .durable_watermark
            .saturating_add(1)
            .saturating_sub(gap.first_missing)
            .min(gap.count);
    }
    report.lost_acknowledged_events = report.gaps.iter().map(|gap| gap.acknowledged).sum();
    let highest = report
        .last_sequence
        .unwrap_or(0)
        .max(report.acked_through)
        .max(report.durable_watermark)
        .max(max_first_sequence.saturating_sub(1));
    report.next_sequence = highest + 1;
    Ok(report)
}

/// Counters while reading, and the marks of the current segment.
struct ReadState {
    report: OpenReport,
    /// The next sequence expected (unknown before the first header or event).
    expected_next: Option<u64>,
    /// The start of each damaged region of the segment being read, with the counters before
    /// it, so a torn suffix can be taken back out of the totals.
    marks: Vec<Mark>,
}

/// The state of the report just before a damaged region of a version 2 segment (or the
/// invalid bytes after its records), so that everything from there on can be declared a torn
/// tail once the durable watermark of the whole directory is known.
#[derive(Debug, Clone, Copy)]
struct Mark {
    offset: u64,
    /// Highest sequence accounted for before the mark (found, or before the segment's first).
    last_found: u64,
    events: u64,
    checkpoints: u64,
    record_bytes: u64,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
    acked_through: u64,
    checkpoint_segment: Option<u64>,
    gaps: usize,
    lost_events: u64,
    damage: usize,
    segment_first_sequence: Option<u64>,
    segment_last_sequence: Option<u64>,
    segment_events: u64,
    segment_checkpoints: u64,
    segment_record_bytes: u64,
    /// End of the records (data end) of the segment as scanned, filled in at its end.
    scanned_data_end: u64,
}

impl Mark {
    fn take(
        offset: u64,
        report: &OpenReport,
        expected_next: Option<u64>,
        segment: &SegmentReport,
    ) -> Mark {
        Mark {
            offset,
            last_found: report
                .last_sequence
                .unwrap_or(0)
                .max(expected_next.unwrap_or(1).saturating_sub(1)),
            events: report.events,
            checkpoints: report.checkpoints,
            record_bytes: report.record_bytes,
            first_sequence: report.first_sequence,
            last_sequence: report.last_sequence,
            acked_through: report.acked_through,
            checkpoint_segment: report.checkpoint_segment,
            gaps: report.gaps.len(),
            lost_events: report.lost_events,
            damage: report.damage.len(),
            segment_first_sequence: segment.first_sequence,
            segment_last_sequence: segment.last_sequence,
            segment_events: segment.events,
            segment_checkpoints: segment.checkpoints,
            segment_record_bytes: segment.record_bytes,
            scanned_data_end: 0,
        }
    }
}

/// In the newest written segment (version 2), finds the first damaged place after which no
/// sequence at or below the durable watermark is missing: from there on the bytes are the
/// torn end of writes that hide no acknowledged sequence. Takes everything read from there on back
/// out of the report (it is cut by the next open) and returns the mark.
fn cut_torn_suffix(report: &mut OpenReport, marks: &[Mark]) -> Option<Mark> {
    let watermark = report.durable_watermark;
    let mark = *marks.iter().find(|mark| mark.last_found >= watermark)?;
    let index = report.last_written_index()?;
    let scanned_data_end = marks.last().map_or(0, |last| last.scanned_data_end);
    if mark.offset >= scanned_data_end {
        // Only the bytes after the last record: the plain torn tail, nothing to take back.
        return Some(mark);
    }
    let number = report.segments[index].number;
    // Damage found after the cut is part of the torn tail, except what no write can cause.
    let kept_after: Vec<Damage> = report.damage[mark.damage..]
        .iter()
        .filter(|d| d.segment != number || d.kind == DamageKind::UnreadableBlock)
        .cloned()
        .collect();
    report.damage.truncate(mark.damage);
    report.damage.extend(kept_after);
    report.gaps.truncate(mark.gaps);
    report.lost_events = mark.lost_events;
    report.events = mark.events;
    report.checkpoints = mark.checkpoints;
    report.record_bytes = mark.record_bytes;
    report.first_sequence = mark.first_sequence;
    report.last_sequence = mark.last_sequence;
    report.acked_through = mark.acked_through;
    report.checkpoint_segment = mark.checkpoint_segment;
    let segment = &mut report.segments[index];
    segment.first_sequence = mark.segment_first_sequence;
    segment.last_sequence = mark.segment_last_sequence;
    segment.events = mark.segment_events;
    segment.checkpoints = mark.segment_checkpoints;
    segment.record_bytes = mark.segment_record_bytes;
    segment.tail_nonzero_end = segment.tail_nonzero_end.max(segment.data_end);
    segment.data_end = mark.offset;
    tracing::info!(
        segment = number,
        offset = mark.offset,
        durable_watermark = watermark,
        "the end of the newest WAL segment from here on hides no acknowledged sequence (torn tail)"
    );
    Some(mark)
}

/// Whether the invalid bytes after the records of the newest segment are a complete frame
/// with one changed byte (see [`format::corrupted_by_one_byte`]): damage, not a torn write,
/// although no sequence is known to be missing (the frame may be the closing watermark).
fn tail_is_a_corrupted_frame(
    report: &OpenReport,
    opener: &dyn SegmentOpener,
) -> Result<bool, WalError> {
    let Some(segment) = report
        .last_written_index()
        .map(|index| &report.segments[index])
    else {
        return Ok(false);
    };
    let len = segment.tail_nonzero_end - segment.data_end;
    if len == 0 || len > format::SECTOR_BYTES as u64 {
        return Ok(false);
    }
    let read_err = |e: io::Error| WalError::io("read segment tail", &segment.path, e);
    let mut file = opener.open_segment(&segment.path).map_err(read_err)?;
    let mut region = vec![0u8; len as usize];
    let read = read_resilient(&mut *file, &mut region, segment.data_end).map_err(read_err)?;
    if !read.unreadable.is_empty() {
        return Ok(false);
    }
    region.truncate(read.bytes);
    Ok(format::corrupted_by_one_byte(
        &region,
        segment.data_end,
        segment.frame_layout,
    ))
}

fn read_segment(
    number: u64,
    path: &Path,
    opener: &dyn SegmentOpener,
    state: &mut ReadState,
    on_record: &mut impl FnMut(u64, u64, &RecordView<'_>),
) -> Result<Option<SegmentReport>, WalError> {
    let read_err = |e: io::Error| WalError::io("read segment", path, e);
    let mut file = match opener.open_segment(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_err(error)),
    };
    let file_bytes = file.len_bytes().map_err(read_err)?;
    let mut header_block = vec![0u8; SEGMENT_HEADER_BYTES];
    let header_read = read_resilient(&mut *file, &mut header_block, 0).map_err(read_err)?;
    header_block.truncate(header_read.bytes);
    let header_unreadable = !header_read.unreadable.is_empty();
    let mut stale_header_number = None;
    let (header, header_problem) = match SegmentHeader::decode(&header_block) {
        _ if header_unreadable => (None, Some(HeaderError::Unreadable)),
        Ok(header) if header.segment_number == number => (Some(header), None),
        Ok(header) => {
            if recycle::is_stale_header(&header, number, state.report.salt) {
                stale_header_number = Some(header.segment_number);
            }
            (None, Some(HeaderError::BadChecksum))
        }
        Err(HeaderError::UnsupportedVersion(version)) => {
            return Err(WalError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        Err(problem) => (None, Some(problem)),
    };
    let report = &mut state.report;
    for (offset, len_bytes) in header_read.unreadable {
        report.damage.push(Damage {
            segment: number,
            offset,
            len_bytes,
            kind: DamageKind::UnreadableBlock,
        });
    }
    if let Some(header) = &header {
        if let Some(expected) = state.expected_next
            && header.first_sequence > expected
        {
            push_gap(report, expected, header.first_sequence - expected);
        }
        state.expected_next = Some(header.first_sequence);
    }
    let layout = match &header {
        Some(header) => header.frame_layout(),
        None => layout_for_damaged_header(
            number,
            path,
            report.salt,
            header_problem == Some(HeaderError::Blank),
            opener,
        )?,
    };
    let mut segment = SegmentReport {
        number,
        path: path.to_path_buf(),
        file_bytes,
        header,
        header_problem,
        frame_version: match layout {
            FrameLayout::V1 { .. } => format::FORMAT_VERSION_1,
            FrameLayout::V2(_) => FORMAT_VERSION,
        },
        frame_layout: layout,
        first_sequence: None,
        last_sequence: None,
        events: 0,
        checkpoints: 0,
        record_bytes: 0,
        data_end: SEGMENT_HEADER_BYTES as u64,
        tail_nonzero_end: SEGMENT_HEADER_BYTES as u64,
        unreadable_bytes: header_unreadable as u64 * SEGMENT_HEADER_BYTES as u64,
        recycled: header
            .as_ref()
            .is_some_and(|header| recycle::is_marked_recycled(&header_block, header)),
        stale_header_number,
    };
    let watermarks = matches!(layout, FrameLayout::V2(_));
    let mut scan = SegmentScan::resilient(file, layout);
    while let Some(item) = scan.next_ref().map_err(read_err)? {
        let report = &mut state.report;
        match item {
            ScanItem::Record {
                offset,
                frame_bytes,
                record,
                durable_watermark,
                padding_is_zero,
            } => {
                report.durable_watermark = report.durable_watermark.max(durable_watermark);
                if !padding_is_zero {
                    tracing::warn!(segment = number, offset, "nonzero WAL frame padding");
                    report.damage.push(Damage {
                        segment: number,
                        offset,
                        len_bytes: frame_bytes,
                        kind: DamageKind::NonzeroPadding,
                    });
                }
                match &record {
                    RecordView::Event(entry) => {
                        if report
                            .last_sequence
                            .is_some_and(|last| entry.sequence <= last)
                        {
                            report.damage.push(Damage {
                                segment: number,
                                offset,
                                len_bytes: frame_bytes,
                                kind: DamageKind::OutOfOrder,
                            });
                            continue;
                        }
                        if let Some(expected) = state.expected_next
                            && entry.sequence > expected
                        {
                            push_gap(report, expected, entry.sequence - expected);
                        }
                        state.expected_next = Some(entry.sequence + 1);
                        segment.first_sequence.get_or_insert(entry.sequence);
                        segment.last_sequence = Some(entry.sequence);
                        segment.events += 1;
                        report.events += 1;
                        report.first_sequence.get_or_insert(entry.sequence);
                        report.last_sequence = Some(entry.sequence);
                    }
                    RecordView::Checkpoint(checkpoint) => {
                        segment.checkpoints += 1;
                        report.checkpoints += 1;
                        if checkpoint.acked_through >= report.acked_through {
                            report.acked_through = checkpoint.acked_through;
                            report.checkpoint_segment = Some(number);
                        }
                    }
                    RecordView::Watermark(watermark) => {
                        report.durable_watermark =
                            report.durable_watermark.max(watermark.durable_watermark);
                    }
                }
                segment.record_bytes += frame_bytes;
                report.record_bytes += frame_bytes;
                on_record(number, offset, &record);
            }
            ScanItem::Damage {
                offset,
                len_bytes,
                undecodable,
            } => {
                if watermarks {
                    state
                        .marks
                        .push(Mark::take(offset, report, state.expected_next, &segment));
                }
                let kind = if undecodable {
                    DamageKind::UndecodableRecord
                } else {
                    DamageKind::CorruptRecords
                };
                // Warned about once the directory is read: a torn tail found later takes
                // this entry back, and its bytes are not damage.
                report.damage.push(Damage {
                    segment: number,
                    offset,
                    len_bytes,
                    kind,
                });
            }
            ScanItem::Unreadable { offset, len_bytes } => {
                segment.unreadable_bytes += len_bytes;
                report.damage.push(Damage {
                    segment: number,
                    offset,
                    len_bytes,
                    kind: DamageKind::UnreadableBlock,
                });
            }
            ScanItem::Tail {
                offset,
                nonzero_end,
            } => {
                segment.data_end = offset;
                segment.tail_nonzero_end = nonzero_end;
                if segment.recycled {
                    segment.tail_nonzero_end =
                        recycled_nonzero_end(path, opener, offset, nonzero_end)?;
                }
                // The bytes after the records are a candidate torn tail too (in version 1,
                // the only one: its frames carry no watermark).
                let mut mark = Mark::take(offset, report, state.expected_next, &segment);
                if !watermarks {
                    state.marks.clear();
                    mark.last_found = u64::MAX;
                }
                state.marks.push(mark);
                for mark in &mut state.marks {
                    mark.scanned_data_end = offset;
                }
            }
        }
    }
    Ok(Some(segment))
}

/// The end of the non-zero bytes after the data end of a recycled segment that belong to it:
/// only those before the first block boundary at or after the data end; from there on the
/// bytes are left over from the file's earlier use (docs/format.md §7.8).
fn recycled_nonzero_end(
    path: &Path,
    opener: &dyn SegmentOpener,
    data_end: u64,
    nonzero_end: u64,
) -> Result<u64, WalError> {
    let leftover = recycle::leftover_start(data_end);
    if nonzero_end <= leftover {
        return Ok(nonzero_end);
    }
    let read_err = |e: io::Error| WalError::io("read segment tail", path, e);
    let mut file = opener.open_segment(path).map_err(read_err)?;
    let mut region = vec![0u8; (leftover - data_end) as usize];
    let read = read_resilient(&mut *file, &mut region, data_end).map_err(read_err)?;
    region.truncate(read.bytes);
    // An unreadable block would have been reported by the scan already; read as zeros here.
    Ok(recycle::nonzero_end(&region, data_end))
}

/// The WAL's salt: the newest valid version 2 header's (every header of one directory
/// carries the same salt, so one damaged header does not hide its segment's frames). When no
/// header is valid, a salt still readable in a damaged header block is accepted once a frame
/// at the start of its segment verifies with it.
pub(crate) fn directory_salt(
    segments: &[(u64, PathBuf)],
    opener: &dyn SegmentOpener,
) -> Result<Option<u64>, WalError> {
    let mut candidates: Vec<(u64, u64, &Path)> = Vec::new();
    for (number, path) in segments.iter().rev() {
        let Some(block) = read_header_block(path, opener)? else {
            continue;
        };
        match SegmentHeader::decode(&block) {
            Ok(header) if header.segment_number == *number => {
                if header.version == FORMAT_VERSION {
                    return Ok(Some(header.salt));
                }
            }
            Err(HeaderError::Blank) => {}
            _ => {
                for salt in SegmentHeader::salt_candidates(&block) {
                    candidates.push((salt, *number, path));
                }
            }
        }
    }
    for (salt, number, path) in candidates {
        let layout = FrameLayout::V2(FrameSeed {
            segment_number: number,
            salt,
        });
        if first_frame_verifies(path, layout, opener)? {
            return Ok(Some(salt));
        }
    }
    Ok(None)
}

/// The first block of a segment file (shorter if the file is; unreadable parts as zeros);
/// None if the file vanished.
fn read_header_block(path: &Path, opener: &dyn SegmentOpener) -> Result<Option<Vec<u8>>, WalError> {
    let mut file = match opener.open_segment(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(WalError::io("read segment header", path, error)),
    };
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    let read = read_resilient(&mut *file, &mut block, 0)
        .map_err(|e| WalError::io("read segment header", path, e))?;
    block.truncate(read.bytes);
    Ok(Some(block))
}

/// Whether the frame right after the header block is valid when laid out as `layout`.
fn first_frame_verifies(
    path: &Path,
    layout: FrameLayout,
    opener: &dyn SegmentOpener,
) -> Result<bool, WalError> {
    let mut file = match opener.open_segment(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(WalError::io("read segment", path, error)),
    };
    let mut window = vec![0u8; MAX_FRAME_BYTES];
    let read = read_resilient(&mut *file, &mut window, SEGMENT_HEADER_BYTES as u64)
        .map_err(|e| WalError::io("read segment", path, e))?;
    Ok(matches!(
        format::probe_frame(&window[..read.bytes], layout, true),
        FrameProbe::Valid { .. }
    ))
}

/// How to read the frames of a segment whose header is not valid: as version 2 with the
/// directory's salt, unless its first frame shows it is a version 1 segment. A `blank`
/// header (all zeros) needs no such check.
pub(crate) fn layout_for_damaged_header(
    number: u64,
    path: &Path,
    salt: Option<u64>,
    blank: bool,
    opener: &dyn SegmentOpener,
) -> Result<FrameLayout, WalError> {
    let v1 = FrameLayout::V1 {
        segment_number: number,
    };
    let Some(salt) = salt else {
        return Ok(v1);
    };
    let v2 = FrameLayout::V2(FrameSeed {
        segment_number: number,
        salt,
    });
    if blank {
        // Prepared and never written (or holding only what a torn first write left): new
        // segments are version 2.
        return Ok(v2);
    }
    if !first_frame_verifies(path, v2, opener)? && first_frame_verifies(path, v1, opener)? {
        return Ok(v1);
    }
    Ok(v2)
}

fn push_gap(report: &mut OpenReport, first_missing: u64, count: u64) {
    report.gaps.push(SequenceGap {
        first_missing,
        count,
        acknowledged: 0,
    });
    report.lost_events += count;
}

/// Header problems and non-zero tails become damage entries, except the torn tail of the last
/// written segment and blank segments after it (prepared, unused). `torn` says whether the
/// newest segment's end was found to be a torn tail.
fn classify_tails(report: &mut OpenReport, torn: bool) {
    let last_written = report.last_written_index();
    for (index, segment) in report.segments.iter().enumerate() {
        let trailing_blank =
            last_written.is_none_or(|last| index > last) && segment.holds_nothing();
        if trailing_blank {
            continue;
        }
        if let Some(problem) = segment.header_problem {
            tracing::warn!(segment = segment.number, %problem, "WAL segment header damaged");
            report.damage.push(Damage {
                segment: segment.number,
                offset: 0,
                len_bytes: SEGMENT_HEADER_BYTES as u64,
                kind: DamageKind::BadHeader,
            });
        }
        let garbage = segment.tail_nonzero_end - segment.data_end;
        if garbage == 0 {
            continue;
        }
        if Some(index) == last_written && torn {
            tracing::info!(
                segment = segment.number,
                offset = segment.data_end,
                len_bytes = garbage,
                "torn tail after the last WAL record (hides no acknowledged sequence)"
            );
            report.torn_tail_bytes = garbage;
        } else {
            tracing::warn!(
                segment = segment.number,
                offset = segment.data_end,
                "damaged end of a WAL segment"
            );
            report.damage.push(Damage {
                segment: segment.number,
                offset: segment.data_end,
                len_bytes: garbage,
                kind: DamageKind::DamagedEnd,
            });
        }
    }
    report
        .damage
        .sort_by_key(|damage| (damage.segment, damage.offset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_what_the_watermark_covers() {
        let mut report = OpenReport {
            durable_watermark: 12,
            ..OpenReport::default()
        };
        push_gap(&mut report, 10, 5);
        let gap = &mut report.gaps[0];
        gap.acknowledged = report
            .durable_watermark
            .saturating_add(1)
            .saturating_sub(gap.first_missing)
            .min(gap.count);
        assert_eq!(gap.acknowledged, 3);
    }
}
