//! The master's durable store: the Raft log, Raft's hard and conf state, snapshot metadata and
//! the metadata tables, all in one RocksDB instance at `DATA_DIR/meta.rocksdb`, plus snapshot
//! blobs in `DATA_DIR/snapshots/`.
//!
//! Column families:
//!
//! | cf | key | value |
//! |---|---|---|
//! | `raft_log` | entry index, u64 big-endian | protobuf `eraftpb::Entry` |
//! | `raft_state` | `hard_state`, `conf_state`, `applied`, `truncated`, `snapshot` | see [`StateKey`] |
//! | one per state machine table (`StateMachine::TABLES`) | the record key | the record value |
//!
//! Every value is sealed as `crc32c(payload) u32 LE ‖ payload` and checked on every read, so a
//! flipped bit is reported with the column family and key instead of being parsed as data.
//!
//! The log holds entries `(truncated, last]`; `truncated` is the index (and term) of the last
//! entry removed by compaction, so `first_index() == truncated + 1` and `term(truncated)` still
//! answers. Compaction never passes the latest snapshot, so a follower that needs a removed entry
//! can always be sent the snapshot.
//!
//! This module knows Raft's types and RocksDB, but not the state machine: its tables are
//! addressed by column-family name, given at open.

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};

use super::{
    visit_list, ApplyBatch, BuiltSnapshot, Identity, LogStore, RecordSource, SnapshotJob,
    StoreError, StoredSnapshot, TableRecord, BOOTSTRAP_INDEX,
};
use crate::state_machine::SnapshotEncoder;

/// Column family of the Raft log.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of Raft's own state (hard state, conf state, applied, truncated, snapshot).
pub const CF_RAFT_STATE: &str = "raft_state";

/// Directory name of the RocksDB instance inside the data directory.
pub const DB_DIR_NAME: &str = "meta.rocksdb";
/// Directory name of snapshot blobs inside the data directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

const SNAPSHOT_MAGIC: &[u8; 8] = b"MFSHSNP1";
const SNAPSHOT_HEADER_BYTES: usize = 8 + 8 + 8 + 8 + 4;
const SEAL_BYTES: usize = 4;

/// Keys in the `raft_state` column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKey {
    /// protobuf `HardState` (term, vote, commit).
    HardState,
    /// protobuf `ConfState` as of the applied index.
    ConfState,
    /// (index, term) of the last applied entry, u64 LE each.
    Applied,
    /// (index, term) of the last entry removed from the log, u64 LE each.
    Truncated,
    /// postcard [`SnapshotRecord`]: the latest snapshot and the file holding its data.
    Snapshot,
    /// postcard [`Identity`]: cluster id and node id, written once.
    Identity,
    /// The applied index (u64 LE) at which a member's membership no longer named this node.
    RemovedAt,
}

impl StateKey {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            StateKey::HardState => b"hard_state",
            StateKey::ConfState => b"conf_state",
            StateKey::Applied => b"applied",
            StateKey::Truncated => b"truncated",
            StateKey::Snapshot => b"snapshot",
            StateKey::Identity => b"identity",
            StateKey::RemovedAt => b"removed_at",
        }
    }
}

/// The `raft_state/snapshot` record. The file is written and synced before this record names
/// it, so the record never points at a missing or partial file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapshotRecord {
    index: u64,
    term: u64,
    conf_state: Vec<u8>,
    file: String,
}

/// The RocksDB-backed Raft storage and metadata store. Owned by the node thread; `raft::Storage`
/// reads come from RawNode on the same thread.
pub struct RaftStore {
    /// Shared with a snapshot builder thread, which reads from a RocksDB snapshot of it.
    db: Arc<DB>,
    db_path: PathBuf,
    snapshot_dir: PathBuf,
    hard_state: HardState,
    conf_state: ConfState,
    applied: (u64, u64),
    truncated: (u64, u64),
    /// (index, term) of the last log entry; `truncated` when the log is empty. Raft asks for
    /// the last term constantly, so it is kept here rather than read from RocksDB.
    last: (u64, u64),
    snapshot: Option<StoredSnapshot>,
    /// Set when Raft asked for a snapshot newer than the one we have.
    snapshot_wanted: Cell<bool>,
    /// The state machine's tables, one column family each.
    tables: &'static [&'static str],
    identity: Option<Identity>,
    removed_at: Option<u64>,
    /// Where synced log writes are timed (the node's counters, set by the driver).
    sync_seconds: Option<prometheus::Histogram>,
}

impl RaftStore {
    /// Opens (creating if needed) the store in `data_dir`, with one column family per entry of
    /// `tables`, and loads Raft's state.
    pub fn open(data_dir: &Path, tables: &'static [&'static str]) -> Result<RaftStore, StoreError> {
        let db_path = data_dir.join(DB_DIR_NAME);
        let snapshot_dir = data_dir.join(SNAPSHOT_DIR_NAME);
        fs::create_dir_all(&snapshot_dir).map_err(|cause| StoreError::Io {
            path: snapshot_dir.clone(),
            what: "creating the snapshot directory",
            cause,
        })?;
        let db = Arc::new(open_db(&db_path, tables)?);
        let mut store = RaftStore {
            db,
            db_path,
            snapshot_dir,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            applied: (0, 0),
            truncated: (0, 0),
            last: (0, 0),
            snapshot: None,
            snapshot_wanted: Cell::new(false),
            tables,
            identity: None,
            removed_at: None,
            sync_seconds: None,
        };
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), StoreError> {
        if let Some(hs) = self.get_state(StateKey::HardState)? {
            self.hard_state = self.parse_proto(StateKey::HardState, &hs)?;
        }
        if let Some(cs) = self.get_state(StateKey::ConfState)? {
            self.conf_state = self.parse_proto(StateKey::ConfState, &cs)?;
        }
        self.applied = self.get_pair(StateKey::Applied)?;
        self.truncated = self.get_pair(StateKey::Truncated)?;
        self.last = self.load_last()?;
        self.snapshot = self.load_snapshot()?;
        self.identity = self.load_identity()?;
        self.removed_at = self.load_removed_at()?;
        self.check_loaded();
        Ok(())
    }

    /// The relationships between what was loaded; a violation is a bug in how we wrote it.
    fn check_loaded(&self) {
        let path = self.db_path.display();
        assert!(self.truncated.0 <= self.last.0, "{path}: truncated index beyond last index");
        assert!(
            self.applied.0 <= self.hard_state.commit,
            "{path}: applied index {} is ahead of the commit index {}",
            self.applied.0,
            self.hard_state.commit
        );
        assert!(
            self.applied.0 >= self.truncated.0,
            "{path}: applied index {} is behind the compacted log (truncated at {})",
            self.applied.0,
            self.truncated.0
        );
        assert!(self.hard_state.commit <= self.last.0, "{path}: commit index beyond the log");
        if let Some(snapshot) = &self.snapshot {
            assert!(snapshot.index >= self.truncated.0, "{path}: log compacted past the snapshot");
            assert!(snapshot.index <= self.applied.0, "{path}: snapshot ahead of applied state");
        }
    }

    /// True once the store holds a group member's state (bootstrapped or from a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// (index, term) of the last applied entry as stored.
    pub fn applied(&self) -> (u64, u64) {
        self.applied
    }

    /// (index, term) of the last entry removed by compaction.
    pub fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    pub fn latest_snapshot(&self) -> Option<&StoredSnapshot> {
        self.snapshot.as_ref()
    }

    /// True (once) if Raft asked for a snapshot newer than the stored one since the last call.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Writes the first state of a new group: a snapshot at [`BOOTSTRAP_INDEX`] whose voters are
    /// `conf_state`, the state machine's records at that index, and the matching Raft state.
    pub fn bootstrap(
        &mut self,
        conf_state: ConfState,
        records: Vec<TableRecord>,
        snapshot_data: Vec<u8>,
        term: u64,
    ) -> Result<(), StoreError> {
        assert!(!self.is_initialized(), "bootstrap of an initialized store {:?}", self.db_path);
        assert!(self.last.0 == 0, "bootstrap of a store that has log entries");
        let snapshot =
            StoredSnapshot { index: BOOTSTRAP_INDEX, term, conf_state, data: snapshot_data.into() };
        self.replace_with_snapshot(snapshot, &|visit| visit_list(&records, visit), false)
    }

    /// Installs a snapshot received from the leader: the metadata tables are replaced by
    /// `records` (decoded from the snapshot by the caller), the log is emptied and Raft's state
    /// moves to the snapshot, all in one synced batch.
    pub fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        records: RecordSource<'_>,
    ) -> Result<(), StoreError> {
        let metadata = snapshot.get_metadata();
        assert!(
            metadata.index > self.applied.0,
            "snapshot at {} is not newer than the applied index {}",
            metadata.index,
            self.applied.0
        );
        let snapshot = StoredSnapshot {
            index: metadata.index,
            term: metadata.term,
            conf_state: metadata.get_conf_state().clone(),
            data: snapshot.data.clone(), // shares the received message's buffer
        };
        self.replace_with_snapshot(snapshot, records, true)
    }

    /// Shared by bootstrap and install: file first, then one synced batch that points at it.
    fn replace_with_snapshot(
        &mut self,
        snapshot: StoredSnapshot,
        records: RecordSource<'_>,
        clear_tables: bool,
    ) -> Result<(), StoreError> {
        let file = write_snapshot_file(&self.snapshot_dir, &snapshot)?;
        let mut batch = WriteBatch::default();
        if clear_tables {
            for cf in self.tables {
                self.clear_cf(&mut batch, cf)?;
            }
        }
        records(&mut |cf, key, value| batch.put_cf(self.cf(cf), key, seal(value)));
        self.clear_cf(&mut batch, CF_RAFT_LOG)?;
        let (index, term) = (snapshot.index, snapshot.term);
        let mut hard_state = self.hard_state.clone();
        hard_state.term = hard_state.term.max(term);
        hard_state.commit = hard_state.commit.max(index);
        self.put_proto(&mut batch, StateKey::HardState, &hard_state);
        self.put_proto(&mut batch, StateKey::ConfState, &snapshot.conf_state);
        self.put_pair(&mut batch, StateKey::Applied, (index, term));
        self.put_pair(&mut batch, StateKey::Truncated, (index, term));
        self.put_snapshot_record(&mut batch, &snapshot, &file);
        self.write(batch, Durability::Synced, "writing a snapshot's state")?;
        self.hard_state = hard_state;
        self.conf_state = snapshot.conf_state.clone();
        self.applied = (index, term);
        self.truncated = (index, term);
        self.last = (index, term);
        self.snapshot = Some(snapshot);
        self.remove_old_snapshot_files(&file)
    }

    /// Appends `entries` (dropping any conflicting tail) and writes `hard_state`, in one batch,
    /// fsynced if `sync`.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut new_last = self.last.0;
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.truncated.0,
                "append at {} overwrites the compacted log \
                     (truncated at {})",
                first.index,
                self.truncated.0
            );
            assert!(
                first.index <= self.last.0 + 1,
                "append at {} leaves a gap after {}",
                first.index,
                self.last.0
            );
            for (offset, entry) in entries.iter().enumerate() {
                assert_eq!(
                    entry.index,
                    first.index + offset as u64,
                    "append of a non-contiguous run"
                );
                batch.put_cf(self.cf(CF_RAFT_LOG), log_key(entry.index), seal_proto(entry));
            }
            new_last = first.index + entries.len() as u64 - 1;
            if new_last < self.last.0 {
                let (from, to) = (log_key(new_last + 1), log_key(self.last.0 + 1));
                batch.delete_range_cf(self.cf(CF_RAFT_LOG), from, to);
            }
        }
        if let Some(hard_state) = hard_state {
            assert!(hard_state.commit >= self.hard_state.commit, "commit index went backwards");
            assert!(hard_state.commit <= new_last, "commit index beyond the log");
            self.put_proto(&mut batch, StateKey::HardState, hard_state);
        }
        let started = std::time::Instant::now();
        let durability = if sync { Durability::Synced } else { Durability::Logged };
        self.write(batch, durability, "appending Raft log entries")?;
        if let (true, Some(histogram)) = (sync, &self.sync_seconds) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        if let Some(entry) = entries.last() {
            self.last = (entry.index, entry.term);
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Times every synced append (the write-ahead log's fsync) into `histogram`.
    pub fn time_syncs(&mut self, histogram: prometheus::Histogram) {
        self.sync_seconds = Some(histogram);
    }

    /// Writes what applying committed entries changed, with the applied index, the commit index
    /// raised to it, and the new ConfState, in one batch (unsynced: see `node::apply_committed`).
    pub fn write_apply(&mut self, apply: ApplyBatch) -> Result<(), StoreError> {
        assert!(apply.applied_index > self.applied.0, "apply batch does not advance applied");
        assert!(apply.applied_index <= self.last.0, "applied index beyond the log");
        let mut batch = WriteBatch::default();
        for (cf, key, value) in &apply.changes {
            match value {
                Some(value) => batch.put_cf(self.cf(cf), key, seal(value)),
                None => batch.delete_cf(self.cf(cf), key),
            }
        }
        self.put_pair(&mut batch, StateKey::Applied, (apply.applied_index, apply.applied_term));
        // Raft panics on restart if applied > commit, so the commit index travels with it.
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(apply.applied_index);
        if hard_state != self.hard_state {
            self.put_proto(&mut batch, StateKey::HardState, &hard_state);
        }
        if let Some(conf_state) = &apply.conf_state {
            self.put_proto(&mut batch, StateKey::ConfState, conf_state);
        }
        self.write(batch, Durability::Unlogged, "writing applied metadata")?;
        self.applied = (apply.applied_index, apply.applied_term);
        self.hard_state = hard_state;
        if let Some(conf_state) = apply.conf_state {
            self.conf_state = conf_state;
        }
        Ok(())
    }

    /// Stores `data` as the snapshot at the applied index, then removes log entries before
    /// `applied - keep_entries` (never past the snapshot), in one synced batch. What the node
    /// does in two steps ([`LogStore::start_snapshot`], [`LogStore::finish_snapshot`]), at once.
    pub fn save_snapshot_and_compact(
        &mut self,
        data: Vec<u8>,
        keep_entries: u64,
    ) -> Result<(), StoreError> {
        let snapshot = self.snapshot_here(data.into());
        let file = write_snapshot_file(&self.snapshot_dir, &snapshot)?;
        flush_all(&self.db, &self.db_path, self.tables)?;
        let newer = self.finish_snapshot(BuiltSnapshot { snapshot, file }, keep_entries)?;
        assert!(newer, "snapshot index went backwards");
        Ok(())
    }

    /// A snapshot of `data` at the applied index and the current ConfState.
    fn snapshot_here(&self, data: bytes::Bytes) -> StoredSnapshot {
        let (index, term) = self.applied;
        StoredSnapshot { index, term, conf_state: self.conf_state.clone(), data }
    }

    /// See [`LogStore::start_snapshot`]. The builder thread takes a RocksDB snapshot of the
    /// tables before this returns: every apply batch (tables and applied index together) is
    /// written by then, so the view is exactly the state at the applied index, whatever the
    /// node writes afterwards.
    pub fn start_snapshot(
        &mut self,
        encoder: Box<dyn SnapshotEncoder>,
    ) -> Result<SnapshotJob, StoreError> {
        let placeholder = self.snapshot_here(bytes::Bytes::new());
        let builder = SnapshotBuilder {
            db: self.db.clone(),
            db_path: self.db_path.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            tables: self.tables,
        };
        let (taken, view_taken) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{}", placeholder.index))
            .spawn(move || builder.run(placeholder, encoder, taken));
        let io = |cause| StoreError::Io {
            path: self.snapshot_dir.clone(),
            what: "starting a snapshot builder thread",
            cause,
        };
        let thread = spawned.map_err(io)?;
        // Err: the builder ended before taking its view; its result says why.
        let _ = view_taken.recv();
        Ok(SnapshotJob::Running(thread))
    }

    /// See [`LogStore::finish_snapshot`]. The snapshot's file is already durable, so the
    /// synced batch that points at it may also compact the log behind it; that sync also makes
    /// every earlier unsynced apply batch durable before the entries they came from go.
    pub fn finish_snapshot(
        &mut self,
        built: BuiltSnapshot,
        keep_entries: u64,
    ) -> Result<bool, StoreError> {
        let BuiltSnapshot { snapshot, file } = built;
        let index = snapshot.index;
        if self.snapshot.as_ref().is_some_and(|latest| latest.index >= index) {
            self.remove_snapshot_file(&file);
            return Ok(false);
        }
        assert!(index <= self.applied.0, "snapshot at {index} ahead of the applied state");
        let mut batch = WriteBatch::default();
        self.put_snapshot_record(&mut batch, &snapshot, &file);
        // Entries (truncated, last_removed] go; the tail after them stays for slow followers.
        let last_removed = index.saturating_sub(keep_entries);
        let truncated = if last_removed > self.truncated.0 {
            let truncated = (last_removed, self.entry_term(last_removed)?);
            let (from, to) = (log_key(self.truncated.0 + 1), log_key(last_removed + 1));
            batch.delete_range_cf(self.cf(CF_RAFT_LOG), from, to);
            self.put_pair(&mut batch, StateKey::Truncated, truncated);
            truncated
        } else {
            self.truncated
        };
        assert!(truncated.0 <= index, "compaction past the snapshot");
        self.write(batch, Durability::Synced, "saving a snapshot and compacting the log")?;
        self.truncated = truncated;
        self.snapshot = Some(snapshot);
        self.remove_old_snapshot_files(&file)?;
        Ok(true)
    }

    /// Deletes a snapshot file that nothing points at; failing that only wastes space.
    fn remove_snapshot_file(&self, file: &str) {
        let path = self.snapshot_dir.join(file);
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove an unused snapshot");
        }
    }

    /// All records of every metadata table, verified.
    pub fn load_table_records(&self) -> Result<Vec<TableRecord>, StoreError> {
        let mut records = Vec::new();
        for &cf in self.tables {
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, value) = item.map_err(|e| self.rocks("iterating a metadata table", e))?;
                let payload = self.unseal(cf, &key, &value)?;
                records.push((cf, key.to_vec(), payload.to_vec()));
            }
        }
        Ok(records)
    }

    /// Reads one raft log entry, verified.
    fn read_entry(&self, index: u64) -> Result<Entry, StoreError> {
        let key = log_key(index);
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_RAFT_LOG), key)
            .map_err(|e| self.rocks("reading a Raft log entry", e))?;
        let Some(value) = value else {
            return Err(self.corrupt(CF_RAFT_LOG, &key, "entry missing inside the log".into()));
        };
        let entry: Entry = self.parse_sealed_proto(CF_RAFT_LOG, &key, &value)?;
        if entry.index != index {
            let reason = format!("holds the entry of index {}", entry.index);
            return Err(self.corrupt(CF_RAFT_LOG, &key, reason));
        }
        Ok(entry)
    }

    fn entry_term(&self, index: u64) -> Result<u64, StoreError> {
        if index == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if index == self.last.0 {
            return Ok(self.last.1);
        }
        Ok(self.read_entry(index)?.term)
    }

    /// Entries `[low, high)`: at least one, then as many as fit in `max_size` bytes.
    fn read_entries(&self, low: u64, high: u64, max_size: u64) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        let mut limited = false;
        let start = log_key(low);
        let mode = IteratorMode::From(&start, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_RAFT_LOG), mode) {
            let expected = low + entries.len() as u64;
            if expected >= high {
                break;
            }
            let (key, value) = item.map_err(|e| self.rocks("reading Raft log entries", e))?;
            let entry: Entry = self.parse_sealed_proto(CF_RAFT_LOG, &key, &value)?;
            if entry.index != expected || key.as_ref() != log_key(expected) {
                let reason = format!("expected entry {expected}, found {}", entry.index);
                return Err(self.corrupt(CF_RAFT_LOG, &key, reason));
            }
            size += u64::from(entry.compute_size());
            if !entries.is_empty() && size > max_size {
                limited = true;
                break;
            }
            entries.push(entry);
        }
        let found = entries.len() as u64;
        if !limited && found < high - low {
            let reason = format!("log ends before index {high} (last index {})", self.last.0);
            return Err(self.corrupt(CF_RAFT_LOG, &log_key(low + found), reason));
        }
        Ok(entries)
    }

    fn load_last(&self) -> Result<(u64, u64), StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_RAFT_LOG), IteratorMode::End);
        let Some(item) = iter.next() else {
            return Ok(self.truncated);
        };
        let (key, _) = item.map_err(|e| self.rocks("finding the last log entry", e))?;
        let last = parse_log_key(&key)
            .ok_or_else(|| self.corrupt(CF_RAFT_LOG, &key, "key is not an 8-byte index".into()))?;
        // The first entry must follow the truncated one: a gap would lose committed entries.
        let mut iter = self.db.iterator_cf(self.cf(CF_RAFT_LOG), IteratorMode::Start);
        if let Some(item) = iter.next() {
            let (key, _) = item.map_err(|e| self.rocks("finding the first log entry", e))?;
            if parse_log_key(&key) != Some(self.truncated.0 + 1) {
                let reason = format!("first entry is not truncated index {} + 1", self.truncated.0);
                return Err(self.corrupt(CF_RAFT_LOG, &key, reason));
            }
        }
        Ok((last, self.read_entry(last)?.term))
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let Some(bytes) = self.get_state(StateKey::Snapshot)? else {
            return Ok(None);
        };
        let key = StateKey::Snapshot.as_bytes();
        let record: SnapshotRecord = postcard::from_bytes(&bytes)
            .map_err(|e| self.corrupt(CF_RAFT_STATE, key, format!("undecodable record: {e}")))?;
        let conf_state = ConfState::parse_from_bytes(&record.conf_state)
            .map_err(|e| self.corrupt(CF_RAFT_STATE, key, format!("undecodable ConfState: {e}")))?;
        let path = self.snapshot_dir.join(&record.file);
        let data = read_snapshot_file(&path, record.index, record.term)?;
        Ok(Some(StoredSnapshot {
            index: record.index,
            term: record.term,
            conf_state,
            data: data.into(),
        }))
    }

    fn put_snapshot_record(&self, batch: &mut WriteBatch, snapshot: &StoredSnapshot, file: &str) {
        let record = SnapshotRecord {
            index: snapshot.index,
            term: snapshot.term,
            conf_state: encode_proto(&snapshot.conf_state),
            file: file.to_string(),
        };
        let bytes = postcard::to_allocvec(&record).expect("encoding a SnapshotRecord in memory");
        batch.put_cf(self.cf(CF_RAFT_STATE), StateKey::Snapshot.as_bytes(), seal(&bytes));
    }

    /// Deletes every snapshot file except `keep` (older snapshots and leftover temp files).
    /// The new snapshot is already durable and referenced, so a file that cannot be removed
    /// only wastes space: it is logged, not fatal.
    fn remove_old_snapshot_files(&self, keep: &str) -> Result<(), StoreError> {
        let dir = &self.snapshot_dir;
        let entries = fs::read_dir(dir).map_err(|cause| StoreError::Io {
            path: dir.clone(),
            what: "listing snapshots",
            cause,
        })?;
        for item in entries {
            let path = match item {
                Ok(item) if item.file_name().to_str() != Some(keep) => item.path(),
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot list old snapshots");
                    continue;
                }
            };
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old snapshot; \
                    remove it by hand to free the space");
            }
        }
        Ok(())
    }

    /// Adds a delete of every key of `cf` to `batch` (one range tombstone).
    fn clear_cf(&self, batch: &mut WriteBatch, cf: &'static str) -> Result<(), StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(cf), IteratorMode::End);
        if let Some(item) = iter.next() {
            let (last, _) = item.map_err(|e| self.rocks("finding a table's last key", e))?;
            // The smallest key greater than `last`: the range end is exclusive.
            let mut end = last.to_vec();
            end.push(0);
            batch.delete_range_cf(self.cf(cf), Vec::new(), end);
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).unwrap_or_else(|| panic!("column family {name} was opened"))
    }

    fn write(
        &self,
        batch: WriteBatch,
        durability: Durability,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        match durability {
            Durability::Synced => options.set_sync(true),
            Durability::Logged => {}
            Durability::Unlogged => options.disable_wal(true),
        }
        self.db.write_opt(batch, &options).map_err(|e| self.rocks(what, e))
    }

    fn get_state(&self, key: StateKey) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.as_bytes();
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_RAFT_STATE), key)
            .map_err(|e| self.rocks("reading Raft state", e))?;
        match value {
            None => Ok(None),
            Some(value) => Ok(Some(self.unseal(CF_RAFT_STATE, key, &value)?.to_vec())),
        }
    }

    fn get_pair(&self, key: StateKey) -> Result<(u64, u64), StoreError> {
        let Some(bytes) = self.get_state(key)? else {
            return Ok((0, 0));
        };
        decode_pair(&bytes).ok_or_else(|| {
            self.corrupt(CF_RAFT_STATE, key.as_bytes(), format!("{} bytes, want 16", bytes.len()))
        })
    }

    fn put_pair(&self, batch: &mut WriteBatch, key: StateKey, pair: (u64, u64)) {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&pair.0.to_le_bytes());
        bytes[8..].copy_from_slice(&pair.1.to_le_bytes());
        batch.put_cf(self.cf(CF_RAFT_STATE), key.as_bytes(), seal(&bytes));
    }

    fn put_proto<M: protobuf::Message>(&self, batch: &mut WriteBatch, key: StateKey, message: &M) {
        batch.put_cf(self.cf(CF_RAFT_STATE), key.as_bytes(), seal_proto(message));
    }

    fn parse_proto<M: protobuf::Message>(
        &self,
        key: StateKey,
        bytes: &[u8],
    ) -> Result<M, StoreError> {
        M::parse_from_bytes(bytes).map_err(|e| {
            self.corrupt(CF_RAFT_STATE, key.as_bytes(), format!("undecodable protobuf: {e}"))
        })
    }

    fn parse_sealed_proto<M: protobuf::Message>(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<M, StoreError> {
        let payload = self.unseal(cf, key, value)?;
        M::parse_from_bytes(payload)
            .map_err(|e| self.corrupt(cf, key, format!("undecodable protobuf: {e}")))
    }

    /// Checks a sealed value's checksum and returns its payload.
    fn unseal<'v>(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &'v [u8],
    ) -> Result<&'v [u8], StoreError> {
        unseal(value).map_err(|reason| self.corrupt(cf, key, reason))
    }

    fn corrupt(&self, cf: &'static str, key: &[u8], reason: String) -> StoreError {
        let key = describe_key(cf, key);
        StoreError::Corrupt { path: self.db_path.clone(), cf, key, reason }
    }

    fn rocks(&self, what: &'static str, cause: rocksdb::Error) -> StoreError {
        StoreError::Rocks { path: self.db_path.clone(), what, cause }
    }

    /// Writes a raw value without sealing it — for tests that corrupt the store on purpose.
    #[cfg(test)]
    pub(crate) fn put_raw(&self, cf: &str, key: &[u8], value: &[u8]) {
        self.db.put_cf(self.cf(cf), key, value).expect("test write");
    }

    #[cfg(test)]
    pub(crate) fn get_raw(&self, cf: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get_cf(self.cf(cf), key).expect("test read")
    }
}

impl RaftStore {
    fn load_identity(&self) -> Result<Option<Identity>, StoreError> {
        let Some(bytes) = self.get_state(StateKey::Identity)? else {
            return Ok(None);
        };
        let key = StateKey::Identity.as_bytes();
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(CF_RAFT_STATE, key, format!("identity: {e}")))
    }

    fn load_removed_at(&self) -> Result<Option<u64>, StoreError> {
        let Some(bytes) = self.get_state(StateKey::RemovedAt)? else {
            return Ok(None);
        };
        let index: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
            let reason = format!("removal index of {} bytes, not 8", bytes.len());
            self.corrupt(CF_RAFT_STATE, StateKey::RemovedAt.as_bytes(), reason)
        })?;
        Ok(Some(u64::from_le_bytes(index)))
    }

    /// Records, synced, that a member's membership at `index` no longer names this node.
    pub fn set_removed_at(&mut self, index: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let value = seal(&index.to_le_bytes());
        batch.put_cf(self.cf(CF_RAFT_STATE), StateKey::RemovedAt.as_bytes(), value);
        self.write(batch, Durability::Synced, "recording this node's removal")?;
        self.removed_at = Some(index);
        Ok(())
    }

    /// The identity written at first start, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Records the identity, synced. Only on a store without one.
    pub fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError> {
        assert!(self.identity.is_none(), "identity of {:?} written twice", self.db_path);
        let bytes = postcard::to_allocvec(&identity).expect("encoding an identity");
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT_STATE), StateKey::Identity.as_bytes(), seal(&bytes));
        self.write(batch, Durability::Synced, "writing the store's identity")?;
        self.identity = Some(identity);
        Ok(())
    }
}

/// The node's view: the same methods, behind the trait the Ready loop is written against.
impl LogStore for RaftStore {
    fn is_initialized(&self) -> bool {
        RaftStore::is_initialized(self)
    }
    fn hard_state(&self) -> &HardState {
        RaftStore::hard_state(self)
    }
    fn conf_state(&self) -> &ConfState {
        RaftStore::conf_state(self)
    }
    fn applied(&self) -> (u64, u64) {
        RaftStore::applied(self)
    }
    fn latest_snapshot(&self) -> Option<&StoredSnapshot> {
        RaftStore::latest_snapshot(self)
    }
    fn take_snapshot_wanted(&self) -> bool {
        RaftStore::take_snapshot_wanted(self)
    }
    fn identity(&self) -> Option<&Identity> {
        RaftStore::identity(self)
    }
    fn set_identity(&mut self, identity: Identity) -> Result<(), StoreError> {
        RaftStore::set_identity(self, identity)
    }
    fn removed_at(&self) -> Option<u64> {
        self.removed_at
    }
    fn set_removed_at(&mut self, index: u64) -> Result<(), StoreError> {
        RaftStore::set_removed_at(self, index)
    }
    fn bootstrap(
        &mut self,
        conf_state: ConfState,
        records: Vec<TableRecord>,
        snapshot_data: Vec<u8>,
        term: u64,
    ) -> Result<(), StoreError> {
        RaftStore::bootstrap(self, conf_state, records, snapshot_data, term)
    }
    fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        records: RecordSource<'_>,
    ) -> Result<(), StoreError> {
        RaftStore::install_snapshot(self, snapshot, records)
    }
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        RaftStore::append(self, entries, hard_state, sync)
    }
    fn write_apply(&mut self, apply: ApplyBatch) -> Result<(), StoreError> {
        RaftStore::write_apply(self, apply)
    }
    fn start_snapshot(
        &mut self,
        encoder: Box<dyn SnapshotEncoder>,
    ) -> Result<SnapshotJob, StoreError> {
        RaftStore::start_snapshot(self, encoder)
    }
    fn finish_snapshot(
        &mut self,
        built: BuiltSnapshot,
        keep_entries: u64,
    ) -> Result<bool, StoreError> {
        RaftStore::finish_snapshot(self, built, keep_entries)
    }
    fn load_table_records(&self) -> Result<Vec<TableRecord>, StoreError> {
        RaftStore::load_table_records(self)
    }
}

/// Raft's view of the store. A storage error makes raft-rs inoperable, so the node treats any
/// `StorageError::Other` it sees as fatal; `entries` and `term` return it with the full
/// [`StoreError`] inside.
impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last.0 + 1, "entries up to {high} beyond last {}", self.last.0);
        if low >= high {
            return Ok(Vec::new());
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        self.read_entries(low, high, max_size).map_err(to_raft_error)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if index < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last.0 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry_term(index).map_err(to_raft_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last.0)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // The node sees the flag after this Ready and snapshots the applied state.
        super::snapshot_for(self.snapshot.as_ref(), &self.snapshot_wanted, request_index, to)
    }
}

fn to_raft_error(error: StoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(error)))
}

/// How a batch reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Through the write-ahead log, fsynced before the write returns.
    Synced,
    /// Through the write-ahead log, not fsynced (a process crash keeps it, a power loss may
    /// not).
    Logged,
    /// Without the write-ahead log: it reaches the disk with the next memtable flush (the
    /// column families flush atomically, so a flush never splits it), and a crash before then
    /// loses it whole. Only apply batches go this way: what they write can be applied again
    /// from the synced log, and each commit then costs one log write instead of two.
    /// [`flush_all`] makes them durable before the log behind them is compacted.
    Unlogged,
}

/// Every column family of a store holding the state machine's `tables`: the Raft log and
/// state, then the tables.
fn column_families(tables: &'static [&'static str]) -> impl Iterator<Item = &'static str> {
    [CF_RAFT_LOG, CF_RAFT_STATE].into_iter().chain(tables.iter().copied())
}

fn open_db(path: &Path, tables: &'static [&'static str]) -> Result<DB, StoreError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(DBCompressionType::None);
    // Apply batches skip the write-ahead log (`Durability::Unlogged`): every column family must
    // then flush together, or a crash could find one table ahead of the applied index.
    options.set_atomic_flush(true);
    let descriptors = column_families(tables).map(|name| {
        let mut cf_options = Options::default();
        cf_options.set_compression_type(DBCompressionType::None);
        ColumnFamilyDescriptor::new(name, cf_options)
    });
    DB::open_cf_descriptors(&options, path, descriptors).map_err(|cause| StoreError::Rocks {
        path: path.to_path_buf(),
        what: "opening the database",
        cause,
    })
}

/// Writes every column family's memtables out, atomically, and waits: every apply batch
/// written before the call is durable after it (see `Durability::Unlogged`).
fn flush_all(db: &DB, path: &Path, tables: &'static [&'static str]) -> Result<(), StoreError> {
    let handles: Vec<_> = column_families(tables)
        .map(|name| db.cf_handle(name).expect("column family opened with the store"))
        .collect();
    let mut options = rocksdb::FlushOptions::default();
    options.set_wait(true);
    let refs: Vec<&_> = handles.iter().collect();
    db.flush_cfs_opt(&refs, &options).map_err(|cause| StoreError::Rocks {
        path: path.to_path_buf(),
        what: "flushing the applied state before compacting the log",
        cause,
    })
}

/// What a snapshot builder thread needs of the store.
struct SnapshotBuilder {
    db: Arc<DB>,
    db_path: PathBuf,
    snapshot_dir: PathBuf,
    tables: &'static [&'static str],
}

impl SnapshotBuilder {
    /// Takes the view, says so on `taken`, then encodes the tables and writes the file.
    fn run(
        self,
        mut snapshot: StoredSnapshot,
        mut encoder: Box<dyn SnapshotEncoder>,
        taken: std::sync::mpsc::Sender<()>,
    ) -> Result<BuiltSnapshot, StoreError> {
        let started = std::time::Instant::now();
        let view = self.db.snapshot();
        // Err: start_snapshot stopped waiting, which it never does; nothing to tell.
        let _ = taken.send(());
        for &cf in self.tables {
            self.encode_table(&view, cf, encoder.as_mut())?;
        }
        drop(view);
        let encoded_ms = started.elapsed().as_millis();
        snapshot.data = encoder.finish().into();
        let file = write_snapshot_file(&self.snapshot_dir, &snapshot)?;
        // The tables are at the snapshot's index or later by now: once they are flushed, the
        // log before that index may go (finish_snapshot compacts it).
        flush_all(&self.db, &self.db_path, self.tables)?;
        tracing::info!(
            index = snapshot.index,
            bytes = snapshot.data.len(),
            encoded_ms,
            total_ms = started.elapsed().as_millis(),
            "snapshot built off the raft thread"
        );
        Ok(BuiltSnapshot { snapshot, file })
    }

    fn encode_table(
        &self,
        view: &rocksdb::SnapshotWithThreadMode<'_, DB>,
        cf: &'static str,
        encoder: &mut dyn SnapshotEncoder,
    ) -> Result<(), StoreError> {
        let handle = self.db.cf_handle(cf).expect("column family opened with the store");
        let corrupt = |key: &[u8], reason: String| StoreError::Corrupt {
            path: self.db_path.clone(),
            cf,
            key: describe_key(cf, key),
            reason,
        };
        for item in view.iterator_cf(handle, IteratorMode::Start) {
            let (key, value) = item.map_err(|cause| StoreError::Rocks {
                path: self.db_path.clone(),
                what: "reading a table for a snapshot",
                cause,
            })?;
            let payload = unseal(&value).map_err(|reason| corrupt(&key, reason))?;
            encoder.add(cf, &key, payload).map_err(|reason| corrupt(&key, reason))?;
        }
        Ok(())
    }
}

/// The raft_log key of `index`: big-endian so that RocksDB's byte order is index order.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn parse_log_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() != 16 {
        return None;
    }
    let first = u64::from_le_bytes(bytes[..8].try_into().ok()?);
    let second = u64::from_le_bytes(bytes[8..].try_into().ok()?);
    Some((first, second))
}

fn encode_proto<M: protobuf::Message>(message: &M) -> Vec<u8> {
    message.write_to_bytes().expect("encoding a Raft protobuf message in memory")
}

fn seal_proto<M: protobuf::Message>(message: &M) -> Vec<u8> {
    seal(&encode_proto(message))
}

/// The term in a stored `StateKey::HardState` value (for offline tools that open the store
/// read-only, such as `mfsha meta restore`).
pub fn hard_state_term(value: &[u8]) -> Result<u64, String> {
    let payload = unseal(value)?;
    let hard_state =
        HardState::parse_from_bytes(payload).map_err(|e| format!("undecodable hard state: {e}"))?;
    Ok(hard_state.term)
}

/// `crc32c(payload) LE ‖ payload`.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(SEAL_BYTES + payload.len());
    sealed.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    sealed.extend_from_slice(payload);
    sealed
}

/// Checks and strips the seal of a stored value.
pub fn unseal(value: &[u8]) -> Result<&[u8], String> {
    if value.len() < SEAL_BYTES {
        return Err(format!("{} bytes is shorter than the 4-byte checksum", value.len()));
    }
    let (checksum, payload) = value.split_at(SEAL_BYTES);
    let stored = u32::from_le_bytes(checksum.try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(payload);
    if stored != actual {
        return Err(format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"));
    }
    Ok(payload)
}

/// A key as an operator can read it: a log index, printable text, or hex.
fn describe_key(cf: &str, key: &[u8]) -> String {
    match parse_log_key(key) {
        Some(index) if cf == CF_RAFT_LOG => format!("0x{} (log index {index})", hex::encode(key)),
        _ if !key.is_empty() && key.iter().all(|b| b.is_ascii_graphic()) => {
            format!("\"{}\"", String::from_utf8_lossy(key))
        }
        _ => format!("0x{}", hex::encode(key)),
    }
}

/// A snapshot file is synced every this many bytes. On ext4 (data=ordered) the Raft thread's
/// WAL fsync commits the journal, which first writes out the dirty data of other files: with
/// a whole blob of hundreds of MiB dirty, that fsync took seconds and heartbeats stopped.
const SYNC_STEP_BYTES: usize = 8 << 20;

fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}.mfss")
}

/// Writes a snapshot file durably: temp file, fsync, rename, fsync the directory.
fn write_snapshot_file(dir: &Path, snapshot: &StoredSnapshot) -> Result<String, StoreError> {
    let name = snapshot_file_name(snapshot.index, snapshot.term);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}.tmp"));
    let io = |path: &Path, what, cause| StoreError::Io { path: path.to_path_buf(), what, cause };
    let data = &snapshot.data[..];
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&snapshot.index.to_le_bytes());
    header.extend_from_slice(&snapshot.term.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let mut file = fs::File::create(&temp).map_err(|e| io(&temp, "creating a snapshot file", e))?;
    file.write_all(&header).map_err(|e| io(&temp, "writing a snapshot file", e))?;
    for step in data.chunks(SYNC_STEP_BYTES) {
        file.write_all(step).map_err(|e| io(&temp, "writing a snapshot file", e))?;
        file.sync_data().map_err(|e| io(&temp, "fsyncing a snapshot file", e))?;
    }
    file.sync_all().map_err(|e| io(&temp, "fsyncing a snapshot file", e))?;
    drop(file);
    fs::rename(&temp, &path).map_err(|e| io(&path, "renaming a snapshot file into place", e))?;
    let dir_handle =
        fs::File::open(dir).map_err(|e| io(dir, "opening the snapshot directory", e))?;
    dir_handle.sync_all().map_err(|e| io(dir, "fsyncing the snapshot directory", e))?;
    Ok(name)
}

/// Reads and verifies a snapshot file written by [`write_snapshot_file`].
fn read_snapshot_file(path: &Path, index: u64, term: u64) -> Result<Vec<u8>, StoreError> {
    let bad = |reason: String| StoreError::SnapshotFile { path: path.to_path_buf(), reason };
    let bytes = fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad("missing the mfsha snapshot header".into()));
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (file_index, file_term, len) = (field(8), field(16), field(24));
    let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    if (file_index, file_term) != (index, term) {
        return Err(bad(format!(
            "holds index {file_index} term {file_term}, the store expects index {index} term {term}"
        )));
    }
    let data = &bytes[SNAPSHOT_HEADER_BYTES..];
    if data.len() as u64 != len {
        return Err(bad(format!("{} data bytes, header says {len}", data.len())));
    }
    if crc32c::crc32c(data) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    // In place: a second buffer of a blob of hundreds of MiB is what start-up can do without.
    let mut bytes = bytes;
    bytes.drain(..SNAPSHOT_HEADER_BYTES);
    Ok(bytes)
}

#[cfg(test)]
#[path = "rocks_tests.rs"]
mod tests;
