//! Corruption and torn-tail recovery proven on real segment files written by both backends:
//! bit flips in payloads, frame headers and segment headers, zeroed blocks, and a torn tail at
//! every byte offset of the last records (truncated, zeroed or garbled).
//!
//! Expected counts come from frame positions this file reads off the disk itself (offsets
//! from `read_dir_with` on the undamaged log plus each frame's length word), never from the
//! report under test.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{BACKENDS, event, kind, runtime, small_config};
use procmond_wal::wal::format::{
    FORMAT_VERSION, FRAME_HEADER_BYTES, Record, SEGMENT_HEADER_BYTES, SegmentHeader, align_up,
};
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{DamageKind, OpenReport, read_dir, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalError, WalReader};

const BLOCK: usize = 4096;

/// An event frame as found on disk, with bounds computed from its own length word.
#[derive(Debug, Clone, Copy)]
struct Frame {
    sequence: u64,
    offset: usize,
    /// End of the CRC-covered bytes (header + payload); the padding after it is unchecked.
    payload_end: usize,
}

impl Frame {
    /// End of the frame including padding to 8 bytes: where the next frame starts.
    fn end(&self) -> usize {
        align_up(self.payload_end, 8)
    }
}

/// 64 KiB segments keep the exhaustive loops cheap.
fn tiny_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = small_config(dir, backend);
    config.segment_max_bytes = 64 * 1024;
    config.wal_max_bytes = 1024 * 1024;
    config
}

/// Appends events `1..=count` one at a time (one group each, so the tail block is rewritten
/// every time) and closes the log.
fn write_log(config: &WalConfig, count: u64) {
    let rt = runtime();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.next_sequence, 1);
    rt.block_on(async {
        for i in 1..=count {
            assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
        }
        wal.close().await.unwrap();
    });
}

/// The event frames of segment 1 of an undamaged log, in file order.
fn frames_of_segment_one(dir: &Path) -> Vec<Frame> {
    let bytes = fs::read(segment_path(dir, 1)).unwrap();
    let mut frames = Vec::new();
    let report = read_dir_with(dir, |segment, offset, record| {
        if let (1, Record::Event(entry)) = (segment, record) {
            let offset = offset as usize;
            let payload_len =
                u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            frames.push(Frame {
                sequence: entry.sequence,
                offset,
                payload_end: offset + FRAME_HEADER_BYTES + payload_len,
            });
        }
    })
    .unwrap();
    assert!(report.is_clean(), "the undamaged log must be clean");
    // Independent of the scanner: frames are contiguous from the end of the header block.
    assert_eq!(frames[0].offset, SEGMENT_HEADER_BYTES);
    for pair in frames.windows(2) {
        assert_eq!(pair[0].end(), pair[1].offset);
        assert_eq!(pair[0].sequence + 1, pair[1].sequence);
    }
    frames
}

/// A segment file being damaged over and over: each variant is written by patching only the
/// bytes that differ from the previous one (rewriting whole files dominated the loops' time).
struct Patched {
    file: fs::File,
    current: Vec<u8>,
}

impl Patched {
    fn open(path: &Path) -> Patched {
        let current = fs::read(path).unwrap();
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        Patched { file, current }
    }

    fn set(&mut self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let common = self.current.len().min(bytes.len());
        let first = (0..common).find(|&i| self.current[i] != bytes[i]);
        let last = (0..common).rev().find(|&i| self.current[i] != bytes[i]);
        if let (Some(first), Some(last)) = (first, last) {
            self.file
                .write_all_at(&bytes[first..=last], first as u64)
                .unwrap();
        }
        if bytes.len() != self.current.len() {
            self.file.set_len(bytes.len() as u64).unwrap();
            self.file
                .write_all_at(&bytes[common..], common as u64)
                .unwrap();
        }
        self.current = bytes.to_vec();
    }
}

fn flip_bit(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn replayed(dir: &Path) -> Vec<(u64, procmond_wal::ProcessEvent)> {
    WalReader::open(dir, 0)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.sequence, entry.event)
        })
        .collect()
}

/// Asserts that exactly one region of corrupt records was skipped in segment 1.
fn assert_one_skipped_region(report: &OpenReport, offset: usize, len_bytes: usize) {
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let damage = &report.damage[0];
    assert_eq!(
        (damage.segment, damage.offset, damage.len_bytes, damage.kind),
        (
            1,
            offset as u64,
            len_bytes as u64,
            DamageKind::CorruptRecords
        )
    );
}

fn assert_one_gap(report: &OpenReport, first_missing: u64, count: u64) {
    assert_eq!(report.gaps.len(), 1, "{:?}", report.gaps);
    assert_eq!(
        (report.gaps[0].first_missing, report.gaps[0].count),
        (first_missing, count)
    );
    assert_eq!(report.lost_events, count);
}

/// Opens the damaged log for writing, appends `more` events, closes, and checks that replay
/// yields exactly `survivors` (original ids) followed by the new events.
fn reopen_append_and_replay(
    config: &WalConfig,
    survivors: &[u64],
    next_sequence: u64,
    more: u64,
    what: &str,
) {
    let rt = runtime();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.next_sequence, next_sequence);
    let new_ids: Vec<u64> = (0..more).map(|i| 10_000 + i).collect();
    rt.block_on(async {
        for (i, &id) in new_ids.iter().enumerate() {
            assert_eq!(
                wal.append(event(id), kind(id)).await.unwrap(),
                next_sequence + i as u64
            );
        }
        wal.close().await.unwrap();
    });
    let mut expected: Vec<(u64, procmond_wal::ProcessEvent)> =
        survivors.iter().map(|&id| (id, event(id))).collect();
    for (i, &id) in new_ids.iter().enumerate() {
        expected.push((next_sequence + i as u64, event(id)));
    }
    let replayed = replayed(&config.dir);
    let sequences = |entries: &[(u64, procmond_wal::ProcessEvent)]| -> Vec<u64> {
        entries.iter().map(|(sequence, _)| *sequence).collect()
    };
    assert_eq!(sequences(&replayed), sequences(&expected), "{what}");
    assert_eq!(replayed, expected, "{what}");
}

#[test]
fn a_bit_flip_anywhere_in_a_payload_skips_exactly_that_record() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 20);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let victim = frames[9];
        for byte in victim.offset + FRAME_HEADER_BYTES..victim.payload_end {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, byte * 8 + byte % 8);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 19, "{backend:?} byte {byte}");
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, 10, 1);
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.next_sequence, 21);
        }
        // The damage stays skipped across a reopen and appends continue after it.
        let survivors: Vec<u64> = (1..=20).filter(|&s| s != 10).collect();
        reopen_append_and_replay(&config, &survivors, 21, 3, "payload flip");
        let report = read_dir(dir.path()).unwrap();
        assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
        assert_eq!((report.events, report.lost_events), (22, 1));
    }
}

#[test]
fn every_bit_flip_in_a_frame_header_skips_exactly_that_record() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 12);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let victim = frames[4];
        for bit in 0..FRAME_HEADER_BYTES * 8 {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, victim.offset * 8 + bit);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 11, "{backend:?} header bit {bit}");
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, 5, 1);
            assert_eq!(report.torn_tail_bytes, 0);
        }
        let survivors: Vec<u64> = (1..=12).filter(|&s| s != 5).collect();
        reopen_append_and_replay(&config, &survivors, 13, 2, "header flip");
    }
}

#[test]
fn nonzero_padding_is_reported_as_damage_and_the_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    write_log(&config, 12);
    let frames = frames_of_segment_one(dir.path());
    let path = segment_path(dir.path(), 1);
    let original = fs::read(&path).unwrap();
    let mut target = Patched::open(&path);
    let padded: Vec<&Frame> = frames[..11]
        .iter()
        .filter(|f| f.end() > f.payload_end)
        .collect();
    assert!(!padded.is_empty(), "the sample events must include padding");
    for frame in padded {
        for index in frame.payload_end..frame.end() {
            let mut damaged = original.clone();
            damaged[index] = 0xff;
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 12);
            assert_eq!(report.lost_events, 0);
            assert!(!report.is_clean(), "padding byte {index} went unnoticed");
            assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
            let damage = &report.damage[0];
            assert_eq!(
                (damage.segment, damage.offset, damage.len_bytes, damage.kind),
                (
                    1,
                    frame.offset as u64,
                    (frame.end() - frame.offset) as u64,
                    DamageKind::NonzeroPadding
                )
            );
        }
    }
}

#[test]
fn every_bit_flip_in_a_segment_header_is_reported_and_the_records_are_still_read() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 8);
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        // Bytes 0..52 are magic, version, flags, number, first sequence, time, salt and CRC.
        for bit in 0..52 * 8 {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, bit);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 8, "{backend:?} header bit {bit}");
            assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
            let damage = &report.damage[0];
            assert_eq!(
                (damage.segment, damage.offset, damage.len_bytes, damage.kind),
                (1, 0, BLOCK as u64, DamageKind::BadHeader)
            );
            assert!(report.segments[0].header.is_none());
            assert_eq!((report.lost_events, report.torn_tail_bytes), (0, 0));
            assert_eq!(report.next_sequence, 9);
        }
        // The rest of the header block (zeros and the salt's copy, which is read only when
        // the header is damaged) is not checked.
        let mut reserved = original.clone();
        reserved[52..BLOCK].fill(0x5a);
        target.set(&reserved);
        assert!(read_dir(dir.path()).unwrap().is_clean());

        // With a damaged header the segment is kept sealed; appends go to the next segment.
        let mut damaged = original.clone();
        flip_bit(&mut damaged, 20 * 8);
        target.set(&damaged);
        reopen_append_and_replay(&config, &(1..=8).collect::<Vec<_>>(), 9, 2, "bad header");
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.damage.len(), 1);
        assert_eq!(report.damage[0].kind, DamageKind::BadHeader);
        assert_eq!(report.lost_events, 0);
        let second = &report.segments[1];
        assert_eq!(second.number, 2);
        assert_eq!(second.header.map(|h| h.first_sequence), Some(9));
        assert_eq!(
            (second.first_sequence, second.last_sequence),
            (Some(9), Some(10))
        );
    }
}

#[test]
fn a_newer_format_version_refuses_to_open_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    write_log(&config, 3);
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let mut header = SegmentHeader::decode(&bytes).unwrap();
    header.version = FORMAT_VERSION + 1;
    bytes[..BLOCK].copy_from_slice(&header.encode_block());
    fs::write(&path, &bytes).unwrap();
    let listing = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let bytes = fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect()
    };
    let before = listing(dir.path());
    match read_dir(dir.path()) {
        Err(WalError::UnsupportedVersion { version, .. }) => {
            assert_eq!(version, FORMAT_VERSION + 1)
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    match Wal::open(config) {
        Err(WalError::UnsupportedVersion { version, .. }) => {
            assert_eq!(version, FORMAT_VERSION + 1)
        }
        other => panic!(
            "expected UnsupportedVersion, got {:?}",
            other.map(|(_, r)| r)
        ),
    }
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn a_zeroed_block_in_the_middle_loses_exactly_the_records_it_touches() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        let count = 120;
        write_log(&config, count);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let last_start = frames.last().unwrap().offset;
        let mut blocks_tested = 0;
        // Every data block that has a whole record after it.
        for block_start in (BLOCK..last_start).step_by(BLOCK) {
            let block_end = block_start + BLOCK;
            if block_end > last_start {
                break;
            }
            // A frame is touched when zeroing changes one of its CRC-covered bytes (bytes
            // that were zero already, such as a trailing zero variant index, do not count).
            let touched: Vec<usize> = (0..frames.len())
                .filter(|&i| {
                    let start = frames[i].offset.max(block_start);
                    let end = frames[i].payload_end.min(block_end);
                    start < end && original[start..end].iter().any(|&b| b != 0)
                })
                .collect();
            let (first, last) = (touched[0], *touched.last().unwrap());
            assert_eq!(last - first + 1, touched.len());
            let mut damaged = original.clone();
            damaged[block_start..block_end].fill(0);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            let lost = touched.len() as u64;
            assert_eq!(
                report.events,
                count - lost,
                "{backend:?} block {block_start}"
            );
            assert_one_skipped_region(
                &report,
                frames[first].offset,
                frames[last + 1].offset - frames[first].offset,
            );
            assert_one_gap(&report, frames[first].sequence, lost);
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.last_sequence, Some(count));
            blocks_tested += 1;
            if blocks_tested == 2 {
                // One sample goes through open, append and replay.
                let survivors: Vec<u64> = frames
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !touched.contains(i))
                    .map(|(_, f)| f.sequence)
                    .collect();
                let scratch = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), scratch.path());
                let scratch_config = tiny_config(scratch.path(), backend);
                reopen_append_and_replay(&scratch_config, &survivors, count + 1, 2, "zeroed block");
            }
        }
        assert!(blocks_tested >= 4, "only {blocks_tested} blocks tested");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// How the end of the newest segment is damaged from the cut offset on.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// The file ends at the cut (`set_len`).
    Truncate,
    /// The file keeps its preallocated size; the bytes from the cut to the end of the last
    /// written block are zeros.
    Zeros,
    /// As `Zeros`, but with non-zero garbage.
    Garbage,
}

const TEARS: [Tear; 3] = [Tear::Truncate, Tear::Zeros, Tear::Garbage];

fn torn(original: &[u8], cut: usize, written_end: usize, tear: Tear) -> Vec<u8> {
    match tear {
        Tear::Truncate => original[..cut].to_vec(),
        Tear::Zeros => {
            let mut bytes = original.to_vec();
            bytes[cut..written_end].fill(0);
            bytes
        }
        Tear::Garbage => {
            let mut bytes = original.to_vec();
            let mut state = cut as u64 ^ 0x9e37_79b9_7f4a_7c15;
            for byte in &mut bytes[cut..written_end] {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *byte = (state >> 56) as u8 | 1;
            }
            bytes
        }
    }
}

/// What a correct reader must find in a torn segment: the complete frames (CRC-covered bytes
/// all before the cut), where the records end, and the non-zero bytes after that end, counted
/// in whole 8-byte words (the last one cut short by the end of the file).
struct TornExpectation {
    complete: Vec<Frame>,
    torn_tail_bytes: u64,
    /// The last complete frame, when the tear put nonzero bytes into its padding (damage to
    /// report; the record itself is kept).
    dirty_padding: Option<Frame>,
}

fn expect_torn(
    frames: &[Frame],
    base: &[u8],
    bytes: &[u8],
    cut: usize,
    victim: Option<usize>,
) -> TornExpectation {
    // Zeroing a payload's trailing zero bytes (or garbling a byte into its own value) changes
    // nothing: the damage starts at the first byte that differs.
    let first_changed = (cut..base.len())
        .find(|&i| bytes.get(i) != Some(&base[i]))
        .unwrap_or(base.len());
    let complete_all: Vec<Frame> = frames
        .iter()
        .copied()
        .filter(|f| f.payload_end <= first_changed)
        .collect();
    let data_end = complete_all.last().unwrap().end();
    let last_complete = *complete_all.last().unwrap();
    let dirty_padding = bytes
        .get(last_complete.payload_end..last_complete.end().min(bytes.len()))
        .is_some_and(|padding| padding.iter().any(|&b| b != 0))
        .then_some(last_complete);
    let torn_tail_bytes = match bytes.iter().skip(data_end).rposition(|&b| b != 0) {
        None => 0,
        Some(last) => (align_up(data_end + last + 1, 8).min(bytes.len()) - data_end) as u64,
    };
    let complete = complete_all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != victim)
        .map(|(_, f)| f)
        .collect();
    TornExpectation {
        complete,
        torn_tail_bytes,
        dirty_padding,
    }
}

fn check_torn_report(
    report: &OpenReport,
    expected: &TornExpectation,
    victim: Option<Frame>,
    what: &str,
) {
    let last = expected.complete.last().unwrap().sequence;
    assert_eq!(report.events, expected.complete.len() as u64, "{what}");
    assert_eq!(report.last_sequence, Some(last), "{what}");
    assert_eq!(report.next_sequence, last + 1, "{what}");
    assert_eq!(report.torn_tail_bytes, expected.torn_tail_bytes, "{what}");
    let (padding, other): (Vec<_>, Vec<_>) = report
        .damage
        .iter()
        .cloned()
        .partition(|d| d.kind == DamageKind::NonzeroPadding);
    assert_eq!(
        padding
            .iter()
            .map(|d| d.offset as usize)
            .collect::<Vec<_>>(),
        expected
            .dirty_padding
            .iter()
            .map(|f| f.offset)
            .collect::<Vec<_>>(),
        "{what}"
    );
    let report = OpenReport {
        damage: other,
        ..report.clone()
    };
    match victim {
        None => {
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            assert_eq!(report.lost_events, 0, "{what}");
        }
        Some(victim) => {
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, victim.sequence, 1);
        }
    }
}

/// The exhaustive part uses the read-only scan; `Wal::open` runs on a sample of cuts.
#[test]
fn a_torn_tail_at_every_offset_of_the_last_records_keeps_everything_before_it() {
    let count = 16u64;
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, count);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let last = *frames.last().unwrap();
        let written_end = align_up(last.payload_end, BLOCK);
        let first_cut = frames[frames.len() - 4].offset;
        let victim_index = 2;
        let mut flipped = original.clone();
        flip_bit(&mut flipped, (frames[victim_index].offset + 30) * 8);
        let mut checked = 0u64;
        for (base, victim) in [(&original, None), (&flipped, Some(victim_index))] {
            for tear in TEARS {
                for cut in first_cut..=last.end() {
                    let bytes = torn(base, cut, written_end, tear);
                    target.set(&bytes);
                    let report = read_dir(dir.path()).unwrap();
                    let expected = expect_torn(&frames, base, &bytes, cut, victim);
                    let what = format!("{backend:?} {tear:?} cut {cut} victim {victim:?}");
                    check_torn_report(&report, &expected, victim.map(|i| frames[i]), &what);
                    checked += 1;
                }
            }
        }
        let per_pass = (last.end() - first_cut + 1) as u64;
        assert_eq!(checked, per_pass * 6);

        // Sample: cuts inside the header, the payload and the padding of the last frames.
        let mut samples = Vec::new();
        for frame in &frames[frames.len() - 3..] {
            samples.extend([
                frame.offset + 1,
                frame.offset + FRAME_HEADER_BYTES,
                frame.payload_end - 1,
                frame.payload_end + 1,
            ]);
        }
        for tear in TEARS {
            for &cut in &samples {
                let bytes = torn(&original, cut, written_end, tear);
                let scratch = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), scratch.path());
                fs::write(segment_path(scratch.path(), 1), &bytes).unwrap();
                let expected = expect_torn(&frames, &original, &bytes, cut, None);
                let what = format!("open {backend:?} {tear:?} cut {cut}");
                let scratch_config = tiny_config(scratch.path(), backend);
                let (wal, report) = Wal::open(scratch_config.clone()).unwrap();
                check_torn_report(&report, &expected, None, &what);
                runtime().block_on(wal.close()).unwrap();
                // Opening for writing cut the tail: a second read finds a clean log.
                let again = read_dir(scratch.path()).unwrap();
                assert_eq!(again.torn_tail_bytes, 0, "{what}");
                let padding_only = again
                    .damage
                    .iter()
                    .all(|d| d.kind == DamageKind::NonzeroPadding);
                assert!(
                    padding_only && again.gaps.is_empty(),
                    "{what}: {:?}",
                    again.damage
                );
                assert_eq!(again.events, expected.complete.len() as u64, "{what}");
                let survivors: Vec<u64> = expected.complete.iter().map(|f| f.sequence).collect();
                let next = survivors.last().unwrap() + 1;
                reopen_append_and_replay(&scratch_config, &survivors, next, 3, &what);
                let after = read_dir(scratch.path()).unwrap();
                let padding_only = after
                    .damage
                    .iter()
                    .all(|d| d.kind == DamageKind::NonzeroPadding);
                assert!(
                    padding_only && after.gaps.is_empty(),
                    "{what}: {:?}",
                    after.damage
                );
                assert_eq!((after.torn_tail_bytes, after.lost_events), (0, 0), "{what}");
            }
        }
    }
}

/// A file cut inside the zero padding after its last complete frame (an 8-byte-unaligned
/// length) must still resume writing at the next 8-byte boundary, or the events appended
/// afterwards are unreadable (and the next open would cut them as a torn tail).
#[test]
fn truncation_inside_the_padding_of_the_last_frame_keeps_later_appends() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 6);
        let frames = frames_of_segment_one(dir.path());
        let last = frames
            .iter()
            .rev()
            .find(|f| f.end() - f.payload_end >= 2)
            .copied()
            .expect("a frame with padding");
        let cut = last.payload_end + 1;
        let path = segment_path(dir.path(), 1);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.last_sequence, Some(last.sequence));
        assert_eq!(report.torn_tail_bytes, 0);
        let survivors: Vec<u64> = (1..=last.sequence).collect();
        reopen_append_and_replay(
            &config,
            &survivors,
            last.sequence + 1,
            3,
            &format!(
                "{backend:?} cut {cut} in the padding of frame {}",
                last.sequence
            ),
        );
        let after = read_dir(dir.path()).unwrap();
        assert_eq!(after.events, last.sequence + 3);
        assert_eq!(after.torn_tail_bytes, 0);
    }
}

/// Without preallocation a prepared segment is an empty file: it is as blank as a zeroed one
/// and must not be reported as a damaged header (nor stop the newest segment from resuming).
#[test]
fn a_prepared_segment_without_preallocation_is_blank_not_damage() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tiny_config(dir.path(), backend);
        config.preallocation = procmond_wal::io::Preallocation::None;
        write_log(&config, 5);
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.events, 5);
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!(report.last_written_index(), Some(0), "{backend:?}");
        reopen_append_and_replay(&config, &[1, 2, 3, 4, 5], 6, 2, "no preallocation");
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        // Still one written segment: the newest one resumed instead of being sealed.
        let written = report.segments.iter().filter(|s| !s.is_blank()).count();
        assert_eq!(written, 1, "{backend:?}");
    }
}

/// Event frames of every segment, by segment number, for a log that spans several segments.
fn frames_by_segment(dir: &Path) -> BTreeMap<u64, Vec<Frame>> {
    let mut files: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut frames: BTreeMap<u64, Vec<Frame>> = BTreeMap::new();
    let report = read_dir_with(dir, |segment, offset, record| {
        if let Record::Event(entry) = record {
            let bytes = files
                .entry(segment)
                .or_insert_with(|| fs::read(segment_path(dir, segment)).unwrap());
            let offset = offset as usize;
            let payload_len =
                u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            frames.entry(segment).or_default().push(Frame {
                sequence: entry.sequence,
                offset,
                payload_end: offset + FRAME_HEADER_BYTES + payload_len,
            });
        }
    })
    .unwrap();
    assert!(report.is_clean());
    frames
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_and_a_missing_segment_count_their_lost_events() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        let count = 700;
        write_log(&config, count);
        let frames = frames_by_segment(dir.path());
        assert!(frames.len() >= 3, "{backend:?}: expected rotation");
        let first = &frames[&1];
        let second = &frames[&2];
        let all: Vec<u64> = (1..=count).collect();

        // The last record of sealed segment 1 is garbled: nothing valid follows it there, so
        // it is a damaged end (not a torn tail), and segment 2's header shows the gap.
        let victim = *first.last().unwrap();
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut damaged = original.clone();
        flip_bit(&mut damaged, (victim.offset + 20) * 8 + 3);
        fs::write(&path, &damaged).unwrap();
        let report = read_dir(dir.path()).unwrap();
        let nonzero_end = (victim.offset..damaged.len())
            .rev()
            .find(|&i| damaged[i] != 0)
            .map(|i| align_up(i + 1, 8))
            .unwrap();
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        let damage = &report.damage[0];
        assert_eq!(
            (damage.segment, damage.offset, damage.len_bytes, damage.kind),
            (
                1,
                victim.offset as u64,
                (nonzero_end - victim.offset) as u64,
                DamageKind::DamagedEnd
            )
        );
        assert_one_gap(&report, victim.sequence, 1);
        assert_eq!((report.events, report.torn_tail_bytes), (count - 1, 0));
        let survivors: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&s| s != victim.sequence)
            .collect();
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), scratch.path());
        reopen_append_and_replay(
            &tiny_config(scratch.path(), backend),
            &survivors,
            count + 1,
            2,
            "damaged end",
        );
        fs::write(&path, &original).unwrap();

        // A whole middle segment is gone.
        fs::remove_file(segment_path(dir.path(), 2)).unwrap();
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        assert_eq!(
            (report.damage[0].segment, report.damage[0].kind),
            (2, DamageKind::MissingSegment)
        );
        let lost = second.len() as u64;
        assert_one_gap(&report, second[0].sequence, lost);
        assert_eq!(report.events, count - lost);
        let survivors: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| !second.iter().any(|f| f.sequence == *s))
            .collect();
        reopen_append_and_replay(&config, &survivors, count + 1, 2, "missing segment");
    }
}
