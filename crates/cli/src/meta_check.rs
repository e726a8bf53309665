//! `mfsha meta check DATA_DIR`: verifies a stopped master's metadata offline.

use std::path::Path;

/// Opens the data directory read-only, checks every record's checksum and the metadata's
/// invariants, and prints what it holds. Fails (non-zero exit) on any problem.
pub fn run(data_dir: &Path) -> anyhow::Result<()> {
    let found = mfsha_master_ha::inspect::check_data_dir(data_dir)?;
    let c = found.counts;
    println!("{}: invariants hold", data_dir.display());
    println!("applied index {}, {} records", found.applied_index, found.records);
    println!(
        "{} inodes, {} directories, {} files, {} chunks, {} in trash, {} sustained",
        c.inodes, c.directories, c.files, c.chunks, c.trash_inodes, c.sustained_inodes
    );
    Ok(())
}
