//! Per-publisher high-water marks: the de-duplication state, optionally persisted.
//!
//! Owns the publisher table (bounded in size) and the `--state-dir` files, one per
//! publisher, holding the decimal high-water mark. A file is named by the hex of the
//! publisher id when that fits a file name; a longer id (124 bytes or more: its hex name plus
//! suffixes would pass the 255-byte limit) gets `<hex of its first 48 bytes>-<64-bit hash of
//! the whole id>.hwm` and its full id, in hex, on the file's second line, checked against the
//! name when loaded. Two long ids that would share a name are never allowed to share a file:
//! the second is refused like a publisher over the table's limit.
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
/// Longest file name most Linux filesystems accept (`NAME_MAX`).
const NAME_MAX_BYTES: usize = 255;
/// Longest id whose plain hex name, with both suffixes, stays within [`NAME_MAX_BYTES`].
const PLAIN_NAME_MAX_ID_BYTES: usize =
    (NAME_MAX_BYTES - STATE_SUFFIX.len() - TEMP_SUFFIX.len()) / 2;
/// Id bytes kept (as hex) in the name of a long id's file, so people can tell files apart.
const LONG_NAME_PREFIX_BYTES: usize = 48;
/// Separates the prefix from the hash in a long id's file name (never a hex digit).
const LONG_NAME_SEPARATOR: char = '-';

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

impl PublisherState {
    /// The highest mark known to be persisted (with a state directory: on disk).
    #[cfg(test)]
    pub(crate) fn persisted_mark(&self) -> Option<u64> {
        self.persisted
    }
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
        if self.state_dir.is_some() && is_long(id) {
            let name = file_name(id);
            if name_taken(entries.keys().map(String::as_str), &name, file_name) {
                tracing::warn!(
                    publisher_bytes = id.len(),
                    file = %name,
                    "refusing a publisher whose state file name collides with another's"
                );
                return None;
            }
        }
        let entry = Arc::new(tokio::sync::Mutex::new(PublisherState {
            id: id.to_owned(),
            high_water: None,
            persisted: None,
        }));
        entries.insert(id.to_owned(), Arc::clone(&entry));
        Some(entry)
    }

    /// Makes the mark `high_water` durable if a state directory is configured and the file
    /// holds less. Call with the publisher's lock held, before acknowledging, and only once
    /// every event at or below `high_water` is written to the subscribers (docs/protocol.md
    /// §8): a successor broker drops the replay of everything at or below a persisted mark.
    pub(crate) async fn persist(
        &self,
        state: &mut PublisherState,
        high_water: u64,
    ) -> Result<(), BrokerError> {
        assert!(
            state.high_water >= Some(high_water),
            "persisting {high_water} above the accepted mark {:?}",
            state.high_water
        );
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

/// Whether another long id among `ids` already maps to the file name `name`.
fn name_taken<'a>(
    mut ids: impl Iterator<Item = &'a str>,
    name: &str,
    name_of: impl Fn(&str) -> String,
) -> bool {
    ids.any(|other| is_long(other) && name_of(other) == name)
}

/// Whether `id` is too long for a plain hex file name.
fn is_long(id: &str) -> bool {
    id.len() > PLAIN_NAME_MAX_ID_BYTES
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

/// FNV-1a, 64 bits: stable across builds and platforms (file names must not change with the
/// toolchain). Not collision-resistant against a chosen id, hence the collision check in
/// [`PublisherTable::entry`] and the full id stored in the file.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn file_name(id: &str) -> String {
    let bytes = id.as_bytes();
    let mut name = if is_long(id) {
        format!(
            "{}{LONG_NAME_SEPARATOR}{:016x}",
            hex(&bytes[..LONG_NAME_PREFIX_BYTES]),
            fnv1a_64(bytes)
        )
    } else {
        hex(bytes)
    };
    name.push_str(STATE_SUFFIX);
    debug_assert!(name.len() + TEMP_SUFFIX.len() <= NAME_MAX_BYTES, "{name}");
    name
}

/// What a state file's name says about its publisher.
#[derive(Debug, PartialEq, Eq)]
enum NameKind {
    /// The whole id, from a plain hex name.
    Plain(String),
    /// A long id's name: the id is on the file's second line.
    Long,
}

fn parse_file_name(name: &str) -> Option<NameKind> {
    let stem = name.strip_suffix(STATE_SUFFIX)?;
    if let Some((prefix, hash)) = stem.split_once(LONG_NAME_SEPARATOR) {
        let well_formed = prefix.len() == 2 * LONG_NAME_PREFIX_BYTES
            && unhex(prefix).is_some()
            && hash.len() == 16
            && u64::from_str_radix(hash, 16).is_ok();
        return well_formed.then_some(NameKind::Long);
    }
    let id = String::from_utf8(unhex(stem)?).ok()?;
    // A plain name only ever holds a short id.
    (!is_long(&id)).then_some(NameKind::Plain(id))
}

/// The file's content: the mark, and for a long id the id in hex on a second line.
fn file_content(id: &str, high_water: u64) -> String {
    if is_long(id) {
        format!("{high_water}\n{}\n", hex(id.as_bytes()))
    } else {
        format!("{high_water}\n")
    }
}

/// Reads one state file named `name`: its publisher id and mark.
fn parse_file(name: &str, kind: NameKind, text: &str) -> Option<(String, u64)> {
    let mut lines = text.lines();
    let high_water = lines.next()?.parse::<u64>().ok()?;
    match kind {
        NameKind::Plain(id) => lines.next().is_none().then_some((id, high_water)),
        NameKind::Long => {
            let id = String::from_utf8(unhex(lines.next()?)?).ok()?;
            let consistent = lines.next().is_none() && is_long(&id) && file_name(&id) == name;
            consistent.then_some((id, high_water))
        }
    }
}

fn load_marks(dir: &Path) -> Result<Vec<(String, u64)>, BrokerError> {
    let mut marks = Vec::new();
    let listing =
        std::fs::read_dir(dir).map_err(BrokerError::io(Operation::ReadStateDirectory, dir))?;
    for item in listing {
        let item = item.map_err(BrokerError::io(Operation::ReadStateDirectory, dir))?;
        let file_name = item.file_name();
        let Some((name, kind)) = file_name
            .to_str()
            .and_then(|name| Some((name, parse_file_name(name)?)))
        else {
            // Temporary files of an interrupted write and foreign files are not ours to load.
            continue;
        };
        let path = item.path();
        let text = std::fs::read_to_string(&path)
            .map_err(BrokerError::io(Operation::ReadStateFile, &path))?;
        let mark = parse_file(name, kind, &text)
            .ok_or_else(|| BrokerError::CorruptStateFile { path: path.clone() })?;
        marks.push(mark);
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
    file.write_all(file_content(id, high_water).as_bytes())
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
            assert_eq!(parse_file_name(&name), Some(NameKind::Plain(id.to_owned())));
        }
        assert_eq!(parse_file_name("abc.hwm"), None);
        assert_eq!(parse_file_name("zz.hwm"), None);
        assert_eq!(parse_file_name("6162.hwm.tmp"), None);
        assert_eq!(parse_file_name("61-62.hwm"), None);
    }

    /// Ids around and far past the length where a plain hex name stops fitting.
    fn long_ids() -> Vec<String> {
        let mut ids: Vec<String> = [123, 124, 125, 200, 4096]
            .into_iter()
            .map(|len| "p".repeat(len))
            .collect();
        ids.push("é".repeat(100)); // 200 bytes of two-byte characters
        // Same 48-byte prefix, different tails: different files.
        ids.push(format!("{}{}", "q".repeat(150), "tail-one"));
        ids.push(format!("{}{}", "q".repeat(150), "tail-two"));
        ids
    }

    #[test]
    fn long_publisher_ids_get_short_distinct_file_names() {
        let ids = long_ids();
        let names: std::collections::HashSet<String> = ids.iter().map(|id| file_name(id)).collect();
        assert_eq!(names.len(), ids.len());
        for id in &ids {
            let name = file_name(id);
            assert!(name.len() + TEMP_SUFFIX.len() <= NAME_MAX_BYTES, "{name}");
            assert!(!name.contains('/'));
            let expected = if id.len() <= 123 {
                NameKind::Plain(id.clone())
            } else {
                NameKind::Long
            };
            assert_eq!(parse_file_name(&name), Some(expected), "{} bytes", id.len());
        }
    }

    #[test]
    fn a_long_id_whose_name_is_taken_is_detected() {
        let a = "a".repeat(200);
        let b = "b".repeat(200);
        let short = "c".repeat(10);
        // A naming that collides on length stands in for a hash collision.
        let by_length = |id: &str| format!("{}{STATE_SUFFIX}", id.len());
        let ids = [a.as_str(), short.as_str()];
        assert!(name_taken(ids.into_iter(), &by_length(&b), by_length));
        // Short ids never share a long id's file; the real naming keeps a and b apart.
        assert!(!name_taken(
            [short.as_str()].into_iter(),
            "10.hwm",
            by_length
        ));
        assert!(!name_taken(
            [a.as_str()].into_iter(),
            &file_name(&b),
            file_name
        ));
    }

    #[tokio::test]
    async fn marks_of_long_publisher_ids_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = long_ids();
        let table = PublisherTable::open(Some(dir.path().to_owned()), 16).expect("open");
        for (mark, id) in (1u64..).zip(&ids) {
            let entry = table.entry(id).expect("room");
            let mut state = entry.lock().await;
            state.high_water = Some(mark);
            table.persist(&mut state, mark).await.expect("persist");
        }
        let reopened = PublisherTable::open(Some(dir.path().to_owned()), 16).expect("reopen");
        for (mark, id) in (1u64..).zip(&ids) {
            let entry = reopened.entry(id).expect("loaded");
            assert_eq!(
                entry.lock().await.high_water,
                Some(mark),
                "{} bytes",
                id.len()
            );
        }
        assert_eq!(reopened.entries.lock().unwrap().len(), ids.len());
    }

    #[test]
    fn a_long_id_file_whose_content_does_not_match_its_name_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = "r".repeat(300);
        let other = "s".repeat(300);
        // The name of one id, the content of another.
        std::fs::write(dir.path().join(file_name(&id)), file_content(&other, 7)).expect("write");
        assert!(matches!(
            PublisherTable::open(Some(dir.path().to_owned()), 4),
            Err(BrokerError::CorruptStateFile { .. })
        ));
        // Without the id line, too.
        std::fs::write(dir.path().join(file_name(&id)), "7\n").expect("write");
        assert!(matches!(
            PublisherTable::open(Some(dir.path().to_owned()), 4),
            Err(BrokerError::CorruptStateFile { .. })
        ));
        std::fs::write(dir.path().join(file_name(&id)), file_content(&id, 7)).expect("write");
        let table = PublisherTable::open(Some(dir.path().to_owned()), 4).expect("consistent");
        assert!(table.entry(&id).is_some());
    }

    #[tokio::test]
    async fn marks_survive_a_reopen_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = PublisherTable::open(Some(dir.path().to_owned()), 4).expect("open");
        let entry = table.entry("p").expect("room");
        {
            let mut state = entry.lock().await;
            state.high_water = Some(41);
            table.persist(&mut state, 41).await.expect("persist");
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
