//! Carrying raft messages between nodes.
//!
//! * [`Transport`] — what the node needs: `send` without blocking, and a place to report what
//!   became of a snapshot.
//! * [`tcp`] — the peer port (9423): one connection per peer for ordinary messages, and a
//!   connection of its own for each snapshot, streamed in bounded parts, so heartbeats and
//!   votes never queue behind a snapshot.

pub mod tcp;
pub mod transfers;

use raft::eraftpb::Message;
use std::sync::Arc;

/// Outgoing raft messages. The node calls `send` from its own thread, so it must not block:
/// queue and return. Lost messages are fine; raft resends.
pub trait Transport: Send + 'static {
    fn send(&mut self, msg: Message);

    /// Called once before the first `send`: where to report the fate of each `MsgSnapshot`
    /// (delivered and stepped by the receiver, or failed). A transport that never loses a
    /// snapshot may ignore it; one that reports must report every snapshot exactly once.
    fn attach(&mut self, _reports: SnapshotReports) {}

    /// The members' peer addresses as the replicated address book holds them (this node
    /// excluded), after every membership change and snapshot. Addresses the transport was
    /// started with stay as they are; the book adds the members that joined since.
    fn learn_peers(&mut self, _peers: &[(u64, String)]) {}
}

/// Where a transport reports snapshot outcomes: `(to, delivered)`.
#[derive(Clone)]
pub struct SnapshotReports(Arc<dyn Fn(u64, bool) + Send + Sync>);

impl SnapshotReports {
    pub fn new(report: impl Fn(u64, bool) + Send + Sync + 'static) -> SnapshotReports {
        SnapshotReports(Arc::new(report))
    }

    pub fn report(&self, to: u64, delivered: bool) {
        (self.0)(to, delivered)
    }
}

/// The transport of a group of one: there is nobody to send to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&mut self, msg: Message) {
        tracing::error!(to = msg.to, kind = ?msg.get_msg_type(), "a group of one has no peers; \
            raft message dropped (is `peers` missing from the configuration?)");
    }
}
