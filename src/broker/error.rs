//! [`BrokerError`]: why the reference broker could not start or keep its state.
//!
//! Owns only the error types. Errors caused by one peer never become a `BrokerError`: they
//! close that peer's connection and are logged (see `connection.rs`).

use std::fmt;
use std::path::PathBuf;

/// What the broker was doing when an I/O call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Inspecting the socket path.
    StatSocketPath,
    /// Connecting to an existing socket to see whether a broker still serves it.
    ProbeExistingSocket,
    /// Removing a stale socket left by a broker that is gone.
    RemoveStaleSocket,
    /// Binding the listening socket.
    BindSocket,
    /// Restricting the socket to mode 0600.
    SetSocketPermissions,
    /// Creating a directory (socket parent or state directory) with mode 0700.
    CreateDirectory,
    /// Listing the state directory.
    ReadStateDirectory,
    /// Reading a publisher's high-water mark.
    ReadStateFile,
    /// Writing a publisher's high-water mark.
    WriteStateFile,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::StatSocketPath => "inspect socket path",
            Operation::ProbeExistingSocket => "probe existing socket",
            Operation::RemoveStaleSocket => "remove stale socket",
            Operation::BindSocket => "bind socket",
            Operation::SetSocketPermissions => "set socket permissions",
            Operation::CreateDirectory => "create directory",
            Operation::ReadStateDirectory => "list state directory",
            Operation::ReadStateFile => "read state file",
            Operation::WriteStateFile => "write state file",
        })
    }
}

/// A broker start-up, configuration or state error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// An I/O call failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: Operation,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket path does not fit in `sun_path`.
    #[error("socket path {path} is {path_bytes} bytes; the limit is {max_bytes}")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length.
        path_bytes: usize,
        /// The longest path a Unix socket address holds.
        max_bytes: usize,
    },
    /// The socket path is empty.
    #[error("socket path is empty")]
    SocketPathEmpty,
    /// Something that is not a socket exists at the socket path; it is never replaced.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    SocketPathOccupied {
        /// The path.
        path: PathBuf,
    },
    /// A live broker already serves the socket path.
    #[error("another process is listening on {path}")]
    SocketInUse {
        /// The path.
        path: PathBuf,
    },
    /// A state file does not hold a decimal sequence number.
    #[error("state file {path} is corrupt (expected a decimal sequence number)")]
    CorruptStateFile {
        /// The file.
        path: PathBuf,
    },
    /// A configuration value is out of range.
    #[error("configuration {field} = {value} is out of range {min}..={max}")]
    InvalidConfig {
        /// The field name.
        field: &'static str,
        /// The value given.
        value: usize,
        /// Smallest allowed value.
        min: usize,
        /// Largest allowed value.
        max: usize,
    },
}

impl BrokerError {
    /// A `map_err` adapter for an I/O call on `path`.
    pub(crate) fn io(
        operation: Operation,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> BrokerError + use<> {
        let path = path.to_owned();
        move |source| BrokerError::Io {
            operation,
            path,
            source,
        }
    }
}
