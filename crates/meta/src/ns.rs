//! The namespace: creating, linking, unlinking and renaming directory entries, and what
//! happens to an inode when its last name goes (trash, sustained, freed).

use crate::model::*;
use crate::op::{Op, Outcome};
use crate::state::State;
use crate::table::Key;
use mfsha_proto::types::*;
use std::collections::BTreeMap;

/// A new inode as an operation describes it (before inheritance from the parent).
struct NewNode<'a> {
    parent: Ino,
    name: &'a str,
    ino: Ino,
    kind: FileKind,
    /// Permission bits with the umask already applied.
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    target: &'a str,
}

/// A valid name for a directory entry.
pub(crate) fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Status::Invalid);
    }
    if name.len() > NAME_MAX {
        return Err(Status::NameTooLong);
    }
    Ok(())
}

impl State {
    /// `Create`, `Mkdir` and `Symlink`.
    pub(crate) fn new_node(&mut self, now: Timestamp, op: &Op) -> Result<Outcome, Status> {
        match op {
            Op::Create { parent, name, ino, kind, mode, umask, uid, gid, rdev } => {
                let node = NewNode {
                    parent: *parent,
                    name,
                    ino: *ino,
                    kind: *kind,
                    mode: mode & 0o7777 & !umask,
                    uid: *uid,
                    gid: *gid,
                    rdev: *rdev,
                    target: "",
                };
                self.create(now, node)
            }
            Op::Mkdir { parent, name, ino, mode, umask, uid, gid } => {
                let node = NewNode {
                    parent: *parent,
                    name,
                    ino: *ino,
                    kind: FileKind::Directory,
                    mode: mode & 0o7777 & !umask,
                    uid: *uid,
                    gid: *gid,
                    rdev: 0,
                    target: "",
                };
                self.make_node(now, node)
            }
            Op::Symlink { parent, name, ino, target, uid, gid } => {
                let node = NewNode {
                    parent: *parent,
                    name,
                    ino: *ino,
                    kind: FileKind::Symlink,
                    mode: 0o777,
                    uid: *uid,
                    gid: *gid,
                    rdev: 0,
                    target,
                };
                self.symlink(now, node)
            }
            other => panic!("new_node called with {other:?}"),
        }
    }

    /// Regular files, FIFOs, sockets and devices (directories and symlinks have own ops).
    fn create(&mut self, now: Timestamp, node: NewNode) -> Result<Outcome, Status> {
        if matches!(node.kind, FileKind::Directory | FileKind::Symlink) {
            return Err(Status::Invalid);
        }
        self.make_node(now, node)
    }

    fn symlink(&mut self, now: Timestamp, node: NewNode) -> Result<Outcome, Status> {
        // As Linux symlink(2): an empty target is ENOENT, an overlong one ENAMETOOLONG.
        if node.target.is_empty() {
            return Err(Status::NotFound);
        }
        if node.target.len() > PATH_MAX {
            return Err(Status::NameTooLong);
        }
        if node.target.contains('\0') {
            return Err(Status::Invalid);
        }
        self.make_node(now, node)
    }

    /// Checks that `name` can be added to `parent` as the new inode `ino`.
    fn check_new_entry(&self, parent: Ino, name: &str, ino: Ino) -> Result<&Inode, Status> {
        check_name(name)?;
        let entries = self.entries(parent)?;
        if entries.contains_key(name) {
            return Err(Status::Exists);
        }
        if ino == 0 || ino == u64::MAX {
            return Err(Status::Invalid);
        }
        if self.inodes.contains_key(&ino) {
            return Err(Status::Exists);
        }
        Ok(&self.inodes[&parent])
    }

    /// Creates any new inode: group and setgid from a setgid parent, goal and trash time from
    /// the parent, all times = now.
    fn make_node(&mut self, now: Timestamp, node: NewNode) -> Result<Outcome, Status> {
        let parent = self.check_new_entry(node.parent, node.name, node.ino)?;
        let is_dir = node.kind == FileKind::Directory;
        if is_dir && parent.nlink == u32::MAX {
            return Err(Status::TooManyLinks);
        }
        let setgid_parent = parent.mode & S_ISGID != 0;
        let mut mode = node.mode;
        if setgid_parent && is_dir {
            mode |= S_ISGID;
        }
        let inode = Inode {
            kind: node.kind,
            mode,
            uid: node.uid,
            gid: if setgid_parent { parent.gid } else { node.gid },
            size: node.target.len() as u64,
            nlink: if is_dir { 2 } else { 1 },
            rdev: if matches!(node.kind, FileKind::BlockDevice | FileKind::CharDevice) {
                node.rdev
            } else {
                0
            },
            atime: now,
            mtime: now,
            ctime: now,
            goal: parent.goal,
            trash_seconds: parent.trash_seconds,
            parent: if is_dir { node.parent } else { 0 },
            name: if is_dir { node.name.to_string() } else { String::new() },
            target: node.target.to_string(),
            chunks: Vec::new(),
        };
        if is_dir {
            self.dirs.insert(node.ino, BTreeMap::new());
            self.inode_mut(node.parent).nlink += 1;
        }
        self.insert_inode(node.ino, Box::new(inode));
        self.mark(Key::Inode(node.ino));
        self.note_ino_used(node.ino);
        self.add_entry(node.parent, node.name, node.ino);
        self.touch_dir(node.parent, now);
        Ok(Outcome::Attr(self.attr(node.ino)))
    }

    pub(crate) fn link(
        &mut self,
        now: Timestamp,
        ino: Ino,
        parent: Ino,
        name: &str,
    ) -> Result<Outcome, Status> {
        let node = self.inode(ino)?;
        if node.is_dir() {
            return Err(Status::Perm);
        }
        // A trashed or sustained file has no name left to link to.
        if node.nlink == 0 {
            return Err(Status::NotFound);
        }
        if node.nlink >= LINK_MAX {
            return Err(Status::TooManyLinks);
        }
        check_name(name)?;
        if self.entries(parent)?.contains_key(name) {
            return Err(Status::Exists);
        }
        let node = self.inode_mut(ino);
        node.nlink += 1;
        node.ctime = now;
        self.add_entry(parent, name, ino);
        self.touch_dir(parent, now);
        Ok(Outcome::Attr(self.attr(ino)))
    }

    pub(crate) fn unlink(
        &mut self,
        now: Timestamp,
        parent: Ino,
        name: &str,
    ) -> Result<Outcome, Status> {
        check_name(name)?;
        let child = self.child(parent, name)?;
        if self.is_dir(child) {
            return Err(Status::IsDir);
        }
        self.remove_entry(parent, name);
        self.touch_dir(parent, now);
        self.drop_link(now, child, parent, name);
        Ok(Outcome::Unit)
    }

    pub(crate) fn rmdir(
        &mut self,
        now: Timestamp,
        parent: Ino,
        name: &str,
    ) -> Result<Outcome, Status> {
        check_name(name)?;
        let child = self.child(parent, name)?;
        if !self.is_dir(child) {
            return Err(Status::NotDir);
        }
        if !self.dirs[&child].is_empty() {
            return Err(Status::NotEmpty);
        }
        if self.is_session_root(child) {
            return Err(Status::Busy);
        }
        self.remove_entry(parent, name);
        self.inode_mut(parent).nlink -= 1;
        self.touch_dir(parent, now);
        self.free_inode(child);
        Ok(Outcome::Unit)
    }

    /// One name of a non-directory `ino` (which was `name` in `parent`) is gone. On the last
    /// one a regular file goes to the trash (trash time > 0) or is sustained until the leader,
    /// which alone knows whether some session has it open, frees it (`Op::Free`); other
    /// kinds are freed at once.
    pub(crate) fn drop_link(&mut self, now: Timestamp, ino: Ino, parent: Ino, name: &str) {
        let node = self.inode_mut(ino);
        assert!(!node.is_dir(), "drop_link on directory {ino}");
        assert!(node.nlink > 0, "drop_link on inode {ino} without links");
        node.nlink -= 1;
        node.ctime = now;
        if node.nlink > 0 {
            return;
        }
        let (is_file, trash_seconds) = (node.is_file(), node.trash_seconds);
        if is_file && trash_seconds > 0 {
            let path = self.entry_path(parent, name);
            let rec = TrashRec { parent, name: name.to_string(), path, deleted_at: now };
            self.trash.insert(ino, rec, trash_seconds);
            self.mark(Key::Trash(ino));
        } else if is_file {
            self.sustained.insert(ino);
        } else {
            self.free_inode(ino);
        }
    }

    /// Removes an inode and everything hanging off it: its chunk references, xattrs, trash
    /// record and acquisitions.
    pub(crate) fn free_inode(&mut self, ino: Ino) {
        assert!(ino != ROOT_INO, "attempt to free the root directory");
        let node = self.remove_inode(ino).unwrap_or_else(|| panic!("free of missing inode {ino}"));
        self.mark(Key::Inode(ino));
        if node.is_dir() {
            let entries = self.dirs.remove(&ino);
            assert!(entries.is_some_and(|e| e.is_empty()), "freed directory {ino} not empty");
        }
        for (_, id) in node.chunks {
            self.unref_chunk(id, ino);
        }
        if let Some(attrs) = self.xattrs.remove(&ino) {
            for name in attrs.into_keys() {
                self.mark(Key::Xattr(ino, name));
            }
        }
        if self.trash.remove(&ino).is_some() {
            self.mark(Key::Trash(ino));
        }
        self.sustained.remove(&ino);
        for session in self.holders.remove(&ino).unwrap_or_default() {
            let held = self.sessions.get_mut(&session).expect("holder index names a live session");
            held.acquired.remove(&ino);
            self.mark(Key::Acquired(session, ino));
        }
    }

    pub(crate) fn add_entry(&mut self, parent: Ino, name: &str, child: Ino) {
        let entries = self.dirs.get_mut(&parent).expect("add_entry into a directory");
        let previous = entries.insert(name.to_string(), child);
        assert!(previous.is_none(), "add_entry over existing name {name:?} in {parent}");
        self.mark(Key::Dirent(parent, name.to_string()));
    }

    pub(crate) fn remove_entry(&mut self, parent: Ino, name: &str) {
        let entries = self.dirs.get_mut(&parent).expect("remove_entry from a directory");
        assert!(entries.remove(name).is_some(), "remove_entry of missing {name:?} in {parent}");
        self.mark(Key::Dirent(parent, name.to_string()));
    }

    /// A directory's entries changed: mtime = ctime = now.
    pub(crate) fn touch_dir(&mut self, dir: Ino, now: Timestamp) {
        let node = self.inode_mut(dir);
        node.mtime = now;
        node.ctime = now;
    }

    /// `/a/b` for directory `b` in `a` in the root; `/` for the root.
    pub(crate) fn dir_path(&self, dir: Ino) -> String {
        let mut names = Vec::new();
        let mut at = dir;
        while at != ROOT_INO {
            let node = &self.inodes[&at];
            names.push(node.name.as_str());
            at = node.parent;
            assert!(names.len() <= self.inodes.len(), "directory cycle above {dir}");
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    pub(crate) fn entry_path(&self, parent: Ino, name: &str) -> String {
        let dir = self.dir_path(parent);
        if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        }
    }

    /// Whether some session mounted directory `dir` (removing it is EBUSY, as for a mount
    /// point). Sessions are few, so a scan is cheap.
    pub(crate) fn is_session_root(&self, dir: Ino) -> bool {
        self.sessions.values().any(|s| s.rec.root == dir)
    }

    /// Whether directory `ancestor` is `dir` or lies on the way from `dir` up to the root.
    pub(crate) fn is_ancestor_or_self(&self, ancestor: Ino, dir: Ino) -> bool {
        let mut at = dir;
        let mut steps = 0usize;
        loop {
            if at == ancestor {
                return true;
            }
            if at == ROOT_INO {
                return false;
            }
            at = self.inodes[&at].parent;
            steps += 1;
            assert!(steps <= self.inodes.len(), "directory cycle above {dir}");
        }
    }
}
