/*!
mfsha's Raft node: one member of the group that replicates the metadata changelog, laid out
as etcd's raftexample is.

| file | job |
|---|---|
| [`node`](Node) | the Ready loop, and what feeds it: tick, step, propose |
| `apply.rs` | committed entries through the [`StateMachine`], one batch with the applied index |
| `snapshot.rs` | install the leader's snapshot; take our own (built off this thread) and compact the log |
| `membership.rs` | one member added or removed at a time, with the address book's command |
| `lease.rs` | the leader's lease: how long it may serve without asking the quorum |
| `boot.rs` | identity check, explicit bootstrap, loading state, the raft-rs settings |
| [`driver`] | the node thread on the real clock |
| [`Handle`] | proposals, reads, status and peer messages from everyone else |
| [`store`] | the [`LogStore`] contract; RocksDB ([`RaftStore`]) and in-memory ([`MemStore`]) |
| [`transport`] | the [`Transport`] contract; the TCP peer port with streamed snapshots |
| [`sim`] | a deterministic simulator of a whole group over a faulty network |
| [`metrics`] | the node's Prometheus metrics (`mfsha_raft_*`), read from the [`Handle`] at scrape time |

The node knows what it replicates only through [`StateMachine`] (apply, snapshot, restore);
`meta_machine.rs` is the one file that names the metadata crate. It never imports the
client, chunkserver or logger services: the master and the witness logger both embed it.

# The Ready loop

[`Node::on_ready`] handles one raft-rs `Ready` in the order the raft-rs docs require:

1. take the Ready;
2. send `messages()` (a leader replicates while it persists);
3. install a snapshot, before any entries or hard state;
4. a leader applies committed entries (they are already durable), so its proposers hear
   back before the next fsync;
5. append entries and hard state in one write, synced when `must_sync()`;
6. only then send `persisted_messages()` (votes and acks must not leave before the fsync;
   a follower's heartbeat responses, which claim nothing about its log, leave before it when
   the Ready changes neither term nor vote, so a slow disk does not lapse the leader's lease);
   a follower applies its committed entries after that, so its acknowledgement (on which
   the leader's commit waits) does not wait for them;
7. advance, then send and apply what the light ready holds, and `advance_apply`;
8. record a snapshot whose build has ended and compact the log behind it; start a build when
   enough has been applied. The store builds the blob from a consistent view of its tables on
   a thread of its own and syncs its file ([`LogStore::start_snapshot`]); this thread only
   records it ([`LogStore::finish_snapshot`]), so a namespace of millions of files never
   stalls heartbeats or the state lock.

A storage error leaves raft-rs inoperable, so it ends the process ([`fatal`]): a restart
recovers from the synced log. A committed entry or a leader's snapshot that this build cannot
read is different: a restart would read the same bytes again, so the node stops for good
([`halt`], exit status [`EXIT_NEEDS_OPERATOR`], which the systemd units do not restart on)
with the index and what to do, and nothing of what it could not read is applied or stored.

# Time

The node never reads a clock. Its driver passes the local time into [`Node::tick`]; the real
driver uses a monotonic clock, the simulator a virtual one per node (with skew). That is what
makes a simulated run replay exactly from its seed.
*/

mod apply;
mod boot;
mod config;
pub mod driver;
mod handle;
mod lease;
mod lifecycle;
mod membership;
mod meta_machine;
pub mod metrics;
mod node;
pub mod sim;
mod slog_tracing;
mod snapshot;
mod state_machine;
pub mod store;
pub mod transport;

pub use boot::{bootstrap_store, check_identity, StartError};
pub use config::{check_voters, Members, RaftConfig, RaftTiming};
pub use handle::{
    AppliedEvent, Handle, Leadership, NodeStats, PeerProgress, RaftStatus, Role, SnapshotBlob,
    MAX_PEER_MESSAGE_BYTES,
};
pub use lifecycle::Shutdown;
pub use membership::MemberChange;
pub use node::{Node, Reply};
pub use state_machine::{SnapshotEncoder, StateMachine};
pub use store::{LogStore, MemStore, RaftStore};
pub use transport::{NoPeers, Reports, Transport};

/// Errors a proposer can get, shared with the wire protocol so they reach clients as is.
pub use mfsha_proto::types::Status;

/// Exit status of a node that [`halt`]ed: `EX_DATAERR` of sysexits.h. The systemd units list
/// it in `RestartPreventExitStatus=`.
pub const EXIT_NEEDS_OPERATOR: i32 = 65;

/// Stops this node for good, without the restart loop [`fatal`] would start: for data the
/// node must not skip and cannot read (a committed entry, a leader's snapshot, a membership
/// change), which a restart would only read again. `message` says which index and what to do.
pub fn halt(message: &str) -> ! {
    tracing::error!(
        "STOPPED: {message}; exiting with status {EXIT_NEEDS_OPERATOR} (not restarted)"
    );
    eprintln!(
        "mfsha STOPPED: {message}; exiting with status {EXIT_NEEDS_OPERATOR}, which systemd \
         does not restart"
    );
    // `_exit`, not `exit`: RocksDB's static destructors must not run under threads of this
    // process that still use it. Everything acknowledged is in the synced log already.
    // SAFETY: `_exit` ends the process at once; nothing in this process runs after it.
    unsafe { libc::_exit(EXIT_NEEDS_OPERATOR) }
}

/// A broken invariant in storage or apply: say where, then crash; a restart recovers from
/// the synced log. Never returns.
pub fn fatal(message: &str) -> ! {
    tracing::error!("FATAL: {message}; aborting, restart the node to recover");
    eprintln!("mfsha FATAL: {message}; aborting, restart to recover");
    std::process::abort()
}
