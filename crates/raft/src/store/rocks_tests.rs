//! Unit tests of [`RaftStore`] against a real RocksDB in a temporary directory.

use super::*;
use crate::store::BOOTSTRAP_TERM;
use raft::Storage;

const TEST_TABLES: &[&str] = &["inode", "dirent", "xattr", "meta"];

fn entry(index: u64, term: u64) -> Entry {
    let data = format!("entry {index} of term {term}").into_bytes().into();
    Entry { index, term, data, ..Entry::default() }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState { voters: ids.to_vec(), ..ConfState::default() }
}

fn context() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..HardState::default() }
}

/// A bootstrapped store with one inode record and entries 2..=last of term 1 (commit 1).
fn bootstrapped(dir: &Path, last: u64) -> RaftStore {
    let mut store = RaftStore::open(dir, TEST_TABLES).expect("open");
    let records = vec![("inode", b"root".to_vec(), b"root inode".to_vec())];
    store
        .bootstrap(voters(&[1]), records, b"bootstrap blob".to_vec(), BOOTSTRAP_TERM)
        .expect("bootstrap");
    if last >= 2 {
        store.append(&entries(2..=last, 1), Some(&hard_state(1, 1, 1)), true).expect("append");
    }
    store
}

fn store_error_text(result: raft::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(raft::Error::Store(StorageError::Other(error))) => error.to_string(),
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn empty_store_is_uninitialized_and_has_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    assert!(!store.is_initialized());
    let state = store.initial_state().unwrap();
    assert!(!state.initialized());
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(store.first_index().unwrap(), 1);
    assert_eq!(store.last_index().unwrap(), 0);
    assert_eq!(store.term(0).unwrap(), 0);
    assert!(!store.take_snapshot_wanted());
    let snapshot = store.snapshot(0, 2);
    assert_eq!(
        snapshot.unwrap_err(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert!(store.take_snapshot_wanted(), "a refused snapshot request must be remembered");
    assert!(!store.take_snapshot_wanted(), "and reported once");
    assert!(dir.path().join(DB_DIR_NAME).is_dir());
}

#[test]
fn bootstrap_starts_the_log_after_a_snapshot_at_index_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 0);
    let state = store.initial_state().unwrap();
    assert!(state.initialized());
    assert_eq!(state.conf_state.voters, vec![1]);
    assert_eq!(state.hard_state.term, BOOTSTRAP_TERM);
    assert_eq!(state.hard_state.commit, BOOTSTRAP_INDEX);
    assert_eq!(store.first_index().unwrap(), 2);
    assert_eq!(store.last_index().unwrap(), 1);
    assert_eq!(store.term(1).unwrap(), 1, "term(first_index - 1) must answer");
    assert_eq!(store.term(0).unwrap_err(), raft::Error::Store(StorageError::Compacted));
    assert_eq!(store.term(2).unwrap_err(), raft::Error::Store(StorageError::Unavailable));
    assert_eq!(store.applied(), (1, 1));
    assert_eq!(
        store.snapshot(0, 2).unwrap_err(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable),
        "a snapshot goes only to a member its membership names"
    );
    let snapshot = store.snapshot(0, 1).unwrap();
    assert_eq!(snapshot.get_metadata().index, 1);
    assert_eq!(snapshot.get_metadata().term, 1);
    assert_eq!(snapshot.get_metadata().get_conf_state().voters, vec![1]);
    assert_eq!(snapshot.data.as_ref(), b"bootstrap blob");
    assert_eq!(
        store.load_table_records().unwrap(),
        vec![("inode", b"root".to_vec(), b"root inode".to_vec())]
    );
}

#[test]
fn entries_cover_low_to_high_and_honour_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 10);
    let all = store.entries(2, 11, None, context()).unwrap();
    assert_eq!(all, entries(2..=10, 1));
    assert_eq!(store.entries(4, 7, None, context()).unwrap(), entries(4..=6, 1));
    assert_eq!(store.entries(5, 5, None, context()).unwrap(), Vec::<Entry>::new());
    let one = u64::from(all[0].compute_size());
    // At least one entry, even if it alone exceeds the limit.
    assert_eq!(store.entries(2, 11, Some(0), context()).unwrap().len(), 1);
    assert_eq!(store.entries(2, 11, Some(one), context()).unwrap().len(), 1);
    assert_eq!(store.entries(2, 11, Some(2 * one), context()).unwrap().len(), 2);
    assert_eq!(store.entries(2, 11, Some(3 * one - 1), context()).unwrap().len(), 2);
    assert_eq!(store.entries(2, 11, Some(u64::MAX), context()).unwrap().len(), 9);
    assert_eq!(
        store.entries(1, 5, None, context()).unwrap_err(),
        raft::Error::Store(StorageError::Compacted)
    );
}

#[test]
#[should_panic(expected = "beyond last")]
fn entries_past_the_last_index_panic_as_the_contract_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 5);
    let _ = store.entries(2, 7, None, context());
}

#[test]
fn term_first_and_last_index_follow_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 4);
    store.append(&entries(5..=6, 2), None, false).unwrap();
    assert_eq!(store.first_index().unwrap(), 2);
    assert_eq!(store.last_index().unwrap(), 6);
    assert_eq!(store.term(4).unwrap(), 1);
    assert_eq!(store.term(5).unwrap(), 2);
    assert_eq!(store.term(6).unwrap(), 2);
    assert_eq!(store.term(7).unwrap_err(), raft::Error::Store(StorageError::Unavailable));
}

#[test]
fn append_drops_a_conflicting_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 10);
    store.append(&entries(6..=7, 2), Some(&hard_state(2, 1, 5)), true).unwrap();
    assert_eq!(store.last_index().unwrap(), 7);
    assert_eq!(store.term(6).unwrap(), 2);
    assert_eq!(store.term(5).unwrap(), 1);
    let mut expected = entries(2..=5, 1);
    expected.extend(entries(6..=7, 2));
    assert_eq!(store.entries(2, 8, None, context()).unwrap(), expected);
    assert_eq!(store.get_raw(CF_RAFT_LOG, &log_key(8)), None, "stale entry 8 must be gone");
    drop(store);
    let store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    assert_eq!(store.last_index().unwrap(), 7);
    assert_eq!(store.hard_state(), &hard_state(2, 1, 5));
}

#[test]
fn apply_batch_writes_tables_applied_commit_and_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 6);
    store.append(&[], Some(&hard_state(1, 1, 4)), false).unwrap();
    let batch = ApplyBatch {
        changes: vec![
            ("inode", b"root".to_vec(), None),
            ("dirent", b"a".to_vec(), Some(b"1".to_vec())),
            ("meta", b"applied_index".to_vec(), Some(6u64.to_be_bytes().to_vec())),
        ],
        applied_index: 6,
        applied_term: 1,
        conf_state: Some(voters(&[1, 2])),
    };
    store.write_apply(batch).unwrap();
    assert_eq!(store.applied(), (6, 1));
    assert_eq!(store.hard_state().commit, 6, "commit travels with applied");
    assert_eq!(store.conf_state(), &voters(&[1, 2]));
    drop(store);
    let store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    assert_eq!(store.applied(), (6, 1));
    assert_eq!(store.hard_state().commit, 6);
    assert_eq!(store.initial_state().unwrap().conf_state, voters(&[1, 2]));
    let records = store.load_table_records().unwrap();
    assert_eq!(
        records,
        vec![
            ("dirent", b"a".to_vec(), b"1".to_vec()),
            ("meta", b"applied_index".to_vec(), 6u64.to_be_bytes().to_vec()),
        ]
    );
}

#[test]
#[should_panic(expected = "commit index went backwards")]
fn hard_state_commit_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 6);
    store.append(&[], Some(&hard_state(1, 1, 5)), false).unwrap();
    let _ = store.append(&[], Some(&hard_state(1, 1, 4)), false);
}

#[test]
fn restart_reloads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 20);
    store.append(&entries(21..=25, 3), Some(&hard_state(3, 1, 22)), true).unwrap();
    let batch = ApplyBatch {
        changes: vec![("xattr", b"k".to_vec(), Some(b"v".to_vec()))],
        applied_index: 22,
        applied_term: 3,
        conf_state: None,
    };
    store.write_apply(batch).unwrap();
    store.save_snapshot_and_compact(b"snapshot at 22".to_vec(), 5).unwrap();
    let before = (
        store.initial_state().unwrap(),
        store.first_index().unwrap(),
        store.last_index().unwrap(),
        store.applied(),
        store.truncated(),
        store.entries(18, 26, None, context()).unwrap(),
        store.snapshot(0, 1).unwrap(),
        store.load_table_records().unwrap(),
    );
    drop(store);
    let store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    let after = (
        store.initial_state().unwrap(),
        store.first_index().unwrap(),
        store.last_index().unwrap(),
        store.applied(),
        store.truncated(),
        store.entries(18, 26, None, context()).unwrap(),
        store.snapshot(0, 1).unwrap(),
        store.load_table_records().unwrap(),
    );
    assert_eq!(format!("{before:?}"), format!("{after:?}"));
    assert_eq!(after.1, 18);
    assert_eq!(after.2, 25);
    assert_eq!(store.term(25).unwrap(), 3);
}

#[test]
fn snapshot_and_compaction_keep_a_tail_and_serve_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 100);
    let batch = ApplyBatch { applied_index: 100, applied_term: 1, ..ApplyBatch::default() };
    store.write_apply(batch).unwrap();
    store.save_snapshot_and_compact(b"state at 100".to_vec(), 10).unwrap();
    assert_eq!(store.first_index().unwrap(), 91);
    assert_eq!(store.term(90).unwrap(), 1, "term(first_index - 1) after compaction");
    assert_eq!(store.term(89).unwrap_err(), raft::Error::Store(StorageError::Compacted));
    assert_eq!(
        store.entries(50, 60, None, context()).unwrap_err(),
        raft::Error::Store(StorageError::Compacted)
    );
    assert_eq!(store.entries(91, 101, None, context()).unwrap(), entries(91..=100, 1));
    assert_eq!(store.get_raw(CF_RAFT_LOG, &log_key(90)), None);
    let snapshot = store.snapshot(100, 1).unwrap();
    assert_eq!(snapshot.get_metadata().index, 100);
    assert_eq!(snapshot.data.as_ref(), b"state at 100");
    // A request newer than what we have is refused for now and remembered.
    assert!(store.snapshot(101, 1).is_err());
    assert!(store.take_snapshot_wanted());
    let files: Vec<_> = fs::read_dir(dir.path().join(SNAPSHOT_DIR_NAME))
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec![snapshot_file_name(100, 1)], "older snapshot files are removed");
}

#[test]
fn compaction_with_no_tail_truncates_at_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 30);
    let batch = ApplyBatch { applied_index: 30, applied_term: 1, ..ApplyBatch::default() };
    store.write_apply(batch).unwrap();
    store.save_snapshot_and_compact(b"s".to_vec(), 0).unwrap();
    assert_eq!(store.first_index().unwrap(), 31);
    assert_eq!(store.last_index().unwrap(), 30);
    assert_eq!(store.term(30).unwrap(), 1);
    store.append(&entries(31..=31, 2), None, true).unwrap();
    drop(store);
    let store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    assert_eq!((store.first_index().unwrap(), store.last_index().unwrap()), (31, 31));
}

#[test]
fn install_snapshot_replaces_tables_and_log_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = bootstrapped(dir.path(), 12);
    let batch = ApplyBatch {
        changes: vec![
            ("inode", b"\x00\x00\x00\x00\x00\x00\x00\x07".to_vec(), Some(b"old".to_vec())),
            ("dirent", b"old-name".to_vec(), Some(b"7".to_vec())),
            ("dirent", vec![0xff; 40], Some(b"long key".to_vec())),
        ],
        applied_index: 10,
        applied_term: 1,
        conf_state: None,
    };
    store.write_apply(batch).unwrap();
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = 200;
    snapshot.mut_metadata().term = 4;
    snapshot.mut_metadata().set_conf_state(voters(&[1, 2, 3]));
    snapshot.data = b"leader state at 200".to_vec().into();
    let records = vec![
        ("inode", b"new".to_vec(), b"new inode".to_vec()),
        ("meta", b"applied_index".to_vec(), 200u64.to_be_bytes().to_vec()),
    ];
    store.install_snapshot(&snapshot, &|visit| super::visit_list(&records, visit)).unwrap();
    let check = |store: &RaftStore| {
        assert_eq!(store.load_table_records().unwrap(), records, "only the snapshot's records");
        assert_eq!(store.first_index().unwrap(), 201);
        assert_eq!(store.last_index().unwrap(), 200);
        assert_eq!(store.term(200).unwrap(), 4);
        assert_eq!(store.applied(), (200, 4));
        assert_eq!(store.hard_state().commit, 200);
        assert_eq!(store.hard_state().term, 4);
        assert_eq!(store.conf_state(), &voters(&[1, 2, 3]));
        assert_eq!(store.snapshot(0, 1).unwrap(), snapshot);
        assert_eq!(store.get_raw(CF_RAFT_LOG, &log_key(12)), None, "old log gone");
    };
    check(&store);
    drop(store);
    let mut store = RaftStore::open(dir.path(), TEST_TABLES).unwrap();
    check(&store);
    store.append(&entries(201..=202, 4), Some(&hard_state(4, 2, 202)), true).unwrap();
    assert_eq!(store.entries(201, 203, None, context()).unwrap(), entries(201..=202, 4));
}

#[test]
fn corrupt_log_entry_is_reported_with_cf_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 10);
    let mut value = store.get_raw(CF_RAFT_LOG, &log_key(5)).unwrap();
    let last = value.len() - 1;
    value[last] ^= 0x40;
    store.put_raw(CF_RAFT_LOG, &log_key(5), &value);
    let text = store_error_text(store.entries(2, 11, None, context()));
    assert!(text.contains("column family `raft_log`"), "{text}");
    assert!(text.contains("log index 5"), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    let text = store_error_text(store.term(5));
    assert!(text.contains("log index 5"), "{text}");
    // Unaffected entries still read.
    assert_eq!(store.entries(2, 5, None, context()).unwrap(), entries(2..=4, 1));
}

#[test]
fn corrupt_raft_state_fails_open_with_cf_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 3);
    store.put_raw(CF_RAFT_STATE, StateKey::HardState.as_bytes(), b"\x01\x02");
    drop(store);
    let error = RaftStore::open(dir.path(), TEST_TABLES).err().expect("open must fail").to_string();
    assert!(error.contains("column family `raft_state`"), "{error}");
    assert!(error.contains("\"hard_state\""), "{error}");
    assert!(error.contains(DB_DIR_NAME), "names the path: {error}");
}

#[test]
fn corrupt_table_record_is_reported_with_cf_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = bootstrapped(dir.path(), 3);
    store.put_raw("inode", &42u64.to_be_bytes(), &seal(b"fine")[..3]);
    let error = store.load_table_records().unwrap_err().to_string();
    assert!(error.contains("column family `inode`"), "{error}");
    assert!(error.contains("0x000000000000002a"), "{error}");
}

#[test]
fn damaged_snapshot_file_fails_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(bootstrapped(dir.path(), 3));
    let path = dir.path().join(SNAPSHOT_DIR_NAME).join(snapshot_file_name(1, 1));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    let error = RaftStore::open(dir.path(), TEST_TABLES).err().expect("open must fail").to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("checksum mismatch"), "{error}");
    fs::remove_file(&path).unwrap();
    let error = RaftStore::open(dir.path(), TEST_TABLES).err().expect("open must fail").to_string();
    assert!(error.contains("cannot read it"), "{error}");
}

#[test]
fn seal_round_trips_and_rejects_damage() {
    let sealed = seal(b"payload");
    assert_eq!(unseal(&sealed).unwrap(), b"payload");
    assert!(unseal(&sealed[..3]).unwrap_err().contains("shorter"));
    let mut damaged = sealed.clone();
    damaged[0] ^= 1;
    assert!(unseal(&damaged).unwrap_err().contains("checksum mismatch"));
    assert_eq!(unseal(&seal(b"")).unwrap(), b"");
}
