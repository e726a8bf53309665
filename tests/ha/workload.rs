//! The mixed client workload the HA drills run through a FUSE mount: several threads, each in
//! its own directory, doing creates, overwrites, renames and unlinks without pause. Each
//! thread keeps what the filesystem acknowledged; [`Workload::finish`] checks that the final
//! namespace and contents hold every acknowledged operation exactly once.

use super::cluster::HaCluster;
use crate::mount::Mount;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const THREADS: usize = 3;

/// The kinds of operation, as counted in [`Expected::by_kind`].
const KINDS: [&str; 4] = ["create", "overwrite", "rename", "unlink"];
const CREATE: usize = 0;
const OVERWRITE: usize = 1;
const RENAME: usize = 2;
const UNLINK: usize = 3;

/// What one client thread expects its directory to hold: name → sha256 of the content, built
/// only from operations the filesystem acknowledged.
#[derive(Default)]
pub struct Expected {
    pub files: BTreeMap<String, [u8; 32]>,
    pub operations: u64,
    /// Acknowledged operations per kind (indexes into [`KINDS`]).
    by_kind: [u64; 4],
    /// The longest any one operation took from the call to its acknowledgement: the longest
    /// the client was stalled.
    longest: Duration,
}

pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Writes `name` in `dir` with `len` seeded bytes and fsyncs it: acknowledged once `sync_all`
/// returns.
pub fn write_file(
    dir: &Path,
    name: &str,
    rng: &mut StdRng,
    len: usize,
) -> std::io::Result<[u8; 32]> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    let mut file = fs::File::create(dir.join(name))?;
    file.write_all(&data)?;
    file.sync_all()?;
    Ok(digest(&data))
}

/// One operation on the thread's own directory, recorded only if it succeeded. Any error is
/// what the drills forbid: faults of the masters must be invisible to the client.
fn one_operation(dir: &Path, rng: &mut StdRng, next: &mut u64, expected: &mut Expected) {
    let names: Vec<String> = expected.files.keys().cloned().collect();
    let choice = if names.is_empty() { 0 } else { rng.gen_range(0..10) };
    let started = Instant::now();
    let (kind, result) = match choice {
        0..=4 => {
            let name = format!("f{next}");
            *next += 1;
            let len = rng.gen_range(1..64 << 10);
            let written = write_file(dir, &name, rng, len).map(|sum| {
                expected.files.insert(name, sum);
            });
            (CREATE, written)
        }
        5..=6 => {
            let from = &names[rng.gen_range(0..names.len())];
            let to = format!("r{next}");
            *next += 1;
            let renamed = fs::rename(dir.join(from), dir.join(&to)).map(|()| {
                let sum = expected.files.remove(from).expect("renamed file was expected");
                expected.files.insert(to, sum);
            });
            (RENAME, renamed)
        }
        7..=8 => {
            let name = &names[rng.gen_range(0..names.len())];
            let removed = fs::remove_file(dir.join(name)).map(|()| {
                expected.files.remove(name);
            });
            (UNLINK, removed)
        }
        _ => {
            let name = names[rng.gen_range(0..names.len())].clone();
            let len = rng.gen_range(1..8 << 10);
            let written = write_file(dir, &name, rng, len).map(|sum| {
                expected.files.insert(name, sum);
            });
            (OVERWRITE, written)
        }
    };
    if let Err(error) = result {
        panic!("the client saw an error during a master fault: {error} (in {})", dir.display());
    }
    expected.longest = expected.longest.max(started.elapsed());
    expected.by_kind[kind] += 1;
    expected.operations += 1;
}

fn run_client(dir: PathBuf, seed: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Expected {
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected = Expected::default();
    let mut next = 0;
    while !stop.load(Ordering::Acquire) {
        one_operation(&dir, &mut rng, &mut next, &mut expected);
        done.fetch_add(1, Ordering::Relaxed);
    }
    expected
}

/// The directory holds exactly the expected files with the expected contents.
pub fn check(dir: &Path, expected: &Expected) {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let data = fs::read(entry.path()).unwrap_or_else(|e| panic!("read {name}: {e}"));
        found.insert(name, digest(&data));
    }
    let missing: Vec<&String> = expected.files.keys().filter(|k| !found.contains_key(*k)).collect();
    let extra: Vec<&String> = found.keys().filter(|k| !expected.files.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{}: acknowledged files missing: {missing:?}", dir.display());
    assert!(extra.is_empty(), "{}: files that should not exist: {extra:?}", dir.display());
    for (name, sum) in &expected.files {
        assert_eq!(&found[name], sum, "{}: {name} has the wrong content", dir.display());
    }
}

/// The client threads of a running workload.
pub struct Workload {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    clients: Vec<(PathBuf, JoinHandle<Expected>)>,
}

impl Workload {
    /// Starts the client threads on `mount`, in its directories `t0`, `t1`, ….
    pub fn start(mount: &Mount) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let clients = (0..THREADS)
            .map(|t| {
                let dir = mount.path(&format!("t{t}"));
                let (thread_dir, stop, done) = (dir.clone(), stop.clone(), done.clone());
                let seed = 1000 + t as u64;
                (dir, std::thread::spawn(move || run_client(thread_dir, seed, stop, done)))
            })
            .collect();
        Workload { stop, done, clients }
    }

    /// Operations acknowledged so far, over every thread.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until at least `more` operations completed after `since` (a [`Workload::done`]
    /// taken earlier), or fails naming the stall; returns how long it waited.
    pub fn wait_progress(
        &self,
        since: u64,
        more: u64,
        cluster: &HaCluster,
        what: &str,
    ) -> Duration {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        while self.done() < since + more {
            // A thread that saw an error has panicked and stopped counting: say so, not "stall".
            let failed = self.clients.iter().any(|(_, thread)| thread.is_finished());
            assert!(!failed, "a client thread failed (its panic is printed above) {what}");
            assert!(
                Instant::now() < deadline,
                "the client made no progress {what}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// Stops the threads and checks every directory against what its thread was
    /// acknowledged; returns the totals.
    pub fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Release);
        let mut summary = Summary::default();
        for (dir, thread) in self.clients {
            let expected = thread.join().expect("a client thread failed");
            check(&dir, &expected);
            summary.operations += expected.operations;
            for (total, n) in summary.by_kind.iter_mut().zip(expected.by_kind) {
                *total += n;
            }
            summary.longest = summary.longest.max(expected.longest);
        }
        summary
    }
}

/// Totals of a checked workload.
#[derive(Debug, Default)]
pub struct Summary {
    pub operations: u64,
    pub by_kind: [u64; 4],
    /// The longest one operation waited.
    pub longest: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> =
            KINDS.iter().zip(self.by_kind).map(|(kind, n)| format!("{kind} {n}")).collect();
        write!(
            f,
            "{} acknowledged operations ({}), every one present exactly once with its content, \
             0 lost; longest client stall (one operation) {} ms",
            self.operations,
            kinds.join(", "),
            self.longest.as_millis()
        )
    }
}
