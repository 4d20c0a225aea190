//! `--print`: one JSON line per accepted event on stdout, for the demo and for people.
//!
//! Owns the line format and the printing thread. Lines are handed over through a bounded
//! queue; the thread writes and flushes each line so `procmond-wal broker --print | jq` shows
//! events as they arrive.

use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::{EventKind, ProcessEvent};
use crate::wire::{CollectionEvent, Message, WireError};

/// Lines waiting to be printed before senders wait.
const PRINT_QUEUE_MAX_LINES: usize = 1024;

/// Sends lines to the printing thread.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    sender: mpsc::Sender<String>,
}

/// One printed line. `event` is set for procmond-wal payloads, `process` for other
/// `CollectionEvent::Process` payloads, `payload_error` when the payload does not decode.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    sequence: u64,
    publisher_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<EventKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<ProcessEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<CollectionEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_error: Option<String>,
}

impl Printer {
    /// Starts the printing thread; it ends when every `Printer` is dropped.
    pub(crate) fn start() -> Printer {
        let (sender, mut receiver) = mpsc::channel::<String>(PRINT_QUEUE_MAX_LINES);
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            while let Some(line) = receiver.blocking_recv() {
                let mut out = stdout.lock();
                if let Err(error) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    tracing::warn!(%error, "cannot write to stdout; printing stops");
                    return;
                }
            }
        });
        Printer { sender }
    }

    /// Prints one accepted event (waits only if the printing thread is behind).
    ///
    /// The line is queued without an await when there is room: a connection task can be
    /// cancelled at an await (its peer vanished), and an event the broker has already
    /// accepted must not lose its line there.
    pub(crate) async fn print(&self, message: &Message, publisher_id: Option<&str>) {
        let text = match format_line(message, publisher_id) {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(%error, "cannot format event as JSON");
                return;
            }
        };
        match self.sender.try_send(text) {
            Ok(()) => {}
            // A closed channel means printing stopped (stdout gone); the broker keeps routing.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(text)) => drop(self.sender.send(text).await),
        }
    }
}

/// The JSON line for one accepted event. A payload without `procmond.version` (an upstream
/// producer, whatever its metadata) is shown as a plain `process`.
fn format_line(message: &Message, publisher_id: Option<&str>) -> serde_json::Result<String> {
    {
        let mut line = Line {
            topic: &message.topic,
            sequence: message.sequence,
            publisher_id,
            kind: None,
            event: None,
            process: None,
            payload_error: None,
        };
        match CollectionEvent::decode(&message.payload) {
            Ok(payload) => match payload.to_process_event() {
                Ok((kind, event)) => {
                    line.kind = Some(kind);
                    line.event = Some(event);
                }
                Err(WireError::NotProcmondPayload) => line.process = Some(payload),
                Err(error) => line.payload_error = Some(error.to_string()),
            },
            Err(error) => line.payload_error = Some(error.to_string()),
        }
        serde_json::to_string(&line)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::{CorrelationMetadata, MessageType, WireTime};

    fn envelope(payload: Vec<u8>) -> Message {
        Message {
            id: uuid::Uuid::from_bytes([1; 16]),
            topic: "events.process.start".into(),
            correlation_metadata: CorrelationMetadata::root("c".into(), 0, WireTime::EPOCH),
            payload,
            sequence: 3,
            timestamp: WireTime::EPOCH,
            message_type: MessageType::Event,
        }
    }

    #[test]
    fn an_upstream_payload_with_metadata_prints_as_a_process() {
        let upstream = CollectionEvent::Process {
            pid: 42,
            name: "sshd".into(),
            command_line: Some("sshd -D".into()),
            executable_path: None,
            ppid: Some(1),
            start_time: None,
            metadata: BTreeMap::from([
                ("hostname".to_owned(), "web-1".to_owned()),
                ("procmond.kind".to_owned(), "start".to_owned()),
            ]),
        };
        let line =
            format_line(&envelope(upstream.encode().expect("encode")), None).expect("formats");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["process"]["Process"]["pid"], 42);
        assert_eq!(value["process"]["Process"]["metadata"]["hostname"], "web-1");
        assert!(value.get("payload_error").is_none(), "{line}");
    }

    #[test]
    fn a_broken_payload_prints_its_error() {
        let line = format_line(&envelope(vec![9, 9]), None).expect("formats");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert!(value["payload_error"].is_string(), "{line}");
    }
}
