//! `mfsha demo`, the README's first command: one process starts the appliance — two masters,
//! the metalogger as the voting witness, three chunkservers and a FUSE mount — and the mount
//! works. SIGKILL of the leading master: the demo says so and starts it again, the other master
//! leads within seconds, files written before and after read back right, and the killed master
//! comes back as a follower; `mfsha member transfer-leader` then hands it the lead back. Ctrl-C
//! (SIGINT) unmounts and stops everything.
//!
//! Needs /dev/fuse and root (or user FUSE mounts); without them the demo fails and so does
//! this test, with the demo's own message. `demo_user.rs` runs the demo as a normal user.

use crate::util::{mfsha, signal, tail, Daemon};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Held by each test that runs `mfsha demo`: the demo takes the standard ports (9419–9447)
/// when they look free, so two at once could both pick them and one would fail to bind.
pub static STANDARD_PORTS: Mutex<()> = Mutex::new(());

const START_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// The daemons the banner lists: two masters, the metalogger, three chunkservers, the mount.
pub const DAEMONS: usize = 7;

#[test]
fn demo_appliance_survives_a_killed_leader_and_transfer_leader_moves_the_lead() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mfsha-demo");
    let _ports = STANDARD_PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut demo = Daemon::spawn(tmp.path(), "demo", &["demo", dir.to_str().unwrap()]);
    let banner = wait_for_banner(&mut demo);
    let mnt = dir.join("mnt");
    assert!(is_mounted(&mnt), "the banner was printed but {} is not mounted", mnt.display());
    let masters = master_address(&banner);
    let mut pids = daemon_pids(&banner);
    assert_eq!(pids.len(), DAEMONS, "masters, metalogger, chunkservers, mount:\n{banner}");

    // The mount is a working filesystem backed by the cluster; status lists three nodes.
    let before: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(mnt.join("before.bin"), &before).unwrap();
    fs::create_dir(mnt.join("sub")).unwrap();
    assert_eq!(sha256(&fs::read(mnt.join("before.bin")).unwrap()), sha256(&before));
    let json = status_json(&masters);
    assert_eq!(json["chunkservers"].as_array().map(|a| a.len()), Some(3), "{json}");
    assert_eq!(json["loggers"].as_array().map(|a| a.len()), Some(1), "a metalogger: {json}");
    let nodes = json["nodes"].as_array().expect("a node table");
    assert_eq!(nodes.len(), 3, "two masters and the witness: {json}");
    assert_eq!(roles(&json, "leader").len(), 1, "one leader: {json}");
    let witness: Vec<&serde_json::Value> =
        nodes.iter().filter(|n| n["kind"] == "witness").collect();
    assert_eq!(witness.len(), 1, "the witness from the leader's view: {json}");
    assert_eq!(witness[0]["id"], 3, "{json}");
    check_every_daemons_metrics(&banner);
    crate::page::check_demo_pages(&banner);
    scraped_by_prometheus(&banner, tmp.path());
    let info = mfsha(&["fileinfo", "-H", &masters, "/before.bin"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("copy 2"), "goal 2 by default:\n{text}");

    // SIGKILL the leading master: the demo reports it and restarts it; the other one leads.
    let old = roles(&json, "leader")[0];
    let name = format!("master{old}");
    let pid = banner_pid(&banner, &name);
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    let new = wait_json(&masters, "a new leader", |j| {
        roles(j, "leader").first().copied().filter(|id| *id != old)
    });
    eprintln!("demo: node {old} killed, node {new} leads after {:?}", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(10), "failover took {:?}", killed.elapsed());
    let died = format!("the {name} (pid {pid}) died: signal: 9 (SIGKILL)");
    let log = wait_log(&demo, &died);
    let restarted = wait_log(&demo, &format!("demo: restarted the {name} (pid "));
    let new_pid = restarted_pid(&restarted, &name);
    assert!(log.contains("the end of its log"), "the death names the log:\n{log}");
    pids.push(new_pid);

    // The mount kept working: a file from before and one from after read back right.
    let after: Vec<u8> =
        (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    fs::write(mnt.join("after.bin"), &after).unwrap();
    assert_eq!(sha256(&fs::read(mnt.join("before.bin")).unwrap()), sha256(&before));
    assert_eq!(sha256(&fs::read(mnt.join("after.bin")).unwrap()), sha256(&after));
    // The restarted master is back, as a follower of the new leader.
    wait_json(&masters, "the restarted master as a follower", |j| {
        roles(j, "follower").contains(&old).then_some(())
    });

    // member transfer-leader: the lead goes back to the restarted master, status confirms.
    let out = mfsha(&["member", "transfer-leader", "-H", &masters, &old.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!("node {old} leads now")),
        "transfer-leader: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("the switch took"), "{said}");
    let json = status_json(&masters);
    assert_eq!(roles(&json, "leader"), vec![old], "status after the transfer: {json}");
    let out = mfsha(&["member", "transfer-leader", "-H", &masters, "3"]);
    assert!(!out.status.success(), "the witness is refused as leader");
    let list = mfsha(&["member", "list", "-H", &masters]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("witness: node 3"), "member list:\n{text}");
    assert_eq!(sha256(&fs::read(mnt.join("after.bin")).unwrap()), sha256(&after));

    // Ctrl-C: everything stops, the mount point is released, no daemon is left behind.
    signal(demo.pid().unwrap(), libc::SIGINT);
    let exit = demo.stop_after_signal(STOP_LIMIT);
    assert!(exit.success(), "demo exited with {exit}; log:\n{}", tail(&demo.log, 40));
    assert!(!is_mounted(&mnt), "{} is still mounted after the demo stopped", mnt.display());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon pid {pid} outlived the demo");
    }
}

/// `mfsha status -H MASTERS --json`.
fn status_json(masters: &str) -> serde_json::Value {
    let out = mfsha(&["status", "-H", masters, "--json"]);
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The ids of the nodes whose own answer is `role`.
fn roles(json: &serde_json::Value, role: &str) -> Vec<u64> {
    let nodes = json["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    nodes.iter().filter(|n| n["role"] == role).filter_map(|n| n["id"].as_u64()).collect()
}

/// Polls `mfsha status` until `found` gives something (20 s at most).
fn wait_json<T>(masters: &str, what: &str, found: impl Fn(&serde_json::Value) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = mfsha(&["status", "-H", masters, "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(value) = found(&json) {
            return value;
        }
        assert!(Instant::now() < deadline, "no {what} within 20 s; last status: {json}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (20 s at most) until the demo's log holds `line`; returns the log.
fn wait_log(demo: &Daemon, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = fs::read_to_string(&demo.log).unwrap_or_default();
        if log.contains(line) {
            return log;
        }
        assert!(Instant::now() < deadline, "the demo did not say {line:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid in "demo: restarted the NAME (pid N)".
fn restarted_pid(log: &str, name: &str) -> u32 {
    let marker = format!("demo: restarted the {name} (pid ");
    let rest = log.rsplit(&marker).next().unwrap();
    rest.split(')').next().unwrap().parse().unwrap()
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
    let Some(line) = mounts.lines().find(|line| line.split(' ').nth(4) == Some(wanted)) else {
        return false;
    };
    // `findmnt -t fuse.mfsha` finds it: the type after the " - " separator.
    assert!(line.contains(" - fuse.mfsha "), "the mount's type is not fuse.mfsha: {line}");
    true
}

/// Every master's client address (`-H` form) from the banner line "masters' client ports
/// A,B, chunkservers on ...".
pub fn master_address(banner: &str) -> String {
    let line = banner.lines().find(|l| l.contains("masters' client ports")).expect(banner);
    let after = line.split("masters' client ports ").nth(1).unwrap();
    after.split(", chunkservers").next().unwrap().trim().to_string()
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

/// The pid of daemon `name` in the banner.
fn banner_pid(banner: &str, name: &str) -> u32 {
    let line = banner.lines().find(|l| l.split_whitespace().next() == Some(name)).expect(banner);
    daemon_pids(line)[0]
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// `mfsha bench fuse` (small sizes): it starts its own clusters on free ports (the appliance,
/// then a single master), runs fio, the metadata and the small-file suites on each mount and
/// on a local directory, prints a row with the three columns for each figure, and leaves
/// nothing mounted or running.
#[test]
fn bench_fuse_measures_the_appliance_a_single_master_and_a_local_directory_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench");
    // Any directory stands for the other filesystem's mount (MooseFS in docs/benchmarks.md).
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let args = [
        "--size-mib",
        "8",
        "--files",
        "40",
        "--small-files",
        "20",
        "--random-seconds",
        "1",
        "--tar-entries",
        "300",
        "--big-dir",
        "500",
    ];
    // This test's own process stands for the other filesystem's master.
    let beside_pid = std::process::id().to_string();
    let mut all = vec!["bench", "fuse", "--dir", dir.to_str().unwrap()];
    all.extend(["--beside", other.to_str().unwrap(), "--beside-master-pid", &beside_pid]);
    all.extend(args);
    let out = mfsha(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench fuse failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The main table runs from its header to the first line that is not a row.
    let main_table = text.lines().skip_while(|l| !l.starts_with("| figure |")).skip(2);
    let rows: Vec<Vec<f64>> = main_table
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            l.split('|')
                .filter_map(|c| c.trim().trim_end_matches(" %").trim_end_matches('×').parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 25, "one row per figure:\n{text}");
    assert!(text.contains("tarball: 300 entries"), "the tarball is made once:\n{text}");
    for row in &rows {
        assert!(
            row.len() == 6 && row[..5].iter().all(|v| *v > 0.0),
            "appliance, single master, the other mount and local measured, with both ratios: \
             {row:?}\n{text}"
        );
    }
    assert!(text.contains("| appliance vs beside |"), "the comparison column:\n{text}");
    assert!(text.contains("big dir: ls -f | wc -l, cold"), "the large directory:\n{text}");
    // Memory per file: the appliance's two masters, the single master and the one beside.
    let memory = text.lines().filter(|l| l.contains(" bytes per file")).count();
    assert_eq!(memory, 4, "each master's memory per file:\n{text}");
    assert!(text.contains("floors: FUSE round trip "), "the floors, measured:\n{text}");
    // The floor table: one row per single-threaded figure with steps, a multiple per mfsha
    // column ("812 µs = 3.1× 260").
    let floor_rows: Vec<Vec<f64>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| figure | steps |"))
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            l.split('|')
                .filter_map(|c| c.split_once(" µs = ").and_then(|(_, r)| r.split_once('×')))
                .filter_map(|(times, _)| times.trim().parse().ok())
                .collect()
        })
        .collect();
    assert_eq!(floor_rows.len(), 9, "a floor row per single-threaded figure:\n{text}");
    for row in &floor_rows {
        assert!(row.len() == 2 && row.iter().all(|x| *x > 0.0), "{row:?}\n{text}");
    }
    let left: Vec<_> = std::fs::read_dir(&other).unwrap().collect();
    assert!(left.is_empty(), "the bench left files in the other mount: {left:?}");
    for cluster in ["appliance", "single-master"] {
        let mnt = dir.join(cluster).join("mnt");
        assert!(!is_mounted(&mnt), "the bench's mount {} is still there", mnt.display());
    }
}

/// Every metrics address the banner names (two masters, three chunkservers, the logger, the
/// mount) answers `/metrics` that promtool accepts, each with its daemon's figures.
fn check_every_daemons_metrics(banner: &str) {
    use crate::metrics::{http_get, need, parse, promtool_check, value, PROMTOOL};
    need(PROMTOOL);
    let line = banner.lines().find_map(|l| l.trim().strip_prefix("Prometheus metrics: "));
    let urls: Vec<&str> = line.expect("the banner names the metrics").split(' ').collect();
    assert_eq!(urls.len(), DAEMONS, "every daemon's metrics: {urls:?}");
    let mut daemons = Vec::new();
    for url in urls {
        let (addr, path) = url.trim_start_matches("http://").split_once('/').expect(url);
        let text = http_get(addr, &format!("/{path}"));
        promtool_check(url, &text);
        let samples = parse(&text);
        let info: Vec<_> = samples.iter().filter(|s| s.name == "mfsha_build_info").collect();
        assert_eq!(info.len(), 1, "{url}: {text}");
        daemons.push(info[0].labels["daemon"].clone());
        if info[0].labels["daemon"] != "mount" && info[0].labels["daemon"] != "chunkserver" {
            assert!(value(&samples, "mfsha_raft_term", &[]) >= 1.0, "{url}: {text}");
        }
    }
    daemons.sort();
    let expected = [
        "chunkserver",
        "chunkserver",
        "chunkserver",
        "logger-witness",
        "master",
        "master",
        "mount",
    ];
    assert_eq!(daemons, expected);
}

/// A real Prometheus scraping every daemon the demo's banner lists answers queries for the
/// term, chunk health and per-disk space.
fn scraped_by_prometheus(banner: &str, dir: &Path) {
    use crate::metrics::{need, Prometheus, PROMETHEUS};
    need(PROMETHEUS);
    let line = banner.lines().find_map(|l| l.trim().strip_prefix("Prometheus metrics: "));
    let urls = line.expect("the banner names the metrics").split(' ');
    let targets: Vec<String> = urls
        .filter_map(|u| u.trim_start_matches("http://").split_once('/').map(|(a, _)| a.to_string()))
        .collect();
    let prometheus = Prometheus::start(dir, &targets);
    let up =
        prometheus.wait("up", |r| r.len() == targets.len() && r.iter().all(|(_, v)| *v == 1.0));
    assert_eq!(up.len(), DAEMONS);
    prometheus.wait("mfsha_raft_term", |r| r.len() == 3 && r.iter().all(|(_, v)| *v >= 1.0));
    prometheus.wait("mfsha_master_chunks{state=\"stable\"}", |r| r.len() == 1 && r[0].1 >= 1.0);
    prometheus.wait("mfsha_chunkserver_disk_free_bytes", |r| {
        r.len() == 3 && r.iter().all(|(_, v)| *v > 0.0)
    });
}
