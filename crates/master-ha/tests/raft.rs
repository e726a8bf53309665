//! The Raft node on real RocksDB in temporary directories: concurrent proposals, restart,
//! snapshots and compaction, group commit, the logger feed, and a 3-node cluster in one process
//! that loses its leader.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mfsha_master_ha::node::MetaHandle;
use mfsha_meta::{Entry, Op, Outcome, State, Table};
use mfsha_proto::types::{Ino, Status, Timestamp, ROOT_INO};
use mfsha_raft::{RaftConfig, RaftStore, Role, StateMachine, Transport};
use parking_lot::Mutex;
use raft::eraftpb::Message;

/// Long enough for a loaded 2-core machine, short enough to fail a hung test quickly.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> RaftConfig {
    RaftConfig {
        tick_ms: 20,
        election_ticks: 10,
        max_election_ticks: 20,
        ..RaftConfig::single(dir.into())
    }
}

/// Starts a node, bootstrapping a new group first if its store is empty and it is node 1
/// (the lowest id, as `mfsha master bootstrap` would be run on one master).
fn start_node(
    config: RaftConfig,
    transport: Box<dyn Transport>,
) -> Result<(MetaHandle, JoinHandle<()>), mfsha_raft::StartError> {
    if config.node_id == 1 && !config.data_dir.join("meta.rocksdb").exists() {
        mfsha_raft::driver::bootstrap::<State>(&config)?;
    }
    let (handle, thread) = mfsha_raft::driver::start::<State>(config, transport)?;
    Ok((MetaHandle::new(handle), thread))
}

fn mkdir(handle: &MetaHandle, name: String) -> (Ino, Entry) {
    let ino = handle.alloc_ino();
    let op = Op::Mkdir { parent: ROOT_INO, name, ino, mode: 0o755, umask: 0o022, uid: 0, gid: 0 };
    (ino, Entry { now: Timestamp::now(), client: None, op })
}

/// Proposes a mkdir in the root and checks the answer names the new inode.
async fn propose_mkdir(handle: &MetaHandle, name: String) -> Result<Ino, Status> {
    let (ino, entry) = mkdir(handle, name);
    match handle.propose(entry).await? {
        Outcome::Attr(attr) => {
            assert_eq!(attr.ino, ino);
            Ok(ino)
        }
        other => panic!("mkdir answered {other:?}"),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT_LIMIT, "timed out after {WAIT_LIMIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_single(config: RaftConfig) -> (MetaHandle, JoinHandle<()>) {
    let (handle, thread) = start_node(config, Box::new(mfsha_raft::NoPeers)).expect("start node");
    wait_until("the single node to lead", || handle.is_leader());
    (handle, thread)
}

fn stop(handle: MetaHandle, thread: JoinHandle<()>) {
    handle.shutdown();
    thread.join().expect("raft thread panicked");
}

/// Every name must resolve to its inode, and the state must be consistent.
fn assert_present(handle: &MetaHandle, created: &[(String, Ino)]) {
    handle.read(|state| {
        for (name, ino) in created {
            let attr = state.lookup(ROOT_INO, name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(attr.ino, *ino, "{name}");
        }
        state.check_invariants().expect("invariants");
    });
}

async fn propose_concurrently(
    handle: &MetaHandle,
    tasks: usize,
    per_task: usize,
    prefix: &str,
) -> Vec<(String, Ino)> {
    let mut joins = Vec::new();
    for task in 0..tasks {
        let handle = handle.clone();
        let prefix = prefix.to_string();
        joins.push(tokio::spawn(async move {
            let mut created = Vec::new();
            for i in 0..per_task {
                let name = format!("{prefix}-{task}-{i}");
                let ino =
                    propose_mkdir(&handle, name.clone()).await.expect("proposal acknowledged");
                created.push((name, ino));
            }
            created
        }));
    }
    let mut created = Vec::new();
    for join in joins {
        created.extend(join.await.expect("proposer task"));
    }
    created
}

/// The state after a restart is the state before it plus one Noop per entry raft appended
/// since (each new leader term starts with an empty entry).
fn assert_same_state_plus_noops(handle: &MetaHandle, before: &State) {
    let (digest, expected) = handle.read(|state| {
        let mut expected = before.clone();
        for index in expected.applied_index() + 1..=state.applied_index() {
            let noop = Entry { now: Timestamp::new(0, 0), client: None, op: Op::Noop };
            assert_eq!(expected.apply(index, &noop), Ok(Outcome::Unit));
        }
        (state.digest(), expected.digest())
    });
    assert_eq!(digest, expected, "state after restart differs from the state before it");
}

/// What the node loads on start, read straight from the stopped node's store.
fn stored_state(dir: &Path) -> State {
    let store = RaftStore::open(dir, State::TABLES).expect("open the stopped node's store");
    let records = store.load_table_records().expect("tables load");
    let records = records.into_iter().map(|(cf, k, v)| (Table::from_name(cf).unwrap(), k, v));
    let state = State::load(records).expect("state loads");
    assert_eq!(state.applied_index(), store.applied().0);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_proposals_survive_a_restart_with_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, thread) = start_single(config(dir.path()));
    let created = propose_concurrently(&handle, 64, 100, "d").await;
    assert_eq!(created.len(), 6400);
    assert_present(&handle, &created);
    let before = handle.read(State::clone);
    let stats = handle.stats();
    assert!(stats.syncs < stats.proposals, "group commit: {stats:?}");
    stop(handle, thread);
    assert_eq!(stored_state(dir.path()).digest(), before.digest(), "stored state = memory state");

    let (handle, thread) = start_single(config(dir.path()));
    assert_present(&handle, &created);
    assert_same_state_plus_noops(&handle, &before);
    let status = handle.raft_status();
    assert_eq!(status.role, Role::Leader);
    assert_eq!((status.node_id, status.leader_id), (1, 1));
    assert!(status.term >= 2, "a restart starts a new term: {status:?}");
    assert!(status.commit_index > before.applied_index(), "{status:?}");
    stop(handle, thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_one_fsync_among_many_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, thread) = start_single(config(dir.path()));
    let before = handle.stats();
    let created = propose_concurrently(&handle, 32, 20, "g").await;
    let after = handle.stats();
    let proposals = after.proposals - before.proposals;
    let syncs = after.syncs - before.syncs;
    assert_eq!(proposals, created.len() as u64);
    eprintln!("group commit: {syncs} synced writes for {proposals} proposals");
    assert!(syncs * 2 <= proposals, "expected batching: {syncs} syncs for {proposals} proposals");
    assert!(after.entries_applied >= after.proposals);
    assert!(after.ready_batches > 0);
    stop(handle, thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_compaction_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = config(dir.path());
    settings.snapshot_every_entries = 100;
    settings.log_tail_entries = 20;
    let (handle, thread) = start_single(settings.clone());
    let created = propose_concurrently(&handle, 4, 130, "s").await;
    let stats = handle.stats();
    assert!(stats.snapshots >= 4, "{stats:?}");
    // Snapshots are built off the Raft thread: one may still be being written (a `.tmp`
    // file) when the last proposal returns. Once it is done, one file is left.
    let snapshot_files = || {
        let names = std::fs::read_dir(dir.path().join("snapshots")).unwrap();
        let names = names.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| !n.ends_with(".tmp")).collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while snapshot_files().len() != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(snapshot_files().len(), 1, "old snapshots are removed: {:?}", snapshot_files());
    let before = handle.read(State::clone);
    stop(handle, thread);
    assert_eq!(stored_state(dir.path()).digest(), before.digest());

    let (handle, thread) = start_single(settings);
    assert_present(&handle, &created);
    assert_same_state_plus_noops(&handle, &before);
    // The node keeps working after a restart on a compacted log.
    let more = propose_concurrently(&handle, 2, 60, "after").await;
    assert_present(&handle, &more);
    // Built off the Raft thread: the snapshot may be counted a moment after the proposals.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle.stats().snapshots == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(handle.stats().snapshots >= 1, "{:?}", handle.stats());
    stop(handle, thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_feed_and_snapshot_serve_a_logger() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, thread) = start_single(config(dir.path()));
    let mut feed = handle.subscribe_applied();
    let (base_index, base_term, blob) = handle.snapshot().await.expect("snapshot");
    assert_eq!(base_index, handle.read(State::applied_index));
    let mut replica = State::from_snapshot(&blob).expect("snapshot loads");
    assert_eq!(replica.digest(), handle.read(State::digest));
    assert!(base_term >= 1);
    propose_concurrently(&handle, 1, 10, "feed").await;
    // Replaying the feed on the snapshot reproduces the leader's state exactly.
    while replica.applied_index() < handle.read(State::applied_index) {
        let (index, _term, bytes) = feed.recv().await.expect("applied event");
        if index <= replica.applied_index() {
            continue;
        }
        let entry: Entry = postcard::from_bytes(&bytes).expect("feed entries decode");
        // The outcome was the proposer's business; the replica only needs the state change.
        let _outcome = replica.apply(index, &entry);
    }
    assert_eq!(replica.digest(), handle.read(State::digest));
    let (index, _, _) = handle.snapshot().await.unwrap();
    assert_eq!(index, handle.read(State::applied_index), "a fresh snapshot when stale");
    stop(handle, thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_unavailable_and_bad_peer_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, thread) = start_single(config(dir.path()));
    assert_eq!(handle.raft().step_bytes(&[0xff, 0xff, 0xff]), Err(Status::Invalid));
    let first = handle.alloc_ino();
    let second = handle.alloc_ino();
    assert!(second > first);
    assert!(first >= handle.read(State::next_free_ino));
    let (_, entry) = mkdir(&handle, "late".into());
    stop(handle.clone(), thread);
    assert_eq!(handle.propose(entry).await, Err(Status::Unavailable));
    assert!(!handle.is_leader());
}

#[test]
fn start_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = start_node(config(&file), Box::new(mfsha_raft::NoPeers))
        .err()
        .expect("start must fail")
        .to_string();
    assert!(error.contains("not-a-dir"), "{error}");
    let mut bad = config(dir.path());
    bad.node_id = 0;
    let error =
        start_node(bad, Box::new(mfsha_raft::NoPeers)).err().expect("start must fail").to_string();
    assert!(error.contains("node_id"), "{error}");
}

// ---- An in-process 3-node cluster ----

/// Delivers messages between nodes of one process; a node that is down (not in `nodes`) or
/// isolated neither sends nor receives.
#[derive(Clone, Default)]
struct Network {
    nodes: Arc<Mutex<HashMap<u64, MetaHandle>>>,
    isolated: Arc<Mutex<HashSet<u64>>>,
}

struct NetworkTransport {
    from: u64,
    network: Network,
}

impl Transport for NetworkTransport {
    fn send(&mut self, msg: Message) {
        let isolated = self.network.isolated.lock();
        if isolated.contains(&self.from) || isolated.contains(&msg.to) {
            return;
        }
        drop(isolated);
        let nodes = self.network.nodes.lock();
        if !nodes.contains_key(&self.from) {
            return;
        }
        if let Some(target) = nodes.get(&msg.to) {
            match target.raft().step(msg) {
                // A full inbox drops the message, as a lossy network would; raft resends.
                Ok(()) | Err(Status::Unavailable) => {}
                Err(other) => panic!("step answered {other:?}"),
            }
        }
    }
}

struct Member {
    dir: PathBuf,
    handle: MetaHandle,
    thread: JoinHandle<()>,
}

fn member_config(id: u64, dir: &Path) -> RaftConfig {
    let peers = (1..=3).filter(|peer| *peer != id).map(|p| (p, format!("node-{p}"))).collect();
    RaftConfig {
        node_id: id,
        peers,
        snapshot_every_entries: 50,
        log_tail_entries: 10,
        ..config(dir)
    }
}

fn start_member(network: &Network, id: u64, dir: &Path) -> Member {
    let transport = Box::new(NetworkTransport { from: id, network: network.clone() });
    let (handle, thread) = start_node(member_config(id, dir), transport).expect("start member");
    network.nodes.lock().insert(id, handle.clone());
    Member { dir: dir.to_path_buf(), handle, thread }
}

fn leader_of(members: &HashMap<u64, Member>) -> Option<u64> {
    members.iter().find(|(_, member)| member.handle.is_leader()).map(|(id, _)| *id)
}

fn wait_converged(members: &HashMap<u64, Member>) {
    wait_until("all members to apply the same index", || {
        let indices: Vec<u64> =
            members.values().map(|m| m.handle.read(State::applied_index)).collect();
        let leader = leader_of(members).map(|id| members[&id].handle.raft_status().commit_index);
        indices.windows(2).all(|pair| pair[0] == pair[1]) && leader == Some(indices[0])
    });
    let digests: Vec<[u8; 32]> = members.values().map(|m| m.handle.read(State::digest)).collect();
    assert!(digests.windows(2).all(|pair| pair[0] == pair[1]), "replicas diverged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_losing_the_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let network = Network::default();
    let mut members: HashMap<u64, Member> = (1..=3u64)
        .map(|id| (id, start_member(&network, id, dirs[id as usize - 1].path())))
        .collect();
    wait_until("a leader", || leader_of(&members).is_some());
    let first_leader = leader_of(&members).unwrap();
    assert_eq!(first_leader, 1, "only the bootstrapping node can win the first election");
    let follower = (1..=3).find(|id| *id != first_leader).unwrap();
    let refused = propose_mkdir(&members[&follower].handle, "on-follower".into()).await;
    assert_eq!(refused, Err(Status::NotLeader));

    let mut created = propose_concurrently(&members[&first_leader].handle, 8, 20, "one").await;
    wait_converged(&members);
    for id in [2, 3] {
        let stats = members[&id].handle.stats();
        assert_eq!(stats.snapshots_installed, 1, "node {id} starts from the bootstrap snapshot");
    }

    // Stop the leader: the other two elect a new one and keep every acknowledged entry.
    let old = members.remove(&first_leader).unwrap();
    network.nodes.lock().remove(&first_leader);
    stop(old.handle, old.thread);
    wait_until("a new leader", || leader_of(&members).is_some());
    let second_leader = leader_of(&members).unwrap();
    assert_ne!(second_leader, first_leader);
    for member in members.values() {
        assert_present(&member.handle, &created);
    }
    // Enough entries that the log is compacted past the stopped node: it needs a snapshot.
    created.extend(propose_concurrently(&members[&second_leader].handle, 8, 25, "two").await);
    wait_converged(&members);

    let old = start_member(&network, first_leader, &old.dir);
    members.insert(first_leader, old);
    wait_converged(&members);
    let stats = members[&first_leader].handle.stats();
    assert_eq!(stats.snapshots_installed, 1, "the old leader's log was compacted away: {stats:?}");
    for member in members.values() {
        assert_present(&member.handle, &created);
    }
    for (_, member) in members.drain() {
        stop(member.handle, member.thread);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_fails_its_pending_proposals_with_not_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let network = Network::default();
    let mut members: HashMap<u64, Member> = (1..=3u64)
        .map(|id| (id, start_member(&network, id, dirs[id as usize - 1].path())))
        .collect();
    wait_until("node 1 to lead", || members[&1].handle.is_leader());
    let created = propose_concurrently(&members[&1].handle, 2, 5, "before").await;
    wait_converged(&members);

    // Cut the leader off: its proposal cannot commit, and check_quorum makes it step down.
    network.isolated.lock().insert(1);
    let proposals_before = members[&1].handle.stats().proposals;
    let pending = tokio::spawn({
        let handle = members[&1].handle.clone();
        async move { propose_mkdir(&handle, "lost".into()).await }
    });
    let answer = tokio::time::timeout(WAIT_LIMIT, pending).await.expect("answered in time");
    assert_eq!(answer.expect("proposer task"), Err(Status::NotLeader));
    let proposals_after = members[&1].handle.stats().proposals;
    assert_eq!(proposals_after, proposals_before + 1, "the proposal was pending in raft");
    wait_until("the majority to elect a leader", || {
        members.iter().any(|(id, member)| *id != 1 && member.handle.is_leader())
    });

    // Heal: the old leader follows, and the entry nobody acknowledged is gone everywhere.
    network.isolated.lock().clear();
    wait_converged(&members);
    assert!(!members[&1].handle.is_leader());
    for member in members.values() {
        assert_present(&member.handle, &created);
        let lost = member.handle.read(|state| state.lookup(ROOT_INO, "lost").err());
        assert_eq!(lost, Some(Status::NotFound));
    }
    for (_, member) in members.drain() {
        stop(member.handle, member.thread);
    }
}
