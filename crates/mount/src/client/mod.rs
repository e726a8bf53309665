//! The mfsha client library: everything a mount, a tool or a benchmark needs to use the
//! filesystem, with no FUSE in it (so it runs and is tested without /dev/fuse).
//!
//! * [`master`]: the session with the master, surviving reconnects, exactly-once mutations.
//! * [`data`]: chunkserver connections, reads with fall-back to another copy, chain writes.
//! * [`io`](Client::open): open files, write-back buffering, read-ahead.
//! * [`paths`](Client::resolve): whole-path helpers for tests and tools.
//! * [`locks`](Client::setlk): POSIX and flock locks held by the master, coherent across mounts.
//!
//! Every operation returns `Result<_, Status>`; `Status::errno` gives the POSIX error.

mod caps;
pub mod data;
pub mod extents;
mod fresh;
mod io;
mod locks;
pub mod master;
mod paths;

pub use locks::LockWait;
pub use master::{ConnectError, MasterConfig};

use data::DataPool;
use io::{FileState, Handle};
use master::MasterLink;
use mfsha_proto::client::MAX_GROUPS;
use mfsha_proto::client::{
    CheckFileCounts, ChunkCopies, ClientOp, ClientReply, ClusterStatus, DirStats,
};
use mfsha_proto::types::*;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Who asks: the uid and gid the kernel reported for the calling process, and its
/// supplementary groups. The master uses them as the owner of new files and checks
/// permissions with them (the kernel has checked already: `default_permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Groups,
}

impl Caller {
    pub const ROOT: Caller = Caller { uid: 0, gid: 0, groups: Groups::NONE };
}

/// Up to [`MAX_GROUPS`] supplementary groups, kept inline so that a [`Caller`] stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    len: usize,
    ids: [u32; MAX_GROUPS],
}

impl Groups {
    pub const NONE: Groups = Groups { len: 0, ids: [0; MAX_GROUPS] };

    /// The first [`MAX_GROUPS`] of `ids`.
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Groups {
        let mut groups = Groups::NONE;
        for id in ids.into_iter().take(MAX_GROUPS) {
            groups.ids[groups.len] = id;
            groups.len += 1;
        }
        groups
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }
}

/// What `mknod` creates: kind, permission bits, the caller's umask, device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewNode {
    pub kind: FileKind,
    pub mode: u32,
    pub umask: u32,
    pub rdev: u32,
}

impl NewNode {
    /// A regular file with permission bits `mode`.
    pub fn file(mode: u32) -> Self {
        NewNode { kind: FileKind::File, mode, umask: 0, rdev: 0 }
    }
}

/// Client settings: the master session plus caching and buffering.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub master: MasterConfig,
    /// A file's buffered writes are sent in the background once this many bytes wait.
    pub flush_bytes: usize,
    /// A writer waits for its file's flush once this many bytes wait (bounds memory).
    pub max_dirty_bytes: usize,
    /// Buffered writes older than this are sent even if few.
    pub max_dirty_age: Duration,
    /// Largest read-ahead window for sequential readers.
    pub read_ahead_bytes: u32,
    /// Bound on one request to a chunkserver (a chain write covers the whole chain).
    pub data_timeout: Duration,
    /// How long "no `security.capability`" is remembered (see `caps.rs`); the mount sets it
    /// to its attribute cache time.
    pub no_capability_ttl: Duration,
}

impl ClientConfig {
    /// Defaults: flush at 16 MiB, writers wait at 64 MiB, 2 s dirty age, 8 MiB read-ahead.
    pub fn new(master: MasterConfig) -> Self {
        ClientConfig {
            master,
            flush_bytes: 16 << 20,
            max_dirty_bytes: 64 << 20,
            max_dirty_age: Duration::from_secs(2),
            read_ahead_bytes: 8 << 20,
            data_timeout: Duration::from_secs(30),
            no_capability_ttl: Duration::from_secs(1),
        }
    }
}

/// A client of one mfsha filesystem. Cheap to share (`Arc`); every method takes `&self`.
pub struct Client {
    cfg: ClientConfig,
    link: Arc<MasterLink>,
    data: Arc<DataPool>,
    /// Per-inode state of files open (or with unflushed writes) in this client.
    files: Mutex<HashMap<Ino, Arc<FileState>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    no_caps: caps::NoCapabilities,
    /// This client, for background tasks it starts.
    this: Weak<Client>,
}

impl Client {
    /// What the link to the master records, for `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::LinkMetrics {
        self.link.metrics()
    }

    /// Opens a session with the master (waiting up to the I/O timeout for one to answer).
    pub async fn connect(cfg: ClientConfig) -> Result<Arc<Client>, ConnectError> {
        let link = MasterLink::connect(cfg.master.clone()).await?;
        let data = Arc::new(DataPool::new(cfg.data_timeout));
        let no_caps = caps::NoCapabilities::new(cfg.no_capability_ttl);
        let client = Arc::new_cyclic(|this| Client {
            cfg,
            link,
            data,
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            no_caps,
            this: this.clone(),
        });
        tokio::spawn(io::flusher(Arc::downgrade(&client)));
        Ok(client)
    }

    /// Inode of this session's root directory (the mounted subfolder).
    pub fn root(&self) -> Ino {
        self.link.root()
    }

    pub fn session(&self) -> SessionId {
        self.link.session()
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    async fn call(&self, who: Caller, op: ClientOp) -> Reply<ClientReply> {
        self.link.call(who, op).await
    }

    /// A call whose answer is an inode's attributes (adjusted for writes still buffered here).
    async fn call_attr(&self, who: Caller, op: ClientOp) -> Reply<Attr> {
        match self.call(who, op).await? {
            ClientReply::Attr(attr) => Ok(self.adjust(attr)),
            other => Err(unexpected("attributes", &other)),
        }
    }

    async fn call_unit(&self, who: Caller, op: ClientOp) -> Reply<()> {
        match self.call(who, op).await? {
            ClientReply::Unit => Ok(()),
            other => Err(unexpected("nothing", &other)),
        }
    }

    /// The size a reader of this client must see: the master's, or further if writes past
    /// it are still buffered here.
    fn adjust(&self, mut attr: Attr) -> Attr {
        if attr.kind == FileKind::File {
            if let Some(file) = self.files.lock().get(&attr.ino) {
                attr.size = attr.size.max(file.pending_end());
            }
        }
        attr
    }

    pub async fn lookup(&self, who: Caller, parent: Ino, name: &str) -> Reply<Attr> {
        self.call_attr(who, ClientOp::Lookup { parent, name: name.to_string() }).await
    }

    pub async fn getattr(&self, ino: Ino) -> Reply<Attr> {
        // Right after a change in a directory, the master sent its attributes (`fresh.rs`).
        if let Some(attr) = self.link.fresh_dir(ino) {
            return Ok(attr);
        }
        self.call_attr(Caller::ROOT, ClientOp::GetAttr { ino }).await
    }

    /// Changes attributes. This client's buffered writes to the file are sent first, so they
    /// land before the change and not after it: before a truncation (which would otherwise be
    /// undone), and before a time change (storing a write sets mtime, which would otherwise
    /// overwrite the `utimens` of `cp -a`/`touch -d` that came after the write).
    /// A change by path (chmod, chown, truncate, utimes).
    pub async fn setattr(&self, who: Caller, ino: Ino, set: SetAttr) -> Reply<Attr> {
        self.change_attr(who, ino, set, false).await
    }

    /// A change through an open file (ftruncate, fallocate, futimens).
    pub async fn setattr_by_handle(&self, who: Caller, ino: Ino, set: SetAttr) -> Reply<Attr> {
        self.change_attr(who, ino, set, true).await
    }

    async fn change_attr(
        &self,
        who: Caller,
        ino: Ino,
        set: SetAttr,
        by_handle: bool,
    ) -> Reply<Attr> {
        let file = self.files.lock().get(&ino).cloned();
        if let Some(file) = &file {
            if set.size.is_some() || file.has_unsent() {
                self.flush_file(file).await?;
            }
            if let Some(size) = set.size {
                file.truncated(size);
            }
        }
        let attr = self.call_attr(who, ClientOp::SetAttr { ino, set, by_handle }).await;
        if let Some(file) = &file {
            file.changed();
        }
        attr
    }

    /// Creates a regular file, FIFO, socket or device node.
    pub async fn mknod(&self, who: Caller, parent: Ino, name: &str, node: NewNode) -> Reply<Attr> {
        let NewNode { kind, mode, umask, rdev } = node;
        let op = ClientOp::Mknod { parent, name: name.to_string(), kind, mode, umask, rdev };
        self.call_attr(who, op).await
    }

    pub async fn mkdir(
        &self,
        who: Caller,
        parent: Ino,
        name: &str,
        mode: u32,
        umask: u32,
    ) -> Reply<Attr> {
        self.call_attr(who, ClientOp::Mkdir { parent, name: name.to_string(), mode, umask }).await
    }

    pub async fn symlink(&self, who: Caller, parent: Ino, name: &str, target: &str) -> Reply<Attr> {
        let op = ClientOp::Symlink { parent, name: name.to_string(), target: target.to_string() };
        self.call_attr(who, op).await
    }

    pub async fn readlink(&self, ino: Ino) -> Reply<String> {
        match self.call(Caller::ROOT, ClientOp::ReadLink { ino }).await? {
            ClientReply::Target(t) => Ok(t),
            other => Err(unexpected("a symlink target", &other)),
        }
    }

    pub async fn unlink(&self, who: Caller, parent: Ino, name: &str) -> Reply<()> {
        self.call_unit(who, ClientOp::Unlink { parent, name: name.to_string() }).await
    }

    pub async fn rmdir(&self, who: Caller, parent: Ino, name: &str) -> Reply<()> {
        self.call_unit(who, ClientOp::Rmdir { parent, name: name.to_string() }).await
    }

    /// `flags`: RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2.
    pub async fn rename(
        &self,
        who: Caller,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: u32,
    ) -> Reply<()> {
        let op = ClientOp::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            flags,
        };
        self.call_unit(who, op).await
    }

    pub async fn link(
        &self,
        who: Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &str,
    ) -> Reply<Attr> {
        self.call_attr(who, ClientOp::Link { ino, new_parent, new_name: new_name.to_string() })
            .await
    }

    /// One page of a directory: entries after the name `after` (from the start for `None`),
    /// and whether more follow.
    pub async fn readdir(
        &self,
        who: Caller,
        ino: Ino,
        after: Option<&str>,
        max: u32,
    ) -> Reply<(Vec<DirEntry>, bool)> {
        let op = ClientOp::ReadDir { ino, offset: 0, max, after: after.map(str::to_string) };
        match self.call(who, op).await? {
            ClientReply::Entries { mut entries, more } => {
                for e in &mut entries {
                    e.attr = self.adjust(e.attr.clone());
                }
                Ok((entries, more))
            }
            other => Err(unexpected("directory entries", &other)),
        }
    }

    /// access(2) as the master judges it, for a mount without `default_permissions` (with
    /// it the kernel checks and never asks).
    pub async fn access(&self, who: Caller, ino: Ino, mask: u32) -> Reply<()> {
        self.call_unit(who, ClientOp::Access { ino, mask }).await
    }

    /// Every entry of a directory ("." and ".." not included).
    pub async fn readdir_all(&self, who: Caller, ino: Ino) -> Reply<Vec<DirEntry>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|e: &DirEntry| e.name.as_str());
            let (page, more) = self.readdir(who, ino, after, 4096).await?;
            let got = page.len();
            all.extend(page);
            if !more || got == 0 {
                return Ok(all);
            }
        }
    }

    pub async fn statfs(&self) -> Reply<FsStat> {
        match self.call(Caller::ROOT, ClientOp::StatFs).await? {
            ClientReply::FsStat(s) => Ok(s),
            other => Err(unexpected("filesystem totals", &other)),
        }
    }

    pub async fn getxattr(&self, who: Caller, ino: Ino, name: &str) -> Reply<Vec<u8>> {
        let capability = name == caps::CAPABILITY;
        if capability && self.no_caps.known_absent(ino) {
            return Err(Status::NoAttr);
        }
        let ticket = self.no_caps.ticket();
        let op = ClientOp::GetXattr { ino, name: name.to_string() };
        match self.call(who, op).await {
            Ok(ClientReply::Xattr(v)) => Ok(v.into_vec()),
            Ok(other) => Err(unexpected("an attribute value", &other)),
            Err(Status::NoAttr) if capability => {
                self.no_caps.absent(ino, ticket);
                Err(Status::NoAttr)
            }
            Err(status) => Err(status),
        }
    }

    pub async fn listxattr(&self, ino: Ino) -> Reply<Vec<String>> {
        match self.call(Caller::ROOT, ClientOp::ListXattr { ino }).await? {
            ClientReply::Names(n) => Ok(n),
            other => Err(unexpected("attribute names", &other)),
        }
    }

    /// `flags`: XATTR_CREATE = 1, XATTR_REPLACE = 2.
    pub async fn setxattr(
        &self,
        who: Caller,
        ino: Ino,
        name: &str,
        value: &[u8],
        flags: u32,
    ) -> Reply<()> {
        let value = serde_bytes::ByteBuf::from(value.to_vec());
        let op = ClientOp::SetXattr { ino, name: name.to_string(), value, flags };
        self.changing_xattr(ino, name, self.call_unit(who, op)).await
    }

    pub async fn removexattr(&self, who: Caller, ino: Ino, name: &str) -> Reply<()> {
        let op = ClientOp::RemoveXattr { ino, name: name.to_string() };
        self.changing_xattr(ino, name, self.call_unit(who, op)).await
    }

    /// Runs a set or removal of `name` on `ino`, forgetting a remembered absence of
    /// capabilities before and after it.
    async fn changing_xattr(
        &self,
        ino: Ino,
        name: &str,
        change: impl std::future::Future<Output = Reply<()>>,
    ) -> Reply<()> {
        let capability = name == caps::CAPABILITY;
        if capability {
            self.no_caps.changed(ino);
        }
        let result = change.await;
        if capability {
            self.no_caps.changed(ino);
        }
        result
    }

    pub async fn get_goal(&self, ino: Ino) -> Reply<u8> {
        match self.call(Caller::ROOT, ClientOp::GetGoal { ino }).await? {
            ClientReply::Goal(g) => Ok(g),
            other => Err(unexpected("a goal", &other)),
        }
    }

    /// Sets the goal; returns (inodes changed, not changed, not permitted).
    pub async fn set_goal(
        &self,
        who: Caller,
        ino: Ino,
        goal: u8,
        recursive: bool,
    ) -> Reply<(u64, u64, u64)> {
        changed(self.call(who, ClientOp::SetGoal { ino, goal, recursive }).await?)
    }

    pub async fn get_trash_time(&self, ino: Ino) -> Reply<u32> {
        match self.call(Caller::ROOT, ClientOp::GetTrashTime { ino }).await? {
            ClientReply::TrashTime(t) => Ok(t),
            other => Err(unexpected("a trash time", &other)),
        }
    }

    pub async fn set_trash_time(
        &self,
        who: Caller,
        ino: Ino,
        seconds: u32,
        recursive: bool,
    ) -> Reply<(u64, u64, u64)> {
        changed(self.call(who, ClientOp::SetTrashTime { ino, seconds, recursive }).await?)
    }

    pub async fn file_info(&self, ino: Ino) -> Reply<Vec<ChunkCopies>> {
        match self.call(Caller::ROOT, ClientOp::FileInfo { ino }).await? {
            ClientReply::FileInfo(f) => Ok(f),
            other => Err(unexpected("chunk copies", &other)),
        }
    }

    pub async fn check_file(&self, ino: Ino) -> Reply<CheckFileCounts> {
        match self.call(Caller::ROOT, ClientOp::CheckFile { ino }).await? {
            ClientReply::CheckFile(c) => Ok(c),
            other => Err(unexpected("copy counts", &other)),
        }
    }

    pub async fn dir_info(&self, ino: Ino) -> Reply<DirStats> {
        match self.call(Caller::ROOT, ClientOp::DirInfo { ino }).await? {
            ClientReply::DirInfo(d) => Ok(d),
            other => Err(unexpected("directory totals", &other)),
        }
    }

    pub async fn cluster_status(&self) -> Reply<ClusterStatus> {
        match self.call(Caller::ROOT, ClientOp::Status).await? {
            ClientReply::Status(s) => Ok(*s),
            other => Err(unexpected("cluster status", &other)),
        }
    }

    /// Sends every buffered write, then ends the session with the master. Call once, when
    /// the client is no longer used (unmount, end of a tool).
    pub async fn close(&self) -> Reply<()> {
        let flushed = self.flush_all().await;
        let goodbye = self.link.goodbye().await;
        if let Err(e) = &goodbye {
            tracing::warn!(error = %e, "could not end the session cleanly; the master expires it later");
        }
        flushed
    }
}

fn changed(reply: ClientReply) -> Reply<(u64, u64, u64)> {
    match reply {
        ClientReply::Changed { inodes, not_changed, not_permitted } => {
            Ok((inodes, not_changed, not_permitted))
        }
        other => Err(unexpected("a change count", &other)),
    }
}

/// A reply of the wrong kind: a protocol bug on one side; logged loudly, EIO to the caller.
fn unexpected(wanted: &str, got: &ClientReply) -> Status {
    let got = format!("{got:?}");
    let got: String = got.chars().take(200).collect();
    tracing::error!(wanted, got = %got, "the master answered with the wrong kind of reply");
    Status::Io
}
