//! Streaming replay: yields durable events in sequence order from a given sequence, reading
//! one segment at a time with bounded memory (never the whole directory into a `Vec`).

use std::collections::VecDeque;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::WalError;
use super::format::{Record, SEGMENT_HEADER_BYTES, SegmentHeader, WalEntry};
use super::recovery::{directory_salt, layout_for_damaged_header, list_segments};
use super::scan::{ScanItem, SegmentScan};

/// One replayed event.
pub type ReplayItem = WalEntry;

/// An iterator over the events of a WAL directory with `sequence >= from`.
///
/// Damaged regions are skipped (with a warning, as at open). Segments deleted while reading
/// are simply passed over. Safe to use while a writer appends: it reads what is on disk.
pub struct WalReader {
    segments: VecDeque<(u64, PathBuf)>,
    current: Option<(u64, PathBuf, SegmentScan<std::fs::File>)>,
    from_sequence: u64,
    last_yielded: u64,
    skipped_regions: u64,
    salt: Option<u64>,
}

impl WalReader {
    /// Lists the segments of `dir` and prepares to read events from `from_sequence` on.
    pub fn open(dir: &Path, from_sequence: u64) -> Result<WalReader, WalError> {
        let listed = list_segments(dir)?;
        let salt = directory_salt(&listed)?;
        let mut segments: VecDeque<(u64, PathBuf)> = listed.into();
        // Skip whole segments that end before `from_sequence`: a segment can be skipped when
        // the next one's header says it starts at or below the wanted sequence.
        while segments.len() >= 2 {
            let next_first = first_sequence_of(&segments[1].1);
            match next_first {
                Some(first) if first <= from_sequence => {
                    segments.pop_front();
                }
                _ => break,
            }
        }
        Ok(WalReader {
            segments,
            current: None,
            from_sequence,
            last_yielded: 0,
            skipped_regions: 0,
            salt,
        })
    }

    /// Damaged regions skipped so far.
    pub fn skipped_regions(&self) -> u64 {
        self.skipped_regions
    }

    fn next_entry(&mut self) -> Result<Option<WalEntry>, WalError> {
        loop {
            if self.current.is_none() {
                let Some((number, path)) = self.segments.pop_front() else {
                    return Ok(None);
                };
                let mut file = match crate::io::open_for_read(&path) {
                    Ok(file) => file,
                    // Deleted after listing: everything in it was acknowledged.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => {
                        return Err(WalError::io("open segment for replay", &path, error));
                    }
                };
                let layout = match header_of(&file) {
                    Some(header) if header.segment_number == number => header.frame_layout(),
                    _ => layout_for_damaged_header(number, &path, self.salt)?,
                };
                file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))
                    .map_err(|e| WalError::io("seek segment", &path, e))?;
                self.current = Some((number, path, SegmentScan::new(file, layout)));
            }
            let Some((number, path, scan)) = self.current.as_mut() else {
                continue;
            };
            match scan.next() {
                None => self.current = None,
                Some(Err(error)) => {
                    return Err(WalError::io("read segment for replay", path.clone(), error));
                }
                Some(Ok(ScanItem::Record {
                    record: Record::Event(entry),
                    ..
                })) => {
                    if entry.sequence >= self.from_sequence && entry.sequence > self.last_yielded {
                        self.last_yielded = entry.sequence;
                        return Ok(Some(entry));
                    }
                }
                Some(Ok(ScanItem::Damage {
                    offset, len_bytes, ..
                })) => {
                    tracing::warn!(
                        segment = *number,
                        offset,
                        len_bytes,
                        "replay skipping corrupt WAL bytes"
                    );
                    self.skipped_regions += 1;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

fn first_sequence_of(path: &Path) -> Option<u64> {
    let file = crate::io::open_for_read(path).ok()?;
    header_of(&file).map(|header| header.first_sequence)
}

fn header_of(file: &std::fs::File) -> Option<SegmentHeader> {
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut block, 0).ok()?;
    SegmentHeader::decode(&block).ok()
}

impl Iterator for WalReader {
    type Item = Result<WalEntry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}
