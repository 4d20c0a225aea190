//! `procmond-wal run`: the product end to end. A source (this host's processes through
//! /proc, or synthetic load) publishes through the event bus connector, which makes every
//! event durable in the WAL and delivers it to a broker: the one named by
//! `DAEMONEYE_BROKER_SOCKET`, or, when that is unset, a reference broker started in this
//! process on a private socket with a subscriber that prints each event.
//!
//! Owns the command's arguments, start-up order, the status loop, the stop sequence and
//! the exit code. Submodules: [`paths`] (where files live), [`pump`] (source → connector),
//! [`subscriber`] (the printing subscriber), [`status`] (live line), [`summary`] (end
//! figures and exit code, pure).
//!
//! Stop sequence (the end of `--duration`, SIGINT or SIGTERM): stop the source, wait for
//! accepted events to be durable, shut the connector down (it delivers what is pending for
//! up to `--drain-timeout`), let the subscriber catch up, stop the broker, print the
//! summary. Exit 0 when nothing is outstanding, 1 when anything is (or failed), 2 when it
//! could not run. A second signal during the stop sequence exits at once with 1
//! (unacknowledged events stay in the WAL and are delivered at the next start).

pub mod paths;
pub mod pump;
pub mod status;
pub mod subscriber;
pub mod summary;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use procmond_wal::EventBusConnector;
use procmond_wal::broker::{Broker, BrokerConfig, BrokerHandle};
use procmond_wal::event_bus_connector::{BROKER_SOCKET_ENV, ConnectorConfig, ConnectorStats};
use procmond_wal::source::proc::{ProcPoller, ProcPollerConfig};
use procmond_wal::source::synthetic::{Rate, SyntheticConfig, SyntheticSource};
use procmond_wal::wal::{BackendChoice, WalConfig};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use super::load::BackendArg;
use super::{EXIT_FAILED, EXIT_PROBLEM};
use pump::{PumpCounters, PumpEnd, Source};
use status::{Console, RateMeter, StatusSample};
use subscriber::{PrintFormat, SubscriberState};
use summary::Summary;

/// Longest wait for the embedded subscriber to receive the last acknowledged event after
/// shutdown; only turns a lost subscriber into a reported shortfall instead of a hang.
const SUBSCRIBER_CATCH_UP_GUARD: Duration = Duration::from_secs(10);

/// Frames the embedded broker queues for its subscriber before cutting it off.
const EMBEDDED_SUBSCRIBER_QUEUE_MESSAGES: usize = 64 * 1024;

/// Bytes of frames the embedded broker queues for its subscriber.
const EMBEDDED_SUBSCRIBER_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Which source feeds the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// This host's processes, by polling /proc.
    Proc,
    /// Generated events at `--rate` of `--event-bytes` each.
    Synthetic,
}

/// Arguments of `procmond-wal run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// WAL directory (created with mode 0700 if missing). Default:
    /// $XDG_STATE_HOME/procmond-wal/wal, or ~/.local/state/procmond-wal/wal when
    /// XDG_STATE_HOME is unset.
    #[arg(long)]
    pub wal_dir: Option<PathBuf>,
    /// Where events come from.
    #[arg(long, value_enum, default_value_t = SourceArg::Proc)]
    pub source: SourceArg,
    /// Time between two /proc polls (×1.5 while the connector reports backpressure).
    /// Processes that start and exit between two polls are not seen.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Synthetic events per second, or `max`.
    #[arg(long, default_value = "1000")]
    pub rate: Rate,
    /// Synthetic event size in bytes (as stored in the WAL).
    #[arg(long, default_value_t = 256)]
    pub event_bytes: u64,
    /// Seed of the synthetic events.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this long (e.g. `10s`, `5m`). Default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How the embedded broker's subscriber prints events on stdout.
    #[arg(long, value_enum, default_value_t = PrintFormat::Auto)]
    pub print_events: PrintFormat,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// How long shutdown may spend delivering what is still unacknowledged.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Publish buffer limit in bytes (backpressure at 70 %, released at 50 %).
    #[arg(long, default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub buffer_max_bytes: u64,
    /// I/O backend of the WAL.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

/// Runs the command; see the module documentation for the exit codes.
pub fn run(args: RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    let code = runtime.block_on(run_async(args));
    // The subscriber's read and the broker's tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("procmond-wal run: error: {reason}");
    ExitCode::from(EXIT_FAILED)
}

fn could_not_run(reason: impl std::fmt::Display) -> u8 {
    eprintln!("procmond-wal run: error: {reason}");
    EXIT_FAILED
}

/// The embedded broker and what belongs to it.
struct Embedded {
    broker: BrokerHandle,
    subscriber: Arc<SubscriberState>,
    task: tokio::task::JoinHandle<()>,
    // Removed (with the socket) when dropped, after the broker stopped.
    _socket_dir: tempfile::TempDir,
}

/// Why the run stopped.
async fn wait_for_stop(
    duration: Option<Duration>,
    interrupt: &mut Signal,
    terminate: &mut Signal,
    pump: &mut tokio::task::JoinHandle<PumpEnd>,
    status: impl std::future::Future<Output = ()>,
) -> (&'static str, Option<PumpEnd>) {
    let timer = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = timer => ("duration", None),
        _ = interrupt.recv() => ("SIGINT", None),
        _ = terminate.recv() => ("SIGTERM", None),
        end = &mut *pump => ("error", Some(end.unwrap_or(PumpEnd::Failed))),
        () = status => ("error", None),
    }
}

fn backend_choice(backend: BackendArg) -> BackendChoice {
    match backend {
        BackendArg::Auto => BackendChoice::Auto,
        BackendArg::Uring => BackendChoice::Uring,
        BackendArg::Portable => BackendChoice::Portable,
    }
}

fn build_source(args: &RunArgs) -> Result<Source, String> {
    match args.source {
        SourceArg::Proc => {
            let config = ProcPollerConfig {
                poll_interval_ms: u64::try_from(args.poll_interval.as_millis()).unwrap_or(u64::MAX),
                ..ProcPollerConfig::default()
            };
            ProcPoller::new(&config)
                .map(|poller| Source::Proc(Box::new(poller)))
                .map_err(|error| format!("cannot watch /proc: {error}"))
        }
        SourceArg::Synthetic => {
            let config = SyntheticConfig {
                seed: args.seed,
                rate: args.rate,
                event_bytes: args.event_bytes,
                ..SyntheticConfig::default()
            };
            SyntheticSource::new(&config)
                .map(|source| Source::Synthetic(Box::new(source)))
                .map_err(|error| format!("cannot start the synthetic source: {error}"))
        }
    }
}

/// Human lines on a terminal, JSON otherwise; nothing for synthetic load or `--json`.
fn print_format(args: &RunArgs) -> PrintFormat {
    match args.print_events {
        PrintFormat::Auto if args.json || args.source == SourceArg::Synthetic => PrintFormat::None,
        PrintFormat::Auto if std::io::stdout().is_terminal() => PrintFormat::Human,
        PrintFormat::Auto => PrintFormat::Json,
        chosen => chosen,
    }
}

/// Events of this run (sequences from `first`) that are at or below `through`.
fn run_events_through(through: u64, first: u64, durable: u64) -> u64 {
    (through + 1).saturating_sub(first).min(durable)
}

async fn run_async(args: RunArgs) -> u8 {
    let started = Instant::now();
    // Registered first, so a signal during start-up is not lost.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
        (Err(error), _) | (_, Err(error)) => {
            return could_not_run(format!("cannot install signal handlers: {error}"));
        }
    };
    let wal_dir = match &args.wal_dir {
        Some(dir) => dir.clone(),
        None => match paths::default_wal_dir_from_env() {
            Ok(dir) => dir,
            Err(error) => return could_not_run(error),
        },
    };
    if let Err(error) = paths::create_private_dir(&wal_dir) {
        return could_not_run(error);
    }
    let source = match build_source(&args) {
        Ok(source) => source,
        Err(reason) => return could_not_run(reason),
    };
    let format = print_format(&args);

    // The broker: external when named, else embedded with its subscriber.
    let external = std::env::var_os(BROKER_SOCKET_ENV).filter(|value| !value.is_empty());
    let mut wal_config = WalConfig::new(&wal_dir);
    wal_config.backend = backend_choice(args.backend);
    let mut config = ConnectorConfig::new(&wal_dir)
        .with_wal_config(wal_config)
        .with_drain_timeout(args.drain_timeout)
        .with_buffer_max_bytes(usize::try_from(args.buffer_max_bytes).unwrap_or(usize::MAX));
    let mut embedded_parts = None;
    let broker_name = match &external {
        Some(path) => PathBuf::from(path).display().to_string(),
        None => {
            let socket_dir = match paths::private_socket_dir() {
                Ok(dir) => dir,
                Err(error) => return could_not_run(error),
            };
            let socket = socket_dir.path().join("broker.sock");
            let mut broker_config = BrokerConfig::new(&socket);
            // Room for bursts of synthetic load while the subscriber catches up; bounded
            // (at most this many bytes of queued frames) like every broker queue.
            broker_config.subscriber_queue_max_messages = EMBEDDED_SUBSCRIBER_QUEUE_MESSAGES;
            broker_config.subscriber_queue_max_bytes = EMBEDDED_SUBSCRIBER_QUEUE_BYTES;
            let broker = match Broker::start(broker_config).await {
                Ok(broker) => broker,
                Err(error) => return could_not_run(format!("cannot start the broker: {error}")),
            };
            if let Err(error) = paths::restrict(&socket, paths::PRIVATE_SOCKET_MODE) {
                broker.shutdown().await;
                return could_not_run(error);
            }
            let client = match subscriber::subscribe(&socket).await {
                Ok(client) => client,
                Err(error) => {
                    broker.shutdown().await;
                    return could_not_run(format!("cannot subscribe to the broker: {error}"));
                }
            };
            config = config.with_socket_path(&socket);
            embedded_parts = Some((broker, client, socket_dir));
            format!("embedded ({})", socket.display())
        }
    };

    let connector = match EventBusConnector::with_config(config).await {
        Ok(connector) => connector,
        Err(error) => {
            if let Some((broker, _, _)) = embedded_parts {
                broker.shutdown().await;
            }
            return could_not_run(format!(
                "cannot open the WAL in {}: {error}",
                wal_dir.display()
            ));
        }
    };
    let at_open = connector.stats();
    let first_run_sequence = at_open.wal.next_sequence;
    let backlog_at_start = at_open
        .wal
        .durable_sequence
        .saturating_sub(at_open.acked_through);
    let Some(backpressure) = connector.take_backpressure_receiver() else {
        return could_not_run("the backpressure receiver was already taken");
    };
    // The live line starts once nothing can fail before the run loop but the first connect.
    let console = Console::new(!args.json && std::io::stderr().is_terminal());
    let embedded = embedded_parts.map(|(broker, client, socket_dir)| {
        let state = SubscriberState::new(first_run_sequence);
        let task = tokio::spawn(subscriber::run(
            client,
            Arc::clone(&state),
            format,
            console.clone(),
        ));
        Embedded {
            broker,
            subscriber: state,
            task,
            _socket_dir: socket_dir,
        }
    });
    if let Err(error) = connector.connect().await {
        console.finish();
        let _ = connector.shutdown().await;
        if let Some(embedded) = embedded {
            embedded.broker.shutdown().await;
        }
        return could_not_run(format!("cannot connect to the broker: {error}"));
    }
    console.note(&format!(
        "procmond-wal run: {} source → WAL {} → broker {}{}",
        match args.source {
            SourceArg::Proc => "/proc",
            SourceArg::Synthetic => "synthetic",
        },
        wal_dir.display(),
        broker_name,
        if backlog_at_start > 0 {
            format!(" ({backlog_at_start} unacknowledged events from an earlier run first)")
        } else {
            String::new()
        }
    ));

    let counters = Arc::new(PumpCounters::default());
    let (stop_sender, stop) = watch::channel(false);
    let mut pump_task = tokio::spawn(pump::pump(
        source,
        connector.clone(),
        backpressure,
        stop,
        Arc::clone(&counters),
        console.clone(),
    ));

    let sample = |stats: &ConnectorStats, rate: f64| {
        let durable = stats
            .wal
            .durable_sequence
            .saturating_sub(first_run_sequence.saturating_sub(1));
        StatusSample {
            durable,
            delivered: embedded.as_ref().map(|e| e.subscriber.received()),
            acknowledged: run_events_through(stats.acked_through, first_run_sequence, durable),
            buffer_percent: stats.buffer_usage_percent,
            backpressure: stats.backpressure_active,
            link: stats.link_state,
            events_per_s: rate,
        }
    };
    let status_loop = async {
        let period = if console.is_terminal() {
            status::TERMINAL_REFRESH
        } else {
            status::PLAIN_INTERVAL
        };
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut meter = RateMeter::new(Instant::now());
        loop {
            ticker.tick().await;
            let stats = connector.stats();
            let durable = stats
                .wal
                .durable_sequence
                .saturating_sub(first_run_sequence.saturating_sub(1));
            let rate = meter.sample(durable, Instant::now());
            console.show(&sample(&stats, rate));
        }
    };
    let (stopped_by, pump_end) = wait_for_stop(
        args.duration,
        &mut interrupt,
        &mut terminate,
        &mut pump_task,
        status_loop,
    )
    .await;

    // Stop sequence; a second signal cuts it short.
    let stop_sequence = async {
        let _ = stop_sender.send(true);
        let pump_end = match pump_end {
            Some(end) => end,
            None => pump_task.await.unwrap_or(PumpEnd::Failed),
        };
        console.note(&format!(
            "procmond-wal run: stopping ({stopped_by}); delivering what is pending (up to {})",
            humantime::format_duration(args.drain_timeout)
        ));
        let shutdown_error = connector.shutdown().await.err();
        let stats = connector.stats();
        let subscriber = match &embedded {
            Some(embedded) => {
                // Everything acknowledged has been routed; wait until it was received.
                let caught_up = tokio::time::timeout(
                    SUBSCRIBER_CATCH_UP_GUARD,
                    embedded.subscriber.wait_for(stats.acked_through),
                )
                .await;
                if caught_up.is_err() {
                    console.note("procmond-wal run: the subscriber did not receive every acknowledged event in time");
                }
                Some(embedded.subscriber.figures())
            }
            None => None,
        };
        (pump_end, shutdown_error, stats, subscriber)
    };
    let outcome = tokio::select! {
        outcome = stop_sequence => Some(outcome),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    console.finish();
    let Some((pump_end, shutdown_error, stats, subscriber)) = outcome else {
        eprintln!(
            "procmond-wal run: second signal: exiting now; unacknowledged events stay in the WAL and are delivered at the next start"
        );
        return EXIT_PROBLEM;
    };
    if let Some(embedded) = embedded {
        embedded.broker.shutdown().await;
        embedded.task.abort();
    }
    if let Some(error) = &shutdown_error {
        eprintln!("procmond-wal run: shutdown: {error}");
    }

    let seconds = started.elapsed().as_secs_f64();
    let durable = stats
        .wal
        .durable_sequence
        .saturating_sub(first_run_sequence.saturating_sub(1));
    let observed = counters.observed.load(Relaxed);
    let summary = Summary {
        source: match args.source {
            SourceArg::Proc => "proc",
            SourceArg::Synthetic => "synthetic",
        },
        broker: broker_name,
        wal_dir: wal_dir.display().to_string(),
        seconds,
        observed,
        durable,
        delivered: subscriber.map(|figures| figures.received),
        acknowledged: run_events_through(stats.acked_through, first_run_sequence, durable),
        outstanding: stats
            .wal
            .durable_sequence
            .saturating_sub(stats.acked_through),
        publish_failures: observed.saturating_sub(durable),
        first_error: counters.first_error(),
        backlog_at_start,
        events_per_s: durable as f64 / seconds.max(1e-9),
        backpressure_activations: counters.activations.load(Relaxed),
        spilled: stats.spilled_total,
        connections: stats.connections,
        legacy_broker: stats.legacy_broker,
        proc: counters.proc_figures(),
        subscriber,
        stopped_by: if pump_end == PumpEnd::Failed {
            "error"
        } else {
            stopped_by
        },
    };
    if args.json {
        match serde_json::to_string(&summary) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("procmond-wal run: cannot format the summary: {error}"),
        }
    } else {
        eprint!("{}", summary.to_text());
    }
    summary.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_events_are_counted_from_the_first_sequence_of_the_run() {
        // Sequences 11..=20 belong to this run (10 durable).
        assert_eq!(run_events_through(0, 11, 10), 0);
        assert_eq!(run_events_through(10, 11, 10), 0);
        assert_eq!(run_events_through(11, 11, 10), 1);
        assert_eq!(run_events_through(20, 11, 10), 10);
        assert_eq!(run_events_through(25, 11, 10), 10);
        assert_eq!(run_events_through(5, 1, 0), 0);
    }
}
