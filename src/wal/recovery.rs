//! Reading a whole WAL directory at open (and for `verify`/`stats`): which segments exist,
//! what each holds, where the damage is, how many events were lost, and where writing
//! resumes. Read-only: the decisions it returns are carried out by the writer.
//!
//! Decision table (docs/design.md, "Recovery"):
//! - header blank, no records, after the last written segment → prepared, unused segment;
//! - header damaged but records valid → records kept (their CRC seed is the number in the
//!   file name), header reported;
//! - header of a newer format version → open fails, nothing touched;
//! - invalid bytes followed by valid records → damage, skipped, counted;
//! - invalid bytes at the end of the last written segment → torn tail, cut before writing;
//! - a sequence gap → that many events lost, reported.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::WalError;
use super::format::{
    self, FORMAT_VERSION, FrameLayout, FrameProbe, FrameSeed, HeaderError, MAX_FRAME_BYTES, Record,
    SEGMENT_HEADER_BYTES, SegmentHeader,
};
use super::naming::parse_segment_file_name;
use super::scan::{ScanItem, SegmentScan};

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
    /// Invalid bytes after the last record of a sealed segment.
    DamagedEnd,
    /// Invalid bytes after the last record of the newest segment: an interrupted write,
    /// cut when the log is opened for writing. Not counted as loss.
    TornTail,
    /// A segment number is missing between two present segments.
    MissingSegment,
    /// A valid event whose sequence is not above the previous one (skipped).
    OutOfOrder,
    /// A valid record whose frame padding is not zero (the record is kept; nothing lost).
    NonzeroPadding,
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

/// Events known to be missing: valid events on both sides of a sequence gap.
#[derive(Debug, Clone, Serialize)]
pub struct SequenceGap {
    /// First missing sequence.
    pub first_missing: u64,
    /// How many are missing.
    pub count: u64,
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
    /// Sequence gaps between valid events (events lost to damage).
    pub gaps: Vec<SequenceGap>,
    /// Total events lost (sum of `gaps`).
    pub lost_events: u64,
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
    /// Whether no damage was found. A torn tail alone is clean: it is an interrupted write
    /// that was never acknowledged, and opening the log cuts it.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.gaps.is_empty()
    }

    /// Damaged regions skipped inside segments (corrupt or undecodable records).
    pub fn skipped_regions(&self) -> usize {
        self.damage
            .iter()
            .filter(|d| {
                matches!(
                    d.kind,
                    DamageKind::CorruptRecords | DamageKind::UndecodableRecord
                )
            })
            .count()
    }

    /// The last segment that holds anything (the one writing resumes in), by index.
    pub fn last_written_index(&self) -> Option<usize> {
        self.segments
            .iter()
            .rposition(|segment| !segment.is_blank())
    }
}

/// Lists the segment files of `dir`, sorted by number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("list WAL directory", dir, e))?;
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

/// Reads every segment of `dir` and reports; modifies nothing. Events are passed to
/// `on_event` in file order (sequence order for an undamaged log), so tools can stream them.
pub fn read_dir_with(
    dir: &Path,
    mut on_record: impl FnMut(u64, u64, &Record),
) -> Result<OpenReport, WalError> {
    let mut report = OpenReport::default();
    let mut expected_next: Option<u64> = None;
    let mut max_first_sequence = 0u64;
    let mut previous_number: Option<u64> = None;
    let segments = list_segments(dir)?;
    report.salt = directory_salt(&segments)?;
    for (number, path) in segments {
        if let Some(previous) = previous_number
            && number > previous + 1
        {
            report.damage.push(Damage {
                segment: previous + 1,
                offset: 0,
                len_bytes: 0,
                kind: DamageKind::MissingSegment,
            });
        }
        previous_number = Some(number);
        let segment = read_segment(
            number,
            &path,
            &mut report,
            &mut expected_next,
            &mut on_record,
        )?;
        if let Some(header) = &segment.header {
            max_first_sequence = max_first_sequence.max(header.first_sequence);
        }
        report.segments.push(segment);
    }
    classify_tails(&mut report);
    let highest = report
        .last_sequence
        .unwrap_or(0)
        .max(report.acked_through)
        .max(report.durable_watermark)
        .max(max_first_sequence.saturating_sub(1));
    report.next_sequence = highest + 1;
    Ok(report)
}

/// [`read_dir_with`] without a record callback.
pub fn read_dir(dir: &Path) -> Result<OpenReport, WalError> {
    read_dir_with(dir, |_, _, _| {})
}

fn read_segment(
    number: u64,
    path: &Path,
    report: &mut OpenReport,
    expected_next: &mut Option<u64>,
    on_record: &mut impl FnMut(u64, u64, &Record),
) -> Result<SegmentReport, WalError> {
    let read_err = |e: io::Error| WalError::io("read segment", path, e);
    let mut file = crate::io::open_for_read(path).map_err(read_err)?;
    let file_bytes = file.metadata().map_err(read_err)?.len();
    let mut header_block = vec![0u8; SEGMENT_HEADER_BYTES];
    let header_read = read_up_to(&mut file, &mut header_block).map_err(read_err)?;
    header_block.truncate(header_read);
    let (header, header_problem) = match SegmentHeader::decode(&header_block) {
        Ok(header) if header.segment_number == number => (Some(header), None),
        Ok(_) => (None, Some(HeaderError::BadChecksum)),
        Err(HeaderError::UnsupportedVersion(version)) => {
            return Err(WalError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        Err(problem) => (None, Some(problem)),
    };
    if let Some(header) = &header {
        if let Some(expected) = *expected_next
            && header.first_sequence > expected
        {
            push_gap(report, expected, header.first_sequence - expected);
        }
        *expected_next = Some(header.first_sequence);
    }
    let layout = match &header {
        Some(header) => header.frame_layout(),
        None => layout_for_damaged_header(number, path, report.salt)?,
    };
    let mut segment = SegmentReport {
        number,
        path: path.to_path_buf(),
        file_bytes,
        header,
        header_problem,
        first_sequence: None,
        last_sequence: None,
        events: 0,
        checkpoints: 0,
        record_bytes: 0,
        data_end: SEGMENT_HEADER_BYTES as u64,
        tail_nonzero_end: SEGMENT_HEADER_BYTES as u64,
    };
    file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))
        .map_err(read_err)?;
    for item in SegmentScan::new(file, layout) {
        match item.map_err(read_err)? {
            ScanItem::Record {
                offset,
                frame_bytes,
                record,
                durable_watermark,
                padding_is_zero,
            } => {
                report.durable_watermark = report.durable_watermark.max(durable_watermark);
                if let Record::Watermark(watermark) = &record {
                    report.durable_watermark =
                        report.durable_watermark.max(watermark.durable_watermark);
                }
                if !padding_is_zero {
                    report.damage.push(Damage {
                        segment: number,
                        offset,
                        len_bytes: frame_bytes,
                        kind: DamageKind::NonzeroPadding,
                    });
                }
                if let Record::Event(entry) = &record {
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
                    if let Some(expected) = *expected_next
                        && entry.sequence > expected
                    {
                        push_gap(report, expected, entry.sequence - expected);
                    }
                    *expected_next = Some(entry.sequence + 1);
                    segment.first_sequence.get_or_insert(entry.sequence);
                    segment.last_sequence = Some(entry.sequence);
                    segment.events += 1;
                    report.events += 1;
                    report.first_sequence.get_or_insert(entry.sequence);
                    report.last_sequence = Some(entry.sequence);
                } else if let Record::Checkpoint(checkpoint) = &record {
                    segment.checkpoints += 1;
                    report.checkpoints += 1;
                    if checkpoint.acked_through >= report.acked_through {
                        report.acked_through = checkpoint.acked_through;
                        report.checkpoint_segment = Some(number);
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
                let kind = if undecodable {
                    DamageKind::UndecodableRecord
                } else {
                    DamageKind::CorruptRecords
                };
                tracing::warn!(
                    segment = number,
                    offset,
                    len_bytes,
                    ?kind,
                    "skipping corrupt WAL bytes"
                );
                report.damage.push(Damage {
                    segment: number,
                    offset,
                    len_bytes,
                    kind,
                });
            }
            ScanItem::Tail {
                offset,
                nonzero_end,
            } => {
                segment.data_end = offset;
                segment.tail_nonzero_end = nonzero_end;
            }
        }
    }
    Ok(segment)
}

/// The WAL's salt: the newest valid version 2 header's (every header of one directory
/// carries the same salt, so one damaged header does not hide its segment's frames). When no
/// header is valid, a salt still readable in a damaged header block is accepted once a frame
/// at the start of its segment verifies with it.
pub(crate) fn directory_salt(segments: &[(u64, PathBuf)]) -> Result<Option<u64>, WalError> {
    let mut candidates: Vec<(u64, u64, &Path)> = Vec::new();
    for (number, path) in segments.iter().rev() {
        let Some(block) = read_header_block(path)? else {
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
        if first_frame_verifies(path, layout)? {
            return Ok(Some(salt));
        }
    }
    Ok(None)
}

/// The first block of a segment file (shorter if the file is); None if it vanished.
fn read_header_block(path: &Path) -> Result<Option<Vec<u8>>, WalError> {
    let mut file = match crate::io::open_for_read(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(WalError::io("read segment header", path, error)),
    };
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    let read = read_up_to(&mut file, &mut block)
        .map_err(|e| WalError::io("read segment header", path, e))?;
    block.truncate(read);
    Ok(Some(block))
}

/// Whether the frame right after the header block is valid when laid out as `layout`.
fn first_frame_verifies(path: &Path, layout: FrameLayout) -> Result<bool, WalError> {
    use std::os::unix::fs::FileExt;
    let file = match crate::io::open_for_read(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(WalError::io("read segment", path, error)),
    };
    let mut window = vec![0u8; MAX_FRAME_BYTES];
    let mut filled = 0;
    while filled < window.len() {
        match file.read_at(
            &mut window[filled..],
            (SEGMENT_HEADER_BYTES + filled) as u64,
        ) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // An unreadable first frame proves nothing either way.
            Err(_) => return Ok(false),
        }
    }
    Ok(matches!(
        format::probe_frame(&window[..filled], layout, true),
        FrameProbe::Valid { .. }
    ))
}

/// How to read the frames of a segment whose header is not valid: as version 2 with the
/// directory's salt, unless its first frame shows it is a version 1 segment.
pub(crate) fn layout_for_damaged_header(
    number: u64,
    path: &Path,
    salt: Option<u64>,
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
    if !first_frame_verifies(path, v2)? && first_frame_verifies(path, v1)? {
        return Ok(v1);
    }
    Ok(v2)
}

fn push_gap(report: &mut OpenReport, first_missing: u64, count: u64) {
    report.gaps.push(SequenceGap {
        first_missing,
        count,
    });
    report.lost_events += count;
}

/// Header problems and non-zero tails become damage entries, except the torn tail of the last
/// written segment (an interrupted write) and blank segments after it (prepared, unused).
fn classify_tails(report: &mut OpenReport) {
    let last_written = report.last_written_index();
    for (index, segment) in report.segments.iter().enumerate() {
        let trailing_blank = last_written.is_none_or(|last| index > last) && segment.is_blank();
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
        if Some(index) == last_written {
            tracing::info!(
                segment = segment.number,
                offset = segment.data_end,
                len_bytes = garbage,
                "torn tail after the last WAL record (an interrupted write)"
            );
            report.torn_tail_bytes = garbage;
        } else {
            tracing::warn!(
                segment = segment.number,
                offset = segment.data_end,
                "damaged end of a sealed WAL segment"
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

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
