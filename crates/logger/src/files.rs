//! The logger's files: snapshots and changelogs, written so that a crash at any instant leaves
//! the previous good copy in place and every stored byte checksummed.
//!
//! Snapshot file: `MFSHASNP` | format u32 | index u64 | term u64 | length u64 | crc32c u32 | blob.
//! Changelog record: length u32 | crc32c u32 (of the rest) | index u64 | term u64 | entry bytes.
//! All integers big-endian.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const SNAPSHOT: &str = "metadata_ml.mfsha";
pub const SNAPSHOT_BACK: &str = "metadata_ml.back.mfsha";
pub const CHANGELOG: &str = "changelog_ml.mfsha";
pub const CHANGELOG_BACK: &str = "changelog_ml.back.mfsha";

const SNAPSHOT_MAGIC: &[u8; 8] = b"MFSHASNP";
const SNAPSHOT_FORMAT: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 4;
const RECORD_HEADER_BYTES: usize = 4 + 4 + 8 + 8;
/// No single entry is larger than a frame, so a larger length is corruption.
const RECORD_MAX_BYTES: usize = mfsha_proto::MAX_FRAME_BYTES;

/// A problem with one of the logger's files, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |cause| FileError::Io { path: path.to_path_buf(), cause }
}

/// A snapshot as stored: the metadata blob at `index`/`term`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSnapshot {
    pub index: u64,
    pub term: u64,
    pub blob: Vec<u8>,
}

/// See [`write_snapshot`].
const SYNC_STEP_BYTES: usize = 8 << 20;

/// Writes `snap` as the current snapshot; the previous one becomes the back copy.
///
/// Order: temp file written and fsynced → current renamed to back → temp renamed to current →
/// directory fsynced. At every instant one complete, checksummed snapshot is on disk.
pub fn write_snapshot(dir: &Path, snap: &StoredSnapshot) -> Result<(), FileError> {
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    header.extend_from_slice(SNAPSHOT_MAGIC);
    header.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    header.extend_from_slice(&snap.index.to_be_bytes());
    header.extend_from_slice(&snap.term.to_be_bytes());
    header.extend_from_slice(&(snap.blob.len() as u64).to_be_bytes());
    header.extend_from_slice(&crc32c::crc32c(&snap.blob).to_be_bytes());
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&header).map_err(io_err(&tmp))?;
    // Synced in steps: on ext4 (data=ordered) the witness's Raft WAL fsync would otherwise
    // wait for the whole blob's dirty data, and stop its heartbeats for seconds.
    for step in snap.blob.chunks(SYNC_STEP_BYTES) {
        file.write_all(step).map_err(io_err(&tmp))?;
        file.sync_data().map_err(io_err(&tmp))?;
    }
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    let current = dir.join(SNAPSHOT);
    if current.exists() {
        let back = dir.join(SNAPSHOT_BACK);
        fs::rename(&current, &back).map_err(io_err(&back))?;
    }
    fs::rename(&tmp, &current).map_err(io_err(&current))?;
    sync_dir(dir)
}

/// Reads and verifies a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<StoredSnapshot, FileError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let corrupt = |reason: String| FileError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(format!("not an mfsha snapshot ({} bytes, bad header)", bytes.len())));
    }
    let format = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != SNAPSHOT_FORMAT {
        return Err(corrupt(format!(
            "snapshot format {format}, this build reads {SNAPSHOT_FORMAT}"
        )));
    }
    let index = u64::from_be_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let term = u64::from_be_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let len = u64::from_be_bytes(bytes[28..36].try_into().expect("8 bytes"));
    let crc = u32::from_be_bytes(bytes[36..40].try_into().expect("4 bytes"));
    let blob = &bytes[SNAPSHOT_HEADER_BYTES..];
    if blob.len() as u64 != len {
        return Err(corrupt(format!(
            "header says {len} bytes of metadata, file holds {}",
            blob.len()
        )));
    }
    if crc32c::crc32c(blob) != crc {
        return Err(corrupt("metadata checksum mismatch".into()));
    }
    Ok(StoredSnapshot { index, term, blob: blob.to_vec() })
}

/// Appends checksummed records to the changelog.
pub struct ChangelogWriter {
    path: PathBuf,
    file: File,
}

impl ChangelogWriter {
    /// Opens (creating if needed) the current changelog for appending.
    pub fn open(dir: &Path) -> Result<Self, FileError> {
        let path = dir.join(CHANGELOG);
        let file =
            OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        Ok(ChangelogWriter { path, file })
    }

    /// Appends `entries` ((index, term, bytes)) and fsyncs once for the whole batch.
    pub fn append(&mut self, entries: &[(u64, u64, &[u8])]) -> Result<(), FileError> {
        let mut buf = Vec::new();
        for (index, term, data) in entries {
            encode_record(*index, *term, data, &mut buf);
        }
        self.file.write_all(&buf).map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

fn encode_record(index: u64, term: u64, data: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(16 + data.len());
    body.extend_from_slice(&index.to_be_bytes());
    body.extend_from_slice(&term.to_be_bytes());
    body.extend_from_slice(data);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Makes the current changelog the back copy and starts an empty one (after a new snapshot,
/// which covers every entry in the current changelog).
pub fn rotate_changelog(dir: &Path) -> Result<(), FileError> {
    let current = dir.join(CHANGELOG);
    if current.exists() {
        let back = dir.join(CHANGELOG_BACK);
        fs::rename(&current, &back).map_err(io_err(&back))?;
    }
    let file = File::create(&current).map_err(io_err(&current))?;
    file.sync_all().map_err(io_err(&current))?;
    sync_dir(dir)
}

/// A changelog's records, and why reading stopped early if it did (a torn or corrupt tail).
#[derive(Debug, Default)]
pub struct ChangelogRead {
    pub records: Vec<(u64, u64, Vec<u8>)>,
    pub stopped: Option<String>,
}

/// Reads every intact record of a changelog. A missing file reads as empty.
pub fn read_changelog(path: &Path) -> Result<ChangelogRead, FileError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ChangelogRead::default()),
        Err(e) => return Err(io_err(path)(e)),
    }
    let mut out = ChangelogRead::default();
    let mut at = 0;
    while at < bytes.len() {
        match decode_record(&bytes[at..]) {
            Ok((record, used)) => {
                out.records.push(record);
                at += used;
            }
            Err(reason) => {
                out.stopped = Some(format!("{}: {reason} at byte {at}", path.display()));
                break;
            }
        }
    }
    Ok(out)
}

/// One changelog record as stored: (index, term, encoded entry).
type Record = (u64, u64, Vec<u8>);

/// The record at the start of `bytes` and how many bytes it took.
fn decode_record(bytes: &[u8]) -> Result<(Record, usize), String> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(format!("torn record header ({} bytes)", bytes.len()));
    }
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if !(16..=RECORD_MAX_BYTES).contains(&len) {
        return Err(format!("record length {len} out of range"));
    }
    let Some(body) = bytes.get(8..8 + len) else {
        return Err(format!("torn record (needs {len} bytes, {} left)", bytes.len() - 8));
    };
    if crc32c::crc32c(body) != crc {
        return Err("record checksum mismatch".to_string());
    }
    let index = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    let term = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    Ok(((index, term, body[16..].to_vec()), 8 + len))
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_back_copy() {
        let dir = tempfile::tempdir().unwrap();
        let one = StoredSnapshot { index: 5, term: 1, blob: vec![1, 2, 3] };
        let two = StoredSnapshot { index: 9, term: 2, blob: vec![4; 1000] };
        write_snapshot(dir.path(), &one).unwrap();
        write_snapshot(dir.path(), &two).unwrap();
        assert_eq!(read_snapshot(&dir.path().join(SNAPSHOT)).unwrap(), two);
        assert_eq!(read_snapshot(&dir.path().join(SNAPSHOT_BACK)).unwrap(), one);
        assert!(!dir.path().join(format!("{SNAPSHOT}.tmp")).exists());
    }

    #[test]
    fn damaged_snapshots_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), &StoredSnapshot { index: 5, term: 1, blob: vec![7; 100] })
            .unwrap();
        let path = dir.path().join(SNAPSHOT);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let e = read_snapshot(&path).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains(SNAPSHOT), "{e}");
        fs::write(&path, &bytes[..50]).unwrap();
        assert!(read_snapshot(&path).unwrap_err().to_string().contains("holds"));
        fs::write(&path, b"").unwrap();
        assert!(read_snapshot(&path).unwrap_err().to_string().contains("bad header"));
    }

    #[test]
    fn changelog_keeps_intact_records_and_reports_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChangelogWriter::open(dir.path()).unwrap();
        w.append(&[(1, 1, b"a"), (2, 1, b"bb")]).unwrap();
        w.append(&[(3, 2, b"ccc")]).unwrap();
        drop(w);
        let path = dir.path().join(CHANGELOG);
        let read = read_changelog(&path).unwrap();
        assert_eq!(read.records.len(), 3);
        assert_eq!(read.records[2], (3, 2, b"ccc".to_vec()));
        assert!(read.stopped.is_none());
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let read = read_changelog(&path).unwrap();
        assert_eq!(read.records.len(), 2);
        assert!(read.stopped.unwrap().contains("torn"));
    }

    #[test]
    fn rotation_moves_the_changelog_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChangelogWriter::open(dir.path()).unwrap();
        w.append(&[(1, 1, b"a")]).unwrap();
        drop(w);
        rotate_changelog(dir.path()).unwrap();
        assert_eq!(read_changelog(&dir.path().join(CHANGELOG_BACK)).unwrap().records.len(), 1);
        assert_eq!(read_changelog(&dir.path().join(CHANGELOG)).unwrap().records.len(), 0);
    }
}
