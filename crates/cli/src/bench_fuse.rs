//! `mfsha bench fuse`: what an application sees through the FUSE mount, next to a local
//! directory on the same disk, in the same run.
//!
//! Without `--mount` it starts its own local cluster (a master, three chunkservers and a
//! mount, goal 2, as `mfsha demo` does) under `--dir`. Then, for the mount and for the local
//! directory `--dir/local` in turn:
//!
//! * **fio** (the Debian package): sequential 1 MiB write with `end_fsync=1`, cold sequential
//!   read of the same file, 4 KiB random reads with 1 and with 4 jobs;
//! * **metadata**, one syscall per operation from one thread: create, stat, `ls -l` (readdir
//!   plus lstat of every entry), rename and unlink of `--files` files in one directory, and
//!   mkdir/rmdir of a tenth as many directories;
//! * **small files**: `--small-files` files of 4 KiB written (each created, written and
//!   closed), then read back cold.
//!
//! "Cold" means the kernel's page cache was dropped first (`/proc/sys/vm/drop_caches`, so
//! the bench needs root; without it the read figures are marked warm).

use crate::demo::ClusterOptions;
use anyhow::{bail, Context};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What to run, from the command line.
pub struct FuseBench {
    pub mount: Option<PathBuf>,
    pub dir: PathBuf,
    pub size_mib: u64,
    pub files: usize,
    pub small_files: usize,
    pub random_seconds: u64,
}

/// One figure for both columns.
struct Row {
    what: String,
    unit: &'static str,
    mount: f64,
    local: f64,
}

/// Runs the whole bench and prints a table.
pub fn run(bench: &FuseBench) -> anyhow::Result<()> {
    check_fio()?;
    fs::create_dir_all(&bench.dir)
        .with_context(|| format!("cannot create the work directory {}", bench.dir.display()))?;
    let local = bench.dir.canonicalize()?.join("local");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cluster = match &bench.mount {
        Some(_) => None,
        None => Some({
            let options = ClusterOptions {
                standard_ports: false,
                mount: true,
                scrub: false,
                masters: crate::demo::Masters::Single,
            };
            crate::demo::LocalCluster::start(&rt, &bench.dir.join("cluster"), options)?
        }),
    };
    let mount = match (&bench.mount, &cluster) {
        (Some(path), _) => path.clone(),
        (None, Some(c)) => c.mount_point().expect("started with a mount").to_path_buf(),
        (None, None) => unreachable!("a cluster is started when no mount is given"),
    };
    if let Some(c) = &cluster {
        println!(
            "started a local cluster: master {}, goal 2, mounted at {}",
            c.master(),
            mount.display()
        );
    }
    let on_mount = mount.join(format!("mfsha-bench-fuse-{}", std::process::id()));
    let cold = can_drop_caches();
    println!("mfsha bench fuse: mount {} vs local {}", mount.display(), local.display());
    if !cold {
        println!("note: cannot drop the page cache (not root?): read figures are warm, not cold");
    }
    let mut rows = Vec::new();
    let (m, l) = both(&on_mount, &local, |dir| fio_suite(dir, bench))?;
    merge(&mut rows, m, l);
    let (m, l) = both(&on_mount, &local, |dir| metadata_suite(dir, bench.files))?;
    merge(&mut rows, m, l);
    let (m, l) = both(&on_mount, &local, |dir| small_files(dir, bench.small_files))?;
    merge(&mut rows, m, l);
    print_table(&rows);
    drop(cluster);
    Ok(())
}

fn check_fio() -> anyhow::Result<()> {
    match Command::new("fio").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("fio is not installed: `apt-get install fio` (scripts/setup.sh installs it)"),
    }
}

/// One measured figure: (what, unit, value).
type Figure = (String, &'static str, f64);

/// Runs `suite` in a fresh directory on the mount, then in a fresh local one, and removes
/// both afterwards.
fn both(
    mount: &Path,
    local: &Path,
    suite: impl Fn(&Path) -> anyhow::Result<Vec<Figure>>,
) -> anyhow::Result<(Vec<Figure>, Vec<Figure>)> {
    let mut out = Vec::new();
    for dir in [mount, local] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        out.push(suite(dir)?);
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let local = out.pop().expect("two runs");
    let mount = out.pop().expect("two runs");
    Ok((mount, local))
}

fn merge(rows: &mut Vec<Row>, mount: Vec<Figure>, local: Vec<Figure>) {
    for ((what, unit, m), (_, _, l)) in mount.into_iter().zip(local) {
        println!("  {what:<34} mount {m:>10.0} {unit:<9} local {l:>10.0} {unit}");
        rows.push(Row { what, unit, mount: m, local: l });
    }
}

fn print_table(rows: &[Row]) {
    println!("\n| figure | mount | local dir | mount/local |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        let ratio = if r.local > 0.0 { r.mount / r.local * 100.0 } else { 0.0 };
        println!("| {} ({}) | {:.0} | {:.0} | {:.0} % |", r.what, r.unit, r.mount, r.local, ratio);
    }
}

fn can_drop_caches() -> bool {
    drop_caches().is_ok()
}

/// Writes dirty pages back and drops the page cache, dentries and inodes.
fn drop_caches() -> std::io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3")
}

fn fio_suite(dir: &Path, b: &FuseBench) -> anyhow::Result<Vec<Figure>> {
    let file = dir.join("fio.data");
    let size = format!("{}M", b.size_mib);
    let file_arg = format!("--filename={}", file.display());
    let runtime = format!("--runtime={}", b.random_seconds);
    let mut out = Vec::new();
    let write =
        fio(&[&file_arg, "--rw=write", "--bs=1M", &format!("--size={size}"), "--end_fsync=1"])?;
    out.push((format!("seq write 1 MiB, end_fsync ({size})"), "MiB/s", write.write_mib_s));
    drop_caches().ok();
    let read = fio(&[&file_arg, "--rw=read", "--bs=1M", &format!("--size={size}")])?;
    out.push((format!("cold seq read 1 MiB ({size})"), "MiB/s", read.read_mib_s));
    for jobs in [1, 4] {
        drop_caches().ok();
        let numjobs = format!("--numjobs={jobs}");
        let r = fio(&[
            &file_arg,
            "--rw=randread",
            "--bs=4k",
            &format!("--size={size}"),
            &numjobs,
            "--time_based",
            &runtime,
            "--group_reporting",
        ])?;
        out.push((format!("4 KiB random read, {jobs} job(s)"), "IOPS", r.read_iops));
    }
    Ok(out)
}

/// What one fio run measured.
struct FioResult {
    read_mib_s: f64,
    write_mib_s: f64,
    read_iops: f64,
}

fn fio(args: &[&str]) -> anyhow::Result<FioResult> {
    let out = Command::new("fio")
        .args(["--name=bench", "--ioengine=psync", "--output-format=json"])
        .args(args)
        .output()
        .context("cannot run fio")?;
    if !out.status.success() {
        bail!("fio {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("fio printed no JSON for {}", args.join(" ")))?;
    let job = &json["jobs"][0];
    let number = |path: [&str; 2]| job[path[0]][path[1]].as_f64().unwrap_or(0.0);
    Ok(FioResult {
        // fio reports bandwidth in KiB/s.
        read_mib_s: number(["read", "bw"]) / 1024.0,
        write_mib_s: number(["write", "bw"]) / 1024.0,
        read_iops: number(["read", "iops"]),
    })
}

/// Runs `op` for every item and returns operations per second.
fn rate<T>(items: &[T], mut op: impl FnMut(&T) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    for item in items {
        op(item)?;
    }
    Ok(items.len() as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

fn metadata_suite(dir: &Path, files: usize) -> anyhow::Result<Vec<Figure>> {
    let names: Vec<PathBuf> = (0..files).map(|i| dir.join(format!("file{i:06}"))).collect();
    let renamed: Vec<(PathBuf, PathBuf)> =
        names.iter().map(|p| (p.clone(), p.with_extension("renamed"))).collect();
    let mut out = Vec::new();
    let create = rate(&names, |p| {
        fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
        Ok(())
    })?;
    out.push((format!("create ({files} files, one dir)"), "ops/s", create));
    let stat = rate(&names, |p| {
        fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
        Ok(())
    })?;
    out.push(("stat".to_string(), "ops/s", stat));
    drop_caches().ok();
    let start = Instant::now();
    let listed = ls_l(dir)?;
    if listed != files {
        bail!("ls -l of {} listed {listed} entries, expected {files}", dir.display());
    }
    out.push(("ls -l".to_string(), "entries/s", files as f64 / start.elapsed().as_secs_f64()));
    let rename = rate(&renamed, |(from, to)| {
        fs::rename(from, to).with_context(|| format!("rename {}", from.display()))
    })?;
    out.push(("rename".to_string(), "ops/s", rename));
    let unlink = rate(&renamed, |(_, to)| {
        fs::remove_file(to).with_context(|| format!("unlink {}", to.display()))
    })?;
    out.push(("unlink".to_string(), "ops/s", unlink));
    let dirs: Vec<PathBuf> = (0..files / 10).map(|i| dir.join(format!("dir{i:05}"))).collect();
    let mkdir =
        rate(&dirs, |p| fs::create_dir(p).with_context(|| format!("mkdir {}", p.display())))?;
    out.push((format!("mkdir ({} dirs)", dirs.len()), "ops/s", mkdir));
    let rmdir =
        rate(&dirs, |p| fs::remove_dir(p).with_context(|| format!("rmdir {}", p.display())))?;
    out.push(("rmdir".to_string(), "ops/s", rmdir));
    Ok(out)
}

/// `ls -l`: every entry's name from readdir, then its lstat. Returns the entry count.
fn ls_l(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("readdir {}", dir.display()))? {
        let entry = entry.with_context(|| format!("readdir {}", dir.display()))?;
        fs::symlink_metadata(entry.path())
            .with_context(|| format!("lstat {}", entry.path().display()))?;
        count += 1;
    }
    Ok(count)
}

fn small_files(dir: &Path, count: usize) -> anyhow::Result<Vec<Figure>> {
    let names: Vec<PathBuf> = (0..count).map(|i| dir.join(format!("small{i:06}"))).collect();
    let block: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let write = rate(&names, |p| {
        let mut f = fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
        f.write_all(&block).with_context(|| format!("write {}", p.display()))?;
        Ok(())
    })?;
    drop_caches().ok();
    let mut buf = Vec::with_capacity(4096);
    let read = rate(&names, |p| {
        buf.clear();
        fs::File::open(p)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("read {}", p.display()))?;
        if buf != block {
            bail!(
                "{} read back {} bytes that differ from what was written",
                p.display(),
                buf.len()
            );
        }
        Ok(())
    })?;
    Ok(vec![
        (format!("small files written ({count} × 4 KiB)"), "files/s", write),
        ("small files read cold".to_string(), "files/s", read),
    ])
}
