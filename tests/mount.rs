//! The client side: the client library against real daemons (no FUSE), then real FUSE mounts
//! on /dev/fuse driven through ordinary system calls and tools (`cp -a`, `diff -r`, pjdfstest).

mod client;
mod diff;
mod fuse;
mod locks;
mod pjdfs;

use crate::util::{tail, Cluster, Daemon};
use mfsha_mount::{Client, ClientConfig, MasterConfig};
use mfsha_proto::client::{ClientOp, ClientReply, Request};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A master and `chunkservers` chunkservers (one disk each), all registered.
pub fn cluster(chunkservers: usize) -> Cluster {
    let mut c = Cluster::new();
    // Replicate soon after a restart, so tests that kill the master do not wait long.
    c.master_extra_yaml = "chunks:\n  replication_delay_init_ms: 1000\n".into();
    c.start_master();
    for _ in 0..chunkservers {
        c.start_chunkserver(1);
    }
    wait_registered(&c, chunkservers);
    c
}

/// Waits until the master lists `n` chunkservers.
pub fn wait_registered(c: &Cluster, n: usize) {
    let addr = c.master_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = runtime();
    loop {
        let listed = rt.block_on(chunkservers_listed(&addr));
        if listed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {listed} of {n} chunkservers registered within 30 s\nmaster log:\n{}\n{}",
            c.master_log(),
            c.chunkserver_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn chunkservers_listed(addr: &str) -> usize {
    cluster_status(addr).await.map_or(0, |s| s.chunkservers.len())
}

/// `mfsha status` as a tool sees it, or `None` if the master does not answer.
pub async fn cluster_status(addr: &str) -> Option<mfsha_proto::client::ClusterStatus> {
    let rpc = mfsha_proto::client::MasterClient::connect(addr).await.ok()?;
    let req = Request::anonymous(ClientOp::Status);
    match rpc.call_timeout(req, 5000).await {
        Ok(Ok(ClientReply::Status(s))) => Some(*s),
        _ => None,
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A client of `addr` whose operations give up after `io_timeout`.
pub async fn connect_with(addr: &str, io_timeout: Duration) -> Arc<Client> {
    let mut master = MasterConfig::new(vec![addr.to_string()]);
    master.info = "mfsha mount test".into();
    master.io_timeout = io_timeout;
    let client =
        Client::connect(ClientConfig::new(master)).await.expect("client connects to the master");
    // The tests act as uid 1000 in the root directory: the master checks permissions as a
    // local filesystem does, so root's directory must be writable for them (as /tmp is).
    let everyone = mfsha_proto::types::SetAttr { mode: Some(0o777), ..Default::default() };
    let root = client.root();
    client.setattr(mfsha_mount::Caller::ROOT, root, everyone).await.expect("chmod 777 /");
    client
}

pub async fn connect(addr: &str) -> Arc<Client> {
    connect_with(addr, Duration::from_secs(60)).await
}

/// Fails the test, naming what is missing, unless FUSE mounts can work here.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the FUSE tests need the fuse kernel module (modprobe fuse)"
    );
    assert!(
        which("fusermount3").is_some(),
        "fusermount3 is missing: install it (Debian: apt-get install fuse3)"
    );
}

pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// A FUSE mount of a test cluster: `mfsha mount DIR -H MASTER` as a child process.
pub struct Mount {
    pub dir: PathBuf,
    pub daemon: Daemon,
    source: String,
}

impl Mount {
    /// Mounts the cluster at `<cluster dir>/<name>` and waits until the kernel lists it.
    pub fn start(c: &Cluster, name: &str, extra: &[&str]) -> Mount {
        Mount::start_as(c, name, extra, &c.master_addr())
    }

    /// Like [`Mount::start`], for a mount whose `df` source is `source` (a subfolder mount
    /// shows "HOST:PORT/SUBFOLDER").
    pub fn start_as(c: &Cluster, name: &str, extra: &[&str], source: &str) -> Mount {
        Mount::start_in(c.path(), name, &c.master_addr(), extra, source)
    }

    /// Mounts the masters `masters` (`-H` as given) at `<dir>/<name>`; `source` is what the
    /// kernel is expected to list as the mount's source.
    pub fn start_in(dir: &Path, name: &str, masters: &str, extra: &[&str], source: &str) -> Mount {
        require_fuse();
        let base = dir;
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let mut args = vec!["mount", dir.to_str().unwrap(), "-H", masters];
        args.extend_from_slice(extra);
        let daemon = Daemon::spawn(base, name, &args);
        let mut mount = Mount { dir, daemon, source: source.to_string() };
        mount.wait_mounted();
        mount
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_mounted() {
            assert!(
                self.daemon.is_running(),
                "the mount process exited; log:\n{}",
                tail(&self.daemon.log, 40)
            );
            assert!(
                Instant::now() < deadline,
                "not mounted within 30 s; log:\n{}",
                tail(&self.daemon.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_mounted(&self) -> bool {
        mfsha_mount::helper::is_mounted(&self.dir, &self.source)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// SIGTERM: the mount must store its buffered writes, unmount and exit 0.
    pub fn stop(&mut self) {
        let status = self.daemon.stop(Duration::from_secs(30));
        assert!(
            status.success(),
            "mount exited with {status}; log:\n{}",
            tail(&self.daemon.log, 40)
        );
        assert!(
            !self.is_mounted(),
            "{} is still mounted after the mount process exited",
            self.dir.display()
        );
    }

    pub fn log(&self) -> String {
        tail(&self.daemon.log, 60)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            crate::util::signal(self.daemon.pid().unwrap(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.daemon.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if self.is_mounted() {
            // A test failed mid-way: never leave a dead mount behind for the next test.
            let lazy = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
            if !matches!(lazy, Ok(s) if s.success()) {
                eprintln!("could not unmount {} ({lazy:?})", self.dir.display());
            }
        }
    }
}

/// SHA-256 of a file's content, read with plain system calls.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            return hex(&h.finalize());
        }
        h.update(&buf[..n]);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
