//! Wire codec tests: golden vectors from daemoneye-eventbus's own decoder (docs/protocol.md
//! §2–§4), the lossless `ProcessEvent` mapping, the 1 MiB budget, and decoders that refuse
//! truncated, oversized and garbage input without panicking.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use procmond_wal::event::{largest_event, limits};
use procmond_wal::wire::frame::{self, decode_frame, split_frame};
use procmond_wal::wire::payload::{event_message, keys};
use procmond_wal::wire::{
    Body, CollectionEvent, CorrelationMetadata, MAX_FRAME_BODY_BYTES, Message, MessageType,
    WireError, WireTime,
};
use procmond_wal::{EventKind, ProcessEvent};

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).expect("hex digit pair")
        })
        .collect()
}

/// The reference `Message` bytes: `10 aa×16 14 "events.process.start" 01 63 00 01 63
/// 00 00 00 80 e2 cf aa 06 05 03 01 02 03 07 80 e2 cf aa 06 05 00`.
fn golden_message_bytes() -> Vec<u8> {
    let mut bytes = hex("10");
    bytes.extend([0xaa; 16]);
    bytes.extend(hex("14"));
    bytes.extend(b"events.process.start");
    bytes.extend(hex(
        "01 63 00 01 63 00 00 00 80 e2 cf aa 06 05 03 01 02 03 07 80 e2 cf aa 06 05 00",
    ));
    bytes
}

const GOLDEN_PAYLOAD_HEX: &str = "00 d2 09 01 61 01 04 61 20 2d 78 00 01 01 00 00";

fn golden_time() -> WireTime {
    WireTime {
        secs: 1_700_000_000,
        nanos: 5,
    }
}

fn golden_message() -> Message {
    Message {
        id: Uuid::from_bytes([0xaa; 16]),
        topic: "events.process.start".into(),
        correlation_metadata: CorrelationMetadata {
            correlation_id: "c".into(),
            parent_correlation_id: None,
            root_correlation_id: "c".into(),
            sequence_number: 0,
            workflow_stage: None,
            correlation_tags: BTreeMap::new(),
            created_at: golden_time(),
        },
        payload: vec![1, 2, 3],
        sequence: 7,
        timestamp: golden_time(),
        message_type: MessageType::Event,
    }
}

fn golden_payload() -> CollectionEvent {
    CollectionEvent::Process {
        pid: 1234,
        name: "a".into(),
        command_line: Some("a -x".into()),
        executable_path: None,
        ppid: Some(1),
        start_time: None,
        metadata: BTreeMap::new(),
    }
}

#[test]
fn golden_message_decodes_and_encodes_byte_for_byte() {
    let bytes = golden_message_bytes();
    assert_eq!(bytes.len(), 17 + 21 + 26);
    let decoded = Message::decode(&bytes).expect("reference bytes decode");
    assert_eq!(decoded, golden_message());
    assert_eq!(golden_message().encode().expect("encode"), bytes);

    let frame = golden_message().encode_frame().expect("frame");
    assert_eq!(
        frame[..4],
        u32::try_from(bytes.len()).expect("small").to_le_bytes()
    );
    assert_eq!(frame[4..], bytes[..]);
    assert_eq!(
        decode_frame(&frame).ok(),
        Some(Body::Message(golden_message()))
    );
}

#[test]
fn golden_process_payload_decodes_and_encodes_byte_for_byte() {
    let bytes = hex(GOLDEN_PAYLOAD_HEX);
    assert_eq!(CollectionEvent::decode(&bytes).ok(), Some(golden_payload()));
    assert_eq!(golden_payload().encode().expect("encode"), bytes);
    // Not ours (no procmond.version): refused rather than filled with invented values.
    assert!(matches!(
        golden_payload().to_process_event(),
        Err(WireError::NotProcmondPayload)
    ));
}

#[test]
fn every_truncation_of_the_golden_frame_is_an_error() {
    let frame = golden_message().encode_frame().expect("frame");
    for cut in 0..frame.len() {
        assert!(decode_frame(&frame[..cut]).is_err(), "cut at {cut}");
    }
    let body = golden_message_bytes();
    for cut in 0..body.len() {
        assert!(Message::decode(&body[..cut]).is_err(), "body cut at {cut}");
    }
    let payload = hex(GOLDEN_PAYLOAD_HEX);
    for cut in 0..payload.len() {
        assert!(
            CollectionEvent::decode(&payload[..cut]).is_err(),
            "payload cut at {cut}"
        );
    }
}

#[test]
fn trailing_bytes_and_bad_nanos_are_refused() {
    let mut body = golden_message_bytes();
    body.push(0);
    assert!(matches!(
        Message::decode(&body),
        Err(WireError::TrailingBytes {
            trailing_bytes: 1,
            ..
        })
    ));
    let mut message = golden_message();
    message.timestamp.nanos = 1_000_000_000;
    let bytes = message.encode().expect("encode");
    assert!(matches!(
        Message::decode(&bytes),
        Err(WireError::BadTimestampNanos {
            nanos: 1_000_000_000
        })
    ));
}

#[test]
fn oversized_frames_are_refused_on_both_sides() {
    let mut message = golden_message();
    message.payload = vec![0; MAX_FRAME_BODY_BYTES];
    assert!(matches!(
        message.encode_frame(),
        Err(WireError::FrameTooLarge { .. })
    ));
    let claim = (u32::try_from(MAX_FRAME_BODY_BYTES).expect("fits") + 1).to_le_bytes();
    assert!(matches!(
        split_frame(&claim, MAX_FRAME_BODY_BYTES),
        Err(WireError::FrameTooLarge {
            body_bytes: 1_048_577,
            ..
        })
    ));
    let exact = frame::encode_frame(&vec![7; MAX_FRAME_BODY_BYTES]).expect("exactly 1 MiB");
    assert_eq!(exact.len(), MAX_FRAME_BODY_BYTES + 4);
}

#[test]
fn the_largest_event_fits_in_one_frame_and_round_trips() {
    for (arg_bytes, value_bytes) in [
        (1, 1),
        (31, 120),
        (1000, limits::METADATA_VALUE_BYTES),
        (200_000, 500),
    ] {
        let event = largest_event(arg_bytes, value_bytes);
        assert!(event.truncated);
        let message = event_message(
            &"p".repeat(procmond_wal::wire::control::MAX_PUBLISHER_ID_BYTES),
            u64::MAX,
            EventKind::Modify,
            &event,
            WireTime {
                secs: u64::MAX,
                nanos: 999_999_999,
            },
        )
        .expect("largest event encodes");
        let frame = message
            .encode_frame()
            .expect("largest event fits in one frame");
        assert!(frame.len() <= MAX_FRAME_BODY_BYTES + 4);
        let Ok(Body::Message(decoded)) = decode_frame(&frame) else {
            panic!("largest event frame does not decode");
        };
        let payload = CollectionEvent::decode(&decoded.payload).expect("payload decodes");
        assert_eq!(
            payload.to_process_event().ok(),
            Some((EventKind::Modify, event))
        );
    }
}

#[test]
fn event_envelope_carries_the_wal_sequence_and_a_stable_correlation_id() {
    let event = ProcessEvent::new(1, "init", DateTime::from_timestamp_nanos(9));
    let first =
        event_message("host-a", 42, EventKind::Start, &event, golden_time()).expect("encode");
    let again =
        event_message("host-a", 42, EventKind::Start, &event, golden_time()).expect("encode");
    assert_eq!(first, again);
    assert_eq!(first.sequence, 42);
    assert_eq!(first.topic, "events.process.start");
    assert_eq!(first.message_type, MessageType::Event);
    assert_eq!(first.correlation_metadata.correlation_id, "host-a:42");
    assert_eq!(first.correlation_metadata.sequence_number, 42);
    let CollectionEvent::Process { metadata, .. } =
        CollectionEvent::decode(&first.payload).expect("payload");
    assert_eq!(metadata.get(keys::KIND).map(String::as_str), Some("start"));
    assert_eq!(
        metadata
            .get(keys::COLLECTION_TIME_UNIX_NS)
            .map(String::as_str),
        Some("9")
    );
}

fn any_datetime() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        any::<i64>().prop_map(DateTime::from_timestamp_nanos),
        (
            -8_000_000_000_000i64..8_000_000_000_000,
            0u32..1_000_000_000
        )
            .prop_filter_map("in chrono range", |(secs, nanos)| DateTime::from_timestamp(
                secs, nanos
            )),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[a-z :0-9]{0,12}",
        Just(String::new()),
        Just(" ".to_owned())
    ]
}

fn any_event() -> impl Strategy<Value = ProcessEvent> {
    let identity = (
        any::<u32>(),
        any::<Option<u32>>(),
        any_text(),
        proptest::option::of(any_text()),
        proptest::collection::vec(any_text(), 0..6),
        proptest::option::of(any_datetime()),
    );
    let measures = (
        proptest::option::of(
            any::<f64>().prop_filter("NaN never equals itself", |cpu| !cpu.is_nan()),
        ),
        any::<Option<u64>>(),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        proptest::option::of(any_text()),
        any::<(bool, bool, bool)>(),
        any_datetime(),
        proptest::collection::btree_map(
            prop_oneof![
                any_text(),
                Just("procmond.kind".to_owned()),
                Just("platform.x".to_owned())
            ],
            any_text(),
            0..5,
        ),
    );
    (identity, measures).prop_map(
        |(
            (pid, ppid, name, executable_path, command_line, start_time),
            (
                cpu,
                memory,
                hash,
                algorithm,
                user,
                (accessible, file_exists, truncated),
                collected,
                platform,
            ),
        )| ProcessEvent {
            pid,
            ppid,
            name,
            executable_path,
            command_line,
            start_time,
            cpu_usage_percent: cpu,
            memory_usage_bytes: memory,
            executable_hash: hash,
            hash_algorithm: algorithm,
            user_id: user,
            accessible,
            file_exists,
            collection_time: collected,
            platform_metadata: platform,
            truncated,
        },
    )
}

fn any_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        Just(EventKind::Start),
        Just(EventKind::Stop),
        Just(EventKind::Modify)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn process_events_round_trip_through_frames(event in any_event(), kind in any_kind(), sequence in any::<u64>()) {
        let message = event_message("publisher", sequence, kind, &event, golden_time()).expect("encode");
        let frame = message.encode_frame().expect("frame");
        let Ok(Body::Message(decoded)) = decode_frame(&frame) else {
            panic!("frame does not decode");
        };
        prop_assert_eq!(&decoded, &message);
        let payload = CollectionEvent::decode(&decoded.payload).expect("payload");
        let (decoded_kind, decoded_event) = payload.to_process_event().expect("ours");
        prop_assert_eq!(decoded_kind, kind);
        prop_assert_eq!(decoded_event, event);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Body::decode(&bytes);
        let _ = decode_frame(&bytes);
        let _ = split_frame(&bytes, MAX_FRAME_BODY_BYTES);
        if let Ok(payload) = CollectionEvent::decode(&bytes) {
            let _ = payload.to_process_event();
        }
    }

    #[test]
    fn mutated_frames_never_panic(index in any::<prop::sample::Index>(), value in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let event = ProcessEvent::new(5, "x", DateTime::from_timestamp_nanos(1));
        let mut frame = event_message("p", 1, EventKind::Stop, &event, golden_time())
            .and_then(|message| message.encode_frame())
            .expect("frame");
        let at = index.index(frame.len());
        frame[at] = value;
        let end = cut.index(frame.len() + 1);
        if let Ok(Body::Message(message)) = decode_frame(&frame[..end])
            && let Ok(payload) = CollectionEvent::decode(&message.payload)
        {
            let _ = payload.to_process_event();
        }
        // A cut frame is never accepted as complete.
        if end < frame.len() {
            prop_assert!(decode_frame(&frame[..end]).is_err());
        }
    }
}

/// The complete Ack frame printed in `docs/protocol.md` §7 still decodes to what it claims.
#[test]
fn documented_ack_frame_decodes() {
    use procmond_wal::wire::Ack;
    use procmond_wal::wire::control::ControlPayload;
    let frame = hex(
        "90 00 00 00 10 dc d3 21 91 8e fa 88 ee 80 00 00 00 00 00 00 02 14 63 6f 6e 74 72 6f 6c 2e \
         65 76 65 6e 74 62 75 73 2e 61 63 6b 2a 70 72 6f 63 6d 6f 6e 64 2d 77 61 6c 2d 62 72 6f 6b \
         65 72 3a 63 6f 6e 74 72 6f 6c 2e 65 76 65 6e 74 62 75 73 2e 61 63 6b 3a 32 00 2a 70 72 6f \
         63 6d 6f 6e 64 2d 77 61 6c 2d 62 72 6f 6b 65 72 3a 63 6f 6e 74 72 6f 6c 2e 65 76 65 6e 74 \
         62 75 73 2e 61 63 6b 3a 32 02 00 00 80 e2 cf aa 06 05 01 2a 02 80 e2 cf aa 06 05 01",
    );
    let Ok(Body::Message(message)) = decode_frame(&frame) else {
        panic!("documented frame does not decode");
    };
    assert_eq!(message.message_type, MessageType::Control);
    assert_eq!(
        Ack::from_message(&message).ok(),
        Some(Ack {
            highest_sequence: 42
        })
    );
    let rebuilt = Ack {
        highest_sequence: 42,
    }
    .to_message("procmond-wal-broker", 2, golden_time())
    .and_then(|message| message.encode_frame())
    .expect("encode");
    assert_eq!(rebuilt, frame);
}
