//! Attributes: `setattr` (incl. truncate), extended attributes, goal and trash time.

use crate::idmap::IdSet;
use crate::model::*;
use crate::op::Outcome;
use crate::state::{resolve_time, State};
use crate::table::Key;
use mfsha_proto::types::*;

impl State {
    pub(crate) fn setattr(
        &mut self,
        now: Timestamp,
        ino: Ino,
        set: &SetAttr,
        cow_chunk_id: ChunkId,
    ) -> Result<Outcome, Status> {
        let node = self.inode(ino)?;
        if let Some(size) = set.size {
            self.check_resize(node, size, cow_chunk_id)?;
        }
        let node = self.inode_mut(ino);
        if let Some(mode) = set.mode {
            node.mode = mode & 0o7777;
        }
        if let Some(uid) = set.uid {
            node.uid = uid;
        }
        if let Some(gid) = set.gid {
            node.gid = gid;
        }
        if let Some(atime) = set.atime {
            node.atime = resolve_time(atime, now);
        }
        match (set.mtime, set.size) {
            (Some(mtime), _) => node.mtime = resolve_time(mtime, now),
            // truncate(2) updates mtime even when the size stays the same.
            (None, Some(_)) => node.mtime = now,
            (None, None) => {}
        }
        node.ctime = now;
        let cut = set.size.and_then(|size| self.resize(ino, size, cow_chunk_id));
        let attr = self.attr(ino);
        Ok(match cut {
            None => Outcome::Attr(attr),
            Some(cut) => Outcome::Truncated {
                attr,
                chunk_id: cut.chunk_id,
                version: cut.version,
                previous: cut.previous,
                length: cut.length,
            },
        })
    }

    pub(crate) fn set_xattr(
        &mut self,
        now: Timestamp,
        ino: Ino,
        name: &str,
        value: &[u8],
        flags: u32,
    ) -> Result<Outcome, Status> {
        self.inode(ino)?;
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(Status::Range);
        }
        let known = XATTR_CREATE | XATTR_REPLACE;
        if flags & !known != 0 || flags == known {
            return Err(Status::Invalid);
        }
        let exists = self.xattrs.get(&ino).is_some_and(|x| x.contains_key(name));
        if exists && flags & XATTR_CREATE != 0 {
            return Err(Status::Exists);
        }
        if !exists && flags & XATTR_REPLACE != 0 {
            return Err(Status::NoAttr);
        }
        self.xattrs.entry(ino).or_default().insert(name.to_string(), value.to_vec());
        self.mark(Key::Xattr(ino, name.to_string()));
        self.inode_mut(ino).ctime = now;
        Ok(Outcome::Unit)
    }

    pub(crate) fn remove_xattr(
        &mut self,
        now: Timestamp,
        ino: Ino,
        name: &str,
    ) -> Result<Outcome, Status> {
        self.inode(ino)?;
        check_xattr_name(name)?;
        let attrs = self.xattrs.get_mut(&ino).ok_or(Status::NoAttr)?;
        attrs.remove(name).ok_or(Status::NoAttr)?;
        if attrs.is_empty() {
            self.xattrs.remove(&ino);
        }
        self.mark(Key::Xattr(ino, name.to_string()));
        self.inode_mut(ino).ctime = now;
        Ok(Outcome::Unit)
    }

    pub(crate) fn set_goal(
        &mut self,
        now: Timestamp,
        ino: Ino,
        goal: u8,
        recursive: bool,
    ) -> Result<Outcome, Status> {
        if !(1..=MAX_GOAL).contains(&goal) {
            return Err(Status::Invalid);
        }
        self.set_each(now, ino, recursive, |node| std::mem::replace(&mut node.goal, goal) != goal)
    }

    pub(crate) fn set_trash_time(
        &mut self,
        now: Timestamp,
        ino: Ino,
        seconds: u32,
        recursive: bool,
    ) -> Result<Outcome, Status> {
        let outcome = self.set_each(now, ino, recursive, |node| {
            std::mem::replace(&mut node.trash_seconds, seconds) != seconds
        })?;
        // A trashed file has no name, so only a call naming it directly reaches it.
        self.trash.retime(ino, seconds);
        Ok(outcome)
    }

    /// Runs `change` on `ino` (and with `recursive`, on everything below it, each inode once
    /// even if hard-linked twice) and counts which inodes it changed.
    fn set_each(
        &mut self,
        now: Timestamp,
        ino: Ino,
        recursive: bool,
        change: impl Fn(&mut Inode) -> bool,
    ) -> Result<Outcome, Status> {
        self.inode(ino)?;
        let targets = if recursive { self.subtree(ino) } else { vec![ino] };
        let (mut changed, mut not_changed) = (0, 0);
        for target in targets {
            let node = self.inodes.get_mut(&target).expect("subtree lists existing inodes");
            if change(node) {
                node.ctime = now;
                self.mark(Key::Inode(target));
                changed += 1;
            } else {
                not_changed += 1;
            }
        }
        Ok(Outcome::Changed { inodes: changed, not_changed, not_permitted: 0 })
    }

    /// `ino` and every inode below it, each once, in a deterministic order.
    pub(crate) fn subtree(&self, ino: Ino) -> Vec<Ino> {
        let mut seen: IdSet<Ino> = IdSet::default();
        let mut order = Vec::new();
        let mut stack = vec![ino];
        while let Some(at) = stack.pop() {
            if !seen.insert(at) {
                continue;
            }
            order.push(at);
            if let Some(entries) = self.dirs.get(&at) {
                stack.extend(entries.values().rev());
            }
        }
        order
    }
}

/// As Linux: empty or overlong names are ERANGE.
fn check_xattr_name(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Status::Range);
    }
    if name.contains('\0') {
        return Err(Status::Invalid);
    }
    Ok(())
}
