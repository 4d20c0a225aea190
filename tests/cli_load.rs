//! `procmond-wal load` run as the real binary on both backends: the `--json` summary has the
//! required keys and exact counts, the WAL it leaves verifies clean, and without `--dir` it
//! works in a temporary directory that it removes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use procmond_wal::wal::recovery::read_dir;
use serde_json::Value;

fn load(extra: &[&str], tmpdir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["load", "--events", "2000", "--publishers", "4", "--json"])
        .args(["--segment-mib", "1", "--group-kib", "32"])
        .args(extra)
        .env("TMPDIR", tmpdir)
        .output()
        .unwrap()
}

fn summary(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn load_json_summary_has_the_required_keys_on_each_available_backend() {
    let backends = common::BACKENDS
        .iter()
        .map(|backend| match backend {
            procmond_wal::wal::BackendChoice::Uring => "uring",
            _ => "portable",
        })
        .collect::<Vec<_>>();
    for backend in backends {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("wal");
        let dir_arg = dir.to_str().unwrap();
        let json = summary(&load(
            &["--backend", backend, "--dir", dir_arg],
            scratch.path(),
        ));
        assert_eq!(json["events"], 2000, "{backend}");
        assert_eq!(json["backend"], backend);
        assert_eq!(json["latency_samples"], 2000);
        assert_eq!(json["verified"], true);
        assert!(json["events_per_s"].as_f64().unwrap() > 0.0);
        assert!(json["bytes"].as_u64().unwrap() >= 2000 * 256);
        let syncs = json["syncs"].as_u64().unwrap();
        assert!(syncs >= 1);
        let per_sync = json["records_per_sync"].as_f64().unwrap();
        assert!((per_sync * syncs as f64 - 2000.0).abs() < 1.0, "{json}");
        let latency = &json["latency_us"];
        let (p50, p99, p999) = (
            latency["p50"].as_f64().unwrap(),
            latency["p99"].as_f64().unwrap(),
            latency["p999"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{latency}");

        // What load left behind is exactly 2000 clean events, by the library and by verify.
        let report = read_dir(&dir).unwrap();
        assert!(report.is_clean());
        assert_eq!(report.events, 2000);
        assert_eq!(report.torn_tail_bytes, 0);
        let verify = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .arg("verify")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(verify.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&verify.stdout).contains("result: clean"));
    }
}

#[test]
fn load_without_dir_uses_a_temporary_directory_and_removes_it() {
    let scratch = tempfile::tempdir().unwrap();
    let json = summary(&load(&["--event-bytes", "512"], scratch.path()));
    assert_eq!(json["events"], 2000);
    assert_eq!(json["dir_removed"], true);
    assert_eq!(json["record_bytes_per_event"], 512);
    let dir = Path::new(json["dir"].as_str().unwrap());
    assert!(dir.starts_with(scratch.path()), "{}", dir.display());
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[test]
fn load_appends_to_an_existing_wal_and_checks_the_new_total() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    let dir_arg = dir.to_str().unwrap();
    for _ in 0..2 {
        let json = summary(&load(
            &["--backend", "portable", "--dir", dir_arg],
            scratch.path(),
        ));
        assert_eq!(json["verified"], true);
    }
    assert_eq!(read_dir(&dir).unwrap().events, 4000);
}

#[test]
fn ctrl_c_stops_load_cleanly_and_what_was_appended_verifies() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let scratch = tempfile::tempdir().unwrap();
    // Far more events than can be written before the signal arrives.
    let mut child = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["load", "--events", "10000000", "--publishers", "4"])
        .args(["--segment-mib", "1", "--group-kib", "32"])
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    // The header is printed once the interrupt handler is installed.
    stdout.read_line(&mut header).unwrap();
    assert!(header.starts_with("load: 10000000 events"), "{header}");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}\n{stderr}");
    let appended: u64 = rest
        .lines()
        .find_map(|line| line.trim().strip_prefix("interrupted  after "))
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no interruption line in {rest}"));
    assert!(appended < 10_000_000);
    assert!(
        rest.contains(&format!(
            "verified     {appended} events on disk, no damage"
        )),
        "{rest}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}

/// Segment files in `dir` with their sizes.
fn segment_sizes(dir: &Path) -> Vec<u64> {
    procmond_wal::wal::recovery::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, path)| std::fs::metadata(path).unwrap().len())
        .collect()
}

#[test]
fn a_run_over_the_disk_budget_is_refused_before_anything_is_written() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    // 20,000 records of 512 bytes (~10 MiB) in 1 MiB segments need 13 of them; the budget
    // holds 8. The budget is never raised behind the caller's back.
    let output = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["load", "--events", "20000", "--event-bytes", "512"])
        .args(["--segment-mib", "1", "--wal-max-mib", "8", "--json"])
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(stderr.contains("disk budget of 8 MiB"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(stderr.contains("--wal-max-mib"), "{stderr}");
    assert!(!dir.exists() || segment_sizes(&dir).is_empty());

    // The same run with room for it goes through and stays within the budget it was given.
    let output = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["load", "--events", "20000", "--event-bytes", "512"])
        .args(["--segment-mib", "1", "--wal-max-mib", "16", "--json"])
        .args(["--backend", "portable", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let json = summary(&output);
    assert_eq!(json["budget_bytes"], 16 * 1024 * 1024);
    let sizes = segment_sizes(&dir);
    assert!(sizes.iter().sum::<u64>() <= 16 * 1024 * 1024, "{sizes:?}");
}

#[test]
fn a_small_run_sizes_its_segments_to_the_run() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("wal");
    let output = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["load", "--events", "100", "--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let json = summary(&output);
    assert_eq!(json["events"], 100);
    assert_eq!(json["segment_bytes"], 1024 * 1024);
    let sizes = segment_sizes(&dir);
    assert!(!sizes.is_empty());
    // The active and the prepared segment: 1 MiB each, not 100 MiB.
    assert!(sizes.iter().all(|&size| size <= 1024 * 1024), "{sizes:?}");
}

#[test]
fn with_io_uring_disabled_auto_runs_portable_and_uring_is_refused_clearly() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |backend: &str| {
        Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .args(["load", "--events", "200", "--json", "--backend", backend])
            .env("PROCMOND_WAL_DISABLE_URING", "1")
            .env("TMPDIR", scratch.path())
            .output()
            .unwrap()
    };
    let json = summary(&run("auto"));
    assert_eq!(json["backend"], "portable");
    assert_eq!(json["verified"], true);
    let refused = run("uring");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PROCMOND_WAL_DISABLE_URING"), "{stderr}");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}
