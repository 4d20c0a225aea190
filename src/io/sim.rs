//! The simulated backend for fault-injection tests: real files as the page cache, plus a model
//! of what the device has made durable, file data and directory entries alike.
//!
//! - **File data.** Every write lands in the real file at once, which plays the page cache:
//!   the process, and a reopen without power loss, sees it. `sync_data` makes the file's
//!   current content durable (whatever wrote it, as `fdatasync` does).
//! - **Directory entries.** A created file's name, a removed file's absence and a renamed
//!   file's new name become durable only with `sync_dir` on its directory (a power loss before
//!   it brings a renamed file back under its old name, with its durable content).
//! - **Power loss** ([`SimDisk::crash`]): a file whose creation was never made durable
//!   vanishes; a removed file whose removal was never made durable reappears with its durable
//!   content; every other file is reset to its durable content plus a seeded subset of the
//!   512-byte sectors that differ from it (so a multi-sector write may be torn, but each sector
//!   is old or new: the sector-atomicity assumption of `docs/design.md`).
//! - **Process death** ([`SimDisk::kill_process`], then [`SimDisk::restart`]): every operation
//!   fails until the log is reopened; nothing is lost from the page cache.
//! - **Faults**: EIO on the next write, sync or unlink; a byte budget for ENOSPC; and a stall
//!   that holds every write and sync until released (to show that queues stay bounded).
//!
//! Files the model never saw (created by a test, or before the disk was attached) count as
//! durable when first opened. Must never: touch files outside what the log opens or creates.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{AlignedBuf, Backend, BackendKind, Preallocation};

/// Size of the device's atomic write unit in the model.
pub const SECTOR_BYTES: usize = 512;

/// What the next matching operation should fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail the next segment write with EIO.
    WriteEio,
    /// Fail the next `fdatasync` with EIO.
    SyncEio,
    /// Fail the next file removal with EIO (the file stays).
    RemoveEio,
}

/// What a power loss keeps of the data that was written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// A seeded random subset of the differing sectors lands.
    Seeded(u64),
    /// Nothing unsynced lands (the harshest case for anything trusted without a sync).
    DropAll,
}

#[derive(Debug, Default)]
struct FileModel {
    /// The file's content on the device: as of its last sync.
    durable: Vec<u8>,
    /// Ranges written through the backend since the last sync.
    dirty: Vec<(u64, usize)>,
    /// The whole file may differ from `durable` (it was opened after changes the model did
    /// not see, such as a torn tail cut at open): the next sync reads all of it.
    all_dirty: bool,
}

impl FileModel {
    fn clean(durable: Vec<u8>) -> FileModel {
        FileModel {
            durable,
            dirty: Vec::new(),
            all_dirty: false,
        }
    }
}

#[derive(Debug, Default)]
struct DiskState {
    /// Every file the model knows, including removed files whose removal is not yet durable.
    files: HashMap<PathBuf, FileModel>,
    /// Names the device's directories hold.
    durable_entries: HashSet<PathBuf>,
    faults: Vec<Fault>,
    /// Bytes of new allocation still allowed (None: unlimited); models ENOSPC.
    space_left_bytes: Option<u64>,
    writes: u64,
    syncs: u64,
    dir_syncs: u64,
    /// After a power cut or process kill every operation fails until crash/restart.
    powered_off: bool,
    /// Writes wait while set.
    writes_stalled: bool,
    /// Syncs wait while set.
    syncs_stalled: bool,
    /// Operations currently waiting on the stall.
    stalled_ops: u64,
}

/// A handle to one simulated disk, shared by the backend and the test that drives it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
    unstalled: Arc<Notify>,
}

impl PartialEq for SimDisk {
    fn eq(&self, other: &SimDisk) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for SimDisk {}

impl SimDisk {
    /// A fresh disk with unlimited space and no faults.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock is a test bug; the state is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the next matching operation fail.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Limits how many more bytes new segment files may reserve (None: unlimited).
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.lock().space_left_bytes = bytes;
    }

    /// Holds every later write and sync (and those already waiting) until
    /// [`SimDisk::unstall`]; a stalled operation has not started.
    pub fn stall(&self) {
        let mut state = self.lock();
        state.writes_stalled = true;
        state.syncs_stalled = true;
    }

    /// Holds every later `fdatasync` until [`SimDisk::unstall`]; writes go through, so data
    /// reaches the page cache but not the device.
    pub fn stall_syncs(&self) {
        self.lock().syncs_stalled = true;
    }

    /// Releases the stall.
    pub fn unstall(&self) {
        {
            let mut state = self.lock();
            state.writes_stalled = false;
            state.syncs_stalled = false;
        }
        self.unstalled.notify_waiters();
    }

    /// Writes and syncs waiting on the stall right now.
    pub fn stalled_ops(&self) -> u64 {
        self.lock().stalled_ops
    }

    /// Cuts the power: from now on every write, sync and removal fails with EIO and changes
    /// nothing, so the log poisons itself and stops. Follow with [`SimDisk::crash`] once it is
    /// closed. Releases a stall, so what waited on it fails too.
    pub fn power_cut(&self) {
        self.lock().powered_off = true;
        self.unstall();
    }

    /// Kills the process: like [`SimDisk::power_cut`], but follow it with
    /// [`SimDisk::restart`] (the page cache survives) rather than a crash.
    pub fn kill_process(&self) {
        self.power_cut();
    }

    /// The process restarts on the same boot: operations work again, and every file keeps its
    /// page-cache content, durable or not. Call only while no log is open.
    pub fn restart(&self) {
        self.lock().powered_off = false;
    }

    /// Writes, file syncs and directory syncs issued so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    /// Directory syncs completed so far.
    pub fn dir_syncs(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// Power loss with a seeded tear of unsynced sectors; see [`SimDisk::crash_with`].
    pub fn crash(&self, seed: u64) -> io::Result<()> {
        self.crash_with(Tear::Seeded(seed))
    }

    /// Power loss: files and directory entries go back to what the device holds, plus what
    /// `tear` lets land of the unsynced sectors. Call only while no log is open.
    pub fn crash_with(&self, tear: Tear) -> io::Result<()> {
        let mut rng = match tear {
            Tear::Seeded(seed) => seed ^ 0x9e37_79b9_7f4a_7c15,
            Tear::DropAll => 0,
        };
        let mut state = self.lock();
        state.powered_off = false;
        state.writes_stalled = false;
        state.syncs_stalled = false;
        let DiskState {
            files,
            durable_entries,
            ..
        } = &mut *state;
        let mut vanished = Vec::new();
        let mut paths: Vec<PathBuf> = files.keys().cloned().collect();
        // A fixed order keeps a seed's tear reproducible.
        paths.sort();
        for path in paths {
            if !durable_entries.contains(&path) {
                // Its creation never reached the device.
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                vanished.push(path);
                continue;
            }
            let Some(model) = files.get_mut(&path) else {
                continue;
            };
            let mut image = model.durable.clone();
            if let Ok(current) = std::fs::read(&path) {
                for (index, sector) in current.chunks(SECTOR_BYTES).enumerate() {
                    let at = index * SECTOR_BYTES;
                    let old = image.get(at..(at + sector.len()).min(image.len()));
                    if old == Some(sector) {
                        continue;
                    }
                    let lands = match tear {
                        Tear::Seeded(_) => !next_random(&mut rng).is_multiple_of(2),
                        Tear::DropAll => false,
                    };
                    if !lands {
                        continue;
                    }
                    if image.len() < at + sector.len() {
                        image.resize(at + sector.len(), 0);
                    }
                    image[at..at + sector.len()].copy_from_slice(sector);
                }
            }
            // Removed but the removal never reached the device: it comes back.
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all_at(&image, 0)?;
            file.sync_all()?;
            *model = FileModel::clean(image);
        }
        for path in vanished {
            files.remove(&path);
        }
        Ok(())
    }

    fn take_fault(&self, fault: Fault) -> bool {
        let mut state = self.lock();
        if state.powered_off {
            return true;
        }
        match state.faults.iter().position(|&f| f == fault) {
            Some(index) => {
                state.faults.remove(index);
                true
            }
            None => false,
        }
    }

    /// Waits while the disk is stalled (a power cut releases it).
    async fn pass_stall(&self, sync: bool) {
        loop {
            let notified = self.unstalled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let stalled = if sync {
                    state.syncs_stalled
                } else {
                    state.writes_stalled
                };
                if !stalled {
                    return;
                }
                state.stalled_ops += 1;
            }
            notified.await;
            self.lock().stalled_ops -= 1;
        }
    }
}

fn next_random(state: &mut u64) -> u64 {
    // xorshift64*: deterministic, good enough to pick sectors.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A file on the simulated disk.
pub struct SimFile {
    file: File,
    path: PathBuf,
}

/// The simulated backend.
pub struct SimBackend {
    disk: SimDisk,
    buffers: Vec<AlignedBuf>,
}

impl SimBackend {
    /// A backend on `disk` with `buffer_count` group buffers of `buffer_bytes`.
    pub fn new(disk: SimDisk, buffer_bytes: usize, buffer_count: usize) -> SimBackend {
        SimBackend {
            disk,
            buffers: (0..buffer_count)
                .map(|_| AlignedBuf::zeroed(buffer_bytes))
                .collect(),
        }
    }
}

impl Backend for SimBackend {
    type File = SimFile;
    type Buf = AlignedBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::Simulated
    }

    fn take_buffers(&mut self) -> Vec<AlignedBuf> {
        std::mem::take(&mut self.buffers)
    }

    async fn create_segment(
        &self,
        path: &Path,
        len_bytes: u64,
        preallocation: Preallocation,
    ) -> io::Result<SimFile> {
        {
            let mut state = self.disk.lock();
            if state.powered_off {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            if let Some(left) = state.space_left_bytes.as_mut() {
                let needed = if preallocation == Preallocation::None {
                    0
                } else {
                    len_bytes
                };
                if *left < needed {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                *left -= needed;
            }
        }
        let file = super::portable::create_segment_blocking(path, len_bytes, preallocation)?;
        // The file's size and allocation are synced by creation; its name is not.
        let mut image = vec![0u8; file.metadata()?.len() as usize];
        file.read_exact_at(&mut image, 0)?;
        let mut state = self.disk.lock();
        state
            .files
            .insert(path.to_path_buf(), FileModel::clean(image));
        state.durable_entries.remove(path);
        Ok(SimFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn open_segment(&self, path: &Path) -> io::Result<SimFile> {
        if self.disk.lock().powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(0)
            .open(path)?;
        let mut state = self.disk.lock();
        match state.files.get_mut(path) {
            Some(model) => model.all_dirty = true,
            None => {
                // Never seen: it was on the device before the model started.
                let mut image = vec![0u8; file.metadata()?.len() as usize];
                file.read_exact_at(&mut image, 0)?;
                state
                    .files
                    .insert(path.to_path_buf(), FileModel::clean(image));
                state.durable_entries.insert(path.to_path_buf());
            }
        }
        Ok(SimFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn write_at(
        &self,
        file: &SimFile,
        buf: AlignedBuf,
        len: usize,
        offset: u64,
    ) -> (io::Result<()>, AlignedBuf) {
        self.disk.pass_stall(false).await;
        if self.disk.take_fault(Fault::WriteEio) {
            return (Err(io::Error::from_raw_os_error(libc::EIO)), buf);
        }
        let result = file.file.write_all_at(&buf[..len], offset);
        if result.is_ok() {
            let mut state = self.disk.lock();
            state.writes += 1;
            if let Some(model) = state.files.get_mut(&file.path) {
                model.dirty.push((offset, len));
            }
        }
        (result, buf)
    }

    async fn sync_data(&self, file: &SimFile) -> io::Result<()> {
        self.disk.pass_stall(true).await;
        if self.disk.take_fault(Fault::SyncEio) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        // No real fdatasync: durability is the model's image, which `crash` restores. The
        // file's page-cache content becomes durable, as with fdatasync.
        let mut state = self.disk.lock();
        state.syncs += 1;
        let Some(model) = state.files.get_mut(&file.path) else {
            return Ok(());
        };
        let len = file.file.metadata()?.len() as usize;
        if std::mem::take(&mut model.all_dirty) {
            model.dirty.clear();
            model.durable = vec![0u8; len];
            file.file.read_exact_at(&mut model.durable, 0)?;
            return Ok(());
        }
        model.durable.resize(len.max(model.durable.len()), 0);
        for (offset, bytes) in std::mem::take(&mut model.dirty) {
            let at = offset as usize;
            file.file
                .read_exact_at(&mut model.durable[at..at + bytes], offset)?;
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.disk.lock();
        if state.powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.dir_syncs += 1;
        let DiskState {
            files,
            durable_entries,
            ..
        } = &mut *state;
        let mut gone = Vec::new();
        for path in files.keys() {
            if path.parent() != Some(dir) {
                continue;
            }
            if path.exists() {
                durable_entries.insert(path.clone());
            } else {
                durable_entries.remove(path);
                gone.push(path.clone());
            }
        }
        for path in gone {
            files.remove(&path);
        }
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.disk.take_fault(Fault::RemoveEio) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        // The model keeps the file until its directory is synced: a power loss before then
        // brings it back.
        std::fs::remove_file(path)
    }

    async fn rename_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.disk.lock().powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        std::fs::rename(from, to)?;
        let mut state = self.disk.lock();
        // The old name keeps its model (and comes back at a power loss) until the directory
        // is synced; the new name is a new entry that is not durable yet, with the same
        // device content, since a rename moves the inode and changes no data.
        let durable = match state.files.get(from) {
            Some(model) => model.durable.clone(),
            None => {
                drop(state);
                let image = std::fs::read(to)?;
                state = self.disk.lock();
                state
                    .files
                    .insert(from.to_path_buf(), FileModel::clean(image.clone()));
                state.durable_entries.insert(from.to_path_buf());
                image
            }
        };
        let mut model = FileModel::clean(durable);
        // Whatever of the page cache was not synced under the old name is unsynced here too.
        model.all_dirty = true;
        state.files.insert(to.to_path_buf(), model);
        state.durable_entries.remove(to);
        Ok(())
    }
}
