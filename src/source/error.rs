//! The event sources' error type.
//!
//! Only conditions that stop a source are errors: a bad configuration value, or a /proc root
//! that cannot be listed at all. A single process whose files cannot be read is never an
//! error (it is skipped and counted by the reader).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What can stop an event source, with the operation and path involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A file or directory the source needs as a whole (the /proc root, `/proc/stat`) could
    /// not be read.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A system-wide file had content this source cannot use (e.g. no `btime` line in
    /// `/proc/stat`).
    #[error("{path}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `sysconf` could not report a system constant the reader needs.
    #[error("sysconf({name}) returned {value}")]
    Sysconf {
        /// The constant's name (`_SC_CLK_TCK`, `_SC_PAGESIZE`).
        name: &'static str,
        /// What it returned.
        value: libc::c_long,
    },
    /// A configuration value is out of range.
    #[error("invalid source configuration: {field} must be {requirement}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
}

impl SourceError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SourceError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
