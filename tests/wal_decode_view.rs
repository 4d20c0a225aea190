//! The borrowing record decoder and the allocation-free scan agree with the owned ones: the
//! hand-written payload decoders (borrowing and owned) accept and refuse exactly what bincode
//! does and decode to the same values; a scan read through its borrowing API reports the same
//! items as the owned iterator, whatever sizes the reads come in; and `WalReader`'s borrowing
//! API sees the events its iterator yields.

use std::collections::BTreeMap;
use std::io::Read;

use chrono::DateTime;
use proptest::prelude::*;

use procmond_wal::EventKind;
use procmond_wal::wal::format::{
    self, CheckpointEntry, FrameLayout, FrameProbe, FrameSeed, Record, RecordKind, WalEntry,
};
use procmond_wal::wal::scan::{ScanItem, SegmentScan};
use procmond_wal::wal::{BackendChoice, Wal, WalReader};

mod common;

use common::strategies::{config, process_event, time_ns};

const SEED: FrameSeed = FrameSeed {
    segment_number: 7,
    salt: 0x5eed_0f5a_17ed,
};

prop_compose! {
    fn wal_entry()(
        sequence in 1u64..u64::MAX,
        timestamp in time_ns(),
        event in process_event(),
        kind in prop::sample::select(EventKind::ALL.to_vec()),
    ) -> WalEntry {
        WalEntry { sequence, timestamp, event, kind }
    }
}

/// The payload of an event record as the writer lays it out.
fn event_payload(entry: &WalEntry) -> Vec<u8> {
    let frame = event_frame(entry);
    let FrameProbe::Valid { payload, .. } =
        format::probe_frame(&frame, FrameLayout::V2(SEED), true)
    else {
        panic!("a frame the writer made does not verify");
    };
    payload.to_vec()
}

fn event_frame(entry: &WalEntry) -> Vec<u8> {
    let mut frame = Vec::new();
    let event_bytes = format::encode_event(&entry.event).unwrap();
    format::push_event_frame(
        &mut frame,
        SEED,
        entry.sequence - 1,
        entry.sequence,
        entry.timestamp,
        entry.kind,
        &event_bytes,
    );
    frame
}

/// Decodes `payload` as `kind` three ways and checks they agree: same verdict, same value.
fn check_decoders_agree(kind: RecordKind, payload: &[u8]) -> Option<Record> {
    let reference = format::decode_payload_with_bincode(kind, payload).ok();
    let owned = format::decode_payload_owned(kind, payload).ok();
    let viewed = format::decode_payload_view(kind, payload)
        .ok()
        .map(|view| view.to_record());
    let expected = comparable(&reference);
    assert_eq!(
        comparable(&owned),
        expected,
        "owned decoder and bincode disagree"
    );
    assert_eq!(
        comparable(&viewed),
        expected,
        "borrowing decoder and bincode disagree"
    );
    assert_eq!(
        comparable(&format::decode_payload(kind, payload).ok()),
        expected,
        "decode_payload and bincode disagree"
    );
    reference
}

/// A decoded record in a form where a NaN (a changed byte can make one) equals itself: the
/// record's text and the bits of its one float.
fn comparable(record: &Option<Record>) -> (String, Option<u64>) {
    let bits = match record {
        Some(Record::Event(entry)) => entry.event.cpu_usage_percent.map(f64::to_bits),
        _ => None,
    };
    (format!("{record:?}"), bits)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_decoders_agree_on_every_event_the_writer_writes(entry in wal_entry()) {
        let payload = event_payload(&entry);
        let decoded = check_decoders_agree(RecordKind::Event, &payload);
        prop_assert_eq!(decoded, Some(Record::Event(entry.clone())));
        // The view's fields are the event's, without copying.
        let Ok(format::RecordView::Event(view)) =
            format::decode_payload_view(RecordKind::Event, &payload)
        else {
            panic!("valid payload refused");
        };
        prop_assert_eq!(view.sequence, entry.sequence);
        prop_assert_eq!(view.event.name, entry.event.name.as_str());
        prop_assert_eq!(
            view.event.command_line.iter().collect::<Vec<_>>(),
            entry.event.command_line.iter().map(String::as_str).collect::<Vec<_>>()
        );
        prop_assert_eq!(view.event.command_line.len(), entry.event.command_line.len());
        let metadata: BTreeMap<&str, &str> = view.event.platform_metadata.iter().collect();
        prop_assert_eq!(
            metadata,
            entry
                .event
                .platform_metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<BTreeMap<_, _>>()
        );
    }

    /// Damaged payloads: one byte changed, cut short, or extended. The three decoders accept
    /// and refuse the same ones (tags out of range, bad UTF-8, lengths past the end, ...).
    #[test]
    fn the_decoders_agree_on_damaged_event_payloads(
        entry in wal_entry(),
        index in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let payload = event_payload(&entry);
        let mut changed = payload.clone();
        let at = index.index(changed.len());
        changed[at] = value;
        check_decoders_agree(RecordKind::Event, &changed);
        check_decoders_agree(RecordKind::Event, &payload[..cut.index(payload.len())]);
        let mut longer = payload.clone();
        longer.extend_from_slice(&extra);
        // Bytes after the last field are ignored, by bincode and by the hand decoders.
        prop_assert_eq!(
            check_decoders_agree(RecordKind::Event, &longer),
            Some(Record::Event(entry))
        );
    }

    #[test]
    fn the_decoders_agree_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        kind in prop::sample::select(vec![
            RecordKind::Event, RecordKind::Checkpoint, RecordKind::Watermark,
        ]),
    ) {
        check_decoders_agree(kind, &bytes);
    }

    /// Payloads built field by field with tags and lengths drawn from small ranges, so that
    /// deep fields (metadata, the trailing flag, the kind) are reached with bad values too.
    #[test]
    fn the_decoders_agree_on_structured_garbage(
        words in proptest::collection::vec((0u8..6, any::<u64>(), proptest::collection::vec(any::<u8>(), 0..6)), 0..40),
    ) {
        let mut payload = Vec::new();
        for (shape, number, bytes) in words {
            match shape {
                0 => payload.push((number % 3) as u8),
                1 => payload.extend_from_slice(&(number % 4).to_le_bytes()),
                2 => payload.extend_from_slice(&(number as u32 % 4).to_le_bytes()),
                3 => {
                    payload.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    payload.extend_from_slice(&bytes);
                }
                4 => payload.extend_from_slice(&number.to_le_bytes()),
                _ => payload.extend_from_slice(&bytes),
            }
        }
        check_decoders_agree(RecordKind::Event, &payload);
    }

    /// A log of valid frames with some bytes overwritten: the borrowing scan reports the same
    /// items as the owned one, and so does a scan fed by reads of arbitrary sizes.
    #[test]
    fn borrowed_and_owned_scans_report_the_same_items(
        entries in proptest::collection::vec(wal_entry(), 1..30),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        zeros in 0usize..9000,
        read_sizes in proptest::collection::vec(1usize..5000, 1..8),
    ) {
        let mut bytes = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry = WalEntry { sequence: index as u64 + 1, ..entry.clone() };
            bytes.extend_from_slice(&event_frame(&entry));
            if index == 3 {
                format::push_checkpoint_frame(
                    &mut bytes,
                    SEED,
                    3,
                    &CheckpointEntry { acked_through: 2, timestamp: DateTime::from_timestamp_nanos(9) },
                );
            }
        }
        for (index, value) in damage {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        bytes.resize(bytes.len() + zeros, 0);
        let layout = FrameLayout::V2(SEED);
        let owned: Vec<ScanItem> = SegmentScan::new(&bytes[..], layout)
            .map(|item| item.unwrap())
            .collect();
        let mut scan = SegmentScan::new(&bytes[..], layout);
        let mut borrowed = Vec::new();
        while let Some(item) = scan.next_ref().unwrap() {
            borrowed.push(item.map_record(|record| record.to_record()));
        }
        prop_assert_eq!(&borrowed, &owned);
        let chunked: Vec<ScanItem> =
            SegmentScan::new(Chunked { bytes: &bytes, sizes: read_sizes, next: 0 }, layout)
                .map(|item| item.unwrap())
                .collect();
        prop_assert_eq!(&chunked, &owned);
        let ends_with_tail = matches!(owned.last(), Some(ScanItem::Tail { .. }));
        prop_assert!(ends_with_tail);
    }
}

proptest! {
    // Each case decodes ~9 variants of every payload byte three ways: fewer cases.
    #![proptest_config(config(24))]

    /// Every byte of a valid payload set in turn to values that matter to the format (tags
    /// 0..=3, UTF-8 continuation and invalid bytes, small and huge length bytes): the three
    /// decoders agree on each.
    #[test]
    fn the_decoders_agree_on_every_single_byte_change(entry in wal_entry()) {
        let payload = event_payload(&entry);
        for index in 0..payload.len() {
            for value in [0u8, 1, 2, 3, 0x7f, 0x80, 0xc0, 0xff, payload[index] ^ 1] {
                let mut changed = payload.clone();
                changed[index] = value;
                check_decoders_agree(RecordKind::Event, &changed);
            }
        }
    }
}

/// A reader that hands out its bytes in reads of the given sizes, in turn.
struct Chunked<'a> {
    bytes: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = size.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// `WalReader::next_with` sees, without copying, exactly the events the iterator yields,
/// from any starting sequence.
#[test]
fn the_readers_borrowing_api_sees_what_its_iterator_yields() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(common::small_config(dir.path(), BackendChoice::Portable)).unwrap();
    common::runtime().block_on(async {
        for i in 0..300u64 {
            wal.append(common::event(i), common::kind(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    for from in [1, 2, 150, 300, 301] {
        let owned: Vec<WalEntry> = WalReader::open(dir.path(), from)
            .unwrap()
            .map(|entry| entry.unwrap())
            .collect();
        assert_eq!(owned.len() as u64, 301 - from);
        let mut reader = WalReader::open(dir.path(), from).unwrap();
        let mut seen = Vec::new();
        while let Some((sequence, pid, argv0_len)) = reader
            .next_with(|view| {
                (
                    view.sequence,
                    view.event.pid,
                    view.event.command_line.iter().next().map(str::len),
                )
            })
            .unwrap()
        {
            seen.push((sequence, pid, argv0_len));
        }
        let expected: Vec<_> = owned
            .iter()
            .map(|entry| {
                (
                    entry.sequence,
                    entry.event.pid,
                    entry.event.command_line.first().map(String::len),
                )
            })
            .collect();
        assert_eq!(seen, expected, "from {from}");
        assert!(!reader.stopped_early());
    }
}
