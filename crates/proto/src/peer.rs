//! Master ↔ master messages: Raft traffic between replicas of the metadata.
//!
//! The Raft message itself is carried as opaque bytes (raft-rs's protobuf encoding) so that this
//! crate does not depend on the Raft library.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// First frame on a peer connection: who is calling.
    Hello { from: u64, cluster: String },
    /// One encoded `raft::eraftpb::Message`.
    Raft(serde_bytes::ByteBuf),
}
