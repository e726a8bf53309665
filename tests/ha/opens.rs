//! Open files are the leader's memory (`crates/master-ha/src/server/opens.rs`): an unlinked
//! file held open on one mount must outlive leader kills — a new leader knows nothing of it
//! until that mount re-registers — and be freed once closed.

use super::cluster::HaCluster;
use super::mount_all;
use crate::util::mfsha;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// Unlinked files the leader keeps (its status's `sustained_inodes`).
fn reserved(cluster: &HaCluster) -> u64 {
    let leader = cluster.wait_leader(Duration::from_secs(30));
    cluster.status(leader).expect("the leader answers its status").sustained_inodes
}

fn wait_reserved(cluster: &HaCluster, want: u64, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let now = reserved(cluster);
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: {now} reserved files after {limit:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drop_page_cache() {
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop the page cache (needs root)");
}

#[test]
fn an_unlinked_file_held_open_outlives_leader_kills_and_is_freed_once_closed() {
    let mut cluster = HaCluster::start(2);
    let mut holder = mount_all(&cluster, "holder");
    let mut other = mount_all(&cluster, "other");
    fs::create_dir(holder.path("open")).unwrap();
    let set = mfsha(&["settrashtime", "-r", "0", "/open", "-H", &cluster.client_addrs()]);
    assert!(set.status.success(), "settrashtime: {}", String::from_utf8_lossy(&set.stderr));
    let data: Vec<u8> =
        (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut written = File::create(holder.path("open/f")).unwrap();
    written.write_all(&data).unwrap();
    written.sync_all().unwrap();
    drop(written);
    let mut held = File::open(holder.path("open/f")).unwrap();
    // Another mount removes it: the holder's session alone keeps it.
    fs::remove_file(other.path("open/f")).unwrap();
    wait_reserved(&cluster, 1, Duration::from_secs(10), "after the unlink");
    std::thread::sleep(Duration::from_secs(1)); // several of the leader's freeing rounds
    assert_eq!(reserved(&cluster), 1, "a file held open was freed");

    for round in 0..2 {
        let leader = cluster.wait_leader(Duration::from_secs(30));
        cluster.kill_master(leader);
        cluster.wait_leader_except(leader, Duration::from_secs(30));
        // The other mount comes back first; the holder has not been heard from yet, so the
        // new leader must not free anything.
        fs::write(other.path(&format!("open/after{round}")), b"x").unwrap();
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(reserved(&cluster), 1, "round {round}: freed before the holder re-registered");
        // The holder reads through its handle, from the chunkservers, not the page cache.
        drop_page_cache();
        let mut back = Vec::new();
        held.seek(SeekFrom::Start(0)).unwrap();
        held.read_to_end(&mut back).unwrap();
        assert!(
            back == data,
            "round {round}: the open file reads back {} bytes, changed",
            back.len()
        );
        fs::metadata(holder.path("open")).unwrap(); // the holder talks to the new leader
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(reserved(&cluster), 1, "round {round}: freed while held after re-registering");
        cluster.start_master(leader);
        cluster.wait_caught_up(leader, Duration::from_secs(30));
    }

    let files_before = cluster.status(cluster.wait_leader(Duration::from_secs(30))).unwrap().files;
    drop(held);
    // The mount releases a closed file after its release delay (2 s); the leader frees it.
    wait_reserved(&cluster, 0, Duration::from_secs(20), "after the close");
    let files_after = cluster.status(cluster.wait_leader(Duration::from_secs(30))).unwrap().files;
    assert_eq!(files_after + 1, files_before, "the freed file is gone from the metadata");
    holder.stop();
    other.stop();
}
