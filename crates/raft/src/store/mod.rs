//! The node's durable store, behind one trait so that the same Ready loop runs on RocksDB in a
//! master and on an in-memory store that models fsync in the simulator.
//!
//! * [`rocks`] — [`RaftStore`]: the Raft log, hard and conf state, snapshot metadata and the
//!   state machine's tables in one RocksDB instance (`DATA_DIR/meta.rocksdb`), snapshot blobs
//!   beside it.
//! * [`mem`] — [`MemStore`]: the same contract in memory; a write is durable only once a synced
//!   write has followed it, and [`MemStore::crash`] drops everything that was not.
//!
//! Durability contract shared by both (the node relies on it, the simulator checks it): a
//! synced write makes itself *and every earlier logged write* durable, in order, as RocksDB's
//! write-ahead log does; unsynced writes may be lost in a crash, newest first. Apply batches
//! are not logged: they become durable only when a snapshot build flushes the store, and a
//! crash before that loses them (never part of one).

mod mem;
mod rocks;

pub use mem::MemStore;
pub use rocks::{
    hard_state_term, log_key, seal, unseal, RaftStore, StateKey, CF_RAFT_LOG, CF_RAFT_STATE,
    DB_DIR_NAME, SNAPSHOT_DIR_NAME,
};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::state_machine::SnapshotEncoder;

/// The index and term of the bootstrap snapshot of a new group: raft-rs starts a group from a
/// snapshot at index 1 so that a follower with an empty log catches up by snapshot.
pub const BOOTSTRAP_INDEX: u64 = 1;
pub const BOOTSTRAP_TERM: u64 = 1;

/// A record of a state machine table: (table, key, value).
pub type TableRecord = (&'static str, Vec<u8>, Vec<u8>);
/// Hands every record of a state to the function it is given, one at a time (see
/// [`crate::StateMachine::visit_records`]): installing a snapshot of millions of records
/// writes them into the batch without a list of them all beside it.
pub type RecordSource<'a> = &'a dyn Fn(&mut RecordVisit<'_>);

/// Takes one record: (table, key, value).
pub type RecordVisit<'a> = dyn FnMut(&'static str, &[u8], &[u8]) + 'a;

/// Every record of `records` as a [`RecordSource`] would give them.
pub fn visit_list(records: &[TableRecord], visit: &mut RecordVisit<'_>) {
    for (table, key, value) in records {
        visit(table, key, value);
    }
}

/// A change to a state machine table: (table, key, new value or `None` to delete).
pub type TableChange = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// Which cluster a store belongs to and which member it is. Written once, when the store
/// first joins or bootstraps a group; a store whose identity differs from the configuration
/// refuses to start (a data directory copied to the wrong node would otherwise vote twice).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: u64,
}

/// Everything that applying a run of committed entries changes, written in one batch.
#[derive(Debug, Default)]
pub struct ApplyBatch {
    pub changes: Vec<TableChange>,
    pub applied_index: u64,
    pub applied_term: u64,
    /// The ConfState after a conf change in this run, if any.
    pub conf_state: Option<ConfState>,
}

/// One snapshot: Raft metadata plus the state machine blob.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    /// Shared, never copied: it may be hundreds of MiB, and the Raft message, the cache for
    /// metaloggers and the store all hold it at once.
    pub data: bytes::Bytes,
}

impl StoredSnapshot {
    /// The Raft message form of this snapshot. The blob is shared, not copied: raft-rs asks
    /// for it every time it sends a snapshot, and it may be hundreds of MiB.
    pub fn to_raft(&self) -> Snapshot {
        let mut metadata =
            SnapshotMetadata { index: self.index, term: self.term, ..SnapshotMetadata::default() };
        metadata.set_conf_state(self.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = self.data.clone();
        snapshot
    }
}

/// A snapshot whose file is written and synced but that the store does not point at yet
/// ([`LogStore::finish_snapshot`] does that).
#[derive(Debug)]
pub struct BuiltSnapshot {
    pub snapshot: StoredSnapshot,
    /// The file's name in the snapshot directory (empty for the in-memory store).
    pub file: String,
}

/// A snapshot being built by [`LogStore::start_snapshot`].
#[derive(Debug)]
pub enum SnapshotJob {
    /// Built at once (the in-memory store: the simulator stays deterministic).
    Done(Result<BuiltSnapshot, StoreError>),
    /// Being built on a thread of its own.
    Running(JoinHandle<Result<BuiltSnapshot, StoreError>>),
}

impl SnapshotJob {
    /// True once the outcome can be taken without waiting.
    pub fn is_finished(&self) -> bool {
        match self {
            SnapshotJob::Done(_) => true,
            SnapshotJob::Running(thread) => thread.is_finished(),
        }
    }

    /// The outcome, waiting for the build if it still runs. A panic in the builder (a broken
    /// invariant) is passed on.
    pub fn wait(self) -> Result<BuiltSnapshot, StoreError> {
        match self {
            SnapshotJob::Done(result) => result,
            SnapshotJob::Running(thread) => match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            },
        }
    }
}

/// `raft::Storage::snapshot` for both stores: the stored snapshot if it is recent enough and
/// its membership names `to` (a member added after it would refuse it: raft-rs restores only
/// a snapshot whose conf state holds the node); otherwise `SnapshotTemporarilyUnavailable`,
/// and `wanted` is set so that the node snapshots its applied state after this Ready.
pub(crate) fn snapshot_for(
    stored: Option<&StoredSnapshot>,
    wanted: &std::cell::Cell<bool>,
    request_index: u64,
    to: u64,
) -> raft::Result<Snapshot> {
    let names = |conf: &ConfState| {
        [&conf.voters, &conf.learners, &conf.voters_outgoing, &conf.learners_next]
            .iter()
            .any(|ids| ids.contains(&to))
    };
    match stored {
        Some(snapshot) if snapshot.index >= request_index && names(&snapshot.conf_state) => {
            Ok(snapshot.to_raft())
        }
        _ => {
            wanted.set(true);
            Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable))
        }
    }
}

/// What can go wrong in the store. Every variant names the path and, where there is one, the
/// table and key; none of them is retryable inside the node.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "RocksDB at {path}: {what} failed: {cause}; check free space, permissions and that no \
         other master process uses this data directory"
    )]
    Rocks { path: PathBuf, what: &'static str, cause: rocksdb::Error },
    #[error(
        "corrupt value in {path}, column family `{cf}`, key {key}: {reason}; the store cannot be \
         trusted: restore this data directory from a replica or a metalogger copy"
    )]
    Corrupt { path: PathBuf, cf: &'static str, key: String, reason: String },
    #[error("{path}: {what} failed: {cause}; check free space and permissions")]
    Io { path: PathBuf, what: &'static str, cause: std::io::Error },
    #[error(
        "snapshot file {path} is unusable: {reason}; restore this data directory from a replica \
         or a metalogger copy"
    )]
    SnapshotFile { path: PathBuf, reason: String },
}

/// What the node needs from its store besides `raft::Storage`. Each write method states what
/// it writes in one batch; see the module docs for what "synced" promises.
pub trait LogStore: raft::Storage + Send + 'static {
    /// True once the store holds a group member's state (bootstrapped or from a snapshot).
    fn is_initialized(&self) -> bool;
    fn hard_state(&self) -> &HardState;
    fn conf_state(&self) -> &ConfState;
    /// (index, term) of the last applied entry as stored.
    fn applied(&self) -> (u64, u64);
    fn latest_snapshot(&self) -> Option<&StoredSnapshot>;
    /// True (once) if Raft asked for a snapshot newer than the stored one since the last call.
    fn take_snapshot_wanted(&self) -> bool;
    /// The identity written at first start, if any.
    fn identity(&self) -> Option<&Identity>;
    /// Records the identity (synced). Only on a store without one.
    fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError>;
    /// The applied index at which a member's membership no longer named this node, if this
    /// node heard of its removal that way (it was down when the removal was applied).
    fn removed_at(&self) -> Option<u64>;
    /// Records that a member's membership at `index` no longer names this node (synced), so
    /// a restart refuses to start instead of campaigning in a group that left it.
    fn set_removed_at(&mut self, index: u64) -> Result<(), StoreError>;
    /// The first state of a new group: a snapshot at [`BOOTSTRAP_INDEX`] and `term` (normally
    /// [`BOOTSTRAP_TERM`]; higher for a group restored from a lost one, so that chunkservers
    /// that obeyed the lost group's leaders obey the new one) whose voters are `conf_state`,
    /// the state machine's records at that index, and the matching Raft state.
    fn bootstrap(
        &mut self,
        conf_state: ConfState,
        records: Vec<TableRecord>,
        snapshot_data: Vec<u8>,
        term: u64,
    ) -> Result<(), StoreError>;
    /// Installs a leader's snapshot: tables replaced by `records`, log emptied, Raft state
    /// moved to the snapshot; synced.
    fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        records: RecordSource<'_>,
    ) -> Result<(), StoreError>;
    /// Appends `entries` (dropping any conflicting tail) and writes `hard_state`, in one batch,
    /// synced if `sync`.
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError>;
    /// What applying committed entries changed, the applied index, the commit index raised to
    /// it, and a new ConfState, in one batch that bypasses the write-ahead log: a crash loses
    /// it whole unless a flush (a snapshot build) has covered it, and the entries are applied
    /// again from the synced log.
    fn write_apply(&mut self, apply: ApplyBatch) -> Result<(), StoreError>;
    /// Starts building the snapshot at the applied index: `encoder` is fed every table record
    /// (table by table, keys in order) from a consistent view of the store taken before this
    /// returns, and the blob is written to a file of its own and synced. The RocksDB store
    /// builds on a thread of its own, so the caller may write on at once; nothing changes in
    /// the store until [`LogStore::finish_snapshot`].
    /// The build also makes every apply batch written before it durable (a memtable flush)
    /// before it finishes, so that finishing may compact the log up to the snapshot.
    fn start_snapshot(
        &mut self,
        encoder: Box<dyn SnapshotEncoder>,
    ) -> Result<SnapshotJob, StoreError>;
    /// Records a built snapshot as the latest and compacts the log up to
    /// `snapshot.index - keep_entries` (never past the snapshot); synced. Returns false, and
    /// deletes its file, if the snapshot is not newer than the latest one (a leader's snapshot
    /// was installed meanwhile).
    fn finish_snapshot(
        &mut self,
        built: BuiltSnapshot,
        keep_entries: u64,
    ) -> Result<bool, StoreError>;
    /// All records of every table, verified.
    fn load_table_records(&self) -> Result<Vec<TableRecord>, StoreError>;
}
