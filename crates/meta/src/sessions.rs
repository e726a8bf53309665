//! Sessions and what they hold open, and the trash (purge, undelete).
//!
//! A session ends with `CloseSession` (the client said goodbye) or `ExpireSession` (the leader
//! saw no connection for the session sustain time); both release everything it holds open.

use crate::model::*;
use crate::op::Outcome;
use crate::state::State;
use crate::table::Key;
use mfsha_proto::types::*;
use std::collections::BTreeMap;

/// Most inodes one `Op::Free` names: an entry stays far below the frame limit.
pub const FREE_BATCH_MAX: usize = 4096;

impl State {
    /// Opens `session`, or answers the live session an earlier entry opened with `token`
    /// (a retried open: the client never learnt that the first one committed).
    pub(crate) fn open_session(
        &mut self,
        session: SessionId,
        info: &str,
        root: Ino,
        token: u64,
    ) -> Result<Outcome, Status> {
        if let Some((opened, root)) = self.session_by_token(token) {
            return Ok(Outcome::Session { session: opened, root });
        }
        if session == 0 || info.len() > SESSION_INFO_MAX {
            return Err(Status::Invalid);
        }
        if self.sessions.contains_key(&session) {
            return Err(Status::Exists);
        }
        self.entries(root)?;
        let rec = SessionRec { info: info.to_string(), root, token };
        let new = Session { rec, acquired: BTreeMap::new(), replies: BTreeMap::new() };
        self.sessions.insert(session, new);
        self.mark(Key::Session(session));
        Ok(Outcome::Session { session, root })
    }

    /// Ends a session; everything it held is released.
    pub(crate) fn close_session(&mut self, session: SessionId) -> Result<Outcome, Status> {
        let held = self.sessions.get(&session).ok_or(Status::BadSession)?;
        let inodes: Vec<Ino> = held.acquired.keys().copied().collect();
        for ino in inodes {
            self.drop_acquisition(session, ino);
        }
        let slots: Vec<u64> = self.sessions[&session].replies.keys().copied().collect();
        for slot in slots {
            self.mark(Key::Reply(session, slot));
        }
        self.sessions.remove(&session);
        self.mark(Key::Session(session));
        Ok(Outcome::Unit)
    }

    pub(crate) fn acquire(&mut self, session: SessionId, ino: Ino) -> Result<Outcome, Status> {
        if !self.sessions.contains_key(&session) {
            return Err(Status::BadSession);
        }
        self.inode(ino)?;
        let held = self.sessions.get_mut(&session).expect("checked above");
        let count = held.acquired.entry(ino).or_insert(0);
        *count = count.checked_add(1).ok_or(Status::TooManyLinks)?;
        self.holders.entry(ino).or_default().insert(session);
        self.mark(Key::Acquired(session, ino));
        Ok(Outcome::Unit)
    }

    pub(crate) fn release(&mut self, session: SessionId, ino: Ino) -> Result<Outcome, Status> {
        let held = self.sessions.get_mut(&session).ok_or(Status::BadSession)?;
        let count = held.acquired.get_mut(&ino).ok_or(Status::NotFound)?;
        *count -= 1;
        if *count > 0 {
            self.mark(Key::Acquired(session, ino));
        } else {
            self.drop_acquisition(session, ino);
        }
        Ok(Outcome::Unit)
    }

    /// `session` no longer holds `ino` at all. A sustained file stays so: the leader frees it
    /// (`Op::Free`) once no session has it open in its memory either.
    fn drop_acquisition(&mut self, session: SessionId, ino: Ino) {
        let held = self.sessions.get_mut(&session).expect("dropping from a live session");
        assert!(held.acquired.remove(&ino).is_some(), "session {session} did not hold {ino}");
        self.mark(Key::Acquired(session, ino));
        let sessions = self.holders.get_mut(&ino).expect("holder index lists an acquisition");
        sessions.remove(&session);
        if sessions.is_empty() {
            self.holders.remove(&ino);
        }
    }

    /// Takes a file out of the trash for good: it is sustained until the leader frees it
    /// (`Op::Free`), as an unlinked file is, since a session may have it open.
    pub(crate) fn purge(&mut self, ino: Ino) -> Result<Outcome, Status> {
        if !self.trash.contains_key(&ino) {
            return Err(Status::NotFound);
        }
        self.trash.remove(&ino);
        self.mark(Key::Trash(ino));
        self.sustained.insert(ino);
        Ok(Outcome::Unit)
    }

    /// Frees each of `inos` that is still sustained and that no acquisition of an older log
    /// holds (those are freed when released, as before); the others are left alone, so a
    /// retried or late `Free` changes nothing.
    pub(crate) fn free_unheld(&mut self, inos: &[Ino]) -> Result<Outcome, Status> {
        if inos.len() > FREE_BATCH_MAX {
            return Err(Status::Invalid);
        }
        for &ino in inos {
            if self.sustained.contains(&ino) && !self.holders.contains_key(&ino) {
                self.free_inode(ino);
            }
        }
        Ok(Outcome::Unit)
    }

    /// Puts a trashed file back under its name, in its original directory if that still
    /// exists, else in the root.
    pub(crate) fn undelete(&mut self, now: Timestamp, ino: Ino) -> Result<Outcome, Status> {
        let rec = self.trash.get(&ino).ok_or(Status::NotFound)?;
        let parent = if self.is_dir(rec.parent) { rec.parent } else { ROOT_INO };
        if self.dirs[&parent].contains_key(&rec.name) {
            return Err(Status::Exists);
        }
        let rec = self.trash.remove(&ino).expect("checked above");
        self.mark(Key::Trash(ino));
        let node = self.inode_mut(ino);
        node.nlink = 1;
        node.ctime = now;
        self.add_entry(parent, &rec.name, ino);
        self.touch_dir(parent, now);
        Ok(Outcome::Attr(self.attr(ino)))
    }
}
