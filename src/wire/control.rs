//! Our extension to daemoneye-eventbus (docs/protocol.md §7): hello, welcome, cumulative ack,
//! subscribe and its confirmation, all as `Control` envelopes with postcard payloads.
//!
//! Owns the control topics and payload layouts. Upstream peers never send these and can skip
//! them (they are ordinary Control messages on valid topics). Never does I/O.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::wire::envelope::{
    CorrelationMetadata, Message, MessageType, WireTime, decode_exact, encode_value,
};
use crate::wire::error::WireError;
use crate::wire::payload::event_message_id;

/// The extension's protocol version, sent in [`Hello`] and [`Welcome`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest publisher id, in bytes.
pub const MAX_PUBLISHER_ID_BYTES: usize = 128;

/// Topic of [`Hello`].
pub const HELLO_TOPIC: &str = "control.eventbus.hello";
/// Topic of [`Welcome`].
pub const WELCOME_TOPIC: &str = "control.eventbus.welcome";
/// Topic of [`Ack`].
pub const ACK_TOPIC: &str = "control.eventbus.ack";
/// Topic of [`Subscribe`].
pub const SUBSCRIBE_TOPIC: &str = "control.eventbus.subscribe";
/// Topic of [`Subscribed`].
pub const SUBSCRIBED_TOPIC: &str = "control.eventbus.subscribed";
/// Topic of [`SubscribeFrom`].
pub const SUBSCRIBE_FROM_TOPIC: &str = "control.eventbus.subscribe-from";

/// A control payload: its topic, and conversion to and from a `Control` envelope.
pub trait ControlPayload: Serialize + DeserializeOwned {
    /// The topic this payload travels on.
    const TOPIC: &'static str;
    /// The type name, for errors.
    const NAME: &'static str;

    /// Checks invariants the postcard layout cannot express.
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }

    /// Wraps the payload in a `Control` envelope. `origin` and `sequence` make the message
    /// id and correlation id (`{origin}:{TOPIC}:{sequence}`).
    fn to_message(
        &self,
        origin: &str,
        sequence: u64,
        timestamp: WireTime,
    ) -> Result<Message, WireError> {
        self.validate()?;
        let correlation_id = format!("{origin}:{}:{sequence}", Self::TOPIC);
        Ok(Message {
            id: event_message_id(&format!("{origin}:{}", Self::TOPIC), sequence),
            topic: Self::TOPIC.to_owned(),
            correlation_metadata: CorrelationMetadata::root(correlation_id, sequence, timestamp),
            payload: encode_value(self, Self::NAME)?,
            sequence,
            timestamp,
            message_type: MessageType::Control,
        })
    }

    /// Extracts the payload from a `Control` envelope on [`Self::TOPIC`].
    fn from_message(message: &Message) -> Result<Self, WireError> {
        if message.message_type != MessageType::Control || message.topic != Self::TOPIC {
            return Err(WireError::UnexpectedMessage {
                expected_type: MessageType::Control,
                expected_topic: Self::TOPIC,
                found_type: message.message_type,
                found_topic: message.topic.clone(),
            });
        }
        let payload: Self = decode_exact(&message.payload, Self::NAME)?;
        payload.validate()?;
        Ok(payload)
    }
}

/// Client → broker, first message: who is publishing and which protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Stable identity of the publisher (1..=128 bytes of UTF-8); de-duplication is per id.
    pub publisher_id: String,
    /// [`PROTOCOL_VERSION`] of the client.
    pub protocol_version: u32,
}

impl ControlPayload for Hello {
    const TOPIC: &'static str = HELLO_TOPIC;
    const NAME: &'static str = "Hello";

    fn validate(&self) -> Result<(), WireError> {
        let id_bytes = self.publisher_id.len();
        if id_bytes == 0 || id_bytes > MAX_PUBLISHER_ID_BYTES {
            return Err(WireError::BadPublisherId {
                id_bytes,
                max_bytes: MAX_PUBLISHER_ID_BYTES,
            });
        }
        Ok(())
    }
}

/// Broker → client, reply to [`Hello`]: where to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// [`PROTOCOL_VERSION`] of the broker.
    pub protocol_version: u32,
    /// Highest sequence the broker already holds for this publisher; `None` if it holds
    /// nothing. The client resumes from the next sequence.
    pub highest_sequence: Option<u64>,
}

impl ControlPayload for Welcome {
    const TOPIC: &'static str = WELCOME_TOPIC;
    const NAME: &'static str = "Welcome";
}

/// Broker → client: cumulative acknowledgement. Every event of this publisher with a
/// sequence up to and including `highest_sequence` is held by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The publisher's high-water mark at the broker.
    pub highest_sequence: u64,
}

impl ControlPayload for Ack {
    const TOPIC: &'static str = ACK_TOPIC;
    const NAME: &'static str = "Ack";
}

/// Client → broker: deliver events whose topic matches any of these patterns (added to the
/// connection's earlier subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Patterns (see [`crate::wire::topic::Pattern`]).
    pub patterns: Vec<String>,
}

impl ControlPayload for Subscribe {
    const TOPIC: &'static str = SUBSCRIBE_TOPIC;
    const NAME: &'static str = "Subscribe";
}

/// Broker → client: the subscription is active; events published after this was sent are
/// delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Every pattern now active on the connection.
    pub patterns: Vec<String>,
}

impl ControlPayload for Subscribed {
    const TOPIC: &'static str = SUBSCRIBED_TOPIC;
    const NAME: &'static str = "Subscribed";
}

/// Client → broker: like [`Subscribe`], and the subscriber already holds every event of
/// each listed publisher up to its `sequence`, so the broker forwards that publisher's events
/// only above it. Answered with [`Subscribed`]. A resubscribing client sends where it is, so
/// a publisher's replay after a broker restart reaches it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeFrom {
    /// Patterns (see [`crate::wire::topic::Pattern`]).
    pub patterns: Vec<String>,
    /// Per publisher, the highest sequence the subscriber already holds.
    pub positions: Vec<ResumePosition>,
}

/// One publisher's position in a [`SubscribeFrom`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePosition {
    /// The publisher id (as in its [`Hello`]; 1..=128 bytes).
    pub publisher_id: String,
    /// The highest sequence of that publisher the subscriber holds.
    pub sequence: u64,
}

impl ControlPayload for SubscribeFrom {
    const TOPIC: &'static str = SUBSCRIBE_FROM_TOPIC;
    const NAME: &'static str = "SubscribeFrom";

    fn validate(&self) -> Result<(), WireError> {
        for position in &self.positions {
            let id_bytes = position.publisher_id.len();
            if id_bytes == 0 || id_bytes > MAX_PUBLISHER_ID_BYTES {
                return Err(WireError::BadPublisherId {
                    id_bytes,
                    max_bytes: MAX_PUBLISHER_ID_BYTES,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::topic::check_topic;

    #[test]
    fn control_topics_are_valid_topics() {
        for topic in [
            HELLO_TOPIC,
            WELCOME_TOPIC,
            ACK_TOPIC,
            SUBSCRIBE_TOPIC,
            SUBSCRIBED_TOPIC,
            SUBSCRIBE_FROM_TOPIC,
        ] {
            assert_eq!(check_topic(topic), Ok(()), "{topic}");
        }
    }

    #[test]
    fn control_payloads_round_trip_and_check_their_topic() {
        let hello = Hello {
            publisher_id: "host-a".into(),
            protocol_version: PROTOCOL_VERSION,
        };
        let message = hello
            .to_message("host-a", 0, WireTime::EPOCH)
            .expect("encode");
        assert_eq!(message.payload, [6, b'h', b'o', b's', b't', b'-', b'a', 1]);
        assert_eq!(Hello::from_message(&message).ok(), Some(hello));
        assert!(matches!(
            Ack::from_message(&message),
            Err(WireError::UnexpectedMessage { .. })
        ));
        let welcome = Welcome {
            protocol_version: 1,
            highest_sequence: Some(300),
        };
        let message = welcome
            .to_message("broker", 1, WireTime::EPOCH)
            .expect("encode");
        assert_eq!(message.payload, [1, 1, 0xac, 0x02]);
        assert_eq!(Welcome::from_message(&message).ok(), Some(welcome));
    }

    #[test]
    fn subscribe_from_has_its_documented_layout_and_checks_ids() {
        let subscribe = SubscribeFrom {
            patterns: vec!["events.#".into()],
            positions: vec![ResumePosition {
                publisher_id: "p".into(),
                sequence: 300,
            }],
        };
        let message = subscribe
            .to_message("s", 1, WireTime::EPOCH)
            .expect("encode");
        assert_eq!(
            message.payload,
            [
                1, 8, b'e', b'v', b'e', b'n', b't', b's', b'.', b'#', 1, 1, b'p', 0xac, 0x02
            ]
        );
        assert_eq!(SubscribeFrom::from_message(&message).ok(), Some(subscribe));
        // A plain Subscribe is not a SubscribeFrom (different topic), so old subscribers keep
        // their meaning.
        let plain = Subscribe {
            patterns: vec!["events.#".into()],
        }
        .to_message("s", 2, WireTime::EPOCH)
        .expect("encode");
        assert!(SubscribeFrom::from_message(&plain).is_err());
        let bad = SubscribeFrom {
            patterns: vec![],
            positions: vec![ResumePosition {
                publisher_id: String::new(),
                sequence: 1,
            }],
        };
        assert!(bad.to_message("s", 3, WireTime::EPOCH).is_err());
    }

    #[test]
    fn publisher_ids_are_bounded() {
        let empty = Hello {
            publisher_id: String::new(),
            protocol_version: 1,
        };
        assert!(matches!(
            empty.to_message("x", 0, WireTime::EPOCH),
            Err(WireError::BadPublisherId { id_bytes: 0, .. })
        ));
        let long = Hello {
            publisher_id: "x".repeat(MAX_PUBLISHER_ID_BYTES + 1),
            protocol_version: 1,
        };
        assert!(long.validate().is_err());
    }
}
