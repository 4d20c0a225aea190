//! Opening a WAL directory for writing: create it, take the lock, read it (recovery), refuse
//! files named like segments that are not provably this log's own, carry out recovery's
//! decisions (cut a torn tail, drop surplus blank segments and recycled segments that were
//! never written), pick the backend and start the ring thread.
//!
//! It must never overwrite, zero or delete bytes it cannot prove are its own, and every cut
//! of a torn tail is logged (segment, path, offset, byte count) at warning level.

use std::collections::VecDeque;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::config::{BackendChoice, WalConfig};
use super::error::WalError;
use super::format::{self, BLOCK_BYTES, HeaderError, SEGMENT_HEADER_BYTES};
use super::lock::DirLock;
use super::naming;
use super::recovery::{self, OpenReport};
use super::recycle;
use super::stats::Shared;
use super::writer::{Command, Plan, Resume, Sealed, Writer};
use crate::io::portable::PortableBackend;
use crate::io::probe;
#[cfg(any(test, feature = "testing"))]
use crate::io::sim::{SimBackend, SimDisk};
use crate::io::uring::UringBackend;
use crate::io::{self as wal_io, BackendKind};

/// Group buffers per backend: one in flight, one being filled.
const GROUP_BUFFERS: usize = 2;

/// What `open` hands to the handle.
pub(crate) struct Opened {
    pub commands: mpsc::Sender<Command>,
    pub shared: Arc<Shared>,
    pub backend: BackendKind,
    pub report: OpenReport,
    pub thread: std::thread::JoinHandle<()>,
}

/// A task to run on the ring thread beside the writer (the connector's link lives there, so
/// the WAL files and the broker socket share one ring). It is started before the writer and
/// learns which backend the ring runs; it must finish before the log is closed, because the
/// ring thread's runtime ends with the writer.
pub(crate) type RingTask = Box<dyn FnOnce(BackendKind) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub(crate) fn open(config: WalConfig, ring_task: Option<RingTask>) -> Result<Opened, WalError> {
    config.validate()?;
    let dir = config.dir.clone();
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| WalError::io("create WAL directory", &dir, e))?;
        // The new directory's name must be durable before anything in it is acknowledged.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            wal_io::sync_dir_blocking(parent)
                .map_err(|e| WalError::io("fsync parent of WAL directory", parent, e))?;
        }
    }
    let lock = DirLock::acquire(&dir)?;
    let mut report = recovery::read_dir(&dir)?;
    if move_aside_torn_first_writes(&dir, &report)? {
        report = recovery::read_dir(&dir)?;
    }
    refuse_foreign_files(&report)?;
    let plan = plan(&config, &report)?;
    let backend_kind = choose_backend(&config)?;

    let shared = Arc::new(Shared::default());
    let (commands, receiver) = mpsc::channel(config.queue_max_commands);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread_shared = Arc::clone(&shared);
    #[cfg(any(test, feature = "testing"))]
    let sim_disk = config.sim_disk.clone();
    let buffer_bytes = config.group_buffer_bytes();
    let thread = std::thread::Builder::new()
        .name("procmond-wal-ring".into())
        .spawn(move || {
            let _lock = lock; // Released when the ring thread ends.
            let setup = RingSetup {
                #[cfg(any(test, feature = "testing"))]
                sim_disk,
                kind: backend_kind,
                buffer_bytes,
                ring_task,
            };
            ring_main(setup, plan, thread_shared, receiver, ready_tx);
        })
        .map_err(|e| WalError::io("spawn ring thread", &dir, e))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            let _ = thread.join();
            return Err(error);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(WalError::Closed);
        }
    }
    tracing::info!(
        dir = %dir.display(),
        backend = %backend_kind,
        segments = report.segments.len(),
        events = report.events,
        next_sequence = report.next_sequence,
        acked_through = report.acked_through,
        skipped = report.skipped_regions(),
        lost = report.lost_events,
        torn_tail_bytes = report.torn_tail_bytes,
        "WAL opened"
    );
    Ok(Opened {
        commands,
        shared,
        backend: backend_kind,
        report,
        thread,
    })
}

/// Refuses to open when a file named like a segment cannot be proven to be one of this log's
/// own, because opening would write into it (resume, reuse as prepared), zero its tail or
/// delete it after a checkpoint. A file is proven ours by a valid header, by at least one
/// valid record (frame CRCs are seeded with the segment number, so foreign bytes do not pass
/// them), or by being blank: every byte zero, as a prepared segment is before its first write.
fn refuse_foreign_files(report: &OpenReport) -> Result<(), WalError> {
    let last_written = report.last_written_index();
    for (index, segment) in report.segments.iter().enumerate() {
        if segment.header.is_some() || segment.events > 0 || segment.checkpoints > 0 {
            continue;
        }
        // Its header is this log's (the salt matches), for an older number: renamed for
        // recycling, never written since; open removes it.
        if segment.is_unused_recycled() && last_written.is_none_or(|last| index > last) {
            continue;
        }
        let reason = match segment.header_problem {
            Some(HeaderError::Blank) => {
                if segment.is_blank() && header_block_is_zero(&segment.path)? {
                    continue;
                }
                "its header is blank but the file holds non-zero bytes and no valid record"
                    .to_owned()
            }
            Some(problem) => format!("{problem}, and the file holds no valid record"),
            None => "its header names another segment number".to_owned(),
        };
        tracing::error!(
            path = %segment.path.display(),
            %reason,
            "refusing to open: a file named like a WAL segment is not one"
        );
        return Err(WalError::NotASegment {
            path: segment.path.clone(),
            reason,
        });
    }
    Ok(())
}

/// A crash during the first write to a new segment (its header goes out with its first group)
/// can leave a file whose header sector never landed while later sectors of that group did.
/// Nothing in it was acknowledged (an acknowledgement follows the sync of the whole write),
/// but the bytes cannot be proven to be ours either (without a header there is no salt to
/// check records against). Such a file, newer than every segment that holds a header or a
/// record, is renamed aside (`<name>.torn`, never overwritten or deleted) so the log can go on;
/// anything else unprovable is refused by [`refuse_foreign_files`]. Returns whether a file
/// was moved.
fn move_aside_torn_first_writes(dir: &Path, report: &OpenReport) -> Result<bool, WalError> {
    let newest_proven = report
        .segments
        .iter()
        .filter(|s| s.header.is_some() || s.events > 0 || s.checkpoints > 0)
        .map(|s| s.number)
        .max()
        .unwrap_or(0);
    let mut moved = false;
    for segment in &report.segments {
        let torn_first_write = segment.number > newest_proven
            && segment.header_problem == Some(HeaderError::Blank)
            && !(segment.is_blank() && header_block_is_zero(&segment.path)?)
            && header_block_is_zero_but_salt_copy(&segment.path)?;
        if !torn_first_write {
            continue;
        }
        let mut aside = segment.path.with_extension("wal.torn");
        let mut attempt = 1;
        while aside.exists() {
            attempt += 1;
            aside = segment.path.with_extension(format!("wal.torn.{attempt}"));
        }
        fs::rename(&segment.path, &aside)
            .map_err(|e| WalError::io("move a torn first write aside", &segment.path, e))?;
        tracing::warn!(
            path = %segment.path.display(),
            moved_to = %aside.display(),
            bytes = segment.file_bytes,
            "a segment's first write was torn by a crash (header missing, nothing in it was \
             acknowledged); moved aside, not deleted"
        );
        moved = true;
    }
    if moved {
        wal_io::sync_dir_blocking(dir)
            .map_err(|e| WalError::io("fsync WAL directory after moving aside", dir, e))?;
    }
    Ok(moved)
}

/// Whether the header block is zero apart from the salt copy, as after a torn first write in
/// which the sector holding the salt copy landed and the one holding the header did not.
fn header_block_is_zero_but_salt_copy(path: &Path) -> Result<bool, WalError> {
    let file =
        wal_io::open_for_read(path).map_err(|e| WalError::io("read segment header", path, e))?;
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    read_available_at(&file, &mut block, 0)
        .map_err(|e| WalError::io("read segment header", path, e))?;
    let salt_copy = format::SALT_COPY_OFFSET..format::SALT_COPY_OFFSET + 8;
    Ok(block
        .iter()
        .enumerate()
        .all(|(at, &byte)| byte == 0 || salt_copy.contains(&at)))
}

/// Whether the whole header block (or as much of it as the file has) is zero: recovery only
/// checks the header's used bytes, and a prepared segment is zero throughout.
fn header_block_is_zero(path: &std::path::Path) -> Result<bool, WalError> {
    let file =
        wal_io::open_for_read(path).map_err(|e| WalError::io("read segment header", path, e))?;
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    read_available_at(&file, &mut block, 0)
        .map_err(|e| WalError::io("read segment header", path, e))?;
    Ok(block.iter().all(|&byte| byte == 0))
}

/// Picks the backend. The io_uring probe builds and drops its test ring on a thread of its
/// own (see [`probe::probe_ring`]), so this is safe inside a caller's tokio runtime.
fn choose_backend(config: &WalConfig) -> Result<BackendKind, WalError> {
    match config.backend {
        BackendChoice::Portable => Ok(BackendKind::Portable),
        #[cfg(any(test, feature = "testing"))]
        BackendChoice::Simulated => Ok(BackendKind::Simulated),
        BackendChoice::Uring => match probe::probe_uring(&config.dir) {
            Ok(()) => Ok(BackendKind::Uring),
            Err(problem) => Err(WalError::io(
                "start io_uring backend",
                &config.dir,
                problem.into_io_error(),
            )),
        },
        BackendChoice::Auto => match probe::probe_uring(&config.dir) {
            Ok(()) => Ok(BackendKind::Uring),
            Err(problem) => {
                tracing::warn!(%problem, "using the portable I/O backend");
                Ok(BackendKind::Portable)
            }
        },
    }
}

/// What the ring thread is started with besides the writer's plan.
struct RingSetup {
    #[cfg(any(test, feature = "testing"))]
    sim_disk: Option<SimDisk>,
    kind: BackendKind,
    buffer_bytes: usize,
    ring_task: Option<RingTask>,
}

fn ring_main(
    setup: RingSetup,
    plan: Plan,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    ready: std::sync::mpsc::Sender<Result<(), WalError>>,
) {
    let RingSetup {
        #[cfg(any(test, feature = "testing"))]
        sim_disk,
        kind,
        buffer_bytes,
        ring_task,
    } = setup;
    let dir = plan.config.dir.clone();
    match kind {
        BackendKind::Uring => {
            let runtime = match probe::uring_runtime(probe::RING_ENTRIES) {
                Ok(runtime) => runtime,
                Err(problem) => {
                    let error = problem.into_io_error();
                    let _ = ready.send(Err(WalError::io("start io_uring runtime", &dir, error)));
                    return;
                }
            };
            runtime.block_on(async move {
                if let Some(task) = ring_task {
                    tokio::task::spawn_local(task(kind));
                }
                let backend = UringBackend::new(buffer_bytes, GROUP_BUFFERS);
                tracing::debug!(registered = backend.registered(), "io_uring group buffers");
                serve(backend, plan, shared, commands, ready).await;
            });
        }
        // Portable, and with the `testing` feature also Simulated.
        _ => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(WalError::io("start runtime", &dir, error)));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                if let Some(task) = ring_task {
                    tokio::task::spawn_local(task(kind));
                }
                #[cfg(any(test, feature = "testing"))]
                if let (BackendKind::Simulated, Some(disk)) = (kind, sim_disk) {
                    let backend = SimBackend::new(disk, buffer_bytes, GROUP_BUFFERS);
                    serve(backend, plan, shared, commands, ready).await;
                    return;
                }
                let backend = PortableBackend::new(buffer_bytes, GROUP_BUFFERS);
                serve(backend, plan, shared, commands, ready).await;
            });
        }
    }
}

async fn serve<B: wal_io::Backend>(
    backend: B,
    plan: Plan,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    ready: std::sync::mpsc::Sender<Result<(), WalError>>,
) {
    if let Err(error) = sync_at_open(&backend, &plan).await {
        let _ = ready.send(Err(error));
        return;
    }
    match Writer::start(backend, plan, shared).await {
        Ok(writer) => {
            let _ = ready.send(Ok(()));
            writer.run(commands).await;
        }
        Err(error) => {
            let _ = ready.send(Err(error));
        }
    }
}

/// Makes durable everything recovery trusts, before the writer acknowledges anything or
/// deletes a segment: every segment kept (a process that died between a group's write and
/// its sync left that group in the page cache only, and recovery read it from there), the
/// reused blank segment, and the directory (entries created or removed by the previous run
/// or by [`plan`]).
///
/// After a failed `fdatasync` in the previous run of this boot, this is not enough: the
/// kernel may have marked the failed pages clean, so the page cache shows bytes the device
/// does not hold and a new sync has nothing to write. Only a reboot, or reading the segments
/// back from the device (O_DIRECT), tells the truth then (docs/design.md, "Recovery").
async fn sync_at_open<B: wal_io::Backend>(backend: &B, plan: &Plan) -> Result<(), WalError> {
    let dir = &plan.config.dir;
    let mut paths: Vec<PathBuf> = plan.sealed.iter().map(|s| s.path.clone()).collect();
    paths.extend(
        plan.resume
            .iter()
            .map(|resume| resume.number)
            .chain(plan.prepared_blank)
            .map(|number| naming::segment_path(dir, number)),
    );
    for path in &paths {
        let file = backend
            .open_segment(path)
            .await
            .map_err(|e| WalError::io("open segment at open", path, e))?;
        backend
            .sync_data(&file)
            .await
            .map_err(|e| WalError::io("fdatasync segment at open", path, e))?;
    }
    backend
        .sync_dir(dir)
        .await
        .map_err(|e| WalError::io("fsync WAL directory at open", dir, e))
}

/// Turns recovery's report into the writer's starting state, cutting a torn tail and removing
/// surplus blank segments on the way.
fn plan(config: &WalConfig, report: &OpenReport) -> Result<Plan, WalError> {
    let last_written = report.last_written_index();
    let mut prepared_blank = None;
    for (index, segment) in report.segments.iter().enumerate() {
        let trailing = last_written.is_none_or(|last| index > last);
        if trailing && segment.is_unused_recycled() {
            // Renamed for recycling, new header never written: nothing in it is this
            // segment's, and what it held was acknowledged before it was renamed.
            tracing::info!(
                segment = segment.number,
                path = %segment.path.display(),
                "removing a recycled WAL segment that was never written"
            );
            fs::remove_file(&segment.path)
                .map_err(|e| WalError::io("remove unused recycled segment", &segment.path, e))?;
            continue;
        }
        if trailing && segment.is_blank() {
            if prepared_blank.is_none() && segment.file_bytes == config.segment_max_bytes {
                prepared_blank = Some(segment.number);
            } else {
                fs::remove_file(&segment.path)
                    .map_err(|e| WalError::io("remove surplus blank segment", &segment.path, e))?;
            }
        }
    }
    if let Some(salt) = report.salt {
        for segment in &report.segments {
            repair_header(segment, salt, report.next_sequence, HeaderRepair::Blank)?;
        }
        if let Some(last) = last_written {
            let newest = &report.segments[last];
            repair_header(newest, salt, report.next_sequence, HeaderRepair::Stale)?;
        }
    }
    let mut sealed: VecDeque<Sealed> = VecDeque::new();
    let mut resume = None;
    if let Some(last) = last_written {
        for segment in &report.segments[..last] {
            sealed.push_back(Sealed {
                number: segment.number,
                path: segment.path.clone(),
                last_sequence: segment.last_sequence,
                recyclable: segment.file_bytes == config.segment_max_bytes,
            });
        }
        let segment = &report.segments[last];
        // Only a torn tail (recovery found it hides no acknowledged record) is cut; a damaged
        // end is kept as evidence and writing goes on in a new segment.
        let damaged_end =
            segment.tail_nonzero_end > segment.data_end && report.torn_tail_bytes == 0;
        if segment.tail_nonzero_end > segment.data_end && !damaged_end {
            tracing::warn!(
                segment = segment.number,
                path = %segment.path.display(),
                offset = segment.data_end,
                bytes = segment.tail_nonzero_end - segment.data_end,
                "cutting the torn tail of the newest WAL segment (zeroing bytes after its last valid record)"
            );
            wal_io::zero_range_and_sync(
                &segment.path,
                segment.data_end,
                segment.tail_nonzero_end - segment.data_end,
            )
            .map_err(|e| WalError::io("cut torn tail", &segment.path, e))?;
        }
        // Frames of the current version only go into a segment of the current version.
        let resumable = !damaged_end
            && segment.unreadable_bytes == 0
            && segment
                .header
                .is_some_and(|header| header.version == format::FORMAT_VERSION)
            && segment.data_end < config.segment_rotate_bytes()
            && segment.file_bytes <= config.segment_max_bytes;
        if resumable {
            let tail_offset = format::align_down_u64(segment.data_end, BLOCK_BYTES as u64);
            let mut tail_bytes = vec![0u8; (segment.data_end - tail_offset) as usize];
            let file = wal_io::open_for_read(&segment.path)
                .map_err(|e| WalError::io("read segment tail", &segment.path, e))?;
            // The file may end inside the last frame's padding: what is missing stays zero.
            read_available_at(&file, &mut tail_bytes, tail_offset)
                .map_err(|e| WalError::io("read segment tail", &segment.path, e))?;
            resume = Some(Resume {
                number: segment.number,
                tail_offset,
                tail_bytes,
                last_sequence: segment.last_sequence,
                has_records: segment.data_end > SEGMENT_HEADER_BYTES as u64,
            });
        } else {
            // Full, or its header is damaged: keep it sealed and start a new segment.
            sealed.push_back(Sealed {
                number: segment.number,
                path: segment.path.clone(),
                last_sequence: segment.last_sequence,
                recyclable: segment.file_bytes == config.segment_max_bytes,
            });
        }
    }
    // Numbers stay contiguous: the next segment follows the highest one kept.
    let max_number = last_written
        .map(|last| report.segments[last].number)
        .into_iter()
        .chain(prepared_blank)
        .max()
        .unwrap_or(0);
    Ok(Plan {
        config: config.clone(),
        resume,
        prepared_blank,
        sealed,
        next_sequence: report.next_sequence,
        acked_through: report.acked_through,
        checkpoint_segment: report.checkpoint_segment.unwrap_or(0),
        next_segment_number: max_number + 1,
        // One value per log: kept from the segments found, new for an empty directory.
        salt: report.salt.unwrap_or_else(format::new_wal_salt),
    })
}

/// A header problem that open mends in a segment whose records recovery verified with the
/// log's salt.
#[derive(Clone, Copy)]
enum HeaderRepair {
    /// The header block never reached the disk (zero apart from the salt's copy). Without
    /// a header, the salt is known only from other segments; once those are deleted (a
    /// checkpoint in this segment covers them), its records, and the checkpoint keeping
    /// sequences from being reused, could no longer be verified.
    Blank,
    /// A recycled segment whose new header never reached the disk but some of whose new
    /// records did (a torn first write): the block still holds the header of the file's
    /// earlier use (a lower number, this log's salt), so it is this log's own. It gets its
    /// header back with the recycled flag.
    Stale,
}

/// Gives `segment` its own header back when it has `repair`'s problem and holds records.
/// The block is read again first and rewritten only if it is still exactly what recovery
/// saw: nothing that is not this log's own header is ever overwritten.
fn repair_header(
    segment: &recovery::SegmentReport,
    salt: u64,
    next_sequence: u64,
    repair: HeaderRepair,
) -> Result<(), WalError> {
    let has_problem = match repair {
        HeaderRepair::Blank => segment.header_problem == Some(format::HeaderError::Blank),
        HeaderRepair::Stale => segment.stale_header_number.is_some(),
    };
    let has_records = segment.events > 0 || segment.checkpoints > 0;
    if !has_problem || !has_records {
        return Ok(());
    }
    let path = &segment.path;
    let op = match repair {
        HeaderRepair::Blank => "repair blank segment header",
        HeaderRepair::Stale => "repair stale segment header",
    };
    let io_error = |e| WalError::io(op, path, e);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error)?;
    let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
    read_available_at(&file, &mut block, 0).map_err(io_error)?;
    let still_as_found = match repair {
        HeaderRepair::Blank => {
            let copy = format::SALT_COPY_OFFSET..format::SALT_COPY_OFFSET + 8;
            block.iter().enumerate().all(|(at, &byte)| {
                byte == 0 || (copy.contains(&at) && block[copy.clone()] == salt.to_le_bytes())
            })
        }
        HeaderRepair::Stale => format::SegmentHeader::decode(&block)
            .is_ok_and(|old| recycle::is_stale_header(&old, segment.number, Some(salt))),
    };
    if !still_as_found {
        return Ok(());
    }
    let header = format::SegmentHeader {
        version: format::FORMAT_VERSION,
        segment_number: segment.number,
        first_sequence: segment.first_sequence.unwrap_or(next_sequence),
        created_unix_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        salt,
    };
    let mut new_block = header.encode_block();
    match repair {
        HeaderRepair::Blank => tracing::info!(
            segment = segment.number,
            first_sequence = header.first_sequence,
            "rewriting the blank header of a WAL segment whose records are valid"
        ),
        HeaderRepair::Stale => {
            recycle::mark_recycled(&mut new_block);
            tracing::info!(
                segment = segment.number,
                first_sequence = header.first_sequence,
                "rewriting the stale header of a recycled WAL segment whose new records are valid"
            );
        }
    }
    file.write_all_at(&new_block, 0).map_err(io_error)?;
    file.sync_data().map_err(io_error)
}

/// Reads as much of `buf` as the file holds from `offset` (the rest stays as it is).
fn read_available_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
