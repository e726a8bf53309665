//! Offline inspection of a stopped master's data directory (`mfsha meta check`).
//!
//! Opens the RocksDB read-only (so it can never change what it checks, and fails rather than
//! waits if a master still holds it), verifies every record's checksum, rebuilds the metadata
//! state and checks its invariants.

use mfsha_meta::{Counts, State, Table};
use mfsha_raft::store::{hard_state_term, unseal, StateKey, CF_RAFT_STATE, DB_DIR_NAME};
use mfsha_raft::StateMachine;
use rocksdb::{IteratorMode, Options, DB};
use std::path::{Path, PathBuf};

/// Why a data directory could not be checked, or what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path} is not a master data directory (no {DB_DIR_NAME} inside)")]
    NotADataDir { path: PathBuf },
    #[error("cannot open {path} read-only: {reason} (is a master still running on it?)")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: column family {cf} is missing")]
    MissingTable { path: PathBuf, cf: &'static str },
    #[error("{path}: reading column family {cf} failed: {reason}")]
    Read { path: PathBuf, cf: &'static str, reason: String },
    #[error("{path}: record {key} in column family {cf} is corrupt: {reason}")]
    Corrupt { path: PathBuf, cf: &'static str, key: String, reason: String },
    #[error("{path}: the metadata does not load: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: {} invariant violation(s):\n  {}", .violations.len(), .violations.join("\n  "))]
    Invariants { path: PathBuf, violations: Vec<String> },
}

/// What a check found in a healthy data directory.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub applied_index: u64,
    pub counts: Counts,
    pub records: usize,
}

/// Loads the metadata of the stopped master in `data_dir` and checks its invariants.
pub fn check_data_dir(data_dir: &Path) -> Result<Inspection, InspectError> {
    let (state, records) = load_checked(data_dir)?;
    Ok(Inspection { applied_index: state.applied_index(), counts: state.counts(), records })
}

/// The Raft term the stopped node in `data_dir` had reached (a restored group starts above
/// it, so chunkservers that obeyed the lost group obey the new one).
pub fn stored_term(data_dir: &Path) -> Result<u64, InspectError> {
    let db_path = data_dir.join(DB_DIR_NAME);
    let options = Options::default();
    let open_error = |reason: String| InspectError::Open { path: db_path.clone(), reason };
    let families = DB::list_cf(&options, &db_path).map_err(|e| open_error(e.to_string()))?;
    let db = DB::open_cf_for_read_only(&options, &db_path, &families, false)
        .map_err(|e| open_error(e.to_string()))?;
    let cf = CF_RAFT_STATE;
    let handle =
        db.cf_handle(cf).ok_or_else(|| InspectError::MissingTable { path: db_path.clone(), cf })?;
    let key = StateKey::HardState.as_bytes();
    let read_error = |reason: String| InspectError::Read { path: db_path.clone(), cf, reason };
    let value = db.get_cf(handle, key).map_err(|e| read_error(e.to_string()))?;
    let Some(value) = value else { return Ok(0) };
    hard_state_term(&value).map_err(|reason| InspectError::Corrupt {
        path: db_path.clone(),
        cf,
        key: "hard_state".into(),
        reason,
    })
}

/// Whether `dir` holds a node's store (a master's or a witness's data directory).
pub fn holds_store(dir: &Path) -> bool {
    dir.join(DB_DIR_NAME).is_dir()
}

/// The metadata of the stopped node (master or witness) in `data_dir`, checked; for
/// `mfsha meta restore`.
pub fn load_state(data_dir: &Path) -> Result<State, InspectError> {
    load_checked(data_dir).map(|(state, _)| state)
}

/// The state and how many records it was loaded from.
fn load_checked(data_dir: &Path) -> Result<(State, usize), InspectError> {
    let db_path = data_dir.join(DB_DIR_NAME);
    if !db_path.is_dir() {
        return Err(InspectError::NotADataDir { path: data_dir.to_path_buf() });
    }
    let records = read_records(&db_path)?;
    let count = records.len();
    let state = State::load(records)
        .map_err(|e| InspectError::Load { path: db_path.clone(), reason: e.to_string() })?;
    // `load` checks too; checking again here keeps this tool honest if `load` ever stops.
    state
        .check_invariants()
        .map_err(|violations| InspectError::Invariants { path: db_path.clone(), violations })?;
    Ok((state, count))
}

/// One stored metadata record: its table, key and value.
type StoredRecord = (Table, Vec<u8>, Vec<u8>);

fn read_records(db_path: &Path) -> Result<Vec<StoredRecord>, InspectError> {
    let options = Options::default();
    let open_error = |reason: String| InspectError::Open { path: db_path.to_path_buf(), reason };
    let families = DB::list_cf(&options, db_path).map_err(|e| open_error(e.to_string()))?;
    let db = DB::open_cf_for_read_only(&options, db_path, &families, false)
        .map_err(|e| open_error(e.to_string()))?;
    let mut records = Vec::new();
    for cf in State::TABLES {
        let handle = db
            .cf_handle(cf)
            .ok_or_else(|| InspectError::MissingTable { path: db_path.to_path_buf(), cf })?;
        let table = Table::from_name(cf).unwrap_or_else(|| {
            panic!("storage names table {cf} that the meta crate does not know")
        });
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (key, value) = item.map_err(|e| InspectError::Read {
                path: db_path.to_path_buf(),
                cf,
                reason: e.to_string(),
            })?;
            let payload = unseal(&value).map_err(|reason| InspectError::Corrupt {
                path: db_path.to_path_buf(),
                cf,
                key: hex::encode(&key),
                reason,
            })?;
            records.push((table, key.to_vec(), payload.to_vec()));
        }
    }
    Ok(records)
}
