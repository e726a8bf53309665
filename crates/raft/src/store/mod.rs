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
//! synced write makes itself *and every earlier write* durable, in order, as RocksDB's
//! write-ahead log does. Unsynced writes may be lost in a crash, newest first.

mod mem;
mod rocks;

pub use mem::MemStore;
pub use rocks::{
    hard_state_term, log_key, seal, unseal, RaftStore, StateKey, CF_RAFT_LOG, CF_RAFT_STATE,
    DB_DIR_NAME, SNAPSHOT_DIR_NAME,
};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use std::path::PathBuf;
use std::sync::Arc;

/// The index and term of the bootstrap snapshot of a new group: raft-rs starts a group from a
/// snapshot at index 1 so that a follower with an empty log catches up by snapshot.
pub const BOOTSTRAP_INDEX: u64 = 1;
pub const BOOTSTRAP_TERM: u64 = 1;

/// A record of a state machine table: (table, key, value).
pub type TableRecord = (&'static str, Vec<u8>, Vec<u8>);
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
    pub data: Arc<Vec<u8>>,
}

impl StoredSnapshot {
    /// The Raft message form of this snapshot.
    pub fn to_raft(&self) -> Snapshot {
        let mut metadata =
            SnapshotMetadata { index: self.index, term: self.term, ..SnapshotMetadata::default() };
        metadata.set_conf_state(self.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(metadata);
        snapshot.data = self.data.as_ref().clone().into();
        snapshot
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
        records: Vec<TableRecord>,
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
    /// it, and a new ConfState, in one unsynced batch.
    fn write_apply(&mut self, apply: ApplyBatch) -> Result<(), StoreError>;
    /// Stores `data` as the snapshot at the applied index and compacts the log up to
    /// `applied - keep_entries` (never past the snapshot); synced.
    fn save_snapshot_and_compact(
        &mut self,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<(), StoreError>;
    /// All records of every table, verified.
    fn load_table_records(&self) -> Result<Vec<TableRecord>, StoreError>;
}
