//! Blocks of a copy whose CRC a read has checked since the copy last changed, for small
//! random reads: reading 4 KiB of such a block again needs neither a hop to the blocking
//! pool nor a read and CRC of its whole 64 KiB, as long as the bytes are still in the page
//! cache (`preadv2` with `RWF_NOWAIT` says so without waiting for the disk).
//!
//! Why that is safe: the page cache holds the very bytes the CRC check passed (a disk that
//! rots under a cached page does not change the page), and every change this server makes
//! to a copy takes the chunk's write lock, which drops the whole set (`ChunkState::change`).
//! A page the kernel dropped is read from the disk again, which `RWF_NOWAIT` refuses, so
//! the slow path reads and checks the whole block once more. A change made to the file
//! beside the chunkserver (which nothing should do) shows in its change time, checked on
//! every fast read, and drops the set too.

use mfsha_proto::types::BLOCK_BYTES;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Blocks per chunk: 64 MiB of 64 KiB blocks.
const BLOCKS: usize = (mfsha_proto::types::CHUNK_BYTES / BLOCK_BYTES) as usize;

#[derive(Debug, Default)]
pub(super) struct Verified {
    /// One bit per block.
    bits: [AtomicU64; BLOCKS / 64],
    /// The descriptor the first verifying read opened, and the file's change time then.
    file: OnceLock<(File, ChangeTime)>,
}

/// `st_ctime` in nanoseconds: any write to the file, ours or not, moves it.
type ChangeTime = i128;

impl Verified {
    /// Records that blocks `first..=last` passed their CRC check, read through `file` (kept
    /// if none is yet).
    pub(super) fn passed(&self, first: u64, last: u64, file: File) {
        for block in first..=last.min(BLOCKS as u64 - 1) {
            self.bits[block as usize / 64].fetch_or(1 << (block % 64), Ordering::Relaxed);
        }
        if self.file.get().is_none() {
            if let Some(time) = change_time(&file) {
                let _ = self.file.set((file, time));
            }
        }
    }

    /// Reads `len` bytes at `at` of the file (a position in the file, header included) of
    /// `block`, if it was verified and every byte is in the page cache; `None` otherwise
    /// (the caller reads and checks the block as usual).
    pub(super) fn read_cached(&self, block: u64, at: u64, len: usize) -> Option<Vec<u8>> {
        if block >= BLOCKS as u64 {
            return None;
        }
        let bit = self.bits[block as usize / 64].load(Ordering::Relaxed) & (1 << (block % 64));
        let (file, verified_at) = self.file.get().filter(|_| bit != 0)?;
        if change_time(file)? != *verified_at {
            self.forget();
            return None;
        }
        let mut data = vec![0u8; len];
        (read_nowait(file, &mut data, at) == Some(len)).then_some(data)
    }

    /// Forgets every block (the file changed beside this server).
    fn forget(&self) {
        for word in &self.bits {
            word.store(0, Ordering::Relaxed);
        }
    }
}

fn change_time(file: &File) -> Option<ChangeTime> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    Some(meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128)
}

/// `preadv2(RWF_NOWAIT)`: the bytes read, all from the page cache, or `None` when the
/// kernel would have to wait for the disk (EAGAIN) or the call failed.
fn read_nowait(file: &File, buf: &mut [u8], at: u64) -> Option<usize> {
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` points at `buf`, which is valid for writes of `buf.len()` bytes and
    // outlives the call; the descriptor is open for as long as `file` lives.
    let n = unsafe {
        libc::preadv2(file.as_raw_fd(), &iov, 1, i64::try_from(at).ok()?, libc::RWF_NOWAIT)
    };
    usize::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn only_verified_blocks_of_an_unchanged_file_are_read_from_the_cache() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (_dir, path) = file_with(&bytes);
        let v = Verified::default();
        assert_eq!(v.read_cached(0, 0, 4096), None, "nothing verified yet");
        v.passed(1, 1, File::open(&path).unwrap());
        assert_eq!(v.read_cached(0, 0, 4096), None, "block 0 was not verified");
        let at = BLOCK_BYTES + 100;
        // Just written, so in the page cache: RWF_NOWAIT reads it.
        let got = v.read_cached(1, at, 4096).expect("a verified, cached block");
        assert_eq!(got, &bytes[at as usize..at as usize + 4096]);
        // A change beside the server moves the change time: the set is dropped.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"rot", at).unwrap();
        assert_eq!(v.read_cached(1, at, 4096), None, "changed beside the chunkserver");
        assert_eq!(v.read_cached(1, at, 4096), None, "and forgotten");
    }
}
