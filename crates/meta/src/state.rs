//! [`State`]: the whole metadata in memory, `apply` and the change tracking.

use crate::idmap::IdMap;
use crate::model::*;
use crate::op::{ClientTag, Entry, Op, Outcome};
use crate::table::{Change, Key, MetaKey};
use crate::trash::Trash;
use mfsha_proto::types::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The metadata of one filesystem, as of `applied_index`.
///
/// Changed only by [`State::apply`] (and built by [`State::new`], [`State::load`] and
/// [`State::from_snapshot`]); everything else reads.
#[derive(Debug, Clone)]
pub struct State {
    /// Boxed: a map slot is then 16 bytes, and a map at half load wastes little.
    pub(crate) inodes: IdMap<Ino, Box<Inode>>,
    /// Entries of every directory (an empty map for an empty directory), sorted by name.
    pub(crate) dirs: IdMap<Ino, BTreeMap<String, Ino>>,
    pub(crate) xattrs: IdMap<Ino, BTreeMap<String, Vec<u8>>>,
    pub(crate) chunks: IdMap<ChunkId, ChunkRec>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) trash: Trash,
    /// Derived: unlinked files kept because a session holds them.
    pub(crate) sustained: BTreeSet<Ino>,
    /// Derived: which sessions hold each acquired inode.
    pub(crate) holders: IdMap<Ino, BTreeSet<SessionId>>,
    pub(crate) applied_index: u64,
    pub(crate) next_ino: Ino,
    pub(crate) next_chunk_id: ChunkId,
    /// The latest time an applied entry carried: apply stamps `max(entry.now, cluster_time)`.
    pub(crate) cluster_time: Timestamp,
    /// The master group's address book: node id → where it is reached.
    pub(crate) members: BTreeMap<u64, Member>,
    /// Records touched since the last `take_changes`.
    pub(crate) dirty: HashSet<Key>,
    /// Derived: how many inodes are directories and regular files, kept as inodes come and
    /// go so that [`State::counts`] (every `mfsha status`) does not walk millions of inodes
    /// under the lock the apply thread waits for.
    pub(crate) kinds: KindCounts,
}

/// See [`State::kinds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KindCounts {
    pub(crate) directories: u64,
    pub(crate) files: u64,
}

impl KindCounts {
    fn slot(&mut self, inode: &Inode) -> Option<&mut u64> {
        match inode.kind {
            FileKind::Directory => Some(&mut self.directories),
            FileKind::File => Some(&mut self.files),
            _ => None,
        }
    }
}

impl State {
    /// An empty filesystem: just the root directory, owned by root, mode 0755.
    pub fn new(now: Timestamp) -> State {
        let root = Inode {
            kind: FileKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 2,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            goal: DEFAULT_GOAL,
            trash_seconds: DEFAULT_TRASH_SECONDS,
            parent: ROOT_INO,
            name: String::new(),
            target: String::new(),
            chunks: Vec::new(),
        };
        let mut state = State::empty();
        state.insert_inode(ROOT_INO, Box::new(root));
        state.dirs.insert(ROOT_INO, BTreeMap::new());
        state.next_ino = ROOT_INO + 1;
        state.next_chunk_id = 1;
        state.cluster_time = now;
        state.mark(Key::Inode(ROOT_INO));
        for meta in MetaKey::ALL {
            state.mark(Key::Meta(meta));
        }
        state
    }

    pub(crate) fn empty() -> State {
        State {
            inodes: IdMap::default(),
            dirs: IdMap::default(),
            xattrs: IdMap::default(),
            chunks: IdMap::default(),
            sessions: BTreeMap::new(),
            trash: Trash::default(),
            sustained: BTreeSet::new(),
            holders: IdMap::default(),
            applied_index: 0,
            next_ino: 0,
            next_chunk_id: 0,
            cluster_time: Timestamp::default(),
            members: BTreeMap::new(),
            dirty: HashSet::new(),
            kinds: KindCounts::default(),
        }
    }

    /// Every insertion into `inodes` goes through here, to keep `kinds`.
    pub(crate) fn insert_inode(&mut self, ino: Ino, inode: Box<Inode>) -> Option<Box<Inode>> {
        if let Some(count) = self.kinds.slot(&inode) {
            *count += 1;
        }
        let replaced = self.inodes.insert(ino, inode);
        if let Some(count) = replaced.as_ref().and_then(|old| self.kinds.slot(old)) {
            *count -= 1;
        }
        replaced
    }

    /// Every removal from `inodes` goes through here, to keep `kinds`.
    pub(crate) fn remove_inode(&mut self, ino: Ino) -> Option<Box<Inode>> {
        let removed = self.inodes.remove(&ino);
        if let Some(count) = removed.as_ref().and_then(|old| self.kinds.slot(old)) {
            *count -= 1;
        }
        removed
    }

    /// Applies the committed entry at log position `index`.
    ///
    /// Deterministic: the result depends only on the state and the entry. An error is a normal
    /// result (the operation had no effect) and still advances the applied index.
    ///
    /// Time: the entry is applied at `max(entry.now, cluster_time())`, which becomes the new
    /// cluster time, so a proposer whose clock is behind cannot move time backwards.
    ///
    /// Exactly-once: with `entry.client = Some(tag)`, a session's stored reply for `seq` (the
    /// last [`REPLY_WINDOW`](crate::REPLY_WINDOW) seqs keep theirs) answers a retry without
    /// applying it again; a seq below the window is `Invalid`; an unknown session is
    /// `BadSession` (except for the `OpenSession` that creates it). A tagged `CloseSession`
    /// removes the session and with it the stored replies.
    ///
    /// # Panics
    /// If `index` is not `applied_index() + 1`: the driver skipped or repeated an entry, and
    /// going on would make this replica diverge.
    pub fn apply(&mut self, index: u64, entry: &Entry) -> Result<Outcome, Status> {
        assert!(
            index == self.applied_index + 1,
            "apply: entry index {index} does not follow applied index {}",
            self.applied_index
        );
        self.applied_index = index;
        self.mark(Key::Meta(MetaKey::AppliedIndex));
        let now = self.advance_clock(entry.now);
        match entry.client {
            None => self.apply_op(now, &entry.op),
            Some(tag) => self.apply_tagged(now, tag, entry),
        }
    }

    /// The time to apply an entry proposed at `proposed`: never before the cluster time.
    fn advance_clock(&mut self, proposed: Timestamp) -> Timestamp {
        if proposed > self.cluster_time {
            self.cluster_time = proposed;
            self.mark(Key::Meta(MetaKey::ClusterTime));
        }
        self.cluster_time
    }

    /// Exactly-once: a stored reply answers a retry of its `seq`.
    fn apply_tagged(
        &mut self,
        now: Timestamp,
        tag: ClientTag,
        entry: &Entry,
    ) -> Result<Outcome, Status> {
        let opens_it =
            matches!(&entry.op, Op::OpenSession { session, .. } if *session == tag.session);
        match self.sessions.get(&tag.session) {
            None if !opens_it => return Err(Status::BadSession),
            None => {}
            Some(session) => {
                if let Some(earlier) = session.earlier_reply(tag.seq) {
                    return earlier;
                }
            }
        }
        let reply = self.apply_op(now, &entry.op);
        self.store_reply(tag, &reply);
        reply
    }

    /// Keeps `reply` for retries of `tag.seq`, in the slot of the seq that left the window.
    fn store_reply(&mut self, tag: ClientTag, reply: &Result<Outcome, Status>) {
        let Some(session) = self.sessions.get_mut(&tag.session) else {
            return; // the entry closed its own session
        };
        let slot = crate::model::reply_slot(tag.seq);
        session.replies.insert(slot, (tag.seq, reply.clone()));
        self.mark(Key::Reply(tag.session, slot));
    }

    fn apply_op(&mut self, now: Timestamp, op: &Op) -> Result<Outcome, Status> {
        match op {
            Op::Noop => Ok(Outcome::Unit),
            Op::OpenSession { session, info, root, token } => {
                self.open_session(*session, info, *root, *token)
            }
            Op::CloseSession { session } | Op::ExpireSession { session } => {
                self.close_session(*session)
            }
            Op::Create { .. } | Op::Mkdir { .. } | Op::Symlink { .. } => self.new_node(now, op),
            Op::CreateOpen { session, parent, name, ino, mode, umask, uid, gid } => {
                // The session is checked first so that a failure leaves nothing half done.
                if !self.sessions.contains_key(session) {
                    return Err(Status::BadSession);
                }
                let (parent, name, ino, kind) = (*parent, name.clone(), *ino, FileKind::File);
                let (mode, umask, uid, gid, rdev) = (*mode, *umask, *uid, *gid, 0);
                let create = Op::Create { parent, name, ino, kind, mode, umask, uid, gid, rdev };
                let created = self.new_node(now, &create)?;
                self.acquire(*session, ino).expect("a live session can hold a new file");
                Ok(created)
            }
            Op::Link { ino, parent, name } => self.link(now, *ino, *parent, name),
            Op::Unlink { parent, name } => self.unlink(now, *parent, name),
            Op::Rmdir { parent, name } => self.rmdir(now, *parent, name),
            Op::Rename { parent, name, new_parent, new_name, flags } => {
                self.rename(now, (*parent, name), (*new_parent, new_name), *flags)
            }
            Op::SetAttr { ino, set, cow_chunk_id } => self.setattr(now, *ino, set, *cow_chunk_id),
            Op::SetXattr { ino, name, value, flags } => {
                self.set_xattr(now, *ino, name, value, *flags)
            }
            Op::RemoveXattr { ino, name } => self.remove_xattr(now, *ino, name),
            Op::SetGoal { ino, goal, recursive } => self.set_goal(now, *ino, *goal, *recursive),
            Op::SetTrashTime { ino, seconds, recursive } => {
                self.set_trash_time(now, *ino, *seconds, *recursive)
            }
            Op::Acquire { session, ino } => self.acquire(*session, *ino),
            Op::Release { session, ino } => self.release(*session, *ino),
            Op::WriteChunk { ino, index, new_chunk_id } => {
                self.write_chunk(*ino, *index, *new_chunk_id)
            }
            Op::WriteChunkEnd { ino, index, chunk_id, file_size } => {
                self.write_chunk_end(now, *ino, *index, *chunk_id, *file_size)
            }
            Op::Purge { ino } => self.purge(*ino),
            Op::Free { inos } => self.free_unheld(inos),
            Op::Undelete { ino } => self.undelete(now, *ino),
            Op::SetChunkVersion { chunk_id, version } => {
                self.set_chunk_version(*chunk_id, *version)
            }
            Op::SetMember { id, member } => {
                self.members.insert(*id, member.clone());
                self.mark(Key::Meta(MetaKey::Members));
                Ok(Outcome::Unit)
            }
            Op::RemoveMember { id } => {
                self.members.remove(id).ok_or(Status::NotFound)?;
                self.mark(Key::Meta(MetaKey::Members));
                Ok(Outcome::Unit)
            }
        }
    }

    /// The master group's address book: node id → where it is reached.
    pub fn members(&self) -> &BTreeMap<u64, Member> {
        &self.members
    }

    /// This state with `members` as its address book: the first state of a new group, whose
    /// members come from the bootstrapping master's configuration.
    pub fn with_members(mut self, members: BTreeMap<u64, Member>) -> State {
        self.members = members;
        self.mark(Key::Meta(MetaKey::Members));
        self
    }

    /// This state as the first state of a new group at `index` (disaster restore: the lost
    /// group's log positions mean nothing to the new one).
    pub fn rebased(mut self, index: u64) -> State {
        self.applied_index = index;
        self
    }

    /// The log index of the last applied entry (0 for a new state).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Every record changed since the last call, with its current value (`None`: deleted).
    /// Each key appears once, in (table, key) order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut keys: Vec<Key> = self.dirty.drain().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|key| Change { table: key.table(), key: key.encode(), value: self.record(&key) })
            .collect()
    }

    /// The current encoded value of one record, `None` if it does not exist.
    pub(crate) fn record(&self, key: &Key) -> Option<Vec<u8>> {
        match key {
            Key::Inode(ino) => self.inodes.get(ino).map(encode),
            Key::Dirent(parent, name) => self.dirs.get(parent)?.get(name).map(encode),
            Key::Chunk(id) => self.chunks.get(id).map(encode),
            Key::Xattr(ino, name) => {
                self.xattrs.get(ino)?.get(name).map(|v| encode(&serde_bytes::Bytes::new(v)))
            }
            Key::Session(id) => self.sessions.get(id).map(|s| encode(&s.rec)),
            Key::Acquired(id, ino) => self.sessions.get(id)?.acquired.get(ino).map(encode),
            Key::Reply(id, slot) => self.sessions.get(id)?.replies.get(slot).map(encode),
            Key::Trash(ino) => self.trash.get(ino).map(encode),
            Key::Meta(meta) => Some(self.meta_record(*meta)),
        }
    }

    /// The encoded value of a `meta` record.
    pub(crate) fn meta_record(&self, meta: MetaKey) -> Vec<u8> {
        match meta {
            MetaKey::AppliedIndex => encode(&self.applied_index),
            MetaKey::NextIno => encode(&self.next_ino),
            MetaKey::NextChunkId => encode(&self.next_chunk_id),
            MetaKey::ClusterTime => encode(&self.cluster_time),
            MetaKey::Members => encode(&self.members),
        }
    }

    pub(crate) fn mark(&mut self, key: Key) {
        self.dirty.insert(key);
    }

    // ---- small helpers shared by the operations ----

    pub(crate) fn inode(&self, ino: Ino) -> Result<&Inode, Status> {
        self.inodes.get(&ino).map(|node| &**node).ok_or(Status::NotFound)
    }

    /// Mutable access to an inode the caller already validated; marks it changed.
    pub(crate) fn inode_mut(&mut self, ino: Ino) -> &mut Inode {
        self.dirty.insert(Key::Inode(ino));
        self.inodes.get_mut(&ino).unwrap_or_else(|| panic!("inode {ino} vanished during apply"))
    }

    pub(crate) fn attr(&self, ino: Ino) -> Attr {
        self.inodes[&ino].attr(ino)
    }

    /// The entries of directory `ino`: `NotFound` if it does not exist, `NotDir` if it is not
    /// a directory.
    pub(crate) fn entries(&self, ino: Ino) -> Result<&BTreeMap<String, Ino>, Status> {
        match self.inodes.get(&ino) {
            None => Err(Status::NotFound),
            Some(node) if !node.is_dir() => Err(Status::NotDir),
            Some(_) => Ok(&self.dirs[&ino]),
        }
    }

    /// The inode named `name` in directory `parent`.
    pub(crate) fn child(&self, parent: Ino, name: &str) -> Result<Ino, Status> {
        self.entries(parent)?.get(name).copied().ok_or(Status::NotFound)
    }

    pub(crate) fn is_dir(&self, ino: Ino) -> bool {
        self.inodes.get(&ino).is_some_and(|node| node.is_dir())
    }

    pub(crate) fn note_ino_used(&mut self, ino: Ino) {
        if ino >= self.next_ino {
            self.next_ino = ino + 1;
            self.mark(Key::Meta(MetaKey::NextIno));
        }
    }

    pub(crate) fn note_chunk_id_used(&mut self, id: ChunkId) {
        if id >= self.next_chunk_id {
            self.next_chunk_id = id + 1;
            self.mark(Key::Meta(MetaKey::NextChunkId));
        }
    }
}

pub(crate) fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard encodes every in-memory record")
}

pub(crate) fn resolve_time(set: TimeSet, now: Timestamp) -> Timestamp {
    match set {
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    }
}
