//! Reads, served by the master from the applied state without going through the log.

use crate::model::*;
use crate::ns::check_name;
use crate::op::Outcome;
use crate::state::State;
use mfsha_proto::client::DirStats;
use mfsha_proto::types::*;
use std::ops::Bound;

impl State {
    /// The inode `name` in directory `parent`; `.` and `..` are the directory and its parent.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, Status> {
        let entries = self.entries(parent)?;
        let ino = match name {
            "." => parent,
            ".." => self.inodes[&parent].parent,
            _ => {
                check_name(name)?;
                *entries.get(name).ok_or(Status::NotFound)?
            }
        };
        Ok(self.attr(ino))
    }

    /// Attributes of any existing inode, including trashed and sustained ones.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, Status> {
        Ok(self.inode(ino)?.attr(ino))
    }

    /// Up to `max` entries of directory `ino` starting at position `offset` in name order
    /// (no `.` or `..`), and whether more follow. Skipping to `offset` walks the entries
    /// before it; for very large directories page with [`State::readdir_after`].
    pub fn readdir(
        &self,
        ino: Ino,
        offset: u64,
        max: u32,
    ) -> Result<(Vec<DirEntry>, bool), Status> {
        let entries = self.entries(ino)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let page: Vec<DirEntry> = entries
            .iter()
            .skip(start)
            .take(max as usize)
            .map(|(name, child)| DirEntry { name: name.clone(), attr: self.attr(*child) })
            .collect();
        let more = start.saturating_add(page.len()) < entries.len();
        Ok((page, more))
    }

    /// Like [`State::readdir`] but continues after the entry named `after` (from the start
    /// when `None`), in O(log n) whatever the position.
    pub fn readdir_after(
        &self,
        ino: Ino,
        after: Option<&str>,
        max: u32,
    ) -> Result<(Vec<DirEntry>, bool), Status> {
        let entries = self.entries(ino)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = entries.range::<str, _>((lower, Bound::Unbounded));
        let page: Vec<DirEntry> = range
            .by_ref()
            .take(max as usize)
            .map(|(name, child)| DirEntry { name: name.clone(), attr: self.attr(*child) })
            .collect();
        Ok((page, range.next().is_some()))
    }

    pub fn readlink(&self, ino: Ino) -> Result<String, Status> {
        let node = self.inode(ino)?;
        if node.kind != FileKind::Symlink {
            return Err(Status::Invalid);
        }
        Ok(node.target.clone())
    }

    pub fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>, Status> {
        self.inode(ino)?;
        self.xattrs.get(&ino).and_then(|x| x.get(name)).cloned().ok_or(Status::NoAttr)
    }

    /// Names of the extended attributes of `ino`, sorted.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<String>, Status> {
        self.inode(ino)?;
        Ok(self.xattrs.get(&ino).map(|x| x.keys().cloned().collect()).unwrap_or_default())
    }

    /// Chunk id per index of a regular file, 0 for a hole, up to its last chunk. The vector
    /// is as long as the last chunk's index: for sparse files with huge offsets use
    /// [`State::file_chunk_list`].
    pub fn file_chunks(&self, ino: Ino) -> Result<Vec<ChunkId>, Status> {
        let node = self.file(ino)?;
        let len = node.chunks.last().map_or(0, |(index, _)| *index as usize + 1);
        let mut dense = vec![0; len];
        for (index, id) in &node.chunks {
            dense[*index as usize] = *id;
        }
        Ok(dense)
    }

    /// `(index, chunk id)` of each chunk a regular file has, by index.
    pub fn file_chunk_list(&self, ino: Ino) -> Result<Vec<(u32, ChunkId)>, Status> {
        Ok(self.file(ino)?.chunks.clone())
    }

    /// The chunk at `index` of a regular file, 0 for a hole.
    pub fn file_chunk(&self, ino: Ino, index: u32) -> Result<ChunkId, Status> {
        Ok(self.file(ino)?.chunk_at(index))
    }

    pub fn chunk(&self, id: ChunkId) -> Option<ChunkInfo> {
        self.chunks.get(&id).map(|chunk| self.chunk_info(chunk))
    }

    /// Every chunk, in no particular order.
    pub fn chunks(&self) -> impl Iterator<Item = (ChunkId, ChunkInfo)> + '_ {
        self.chunks.iter().map(|(id, chunk)| (*id, self.chunk_info(chunk)))
    }

    /// The files referencing chunk `id`, once per reference.
    pub fn chunk_owners(&self, id: ChunkId) -> Option<&[Ino]> {
        self.chunks.get(&id).map(|chunk| chunk.owners.as_slice())
    }

    fn chunk_info(&self, chunk: &ChunkRec) -> ChunkInfo {
        let goal = chunk.owners.iter().map(|o| self.inodes[o].goal).max().unwrap_or(0);
        let refcount = u32::try_from(chunk.owners.len()).unwrap_or(u32::MAX);
        ChunkInfo { version: chunk.version, refcount, goal }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            inodes: self.inodes.len() as u64,
            directories: self.kinds.directories,
            files: self.kinds.files,
            chunks: self.chunks.len() as u64,
            trash_inodes: self.trash.len() as u64,
            sustained_inodes: self.sustained.len() as u64,
        }
    }

    /// `mfsdirinfo`: totals over `ino` and everything below it (an inode hard-linked twice
    /// below it is counted twice, as in MooseFS).
    pub fn dir_info(&self, ino: Ino) -> Result<DirStats, Status> {
        self.inode(ino)?;
        let mut stats = DirStats::default();
        let mut stack = vec![ino];
        while let Some(at) = stack.pop() {
            let node = &self.inodes[&at];
            stats.inodes += 1;
            match node.kind {
                FileKind::Directory => {
                    stats.directories += 1;
                    stack.extend(self.dirs[&at].values());
                }
                FileKind::File => {
                    stats.files += 1;
                    self.add_file_stats(node, &mut stats);
                }
                _ => {}
            }
        }
        Ok(stats)
    }

    fn add_file_stats(&self, node: &Inode, stats: &mut DirStats) {
        stats.length = stats.length.saturating_add(node.size);
        for (index, id) in &node.chunks {
            stats.chunks += 1;
            let start = u64::from(*index) * CHUNK_BYTES;
            let bytes = node.size.saturating_sub(start).min(CHUNK_BYTES);
            let size = bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
            let goal = self.chunk(*id).map_or(node.goal, |c| c.goal);
            stats.size = stats.size.saturating_add(size);
            stats.realsize = stats.realsize.saturating_add(size * u64::from(goal));
        }
    }

    /// The inode at `path` below directory `root` (`/`-separated, `.` and `..` allowed,
    /// `..` never leaves `root`; symlinks are not followed).
    pub fn resolve_path(&self, root: Ino, path: &str) -> Result<Ino, Status> {
        self.entries(root)?;
        let mut trail = vec![root];
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let here = *trail.last().expect("trail starts with root");
            if part == ".." {
                if trail.len() > 1 {
                    trail.pop();
                }
                continue;
            }
            trail.push(self.child(here, part)?);
        }
        Ok(*trail.last().expect("trail starts with root"))
    }

    /// One more than the largest inode number ever used: where a proposer starts looking for
    /// a free one.
    pub fn next_free_ino(&self) -> Ino {
        self.next_ino
    }

    /// One more than the largest chunk id ever used.
    pub fn next_free_chunk_id(&self) -> ChunkId {
        self.next_chunk_id
    }

    /// Up to `limit` trashed files whose trash time has passed at `now`, the longest expired
    /// first. Costs what it returns, not the size of the trash (an expiry index).
    pub fn trash_expired(&self, now: Timestamp, limit: usize) -> Vec<Ino> {
        self.trash.expired(now, limit)
    }

    /// Trashed files: inode, original path, deletion time.
    pub fn trash(&self) -> impl Iterator<Item = (Ino, &str, Timestamp)> + '_ {
        self.trash.iter().map(|(ino, rec)| (*ino, rec.path.as_str(), rec.deleted_at))
    }

    /// Unlinked files (no name, not in the trash) waiting for the leader to free them.
    pub fn sustained(&self) -> impl Iterator<Item = Ino> + '_ {
        self.sustained.iter().copied()
    }

    /// Whether `ino` is unlinked and waiting to be freed (see [`State::sustained`]).
    pub fn is_sustained(&self, ino: Ino) -> bool {
        self.sustained.contains(&ino)
    }

    /// The stored answer to `(session, seq)` if the state machine would not apply it again:
    /// the stored reply of an applied seq, `Err(Invalid)` for one older than the window.
    /// `None`: the request is new (or the session unknown) and must be proposed.
    pub fn session_reply(&self, session: SessionId, seq: u64) -> Option<Result<Outcome, Status>> {
        self.sessions.get(&session)?.earlier_reply(seq)
    }

    /// Open sessions: id, description, number of inodes it holds open.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &str, usize)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s.rec.info.as_str(), s.acquired.len()))
    }

    /// The inodes a session holds open, with how many times each.
    pub fn acquired(&self, session: SessionId) -> impl Iterator<Item = (Ino, u32)> + '_ {
        self.sessions
            .get(&session)
            .into_iter()
            .flat_map(|s| s.acquired.iter().map(|(i, n)| (*i, *n)))
    }

    /// The live session opened with `token` and its root (`None` for token 0: no token).
    /// A linear search: sessions are few (one per mount) and opened rarely.
    /// What resuming `session` needs: its root and the token it was opened with (its secret).
    pub fn session_resume(&self, session: SessionId) -> Option<(Ino, u64)> {
        self.sessions.get(&session).map(|s| (s.rec.root, s.rec.token))
    }

    pub fn session_by_token(&self, token: u64) -> Option<(SessionId, Ino)> {
        if token == 0 {
            return None;
        }
        let mut found = self.sessions.iter().filter(|(_, s)| s.rec.token == token);
        found.next().map(|(id, s)| (*id, s.rec.root))
    }

    /// The cluster time: the latest time carried by an applied entry. Never goes backwards;
    /// a leader proposes at least this time (see [`crate::Entry::now`]).
    pub fn cluster_time(&self) -> Timestamp {
        self.cluster_time
    }

    /// The directory a session mounted, if the session exists.
    pub fn session_root(&self, session: SessionId) -> Option<Ino> {
        self.sessions.get(&session).map(|s| s.rec.root)
    }

    /// The path of directory `ino` from the root (`/` for the root).
    pub fn dir_path_of(&self, ino: Ino) -> Result<String, Status> {
        self.entries(ino)?;
        Ok(self.dir_path(ino))
    }
}
