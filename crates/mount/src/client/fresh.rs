//! A directory's attributes as the master sent them with a change made in it, kept to answer
//! the kernel's next GETATTR of that directory.
//!
//! After every create, unlink, mkdir, rmdir, link, symlink or rename the kernel forgets the
//! attributes of the directories involved, and before the next change in one of them it asks
//! for them again (`default_permissions` checks write and search permission on the parent).
//! Asked of the master, that was one round trip per create on top of the create itself
//! (counted with the mount's metrics: 100 `touch` of new files, 100 GETATTRs of their
//! directory). The master now sends those attributes with the answer to the change
//! (`Answer::dirs`), read right after it applied, and the link keeps them here.
//!
//! An entry answers one GETATTR, within the attribute cache time (`mfsattrcacheto`, 0 turns
//! this off): exactly what the kernel would have cached had the change's reply carried them.
//! An older answer (an earlier change that was answered later) never replaces a newer one;
//! two different answers with the same times drop the entry, and the master is asked.

use mfsha_proto::types::{Attr, Ino};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Directories remembered at most; past that the expired go, then all (a bound, not an LRU).
const MAX_REMEMBERED: usize = 4096;

pub(crate) struct FreshDirs {
    ttl: Duration,
    dirs: Mutex<HashMap<Ino, (Attr, Instant)>>,
}

impl FreshDirs {
    pub(crate) fn new(ttl: Duration) -> Self {
        FreshDirs { ttl, dirs: Mutex::default() }
    }

    /// Keeps the directory attributes an accepted answer carried.
    pub(crate) fn note(&self, attrs: Vec<Attr>) {
        if self.ttl.is_zero() || attrs.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut dirs = self.dirs.lock();
        for attr in attrs {
            let ino = attr.ino;
            match dirs.get(&ino) {
                Some((old, _)) if stamp(old) > stamp(&attr) => {} // a later change's, keep it
                Some((old, _)) if stamp(old) == stamp(&attr) && *old != attr => {
                    dirs.remove(&ino); // which is newer cannot be told: ask the master
                }
                _ => {
                    dirs.insert(ino, (attr, now));
                }
            }
        }
        if dirs.len() > MAX_REMEMBERED {
            dirs.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if dirs.len() > MAX_REMEMBERED {
                dirs.clear();
            }
        }
    }

    /// The attributes kept for `ino`, once, if still within the attribute cache time.
    pub(crate) fn take(&self, ino: Ino) -> Option<Attr> {
        let (attr, at) = self.dirs.lock().remove(&ino)?;
        (at.elapsed() < self.ttl).then_some(attr)
    }

    /// Forgets `ino`: an answer about it that carries newer attributes of another kind
    /// (a chmod of the directory, say) came back.
    pub(crate) fn forget(&self, ino: Ino) {
        self.dirs.lock().remove(&ino);
    }
}

/// What orders two sets of attributes of one directory: its change time, then its mtime.
fn stamp(attr: &Attr) -> (mfsha_proto::types::Timestamp, mfsha_proto::types::Timestamp) {
    (attr.ctime, attr.mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfsha_proto::types::{FileKind, Timestamp};

    fn dir(ino: Ino, secs: i64, nlink: u32) -> Attr {
        let t = Timestamp::new(secs, 0);
        let (mode, uid, gid, size, rdev, goal, trash_seconds) = (0o755, 0, 0, 0, 0, 2, 0);
        let kind = FileKind::Directory;
        Attr {
            ino,
            kind,
            mode,
            uid,
            gid,
            size,
            nlink,
            rdev,
            atime: t,
            mtime: t,
            ctime: t,
            goal,
            trash_seconds,
        }
    }

    #[test]
    fn an_entry_answers_once_and_an_older_answer_never_replaces_a_newer_one() {
        let fresh = FreshDirs::new(Duration::from_secs(1));
        fresh.note(vec![dir(5, 20, 3)]);
        fresh.note(vec![dir(5, 10, 2)]); // answered late, for an earlier change
        assert_eq!(fresh.take(5), Some(dir(5, 20, 3)));
        assert_eq!(fresh.take(5), None, "once");
        fresh.note(vec![dir(6, 30, 2)]);
        fresh.note(vec![dir(6, 30, 3)]);
        assert_eq!(fresh.take(6), None, "the same times, different attributes: ask");
        fresh.note(vec![dir(7, 30, 2)]);
        fresh.forget(7);
        assert_eq!(fresh.take(7), None);
    }

    #[test]
    fn entries_expire_with_the_attribute_cache_time_and_zero_turns_it_off() {
        let fresh = FreshDirs::new(Duration::from_millis(30));
        fresh.note(vec![dir(5, 20, 3)]);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(fresh.take(5), None);
        let off = FreshDirs::new(Duration::ZERO);
        off.note(vec![dir(5, 20, 3)]);
        assert_eq!(off.take(5), None);
    }
}
