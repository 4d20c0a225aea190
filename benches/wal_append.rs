//! Criterion benchmarks of the WAL's durable append throughput, its replay speed, and the
//! references (naive WAL, okaywal, one 4 KiB O_DIRECT write+fdatasync), for regression
//! tracking with baselines (`scripts/bench-compare.sh`). Percentiles and same-run ratios are
//! the comparison harness's job (`benches/compare.rs`); criterion reports means with
//! confidence intervals.
//!
//! Kept short (10 flat samples, 2 s each) so all of `cargo bench` stays within minutes on the
//! shared two-core machine. `PROCMOND_WAL_BENCH_BACKEND` picks the backend (first of the list).

mod support;

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use procmond_wal::io::AlignedBuf;
use procmond_wal::io::portable::fallocate;
use procmond_wal::wal::format::{EVENT_FIXED_PAYLOAD_BYTES, frame_len};
use procmond_wal::wal::{Wal, WalReader};

use support::events::event_of_size;
use support::walrun::{base_config, publish, runtime};
use support::{BenchResult, Workload, backend_name, backends_from_env, scratch_dir};

/// Criterion cannot return errors from a benchmark body: report and stop the process.
fn or_exit<T>(result: BenchResult<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => {
            eprintln!("wal_append benchmark failed: {error}");
            std::process::exit(1);
        }
    }
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Durable appends: events of 256 B and 4 KiB from one awaiting publisher, sixteen awaiting
/// publishers, and sixteen publishers with 64 appends in flight each.
fn durable_append(c: &mut Criterion) {
    let backend = or_exit(backends_from_env())[0];
    let rt = or_exit(runtime());
    let mut group = c.benchmark_group(format!("durable_append_{}", backend_name(backend)));
    configure(&mut group);
    for event_bytes in [256usize, 4096] {
        let event = or_exit(event_of_size(event_bytes));
        for (publishers, window, events_per_iter) in [(1, 1, 16), (16, 1, 256), (16, 64, 4096)] {
            let dir = or_exit(scratch_dir("criterion-wal-"));
            let (wal, _) = or_exit(
                Wal::open(base_config(dir.path(), backend))
                    .map_err(|e| support::BenchError::wal("open", e)),
            );
            group.throughput(Throughput::Elements(events_per_iter));
            let id = BenchmarkId::new(
                format!("{}B", event_bytes),
                format!(
                    "{publishers}pub_{}",
                    if window == 1 { "await" } else { "pipelined" }
                ),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let workload = Workload {
                        event_bytes,
                        publishers,
                        in_flight_per_publisher: window,
                        batch_events: 1,
                        duration: Duration::from_secs(3600),
                        max_events: iters * events_per_iter,
                    };
                    rt.block_on(async {
                        let (_, elapsed, _) = or_exit(publish(&wal, &workload, &event).await);
                        // Let sealed segments be deleted so long runs do not fill the disk.
                        or_exit(
                            wal.checkpoint(wal.durable_sequence())
                                .await
                                .map_err(|e| support::BenchError::wal("checkpoint", e)),
                        );
                        elapsed
                    })
                });
            });
            or_exit(
                rt.block_on(wal.close())
                    .map_err(|e| support::BenchError::wal("close", e)),
            );
        }
    }
    group.finish();
}

/// Replay of 32 MiB of 1 KiB events from the page cache, decoding every event.
fn replay(c: &mut Criterion) {
    let backend = or_exit(backends_from_env())[0];
    let event_bytes = 1024;
    let event = or_exit(event_of_size(event_bytes));
    let dir = or_exit(scratch_dir("criterion-replay-"));
    let events = 32 * 1024 * 1024 / frame_len(EVENT_FIXED_PAYLOAD_BYTES + event_bytes) as u64;
    let workload = Workload {
        event_bytes,
        publishers: 16,
        in_flight_per_publisher: 64,
        batch_events: 1,
        duration: Duration::from_secs(3600),
        max_events: events,
    };
    or_exit(support::walrun::run(
        base_config(dir.path(), backend),
        "",
        &workload,
        &event,
    ));
    let mut group = c.benchmark_group("replay");
    configure(&mut group);
    group.throughput(Throughput::Bytes(
        events * frame_len(EVENT_FIXED_PAYLOAD_BYTES + event_bytes) as u64,
    ));
    group.bench_function("1KiB_events_32MiB", |b| {
        b.iter(|| {
            let reader = or_exit(
                WalReader::open(dir.path(), 0).map_err(|e| support::BenchError::wal("open", e)),
            );
            let mut count = 0u64;
            for entry in reader {
                let entry = or_exit(entry.map_err(|e| support::BenchError::wal("replay", e)));
                count += u64::from(entry.event.pid != 0);
            }
            assert_eq!(count, events, "replay must see every event written");
        });
    });
    group.finish();
}

/// The references, for tracking the machine itself across baselines: the naive WAL and
/// okaywal with sixteen 256 B publishers, and one 4 KiB O_DIRECT write+fdatasync.
fn references(c: &mut Criterion) {
    let event = or_exit(event_of_size(256));
    let mut group = c.benchmark_group("references");
    configure(&mut group);
    for (name, events_per_iter) in [("naive_256B_16pub", 64u64), ("okaywal_256B_16pub", 256)] {
        group.throughput(Throughput::Elements(events_per_iter));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let workload = Workload {
                    event_bytes: 256,
                    publishers: 16,
                    in_flight_per_publisher: 1,
                    batch_events: 1,
                    duration: Duration::from_secs(3600),
                    max_events: iters * events_per_iter,
                };
                let result = if name.starts_with("naive") {
                    support::naive::run(&workload, &event)
                } else {
                    support::okay::run(&workload, &event)
                };
                Duration::from_secs_f64(or_exit(result).elapsed_s)
            });
        });
    }
    let dir = or_exit(scratch_dir("criterion-disk-"));
    let path = dir.path().join("write4k.dat");
    let file_bytes: u64 = 256 * 1024 * 1024;
    let file = or_exit(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| support::BenchError::io("open", &path, e)),
    );
    or_exit(
        fallocate(&file, file_bytes).map_err(|e| support::BenchError::io("fallocate", &path, e)),
    );
    let block = AlignedBuf::zeroed(4096);
    let mut offset = 0u64;
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("write4K_fdatasync_fallocated", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                // Wrap around: later passes overwrite, which the compare harness measures
                // separately; a 256 MiB file outlasts any criterion run at these rates.
                offset = (offset + 4096) % file_bytes;
                or_exit(
                    file.write_all_at(&block, offset)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| support::BenchError::io("write+fdatasync", &path, e)),
                );
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, durable_append, replay, references);
criterion_main!(benches);
