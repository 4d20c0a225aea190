//! Shared parts of the drills: cycle counts (small in CI, large from `scripts/drill-*.sh`),
//! connector configurations, a subscriber that checks sequences arrive once and in order,
//! resident memory, and the one-line verdict the scripts print.
//!
//! Every wait is on a real signal (an event, an acknowledgement, a line, a process exit);
//! the guard timeouts only turn a hang into a failure.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use procmond_wal::event_bus_connector::ConnectorConfig;
use procmond_wal::wal::{BackendChoice, WalConfig};
use procmond_wal::{EventKind, ProcessEvent};
use tokio::sync::mpsc;

/// Failure guard for one wait.
pub const GUARD: Duration = Duration::from_secs(60);

/// Cycles to run: `DRILL_CYCLES` from the environment (the long scripts), else `ci`.
pub fn cycles(ci: u64) -> u64 {
    std::env::var("DRILL_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|cycles| *cycles > 0)
        .unwrap_or(ci)
}

/// A temporary directory under /tmp, so socket paths stay short.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pwd")
        .tempdir_in("/tmp")
        .expect("create temporary directory")
}

/// A connector configuration: WAL in `dir`, broker at `socket`, small segments, quick
/// reconnects and checkpoints.
pub fn config(dir: &Path, socket: &Path) -> ConnectorConfig {
    let mut wal = WalConfig::new(dir);
    wal.backend = BackendChoice::Auto;
    wal.segment_max_bytes = 1024 * 1024;
    wal.wal_max_bytes = 256 * 1024 * 1024;
    ConnectorConfig::new(dir)
        .with_wal_config(wal)
        .with_socket_path(socket)
        .with_reconnect_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .with_checkpoint_every(256, Duration::from_millis(50))
}

/// A small event whose pid identifies it.
pub fn event(index: u64) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        u32::try_from(index % u64::from(u32::MAX)).unwrap_or(0),
        format!("drill-{index}"),
        chrono::Utc::now(),
    );
    event.command_line = vec!["/usr/bin/drill".into(), index.to_string()];
    event
}

/// The kind for event number `index`.
pub fn kind(index: u64) -> EventKind {
    EventKind::ALL[(index % 3) as usize]
}

/// Runs `future` with the failure guard.
pub async fn guarded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no progress within {GUARD:?}"),
    }
}

/// Sequences received by one subscriber connection, forwarded as they arrive; the channel
/// closes when the connection ends. Reads are buffered so the subscriber keeps up with a
/// replay burst (a broker cuts off a subscriber whose queue overflows).
pub async fn subscribe(socket: &Path) -> mpsc::UnboundedReceiver<u64> {
    use procmond_wal::wire::control::ControlPayload;
    use procmond_wal::wire::frame::body_length;
    use procmond_wal::wire::{
        Body, FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES, MessageType, Subscribe, Subscribed,
        WireTime,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect subscriber");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(256 * 1024, read);
    let subscribe = Subscribe {
        patterns: vec!["events.process.#".to_owned()],
    };
    let frame = subscribe
        .to_message("drill-subscriber", 1, WireTime::now())
        .and_then(|message| message.encode_frame())
        .expect("encode subscribe");
    write.write_all(&frame).await.expect("send subscribe");
    let (sender, receiver) = mpsc::unbounded_channel();
    let (subscribed_sender, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed_sender = Some(subscribed_sender);
        loop {
            let mut prefix = [0u8; FRAME_LENGTH_BYTES];
            if reader.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let Ok(length) = body_length(prefix, MAX_FRAME_BODY_BYTES) else {
                return;
            };
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            match Body::decode(&body) {
                Ok(Body::Ping) => {
                    let pong = Body::Pong.encode_frame().expect("encode pong");
                    if write.write_all(&pong).await.is_err() {
                        return;
                    }
                }
                Ok(Body::Message(message)) if message.message_type == MessageType::Event => {
                    if sender.send(message.sequence).is_err() {
                        return;
                    }
                }
                Ok(Body::Message(message)) if Subscribed::from_message(&message).is_ok() => {
                    if let Some(confirm) = subscribed_sender.take() {
                        let _ = confirm.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    guarded("subscription confirmed", subscribed)
        .await
        .expect("the broker confirmed the subscription");
    receiver
}

/// Checks a stream of sequences: each should be the previous one + 1.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Highest sequence seen.
    pub highest: u64,
    /// Sequences received (including repeats).
    pub received: u64,
    /// Sequences at or below one already seen.
    pub repeated: u64,
    /// Sequences skipped (a jump past highest + 1 skips this many).
    pub missing: u64,
}

impl Order {
    /// An order check expecting `first` next.
    pub fn starting_at(first: u64) -> Order {
        Order {
            highest: first - 1,
            ..Order::default()
        }
    }

    /// Feeds one sequence.
    pub fn see(&mut self, sequence: u64) {
        self.received += 1;
        if sequence <= self.highest {
            self.repeated += 1;
        } else {
            self.missing += sequence - self.highest - 1;
            self.highest = sequence;
        }
    }

    /// Exactly once, in order, through `last`.
    pub fn is_exact_through(&self, last: u64) -> bool {
        self.highest == last && self.repeated == 0 && self.missing == 0
    }
}

/// The high-water mark the reference broker persisted in `state_dir` for its only
/// publisher (0 if none yet): the number in the one `*.hwm` file.
pub fn persisted_mark(state_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return 0;
    };
    let marks: Vec<u64> = entries
        .map_while(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".hwm"))
        .map(|entry| {
            std::fs::read_to_string(entry.path())
                .expect("read the mark")
                .trim()
                .parse()
                .expect("a mark is a number")
        })
        .collect();
    assert!(marks.len() <= 1, "one publisher, one mark: {marks:?}");
    marks.first().copied().unwrap_or(0)
}

/// Receives from `receiver` until `through` was seen; false if the connection ended first.
pub async fn receive_through(
    receiver: &mut mpsc::UnboundedReceiver<u64>,
    order: &mut Order,
    through: u64,
) -> bool {
    while order.highest < through {
        match guarded("subscriber", receiver.recv()).await {
            Some(sequence) => order.see(sequence),
            None => return false,
        }
    }
    true
}

/// Resident set size of a process in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("a VmRSS line")
}

/// Prints the drill's one-line verdict (the long scripts grep for it) and fails the test
/// when it did not pass.
pub fn verdict(name: &str, pass: bool, counts: &str) {
    let word = if pass { "PASS" } else { "FAIL" };
    println!("drill {name}: {word} {counts}");
    assert!(pass, "drill {name} failed: {counts}");
}

/// The broker binary as a child process whose pid the drill controls (SIGSTOP/SIGCONT).
/// With `--print`, its stdout lines (one JSON object per accepted event) arrive on `lines`.
pub struct BrokerChild {
    /// The process.
    pub child: std::process::Child,
    /// Its stdout lines.
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl BrokerChild {
    /// Starts `procmond-wal broker --socket SOCKET ARGS…` and waits for its readiness line.
    pub fn start(socket: &Path, args: &[&str]) -> BrokerChild {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .arg("broker")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the broker");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_sender, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("listening on ") {
                    let _ = ready_sender.send(());
                }
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        ready
            .recv_timeout(GUARD)
            .expect("the broker printed its readiness line");
        BrokerChild { child, lines }
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to the broker.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sequence` of a broker `--print` line (read without building the whole JSON value:
/// the lines are large and many).
pub fn printed_sequence(line: &str) -> u64 {
    let (_, rest) = line
        .split_once("\"sequence\":")
        .expect("a printed event has a sequence");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a sequence number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_counts_repeats_and_gaps() {
        let mut order = Order::starting_at(1);
        for sequence in [1, 2, 2, 5, 3, 6] {
            order.see(sequence);
        }
        assert_eq!((order.highest, order.repeated, order.missing), (6, 2, 2));
        assert!(!order.is_exact_through(6));
        let mut clean = Order::starting_at(10);
        for sequence in 10..=12 {
            clean.see(sequence);
        }
        assert!(clean.is_exact_through(12));
    }
}
