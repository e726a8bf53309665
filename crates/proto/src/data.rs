//! Mount ↔ chunkserver and chunkserver ↔ chunkserver messages: the data path.
//!
//! Writes go down a chain: the client sends [`DataRequest::Write`] to the first server with the
//! whole chain as the master gave it and `hop` 0; each server stores the data, forwards to
//! `chain[hop + 1]` and answers only after the next one answered, so an acknowledged write is
//! on every copy. [`DataRequest::Sync`] makes the chunk durable (fsync) on every server of the
//! chain the same way.
//!
//! The bytes of a write, and of a read's answer, travel with the CRC32C of each piece of them
//! cut at the chunk's 64 KiB block boundaries ([`block_crcs`]). Every chunkserver on a chain
//! checks them before it stores or forwards anything, and a reader (a mount, or a chunkserver
//! copying a chunk) before it uses what it read: bytes damaged between two checksummed
//! stores (a NIC, a bad memory bank, a buggy proxy) are refused, never stored.
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
        /// [`block_crcs`] of `data` at `offset`.
        crcs: Vec<u32>,
    },
    /// fsync the chunk here and on every server after `hop` in `chain`.
    Sync { chunk_id: ChunkId, version: u32, chain: Vec<ServerAddr>, hop: u8, token: ChunkToken },
    /// Stored length and version of a copy (for replication; a read token for any version).
    Stat { chunk_id: ChunkId, token: ChunkToken },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    /// The bytes read, with their [`block_crcs`].
    Data {
        data: serde_bytes::ByteBuf,
        crcs: Vec<u32>,
    },
    Written,
    Synced,
    Stat {
        version: u32,
        length: u64,
    },
}

/// The CRC32C of each piece of `data`, placed at `offset` within a chunk, cut where the
/// chunk's 64 KiB blocks begin: the first piece runs to the first block boundary after
/// `offset`, the others are whole blocks but perhaps the last. Empty data has no piece.
pub fn block_crcs(offset: u32, data: &[u8]) -> Vec<u32> {
    pieces(offset, data).map(crc32c::crc32c).collect()
}

/// Why bytes do not match the CRCs they came with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrcMismatch {
    #[error("{got} CRCs for {want} blocks")]
    Count { got: usize, want: usize },
    #[error("the piece at chunk offset {offset} does not match its CRC")]
    Piece { offset: u64 },
}

/// Checks `data` at `offset` against `crcs` ([`block_crcs`]).
pub fn check_block_crcs(offset: u32, data: &[u8], crcs: &[u32]) -> Result<(), CrcMismatch> {
    let want = pieces(offset, data).count();
    if crcs.len() != want {
        return Err(CrcMismatch::Count { got: crcs.len(), want });
    }
    let mut at = u64::from(offset);
    for (piece, crc) in pieces(offset, data).zip(crcs) {
        if crc32c::crc32c(piece) != *crc {
            return Err(CrcMismatch::Piece { offset: at });
        }
        at += piece.len() as u64;
    }
    Ok(())
}

/// `data` at `offset` cut at block boundaries.
fn pieces(offset: u32, data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let block = BLOCK_BYTES as usize;
    let first = (block - offset as usize % block).min(data.len());
    let (head, rest) = data.split_at(first);
    std::iter::once(head).filter(|h| !h.is_empty()).chain(rest.chunks(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_cut_at_block_boundaries() {
        let block = BLOCK_BYTES as usize;
        let data = vec![7u8; 3 * block];
        assert_eq!(block_crcs(0, &data).len(), 3);
        assert_eq!(block_crcs(100, &data).len(), 4, "a head, two whole blocks, a tail");
        assert_eq!(block_crcs(100, &data[..10]), vec![crc32c::crc32c(&data[..10])]);
        assert!(block_crcs(5, &[]).is_empty());
        let at = block as u32 - 1;
        assert_eq!(block_crcs(at, &data[..2]), vec![crc32c::crc32c(&[7]), crc32c::crc32c(&[7])]);
    }

    #[test]
    fn a_changed_byte_or_a_wrong_count_is_named() {
        let block = BLOCK_BYTES as usize;
        let mut data: Vec<u8> = (0..2 * block + 9).map(|i| i as u8).collect();
        let crcs = block_crcs(300, &data);
        assert_eq!(check_block_crcs(300, &data, &crcs), Ok(()));
        data[block] ^= 1; // in the second piece, which starts at chunk offset 65536
        assert_eq!(
            check_block_crcs(300, &data, &crcs),
            Err(CrcMismatch::Piece { offset: BLOCK_BYTES })
        );
        assert_eq!(
            check_block_crcs(300, &data, &crcs[1..]),
            Err(CrcMismatch::Count { got: 2, want: 3 })
        );
    }
}
