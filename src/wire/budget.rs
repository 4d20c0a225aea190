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
use crate::wire::envelope::{WireTime, datetime_to_unix_nanos};
use crate::wire::error::WireError;
use crate::wire::frame::{FRAME_LENGTH_BYTES, checked_length};
#[cfg(doc)]
use crate::wire::payload::event_message_with_payload;
use crate::wire::payload::{PAYLOAD_VERSION, PUBLISHER_TAG, keys};

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
    let mut payload = Vec::with_capacity(payload_size_hint(event));
    fit_event_payload_into(kind, event, &mut payload)?;
    Ok(payload)
}

/// [`fit_event_payload`] appending to `out` (a batch encodes all its payloads into one
/// buffer). Only the event's payload is appended, whatever happens.
pub fn fit_event_payload_into(
    kind: EventKind,
    event: &ProcessEvent,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    encode_event_payload(kind, event, out);
    if out.len() - start <= EVENT_PAYLOAD_MAX_BYTES {
        return Ok(());
    }
    let mut limits = WireLimits::FIRST;
    loop {
        let mut shorter = event.clone();
        // The stored limits first (a no-op for events that came through the WAL), so the
        // fields this function does not cut are bounded too.
        shorter.truncate_to_limits();
        cut_for_wire(&mut shorter, limits);
        shorter.truncated = true;
        out.truncate(start);
        encode_event_payload(kind, &shorter, out);
        if out.len() - start <= EVENT_PAYLOAD_MAX_BYTES {
            return Ok(());
        }
        // With argv and metadata gone, what is left (name and four short fields, at most
        // 17 KiB) always fits, so this ends.
        assert!(!limits.is_zero(), "an event without argv and metadata fits");
        limits = limits.halved();
    }
}

/// A capacity that usually holds the event's payload in one allocation: argv may travel
/// twice, and the fixed metadata takes about 200 bytes.
pub fn payload_size_hint(event: &ProcessEvent) -> usize {
    let argv: usize = event.command_line.iter().map(|arg| arg.len() + 4).sum();
    let platform: usize = event
        .platform_metadata
        .iter()
        .map(|(key, value)| key.len() + value.len() + 16)
        .sum();
    let optional = [
        &event.executable_path,
        &event.executable_hash,
        &event.hash_algorithm,
        &event.user_id,
    ]
    .iter()
    .map(|field| field.as_ref().map_or(0, |text| text.len() + 32))
    .sum::<usize>();
    (320 + event.name.len() + 2 * argv + platform + optional).min(EVENT_PAYLOAD_MAX_BYTES)
}

/// Appends the postcard encoding of `CollectionEvent::from_process_event(kind, event)` to
/// `out`, written field by field: the same bytes (a test checks), without building the
/// metadata map and its strings. Publishing encodes every event's payload, so this is on
/// every publisher's path.
///
/// The map's entries are written in the order a `BTreeMap` keeps them (by key bytes):
/// `platform.*` before `procmond.*`, and ours in the fixed order below.
pub fn encode_event_payload(kind: EventKind, event: &ProcessEvent, out: &mut Vec<u8>) {
    // Variant 0: Process.
    out.push(0);
    put_varint(out, u64::from(event.pid));
    put_bytes(out, event.name.as_bytes());
    let argv = &event.command_line;
    if argv.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        let joined_bytes = argv.iter().map(String::len).sum::<usize>() + argv.len() - 1;
        put_varint(out, joined_bytes as u64);
        for (index, arg) in argv.iter().enumerate() {
            if index > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(arg.as_bytes());
        }
    }
    put_option_bytes(out, event.executable_path.as_deref().map(str::as_bytes));
    match event.ppid {
        None => out.push(0),
        Some(ppid) => {
            out.push(1);
            put_varint(out, u64::from(ppid));
        }
    }
    let start_time = event.start_time.and_then(WireTime::from_datetime);
    match start_time {
        None => out.push(0),
        Some(time) => {
            out.push(1);
            put_time(out, time);
        }
    }
    let exact_argv = argv.iter().any(|arg| arg.contains(' '));
    let start_before_epoch = event.start_time.filter(|_| start_time.is_none());
    // Always: version, kind, accessible, file_exists, collection time, truncated.
    let entries = 6
        + event.platform_metadata.len()
        + usize::from(exact_argv)
        + usize::from(start_before_epoch.is_some())
        + usize::from(event.cpu_usage_percent.is_some())
        + usize::from(event.memory_usage_bytes.is_some())
        + usize::from(event.executable_hash.is_some())
        + usize::from(event.hash_algorithm.is_some())
        + usize::from(event.user_id.is_some());
    put_varint(out, entries as u64);
    for (key, value) in &event.platform_metadata {
        put_varint(out, (keys::PLATFORM_PREFIX.len() + key.len()) as u64);
        out.extend_from_slice(keys::PLATFORM_PREFIX.as_bytes());
        out.extend_from_slice(key.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    let mut number = NumberText::default();
    put_entry(out, keys::ACCESSIBLE, bool_text(event.accessible));
    if exact_argv {
        put_bytes(out, keys::ARGV.as_bytes());
        let encoded_bytes: usize = argv
            .iter()
            .map(|arg| decimal_digits(arg.len() as u64) + 1 + arg.len())
            .sum();
        put_varint(out, encoded_bytes as u64);
        for arg in argv {
            out.extend_from_slice(number.format(arg.len()).as_bytes());
            out.push(b':');
            out.extend_from_slice(arg.as_bytes());
        }
    }
    put_entry(
        out,
        keys::COLLECTION_TIME_UNIX_NS,
        number.format_nanos(datetime_to_unix_nanos(event.collection_time)),
    );
    if let Some(cpu) = event.cpu_usage_percent {
        // Rare, and a float's text can be long: the allocation is fine.
        put_entry(out, keys::CPU_USAGE_PERCENT, &cpu.to_string());
    }
    if let Some(hash) = &event.executable_hash {
        put_entry(out, keys::EXECUTABLE_HASH, hash);
    }
    put_entry(out, keys::FILE_EXISTS, bool_text(event.file_exists));
    if let Some(algorithm) = &event.hash_algorithm {
        put_entry(out, keys::HASH_ALGORITHM, algorithm);
    }
    put_entry(out, keys::KIND, kind.as_str());
    if let Some(memory) = event.memory_usage_bytes {
        put_entry(out, keys::MEMORY_USAGE_BYTES, number.format(memory));
    }
    if let Some(start) = start_before_epoch {
        put_entry(
            out,
            keys::START_TIME_UNIX_NS,
            number.format_nanos(datetime_to_unix_nanos(start)),
        );
    }
    put_entry(out, keys::TRUNCATED, bool_text(event.truncated));
    if let Some(user) = &event.user_id {
        put_entry(out, keys::USER_ID, user);
    }
    put_entry(out, keys::VERSION, PAYLOAD_VERSION);
}

fn bool_text(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn put_entry(out: &mut Vec<u8>, key: &str, value: &str) {
    put_bytes(out, key.as_bytes());
    put_bytes(out, value.as_bytes());
}

fn put_option_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

/// Decimal text of integers in a stack buffer, without going through `core::fmt` (which
/// cost about a tenth of a publisher's CPU per event).
#[derive(Default)]
struct NumberText(itoa::Buffer);

impl NumberText {
    fn format(&mut self, value: impl itoa::Integer) -> &str {
        self.0.format(value)
    }

    /// Nanoseconds since the epoch: stored times fit an `i64`, whose text is quicker to
    /// produce than an `i128`'s (the same digits).
    fn format_nanos(&mut self, nanos: i128) -> &str {
        match i64::try_from(nanos) {
            Ok(nanos) => self.format(nanos),
            Err(_) => self.format(nanos),
        }
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

/// The frame for an event whose payload came from [`fit_event_payload`], in a new buffer.
///
/// The bytes are exactly what encoding [`event_message_with_payload`]'s `Message` with
/// postcard gives, which a test checks. The connector's link does not call this per event:
/// it appends frames straight into its socket write buffer with [`EventFramer`].
pub fn frame_with_payload(
    publisher_id: &str,
    sequence: u64,
    kind: EventKind,
    payload: Vec<u8>,
    timestamp: WireTime,
) -> Result<Vec<u8>, WireError> {
    let framer = EventFramer::new(publisher_id);
    let mut frame = Vec::with_capacity(framer.frame_len(sequence, kind, payload.len(), timestamp));
    framer.write_frame(&mut frame, sequence, kind, &payload, timestamp)?;
    Ok(frame)
}

/// Writes event frames for one publisher field by field, straight into a caller's buffer,
/// so the ring thread neither allocates nor copies a frame per event: the envelope around
/// a payload is known only once the event's sequence is (after it is durable), and the
/// payload is copied once, into the socket write buffer.
///
/// What depends only on the publisher (the id's hash, the tag) is computed once here.
#[derive(Debug, Clone)]
pub struct EventFramer {
    publisher_id: Box<str>,
    /// FNV-1a-64 state after the publisher id's bytes (the message id's first half).
    id_hash: u64,
}

impl EventFramer {
    /// A framer for `publisher_id`.
    pub fn new(publisher_id: &str) -> EventFramer {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in publisher_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        EventFramer {
            publisher_id: publisher_id.into(),
            id_hash: hash,
        }
    }

    /// The exact length of the frame (length prefix included) that
    /// [`EventFramer::write_frame`] appends for these arguments.
    pub fn frame_len(
        &self,
        sequence: u64,
        kind: EventKind,
        payload_bytes: usize,
        timestamp: WireTime,
    ) -> usize {
        let correlation = self.correlation_id_len(sequence);
        let time = varint_len(timestamp.secs) + varint_len(u64::from(timestamp.nanos));
        FRAME_LENGTH_BYTES
            + 1
            + 16
            + bytes_len(kind.topic().len())
            + 2 * bytes_len(correlation)
            + 1
            + varint_len(sequence)
            + 1
            + 1
            + bytes_len(PUBLISHER_TAG.len())
            + bytes_len(self.publisher_id.len())
            + 2 * time
            + bytes_len(payload_bytes)
            + varint_len(sequence)
            + 1
    }

    /// Appends the complete frame (length prefix and envelope) of one event to `out`.
    /// On error (a body over the protocol's cap) `out` is left as it was.
    pub fn write_frame(
        &self,
        out: &mut Vec<u8>,
        sequence: u64,
        kind: EventKind,
        payload: &[u8],
        timestamp: WireTime,
    ) -> Result<(), WireError> {
        let frame_len = self.frame_len(sequence, kind, payload.len(), timestamp);
        let length = checked_length(frame_len - FRAME_LENGTH_BYTES)?;
        let start = out.len();
        out.reserve(frame_len);
        out.extend_from_slice(&length.to_le_bytes());
        // id: a 16-byte byte string (the publisher id's hash, then the sequence).
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.id_hash.to_be_bytes());
        id[8..].copy_from_slice(&sequence.to_be_bytes());
        put_bytes(
            out,
            uuid::Builder::from_custom_bytes(id).into_uuid().as_bytes(),
        );
        put_bytes(out, kind.topic().as_bytes());
        // correlation_metadata: id, parent None, root, sequence_number, stage None, one tag,
        // created_at.
        self.put_correlation_id(out, sequence);
        out.push(0);
        self.put_correlation_id(out, sequence);
        put_varint(out, sequence);
        out.push(0);
        put_varint(out, 1);
        put_bytes(out, PUBLISHER_TAG.as_bytes());
        put_bytes(out, self.publisher_id.as_bytes());
        put_time(out, timestamp);
        put_bytes(out, payload);
        put_varint(out, sequence);
        put_time(out, timestamp);
        // message_type: Event is variant 0.
        out.push(0);
        assert_eq!(
            out.len() - start,
            frame_len,
            "frame length computed exactly"
        );
        debug_assert!(
            frame_len < CONNECTOR_FRAME_MAX_BYTES || payload.len() > EVENT_PAYLOAD_MAX_BYTES,
            "payload within budget and publisher id within its limit keep the frame under budget"
        );
        Ok(())
    }

    /// `{publisher_id}:{sequence}` in bytes.
    fn correlation_id_len(&self, sequence: u64) -> usize {
        self.publisher_id.len() + 1 + decimal_digits(sequence)
    }

    /// `{publisher_id}:{sequence}` as a postcard string, without building the string.
    fn put_correlation_id(&self, out: &mut Vec<u8>, sequence: u64) {
        put_varint(out, self.correlation_id_len(sequence) as u64);
        out.extend_from_slice(self.publisher_id.as_bytes());
        out.push(b':');
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = sequence;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
}

/// Bytes of a postcard byte string of `len` bytes.
fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

/// Bytes of postcard's varint of `value`.
fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn decimal_digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
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

    /// Events covering every optional field and the awkward values of each.
    fn assorted_events() -> Vec<ProcessEvent> {
        let base = ProcessEvent::new(
            1234,
            "sh",
            DateTime::from_timestamp_nanos(1_700_000_000_000_000_005),
        );
        let mut events = vec![base.clone()];
        let argvs: [&[&str]; 5] = [
            &[""],
            &["sh", "-c", "echo hi"],
            &["a", "", "b"],
            &["x y"],
            &["ünï", "côdé", "--password=[REDACTED]"],
        ];
        for argv in argvs {
            let mut event = base.clone();
            event.command_line = argv.iter().map(|arg| (*arg).to_owned()).collect();
            events.push(event);
        }
        for nanos in [-1i64, 0, 1, -1_000_000_001, i64::MIN] {
            let mut event = base.clone();
            event.start_time = Some(DateTime::from_timestamp_nanos(nanos));
            event.collection_time = DateTime::from_timestamp_nanos(nanos);
            events.push(event);
        }
        // Beyond what i64 nanoseconds hold (year 3237), both before and after the epoch.
        for secs in [40_000_000_000i64, -40_000_000_000] {
            let mut event = base.clone();
            let time = DateTime::from_timestamp(secs, 7).expect("a valid time");
            event.start_time = Some(time);
            event.collection_time = time;
            events.push(event);
        }
        for cpu in [
            0.0,
            -0.0,
            12.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            1e-300,
        ] {
            let mut event = base.clone();
            event.cpu_usage_percent = Some(cpu);
            events.push(event);
        }
        let mut full = base.clone();
        full.ppid = Some(u32::MAX);
        full.pid = u32::MAX;
        full.executable_path = Some("/usr/bin/sh".into());
        full.memory_usage_bytes = Some(u64::MAX);
        full.executable_hash = Some("ab".repeat(32));
        full.hash_algorithm = Some("sha256".into());
        full.user_id = Some("1000".into());
        full.accessible = true;
        full.file_exists = true;
        full.truncated = true;
        full.platform_metadata = [
            ("linux.cgroup", "/a"),
            ("a", ""),
            ("zz", "z z"),
            ("", "empty key"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        full.command_line = vec!["x".repeat(300), "y z".into()];
        events.push(full);
        events.push(largest_event(31, 120));
        events
    }

    #[test]
    fn the_hand_written_payload_is_byte_for_byte_the_postcard_encoding() {
        for event in assorted_events() {
            for kind in EventKind::ALL {
                let reference = CollectionEvent::from_process_event(kind, &event)
                    .encode()
                    .expect("encodes");
                let mut ours = vec![9];
                encode_event_payload(kind, &event, &mut ours);
                assert_eq!(ours[1..], reference[..], "{event:?}");
            }
        }
    }

    #[test]
    fn the_framer_computes_each_frame_length_exactly() {
        let framer = EventFramer::new("procmond-1");
        let mut out = Vec::new();
        for sequence in [0, 9, 10, 127, 128, 99_999, u64::MAX] {
            for payload_bytes in [0, 127, 128, 16_383, 16_384] {
                let payload = vec![1u8; payload_bytes];
                let time = WireTime {
                    secs: sequence,
                    nanos: 999_999_999,
                };
                let before = out.len();
                framer
                    .write_frame(&mut out, sequence, EventKind::Stop, &payload, time)
                    .expect("frame");
                assert_eq!(
                    out.len() - before,
                    framer.frame_len(sequence, EventKind::Stop, payload_bytes, time)
                );
            }
        }
        // A body over the protocol's cap is refused, and nothing is appended.
        let before = out.len();
        let huge = vec![0u8; crate::wire::MAX_FRAME_BODY_BYTES];
        assert!(
            framer
                .write_frame(&mut out, 1, EventKind::Start, &huge, WireTime::EPOCH)
                .is_err()
        );
        assert_eq!(out.len(), before);
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
