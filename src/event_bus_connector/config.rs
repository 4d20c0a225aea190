//! The connector's configuration and its checks: the WAL, where the broker's socket is,
//! the publish buffer limit, backpressure thresholds, reconnect backoff, hello timeout,
//! drain time, checkpoint cadence and redaction.
//!
//! Owns validation (once, at start) and the socket path rules: `DAEMONEYE_BROKER_SOCKET`
//! unset, empty or too long, and a path that is not a socket or may not be used, are
//! typed errors; a path where nothing exists yet (broker not started) is not an error.
//! Never opens a connection.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::EventBusConnectorError;
use super::redact::Redaction;
use crate::broker::MAX_SOCKET_PATH_BYTES;
use crate::wal::WalConfig;
use crate::wire::control::MAX_PUBLISHER_ID_BYTES;

/// The environment variable naming the broker's Unix socket.
pub const BROKER_SOCKET_ENV: &str = "DAEMONEYE_BROKER_SOCKET";

/// Default publish buffer limit: 10 MiB of encoded frames.
pub const DEFAULT_BUFFER_MAX_BYTES: usize = 10 * 1024 * 1024;

/// Where the broker's socket path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSource {
    /// Read [`BROKER_SOCKET_ENV`] when [`crate::EventBusConnector::connect`] is called.
    Env,
    /// This path.
    Path(PathBuf),
}

/// Configuration of an [`crate::EventBusConnector`]; [`ConnectorConfig::new`] gives the
/// defaults and the `with_*` methods change one value each.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectorConfig {
    /// The write-ahead log (its `dir` is the WAL directory, which also holds the
    /// publisher id file).
    pub wal: WalConfig,
    /// Where the broker socket path comes from. Default: the environment.
    pub socket: SocketSource,
    /// Publish buffer limit in encoded frame bytes. Default 10 MiB.
    pub buffer_max_bytes: usize,
    /// Backpressure activates when occupancy reaches this percentage. Default 70.
    pub backpressure_activate_percent: u8,
    /// Backpressure is released when occupancy falls to this percentage. Default 50.
    pub backpressure_release_percent: u8,
    /// First reconnect delay (before jitter). Default 100 ms.
    pub reconnect_base_ms: u64,
    /// Longest reconnect delay. Default 30 s.
    pub reconnect_cap_ms: u64,
    /// How long to wait for the broker's welcome before treating it as a legacy broker
    /// (written to the socket counts as delivered). Default 2 s.
    pub hello_timeout_ms: u64,
    /// How long [`crate::EventBusConnector::shutdown`] lets the link deliver what is
    /// pending. Default 5 s.
    pub drain_timeout_ms: u64,
    /// Write a checkpoint once this many events were acknowledged since the last one.
    /// Default 4096.
    pub checkpoint_every_events: u64,
    /// …or once this long passed with acknowledged events not yet checkpointed.
    /// Default 1 s.
    pub checkpoint_interval_ms: u64,
    /// Capacity of the backpressure signal channel. Default 16.
    pub backpressure_channel_capacity: usize,
    /// argv redaction before anything reaches the WAL. Default: on, upstream's flags.
    pub redaction: Redaction,
    /// The publisher id sent in hello. Default: read from (or created once in) the
    /// `publisher-id` file of the WAL directory, so it survives restarts.
    pub publisher_id: Option<String>,
}

impl ConnectorConfig {
    /// The defaults, with the WAL in `wal_dir`.
    pub fn new(wal_dir: impl Into<PathBuf>) -> ConnectorConfig {
        ConnectorConfig {
            wal: WalConfig::new(wal_dir),
            socket: SocketSource::Env,
            buffer_max_bytes: DEFAULT_BUFFER_MAX_BYTES,
            backpressure_activate_percent: 70,
            backpressure_release_percent: 50,
            reconnect_base_ms: 100,
            reconnect_cap_ms: 30_000,
            hello_timeout_ms: 2_000,
            drain_timeout_ms: 5_000,
            checkpoint_every_events: 4096,
            checkpoint_interval_ms: 1_000,
            backpressure_channel_capacity: 16,
            redaction: Redaction::default(),
            publisher_id: None,
        }
    }

    /// The defaults, with the socket path read from `DAEMONEYE_BROKER_SOCKET` now: unset,
    /// empty or too long is an error here rather than at `connect()`.
    pub fn from_env(
        wal_dir: impl Into<PathBuf>,
    ) -> Result<ConnectorConfig, EventBusConnectorError> {
        let path = resolve_socket_path(&SocketSource::Env)?;
        Ok(ConnectorConfig::new(wal_dir).with_socket_path(path))
    }

    /// Replaces the WAL configuration (its `dir` becomes the WAL directory).
    pub fn with_wal_config(mut self, wal: WalConfig) -> Self {
        self.wal = wal;
        self
    }

    /// Connects to this socket path instead of reading the environment.
    pub fn with_socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = SocketSource::Path(path.into());
        self
    }

    /// Reads the socket path from `DAEMONEYE_BROKER_SOCKET` (the default).
    pub fn with_socket_from_env(mut self) -> Self {
        self.socket = SocketSource::Env;
        self
    }

    /// Sets the publish buffer limit.
    pub fn with_buffer_max_bytes(mut self, buffer_max_bytes: usize) -> Self {
        self.buffer_max_bytes = buffer_max_bytes;
        self
    }

    /// Sets the backpressure thresholds in percent of the buffer limit.
    pub fn with_backpressure_percent(mut self, activate: u8, release: u8) -> Self {
        self.backpressure_activate_percent = activate;
        self.backpressure_release_percent = release;
        self
    }

    /// Sets the reconnect backoff (first delay and cap).
    pub fn with_reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.reconnect_base_ms = duration_ms(base);
        self.reconnect_cap_ms = duration_ms(cap);
        self
    }

    /// Sets how long to wait for a welcome before assuming a legacy broker.
    pub fn with_hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout_ms = duration_ms(timeout);
        self
    }

    /// Sets how long shutdown lets the link deliver what is pending.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout_ms = duration_ms(timeout);
        self
    }

    /// Sets the checkpoint cadence.
    pub fn with_checkpoint_every(mut self, events: u64, interval: Duration) -> Self {
        self.checkpoint_every_events = events;
        self.checkpoint_interval_ms = duration_ms(interval);
        self
    }

    /// Sets argv redaction.
    pub fn with_redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Uses this publisher id instead of the persisted one.
    pub fn with_publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.publisher_id = Some(publisher_id.into());
        self
    }

    /// Checks every value (the WAL's own values are checked when it opens).
    pub fn validate(&self) -> Result<(), EventBusConnectorError> {
        let invalid = |field: &'static str, requirement: &'static str| {
            Err(EventBusConnectorError::InvalidConfig { field, requirement })
        };
        if self.buffer_max_bytes == 0 {
            return invalid("buffer_max_bytes", "at least 1");
        }
        if !(self.backpressure_release_percent < self.backpressure_activate_percent
            && self.backpressure_activate_percent <= 100)
        {
            return invalid(
                "backpressure_activate_percent",
                "above backpressure_release_percent and at most 100",
            );
        }
        if self.reconnect_base_ms == 0 || self.reconnect_cap_ms < self.reconnect_base_ms {
            return invalid(
                "reconnect_base_ms",
                "at least 1 and at most reconnect_cap_ms",
            );
        }
        if self.hello_timeout_ms == 0 {
            return invalid("hello_timeout_ms", "at least 1");
        }
        if self.checkpoint_every_events == 0 || self.checkpoint_interval_ms == 0 {
            return invalid(
                "checkpoint_every_events",
                "at least 1, with checkpoint_interval_ms at least 1",
            );
        }
        if self.backpressure_channel_capacity == 0 {
            return invalid("backpressure_channel_capacity", "at least 1");
        }
        if let Some(id) = &self.publisher_id
            && !is_valid_publisher_id(id)
        {
            return invalid(
                "publisher_id",
                "1 to 128 bytes of printable ASCII without spaces",
            );
        }
        if let SocketSource::Path(path) = &self.socket {
            check_socket_path_length(path)?;
        }
        Ok(())
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `id` can be a publisher id: 1..=128 bytes of printable ASCII without spaces.
pub(crate) fn is_valid_publisher_id(id: &str) -> bool {
    (1..=MAX_PUBLISHER_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The socket path named by `source`, checked for being usable as a socket address.
pub(crate) fn resolve_socket_path(
    source: &SocketSource,
) -> Result<PathBuf, EventBusConnectorError> {
    let path = match source {
        SocketSource::Path(path) => path.clone(),
        SocketSource::Env => match std::env::var_os(BROKER_SOCKET_ENV) {
            None => {
                return Err(EventBusConnectorError::SocketEnvUnset {
                    variable: BROKER_SOCKET_ENV,
                });
            }
            Some(value) if value.is_empty() => {
                return Err(EventBusConnectorError::SocketEnvEmpty {
                    variable: BROKER_SOCKET_ENV,
                });
            }
            Some(value) => PathBuf::from(value),
        },
    };
    check_socket_path_length(&path)?;
    Ok(path)
}

fn check_socket_path_length(path: &Path) -> Result<(), EventBusConnectorError> {
    let path_bytes = path.as_os_str().as_bytes().len();
    if path_bytes == 0 || path_bytes > MAX_SOCKET_PATH_BYTES {
        return Err(EventBusConnectorError::SocketPathTooLong {
            path: path.to_owned(),
            path_bytes,
            max_bytes: MAX_SOCKET_PATH_BYTES,
        });
    }
    Ok(())
}

/// What is at the socket path right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketPresence {
    /// A socket: try to connect.
    Socket,
    /// Nothing (the broker has not started): not an error, try again later.
    Missing,
}

/// Checks the path before connecting: a non-socket or an unreadable path is a
/// configuration error; a missing one is an outage.
pub(crate) fn probe_socket_path(path: &Path) -> Result<SocketPresence, EventBusConnectorError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => Ok(SocketPresence::Socket),
        Ok(_) => Err(EventBusConnectorError::NotASocket {
            path: path.to_owned(),
        }),
        Err(error) => classify_connect_error(path, error).map(|()| SocketPresence::Missing),
    }
}

/// Sorts a failed `stat` or `connect` into a configuration error (`Err`) or an outage
/// (`Ok`: the broker is not there yet, keep trying).
pub(crate) fn classify_connect_error(
    path: &Path,
    error: io::Error,
) -> Result<(), EventBusConnectorError> {
    match error.kind() {
        io::ErrorKind::PermissionDenied => Err(EventBusConnectorError::PermissionDenied {
            path: path.to_owned(),
            source: Arc::new(error),
        }),
        io::ErrorKind::NotADirectory => Err(EventBusConnectorError::NotASocket {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_design() {
        let config = ConnectorConfig::new("/tmp/wal");
        config.validate().expect("defaults are valid");
        assert_eq!(config.buffer_max_bytes, 10 * 1024 * 1024);
        assert_eq!(
            (
                config.backpressure_activate_percent,
                config.backpressure_release_percent
            ),
            (70, 50)
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = [
            ConnectorConfig::new("/w").with_buffer_max_bytes(0),
            ConnectorConfig::new("/w").with_backpressure_percent(50, 50),
            ConnectorConfig::new("/w").with_backpressure_percent(101, 50),
            ConnectorConfig::new("/w")
                .with_reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            ConnectorConfig::new("/w").with_hello_timeout(Duration::ZERO),
            ConnectorConfig::new("/w").with_publisher_id("has space"),
            ConnectorConfig::new("/w").with_publisher_id("x".repeat(129)),
        ];
        for config in bad {
            assert!(
                matches!(
                    config.validate(),
                    Err(EventBusConnectorError::InvalidConfig { .. })
                ),
                "{config:?}"
            );
        }
        let long = ConnectorConfig::new("/w").with_socket_path("/".repeat(108));
        assert!(matches!(
            long.validate(),
            Err(EventBusConnectorError::SocketPathTooLong {
                path_bytes: 108,
                max_bytes: 107,
                ..
            })
        ));
    }

    #[test]
    fn permission_problems_are_errors_and_absence_is_not() {
        let path = Path::new("/x");
        assert!(matches!(
            classify_connect_error(path, io::Error::from(io::ErrorKind::PermissionDenied)),
            Err(EventBusConnectorError::PermissionDenied { .. })
        ));
        assert!(classify_connect_error(path, io::Error::from(io::ErrorKind::NotFound)).is_ok());
        assert!(
            classify_connect_error(path, io::Error::from(io::ErrorKind::ConnectionRefused)).is_ok()
        );
    }

    #[test]
    fn probing_tells_a_socket_from_a_file_from_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            probe_socket_path(&file),
            Err(EventBusConnectorError::NotASocket { .. })
        ));
        assert_eq!(
            probe_socket_path(&dir.path().join("none")).ok(),
            Some(SocketPresence::Missing)
        );
        let socket = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        assert_eq!(
            probe_socket_path(&socket).ok(),
            Some(SocketPresence::Socket)
        );
    }
}
