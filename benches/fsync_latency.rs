//! Latency of one 4 KiB O_DIRECT overwrite followed by `fdatasync`, the disk's floor for one
//! awaiting WAL caller, submitted four ways: plain syscalls (`pwrite` + `fdatasync`, what fio's
//! `psync` engine does), io_uring with the write and the sync as separate submissions (what the
//! WAL's tokio-uring backend does), io_uring with the two linked in the kernel
//! (`IOSQE_IO_LINK`: one submission, the sync starts when the write completes), and linked with
//! a registered buffer and a registered file.
//!
//! Run: `cargo bench --bench fsync_latency` (`FSYNC_LATENCY_DIR` picks the filesystem, default
//! the current directory; `FSYNC_LATENCY_OPS` the operations per way, default 2000). The ways
//! take turns in rounds of 100 operations so that a change in the machine's load hits all of
//! them alike. The file (16 MiB) is written and synced first, so every write overwrites
//! written blocks; writes walk it block by block.
//!
//! Must never: run as a test (it needs O_DIRECT and io_uring and takes seconds), or leave its
//! file behind.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

use io_uring::{IoUring, opcode, squeue, types};

const BLOCK_BYTES: usize = 4096;
const FILE_BYTES: u64 = 16 * 1024 * 1024;
const ROUND_OPS: usize = 100;

/// A block-aligned buffer for O_DIRECT.
struct Block {
    ptr: *mut u8,
    layout: Layout,
}

impl Block {
    fn new() -> Block {
        let layout = Layout::from_size_align(BLOCK_BYTES, BLOCK_BYTES).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Block { ptr, layout }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised bytes owned by this value.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Syscalls,
    UringSeparate,
    UringLinked,
    UringLinkedRegistered,
}

impl Way {
    const ALL: [Way; 4] = [
        Way::Syscalls,
        Way::UringSeparate,
        Way::UringLinked,
        Way::UringLinkedRegistered,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::Syscalls => "pwrite + fdatasync (syscalls)",
            Way::UringSeparate => "io_uring, write then sync",
            Way::UringLinked => "io_uring, linked",
            Way::UringLinkedRegistered => "io_uring, linked, registered",
        }
    }
}

struct Bench {
    file: File,
    block: Block,
    ring: IoUring,
    next_block: u64,
}

impl Bench {
    fn offset(&mut self) -> u64 {
        let offset = self.next_block * BLOCK_BYTES as u64;
        self.next_block = (self.next_block + 1) % (FILE_BYTES / BLOCK_BYTES as u64);
        offset
    }

    fn one(&mut self, way: Way) -> io::Result<()> {
        let offset = self.offset();
        let fd = types::Fd(self.file.as_raw_fd());
        let ptr = self.block.ptr.cast_const();
        let len = BLOCK_BYTES as u32;
        match way {
            Way::Syscalls => {
                self.file.write_all_at(self.block.as_slice(), offset)?;
                self.file.sync_data()
            }
            Way::UringSeparate => {
                let write = opcode::Write::new(fd, ptr, len).offset(offset).build();
                self.submit(&[write])?;
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.submit(&[sync])
            }
            Way::UringLinked => {
                let write = opcode::Write::new(fd, ptr, len)
                    .offset(offset)
                    .build()
                    .flags(squeue::Flags::IO_LINK);
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.submit(&[write, sync])
            }
            Way::UringLinkedRegistered => {
                let write = opcode::WriteFixed::new(types::Fixed(0), ptr, len, 0)
                    .offset(offset)
                    .build()
                    .flags(squeue::Flags::IO_LINK);
                let sync = opcode::Fsync::new(types::Fixed(0))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.submit(&[write, sync])
            }
        }
    }

    /// Submits `entries` and waits for all their completions; a short write or any error
    /// fails (a linked sync after a short write completes with `ECANCELED`).
    fn submit(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        for entry in entries {
            // SAFETY: every buffer and file an entry names (the block, the file, the
            // registered index 0) outlives the wait below, which reaps all completions.
            unsafe {
                self.ring
                    .submission()
                    .push(entry)
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
        }
        self.ring.submit_and_wait(entries.len())?;
        let mut done = 0;
        for completion in self.ring.completion() {
            done += 1;
            let result = completion.result();
            if result < 0 {
                return Err(io::Error::from_raw_os_error(-result));
            }
        }
        assert_eq!(done, entries.len(), "completions missing");
        Ok(())
    }
}

fn percentile(sorted_us: &[f64], fraction: f64) -> f64 {
    let index = ((sorted_us.len() as f64 - 1.0) * fraction).round() as usize;
    sorted_us[index]
}

fn main() -> io::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other flags: run only
    // when asked to bench.
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let dir = std::env::var("FSYNC_LATENCY_DIR").unwrap_or_else(|_| ".".into());
    let ops: usize = std::env::var("FSYNC_LATENCY_OPS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2000);
    let scratch = tempfile::Builder::new()
        .prefix("fsync-latency")
        .tempdir_in(&dir)?;
    let path = scratch.path().join("overwrite.dat");
    {
        // Written and synced first: the timed writes overwrite written blocks.
        let file = File::create(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for chunk in 0..FILE_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, chunk * zeros.len() as u64)?;
        }
        file.sync_all()?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let block = Block::new();
    let ring = IoUring::new(8)?;
    let iovec = libc::iovec {
        iov_base: block.ptr.cast(),
        iov_len: BLOCK_BYTES,
    };
    // SAFETY: the registered buffer is `block`, which lives as long as the ring (both are
    // fields of `bench`, and the ring is dropped first).
    unsafe { ring.submitter().register_buffers(&[iovec])? };
    ring.submitter().register_files(&[file.as_raw_fd()])?;
    let mut bench = Bench {
        ring,
        file,
        block,
        next_block: 0,
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ops); Way::ALL.len()];
    // Warm-up: one round of each way, not recorded.
    for way in Way::ALL {
        for _ in 0..10 {
            bench.one(way)?;
        }
    }
    let rounds = ops.div_ceil(ROUND_OPS);
    for _ in 0..rounds {
        for (index, way) in Way::ALL.into_iter().enumerate() {
            for _ in 0..ROUND_OPS {
                let started = Instant::now();
                bench.one(way)?;
                samples[index].push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    println!(
        "4 KiB O_DIRECT overwrite + fdatasync in {dir}: {} operations per way, rounds of {ROUND_OPS}",
        rounds * ROUND_OPS
    );
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>11}",
        "way", "p50 µs", "p99 µs", "mean µs", "p50 ratio"
    );
    let mut reference_p50 = None;
    for (index, way) in Way::ALL.into_iter().enumerate() {
        let sorted = &mut samples[index];
        sorted.sort_by(f64::total_cmp);
        let p50 = percentile(sorted, 0.50);
        let p99 = percentile(sorted, 0.99);
        let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
        let reference = *reference_p50.get_or_insert(p50);
        println!(
            "{:<32} {:>9.1} {:>9.1} {:>9.1} {:>10.2}×",
            way.name(),
            p50,
            p99,
            mean,
            p50 / reference
        );
    }
    // The ring (with its registrations) goes before the buffer and the file.
    drop(bench.ring);
    Ok(())
}
