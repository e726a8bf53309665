//! `mfsha meta restore --from DIR -c master.yaml`: a new master group from the copies of a
//! lost one, when every master's data directory is gone (the `mfsmetarestore` of MooseFS).
//!
//! DIR is a metalogger's data directory (its snapshot + changelog, and, for the appliance's
//! witness, the Raft store under `witness/` that holds everything the group committed), or a
//! copy of a master's data directory. Every copy found is loaded and checked; the one that
//! reaches the furthest log index wins. The master's configured data directory must be empty
//! or missing. The result is bootstrapped like `mfsha bootstrap`: this master starts the new
//! group; the other members start with empty data directories and get a snapshot from it.

use anyhow::Context;
use mfsha_meta::State;
use std::path::Path;

/// One copy of the metadata that was found, loaded or not.
struct Found {
    what: String,
    state: anyhow::Result<State>,
    /// The Raft term a node's store had reached (0 for metalogger files).
    term: u64,
}

/// How far above the highest term found the new group starts: a member lost before the copy
/// was taken may have seen a few more elections.
const TERM_MARGIN: u64 = 1000;

pub fn run(from: &Path, config_path: &Path) -> anyhow::Result<()> {
    let config = mfsha_master_ha::config::load(config_path)?;
    let found = copies_in(from);
    if found.is_empty() {
        anyhow::bail!(
            "{} holds no metadata copy: give a metalogger's data_dir (snapshot + changelog, or a \
             witness/ store) or a copy of a master's data_dir",
            from.display()
        );
    }
    for f in &found {
        match &f.state {
            Ok(state) => println!("{}: up to log index {}", f.what, state.applied_index()),
            Err(e) => eprintln!("{}: not usable: {e:#}", f.what),
        }
    }
    let term = found.iter().map(|f| f.term).max().unwrap_or(0) + TERM_MARGIN;
    let (what, state) = newest(found)?;
    let counts = state.counts();
    let started = step(&format!("writing {what} into {}", config.data_dir.display()));
    mfsha_master_ha::daemon::bootstrap_from(&config, state, term).with_context(|| {
        format!("restoring into the data_dir of {} failed", config_path.display())
    })?;
    done(started);
    println!(
        "restored {what} into {} (node {} of cluster {}): {} inodes, {} files, {} chunks",
        config.data_dir.display(),
        config.node_id,
        config.cluster_id,
        counts.inodes,
        counts.files,
        counts.chunks
    );
    println!("the new group starts at term {term}: chunkservers that obeyed the lost one obey it");
    println!(
        "next: start this master; give every other member (masters, the witness's witness/ \
         directory) an empty data directory and start it: it receives the metadata from this one"
    );
    Ok(())
}

/// Says what a long step is starting, so a restore of a big namespace shows where it is.
fn step(what: &str) -> std::time::Instant {
    eprintln!("{what} ...");
    std::time::Instant::now()
}

fn done(started: std::time::Instant) {
    eprintln!("  ... done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Every copy of the metadata `dir` holds.
fn copies_in(dir: &Path) -> Vec<Found> {
    let mut found = Vec::new();
    let stores = [dir.to_path_buf(), dir.join("witness")];
    for store in stores.iter().filter(|d| mfsha_master_ha::inspect::holds_store(d)) {
        let started = step(&format!("reading the raft store {}", store.display()));
        let state = mfsha_master_ha::inspect::load_state(store).map_err(anyhow::Error::from);
        done(started);
        let term = match mfsha_master_ha::inspect::stored_term(store) {
            Ok(term) => term,
            Err(e) => {
                eprintln!("warning: {e}; its term is not counted");
                0
            }
        };
        let what = format!("raft store {}", store.display());
        found.push(Found { what, state, term });
    }
    if has_logger_files(dir) {
        let started = step(&format!("reading the metalogger files in {}", dir.display()));
        let state = logger_copy(dir);
        done(started);
        let what = format!("metalogger files in {}", dir.display());
        found.push(Found { what, state, term: 0 });
    }
    found
}

fn has_logger_files(dir: &Path) -> bool {
    use mfsha_logger::files::{SNAPSHOT, SNAPSHOT_BACK};
    [SNAPSHOT, SNAPSHOT_BACK].iter().any(|name| dir.join(name).is_file())
}

fn logger_copy(dir: &Path) -> anyhow::Result<State> {
    let restored = mfsha_logger::restore::load(dir)?;
    for warning in &restored.warnings {
        eprintln!("warning: {}: {warning}", dir.display());
    }
    if let Err(problems) = restored.state.check_invariants() {
        anyhow::bail!("breaks {} invariants: {}", problems.len(), problems.join("; "));
    }
    Ok(restored.state)
}

/// The usable copy with the highest applied index; on a tie a node's store (it also has the
/// term) before metalogger files.
fn newest(found: Vec<Found>) -> anyhow::Result<(String, State)> {
    let usable = found.into_iter().filter_map(|f| Some((f.what, f.term, f.state.ok()?)));
    usable
        .max_by_key(|(_, term, state)| (state.applied_index(), *term))
        .map(|(what, _, state)| (what, state))
        .ok_or_else(|| anyhow::anyhow!("no copy of the metadata could be loaded (see above)"))
}
