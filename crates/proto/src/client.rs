//! Client (mount, tools) ↔ master messages.
//!
//! A client sends [`Request`]s in frames and gets an [`Answer`] back in a frame with the same
//! request id. Many requests may be in flight on one connection. Every answer carries the
//! answering master's Raft term, so a client can refuse a deposed master (see [`Answer`]).
//!
//! Mutations carry the session id and a per-session sequence number (`seq`). The master keeps,
//! per session and in replicated state, the last sequence number applied and its reply, so a
//! client that reconnects (to the same or a new leader) and retries gets the original reply
//! instead of applying the mutation twice.

use crate::types::*;
use serde::{Deserialize, Serialize};

/// This build's version (major, minor, patch), which a client's `Hello` carries for the
/// exports' `minversion=`.
pub const VERSION: [u32; 3] = [
    parse_decimal(env!("CARGO_PKG_VERSION_MAJOR")),
    parse_decimal(env!("CARGO_PKG_VERSION_MINOR")),
    parse_decimal(env!("CARGO_PKG_VERSION_PATCH")),
];

const fn parse_decimal(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    let (mut value, mut at) = (0u32, 0);
    while at < bytes.len() {
        value = value * 10 + (bytes[at] - b'0') as u32;
        at += 1;
    }
    value
}

/// Most supplementary groups a request carries; a longer list is refused.
pub const MAX_GROUPS: usize = 64;

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The session opened with [`ClientOp::Hello`]; 0 before that.
    pub session: SessionId,
    /// Per-session sequence number of a mutation, starting at 1; 0 for reads.
    pub seq: u64,
    /// Caller's identity, as the kernel reported it.
    pub uid: u32,
    pub gid: u32,
    /// The caller's supplementary groups (at most [`MAX_GROUPS`]; a mount sends the first
    /// ones of a longer list): the master checks group permissions with them.
    pub groups: Vec<u32>,
    pub op: ClientOp,
}

impl Request {
    /// A request outside any session, as root with no groups: what tools and probes send
    /// (`Status`, `WhoLeads`, `Hello`, leadership and membership changes, reloads).
    pub fn anonymous(op: ClientOp) -> Request {
        Request { session: 0, seq: 0, uid: 0, gid: 0, groups: Vec::new(), op }
    }
}

/// What a client asks of the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientOp {
    /// Opens a new session (`session: None`) or resumes one after a reconnect.
    Hello {
        session: Option<SessionId>,
        /// Free text for the operator: host name, mount point.
        client_info: String,
        /// Subdirectory of the filesystem to use as this session's root ("/" for all).
        subdir: String,
        /// For an export with a password: HMAC-SHA-256 over the nonce of the `Challenge`
        /// answered last on this connection and this Hello's fields (see
        /// [`crate::auth::hello_proof`]); the password itself is never sent.
        proof: Option<[u8; 32]>,
        /// For a new session: a random number the client picks once per session it opens
        /// and sends again with every retry of that Hello. The master answers a retry whose
        /// first attempt committed (its reply was lost, e.g. the leader died) with the
        /// session that attempt opened, instead of opening a second one. 0: no such
        /// protection (one-shot tools). Ignored when resuming.
        token: u64,
        /// The client's version (see [`VERSION`]): an export's `minversion=` refuses older
        /// clients.
        version: [u32; 3],
    },
    /// Asks for a nonce to prove the export's password with in the next `Hello` on this
    /// connection (see [`crate::auth`]). Answered by any master.
    Challenge {
        /// The directory the `Hello` will ask for (the export it falls under says whether its
        /// key is the password or the password's MD5).
        subdir: String,
    },
    Lookup {
        parent: Ino,
        name: String,
    },
    GetAttr {
        ino: Ino,
    },
    SetAttr {
        ino: Ino,
        set: SetAttr,
        /// Made through a file this session holds open (ftruncate(2), fallocate(2)): the
        /// master lets the session truncate a file it opened for writing, whatever its mode
        /// says now. False for a change by path (truncate(2)), judged by the mode alone.
        by_handle: bool,
    },
    /// Creates a regular file, FIFO, socket or device node.
    Mknod {
        parent: Ino,
        name: String,
        kind: FileKind,
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    Mkdir {
        parent: Ino,
        name: String,
        mode: u32,
        umask: u32,
    },
    Symlink {
        parent: Ino,
        name: String,
        target: String,
    },
    ReadLink {
        ino: Ino,
    },
    Unlink {
        parent: Ino,
        name: String,
    },
    Rmdir {
        parent: Ino,
        name: String,
    },
    /// `flags` are Linux `renameat2` flags (RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2).
    Rename {
        parent: Ino,
        name: String,
        new_parent: Ino,
        new_name: String,
        flags: u32,
    },
    Link {
        ino: Ino,
        new_parent: Ino,
        new_name: String,
    },
    /// At most `max` entries ("." and ".." are not included), in name order: those after
    /// the name `after` when given (a page costs O(log n) at any depth of a big directory,
    /// and entries added or removed meanwhile do not shift it), else from position `offset`.
    ReadDir {
        ino: Ino,
        offset: u64,
        max: u32,
        after: Option<String>,
    },
    /// Registers an open file with this session (keeps unlinked-but-open files readable).
    Open {
        ino: Ino,
        flags: i32,
    },
    Release {
        ino: Ino,
    },
    /// After a session was resumed (or opened anew) on a master: the files this client holds
    /// open, with how many opens each, replacing whatever that master had for the session.
    /// Open files are the leader's memory, so a new leader learns them this way; until every
    /// session has re-registered, it frees no unlinked file. Answers `Unit`.
    Reopen {
        files: Vec<(Ino, u32)>,
    },
    /// Where to read chunk number `index` of a file. A hole has `chunk_id` 0.
    ReadChunk {
        ino: Ino,
        index: u32,
    },
    /// Prepares chunk `index` for writing: creates it or bumps its version, returns the chain.
    WriteChunk {
        ino: Ino,
        index: u32,
    },
    /// Reports a finished chunk write and the file's new length (if it grew).
    WriteChunkEnd {
        ino: Ino,
        index: u32,
        chunk_id: ChunkId,
        file_size: u64,
        ok: bool,
    },
    StatFs,
    GetXattr {
        ino: Ino,
        name: String,
    },
    ListXattr {
        ino: Ino,
    },
    /// `flags`: XATTR_CREATE = 1, XATTR_REPLACE = 2.
    SetXattr {
        ino: Ino,
        name: String,
        value: serde_bytes::ByteBuf,
        flags: u32,
    },
    RemoveXattr {
        ino: Ino,
        name: String,
    },
    GetGoal {
        ino: Ino,
    },
    SetGoal {
        ino: Ino,
        goal: u8,
        recursive: bool,
    },
    GetTrashTime {
        ino: Ino,
    },
    SetTrashTime {
        ino: Ino,
        seconds: u32,
        recursive: bool,
    },
    /// Every chunk of a file with all known copies (`mfsfileinfo`).
    FileInfo {
        ino: Ino,
    },
    /// Chunks of a file counted by number of valid copies (`mfscheckfile`).
    CheckFile {
        ino: Ino,
    },
    /// Recursive totals of a directory (`mfsdirinfo`).
    DirInfo {
        ino: Ino,
    },
    /// Resolves a path relative to the session root (used by the tools).
    ResolvePath {
        path: String,
    },
    /// Cluster status for `mfsha status`.
    Status,
    /// Ends the session cleanly (releases its open files and its locks).
    Goodbye,
    /// Files in the trash with inode numbers above `after`, in inode order, at most `max`
    /// (the master caps it at a page that fits a frame). Root only.
    TrashList {
        after: Ino,
        max: u32,
    },
    /// Puts a trashed file back under its original name (in the root if its directory is
    /// gone); answers its attributes. Root only.
    Undelete {
        ino: Ino,
    },
    /// Frees a trashed file now instead of when its trash time passes. Root only.
    Purge {
        ino: Ino,
    },
    /// Creates a regular file and opens it for this session in one step (FUSE `create`):
    /// `Mknod` plus `Open` for the price of one commit. Answers the new file's attributes.
    Create {
        parent: Ino,
        name: String,
        mode: u32,
        umask: u32,
    },
    /// F_GETLK: the first lock of another owner that conflicts with `lock` (whose kind is
    /// `Shared` or `Exclusive`); answers `ClientReply::Lock`, `None` when nothing conflicts.
    GetLock {
        ino: Ino,
        lock: FileLock,
    },
    /// F_SETLK (and flock): takes, changes or (`LockKind::Unlock`) releases a byte range for
    /// this session's `lock.owner`. Never waits: a conflict answers `Status::WouldBlock`, and
    /// the client polls for F_SETLKW. Idempotent, so a retry after a reconnect is harmless.
    /// `reclaim` re-takes a lock the client held before the master changed; reclaims are
    /// served during the new leader's grace period, which other requests wait out.
    SetLock {
        ino: Ino,
        lock: FileLock,
        reclaim: bool,
    },
    /// Releases every lock `owner` of this session holds on `ino` (POSIX: any close by the
    /// owning process; flock: release of the open file).
    ReleaseLocks {
        ino: Ino,
        owner: u64,
    },
    /// Who leads the master group: answered by any master, leader or follower, without a
    /// session, with `ClientReply::Leader`.
    WhoLeads,
    /// Asks the leader to hand leadership to member `to` (`mfsha member transfer-leader`).
    /// Root only, no session needed; answers `Unit` once the transfer has started, not when it
    /// is done (the caller watches the members' status). `Invalid` when `to` is no master of
    /// the group (the witness never stays leader).
    TransferLeader {
        to: u64,
    },
    /// Changes the master group by one member (`mfsha member add|remove`). Root only, no
    /// session needed; answered by the leader once the change is applied there. `Busy` while
    /// the previous change is still being applied; `Invalid` for a change that would leave
    /// exactly two voters or remove the leader itself (transfer leadership first); `Exists` /
    /// `NotFound` for adding a member twice or removing one that is not there.
    ChangeMember {
        change: MemberChangeRequest,
    },
    /// Re-reads the exports file of the master asked (`mfsha exports reload`; each master
    /// reads its own, so the tool asks every one). Root only, and under exports only on a
    /// line with `admin`; answered by any master with `ExportsReloaded`.
    ReloadExports,
    /// access(2) for a mount without `default_permissions` (and its opendir): `Unit` if the
    /// caller may access `ino` as `mask` asks (`R_OK` 4, `W_OK` 2, `X_OK` 1; 0 asks only
    /// whether it exists), `Access` if not. The master judges it as any other request.
    Access {
        ino: Ino,
        mask: u32,
    },
}

/// One membership change, as `mfsha member add|remove` asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChangeRequest {
    /// Adds node `id` (or promotes a learner to voter), reached at `peer` by the others; the
    /// client, chunkserver and logger addresses go into the replicated address book (none for
    /// a witness).
    Add {
        id: u64,
        voter: bool,
        peer: String,
        client: Option<String>,
        chunkserver: Option<String>,
        logger: Option<String>,
    },
    /// Removes node `id`; it stops once it has applied its removal.
    Remove { id: u64 },
}

impl ClientOp {
    /// The directories this request changes when it succeeds (their entries, so their
    /// mtime, ctime and perhaps link count): the parent of what it creates, links or
    /// removes, both parents of a rename.
    pub fn changed_dirs(&self) -> Vec<Ino> {
        use ClientOp::*;
        match self {
            Mknod { parent, .. }
            | Mkdir { parent, .. }
            | Symlink { parent, .. }
            | Create { parent, .. }
            | Unlink { parent, .. }
            | Rmdir { parent, .. } => vec![*parent],
            Link { new_parent, .. } => vec![*new_parent],
            Rename { parent, new_parent, .. } if parent == new_parent => vec![*parent],
            Rename { parent, new_parent, .. } => vec![*parent, *new_parent],
            _ => Vec::new(),
        }
    }

    /// True for requests that carry a `(session, seq)` and are carried out once whatever the
    /// retries: those that change replicated state (answered again from the master's reply
    /// window on a retry; `Goodbye` is one, it closes the session through the log), and
    /// `Open` and `Release`, which the leader's open-file table counts once per seq. Lock
    /// requests and `Reopen` are not (idempotent, in leader memory).
    pub fn is_mutation(&self) -> bool {
        use ClientOp::*;
        match self {
            SetAttr { .. }
            | Mknod { .. }
            | Mkdir { .. }
            | Symlink { .. }
            | Unlink { .. }
            | Rmdir { .. }
            | Rename { .. }
            | Link { .. }
            | Open { .. }
            | Release { .. }
            | WriteChunk { .. }
            | WriteChunkEnd { .. }
            | SetXattr { .. }
            | RemoveXattr { .. }
            | SetGoal { .. }
            | SetTrashTime { .. }
            | Undelete { .. }
            | Purge { .. }
            | Create { .. }
            | Goodbye => true,
            Hello { .. }
            | Challenge { .. }
            | Lookup { .. }
            | GetAttr { .. }
            | ReadLink { .. }
            | ReadDir { .. }
            | ReadChunk { .. }
            | StatFs
            | GetXattr { .. }
            | ListXattr { .. }
            | GetGoal { .. }
            | GetTrashTime { .. }
            | FileInfo { .. }
            | CheckFile { .. }
            | DirInfo { .. }
            | ResolvePath { .. }
            | TrashList { .. }
            | Status
            | GetLock { .. }
            | SetLock { .. }
            | ReleaseLocks { .. }
            | Reopen { .. }
            | WhoLeads
            | TransferLeader { .. }
            | ChangeMember { .. }
            | ReloadExports
            | Access { .. } => false,
        }
    }
}

/// How many recent replies the master keeps per session for exactly-once retries. A client
/// may have at most this many mutations in flight: it sends `seq` only once every seq up to
/// `seq - REPLY_WINDOW` has been answered. Then a retry always finds its reply, and a seq
/// older than the window is refused rather than applied twice.
pub const REPLY_WINDOW: u64 = 64;

/// What the master answers. The variant matches the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientReply {
    Session {
        session: SessionId,
        root: Ino,
    },
    Attr(Attr),
    Entries {
        entries: Vec<DirEntry>,
        more: bool,
    },
    Target(String),
    Chunk(ChunkLocation),
    ChunkWrite(ChunkWrite),
    FsStat(FsStat),
    Xattr(serde_bytes::ByteBuf),
    Names(Vec<String>),
    Goal(u8),
    TrashTime(u32),
    /// How many inodes a recursive change touched.
    Changed {
        inodes: u64,
        not_changed: u64,
        not_permitted: u64,
    },
    FileInfo(Vec<ChunkCopies>),
    CheckFile(CheckFileCounts),
    DirInfo(DirStats),
    Status(Box<ClusterStatus>),
    Unit,
    /// A page of the trash (`TrashList`): `more` when entries above the last one remain.
    Trash {
        entries: Vec<TrashEntry>,
        more: bool,
    },
    /// Answer to `GetLock`: the conflicting lock, if any.
    Lock(Option<FileLock>),
    /// Answer to `WhoLeads`.
    Leader(LeaderHint),
    /// Answer to `Challenge`: the nonce, and whether the key is the password's MD5
    /// (`md5pass=` export) rather than the password.
    Challenge {
        nonce: [u8; crate::auth::NONCE_BYTES],
        md5: bool,
    },
    /// Answer to `ReloadExports`: the lines now in force (`None`: this master's config names
    /// no exports file), or why the file was refused (file:line:column; the exports read
    /// before stay in force).
    ExportsReloaded(Result<Option<u32>, String>),
}

/// What a master sends back for one [`Request`]: its current Raft term and the result.
///
/// Why a struct around every reply rather than a term in the frame header: the frame layout
/// stays the same for every protocol (chunkserver, logger and peer frames have no use for
/// it), the compiler makes every reply site state a term, and the one extra varint costs a
/// byte or two per reply. A client remembers the highest term it has seen and treats an
/// answer with a lower one as coming from a deposed master: it drops that connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub term: u64,
    pub reply: Reply<ClientReply>,
    /// The attributes of the directories a successful change altered ([`ClientOp::changed_dirs`]),
    /// read right after it applied. The kernel forgets a directory's attributes after every
    /// change in it and asks for them again before the next one (the permission check of
    /// `default_permissions`); the mount answers that from these instead of a round trip.
    pub dirs: Vec<Attr>,
}

impl Answer {
    /// An answer that carries no directory attributes.
    pub fn new(term: u64, reply: Reply<ClientReply>) -> Answer {
        Answer { term, reply, dirs: Vec::new() }
    }
}

/// The client side of a connection to a master's client port.
pub type MasterRpc = crate::rpc::RpcClient<Request, Answer>;

/// A connection to a master for callers that need no term check (one-shot tools, tests):
/// [`call`](Self::call) gives the reply without its term. Cheap to clone.
#[derive(Clone)]
pub struct MasterClient(pub MasterRpc);

impl MasterClient {
    pub async fn connect(addr: &str) -> Result<Self, crate::RpcError> {
        MasterRpc::connect(addr).await.map(MasterClient)
    }

    /// Connects within `limit` with keepalive set (see [`crate::net::connect`]).
    pub async fn connect_within(
        addr: &str,
        limit: std::time::Duration,
    ) -> Result<Self, crate::RpcError> {
        MasterRpc::connect_within(addr, limit).await.map(MasterClient)
    }

    pub async fn call(&self, request: Request) -> Result<Reply<ClientReply>, crate::RpcError> {
        self.0.call(request).await.map(|answer| answer.reply)
    }

    pub async fn call_timeout(
        &self,
        request: Request,
        ms: u64,
    ) -> Result<Reply<ClientReply>, crate::RpcError> {
        self.0.call_timeout(request, ms).await.map(|answer| answer.reply)
    }

    pub fn peer(&self) -> &str {
        self.0.peer()
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// One file in the trash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub ino: Ino,
    /// Where it was when deleted (`/dir/file`).
    pub path: String,
    pub deleted_at: Timestamp,
    /// Its trash time: it is purged at `deleted_at + trash_seconds`.
    pub trash_seconds: u32,
    pub size: u64,
}

/// What a byte-range lock request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// F_RDLCK / LOCK_SH.
    Shared,
    /// F_WRLCK / LOCK_EX.
    Exclusive,
    /// F_UNLCK / LOCK_UN.
    Unlock,
}

/// A byte-range lock of one owner. Owners are the kernel's lock owners (a process's file
/// table for POSIX locks, an open file for flock), unique within one client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLock {
    pub owner: u64,
    pub kind: LockKind,
    /// First byte covered.
    pub start: u64,
    /// Last byte covered (inclusive); `u64::MAX` or the kernel's OFFSET_MAX mean "to the end".
    pub end: u64,
    /// Process id of the holder, for F_GETLK (meaningful on the holder's host only).
    pub pid: u32,
}

impl FileLock {
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    /// Two locks of different owners conflict when they overlap and one is exclusive.
    pub fn conflicts_with(&self, other: &FileLock) -> bool {
        self.overlaps(other.start, other.end)
            && (self.kind == LockKind::Exclusive || other.kind == LockKind::Exclusive)
    }
}

/// The ranges one owner holds on one file: disjoint, sorted, adjacent equal kinds merged.
/// [`OwnerLocks::apply`] is the POSIX rule for one owner's request: the new range replaces
/// whatever the owner held under it (splitting what it cuts); `Unlock` just removes. The
/// master keeps one per (session, owner, file); the mount keeps its own copy to re-take its
/// locks after the master changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerLocks {
    ranges: Vec<FileLock>,
}

impl OwnerLocks {
    pub fn apply(&mut self, lock: FileLock) {
        let mut kept = Vec::with_capacity(self.ranges.len() + 2);
        for r in self.ranges.drain(..) {
            if !r.overlaps(lock.start, lock.end) {
                kept.push(r);
                continue;
            }
            if r.start < lock.start {
                kept.push(FileLock { end: lock.start - 1, ..r });
            }
            if r.end > lock.end {
                kept.push(FileLock { start: lock.end + 1, ..r });
            }
        }
        if lock.kind != LockKind::Unlock {
            kept.push(lock);
        }
        kept.sort_by_key(|r| r.start);
        self.ranges = merge_adjacent(kept);
    }

    pub fn ranges(&self) -> &[FileLock] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Joins touching ranges of the same kind (sorted, disjoint input).
fn merge_adjacent(sorted: Vec<FileLock>) -> Vec<FileLock> {
    let mut out: Vec<FileLock> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if last.kind == r.kind && last.end.checked_add(1) == Some(r.start) => {
                last.end = r.end;
                last.pid = r.pid;
            }
            _ => out.push(r),
        }
    }
    out
}

/// Everything a client needs to write one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkWrite {
    pub chunk_id: ChunkId,
    pub version: u32,
    /// The file's current length, so the client knows what "past the end" means.
    pub file_size: u64,
    /// Servers to write, in chain order: the client sends to the first, which forwards.
    pub chain: Vec<ServerAddr>,
    /// The master's permission to write this chunk version on them.
    pub token: crate::chunk_token::ChunkToken,
}

/// One chunk of a file with every copy the master knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCopies {
    pub index: u32,
    pub chunk_id: ChunkId,
    pub version: u32,
    pub goal: u8,
    pub copies: Vec<CopyInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyInfo {
    pub server: ServerAddr,
    /// "VALID", "WRONG VERSION", "DAMAGED", "MARKED FOR REMOVAL".
    pub state: String,
}

/// `mfscheckfile`: `by_copies[n]` chunks have exactly n valid copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFileCounts {
    pub by_copies: Vec<u64>,
}

/// `mfsdirinfo` totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    pub inodes: u64,
    pub directories: u64,
    pub files: u64,
    pub chunks: u64,
    pub length: u64,
    /// Bytes of chunk data (rounded up to blocks), one copy.
    pub size: u64,
    /// `size` times each chunk's goal.
    pub realsize: u64,
}

/// What `mfsha status` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// "leader", "follower", "candidate", "pre-candidate".
    pub role: String,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub inodes: u64,
    pub directories: u64,
    pub files: u64,
    pub chunks: u64,
    pub trash_inodes: u64,
    pub chunkservers: Vec<ChunkserverStatus>,
    pub clients: Vec<ClientStatus>,
    pub loggers: Vec<String>,
    pub peers: Vec<String>,
    pub chunks_endangered: u64,
    pub chunks_undergoal: u64,
    pub chunks_overgoal: u64,
    pub chunks_missing: u64,
    /// Every member of the group as the leader tracks its replication (itself included);
    /// empty when the answering master does not lead.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Sessions in the replicated state, connected or not (a session outlives its connection
    /// for the session sustain time).
    #[serde(default)]
    pub sessions: u64,
    /// This master's view of the cluster's virtual IP; `None` without a `vip:` section.
    #[serde(default)]
    pub vip: Option<Box<VipState>>,
    /// This master's `cluster_id`: tools given several masters stay with one cluster.
    #[serde(default)]
    pub cluster_id: String,
    /// Chunks with exactly their goal of valid copies.
    #[serde(default)]
    pub chunks_stable: u64,
    /// Chunks by goal (row) and valid copies (column), as MooseFS's chunk matrix.
    #[serde(default)]
    pub chunk_matrix: ChunkMatrix,
    /// Long work under way on this master: snapshot streams, re-replication, disk drains.
    #[serde(default)]
    pub long_work: Vec<LongWork>,
    /// Unlinked files kept because some client may have them open, until the leader frees
    /// them (MooseFS's "reserved" files).
    #[serde(default)]
    pub sustained_inodes: u64,
}

/// Long work under way, with its progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongWork {
    /// "snapshot to node 3", "re-replication", "drain of disks marked for removal".
    pub what: String,
    pub done: u64,
    pub total: u64,
    /// What `done` and `total` count: "bytes" or "chunks".
    pub unit: String,
    pub elapsed_ms: u64,
    /// At the rate so far; `None` before anything was done.
    pub eta_ms: Option<u64>,
}

/// Rows and columns of a [`ChunkMatrix`]: 0 to 9, then one for 10 and more.
pub const CHUNK_MATRIX_SIDE: usize = 11;

/// Chunk counts: `matrix[goal][valid copies]`, each index capped at `CHUNK_MATRIX_SIDE - 1`
/// (a last row and column for 10 and more).
pub type ChunkMatrix = [[u64; CHUNK_MATRIX_SIDE]; CHUNK_MATRIX_SIDE];

/// The cell of `matrix` that a chunk with `goal` and `valid` copies counts in.
pub fn matrix_cell(goal: usize, valid: usize) -> (usize, usize) {
    let last = CHUNK_MATRIX_SIDE - 1;
    (goal.min(last), valid.min(last))
}

/// The virtual IP on the answering master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipState {
    /// `address/prefix`.
    pub address: String,
    pub interface: String,
    /// This master has it on its interface.
    pub held: bool,
    /// When `held` last changed, in ms since the Unix epoch.
    pub since_unix_ms: u64,
    /// When it was last announced (gratuitous ARP / NA), in ms since the Unix epoch.
    pub last_announcement_unix_ms: Option<u64>,
    pub announcements: u64,
    /// Times it vanished from under this holder and was put back.
    pub readded: u64,
    pub last_error: Option<String>,
}

/// One member of the Raft group as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub kind: MemberKind,
    /// The highest log index known to be on that member.
    pub matched: u64,
    /// How long ago the leader last heard from it, in ms (to within an election timeout);
    /// `None` if not since it became leader.
    pub last_contact_ms: Option<u64>,
    /// Its client address, when the leader's configuration names one.
    pub client: Option<String>,
}

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    /// A master: a voter with a client address in the leader's configuration.
    Master,
    /// A voter without a client address: the metalogger running as the group's witness
    /// (masters' `peers` entries name their client port, the witness has none).
    Witness,
    /// A non-voting member.
    Learner,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Master => "master",
            MemberKind::Witness => "witness",
            MemberKind::Learner => "learner",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverStatus {
    pub addr: String,
    pub chunks: u64,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub disks: Vec<crate::cs::DiskInfo>,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    pub session: SessionId,
    pub peer: String,
    pub info: String,
    pub open_files: u64,
}

impl ClientOp {
    /// A short name of the request (`lookup`, `write_chunk`, ...): log lines and the `op`
    /// label of the metrics.
    pub fn name(&self) -> &'static str {
        use ClientOp::*;
        match self {
            Hello { .. } => "hello",
            Challenge { .. } => "challenge",
            Lookup { .. } => "lookup",
            GetAttr { .. } => "getattr",
            SetAttr { .. } => "setattr",
            Mknod { .. } => "mknod",
            Mkdir { .. } => "mkdir",
            Symlink { .. } => "symlink",
            ReadLink { .. } => "readlink",
            Unlink { .. } => "unlink",
            Rmdir { .. } => "rmdir",
            Rename { .. } => "rename",
            Link { .. } => "link",
            ReadDir { .. } => "readdir",
            Open { .. } => "open",
            Release { .. } => "release",
            Reopen { .. } => "reopen",
            ReadChunk { .. } => "read_chunk",
            WriteChunk { .. } => "write_chunk",
            WriteChunkEnd { .. } => "write_chunk_end",
            StatFs => "statfs",
            GetXattr { .. } => "getxattr",
            ListXattr { .. } => "listxattr",
            SetXattr { .. } => "setxattr",
            RemoveXattr { .. } => "removexattr",
            GetGoal { .. } => "getgoal",
            SetGoal { .. } => "setgoal",
            GetTrashTime { .. } => "gettrashtime",
            SetTrashTime { .. } => "settrashtime",
            FileInfo { .. } => "fileinfo",
            CheckFile { .. } => "checkfile",
            DirInfo { .. } => "dirinfo",
            ResolvePath { .. } => "resolve_path",
            Status => "status",
            Goodbye => "goodbye",
            TrashList { .. } => "trash_list",
            Undelete { .. } => "undelete",
            Purge { .. } => "purge",
            Create { .. } => "create",
            GetLock { .. } => "getlk",
            SetLock { .. } => "setlk",
            ReleaseLocks { .. } => "release_locks",
            WhoLeads => "who_leads",
            TransferLeader { .. } => "transfer_leader",
            ChangeMember { .. } => "change_member",
            ReloadExports => "reload_exports",
            Access { .. } => "access",
        }
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    fn lock(kind: LockKind, start: u64, end: u64) -> FileLock {
        FileLock { owner: 1, kind, start, end, pid: 7 }
    }

    fn spans(o: &OwnerLocks) -> Vec<(LockKind, u64, u64)> {
        o.ranges().iter().map(|r| (r.kind, r.start, r.end)).collect()
    }

    #[test]
    fn a_new_range_replaces_and_splits_what_the_owner_held_under_it() {
        use LockKind::*;
        let mut o = OwnerLocks::default();
        o.apply(lock(Shared, 0, 99));
        o.apply(lock(Exclusive, 10, 19));
        assert_eq!(spans(&o), [(Shared, 0, 9), (Exclusive, 10, 19), (Shared, 20, 99)]);
        o.apply(lock(Unlock, 5, 14));
        assert_eq!(spans(&o), [(Shared, 0, 4), (Exclusive, 15, 19), (Shared, 20, 99)]);
        o.apply(lock(Shared, 15, 19));
        assert_eq!(spans(&o), [(Shared, 0, 4), (Shared, 15, 99)]);
        o.apply(lock(Shared, 5, 14));
        assert_eq!(spans(&o), [(Shared, 0, 99)]);
        o.apply(lock(Unlock, 0, u64::MAX));
        assert!(o.is_empty());
    }

    #[test]
    fn ranges_to_the_end_of_the_file_do_not_overflow() {
        use LockKind::*;
        let mut o = OwnerLocks::default();
        o.apply(lock(Exclusive, 100, u64::MAX));
        o.apply(lock(Unlock, 200, u64::MAX));
        assert_eq!(spans(&o), [(Exclusive, 100, 199)]);
        o.apply(lock(Exclusive, 0, u64::MAX));
        assert_eq!(spans(&o), [(Exclusive, 0, u64::MAX)]);
    }

    #[test]
    fn only_overlapping_locks_with_a_writer_conflict() {
        use LockKind::*;
        assert!(lock(Shared, 0, 9).conflicts_with(&lock(Exclusive, 9, 20)));
        assert!(!lock(Shared, 0, 9).conflicts_with(&lock(Shared, 5, 20)));
        assert!(!lock(Exclusive, 0, 9).conflicts_with(&lock(Exclusive, 10, 20)));
    }
}
