//! The soak drill (issue 9): the appliance (two masters, the witness, three chunkservers, a
//! FUSE mount) under the mixed client workload of [`super::workload`], while every round
//! deals one fault in rotation, at a random moment:
//!
//! 1. SIGKILL the leader; once the client makes progress again (a new leader serves), start it
//!    again and wait until it caught up.
//! 2. SIGSTOP the leader; once a new leader serves the client, SIGCONT it: it must step down
//!    and follow the new leader, and catch up.
//! 3. restart the follower master, by SIGTERM and by SIGKILL in turn.
//! 4. restart the witness logger, by SIGTERM and by SIGKILL in turn.
//!
//! After each fault and after each recovery the client must make progress; it must never see
//! an error, and at the end every acknowledged operation is there exactly once with its
//! content.
//!
//! `MFSHA_SOAK_ROUNDS` sets the rounds: 8 in the test command (each fault twice, about 25 s
//! in the debug build); the soak is 100, run by `scripts/soak.sh` (figures in
//! docs/benchmarks.md):
//!
//! ```sh
//! MFSHA_SOAK_ROUNDS=100 cargo test --release --workspace --locked --test system -- --nocapture ha::soak
//! ```

use super::cluster::HaCluster;
use super::mount_all;
use super::workload::Workload;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the cluster may take to elect, restart or catch up after one fault.
const RECOVERY: Duration = Duration::from_secs(30);

/// Operations the client must complete after a fault, and again after the recovery.
const PROGRESS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    StopLeader,
    RestartFollower { kill: bool },
    RestartWitness { kill: bool },
}

impl Fault {
    /// The fault of round `round` (from 0): the four kinds in turn, the restarts alternating
    /// between SIGTERM and SIGKILL from one turn to the next.
    fn of_round(round: usize) -> Fault {
        let kill = (round / 4) % 2 == 1;
        match round % 4 {
            0 => Fault::KillLeader,
            1 => Fault::StopLeader,
            2 => Fault::RestartFollower { kill },
            _ => Fault::RestartWitness { kill },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "SIGKILL leader",
            Fault::StopLeader => "SIGSTOP leader",
            Fault::RestartFollower { kill: false } => "SIGTERM+restart follower",
            Fault::RestartFollower { kill: true } => "SIGKILL+restart follower",
            Fault::RestartWitness { kill: false } => "SIGTERM+restart witness",
            Fault::RestartWitness { kill: true } => "SIGKILL+restart witness",
        }
    }
}

/// Per fault kind: rounds dealt, and the longest wait for client progress after the fault.
#[derive(Default)]
struct Tally(BTreeMap<Fault, (u32, Duration)>);

impl Tally {
    fn add(&mut self, fault: Fault, waited: Duration) {
        let entry = self.0.entry(fault).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(waited);
    }

    fn report(&self) -> String {
        let lines = self.0.iter().map(|(fault, (rounds, waited))| {
            format!(
                "  {:<26} {rounds:>3} rounds, client progress within {} ms at worst",
                fault.name(),
                waited.as_millis()
            )
        });
        lines.collect::<Vec<_>>().join("\n")
    }
}

#[test]
fn soak_rotating_leader_kills_stops_and_follower_and_witness_restarts_lose_nothing() {
    let rounds: usize = std::env::var("MFSHA_SOAK_ROUNDS")
        .map_or(8, |v| v.parse().expect("MFSHA_SOAK_ROUNDS must be a number of rounds"));
    let started = Instant::now();
    let mut cluster = HaCluster::start(3);
    let mut mount = mount_all(&cluster, "mount");
    let workload = Workload::start(&mount);
    let mut rng = StdRng::seed_from_u64(9);
    let mut tally = Tally::default();
    workload.wait_progress(0, 20, &cluster, "before the first fault");
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        let fault = Fault::of_round(round);
        let what = format!("in round {} ({})", round + 1, fault.name());
        let waited = deal(&mut cluster, &workload, fault, &what);
        tally.add(fault, waited);
        let since = workload.done();
        workload.wait_progress(since, PROGRESS, &cluster, &format!("after the recovery {what}"));
    }
    let summary = workload.finish();
    mount.stop();
    println!(
        "soak: {rounds} rounds in {:.0} s\n{}\n{summary}",
        started.elapsed().as_secs_f64(),
        tally.report()
    );
}

/// Deals `fault`, waits for the client to make progress, then undoes it and waits for the
/// cluster to be whole again. Returns how long the client took to progress after the fault.
fn deal(cluster: &mut HaCluster, workload: &Workload, fault: Fault, what: &str) -> Duration {
    let leader = cluster.wait_leader(RECOVERY);
    let follower = 1 - leader;
    let since = workload.done();
    let progress = |cluster: &HaCluster| workload.wait_progress(since, PROGRESS, cluster, what);
    match fault {
        Fault::KillLeader => {
            cluster.kill_master(leader);
            let waited = progress(cluster);
            cluster.start_master(leader);
            cluster.wait_caught_up(leader, RECOVERY);
            waited
        }
        Fault::StopLeader => {
            cluster.signal_master(leader, libc::SIGSTOP);
            let new = cluster.wait_leader_except(leader, RECOVERY);
            let waited = progress(cluster);
            cluster.signal_master(leader, libc::SIGCONT);
            cluster.wait_follows(leader, new, RECOVERY);
            cluster.wait_caught_up(leader, RECOVERY);
            waited
        }
        Fault::RestartFollower { kill } => {
            if kill {
                cluster.kill_master(follower);
            } else {
                cluster.stop_master(follower);
            }
            let waited = progress(cluster);
            cluster.start_master(follower);
            cluster.wait_caught_up(follower, RECOVERY);
            waited
        }
        Fault::RestartWitness { kill } => {
            if kill {
                cluster.kill_witness();
            } else {
                cluster.stop_witness();
            }
            let waited = progress(cluster);
            cluster.start_witness();
            cluster.wait_witness_caught_up(RECOVERY);
            waited
        }
    }
}
