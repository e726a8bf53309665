//! Fencing deposed masters: the highest master term this chunkserver has obeyed, kept on disk.
//!
//! Every frame from the master carries the Raft term in which that master leads. A master
//! that lost its leadership without knowing it (cut off, stalled) still thinks it may delete
//! and replicate copies; once this server has obeyed a newer leader, such a master's
//! commands must be refused, and across a restart too, or a stale master reached first after
//! the restart could undo the new leader's work. So a newer term is written to disk *before*
//! the command that brought it is carried out.
//!
//! The term lives in [`TERM_FILE`] in every healthy data directory (any one survives the
//! loss of the others): one line `term N crc32c XXXXXXXX`, the checksum over `term N`,
//! written to a temporary file, fsynced, renamed over the old one, and the directory
//! fsynced. A file that does not parse or fails its checksum stops the chunkserver at start:
//! guessing a term would either fence the real leader out or let a stale one in.

use crate::disk::write_file_durably;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Name of the term file in each data directory.
pub const TERM_FILE: &str = ".mfsha_master_term";

/// Why a master's frame was refused or the term could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("the master's term {term} is older than term {highest} this chunkserver already obeyed: it is a deposed leader (only if the master group was re-created with empty data directories, so that its terms started again, remove {TERM_FILE} from this chunkserver's data directories and restart it)")]
    Stale { term: u64, highest: u64 },
    #[error("master term file {path} is corrupt ({reason}); if the data directory is otherwise sound, remove the file and restart (the next leader's term is taken as is)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read master term file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error(
        "cannot record master term {term} in any data directory ({causes}); the command is refused"
    )]
    Write { term: u64, causes: String },
}

/// The highest master term obeyed, and the files that keep it.
#[derive(Debug)]
pub struct TermFence {
    files: Vec<PathBuf>,
    highest: Mutex<u64>,
}

impl TermFence {
    /// Reads the term files of `dirs` (healthy data directories); the highest wins. Missing
    /// files count as term 0; an unreadable or corrupt one is an error naming it.
    pub fn open(dirs: &[PathBuf]) -> Result<TermFence, FenceError> {
        let files: Vec<PathBuf> = dirs.iter().map(|d| d.join(TERM_FILE)).collect();
        let mut highest = 0;
        for path in &files {
            highest = highest.max(read_term(path)?.unwrap_or(0));
        }
        Ok(TermFence { files, highest: Mutex::new(highest) })
    }

    /// The highest term obeyed so far.
    pub fn highest(&self) -> u64 {
        *self.highest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a frame of `term`: refused if older than the highest obeyed; a newer term is
    /// on disk before this returns (blocking I/O: call off the async workers, see [`admit`]).
    pub fn admit_blocking(&self, term: u64) -> Result<(), FenceError> {
        // Held across the write, so two frames raising the term cannot interleave.
        let mut highest = self.highest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if term < *highest {
            return Err(FenceError::Stale { term, highest: *highest });
        }
        if term > *highest {
            self.persist(term)?;
            *highest = term;
        }
        Ok(())
    }

    fn persist(&self, term: u64) -> Result<(), FenceError> {
        let line = encode(term);
        let mut failures = Vec::new();
        for path in &self.files {
            if let Err(e) = write_file_durably(path, line.as_bytes()) {
                tracing::error!(path = %path.display(), error = %e, "cannot record the master term here");
                failures.push(format!("{}: {e}", path.display()));
            }
        }
        if failures.len() == self.files.len() {
            let causes =
                if failures.is_empty() { "no data directory".into() } else { failures.join("; ") };
            return Err(FenceError::Write { term, causes });
        }
        Ok(())
    }
}

/// [`TermFence::admit_blocking`] for async callers: the usual case (the term did not grow)
/// needs no disk and is answered in place; a newer term is written on a blocking thread.
pub async fn admit(fence: &Arc<TermFence>, term: u64) -> Result<(), FenceError> {
    let highest = fence.highest();
    if term < highest {
        return Err(FenceError::Stale { term, highest });
    }
    if term == highest {
        return Ok(());
    }
    let fence = fence.clone();
    match tokio::task::spawn_blocking(move || fence.admit_blocking(term)).await {
        Ok(result) => result,
        Err(e) => Err(FenceError::Write { term, causes: format!("writer task failed: {e}") }),
    }
}

/// Raises the fence to `term` if it is newer, for a frame that is not a command (any
/// master's heartbeat or greeting): once any master is at term T, a leader of an older term
/// is deposed or about to be (pre-vote lets a term rise only with a majority's support), so
/// its commands are refused from then on. An older term is simply not recorded.
pub async fn note(fence: &Arc<TermFence>, term: u64) -> Result<(), FenceError> {
    match admit(fence, term).await {
        Err(FenceError::Stale { .. }) => Ok(()),
        other => other,
    }
}

fn body(term: u64) -> String {
    format!("term {term}")
}

fn encode(term: u64) -> String {
    let body = body(term);
    format!("{body} crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()))
}

/// The term in `path`, `None` if there is no such file.
fn read_term(path: &Path) -> Result<Option<u64>, FenceError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(cause) => return Err(FenceError::Read { path: path.to_path_buf(), cause }),
    };
    let corrupt =
        |reason: &str| FenceError::Corrupt { path: path.to_path_buf(), reason: reason.into() };
    let text = std::str::from_utf8(&text).map_err(|_| corrupt("not text"))?;
    let line = text.strip_suffix('\n').ok_or_else(|| corrupt("no complete line"))?;
    let (body_text, crc) = line.split_once(" crc32c ").ok_or_else(|| corrupt("no checksum"))?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| corrupt("checksum is not hex"))?;
    if crc32c::crc32c(body_text.as_bytes()) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let term = body_text.strip_prefix("term ").and_then(|t| t.parse().ok());
    let term = term.ok_or_else(|| corrupt("no term number"))?;
    Ok(Some(term))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_term_is_refused_also_after_reopening() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        let fence = TermFence::open(&dirs).unwrap();
        assert_eq!(fence.highest(), 0);
        fence.admit_blocking(3).unwrap();
        fence.admit_blocking(3).unwrap();
        assert!(matches!(fence.admit_blocking(2), Err(FenceError::Stale { term: 2, highest: 3 })));
        fence.admit_blocking(5).unwrap();
        drop(fence);
        // Losing one directory's copy loses nothing.
        std::fs::remove_file(a.path().join(TERM_FILE)).unwrap();
        let fence = TermFence::open(&dirs).unwrap();
        assert_eq!(fence.highest(), 5);
        let err = fence.admit_blocking(4).unwrap_err();
        assert!(err.to_string().contains("older than term 5"), "{err}");
    }

    #[test]
    fn a_corrupt_term_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        TermFence::open(&dirs).unwrap().admit_blocking(7).unwrap();
        let path = dir.path().join(TERM_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        for bad in [good.replace("term 7", "term 8"), "term 7\n".into(), good.replace('\n', "")] {
            std::fs::write(&path, bad).unwrap();
            let err = TermFence::open(&dirs).unwrap_err();
            assert!(matches!(err, FenceError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        }
    }
}
