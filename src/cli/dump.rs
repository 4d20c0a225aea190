//! `procmond-wal dump DIR`: prints every valid record of a WAL directory, one JSON object per
//! line (or aligned columns with `--table`), without locking or modifying it.
//!
//! Damage is skipped, as replay skips it; the records around it are still printed and a note
//! on stderr points to `verify`. Exit code: 0 clean, 1 damage was skipped, 2 could not read.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use procmond_wal::ProcessEvent;
use procmond_wal::wal::format::{CheckpointEntry, Record, WalEntry, WatermarkEntry};
use procmond_wal::wal::recovery::read_dir_with;
use serde::Serialize;

use super::output::{rfc3339, rfc3339_millis, table_cell, unix_ns, write_json_line};
use super::{CliError, EXIT_OK, EXIT_PROBLEM, check_wal_dir, finish};

/// Arguments of `procmond-wal dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// The WAL directory (read only; a running writer is not disturbed).
    pub dir: PathBuf,
    /// Aligned columns for people instead of JSON lines.
    #[arg(long)]
    pub table: bool,
    /// Skip events with a lower sequence (checkpoints are always printed).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub from: u64,
}

/// One output line.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DumpLine<'a> {
    Event {
        sequence: u64,
        kind: &'static str,
        timestamp: String,
        timestamp_ns: i64,
        segment: u64,
        offset: u64,
        event: &'a ProcessEvent,
    },
    Checkpoint {
        acked_through: u64,
        timestamp: String,
        timestamp_ns: i64,
        segment: u64,
        offset: u64,
    },
    Watermark {
        durable_watermark: u64,
        timestamp: String,
        timestamp_ns: i64,
        segment: u64,
        offset: u64,
    },
}

/// Runs `dump`.
pub fn run(args: DumpArgs) -> ExitCode {
    finish("dump", dump(&args))
}

fn dump(args: &DumpArgs) -> Result<u8, CliError> {
    check_wal_dir(&args.dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    // The scan cannot be stopped from its callback, so the first write error is kept and
    // later records are no longer formatted.
    let mut write_error: Option<CliError> = None;
    if args.table
        && let Err(error) = write_table_header(&mut out)
    {
        write_error = Some(error);
    }
    let report = read_dir_with(&args.dir, |segment, offset, record| {
        if write_error.is_some() {
            return;
        }
        let written = match record {
            Record::Event(entry) if entry.sequence < args.from => Ok(()),
            Record::Event(entry) if args.table => write_event_row(&mut out, entry),
            Record::Checkpoint(checkpoint) if args.table => {
                write_checkpoint_row(&mut out, checkpoint)
            }
            Record::Event(entry) => write_json_line(&mut out, &event_line(segment, offset, entry)),
            Record::Checkpoint(checkpoint) => write_json_line(
                &mut out,
                &DumpLine::Checkpoint {
                    acked_through: checkpoint.acked_through,
                    timestamp: rfc3339(checkpoint.timestamp),
                    timestamp_ns: unix_ns(checkpoint.timestamp),
                    segment,
                    offset,
                },
            ),
            Record::Watermark(watermark) if args.table => write_watermark_row(&mut out, watermark),
            Record::Watermark(watermark) => write_json_line(
                &mut out,
                &DumpLine::Watermark {
                    durable_watermark: watermark.durable_watermark,
                    timestamp: rfc3339(watermark.timestamp),
                    timestamp_ns: unix_ns(watermark.timestamp),
                    segment,
                    offset,
                },
            ),
        };
        if let Err(error) = written {
            write_error = Some(error);
        }
    })?;
    if let Some(error) = write_error {
        return Err(error);
    }
    out.flush().map_err(CliError::Output)?;
    if report.is_clean() {
        return Ok(EXIT_OK);
    }
    eprintln!(
        "procmond-wal dump: {} damaged place(s) skipped, {} event(s) lost; run `procmond-wal verify {}` for details",
        report.damage.len(),
        report.lost_events,
        args.dir.display()
    );
    Ok(EXIT_PROBLEM)
}

fn event_line(segment: u64, offset: u64, entry: &WalEntry) -> DumpLine<'_> {
    DumpLine::Event {
        sequence: entry.sequence,
        kind: entry.kind.as_str(),
        timestamp: rfc3339(entry.timestamp),
        timestamp_ns: unix_ns(entry.timestamp),
        segment,
        offset,
        event: &entry.event,
    }
}

const NAME_CHARS: usize = 24;

fn write_table_header(out: &mut impl Write) -> Result<(), CliError> {
    writeln!(
        out,
        "{:>10}  {:<10}  {:>8}  {:>8}  {:<NAME_CHARS$}  COLLECTED (UTC)",
        "SEQUENCE", "KIND", "PID", "PPID", "NAME"
    )
    .map_err(CliError::Output)
}

fn write_event_row(out: &mut impl Write, entry: &WalEntry) -> Result<(), CliError> {
    let event = &entry.event;
    let ppid = event
        .ppid
        .map_or_else(|| "-".to_owned(), |ppid| ppid.to_string());
    // `{:<N}` pads by characters, so non-ASCII names keep the columns aligned.
    writeln!(
        out,
        "{:>10}  {:<10}  {:>8}  {:>8}  {:<NAME_CHARS$}  {}",
        entry.sequence,
        entry.kind.as_str(),
        event.pid,
        ppid,
        table_cell(&event.name, NAME_CHARS),
        rfc3339_millis(event.collection_time),
    )
    .map_err(CliError::Output)
}

fn write_checkpoint_row(
    out: &mut impl Write,
    checkpoint: &CheckpointEntry,
) -> Result<(), CliError> {
    writeln!(
        out,
        "{:>10}  checkpoint  acked through {} at {}",
        "-",
        checkpoint.acked_through,
        rfc3339_millis(checkpoint.timestamp),
    )
    .map_err(CliError::Output)
}

fn write_watermark_row(out: &mut impl Write, watermark: &WatermarkEntry) -> Result<(), CliError> {
    writeln!(
        out,
        "{:>10}  watermark   durable through {} at {}",
        "-",
        watermark.durable_watermark,
        rfc3339_millis(watermark.timestamp),
    )
    .map_err(CliError::Output)
}
