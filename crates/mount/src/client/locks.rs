//! File locks: POSIX byte ranges (fcntl) and flock, held by the master so that every mount
//! sees them.
//!
//! The master never waits for a lock: a conflict answers `WouldBlock`, and a blocking request
//! (F_SETLKW, `flock` without LOCK_NB) polls, checking between tries whether the waiting
//! process was signalled, so Ctrl-C and `kill` end the wait.
//!
//! The client keeps its own copy of the locks it holds (in the master link), so that after
//! reconnecting — to a restarted master or a new leader, whose lock table starts empty — it
//! re-takes them before anything else uses the connection.
//!
//! Data coherence: before an unlock the file's buffered writes are stored, and taking a lock
//! drops this client's cached chunk locations and read-ahead (and the FUSE adapter drops the
//! kernel's cached pages), so the next holder reads what the previous one wrote.

use super::{unexpected, Caller, Client};
use mfsha_proto::client::{ClientOp, ClientReply, FileLock, LockKind};
use mfsha_proto::types::{Ino, Reply, Status};
use std::time::Duration;

/// How a blocking lock request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    Taken,
    /// The waiting process got a signal (the kernel answers EINTR).
    Interrupted,
}

/// First and longest pause between tries of a blocking lock.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

impl Client {
    /// F_GETLK: the first lock of another owner (on any mount) that conflicts with `lock`.
    pub async fn getlk(&self, ino: Ino, lock: FileLock) -> Reply<Option<FileLock>> {
        match self.link.call(Caller::ROOT, ClientOp::GetLock { ino, lock }).await? {
            ClientReply::Lock(found) => Ok(found),
            other => Err(unexpected("a lock", &other)),
        }
    }

    /// F_SETLK: takes, changes or releases `lock` without waiting (`WouldBlock` on conflict).
    pub async fn setlk(&self, ino: Ino, lock: FileLock) -> Reply<()> {
        if lock.kind == LockKind::Unlock {
            // The next holder, on any mount, must read what was written under the lock.
            self.flush_inode(ino).await?;
        }
        let op = ClientOp::SetLock { ino, lock, reclaim: false };
        match self.link.call(Caller::ROOT, op).await? {
            ClientReply::Unit => {}
            other => return Err(unexpected("nothing", &other)),
        }
        self.link.note_lock(ino, lock);
        if lock.kind != LockKind::Unlock {
            self.invalidate_inode(ino);
        }
        Ok(())
    }

    /// F_SETLKW: like [`Client::setlk`] but waits for a conflicting lock to go, until it is
    /// taken or `interrupted()` says the waiting process was signalled.
    pub async fn setlkw(
        &self,
        ino: Ino,
        lock: FileLock,
        interrupted: impl Fn() -> bool,
    ) -> Reply<LockWait> {
        let mut pause = POLL_FIRST;
        loop {
            match self.setlk(ino, lock).await {
                Ok(()) => return Ok(LockWait::Taken),
                Err(Status::WouldBlock) => {}
                Err(e) => return Err(e),
            }
            if interrupted() {
                return Ok(LockWait::Interrupted);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Releases every lock `owner` holds on `ino` (a POSIX owner closed the file, or a
    /// flock'd open file was released). Costs nothing when this client holds none.
    pub async fn release_locks(&self, ino: Ino, owner: u64) -> Reply<()> {
        if !self.link.holds_locks(ino, owner) {
            return Ok(());
        }
        self.flush_inode(ino).await?;
        match self.link.call(Caller::ROOT, ClientOp::ReleaseLocks { ino, owner }).await? {
            ClientReply::Unit => {
                self.link.forget_locks(ino, owner);
                Ok(())
            }
            other => Err(unexpected("nothing", &other)),
        }
    }

    /// Stores the buffered writes of `ino`, if this client has any.
    async fn flush_inode(&self, ino: Ino) -> Reply<()> {
        let file = self.files.lock().get(&ino).cloned();
        match file {
            Some(file) => self.flush_file(&file).await,
            None => Ok(()),
        }
    }

    /// Forgets cached chunk locations and read-ahead of `ino`.
    fn invalidate_inode(&self, ino: Ino) {
        if let Some(file) = self.files.lock().get(&ino) {
            file.changed();
        }
    }
}
