//! A borrowing decoder of the envelope, for the broker's per-event path.
//!
//! Owns [`MessageView`]: the same postcard layout as [`crate::wire::Message`], checked exactly as strictly
//! (valid UTF-8 strings, a 16-byte id, valid timestamps, no trailing bytes), but its strings
//! and payload borrow the frame instead of being copied, and the correlation tags are checked
//! and skipped rather than collected. Routing an event needs its topic, sequence and type
//! only, so the broker decodes this and builds a full envelope only when it prints or
//! handles a control message. Never does I/O.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Error, MapAccess, Visitor};

use crate::wire::envelope::{MessageType, WireTime, decode_exact};
use crate::wire::error::WireError;

/// An envelope whose strings and payload borrow the frame body (field order is the wire
/// format, as in [`crate::wire::Message`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageView<'a> {
    /// The 16 bytes of the message id.
    #[serde(borrow, deserialize_with = "id_bytes")]
    pub id: &'a [u8],
    /// Topic, not yet checked against the topic grammar.
    #[serde(borrow)]
    pub topic: &'a str,
    /// Correlation metadata.
    #[serde(borrow)]
    pub correlation_metadata: CorrelationView<'a>,
    /// The payload, as sent.
    #[serde(borrow)]
    pub payload: &'a [u8],
    /// The sender's sequence.
    pub sequence: u64,
    /// When the message was created.
    pub timestamp: WireTime,
    /// What kind of message this is.
    pub message_type: MessageType,
}

/// Correlation metadata borrowing the frame; the tags are only counted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CorrelationView<'a> {
    /// This message's workflow step.
    #[serde(borrow)]
    pub correlation_id: &'a str,
    /// The parent step, if any.
    #[serde(borrow)]
    pub parent_correlation_id: Option<&'a str>,
    /// The first step of the workflow.
    #[serde(borrow)]
    pub root_correlation_id: &'a str,
    /// Position within the workflow.
    pub sequence_number: u64,
    /// Optional stage label.
    #[serde(borrow)]
    pub workflow_stage: Option<&'a str>,
    /// How many tag entries the map holds (each a pair of valid strings).
    #[serde(deserialize_with = "count_tags")]
    pub correlation_tag_entries: u64,
    /// When the correlation was created.
    pub created_at: WireTime,
}

impl<'a> MessageView<'a> {
    /// Decodes a frame body, accepting exactly what [`crate::wire::Message::decode`] accepts.
    pub fn decode(body: &'a [u8]) -> Result<MessageView<'a>, WireError> {
        let view: MessageView<'a> = decode_exact(body, "Message")?;
        view.timestamp.validate()?;
        view.correlation_metadata.created_at.validate()?;
        Ok(view)
    }
}

fn id_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'de [u8], D::Error> {
    let bytes = <&'de [u8]>::deserialize(deserializer)?;
    if bytes.len() != 16 {
        return Err(D::Error::invalid_length(bytes.len(), &"16 bytes"));
    }
    Ok(bytes)
}

fn count_tags<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_map(TagCounter)
}

/// Checks every tag entry is a pair of strings and counts them, keeping nothing.
struct TagCounter;

impl<'de> Visitor<'de> for TagCounter {
    type Value = u64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a map of strings to strings")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<u64, M::Error> {
        let mut entries = 0;
        while map.next_entry::<&'de str, &'de str>()?.is_some() {
            entries += 1;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::envelope::{CorrelationMetadata, Message};
    use uuid::Uuid;

    fn message() -> Message {
        let mut correlation = CorrelationMetadata::root(
            "pub:7".to_owned(),
            7,
            WireTime {
                secs: 1_700_000_000,
                nanos: 3,
            },
        );
        correlation.parent_correlation_id = Some("parent".to_owned());
        correlation.workflow_stage = Some("stage".to_owned());
        correlation.correlation_tags = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "".to_owned()),
        ]);
        Message {
            id: Uuid::from_bytes([7; 16]),
            topic: "events.process.start".to_owned(),
            correlation_metadata: correlation,
            payload: vec![1, 2, 3, 250],
            sequence: 7,
            timestamp: WireTime {
                secs: 1_700_000_001,
                nanos: 999_999_999,
            },
            message_type: MessageType::Event,
        }
    }

    #[test]
    fn a_view_reads_every_field_of_an_envelope() {
        let message = message();
        let body = message.encode().expect("encode");
        let view = MessageView::decode(&body).expect("decode");
        assert_eq!(view.id, message.id.as_bytes());
        assert_eq!(view.topic, message.topic);
        assert_eq!(view.payload, message.payload.as_slice());
        assert_eq!(view.sequence, 7);
        assert_eq!(view.timestamp, message.timestamp);
        assert_eq!(view.message_type, MessageType::Event);
        let correlation = &view.correlation_metadata;
        assert_eq!(correlation.correlation_id, "pub:7");
        assert_eq!(correlation.parent_correlation_id, Some("parent"));
        assert_eq!(correlation.root_correlation_id, "pub:7");
        assert_eq!(correlation.sequence_number, 7);
        assert_eq!(correlation.workflow_stage, Some("stage"));
        assert_eq!(correlation.correlation_tag_entries, 2);
        assert_eq!(
            correlation.created_at,
            message.correlation_metadata.created_at
        );
    }

    /// The view accepts exactly the bodies `Message::decode` accepts: every truncation and
    /// every single-byte change of a valid body gets the same verdict from both.
    #[test]
    fn a_view_accepts_exactly_what_the_owned_decoder_accepts() {
        let body = message().encode().expect("encode");
        let mut checked = 0;
        for length in 0..=body.len() {
            let cut = &body[..length];
            assert_eq!(
                MessageView::decode(cut).is_ok(),
                Message::decode(cut).is_ok(),
                "truncated to {length}"
            );
            checked += 1;
        }
        for index in 0..body.len() {
            for value in [0u8, 1, 0x10, 0x7f, 0x80, 0xc3, 0xff] {
                let mut changed = body.clone();
                changed[index] = value;
                let owned = Message::decode(&changed);
                let view = MessageView::decode(&changed);
                assert_eq!(
                    view.is_ok(),
                    owned.is_ok(),
                    "byte {index} set to {value:#x}"
                );
                if let (Ok(view), Ok(owned)) = (view, owned) {
                    assert_eq!(view.topic, owned.topic);
                    assert_eq!(view.sequence, owned.sequence);
                    assert_eq!(view.payload, owned.payload.as_slice());
                    assert_eq!(view.message_type, owned.message_type);
                }
                checked += 1;
            }
        }
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(MessageView::decode(&trailing).is_err());
        assert!(checked > body.len() * 7);
    }
}
