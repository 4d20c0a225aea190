//! A file named like a segment that is not provably one of the log's own (bad magic, or a
//! blank header over non-zero bytes, with no valid record) makes `Wal::open` refuse with an
//! error naming the file, and its bytes stay exactly as they were; the one exception is what
//! a crash leaves after a new segment's torn first write (the newest file, header block zero),
//! which is renamed aside intact so the log can go on. A segment whose header is
//! damaged but whose records are valid is still the log's own and opens.

mod common;

use std::fs;
use std::path::Path;

use common::{event, kind, runtime, small_config};
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::{BackendChoice, Wal, WalError};

/// Deterministic bytes that are not a segment (xorshift; never all zero).
fn arbitrary_bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn write_events(dir: &Path, count: u64) {
    let (wal, report) = Wal::open(small_config(dir, BackendChoice::Portable)).unwrap();
    let first = report.next_sequence;
    runtime().block_on(async {
        for i in first..first + count {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });
}

/// Every file of the directory with its bytes (the lock file aside).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| {
            let name = entry.file_name().into_string().unwrap();
            let bytes = fs::read(entry.path()).unwrap();
            (name, bytes)
        })
        .filter(|(name, _)| name.ends_with(".wal"))
        .collect();
    files.sort();
    files
}

fn assert_refused(dir: &Path, foreign: &Path, choice: BackendChoice) {
    let before = snapshot(dir);
    match Wal::open(small_config(dir, choice)) {
        Err(WalError::NotASegment { path, reason }) => {
            assert_eq!(path, foreign, "{reason}");
            let message = WalError::NotASegment {
                path: path.clone(),
                reason,
            }
            .to_string();
            assert!(
                message.contains(&foreign.display().to_string()),
                "{message}"
            );
        }
        Err(other) => panic!("expected NotASegment, got {other}"),
        Ok(_) => panic!("opened a directory holding {}", foreign.display()),
    }
    assert_eq!(snapshot(dir), before, "open changed the directory");
}

#[test]
fn a_bad_magic_segment_file_is_refused_and_left_unchanged() {
    for choice in [BackendChoice::Auto, BackendChoice::Portable] {
        let dir = tempfile::tempdir().unwrap();
        let foreign = segment_path(dir.path(), 1);
        // Larger than a block, so a "torn tail" cut after the header would have hit it.
        fs::write(&foreign, arbitrary_bytes(3 * 4096 + 123, 0x5eed)).unwrap();
        assert_refused(dir.path(), &foreign, choice);
        // Refused again on a second try (nothing was half-done the first time).
        assert_refused(dir.path(), &foreign, choice);
    }
}

#[test]
fn a_torn_first_write_of_the_newest_segment_is_moved_aside_intact() {
    // A crash during a new segment's first write: its header sector never landed, later
    // sectors of the group did. Nothing in it was acknowledged; the log must go on, and the
    // bytes are kept (renamed), never overwritten.
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), 20);
    let newest = procmond_wal::wal::recovery::list_segments(dir.path())
        .unwrap()
        .last()
        .unwrap()
        .0;
    let torn = segment_path(dir.path(), newest + 1);
    let mut bytes = vec![0u8; 4096];
    bytes.extend(arbitrary_bytes(8192, 0xfeed));
    fs::write(&torn, &bytes).unwrap();
    let (wal, report) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    assert_eq!(report.events, 20);
    assert_eq!(report.next_sequence, 21);
    let aside = dir.path().join(format!(
        "{}.torn",
        torn.file_name().unwrap().to_str().unwrap()
    ));
    assert_eq!(
        fs::read(&aside).unwrap(),
        bytes,
        "moved aside byte for byte"
    );
    let appended = runtime().block_on(async {
        let sequence = wal.append(event(21), kind(21)).await.unwrap();
        wal.close().await.unwrap();
        sequence
    });
    assert_eq!(appended, 21);
    assert_eq!(
        fs::read(&aside).unwrap(),
        bytes,
        "still intact after appends"
    );
}

#[test]
fn junk_in_a_blank_headers_block_is_refused_and_left_unchanged() {
    // Junk in a header block's unused bytes is never what a torn write leaves.
    let dir = tempfile::tempdir().unwrap();
    let foreign = segment_path(dir.path(), 1);
    let mut bytes = vec![0u8; 64 * 1024];
    bytes[100..200].copy_from_slice(&arbitrary_bytes(100, 0xbeef));
    fs::write(&foreign, &bytes).unwrap();
    assert_refused(dir.path(), &foreign, BackendChoice::Portable);
}

#[test]
fn a_foreign_file_after_real_segments_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), 20);
    let numbers: Vec<u64> = procmond_wal::wal::recovery::list_segments(dir.path())
        .unwrap()
        .into_iter()
        .map(|(number, _)| number)
        .collect();
    let foreign = segment_path(dir.path(), numbers.last().unwrap() + 1);
    fs::write(&foreign, b"not a WAL segment, just someone's notes\n").unwrap();
    assert_refused(dir.path(), &foreign, BackendChoice::Portable);
    // Moved away, the log opens again with everything it had.
    fs::remove_file(&foreign).unwrap();
    let (wal, report) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    assert_eq!(report.events, 20);
    runtime().block_on(wal.close()).unwrap();
}

#[test]
fn blank_prepared_segments_and_damaged_headers_over_valid_records_still_open() {
    let dir = tempfile::tempdir().unwrap();
    write_events(dir.path(), 8);
    // A damaged header (one bit of the first-sequence field) over valid records.
    let first = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&first).unwrap();
    bytes[24] ^= 0x01;
    fs::write(&first, &bytes).unwrap();
    // A short all-zero file, as a crash right after creating a segment leaves.
    let numbers = procmond_wal::wal::recovery::list_segments(dir.path()).unwrap();
    let next = numbers.last().unwrap().0 + 1;
    fs::write(segment_path(dir.path(), next), vec![0u8; 4096]).unwrap();
    let (wal, report) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    assert_eq!(report.events, 8);
    assert_eq!(report.next_sequence, 9);
    runtime().block_on(async {
        assert_eq!(wal.append(event(9), kind(9)).await.unwrap(), 9);
        wal.close().await.unwrap();
    });
    // The damaged segment was not written to.
    assert_eq!(fs::read(&first).unwrap(), bytes);
}
