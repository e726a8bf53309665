//! Cluster time: apply stamps `max(entry time, cluster time)`, so times never go backwards
//! when a new leader's clock is behind the old leader's, and every replica agrees.

mod common;

use common::*;
use mfsha_meta::{Entry, Op, State};
use mfsha_proto::types::*;

/// Applies `op` as proposed at `now` by some leader.
fn at(fs: &mut Fs, now: Timestamp, op: Op) -> Attr {
    let outcome = fs.apply_entry(Entry { now, client: None, op }).expect("apply");
    as_attr(outcome)
}

/// Makes directory `name` in the root as proposed at `now`.
fn mkdir_at(fs: &mut Fs, now: Timestamp, name: &str) -> Attr {
    let ino = fs.state.next_free_ino();
    let op = Op::Mkdir {
        parent: ROOT_INO,
        name: name.into(),
        ino,
        mode: 0o755,
        umask: 0,
        uid: 0,
        gid: 0,
    };
    at(fs, now, op)
}

#[test]
fn a_leader_whose_clock_is_behind_does_not_move_time_backwards() {
    let mut fs = Fs::new();
    let ahead = Timestamp::new(T0.secs + 100, 5);
    let behind = Timestamp::new(T0.secs + 40, 0);
    let a = mkdir_at(&mut fs, ahead, "a");
    assert_eq!((a.mtime, a.ctime), (ahead, ahead));
    assert_eq!(fs.state.cluster_time(), ahead);
    // A new leader with a slower clock: its entries are stamped with the cluster time.
    let b = mkdir_at(&mut fs, behind, "b");
    assert_eq!((b.mtime, b.ctime, b.atime), (ahead, ahead, ahead));
    assert_eq!(fs.getattr(ROOT_INO).mtime, ahead, "the parent's mtime did not go back");
    assert_eq!(fs.state.cluster_time(), ahead);
    // The trash: the deletion time is the cluster time too, so a slow clock cannot make a
    // file look deleted earlier (and purged sooner) than it was.
    let f = fs.file(ROOT_INO, "f");
    let stamped = fs.state.cluster_time();
    fs.apply_entry(Entry { now: behind, client: None, op: unlink(ROOT_INO, "f") }).unwrap();
    let deleted: Vec<(Ino, Timestamp)> = fs.state.trash().map(|(i, _, t)| (i, t)).collect();
    assert_eq!(deleted, vec![(f, stamped)]);
    let ahead = stamped;
    // Raft's own entries carry time 0: they change nothing.
    fs.apply_entry(Entry { now: Timestamp::new(0, 0), client: None, op: Op::Noop }).unwrap();
    assert_eq!(fs.state.cluster_time(), ahead);
    // Once the clock passes the cluster time, time moves with it.
    let later = Timestamp::new(T0.secs + 200, 0);
    let c = mkdir_at(&mut fs, later, "c");
    assert_eq!(c.mtime, later);
    assert_eq!(fs.state.cluster_time(), later);
    // An explicit time (touch -d) is the user's to choose, in the past if they like.
    let set = SetAttr { mtime: Some(TimeSet::At(behind)), ..SetAttr::default() };
    let c = at(&mut fs, later, Op::SetAttr { ino: c.ino, set, cow_chunk_id: 0 });
    assert_eq!((c.mtime, c.ctime), (behind, later));
}

#[test]
fn the_cluster_time_is_replicated_and_survives_snapshots_and_reloads() {
    let mut fs = Fs::new();
    let ahead = Timestamp::new(T0.secs + 1000, 7);
    mkdir_at(&mut fs, ahead, "a");
    let copy = State::from_snapshot(&fs.state.to_snapshot()).unwrap();
    assert_eq!(copy.cluster_time(), ahead);
    let reloaded = State::load(fs.state.all_records()).unwrap();
    assert_eq!(reloaded.cluster_time(), ahead);
    // A replica restored from the snapshot stamps the next entry exactly as the original.
    let behind = Timestamp::new(T0.secs, 0);
    let mut replica = Fs { state: copy, now: fs.now, log: Vec::new() };
    let x = mkdir_at(&mut replica, behind, "x");
    let y = mkdir_at(&mut fs, behind, "x");
    assert_eq!((x.mtime, y.mtime), (ahead, ahead));
    assert_eq!(replica.state.digest(), fs.state.digest());
}
