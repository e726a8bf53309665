//! Differential test: the same seeded random operations on the mount and on a local directory,
//! the two trees compared after every step (names, types, sizes, contents, modes, link counts,
//! symlink targets) and the errno of every failed operation.
//!
//! `MFSHA_DIFF_SEED` replays a seed; `MFSHA_DIFF_STEPS` changes the length (default 2500).
//! On divergence the test prints the seed, the step and the shortest failing prefix of
//! operations, and replays that prefix on fresh directories to show whether it reproduces.

use super::{cluster, Mount};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NAMES: &[&str] = &["a", "b", "c", "d", "e"];
const MAX_DEPTH: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Create { path: String, len: usize, seed: u64 },
    Write { path: String, offset: u64, len: usize, seed: u64 },
    Truncate { path: String, len: u64 },
    Rename { from: String, to: String },
    Link { from: String, to: String },
    Unlink { path: String },
    Mkdir { path: String },
    Rmdir { path: String },
    Chmod { path: String, mode: u32 },
    Symlink { target: String, path: String },
}

/// Deterministic bytes for a write.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// Applies `op` under `root`; the outcome is compared between the two trees.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |rel: &str| root.join(rel);
    match op {
        Op::Create { path, len, seed } => fs::write(p(path), bytes(*seed, *len)).map_err(errno),
        Op::Write { path, offset, len, seed } => {
            let mut f = fs::OpenOptions::new().write(true).open(p(path)).map_err(errno)?;
            f.seek(SeekFrom::Start(*offset)).map_err(errno)?;
            f.write_all(&bytes(*seed, *len)).map_err(errno)
        }
        Op::Truncate { path, len } => fs::OpenOptions::new()
            .write(true)
            .open(p(path))
            .and_then(|f| f.set_len(*len))
            .map_err(errno),
        Op::Rename { from, to } => fs::rename(p(from), p(to)).map_err(errno),
        Op::Link { from, to } => fs::hard_link(p(from), p(to)).map_err(errno),
        Op::Unlink { path } => fs::remove_file(p(path)).map_err(errno),
        Op::Mkdir { path } => fs::create_dir(p(path)).map_err(errno),
        Op::Rmdir { path } => fs::remove_dir(p(path)).map_err(errno),
        Op::Chmod { path, mode } => {
            fs::set_permissions(p(path), fs::Permissions::from_mode(*mode)).map_err(errno)
        }
        Op::Symlink { target, path } => std::os::unix::fs::symlink(target, p(path)).map_err(errno),
    }
}

/// What is compared of one tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { size: u64, mode: u32, nlink: u64, content: u64 },
    Dir { mode: u32, nlink: u64 },
    Symlink { target: String },
}

fn fingerprint(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
    let dir = root.join(rel);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        let child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let path = root.join(&child);
        let md =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let ft = md.file_type();
        let entry = if ft.is_symlink() {
            Entry::Symlink { target: fs::read_link(&path).unwrap().to_string_lossy().into_owned() }
        } else if ft.is_dir() {
            Entry::Dir { mode: md.mode() & 0o7777, nlink: md.nlink() }
        } else {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            assert_eq!(
                data.len() as u64,
                md.len(),
                "{}: stat size and read length differ",
                path.display()
            );
            Entry::File {
                size: md.len(),
                mode: md.mode() & 0o7777,
                nlink: md.nlink(),
                content: fingerprint(&data),
            }
        };
        let is_dir = matches!(entry, Entry::Dir { .. });
        out.insert(child.clone(), entry);
        if is_dir {
            walk(root, &child, out);
        }
    }
}

/// A random operation, mostly on paths that exist in `tree`, sometimes on ones that do not.
fn random_op(rng: &mut StdRng, tree: &BTreeMap<String, Entry>) -> Op {
    let dirs: Vec<&str> = std::iter::once("")
        .chain(
            tree.iter()
                .filter(|(k, e)| matches!(e, Entry::Dir { .. }) && depth(k) < MAX_DEPTH)
                .map(|(k, _)| k.as_str()),
        )
        .collect();
    let files: Vec<&str> = tree
        .iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(k, _)| k.as_str())
        .collect();
    let all: Vec<&str> = tree.keys().map(String::as_str).collect();
    let new_path = |rng: &mut StdRng| {
        let dir = dirs[rng.gen_range(0..dirs.len())];
        let name = NAMES[rng.gen_range(0..NAMES.len())];
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    let pick = |rng: &mut StdRng, from: &[&str]| -> String {
        if from.is_empty() || rng.gen_ratio(1, 10) {
            new_path(rng)
        } else {
            from[rng.gen_range(0..from.len())].to_string()
        }
    };
    match rng.gen_range(0..100) {
        0..=19 => {
            let len = if rng.gen_ratio(1, 8) {
                rng.gen_range(0..300_000)
            } else {
                rng.gen_range(0..9000)
            };
            Op::Create { path: new_path(rng), len, seed: rng.gen() }
        }
        20..=34 => Op::Write {
            path: pick(rng, &files),
            offset: rng.gen_range(0..70_000),
            len: rng.gen_range(1..20_000),
            seed: rng.gen(),
        },
        35..=42 => Op::Truncate { path: pick(rng, &files), len: rng.gen_range(0..100_000) },
        43..=54 => Op::Rename { from: pick(rng, &all), to: new_path(rng) },
        55..=61 => Op::Link { from: pick(rng, &files), to: new_path(rng) },
        62..=71 => Op::Unlink { path: pick(rng, &all) },
        72..=81 => Op::Mkdir { path: new_path(rng) },
        82..=87 => Op::Rmdir { path: pick(rng, &all) },
        88..=94 => Op::Chmod {
            path: pick(rng, &all),
            mode: [0o644, 0o600, 0o755, 0o700, 0o4755, 0o1777][rng.gen_range(0..6)],
        },
        _ => Op::Symlink { target: pick(rng, &all), path: new_path(rng) },
    }
}

fn depth(path: &str) -> usize {
    path.split('/').count()
}

/// Runs `ops` on fresh `mount_dir` and `local_dir`; returns the first step that diverged.
fn run_ops(ops: &[Op], mount_dir: &Path, local_dir: &Path) -> Option<(usize, String)> {
    fs::create_dir_all(mount_dir).unwrap();
    fs::create_dir_all(local_dir).unwrap();
    for (step, op) in ops.iter().enumerate() {
        let on_mount = apply(mount_dir, op);
        let on_local = apply(local_dir, op);
        if on_mount != on_local {
            return Some((
                step,
                format!("{op:?}: mount gave {on_mount:?}, local gave {on_local:?}"),
            ));
        }
        let (m, l) = (snapshot(mount_dir), snapshot(local_dir));
        if m != l {
            return Some((step, describe_difference(&m, &l)));
        }
    }
    None
}

fn describe_difference(m: &BTreeMap<String, Entry>, l: &BTreeMap<String, Entry>) -> String {
    let mut lines = Vec::new();
    for (k, v) in l {
        match m.get(k) {
            None => lines.push(format!("  {k}: missing on the mount (local {v:?})")),
            Some(mv) if mv != v => lines.push(format!("  {k}: mount {mv:?}, local {v:?}")),
            _ => {}
        }
    }
    for (k, v) in m {
        if !l.contains_key(k) {
            lines.push(format!("  {k}: only on the mount ({v:?})"));
        }
    }
    lines.join("\n")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

#[test]
fn random_operations_match_a_local_directory() {
    let c = cluster(2);
    let m = Mount::start(&c, "mnt", &[]);
    let seed = env_u64("MFSHA_DIFF_SEED").unwrap_or_else(rand::random);
    let steps = env_u64("MFSHA_DIFF_STEPS").unwrap_or(2500) as usize;
    eprintln!("differential test: seed {seed}, {steps} steps (replay with MFSHA_DIFF_SEED={seed})");
    let local_root = c.path().join("local");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    let (mount_dir, local_dir) = (m.path("run"), local_root.join("run"));
    fs::create_dir_all(&mount_dir).unwrap();
    fs::create_dir_all(&local_dir).unwrap();
    for step in 0..steps {
        let op = random_op(&mut rng, &snapshot(&local_dir));
        ops.push(op.clone());
        let (on_mount, on_local) = (apply(&mount_dir, &op), apply(&local_dir, &op));
        let problem = if on_mount != on_local {
            Some(format!("{op:?}: mount gave {on_mount:?}, local gave {on_local:?}"))
        } else {
            let (ms, ls) = (snapshot(&mount_dir), snapshot(&local_dir));
            (ms != ls).then(|| describe_difference(&ms, &ls))
        };
        if let Some(problem) = problem {
            let replay = run_ops(&ops, &m.path("replay"), &local_root.join("replay"));
            let replayed = match replay {
                Some((at, _)) => {
                    format!("replaying the prefix on fresh directories diverges again at step {at}")
                }
                None => {
                    "replaying the prefix on fresh directories did NOT diverge (timing-dependent)"
                        .into()
                }
            };
            let listing: Vec<String> =
                ops.iter().enumerate().map(|(i, o)| format!("  {i}: {o:?}")).collect();
            panic!(
                "divergence at step {step} (seed {seed}; replay with MFSHA_DIFF_SEED={seed}):\n{problem}\n\
                 shortest failing prefix ({} operations):\n{}\n{replayed}\nmount log:\n{}",
                ops.len(),
                listing.join("\n"),
                m.log()
            );
        }
    }
    let files = snapshot(&local_dir).len();
    eprintln!("differential test: {steps} steps without divergence, {files} entries at the end");
}
