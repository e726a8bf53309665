//! Mount ↔ chunkserver and chunkserver ↔ chunkserver messages: the data path.
//!
//! Writes go down a chain: the client sends [`DataRequest::Write`] to the first server with the
//! whole chain as the master gave it and `hop` 0; each server stores the data, forwards to
//! `chain[hop + 1]` and answers only after the next one answered, so an acknowledged write is
//! on every copy. [`DataRequest::Sync`] makes the chunk durable (fsync) on every server of the
//! chain the same way.
//!
//! Every request carries a [`ChunkToken`] from the master (or, for replication, from the
//! chunkserver that copies): with a cluster secret, a chunkserver serves nothing without a
//! valid one (see [`crate::chunk_token`]). A write token covers the chain too, so a server
//! forwards only along the chain the master chose: registered chunkservers.

pub use crate::chunk_token::ChunkToken;
use crate::types::*;
use serde::{Deserialize, Serialize};

/// Largest data payload in one read or write request (4 MiB, well under the frame limit).
pub const MAX_IO_BYTES: u32 = 4 << 20;
const _: () = assert!((MAX_IO_BYTES as usize) < crate::frame::MAX_FRAME_BYTES - 4096);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// Read `size` bytes at `offset` within the chunk. Past the stored end reads zeros.
    Read { chunk_id: ChunkId, version: u32, offset: u32, size: u32, token: ChunkToken },
    /// Write `data` at `offset` within the chunk, then forward to `chain[hop + 1]`.
    Write {
        chunk_id: ChunkId,
        version: u32,
        offset: u32,
        data: serde_bytes::ByteBuf,
        /// The whole chain, as the master gave it (and signed it, in the token).
        chain: Vec<ServerAddr>,
        /// This server's place in `chain`.
        hop: u8,
        token: ChunkToken,
    },
    /// fsync the chunk here and on every server after `hop` in `chain`.
    Sync { chunk_id: ChunkId, version: u32, chain: Vec<ServerAddr>, hop: u8, token: ChunkToken },
    /// Stored length and version of a copy (for replication; a read token for any version).
    Stat { chunk_id: ChunkId, token: ChunkToken },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    Data(serde_bytes::ByteBuf),
    Written,
    Synced,
    Stat { version: u32, length: u64 },
}
