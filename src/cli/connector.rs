//! `procmond-wal connector-load` (hidden): drives the event bus connector from many
//! concurrent publishers and reports publish→durable and publish→acknowledged rates, with
//! the same load on the WAL alone in the same run for comparison. Also the child process of
//! the connector's crash tests (`--print-durable` prints each durable sequence at once).
//!
//! Owns only the measurement and its report; the connector and WAL are the library's.
//! Without `--socket`, a reference broker runs in this process on a temporary socket.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use procmond_wal::broker::{Broker, BrokerConfig};
use procmond_wal::event_bus_connector::ConnectorConfig;
use procmond_wal::wal::format::encode_event;
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalStats};
use procmond_wal::{EventBusConnector, EventKind, ProcessEvent};
use serde::Serialize;
use tokio::task::JoinSet;

use super::load::BackendArg;
use super::{EXIT_FAILED, EXIT_OK};

/// Arguments of `procmond-wal connector-load`.
#[derive(Debug, clap::Args)]
pub struct ConnectorLoadArgs {
    /// WAL directory (created if missing). Default: a temporary directory, removed after.
    #[arg(long)]
    pub wal: Option<PathBuf>,
    /// Broker socket. Default: a reference broker in this process on a temporary socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Events to publish in total.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Concurrent publisher tasks (each with `--in-flight` calls in flight).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub publishers: u64,
    /// Events per call: 1 uses `enqueue` (one event per call); more uses `enqueue_batch`
    /// (for the connector and for the WAL alone).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Calls each publisher keeps in flight at once: it enqueues until this many receipts
    /// are outstanding, then awaits the oldest (pipelining from one caller, no task per call).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub in_flight: u64,
    /// Approximate stored event size in bytes.
    #[arg(long, default_value_t = 256)]
    pub event_bytes: usize,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Print `durable SEQ` on stdout as each publish resolves (crash tests).
    #[arg(long)]
    pub print_durable: bool,
    /// Do not wait for the broker to acknowledge everything at the end.
    #[arg(long)]
    pub no_wait_acked: bool,
    /// Also run the same load on the WAL alone (a second temporary directory).
    #[arg(long)]
    pub compare_wal_only: bool,
}

/// One run's figures.
#[derive(Debug, Serialize)]
struct Figures {
    events: u64,
    publishers: u64,
    batch: u64,
    in_flight: u64,
    event_bytes: usize,
    seconds_to_durable: f64,
    durable_events_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds_to_acked: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked_events_per_s: Option<f64>,
    /// CPU time of the ring thread (WAL writer, hand-over, link) per event, in µs, until
    /// the end of the run: everything acknowledged (durable with `--no-wait-acked`, and for
    /// the WAL alone). Less disturbed by a loaded machine than the rates.
    ring_cpu_us_per_event: f64,
    /// CPU time of the whole process (all threads) per event, in µs, over the same span.
    process_cpu_us_per_event: f64,
    /// Records per `fdatasync` in this log (events and checkpoints): how much the calls in
    /// flight shared each group commit.
    records_per_sync: f64,
    /// Mean time a publisher spent inside `enqueue`/`enqueue_batch` per call (preparing and
    /// handing over), in µs.
    enqueue_us_per_call: f64,
    /// Mean time a publisher spent awaiting a receipt per call, in µs: with one call in
    /// flight, the time from handing it over until it is durable and the caller runs again.
    await_us_per_call: f64,
    /// Median group write and `fdatasync` latency of this log (`WalStats`), in µs.
    write_latency_p50_us: u64,
    sync_latency_p50_us: u64,
}

/// Time the publishers of one run spent in their calls, summed over publishers.
#[derive(Debug, Clone, Copy, Default)]
struct CallTimes {
    calls: u64,
    enqueue_ns: u128,
    await_ns: u128,
}

impl CallTimes {
    fn add(self, other: CallTimes) -> CallTimes {
        CallTimes {
            calls: self.calls + other.calls,
            enqueue_ns: self.enqueue_ns + other.enqueue_ns,
            await_ns: self.await_ns + other.await_ns,
        }
    }

    fn per_call_us(ns: u128, calls: u64) -> f64 {
        ns as f64 / 1000.0 / calls.max(1) as f64
    }
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    connector: Figures,
    /// Events that did not fit in the publish buffer and were read back from the WAL.
    spilled_total: u64,
    read_back_from_wal: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_only: Option<Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acked_vs_wal_only: Option<f64>,
}

/// Runs the load; exit 0 on success, 2 with a one-line reason otherwise.
pub fn run(args: ConnectorLoadArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(load(args)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(reason) => fail(&reason),
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("procmond-wal connector-load: {reason}");
    ExitCode::from(EXIT_FAILED)
}

fn backend_choice(backend: BackendArg) -> BackendChoice {
    match backend {
        BackendArg::Auto => BackendChoice::Auto,
        BackendArg::Uring => BackendChoice::Uring,
        BackendArg::Portable => BackendChoice::Portable,
    }
}

/// An event whose stored record is about `event_bytes` long.
fn sized_event(event_bytes: usize) -> ProcessEvent {
    let mut event = ProcessEvent::new(4242, "load", chrono::Utc::now());
    event.command_line = vec!["/usr/bin/load".into(), String::new()];
    let base = encode_event(&event).map(|bytes| bytes.len()).unwrap_or(0);
    event.command_line[1] = "x".repeat(event_bytes.saturating_sub(base));
    event
}

/// Event number `index` of a run (pid and kind vary; the size does not).
fn numbered(template: &ProcessEvent, index: u64) -> (ProcessEvent, EventKind) {
    let mut event = template.clone();
    event.pid = u32::try_from(index).unwrap_or(u32::MAX);
    (event, EventKind::ALL[(index % 3) as usize])
}

async fn load(args: ConnectorLoadArgs) -> Result<(), String> {
    let scratch = tempfile::Builder::new()
        .prefix("pwc")
        .tempdir_in("/tmp")
        .map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    let mut broker = None;
    let socket = match &args.socket {
        Some(socket) => socket.clone(),
        None => {
            let socket = scratch.path().join("broker.sock");
            let handle = Broker::start(BrokerConfig::new(&socket))
                .await
                .map_err(|error| format!("cannot start the broker: {error}"))?;
            broker = Some(handle);
            socket
        }
    };
    let wal_dir = args
        .wal
        .clone()
        .unwrap_or_else(|| scratch.path().join("connector-wal"));
    let backend = backend_choice(args.backend);
    let mut wal_config = WalConfig::new(&wal_dir);
    wal_config.backend = backend;
    let config = ConnectorConfig::new(&wal_dir)
        .with_wal_config(wal_config)
        .with_socket_path(&socket);
    let connector = EventBusConnector::with_config(config)
        .await
        .map_err(|error| error.to_string())?;
    connector
        .connect()
        .await
        .map_err(|error| error.to_string())?;
    let template = sized_event(args.event_bytes);
    let cpu_at_start = CpuSample::take();
    let started = Instant::now();
    let (highest, call_times) =
        drive(&args, Target::Connector(connector.clone()), &template).await?;
    let durable_seconds = started.elapsed().as_secs_f64();
    let acked_seconds = if args.no_wait_acked {
        None
    } else {
        connector
            .acknowledged(highest)
            .await
            .map_err(|error| error.to_string())?;
        Some(started.elapsed().as_secs_f64())
    };
    let connector_cpu = CpuSample::take().since(cpu_at_start);
    let stats = connector.stats();
    let backend_name = stats.wal.backend.to_string();
    connector
        .shutdown()
        .await
        .map_err(|error| error.to_string())?;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    let connector_figures = figures(
        &args,
        durable_seconds,
        acked_seconds,
        connector_cpu,
        &stats.wal,
        call_times,
    );
    let wal_only = if args.compare_wal_only {
        Some(wal_only(&args, &scratch.path().join("wal-only"), backend, &template).await?)
    } else {
        None
    };
    let acked_vs_wal_only = match (&wal_only, connector_figures.acked_events_per_s) {
        (Some(wal), Some(acked)) => Some(acked / wal.durable_events_per_s),
        _ => None,
    };
    let report = Report {
        backend: backend_name,
        connector: connector_figures,
        spilled_total: stats.spilled_total,
        read_back_from_wal: stats.read_back_from_wal,
        wal_only,
        acked_vs_wal_only,
    };
    if !args.print_durable {
        let text = serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?;
        println!("{text}");
    }
    Ok(())
}

/// CPU time (ns) of the ring thread(s) alive now and of the whole process.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    ring_ns: u64,
    process_ns: u64,
}

impl CpuSample {
    fn take() -> CpuSample {
        let mut ring_ns = 0;
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                // The kernel keeps 15 bytes of a thread's name.
                if comm.trim_end().starts_with("procmond-wal-ri") {
                    ring_ns += schedstat_ns(&task.path().join("schedstat"));
                }
            }
        }
        CpuSample {
            ring_ns,
            process_ns: process_cpu_ns(),
        }
    }

    /// CPU spent since `earlier`, assuming the ring thread then is the one now (or gone
    /// only after `self` was taken).
    fn since(self, earlier: CpuSample) -> CpuSample {
        CpuSample {
            ring_ns: self.ring_ns.saturating_sub(earlier.ring_ns),
            process_ns: self.process_ns.saturating_sub(earlier.process_ns),
        }
    }
}

/// The first field of a schedstat file: nanoseconds on a CPU (0 if unreadable).
fn schedstat_ns(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of the whole process (all threads) in ns, from `getrusage`.
fn process_cpu_ns() -> u64 {
    // SAFETY: `getrusage` writes into the zeroed struct we own; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage
    };
    let ns = |time: libc::timeval| time.tv_sec as u64 * 1_000_000_000 + time.tv_usec as u64 * 1000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

fn figures(
    args: &ConnectorLoadArgs,
    durable_seconds: f64,
    acked_seconds: Option<f64>,
    cpu: CpuSample,
    wal: &WalStats,
    call_times: CallTimes,
) -> Figures {
    let events = args.events as f64;
    Figures {
        events: args.events,
        publishers: args.publishers,
        batch: args.batch,
        in_flight: args.in_flight,
        event_bytes: args.event_bytes,
        seconds_to_durable: durable_seconds,
        durable_events_per_s: events / durable_seconds.max(1e-9),
        seconds_to_acked: acked_seconds,
        acked_events_per_s: acked_seconds.map(|seconds| events / seconds.max(1e-9)),
        ring_cpu_us_per_event: cpu.ring_ns as f64 / 1000.0 / events,
        process_cpu_us_per_event: cpu.process_ns as f64 / 1000.0 / events,
        records_per_sync: wal.records_per_sync,
        enqueue_us_per_call: CallTimes::per_call_us(call_times.enqueue_ns, call_times.calls),
        await_us_per_call: CallTimes::per_call_us(call_times.await_ns, call_times.calls),
        write_latency_p50_us: wal.write_latency_p50_us,
        sync_latency_p50_us: wal.sync_latency_p50_us,
    }
}

/// The same publishers appending to the WAL alone.
async fn wal_only(
    args: &ConnectorLoadArgs,
    dir: &std::path::Path,
    backend: BackendChoice,
    template: &ProcessEvent,
) -> Result<Figures, String> {
    let mut config = WalConfig::new(dir);
    config.backend = backend;
    let (wal, _) = tokio::task::spawn_blocking(move || Wal::open(config))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let wal = Arc::new(wal);
    let cpu_at_start = CpuSample::take();
    let started = Instant::now();
    let (_, call_times) = drive(args, Target::Wal(Arc::clone(&wal)), template).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuSample::take().since(cpu_at_start);
    let stats = wal.stats();
    let wal = Arc::try_unwrap(wal).map_err(|_| "WAL handle still shared".to_owned())?;
    wal.close().await.map_err(|error| error.to_string())?;
    Ok(figures(args, seconds, None, cpu, &stats, call_times))
}

/// What the publishers drive: the connector, or the WAL alone for comparison.
#[derive(Clone)]
enum Target {
    Connector(EventBusConnector),
    Wal(Arc<Wal>),
}

/// A call's receipt: resolves to the highest sequence of the call once it is durable.
type Receipt = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl Target {
    /// Hands one call's events over (`enqueue` for one event, `enqueue_batch` for more) and
    /// returns its receipt.
    async fn submit(&self, mut events: Vec<(ProcessEvent, EventKind)>) -> Result<Receipt, String> {
        let single = if events.len() == 1 {
            events.pop()
        } else {
            None
        };
        Ok(match (self, single) {
            (Target::Connector(connector), Some((event, kind))) => {
                let receipt = connector.enqueue(event, kind).await.map_err(text)?;
                Box::pin(async move { receipt.await.map_err(text) })
            }
            (Target::Connector(connector), None) => {
                let receipt = connector.enqueue_batch(events).await.map_err(text)?;
                Box::pin(async move {
                    let sequences = receipt.await.map_err(text)?;
                    Ok(sequences.last().copied().unwrap_or(0))
                })
            }
            (Target::Wal(wal), Some((event, kind))) => {
                let receipt = wal.enqueue(event, kind).await.map_err(text)?;
                Box::pin(async move { receipt.await.map_err(text) })
            }
            (Target::Wal(wal), None) => {
                let receipt = wal.enqueue_batch(events).await.map_err(text)?;
                Box::pin(async move { receipt.await.map(|range| *range.end()).map_err(text) })
            }
        })
    }
}

/// Runs `--publishers` tasks, each keeping `--in-flight` calls of `--batch` events in flight
/// on `target`; returns the highest durable sequence.
///
/// A publisher awaits its receipts in the order it made the calls (they resolve in that
/// order), in a FIFO inside its task: no task per call, so the harness costs the same
/// little for the connector and for the WAL alone.
async fn drive(
    args: &ConnectorLoadArgs,
    target: Target,
    template: &ProcessEvent,
) -> Result<(u64, CallTimes), String> {
    let mut publishers = JoinSet::new();
    let per_publisher = args.events.div_ceil(args.publishers);
    let print = args.print_durable;
    for publisher in 0..args.publishers {
        let target = target.clone();
        let template = template.clone();
        let count = per_publisher.min(args.events.saturating_sub(publisher * per_publisher));
        let batch = args.batch;
        let in_flight = usize::try_from(args.in_flight).unwrap_or(usize::MAX);
        publishers.spawn(async move {
            let mut highest = 0;
            let mut index = 0;
            let mut pending: VecDeque<Receipt> = VecDeque::new();
            let mut times = CallTimes::default();
            while index < count || !pending.is_empty() {
                if index < count && pending.len() < in_flight {
                    let size = batch.min(count - index);
                    let events = (index..index + size)
                        .map(|i| numbered(&template, i))
                        .collect::<Vec<_>>();
                    index += size;
                    // Timed from the call on: making up the events is the harness's own cost.
                    let entered = Instant::now();
                    pending.push_back(target.submit(events).await?);
                    times.enqueue_ns += entered.elapsed().as_nanos();
                    times.calls += 1;
                    continue;
                }
                let Some(receipt) = pending.pop_front() else {
                    break;
                };
                let waiting = Instant::now();
                let sequence = receipt.await?;
                times.await_ns += waiting.elapsed().as_nanos();
                if print {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "durable {sequence}").and_then(|()| out.flush());
                }
                highest = highest.max(sequence);
            }
            Ok::<(u64, CallTimes), String>((highest, times))
        });
    }
    let mut highest = 0;
    let mut times = CallTimes::default();
    while let Some(joined) = publishers.join_next().await {
        let (publisher_highest, publisher_times) = joined.map_err(text)??;
        highest = highest.max(publisher_highest);
        times = times.add(publisher_times);
    }
    Ok((highest, times))
}
