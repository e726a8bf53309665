//! Disk-format and store tests against real files in temporary directories.

use super::*;
use crate::config::DataDir;
use std::path::{Path, PathBuf};

fn open_disk(path: &Path) -> Disk {
    Disk::open(&DataDir { path: path.to_path_buf(), marked_for_removal: false }).unwrap()
}

fn store_at(path: &Path) -> Store {
    Store::open(vec![open_disk(path)], false)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn chunk_file(root: &Path, id: ChunkId, version: u32) -> PathBuf {
    root.join(format::subdir_name(id)).join(format::file_name(id, version))
}

fn flip_byte(path: &Path, at: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    file.write_all_at(&b, at).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn write_read_round_trip_across_blocks_and_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(0x1_0042, 1).unwrap();
    let path = chunk_file(tmp.path(), 0x1_0042, 1);
    assert!(path.exists(), "chunk file at {}", path.display());
    assert!(path.parent().unwrap().ends_with("42"));
    let data = pattern(300_000, 7);
    store.write_blocking(0x1_0042, 1, 1000, &data).unwrap();
    assert_eq!(store.read_blocking(0x1_0042, 1, 1000, 300_000).unwrap(), data);
    // Before the written range and past the end: zeros.
    assert_eq!(store.read_blocking(0x1_0042, 1, 0, 1000).unwrap(), vec![0u8; 1000]);
    let past = store.read_blocking(0x1_0042, 1, 400_000, 70_000).unwrap();
    assert!(past.iter().all(|&b| b == 0));
    // A second write far away leaves a hole that reads as zeros and verifies.
    store.write_blocking(0x1_0042, 1, 10 << 20, b"tail").unwrap();
    let hole = store.read_blocking(0x1_0042, 1, 5 << 20, 65536).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    assert_eq!(store.read_blocking(0x1_0042, 1, 10 << 20, 4).unwrap(), b"tail");
    assert_eq!(store.stat(0x1_0042).unwrap(), (1, (10 << 20) + 4));
    assert_eq!(fs::metadata(&path).unwrap().len(), DATA_OFFSET + (10 << 20) + 4);
    store.sync_blocking(0x1_0042, 1).unwrap();
    // Everything survives a reopen (new scan).
    drop(store);
    let store = store_at(tmp.path());
    assert_eq!(store.read_blocking(0x1_0042, 1, 1000, 300_000).unwrap(), data);
    assert_eq!(store.list(), vec![(0x1_0042, 1, false)]);
}

#[test]
fn partial_overwrites_keep_neighbouring_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(5, 1).unwrap();
    let mut expect = pattern(200_000, 1);
    store.write_blocking(5, 1, 0, &expect).unwrap();
    store.write_blocking(5, 1, 65_530, b"0123456789abcdef").unwrap();
    expect[65_530..65_546].copy_from_slice(b"0123456789abcdef");
    store.write_blocking(5, 1, 199_999, b"XY").unwrap();
    expect.truncate(199_999);
    expect.extend_from_slice(b"XY");
    assert_eq!(store.read_blocking(5, 1, 0, 200_001).unwrap(), expect);
}

#[test]
fn a_flipped_byte_is_never_returned_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    let mut reports = store.subscribe_reports();
    store.create_blocking(9, 3).unwrap();
    store.write_blocking(9, 3, 0, &pattern(4 * 65536, 3)).unwrap();
    store.sync_blocking(9, 3).unwrap();
    flip_byte(&chunk_file(tmp.path(), 9, 3), DATA_OFFSET + 2 * 65536 + 77);
    assert_eq!(store.read_blocking(9, 3, 0, 4 * 65536), Err(Status::Checksum));
    assert_eq!(store.read_blocking(9, 3, 2 * 65536 + 100, 1), Err(Status::Checksum));
    // Undamaged blocks still read.
    assert_eq!(store.read_blocking(9, 3, 0, 65536).unwrap(), pattern(65536, 3));
    // The metrics count every detection, and only the bytes that were verified.
    let counters = &store.disks[0].counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&counters.crc_errors), 2, "two reads met the flipped byte");
    assert_eq!(load(&counters.read_bytes), 65536, "only the good read counts");
    assert_eq!(load(&counters.written_bytes), 4 * 65536);
    assert_eq!(drain(&mut reports), vec![CsToMaster::Damaged { chunk_id: 9, version: 3 }]);
    assert!(drain(&mut reports).is_empty(), "reported once");
    // A partial write into the damaged block must not bless it with a fresh CRC.
    assert_eq!(store.write_blocking(9, 3, 2 * 65536 + 5, b"x"), Err(Status::Checksum));
    assert_eq!(store.verify_blocking(9, 3, 2 * 65536, 65536), Err(Status::Checksum));
    // A full-block overwrite replaces the damage with good data.
    store.write_blocking(9, 3, 2 * 65536, &pattern(65536, 9)).unwrap();
    assert_eq!(store.read_blocking(9, 3, 2 * 65536, 65536).unwrap(), pattern(65536, 9));
}

#[test]
fn a_flipped_crc_table_byte_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(10, 1).unwrap();
    store.write_blocking(10, 1, 0, &pattern(65536, 4)).unwrap();
    store.sync_blocking(10, 1).unwrap();
    flip_byte(&chunk_file(tmp.path(), 10, 1), CRC_TABLE_OFFSET + 1);
    assert_eq!(store.read_blocking(10, 1, 0, 10), Err(Status::Checksum));
}

/// The torn-write scheme: whichever part of a write reached the disk, a block never verifies
/// with data that is not what its CRC describes.
#[test]
fn torn_writes_are_detected_as_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(11, 1).unwrap();
    let old = pattern(65536, 1);
    let new = pattern(65536, 2);
    store.write_blocking(11, 1, 0, &old).unwrap();
    store.write_blocking(11, 1, 65536, &old).unwrap();
    store.sync_blocking(11, 1).unwrap();
    let path = chunk_file(tmp.path(), 11, 1);
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // Block 0: data landed, CRC did not.
    file.write_all_at(&new[..4096], DATA_OFFSET).unwrap();
    // Block 1: CRC landed, data did not.
    file.write_all_at(&block_crc(&new).to_le_bytes(), CRC_TABLE_OFFSET + 4).unwrap();
    file.sync_all().unwrap();
    drop(file);
    assert_eq!(store.read_blocking(11, 1, 0, 10), Err(Status::Checksum));
    assert_eq!(store.read_blocking(11, 1, 65536, 10), Err(Status::Checksum));
    // A torn extension: the file grew but the new block's CRC still says "zeros".
    store.create_blocking(12, 1).unwrap();
    let path = chunk_file(tmp.path(), 12, 1);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&new, DATA_OFFSET).unwrap();
    drop(file);
    drop(store);
    let store = store_at(tmp.path());
    assert_eq!(store.read_blocking(12, 1, 0, 100), Err(Status::Checksum));
}

#[test]
fn version_change_renames_atomically_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(0xAB, 1).unwrap();
    store.write_blocking(0xAB, 1, 0, b"data").unwrap();
    assert_eq!(store.set_version_blocking(0xAB, 7, 8), Err(Status::WrongVersion));
    store.set_version_blocking(0xAB, 1, 2).unwrap();
    store.set_version_blocking(0xAB, 1, 2).unwrap(); // a retried command is harmless
    assert!(!chunk_file(tmp.path(), 0xAB, 1).exists());
    assert!(chunk_file(tmp.path(), 0xAB, 2).exists());
    assert_eq!(store.read_blocking(0xAB, 1, 0, 4), Err(Status::WrongVersion));
    assert_eq!(store.read_blocking(0xAB, 2, 0, 4).unwrap(), b"data");
    let header = fs::read(chunk_file(tmp.path(), 0xAB, 2)).unwrap();
    assert_eq!(format::decode_header(&header[..24]), Ok((0xAB, 2)));
    drop(store);
    let store = store_at(tmp.path());
    assert_eq!(store.list(), vec![(0xAB, 2, false)]);
}

#[test]
fn interrupted_version_change_is_rolled_forward_at_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(0xCD, 4).unwrap();
    store.write_blocking(0xCD, 4, 0, b"abc").unwrap();
    store.sync_blocking(0xCD, 4).unwrap();
    drop(store);
    // Crash after the header write, before the rename.
    let path = chunk_file(tmp.path(), 0xCD, 4);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&format::encode_header(0xCD, 5), 0).unwrap();
    drop(file);
    // And a replication that never finished.
    let tmp_file = tmp.path().join("CD").join(format::temp_name(0x1CD, 1));
    fs::write(&tmp_file, b"partial").unwrap();
    let store = store_at(tmp.path());
    assert_eq!(store.list(), vec![(0xCD, 5, false)]);
    assert!(chunk_file(tmp.path(), 0xCD, 5).exists() && !path.exists());
    assert!(!tmp_file.exists(), "temporary files are removed at scan");
    assert_eq!(store.read_blocking(0xCD, 5, 0, 3).unwrap(), b"abc");
}

#[test]
fn truncate_cuts_inside_a_block_and_bumps_the_version() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(3, 1).unwrap();
    let data = pattern(300_000, 5);
    store.write_blocking(3, 1, 0, &data).unwrap();
    store.truncate_blocking(3, 1, 2, 70_000).unwrap();
    assert_eq!(store.stat(3).unwrap(), (2, 70_000));
    let back = store.read_blocking(3, 2, 0, 300_000).unwrap();
    assert_eq!(&back[..70_000], &data[..70_000]);
    assert!(back[70_000..].iter().all(|&b| b == 0));
    // Grow again with zeros, same version.
    store.truncate_blocking(3, 2, 2, 200_000).unwrap();
    let back = store.read_blocking(3, 2, 60_000, 20_000).unwrap();
    assert_eq!(&back[..10_000], &data[60_000..70_000]);
    assert!(back[10_000..].iter().all(|&b| b == 0));
    drop(store);
    let store = store_at(tmp.path());
    assert_eq!(store.stat(3).unwrap(), (2, 200_000));
    assert_eq!(store.verify_blocking(3, 2, 0, 4 << 20), Ok(4 * 65536));
}

#[test]
fn duplicate_makes_an_independent_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(20, 1).unwrap();
    store.write_blocking(20, 1, 0, b"original").unwrap();
    store.duplicate_blocking(21, 1, 20, 1).unwrap();
    assert_eq!(store.duplicate_blocking(21, 1, 20, 1), Err(Status::Exists));
    store.write_blocking(21, 1, 0, b"modified").unwrap();
    assert_eq!(store.read_blocking(20, 1, 0, 8).unwrap(), b"original");
    assert_eq!(store.read_blocking(21, 1, 0, 8).unwrap(), b"modified");
    let header = fs::read(chunk_file(tmp.path(), 21, 1)).unwrap();
    assert_eq!(format::decode_header(&header[..24]), Ok((21, 1)));
}

#[test]
fn delete_removes_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(30, 2).unwrap();
    assert_eq!(store.delete_blocking(30, 1), Err(Status::WrongVersion));
    store.delete_blocking(30, 0).unwrap();
    assert!(!chunk_file(tmp.path(), 30, 2).exists());
    assert_eq!(store.read_blocking(30, 2, 0, 1), Err(Status::NotFound));
    assert_eq!(store.delete_blocking(30, 0), Err(Status::NotFound));
}

#[test]
fn builder_installs_only_complete_copies_and_replaces_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(40, 1).unwrap(); // a stale copy the build replaces
    let data = pattern(3 * 65536 + 100, 8);
    let mut b = store.build_begin(40, 2).unwrap();
    store.build_append(&mut b, &data[..2 * 65536]).unwrap();
    store.build_append(&mut b, &data[2 * 65536..]).unwrap();
    assert_eq!(store.stat(40).unwrap(), (1, 0), "not visible before finish");
    store.build_finish(b).unwrap();
    assert_eq!(store.stat(40).unwrap(), (2, data.len() as u64));
    assert_eq!(store.read_blocking(40, 2, 0, data.len() as u32).unwrap(), data);
    assert!(!chunk_file(tmp.path(), 40, 1).exists(), "replaced copy removed");
    let mut b = store.build_begin(41, 1).unwrap();
    store.build_append(&mut b, b"half").unwrap();
    store.build_abort(b);
    assert_eq!(store.stat(41), Err(Status::NotFound));
    assert!(!tmp.path().join("29").join(format::temp_name(41, 1)).exists());
}

#[test]
fn disk_replaced_by_a_file_is_marked_damaged_and_its_chunks_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (good, bad) = (tmp.path().join("good"), tmp.path().join("bad"));
    fs::create_dir(&good).unwrap();
    fs::create_dir(&bad).unwrap();
    // Put chunk 50 on `bad` by opening a store with only that disk.
    let good_disk = open_disk(&good);
    let bad_disk = open_disk(&bad);
    let store = Store::open(vec![bad_disk], false);
    store.create_blocking(50, 1).unwrap();
    store.write_blocking(50, 1, 0, b"x").unwrap();
    store.sync_blocking(50, 1).unwrap();
    drop(store);
    let store = Store::open(vec![good_disk, open_disk(&bad)], false);
    let mut reports = store.subscribe_reports();
    assert_eq!(store.list(), vec![(50, 1, false)]);
    // The disk goes away: the directory is replaced by a file (root ignores permissions).
    fs::rename(&bad, tmp.path().join("old")).unwrap();
    fs::write(&bad, b"not a directory").unwrap();
    assert_eq!(store.read_blocking(50, 1, 0, 1), Err(Status::Io));
    assert!(store.disks[1].is_damaged());
    assert!(!store.disks[0].is_damaged());
    assert_eq!(drain(&mut reports), vec![CsToMaster::Lost(vec![50])]);
    assert!(store.list().is_empty());
    let infos = store.disk_infos();
    assert!(infos[1].damaged && !infos[0].damaged);
    // New chunks go to the healthy disk.
    store.create_blocking(51, 1).unwrap();
    assert!(chunk_file(&good, 51, 1).exists());
}

#[test]
fn injected_fault_and_health_check_mark_the_disk_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(60, 1).unwrap();
    store.create_blocking(61, 1).unwrap();
    let mut reports = store.subscribe_reports();
    store.disks[0].inject_fault();
    store.check_disks();
    assert!(store.disks[0].is_damaged());
    let mut lost = match drain(&mut reports).as_slice() {
        [CsToMaster::Lost(ids)] => ids.clone(),
        other => panic!("expected one Lost report, got {other:?}"),
    };
    lost.sort();
    assert_eq!(lost, vec![60, 61]);
    assert_eq!(store.create_blocking(62, 1), Err(Status::NoSpace), "no healthy disk left");
}

#[test]
fn marked_for_removal_disk_takes_no_new_chunks_but_reports_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let store = store_at(&a);
    store.create_blocking(70, 1).unwrap();
    drop(store);
    let marked = Disk::open(&DataDir { path: a.clone(), marked_for_removal: true }).unwrap();
    let store = Store::open(vec![marked, open_disk(&b)], false);
    assert_eq!(store.list(), vec![(70, 1, true)]);
    store.create_blocking(71, 1).unwrap();
    assert!(chunk_file(&b, 71, 1).exists());
    assert!(store.disk_infos()[0].marked_for_removal);
}

#[test]
fn bounds_and_versions_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(80, 1).unwrap();
    assert_eq!(store.create_blocking(80, 1), Err(Status::Exists));
    let end = CHUNK_BYTES as u32;
    assert_eq!(store.write_blocking(80, 1, end - 1, b"ab"), Err(Status::Invalid));
    assert_eq!(store.read_blocking(80, 1, end - 1, 2), Err(Status::Invalid));
    assert_eq!(store.read_blocking(80, 1, 0, MAX_IO_BYTES + 1), Err(Status::Invalid));
    assert_eq!(store.write_blocking(80, 2, 0, b"a"), Err(Status::WrongVersion));
    assert_eq!(store.read_blocking(81, 1, 0, 1), Err(Status::NotFound));
    store.write_blocking(80, 1, end - 1, b"z").unwrap();
    assert_eq!(store.read_blocking(80, 1, end - 1, 1).unwrap(), b"z");
}

#[test]
fn idle_write_descriptors_are_synced_and_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    store.create_blocking(90, 1).unwrap();
    store.write_blocking(90, 1, 0, b"abc").unwrap();
    let chunk = store.get(90).unwrap();
    assert!(chunk.state.read().unwrap().open.is_some());
    store.close_idle_blocking(Duration::ZERO);
    assert!(chunk.state.read().unwrap().open.is_none());
    assert_eq!(store.read_blocking(90, 1, 0, 3).unwrap(), b"abc");
}

/// The reports sent so far.
fn drain(reports: &mut tokio::sync::broadcast::Receiver<CsToMaster>) -> Vec<CsToMaster> {
    std::iter::from_fn(|| reports.try_recv().ok()).collect()
}

/// The space kept free (`leave_free_mib`) counts as used and takes no new chunk; a store
/// with no disk that has a chunk's worth beyond it answers "no space", and nothing else.
#[test]
fn the_space_kept_free_takes_no_new_chunk_and_counts_as_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let (kept, plain) = (open_disk(&b), open_disk(&a));
    let (_, free) = kept.space().unwrap();
    // Disk b keeps all its free space and a little more: nothing is usable on it.
    let kept = kept.with_leave_free(free + (1 << 30));
    let store = Store::open(vec![kept, plain], false);
    store.create_blocking(90, 1).unwrap();
    assert!(chunk_file(&a, 90, 1).exists(), "the new chunk went to the disk with room");
    let info = &store.disk_infos()[0];
    assert_eq!(info.used_bytes, info.total_bytes, "the reserve is reported as used: {info:?}");
    assert!(!info.damaged, "a full disk is not a damaged one");
    drop(store);
    // Both keep everything: a new chunk is refused with NoSpace, existing ones still serve.
    let keep_all = |path: &Path| {
        let disk = open_disk(path);
        let (_, free) = disk.space().unwrap();
        disk.with_leave_free(free + (1 << 30))
    };
    let store = Store::open(vec![keep_all(&a), keep_all(&b)], false);
    assert_eq!(store.create_blocking(91, 1), Err(Status::NoSpace));
    store.write_blocking(90, 1, 0, b"still writable").unwrap();
    assert_eq!(store.read_blocking(90, 1, 0, 14).unwrap(), b"still writable");
    assert!(store.disk_infos().iter().all(|d| !d.damaged));
}
