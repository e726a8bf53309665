//! [`MetaHandle`]: the master's way into its Raft node ([`mfsha_raft`]), typed for the
//! metadata: proposals are [`mfsha_meta::Entry`]s, reads see [`mfsha_meta::State`], and the
//! leader hands out fresh inode and chunk ids for the entries it proposes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mfsha_meta::{Entry, Outcome, State};
use mfsha_proto::types::{ChunkId, Ino, Status, Timestamp};
use mfsha_raft::{AppliedEvent, Handle, Leadership, NodeStats, RaftStatus};
use tokio::sync::{broadcast, watch};

/// See the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct MetaHandle {
    raft: Handle<State>,
    next_ino: Arc<AtomicU64>,
    next_chunk_id: Arc<AtomicU64>,
}

impl MetaHandle {
    pub fn new(raft: Handle<State>) -> MetaHandle {
        MetaHandle {
            raft,
            next_ino: Arc::new(AtomicU64::new(0)),
            next_chunk_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The Raft node underneath (peer transport, status).
    pub fn raft(&self) -> &Handle<State> {
        &self.raft
    }

    /// Proposes `entry`. Resolves only after the entry is committed, applied and durable, with
    /// what applying it produced. `Err(NotLeader)` at once if this node does not serve, and
    /// for every pending proposal when leadership is lost; `Err(Unavailable)` while stopping.
    pub async fn propose(&self, entry: Entry) -> Result<Outcome, Status> {
        let data = postcard::to_allocvec(&entry).map_err(|error| {
            tracing::error!(%error, ?entry, "cannot encode a proposal");
            Status::Invalid
        })?;
        self.raft.propose(data).await?
    }

    /// The time to put in a proposal ([`Entry::now`]) and to decide by (trash expiry): this
    /// master's clock, but never before the cluster time it has applied. A new leader whose
    /// clock is behind the old one's thus neither stamps older times nor sees the trash as
    /// younger than it is; apply clamps again (entries proposed before this master applied
    /// its predecessor's last ones), so time never goes backwards across leaders.
    pub fn cluster_now(&self) -> Timestamp {
        Timestamp::now().max(self.read(|state| state.cluster_time()))
    }

    /// Runs `f` on the applied state under a read lock.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.raft.read(f)
    }

    pub fn raft_status(&self) -> RaftStatus {
        self.raft.status()
    }

    /// Role, term and leader, changing when they do.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.raft.leadership()
    }

    /// True while this node leads, is up to date and holds its quorum lease: only then are
    /// reads from [`MetaHandle::read`] current and may it command chunkservers.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// A fresh inode number for a proposal: monotonic, never below `next_free_ino()`. Two
    /// leaders may hand out the same number; apply rejects the second use with `Exists`.
    pub fn alloc_ino(&self) -> Ino {
        let floor = self.read(|state| state.next_free_ino());
        self.next_ino.fetch_max(floor, Ordering::AcqRel);
        self.next_ino.fetch_add(1, Ordering::AcqRel)
    }

    /// A fresh chunk id, like [`MetaHandle::alloc_ino`].
    pub fn alloc_chunk_id(&self) -> ChunkId {
        let floor = self.read(|state| state.next_free_chunk_id());
        self.next_chunk_id.fetch_max(floor, Ordering::AcqRel);
        self.next_chunk_id.fetch_add(1, Ordering::AcqRel)
    }

    /// Every entry applied from now on (postcard-encoded `meta::Entry`s).
    pub fn subscribe_applied(&self) -> broadcast::Receiver<AppliedEvent> {
        self.raft.subscribe_applied()
    }

    /// A snapshot of the applied state and its (index, term), built off the Raft thread if
    /// the latest one is older than what is applied now.
    pub async fn snapshot(&self) -> Result<mfsha_raft::SnapshotBlob, Status> {
        self.raft.snapshot().await
    }

    pub fn stats(&self) -> NodeStats {
        self.raft.stats()
    }

    /// Stops the Raft node after its current Ready.
    pub fn shutdown(&self) {
        self.raft.shutdown()
    }
}
