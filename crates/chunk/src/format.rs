//! The on-disk layout of one chunk file, as pure functions (no I/O).
//!
//! ```text
//! offset 0      header (4 KiB): magic "MFSHAC01", chunk id u64 LE, version u32 LE,
//!               CRC32C of those 20 bytes u32 LE, zero padding
//! offset 4096   CRC table (4 KiB): 1024 × CRC32C u32 LE, one per 64 KiB block
//! offset 8192   data: block i at 8192 + i × 65536; the file ends where the data ends
//! ```
//!
//! A block's CRC always covers the full 64 KiB, counting bytes past the end of the file as
//! zeros, so "past the stored end reads zeros" and "a never-written block" need no special case:
//! a new chunk's table holds [`zero_block_crc`] everywhere.
//!
//! # Torn writes
//!
//! A write stores the data blocks first and then their CRC entries, both in place, and fsyncs
//! only when the client asks (`Sync`). A crash can persist any subset of those pages, in any
//! order, partially. Every such subset leaves each block in one of three states: old data with
//! its old CRC (the write did not reach it), new data with its new CRC (it did), or data and CRC
//! from different writes — which the CRC check finds (up to CRC32C's 2⁻³² collision chance).
//! Reads and the scrub verify every block, so the third state is reported as damage and the
//! master replaces the copy from another server; it is never returned as data. Because the CRC
//! covers the whole zero-padded block, a torn *extension* of the file (size grew, data did not
//! land) is caught the same way.
//!
//! # Versions
//!
//! The file name carries the version and a rename is atomic, so the name is the commit point of
//! a version change: write the new version into the header, fsync, rename, fsync the directory.
//! A crash between the header write and the rename leaves a header one step ahead of the name;
//! the scan at startup finishes that rename (see `store`), because the master only asks for a
//! version change after committing the new version.

use mfsha_proto::types::{ChunkId, BLOCKS_PER_CHUNK, BLOCK_BYTES, CHUNK_BYTES};

/// Bytes of the header at the start of every chunk file.
pub const HEADER_BYTES: u64 = 4096;
/// Offset of the CRC table (one u32 per block).
pub const CRC_TABLE_OFFSET: u64 = HEADER_BYTES;
/// Bytes of the CRC table.
pub const CRC_TABLE_BYTES: u64 = BLOCKS_PER_CHUNK * 4;
/// Offset of block 0's data.
pub const DATA_OFFSET: u64 = CRC_TABLE_OFFSET + CRC_TABLE_BYTES;
/// Identifies an mfsha chunk file and its layout revision.
pub const MAGIC: &[u8; 8] = b"MFSHAC01";
/// Bytes of the header that carry information (magic, id, version, header CRC).
const HEADER_USED: usize = 24;

const _: () = assert!(CRC_TABLE_BYTES == 4096);
const _: () = assert!(DATA_OFFSET.is_multiple_of(4096), "data blocks must be page aligned");
const _: () = assert!(HEADER_USED as u64 <= HEADER_BYTES);

/// A chunk file's name: `chunk_<16 hex id>_<8 hex version>.mfs`, upper-case hex as MooseFS.
pub fn file_name(id: ChunkId, version: u32) -> String {
    format!("chunk_{id:016X}_{version:08X}.mfs")
}

/// The subdirectory (`00`..`FF`) holding chunk `id`: its low byte.
pub fn subdir_name(id: ChunkId) -> String {
    format!("{:02X}", id & 0xff)
}

/// Parses a chunk file name back into (id, version); `None` for anything else.
pub fn parse_file_name(name: &str) -> Option<(ChunkId, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".mfs")?;
    let (id, version) = rest.split_once('_')?;
    if id.len() != 16 || version.len() != 8 {
        return None;
    }
    let id = u64::from_str_radix(id, 16).ok()?;
    let version = u32::from_str_radix(version, 16).ok()?;
    // Only the spelling `file_name` gives: the file is opened again by that name, so one that
    // parses but is spelt otherwise (lower-case hex, a `+` sign) would be found, then missed.
    (file_name(id, version) == name).then_some((id, version))
}

/// Prefix of temporary files (replication, creation, duplication in progress). The scan
/// deletes them: they were never acknowledged.
pub const TEMP_PREFIX: &str = "tmp_chunk_";

/// A temporary file name for building chunk `id` at `version`.
pub fn temp_name(id: ChunkId, version: u32) -> String {
    format!("{TEMP_PREFIX}{id:016X}_{version:08X}.mfs")
}

/// The encoded header of a chunk file.
pub fn encode_header(id: ChunkId, version: u32) -> [u8; HEADER_USED] {
    let mut out = [0u8; HEADER_USED];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&id.to_le_bytes());
    out[16..20].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Why a header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file is shorter than a chunk header")]
    Short,
    #[error("bad magic (not an mfsha chunk file, or a different layout revision)")]
    Magic,
    #[error("header checksum mismatch")]
    Checksum,
}

/// Decodes a header into (id, version).
pub fn decode_header(bytes: &[u8]) -> Result<(ChunkId, u32), HeaderError> {
    if bytes.len() < HEADER_USED {
        return Err(HeaderError::Short);
    }
    if &bytes[..8] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..20]) != stored {
        return Err(HeaderError::Checksum);
    }
    let id = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    Ok((id, version))
}

/// Bytes of the header's version field and header CRC, rewritten by a version change.
pub const VERSION_FIELD_OFFSET: u64 = 16;

/// CRC32C of `data` as if it were followed by zeros up to a whole block.
pub fn block_crc(data: &[u8]) -> u32 {
    assert!(data.len() as u64 <= BLOCK_BYTES, "a block holds at most 64 KiB");
    let crc = crc32c::crc32c(data);
    let missing = BLOCK_BYTES as usize - data.len();
    if missing == 0 {
        return crc;
    }
    crc32c::crc32c_append(crc, &ZEROS[..missing])
}

static ZEROS: [u8; BLOCK_BYTES as usize] = [0u8; BLOCK_BYTES as usize];

/// CRC32C of a block of 64 KiB zeros (a never-written block).
pub fn zero_block_crc() -> u32 {
    static CRC: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CRC.get_or_init(|| crc32c::crc32c(&ZEROS))
}

/// A CRC table for an empty chunk: every block is zeros.
pub fn empty_crc_table() -> Vec<u8> {
    let crc = zero_block_crc().to_le_bytes();
    crc.iter().copied().cycle().take(CRC_TABLE_BYTES as usize).collect()
}

/// The blocks `[first, last]` touched by `len > 0` bytes at `offset` in the chunk.
pub fn block_range(offset: u64, len: u64) -> (u64, u64) {
    assert!(len > 0);
    assert!(offset + len <= CHUNK_BYTES);
    (offset / BLOCK_BYTES, (offset + len - 1) / BLOCK_BYTES)
}

/// Checks that `len` bytes at `offset` lie inside one chunk.
pub fn in_chunk(offset: u64, len: u64) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= CHUNK_BYTES)
}

/// Decodes `count` little-endian CRCs.
pub fn decode_crcs(bytes: &[u8]) -> Vec<u32> {
    assert!(bytes.len().is_multiple_of(4));
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

/// Encodes CRCs as little-endian bytes.
pub fn encode_crcs(crcs: &[u32]) -> Vec<u8> {
    crcs.iter().flat_map(|c| c.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_moosefs_form() {
        let name = file_name(0x1234_5678_9abc_def0, 0x2a);
        assert_eq!(name, "chunk_123456789ABCDEF0_0000002A.mfs");
        assert_eq!(parse_file_name(&name), Some((0x1234_5678_9abc_def0, 0x2a)));
        assert_eq!(parse_file_name("chunk_123_1.mfs"), None);
        assert_eq!(parse_file_name("chunk_123456789ABCDEF0_0000002A.mfs.tmp"), None);
        assert_eq!(parse_file_name(&temp_name(1, 1)), None, "temp files are not chunks");
        // Seen writing the chunk_header fuzz target: these parsed, then were opened by another name.
        assert_eq!(parse_file_name("chunk_123456789abcdef0_0000002A.mfs"), None);
        assert_eq!(parse_file_name("chunk_+23456789ABCDEF0_0000002A.mfs"), None);
    }

    #[test]
    fn subdirs_are_the_low_byte_covering_all_256() {
        assert_eq!(subdir_name(0x1234_00ff), "FF");
        assert_eq!(subdir_name(0x100), "00");
        let all: std::collections::BTreeSet<String> = (0..1024u64).map(subdir_name).collect();
        assert_eq!(all.len(), 256);
        assert!(all.iter().all(|s| s.len() == 2 && u8::from_str_radix(s, 16).is_ok()));
    }

    #[test]
    fn header_round_trips_and_detects_corruption() {
        let h = encode_header(77, 9);
        assert_eq!(decode_header(&h), Ok((77, 9)));
        for i in 0..h.len() {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(decode_header(&bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::Short));
    }

    #[test]
    fn partial_block_crc_equals_crc_of_zero_padded_block() {
        let mut block = vec![0u8; BLOCK_BYTES as usize];
        block[..5].copy_from_slice(b"hello");
        assert_eq!(block_crc(b"hello"), crc32c::crc32c(&block));
        assert_eq!(block_crc(&[]), zero_block_crc());
        assert_eq!(block_crc(&block), crc32c::crc32c(&block));
    }

    #[test]
    fn crc_detects_any_single_flipped_byte_in_a_block() {
        let block: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
        let crc = block_crc(&block);
        for i in (0..block.len()).step_by(997) {
            let mut bad = block.clone();
            bad[i] ^= 1;
            assert_ne!(block_crc(&bad), crc, "flip at {i} undetected");
        }
    }

    #[test]
    fn block_ranges() {
        assert_eq!(block_range(0, 1), (0, 0));
        assert_eq!(block_range(0, BLOCK_BYTES), (0, 0));
        assert_eq!(block_range(BLOCK_BYTES - 1, 2), (0, 1));
        assert_eq!(block_range(CHUNK_BYTES - 1, 1), (1023, 1023));
        assert!(in_chunk(CHUNK_BYTES - 10, 10));
        assert!(!in_chunk(CHUNK_BYTES - 10, 11));
        assert!(!in_chunk(u64::MAX, 2));
    }

    #[test]
    fn empty_table_is_all_zero_block_crcs() {
        let table = empty_crc_table();
        assert_eq!(table.len(), 4096);
        let crcs = decode_crcs(&table);
        assert_eq!(crcs.len(), 1024);
        assert!(crcs.iter().all(|&c| c == zero_block_crc()));
        assert_eq!(encode_crcs(&crcs), table);
    }
}
