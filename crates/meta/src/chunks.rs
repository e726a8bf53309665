//! Files as chunks: writes (create / copy-on-write / version bump), truncation, the chunk
//! table's reference counts.

use crate::model::*;
use crate::op::Outcome;
use crate::state::State;
use crate::table::Key;
use mfsha_proto::types::*;

/// How a chunk was prepared for a write or a cut.
pub(crate) struct Prepared {
    pub chunk_id: ChunkId,
    pub version: u32,
    pub previous: Option<(ChunkId, u32)>,
}

/// A truncate that ends inside a chunk: chunkservers must cut it.
pub(crate) struct Cut {
    pub chunk_id: ChunkId,
    pub version: u32,
    pub previous: (ChunkId, u32),
    pub length: u64,
}

fn next_version(version: u32) -> u32 {
    version.checked_add(1).unwrap_or(1)
}

impl State {
    pub(crate) fn write_chunk(
        &mut self,
        ino: Ino,
        index: u32,
        new_chunk_id: ChunkId,
    ) -> Result<Outcome, Status> {
        let node = self.file(ino)?;
        let current = node.chunk_at(index);
        if current == 0 || self.chunks[&current].owners.len() > 1 {
            self.check_new_chunk_id(new_chunk_id)?;
        }
        let prepared = self.prepare_chunk(ino, index, new_chunk_id);
        let node = &self.inodes[&ino];
        Ok(Outcome::ChunkWrite {
            chunk_id: prepared.chunk_id,
            version: prepared.version,
            previous: prepared.previous,
            file_size: node.size,
            goal: node.goal,
            holds_data: node.size > u64::from(index) * CHUNK_BYTES,
        })
    }

    pub(crate) fn write_chunk_end(
        &mut self,
        now: Timestamp,
        ino: Ino,
        index: u32,
        chunk_id: ChunkId,
        file_size: u64,
    ) -> Result<Outcome, Status> {
        let node = self.file(ino)?;
        if chunk_id == 0 || node.chunk_at(index) != chunk_id {
            return Err(Status::Invalid);
        }
        // A write into chunk `index` cannot reach past that chunk's end.
        if file_size > (u64::from(index) + 1) * CHUNK_BYTES || file_size > MAX_FILE_SIZE {
            return Err(Status::Invalid);
        }
        let node = self.inode_mut(ino);
        node.size = node.size.max(file_size);
        node.mtime = now;
        node.ctime = now;
        Ok(Outcome::Attr(self.attr(ino)))
    }

    pub(crate) fn set_chunk_version(
        &mut self,
        chunk_id: ChunkId,
        version: u32,
    ) -> Result<Outcome, Status> {
        let chunk = self.chunks.get_mut(&chunk_id).ok_or(Status::NotFound)?;
        chunk.version = version;
        self.mark(Key::Chunk(chunk_id));
        Ok(Outcome::Unit)
    }

    /// A regular file: `IsDir` for a directory, `Invalid` for other kinds.
    pub(crate) fn file(&self, ino: Ino) -> Result<&Inode, Status> {
        let node = self.inode(ino)?;
        match node.kind {
            FileKind::File => Ok(node),
            FileKind::Directory => Err(Status::IsDir),
            _ => Err(Status::Invalid),
        }
    }

    fn check_new_chunk_id(&self, id: ChunkId) -> Result<(), Status> {
        if id == 0 || id == u64::MAX {
            return Err(Status::Invalid);
        }
        if self.chunks.contains_key(&id) {
            return Err(Status::Exists);
        }
        Ok(())
    }

    /// Makes chunk `index` of `ino` writable: creates it as `new_id` in a hole, copies a
    /// shared chunk to `new_id`, or bumps the version of a private one. The caller has
    /// checked `new_id` when it will be used.
    fn prepare_chunk(&mut self, ino: Ino, index: u32, new_id: ChunkId) -> Prepared {
        let current = self.inodes[&ino].chunk_at(index);
        if current == 0 {
            self.attach_new_chunk(ino, index, new_id);
            return Prepared { chunk_id: new_id, version: 1, previous: None };
        }
        let chunk = self.chunks.get_mut(&current).expect("file references a known chunk");
        let old_version = chunk.version;
        if chunk.owners.len() > 1 {
            self.unref_chunk(current, ino);
            self.attach_new_chunk(ino, index, new_id);
            return Prepared {
                chunk_id: new_id,
                version: 1,
                previous: Some((current, old_version)),
            };
        }
        chunk.version = next_version(old_version);
        let version = chunk.version;
        self.mark(Key::Chunk(current));
        Prepared { chunk_id: current, version, previous: Some((current, old_version)) }
    }

    fn attach_new_chunk(&mut self, ino: Ino, index: u32, id: ChunkId) {
        let previous = self.chunks.insert(id, ChunkRec { version: 1, owners: vec![ino] });
        assert!(previous.is_none(), "chunk id {id} reused while in use");
        self.mark(Key::Chunk(id));
        self.note_chunk_id_used(id);
        self.inode_mut(ino).set_chunk(index, id);
    }

    /// Drops one reference of `ino` to chunk `id`; the chunk goes when nobody references it.
    pub(crate) fn unref_chunk(&mut self, id: ChunkId, ino: Ino) {
        let chunk = self.chunks.get_mut(&id).unwrap_or_else(|| panic!("unknown chunk {id}"));
        let at = chunk.owners.iter().position(|o| *o == ino);
        chunk.owners.remove(at.unwrap_or_else(|| panic!("chunk {id} does not list owner {ino}")));
        if chunk.owners.is_empty() {
            self.chunks.remove(&id);
        }
        self.mark(Key::Chunk(id));
    }

    pub(crate) fn check_resize(
        &self,
        node: &Inode,
        size: u64,
        cow_chunk_id: ChunkId,
    ) -> Result<(), Status> {
        match node.kind {
            FileKind::File => {}
            FileKind::Directory => return Err(Status::IsDir),
            _ => return Err(Status::Invalid),
        }
        if size > MAX_FILE_SIZE {
            return Err(Status::TooBig);
        }
        let within_chunk = size % CHUNK_BYTES;
        if size >= node.size || within_chunk == 0 {
            return Ok(());
        }
        let Ok(index) = u32::try_from(size / CHUNK_BYTES) else { return Ok(()) };
        match node.chunk_at(index) {
            0 => Ok(()),
            id if self.chunks[&id].owners.len() > 1 => self.check_new_chunk_id(cow_chunk_id),
            _ => Ok(()),
        }
    }

    /// Sets the size of a regular file. Shrinking drops the chunks wholly past the new end
    /// and, when the end falls inside a chunk, prepares that chunk to be cut.
    pub(crate) fn resize(&mut self, ino: Ino, size: u64, cow_chunk_id: ChunkId) -> Option<Cut> {
        let node = self.inode_mut(ino);
        let old_size = std::mem::replace(&mut node.size, size);
        if size >= old_size {
            return None;
        }
        let keep = size.div_ceil(CHUNK_BYTES);
        for (_, id) in node.split_chunks_from(keep) {
            self.unref_chunk(id, ino);
        }
        let index = u32::try_from(size / CHUNK_BYTES).ok()?;
        let tail = self.inodes[&ino].chunk_at(index);
        let length = size % CHUNK_BYTES;
        if length == 0 || tail == 0 {
            return None;
        }
        let prepared = self.prepare_chunk(ino, index, cow_chunk_id);
        let previous = prepared.previous.expect("cutting an existing chunk");
        let cut = Cut { chunk_id: prepared.chunk_id, version: prepared.version, previous, length };
        Some(cut)
    }
}

#[cfg(test)]
mod tests {
    //! Copy-on-write needs a chunk shared by two files, which no operation makes yet (it is
    //! what snapshots will make), so these tests share one by hand.

    use crate::op::{Entry, Op, Outcome};
    use crate::state::State;
    use crate::table::Key;
    use mfsha_proto::types::*;

    const T: Timestamp = Timestamp::new(1000, 0);

    fn run(state: &mut State, op: Op) -> Result<Outcome, Status> {
        let index = state.applied_index() + 1;
        let reply = state.apply(index, &Entry { now: T, client: None, op });
        state.check_invariants().unwrap();
        reply
    }

    fn file(state: &mut State, name: &str) -> Ino {
        let ino = state.next_free_ino();
        let op = Op::Create {
            parent: ROOT_INO,
            name: name.into(),
            ino,
            kind: FileKind::File,
            mode: 0o644,
            umask: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        run(state, op).unwrap();
        ino
    }

    /// Two files whose chunk 0 is the same chunk 10 (version 1), 1.5 chunks long.
    fn shared() -> (State, Ino, Ino) {
        let mut state = State::new(T);
        let (a, b) = (file(&mut state, "a"), file(&mut state, "b"));
        run(&mut state, Op::WriteChunk { ino: a, index: 0, new_chunk_id: 10 }).unwrap();
        let size = CHUNK_BYTES + CHUNK_BYTES / 2;
        state.inodes.get_mut(&a).unwrap().size = size;
        let node = state.inodes.get_mut(&b).unwrap();
        node.size = size;
        node.chunks = vec![(0, 10)];
        state.chunks.get_mut(&10).unwrap().owners.push(b);
        state.dirty.extend([Key::Inode(a), Key::Inode(b), Key::Chunk(10)]);
        state.check_invariants().unwrap();
        assert_eq!(state.chunk(10).unwrap().refcount, 2);
        (state, a, b)
    }

    #[test]
    fn writing_a_shared_chunk_copies_it() {
        let (mut state, a, b) = shared();
        assert_eq!(
            run(&mut state, Op::WriteChunk { ino: b, index: 0, new_chunk_id: 10 }),
            Err(Status::Exists),
            "the copy needs a fresh id"
        );
        let out = run(&mut state, Op::WriteChunk { ino: b, index: 0, new_chunk_id: 11 }).unwrap();
        let expected = Outcome::ChunkWrite {
            chunk_id: 11,
            version: 1,
            previous: Some((10, 1)),
            file_size: CHUNK_BYTES + CHUNK_BYTES / 2,
            goal: DEFAULT_GOAL,
            holds_data: true,
        };
        assert_eq!(out, expected);
        assert_eq!(state.file_chunks(a).unwrap(), vec![10]);
        assert_eq!(state.file_chunks(b).unwrap(), vec![11]);
        assert_eq!(state.chunk(10).unwrap().refcount, 1);
        assert_eq!(state.chunk(11).unwrap().refcount, 1);
    }

    #[test]
    fn truncating_into_a_shared_chunk_copies_it() {
        let (mut state, a, b) = shared();
        let set = SetAttr { size: Some(100), ..SetAttr::default() };
        let cut = |cow_chunk_id| Op::SetAttr { ino: b, set: set.clone(), cow_chunk_id };
        assert_eq!(run(&mut state, cut(0)), Err(Status::Invalid));
        assert_eq!(run(&mut state, cut(10)), Err(Status::Exists));
        assert_eq!(state.getattr(b).unwrap().size, CHUNK_BYTES + CHUNK_BYTES / 2, "no effect");
        match run(&mut state, cut(12)).unwrap() {
            Outcome::Truncated { attr, chunk_id, version, previous, length } => {
                assert_eq!(
                    (attr.size, chunk_id, version, previous, length),
                    (100, 12, 1, (10, 1), 100)
                );
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        assert_eq!(state.file_chunks(a).unwrap(), vec![10]);
        assert_eq!(state.file_chunks(b).unwrap(), vec![12]);
        assert_eq!(state.next_free_chunk_id(), 13);
        // Dropping the only other reference deletes the chunk.
        run(
            &mut state,
            Op::SetAttr { ino: a, set: SetAttr { size: Some(0), ..set }, cow_chunk_id: 0 },
        )
        .unwrap();
        assert_eq!(state.chunk(10), None);
    }
}
