//! `mfsha demo`, the README's first command: one process starts a master, a metalogger, three
//! chunkservers and a FUSE mount, the mount works, and Ctrl-C (SIGINT) unmounts and stops everything.
//!
//! Needs /dev/fuse and root (or user FUSE mounts); without them the demo fails and so does
//! this test, with the demo's own message. `demo_user.rs` runs the demo as a normal user.

use crate::util::{mfsha, signal, tail, Daemon};
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Held by each test that runs `mfsha demo`: the demo takes the standard ports (9419–9442)
/// when they look free, so two at once could both pick them and one would fail to bind.
pub static STANDARD_PORTS: Mutex<()> = Mutex::new(());

const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn demo_brings_up_a_mounted_cluster_and_ctrl_c_stops_it_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mfsha-demo");
    let _ports = STANDARD_PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Daemon::spawn(tmp.path(), "demo", &["demo", dir.to_str().unwrap()]);
    let banner = wait_for_banner(&mut demo);
    let mnt = dir.join("mnt");
    assert!(is_mounted(&mnt), "the banner was printed but {} is not mounted", mnt.display());
    let master = master_address(&banner);

    // The mount is a working filesystem backed by the cluster.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(mnt.join("hello.bin"), &data).unwrap();
    fs::create_dir(mnt.join("sub")).unwrap();
    assert_eq!(fs::read(mnt.join("hello.bin")).unwrap(), data);
    let status = mfsha(&["status", "-H", &master, "--json"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["chunkservers"].as_array().map(|a| a.len()), Some(3), "{json}");
    assert_eq!(json["loggers"].as_array().map(|a| a.len()), Some(1), "a metalogger: {json}");
    let info = mfsha(&["fileinfo", "-H", &master, "/hello.bin"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("copy 2"), "goal 2 by default:\n{text}");

    // Ctrl-C: everything stops, the mount point is released, no daemon is left behind.
    let pids = daemon_pids(&banner);
    assert_eq!(pids.len(), 6, "master, metalogger, three chunkservers, mount:\n{banner}");
    signal(demo.pid().unwrap(), libc::SIGINT);
    let exit = demo.stop_after_signal(STOP_LIMIT);
    assert!(exit.success(), "demo exited with {exit}; log:\n{}", tail(&demo.log, 40));
    assert!(!is_mounted(&mnt), "{} is still mounted after the demo stopped", mnt.display());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon pid {pid} outlived the demo");
    }
}

/// Waits for the demo's "is running" banner; fails with its log if it exits or takes too long.
pub fn wait_for_banner(demo: &mut Daemon) -> String {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let log = fs::read_to_string(&demo.log).unwrap_or_default();
        if log.contains("Stop everything with Ctrl-C") {
            return log;
        }
        assert!(demo.is_running(), "mfsha demo exited before it was up; log:\n{log}");
        assert!(Instant::now() < deadline, "mfsha demo not up within {START_LIMIT:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_mounted(path: &Path) -> bool {
    let wanted = path.to_str().unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().any(|line| line.split(' ').nth(4) == Some(wanted))
}

/// The master's client address from the banner line "master client port HOST:PORT, ...".
pub fn master_address(banner: &str) -> String {
    let line = banner.lines().find(|l| l.contains("master client port")).expect(banner);
    let after = line.split("master client port ").nth(1).unwrap();
    after.split(',').next().unwrap().trim().to_string()
}

/// The pids the banner lists ("  NAME  pid N  log PATH").
pub fn daemon_pids(banner: &str) -> Vec<u32> {
    banner
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "pid")?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// `mfsha bench fuse` (small sizes): it starts its own cluster on free ports, runs fio, the
/// metadata and the small-file suites on the mount and on a local directory, prints a row
/// with both columns for each figure, and leaves nothing mounted or running.
#[test]
fn bench_fuse_measures_the_mount_and_a_local_directory_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench");
    let args = ["--size-mib", "8", "--files", "40", "--small-files", "20", "--random-seconds", "1"];
    let mut all = vec!["bench", "fuse", "--dir", dir.to_str().unwrap()];
    all.extend(args);
    let out = mfsha(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench fuse failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .map(|l| {
            l.split('|').filter_map(|c| c.trim().trim_end_matches(" %").parse().ok()).collect()
        })
        .collect();
    assert_eq!(rows.len(), 13, "one row per figure:\n{text}");
    for row in &rows {
        assert!(
            row.len() == 3 && row[0] > 0.0 && row[1] > 0.0,
            "mount and local measured: {row:?}\n{text}"
        );
    }
    assert!(!is_mounted(&dir.join("cluster/mnt")), "the bench's mount is still there");
}
