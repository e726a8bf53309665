//! The in-memory records of the metadata model. Each one is also the postcard-encoded value of
//! one persisted record (see [`crate::table`]), so what is in memory and what is on disk cannot
//! drift apart.

use crate::op::Outcome;
use mfsha_proto::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The setgid bit: new entries in such a directory take its group; new directories inherit it.
pub const S_ISGID: u32 = 0o2000;
/// `renameat2` flag: fail with `Exists` if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `renameat2` flag: swap source and target (both must exist).
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flag: fail with `Exists` if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail with `NoAttr` if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;
/// Most hard links one file may have (ext4's limit, what Linux programs expect).
pub const LINK_MAX: u32 = 65_000;
/// Largest file size: every byte of it has a u32 chunk index (2^32 chunks of 64 MiB = 2^58),
/// well inside Linux's signed 64-bit `off_t`.
pub const MAX_FILE_SIZE: u64 = (u32::MAX as u64 + 1) * CHUNK_BYTES;
/// Longest session description we keep (it is shown by `mfsha status`).
pub const SESSION_INFO_MAX: usize = 4096;

/// One inode. Directory entries are separate records (a directory may hold millions of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Inode {
    pub kind: FileKind,
    /// Permission bits, setuid/setgid/sticky only (`0o7777`).
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
    /// Directories only: the directory holding this one (the root holds itself) and the name
    /// it has there. Kept so that `..`, cycle checks and trash paths need no search.
    pub parent: Ino,
    pub name: String,
    /// Symlinks only: the target.
    pub target: String,
    /// Regular files only: `(index, chunk id)` of each 64 MiB chunk that exists, sorted by
    /// index, no zero ids. Sparse, so a write at a huge offset costs one entry, not gigabytes.
    pub chunks: Vec<(u32, ChunkId)>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    pub fn attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            nlink: self.nlink,
            rdev: self.rdev,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            goal: self.goal,
            trash_seconds: self.trash_seconds,
        }
    }

    /// The chunk at `index`, 0 for a hole.
    pub fn chunk_at(&self, index: u32) -> ChunkId {
        match self.chunks.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.chunks[at].1,
            Err(_) => 0,
        }
    }

    /// Puts chunk `id` (not 0) at `index`, replacing what was there.
    pub fn set_chunk(&mut self, index: u32, id: ChunkId) {
        assert!(id != 0, "set_chunk with id 0");
        match self.chunks.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.chunks[at].1 = id,
            Err(at) => self.chunks.insert(at, (index, id)),
        }
    }

    /// Removes and returns the chunks at indexes `>= first` (counted in chunks, may exceed
    /// the u32 range).
    pub fn split_chunks_from(&mut self, first: u64) -> Vec<(u32, ChunkId)> {
        let at = self.chunks.partition_point(|(i, _)| u64::from(*i) < first);
        self.chunks.split_off(at)
    }
}

/// One chunk. `owners` lists the referencing file once per reference (a file may hold the
/// same chunk at two indexes after a snapshot), so `refcount == owners.len()` and the goal is
/// the largest owner's goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChunkRec {
    pub version: u32,
    pub owners: Vec<Ino>,
}

/// Where one member of the master group is reached: its peer (Raft) port, and for a master the
/// ports clients, chunkservers and metaloggers use (`HOST:PORT` each). The group's address book
/// is replicated state, changed in the same entry as the membership, so every member (and a
/// node re-seeded by a snapshot) knows where the others are without its configuration saying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer: String,
    pub client: Option<String>,
    pub chunkserver: Option<String>,
    pub logger: Option<String>,
}

/// What the chunk table says about one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    pub version: u32,
    pub refcount: u32,
    /// Largest goal of the files referencing it.
    pub goal: u8,
}

/// A client session: who it is, the directory it mounted, and the token it was opened with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRec {
    pub info: String,
    pub root: Ino,
    /// The client's random open token (0: none), so a retried open finds this session.
    pub token: u64,
}

/// A stored reply: the seq it answered and the answer.
pub(crate) type StoredReply = (u64, Result<Outcome, Status>);

impl Session {
    /// The highest seq applied (0 before the first): the newest of at most 64 stored replies.
    pub fn max_seq(&self) -> u64 {
        self.replies.values().map(|(seq, _)| *seq).max().unwrap_or(0)
    }

    /// What a mutation with `seq` gets without being applied: `Invalid` if it is older than
    /// the window, its stored reply if it was applied. `None`: it is new.
    pub fn earlier_reply(&self, seq: u64) -> Option<Result<Outcome, Status>> {
        if seq + REPLY_WINDOW <= self.max_seq() {
            return Some(Err(Status::Invalid));
        }
        match self.replies.get(&reply_slot(seq)) {
            Some((stored, reply)) if *stored == seq => Some(reply.clone()),
            _ => None,
        }
    }
}

/// Where the reply to `seq` is kept: one slot per seq modulo the window, so storing a reply
/// overwrites the one that just left the window and a mutation costs one record write.
pub(crate) fn reply_slot(seq: u64) -> u64 {
    seq % REPLY_WINDOW
}

/// How many recent replies a session keeps (see [`mfsha_proto::client::REPLY_WINDOW`]).
pub use mfsha_proto::client::REPLY_WINDOW;

/// A session in memory: its record plus its acquired (open) inodes with open counts. The
/// acquisitions are separate records so that a session holding many open files does not
/// rewrite them all with every reply it stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Session {
    pub rec: SessionRec,
    pub acquired: BTreeMap<Ino, u32>,
    /// The last reply stored in each slot ([`reply_slot`]), each its own record. Slots may
    /// hold replies that left the window; `earlier_reply` never returns those.
    pub replies: BTreeMap<u64, StoredReply>,
}

/// A file in the trash: where it was and when it was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrashRec {
    pub parent: Ino,
    pub name: String,
    /// The original path, for operators (`/dir/file`).
    pub path: String,
    pub deleted_at: Timestamp,
}

/// Totals over the whole filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// All inodes, including trash and sustained ones.
    pub inodes: u64,
    pub directories: u64,
    /// Regular files, including trash and sustained ones.
    pub files: u64,
    pub chunks: u64,
    pub trash_inodes: u64,
    pub sustained_inodes: u64,
}
