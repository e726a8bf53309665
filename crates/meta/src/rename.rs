//! `rename` with POSIX semantics and the Linux `renameat2` flags.

use crate::model::*;
use crate::ns::check_name;
use crate::op::Outcome;
use crate::state::State;
use crate::table::Key;
use mfsha_proto::types::*;

/// A directory entry: (parent directory, name).
pub(crate) type Place<'a> = (Ino, &'a str);

impl State {
    pub(crate) fn rename(
        &mut self,
        now: Timestamp,
        from: Place,
        to: Place,
        flags: u32,
    ) -> Result<Outcome, Status> {
        let known = RENAME_NOREPLACE | RENAME_EXCHANGE;
        if flags & !known != 0 || flags == known {
            return Err(Status::Invalid);
        }
        check_name(from.1)?;
        check_name(to.1)?;
        let source = self.child(from.0, from.1)?;
        let target = self.entries(to.0)?.get(to.1).copied();
        if flags & RENAME_EXCHANGE != 0 {
            let target = target.ok_or(Status::NotFound)?;
            return self.exchange(now, from, to, source, target);
        }
        if target.is_some() && flags & RENAME_NOREPLACE != 0 {
            return Err(Status::Exists);
        }
        if target == Some(source) {
            // Two names of one inode (or the same name): POSIX says do nothing.
            return Ok(Outcome::Unit);
        }
        if self.is_dir(source) && self.is_ancestor_or_self(source, to.0) {
            return Err(Status::Invalid);
        }
        if let Some(target) = target {
            self.check_replace(source, target)?;
            self.remove_entry(to.0, to.1);
            if self.is_dir(target) {
                self.inode_mut(to.0).nlink -= 1;
                self.free_inode(target);
            } else {
                self.drop_link(now, target, to.0, to.1);
            }
        }
        self.remove_entry(from.0, from.1);
        self.add_entry(to.0, to.1, source);
        if self.is_dir(source) {
            self.reparent_dir(source, from.0, to);
        }
        self.finish_rename(now, from.0, to.0, &[source]);
        Ok(Outcome::Unit)
    }

    /// Whether `source` may replace the existing `target`.
    fn check_replace(&self, source: Ino, target: Ino) -> Result<(), Status> {
        match (self.is_dir(source), self.is_dir(target)) {
            (true, false) => Err(Status::NotDir),
            (false, true) => Err(Status::IsDir),
            (true, true) if !self.dirs[&target].is_empty() => Err(Status::NotEmpty),
            (true, true) if self.is_session_root(target) => Err(Status::Busy),
            _ => Ok(()),
        }
    }

    /// `RENAME_EXCHANGE`: the two names swap inodes.
    fn exchange(
        &mut self,
        now: Timestamp,
        from: Place,
        to: Place,
        source: Ino,
        target: Ino,
    ) -> Result<Outcome, Status> {
        if source == target {
            return Ok(Outcome::Unit);
        }
        if self.is_dir(source) && self.is_ancestor_or_self(source, to.0) {
            return Err(Status::Invalid);
        }
        if self.is_dir(target) && self.is_ancestor_or_self(target, from.0) {
            return Err(Status::Invalid);
        }
        self.dirs.get_mut(&from.0).expect("source directory").insert(from.1.to_string(), target);
        self.dirs.get_mut(&to.0).expect("target directory").insert(to.1.to_string(), source);
        self.mark(Key::Dirent(from.0, from.1.to_string()));
        self.mark(Key::Dirent(to.0, to.1.to_string()));
        if self.is_dir(source) {
            self.reparent_dir(source, from.0, to);
        }
        if self.is_dir(target) {
            self.reparent_dir(target, to.0, from);
        }
        self.finish_rename(now, from.0, to.0, &[source, target]);
        Ok(Outcome::Unit)
    }

    /// Directory `dir` moved from `old_parent` to `to`: fix its back pointer and both
    /// parents' link counts (each subdirectory's `..` links its parent).
    fn reparent_dir(&mut self, dir: Ino, old_parent: Ino, to: Place) {
        let node = self.inode_mut(dir);
        node.parent = to.0;
        node.name = to.1.to_string();
        if old_parent != to.0 {
            self.inode_mut(old_parent).nlink -= 1;
            self.inode_mut(to.0).nlink += 1;
        }
    }

    fn finish_rename(&mut self, now: Timestamp, from_dir: Ino, to_dir: Ino, moved: &[Ino]) {
        for ino in moved {
            self.inode_mut(*ino).ctime = now;
        }
        self.touch_dir(from_dir, now);
        self.touch_dir(to_dir, now);
    }
}
