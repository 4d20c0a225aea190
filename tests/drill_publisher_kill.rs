//! Drill: the publishing process is killed with SIGKILL and restarted on the same WAL
//! directory, again and again, while a subscriber listens on one broker. Nothing
//! acknowledged may be lost: every sequence the publisher reported durable reaches the
//! subscriber, and the subscriber receives every sequence exactly once and in order (the
//! restarted publisher keeps its publisher id, so the broker de-duplicates the replay).
//!
//! The publisher is the binary's hidden `connector-load --print-durable` child, which
//! prints `durable SEQ` as each publish resolves. `DRILL_CYCLES` sets the number of kills
//! (`scripts/drill-publisher-kill.sh N`).

mod drill_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use drill_support::{Order, cycles, guarded, short_tempdir, subscribe, verdict};
use procmond_wal::broker::{Broker, BrokerConfig};
use tokio::sync::mpsc;

/// Durable events to wait for before killing publisher number `cycle` (varied so kills
/// land at different points of group commits, checkpoints and replays).
fn durable_before_kill(cycle: u64) -> u64 {
    20 + (cycle * 53) % 400
}

/// Starts the publisher child; its `durable SEQ` lines arrive on the returned channel.
fn start_publisher(
    wal: &Path,
    socket: &Path,
    events: u64,
    wait_acked: bool,
) -> (Child, mpsc::UnboundedReceiver<u64>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_procmond-wal"));
    command
        .arg("connector-load")
        .arg("--wal")
        .arg(wal)
        .arg("--socket")
        .arg(socket)
        .args(["--events", &events.to_string(), "--publishers", "4"])
        .arg("--print-durable")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !wait_acked {
        command.arg("--no-wait-acked");
    }
    let mut child = command.spawn().expect("spawn the publisher");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(sequence) = line
                .strip_prefix("durable ")
                .and_then(|text| text.parse().ok())
                && sender.send(sequence).is_err()
            {
                return;
            }
        }
    });
    (child, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_sigkill_and_restart() {
    let kills = cycles(5);
    let scratch = short_tempdir();
    let socket = scratch.path().join("broker.sock");
    let wal = scratch.path().join("wal");
    let mut broker_config = BrokerConfig::new(&socket);
    // The replay after the outage comes as one burst; room for it in the subscriber's queue.
    broker_config.subscriber_queue_max_messages = 1 << 20;
    broker_config.subscriber_queue_max_bytes = 1 << 30;
    let broker = Broker::start(broker_config).await.expect("start broker");
    let mut received = subscribe(&socket).await;

    let mut highest_reported = 0;
    let mut reported = 0u64;
    for cycle in 0..kills {
        let (mut child, mut durable) = start_publisher(&wal, &socket, 1_000_000, false);
        let wanted = durable_before_kill(cycle);
        let mut seen = 0;
        while seen < wanted {
            let sequence = guarded("durable lines", durable.recv())
                .await
                .expect("the publisher exited before it was killed");
            highest_reported = highest_reported.max(sequence);
            seen += 1;
        }
        child.kill().expect("SIGKILL the publisher");
        child.wait().expect("reap the publisher");
        // Lines it printed before dying were durable too.
        while let Ok(sequence) = durable.try_recv() {
            highest_reported = highest_reported.max(sequence);
            seen += 1;
        }
        reported += seen;
    }
    // A last publisher runs to the end and waits until the broker acknowledged everything,
    // including the backlog the killed ones left in the WAL.
    let (mut child, mut durable) = start_publisher(&wal, &socket, 200, true);
    let mut last = 0;
    while let Some(sequence) = guarded("durable lines", durable.recv()).await {
        last = last.max(sequence);
        reported += 1;
    }
    let status = guarded("final publisher", async {
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
    })
    .await
    .expect("wait for the final publisher");
    assert!(status.success(), "the final publisher failed: {status}");

    let mut order = Order::starting_at(1);
    while order.highest < last {
        match guarded("subscriber", received.recv()).await {
            Some(sequence) => order.see(sequence),
            None => break,
        }
    }
    let stats = broker.stats();
    broker.shutdown().await;
    let pass = order.is_exact_through(last) && highest_reported <= last;
    verdict(
        "publisher-kill",
        pass,
        &format!(
            "kills={kills} reported_durable={reported} highest_durable_before_last_start={highest_reported} delivered={} repeated={} missing={} last={last} broker_duplicates_dropped={}",
            order.received, order.repeated, order.missing, stats.events_duplicate
        ),
    );
}
