//! Streaming scan of one segment's records with bounded memory: yields valid records in file
//! order, reports each damaged region it steps over and each unreadable block, and ends with
//! the segment's tail. It decides what bytes *are*, never what they mean for the log (that is
//! recovery's job), and never modifies anything.
//!
//! Cost per record: the scan itself allocates nothing. [`SegmentScan::next_ref`] yields each
//! record as a [`RecordView`] borrowing the read buffer (CRC and a complete check of the
//! payload, no copy); the [`Iterator`] implementation builds the owned [`Record`] from it for
//! callers that keep records. Reads are large and sequential into one reused, block-aligned
//! buffer whose file offset stays block-aligned, so O_DIRECT reads land in it directly.
//!
//! Damage rule (docs/format.md, "Reading"): at a position that is not a valid frame, the scanner
//! tries every following 8-byte-aligned position; the bytes up to the next valid frame are one
//! damaged region, and if no valid frame follows, they are the tail. It never trusts a length
//! word it has not verified, so memory stays within one read chunk plus one maximal frame.
//! Blocks that cannot be read are reported and scanned as zeros.
//!
//! Group padding rule (docs/format.md, "Group padding"): zeros running from the end of a
//! valid frame exactly up to the next 4096-byte boundary, where a decodable frame starts, are
//! the padding a fresh-block group leaves, not damage, unless that frame is an event whose
//! sequence skips past the segment's previous event (then the zeros hid a frame and are
//! reported as a damaged region, as they always were).

use std::collections::VecDeque;
use std::io::{self, Read};

use super::format::{
    self, BLOCK_BYTES, FRAME_ALIGN_BYTES, FrameLayout, FrameProbe, Record, RecordKind, RecordView,
    SEGMENT_HEADER_BYTES,
};
use crate::io::AlignedBuf;
use crate::io::read::{ReadAt, read_resilient};

/// Where a scan gets the bytes of a segment from (after its header block).
pub trait ScanSource {
    /// Reads into `buf` the bytes at file offset `offset` on; returns how many (0: the end of
    /// the file). Ranges that could not be read are zero-filled and pushed to `unreadable`.
    fn read_more(
        &mut self,
        buf: &mut [u8],
        offset: u64,
        unreadable: &mut VecDeque<(u64, u64)>,
    ) -> io::Result<usize>;
}

/// A sequential reader positioned at the first record (offset 4096); a read error ends the
/// scan with that error.
#[derive(Debug)]
pub struct Sequential<R>(pub R);

impl<R: Read> ScanSource for Sequential<R> {
    fn read_more(
        &mut self,
        buf: &mut [u8],
        _offset: u64,
        _unreadable: &mut VecDeque<(u64, u64)>,
    ) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// A positional source read with [`read_resilient`]: unreadable blocks become zeros plus a
/// report instead of an error.
#[derive(Debug)]
pub struct Resilient<S>(pub S);

impl<S: ReadAt> ScanSource for Resilient<S> {
    fn read_more(
        &mut self,
        buf: &mut [u8],
        offset: u64,
        unreadable: &mut VecDeque<(u64, u64)>,
    ) -> io::Result<usize> {
        let got = read_resilient(&mut self.0, buf, offset)?;
        unreadable.extend(got.unreadable);
        Ok(got.bytes)
    }
}

/// Bytes asked of the source per read (a multiple of [`BLOCK_BYTES`]): large enough that the
/// per-read cost vanishes, small enough to stay a bounded, reused buffer.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// One thing found while scanning a segment. `R` is how a record is carried: an owned
/// [`Record`] (what the [`Iterator`] yields) or a [`RecordView`] borrowing the scan's buffer
/// (what [`SegmentScan::next_ref`] yields).
// Items are yielded one at a time; boxing the record would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ScanItem<R = Record> {
    /// A valid record.
    Record {
        /// Byte offset of its frame in the segment file.
        offset: u64,
        /// Bytes its frame occupies.
        frame_bytes: u64,
        /// The record.
        record: R,
        /// The durable watermark in the frame header (0 in version 1).
        durable_watermark: u64,
        /// Whether the frame's padding is all zero (nonzero padding is damage to report;
        /// the record itself is intact).
        padding_is_zero: bool,
    },
    /// Bytes that are not valid records, followed by a valid record.
    Damage {
        /// Offset of the first damaged byte.
        offset: u64,
        /// Length of the damaged region.
        len_bytes: u64,
        /// The damaged bytes were a CRC-valid frame whose payload did not decode.
        undecodable: bool,
    },
    /// Bytes that could not be read (an I/O error even block by block); scanned as zeros.
    Unreadable {
        /// Offset of the first unreadable byte.
        offset: u64,
        /// Length of the unreadable range.
        len_bytes: u64,
    },
    /// The end of the records: from `offset` to the end of the file nothing valid follows.
    Tail {
        /// Where the records end (the next write position).
        offset: u64,
        /// End of the last non-zero 8-byte word after `offset` (== `offset` when the rest is
        /// all zeros: a clean end). Anything else is a torn or damaged tail.
        nonzero_end: u64,
    },
}

impl<R> ScanItem<R> {
    /// The same item with its record (if any) converted by `convert`.
    pub fn map_record<T>(self, convert: impl FnOnce(R) -> T) -> ScanItem<T> {
        match self {
            ScanItem::Record {
                offset,
                frame_bytes,
                record,
                durable_watermark,
                padding_is_zero,
            } => ScanItem::Record {
                offset,
                frame_bytes,
                record: convert(record),
                durable_watermark,
                padding_is_zero,
            },
            ScanItem::Damage {
                offset,
                len_bytes,
                undecodable,
            } => ScanItem::Damage {
                offset,
                len_bytes,
                undecodable,
            },
            ScanItem::Unreadable { offset, len_bytes } => {
                ScanItem::Unreadable { offset, len_bytes }
            }
            ScanItem::Tail {
                offset,
                nonzero_end,
            } => ScanItem::Tail {
                offset,
                nonzero_end,
            },
        }
    }
}

/// Scans the records of one segment.
pub struct SegmentScan<S> {
    source: S,
    /// Unreadable ranges found by reads and not yet reported.
    unreadable: VecDeque<(u64, u64)>,
    layout: FrameLayout,
    /// Read buffer; `buf[..end]` holds file bytes from `buf_offset` on. Block-aligned in
    /// memory and (invariant) at a block-aligned file offset, so reads into `buf[end..]` are
    /// aligned whenever `end` is (always, but after a short read at the end of the file).
    /// Allocated on the first read and reused; grown only for a frame larger than it.
    buf: Option<AlignedBuf>,
    end: usize,
    pos: usize,
    buf_offset: u64,
    eof: bool,
    done: bool,
    /// Whether `pos` is the end of a valid frame (only there can group padding start).
    after_frame: bool,
    /// Sequence of the last event record of this segment, to tell padding from a zeroed frame.
    last_event_sequence: Option<u64>,
}

impl<S> std::fmt::Debug for SegmentScan<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentScan")
            .field("layout", &self.layout)
            .field("offset", &(self.buf_offset + self.pos as u64))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> SegmentScan<Sequential<R>> {
    /// Starts scanning; `reader` must yield the file's bytes from offset
    /// [`SEGMENT_HEADER_BYTES`] on. A read error ends the scan.
    pub fn new(reader: R, layout: FrameLayout) -> SegmentScan<Sequential<R>> {
        SegmentScan::with_source(Sequential(reader), layout)
    }
}

impl<S: ReadAt> SegmentScan<Resilient<S>> {
    /// Starts scanning the records of a whole segment file read positionally; unreadable
    /// blocks are reported as [`ScanItem::Unreadable`] and the scan goes on.
    pub fn resilient(file: S, layout: FrameLayout) -> SegmentScan<Resilient<S>> {
        SegmentScan::with_source(Resilient(file), layout)
    }
}

/// A frame whose CRC holds, by its place in the buffer (its payload is not yet decoded).
#[derive(Debug, Clone, Copy)]
struct CheckedFrame {
    kind: RecordKind,
    /// Index of the payload's first byte in the buffer.
    payload_index: usize,
    payload_len: usize,
    frame_bytes: usize,
    durable_watermark: u64,
    padding_is_zero: bool,
}

/// Index of the first nonzero byte of `bytes`. Tests 128 bytes at a time as eight `u128`
/// words ORed together (fixed-size arrays, so the compiler uses its widest vector loads): the
/// zeros after the last record of a preallocated segment (a fifth of every sealed segment)
/// pass at memory speed.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 128;
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    for (index, block) in blocks.iter().enumerate() {
        let (words, _) = block.as_chunks::<16>();
        if words
            .iter()
            .fold(0u128, |acc, word| acc | u128::from_ne_bytes(*word))
            != 0
        {
            return block
                .iter()
                .position(|&b| b != 0)
                .map(|i| index * BLOCK + i);
        }
    }
    rest.iter()
        .position(|&b| b != 0)
        .map(|i| blocks.len() * BLOCK + i)
}

impl<S: ScanSource> SegmentScan<S> {
    /// Starts scanning from `source`, which yields the bytes from offset
    /// [`SEGMENT_HEADER_BYTES`] on.
    pub fn with_source(source: S, layout: FrameLayout) -> SegmentScan<S> {
        SegmentScan {
            source,
            unreadable: VecDeque::new(),
            layout,
            buf: None,
            end: 0,
            pos: 0,
            buf_offset: SEGMENT_HEADER_BYTES as u64,
            eof: false,
            done: false,
            after_frame: false,
            last_event_sequence: None,
        }
    }

    fn abs(&self, index: usize) -> u64 {
        self.buf_offset + index as u64
    }

    fn bytes(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }

    /// Makes at least `need` bytes available from `pos`, unless the file ends first.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        if self.end - self.pos >= need || self.eof {
            return Ok(());
        }
        debug_assert_eq!(self.buf_offset % BLOCK_BYTES as u64, 0);
        // Keep from the block `pos` is in, so the buffer's file offset stays block-aligned.
        let keep_from = self.pos / BLOCK_BYTES * BLOCK_BYTES;
        let wanted =
            format::align_up(self.pos - keep_from + need, BLOCK_BYTES).max(READ_CHUNK_BYTES);
        match &mut self.buf {
            Some(buf) if buf.len() >= wanted => {
                if keep_from > 0 {
                    buf.copy_within(keep_from..self.end, 0);
                }
            }
            buf => {
                let mut grown = AlignedBuf::zeroed(wanted);
                if let Some(old) = buf {
                    grown[..self.end - keep_from].copy_from_slice(&old[keep_from..self.end]);
                }
                *buf = Some(grown);
            }
        }
        self.end -= keep_from;
        self.pos -= keep_from;
        self.buf_offset += keep_from as u64;
        let Some(buf) = self.buf.as_mut() else {
            unreachable!("allocated above");
        };
        while self.end - self.pos < need && !self.eof {
            let offset = self.buf_offset + self.end as u64;
            match self
                .source
                .read_more(&mut buf[self.end..], offset, &mut self.unreadable)?
            {
                0 => self.eof = true,
                n => self.end += n,
            }
        }
        Ok(())
    }

    /// Checks the frame at the current position (CRC, not the payload's contents), reading
    /// more as the frame requires. `None`: not a valid frame.
    fn probe(&mut self) -> io::Result<Option<CheckedFrame>> {
        self.fill(self.layout.header_bytes())?;
        loop {
            let window = &self.bytes()[self.pos..self.end];
            match format::probe_frame(window, self.layout, self.eof) {
                FrameProbe::NeedMore { bytes } => self.fill(bytes)?,
                FrameProbe::Zero | FrameProbe::Invalid => return Ok(None),
                FrameProbe::Valid {
                    kind,
                    payload,
                    frame_bytes,
                    durable_watermark,
                    padding_is_zero,
                } => {
                    let payload_start = payload.as_ptr() as usize - window.as_ptr() as usize;
                    return Ok(Some(CheckedFrame {
                        kind,
                        payload_index: self.pos + payload_start,
                        payload_len: payload.len(),
                        frame_bytes,
                        durable_watermark,
                        padding_is_zero,
                    }));
                }
            }
        }
    }

    fn payload(&self, frame: &CheckedFrame) -> &[u8] {
        &self.bytes()[frame.payload_index..frame.payload_index + frame.payload_len]
    }

    /// Whether the bytes from `pos` to the end of the word at `pos` have any non-zero byte.
    fn word_is_nonzero(&self) -> bool {
        let end = (self.pos + FRAME_ALIGN_BYTES).min(self.end);
        self.bytes()[self.pos..end].iter().any(|&b| b != 0)
    }

    /// Moves `pos` over whole zero words (a frame never starts with a zero length word).
    fn skip_zero_words(&mut self) {
        let offset =
            first_nonzero(&self.bytes()[self.pos..self.end]).unwrap_or(self.end - self.pos);
        self.pos += offset / FRAME_ALIGN_BYTES * FRAME_ALIGN_BYTES;
    }

    /// The next item, its record borrowing the scan's buffer until the next call: the scan
    /// path that allocates nothing per record (the payload is checked completely, as for an
    /// owned record, so the same frames are reported undecodable). `Ok(None)` once the
    /// [`ScanItem::Tail`] has been returned; an error ends the scan.
    pub fn next_ref(&mut self) -> io::Result<Option<ScanItem<RecordView<'_>>>> {
        self.next_decoded(format::decode_payload_view)
    }

    /// The next item with its record decoded by `decode` from its payload (which borrows the
    /// buffer); a payload `decode` refuses is reported as an undecodable damaged region.
    fn next_decoded<'a, R>(
        &'a mut self,
        decode: impl FnOnce(RecordKind, &'a [u8]) -> Result<R, format::PayloadError>,
    ) -> io::Result<Option<ScanItem<R>>>
    where
        R: HasEventSequence,
    {
        let item = match self.next_checked() {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(None),
            Err(error) => {
                self.done = true;
                return Err(error);
            }
        };
        let ScanItem::Record {
            offset,
            frame_bytes,
            record: frame,
            durable_watermark,
            padding_is_zero,
        } = item
        else {
            return Ok(Some(item.map_record(|_| {
                unreachable!("only a record item carries a frame")
            })));
        };
        // Borrows only the buffer field, so the fields below can still be updated.
        let bytes = self.buf.as_deref().unwrap_or(&[]);
        let payload = &bytes[frame.payload_index..frame.payload_index + frame.payload_len];
        match decode(frame.kind, payload) {
            Ok(record) => {
                if let Some(sequence) = record.event_sequence() {
                    self.last_event_sequence = Some(sequence);
                }
                Ok(Some(ScanItem::Record {
                    offset,
                    frame_bytes,
                    record,
                    durable_watermark,
                    padding_is_zero,
                }))
            }
            Err(_) => Ok(Some(ScanItem::Damage {
                offset,
                len_bytes: frame_bytes,
                undecodable: true,
            })),
        }
    }

    /// The next item with a CRC-valid frame not yet decoded (`pos` already past it).
    fn next_checked(&mut self) -> io::Result<Option<ScanItem<CheckedFrame>>> {
        if let Some((offset, len_bytes)) = self.unreadable.pop_front() {
            return Ok(Some(ScanItem::Unreadable { offset, len_bytes }));
        }
        if self.done {
            return Ok(None);
        }
        let after_frame = std::mem::replace(&mut self.after_frame, false);
        // Absolute, because reading more may move the buffer's contents.
        let start_offset = self.abs(self.pos);
        let mut probe = self.probe()?;
        if probe.is_none()
            && after_frame
            && let Some(padding_bytes) = self.zeros_to_block_boundary()?
        {
            self.pos += padding_bytes;
            probe = self.probe()?;
            let padding_hides_a_frame = match &probe {
                // Decoded here only to judge the padding (rare: once per padded group).
                Some(frame) => match format::decode_payload_view(frame.kind, self.payload(frame)) {
                    Ok(RecordView::Event(entry)) => self
                        .last_event_sequence
                        .is_some_and(|last| entry.sequence > last.saturating_add(1)),
                    Ok(_) => false,
                    Err(_) => true,
                },
                None => true,
            };
            if padding_hides_a_frame && probe.is_some() {
                // A frame follows at the boundary, but the zeros before it hid something:
                // report them as a damaged region; the next call reads the frame.
                return Ok(Some(ScanItem::Damage {
                    offset: start_offset,
                    len_bytes: padding_bytes as u64,
                    undecodable: false,
                }));
            }
            if probe.is_none() {
                // Not padding after all. The zeros stepped over are what the search below
                // would step over; it resumes after the word at the boundary.
                return self.search_after_damage(start_offset);
            }
        }
        if let Some(frame) = probe {
            let offset = self.abs(self.pos);
            self.pos += frame.frame_bytes;
            self.after_frame = true;
            return Ok(Some(ScanItem::Record {
                offset,
                frame_bytes: frame.frame_bytes as u64,
                record: frame,
                durable_watermark: frame.durable_watermark,
                padding_is_zero: frame.padding_is_zero,
            }));
        }
        debug_assert_eq!(start_offset, self.abs(self.pos));
        self.search_after_damage(start_offset)
    }

    /// When `pos` is not block-aligned and the bytes from it to the next 4096-byte boundary
    /// of the file are all present and zero, how many they are (the candidate padding).
    fn zeros_to_block_boundary(&mut self) -> io::Result<Option<usize>> {
        let offset = self.abs(self.pos);
        let padding_bytes = (offset.next_multiple_of(BLOCK_BYTES as u64) - offset) as usize;
        if padding_bytes == 0 {
            return Ok(None);
        }
        self.fill(padding_bytes + self.layout.header_bytes())?;
        let present = self.end - self.pos;
        if present <= padding_bytes {
            return Ok(None);
        }
        let zeros = first_nonzero(&self.bytes()[self.pos..self.pos + padding_bytes]).is_none();
        Ok(zeros.then_some(padding_bytes))
    }

    /// Steps over a damaged stretch that starts at file offset `start_offset` (`pos` is there,
    /// or further on past bytes known to be zero) one aligned word at a time, until a valid
    /// frame or the end.
    fn search_after_damage<R>(&mut self, start_offset: u64) -> io::Result<Option<ScanItem<R>>> {
        // The position is unaligned only when the file ends inside the last frame's padding;
        // the records then end at that frame's aligned end, where the next frame must go.
        let gap_start = start_offset.next_multiple_of(FRAME_ALIGN_BYTES as u64);
        let mut nonzero_end = gap_start;
        loop {
            self.fill(FRAME_ALIGN_BYTES)?;
            if self.pos >= self.end {
                self.done = true;
                return Ok(Some(ScanItem::Tail {
                    offset: gap_start,
                    nonzero_end,
                }));
            }
            if self.word_is_nonzero() {
                nonzero_end = self.abs((self.pos + FRAME_ALIGN_BYTES).min(self.end));
            }
            self.pos = (self.pos + FRAME_ALIGN_BYTES).min(self.end);
            self.skip_zero_words();
            if self.pos >= self.end {
                self.fill(self.layout.header_bytes())?;
                if self.pos >= self.end {
                    continue;
                }
            }
            if self.probe()?.is_some() {
                return Ok(Some(ScanItem::Damage {
                    offset: gap_start,
                    len_bytes: self.abs(self.pos) - gap_start,
                    undecodable: false,
                }));
            }
        }
    }
}

impl<S: ScanSource> Iterator for SegmentScan<S> {
    type Item = io::Result<ScanItem>;

    /// The next item with an owned record (decoded in one pass from the buffer).
    fn next(&mut self) -> Option<Self::Item> {
        self.next_decoded(format::decode_payload_owned).transpose()
    }
}

/// The event sequence a decoded record carries, whichever form it is decoded into.
trait HasEventSequence {
    fn event_sequence(&self) -> Option<u64>;
}

impl HasEventSequence for RecordView<'_> {
    fn event_sequence(&self) -> Option<u64> {
        RecordView::event_sequence(self)
    }
}

impl HasEventSequence for Record {
    fn event_sequence(&self) -> Option<u64> {
        match self {
            Record::Event(entry) => Some(entry.sequence),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, ProcessEvent};
    use crate::wal::format::{
        CheckpointEntry, FRAME_HEADER_BYTES, FrameSeed, align_up, push_checkpoint_frame,
        push_event_frame,
    };
    use chrono::DateTime;

    const SEG: FrameSeed = FrameSeed {
        segment_number: 3,
        salt: 0xfeed_f00d,
    };

    /// Record bytes (after the header block) of `count` events, and each frame's start.
    fn records(count: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for sequence in 1..=count {
            starts.push(out.len());
            let mut event =
                ProcessEvent::new(sequence as u32, "p", DateTime::from_timestamp_nanos(0));
            event.command_line = vec!["x".repeat(sequence as usize * 13 % 97)];
            let bytes = format::encode_event(&event).unwrap();
            push_event_frame(
                &mut out,
                SEG,
                sequence - 1,
                sequence,
                DateTime::from_timestamp_nanos(1),
                EventKind::Start,
                &bytes,
            );
        }
        (out, starts)
    }

    fn scan(bytes: &[u8]) -> Vec<ScanItem> {
        SegmentScan::new(bytes, FrameLayout::V2(SEG))
            .map(|item| item.unwrap())
            .collect()
    }

    fn sequences(items: &[ScanItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|item| match item {
                ScanItem::Record {
                    record: Record::Event(entry),
                    ..
                } => Some(entry.sequence),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn first_nonzero_finds_the_first_nonzero_byte_anywhere() {
        let mut bytes = vec![0u8; 1000];
        assert_eq!(first_nonzero(&bytes), None);
        assert_eq!(first_nonzero(&[]), None);
        for at in [0, 1, 15, 16, 127, 128, 129, 500, 895, 896, 999] {
            bytes[at] = 0x01;
            bytes[(at + 1).min(999)] = 0x80;
            assert_eq!(first_nonzero(&bytes), Some(at), "at {at}");
            assert_eq!(first_nonzero(&bytes[..at]), None, "before {at}");
            bytes.fill(0);
        }
    }

    #[test]
    fn clean_records_then_zeros_end_cleanly() {
        let (mut bytes, _) = records(20);
        let end = bytes.len() as u64 + SEGMENT_HEADER_BYTES as u64;
        bytes.extend_from_slice(&[0u8; 10_000]);
        let items = scan(&bytes);
        assert_eq!(sequences(&items), (1..=20).collect::<Vec<_>>());
        assert_eq!(
            items.last(),
            Some(&ScanItem::Tail {
                offset: end,
                nonzero_end: end
            })
        );
    }

    #[test]
    fn checkpoints_are_records_too() {
        let (mut bytes, _) = records(2);
        push_checkpoint_frame(
            &mut bytes,
            SEG,
            2,
            &CheckpointEntry {
                acked_through: 2,
                timestamp: DateTime::from_timestamp_nanos(0),
            },
        );
        let items = scan(&bytes);
        assert!(matches!(
            items[2],
            ScanItem::Record {
                record: Record::Checkpoint(CheckpointEntry {
                    acked_through: 2,
                    ..
                }),
                ..
            }
        ));
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_skipped_and_the_rest_recovered() {
        let (mut bytes, starts) = records(10);
        bytes[starts[4] + 30] ^= 0xff;
        let items = scan(&bytes);
        assert_eq!(sequences(&items), vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
        let damage: Vec<_> = items
            .iter()
            .filter(|i| matches!(i, ScanItem::Damage { .. }))
            .collect();
        assert_eq!(
            damage,
            vec![&ScanItem::Damage {
                offset: (SEGMENT_HEADER_BYTES + starts[4]) as u64,
                len_bytes: (starts[5] - starts[4]) as u64,
                undecodable: false,
            }]
        );
    }

    #[test]
    fn a_zeroed_block_in_the_middle_is_damage_not_the_end() {
        let (mut bytes, _) = records(200);
        assert!(bytes.len() > 3 * 4096);
        bytes[4096..8192].fill(0);
        let items = scan(&bytes);
        let recovered = sequences(&items);
        assert!(recovered.contains(&1) && recovered.contains(&200));
        assert!(items.iter().any(|i| matches!(i, ScanItem::Damage { .. })));
        // Every record that does not touch the zeroed block survives.
        let (_, starts) = records(200);
        let touched = starts
            .iter()
            .zip(starts.iter().skip(1).chain([&bytes.len()]))
            .filter(|&(&s, &e)| s < 8192 && e > 4096)
            .count();
        assert_eq!(recovered.len(), 200 - touched);
    }

    /// Records of `count` events in groups of `group_size`, each group after the first on
    /// the next block boundary of the file (records start at file offset 4096).
    fn fresh_block_records(count: u64, group_size: u64) -> (Vec<u8>, Vec<usize>) {
        let (plain, starts) = records(count);
        let mut out = Vec::new();
        let mut fresh_starts = Vec::new();
        for (index, &start) in starts.iter().enumerate() {
            if index > 0 && (index as u64).is_multiple_of(group_size) {
                out.resize(align_up(out.len(), BLOCK_BYTES), 0);
            }
            let end = starts.get(index + 1).copied().unwrap_or(plain.len());
            fresh_starts.push(out.len());
            out.extend_from_slice(&plain[start..end]);
        }
        (out, fresh_starts)
    }

    #[test]
    fn zeros_to_the_next_block_before_a_frame_are_group_padding() {
        let (bytes, starts) = fresh_block_records(12, 4);
        assert_eq!(starts[4] % BLOCK_BYTES, 0);
        let items = scan(&bytes);
        assert_eq!(sequences(&items), (1..=12).collect::<Vec<_>>());
        assert!(!items.iter().any(|i| matches!(i, ScanItem::Damage { .. })));
    }

    #[test]
    fn padding_that_hides_a_frame_is_damage_and_padding_cut_by_the_end_is_the_tail() {
        let (mut bytes, starts) = fresh_block_records(12, 4);
        // The last frame of the second group zeroed: zeros from the end of event 7 to the
        // block of event 9, whose sequence skips 8.
        bytes[starts[7]..starts[8]].fill(0);
        let items = scan(&bytes);
        assert_eq!(sequences(&items), vec![1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]);
        let damage: Vec<_> = items
            .iter()
            .filter(|i| matches!(i, ScanItem::Damage { .. }))
            .collect();
        assert_eq!(
            damage,
            vec![&ScanItem::Damage {
                offset: (SEGMENT_HEADER_BYTES + starts[7]) as u64,
                len_bytes: (starts[8] - starts[7]) as u64,
                undecodable: false,
            }]
        );
        // Zeros up to a boundary where the file ends: the end of the records, as before.
        let (bytes, starts) = fresh_block_records(8, 4);
        let items = scan(&bytes[..starts[4]]);
        assert_eq!(sequences(&items), vec![1, 2, 3, 4]);
        assert!(matches!(items.last(), Some(ScanItem::Tail { .. })));
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail() {
        let (mut bytes, _) = records(5);
        let end = (bytes.len() + SEGMENT_HEADER_BYTES) as u64;
        bytes.extend_from_slice(&[0xab; 100]);
        bytes.extend_from_slice(&[0; 900]);
        let items = scan(&bytes);
        assert_eq!(sequences(&items).len(), 5);
        assert_eq!(
            items.last(),
            Some(&ScanItem::Tail {
                offset: end,
                nonzero_end: end + 104
            })
        );
    }

    #[test]
    fn truncation_at_every_offset_of_the_last_records_never_loses_earlier_ones() {
        let (bytes, starts) = records(8);
        for cut in starts[5]..bytes.len() {
            let items = scan(&bytes[..cut]);
            // A frame is whole once its payload is; its trailing padding may be cut.
            let complete = starts
                .iter()
                .filter(|&&s| {
                    let payload = u32::from_le_bytes(bytes[s..s + 4].try_into().unwrap());
                    s + FRAME_HEADER_BYTES + payload as usize <= cut
                })
                .count();
            assert_eq!(
                sequences(&items),
                (1..=complete as u64).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            assert!(matches!(items.last(), Some(ScanItem::Tail { .. })));
        }
    }
}
