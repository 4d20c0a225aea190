//! Per-publisher high-water marks: the de-duplication state, optionally persisted.
//!
//! Owns the publisher table (bounded in size) and the `--state-dir` files, one per
//! publisher, named by the hex of the publisher id and holding the decimal high-water mark.
//! Files are replaced atomically (write, fsync, rename, fsync directory) so a crash leaves
//! either the old or the new mark, never a torn one.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::broker::error::{BrokerError, Operation};
use crate::broker::socket::create_private_dir;

/// Suffix of a state file.
const STATE_SUFFIX: &str = ".hwm";
/// Suffix of a state file being replaced.
const TEMP_SUFFIX: &str = ".tmp";
/// Mode of state files.
const STATE_FILE_MODE: u32 = 0o600;

/// What the broker holds for one publisher.
#[derive(Debug)]
pub(crate) struct PublisherState {
    /// Publisher id.
    pub(crate) id: String,
    /// Highest sequence accepted; events at or below it are duplicates.
    pub(crate) high_water: Option<u64>,
    /// Highest sequence known to be on disk (equal to `high_water` without a state dir).
    persisted: Option<u64>,
}

/// A shared, lockable publisher entry; the lock serialises a publisher's connections (an old
/// and a new one can overlap during a reconnect) so de-duplication and order hold.
pub(crate) type PublisherEntry = Arc<tokio::sync::Mutex<PublisherState>>;

/// Every publisher the broker has seen.
pub(crate) struct PublisherTable {
    state_dir: Option<PathBuf>,
    max_publishers: usize,
    entries: Mutex<HashMap<String, PublisherEntry>>,
}

impl PublisherTable {
    /// Opens the table, creating the state directory (0700) and loading its marks.
    pub(crate) fn open(
        state_dir: Option<PathBuf>,
        max_publishers: usize,
    ) -> Result<Self, BrokerError> {
        let mut entries = HashMap::new();
        if let Some(dir) = &state_dir {
            create_private_dir(dir)?;
            for (id, high_water) in load_marks(dir)? {
                let state = PublisherState {
                    id: id.clone(),
                    high_water: Some(high_water),
                    persisted: Some(high_water),
                };
                entries.insert(id, Arc::new(tokio::sync::Mutex::new(state)));
            }
        }
        Ok(PublisherTable {
            state_dir,
            max_publishers,
            entries: Mutex::new(entries),
        })
    }

    /// The entry for `id`, created if new; `None` when the table is full (a peer inventing
    /// ids must not grow the broker without bound).
    pub(crate) fn entry(&self, id: &str) -> Option<PublisherEntry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(id) {
            return Some(Arc::clone(entry));
        }
        if entries.len() >= self.max_publishers {
            return None;
        }
        let entry = Arc::new(tokio::sync::Mutex::new(PublisherState {
            id: id.to_owned(),
            high_water: None,
            persisted: None,
        }));
        entries.insert(id.to_owned(), Arc::clone(&entry));
        Some(entry)
    }

    /// Makes the high-water mark durable if a state directory is configured and it moved.
    /// Call with the publisher's lock held, before acknowledging.
    pub(crate) async fn persist(&self, state: &mut PublisherState) -> Result<(), BrokerError> {
        let Some(high_water) = state.high_water else {
            return Ok(());
        };
        if state.persisted >= Some(high_water) {
            return Ok(());
        }
        if let Some(dir) = &self.state_dir {
            let dir = dir.clone();
            let id = state.id.clone();
            let written =
                tokio::task::spawn_blocking(move || write_mark(&dir, &id, high_water)).await;
            match written {
                Ok(result) => result?,
                // The blocking task panicked or was cancelled: the mark is not known to be on disk.
                Err(join_error) => {
                    return Err(BrokerError::Io {
                        operation: Operation::WriteStateFile,
                        path: self.state_dir.clone().unwrap_or_default(),
                        source: std::io::Error::other(join_error),
                    });
                }
            }
        }
        state.persisted = Some(high_water);
        Ok(())
    }
}

fn file_name(id: &str) -> String {
    let mut name: String = id.bytes().map(|byte| format!("{byte:02x}")).collect();
    name.push_str(STATE_SUFFIX);
    name
}

fn id_from_file_name(name: &str) -> Option<String> {
    let hex = name.strip_suffix(STATE_SUFFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| {
            hex.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn load_marks(dir: &Path) -> Result<Vec<(String, u64)>, BrokerError> {
    let mut marks = Vec::new();
    let listing =
        std::fs::read_dir(dir).map_err(BrokerError::io(Operation::ReadStateDirectory, dir))?;
    for item in listing {
        let item = item.map_err(BrokerError::io(Operation::ReadStateDirectory, dir))?;
        let name = item.file_name();
        let Some(id) = name.to_str().and_then(id_from_file_name) else {
            // Temporary files of an interrupted write and foreign files are not ours to load.
            continue;
        };
        let path = item.path();
        let text = std::fs::read_to_string(&path)
            .map_err(BrokerError::io(Operation::ReadStateFile, &path))?;
        let high_water = text
            .trim_end()
            .parse::<u64>()
            .map_err(|_| BrokerError::CorruptStateFile { path: path.clone() })?;
        marks.push((id, high_water));
    }
    Ok(marks)
}

fn write_mark(dir: &Path, id: &str, high_water: u64) -> Result<(), BrokerError> {
    let path = dir.join(file_name(id));
    let mut temp_name = file_name(id);
    temp_name.push_str(TEMP_SUFFIX);
    let temp = dir.join(temp_name);
    let failed = |path: &Path| BrokerError::io(Operation::WriteStateFile, path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(STATE_FILE_MODE)
        .open(&temp)
        .map_err(failed(&temp))?;
    file.write_all(format!("{high_water}\n").as_bytes())
        .map_err(failed(&temp))?;
    file.sync_all().map_err(failed(&temp))?;
    std::fs::rename(&temp, &path).map_err(failed(&path))?;
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(failed(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_any_publisher_id() {
        for id in ["host-a", "../../etc/passwd", "é/ü", "a.hwm"] {
            let name = file_name(id);
            assert!(!name.contains('/'));
            assert_eq!(id_from_file_name(&name).as_deref(), Some(id));
        }
        assert_eq!(id_from_file_name("abc.hwm"), None);
        assert_eq!(id_from_file_name("zz.hwm"), None);
        assert_eq!(id_from_file_name("6162.hwm.tmp"), None);
    }

    #[tokio::test]
    async fn marks_survive_a_reopen_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = PublisherTable::open(Some(dir.path().to_owned()), 4).expect("open");
        let entry = table.entry("p").expect("room");
        {
            let mut state = entry.lock().await;
            state.high_water = Some(41);
            table.persist(&mut state).await.expect("persist");
        }
        let reopened = PublisherTable::open(Some(dir.path().to_owned()), 4).expect("reopen");
        let entry = reopened.entry("p").expect("loaded");
        assert_eq!(entry.lock().await.high_water, Some(41));
        std::fs::write(dir.path().join(file_name("q")), "nope").expect("write");
        assert!(matches!(
            PublisherTable::open(Some(dir.path().to_owned()), 4),
            Err(BrokerError::CorruptStateFile { .. })
        ));
    }

    #[test]
    fn the_table_is_bounded() {
        let table = PublisherTable::open(None, 2).expect("open");
        assert!(table.entry("a").is_some());
        assert!(table.entry("b").is_some());
        assert!(table.entry("a").is_some());
        assert!(table.entry("c").is_none());
    }
}
