//! `procmond-wal stats DIR`: what a WAL directory holds, segment by segment, and in total
//! (read only; a running writer is not disturbed). Damage is counted here and explained by
//! `verify`. Exit code: 0 read, 2 could not run.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use procmond_wal::wal::recovery::{OpenReport, SegmentReport, read_dir};
use serde::Serialize;

use super::output::{human_bytes, sequence_range, write_json_pretty};
use super::{CliError, EXIT_OK, check_wal_dir, finish};

/// Arguments of `procmond-wal stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The WAL directory.
    pub dir: PathBuf,
    /// One JSON object for scripts instead of the table for people.
    #[arg(long)]
    pub json: bool,
}

/// One segment in the `--json` output.
#[derive(Debug, Serialize)]
struct SegmentJson {
    number: u64,
    state: String,
    file_bytes: u64,
    record_bytes: u64,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
    events: u64,
    checkpoints: u64,
}

/// The `--json` output.
#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    dir: &'a Path,
    segment_count: usize,
    segments: Vec<SegmentJson>,
    events: u64,
    checkpoints: u64,
    record_bytes: u64,
    file_bytes: u64,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
    acked_through: u64,
    durable_watermark: u64,
    next_sequence: u64,
    damaged_places: usize,
    lost_events: u64,
    torn_tail_bytes: u64,
}

/// Runs `stats`.
pub fn run(args: StatsArgs) -> ExitCode {
    finish("stats", stats(&args))
}

fn stats(args: &StatsArgs) -> Result<u8, CliError> {
    check_wal_dir(&args.dir)?;
    let report = read_dir(&args.dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let last_written = report.last_written_index();
        let json = StatsJson {
            dir: &args.dir,
            segment_count: report.segments.len(),
            segments: report
                .segments
                .iter()
                .enumerate()
                .map(|(index, segment)| SegmentJson {
                    number: segment.number,
                    state: segment_state(segment, Some(index) == last_written),
                    file_bytes: segment.file_bytes,
                    record_bytes: segment.record_bytes,
                    first_sequence: segment.first_sequence,
                    last_sequence: segment.last_sequence,
                    events: segment.events,
                    checkpoints: segment.checkpoints,
                })
                .collect(),
            events: report.events,
            checkpoints: report.checkpoints,
            record_bytes: report.record_bytes,
            file_bytes: total_file_bytes(&report),
            first_sequence: report.first_sequence,
            last_sequence: report.last_sequence,
            acked_through: report.acked_through,
            durable_watermark: report.durable_watermark,
            next_sequence: report.next_sequence,
            damaged_places: report.damage.len(),
            lost_events: report.lost_events,
            torn_tail_bytes: report.torn_tail_bytes,
        };
        write_json_pretty(&mut out, &json)?;
    } else {
        write_table(&mut out, &args.dir, &report).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)?;
    Ok(EXIT_OK)
}

fn total_file_bytes(report: &OpenReport) -> u64 {
    report
        .segments
        .iter()
        .map(|segment| segment.file_bytes)
        .sum()
}

/// `active` (writing resumes here), `sealed`, `prepared` (created ahead, never written),
/// `unused` (renamed for recycling, its new header never written: docs/format.md §7.8; the
/// next open removes it) or `bad header`.
fn segment_state(segment: &SegmentReport, is_last_written: bool) -> String {
    if segment.is_blank() {
        "prepared".to_owned()
    } else if segment.is_unused_recycled() {
        "unused".to_owned()
    } else if segment.header_problem.is_some() {
        "bad header".to_owned()
    } else if is_last_written {
        "active".to_owned()
    } else {
        "sealed".to_owned()
    }
}

fn write_table(out: &mut impl Write, dir: &Path, report: &OpenReport) -> std::io::Result<()> {
    writeln!(out, "WAL {}", dir.display())?;
    writeln!(
        out,
        "{:>8}  {:<10}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}  {:>11}",
        "SEGMENT",
        "STATE",
        "FILE_BYTES",
        "RECORD_BYTES",
        "FIRST_SEQ",
        "LAST_SEQ",
        "EVENTS",
        "CHECKPOINTS"
    )?;
    let last_written = report.last_written_index();
    let optional = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for (index, segment) in report.segments.iter().enumerate() {
        writeln!(
            out,
            "{:>8}  {:<10}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}  {:>11}",
            segment.number,
            segment_state(segment, Some(index) == last_written),
            segment.file_bytes,
            segment.record_bytes,
            optional(segment.first_sequence),
            optional(segment.last_sequence),
            segment.events,
            segment.checkpoints,
        )?;
    }
    writeln!(
        out,
        "total: {} segment(s), {} on disk, {} of records",
        report.segments.len(),
        human_bytes(total_file_bytes(report)),
        human_bytes(report.record_bytes),
    )?;
    writeln!(
        out,
        "events: {} (sequences {}), checkpoints: {}",
        report.events,
        sequence_range(report.first_sequence, report.last_sequence),
        report.checkpoints
    )?;
    writeln!(
        out,
        "acked through: {}, durable watermark: {}, next sequence: {}",
        report.acked_through, report.durable_watermark, report.next_sequence
    )?;
    if report.is_clean() {
        if report.torn_tail_bytes > 0 {
            writeln!(
                out,
                "damage: none ({} torn byte(s) after the last record, hiding no acknowledged event; run `procmond-wal verify` for details)",
                report.torn_tail_bytes
            )?;
        } else {
            writeln!(out, "damage: none")?;
        }
    } else {
        writeln!(
            out,
            "damage: {} damaged place(s), {} event(s) lost (run `procmond-wal verify` for details)",
            report.damage.len(),
            report.lost_events
        )?;
    }
    Ok(())
}
