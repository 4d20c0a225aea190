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
pub const BACKENDS: [BackendChoice; 2] = [BackendChoice::Uring, BackendChoice::Portable];

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
