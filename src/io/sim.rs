//! The simulated backend for fault-injection tests: real files, plus a model of what the
//! device has made durable.
//!
//! Every write lands in the real file at once (so the process sees its own writes), and is also
//! remembered as *unsynced* until `sync_data` on that file. [`SimDisk::crash`] models power
//! loss: each file is reset to its last synced image plus, for every unsynced write, an
//! arbitrary (seeded) subset of its 512-byte sectors — so a multi-sector write may be torn, but
//! each sector is old or new (the sector-atomicity assumption of `docs/design.md`). Errors can be
//! injected on the next write or sync, and a byte budget models ENOSPC.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

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
}

#[derive(Debug, Default)]
struct FileModel {
    /// The file's content as of its last successful sync.
    synced: Vec<u8>,
    /// Writes since then, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct DiskState {
    files: HashMap<PathBuf, FileModel>,
    faults: Vec<Fault>,
    /// Bytes of new allocation still allowed (None: unlimited); models ENOSPC.
    space_left_bytes: Option<u64>,
    writes: u64,
    syncs: u64,
    /// After a power cut every write and sync fails until [`SimDisk::crash`].
    powered_off: bool,
}

/// A handle to one simulated disk, shared by the backend and the test that drives it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
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

    /// Cuts the power: from now on every write and sync fails with EIO and changes nothing,
    /// so the log poisons itself and stops. Follow with [`SimDisk::crash`] once it is closed.
    pub fn power_cut(&self) {
        self.lock().powered_off = true;
    }

    /// Writes and syncs issued so far.
    pub fn io_counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    /// Power loss: every file known to the disk is rewritten as its synced image plus a
    /// seeded subset of the sectors of its unsynced writes. Call only while no log is open.
    pub fn crash(&self, seed: u64) -> io::Result<()> {
        let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut state = self.lock();
        state.powered_off = false;
        for (path, model) in state.files.iter_mut() {
            let mut image = model.synced.clone();
            for (offset, bytes) in model.unsynced.drain(..) {
                for (index, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
                    if next_random(&mut rng).is_multiple_of(2) {
                        continue;
                    }
                    let at = offset as usize + index * SECTOR_BYTES;
                    if image.len() < at + sector.len() {
                        image.resize(at + sector.len(), 0);
                    }
                    image[at..at + sector.len()].copy_from_slice(sector);
                }
            }
            if !path.exists() {
                continue;
            }
            let file = OpenOptions::new().write(true).open(path)?;
            let len = file.metadata()?.len().max(image.len() as u64);
            file.set_len(0)?;
            file.set_len(len)?;
            file.write_all_at(&image, 0)?;
            file.sync_all()?;
            model.synced = image;
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

    fn track(&self, path: &Path, file: &File) -> io::Result<()> {
        let mut image = Vec::new();
        let len = file.metadata()?.len() as usize;
        image.resize(len, 0);
        file.read_exact_at(&mut image, 0)?;
        self.disk.lock().files.insert(
            path.to_path_buf(),
            FileModel {
                synced: image,
                unsynced: Vec::new(),
            },
        );
        Ok(())
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
        self.track(path, &file)?;
        Ok(SimFile {
            file,
            path: path.to_path_buf(),
        })
    }

    async fn open_segment(&self, path: &Path) -> io::Result<SimFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(0)
            .open(path)?;
        self.track(path, &file)?;
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
        if self.disk.take_fault(Fault::WriteEio) {
            return (Err(io::Error::from_raw_os_error(libc::EIO)), buf);
        }
        let result = file.file.write_all_at(&buf[..len], offset);
        if result.is_ok() {
            let mut state = self.disk.lock();
            state.writes += 1;
            if let Some(model) = state.files.get_mut(&file.path) {
                model.unsynced.push((offset, buf[..len].to_vec()));
            }
        }
        (result, buf)
    }

    async fn sync_data(&self, file: &SimFile) -> io::Result<()> {
        if self.disk.take_fault(Fault::SyncEio) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        // No real fdatasync: durability is the model's `synced` image, which `crash` restores.
        let mut state = self.disk.lock();
        state.syncs += 1;
        if let Some(model) = state.files.get_mut(&file.path) {
            for (offset, bytes) in model.unsynced.drain(..) {
                let end = offset as usize + bytes.len();
                if model.synced.len() < end {
                    model.synced.resize(end, 0);
                }
                model.synced[offset as usize..end].copy_from_slice(&bytes);
            }
        }
        Ok(())
    }

    async fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Directory entries are not modelled: creations and deletions are always durable.
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)?;
        self.disk.lock().files.remove(path);
        Ok(())
    }
}
