//! The commit cost of replication: `mfsha bench meta` against the three-voter appliance (two
//! masters + the witness, every voter fsyncing on this one machine) and against a one-node
//! master, in the same run, alternating, so that both see the same machine.
//!
//! ```sh
//! MFSHA_BIN=/path/to/release/mfsha cargo test --workspace --locked -- --ignored --nocapture \
//!   --exact ha::commit_cost::commit_cost_benchmark
//! ```
//! `MFSHA_BIN` names the daemons' binary (a release build; the harness stays the debug test
//! binary). `MFSHA_BENCH_OPS` (default 100,000 per phase with 32 sessions; a tenth of that
//! with one) and `MFSHA_BENCH_ROUNDS` (default 3) size it. The benchmark prints this
//! machine's floors (`scripts/bench-floors.py --commit-only`: one synced write alone, and
//! the least a replicated one costs with three processes syncing on this disk) before and
//! after its rounds. The test command runs a short round that checks every figure is there
//! (no timing is asserted in a test).

use super::cluster::HaCluster;
use super::retry::addr;
use crate::util::{mfsha, Cluster};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One `mfsha bench meta` run: creates per second and the create p50, in µs.
#[derive(Debug, Clone, Copy)]
struct Figures {
    creates_per_second: f64,
    create_p50_us: f64,
}

/// Mutating phases of one `mfsha bench meta` run (mkdir, create, unlink, rmdir).
const MUTATING_PHASES: usize = 4;

/// Runs of `mfsha bench meta` that failed and were run again.
static RERUNS: AtomicUsize = AtomicUsize::new(0);

/// `mfsha_raft_lease_lapses_total` of the master whose HTTP port is `http`.
fn lease_lapses(http: u16) -> u64 {
    let page = crate::metrics::http_get(&format!("127.0.0.1:{http}"), "/metrics");
    let line = page.lines().find(|l| l.starts_with("mfsha_raft_lease_lapses_total "));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in µs, from `/proc/PID/stat`.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1e6 / per_second
}

/// Runs `bench` and prints the CPU each of `daemons` spent per mutation meanwhile: the
/// machine has two cores, and three voters share them.
fn with_cpu<T>(daemons: &[(&str, u32)], mutations: usize, bench: impl FnOnce() -> T) -> T {
    let before: Vec<f64> = daemons.iter().map(|(_, pid)| cpu_us(*pid)).collect();
    let result = bench();
    let spent: Vec<f64> = daemons
        .iter()
        .zip(before)
        .map(|((_, pid), before)| (cpu_us(*pid) - before) / mutations as f64)
        .collect();
    let named: Vec<String> =
        daemons.iter().zip(&spent).map(|((name, _), us)| format!("{name} {us:.0} µs")).collect();
    let total: f64 = spent.iter().sum();
    println!(
        "CPU per mutation (the run's reads included): {}; together {total:.0} µs",
        named.join(", ")
    );
    result
}

/// The group's daemons, the leader first, by role.
fn group_daemons(group: &HaCluster, leader: usize) -> Vec<(&'static str, u32)> {
    let pid = |index: usize| group.masters[index].daemon.as_ref().and_then(|d| d.pid());
    let follower = 1 - leader;
    let witness = group.witness.as_ref().and_then(|d| d.pid());
    let named = [("leader", pid(leader)), ("follower", pid(follower)), ("witness", witness)];
    named.into_iter().map(|(name, pid)| (name, pid.expect("a running daemon"))).collect()
}

/// Runs `mfsha bench meta` against `master` and reads the create line of its table; `None`
/// if the run failed (printed).
fn try_bench_meta(master: &str, sessions: usize, ops: usize) -> Option<Figures> {
    let (sessions, ops) = (sessions.to_string(), ops.to_string());
    let out = mfsha(&["bench", "meta", "-H", master, "--sessions", &sessions, "--ops", &ops]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        println!(
            "bench meta against {master} failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    print!("{text}");
    let line = text.lines().find(|l| l.starts_with("create ")).expect("a create line");
    let fields: Vec<f64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    let [_ops, per_second, p50, _p99] = fields[..] else { panic!("create line: {line}") };
    Some(Figures { creates_per_second: per_second, create_p50_us: p50 })
}

/// A run against the one-node master, tried up to three times: on a loaded machine even a
/// group of one may step down for a moment (its lease lapses while its thread waits for a
/// core), and it closes its client connections when it does.
fn bench_meta(one: &Cluster, sessions: usize, ops: usize) -> Figures {
    let master = one.master_addr();
    let pid = one.master.as_ref().and_then(|d| d.pid()).expect("a running master");
    for _ in 0..3 {
        let run = || try_bench_meta(&master, sessions, ops);
        if let Some(figures) = with_cpu(&[("one node", pid)], MUTATING_PHASES * ops, run) {
            return figures;
        }
        println!("(the one-node master closed the connection; running it again)");
        RERUNS.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("bench meta failed three times against the one-node master")
}

/// A run against the group's current leader; one more try on a new leader if the leader
/// changed under it (the bench follows no failover; a loaded machine may see an election).
fn bench_group(group: &HaCluster, sessions: usize, ops: usize) -> Figures {
    for _ in 0..3 {
        let index = group.wait_leader(Duration::from_secs(30));
        let (leader, daemons) = (addr(group, index), group_daemons(group, index));
        let run = || try_bench_meta(&leader, sessions, ops);
        if let Some(figures) = with_cpu(&daemons, MUTATING_PHASES * ops, run) {
            return figures;
        }
        println!("(the leader changed during the run; running it again)");
        RERUNS.fetch_add(1, Ordering::Relaxed);
    }
    panic!("bench meta failed three times against the group\n{}", group.logs())
}

/// Prints the durable and replicated write floors, measured now on the disk the daemons use.
fn print_floors(dir: &std::path::Path) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-floors.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--commit-only", "--dir"])
        .arg(dir.join("floors"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(out.status.success(), "bench-floors failed: {}", String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `rounds` rounds, each: 32 sessions then 1 session, on the one node then on the group.
fn commit_cost(ops: usize, rounds: usize, floors: bool) {
    let mut one = Cluster::new();
    one.start_master();
    let group = HaCluster::start(0);
    if floors {
        print_floors(group.path());
    }
    let (mut wide, mut narrow) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for round in 1..=rounds {
        println!("--- round {round}: one node, then the three-voter group ---");
        wide.0.push(bench_meta(&one, 32, ops));
        wide.1.push(bench_group(&group, 32, ops));
        narrow.0.push(bench_meta(&one, 1, ops / 10));
        narrow.1.push(bench_group(&group, 1, ops / 10));
    }
    let rate = |runs: &Vec<Figures>| median(runs.iter().map(|f| f.creates_per_second).collect());
    let p50 = |runs: &Vec<Figures>| median(runs.iter().map(|f| f.create_p50_us).collect());
    println!(
        "commit cost: 32 sessions, median of {rounds}: one node {:.0} creates/s, three voters \
         {:.0} creates/s; 1 session create p50: one node {:.0} µs, three voters {:.0} µs \
         (+{:.0} µs)",
        rate(&wide.0),
        rate(&wide.1),
        p50(&narrow.0),
        p50(&narrow.1),
        p50(&narrow.1) - p50(&narrow.0)
    );
    if floors {
        print_floors(group.path());
    }
    let group_lapses: Vec<u64> = group.masters.iter().map(|m| lease_lapses(m.ports.http)).collect();
    println!(
        "lease lapses while the leader stayed leader: one node {}, group masters {group_lapses:?}; \
         bench runs repeated after a failure: {}",
        lease_lapses(one.ports.http),
        RERUNS.load(Ordering::Relaxed)
    );
    for figures in wide.0.iter().chain(&wide.1).chain(&narrow.0).chain(&narrow.1) {
        assert!(figures.creates_per_second > 0.0 && figures.create_p50_us > 0.0, "{figures:?}");
    }
}

#[test]
#[ignore = "benchmark: run explicitly (see the module doc comment)"]
fn commit_cost_benchmark() {
    let ops = std::env::var("MFSHA_BENCH_OPS").map_or(100_000, |v| v.parse().unwrap());
    let rounds = std::env::var("MFSHA_BENCH_ROUNDS").map_or(3, |v| v.parse().unwrap());
    commit_cost(ops, rounds, true);
}

/// The benchmark's short run: every figure is measured and printed.
#[test]
fn commit_cost_benchmark_short_run() {
    commit_cost(640, 1, false);
}
