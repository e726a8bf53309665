//! The simulator's checker: the properties a Raft group must keep whatever the faults, asserted
//! after every step. A violation panics with the seed and how to replay it.

use std::collections::{BTreeMap, HashMap};

use raft::StateRole;

use super::{Ledger, Report};
use crate::node::Node;
use crate::store::MemStore;

/// See the module documentation.
pub struct Checker {
    seed: u64,
    /// The leader seen for each term.
    leaders: HashMap<u64, u64>,
    /// The term of every committed index any node has reported.
    committed: BTreeMap<u64, u64>,
    /// The ledger digest at every applied index any node has reported.
    digests: HashMap<u64, u64>,
    /// Acknowledged proposal ids and the index they were applied at.
    acknowledged: BTreeMap<u64, u64>,
    replay_env: String,
}

impl Checker {
    /// `replay_env`: the environment `replay_one_seed` needs besides the seed to run the same
    /// options (see [`super::Options::replay_env`]).
    pub fn new(seed: u64, replay_env: String) -> Checker {
        Checker {
            seed,
            replay_env,
            leaders: HashMap::new(),
            committed: BTreeMap::new(),
            digests: HashMap::new(),
            acknowledged: BTreeMap::new(),
        }
    }

    /// Panics with the seed and the replay command.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "simulation seed {seed} failed: {what}\n  replay: MFSHA_SIM_SEED={seed} {env}cargo \
             test --workspace --locked -- --nocapture --exact replay_one_seed",
            seed = self.seed,
            env = self.replay_env,
        )
    }

    pub fn leaders(&self) -> u64 {
        self.leaders.len() as u64
    }

    pub fn acknowledged(&mut self, id: u64, index: u64) {
        if let Some(earlier) = self.acknowledged.insert(id, index) {
            self.fail(&format!("proposal {id} acknowledged twice (indexes {earlier} and {index})"));
        }
    }

    /// One leader per term, committed entries unchanged, equal states at equal indexes.
    pub fn check_node(&mut self, node: &Node<Ledger, MemStore>) {
        let raft = &node.raw().raft;
        let id = node.node_id();
        if raft.state == StateRole::Leader {
            if !self.leaders.contains_key(&raft.term)
                && std::env::var_os("MFSHA_SIM_TRACE").is_some()
            {
                println!("        node {id} leads term {}", raft.term);
            }
            let leader = *self.leaders.entry(raft.term).or_insert(id);
            if leader != id {
                self.fail(&format!("term {} has two leaders: {leader} and {id}", raft.term));
            }
        }
        self.check_committed(node);
        let (index, digest) = node.shared.applied.read().state.state_digest();
        let known = *self.digests.entry(index).or_insert(digest);
        if known != digest {
            self.fail(&format!("node {id} applied state at index {index} differs from another's"));
        }
    }

    fn check_committed(&mut self, node: &Node<Ledger, MemStore>) {
        let log = &node.raw().raft.raft_log;
        let first = log.first_index();
        let start = first.max(log.applied.saturating_sub(64)).max(1);
        for index in start..=log.committed {
            let Ok(term) = log.term(index) else { continue };
            let known = *self.committed.entry(index).or_insert(term);
            if known != term {
                self.fail(&format!(
                    "committed entry {index} changed: term {known} before, term {term} on node {}",
                    node.node_id()
                ));
            }
        }
    }

    /// At most one node serves (holds a lease) at any instant.
    pub fn check_serving(&self, now_ms: u64, serving: &[u64]) {
        if serving.len() > 1 {
            self.fail(&format!("nodes {serving:?} all hold a lease at {now_ms} ms"));
        }
    }

    /// After convergence: every ledger equal, every acknowledged proposal in it exactly once,
    /// at the index it was acknowledged at.
    pub fn check_final(&self, ledgers: &[Ledger], report: &Report) {
        let Some(first) = ledgers.first() else { self.fail("no nodes at the end") };
        for ledger in ledgers {
            if ledger != first {
                self.fail("the nodes' final states differ");
            }
        }
        let mut applied: BTreeMap<u64, u64> = BTreeMap::new();
        for (index, id) in first.commands() {
            if let Some(earlier) = applied.insert(*id, *index) {
                self.fail(&format!("proposal {id} applied twice (indexes {earlier} and {index})"));
            }
        }
        for (id, index) in &self.acknowledged {
            match applied.get(id) {
                Some(at) if at == index => {}
                Some(at) => {
                    self.fail(&format!("proposal {id} acknowledged at {index}, applied at {at}"))
                }
                None => {
                    let near: Vec<&(u64, u64)> =
                        first.commands().iter().filter(|(i, _)| i.abs_diff(*index) <= 3).collect();
                    self.fail(&format!(
                        "acknowledged proposal {id} (index {index}) was lost; the final state \
                         holds {near:?} around that index"
                    ))
                }
            }
        }
        assert_eq!(report.acknowledged as usize, self.acknowledged.len());
    }
}

impl Ledger {
    /// (applied index, digest), for the checker.
    pub fn state_digest(&self) -> (u64, u64) {
        use crate::state_machine::StateMachine;
        (self.applied_index(), self.digest())
    }
}
