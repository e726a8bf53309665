//! Open files: write-back buffering, flushing to chunkservers, read-ahead.
//!
//! Writes land in the file's [`Extents`] and return at once. They are sent to chunkservers
//! when the buffer is large (in the background), old, or when the application asks
//! (`flush` on close, `fsync`), and before anything that must see them (a read, a truncate).
//! Sending one chunk's share is: `WriteChunk` (the master picks chain and version) → data
//! down the chain → `Sync` (fsync on every copy) → `WriteChunkEnd` with the new length. So a
//! successful flush means the bytes are durable on every copy and the length is committed.
//!
//! A failed background flush is remembered and reported by the next `flush`/`fsync`/close of
//! the file, as a local filesystem reports write-back errors.

use super::extents::{by_chunk, Extents};
use super::{master, unexpected, Caller, Client};
use bytes::Bytes;
use mfsha_proto::client::{ChunkWrite, ClientOp, ClientReply};
use mfsha_proto::types::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A cached chunk location whose token has less left than this is asked for again.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Per-inode state shared by every handle of the file in this client.
pub(crate) struct FileState {
    ino: Ino,
    inner: Mutex<FileInner>,
    /// Serialises flushes of this file, so ranges reach chunkservers in write order.
    flush_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FileInner {
    dirty: Extents,
    dirty_since: Option<Instant>,
    /// End of the furthest write the master has not committed yet (0: none pending).
    pending_end: u64,
    /// A background flush failed with this; reported by the next flush.
    error: Option<Status>,
    /// Bumped on every change of the data: read-ahead filled before it is stale.
    version: u64,
    /// Open handles of this file in this client.
    handles: u32,
    /// The master holds an `Open` of this file for this client's session.
    acquired: bool,
    /// When the last handle closed while still acquired: the `Release` waits a little, so a
    /// program that opens the file again soon (or a tree walk) costs no master round trip.
    idle_since: Option<Instant>,
    /// A background flush is queued or running.
    flushing: bool,
    /// Where chunks were last found, valid until the data changes or the file is reopened.
    locations: HashMap<u32, ChunkLocation>,
}

impl FileState {
    fn new(ino: Ino) -> Self {
        FileState { ino, inner: Mutex::new(FileInner::default()), flush_lock: Default::default() }
    }

    pub(crate) fn pending_end(&self) -> u64 {
        self.inner.lock().pending_end
    }

    fn version(&self) -> u64 {
        self.inner.lock().version
    }

    /// Something changed the file's data or length outside the buffer.
    pub(crate) fn changed(&self) {
        let mut inner = self.inner.lock();
        inner.version += 1;
        inner.locations.clear();
    }

    /// The file was cut to `size`: buffered bytes past it are void.
    pub(crate) fn truncated(&self, size: u64) {
        let mut inner = self.inner.lock();
        inner.dirty.truncate(size);
        inner.pending_end = inner.pending_end.min(size).max(inner.dirty.end());
        inner.version += 1;
        inner.locations.clear();
    }

    pub(crate) fn has_unsent(&self) -> bool {
        let inner = self.inner.lock();
        !inner.dirty.is_empty() || inner.pending_end > 0 || inner.flushing
    }
}

/// One open file handle.
pub(crate) struct Handle {
    file: Arc<FileState>,
    read_ahead: tokio::sync::Mutex<ReadAhead>,
}

/// The last window read for a sequential reader, and the next one being fetched.
#[derive(Default)]
struct ReadAhead {
    start: u64,
    /// Shared with the replies cut from it: serving a read copies nothing.
    data: Bytes,
    /// The window ended at the end of the file.
    eof: bool,
    version: u64,
    /// Where a sequential reader reads next.
    next: u64,
    window: u64,
    /// The window after `data`, fetched in the background while the reader consumes `data`,
    /// so that disk, network and the application overlap.
    ahead: Option<Prefetch>,
}

/// A window being read in the background.
struct Prefetch {
    start: u64,
    len: u64,
    version: u64,
    task: tokio::task::JoinHandle<Reply<Vec<u8>>>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Nobody will use it: stop asking the chunkservers.
        self.task.abort();
    }
}

impl ReadAhead {
    /// The bytes for `[offset, offset + size)` if this window holds them.
    fn serve(&self, offset: u64, size: u64, version: u64) -> Option<Bytes> {
        let end = self.start + self.data.len() as u64;
        if version != self.version || offset < self.start || offset > end {
            return None;
        }
        if offset + size > end && !self.eof {
            return None;
        }
        let from = (offset - self.start) as usize;
        let to = ((offset + size).min(end) - self.start) as usize;
        Some(self.data.slice(from..to))
    }

    /// The background window starting at `offset`, if one was started for this version.
    /// A failed prefetch gives `None`: the caller reads again, with its own retries.
    async fn take_ahead(&mut self, offset: u64, version: u64) -> Option<(Bytes, u64)> {
        let ahead = self.ahead.take()?;
        if ahead.start != offset || ahead.version != version {
            return None;
        }
        let len = ahead.len;
        match (&mut { ahead }.task).await {
            Ok(Ok(data)) => Some((Bytes::from(data), len)),
            _ => None,
        }
    }
}

impl Client {
    fn handle(&self, fh: u64) -> Reply<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned().ok_or(Status::Invalid)
    }

    /// Opens `ino` and returns a handle number and fresh attributes. A file not yet held by
    /// this client is registered with the master (so it stays readable if unlinked).
    pub async fn open(&self, who: Caller, ino: Ino, flags: i32) -> Reply<(u64, Attr)> {
        let file = self.file_for_handle(ino);
        let acquire = {
            let mut inner = file.inner.lock();
            // Close-to-open: what another client wrote before our open must be visible.
            inner.locations.clear();
            inner.version += 1;
            !std::mem::replace(&mut inner.acquired, true)
        };
        let attr = if acquire {
            let opened = self.call_attr(who, ClientOp::Open { ino, flags }).await;
            match &opened {
                Ok(_) => self.link.note_acquired(ino),
                Err(_) => file.inner.lock().acquired = false,
            }
            opened
        } else {
            self.getattr(ino).await
        };
        match attr {
            Ok(attr) => Ok((self.new_handle(file), attr)),
            Err(e) => {
                self.closed_handle(&file);
                Err(e)
            }
        }
    }

    /// Creates a regular file and opens it, in one master request (FUSE `create`): the new
    /// file is held by this session from the same commit that creates it.
    pub async fn create(
        &self,
        who: Caller,
        parent: Ino,
        name: &str,
        mode: u32,
        umask: u32,
    ) -> Reply<(u64, Attr)> {
        let op = ClientOp::Create { parent, name: name.to_string(), mode, umask };
        let ticket = self.no_caps.ticket();
        let attr = self.call_attr(who, op).await?;
        // A new file has no capabilities: its first write need not ask.
        self.no_caps.absent(attr.ino, ticket);
        let file = self.file_for_handle(attr.ino);
        file.inner.lock().acquired = true;
        self.link.note_acquired(attr.ino);
        Ok((self.new_handle(file), attr))
    }

    /// The file's shared state, counting one more handle (so it is not forgotten meanwhile).
    fn file_for_handle(&self, ino: Ino) -> Arc<FileState> {
        let mut files = self.files.lock();
        let file = files.entry(ino).or_insert_with(|| Arc::new(FileState::new(ino))).clone();
        let mut inner = file.inner.lock();
        inner.handles += 1;
        inner.idle_since = None;
        drop(inner);
        file
    }

    /// A new handle number for `file`.
    fn new_handle(&self, file: Arc<FileState>) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(Handle { file, read_ahead: Default::default() }));
        fh
    }

    /// One handle of `file` is gone; the last one starts the release delay.
    fn closed_handle(&self, file: &Arc<FileState>) {
        let idle = {
            let mut inner = file.inner.lock();
            inner.handles -= 1;
            if inner.handles == 0 && inner.acquired {
                inner.idle_since = Some(Instant::now());
            }
            inner.handles == 0
        };
        if idle {
            self.forget_file(file);
        }
    }

    /// Buffers `data` at `offset`; returns the bytes accepted (all of them).
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Reply<u32> {
        let file = self.handle(fh)?.file.clone();
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE_BYTES) {
            return Err(Status::TooBig);
        }
        let (bytes, start_flush) = {
            let mut inner = file.inner.lock();
            inner.dirty.insert(offset, data);
            inner.pending_end = inner.pending_end.max(offset + data.len() as u64);
            inner.dirty_since.get_or_insert_with(Instant::now);
            inner.version += 1;
            let bytes = inner.dirty.bytes();
            let start = bytes >= self.cfg.flush_bytes && !inner.flushing;
            if start {
                inner.flushing = true;
            }
            (bytes, start)
        };
        if bytes >= self.cfg.max_dirty_bytes {
            // The writer outran the chunkservers: wait, so memory stays bounded.
            self.flush_file(&file).await?;
        } else if start_flush {
            self.flush_in_background(file);
        }
        Ok(data.len() as u32)
    }

    /// Reads up to `size` bytes at `offset` (fewer at the end of the file).
    ///
    /// A sequential reader gets a growing window (up to `read_ahead_bytes`), and while it
    /// consumes one window the next is already being fetched.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Reply<Bytes> {
        let handle = self.handle(fh)?;
        let file = &handle.file;
        if file.has_unsent() {
            // Reads see this client's own writes: send them first.
            self.flush_file(file).await?;
        }
        let size = u64::from(size);
        let mut ra = handle.read_ahead.lock().await;
        let version = file.version();
        if let Some(bytes) = ra.serve(offset, size, version) {
            ra.next = offset + bytes.len() as u64;
            return Ok(bytes);
        }
        let sequential = offset == ra.next && offset > 0;
        let max_window = u64::from(self.cfg.read_ahead_bytes).max(size);
        let (data, want) = match ra.take_ahead(offset, version).await {
            Some((data, len)) if sequential => (data, len),
            _ => {
                ra.window = if sequential { ra.window.clamp(size, max_window) } else { size };
                let want = ra.window.max(size);
                (Bytes::from(self.read_range(file, offset, want).await?), want)
            }
        };
        // A sequential reader's windows double up to `read_ahead_bytes`.
        let grown = if sequential { (ra.window * 2).clamp(size, max_window) } else { ra.window };
        let eof = (data.len() as u64) < want;
        *ra = ReadAhead { start: offset, data, eof, version, next: 0, window: grown, ahead: None };
        if sequential && !eof {
            ra.ahead = self.prefetch(file, offset + want, grown, version);
        }
        let bytes = ra.serve(offset, size, version).unwrap_or_default();
        ra.next = offset + bytes.len() as u64;
        Ok(bytes)
    }

    /// Starts reading `[offset, offset + len)` in the background.
    fn prefetch(
        &self,
        file: &Arc<FileState>,
        offset: u64,
        len: u64,
        version: u64,
    ) -> Option<Prefetch> {
        let client = self.myself()?;
        let file = file.clone();
        let task = tokio::spawn(async move { client.read_range(&file, offset, len).await });
        Some(Prefetch { start: offset, len, version, task })
    }

    /// Reads `[offset, offset + len)` from chunkservers, shorter at the end of the file.
    async fn read_range(&self, file: &FileState, offset: u64, len: u64) -> Reply<Vec<u8>> {
        // Not preallocated: a one-chunk window (the usual case) becomes the chunk's own buffer.
        let mut out = Vec::new();
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let index = (pos / CHUNK_BYTES) as u32;
            let in_chunk = pos % CHUNK_BYTES;
            let loc = self.location(file, index).await?;
            if in_chunk >= loc.file_length {
                break;
            }
            let n = (end - pos).min(loc.file_length - in_chunk);
            if loc.chunk_id == 0 {
                out.resize(out.len() + n as usize, 0);
            } else {
                let data = self.read_chunk(file, index, loc, in_chunk as u32, n as u32).await?;
                if out.is_empty() {
                    out = data; // the usual case, one chunk: no copy
                } else {
                    // The window spans chunks: room for all of it at once, then append.
                    out.reserve_exact(len as usize - out.len());
                    out.extend_from_slice(&data);
                }
            }
            pos += n;
        }
        Ok(out)
    }

    /// Where chunk `index` lives (cached until the file changes or is reopened, or until
    /// its chunk token is about to expire).
    async fn location(&self, file: &FileState, index: u32) -> Reply<ChunkLocation> {
        let now_ms = mfsha_proto::chunk_token::unix_now_ms();
        let fresh = |loc: &ChunkLocation| {
            loc.token == Default::default() || loc.token.fresh_for(TOKEN_MARGIN, now_ms)
        };
        if let Some(loc) = file.inner.lock().locations.get(&index).filter(|loc| fresh(loc)) {
            return Ok(loc.clone());
        }
        let op = ClientOp::ReadChunk { ino: file.ino, index };
        let deadline = Instant::now() + self.cfg.master.io_timeout;
        match self.call_while(op, deadline, |s| s == Status::NoChunkCopies).await? {
            ClientReply::Chunk(loc) => {
                file.inner.lock().locations.insert(index, loc.clone());
                Ok(loc)
            }
            other => Err(unexpected("a chunk location", &other)),
        }
    }

    /// Reads from one of the copies; when all fail, asks the master again (copies move) until
    /// the I/O timeout.
    async fn read_chunk(
        &self,
        file: &FileState,
        index: u32,
        mut loc: ChunkLocation,
        offset: u32,
        size: u32,
    ) -> Reply<Vec<u8>> {
        let deadline = Instant::now() + self.cfg.master.io_timeout;
        loop {
            match self.data.read(&loc, offset, size).await {
                Ok(data) => return Ok(data),
                Err(errors) => {
                    let summary: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    if Instant::now() >= deadline {
                        tracing::error!(ino = file.ino, index, chunk = loc.chunk_id,
                            errors = %summary.join("; "), "no copy of the chunk could be read; EIO");
                        return Err(Status::Io);
                    }
                    tracing::warn!(ino = file.ino, index, chunk = loc.chunk_id,
                        errors = %summary.join("; "), "no copy answered; asking the master again");
                    tokio::time::sleep(self.cfg.master.reconnect_interval).await;
                    file.inner.lock().locations.remove(&index);
                    loc = self.location(file, index).await?;
                    if loc.chunk_id == 0 {
                        return Ok(vec![0; size as usize]);
                    }
                }
            }
        }
    }

    /// Sends the file's buffered writes (close, `flush`).
    pub async fn flush(&self, fh: u64) -> Reply<()> {
        let file = self.handle(fh)?.file.clone();
        self.flush_file(&file).await
    }

    /// Makes the file's writes durable on every copy. Every flush ends with `Sync` on the
    /// chunkservers, so this is a flush.
    pub async fn fsync(&self, fh: u64) -> Reply<()> {
        self.flush(fh).await
    }

    /// Closes a handle after sending its writes. The master hears of the close a little
    /// later (see `FileInner::idle_since`), or at once when the client closes.
    pub async fn release(&self, fh: u64) -> Reply<()> {
        let handle = self.handles.lock().remove(&fh).ok_or(Status::Invalid)?;
        let flushed = self.flush_file(&handle.file).await;
        self.closed_handle(&handle.file);
        flushed
    }

    /// Drops the per-inode state once nothing refers to it.
    fn forget_file(&self, file: &Arc<FileState>) {
        let mut files = self.files.lock();
        let inner = file.inner.lock();
        let idle =
            inner.handles == 0 && !inner.acquired && inner.dirty.is_empty() && !inner.flushing;
        if idle && files.get(&file.ino).is_some_and(|f| Arc::ptr_eq(f, file)) {
            files.remove(&file.ino);
        }
    }

    /// Tells the master about files closed at least `delay` ago (all of them with `ZERO`).
    pub(crate) async fn release_idle(&self, delay: Duration) {
        let due: Vec<Arc<FileState>> = {
            let mut files = self.files.lock();
            let due: Vec<Arc<FileState>> = files
                .values()
                .filter(|f| {
                    let mut inner = f.inner.lock();
                    let ready = inner.handles == 0
                        && inner.acquired
                        && inner.dirty.is_empty()
                        && !inner.flushing
                        && inner.idle_since.is_some_and(|t| t.elapsed() >= delay);
                    if ready {
                        inner.acquired = false;
                        inner.idle_since = None;
                    }
                    ready
                })
                .cloned()
                .collect();
            for f in &due {
                files.remove(&f.ino);
            }
            due
        };
        for file in due {
            match self.call_unit(Caller::ROOT, ClientOp::Release { ino: file.ino }).await {
                Ok(()) => self.link.note_released(file.ino),
                Err(e) => {
                    tracing::warn!(ino = file.ino, error = %e, "the master did not take a release")
                }
            }
        }
    }

    fn flush_in_background(self: &Client, file: Arc<FileState>) {
        let Some(client) = self.myself() else { return };
        tokio::spawn(async move {
            let result = client.flush_file(&file).await;
            let mut inner = file.inner.lock();
            inner.flushing = false;
            if let Err(e) = result {
                inner.error.get_or_insert(e);
            }
        });
    }

    /// Sends every buffered write of `file`, in order with earlier flushes.
    pub(crate) async fn flush_file(&self, file: &FileState) -> Reply<()> {
        let _order = file.flush_lock.lock().await;
        let ranges = {
            let mut inner = file.inner.lock();
            inner.dirty_since = None;
            inner.dirty.take()
        };
        let result =
            if ranges.is_empty() { Ok(()) } else { self.write_ranges(file, &ranges).await };
        let mut inner = file.inner.lock();
        if inner.dirty.is_empty() {
            inner.pending_end = 0;
        }
        inner.locations.clear();
        inner.version += 1;
        match (result, inner.error.take()) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }

    async fn write_ranges(&self, file: &FileState, ranges: &[(u64, Vec<u8>)]) -> Reply<()> {
        let pieces = by_chunk(ranges, CHUNK_BYTES);
        let mut start = 0;
        while start < pieces.len() {
            let index = pieces[start].0;
            let count = pieces[start..].iter().take_while(|p| p.0 == index).count();
            let extents: Vec<(u32, &[u8])> =
                pieces[start..start + count].iter().map(|p| (p.1, p.2)).collect();
            if let Err(e) = self.write_chunk(file.ino, index, &extents).await {
                let bytes: usize = ranges.iter().map(|r| r.1.len()).sum();
                tracing::error!(ino = file.ino, index, bytes, error = %e,
                    "buffered writes could not be stored; the application sees the error at fsync/close");
                return Err(e);
            }
            start += count;
        }
        Ok(())
    }

    /// Writes the extents of one chunk: chain, sync, commit the length. Retries with a fresh
    /// chain (the master may pick other servers) until the I/O timeout.
    async fn write_chunk(&self, ino: Ino, index: u32, extents: &[(u32, &[u8])]) -> Reply<()> {
        let base = u64::from(index) * CHUNK_BYTES;
        let end = extents
            .iter()
            .map(|(o, d)| base + u64::from(*o) + d.len() as u64)
            .max()
            .unwrap_or(base);
        let deadline = Instant::now() + self.cfg.master.io_timeout;
        loop {
            let cw = match self.begin_chunk_write(ino, index, deadline).await? {
                ClientReply::ChunkWrite(cw) => cw,
                other => return Err(unexpected("a chunk write", &other)),
            };
            match self.data.write_chain(&cw, extents).await {
                Ok(()) => return self.end_chunk_write(ino, index, &cw, end, true).await,
                Err(e) => {
                    tracing::warn!(ino, index, chunk = cw.chunk_id, version = cw.version, error = %e,
                        "chunk write failed; asking the master for a new chain");
                    if let Err(end_err) = self.end_chunk_write(ino, index, &cw, end, false).await {
                        tracing::warn!(ino, index, error = %end_err, "could not report the failed write");
                    }
                    if Instant::now() >= deadline {
                        return Err(Status::Io);
                    }
                    tokio::time::sleep(self.cfg.master.reconnect_interval).await;
                }
            }
        }
    }

    /// `WriteChunk`, waiting while another writer holds the chunk, and while no chunkserver
    /// (or none with a current copy of the chunk) is registered: a master that just started
    /// hears from the chunkservers within a few seconds.
    async fn begin_chunk_write(
        &self,
        ino: Ino,
        index: u32,
        deadline: Instant,
    ) -> Reply<ClientReply> {
        let op = ClientOp::WriteChunk { ino, index };
        let passing =
            |s| matches!(s, Status::ChunkLocked | Status::NoChunkservers | Status::NoChunkCopies);
        self.call_while(op, deadline, passing).await
    }

    /// Calls `op`, and again while the answer is a status that `passing` says may clear up
    /// (a chunk locked by another writer; chunkservers not yet registered with a master that
    /// just started), until `deadline`; then that status is the answer.
    async fn call_while(
        &self,
        op: ClientOp,
        deadline: Instant,
        passing: impl Fn(Status) -> bool,
    ) -> Reply<ClientReply> {
        let mut pause = Duration::from_millis(20);
        loop {
            match self.call(Caller::ROOT, op.clone()).await {
                Err(status) if passing(status) && Instant::now() + pause < deadline => {
                    tracing::debug!(%status, op = master::op_name(&op), "waiting for it to clear");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    async fn end_chunk_write(
        &self,
        ino: Ino,
        index: u32,
        cw: &ChunkWrite,
        end: u64,
        ok: bool,
    ) -> Reply<()> {
        let op = ClientOp::WriteChunkEnd { ino, index, chunk_id: cw.chunk_id, file_size: end, ok };
        match self.call(Caller::ROOT, op).await? {
            ClientReply::Unit | ClientReply::Attr(_) => Ok(()),
            other => Err(unexpected("the end of a chunk write", &other)),
        }
    }

    /// Sends every file's buffered writes; the first error is returned after trying all.
    pub async fn flush_all(&self) -> Reply<()> {
        let files: Vec<Arc<FileState>> = self.files.lock().values().cloned().collect();
        let mut first_error = Ok(());
        for file in files {
            if let Err(e) = self.flush_file(&file).await {
                first_error = first_error.and(Err(e));
            }
        }
        first_error
    }

    fn myself(&self) -> Option<Arc<Client>> {
        self.this.upgrade()
    }
}

/// Largest file size the chunk index (u32) allows; beyond it writes fail with EFBIG.
pub const MAX_FILE_BYTES: u64 = (u32::MAX as u64) * CHUNK_BYTES;

/// Sends buffered writes that waited longer than `max_dirty_age`.
pub(crate) async fn flusher(client: Weak<Client>) {
    loop {
        let age = match client.upgrade() {
            Some(c) => c.cfg.max_dirty_age,
            None => return,
        };
        tokio::time::sleep(age / 4).await;
        let Some(client) = client.upgrade() else { return };
        let stale: Vec<Arc<FileState>> = client
            .files
            .lock()
            .values()
            .filter(|f| {
                let mut inner = f.inner.lock();
                let old = inner.dirty_since.is_some_and(|t| t.elapsed() >= age);
                let start = old && !inner.flushing;
                if start {
                    inner.flushing = true;
                }
                start
            })
            .cloned()
            .collect();
        for file in stale {
            client.flush_in_background(file);
        }
        client.release_idle(RELEASE_DELAY).await;
    }
}

/// How long after its last close a file stays registered with the master.
pub const RELEASE_DELAY: Duration = Duration::from_secs(2);
