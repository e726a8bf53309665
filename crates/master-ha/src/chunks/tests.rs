//! Registry, planner and chunkserver-port tests. The planner is tested on hand-built
//! registries; the port and the engine against scripted chunkservers over real sockets.

use super::plan::{Action, Limits, Moment, Why};
use super::registry::{Inner, ServerKey};
use super::*;
use mfsha_proto::cs::{CsToMaster, DiskInfo, FromMaster};
use mfsha_proto::frame::{read_frame, write_frame};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const GIB: u64 = 1 << 30;

fn disk(used_percent: u64, marked: bool) -> DiskInfo {
    DiskInfo {
        path: "/d".into(),
        total_bytes: 100 * GIB,
        used_bytes: used_percent * GIB,
        marked_for_removal: marked,
        ..Default::default()
    }
}

/// Adds a registered server whose disk is `used_percent` full; keeps its command queue open.
fn add(
    inner: &mut Inner,
    port: u16,
    used_percent: u64,
    keep: &mut Vec<mpsc::Receiver<MasterToCs>>,
) -> ServerKey {
    let (tx, rx) = mpsc::channel(100);
    keep.push(rx);
    let addr = ServerAddr { host: "10.0.0.1".into(), port };
    let key = inner.add_server(port as u64, addr, vec![], vec![disk(used_percent, false)], tx);
    inner.servers.get_mut(&key).unwrap().registered = true;
    key
}

fn info(version: u32, goal: u8) -> ChunkInfo {
    ChunkInfo { version, refcount: 1, goal }
}

fn limits() -> Limits {
    Limits {
        replications_per_server: 2,
        deletions_per_server: 10,
        rebalance_threshold: 0.10,
        write_lock: Duration::from_secs(60),
    }
}

fn moment(ready: bool) -> Moment {
    let now = Instant::now();
    Moment { table_taken: now, ready, now }
}

fn replications(actions: &[Action]) -> Vec<(ChunkId, ServerKey, ServerKey, Why)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Replicate { chunk, source, target, why, .. } => {
                Some((chunk, source, target, why))
            }
            _ => None,
        })
        .collect()
}

fn deletions(actions: &[Action]) -> Vec<(ChunkId, u32, ServerKey, Why)> {
    let mut out: Vec<_> = actions
        .iter()
        .filter_map(|a| match *a {
            Action::Delete { chunk, version, server, why } => Some((chunk, version, server, why)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn endangered_chunks_go_first_and_limits_hold() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 50, &mut keep);
    let s2 = add(&mut inner, 2, 50, &mut keep);
    let s3 = add(&mut inner, 3, 50, &mut keep);
    let s4 = add(&mut inner, 4, 10, &mut keep);
    inner.upsert_copy(s2, 20, 1, false);
    inner.upsert_copy(s3, 20, 1, false);
    inner.upsert_copy(s1, 10, 1, false);
    let table = vec![(20, info(1, 3)), (10, info(1, 2))];
    let one = Limits { replications_per_server: 1, ..limits() };
    let plan = inner.plan(&table, moment(true), &one);
    // Chunk 10 (one copy) is served first and takes the emptiest server; chunk 20 then finds
    // no target with a free slot that does not already hold it.
    assert_eq!(replications(&plan.actions), vec![(10, s1, s4, Why::Endangered)]);
    assert_eq!(plan.health.endangered, 1);
    assert_eq!(plan.health.undergoal, 2);
    let plan = inner.plan(&table, moment(true), &limits());
    let reps = replications(&plan.actions);
    assert_eq!(reps[0], (10, s1, s4, Why::Endangered));
    assert_eq!(reps.len(), 2);
    assert_eq!((reps[1].0, reps[1].3), (20, Why::Undergoal));
    assert!(reps[1].2 == s1 || reps[1].2 == s4, "never onto a server holding the chunk");
}

#[test]
fn replication_fills_the_whole_goal_on_distinct_servers() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let keys: Vec<_> = (1..=4).map(|p| add(&mut inner, p, 20, &mut keep)).collect();
    inner.upsert_copy(keys[0], 5, 3, false);
    let plan = inner.plan(
        &[(5, info(3, 4))],
        moment(true),
        &Limits { replications_per_server: 9, ..limits() },
    );
    let reps = replications(&plan.actions);
    let mut targets: Vec<_> = reps.iter().map(|r| r.2).collect();
    targets.sort();
    assert_eq!(targets, keys[1..].to_vec());
    assert!(reps.iter().all(|r| r.1 == keys[0]));
}

#[test]
fn overgoal_copies_are_deleted_from_the_fullest_servers() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    let s2 = add(&mut inner, 2, 90, &mut keep);
    let s3 = add(&mut inner, 3, 50, &mut keep);
    for s in [s1, s2, s3] {
        inner.upsert_copy(s, 7, 2, false);
    }
    let plan = inner.plan(&[(7, info(2, 1))], moment(true), &limits());
    assert_eq!(deletions(&plan.actions), {
        let mut v = vec![(7, 2, s2, Why::Overgoal), (7, 2, s3, Why::Overgoal)];
        v.sort();
        v
    });
    assert_eq!(plan.health.overgoal, 1);
}

#[test]
fn stale_copies_are_deleted_only_after_the_registration_delay() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    let s2 = add(&mut inner, 2, 20, &mut keep);
    let s3 = add(&mut inner, 3, 20, &mut keep);
    inner.upsert_copy(s1, 8, 5, false);
    inner.upsert_copy(s2, 8, 5, false);
    inner.upsert_copy(s3, 8, 4, false); // was down during a write
    let table = [(8, info(5, 2)), (9, info(1, 2)), (10, info(1, 1))];
    inner.upsert_copy(s1, 9, 1, false); // its second copy may be on a server not yet back
    inner.upsert_copy(s1, 10, 1, false);
    inner.upsert_copy(s2, 10, 1, false);
    let early = inner.plan(&table, moment(false), &limits());
    assert!(early.actions.is_empty(), "nothing changes before the delay: {:?}", early.actions);
    assert_eq!((early.health.undergoal, early.health.overgoal), (1, 1));
    inner.remove_copy(s2, 10);
    let plan = inner.plan(&table, moment(true), &limits());
    assert_eq!(deletions(&plan.actions), vec![(8, 4, s3, Why::WrongVersion)]);
    // Chunk 8 has its two valid copies; chunk 9 is now really short of one, and s3 (which
    // holds only a stale copy of 8) may take it.
    let reps = replications(&plan.actions);
    assert_eq!(reps.len(), 1, "{reps:?}");
    assert_eq!((reps[0].0, reps[0].1, reps[0].3), (9, s1, Why::Endangered));
}

#[test]
fn when_no_copy_has_the_current_version_the_newest_is_accepted() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    let s2 = add(&mut inner, 2, 20, &mut keep);
    inner.upsert_copy(s1, 9, 3, false);
    inner.upsert_copy(s2, 9, 4, false);
    let table = [(9, info(6, 2))];
    let plan = inner.plan(&table, moment(false), &limits());
    assert!(plan.actions.is_empty(), "not before chunkservers had time to register");
    assert_eq!(plan.health.missing, 1);
    let plan = inner.plan(&table, moment(true), &limits());
    // The newest copy gets a version never issued (a server still away may hold 5).
    assert_eq!(
        plan.actions,
        vec![Action::Renumber { chunk: 9, from: 4, to: 7, servers: vec![s2] }]
    );
    // Nothing else happens to the chunk while the renumbering is in flight.
    inner.proposing.insert(9);
    assert!(inner.plan(&table, moment(true), &limits()).actions.is_empty());
    inner.proposing.remove(&9);
    // Renumbered copies whose new version was not recorded: record it.
    inner.upsert_copy(s2, 9, 7, false);
    let plan = inner.plan(&table, moment(true), &limits());
    assert_eq!(plan.actions, vec![Action::AcceptVersion { chunk: 9, version: 7 }]);
    // Damaged copies are never taken.
    inner.mark_damaged(s2, 9, 7);
    inner.mark_damaged(s1, 9, 3);
    assert!(inner.plan(&table, moment(true), &limits()).actions.is_empty());
}

#[test]
fn copies_of_unknown_chunks_are_deleted_unless_newer_than_the_table() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    inner.upsert_copy(s1, 100, 1, false);
    let taken = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    inner.upsert_copy(s1, 101, 1, false); // created after the table was read
    let at = Moment { table_taken: taken, ready: true, now: Instant::now() };
    let plan = inner.plan(&[], at, &limits());
    assert_eq!(deletions(&plan.actions), vec![(100, 1, s1, Why::Unused)]);
    assert!(deletions(&inner.plan(&[], moment(false), &limits()).actions).is_empty());
}

#[test]
fn damaged_copies_are_replaced_then_deleted() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    // The server with the damaged copy is the emptiest, and still no target: the new copy
    // goes to another machine.
    let s2 = add(&mut inner, 2, 5, &mut keep);
    let s3 = add(&mut inner, 3, 20, &mut keep);
    inner.upsert_copy(s1, 4, 1, false);
    inner.upsert_copy(s2, 4, 1, false);
    inner.mark_damaged(s2, 4, 1);
    let plan = inner.plan(&[(4, info(1, 2))], moment(true), &limits());
    assert_eq!(replications(&plan.actions), vec![(4, s1, s3, Why::Endangered)]);
    assert_eq!(deletions(&plan.actions), vec![(4, 1, s2, Why::Damaged)]);
    // The only copy, even damaged, is never deleted.
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    add(&mut inner, 2, 20, &mut keep);
    inner.upsert_copy(s1, 4, 1, false);
    inner.mark_damaged(s1, 4, 1);
    let plan = inner.plan(&[(4, info(1, 2))], moment(true), &limits());
    assert!(deletions(&plan.actions).is_empty());
    assert_eq!(plan.health.missing, 1);
}

#[test]
fn marked_for_removal_copies_are_copied_elsewhere_and_the_disk_reported_safe() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    let s2 = add(&mut inner, 2, 20, &mut keep);
    let s3 = add(&mut inner, 3, 30, &mut keep);
    inner.servers.get_mut(&s2).unwrap().disks.push(disk(10, true));
    inner.upsert_copy(s1, 1, 1, false);
    inner.upsert_copy(s2, 1, 1, true);
    let table = [(1, info(1, 2))];
    let plan = inner.plan(&table, moment(true), &limits());
    assert_eq!(replications(&plan.actions), vec![(1, s1, s3, Why::Endangered)]);
    assert!(plan.safe_to_remove.is_empty(), "s2's disk still holds a needed copy");
    inner.upsert_copy(s3, 1, 1, false);
    let plan = inner.plan(&table, moment(true), &limits());
    assert!(plan.actions.is_empty(), "marked copies are neither counted overgoal nor deleted");
    assert_eq!(plan.safe_to_remove, HashSet::from([s2]));
    assert_eq!(inner.locations(1, 1).last().unwrap().port, 2, "marked copy read last");
}

#[test]
fn chunks_being_written_are_left_alone() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    add(&mut inner, 2, 20, &mut keep);
    inner.upsert_copy(s1, 3, 2, false);
    inner.writing.insert(3, Instant::now());
    assert!(inner.plan(&[(3, info(2, 2))], moment(true), &limits()).actions.is_empty());
    let expired = Limits { write_lock: Duration::ZERO, ..limits() };
    assert_eq!(
        replications(&inner.plan(&[(3, info(2, 2))], moment(true), &expired).actions).len(),
        1
    );
}

#[test]
fn deletions_are_paced_per_server() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    for chunk in 0..50 {
        inner.upsert_copy(s1, 1000 + chunk, 1, false);
    }
    let plan = inner.plan(&[], moment(true), &Limits { deletions_per_server: 7, ..limits() });
    assert_eq!(deletions(&plan.actions).len(), 7);
    inner.servers.get_mut(&s1).unwrap().deletions = 5;
    let plan = inner.plan(&[], moment(true), &Limits { deletions_per_server: 7, ..limits() });
    assert_eq!(deletions(&plan.actions).len(), 2);
}

#[test]
fn rebalancing_moves_chunks_from_full_to_empty_servers_only_past_the_threshold() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let full = add(&mut inner, 1, 90, &mut keep);
    let mid = add(&mut inner, 2, 50, &mut keep);
    let empty = add(&mut inner, 3, 5, &mut keep);
    let table: Vec<_> = (1..=5).map(|c| (c, info(1, 2))).collect();
    for c in 1..=5 {
        inner.upsert_copy(full, c, 1, false);
        inner.upsert_copy(mid, c, 1, false);
    }
    let plan = inner.plan(&table, moment(true), &limits());
    let reps = replications(&plan.actions);
    assert_eq!(reps.len(), 2, "paced by the replication limit: {reps:?}");
    assert!(reps.iter().all(|r| r.1 == full && r.2 == empty && r.3 == Why::Rebalance));
    let wide = Limits { rebalance_threshold: 0.95, ..limits() };
    assert!(inner.plan(&table, moment(true), &wide).actions.is_empty());
}

#[test]
fn chain_choice_spreads_and_never_repeats_a_server() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let keys: Vec<_> = (1..=3).map(|p| add(&mut inner, p, 20, &mut keep)).collect();
    let mut first = HashMap::new();
    for _ in 0..300 {
        let chain = inner.choose_chain(2, &[]);
        assert_eq!(chain.len(), 2);
        assert_ne!(chain[0], chain[1]);
        *first.entry(chain[0].port).or_insert(0) += 1;
    }
    assert_eq!(first.len(), 3, "every server leads some chains: {first:?}");
    assert_eq!(inner.choose_chain(5, &[]).len(), 3);
    let exclude = vec![inner.servers[&keys[0]].addr.clone()];
    assert!(inner.choose_chain(3, &exclude).iter().all(|a| a.port != 1));
    // A full server gets nothing.
    inner.servers.get_mut(&keys[1]).unwrap().disks = vec![disk(100, false)];
    assert!(inner.choose_chain(3, &[]).iter().all(|a| a.port != 2));
}

#[test]
fn locations_and_copy_states() {
    let (mut inner, mut keep) = (Inner::default(), Vec::new());
    let s1 = add(&mut inner, 1, 20, &mut keep);
    let s2 = add(&mut inner, 2, 20, &mut keep);
    let s3 = add(&mut inner, 3, 20, &mut keep);
    let s4 = add(&mut inner, 4, 20, &mut keep);
    inner.upsert_copy(s1, 1, 2, false);
    inner.upsert_copy(s2, 1, 1, false);
    inner.upsert_copy(s3, 1, 2, false);
    inner.mark_damaged(s3, 1, 2);
    inner.upsert_copy(s4, 1, 2, true);
    let ports: Vec<u16> = inner.locations(1, 2).iter().map(|a| a.port).collect();
    assert_eq!(ports, vec![1, 4]);
    let states: Vec<String> = inner.copies_of(1, Some(2)).into_iter().map(|c| c.state).collect();
    assert_eq!(states, vec!["VALID", "WRONG VERSION", "DAMAGED", "MARKED FOR REMOVAL"]);
    inner.remove_server(s1);
    assert_eq!(inner.locations(1, 2).len(), 1);
}

// ---- the chunkserver port and the engine, over sockets ---------------------------------

struct FakeMeta {
    leader: AtomicBool,
    table: parking_lot::Mutex<HashMap<ChunkId, ChunkInfo>>,
}

impl ChunkMeta for FakeMeta {
    fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }
    fn node_id(&self) -> u64 {
        1
    }
    fn chunk(&self, id: ChunkId) -> Option<ChunkInfo> {
        self.table.lock().get(&id).copied()
    }
    fn chunk_table(&self) -> Vec<(ChunkId, ChunkInfo)> {
        self.table.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
    fn accept_version(&self, id: ChunkId, version: u32) -> BoxFuture<'static, Result<(), Status>> {
        if let Some(c) = self.table.lock().get_mut(&id) {
            c.version = version;
        }
        Box::pin(async { Ok(()) })
    }
}

/// The term of the fake leader.
const TERM: u64 = 3;

/// A scripted chunkserver: registers with `chunks`, then answers every command `Ok`.
struct FakeCs {
    commands: mpsc::Receiver<MasterToCs>,
    /// Frames to send besides the answers (reports, heartbeats).
    reports: mpsc::Sender<CsToMaster>,
}

async fn fake_cs(
    master: std::net::SocketAddr,
    port: u16,
    chunks: Vec<(ChunkId, u32, bool)>,
) -> FakeCs {
    let stream = tokio::net::TcpStream::connect(master).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let hello = read_frame::<_, FromMaster>(&mut r).await.unwrap().body;
    assert!(matches!(hello.msg, MasterToCs::Hello { master_node: 1, .. }), "{hello:?}");
    let register = CsToMaster::Register {
        host: Some("127.0.0.1".into()),
        port,
        labels: vec![],
        disks: vec![disk(10, false)],
        server_id: port as u64,
        cluster: Some("test".into()),
    };
    for msg in [register, CsToMaster::Chunks(chunks), CsToMaster::RegisterDone] {
        write_frame(&mut w, 0, &msg).await.unwrap();
    }
    w.flush().await.unwrap();
    let (tx, commands) = mpsc::channel(100);
    let (reports, mut to_send) = mpsc::channel::<CsToMaster>(100);
    tokio::spawn(async move {
        let (frames_tx, mut frames) = mpsc::channel(100);
        tokio::spawn(async move {
            while let Ok(frame) = read_frame::<_, FromMaster>(&mut r).await {
                if frames_tx.send(frame.body).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let frame = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
                Some(report) = to_send.recv() => {
                    if write_frame(&mut w, 0, &report).await.is_err() || w.flush().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            assert_eq!(frame.term, TERM, "every frame carries the master's term");
            let msg = frame.msg;
            let op = match &msg {
                MasterToCs::Heartbeat => continue,
                MasterToCs::Hello { .. } | MasterToCs::Welcome { .. } => None,
                MasterToCs::Create { op, .. }
                | MasterToCs::SetVersion { op, .. }
                | MasterToCs::Delete { op, .. }
                | MasterToCs::Replicate { op, .. }
                | MasterToCs::Truncate { op, .. }
                | MasterToCs::Duplicate { op, .. } => Some(*op),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            if let Some(op) = op {
                let done = CsToMaster::Done { op, status: Ok(()) };
                if write_frame(&mut w, 0, &done).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        }
    });
    FakeCs { commands, reports }
}

impl FakeCs {
    async fn report(&self, report: CsToMaster) {
        self.reports.send(report).await.expect("fake chunkserver gone");
    }

    /// Fails if a command arrives within `wait`.
    async fn no_command(&mut self, wait: Duration) {
        if let Ok(got) = tokio::time::timeout(wait, self.commands.recv()).await {
            panic!("expected no command, got {got:?}");
        }
    }

    async fn next(&mut self) -> MasterToCs {
        tokio::time::timeout(Duration::from_secs(5), self.commands.recv())
            .await
            .expect("no command from the master")
            .expect("connection closed")
    }
}

async fn setup(
    table: Vec<(ChunkId, ChunkInfo)>,
) -> (Arc<ChunkRegistry>, Arc<FakeMeta>, std::net::SocketAddr) {
    let meta = Arc::new(FakeMeta {
        leader: AtomicBool::new(true),
        table: parking_lot::Mutex::new(table.into_iter().collect()),
    });
    let config = ChunksConfig { replication_delay_init_ms: 0, ..ChunksConfig::default() };
    let registry = ChunkRegistry::new(meta.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = crate::server::Shutdown::new();
    let leadership = {
        let meta = meta.clone();
        let source = move || {
            let leading = meta.is_leader();
            let leader_id = if leading { 1 } else { 2 };
            crate::server::leadership::Lead { term: TERM, leader_id, leading, raft_leader: leading }
        };
        let grace = Duration::from_millis(250);
        crate::server::Leadership::from_fn(
            Arc::new(source),
            grace,
            Default::default(),
            shutdown.clone(),
        )
    };
    let greeting = listener::Greeting { leadership, cluster: "test".into(), key: None };
    tokio::spawn(listener::serve(listener, registry.clone(), greeting, shutdown));
    (registry, meta, addr)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn registration_replication_and_stale_deletion_over_the_port() {
    let table = vec![(1, info(1, 2)), (2, info(2, 1))];
    let (registry, _meta, addr) = setup(table).await;
    let mut a = fake_cs(addr, 7001, vec![(1, 1, false), (2, 1, false)]).await;
    let mut b = fake_cs(addr, 7002, vec![(2, 2, false)]).await;
    assert!(matches!(a.next().await, MasterToCs::Welcome { master_node: 1 }));
    assert!(matches!(b.next().await, MasterToCs::Welcome { .. }));
    wait_until("both registered", || registry.chunkservers().len() == 2).await;
    registry.pass();
    match b.next().await {
        MasterToCs::Replicate { chunk_id: 1, version: 1, source, .. } => {
            assert_eq!(source.port, 7001)
        }
        other => panic!("expected a replication to b, got {other:?}"),
    }
    assert!(matches!(a.next().await, MasterToCs::Delete { chunk_id: 2, version: 1, .. }));
    wait_until("replicated copy recorded", || registry.locations(1, 1).len() == 2).await;
    wait_until("stale copy forgotten", || registry.copies(2).len() == 1).await;
    registry.pass();
    let health = registry.copy_health(2);
    assert_eq!((health.undergoal, health.missing, health.overgoal), (0, 0, 0));
}

#[tokio::test]
async fn prepare_write_creates_copies_and_bumps_versions() {
    let (registry, meta, addr) = setup(vec![]).await;
    let mut a = fake_cs(addr, 7101, vec![]).await;
    let mut b = fake_cs(addr, 7102, vec![]).await;
    a.next().await;
    b.next().await;
    wait_until("both registered", || registry.choose_chain(2, &[]).len() == 2).await;
    let create = Outcome::ChunkWrite {
        chunk_id: 50,
        version: 1,
        previous: None,
        file_size: 0,
        goal: 2,
        holds_data: false,
    };
    let chain = registry.prepare_write(&create).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert!(matches!(a.next().await, MasterToCs::Create { chunk_id: 50, version: 1, .. }));
    assert!(matches!(b.next().await, MasterToCs::Create { chunk_id: 50, version: 1, .. }));
    // A retried request finds the copies there and sends nothing new.
    assert_eq!(registry.prepare_write(&create).await.unwrap().len(), 2);
    registry.write_end(50, true);
    meta.table.lock().insert(50, info(2, 2));
    let bump = Outcome::ChunkWrite {
        chunk_id: 50,
        version: 2,
        previous: Some((50, 1)),
        file_size: 10,
        goal: 2,
        holds_data: true,
    };
    let chain = registry.prepare_write(&bump).await.unwrap();
    assert_eq!(chain.len(), 2);
    for cs in [&mut a, &mut b] {
        let cmd = cs.next().await;
        assert!(
            matches!(
                cmd,
                MasterToCs::SetVersion { chunk_id: 50, old_version: 1, new_version: 2, .. }
            ),
            "{cmd:?}"
        );
    }
    assert_eq!(registry.locations(50, 2).len(), 2);
    let states: Vec<String> = registry.copies(50).into_iter().map(|c| c.state).collect();
    assert_eq!(states, vec!["VALID", "VALID"]);
}

#[tokio::test]
async fn a_chunk_without_copies_is_made_afresh_only_if_it_holds_no_data() {
    // Chunk 60 is in the metadata at version 1 but no chunkserver ever created it (the
    // leader died between committing the write and creating the copies).
    let (registry, meta, addr) = setup(vec![(60, info(1, 2))]).await;
    let mut a = fake_cs(addr, 7301, vec![]).await;
    let mut b = fake_cs(addr, 7302, vec![]).await;
    a.next().await;
    b.next().await;
    wait_until("both registered", || registry.choose_chain(2, &[]).len() == 2).await;
    let bump = |holds_data| Outcome::ChunkWrite {
        chunk_id: 60,
        version: 2,
        previous: Some((60, 1)),
        file_size: 0,
        goal: 2,
        holds_data,
    };
    // With acknowledged bytes in it, inventing an empty chunk would lose them: refused.
    meta.table.lock().insert(60, info(2, 2));
    assert_eq!(registry.prepare_write(&bump(true)).await, Err(Status::NoChunkCopies));
    // Without, it is created at the new version on a fresh chain.
    let chain = registry.prepare_write(&bump(false)).await.unwrap();
    assert_eq!(chain.len(), 2);
    for cs in [&mut a, &mut b] {
        let cmd = cs.next().await;
        assert!(matches!(cmd, MasterToCs::Create { chunk_id: 60, version: 2, .. }), "{cmd:?}");
    }
    registry.write_end(60, true);
}

#[tokio::test]
async fn a_follower_keeps_the_chunk_map_warm_and_commands_nothing_until_it_leads() {
    // Chunk 1 wants two copies and has one: a leader replicates it at its first pass.
    let (registry, meta, addr) = setup(vec![(1, info(1, 2)), (2, info(1, 1))]).await;
    meta.leader.store(false, Ordering::Release);
    let mut a = fake_cs(addr, 7201, vec![(1, 1, false)]).await;
    let mut b = fake_cs(addr, 7202, vec![]).await;
    assert!(matches!(a.next().await, MasterToCs::Welcome { .. }));
    assert!(matches!(b.next().await, MasterToCs::Welcome { .. }));
    wait_until("both registered", || registry.chunkservers().len() == 2).await;
    registry.pass();
    a.no_command(Duration::from_millis(300)).await;
    b.no_command(Duration::from_millis(10)).await;
    // Copies made or deleted on another leader's command are reported here too.
    b.report(CsToMaster::Copy { chunk_id: 2, version: 1 }).await;
    wait_until("reported copy recorded", || registry.locations(2, 1).len() == 1).await;
    b.report(CsToMaster::Gone { chunk_id: 2 }).await;
    wait_until("reported deletion recorded", || registry.locations(2, 1).is_empty()).await;
    // A client is writing chunk 1 under the old leader: the new leader leaves it alone ...
    a.report(CsToMaster::Heartbeat { disks: vec![disk(10, false)], writing: vec![1] }).await;
    wait_until("write noted", || registry.inner.lock().reported_written(1, Instant::now())).await;
    meta.leader.store(true, Ordering::Release);
    assert_eq!(registry.locations(1, 1).len(), 1, "known the moment it leads");
    registry.pass();
    b.no_command(Duration::from_millis(300)).await;
    // ... until the chunkservers stop naming it.
    tokio::time::sleep(super::registry::REPORTED_WRITING_HOLD).await;
    registry.pass();
    match b.next().await {
        MasterToCs::Replicate { chunk_id: 1, version: 1, source, .. } => {
            assert_eq!(source.port, 7201)
        }
        other => panic!("expected a replication to b, got {other:?}"),
    }
    // Stepping down keeps the connections: it stays warm for the next election.
    meta.leader.store(false, Ordering::Release);
    registry.pass();
    assert_eq!(registry.chunkservers().len(), 2);
    a.no_command(Duration::from_millis(300)).await;
}
