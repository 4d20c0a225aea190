//! `procmond-wal verify DIR`: reads every segment (read only; a running writer is not
//! disturbed) and reports each damaged place and the events lost.
//!
//! Exit code: 0 clean, 1 damage found, 2 could not run. Lost sequences at or below the durable
//! watermark (the highest sequence the log recorded as acknowledged) are named as lost
//! acknowledged events. A torn tail alone exits 0: invalid bytes after the last valid record
//! of the newest segment behind which no acknowledged sequence is missing (for a version 1
//! segment, which records no watermark, this cannot be checked). The next open cuts it. It is
//! still reported, as a note saying what is known.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use procmond_wal::wal::recovery::{Damage, DamageKind, OpenReport, SequenceGap, read_dir};
use serde::Serialize;

use super::output::{damage_description, human_bytes, sequence_range, write_json_pretty};
use super::{CliError, EXIT_OK, EXIT_PROBLEM, check_wal_dir, finish};

/// Arguments of `procmond-wal verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The WAL directory.
    pub dir: PathBuf,
    /// One JSON object for scripts instead of the report for people.
    #[arg(long)]
    pub json: bool,
}

/// Where the torn tail is, and what is known about it.
#[derive(Debug, Serialize)]
struct TornTail {
    segment: u64,
    offset: u64,
    len_bytes: u64,
    /// Whether the segment records durable watermarks (version 2), so that the absence of
    /// acknowledged sequences behind the tail was checked.
    checked_against_watermark: bool,
    note: String,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct VerifyJson<'a> {
    dir: &'a Path,
    clean: bool,
    segments: usize,
    events: u64,
    checkpoints: u64,
    first_sequence: Option<u64>,
    last_sequence: Option<u64>,
    acked_through: u64,
    durable_watermark: u64,
    damage: &'a [Damage],
    gaps: &'a [SequenceGap],
    lost_events: u64,
    lost_acknowledged_events: u64,
    torn_tail: Option<TornTail>,
}

/// Runs `verify`.
pub fn run(args: VerifyArgs) -> ExitCode {
    finish("verify", verify(&args))
}

fn verify(args: &VerifyArgs) -> Result<u8, CliError> {
    check_wal_dir(&args.dir)?;
    let report = read_dir(&args.dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let json = VerifyJson {
            dir: &args.dir,
            clean: report.is_clean(),
            segments: report.segments.len(),
            events: report.events,
            checkpoints: report.checkpoints,
            first_sequence: report.first_sequence,
            last_sequence: report.last_sequence,
            acked_through: report.acked_through,
            durable_watermark: report.durable_watermark,
            damage: &report.damage,
            gaps: &report.gaps,
            lost_events: report.lost_events,
            lost_acknowledged_events: report.lost_acknowledged_events,
            torn_tail: torn_tail(&report),
        };
        write_json_pretty(&mut out, &json)?;
    } else {
        write_report(&mut out, &args.dir, &report).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)?;
    Ok(if report.is_clean() {
        EXIT_OK
    } else {
        EXIT_PROBLEM
    })
}

fn torn_tail(report: &OpenReport) -> Option<TornTail> {
    if report.torn_tail_bytes == 0 {
        return None;
    }
    let segment = &report.segments[report.last_written_index()?];
    let checked = segment.frame_version >= 2;
    let what = format!(
        "{} byte(s) at segment {} offset {} after the last valid record are not a valid record",
        report.torn_tail_bytes, segment.number, segment.data_end
    );
    let known = if checked {
        format!(
            "every sequence up to the durable watermark {} was found, so they hide no event that was acknowledged as durable (most likely a write interrupted before it was acknowledged)",
            report.durable_watermark
        )
    } else {
        "this version 1 segment records no durable watermark, so whether they held acknowledged events cannot be checked".to_owned()
    };
    Some(TornTail {
        segment: segment.number,
        offset: segment.data_end,
        len_bytes: report.torn_tail_bytes,
        checked_against_watermark: checked,
        note: format!("{what}; {known}; the next open for writing clears them"),
    })
}

fn write_report(out: &mut impl Write, dir: &Path, report: &OpenReport) -> std::io::Result<()> {
    writeln!(out, "WAL {}", dir.display())?;
    writeln!(
        out,
        "  {} segment(s), {} event(s) (sequences {}), {} checkpoint(s), {} of records",
        report.segments.len(),
        report.events,
        sequence_range(report.first_sequence, report.last_sequence),
        report.checkpoints,
        human_bytes(report.record_bytes),
    )?;
    if report.acked_through > 0 {
        writeln!(
            out,
            "  acknowledged by the broker through sequence {}",
            report.acked_through
        )?;
    }
    if report.durable_watermark > 0 {
        writeln!(
            out,
            "  acknowledged as durable through sequence {} (durable watermark)",
            report.durable_watermark
        )?;
    }
    if !report.damage.is_empty() {
        writeln!(out, "damaged places: {}", report.damage.len())?;
        for damage in &report.damage {
            write_damage(out, damage)?;
        }
    }
    if !report.gaps.is_empty() {
        writeln!(out, "missing sequences:")?;
        for gap in &report.gaps {
            let last = gap.first_missing + gap.count.saturating_sub(1);
            writeln!(
                out,
                "  {} ({} event(s), {} of them acknowledged as durable)",
                sequence_range(Some(gap.first_missing), Some(last)),
                gap.count,
                gap.acknowledged
            )?;
        }
        let acknowledged: Vec<String> = report
            .gaps
            .iter()
            .filter(|gap| gap.acknowledged > 0)
            .map(|gap| {
                sequence_range(
                    Some(gap.first_missing),
                    Some(gap.first_missing + gap.acknowledged - 1),
                )
            })
            .collect();
        if !acknowledged.is_empty() {
            writeln!(
                out,
                "lost acknowledged sequences: {}",
                acknowledged.join(", ")
            )?;
        }
    }
    if let Some(tail) = torn_tail(report) {
        writeln!(out, "note: {}", tail.note)?;
    }
    if report.is_clean() {
        writeln!(out, "result: clean")
    } else {
        writeln!(
            out,
            "result: DAMAGED: {} damaged place(s), {} event(s) lost ({} acknowledged as durable)",
            report.damage.len(),
            report.lost_events,
            report.lost_acknowledged_events
        )
    }
}

fn write_damage(out: &mut impl Write, damage: &Damage) -> std::io::Result<()> {
    match damage.kind {
        DamageKind::MissingSegment => writeln!(
            out,
            "  segment {}: {}",
            damage.segment,
            damage_description(damage.kind)
        ),
        _ => writeln!(
            out,
            "  segment {} offset {} length {}: {}",
            damage.segment,
            damage.offset,
            damage.len_bytes,
            damage_description(damage.kind)
        ),
    }
}
