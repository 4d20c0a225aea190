//! Broker integration tests with misbehaving peers and bad paths: garbage and oversized
//! frames close only the offending connection, protocol misuse is refused, and socket path
//! problems are clear start-up errors (exit code 2) that touch nothing.

mod broker_support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use broker_support::{BrokerProcess, GUARD, event, short_tempdir};
use procmond_wal::EventKind;
use procmond_wal::broker::client::TestClient;
use procmond_wal::wire::control::MAX_PUBLISHER_ID_BYTES;
use procmond_wal::wire::{Hello, Subscribe};

#[tokio::test]
async fn a_garbage_spewing_client_is_disconnected_and_others_keep_working() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut good = TestClient::connect(&broker.socket).await.expect("connect");
        good.hello("good").await.expect("welcome");
        good.publish(1, EventKind::Start, &event(1))
            .await
            .expect("publish");
        good.wait_for_ack(1).await.expect("ack");

        let mut bad = TestClient::connect(&broker.socket).await.expect("connect");
        // A plausible length followed by bytes that are no envelope.
        let mut garbage = 40u32.to_le_bytes().to_vec();
        garbage.extend((0..40u8).map(|byte| byte.wrapping_mul(97) ^ 0xff));
        bad.send_raw(&garbage).await.expect("send garbage");
        bad.wait_until_closed()
            .await
            .expect("bad client disconnected");

        good.publish(2, EventKind::Stop, &event(1))
            .await
            .expect("publish");
        assert_eq!(good.wait_for_ack(2).await.expect("ack").highest_sequence, 2);
        good.ping().await.expect("pong");
    })
    .await
    .expect("test finished within the guard");
    let line = broker.wait_for_stderr("closing connection");
    assert!(line.contains("malformed input"), "{line}");
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_its_body() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut client = TestClient::connect(&broker.socket).await.expect("connect");
        let claim = (1u32 << 20) + 1;
        client
            .send_raw(&claim.to_le_bytes())
            .await
            .expect("send prefix");
        client.wait_until_closed().await.expect("disconnected");
        let mut other = TestClient::connect(&broker.socket).await.expect("connect");
        other.ping().await.expect("broker still serves");
    })
    .await
    .expect("test finished within the guard");
    let line = broker.wait_for_stderr("exceeds the limit");
    assert!(line.contains("1048577"), "{line}");
}

#[tokio::test]
async fn protocol_misuse_closes_the_connection() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        // Hello after an event.
        let mut late = TestClient::connect(&broker.socket).await.expect("connect");
        late.publish(1, EventKind::Start, &event(1))
            .await
            .expect("publish");
        let hello = Hello {
            publisher_id: "late".into(),
            protocol_version: 1,
        };
        late.send_control(&hello).await.expect("send hello");
        late.wait_until_closed().await.expect("closed");
        // Unknown protocol version.
        let mut future = TestClient::connect(&broker.socket).await.expect("connect");
        let hello = Hello {
            publisher_id: "future".into(),
            protocol_version: 99,
        };
        future.send_control(&hello).await.expect("send hello");
        future.wait_until_closed().await.expect("closed");
        // Invalid subscription pattern.
        let mut subscriber = TestClient::connect(&broker.socket).await.expect("connect");
        let subscribe = Subscribe {
            patterns: vec!["events.#.start".into()],
        };
        subscriber
            .send_control(&subscribe)
            .await
            .expect("send subscribe");
        subscriber.wait_until_closed().await.expect("closed");
        // An over-long publisher id is refused by the client-side encoder already.
        let mut client = TestClient::connect(&broker.socket).await.expect("connect");
        assert!(
            client
                .hello(&"x".repeat(MAX_PUBLISHER_ID_BYTES + 1))
                .await
                .is_err()
        );
    })
    .await
    .expect("test finished within the guard");
    broker.wait_for_stderr("hello must be the first message");
    broker.wait_for_stderr("unsupported protocol version 99");
    broker.wait_for_stderr("misplaced wildcard");
}

#[test]
fn the_socket_and_its_new_parent_are_private() {
    let dir = short_tempdir();
    let socket = dir.path().join("new").join("b.sock");
    let _broker = BrokerProcess::start(&socket, &[]);
    let parent_mode = std::fs::metadata(dir.path().join("new"))
        .expect("parent")
        .permissions()
        .mode();
    assert_eq!(parent_mode & 0o777, 0o700);
    let metadata = std::fs::symlink_metadata(&socket).expect("socket");
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_second_broker_on_a_live_socket_is_refused() {
    let dir = short_tempdir();
    let socket = dir.path().join("b.sock");
    let _first = BrokerProcess::start(&socket, &[]);
    let failure = BrokerProcess::try_start(&socket, &[])
        .err()
        .expect("second broker refused");
    assert_eq!(failure.status.code(), Some(2));
    assert!(
        failure.stderr.contains("another process is listening"),
        "{}",
        failure.stderr
    );
}

#[test]
fn socket_path_errors_exit_with_code_2_and_a_reason() {
    let dir = short_tempdir();

    let too_long = dir.path().join("x".repeat(120));
    let failure = BrokerProcess::try_start(&too_long, &[])
        .err()
        .expect("too long refused");
    assert_eq!(failure.status.code(), Some(2));
    assert!(
        failure.stderr.contains("the limit is 107"),
        "{}",
        failure.stderr
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").expect("write file");
    let under_file = file.join("sub").join("b.sock");
    let failure = BrokerProcess::try_start(&under_file, &[])
        .err()
        .expect("uncreatable parent refused");
    assert_eq!(failure.status.code(), Some(2));
    assert!(
        failure.stderr.contains("cannot create directory"),
        "{}",
        failure.stderr
    );

    let failure = BrokerProcess::try_start(&file, &[])
        .err()
        .expect("regular file refused");
    assert_eq!(failure.status.code(), Some(2));
    assert!(
        failure.stderr.contains("is not a socket"),
        "{}",
        failure.stderr
    );
    assert_eq!(std::fs::read(&file).expect("file still there"), b"keep me");

    let state_file = dir.path().join("state-file");
    std::fs::write(&state_file, b"").expect("write file");
    let state_arg = state_file.to_str().expect("utf-8 path");
    let failure = BrokerProcess::try_start(&dir.path().join("c.sock"), &["--state-dir", state_arg])
        .err()
        .expect("state dir that is a file refused");
    assert_eq!(failure.status.code(), Some(2));
}

#[tokio::test]
async fn a_frame_of_exactly_one_mebibyte_is_accepted() {
    use procmond_wal::wire::MAX_FRAME_BODY_BYTES;
    use procmond_wal::wire::payload::event_message;
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut subscriber = TestClient::connect(&broker.socket).await.expect("connect");
        subscriber
            .subscribe(&["events.#"])
            .await
            .expect("subscribe");
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        publisher.hello("big").await.expect("welcome");
        let mut message = event_message(
            "big",
            1,
            EventKind::Start,
            &event(1),
            procmond_wal::wire::WireTime::EPOCH,
        )
        .expect("encode");
        message.payload.clear();
        let empty_payload_bytes = message.encode().expect("encode").len();
        // The payload's length prefix grows from 1 byte (0) to 3 bytes (about 1 MiB).
        message.payload = vec![0x5a; MAX_FRAME_BODY_BYTES - (empty_payload_bytes - 1) - 3];
        let frame = message.encode_frame().expect("exactly 1 MiB fits");
        assert_eq!(frame.len(), 4 + MAX_FRAME_BODY_BYTES);
        publisher.send_raw(&frame).await.expect("send");
        // The ack waits until the subscriber's socket holds the whole frame, which is more
        // than a socket buffer: the subscriber reads meanwhile.
        let (ack, delivered) = tokio::join!(publisher.wait_for_ack(1), subscriber.next_event());
        assert_eq!(ack.expect("ack").highest_sequence, 1);
        assert_eq!(
            delivered.expect("delivered").payload.len(),
            message.payload.len()
        );
    })
    .await
    .expect("test finished within the guard");
}
