//! Snapshot costs at scale: `cargo build --workspace --release --examples`, then
//! `target/release/examples/snapshot_scale [FILES]` (default 1,000,000). Builds a synthetic
//! namespace, then times what a snapshot costs the Raft thread and the store: encoding and
//! decoding the blob, the table records, writing a group's first state, building a snapshot
//! from the stored tables off the calling thread, and installing it on a second store.
//! Figures are in docs/benchmarks.md.

use std::time::Instant;

use mfsha_meta::State;
use mfsha_proto::types::Timestamp;
use mfsha_raft::store::{RaftStore, RecordVisit};
use mfsha_raft::StateMachine;
use raft::eraftpb::ConfState;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field in /proc/self/status");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("a number of kB")
}

fn mem() -> String {
    format!("RSS {} MiB, peak {} MiB", status_kib("VmRSS:") >> 10, status_kib("VmHWM:") >> 10)
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    println!("{what}: {:.2} s; {}", started.elapsed().as_secs_f64(), mem());
    value
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let differs = a.iter().zip(b).position(|(x, y)| x != y);
    differs.or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn main() {
    let files: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = time(&format!("synthesize {files} files"), || {
        State::synthetic(files, Timestamp::new(1_700_000_000, 0)).rebased(1)
    });
    // What `mfsha status` reads under the state lock on every call.
    let counts = time("counts()", || state.counts());
    println!("  {} files, {} directories", counts.files, counts.directories);
    let blob = time("to_snapshot", || state.to_snapshot());
    println!("  blob {} MiB", blob.len() >> 20);
    drop(time("from_snapshot", || State::from_snapshot(&blob).expect("the blob loads")));
    let records = time("records()", || StateMachine::records(&state));
    println!("  {} records", records.len());
    let tables = <State as StateMachine>::TABLES;
    let mut leader = RaftStore::open(&dir.path().join("leader"), tables).expect("open a store");
    let voters = ConfState { voters: vec![1, 2, 3], ..ConfState::default() };
    time("store bootstrap (records + blob file, one synced batch)", || {
        leader.bootstrap(voters, records, blob.clone(), 1).expect("bootstrap");
    });
    let encoder = <State as StateMachine>::snapshot_encoder(1, blob.len() + blob.len() / 8);
    let started = Instant::now();
    let job = leader.start_snapshot(encoder).expect("start a snapshot build");
    println!(
        "start_snapshot (the caller's share): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let built = job.wait().expect("build a snapshot");
    println!(
        "  build off the thread, file synced: {:.2} s; {}",
        started.elapsed().as_secs_f64(),
        mem()
    );
    let (built_blob, first_difference) =
        (&built.snapshot.data[..], first_difference(&built.snapshot.data, &blob));
    assert!(
        first_difference.is_none(),
        "the blob built from the tables ({} bytes) differs from to_snapshot's ({} bytes) at {first_difference:?}",
        built_blob.len(),
        blob.len()
    );
    let message = built.snapshot.to_raft();
    let mut follower = RaftStore::open(&dir.path().join("follower"), tables).expect("open a store");
    time("install on a follower (from_snapshot, records, one synced batch)", || {
        let state = State::from_snapshot(&message.data).expect("the blob loads");
        let records = |visit: &mut RecordVisit<'_>| StateMachine::visit_records(&state, visit);
        follower.install_snapshot(&message, &records).expect("install");
    });
    println!("end: {}", mem());
}
