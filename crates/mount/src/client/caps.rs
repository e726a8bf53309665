//! "This file has no `security.capability`", remembered for a short while.
//!
//! Before every write(2) to a FUSE file the kernel asks for the file's `security.capability`
//! (`file_remove_privs`: a write must drop file capabilities). Asked of the master, that is a
//! round trip per write: 256 for a 1 MiB file written 4 KiB at a time, counted with the
//! mount's metrics. FUSE's only way to stop the question, `FUSE_HANDLE_KILLPRIV_V2`, would
//! hand the clearing of suid, sgid and capabilities on every write, truncate and chown to the
//! filesystem. So the client remembers the answer "none" for the attribute cache time
//! (`mfsattrcacheto`, 1 s by default; 0 turns this off): a capability another mount sets is
//! seen here within that time, as its other attribute changes are. This mount's own sets and
//! removals forget the answer at once, and an answer that raced with one is not kept.

use mfsha_proto::types::Ino;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The extended attribute the kernel asks for before each write.
pub(crate) const CAPABILITY: &str = "security.capability";

/// Inodes remembered at most; past that the expired go, then all (a bound, not an LRU).
const MAX_REMEMBERED: usize = 65_536;

pub(crate) struct NoCapabilities {
    ttl: Duration,
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    until: HashMap<Ino, Instant>,
    /// Sets and removals of the attribute begun or ended by this mount, ever.
    changes: u64,
}

/// Taken before asking the master; the answer is kept only if nothing changed meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl NoCapabilities {
    pub(crate) fn new(ttl: Duration) -> Self {
        NoCapabilities { ttl, inner: Mutex::default() }
    }

    /// Whether `ino` is known to have no capability attribute.
    pub(crate) fn known_absent(&self, ino: Ino) -> bool {
        let now = Instant::now();
        self.inner.lock().until.get(&ino).is_some_and(|until| now < *until)
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.inner.lock().changes)
    }

    /// The master said `ino` has none (or just made it: a new file has none).
    pub(crate) fn absent(&self, ino: Ino, ticket: Ticket) {
        let mut inner = self.inner.lock();
        if self.ttl.is_zero() || inner.changes != ticket.0 {
            return;
        }
        let now = Instant::now();
        if inner.until.len() >= MAX_REMEMBERED {
            inner.until.retain(|_, until| *until > now);
            if inner.until.len() >= MAX_REMEMBERED {
                inner.until.clear();
            }
        }
        inner.until.insert(ino, now + self.ttl);
    }

    /// This mount is setting or removing the attribute on `ino` (called when the request
    /// leaves and again when it ends, so an answer in flight across it is not kept).
    pub(crate) fn changed(&self, ino: Ino) {
        let mut inner = self.inner.lock();
        inner.until.remove(&ino);
        inner.changes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absence_is_remembered_until_it_expires_or_this_mount_changes_it() {
        let caps = NoCapabilities::new(Duration::from_millis(50));
        assert!(!caps.known_absent(7));
        caps.absent(7, caps.ticket());
        assert!(caps.known_absent(7) && !caps.known_absent(8));
        caps.changed(7);
        assert!(!caps.known_absent(7), "a set through this mount forgets it");
        caps.absent(7, caps.ticket());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!caps.known_absent(7), "expired");
    }

    #[test]
    fn an_answer_that_raced_with_a_change_is_not_kept() {
        let caps = NoCapabilities::new(Duration::from_secs(10));
        let asked = caps.ticket();
        caps.changed(9); // a setxattr left while the getxattr was in flight
        caps.absent(9, asked);
        assert!(!caps.known_absent(9));
    }

    #[test]
    fn a_zero_time_remembers_nothing_and_the_table_stays_bounded() {
        let off = NoCapabilities::new(Duration::ZERO);
        off.absent(1, off.ticket());
        assert!(!off.known_absent(1));
        let caps = NoCapabilities::new(Duration::from_secs(10));
        for ino in 0..(MAX_REMEMBERED as u64 + 10) {
            caps.absent(ino, caps.ticket());
        }
        assert!(caps.inner.lock().until.len() <= MAX_REMEMBERED);
        assert!(caps.known_absent(MAX_REMEMBERED as u64 + 9), "the newest is kept");
    }
}
