//! Metalogger ↔ master messages.
//!
//! A logger keeps restorable copies of the metadata: it downloads a full snapshot, then follows
//! the committed changelog. Snapshots travel in parts so no frame exceeds the limit.

use serde::{Deserialize, Serialize};

/// Largest snapshot part in one frame.
pub const SNAPSHOT_PART_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggerToMaster {
    /// `applied`: the last changelog index this logger holds (0 for none).
    Hello {
        name: String,
        applied: u64,
        /// The cluster this logger belongs to (its `cluster_id`, or its witness's), if set: a
        /// master of another cluster refuses it.
        cluster: Option<String>,
    },
    /// Asks for a fresh snapshot.
    WantSnapshot,
    Ack {
        index: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterToLogger {
    /// One part of a snapshot taken at `index`/`term`; `crc32c` covers the whole snapshot and is
    /// sent with the last part.
    SnapshotPart {
        index: u64,
        term: u64,
        offset: u64,
        data: serde_bytes::ByteBuf,
        last: bool,
        crc32c: u32,
    },
    /// Committed changelog entries: (index, term, encoded metadata operation).
    Entries(Vec<(u64, u64, serde_bytes::ByteBuf)>),
    /// This master is not the leader and closes the connection; `leader_hint` is the
    /// leader's logger port (`HOST:PORT`) if known.
    NotLeader { leader_hint: Option<String> },
    /// Sent every `cs::MASTER_HEARTBEAT_MS` so the logger notices a master that hangs.
    Heartbeat,
}
