//! Regression test: with `Preallocation::None` the writer prepares the next segment as an
//! empty file. Reading the directory once reported that file as a damaged header (`Truncated`,
//! not `Blank`), so `verify` exited 1 on an undamaged log (fixed in `SegmentHeader::decode`).

mod common;

use std::process::Command;

use common::{event, kind, runtime, small_config};
use procmond_wal::io::Preallocation;
use procmond_wal::wal::Wal;
use procmond_wal::wal::recovery::read_dir;

#[test]
fn a_prepared_segment_without_preallocation_is_blank_not_damage() {
    for backend in common::BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path(), backend);
        config.preallocation = Preallocation::None;
        let (wal, _) = Wal::open(config).unwrap();
        runtime().block_on(async {
            for i in 1..=10 {
                wal.append(event(i), kind(i)).await.unwrap();
            }
            wal.close().await.unwrap();
        });
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        let verify = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
            .arg("verify")
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(verify.status.code(), Some(0), "{backend:?}");
    }
}
