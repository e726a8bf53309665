//! The FUSE adapter: kernel requests in, client calls, replies out. Nothing else.
//!
//! Each callback converts its arguments, spawns the client call on the tokio runtime and
//! returns at once; the spawned task replies. So a request waiting for a master that is being
//! restarted never holds up the FUSE thread or other requests. Errors map to errno in one
//! place ([`Status::errno`]); protocol, caching and reconnecting live in the client.
//!
//! Permission checks are first the kernel's: the filesystem is mounted with
//! `default_permissions`, which also covers opens the kernel never sends here (FIFOs,
//! devices). The master checks again (it trusts no client), with the caller's uid, gid and
//! supplementary groups, which [`caller`] reads for it.

use crate::client::{Caller, Client, Groups, LockWait, NewNode};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, FUSE_ROOT_ID,
};
use mfsha_proto::client::{FileLock, LockKind};
use mfsha_proto::types::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest read and write request the kernel is asked to send.
pub const MAX_IO_REQUEST: u32 = 1 << 20;
/// Block size reported to `stat` and `statfs` (the chunkservers' CRC block).
const BLOCK_SIZE: u32 = BLOCK_BYTES as u32;

/// Cache lifetimes handed to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct CacheTimes {
    /// How long the kernel may reuse an inode's attributes.
    pub attr: Duration,
    /// How long the kernel may reuse a name → inode lookup.
    pub entry: Duration,
}

/// Who checks permissions before a request reaches the master (which checks them again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionChecks {
    /// The kernel, from the attributes it caches (`default_permissions`): the default, and
    /// the fast one (no access(2) round trips).
    Kernel,
    /// The master alone (`-o nodefault_permissions`): the kernel sends access(2) and opendir
    /// here, and the mount asks the master.
    Master,
}

/// A directory listing taken at the first `readdir` of an open directory, so that entries
/// removed while a program walks it (`rm -r`) do not shift the offsets of the rest.
type Listing = Arc<Vec<DirEntry>>;

/// The mounted filesystem as fuser sees it.
pub struct MfsFuse {
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    times: CacheTimes,
    checks: PermissionChecks,
    /// The session root's inode, shown to the kernel as inode 1.
    root: Ino,
    dirs: Arc<Mutex<HashMap<u64, Option<Listing>>>>,
    next_dir: u64,
    /// Tells the kernel to drop cached pages; set once the session exists (see `notifier`).
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl MfsFuse {
    pub fn new(
        client: Arc<Client>,
        rt: tokio::runtime::Handle,
        times: CacheTimes,
        checks: PermissionChecks,
    ) -> Self {
        let root = client.root();
        let notifier = Arc::default();
        let dirs = Default::default();
        MfsFuse { client, rt, times, checks, root, dirs, next_dir: 1, notifier }
    }

    /// Where to put the session's notifier once `fuser::Session::new` has taken `self`.
    pub fn notifier(&self) -> Arc<OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// The master's inode for a kernel inode number.
    fn ino(&self, fuse_ino: u64) -> Ino {
        if fuse_ino == FUSE_ROOT_ID {
            self.root
        } else {
            fuse_ino
        }
    }

    /// Runs `work` on the runtime; replies `done(reply, value)` or the status's errno.
    fn spawn<R, T, F, D>(&self, reply: R, work: F, done: D)
    where
        R: ErrorReply,
        T: Send + 'static,
        F: Future<Output = Reply<T>> + Send + 'static,
        D: FnOnce(R, T) + Send + 'static,
    {
        self.rt.spawn(async move {
            match work.await {
                Ok(value) => done(reply, value),
                Err(status) => reply.fail(status.errno()),
            }
        });
    }

    fn entry_reply(&self) -> impl FnOnce(ReplyEntry, Attr) + Send + 'static {
        let (times, root) = (self.times, self.root);
        move |reply, attr| reply.entry(&times.entry_for(&attr), &to_fuse(&attr, root), 0)
    }

    fn attr_reply(&self) -> impl FnOnce(ReplyAttr, Attr) + Send + 'static {
        let (ttl, root) = (self.times.attr, self.root);
        move |reply, attr| reply.attr(&ttl, &to_fuse(&attr, root))
    }
}

impl CacheTimes {
    /// Entries are cached for `entry`, but never longer than their attributes.
    fn entry_for(&self, _attr: &Attr) -> Duration {
        self.entry.min(self.attr)
    }
}

/// fuser reply types that can carry an errno.
pub trait ErrorReply: Send + 'static {
    fn fail(self, errno: i32);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn fail(self, errno: i32) {
                self.error(errno)
            }
        }
    )*};
}
error_reply!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyEmpty,
    ReplyOpen,
    ReplyWrite,
    ReplyCreate,
    ReplyStatfs,
    ReplyXattr,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyLock
);

fn caller(req: &Request<'_>) -> Caller {
    let (uid, gid) = (req.uid(), req.gid());
    // Root passes the master's checks without them; anyone else's group permissions need
    // the supplementary groups, which FUSE does not pass: the kernel shows them in /proc.
    let groups = match uid {
        0 => Groups::NONE,
        _ => supplementary_groups(req.pid()),
    };
    Caller { uid, gid, groups }
}

/// The supplementary groups of process (or thread) `pid`, from the `Groups:` line of
/// `/proc/PID/status`; none if it is gone (the master then judges by uid and gid alone).
fn supplementary_groups(pid: u32) -> Groups {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Groups::NONE;
    };
    let line = status.lines().find_map(|line| line.strip_prefix("Groups:"));
    Groups::new(line.unwrap_or("").split_whitespace().filter_map(|id| id.parse().ok()))
}

/// A file name as the protocol carries it (UTF-8).
fn name_of(name: &OsStr) -> Result<String, i32> {
    name.to_str().map(str::to_string).ok_or(libc::EINVAL)
}

/// Kernel time → protocol time, keeping the kernel's (seconds, nanoseconds) fields as they are.
fn to_timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp::new(d.as_secs() as i64, d.subsec_nanos()),
        // fuser builds pre-1970 times as EPOCH - (|secs|, nsec); undo exactly that.
        Err(e) => Timestamp::new(-(e.duration().as_secs() as i64), e.duration().subsec_nanos()),
    }
}

/// Protocol time → the `SystemTime` fuser turns back into the same (seconds, nanoseconds).
fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::new(t.secs.unsigned_abs(), t.nanos)
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(to_timestamp(t)),
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::CharDevice => FileType::CharDevice,
    }
}

/// The kernel's view of an inode: the session root appears as inode 1.
pub fn to_fuse(attr: &Attr, root: Ino) -> FileAttr {
    FileAttr {
        ino: if attr.ino == root { FUSE_ROOT_ID } else { attr.ino },
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: to_system_time(attr.atime),
        mtime: to_system_time(attr.mtime),
        ctime: to_system_time(attr.ctime),
        crtime: to_system_time(attr.ctime),
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn lock_kind(typ: i32) -> Option<LockKind> {
    match typ {
        libc::F_RDLCK => Some(LockKind::Shared),
        libc::F_WRLCK => Some(LockKind::Exclusive),
        libc::F_UNLCK => Some(LockKind::Unlock),
        _ => None,
    }
}

fn lock_type(kind: LockKind) -> i32 {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    }
}

/// True if thread `tid` has a signal pending that it does not block, or is gone. fuser does
/// not pass FUSE_INTERRUPT on, so a blocked lock request looks for itself: the kernel keeps
/// the thread waiting for our answer even after SIGKILL.
fn signalled(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else { return true };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") != 0
}

/// ACLs are not stored: the kernel checks mode bits only (`default_permissions`).
fn is_acl(name: &str) -> bool {
    name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

/// Answers an xattr read: the size when asked for it, ERANGE when the buffer is too small.
fn xattr_reply(reply: ReplyXattr, size: u32, data: Vec<u8>) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(libc::ERANGE);
    } else {
        reply.data(&data);
    }
}

impl Filesystem for MfsFuse {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), i32> {
        use fuser::consts::*;
        if let Err(nearest) = config.set_max_write(MAX_IO_REQUEST) {
            tracing::warn!(nearest, "kernel refused 1 MiB writes; using its limit");
            config.set_max_write(nearest).map_err(|_| libc::EINVAL)?;
        }
        if let Err(nearest) = config.set_max_readahead(MAX_IO_REQUEST) {
            config.set_max_readahead(nearest).map_err(|_| libc::EINVAL)?;
        }
        // POSIX_LOCKS and FLOCK_LOCKS send fcntl locks and flock here (to the master) instead
        // of keeping them in this host's kernel, so they hold across mounts.
        for cap in [
            FUSE_DO_READDIRPLUS,
            FUSE_READDIRPLUS_AUTO,
            FUSE_PARALLEL_DIROPS,
            FUSE_CACHE_SYMLINKS,
            FUSE_POSIX_LOCKS,
            FUSE_FLOCK_LOCKS,
        ] {
            if config.add_capabilities(cap).is_err() {
                tracing::debug!(cap, "kernel lacks an optional FUSE capability");
            }
        }
        if config.set_time_granularity(Duration::from_nanos(1)).is_err() {
            tracing::debug!("kernel keeps its default time granularity");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let client = self.client.clone();
        if let Err(e) = self.rt.block_on(client.flush_all()) {
            tracing::error!(error = %e, "buffered writes could not be stored at unmount");
        }
    }

    fn lookup(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        self.spawn(reply, async move { c.lookup(who, parent, &name).await }, self.entry_reply());
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let (c, ino) = (self.client.clone(), self.ino(ino));
        self.spawn(reply, async move { c.getattr(ino).await }, self.attr_reply());
    }

    fn setattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        // The kernel names the file for ftruncate(2) and for what it changes on a write.
        let work = async move {
            match fh {
                Some(_) => c.setattr_by_handle(who, ino, set).await,
                None => c.setattr(who, ino, set).await,
            }
        };
        self.spawn(reply, work, self.attr_reply());
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let (c, ino) = (self.client.clone(), self.ino(ino));
        self.spawn(reply, async move { c.readlink(ino).await }, |r, t| r.data(t.as_bytes()));
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(kind) = FileKind::from_mode(mode) else { return reply.error(libc::EINVAL) };
        let node = NewNode { kind, mode: mode & 0o7777, umask, rdev };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        self.spawn(
            reply,
            async move { c.mknod(who, parent, &name, node).await },
            self.entry_reply(),
        );
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        let work = async move { c.mkdir(who, parent, &name, mode & 0o7777, umask).await };
        self.spawn(reply, work, self.entry_reply());
    }

    fn unlink(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        self.spawn(reply, async move { c.unlink(who, parent, &name).await }, |r, ()| r.ok());
    }

    fn rmdir(&mut self, req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        self.spawn(reply, async move { c.rmdir(who, parent, &name).await }, |r, ()| r.ok());
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (name_of(link_name), name_of(target.as_os_str())) {
            (Ok(n), Ok(t)) => (n, t),
            _ => return reply.error(libc::EINVAL),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        let work = async move { c.symlink(who, parent, &name, &target).await };
        self.spawn(reply, work, self.entry_reply());
    }

    fn rename(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(libc::EINVAL),
        };
        let (c, who) = (self.client.clone(), caller(req));
        let (parent, newparent) = (self.ino(parent), self.ino(newparent));
        let work = async move { c.rename(who, parent, &name, newparent, &newname, flags).await };
        self.spawn(reply, work, |r, ()| r.ok());
    }

    fn link(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = match name_of(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who) = (self.client.clone(), caller(req));
        let (ino, newparent) = (self.ino(ino), self.ino(newparent));
        let work = async move { c.link(who, ino, newparent, &newname).await };
        self.spawn(reply, work, self.entry_reply());
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        // No FOPEN_KEEP_CACHE: the kernel drops cached pages at open (close-to-open).
        self.spawn(reply, async move { c.open(who, ino, flags).await }, |r, (fh, _)| {
            r.opened(fh, 0)
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Ok(offset) = u64::try_from(offset) else { return reply.error(libc::EINVAL) };
        let c = self.client.clone();
        self.spawn(reply, async move { c.read(fh, offset, size).await }, |r, data| r.data(&data));
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let Ok(offset) = u64::try_from(offset) else { return reply.error(libc::EINVAL) };
        let (c, data) = (self.client.clone(), data.to_vec());
        self.spawn(reply, async move { c.write(fh, offset, &data).await }, |r, n| r.written(n));
    }

    /// Every close(): stores buffered writes, then drops the POSIX locks of the closing
    /// process (`lock_owner`) on this file, as a close does on a local filesystem.
    fn flush(&mut self, _req: &Request<'_>, ino: u64, fh: u64, lock_owner: u64, reply: ReplyEmpty) {
        let (c, ino) = (self.client.clone(), self.ino(ino));
        let work = async move {
            let flushed = c.flush(fh).await;
            c.release_locks(ino, lock_owner).await?;
            flushed
        };
        self.spawn(reply, work, |r, ()| r.ok());
    }

    /// Last close of an open file; `lock_owner` is set when it was flock'd (the flock goes).
    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let (c, ino) = (self.client.clone(), self.ino(ino));
        let work = async move {
            let released = c.release(fh).await;
            if let Some(owner) = lock_owner {
                c.release_locks(ino, owner).await?;
            }
            released
        };
        self.spawn(reply, work, |r, ()| r.ok());
    }

    fn getlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let Some(kind) = lock_kind(typ) else { return reply.error(libc::EINVAL) };
        let lock = FileLock { owner: lock_owner, kind, start, end, pid };
        let (c, ino) = (self.client.clone(), self.ino(ino));
        self.spawn(reply, async move { c.getlk(ino, lock).await }, move |r, found| match found {
            Some(l) => r.locked(l.start, l.end, lock_type(l.kind), l.pid),
            None => r.locked(start, end, libc::F_UNLCK, 0),
        });
    }

    /// fcntl F_SETLK/F_SETLKW and flock (the kernel sends flock as a whole-file lock owned
    /// by the open file). A blocking request polls the master and ends with EINTR when the
    /// waiting thread gets a signal.
    fn setlk(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(kind) = lock_kind(typ) else { return reply.error(libc::EINVAL) };
        let lock = FileLock { owner: lock_owner, kind, start, end, pid };
        let (c, waiter, fuse_ino) = (self.client.clone(), req.pid(), ino);
        let ino = self.ino(ino);
        let notifier = (kind != LockKind::Unlock).then(|| self.notifier.clone());
        // A new holder must not read pages the kernel cached before another mount wrote.
        let taken = move |r: ReplyEmpty| {
            if let Some(n) = notifier.as_ref().and_then(|n| n.get()) {
                if let Err(e) = n.inval_inode(fuse_ino, 0, 0) {
                    // ENOENT: the kernel has no cached inode, so nothing to drop.
                    tracing::debug!(ino, error = %e, "could not drop cached pages after a lock");
                }
            }
            r.ok()
        };
        if !sleep {
            return self
                .spawn(reply, async move { c.setlk(ino, lock).await }, move |r, ()| taken(r));
        }
        let work = async move { c.setlkw(ino, lock, || signalled(waiter)).await };
        self.spawn(reply, work, move |r, waited| match waited {
            LockWait::Taken => taken(r),
            LockWait::Interrupted => r.error(libc::EINTR),
        });
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let c = self.client.clone();
        self.spawn(reply, async move { c.fsync(fh).await }, |r, ()| r.ok());
    }

    fn opendir(&mut self, req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let fh = self.next_dir;
        self.next_dir += 1;
        self.dirs.lock().insert(fh, None);
        if self.checks == PermissionChecks::Kernel {
            return reply.opened(fh, 0);
        }
        // Without default_permissions nobody has checked read permission yet.
        const R_OK: u32 = 4;
        let (c, who, ino, dirs) =
            (self.client.clone(), caller(req), self.ino(ino), self.dirs.clone());
        let work = async move {
            let allowed = c.access(who, ino, R_OK).await;
            if allowed.is_err() {
                dirs.lock().remove(&fh);
            }
            allowed
        };
        self.spawn(reply, work, move |r, ()| r.opened(fh, 0));
    }

    fn readdir(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectory,
    ) {
        let (c, dirs, ino, root) =
            (self.client.clone(), self.dirs.clone(), self.ino(ino), self.root);
        let who = caller(req);
        let work = async move { listing(&c, who, &dirs, ino, fh, offset).await };
        self.spawn(reply, work, move |mut r, entries| {
            for (i, e) in entries.iter().enumerate().skip(offset.max(0) as usize) {
                let fuse_ino = if e.attr.ino == root { FUSE_ROOT_ID } else { e.attr.ino };
                if r.add(fuse_ino, i as i64 + 1, file_type(e.attr.kind), &e.name) {
                    break;
                }
            }
            r.ok()
        });
    }

    fn readdirplus(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        reply: ReplyDirectoryPlus,
    ) {
        let (c, dirs, ino, root) =
            (self.client.clone(), self.dirs.clone(), self.ino(ino), self.root);
        let (times, who) = (self.times, caller(req));
        let work = async move { listing(&c, who, &dirs, ino, fh, offset).await };
        self.spawn(reply, work, move |mut r, entries| {
            for (i, e) in entries.iter().enumerate().skip(offset.max(0) as usize) {
                let attr = to_fuse(&e.attr, root);
                if r.add(attr.ino, i as i64 + 1, &e.name, &times.entry_for(&e.attr), &attr, 0) {
                    break;
                }
            }
            r.ok()
        });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().remove(&fh);
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every metadata change is durable on the masters before it is acknowledged.
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let c = self.client.clone();
        self.spawn(reply, async move { c.statfs().await }, |r, s| {
            let bsize = u64::from(BLOCK_SIZE);
            let files = u64::from(u32::MAX).max(s.inodes);
            r.statfs(
                s.total_bytes / bsize,
                s.avail_bytes / bsize,
                s.avail_bytes / bsize,
                files,
                files - s.inodes,
                BLOCK_SIZE,
                NAME_MAX as u32,
                BLOCK_SIZE,
            )
        });
    }

    fn setxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if is_acl(&name) {
            return reply.error(libc::EOPNOTSUPP);
        }
        let (c, who, ino, value) =
            (self.client.clone(), caller(req), self.ino(ino), value.to_vec());
        let work = async move { c.setxattr(who, ino, &name, &value, flags as u32).await };
        self.spawn(reply, work, |r, ()| r.ok());
    }

    fn getxattr(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if is_acl(&name) {
            return reply.error(libc::ENODATA);
        }
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        self.spawn(reply, async move { c.getxattr(who, ino, &name).await }, move |r, v| {
            xattr_reply(r, size, v)
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let (c, ino) = (self.client.clone(), self.ino(ino));
        self.spawn(reply, async move { c.listxattr(ino).await }, move |r, names| {
            let mut data = Vec::new();
            for n in names {
                data.extend_from_slice(n.as_bytes());
                data.push(0);
            }
            xattr_reply(r, size, data)
        });
    }

    fn removexattr(&mut self, req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if is_acl(&name) {
            return reply.error(libc::ENODATA);
        }
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        self.spawn(reply, async move { c.removexattr(who, ino, &name).await }, |r, ()| r.ok());
    }

    fn fallocate(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Only plain preallocation (mode 0): chunks are allocated on write anyway, so it
        // amounts to growing the file; punching holes and the like are not supported.
        let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
            return reply.error(libc::EINVAL);
        };
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        let work = async move {
            let end = offset.checked_add(length).ok_or(Status::TooBig)?;
            let size = c.getattr(ino).await?.size.max(end);
            c.setattr_by_handle(who, ino, SetAttr { size: Some(size), ..Default::default() }).await
        };
        self.spawn(reply, work, |r, _| r.ok());
    }

    fn access(&mut self, req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        if self.checks == PermissionChecks::Kernel {
            // With default_permissions the kernel checks access itself and does not ask.
            return reply.ok();
        }
        let (c, who, ino) = (self.client.clone(), caller(req), self.ino(ino));
        let mask = (mask & 0o7) as u32;
        self.spawn(reply, async move { c.access(who, ino, mask).await }, |r, ()| r.ok());
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32, // for a new file the kernel applies O_APPEND and O_TRUNC itself
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (c, who, parent) = (self.client.clone(), caller(req), self.ino(parent));
        // One master request creates the file and holds it open for this session.
        let work = async move { c.create(who, parent, &name, mode & 0o7777, umask).await };
        let (times, root) = (self.times, self.root);
        self.spawn(reply, work, move |r, (fh, attr)| {
            r.created(&times.entry_for(&attr), &to_fuse(&attr, root), 0, fh, 0)
        });
    }
}

/// The open directory's listing with "." and ".." first, read from the master when the
/// program starts (or restarts) at offset 0.
async fn listing(
    client: &Client,
    who: Caller,
    dirs: &Mutex<HashMap<u64, Option<Listing>>>,
    ino: Ino,
    fh: u64,
    offset: i64,
) -> Reply<Listing> {
    if offset != 0 {
        if let Some(Some(listing)) = dirs.lock().get(&fh) {
            return Ok(listing.clone());
        }
    }
    let dir = client.getattr(ino).await?;
    let mut entries = vec![
        DirEntry { name: ".".into(), attr: dir.clone() },
        DirEntry { name: "..".into(), attr: dir },
    ];
    entries.extend(client.readdir_all(who, ino).await?);
    let listing = Arc::new(entries);
    if let Some(slot) = dirs.lock().get_mut(&fh) {
        *slot = Some(listing.clone());
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_survive_the_round_trip_through_fuser_conventions() {
        for t in [
            Timestamp::new(0, 0),
            Timestamp::new(1_700_000_000, 123),
            Timestamp::new(-2, 500_000_000),
            Timestamp::new(1 << 33, 999_999_999),
        ] {
            assert_eq!(to_timestamp(to_system_time(t)), t);
        }
    }

    #[test]
    fn root_is_shown_as_inode_one() {
        let attr = Attr {
            ino: 57,
            kind: FileKind::Directory,
            mode: 0o40755,
            uid: 1,
            gid: 2,
            size: 1000,
            nlink: 3,
            rdev: 0,
            atime: Timestamp::new(5, 6),
            mtime: Timestamp::new(7, 8),
            ctime: Timestamp::new(9, 10),
            goal: 2,
            trash_seconds: 0,
        };
        let f = to_fuse(&attr, 57);
        assert_eq!(
            (f.ino, f.perm, f.blocks, f.kind),
            (FUSE_ROOT_ID, 0o755, 2, FileType::Directory)
        );
        assert_eq!(to_fuse(&attr, 1).ino, 57);
    }
}
