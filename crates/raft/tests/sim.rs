//! The deterministic simulator (`mfsha_raft::sim`) over many seeds.
//!
//! The test command runs `MFSHA_SIM_SEEDS` seeds (default 1000) of 3-node groups and a share of
//! 5-node groups; the soak runs as many as asked:
//!
//! ```sh
//! MFSHA_SIM_SEEDS=100000 cargo test --release -p mfsha-raft --test sim -- --nocapture
//! MFSHA_SIM_SEED=1234 cargo test -p mfsha-raft --test sim -- --nocapture replay_one_seed
//! ```
//!
//! A seed of the membership test replays with `MFSHA_SIM_NODES=5 MFSHA_SIM_MEMBERSHIP=3`.

use mfsha_raft::sim::{run_seeds, Options, Report, Simulation};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn print(what: &str, seeds: u64, report: &Report) {
    println!(
        "{what}: {seeds} seeds, {} acknowledged, {} applied, {} leaders, {} crashes, {} \
         partitions, {} messages, {} membership changes, {} nodes told they were removed",
        report.acknowledged,
        report.applied,
        report.leaders,
        report.crashes,
        report.partitions,
        report.messages,
        report.member_changes,
        report.told_removed
    );
}

#[test]
fn three_node_groups_keep_every_property_across_seeds() {
    let seeds = env_u64("MFSHA_SIM_SEEDS", 1000);
    let first = env_u64("MFSHA_SIM_FIRST_SEED", 1);
    let report = run_seeds(first, seeds, &Options::default());
    print("3 nodes", seeds, &report);
    // The faults must not have made the runs vacuous.
    assert!(report.acknowledged > seeds, "too few acknowledged proposals: {report:?}");
    assert!(report.crashes > 0 && report.partitions > 0, "no faults injected: {report:?}");
}

#[test]
fn five_node_groups_keep_every_property_across_seeds() {
    let seeds = env_u64("MFSHA_SIM_SEEDS", 1000) / 5;
    let first = env_u64("MFSHA_SIM_FIRST_SEED", 1) + 1_000_000;
    let options = Options { nodes: 5, crash_per_mille: 2, ..Options::default() };
    let report = run_seeds(first, seeds, &options);
    print("5 nodes", seeds, &report);
    assert!(report.acknowledged > seeds, "too few acknowledged proposals: {report:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let report = Simulation::new(seed, Options::default()).run();
        (report.acknowledged, report.applied, report.messages, report.crashes)
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "different seeds should take different paths");
}

#[test]
fn replay_one_seed() {
    let Ok(seed) = std::env::var("MFSHA_SIM_SEED") else {
        println!("set MFSHA_SIM_SEED=<seed> to replay one seed");
        return;
    };
    let seed: u64 = seed.parse().expect("MFSHA_SIM_SEED is a number");
    let nodes = env_u64("MFSHA_SIM_NODES", 3) as usize;
    let membership_per_mille = env_u64("MFSHA_SIM_MEMBERSHIP", 0) as u32;
    let witness = std::env::var("MFSHA_SIM_WITNESS").ok().map(|w| w.parse().expect("a node id"));
    let options = Options { nodes, membership_per_mille, witness, ..Options::default() };
    let report = Simulation::new(seed, options).run();
    print("replay", 1, &report);
}

#[test]
fn groups_with_a_witness_keep_every_property_and_the_witness_hands_over() {
    let seeds = env_u64("MFSHA_SIM_SEEDS", 1000) / 5;
    let first = env_u64("MFSHA_SIM_FIRST_SEED", 1) + 2_000_000;
    let options = Options { witness: Some(3), ..Options::default() };
    let report = run_seeds(first, seeds, &options);
    print("2 + witness", seeds, &report);
    assert!(report.acknowledged > seeds, "too few acknowledged proposals: {report:?}");
}

#[test]
fn groups_changing_membership_keep_every_property() {
    let seeds = env_u64("MFSHA_SIM_SEEDS", 1000) / 5;
    let first = env_u64("MFSHA_SIM_FIRST_SEED", 1) + 3_000_000;
    let options = Options { nodes: 5, membership_per_mille: 3, ..Options::default() };
    let report = run_seeds(first, seeds, &options);
    print("5 nodes, membership changes", seeds, &report);
    assert!(report.acknowledged > seeds, "too few acknowledged proposals: {report:?}");
    assert!(report.member_changes > seeds, "too few membership changes: {report:?}");
    assert!(report.told_removed > 0, "no node removed while it was away was told: {report:?}");
}

/// A failing seed prints how to replay it with its options: the group's size, the witness and
/// the membership changes, which `replay_one_seed` reads back.
#[test]
fn a_failing_seed_names_the_options_it_replays_with() {
    assert_eq!(Options::default().replay_env(), "");
    let options = Options { nodes: 5, membership_per_mille: 3, ..Options::default() };
    assert_eq!(options.replay_env(), "MFSHA_SIM_NODES=5 MFSHA_SIM_MEMBERSHIP=3 ");
    let witness = Options { witness: Some(3), ..Options::default() };
    assert_eq!(witness.replay_env(), "MFSHA_SIM_WITNESS=3 ");
}
