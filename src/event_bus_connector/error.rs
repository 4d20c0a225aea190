//! [`EventBusConnectorError`]: what the connector's API can return.
//!
//! Owns only the error type. Configuration problems (the broker socket variable, the
//! socket path, limits) are separate variants with the path or field involved, so procmond
//! can tell a typo from an outage. A broker that is not running is never an error: the
//! link keeps trying in the background.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::wal::WalError;
use crate::wire::WireError;

/// Errors of the event bus connector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventBusConnectorError {
    /// The write-ahead log failed (the event was not made durable).
    #[error("WAL error: {0}")]
    Wal(#[from] WalError),
    /// The broker socket variable is not set.
    #[error("environment variable {variable} is not set (path of the broker's Unix socket)")]
    SocketEnvUnset {
        /// The variable (`DAEMONEYE_BROKER_SOCKET`).
        variable: &'static str,
    },
    /// The broker socket variable is set but empty.
    #[error("environment variable {variable} is empty (path of the broker's Unix socket)")]
    SocketEnvEmpty {
        /// The variable (`DAEMONEYE_BROKER_SOCKET`).
        variable: &'static str,
    },
    /// The socket path does not fit in a Unix socket address.
    #[error(
        "broker socket path {path} is {path_bytes} bytes; a Unix socket path has at most {max_bytes}"
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        path_bytes: usize,
        /// The limit (107).
        max_bytes: usize,
    },
    /// Something other than a socket exists at the socket path.
    #[error("broker socket path {path} exists but is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket (or a directory above it) may not be used by this process.
    #[error("permission denied on broker socket {path}: {source}")]
    PermissionDenied {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A configuration value is out of range.
    #[error("invalid connector configuration: {field} must be {requirement}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The publisher id file in the WAL directory cannot be read or created, or holds
    /// something that is not a publisher id.
    #[error("publisher id file {path}: {problem}")]
    PublisherId {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A filesystem or thread operation failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// An event could not be encoded for the wire (a bug: every event has an encoding).
    #[error("cannot encode event for the broker: {0}")]
    Encode(#[from] WireError),
    /// The connector was shut down (or its ring thread has ended); nothing more is accepted.
    #[error("the connector is shut down")]
    ShutDown,
    /// `publish_batch` refused the batch before writing any of it: event `index` (counted
    /// from 0) cannot be stored (its WAL record does not fit in an empty segment) or
    /// encoded. No event of the batch was written or took a sequence.
    #[error("event {index} of the batch was refused, so none of the batch was written: {source}")]
    BatchEventRejected {
        /// Position of the refused event in the batch.
        index: usize,
        /// Why it was refused (a [`WalError::RecordTooLarge`] or an encoding error).
        #[source]
        source: Box<EventBusConnectorError>,
    },
}

impl EventBusConnectorError {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> EventBusConnectorError {
        EventBusConnectorError::Io {
            operation,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Result type of the connector's API.
pub type EventBusConnectorResult<T> = Result<T, EventBusConnectorError>;
