//! A deterministic simulator of a whole Raft group (TigerBeetle's VOPR is the model).
//!
//! From one seed it runs 3–5 real [`Node`]s — the same Ready loop the masters run — over
//! in-memory stores that lose unsynced writes in a crash ([`MemStore`]) and an in-memory
//! network ([`network`]) that loses, delays, reorders and duplicates messages and partitions
//! nodes. Every node has its own clock running up to `skew_percent` fast or slow. Clients
//! propose unique ids to whichever node they pick. After every step the [`checker`] asserts:
//!
//! * at most one leader per term;
//! * a committed entry never changes (same term at the same index on every node, ever);
//! * applied states are equal at equal indexes (the ledger's digest);
//! * at most one node holds a valid lease at any instant;
//!
//! and at the end, once faults stop and the group converges, that every acknowledged
//! proposal was applied exactly once, on every node.
//!
//! Nothing reads the wall clock or an unseeded random source, so a failing seed replays
//! exactly: the panic message says how.

pub mod checker;
pub mod machine;
pub mod network;

use std::sync::{Arc, Mutex};

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

use crate::boot::{bootstrap_store, new_node};
use crate::config::RaftConfig;
use crate::membership::MemberChange;
use crate::node::Node;
use crate::store::MemStore;
use crate::transport::Transport;
use checker::Checker;
pub use machine::Ledger;
use network::Network;

/// Every fault the simulator can inject, and how often. Probabilities are per mille.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// Simulated time with faults, in ms.
    pub run_ms: u64,
    /// Time allowed after the faults stop for the group to converge, in ms.
    pub converge_ms: u64,
    pub step_ms: u64,
    pub loss_per_mille: u32,
    pub duplicate_per_mille: u32,
    pub delay_ms_min: u64,
    pub delay_ms_max: u64,
    /// Chance per step that a partition starts (when none is in force).
    pub partition_per_mille: u32,
    pub partition_ms_max: u64,
    /// Chance per step that an up node crashes (losing unsynced writes).
    pub crash_per_mille: u32,
    pub down_ms_max: u64,
    /// Each node's clock runs at (100 ± skew)% of real time.
    pub skew_percent: u64,
    /// Chance per step that a client proposes.
    pub propose_per_mille: u32,
    pub snapshot_every_entries: u64,
    /// The node (if any) that runs as a witness: votes, never stays leader.
    pub witness: Option<u64>,
    /// Chance per step that the leader is asked for a membership change: remove a voter (never
    /// below three) or add a removed node back with a wiped store.
    pub membership_per_mille: u32,
}

impl Options {
    /// The variables `replay_one_seed` (crates/raft/tests/sim.rs) reads to run these options
    /// again: the group's size, the witness and the membership changes, the only options the
    /// tests vary. Empty for the defaults.
    pub fn replay_env(&self) -> String {
        let default = Options::default();
        let mut env = String::new();
        if self.nodes != default.nodes {
            env += &format!("MFSHA_SIM_NODES={} ", self.nodes);
        }
        if let Some(witness) = self.witness {
            env += &format!("MFSHA_SIM_WITNESS={witness} ");
        }
        if self.membership_per_mille != default.membership_per_mille {
            env += &format!("MFSHA_SIM_MEMBERSHIP={} ", self.membership_per_mille);
        }
        env
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            run_ms: 4_000,
            converge_ms: 20_000,
            step_ms: 2,
            loss_per_mille: 50,
            duplicate_per_mille: 20,
            delay_ms_min: 0,
            delay_ms_max: 20,
            partition_per_mille: 2,
            partition_ms_max: 800,
            crash_per_mille: 1,
            down_ms_max: 600,
            skew_percent: 4,
            propose_per_mille: 150,
            snapshot_every_entries: 25,
            witness: None,
            membership_per_mille: 0,
        }
    }
}

/// What one run did, for the soak's totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub acknowledged: u64,
    pub applied: u64,
    pub leaders: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub messages: u64,
    /// Membership changes the leader took (proposed; each applies or is lost with its term).
    pub member_changes: u64,
    /// Nodes that stopped because a member told them they were removed (while down).
    pub told_removed: u64,
}

/// The sim's transport: messages wait in an outbox the simulator empties after each step.
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Vec<Message>>>);

impl Transport for Outbox {
    fn send(&mut self, msg: Message) {
        self.0.lock().expect("outbox").push(msg);
    }
}

impl Outbox {
    fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.0.lock().expect("outbox"))
    }
}

/// One node slot: up (a running node) or down (only its store survives).
struct Slot {
    id: u64,
    node: Option<Node<Ledger, MemStore>>,
    store: Option<MemStore>,
    outbox: Outbox,
    /// Clock rate in per mille of real time, and the phase of its first tick.
    rate_per_mille: u64,
    next_tick_ms: u64,
    up_at_ms: u64,
    /// Stopped after applying its own removal; it comes back only when added again.
    removed: bool,
}

impl Slot {
    fn local_ms(&self, now_ms: u64) -> u64 {
        now_ms * self.rate_per_mille / 1000
    }
}

/// A proposal a client is waiting on.
struct Waiting {
    id: u64,
    reply: oneshot::Receiver<Result<u64, crate::Status>>,
}

/// A simulated group. See the module documentation.
pub struct Simulation {
    seed: u64,
    options: Options,
    rng: StdRng,
    now_ms: u64,
    slots: Vec<Slot>,
    network: Network,
    checker: Checker,
    waiting: Vec<Waiting>,
    next_proposal: u64,
    report: Report,
}

impl Simulation {
    pub fn new(seed: u64, options: Options) -> Simulation {
        assert!((3..=5).contains(&options.nodes), "the simulator runs 3 to 5 nodes");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut slots = Vec::new();
        for index in 0..options.nodes {
            let id = index as u64 + 1;
            let skew = options.skew_percent * 10;
            let rate_per_mille = rng.gen_range(1000 - skew..=1000 + skew);
            let mut store = MemStore::new();
            if id == 1 {
                let config = sim_config(id, &options);
                bootstrap_store::<Ledger, MemStore>(&mut store, &config).expect("bootstrap");
            }
            let next_tick_ms = rng.gen_range(0..50);
            let outbox = Outbox::default();
            slots.push(Slot {
                id,
                node: None,
                store: Some(store),
                outbox,
                rate_per_mille,
                next_tick_ms,
                up_at_ms: 0,
                removed: false,
            });
        }
        let network = Network::new(&options);
        let checker = Checker::new(seed, options.replay_env());
        let mut sim = Simulation {
            seed,
            options,
            rng,
            now_ms: 0,
            slots,
            network,
            checker,
            waiting: Vec::new(),
            next_proposal: 1,
            report: Report::default(),
        };
        for index in 0..sim.slots.len() {
            sim.start(index);
        }
        sim
    }

    /// Runs with faults, then without until the group converges; panics (naming the seed) on
    /// any broken property.
    pub fn run(mut self) -> Report {
        while self.now_ms < self.options.run_ms {
            self.inject_faults();
            self.step(true);
        }
        self.network.heal();
        let deadline = self.now_ms + self.options.converge_ms;
        while !self.converged() {
            if self.now_ms >= deadline {
                self.trace_nodes();
                self.checker.fail(&format!(
                    "no convergence {} ms after the faults stopped",
                    self.options.converge_ms
                ));
            }
            self.restart_due(true);
            self.step(false);
        }
        let ledgers = self.ledgers();
        let up = self.slots.iter().filter(|slot| slot.node.is_some());
        for (slot, ledger) in up.zip(&ledgers) {
            let log = &slot.node.as_ref().expect("up").raw().raft.raft_log;
            let tail: Vec<_> = ledger.commands().iter().rev().take(3).collect();
            self.trace(&format!(
                "end node {}: applied {} committed {} last {}, ledger applied {} tail {tail:?}",
                slot.id,
                log.applied,
                log.committed,
                log.last_index(),
                crate::StateMachine::applied_index(ledger)
            ));
        }
        self.checker.check_final(&ledgers, &self.report);
        self.report.applied = ledgers[0].commands().len() as u64;
        self.report.leaders = self.checker.leaders();
        self.report
    }

    fn step(&mut self, proposing: bool) {
        self.now_ms += self.options.step_ms;
        let (due, dropped) = self.network.due(self.now_ms);
        for msg in due {
            self.deliver(msg);
        }
        for msg in dropped {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                if let Some(sender) = self.slots[(msg.from - 1) as usize].node.as_mut() {
                    sender.report_snapshot(msg.to, false);
                }
            }
        }
        self.tick_nodes();
        if proposing && self.rng.gen_range(0..1000) < self.options.propose_per_mille {
            self.propose();
        }
        if proposing && self.rng.gen_range(0..1000) < self.options.membership_per_mille {
            self.change_membership();
        }
        for slot in &mut self.slots {
            if let Some(node) = slot.node.as_mut() {
                node.on_ready();
            }
        }
        self.stop_removed();
        self.collect_messages();
        self.collect_replies();
        self.check_step();
    }

    fn tick_nodes(&mut self) {
        let tick_ms = sim_config(1, &self.options).tick_ms;
        for slot in &mut self.slots {
            let local = slot.local_ms(self.now_ms);
            let Some(node) = slot.node.as_mut() else { continue };
            if local >= slot.next_tick_ms {
                node.tick(local);
                slot.next_tick_ms = local + tick_ms;
            }
        }
    }

    fn deliver(&mut self, msg: Message) {
        let (from, to) = (msg.from, msg.to);
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        // The peer port's answer to a non-member's Hello. It only informs: a receiver that is
        // behind (it has not applied the sender's addition yet) must still hear the sender,
        // or a re-added leader could never catch it up (the simulator found this).
        let notice = self.slots[(to - 1) as usize]
            .node
            .as_ref()
            .and_then(|node| node.removal_notice_for(from));
        if let Some(applied_index) = notice {
            if let Some(sender) = self.slots[(from - 1) as usize].node.as_mut() {
                let before = sender.shared.removed_flag();
                sender.heard_not_member(to, applied_index);
                if !before && sender.shared.removed_flag() {
                    self.report.told_removed += 1;
                    let mine = crate::store::LogStore::conf_state(sender.store()).voters.clone();
                    let applied = crate::store::LogStore::applied(sender.store()).0;
                    self.trace(&format!(
                        "node {from} stops: node {to} says it was removed at {applied_index} \
                         (node {from} applied {applied}, voters {mine:?})"
                    ));
                }
            }
        }
        let delivered = match self.slots[(to - 1) as usize].node.as_mut() {
            Some(node) => {
                node.step(msg);
                true
            }
            None => false,
        };
        if is_snapshot {
            if let Some(sender) = self.slots[(from - 1) as usize].node.as_mut() {
                sender.report_snapshot(to, delivered);
            }
        }
    }

    fn collect_messages(&mut self) {
        for index in 0..self.slots.len() {
            let from_up = self.slots[index].node.is_some();
            for msg in self.slots[index].outbox.take() {
                if !from_up {
                    continue;
                }
                self.report.messages += 1;
                let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
                let (from, to) = (msg.from, msg.to);
                let sent = self.network.send(&mut self.rng, self.now_ms, msg);
                if is_snapshot && !sent {
                    if let Some(node) = self.slots[(from - 1) as usize].node.as_mut() {
                        node.report_snapshot(to, false);
                    }
                }
            }
        }
    }

    fn propose(&mut self) {
        let index = self.rng.gen_range(0..self.slots.len());
        let Some(node) = self.slots[index].node.as_mut() else { return };
        let id = self.next_proposal;
        self.next_proposal += 1;
        let (reply, receiver) = oneshot::channel();
        node.propose(id.to_le_bytes().to_vec(), reply);
        self.waiting.push(Waiting { id, reply: receiver });
    }

    /// Asks the leader (if any) to remove a voter other than itself while more than three
    /// remain, or to add back a node it does not count as a member, with a wiped store (a new
    /// machine under the old id, as an operator re-adds one).
    fn change_membership(&mut self) {
        let Some(leader) = self.slots.iter().position(|slot| {
            slot.node.as_ref().is_some_and(|n| n.raw().raft.state == raft::StateRole::Leader)
        }) else {
            return;
        };
        let voters = self.members_of(leader);
        let outside: Vec<usize> =
            (0..self.slots.len()).filter(|i| !voters.contains(&self.slots[*i].id)).collect();
        let may_add =
            self.slots[leader].node.as_ref().is_some_and(|n| n.members_hold_last_change());
        let change = if !outside.is_empty() && may_add && self.rng.gen_bool(0.5) {
            let index = outside[self.rng.gen_range(0..outside.len())];
            self.wipe(index);
            MemberChange::AddVoter(self.slots[index].id)
        } else if voters.len() > 3 {
            let others: Vec<u64> =
                voters.iter().copied().filter(|id| *id != self.slots[leader].id).collect();
            MemberChange::Remove(others[self.rng.gen_range(0..others.len())])
        } else {
            return;
        };
        self.trace(&format!("membership change {change:?} asked of node {}", leader + 1));
        self.report.member_changes += 1;
        let (reply, _ignored) = oneshot::channel();
        let node = self.slots[leader].node.as_mut().expect("the leader is up");
        node.change_members(change, Vec::new(), reply);
    }

    /// The voters and learners node `index` (up) counts as members.
    fn members_of(&self, index: usize) -> Vec<u64> {
        let node = self.slots[index].node.as_ref().expect("an up node");
        let conf = node.raw().raft.prs().conf().to_conf_state();
        conf.voters.iter().chain(&conf.learners).copied().collect()
    }

    /// A fresh machine under the old id: no store, and none of the old one's messages still
    /// in flight (its connections died with it).
    fn wipe(&mut self, index: usize) {
        let id = self.slots[index].id;
        self.network.forget(id);
        let slot = &mut self.slots[index];
        slot.node = None;
        slot.outbox.take();
        slot.store = Some(MemStore::new());
        slot.removed = false;
        self.start(index);
        self.trace(&format!("node {id} wiped and started empty"));
    }

    /// A node that applied its own removal stops, and stays down until added again.
    fn stop_removed(&mut self) {
        for slot in &mut self.slots {
            if slot.node.as_ref().is_some_and(|node| node.shared.removed_flag()) {
                slot.node = None;
                slot.removed = true;
                slot.outbox.take();
            }
        }
    }

    fn collect_replies(&mut self) {
        let mut still = Vec::new();
        for mut waiting in std::mem::take(&mut self.waiting) {
            match waiting.reply.try_recv() {
                Ok(Ok(index)) => {
                    self.trace(&format!("ack proposal {} at index {index}", waiting.id));
                    self.report.acknowledged += 1;
                    self.checker.acknowledged(waiting.id, index);
                }
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => still.push(waiting),
            }
        }
        self.waiting = still;
    }

    fn check_step(&mut self) {
        let now_ms = self.now_ms;
        let mut serving = Vec::new();
        for slot in &self.slots {
            let Some(node) = slot.node.as_ref() else { continue };
            self.checker.check_node(node);
            if node.serving(slot.local_ms(now_ms)) {
                serving.push(slot.id);
            }
        }
        self.checker.check_serving(now_ms, &serving);
    }

    fn inject_faults(&mut self) {
        if self.rng.gen_range(0..1000) < self.options.partition_per_mille
            && self.network.start_partition(&mut self.rng, self.now_ms)
        {
            self.report.partitions += 1;
            self.trace("partition");
        }
        self.network.end_partition_if_due(self.now_ms);
        for index in 0..self.slots.len() {
            let up = self.slots[index].node.is_some();
            if up && self.rng.gen_range(0..1000) < self.options.crash_per_mille {
                self.crash(index);
            }
        }
        self.restart_due(false);
    }

    fn trace_nodes(&self) {
        for slot in &self.slots {
            let Some(node) = slot.node.as_ref() else { continue };
            let raft = &node.raw().raft;
            let log = &raft.raft_log;
            let what =
                format!(
                "node {}: {:?} term {} leader {} last {} committed {} applied {} pending reads {}",
                slot.id, raft.state, raft.term, raft.leader_id, log.last_index(), log.committed,
                log.applied, raft.pending_read_count()
            );
            self.trace(&what);
        }
    }

    fn trace(&self, what: &str) {
        if std::env::var_os("MFSHA_SIM_TRACE").is_some() {
            println!("{:>6} ms  {what}", self.now_ms);
        }
    }

    fn crash(&mut self, index: usize) {
        let down_ms = self.rng.gen_range(1..=self.options.down_ms_max);
        let slot = &mut self.slots[index];
        let node = slot.node.take().expect("crash of an up node");
        slot.store = Some(node.store().crash());
        slot.outbox.take();
        slot.up_at_ms = self.now_ms + down_ms;
        self.report.crashes += 1;
        let id = slot.id;
        let store = slot.store.as_ref().expect("just stored");
        let (last, applied) = (
            raft::Storage::last_index(store).unwrap_or(0),
            crate::store::LogStore::applied(store).0,
        );
        let live_last = raft::Storage::last_index(node.store()).unwrap_or(0);
        self.trace(&format!("crash node {id} for {down_ms} ms: durable last {last} applied {applied}, live last {live_last}"));
    }

    fn restart_due(&mut self, all: bool) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.node.is_none() && !slot.removed && (all || slot.up_at_ms <= self.now_ms) {
                self.start(index);
            }
        }
    }

    fn start(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let store = slot.store.take().expect("a down node's store");
        let config = sim_config(slot.id, &self.options);
        let transport = Box::new(slot.outbox.clone());
        let (mut node, _handle, _inbox) =
            new_node::<Ledger, MemStore>(config, store, transport).expect("sim node starts");
        node.start_clock(slot.local_ms(self.now_ms));
        let log = &node.raw().raft.raft_log;
        let what = format!(
            "start node {}: last {} committed {} applied {} term {}",
            slot.id,
            log.last_index(),
            log.committed,
            log.applied,
            node.raw().raft.term
        );
        slot.node = Some(node);
        self.trace(&what);
    }

    /// The leader has committed and every member (as the leader counts them) has applied
    /// its whole log. A node outside the membership is not waited for: one removed while it
    /// could not hear of it never will.
    fn converged(&self) -> bool {
        if !self.waiting.is_empty() {
            return false;
        }
        let Some(leader) = self.slots.iter().position(|slot| {
            slot.node.as_ref().is_some_and(|n| n.raw().raft.state == raft::StateRole::Leader)
        }) else {
            return false;
        };
        let members = self.members_of(leader);
        let member_slots = self.slots.iter().filter(|slot| members.contains(&slot.id));
        let nodes: Vec<&Node<Ledger, MemStore>> =
            member_slots.clone().filter_map(|slot| slot.node.as_ref()).collect();
        if nodes.len() != member_slots.count() {
            return false;
        }
        let leader = self.slots[leader].node.as_ref().expect("the leader is up");
        if self.options.witness == Some(leader.node_id()) {
            return false; // a witness must have handed leadership over by now
        }
        // The leader must have committed its whole log, including an entry of its own term (so
        // every earlier entry, acknowledged ones of lost leaders included), and every node
        // must have applied all of it.
        let raft = &leader.raw().raft;
        let commit = raft.raft_log.committed;
        let own_term_committed = raft.raft_log.term(commit).is_ok_and(|term| term == raft.term);
        if commit != raft.raft_log.last_index() || !own_term_committed {
            return false;
        }
        nodes.iter().all(|node| {
            let log = &node.raw().raft.raft_log;
            log.applied == commit && log.last_index() == commit
        })
    }

    /// The members' ledgers (after convergence: the leader's membership).
    fn ledgers(&self) -> Vec<Ledger> {
        let leader = self.slots.iter().position(|slot| {
            slot.node.as_ref().is_some_and(|n| n.raw().raft.state == raft::StateRole::Leader)
        });
        let members = leader.map(|index| self.members_of(index)).unwrap_or_default();
        let slots = self.slots.iter().filter(|slot| members.contains(&slot.id));
        let nodes = slots.filter_map(|slot| slot.node.as_ref());
        nodes.map(|node| node.shared.applied.read().state.clone()).collect()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// Every node's settings: short timings (the sim's clock is virtual anyway) and a fixed
/// election timeout — raft-rs would draw it from an unseeded generator; the nodes' skewed
/// clocks and tick phases break the ties instead.
fn sim_config(node_id: u64, options: &Options) -> RaftConfig {
    let peers = (1..=options.nodes as u64)
        .filter(|id| *id != node_id)
        .map(|id| (id, format!("sim-{id}")))
        .collect();
    RaftConfig {
        node_id,
        cluster_id: "sim".into(),
        data_dir: format!("sim-{node_id}").into(),
        peers,
        learners: Vec::new(),
        tick_ms: 10,
        election_ticks: 10,
        max_election_ticks: 11,
        heartbeat_ticks: 2,
        max_clock_drift_percent: options.skew_percent + 1,
        snapshot_every_entries: options.snapshot_every_entries,
        log_tail_entries: 5,
        witness: options.witness == Some(node_id),
    }
}

/// Runs `seeds` consecutive seeds from `first`; panics on the first failing one.
pub fn run_seeds(first: u64, seeds: u64, options: &Options) -> Report {
    let mut total = Report::default();
    for seed in first..first + seeds {
        let report = Simulation::new(seed, options.clone()).run();
        total.acknowledged += report.acknowledged;
        total.applied += report.applied;
        total.leaders += report.leaders;
        total.crashes += report.crashes;
        total.partitions += report.partitions;
        total.messages += report.messages;
        total.member_changes += report.member_changes;
        total.told_removed += report.told_removed;
    }
    total
}
