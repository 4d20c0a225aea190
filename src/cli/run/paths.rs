//! Where `run` keeps its files: the default WAL directory under the user's state directory,
//! and the private directory of the embedded broker's socket.
//!
//! Owns path choice and directory creation (mode 0700). Never deletes anything it did not
//! create, and never widens the permissions of a directory that already exists.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the directories `run` creates: only the owner may enter them.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode the embedded broker's socket is given: only the owner may connect.
pub const PRIVATE_SOCKET_MODE: u32 = 0o600;

/// Why a directory for `run` could not be chosen or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Neither `XDG_STATE_HOME` nor `HOME` gives an absolute path.
    #[error(
        "no state directory: set XDG_STATE_HOME or HOME to an absolute path, or pass --wal-dir"
    )]
    NoStateDir,
    /// Creating or inspecting a directory failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The default WAL directory: `$XDG_STATE_HOME/procmond-wal/wal`, or
/// `$HOME/.local/state/procmond-wal/wal` when `XDG_STATE_HOME` is unset, empty or relative
/// (the XDG base directory rules ignore relative values). Pure: the caller passes the two
/// variables.
pub fn default_wal_dir(
    xdg_state_home: Option<&str>,
    home: Option<&str>,
) -> Result<PathBuf, PathError> {
    let absolute = |value: Option<&str>| {
        value
            .filter(|value| Path::new(value).is_absolute())
            .map(PathBuf::from)
    };
    let state = match (absolute(xdg_state_home), absolute(home)) {
        (Some(state), _) => state,
        (None, Some(home)) => home.join(".local").join("state"),
        (None, None) => return Err(PathError::NoStateDir),
    };
    Ok(state.join("procmond-wal").join("wal"))
}

/// The default WAL directory for this process's environment.
pub fn default_wal_dir_from_env() -> Result<PathBuf, PathError> {
    let xdg = std::env::var("XDG_STATE_HOME").ok();
    let home = std::env::var("HOME").ok();
    default_wal_dir(xdg.as_deref(), home.as_deref())
}

/// Creates `dir` and any missing parents with mode 0700. A directory that already exists is
/// used as it is (an operator may have chosen other permissions on purpose).
pub fn create_private_dir(dir: &Path) -> Result<(), PathError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(|source| PathError::Io {
            operation: "create directory",
            path: dir.to_owned(),
            source,
        })
}

/// A fresh private directory (0700) for the embedded broker's socket, removed when dropped.
/// Under `$XDG_RUNTIME_DIR` when it is set and absolute, else under the system's temporary
/// directory. The name is short so the socket path fits a socket address.
pub fn private_socket_dir() -> Result<tempfile::TempDir, PathError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute() && path.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    // tempfile creates the directory with mode 0700.
    let dir = tempfile::Builder::new()
        .prefix("procmond-wal-")
        .tempdir_in(&base)
        .map_err(|source| PathError::Io {
            operation: "create a private socket directory in",
            path: base.clone(),
            source,
        })?;
    restrict(dir.path(), PRIVATE_DIR_MODE)?;
    Ok(dir)
}

/// Sets `path`'s mode (the socket after binding, the socket directory after creation).
pub fn restrict(path: &Path, mode: u32) -> Result<(), PathError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        PathError::Io {
            operation: "set permissions of",
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn xdg_state_home_wins_when_absolute() {
        assert_eq!(
            default_wal_dir(Some("/s"), Some("/home/u")).unwrap(),
            PathBuf::from("/s/procmond-wal/wal")
        );
    }

    #[test]
    fn home_is_the_fallback_and_relative_values_are_ignored() {
        for xdg in [None, Some(""), Some("relative/state")] {
            assert_eq!(
                default_wal_dir(xdg, Some("/home/u")).unwrap(),
                PathBuf::from("/home/u/.local/state/procmond-wal/wal"),
                "{xdg:?}"
            );
        }
        assert!(matches!(
            default_wal_dir(None, Some("home")),
            Err(PathError::NoStateDir)
        ));
        assert!(matches!(
            default_wal_dir(None, None),
            Err(PathError::NoStateDir)
        ));
    }

    #[test]
    fn created_directories_are_private() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("a").join("b");
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, PRIVATE_DIR_MODE);
        let socket_dir = private_socket_dir().unwrap();
        let mode = std::fs::metadata(socket_dir.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, PRIVATE_DIR_MODE);
    }
}
