//! A small driver for tests: applies entries at consecutive indexes with a clock that moves
//! forward one second per entry, and checks every invariant after every entry.

#![allow(dead_code)]

use mfsha_meta::{ClientTag, Entry, Op, Outcome, Record, State, Table};
use mfsha_proto::types::*;

pub const T0: Timestamp = Timestamp::new(1_700_000_000, 0);

pub struct Fs {
    pub state: State,
    pub now: Timestamp,
    /// Every entry applied, in order (index = position + 1).
    pub log: Vec<Entry>,
}

impl Fs {
    pub fn new() -> Fs {
        Fs { state: State::new(T0), now: T0, log: Vec::new() }
    }

    /// Applies `op` untagged at the next index and checks the invariants.
    pub fn run(&mut self, op: Op) -> Result<Outcome, Status> {
        self.apply(None, op)
    }

    pub fn run_tagged(&mut self, session: SessionId, seq: u64, op: Op) -> Result<Outcome, Status> {
        self.apply(Some(ClientTag { session, seq }), op)
    }

    pub fn apply(&mut self, client: Option<ClientTag>, op: Op) -> Result<Outcome, Status> {
        self.now.secs += 1;
        let entry = Entry { now: self.now, client, op };
        self.apply_entry(entry)
    }

    pub fn apply_entry(&mut self, entry: Entry) -> Result<Outcome, Status> {
        let index = self.state.applied_index() + 1;
        let reply = self.state.apply(index, &entry);
        self.log.push(entry);
        if let Err(problems) = self.state.check_invariants() {
            panic!("invariants broken after entry {index}: {problems:#?}");
        }
        reply
    }

    pub fn create_in(&mut self, parent: Ino, name: &str) -> Result<Attr, Status> {
        let ino = self.state.next_free_ino();
        let op = Op::Create {
            parent,
            name: name.into(),
            ino,
            kind: FileKind::File,
            mode: 0o644,
            umask: 0o022,
            uid: 1000,
            gid: 1000,
            rdev: 0,
        };
        self.run(op).map(as_attr)
    }

    pub fn mkdir_in(&mut self, parent: Ino, name: &str) -> Result<Attr, Status> {
        let ino = self.state.next_free_ino();
        let op = Op::Mkdir {
            parent,
            name: name.into(),
            ino,
            mode: 0o755,
            umask: 0o022,
            uid: 1000,
            gid: 1000,
        };
        self.run(op).map(as_attr)
    }

    /// Creates a regular file; panics on failure.
    pub fn file(&mut self, parent: Ino, name: &str) -> Ino {
        self.create_in(parent, name).expect("create").ino
    }

    /// Creates a directory; panics on failure.
    pub fn dir(&mut self, parent: Ino, name: &str) -> Ino {
        self.mkdir_in(parent, name).expect("mkdir").ino
    }

    /// Writes `len` bytes at chunk `index` the way a client does: WriteChunk, WriteChunkEnd.
    pub fn write(&mut self, ino: Ino, index: u32, end_in_chunk: u64) -> ChunkId {
        let new_chunk_id = self.state.next_free_chunk_id();
        let chunk_id = match self.run(Op::WriteChunk { ino, index, new_chunk_id }) {
            Ok(Outcome::ChunkWrite { chunk_id, .. }) => chunk_id,
            other => panic!("WriteChunk gave {other:?}"),
        };
        let file_size = u64::from(index) * CHUNK_BYTES + end_in_chunk;
        self.run(Op::WriteChunkEnd { ino, index, chunk_id, file_size }).expect("WriteChunkEnd");
        chunk_id
    }

    pub fn getattr(&self, ino: Ino) -> Attr {
        self.state.getattr(ino).expect("getattr")
    }

    pub fn path(&self, path: &str) -> Result<Ino, Status> {
        self.state.resolve_path(ROOT_INO, path)
    }

    pub fn set_trash(&mut self, ino: Ino, seconds: u32) {
        self.run(Op::SetTrashTime { ino, seconds, recursive: true }).expect("set trash time");
    }
}

pub fn as_attr(outcome: Outcome) -> Attr {
    match outcome {
        Outcome::Attr(attr) => attr,
        other => panic!("expected Outcome::Attr, got {other:?}"),
    }
}

pub fn rename(parent: Ino, name: &str, new_parent: Ino, new_name: &str, flags: u32) -> Op {
    Op::Rename { parent, name: name.into(), new_parent, new_name: new_name.into(), flags }
}

pub fn unlink(parent: Ino, name: &str) -> Op {
    Op::Unlink { parent, name: name.into() }
}

pub fn rmdir(parent: Ino, name: &str) -> Op {
    Op::Rmdir { parent, name: name.into() }
}

pub fn names(state: &State, dir: Ino) -> Vec<String> {
    let (entries, more) = state.readdir(dir, 0, u32::MAX).expect("readdir");
    assert!(!more);
    entries.into_iter().map(|e| e.name).collect()
}

/// Every record except the applied index and the cluster time (every entry moves them):
/// what an entry that "changes nothing" must leave exactly as it was.
pub fn logical_records(state: &State) -> Vec<Record> {
    let mut records = state.all_records();
    let moves = |key: &[u8]| key == b"applied_index" || key == b"cluster_time";
    records.retain(|(table, key, _)| !(*table == Table::Meta && moves(key)));
    records
}
