//! [`Lab`]: the appliance on one L2 segment of network namespaces — a "switch" namespace
//! holding a bridge, and one namespace per host, each joined to the bridge by a veth pair
//! with its own address and MAC: two masters (10.88.0.11, .12) holding the VIP 10.88.0.100 in
//! turn, the witness logger (.13), three chunkservers (.21-.23) and a client (.50) that mounts
//! `mfsmaster:9421`, resolved through the client namespace's hosts file.
//!
//! Daemons run through `ip netns exec`, which gives each its namespace's `/etc/hosts` (from
//! `/etc/netns/<ns>/hosts`) and a private mount namespace; so the mount is only visible
//! inside the mount process's namespace, and the test reaches it at `/proc/<pid>/root/<dir>`.
//! Dropping the lab kills every process, deletes every namespace (veths, addresses and the
//! bridge go with them) and the hosts files: also when a drill fails (a panic unwinds
//! through the drop).

use crate::netns::Netns;
use crate::util::{bootstrap, mfsha_bin, tail, Daemon};
use mfsha_proto::client::{ClientOp, ClientReply, ClusterStatus, MasterClient, Request};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "10.88.0.100";
pub const VIP_CIDR: &str = "10.88.0.100/24";
const WITNESS_ID: u64 = 3;

/// One host of the segment.
pub struct Host {
    pub ns: Netns,
    pub ip: String,
    /// Its veth's name on the switch side.
    pub port: String,
}

impl Host {
    pub fn mac(&self) -> String {
        crate::netns::show_mac(&self.ns.mac("eth0"))
    }

    pub fn holds_vip(&self) -> bool {
        self.ns.has_address("eth0", VIP_CIDR)
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    switch: Netns,
    pub masters: Vec<Host>,
    pub witness: Host,
    pub chunkservers: Vec<Host>,
    pub client: Host,
    pub master_daemons: Vec<Option<Daemon>>,
    daemons: Vec<Daemon>,
    pub mount: Option<Daemon>,
    pub mount_dir: PathBuf,
    /// One lab at a time: the drills time failovers in hundreds of milliseconds, which two
    /// labs' dozen daemons on a 2-core machine would blur. Dropped last.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Lab {
    /// Builds the segment, starts the cluster in it, and mounts it in the client namespace.
    pub fn start() -> Lab {
        let mut lab = Lab::build();
        lab.start_cluster();
        lab.start_mount();
        lab
    }

    /// The namespaces, bridge, veths, addresses and hosts files; no process yet.
    pub fn build() -> Lab {
        // A drill that failed poisoned the lock; the lab it held is gone all the same.
        let one_at_a_time = ONE_LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::Builder::new().prefix("mfsha-lab-").tempdir().unwrap();
        let switch = Netns::new("sw");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut next_port = 0;
        let mut host = |ip_last: u8| {
            next_port += 1;
            attach(&switch, &format!("10.88.0.{ip_last}"), &format!("p{next_port}"))
        };
        let masters = vec![host(11), host(12)];
        let witness = host(13);
        let chunkservers = (0..3).map(|i| host(21 + i)).collect();
        let client = host(50);
        let mount_dir = dir.path().join("mnt");
        fs::create_dir_all(&mount_dir).unwrap();
        Lab {
            dir,
            switch,
            masters,
            witness,
            chunkservers,
            client,
            master_daemons: vec![None, None],
            daemons: Vec::new(),
            mount: None,
            mount_dir,
            _one_at_a_time: one_at_a_time,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn start_cluster(&mut self) {
        for index in 0..2 {
            self.write_master_config(index);
        }
        bootstrap(self.path(), &self.master_config(0));
        for index in 0..2 {
            self.start_master(index);
        }
        self.start_witness();
        for index in 0..3 {
            self.start_chunkserver(index);
        }
        let leader = self.wait_leader(Duration::from_secs(30));
        self.wait_holder(leader, Duration::from_secs(10));
        self.wait_chunkservers(3, Duration::from_secs(30));
    }

    fn master_config(&self, index: usize) -> PathBuf {
        self.path().join(format!("master{}.yaml", index + 1))
    }

    fn write_master_config(&self, index: usize) {
        let id = index + 1;
        let me = &self.masters[index].ip;
        let other = &self.masters[1 - index].ip;
        let other_id = 2 - index;
        let yaml = format!(
            "node_id: {id}\ncluster_id: lab\ndata_dir: {data}\n\
             advertise: {{client: \"{me}:9421\", chunkserver: \"{me}:9420\", logger: \"{me}:9419\"}}\n\
             peers:\n  - {{id: {other_id}, addr: \"{other}:9423\", client: \"{other}:9421\", chunkserver: \"{other}:9420\", logger: \"{other}:9419\"}}\n\
             \x20 - {{id: {WITNESS_ID}, addr: \"{witness}:9423\"}}\n\
             chunks:\n  replication_delay_init_ms: 2000\n\
             vip:\n  address: {VIP_CIDR}\n  interface: eth0\n",
            data = self.path().join(format!("master{id}")).display(),
            witness = self.witness.ip,
        );
        fs::write(self.master_config(index), yaml).unwrap();
    }

    /// Runs `mfsha ARGS` in `host`'s namespace, logging to `<dir>/<name>.log`.
    fn spawn(&self, host: &Host, name: &str, args: &[&str]) -> Daemon {
        let log = self.path().join(format!("{name}.log"));
        let out = fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let err = out.try_clone().unwrap();
        // `ip netns exec` execs the program: the child's pid is the daemon's.
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns.name])
            .arg(mfsha_bin())
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} in {}: {e}", host.ns.name));
        Daemon { name: name.to_string(), child: Some(child), log }
    }

    pub fn start_master(&mut self, index: usize) {
        let config = self.master_config(index);
        let name = format!("master{}", index + 1);
        let daemon =
            self.spawn(&self.masters[index], &name, &["master", "-c", config.to_str().unwrap()]);
        self.master_daemons[index] = Some(daemon);
        let addr = format!("{}:9421", self.masters[index].ip);
        let up = crate::netns::wait_until(Duration::from_secs(30), || self.client_connects(&addr));
        assert!(up.is_some(), "{name} does not listen on {addr}\n{}", self.logs());
    }

    fn client_connects(&self, addr: &str) -> bool {
        crate::netns::connect_from(&self.client.ns, addr.parse().unwrap()).is_ok()
    }

    fn start_witness(&mut self) {
        let peers: Vec<String> = self
            .masters
            .iter()
            .enumerate()
            .map(|(i, m)| format!("    - {{id: {}, addr: \"{}:9423\"}}", i + 1, m.ip))
            .collect();
        let yaml = format!(
            "name: witness\ndata_dir: {}\nmasters: [\"mfsmaster:9419\"]\nhttp: 127.0.0.1:0\nwitness:\n  node_id: {WITNESS_ID}\n  cluster_id: lab\n  listen: 0.0.0.0:9423\n  peers:\n{}\n",
            self.path().join("logger").display(),
            peers.join("\n")
        );
        let config = self.path().join("logger.yaml");
        fs::write(&config, yaml).unwrap();
        let daemon =
            self.spawn(&self.witness, "logger", &["logger", "-c", config.to_str().unwrap()]);
        self.daemons.push(daemon);
    }

    fn start_chunkserver(&mut self, index: usize) {
        let disk = self.path().join(format!("chunkserver{index}-disk"));
        fs::create_dir_all(&disk).unwrap();
        let yaml = format!(
            "data_dirs:\n  - path: {}\nmaster: [\"mfsmaster:9420\"]\nlisten: {}:9422\nhttp: 127.0.0.1:0\nheartbeat_ms: 200\nscrub_mib_per_sec: 0\n",
            disk.display(),
            self.chunkservers[index].ip
        );
        let name = format!("chunkserver{index}");
        let config = self.path().join(format!("{name}.yaml"));
        fs::write(&config, yaml).unwrap();
        let daemon = self.spawn(
            &self.chunkservers[index],
            &name,
            &["chunkserver", "-c", config.to_str().unwrap()],
        );
        self.daemons.push(daemon);
    }

    fn start_mount(&mut self) {
        crate::mount::require_fuse();
        let dir = self.mount_dir.to_str().unwrap().to_string();
        let mount = self.spawn(&self.client, "mount", &["mount", &dir, "-H", "mfsmaster:9421"]);
        let pid = mount.pid().unwrap();
        self.mount = Some(mount);
        let mounted = crate::netns::wait_until(Duration::from_secs(30), || {
            let table = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            table.lines().any(|line| line.split_whitespace().nth(4) == Some(dir.as_str()))
        });
        assert!(mounted.is_some(), "the client did not mount mfsmaster:9421\n{}", self.logs());
    }

    /// `rel` inside the mount, as seen through the mount process's namespace.
    pub fn file(&self, rel: &str) -> PathBuf {
        let pid = self.mount.as_ref().and_then(Daemon::pid).expect("mounted");
        let inside = self.mount_dir.strip_prefix("/").unwrap();
        PathBuf::from(format!("/proc/{pid}/root")).join(inside).join(rel)
    }

    /// The status master `index` gives the client namespace, or `None` within a second.
    pub fn status(&self, index: usize) -> Option<ClusterStatus> {
        let addr = format!("{}:9421", self.masters[index].ip);
        let ns = self.client.ns.name.clone();
        let thread = std::thread::spawn(move || {
            crate::netns::enter(&ns);
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let connect = MasterClient::connect(&addr);
                let rpc = tokio::time::timeout(Duration::from_secs(1), connect).await.ok()?.ok()?;
                let req = Request::anonymous(ClientOp::Status);
                match rpc.call_timeout(req, 1000).await {
                    Ok(Ok(ClientReply::Status(status))) => Some(*status),
                    _ => None,
                }
            })
        });
        thread.join().unwrap()
    }

    /// The master that says it leads.
    pub fn leader(&self) -> Option<usize> {
        (0..2).find(|&i| {
            self.master_daemons[i].is_some() && self.status(i).is_some_and(|s| s.role == "leader")
        })
    }

    pub fn wait_leader(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(index) = self.leader() {
                return index;
            }
            assert!(Instant::now() < deadline, "no master leads after {limit:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The masters whose interface has the VIP now.
    pub fn holders(&self) -> Vec<usize> {
        (0..2).filter(|&i| self.masters[i].holds_vip()).collect()
    }

    /// Waits until master `index` alone holds the VIP; how long it took.
    pub fn wait_holder(&self, index: usize, limit: Duration) -> Duration {
        let took = crate::netns::wait_until(limit, || self.holders() == [index]);
        took.unwrap_or_else(|| {
            panic!(
                "master{} is not the only VIP holder after {limit:?} (holders {:?})\n{}",
                index + 1,
                self.holders(),
                self.logs()
            )
        })
    }

    pub fn wait_chunkservers(&self, n: usize, limit: Duration) {
        let registered = crate::netns::wait_until(limit, || {
            self.leader().and_then(|i| self.status(i)).is_some_and(|s| s.chunkservers.len() >= n)
        });
        assert!(registered.is_some(), "{n} chunkservers did not register\n{}", self.logs());
    }

    /// The MAC the client namespace's neighbour table has for the VIP, if any.
    pub fn client_vip_mac(&self) -> Option<String> {
        let out = self.client.ns.ip(&["neigh", "show", VIP, "dev", "eth0"]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// SIGKILL master `index`.
    pub fn kill_master(&mut self, index: usize) {
        let mut daemon = self.master_daemons[index].take().expect("master running");
        daemon.kill();
    }

    pub fn master_pid(&self, index: usize) -> u32 {
        self.master_daemons[index].as_ref().and_then(Daemon::pid).expect("master running")
    }

    /// Every link of `host` goes down at once on the switch side: its traffic vanishes with
    /// no RST, as when a host loses power; `false` brings them back.
    pub fn cut(&self, host: &Host, down: bool) {
        let state = if down { "down" } else { "up" };
        self.switch.ip(&["link", "set", &host.port, state]);
    }

    /// The tails of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut names = vec!["master1".to_string(), "master2".into(), "logger".into()];
        names.extend((0..3).map(|i| format!("chunkserver{i}")));
        names.push("mount".into());
        let logs = names.iter().map(|name| {
            format!("--- {name} ---\n{}", tail(&self.path().join(format!("{name}.log")), 25))
        });
        logs.collect::<Vec<_>>().join("\n")
    }

    fn every_host(&self) -> impl Iterator<Item = &Host> {
        self.masters.iter().chain([&self.witness]).chain(&self.chunkservers).chain([&self.client])
    }
}

/// A host namespace joined to the switch's bridge, with `ip`/24 on its `eth0` and the hosts
/// file naming the VIP `mfsmaster`.
fn attach(switch: &Netns, address: &str, port: &str) -> Host {
    let ns = Netns::new("lh");
    switch.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
    switch.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    let etc = PathBuf::from("/etc/netns").join(&ns.name);
    fs::create_dir_all(&etc).unwrap();
    let hosts = format!(
        "127.0.0.1 localhost\n{VIP} mfsmaster\n10.88.0.11 master1\n10.88.0.12 master2\n10.88.0.13 logger1\n"
    );
    fs::write(etc.join("hosts"), hosts).unwrap();
    Host { ns, ip: address.to_string(), port: port.to_string() }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (a namespace is only gone once nothing runs in it), then the hosts
        // files; the namespaces go when the fields drop.
        self.mount = None;
        self.master_daemons.clear();
        self.daemons.clear();
        for host in self.every_host() {
            let etc = PathBuf::from("/etc/netns").join(&host.ns.name);
            if let Err(e) = fs::remove_dir_all(&etc) {
                eprintln!("cannot remove {}: {e}", etc.display());
            }
        }
    }
}
