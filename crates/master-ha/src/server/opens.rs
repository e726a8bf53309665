//! Open files, held in the leader's memory, and the freeing of unlinked files nobody holds.
//!
//! Why memory: which session has which file open matters for one thing only, an unlinked
//! file (its data must stay readable through the handles still open on it). Writing every
//! open and close through Raft cost two replicated, synced commits per file read — a cold
//! read of a small file paid for two commits that change nothing a reader can see. So, as
//! MooseFS keeps open files in its master's memory and locks are kept here
//! ([`super::locks`]), opens live in this table, and the replicated state keeps every
//! unlinked regular file ("sustained", not in the trash) until the leader says, with
//! `Op::Free`, that no session holds it.
//!
//! What makes freeing safe:
//! * A new term starts with an empty table. A session is *known* to this leader once it
//!   was opened in this term or re-registered its open files (`Reopen`, which the mount
//!   sends after every resume, before anything else). Nothing is freed while a live session
//!   is not known: it may hold files this leader has not heard of. A session that never
//!   comes back ends at the session sustain time ([`super::expiry`]), and freeing resumes.
//! * An open of a sustained file that no session holds is refused (`NotFound`, as an open
//!   of a freed file is): the file is on its way out, and a `Free` already proposed for it
//!   must not take it from under a new holder. The check and the choice of what to free
//!   are made under the table's lock, so they cannot interleave.
//! * A create registers the new file here before its entry is proposed, so the file is
//!   held from the moment it exists.
//! * `Free` itself (apply) frees only files that are still sustained, so a late or retried
//!   one changes nothing.
//!
//! Counts are per `(session, file)`: the mount sends one `Open` per file it starts holding
//! and one `Release` when it stops. Both carry the request's `seq`, and a retry of one this
//! table has already carried out (in this term) is answered without counting again.
//! `Reopen` sets the counts absolutely and forgets those seqs: the mount counts a file held
//! only once its `Open` was answered and released once its `Release` was, so after a
//! `Reopen` the retry of a request that went unanswered must count.
//!
//! Lock order: the table's lock may be held while the applied state is read, never the
//! other way round (the opens' checks read the state under the table's lock).

use super::leadership::Epoch;
use super::{Service, Shutdown};
use mfsha_meta::{Entry, Op, FREE_BATCH_MAX};
use mfsha_proto::client::{ClientOp, ClientReply, Request};
use mfsha_proto::types::{Ino, Reply, SessionId, Status};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks for sustained files to free.
pub const FREE_PERIOD: Duration = Duration::from_millis(200);

/// Most request seqs remembered per session for retries (a mount has far fewer in flight).
const SEQ_WINDOW: usize = 1024;

/// The seqs of a session's opens and releases carried out in this term, the oldest dropped
/// first past [`SEQ_WINDOW`].
#[derive(Default)]
struct Seen {
    seqs: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    /// True if `seq` is new (and remembers it); seq 0 (no retry identity) is always new.
    fn first_time(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        if !self.seqs.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > SEQ_WINDOW {
            let oldest = self.order.pop_front().expect("longer than the window");
            self.seqs.remove(&oldest);
        }
        true
    }

    fn contains(&self, seq: u64) -> bool {
        seq != 0 && self.seqs.contains(&seq)
    }
}

#[derive(Default)]
struct Inner {
    /// The Raft term the table belongs to; a new term starts empty.
    term: u64,
    /// Sessions that re-registered their open files in this term (see the module docs).
    reopened: HashSet<SessionId>,
    /// What each session holds open, with counts.
    held: HashMap<SessionId, HashMap<Ino, u32>>,
    /// How many sessions hold each file.
    holders: HashMap<Ino, u32>,
    /// Opens and releases carried out, by session, for retries.
    seen: HashMap<SessionId, Seen>,
}

impl Inner {
    fn observe(&mut self, epoch: Epoch) {
        if self.term != epoch.term {
            if !self.held.is_empty() {
                tracing::info!(
                    old_term = self.term,
                    term = epoch.term,
                    sessions = self.held.len(),
                    "new term: forgetting open files; mounts re-register them when they reconnect"
                );
            }
            *self = Inner { term: epoch.term, ..Inner::default() };
        }
    }

    fn add(&mut self, session: SessionId, ino: Ino, count: u32) {
        let files = self.held.entry(session).or_default();
        let n = files.entry(ino).or_insert(0);
        if *n == 0 {
            *self.holders.entry(ino).or_insert(0) += 1;
        }
        *n = n.saturating_add(count);
    }

    fn remove_one(&mut self, session: SessionId, ino: Ino) {
        let Some(files) = self.held.get_mut(&session) else { return };
        let Some(n) = files.get_mut(&ino) else { return };
        *n -= 1;
        if *n == 0 {
            files.remove(&ino);
            if files.is_empty() {
                self.held.remove(&session);
            }
            self.drop_file(ino);
        }
    }

    fn drop_file(&mut self, ino: Ino) {
        if let Some(n) = self.holders.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.holders.remove(&ino);
            }
        }
    }

    fn drop_session(&mut self, session: SessionId) {
        for ino in self.held.remove(&session).unwrap_or_default().into_keys() {
            self.drop_file(ino);
        }
        self.reopened.remove(&session);
        self.seen.remove(&session);
    }
}

/// The leader's table of open files. See the module documentation.
#[derive(Default)]
pub struct OpenTable {
    inner: Mutex<Inner>,
}

/// Why an open was refused by the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The session holds the most files it may (`client.max_open_files_per_session`).
    TooMany { held: usize },
    /// The file is unlinked and held by nobody: it is being freed.
    Unlinked,
    /// No such inode.
    Missing,
}

/// What the applied state says of an inode about to be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Missing,
    /// Unlinked, waiting to be freed (sustained).
    Unlinked,
    /// Anything else that exists (linked, or in the trash).
    Present,
}

impl OpenTable {
    /// Registers one more open of `ino` by `session` (request `seq`), unless the session
    /// holds `cap` other files already, or `find` (asked under the table's lock, so that a
    /// free cannot be chosen meanwhile) says the inode is missing, or unlinked while nobody
    /// holds it. A retried `seq` already carried out changes nothing.
    pub fn open(
        &self,
        epoch: Epoch,
        (session, seq): (SessionId, u64),
        ino: Ino,
        cap: usize,
        find: impl FnOnce(Ino) -> Found,
    ) -> Result<(), Refusal> {
        let mut inner = self.inner.lock();
        inner.observe(epoch);
        if inner.seen.get(&session).is_some_and(|s| s.contains(seq)) {
            return Ok(());
        }
        let files = inner.held.get(&session);
        let holds_it = files.is_some_and(|f| f.contains_key(&ino));
        let held = files.map_or(0, HashMap::len);
        if !holds_it && held >= cap {
            return Err(Refusal::TooMany { held });
        }
        match find(ino) {
            Found::Missing => return Err(Refusal::Missing),
            Found::Unlinked if !inner.holders.contains_key(&ino) => return Err(Refusal::Unlinked),
            Found::Unlinked | Found::Present => {}
        }
        inner.seen.entry(session).or_default().first_time(seq);
        inner.add(session, ino, 1);
        Ok(())
    }

    /// Registers the file a create of `session` is about to make (before its entry is
    /// proposed, so that it is held from the moment it exists), unless the session holds
    /// `cap` files; `undo_create` takes it back if the create fails.
    pub fn creating(
        &self,
        epoch: Epoch,
        session: SessionId,
        ino: Ino,
        cap: usize,
    ) -> Result<(), Refusal> {
        self.open(epoch, (session, 0), ino, cap, |_| Found::Present)
    }

    /// Takes back a registration of [`OpenTable::creating`].
    pub fn undo_create(&self, epoch: Epoch, session: SessionId, ino: Ino) {
        let mut inner = self.inner.lock();
        if inner.term == epoch.term {
            inner.remove_one(session, ino);
        }
    }

    /// One open of `ino` by `session` fewer (request `seq`). Releasing what is not held
    /// changes nothing (a release sent to a new leader before the mount re-registered);
    /// neither does a retried `seq` already carried out.
    pub fn release(&self, epoch: Epoch, (session, seq): (SessionId, u64), ino: Ino) {
        let mut inner = self.inner.lock();
        inner.observe(epoch);
        if !inner.seen.entry(session).or_default().first_time(seq) {
            return;
        }
        inner.remove_one(session, ino);
    }

    /// Sets what `session` holds to `files` (a mount after it resumed its session) and
    /// counts the session as known in this term. Refused if that is more than `cap` files.
    pub fn reopen(
        &self,
        epoch: Epoch,
        session: SessionId,
        files: &[(Ino, u32)],
        cap: usize,
    ) -> Result<(), Refusal> {
        let mut inner = self.inner.lock();
        inner.observe(epoch);
        let distinct: HashSet<Ino> = files.iter().map(|(ino, _)| *ino).collect();
        if distinct.len() > cap {
            return Err(Refusal::TooMany { held: distinct.len() });
        }
        inner.drop_session(session);
        for &(ino, count) in files.iter().filter(|(_, count)| *count > 0) {
            inner.add(session, ino, count);
        }
        inner.reopened.insert(session);
        Ok(())
    }

    /// Forgets everything `session` held (it said goodbye or expired).
    pub fn end_session(&self, session: SessionId) {
        self.inner.lock().drop_session(session);
    }

    /// How many files `session` holds, and whether `ino` is one of them.
    pub fn count(&self, session: SessionId, ino: Ino) -> (usize, bool) {
        let inner = self.inner.lock();
        let files = inner.held.get(&session);
        (files.map_or(0, HashMap::len), files.is_some_and(|f| f.contains_key(&ino)))
    }

    /// Files held open, by session.
    pub fn by_session(&self) -> HashMap<SessionId, usize> {
        self.inner.lock().held.iter().map(|(s, f)| (*s, f.len())).collect()
    }

    /// Of the `sustained` files, those this leader may free now: held by no session, and
    /// only if every one of `live` sessions is known in this term (`opened_here` says
    /// whether this leader opened one in it). Empty otherwise.
    pub fn freeable(
        &self,
        epoch: Epoch,
        live: &[SessionId],
        opened_here: impl Fn(SessionId) -> bool,
        sustained: &[Ino],
    ) -> Vec<Ino> {
        let mut inner = self.inner.lock();
        inner.observe(epoch);
        let unknown = live.iter().find(|s| !inner.reopened.contains(s) && !opened_here(**s));
        if let Some(session) = unknown {
            tracing::debug!(
                session,
                "not freeing unlinked files: a session has yet to re-register"
            );
            return Vec::new();
        }
        sustained.iter().copied().filter(|ino| !inner.holders.contains_key(ino)).collect()
    }
}

/// The status a refusal answers, logged where an operator should see it.
pub fn refused(refusal: Refusal, session: SessionId, ino: Ino, cap: usize) -> Status {
    match refusal {
        Refusal::TooMany { held } => {
            tracing::warn!(
                session,
                held,
                cap,
                "refused an open: the session holds client.max_open_files_per_session files"
            );
            Status::TooManyOpen
        }
        Refusal::Unlinked => {
            tracing::debug!(session, ino, "refused an open of an unlinked file nobody holds");
            Status::NotFound
        }
        Refusal::Missing => Status::NotFound,
    }
}

/// Looks for unlinked files to free every [`FREE_PERIOD`] until `shutdown`. Every master
/// runs it; only a leader's rounds propose.
pub async fn run(service: Arc<Service>, shutdown: Shutdown) {
    super::every(FREE_PERIOD, shutdown, || {
        let service = service.clone();
        async move {
            free_round(&service).await;
        }
    })
    .await
}

/// Frees, in one entry, up to [`FREE_BATCH_MAX`] sustained files nobody holds; returns how
/// many it named. Proposes nothing unless this master leads.
pub async fn free_round(service: &Service) -> usize {
    let Some(epoch) = service.leadership.epoch() else { return 0 };
    let (live, sustained): (Vec<SessionId>, Vec<Ino>) = service.meta.read(|s| {
        if s.counts().sustained_inodes == 0 {
            return (Vec::new(), Vec::new());
        }
        let live = s.sessions().map(|(id, ..)| id).collect();
        (live, s.sustained().take(FREE_BATCH_MAX).collect())
    });
    if sustained.is_empty() {
        return 0;
    }
    let opened_here = |s| service.sessions.opened_in(s, epoch.term);
    let inos = service.opens.freeable(epoch, &live, opened_here, &sustained);
    if inos.is_empty() {
        return 0;
    }
    let count = inos.len();
    let entry = Entry { now: service.meta.cluster_now(), client: None, op: Op::Free { inos } };
    match service.meta.propose(entry).await {
        Ok(_) => {
            tracing::debug!(count, "freed unlinked files no session holds");
            count
        }
        Err(status) => {
            tracing::debug!(%status, "freeing unlinked files not committed; retrying later");
            0
        }
    }
}

/// Answers `Open`, `Release` and `Reopen` from the table: no commit.
pub fn handle(service: &Service, request: &Request) -> Reply<ClientReply> {
    let session = request.session;
    if session == 0 || service.meta.read(|s| s.session_root(session)).is_none() {
        return Err(Status::BadSession);
    }
    let epoch = service.leadership.epoch().ok_or(Status::NotLeader)?;
    let cap = service.max_open_files_per_session;
    let meta = &service.meta;
    match &request.op {
        ClientOp::Open { ino, .. } => {
            let find = |ino| {
                meta.read(|s| match s.getattr(ino) {
                    Err(_) => Found::Missing,
                    Ok(_) if s.is_sustained(ino) => Found::Unlinked,
                    Ok(_) => Found::Present,
                })
            };
            let who = (session, request.seq);
            service
                .opens
                .open(epoch, who, *ino, cap, find)
                .map_err(|r| refused(r, session, *ino, cap))?;
            // Open answers the attributes, so the client can check access and size. Held
            // now, the file cannot be freed before they are read.
            Ok(ClientReply::Attr(meta.read(|s| s.getattr(*ino))?))
        }
        ClientOp::Release { ino } => {
            service.opens.release(epoch, (session, request.seq), *ino);
            Ok(ClientReply::Unit)
        }
        ClientOp::Reopen { files } => {
            let reopened = service.opens.reopen(epoch, session, files, cap);
            reopened.map_err(|r| refused(r, session, 0, cap))?;
            tracing::debug!(session, files = files.len(), "open files re-registered");
            Ok(ClientReply::Unit)
        }
        other => {
            tracing::error!(?other, "request routed to the open-file table by mistake");
            Err(Status::NotSupported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn epoch(term: u64) -> Epoch {
        Epoch { term, since: Instant::now() }
    }

    const CAP: usize = 10;
    fn linked(_: Ino) -> Found {
        Found::Present
    }
    fn unlinked(_: Ino) -> Found {
        Found::Unlinked
    }

    #[test]
    fn a_file_held_by_some_session_is_not_freeable_until_its_last_release() {
        let t = OpenTable::default();
        t.open(epoch(1), (1, 1), 50, CAP, linked).unwrap();
        t.open(epoch(1), (1, 2), 50, CAP, linked).unwrap();
        t.open(epoch(1), (2, 1), 50, CAP, linked).unwrap();
        let all = |_| true;
        assert_eq!(t.freeable(epoch(1), &[1, 2], all, &[50, 51]), vec![51]);
        t.release(epoch(1), (1, 3), 50);
        t.release(epoch(1), (2, 2), 50);
        assert!(t.freeable(epoch(1), &[1, 2], all, &[50]).is_empty(), "1 holds it once more");
        t.release(epoch(1), (1, 4), 50);
        t.release(epoch(1), (1, 5), 50); // one too many: changes nothing
        assert_eq!(t.freeable(epoch(1), &[1, 2], all, &[50]), vec![50]);
        assert_eq!(t.count(1, 50), (0, false));
    }

    #[test]
    fn a_retried_open_or_release_counts_once() {
        let t = OpenTable::default();
        t.open(epoch(1), (1, 7), 50, CAP, linked).unwrap();
        t.open(epoch(1), (1, 7), 50, CAP, linked).unwrap();
        t.open(epoch(1), (1, 8), 50, CAP, linked).unwrap();
        t.release(epoch(1), (1, 9), 50);
        t.release(epoch(1), (1, 9), 50);
        assert_eq!(t.count(1, 50), (1, true), "two opens, one release");
        // After a reopen the seqs are forgotten: a retry of an unanswered release counts.
        t.reopen(epoch(1), 1, &[(50, 1)], CAP).unwrap();
        t.release(epoch(1), (1, 9), 50);
        assert_eq!(t.count(1, 50), (0, false));
    }

    #[test]
    fn an_unlinked_file_nobody_holds_cannot_be_opened_but_a_held_one_can() {
        let t = OpenTable::default();
        assert_eq!(t.open(epoch(1), (1, 1), 7, CAP, unlinked), Err(Refusal::Unlinked));
        assert_eq!(t.open(epoch(1), (1, 2), 7, CAP, |_| Found::Missing), Err(Refusal::Missing));
        t.open(epoch(1), (1, 3), 8, CAP, linked).unwrap();
        t.open(epoch(1), (2, 1), 8, CAP, unlinked).expect("session 1 still holds the unlinked 8");
        t.creating(epoch(1), 3, 9, CAP).unwrap();
        assert_eq!(t.count(3, 9), (1, true), "a file being created is held");
        t.undo_create(epoch(1), 3, 9);
        assert_eq!(t.count(3, 9), (0, false));
    }

    #[test]
    fn nothing_is_freed_while_a_live_session_is_unknown_in_a_new_term() {
        let t = OpenTable::default();
        t.open(epoch(1), (1, 1), 5, CAP, linked).unwrap();
        let opened_here = |s| s == 2;
        // Term 2: the table starts empty; session 1 (from term 1) has not re-registered.
        assert!(t.freeable(epoch(2), &[1, 2], opened_here, &[5, 6]).is_empty());
        assert_eq!(t.count(1, 5), (0, false), "the new term forgot term 1's opens");
        t.reopen(epoch(2), 1, &[(5, 1)], CAP).unwrap();
        assert_eq!(t.freeable(epoch(2), &[1, 2], opened_here, &[5, 6]), vec![6]);
        t.end_session(1);
        assert_eq!(t.freeable(epoch(2), &[2], opened_here, &[5, 6]), vec![5, 6]);
    }

    #[test]
    fn reopen_sets_counts_and_the_cap_holds() {
        let t = OpenTable::default();
        for ino in 0..CAP as u64 {
            t.open(epoch(1), (1, ino + 1), ino, CAP, linked).unwrap();
        }
        let over = t.open(epoch(1), (1, 100), 99, CAP, linked);
        assert_eq!(over, Err(Refusal::TooMany { held: CAP }));
        t.open(epoch(1), (1, 101), 3, CAP, linked).expect("a file it holds already");
        assert_eq!(t.creating(epoch(1), 1, 99, CAP), Err(Refusal::TooMany { held: CAP }));
        t.reopen(epoch(1), 1, &[(3, 2), (4, 0)], CAP).unwrap();
        assert_eq!(t.count(1, 3), (1, true));
        assert_eq!(t.count(1, 4), (1, false), "a zero count holds nothing");
        t.release(epoch(1), (1, 102), 3);
        assert_eq!(t.count(1, 3), (1, true), "reopened with two opens");
        let many: Vec<(Ino, u32)> = (0..=CAP as u64).map(|i| (i, 1)).collect();
        assert_eq!(t.reopen(epoch(1), 1, &many, CAP), Err(Refusal::TooMany { held: CAP + 1 }));
    }
}
