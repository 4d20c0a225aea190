//! The listening socket: path checks, a private parent directory, stale-socket handling,
//! mode 0600, and removal on shutdown.
//!
//! Owns every filesystem call about the socket path. Never replaces anything that is not a
//! stale socket, and never removes a socket that another process has since bound.

use std::fs::DirBuilder;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::broker::error::{BrokerError, Operation};

/// Longest socket path: `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Mode of a directory the broker creates.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode of the socket.
const SOCKET_MODE: u32 = 0o600;

/// A bound listener and the identity of the socket file it created.
pub(crate) struct BoundSocket {
    pub(crate) listener: std::os::unix::net::UnixListener,
    pub(crate) path: PathBuf,
    device: u64,
    inode: u64,
}

/// Creates `path`'s directory (0700) if missing, then `path` itself.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), BrokerError> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(BrokerError::io(Operation::CreateDirectory, path))
}

/// Binds `path` after checking it, replacing only a stale socket.
pub(crate) fn bind(path: &Path) -> Result<BoundSocket, BrokerError> {
    let path_bytes = path.as_os_str().as_bytes().len();
    if path_bytes == 0 {
        return Err(BrokerError::SocketPathEmpty);
    }
    if path_bytes > MAX_SOCKET_PATH_BYTES {
        return Err(BrokerError::SocketPathTooLong {
            path: path.to_owned(),
            path_bytes,
            max_bytes: MAX_SOCKET_PATH_BYTES,
        });
    }
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => remove_if_stale(path)?,
        Ok(_) => {
            return Err(BrokerError::SocketPathOccupied {
                path: path.to_owned(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(BrokerError::io(Operation::StatSocketPath, path)(error)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(BrokerError::io(Operation::BindSocket, path))?;
    // The socket briefly has the umask's mode; a private parent directory (which we create
    // when missing) is what keeps other users out during that window.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(BrokerError::io(Operation::SetSocketPermissions, path))?;
    let metadata = std::fs::symlink_metadata(path)
        .map_err(BrokerError::io(Operation::StatSocketPath, path))?;
    listener
        .set_nonblocking(true)
        .map_err(BrokerError::io(Operation::BindSocket, path))?;
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

/// A socket nobody accepts on is stale (its broker died); a live one is left alone.
fn remove_if_stale(path: &Path) -> Result<(), BrokerError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BrokerError::SocketInUse {
            path: path.to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(BrokerError::io(Operation::RemoveStaleSocket, path))
        }
        Err(error) => Err(BrokerError::io(Operation::ProbeExistingSocket, path)(error)),
    }
}

impl BoundSocket {
    /// The identity needed to remove the socket later.
    pub(crate) fn identity(&self) -> SocketIdentity {
        SocketIdentity {
            path: self.path.clone(),
            device: self.device,
            inode: self.inode,
        }
    }
}

/// Which file is our socket, so shutdown removes it and nothing else.
#[derive(Debug, Clone)]
pub(crate) struct SocketIdentity {
    pub(crate) path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketIdentity {
    /// Removes the socket file if it is still the one we bound.
    pub(crate) fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(metadata) if metadata.dev() == self.device && metadata.ino() == self.inode => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), %error, "cannot remove socket");
                }
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "socket path was replaced; leaving it")
            }
            Err(_) => {}
        }
    }
}
