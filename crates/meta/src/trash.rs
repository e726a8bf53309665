//! [`Trash`]: deleted files kept for their trash time, by inode and by the moment they expire.
//!
//! The leader asks every second which files have expired; with a million files in the trash
//! (a day's deletions at MooseFS's default trash time) a walk over all of them held the state
//! lock that apply waits for, on every round. The expiry index makes that question cost what
//! it returns.

use crate::model::TrashRec;
use mfsha_proto::types::{Ino, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// The trash. The expiry of each file is `deleted_at + trash_seconds` of its inode, fixed
/// when it is trashed and again whenever its trash time changes ([`Trash::retime`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Trash {
    by_ino: BTreeMap<Ino, (TrashRec, Timestamp)>,
    by_expiry: BTreeSet<(Timestamp, Ino)>,
}

impl Trash {
    /// Trashes `ino`, expiring `trash_seconds` after its deletion. False if it was there
    /// already (its record and expiry are replaced).
    pub fn insert(&mut self, ino: Ino, rec: TrashRec, trash_seconds: u32) -> bool {
        let expires = expiry(rec.deleted_at, trash_seconds);
        let old = self.by_ino.insert(ino, (rec, expires));
        if let Some((_, old_expires)) = &old {
            self.by_expiry.remove(&(*old_expires, ino));
        }
        self.by_expiry.insert((expires, ino));
        old.is_none()
    }

    pub fn remove(&mut self, ino: &Ino) -> Option<TrashRec> {
        let (rec, expires) = self.by_ino.remove(ino)?;
        let indexed = self.by_expiry.remove(&(expires, *ino));
        debug_assert!(indexed, "trashed inode {ino} missing from the expiry index");
        Some(rec)
    }

    /// The trash time of `ino` changed to `trash_seconds`: it now expires then.
    pub fn retime(&mut self, ino: Ino, trash_seconds: u32) {
        if let Some(rec) = self.remove(&ino) {
            self.insert(ino, rec, trash_seconds);
        }
    }

    pub fn get(&self, ino: &Ino) -> Option<&TrashRec> {
        self.by_ino.get(ino).map(|(rec, _)| rec)
    }

    /// When `ino` expires, if it is trashed.
    pub fn expires(&self, ino: &Ino) -> Option<Timestamp> {
        self.by_ino.get(ino).map(|(_, expires)| *expires)
    }

    pub fn contains_key(&self, ino: &Ino) -> bool {
        self.by_ino.contains_key(ino)
    }

    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Every trashed file, by inode number.
    pub fn iter(&self) -> impl Iterator<Item = (&Ino, &TrashRec)> + '_ {
        self.by_ino.iter().map(|(ino, (rec, _))| (ino, rec))
    }

    /// Up to `limit` files expired at `now`, the longest expired first.
    pub fn expired(&self, now: Timestamp, limit: usize) -> Vec<Ino> {
        let due = self.by_expiry.iter().take_while(|(expires, _)| *expires <= now);
        due.take(limit).map(|(_, ino)| *ino).collect()
    }

    /// True if both maps hold the same files (the index is derived; a bug could split them).
    pub fn index_matches(&self) -> bool {
        self.by_ino.len() == self.by_expiry.len()
            && self
                .by_ino
                .iter()
                .all(|(ino, (_, expires))| self.by_expiry.contains(&(*expires, *ino)))
    }
}

/// When a file deleted at `deleted_at` with `trash_seconds` of trash time expires.
pub(crate) fn expiry(deleted_at: Timestamp, trash_seconds: u32) -> Timestamp {
    let secs = deleted_at.secs.saturating_add(i64::from(trash_seconds));
    Timestamp::new(secs, deleted_at.nanos)
}
