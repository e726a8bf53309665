//! [`Node`]: one member of the group, steppable by hand. It owns the raft-rs `RawNode` and its
//! store; whoever drives it (the [`driver`](crate::driver) thread on the real clock, or the
//! simulator on a virtual one) calls [`Node::tick`], [`Node::step`], [`Node::propose`] and then
//! [`Node::on_ready`], passing the time in. Apply, snapshots and the lease are in `apply.rs`,
//! `snapshot.rs` and `lease.rs`; this file is the Ready loop and what feeds it.
//!
//! Durability of an acknowledged proposal: its log entry is in a synced write (step 5 of an
//! earlier Ready) before raft-rs hands it back as committed, and what it changed is written by
//! the apply batch before the proposer hears back. The apply batch itself bypasses RocksDB's
//! write-ahead log (so a commit costs one log write, not two): if a crash loses it, the stored
//! applied index goes with it (same batch) and the entries are applied again from the synced
//! log on restart. A snapshot build flushes the store before the log behind it is compacted,
//! so the log always holds what a restart must apply again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use crate::config::RaftConfig;
use crate::handle::{Role, Shared};
use crate::lease::Lease;
use crate::state_machine::StateMachine;
use crate::store::LogStore;
use crate::transport::Transport;
use crate::Status;

/// Where a proposer hears back.
pub type Reply<O> = oneshot::Sender<Result<O, Status>>;

/// A proposal raft-rs dropped while this node led (uncommitted-size cap, leadership transfer):
/// retried on every tick until `deadline_ms`, instead of failing a client that did nothing
/// wrong.
struct Deferred<O> {
    data: Vec<u8>,
    reply: Reply<O>,
    deadline_ms: u64,
}

/// A proposal waiting for its entry to be applied.
struct Pending<O> {
    term: u64,
    reply: Reply<O>,
}

/// One member of the group. See the module documentation.
pub struct Node<S: StateMachine, L: LogStore> {
    pub(crate) raw: RawNode<L>,
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) config: RaftConfig,
    transport: Box<dyn Transport>,
    pending: HashMap<u64, Pending<S::Output>>,
    deferred: VecDeque<Deferred<S::Output>>,
    next_proposal_id: u64,
    /// Term of the last applied entry: a leader serves once it has applied one of its own.
    pub(crate) applied_term: u64,
    pub(crate) lease: Lease,
    /// This node's clock, in ms, as last passed in.
    pub(crate) now_ms: u64,
    /// Until then this node grants no votes (see [`Node::start_clock`]).
    votes_from_ms: u64,
    /// When the last lease round started.
    lease_round_ms: u64,
    /// A snapshot being built off this thread, at this applied index (see `snapshot.rs`).
    pub(crate) snapshot_job: Option<(u64, crate::store::SnapshotJob)>,
    /// [`crate::Handle::snapshot`] callers waiting for a snapshot at an index or later.
    pub(crate) snapshot_waiters: Vec<(u64, oneshot::Sender<crate::SnapshotBlob>)>,
}

impl<S: StateMachine, L: LogStore> Node<S, L> {
    pub(crate) fn new(
        raw: RawNode<L>,
        shared: Arc<Shared<S>>,
        transport: Box<dyn Transport>,
        config: RaftConfig,
    ) -> Node<S, L> {
        let applied_term = raw.store().applied().1;
        let lease = Lease::new(config.lease_ms());
        Node {
            raw,
            shared,
            config,
            transport,
            pending: HashMap::new(),
            deferred: VecDeque::new(),
            // Ids are never reused within a process; the context also names the node, so an
            // entry proposed by another leader never resolves one of ours.
            next_proposal_id: 1,
            applied_term,
            lease,
            now_ms: 0,
            votes_from_ms: 0,
            lease_round_ms: 0,
            snapshot_job: None,
            snapshot_waiters: Vec::new(),
        }
    }

    /// Sets the clock at start. For one election timeout from now this node grants no votes
    /// (except to a leadership transfer): before it crashed it may have acknowledged a
    /// leader's lease round, and a restarted raft-rs node, knowing no leader, would vote at
    /// once and let a second leader in while the first one's lease still runs.
    pub fn start_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.votes_from_ms = now_ms + self.election_timeout_ms();
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// One Raft clock tick at local time `now_ms`: elections and heartbeats, a lease round,
    /// and another try for dropped proposals.
    pub fn tick(&mut self, now_ms: u64) {
        debug_assert!(now_ms >= self.now_ms, "the clock went backwards");
        self.now_ms = now_ms;
        self.shared.stats.ticks.fetch_add(1, Ordering::Relaxed);
        self.raw.tick();
        if self.raw.raft.state == StateRole::Leader && self.raw.raft.lead_transferee.is_none() {
            self.start_lease_round();
            if self.config.witness {
                self.hand_over_leadership();
            }
        }
        self.retry_deferred();
    }

    fn start_lease_round(&mut self) {
        self.lease.start_round(&mut self.raw, self.now_ms);
        self.lease_round_ms = self.now_ms;
    }

    /// A new leader that has just applied its first entry asks for its lease at once instead of
    /// at the next tick: clients wait for it.
    fn hurry_lease(&mut self) {
        let raft = &self.raw.raft;
        let ready_to_serve = raft.state == StateRole::Leader
            && self.applied_term == raft.term
            && raft.lead_transferee.is_none()
            && !self.lease.valid(self.now_ms);
        if ready_to_serve && self.now_ms >= self.lease_round_ms + 5 {
            self.start_lease_round();
        }
    }

    /// A witness that won an election (the only voter with every acknowledged entry, say)
    /// leads only until a voter has caught up, then hands over: it replicates but never serves.
    fn hand_over_leadership(&mut self) {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let me = self.config.node_id;
        let conf = raft.prs().conf().voters().ids();
        let mut candidates: Vec<u64> = conf.iter().filter(|id| *id != me).collect();
        candidates.sort_unstable();
        let caught_up = candidates
            .into_iter()
            .find(|id| raft.prs().get(*id).is_some_and(|progress| progress.matched == last));
        if let Some(to) = caught_up {
            tracing::info!(node = me, to, "witness leads: handing leadership to a caught-up voter");
            self.transfer_leader(to);
        }
    }

    /// A message from a peer.
    pub fn step(&mut self, mut msg: Message) {
        let from = msg.from;
        self.forget_lost_progress(&msg);
        self.clamp_heartbeat_commit(&mut msg);
        if self.now_ms < self.votes_from_ms && is_vote_request(&msg) {
            tracing::debug!(
                node = self.config.node_id,
                from,
                "vote request during start-up quarantine dropped"
            );
            return;
        }
        let handed_over = msg.get_msg_type() == raft::eraftpb::MessageType::MsgTimeoutNow;
        let term_before = self.raw.raft.term;
        if let Err(error) = self.raw.step(msg) {
            tracing::debug!(node = self.config.node_id, from, %error, "raft message ignored");
        }
        // A leader handing over sent this: the campaign it starts (a new term) is a handover,
        // which the VIP fencing lets claim at once (the old leader released first).
        if handed_over && self.raw.raft.term > term_before {
            self.shared.record_handover(self.raw.raft.term, from);
        }
    }

    /// On a leader: a member whose log is shorter than what it once acknowledged has lost its
    /// data (its data directory was wiped or replaced, and it started empty). raft-rs would
    /// go on taking its rejections for stale ones and never send it the snapshot it needs;
    /// probing it from its real log end does, and stops counting entries it no longer holds.
    fn forget_lost_progress(&mut self, msg: &Message) {
        let rejected = msg.get_msg_type() == MessageType::MsgAppendResponse && msg.reject;
        if !rejected || self.raw.raft.state != StateRole::Leader {
            return;
        }
        let Some(progress) = self.raw.raft.mut_prs().get_mut(msg.from) else { return };
        if msg.reject_hint >= progress.matched {
            return;
        }
        tracing::warn!(
            node = self.config.node_id,
            peer = msg.from,
            matched = progress.matched,
            last = msg.reject_hint,
            "a member lost log entries it had acknowledged (wiped data \
            directory?); it gets a snapshot"
        );
        progress.matched = msg.reject_hint;
        progress.become_probe();
    }

    /// On a member that lost its data: the leader's heartbeats still carry the commit index
    /// it had reached, beyond this log's end, which raft-rs treats as a broken invariant
    /// (panics). Until [`Node::forget_lost_progress`] runs on the leader, commit no further
    /// than this log goes.
    fn clamp_heartbeat_commit(&self, msg: &mut Message) {
        let last = self.raw.raft.raft_log.last_index();
        if msg.get_msg_type() == MessageType::MsgHeartbeat && msg.commit > last {
            msg.commit = last;
        }
    }

    /// What became of a snapshot sent to `to` (the transport reports it once delivered or
    /// failed, never merely queued).
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
    }

    /// Asks raft-rs to hand leadership to `to`; the lease ends now, since the transferee may
    /// win before any lease would have run out.
    pub fn transfer_leader(&mut self, to: u64) {
        self.lease.end();
        self.raw.transfer_leader(to);
    }

    /// A member connected anew. A member that restarted with a wiped store looks caught up
    /// to the leader (its progress still says what it held before), and raft-rs sends it
    /// nothing but heartbeats until the next entry: on an idle cluster it would wait for a
    /// client's write to be re-seeded. An empty entry (applied as the state machine's empty
    /// command, like an election's) makes the leader append at once; the wiped member
    /// refuses the append and gets the snapshot.
    pub fn peer_connected(&mut self, from: u64) {
        if self.raw.raft.state != raft::StateRole::Leader || from == self.node_id() {
            return;
        }
        if let Err(e) = self.raw.propose(Vec::new(), Vec::new()) {
            tracing::debug!(node = self.node_id(), from, error = %e, "no empty entry for a reconnected member");
        }
    }

    /// Proposes a command; `reply` hears back once it is applied (or why not).
    pub fn propose(&mut self, data: Vec<u8>, reply: Reply<S::Output>) {
        let deadline_ms = self.now_ms + 2 * self.election_timeout_ms();
        self.try_propose(Deferred { data, reply, deadline_ms });
    }

    fn try_propose(&mut self, proposal: Deferred<S::Output>) {
        if self.raw.raft.state != StateRole::Leader {
            // Not forwarded: the client retries at the leader with the same seq.
            answer(proposal.reply, Err(Status::NotLeader));
            return;
        }
        let id = self.next_proposal_id;
        let last_index = self.raw.raft.raft_log.last_index();
        let context = proposal_context(self.config.node_id, id);
        let proposed = self.raw.propose(context, proposal.data.clone());
        if proposed.is_err() || self.raw.raft.raft_log.last_index() == last_index {
            self.deferred.push_back(proposal);
            return;
        }
        let id = self.take_proposal_id();
        self.add_pending(id, proposal.reply);
    }

    /// The id the next proposal's entry context carries.
    pub(crate) fn take_proposal_id(&mut self) -> u64 {
        let id = self.next_proposal_id;
        self.next_proposal_id += 1;
        id
    }

    /// Waits for the entry proposed with `id` in this term to be applied.
    pub(crate) fn add_pending(&mut self, id: u64, reply: Reply<S::Output>) {
        self.shared.stats.proposals.fetch_add(1, Ordering::Relaxed);
        self.pending.insert(id, Pending { term: self.raw.raft.term, reply });
    }

    /// Tells the transport the peer addresses the replicated address book holds.
    pub(crate) fn transport_learn_peers(&mut self, peers: &[(u64, String)]) {
        self.transport.learn_peers(peers);
    }

    fn retry_deferred(&mut self) {
        for proposal in std::mem::take(&mut self.deferred) {
            if self.now_ms >= proposal.deadline_ms {
                tracing::warn!(node = self.config.node_id, "a dropped proposal timed out");
                answer(proposal.reply, Err(Status::Unavailable));
                continue;
            }
            self.try_propose(proposal);
        }
    }

    /// One Ready, in the order raft-rs requires (crate docs, "The Ready loop").
    pub fn on_ready(&mut self) {
        if !self.raw.has_ready() {
            self.after_ready();
            return;
        }
        let mut ready = self.raw.ready(); // 1. take one Ready
        self.send(ready.take_messages()); // 2. a leader replicates while it persists
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot()); // 3. snapshot before entries and hard state
        }
        // 4. committed = already durable: a leader answers its proposers before the next
        // fsync, a follower acknowledges (6) before it applies.
        let leading = self.raw.raft.state == StateRole::Leader;
        if leading {
            self.apply_committed(ready.take_committed_entries());
        }
        let mut after_sync = ready.take_persisted_messages();
        if !self.term_or_vote_changes(ready.hs()) {
            self.send(take_heartbeat_responses(&mut after_sync)); // see the function
        }
        self.persist(ready.entries(), ready.hs(), ready.must_sync()); // 5. one synced batch
        self.send(after_sync); // 6. only after the fsync
        if !leading {
            self.apply_committed(ready.take_committed_entries());
        }
        if self.lease.confirm(ready.read_states(), self.raw.raft.term, self.now_ms) {
            self.shared.stats.lease_lapses.fetch_add(1, Ordering::Relaxed);
        }
        let mut light = self.raw.advance(ready); // 7. advance, then the light ready
                                                 // light.commit_index() needs no write here: write_apply raises the stored commit index
                                                 // to what it applies (raft-rs five_mem_node persists it instead).
        self.send(light.take_messages());
        self.apply_committed(light.take_committed_entries());
        self.raw.advance_apply();
        self.maybe_snapshot(); // 8. snapshot and compact from applied state
        self.shared.stats.ready_batches.fetch_add(1, Ordering::Relaxed);
        self.after_ready();
    }

    /// True if this Ready's hard state changes the stored term or vote (a commit index alone
    /// does not count).
    fn term_or_vote_changes(&self, hard_state: Option<&raft::eraftpb::HardState>) -> bool {
        let stored = self.raw.store().hard_state();
        hard_state.is_some_and(|hs| hs.term != stored.term || hs.vote != stored.vote)
    }

    /// What holds between Readys, then the status others read.
    fn after_ready(&mut self) {
        let waiting = self.snapshot_job.is_none() && !self.snapshot_waiters.is_empty();
        if waiting || self.snapshot_job.as_ref().is_some_and(|(_, job)| job.is_finished()) {
            self.maybe_snapshot(); // a build ended, or one is wanted, with no Ready since
        }
        self.fail_pending_if_not_leader();
        self.hurry_lease();
        self.publish_status();
        self.check();
    }

    fn send(&mut self, messages: Vec<Message>) {
        for msg in messages {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                tracing::info!(node = self.config.node_id, to = msg.to, "sending a snapshot");
            }
            self.transport.send(msg);
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
        result.unwrap_or_else(|error| crate::fatal(&error.to_string()));
        if must_sync {
            self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resolves the proposal `id` (if it is ours and of its term) with what applying gave.
    pub(crate) fn resolve(&mut self, id: u64, term: u64, result: S::Output) {
        if self.pending.get(&id).is_some_and(|pending| pending.term == term) {
            let pending = self.pending.remove(&id).expect("checked above");
            answer(pending.reply, Ok(result));
        }
    }

    fn fail_pending_if_not_leader(&mut self) {
        if self.raw.raft.state == StateRole::Leader {
            return;
        }
        if !self.pending.is_empty() {
            tracing::info!(
                node = self.config.node_id,
                pending = self.pending.len(),
                "leadership lost: failing pending proposals with NotLeader"
            );
        }
        // They may still commit; clients retry with the same seq and get the stored reply.
        for (_, pending) in self.pending.drain() {
            answer(pending.reply, Err(Status::NotLeader));
        }
        for proposal in self.deferred.drain(..) {
            answer(proposal.reply, Err(Status::NotLeader));
        }
        self.lease.end();
    }

    /// True while this node may answer reads from its applied state and command others: it
    /// leads, has applied an entry of its own term (so every earlier commit), and a quorum
    /// acknowledged it within the lease.
    pub fn serving(&self, now_ms: u64) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && self.applied_term == raft.term
            && raft.lead_transferee.is_none()
            && self.lease.valid(now_ms)
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let role = Role::from(raft.state);
        self.shared.publish(crate::handle::Published {
            role,
            leader_id: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: raft.raft_log.applied,
            serving_until_ms: match self.serving(self.now_ms) {
                true => self.lease.until_ms(),
                false => 0,
            },
            progress: crate::handle::leader_progress(raft),
        });
        self.publish_members();
    }

    /// The relationships that must hold between Readys (TigerBeetle: assert what you expect).
    fn check(&self) {
        let log = &self.raw.raft.raft_log;
        assert!(log.applied <= log.committed, "applied {} > commit {}", log.applied, log.committed);
        assert!(log.committed <= log.last_index(), "commit beyond the log");
        if self.raw.raft.state != StateRole::Leader {
            assert!(self.pending.is_empty(), "proposals pending on a non-leader");
        }
        let stored = self.raw.store().applied().0;
        assert_eq!(stored, log.applied, "stored and raft applied index differ");
        if let Some(snapshot) = self.raw.store().latest_snapshot() {
            assert!(snapshot.index <= log.applied, "snapshot ahead of the applied state");
        }
    }

    /// Stops: every waiting proposer hears `Unavailable`.
    pub(crate) fn stop(&mut self) {
        self.finish_snapshot_job();
        self.lease.end();
        for (_, pending) in self.pending.drain() {
            answer(pending.reply, Err(Status::Unavailable));
        }
        for proposal in self.deferred.drain(..) {
            answer(proposal.reply, Err(Status::Unavailable));
        }
        self.publish_status();
    }

    pub(crate) fn election_timeout_ms(&self) -> u64 {
        self.config.election_timeout_ms()
    }

    /// True if raft has something to persist or send: the driver handles it before it waits.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// The RawNode, for the simulator's checks.
    pub fn raw(&self) -> &RawNode<L> {
        &self.raw
    }

    /// The store, for the simulator's crash-restart.
    pub fn store(&self) -> &L {
        self.raw.store()
    }
}

/// Takes the heartbeat responses out of a follower's persisted messages, to send before its
/// fsync. A heartbeat response claims nothing about this node's log; what it does claim, that
/// this node follows the leader in a term that is already stored (the caller checks), does
/// not wait for the fsync either. Sent early, it keeps the leader's lease (a ReadIndex round
/// a quorum answers) from lapsing while a follower's disk is slow; the entries' own
/// acknowledgements still wait.
fn take_heartbeat_responses(messages: &mut Vec<Message>) -> Vec<Message> {
    let is_heartbeat = |msg: &Message| msg.get_msg_type() == MessageType::MsgHeartbeatResponse;
    let (early, rest): (Vec<Message>, Vec<Message>) =
        std::mem::take(messages).into_iter().partition(is_heartbeat);
    *messages = rest;
    early
}

/// A (pre-)vote request that is not part of a leadership transfer.
fn is_vote_request(msg: &Message) -> bool {
    let kind = msg.get_msg_type();
    let vote = kind == MessageType::MsgRequestVote || kind == MessageType::MsgRequestPreVote;
    vote && msg.context.as_ref() != b"CampaignTransfer"
}

/// Entry context of a proposal: the proposing node and its proposal id.
pub(crate) fn proposal_context(node_id: u64, id: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16);
    context.extend_from_slice(&node_id.to_le_bytes());
    context.extend_from_slice(&id.to_le_bytes());
    context
}

/// The proposal id in `context`, if this node proposed the entry.
pub(crate) fn own_proposal(context: &[u8], node_id: u64) -> Option<u64> {
    if context.len() != 16 || context[..8] != node_id.to_le_bytes() {
        return None;
    }
    Some(u64::from_le_bytes(context[8..].try_into().ok()?))
}

pub(crate) fn answer<O>(reply: Reply<O>, result: Result<O, Status>) {
    // Err means the proposer stopped waiting (its task was cancelled): nothing to tell.
    if reply.send(result).is_err() {
        tracing::debug!("a proposer went away before its answer");
    }
}
