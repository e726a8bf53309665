//! The replication planner: given the metadata's chunk table and the registry, decide what to
//! do next. Pure (no I/O, no clock reads beyond the `now` passed in), so every rule is unit
//! tested on hand-built registries.
//!
//! Per chunk, copies are classified against the metadata's version:
//! * *valid*: right version, not damaged, not on a disk marked for removal — counts toward
//!   the goal;
//! * *readable*: right version, not damaged (valid, or on a marked disk) — may serve reads and
//!   be a replication source;
//! * *invalid*: wrong version or damaged — deleted once a readable copy exists elsewhere.
//!
//! Work is ordered endangered (at most one valid copy) → undergoal → deletions → rebalancing,
//! within per-server limits on replications and deletions in flight. A new copy never goes to
//! a server that holds any copy of the chunk, even a damaged or stale one. Nothing is
//! replicated or deleted until chunkservers had time to register (a copy not yet reported is
//! not a missing copy, and the copies counted so far are not all there are). A chunk with no readable copy keeps its newest undamaged copies under a version
//! number never issued before ([`Action::Renumber`]).

use super::registry::{ChunkCopy, Inner, ServerKey};
use crate::server::CopyHealth;
use mfsha_meta::ChunkInfo;
use mfsha_proto::types::ChunkId;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Pacing and thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub replications_per_server: usize,
    pub deletions_per_server: usize,
    /// Rebalance when the used fraction of the fullest and emptiest server differ by more.
    pub rebalance_threshold: f64,
    /// A write not ended within this long no longer blocks replication of its chunk.
    pub write_lock: Duration,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Replicate {
        chunk: ChunkId,
        version: u32,
        source: ServerKey,
        target: ServerKey,
        why: Why,
    },
    Delete {
        chunk: ChunkId,
        version: u32,
        server: ServerKey,
        why: Why,
    },
    /// No copy has the metadata's version, but some have a newer one (a renumbering that
    /// moved the copies and did not get to record it): record that version.
    AcceptVersion {
        chunk: ChunkId,
        version: u32,
    },
    /// No copy has the metadata's version: give the newest copies there are (`from`, on
    /// `servers`) the never-used version `to`, then record it. A fresh number, because a
    /// server still away may hold a copy at a version between the two with other data.
    Renumber {
        chunk: ChunkId,
        from: u32,
        to: u32,
        servers: Vec<ServerKey>,
    },
}

/// Why an action was chosen (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    Endangered,
    Undergoal,
    WrongVersion,
    Damaged,
    Overgoal,
    Unused,
    Rebalance,
}

/// The result of one planning pass.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub health: CopyHealth,
    /// Servers whose marked-for-removal disks hold no chunk short of its goal elsewhere.
    pub safe_to_remove: HashSet<ServerKey>,
}

/// What the planner is told about the moment.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// When the chunk table was read: copies changed later are left alone this pass.
    pub table_taken: Instant,
    /// Chunkservers had time to register: missing copies are really missing.
    pub ready: bool,
    pub now: Instant,
}

/// Per-chunk classification.
struct Counted<'a> {
    valid: Vec<&'a ChunkCopy>,
    readable: Vec<&'a ChunkCopy>,
    invalid: Vec<&'a ChunkCopy>,
}

fn classify(copies: &[ChunkCopy], version: u32) -> Counted<'_> {
    let mut c = Counted { valid: Vec::new(), readable: Vec::new(), invalid: Vec::new() };
    for copy in copies {
        if copy.damaged || copy.version != version {
            c.invalid.push(copy);
            continue;
        }
        c.readable.push(copy);
        if !copy.marked {
            c.valid.push(copy);
        }
    }
    c
}

/// Work found in the table pass, before it is matched to servers.
#[derive(Default)]
struct Wanted {
    /// (why, chunk, version, copies needed)
    replicate: Vec<(Why, ChunkId, u32, usize)>,
    delete: Vec<(Why, ChunkId, u32, ServerKey)>,
    /// Chunks at exactly their goal, candidates for rebalancing: (chunk, version).
    balanced: Vec<(ChunkId, u32)>,
}

impl Inner {
    /// Plans one pass over `table` (the metadata's chunks).
    pub fn plan(&self, table: &[(ChunkId, ChunkInfo)], at: Moment, limits: &Limits) -> Plan {
        let mut plan = Plan::default();
        let mut wanted = Wanted::default();
        let mut unsafe_servers = HashSet::new();
        let empty = Vec::new();
        for &(chunk, info) in table {
            let copies = self.copies.get(&chunk).unwrap_or(&empty);
            let c = classify(copies, info.version);
            let goal = info.goal.max(1) as usize;
            count_health(&mut plan.health, &c, goal);
            if c.valid.len() < goal && c.readable.iter().any(|x| x.marked) {
                unsafe_servers.extend(c.readable.iter().filter(|x| x.marked).map(|x| x.server));
                plan.health.draining += 1;
            }
            if self.busy(chunk, at.now, limits) || copies.iter().any(|x| x.changed > at.table_taken)
            {
                continue;
            }
            // Until chunkservers had time to register, a copy not yet reported is not a
            // missing copy: count, but change nothing.
            if !at.ready {
                continue;
            }
            if c.readable.is_empty() {
                plan.actions.extend(recover(chunk, info.version, copies));
                continue;
            }
            self.want_for_chunk(&mut wanted, chunk, info.version, goal, &c);
        }
        if at.ready {
            self.want_unused(&mut wanted, table, at.table_taken);
        }
        let mut slots = Slots::new(self, limits);
        wanted.replicate.sort_by_key(|w| w.0);
        for (why, chunk, version, need) in wanted.replicate {
            self.assign_replications(&mut plan.actions, &mut slots, (why, chunk, version), need);
        }
        for (why, chunk, version, server) in wanted.delete {
            if slots.take_deletion(server) {
                plan.actions.push(Action::Delete { chunk, version, server, why });
            }
        }
        if self.replicating.is_empty() && !plan.actions.iter().any(is_replication) {
            self.rebalance(&mut plan.actions, &mut slots, &wanted.balanced, limits);
        }
        plan.safe_to_remove = self
            .servers
            .values()
            .filter(|s| s.disks.iter().any(|d| d.marked_for_removal))
            .map(|s| s.key)
            .filter(|k| !unsafe_servers.contains(k))
            .collect();
        plan
    }

    fn busy(&self, chunk: ChunkId, now: Instant, limits: &Limits) -> bool {
        let writing = self
            .writing
            .get(&chunk)
            .is_some_and(|since| now.duration_since(*since) < limits.write_lock);
        writing
            || self.reported_written(chunk, now)
            || self.proposing.contains(&chunk)
            || self.replicating.contains_key(&chunk)
    }

    fn want_for_chunk(
        &self,
        wanted: &mut Wanted,
        chunk: ChunkId,
        version: u32,
        goal: usize,
        c: &Counted,
    ) {
        for copy in &c.invalid {
            let why = if copy.damaged { Why::Damaged } else { Why::WrongVersion };
            wanted.delete.push((why, chunk, copy.version, copy.server));
        }
        let valid = c.valid.len();
        if valid < goal {
            let why = if valid <= 1 { Why::Endangered } else { Why::Undergoal };
            wanted.replicate.push((why, chunk, version, goal - valid));
        } else if valid > goal {
            // Fullest server first (to the percent: servers sharing a filesystem report
            // slightly different figures); among equals the newest copy, so a server that
            // just came back loses its surplus copies rather than a long-standing one.
            let mut by_usage: Vec<&&ChunkCopy> = c.valid.iter().collect();
            by_usage.sort_by_key(|c| {
                (std::cmp::Reverse(self.usage_percent(c.server)), std::cmp::Reverse(c.changed))
            });
            for copy in by_usage.into_iter().take(valid - goal) {
                wanted.delete.push((Why::Overgoal, chunk, version, copy.server));
            }
        } else if c.readable.len() == valid {
            wanted.balanced.push((chunk, version));
        }
    }

    /// Copies of chunks the metadata no longer has (files purged from the trash).
    fn want_unused(&self, wanted: &mut Wanted, table: &[(ChunkId, ChunkInfo)], taken: Instant) {
        let known: HashSet<ChunkId> = table.iter().map(|(id, _)| *id).collect();
        for (chunk, copies) in &self.copies {
            if known.contains(chunk)
                || self.writing.contains_key(chunk)
                || self.reported_written(*chunk, taken)
            {
                continue;
            }
            for copy in copies.iter().filter(|c| c.changed <= taken) {
                wanted.delete.push((Why::Unused, *chunk, copy.version, copy.server));
            }
        }
    }

    fn usage_percent(&self, server: ServerKey) -> u32 {
        let usage = self.servers.get(&server).map(|s| s.usage()).unwrap_or(1.0);
        (usage * 100.0) as u32
    }

    /// Matches up to `need` replications of one chunk with sources and targets.
    fn assign_replications(
        &self,
        actions: &mut Vec<Action>,
        slots: &mut Slots,
        (why, chunk, version): (Why, ChunkId, u32),
        need: usize,
    ) {
        let copies = &self.copies[&chunk];
        // A server holding any copy (even a damaged or stale one) is no target: the new copy
        // belongs on another machine, and the bad one is deleted by its own rule.
        let holders: HashSet<ServerKey> = copies.iter().map(|c| c.server).collect();
        let mut chosen = HashSet::new();
        for _ in 0..need {
            let source = copies
                .iter()
                .filter(|c| c.version == version && !c.damaged)
                .filter(|c| self.servers.get(&c.server).is_some_and(|s| s.registered))
                .map(|c| c.server)
                .filter(|k| slots.replication_free(*k))
                .min_by_key(|k| slots.replications(*k));
            let target = self.pick_target(slots, |k| !holders.contains(&k) && !chosen.contains(&k));
            let (Some(source), Some(target)) = (source, target) else { return };
            slots.take_replication(source);
            slots.take_replication(target);
            chosen.insert(target);
            actions.push(Action::Replicate { chunk, version, source, target, why });
        }
    }

    /// The least used server that takes new chunks, has a free replication slot and passes
    /// `allowed`.
    fn pick_target(&self, slots: &Slots, allowed: impl Fn(ServerKey) -> bool) -> Option<ServerKey> {
        self.servers
            .values()
            .filter(|s| s.takes_new_chunks() && allowed(s.key) && slots.replication_free(s.key))
            .min_by(|a, b| a.usage().total_cmp(&b.usage()).then(a.copies.cmp(&b.copies)))
            .map(|s| s.key)
    }

    /// Moves chunks from the fullest to the emptiest server when their usage differs by more
    /// than the threshold: replicate there; the overgoal rule then deletes from the fullest.
    fn rebalance(
        &self,
        actions: &mut Vec<Action>,
        slots: &mut Slots,
        balanced: &[(ChunkId, u32)],
        limits: &Limits,
    ) {
        let servers: Vec<_> = self.servers.values().filter(|s| s.takes_new_chunks()).collect();
        let Some(full) = servers.iter().max_by(|a, b| a.usage().total_cmp(&b.usage())) else {
            return;
        };
        let Some(empty) = servers.iter().min_by(|a, b| a.usage().total_cmp(&b.usage())) else {
            return;
        };
        if full.usage() - empty.usage() <= limits.rebalance_threshold {
            return;
        }
        for &(chunk, version) in balanced {
            if !slots.replication_free(full.key) || !slots.replication_free(empty.key) {
                return;
            }
            let copies = &self.copies[&chunk];
            let on = |k: ServerKey| copies.iter().any(|c| c.server == k);
            if on(full.key) && !on(empty.key) {
                slots.take_replication(full.key);
                slots.take_replication(empty.key);
                let (source, target) = (full.key, empty.key);
                actions.push(Action::Replicate {
                    chunk,
                    version,
                    source,
                    target,
                    why: Why::Rebalance,
                });
            }
        }
    }
}

fn is_replication(a: &Action) -> bool {
    matches!(a, Action::Replicate { .. })
}

/// What to do for a chunk none of whose copies has the metadata's `version`: take the
/// newest undamaged copies rather than lose the chunk (nothing if every copy is damaged).
fn recover(chunk: ChunkId, version: u32, copies: &[ChunkCopy]) -> Option<Action> {
    let newest = copies.iter().filter(|c| !c.damaged).map(|c| c.version).max()?;
    if newest > version {
        return Some(Action::AcceptVersion { chunk, version: newest });
    }
    let servers = copies.iter().filter(|c| !c.damaged && c.version == newest).map(|c| c.server);
    let to = version.checked_add(1)?;
    Some(Action::Renumber { chunk, from: newest, to, servers: servers.collect() })
}

fn count_health(health: &mut CopyHealth, c: &Counted, goal: usize) {
    let valid = c.valid.len();
    let (row, column) = mfsha_proto::client::matrix_cell(goal, valid);
    health.matrix[row][column] += 1;
    if c.readable.is_empty() {
        health.missing += 1;
        return;
    }
    if valid < goal {
        health.undergoal += 1;
        if valid <= 1 {
            health.endangered += 1;
        }
    } else if valid > goal {
        health.overgoal += 1;
    } else {
        health.stable += 1;
    }
}

/// Replication and deletion slots per server for this pass, starting from what is in flight.
struct Slots {
    used: HashMap<ServerKey, (usize, usize)>,
    limits: Limits,
}

impl Slots {
    fn new(inner: &Inner, limits: &Limits) -> Slots {
        let used = inner.servers.values().map(|s| (s.key, (s.replications, s.deletions))).collect();
        Slots { used, limits: *limits }
    }

    fn replications(&self, k: ServerKey) -> usize {
        self.used.get(&k).map(|u| u.0).unwrap_or(usize::MAX)
    }

    fn replication_free(&self, k: ServerKey) -> bool {
        self.replications(k) < self.limits.replications_per_server
    }

    fn take_replication(&mut self, k: ServerKey) {
        if let Some(u) = self.used.get_mut(&k) {
            u.0 += 1;
        }
    }

    fn take_deletion(&mut self, k: ServerKey) -> bool {
        match self.used.get_mut(&k) {
            Some(u) if u.1 < self.limits.deletions_per_server => {
                u.1 += 1;
                true
            }
            _ => false,
        }
    }
}
