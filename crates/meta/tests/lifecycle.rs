//! Trash, sustained files, sessions, exactly-once replies, the applied index, and reads.

mod common;

use common::*;
use mfsha_meta::{Entry, Op, Outcome, State};
use mfsha_proto::types::*;

fn open(session: SessionId) -> Op {
    Op::OpenSession { session, info: format!("mount {session}"), root: ROOT_INO, token: 0 }
}

#[test]
fn trash_purge_and_expiry() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let f = fs.file(a, "f");
    let chunk = fs.write(f, 0, 10);
    fs.set_trash(f, 100);
    fs.run(unlink(a, "f")).unwrap();
    let deleted = fs.now;
    assert_eq!(fs.state.counts().trash_inodes, 1);
    assert_eq!(fs.state.counts().inodes, 3, "trashed files are still inodes");
    assert!(fs.state.chunk(chunk).is_some(), "trash keeps the data");
    assert!(fs.state.trash_expired(Timestamp::new(deleted.secs + 99, 999), 10).is_empty());
    assert_eq!(fs.state.trash_expired(Timestamp::new(deleted.secs + 100, 0), 10), vec![f]);
    // Trash time of a trashed file can still be changed.
    fs.run(Op::SetTrashTime { ino: f, seconds: 1000, recursive: false }).unwrap();
    assert!(fs.state.trash_expired(Timestamp::new(deleted.secs + 100, 0), 10).is_empty());
    assert_eq!(fs.run(Op::Link { ino: f, parent: a, name: "again".into() }), Err(Status::NotFound));
    fs.run(Op::Purge { ino: f }).unwrap();
    // Out of the trash, the file waits for the leader (which knows what is open) to free it.
    assert!(fs.state.is_sustained(f) && fs.state.chunk(chunk).is_some());
    assert_eq!(fs.run(Op::Purge { ino: f }), Err(Status::NotFound), "no longer in the trash");
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    assert_eq!(fs.state.getattr(f), Err(Status::NotFound));
    assert_eq!(fs.state.chunk(chunk), None);
    assert_eq!(fs.run(Op::Purge { ino: a }), Err(Status::NotFound), "not in the trash");
}

/// The leader asks for expired files every second; the answer comes in expiry order, at most
/// the batch asked for, and the same after the state is rebuilt from its records or a
/// snapshot (the expiry index is derived, not stored).
#[test]
fn expired_trash_comes_longest_expired_first_up_to_the_limit() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let (long, short, later) = (fs.file(a, "long"), fs.file(a, "short"), fs.file(a, "later"));
    fs.set_trash(long, 500);
    fs.set_trash(short, 100);
    fs.set_trash(later, 100);
    for name in ["long", "short", "later"] {
        fs.run(unlink(a, name)).unwrap();
    }
    let base = fs.now.secs;
    let when = move |secs| Timestamp::new(base + secs, 0);
    assert_eq!(fs.state.trash_expired(when(100), 10), vec![short, later]);
    assert_eq!(fs.state.trash_expired(when(100), 1), vec![short], "the limit holds");
    assert_eq!(fs.state.trash_expired(when(500), 10), vec![short, later, long]);
    // Retimed in the trash: `long` now expires first.
    fs.run(Op::SetTrashTime { ino: long, seconds: 1, recursive: false }).unwrap();
    assert_eq!(fs.state.trash_expired(when(100), 10), vec![long, short, later]);
    let loaded = State::load(fs.state.all_records()).unwrap();
    assert_eq!(loaded.trash_expired(when(100), 10), vec![long, short, later]);
    let restored = State::from_snapshot(&fs.state.to_snapshot()).unwrap();
    assert_eq!(restored.trash_expired(when(100), 10), vec![long, short, later]);
    fs.run(Op::Purge { ino: short }).unwrap();
    assert_eq!(fs.state.trash_expired(when(100), 10), vec![long, later]);
}

#[test]
fn undelete_restores_where_possible() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let f = fs.file(a, "f");
    let g = fs.file(a, "g");
    fs.run(unlink(a, "f")).unwrap();
    let attr = as_attr(fs.run(Op::Undelete { ino: f }).unwrap());
    assert_eq!((attr.nlink, attr.ctime), (1, fs.now));
    assert_eq!(fs.state.lookup(a, "f").unwrap().ino, f);
    assert_eq!(fs.getattr(a).mtime, fs.now);
    assert_eq!(fs.run(Op::Undelete { ino: f }), Err(Status::NotFound), "no longer trashed");
    // Name taken: Exists, and the file stays in the trash.
    fs.run(unlink(a, "f")).unwrap();
    fs.file(a, "f");
    assert_eq!(fs.run(Op::Undelete { ino: f }), Err(Status::Exists));
    assert_eq!(fs.state.counts().trash_inodes, 1);
    // Original directory gone: restored into the root.
    fs.run(unlink(a, "g")).unwrap();
    fs.run(unlink(a, "f")).unwrap();
    fs.run(Op::Purge { ino: f }).unwrap();
    let others: Vec<Ino> = fs.state.trash().map(|(i, _, _)| i).collect();
    for ino in others.into_iter().filter(|i| *i != g) {
        fs.run(Op::Purge { ino }).unwrap();
    }
    fs.run(rmdir(ROOT_INO, "a")).unwrap();
    fs.run(Op::Undelete { ino: g }).unwrap();
    assert_eq!(fs.state.lookup(ROOT_INO, "g").unwrap().ino, g);
}

#[test]
fn open_unlinked_files_are_sustained_until_released() {
    let mut fs = Fs::new();
    fs.set_trash(ROOT_INO, 0);
    fs.run(open(7)).unwrap();
    let f = fs.file(ROOT_INO, "f");
    let chunk = fs.write(f, 0, 10);
    fs.run(Op::Acquire { session: 7, ino: f }).unwrap();
    fs.run(Op::Acquire { session: 7, ino: f }).unwrap();
    assert_eq!(fs.state.sessions().collect::<Vec<_>>(), vec![(7, "mount 7", 1)]);
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    assert_eq!(fs.state.counts().sustained_inodes, 1);
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![f]);
    assert_eq!(fs.getattr(f).nlink, 0);
    // An open unlinked file can still be written.
    fs.run(Op::WriteChunk { ino: f, index: 0, new_chunk_id: 99 }).unwrap();
    fs.run(Op::Release { session: 7, ino: f }).unwrap();
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    assert!(fs.state.getattr(f).is_ok(), "still acquired once: a Free leaves it");
    fs.run(Op::Release { session: 7, ino: f }).unwrap();
    assert!(fs.state.is_sustained(f), "released: sustained until the leader frees it");
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    assert_eq!(fs.state.getattr(f), Err(Status::NotFound));
    assert_eq!(fs.state.chunk(chunk), None);
    assert_eq!(fs.run(Op::Release { session: 7, ino: f }), Err(Status::NotFound));
    fs.run(Op::Free { inos: vec![f] }).expect("a late Free changes nothing");
}

#[test]
fn closing_a_session_releases_everything() {
    let mut fs = Fs::new();
    fs.set_trash(ROOT_INO, 0);
    fs.run(open(1)).unwrap();
    fs.run(open(2)).unwrap();
    let f = fs.file(ROOT_INO, "f");
    let g = fs.file(ROOT_INO, "g");
    for (session, ino) in [(1, f), (2, f), (1, g)] {
        fs.run(Op::Acquire { session, ino }).unwrap();
    }
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    fs.run(unlink(ROOT_INO, "g")).unwrap();
    assert_eq!(fs.state.counts().sustained_inodes, 2);
    fs.run(Op::CloseSession { session: 1 }).unwrap();
    fs.run(Op::Free { inos: vec![f, g] }).unwrap();
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![f], "f is still held by 2");
    assert_eq!(fs.state.getattr(g), Err(Status::NotFound));
    fs.run(Op::CloseSession { session: 2 }).unwrap();
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    assert_eq!(fs.state.counts().inodes, 1);
    assert_eq!(fs.state.sessions().count(), 0);
}

#[test]
fn trash_then_purge_of_an_open_file_sustains_it() {
    let mut fs = Fs::new();
    fs.run(open(1)).unwrap();
    let f = fs.file(ROOT_INO, "f");
    fs.run(Op::Acquire { session: 1, ino: f }).unwrap();
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    assert_eq!(fs.state.counts().trash_inodes, 1);
    fs.run(Op::Purge { ino: f }).unwrap();
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![f]);
    fs.run(Op::Release { session: 1, ino: f }).unwrap();
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    assert_eq!(fs.state.getattr(f), Err(Status::NotFound));
}

#[test]
fn a_mounted_directory_cannot_be_removed() {
    let mut fs = Fs::new();
    let sub = fs.dir(ROOT_INO, "sub");
    fs.dir(ROOT_INO, "other");
    let op = Op::OpenSession { session: 4, info: "subdir mount".into(), root: sub, token: 0 };
    fs.run(op).unwrap();
    assert_eq!(fs.run(rmdir(ROOT_INO, "sub")), Err(Status::Busy));
    assert_eq!(fs.run(rename(ROOT_INO, "other", ROOT_INO, "sub", 0)), Err(Status::Busy));
    // Moving it is fine: the session follows the inode.
    fs.run(rename(ROOT_INO, "sub", ROOT_INO, "moved", 0)).unwrap();
    assert_eq!(fs.state.session_root(4), Some(sub));
    fs.run(Op::CloseSession { session: 4 }).unwrap();
    fs.run(rmdir(ROOT_INO, "moved")).unwrap();
}

#[test]
fn session_errors() {
    let mut fs = Fs::new();
    let f = fs.file(ROOT_INO, "f");
    fs.run(open(1)).unwrap();
    assert_eq!(fs.run(open(1)), Err(Status::Exists));
    assert_eq!(fs.run(open(0)), Err(Status::Invalid));
    let bad_root = Op::OpenSession { session: 2, info: String::new(), root: f, token: 0 };
    assert_eq!(fs.run(bad_root), Err(Status::NotDir));
    let long = Op::OpenSession { session: 2, info: "i".repeat(5000), root: ROOT_INO, token: 0 };
    assert_eq!(fs.run(long), Err(Status::Invalid));
    assert_eq!(fs.run(Op::CloseSession { session: 9 }), Err(Status::BadSession));
    assert_eq!(fs.run(Op::Acquire { session: 9, ino: f }), Err(Status::BadSession));
    assert_eq!(fs.run(Op::Acquire { session: 1, ino: 999 }), Err(Status::NotFound));
    assert_eq!(fs.run(Op::Release { session: 9, ino: f }), Err(Status::BadSession));
    assert_eq!(fs.state.session_root(1), Some(ROOT_INO));
}

#[test]
fn exactly_once_replies() {
    let mut fs = Fs::new();
    fs.run_tagged(5, 1, open(5)).unwrap();
    let ino = fs.state.next_free_ino();
    let create = Op::Create {
        parent: ROOT_INO,
        name: "f".into(),
        ino,
        kind: FileKind::File,
        mode: 0o600,
        umask: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
    };
    let first = fs.run_tagged(5, 2, create.clone()).unwrap();
    let records = logical_records(&fs.state);
    let index = fs.state.applied_index();
    // The retry (maybe proposed by a new leader) returns the stored reply, changes nothing.
    assert_eq!(fs.state.session_reply(5, 2), Some(Ok(first.clone())));
    let again = fs.run_tagged(5, 2, create.clone()).unwrap();
    assert_eq!(again, first);
    assert_eq!(fs.state.applied_index(), index + 1, "a retry still consumes its index");
    assert!(logical_records(&fs.state) == records, "a retry must not mutate");
    // Errors are replies too.
    let err = fs.run_tagged(5, 3, unlink(ROOT_INO, "missing"));
    assert_eq!(err, Err(Status::NotFound));
    fs.file(ROOT_INO, "missing");
    assert_eq!(fs.run_tagged(5, 3, unlink(ROOT_INO, "missing")), Err(Status::NotFound));
    assert!(fs.state.lookup(ROOT_INO, "missing").is_ok(), "the retry did not unlink");
    // Older than the last but inside the window: still the stored reply.
    assert_eq!(fs.run_tagged(5, 2, create.clone()), Ok(first.clone()));
    assert_eq!(fs.state.session_reply(5, 4), None);
    // Seqs may arrive out of order inside the window: 6 before 4 and 5, each applied once.
    let six = fs.run_tagged(5, 6, mkdir_op(&fs, "six")).unwrap();
    fs.run_tagged(5, 4, mkdir_op(&fs, "four")).unwrap();
    assert_eq!(fs.run_tagged(5, 6, mkdir_op(&fs, "six")), Ok(six), "a retry, not a second mkdir");
    assert!(fs.state.lookup(ROOT_INO, "four").is_ok() && fs.state.lookup(ROOT_INO, "six").is_ok());
    assert_eq!(fs.state.session_reply(5, 5), None, "5 was never sent: still new");
    // Once REPLY_WINDOW newer seqs are applied, an old one is refused, never applied again.
    let top = 6 + mfsha_meta::REPLY_WINDOW;
    for seq in 7..=top {
        fs.run_tagged(5, seq, Op::Noop).unwrap();
    }
    assert_eq!(fs.run_tagged(5, 2, create.clone()), Err(Status::Invalid));
    assert_eq!(fs.state.session_reply(5, 5), Some(Err(Status::Invalid)));
    assert_eq!(fs.state.session_reply(5, top), Some(Ok(Outcome::Unit)));
    assert!(fs.state.check_invariants().is_ok());
    // Unknown session: refused.
    assert_eq!(fs.run_tagged(6, 1, Op::Noop), Err(Status::BadSession));
    // A retried OpenSession answers with its stored reply.
    let opened = Ok(Outcome::Session { session: 8, root: ROOT_INO });
    assert_eq!(fs.run_tagged(8, 1, open(8)), opened);
    assert_eq!(fs.run_tagged(8, 1, open(8)), opened);
    assert_eq!(fs.run(open(8)), Err(Status::Exists));
    // A replica applying the same log agrees.
    let mut replica = Fs::new();
    for entry in fs.log.clone() {
        replica.apply_entry(entry).ok();
    }
    assert_eq!(replica.state.digest(), fs.state.digest());
}

fn mkdir_op(fs: &Fs, name: &str) -> Op {
    let ino = fs.state.next_free_ino();
    Op::Mkdir { parent: ROOT_INO, name: name.into(), ino, mode: 0o755, umask: 0, uid: 0, gid: 0 }
}

#[test]
fn errors_advance_the_applied_index() {
    let mut fs = Fs::new();
    assert_eq!(fs.run(unlink(ROOT_INO, "x")), Err(Status::NotFound));
    assert_eq!(fs.state.applied_index(), 1);
    let changes = fs.state.take_changes();
    assert!(changes.iter().any(|c| c.key == b"applied_index"), "{changes:?}");
}

#[test]
#[should_panic(expected = "does not follow applied index")]
fn an_index_gap_is_a_crash() {
    let mut state = State::new(T0);
    state.apply(2, &Entry { now: T0, client: None, op: Op::Noop }).ok();
}

#[test]
fn readdir_pages_by_position_and_name() {
    let mut fs = Fs::new();
    let d = fs.dir(ROOT_INO, "d");
    for name in ["c", "a", "e", "b", "d"] {
        fs.file(d, name);
    }
    let page = |offset, max| {
        let (entries, more) = fs.state.readdir(d, offset, max).unwrap();
        (entries.into_iter().map(|e| e.name).collect::<Vec<_>>(), more)
    };
    assert_eq!(page(0, 2), (vec!["a".to_string(), "b".into()], true));
    assert_eq!(page(2, 2), (vec!["c".to_string(), "d".into()], true));
    assert_eq!(page(4, 2), (vec!["e".to_string()], false));
    assert_eq!(page(5, 2), (vec![], false));
    assert_eq!(page(u64::MAX, 2), (vec![], false));
    assert_eq!(page(0, 0), (vec![], true));
    let (after, more) = fs.state.readdir_after(d, Some("b"), 2).unwrap();
    assert_eq!(after.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["c", "d"]);
    assert!(more);
    let (entries, _) = fs.state.readdir(d, 0, 1).unwrap();
    assert_eq!(entries[0].attr, fs.state.lookup(d, "a").unwrap());
    let f = fs.state.lookup(d, "a").unwrap().ino;
    assert_eq!(fs.state.readdir(f, 0, 1), Err(Status::NotDir));
    assert_eq!(fs.state.readdir(999, 0, 1), Err(Status::NotFound));
}

#[test]
fn resolve_path_and_counts() {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let b = fs.dir(a, "b");
    let f = fs.file(b, "f");
    assert_eq!(fs.path("/a/b/f"), Ok(f));
    assert_eq!(fs.path("a//b/./f"), Ok(f));
    assert_eq!(fs.path("/a/b/../b/f"), Ok(f));
    assert_eq!(fs.path("/../.."), Ok(ROOT_INO));
    assert_eq!(fs.path(""), Ok(ROOT_INO));
    assert_eq!(fs.state.resolve_path(a, "../.."), Ok(a), ".. never leaves the given root");
    assert_eq!(fs.path("/a/x"), Err(Status::NotFound));
    assert_eq!(fs.path("/a/b/f/g"), Err(Status::NotDir));
    let counts = fs.state.counts();
    assert_eq!((counts.inodes, counts.directories, counts.files), (4, 3, 1));
    assert_eq!(fs.state.file_chunks(a), Err(Status::IsDir));
}

#[test]
fn create_open_creates_a_file_held_by_the_session_in_one_entry() {
    let mut fs = Fs::new();
    fs.set_trash(ROOT_INO, 0);
    fs.run(open(3)).unwrap();
    let ino = fs.state.next_free_ino();
    let create_open = |session, name: &str| Op::CreateOpen {
        session,
        parent: ROOT_INO,
        name: name.into(),
        ino,
        mode: 0o666,
        umask: 0o022,
        uid: 7,
        gid: 8,
    };
    // An unknown session creates nothing.
    assert_eq!(fs.run(create_open(9, "f")), Err(Status::BadSession));
    assert_eq!(fs.state.lookup(ROOT_INO, "f"), Err(Status::NotFound));
    let attr = as_attr(fs.run(create_open(3, "f")).unwrap());
    assert_eq!((attr.ino, attr.kind, attr.mode, attr.uid), (ino, FileKind::File, 0o644, 7));
    assert_eq!(fs.state.acquired(3).collect::<Vec<_>>(), vec![(ino, 1)]);
    // Held open, so unlinking keeps it (sustained) until the session releases it.
    fs.run(unlink(ROOT_INO, "f")).unwrap();
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![ino]);
    fs.run(Op::Release { session: 3, ino }).unwrap();
    fs.run(Op::Free { inos: vec![ino] }).unwrap();
    assert_eq!(fs.state.getattr(ino), Err(Status::NotFound));
    // An existing name fails like Create and acquires nothing.
    fs.file(ROOT_INO, "g");
    assert_eq!(fs.run(create_open(3, "g")), Err(Status::Exists));
    assert_eq!(fs.state.acquired(3).count(), 0);
    assert!(fs.state.check_invariants().is_ok());
}

fn open_with_token(session: SessionId, token: u64) -> Op {
    Op::OpenSession { session, info: format!("mount {session}"), root: ROOT_INO, token }
}

#[test]
fn a_retried_open_with_the_same_token_answers_the_first_session() {
    let mut fs = Fs::new();
    let first = fs.run(open_with_token(10, 77)).unwrap();
    assert_eq!(first, Outcome::Session { session: 10, root: ROOT_INO });
    // The retry reaches a new leader, which picked a fresh id for it: still session 10.
    assert_eq!(fs.run(open_with_token(11, 77)), Ok(first.clone()));
    assert_eq!(fs.run(open_with_token(10, 77)), Ok(first.clone()), "the same entry again");
    let ids: Vec<SessionId> = fs.state.sessions().map(|(id, ..)| id).collect();
    assert_eq!(ids, vec![10], "one session, not two");
    assert_eq!(fs.state.session_by_token(77), Some((10, ROOT_INO)));
    // Token 0 means none: every such open is a session of its own.
    fs.run(open_with_token(12, 0)).unwrap();
    fs.run(open_with_token(13, 0)).unwrap();
    assert_eq!(fs.state.session_by_token(0), None);
    // Once the session has ended, the token opens a new one.
    fs.run(Op::CloseSession { session: 10 }).unwrap();
    let reopened = fs.run(open_with_token(14, 77)).unwrap();
    assert_eq!(reopened, Outcome::Session { session: 14, root: ROOT_INO });
    assert_eq!(fs.state.sessions().count(), 3);
    let mut replica = Fs::new();
    for entry in fs.log.clone() {
        replica.apply_entry(entry).ok();
    }
    assert_eq!(replica.state.digest(), fs.state.digest());
}

#[test]
fn an_expired_session_releases_its_files_and_frees_the_unlinked_ones() {
    let mut fs = Fs::new();
    fs.set_trash(ROOT_INO, 0);
    fs.run(open(1)).unwrap();
    fs.run(open(2)).unwrap();
    let gone = fs.file(ROOT_INO, "gone");
    let chunk = fs.write(gone, 0, 10);
    let kept = fs.file(ROOT_INO, "kept");
    let shared = fs.file(ROOT_INO, "shared");
    for (session, ino) in [(1, gone), (1, kept), (1, shared), (2, shared)] {
        fs.run(Op::Acquire { session, ino }).unwrap();
    }
    fs.run(unlink(ROOT_INO, "gone")).unwrap();
    fs.run(unlink(ROOT_INO, "shared")).unwrap();
    assert_eq!(fs.state.counts().sustained_inodes, 2);
    fs.run(Op::ExpireSession { session: 1 }).unwrap();
    fs.run(Op::Free { inos: vec![gone, shared] }).unwrap();
    assert_eq!(fs.state.getattr(gone), Err(Status::NotFound), "open but unlinked: freed");
    assert_eq!(fs.state.chunk(chunk), None, "with its chunks");
    assert!(fs.state.getattr(kept).is_ok(), "a linked file stays");
    assert_eq!(fs.state.sustained().collect::<Vec<_>>(), vec![shared], "still held by 2");
    assert_eq!(fs.state.session_root(1), None);
    assert_eq!(fs.state.acquired(1).count(), 0);
    // What the expired session asks afterwards is refused; expiring it again changes nothing.
    assert_eq!(fs.run_tagged(1, 1, Op::Noop), Err(Status::BadSession));
    assert_eq!(fs.run(Op::ExpireSession { session: 1 }), Err(Status::BadSession));
    fs.run(Op::ExpireSession { session: 2 }).unwrap();
    fs.run(Op::Free { inos: vec![shared] }).unwrap();
    assert_eq!(fs.state.counts().sustained_inodes, 0);
    assert_eq!(fs.state.sessions().count(), 0);
}
