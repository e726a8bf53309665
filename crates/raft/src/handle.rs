//! [`Handle`]: how everyone outside the node thread talks to it — proposals, reads of the
//! applied state, status, peer messages in — and the state they share with the node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::Message;
use raft::StateRole;
use tokio::sync::{broadcast, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::membership::MemberChange;
use crate::node::Reply;
use crate::state_machine::StateMachine;
use crate::Status;

/// How many proposals may wait in the inbox; more wait in `propose` for a slot.
const PROPOSAL_SLOTS: usize = 4096;
/// How many peer messages may wait in the inbox; more are dropped (raft resends).
const MESSAGE_SLOTS: usize = 4096;
/// Applied entries kept for slow `subscribe_applied` receivers before they see `Lagged`.
const APPLIED_CHANNEL_CAPACITY: usize = 16 * 1024;
/// Largest encoded raft message accepted by [`Handle::step_bytes`] (snapshots included).
pub const MAX_PEER_MESSAGE_BYTES: usize = 1 << 30;

/// A node's part in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    PreCandidate,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Role {
        match role {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Handle::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub role: Role,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

/// Leadership as seen by [`Handle::leadership`]: changes whenever the role, term or leader
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    pub term: u64,
    pub leader_id: u64,
}

/// One member's replication as the leader tracks it (raft-rs's progress), for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    /// The highest log index known to be on that member (the leader's own: its last index).
    pub matched: u64,
    /// A voter; false for a learner.
    pub voter: bool,
    /// How long ago this leader last heard from it, in ms; `None` if not since it became
    /// leader. Good to one election timeout: raft-rs marks a member active when anything
    /// arrives from it and clears the mark once per election timeout.
    pub last_contact_ms: Option<u64>,
}

/// What the node thread samples of one member's progress after each Ready (leader only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProgressSample {
    pub(crate) id: u64,
    pub(crate) matched: u64,
    pub(crate) voter: bool,
    pub(crate) active: bool,
}

/// The progress samples of `raft` if it leads; empty (no allocation) otherwise.
pub(crate) fn leader_progress<T: raft::Storage>(raft: &raft::Raft<T>) -> Vec<ProgressSample> {
    if raft.state != StateRole::Leader {
        return Vec::new();
    }
    let voters = raft.prs().conf().voters().ids();
    let sample = |(id, pr): (&u64, &raft::Progress)| ProgressSample {
        id: *id,
        matched: pr.matched,
        voter: voters.contains(*id),
        active: pr.recent_active,
    };
    let mut samples: Vec<ProgressSample> = raft.prs().iter().map(sample).collect();
    samples.sort_unstable_by_key(|s| s.id);
    samples
}

/// A member as [`Shared`] remembers it between samples.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    id: u64,
    matched: u64,
    voter: bool,
    /// Node-clock ms when it was last seen active during this leadership.
    seen_ms: Option<u64>,
}

/// Counters of the node's work, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// `Ready`s handled.
    pub ready_batches: u64,
    /// Entries applied to the state machine.
    pub entries_applied: u64,
    /// Synced writes of the Raft log.
    pub syncs: u64,
    /// Proposals handed to raft.
    pub proposals: u64,
    /// Snapshots taken (not counting received ones).
    pub snapshots: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Times the leader this node knows of changed to another node (0 → a leader counts).
    pub leader_changes: u64,
    /// Raft clock ticks: advances every `tick_ms` while the node's loop runs, busy or idle,
    /// so a watcher (the systemd watchdog) can tell a live loop from a stalled one.
    pub ticks: u64,
    /// Times this node's lease ran out while it led and was then renewed in the same term
    /// (its thread or its quorum was slow for longer than the lease's margin).
    pub lease_lapses: u64,
}

/// An applied entry as subscribers see it: (index, term, the command `apply` saw; Raft's own
/// entries appear as [`StateMachine::empty_command`]).
pub type AppliedEvent = (u64, u64, Arc<Vec<u8>>);
/// A snapshot as [`Handle::snapshot`] gives it: (index, term, blob). The blob is the stored
/// one, shared.
pub type SnapshotBlob = (u64, u64, bytes::Bytes);

/// The applied state and the term of its last entry.
pub(crate) struct Applied<S> {
    pub(crate) state: S,
    pub(crate) term: u64,
}

/// One item of the node's inbox. The permits bound the inbox; they go when the node takes
/// the item.
pub(crate) enum Inbox<O> {
    Propose {
        data: Vec<u8>,
        reply: Reply<O>,
        _permit: OwnedSemaphorePermit,
    },
    Peer {
        msg: Message,
        _permit: OwnedSemaphorePermit,
    },
    SnapshotReport {
        to: u64,
        delivered: bool,
    },
    TransferLeader {
        to: u64,
    },
    ChangeMembers {
        change: MemberChange,
        command: Vec<u8>,
        reply: Reply<O>,
        _permit: OwnedSemaphorePermit,
    },
    /// [`Handle::snapshot`]: a snapshot at `index` or later is wanted.
    Snapshot {
        index: u64,
        reply: oneshot::Sender<SnapshotBlob>,
    },
    /// A member opened a new connection to this node's peer port (see
    /// [`Handle::peer_connected`]).
    PeerConnected {
        from: u64,
    },
    /// Member `from` said its membership at `applied_index` does not name this node
    /// ([`Handle::heard_not_member`]).
    NotMember {
        from: u64,
        applied_index: u64,
    },
    /// Wakes the loop so it sees the shutdown flag.
    Wake,
}

pub(crate) struct Counters {
    pub(crate) ready_batches: AtomicU64,
    pub(crate) entries_applied: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) proposals: AtomicU64,
    pub(crate) snapshots: AtomicU64,
    pub(crate) snapshots_installed: AtomicU64,
    pub(crate) leader_changes: AtomicU64,
    pub(crate) ticks: AtomicU64,
    pub(crate) lease_lapses: AtomicU64,
    /// [`Handle::propose`] until committed, applied and durable (successful ones only).
    pub(crate) commit_seconds: prometheus::Histogram,
    /// Synced writes of the Raft log (timed by the RocksDB store; the node reads no clock).
    pub(crate) sync_seconds: prometheus::Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ready_batches: AtomicU64::new(0),
            entries_applied: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            proposals: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            lease_lapses: AtomicU64::new(0),
            commit_seconds: crate::metrics::histogram(
                "mfsha_raft_proposal_commit_seconds",
                "Time from a proposal to its entry being committed, applied and durable.",
            ),
            sync_seconds: crate::metrics::histogram(
                "mfsha_raft_log_sync_seconds",
                "Time of one synced (fsync) write of the Raft log.",
            ),
        }
    }
}

/// What the node publishes after every Ready.
pub(crate) struct Published {
    pub(crate) role: Role,
    pub(crate) leader_id: u64,
    pub(crate) term: u64,
    pub(crate) commit_index: u64,
    pub(crate) applied_index: u64,
    /// Node-clock ms until which this node serves; 0 when it does not.
    pub(crate) serving_until_ms: u64,
    /// Every member's progress while this node leads ([`leader_progress`]).
    pub(crate) progress: Vec<ProgressSample>,
}

/// State shared between the node thread and the handles.
pub(crate) struct Shared<S: StateMachine> {
    pub(crate) node_id: u64,
    pub(crate) applied: RwLock<Applied<S>>,
    status: Mutex<RaftStatus>,
    /// The members' progress while leading, with the term it was sampled in.
    progress: Mutex<(u64, Vec<Tracked>)>,
    /// The node's clock starts here; the lease is checked against it by every reader, so a
    /// stalled node thread cannot keep a node serving.
    pub(crate) epoch: Instant,
    election_timeout: std::time::Duration,
    serving_until_ms: AtomicU64,
    leadership: watch::Sender<Leadership>,
    pub(crate) shutting_down: AtomicBool,
    /// Set when this node applied its own removal from the group: it stops for good.
    removed: AtomicBool,
    inbox: mpsc::Sender<Inbox<S::Output>>,
    proposal_slots: Arc<Semaphore>,
    message_slots: Arc<Semaphore>,
    pub(crate) applied_events: broadcast::Sender<AppliedEvent>,
    pub(crate) snapshot: Mutex<Option<SnapshotBlob>>,
    pub(crate) stats: Counters,
    /// (term, from): the last campaign started because `from` handed leadership over.
    handover: Mutex<(u64, u64)>,
    /// The members (voters and learners) as of the applied index, for
    /// [`Handle::removal_notice_for`]; empty until this node holds a membership.
    members: Mutex<AppliedMembers>,
}

/// The membership a node has applied, and the index it has applied up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AppliedMembers {
    pub(crate) applied_index: u64,
    pub(crate) members: Vec<u64>,
}

impl<S: StateMachine> Shared<S> {
    pub(crate) fn new(
        config: &crate::RaftConfig,
        applied: Applied<S>,
        inbox: mpsc::Sender<Inbox<S::Output>>,
    ) -> Shared<S> {
        let node_id = config.node_id;
        let status = RaftStatus {
            node_id,
            role: Role::Follower,
            leader_id: 0,
            term: 0,
            commit_index: 0,
            applied_index: applied.state.applied_index(),
        };
        let leadership = Leadership { role: Role::Follower, term: 0, leader_id: 0 };
        Shared {
            node_id,
            applied: RwLock::new(applied),
            status: Mutex::new(status),
            progress: Mutex::new((0, Vec::new())),
            epoch: Instant::now(),
            election_timeout: std::time::Duration::from_millis(config.election_timeout_ms()),
            serving_until_ms: AtomicU64::new(0),
            leadership: watch::channel(leadership).0,
            shutting_down: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            inbox,
            proposal_slots: Arc::new(Semaphore::new(PROPOSAL_SLOTS)),
            message_slots: Arc::new(Semaphore::new(MESSAGE_SLOTS)),
            applied_events: broadcast::channel(APPLIED_CHANNEL_CAPACITY).0,
            snapshot: Mutex::new(None),
            stats: Counters::default(),
            handover: Mutex::new((0, 0)),
            members: Mutex::new(AppliedMembers::default()),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn removed_flag(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// This node is no longer a member: the loop stops after the current Ready.
    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
        self.serving_until_ms.store(0, Ordering::Release);
        self.shutting_down.store(true, Ordering::Release);
        self.proposal_slots.close();
        self.message_slots.close();
    }

    pub(crate) fn publish_members(&self, applied: AppliedMembers) {
        *self.members.lock() = applied;
    }

    pub(crate) fn record_handover(&self, term: u64, from: u64) {
        *self.handover.lock() = (term, from);
    }

    pub(crate) fn publish(&self, published: Published) {
        // A removed node never serves again, whatever its last Ready computed.
        let serving_until_ms = match self.removed_flag() {
            true => 0,
            false => published.serving_until_ms,
        };
        self.serving_until_ms.store(serving_until_ms, Ordering::Release);
        let leadership = Leadership {
            role: published.role,
            term: published.term,
            leader_id: published.leader_id,
        };
        self.leadership.send_if_modified(|current| {
            let changed = *current != leadership;
            if changed && leadership.leader_id != 0 && leadership.leader_id != current.leader_id {
                self.stats.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            if changed {
                tracing::info!(node = self.node_id, role = %leadership.role,
                    term = leadership.term, leader = leadership.leader_id, "leadership changed");
                *current = leadership;
            }
            changed
        });
        self.track_progress(published.term, &published.progress);
        let mut status = self.status.lock();
        status.role = published.role;
        status.leader_id = published.leader_id;
        status.term = published.term;
        status.commit_index = published.commit_index;
        status.applied_index = published.applied_index;
    }

    /// Keeps the latest samples, remembering when each member was last seen active in this
    /// term's leadership (a new term, or not leading, forgets).
    fn track_progress(&self, term: u64, samples: &[ProgressSample]) {
        let now = self.now_ms();
        let mut guard = self.progress.lock();
        let (tracked_term, tracked) = &mut *guard;
        if samples.is_empty() || *tracked_term != term {
            tracked.clear();
            *tracked_term = term;
        }
        for sample in samples {
            let seen = sample.active.then_some(now);
            match tracked.iter_mut().find(|t| t.id == sample.id) {
                Some(t) => {
                    t.matched = sample.matched;
                    t.voter = sample.voter;
                    t.seen_ms = seen.or(t.seen_ms);
                }
                None => tracked.push(Tracked {
                    id: sample.id,
                    matched: sample.matched,
                    voter: sample.voter,
                    seen_ms: seen,
                }),
            }
        }
        tracked.retain(|t| samples.iter().any(|s| s.id == t.id));
    }

    fn send(&self, item: Inbox<S::Output>) -> Result<(), Status> {
        self.inbox.send(item).map_err(|_| Status::Unavailable)
    }
}

/// The way into a node for everyone else. Cheap to clone.
pub struct Handle<S: StateMachine> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S: StateMachine> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle { shared: self.shared.clone() }
    }
}

impl<S: StateMachine> Handle<S> {
    /// Proposes a command. Resolves only after it is committed, applied and durable, with
    /// what applying it produced. `Err(NotLeader)` at once on a node that does not lead, and
    /// for every pending proposal when leadership is lost; `Err(Unavailable)` while stopping.
    pub async fn propose(&self, data: Vec<u8>) -> Result<S::Output, Status> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(Status::Unavailable);
        }
        if !self.is_leader() {
            return Err(Status::NotLeader);
        }
        let started = Instant::now();
        let slots = self.shared.proposal_slots.clone();
        let permit = slots.acquire_owned().await.map_err(|_| Status::Unavailable)?;
        let (reply, result) = oneshot::channel();
        self.shared.send(Inbox::Propose { data, reply, _permit: permit })?;
        // A dropped sender means the node stopped before answering.
        let outcome = result.await.unwrap_or(Err(Status::Unavailable));
        if outcome.is_ok() {
            self.shared.stats.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    /// Proposes one membership change (see [`MemberChange`]) carrying `command` for the state
    /// machine (applied at the change's index). Resolves once applied. `Busy` while the
    /// previous change is not applied, `NotLeader` on a follower, `Invalid` for a change
    /// raft-rs refuses.
    pub async fn change_members(
        &self,
        change: MemberChange,
        command: Vec<u8>,
    ) -> Result<S::Output, Status> {
        if !self.is_leader() {
            return Err(Status::NotLeader);
        }
        let slots = self.shared.proposal_slots.clone();
        let permit = slots.acquire_owned().await.map_err(|_| Status::Unavailable)?;
        let (reply, result) = oneshot::channel();
        self.shared.send(Inbox::ChangeMembers { change, command, reply, _permit: permit })?;
        result.await.unwrap_or(Err(Status::Unavailable))
    }

    /// True once this node applied its own removal from the group; its loop has stopped.
    pub fn removed(&self) -> bool {
        self.shared.removed.load(Ordering::Acquire)
    }

    /// Runs `f` on the applied state under a read lock. Never waits for an fsync: the node
    /// takes the write lock only while it applies a batch in memory.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.applied.read().state)
    }

    pub fn status(&self) -> RaftStatus {
        self.shared.status.lock().clone()
    }

    /// Every member's replication as this node tracks it while it leads (itself included),
    /// by id; empty on a node that does not lead.
    pub fn progress(&self) -> Vec<PeerProgress> {
        let now = self.shared.now_ms();
        let guard = self.shared.progress.lock();
        let to_progress = |t: &Tracked| PeerProgress {
            id: t.id,
            matched: t.matched,
            voter: t.voter,
            last_contact_ms: t.seen_ms.map(|seen| now.saturating_sub(seen)),
        };
        guard.1.iter().map(to_progress).collect()
    }

    /// Role, term and leader, as a channel that changes when they do.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.shared.leadership.subscribe()
    }

    /// True while this node leads, has applied an entry of its own term (hence every earlier
    /// commit: Raft thesis 6.4) and holds its lease. Checked against the clock here, so it
    /// turns false by itself when the node thread stalls or the quorum goes quiet.
    pub fn is_leader(&self) -> bool {
        self.shared.now_ms() < self.shared.serving_until_ms.load(Ordering::Acquire)
    }

    /// This node's election timeout (from its configuration).
    pub fn election_timeout(&self) -> std::time::Duration {
        self.shared.election_timeout
    }

    /// The member that handed leadership to this node for `term` (its campaign in `term`
    /// began with that member's `MsgTimeoutNow`), if it did; `None` for an ordinary election.
    pub fn handed_over_by(&self, term: u64) -> Option<u64> {
        let (handover_term, from) = *self.shared.handover.lock();
        (handover_term == term && term != 0).then_some(from)
    }

    /// How long this node still serves (as [`Handle::is_leader`]) if no further lease round is
    /// confirmed; `None` when it does not serve now.
    pub fn lease_remaining(&self) -> Option<std::time::Duration> {
        let until = self.shared.serving_until_ms.load(Ordering::Acquire);
        let now = self.shared.now_ms();
        (now < until).then(|| std::time::Duration::from_millis(until - now))
    }

    /// Every entry applied from now on.
    pub fn subscribe_applied(&self) -> broadcast::Receiver<AppliedEvent> {
        self.shared.applied_events.subscribe()
    }

    /// A snapshot of the applied state as (index, term, blob), at or after the index applied
    /// when this was called: the latest stored one if it is current, otherwise one the node
    /// builds for it off its Raft thread (seconds for a big namespace, during which the node
    /// goes on applying). A subscriber that subscribed before calling this misses nothing.
    pub async fn snapshot(&self) -> Result<SnapshotBlob, Status> {
        let index = self.shared.applied.read().state.applied_index();
        if index == 0 {
            return Err(Status::Unavailable); // a member that has not received its first snapshot
        }
        if let Some(snapshot) = self.shared.snapshot.lock().as_ref().filter(|s| s.0 >= index) {
            return Ok(snapshot.clone());
        }
        let (reply, answer) = oneshot::channel();
        self.shared.send(Inbox::Snapshot { index, reply })?;
        // Err: the node stopped before the snapshot was built.
        answer.await.map_err(|_| Status::Unavailable)
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
            leader_changes: stats.leader_changes.load(Ordering::Relaxed),
            ticks: stats.ticks.load(Ordering::Relaxed),
            lease_lapses: stats.lease_lapses.load(Ordering::Relaxed),
        }
    }

    /// The histograms of the node's latencies (shared: observations go on after the call):
    /// proposal commit time and synced log write time, for a metrics registry.
    pub fn latency_histograms(&self) -> [prometheus::Histogram; 2] {
        let stats = &self.shared.stats;
        [stats.commit_seconds.clone(), stats.sync_seconds.clone()]
    }

    /// Hands a raft message from a peer to the node. `Err(Unavailable)` if the inbox is full
    /// or the node stopped; the message is dropped and raft will resend.
    pub fn step(&self, msg: Message) -> Result<(), Status> {
        let slots = self.shared.message_slots.clone();
        let permit = slots.try_acquire_owned().map_err(|_| Status::Unavailable)?;
        self.shared.send(Inbox::Peer { msg, _permit: permit })
    }

    /// [`Handle::step`] for a protobuf-encoded message from the network. `Err(Invalid)` if it
    /// is too large or does not decode.
    pub fn step_bytes(&self, bytes: &[u8]) -> Result<(), Status> {
        if bytes.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(Status::Invalid);
        }
        let msg = Message::parse_from_bytes(bytes).map_err(|_| Status::Invalid)?;
        self.step(msg)
    }

    /// A whole `MsgSnapshot` as received: parsed without copying its blob (the message's
    /// `data` shares `bytes`), which may be hundreds of MiB.
    pub fn step_snapshot_bytes(&self, bytes: Vec<u8>) -> Result<(), Status> {
        if bytes.len() > MAX_PEER_MESSAGE_BYTES {
            return Err(Status::Invalid);
        }
        let bytes = bytes::Bytes::from(bytes);
        let msg = Message::parse_from_carllerche_bytes(&bytes).map_err(|_| Status::Invalid)?;
        self.step(msg)
    }

    /// Tells the node what became of a snapshot it sent to `to`.
    pub fn report_snapshot(&self, to: u64, delivered: bool) {
        if self.shared.send(Inbox::SnapshotReport { to, delivered }).is_err() {
            tracing::debug!(to, "snapshot report after the node stopped");
        }
    }

    /// Asks this node (if it leads) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) -> Result<(), Status> {
        self.shared.send(Inbox::TransferLeader { to })
    }

    /// For a node `from` of this cluster that called: `Some(applied index)` if this node is
    /// the serving leader and its membership as of that index does not name it. A node that
    /// was down while it was removed learns so this way ([`Handle::heard_not_member`] on its
    /// side), since nobody replicates to a non-member. Only a serving leader tells: it has
    /// applied every committed entry, so its membership is the group's; a follower may be
    /// behind a re-addition of the caller (the simulator found this).
    pub fn removal_notice_for(&self, from: u64) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        let applied = self.shared.members.lock();
        let known = !applied.members.is_empty();
        (known && !applied.members.contains(&from)).then_some(applied.applied_index)
    }

    /// Member `from`, whose membership at `applied_index` does not name this node, told it
    /// so (see [`Handle::removal_notice_for`]).
    pub fn heard_not_member(&self, from: u64, applied_index: u64) {
        if self.shared.send(Inbox::NotMember { from, applied_index }).is_err() {
            tracing::debug!(node = self.shared.node_id, from, "raft node stopped");
        }
    }

    /// Member `from` connected anew (it restarted, perhaps with a wiped store): a leader
    /// then appends an empty entry (see `Node::peer_connected`).
    pub fn peer_connected(&self, from: u64) {
        if self.shared.send(Inbox::PeerConnected { from }).is_err() {
            tracing::debug!(node = self.shared.node_id, from, "raft node stopped");
        }
    }

    /// Stops the loop after the current `Ready`. Pending and later proposals get
    /// `Unavailable`.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.proposal_slots.close();
        self.shared.message_slots.close();
        // The node may already be gone; then there is nobody to wake.
        if self.shared.send(Inbox::Wake).is_err() {
            tracing::debug!(node = self.shared.node_id, "raft node already stopped");
        }
    }
}
