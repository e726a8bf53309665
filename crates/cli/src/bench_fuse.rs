//! `mfsha bench fuse`: what an application sees through the FUSE mount, next to a local
//! directory on the same disk, in the same run.
//!
//! Without `--mount` it starts its own local clusters under `--dir`, one after the other: the
//! default appliance (two masters and the witness, three chunkservers and a mount, goal 2,
//! as `mfsha demo` does), then a single master; each is measured alone and stopped before
//! the next starts. Then, for each mount (or the one `--mount` names) and for the local
//! directory `--dir/local` in turn:
//!
//! * **fio** (the Debian package): sequential 1 MiB write with `end_fsync=1`, cold sequential
//!   read of the same file, 4 KiB random reads with 1 and with 4 jobs;
//! * **metadata**, one syscall per operation from one thread: create, stat, `ls -l` (readdir
//!   plus lstat of every entry), rename and unlink of `--files` files in one directory, and
//!   mkdir/rmdir of a tenth as many directories; then creates from 8 threads at once, each
//!   in a directory of its own;
//! * **small files**: `--small-files` files of 4 KiB written (each created, written and
//!   closed), then read back cold;
//! * **a tarball**, a real workload: the first `--tar-entries` entries of `/usr/include` and
//!   `/usr/share` (made into a tar file on the local disk once, before the first column),
//!   extracted with `tar -xf`, then `find | xargs stat` of every entry, then `rm -rf`, each
//!   timed in seconds.
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
    pub tar_entries: usize,
}

/// Where one column of the table is measured: a mount (of a cluster the bench started, or
/// the one given) or the local directory.
struct Target {
    name: &'static str,
    /// The cluster to start for it; `None` for a given mount and for the local directory.
    cluster: Option<crate::demo::Masters>,
    /// The directory measured in (for a cluster: below its mount point, set once it runs).
    dir: Option<PathBuf>,
}

/// Runs the whole bench and prints a table.
///
/// Without `--mount` the columns are the default appliance (two masters and the witness,
/// every acknowledgement replicated), a single master, and the local directory, measured one
/// after the other (each cluster runs alone, so they do not share the cores); with it, the
/// given mount and the local directory.
pub fn run(bench: &FuseBench) -> anyhow::Result<()> {
    check_fio()?;
    fs::create_dir_all(&bench.dir)
        .with_context(|| format!("cannot create the work directory {}", bench.dir.display()))?;
    let local = bench.dir.canonicalize()?.join("local");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cold = can_drop_caches();
    if !cold {
        println!("note: cannot drop the page cache (not root?): read figures are warm, not cold");
    }
    let bench_dir = |mount: &Path| mount.join(format!("mfsha-bench-fuse-{}", std::process::id()));
    let mut targets = match &bench.mount {
        Some(mount) => {
            vec![Target { name: "mount", cluster: None, dir: Some(bench_dir(mount)) }]
        }
        None => vec![
            Target { name: "appliance", cluster: Some(crate::demo::Masters::Appliance), dir: None },
            Target {
                name: "single master",
                cluster: Some(crate::demo::Masters::Single),
                dir: None,
            },
        ],
    };
    targets.push(Target { name: "local dir", cluster: None, dir: Some(local) });
    let tarball = match bench.tar_entries {
        0 => None,
        entries => Some(make_tarball(&bench.dir.canonicalize()?, entries)?),
    };
    let mut columns = Vec::new();
    for target in &mut targets {
        let cluster = match target.cluster {
            Some(masters) => {
                let options =
                    ClusterOptions { standard_ports: false, mount: true, scrub: false, masters };
                let where_ = bench.dir.join(target.name.replace(' ', "-"));
                let cluster = crate::demo::LocalCluster::start(&rt, &where_, options)?;
                let mount = cluster.mount_point().expect("started with a mount").to_path_buf();
                println!(
                    "started a local cluster ({}): masters {}, goal 2, mounted at {}",
                    target.name,
                    cluster.master(),
                    mount.display()
                );
                target.dir = Some(bench_dir(&mount));
                Some(cluster)
            }
            None => None,
        };
        let dir = target.dir.clone().expect("a directory for every target");
        println!("mfsha bench fuse: {} ({})", target.name, dir.display());
        let mut figures = Vec::new();
        figures.extend(fresh(&dir, |d| fio_suite(d, bench))?);
        figures.extend(fresh(&dir, |d| metadata_suite(d, bench.files))?);
        figures.extend(fresh(&dir, |d| small_files(d, bench.small_files))?);
        if let Some(tarball) = &tarball {
            figures.extend(fresh(&dir, |d| tarball_suite(d, tarball))?);
        }
        for (what, unit, value) in &figures {
            println!("  {what:<40} {:>10} {unit}", shown(*value, unit));
        }
        columns.push(figures);
        drop(cluster);
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    print_table(&names, &columns);
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

/// Runs `suite` in `dir`, made fresh for it, and removes it afterwards.
fn fresh(
    dir: &Path,
    suite: impl Fn(&Path) -> anyhow::Result<Vec<Figure>>,
) -> anyhow::Result<Vec<Figure>> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let figures = suite(dir)?;
    fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    Ok(figures)
}

/// One row per figure, one column per target, and the first column as a share of the last
/// (the local directory).
fn print_table(names: &[&str], columns: &[Vec<Figure>]) {
    let first = names.first().copied().unwrap_or("-");
    let last = names.last().copied().unwrap_or("-");
    println!("\n| figure | {} | {first}/{last} |", names.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(names.len()));
    for (row, (what, unit, _)) in columns[0].iter().enumerate() {
        let values: Vec<f64> = columns.iter().map(|c| c[row].2).collect();
        let cells: Vec<String> = values.iter().map(|v| shown(*v, unit)).collect();
        let local = values.last().copied().unwrap_or(0.0);
        let ratio = if local > 0.0 { values[0] / local * 100.0 } else { 0.0 };
        println!("| {what} ({unit}) | {} | {ratio:.0} % |", cells.join(" | "));
    }
}

/// A figure as printed: rates as whole numbers, times in seconds to the millisecond.
fn shown(value: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{value:.3}"),
        _ => format!("{value:.0}"),
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
    let threads = 8;
    let create = parallel_create(dir, threads, files / threads)?;
    out.push((format!("create, {threads} threads (own dirs)"), "ops/s", create));
    Ok(out)
}

/// Creates `per_thread` files from each of `threads` threads, each in a directory of its
/// own (as a parallel build or an untar does): creates per second over all threads.
fn parallel_create(dir: &Path, threads: usize, per_thread: usize) -> anyhow::Result<f64> {
    let dirs: Vec<PathBuf> = (0..threads).map(|t| dir.join(format!("thread{t}"))).collect();
    for d in &dirs {
        fs::create_dir(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    let start = Instant::now();
    let made = std::thread::scope(|scope| {
        let workers: Vec<_> = dirs
            .iter()
            .map(|d| {
                scope.spawn(move || {
                    for i in 0..per_thread {
                        let p = d.join(format!("file{i:06}"));
                        fs::File::create(&p).with_context(|| format!("create {}", p.display()))?;
                    }
                    anyhow::Ok(per_thread)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a create thread panicked"))
            .sum::<anyhow::Result<usize>>()
    })?;
    Ok(made as f64 / start.elapsed().as_secs_f64().max(1e-9))
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

/// A tar file of the first `entries` entries of `/usr/include` and `/usr/share` (in `find`
/// order, so every directory comes before what it holds), in `work`.
fn make_tarball(work: &Path, entries: usize) -> anyhow::Result<Tarball> {
    let list = work.join("tarball.list");
    let path = work.join("tarball.tar");
    let found = Command::new("find")
        .args(["/usr/include", "/usr/share", "-xdev"])
        .output()
        .context("cannot run find for the tarball")?;
    let names: Vec<&str> =
        std::str::from_utf8(&found.stdout)?.lines().filter(|l| !l.contains('\\')).collect();
    let names = &names[..entries.min(names.len())];
    fs::write(&list, names.join("\n") + "\n")?;
    let tar = Command::new("tar")
        .args(["-cf", path.to_str().unwrap_or_default(), "--no-recursion", "-T"])
        .arg(&list)
        .output()
        .context("cannot run tar")?;
    if !tar.status.success() {
        bail!("tar -cf {} failed: {}", path.display(), String::from_utf8_lossy(&tar.stderr));
    }
    println!(
        "tarball: {} entries of /usr/include and /usr/share in {}",
        names.len(),
        path.display()
    );
    Ok(Tarball { path, entries: names.len() })
}

struct Tarball {
    path: PathBuf,
    entries: usize,
}

/// Extracts the tarball into `dir`, stats every entry with `find | xargs stat`, removes it.
fn tarball_suite(dir: &Path, tarball: &Tarball) -> anyhow::Result<Vec<Figure>> {
    let tar = tarball.path.to_str().unwrap_or_default();
    let root = dir.to_str().unwrap_or_default();
    let extract = timed("tar -xf", Command::new("tar").args(["-xf", tar, "-C", root]))?;
    let stat = format!("find {root} -print0 | xargs -0 stat > /dev/null");
    let stat = timed("find | xargs stat", Command::new("sh").args(["-c", &stat]))?;
    let remove = timed("rm -rf", Command::new("rm").args(["-rf", &format!("{root}/usr")]))?;
    let n = tarball.entries;
    Ok(vec![
        (format!("tarball extract ({n} entries)"), "s", extract),
        ("tarball find | xargs stat".to_string(), "s", stat),
        ("tarball rm -rf".to_string(), "s", remove),
    ])
}

/// Runs `command` to success; its wall time in seconds.
fn timed(what: &str, command: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = command.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed().as_secs_f64())
}
