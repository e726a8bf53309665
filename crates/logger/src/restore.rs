//! Rebuilding the metadata from a logger's files: snapshot, then replay of the changelog.

use crate::files::{self, FileError};
use mfsha_meta::{Entry, State};
use std::path::Path;

/// The metadata rebuilt from a logger directory.
#[derive(Debug)]
pub struct Restored {
    pub state: State,
    /// Index of the snapshot the replay started from.
    pub snapshot_index: u64,
    /// Problems met and worked around (a torn changelog tail, a damaged current snapshot).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    File(#[from] FileError),
    #[error("no usable snapshot in {dir}: {reasons}")]
    NoSnapshot { dir: String, reasons: String },
    #[error("{file}: {reason}")]
    Bad { file: String, reason: String },
}

/// Loads the newest restorable metadata in `dir`.
///
/// Uses the current snapshot plus the current changelog; if the current snapshot is damaged,
/// the back snapshot plus both changelogs. Replay stops at the first gap or damaged record and
/// says so in `warnings`: everything before it is applied, nothing after it.
pub fn load(dir: &Path) -> Result<Restored, RestoreError> {
    let current = dir.join(files::SNAPSHOT);
    match files::read_snapshot(&current) {
        Ok(snap) => replay_from(snap, &[files::CHANGELOG], dir, Vec::new()),
        Err(current_err) => {
            let back = dir.join(files::SNAPSHOT_BACK);
            let warning = format!("current snapshot unusable ({current_err}); using the back copy");
            match files::read_snapshot(&back) {
                Ok(snap) => replay_from(
                    snap,
                    &[files::CHANGELOG_BACK, files::CHANGELOG],
                    dir,
                    vec![warning],
                ),
                Err(back_err) => Err(RestoreError::NoSnapshot {
                    dir: dir.display().to_string(),
                    reasons: format!("{current_err}; {back_err}"),
                }),
            }
        }
    }
}

fn replay_from(
    snap: files::StoredSnapshot,
    changelogs: &[&str],
    dir: &Path,
    mut warnings: Vec<String>,
) -> Result<Restored, RestoreError> {
    let snapshot_file = dir.join(files::SNAPSHOT).display().to_string();
    let mut state = State::from_snapshot(&snap.blob)
        .map_err(|e| RestoreError::Bad { file: snapshot_file.clone(), reason: e.to_string() })?;
    if state.applied_index() != snap.index {
        let reason = format!(
            "header says index {}, metadata is at index {}",
            snap.index,
            state.applied_index()
        );
        return Err(RestoreError::Bad { file: snapshot_file, reason });
    }
    for name in changelogs {
        let path = dir.join(name);
        let read = files::read_changelog(&path)?;
        let stop = replay(&mut state, &read.records, &path.display().to_string());
        if let Some(reason) = stop.or(read.stopped) {
            warnings.push(reason);
            break;
        }
    }
    Ok(Restored { state, snapshot_index: snap.index, warnings })
}

/// How often a long replay logs how far it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies the records that follow the state's applied index; returns why it stopped early.
fn replay(state: &mut State, records: &[(u64, u64, Vec<u8>)], file: &str) -> Option<String> {
    let mut reported = std::time::Instant::now();
    for (done, (index, _term, data)) in records.iter().enumerate() {
        // A long changelog takes a while to replay: say how far it is.
        if reported.elapsed() >= PROGRESS_EVERY {
            reported = std::time::Instant::now();
            let total = records.len();
            tracing::info!(
                file,
                done,
                total,
                percent = done * 100 / total.max(1),
                "replaying the changelog"
            );
        }
        if *index <= state.applied_index() {
            continue; // already in the snapshot
        }
        if *index != state.applied_index() + 1 {
            let want = state.applied_index() + 1;
            return Some(format!(
                "{file}: entry {index} follows {}; entry {want} is missing",
                want - 1
            ));
        }
        let entry: Entry = match postcard::from_bytes(data) {
            Ok(entry) => entry,
            Err(e) => return Some(format!("{file}: entry {index} does not decode: {e}")),
        };
        // The outcome was the client's business; a failed op (ENOENT…) is still applied.
        let _outcome = state.apply(*index, &entry);
    }
    None
}
