//! The node thread on the real clock: drain the inbox (group commit: every waiting proposal
//! goes into one Ready, hence one fsync), tick when a tick is due, handle the Ready.
//! This is all the real master adds to the steppable [`Node`]; the simulator drives the same
//! node on a virtual clock instead.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::boot::{new_node, StartError};
use crate::config::RaftConfig;
use crate::handle::{Handle, Inbox};
use crate::node::{answer, Node};
use crate::state_machine::StateMachine;
use crate::store::{LogStore, RaftStore};
use crate::transport::Transport;
use crate::Status;

/// Opens the RocksDB store in `config.data_dir` and starts the node thread. The store must
/// have been bootstrapped ([`bootstrap`]) or be empty and waiting to be sent a snapshot by a
/// leader. Outgoing messages go to `transport`; incoming ones to [`Handle::step`].
pub fn start<S: StateMachine>(
    config: RaftConfig,
    transport: Box<dyn Transport>,
) -> Result<(Handle<S>, JoinHandle<()>), StartError> {
    let store = open(&config, S::TABLES)?;
    let (mut node, handle, inbox) = new_node::<S, RaftStore>(config, store, transport)?;
    node.raw.mut_store().time_syncs(handle.shared.stats.sync_seconds.clone());
    let name = format!("raft-{}", node.node_id());
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || run_or_abort(node, inbox))
        .map_err(StartError::Thread)?;
    Ok((handle, thread))
}

/// Makes a new group in the empty data directory of `config` (see
/// [`bootstrap_store`](crate::boot::bootstrap_store)).
pub fn bootstrap<S: StateMachine>(config: &RaftConfig) -> Result<(), StartError> {
    let mut store = open(config, S::TABLES)?;
    crate::boot::bootstrap_store::<S, RaftStore>(&mut store, config)
}

/// Makes a new group in `config`'s empty data directory starting from `state` (see
/// [`crate::boot::bootstrap_store_with`]).
pub fn bootstrap_with<S: StateMachine>(
    config: &RaftConfig,
    state: S,
    term: u64,
) -> Result<(), StartError> {
    let mut store = open(config, S::TABLES)?;
    crate::boot::bootstrap_store_with::<S, RaftStore>(&mut store, config, state, term)
}

fn open(config: &RaftConfig, tables: &'static [&'static str]) -> Result<RaftStore, StartError> {
    RaftStore::open(&config.data_dir, tables)
        .map_err(|cause| StartError::Store { data_dir: config.data_dir.clone(), cause })
}

/// Runs the node; a panic in it (a broken invariant, or raft-rs meeting a storage error)
/// aborts the process instead of leaving a master that serves reads with a dead Raft thread.
fn run_or_abort<S: StateMachine, L: LogStore>(
    node: Node<S, L>,
    inbox: mpsc::Receiver<Inbox<S::Output>>,
) {
    let node_id = node.node_id();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(node, inbox)));
    if result.is_err() {
        // The panic hook has already printed the message and location.
        crate::fatal(&format!("the raft thread of node {node_id} panicked"));
    }
}

fn run<S: StateMachine, L: LogStore>(
    mut node: Node<S, L>,
    inbox: mpsc::Receiver<Inbox<S::Output>>,
) {
    let tick = Duration::from_millis(node.config.tick_ms);
    let shared = node.shared.clone();
    node.start_clock(shared.now_ms());
    let mut next_tick_ms = shared.now_ms() + node.config.tick_ms;
    node.on_ready();
    while !shared.shutting_down.load(Ordering::Acquire) {
        let wait = match node.has_ready() {
            // Work raft made after the last Ready (a lease round): no waiting.
            true => Duration::ZERO,
            false => Duration::from_millis(next_tick_ms.saturating_sub(shared.now_ms())),
        };
        match inbox.recv_timeout(wait.min(tick)) {
            Ok(item) => take(&mut node, item),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(item) = inbox.try_recv() {
            take(&mut node, item);
        }
        let now_ms = shared.now_ms();
        if now_ms >= next_tick_ms {
            node.tick(now_ms);
            // After a stall, tick once and move on: raft counts ticks, and a burst of them
            // would start an election the stall alone did not justify.
            next_tick_ms = now_ms + node.config.tick_ms;
        }
        node.now_ms = now_ms;
        node.on_ready();
    }
    node.stop();
    while let Ok(item) = inbox.try_recv() {
        match item {
            Inbox::Propose { reply, .. } | Inbox::ChangeMembers { reply, .. } => {
                answer(reply, Err(Status::Unavailable))
            }
            // A dropped snapshot reply tells the waiter the node stopped.
            Inbox::Snapshot { .. }
            | Inbox::Peer { .. }
            | Inbox::SnapshotReport { .. }
            | Inbox::TransferLeader { .. }
            | Inbox::PeerConnected { .. }
            | Inbox::NotMember { .. }
            | Inbox::Wake => {}
        }
    }
    tracing::info!(node = node.node_id(), "raft node stopped");
}

fn take<S: StateMachine, L: LogStore>(node: &mut Node<S, L>, item: Inbox<S::Output>) {
    match item {
        Inbox::Propose { data, reply, _permit } => node.propose(data, reply),
        Inbox::Peer { msg, _permit } => node.step(msg),
        Inbox::SnapshotReport { to, delivered } => node.report_snapshot(to, delivered),
        Inbox::TransferLeader { to } => node.transfer_leader(to),
        Inbox::ChangeMembers { change, command, reply, _permit } => {
            node.change_members(change, command, reply)
        }
        Inbox::Snapshot { index, reply } => node.want_snapshot(index, reply),
        Inbox::PeerConnected { from } => node.peer_connected(from),
        Inbox::NotMember { from, applied_index } => node.heard_not_member(from, applied_index),
        Inbox::Wake => {}
    }
}
