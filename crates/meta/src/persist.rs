//! The state as records (for RocksDB) and as one snapshot blob (for Raft and the metalogger),
//! and back.
//!
//! Snapshot layout (all integers little-endian):
//!
//! ```text
//! magic "MFSHMETA" | format u32 | applied_index u64 | record_count u64 |
//! record_count × (table u8 | key_len u32 | key | value_len u32 | value) | crc32c u32
//! ```
//!
//! The CRC32C covers every byte before it.

use crate::model::*;
use crate::state::State;
use crate::table::{hex, Key, MetaKey, Record, Table};
use mfsha_proto::types::*;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};

const MAGIC: &[u8; 8] = b"MFSHMETA";
/// Snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8;
const CRC_BYTES: usize = 4;

/// Why stored metadata could not be loaded. Each names what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("metadata record {table}/{key}: {reason}")]
    Record { table: &'static str, key: String, reason: String },
    #[error("metadata has no {what}; the store or snapshot is incomplete")]
    Missing { what: String },
    #[error("metadata snapshot ({len} bytes) is corrupt: {reason}")]
    Snapshot { len: usize, reason: String },
    #[error("metadata snapshot format {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
    #[error(
        "metadata snapshot ({len} bytes) fails its checksum (stored {stored:#010x}, computed \
         {computed:#010x}): it is truncated or damaged; fetch it again"
    )]
    Checksum { len: usize, stored: u32, computed: u32 },
    #[error("metadata violates {} invariant(s): {}", .0.len(), .0.join("; "))]
    Inconsistent(Vec<String>),
}

impl State {
    /// Every record of the state, sorted by (table, key).
    pub fn all_records(&self) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut records: Vec<(Table, Vec<u8>, Vec<u8>)> = self
            .all_keys()
            .into_iter()
            .map(|key| {
                let value = self.record(&key).expect("all_keys lists existing records");
                (key.table(), key.encode(), value)
            })
            .collect();
        records.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        records
    }

    fn all_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.inodes.keys().map(|i| Key::Inode(*i)).collect();
        for (parent, entries) in &self.dirs {
            keys.extend(entries.keys().map(|name| Key::Dirent(*parent, name.clone())));
        }
        keys.extend(self.chunks.keys().map(|id| Key::Chunk(*id)));
        for (ino, attrs) in &self.xattrs {
            keys.extend(attrs.keys().map(|name| Key::Xattr(*ino, name.clone())));
        }
        for (id, session) in &self.sessions {
            keys.push(Key::Session(*id));
            keys.extend(session.acquired.keys().map(|ino| Key::Acquired(*id, *ino)));
        }
        keys.extend(self.trash.keys().map(|ino| Key::Trash(*ino)));
        keys.extend(MetaKey::ALL.map(Key::Meta));
        keys
    }

    /// Rebuilds a state from its records (from [`State::all_records`] or from the changes
    /// taken so far written into a store) and checks its invariants.
    pub fn load(
        records: impl IntoIterator<Item = (Table, Vec<u8>, Vec<u8>)>,
    ) -> Result<State, LoadError> {
        let mut loader = Loader::default();
        for (table, key, value) in records {
            loader.add(table, &key, &value).map_err(|reason| LoadError::Record {
                table: table.name(),
                key: hex(&key),
                reason,
            })?;
        }
        let state = loader.finish()?;
        state.check_invariants().map_err(LoadError::Inconsistent)?;
        Ok(state)
    }

    /// The whole state as one self-describing, versioned, CRC32C-checked blob.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let records = self.all_records();
        let mut out = Vec::with_capacity(HEADER_BYTES + records.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&(records.len() as u64).to_le_bytes());
        for (table, key, value) in &records {
            out.push(table.tag());
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The inverse of [`State::to_snapshot`]; never panics on damaged input.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, LoadError> {
        let len = bytes.len();
        let corrupt = |reason: String| LoadError::Snapshot { len, reason };
        if len < HEADER_BYTES + CRC_BYTES {
            return Err(corrupt(format!(
                "shorter than the {} bytes of header and checksum",
                HEADER_BYTES + CRC_BYTES
            )));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt("does not start with \"MFSHMETA\": not an mfsha snapshot".into()));
        }
        let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if found != SNAPSHOT_FORMAT {
            return Err(LoadError::Version { found, supported: SNAPSHOT_FORMAT });
        }
        let (body, crc) = bytes.split_at(len - CRC_BYTES);
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(LoadError::Checksum { len, stored, computed });
        }
        let records = parse_records(body).map_err(corrupt)?;
        let applied_index = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let state = State::load(records)?;
        if state.applied_index != applied_index {
            return Err(corrupt(format!(
                "header says applied index {applied_index}, records say {}",
                state.applied_index
            )));
        }
        Ok(state)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("records are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the records of a checksummed snapshot body, bounds-checking every length.
fn parse_records(body: &[u8]) -> Result<Vec<Record>, String> {
    let count = u64::from_le_bytes(body[20..28].try_into().expect("8 bytes"));
    let mut cursor = Cursor { bytes: body, at: HEADER_BYTES };
    // Each record takes at least 9 bytes, which bounds the allocation by the input size.
    let mut records = Vec::with_capacity(count.min((body.len() / 9) as u64) as usize);
    for n in 0..count {
        let tag = cursor.take(1).map_err(|e| format!("record {n}: {e}"))?[0];
        let table = Table::from_tag(tag).ok_or(format!("record {n}: unknown table tag {tag}"))?;
        let key = cursor.take_prefixed().map_err(|e| format!("record {n} key: {e}"))?;
        let value = cursor.take_prefixed().map_err(|e| format!("record {n} value: {e}"))?;
        records.push((table, key.to_vec(), value.to_vec()));
    }
    if cursor.at != body.len() {
        return Err(format!("{} bytes after the last record", body.len() - cursor.at));
    }
    Ok(records)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(format!("needs {n} bytes at offset {}, body ends first", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn take_prefixed(&mut self) -> Result<&'a [u8], String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }
}

fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    postcard::from_bytes(value).map_err(|e| format!("value does not decode: {e}"))
}

/// Collects records of any order, then builds the derived indexes.
#[derive(Default)]
struct Loader {
    inodes: Vec<(Ino, Inode)>,
    dirents: Vec<(Ino, String, Ino)>,
    chunks: Vec<(ChunkId, ChunkRec)>,
    xattrs: Vec<(Ino, String, Vec<u8>)>,
    sessions: Vec<(SessionId, SessionRec)>,
    acquired: Vec<(SessionId, Ino, u32)>,
    trash: Vec<(Ino, TrashRec)>,
    meta: BTreeMap<MetaKey, u64>,
    seen: HashSet<(Table, Vec<u8>)>,
}

impl Loader {
    fn add(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), String> {
        if !self.seen.insert((table, key.to_vec())) {
            return Err("record appears twice".into());
        }
        match Key::decode(table, key)? {
            Key::Inode(ino) => self.inodes.push((ino, decode(value)?)),
            Key::Dirent(parent, name) => self.dirents.push((parent, name, decode(value)?)),
            Key::Chunk(id) => self.chunks.push((id, decode(value)?)),
            Key::Xattr(ino, name) => {
                let bytes: serde_bytes::ByteBuf = decode(value)?;
                self.xattrs.push((ino, name, bytes.into_vec()));
            }
            Key::Session(id) => self.sessions.push((id, decode(value)?)),
            Key::Acquired(id, ino) => self.acquired.push((id, ino, decode(value)?)),
            Key::Trash(ino) => self.trash.push((ino, decode(value)?)),
            Key::Meta(meta) => {
                self.meta.insert(meta, decode(value)?);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<State, LoadError> {
        let mut state = State::empty();
        for meta in MetaKey::ALL {
            let value = self.meta.get(&meta).copied();
            let value =
                value.ok_or(LoadError::Missing { what: format!("meta/{}", meta.name()) })?;
            match meta {
                MetaKey::AppliedIndex => state.applied_index = value,
                MetaKey::NextIno => state.next_ino = value,
                MetaKey::NextChunkId => state.next_chunk_id = value,
            }
        }
        for (ino, inode) in self.inodes {
            if inode.is_dir() {
                state.dirs.insert(ino, BTreeMap::new());
            }
            state.inodes.insert(ino, inode);
        }
        if !state.inodes.contains_key(&ROOT_INO) {
            return Err(LoadError::Missing { what: format!("root inode {ROOT_INO}") });
        }
        for (parent, name, child) in self.dirents {
            let Some(entries) = state.dirs.get_mut(&parent) else {
                let key = Key::Dirent(parent, name);
                return Err(record_error(&key, format!("parent {parent} is not a directory")));
            };
            entries.insert(name, child);
        }
        state.chunks.extend(self.chunks);
        for (ino, name, value) in self.xattrs {
            state.xattrs.entry(ino).or_default().insert(name, value);
        }
        for (id, rec) in self.sessions {
            state.sessions.insert(id, Session { rec, acquired: BTreeMap::new() });
        }
        for (id, ino, count) in self.acquired {
            let Some(session) = state.sessions.get_mut(&id) else {
                let key = Key::Acquired(id, ino);
                return Err(record_error(&key, format!("session {id} does not exist")));
            };
            session.acquired.insert(ino, count);
            state.holders.entry(ino).or_default().insert(id);
        }
        state.trash.extend(self.trash);
        state.sustained = state
            .inodes
            .iter()
            .filter(|(ino, node)| node.nlink == 0 && !state.trash.contains_key(ino))
            .map(|(ino, _)| *ino)
            .collect();
        Ok(state)
    }
}

fn record_error(key: &Key, reason: String) -> LoadError {
    LoadError::Record { table: key.table().name(), key: hex(&key.encode()), reason }
}
