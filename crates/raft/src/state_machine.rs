//! The one thing the Raft node knows about what it replicates: [`StateMachine`].
//!
//! The node hands every committed entry, in index order, to `apply`, writes the changes the
//! state machine reports into its store in the same batch as the applied index, and snapshots
//! and restores it as a blob. It never looks inside a command.

use crate::store::{RecordVisit, TableChange, TableRecord};

/// A deterministic state machine replicated by the node.
///
/// Determinism is the contract: two replicas that apply the same commands at the same indexes
/// must reach equal states (the simulator compares them), so `apply` may not read a clock,
/// randomness or anything outside `self` and its arguments.
pub trait StateMachine: Send + Sync + Sized + 'static {
    /// What applying one command produces; handed back to its proposer.
    type Output: Send + 'static;

    /// The tables the state is persisted in (one RocksDB column family each).
    const TABLES: &'static [&'static str];

    /// The state of a new group, at the bootstrap index.
    fn bootstrap(index: u64) -> Self;

    /// The state of a member that has not received its first snapshot.
    fn empty() -> Self;

    /// Index of the last command applied.
    fn applied_index(&self) -> u64;

    /// Applies the command committed at `index` (always `applied_index() + 1`). `Err` means the
    /// command does not decode: a bug or a newer peer; the node stops rather than skip it.
    fn apply(&mut self, index: u64, command: &[u8]) -> Result<Self::Output, String>;

    /// The command that stands for Raft's own entries (empty entries of a new term, membership
    /// changes), so that every index passes through `apply`.
    fn empty_command() -> Vec<u8>;

    /// The record changes made by `apply` since the last call.
    fn take_changes(&mut self) -> Vec<TableChange>;

    /// Every record of the state (bootstrap and snapshot install write them all).
    fn records(&self) -> Vec<TableRecord>;

    /// Hands every record of [`StateMachine::records`] to `visit`, without a list of them all
    /// (installing a snapshot of millions of records).
    fn visit_records(&self, visit: &mut RecordVisit<'_>) {
        crate::store::visit_list(&self.records(), visit);
    }

    /// Rebuilds the state from its stored records.
    fn load(records: Vec<TableRecord>) -> Result<Self, String>;

    /// The state as one checksummed blob.
    fn to_snapshot(&self) -> Vec<u8>;

    /// The state from a blob made by `to_snapshot`.
    fn from_snapshot(data: &[u8]) -> Result<Self, String>;

    /// The peer (Raft) address of every member, if the state keeps an address book (changed
    /// by the commands membership changes carry); the transport follows it. Empty by default.
    fn peer_addresses(&self) -> Vec<(u64, String)> {
        Vec::new()
    }

    /// An encoder that makes the blob `to_snapshot` would make at `applied_index` from the
    /// stored records, fed to it table by table (tables in any order, keys in order within a
    /// table). The node builds its snapshots this way on a thread of its own, from a
    /// consistent view of the store, so that the Raft thread never walks the whole state.
    /// `capacity` is a guess of the blob's size.
    fn snapshot_encoder(applied_index: u64, capacity: usize) -> Box<dyn SnapshotEncoder>;
}

/// Builds a snapshot blob from stored records (see [`StateMachine::snapshot_encoder`]).
pub trait SnapshotEncoder: Send {
    /// One stored record of `table`. `Err` names what is wrong with it (a corrupt store).
    fn add(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), String>;

    /// The finished blob.
    fn finish(self: Box<Self>) -> Vec<u8>;
}
