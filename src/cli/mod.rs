//! The `procmond-wal` command-line tool's subcommands, one file each, and what they share:
//! the exit-code convention, the error type, and the check that a path is a WAL directory.
//!
//! Exit codes (all subcommands): 0 success, 1 the command ran and found a problem (damage for
//! `verify` and `dump`, a failed self-check for `load`), 2 the command could not run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use procmond_wal::wal::WalError;
use procmond_wal::wal::recovery::list_segments;

pub mod broker;
pub mod connector;
pub mod cputime;
pub mod dump;
pub mod histogram;
pub mod load;
pub mod logs;
pub mod output;
pub mod run;
pub mod stats;
pub mod verify;

/// The command ran and found what it was looking for (or nothing wrong).
pub const EXIT_OK: u8 = 0;
/// The command ran and found a problem.
pub const EXIT_PROBLEM: u8 = 1;
/// The command could not run (bad arguments, unreadable directory, I/O failure).
pub const EXIT_FAILED: u8 = 2;

/// Why a subcommand could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The WAL directory does not exist.
    #[error("WAL directory {path} does not exist")]
    MissingDir {
        /// The path given.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{path} is not a directory")]
    NotADir {
        /// The path given.
        path: PathBuf,
    },
    /// The directory holds no segment file, so it is not (yet) a WAL.
    #[error("no WAL segment files (procmond-NNNNN.wal) in {path}")]
    NoSegments {
        /// The directory.
        path: PathBuf,
    },
    /// Inspecting the path failed.
    #[error("inspect {path}: {source}")]
    Inspect {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The WAL library reported an error.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Writing to stdout or stderr failed (other than the reader going away).
    #[error("write output: {0}")]
    Output(#[source] std::io::Error),
    /// Creating the async runtime failed.
    #[error("start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A load task failed unexpectedly.
    #[error("load task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// Creating the temporary directory for `load` failed.
    #[error("create a temporary WAL directory: {0}")]
    TempDir(#[source] std::io::Error),
    /// `load` was asked for more events than its disk budget holds; nothing was written.
    #[error(
        "{events} events of {record_bytes} bytes need about {needed_mib} MiB of WAL segments \
         ({segments} segments of {segment_mib} MiB, {existing_segments} of them already in \
         the directory), more than the disk budget of {budget_mib} MiB: nothing was written; \
         ask for fewer events or raise --wal-max-mib"
    )]
    LoadOverBudget {
        /// Events asked for.
        events: u64,
        /// Bytes of one event's record on disk.
        record_bytes: u64,
        /// Segment files the run would need (existing ones included).
        segments: u64,
        /// Segment files already in the directory.
        existing_segments: u64,
        /// Size of one segment file.
        segment_mib: u64,
        /// `segments` × `segment_mib`.
        needed_mib: u64,
        /// The disk budget (`--wal-max-mib`).
        budget_mib: u64,
    },
}

/// Checks that `dir` is an existing directory holding at least one segment file, so a typo'd
/// path is reported as such instead of as an empty, "clean" log.
pub fn check_wal_dir(dir: &Path) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::MissingDir {
                path: dir.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(CliError::Inspect {
                path: dir.to_path_buf(),
                source,
            });
        }
        Ok(metadata) if !metadata.is_dir() => {
            return Err(CliError::NotADir {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    if list_segments(dir)?.is_empty() {
        return Err(CliError::NoSegments {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Turns a subcommand's outcome into the process exit code, printing a failure on stderr.
/// A closed stdout (`| head`) is not a failure: the reader has what it wanted.
pub fn finish(command: &str, outcome: Result<u8, CliError>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(CliError::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_OK)
        }
        Err(error) => {
            // Every message already carries its cause (operation, path, OS error).
            eprintln!("procmond-wal {command}: error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
