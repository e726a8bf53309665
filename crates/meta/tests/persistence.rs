//! Records, snapshots and what happens when stored metadata is damaged.

mod common;

use common::*;
use mfsha_meta::{Change, LoadError, Op, Record, State, Table};
use mfsha_proto::types::*;
use std::collections::BTreeMap;

/// A small filesystem touching every table.
fn sample() -> Fs {
    let mut fs = Fs::new();
    let a = fs.dir(ROOT_INO, "a");
    let f = fs.file(a, "f");
    fs.write(f, 0, 1000);
    let set = Op::SetXattr {
        ino: f,
        name: "user.k".into(),
        value: serde_bytes::ByteBuf::from(b"v".to_vec()),
        flags: 0,
    };
    fs.run(set).unwrap();
    fs.run(Op::OpenSession { session: 3, info: "m".into(), root: ROOT_INO, token: 42 }).unwrap();
    fs.run_tagged(3, 1, Op::Acquire { session: 3, ino: f }).unwrap();
    let g = fs.file(a, "g");
    fs.write(g, 1, 5);
    fs.run(unlink(a, "g")).unwrap();
    fs
}

/// A key-value store fed with changes, as RocksDB is.
fn store_changes(store: &mut BTreeMap<(Table, Vec<u8>), Vec<u8>>, changes: Vec<Change>) {
    for change in changes {
        match change.value {
            Some(value) => store.insert((change.table, change.key), value),
            None => store.remove(&(change.table, change.key)),
        };
    }
}

fn records(store: &BTreeMap<(Table, Vec<u8>), Vec<u8>>) -> Vec<Record> {
    store.iter().map(|((t, k), v)| (*t, k.clone(), v.clone())).collect()
}

#[test]
fn changes_accumulate_to_the_full_image() {
    let mut fs = Fs::new();
    let mut store = BTreeMap::new();
    store_changes(&mut store, fs.state.take_changes());
    let a = fs.dir(ROOT_INO, "a");
    let f = fs.file(a, "f");
    store_changes(&mut store, fs.state.take_changes());
    fs.write(f, 0, 10);
    fs.set_trash(ROOT_INO, 0);
    fs.run(unlink(a, "f")).unwrap();
    fs.run(Op::Free { inos: vec![f] }).unwrap();
    let changes = fs.state.take_changes();
    let deleted = |table| changes.iter().any(|c| c.table == table && c.value.is_none());
    assert!(deleted(Table::Inode) && deleted(Table::Dirent) && deleted(Table::Chunk));
    store_changes(&mut store, changes);
    assert!(fs.state.take_changes().is_empty(), "take_changes drains");
    assert_eq!(records(&store), fs.state.all_records());
    let loaded = State::load(records(&store)).unwrap();
    assert_eq!(loaded.digest(), fs.state.digest());
}

#[test]
fn one_change_per_key_per_take() {
    let mut fs = Fs::new();
    fs.state.take_changes();
    let a = fs.dir(ROOT_INO, "a");
    for name in ["x", "y", "z"] {
        fs.file(a, name);
    }
    let changes = fs.state.take_changes();
    let mut keys: Vec<_> = changes.iter().map(|c| (c.table, c.key.clone())).collect();
    let total = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), total, "each key once");
    // Root, a, three files: five inode records; four dirents; three meta keys at most.
    assert_eq!(changes.iter().filter(|c| c.table == Table::Inode).count(), 5);
    assert_eq!(changes.iter().filter(|c| c.table == Table::Dirent).count(), 4);
    // A directory entry is its own small record: one more create writes one dirent.
    fs.file(a, "w");
    let changes = fs.state.take_changes();
    let dirents: Vec<_> = changes.iter().filter(|c| c.table == Table::Dirent).collect();
    assert_eq!(dirents.len(), 1);
    assert_eq!(&dirents[0].key[..8], &a.to_be_bytes());
    assert_eq!(&dirents[0].key[8..], b"w");
}

#[test]
fn records_and_snapshots_round_trip() {
    let fs = sample();
    let image = fs.state.all_records();
    for table in Table::ALL {
        assert!(image.iter().any(|(t, _, _)| *t == table), "sample has no {} record", table.name());
    }
    let loaded = State::load(image.clone()).unwrap();
    assert_eq!(loaded.digest(), fs.state.digest());
    assert_eq!(loaded.all_records(), image);
    let snapshot = fs.state.to_snapshot();
    let restored = State::from_snapshot(&snapshot).unwrap();
    assert_eq!(restored.digest(), fs.state.digest());
    assert_eq!(restored.applied_index(), fs.state.applied_index());
    assert_eq!(restored.to_snapshot(), snapshot, "snapshots are canonical");
    assert_eq!(restored.sustained().count(), fs.state.sustained().count());
    assert_eq!(restored.session_reply(3, 1), fs.state.session_reply(3, 1));
}

#[test]
fn digest_tells_states_apart() {
    let mut fs = sample();
    let before = fs.state.digest();
    fs.run(Op::SetChunkVersion { chunk_id: 1, version: 7 }).unwrap();
    assert_ne!(fs.state.digest(), before);
}

#[test]
fn corrupt_snapshots_are_refused_with_a_reason() {
    let snapshot = sample().state.to_snapshot();
    for at in [0, 9, 15, 25, snapshot.len() / 2, snapshot.len() - 1] {
        let mut bad = snapshot.clone();
        bad[at] ^= 0x40;
        let error = State::from_snapshot(&bad).expect_err("flipped byte accepted");
        let text = error.to_string();
        match at {
            0 => assert!(text.contains("not an mfsha snapshot"), "{text}"),
            9 => assert!(matches!(error, LoadError::Version { .. }), "{text}"),
            _ => assert!(matches!(error, LoadError::Checksum { .. }), "byte {at}: {text}"),
        }
    }
    for len in [0, 10, 31, snapshot.len() / 3, snapshot.len() - 1] {
        let error = State::from_snapshot(&snapshot[..len]).expect_err("truncated accepted");
        assert!(error.to_string().contains(&format!("({len} bytes)")), "{error}");
    }
}

/// Re-seals a damaged snapshot body with a valid checksum, to reach the parser behind it.
fn reseal(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

#[test]
fn checksummed_garbage_is_still_refused() {
    let snapshot = sample().state.to_snapshot();
    let body = snapshot[..snapshot.len() - 4].to_vec();
    let mut huge_count = body.clone();
    huge_count[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = State::from_snapshot(&reseal(huge_count)).unwrap_err();
    assert!(error.to_string().contains("body ends first"), "{error}");
    let mut bad_table = body.clone();
    bad_table[28] = 200;
    let error = State::from_snapshot(&reseal(bad_table)).unwrap_err();
    assert!(error.to_string().contains("unknown table tag 200"), "{error}");
    let mut trailing = body.clone();
    trailing.push(0);
    let error = State::from_snapshot(&reseal(trailing)).unwrap_err();
    assert!(error.to_string().contains("1 bytes after the last record"), "{error}");
    let mut wrong_index = body;
    wrong_index[12] ^= 1;
    let error = State::from_snapshot(&reseal(wrong_index)).unwrap_err();
    assert!(error.to_string().contains("header says applied index"), "{error}");
}

#[test]
fn bad_records_name_table_and_key() {
    let image = sample().state.all_records();
    let mut bad_value = image.clone();
    let at = bad_value.iter().position(|(t, _, _)| *t == Table::Inode).unwrap();
    bad_value[at].2 = vec![0xff];
    match State::load(bad_value).unwrap_err() {
        LoadError::Record { table, key, reason } => {
            assert_eq!(table, "inode");
            assert_eq!(key, "0000000000000001");
            assert!(reason.contains("does not decode"), "{reason}");
        }
        other => panic!("expected a record error, got {other}"),
    }
    let mut bad_key = image.clone();
    bad_key.push((Table::Chunk, vec![1, 2, 3], vec![]));
    let text = State::load(bad_key).unwrap_err().to_string();
    assert!(text.contains("chunk/010203") && text.contains("3 bytes"), "{text}");
    let mut twice = image.clone();
    twice.push(image[0].clone());
    assert!(State::load(twice).unwrap_err().to_string().contains("twice"));
    let no_meta: Vec<Record> = image.iter().filter(|r| r.0 != Table::Meta).cloned().collect();
    let text = State::load(no_meta).unwrap_err().to_string();
    assert!(text.contains("meta/applied_index"), "{text}");
}

#[test]
fn inconsistent_records_are_refused() {
    let image = sample().state.all_records();
    // Drop one directory entry: its file now has more links than names.
    let lost: Vec<Record> = {
        let mut seen = false;
        image
            .iter()
            .filter(|r| {
                let skip = !seen && r.0 == Table::Dirent;
                seen |= skip;
                !skip
            })
            .cloned()
            .collect()
    };
    match State::load(lost).unwrap_err() {
        LoadError::Inconsistent(problems) => {
            assert!(problems.iter().any(|p| p.contains("nlink")), "{problems:?}");
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
    // Drop a chunk record: a file references a chunk the table lacks.
    let no_chunks: Vec<Record> = image.iter().filter(|r| r.0 != Table::Chunk).cloned().collect();
    let text = State::load(no_chunks).unwrap_err().to_string();
    assert!(text.contains("is not in the chunk table"), "{text}");
}
