//! Helpers for the connector's integration tests: connector configurations in temporary
//! directories, events, and waits on real signals (acknowledgements, lines, frames). The
//! timeouts here only turn a hang into a failure; they never stand in for a signal.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use chrono::DateTime;
use procmond_wal::broker::client::TestClient;
use procmond_wal::event_bus_connector::ConnectorConfig;
use procmond_wal::wal::{BackendChoice, WalConfig};
use procmond_wal::wire::{CollectionEvent, Message};
use procmond_wal::{EventKind, ProcessEvent};

/// Failure guard for one wait.
pub const GUARD: Duration = Duration::from_secs(60);

/// The backends whose sockets the link runs on (io_uring: tokio-uring; portable: tokio).
/// `for backend in BACKENDS` yields io_uring only where it can run here (otherwise it prints
/// why it is skipped), and always the portable backend.
pub const BACKENDS: Backends = Backends;

/// See [`BACKENDS`].
#[derive(Debug, Clone, Copy)]
pub struct Backends;

impl IntoIterator for Backends {
    type Item = BackendChoice;
    type IntoIter = std::vec::IntoIter<BackendChoice>;

    fn into_iter(self) -> Self::IntoIter {
        static URING_PROBLEM: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let problem = URING_PROBLEM.get_or_init(|| {
            let scratch = tempfile::tempdir().expect("a temporary directory to probe");
            procmond_wal::io::probe::probe_uring(scratch.path())
                .err()
                .map(|problem| problem.to_string())
        });
        let mut backends = Vec::with_capacity(2);
        match problem {
            None => backends.push(BackendChoice::Uring),
            Some(reason) => eprintln!("skipping the io_uring backend: {reason}"),
        }
        backends.push(BackendChoice::Portable);
        backends.into_iter()
    }
}

/// A connector configuration with its WAL in `dir`, talking to `socket`, with small
/// segments and quick reconnects.
pub fn config(dir: &Path, socket: &Path, backend: BackendChoice) -> ConnectorConfig {
    let mut wal = WalConfig::new(dir);
    wal.backend = backend;
    wal.segment_max_bytes = 1024 * 1024;
    wal.wal_max_bytes = 64 * 1024 * 1024;
    ConnectorConfig::new(dir)
        .with_wal_config(wal)
        .with_socket_path(socket)
        .with_reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .with_checkpoint_every(64, Duration::from_millis(50))
}

/// An event whose pid identifies it, with a secret in argv.
pub fn event(pid: u32) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        pid,
        format!("proc-{pid}"),
        DateTime::from_timestamp_nanos(1_700_000_000_000_000_000 + i64::from(pid)),
    );
    event.command_line = vec![
        format!("/usr/bin/proc-{pid}"),
        "--password".into(),
        "hunter2".into(),
        "--token=abc".into(),
        "two words".into(),
    ];
    event.ppid = Some(1);
    event
}

/// The kind for event number `index` (cycles through all three).
pub fn kind(index: u32) -> EventKind {
    EventKind::ALL[(index % 3) as usize]
}

/// What `event(pid)` looks like after redaction.
pub fn redacted(pid: u32) -> ProcessEvent {
    let mut event = event(pid);
    event.command_line[2] = "[REDACTED]".into();
    event.command_line[3] = "--token=[REDACTED]".into();
    event
}

/// Decodes an event envelope into (sequence, kind, event).
pub fn decode(message: &Message) -> (u64, EventKind, ProcessEvent) {
    let payload = CollectionEvent::decode(&message.payload).expect("payload decodes");
    let (kind, event) = payload.to_process_event().expect("our payload");
    assert_eq!(message.topic, kind.topic());
    (message.sequence, kind, event)
}

/// A subscriber to every process topic.
pub async fn subscriber(socket: &Path) -> TestClient {
    let mut client = TestClient::connect(socket).await.expect("connect");
    client
        .subscribe(&["events.process.#"])
        .await
        .expect("subscribe");
    client
}

/// The next event a subscriber receives, decoded; fails after [`GUARD`].
pub async fn next_event(client: &mut TestClient) -> (u64, EventKind, ProcessEvent) {
    let message = tokio::time::timeout(GUARD, client.next_event())
        .await
        .expect("an event within the guard")
        .expect("event");
    decode(&message)
}

/// Runs `future` with the failure guard.
pub async fn guarded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, future)
        .await
        .expect("finished within the guard")
}

/// Reads events 1..=`through` from `subscriber`, in order, each once and equal to
/// [`redacted`] of its index, then waits for the connector to see them acknowledged (the
/// subscriber reads first: the broker acknowledges only what its subscribers' sockets hold).
pub async fn expect_prefix_delivered(
    subscriber: &mut TestClient,
    connector: &procmond_wal::EventBusConnector,
    through: u64,
) {
    for pid in 0..u32::try_from(through).expect("a test-sized prefix") {
        let (sequence, got_kind, got) = next_event(subscriber).await;
        assert_eq!(sequence, u64::from(pid) + 1, "in order, each once");
        assert_eq!(got_kind, kind(pid));
        assert_eq!(got, redacted(pid));
    }
    guarded(connector.acknowledged(through))
        .await
        .expect("the prefix is acknowledged");
}

/// The reference broker with `--print` as a child process: stdout lines (one per accepted
/// event) are collected until it exits, so a test can check that nothing was printed twice.
pub struct PrintingBroker {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PrintingBroker {
    /// Starts `procmond-wal broker --socket SOCKET --print [--state-dir DIR]` and waits for
    /// its readiness line.
    pub fn start(socket: &Path, state_dir: Option<&Path>) -> PrintingBroker {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_procmond-wal"));
        command
            .arg("broker")
            .arg("--socket")
            .arg(socket)
            .arg("--print");
        if let Some(state_dir) = state_dir {
            command.arg("--state-dir").arg(state_dir);
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the broker");
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            // Drained to the end so the broker never blocks on logging.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("listening on ") {
                    let _ = ready_sender.send(());
                }
            }
        });
        let (line_sender, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line_sender.send(line).is_err() {
                    return;
                }
            }
        });
        if ready.recv_timeout(GUARD).is_err() {
            let _ = child.kill();
            panic!("the broker did not start");
        }
        PrintingBroker { child, lines }
    }

    /// The next printed line; panics after [`GUARD`].
    pub fn next_line(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(GUARD).expect("a printed event");
        serde_json::from_str(&line).expect("a JSON line")
    }

    /// Waits for `expected` printed lines, then stops the broker and adds whatever else it
    /// printed. (Its printing thread may still hold lines when the process exits, so the
    /// expected ones are read first, from a running broker.)
    pub fn finish(self, expected: usize) -> Vec<serde_json::Value> {
        let mut lines: Vec<_> = (0..expected).map(|_| self.next_line()).collect();
        lines.extend(self.terminate());
        lines
    }

    /// Kills the broker with SIGKILL (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM and returns every line it printed that was not read
    /// yet, up to its exit.
    pub fn terminate(mut self) -> Vec<serde_json::Value> {
        // SAFETY: the pid is our live child's (not yet waited for).
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = self.child.wait().expect("wait for the broker");
        assert!(status.success(), "broker exit: {status}");
        self.lines
            .iter()
            .map(|line| serde_json::from_str(&line).expect("a JSON line"))
            .collect()
    }
}

impl Drop for PrintingBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sequences of printed event lines, checking each is ours and decodes.
pub fn printed_sequences(lines: &[serde_json::Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|line| {
            assert!(line.get("event").is_some(), "our payload: {line}");
            line["sequence"].as_u64().expect("sequence")
        })
        .collect()
}
