//! The connector's frame budget: every frame the connector sends is smaller than
//! [`CONNECTOR_FRAME_MAX_BYTES`] (192 KiB), far below the protocol's 1 MiB cap.
//!
//! Why: upstream daemoneye-eventbus reads a frame with a single `read`, so a frame larger
//! than the Unix socket's default buffer (208 KiB) fails with upstream's own transport.
//! The WAL keeps events at the larger limits of [`crate::event::limits`]; on the wire an
//! event that does not fit is shortened further, deterministically (the same stored event
//! always gives the same bytes, so a replay is byte-identical), and marked truncated.
//! Never drops an event. Pure: no I/O.

use crate::event::{EventKind, ProcessEvent};
use crate::wire::envelope::WireTime;
use crate::wire::error::WireError;
use crate::wire::frame::{FRAME_LENGTH_BYTES, seal_frame};
#[cfg(doc)]
use crate::wire::payload::event_message_with_payload;
use crate::wire::payload::{
    CollectionEvent, PUBLISHER_TAG, event_correlation_id, event_message_id,
};

/// Every frame the connector sends (length prefix included) is strictly smaller.
pub const CONNECTOR_FRAME_MAX_BYTES: usize = 192 * 1024;

/// Room kept for the envelope around an event payload. The envelope's variable parts are
/// the publisher id (≤ 128 bytes, three times), the topic, the sequence and the
/// timestamps: well under 1 KiB; the rest is margin.
pub const ENVELOPE_RESERVE_BYTES: usize = 2 * 1024;

/// Largest event payload the connector sends.
pub const EVENT_PAYLOAD_MAX_BYTES: usize = CONNECTOR_FRAME_MAX_BYTES - ENVELOPE_RESERVE_BYTES;

/// Wire-side limits applied (and halved until the payload fits) to an event whose payload
/// is over [`EVENT_PAYLOAD_MAX_BYTES`]. argv counts twice on the wire (joined command line
/// plus the exact list when an argument contains a space), metadata once plus a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WireLimits {
    argv_entries: usize,
    argv_total_bytes: usize,
    metadata_entries: usize,
    metadata_total_bytes: usize,
}

impl WireLimits {
    const FIRST: WireLimits = WireLimits {
        argv_entries: 1024,
        argv_total_bytes: 48 * 1024,
        metadata_entries: 128,
        metadata_total_bytes: 48 * 1024,
    };

    fn halved(self) -> WireLimits {
        WireLimits {
            argv_entries: self.argv_entries / 2,
            argv_total_bytes: self.argv_total_bytes / 2,
            metadata_entries: self.metadata_entries / 2,
            metadata_total_bytes: self.metadata_total_bytes / 2,
        }
    }

    fn is_zero(self) -> bool {
        self.argv_entries == 0 && self.metadata_entries == 0
    }
}

/// The envelope timestamp the connector uses for an event: its collection time (the epoch
/// if earlier). Derived from the event, not the clock, so every resend is byte-identical.
pub fn event_wire_time(event: &ProcessEvent) -> WireTime {
    WireTime::from_datetime(event.collection_time).unwrap_or(WireTime::EPOCH)
}

/// Encodes the event's payload, shortening the event first if the payload would not fit in
/// [`EVENT_PAYLOAD_MAX_BYTES`]. Deterministic; the event itself is not changed.
pub fn fit_event_payload(kind: EventKind, event: &ProcessEvent) -> Result<Vec<u8>, WireError> {
    let payload = CollectionEvent::from_process_event(kind, event).encode()?;
    if payload.len() <= EVENT_PAYLOAD_MAX_BYTES {
        return Ok(payload);
    }
    let mut limits = WireLimits::FIRST;
    loop {
        let mut shorter = event.clone();
        // The stored limits first (a no-op for events that came through the WAL), so the
        // fields this function does not cut are bounded too.
        shorter.truncate_to_limits();
        cut_for_wire(&mut shorter, limits);
        shorter.truncated = true;
        let payload = CollectionEvent::from_process_event(kind, &shorter).encode()?;
        if payload.len() <= EVENT_PAYLOAD_MAX_BYTES {
            return Ok(payload);
        }
        // With argv and metadata gone, what is left (name and four short fields, at most
        // 17 KiB) always fits, so this ends.
        assert!(!limits.is_zero(), "an event without argv and metadata fits");
        limits = limits.halved();
    }
}

/// The complete frame (length prefix and envelope) for one durable event, under the budget.
pub fn event_frame(
    publisher_id: &str,
    sequence: u64,
    kind: EventKind,
    event: &ProcessEvent,
) -> Result<Vec<u8>, WireError> {
    let payload = fit_event_payload(kind, event)?;
    frame_with_payload(
        publisher_id,
        sequence,
        kind,
        payload,
        event_wire_time(event),
    )
}

/// The frame for an event whose payload came from [`fit_event_payload`].
///
/// Written field by field into one buffer (the ring thread builds one per event); the bytes
/// are exactly what encoding [`event_message_with_payload`]'s `Message` with postcard gives,
/// which a test checks.
pub fn frame_with_payload(
    publisher_id: &str,
    sequence: u64,
    kind: EventKind,
    payload: Vec<u8>,
    timestamp: WireTime,
) -> Result<Vec<u8>, WireError> {
    let correlation_id = event_correlation_id(publisher_id, sequence);
    let topic = kind.topic();
    let mut frame = Vec::with_capacity(
        FRAME_LENGTH_BYTES + 128 + 2 * correlation_id.len() + publisher_id.len() + payload.len(),
    );
    frame.extend_from_slice(&[0; FRAME_LENGTH_BYTES]);
    // id: a 16-byte byte string.
    put_bytes(
        &mut frame,
        event_message_id(publisher_id, sequence).as_bytes(),
    );
    put_bytes(&mut frame, topic.as_bytes());
    // correlation_metadata: id, parent None, root, sequence_number, stage None, one tag,
    // created_at.
    put_bytes(&mut frame, correlation_id.as_bytes());
    frame.push(0);
    put_bytes(&mut frame, correlation_id.as_bytes());
    put_varint(&mut frame, sequence);
    frame.push(0);
    put_varint(&mut frame, 1);
    put_bytes(&mut frame, PUBLISHER_TAG.as_bytes());
    put_bytes(&mut frame, publisher_id.as_bytes());
    put_time(&mut frame, timestamp);
    put_bytes(&mut frame, &payload);
    put_varint(&mut frame, sequence);
    put_time(&mut frame, timestamp);
    // message_type: Event is variant 0.
    frame.push(0);
    let frame = seal_frame(frame)?;
    debug_assert!(
        frame.len() < CONNECTOR_FRAME_MAX_BYTES,
        "payload within budget and publisher id within its limit keep the frame under budget"
    );
    Ok(frame)
}

/// postcard's unsigned varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// postcard's string / byte string: varint length, then the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `SystemTime` as serde writes it: seconds, then nanoseconds.
fn put_time(out: &mut Vec<u8>, time: WireTime) {
    put_varint(out, time.secs);
    put_varint(out, u64::from(time.nanos));
}

fn cut_for_wire(event: &mut ProcessEvent, limits: WireLimits) {
    event.command_line.truncate(limits.argv_entries);
    let mut remaining = limits.argv_total_bytes;
    let mut keep = event.command_line.len();
    for (index, arg) in event.command_line.iter_mut().enumerate() {
        if arg.len() <= remaining {
            remaining -= arg.len();
            continue;
        }
        cut_at_char_boundary(arg, remaining);
        keep = index + 1;
        break;
    }
    event.command_line.truncate(keep);
    let mut remaining = limits.metadata_total_bytes;
    let mut kept = std::collections::BTreeMap::new();
    for (key, mut value) in std::mem::take(&mut event.platform_metadata) {
        if kept.len() == limits.metadata_entries || key.len() > remaining {
            break;
        }
        remaining -= key.len();
        cut_at_char_boundary(&mut value, remaining);
        remaining -= value.len();
        kept.insert(key, value);
    }
    event.platform_metadata = kept;
}

fn cut_at_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::event::largest_event;
    use crate::wire::control::MAX_PUBLISHER_ID_BYTES;
    use crate::wire::frame::decode_frame;
    use crate::wire::{Body, CollectionEvent};

    #[test]
    fn the_largest_event_stays_under_the_connector_budget_and_decodes() {
        let publisher_id = "p".repeat(MAX_PUBLISHER_ID_BYTES);
        for (arg_bytes, value_bytes) in [(1, 1), (31, 120), (1000, 8 * 1024), (200_000, 500)] {
            let event = largest_event(arg_bytes, value_bytes);
            let frame =
                event_frame(&publisher_id, u64::MAX, EventKind::Modify, &event).expect("encodes");
            assert!(
                frame.len() < CONNECTOR_FRAME_MAX_BYTES,
                "{} bytes for ({arg_bytes}, {value_bytes})",
                frame.len()
            );
            let Ok(Body::Message(message)) = decode_frame(&frame) else {
                panic!("frame does not decode");
            };
            let payload = CollectionEvent::decode(&message.payload).expect("payload decodes");
            let (kind, sent) = payload.to_process_event().expect("ours");
            assert_eq!(kind, EventKind::Modify);
            assert!(sent.truncated);
            assert_eq!(sent.pid, event.pid);
            assert_eq!(sent.name, event.name);
            // What is kept is a prefix of what is stored: nothing reordered or invented.
            assert!(sent.command_line.len() <= event.command_line.len());
            for (kept, stored) in sent.command_line.iter().zip(&event.command_line) {
                assert!(stored.starts_with(kept.as_str()));
            }
            for (key, value) in &sent.platform_metadata {
                assert!(event.platform_metadata[key].starts_with(value.as_str()));
            }
            // Deterministic: the same stored event gives the same bytes.
            assert_eq!(
                event_frame(&publisher_id, u64::MAX, EventKind::Modify, &event).ok(),
                Some(frame)
            );
        }
    }

    #[test]
    fn the_hand_written_frame_is_byte_for_byte_the_postcard_encoding() {
        use crate::wire::payload::event_message_with_payload;
        let times = [
            WireTime::EPOCH,
            WireTime {
                secs: 1_700_000_000,
                nanos: 5,
            },
            WireTime {
                secs: u64::MAX,
                nanos: 999_999_999,
            },
        ];
        for publisher_id in ["p", "procmond-0123456789abcdef", &"x".repeat(128)] {
            for sequence in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
                for payload_bytes in [0, 1, 127, 128, 20_000] {
                    for (kind, time) in EventKind::ALL.into_iter().zip(times) {
                        let payload: Vec<u8> = (0..payload_bytes).map(|i| i as u8).collect();
                        let ours =
                            frame_with_payload(publisher_id, sequence, kind, payload.clone(), time)
                                .expect("frame");
                        let reference =
                            event_message_with_payload(publisher_id, sequence, kind, payload, time)
                                .encode_frame()
                                .expect("frame");
                        assert_eq!(ours, reference, "{publisher_id} {sequence} {payload_bytes}");
                    }
                }
            }
        }
    }

    #[test]
    fn events_within_budget_are_sent_as_stored() {
        let mut event = ProcessEvent::new(1, "sh", DateTime::from_timestamp_nanos(5));
        event.command_line = vec!["sh".into(), "x".repeat(100_000)];
        let payload = fit_event_payload(EventKind::Start, &event).expect("encodes");
        let decoded = CollectionEvent::decode(&payload).expect("decodes");
        assert_eq!(
            decoded.to_process_event().ok(),
            Some((EventKind::Start, event))
        );
    }
}
