//! One data directory ("disk"): its 256 subdirectories, lock, space, health and the scan that
//! finds its chunk files at startup.

use crate::config::DataDir;
use crate::format;
use mfsha_proto::types::ChunkId;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Name of the lock file that keeps two chunkservers off one directory.
const LOCK_FILE: &str = ".mfsha_chunkserver.lock";
/// Name of the file holding this chunkserver's stable id.
pub const SERVER_ID_FILE: &str = ".mfsha_server_id";

/// A data directory in use.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub marked_for_removal: bool,
    /// Bytes kept free (`leave_free_mib`): counted as used, never given to a new chunk.
    pub leave_free: u64,
    damaged: AtomicBool,
    /// Tests set this to make every chunk operation on the disk fail like a dying drive.
    fault: AtomicBool,
    /// What this disk did, for metrics.
    pub counters: DiskCounters,
    /// Held open for its `flock`; released when the process exits, however it exits. `None`
    /// for a directory that could not be opened (see [`Disk::unusable`]).
    _lock: Option<File>,
}

/// Counts of one disk's work since start (metrics).
#[derive(Debug, Default)]
pub struct DiskCounters {
    /// Chunk data bytes read and verified (client reads, replication sources, scrub).
    pub read_bytes: AtomicU64,
    /// Chunk data bytes written (client writes, replication targets).
    pub written_bytes: AtomicU64,
    /// Copies found damaged: a block failing its CRC, or a file shorter than recorded.
    pub crc_errors: AtomicU64,
    /// Chunk data bytes of blocks verified earlier, answered from the page cache.
    pub cached_read_bytes: AtomicU64,
}

/// Why a data directory could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Another chunkserver holds it: starting anyway would serve its chunks twice.
    #[error("{0}")]
    InUse(String),
    /// Missing, not a directory, or failing I/O: the disk is damaged.
    #[error("{0}")]
    Unusable(String),
}

/// A chunk file found by [`Disk::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: ChunkId,
    pub version: u32,
    /// Bytes of data (file length minus header and CRC table).
    pub length: u64,
}

impl Disk {
    /// Opens a data directory: it must exist; its 256 subdirectories are created if missing
    /// and it is locked against a second chunkserver.
    pub fn open(dir: &DataDir) -> Result<Disk, OpenError> {
        let path = &dir.path;
        let meta = fs::metadata(path).map_err(|e| {
            OpenError::Unusable(format!(
                "data directory {}: {e}; create it (or mount the disk there) and restart",
                path.display()
            ))
        })?;
        if !meta.is_dir() {
            let why = format!("data directory {} is not a directory", path.display());
            return Err(OpenError::Unusable(why));
        }
        for sub in 0..=255u64 {
            let sub = path.join(format::subdir_name(sub));
            fs::create_dir_all(&sub).map_err(|e| {
                OpenError::Unusable(format!(
                    "cannot create chunk subdirectory {}: {e}",
                    sub.display()
                ))
            })?;
        }
        let lock = lock_dir(path)?;
        Ok(Disk {
            path: path.clone(),
            marked_for_removal: dir.marked_for_removal,
            leave_free: 0,
            damaged: AtomicBool::new(false),
            fault: AtomicBool::new(false),
            counters: DiskCounters::default(),
            _lock: Some(lock),
        })
    }

    /// A data directory that could not be opened: kept in the list, damaged from the start,
    /// so the master and `mfsha status` show it while the other disks serve on.
    pub fn unusable(dir: &DataDir) -> Disk {
        Disk {
            path: dir.path.clone(),
            marked_for_removal: dir.marked_for_removal,
            leave_free: 0,
            damaged: AtomicBool::new(true),
            fault: AtomicBool::new(false),
            counters: DiskCounters::default(),
            _lock: None,
        }
    }

    /// Where chunk `id` at `version` lives on this disk.
    pub fn chunk_path(&self, id: ChunkId, version: u32) -> PathBuf {
        self.path.join(format::subdir_name(id)).join(format::file_name(id, version))
    }

    /// Where a chunk being built (replication, creation) is written before its rename.
    pub fn temp_path(&self, id: ChunkId, version: u32) -> PathBuf {
        self.path.join(format::subdir_name(id)).join(format::temp_name(id, version))
    }

    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// Marks the disk damaged; true if it was healthy until now.
    pub fn mark_damaged(&self) -> bool {
        !self.damaged.swap(true, Ordering::AcqRel)
    }

    /// Fault injection for tests: from now on every chunk I/O on this disk fails with EIO.
    pub fn inject_fault(&self) {
        self.fault.store(true, Ordering::Release);
    }

    /// Fails with EIO if a fault was injected; chunk I/O calls this first.
    pub fn check_fault(&self) -> io::Result<()> {
        if self.fault.load(Ordering::Acquire) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    /// Whether new chunks may be placed here.
    pub fn takes_new_chunks(&self) -> bool {
        !self.marked_for_removal && !self.is_damaged()
    }

    /// Total and available bytes of the filesystem holding the directory.
    pub fn space(&self) -> io::Result<(u64, u64)> {
        let stat = nix::sys::statvfs::statvfs(&self.path).map_err(io::Error::from)?;
        let block = stat.fragment_size() as u64;
        Ok((stat.blocks() as u64 * block, stat.blocks_available() as u64 * block))
    }

    /// This disk, keeping `bytes` free (`leave_free_mib`).
    pub fn with_leave_free(self, bytes: u64) -> Disk {
        Disk { leave_free: bytes, ..self }
    }

    /// Total bytes, and bytes available for chunks: what is free beyond `leave_free`.
    pub fn usable_space(&self) -> io::Result<(u64, u64)> {
        let (total, avail) = self.space()?;
        Ok((total, avail.saturating_sub(self.leave_free)))
    }

    /// Cheap liveness check run with every heartbeat: the directory and one subdirectory must
    /// still be directories we can list. Catches a disk that vanished or was replaced.
    pub fn check_health(&self) -> io::Result<()> {
        self.check_fault()?;
        for dir in [self.path.clone(), self.path.join("00")] {
            if !fs::metadata(&dir)?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is no longer a directory", dir.display()),
                ));
            }
        }
        fs::read_dir(self.path.join("00"))?.next().transpose()?;
        Ok(())
    }

    /// Finds every chunk file. Leftover temporary files are deleted (they were never
    /// acknowledged); a header ahead of its name (an interrupted version change) is rolled
    /// forward by finishing the rename. Unreadable or foreign files are skipped with a warning.
    pub fn scan(&self) -> io::Result<Vec<Found>> {
        let mut found = Vec::new();
        for sub in 0..=255u64 {
            let dir = self.path.join(format::subdir_name(sub));
            let mut changed = false;
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(format::TEMP_PREFIX) {
                    fs::remove_file(entry.path())?;
                    changed = true;
                    tracing::info!(file = %entry.path().display(), "removed unfinished temporary chunk");
                    continue;
                }
                let Some((id, version)) = format::parse_file_name(name) else { continue };
                if let Some(f) = self.scan_one(&entry.path(), id, version)? {
                    found.push(f);
                }
            }
            if changed {
                fsync_dir(&dir)?;
            }
        }
        Ok(found)
    }

    fn scan_one(&self, path: &Path, id: ChunkId, version: u32) -> io::Result<Option<Found>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut header = [0u8; 24];
        let header_ok = len >= format::DATA_OFFSET && file.read_exact(&mut header).is_ok();
        close_checked(file)?;
        let decoded = if header_ok { format::decode_header(&header).ok() } else { None };
        let Some((header_id, header_version)) = decoded else {
            tracing::warn!(file = %path.display(), "chunk file has no valid header; ignored (check it with a hex dump, then delete it)");
            return Ok(None);
        };
        if header_id != id {
            tracing::warn!(file = %path.display(), header_id, "chunk file's header names another chunk; ignored");
            return Ok(None);
        }
        let mut version = version;
        if header_version != version {
            let target = self.chunk_path(id, header_version);
            fs::rename(path, &target)?;
            fsync_dir(target.parent().expect("chunk files live in a subdirectory"))?;
            tracing::warn!(file = %path.display(), header_version, "finished an interrupted version change");
            version = header_version;
        }
        Ok(Some(Found { id, version, length: len - format::DATA_OFFSET }))
    }
}

/// Takes an exclusive `flock` on the directory's lock file.
fn lock_dir(path: &Path) -> Result<File, OpenError> {
    let lock_path = path.join(LOCK_FILE);
    let file =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(
            |e| OpenError::Unusable(format!("cannot open lock file {}: {e}", lock_path.display())),
        )?;
    // SAFETY: flock on a file descriptor we own; no memory is touched.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(OpenError::InUse(format!(
            "data directory {} is in use by another chunkserver ({}); stop it first",
            path.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(file)
}

/// Closes a file and reports the result (dropping a `File` ignores close errors).
pub fn close_checked(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: we own `fd` (taken from the File) and close it exactly once.
    let rc = unsafe { libc::close(fd) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Linux always releases the descriptor; EINTR is not a lost write.
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

/// fsyncs a directory so a rename or create in it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let file = File::open(dir)?;
    file.sync_all()?;
    close_checked(file)
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync directory.
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    close_checked(file)?;
    fs::rename(&tmp, path)?;
    fsync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// The chunkserver's stable id: read from the first data directory that has one, otherwise
/// created at random; then written to every healthy directory lacking it, so any one disk is
/// enough to recognise the server after a restart.
pub fn server_id(disks: &[Disk]) -> io::Result<u64> {
    let mut id = None;
    let healthy = || disks.iter().filter(|d| !d.is_damaged());
    for disk in healthy() {
        match fs::read_to_string(disk.path.join(SERVER_ID_FILE)) {
            Ok(text) => {
                if let Ok(v) = u64::from_str_radix(text.trim(), 16) {
                    id.get_or_insert(v);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let id = match id {
        Some(id) => id,
        None => loop {
            let v: u64 = rand::random();
            if v != 0 {
                break v;
            }
        },
    };
    for disk in healthy() {
        let path = disk.path.join(SERVER_ID_FILE);
        if !path.exists() {
            write_file_durably(&path, format!("{id:016x}\n").as_bytes())?;
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &Path) -> DataDir {
        DataDir { path: path.to_path_buf(), marked_for_removal: false }
    }

    #[test]
    fn open_creates_256_subdirs_and_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir(tmp.path())).unwrap();
        let subs: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(subs.len(), 256);
        assert!(subs.contains(&"00".to_string()) && subs.contains(&"FF".to_string()));
        let err = Disk::open(&dir(tmp.path())).unwrap_err();
        assert!(matches!(err, OpenError::InUse(_)), "{err:?}");
        assert!(err.to_string().contains("in use by another chunkserver"), "{err}");
        drop(disk);
        Disk::open(&dir(tmp.path())).unwrap();
    }

    #[test]
    fn missing_directory_is_named() {
        let err = Disk::open(&dir(Path::new("/nonexistent/mfsha-disk"))).unwrap_err();
        assert!(matches!(err, OpenError::Unusable(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/mfsha-disk"), "{err}");
    }

    #[test]
    fn server_id_is_stable_and_shared() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let disks = vec![Disk::open(&dir(a.path())).unwrap()];
        let id = server_id(&disks).unwrap();
        drop(disks);
        let gone = b.path().join("gone");
        let disks = vec![
            Disk::unusable(&dir(&gone)),
            Disk::open(&dir(b.path())).unwrap(),
            Disk::open(&dir(a.path())).unwrap(),
        ];
        assert_eq!(server_id(&disks).unwrap(), id, "an unusable disk is skipped");
        assert!(b.path().join(SERVER_ID_FILE).exists(), "copied to the new disk");
        assert!(!gone.exists(), "nothing is written to an unusable disk");
    }

    #[test]
    fn health_check_notices_a_replaced_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk");
        fs::create_dir(&path).unwrap();
        let disk = Disk::open(&dir(&path)).unwrap();
        disk.check_health().unwrap();
        fs::rename(&path, tmp.path().join("gone")).unwrap();
        fs::write(&path, b"not a directory").unwrap();
        assert!(disk.check_health().is_err());
    }

    #[test]
    fn health_check_notices_an_injected_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = Disk::open(&dir(tmp.path())).unwrap();
        disk.inject_fault();
        assert_eq!(disk.check_health().unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}
