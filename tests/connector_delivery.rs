//! Delivery through the reference broker (a child process on a real socket): topics,
//! exact events and order, redaction, WAL first, broker outages, spill, restarts.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;

use broker_support::{BrokerProcess, short_tempdir};
use connector_support::*;
use procmond_wal::EventBusConnector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_subscriber_on_all_three_topics_exactly_and_in_order() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("broker.sock");
        let _broker = BrokerProcess::start(&socket, &[]);
        let mut subscriber = subscriber(&socket).await;
        let connector =
            EventBusConnector::with_config(config(&dir.path().join("wal"), &socket, backend))
                .await
                .expect("start");
        connector.connect().await.expect("connect");
        let mut sequences = Vec::new();
        for pid in 0..30u32 {
            sequences.push(
                connector
                    .publish(event(pid), kind(pid))
                    .await
                    .expect("publish"),
            );
        }
        for (index, pid) in (0..30u32).enumerate() {
            let (sequence, got_kind, got) = next_event(&mut subscriber).await;
            assert_eq!(sequence, sequences[index], "{backend:?}");
            assert_eq!(got_kind, kind(pid));
            assert_eq!(got, redacted(pid));
        }
        guarded(connector.acknowledged(sequences[29]))
            .await
            .expect("acked");
        let stats = connector.stats();
        assert_eq!(stats.acked_through, sequences[29]);
        assert!(!stats.legacy_broker);
        assert!(connector.is_connected());
        connector.shutdown().await.expect("shutdown");
        assert!(matches!(
            connector.publish(event(99), kind(0)).await,
            Err(procmond_wal::EventBusConnectorError::ShutDown)
        ));
    }
}
