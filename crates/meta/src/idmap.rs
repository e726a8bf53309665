//! Hash maps keyed by inode numbers and chunk ids.
//!
//! These ids are chosen by the master (never by clients), so there is no adversary for a keyed
//! hash like SipHash to defend against; a multiply-rotate hash (as rustc's FxHash) makes
//! `getattr` and whole-state walks several times faster on millions of inodes. Nothing that
//! leaves the state depends on iteration order: records, changes and digests are sorted.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(MULTIPLIER);
    }

    fn finish(&self) -> u64 {
        // The product's high bits are the well-mixed ones; the table indexes by low bits.
        self.0.rotate_left(26)
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // Low 10 bits of the hash of 0..4096 must hit nearly every one of 1024 buckets.
        let buckets: HashSet<u64> = (0..4096u64)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u64(id);
                h.finish() & 1023
            })
            .collect();
        assert!(buckets.len() > 1000, "only {} of 1024 buckets used", buckets.len());
    }
}
