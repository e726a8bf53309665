//! The changelog: one [`Entry`] per mutation.
//!
//! Everything `apply` needs travels in the entry — the proposer's clock (`now`) and any new
//! inode or chunk id — so applying the same entries to the same state always gives the same
//! state on every replica.
//!
//! Cluster time: apply never uses `now` as it comes. It uses `max(now, cluster time)`, where
//! the cluster time is the latest time any applied entry carried (replicated state, see
//! [`State::cluster_time`](crate::State::cluster_time)). So the times apply stamps (mtimes,
//! ctimes, deletion times) never go backwards, even when a new leader's clock is behind the
//! old one's; every replica computes the same time because the cluster time is part of the
//! state.

use mfsha_proto::types::*;
use serde::{Deserialize, Serialize};

/// One changelog entry: a metadata operation plus the context it was proposed in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The proposer's wall clock when it proposed this entry (a leader proposes at least the
    /// cluster time it has applied). Apply uses `max(now, cluster time)`: see the module
    /// documentation.
    pub now: Timestamp,
    /// The client request this entry answers, for exactly-once retries.
    pub client: Option<ClientTag>,
    pub op: Op,
}

/// Identifies a client mutation: its session and per-session sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTag {
    pub session: SessionId,
    pub seq: u64,
}

/// A metadata mutation. Ids chosen by the proposer (`ino`, `chunk_id`) must be unused; apply
/// answers [`Status::Exists`] otherwise and the proposer retries with a fresh id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Does nothing (a new leader's first entry; also used by tests).
    Noop,
    /// Opens `session`, unless a live session was already opened with the same non-zero
    /// `token`: then nothing changes and the outcome names that session. The client picks the
    /// token at random and sends it again when it retries, so a Hello whose reply was lost
    /// (the leader died after committing) does not open a second session.
    OpenSession {
        session: SessionId,
        info: String,
        root: Ino,
        token: u64,
    },
    CloseSession {
        session: SessionId,
    },
    /// Regular file, FIFO, socket or device node. `mode` has permission bits only.
    Create {
        parent: Ino,
        name: String,
        ino: Ino,
        kind: FileKind,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
    },
    /// A regular file created and held open by `session` in one entry: what a FUSE
    /// `create` (open with O_CREAT of a new file) needs, for the price of one commit. No
    /// longer proposed (a `Create` is, and the leader holds it open in memory); applied for
    /// older logs.
    CreateOpen {
        session: SessionId,
        parent: Ino,
        name: String,
        ino: Ino,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    },
    Mkdir {
        parent: Ino,
        name: String,
        ino: Ino,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        parent: Ino,
        name: String,
        ino: Ino,
        target: String,
        uid: u32,
        gid: u32,
    },
    Link {
        ino: Ino,
        parent: Ino,
        name: String,
    },
    Unlink {
        parent: Ino,
        name: String,
    },
    Rmdir {
        parent: Ino,
        name: String,
    },
    /// `flags`: RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2.
    Rename {
        parent: Ino,
        name: String,
        new_parent: Ino,
        new_name: String,
        flags: u32,
    },
    /// `cow_chunk_id` is used if truncation must copy a shared chunk.
    SetAttr {
        ino: Ino,
        set: SetAttr,
        cow_chunk_id: ChunkId,
    },
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
    SetGoal {
        ino: Ino,
        goal: u8,
        recursive: bool,
    },
    SetTrashTime {
        ino: Ino,
        seconds: u32,
        recursive: bool,
    },
    /// A session opened the file (unlinked files stay readable while acquired). No longer
    /// proposed: open files are leader memory (`Free` below); applied for older logs.
    Acquire {
        session: SessionId,
        ino: Ino,
    },
    Release {
        session: SessionId,
        ino: Ino,
    },
    /// Prepare chunk `index` of `ino` for a write: create it as `new_chunk_id` if absent,
    /// copy it to `new_chunk_id` if shared with a snapshot, otherwise bump its version.
    WriteChunk {
        ino: Ino,
        index: u32,
        new_chunk_id: ChunkId,
    },
    /// A chunk write finished: the file is at least `file_size` long; mtime/ctime = now.
    WriteChunkEnd {
        ino: Ino,
        index: u32,
        chunk_id: ChunkId,
        file_size: u64,
    },
    /// Drop a file from the trash for good (its trash time expired, or the operator said so).
    Purge {
        ino: Ino,
    },
    /// Put a trashed file back at its original path.
    Undelete {
        ino: Ino,
    },
    /// Accept `version` as a chunk's current version (no copy with the newer one survived).
    SetChunkVersion {
        chunk_id: ChunkId,
        version: u32,
    },
    /// The leader found `session` without a connection for longer than the session sustain
    /// time: it ends as with `CloseSession` (its open files are released, and the unlinked
    /// ones nobody else holds are freed). Apply checks no clock: the leader decided.
    ExpireSession {
        session: SessionId,
    },
    /// Records where member `id` is reached (a new member, or new addresses). Proposed as the
    /// context of the Raft membership change that adds the member, so the address book and
    /// the membership change at the same index.
    SetMember {
        id: u64,
        member: crate::model::Member,
    },
    /// Forgets member `id` (the context of the change that removes it).
    RemoveMember {
        id: u64,
    },
    /// Frees unlinked files (sustained, see `State::sustained`) that the leader found open
    /// nowhere: which files are open is leader memory, so apply cannot decide this itself.
    /// An inode that is no longer sustained (freed already), or that an older log's
    /// `Acquire` still holds, is left as it is.
    Free {
        inos: Vec<Ino>,
    },
}

/// What applying an entry produced, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Unit,
    Attr(Attr),
    /// From `WriteChunk`: the chunk to write and the version copies must have.
    /// `previous` is (id, version) of the chunk's data before this op (the CoW source, or the
    /// same id at the old version) — the master tells chunkservers to create/copy/bump.
    ChunkWrite {
        chunk_id: ChunkId,
        version: u32,
        previous: Option<(ChunkId, u32)>,
        file_size: u64,
        goal: u8,
        /// The file's committed size reaches into this chunk, so its copies hold
        /// acknowledged bytes. When false, a chunk whose copies are all gone (created in
        /// the metadata by a write that never reached a chunkserver) may be made afresh.
        holds_data: bool,
    },
    /// From `SetAttr` that shrank a file into the middle of a chunk: chunkservers must cut
    /// that chunk to `length` and give it `version` (from `previous` if a copy was made).
    Truncated {
        attr: Attr,
        chunk_id: ChunkId,
        version: u32,
        previous: (ChunkId, u32),
        length: u64,
    },
    Changed {
        inodes: u64,
        not_changed: u64,
        not_permitted: u64,
    },
    /// From `OpenSession`: the session the client has, the one just opened or the one an
    /// earlier entry with the same token opened.
    Session {
        session: SessionId,
        root: Ino,
    },
}
