//! The master as a process: crash safety of acknowledged mutations, `mfsha status`, config
//! errors, and hostile frames on the client port.

use crate::session::{Client, Session};
use crate::util::{mfsha, tail, Cluster};
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, Request};
use mfsha_proto::types::{FileKind, Ino, SetAttr, Status, ROOT_INO};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the master at `addr` is leader (a group of one elects itself).
async fn wait_leader(addr: &str, cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(client) = Client::connect(addr).await {
            let request = Request::anonymous(ClientOp::Status);
            if let Ok(Ok(ClientReply::Status(s))) = client.call(request).await {
                if s.role == "leader" {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("master at {addr} did not become leader in 30 s; log:\n{}", cluster.master_log());
}

/// A started master (a group of one) that leads, its client address, and a runtime.
fn leading_master() -> (Cluster, String, tokio::runtime::Runtime) {
    let mut cluster = Cluster::new();
    cluster.start_master();
    let addr = cluster.master_addr();
    let rt = runtime();
    rt.block_on(wait_leader(&addr, &cluster));
    (cluster, addr, rt)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

// ---------------------------------------------------------------- crash test

/// What a worker believes its directory holds: name → (kind, mode, inode if known).
type Model = BTreeMap<String, (FileKind, u32, Option<Ino>)>;

/// A worker's record: its directory, the acknowledged model, and the request that was in
/// flight when the master died (its effect may or may not be durable, but never partial).
struct WorkerLog {
    dir: Ino,
    acked: Model,
    in_flight: Option<(String, Model)>,
    count: usize,
}

/// One random mutation on the worker's model: the request and the model after it.
fn next_op(rng: &mut StdRng, dir: Ino, model: &Model, n: usize) -> (ClientOp, Model, String) {
    let mut after = model.clone();
    let names: Vec<&String> = model.keys().collect();
    let pick = |rng: &mut StdRng| names[rng.gen_range(0..names.len())].clone();
    let mode = rng.gen_range(0o400..=0o777);
    let choice = if names.is_empty() { 0 } else { rng.gen_range(0..10) };
    match choice {
        0..=2 => {
            let name = format!("f{n}");
            after.insert(name.clone(), (FileKind::File, mode, None));
            let op = ClientOp::Mknod {
                parent: dir,
                name: name.clone(),
                kind: FileKind::File,
                mode,
                umask: 0,
                rdev: 0,
            };
            (op, after, format!("create {name}"))
        }
        3 => {
            let name = format!("d{n}");
            after.insert(name.clone(), (FileKind::Directory, mode | 0o700, None));
            let op =
                ClientOp::Mkdir { parent: dir, name: name.clone(), mode: mode | 0o700, umask: 0 };
            (op, after, format!("mkdir {name}"))
        }
        4 | 5 => {
            let name = pick(rng);
            let new_name = format!("r{n}");
            let entry = after.remove(&name).unwrap();
            after.insert(new_name.clone(), entry);
            let op = ClientOp::Rename {
                parent: dir,
                name: name.clone(),
                new_parent: dir,
                new_name: new_name.clone(),
                flags: 0,
            };
            (op, after, format!("rename {name} {new_name}"))
        }
        6 | 7 => {
            let name = pick(rng);
            let (kind, ..) = after.remove(&name).unwrap();
            let op = if kind == FileKind::Directory {
                ClientOp::Rmdir { parent: dir, name: name.clone() }
            } else {
                ClientOp::Unlink { parent: dir, name: name.clone() }
            };
            (op, after, format!("remove {name}"))
        }
        _ => {
            let name = pick(rng);
            let (kind, _, ino) = after[&name];
            let ino = ino.expect("acknowledged entries have a known inode");
            after.insert(name.clone(), (kind, mode, Some(ino)));
            let set = SetAttr { mode: Some(mode), ..SetAttr::default() };
            (
                ClientOp::SetAttr { ino, set, by_handle: false },
                after,
                format!("chmod {mode:o} {name}"),
            )
        }
    }
}

/// Runs random mutations until the master goes away; returns what was acknowledged.
async fn worker(addr: String, k: usize, seed: u64, acked: Arc<AtomicUsize>) -> WorkerLog {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(k as u64));
    let mut session = Session::open(&addr).await;
    let dir = session.mkdir(ROOT_INO, &format!("w{k}")).await;
    let mut log = WorkerLog { dir, acked: Model::new(), in_flight: None, count: 0 };
    for n in 0.. {
        let (op, mut after, what) = next_op(&mut rng, dir, &log.acked, n);
        match session.mutate(op).await {
            Ok(Ok(reply)) => {
                if let ClientReply::Attr(attr) = reply {
                    if let Some(entry) = after.values_mut().find(|e| e.2.is_none()) {
                        entry.2 = Some(attr.ino);
                    }
                }
                log.acked = after;
                log.count += 1;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(status)) => {
                panic!("worker {k}: {what} was refused with {status:?}; the model says it is valid")
            }
            Err(_) => {
                log.in_flight = Some((what, after));
                return log;
            }
        }
    }
    unreachable!()
}

fn strip_inos(model: &Model) -> BTreeMap<String, (FileKind, u32)> {
    model.iter().map(|(n, (k, m, _))| (n.clone(), (*k, *m))).collect()
}

fn check_worker(k: usize, log: &WorkerLog, found: &BTreeMap<String, (FileKind, u32, Ino)>) {
    let seen: BTreeMap<String, (FileKind, u32)> =
        found.iter().map(|(n, (kind, mode, _))| (n.clone(), (*kind, *mode))).collect();
    let before = strip_inos(&log.acked);
    let matches_before = seen == before;
    let matches_after = log.in_flight.as_ref().is_some_and(|(_, after)| seen == strip_inos(after));
    assert!(
        matches_before || matches_after,
        "worker {k}: directory after restart matches neither the acknowledged state nor the \
         state after the in-flight op {:?}\nfound: {seen:?}\nacked: {before:?}",
        log.in_flight.as_ref().map(|(w, _)| w)
    );
    for (name, (_, _, ino)) in &log.acked {
        if let (Some(ino), Some((_, _, found_ino))) = (ino, found.get(name)) {
            assert_eq!(ino, found_ino, "worker {k}: {name} changed inode across the crash");
        }
    }
}

#[test]
fn acknowledged_mutations_survive_sigkill_and_nothing_is_half_applied() {
    let seed: u64 = std::env::var("MFSHA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash test seed {seed} (rerun with MFSHA_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let kill_after = rng.gen_range(1000..1600);
    let workers = 6;
    let (mut cluster, addr, rt) = leading_master();
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> =
        (0..workers).map(|k| rt.spawn(worker(addr.clone(), k, seed, acked.clone()))).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < kill_after {
        assert!(
            Instant::now() < deadline,
            "only {} mutations acknowledged in 120 s; log:\n{}",
            acked.load(Ordering::Relaxed),
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    cluster.kill_master();
    let logs: Vec<WorkerLog> = rt.block_on(async {
        let mut logs = Vec::new();
        for t in tasks {
            logs.push(t.await.expect("worker task"));
        }
        logs
    });
    let total: usize = logs.iter().map(|l| l.count).sum();
    println!("SIGKILL after {total} acknowledged mutations (threshold {kill_after})");
    assert!(total >= 1000);

    cluster.start_master();
    rt.block_on(async {
        wait_leader(&addr, &cluster).await;
        let session = Session::open(&addr).await;
        for (k, log) in logs.iter().enumerate() {
            let found = session.list(log.dir).await;
            check_worker(k, log, &found);
        }
    });
    let status = cluster.master.as_mut().unwrap().stop(Duration::from_secs(30));
    assert!(
        status.success(),
        "master exited with {status} after SIGTERM; log:\n{}",
        cluster.master_log()
    );
    let data_dir = cluster.master_data_dir();
    let check = mfsha(&["meta", "check", data_dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "meta check failed: {}{}",
        stdout,
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("invariants hold"), "{stdout}");
}

// ---------------------------------------------------------------- status

#[test]
fn status_reports_role_indexes_counts_and_clients_as_text_and_json() {
    let (mut cluster, addr, rt) = leading_master();
    let session = rt.block_on(async {
        let mut session = Session::open(&addr).await;
        let top = session.mkdir(ROOT_INO, "status-a").await;
        session.mkdir(top, "status-b").await;
        session.mkdir(top, "status-c").await;
        session
    });

    let text = mfsha(&["status", "-H", &addr]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "status failed: {stdout}{}",
        String::from_utf8_lossy(&text.stderr)
    );
    for expected in [
        "node 1 is leader",
        "commit index",
        "applied index",
        "4 directories",
        "clients: 1",
        "chunkservers: 0",
        "loggers: 0",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }

    let json = mfsha(&["status", "-H", &addr, "--json"]);
    assert!(
        json.status.success(),
        "status --json failed: {}",
        String::from_utf8_lossy(&json.stderr)
    );
    let s: ClusterStatus =
        serde_json::from_slice(&json.stdout).expect("status --json prints a ClusterStatus");
    assert_eq!(s.node_id, 1);
    assert_eq!(s.role, "leader");
    assert_eq!(s.leader_id, 1);
    assert!(s.term >= 1);
    assert!(s.applied_index >= 4, "three mkdirs and a session were applied: {s:?}");
    assert!(s.applied_index <= s.commit_index);
    assert_eq!(s.directories, 4);
    assert_eq!(s.files, 0);
    assert_eq!(s.inodes, 4);
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.clients[0].session, session.id);
    assert!(s.chunkservers.is_empty());
    drop(session);

    let stopped = cluster.master.as_mut().unwrap().stop(Duration::from_secs(30));
    assert!(stopped.success(), "master exited with {stopped}; log:\n{}", cluster.master_log());
    let down = mfsha(&["status", "-H", &addr]);
    assert!(!down.status.success());
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("cannot reach"), "{stderr}");
}

// ---------------------------------------------------------------- config errors

fn run_master_expecting_failure(cluster: &Cluster, yaml: &str) -> String {
    let path = cluster.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(crate::util::mfsha_bin())
        .args(["master", "-c", path.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "master started with a bad config:\n{yaml}");
    assert!(!stderr.contains("panicked"), "a bad config must not panic:\n{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "error must name the file:\n{stderr}");
    stderr
}

#[test]
fn bad_config_stops_the_master_with_file_key_and_reason() {
    let cluster = Cluster::new();
    let data = cluster.master_data_dir();
    let unknown =
        format!("data_dir: {}\nraft:\n  tick_ms: 100\n  elektion_ticks: 3\n", data.display());
    let stderr = run_master_expecting_failure(&cluster, &unknown);
    assert!(stderr.contains("elektion_ticks") && stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("election_ticks"), "should list the allowed keys: {stderr}");

    let bad_type = format!("data_dir: {}\nraft:\n  tick_ms: fast\n", data.display());
    let stderr = run_master_expecting_failure(&cluster, &bad_type);
    assert!(stderr.contains("raft.tick_ms"), "{stderr}");

    let bad_addr = format!("data_dir: {}\nlisten:\n  client: localhost\n", data.display());
    let stderr = run_master_expecting_failure(&cluster, &bad_addr);
    assert!(stderr.contains("listen.client") && stderr.contains("IP:PORT"), "{stderr}");
    assert!(!data.exists(), "a master with a bad config must not create its data directory");
}

#[test]
fn a_taken_port_stops_the_master_naming_it_and_its_cause_once() {
    let cluster = Cluster::new();
    let config = cluster.write_master_config();
    let taken = format!("127.0.0.1:{}", cluster.ports.logger);
    let _holder = std::net::TcpListener::bind(&taken).unwrap();
    let out = std::process::Command::new(crate::util::mfsha_bin())
        .args(["master", "-c", config.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the master started on a taken port:\n{stderr}");
    assert!(stderr.contains(&format!("cannot listen for logger on {taken}")), "{stderr}");
    assert!(stderr.contains("is another master running?"), "{stderr}");
    // Error reports print the chain of causes: each must appear once.
    assert_eq!(stderr.matches("Address already in use").count(), 1, "{stderr}");
}

// ---------------------------------------------------------------- hostile frames

/// Sends `bytes` on a fresh connection and returns its local address once the master closed it.
fn send_and_expect_close(addr: &str, bytes: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let local = stream.local_addr().unwrap().to_string();
    stream.write_all(bytes).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "no reply to a bad frame, got {} bytes", rest.len()),
        // A reset also closes the connection.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("master did not close the connection from {local}: {e}"),
    }
    local
}

fn frame(len: u32, version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.push(version);
    out.extend_from_slice(&7u64.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[test]
fn bad_frames_close_only_their_connection_and_are_logged_with_the_peer() {
    let (mut cluster, addr, rt) = leading_master();
    let mut good = rt.block_on(async { Session::open(&addr).await });
    let oversized = send_and_expect_close(&addr, &[0x7f, 0xff, 0xff, 0xff, 1, 0, 0]);
    let garbage_body = [0xffu8; 40];
    let wrong_version = send_and_expect_close(&addr, &frame(9 + 40, 99, &garbage_body));
    let garbage =
        send_and_expect_close(&addr, &frame(9 + 40, mfsha_proto::PROTOCOL_VERSION, &garbage_body));
    let short = send_and_expect_close(&addr, &[0, 0, 0, 3, 1, 2, 3]);

    rt.block_on(async {
        let top = good.mkdir(ROOT_INO, "still-works").await;
        match good.read(ClientOp::GetAttr { ino: top }).await.unwrap() {
            Ok(ClientReply::Attr(attr)) => assert_eq!(attr.kind, FileKind::Directory),
            other => panic!("getattr after bad frames answered {other:?}"),
        }
        assert_eq!(
            good.read(ClientOp::GetAttr { ino: 999_999 }).await.unwrap(),
            Err(Status::NotFound)
        );
    });
    let log_path = cluster.path().join("master.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    for (peer, reason) in [
        (oversized, "exceeds the limit"),
        (wrong_version, "protocol version 99"),
        (garbage, "does not decode"),
        (short, "shorter than"),
    ] {
        let wanted = format!("bad frame from {peer}");
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(&wanted)) {
                assert!(line.contains(reason), "log line for {peer} should say {reason:?}: {line}");
                assert!(line.contains("WARN"), "a bad frame is a warning: {line}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {wanted:?}:\n{}",
                tail(&log_path, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(cluster.master.as_mut().unwrap().is_running());
}

/// A session id seen elsewhere (a log, the status page) is useless on another connection:
/// the master refuses the request and the resume without the session's secret, logs the
/// thief's address, and the owner goes on.
#[test]
fn a_stolen_session_id_is_refused_and_logged() {
    let (cluster, addr, rt) = leading_master();
    rt.block_on(async {
        let mut owner = Session::open(&addr).await;
        let thief = Client::connect(&addr).await.unwrap();
        let op = ClientOp::Mkdir { parent: ROOT_INO, name: "stolen".into(), mode: 0o755, umask: 0 };
        let request = Request { session: owner.id, seq: 1, uid: 0, gid: 0, groups: Vec::new(), op };
        assert_eq!(thief.call(request).await.unwrap(), Err(Status::BadSession));
        let resume = ClientOp::Hello {
            session: Some(owner.id),
            client_info: "thief".into(),
            subdir: "/".into(),
            proof: None,
            token: 1,
            version: mfsha_proto::client::VERSION,
        };
        let request = Request::anonymous(resume);
        assert_eq!(thief.call(request).await.unwrap(), Err(Status::BadSession));
        owner.mkdir(ROOT_INO, "mine").await;
    });
    let log = cluster.master_log();
    for line in [
        "refused a request naming a session this connection did not take up with Hello",
        "refused to resume a session without its secret",
    ] {
        assert!(log.contains(line), "the master log lacks {line:?}:\n{log}");
    }
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(
        refusals.iter().all(|l| l.contains("127.0.0.1:")),
        "the address is named: {refusals:?}"
    );
}

// ---------------------------------------------------------------- entries that do not decode

/// A committed entry this build cannot read (a newer peer's, or a damaged log) stops the
/// master for good with exit status 65, which the systemd unit does not restart on, naming
/// the index and what to do; nothing after the last good entry is applied, and starting it
/// again stops it again at the same place instead of skipping the entry.
#[test]
fn a_committed_entry_that_does_not_decode_stops_the_master_for_good_naming_it() {
    use raft::Storage as _;
    let (mut cluster, addr, rt) = leading_master();
    rt.block_on(async {
        Session::open(&addr).await.mkdir(ROOT_INO, "before").await;
    });
    let status = cluster.master.as_mut().unwrap().stop(Duration::from_secs(30));
    assert!(status.success(), "master exited with {status}; log:\n{}", cluster.master_log());

    let data_dir = cluster.master_data_dir();
    let (good, bad) = {
        let mut store = mfsha_raft::RaftStore::open(
            &data_dir,
            <mfsha_meta::State as mfsha_raft::StateMachine>::TABLES,
        )
        .expect("open the stopped master's store");
        let last = store.last_index().unwrap();
        let mut hard_state = store.hard_state().clone();
        let mut entry = raft::eraftpb::Entry::default();
        (entry.index, entry.term, entry.data) = (last + 1, hard_state.term, vec![0xff; 16].into());
        hard_state.commit = last + 1;
        store.append(&[entry], Some(&hard_state), true).expect("append the bad entry");
        (store.applied().0, last + 1)
    };

    for attempt in 1..=2 {
        let config = cluster.master_config_path();
        let mut master = crate::util::Daemon::spawn(
            cluster.path(),
            "master",
            &["master", "-c", config.to_str().unwrap()],
        );
        let status = master.stop_after_signal(Duration::from_secs(30));
        let log = cluster.master_log();
        assert_eq!(status.code(), Some(65), "start {attempt}: exit {status}; log:\n{log}");
        let wanted = format!("committed entry {bad} does not decode");
        assert!(log.contains(&wanted), "start {attempt}: the log lacks {wanted:?}:\n{log}");
        assert!(log.contains("upgrade this node") && log.contains("runbook 5"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    let store = mfsha_raft::RaftStore::open(
        &data_dir,
        <mfsha_meta::State as mfsha_raft::StateMachine>::TABLES,
    )
    .unwrap();
    assert_eq!(store.applied().0, good, "nothing from the bad entry on was applied");
    drop(store);
    let check = mfsha(&["meta", "check", data_dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    for unit in ["mfsha-master.service", "mfsha-logger.service"] {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd").join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("RestartPreventExitStatus=65"), "{unit} restarts a halted node");
    }
}
