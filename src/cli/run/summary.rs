//! The end-of-run summary: what was observed, made durable, delivered and acknowledged,
//! what is still outstanding, and the exit code that follows from it.
//!
//! Pure: figures in, text/JSON and an exit code out. The rule it keeps: a run is clean
//! only when nothing is outstanding, nothing failed, and every durable event of this run was
//! acknowledged (and, with the embedded broker, received by its subscriber exactly once, in
//! order).

use serde::Serialize;

use super::super::{EXIT_OK, EXIT_PROBLEM};

/// Figures of the /proc source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcFigures {
    /// Polls completed.
    pub polls: u64,
    /// Polls that failed as a whole (the /proc root could not be listed).
    pub failed_polls: u64,
    /// Start, stop and modify events produced.
    pub starts: u64,
    /// Stop events produced.
    pub stops: u64,
    /// Modify events produced.
    pub modifies: u64,
    /// /proc entries skipped (vanished mid-read, permission denied, malformed, unreadable),
    /// summed over all polls.
    pub skipped_entries: u64,
    /// Processes kept with some attribute unreadable, summed over all polls.
    pub partial_entries: u64,
    /// Processes in the last snapshot.
    pub processes_tracked: u64,
    /// Polls made while backpressure slowed polling down.
    pub slowed_polls: u64,
}

/// What the embedded broker's subscriber saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberFigures {
    /// Events of this run received (distinct, in order).
    pub received: u64,
    /// Events from an earlier run (left unacknowledged in the WAL) received.
    pub backlog_received: u64,
    /// Events received whose sequence was not above the previous one (duplicate or out of
    /// order): must be 0.
    pub not_in_order: u64,
    /// Payloads that did not decode as process events: must be 0.
    pub undecodable: u64,
    /// Whether the subscriber lost its connection before the end.
    pub disconnected: bool,
}

/// Everything the summary reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `proc` or `synthetic`.
    pub source: &'static str,
    /// `embedded` or the external socket path.
    pub broker: String,
    /// The WAL directory.
    pub wal_dir: String,
    /// Wall-clock seconds from start to the end of shutdown.
    pub seconds: f64,
    /// Events the source produced.
    pub observed: u64,
    /// Events of this run made durable in the WAL.
    pub durable: u64,
    /// Events of this run received by the embedded subscriber (`None` with an external
    /// broker, whose subscribers this process cannot see).
    pub delivered: Option<u64>,
    /// Events of this run the broker acknowledged (with a legacy broker: written to its
    /// socket).
    pub acknowledged: u64,
    /// Events in the WAL not yet acknowledged after shutdown (this run's and any backlog).
    pub outstanding: u64,
    /// Publishes that failed (the event was not made durable).
    pub publish_failures: u64,
    /// The first publish error, verbatim.
    pub first_error: Option<String>,
    /// Unacknowledged events found in the WAL at start (delivered during this run).
    pub backlog_at_start: u64,
    /// Mean events/s made durable.
    pub events_per_s: f64,
    /// Times backpressure was activated.
    pub backpressure_activations: u64,
    /// Events spilled to the WAL (delivered from disk) because the buffer was full.
    pub spilled: u64,
    /// Connections to the broker.
    pub connections: u64,
    /// Whether the broker never acknowledged (legacy mode: written counts as delivered).
    pub legacy_broker: bool,
    /// The /proc source's figures (`None` for the synthetic source).
    pub proc: Option<ProcFigures>,
    /// The embedded subscriber's figures (`None` with an external broker).
    pub subscriber: Option<SubscriberFigures>,
    /// Why the run stopped: `duration`, `SIGINT`, `SIGTERM`, or `error`.
    pub stopped_by: &'static str,
}

impl Summary {
    /// Problems that make the exit code 1, in words (empty: clean).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.outstanding > 0 {
            problems.push(format!(
                "{} events not acknowledged by the broker (kept in the WAL; delivered at the next start)",
                self.outstanding
            ));
        }
        if self.publish_failures > 0 {
            problems.push(format!(
                "{} events could not be made durable: {}",
                self.publish_failures,
                self.first_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if self.acknowledged != self.durable {
            problems.push(format!(
                "acknowledged {} of {} durable events",
                self.acknowledged, self.durable
            ));
        }
        if let Some(delivered) = self.delivered
            && delivered != self.durable
        {
            problems.push(format!(
                "the subscriber received {delivered} of {} durable events",
                self.durable
            ));
        }
        if let Some(subscriber) = &self.subscriber {
            if subscriber.not_in_order > 0 {
                problems.push(format!(
                    "the subscriber received {} events out of order or twice",
                    subscriber.not_in_order
                ));
            }
            if subscriber.undecodable > 0 {
                problems.push(format!(
                    "{} payloads did not decode",
                    subscriber.undecodable
                ));
            }
        }
        problems
    }

    /// 0 when clean, 1 when anything is outstanding or failed.
    pub fn exit_code(&self) -> u8 {
        if self.problems().is_empty() {
            EXIT_OK
        } else {
            EXIT_PROBLEM
        }
    }

    /// The summary for people: a few aligned lines.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let mut line = |label: &str, value: String| {
            text.push_str(&format!("  {label:<13} {value}\n"));
        };
        line(
            "source",
            format!(
                "{} for {:.1} s (stopped by {})",
                self.source, self.seconds, self.stopped_by
            ),
        );
        line("broker", self.broker.clone());
        line("wal", self.wal_dir.clone());
        line("observed", self.observed.to_string());
        line(
            "durable",
            format!("{} ({:.0} events/s)", self.durable, self.events_per_s),
        );
        line(
            "delivered",
            self.delivered
                .map_or_else(|| "- (external broker)".to_owned(), |n| n.to_string()),
        );
        line(
            "acknowledged",
            if self.legacy_broker {
                format!(
                    "{} (legacy broker: written to its socket)",
                    self.acknowledged
                )
            } else {
                self.acknowledged.to_string()
            },
        );
        line("outstanding", self.outstanding.to_string());
        if self.backlog_at_start > 0 {
            line(
                "backlog",
                format!("{} from an earlier run, delivered", self.backlog_at_start),
            );
        }
        line(
            "backpressure",
            format!(
                "{} activations, {} events spilled to the WAL",
                self.backpressure_activations, self.spilled
            ),
        );
        if let Some(proc) = &self.proc {
            line(
                "/proc",
                format!(
                    "{} polls ({} slowed, {} failed), {} start, {} stop, {} modify, {} entries skipped, {} partial, {} processes now",
                    proc.polls,
                    proc.slowed_polls,
                    proc.failed_polls,
                    proc.starts,
                    proc.stops,
                    proc.modifies,
                    proc.skipped_entries,
                    proc.partial_entries,
                    proc.processes_tracked
                ),
            );
        }
        let problems = self.problems();
        let verdict = if problems.is_empty() {
            "ok: durable = delivered = acknowledged, nothing outstanding".to_owned()
        } else {
            format!("PROBLEM: {}", problems.join("; "))
        };
        format!("procmond-wal run summary\n{text}  {verdict}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Summary {
        Summary {
            source: "proc",
            broker: "embedded".into(),
            wal_dir: "/w".into(),
            seconds: 10.0,
            observed: 300,
            durable: 300,
            delivered: Some(300),
            acknowledged: 300,
            outstanding: 0,
            publish_failures: 0,
            first_error: None,
            backlog_at_start: 0,
            events_per_s: 30.0,
            backpressure_activations: 0,
            spilled: 0,
            connections: 1,
            legacy_broker: false,
            proc: Some(ProcFigures::default()),
            subscriber: Some(SubscriberFigures {
                received: 300,
                ..SubscriberFigures::default()
            }),
            stopped_by: "duration",
        }
    }

    #[test]
    fn a_clean_run_exits_zero_and_says_so() {
        let summary = clean();
        assert!(summary.problems().is_empty());
        assert_eq!(summary.exit_code(), EXIT_OK);
        assert!(
            summary
                .to_text()
                .contains("ok: durable = delivered = acknowledged")
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["durable"], 300);
        assert_eq!(json["delivered"], 300);
    }

    #[test]
    fn anything_outstanding_missing_or_failed_exits_one() {
        let cases: [fn(&mut Summary); 6] = [
            |s| s.outstanding = 1,
            |s| s.acknowledged = 299,
            |s| s.delivered = Some(299),
            |s| {
                s.publish_failures = 1;
                s.first_error = Some("disk full".into());
            },
            |s| s.subscriber.as_mut().unwrap().not_in_order = 1,
            |s| s.subscriber.as_mut().unwrap().undecodable = 1,
        ];
        for spoil in cases {
            let mut summary = clean();
            spoil(&mut summary);
            assert_eq!(summary.exit_code(), EXIT_PROBLEM, "{summary:?}");
            assert!(summary.to_text().contains("PROBLEM:"));
        }
    }

    #[test]
    fn an_external_broker_has_no_delivered_figure_and_can_still_be_clean() {
        let mut summary = clean();
        summary.delivered = None;
        summary.subscriber = None;
        assert_eq!(summary.exit_code(), EXIT_OK);
        assert!(summary.to_text().contains("external broker"));
    }
}
