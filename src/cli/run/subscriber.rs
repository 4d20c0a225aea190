//! The embedded broker's printing subscriber: subscribes to every process topic, checks
//! that sequences arrive exactly once and in order, counts them, and prints each event as
//! one line on stdout (a compact human line, or JSON).
//!
//! Owns the line formats and the counting. The connection is the library's
//! [`TestClient`] (buffered reads, so it keeps up with the broker at synthetic load; a
//! subscriber that falls behind by more than the broker's queue is cut off by the broker,
//! which the summary reports). It subscribes with `subscribe-from` and keeps its resume
//! [`Positions`], so a resubscription would never be sent an event it already holds. It is a consumer only: it never acknowledges,
//! publishes or touches the WAL.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use procmond_wal::broker::client::{ClientError, Positions, TestClient};
use procmond_wal::wire::{CollectionEvent, Message};
use procmond_wal::{EventKind, ProcessEvent};
use serde::Serialize;
use tokio::sync::watch;

use super::status::Console;
use super::summary::SubscriberFigures;

/// Every process topic.
pub const ALL_PROCESS_TOPICS: &str = "events.process.#";

/// A subscribed connection to the broker, and what it holds.
#[derive(Debug)]
pub struct Subscription {
    client: TestClient,
    positions: Positions,
}

/// How received events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    /// Human lines on a terminal, JSON lines otherwise; nothing for the synthetic source
    /// or with `--json`.
    Auto,
    /// One compact line per event: sequence, kind, pid, ppid, uid, name, argv.
    Human,
    /// One JSON object per event: sequence, topic, kind, event.
    Json,
    /// Count only.
    None,
}

/// Counters shared between the subscriber task and the caller.
#[derive(Debug)]
pub struct SubscriberState {
    first_run_sequence: u64,
    received: AtomicU64,
    backlog_received: AtomicU64,
    not_in_order: AtomicU64,
    undecodable: AtomicU64,
    disconnected: AtomicBool,
    highest: watch::Sender<u64>,
}

impl SubscriberState {
    /// Counters for a run whose own events start at `first_run_sequence` (earlier ones are
    /// backlog from a previous run).
    pub fn new(first_run_sequence: u64) -> Arc<SubscriberState> {
        Arc::new(SubscriberState {
            first_run_sequence,
            received: AtomicU64::new(0),
            backlog_received: AtomicU64::new(0),
            not_in_order: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            disconnected: AtomicBool::new(false),
            highest: watch::Sender::new(0),
        })
    }

    /// Events of this run received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Waits until an event with a sequence of at least `sequence` was received (returns at
    /// once if the subscriber has ended).
    pub async fn wait_for(&self, sequence: u64) {
        let mut highest = self.highest.subscribe();
        // Err: the sender is gone, which cannot happen while `self` lives; treat as done.
        let _ = highest
            .wait_for(|highest| *highest >= sequence || self.disconnected.load(Relaxed))
            .await;
    }

    /// A snapshot.
    pub fn figures(&self) -> SubscriberFigures {
        SubscriberFigures {
            received: self.received.load(Relaxed),
            backlog_received: self.backlog_received.load(Relaxed),
            not_in_order: self.not_in_order.load(Relaxed),
            undecodable: self.undecodable.load(Relaxed),
            disconnected: self.disconnected.load(Relaxed),
        }
    }

    /// Counts one received sequence; returns whether it is new (above every earlier one).
    fn count(&self, sequence: u64) -> bool {
        let previous = *self.highest.borrow();
        if sequence <= previous {
            self.not_in_order.fetch_add(1, Relaxed);
            return false;
        }
        if sequence >= self.first_run_sequence {
            self.received.fetch_add(1, Relaxed);
        } else {
            self.backlog_received.fetch_add(1, Relaxed);
        }
        self.highest.send_replace(sequence);
        true
    }

    fn mark_disconnected(&self) {
        self.disconnected.store(true, Relaxed);
        // Wakes waiters so they see the flag.
        self.highest.send_modify(|_| {});
    }
}

/// Connects and subscribes from `positions` (empty for a first subscription); returns once
/// the broker confirmed the subscription, so no event published afterwards can be missed.
pub async fn subscribe_from(
    socket: &Path,
    positions: Positions,
) -> Result<Subscription, ClientError> {
    let mut client = TestClient::connect(socket).await?;
    client
        .subscribe_from(&[ALL_PROCESS_TOPICS], &positions)
        .await?;
    Ok(Subscription { client, positions })
}

/// Connects and subscribes to everything from the start.
pub async fn subscribe(socket: &Path) -> Result<Subscription, ClientError> {
    subscribe_from(socket, Positions::new()).await
}

/// Receives, checks, counts and prints events until the broker closes the connection.
pub async fn run(
    mut client: Subscription,
    state: Arc<SubscriberState>,
    format: PrintFormat,
    console: Console,
) {
    let mut printing = format != PrintFormat::None;
    loop {
        let message = match client.client.next_event_or_end().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                state.mark_disconnected();
                return;
            }
            Err(error) => {
                console.note(&format!("procmond-wal run: subscriber: {error}"));
                state.mark_disconnected();
                return;
            }
        };
        // Where this subscriber is, for `subscribe_from`. `run` subscribes once (its broker
        // lives in this process and never restarts); the order check below is its own.
        client.positions.record(&message);
        state.count(message.sequence);
        if !printing {
            // Counting only (synthetic load): the envelope was decoded; the payload is left
            // alone so the subscriber keeps up with the broker.
            continue;
        }
        let decoded = CollectionEvent::decode(&message.payload)
            .and_then(|payload| payload.to_process_event());
        let (kind, event) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                state.undecodable.fetch_add(1, Relaxed);
                console.note(&format!(
                    "procmond-wal run: subscriber: event {} on {} does not decode: {error}",
                    message.sequence, message.topic
                ));
                continue;
            }
        };
        let line = match format {
            PrintFormat::Json => json_line(&message, kind, &event),
            _ => human_line(message.sequence, kind, &event),
        };
        // stdout closed (e.g. `| head`): stop printing, keep counting.
        printing = console.print_stdout(&line);
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    sequence: u64,
    topic: &'a str,
    kind: EventKind,
    event: &'a ProcessEvent,
}

/// One JSON object: `sequence`, `topic`, `kind`, `event` (every field of the event).
pub fn json_line(message: &Message, kind: EventKind, event: &ProcessEvent) -> String {
    let line = JsonLine {
        sequence: message.sequence,
        topic: &message.topic,
        kind,
        event,
    };
    serde_json::to_string(&line).unwrap_or_else(|error| {
        format!(
            "{{\"sequence\":{},\"error\":\"{error}\"}}",
            message.sequence
        )
    })
}

/// Longest argv text shown on a human line.
const HUMAN_ARGV_CHARS: usize = 100;

/// A compact line: `#SEQ kind pid PID ppid PPID uid UID name  argv…`.
pub fn human_line(sequence: u64, kind: EventKind, event: &ProcessEvent) -> String {
    let ppid = event
        .ppid
        .map_or_else(|| "-".to_owned(), |ppid| ppid.to_string());
    let uid = event.user_id.as_deref().unwrap_or("-");
    let argv = if event.command_line.is_empty() {
        event.executable_path.clone().unwrap_or_default()
    } else {
        event.command_line.join(" ")
    };
    let mut argv: String = argv
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(HUMAN_ARGV_CHARS + 1)
        .collect();
    if argv.chars().count() > HUMAN_ARGV_CHARS {
        argv = argv.chars().take(HUMAN_ARGV_CHARS).collect::<String>() + "…";
    }
    let name: String = event
        .name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!(
        "#{sequence:<7} {:<6} pid {:<7} ppid {:<7} uid {:<5} {name:<16} {argv}",
        kind.as_str(),
        event.pid,
        ppid,
        uid
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_counted_once_in_order_and_backlog_apart() {
        let state = SubscriberState::new(10);
        for sequence in [8, 9, 10, 11, 11, 10, 12] {
            state.count(sequence);
        }
        let figures = state.figures();
        assert_eq!(figures.backlog_received, 2);
        assert_eq!(figures.received, 3);
        assert_eq!(figures.not_in_order, 2);
    }

    #[test]
    fn a_human_line_is_one_line_with_the_essentials() {
        let mut event = ProcessEvent::new(4242, "sle\nep", chrono::Utc::now());
        event.ppid = Some(1);
        event.user_id = Some("1000".into());
        event.command_line = vec!["sleep".into(), "1\n".into(), "x".repeat(300)];
        let line = human_line(7, EventKind::Start, &event);
        assert!(!line.contains('\n'), "{line}");
        for part in [
            "#7", "start", "pid 4242", "ppid 1", "uid 1000", "sle?ep", "sleep 1?",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
        assert!(line.ends_with('…'));
    }
}
