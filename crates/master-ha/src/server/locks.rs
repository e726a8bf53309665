//! File locks (POSIX byte-range locks and flock) shared by every mount.
//!
//! Like MooseFS, locks live in the master's memory and are *not* replicated metadata: a lock
//! is a promise between running processes, and writing every lock and unlock through Raft
//! would cost an fsync each for state that means nothing once its holders are gone. The
//! leader keeps them here, keyed by file and by `(session, owner)`; owners are the kernel's
//! lock owners (a process's file table for POSIX locks, an open file for flock).
//!
//! Locks go away when:
//! * their owner unlocks, or closes the file (the mount sends `ReleaseLocks` on a POSIX
//!   owner's close and on the release of a flock'd open file), or its process dies (same);
//! * the session ends (`Goodbye`), or no connection has carried the session for
//!   [`DETACHED_EXPIRY`] (a mount that crashed or lost its network);
//! * the session ends (`Goodbye`, or it expired: see [`super::expiry`]);
//! * the leader changes or the master restarts: the table starts empty. Mounts re-take
//!   ("reclaim") the locks they hold when they reconnect. For [`GRACE`] after this master
//!   started leading, only reclaims are served and other lock requests wait, so a lock
//!   cannot be taken by someone else before its holder had a chance to reclaim it. The
//!   grace counts from the start of leadership, not from the first lock request or resume:
//!   a client opening a new session (or a quick holder) must not take, before the grace, a
//!   lock a slower holder still has to reclaim; and a leader that has led for a while owes
//!   no grace to a latecomer. No grace is needed when every session was opened by this
//!   leader in this term (a fresh cluster): none can hold a lock from before. A holder that
//!   reconnects after the grace may find its lock taken: the mount then logs the lock as
//!   lost.
//!
//! Requests never wait for a conflicting lock here: a conflict answers `WouldBlock`, and the
//! mount polls for F_SETLKW (so a signal to the waiting process can stop the wait).

use super::leadership::Epoch;
use super::Service;
use mfsha_proto::client::{ClientOp, ClientReply, FileLock, LockKind, OwnerLocks, Request};
use mfsha_proto::types::{Ino, Reply, SessionId, Status};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long after a master starts leading only reclaims are served.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long a session may have no connection before its locks are dropped.
pub const DETACHED_EXPIRY: Duration = Duration::from_secs(30);
/// Most lock ranges the table holds, and one owner holds on one file: a client splitting
/// ranges without end can exhaust neither the leader's memory nor its time (one owner's
/// update is linear in its ranges). Past them new locks fail with ENOSPC (Linux: ENOLCK).
pub const MAX_RANGES: usize = 1 << 20;
pub const MAX_OWNER_RANGES: usize = 10_000;
/// Most lock ranges one session (one mount) holds: an eighth of the table, so one mount
/// cannot fill it and leave the others unable to lock anything.
pub const MAX_SESSION_RANGES: usize = MAX_RANGES / 8;

/// One owner's locks on one file.
#[derive(Debug)]
struct Holder {
    session: SessionId,
    owner: u64,
    locks: OwnerLocks,
}

#[derive(Default)]
struct Inner {
    /// The Raft term the table belongs to; a new term starts with an empty table.
    term: u64,
    /// End of the reclaim-only period of this term (`None`: no grace was owed).
    grace_until: Option<Instant>,
    files: HashMap<Ino, Vec<Holder>>,
    /// Ranges held in `files`, bounded by `MAX_RANGES`.
    ranges: usize,
    /// Ranges held in `files` by each session holding any, bounded by `MAX_SESSION_RANGES`.
    by_session: HashMap<SessionId, usize>,
    /// Sessions holding locks that were seen without any connection, and since when.
    detached: HashMap<SessionId, Instant>,
}

/// The leader's lock table. See the module documentation.
pub struct LockTable {
    inner: Mutex<Inner>,
    max_ranges: usize,
    max_session_ranges: usize,
}

impl Default for LockTable {
    fn default() -> Self {
        Self::new()
    }
}

impl LockTable {
    pub fn new() -> Self {
        Self::with_limits(MAX_RANGES, MAX_SESSION_RANGES)
    }

    /// A table holding at most `max_ranges` ranges, `max_session_ranges` for one session.
    pub fn with_limits(max_ranges: usize, max_session_ranges: usize) -> Self {
        let inner = Mutex::new(Inner::default());
        LockTable { inner, max_ranges, max_session_ranges }
    }

    /// Notes the leadership the table serves: a new term empties the table (its locks belong
    /// to an old leader and are reclaimed by their holders) and, when some session may hold
    /// such locks (`inherited`), starts the grace at the start of that leadership.
    fn observe(inner: &mut Inner, epoch: Epoch, inherited: bool) {
        if inner.term != epoch.term {
            if !inner.files.is_empty() {
                tracing::info!(
                    old_term = inner.term,
                    term = epoch.term,
                    files = inner.files.len(),
                    "new term: forgetting locks; holders reclaim them when they reconnect"
                );
            }
            let grace_until = inherited.then_some(epoch.since + GRACE);
            *inner = Inner { term: epoch.term, grace_until, ..Inner::default() };
        }
    }

    /// When a non-reclaim request may be served in `epoch` (`None`: now). `inherited`: some
    /// session was not opened by this leader in this term, so it may hold locks taken from
    /// an earlier leader (only looked at on the first request of a term).
    fn wait_until(&self, epoch: Epoch, inherited: impl FnOnce() -> bool) -> Option<Instant> {
        let mut inner = self.inner.lock();
        if inner.term != epoch.term {
            Self::observe(&mut inner, epoch, inherited());
        }
        inner.grace_until.filter(|t| *t > Instant::now())
    }

    /// The first lock of another owner conflicting with `lock`.
    pub fn test(&self, ino: Ino, session: SessionId, lock: &FileLock) -> Option<FileLock> {
        let inner = self.inner.lock();
        conflict(inner.files.get(&ino)?, session, lock)
    }

    /// Applies `lock` for `(session, lock.owner)`, or `WouldBlock` if another owner's lock
    /// conflicts (nothing changes then).
    pub fn set(&self, ino: Ino, session: SessionId, lock: FileLock) -> Reply<()> {
        let mut inner = self.inner.lock();
        let blocked = inner.files.get(&ino).and_then(|h| conflict(h, session, &lock));
        if lock.kind != LockKind::Unlock && blocked.is_some() {
            return Err(Status::WouldBlock);
        }
        let total = inner.ranges;
        let of_session = inner.by_session.get(&session).copied().unwrap_or(0);
        let holders = inner.files.entry(ino).or_default();
        let mine = holders.iter().position(|h| h.session == session && h.owner == lock.owner);
        let index = match mine {
            Some(i) => i,
            None => {
                holders.push(Holder { session, owner: lock.owner, locks: OwnerLocks::default() });
                holders.len() - 1
            }
        };
        let before = holders[index].locks.ranges().len();
        let mut changed = holders[index].locks.clone();
        changed.apply(lock);
        let after = changed.ranges().len();
        let full = after > MAX_OWNER_RANGES
            || total + after > self.max_ranges + before
            || of_session + after > self.max_session_ranges + before;
        if after > before && full {
            tracing::warn!(
                session,
                ino,
                owner = lock.owner,
                ranges = total,
                session_ranges = of_session,
                "lock table full (or one owner or session holds too many ranges); refusing a lock"
            );
            if holders[index].locks.is_empty() {
                holders.swap_remove(index);
            }
            if holders.is_empty() {
                inner.files.remove(&ino);
            }
            return Err(Status::NoSpace);
        }
        holders[index].locks = changed;
        if holders[index].locks.is_empty() {
            holders.swap_remove(index);
        }
        if holders.is_empty() {
            inner.files.remove(&ino);
        }
        inner.ranges = total + after - before;
        set_session_ranges(&mut inner, session, of_session + after - before);
        Ok(())
    }

    /// Drops every lock of `(session, owner)` on `ino`.
    pub fn release(&self, ino: Ino, session: SessionId, owner: u64) {
        let mut inner = self.inner.lock();
        let mut freed = 0;
        if let Some(holders) = inner.files.get_mut(&ino) {
            holders.retain(|h| {
                let gone = h.session == session && h.owner == owner;
                if gone {
                    freed += h.locks.ranges().len();
                }
                !gone
            });
            if holders.is_empty() {
                inner.files.remove(&ino);
            }
        }
        inner.ranges -= freed;
        let of_session = inner.by_session.get(&session).copied().unwrap_or(0);
        set_session_ranges(&mut inner, session, of_session - freed);
    }

    /// Drops every lock of `session` (it ended, or stayed away too long).
    pub fn release_session(&self, session: SessionId) {
        let mut inner = self.inner.lock();
        drop_session(&mut inner, session);
    }

    /// Drops the locks of sessions that have had no connection for `DETACHED_EXPIRY`;
    /// `connected` says whether a session has a connection now.
    pub fn expire(&self, connected: impl Fn(SessionId) -> bool) {
        self.expire_at(Instant::now(), connected)
    }

    fn expire_at(&self, now: Instant, connected: impl Fn(SessionId) -> bool) {
        let mut inner = self.inner.lock();
        let mut holding: Vec<SessionId> =
            inner.files.values().flatten().map(|h| h.session).collect();
        holding.sort_unstable();
        holding.dedup();
        inner.detached.retain(|s, _| holding.contains(s));
        for session in holding {
            if connected(session) {
                inner.detached.remove(&session);
                continue;
            }
            let since = *inner.detached.entry(session).or_insert(now);
            if now.duration_since(since) >= DETACHED_EXPIRY {
                tracing::warn!(
                    session,
                    secs = DETACHED_EXPIRY.as_secs(),
                    "dropping the locks of a session that has had no connection for too long"
                );
                drop_session(&mut inner, session);
            }
        }
    }

    /// Locks held, for tests and status: (files, holders).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let ranges: usize = inner.files.values().flatten().map(|h| h.locks.ranges().len()).sum();
        assert_eq!(ranges, inner.ranges, "the range count follows the table");
        let mut by_session: HashMap<SessionId, usize> = HashMap::new();
        for h in inner.files.values().flatten().filter(|h| !h.locks.is_empty()) {
            *by_session.entry(h.session).or_default() += h.locks.ranges().len();
        }
        assert_eq!(by_session, inner.by_session, "the per-session counts follow the table");
        (inner.files.len(), inner.files.values().map(Vec::len).sum())
    }
}

fn drop_session(inner: &mut Inner, session: SessionId) {
    let mut freed = 0;
    inner.files.retain(|_, holders| {
        holders.retain(|h| {
            if h.session == session {
                freed += h.locks.ranges().len();
            }
            h.session != session
        });
        !holders.is_empty()
    });
    inner.ranges -= freed;
    inner.by_session.remove(&session);
    inner.detached.remove(&session);
}

fn set_session_ranges(inner: &mut Inner, session: SessionId, ranges: usize) {
    if ranges == 0 {
        inner.by_session.remove(&session);
    } else {
        inner.by_session.insert(session, ranges);
    }
}

/// The first range of another owner that conflicts with `lock`.
fn conflict(holders: &[Holder], session: SessionId, lock: &FileLock) -> Option<FileLock> {
    holders
        .iter()
        .filter(|h| !(h.session == session && h.owner == lock.owner))
        .flat_map(|h| h.locks.ranges())
        .find(|r| r.conflicts_with(lock))
        .copied()
}

/// Answers `GetLock`, `SetLock` and `ReleaseLocks`.
pub async fn handle(service: &Service, request: &Request) -> Reply<ClientReply> {
    let session = request.session;
    if session == 0 || service.meta.read(|s| s.session_root(session)).is_none() {
        return Err(Status::BadSession);
    }
    let epoch = service.leadership.epoch().ok_or(Status::NotLeader)?;
    let locks = &service.locks;
    locks.expire(|s| service.sessions.is_connected(s));
    let reclaim = matches!(request.op, ClientOp::SetLock { reclaim: true, .. });
    let inherited = || inherited_sessions(service, epoch.term);
    if let (false, Some(until)) = (reclaim, locks.wait_until(epoch, inherited)) {
        tokio::time::sleep_until(until).await;
    }
    match &request.op {
        ClientOp::GetLock { ino, lock } => Ok(ClientReply::Lock(locks.test(*ino, session, lock))),
        ClientOp::SetLock { ino, lock, reclaim } => {
            let lock = checked(*lock)?;
            let result = locks.set(*ino, session, lock);
            if *reclaim && result.is_err() {
                tracing::warn!(
                    session,
                    ino,
                    owner = lock.owner,
                    "a reclaimed lock was taken by another owner"
                );
            }
            result.map(|()| ClientReply::Unit)
        }
        ClientOp::ReleaseLocks { ino, owner } => {
            locks.release(*ino, session, *owner);
            Ok(ClientReply::Unit)
        }
        other => {
            tracing::error!(?other, "request routed to the lock table by mistake");
            Err(Status::NotSupported)
        }
    }
}

/// True if some session was not opened by this master in `term`: it may have taken locks
/// from an earlier leader that it has yet to reclaim.
fn inherited_sessions(service: &Service, term: u64) -> bool {
    let ids: Vec<SessionId> = service.meta.read(|s| s.sessions().map(|(id, ..)| id).collect());
    ids.into_iter().any(|id| !service.sessions.opened_in(id, term))
}

/// A lock request must name a non-empty range.
fn checked(lock: FileLock) -> Reply<FileLock> {
    if lock.start > lock.end {
        return Err(Status::Invalid);
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(owner: u64, kind: LockKind, start: u64, end: u64) -> FileLock {
        FileLock { owner, kind, start, end, pid: owner as u32 }
    }

    #[test]
    fn owners_conflict_only_on_overlapping_ranges_with_a_writer() {
        let t = LockTable::new();
        t.set(5, 1, lock(10, LockKind::Exclusive, 0, 99)).unwrap();
        assert_eq!(t.set(5, 2, lock(10, LockKind::Shared, 50, 60)), Err(Status::WouldBlock));
        assert_eq!(t.set(5, 1, lock(11, LockKind::Shared, 99, 99)), Err(Status::WouldBlock));
        t.set(5, 1, lock(11, LockKind::Shared, 100, 200)).unwrap();
        t.set(6, 2, lock(10, LockKind::Exclusive, 0, 99)).unwrap();
        let seen = t.test(5, 2, &lock(10, LockKind::Shared, 0, 0)).unwrap();
        assert_eq!((seen.owner, seen.kind, seen.start, seen.end), (10, LockKind::Exclusive, 0, 99));
        assert_eq!(t.test(5, 1, &lock(10, LockKind::Exclusive, 0, 99)), None, "own locks");
    }

    #[test]
    fn shared_locks_coexist_until_one_owner_wants_to_write() {
        let t = LockTable::new();
        t.set(1, 1, lock(1, LockKind::Shared, 0, u64::MAX)).unwrap();
        t.set(1, 2, lock(1, LockKind::Shared, 0, u64::MAX)).unwrap();
        assert_eq!(t.set(1, 2, lock(1, LockKind::Exclusive, 0, 9)), Err(Status::WouldBlock));
        t.set(1, 1, lock(1, LockKind::Unlock, 0, u64::MAX)).unwrap();
        t.set(1, 2, lock(1, LockKind::Exclusive, 0, 9)).unwrap();
        assert_eq!(t.counts(), (1, 1));
    }

    #[test]
    fn release_and_session_end_free_the_locks() {
        let t = LockTable::new();
        t.set(1, 1, lock(7, LockKind::Exclusive, 0, 9)).unwrap();
        t.set(2, 1, lock(8, LockKind::Exclusive, 0, 9)).unwrap();
        t.set(3, 2, lock(7, LockKind::Exclusive, 0, 9)).unwrap();
        t.release(1, 1, 7);
        assert_eq!(t.counts(), (2, 2));
        t.release_session(1);
        assert_eq!(t.counts(), (1, 1));
        t.set(2, 3, lock(1, LockKind::Exclusive, 0, 9)).unwrap();
    }

    fn epoch(term: u64, since: Instant) -> Epoch {
        Epoch { term, since }
    }

    #[test]
    fn a_new_term_starts_empty_and_the_grace_runs_from_the_start_of_leadership() {
        let t = LockTable::new();
        let now = Instant::now();
        assert_eq!(t.wait_until(epoch(1, now), || false), None, "no inherited session");
        t.set(1, 1, lock(7, LockKind::Exclusive, 0, 9)).unwrap();
        assert_eq!(t.wait_until(epoch(1, now), || true), None, "same term: looked at once");
        // Leading since 3 s when the first lock request comes: 2 s of grace are left.
        let started = now - Duration::from_secs(3);
        let until = t.wait_until(epoch(2, started), || true).expect("grace in term 2");
        assert_eq!(t.counts(), (0, 0), "the new term forgot the old locks");
        assert_eq!(until, started + GRACE, "counted from the start of leadership");
        assert_eq!(t.wait_until(epoch(2, started), || true), Some(until), "not extended");
        // A leader that has led longer than the grace owes none to its first request.
        let long_ago = now - GRACE - Duration::from_secs(1);
        assert_eq!(t.wait_until(epoch(3, long_ago), || true), None);
        // Every session opened in this term: nobody has locks to reclaim, no grace.
        assert_eq!(t.wait_until(epoch(4, now), || false), None);
    }

    #[test]
    fn locks_of_a_session_without_connection_expire() {
        let t = LockTable::new();
        t.set(1, 1, lock(7, LockKind::Exclusive, 0, 9)).unwrap();
        t.set(1, 2, lock(7, LockKind::Shared, 10, 19)).unwrap();
        let start = Instant::now();
        t.expire_at(start, |s| s == 2);
        t.expire_at(start + DETACHED_EXPIRY - Duration::from_secs(1), |s| s == 2);
        assert_eq!(t.counts(), (1, 2), "not yet");
        t.expire_at(start + DETACHED_EXPIRY, |s| s == 2);
        assert_eq!(t.counts(), (1, 1), "session 1's lock expired, session 2's stays");
        t.set(1, 3, lock(1, LockKind::Exclusive, 0, 9)).unwrap();
    }

    #[test]
    fn the_table_refuses_ranges_beyond_its_bound() {
        let t = LockTable::with_limits(100, 100);
        for i in 0..100 {
            // Every other byte, so no two ranges merge.
            t.set(1, 1, lock(7, LockKind::Shared, i * 2, i * 2)).unwrap();
        }
        let more = lock(7, LockKind::Shared, u64::MAX - 1, u64::MAX - 1);
        assert_eq!(t.set(1, 1, more), Err(Status::NoSpace));
        assert_eq!(t.set(2, 2, more), Err(Status::NoSpace));
        assert_eq!(t.counts(), (1, 1));
        t.release(1, 1, 7);
        assert_eq!(t.counts(), (0, 0));
        t.set(2, 2, more).unwrap();
        let one_owner = LockTable::new();
        for i in 0..MAX_OWNER_RANGES as u64 {
            one_owner.set(1, 1, lock(7, LockKind::Shared, i * 2, i * 2)).unwrap();
        }
        assert_eq!(one_owner.set(1, 1, more), Err(Status::NoSpace), "per-owner bound");
        one_owner.set(1, 1, lock(8, LockKind::Shared, 1, 1)).unwrap();
    }

    /// One session cannot fill the table: past its share its new ranges are refused, while
    /// another session still locks; an unlock and a release give the share back.
    #[test]
    fn one_session_holds_at_most_its_share_of_the_table() {
        let t = LockTable::with_limits(100, 10);
        for i in 0..10 {
            t.set(i % 3 + 1, 1, lock(7 + i % 2, LockKind::Shared, i * 2, i * 2)).unwrap();
        }
        let more = lock(9, LockKind::Shared, 1_000, 1_000);
        assert_eq!(t.set(4, 1, more), Err(Status::NoSpace), "session 1 is at its share");
        t.set(4, 2, more).unwrap();
        t.counts();
        t.set(1, 1, lock(7, LockKind::Unlock, 0, 0)).unwrap();
        t.set(4, 1, more).unwrap();
        t.release(2, 1, 8);
        t.counts();
        t.set(5, 1, more).unwrap();
        t.release_session(1);
        assert_eq!(t.counts(), (1, 1), "only session 2's lock is left");
    }

    #[test]
    fn a_session_that_reconnects_in_time_keeps_its_locks() {
        let t = LockTable::new();
        t.set(1, 1, lock(7, LockKind::Exclusive, 0, 9)).unwrap();
        let start = Instant::now();
        t.expire_at(start, |_| false);
        t.expire_at(start + Duration::from_secs(1), |_| true);
        t.expire_at(start + DETACHED_EXPIRY + Duration::from_secs(1), |_| false);
        assert_eq!(t.counts(), (1, 1), "the detached clock restarted at the reconnect");
    }
}
