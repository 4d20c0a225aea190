//! Segment file names: `procmond-{n:05}.wal`, n from 1 (wider numbers simply get more digits),
//! and the lock file's name. Pure.

use std::path::{Path, PathBuf};

/// Name of the lock file held (with `flock`) by the process that has the directory open.
pub const LOCK_FILE_NAME: &str = "procmond-wal.lock";

const PREFIX: &str = "procmond-";
const SUFFIX: &str = ".wal";

/// The file name of segment `number`.
pub fn segment_file_name(number: u64) -> String {
    format!("{PREFIX}{number:05}{SUFFIX}")
}

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_file_name(number))
}

/// The segment number of a file name, if it is exactly a name [`segment_file_name`] produces.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    (number >= 1 && segment_file_name(number) == name).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(segment_file_name(1), "procmond-00001.wal");
        assert_eq!(segment_file_name(123_456), "procmond-123456.wal");
        for n in [1, 99_999, 100_000, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(n)), Some(n));
        }
        for stranger in [
            "procmond-0001.wal",
            "procmond-00000.wal",
            "procmond-00001.wal.tmp",
            "procmond--0001.wal",
            "procmond-+0001.wal",
            "other-00001.wal",
            "procmond-.wal",
            LOCK_FILE_NAME,
        ] {
            assert_eq!(parse_segment_file_name(stranger), None, "{stranger}");
        }
    }
}
