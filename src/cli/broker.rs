//! `procmond-wal broker`: runs the reference broker in the foreground.
//!
//! Owns argument parsing, the runtime, the readiness line (`listening on PATH` on stderr,
//! which tests wait for) and clean shutdown on SIGINT/SIGTERM. Start-up errors exit with
//! code 2 and a one-line reason.

use std::path::PathBuf;
use std::process::ExitCode;

use procmond_wal::broker::{Broker, BrokerConfig};
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for start-up errors (bad path, state directory, configuration).
const EXIT_STARTUP_ERROR: u8 = 2;

/// Arguments of `procmond-wal broker`.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Unix socket path to listen on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Print every received event as one JSON line on stdout.
    #[arg(long)]
    pub print: bool,
    /// Directory where each publisher's high-water mark is persisted.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Runs the broker until SIGINT/SIGTERM.
pub fn run(args: BrokerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return startup_error(&format!("cannot start the async runtime: {error}")),
    };
    runtime.block_on(serve(args))
}

async fn serve(args: BrokerArgs) -> ExitCode {
    let mut config = BrokerConfig::new(args.socket);
    config.state_dir = args.state_dir;
    config.print_events = args.print;
    // Registered before binding so a signal right after the readiness line is not lost.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(error), _) | (_, Err(error)) => {
            return startup_error(&format!("cannot install signal handlers: {error}"));
        }
    };
    let broker = match Broker::start(config).await {
        Ok(broker) => broker,
        Err(error) => return startup_error(&error.to_string()),
    };
    eprintln!("listening on {}", broker.socket_path().display());
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    let stats = broker.stats();
    broker.shutdown().await;
    tracing::info!(?stats, "final counters");
    ExitCode::SUCCESS
}

fn startup_error(reason: &str) -> ExitCode {
    eprintln!("procmond-wal broker: {reason}");
    ExitCode::from(EXIT_STARTUP_ERROR)
}
