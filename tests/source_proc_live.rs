//! The /proc source against this machine's real /proc: a child process is seen starting
//! with its pid and argv, and seen stopping once it is killed and reaped.
//!
//! Synchronisation is by polling until the event is observed, with a bound on the number
//! of polls; the poller's own interval paces the polls.

use std::process::{Child, Command};

use procmond_wal::EventKind;
use procmond_wal::source::proc::{PollBatch, ProcPoller, ProcPollerConfig};

/// Far more polls than needed: the child exists before the first poll after `spawn`
/// returns, and is gone before the first poll after `wait` returns.
const MAX_POLLS: usize = 200;

fn config() -> ProcPollerConfig {
    ProcPollerConfig {
        poll_interval_ms: 20,
        report_existing: true,
        ..ProcPollerConfig::default()
    }
}

/// Polls until `found` picks something out of a batch; panics after [`MAX_POLLS`].
async fn poll_until<T>(
    poller: &mut ProcPoller,
    what: &str,
    mut found: impl FnMut(&PollBatch) -> Option<T>,
) -> T {
    for _ in 0..MAX_POLLS {
        let batch = poller.next_batch().await.expect("/proc can be listed");
        if let Some(value) = found(&batch) {
            return value;
        }
    }
    panic!("{what}: not observed in {MAX_POLLS} polls");
}

/// Kills the child if the test fails before it does.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_child_process_is_seen_starting_and_stopping() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut poller = ProcPoller::new(&config()).expect("this host has /proc");

        // The first poll reports what already runs, this test process included.
        let first = poller.next_batch().await.unwrap();
        let own_pid = std::process::id();
        let (own, kind) = first
            .events
            .iter()
            .find(|(event, _)| event.pid == own_pid)
            .expect("the test process is in the first poll");
        assert_eq!(*kind, EventKind::Start);
        let own_exe = std::env::current_exe().unwrap();
        assert_eq!(own.executable_path.as_deref(), own_exe.to_str());
        assert_eq!(
            own.command_line.first().map(String::as_str),
            std::env::args().next().as_deref()
        );
        assert!(own.start_time.is_some() && own.memory_usage_bytes.is_some_and(|m| m > 0));
        assert_eq!(own.platform_metadata["change.initial_scan"], "true");
        assert_eq!(own.ppid, Some(std::os::unix::process::parent_id()));
        assert_eq!(own.user_id.as_deref(), Some(own_uid().to_string().as_str()));

        // A long sleep, with an argument unique to this run so nothing else matches it.
        let marker = format!("{}", 100_000 + own_pid % 100_000);
        let child = Command::new("sleep")
            .arg(&marker)
            .spawn()
            .expect("spawn sleep");
        let child_pid = child.id();
        let mut child = Reap(Some(child));

        let start = poll_until(&mut poller, "the child's Start", |batch| {
            batch
                .events
                .iter()
                .find(|(event, kind)| event.pid == child_pid && *kind == EventKind::Start)
                .map(|(event, _)| event.clone())
        })
        .await;
        assert_eq!(start.command_line, ["sleep", marker.as_str()]);
        assert_eq!(start.name, "sleep");
        assert_eq!(start.ppid, Some(own_pid));
        // The path itself varies (a multi-call binary, usr-merge); that it was read is fixed.
        assert!(start.executable_path.is_some() && start.file_exists);
        assert!(start.accessible);

        let mut running = child.0.take().unwrap();
        running.kill().unwrap();
        running.wait().unwrap();

        let stop = poll_until(&mut poller, "the child's Stop", |batch| {
            batch
                .events
                .iter()
                .find(|(event, kind)| event.pid == child_pid && *kind == EventKind::Stop)
                .map(|(event, _)| event.clone())
        })
        .await;
        assert_eq!(stop.command_line, ["sleep", marker.as_str()]);
        assert_eq!(stop.start_time, start.start_time);

        let stats = poller.stats();
        assert!(stats.starts >= 2 && stats.stops >= 1);
        assert_eq!(stats.failed_polls, 0);
    });
}

/// This process's real uid, read from /proc/self/status (no libc call needed).
fn own_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
