//! The node's Prometheus metrics (`mfsha_raft_*`), read from [`Handle`] at scrape time:
//! role, term, indexes, the leader's view of each member, and the node's counters. Shared by
//! every daemon that embeds a node (the master, the witness logger).

use crate::handle::{Handle, Role};
use crate::state_machine::StateMachine;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
};

const ROLES: [Role; 4] = [Role::Leader, Role::Follower, Role::Candidate, Role::PreCandidate];

/// A latency histogram in seconds, 50 µs to about 6.5 s (the buckets every mfsha daemon uses).
pub(crate) fn histogram(name: &str, help: &str) -> Histogram {
    let buckets = prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets");
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid name")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("a valid metric name")
}

fn peer_gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["peer"]).expect("a valid metric name")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("a valid metric name")
}

struct Gauges {
    role: IntGaugeVec,
    node_id: IntGauge,
    leader_id: IntGauge,
    term: IntGauge,
    commit: IntGauge,
    applied: IntGauge,
    serving: IntGauge,
    peer_matched: IntGaugeVec,
    peer_lag: IntGaugeVec,
    peer_contact: GaugeVec,
}

struct Counters {
    ready_batches: IntCounter,
    entries_applied: IntCounter,
    syncs: IntCounter,
    proposals: IntCounter,
    snapshots: IntCounter,
    snapshots_installed: IntCounter,
    leader_changes: IntCounter,
    lease_lapses: IntCounter,
}

/// Registers the node's metrics in `registry`; returns what refreshes them from `handle`
/// (call it before each gather).
pub fn register<S: StateMachine>(
    handle: &Handle<S>,
    registry: &Registry,
) -> prometheus::Result<impl Fn() + Send + Sync + 'static> {
    let g = Gauges {
        role: IntGaugeVec::new(
            Opts::new("mfsha_raft_role", "1 for this node's current Raft role, 0 for the others."),
            &["role"],
        )?,
        node_id: gauge("mfsha_raft_node_id", "This node's Raft id."),
        leader_id: gauge("mfsha_raft_leader_id", "The leader this node knows of; 0 if none."),
        term: gauge("mfsha_raft_term", "This node's current Raft term."),
        commit: gauge("mfsha_raft_commit_index", "Highest log index known committed."),
        applied: gauge("mfsha_raft_applied_index", "Highest log index applied to the state."),
        serving: gauge(
            "mfsha_raft_serving",
            "1 while this node leads, has applied its term's first entry and holds its lease.",
        ),
        peer_matched: peer_gauge(
            "mfsha_raft_peer_matched_index",
            "Leader only: highest log index known to be on each member (itself included).",
        ),
        peer_lag: peer_gauge(
            "mfsha_raft_peer_lag_entries",
            "Leader only: entries each member is behind the leader's log.",
        ),
        peer_contact: GaugeVec::new(
            Opts::new(
                "mfsha_raft_peer_last_contact_seconds",
                "Leader only: how long ago the leader last heard from each member (good to \
                 one election timeout); absent before the first contact.",
            ),
            &["peer"],
        )?,
    };
    let c = Counters {
        ready_batches: counter("mfsha_raft_ready_batches_total", "Raft Readys handled."),
        entries_applied: counter("mfsha_raft_entries_applied_total", "Entries applied."),
        syncs: counter("mfsha_raft_log_syncs_total", "Synced writes of the Raft log."),
        proposals: counter("mfsha_raft_proposals_total", "Proposals handed to Raft."),
        snapshots: counter("mfsha_raft_snapshots_taken_total", "Snapshots this node took."),
        snapshots_installed: counter(
            "mfsha_raft_snapshots_installed_total",
            "Snapshots received from a leader and installed.",
        ),
        leader_changes: counter(
            "mfsha_raft_leader_changes_total",
            "Times the leader this node knows of changed to another node.",
        ),
        lease_lapses: counter(
            "mfsha_raft_lease_lapses_total",
            "Times this node's lease ran out while it led and was renewed later in the same \
             term: its Raft thread or its quorum was late (clients waited; a busy machine).",
        ),
    };
    for gauge in [&g.node_id, &g.leader_id, &g.term, &g.commit, &g.applied, &g.serving] {
        registry.register(Box::new(gauge.clone()))?;
    }
    for vec in [&g.role, &g.peer_matched, &g.peer_lag] {
        registry.register(Box::new(vec.clone()))?;
    }
    registry.register(Box::new(g.peer_contact.clone()))?;
    for counter in [
        &c.ready_batches,
        &c.entries_applied,
        &c.syncs,
        &c.proposals,
        &c.snapshots,
        &c.snapshots_installed,
        &c.leader_changes,
        &c.lease_lapses,
    ] {
        registry.register(Box::new(counter.clone()))?;
    }
    for histogram in handle.latency_histograms() {
        registry.register(Box::new(histogram))?;
    }
    let handle = handle.clone();
    Ok(move || {
        refresh_gauges(&handle, &g);
        refresh_counters(&handle, &c);
    })
}

fn refresh_gauges<S: StateMachine>(handle: &Handle<S>, g: &Gauges) {
    let status = handle.status();
    for role in ROLES {
        g.role.with_label_values(&[role.as_str()]).set((role == status.role) as i64);
    }
    g.node_id.set(status.node_id as i64);
    g.leader_id.set(status.leader_id as i64);
    g.term.set(status.term as i64);
    g.commit.set(status.commit_index as i64);
    g.applied.set(status.applied_index as i64);
    g.serving.set(handle.is_leader() as i64);
    // Members come and go (membership changes, losing the lead): start from nothing.
    g.peer_matched.reset();
    g.peer_lag.reset();
    g.peer_contact.reset();
    let progress = handle.progress();
    let own_last = progress.iter().find(|p| p.id == status.node_id).map_or(0, |p| p.matched);
    for peer in progress {
        let id = peer.id.to_string();
        g.peer_matched.with_label_values(&[&id]).set(peer.matched as i64);
        g.peer_lag.with_label_values(&[&id]).set(own_last.saturating_sub(peer.matched) as i64);
        if let Some(ms) = peer.last_contact_ms {
            g.peer_contact.with_label_values(&[&id]).set(ms as f64 / 1000.0);
        }
    }
}

fn refresh_counters<S: StateMachine>(handle: &Handle<S>, c: &Counters) {
    let stats = handle.stats();
    let mirror = |counter: &IntCounter, total: u64| {
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    };
    mirror(&c.ready_batches, stats.ready_batches);
    mirror(&c.entries_applied, stats.entries_applied);
    mirror(&c.syncs, stats.syncs);
    mirror(&c.proposals, stats.proposals);
    mirror(&c.snapshots, stats.snapshots);
    mirror(&c.snapshots_installed, stats.snapshots_installed);
    mirror(&c.leader_changes, stats.leader_changes);
    mirror(&c.lease_lapses, stats.lease_lapses);
}
