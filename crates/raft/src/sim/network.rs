//! The simulator's network: every message waits a seeded delay (so messages reorder), may be
//! lost or duplicated, and is dropped at delivery time if a partition separates its ends.
//! A partition splits the nodes into two sides for a seeded time.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::Rng;

use super::Options;

/// See the module documentation.
pub struct Network {
    loss_per_mille: u32,
    duplicate_per_mille: u32,
    delay_ms: (u64, u64),
    partition_ms_max: u64,
    nodes: u64,
    /// Messages by (delivery time, sequence number): the sequence keeps equal times in a
    /// deterministic order.
    queue: BTreeMap<(u64, u64), Message>,
    sequence: u64,
    /// One side of the current partition and when it ends.
    partition: Option<(BTreeSet<u64>, u64)>,
}

impl Network {
    pub fn new(options: &Options) -> Network {
        Network {
            loss_per_mille: options.loss_per_mille,
            duplicate_per_mille: options.duplicate_per_mille,
            delay_ms: (options.delay_ms_min, options.delay_ms_max),
            partition_ms_max: options.partition_ms_max,
            nodes: options.nodes as u64,
            queue: BTreeMap::new(),
            sequence: 0,
            partition: None,
        }
    }

    /// Queues `msg` (maybe twice, maybe not at all). `false` if it was lost at once.
    pub fn send(&mut self, rng: &mut StdRng, now_ms: u64, msg: Message) -> bool {
        if rng.gen_range(0..1000) < self.loss_per_mille {
            return false;
        }
        if rng.gen_range(0..1000) < self.duplicate_per_mille {
            self.enqueue(rng, now_ms, msg.clone());
        }
        self.enqueue(rng, now_ms, msg);
        true
    }

    fn enqueue(&mut self, rng: &mut StdRng, now_ms: u64, msg: Message) {
        let delay = rng.gen_range(self.delay_ms.0..=self.delay_ms.1);
        self.sequence += 1;
        self.queue.insert((now_ms + delay, self.sequence), msg);
    }

    /// Messages whose time has come: those whose ends are on the same side, and those a
    /// partition dropped (the sender of a dropped snapshot must hear that it failed, as the
    /// TCP transport reports it).
    pub fn due(&mut self, now_ms: u64) -> (Vec<Message>, Vec<Message>) {
        let later = self.queue.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut self.queue, later);
        due.into_values().partition(|msg| !self.separated(msg.from, msg.to))
    }

    fn separated(&self, a: u64, b: u64) -> bool {
        match &self.partition {
            Some((side, _)) => side.contains(&a) != side.contains(&b),
            None => false,
        }
    }

    /// Starts a partition if none is in force: a random non-empty proper subset of the nodes
    /// on one side.
    pub fn start_partition(&mut self, rng: &mut StdRng, now_ms: u64) -> bool {
        if self.partition.is_some() {
            return false;
        }
        let size = rng.gen_range(1..self.nodes);
        let mut side = BTreeSet::new();
        while (side.len() as u64) < size {
            side.insert(rng.gen_range(1..=self.nodes));
        }
        let until = now_ms + rng.gen_range(1..=self.partition_ms_max);
        self.partition = Some((side, until));
        true
    }

    pub fn end_partition_if_due(&mut self, now_ms: u64) {
        if self.partition.as_ref().is_some_and(|(_, until)| *until <= now_ms) {
            self.partition = None;
        }
    }

    /// Drops every message from or to `id` still in flight (its old incarnation is gone).
    pub fn forget(&mut self, id: u64) {
        self.queue.retain(|_, msg| msg.from != id && msg.to != id);
    }

    /// No more faults: partitions end, nothing is lost or duplicated.
    pub fn heal(&mut self) {
        self.partition = None;
        self.loss_per_mille = 0;
        self.duplicate_per_mille = 0;
    }
}
