//! The same-run comparison harness (docs/benchmarks.md): runs this WAL and its
//! references — the disk's own limit, a naive mutex+fdatasync WAL, and okaywal — back to back
//! in one process with the same event bytes and publisher counts, then prints every result,
//! the target ratios, and writes it all as JSON for `docs/benchmarks.md` and
//! `scripts/plot-throughput.py`.
//!
//! `cargo bench --bench compare` runs the quick profile (about a minute). Settings:
//! - `--full` (or `PROCMOND_WAL_BENCH_FULL=1`): 3 s per run and larger byte budgets.
//! - `PROCMOND_WAL_BENCH_SECONDS`: seconds per run (overrides the profile).
//! - `PROCMOND_WAL_BENCH_BACKEND`: `uring` (default), `portable` or `both`.
//! - `PROCMOND_WAL_BENCH_SIZES`, `PROCMOND_WAL_BENCH_PUBLISHERS`: comma lists.
//! - `PROCMOND_WAL_BENCH_WINDOW`: appends in flight per pipelined publisher (default 64).
//! - `PROCMOND_WAL_BENCH_SECTIONS`: any of `targets,disk,matrix,replay,sweep,e2e` (default
//!   all). `e2e`: publish → broker acknowledgement through the event bus connector against
//!   the reference broker (on its own thread and runtime in this process), each run right
//!   after the same workload on the WAL alone; `PROCMOND_WAL_BENCH_E2E_SIZES` (default
//!   `256,4096`), `PROCMOND_WAL_BENCH_E2E_PUBLISHERS` (default `1,16`) and
//!   `PROCMOND_WAL_BENCH_E2E_MODES` (`await,batch`; `batch` = WINDOW events per call).
//!   Quick end-to-end only: `PROCMOND_WAL_BENCH_SECTIONS=e2e cargo bench --bench compare`.
//! - `PROCMOND_WAL_BENCH_SYSTEMS`: matrix systems, any of `wal,naive,okaywal` (default all);
//!   `PROCMOND_WAL_BENCH_MODES`: WAL publisher modes, any of `await,pipelined,batch` (default
//!   all; `batch` = `append_batch` of WINDOW events, awaited).
//! - `PROCMOND_WAL_BENCH_ROUNDS`: interleaved rounds of the target section (3; full: 5).
//!
//! The target ratios come from the `targets` section: the machine is shared, so each
//! reference runs right before the WAL run it is divided into, the pair is repeated, and the
//! median of the per-round ratios is reported (every round's figures are in the JSON).
//! - `PROCMOND_WAL_BENCH_DIR`: where files are written; `PROCMOND_WAL_BENCH_OUT`: where the
//!   JSON goes (`compare-<PROCMOND_WAL_BENCH_LABEL or latest>.json`).

mod support;

use std::process::ExitCode;
use std::time::Duration;

use procmond_wal::io::Preallocation;
use procmond_wal::wal::BackendChoice;
use serde::Serialize;

use support::disk::{DiskResult, FileState, human_bytes, write_sync_loop};
use support::e2e::EndToEndResult;
use support::events::{EVENT_SIZES_BYTES, event_of_size};
use support::walrun::{ReplayResult, base_config, preallocation_name};
use support::{
    BenchError, BenchResult, RunResult, Workload, backend_name, backends_from_env, list_from_env,
    scratch_dir, seconds_from_env,
};

const PUBLISHER_COUNTS: [usize; 4] = [1, 4, 16, 64];
const SECTIONS: [&str; 6] = ["targets", "disk", "matrix", "replay", "sweep", "e2e"];
/// End to end: the sizes and publisher counts the connector is measured at by default.
const E2E_SIZES: [usize; 2] = [256, 4096];
const E2E_PUBLISHERS: [usize; 2] = [1, 16];
/// End-to-end events/s must reach this share of the WAL alone at 16 publishers.
const E2E_REQUIRED_RATIO: f64 = 0.7;
const MIB: u64 = 1024 * 1024;

struct Settings {
    full: bool,
    run_duration: Duration,
    event_sizes: Vec<usize>,
    publisher_counts: Vec<usize>,
    window: usize,
    /// Interleaved rounds of the target measurements.
    rounds: usize,
    backends: Vec<BackendChoice>,
    sections: Vec<String>,
    /// Systems the matrix runs.
    systems: Vec<String>,
    /// The WAL's publisher modes in the matrix: `await`, `pipelined`, `batch`.
    modes: Vec<String>,
    /// End to end: event sizes, publisher counts and publisher modes (`await`, `batch`).
    e2e_sizes: Vec<usize>,
    e2e_publishers: Vec<usize>,
    e2e_modes: Vec<String>,
    /// Byte budget of one throughput run (bounds disk use on fast systems).
    run_max_bytes: u64,
    /// Log bytes replayed per measurement.
    replay_max_bytes: u64,
    label: String,
}

impl Settings {
    fn from_env_and_args() -> BenchResult<Settings> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes `--bench` and possibly criterion flags: ignore what is not ours.
        let full = args.iter().any(|arg| arg == "--full")
            || std::env::var("PROCMOND_WAL_BENCH_FULL").is_ok_and(|value| value == "1");
        let default_seconds = if full { 3.0 } else { 0.5 };
        let sections = match std::env::var("PROCMOND_WAL_BENCH_SECTIONS") {
            Ok(value) => {
                let sections: Vec<String> =
                    value.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    return Err(BenchError::Setting {
                        name: "PROCMOND_WAL_BENCH_SECTIONS",
                        value: bad.clone(),
                        expected: "a comma list of targets, disk, matrix, replay, sweep, e2e",
                    });
                }
                sections
            }
            Err(_) => SECTIONS.map(String::from).to_vec(),
        };
        let window = list_from_env("PROCMOND_WAL_BENCH_WINDOW", &[64])?[0];
        let systems = names_from_env("PROCMOND_WAL_BENCH_SYSTEMS", &["wal", "naive", "okaywal"])?;
        let modes = names_from_env("PROCMOND_WAL_BENCH_MODES", &["await", "pipelined", "batch"])?;
        Ok(Settings {
            full,
            run_duration: seconds_from_env("PROCMOND_WAL_BENCH_SECONDS", default_seconds)?,
            event_sizes: list_from_env("PROCMOND_WAL_BENCH_SIZES", &EVENT_SIZES_BYTES)?,
            publisher_counts: list_from_env("PROCMOND_WAL_BENCH_PUBLISHERS", &PUBLISHER_COUNTS)?,
            window,
            rounds: list_from_env("PROCMOND_WAL_BENCH_ROUNDS", &[if full { 5 } else { 3 }])?[0],
            backends: backends_from_env()?,
            sections,
            systems,
            modes,
            e2e_sizes: list_from_env("PROCMOND_WAL_BENCH_E2E_SIZES", &E2E_SIZES)?,
            e2e_publishers: list_from_env("PROCMOND_WAL_BENCH_E2E_PUBLISHERS", &E2E_PUBLISHERS)?,
            e2e_modes: names_from_env("PROCMOND_WAL_BENCH_E2E_MODES", &["await", "batch"])?,
            run_max_bytes: if full { 4096 * MIB } else { 512 * MIB },
            replay_max_bytes: if full { 1024 * MIB } else { 256 * MIB },
            label: label_from_env()?,
        })
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    fn runs_system(&self, system: &str) -> bool {
        self.systems.iter().any(|s| s == system)
    }

    /// The workload of a WAL publisher mode: awaiting each append, `window` receipts in
    /// flight, or `append_batch` of `window` events.
    fn mode_workload(&self, event_bytes: usize, publishers: usize, mode: &str) -> Workload {
        let mut workload = self.workload(event_bytes, publishers, 1);
        match mode {
            "pipelined" => workload.in_flight_per_publisher = self.window,
            "batch" => workload.batch_events = self.window,
            _ => {}
        }
        workload
    }

    fn workload(&self, event_bytes: usize, publishers: usize, window: usize) -> Workload {
        Workload {
            event_bytes,
            publishers,
            in_flight_per_publisher: window,
            batch_events: 1,
            duration: self.run_duration,
            max_events: (self.run_max_bytes / event_bytes as u64).max(1),
        }
    }
}

/// The report label: it becomes part of a file name, so only `[A-Za-z0-9._-]`.
fn label_from_env() -> BenchResult<String> {
    let Ok(label) = std::env::var("PROCMOND_WAL_BENCH_LABEL") else {
        return Ok("latest".into());
    };
    let valid = !label.is_empty()
        && !label.starts_with('.')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(label)
    } else {
        Err(BenchError::Setting {
            name: "PROCMOND_WAL_BENCH_LABEL",
            value: label,
            expected: "letters, digits, '.', '_' or '-' (not starting with '.')",
        })
    }
}

/// A comma list of names from the environment, each one of `allowed`; default `allowed`.
fn names_from_env(name: &'static str, allowed: &[&str]) -> BenchResult<Vec<String>> {
    let Ok(value) = std::env::var(name) else {
        return Ok(allowed.iter().map(|s| s.to_string()).collect());
    };
    let names: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if names.is_empty() || names.iter().any(|n| !allowed.contains(&n.as_str())) {
        return Err(BenchError::Setting {
            name,
            value,
            expected: "a comma list of the documented names",
        });
    }
    Ok(names)
}

/// Where and on what the numbers were measured.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    memory_total_kib: Option<u64>,
    kernel: String,
    filesystem: String,
    device: String,
    bench_dir: String,
    commit: String,
}

/// One benchmark target (docs/benchmarks.md) with its same-run ratio.
#[derive(Debug, Serialize)]
struct TargetRow {
    target: String,
    backend: String,
    measured: String,
    ratio: f64,
    required: f64,
    /// The ratio must be at most `required` (latency) rather than at least.
    at_most: bool,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    full: bool,
    run_seconds: f64,
    window: usize,
    machine: Machine,
    disk: Vec<DiskResult>,
    runs: Vec<RunResult>,
    replay: Vec<ReplayResult>,
    sweeps: Vec<RunResult>,
    sweep_summary: Vec<SweepSummary>,
    target_rounds: Vec<TargetRound>,
    /// End to end: each connector run with the WAL-only run right before it.
    e2e_rounds: Vec<EndToEndRound>,
    /// End to end: medians over rounds per cell.
    e2e: Vec<EndToEndSummary>,
    targets: Vec<TargetRow>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult<()> {
    let settings = Settings::from_env_and_args()?;
    let root = support::bench_root()?;
    let mut report = Report {
        label: settings.label.clone(),
        full: settings.full,
        run_seconds: settings.run_duration.as_secs_f64(),
        window: settings.window,
        machine: machine(&root),
        disk: Vec::new(),
        runs: Vec::new(),
        replay: Vec::new(),
        sweeps: Vec::new(),
        sweep_summary: Vec::new(),
        target_rounds: Vec::new(),
        e2e_rounds: Vec::new(),
        e2e: Vec::new(),
        targets: Vec::new(),
    };
    println!(
        "procmond-wal compare: {} profile, {:.1} s per run, bench dir {} ({}), commit {}",
        if settings.full { "full" } else { "quick" },
        report.run_seconds,
        root.display(),
        report.machine.filesystem,
        report.machine.commit
    );
    if settings.wants("targets") {
        report.target_rounds = target_rounds(&settings)?;
    }
    if settings.wants("disk") {
        report.disk = disk_references(&settings)?;
    }
    if settings.wants("matrix") {
        report.runs = matrix(&settings)?;
    }
    if settings.wants("replay") {
        report.replay = replays(&settings)?;
    }
    if settings.wants("sweep") {
        (report.sweeps, report.sweep_summary) = sweeps(&settings)?;
    }
    if settings.wants("e2e") {
        report.e2e_rounds = end_to_end_rounds(&settings)?;
        report.e2e = end_to_end_summaries(&report.e2e_rounds);
        print_end_to_end(&report.e2e);
    }
    report.targets = targets(&report, &settings);
    print_targets(&report.targets);
    let out = support::output_dir()?.join(format!("compare-{}.json", settings.label));
    let json = serde_json::to_vec_pretty(&report).map_err(|e| BenchError::Runtime {
        op: "serialise report",
        detail: e.to_string(),
    })?;
    std::fs::write(&out, json).map_err(|e| BenchError::io("write report", &out, e))?;
    println!("\nJSON report: {}", out.display());
    Ok(())
}

fn disk_references(settings: &Settings) -> BenchResult<Vec<DiskResult>> {
    println!("\n## Disk references (O_DIRECT write + fdatasync per block, same filesystem)");
    println!(
        "{:<34} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "reference", "MB/s", "ops/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let dir = scratch_dir("disk-")?;
    let small_file_bytes = 256 * MIB;
    let cases = [
        (1 << 20, settings.run_max_bytes, FileState::Fallocated),
        (1 << 20, settings.run_max_bytes, FileState::Prewritten),
        (4096, small_file_bytes, FileState::Fallocated),
        (4096, small_file_bytes, FileState::Prewritten),
        (4096, small_file_bytes, FileState::Growing),
        (256 * 1024, settings.run_max_bytes, FileState::Fallocated),
    ];
    let mut results = Vec::new();
    for (block_bytes, file_bytes, state) in cases {
        let result = write_sync_loop(
            dir.path(),
            block_bytes,
            file_bytes,
            state,
            settings.run_duration,
        )?;
        println!(
            "{:<34} {:>9.1} {:>10.0} {:>9.1} {:>9.1} {:>9.1}",
            result.name,
            result.mb_per_s,
            result.ops_per_s,
            result.latency.p50_us,
            result.latency.p99_us,
            result.latency.p999_us
        );
        results.push(result);
    }
    for block_bytes in [1 << 20, 4096] {
        let result = support::disk::overlapped_write_sync(
            dir.path(),
            block_bytes,
            settings.run_max_bytes,
            settings.run_duration,
        )?;
        println!(
            "{:<34} {:>9.1} {:>10.0} {:>9.1} {:>9.1} {:>9.1}",
            result.name,
            result.mb_per_s,
            result.ops_per_s,
            result.latency.p50_us,
            result.latency.p99_us,
            result.latency.p999_us
        );
        results.push(result);
    }
    Ok(results)
}

fn print_run_header() {
    println!(
        "{:<8} {:<9} {:<10} {:>6} {:>4} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "system",
        "backend",
        "mode",
        "bytes",
        "pubs",
        "events/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "rec/sync"
    );
}

fn print_run(result: &RunResult) {
    println!(
        "{:<8} {:<9} {:<10} {:>6} {:>4} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8}",
        result.system,
        result.backend.as_deref().unwrap_or("-"),
        if result.variant.is_empty() {
            result.mode.clone()
        } else {
            format!("{}:{}", result.mode, result.variant)
        },
        result.event_bytes,
        result.publishers,
        result.events_per_s,
        result.mb_per_s,
        result.latency.p50_us,
        result.latency.p99_us,
        result.latency.p999_us,
        result
            .records_per_sync
            .map(|r| format!("{r:.1}"))
            .unwrap_or_else(|| "-".into())
    );
}

fn matrix(settings: &Settings) -> BenchResult<Vec<RunResult>> {
    println!("\n## Durable appends (each row: one run; MB/s counts encoded event bytes)");
    print_run_header();
    let mut results = Vec::new();
    for &event_bytes in &settings.event_sizes {
        let event = event_of_size(event_bytes)?;
        for &publishers in &settings.publisher_counts {
            for &backend in &settings.backends {
                if !settings.runs_system("wal") {
                    break;
                }
                for mode in &settings.modes {
                    let dir = scratch_dir("wal-")?;
                    let workload = settings.mode_workload(event_bytes, publishers, mode);
                    let result = support::walrun::run(
                        base_config(dir.path(), backend),
                        "",
                        &workload,
                        &event,
                    )?;
                    print_run(&result);
                    results.push(result);
                }
            }
            let workload = settings.workload(event_bytes, publishers, 1);
            if settings.runs_system("naive") {
                let naive = support::naive::run(&workload, &event)?;
                print_run(&naive);
                results.push(naive);
            }
            if settings.runs_system("okaywal") {
                let okaywal = support::okay::run(&workload, &event)?;
                print_run(&okaywal);
                results.push(okaywal);
            }
        }
    }
    Ok(results)
}

fn replays(settings: &Settings) -> BenchResult<Vec<ReplayResult>> {
    println!("\n## Replay from the page cache (written by 16 pipelined publishers)");
    println!(
        "{:<9} {:>6} {:>10} {:>12} {:>11} {:>13} {:>15}",
        "backend", "bytes", "events", "events/s", "log MB/s", "event MB/s", "whole-dir MB/s"
    );
    let mut results = Vec::new();
    for &backend in &settings.backends {
        for &event_bytes in &settings.event_sizes {
            let event = event_of_size(event_bytes)?;
            let dir = scratch_dir("replay-")?;
            let mut workload = settings.workload(event_bytes, 16, settings.window);
            workload.max_events = (settings.replay_max_bytes / event_bytes as u64).max(1);
            // Writing is not what is measured here: give it time to reach the byte budget.
            workload.duration = workload.duration.max(Duration::from_secs(5));
            support::walrun::run(base_config(dir.path(), backend), "", &workload, &event)?;
            let result = support::walrun::replay(
                dir.path(),
                &backend_name(backend),
                event_bytes,
                workload.max_events,
            )?;
            println!(
                "{:<9} {:>6} {:>10} {:>12.0} {:>11.1} {:>13.1} {:>15.1}",
                result.backend,
                result.event_bytes,
                result.events,
                result.events_per_s,
                result.log_mb_per_s,
                result.event_mb_per_s,
                result.whole_dir_log_mb_per_s
            );
            results.push(result);
        }
    }
    Ok(results)
}

/// A sweep cell's workload: (event bytes, publishers, appends in flight per publisher).
type Shape = (usize, usize, usize);

/// A configuration variant of the sweeps.
#[derive(Clone, Copy)]
enum Variant {
    Preallocation(Preallocation),
    GroupMaxBytes(usize),
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::Preallocation(p) => format!("prealloc={}", preallocation_name(p)),
            Variant::GroupMaxBytes(bytes) => format!("group={}", human_bytes(bytes)),
        }
    }
}

/// The median over rounds of one sweep cell, and its ratio to the default configuration
/// measured in the same round.
#[derive(Debug, Serialize)]
struct SweepSummary {
    variant: String,
    default_variant: String,
    mode: String,
    event_bytes: usize,
    publishers: usize,
    events_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    records_per_sync: f64,
    events_per_s_vs_default: f64,
    p50_vs_default: f64,
}

fn sweeps(settings: &Settings) -> BenchResult<(Vec<RunResult>, Vec<SweepSummary>)> {
    println!(
        "\n## Configuration sweeps (first selected backend, {} interleaved rounds)",
        settings.rounds
    );
    print_run_header();
    let backend = settings.backends[0];
    let small = event_of_size(256)?;
    let large = event_of_size(4096)?;
    let w = settings.window;
    // (variants with the default first, shapes): one awaiting publisher shows commit latency,
    // sixteen awaiting ones show small groups, pipelined ones show throughput.
    let families: [(Vec<Variant>, Vec<Shape>); 2] = [
        (
            vec![
                Variant::Preallocation(Preallocation::Fallocate),
                Variant::Preallocation(Preallocation::ZeroFill),
                Variant::Preallocation(Preallocation::None),
            ],
            vec![(256, 1, 1), (256, 16, 1), (4096, 16, w)],
        ),
        (
            vec![
                Variant::GroupMaxBytes(1024 * 1024),
                Variant::GroupMaxBytes(256 * 1024),
                Variant::GroupMaxBytes(4 * 1024 * 1024),
            ],
            vec![(256, 16, w), (4096, 16, w), (4096, 64, w)],
        ),
    ];
    let mut runs = Vec::new();
    let mut summaries = Vec::new();
    for (variants, shapes) in &families {
        // cells[shape][variant] = one result per round
        let mut cells: Vec<Vec<Vec<RunResult>>> =
            vec![vec![Vec::new(); variants.len()]; shapes.len()];
        for round in 0..settings.rounds {
            for (shape_index, &(event_bytes, publishers, window)) in shapes.iter().enumerate() {
                let event = if event_bytes == 256 { &small } else { &large };
                for (variant_index, &variant) in variants.iter().enumerate() {
                    let dir = scratch_dir("sweep-")?;
                    let mut config = base_config(dir.path(), backend);
                    match variant {
                        Variant::Preallocation(p) => config.preallocation = p,
                        Variant::GroupMaxBytes(bytes) => config.group_max_bytes = bytes,
                    }
                    let workload = settings.workload(event_bytes, publishers, window);
                    let mut result =
                        support::walrun::run(config, &variant.label(), &workload, event)?;
                    result.round = round + 1;
                    print_run(&result);
                    cells[shape_index][variant_index].push(result.clone());
                    runs.push(result);
                }
            }
        }
        for (shape_index, &(event_bytes, publishers, window)) in shapes.iter().enumerate() {
            let default = &cells[shape_index][0];
            for (variant_index, &variant) in variants.iter().enumerate() {
                let cell = &cells[shape_index][variant_index];
                let pick = |f: fn(&RunResult) -> f64| median(cell.iter().map(f).collect());
                summaries.push(SweepSummary {
                    variant: variant.label(),
                    default_variant: variants[0].label(),
                    mode: if window == 1 { "await" } else { "pipelined" }.into(),
                    event_bytes,
                    publishers,
                    events_per_s: pick(|r| r.events_per_s),
                    mb_per_s: pick(|r| r.mb_per_s),
                    p50_us: pick(|r| r.latency.p50_us),
                    p99_us: pick(|r| r.latency.p99_us),
                    records_per_sync: pick(|r| r.records_per_sync.unwrap_or(0.0)),
                    events_per_s_vs_default: median(
                        cell.iter()
                            .zip(default)
                            .map(|(r, d)| r.events_per_s / d.events_per_s)
                            .collect(),
                    ),
                    p50_vs_default: median(
                        cell.iter()
                            .zip(default)
                            .map(|(r, d)| r.latency.p50_us / d.latency.p50_us)
                            .collect(),
                    ),
                });
            }
        }
    }
    println!("\n## Sweep summary (medians over rounds; ratios to the default in the same round)");
    println!(
        "{:<20} {:<10} {:>6} {:>4} {:>11} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "variant",
        "mode",
        "bytes",
        "pubs",
        "events/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "rec/sync",
        "ev/s ÷ dflt",
        "p50 ÷ dflt"
    );
    for s in &summaries {
        println!(
            "{:<20} {:<10} {:>6} {:>4} {:>11.0} {:>9.1} {:>9.0} {:>9.0} {:>9.1} {:>11.2} {:>9.2}",
            s.variant,
            s.mode,
            s.event_bytes,
            s.publishers,
            s.events_per_s,
            s.mb_per_s,
            s.p50_us,
            s.p99_us,
            s.records_per_sync,
            s.events_per_s_vs_default,
            s.p50_vs_default
        );
    }
    Ok((runs, summaries))
}

/// One round of the interleaved target measurements: each reference runs immediately before
/// the WAL run it is compared with, so both see the same machine load.
#[derive(Debug, Serialize)]
struct TargetRound {
    backend: String,
    round: usize,
    disk_1m_fallocated: DiskResult,
    wal_4k_16_pipelined: RunResult,
    naive_256_16: RunResult,
    okaywal_256_16: RunResult,
    wal_256_16_pipelined: RunResult,
    wal_256_16_await: RunResult,
    wal_256_16_batch: RunResult,
    disk_4k_fallocated: DiskResult,
    disk_4k_prewritten: DiskResult,
    wal_256_1_await: RunResult,
}

fn target_rounds(settings: &Settings) -> BenchResult<Vec<TargetRound>> {
    println!(
        "\n## Target measurements ({} interleaved rounds per backend)",
        settings.rounds
    );
    let small = event_of_size(256)?;
    let large = event_of_size(4096)?;
    let mut rounds = Vec::new();
    for &backend in &settings.backends {
        for round in 0..settings.rounds {
            let wal = |event: &procmond_wal::ProcessEvent, workload: &Workload| {
                let dir = scratch_dir("target-")?;
                support::walrun::run(base_config(dir.path(), backend), "", workload, event)
            };
            let disk = |block_bytes: usize, file_bytes: u64, state: FileState| {
                let dir = scratch_dir("disk-")?;
                write_sync_loop(
                    dir.path(),
                    block_bytes,
                    file_bytes,
                    state,
                    settings.run_duration,
                )
            };
            let pipelined = settings.window;
            let disk_1m_fallocated = disk(1 << 20, settings.run_max_bytes, FileState::Fallocated)?;
            let wal_4k_16_pipelined = wal(&large, &settings.workload(4096, 16, pipelined))?;
            let naive_256_16 = support::naive::run(&settings.workload(256, 16, 1), &small)?;
            let okaywal_256_16 = support::okay::run(&settings.workload(256, 16, 1), &small)?;
            let wal_256_16_pipelined = wal(&small, &settings.workload(256, 16, pipelined))?;
            let wal_256_16_await = wal(&small, &settings.workload(256, 16, 1))?;
            let wal_256_16_batch = wal(&small, &settings.mode_workload(256, 16, "batch"))?;
            let disk_4k_fallocated = disk(4096, 256 * MIB, FileState::Fallocated)?;
            let disk_4k_prewritten = disk(4096, 256 * MIB, FileState::Prewritten)?;
            let wal_256_1_await = wal(&small, &settings.workload(256, 1, 1))?;
            println!(
                "{} round {}: 4K×16 {:.0} vs disk {:.0} MB/s | 256B×16 {:.0} (await {:.0}, batch {:.0}) vs naive {:.0}, okaywal {:.0} ev/s | 1-pub p50 {:.0} vs 4K fallocated {:.0}, prewritten {:.0} µs",
                backend_name(backend),
                round + 1,
                wal_4k_16_pipelined.mb_per_s,
                disk_1m_fallocated.mb_per_s,
                wal_256_16_pipelined.events_per_s,
                wal_256_16_await.events_per_s,
                wal_256_16_batch.events_per_s,
                naive_256_16.events_per_s,
                okaywal_256_16.events_per_s,
                wal_256_1_await.latency.p50_us,
                disk_4k_fallocated.latency.p50_us,
                disk_4k_prewritten.latency.p50_us,
            );
            rounds.push(TargetRound {
                backend: backend_name(backend),
                round: round + 1,
                disk_1m_fallocated,
                wal_4k_16_pipelined,
                naive_256_16,
                okaywal_256_16,
                wal_256_16_pipelined,
                wal_256_16_await,
                wal_256_16_batch,
                disk_4k_fallocated,
                disk_4k_prewritten,
                wal_256_1_await,
            });
        }
    }
    Ok(rounds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Target rows: for each target, the median over rounds of the per-round ratio.
fn targets(report: &Report, settings: &Settings) -> Vec<TargetRow> {
    type Ratio = fn(&TargetRound) -> (f64, f64);
    let specs: [(&str, Ratio, f64, bool); 9] = [
        (
            "4 KiB × 16 pipelined pubs: MB/s ÷ disk 1 MiB write+fdatasync (fallocated)",
            |r| {
                (
                    r.wal_4k_16_pipelined.mb_per_s,
                    r.disk_1m_fallocated.mb_per_s,
                )
            },
            0.8,
            false,
        ),
        (
            "256 B × 16 pipelined pubs: events/s ÷ naive WAL",
            |r| {
                (
                    r.wal_256_16_pipelined.events_per_s,
                    r.naive_256_16.events_per_s,
                )
            },
            100.0,
            false,
        ),
        (
            "256 B × 16 awaiting pubs: events/s ÷ naive WAL",
            |r| (r.wal_256_16_await.events_per_s, r.naive_256_16.events_per_s),
            100.0,
            false,
        ),
        (
            "256 B × 16 batching pubs: events/s ÷ naive WAL",
            |r| (r.wal_256_16_batch.events_per_s, r.naive_256_16.events_per_s),
            100.0,
            false,
        ),
        (
            "256 B × 16 batching pubs: events/s ÷ okaywal",
            |r| {
                (
                    r.wal_256_16_batch.events_per_s,
                    r.okaywal_256_16.events_per_s,
                )
            },
            10.0,
            false,
        ),
        (
            "256 B × 16 pipelined pubs: events/s ÷ okaywal",
            |r| {
                (
                    r.wal_256_16_pipelined.events_per_s,
                    r.okaywal_256_16.events_per_s,
                )
            },
            10.0,
            false,
        ),
        (
            "256 B × 16 awaiting pubs: events/s ÷ okaywal",
            |r| {
                (
                    r.wal_256_16_await.events_per_s,
                    r.okaywal_256_16.events_per_s,
                )
            },
            10.0,
            false,
        ),
        (
            "1 awaiting pub, 256 B: p50 ÷ 4 KiB write+fdatasync p50 (fallocated)",
            |r| {
                (
                    r.wal_256_1_await.latency.p50_us,
                    r.disk_4k_fallocated.latency.p50_us,
                )
            },
            1.5,
            true,
        ),
        (
            "1 awaiting pub, 256 B: p50 ÷ 4 KiB write+fdatasync p50 (prewritten)",
            |r| {
                (
                    r.wal_256_1_await.latency.p50_us,
                    r.disk_4k_prewritten.latency.p50_us,
                )
            },
            1.5,
            true,
        ),
    ];
    let mut rows = Vec::new();
    for &backend in &settings.backends {
        let backend = backend_name(backend);
        let rounds: Vec<&TargetRound> = report
            .target_rounds
            .iter()
            .filter(|r| r.backend == backend)
            .collect();
        if !rounds.is_empty() {
            for (target, ratio_of, required, at_most) in specs {
                let pairs: Vec<(f64, f64)> = rounds.iter().map(|r| ratio_of(r)).collect();
                let ratio = median(pairs.iter().map(|(a, b)| a / b).collect());
                let measured = pairs
                    .iter()
                    .map(|(a, b)| format!("{a:.0}/{b:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                rows.push(TargetRow {
                    target: target.into(),
                    backend: backend.clone(),
                    measured,
                    ratio,
                    required,
                    at_most,
                    met: if at_most {
                        ratio <= required
                    } else {
                        ratio >= required
                    },
                });
            }
        }
        for summary in report
            .e2e
            .iter()
            .filter(|s| s.backend == backend && s.publishers == 16)
        {
            let measured = report
                .e2e_rounds
                .iter()
                .filter(|r| {
                    r.backend == summary.backend
                        && r.mode == summary.mode
                        && r.event_bytes == summary.event_bytes
                        && r.publishers == summary.publishers
                })
                .map(|r| {
                    format!(
                        "{:.0}/{:.0}",
                        r.end_to_end.acked_events_per_s, r.wal_only.events_per_s
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            rows.push(TargetRow {
                target: format!(
                    "end to end, {} B × 16 {} pubs: acked events/s ÷ WAL-only events/s",
                    summary.event_bytes,
                    if summary.mode == "batch" {
                        "batching"
                    } else {
                        "awaiting"
                    }
                ),
                backend: backend.clone(),
                measured,
                ratio: summary.acked_vs_wal_only,
                required: E2E_REQUIRED_RATIO,
                at_most: false,
                met: summary.acked_vs_wal_only >= E2E_REQUIRED_RATIO,
            });
        }
        for replay in report.replay.iter().filter(|r| r.backend == backend) {
            rows.push(TargetRow {
                target: format!(
                    "replay from page cache, {} B events: log MB/s ÷ 1000",
                    replay.event_bytes
                ),
                backend: backend.clone(),
                measured: format!("{:.0}", replay.log_mb_per_s),
                ratio: replay.log_mb_per_s / 1000.0,
                required: 1.0,
                at_most: false,
                met: replay.log_mb_per_s >= 1000.0,
            });
        }
    }
    rows
}

/// One end-to-end measurement: the WAL alone, then the connector to the broker, with the
/// same workload, back to back.
#[derive(Debug, Serialize)]
struct EndToEndRound {
    backend: String,
    round: usize,
    mode: String,
    event_bytes: usize,
    publishers: usize,
    wal_only: RunResult,
    end_to_end: EndToEndResult,
    /// Acknowledged events/s ÷ the WAL alone's durable events/s.
    acked_vs_wal_only: f64,
    /// CPU time of this process (every thread: publishers, ring, broker) per event, in µs,
    /// over the whole run including open and close: the WAL alone, and end to end.
    wal_only_cpu_us_per_event: f64,
    end_to_end_cpu_us_per_event: f64,
}

/// Medians over the rounds of one end-to-end cell.
#[derive(Debug, Serialize)]
struct EndToEndSummary {
    backend: String,
    mode: String,
    event_bytes: usize,
    publishers: usize,
    batch_events: usize,
    rounds: usize,
    wal_only_events_per_s: f64,
    durable_events_per_s: f64,
    acked_events_per_s: f64,
    /// Median of the per-round ratios.
    acked_vs_wal_only: f64,
    wal_only_p50_us: f64,
    wal_only_p99_us: f64,
    durable_p50_us: f64,
    durable_p99_us: f64,
    ack_p50_us: f64,
    ack_p99_us: f64,
    ack_p999_us: f64,
    wal_only_cpu_us_per_event: f64,
    end_to_end_cpu_us_per_event: f64,
    spilled_total: u64,
}

fn end_to_end_rounds(settings: &Settings) -> BenchResult<Vec<EndToEndRound>> {
    println!(
        "\n## End to end: publish → broker acknowledgement vs the WAL alone ({} interleaved rounds)",
        settings.rounds
    );
    println!(
        "{:<9} {:>5} {:<6} {:>6} {:>4} {:>12} {:>12} {:>12} {:>7} {:>9} {:>9} {:>9}",
        "backend",
        "round",
        "mode",
        "bytes",
        "pubs",
        "WAL ev/s",
        "durable ev/s",
        "acked ev/s",
        "ratio",
        "WAL p50",
        "ack p50",
        "ack p99"
    );
    let mut rounds = Vec::new();
    let mut events = Vec::new();
    for &bytes in &settings.e2e_sizes {
        events.push((bytes, event_of_size(bytes)?));
    }
    for &backend in &settings.backends {
        for round in 0..settings.rounds {
            for (event_bytes, event) in &events {
                for &publishers in &settings.e2e_publishers {
                    for mode in &settings.e2e_modes {
                        let workload = settings.mode_workload(*event_bytes, publishers, mode);
                        let wal_dir = scratch_dir("e2e-wal-")?;
                        let cpu_before = process_cpu_s();
                        let mut wal_only = support::walrun::run(
                            base_config(wal_dir.path(), backend),
                            "",
                            &workload,
                            event,
                        )?;
                        let wal_only_cpu_s = process_cpu_s() - cpu_before;
                        drop(wal_dir);
                        wal_only.round = round + 1;
                        let connector_dir = scratch_dir("e2e-connector-")?;
                        // Socket paths are limited to 107 bytes: keep the socket in /tmp.
                        let socket_dir = tempfile::Builder::new()
                            .prefix("pwb")
                            .tempdir_in("/tmp")
                            .map_err(|e| {
                                BenchError::io("create socket directory", "/tmp".as_ref(), e)
                            })?;
                        let cpu_before = process_cpu_s();
                        let mut end_to_end = support::e2e::run(
                            base_config(connector_dir.path(), backend),
                            socket_dir.path(),
                            &workload,
                            event,
                        )?;
                        let end_to_end_cpu_s = process_cpu_s() - cpu_before;
                        end_to_end.round = round + 1;
                        let ratio = end_to_end.acked_events_per_s / wal_only.events_per_s;
                        let wal_only_cpu_us_per_event =
                            wal_only_cpu_s * 1e6 / wal_only.events.max(1) as f64;
                        let end_to_end_cpu_us_per_event =
                            end_to_end_cpu_s * 1e6 / end_to_end.events.max(1) as f64;
                        println!(
                            "{:<9} {:>5} {:<6} {:>6} {:>4} {:>12.0} {:>12.0} {:>12.0} {:>7.2} {:>9.0} {:>9.0} {:>9.0}",
                            backend_name(backend),
                            round + 1,
                            mode,
                            event_bytes,
                            publishers,
                            wal_only.events_per_s,
                            end_to_end.durable_events_per_s,
                            end_to_end.acked_events_per_s,
                            ratio,
                            wal_only.latency.p50_us,
                            end_to_end.ack_latency.p50_us,
                            end_to_end.ack_latency.p99_us,
                        );
                        rounds.push(EndToEndRound {
                            backend: backend_name(backend),
                            round: round + 1,
                            mode: mode.clone(),
                            event_bytes: *event_bytes,
                            publishers,
                            wal_only,
                            end_to_end,
                            acked_vs_wal_only: ratio,
                            wal_only_cpu_us_per_event,
                            end_to_end_cpu_us_per_event,
                        });
                    }
                }
            }
        }
    }
    Ok(rounds)
}

/// User + system CPU seconds of this process so far (all threads); 0 if unavailable.
fn process_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer on success; on failure
    // it writes nothing and the zeroed value (all fields integers) is still valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn end_to_end_summaries(rounds: &[EndToEndRound]) -> Vec<EndToEndSummary> {
    let mut summaries: Vec<EndToEndSummary> = Vec::new();
    for first in rounds {
        let same_cell = |r: &&EndToEndRound| {
            r.backend == first.backend
                && r.mode == first.mode
                && r.event_bytes == first.event_bytes
                && r.publishers == first.publishers
        };
        if summaries.iter().any(|s| {
            s.backend == first.backend
                && s.mode == first.mode
                && s.event_bytes == first.event_bytes
                && s.publishers == first.publishers
        }) {
            continue;
        }
        let cell: Vec<&EndToEndRound> = rounds.iter().filter(same_cell).collect();
        let pick = |f: fn(&EndToEndRound) -> f64| median(cell.iter().map(|r| f(r)).collect());
        summaries.push(EndToEndSummary {
            backend: first.backend.clone(),
            mode: first.mode.clone(),
            event_bytes: first.event_bytes,
            publishers: first.publishers,
            batch_events: first.end_to_end.batch_events,
            rounds: cell.len(),
            wal_only_events_per_s: pick(|r| r.wal_only.events_per_s),
            durable_events_per_s: pick(|r| r.end_to_end.durable_events_per_s),
            acked_events_per_s: pick(|r| r.end_to_end.acked_events_per_s),
            acked_vs_wal_only: pick(|r| r.acked_vs_wal_only),
            wal_only_p50_us: pick(|r| r.wal_only.latency.p50_us),
            wal_only_p99_us: pick(|r| r.wal_only.latency.p99_us),
            durable_p50_us: pick(|r| r.end_to_end.durable_latency.p50_us),
            durable_p99_us: pick(|r| r.end_to_end.durable_latency.p99_us),
            ack_p50_us: pick(|r| r.end_to_end.ack_latency.p50_us),
            ack_p99_us: pick(|r| r.end_to_end.ack_latency.p99_us),
            ack_p999_us: pick(|r| r.end_to_end.ack_latency.p999_us),
            wal_only_cpu_us_per_event: pick(|r| r.wal_only_cpu_us_per_event),
            end_to_end_cpu_us_per_event: pick(|r| r.end_to_end_cpu_us_per_event),
            spilled_total: cell.iter().map(|r| r.end_to_end.spilled_total).sum(),
        });
    }
    summaries
}

fn print_end_to_end(summaries: &[EndToEndSummary]) {
    if summaries.is_empty() {
        return;
    }
    println!(
        "\n## End-to-end summary (medians over rounds; ratio = median of per-round ratios; latencies µs; CPU µs per event, whole process)"
    );
    println!(
        "{:<9} {:<6} {:>6} {:>4} {:>12} {:>12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "backend",
        "mode",
        "bytes",
        "pubs",
        "WAL ev/s",
        "acked ev/s",
        "ratio",
        "WAL p50",
        "dur. p50",
        "ack p50",
        "ack p99",
        "WAL cpu",
        "e2e cpu"
    );
    for s in summaries {
        println!(
            "{:<9} {:<6} {:>6} {:>4} {:>12.0} {:>12.0} {:>7.2} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.2} {:>9.2}",
            s.backend,
            s.mode,
            s.event_bytes,
            s.publishers,
            s.wal_only_events_per_s,
            s.acked_events_per_s,
            s.acked_vs_wal_only,
            s.wal_only_p50_us,
            s.durable_p50_us,
            s.ack_p50_us,
            s.ack_p99_us,
            s.wal_only_cpu_us_per_event,
            s.end_to_end_cpu_us_per_event
        );
    }
}

fn print_targets(rows: &[TargetRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\n## Targets (ratios from this run)");
    println!(
        "{:<66} {:<9} {:>26} {:>8} {:>8} {:>5}",
        "target", "backend", "measured", "ratio", "needed", "met"
    );
    for row in rows {
        let needed = if row.at_most {
            format!("≤{}", row.required)
        } else {
            format!("≥{}", row.required)
        };
        println!(
            "{:<66} {:<9} {:>26} {:>8.2} {:>8} {:>5}",
            row.target,
            row.backend,
            row.measured,
            row.ratio,
            needed,
            if row.met { "yes" } else { "NO" }
        );
    }
}

fn machine(bench_dir: &std::path::Path) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let memory_total_kib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok());
    // The mount holding the bench directory: the longest mount point that prefixes it.
    let canonical = bench_dir
        .canonicalize()
        .unwrap_or_else(|_| bench_dir.to_path_buf());
    let mounts = read("/proc/mounts");
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let point = fields.next()?;
            let fstype = fields.next()?;
            canonical
                .starts_with(point)
                .then(|| (point.len(), device.to_string(), fstype.to_string()))
        })
        .max_by_key(|(len, _, _)| *len);
    let (device, filesystem) = mount
        .map(|(_, device, fstype)| (device, fstype))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let commit = std::env::var("PROCMOND_WAL_BENCH_COMMIT").unwrap_or_else(|_| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    });
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_total_kib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        filesystem,
        device,
        bench_dir: bench_dir.display().to_string(),
        commit,
    }
}
