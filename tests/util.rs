//! Test helpers: a [`Cluster`] of real `mfsha` processes in a temporary directory.
//!
//! Every daemon is a child process of the test started from the `mfsha` binary cargo built for
//! this test run, with its stdout/stderr in `<dir>/<name>.log`. Dropping the cluster kills them.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `mfsha` binary built for this test run, or the one `MFSHA_BIN` names: the
/// benchmarks run release daemons under this debug harness that way (a release build of the
/// tests would compile RocksDB's C++ a second time).
pub fn mfsha_bin() -> PathBuf {
    match std::env::var_os("MFSHA_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_mfsha")),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released), never one this test process was given
/// before: the kernel may offer a just-released port again, and a master given the same port
/// for two listeners fails to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until `addr` accepts TCP connections, or panics naming `what` and its log.
pub fn wait_for_port(addr: &str, what: &str, log: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {addr} within {timeout:?}; log:\n{}", tail(log, 40));
}

/// The last `lines` lines of a file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A daemon started by a test.
pub struct Daemon {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `mfsha ARGS` with output going to `dir/name.log` (appended across restarts).
    pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_with_fd_limit(dir, name, args, None)
    }

    /// [`Daemon::spawn`] with the daemon's open-file limit (soft and hard) set to `nofile`,
    /// as a service manager or a container may start it.
    pub fn spawn_with_fd_limit(
        dir: &Path,
        name: &str,
        args: &[&str],
        nofile: Option<u64>,
    ) -> Daemon {
        use std::os::unix::process::CommandExt;
        let log = dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = Command::new(mfsha_bin());
        if let Some(nofile) = nofile {
            let limit = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
            // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe
            // and touches only the struct copied into the closure.
            unsafe {
                command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = command
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { name: name.to_string(), child: Some(child), log }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns its exit status.
    pub fn stop(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!(
                    "{} did not stop within {timeout:?} of SIGTERM; log:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for an exit the test already asked for (a signal it sent);
    /// panics with the log if the daemon is still running then.
    pub fn stop_after_signal(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("{} did not exit within {timeout:?}; log:\n{}", self.name, tail(&self.log, 40));
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is touched.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
}

/// Runs `mfsha ARGS` to completion.
pub fn mfsha(args: &[&str]) -> Output {
    Command::new(mfsha_bin()).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Ports of one master.
#[derive(Debug, Clone, Copy)]
pub struct MasterPorts {
    pub client: u16,
    pub chunkserver: u16,
    pub logger: u16,
    pub peer: u16,
    pub http: u16,
}

impl MasterPorts {
    pub fn pick() -> Self {
        MasterPorts {
            client: free_port(),
            chunkserver: free_port(),
            logger: free_port(),
            peer: free_port(),
            http: free_port(),
        }
    }
}

/// A master, chunkservers and mounts in one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ports: MasterPorts,
    pub master: Option<Daemon>,
    /// Extra YAML appended to the master's config (e.g. shortened delays).
    pub master_extra_yaml: String,
    /// Chunkservers added with [`Cluster::add_chunkserver`], by index.
    pub chunkservers: Vec<Chunkserver>,
    /// The open-file limit (soft and hard) every daemon is started with; `None`: the test
    /// process's own.
    pub daemon_fd_limit: Option<u64>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            dir: tempfile::Builder::new().prefix("mfsha-test-").tempdir().unwrap(),
            ports: MasterPorts::pick(),
            master: None,
            master_extra_yaml: String::new(),
            chunkservers: Vec::new(),
            daemon_fd_limit: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// "127.0.0.1:PORT" of the master's client port.
    pub fn master_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.client)
    }

    pub fn master_data_dir(&self) -> PathBuf {
        self.path().join("master")
    }

    pub fn master_config_path(&self) -> PathBuf {
        self.path().join("master.yaml")
    }

    /// Writes the master's YAML config (loopback ports, data under the cluster dir).
    pub fn write_master_config(&self) -> PathBuf {
        let p = self.ports;
        let yaml = format!(
            "node_id: 1\ncluster_id: test\ndata_dir: {data}\nlisten:\n  client: 127.0.0.1:{c}\n  chunkserver: 127.0.0.1:{cs}\n  logger: 127.0.0.1:{l}\n  peer: 127.0.0.1:{peer}\n  http: 127.0.0.1:{h}\n{extra}",
            data = self.master_data_dir().display(),
            c = p.client,
            cs = p.chunkserver,
            l = p.logger,
            peer = p.peer,
            h = p.http,
            extra = self.master_extra_yaml,
        );
        let path = self.master_config_path();
        fs::write(&path, yaml).unwrap();
        path
    }

    /// Starts (or restarts) the master and waits until its client port accepts connections.
    pub fn start_master(&mut self) {
        let config = self.write_master_config();
        if !self.master_data_dir().exists() {
            bootstrap(self.path(), &config);
        }
        let args = ["master", "-c", config.to_str().unwrap()];
        let daemon =
            Daemon::spawn_with_fd_limit(self.path(), "master", &args, self.daemon_fd_limit);
        let log = daemon.log.clone();
        self.master = Some(daemon);
        wait_for_port(&self.master_addr(), "master", &log, Duration::from_secs(30));
    }

    pub fn kill_master(&mut self) {
        self.master.as_mut().expect("master started").kill();
    }

    pub fn master_log(&self) -> String {
        tail(&self.path().join("master.log"), 60)
    }
}

/// A chunkserver of a test cluster: its fixed port, data directories and settings. Change
/// the fields, then [`Cluster::restart_chunkserver`] to apply them.
pub struct Chunkserver {
    pub name: String,
    pub port: u16,
    /// Its HTTP (`/metrics`) port.
    pub http_port: u16,
    pub dirs: Vec<PathBuf>,
    /// Per data directory: marked for removal.
    pub marked: Vec<bool>,
    /// Background CRC check speed; 0 (off) unless a test wants it.
    pub scrub_mib_per_sec: f64,
    /// Extra YAML appended to its config.
    pub extra_yaml: String,
    pub daemon: Option<Daemon>,
}

impl Cluster {
    /// Configures a chunkserver with `disks` fresh data directories (not started yet).
    pub fn add_chunkserver(&mut self, disks: usize) -> usize {
        let index = self.chunkservers.len();
        let name = format!("chunkserver{index}");
        let dirs: Vec<PathBuf> =
            (0..disks).map(|d| self.path().join(format!("{name}-disk{d}"))).collect();
        for dir in &dirs {
            fs::create_dir_all(dir).unwrap();
        }
        self.chunkservers.push(Chunkserver {
            name,
            port: free_port(),
            http_port: free_port(),
            marked: vec![false; disks],
            dirs,
            scrub_mib_per_sec: 0.0,
            extra_yaml: String::new(),
            daemon: None,
        });
        index
    }

    /// Adds a chunkserver with `disks` data directories and starts it.
    pub fn start_chunkserver(&mut self, disks: usize) -> usize {
        let index = self.add_chunkserver(disks);
        self.restart_chunkserver(index);
        index
    }

    /// (Re)writes chunkserver `i`'s config from its fields, starts it and waits for its port.
    pub fn restart_chunkserver(&mut self, i: usize) {
        let master = format!("127.0.0.1:{}", self.ports.chunkserver);
        let cs = &mut self.chunkservers[i];
        assert!(cs.daemon.as_mut().is_none_or(|d| !d.is_running()), "{} is still running", cs.name);
        let mut yaml = String::from("data_dirs:\n");
        for (dir, marked) in cs.dirs.iter().zip(&cs.marked) {
            yaml += &format!("  - path: {}\n    marked_for_removal: {marked}\n", dir.display());
        }
        yaml += &format!(
            "master: {master}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nheartbeat_ms: 200\nscrub_mib_per_sec: {}\n{}",
            cs.port, cs.http_port, cs.scrub_mib_per_sec, cs.extra_yaml
        );
        let config = self.dir.path().join(format!("{}.yaml", cs.name));
        fs::write(&config, yaml).unwrap();
        let daemon = Daemon::spawn_with_fd_limit(
            self.dir.path(),
            &cs.name,
            &["chunkserver", "-c", config.to_str().unwrap()],
            self.daemon_fd_limit,
        );
        let log = daemon.log.clone();
        cs.daemon = Some(daemon);
        wait_for_port(
            &format!("127.0.0.1:{}", cs.port),
            &cs.name.clone(),
            &log,
            Duration::from_secs(30),
        );
    }

    /// SIGKILL chunkserver `i`.
    pub fn kill_chunkserver(&mut self, i: usize) {
        self.chunkservers[i].daemon.as_mut().expect("chunkserver started").kill();
    }

    /// SIGTERM chunkserver `i` and wait for a clean exit.
    pub fn stop_chunkserver(&mut self, i: usize) {
        let cs = &mut self.chunkservers[i];
        let status = cs.daemon.as_mut().expect("chunkserver started").stop(Duration::from_secs(10));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM; log:\n{}",
            cs.name,
            tail(&self.dir.path().join(format!("{}.log", cs.name)), 40)
        );
    }

    /// The tail of chunkserver `i`'s log.
    pub fn chunkserver_log(&self, i: usize) -> String {
        tail(&self.path().join(format!("{}.log", self.chunkservers[i].name)), 60)
    }

    /// The tails of every chunkserver's log, for failure messages.
    pub fn chunkserver_logs(&self) -> String {
        (0..self.chunkservers.len())
            .map(|i| format!("--- {} ---\n{}", self.chunkservers[i].name, self.chunkserver_log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `mfsha bootstrap -c CONFIG`: a new group in the master's empty data directory.
pub fn bootstrap(dir: &Path, config: &Path) {
    let output = std::process::Command::new(mfsha_bin())
        .args(["bootstrap", "-c", config.to_str().unwrap()])
        .current_dir(dir)
        .output()
        .expect("run mfsha bootstrap");
    assert!(
        output.status.success(),
        "mfsha bootstrap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
