//! [`HaCluster`]: the default appliance as real processes on loopback — two masters (nodes 1
//! and 2), the metalogger as the voting witness (node 3), chunkservers — with helpers to find
//! the leader, kill it and bring it back.

use crate::util::{bootstrap, free_port, signal, tail, wait_for_port, Daemon, MasterPorts};
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, MasterClient, Request};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const WITNESS_ID: u64 = 3;

/// The `cluster_id` of a cluster made by [`HaCluster::start`].
pub const CLUSTER_ID: &str = "ha-test";

pub struct MasterNode {
    pub id: u64,
    pub ports: MasterPorts,
    pub daemon: Option<Daemon>,
}

pub struct HaCluster {
    pub dir: tempfile::TempDir,
    /// The `cluster_id` every member is configured with.
    pub cluster_id: String,
    /// YAML appended to every master's configuration.
    pub master_extra_yaml: String,
    pub masters: Vec<MasterNode>,
    pub witness_peer_port: u16,
    pub witness: Option<Daemon>,
    pub chunkservers: Vec<(u16, Option<Daemon>)>,
    /// Each chunkserver's HTTP (`/metrics`) port, by index.
    pub chunkserver_http: Vec<u16>,
    /// The witness logger's HTTP (`/metrics`) port.
    pub witness_http_port: u16,
}

impl HaCluster {
    /// Two masters and the witness, bootstrapped on master 1 and started; `chunkservers`
    /// chunkservers registered.
    pub fn start(chunkservers: usize) -> HaCluster {
        HaCluster::start_named(CLUSTER_ID, chunkservers)
    }

    /// [`HaCluster::start`] with every member configured for `cluster_id`.
    pub fn start_named(cluster_id: &str, chunkservers: usize) -> HaCluster {
        let cluster = HaCluster::configured(cluster_id, "");
        bootstrap(cluster.path(), &cluster.master_config_path(0));
        cluster.started(chunkservers)
    }

    /// The configuration files written for `cluster_id` (with `master_extra_yaml` in every
    /// master's), nothing bootstrapped or started: the caller makes the group on master 1, then
    /// calls [`HaCluster::started`].
    pub fn configured(cluster_id: &str, master_extra_yaml: &str) -> HaCluster {
        // MFSHA_KEEP_TEST_DIR=1 keeps the directory (and every daemon's whole log) afterwards.
        let keep = std::env::var_os("MFSHA_KEEP_TEST_DIR").is_some();
        let dir =
            tempfile::Builder::new().prefix("mfsha-ha-").disable_cleanup(keep).tempdir().unwrap();
        if keep {
            println!("test directory kept: {}", dir.path().display());
        }
        let masters =
            (1..=2).map(|id| MasterNode { id, ports: MasterPorts::pick(), daemon: None }).collect();
        let cluster = HaCluster {
            dir,
            cluster_id: cluster_id.to_string(),
            master_extra_yaml: master_extra_yaml.to_string(),
            masters,
            witness_peer_port: free_port(),
            witness: None,
            chunkservers: Vec::new(),
            chunkserver_http: Vec::new(),
            witness_http_port: free_port(),
        };
        // The cluster secret every daemon of the appliance proves (`secret_file`). Made here,
        // not by `mfsha bootstrap`, so that groups made another way have it too.
        let key = mfsha_proto::cluster_key::ClusterKey::generate();
        key.write_new(&cluster.key_path()).expect("write the cluster key");
        for index in 0..cluster.masters.len() {
            cluster.write_master_config(index);
        }
        cluster
    }

    /// The cluster key file every daemon names as `secret_file`.
    pub fn key_path(&self) -> PathBuf {
        self.path().join("cluster.key")
    }

    /// Starts the masters, the witness and `chunkservers` chunkservers of a bootstrapped
    /// group, and waits for a leader.
    pub fn started(self, chunkservers: usize) -> HaCluster {
        let mut cluster = self;
        for index in 0..cluster.masters.len() {
            cluster.start_master(index);
        }
        cluster.start_witness();
        for _ in 0..chunkservers {
            cluster.add_chunkserver();
        }
        cluster.wait_leader(Duration::from_secs(30));
        cluster.wait_chunkservers(chunkservers, Duration::from_secs(30));
        cluster
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn master_config_path(&self, index: usize) -> PathBuf {
        self.path().join(format!("master{}.yaml", self.masters[index].id))
    }

    /// Every master's client address, comma-separated, as mounts and tools take them.
    pub fn client_addrs(&self) -> String {
        let addrs: Vec<String> =
            self.masters.iter().map(|m| format!("127.0.0.1:{}", m.ports.client)).collect();
        addrs.join(",")
    }

    fn peers_yaml(&self, except: u64) -> String {
        let mut yaml = String::from("peers:\n");
        for master in &self.masters {
            if master.id != except {
                let p = master.ports;
                yaml += &format!(
                    "  - {{id: {}, addr: \"127.0.0.1:{}\", client: \"127.0.0.1:{}\", chunkserver: \"127.0.0.1:{}\", logger: \"127.0.0.1:{}\", http: \"127.0.0.1:{}\"}}\n",
                    master.id, p.peer, p.client, p.chunkserver, p.logger, p.http
                );
            }
        }
        if except != WITNESS_ID {
            yaml += &format!(
                "  - {{id: {WITNESS_ID}, addr: \"127.0.0.1:{}\"}}\n",
                self.witness_peer_port
            );
        }
        yaml
    }

    /// The masters as the witness lists them: id and peer address only.
    fn witness_peers_yaml(&self) -> String {
        let mut yaml = String::from("peers:\n");
        for master in &self.masters {
            yaml += &format!(
                "    - {{id: {}, addr: \"127.0.0.1:{}\"}}\n",
                master.id, master.ports.peer
            );
        }
        yaml.trim_end().to_string()
    }

    fn write_master_config(&self, index: usize) {
        let master = &self.masters[index];
        let p = master.ports;
        let yaml = format!(
            "node_id: {id}\ncluster_id: {cluster}\nsecret_file: {key}\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{c}\n  chunkserver: 127.0.0.1:{cs}\n  logger: 127.0.0.1:{l}\n  peer: 127.0.0.1:{peer}\n  http: 127.0.0.1:{h}\n{peers}chunks:\n  replication_delay_init_ms: 2000\n",
            id = master.id,
            cluster = self.cluster_id,
            key = self.key_path().display(),
            data = self.path().join(format!("master{}", master.id)).display(),
            c = p.client,
            cs = p.chunkserver,
            l = p.logger,
            peer = p.peer,
            h = p.http,
            peers = self.peers_yaml(master.id),
        );
        fs::write(self.master_config_path(index), yaml + &self.master_extra_yaml).unwrap();
    }

    pub fn start_master(&mut self, index: usize) {
        let config = self.master_config_path(index);
        let name = format!("master{}", self.masters[index].id);
        let daemon = Daemon::spawn(self.path(), &name, &["master", "-c", config.to_str().unwrap()]);
        let log = daemon.log.clone();
        let addr = format!("127.0.0.1:{}", self.masters[index].ports.client);
        self.masters[index].daemon = Some(daemon);
        wait_for_port(&addr, &name, &log, Duration::from_secs(30));
    }

    /// Stops the witness logger with SIGTERM, as systemd does.
    pub fn stop_witness(&mut self) {
        let mut witness = self.witness.take().expect("witness running");
        let status = witness.stop(Duration::from_secs(10));
        assert!(
            status.success(),
            "the witness exited with {status} on SIGTERM
{}",
            self.logs()
        );
    }

    pub fn start_witness(&mut self) {
        let masters: Vec<String> =
            self.masters.iter().map(|m| format!("\"127.0.0.1:{}\"", m.ports.logger)).collect();
        let yaml = format!(
            "name: witness\nsecret_file: {key}\ndata_dir: {data}\nmasters: [{masters}]\nhttp: 127.0.0.1:{http}\nwitness:\n  node_id: {WITNESS_ID}\n  cluster_id: {cluster}\n  listen: 127.0.0.1:{port}\n  {peers}",
            data = self.path().join("logger").display(),
            key = self.key_path().display(),
            masters = masters.join(", "),
            cluster = self.cluster_id,
            port = self.witness_peer_port,
            http = self.witness_http_port,
            peers = self.witness_peers_yaml(),
        );
        let config = self.path().join("logger.yaml");
        fs::write(&config, yaml + "\n").unwrap();
        let daemon =
            Daemon::spawn(self.path(), "logger", &["logger", "-c", config.to_str().unwrap()]);
        let log = daemon.log.clone();
        self.witness = Some(daemon);
        wait_for_port(
            &format!("127.0.0.1:{}", self.witness_peer_port),
            "witness",
            &log,
            Duration::from_secs(30),
        );
    }

    fn add_chunkserver(&mut self) {
        let index = self.chunkservers.len();
        let port = free_port();
        let http = free_port();
        let disk = self.path().join(format!("chunkserver{index}-disk"));
        fs::create_dir_all(&disk).unwrap();
        let masters: Vec<String> =
            self.masters.iter().map(|m| format!("\"127.0.0.1:{}\"", m.ports.chunkserver)).collect();
        let yaml = format!(
            "data_dirs:\n  - path: {}\nmaster: [{}]\ncluster_id: {}\nsecret_file: {}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\nheartbeat_ms: 200\nscrub_mib_per_sec: 0\n",
            disk.display(),
            masters.join(", "),
            self.cluster_id,
            self.key_path().display()
        );
        let name = format!("chunkserver{index}");
        let config = self.path().join(format!("{name}.yaml"));
        fs::write(&config, yaml).unwrap();
        let daemon =
            Daemon::spawn(self.path(), &name, &["chunkserver", "-c", config.to_str().unwrap()]);
        let log = daemon.log.clone();
        wait_for_port(&format!("127.0.0.1:{port}"), &name, &log, Duration::from_secs(30));
        self.chunkservers.push((port, Some(daemon)));
        self.chunkserver_http.push(http);
    }

    /// The status of master `index`, or `None` if it does not answer within a second.
    pub fn status(&self, index: usize) -> Option<ClusterStatus> {
        let addr = format!("127.0.0.1:{}", self.masters[index].ports.client);
        runtime().block_on(async move {
            let connect = MasterClient::connect(&addr);
            let rpc = tokio::time::timeout(Duration::from_secs(1), connect).await.ok()?.ok()?;
            let req = Request::anonymous(ClientOp::Status);
            match rpc.call_timeout(req, 1000).await {
                Ok(Ok(ClientReply::Status(status))) => Some(*status),
                _ => None,
            }
        })
    }

    /// The index of the master that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.masters.len()).find(|&index| {
            self.masters[index].daemon.is_some()
                && self.status(index).is_some_and(|s| s.role == "leader")
        })
    }

    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(index) = self.leader() {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "no master leads after {timeout:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_chunkservers(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let listed =
                self.leader().and_then(|i| self.status(i)).map_or(0, |s| s.chunkservers.len());
            if listed >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{listed} of {n} chunkservers registered\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until master `index` answers and has applied what the leader had committed when
    /// this was called.
    pub fn wait_caught_up(&self, index: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_leader(timeout);
        let target = self.status(leader).map_or(0, |s| s.commit_index);
        loop {
            if self.status(index).is_some_and(|s| s.applied_index >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "master {} did not catch up
{}",
                index + 1,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL master `index`.
    pub fn kill_master(&mut self, index: usize) {
        self.masters[index].daemon.as_mut().expect("master running").kill();
        self.masters[index].daemon = None;
    }

    /// SIGTERM master `index` and wait for its clean exit, as systemd stops it.
    pub fn stop_master(&mut self, index: usize) {
        let mut daemon = self.masters[index].daemon.take().expect("master running");
        let status = daemon.stop(Duration::from_secs(10));
        assert!(
            status.success(),
            "master {} exited with {status} on SIGTERM\n{}",
            self.masters[index].id,
            self.logs()
        );
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to master `index`, which stays "running" for the test.
    pub fn signal_master(&self, index: usize, sig: i32) {
        let daemon = self.masters[index].daemon.as_ref().expect("master running");
        signal(daemon.pid().expect("master process"), sig);
    }

    /// SIGKILL the witness logger.
    pub fn kill_witness(&mut self) {
        self.witness.take().expect("witness running").kill();
    }

    /// Waits until a master other than `index` leads; returns its index.
    pub fn wait_leader_except(&self, index: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let others = (0..self.masters.len()).filter(|&other| other != index);
            let leading = others.into_iter().find(|&other| {
                self.masters[other].daemon.is_some()
                    && self.status(other).is_some_and(|s| s.role == "leader")
            });
            if let Some(leader) = leading {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no master but master {} leads after {timeout:?}\n{}",
                self.masters[index].id,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until master `index` says it follows master `leader` (a deposed leader that
    /// runs again must step down, not fight).
    pub fn wait_follows(&self, index: usize, leader: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let leader_id = self.masters[leader].id;
        loop {
            let status = self.status(index);
            if status.as_ref().is_some_and(|s| s.role == "follower" && s.leader_id == leader_id) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "master {} does not follow master {leader_id} after {timeout:?} (its status: {:?})\n{}",
                self.masters[index].id,
                status.map(|s| (s.role, s.leader_id, s.term)),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the leader knows the witness holds what it had committed when this was
    /// called.
    pub fn wait_witness_caught_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_leader(timeout);
        let target = self.status(leader).map_or(0, |s| s.commit_index);
        loop {
            let matched = self
                .leader()
                .and_then(|l| self.status(l))
                .and_then(|s| s.members.iter().find(|m| m.id == WITNESS_ID).map(|m| m.matched));
            if matched.is_some_and(|m| m >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the witness did not catch up to index {target} (the leader has it at {matched:?})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tails of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut names: Vec<String> =
            self.masters.iter().map(|m| format!("master{}", m.id)).collect();
        names.push("logger".into());
        names.extend((0..self.chunkservers.len()).map(|i| format!("chunkserver{i}")));
        names.push("mount".into());
        let logs = names.iter().map(|name| {
            format!("--- {name} ---\n{}", tail(&self.path().join(format!("{name}.log")), 30))
        });
        logs.collect::<Vec<_>>().join("\n")
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}
