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
use crate::state::{encode, State};
use crate::table::{hex, Key, MetaKey, Record, Table};
use mfsha_proto::types::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"MFSHMETA";
/// Snapshot format version this build writes and reads. 2: sessions keep their open token,
/// and `meta/cluster_time` exists.
pub const SNAPSHOT_FORMAT: u32 = 3;
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
    pub fn all_records(&self) -> Vec<Record> {
        let mut records = Vec::with_capacity(self.inodes.len() * 2 + 8);
        self.visit_records(&mut |table, key, value| {
            records.push((table, key.to_vec(), value.to_vec()));
        });
        records
    }

    /// Calls `visit` with every record in (table, key) order. Walks the maps in key order
    /// instead of sorting a list of records, so it stays fast on millions of inodes.
    pub fn visit_records(&self, visit: &mut RecordVisitor) {
        for ino in sorted(self.inodes.keys()) {
            visit(Table::Inode, &ino.to_be_bytes(), &encode(&self.inodes[&ino]));
        }
        let mut key = Vec::with_capacity(8 + NAME_MAX);
        for parent in sorted(self.dirs.keys()) {
            for (name, child) in &self.dirs[&parent] {
                id_and_name(&mut key, parent, name);
                visit(Table::Dirent, &key, &encode(child));
            }
        }
        for id in sorted(self.chunks.keys()) {
            visit(Table::Chunk, &id.to_be_bytes(), &encode(&self.chunks[&id]));
        }
        for ino in sorted(self.xattrs.keys()) {
            for (name, value) in &self.xattrs[&ino] {
                id_and_name(&mut key, ino, name);
                visit(Table::Xattr, &key, &encode(&serde_bytes::Bytes::new(value)));
            }
        }
        for (id, session) in &self.sessions {
            visit(Table::Session, &id.to_be_bytes(), &encode(&session.rec));
            for (ino, count) in &session.acquired {
                let key = Key::Acquired(*id, *ino).encode();
                visit(Table::Session, &key, &encode(count));
            }
            for (slot, stored) in &session.replies {
                visit(Table::Session, &Key::Reply(*id, *slot).encode(), &encode(stored));
            }
        }
        for (ino, rec) in self.trash.iter() {
            visit(Table::Trash, &ino.to_be_bytes(), &encode(rec));
        }
        let mut metas = MetaKey::ALL;
        metas.sort_unstable_by_key(|m| m.name());
        for meta in metas {
            visit(Table::Meta, meta.name().as_bytes(), &self.meta_record(meta));
        }
    }

    /// Rebuilds a state from its records (from [`State::all_records`] or from the changes
    /// taken so far written into a store), in any order, and checks its invariants.
    pub fn load(records: impl IntoIterator<Item = Record>) -> Result<State, LoadError> {
        let mut loader = Loader::default();
        for (table, key, value) in records {
            loader.add(table, &key, &value)?;
        }
        loader.finish()
    }

    /// The whole state as one self-describing, versioned, CRC32C-checked blob.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut writer = SnapshotWriter::new(self.applied_index, self.inodes.len() * 128);
        self.visit_records(&mut |table, key, value| writer.add(table, key, value));
        writer.finish()
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
        let mut loader = Loader::default();
        read_records(body, &mut loader).map_err(|e| match e {
            ReadError::Format(reason) => corrupt(reason),
            ReadError::Load(error) => error,
        })?;
        let state = loader.finish()?;
        let applied_index = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        if state.applied_index != applied_index {
            return Err(corrupt(format!(
                "header says applied index {applied_index}, records say {}",
                state.applied_index
            )));
        }
        Ok(state)
    }
}

/// Builds a snapshot blob (the format of [`State::to_snapshot`]) from records handed in one by
/// one: the Raft node builds its snapshots from the stored tables with it, off its own thread,
/// instead of walking the live state. The records may come in any order (the loader sorts out
/// dependencies), but every record of the state must come exactly once.
pub struct SnapshotWriter {
    out: Vec<u8>,
    count: u64,
}

impl SnapshotWriter {
    /// A blob of the state at `applied_index`; `capacity` bytes are reserved up front (a good
    /// guess saves the copies of a growing buffer, which briefly doubles its memory).
    pub fn new(applied_index: u64, capacity: usize) -> SnapshotWriter {
        let mut out = Vec::with_capacity(HEADER_BYTES + capacity + CRC_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        out.extend_from_slice(&applied_index.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // record count, patched by finish
        SnapshotWriter { out, count: 0 }
    }

    pub fn add(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.out.push(table.tag());
        put_bytes(&mut self.out, key);
        put_bytes(&mut self.out, value);
        self.count += 1;
    }

    /// The finished blob: record count patched in, checksum appended.
    pub fn finish(mut self) -> Vec<u8> {
        self.out[20..28].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&self.out);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out
    }
}

/// Receives (table, key, value) of each record.
pub type RecordVisitor<'a> = dyn FnMut(Table, &[u8], &[u8]) + 'a;

fn sorted<'a>(ids: impl Iterator<Item = &'a u64>) -> Vec<u64> {
    let mut ids: Vec<u64> = ids.copied().collect();
    ids.sort_unstable();
    ids
}

/// Writes `id (u64 BE) ++ name` into `key`.
fn id_and_name(key: &mut Vec<u8>, id: u64, name: &str) {
    key.clear();
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("records are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

enum ReadError {
    /// The snapshot's framing is wrong.
    Format(String),
    /// A record is wrong.
    Load(LoadError),
}

/// Feeds the records of a checksummed snapshot body to `loader`, bounds-checking every
/// length.
fn read_records(body: &[u8], loader: &mut Loader) -> Result<(), ReadError> {
    let count = u64::from_le_bytes(body[20..28].try_into().expect("8 bytes"));
    let mut cursor = Cursor { bytes: body, at: HEADER_BYTES };
    let format = ReadError::Format;
    for n in 0..count {
        let tag = cursor.take(1).map_err(|e| format(format!("record {n}: {e}")))?[0];
        let table = Table::from_tag(tag)
            .ok_or_else(|| format(format!("record {n}: unknown table tag {tag}")))?;
        let key = cursor.take_prefixed().map_err(|e| format(format!("record {n} key: {e}")))?;
        let value = cursor.take_prefixed().map_err(|e| format(format!("record {n} value: {e}")))?;
        loader.add(table, key, value).map_err(ReadError::Load)?;
    }
    if cursor.at != body.len() {
        return Err(format(format!("{} bytes after the last record", body.len() - cursor.at)));
    }
    Ok(())
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

fn record_error(key: &Key, reason: impl Into<String>) -> LoadError {
    LoadError::Record { table: key.table().name(), key: hex(&key.encode()), reason: reason.into() }
}

/// Builds a state from records in any order: records that depend on others (directory
/// entries, acquisitions) wait until everything is in.
struct Loader {
    state: State,
    dirents: Vec<(Ino, String, Ino)>,
    acquired: Vec<(SessionId, Ino, u32)>,
    replies: Vec<(SessionId, u64, StoredReply)>,
    /// Encoded values, decoded by `finish` (not every meta value is a u64).
    meta: BTreeMap<MetaKey, Vec<u8>>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader {
            state: State::empty(),
            dirents: vec![],
            acquired: vec![],
            replies: vec![],
            meta: BTreeMap::new(),
        }
    }
}

impl Loader {
    fn add(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        let error =
            |reason: String| LoadError::Record { table: table.name(), key: hex(key), reason };
        let typed = Key::decode(table, key).map_err(error)?;
        match self.insert(typed, value) {
            Ok(true) => Ok(()),
            Ok(false) => Err(error("record appears twice".into())),
            Err(reason) => Err(error(reason)),
        }
    }

    /// Stores one decoded record; `false` if its key was already present.
    fn insert(&mut self, key: Key, value: &[u8]) -> Result<bool, String> {
        let state = &mut self.state;
        Ok(match key {
            Key::Inode(ino) => state.insert_inode(ino, Box::new(decode(value)?)).is_none(),
            Key::Dirent(parent, name) => {
                self.dirents.push((parent, name, decode(value)?));
                true
            }
            Key::Chunk(id) => state.chunks.insert(id, decode(value)?).is_none(),
            Key::Xattr(ino, name) => {
                let bytes: serde_bytes::ByteBuf = decode(value)?;
                state.xattrs.entry(ino).or_default().insert(name, bytes.into_vec()).is_none()
            }
            Key::Session(id) => {
                let session = Session {
                    rec: decode(value)?,
                    acquired: BTreeMap::new(),
                    replies: BTreeMap::new(),
                };
                state.sessions.insert(id, session).is_none()
            }
            Key::Acquired(id, ino) => {
                self.acquired.push((id, ino, decode(value)?));
                true
            }
            Key::Reply(id, slot) => {
                let stored: StoredReply = decode(value)?;
                if reply_slot(stored.0) != slot {
                    return Err(format!("reply to seq {} stored in slot {slot}", stored.0));
                }
                self.replies.push((id, slot, stored));
                true
            }
            // Its expiry is fixed in `finish`, once its inode (and trash time) is loaded.
            Key::Trash(ino) => state.trash.insert(ino, decode(value)?, 0),
            Key::Meta(meta) => self.meta.insert(meta, value.to_vec()).is_none(),
        })
    }

    fn finish(mut self) -> Result<State, LoadError> {
        for meta in MetaKey::ALL {
            let value = self.meta.get(&meta);
            let value =
                value.ok_or(LoadError::Missing { what: format!("meta/{}", meta.name()) })?;
            let error = |reason| record_error(&Key::Meta(meta), reason);
            match meta {
                MetaKey::AppliedIndex => self.state.applied_index = decode(value).map_err(error)?,
                MetaKey::NextIno => self.state.next_ino = decode(value).map_err(error)?,
                MetaKey::NextChunkId => self.state.next_chunk_id = decode(value).map_err(error)?,
                MetaKey::ClusterTime => self.state.cluster_time = decode(value).map_err(error)?,
                MetaKey::Members => self.state.members = decode(value).map_err(error)?,
            }
        }
        let state = &mut self.state;
        if !state.inodes.contains_key(&ROOT_INO) {
            return Err(LoadError::Missing { what: format!("root inode {ROOT_INO}") });
        }
        let dirs: Vec<Ino> =
            state.inodes.iter().filter(|(_, n)| n.is_dir()).map(|(i, _)| *i).collect();
        state.dirs.extend(dirs.into_iter().map(|ino| (ino, BTreeMap::new())));
        for (parent, name, child) in std::mem::take(&mut self.dirents) {
            let key = Key::Dirent(parent, name.clone());
            let entries = state.dirs.get_mut(&parent);
            let entries = entries
                .ok_or_else(|| record_error(&key, format!("parent {parent} is not a directory")))?;
            if entries.insert(name, child).is_some() {
                return Err(record_error(&key, "record appears twice"));
            }
        }
        for (id, ino, count) in std::mem::take(&mut self.acquired) {
            let key = Key::Acquired(id, ino);
            let session = state.sessions.get_mut(&id);
            let session = session
                .ok_or_else(|| record_error(&key, format!("session {id} does not exist")))?;
            if session.acquired.insert(ino, count).is_some() {
                return Err(record_error(&key, "record appears twice"));
            }
            state.holders.entry(ino).or_default().insert(id);
        }
        for (id, slot, stored) in std::mem::take(&mut self.replies) {
            let key = Key::Reply(id, slot);
            let session = state.sessions.get_mut(&id);
            let session = session
                .ok_or_else(|| record_error(&key, format!("session {id} does not exist")))?;
            if session.replies.insert(slot, stored).is_some() {
                return Err(record_error(&key, "record appears twice"));
            }
        }
        let trashed: Vec<Ino> = state.trash.iter().map(|(ino, _)| *ino).collect();
        for ino in trashed {
            // A missing inode is reported by the invariants below.
            let seconds = state.inodes.get(&ino).map_or(0, |node| node.trash_seconds);
            state.trash.retime(ino, seconds);
        }
        let unlinked = state.inodes.iter().filter(|(_, node)| node.nlink == 0);
        state.sustained =
            unlinked.map(|(ino, _)| *ino).filter(|ino| !state.trash.contains_key(ino)).collect();
        state.check_invariants().map_err(LoadError::Inconsistent)?;
        Ok(self.state)
    }
}
