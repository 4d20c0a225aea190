//! `Wal::open` works wherever a caller may be: inside a multi-thread or a current-thread tokio
//! runtime (where dropping another runtime panics, so the io_uring probe must not build and
//! drop its ring on the caller's thread) and on a plain thread, with `Auto` and with `Uring`
//! (skipped with a printed reason where io_uring cannot run). The log it opens takes appends
//! and reopens with them.

mod common;

use std::path::Path;

use common::{event, kind, small_config};
use procmond_wal::io::BackendKind;
use procmond_wal::wal::{BackendChoice, Wal};

/// The choices to try: `Auto` always, `Uring` where it can run.
fn choices() -> Vec<BackendChoice> {
    let mut choices = vec![BackendChoice::Auto];
    if common::uring_or_skip() {
        choices.push(BackendChoice::Uring);
    }
    choices
}

/// What `Auto` must pick here.
fn expected_auto() -> BackendKind {
    if common::uring_unavailable().is_none() {
        BackendKind::Uring
    } else {
        BackendKind::Portable
    }
}

fn expected(choice: BackendChoice) -> BackendKind {
    match choice {
        BackendChoice::Uring => BackendKind::Uring,
        _ => expected_auto(),
    }
}

/// Opens from inside async code, appends, closes; returns the backend that was used.
async fn open_append_close(dir: &Path, choice: BackendChoice, count: u64) -> BackendKind {
    let (wal, report) = Wal::open(small_config(dir, choice)).expect("open inside a runtime");
    let first = report.next_sequence;
    for i in first..first + count {
        assert_eq!(wal.append(event(i), kind(i)).await.expect("append"), i);
    }
    let backend = wal.backend();
    wal.close().await.expect("close");
    backend
}

fn reopened_events(dir: &Path) -> u64 {
    procmond_wal::wal::recovery::read_dir(dir)
        .expect("read back")
        .events
}

#[test]
fn open_works_inside_a_multi_thread_runtime() {
    for choice in choices() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // Twice: the second open also reads what the first wrote.
        for _ in 0..2 {
            let backend = runtime.block_on(open_append_close(dir.path(), choice, 5));
            assert_eq!(backend, expected(choice), "{choice:?}");
        }
        // Also from a spawned task on a worker thread.
        let path = dir.path().to_owned();
        let task = runtime.spawn(async move { open_append_close(&path, choice, 5).await });
        let backend = runtime.block_on(task).expect("task");
        assert_eq!(backend, expected(choice), "{choice:?}");
        drop(runtime);
        assert_eq!(reopened_events(dir.path()), 15, "{choice:?}");
    }
}

#[test]
fn open_works_inside_a_current_thread_runtime() {
    for choice in choices() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..2 {
            let backend = runtime.block_on(open_append_close(dir.path(), choice, 5));
            assert_eq!(backend, expected(choice), "{choice:?}");
        }
        drop(runtime);
        assert_eq!(reopened_events(dir.path()), 10, "{choice:?}");
    }
}

#[test]
fn open_works_on_a_plain_thread_and_the_handle_moves_to_a_runtime() {
    for choice in choices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let (wal, _) = std::thread::spawn(move || Wal::open(small_config(&path, choice)))
            .join()
            .expect("opener thread")
            .expect("open on a plain thread");
        assert_eq!(wal.backend(), expected(choice), "{choice:?}");
        common::runtime().block_on(async {
            for i in 1..=5 {
                assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
            }
            wal.close().await.unwrap();
        });
        assert_eq!(reopened_events(dir.path()), 5, "{choice:?}");
    }
}
