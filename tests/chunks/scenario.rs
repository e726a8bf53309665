//! Helpers and whole scenarios for the chunk tests, shared by the default suite
//! (`tests/chunks.rs`) and the slow suite (`tests/slow/`), which runs them at full size.

#![allow(dead_code)]

use crate::util::{tail, Cluster};
use mfsha_mount::client::{Caller, Client, ClientConfig, MasterConfig};
use mfsha_proto::client::{ChunkCopies, ClusterStatus};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Master settings that make the engine react in tests within a second or two. The write
/// lock keeps its production length (120 s, longer than any wait here) on purpose: a chunk
/// whose write has ended must be released by `WriteChunkEnd`, not by the lock timing out.
pub const FAST_MASTER_YAML: &str = "chunks:\n  replication_delay_init_ms: 300\n  replication_loop_ms: 100\n  replications_per_server_max: 4\n  deletions_per_server_max: 50\n  write_lock_timeout_ms: 120000\n";

/// Offset of chunk data inside a chunk file (header + CRC table; see crates/chunk/src/format.rs).
pub const CHUNK_DATA_OFFSET: u64 = 8192;

/// A cluster with a fast-reacting master and `servers` chunkservers, all registered.
pub async fn cluster(servers: usize) -> Cluster {
    cluster_with(servers, "").await
}

/// [`cluster`] with `extra_yaml` appended to the master's config (after the fast settings).
pub async fn cluster_with(servers: usize, extra_yaml: &str) -> Cluster {
    let mut cluster = Cluster::new();
    cluster.master_extra_yaml = format!("{FAST_MASTER_YAML}{extra_yaml}");
    cluster.start_master();
    for _ in 0..servers {
        cluster.start_chunkserver(1);
    }
    let client = connect(&cluster).await;
    wait_for(&cluster, "every chunkserver to register", Duration::from_secs(30), || async {
        client.cluster_status().await.map(|s| s.chunkservers.len() == servers).unwrap_or(false)
    })
    .await;
    close(&client).await;
    cluster
}

pub async fn connect(cluster: &Cluster) -> Arc<Client> {
    let mut master = MasterConfig::new(vec![cluster.master_addr()]);
    master.io_timeout = Duration::from_secs(30);
    let mut config = ClientConfig::new(master);
    config.data_timeout = Duration::from_secs(10);
    Client::connect(config).await.unwrap_or_else(|e| {
        panic!("cannot open a session: {e}\nmaster log:\n{}", cluster.master_log())
    })
}

pub async fn close(client: &Client) {
    client.close().await.expect("closing the client session");
}

/// Polls `check` every 100 ms until it is true, or fails naming `what` with the logs.
pub async fn wait_for<F, Fut>(cluster: &Cluster, what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\nmaster log:\n{}\n{}",
                cluster.master_log(),
                cluster.chunkserver_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn random_data(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::Rng::fill(&mut rand::thread_rng(), &mut data[..]);
    data
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Writes `data` to `path` (parents created), durable on every copy when it returns.
pub async fn write(client: &Client, path: &str, data: &[u8]) {
    if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
        client
            .mkdir_all(Caller::ROOT, dir, 0o755)
            .await
            .unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
    }
    client
        .write_file(Caller::ROOT, path, data)
        .await
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

pub async fn file_info(client: &Client, path: &str) -> Vec<ChunkCopies> {
    let attr = client.resolve(path).await.unwrap_or_else(|e| panic!("resolving {path}: {e}"));
    client.file_info(attr.ino).await.unwrap_or_else(|e| panic!("fileinfo {path}: {e}"))
}

/// True when every chunk of `path` has exactly `want` VALID copies and nothing else (or, with
/// `allow_marked`, extra copies that are MARKED FOR REMOVAL).
pub async fn has_exactly(client: &Client, path: &str, want: usize, allow_marked: bool) -> bool {
    let Ok(attr) = client.resolve(path).await else { return false };
    let Ok(info) = client.file_info(attr.ino).await else { return false };
    !info.is_empty()
        && info.iter().all(|c| {
            let valid = c.copies.iter().filter(|x| x.state == "VALID").count();
            let other = c.copies.iter().filter(|x| x.state != "VALID");
            valid == want
                && other.into_iter().all(|x| allow_marked && x.state == "MARKED FOR REMOVAL")
        })
}

pub async fn status(client: &Client) -> ClusterStatus {
    client.cluster_status().await.expect("cluster status")
}

/// Every chunk file (`XX/chunk_*.mfs`) under a data directory.
pub fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(subs) = std::fs::read_dir(dir) else { return out };
    for sub in subs.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with("chunk_") && name.ends_with(".mfs") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// The chunk file of `chunk_id` under `dir`, any version.
pub fn chunk_file(dir: &Path, chunk_id: u64) -> Option<PathBuf> {
    let prefix = format!("chunk_{chunk_id:016X}_");
    chunk_files(dir)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
}

/// Index of the chunkserver listening on `port`.
pub fn server_by_port(cluster: &Cluster, port: u16) -> usize {
    (0..cluster.chunkservers.len())
        .find(|&i| cluster.chunkservers[i].port == port)
        .expect("a chunkserver of this cluster")
}

/// The first scenario at `size` bytes: write with goal 2, SIGKILL a server holding
/// copies in the middle of a read, check the SHA-256; the master restores two copies; a write
/// while the server is down makes its copies stale; when it returns they are removed.
pub async fn kill_during_read(size: usize, restore_limit: Duration) {
    let mut cluster = cluster(3).await;
    let client = connect(&cluster).await;
    let data = random_data(size);
    write(&client, "/data/file", &data).await;
    let info = file_info(&client, "/data/file").await;
    assert_eq!(info.len(), size.div_ceil(64 << 20));
    assert!(info.iter().all(|c| c.copies.len() == 2), "goal 2 gives two copies: {info:?}");

    // A fresh client reads the first MiB; the chunkserver it connected to for that is the one
    // serving the read, and it is the one killed. The rest is read through the same open file.
    let reader = connect(&cluster).await;
    let ports: Vec<u16> = cluster.chunkservers.iter().map(|c| c.port).collect();
    let before = connections_to(&ports);
    let attr = reader.resolve("/data/file").await.unwrap();
    let (fh, _) = reader.open(Caller::ROOT, attr.ino, libc::O_RDONLY).await.unwrap();
    let mut back = reader.read(fh, 0, 1 << 20).await.unwrap().to_vec();
    let serving: HashSet<u16> = connections_to(&ports)
        .into_iter()
        .filter(|(inode, _)| !before.contains_key(inode))
        .map(|(_, port)| port)
        .collect();
    assert_eq!(serving.len(), 1, "the first MiB came from one chunkserver: {serving:?}");
    let victim = server_by_port(&cluster, *serving.iter().next().unwrap());
    cluster.kill_chunkserver(victim);
    let killed = Instant::now();
    while back.len() < size {
        let piece = reader
            .read(fh, back.len() as u64, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("read at {} after the kill: {e}", back.len()));
        assert!(!piece.is_empty(), "short read at {}", back.len());
        back.extend_from_slice(&piece);
    }
    reader.release(fh).await.unwrap();
    close(&reader).await;
    assert_eq!(sha256(&back), sha256(&data), "the read across the kill returned wrong data");

    let read_took = killed.elapsed();
    wait_for(&cluster, "two valid copies of every chunk again", restore_limit, || {
        has_exactly(&client, "/data/file", 2, false)
    })
    .await;
    eprintln!(
        "{} MiB: the read finished {read_took:?} and two copies were back {:?} after the kill",
        size >> 20,
        killed.elapsed()
    );

    // A write while the server is down: its copy of chunk 0 becomes stale.
    let (fh, _) = client.open(Caller::ROOT, attr.ino, libc::O_WRONLY).await.unwrap();
    let patch = random_data(4096);
    client.write(fh, 100, &patch).await.unwrap();
    client.release(fh).await.unwrap();
    let mut expect = data;
    expect[100..100 + 4096].copy_from_slice(&patch);

    let stale_before = chunk_files(&cluster.chunkservers[victim].dirs[0]).len();
    assert!(stale_before >= 1, "the killed server still has its chunk files");
    cluster.restart_chunkserver(victim);
    let victim_port = cluster.chunkservers[victim].port;
    wait_for(
        &cluster,
        "the returned server's stale and surplus copies removed",
        restore_limit,
        || async {
            let on_victim = |info: &[ChunkCopies]| {
                info.iter().flat_map(|c| &c.copies).filter(|x| x.server.port == victim_port).count()
            };
            status(&client).await.chunkservers.len() == 3
                && has_exactly(&client, "/data/file", 2, false).await
                && on_victim(&file_info(&client, "/data/file").await) == 0
                && chunk_files(&cluster.chunkservers[victim].dirs[0]).is_empty()
        },
    )
    .await;
    let reread = client.read_file("/data/file").await.unwrap();
    assert_eq!(sha256(&reread), sha256(&expect));
    close(&client).await;
}

/// This process's established TCP connections to any of `ports` on this host: socket inode →
/// remote port. Shows which chunkserver a client of the test talks to.
pub fn connections_to(ports: &[u16]) -> HashMap<u64, u16> {
    let ours: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd (is /proc mounted?)")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().to_string();
            link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut found = HashMap::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            const ESTABLISHED: &str = "01";
            if cols.len() < 10 || cols[3] != ESTABLISHED {
                continue;
            }
            let port = cols[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            let inode: Option<u64> = cols[9].parse().ok();
            if let (Some(port), Some(inode)) = (port, inode) {
                if ports.contains(&port) && ours.contains(&inode) {
                    found.insert(inode, port);
                }
            }
        }
    }
    found
}

/// Prints a failed scenario's logs (used by callers with `tail`).
pub fn log_of(path: &Path) -> String {
    tail(path, 40)
}
