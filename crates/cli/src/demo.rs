//! `mfsha demo [DIR]`: the default appliance on this machine in one command.
//!
//! Starts two masters (Raft nodes 1 and 2), the metalogger as the group's voting witness
//! (node 3), three chunkservers and a FUSE mount as child processes of this executable, every
//! daemon given every master's address, with configuration, data and logs under DIR (default
//! `./mfsha-demo`) and the mount at DIR/mnt, all on loopback. The group is bootstrapped once,
//! on master 1, when DIR is new. The banner says how to kill the leader and watch the other
//! master take over.
//!
//! Once up, a daemon that dies is reported (name, pid, exit status, the end of its log) and
//! started again after 2 s, as systemd's `Restart=on-failure` would: a killed master comes
//! back as a follower. Ctrl-C (or SIGTERM) unmounts and stops everything in order: mount,
//! chunkservers, metalogger, masters.
//!
//! Ports: the standard ones (9419–9425) for master 1 when they are free, so `mfsha status`
//! works without `-H`; otherwise, and for master 2 and the witness, free ports the kernel
//! picks, printed in the banner.
//!
//! As root it mounts with `allow_other`. A normal user can run it where FUSE permits: /dev/fuse
//! readable and writable by the user (mode 0666, Debian's default) and a setuid-root
//! fusermount3 (package fuse3). Otherwise it fails before starting anything, saying which is
//! missing. A normal user's mount is private to that user (no `allow_other`, which fusermount3
//! refuses without `user_allow_other` in /etc/fuse.conf), and the filesystem's root directory is
//! given to the user so the mount is writable.
//!
//! The benches' [`LocalCluster`] is the same code with [`Masters::Single`]: one master and a
//! plain metalogger, so their figures stay comparable with docs/benchmarks.md and two shared
//! cores are not spent on replication the bench does not measure.

use crate::supervise::Daemon;
use anyhow::{anyhow, bail, Context};
use mfsha_mount::client::{Caller, Client, ClientConfig, MasterConfig};
use mfsha_proto::types::{SetAttr, ROOT_INO};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Chunkservers the demo starts (goal 2 needs at least two; three shows replication).
const CHUNKSERVERS: usize = 3;
/// How long each step of the start may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The witness's Raft node id in the appliance (the masters are 1 and 2).
const WITNESS_ID: u64 = 3;
/// The demo's cluster id: fixed, so a demo directory can be started again.
const CLUSTER_ID: &str = "demo";
/// How often the demo looks at its daemons.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// Which master group to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masters {
    /// Two masters and the metalogger as voting witness: the default appliance.
    Appliance,
    /// One master and a plain metalogger (the benches).
    Single,
}

/// What kind of local cluster to start.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Use 9419–9425 for master 1 where free, so tools work without `-H` (the demo).
    pub standard_ports: bool,
    /// Mount the filesystem at DIR/mnt.
    pub mount: bool,
    /// Let the chunkservers scrub in the background (benchmarks turn it off).
    pub scrub: bool,
    pub masters: Masters,
}

/// The ports of one master.
#[derive(Debug, Clone, Copy)]
struct MasterPorts {
    client: u16,
    chunkserver: u16,
    logger: u16,
    peer: u16,
    http: u16,
}

/// The ports of one local cluster.
struct Ports {
    masters: Vec<MasterPorts>,
    /// The witness's Raft peer port (the appliance only).
    witness_peer: Option<u16>,
    chunkservers: Vec<u16>,
    /// `/metrics` of each chunkserver (9427, 9437, 9447 where free) and of the logger (9428).
    chunkserver_http: Vec<u16>,
    logger_http: u16,
    /// The mount's `/metrics` (9429).
    mount_http: u16,
}

/// Hands out distinct ports: a preferred one when it is free, otherwise one the kernel picks
/// (never one handed out before: the kernel may offer a just-released port again).
struct PortPicker {
    standard: bool,
    given: Vec<u16>,
}

impl PortPicker {
    fn port(&mut self, preferred: Option<u16>) -> anyhow::Result<u16> {
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if let Some(p) = preferred.filter(|p| self.standard && !self.given.contains(p) && free(*p))
        {
            self.given.push(p);
            return Ok(p);
        }
        loop {
            let listener =
                TcpListener::bind("127.0.0.1:0").context("no free TCP port on 127.0.0.1")?;
            let p = listener.local_addr().context("the port of a free socket")?.port();
            if !self.given.contains(&p) {
                self.given.push(p);
                return Ok(p);
            }
        }
    }

    fn master(&mut self, standard: bool) -> anyhow::Result<MasterPorts> {
        let mut port = |p: u16| self.port(standard.then_some(p));
        Ok(MasterPorts {
            client: port(9421)?,
            chunkserver: port(9420)?,
            logger: port(9419)?,
            peer: port(9423)?,
            http: port(9425)?,
        })
    }
}

impl Ports {
    /// Master 1 and the chunkservers on the standard ports where free (`standard`); the rest
    /// on ports the kernel picks.
    fn pick(standard: bool, masters: Masters) -> anyhow::Result<Ports> {
        let mut picker = PortPicker { standard, given: Vec::new() };
        let mut list = vec![picker.master(true)?];
        let mut witness_peer = None;
        if masters == Masters::Appliance {
            list.push(picker.master(false)?);
            witness_peer = Some(picker.port(None)?);
        }
        let chunkservers =
            [9422, 9432, 9442].iter().map(|p| picker.port(Some(*p))).collect::<Result<_, _>>()?;
        let chunkserver_http =
            [9427, 9437, 9447].iter().map(|p| picker.port(Some(*p))).collect::<Result<_, _>>()?;
        let logger_http = picker.port(Some(9428))?;
        let mount_http = picker.port(Some(9429))?;
        Ok(Ports {
            masters: list,
            witness_peer,
            chunkservers,
            chunkserver_http,
            logger_http,
            mount_http,
        })
    }

    fn addrs(&self, port: impl Fn(&MasterPorts) -> u16) -> Vec<String> {
        self.masters.iter().map(|m| format!("127.0.0.1:{}", port(m))).collect()
    }
}

/// `[ "a", "b" ]` for YAML.
fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `peers:` entries for node `me`: every other master with its addresses, and the
/// witness (which serves no client, so has only its peer address).
fn peers_yaml(p: &Ports, me: u64, indent: &str) -> String {
    let mut yaml = String::new();
    for (i, m) in p.masters.iter().enumerate() {
        let id = i as u64 + 1;
        if id == me {
            continue;
        }
        if me == WITNESS_ID {
            // The witness talks Raft only: it needs no master's service addresses.
            yaml += &format!("{indent}  - {{id: {id}, addr: \"127.0.0.1:{}\"}}\n", m.peer);
        } else {
            yaml += &format!(
                "{indent}  - {{id: {id}, addr: \"127.0.0.1:{}\", client: \"127.0.0.1:{}\", chunkserver: \"127.0.0.1:{}\", logger: \"127.0.0.1:{}\"}}\n",
                m.peer, m.client, m.chunkserver, m.logger
            );
        }
    }
    if let Some(port) = p.witness_peer.filter(|_| me != WITNESS_ID) {
        yaml += &format!("{indent}  - {{id: {WITNESS_ID}, addr: \"127.0.0.1:{port}\"}}\n");
    }
    if yaml.is_empty() {
        return format!("{indent}peers: []\n");
    }
    format!("{indent}peers:\n{yaml}")
}

fn write_master_config(dir: &Path, p: &Ports, index: usize) -> anyhow::Result<PathBuf> {
    let (id, m) = (index as u64 + 1, p.masters[index]);
    let path = dir.join(format!("master{id}.yaml"));
    let yaml = format!(
        "# written by `mfsha demo`\nnode_id: {id}\ncluster_id: {CLUSTER_ID}\nsecret_file: {key}\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{c}\n  chunkserver: 127.0.0.1:{cs}\n  logger: 127.0.0.1:{l}\n  peer: 127.0.0.1:{peer}\n  http: 127.0.0.1:{h}\n{peers}chunks:\n  replication_delay_init_ms: 2000\n",
        data = dir.join(format!("master{id}")).display(),
        key = key_path(dir).display(),
        c = m.client,
        cs = m.chunkserver,
        l = m.logger,
        peer = m.peer,
        h = m.http,
        peers = peers_yaml(p, id, ""),
    );
    write(&path, &yaml)?;
    Ok(path)
}

/// The metalogger's config: it follows the masters' logger ports and keeps its copies in
/// DIR/logger; in the appliance it is also the witness (its Raft store in DIR/logger/witness).
fn write_logger_config(dir: &Path, p: &Ports) -> anyhow::Result<PathBuf> {
    let path = dir.join("logger.yaml");
    let mut yaml = format!(
        "# written by `mfsha demo`\nname: demo-metalogger\nsecret_file: {}\ndata_dir: {}\nmasters: {}\nhttp: 127.0.0.1:{}\n",
        key_path(dir).display(),
        dir.join("logger").display(),
        yaml_list(&p.addrs(|m| m.logger)),
        p.logger_http
    );
    if let Some(port) = p.witness_peer {
        yaml += &format!(
            "witness:\n  node_id: {WITNESS_ID}\n  cluster_id: {CLUSTER_ID}\n  listen: 127.0.0.1:{port}\n{}",
            peers_yaml(p, WITNESS_ID, "  ")
        );
    }
    write(&path, &yaml)?;
    Ok(path)
}

fn write_chunkserver_configs(dir: &Path, p: &Ports, scrub: bool) -> anyhow::Result<Vec<PathBuf>> {
    let masters = yaml_list(&p.addrs(|m| m.chunkserver));
    let mut paths = Vec::new();
    for (i, (cs_port, http)) in p.chunkservers.iter().zip(&p.chunkserver_http).enumerate() {
        let n = i + 1;
        let data = dir.join(format!("chunkserver{n}"));
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let path = dir.join(format!("chunkserver{n}.yaml"));
        let yaml = format!(
            "# written by `mfsha demo`\ndata_dirs:\n  - {data}\nmaster: {masters}\nsecret_file: {key}\nlisten: 127.0.0.1:{cs_port}\nhttp: 127.0.0.1:{http}\n{scrub}",
            data = data.display(),
            key = key_path(dir).display(),
            scrub = if scrub { "" } else { "scrub_mib_per_sec: 0\n" },
        );
        write(&path, &yaml)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The cluster secret every daemon of the demo proves (`secret_file`).
fn key_path(dir: &Path) -> PathBuf {
    dir.join("cluster.key")
}

/// Makes the demo's cluster key unless an earlier run of the demo made it.
fn make_key(dir: &Path) -> anyhow::Result<()> {
    let path = key_path(dir);
    if path.exists() {
        return Ok(());
    }
    mfsha_proto::cluster_key::ClusterKey::generate().write_new(&path)?;
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Creates the mount point; fails if something is mounted there or FUSE is unusable.
fn check_mount_point(mnt: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
    if mfsha_mount::helper::is_mounted_anything(mnt) {
        bail!(
            "{} is already a mount point; another demo may be running (stop it, or `umount {}`)",
            mnt.display(),
            mnt.display()
        );
    }
    mfsha_mount::check_fuse_available().with_context(|| format!("cannot mount {}", mnt.display()))
}

/// A directory made by an older `mfsha demo` (one master, data in DIR/master) holds a group
/// of one and chunkservers that obeyed its terms; starting the appliance over it would
/// bootstrap a second filesystem beside the first.
fn check_layout(dir: &Path) -> anyhow::Result<()> {
    if dir.join("master").exists() && !dir.join("master1").exists() {
        bail!(
            "{} was made by an older `mfsha demo` (a single master); remove it (rm -r {}) or \
             give the demo another directory",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// A new filesystem's root directory belongs to root; a normal user's cluster gives it to that
/// user, so the user's mount (which only that user can use) is writable. A client is trusted
/// with its callers' identity, as in MooseFS, so asking as root is how any client does this.
async fn give_root_to_user(masters: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return Ok(());
    }
    let named = masters.join(",");
    let client = Client::connect(ClientConfig::new(MasterConfig::new(masters.to_vec())))
        .await
        .map_err(|e| anyhow!("cannot open a session with the masters at {named}: {e}"))?;
    let root = client.getattr(ROOT_INO).await.map_err(|e| anyhow!("getattr of /: {e}"))?;
    if (root.uid, root.gid) != (uid, gid) {
        let owner = SetAttr { uid: Some(uid), gid: Some(gid), ..SetAttr::default() };
        client
            .setattr(Caller::ROOT, ROOT_INO, owner)
            .await
            .map_err(|e| anyhow!("cannot give / to uid {uid} gid {gid}: {e}"))?;
    }
    client.close().await.map_err(|e| anyhow!("closing the session with {named}: {e}"))
}

/// Starts the demo appliance in `dir` and runs until Ctrl-C/SIGTERM, restarting daemons
/// that die.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let options = ClusterOptions {
        standard_ports: true,
        mount: true,
        scrub: true,
        masters: Masters::Appliance,
    };
    let mut cluster = LocalCluster::start(&rt, dir, options)?;
    let leader =
        rt.block_on(crate::status::survey(&cluster.plan.clients)).leader().map(|l| l.1.node_id);
    banner(&cluster.plan, &cluster.ports, &cluster.daemons, leader);
    let result = rt.block_on(supervise_until_stopped(&mut cluster.daemons));
    cluster.stop();
    result
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Masters, a metalogger, three chunkservers and (optionally) a mount running as children of
/// this process: the demo, `mfsha bench fuse` and `mfsha bench io`. Dropping it stops them.
pub struct LocalCluster {
    plan: Plan,
    ports: Ports,
    daemons: Vec<Daemon>,
}

impl LocalCluster {
    /// Starts everything under `dir` (mounted at `dir/mnt` if asked); on failure stops what
    /// started.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        dir: &Path,
        options: ClusterOptions,
    ) -> anyhow::Result<LocalCluster> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir =
            dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
        let mnt = dir.join("mnt");
        if options.mount {
            check_mount_point(&mnt)?;
        }
        check_layout(&dir)?;
        let exe = std::env::current_exe().context("cannot find the mfsha executable")?;
        let ports = Ports::pick(options.standard_ports, options.masters)?;
        make_key(&dir)?;
        let master_yamls = (0..ports.masters.len())
            .map(|i| write_master_config(&dir, &ports, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cs_yamls = write_chunkserver_configs(&dir, &ports, options.scrub)?;
        let logger_yaml = write_logger_config(&dir, &ports)?;
        let clients = ports.addrs(|m| m.client);
        let mount = options.mount.then_some(mnt);
        let mount_http = ports.mount_http;
        let plan =
            Plan { exe, dir, master_yamls, logger_yaml, cs_yamls, clients, mount, mount_http };
        let mut cluster = LocalCluster { plan, ports, daemons: Vec::new() };
        if let Err(e) = start_all(rt, &cluster.plan, &mut cluster.daemons) {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    /// Where the filesystem is mounted, if it is.
    pub fn mount_point(&self) -> Option<&Path> {
        self.plan.mount.as_deref()
    }

    /// The directory holding the cluster's configs, logs and data.
    pub fn dir(&self) -> &Path {
        &self.plan.dir
    }

    /// The chunkservers' data directories.
    pub fn chunkserver_dirs(&self) -> Vec<PathBuf> {
        (1..=CHUNKSERVERS).map(|n| self.plan.dir.join(format!("chunkserver{n}"))).collect()
    }

    /// The master processes' pids, for `mfsha bench fuse`'s memory per file.
    pub fn master_pids(&self) -> Vec<u32> {
        self.daemons.iter().filter(|d| d.name.starts_with("master")).map(|d| d.pid()).collect()
    }

    /// The masters' client addresses as `-H` takes them (one address with one master).
    pub fn master(&self) -> String {
        self.plan.masters_arg()
    }

    /// Unmounts and stops everything: mount first (it stores buffered writes), then the
    /// chunkservers, the metalogger, the masters.
    pub fn stop(&mut self) {
        if self.daemons.is_empty() {
            return;
        }
        println!("stopping the local cluster");
        for daemon in self.daemons.iter_mut().rev() {
            daemon.stop();
        }
        self.daemons.clear();
        // A mount that died and was not restarted leaves its dead FUSE connection behind.
        if let Some(mnt) = self.plan.mount.as_deref() {
            if mfsha_mount::helper::is_mounted_anything(mnt) {
                if let Err(e) = mfsha_mount::unmount(mnt) {
                    eprintln!(
                        "demo: cannot unmount {}: {e}; `umount -l {}`",
                        mnt.display(),
                        mnt.display()
                    );
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What to start, where.
struct Plan {
    exe: PathBuf,
    dir: PathBuf,
    /// Master 1's first.
    master_yamls: Vec<PathBuf>,
    logger_yaml: PathBuf,
    cs_yamls: Vec<PathBuf>,
    /// Every master's client address, master 1's first.
    clients: Vec<String>,
    /// The mount point, when the cluster is mounted.
    mount: Option<PathBuf>,
    /// The mount's `/metrics` port.
    mount_http: u16,
}

impl Plan {
    fn masters_arg(&self) -> String {
        self.clients.join(",")
    }
}

fn start_all(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    daemons: &mut Vec<Daemon>,
) -> anyhow::Result<()> {
    let Plan { exe, dir, master_yamls, logger_yaml, cs_yamls, clients, mount, .. } = plan;
    let replicated = master_yamls.len() > 1;
    println!(
        "starting {}, {CHUNKSERVERS} chunkservers{} in {}",
        if replicated {
            "two masters, the metalogger as the group's witness"
        } else {
            "a master, a metalogger"
        },
        if mount.is_some() { " and a mount" } else { "" },
        dir.display()
    );
    if !dir.join("master1").exists() {
        bootstrap(exe, &master_yamls[0])?;
    }
    for (i, yaml) in master_yamls.iter().enumerate() {
        let name = format!("master{}", i + 1);
        daemons.push(Daemon::start(exe, dir, &name, &args(&["master", "-c"], yaml))?);
    }
    daemons.push(Daemon::start(exe, dir, "metalogger", &args(&["logger", "-c"], logger_yaml))?);
    wait_until(daemons, "a master to lead", || {
        rt.block_on(crate::status::survey(clients)).leader().is_some()
    })?;
    for (i, yaml) in cs_yamls.iter().enumerate() {
        let name = format!("chunkserver{}", i + 1);
        daemons.push(Daemon::start(exe, dir, &name, &args(&["chunkserver", "-c"], yaml))?);
    }
    wait_until(daemons, "the chunkservers and the metalogger to register", || {
        let survey = rt.block_on(crate::status::survey(clients));
        survey
            .leader()
            .is_some_and(|(_, s, _)| s.chunkservers.len() >= CHUNKSERVERS && !s.loggers.is_empty())
    })?;
    let Some(mnt) = mount else { return Ok(()) };
    rt.block_on(give_root_to_user(clients))
        .context("cannot make the filesystem's root directory this user's")?;
    let masters = plan.masters_arg();
    let metrics = format!("metrics=127.0.0.1:{}", plan.mount_http);
    let mount_args: Vec<String> = ["mount", &mnt.to_string_lossy(), "-H", &masters, "-o", &metrics]
        .map(String::from)
        .to_vec();
    daemons.push(Daemon::start(exe, dir, "mount", &mount_args)?.with_mount_point(mnt));
    let fsname = clients.join(mfsha_mount::FSNAME_MASTER_SEPARATOR);
    wait_until(daemons, "the mount", || mfsha_mount::helper::is_mounted(mnt, &fsname))
}

fn args(head: &[&str], path: &Path) -> Vec<String> {
    let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    v.push(path.to_string_lossy().into_owned());
    v
}

/// Polls `ready` until it holds, failing early if a daemon exits or after START_TIMEOUT.
fn wait_until(
    daemons: &mut [Daemon],
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for d in daemons.iter_mut() {
            d.check_running()?;
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(|d| d.log.display().to_string()).collect();
            bail!("timed out after {START_TIMEOUT:?} waiting for {what}; see {}", logs.join(", "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn banner(plan: &Plan, ports: &Ports, daemons: &[Daemon], leader: Option<u64>) {
    let dir = &plan.dir;
    let mnt = plan.mount.as_deref().expect("the demo is mounted");
    println!("\nmfsha demo is running (configuration, data and logs in {}):", dir.display());
    for d in daemons {
        let note = if d.name == "metalogger" && ports.witness_peer.is_some() {
            format!("   (Raft witness, node {WITNESS_ID})")
        } else {
            String::new()
        };
        println!("  {:<13} pid {:<7} log {}{note}", d.name, d.pid(), d.log.display());
    }
    let masters = plan.masters_arg();
    println!(
        "  masters' client ports {masters}, chunkservers on 127.0.0.1:{:?}",
        ports.chunkservers
    );
    let metrics: Vec<String> = (ports.masters.iter().map(|m| m.http))
        .chain(ports.chunkserver_http.iter().copied())
        .chain([ports.logger_http, ports.mount_http])
        .map(|port| format!("http://127.0.0.1:{port}/metrics"))
        .collect();
    println!("  Prometheus metrics: {}", metrics.join(" "));
    let h = format!(" -H {masters}");
    println!(
        "\nThe filesystem is mounted at {} (goal 2: two copies of every chunk). Try:",
        mnt.display()
    );
    println!("  cp -r /etc/ssl {}/ && ls -l {}/ssl", mnt.display(), mnt.display());
    println!("  df -h {}", mnt.display());
    println!("  mfsha status{h}");
    println!("  mfsha fileinfo{h} {}/ssl/openssl.cnf", mnt.display());
    println!(
        "  mfsha meta from-logger {}   # what the metalogger could restore",
        dir.join("logger").display()
    );
    failover_hint(&masters, daemons, leader);
    println!("\nStop everything with Ctrl-C.");
}

/// How to watch a failover: kill the leading master, see the other take over.
fn failover_hint(masters: &str, daemons: &[Daemon], leader: Option<u64>) {
    let Some(id) = leader else { return };
    let name = format!("master{id}");
    let Some(daemon) = daemons.iter().find(|d| d.name == name) else { return };
    let other = if id == 1 { 2 } else { 1 };
    println!("\nFailover: node {id} ({name}) leads. Kill it, and master{other} takes over while the mount keeps working:");
    println!("  kill -9 {}", daemon.pid());
    println!("  mfsha status -H {masters}      # the new leader, and the dead one unreachable");
    println!(
        "The demo starts a daemon that dies again after {:?}: {name} comes back as a follower.",
        crate::supervise::RESTART_DELAY
    );
    println!("  mfsha member transfer-leader -H {masters} {id}   # then give it the lead back");
}

/// Runs until Ctrl-C or SIGTERM, restarting daemons that die.
async fn supervise_until_stopped(daemons: &mut [Daemon]) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        tokio::select! {
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => daemons.iter_mut().for_each(Daemon::supervise),
        }
    }
}

/// `mfsha bootstrap` for a new demo directory: the group is made explicitly, never because a
/// data directory happens to be empty.
fn bootstrap(exe: &Path, master_yaml: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(exe)
        .arg("bootstrap")
        .arg("-c")
        .arg(master_yaml)
        .output()
        .with_context(|| format!("cannot run {} bootstrap", exe.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(anyhow!("bootstrapping the demo's metadata group failed: {}", stderr.trim()));
    }
    Ok(())
}
