//! Throughput and memory at scale: `cargo run --release -p mfsha-meta --example scale [N]`.
//! Creates N files (default 1,000,000) in one directory through `State::apply`, taking the
//! changes every 100 entries as the Raft driver does, then times the whole-state operations.

use mfsha_meta::{Entry, Op, State};
use mfsha_proto::types::*;
use std::time::Instant;

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) / 1024
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let now = Timestamp::new(1_700_000_000, 0);
    let mut state = State::new(now);
    let start = Instant::now();
    let mut records = 0usize;
    for i in 0..n {
        let ino = state.next_free_ino();
        let op = Op::Create {
            parent: ROOT_INO,
            name: format!("file-{i:08}"),
            ino,
            kind: FileKind::File,
            mode: 0o644,
            umask: 0o022,
            uid: 0,
            gid: 0,
            rdev: 0,
        };
        let index = state.applied_index() + 1;
        state.apply(index, &Entry { now, client: None, op }).expect("create");
        if i % 100 == 99 {
            records += state.take_changes().len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} creates in one directory: {secs:.2} s = {:.0}/s, {records} records, RSS {} MiB",
        n as f64 / secs,
        rss_mib()
    );
    let t = Instant::now();
    for i in (0..n).step_by(97) {
        state.getattr(i + 2).expect("getattr");
    }
    println!("getattr: {:.0} ns each", t.elapsed().as_nanos() as f64 / (n / 97) as f64);
    let t = Instant::now();
    let (page, _) = state.readdir(ROOT_INO, n / 2, 100).unwrap();
    println!("readdir at offset {}: {:?} ({} entries)", n / 2, t.elapsed(), page.len());
    // What the mount sends: the page after the last name it has, O(log n) at any depth.
    let middle = page[0].name.clone();
    let t = Instant::now();
    let (page, _) = state.readdir_after(ROOT_INO, Some(&middle), 100).unwrap();
    println!(
        "readdir after the entry at offset {}: {:?} ({} entries)",
        n / 2,
        t.elapsed(),
        page.len()
    );
    let t = Instant::now();
    state.check_invariants().unwrap();
    println!("check_invariants: {:?}", t.elapsed());
    let t = Instant::now();
    let digest = state.digest();
    println!("digest: {:?}", t.elapsed());
    let t = Instant::now();
    let snapshot = state.to_snapshot();
    println!("to_snapshot: {:?}, {} MiB", t.elapsed(), snapshot.len() >> 20);
    let t = Instant::now();
    let restored = State::from_snapshot(&snapshot).unwrap();
    println!("from_snapshot (incl. invariants): {:?}, RSS {} MiB", t.elapsed(), rss_mib());
    assert_eq!(restored.digest(), digest);
}
