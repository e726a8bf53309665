//! `mfsha demo [DIR]`: a whole cluster on this machine in one command.
//!
//! Starts a master, a metalogger, three chunkservers and a FUSE mount as child processes of this executable,
//! with their configuration, data and logs under DIR (default `./mfsha-demo`) and the mount at
//! DIR/mnt, all on loopback. It prints what runs and how to use it, and on Ctrl-C (or SIGTERM)
//! unmounts and stops everything in order: mount, chunkservers, master.
//!
//! Ports: the standard ones (9419–9425) when they are free, so `mfsha status` works without
//! `-H`; otherwise free ports the kernel picks, printed in the banner.
//!
//! As root it mounts with `allow_other`. A normal user can run it where FUSE permits: /dev/fuse
//! readable and writable by the user (mode 0666, Debian's default) and a setuid-root
//! fusermount3 (package fuse3). Otherwise it fails before starting anything, saying which is
//! missing. A normal user's mount is private to that user (no `allow_other`, which fusermount3
//! refuses without `user_allow_other` in /etc/fuse.conf), and the filesystem's root directory is
//! given to the user so the mount is writable.

use anyhow::{anyhow, bail, Context};
use mfsha_mount::client::{Caller, Client, ClientConfig, MasterConfig};
use mfsha_proto::types::{SetAttr, ROOT_INO};
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chunkservers the demo starts (goal 2 needs at least two; three shows replication).
const CHUNKSERVERS: usize = 3;
/// How long each daemon may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One child daemon.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(exe: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Daemon> {
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open the log file {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("cannot share {}", log.display()))?;
        let mut command = Command::new(exe);
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        // Own process group: Ctrl-C reaches only the demo, which stops the daemons in order.
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to the
        // child if the demo dies, so no daemon outlives a killed demo.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start the {name}"))?;
        Ok(Daemon { name: name.to_string(), child, log })
    }

    /// Fails (with the end of its log) if the daemon has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                bail!(
                    "the {} exited ({status}); its log {} ends with:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                )
            }
            Err(e) => bail!("cannot check on the {}: {e}", self.name),
        }
    }

    /// SIGTERM, wait, and SIGKILL if it does not stop in time.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) } != 0 {
            eprintln!("demo: cannot signal the {}: {}", self.name, std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return println!("  stopped {}", self.name),
                Ok(Some(status)) => {
                    return println!(
                        "  stopped {} ({status}; see {})",
                        self.name,
                        self.log.display()
                    )
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return eprintln!("demo: cannot wait for the {}: {e}", self.name),
            }
        }
        eprintln!("demo: the {} did not stop within {STOP_TIMEOUT:?}; killing it", self.name);
        if let Err(e) = self.child.kill().and_then(|_| self.child.wait().map(|_| ())) {
            eprintln!("demo: cannot kill the {}: {e}", self.name);
        }
    }
}

/// The ports of one demo cluster.
struct Ports {
    client: u16,
    chunkserver: u16,
    logger: u16,
    peer: u16,
    http: u16,
    chunkservers: Vec<u16>,
}

impl Ports {
    /// The standard ports where free (`standard`), otherwise ports the kernel picks.
    fn pick(standard: bool) -> anyhow::Result<Ports> {
        let port = |preferred: u16| port(standard.then_some(preferred));
        Ok(Ports {
            client: port(9421)?,
            chunkserver: port(9420)?,
            logger: port(9419)?,
            peer: port(9423)?,
            http: port(9425)?,
            chunkservers: vec![port(9422)?, port(9432)?, port(9442)?],
        })
    }
}

/// `preferred` if given and free on 127.0.0.1, otherwise any free port.
fn port(preferred: Option<u16>) -> anyhow::Result<u16> {
    if let Some(preferred) = preferred.filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
        return Ok(preferred);
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("no free TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// The metalogger's config: it follows the master's logger port and keeps its copies in
/// DIR/logger.
fn write_logger_config(dir: &Path, p: &Ports) -> anyhow::Result<PathBuf> {
    let data = dir.join("logger");
    let path = dir.join("logger.yaml");
    let yaml = format!(
        "# written by `mfsha demo`\ndata_dir: {}\nmasters:\n  - 127.0.0.1:{}\n",
        data.display(),
        p.logger
    );
    write(&path, &yaml)?;
    Ok(path)
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

/// A new filesystem's root directory belongs to root; a normal user's cluster gives it to that
/// user, so the user's mount (which only that user can use) is writable. A client is trusted
/// with its callers' identity, as in MooseFS, so asking as root is how any client does this.
async fn give_root_to_user(master: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return Ok(());
    }
    let client = Client::connect(ClientConfig::new(MasterConfig::new(vec![master.to_string()])))
        .await
        .map_err(|e| anyhow!("cannot open a session with the master at {master}: {e}"))?;
    let root = client.getattr(ROOT_INO).await.map_err(|e| anyhow!("getattr of /: {e}"))?;
    if (root.uid, root.gid) != (uid, gid) {
        let owner = SetAttr { uid: Some(uid), gid: Some(gid), ..SetAttr::default() };
        client
            .setattr(Caller::ROOT, ROOT_INO, owner)
            .await
            .map_err(|e| anyhow!("cannot give / to uid {uid} gid {gid}: {e}"))?;
    }
    client.close().await.map_err(|e| anyhow!("closing the session with {master}: {e}"))
}

fn write_configs(dir: &Path, p: &Ports, scrub: bool) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let master = dir.join("master.yaml");
    let yaml = format!(
        "# written by `mfsha demo`\nnode_id: 1\ncluster_id: demo\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{c}\n  chunkserver: 127.0.0.1:{cs}\n  logger: 127.0.0.1:{l}\n  peer: 127.0.0.1:{peer}\n  http: 127.0.0.1:{h}\nchunks:\n  replication_delay_init_ms: 2000\n",
        data = dir.join("master").display(),
        c = p.client,
        cs = p.chunkserver,
        l = p.logger,
        peer = p.peer,
        h = p.http,
    );
    write(&master, &yaml)?;
    let mut chunkservers = Vec::new();
    for (i, cs_port) in p.chunkservers.iter().enumerate() {
        let n = i + 1;
        let data = dir.join(format!("chunkserver{n}"));
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let path = dir.join(format!("chunkserver{n}.yaml"));
        let yaml = format!(
            "# written by `mfsha demo`\ndata_dirs:\n  - {data}\nmaster: 127.0.0.1:{m}\nlisten: 127.0.0.1:{cs_port}\n{scrub}",
            data = data.display(),
            m = p.chunkserver,
            scrub = if scrub { "" } else { "scrub_mib_per_sec: 0\n" },
        );
        write(&path, &yaml)?;
        chunkservers.push(path);
    }
    Ok((master, chunkservers))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Starts the demo cluster in `dir` and runs until Ctrl-C/SIGTERM or a daemon dies.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let options = ClusterOptions { standard_ports: true, mount: true, scrub: true };
    let mut cluster = LocalCluster::start(&rt, dir, options)?;
    banner(&cluster.plan, &cluster.ports, &cluster.daemons);
    let result = rt.block_on(wait_for_stop(&mut cluster.daemons));
    cluster.stop();
    result
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What kind of local cluster to start.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    /// Use 9419–9425 where free, so tools work without `-H` (the demo).
    pub standard_ports: bool,
    /// Mount the filesystem at DIR/mnt.
    pub mount: bool,
    /// Let the chunkservers scrub in the background (benchmarks turn it off).
    pub scrub: bool,
}

/// A master, a metalogger, three chunkservers and (optionally) a mount running as children of
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
        let exe = std::env::current_exe().context("cannot find the mfsha executable")?;
        let ports = Ports::pick(options.standard_ports)?;
        let (master_yaml, cs_yamls) = write_configs(&dir, &ports, options.scrub)?;
        let logger_yaml = write_logger_config(&dir, &ports)?;
        let master_addr = format!("127.0.0.1:{}", ports.client);
        let mount = options.mount.then_some(mnt);
        let plan = Plan { exe, dir, master_yaml, logger_yaml, cs_yamls, master_addr, mount };
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

    /// The master's client address.
    pub fn master(&self) -> &str {
        &self.plan.master_addr
    }

    /// Unmounts and stops everything: mount first (it stores buffered writes), then the
    /// chunkservers, then the master.
    pub fn stop(&mut self) {
        if self.daemons.is_empty() {
            return;
        }
        println!("stopping the local cluster");
        for daemon in self.daemons.iter_mut().rev() {
            daemon.stop();
        }
        self.daemons.clear();
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
    master_yaml: PathBuf,
    logger_yaml: PathBuf,
    cs_yamls: Vec<PathBuf>,
    master_addr: String,
    /// The mount point, when the cluster is mounted.
    mount: Option<PathBuf>,
}

fn start_all(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    daemons: &mut Vec<Daemon>,
) -> anyhow::Result<()> {
    let Plan { exe, dir, master_yaml, logger_yaml, cs_yamls, master_addr, mount } = plan;
    let master_addr = master_addr.as_str();
    println!(
        "starting a master, a metalogger, {CHUNKSERVERS} chunkservers{} in {}",
        if mount.is_some() { " and a mount" } else { "" },
        dir.display()
    );
    if !dir.join("master").exists() {
        bootstrap(exe, master_yaml)?;
    }
    daemons.push(Daemon::start(exe, dir, "master", &args(&["master", "-c"], master_yaml))?);
    wait_until(daemons, "the master to answer", || {
        rt.block_on(crate::status::fetch(master_addr)).is_ok()
    })?;
    daemons.push(Daemon::start(exe, dir, "metalogger", &args(&["logger", "-c"], logger_yaml))?);
    for (i, yaml) in cs_yamls.iter().enumerate() {
        let name = format!("chunkserver{}", i + 1);
        daemons.push(Daemon::start(exe, dir, &name, &args(&["chunkserver", "-c"], yaml))?);
    }
    wait_until(daemons, "the chunkservers and the metalogger to register", || {
        rt.block_on(crate::status::fetch(master_addr))
            .is_ok_and(|(_, s)| s.chunkservers.len() >= CHUNKSERVERS && !s.loggers.is_empty())
    })?;
    let Some(mnt) = mount else { return Ok(()) };
    rt.block_on(give_root_to_user(master_addr))
        .context("cannot make the filesystem's root directory this user's")?;
    let mount_args: Vec<String> =
        ["mount", &mnt.to_string_lossy(), "-H", master_addr].map(String::from).to_vec();
    daemons.push(Daemon::start(exe, dir, "mount", &mount_args)?);
    wait_until(daemons, "the mount", || mfsha_mount::helper::is_mounted(mnt, master_addr))
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

fn banner(plan: &Plan, ports: &Ports, daemons: &[Daemon]) {
    let (dir, master) = (&plan.dir, &plan.master_addr);
    let mnt = plan.mount.as_deref().expect("the demo is mounted");
    println!("\nmfsha demo is running (configuration, data and logs in {}):", dir.display());
    for d in daemons {
        println!("  {:<13} pid {:<7} log {}", d.name, d.child.id(), d.log.display());
    }
    println!("  master client port {master}, chunkservers on 127.0.0.1:{:?}", ports.chunkservers);
    let h = if ports.client == mfsha_proto::ports::MASTER_CLIENT {
        String::new()
    } else {
        format!(" -H {master}")
    };
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
    println!("\nStop everything with Ctrl-C.");
}

/// Runs until Ctrl-C or SIGTERM, or until a daemon dies (an error).
async fn wait_for_stop(daemons: &mut [Daemon]) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tick.tick() => {
                for d in daemons.iter_mut() {
                    d.check_running()?;
                }
            }
        }
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
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
