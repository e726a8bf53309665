//! Node ↔ node messages: Raft traffic between members of the group (masters and the witness).
//!
//! The Raft message itself is carried as opaque bytes (raft-rs's protobuf encoding) so that this
//! crate does not depend on the Raft library. A snapshot is too large for one frame: it goes on
//! a connection of its own as [`PeerMessage::SnapshotPart`]s, and the receiver answers once with
//! [`PeerMessage::SnapshotDone`], so the sender reports the outcome to Raft only when it is known.

use serde::{Deserialize, Serialize};

/// Bytes of snapshot per [`PeerMessage::SnapshotPart`]: well inside one frame.
pub const SNAPSHOT_PART_BYTES: usize = 4 << 20;

const _: () = assert!(SNAPSHOT_PART_BYTES + 4096 < crate::frame::MAX_FRAME_BYTES);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// First frame on a peer connection: who is calling, whom it means to reach, and the
    /// cluster both must belong to.
    Hello { from: u64, to: u64, cluster: String },
    /// One encoded `raft::eraftpb::Message`.
    Raft(serde_bytes::ByteBuf),
    /// Bytes `[offset, offset + len)` of one encoded `MsgSnapshot` of `total` bytes.
    SnapshotPart { total: u64, offset: u64, bytes: serde_bytes::ByteBuf },
    /// The receiver's answer after the last part: handed to its node, or why not.
    SnapshotDone { delivered: bool, reason: String },
    /// The receiver's answer to a `Hello` from a node of the cluster that the receiver's
    /// membership, as of its applied index `applied_index`, does not name; then it closes.
    NotMember { applied_index: u64 },
}

impl PeerMessage {
    /// The variant's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMessage::Hello { .. } => "Hello",
            PeerMessage::Raft(_) => "Raft",
            PeerMessage::SnapshotPart { .. } => "SnapshotPart",
            PeerMessage::SnapshotDone { .. } => "SnapshotDone",
            PeerMessage::NotMember { .. } => "NotMember",
        }
    }
}
