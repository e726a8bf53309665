//! Prometheus `/metrics` on every daemon (issue 11, item 1): the appliance (two masters, the
//! witness logger, three chunkservers) and a mount serving `-o metrics=...`. Each daemon's
//! output passes `promtool check metrics` and carries the cluster's real figures; then a real
//! Prometheus server (Debian's `prometheus` package) scrapes them every second and its HTTP
//! API answers the same values back.

use crate::ha::cluster::HaCluster;
use crate::mount::Mount;
use crate::util::{free_port, tail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PROMTOOL: &str = "/usr/bin/promtool";
pub(crate) const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Files written through the mount, one chunk each: the chunk counts must match.
const FILES: usize = 3;

/// One sample of the text format: metric name, labels, value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A plain HTTP/1.0 GET on loopback; the body of a 200 answer, or a panic saying what failed.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "GET {addr}{path}: {head}"
    );
    body.to_string()
}

/// Parses the text exposition format (what mfsha writes: no escapes in label values).
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad {line:?}"));
                let labels = inner
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        samples.push(Sample { name, labels, value });
    }
    samples
}

/// The samples named `name` whose labels include every pair of `labels`.
pub(crate) fn find<'a>(
    samples: &'a [Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a Sample> {
    let matches = |s: &&Sample| {
        s.name == name
            && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    };
    samples.iter().filter(matches).collect()
}

/// The one sample `name{labels}`, or a panic showing what there was.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}: expected one sample, found {found:?}");
    found[0].value
}

pub(crate) fn need(path: &str) {
    assert!(
        Path::new(path).is_file(),
        "{path} is missing: install Debian's `prometheus` package (apt-get install prometheus; \
         scripts/setup.sh does), which provides promtool and the Prometheus server"
    );
}

/// `promtool check metrics` on `text`; panics with its complaints.
pub(crate) fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PROMTOOL}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on {what}: {said}\n{text}"
    );
}

/// A Prometheus server, killed when dropped (also when the test fails).
pub(crate) struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    pub(crate) fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mfsha\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        );
        std::fs::write(&config, yaml).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROMETHEUS}: {e}"));
        Prometheus { child, addr, log }
    }

    /// The instant vector `query` returns: (labels, value) per series.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let body = http_get(&self.addr, &path);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{query}: {json}");
        let results = json["data"]["result"].as_array().cloned().unwrap_or_default();
        results
            .into_iter()
            .map(|r| {
                let v: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// Polls `query` until `done` accepts its answer (bounded), returning that answer.
    pub(crate) fn wait(
        &self,
        query: &str,
        done: impl Fn(&[(serde_json::Value, f64)]) -> bool,
    ) -> Vec<(serde_json::Value, f64)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = TcpStream::connect(&self.addr).is_ok();
            let answer = if ready { self.query(query) } else { Vec::new() };
            if done(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never answered {query} as expected (last: {answer:?}); log:\n{}",
                tail(&self.log, 30)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn percent_encode(text: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
    text.bytes()
        .map(|b| if keep(b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Every daemon's metrics endpoint, by name.
fn endpoints(cluster: &HaCluster, mount_port: u16) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for master in &cluster.masters {
        all.push((format!("master{}", master.id), format!("127.0.0.1:{}", master.ports.http)));
    }
    all.push(("witness".into(), format!("127.0.0.1:{}", cluster.witness_http_port)));
    for (i, port) in cluster.chunkserver_http.iter().enumerate() {
        all.push((format!("chunkserver{i}"), format!("127.0.0.1:{port}")));
    }
    all.push(("mount".into(), format!("127.0.0.1:{mount_port}")));
    all
}

/// Scrapes every endpoint until the cluster's figures settle: every chunk stable at its goal,
/// the witness following the leader's changelog.
fn scrape_settled(cluster: &HaCluster, mount_port: u16) -> BTreeMap<String, Vec<Sample>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scraped: BTreeMap<String, Vec<Sample>> = endpoints(cluster, mount_port)
            .into_iter()
            .map(|(name, addr)| {
                let text = http_get(&addr, "/metrics");
                // Kept with the logs (MFSHA_KEEP_TEST_DIR=1 keeps the directory).
                std::fs::write(cluster.path().join(format!("metrics-{name}.txt")), &text).unwrap();
                promtool_check(&name, &text);
                (name, parse(&text))
            })
            .collect();
        let leader = cluster.leader().map(|i| format!("master{}", i + 1));
        let figure = |name, labels: &[(&str, &str)]| {
            leader.as_ref().map_or(0.0, |l| value(&scraped[l], name, labels))
        };
        let stable = figure("mfsha_master_chunks", &[("state", "stable")]);
        let loggers = figure("mfsha_master_loggers_connected", &[]);
        let following = value(&scraped["witness"], "mfsha_logger_connected", &[]);
        let acked = leader
            .as_ref()
            .is_some_and(|l| find(&scraped[l], "mfsha_master_logger_acked_index", &[]).len() == 1);
        if stable == FILES as f64 && loggers == 1.0 && following == 1.0 && acked {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never counted {FILES} stable chunks and the witness following it \
             (last: {stable} stable, {loggers} loggers; witness following: {following});\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn check_raft(scraped: &BTreeMap<String, Vec<Sample>>) -> f64 {
    let raft_nodes = ["master1", "master2", "witness"];
    let terms: Vec<f64> =
        raft_nodes.iter().map(|n| value(&scraped[*n], "mfsha_raft_term", &[])).collect();
    assert!(terms.iter().all(|t| *t >= 1.0 && *t == terms[0]), "terms {terms:?}");
    let leaders: Vec<&&str> = raft_nodes
        .iter()
        .filter(|n| value(&scraped[**n], "mfsha_raft_role", &[("role", "leader")]) == 1.0)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    let leader = &scraped[*leaders[0]];
    assert_eq!(value(leader, "mfsha_raft_serving", &[]), 1.0);
    let commit = value(leader, "mfsha_raft_commit_index", &[]);
    assert!(commit >= 1.0 && value(leader, "mfsha_raft_applied_index", &[]) <= commit);
    // The leader tracks all three members; the others are within a few entries.
    let lags = find(leader, "mfsha_raft_peer_lag_entries", &[]);
    assert_eq!(lags.len(), 3, "{lags:?}");
    assert!(value(leader, "mfsha_raft_leader_changes_total", &[]) >= 1.0);
    let committed = find(leader, "mfsha_raft_proposal_commit_seconds_count", &[]);
    assert!(committed[0].value >= FILES as f64, "proposals committed: {committed:?}");
    let syncs = find(leader, "mfsha_raft_log_sync_seconds_count", &[]);
    assert!(syncs[0].value >= 1.0, "{syncs:?}");
    terms[0]
}

fn check_master(leader: &[Sample]) {
    let states = ["missing", "endangered", "undergoal", "stable", "overgoal"];
    let counts: Vec<f64> =
        states.iter().map(|s| value(leader, "mfsha_master_chunks", &[("state", s)])).collect();
    assert_eq!(counts, vec![0.0, 0.0, 0.0, FILES as f64, 0.0], "{states:?}");
    assert_eq!(value(leader, "mfsha_master_chunkservers", &[]), 3.0);
    let copies: f64 =
        find(leader, "mfsha_master_chunkserver_chunks", &[]).iter().map(|s| s.value).sum();
    let goal = mfsha_proto::types::DEFAULT_GOAL as f64;
    assert_eq!(copies, FILES as f64 * goal, "copies on the chunkservers at goal {goal}");
    assert_eq!(value(leader, "mfsha_master_inodes", &[("kind", "file")]), FILES as f64);
    assert!(value(leader, "mfsha_master_sessions", &[]) >= 1.0);
    let creates = value(leader, "mfsha_master_client_request_seconds_count", &[("op", "create")]);
    assert!(creates >= FILES as f64, "creates answered: {creates}");
    let acked = find(leader, "mfsha_master_logger_acked_index", &[]);
    assert_eq!(acked.len(), 1, "the witness logger acknowledges what it stores: {acked:?}");
    assert!(acked[0].labels["logger"].starts_with("witness ("), "{acked:?}");
    assert!(acked[0].value >= 1.0, "{acked:?}");
    for kind in ["replicate", "delete", "other"] {
        value(leader, "mfsha_master_chunk_commands_in_flight", &[("kind", kind)]);
    }
}

fn check_chunkservers(scraped: &BTreeMap<String, Vec<Sample>>) -> f64 {
    let mut copies = 0.0;
    for i in 0..3 {
        let cs = &scraped[&format!("chunkserver{i}")];
        assert!(value(cs, "mfsha_chunkserver_disk_total_bytes", &[]) > 0.0);
        assert!(value(cs, "mfsha_chunkserver_disk_free_bytes", &[]) > 0.0);
        assert_eq!(value(cs, "mfsha_chunkserver_disk_damaged", &[]), 0.0);
        assert_eq!(value(cs, "mfsha_chunkserver_disk_crc_errors_total", &[]), 0.0);
        let chunks = value(cs, "mfsha_chunkserver_disk_chunks", &[]);
        assert_eq!(chunks, value(cs, "mfsha_chunkserver_chunks", &[]));
        copies += chunks;
    }
    let written: f64 = (0..3)
        .map(|i| {
            value(
                &scraped[&format!("chunkserver{i}")],
                "mfsha_chunkserver_disk_written_bytes_total",
                &[],
            )
        })
        .sum();
    assert!(written >= (FILES * FILE_BYTES) as f64, "bytes written on the disks: {written}");
    copies
}

const FILE_BYTES: usize = 300 * 1024;

#[test]
fn every_daemon_serves_metrics_that_promtool_accepts_and_prometheus_scrapes() {
    need(PROMTOOL);
    need(PROMETHEUS);
    let mut cluster = HaCluster::start(3);
    let masters = cluster.client_addrs();
    let mount_port = free_port();
    let option = format!("metrics=127.0.0.1:{mount_port}");
    let mut mount = Mount::start_in(
        cluster.path(),
        "mount",
        &masters,
        &["-o", &option],
        &masters.replace(',', "+"),
    );
    for i in 0..FILES {
        let data = vec![i as u8 + 1; FILE_BYTES];
        std::fs::write(mount.path(&format!("file{i}")), &data).unwrap();
    }
    let scraped = scrape_settled(&cluster, mount_port);
    let term = check_raft(&scraped);
    let leader_index = cluster.leader().expect("a leader");
    let leader = format!("master{}", leader_index + 1);
    check_master(&scraped[&leader]);
    let follower = format!("master{}", 2 - leader_index);
    let counted = find(&scraped[&follower], "mfsha_master_chunks", &[]);
    assert!(counted.is_empty(), "only the leader counts chunk health: {counted:?}");
    assert_eq!(value(&scraped[&follower], "mfsha_master_chunkservers", &[]), 3.0);
    let copies = check_chunkservers(&scraped);
    assert_eq!(copies, FILES as f64 * mfsha_proto::types::DEFAULT_GOAL as f64);
    let witness = &scraped["witness"];
    assert!(value(witness, "mfsha_logger_changelog_index", &[]) >= 1.0);
    assert_eq!(value(witness, "mfsha_logger_connected", &[]), 1.0);
    value(witness, "mfsha_logger_lag_entries", &[]);
    let mount_samples = &scraped["mount"];
    let mount_creates =
        value(mount_samples, "mfsha_mount_master_request_seconds_count", &[("op", "create")]);
    assert_eq!(mount_creates, FILES as f64);

    let dir = cluster.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> =
        endpoints(&cluster, mount_port).into_iter().map(|(_, a)| a).collect();
    let prometheus = Prometheus::start(&dir, &targets);
    let up = prometheus.wait("up == 1", |r| r.len() == targets.len());
    assert_eq!(up.len(), targets.len());
    let terms = prometheus.wait("mfsha_raft_term", |r| r.len() == 3);
    assert!(terms.iter().all(|(_, v)| *v == term), "terms in Prometheus {terms:?}, scraped {term}");
    let stable = prometheus.wait("max(mfsha_master_chunks{state=\"stable\"})", |r| !r.is_empty());
    assert_eq!(stable[0].1, FILES as f64);
    let free = prometheus.wait("mfsha_chunkserver_disk_free_bytes", |r| r.len() == 3);
    assert!(free.iter().all(|(_, v)| *v > 0.0), "{free:?}");
    let copies_seen = prometheus.wait("sum(mfsha_chunkserver_disk_chunks)", |r| !r.is_empty());
    assert_eq!(copies_seen[0].1, copies);
    let leaders = prometheus.wait("sum(mfsha_raft_role{role=\"leader\"})", |r| !r.is_empty());
    assert_eq!(leaders[0].1, 1.0);
    drop(prometheus);
    after_a_leader_kill(&mut cluster, &mount, mount_port, term);
    mount.stop();
}

/// SIGKILL of the leader: the new leader's term is higher and it counts the changes of
/// leader it saw; the mount counts its reconnect and the write it waited for.
fn after_a_leader_kill(cluster: &mut HaCluster, mount: &Mount, mount_port: u16, old_term: f64) {
    let old = cluster.wait_leader(Duration::from_secs(10));
    cluster.kill_master(old);
    let new = cluster.wait_leader_except(old, Duration::from_secs(30));
    std::fs::write(mount.path("after-the-kill"), b"written through the new leader").unwrap();
    let leader =
        parse(&http_get(&format!("127.0.0.1:{}", cluster.masters[new].ports.http), "/metrics"));
    assert!(value(&leader, "mfsha_raft_term", &[]) > old_term);
    assert_eq!(value(&leader, "mfsha_raft_role", &[("role", "leader")]), 1.0);
    // It followed the old leader, then led: two changes at least.
    assert!(value(&leader, "mfsha_raft_leader_changes_total", &[]) >= 2.0);
    let text = http_get(&format!("127.0.0.1:{mount_port}"), "/metrics");
    promtool_check("mount after the kill", &text);
    let samples = parse(&text);
    assert!(value(&samples, "mfsha_mount_master_reconnects_total", &[]) >= 1.0, "{text}");
    let creates = value(&samples, "mfsha_mount_master_request_seconds_count", &[("op", "create")]);
    assert_eq!(creates, FILES as f64 + 1.0);
}
