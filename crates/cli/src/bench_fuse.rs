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
//!   mkdir/rmdir of a tenth as many directories; then the same from 8 threads at once, each
//!   in a directory of its own;
//! * **small files**: `--small-files` files of 4 KiB written (each created, written and
//!   closed), then read back cold;
//! * **a tarball**, a real workload: the first `--tar-entries` entries of `/usr/include` and
//!   `/usr/share` (made into a tar file on the local disk once, before the first column),
//!   extracted with `tar -xf`, then `find | xargs stat` of every entry, then `rm -rf`, each
//!   timed in seconds;
//! * **a large directory**: `--big-dir` empty files made in one directory by 8 threads, then
//!   `ls -f | wc -l` of it cold, timed, then the files removed by 8 threads; for the clusters
//!   the bench started (and `--beside-master-pid`), each master's resident memory before and
//!   after, per file.
//!
//! Before the first mount is measured, `scripts/bench-floors.py --steps-json` measures on
//! the same machine what each step an operation cannot avoid costs (a FUSE round trip on
//! that mount, a loopback round trip, one synced write, one synced write replicated to two
//! followers); a second table gives each single-threaded figure of an mfsha column as a
//! multiple of the sum of its steps (`Steps`), with the appliance's commits replicated and
//! the single master's not.
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
#[derive(clap::Args)]
pub struct FuseBench {
    /// Use this mounted mfsha filesystem instead of starting a local cluster.
    #[arg(long)]
    mount: Option<PathBuf>,
    /// Another filesystem's mount measured in the same run, as a column between the
    /// mfsha ones and the local directory (MooseFS: scripts/moosefs-beside.sh).
    #[arg(long)]
    beside: Option<PathBuf>,
    /// The pid of the master behind `--beside`, for its memory per file.
    #[arg(long)]
    beside_master_pid: Option<u32>,
    /// Entries of the large directory (`ls -f | wc -l` of it); 0 for none.
    #[arg(long, default_value_t = 1_000_000)]
    big_dir: usize,
    /// The floors script measured in the same run (scripts/bench-floors.py).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-floors.py"))]
    floors: PathBuf,
    /// Do not measure the floors (no second table).
    #[arg(long)]
    no_floors: bool,
    /// Work directory: the local directory compared with the mount, and the cluster.
    #[arg(long, default_value = "mfsha-bench-fuse")]
    dir: PathBuf,
    /// fio file size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Files for the metadata run (directories: a tenth of it).
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// 4 KiB files written then read cold.
    #[arg(long, default_value_t = 5_000)]
    small_files: usize,
    /// Seconds each random-read run lasts.
    #[arg(long, default_value_t = 20)]
    random_seconds: u64,
    /// Entries of the tarball (from /usr/include and /usr/share); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    tar_entries: usize,
}

impl FuseBench {
    /// The floors script, unless `--no-floors`.
    fn floors(&self) -> Option<&Path> {
        (!self.no_floors).then_some(self.floors.as_path())
    }
}

/// Where one column of the table is measured: a mount (of a cluster the bench started, or
/// the one given) or the local directory.
struct Target {
    name: &'static str,
    /// The cluster to start for it; `None` for a given mount and for the local directory.
    cluster: Option<crate::demo::Masters>,
    /// The directory measured in (for a cluster: below its mount point, set once it runs).
    dir: Option<PathBuf>,
    /// Whether this column is mfsha's, and how its commits are made (for its floors).
    commits: Option<Commits>,
    /// The master processes whose memory per file is measured.
    master_pids: Vec<u32>,
}

/// How a column's acknowledgements are made durable: on one disk or on a quorum.
#[derive(Clone, Copy)]
enum Commits {
    /// A single master: one synced write.
    Local,
    /// The appliance (and a `--mount`, taken to be the default appliance): one synced write
    /// replicated to two followers.
    Replicated,
}

/// Runs the whole bench and prints a table.
///
/// Without `--mount` the columns are the default appliance (two masters and the witness,
/// every acknowledgement replicated), a single master, and the local directory, measured one
/// after the other (each cluster runs alone, so they do not share the cores); with it, the
/// given mount and the local directory.
pub fn run(bench: &FuseBench) -> anyhow::Result<()> {
    check_fio()?;
    if let Some(script) = bench.floors().filter(|s| !s.exists()) {
        bail!(
            "the floors script {} is not there: pass --floors PATH (scripts/bench-floors.py in \
             the source tree) or --no-floors",
            script.display()
        );
    }
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
        Some(mount) => vec![Target {
            dir: Some(bench_dir(mount)),
            commits: Some(Commits::Replicated),
            ..Target::plain("mount")
        }],
        None => vec![
            Target {
                cluster: Some(crate::demo::Masters::Appliance),
                commits: Some(Commits::Replicated),
                ..Target::plain("appliance")
            },
            Target {
                cluster: Some(crate::demo::Masters::Single),
                commits: Some(Commits::Local),
                ..Target::plain("single master")
            },
        ],
    };
    if let Some(other) = &bench.beside {
        let master_pids = bench.beside_master_pid.into_iter().collect();
        targets.push(Target {
            dir: Some(bench_dir(other)),
            master_pids,
            ..Target::plain("beside")
        });
    }
    targets.push(Target { dir: Some(local), ..Target::plain("local dir") });
    let mut floors = None;
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
                target.master_pids = cluster.master_pids();
                Some(cluster)
            }
            None => None,
        };
        let dir = target.dir.clone().expect("a directory for every target");
        if let (None, Some(script), Some(_)) = (&floors, bench.floors(), target.commits) {
            let mount = dir.parent().expect("the bench directory is below the mount");
            floors = Some(Floors::measure(script, mount, &bench.dir)?);
        }
        println!("mfsha bench fuse: {} ({})", target.name, dir.display());
        let mut figures = Vec::new();
        // Each suite's figures are printed as it ends, so a long run shows its progress.
        let mut add = |suite: Vec<Figure>| {
            for f in &suite {
                println!("  {:<40} {:>10} {}", f.what, shown(f.value, f.unit), f.unit);
            }
            figures.extend(suite);
        };
        add(fresh(&dir, |d| fio_suite(d, bench))?);
        add(fresh(&dir, |d| metadata_suite(d, bench.files))?);
        add(fresh(&dir, |d| small_files(d, bench.small_files))?);
        if let Some(tarball) = &tarball {
            add(fresh(&dir, |d| tarball_suite(d, tarball))?);
        }
        if bench.big_dir > 0 {
            add(fresh(&dir, |d| big_dir_suite(d, bench.big_dir, &target.master_pids))?);
        }
        columns.push(figures);
        drop(cluster);
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    print_table(&names, &columns);
    if let Some(floors) = &floors {
        print_floor_table(&targets, &columns, floors);
    }
    Ok(())
}

impl Target {
    fn plain(name: &'static str) -> Target {
        Target { name, cluster: None, dir: None, commits: None, master_pids: Vec::new() }
    }
}

fn check_fio() -> anyhow::Result<()> {
    match Command::new("fio").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("fio is not installed: `apt-get install fio` (scripts/setup.sh installs it)"),
    }
}

/// One measured figure, and the steps it cannot do without (for its ratio to the floor).
struct Figure {
    what: String,
    unit: &'static str,
    value: f64,
    steps: Option<Steps>,
}

impl Figure {
    fn new(what: impl Into<String>, unit: &'static str, value: f64) -> Figure {
        Figure { what: what.into(), unit, value, steps: None }
    }

    /// With the least one operation must do: FUSE round trips, loopback round trips to a
    /// daemon, commits of the master's change, synced writes of data on a chunkserver.
    fn floor(mut self, fuse: f64, tcp: f64, commits: f64, syncs: f64) -> Figure {
        self.steps = Some(Steps { fuse, tcp, commit: commits, sync: syncs });
        self
    }
}

/// Counts of steps (in a figure), or the cost in µs of one of each (measured).
#[derive(Clone, Copy, Debug)]
struct Steps {
    fuse: f64,
    tcp: f64,
    /// A master commit: replicated or local as the column's `Commits` says.
    commit: f64,
    sync: f64,
}

/// What `scripts/bench-floors.py --steps-json` prints.
#[derive(serde::Deserialize)]
struct MeasuredSteps {
    fuse_round_trip_us: f64,
    tcp_round_trip_us: f64,
    sync_us: f64,
    replicated_sync_us: f64,
}

/// The measured floors of one run.
struct Floors {
    measured: MeasuredSteps,
}

impl Floors {
    /// Runs the floors script against `mount`, with its files in `work` (the cluster's disk).
    fn measure(script: &Path, mount: &Path, work: &Path) -> anyhow::Result<Floors> {
        let files = work.join("floors");
        let out = Command::new("python3")
            .arg(script)
            .args(["--steps-json", "--mount"])
            .arg(mount)
            .arg("--dir")
            .arg(&files)
            .output()
            .with_context(|| format!("cannot run {} (python3)", script.display()))?;
        if !out.status.success() {
            bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        }
        let measured: MeasuredSteps = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "{} printed no floors: {}",
                script.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        let _ = fs::remove_dir_all(&files);
        println!(
            "floors: FUSE round trip {:.1} µs, loopback round trip {:.1} µs, synced write {:.1} \
             µs, replicated synced write {:.1} µs",
            measured.fuse_round_trip_us,
            measured.tcp_round_trip_us,
            measured.sync_us,
            measured.replicated_sync_us
        );
        Ok(Floors { measured })
    }

    /// The least `steps` cost on this machine, in µs, with commits made as `commits` says.
    fn cost_us(&self, steps: Steps, commits: Commits) -> f64 {
        let m = &self.measured;
        let commit = match commits {
            Commits::Local => m.sync_us,
            Commits::Replicated => m.replicated_sync_us,
        };
        steps.fuse * m.fuse_round_trip_us
            + steps.tcp * m.tcp_round_trip_us
            + steps.commit * commit
            + steps.sync * m.sync_us
    }
}

/// The mfsha columns' single-threaded figures as multiples of their floors.
fn print_floor_table(targets: &[Target], columns: &[Vec<Figure>], floors: &Floors) {
    let ours: Vec<(usize, Commits)> =
        targets.iter().enumerate().filter_map(|(i, t)| t.commits.map(|c| (i, c))).collect();
    let names: Vec<&str> = ours.iter().map(|(i, _)| targets[*i].name).collect();
    println!("\nAgainst the floor (µs per operation measured / the least its steps cost here):");
    println!("\n| figure | steps | {} |", names.join(" | "));
    println!("|---|---|{}", "---:|".repeat(names.len()));
    for (row, figure) in columns[0].iter().enumerate() {
        let Some(steps) = figure.steps else { continue };
        let cells: Vec<String> = ours
            .iter()
            .map(|(i, commits)| {
                let measured_us = 1e6 / columns[*i][row].value.max(1e-9);
                let floor_us = floors.cost_us(steps, *commits);
                format!(
                    "{measured_us:.0} µs = {}× {floor_us:.0}",
                    significant(measured_us / floor_us)
                )
            })
            .collect();
        println!("| {} | {} | {} |", figure.what, steps.describe(), cells.join(" | "));
    }
}

impl Steps {
    /// "2 FUSE + 1 TCP + 1 commit", for the floor table.
    fn describe(&self) -> String {
        let parts =
            [(self.fuse, "FUSE"), (self.tcp, "TCP"), (self.commit, "commit"), (self.sync, "sync")];
        let named: Vec<String> =
            parts.iter().filter(|(n, _)| *n > 0.0).map(|(n, what)| format!("{n} {what}")).collect();
        named.join(" + ")
    }
}

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
/// (the local directory) and, with `--beside`, as a multiple of that mount's figure (for
/// times, the other mount's time over the first's: above 1 means the first is faster).
fn print_table(names: &[&str], columns: &[Vec<Figure>]) {
    let first = names.first().copied().unwrap_or("-");
    let last = names.last().copied().unwrap_or("-");
    let beside = names.iter().position(|n| *n == "beside");
    let beside_header =
        if beside.is_some() { format!(" {first} vs beside |") } else { String::new() };
    println!("\n| figure | {} | {first}/{last} |{beside_header}", names.join(" | "));
    let extra = if beside.is_some() { "---:|" } else { "" };
    println!("|---|{}---:|{extra}", "---:|".repeat(names.len()));
    for (row, Figure { what, unit, .. }) in columns[0].iter().enumerate() {
        let values: Vec<f64> = columns.iter().map(|c| c[row].value).collect();
        let cells: Vec<String> = values.iter().map(|v| shown(*v, unit)).collect();
        let local = values.last().copied().unwrap_or(0.0);
        let ratio = if local > 0.0 { values[0] / local * 100.0 } else { 0.0 };
        let versus = match beside.map(|b| values[b]) {
            Some(other) => format!(" {}× |", significant(speedup(values[0], other, unit))),
            None => String::new(),
        };
        println!("| {what} ({unit}) | {} | {} % |{versus}", cells.join(" | "), significant(ratio));
    }
}

/// Two significant digits (at least the units): 1234, 56, 7.8, 0.91, 0.0042.
fn significant(v: f64) -> String {
    if v >= 10.0 || v <= 0.0 {
        return format!("{v:.0}");
    }
    let decimals = (1.0 - v.log10().floor()) as usize;
    format!("{v:.decimals$}")
}

/// How many times better `ours` is than `theirs`: a rate over a rate, or a time under a time.
fn speedup(ours: f64, theirs: f64, unit: &str) -> f64 {
    let (num, den) = if unit == "s" { (theirs, ours) } else { (ours, theirs) };
    if den > 0.0 {
        num / den
    } else {
        0.0
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
    out.push(Figure::new(
        format!("seq write 1 MiB, end_fsync ({size})"),
        "MiB/s",
        write.write_mib_s,
    ));
    drop_caches().ok();
    let read = fio(&[&file_arg, "--rw=read", "--bs=1M", &format!("--size={size}")])?;
    out.push(Figure::new(format!("cold seq read 1 MiB ({size})"), "MiB/s", read.read_mib_s));
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
        let figure = Figure::new(format!("4 KiB random read, {jobs} job(s)"), "IOPS", r.read_iops);
        // One job: each read is a FUSE round trip and one to the chunkserver at least.
        out.push(if jobs == 1 { figure.floor(1.0, 1.0, 0.0, 0.0) } else { figure });
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
    // The floors count what the kernel sends: a LOOKUP of a new name before create, mkdir
    // and rename's target; one round trip to the master; one commit per change.
    let create = rate(&names, create_file)?;
    out.push(
        Figure::new(format!("create ({files} files, one dir)"), "ops/s", create)
            .floor(2.0, 1.0, 1.0, 0.0),
    );
    let stat = rate(&names, stat_file)?;
    out.push(Figure::new("stat", "ops/s", stat).floor(1.0, 1.0, 0.0, 0.0));
    drop_caches().ok();
    let start = Instant::now();
    let listed = ls_l(dir)?;
    if listed != files {
        bail!("ls -l of {} listed {listed} entries, expected {files}", dir.display());
    }
    out.push(Figure::new("ls -l", "entries/s", files as f64 / start.elapsed().as_secs_f64()));
    let rename = rate(&renamed, rename_file)?;
    out.push(Figure::new("rename", "ops/s", rename).floor(2.0, 1.0, 1.0, 0.0));
    let unlink = rate(&renamed, |(_, to)| remove_file(to))?;
    out.push(Figure::new("unlink", "ops/s", unlink).floor(1.0, 1.0, 1.0, 0.0));
    let dirs: Vec<PathBuf> = (0..files / 10).map(|i| dir.join(format!("dir{i:05}"))).collect();
    let mkdir = rate(&dirs, make_dir)?;
    out.push(
        Figure::new(format!("mkdir ({} dirs)", dirs.len()), "ops/s", mkdir)
            .floor(2.0, 1.0, 1.0, 0.0),
    );
    let rmdir = rate(&dirs, remove_dir)?;
    out.push(Figure::new("rmdir", "ops/s", rmdir).floor(1.0, 1.0, 1.0, 0.0));
    out.extend(parallel_suite(dir, 8, files / 8)?);
    Ok(out)
}

fn create_file<P: AsRef<Path>>(p: &P) -> anyhow::Result<()> {
    let p = p.as_ref();
    fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
    Ok(())
}

fn stat_file<P: AsRef<Path>>(p: &P) -> anyhow::Result<()> {
    let p = p.as_ref();
    fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
    Ok(())
}

fn rename_file((from, to): &(PathBuf, PathBuf)) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("rename {}", from.display()))
}

fn remove_file<P: AsRef<Path>>(p: &P) -> anyhow::Result<()> {
    let p = p.as_ref();
    fs::remove_file(p).with_context(|| format!("unlink {}", p.display()))
}

fn make_dir<P: AsRef<Path>>(p: &P) -> anyhow::Result<()> {
    let p = p.as_ref();
    fs::create_dir(p).with_context(|| format!("mkdir {}", p.display()))
}

fn remove_dir<P: AsRef<Path>>(p: &P) -> anyhow::Result<()> {
    let p = p.as_ref();
    fs::remove_dir(p).with_context(|| format!("rmdir {}", p.display()))
}

/// The metadata loop from `threads` threads at once, each in a directory of its own (as a
/// parallel build or an untar does): operations per second over all threads.
fn parallel_suite(dir: &Path, threads: usize, per_thread: usize) -> anyhow::Result<Vec<Figure>> {
    let dirs: Vec<PathBuf> = (0..threads).map(|t| dir.join(format!("thread{t}"))).collect();
    for d in &dirs {
        make_dir(d)?;
    }
    let names: Vec<Vec<PathBuf>> = dirs
        .iter()
        .map(|d| (0..per_thread).map(|i| d.join(format!("file{i:06}"))).collect())
        .collect();
    let renamed: Vec<Vec<(PathBuf, PathBuf)>> = names
        .iter()
        .map(|n| n.iter().map(|p| (p.clone(), p.with_extension("renamed"))).collect())
        .collect();
    let subdirs: Vec<Vec<PathBuf>> = dirs
        .iter()
        .map(|d| (0..(per_thread / 10).max(1)).map(|i| d.join(format!("dir{i:05}"))).collect())
        .collect();
    let label = |what: &str| format!("{what}, {threads} threads (own dirs)");
    let gone: Vec<Vec<PathBuf>> =
        renamed.iter().map(|r| r.iter().map(|(_, to)| to.clone()).collect()).collect();
    let figures = vec![
        Figure::new(label("create"), "ops/s", parallel_rate(&names, create_file)?),
        Figure::new(label("stat"), "ops/s", parallel_rate(&names, stat_file)?),
        Figure::new(label("rename"), "ops/s", parallel_rate(&renamed, rename_file)?),
        Figure::new(label("unlink"), "ops/s", parallel_rate(&gone, remove_file)?),
        Figure::new(label("mkdir"), "ops/s", parallel_rate(&subdirs, make_dir)?),
        Figure::new(label("rmdir"), "ops/s", parallel_rate(&subdirs, remove_dir)?),
    ];
    Ok(figures)
}

/// Runs `op` on every item, one thread per list: operations per second over all threads.
fn parallel_rate<T: Sync>(
    lists: &[Vec<T>],
    op: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let done = std::thread::scope(|scope| {
        let workers: Vec<_> = lists
            .iter()
            .map(|items| {
                let op = &op;
                scope.spawn(move || {
                    items.iter().try_for_each(op)?;
                    anyhow::Ok(items.len())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a bench thread panicked"))
            .sum::<anyhow::Result<usize>>()
    })?;
    Ok(done as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// `--big-dir` empty files in one directory from 8 threads, `ls -f | wc -l` of it cold,
/// then removed from 8 threads; and the masters' resident memory per file.
fn big_dir_suite(dir: &Path, entries: usize, master_pids: &[u32]) -> anyhow::Result<Vec<Figure>> {
    let threads = 8;
    let big = dir.join("big");
    make_dir(&big)?;
    let names: Vec<Vec<PathBuf>> = (0..threads)
        .map(|t| (t..entries).step_by(threads).map(|i| big.join(format!("f{i:08}"))).collect())
        .collect();
    let before: Vec<Option<u64>> = master_pids.iter().map(|p| rss_bytes(*p)).collect();
    let create = parallel_rate(&names, create_file)?;
    let after: Vec<Option<u64>> = master_pids.iter().map(|p| rss_bytes(*p)).collect();
    for ((pid, b), a) in master_pids.iter().zip(&before).zip(&after) {
        match (b, a) {
            (Some(b), Some(a)) => println!(
                "  master pid {pid}: resident {} MiB before {entries} files, {} MiB after: {:.0} \
                 bytes per file",
                b >> 20,
                a >> 20,
                (*a as f64 - *b as f64) / entries as f64
            ),
            _ => println!("  master pid {pid}: cannot read /proc/{pid}/status"),
        }
    }
    drop_caches().ok();
    let list = format!("ls -f {} | wc -l", big.display());
    let start = Instant::now();
    let out = Command::new("sh").args(["-c", &list]).output().context("cannot run ls -f")?;
    let secs = start.elapsed().as_secs_f64();
    let listed: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    // `ls -f` lists "." and ".." too.
    if !out.status.success() || listed != entries + 2 {
        bail!("{list} gave {listed} lines, expected {}", entries + 2);
    }
    let unlink = parallel_rate(&names, remove_file)?;
    remove_dir(&big)?;
    Ok(vec![
        Figure::new(format!("big dir: create, 8 threads ({entries} in one dir)"), "ops/s", create),
        Figure::new("big dir: ls -f | wc -l, cold", "s", secs),
        Figure::new("big dir: unlink, 8 threads", "ops/s", unlink),
    ])
}

/// A process's resident memory, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
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
    // Written: LOOKUP, CREATE, WRITE, FLUSH, RELEASE; the create to the master and the data
    // to a chunkserver; one commit and the data synced once. Read: LOOKUP, OPEN, READ, FLUSH,
    // RELEASE; a lookup at the master and a read at a chunkserver (the cold disk read is not
    // counted).
    Ok(vec![
        Figure::new(format!("small files written ({count} × 4 KiB)"), "files/s", write)
            .floor(5.0, 2.0, 1.0, 1.0),
        Figure::new("small files read cold", "files/s", read).floor(5.0, 2.0, 0.0, 0.0),
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
        Figure::new(format!("tarball extract ({n} entries)"), "s", extract),
        Figure::new("tarball find | xargs stat", "s", stat),
        Figure::new("tarball rm -rf", "s", remove),
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

#[cfg(test)]
mod tests {
    #[test]
    fn ratios_keep_two_significant_digits() {
        let shown: Vec<String> =
            [1234.4, 56.0, 7.84, 0.914, 0.00423, 0.0].into_iter().map(super::significant).collect();
        assert_eq!(shown, ["1234", "56", "7.8", "0.91", "0.0042", "0"]);
    }
}
