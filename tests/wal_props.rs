//! Property tests of the format and of truncation: decoders never panic on arbitrary bytes,
//! any event round-trips through a real frame, truncation is idempotent and never grows an
//! event; plus a WAL round trip of platform metadata through open/append/reopen/replay.

mod common;

use common::strategies::{config, kind, process_event, time_ns};

use std::collections::BTreeMap;

use chrono::DateTime;
use proptest::prelude::*;

use procmond_wal::event::limits;
use procmond_wal::wal::format::{
    self, FRAME_HEADER_BYTES, FrameLayout, FrameProbe, FrameSeed, Record, RecordKind,
    SEGMENT_HEADER_BYTES, SegmentHeader, WalEntry,
};
use procmond_wal::wal::scan::{ScanItem, SegmentScan};
use procmond_wal::wal::{Wal, WalReader};
use procmond_wal::{EventKind, ProcessEvent};

const SALT: u64 = 0x0bad_5a17;

fn layout(segment: u64) -> FrameLayout {
    FrameLayout::V2(seed(segment))
}

fn seed(segment: u64) -> FrameSeed {
    FrameSeed {
        segment_number: segment,
        salt: SALT,
    }
}

/// Bytes that look like a (version 2) frame (small length, a known kind, zero reserved bytes)
/// with a CRC that is right for `segment` when `crc_right`, so decoding of garbage payloads is
/// reached.
fn frame_like(
    payload: &[u8],
    kind: u8,
    segment: u64,
    watermark: u64,
    crc_right: bool,
    crc_noise: u32,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&[kind, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&watermark.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment.to_le_bytes());
    crc.update(&SALT.to_le_bytes());
    crc.update(&bytes[0..8]);
    crc.update(&bytes[12..24]);
    crc.update(payload);
    let crc = if crc_right { crc.finalize() } else { crc_noise };
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes.resize(format::align_up(bytes.len(), 8), 0);
    bytes
}

fn scan_all(bytes: &[u8], segment: u64) -> Vec<ScanItem> {
    SegmentScan::new(bytes, layout(segment))
        .map(|item| item.unwrap())
        .collect()
}

/// What any scan must satisfy: items in file order, within the bytes, ending with one tail.
fn check_scan(items: &[ScanItem], len: usize) {
    let end = (SEGMENT_HEADER_BYTES + len) as u64;
    let mut position = SEGMENT_HEADER_BYTES as u64;
    for (index, item) in items.iter().enumerate() {
        match item {
            ScanItem::Record {
                offset,
                frame_bytes,
                ..
            } => {
                assert!(*offset >= position && *frame_bytes > 0);
                assert_eq!(offset % 8, 0);
                position = offset + frame_bytes;
            }
            ScanItem::Damage {
                offset, len_bytes, ..
            } => {
                assert!(*offset >= position && *len_bytes > 0);
                position = offset + len_bytes;
            }
            ScanItem::Unreadable { .. } => panic!("in-memory bytes are always readable"),
            ScanItem::Tail {
                offset,
                nonzero_end,
            } => {
                assert_eq!(index, items.len() - 1, "the tail is last");
                assert!(*offset >= position && offset <= nonzero_end);
                position = *nonzero_end;
            }
        }
        assert!(position <= end, "{item:?} runs past the {len} bytes");
    }
    assert!(matches!(items.last(), Some(ScanItem::Tail { .. })));
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        segment in any::<u64>(),
        at_end in any::<bool>(),
    ) {
        let _ = format::probe_frame(&bytes, layout(segment), at_end);
        let _ = format::probe_frame(&bytes, FrameLayout::V1 { segment_number: segment }, at_end);
        let _ = format::decode_payload(RecordKind::Event, &bytes);
        let _ = format::decode_payload(RecordKind::Checkpoint, &bytes);
        let _ = format::decode_payload(RecordKind::Watermark, &bytes);
        if let Ok(header) = SegmentHeader::decode(&bytes) {
            let used = if header.version == format::FORMAT_VERSION_1 { 44 } else { 52 };
            prop_assert_eq!(&header.encode_block()[..used], &bytes[..used]);
        }
        check_scan(&scan_all(&bytes, segment), bytes.len());
    }

    #[test]
    fn crc_valid_garbage_frames_never_panic_and_are_skipped(
        payloads in proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 1..300),
                1u8..=3,
                any::<bool>(),
                any::<u32>(),
                any::<u64>(),
            ),
            1..6,
        ),
        noise in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let segment = 9;
        let mut bytes = Vec::new();
        for (payload, kind, crc_right, crc_noise, watermark) in &payloads {
            bytes.extend(frame_like(payload, *kind, segment, *watermark, *crc_right, *crc_noise));
        }
        bytes.extend(&noise);
        let kind = match payloads[0].1 {
            1 => RecordKind::Event,
            2 => RecordKind::Checkpoint,
            _ => RecordKind::Watermark,
        };
        let _ = format::decode_payload(kind, &payloads[0].0);
        let items = scan_all(&bytes, segment);
        check_scan(&items, bytes.len());
        // A frame whose CRC is wrong is never a record.
        let wrong_crc = payloads.iter().filter(|(_, _, crc_right, _, _)| !crc_right).count();
        let records = items.iter().filter(|i| matches!(i, ScanItem::Record { .. })).count();
        prop_assert!(records <= payloads.len() - wrong_crc);
    }

    #[test]
    fn any_event_round_trips_through_a_real_frame(
        event in process_event(),
        kind in kind(),
        sequence in 1u64..,
        timestamp in time_ns(),
        segment in 1u64..,
        salt in 1u64..,
        watermark_below in any::<u64>(),
    ) {
        let event_bytes = format::encode_event(&event).unwrap();
        let mut frame = Vec::new();
        let seed = FrameSeed { segment_number: segment, salt };
        let watermark = watermark_below % sequence;
        let len = format::push_event_frame(
            &mut frame, seed, watermark, sequence, timestamp, kind, &event_bytes,
        );
        prop_assert_eq!(len, frame.len());
        prop_assert_eq!(len % 8, 0);
        let entry = WalEntry { sequence, timestamp, event, kind };
        let FrameProbe::Valid {
            kind: record_kind, payload, frame_bytes, durable_watermark, padding_is_zero,
        } = format::probe_frame(&frame, FrameLayout::V2(seed), true)
        else {
            return Err(TestCaseError::fail("frame not valid"));
        };
        prop_assert_eq!(frame_bytes, len);
        prop_assert_eq!(durable_watermark, watermark);
        prop_assert!(padding_is_zero);
        prop_assert_eq!(payload, &format::encode_entry_with_bincode(&entry).unwrap()[..]);
        prop_assert_eq!(
            format::decode_payload(record_kind, payload).unwrap(),
            Record::Event(entry)
        );
        // The same bytes claimed by another segment, or by another WAL, never validate.
        let other_segment = FrameSeed { segment_number: segment.wrapping_add(1), salt };
        prop_assert_eq!(
            format::probe_frame(&frame, FrameLayout::V2(other_segment), true),
            FrameProbe::Invalid
        );
        let other_wal = FrameSeed { segment_number: segment, salt: salt.wrapping_add(1) };
        prop_assert_eq!(
            format::probe_frame(&frame, FrameLayout::V2(other_wal), true),
            FrameProbe::Invalid
        );
    }
}

/// A string of `count` copies of one character (1 to 4 UTF-8 bytes), so cuts land inside
/// multi-byte characters.
fn repeated(max_count: usize) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!['a', 'é', '✓', '😀']),
        0..max_count,
    )
        .prop_map(|(c, count)| std::iter::repeat_n(c, count).collect())
}

prop_compose! {
    fn oversized_event()(
        name in repeated(2 * limits::NAME_BYTES),
        executable_path in proptest::option::of(repeated(2 * limits::SHORT_FIELD_BYTES)),
        user_id in proptest::option::of(repeated(2 * limits::SHORT_FIELD_BYTES)),
        command_line in prop_oneof![
            proptest::collection::vec(repeated(60_000), 0..6),
            proptest::collection::vec(repeated(8), 0..2 * limits::ARGV_ENTRIES),
        ],
        metadata in prop_oneof![
            proptest::collection::btree_map(
                (0u16..400, repeated(2 * limits::METADATA_KEY_BYTES))
                    .prop_map(|(i, key)| format!("{i}{key}")),
                repeated(2 * limits::METADATA_VALUE_BYTES),
                0..12,
            ),
            proptest::collection::btree_map(
                (0u16..1000, repeated(300)).prop_map(|(i, key)| format!("{i:04}{key}")),
                repeated(4),
                0..2 * limits::METADATA_ENTRIES,
            ),
        ],
        collection_secs in -(1i64 << 42)..(1i64 << 42),
        start_secs in proptest::option::of(-(1i64 << 42)..(1i64 << 42)),
    ) -> ProcessEvent {
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        let mut event = ProcessEvent::new(1, name, at(collection_secs));
        event.executable_path = executable_path;
        event.user_id = user_id;
        event.command_line = command_line;
        event.platform_metadata = metadata;
        event.start_time = start_secs.map(at);
        event
    }
}

/// Encoded size; `None` for times outside the i64-nanosecond range, which do not encode
/// until truncation clamps them.
fn encoded_len(event: &ProcessEvent) -> Option<usize> {
    let config = bincode::config::legacy();
    bincode::serde::encode_to_vec(event, config)
        .ok()
        .map(|bytes| bytes.len())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn truncation_is_idempotent_never_grows_and_fits_the_limits(event in oversized_event()) {
        let mut once = event.clone();
        once.truncate_to_limits();
        let mut twice = once.clone();
        twice.truncate_to_limits();
        prop_assert_eq!(&twice, &once);
        prop_assert!(once.text_bytes() <= event.text_bytes());
        let once_len = encoded_len(&once);
        prop_assert!(once_len.is_some());
        if let Some(original_len) = encoded_len(&event) {
            prop_assert!(once_len <= Some(original_len));
        }
        prop_assert!(once.name.len() <= limits::NAME_BYTES);
        prop_assert!(event.name.starts_with(&once.name));
        prop_assert!(once.command_line.len() <= limits::ARGV_ENTRIES);
        prop_assert!(
            once.command_line.iter().map(String::len).sum::<usize>() <= limits::ARGV_TOTAL_BYTES
        );
        prop_assert!(once.platform_metadata.len() <= limits::METADATA_ENTRIES);
        prop_assert!(
            once.platform_metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                <= limits::METADATA_TOTAL_BYTES
        );
        prop_assert!(once.collection_time.timestamp_nanos_opt().is_some());
        prop_assert!(format::encode_event(&once).is_ok());
        // `truncated` says exactly whether anything changed.
        let mut unflagged = once.clone();
        unflagged.truncated = event.truncated;
        prop_assert_eq!(once.truncated, unflagged != event || event.truncated);
    }
}

fn metadata_cases() -> Vec<BTreeMap<String, String>> {
    let mut many = BTreeMap::new();
    for i in 0..limits::METADATA_ENTRIES {
        many.insert(format!("key.{i:03}"), format!("value {i} ✓"));
    }
    let mut edge = BTreeMap::new();
    edge.insert(String::new(), String::new());
    edge.insert("linux.cgroup".into(), "/user.slice/user-1000.slice".into());
    edge.insert("ünïcödé 🔑".into(), "välue\n\t\0with controls".into());
    edge.insert(
        "k".repeat(limits::METADATA_KEY_BYTES),
        "v".repeat(limits::METADATA_VALUE_BYTES),
    );
    vec![BTreeMap::new(), edge, many]
}

#[test]
fn platform_metadata_survives_append_reopen_and_replay() {
    let cases = metadata_cases();
    for backend in common::BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = common::small_config(dir.path(), backend);
        let events: Vec<ProcessEvent> = cases
            .iter()
            .enumerate()
            .map(|(i, metadata)| {
                let mut event = common::event(i as u64);
                event.platform_metadata = metadata.clone();
                event
            })
            .collect();
        let rt = common::runtime();
        let (wal, _) = Wal::open(config.clone()).unwrap();
        rt.block_on(async {
            for event in &events {
                wal.append(event.clone(), EventKind::Modify).await.unwrap();
            }
            wal.close().await.unwrap();
        });
        let (wal, report) = Wal::open(config).unwrap();
        assert_eq!(report.events, events.len() as u64);
        let replayed: Vec<ProcessEvent> = wal
            .replay_from(1)
            .unwrap()
            .map(|entry| entry.unwrap().event)
            .collect();
        assert_eq!(replayed, events, "{backend:?}");
        for (event, metadata) in replayed.iter().zip(&cases) {
            assert_eq!(&event.platform_metadata, metadata);
            assert!(!event.truncated);
        }
        rt.block_on(wal.close()).unwrap();
        let again: Vec<ProcessEvent> = WalReader::open(dir.path(), 2)
            .unwrap()
            .map(|entry| entry.unwrap().event)
            .collect();
        assert_eq!(again, events[1..]);
    }
}

/// Segment bytes (everything after the header block) behind a positional reader whose reads
/// fail with EIO whenever they touch one of `bad_blocks` (4 KiB blocks of the file).
struct FailingBytes {
    file: Vec<u8>,
    bad_blocks: Vec<u64>,
}

impl procmond_wal::io::read::ReadAt for FailingBytes {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let end = offset + buf.len() as u64;
        if self
            .bad_blocks
            .iter()
            .any(|&block| block * 4096 < end && (block + 1) * 4096 > offset)
        {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        let mut slice = &self.file[..];
        procmond_wal::io::read::ReadAt::read_at(&mut slice, buf, offset)
    }

    fn len_bytes(&mut self) -> std::io::Result<u64> {
        Ok(self.file.len() as u64)
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Unreadable blocks never end a scan: each is reported once, exactly where it is, no
    /// record is read from it, and every frame clear of them is still found.
    #[test]
    fn unreadable_blocks_are_reported_and_the_rest_is_scanned(
        count in 1u64..120,
        bad in proptest::collection::btree_set(1u64..12, 0..4),
    ) {
        let mut file = vec![0u8; SEGMENT_HEADER_BYTES];
        let mut spans = Vec::new();
        for sequence in 1..=count {
            let start = file.len() as u64;
            let event_bytes = format::encode_event(&common::event(sequence)).unwrap();
            format::push_event_frame(
                &mut file, seed(3), sequence - 1, sequence,
                DateTime::from_timestamp_nanos(0), common::kind(sequence), &event_bytes,
            );
            // Only the CRC-covered bytes matter: zeros read for a bad block are valid padding.
            let payload_end = start + (FRAME_HEADER_BYTES + 20 + event_bytes.len()) as u64;
            spans.push((sequence, start, payload_end));
        }
        file.resize(format::align_up(file.len(), 4096) + 4096, 0);
        let len = file.len() as u64;
        let bad_blocks: Vec<u64> = bad.iter().copied().filter(|b| b * 4096 < len).collect();
        let original = file.clone();
        let source = FailingBytes { file, bad_blocks: bad_blocks.clone() };
        let items: Vec<ScanItem> = SegmentScan::resilient(source, layout(3))
            .map(|item| item.unwrap())
            .collect();
        let mut unreadable: Vec<(u64, u64)> = items.iter().filter_map(|item| match item {
            ScanItem::Unreadable { offset, len_bytes } => Some((*offset, *len_bytes)),
            _ => None,
        }).collect();
        unreadable.sort_unstable();
        let covered: Vec<u64> = unreadable
            .iter()
            .flat_map(|&(offset, len)| offset / 4096..(offset + len).div_ceil(4096))
            .collect();
        prop_assert_eq!(covered, bad_blocks.clone());
        // A frame is hit when a bad block covers one of its non-zero CRC-covered bytes (bytes
        // that were zero anyway read the same).
        let touches_bad = |start: u64, end: u64| {
            (start..end).any(|i| original[i as usize] != 0 && bad_blocks.contains(&(i / 4096)))
        };
        let found: Vec<u64> = items.iter().filter_map(|item| match item {
            ScanItem::Record { record: Record::Event(entry), .. } => Some(entry.sequence),
            _ => None,
        }).collect();
        let clear: Vec<u64> = spans
            .iter()
            .filter(|(_, start, end)| !touches_bad(*start, *end))
            .map(|(sequence, _, _)| *sequence)
            .collect();
        prop_assert_eq!(found, clear);
    }
}
