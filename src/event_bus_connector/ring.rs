//! The connector's side of the ring thread: what the WAL's ring-task hook starts.
//!
//! Owns the wiring of the ring-side tasks — hand-over ([`super::ingest`]), link
//! ([`super::link`]), checkpointer ([`super::checkpoint`]) and the backpressure signal
//! forwarder — and the order they stop in: the link drains, the checkpointer writes the
//! final checkpoint, then the ring task ends (before the WAL closes, as the hook requires).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::backpressure::{BackpressureSignal, Hysteresis};
use super::buffer::PublishBuffer;
use super::checkpoint::{self, Cadence};
use super::config::ConnectorConfig;
use super::core::Core;
use super::ingest::{self, Ingest};
use super::link::{Link, LinkCommand, LinkSettings, TokioDialer, UringDialer};
use super::stats::Shared;
use crate::io::BackendKind;
use crate::wal::Wal;

/// Everything the ring task needs, sent once the WAL is open.
pub(crate) struct RingSetup {
    pub wal: Wal,
    pub config: ConnectorConfig,
    pub publisher_id: Arc<str>,
    pub shared: Arc<Shared>,
    /// The newest checkpoint found at open.
    pub acked_at_open: u64,
    /// Unacknowledged events found at open: first, last, their frame bytes.
    pub backlog: Option<(u64, u64, u64)>,
    pub ingest: mpsc::UnboundedReceiver<Ingest>,
    pub commands: mpsc::UnboundedReceiver<LinkCommand>,
    pub backpressure: mpsc::Sender<BackpressureSignal>,
    pub acked: watch::Sender<u64>,
    pub jitter_seed: u64,
}

/// The hook for [`Wal::open_with_ring_task`]: waits for the setup, then runs.
pub(crate) fn ring_task(setup: oneshot::Receiver<RingSetup>) -> crate::wal::RingTask {
    Box::new(move |backend: BackendKind| {
        Box::pin(async move {
            // No setup: opening failed after the WAL started; nothing to do.
            if let Ok(setup) = setup.await {
                run(setup, backend).await;
            }
        })
    })
}

async fn run(setup: RingSetup, backend: BackendKind) {
    let RingSetup {
        wal,
        config,
        publisher_id,
        shared,
        acked_at_open,
        backlog,
        ingest: ingest_receiver,
        commands,
        backpressure,
        acked,
        jitter_seed,
    } = setup;
    let mut buffer = PublishBuffer::new(config.buffer_max_bytes, acked_at_open);
    if let Some((first, last, frame_bytes)) = backlog {
        buffer.add_backlog(first, last, frame_bytes);
    }
    let hysteresis = Hysteresis::new(
        config.backpressure_activate_percent,
        config.backpressure_release_percent,
    );
    let acked_receiver = acked.subscribe();
    let core = Rc::new(RefCell::new(Core::new(
        buffer,
        hysteresis,
        config.buffer_max_bytes,
        Arc::clone(&shared),
        acked,
        publisher_id,
    )));
    let forwarder = tokio::task::spawn_local(forward_signals(Rc::clone(&core), backpressure));
    let (stop_checkpoints, stop_receiver) = watch::channel(false);
    let checkpointer = tokio::task::spawn_local(checkpoint::run(
        wal.clone(),
        acked_receiver,
        stop_receiver,
        Cadence {
            every_events: config.checkpoint_every_events,
            interval: Duration::from_millis(config.checkpoint_interval_ms),
        },
        Arc::clone(&shared),
    ));
    let hand_over = tokio::task::spawn_local(ingest::run(ingest_receiver, Rc::clone(&core)));
    let settings = LinkSettings {
        hello_timeout: Duration::from_millis(config.hello_timeout_ms),
        reconnect_base_ms: config.reconnect_base_ms,
        reconnect_cap_ms: config.reconnect_cap_ms,
        jitter_seed,
        wal_dir: config.wal.dir.clone(),
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
    };
    let done = match backend {
        BackendKind::Uring => {
            Link::new(
                UringDialer,
                Rc::clone(&core),
                commands,
                settings,
                wal.clone(),
            )
            .run()
            .await
        }
        // Portable, and the test-only simulated disk: the socket goes through tokio's reactor.
        _ => {
            Link::new(
                TokioDialer,
                Rc::clone(&core),
                commands,
                settings,
                wal.clone(),
            )
            .run()
            .await
        }
    };
    let _ = stop_checkpoints.send(true);
    let _ = checkpointer.await;
    forwarder.abort();
    drop(wal);
    for waiter in done {
        let _ = waiter.send(());
    }
    // The hand-over ends when every handle is gone; it holds no WAL handle, so it never
    // keeps the log open. Receipts it still waits for are answered as the writer drains.
    drop(hand_over);
}

/// Delivers backpressure signals in order; waits while the receiver's channel is full.
async fn forward_signals(core: Rc<RefCell<Core>>, sender: mpsc::Sender<BackpressureSignal>) {
    let wake = Rc::clone(&core.borrow().wake_signals);
    loop {
        let signal = core.borrow_mut().next_signal();
        match signal {
            Some(signal) => {
                // A dropped receiver only means nobody listens; the state stays queryable.
                let _ = sender.send(signal).await;
            }
            None => wake.notified().await,
        }
    }
}
