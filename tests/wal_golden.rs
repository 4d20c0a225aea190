//! The golden segments: committed WAL files whose bytes lock the on-disk format, so that a
//! dependency bump (bincode, serde, chrono, crc32fast) or a refactor cannot change it silently.
//!
//! `tests/data/golden-v2-procmond-00001.wal` holds one version 2 segment (number 1): the header
//! block (with a fixed salt) and three events (one per `EventKind`; every `Option` field both
//! `Some` and `None`; unicode and empty strings; platform metadata; a pre-1970 time) in two
//! groups with their durable watermarks, a checkpoint and a closing watermark record, padded
//! with zeros to the end of the block, exactly as the writer lays them out — 8 KiB, not a
//! preallocated file. `tests/data/golden-v1-procmond-00001.wal` holds the same three events
//! and the checkpoint in version 1, which must stay readable.
//!
//! How the version 2 file was generated: `PROCMOND_WAL_WRITE_GOLDEN=1 cargo test --test
//! wal_golden` writes it from `golden_records()` with the format functions and fixed times
//! (the writer itself stamps `Utc::now()`). Regenerate only for a deliberate format change,
//! together with a new format version and `docs/format.md`. The version 1 file is never
//! regenerated.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::DateTime;
use procmond_wal::wal::format::{
    self, CheckpointEntry, FORMAT_VERSION, FORMAT_VERSION_1, FRAME_HEADER_BYTES,
    FRAME_HEADER_BYTES_V1, FrameLayout, Record, SEGMENT_HEADER_BYTES, SegmentHeader, WalEntry,
    WatermarkEntry, align_up,
};
use procmond_wal::wal::recovery::read_dir;
use procmond_wal::wal::scan::{ScanItem, SegmentScan};
use procmond_wal::wal::{Wal, WalReader};
use procmond_wal::{EventKind, ProcessEvent};

const SEGMENT_NUMBER: u64 = 1;
const CREATED_UNIX_NS: i64 = 1_700_000_000_000_000_000;
const T0_NS: i64 = 1_700_000_000_123_456_789;
const SALT: u64 = 0x5eed_0f90_1de2_b7a5;

fn golden_path(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/golden-v{version}-procmond-00001.wal"))
}

fn at(ns: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_nanos(ns)
}

fn golden_header(version: u32) -> SegmentHeader {
    SegmentHeader {
        version,
        segment_number: SEGMENT_NUMBER,
        first_sequence: 1,
        created_unix_ns: CREATED_UNIX_NS,
        salt: if version == FORMAT_VERSION_1 { 0 } else { SALT },
    }
}

fn layout(version: u32) -> FrameLayout {
    golden_header(version).frame_layout()
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

/// The events and the checkpoint of both golden segments, in file order.
fn golden_events_and_checkpoint() -> Vec<Record> {
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

/// The records of the golden segment of `version` in file order, each with the durable
/// watermark in its frame header: events 1 and 2 form the first group (nothing durable yet),
/// event 3 and the checkpoint the second (2 durable), and a clean close adds a watermark
/// record (3 durable). Version 1 has neither watermarks nor the watermark record.
fn golden_records(version: u32) -> Vec<(u64, Record)> {
    let mut records: Vec<(u64, Record)> = golden_events_and_checkpoint()
        .into_iter()
        .zip([0, 0, 2, 2])
        .map(|(record, watermark)| (watermark, record))
        .collect();
    if version == FORMAT_VERSION_1 {
        for (watermark, _) in &mut records {
            *watermark = 0;
        }
    } else {
        records.push((
            3,
            Record::Watermark(WatermarkEntry {
                durable_watermark: 3,
                timestamp: at(T0_NS + 4_000),
            }),
        ));
    }
    records
}

/// The version 2 segment bytes as the format functions produce them today, padded to whole
/// blocks.
fn encode_golden() -> Vec<u8> {
    let header = golden_header(FORMAT_VERSION);
    let seed = header.frame_seed();
    let mut bytes = header.encode_block().to_vec();
    for (watermark, record) in golden_records(FORMAT_VERSION) {
        match record {
            Record::Event(entry) => {
                let event_bytes = format::encode_event(&entry.event).unwrap();
                format::push_event_frame(
                    &mut bytes,
                    seed,
                    watermark,
                    entry.sequence,
                    entry.timestamp,
                    entry.kind,
                    &event_bytes,
                );
            }
            Record::Checkpoint(checkpoint) => {
                format::push_checkpoint_frame(&mut bytes, seed, watermark, &checkpoint);
            }
            Record::Watermark(entry) => {
                assert_eq!(entry.durable_watermark, watermark);
                format::push_watermark_frame(&mut bytes, seed, watermark, entry.timestamp);
            }
        }
    }
    bytes.resize(align_up(bytes.len(), SEGMENT_HEADER_BYTES), 0);
    bytes
}

/// The committed bytes of `version` (version 2 written first, once per run, when
/// regenerating).
fn committed(version: u32) -> Vec<u8> {
    static REGENERATE: std::sync::Once = std::sync::Once::new();
    REGENERATE.call_once(|| {
        if std::env::var_os("PROCMOND_WAL_WRITE_GOLDEN").is_some() {
            let path = golden_path(FORMAT_VERSION);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, encode_golden()).unwrap();
        }
    });
    std::fs::read(golden_path(version)).unwrap()
}

fn header_bytes(version: u32) -> usize {
    if version == FORMAT_VERSION_1 {
        FRAME_HEADER_BYTES_V1
    } else {
        FRAME_HEADER_BYTES
    }
}

/// (offset, payload length, kind byte) of every frame, read with nothing but the documented
/// layout: frames from offset 4096, 16- or 24-byte header, padding to 8, a zero length word
/// ends.
fn frames_by_hand(bytes: &[u8], version: u32) -> Vec<(usize, usize, u8)> {
    let mut frames = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    loop {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        if length == 0 {
            return frames;
        }
        frames.push((offset, length, bytes[offset + 4]));
        offset += align_up(header_bytes(version) + length, 8);
    }
}

const VERSIONS: [u32; 2] = [FORMAT_VERSION_1, FORMAT_VERSION];

#[test]
fn the_golden_segments_decode_to_the_known_records() {
    for version in VERSIONS {
        let bytes = committed(version);
        assert_eq!(bytes.len(), 8192, "header block + one block of records");
        assert_eq!(SegmentHeader::decode(&bytes), Ok(golden_header(version)));
        let items: Vec<ScanItem> =
            SegmentScan::new(&bytes[SEGMENT_HEADER_BYTES..], layout(version))
                .map(|item| item.unwrap())
                .collect();
        let frames = frames_by_hand(&bytes, version);
        let records = golden_records(version);
        assert_eq!(items.len(), records.len() + 1);
        assert_eq!(frames.len(), records.len());
        for ((item, (watermark, record)), (offset, length, _)) in
            items.iter().zip(&records).zip(&frames)
        {
            assert_eq!(
                item,
                &ScanItem::Record {
                    offset: *offset as u64,
                    frame_bytes: align_up(header_bytes(version) + length, 8) as u64,
                    record: record.clone(),
                    durable_watermark: *watermark,
                    padding_is_zero: true,
                }
            );
        }
        let (last_offset, last_length, _) = *frames.last().unwrap();
        let data_end = (last_offset + align_up(header_bytes(version) + last_length, 8)) as u64;
        assert_eq!(
            items.last(),
            Some(&ScanItem::Tail {
                offset: data_end,
                nonzero_end: data_end
            })
        );
    }
}

#[test]
fn encoding_the_known_records_today_gives_the_committed_bytes() {
    let committed = committed(FORMAT_VERSION);
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
    for version in VERSIONS {
        let bytes = committed(version);
        assert_eq!(&bytes[0..8], b"PMWALSEG");
        assert_eq!(&bytes[8..12], &version.to_le_bytes());
        assert_eq!(&bytes[12..16], &[0; 4]);
        assert_eq!(&bytes[16..24], &SEGMENT_NUMBER.to_le_bytes());
        assert_eq!(&bytes[24..32], &1u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &CREATED_UNIX_NS.to_le_bytes());
        let header_end = if version == FORMAT_VERSION_1 {
            assert_eq!(
                &bytes[40..44],
                &crc32fast::hash(&bytes[0..40]).to_le_bytes()
            );
            44
        } else {
            assert_eq!(&bytes[40..48], &SALT.to_le_bytes());
            assert_eq!(
                &bytes[48..52],
                &crc32fast::hash(&bytes[0..48]).to_le_bytes()
            );
            // The salt's copy, read only when the header is damaged.
            assert_eq!(&bytes[2048..2056], &SALT.to_le_bytes());
            assert!(bytes[52..2048].iter().all(|&b| b == 0));
            2056
        };
        assert!(
            bytes[header_end..SEGMENT_HEADER_BYTES]
                .iter()
                .all(|&b| b == 0)
        );

        let frames = frames_by_hand(&bytes, version);
        let records = golden_records(version);
        assert_eq!(frames.len(), records.len());
        let legacy = bincode::config::legacy();
        let frame_header_bytes = header_bytes(version);
        for ((offset, length, kind), (watermark, record)) in frames.iter().copied().zip(&records) {
            let header = &bytes[offset..offset + frame_header_bytes];
            let payload = &bytes[offset + frame_header_bytes..offset + frame_header_bytes + length];
            assert_eq!(offset % 8, 0);
            assert_eq!(&header[5..8], &[0; 3]);
            assert_eq!(&header[12..16], &[0; 4]);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&SEGMENT_NUMBER.to_le_bytes());
            if version == FORMAT_VERSION_1 {
                crc.update(&header[0..8]);
            } else {
                assert_eq!(&header[16..24], &watermark.to_le_bytes());
                crc.update(&SALT.to_le_bytes());
                crc.update(&header[0..8]);
                crc.update(&header[12..24]);
            }
            crc.update(payload);
            assert_eq!(&header[8..12], &crc.finalize().to_le_bytes());
            let padding_end = offset + align_up(frame_header_bytes + length, 8);
            assert!(
                bytes[offset + frame_header_bytes + length..padding_end]
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
                    // Fixed prefix: sequence, then the timestamp in nanoseconds; the kind's
                    // u32 variant index ends the payload.
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
                Record::Watermark(entry) => {
                    assert_eq!((kind, length), (3, 16));
                    assert_eq!(&payload[0..8], &entry.durable_watermark.to_le_bytes());
                    let ns = entry.timestamp.timestamp_nanos_opt().unwrap();
                    assert_eq!(&payload[8..16], &ns.to_le_bytes());
                }
            }
        }
        let (offset, length, _) = *frames.last().unwrap();
        let data_end = offset + align_up(frame_header_bytes + length, 8);
        assert!(bytes[data_end..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_log_holding_a_golden_segment_replays_it_and_accepts_appends() {
    let entries: Vec<WalEntry> = golden_events_and_checkpoint()
        .into_iter()
        .filter_map(|record| match record {
            Record::Event(entry) => Some(entry),
            _ => None,
        })
        .collect();
    for version in VERSIONS {
        for backend in common::BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("procmond-00001.wal"), committed(version)).unwrap();
            let report = read_dir(dir.path()).unwrap();
            assert!(report.is_clean(), "{:?}", report.damage);
            assert_eq!((report.events, report.checkpoints), (3, 1));
            assert_eq!((report.acked_through, report.next_sequence), (2, 4));
            let expected_watermark = if version == FORMAT_VERSION_1 { 0 } else { 3 };
            assert_eq!(report.durable_watermark, expected_watermark);
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
            let report = read_dir(dir.path()).unwrap();
            assert!(report.is_clean(), "{:?}", report.damage);
            let replayed: Vec<WalEntry> = WalReader::open(dir.path(), 1)
                .unwrap()
                .map(|entry| entry.unwrap())
                .collect();
            assert_eq!(replayed.len(), 4);
            assert_eq!(&replayed[..3], &entries[..]);
            assert_eq!(replayed[3].event, common::event(1));
        }
    }
}

/// An upgraded directory (a version 1 segment, then version 2 ones) whose version 1 header is
/// damaged: the salt of the version 2 headers does not fit its frames, so its first frame
/// shows it is version 1 and its records are still read.
#[test]
fn a_damaged_version_1_header_beside_version_2_segments_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("procmond-00001.wal"),
        committed(FORMAT_VERSION_1),
    )
    .unwrap();
    let config = common::small_config(dir.path(), procmond_wal::wal::BackendChoice::Portable);
    let (wal, _) = Wal::open(config).unwrap();
    common::runtime().block_on(async {
        wal.append(common::event(1), EventKind::Start)
            .await
            .unwrap();
        wal.close().await.unwrap();
    });
    let report = read_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    assert_eq!(report.segments[1].frame_version, FORMAT_VERSION);
    let path = dir.path().join("procmond-00001.wal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(report.segments[0].frame_version, FORMAT_VERSION_1);
    assert_eq!((report.events, report.lost_events), (4, 0));
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    assert_eq!(report.next_sequence, 5);
}
