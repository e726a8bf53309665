//! `mfsha meta synth --files N -c master.yaml` (hidden): a development aid that makes a new
//! group in this master's empty data directory whose namespace already holds N empty files
//! ([`State::synthetic`]), so that snapshots, re-seeding and restarts can be tested and
//! measured at scale without creating the files through a mount. Bootstrapped like
//! `mfsha meta restore` does.

use anyhow::Context;
use mfsha_meta::State;
use mfsha_proto::types::Timestamp;
use std::path::Path;
use std::time::Instant;

/// The term a group made by `mfsha master bootstrap` starts at (the raft crate's
/// `BOOTSTRAP_TERM`): a synthesized group is a new one.
const BOOTSTRAP_TERM: u64 = 1;

pub fn run(files: u64, config_path: &Path) -> anyhow::Result<()> {
    let config = mfsha_master_ha::config::load(config_path)?;
    let started = Instant::now();
    let state = State::synthetic(files, Timestamp::now());
    let built_ms = started.elapsed().as_millis();
    let counts = state.counts();
    mfsha_master_ha::daemon::bootstrap_from(&config, state, BOOTSTRAP_TERM)
        .with_context(|| format!("bootstrapping into the data_dir of {}", config_path.display()))?;
    println!(
        "synthesized {} files in {} directories in {built_ms} ms; bootstrapped into {} in {} ms \
         in all",
        counts.files,
        counts.directories,
        config.data_dir.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}
