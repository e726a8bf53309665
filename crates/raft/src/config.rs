//! [`RaftConfig`]: the settings of one node, checked before anything starts.

use serde::Deserialize;
use std::path::PathBuf;

/// Raft settings of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id: unique in the group, never 0.
    pub node_id: u64,
    /// The cluster this node belongs to; stored in the data directory at first start and
    /// checked on every peer handshake.
    pub cluster_id: String,
    /// RocksDB lives in `data_dir/meta.rocksdb`, snapshots in `data_dir/snapshots`.
    pub data_dir: PathBuf,
    /// The other members: (id, "host:port" of their peer port).
    pub peers: Vec<(u64, String)>,
    /// Members (self or peers) that join a bootstrapped group as non-voting learners.
    pub learners: Vec<u64>,
    pub tick_ms: u64,
    /// Election timeout in ticks: a follower that hears nothing from a leader for a random time
    /// in `[election_ticks, max_election_ticks)` campaigns.
    pub election_ticks: usize,
    /// Upper end (exclusive) of the randomised election timeout, in ticks.
    pub max_election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// The most two nodes' clocks may run apart, in percent; shortens the leader's lease.
    pub max_clock_drift_percent: u64,
    /// Take a snapshot and compact when `applied - last snapshot` reaches this.
    pub snapshot_every_entries: u64,
    /// Entries kept behind the snapshot for slow followers.
    pub log_tail_entries: u64,
    /// A witness votes and stores the log but never stays leader: when it wins an election
    /// it hands leadership to the first voter that is fully caught up.
    pub witness: bool,
}

impl RaftConfig {
    /// A single node (node 1 of cluster "test") with the usual timings.
    pub fn single(data_dir: PathBuf) -> RaftConfig {
        RaftConfig {
            node_id: 1,
            cluster_id: "test".into(),
            data_dir,
            peers: Vec::new(),
            learners: Vec::new(),
            tick_ms: 50,
            election_ticks: 6,
            max_election_ticks: 10,
            heartbeat_ticks: 1,
            max_clock_drift_percent: 5,
            snapshot_every_entries: 100_000,
            log_tail_entries: 10_000,
            witness: false,
        }
    }

    /// Every member id, sorted.
    pub fn members(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.iter().map(|(id, _)| *id).collect();
        ids.push(self.node_id);
        ids.sort_unstable();
        ids
    }

    /// The voting members of a group bootstrapped from this configuration.
    pub fn voters(&self) -> Vec<u64> {
        self.members().into_iter().filter(|id| !self.learners.contains(id)).collect()
    }

    /// How long a leader may serve after a quorum acknowledged a heartbeat round, in ms.
    ///
    /// A follower that heard the leader at time t refuses votes until its election timeout
    /// (`election_ticks`) has passed on its own clock: at least `election_ticks - 1` whole ticks
    /// after t (the first tick may come at once). The round was sent before t, so a lease of
    /// that long, shortened twice by the drift (the leader's clock slow, the follower's fast),
    /// ends before any other node can win an election.
    pub fn lease_ms(&self) -> u64 {
        let promise_ms = (self.election_ticks as u64 - 1) * self.tick_ms;
        promise_ms * (100 - 2 * self.max_clock_drift_percent) / 100
    }

    /// A follower's election timeout, in ms: how long it waits to hear from a leader before it
    /// campaigns (the shortest one raft-rs picks).
    pub fn election_timeout_ms(&self) -> u64 {
        self.election_ticks as u64 * self.tick_ms
    }

    /// The timing part of these settings.
    pub fn timing(&self) -> RaftTiming {
        RaftTiming {
            tick_ms: self.tick_ms,
            election_ticks: self.election_ticks,
            max_election_ticks: self.max_election_ticks,
            heartbeat_ticks: self.heartbeat_ticks,
            max_clock_drift_percent: self.max_clock_drift_percent,
            snapshot_every_entries: self.snapshot_every_entries,
            log_tail_entries: self.log_tail_entries,
        }
    }

    /// The checks raft-rs does not make, with what to fix.
    pub fn check(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must not be 0".into());
        }
        if self.cluster_id.is_empty() {
            return Err("cluster_id must not be empty".into());
        }
        let members = self.members();
        if members.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(format!("node ids must be unique, got {members:?}"));
        }
        self.timing().validate()?;
        check_voters(&self.voters())
    }
}

/// Two voters are the one size Raft cannot make safe and available: a majority of two is both,
/// so losing either stops the group, and the pair is no better than one node.
pub fn check_voters(voters: &[u64]) -> Result<(), String> {
    match voters.len() {
        0 => Err("the group has no voting member".into()),
        2 => Err(format!(
            "a group of exactly two voters ({voters:?}) stops when either fails: add a third \
             voter (the metalogger as witness: two masters + witness is the default appliance), \
             or run one master"
        )),
        _ => Ok(()),
    }
}

/// Raft timing. A follower campaigns after hearing nothing for a random time in
/// `[tick_ms * election_ticks, tick_ms * max_election_ticks)`; it must comfortably exceed the
/// heartbeat and an fsync. The defaults detect a dead leader in 250-400 ms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTiming {
    /// One Raft clock tick in milliseconds. Default 50.
    pub tick_ms: u64,
    /// Ticks without a heartbeat before a follower may campaign. Default 5 (250 ms).
    pub election_ticks: usize,
    /// Upper end (exclusive) of the randomised election timeout. Default 8 (400 ms).
    pub max_election_ticks: usize,
    /// Ticks between leader heartbeats. Default 1 (50 ms). Must be below `election_ticks - 1`.
    pub heartbeat_ticks: usize,
    /// How far apart two nodes' clocks may run, in percent; shortens the leader's lease.
    /// Default 5.
    pub max_clock_drift_percent: u64,
    /// Take a state-machine snapshot after this many applied entries. Default 100000.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot for slow followers. Default 10000.
    pub log_tail_entries: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            tick_ms: 50,
            election_ticks: 5,
            max_election_ticks: 8,
            heartbeat_ticks: 1,
            max_clock_drift_percent: 5,
            snapshot_every_entries: 100_000,
            log_tail_entries: 10_000,
        }
    }
}

impl RaftTiming {
    /// Checks the relationships between the values; the error names the field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 || self.tick_ms > 60_000 {
            return Err(format!("tick_ms {} is outside 1..=60000", self.tick_ms));
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks + 1 >= self.election_ticks {
            return Err(format!(
                "heartbeat_ticks {} must be at least 1 and less than election_ticks - 1 ({})",
                self.heartbeat_ticks,
                self.election_ticks.saturating_sub(1)
            ));
        }
        if self.max_election_ticks <= self.election_ticks {
            return Err(format!(
                "max_election_ticks {} must be above election_ticks ({})",
                self.max_election_ticks, self.election_ticks
            ));
        }
        if self.max_clock_drift_percent >= 25 {
            return Err("max_clock_drift_percent must be below 25".into());
        }
        if self.snapshot_every_entries == 0 {
            return Err("snapshot_every_entries must be at least 1".into());
        }
        Ok(())
    }
}

/// The members of a group besides this node: (id, peer address), and which are learners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub peers: Vec<(u64, String)>,
    pub learners: Vec<u64>,
}

impl RaftConfig {
    /// A node's settings from the parts a daemon's configuration file gives.
    pub fn new(
        node_id: u64,
        cluster_id: &str,
        data_dir: PathBuf,
        members: Members,
        timing: &RaftTiming,
        witness: bool,
    ) -> RaftConfig {
        RaftConfig {
            node_id,
            cluster_id: cluster_id.to_string(),
            data_dir,
            peers: members.peers,
            learners: members.learners,
            tick_ms: timing.tick_ms,
            election_ticks: timing.election_ticks,
            max_election_ticks: timing.max_election_ticks,
            heartbeat_ticks: timing.heartbeat_ticks,
            max_clock_drift_percent: timing.max_clock_drift_percent,
            snapshot_every_entries: timing.snapshot_every_entries,
            log_tail_entries: timing.log_tail_entries,
            witness,
        }
    }
}
