//! Value types shared by several message groups and by the metadata model.

use serde::{Deserialize, Serialize};

/// Inode number. The root directory is [`ROOT_INO`].
pub type Ino = u64;
/// Chunk id. 0 means "no chunk" (a hole).
pub type ChunkId = u64;
/// Client session id, chosen by the master when a session is opened.
pub type SessionId = u64;

pub const ROOT_INO: Ino = 1;
/// Bytes in one chunk (64 MiB), as in MooseFS.
pub const CHUNK_BYTES: u64 = 64 << 20;
/// Bytes in one CRC-checked block (64 KiB).
pub const BLOCK_BYTES: u64 = 64 << 10;
/// Blocks in one chunk.
pub const BLOCKS_PER_CHUNK: u64 = CHUNK_BYTES / BLOCK_BYTES;
/// Longest file name, as Linux allows.
pub const NAME_MAX: usize = 255;
/// Longest symlink target / xattr value we store.
pub const PATH_MAX: usize = 4096;
pub const XATTR_VALUE_MAX: usize = 64 << 10;
pub const XATTR_NAME_MAX: usize = 255;
/// Default number of copies of each chunk.
pub const DEFAULT_GOAL: u8 = 2;
/// Largest goal accepted.
pub const MAX_GOAL: u8 = 9;
/// Default trash time in seconds (one day).
pub const DEFAULT_TRASH_SECONDS: u32 = 86_400;

const _: () = assert!(CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(BLOCKS_PER_CHUNK == 1024);

/// A point in time: seconds and nanoseconds since the Unix epoch. Signed seconds so that
/// times before 1970 and after 2106 survive (pjdfstest checks both).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub const fn new(secs: i64, nanos: u32) -> Self {
        Timestamp { secs, nanos }
    }

    /// The current wall-clock time. Never call this inside a state machine's apply: the
    /// proposer reads the clock and the timestamp travels in the log entry.
    pub fn now() -> Self {
        let d =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
    }
}

/// What kind of object an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
}

impl FileKind {
    /// The `S_IFMT` bits for this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => 0o100000,
            FileKind::Directory => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::Fifo => 0o010000,
            FileKind::Socket => 0o140000,
            FileKind::BlockDevice => 0o060000,
            FileKind::CharDevice => 0o020000,
        }
    }

    /// The kind named by the `S_IFMT` bits of `mode`, if any.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 | 0 => FileKind::File,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            0o060000 => FileKind::BlockDevice,
            0o020000 => FileKind::CharDevice,
            _ => return None,
        })
    }
}

/// The attributes of an inode, as a client sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    /// Permission bits and setuid/setgid/sticky (`0o7777`); the type is in `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub rdev: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub goal: u8,
    pub trash_seconds: u32,
}

/// Which attributes a `SetAttr` changes. `None` leaves the attribute alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend to this size (regular files only).
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// How a time attribute is set: to a given time, or to "now" (the proposer's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

/// One directory entry as returned by readdir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// Filesystem totals for `statfs`/`df`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStat {
    pub total_bytes: u64,
    pub avail_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub trash_inodes: u64,
}

/// A chunkserver's address as clients and other chunkservers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where a chunk lives: its id, version and the servers holding a valid copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub chunk_id: ChunkId,
    pub version: u32,
    /// Bytes of file data in this chunk (the file's length within this 64 MiB window).
    pub file_length: u64,
    /// Servers with a valid copy, healthiest first.
    pub servers: Vec<ServerAddr>,
    /// The master's permission to read this chunk version from them.
    pub token: crate::chunk_token::ChunkToken,
}

/// Error statuses. Each maps to one errno; the mapping lives in [`Status::errno`] so that a new
/// status forces a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Status {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("invalid argument")]
    Invalid,
    #[error("name too long")]
    NameTooLong,
    #[error("no space left")]
    NoSpace,
    #[error("too many links")]
    TooManyLinks,
    #[error("no such attribute")]
    NoAttr,
    #[error("result too large for the buffer")]
    Range,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("resource busy")]
    Busy,
    #[error("file too large")]
    TooBig,
    #[error("i/o error")]
    Io,
    #[error("no chunkserver holds a valid copy of this chunk")]
    NoChunkCopies,
    #[error("not enough chunkservers for the goal")]
    NoChunkservers,
    #[error("chunk is locked by another writer")]
    ChunkLocked,
    #[error("chunk or copy version does not match")]
    WrongVersion,
    #[error("stored data failed its checksum")]
    Checksum,
    #[error("this master is not the leader")]
    NotLeader,
    #[error("the master is shutting down or not ready")]
    Unavailable,
    #[error("unknown or expired session")]
    BadSession,
    #[error("lock would block")]
    WouldBlock,
    #[error("cross-device link")]
    CrossDevice,
    /// The export needs a password and the `Hello` proved none, or a wrong one.
    #[error("wrong or missing password for this export")]
    BadPassword,
    /// The session holds as many open files as the master allows one session
    /// (`client.max_open_files_per_session`).
    #[error("too many open files in this session")]
    TooManyOpen,
}

impl Status {
    /// The errno a POSIX application sees for this status.
    pub fn errno(self) -> i32 {
        match self {
            Status::NotFound => 2,        // ENOENT
            Status::Exists => 17,         // EEXIST
            Status::NotDir => 20,         // ENOTDIR
            Status::IsDir => 21,          // EISDIR
            Status::NotEmpty => 39,       // ENOTEMPTY
            Status::Access => 13,         // EACCES
            Status::Perm => 1,            // EPERM
            Status::Invalid => 22,        // EINVAL
            Status::NameTooLong => 36,    // ENAMETOOLONG
            Status::NoSpace => 28,        // ENOSPC
            Status::TooManyLinks => 31,   // EMLINK
            Status::NoAttr => 61,         // ENODATA
            Status::Range => 34,          // ERANGE
            Status::ReadOnly => 30,       // EROFS
            Status::NotSupported => 95,   // EOPNOTSUPP
            Status::Busy => 16,           // EBUSY
            Status::TooBig => 27,         // EFBIG
            Status::Io => 5,              // EIO
            Status::NoChunkCopies => 5,   // EIO
            Status::NoChunkservers => 28, // ENOSPC
            Status::ChunkLocked => 11,    // EAGAIN
            Status::WrongVersion => 5,    // EIO
            Status::Checksum => 5,        // EIO
            Status::NotLeader => 11,      // EAGAIN (the client retries elsewhere first)
            Status::Unavailable => 11,    // EAGAIN
            Status::BadSession => 116,    // ESTALE
            Status::WouldBlock => 11,     // EAGAIN
            Status::CrossDevice => 18,    // EXDEV
            Status::BadPassword => 13,    // EACCES
            Status::TooManyOpen => 23,    // ENFILE: a limit beyond the process's own
        }
    }
}

/// Result type of every request: a reply body or a status.
pub type Reply<T> = Result<T, Status>;

/// Who leads the master group, as one master sees it: a follower's redirect, and the answer
/// to `ClientOp::WhoLeads`. The addresses come from the masters' configuration (the same
/// address book on every master); `None` where the leader is unknown (`leader_id` 0) or
/// its configuration does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The answering master's current Raft term.
    pub term: u64,
    /// The leader's node id; 0 when no leader is known (an election is running).
    pub leader_id: u64,
    /// `HOST:PORT` of the leader's client port (mounts, tools).
    pub client: Option<String>,
    /// `HOST:PORT` of the leader's chunkserver port.
    pub chunkserver: Option<String>,
    /// `HOST:PORT` of the leader's metalogger port.
    pub logger: Option<String>,
    /// The answering master's `cluster_id`. It is the first answer on a client's connection,
    /// so a client that has already met another cluster can refuse this master before it
    /// opens a session there or believes its term.
    pub cluster_id: String,
}
