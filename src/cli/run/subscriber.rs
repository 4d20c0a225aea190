//! The embedded broker's printing subscriber: subscribes to every process topic, checks
//! that sequences arrive exactly once and in order, counts them, and prints each event as
//! one line on stdout (a compact human line, or JSON).
//!
//! Owns its subscriber connection (buffered reads, so it keeps up with the broker at
//! synthetic load; a subscriber that falls behind by more than the broker's queue is cut
//! off by the broker, which the summary reports), the line formats and the counting. It is a
//! consumer only: it never acknowledges, publishes or touches the WAL.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use procmond_wal::wire::control::ControlPayload;
use procmond_wal::wire::frame::body_length;
use procmond_wal::wire::{
    Body, CollectionEvent, FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES, Message, MessageType,
    Subscribe, Subscribed, WireError, WireTime,
};
use procmond_wal::{EventKind, ProcessEvent};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use super::status::Console;
use super::summary::SubscriberFigures;

/// Every process topic.
pub const ALL_PROCESS_TOPICS: &str = "events.process.#";

/// Read buffer of the subscriber connection.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Origin of the subscriber's control messages.
const SUBSCRIBER_ORIGIN: &str = "procmond-wal-run-subscriber";

/// Why the subscriber connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// A socket call failed.
    #[error("cannot {operation} the broker socket: {source}")]
    Io {
        /// `connect`, `read` or `write`.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker sent bytes that do not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
}

/// A subscribed connection to the broker.
#[derive(Debug)]
pub struct Subscription {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Subscription {
    /// The next frame body; `Closed` at the end of the stream.
    async fn next_body(&mut self) -> Result<Body, SubscriberError> {
        let mut prefix = [0u8; FRAME_LENGTH_BYTES];
        match self.reader.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(SubscriberError::Closed);
            }
            Err(source) => {
                return Err(SubscriberError::Io {
                    operation: "read",
                    source,
                });
            }
        }
        let mut body = vec![0u8; body_length(prefix, MAX_FRAME_BODY_BYTES)?];
        self.reader
            .read_exact(&mut body)
            .await
            .map_err(|source| SubscriberError::Io {
                operation: "read",
                source,
            })?;
        Ok(Body::decode(&body)?)
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), SubscriberError> {
        self.writer
            .write_all(frame)
            .await
            .map_err(|source| SubscriberError::Io {
                operation: "write",
                source,
            })
    }

    /// The next event message, answering PINGs on the way.
    async fn next_event(&mut self) -> Result<Message, SubscriberError> {
        loop {
            match self.next_body().await? {
                Body::Ping => self.write(&Body::Pong.encode_frame()?).await?,
                Body::Pong => {}
                Body::Message(message) if message.message_type == MessageType::Event => {
                    return Ok(message);
                }
                Body::Message(_) => {}
            }
        }
    }
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

/// Connects and subscribes; returns once the broker confirmed the subscription, so no event
/// published afterwards can be missed.
pub async fn subscribe(socket: &Path) -> Result<Subscription, SubscriberError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| SubscriberError::Io {
            operation: "connect to",
            source,
        })?;
    let (read, writer) = stream.into_split();
    let mut subscription = Subscription {
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, read),
        writer,
    };
    let subscribe = Subscribe {
        patterns: vec![ALL_PROCESS_TOPICS.to_owned()],
    };
    let frame = subscribe
        .to_message(SUBSCRIBER_ORIGIN, 1, WireTime::now())?
        .encode_frame()?;
    subscription.write(&frame).await?;
    loop {
        match subscription.next_body().await? {
            Body::Ping => subscription.write(&Body::Pong.encode_frame()?).await?,
            Body::Message(message) if Subscribed::from_message(&message).is_ok() => {
                return Ok(subscription);
            }
            // Nothing is published before the subscription is confirmed.
            _ => {}
        }
    }
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
        let message = match client.next_event().await {
            Ok(message) => message,
            Err(error) => {
                if !matches!(error, SubscriberError::Closed) {
                    console.note(&format!("procmond-wal run: subscriber: {error}"));
                }
                state.mark_disconnected();
                return;
            }
        };
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
