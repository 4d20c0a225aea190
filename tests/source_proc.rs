//! The /proc source without the real /proc: the differ on hand-built snapshots, and the
//! reader and poller on a fake /proc tree in a temporary directory.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use procmond_wal::EventKind;
use procmond_wal::source::SourceError;
use procmond_wal::source::proc::parse::PF_KTHREAD;
use procmond_wal::source::proc::snapshot::{
    META_CHANGED, META_EUID, META_INITIAL_SCAN, META_KERNEL_THREAD,
};
use procmond_wal::source::proc::{
    Change, PollSchedule, ProcPoller, ProcReader, ProcessRecord, ReadStats, Snapshot,
    SystemConstants, diff,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// The differ on hand-built snapshots.

fn time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
}

fn record(pid: u32, start_ticks: u64) -> ProcessRecord {
    let mut record = ProcessRecord::new(pid, start_ticks, format!("p{pid}"));
    record.ppid = Some(1);
    record.executable_path = Some(format!("/usr/bin/p{pid}"));
    record.file_exists = true;
    record.argv = vec![format!("p{pid}"), "--flag".into()];
    record.uid = Some(1000);
    record
}

fn snapshot(at_s: i64, records: impl IntoIterator<Item = ProcessRecord>) -> Snapshot {
    let mut snapshot = Snapshot::new(time(at_s), Instant::now());
    for record in records {
        snapshot.insert(record);
    }
    snapshot
}

/// (kind, pid) of every change, in order.
fn kinds(changes: &[Change<'_>]) -> Vec<(EventKind, u32)> {
    changes
        .iter()
        .map(|change| (change.kind(), change.pid()))
        .collect()
}

#[test]
fn new_pids_start_and_vanished_pids_stop_in_pid_order() {
    let before = snapshot(0, [record(5, 1), record(7, 1), record(9, 1)]);
    let after = snapshot(1, [record(3, 4), record(7, 1), record(8, 4)]);
    let changes = diff(&before, &after);
    assert_eq!(
        kinds(&changes),
        [
            (EventKind::Start, 3),
            (EventKind::Stop, 5),
            (EventKind::Start, 8),
            (EventKind::Stop, 9),
        ]
    );
    // A Stop carries the last record seen, stamped when the absence was observed.
    let (stop, kind) = changes[1].to_event(after.collection_time);
    assert_eq!(kind, EventKind::Stop);
    assert_eq!(stop.pid, 5);
    assert_eq!(stop.command_line, ["p5", "--flag"]);
    assert_eq!(stop.collection_time, time(1));
}

#[test]
fn first_and_last_snapshots_against_nothing() {
    let empty = snapshot(0, []);
    let some = snapshot(1, [record(1, 1), record(2, 1)]);
    assert_eq!(
        kinds(&diff(&empty, &some)),
        [(EventKind::Start, 1), (EventKind::Start, 2)]
    );
    assert_eq!(
        kinds(&diff(&some, &empty)),
        [(EventKind::Stop, 1), (EventKind::Stop, 2)]
    );
    assert!(diff(&empty, &empty).is_empty());
}

#[test]
fn each_tracked_attribute_change_is_a_modify_naming_it() {
    type Edit = fn(&mut ProcessRecord);
    let cases: [(&str, Edit); 5] = [
        ("name", |r| r.name = "renamed".into()),
        ("executable_path", |r| {
            r.executable_path = Some("/usr/bin/other".into())
        }),
        ("argv", |r| r.argv.push("--more".into())),
        ("uid", |r| r.uid = Some(0)),
        ("ppid", |r| r.ppid = Some(4242)),
    ];
    for (field, edit) in cases {
        let before = snapshot(0, [record(10, 3)]);
        let mut changed = record(10, 3);
        edit(&mut changed);
        let after = snapshot(1, [changed.clone()]);
        let changes = diff(&before, &after);
        assert_eq!(kinds(&changes), [(EventKind::Modify, 10)], "{field}");
        let (event, kind) = changes[0].to_event(after.collection_time);
        assert_eq!(kind, EventKind::Modify);
        assert_eq!(
            event
                .platform_metadata
                .get(META_CHANGED)
                .map(String::as_str),
            Some(field)
        );
        // The event carries the new state.
        assert_eq!(event, {
            let mut expected = changed.to_event(time(1));
            expected
                .platform_metadata
                .insert(META_CHANGED.into(), field.into());
            expected
        });
    }
}

#[test]
fn several_changes_are_one_modify() {
    let before = snapshot(0, [record(10, 3)]);
    let mut changed = record(10, 3);
    changed.name = "x".into();
    changed.ppid = None;
    let after = snapshot(1, [changed]);
    let changes = diff(&before, &after);
    assert_eq!(kinds(&changes), [(EventKind::Modify, 10)]);
    let (event, _) = changes[0].to_event(time(1));
    assert_eq!(event.platform_metadata[META_CHANGED], "name,ppid");
}

#[test]
fn unchanged_or_untracked_changes_give_nothing() {
    let before = snapshot(0, [record(10, 3), record(11, 3)]);
    let mut busy = record(10, 3);
    busy.cpu_ticks = 999;
    busy.cpu_usage_percent = Some(50.0);
    busy.memory_usage_bytes = Some(1 << 30);
    busy.metadata.insert("linux.threads".into(), "9".into());
    busy.start_time = Some(time(-5));
    let after = snapshot(1, [busy, record(11, 3)]);
    assert!(diff(&before, &after).is_empty());
    assert!(diff(&before, &before).is_empty());
}

#[test]
fn a_kernel_thread_renaming_itself_is_not_a_change() {
    // A kworker's name shows the workqueue it serves right now.
    let mut worker = ProcessRecord::new(11, 3, "kworker/0:1-events");
    worker.kernel_thread = true;
    let before = snapshot(0, [worker.clone()]);
    worker.name = "kworker/0:1-mm_percpu_wq".into();
    let after = snapshot(1, [worker.clone()]);
    assert!(diff(&before, &after).is_empty());
    // A kernel thread's other tracked attributes still count.
    worker.ppid = Some(2);
    let adopted = snapshot(2, [worker]);
    assert_eq!(kinds(&diff(&before, &adopted)), [(EventKind::Modify, 11)]);
}

#[test]
fn a_reused_pid_is_stop_of_the_old_then_start_of_the_new() {
    let before = snapshot(0, [record(10, 3)]);
    let mut reused = record(10, 77);
    reused.name = "newcomer".into();
    let after = snapshot(1, [reused]);
    let changes = diff(&before, &after);
    assert_eq!(
        kinds(&changes),
        [(EventKind::Stop, 10), (EventKind::Start, 10)]
    );
    let (stop, _) = changes[0].to_event(time(1));
    let (start, _) = changes[1].to_event(time(1));
    assert_eq!(stop.name, "p10");
    assert_eq!(start.name, "newcomer");

    // Same attributes, new start time: still a different process.
    let twin = snapshot(1, [record(10, 78)]);
    assert_eq!(
        kinds(&diff(&before, &twin)),
        [(EventKind::Stop, 10), (EventKind::Start, 10)]
    );
}

#[test]
fn an_attribute_that_could_not_be_read_is_not_a_change() {
    let before = snapshot(0, [record(10, 3)]);
    let mut blind = record(10, 3);
    blind.argv.clear();
    blind.unobserved.argv = true;
    blind.executable_path = None;
    blind.unobserved.executable = true;
    blind.uid = None;
    blind.unobserved.uid = true;
    blind.accessible = false;
    let after = snapshot(1, [blind.clone()]);
    assert!(diff(&before, &after).is_empty());
    // ... in either direction.
    assert!(diff(&after, &before).is_empty());
    // A tracked attribute that was read still counts.
    blind.name = "other".into();
    let renamed = snapshot(2, [blind]);
    assert_eq!(kinds(&diff(&before, &renamed)), [(EventKind::Modify, 10)]);
}

// ---------------------------------------------------------------------------------------
// The reader on a fake /proc tree.

const BOOT_TIME_S: i64 = 1_700_000_000;
const CONSTANTS: SystemConstants = SystemConstants {
    clock_ticks_per_s: 100,
    page_size_bytes: 4096,
};

/// One process as the fake tree should show it.
#[derive(Clone)]
struct Fake {
    pid: u32,
    name: Vec<u8>,
    state: char,
    ppid: u32,
    flags: u32,
    cpu_ticks: u64,
    start_ticks: u64,
    rss_pages: u64,
    uid: u32,
    euid: u32,
    cmdline: Vec<u8>,
    exe: Option<Vec<u8>>,
}

impl Fake {
    fn new(pid: u32, name: &str) -> Self {
        Fake {
            pid,
            name: name.as_bytes().to_vec(),
            state: 'S',
            ppid: 1,
            flags: 0x0040_0100,
            cpu_ticks: 10,
            start_ticks: 250,
            rss_pages: 100,
            uid: 1000,
            euid: 1000,
            cmdline: format!("/usr/bin/{name}\0--serve\0").into_bytes(),
            exe: Some(format!("/usr/bin/{name}").into_bytes()),
        }
    }

    fn stat(&self) -> Vec<u8> {
        let mut line = format!("{} (", self.pid).into_bytes();
        line.extend_from_slice(&self.name);
        line.extend_from_slice(
            format!(
                ") {} {} {} {} 0 -1 {} 0 0 0 0 {} 0 0 0 20 0 3 0 {} 1000000 {} \
                 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
                self.state,
                self.ppid,
                self.pid,
                self.pid,
                self.flags,
                self.cpu_ticks,
                self.start_ticks,
                self.rss_pages,
            )
            .as_bytes(),
        );
        line
    }

    fn status(&self) -> String {
        format!(
            "Name:\tignored\nState:\t{}\nPid:\t{}\nPPid:\t{}\nUid:\t{}\t{}\t{}\t{}\nGid:\t0\t0\t0\t0\n",
            self.state, self.pid, self.ppid, self.uid, self.euid, self.euid, self.euid
        )
    }
}

/// A fake /proc: `stat` with a boot time, and one directory per process.
struct FakeProc {
    dir: TempDir,
}

impl FakeProc {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("stat"),
            format!("cpu  1 2 3 4\nintr 1\nctxt 2\nbtime {BOOT_TIME_S}\nprocesses 9\n"),
        )
        .unwrap();
        // Entries that are not processes.
        fs::create_dir(dir.path().join("sys")).unwrap();
        fs::write(dir.path().join("uptime"), "1000.00 3000.00\n").unwrap();
        FakeProc { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn pid_dir(&self, pid: u32) -> std::path::PathBuf {
        self.root().join(pid.to_string())
    }

    /// Writes (or rewrites) a process directory. Each file is replaced atomically (written
    /// aside, then renamed), as a read of a real /proc file is never half of one state.
    fn put(&self, fake: &Fake) {
        let dir = self.pid_dir(fake.pid);
        fs::create_dir_all(&dir).unwrap();
        let replace = |name: &str, content: &[u8]| {
            let aside = dir.join(format!(".{name}.new"));
            fs::write(&aside, content).unwrap();
            fs::rename(&aside, dir.join(name)).unwrap();
        };
        replace("stat", &fake.stat());
        replace("status", fake.status().as_bytes());
        replace("cmdline", &fake.cmdline);
        let exe = dir.join("exe");
        match &fake.exe {
            Some(target) => {
                let aside = dir.join(".exe.new");
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &aside).unwrap();
                fs::rename(&aside, &exe).unwrap();
            }
            None => {
                let _ = fs::remove_file(&exe);
            }
        }
    }

    fn remove(&self, pid: u32) {
        fs::remove_dir_all(self.pid_dir(pid)).unwrap();
    }

    fn reader(&self) -> ProcReader {
        ProcReader::with_constants(self.root(), CONSTANTS).unwrap()
    }
}

fn read(fake: &FakeProc) -> (Snapshot, ReadStats) {
    fake.reader().read_snapshot().unwrap()
}

#[test]
fn a_complete_process_is_read_field_by_field() {
    let fake = FakeProc::new();
    let mut sleeper = Fake::new(4321, "sleep");
    sleeper.ppid = 77;
    sleeper.cpu_ticks = 42;
    sleeper.start_ticks = 12_345; // 123.45 s after boot
    sleeper.uid = 1000;
    sleeper.euid = 0;
    fake.put(&sleeper);

    let (snapshot, stats) = read(&fake);
    assert_eq!(
        stats,
        ReadStats {
            processes: 1,
            ..ReadStats::default()
        }
    );
    let record = &snapshot.processes[&4321];
    assert_eq!(record.pid, 4321);
    assert_eq!(record.ppid, Some(77));
    assert_eq!(record.name, "sleep");
    assert_eq!(record.executable_path.as_deref(), Some("/usr/bin/sleep"));
    assert!(record.file_exists);
    assert_eq!(record.argv, ["/usr/bin/sleep", "--serve"]);
    assert_eq!(record.uid, Some(1000));
    assert_eq!(record.metadata[META_EUID], "0");
    assert_eq!(record.start_ticks, 12_345);
    assert_eq!(
        record.start_time,
        DateTime::from_timestamp(BOOT_TIME_S + 123, 450_000_000)
    );
    assert_eq!(record.cpu_ticks, 42);
    assert_eq!(
        record.cpu_usage_percent, None,
        "no earlier poll to measure from"
    );
    assert_eq!(record.memory_usage_bytes, Some(100 * 4096));
    assert!(record.accessible);
    assert!(!record.unobserved.any());
    assert!(!record.kernel_thread);

    let event = record.to_event(snapshot.collection_time);
    assert_eq!(event.user_id.as_deref(), Some("1000"));
    assert_eq!(event.command_line, ["/usr/bin/sleep", "--serve"]);
    assert!(!event.truncated);
}

#[test]
fn a_name_with_parentheses_and_spaces_is_kept_whole() {
    let fake = FakeProc::new();
    let mut odd = Fake::new(10, "x");
    odd.name = b"a) (b".to_vec();
    odd.ppid = 9;
    fake.put(&odd);
    let mut worse = Fake::new(11, "x");
    worse.name = b") S 1 2 (".to_vec();
    fake.put(&worse);
    let (snapshot, stats) = read(&fake);
    assert_eq!(stats.processes, 2);
    assert_eq!(snapshot.processes[&10].name, "a) (b");
    assert_eq!(snapshot.processes[&10].ppid, Some(9));
    assert_eq!(snapshot.processes[&11].name, ") S 1 2 (");
    assert_eq!(snapshot.processes[&11].ppid, Some(1));
}

#[test]
fn non_utf8_argv_and_names_are_lossy() {
    let fake = FakeProc::new();
    let mut binary = Fake::new(12, "x");
    binary.name = b"n\xffm".to_vec();
    binary.cmdline = b"prog\0\xff\xfe\0ok\0".to_vec();
    binary.exe = Some(b"/opt/\xc3(bad".to_vec());
    fake.put(&binary);
    let (snapshot, stats) = read(&fake);
    assert_eq!(stats.processes, 1);
    let record = &snapshot.processes[&12];
    assert_eq!(record.name, "n\u{fffd}m");
    assert_eq!(record.argv, ["prog", "\u{fffd}\u{fffd}", "ok"]);
    assert_eq!(record.executable_path.as_deref(), Some("/opt/\u{fffd}(bad"));
}

#[test]
fn kernel_threads_have_no_argv_or_executable_and_that_is_not_a_failure() {
    let fake = FakeProc::new();
    let mut kthread = Fake::new(2, "kthreadd");
    kthread.flags = PF_KTHREAD | 0x40;
    kthread.ppid = 0;
    kthread.cmdline.clear();
    kthread.exe = None;
    kthread.uid = 0;
    kthread.euid = 0;
    fake.put(&kthread);
    let (snapshot, stats) = read(&fake);
    assert_eq!(
        stats,
        ReadStats {
            processes: 1,
            ..ReadStats::default()
        }
    );
    let record = &snapshot.processes[&2];
    assert_eq!(record.ppid, None, "parent 0 is no parent");
    assert!(record.argv.is_empty());
    assert_eq!(record.executable_path, None);
    assert!(!record.file_exists);
    assert!(!record.unobserved.any());
    assert!(record.accessible);
    assert!(record.kernel_thread);
    assert_eq!(record.metadata[META_KERNEL_THREAD], "true");
}

#[test]
fn a_user_process_with_an_empty_argv_is_reported_as_such() {
    // execve with argc 0 (the pkexec trick) leaves an empty cmdline on a live process.
    let fake = FakeProc::new();
    let mut argc0 = Fake::new(14, "pkexec");
    argc0.cmdline.clear();
    fake.put(&argc0);
    let (snapshot, stats) = read(&fake);
    assert_eq!(stats.partial, 0);
    let record = &snapshot.processes[&14];
    assert!(record.argv.is_empty());
    assert!(!record.unobserved.any());
    assert_eq!(record.executable_path.as_deref(), Some("/usr/bin/pkexec"));
}

#[test]
fn a_deleted_executable_is_reported_as_gone() {
    let fake = FakeProc::new();
    let mut dropped = Fake::new(13, "dropper");
    dropped.exe = Some(b"/tmp/.x/dropper (deleted)".to_vec());
    fake.put(&dropped);
    let (snapshot, _) = read(&fake);
    let record = &snapshot.processes[&13];
    assert_eq!(record.executable_path.as_deref(), Some("/tmp/.x/dropper"));
    assert!(!record.file_exists);
}

#[test]
fn missing_and_unreadable_files_are_counted_never_fatal() {
    let fake = FakeProc::new();
    fake.put(&Fake::new(100, "fine"));

    // Only `stat`: kept, with the other attributes unobserved.
    let bare = Fake::new(101, "bare");
    fs::create_dir(fake.pid_dir(101)).unwrap();
    fs::write(fake.pid_dir(101).join("stat"), bare.stat()).unwrap();

    // No `stat` at all (the process exited between listing and reading): skipped.
    fs::create_dir(fake.pid_dir(102)).unwrap();

    // `cmdline` cannot be read (a directory: EISDIR): kept, argv unobserved.
    let blocked = Fake::new(103, "blocked");
    fake.put(&blocked);
    fs::remove_file(fake.pid_dir(103).join("cmdline")).unwrap();
    fs::create_dir(fake.pid_dir(103).join("cmdline")).unwrap();

    // `stat` unreadable (a directory): skipped as unreadable.
    fs::create_dir_all(fake.pid_dir(104).join("stat")).unwrap();

    // Garbage `stat`, and a `stat` naming another pid: skipped as malformed.
    fs::create_dir(fake.pid_dir(105)).unwrap();
    fs::write(fake.pid_dir(105).join("stat"), "garbage without a name").unwrap();
    fs::create_dir(fake.pid_dir(106)).unwrap();
    fs::write(
        fake.pid_dir(106).join("stat"),
        Fake::new(999, "liar").stat(),
    )
    .unwrap();

    // `status` without a Uid line: kept, uid unobserved.
    let anonymous = Fake::new(107, "anon");
    fake.put(&anonymous);
    fs::write(fake.pid_dir(107).join("status"), "Name:\tanon\n").unwrap();

    let (snapshot, stats) = read(&fake);
    assert_eq!(
        stats,
        ReadStats {
            processes: 4,
            partial: 3,
            skipped_vanished: 1,
            skipped_denied: 0,
            skipped_malformed: 2,
            skipped_unreadable: 1,
        }
    );
    assert_eq!(stats.skipped(), 4);
    assert_eq!(
        snapshot.processes.keys().copied().collect::<Vec<_>>(),
        [100, 101, 103, 107]
    );

    let bare = &snapshot.processes[&101];
    assert_eq!(bare.name, "bare");
    assert!(bare.unobserved.executable && bare.unobserved.argv && bare.unobserved.uid);
    assert_eq!((bare.uid, bare.executable_path.as_ref()), (None, None));
    assert!(bare.accessible, "missing is not refused");

    let blocked = &snapshot.processes[&103];
    assert!(blocked.unobserved.argv);
    assert!(!blocked.unobserved.executable && !blocked.unobserved.uid);
    assert_eq!(blocked.executable_path.as_deref(), Some("/usr/bin/blocked"));

    let anonymous = &snapshot.processes[&107];
    assert!(anonymous.unobserved.uid);
    assert_eq!(anonymous.uid, None);
    assert_eq!(anonymous.argv, ["/usr/bin/anon", "--serve"]);
}

#[test]
fn a_zombie_keeps_its_identity_without_a_false_change() {
    let fake = FakeProc::new();
    let live = Fake::new(20, "worker");
    fake.put(&live);
    let mut reader = fake.reader();
    let (before, _) = reader.read_snapshot().unwrap();

    let mut zombie = live.clone();
    zombie.state = 'Z';
    zombie.cmdline.clear();
    zombie.exe = None;
    fake.put(&zombie);
    let (after, stats) = reader.read_snapshot().unwrap();
    assert_eq!(stats.partial, 0);
    let record = &after.processes[&20];
    assert!(record.unobserved.argv && record.unobserved.executable);
    assert!(diff(&before, &after).is_empty());
}

#[test]
fn an_oversized_cmdline_is_bounded_and_marked_truncated() {
    let fake = FakeProc::new();
    let mut chatty = Fake::new(30, "chatty");
    let huge_arg = "y".repeat(1 << 20);
    chatty.cmdline = format!("chatty\0{huge_arg}\0").into_bytes();
    fake.put(&chatty);
    let (snapshot, _) = read(&fake);
    let record = &snapshot.processes[&30];
    assert!(record.argv_cut);
    let total: usize = record.argv.iter().map(String::len).sum();
    assert!(total <= procmond_wal::source::proc::reader::CMDLINE_MAX_BYTES);
    let event = record.to_event(snapshot.collection_time);
    assert!(event.truncated);
    assert_eq!(event.command_line[0], "chatty");
}

#[test]
fn a_root_that_cannot_be_listed_or_has_no_boot_time_is_an_error() {
    let fake = FakeProc::new();
    let missing = fake.root().join("absent");
    match ProcReader::with_constants(&missing, CONSTANTS) {
        Err(SourceError::Io { path, .. }) => assert_eq!(path, missing.join("stat")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    fs::write(fake.root().join("stat"), "cpu 1 2\n").unwrap();
    assert!(matches!(
        ProcReader::with_constants(fake.root(), CONSTANTS),
        Err(SourceError::Malformed { .. })
    ));

    let fake = FakeProc::new();
    let mut reader = fake.reader();
    let root = fake.root().to_path_buf();
    drop(fake); // the tree disappears under the reader
    match reader.read_snapshot() {
        Err(SourceError::Io { path, .. }) => assert_eq!(path, root),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn processes_coming_and_going_during_reads_are_never_fatal_or_mixed() {
    use std::sync::Arc;

    const ROUNDS: u32 = 10;
    const PER_ROUND: u32 = 20;
    let fake = Arc::new(FakeProc::new());
    // Another thread creates processes (file by file) and deletes them, round after round,
    // while this thread reads until it is done. Each round uses new pids: a pid reused
    // within the microseconds of one process's read cannot happen on a real kernel (its pid
    // counter would have to wrap around in that time).
    let churn = {
        let fake = Arc::clone(&fake);
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let pids = 1000 + round * PER_ROUND..1000 + (round + 1) * PER_ROUND;
                for pid in pids.clone() {
                    let mut process = Fake::new(pid, &format!("p{pid}"));
                    process.start_ticks = u64::from(round);
                    process.cmdline = format!("p{pid}\0{round}\0").into_bytes();
                    fake.put(&process);
                }
                for pid in pids {
                    fs::remove_dir_all(fake.pid_dir(pid)).unwrap();
                }
            }
        })
    };
    let mut reader = fake.reader();
    let mut totals = ReadStats::default();
    let mut reads = 0u64;
    while !churn.is_finished() || reads == 0 {
        let (snapshot, stats) = reader.read_snapshot().expect("the root stays listable");
        reads += 1;
        totals.add(&stats);
        for record in snapshot.processes.values() {
            // Whatever was read belongs to one process: its name, and its argv (when read)
            // carry its own pid and start time.
            assert_eq!(record.name, format!("p{}", record.pid));
            if !record.unobserved.argv && !record.argv.is_empty() {
                assert_eq!(record.argv[0], record.name);
                if let Some(round) = record.argv.get(1) {
                    assert_eq!(round, &record.start_ticks.to_string(), "{record:?}");
                }
            }
        }
    }
    churn.join().unwrap();
    // A process that disappears mid-read is counted as vanished, never as anything else.
    assert_eq!(totals.skipped_denied, 0);
    assert_eq!(totals.skipped_malformed, 0);
    assert_eq!(totals.skipped_unreadable, 0);
}

// ---------------------------------------------------------------------------------------
// The poller on a fake tree.

fn poller(fake: &FakeProc, report_existing: bool) -> ProcPoller {
    ProcPoller::with_reader(
        fake.reader(),
        PollSchedule::new(10, 1.5).unwrap(),
        report_existing,
    )
}

fn batch_kinds(batch: &procmond_wal::source::proc::PollBatch) -> Vec<(EventKind, u32)> {
    batch
        .events
        .iter()
        .map(|(event, kind)| (*kind, event.pid))
        .collect()
}

#[test]
fn the_poller_reports_existing_processes_then_changes() {
    let fake = FakeProc::new();
    let mut a = Fake::new(50, "a");
    fake.put(&a);
    fake.put(&Fake::new(51, "b"));
    let mut poller = poller(&fake, true);

    let first = poller.poll_once().unwrap();
    assert_eq!(first.poll_number, 1);
    assert_eq!(
        batch_kinds(&first),
        [(EventKind::Start, 50), (EventKind::Start, 51)]
    );
    for (event, _) in &first.events {
        // Already running when monitoring began, and measured over its life so far.
        assert_eq!(event.platform_metadata[META_INITIAL_SCAN], "true");
        assert!(event.cpu_usage_percent.is_some());
    }

    assert!(batch_kinds(&poller.poll_once().unwrap()).is_empty());

    // a: exec'd with new arguments and burned CPU; b: exited; c: started.
    a.cmdline = b"a\0--reloaded\0".to_vec();
    a.cpu_ticks += 50;
    fake.put(&a);
    fake.remove(51);
    fake.put(&Fake::new(52, "c"));
    let third = poller.poll_once().unwrap();
    assert_eq!(
        batch_kinds(&third),
        [
            (EventKind::Modify, 50),
            (EventKind::Stop, 51),
            (EventKind::Start, 52)
        ]
    );
    assert!(
        third
            .events
            .iter()
            .all(|(event, _)| !event.platform_metadata.contains_key(META_INITIAL_SCAN))
    );
    let (modified, _) = &third.events[0];
    assert_eq!(modified.command_line, ["a", "--reloaded"]);
    assert_eq!(modified.platform_metadata[META_CHANGED], "argv");
    let cpu = modified
        .cpu_usage_percent
        .expect("measured between two polls");
    assert!(cpu > 0.0, "50 ticks were used: {cpu}");
    // A new process is measured over its life: 10 ticks since tick 250, at 1000 s uptime.
    let fresh = third.events[2]
        .0
        .cpu_usage_percent
        .expect("measured since its start");
    assert!(
        (fresh - 0.1 / (1000.0 - 2.5) * 100.0).abs() < 1e-9,
        "{fresh}"
    );

    // The pid of a is reused by a new process.
    let mut reused = Fake::new(50, "a2");
    reused.start_ticks = a.start_ticks + 1000;
    fake.put(&reused);
    let fourth = poller.poll_once().unwrap();
    assert_eq!(
        batch_kinds(&fourth),
        [(EventKind::Stop, 50), (EventKind::Start, 50)]
    );
    assert_eq!(fourth.events[0].0.name, "a");
    assert_eq!(fourth.events[1].0.name, "a2");

    let stats = poller.stats();
    assert_eq!(stats.polls, 4);
    assert_eq!((stats.starts, stats.stops, stats.modifies), (4, 2, 1));
    assert_eq!(stats.processes_tracked, 2);
    assert_eq!(stats.read.processes, 2 + 2 + 2 + 2);
}

#[test]
fn a_process_that_becomes_unreadable_keeps_its_last_known_attributes() {
    let fake = FakeProc::new();
    let mut exiting = Fake::new(80, "leaving");
    fake.put(&exiting);
    let mut poller = poller(&fake, false);
    poller.poll_once().unwrap();

    // Exiting: memory released (empty cmdline), `exe` gone, the flag set.
    exiting.flags |= procmond_wal::source::proc::parse::PF_EXITING;
    exiting.cmdline.clear();
    exiting.exe = None;
    fake.put(&exiting);
    let during = poller.poll_once().unwrap();
    assert!(during.events.is_empty(), "{:?}", during.events);

    // A live process whose files are briefly unreadable: no Modify either.
    let mut shy = Fake::new(81, "shy");
    fake.put(&shy);
    poller.poll_once().unwrap();
    fs::remove_file(fake.pid_dir(81).join("cmdline")).unwrap();
    fs::create_dir(fake.pid_dir(81).join("cmdline")).unwrap();
    let blind = poller.poll_once().unwrap();
    assert!(blind.events.is_empty(), "{:?}", blind.events);
    assert_eq!(blind.read.partial, 1);

    // Its next real change is still compared with the last known argv.
    fs::remove_dir(fake.pid_dir(81).join("cmdline")).unwrap();
    shy.cmdline = b"shy\0--changed\0".to_vec();
    fake.put(&shy);
    fake.remove(80);
    let after = poller.poll_once().unwrap();
    assert_eq!(
        batch_kinds(&after),
        [(EventKind::Stop, 80), (EventKind::Modify, 81)]
    );
    // The Stop carries what was known before the process began to exit.
    let (stop, _) = &after.events[0];
    assert_eq!(stop.command_line, ["/usr/bin/leaving", "--serve"]);
    assert_eq!(stop.executable_path.as_deref(), Some("/usr/bin/leaving"));
    assert_eq!(after.events[1].0.platform_metadata[META_CHANGED], "argv");
}

#[test]
fn without_report_existing_the_first_poll_is_a_silent_baseline() {
    let fake = FakeProc::new();
    fake.put(&Fake::new(60, "old"));
    let mut poller = poller(&fake, false);
    let first = poller.poll_once().unwrap();
    assert!(first.events.is_empty());
    assert_eq!(first.read.processes, 1);
    fake.put(&Fake::new(61, "new"));
    assert_eq!(
        batch_kinds(&poller.poll_once().unwrap()),
        [(EventKind::Start, 61)]
    );
}

#[test]
fn backpressure_stretches_the_poll_interval_and_release_restores_it() {
    let fake = FakeProc::new();
    let mut poller = poller(&fake, false);
    assert_eq!(
        poller.schedule().current_interval(),
        Duration::from_millis(10)
    );
    poller.slow_down(true);
    assert!(poller.stats().slowed);
    assert_eq!(
        poller.schedule().current_interval(),
        Duration::from_millis(15)
    );
    poller.slow_down(false);
    assert!(!poller.stats().slowed);
    assert_eq!(
        poller.schedule().current_interval(),
        Duration::from_millis(10)
    );
}

#[test]
fn next_batch_is_cancel_safe_so_backpressure_can_interrupt_the_wait() {
    let fake = FakeProc::new();
    fake.put(&Fake::new(90, "x"));
    let mut poller = ProcPoller::with_reader(
        fake.reader(),
        PollSchedule::new(3_600_000, 1.5).unwrap(),
        true,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(
            batch_kinds(&poller.next_batch().await.unwrap()),
            [(EventKind::Start, 90)]
        );
        fake.put(&Fake::new(91, "y"));
        // The backpressure signal is ready while the poller waits for its hour: the wait is
        // abandoned (the future dropped) without reading anything.
        tokio::select! {
            biased;
            _ = poller.next_batch() => panic!("the next poll is an hour away"),
            () = std::future::ready(()) => poller.slow_down(true),
        }
        assert_eq!(poller.stats().polls, 1);
        assert_eq!(
            poller.schedule().current_interval(),
            Duration::from_secs(5400)
        );
        // Nothing was lost: the change is reported by the next poll.
        assert_eq!(
            batch_kinds(&poller.poll_once().unwrap()),
            [(EventKind::Start, 91)]
        );
    });
}

#[test]
fn the_async_poller_yields_successive_batches() {
    let fake = FakeProc::new();
    fake.put(&Fake::new(70, "x"));
    let mut poller = poller(&fake, true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let first = poller.next_batch().await.unwrap();
        assert_eq!(batch_kinds(&first), [(EventKind::Start, 70)]);
        fake.remove(70);
        let second = poller.next_batch().await.unwrap();
        assert_eq!(second.poll_number, 2);
        assert_eq!(batch_kinds(&second), [(EventKind::Stop, 70)]);
    });
}

// ---------------------------------------------------------------------------------------
// Properties: the parsers on arbitrary bytes (process names and argv are chosen by whoever
// starts a process), and the differ against a model.

mod properties {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use procmond_wal::source::proc::parse::{
        parse_boot_time_s, parse_cmdline, parse_exe_target, parse_stat, parse_status_uids,
    };
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn no_parser_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
            let _ = parse_status_uids(&bytes);
            let _ = parse_boot_time_s(&bytes);
            let _ = parse_cmdline(&bytes);
            let _ = parse_exe_target(OsStr::from_bytes(&bytes));
        }

        #[test]
        fn any_name_and_fields_round_trip_through_a_stat_line(
            comm in proptest::collection::vec(1u8..=255, 0..64),
            ppid in any::<u32>(),
            flags in any::<u32>(),
            utime in 0u64..(1 << 62),
            stime in 0u64..(1 << 62),
            start_ticks in any::<u64>(),
            rss in any::<i64>(),
        ) {
            let mut line = b"4242 (".to_vec();
            line.extend_from_slice(&comm);
            line.extend_from_slice(format!(
                ") R {ppid} 1 2 0 -1 {flags} 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start_ticks} 0 {rss} 0\n"
            ).as_bytes());
            let stat = parse_stat(&line).unwrap();
            prop_assert_eq!(stat.pid, 4242);
            prop_assert_eq!(stat.comm, String::from_utf8_lossy(&comm).into_owned());
            prop_assert_eq!(stat.ppid, ppid);
            prop_assert_eq!(stat.flags, flags);
            prop_assert_eq!(stat.cpu_ticks, utime + stime);
            prop_assert_eq!(stat.start_ticks, start_ticks);
            prop_assert_eq!(stat.rss_pages, u64::try_from(rss).unwrap_or(0));
        }

        #[test]
        fn the_differ_matches_a_model_on_random_snapshots(
            before in proptest::collection::btree_map(0u32..40, (0u64..3, 0u8..3, 0u8..2), 0..30),
            after in proptest::collection::btree_map(0u32..40, (0u64..3, 0u8..3, 0u8..2), 0..30),
        ) {
            use std::collections::BTreeSet;
            use procmond_wal::EventKind;
            use procmond_wal::source::proc::{ProcessRecord, Snapshot, diff};

            // (start ticks, argv variant, uid variant) per pid.
            let build = |spec: &std::collections::BTreeMap<u32, (u64, u8, u8)>| {
                let mut snapshot = Snapshot::new(chrono::DateTime::from_timestamp_nanos(0), std::time::Instant::now());
                for (&pid, &(start, argv, uid)) in spec {
                    let mut record = ProcessRecord::new(pid, start, "p");
                    record.argv = vec![format!("v{argv}")];
                    record.uid = Some(u32::from(uid));
                    snapshot.insert(record);
                }
                snapshot
            };
            let (old, new) = (build(&before), build(&after));
            let changes = diff(&old, &new);

            let mut stops = BTreeSet::new();
            let mut starts = BTreeSet::new();
            let mut modifies = BTreeSet::new();
            let mut last: Option<(u32, EventKind)> = None;
            for change in &changes {
                let (pid, kind) = (change.pid(), change.kind());
                if let Some((last_pid, last_kind)) = last {
                    // Ordered by pid; within a pid only Stop then Start.
                    prop_assert!(last_pid < pid || (last_pid == pid && last_kind == EventKind::Stop && kind == EventKind::Start));
                }
                last = Some((pid, kind));
                let fresh = match kind {
                    EventKind::Stop => stops.insert(pid),
                    EventKind::Start => starts.insert(pid),
                    EventKind::Modify => modifies.insert(pid),
                };
                prop_assert!(fresh, "one change of each kind per pid at most");
            }
            let same = |pid: &u32| before.get(pid).map(|b| b.0) == after.get(pid).map(|a| a.0);
            let expected_stops: BTreeSet<u32> = before.keys().filter(|pid| !same(pid)).copied().collect();
            let expected_starts: BTreeSet<u32> = after.keys().filter(|pid| !same(pid)).copied().collect();
            let expected_modifies: BTreeSet<u32> = before
                .iter()
                .filter(|(pid, b)| after.get(pid).is_some_and(|a| a.0 == b.0 && (a.1, a.2) != (b.1, b.2)))
                .map(|(pid, _)| *pid)
                .collect();
            prop_assert_eq!(stops, expected_stops);
            prop_assert_eq!(starts, expected_starts);
            prop_assert_eq!(modifies, expected_modifies);
        }

        #[test]
        fn any_argv_round_trips_through_cmdline(
            argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..20), 0..8),
        ) {
            let mut cmdline = Vec::new();
            for arg in &argv {
                cmdline.extend_from_slice(arg);
                cmdline.push(0);
            }
            let expected: Vec<String> = argv
                .iter()
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            prop_assert_eq!(parse_cmdline(&cmdline), expected);
        }
    }
}
