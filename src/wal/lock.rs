//! The directory lock: an exclusive `flock` on `procmond-wal.lock`, held for the life of the
//! writer, so a second process opening the same directory fails instead of corrupting it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::WalError;
use super::naming::LOCK_FILE_NAME;

/// Holds the lock until dropped (the kernel also drops it if the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or fails at once with [`WalError::Locked`].
    pub fn acquire(dir: &Path) -> Result<DirLock, WalError> {
        let lock_path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| WalError::io("open lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(WalError::Locked {
                dir: dir.to_path_buf(),
                lock_path,
            }),
            Err(TryLockError::Error(e)) => Err(WalError::io("lock", &lock_path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(WalError::Locked { .. })
        ));
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
