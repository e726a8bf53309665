//! Membership changes with real processes. Three masters run; a fourth, started with an empty
//! data directory and the three as its peers (their configurations do not name it), is added
//! with `mfsha member add`: it gets the leader's snapshot and log and becomes current, and
//! the mount's changes made meanwhile are on it. Then a first member is removed with `mfsha
//! member remove`: it stops by itself and refuses to start again. The three left (one of them
//! the new node, which only the replicated address book tells the others about) elect a new
//! leader when the leader is killed, and the mount goes on through it.

use crate::mount::{require_fuse, runtime, Mount};
use crate::util::{mfsha, tail, wait_for_port, Daemon, MasterPorts};
use mfsha_proto::client::{
    ClientOp, ClientReply, ClusterStatus, MasterClient, MemberKind, Request,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CLUSTER: &str = "membership-test";

/// Masters 1..=4 (ports picked for all; 4 starts later). Index `id - 1`.
struct Group {
    dir: tempfile::TempDir,
    ports: Vec<MasterPorts>,
    masters: Vec<Option<Daemon>>,
}

impl Group {
    fn new() -> Group {
        let dir = tempfile::Builder::new().prefix("mfsha-membership-").tempdir().unwrap();
        let ports = (0..4).map(|_| MasterPorts::pick()).collect();
        Group { dir, ports, masters: (0..4).map(|_| None).collect() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn client(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1].client)
    }

    fn list(&self, ids: &[usize]) -> String {
        ids.iter().map(|id| self.client(*id)).collect::<Vec<_>>().join(",")
    }

    /// Master `id`'s configuration, naming `peers` (the first three name each other only).
    fn write_config(&self, id: usize, peers: &[usize]) -> PathBuf {
        let p = self.ports[id - 1];
        let mut yaml = format!(
            "node_id: {id}\ncluster_id: {CLUSTER}\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{}\n  chunkserver: 127.0.0.1:{}\n  logger: 127.0.0.1:{}\n  peer: 127.0.0.1:{}\n  http: 127.0.0.1:{}\npeers:\n",
            p.client,
            p.chunkserver,
            p.logger,
            p.peer,
            p.http,
            data = self.path().join(format!("master{id}")).display(),
        );
        for other in peers {
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

    fn start(&mut self, id: usize, peers: &[usize]) {
        self.spawn(id, peers);
        let log = self.daemon(id).log.clone();
        wait_for_port(&self.client(id), "master", &log, Duration::from_secs(30));
    }

    /// Starts master `id` without waiting for its ports.
    fn spawn(&mut self, id: usize, peers: &[usize]) {
        let config = self.write_config(id, peers);
        let args = ["master", "-c", config.to_str().unwrap()];
        self.masters[id - 1] = Some(Daemon::spawn(self.path(), &format!("master{id}"), &args));
    }

    /// Starts a chunkserver following masters `ids` (their chunkserver ports), goal 1 data.
    fn start_chunkserver(&self, ids: &[usize]) -> Daemon {
        let disk = self.path().join("chunkserver-disk");
        std::fs::create_dir_all(&disk).unwrap();
        let masters: Vec<String> = ids
            .iter()
            .map(|id| format!("\"127.0.0.1:{}\"", self.ports[id - 1].chunkserver))
            .collect();
        let (port, http) = (crate::util::free_port(), crate::util::free_port());
        let yaml = format!(
            "data_dirs:\n  - path: {}\nmaster: [{}]\ncluster_id: {CLUSTER}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\nheartbeat_ms: 200\nscrub_mib_per_sec: 0\n",
            disk.display(),
            masters.join(", ")
        );
        let config = self.path().join("chunkserver.yaml");
        std::fs::write(&config, yaml).unwrap();
        Daemon::spawn(self.path(), "chunkserver", &["chunkserver", "-c", config.to_str().unwrap()])
    }

    /// Master `id` (running) exits cleanly by itself within 20 s, having logged `said`, and
    /// started again with `peers` it refuses, saying it was removed.
    fn assert_stops_for_good(&mut self, id: usize, peers: &[usize], said: &str) {
        let exit = self.daemon(id).stop_after_signal(Duration::from_secs(20));
        assert!(exit.success(), "the removed master {id} exits cleanly: {exit:?}");
        let log = std::fs::read_to_string(&self.daemon(id).log).unwrap_or_default();
        let log_tail = tail(&self.daemon(id).log, 30);
        assert!(log.contains(said), "master {id} did not log {said:?}; its log:\n{log_tail}");
        let config = self.write_config(id, peers);
        let restart = mfsha(&["master", "-c", config.to_str().unwrap()]);
        assert!(!restart.status.success(), "removed master {id} must refuse to start");
        let refusal = String::from_utf8_lossy(&restart.stderr);
        assert!(refusal.contains("was removed from the group"), "refusal: {refusal}");
    }

    fn daemon(&mut self, id: usize) -> &mut Daemon {
        self.masters[id - 1].as_mut().expect("master started")
    }

    fn logs(&self) -> String {
        let logs = self
            .masters
            .iter()
            .flatten()
            .map(|d| format!("--- {} ---\n{}", d.name, tail(&d.log, 25)));
        logs.collect::<Vec<_>>().join("\n")
    }

    fn status(&self, rt: &tokio::runtime::Runtime, id: usize) -> Option<ClusterStatus> {
        rt.block_on(async {
            let client = MasterClient::connect_within(&self.client(id), Duration::from_secs(1))
                .await
                .ok()?;
            let request = Request::anonymous(ClientOp::Status);
            match client.call_timeout(request, 1000).await {
                Ok(Ok(ClientReply::Status(status))) => Some(*status),
                _ => None,
            }
        })
    }

    /// Waits until one of `among` leads, as every one of `among` that answers agrees.
    fn wait_leader(&self, rt: &tokio::runtime::Runtime, among: &[usize]) -> usize {
        self.wait(rt, "a leader agreed on", |group| {
            let statuses: Vec<ClusterStatus> =
                among.iter().filter_map(|id| group.status(rt, *id)).collect();
            let leader = statuses.iter().find(|s| s.role == "leader")?;
            let agreed = statuses.iter().all(|s| s.leader_id == leader.node_id);
            (agreed && statuses.len() == among.len()).then_some(leader.node_id as usize)
        })
    }

    fn wait<T>(
        &self,
        _rt: &tokio::runtime::Runtime,
        what: &str,
        mut f: impl FnMut(&Group) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = f(self) {
                return found;
            }
            assert!(Instant::now() < deadline, "no {what} within 30 s\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = mfsha(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mfsha {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn mkdirs(mount: &Mount, prefix: &str, n: usize) {
    for i in 0..n {
        std::fs::create_dir(mount.path(&format!("{prefix}{i}"))).unwrap();
    }
}

#[test]
fn a_member_added_catches_up_and_votes_and_a_removed_one_stops() {
    require_fuse();
    let rt = runtime();
    let mut group = Group::new();
    let config = group.write_config(1, &[2, 3]);
    crate::util::bootstrap(group.path(), &config);
    for id in 1..=3 {
        let peers: Vec<usize> = (1..=3).filter(|o| *o != id).collect();
        group.start(id, &peers);
    }
    let leader = group.wait_leader(&rt, &[1, 2, 3]);
    let first = group.list(&[1, 2, 3]);
    // A chunkserver configured with the first three masters only.
    let _chunkserver = group.start_chunkserver(&[1, 2, 3]);
    group.wait(&rt, "the chunkserver registered with the leader", |g| {
        (g.status(&rt, leader)?.chunkservers.len() == 1).then_some(())
    });
    let mut mount = Mount::start_in(group.path(), "mnt", &first, &[], &first.replace(',', "+"));
    mkdirs(&mount, "before", 50);

    // Node 4: empty data directory, the three as peers; theirs do not name it.
    group.start(4, &[1, 2, 3]);
    let p = group.ports[3];
    let (peer, client) = (format!("127.0.0.1:{}", p.peer), format!("127.0.0.1:{}", p.client));
    let (cs, lg) = (format!("127.0.0.1:{}", p.chunkserver), format!("127.0.0.1:{}", p.logger));
    let out = run_ok(&[
        "member",
        "add",
        "4",
        "-H",
        &first,
        "--peer",
        &peer,
        "--client",
        &client,
        "--chunkserver",
        &cs,
        "--logger",
        &lg,
        "--wait",
        "60",
    ]);
    assert!(out.contains("node 4 is current"), "member add said: {out}");
    let again = mfsha(&["member", "add", "4", "-H", &first, "--peer", &peer]);
    assert!(!again.status.success(), "adding node 4 twice must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already a member"));

    // The leader lists it as a master: its client address comes from the replicated book.
    group.wait(&rt, "node 4 listed as a master with its client address", |g| {
        let status = g.status(&rt, leader)?;
        let four = status.members.into_iter().find(|m| m.id == 4)?;
        (four.kind == MemberKind::Master && four.client.as_deref() == Some(client.as_str()))
            .then_some(())
    });
    // The masters greet the chunkserver again naming node 4, and it follows node 4 too, so a
    // node 4 that leads later knows every copy.
    group.wait(&rt, "the chunkserver registered with node 4 as well", |g| {
        (g.status(&rt, 4)?.chunkservers.len() == 1).then_some(())
    });
    mkdirs(&mount, "after", 50);
    let want = group.status(&rt, leader).unwrap().directories;
    group.wait(&rt, "node 4 holding every directory", |g| {
        g.status(&rt, 4).filter(|s| s.directories == want && s.leader_id == leader as u64)
    });

    // Remove a first follower: it stops by itself and will not start again.
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let kept = (1..=3).find(|id| *id != leader && *id != removed).unwrap();
    let out = run_ok(&["member", "remove", &removed.to_string(), "-H", &group.list(&[leader])]);
    assert!(out.contains("removed"), "member remove said: {out}");
    let peers: Vec<usize> = [1, 2, 3, 4].into_iter().filter(|o| *o != removed).collect();
    group.assert_stops_for_good(removed, &peers, "removed from the group");
    let left = group.list(&[leader, kept, 4]);
    let nodes = run_ok(&["member", "list", "-H", &left, "--json"]);
    assert!(!nodes.contains(&format!("\"id\": {removed},")), "removed node still listed: {nodes}");

    // Kill the leader: the original follower and node 4 are a majority of three; they elect,
    // which needs each to reach the other (the follower knows node 4 only from the book).
    group.daemon(leader).kill();
    let killed = Instant::now();
    let new_leader = group.wait_leader(&rt, &[kept, 4]);
    std::fs::create_dir(mount.path("after-failover")).expect("mkdir after the leader died");
    eprintln!("membership: node {new_leader} leads {:?} after the kill", killed.elapsed());
    let count = std::fs::read_dir(mount.path("")).unwrap().count();
    assert_eq!(count, 101, "every directory made through the changes is there");
    mount.stop();
}

/// A member removed while it was down hears nothing of it from the log (nobody replicates to
/// a non-member), so the others tell it when it calls: it stops by itself, says why, and
/// refuses to start again. The three left go on.
#[test]
fn a_member_removed_while_it_was_down_stops_when_it_comes_back() {
    let rt = runtime();
    let mut group = Group::new();
    let all = [1, 2, 3, 4];
    let others = |id: usize| all.iter().copied().filter(|o| *o != id).collect::<Vec<_>>();
    let config = group.write_config(1, &others(1));
    crate::util::bootstrap(group.path(), &config);
    for id in all {
        group.start(id, &others(id));
    }
    let leader = group.wait_leader(&rt, &all);
    let down = all.into_iter().find(|id| *id != leader).unwrap();
    group.daemon(down).kill();
    let rest = others(down);
    let out = run_ok(&["member", "remove", &down.to_string(), "-H", &group.list(&rest)]);
    assert!(out.contains("removed"), "member remove said: {out}");
    // Later entries too, so the others' applied index is past anything the down node holds.
    let leader = group.wait_leader(&rt, &rest);
    let client = group.client(leader);
    rt.block_on(async {
        let client = MasterClient::connect_within(&client, Duration::from_secs(2)).await.unwrap();
        let request = Request::anonymous(ClientOp::Status);
        client.call_timeout(request, 2000).await.unwrap().unwrap();
    });

    // The leader's queue to the down node still held the removal entry until its next failed
    // connection attempt (every 0.5 s at most) dropped it; after that the down node can only
    // hear of its removal from a member's answer, which is what this test is about.
    std::thread::sleep(Duration::from_millis(1500));
    // It comes back with its old data directory and configuration.
    group.spawn(down, &others(down));
    group.assert_stops_for_good(down, &others(down), "removed from the group while it was down");

    // The three left still lead and count three members.
    let leader = group.wait_leader(&rt, &rest);
    let status = group.status(&rt, leader).expect("the leader answers");
    let ids: Vec<u64> = status.members.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&(down as u64)), "members after the removal: {ids:?}");
}
