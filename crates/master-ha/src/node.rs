//! The Raft node: one thread owns the raft-rs `RawNode` and the [`RaftStore`], drains a bounded
//! inbox of proposals and peer messages, ticks, and handles each `Ready` in the order raft-rs
//! requires (see [`Node::on_ready`]). Everything else talks to it through a [`MetaHandle`].
//!
//! Group commit: the loop takes every waiting proposal before it asks for a `Ready`, so all of
//! them are appended with one synced RocksDB write.
//!
//! Durability of an acknowledged proposal: its log entry is in a synced RocksDB batch (step 5 of
//! an earlier `Ready`) before raft-rs hands it back as committed, and the metadata it changed is
//! written by the apply batch before the proposer hears back. The apply batch itself is not
//! fsynced: if it is lost in a crash, the stored applied index is lost with it (same batch), and
//! raft replays the entry from the synced log on restart. The log is only compacted by a synced
//! write, which also makes every earlier apply batch durable (RocksDB syncs its write-ahead log
//! in order).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mfsha_meta::{Entry, Op, Outcome, State, Table};
use mfsha_proto::types::{ChunkId, Ino, Status, Timestamp};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::slog_tracing::raft_logger;
use crate::storage::{ApplyBatch, RaftStore, StoreError, TableRecord, META_TABLE_CFS};

/// How many proposals may wait in the inbox; more wait in `propose` for a slot.
const PROPOSAL_SLOTS: usize = 4096;
/// How many peer messages may wait in the inbox; more are dropped (raft resends).
const MESSAGE_SLOTS: usize = 4096;
/// Applied entries kept for slow `subscribe_applied` receivers before they see `Lagged`.
const APPLIED_CHANNEL_CAPACITY: usize = 16 * 1024;
/// Largest encoded raft message accepted by [`MetaHandle::step_bytes`] (snapshots included).
pub const MAX_PEER_MESSAGE_BYTES: usize = 1 << 30;

/// Raft settings of this master. A group of one is `peers: vec![]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id; 1 for a single master.
    pub node_id: u64,
    /// RocksDB lives in `data_dir/meta.rocksdb`, snapshots in `data_dir/snapshots`.
    pub data_dir: PathBuf,
    /// The other voters: (id, "host:port").
    pub peers: Vec<(u64, String)>,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot and compact when `applied - last snapshot` reaches this.
    pub snapshot_every_entries: u64,
    /// Entries kept behind the snapshot for slow followers.
    pub log_tail_entries: u64,
}

impl RaftConfig {
    /// A single master (node 1) with the usual timings.
    pub fn single(data_dir: PathBuf) -> RaftConfig {
        RaftConfig {
            node_id: 1,
            data_dir,
            peers: Vec::new(),
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_every_entries: 100_000,
            log_tail_entries: 10_000,
        }
    }

    fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.peers.iter().map(|(id, _)| *id).collect();
        voters.push(self.node_id);
        voters.sort_unstable();
        voters
    }

    fn check(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must not be 0".into());
        }
        if self.voters().windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(format!("node ids must be unique, got voters {:?}", self.voters()));
        }
        if self.tick_ms == 0 || self.snapshot_every_entries == 0 {
            return Err("tick_ms and snapshot_every_entries must be positive".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "need 0 < heartbeat_ticks ({}) < election_ticks ({})",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        Ok(())
    }
}

/// What [`MetaHandle::raft_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

/// Counters of the node's work, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// `Ready`s handled.
    pub ready_batches: u64,
    /// Entries applied to the state machine.
    pub entries_applied: u64,
    /// Synced RocksDB writes of the Raft log.
    pub syncs: u64,
    /// Proposals handed to raft.
    pub proposals: u64,
    /// Snapshots taken (not counting received ones).
    pub snapshots: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
}

/// Why the node could not start. Each says which path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid raft settings: {0}; fix the master configuration")]
    Config(String),
    #[error("cannot open the metadata store in {data_dir}: {cause}")]
    Store { data_dir: PathBuf, cause: StoreError },
    #[error(
        "the metadata tables in {data_dir} do not load: {reason}; run `mfsha meta check` on \
         this directory, or restore it from a replica or a metalogger copy"
    )]
    Load { data_dir: PathBuf, reason: String },
    #[error(
        "raft refused to start node {node_id} on {data_dir}: {cause}; check the raft settings, \
         or restore this data directory from a replica"
    )]
    Raft { node_id: u64, data_dir: PathBuf, cause: raft::Error },
    #[error("cannot start the raft thread: {0}; the system is out of threads or memory")]
    Thread(std::io::Error),
}

/// Outgoing raft messages. The node calls `send` from its own thread, so it must not block for
/// long: queue and return. Lost messages are fine; raft resends.
pub trait Transport: Send + 'static {
    fn send(&mut self, msg: Message);
}

/// The transport of a group of one: there is nobody to send to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, msg: Message) {
        tracing::error!(to = msg.to, kind = ?msg.get_msg_type(), "a group of one has no peers; \
            raft message dropped (is `peers` missing from the master configuration?)");
    }
}

/// The applied state and the term of its last entry.
struct Applied {
    state: State,
    term: u64,
}

/// One item of the node's inbox. The permits bound the inbox; they are released when the node
/// takes the item.
enum Inbox {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Outcome, Status>>,
        _permit: OwnedSemaphorePermit,
    },
    Peer {
        msg: Message,
        _permit: OwnedSemaphorePermit,
    },
    /// Wakes the loop so it sees the shutdown flag.
    Wake,
}

type AppliedEvent = (u64, u64, Arc<Vec<u8>>);

/// State shared between the node thread and the handles.
struct Shared {
    node_id: u64,
    applied: RwLock<Applied>,
    status: Mutex<RaftStatus>,
    is_leader: AtomicBool,
    shutting_down: AtomicBool,
    inbox: mpsc::Sender<Inbox>,
    proposal_slots: Arc<Semaphore>,
    message_slots: Arc<Semaphore>,
    next_ino: AtomicU64,
    next_chunk_id: AtomicU64,
    applied_events: broadcast::Sender<AppliedEvent>,
    snapshot: Mutex<Option<AppliedEvent>>,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    ready_batches: AtomicU64,
    entries_applied: AtomicU64,
    syncs: AtomicU64,
    proposals: AtomicU64,
    snapshots: AtomicU64,
    snapshots_installed: AtomicU64,
}

/// The way into the node for everyone else: proposals, reads, status.
#[derive(Clone)]
pub struct MetaHandle {
    shared: Arc<Shared>,
}

impl MetaHandle {
    /// Proposes `entry`. Resolves only after the entry is committed, applied and durable, with
    /// what applying it produced. `Err(NotLeader)` at once if this node is not the leader, and
    /// for every pending proposal when leadership is lost; `Err(Unavailable)` while shutting
    /// down.
    pub async fn propose(&self, entry: Entry) -> Result<Outcome, Status> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(Status::Unavailable);
        }
        if !self.is_leader() {
            return Err(Status::NotLeader);
        }
        let data = postcard::to_allocvec(&entry).map_err(|error| {
            tracing::error!(%error, ?entry, "cannot encode a proposal");
            Status::Invalid
        })?;
        let slots = self.shared.proposal_slots.clone();
        let permit = slots.acquire_owned().await.map_err(|_| Status::Unavailable)?;
        let (reply, result) = oneshot::channel();
        let item = Inbox::Propose { data, reply, _permit: permit };
        self.shared.inbox.send(item).map_err(|_| Status::Unavailable)?;
        // A dropped sender means the node stopped before answering.
        result.await.unwrap_or(Err(Status::Unavailable))
    }

    /// Runs `f` on the applied state under a read lock. Never waits for an fsync: the node
    /// takes the write lock only while it applies a batch in memory.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.applied.read().state)
    }

    pub fn raft_status(&self) -> RaftStatus {
        self.shared.status.lock().clone()
    }

    /// True once this node leads *and* has applied its own term's first entry, hence every
    /// entry committed before its term: only then are reads from [`MetaHandle::read`] up to
    /// date (Raft thesis 6.4). A leader cut off from the majority keeps answering true until
    /// check_quorum makes it step down, within one election timeout.
    pub fn is_leader(&self) -> bool {
        self.shared.is_leader.load(Ordering::Acquire)
    }

    /// A fresh inode number for a proposal: monotonic, never below `next_free_ino()`. Two
    /// leaders may hand out the same number; apply rejects the second use with `Exists`.
    pub fn alloc_ino(&self) -> Ino {
        let floor = self.read(|state| state.next_free_ino());
        self.shared.next_ino.fetch_max(floor, Ordering::AcqRel);
        self.shared.next_ino.fetch_add(1, Ordering::AcqRel)
    }

    /// A fresh chunk id, like [`MetaHandle::alloc_ino`].
    pub fn alloc_chunk_id(&self) -> ChunkId {
        let floor = self.read(|state| state.next_free_chunk_id());
        self.shared.next_chunk_id.fetch_max(floor, Ordering::AcqRel);
        self.shared.next_chunk_id.fetch_add(1, Ordering::AcqRel)
    }

    /// Every entry applied from now on: (index, term, the postcard-encoded `meta::Entry` that
    /// `State::apply` saw; raft's own empty and conf-change entries appear as `Op::Noop`).
    pub fn subscribe_applied(&self) -> broadcast::Receiver<(u64, u64, Arc<Vec<u8>>)> {
        self.shared.applied_events.subscribe()
    }

    /// A snapshot of the applied state and its (index, term). The latest stored snapshot if it
    /// is current, otherwise a new one taken now under the read lock (this delays applies
    /// while it encodes). A subscriber that subscribed before calling this misses nothing:
    /// the snapshot's index is at least the index before its first event.
    pub fn snapshot(&self) -> Result<(u64, u64, Arc<Vec<u8>>), Status> {
        let applied = self.shared.applied.read();
        let index = applied.state.applied_index();
        if index == 0 {
            return Err(Status::Unavailable); // a follower that has not received its first snapshot
        }
        let mut cached = self.shared.snapshot.lock();
        if let Some(snapshot) = cached.as_ref().filter(|snapshot| snapshot.0 == index) {
            return Ok(snapshot.clone());
        }
        let snapshot = (index, applied.term, Arc::new(applied.state.to_snapshot()));
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Counters of the node's work so far.
    pub fn stats(&self) -> NodeStats {
        let stats = &self.shared.stats;
        NodeStats {
            ready_batches: stats.ready_batches.load(Ordering::Relaxed),
            entries_applied: stats.entries_applied.load(Ordering::Relaxed),
            syncs: stats.syncs.load(Ordering::Relaxed),
            proposals: stats.proposals.load(Ordering::Relaxed),
            snapshots: stats.snapshots.load(Ordering::Relaxed),
            snapshots_installed: stats.snapshots_installed.load(Ordering::Relaxed),
        }
    }

    /// Hands a raft message from a peer to the node. `Err(Unavailable)` if the inbox is full
    /// or the node stopped; the message is dropped and raft will resend.
    pub fn step(&self, msg: Message) -> Result<(), Status> {
        let slots = self.shared.message_slots.clone();
        let permit = slots.try_acquire_owned().map_err(|_| Status::Unavailable)?;
        self.shared
            .inbox
            .send(Inbox::Peer { msg, _permit: permit })
            .map_err(|_| Status::Unavailable)
    }

    /// [`MetaHandle::step`] for a protobuf-encoded message from the network. `Err(Invalid)` if
    /// it is too large or does not decode.
    pub fn step_bytes(&self, bytes: &[u8]) -> Result<(), Status> {
        if bytes.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(Status::Invalid);
        }
        let msg = Message::parse_from_bytes(bytes).map_err(|_| Status::Invalid)?;
        self.step(msg)
    }

    /// Stops the loop after the current `Ready`. Pending and later proposals get `Unavailable`.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.proposal_slots.close();
        self.shared.message_slots.close();
        // The node may already be gone; then there is nobody to wake.
        if self.shared.inbox.send(Inbox::Wake).is_err() {
            tracing::debug!(node = self.shared.node_id, "raft node already stopped");
        }
    }
}

/// Starts a node whose peers (if any) are unreachable: use for a group of one.
pub fn start(config: RaftConfig) -> Result<(MetaHandle, std::thread::JoinHandle<()>), StartError> {
    start_with_transport(config, Box::new(NoPeers))
}

/// Opens the store (bootstrapping a new group if this node should), loads the state and starts
/// the node thread. Outgoing raft messages go to `transport`; incoming ones to
/// [`MetaHandle::step`].
pub fn start_with_transport(
    config: RaftConfig,
    transport: Box<dyn Transport>,
) -> Result<(MetaHandle, std::thread::JoinHandle<()>), StartError> {
    config.check().map_err(StartError::Config)?;
    check_table_names();
    let data_dir = config.data_dir.clone();
    let store_error = |cause| StartError::Store { data_dir: data_dir.clone(), cause };
    let mut store = RaftStore::open(&config.data_dir).map_err(store_error)?;
    if !store.is_initialized() && should_bootstrap(&config) {
        bootstrap(&mut store, &config).map_err(store_error)?;
    }
    let applied = load_state(&store, &config)?;
    let snapshot = store.latest_snapshot().map(|s| (s.index, s.term, s.data.clone()));
    let raw = new_raw_node(&config, store)?;
    let (inbox, receiver) = mpsc::channel();
    let shared = Arc::new(Shared::new(config.node_id, applied, inbox));
    *shared.snapshot.lock() = snapshot;
    let handle = MetaHandle { shared: shared.clone() };
    let node = Node::new(raw, shared, receiver, transport, config);
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", node.config.node_id))
        .spawn(move || run_or_abort(node))
        .map_err(StartError::Thread)?;
    Ok((handle, thread))
}

/// Runs the node; a panic in it (a broken invariant, or raft-rs meeting a storage error) aborts
/// the process instead of leaving a master that serves reads with a dead Raft thread.
fn run_or_abort(node: Node) {
    let node_id = node.config.node_id;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.run()));
    if result.is_err() {
        // The panic hook has already printed the message and location.
        fatal_msg(&format!("the raft thread of node {node_id} panicked"));
    }
}

impl Shared {
    fn new(node_id: u64, applied: Applied, inbox: mpsc::Sender<Inbox>) -> Shared {
        let status = RaftStatus {
            node_id,
            role: "follower".into(),
            leader_id: 0,
            term: 0,
            commit_index: 0,
            applied_index: applied.state.applied_index(),
        };
        Shared {
            node_id,
            applied: RwLock::new(applied),
            status: Mutex::new(status),
            is_leader: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            inbox,
            proposal_slots: Arc::new(Semaphore::new(PROPOSAL_SLOTS)),
            message_slots: Arc::new(Semaphore::new(MESSAGE_SLOTS)),
            next_ino: AtomicU64::new(0),
            next_chunk_id: AtomicU64::new(0),
            applied_events: broadcast::channel(APPLIED_CHANNEL_CAPACITY).0,
            snapshot: Mutex::new(None),
            stats: Counters::default(),
        }
    }
}

/// The storage layer names tables by column family; they must be exactly meta's tables.
fn check_table_names() {
    let names: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    assert_eq!(names, META_TABLE_CFS, "meta tables and storage column families differ");
}

fn table_of(cf: &str) -> Table {
    Table::from_name(cf).unwrap_or_else(|| panic!("column family {cf} is not a meta table"))
}

/// The lowest id of the initial voters bootstraps the group; the others start empty and are
/// sent the bootstrap snapshot by the first leader (raft-rs five_mem_node does the same).
///
/// So an empty data directory on the lowest-id node means "new group": never wipe that node's
/// directory while the group lives on. A lost disk is replaced by a membership change (a new
/// node id), as with any Raft member whose vote history is gone.
fn should_bootstrap(config: &RaftConfig) -> bool {
    config.peers.iter().all(|(id, _)| *id > config.node_id)
}

/// The first state of a new group: an empty filesystem at index 1, voters = all configured ids.
fn bootstrap(store: &mut RaftStore, config: &RaftConfig) -> Result<(), StoreError> {
    let now = Timestamp::now();
    let mut state = State::new(now);
    let first = Entry { now, client: None, op: Op::Noop };
    let outcome = state.apply(crate::storage::BOOTSTRAP_INDEX, &first);
    assert_eq!(outcome, Ok(Outcome::Unit), "bootstrap Noop");
    // The records are written from all_records; the change list would only repeat them.
    state.take_changes();
    let records: Vec<TableRecord> = state
        .all_records()
        .into_iter()
        .map(|(table, key, value)| (table.name(), key, value))
        .collect();
    let conf_state = ConfState { voters: config.voters(), ..ConfState::default() };
    tracing::info!(
        node = config.node_id,
        voters = ?conf_state.voters,
        data_dir = %config.data_dir.display(),
        "bootstrapping a new metadata group"
    );
    store.bootstrap(conf_state, records, state.to_snapshot())
}

/// Loads the state machine from the metadata tables and checks it against Raft's state.
fn load_state(store: &RaftStore, config: &RaftConfig) -> Result<Applied, StartError> {
    let data_dir = config.data_dir.clone();
    if !store.is_initialized() {
        // A new member waits for the leader's snapshot; it has no state of its own yet.
        tracing::info!(
            node = config.node_id,
            "empty store: waiting for a snapshot from the leader"
        );
        let mut state = State::new(Timestamp::now());
        state.take_changes();
        return Ok(Applied { state, term: 0 });
    }
    let records = store
        .load_table_records()
        .map_err(|cause| StartError::Store { data_dir: data_dir.clone(), cause })?;
    let records = records.into_iter().map(|(cf, key, value)| (table_of(cf), key, value));
    let state = State::load(records).map_err(|error| StartError::Load {
        data_dir: data_dir.clone(),
        reason: error.to_string(),
    })?;
    let (index, term) = store.applied();
    if state.applied_index() != index {
        let reason = format!(
            "the tables are at index {} but raft_state says {index}",
            state.applied_index()
        );
        return Err(StartError::Load { data_dir, reason });
    }
    tracing::info!(node = config.node_id, applied = index, term, "metadata loaded");
    Ok(Applied { state, term })
}

/// raft-rs settings, every one spelled out.
fn raft_config(config: &RaftConfig, applied: u64) -> raft::Config {
    raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        min_election_tick: 0,
        max_election_tick: 0,
        read_only_option: raft::ReadOnlyOption::Safe,
        skip_bcast_commit: false,
        batch_append: false,
        priority: 0,
        max_uncommitted_size: 64 << 20,
        max_committed_size_per_ready: 16 << 20,
    }
}

fn new_raw_node(config: &RaftConfig, store: RaftStore) -> Result<RawNode<RaftStore>, StartError> {
    let (applied, _) = store.applied();
    let hard_state = store.hard_state();
    assert!(
        applied <= hard_state.commit,
        "stored applied {applied} > commit {}",
        hard_state.commit
    );
    let raft_error = |cause| StartError::Raft {
        node_id: config.node_id,
        data_dir: config.data_dir.clone(),
        cause,
    };
    let settings = raft_config(config, applied);
    settings.validate().map_err(raft_error)?;
    let sole_voter = store.conf_state().voters == [config.node_id];
    let mut raw =
        RawNode::new(&settings, store, &raft_logger(config.node_id)).map_err(raft_error)?;
    if sole_voter {
        // Nobody else can win; skip the election timeout.
        raw.campaign().map_err(raft_error)?;
    }
    Ok(raw)
}

/// The thread that owns the RawNode.
struct Node {
    raw: RawNode<RaftStore>,
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Inbox>,
    transport: Box<dyn Transport>,
    config: RaftConfig,
    /// Proposals waiting for their entry to apply, by proposal id.
    pending: HashMap<u64, Pending>,
    next_proposal_id: u64,
    /// Peers sent a snapshot in the current Ready; reported after `advance`.
    snapshot_targets: Vec<u64>,
    /// The term of the last applied entry.
    applied_term: u64,
}

/// A proposal waiting for its entry. Ids restart at 1 with the process, so an entry proposed
/// before a restart can carry the same id; it cannot carry the same term, because this node
/// leads only in terms newer than any before the restart.
struct Pending {
    term: u64,
    reply: oneshot::Sender<Result<Outcome, Status>>,
}

/// A committed entry decoded for apply.
struct Decoded {
    index: u64,
    term: u64,
    entry: Entry,
    bytes: Arc<Vec<u8>>,
    proposal: Option<u64>,
    conf_state: Option<ConfState>,
}

impl Node {
    fn new(
        raw: RawNode<RaftStore>,
        shared: Arc<Shared>,
        inbox: mpsc::Receiver<Inbox>,
        transport: Box<dyn Transport>,
        config: RaftConfig,
    ) -> Node {
        Node {
            raw,
            shared,
            inbox,
            transport,
            config,
            pending: HashMap::new(),
            next_proposal_id: 1,
            snapshot_targets: Vec::new(),
            applied_term: 0,
        }
    }

    fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut last_tick = Instant::now();
        tracing::info!(node = self.config.node_id, "raft node running");
        while !self.shared.shutting_down.load(Ordering::Acquire) {
            let wait = tick.saturating_sub(last_tick.elapsed());
            match self.inbox.recv_timeout(wait) {
                Ok(item) => {
                    self.take(item);
                    self.drain_inbox();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= tick {
                self.raw.tick();
                last_tick = Instant::now();
            }
            self.on_ready();
            self.publish_status();
        }
        self.stop();
    }

    /// Group commit: everything already waiting goes into the next Ready. The inbox is bounded
    /// by its permits, so this loop is too.
    fn drain_inbox(&mut self) {
        while let Ok(item) = self.inbox.try_recv() {
            self.take(item);
        }
    }

    fn take(&mut self, item: Inbox) {
        match item {
            Inbox::Propose { data, reply, _permit } => self.propose(data, reply),
            Inbox::Peer { msg, _permit } => {
                let from = msg.from;
                if let Err(error) = self.raw.step(msg) {
                    tracing::debug!(node = self.config.node_id, from, %error, "raft message ignored");
                }
            }
            Inbox::Wake => {}
        }
    }

    fn propose(&mut self, data: Vec<u8>, reply: oneshot::Sender<Result<Outcome, Status>>) {
        if self.raw.raft.state != StateRole::Leader {
            // Not forwarded to the leader: the client retries there with the same seq.
            answer(reply, Err(Status::NotLeader));
            return;
        }
        let id = self.next_proposal_id;
        self.next_proposal_id += 1;
        let last_index = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(proposal_context(self.config.node_id, id), data);
        if let Err(error) = &proposed {
            tracing::warn!(node = self.config.node_id, %error, "raft dropped a proposal");
        }
        if proposed.is_err() || self.raw.raft.raft_log.last_index() == last_index {
            answer(reply, Err(Status::NotLeader));
            return;
        }
        self.shared.stats.proposals.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(id, Pending { term: self.raw.raft.term, reply });
    }

    /// One Ready, in the order raft-rs requires (style-anchors, "The Raft Ready loop").
    fn on_ready(&mut self) {
        if !self.raw.has_ready() {
            return;
        }
        let mut ready = self.raw.ready(); // 1. take one Ready
        self.send(ready.take_messages()); // 2. a leader replicates while it persists
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot()); // 3. snapshot before entries and hard state
        }
        self.apply_committed(ready.take_committed_entries()); // 4. committed = already durable
        self.persist(ready.entries(), ready.hs(), ready.must_sync()); // 5. one synced batch
        self.send(ready.take_persisted_messages()); // 6. only after the fsync
        let mut light = self.raw.advance(ready); // 7. advance, then the light ready
        self.send(light.take_messages());
        self.apply_committed(light.take_committed_entries());
        self.raw.advance_apply();
        self.report_snapshots(); // 8. snapshot reports, snapshot + compaction
        self.maybe_snapshot();
        self.fail_pending_if_not_leader();
        self.shared.stats.ready_batches.fetch_add(1, Ordering::Relaxed);
    }

    fn send(&mut self, messages: Vec<Message>) {
        for msg in messages {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_targets.push(msg.to);
            }
            self.transport.send(msg);
        }
    }

    fn report_snapshots(&mut self) {
        // The transport only queues; raft probes the follower next and resends if it got lost.
        for to in std::mem::take(&mut self.snapshot_targets) {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
    }

    /// Step 5: entries (dropping a conflicting tail) and hard state in one batch.
    fn persist(
        &mut self,
        entries: &[raft::eraftpb::Entry],
        hard_state: Option<&raft::eraftpb::HardState>,
        must_sync: bool,
    ) {
        if entries.is_empty() && hard_state.is_none() {
            return;
        }
        let result = self.raw.mut_store().append(entries, hard_state, must_sync);
        result.unwrap_or_else(|error| fatal(&error));
        if must_sync {
            self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Steps 4 and 7: apply committed entries to the state, write what changed together with
    /// the applied index in one batch, then tell subscribers and proposers.
    fn apply_committed(&mut self, entries: Vec<raft::eraftpb::Entry>) {
        let Some(last) = entries.last() else {
            return;
        };
        let (last_index, last_term) = (last.index, last.term);
        let decoded: Vec<Decoded> = entries.into_iter().map(|entry| self.decode(entry)).collect();
        let mut batch = ApplyBatch {
            applied_index: last_index,
            applied_term: last_term,
            ..ApplyBatch::default()
        };
        let mut results = Vec::new();
        {
            let mut applied = self.shared.applied.write();
            for item in &decoded {
                // Also catches a gap after restart: the first entry must be applied + 1.
                assert_eq!(
                    item.index,
                    applied.state.applied_index() + 1,
                    "committed entry out of order"
                );
                let result = applied.state.apply(item.index, &item.entry);
                if let Some(id) = item.proposal {
                    results.push((id, item.term, result));
                }
            }
            applied.term = last_term;
            self.applied_term = last_term;
            let changes = applied.state.take_changes();
            batch.changes = changes.into_iter().map(|c| (c.table.name(), c.key, c.value)).collect();
        }
        batch.conf_state = decoded.iter().rev().find_map(|item| item.conf_state.clone());
        self.raw.mut_store().write_apply(batch).unwrap_or_else(|error| fatal(&error));
        self.shared.stats.entries_applied.fetch_add(decoded.len() as u64, Ordering::Relaxed);
        self.publish_applied(decoded);
        for (id, term, result) in results {
            if self.pending.get(&id).is_some_and(|pending| pending.term == term) {
                let pending = self.pending.remove(&id).expect("checked above");
                answer(pending.reply, result);
            }
        }
    }

    /// Turns a raft entry into the meta entry to apply. Raft's own empty entries and conf
    /// changes apply as `Op::Noop` so that every index passes through `State::apply`.
    fn decode(&mut self, entry: raft::eraftpb::Entry) -> Decoded {
        let (index, term) = (entry.index, entry.term);
        let proposal = own_proposal(&entry.context, self.config.node_id);
        let kind = entry.get_entry_type();
        if kind == EntryType::EntryNormal && !entry.data.is_empty() {
            let meta_entry = postcard::from_bytes::<Entry>(&entry.data).unwrap_or_else(|error| {
                fatal_msg(&format!(
                    "committed entry {index} (term {term}) does not decode as a metadata entry: \
                     {error}; it was probably written by a newer mfsha: upgrade this master"
                ))
            });
            let bytes = Arc::new(Vec::from(entry.data));
            return Decoded { index, term, entry: meta_entry, bytes, proposal, conf_state: None };
        }
        let conf_state = match kind {
            EntryType::EntryNormal => None,
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                Some(self.apply_conf_change(&entry))
            }
        };
        let meta_entry = noop_entry();
        let bytes = Arc::new(postcard::to_allocvec(&meta_entry).expect("encoding a Noop entry"));
        Decoded { index, term, entry: meta_entry, bytes, proposal, conf_state }
    }

    fn apply_conf_change(&mut self, entry: &raft::eraftpb::Entry) -> ConfState {
        let index = entry.index;
        let result = if entry.get_entry_type() == EntryType::EntryConfChange {
            let change = ConfChange::parse_from_bytes(&entry.data)
                .unwrap_or_else(|error| fatal_msg(&format!("conf change {index}: {error}")));
            self.raw.apply_conf_change(&change)
        } else {
            let change = ConfChangeV2::parse_from_bytes(&entry.data)
                .unwrap_or_else(|error| fatal_msg(&format!("conf change {index}: {error}")));
            self.raw.apply_conf_change(&change)
        };
        let conf_state =
            result.unwrap_or_else(|error| fatal_msg(&format!("conf change {index}: {error}")));
        tracing::info!(node = self.config.node_id, index, voters = ?conf_state.voters, "membership changed");
        conf_state
    }

    fn publish_applied(&self, decoded: Vec<Decoded>) {
        if self.shared.applied_events.receiver_count() == 0 {
            return;
        }
        for item in decoded {
            // Err only means every receiver has gone since the check.
            if self.shared.applied_events.send((item.index, item.term, item.bytes)).is_err() {
                return;
            }
        }
    }

    /// Step 3 on a follower: the leader's snapshot replaces the state and the tables.
    fn install_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) {
        let metadata = snapshot.get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        let state = State::from_snapshot(&snapshot.data).unwrap_or_else(|error| {
            fatal_msg(&format!("the leader's snapshot at index {index} does not load: {error}"))
        });
        assert_eq!(state.applied_index(), index, "snapshot data and metadata disagree");
        let records: Vec<TableRecord> = state
            .all_records()
            .into_iter()
            .map(|(table, key, value)| (table.name(), key, value))
            .collect();
        let result = self.raw.mut_store().install_snapshot(snapshot, records);
        result.unwrap_or_else(|error| fatal(&error));
        let mut state = state;
        state.take_changes();
        *self.shared.applied.write() = Applied { state, term };
        self.applied_term = term;
        let stored = self.raw.store().latest_snapshot().expect("snapshot just installed");
        *self.shared.snapshot.lock() = Some((index, term, stored.data.clone()));
        self.shared.stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = self.config.node_id, index, term, "installed the leader's snapshot");
    }

    /// Step 8: snapshot the applied state and compact the log when enough has been applied
    /// since the last snapshot, or when raft asked for a newer snapshot than we have.
    fn maybe_snapshot(&mut self) {
        let store = self.raw.store();
        let (applied, _) = store.applied();
        let last = store.latest_snapshot().map_or(0, |snapshot| snapshot.index);
        let wanted = store.take_snapshot_wanted();
        if applied <= last || (applied - last < self.config.snapshot_every_entries && !wanted) {
            return;
        }
        let data = {
            let guard = self.shared.applied.read();
            assert_eq!(guard.state.applied_index(), applied, "stored and in-memory applied differ");
            guard.state.to_snapshot()
        };
        let keep = self.config.log_tail_entries;
        let result = self.raw.mut_store().save_snapshot_and_compact(data, keep);
        result.unwrap_or_else(|error| fatal(&error));
        let store = self.raw.store();
        let snapshot = store.latest_snapshot().expect("snapshot just saved");
        *self.shared.snapshot.lock() = Some((snapshot.index, snapshot.term, snapshot.data.clone()));
        self.shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = self.config.node_id,
            index = snapshot.index,
            first_index = store.first_index().unwrap_or(0),
            "snapshot taken and log compacted"
        );
    }

    fn fail_pending_if_not_leader(&mut self) {
        if self.raw.raft.state != StateRole::Leader && !self.pending.is_empty() {
            tracing::info!(
                node = self.config.node_id,
                pending = self.pending.len(),
                "leadership lost: failing pending proposals with NotLeader"
            );
            self.fail_pending(Status::NotLeader);
        }
    }

    fn fail_pending(&mut self, status: Status) {
        for (_, pending) in self.pending.drain() {
            answer(pending.reply, Err(status));
        }
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let leading = raft.state == StateRole::Leader && self.applied_term == raft.term;
        if self.shared.is_leader.swap(leading, Ordering::AcqRel) != leading {
            tracing::info!(node = self.config.node_id, leading, term = raft.term, "leadership");
        }
        let role = match raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        };
        let mut status = self.shared.status.lock();
        status.role = role.to_string();
        status.leader_id = raft.leader_id;
        status.term = raft.term;
        status.commit_index = raft.raft_log.committed;
        status.applied_index = raft.raft_log.applied;
    }

    fn stop(mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.is_leader.store(false, Ordering::Release);
        self.fail_pending(Status::Unavailable);
        while let Ok(item) = self.inbox.try_recv() {
            if let Inbox::Propose { reply, .. } = item {
                answer(reply, Err(Status::Unavailable));
            }
        }
        tracing::info!(node = self.config.node_id, "raft node stopped");
    }
}

fn noop_entry() -> Entry {
    // A fixed time: every replica must apply exactly the same entry.
    Entry { now: Timestamp::new(0, 0), client: None, op: Op::Noop }
}

/// Entry context of a proposal: the proposing node and its proposal id, so that an entry from
/// another leader never resolves one of ours.
fn proposal_context(node_id: u64, id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node_id.to_le_bytes());
    context.extend_from_slice(&id.to_le_bytes());
    context
}

fn own_proposal(context: &[u8], node_id: u64) -> Option<u64> {
    if context.len() != 16 || context[..8] != node_id.to_le_bytes() {
        return None;
    }
    Some(u64::from_le_bytes(context[8..].try_into().ok()?))
}

fn answer(reply: oneshot::Sender<Result<Outcome, Status>>, result: Result<Outcome, Status>) {
    // Err means the proposer stopped waiting (its task was cancelled): nothing to tell.
    if reply.send(result).is_err() {
        tracing::debug!("a proposer went away before its answer");
    }
}

/// A storage error leaves raft inoperable: say where, then crash; a restart recovers from the
/// synced log.
fn fatal(error: &StoreError) -> ! {
    fatal_msg(&error.to_string())
}

fn fatal_msg(message: &str) -> ! {
    tracing::error!("FATAL: {message}; aborting the master, restart it to recover");
    eprintln!("mfsha master FATAL: {message}; aborting, restart to recover");
    std::process::abort()
}
