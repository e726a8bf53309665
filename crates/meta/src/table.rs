//! Persisted tables and their keys.
//!
//! Every record is `(table, key, value)` with a postcard-encoded value. Keys:
//!
//! | table | key | value |
//! |---|---|---|
//! | `inode` | ino (u64 BE) | inode record |
//! | `dirent` | parent (u64 BE) ++ name bytes | child ino |
//! | `chunk` | chunk id (u64 BE) | version + owners |
//! | `xattr` | ino (u64 BE) ++ name bytes | value bytes |
//! | `session` | session (u64 BE) | session record |
//! | `session` | session (u64 BE) ++ ino (u64 BE) | open count of that inode by that session |
//! | `session` | session (u64 BE) ++ `r` ++ slot (u64 BE) | (seq, reply) of the last mutation in that slot (seq mod 64; exactly-once) |
//! | `trash` | ino (u64 BE) | original place and deletion time |
//! | `meta` | short ASCII name | u64 (`cluster_time`: a timestamp) |
//!
//! Big-endian numbers make RocksDB's byte order equal numeric order.

use mfsha_proto::types::{ChunkId, Ino, SessionId};

/// A persisted table; each becomes one RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Inode,
    Dirent,
    Chunk,
    Xattr,
    Session,
    Trash,
    Meta,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Inode,
        Table::Dirent,
        Table::Chunk,
        Table::Xattr,
        Table::Session,
        Table::Trash,
        Table::Meta,
    ];

    /// The column family name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Inode => "inode",
            Table::Dirent => "dirent",
            Table::Chunk => "chunk",
            Table::Xattr => "xattr",
            Table::Session => "session",
            Table::Trash => "trash",
            Table::Meta => "meta",
        }
    }

    /// The table with this column family name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Position in [`Table::ALL`]; also the table's tag byte in snapshots.
    pub fn tag(self) -> u8 {
        self as u8
    }

    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.get(usize::from(tag)).copied()
    }
}

/// One stored record: (table, key, value).
pub type Record = (Table, Vec<u8>, Vec<u8>);

/// One changed record: `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The fixed keys of the `meta` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum MetaKey {
    AppliedIndex,
    NextIno,
    NextChunkId,
    /// The latest time an applied entry carried (see `State::cluster_time`).
    ClusterTime,
    /// The address book of the master group (see [`crate::model::Member`]).
    Members,
}

impl MetaKey {
    pub const ALL: [MetaKey; 5] = [
        MetaKey::AppliedIndex,
        MetaKey::NextIno,
        MetaKey::NextChunkId,
        MetaKey::ClusterTime,
        MetaKey::Members,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MetaKey::AppliedIndex => "applied_index",
            MetaKey::NextIno => "next_ino",
            MetaKey::NextChunkId => "next_chunk_id",
            MetaKey::ClusterTime => "cluster_time",
            MetaKey::Members => "members",
        }
    }
}

/// A typed record key. The state remembers which keys an apply touched and encodes their
/// current values only when the driver takes the changes, so a record changed many times in
/// one batch is encoded once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    Inode(Ino),
    Dirent(Ino, String),
    Chunk(ChunkId),
    Xattr(Ino, String),
    Session(SessionId),
    Acquired(SessionId, Ino),
    Reply(SessionId, u64),
    Trash(Ino),
    Meta(MetaKey),
}

impl Key {
    pub fn table(&self) -> Table {
        match self {
            Key::Inode(_) => Table::Inode,
            Key::Dirent(..) => Table::Dirent,
            Key::Chunk(_) => Table::Chunk,
            Key::Xattr(..) => Table::Xattr,
            Key::Session(_) | Key::Acquired(..) | Key::Reply(..) => Table::Session,
            Key::Trash(_) => Table::Trash,
            Key::Meta(_) => Table::Meta,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Key::Inode(n) | Key::Chunk(n) | Key::Session(n) | Key::Trash(n) => {
                n.to_be_bytes().to_vec()
            }
            Key::Dirent(n, name) | Key::Xattr(n, name) => {
                let mut key = Vec::with_capacity(8 + name.len());
                key.extend_from_slice(&n.to_be_bytes());
                key.extend_from_slice(name.as_bytes());
                key
            }
            Key::Acquired(session, ino) => {
                let mut key = session.to_be_bytes().to_vec();
                key.extend_from_slice(&ino.to_be_bytes());
                key
            }
            Key::Reply(session, seq) => {
                let mut key = session.to_be_bytes().to_vec();
                key.push(REPLY_TAG);
                key.extend_from_slice(&seq.to_be_bytes());
                key
            }
            Key::Meta(m) => m.name().as_bytes().to_vec(),
        }
    }

    /// The key stored as `bytes` in `table`, or why it is not a valid key there.
    pub fn decode(table: Table, bytes: &[u8]) -> Result<Key, String> {
        match table {
            Table::Inode => Ok(Key::Inode(be_u64(bytes)?)),
            Table::Chunk => Ok(Key::Chunk(be_u64(bytes)?)),
            Table::Trash => Ok(Key::Trash(be_u64(bytes)?)),
            Table::Dirent => {
                let (n, name) = id_and_name(bytes)?;
                Ok(Key::Dirent(n, name))
            }
            Table::Xattr => {
                let (n, name) = id_and_name(bytes)?;
                Ok(Key::Xattr(n, name))
            }
            Table::Session if bytes.len() == 17 && bytes[8] == REPLY_TAG => {
                Ok(Key::Reply(be_u64(&bytes[..8])?, be_u64(&bytes[9..])?))
            }
            Table::Session if bytes.len() == 16 => {
                Ok(Key::Acquired(be_u64(&bytes[..8])?, be_u64(&bytes[8..])?))
            }
            Table::Session => Ok(Key::Session(be_u64(bytes)?)),
            Table::Meta => MetaKey::ALL
                .into_iter()
                .find(|m| m.name().as_bytes() == bytes)
                .map(Key::Meta)
                .ok_or_else(|| "unknown meta key".to_string()),
        }
    }
}

/// The byte between session id and seq in a stored reply's key (its length, 17, already
/// tells it from the 8-byte session and the 16-byte acquisition keys).
const REPLY_TAG: u8 = b'r';

fn be_u64(bytes: &[u8]) -> Result<u64, String> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("key is {} bytes, expected an 8-byte big-endian id", bytes.len()))?;
    Ok(u64::from_be_bytes(array))
}

fn id_and_name(bytes: &[u8]) -> Result<(u64, String), String> {
    if bytes.len() < 8 {
        return Err(format!("key is {} bytes, expected 8-byte id plus a name", bytes.len()));
    }
    let id = be_u64(&bytes[..8])?;
    let name = std::str::from_utf8(&bytes[8..]).map_err(|e| format!("name is not UTF-8: {e}"))?;
    Ok((id, name.to_string()))
}

/// Lower-case hex, for naming keys in errors.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        let keys = [
            Key::Inode(7),
            Key::Dirent(1, "a/b".into()),
            Key::Chunk(u64::MAX),
            Key::Xattr(3, "user.x".into()),
            Key::Session(5),
            Key::Acquired(5, 9),
            Key::Reply(5, 70),
            Key::Trash(2),
            Key::Meta(MetaKey::NextChunkId),
        ];
        for key in keys {
            assert_eq!(Key::decode(key.table(), &key.encode()).unwrap(), key);
        }
        assert!(Key::Inode(255).encode() < Key::Inode(256).encode());
        assert!(Key::decode(Table::Inode, &[1, 2, 3]).unwrap_err().contains("3 bytes"));
        assert!(Key::decode(Table::Meta, b"nope").is_err());
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
            assert_eq!(Table::from_tag(table.tag()), Some(table));
        }
    }
}
