//! `procmond-wal run` as a user runs it: the binary as a child process, with the embedded
//! broker or one named by `DAEMONEYE_BROKER_SOCKET`, ending by `--duration` or SIGTERM.
//! Checks the summary (durable = delivered = acknowledged), the exit codes, the default
//! WAL directory, and that a real process started during the run is reported.

mod broker_support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use broker_support::{BrokerProcess, GUARD, short_tempdir};
use serde_json::Value;

fn run_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procmond-wal"));
    command
        .arg("run")
        .args(args)
        .env_remove("DAEMONEYE_BROKER_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// The JSON summary: the last stdout line.
fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no summary; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(last).expect("the summary is JSON")
}

fn assert_clean(summary: &Value) {
    let durable = summary["durable"].as_u64().expect("durable");
    assert!(durable > 0, "{summary}");
    assert_eq!(summary["acknowledged"].as_u64(), Some(durable), "{summary}");
    assert_eq!(summary["outstanding"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["publish_failures"].as_u64(), Some(0), "{summary}");
}

#[test]
fn synthetic_load_through_the_embedded_broker_ends_clean_in_the_default_wal_dir() {
    let state = short_tempdir();
    let output = run_command(&[
        "--source",
        "synthetic",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--json",
    ])
    .env("XDG_STATE_HOME", state.path())
    .output()
    .expect("run");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary(&output);
    assert_clean(&summary);
    assert_eq!(summary["delivered"], summary["durable"], "{summary}");
    assert_eq!(summary["subscriber"]["not_in_order"].as_u64(), Some(0));
    assert_eq!(summary["stopped_by"], "duration");
    let wal = state.path().join("procmond-wal").join("wal");
    assert_eq!(summary["wal_dir"].as_str(), wal.to_str());
    let mode = std::fs::metadata(&wal).expect("WAL dir created").mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_process_started_during_the_run_is_seen_starting_and_stopping() {
    let scratch = short_tempdir();
    let mut run = run_command(&[
        "--wal-dir",
        scratch.path().join("wal").to_str().expect("utf-8"),
        "--poll-interval",
        "100ms",
        "--print-events",
        "json",
        "--json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start run");
    let (sender, lines) = mpsc::channel();
    let stdout = run.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = run.stderr.take().expect("stderr");
    let (started_sender, started) = mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("/proc source") {
                let _ = started_sender.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    started.recv_timeout(GUARD).expect("run started");
    let mut child = Command::new("sleep").arg("300").spawn().expect("sleep");
    let pid = u64::from(child.id());
    let wait_for = |kind: &str| -> Value {
        loop {
            let line = lines.recv_timeout(GUARD).expect("an event line");
            let value: Value = serde_json::from_str(&line).expect("JSON line");
            if value["kind"] == kind && value["event"]["pid"].as_u64() == Some(pid) {
                return value;
            }
        }
    };
    let start = wait_for("Start");
    assert_eq!(start["topic"], "events.process.start");
    // A poll can catch the child between fork and exec, still named after this test's
    // thread; the exec then arrives as a Modify of the same pid (docs/sources.md).
    let execed = if start["event"]["name"] == "sleep" {
        start
    } else {
        let modify = wait_for("Modify");
        assert_eq!(modify["topic"], "events.process.modify");
        modify
    };
    assert_eq!(execed["event"]["name"], "sleep");
    assert_eq!(execed["event"]["command_line"][1], "300");
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    wait_for("Stop");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(run.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = run.wait().expect("run exits");
    let stderr = stderr_reader.join().expect("stderr");
    assert_eq!(exit.code(), Some(0), "stderr: {stderr}");
    let summary: Value = loop {
        let line = lines.recv_timeout(GUARD).expect("the summary line");
        let value: Value = serde_json::from_str(&line).expect("JSON line");
        if value.get("stopped_by").is_some() {
            break value;
        }
    };
    assert_clean(&summary);
    assert_eq!(summary["delivered"], summary["durable"], "{summary}");
    assert_eq!(summary["stopped_by"], "SIGTERM");
    assert!(summary["proc"]["polls"].as_u64() > Some(1), "{summary}");
    assert!(summary["proc"]["stops"].as_u64() >= Some(1), "{summary}");
}

#[test]
fn an_external_broker_from_the_environment_acknowledges_everything() {
    let scratch = short_tempdir();
    let socket = scratch.path().join("broker.sock");
    let _broker = BrokerProcess::start(&socket, &[]);
    let output = run_command(&[
        "--wal-dir",
        scratch.path().join("wal").to_str().expect("utf-8"),
        "--source",
        "synthetic",
        "--rate",
        "1000",
        "--duration",
        "1s",
        "--json",
    ])
    .env("DAEMONEYE_BROKER_SOCKET", &socket)
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(0));
    let summary = summary(&output);
    assert_clean(&summary);
    assert_eq!(summary["delivered"], Value::Null);
    assert_eq!(summary["broker"].as_str(), socket.to_str());
}

#[test]
fn an_unreachable_broker_leaves_events_outstanding_and_the_next_run_delivers_them() {
    let scratch = short_tempdir();
    let wal = scratch.path().join("wal");
    let wal_arg = wal.to_str().expect("utf-8");
    let args = [
        "--wal-dir",
        wal_arg,
        "--source",
        "synthetic",
        "--rate",
        "500",
        "--duration",
        "1s",
        "--drain-timeout",
        "100ms",
        "--json",
    ];
    let output = run_command(&args)
        .env(
            "DAEMONEYE_BROKER_SOCKET",
            scratch.path().join("absent.sock"),
        )
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1), "outstanding events exit 1");
    let first = summary(&output);
    let outstanding = first["outstanding"].as_u64().expect("outstanding");
    assert!(outstanding > 0, "{first}");
    assert_eq!(first["acknowledged"].as_u64(), Some(0));
    assert_eq!(first["durable"].as_u64(), Some(outstanding));

    // Embedded broker this time: the backlog goes first, then this run's events.
    let output = run_command(&args).output().expect("run again");
    assert_eq!(output.status.code(), Some(0));
    let second = summary(&output);
    assert_clean(&second);
    assert_eq!(second["backlog_at_start"].as_u64(), Some(outstanding));
    assert_eq!(
        second["subscriber"]["backlog_received"].as_u64(),
        Some(outstanding)
    );
    assert_eq!(second["delivered"], second["durable"]);
}

#[test]
fn a_wal_dir_that_is_a_file_cannot_run_and_exits_2() {
    let scratch = short_tempdir();
    let file = scratch.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let output = run_command(&[
        "--wal-dir",
        file.to_str().expect("utf-8"),
        "--duration",
        "1s",
    ])
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("procmond-wal run: error:")
            && stderr.contains(file.to_str().expect("utf-8")),
        "{stderr}"
    );
}

#[test]
fn help_says_where_the_wal_lives() {
    let output = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["run", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&output.stdout);
    for part in [
        "~/.local/state/procmond-wal/wal",
        "XDG_STATE_HOME",
        "0700",
        "DAEMONEYE_BROKER_SOCKET",
    ] {
        assert!(help.contains(part), "help lacks {part}:\n{help}");
    }
}

#[test]
fn backpressure_slows_the_proc_polls() {
    let scratch = short_tempdir();
    // No broker and a tiny buffer: the first poll fills it past 70 % and nothing drains it.
    let output = run_command(&[
        "--wal-dir",
        scratch.path().join("wal").to_str().expect("utf-8"),
        "--poll-interval",
        "50ms",
        "--buffer-max-bytes",
        "1000",
        "--duration",
        "1s",
        "--drain-timeout",
        "10ms",
        "--json",
    ])
    .env(
        "DAEMONEYE_BROKER_SOCKET",
        scratch.path().join("absent.sock"),
    )
    .output()
    .expect("run");
    assert_eq!(output.status.code(), Some(1), "events are left outstanding");
    let summary = summary(&output);
    assert_eq!(
        summary["backpressure_activations"].as_u64(),
        Some(1),
        "{summary}"
    );
    let polls = summary["proc"]["polls"].as_u64().expect("polls");
    let slowed = summary["proc"]["slowed_polls"]
        .as_u64()
        .expect("slowed polls");
    assert!(slowed >= 1 && slowed < polls, "{summary}");
    assert!(summary["outstanding"].as_u64() > Some(0), "{summary}");
}
