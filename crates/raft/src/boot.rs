//! Opening a node: check the store's identity, make a new group only when asked, load the
//! state machine, and build the raft-rs `RawNode` with every setting spelled out.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use raft::eraftpb::ConfState;
use raft::RawNode;

use crate::config::RaftConfig;
use crate::handle::{Applied, Handle, Inbox, Shared};
use crate::node::Node;
use crate::slog_tracing::raft_logger;
use crate::state_machine::StateMachine;
use crate::store::{Identity, LogStore, StoreError, BOOTSTRAP_INDEX, BOOTSTRAP_TERM};
use crate::transport::{Reports, Transport};

/// Why a node could not start. Each says which directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid raft settings: {0}; fix the configuration")]
    Config(String),
    #[error("cannot open the store in {data_dir}: {cause}")]
    Store { data_dir: PathBuf, cause: StoreError },
    #[error(
        "the store in {data_dir} belongs to node {stored_node} of cluster {stored_cluster:?}, \
         but the configuration says node {node_id} of cluster {cluster_id:?}; point data_dir at \
         this node's own directory, or fix node_id/cluster_id"
    )]
    Identity {
        data_dir: PathBuf,
        stored_node: u64,
        stored_cluster: String,
        node_id: u64,
        cluster_id: String,
    },
    #[error(
        "the store in {data_dir} already holds a group (cluster {cluster_id:?}); bootstrap makes \
         a new group only in an empty data directory"
    )]
    AlreadyBootstrapped { data_dir: PathBuf, cluster_id: String },
    #[error(
        "the state in {data_dir} does not load: {reason}; run `mfsha meta check` on this \
         directory, or restore it from a replica or a metalogger copy"
    )]
    Load { data_dir: PathBuf, reason: String },
    #[error(
        "raft refused to start node {node_id} on {data_dir}: {cause}; check the raft settings, \
         or restore this data directory from a replica"
    )]
    Raft { node_id: u64, data_dir: PathBuf, cause: raft::Error },
    #[error(
        "node {node_id} was removed from the group (the membership in {data_dir} no longer \
         names it, or another member's no longer did when this node came back after being \
         removed while it was down); to make it a member again, move that directory aside and run `mfsha member \
         add` on the leader"
    )]
    Removed { node_id: u64, data_dir: PathBuf },
    #[error("cannot start the raft thread: {0}; the system is out of threads or memory")]
    Thread(std::io::Error),
}

/// Checks (or, on a new store, records) that the store is this node's of this cluster.
pub fn check_identity<L: LogStore>(store: &mut L, config: &RaftConfig) -> Result<(), StartError> {
    let wanted = Identity { cluster_id: config.cluster_id.clone(), node_id: config.node_id };
    match store.identity() {
        Some(stored) if *stored == wanted => Ok(()),
        Some(stored) => Err(StartError::Identity {
            data_dir: config.data_dir.clone(),
            stored_node: stored.node_id,
            stored_cluster: stored.cluster_id.clone(),
            node_id: config.node_id,
            cluster_id: config.cluster_id.clone(),
        }),
        None => store.set_identity(wanted).map_err(|cause| store_error(config, cause)),
    }
}

/// Makes a new group in an empty store: the state machine's first state at index 1, the
/// configured members as voters and learners. The only way a group comes to be: an empty data
/// directory alone never starts one.
pub fn bootstrap_store<S: StateMachine, L: LogStore>(
    store: &mut L,
    config: &RaftConfig,
) -> Result<(), StartError> {
    bootstrap_store_with(store, config, S::bootstrap(BOOTSTRAP_INDEX), BOOTSTRAP_TERM)
}

/// Makes a new group in an empty store whose first state is `state` at `term` (a restored
/// copy of a lost group's metadata, re-based to [`BOOTSTRAP_INDEX`], and a term above the lost
/// group's): the disaster-restore path.
pub fn bootstrap_store_with<S: StateMachine, L: LogStore>(
    store: &mut L,
    config: &RaftConfig,
    state: S,
    term: u64,
) -> Result<(), StartError> {
    assert_eq!(state.applied_index(), BOOTSTRAP_INDEX, "a new group starts at the bootstrap index");
    config.check().map_err(StartError::Config)?;
    check_identity(store, config)?;
    if store.is_initialized() {
        let data_dir = config.data_dir.clone();
        return Err(StartError::AlreadyBootstrapped {
            data_dir,
            cluster_id: config.cluster_id.clone(),
        });
    }
    let conf_state = ConfState {
        voters: config.voters(),
        learners: config.learners.clone(),
        ..ConfState::default()
    };
    tracing::info!(node = config.node_id, cluster = %config.cluster_id, voters = ?conf_state.voters,
        learners = ?conf_state.learners, "bootstrapping a new group");
    let written = store.bootstrap(conf_state, state.records(), state.to_snapshot(), term);
    written.map_err(|cause| store_error(config, cause))
}

/// Builds a node over `store`: the state loaded, the RawNode made, the handle and the inbox
/// the driver reads.
#[allow(clippy::type_complexity)]
pub(crate) fn new_node<S: StateMachine, L: LogStore>(
    config: RaftConfig,
    mut store: L,
    mut transport: Box<dyn Transport>,
) -> Result<(Node<S, L>, Handle<S>, mpsc::Receiver<Inbox<S::Output>>), StartError> {
    config.check().map_err(StartError::Config)?;
    check_identity(&mut store, &config)?;
    let removed = crate::membership::removes(store.conf_state(), config.node_id);
    if (store.is_initialized() && removed) || store.removed_at().is_some() {
        return Err(StartError::Removed { node_id: config.node_id, data_dir: config.data_dir });
    }
    let applied = load_state::<S, L>(&store, &config)?;
    let snapshot = store.latest_snapshot().map(|s| (s.index, s.term, s.data.clone()));
    let raw = new_raw_node(&config, store)?;
    let (inbox, receiver) = mpsc::channel();
    let shared = Arc::new(Shared::new(&config, applied, inbox));
    *shared.snapshot.lock() = snapshot;
    let handle = Handle { shared: shared.clone() };
    let (snapshots, notices) = (handle.clone(), handle.clone());
    transport.attach(Reports::new(
        move |to, delivered| snapshots.report_snapshot(to, delivered),
        move |from, applied_index| notices.heard_not_member(from, applied_index),
    ));
    let mut node = Node::new(raw, shared, transport, config);
    node.after_membership(None); // the transport learns the stored address book
    Ok((node, handle, receiver))
}

fn store_error(config: &RaftConfig, cause: StoreError) -> StartError {
    StartError::Store { data_dir: config.data_dir.clone(), cause }
}

/// Loads the state machine from its tables and checks it against Raft's state.
fn load_state<S: StateMachine, L: LogStore>(
    store: &L,
    config: &RaftConfig,
) -> Result<Applied<S>, StartError> {
    let data_dir = config.data_dir.clone();
    if !store.is_initialized() {
        tracing::info!(
            node = config.node_id,
            "empty store: waiting for a snapshot from the leader"
        );
        return Ok(Applied { state: S::empty(), term: 0 });
    }
    let records = store.load_table_records().map_err(|cause| store_error(config, cause))?;
    let state = S::load(records)
        .map_err(|reason| StartError::Load { data_dir: data_dir.clone(), reason })?;
    let (index, term) = store.applied();
    if state.applied_index() != index {
        let reason = format!(
            "the tables are at index {} but raft_state says {index}",
            state.applied_index()
        );
        return Err(StartError::Load { data_dir, reason });
    }
    tracing::info!(node = config.node_id, applied = index, term, "state loaded");
    Ok(Applied { state, term })
}

/// raft-rs settings, every one spelled out.
fn raft_config(config: &RaftConfig, applied: u64) -> raft::Config {
    // A witness campaigns only after the masters' whole window has passed, so a master usually
    // wins and no hand-over is needed; it still wins when no master can.
    let (min_election, max_election) = match config.witness {
        false => (config.election_ticks, config.max_election_ticks),
        true => {
            let window = config.max_election_ticks - config.election_ticks;
            (config.max_election_ticks, config.max_election_ticks + window)
        }
    };
    raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        // A leader that cannot reach a quorum steps down within an election timeout, and
        // followers that hear a leader refuse votes: both are what the lease stands on.
        check_quorum: true,
        // A node back from a partition cannot depose a working leader by raising the term.
        pre_vote: true,
        min_election_tick: min_election,
        max_election_tick: max_election,
        read_only_option: raft::ReadOnlyOption::Safe,
        skip_bcast_commit: false,
        batch_append: false,
        priority: 0,
        max_uncommitted_size: 64 << 20,
        max_committed_size_per_ready: 16 << 20,
    }
}

fn new_raw_node<L: LogStore>(config: &RaftConfig, store: L) -> Result<RawNode<L>, StartError> {
    let (applied, _) = store.applied();
    let commit = store.hard_state().commit;
    assert!(applied <= commit, "stored applied {applied} > commit {commit}");
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
