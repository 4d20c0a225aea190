//! Fault injection on the simulated disk (`io::sim`): EIO on write and on sync poisons the log
//! and fails every waiter; ENOSPC is a clear error that loses nothing; and a seeded
//! power-loss simulation (page cache and directory modelled) checks that every acknowledged
//! event survives any torn tail, lost directory entry or process death.

mod common;

use std::collections::HashMap;

use common::{Lcg, event, kind, runtime};
use procmond_wal::io::sim::{Fault, SimDisk};
use procmond_wal::wal::recovery::read_dir;
use procmond_wal::wal::{SyncPolicy, Wal, WalError, WalReader};

fn replayed(dir: &std::path::Path) -> Vec<procmond_wal::wal::format::WalEntry> {
    WalReader::open(dir, 0)
        .unwrap()
        .map(|entry| entry.unwrap())
        .collect()
}

fn assert_poisoned<T: std::fmt::Debug>(result: Result<T, WalError>, op: &str) {
    match result {
        Err(WalError::Poisoned { op: failed, .. }) => assert_eq!(failed, op),
        other => panic!("expected poisoned by {op}, got {other:?}"),
    }
}

#[test]
fn eio_on_write_or_sync_poisons_the_log_and_every_waiter() {
    for (fault, op) in [
        (Fault::WriteEio, "write segment"),
        (Fault::SyncEio, "fdatasync segment"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new();
        let rt = runtime();
        let (wal, _) = Wal::open(common::sim_config(dir.path(), &disk)).unwrap();
        rt.block_on(async {
            for i in 1..=20 {
                wal.append(event(i), kind(i)).await.unwrap();
            }
            disk.inject(fault);
            // Many waiters in flight when the fault hits: all of them must fail.
            let mut receipts = Vec::new();
            for i in 21..=60 {
                receipts.push(wal.enqueue(event(i), kind(i)).await);
            }
            let mut failed = 0;
            for receipt in receipts {
                match receipt {
                    Ok(receipt) => match receipt.await {
                        Err(WalError::Poisoned { .. }) => failed += 1,
                        Ok(sequence) => panic!("sequence {sequence} acknowledged after the fault"),
                        Err(other) => panic!("unexpected {other}"),
                    },
                    Err(WalError::Poisoned { .. }) => failed += 1,
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            assert_eq!(failed, 40);
            assert_poisoned(wal.append(event(99), kind(99)).await, op);
            assert_poisoned(wal.sync().await, op);
            assert_poisoned(wal.checkpoint(1).await, op);
            assert!(wal.stats().poisoned);
            assert_poisoned(wal.close().await, op);
        });
        // Reopening recovers everything that was acknowledged before the fault.
        let entries = replayed(dir.path());
        assert!(entries.len() >= 20);
        assert_eq!(
            entries[..20].iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
        let (wal, report) = Wal::open(common::sim_config(dir.path(), &disk)).unwrap();
        assert!(report.next_sequence > 20);
        rt.block_on(async {
            wal.append(event(1), kind(1)).await.unwrap();
            wal.close().await.unwrap();
        });
    }
}

#[test]
fn enospc_is_a_clear_error_loses_nothing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let rt = runtime();
    let config = common::sim_config(dir.path(), &disk);
    let (wal, _) = Wal::open(config.clone()).unwrap();
    // Room for nothing beyond the segments already created (active + prepared).
    disk.set_space_left(Some(0));
    let acked = rt.block_on(async {
        let mut acked = Vec::new();
        for i in 1..=5000u64 {
            match wal.append(event(i), kind(i)).await {
                Ok(sequence) => acked.push((sequence, i)),
                Err(WalError::Io { op, source, .. }) => {
                    assert_eq!(op, "create segment");
                    assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
                    return acked;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        panic!("ENOSPC never surfaced");
    });
    assert!(!acked.is_empty());
    disk.set_space_left(None);
    rt.block_on(async {
        let sequence = wal.append(event(0), kind(0)).await.unwrap();
        assert_eq!(sequence, acked.last().unwrap().0 + 1);
        wal.close().await.unwrap();
    });
    let entries = replayed(dir.path());
    for (sequence, id) in &acked {
        assert_eq!(entries[(*sequence - 1) as usize].event, event(*id));
    }
    assert!(read_dir(dir.path()).unwrap().is_clean());
}

/// One seeded run: cycles of appends (some awaited, some left in flight), syncs, checkpoints
/// (and so rotations and deletions), each ending in a power cut with torn unsynced sectors
/// and lost unsynced directory entries, or in a process death that keeps the page cache;
/// the log is reopened after each. A third of the seeds use the interval policy. Returns
/// whether a reopen found a segment written after recycling.
fn simulate(seed: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let rt = runtime();
    let mut rng = Lcg(seed);
    let mut config = common::sim_config(dir.path(), &disk);
    if seed.is_multiple_of(3) {
        config.sync = SyncPolicy::Interval {
            sync_interval_ms: 1,
        };
    }
    // Half the seeds recycle acknowledged segments (docs/format.md §7.8) instead of deleting
    // them.
    config.recycle_segments_max = if seed.is_multiple_of(2) { 2 } else { 0 };
    // sequence -> event id, for every sequence the log acknowledged as durable.
    let mut durable: HashMap<u64, u64> = HashMap::new();
    let mut next_id = 1u64;
    let mut acked_through = 0u64;
    let mut recycled_seen = false;
    for cycle in 0..6 {
        // A torn final write can leave valid unacknowledged records after a damaged sector;
        // they are recovered and the hole is reported (docs/design.md, "Known limits"), so the
        // report's loss counts are not asserted here: acknowledged events are.
        // Read before opening: the writer deletes what its newest checkpoint covers.
        let entries = replayed(dir.path());
        let (wal, opened) = Wal::open(config.clone())
            .unwrap_or_else(|error| panic!("seed {seed} cycle {cycle}: open: {error}"));
        // The writer may be deleting segments its newest checkpoint covers while this reads:
        // a segment that vanishes between listing and reading means another try.
        let after_open = loop {
            match read_dir(dir.path()) {
                Ok(report) => break report,
                Err(WalError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(other) => panic!("seed {seed} cycle {cycle}: {other}"),
            }
        };
        if std::env::var("PROCMOND_WAL_SIM_DEBUG").is_ok() {
            eprintln!(
                "cycle {cycle}: next {} acked {} last {:?} segs {:?} durable_max {:?} test_acked {acked_through}",
                opened.next_sequence,
                opened.acked_through,
                opened.last_sequence,
                opened
                    .segments
                    .iter()
                    .map(|s| (
                        s.number,
                        s.first_sequence,
                        s.last_sequence,
                        s.checkpoints,
                        s.header_problem
                    ))
                    .collect::<Vec<_>>(),
                durable.keys().max()
            );
            eprintln!(
                "  after open: {:?}",
                after_open
                    .segments
                    .iter()
                    .map(|s| (s.number, s.data_end, s.tail_nonzero_end, s.header_problem))
                    .collect::<Vec<_>>()
            );
        }
        recycled_seen |= after_open.segments.iter().any(|s| s.recycled);
        assert_eq!(
            after_open.torn_tail_bytes, 0,
            "seed {seed} cycle {cycle}: tail not cut"
        );
        // Open may delete sealed segments the newest checkpoint covers; nothing else changes.
        assert_eq!(
            after_open.last_sequence, opened.last_sequence,
            "seed {seed} cycle {cycle}"
        );
        // Every acknowledged event is there with its content; nothing appears out of order.
        let mut last = 0;
        for entry in &entries {
            assert!(entry.sequence > last, "seed {seed}: out of order");
            last = entry.sequence;
            let id = u64::from(entry.event.pid - 1000);
            if let Some(&expected) = durable.get(&entry.sequence) {
                assert_eq!(
                    id, expected,
                    "seed {seed}: wrong event at {}",
                    entry.sequence
                );
            }
        }
        let present: std::collections::HashSet<u64> = entries.iter().map(|e| e.sequence).collect();
        for sequence in durable.keys().filter(|&&s| s > acked_through) {
            assert!(
                present.contains(sequence),
                "seed {seed} cycle {cycle}: lost acknowledged {sequence}"
            );
        }
        // Open makes everything it found durable before answering anything: from now on those
        // events must survive any power loss, and the log says so.
        assert_eq!(
            wal.durable_sequence(),
            opened.next_sequence - 1,
            "seed {seed} cycle {cycle}"
        );
        // (A torn tail above the durable watermark was cut by open: those sequences were
        // never acknowledged and are handed out again.)
        for entry in entries.iter().filter(|e| e.sequence < opened.next_sequence) {
            durable.insert(entry.sequence, u64::from(entry.event.pid - 1000));
        }
        acked_through = acked_through.max(opened.acked_through);
        // Some cycles end with the process dying instead: the page cache survives, and the
        // next open must make what it finds durable before a later power loss.
        let power_loss = !rng.next().is_multiple_of(3);
        rt.block_on(async {
            // Some cycles append nothing: the power goes right after open, so whatever open
            // trusted must already be durable.
            let appends = if rng.next().is_multiple_of(4) {
                0
            } else {
                50 + rng.next() % 400
            };
            let mut in_flight = Vec::new();
            for _ in 0..appends {
                let id = next_id;
                next_id += 1;
                match rng.next() % 10 {
                    0 => {
                        if let Ok(durable_seq) = wal.sync().await {
                            let highest = durable.keys().copied().max().unwrap_or(0);
                            assert!(
                                durable_seq >= highest,
                                "seed {seed}: sync said {durable_seq} after {highest} was durable"
                            );
                        }
                    }
                    1 if !durable.is_empty() => {
                        let candidate = *durable.keys().max().unwrap();
                        if wal.checkpoint(candidate).await.is_ok() {
                            acked_through = acked_through.max(candidate);
                        }
                    }
                    _ => {}
                }
                let receipt = wal.enqueue(event(id), kind(id)).await.unwrap();
                if rng.next().is_multiple_of(4) {
                    in_flight.push((receipt, id));
                } else {
                    let sequence = receipt.await.unwrap();
                    durable.insert(sequence, id);
                }
            }
            // Cut the power (or kill the process) with appends in flight: they may or may not
            // survive.
            if power_loss {
                disk.power_cut();
            } else {
                disk.kill_process();
            }
            for (receipt, id) in in_flight {
                if let Ok(sequence) = receipt.await {
                    // Under the interval policy "acknowledged" means written, not durable.
                    if config.sync == SyncPolicy::EveryGroup {
                        durable.insert(sequence, id);
                    }
                }
            }
            if config.sync != SyncPolicy::EveryGroup {
                // Only what a sync covered is promised under the interval policy; no sync can
                // succeed after the power cut, so this watermark is final.
                let synced = wal.durable_sequence();
                durable.retain(|&sequence, _| sequence <= synced);
                // A checkpoint is also only written, not synced, when it resolves.
                acked_through = acked_through.min(synced);
            }
            let _ = wal.close().await;
        });
        if power_loss {
            disk.crash(seed.wrapping_mul(31).wrapping_add(cycle))
                .unwrap();
        } else {
            disk.restart();
        }
    }
    recycled_seen
}

#[test]
fn seeded_power_loss_simulation_never_loses_an_acknowledged_event() {
    let seeds: u64 = std::env::var("PROCMOND_WAL_SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8);
    let first: u64 = std::env::var("PROCMOND_WAL_SIM_FIRST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1);
    let mut recycling_seeds = 0;
    for seed in first..first + seeds {
        recycling_seeds += u64::from(simulate(seed));
    }
    eprintln!("{recycling_seeds} of {seeds} seeds wrote to recycled segments");
    assert!(
        seeds < 8 || recycling_seeds > 0,
        "no seed wrote to a recycled segment"
    );
    // Seeds that once found bugs: 325 deleted the segment holding the newest checkpoint while
    // the new active segment had nothing durable, so sequence numbers restarted at 1; 9 and 53
    // reopened after a process death and trusted records that were only in the page cache;
    // 1788 lost the only readable copy of the salt for a segment whose header was torn.
    // 1614 tore a new segment's first write so that only the salt copy of its header block
    // landed: open must move it aside, not refuse.
    for seed in [9, 53, 242, 325, 1614, 1788]
        .into_iter()
        .filter(|_| std::env::var("PROCMOND_WAL_SIM_ONLY").is_err())
    {
        simulate(seed);
    }
}
