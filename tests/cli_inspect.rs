//! The read-only subcommands (`dump`, `verify`, `stats`) run as the real binary against WALs
//! written here with the library: output shape and exact counts, damage reports with the
//! right place and loss, exit codes, and no panic on directories that are not WALs.

mod common;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{event, kind, runtime, small_config};
use procmond_wal::wal::format::Record;
use procmond_wal::wal::recovery::{list_segments, read_dir, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal};
use serde_json::Value;

const EVENTS: u64 = 2000;
const ACKED_THROUGH: u64 = 500;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    bin().args(args).arg(dir).output().unwrap()
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("exited, not killed by a signal")
}

/// Writes `EVENTS` events in batches (several segments with the small configuration) and
/// one checkpoint; returns the record bytes the writer reports.
fn write_wal(dir: &Path) -> u64 {
    let (wal, _) = Wal::open(small_config(dir, BackendChoice::Portable)).unwrap();
    runtime().block_on(async {
        for start in (1..=EVENTS).step_by(100) {
            let batch = (start..start + 100).map(|i| (event(i), kind(i))).collect();
            wal.append_batch(batch).await.unwrap();
        }
        wal.checkpoint(ACKED_THROUGH).await.unwrap();
        let record_bytes = wal.stats().record_bytes;
        wal.close().await.unwrap();
        // A clean close adds one watermark record.
        record_bytes + procmond_wal::wal::format::WATERMARK_FRAME_BYTES as u64
    })
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn dump_prints_one_json_line_per_record_with_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let output = run(&["dump"], dir.path());
    assert_eq!(
        code(&output),
        0,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);
    let events: Vec<&Value> = lines.iter().filter(|l| l["type"] == "event").collect();
    let checkpoints: Vec<&Value> = lines.iter().filter(|l| l["type"] == "checkpoint").collect();
    assert_eq!(events.len() as u64, EVENTS);
    assert_eq!(checkpoints.len(), 1);
    // Plus the watermark record of the clean close.
    assert_eq!(lines.len() as u64, EVENTS + 2);
    assert_eq!(checkpoints[0]["acked_through"], ACKED_THROUGH);
    for (i, line) in (1..).zip(&events) {
        assert_eq!(line["sequence"], i);
        assert_eq!(line["kind"], kind(i).as_str());
        assert_eq!(line["event"]["pid"], 1000 + i);
        assert_eq!(line["event"]["name"], format!("proc-{i}"));
        assert!(line["segment"].as_u64().unwrap() >= 1);
        assert!(line["offset"].as_u64().unwrap() >= 4096);
        let stamp = line["timestamp"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
    }

    let from = run(&["dump", "--from", "1501"], dir.path());
    assert_eq!(code(&from), 0);
    let lines = json_lines(&from.stdout);
    let sequences: Vec<u64> = lines
        .iter()
        .filter(|l| l["type"] == "event")
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1501..=EVENTS).collect::<Vec<_>>());
}

#[test]
fn dump_table_has_a_header_and_one_aligned_row_per_record() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let output = run(&["dump", "--table"], dir.path());
    assert_eq!(code(&output), 0);
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, 1 + EVENTS + 2);
    let header: Vec<&str> = lines[0].split_whitespace().take(5).collect();
    assert_eq!(header, ["SEQUENCE", "KIND", "PID", "PPID", "NAME"]);
    let row: Vec<&str> = lines[7].split_whitespace().collect();
    assert_eq!(&row[..5], ["7", kind(7).as_str(), "1007", "1", "proc-7"]);
    // Aligned: the NAME column starts at the same place in the header and every row.
    let name_column = lines[0].find("NAME").unwrap();
    assert_eq!(lines[7].find("proc-7"), Some(name_column));
    assert_eq!(lines[1234].find("proc-1234"), Some(name_column));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("acked through 500"))
            .count(),
        1
    );
}

#[test]
fn dump_stops_quietly_when_the_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let mut child = bin()
        .arg("dump")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"sequence\":1,"));
    // The rest (about 1 MB) cannot fit in the pipe: the child meets a closed pipe.
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn verify_is_clean_on_an_undamaged_wal() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let output = run(&["verify"], dir.path());
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(code(&output), 0, "{text}");
    assert!(text.contains("result: clean"), "{text}");
    let json = run(&["verify", "--json"], dir.path());
    assert_eq!(code(&json), 0);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["clean"], true);
    assert_eq!(report["events"], EVENTS);
    assert_eq!(report["lost_events"], 0);
    assert_eq!(report["damage"].as_array().unwrap().len(), 0);
}

/// Offsets of the event frames of segment `number`, with their sequences.
fn event_frames(dir: &Path, number: u64) -> Vec<(u64, u64)> {
    let mut frames = Vec::new();
    read_dir_with(dir, |segment, offset, record| {
        if let (true, Record::Event(entry)) = (segment == number, record) {
            frames.push((offset, entry.sequence));
        }
    })
    .unwrap();
    frames
}

#[test]
fn verify_reports_a_flipped_byte_with_its_place_and_the_one_lost_event() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() >= 3, "the WAL should span several segments");
    let frames = event_frames(dir.path(), 1);
    let middle = frames.len() / 2;
    let (offset, lost_sequence) = frames[middle];
    let frame_end = frames[middle + 1].0;
    {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segments[0].1)
            .unwrap();
        // A byte in the payload, well inside the frame.
        let target = offset + 24;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(target)).unwrap();
        file.read_exact(&mut byte).unwrap();
        byte[0] ^= 0x5a;
        file.seek(SeekFrom::Start(target)).unwrap();
        file.write_all(&byte).unwrap();
    }

    let output = run(&["verify"], dir.path());
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(code(&output), 1, "{text}");
    assert!(
        text.contains(&format!(
            "segment 1 offset {offset} length {}: corrupt",
            frame_end - offset
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  {lost_sequence} (1 event(s), 1 of them acknowledged as durable)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("lost acknowledged sequences: {lost_sequence}\n")),
        "{text}"
    );
    assert!(
        text.contains("result: DAMAGED: 1 damaged place(s), 1 event(s) lost (1 acknowledged"),
        "{text}"
    );

    let json = run(&["verify", "--json"], dir.path());
    assert_eq!(code(&json), 1);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["lost_events"], 1);
    assert_eq!(report["events"], EVENTS - 1);
    let damage = report["damage"].as_array().unwrap();
    assert_eq!(damage.len(), 1);
    assert_eq!(damage[0]["segment"], 1);
    assert_eq!(damage[0]["offset"], offset);
    assert_eq!(damage[0]["len_bytes"], frame_end - offset);
    assert_eq!(damage[0]["kind"], "corrupt_records");
    assert_eq!(report["gaps"][0]["first_missing"], lost_sequence);
    assert_eq!(report["gaps"][0]["count"], 1);

    // dump still prints every other record, and says that it skipped damage.
    let dump = run(&["dump"], dir.path());
    assert_eq!(code(&dump), 1);
    let events = json_lines(&dump.stdout)
        .into_iter()
        .filter(|l| l["type"] == "event")
        .count() as u64;
    assert_eq!(events, EVENTS - 1);
    assert!(String::from_utf8_lossy(&dump.stderr).contains("1 event(s) lost"));
}

#[test]
fn a_torn_tail_alone_is_noted_but_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let report = read_dir(dir.path()).unwrap();
    let last = &report.segments[report.last_written_index().unwrap()];
    {
        let mut file = OpenOptions::new().write(true).open(&last.path).unwrap();
        file.seek(SeekFrom::Start(last.data_end)).unwrap();
        file.write_all(&[0xab; 100]).unwrap();
    }
    let output = run(&["verify"], dir.path());
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(code(&output), 0, "{text}");
    assert!(
        text.contains("hide no event that was acknowledged as durable"),
        "{text}"
    );
    assert!(
        text.contains(&format!("offset {}", last.data_end)),
        "{text}"
    );
    let json = run(&["verify", "--json"], dir.path());
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["torn_tail"]["segment"], last.number);
    assert_eq!(report["torn_tail"]["offset"], last.data_end);
    assert!(report["torn_tail"]["len_bytes"].as_u64().unwrap() >= 100);
}

#[test]
fn paths_that_are_not_wal_directories_exit_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for path in [&missing, &file, &empty] {
        for command in ["verify", "dump", "stats"] {
            let output = run(&[command], path);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(code(&output), 2, "{command} {}: {stderr}", path.display());
            assert!(stderr.contains("error:"), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn garbage_named_like_a_segment_is_reported_as_damage_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    // Deterministic pseudo-random bytes (xorshift), not zeros.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(dir.path().join("procmond-00001.wal"), &garbage).unwrap();
    std::fs::write(dir.path().join("procmond-00002.wal"), &garbage[..10]).unwrap();
    for command in ["verify", "dump", "stats"] {
        let output = run(&[command], dir.path());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        let expected = if command == "stats" { 0 } else { 1 };
        assert_eq!(code(&output), expected, "{command}: {stderr}");
    }
    let json = run(&["verify", "--json"], dir.path());
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["events"], 0);
    assert!(!report["damage"].as_array().unwrap().is_empty());
}

#[test]
fn stats_json_matches_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let record_bytes = write_wal(dir.path());
    let output = run(&["stats", "--json"], dir.path());
    assert_eq!(code(&output), 0);
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap();
    let segments = list_segments(dir.path()).unwrap();
    assert_eq!(stats["segment_count"], segments.len());
    assert_eq!(stats["events"], EVENTS);
    assert_eq!(stats["checkpoints"], 1);
    assert_eq!(stats["first_sequence"], 1);
    assert_eq!(stats["last_sequence"], EVENTS);
    assert_eq!(stats["acked_through"], ACKED_THROUGH);
    assert_eq!(stats["next_sequence"], EVENTS + 1);
    assert_eq!(stats["record_bytes"], record_bytes);
    assert_eq!(stats["lost_events"], 0);
    let per_segment = stats["segments"].as_array().unwrap();
    assert_eq!(per_segment.len(), segments.len());
    let events: u64 = per_segment
        .iter()
        .map(|s| s["events"].as_u64().unwrap())
        .sum();
    assert_eq!(events, EVENTS);
    let file_bytes: u64 = segments
        .iter()
        .map(|(_, path)| std::fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(stats["file_bytes"], file_bytes);
    // Consecutive segments continue each other's sequences.
    let mut next = 1;
    for segment in per_segment.iter().filter(|s| s["events"] != 0) {
        assert_eq!(segment["first_sequence"], next);
        next = segment["last_sequence"].as_u64().unwrap() + 1;
    }
    assert_eq!(next, EVENTS + 1);

    let table = run(&["stats"], dir.path());
    assert_eq!(code(&table), 0);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("events: 2000 (sequences 1..=2000), checkpoints: 1"),
        "{text}"
    );
    assert!(
        text.contains("acked through: 500, durable watermark: "),
        "{text}"
    );
    assert!(text.contains(", next sequence: 2001\n"), "{text}");
}
