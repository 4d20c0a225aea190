//! procmond-wal: a durable write-ahead log for procmond's process events and the connector
//! that delivers them to the DaemonEye event broker.
//!
//! - [`event`]: the `ProcessEvent` model and its topics.
//! - [`wal`]: the write-ahead log (format, segments, group commit on one io_uring ring, replay).
//! - [`io`]: the narrow I/O layer with io_uring and portable backends.
//! - [`wire`]: the daemoneye-eventbus wire codec (pure).
//! - [`event_bus_connector`]: the connector procmond calls (WAL first, then the broker).
//! - [`broker`]: the reference broker.
//!
//! Start with `docs/design.md`; the byte formats are in `docs/format.md` and
//! `docs/protocol.md`. The rest of this page is the project's README; its Rust examples run
//! as doc tests.
//!
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod broker;
pub mod event;
pub mod event_bus_connector;
pub mod io;
pub mod source;
pub mod wal;
pub mod wire;

pub use event::{EventKind, ProcessEvent};
pub use event_bus_connector::{
    BackpressureSignal, BatchPublishReceipt, ConnectorConfig, EventBusConnector,
    EventBusConnectorError, ProcessEventType, PublishReceipt,
};
