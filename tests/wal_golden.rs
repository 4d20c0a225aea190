//! The golden segment: a committed WAL file whose bytes lock the on-disk format, so that a
//! dependency bump (bincode, serde, chrono, crc32fast) or a refactor cannot change it silently.
//!
//! `tests/data/golden-procmond-00001.wal` holds one segment (number 1): the header block and
//! three events (one per `EventKind`; every `Option` field both `Some` and `None`; unicode and
//! empty strings; platform metadata; a pre-1970 time) plus a checkpoint, padded with zeros to
//! the end of the block, exactly as the writer lays them out — 8 KiB, not a preallocated file.
//!
//! How it was generated: `PROCMOND_WAL_WRITE_GOLDEN=1 cargo test --test wal_golden` writes the
//! file from `golden_records()` with the format functions and fixed times (the writer itself
//! stamps `Utc::now()`). Regenerate only for a deliberate format change, together with a new
//! format version and `docs/format.md`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::DateTime;
use procmond_wal::wal::format::{
    self, CheckpointEntry, FORMAT_VERSION, FRAME_HEADER_BYTES, Record, SEGMENT_HEADER_BYTES,
    SegmentHeader, WalEntry, align_up,
};
use procmond_wal::wal::recovery::read_dir;
use procmond_wal::wal::scan::{ScanItem, SegmentScan};
use procmond_wal::wal::{Wal, WalReader};
use procmond_wal::{EventKind, ProcessEvent};

const SEGMENT_NUMBER: u64 = 1;
const CREATED_UNIX_NS: i64 = 1_700_000_000_000_000_000;
const T0_NS: i64 = 1_700_000_000_123_456_789;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden-procmond-00001.wal")
}

fn at(ns: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_nanos(ns)
}

fn golden_header() -> SegmentHeader {
    SegmentHeader {
        version: FORMAT_VERSION,
        segment_number: SEGMENT_NUMBER,
        first_sequence: 1,
        created_unix_ns: CREATED_UNIX_NS,
    }
}

/// Every field present, unicode in argv and metadata.
fn full_event() -> ProcessEvent {
    let mut metadata = BTreeMap::new();
    metadata.insert("linux.cgroup".into(), "/system.slice/sshd.service".into());
    metadata.insert("linux.pid_namespace".into(), "4026531836".into());
    metadata.insert("ünïcode.key".into(), "välue ✓".into());
    ProcessEvent {
        pid: 4242,
        ppid: Some(1),
        name: "sshd".into(),
        executable_path: Some("/usr/sbin/sshd".into()),
        command_line: vec![
            "/usr/sbin/sshd".into(),
            "-D".into(),
            "-o".into(),
            "Banner=héllo wörld".into(),
        ],
        start_time: Some(at(1_699_999_990_000_000_001)),
        cpu_usage_percent: Some(12.5),
        memory_usage_bytes: Some(7_340_032),
        executable_hash: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        hash_algorithm: Some("sha256".into()),
        user_id: Some("0".into()),
        accessible: true,
        file_exists: true,
        collection_time: at(T0_NS - 1_000),
        platform_metadata: metadata,
        truncated: false,
    }
}

/// Every optional field absent, empty name, no argv, no metadata, a time before 1970.
fn minimal_event() -> ProcessEvent {
    ProcessEvent::new(7, "", at(-1))
}

/// A mix: some options set, an empty argv entry, an empty metadata value, `truncated` set.
fn mixed_event() -> ProcessEvent {
    let mut event = ProcessEvent::new(2, "kworker/0:1", at(T0_NS + 500));
    event.command_line = vec![String::new()];
    event.start_time = Some(at(0));
    event.cpu_usage_percent = Some(99.75);
    event.hash_algorithm = Some("blake3".into());
    event.file_exists = true;
    event.platform_metadata.insert("k".into(), String::new());
    event.truncated = true;
    event
}

/// The records of the golden segment, in file order.
fn golden_records() -> Vec<Record> {
    let events = [
        (full_event(), EventKind::Start),
        (minimal_event(), EventKind::Stop),
        (mixed_event(), EventKind::Modify),
    ];
    let mut records: Vec<Record> = (1u64..)
        .zip(events)
        .map(|(sequence, (event, kind))| {
            Record::Event(WalEntry {
                sequence,
                timestamp: at(T0_NS + (sequence as i64 - 1) * 1_000),
                event,
                kind,
            })
        })
        .collect();
    records.push(Record::Checkpoint(CheckpointEntry {
        acked_through: 2,
        timestamp: at(T0_NS + 3_000),
    }));
    records
}

/// The segment bytes as the format functions produce them today, padded to whole blocks.
fn encode_golden() -> Vec<u8> {
    let mut bytes = golden_header().encode_block().to_vec();
    for record in golden_records() {
        match record {
            Record::Event(entry) => {
                let event_bytes = format::encode_event(&entry.event).unwrap();
                format::push_event_frame(
                    &mut bytes,
                    SEGMENT_NUMBER,
                    entry.sequence,
                    entry.timestamp,
                    entry.kind,
                    &event_bytes,
                );
            }
            Record::Checkpoint(checkpoint) => {
                format::push_checkpoint_frame(&mut bytes, SEGMENT_NUMBER, &checkpoint);
            }
        }
    }
    bytes.resize(align_up(bytes.len(), SEGMENT_HEADER_BYTES), 0);
    bytes
}

/// The committed bytes (written first, once per run, when regenerating).
fn committed() -> Vec<u8> {
    static REGENERATE: std::sync::Once = std::sync::Once::new();
    REGENERATE.call_once(|| {
        if std::env::var_os("PROCMOND_WAL_WRITE_GOLDEN").is_some() {
            let path = golden_path();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, encode_golden()).unwrap();
        }
    });
    std::fs::read(golden_path()).unwrap()
}

/// (offset, payload length, kind byte) of every frame, read with nothing but the documented
/// layout: frames from offset 4096, 16-byte header, padding to 8, a zero length word ends.
fn frames_by_hand(bytes: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut frames = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        if length == 0 {
            return frames;
        }
        frames.push((offset, length, bytes[offset + 4]));
        offset += align_up(FRAME_HEADER_BYTES + length, 8);
    }
}

#[test]
fn the_golden_segment_decodes_to_the_known_records() {
    let bytes = committed();
    assert_eq!(bytes.len(), 8192, "header block + one block of records");
    assert_eq!(SegmentHeader::decode(&bytes), Ok(golden_header()));
    let items: Vec<ScanItem> = SegmentScan::new(&bytes[SEGMENT_HEADER_BYTES..], SEGMENT_NUMBER)
        .map(|item| item.unwrap())
        .collect();
    let frames = frames_by_hand(&bytes);
    let records = golden_records();
    assert_eq!(items.len(), records.len() + 1);
    for ((item, record), (offset, length, _)) in items.iter().zip(&records).zip(&frames) {
        assert_eq!(
            item,
            &ScanItem::Record {
                offset: *offset as u64,
                frame_bytes: align_up(FRAME_HEADER_BYTES + length, 8) as u64,
                record: record.clone(),
            }
        );
    }
    let (last_offset, last_length, _) = *frames.last().unwrap();
    let data_end = (last_offset + align_up(FRAME_HEADER_BYTES + last_length, 8)) as u64;
    assert_eq!(
        items.last(),
        Some(&ScanItem::Tail {
            offset: data_end,
            nonzero_end: data_end
        })
    );
}

#[test]
fn encoding_the_known_records_today_gives_the_committed_bytes() {
    let committed = committed();
    let today = encode_golden();
    assert_eq!(today.len(), committed.len());
    let first_difference = today.iter().zip(&committed).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "the encoding changed at byte {first_difference:?}: a format change needs a new version"
    );
}

/// The layout and CRC coverage of docs/format.md, checked with crc32fast and bincode directly
/// rather than through the crate's own decoder.
#[test]
fn the_golden_bytes_follow_the_documented_layout() {
    let bytes = committed();
    assert_eq!(&bytes[0..8], b"PMWALSEG");
    assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
    assert_eq!(&bytes[12..16], &[0; 4]);
    assert_eq!(&bytes[16..24], &SEGMENT_NUMBER.to_le_bytes());
    assert_eq!(&bytes[24..32], &1u64.to_le_bytes());
    assert_eq!(&bytes[32..40], &CREATED_UNIX_NS.to_le_bytes());
    assert_eq!(
        &bytes[40..44],
        &crc32fast::hash(&bytes[0..40]).to_le_bytes()
    );
    assert!(bytes[44..SEGMENT_HEADER_BYTES].iter().all(|&b| b == 0));

    let frames = frames_by_hand(&bytes);
    let records = golden_records();
    assert_eq!(frames.len(), records.len());
    let legacy = bincode::config::legacy();
    for ((offset, length, kind), record) in frames.iter().copied().zip(&records) {
        let header = &bytes[offset..offset + FRAME_HEADER_BYTES];
        let payload = &bytes[offset + FRAME_HEADER_BYTES..offset + FRAME_HEADER_BYTES + length];
        assert_eq!(offset % 8, 0);
        assert_eq!(&header[5..8], &[0; 3]);
        assert_eq!(&header[12..16], &[0; 4]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&SEGMENT_NUMBER.to_le_bytes());
        crc.update(&header[0..8]);
        crc.update(payload);
        assert_eq!(&header[8..12], &crc.finalize().to_le_bytes());
        let padding_end = offset + align_up(FRAME_HEADER_BYTES + length, 8);
        assert!(
            bytes[offset + FRAME_HEADER_BYTES + length..padding_end]
                .iter()
                .all(|&b| b == 0)
        );
        match record {
            Record::Event(entry) => {
                assert_eq!(kind, 1);
                assert_eq!(
                    bincode::serde::encode_to_vec(entry, legacy).unwrap(),
                    payload
                );
                let (decoded, used): (WalEntry, usize) =
                    bincode::serde::decode_from_slice(payload, legacy).unwrap();
                assert_eq!((&decoded, used), (entry, length));
                // Fixed prefix: sequence, then the timestamp in nanoseconds; the kind's u32
                // variant index ends the payload.
                assert_eq!(&payload[0..8], &entry.sequence.to_le_bytes());
                let ns = entry.timestamp.timestamp_nanos_opt().unwrap();
                assert_eq!(&payload[8..16], &ns.to_le_bytes());
                let index = EventKind::ALL
                    .iter()
                    .position(|k| *k == entry.kind)
                    .unwrap();
                assert_eq!(&payload[length - 4..], &(index as u32).to_le_bytes());
            }
            Record::Checkpoint(checkpoint) => {
                assert_eq!((kind, length), (2, 16));
                assert_eq!(
                    bincode::serde::encode_to_vec(checkpoint, legacy).unwrap(),
                    payload
                );
            }
        }
    }
    let (offset, length, _) = *frames.last().unwrap();
    let data_end = offset + align_up(FRAME_HEADER_BYTES + length, 8);
    assert!(bytes[data_end..].iter().all(|&b| b == 0));
}

#[test]
fn a_log_holding_the_golden_segment_replays_it_and_accepts_appends() {
    let records = golden_records();
    let entries: Vec<WalEntry> = records
        .iter()
        .filter_map(|record| match record {
            Record::Event(entry) => Some(entry.clone()),
            Record::Checkpoint(_) => None,
        })
        .collect();
    for backend in common::BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("procmond-00001.wal"), committed()).unwrap();
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{:?}", report.damage);
        assert_eq!((report.events, report.checkpoints), (3, 1));
        assert_eq!((report.acked_through, report.next_sequence), (2, 4));
        let replayed: Vec<WalEntry> = WalReader::open(dir.path(), 1)
            .unwrap()
            .map(|entry| entry.unwrap())
            .collect();
        assert_eq!(replayed, entries);

        let config = common::small_config(dir.path(), backend);
        let (wal, report) = Wal::open(config).unwrap();
        assert_eq!((report.next_sequence, report.acked_through), (4, 2));
        let appended = common::runtime().block_on(async {
            let sequence = wal
                .append(common::event(1), EventKind::Start)
                .await
                .unwrap();
            wal.close().await.unwrap();
            sequence
        });
        assert_eq!(appended, 4);
        let replayed: Vec<WalEntry> = WalReader::open(dir.path(), 1)
            .unwrap()
            .map(|entry| entry.unwrap())
            .collect();
        assert_eq!(replayed.len(), 4);
        assert_eq!(&replayed[..3], &entries[..]);
        assert_eq!(replayed[3].event, common::event(1));
    }
}
