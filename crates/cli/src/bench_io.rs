//! `mfsha bench io [--size-mib 1024] [--dir DIR] [-H host:port]`: chunk I/O throughput through
//! the client library (no FUSE), with the local disk's own sequential figures measured in the
//! same run for scale.
//!
//! Without `-H` the bench starts its own cluster under `DIR` (`demo::LocalCluster` without a
//! mount: a master, a metalogger and three chunkservers, all children of this process, all on
//! the disk holding `DIR`), which is what `docs/benchmarks.md` records. For each goal 1, 2 and 3 it writes a file of `size` bytes
//! (durable on every copy when the write returns: the client fsyncs the chain at close), evicts
//! the chunk files from the page cache, and reads the file back, verifying its checksum.
//! The local-disk figures are a `write + fsync` and a cold read of a file of the same size in
//! `DIR`. With three chunkservers on one disk, goal N writes every byte N times to that disk.

use crate::demo::{ClusterOptions, LocalCluster};
use anyhow::{bail, Context};
use mfsha_mount::client::{Caller, Client, ClientConfig, MasterConfig};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Runs the benchmark and prints the figures.
pub fn run(master: Option<&str>, size_mib: u64, dir: &Path) -> anyhow::Result<()> {
    if size_mib == 0 {
        bail!("--size-mib must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let size = size_mib * MIB;
    let data = pattern(size as usize);
    let (local_write, local_read) = local_disk(dir, &data)?;
    println!("chunk I/O benchmark: {size_mib} MiB file; work directory {}", dir.display());
    println!(
        "local disk:  write {:>8.1} MiB/s (with fsync)   read {:>8.1} MiB/s (cold)",
        local_write, local_read
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut owned = match master {
        Some(_) => None,
        None => {
            let root = dir.join(format!("cluster-{}", std::process::id()));
            let options = ClusterOptions {
                standard_ports: false,
                mount: false,
                scrub: false,
                masters: crate::demo::Masters::Single,
            };
            Some(LocalCluster::start(&rt, &root, options)?)
        }
    };
    let master = match (&owned, master) {
        (Some(c), _) => c.master().to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let figures = rt.block_on(all_goals(&master, &data, owned.as_ref()))?;
    for (goal, (w, r)) in (1..=3u8).zip(figures) {
        println!(
            "goal {goal}:      write {:>8.1} MiB/s ({:>3.0} % of local)   read {:>8.1} MiB/s ({:>3.0} % of local)",
            w,
            100.0 * w / local_write,
            r,
            100.0 * r / local_read
        );
    }
    if let Some(cluster) = owned.as_mut() {
        // A good run leaves nothing behind; a failed one keeps the logs (named in the error).
        cluster.stop();
        std::fs::remove_dir_all(cluster.dir())
            .with_context(|| format!("removing the bench cluster {}", cluster.dir().display()))?;
    }
    Ok(())
}

/// Write and read figures (MiB/s) for goal 1, 2 and 3.
async fn all_goals(
    master: &str,
    data: &[u8],
    cluster: Option<&LocalCluster>,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let checksum = crc32c::crc32c(data);
    let client = Client::connect(ClientConfig::new(MasterConfig::new(vec![master.to_string()])))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open a session with {master}: {e}"))?;
    let mut figures = Vec::new();
    for goal in 1..=3u8 {
        let figure =
            one_goal(&client, goal, data, checksum, cluster).await.with_context(
                || match cluster {
                    Some(c) => {
                        format!("goal {goal}; the daemons' logs are in {}", c.dir().display())
                    }
                    None => format!("goal {goal}"),
                },
            )?;
        figures.push(figure);
    }
    client.close().await.map_err(|e| anyhow::anyhow!("closing the session: {e}"))?;
    Ok(figures)
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
        evict_chunk_files(&c.chunkserver_dirs())?;
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

/// Evicts every chunk file of the chunkservers in `dirs` from the page cache.
fn evict_chunk_files(dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
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
