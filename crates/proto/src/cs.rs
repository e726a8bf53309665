//! Chunkserver ↔ master messages.
//!
//! A chunkserver keeps a connection to *every* master, not only the leader, so that a newly
//! elected leader already knows where every copy is (MooseFS's shadow masters learn it only
//! when the chunkservers reconnect, seconds after the failover). On each connection the
//! master speaks first with [`MasterToCs::Hello`] (who it is, its cluster, where the other
//! masters are); the chunkserver then sends [`CsToMaster::Register`], every chunk it holds in
//! one or more [`CsToMaster::Chunks`] batches, and [`CsToMaster::RegisterDone`]. After that it
//! heartbeats, reports every change to its copies to every master (`Copy`, `Gone`, `Damaged`,
//! `Lost`), and answers the commands of the master that leads; each command carries an `op`
//! id that its answer repeats. Only the leader sends commands.
//!
//! Every frame from the master is a [`FromMaster`]: the master's Raft term and the message. A
//! chunkserver obeys no command with a term older than the highest it has obeyed (it keeps
//! that term on disk), so a deposed leader cannot delete or overwrite copies.

use crate::types::*;
use serde::{Deserialize, Serialize};

/// Most (id, version) pairs in one [`CsToMaster::Chunks`] frame, so a frame stays far below
/// the frame limit (each pair encodes to at most 15 bytes).
pub const CHUNKS_PER_FRAME: usize = 100_000;

/// How often the master heartbeats a chunkserver (and a metalogger).
pub const MASTER_HEARTBEAT_MS: u64 = 300;
/// A master silent this long (five heartbeats) is taken for dead by its chunkservers and
/// metaloggers.
pub const MASTER_SILENCE_MS: u64 = 1500;
/// A chunk written to within this long is reported in heartbeats as being written.
pub const WRITING_WINDOW_MS: u64 = 5000;
/// Most chunks named in one heartbeat's `writing` list (the most recently written first).
pub const WRITING_PER_HEARTBEAT: usize = 10_000;

/// A data directory of a chunkserver, as reported to the master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    /// Marked for removal by the operator: being drained.
    pub marked_for_removal: bool,
    /// Returned I/O errors: its chunks count as lost.
    pub damaged: bool,
    /// Set by the master in status replies (a chunkserver sends `false`): marked for removal,
    /// and every chunk with a copy on this server's marked disks has its full goal of valid
    /// copies elsewhere, so the disk can be pulled.
    pub safe_to_remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsToMaster {
    Register {
        /// Port clients use; the master takes the host from the connection unless `host` is set.
        host: Option<String>,
        port: u16,
        labels: Vec<String>,
        disks: Vec<DiskInfo>,
        /// A stable id kept in the chunkserver's data directory, so a restarted server is
        /// recognised as the same one.
        server_id: u64,
        /// The cluster this chunkserver was configured for (`cluster_id`), if any: a master
        /// of another cluster refuses it.
        cluster: Option<String>,
    },
    /// Chunks held, as (id, version, on a disk marked for removal).
    Chunks(Vec<(ChunkId, u32, bool)>),
    RegisterDone,
    Heartbeat {
        disks: Vec<DiskInfo>,
        /// Chunks a client wrote to here within the last [`WRITING_WINDOW_MS`]: a master that
        /// becomes leader must not replicate or delete them while the write may go on.
        writing: Vec<ChunkId>,
    },
    /// This server now holds `chunk_id` at `version` (created, renumbered, truncated,
    /// duplicated or replicated here), whichever master ordered it.
    Copy {
        chunk_id: ChunkId,
        version: u32,
    },
    /// This server deleted its copy of `chunk_id`.
    Gone {
        chunk_id: ChunkId,
    },
    /// A copy failed its checksum or could not be read; the master should replace it.
    Damaged {
        chunk_id: ChunkId,
        version: u32,
    },
    /// Copies gone with a damaged disk.
    Lost(Vec<ChunkId>),
    /// Answer to a [`MasterToCs`] command.
    Done {
        op: u64,
        status: Result<(), Status>,
    },
}

/// One frame from the master: the term it leads in (the term at which it accepted this
/// connection) and the message. Why an envelope rather than a field in every variant: the
/// term is a property of the connection's leader, not of each command, and the registry
/// that queues commands need not know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromMaster {
    pub term: u64,
    pub msg: MasterToCs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterToCs {
    /// The master's first frame on every connection: its node id, its cluster, and the
    /// chunkserver address of every master of the group (its own included), so a chunkserver
    /// that was given one address (the VIP) connects to all of them.
    Hello { master_node: u64, cluster: String, masters: Vec<(u64, String)> },
    /// Registration accepted.
    Welcome { master_node: u64 },
    /// Sent every [`MASTER_HEARTBEAT_MS`] so the chunkserver notices a master that hangs
    /// (its kernel still acknowledges, so TCP alone would not tell).
    Heartbeat,
    /// Create an empty chunk.
    Create { op: u64, chunk_id: ChunkId, version: u32 },
    /// Change a copy's version (before a write, so stale copies are recognisable).
    SetVersion { op: u64, chunk_id: ChunkId, old_version: u32, new_version: u32 },
    /// Delete a copy (any version if `version` is 0).
    Delete { op: u64, chunk_id: ChunkId, version: u32 },
    /// Fetch a copy from another chunkserver.
    Replicate { op: u64, chunk_id: ChunkId, version: u32, source: ServerAddr },
    /// Cut a copy to `length` bytes and set its version.
    Truncate { op: u64, chunk_id: ChunkId, old_version: u32, new_version: u32, length: u64 },
    /// Copy-on-write for snapshots: make `new_chunk` from `old_chunk` locally.
    Duplicate {
        op: u64,
        new_chunk: ChunkId,
        new_version: u32,
        old_chunk: ChunkId,
        old_version: u32,
    },
}
