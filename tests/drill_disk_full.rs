//! Drill: the WAL's filesystem fills up (a small tmpfs) while no broker is reachable, so
//! nothing can be acknowledged and no segment can be deleted. Publishing must fail with a
//! clear error naming the cause and the file; nothing made durable before may be lost;
//! once the filesystem has room again (remounted larger) publishing works again without a
//! restart, and when a broker appears every durable event reaches it, once and in order.
//!
//! Needs permission to mount tmpfs (root outside a restricted container); where mounting is
//! refused the drill prints why and passes without running (there is nothing to measure).
//! `DRILL_CYCLES` sets how many fill/grow cycles are made (`scripts/drill-disk-full.sh N`).

mod drill_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use drill_support::{
    Order, config, cycles, event, guarded, kind, short_tempdir, subscribe, verdict,
};
use procmond_wal::broker::{Broker, BrokerConfig};
use procmond_wal::{EventBusConnector, EventBusConnectorError, ProcessEvent};

/// Size of the tmpfs at first; each cycle grows it by this much again.
const STEP_MIB: u64 = 3;
/// Segment size: a few segments fill the filesystem.
const SEGMENT_MAX_BYTES: u64 = 1024 * 1024;
/// Events per publish call. A batch may fail part-way; the error then names the durable
/// prefix, which is delivered like the rest.
const BATCH_EVENTS: u64 = 16;
/// Most events published while waiting for the disk to fill (a filesystem that never
/// fills is a failure, not a hang).
const FILL_LIMIT_EVENTS: u64 = 200_000;

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if output.status.success() {
            Ok(Tmpfs {
                path: path.to_owned(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn resize(&self, size_mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount the tmpfs larger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a failed drill may still hold files open there.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Publishes events `first..first + BATCH_EVENTS` as one batch; returns the highest durable
/// sequence among them (0: none) and the error, if any.
async fn publish_batch(
    connector: &EventBusConnector,
    first: u64,
) -> (u64, Option<EventBusConnectorError>) {
    let batch = (first..first + BATCH_EVENTS)
        .map(|index| (sized_event(index), kind(index)))
        .collect();
    match connector.publish_batch(batch).await {
        Ok(sequences) => (*sequences.last().expect("a batch"), None),
        Err(error) => {
            let durable = match &error {
                EventBusConnectorError::Wal(wal_error) => wal_error
                    .durable_batch_prefix()
                    .map_or(0, |prefix| *prefix.end()),
                _ => 0,
            };
            (durable, Some(error))
        }
    }
}

fn sized_event(index: u64) -> ProcessEvent {
    let mut event = event(index);
    event.command_line.push("y".repeat(900));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_disk_full_then_space_returns() {
    let fills = cycles(2);
    let scratch = short_tempdir();
    let mount_point = scratch.path().join("fs");
    let tmpfs = match Tmpfs::mount(&mount_point, STEP_MIB) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            println!("drill disk-full: SKIP {reason}");
            return;
        }
    };
    let socket = scratch.path().join("broker.sock");
    let wal_dir = mount_point.join("wal");
    let mut connector_config = config(&wal_dir, &socket);
    connector_config.wal.segment_max_bytes = SEGMENT_MAX_BYTES;
    let connector = EventBusConnector::with_config(connector_config)
        .await
        .expect("open connector");
    // No broker yet: the link keeps trying; nothing is acknowledged, nothing deleted.
    connector
        .connect()
        .await
        .expect("connect (broker absent is not an error)");

    let mut next = 0;
    let mut last_durable = 0;
    let mut errors = Vec::new();
    let mut durable_when_full = Vec::new();
    let mut size_mib = STEP_MIB;
    for _ in 0..fills {
        // Fill: publish until the WAL refuses.
        let error = loop {
            assert!(
                next < FILL_LIMIT_EVENTS * fills,
                "the filesystem never filled"
            );
            let (highest, error) = publish_batch(&connector, next).await;
            next += BATCH_EVENTS;
            last_durable = last_durable.max(highest);
            if let Some(error) = error {
                break error;
            }
        };
        let text = error.to_string();
        assert!(
            matches!(error, EventBusConnectorError::Wal(_)),
            "a WAL error: {error:?}"
        );
        assert!(
            text.contains("No space left on device") && text.contains(&*wal_dir.to_string_lossy()),
            "the error names the cause and the file: {text}"
        );
        errors.push(text);
        durable_when_full.push(last_durable);
        // Room again: the same process carries on.
        size_mib += STEP_MIB;
        tmpfs.resize(size_mib);
        let (highest, error) = publish_batch(&connector, next).await;
        next += BATCH_EVENTS;
        assert!(
            error.is_none(),
            "publishing works again once there is room: {error:?}"
        );
        last_durable = last_durable.max(highest);
    }

    // A broker appears: everything durable is delivered, once and in order.
    let mut broker_config = BrokerConfig::new(&socket);
    // The replay after the outage comes as one burst; room for it in the subscriber's queue.
    broker_config.subscriber_queue_max_messages = 1 << 20;
    broker_config.subscriber_queue_max_bytes = 1 << 30;
    let broker = Broker::start(broker_config).await.expect("start broker");
    let mut received = subscribe(&socket).await;
    connector.replay_wal().await.expect("nudge the link");
    if tokio::time::timeout(drill_support::GUARD, connector.acknowledged(last_durable))
        .await
        .is_err()
    {
        panic!(
            "not acknowledged through {last_durable}: {:#?}",
            connector.stats()
        );
    }
    let mut order = Order::starting_at(1);
    while order.highest < last_durable {
        match guarded("subscriber", received.recv()).await {
            Some(sequence) => order.see(sequence),
            None => break,
        }
    }
    connector.shutdown().await.expect("shutdown");
    broker.shutdown().await;
    let pass = order.is_exact_through(last_durable) && errors.len() as u64 == fills;
    verdict(
        "disk-full",
        pass,
        &format!(
            "fills={fills} durable={last_durable} delivered={} repeated={} missing={} durable_when_full={durable_when_full:?} final_size_mib={size_mib} first_error={:?}",
            order.received,
            order.repeated,
            order.missing,
            errors.first()
        ),
    );
}
