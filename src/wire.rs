//! The daemoneye-eventbus wire codec (docs/protocol.md §1–§7): frames, the postcard
//! envelope, the process payload, health frames, topics and our hello/welcome/ack extension.
//!
//! Pure: this module and its children never do I/O, never block and never panic on bytes
//! from a peer. The byte-level specification is `docs/protocol.md`.
//!
//! - [`budget`]: the connector's 192 KiB frame budget and wire-side truncation.
//! - [`frame`]: length-prefixed frames, the 1 MiB cap, raw `PING`/`PONG` bodies.
//! - [`envelope`]: the `Message` envelope and its correlation metadata.
//! - [`payload`]: `CollectionEvent::Process` and the lossless `ProcessEvent` mapping.
//! - [`topic`]: topic validation and subscription pattern matching.
//! - [`control`]: the hello / welcome / ack / subscribe control messages.
//! - [`error`]: the [`WireError`] type.

pub mod budget;
pub mod control;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod payload;
pub mod topic;
pub mod view;

pub use control::{Ack, Hello, PROTOCOL_VERSION, Subscribe, Subscribed, Welcome};
pub use envelope::{CorrelationMetadata, Message, MessageType, WireTime};
pub use error::WireError;
pub use frame::{Body, FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES};
pub use payload::CollectionEvent;
pub use topic::{Pattern, Topic};
pub use view::MessageView;
