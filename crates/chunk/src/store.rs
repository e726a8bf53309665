//! The chunks of one chunkserver across its disks: the in-memory index and every operation on
//! chunk files (create, write, read, sync, version change, truncate, duplicate, delete, build
//! from a replication source, verify).
//!
//! Operations are blocking and run on tokio's blocking pool (`*_blocking` here, async wrappers
//! in [`Store`]). Each chunk has a reader/writer lock: reads and the scrub share it, writes,
//! version changes and deletes take it exclusively, so a read never sees a file being renamed
//! or removed under it.
//!
//! Failures are classified once, here: an I/O error on a chunk file marks its disk damaged
//! (every chunk on it is reported lost and the disk is excluded); a CRC mismatch marks only that
//! copy damaged and reports it; running out of space is `NoSpace` and marks nothing.

use crate::disk::{close_checked, fsync_dir, Disk};
use crate::format::{self, block_crc, zero_block_crc, CRC_TABLE_OFFSET, DATA_OFFSET};
use mfsha_proto::cs::{CsToMaster, DiskInfo, CHUNKS_PER_FRAME};
use mfsha_proto::data::MAX_IO_BYTES;
use mfsha_proto::types::{ChunkId, Status, BLOCK_BYTES, CHUNK_BYTES};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const B: u64 = BLOCK_BYTES;

/// One chunk copy held by this server.
#[derive(Debug)]
pub struct Chunk {
    pub id: ChunkId,
    /// Index into [`Store::disks`].
    pub disk: usize,
    state: RwLock<ChunkState>,
    /// Reported damaged to the master (once is enough).
    damaged: AtomicBool,
}

#[derive(Debug)]
struct ChunkState {
    version: u32,
    /// Bytes of data stored (the file length minus header and CRC table).
    length: u64,
    /// Deleted or replaced: the file is gone, operations must not touch it.
    removed: bool,
    /// Kept open between writes and closed (fsync + checked close) by `Sync` or when idle.
    open: Option<(File, Instant)>,
    /// Blocks checked since the copy last changed (see `verified`).
    verified: verified::Verified,
}

/// Reports a link may fall behind by before it re-registers (a full chunk list resyncs it).
const REPORTS_BUFFERED: usize = 64 * 1024;

/// Every chunk of this server.
#[derive(Debug)]
pub struct Store {
    pub disks: Vec<Disk>,
    chunks: RwLock<HashMap<ChunkId, Arc<Chunk>>>,
    /// Changes to the copies, for every master link (each master keeps the whole map).
    reports: tokio::sync::broadcast::Sender<CsToMaster>,
    /// When a client last wrote to each chunk (pruned to [`WRITING_WINDOW`]).
    writes: Mutex<HashMap<ChunkId, Instant>>,
    fsync_every_write: bool,
    /// Recent real I/O errors, by disk (see [`IO_ERRORS_TO_DAMAGE`]).
    io_errors: Mutex<HashMap<usize, Vec<Instant>>>,
}

/// How long after its last write a chunk counts as being written.
const WRITING_WINDOW: Duration = Duration::from_millis(mfsha_proto::cs::WRITING_WINDOW_MS);

/// How an I/O failure is classified: only a real I/O error can cost a disk; a missing or
/// forbidden file costs one copy; a full disk or a process out of descriptors or memory is
/// an answer, not damage.
pub(crate) enum Fail {
    /// A real I/O error (EIO, EROFS, …): the copy is bad, and the disk too if its health
    /// check fails now or errors repeat (see [`Store::io_error`]).
    Io(io::Error),
    /// The chunk's file is gone or may not be opened (ENOENT, EACCES, EPERM): that copy is
    /// lost, the disk is not.
    CopyUnusable(io::Error),
    /// The answer to give without blaming the disk (ENOSPC and EDQUOT: `NoSpace`; EMFILE,
    /// ENFILE, ENOMEM and EAGAIN: `Busy`, back-pressure the client retries).
    Status(Status),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Fail::Status(Status::NoSpace),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => {
                tracing::warn!(error = %e, "chunk I/O refused for want of descriptors or \
                    memory; answering busy (raise LimitNOFILE, or lower the connection caps)");
                Fail::Status(Status::Busy)
            }
            Some(libc::ENOENT | libc::EACCES | libc::EPERM) => Fail::CopyUnusable(e),
            _ => Fail::Io(e),
        }
    }
}

/// Real I/O errors on one disk within this window that mark it damaged even when its health
/// check passes (a disk failing sector by sector).
const IO_ERRORS_TO_DAMAGE: usize = 3;
const IO_ERROR_WINDOW: Duration = Duration::from_secs(60);

impl From<Status> for Fail {
    fn from(s: Status) -> Self {
        Fail::Status(s)
    }
}

impl Store {
    /// Builds the store from opened disks, scanning each for chunk files. A disk whose scan
    /// fails is marked damaged (and logged) rather than stopping the server.
    pub fn open(disks: Vec<Disk>, fsync_every_write: bool) -> Store {
        let store = Store {
            disks,
            chunks: RwLock::new(HashMap::new()),
            reports: tokio::sync::broadcast::channel(REPORTS_BUFFERED).0,
            writes: Mutex::new(HashMap::new()),
            fsync_every_write,
            io_errors: Mutex::new(HashMap::new()),
        };
        for (index, disk) in store.disks.iter().enumerate() {
            if disk.is_damaged() {
                continue; // could not be opened; already logged
            }
            match disk.scan() {
                Ok(found) => {
                    tracing::info!(disk = %disk.path.display(), chunks = found.len(), "disk scanned");
                    for f in found {
                        store.insert_found(index, f.id, f.version, f.length);
                    }
                }
                Err(e) => {
                    disk.mark_damaged();
                    tracing::error!(disk = %disk.path.display(), error = %e,
                        "cannot scan data directory; disk marked damaged (fix or replace it, then restart)");
                }
            }
        }
        store
    }

    /// Adds a scanned copy; if another disk has the same chunk, the higher version wins and
    /// the other file is deleted (a chunkserver holds one copy of a chunk).
    fn insert_found(&self, disk: usize, id: ChunkId, version: u32, length: u64) {
        let existing = self.chunks.read().expect("chunk map poisoned").get(&id).cloned();
        if let Some(old) = existing {
            let old_version = old.state.read().expect("chunk lock poisoned").version;
            let (loser_disk, loser_version) =
                if old_version >= version { (disk, version) } else { (old.disk, old_version) };
            let path = self.disks[loser_disk].chunk_path(id, loser_version);
            tracing::warn!(chunk = id, file = %path.display(), "duplicate copy of a chunk; removing the older one");
            if let Err(e) = fs::remove_file(&path) {
                tracing::error!(file = %path.display(), error = %e, "cannot remove duplicate chunk file");
            }
            if old_version >= version {
                return;
            }
        }
        let chunk = Arc::new(Chunk::new(id, disk, version, length));
        self.chunks.write().expect("chunk map poisoned").insert(id, chunk);
    }

    fn get(&self, id: ChunkId) -> Result<Arc<Chunk>, Status> {
        self.chunks.read().expect("chunk map poisoned").get(&id).cloned().ok_or(Status::NotFound)
    }

    /// Every chunk as (id, version, on a disk marked for removal), for registration.
    pub fn list(&self) -> Vec<(ChunkId, u32, bool)> {
        self.all()
            .into_iter()
            .filter_map(|c| {
                let st = c.state.read().expect("chunk lock poisoned");
                (!st.removed).then(|| (c.id, st.version, self.disks[c.disk].marked_for_removal))
            })
            .collect()
    }

    /// Every chunk entry. Lock order: the map lock is never held while a chunk lock is taken
    /// (writers hold a chunk lock and then take the map lock), so callers copy the entries out.
    fn all(&self) -> Vec<Arc<Chunk>> {
        self.chunks.read().expect("chunk map poisoned").values().cloned().collect()
    }

    /// Chunks on one disk, for the scrub.
    pub fn chunks_on(&self, disk: usize) -> Vec<ChunkId> {
        let map = self.chunks.read().expect("chunk map poisoned");
        map.values().filter(|c| c.disk == disk).map(|c| c.id).collect()
    }

    /// Version and stored length of a copy.
    pub fn stat(&self, id: ChunkId) -> Result<(u32, u64), Status> {
        let chunk = self.get(id)?;
        let st = chunk.state.read().expect("chunk lock poisoned");
        if st.removed {
            return Err(Status::NotFound);
        }
        Ok((st.version, st.length))
    }

    /// Per-disk space and health, for registration and heartbeats.
    pub fn disk_infos(&self) -> Vec<DiskInfo> {
        let mut counts = vec![0u64; self.disks.len()];
        for c in self.chunks.read().expect("chunk map poisoned").values() {
            counts[c.disk] += 1;
        }
        self.disks
            .iter()
            .zip(counts)
            .map(|(disk, chunks)| {
                // The reserve counts as used: the master places nothing in it.
                let (total, avail) =
                    if disk.is_damaged() { (0, 0) } else { disk.usable_space().unwrap_or((0, 0)) };
                DiskInfo {
                    path: disk.path.display().to_string(),
                    total_bytes: total,
                    used_bytes: total.saturating_sub(avail),
                    chunks,
                    marked_for_removal: disk.marked_for_removal,
                    damaged: disk.is_damaged(),
                    safe_to_remove: false,
                }
            })
            .collect()
    }

    /// Runs every healthy disk's liveness check; a failing disk is marked damaged.
    pub fn check_disks(&self) {
        for (index, disk) in self.disks.iter().enumerate() {
            if disk.is_damaged() {
                continue;
            }
            if let Err(e) = disk.check_health() {
                self.disk_failed(index, &e, "health check");
            }
        }
    }

    /// Every change to the copies from now on (`Copy`, `Gone`, `Damaged`, `Lost`). Subscribe
    /// before listing the chunks for a registration, so nothing falls between the two.
    pub fn subscribe_reports(&self) -> tokio::sync::broadcast::Receiver<CsToMaster> {
        self.reports.subscribe()
    }

    /// `Damaged` for every copy known damaged (sent after each registration).
    pub fn damaged_reports(&self) -> Vec<CsToMaster> {
        let damaged = self.all().into_iter().filter(|c| c.damaged.load(Ordering::Acquire));
        damaged
            .map(|c| {
                let version = c.state.read().expect("chunk lock poisoned").version;
                CsToMaster::Damaged { chunk_id: c.id, version }
            })
            .collect()
    }

    /// Tells every master link; with no link connected nobody needs it (a registration sends
    /// the whole state).
    pub fn push_report(&self, report: CsToMaster) {
        let _no_link = self.reports.send(report);
    }

    /// Notes a client write to `chunk`, for [`Store::writing`].
    pub fn note_write(&self, chunk: ChunkId) {
        self.writes.lock().expect("writes poisoned").insert(chunk, Instant::now());
    }

    /// Chunks written within [`WRITING_WINDOW`], most recent first, at most `limit`.
    pub fn writing(&self, limit: usize) -> Vec<ChunkId> {
        let mut writes = self.writes.lock().expect("writes poisoned");
        writes.retain(|_, at| at.elapsed() < WRITING_WINDOW);
        let mut recent: Vec<(Instant, ChunkId)> = writes.iter().map(|(c, at)| (*at, *c)).collect();
        recent.sort_unstable_by(|a, b| b.cmp(a));
        recent.into_iter().take(limit).map(|(_, c)| c).collect()
    }

    /// A disk returned an I/O error: mark it damaged, drop its chunks from the index and report
    /// them lost, so the master copies them from other servers.
    fn disk_failed(&self, disk: usize, error: &io::Error, during: &str) {
        if !self.disks[disk].mark_damaged() {
            return;
        }
        let lost: Vec<ChunkId> = {
            let mut map = self.chunks.write().expect("chunk map poisoned");
            let ids: Vec<ChunkId> = map.values().filter(|c| c.disk == disk).map(|c| c.id).collect();
            for id in &ids {
                if let Some(c) = map.remove(id) {
                    // Best effort: the disk is failing, a writer may hold the lock.
                    if let Ok(mut st) = c.state.try_write() {
                        st.removed = true;
                        st.open = None;
                    }
                }
            }
            ids
        };
        tracing::error!(disk = %self.disks[disk].path.display(), error = %error, during,
            lost = lost.len(),
            "disk I/O error: disk marked damaged, its chunks reported lost; replace the disk and restart the chunkserver");
        for part in lost.chunks(CHUNKS_PER_FRAME) {
            self.push_report(CsToMaster::Lost(part.to_vec()));
        }
    }

    fn copy_damaged(&self, chunk: &Chunk, version: u32, why: &str) {
        // Every detection counts, also of a copy already reported.
        self.disks[chunk.disk].counters.crc_errors.fetch_add(1, Ordering::Relaxed);
        if chunk.damaged.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(chunk = format_args!("{:016X}", chunk.id), version,
            disk = %self.disks[chunk.disk].path.display(), why,
            "chunk copy damaged; reported to the master, which will replace it");
        self.push_report(CsToMaster::Damaged { chunk_id: chunk.id, version });
    }

    /// Turns a failure on `disk` (of the copy of `copy`, if one is concerned) into a status:
    /// see [`Fail`].
    fn classify(&self, disk: usize, copy: Option<ChunkId>, fail: Fail, during: &str) -> Status {
        match fail {
            Fail::Status(s) => s,
            Fail::CopyUnusable(e) => match copy {
                Some(id) => {
                    self.copy_lost(id, &e, during);
                    Status::Io
                }
                // No copy yet (a create): its subdirectory is gone, which is the disk's.
                None => self.io_error(disk, None, &e, during),
            },
            Fail::Io(e) => self.io_error(disk, copy, &e, during),
        }
    }

    /// A real I/O error: the disk is damaged if its health check fails now or this is its
    /// [`IO_ERRORS_TO_DAMAGE`]th within [`IO_ERROR_WINDOW`]; otherwise only the copy is
    /// reported lost (the master makes another).
    pub(crate) fn io_error(
        &self,
        disk: usize,
        copy: Option<ChunkId>,
        e: &io::Error,
        during: &str,
    ) -> Status {
        let repeated = {
            let mut errors = self.io_errors.lock().expect("io_errors poisoned");
            let recent = errors.entry(disk).or_default();
            recent.retain(|at| at.elapsed() < IO_ERROR_WINDOW);
            recent.push(Instant::now());
            recent.len() >= IO_ERRORS_TO_DAMAGE
        };
        match (self.disks[disk].check_health(), repeated, copy) {
            (Ok(()), false, Some(id)) => self.copy_lost(id, e, during),
            (Ok(()), false, None) => {
                tracing::error!(disk = %self.disks[disk].path.display(), error = %e, during,
                    "disk I/O error; the disk passes its health check, so it stays in use \
                     (it is marked damaged if errors repeat)");
            }
            _ => self.disk_failed(disk, e, during),
        }
        Status::Io
    }

    /// One copy cannot be used (its file is gone, unreadable, or failing): drop it from the
    /// index and report it lost, so the master copies the chunk from another server.
    fn copy_lost(&self, id: ChunkId, e: &io::Error, during: &str) {
        let removed = self.chunks.write().expect("chunk map poisoned").remove(&id);
        let Some(chunk) = removed else { return };
        if let Ok(mut st) = chunk.state.try_write() {
            st.removed = true;
            st.open = None;
        }
        tracing::error!(chunk = format_args!("{id:016X}"),
            disk = %self.disks[chunk.disk].path.display(), error = %e, during,
            "chunk copy unusable: reported lost, the master makes another; the disk stays in use");
        self.push_report(CsToMaster::Lost(vec![id]));
    }

    /// The disk for a new chunk: healthy, not being drained, most free space, and room for
    /// a whole chunk beyond its reserve (`leave_free_mib`); `NoSpace` if none has.
    fn choose_disk(&self) -> Result<usize, Status> {
        let best = self
            .disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.takes_new_chunks())
            .filter_map(|(i, d)| d.usable_space().ok().map(|(_, avail)| (avail, i)))
            .max();
        match best {
            Some((avail, i)) if avail >= mfsha_proto::types::CHUNK_BYTES => Ok(i),
            Some((avail, i)) => {
                let disk = &self.disks[i];
                tracing::warn!(disk = %disk.path.display(), avail, leave_free = disk.leave_free,
                    "refused a new chunk: no disk has a chunk's worth (64 MiB) free beyond the \
                     space kept free (leave_free_mib); free space or add a disk");
                Err(Status::NoSpace)
            }
            None => Err(Status::NoSpace),
        }
    }
}

impl Chunk {
    fn new(id: ChunkId, disk: usize, version: u32, length: u64) -> Chunk {
        Chunk {
            id,
            disk,
            state: RwLock::new(ChunkState {
                version,
                length,
                removed: false,
                open: None,
                verified: Default::default(),
            }),
            damaged: AtomicBool::new(false),
        }
    }

    /// The state, locked for a change: what reads had verified is forgotten first, so no
    /// read serves a block this change may touch without checking it again.
    fn change(&self) -> std::sync::RwLockWriteGuard<'_, ChunkState> {
        let mut st = self.state.write().expect("chunk lock poisoned");
        st.verified = Default::default();
        st
    }
}

fn check_version(st: &ChunkState, version: u32) -> Result<(), Status> {
    if st.removed {
        return Err(Status::NotFound);
    }
    if st.version != version {
        return Err(Status::WrongVersion);
    }
    Ok(())
}

/// Writes a fresh header (with the rest of the 4 KiB zeroed) and an empty CRC table.
fn write_new_header(file: &File, id: ChunkId, version: u32) -> io::Result<()> {
    let mut head = vec![0u8; DATA_OFFSET as usize];
    head[..24].copy_from_slice(&format::encode_header(id, version));
    head[CRC_TABLE_OFFSET as usize..].copy_from_slice(&format::empty_crc_table());
    file.write_all_at(&head, 0)
}

/// Reads the stored bytes of blocks `[first, last]` (zeros past `length`) and their CRCs.
fn read_blocks(file: &File, first: u64, last: u64, length: u64) -> io::Result<(Vec<u8>, Vec<u32>)> {
    let count = last - first + 1;
    let mut crc_bytes = vec![0u8; (count * 4) as usize];
    file.read_exact_at(&mut crc_bytes, CRC_TABLE_OFFSET + first * 4)?;
    let mut data = vec![0u8; (count * B) as usize];
    let start = first * B;
    let stored = length.saturating_sub(start).min(count * B);
    file.read_exact_at(&mut data[..stored as usize], DATA_OFFSET + start)?;
    Ok((data, format::decode_crcs(&crc_bytes)))
}

/// Index of the first block in `data` whose CRC does not match, if any.
fn first_bad_block(data: &[u8], crcs: &[u32]) -> Option<usize> {
    data.chunks(B as usize).zip(crcs).position(|(block, &crc)| block_crc(block) != crc)
}

// ---- blocking operations -------------------------------------------------------------------

impl Store {
    /// Creates an empty chunk on the disk with the most free space.
    pub fn create_blocking(&self, id: ChunkId, version: u32) -> Result<(), Status> {
        if self.get(id).is_ok() {
            return Err(Status::Exists);
        }
        let disk = self.choose_disk()?;
        let d = &self.disks[disk];
        let result = (|| -> Result<(), Fail> {
            d.check_fault()?;
            let tmp = d.temp_path(id, version);
            let file = File::create(&tmp)?;
            write_new_header(&file, id, version)?;
            file.sync_all()?;
            close_checked(file)?;
            fs::rename(&tmp, d.chunk_path(id, version))?;
            fsync_dir(tmp.parent().expect("in a subdirectory"))?;
            Ok(())
        })();
        result.map_err(|f| self.classify(disk, None, f, "create"))?;
        let mut map = self.chunks.write().expect("chunk map poisoned");
        map.insert(id, Arc::new(Chunk::new(id, disk, version, 0)));
        Ok(())
    }

    /// Reads `size` bytes at `offset`, verifying the CRC of every block touched.
    pub fn read_blocking(
        &self,
        id: ChunkId,
        version: u32,
        offset: u32,
        size: u32,
    ) -> Result<Vec<u8>, Status> {
        let (offset, size) = (offset as u64, size as u64);
        if size > MAX_IO_BYTES as u64 || !format::in_chunk(offset, size) {
            return Err(Status::Invalid);
        }
        let chunk = self.get(id)?;
        let st = chunk.state.read().expect("chunk lock poisoned");
        check_version(&st, version)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = format::block_range(offset, size);
        let mut data = self.read_checked(&chunk, &st, first, last, "read")?;
        let skip = (offset - first * B) as usize;
        if skip > 0 {
            return Ok(data[skip..skip + size as usize].to_vec());
        }
        data.truncate(size as usize); // block-aligned (sequential readers): no copy
        Ok(data)
    }

    /// A read within one block that a read verified since the copy last changed, answered
    /// from the page cache without blocking (see `verified`); `None` when the caller must
    /// take the slow path (`read_blocking`), which also gives every error.
    pub fn read_cached(
        &self,
        id: ChunkId,
        version: u32,
        offset: u32,
        size: u32,
    ) -> Option<Vec<u8>> {
        let (offset, size) = (offset as u64, size as u64);
        if size == 0 || !format::in_chunk(offset, size) {
            return None;
        }
        let (first, last) = format::block_range(offset, size);
        if first != last {
            return None;
        }
        let chunk = self.get(id).ok()?;
        // A writer holds the lock only briefly; the slow path waits for it instead.
        let st = chunk.state.try_read().ok()?;
        if st.removed || st.version != version || offset + size > st.length {
            return None;
        }
        let d = &self.disks[chunk.disk];
        d.check_fault().ok()?;
        let data = st.verified.read_cached(first, DATA_OFFSET + offset, size as usize)?;
        d.counters.cached_read_bytes.fetch_add(size, Ordering::Relaxed);
        Some(data)
    }

    /// Writes `data` at `offset`: data blocks first, then their CRC entries (see `format`).
    pub fn write_blocking(
        &self,
        id: ChunkId,
        version: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<(), Status> {
        let offset = offset as u64;
        if data.len() > MAX_IO_BYTES as usize || !format::in_chunk(offset, data.len() as u64) {
            return Err(Status::Invalid);
        }
        let chunk = self.get(id)?;
        let mut st = chunk.change();
        check_version(&st, version)?;
        if data.is_empty() {
            return Ok(());
        }
        let d = &self.disks[chunk.disk];
        let result = (|| -> Result<(), Fail> {
            d.check_fault()?;
            if st.open.is_none() {
                let file =
                    OpenOptions::new().read(true).write(true).open(d.chunk_path(id, version))?;
                st.open = Some((file, Instant::now()));
            }
            let length = st.length;
            let (file, used) = st.open.as_mut().expect("opened above");
            *used = Instant::now();
            let crcs = self.new_crcs(&chunk, version, file, offset, data, length)?;
            file.write_all_at(data, DATA_OFFSET + offset)?;
            let first = offset / B;
            file.write_all_at(&format::encode_crcs(&crcs), CRC_TABLE_OFFSET + first * 4)?;
            if self.fsync_every_write {
                file.sync_data()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                st.length = st.length.max(offset + data.len() as u64);
                d.counters.written_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(f) => {
                st.open = None;
                Err(self.classify(chunk.disk, Some(chunk.id), f, "write"))
            }
        }
    }

    /// The CRCs of the blocks a write touches. A block only partly covered is read, checked
    /// against its old CRC (so a write never blesses damaged data with a fresh CRC) and merged.
    fn new_crcs(
        &self,
        chunk: &Chunk,
        version: u32,
        file: &File,
        offset: u64,
        data: &[u8],
        length: u64,
    ) -> Result<Vec<u32>, Fail> {
        let end = offset + data.len() as u64;
        let (first, last) = format::block_range(offset, data.len() as u64);
        let mut crcs = Vec::with_capacity((last - first + 1) as usize);
        for block in first..=last {
            let (bstart, bend) = (block * B, block * B + B);
            let (wstart, wend) = (offset.max(bstart), end.min(bend));
            let piece = &data[(wstart - offset) as usize..(wend - offset) as usize];
            let covers = wstart == bstart && (wend == bend || length <= wend);
            if covers {
                crcs.push(block_crc(piece));
                continue;
            }
            let (mut old, old_crc) = read_blocks(file, block, block, length)?;
            if block_crc(&old) != old_crc[0] {
                self.copy_damaged(
                    chunk,
                    version,
                    &format!("CRC mismatch in block {block} before a partial write"),
                );
                return Err(Fail::Status(Status::Checksum));
            }
            let at = (wstart - bstart) as usize;
            old[at..at + piece.len()].copy_from_slice(piece);
            crcs.push(block_crc(&old));
        }
        Ok(crcs)
    }

    /// Makes the chunk's data durable (fsync) and closes the write descriptor.
    pub fn sync_blocking(&self, id: ChunkId, version: u32) -> Result<(), Status> {
        let chunk = self.get(id)?;
        let mut st = chunk.change();
        check_version(&st, version)?;
        let d = &self.disks[chunk.disk];
        let open = st.open.take();
        let result = (|| -> io::Result<()> {
            d.check_fault()?;
            let file = match open {
                Some((file, _)) => file,
                None => File::open(d.chunk_path(id, version))?,
            };
            file.sync_all()?;
            close_checked(file)
        })();
        result.map_err(|e| self.classify(chunk.disk, Some(chunk.id), e.into(), "sync"))
    }

    /// Syncs and closes write descriptors idle for longer than `idle`.
    pub fn close_idle_blocking(&self, idle: Duration) {
        for chunk in self.all() {
            let Ok(mut st) = chunk.state.try_write() else { continue };
            let stale = st.open.as_ref().is_some_and(|(_, used)| used.elapsed() >= idle);
            if !stale {
                continue;
            }
            let (file, _) = st.open.take().expect("checked above");
            let result = file.sync_all().and_then(|()| close_checked(file));
            drop(st);
            if let Err(e) = result {
                self.disk_failed(chunk.disk, &e, "sync of an idle chunk");
            }
        }
    }

    /// Changes a copy's version: header first, then the rename that commits it.
    pub fn set_version_blocking(
        &self,
        id: ChunkId,
        old_version: u32,
        new_version: u32,
    ) -> Result<(), Status> {
        let chunk = self.get(id)?;
        let mut st = chunk.change();
        if !st.removed && st.version == new_version {
            return Ok(());
        }
        check_version(&st, old_version)?;
        self.rename_version(&chunk, &mut st, new_version)
            .map_err(|f| self.classify(chunk.disk, Some(chunk.id), f, "version change"))
    }

    fn rename_version(
        &self,
        chunk: &Chunk,
        st: &mut ChunkState,
        new_version: u32,
    ) -> Result<(), Fail> {
        let d = &self.disks[chunk.disk];
        d.check_fault()?;
        if let Some((file, _)) = st.open.take() {
            file.sync_all()?;
            close_checked(file)?;
        }
        let old_path = d.chunk_path(chunk.id, st.version);
        let file = OpenOptions::new().write(true).open(&old_path)?;
        file.write_all_at(&format::encode_header(chunk.id, new_version), 0)?;
        file.sync_all()?;
        close_checked(file)?;
        let new_path = d.chunk_path(chunk.id, new_version);
        fs::rename(&old_path, &new_path)?;
        fsync_dir(new_path.parent().expect("in a subdirectory"))?;
        st.version = new_version;
        chunk.damaged.store(false, Ordering::Release);
        Ok(())
    }

    /// Deletes a copy (any version if `version` is 0).
    pub fn delete_blocking(&self, id: ChunkId, version: u32) -> Result<(), Status> {
        let chunk = self.get(id)?;
        let mut st = chunk.change();
        if version != 0 {
            check_version(&st, version)?;
        } else if st.removed {
            return Err(Status::NotFound);
        }
        let d = &self.disks[chunk.disk];
        let result = (|| -> io::Result<()> {
            d.check_fault()?;
            if let Some((file, _)) = st.open.take() {
                close_checked(file)?;
            }
            let path = d.chunk_path(id, st.version);
            match fs::remove_file(&path) {
                // Already gone is what a delete wants.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                removed => removed?,
            }
            fsync_dir(path.parent().expect("in a subdirectory"))
        })();
        result.map_err(|e| self.classify(chunk.disk, Some(id), e.into(), "delete"))?;
        st.removed = true;
        drop(st);
        let mut map = self.chunks.write().expect("chunk map poisoned");
        if map.get(&id).is_some_and(|c| Arc::ptr_eq(c, &chunk)) {
            map.remove(&id);
        }
        Ok(())
    }

    /// Cuts (or extends with zeros) a copy to `length` bytes and gives it `new_version`.
    pub fn truncate_blocking(
        &self,
        id: ChunkId,
        old_version: u32,
        new_version: u32,
        length: u64,
    ) -> Result<(), Status> {
        if length > CHUNK_BYTES {
            return Err(Status::Invalid);
        }
        let chunk = self.get(id)?;
        let mut st = chunk.change();
        if old_version != new_version && !st.removed && st.version == new_version {
            return Ok(());
        }
        check_version(&st, old_version)?;
        let result = self.cut(&chunk, &mut st, old_version, length).and_then(|()| {
            if new_version != old_version {
                self.rename_version(&chunk, &mut st, new_version)?;
            }
            Ok(())
        });
        result.map_err(|f| self.classify(chunk.disk, Some(chunk.id), f, "truncate"))
    }

    fn cut(
        &self,
        chunk: &Chunk,
        st: &mut ChunkState,
        version: u32,
        length: u64,
    ) -> Result<(), Fail> {
        let d = &self.disks[chunk.disk];
        d.check_fault()?;
        if let Some((file, _)) = st.open.take() {
            close_checked(file)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).open(d.chunk_path(chunk.id, version))?;
        if length < st.length {
            let keep_blocks = length.div_ceil(B);
            let mut crcs = Vec::new();
            if !length.is_multiple_of(B) {
                let block = length / B;
                let (data, old) = read_blocks(&file, block, block, st.length)?;
                if block_crc(&data) != old[0] {
                    self.copy_damaged(chunk, version, "CRC mismatch in the block a truncate cuts");
                    return Err(Fail::Status(Status::Checksum));
                }
                crcs.push(block_crc(&data[..(length % B) as usize]));
            }
            let old_blocks = st.length.div_ceil(B);
            crcs.extend((keep_blocks..old_blocks).map(|_| zero_block_crc()));
            let from = length / B;
            file.write_all_at(&format::encode_crcs(&crcs), CRC_TABLE_OFFSET + from * 4)?;
        }
        file.set_len(DATA_OFFSET + length)?;
        file.sync_all()?;
        close_checked(file)?;
        st.length = length;
        Ok(())
    }

    /// Copy-on-write: makes `new_id` at `new_version` from a local copy of `old_id`.
    pub fn duplicate_blocking(
        &self,
        new_id: ChunkId,
        new_version: u32,
        old_id: ChunkId,
        old_version: u32,
    ) -> Result<(), Status> {
        if self.get(new_id).is_ok() {
            return Err(Status::Exists);
        }
        let old = self.get(old_id)?;
        let st = old.state.read().expect("chunk lock poisoned");
        check_version(&st, old_version)?;
        let d = &self.disks[old.disk];
        let result = (|| -> Result<(), Fail> {
            d.check_fault()?;
            let tmp = d.temp_path(new_id, new_version);
            fs::copy(d.chunk_path(old_id, old_version), &tmp)?;
            let file = OpenOptions::new().write(true).open(&tmp)?;
            file.write_all_at(&format::encode_header(new_id, new_version), 0)?;
            file.sync_all()?;
            close_checked(file)?;
            let path = d.chunk_path(new_id, new_version);
            fs::rename(&tmp, &path)?;
            fsync_dir(path.parent().expect("in a subdirectory"))?;
            Ok(())
        })();
        result.map_err(|f| self.classify(old.disk, Some(old.id), f, "duplicate"))?;
        let length = st.length;
        drop(st);
        let mut map = self.chunks.write().expect("chunk map poisoned");
        map.insert(new_id, Arc::new(Chunk::new(new_id, old.disk, new_version, length)));
        Ok(())
    }

    /// Reads blocks `[first, last]` of a copy and checks every CRC. Damage is reported to the
    /// master (`found_by` says which path found it) and answered `Checksum`; an I/O error
    /// counts against the disk.
    fn read_checked(
        &self,
        chunk: &Chunk,
        st: &ChunkState,
        first: u64,
        last: u64,
        found_by: &str,
    ) -> Result<Vec<u8>, Status> {
        let d = &self.disks[chunk.disk];
        let read = (|| -> io::Result<(Vec<u8>, Vec<u32>, File)> {
            d.check_fault()?;
            let file = File::open(d.chunk_path(chunk.id, st.version))?;
            let (data, crcs) = read_blocks(&file, first, last, st.length)?;
            Ok((data, crcs, file))
        })();
        let (data, crcs, file) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let why = format!("file shorter than its recorded length ({found_by})");
                self.copy_damaged(chunk, st.version, &why);
                return Err(Status::Checksum);
            }
            Err(e) => return Err(self.classify(chunk.disk, Some(chunk.id), e.into(), found_by)),
        };
        if let Some(bad) = first_bad_block(&data, &crcs) {
            let why = format!("CRC mismatch in block {} ({found_by})", first + bad as u64);
            self.copy_damaged(chunk, st.version, &why);
            return Err(Status::Checksum);
        }
        st.verified.passed(first, last, file);
        d.counters.read_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// Re-reads `len` bytes of a copy from `offset` (whole blocks) and checks their CRCs.
    /// Returns how many bytes were checked; 0 when the copy is gone or changed version
    /// (nothing to scrub), `Err` when damage was found and reported.
    pub fn verify_blocking(
        &self,
        id: ChunkId,
        version: u32,
        offset: u64,
        len: u64,
    ) -> Result<u64, Status> {
        let Ok(chunk) = self.get(id) else { return Ok(0) };
        let st = chunk.state.read().expect("chunk lock poisoned");
        if st.removed || st.version != version || offset >= st.length.max(1) {
            return Ok(0);
        }
        let len = len.min(st.length.saturating_sub(offset)).max(1);
        let (first, last) = format::block_range(offset, len.min(CHUNK_BYTES - offset));
        let data = self.read_checked(&chunk, &st, first, last, "scrub")?;
        Ok(data.len() as u64)
    }
}

/// Builds a chunk from data streamed in order (replication), in a temporary file that becomes
/// the copy only once complete and durable.
#[derive(Debug)]
pub struct Builder {
    id: ChunkId,
    version: u32,
    disk: usize,
    file: Option<File>,
    written: u64,
    crcs: Vec<u32>,
}

impl Store {
    /// Starts building `id` at `version` on the disk with the most free space.
    pub fn build_begin(&self, id: ChunkId, version: u32) -> Result<Builder, Status> {
        let disk = self.choose_disk()?;
        let d = &self.disks[disk];
        let result = (|| -> Result<File, Fail> {
            d.check_fault()?;
            let file = File::create(d.temp_path(id, version))?;
            write_new_header(&file, id, version)?;
            Ok(file)
        })();
        let file = result.map_err(|f| self.classify(disk, None, f, "replication start"))?;
        Ok(Builder { id, version, disk, file: Some(file), written: 0, crcs: Vec::new() })
    }

    /// Appends the next piece of data; every piece but the last must be whole blocks.
    pub fn build_append(&self, b: &mut Builder, data: &[u8]) -> Result<(), Status> {
        assert!(b.written.is_multiple_of(B), "only the last piece may end inside a block");
        if !format::in_chunk(b.written, data.len() as u64) {
            return Err(Status::Invalid);
        }
        let file = b.file.as_ref().expect("builder used after finish");
        let d = &self.disks[b.disk];
        let result =
            d.check_fault().and_then(|()| file.write_all_at(data, DATA_OFFSET + b.written));
        result.map_err(|e| self.classify(b.disk, None, e.into(), "replication write"))?;
        b.crcs.extend(data.chunks(B as usize).map(block_crc));
        b.written += data.len() as u64;
        d.counters.written_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the CRC table, fsyncs and renames the copy into place, replacing any older copy
    /// of the same chunk on this server.
    pub fn build_finish(&self, mut b: Builder) -> Result<(), Status> {
        let file = b.file.take().expect("finish once");
        let d = &self.disks[b.disk];
        let result = (|| -> Result<(), Fail> {
            d.check_fault()?;
            file.write_all_at(&format::encode_crcs(&b.crcs), CRC_TABLE_OFFSET)?;
            file.sync_all()?;
            close_checked(file)?;
            let path = d.chunk_path(b.id, b.version);
            fs::rename(d.temp_path(b.id, b.version), &path)?;
            fsync_dir(path.parent().expect("in a subdirectory"))?;
            Ok(())
        })();
        result.map_err(|f| self.classify(b.disk, None, f, "replication finish"))?;
        self.replace(b.id, b.disk, b.version, b.written);
        Ok(())
    }

    /// Drops an unfinished build and its temporary file.
    pub fn build_abort(&self, mut b: Builder) {
        if let Some(file) = b.file.take() {
            if let Err(e) = close_checked(file) {
                tracing::warn!(chunk = b.id, error = %e, "close of an aborted replication failed");
            }
        }
        let tmp = self.disks[b.disk].temp_path(b.id, b.version);
        if let Err(e) = fs::remove_file(&tmp) {
            tracing::warn!(file = %tmp.display(), error = %e, "cannot remove temporary chunk file");
        }
    }

    /// Installs a freshly built copy, removing the file of the copy it replaces.
    fn replace(&self, id: ChunkId, disk: usize, version: u32, length: u64) {
        let new = Arc::new(Chunk::new(id, disk, version, length));
        let old = self.chunks.write().expect("chunk map poisoned").insert(id, new);
        let Some(old) = old else { return };
        let mut st = old.change();
        st.open = None;
        st.removed = true;
        if old.disk == disk && st.version == version {
            return; // the rename replaced it
        }
        let path = self.disks[old.disk].chunk_path(id, st.version);
        let removed = fs::remove_file(&path)
            .and_then(|()| fsync_dir(path.parent().expect("in a subdirectory")));
        if let Err(e) = removed {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the replaced copy");
        }
    }
}

// ---- async wrappers ------------------------------------------------------------------------

/// Runs a blocking store operation on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    op: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || op(&store)).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "chunk operation task failed");
            Err(Status::Io)
        }
    }
}

#[cfg(test)]
mod tests;
mod verified;
