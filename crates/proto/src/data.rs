//! Mount ↔ chunkserver and chunkserver ↔ chunkserver messages: the data path.
//!
//! Writes go down a chain: the client sends [`DataRequest::Write`] to the first server with the
//! rest of the chain; each server stores the data, forwards to the next and answers only after
//! the next one answered, so an acknowledged write is on every copy. [`DataRequest::Sync`]
//! makes the chunk durable (fsync) on every server of the chain the same way.

use crate::types::*;
use serde::{Deserialize, Serialize};

/// Largest data payload in one read or write request (4 MiB, well under the frame limit).
pub const MAX_IO_BYTES: u32 = 4 << 20;
const _: () = assert!((MAX_IO_BYTES as usize) < crate::frame::MAX_FRAME_BYTES - 4096);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// Read `size` bytes at `offset` within the chunk. Past the stored end reads zeros.
    Read { chunk_id: ChunkId, version: u32, offset: u32, size: u32 },
    /// Write `data` at `offset` within the chunk, then forward to `chain[0]` with `chain[1..]`.
    Write {
        chunk_id: ChunkId,
        version: u32,
        offset: u32,
        data: serde_bytes::ByteBuf,
        chain: Vec<ServerAddr>,
    },
    /// fsync the chunk here and on every server of `chain`.
    Sync { chunk_id: ChunkId, version: u32, chain: Vec<ServerAddr> },
    /// Stored length and version of a copy (for replication).
    Stat { chunk_id: ChunkId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    Data(serde_bytes::ByteBuf),
    Written,
    Synced,
    Stat { version: u32, length: u64 },
}
