//! Carrying raft messages between nodes.
//!
//! * [`Transport`] — what the node needs: `send` without blocking, and a place to report what
//!   became of a snapshot and that a member no longer counts this node as one.
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
    /// (delivered and stepped by the receiver, or failed), and a member's notice that its
    /// membership leaves this node out. A transport that never loses a snapshot may ignore
    /// it; one that reports must report every snapshot exactly once.
    fn attach(&mut self, _reports: Reports) {}

    /// The members' peer addresses as the replicated address book holds them (this node
    /// excluded), after every membership change and snapshot. Addresses the transport was
    /// started with stay as they are; the book adds the members that joined since.
    fn learn_peers(&mut self, _peers: &[(u64, String)]) {}
}

/// Where a transport reports to the node: snapshot outcomes `(to, delivered)`, and
/// not-a-member notices `(from, applied_index)` (see `Handle::removal_notice_for`).
#[derive(Clone)]
pub struct Reports {
    snapshot: Arc<dyn Fn(u64, bool) + Send + Sync>,
    not_member: Arc<dyn Fn(u64, u64) + Send + Sync>,
}

impl Reports {
    pub fn new(
        snapshot: impl Fn(u64, bool) + Send + Sync + 'static,
        not_member: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Reports {
        Reports { snapshot: Arc::new(snapshot), not_member: Arc::new(not_member) }
    }

    pub fn snapshot(&self, to: u64, delivered: bool) {
        (self.snapshot)(to, delivered)
    }

    pub fn not_member(&self, from: u64, applied_index: u64) {
        (self.not_member)(from, applied_index)
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
