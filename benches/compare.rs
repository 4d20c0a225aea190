//! The same-run comparison harness (issue 3, "Prove the WAL"): runs this WAL and its
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
//! - `PROCMOND_WAL_BENCH_SECTIONS`: any of `disk,matrix,replay,sweep` (default all).
//! - `PROCMOND_WAL_BENCH_DIR`: where files are written; `PROCMOND_WAL_BENCH_OUT`: where the
//!   JSON goes (`compare-<PROCMOND_WAL_BENCH_LABEL or latest>.json`).

mod support;

use std::process::ExitCode;
use std::time::Duration;

use procmond_wal::io::Preallocation;
use procmond_wal::wal::BackendChoice;
use serde::Serialize;

use support::disk::{DiskResult, FileState, human_bytes, write_sync_loop};
use support::events::{EVENT_SIZES_BYTES, event_of_size};
use support::walrun::{ReplayResult, base_config, preallocation_name};
use support::{
    BenchError, BenchResult, RunResult, Workload, backend_name, backends_from_env, list_from_env,
    scratch_dir, seconds_from_env,
};

const PUBLISHER_COUNTS: [usize; 4] = [1, 4, 16, 64];
const MIB: u64 = 1024 * 1024;

struct Settings {
    full: bool,
    run_duration: Duration,
    event_sizes: Vec<usize>,
    publisher_counts: Vec<usize>,
    window: usize,
    backends: Vec<BackendChoice>,
    sections: Vec<String>,
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
                if let Some(bad) = sections
                    .iter()
                    .find(|s| !["disk", "matrix", "replay", "sweep"].contains(&s.as_str()))
                {
                    return Err(BenchError::Setting {
                        name: "PROCMOND_WAL_BENCH_SECTIONS",
                        value: bad.clone(),
                        expected: "a comma list of disk, matrix, replay, sweep",
                    });
                }
                sections
            }
            Err(_) => ["disk", "matrix", "replay", "sweep"]
                .map(String::from)
                .to_vec(),
        };
        let window = list_from_env("PROCMOND_WAL_BENCH_WINDOW", &[64])?[0];
        Ok(Settings {
            full,
            run_duration: seconds_from_env("PROCMOND_WAL_BENCH_SECONDS", default_seconds)?,
            event_sizes: list_from_env("PROCMOND_WAL_BENCH_SIZES", &EVENT_SIZES_BYTES)?,
            publisher_counts: list_from_env("PROCMOND_WAL_BENCH_PUBLISHERS", &PUBLISHER_COUNTS)?,
            window,
            backends: backends_from_env()?,
            sections,
            run_max_bytes: if full { 4096 * MIB } else { 512 * MIB },
            replay_max_bytes: if full { 1024 * MIB } else { 256 * MIB },
            label: std::env::var("PROCMOND_WAL_BENCH_LABEL").unwrap_or_else(|_| "latest".into()),
        })
    }

    fn wants(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    fn workload(&self, event_bytes: usize, publishers: usize, window: usize) -> Workload {
        Workload {
            event_bytes,
            publishers,
            in_flight_per_publisher: window,
            duration: self.run_duration,
            max_events: (self.run_max_bytes / event_bytes as u64).max(1),
        }
    }
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

/// One target of the issue with its same-run ratio.
#[derive(Debug, Serialize)]
struct TargetRow {
    target: String,
    backend: String,
    measured: String,
    ratio: f64,
    required: f64,
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
        report.sweeps = sweeps(&settings)?;
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
                for window in [1, settings.window] {
                    let dir = scratch_dir("wal-")?;
                    let workload = settings.workload(event_bytes, publishers, window);
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
            let naive = support::naive::run(&workload, &event)?;
            print_run(&naive);
            results.push(naive);
            let okaywal = support::okay::run(&workload, &event)?;
            print_run(&okaywal);
            results.push(okaywal);
        }
    }
    Ok(results)
}

fn replays(settings: &Settings) -> BenchResult<Vec<ReplayResult>> {
    println!("\n## Replay from the page cache (written by 16 pipelined publishers)");
    println!(
        "{:<9} {:>6} {:>10} {:>12} {:>11} {:>13}",
        "backend", "bytes", "events", "events/s", "log MB/s", "event MB/s"
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
                backend_name(backend),
                event_bytes,
                workload.max_events,
            )?;
            println!(
                "{:<9} {:>6} {:>10} {:>12.0} {:>11.1} {:>13.1}",
                result.backend,
                result.event_bytes,
                result.events,
                result.events_per_s,
                result.log_mb_per_s,
                result.event_mb_per_s
            );
            results.push(result);
        }
    }
    Ok(results)
}

fn sweeps(settings: &Settings) -> BenchResult<Vec<RunResult>> {
    println!("\n## Configuration sweeps (first selected backend)");
    print_run_header();
    let backend = settings.backends[0];
    let mut results = Vec::new();
    let small = event_of_size(256)?;
    let large = event_of_size(4096)?;
    // (event, publishers, in flight per publisher): one awaiting publisher shows latency,
    // sixteen pipelined ones show throughput.
    let shapes = [
        (&small, 256, 1, 1),
        (&small, 256, 16, 1),
        (&large, 4096, 16, settings.window),
    ];
    for preallocation in [
        Preallocation::Fallocate,
        Preallocation::ZeroFill,
        Preallocation::None,
    ] {
        for (event, event_bytes, publishers, window) in shapes {
            let dir = scratch_dir("sweep-")?;
            let mut config = base_config(dir.path(), backend);
            config.preallocation = preallocation;
            let variant = format!("prealloc={}", preallocation_name(preallocation));
            let workload = settings.workload(event_bytes, publishers, window);
            let result = support::walrun::run(config, &variant, &workload, event)?;
            print_run(&result);
            results.push(result);
        }
    }
    for group_max_bytes in [256 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
        for (event, event_bytes, publishers, window) in [
            (&small, 256, 16, settings.window),
            (&large, 4096, 16, settings.window),
            (&large, 4096, 64, settings.window),
        ] {
            let dir = scratch_dir("sweep-")?;
            let mut config = base_config(dir.path(), backend);
            config.group_max_bytes = group_max_bytes;
            let variant = format!("group={}", human_bytes(group_max_bytes));
            let workload = settings.workload(event_bytes, publishers, window);
            let result = support::walrun::run(config, &variant, &workload, event)?;
            print_run(&result);
            results.push(result);
        }
    }
    Ok(results)
}

fn find_run<'a>(
    runs: &'a [RunResult],
    system: &str,
    backend: Option<&str>,
    mode: &str,
    event_bytes: usize,
    publishers: usize,
) -> Option<&'a RunResult> {
    runs.iter().find(|run| {
        run.system == system
            && run.backend.as_deref() == backend
            && run.mode == mode
            && run.event_bytes == event_bytes
            && run.publishers == publishers
            && run.variant.is_empty()
    })
}

fn find_disk<'a>(
    disk: &'a [DiskResult],
    block_bytes: usize,
    state: &str,
) -> Option<&'a DiskResult> {
    disk.iter()
        .find(|d| d.block_bytes == block_bytes && d.file_state == state)
}

fn targets(report: &Report, settings: &Settings) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    let runs = &report.runs;
    for &backend in &settings.backends {
        let backend = backend_name(backend);
        if let Some(disk) = find_disk(&report.disk, 1 << 20, "fallocated") {
            for mode in ["pipelined", "await"] {
                if let Some(wal) = find_run(runs, "wal", Some(backend), mode, 4096, 16) {
                    let ratio = wal.mb_per_s / disk.mb_per_s;
                    rows.push(TargetRow {
                        target: format!("4 KiB × 16 {mode}: MB/s vs disk 1 MiB+fdatasync"),
                        backend: backend.into(),
                        measured: format!("{:.0} / {:.0} MB/s", wal.mb_per_s, disk.mb_per_s),
                        ratio,
                        required: 0.8,
                        met: ratio >= 0.8,
                    });
                }
            }
        }
        for (reference, required) in [("naive", 100.0), ("okaywal", 10.0)] {
            let Some(other) = find_run(runs, reference, None, "await", 256, 16) else {
                continue;
            };
            for mode in ["pipelined", "await"] {
                if let Some(wal) = find_run(runs, "wal", Some(backend), mode, 256, 16) {
                    let ratio = wal.events_per_s / other.events_per_s;
                    rows.push(TargetRow {
                        target: format!("256 B × 16 {mode}: events/s vs {reference}"),
                        backend: backend.into(),
                        measured: format!(
                            "{:.0} / {:.0} ev/s",
                            wal.events_per_s, other.events_per_s
                        ),
                        ratio,
                        required,
                        met: ratio >= required,
                    });
                }
            }
        }
        for (state, binding) in [("fallocated", true), ("prewritten", false)] {
            let Some(disk) = find_disk(&report.disk, 4096, state) else {
                continue;
            };
            for event_bytes in [256, 4096] {
                if let Some(wal) = find_run(runs, "wal", Some(backend), "await", event_bytes, 1) {
                    let ratio = wal.latency.p50_us / disk.latency.p50_us;
                    let label = if binding { "" } else { " (context)" };
                    rows.push(TargetRow {
                        target: format!(
                            "1 pub await {event_bytes} B: p50 vs 4 KiB write+fdatasync {state}{label}"
                        ),
                        backend: backend.into(),
                        measured: format!(
                            "{:.0} / {:.0} µs",
                            wal.latency.p50_us, disk.latency.p50_us
                        ),
                        ratio,
                        required: 1.5,
                        met: ratio <= 1.5,
                    });
                }
            }
        }
        for replay in report.replay.iter().filter(|r| r.backend == backend) {
            rows.push(TargetRow {
                target: format!("replay {} B events: log MB/s (≥ 1000)", replay.event_bytes),
                backend: backend.into(),
                measured: format!("{:.0} MB/s", replay.log_mb_per_s),
                ratio: replay.log_mb_per_s / 1000.0,
                required: 1.0,
                met: replay.log_mb_per_s >= 1000.0,
            });
        }
    }
    rows
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
        let needed = if row.target.contains("p50") {
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
