//! Crash test: a child process appends through the WAL with several concurrent publishers and
//! is killed with SIGKILL mid-stream; every sequence it reported durable must replay with the
//! right content, and the log must stay gap-free. The same directory is reused across
//! iterations (alternating backends where io_uring is available), so recovery after repeated
//! crashes is exercised.
//!
//! The child is this test binary re-executed with `PROCMOND_WAL_CRASH_CHILD=<dir>`, running
//! only `child_writer_entry`. It prints `@durable <sequence> <run> <publisher> <counter>` as soon
//! as each `append` returns; the event's content is derived from (run, publisher, counter).
//! `PROCMOND_WAL_CRASH_ITERATIONS` (default 12) sets the number of kills.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chrono::DateTime;
use procmond_wal::wal::recovery::read_dir;
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalReader};
use procmond_wal::{EventKind, ProcessEvent};

const CHILD_DIR_ENV: &str = "PROCMOND_WAL_CRASH_CHILD";
const CHILD_BACKEND_ENV: &str = "PROCMOND_WAL_CRASH_BACKEND";
const CHILD_RUN_ENV: &str = "PROCMOND_WAL_CRASH_RUN";
const ITERATIONS_ENV: &str = "PROCMOND_WAL_CRASH_ITERATIONS";
const DEFAULT_ITERATIONS: u64 = 12;
const PUBLISHERS: u64 = 4;
/// The child never gets near this; it only bounds a child whose parent vanished silently.
const CHILD_MAX_APPENDS_PER_PUBLISHER: u64 = 1_000_000;
const MARK: &str = "@durable";

/// Who wrote an event: it determines the event's whole content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Id {
    run: u64,
    publisher: u64,
    counter: u64,
}

fn crash_event(id: Id) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        id.publisher as u32,
        format!("crash-r{}-p{}-c{}", id.run, id.publisher, id.counter),
        DateTime::from_timestamp_nanos((id.run * 1_000_000_000 + id.counter) as i64),
    );
    // Sizes vary so frames straddle block boundaries at different places.
    let filler = (id.run * 7 + id.publisher * 13 + id.counter * 31) % 400;
    event.command_line = vec!["crash".into(), "x".repeat(filler as usize)];
    event.platform_metadata.insert(
        "crash.id".into(),
        format!("{}/{}/{}", id.run, id.publisher, id.counter),
    );
    event
}

fn crash_kind(id: Id) -> EventKind {
    EventKind::ALL[(id.counter % 3) as usize]
}

/// The id encoded in a crash event's name, if it is one.
fn id_of(event: &ProcessEvent) -> Option<Id> {
    let rest = event.name.strip_prefix("crash-r")?;
    let (run, rest) = rest.split_once("-p")?;
    let (publisher, counter) = rest.split_once("-c")?;
    Some(Id {
        run: run.parse().ok()?,
        publisher: publisher.parse().ok()?,
        counter: counter.parse().ok()?,
    })
}

fn crash_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = common::small_config(dir, backend);
    // Room for long crash loops (scripts/crash-loop.sh runs 1,000 iterations).
    config.wal_max_bytes = 4 * 1024 * 1024 * 1024;
    config
}

fn backend_name(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::Uring => "uring",
        _ => "portable",
    }
}

/// The child's body: a no-op unless this process was started by the crash test.
#[test]
fn child_writer_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let backend = match std::env::var(CHILD_BACKEND_ENV).as_deref() {
        Ok("uring") => BackendChoice::Uring,
        _ => BackendChoice::Portable,
    };
    let run: u64 = std::env::var(CHILD_RUN_ENV).unwrap().parse().unwrap();
    let (wal, _) = Wal::open(crash_config(Path::new(&dir), backend)).unwrap();
    common::runtime().block_on(async {
        let mut publishers = Vec::new();
        for publisher in 0..PUBLISHERS {
            let wal = wal.clone();
            publishers.push(tokio::spawn(async move {
                for counter in 0..CHILD_MAX_APPENDS_PER_PUBLISHER {
                    let id = Id {
                        run,
                        publisher,
                        counter,
                    };
                    let sequence = wal.append(crash_event(id), crash_kind(id)).await.unwrap();
                    // Bypasses the test harness's capture; one locked write per line.
                    let mut out = std::io::stdout().lock();
                    let line = format!("{MARK} {sequence} {run} {publisher} {counter}\n");
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return; // The parent is gone.
                    }
                }
            }));
        }
        for publisher in publishers {
            publisher.await.unwrap();
        }
    });
}

fn parse_durable(line: &str) -> Option<(u64, Id)> {
    // libtest may print "test child_writer_entry ... " on the same line before the first mark.
    let fields: Vec<u64> = line[line.find(MARK)? + MARK.len()..]
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [sequence, run, publisher, counter] => Some((
            sequence,
            Id {
                run,
                publisher,
                counter,
            },
        )),
        _ => None,
    }
}

fn spawn_child(dir: &Path, backend: BackendChoice, run: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_BACKEND_ENV, backend_name(backend))
        .env(CHILD_RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn record(reported: &mut BTreeMap<u64, Id>, sequence: u64, id: Id) {
    if let Some(previous) = reported.insert(sequence, id) {
        panic!("sequence {sequence} reported twice: {previous:?} and {id:?}");
    }
}

/// Checks the directory after a kill: gap-free, nothing lost, every reported sequence holds
/// its event; replay is checked from `replay_from` on (all of it on the last iteration).
fn verify(dir: &Path, reported: &BTreeMap<u64, Id>, replay_from: u64, what: &str) -> u64 {
    let report = read_dir(dir).unwrap();
    assert_eq!(report.lost_events, 0, "{what}: {:?}", report.gaps);
    assert!(report.gaps.is_empty(), "{what}");
    assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
    let last = report.last_sequence.unwrap_or(0);
    assert_eq!(report.events, last, "{what}: the log must hold 1..={last}");
    let highest_reported = reported.keys().next_back().copied().unwrap_or(0);
    assert!(
        last >= highest_reported,
        "{what}: reported {highest_reported} durable, log ends at {last}"
    );
    let mut expected_sequence = replay_from;
    let mut last_counter: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for entry in WalReader::open(dir, replay_from).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(entry.sequence, expected_sequence, "{what}: replay gap");
        expected_sequence += 1;
        let id = id_of(&entry.event)
            .unwrap_or_else(|| panic!("{what}: foreign event at {}", entry.sequence));
        assert_eq!(
            entry.event,
            crash_event(id),
            "{what}: seq {}",
            entry.sequence
        );
        assert_eq!(entry.kind, crash_kind(id), "{what}");
        if let Some(&reported_id) = reported.get(&entry.sequence) {
            assert_eq!(
                id, reported_id,
                "{what}: seq {} holds another event",
                entry.sequence
            );
        }
        // Each publisher waits for durability before its next append: its order is kept.
        if let Some(previous) = last_counter.insert((id.run, id.publisher), id.counter) {
            assert!(previous < id.counter, "{what}: {id:?} out of order");
        }
    }
    assert_eq!(expected_sequence, last + 1, "{what}: replay ended early");
    last
}

fn drain_stderr(child: &mut Child) -> String {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

#[test]
fn sigkill_mid_stream_never_loses_a_sequence_reported_durable() {
    let iterations: u64 = match std::env::var(ITERATIONS_ENV) {
        Ok(text) => text
            .parse()
            .expect("PROCMOND_WAL_CRASH_ITERATIONS is a number"),
        Err(_) => DEFAULT_ITERATIONS,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut reported: BTreeMap<u64, Id> = BTreeMap::new();
    let mut lcg = common::Lcg(0x0c4a_5eed);
    let mut next_sequence = 1;
    let backends = common::BACKENDS.available();
    for run in 0..iterations {
        let backend = backends[(run % backends.len() as u64) as usize];
        let kill_after = 1 + lcg.next() % 300;
        let what = format!("run {run} ({backend:?}, kill after {kill_after} lines)");
        let mut child = spawn_child(dir.path(), backend, run);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some((sequence, id)) = parse_durable(&line) {
                        assert_eq!(id.run, run, "{what}");
                        record(&mut reported, sequence, id);
                        seen += 1;
                    }
                }
                _ => {
                    let status = child.wait().unwrap();
                    panic!(
                        "{what}: child ended early ({status}): {}",
                        drain_stderr(&mut child)
                    );
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status}");
        // Lines still in the pipe were also printed after their append returned.
        for line in lines {
            if let Some((sequence, id)) = parse_durable(&line.unwrap()) {
                record(&mut reported, sequence, id);
            }
        }
        let replay_from = if run + 1 == iterations {
            1
        } else {
            next_sequence
        };
        let last = verify(dir.path(), &reported, replay_from, &what);
        // Opening for writing (as the next child will) finds the same log, nothing lost.
        let (wal, report) = Wal::open(crash_config(dir.path(), backend)).unwrap();
        assert_eq!(report.lost_events, 0, "{what}");
        assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
        assert_eq!(report.next_sequence, last + 1, "{what}");
        common::runtime().block_on(wal.close()).unwrap();
        next_sequence = last + 1;
    }
    // Every reported sequence was checked against its event in the final full replay.
    assert!(reported.len() as u64 >= iterations);
    assert!(next_sequence > *reported.keys().next_back().unwrap());
}
