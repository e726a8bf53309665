//! A wiped follower re-joins by streamed snapshot from a big namespace (issue 9, item 4): the
//! group is made with `MFSHA_RESEED_FILES` files (default 1,000,000) by `mfsha meta synth`,
//! master 2 is stopped, its data directory removed and it is started again. While it is sent,
//! installs and catches up on the snapshot, and while the leader builds new snapshots of the
//! whole namespace off its Raft thread (every few entries here, with a writer running), the
//! leader's term and leadership must not change, and both masters' peak memory must stay
//! within the bound below.
//!
//! The memory bound, per process: twice the snapshot blob's size on disk, plus a fixed 1.5 GiB
//! for the in-memory state and RocksDB. The leader holds its state plus one stored blob, and
//! briefly a second one while a new one is built (the old one is still served); sending
//! streams the stored blob in 4 MiB parts instead of encoding a copy of it. The follower holds
//! the received blob (parsed without a copy) and the state and table records rebuilt from it.
//! What the bound rules out is the old paths' extra whole copies (the encoded message on the
//! sender, a parsed copy and a stored copy on the receiver), each one more blob.

use super::cluster::HaCluster;
use crate::util::mfsha;
use std::path::Path;
use std::time::{Duration, Instant};

/// Fixed allowance for what is not a blob: the state in memory (about 0.5 KiB per file in a
/// debug build), RocksDB's memtables and caches, the runtime.
const FIXED_BYTES: u64 = 1536 << 20;

fn files() -> u64 {
    std::env::var("MFSHA_RESEED_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// Peak resident memory (VmHWM) of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// Size of the largest snapshot file in a master's data directory.
fn snapshot_bytes(data_dir: &Path) -> u64 {
    let dir = data_dir.join("snapshots");
    let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.map(|f| f.unwrap().metadata().unwrap().len()).max().unwrap_or(0)
}

/// One metadata write through the leader (a goal change), for entries to snapshot.
fn write_once(cluster: &HaCluster, n: u64) {
    let path = format!("/synth/d0000/f{:04}", n % 1000);
    let goal = (1 + n % 3).to_string();
    let out = mfsha(&["setgoal", "-H", &cluster.client_addrs(), &goal, &path]);
    assert!(out.status.success(), "setgoal {path}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn wiped_follower_reseeds_from_a_big_namespace_without_an_election() {
    let files = files();
    // Snapshots every few entries, so that the leader (and later the re-seeded follower)
    // build snapshots of the whole namespace while the test watches.
    let cluster = HaCluster::configured("raft:\n  snapshot_every_entries: 30\n");
    let started = Instant::now();
    let config = cluster.master_config_path(0);
    let files_arg = files.to_string();
    let out = mfsha(&["meta", "synth", "--files", &files_arg, "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "meta synth: {}", String::from_utf8_lossy(&out.stderr));
    println!("seeded {files} files: {:?}", started.elapsed());
    let mut cluster = cluster.started(0);
    cluster.wait_caught_up(1, Duration::from_secs(120));
    println!("cluster up, master 2 seeded by snapshot: {:?}", started.elapsed());
    let leader = cluster.wait_leader(Duration::from_secs(10));
    assert_eq!(leader, 0, "master 1 made the group and leads");
    for n in 0..40 {
        write_once(&cluster, n); // past one snapshot interval: the leader builds one
    }
    let before = cluster.status(leader).expect("leader status");

    let rejoin = Instant::now();
    let status = cluster.masters[1].daemon.as_mut().unwrap().stop(Duration::from_secs(30));
    assert!(status.success(), "master 2 exited with {status}");
    let data_dir = cluster.path().join("master2");
    std::fs::remove_dir_all(&data_dir).unwrap();
    cluster.start_master(1);
    let follower_pid = cluster.masters[1].daemon.as_ref().unwrap().pid().unwrap();
    let leader_pid = cluster.masters[0].daemon.as_ref().unwrap().pid().unwrap();

    let deadline = rejoin + Duration::from_secs(150);
    let mut n = 100;
    let caught_up = loop {
        let now = cluster.status(leader).expect("the leader answers during the re-seed");
        assert_eq!(
            (now.role.as_str(), now.term, now.leader_id),
            ("leader", before.term, before.leader_id),
            "leadership changed during the re-seed\n{}",
            cluster.logs()
        );
        if let Some(follower) = cluster.status(1) {
            assert_eq!(follower.term, before.term, "the re-seeded follower moved the term");
            if follower.applied_index >= now.commit_index && follower.files == before.files {
                break follower;
            }
        }
        assert!(Instant::now() < deadline, "master 2 did not catch up\n{}", cluster.logs());
        write_once(&cluster, n); // the leader keeps applying (and snapshotting) meanwhile
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "re-seeded: {files} files at index {} in {:?} ({} writes meanwhile)",
        caught_up.applied_index,
        rejoin.elapsed(),
        n - 100
    );
    assert_eq!(caught_up.files, files, "every file reached the re-seeded follower");

    let blob = snapshot_bytes(&cluster.path().join("master1"));
    let bound = FIXED_BYTES + 2 * blob;
    for (name, pid) in [("leader", leader_pid), ("re-seeded follower", follower_pid)] {
        let peak = peak_rss(pid);
        println!("{name}: peak RSS {} MiB (bound {} MiB)", peak >> 20, bound >> 20);
        assert!(peak < bound, "{name} peaked at {} MiB, over {} MiB", peak >> 20, bound >> 20);
    }
    println!("snapshot blob: {} MiB; whole test {:?}", blob >> 20, started.elapsed());
}
