//! Configuration errors are typed and clear; a broker that is not running is not an error.
//!
//! One test function: it changes the process environment, which must not happen while
//! other threads of this binary read it.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use broker_support::short_tempdir;
use procmond_wal::event_bus_connector::{BROKER_SOCKET_ENV, ConnectorConfig};
use procmond_wal::wal::{BackendChoice, WalConfig};
use procmond_wal::{EventBusConnector, EventBusConnectorError};

fn env_config(wal_dir: &Path) -> ConnectorConfig {
    let mut wal = WalConfig::new(wal_dir);
    wal.backend = BackendChoice::Portable;
    ConnectorConfig::new(wal_dir).with_wal_config(wal)
}

fn set_env(value: Option<&std::ffi::OsStr>) {
    // SAFETY: this binary's only test runs on one thread while it changes the environment,
    // and no other thread reads it meanwhile (the connector reads it in `connect`, called
    // from this thread).
    unsafe {
        match value {
            Some(value) => std::env::set_var(BROKER_SOCKET_ENV, value),
            None => std::env::remove_var(BROKER_SOCKET_ENV),
        }
    }
}

#[test]
fn every_configuration_error_is_typed_and_an_absent_broker_is_not_one() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = short_tempdir();
    runtime.block_on(async {
        let connector = EventBusConnector::with_config(env_config(&dir.path().join("wal")))
            .await
            .expect("start");

        set_env(None);
        assert!(matches!(
            connector.connect().await,
            Err(EventBusConnectorError::SocketEnvUnset {
                variable: "DAEMONEYE_BROKER_SOCKET"
            })
        ));
        assert!(matches!(
            ConnectorConfig::from_env(dir.path()),
            Err(EventBusConnectorError::SocketEnvUnset { .. })
        ));
        set_env(Some("".as_ref()));
        assert!(matches!(
            connector.connect().await,
            Err(EventBusConnectorError::SocketEnvEmpty { .. })
        ));
        assert!(matches!(
            ConnectorConfig::from_env(dir.path()),
            Err(EventBusConnectorError::SocketEnvEmpty { .. })
        ));
        set_env(Some("/run/daemoneye/broker.sock".as_ref()));
        let from_env = ConnectorConfig::from_env(dir.path()).expect("set");
        assert_eq!(
            from_env.socket,
            procmond_wal::event_bus_connector::SocketSource::Path(
                "/run/daemoneye/broker.sock".into()
            )
        );
        let long = format!("/tmp/{}", "s".repeat(200));
        set_env(Some(long.as_ref()));
        let error = connector.connect().await.expect_err("too long");
        assert!(matches!(
            error,
            EventBusConnectorError::SocketPathTooLong {
                path_bytes: 205,
                max_bytes: 107,
                ..
            }
        ));
        assert!(error.to_string().contains("at most 107"), "{error}");

        let file = dir.path().join("regular-file");
        std::fs::write(&file, b"not a socket").expect("write");
        set_env(Some(file.as_os_str()));
        assert!(matches!(
            connector.connect().await,
            Err(EventBusConnectorError::NotASocket { .. })
        ));
        let below_file = file.join("broker.sock");
        set_env(Some(below_file.as_os_str()));
        assert!(matches!(
            connector.connect().await,
            Err(EventBusConnectorError::NotASocket { .. })
        ));

        // Not running yet (nothing there) and a stale socket (nobody accepting): not errors.
        set_env(Some(dir.path().join("later.sock").as_os_str()));
        connector
            .connect()
            .await
            .expect("a broker that is not running is fine");
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        set_env(Some(stale.as_os_str()));
        connector
            .connect()
            .await
            .expect("a stale socket is an outage, not an error");
        assert!(!connector.is_connected());
        connector.shutdown().await.expect("shutdown");
        assert!(matches!(
            connector.connect().await,
            Err(EventBusConnectorError::ShutDown)
        ));
        set_env(None);

        // A damaged publisher id file is an error (never a silently new identity), and the
        // WAL opened on the way is closed again.
        let damaged = dir.path().join("damaged-wal");
        std::fs::create_dir(&damaged).expect("mkdir");
        std::fs::write(damaged.join("publisher-id"), "two words\n").expect("write");
        assert!(matches!(
            EventBusConnector::with_config(env_config(&damaged)).await,
            Err(EventBusConnectorError::PublisherId { .. })
        ));
        std::fs::write(damaged.join("publisher-id"), "procmond-fixed\n").expect("write");
        let reopened = EventBusConnector::with_config(env_config(&damaged))
            .await
            .expect("the directory lock was released");
        assert_eq!(reopened.publisher_id(), "procmond-fixed");
        reopened.shutdown().await.expect("shutdown");
    });
    permission_denied(dir.path(), &runtime);
}

/// A socket this process may not use. Root bypasses permission checks, so as root the
/// check runs in a child process with an unprivileged user id.
fn permission_denied(dir: &Path, runtime: &tokio::runtime::Runtime) {
    let private = dir.join("private");
    std::fs::create_dir(&private).expect("mkdir");
    let socket = private.join("broker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // SAFETY: `geteuid` has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        use std::os::unix::process::CommandExt;
        let wal = dir.join("nobody-wal");
        std::fs::create_dir(&wal).expect("mkdir");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .args(["connector-load", "--events", "1", "--backend", "portable"])
            .arg("--wal")
            .arg(&wal)
            .arg("--socket")
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run as nobody");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("permission denied on broker socket"),
            "{stderr}"
        );
    } else {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        runtime.block_on(async {
            let connector = EventBusConnector::with_config(
                env_config(&dir.join("wal2")).with_socket_path(&socket),
            )
            .await
            .expect("start");
            assert!(matches!(
                connector.connect().await,
                Err(EventBusConnectorError::PermissionDenied { .. })
            ));
            connector.shutdown().await.expect("shutdown");
        });
    }
}
