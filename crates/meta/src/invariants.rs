//! [`State::check_invariants`]: the model's invariants, each a small check. Tests run them
//! after every step; `load` runs them on every state it rebuilds.

use crate::idmap::{IdMap, IdSet};
use crate::model::*;
use crate::ns::check_name;
use crate::state::State;
use mfsha_proto::types::*;
use std::collections::BTreeMap;

/// Stop collecting after this many problems: one is enough to refuse, a million helps nobody.
const MAX_PROBLEMS: usize = 100;

struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: String) {
        if self.0.len() < MAX_PROBLEMS {
            self.0.push(problem);
        }
    }
}

impl State {
    /// Every violated invariant, described (at most 100).
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let mut p = Problems(Vec::new());
        self.check_root(&mut p);
        self.check_inodes(&mut p);
        self.check_dirents(&mut p);
        self.check_link_counts(&mut p);
        self.check_tree(&mut p);
        self.check_chunks(&mut p);
        self.check_unlinked(&mut p);
        self.check_sessions(&mut p);
        self.check_ids(&mut p);
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    fn check_root(&self, p: &mut Problems) {
        match self.inodes.get(&ROOT_INO) {
            None => p.add(format!("root inode {ROOT_INO} is missing")),
            Some(root) if !root.is_dir() => p.add("root is not a directory".into()),
            Some(root) if root.parent != ROOT_INO => {
                p.add(format!("root's parent is {}, not itself", root.parent))
            }
            Some(_) => {}
        }
    }

    /// Per-inode shape: fields that belong to other kinds are empty.
    fn check_inodes(&self, p: &mut Problems) {
        for (ino, node) in &self.inodes {
            if node.mode & !0o7777 != 0 {
                p.add(format!("inode {ino}: mode {:o} has bits beyond 0o7777", node.mode));
            }
            if !(1..=MAX_GOAL).contains(&node.goal) {
                p.add(format!("inode {ino}: goal {} outside 1..={MAX_GOAL}", node.goal));
            }
            if node.is_dir() != self.dirs.contains_key(ino) {
                p.add(format!("inode {ino}: directory kind and entry table disagree"));
            }
            let is_symlink = node.kind == FileKind::Symlink;
            if is_symlink && (node.target.is_empty() || node.size != node.target.len() as u64) {
                p.add(format!("symlink {ino}: empty target or size not its length"));
            }
            if !is_symlink && !node.target.is_empty() {
                p.add(format!("inode {ino}: non-symlink with a target"));
            }
            if !node.is_file() && !node.chunks.is_empty() {
                p.add(format!("inode {ino}: non-file with chunks"));
            }
            let sorted = node.chunks.windows(2).all(|w| w[0].0 < w[1].0);
            if !sorted || node.chunks.iter().any(|(_, id)| *id == 0) {
                p.add(format!("file {ino}: chunk list unsorted or holds id 0"));
            }
            if node.size > MAX_FILE_SIZE {
                p.add(format!("file {ino}: size {} above the maximum", node.size));
            }
        }
        if self.dirs.len() != self.inodes.values().filter(|n| n.is_dir()).count() {
            p.add("entry tables exist for inodes that are not directories".into());
        }
    }

    /// Every entry is a valid name in a directory and names an existing inode; directories
    /// know where they are.
    fn check_dirents(&self, p: &mut Problems) {
        for (parent, entries) in &self.dirs {
            for (name, child) in entries {
                if check_name(name).is_err() {
                    p.add(format!("directory {parent}: invalid entry name {name:?}"));
                }
                let Some(node) = self.inodes.get(child) else {
                    p.add(format!("entry {parent}/{name:?} names missing inode {child}"));
                    continue;
                };
                if node.is_dir() && (node.parent != *parent || node.name != *name) {
                    p.add(format!(
                        "directory {child} is {parent}/{name:?} but records {}/{:?}",
                        node.parent, node.name
                    ));
                }
                if *child == ROOT_INO {
                    p.add(format!("root is linked as {parent}/{name:?}"));
                }
            }
        }
    }

    /// nlink = number of entries naming the inode; directories: 2 + subdirectories.
    fn check_link_counts(&self, p: &mut Problems) {
        let mut names: IdMap<Ino, u64> = IdMap::default();
        let mut subdirs: IdMap<Ino, u64> = IdMap::default();
        for (parent, entries) in &self.dirs {
            for child in entries.values() {
                *names.entry(*child).or_default() += 1;
                if self.is_dir(*child) {
                    *subdirs.entry(*parent).or_default() += 1;
                }
            }
        }
        for (ino, node) in &self.inodes {
            let named = names.get(ino).copied().unwrap_or(0);
            let expected = if node.is_dir() {
                let expected_names = u64::from(*ino != ROOT_INO);
                if named != expected_names {
                    p.add(format!("directory {ino} has {named} names, expected {expected_names}"));
                }
                2 + subdirs.get(ino).copied().unwrap_or(0)
            } else {
                named
            };
            if u64::from(node.nlink) != expected {
                p.add(format!("inode {ino}: nlink {} but {expected} links", node.nlink));
            }
        }
    }

    /// Every directory is reachable from the root exactly once (so there are no cycles).
    fn check_tree(&self, p: &mut Problems) {
        let mut seen: IdSet<Ino> = IdSet::default();
        let mut stack = vec![ROOT_INO];
        while let Some(dir) = stack.pop() {
            if !seen.insert(dir) {
                p.add(format!("directory {dir} reached twice from the root"));
                continue;
            }
            let Some(entries) = self.dirs.get(&dir) else { continue };
            stack.extend(entries.values().filter(|c| self.is_dir(**c)));
        }
        for ino in self.dirs.keys() {
            if !seen.contains(ino) {
                p.add(format!("directory {ino} is not reachable from the root"));
            }
        }
    }

    /// Chunk owners are exactly the files' references; no unreferenced chunks.
    fn check_chunks(&self, p: &mut Problems) {
        let mut refs: BTreeMap<ChunkId, Vec<Ino>> = BTreeMap::new();
        for (ino, node) in &self.inodes {
            for (_, id) in &node.chunks {
                refs.entry(*id).or_default().push(*ino);
            }
        }
        for (id, chunk) in &self.chunks {
            let mut owners = chunk.owners.clone();
            owners.sort_unstable();
            let mut found = refs.remove(id).unwrap_or_default();
            found.sort_unstable();
            if owners.is_empty() {
                p.add(format!("chunk {id} has no references but is still in the table"));
            }
            if owners != found {
                p.add(format!("chunk {id}: owners {owners:?} but referenced by {found:?}"));
            }
        }
        for (id, files) in refs {
            p.add(format!("chunk {id} referenced by {files:?} is not in the chunk table"));
        }
    }

    /// Only trashed and sustained files have no links, and those have no names.
    fn check_unlinked(&self, p: &mut Problems) {
        if !self.trash.index_matches() {
            p.add("the trash's expiry index does not match its records".to_string());
        }
        for (ino, rec) in self.trash.iter() {
            match self.inodes.get(ino) {
                None => p.add(format!("trash entry {ino} ({}) has no inode", rec.path)),
                Some(node) if !node.is_file() || node.nlink != 0 => {
                    p.add(format!("trashed inode {ino} is not an unlinked regular file"))
                }
                Some(node)
                    if self.trash.expires(ino)
                        != Some(crate::trash::expiry(rec.deleted_at, node.trash_seconds)) =>
                {
                    p.add(format!("trashed inode {ino} is indexed under the wrong expiry"))
                }
                Some(_) => {}
            }
        }
        for ino in &self.sustained {
            if self.trash.contains_key(ino) {
                p.add(format!("inode {ino} is both trashed and sustained"));
            }
        }
        for (ino, node) in &self.inodes {
            let kept = self.trash.contains_key(ino) || self.sustained.contains(ino);
            if node.nlink == 0 && !kept {
                p.add(format!("inode {ino} has no links and is neither trashed nor sustained"));
            }
            if node.nlink != 0 && self.sustained.contains(ino) {
                p.add(format!("sustained inode {ino} still has {} links", node.nlink));
            }
        }
    }

    /// Acquisitions name live inodes, counts are positive, the holder index matches; no two
    /// sessions share an open token.
    fn check_sessions(&self, p: &mut Problems) {
        let mut holders: IdMap<Ino, Vec<SessionId>> = IdMap::default();
        let mut tokens: BTreeMap<u64, SessionId> = BTreeMap::new();
        for (id, session) in &self.sessions {
            let token = session.rec.token;
            if let Some(other) = tokens.insert(token, *id).filter(|_| token != 0) {
                p.add(format!("sessions {other} and {id} were opened with the same token"));
            }
            if !self.is_dir(session.rec.root) {
                p.add(format!("session {id}: root {} is not a directory", session.rec.root));
            }
            for (slot, (seq, _)) in &session.replies {
                if crate::model::reply_slot(*seq) != *slot {
                    p.add(format!("session {id} keeps the reply to seq {seq} in slot {slot}"));
                }
            }
            for (ino, count) in &session.acquired {
                if *count == 0 || !self.inodes.contains_key(ino) {
                    p.add(format!("session {id} holds inode {ino} {count} times"));
                }
                holders.entry(*ino).or_default().push(*id);
            }
        }
        let index: IdMap<Ino, Vec<SessionId>> =
            self.holders.iter().map(|(i, s)| (*i, s.iter().copied().collect())).collect();
        if holders != index {
            p.add("holder index differs from the sessions' acquisitions".into());
        }
    }

    fn check_ids(&self, p: &mut Problems) {
        let mut kinds = crate::state::KindCounts::default();
        for node in self.inodes.values() {
            match node.kind {
                FileKind::Directory => kinds.directories += 1,
                FileKind::File => kinds.files += 1,
                _ => {}
            }
        }
        if kinds != self.kinds {
            p.add(format!("kept inode counts {:?}, counted {kinds:?}", self.kinds));
        }
        if let Some(max) = self.inodes.keys().max().filter(|m| **m >= self.next_ino) {
            p.add(format!("inode {max} is not below next_ino {}", self.next_ino));
        }
        if let Some(max) = self.chunks.keys().max().filter(|m| **m >= self.next_chunk_id) {
            p.add(format!("chunk {max} is not below next_chunk_id {}", self.next_chunk_id));
        }
    }
}
