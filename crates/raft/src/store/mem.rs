//! [`MemStore`]: the store contract in memory, for the simulator.
//!
//! It models RocksDB as the master uses it: log, Raft state and snapshot records go through
//! the write-ahead log, apply batches do not (see [`LogStore::write_apply`]). `live` is what
//! the node reads; `flushed` is the image the last memtable flush made durable; `wal` holds
//! the logged writes since that flush, the first `wal_synced` of them made durable by a sync.
//! [`MemStore::crash`] restarts from `flushed` with the synced logged writes replayed over it,
//! which is what RocksDB's recovery finds after a power cut: an apply batch that no flush has
//! covered is lost, whatever was synced after it.

use std::cell::Cell;
use std::collections::BTreeMap;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::{
    visit_list, ApplyBatch, BuiltSnapshot, Identity, LogStore, RecordSource, SnapshotJob,
    StoreError, StoredSnapshot, TableRecord, BOOTSTRAP_INDEX,
};
use crate::state_machine::SnapshotEncoder;

/// One image of the store.
#[derive(Debug, Clone, Default)]
struct Image {
    hard_state: HardState,
    conf_state: ConfState,
    applied: (u64, u64),
    /// (index, term) of the last entry removed by compaction.
    truncated: (u64, u64),
    /// Entries `(truncated, last]`.
    log: Vec<Entry>,
    snapshot: Option<StoredSnapshot>,
    tables: BTreeMap<(&'static str, Vec<u8>), Vec<u8>>,
    identity: Option<Identity>,
    removed_at: Option<u64>,
}

impl Image {
    fn last(&self) -> (u64, u64) {
        self.log.last().map_or(self.truncated, |entry| (entry.index, entry.term))
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.truncated.0 + 1)?;
        self.log.get(usize::try_from(offset).ok()?)
    }
}

/// A write that goes through the write-ahead log, replayable over an older image.
#[derive(Debug, Clone)]
enum Logged {
    Append {
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    },
    /// Bootstrap or an installed snapshot: tables, log and Raft state replaced.
    Replace {
        snapshot: StoredSnapshot,
        tables: Tables,
    },
    /// A built snapshot recorded, and the log compacted to `truncated`.
    Finish {
        snapshot: StoredSnapshot,
        truncated: (u64, u64),
    },
    Identity(Identity),
    RemovedAt(u64),
}

/// Logged writes after which the in-memory "memtable" is flushed (see [`MemStore::log`]).
const MEMTABLE_WRITES: usize = 4096;

type Tables = BTreeMap<(&'static str, Vec<u8>), Vec<u8>>;

impl Logged {
    fn apply_to(&self, image: &mut Image) {
        match self {
            Logged::Append { entries, hard_state } => {
                append_to(image, entries, hard_state.as_ref())
            }
            Logged::Replace { snapshot, tables } => replace_in(image, snapshot, tables),
            Logged::Finish { snapshot, truncated } => finish_in(image, snapshot, *truncated),
            Logged::Identity(identity) => image.identity = Some(identity.clone()),
            Logged::RemovedAt(index) => image.removed_at = Some(*index),
        }
    }
}

/// An in-memory store with crash semantics. See the module documentation.
#[derive(Debug, Default)]
pub struct MemStore {
    live: Image,
    flushed: Image,
    wal: Vec<Logged>,
    wal_synced: usize,
    snapshot_wanted: Cell<bool>,
    /// Synced writes so far (the simulator's fsync count).
    syncs: u64,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// What a restart after a power cut finds: the flushed image with the synced logged
    /// writes since replayed over it.
    pub fn crash(&self) -> MemStore {
        let mut image = self.flushed.clone();
        for logged in &self.wal[..self.wal_synced] {
            logged.apply_to(&mut image);
        }
        // The log must still hold every entry after what survived of the applied state, or
        // the node could never apply them again.
        assert!(
            image.applied.0 >= image.truncated.0,
            "a crash lost applied state up to {} that the compacted log (to {}) no longer holds",
            image.applied.0,
            image.truncated.0
        );
        MemStore {
            live: image.clone(),
            flushed: image,
            wal: Vec::new(),
            wal_synced: 0,
            snapshot_wanted: Cell::new(false),
            syncs: self.syncs,
        }
    }

    /// RocksDB writing its memtables out: everything written so far is durable.
    fn flush(&mut self) {
        self.flushed = self.live.clone();
        self.wal.clear();
        self.wal_synced = 0;
    }

    /// A write through the log: applied to the live image, durable once synced.
    fn log(&mut self, logged: Logged, sync: bool) {
        logged.apply_to(&mut self.live);
        self.wal.push(logged);
        if sync {
            self.wal_synced = self.wal.len();
            self.syncs += 1;
        }
        // RocksDB flushes a full memtable on its own; that only makes more durable, and here
        // it bounds the simulator's memory.
        if self.wal.len() >= MEMTABLE_WRITES {
            self.flush();
        }
    }

    /// The log entry at `index`, if it is in the (live) log.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.live.entry(index)
    }

    /// Synced writes so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    fn replace_with_snapshot(&mut self, snapshot: StoredSnapshot, records: RecordSource<'_>) {
        let mut tables = Tables::new();
        records(&mut |t, k, v| drop(tables.insert((t, k.to_vec()), v.to_vec())));
        self.log(Logged::Replace { snapshot, tables }, true);
    }
}

fn replace_in(image: &mut Image, snapshot: &StoredSnapshot, tables: &Tables) {
    let (index, term) = (snapshot.index, snapshot.term);
    image.tables = tables.clone();
    image.log.clear();
    image.hard_state.term = image.hard_state.term.max(term);
    image.hard_state.commit = image.hard_state.commit.max(index);
    image.conf_state = snapshot.conf_state.clone();
    image.applied = (index, term);
    image.truncated = (index, term);
    image.snapshot = Some(snapshot.clone());
}

fn append_to(image: &mut Image, entries: &[Entry], hard_state: Option<&HardState>) {
    if let Some(first) = entries.first() {
        assert!(first.index > image.truncated.0, "append overwrites the compacted log");
        assert!(first.index <= image.last().0 + 1, "append leaves a gap");
        let keep = (first.index - image.truncated.0 - 1) as usize;
        image.log.truncate(keep);
        image.log.extend_from_slice(entries);
    }
    if let Some(hard_state) = hard_state {
        assert!(hard_state.commit >= image.hard_state.commit, "commit went backwards");
        assert!(hard_state.commit <= image.last().0, "commit beyond the log");
        image.hard_state = hard_state.clone();
    }
}

fn finish_in(image: &mut Image, snapshot: &StoredSnapshot, truncated: (u64, u64)) {
    if truncated.0 > image.truncated.0 {
        let drop = (truncated.0 - image.truncated.0) as usize;
        assert!(drop <= image.log.len(), "compaction past the log's end");
        image.log.drain(..drop);
        image.truncated = truncated;
    }
    image.snapshot = Some(snapshot.clone());
}

impl LogStore for MemStore {
    fn is_initialized(&self) -> bool {
        self.live.conf_state != ConfState::default()
    }
    fn hard_state(&self) -> &HardState {
        &self.live.hard_state
    }
    fn conf_state(&self) -> &ConfState {
        &self.live.conf_state
    }
    fn applied(&self) -> (u64, u64) {
        self.live.applied
    }
    fn latest_snapshot(&self) -> Option<&StoredSnapshot> {
        self.live.snapshot.as_ref()
    }
    fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }
    fn identity(&self) -> Option<&Identity> {
        self.live.identity.as_ref()
    }
    fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError> {
        assert!(self.live.identity.is_none(), "identity written twice");
        self.log(Logged::Identity(identity), true);
        Ok(())
    }
    fn removed_at(&self) -> Option<u64> {
        self.live.removed_at
    }
    fn set_removed_at(&mut self, index: u64) -> Result<(), StoreError> {
        self.log(Logged::RemovedAt(index), true);
        Ok(())
    }

    fn bootstrap(
        &mut self,
        conf_state: ConfState,
        records: Vec<TableRecord>,
        snapshot_data: Vec<u8>,
        term: u64,
    ) -> Result<(), StoreError> {
        assert!(!self.is_initialized(), "bootstrap of an initialized store");
        let snapshot =
            StoredSnapshot { index: BOOTSTRAP_INDEX, term, conf_state, data: snapshot_data.into() };
        self.replace_with_snapshot(snapshot, &|visit| visit_list(&records, visit));
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        records: RecordSource<'_>,
    ) -> Result<(), StoreError> {
        let metadata = snapshot.get_metadata();
        assert!(metadata.index > self.live.applied.0, "snapshot not newer than applied");
        let snapshot = StoredSnapshot {
            index: metadata.index,
            term: metadata.term,
            conf_state: metadata.get_conf_state().clone(),
            data: snapshot.data.clone(),
        };
        self.replace_with_snapshot(snapshot, records);
        Ok(())
    }

    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let logged = Logged::Append { entries: entries.to_vec(), hard_state: hard_state.cloned() };
        self.log(logged, sync);
        Ok(())
    }

    fn write_apply(&mut self, apply: ApplyBatch) -> Result<(), StoreError> {
        let image = &mut self.live;
        assert!(apply.applied_index > image.applied.0, "apply batch does not advance applied");
        assert!(apply.applied_index <= image.last().0, "applied beyond the log");
        for (table, key, value) in apply.changes {
            match value {
                Some(value) => image.tables.insert((table, key), value),
                None => image.tables.remove(&(table, key)),
            };
        }
        image.applied = (apply.applied_index, apply.applied_term);
        image.hard_state.commit = image.hard_state.commit.max(apply.applied_index);
        if let Some(conf_state) = apply.conf_state {
            image.conf_state = conf_state;
        }
        // Not logged: durable only at the next flush.
        Ok(())
    }

    /// Built at once from the live tables: the simulator's clock is virtual, and a build on
    /// another thread would finish at a different virtual time on every run.
    fn start_snapshot(
        &mut self,
        mut encoder: Box<dyn SnapshotEncoder>,
    ) -> Result<SnapshotJob, StoreError> {
        // The RocksDB builder flushes after taking its view; flushing here, at the view's
        // index, is the least that promises.
        self.flush();
        let image = &self.live;
        for ((table, key), value) in &image.tables {
            let added = encoder.add(table, key, value);
            added.unwrap_or_else(|reason| panic!("in-memory table {table}: {reason}"));
        }
        let (index, term) = image.applied;
        let data = encoder.finish().into();
        let snapshot = StoredSnapshot { index, term, conf_state: image.conf_state.clone(), data };
        Ok(SnapshotJob::Done(Ok(BuiltSnapshot { snapshot, file: String::new() })))
    }

    fn finish_snapshot(
        &mut self,
        built: BuiltSnapshot,
        keep_entries: u64,
    ) -> Result<bool, StoreError> {
        let image = &self.live;
        let snapshot = built.snapshot;
        if image.snapshot.as_ref().is_some_and(|latest| latest.index >= snapshot.index) {
            return Ok(false);
        }
        let last_removed = snapshot.index.saturating_sub(keep_entries);
        let truncated = match last_removed > image.truncated.0 {
            true => {
                let entry = image.entry(last_removed).expect("compacted entry in the log");
                (last_removed, entry.term)
            }
            false => image.truncated,
        };
        self.log(Logged::Finish { snapshot, truncated }, true);
        Ok(true)
    }

    fn load_table_records(&self) -> Result<Vec<TableRecord>, StoreError> {
        let tables = &self.live.tables;
        Ok(tables.iter().map(|((t, k), v)| (*t, k.clone(), v.clone())).collect())
    }
}

impl raft::Storage for MemStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.live.hard_state.clone(), self.live.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let image = &self.live;
        if low <= image.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= image.last().0 + 1, "entries beyond the last index");
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut entries = Vec::new();
        let mut size = 0u64;
        for index in low..high {
            let entry = image.entry(index).expect("entry inside the log").clone();
            size += u64::from(protobuf::Message::compute_size(&entry));
            if !entries.is_empty() && size > max_size {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let image = &self.live;
        if index == image.truncated.0 {
            return Ok(image.truncated.1);
        }
        if index < image.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match image.entry(index) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.live.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.live.last().0)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        super::snapshot_for(self.live.snapshot.as_ref(), &self.snapshot_wanted, request_index, to)
    }
}
