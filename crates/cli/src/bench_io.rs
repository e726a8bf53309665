//! `mfsha bench io [--size-mib 1024] [--dir DIR] [-H host:port]`: chunk I/O throughput through
//! the client library (no FUSE), with the local disk's own sequential figures measured in the
//! same run for scale.
//!
//! Without `-H` the bench starts its own cluster under `DIR` (one master and three
//! chunkservers, all children of this process, all on the disk holding `DIR`), which is what
//! `docs/benchmarks.md` records. For each goal 1, 2 and 3 it writes a file of `size` bytes
//! (durable on every copy when the write returns: the client fsyncs the chain at close), evicts
//! the chunk files from the page cache, and reads the file back, verifying its checksum.
//! The local-disk figures are a `write + fsync` and a cold read of a file of the same size in
//! `DIR`. With three chunkservers on one disk, goal N writes every byte N times to that disk.

use anyhow::{bail, Context};
use mfsha_mount::client::{Caller, Client, ClientConfig, MasterConfig};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Runs the benchmark and prints the figures.
pub async fn run(master: Option<&str>, size_mib: u64, dir: &Path) -> anyhow::Result<()> {
    if size_mib == 0 {
        bail!("--size-mib must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let size = size_mib * MIB;
    let data = pattern(size as usize);
    let checksum = crc32c::crc32c(&data);
    let (local_write, local_read) = local_disk(dir, &data)?;
    println!("chunk I/O benchmark: {size_mib} MiB file; work directory {}", dir.display());
    println!(
        "local disk:  write {:>8.1} MiB/s (with fsync)   read {:>8.1} MiB/s (cold)",
        local_write, local_read
    );
    let owned = match master {
        Some(_) => None,
        None => Some(LocalCluster::start(dir).await?),
    };
    let master = match (&owned, master) {
        (Some(c), _) => c.master.clone(),
        (None, Some(m)) => m.to_string(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let client = Client::connect(ClientConfig::new(MasterConfig::new(vec![master.clone()])))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open a session with {master}: {e}"))?;
    for goal in 1..=3u8 {
        let (w, r) =
            one_goal(&client, goal, &data, checksum, owned.as_ref()).await.with_context(|| {
                match &owned {
                    Some(c) => {
                        format!("goal {goal}; the daemons' logs are in {}", c.root.display())
                    }
                    None => format!("goal {goal}"),
                }
            })?;
        println!(
            "goal {goal}:      write {:>8.1} MiB/s ({:>3.0} % of local)   read {:>8.1} MiB/s ({:>3.0} % of local)",
            w,
            100.0 * w / local_write,
            r,
            100.0 * r / local_read
        );
    }
    client.close().await.map_err(|e| anyhow::anyhow!("closing the session: {e}"))?;
    drop(client);
    if let Some(cluster) = owned {
        cluster.remove()?;
    }
    Ok(())
}

async fn one_goal(
    client: &Client,
    goal: u8,
    data: &[u8],
    checksum: u32,
    cluster: Option<&LocalCluster>,
) -> anyhow::Result<(f64, f64)> {
    let dir = format!("/bench-io-{}-goal{goal}", std::process::id());
    let attr = client
        .mkdir_all(Caller::ROOT, &dir, 0o755)
        .await
        .map_err(|e| anyhow::anyhow!("mkdir {dir}: {e}"))?;
    client
        .set_goal(Caller::ROOT, attr.ino, goal, false)
        .await
        .map_err(|e| anyhow::anyhow!("setgoal {dir}: {e}"))?;
    let path = format!("{dir}/file");
    let started = Instant::now();
    client
        .write_file(Caller::ROOT, &path, data)
        .await
        .map_err(|e| anyhow::anyhow!("writing {path}: {e}"))?;
    let write = rate(data.len(), started.elapsed());
    if let Some(c) = cluster {
        c.evict_chunk_files()?;
    }
    let started = Instant::now();
    let back = client.read_file(&path).await.map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    let read = rate(back.len(), started.elapsed());
    if back.len() != data.len() || crc32c::crc32c(&back) != checksum {
        bail!("{path} read back differs from what was written (goal {goal})");
    }
    client
        .remove_file(Caller::ROOT, &path)
        .await
        .map_err(|e| anyhow::anyhow!("removing {path}: {e}"))?;
    Ok((write, read))
}

fn rate(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / MIB as f64 / took.as_secs_f64().max(1e-9)
}

/// Incompressible-looking data, cheap to make.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sequential write (+fsync) and cold read of `data` in `dir`, in MiB/s.
fn local_disk(dir: &Path, data: &[u8]) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("local-disk-test");
    let started = Instant::now();
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    for piece in data.chunks(MIB as usize) {
        file.write_all(piece).with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
    let write = rate(data.len(), started.elapsed());
    drop(file);
    evict(&path)?;
    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let read = rate(total, started.elapsed());
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok((write, read))
}

/// Drops a file's pages from the page cache so the next read comes from the disk.
fn evict(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: fadvise on a descriptor we own; it only gives the kernel a hint.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!(
            "posix_fadvise on {} failed: {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// A master and three chunkservers started for the bench; killed when dropped.
struct LocalCluster {
    /// Everything of this cluster (configs, logs, metadata, chunks); removed after a good run.
    root: PathBuf,
    master: String,
    data_dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl LocalCluster {
    async fn start(dir: &Path) -> anyhow::Result<LocalCluster> {
        let exe = std::env::current_exe().context("cannot find the mfsha executable")?;
        let root = dir.join(format!("cluster-{}", std::process::id()));
        let (client, cs_port) = (free_port()?, free_port()?);
        let mut cluster = LocalCluster {
            root: root.clone(),
            master: format!("127.0.0.1:{client}"),
            data_dirs: Vec::new(),
            children: Vec::new(),
        };
        let master_yaml = format!(
            "data_dir: {}\nlisten:\n  client: 127.0.0.1:{client}\n  chunkserver: 127.0.0.1:{cs_port}\n  logger: 127.0.0.1:{}\n  peer: 127.0.0.1:{}\n  http: 127.0.0.1:{}\nchunks:\n  replication_delay_init_ms: 500\n",
            root.join("master").display(),
            free_port()?,
            free_port()?,
            free_port()?
        );
        std::fs::create_dir_all(&root)?;
        cluster.spawn(&exe, &root, "master", &master_yaml)?;
        for i in 1..=3 {
            let data = root.join(format!("cs{i}"));
            std::fs::create_dir_all(&data)?;
            let yaml = format!(
                "data_dirs: [{}]\nmaster: 127.0.0.1:{cs_port}\nlisten: 127.0.0.1:{}\nscrub_mib_per_sec: 0\n",
                data.display(),
                free_port()?
            );
            cluster.spawn(&exe, &root, &format!("chunkserver{i}"), &yaml)?;
            cluster.data_dirs.push(data);
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, exe: &Path, root: &Path, name: &str, yaml: &str) -> anyhow::Result<()> {
        let config = root.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(root.join(format!("{name}.log")))?;
        let kind = if name == "master" { "master" } else { "chunkserver" };
        let child = Command::new(exe)
            .args([kind, "-c", config.to_str().context("non-UTF-8 path")?])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the bench's {name}"))?;
        self.children.push(child);
        Ok(())
    }

    /// Waits until the master answers and all three chunkservers registered.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = crate::status::fetch(&self.master).await {
                if status.chunkservers.len() == 3 && status.role == "leader" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the bench cluster did not come up within 60 s; see the logs next to its configs");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Evicts every chunk file from the page cache.
    fn evict_chunk_files(&self) -> anyhow::Result<()> {
        for dir in &self.data_dirs {
            for sub in std::fs::read_dir(dir)? {
                let sub = sub?.path();
                if !sub.is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(&sub)? {
                    evict(&file?.path())?;
                }
            }
        }
        Ok(())
    }
}

impl LocalCluster {
    /// Stops the daemons and deletes the cluster's directory.
    fn remove(mut self) -> anyhow::Result<()> {
        self.stop();
        std::fs::remove_dir_all(&self.root)
            .with_context(|| format!("removing the bench cluster {}", self.root.display()))
    }

    fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            if let Err(e) = child.kill().and_then(|()| child.wait().map(|_| ())) {
                eprintln!("warning: cannot stop a bench daemon (pid {}): {e}", child.id());
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
