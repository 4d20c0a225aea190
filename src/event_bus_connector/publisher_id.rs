//! The publisher id: the identity the broker de-duplicates by, kept in the `publisher-id`
//! file of the WAL directory so it survives restarts (a new id after a restart would make
//! the broker resend nothing it already holds under the old one, but accept replays as new).
//!
//! Owns the file's name and its atomic creation (temporary file, fsync, rename, directory
//! fsync). Called with the WAL's directory lock held, so two processes never race on it.
//! A file holding something that is not an id is an error, never silently replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::config::is_valid_publisher_id;
use super::error::EventBusConnectorError;

/// Name of the file in the WAL directory.
pub const PUBLISHER_ID_FILE: &str = "publisher-id";

/// Reads the persisted id, creating one (`procmond-` + 32 random hex digits) if there is
/// none.
pub(crate) fn load_or_create(dir: &Path) -> Result<String, EventBusConnectorError> {
    let path = dir.join(PUBLISHER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim_end_matches('\n');
            if is_valid_publisher_id(id) {
                return Ok(id.to_owned());
            }
            Err(EventBusConnectorError::PublisherId {
                path,
                problem: "does not hold 1 to 128 bytes of printable ASCII".to_owned(),
            })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("procmond-{}", random_hex(16, dir)?);
            let temporary = dir.join(format!("{PUBLISHER_ID_FILE}.tmp"));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(|e| EventBusConnectorError::io("create", &temporary, e))?;
            file.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| EventBusConnectorError::io("write", &temporary, e))?;
            fs::rename(&temporary, &path)
                .map_err(|e| EventBusConnectorError::io("rename into place", &path, e))?;
            File::open(dir)
                .and_then(|directory| directory.sync_all())
                .map_err(|e| EventBusConnectorError::io("sync directory", dir, e))?;
            tracing::info!(publisher_id = %id, path = %path.display(), "created publisher id");
            Ok(id)
        }
        Err(error) => Err(EventBusConnectorError::io("read", &path, error)),
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize, dir: &Path) -> Result<String, EventBusConnectorError> {
    let mut random = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut random))
        .map_err(|e| EventBusConnectorError::io("read random bytes for", dir, e))?;
    Ok(random.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A seed for jitter (not security sensitive): random bytes if available, else the clock.
pub(crate) fn jitter_seed() -> u64 {
    let mut random = [0u8; 8];
    match File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut random)) {
        Ok(()) => u64::from_le_bytes(random),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_created_once_and_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("created");
        assert!(first.starts_with("procmond-") && first.len() == 9 + 32);
        assert_eq!(load_or_create(dir.path()).ok(), Some(first));
        assert!(!dir.path().join("publisher-id.tmp").exists());
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(PUBLISHER_ID_FILE), "two words\n").expect("write");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(EventBusConnectorError::PublisherId { .. })
        ));
    }
}
