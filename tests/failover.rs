//! A group of three masters as real processes: mounts, chunkservers, metaloggers and tools
//! find the leader whatever order they are given the masters in, followers name the leader
//! (`WhoLeads`). When the leader hangs (SIGSTOP) and later when a leader dies (SIGKILL), the
//! mount's next change succeeds within seconds and the chunkserver and the metalogger follow
//! the new leader; the hung leader, resumed, steps down and names its successor.

use crate::mount::Mount;
use crate::util::{free_port, mfsha, tail, wait_for_port, Daemon, MasterPorts};
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, MasterClient, Request};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Three masters (node ids 1..=3) on loopback ports, and their daemons.
struct Group {
    dir: tempfile::TempDir,
    ports: Vec<MasterPorts>,
    masters: Vec<Daemon>,
}

impl Group {
    fn start() -> Group {
        let dir = tempfile::Builder::new().prefix("mfsha-failover-").tempdir().unwrap();
        let ports: Vec<MasterPorts> = (0..3).map(|_| MasterPorts::pick()).collect();
        let mut group = Group { dir, ports, masters: Vec::new() };
        for id in 1..=3 {
            let config = group.write_config(id);
            if id == 1 {
                crate::util::bootstrap(group.path(), &config);
            }
            let args = ["master", "-c", config.to_str().unwrap()];
            let daemon = Daemon::spawn(group.path(), &format!("master{id}"), &args);
            group.masters.push(daemon);
        }
        for id in 1..=3 {
            let log = group.masters[id - 1].log.clone();
            wait_for_port(&group.client(id), "master", &log, Duration::from_secs(30));
        }
        group
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The client address of master `id` (1-based).
    fn client(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1].client)
    }

    fn chunkserver_port(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1].chunkserver)
    }

    fn write_config(&self, id: usize) -> PathBuf {
        let p = self.ports[id - 1];
        let mut yaml = format!(
            "node_id: {id}\ncluster_id: failover-test\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{c}\n  chunkserver: 127.0.0.1:{cs}\n  logger: 127.0.0.1:{l}\n  peer: 127.0.0.1:{peer}\n  http: 127.0.0.1:{h}\nchunks:\n  replication_delay_init_ms: 1000\npeers:\n",
            data = self.path().join(format!("master{id}")).display(),
            c = p.client,
            cs = p.chunkserver,
            l = p.logger,
            peer = p.peer,
            h = p.http,
        );
        for other in (1..=3).filter(|o| *o != id) {
            let q = self.ports[other - 1];
            yaml += &format!(
                "  - {{id: {other}, addr: \"127.0.0.1:{}\", client: \"127.0.0.1:{}\", chunkserver: \"127.0.0.1:{}\", logger: \"127.0.0.1:{}\"}}\n",
                q.peer, q.client, q.chunkserver, q.logger
            );
        }
        let path = self.path().join(format!("master{id}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|id| format!("--- master{id} ---\n{}", tail(&self.masters[id - 1].log, 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The status of every master still answering, by node id.
    fn statuses(&self, rt: &tokio::runtime::Runtime) -> Vec<(usize, ClusterStatus)> {
        (1..=3)
            .filter_map(|id| {
                let status = rt.block_on(status_within(&self.client(id)))?;
                Some((id, status))
            })
            .collect()
    }

    /// Waits until one master other than `not` leads and every live master agrees on it.
    fn wait_leader(&self, rt: &tokio::runtime::Runtime, not: Option<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses = self.statuses(rt);
            let leaders: Vec<usize> =
                statuses.iter().filter(|(_, s)| s.role == "leader").map(|(id, _)| *id).collect();
            if let [leader] = leaders[..] {
                let agreed = statuses.iter().all(|(_, s)| s.leader_id == leader as u64);
                if agreed && Some(leader) != not {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single leader agreed on by the group within 30 s (statuses: {:?}); this is \
                 multi-master startup or election on main, not client code.\n{}",
                statuses
                    .iter()
                    .map(|(id, s)| (id, &s.role, s.leader_id, s.term))
                    .collect::<Vec<_>>(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until one of `among` leads and the others of `among` agree (the rest may be
    /// hung and not answer).
    fn wait_leader_among(&self, rt: &tokio::runtime::Runtime, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses: Vec<(usize, ClusterStatus)> = among
                .iter()
                .filter_map(|id| {
                    let status = rt.block_on(status_within(&self.client(*id)))?;
                    Some((*id, status))
                })
                .collect();
            let leader = statuses.iter().find(|(_, s)| s.role == "leader").map(|(id, _)| *id);
            if let Some(leader) = leader {
                if statuses.iter().all(|(_, s)| s.leader_id == leader as u64) {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new leader among {among:?} within 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until master `id`'s status satisfies `ok` (`what` and `daemon`'s log name a
    /// failure).
    fn wait_status(
        &self,
        rt: &tokio::runtime::Runtime,
        id: usize,
        what: &str,
        daemon: &Daemon,
        ok: impl Fn(&ClusterStatus) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = rt.block_on(status_within(&self.client(id)));
            if status.as_ref().is_some_and(&ok) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "master {id} does not list {what} within 15 s\n{}\n--- {} ---\n{}",
                self.logs(),
                daemon.name,
                tail(&daemon.log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_chunkservers(&self, rt: &tokio::runtime::Runtime, id: usize, n: usize, cs: &Daemon) {
        self.wait_status(rt, id, &format!("{n} chunkserver(s)"), cs, |s| s.chunkservers.len() == n);
    }

    fn wait_logger(&self, rt: &tokio::runtime::Runtime, id: usize, logger: &Daemon) {
        self.wait_status(rt, id, "the metalogger", logger, |s| s.loggers.len() == 1);
    }
}

/// A chunkserver told about every master, in the order `order` (node ids).
fn start_chunkserver(group: &Group, order: &[usize]) -> Daemon {
    let disk = group.path().join("cs-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let masters: Vec<String> = order.iter().map(|id| group.chunkserver_port(*id)).collect();
    let port = free_port();
    let yaml = format!(
        "data_dirs:\n  - {}\nmaster: [{}]\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:0\nheartbeat_ms: 200\nscrub_mib_per_sec: 0\n",
        disk.display(),
        masters.join(", ")
    );
    let config = group.path().join("chunkserver.yaml");
    std::fs::write(&config, yaml).unwrap();
    let daemon = Daemon::spawn(
        group.path(),
        "chunkserver",
        &["chunkserver", "-c", config.to_str().unwrap()],
    );
    let log = daemon.log.clone();
    wait_for_port(&format!("127.0.0.1:{port}"), "chunkserver", &log, Duration::from_secs(30));
    daemon
}

/// The status of the master at `addr`, `None` if it does not answer within a second.
async fn status_within(addr: &str) -> Option<ClusterStatus> {
    let client = MasterClient::connect_within(addr, Duration::from_secs(1)).await.ok()?;
    let request = Request::anonymous(ClientOp::Status);
    match client.call_timeout(request, 1000).await {
        Ok(Ok(ClientReply::Status(status))) => Some(*status),
        _ => None,
    }
}

/// A metalogger told about every master, in the order `order` (node ids).
fn start_logger(group: &Group, order: &[usize]) -> Daemon {
    let masters: Vec<String> =
        order.iter().map(|id| format!("\"127.0.0.1:{}\"", group.ports[id - 1].logger)).collect();
    let yaml = format!(
        "name: failover-logger\ndata_dir: {}\nmasters: [{}]\nhttp: 127.0.0.1:0\n",
        group.path().join("logger").display(),
        masters.join(", ")
    );
    let config = group.path().join("logger.yaml");
    std::fs::write(&config, yaml).unwrap();
    Daemon::spawn(group.path(), "logger", &["logger", "-c", config.to_str().unwrap()])
}

/// `WhoLeads` asked of master `id`.
fn who_leads(
    rt: &tokio::runtime::Runtime,
    group: &Group,
    id: usize,
) -> mfsha_proto::types::LeaderHint {
    try_who_leads(rt, group, id).unwrap_or_else(|e| panic!("WhoLeads on master {id}: {e}"))
}

/// `WhoLeads` asked of master `id`; a connection the master closed is an `Err`. A master that
/// steps down closes every connection it holds, so one made just before is swept too.
fn try_who_leads(
    rt: &tokio::runtime::Runtime,
    group: &Group,
    id: usize,
) -> Result<mfsha_proto::types::LeaderHint, String> {
    rt.block_on(async {
        let client = MasterClient::connect(&group.client(id)).await.map_err(|e| e.to_string())?;
        let request = Request::anonymous(ClientOp::WhoLeads);
        match client.call_timeout(request, 5000).await.map_err(|e| format!("{e:?}"))? {
            Ok(ClientReply::Leader(hint)) => Ok(hint),
            other => panic!("WhoLeads on master {id} answered {other:?}"),
        }
    })
}

/// Masters `order` (node ids) as a `-H` list.
fn list(group: &Group, order: &[usize]) -> String {
    order.iter().map(|id| group.client(*id)).collect::<Vec<_>>().join(",")
}

fn status_json(masters: &str) -> ClusterStatus {
    let out = mfsha(&["status", "-H", masters, "--json"]);
    assert!(out.status.success(), "status -H {masters}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A mkdir `name` on the mount right after the leader failed at `since`: must succeed within
/// 10 s of the failure; then `before` must still read back as `data`. Returns how long the
/// mkdir waited.
fn change_and_read(
    mount: &Mount,
    name: &str,
    before: &Path,
    data: &[u8],
    since: Instant,
    group: &Group,
) -> Duration {
    let dir = mount.path(name);
    within(Duration::from_secs(30), "mkdir after the leader failed", move || {
        std::fs::create_dir(&dir).expect("mkdir after failover")
    });
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the first change after the leader failed took {took:?}\n{}\n--- mount ---\n{}",
        group.logs(),
        mount.log()
    );
    let before = before.to_path_buf();
    let read_back = within(Duration::from_secs(30), "read after failover", move || {
        std::fs::read(&before).expect("read after failover")
    });
    assert!(read_back == data, "the file written before the failover reads back changed");
    took
}

/// Runs `f` on a thread and gives up after `limit` (a hung FUSE call must fail the test).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

#[test]
fn three_masters_clients_find_the_leader_and_follow_it_when_it_hangs_or_dies() {
    let rt = crate::mount::runtime();
    let mut group = Group::start();
    let leader = group.wait_leader(&rt, None);
    let followers: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    // Followers name the leader and its client address; the leader names itself.
    for id in 1..=3 {
        let hint = who_leads(&rt, &group, id);
        assert_eq!(hint.leader_id, leader as u64, "master {id}: {hint:?}");
        assert_eq!(hint.client, Some(group.client(leader)), "master {id}: {hint:?}");
        assert_eq!(hint.chunkserver, Some(group.chunkserver_port(leader)), "master {id}: {hint:?}");
        assert!(hint.term > 0, "{hint:?}");
    }
    // Every address list puts the leader last: each must be found anyway.
    let order = [followers[0], followers[1], leader];
    let cs = start_chunkserver(&group, &order);
    let logger = start_logger(&group, &order);
    group.wait_chunkservers(&rt, leader, 1, &cs);
    group.wait_logger(&rt, leader, &logger);
    let masters = list(&group, &order);
    let status = status_json(&masters);
    assert_eq!((status.node_id, status.role.as_str()), (leader as u64, "leader"));
    let source = masters.replace(',', "+");
    let mut mount = Mount::start_in(group.path(), "mnt", &masters, &[], &source);
    let before = mount.path("before");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&before, &data).unwrap();
    // A tool given only the mount path finds the leader among the mount's masters.
    let out = mfsha(&["getgoal", before.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "getgoal through the mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        mfsha(&["getgoal", "-H", &list(&group, &[followers[1], leader, followers[0]]), "/before"]);
    assert!(out.status.success(), "getgoal -H: {}", String::from_utf8_lossy(&out.stderr));

    // The leader hangs: its kernel still acknowledges, only silence tells.
    let hung = group.masters[leader - 1].pid().unwrap();
    crate::util::signal(hung, libc::SIGSTOP);
    let stopped = Instant::now();
    let second = group.wait_leader_among(&rt, &followers);
    let took = change_and_read(&mount, "after-stop", &before, &data, stopped, &group);
    group.wait_chunkservers(&rt, second, 1, &cs);
    eprintln!("failover: leader {leader} hung → {second}; first change after {took:?}");
    // Resumed, the old leader learns the newer term, steps down and names its successor.
    crate::util::signal(hung, libc::SIGCONT);
    let resumed = Instant::now();
    loop {
        // While it catches up it steps down, closing the connection this question came on.
        let hint = try_who_leads(&rt, &group, leader);
        if let Ok(hint) = &hint {
            if hint.leader_id == second as u64 {
                assert_eq!(hint.client, Some(group.client(second)), "{hint:?}");
                break;
            }
        }
        assert!(resumed.elapsed() < Duration::from_secs(15), "master {leader} still says {hint:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    group.masters[second - 1].kill();
    let killed = Instant::now();
    let third = group.wait_leader(&rt, Some(second));
    let took = change_and_read(&mount, "after-kill", &before, &data, killed, &group);
    group.wait_chunkservers(&rt, third, 1, &cs);
    group.wait_logger(&rt, third, &logger);
    let status = status_json(&masters);
    assert_eq!((status.node_id, status.role.as_str()), (third as u64, "leader"));
    let last_follower = (1..=3).find(|id| *id != second && *id != third).unwrap();
    let hint = who_leads(&rt, &group, last_follower);
    assert_eq!(hint.client, Some(group.client(third)));
    eprintln!("failover: leader {second} killed → {third}; first change after {took:?}");
    mount.stop();
}
