//! Dirty byte ranges of one file, waiting to be written to chunkservers.
//!
//! Ranges never overlap and never touch: a write that overlaps or adjoins existing ranges is
//! merged into one. Appending to the end of a range extends its buffer in place, so a
//! sequential writer costs amortised O(bytes written), not a copy of the buffer per write.

use std::collections::BTreeMap;

/// Non-overlapping dirty ranges: start offset → bytes.
#[derive(Debug, Default)]
pub struct Extents {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl Extents {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total dirty bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// End offset of the last range (0 when empty).
    pub fn end(&self) -> u64 {
        self.map.iter().next_back().map_or(0, |(k, v)| k + v.len() as u64)
    }

    /// Records `data` written at `offset`, on top of whatever was there.
    pub fn insert(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // Start from the range that begins at or before `offset` and reaches it, if any.
        let (base, mut buf) = match self.map.range(..=offset).next_back() {
            Some((&k, v)) if k + v.len() as u64 >= offset => {
                let v = self.map.remove(&k).expect("key just seen");
                self.bytes -= v.len();
                (k, v)
            }
            _ => (offset, Vec::new()),
        };
        let pos = (offset - base) as usize;
        let overlap = buf.len().saturating_sub(pos).min(data.len());
        buf[pos..pos + overlap].copy_from_slice(&data[..overlap]);
        buf.extend_from_slice(&data[overlap..]);
        // Swallow later ranges that the merged range now reaches.
        loop {
            let reach = base + buf.len() as u64;
            let next = self.map.range(base + 1..=reach).next().map(|(&k, _)| k);
            let Some(k) = next else { break };
            let v = self.map.remove(&k).expect("key just seen");
            self.bytes -= v.len();
            let end = k + v.len() as u64;
            if end > reach {
                buf.extend_from_slice(&v[(reach - k) as usize..]);
            }
        }
        self.bytes += buf.len();
        self.map.insert(base, buf);
    }

    /// Drops everything at or after `size` (the file was truncated).
    pub fn truncate(&mut self, size: u64) {
        let tail: Vec<u64> = self.map.range(size..).map(|(&k, _)| k).collect();
        for k in tail {
            let v = self.map.remove(&k).expect("key just seen");
            self.bytes -= v.len();
        }
        if let Some((&k, v)) = self.map.range_mut(..size).next_back() {
            let keep = (size - k) as usize;
            if v.len() > keep {
                self.bytes -= v.len() - keep;
                v.truncate(keep);
            }
        }
    }

    /// Takes every range out, leaving this empty.
    pub fn take(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.map).into_iter().collect()
    }

    /// True if any dirty range intersects `[offset, offset + len)`.
    pub fn overlaps(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        match self.map.range(..end).next_back() {
            Some((&k, v)) => k + v.len() as u64 > offset,
            None => false,
        }
    }
}

/// Splits ranges at `chunk_bytes` boundaries: `(chunk index, offset in chunk, bytes)`.
pub fn by_chunk(ranges: &[(u64, Vec<u8>)], chunk_bytes: u64) -> Vec<(u32, u32, &[u8])> {
    let mut out = Vec::new();
    for (start, data) in ranges {
        let mut at = 0usize;
        while at < data.len() {
            let pos = start + at as u64;
            let index = pos / chunk_bytes;
            let in_chunk = pos % chunk_bytes;
            let len = ((chunk_bytes - in_chunk) as usize).min(data.len() - at);
            out.push((index as u32, in_chunk as u32, &data[at..at + len]));
            at += len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The same writes applied to a plain byte array, for comparison.
    struct Model {
        bytes: Vec<Option<u8>>,
    }

    impl Model {
        fn write(&mut self, offset: u64, data: &[u8]) {
            let end = offset as usize + data.len();
            if self.bytes.len() < end {
                self.bytes.resize(end, None);
            }
            for (i, b) in data.iter().enumerate() {
                self.bytes[offset as usize + i] = Some(*b);
            }
        }
    }

    fn flatten(e: &Extents, len: usize) -> Vec<Option<u8>> {
        let mut out = vec![None; len];
        let mut last_end = 0;
        for (k, v) in &e.map {
            assert!(*k >= last_end, "ranges overlap or touch: {k} < {last_end}");
            assert!(!v.is_empty());
            for (i, b) in v.iter().enumerate() {
                out[*k as usize + i] = Some(*b);
            }
            last_end = k + v.len() as u64 + 1;
        }
        assert_eq!(e.bytes, e.map.values().map(Vec::len).sum::<usize>());
        out
    }

    #[test]
    fn random_writes_match_a_byte_array() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _round in 0..200 {
            let mut e = Extents::default();
            let mut m = Model { bytes: Vec::new() };
            for _ in 0..rng.gen_range(1..30) {
                let off = rng.gen_range(0..400u64);
                let len = rng.gen_range(1..60usize);
                let fill: u8 = rng.gen();
                let data: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                e.insert(off, &data);
                m.write(off, &data);
            }
            let mut want = m.bytes.clone();
            want.resize(500, None);
            assert_eq!(flatten(&e, 500), want);
            assert_eq!(e.end() as usize, m.bytes.len());
        }
    }

    #[test]
    fn sequential_appends_stay_one_range() {
        let mut e = Extents::default();
        for i in 0..1000u64 {
            e.insert(i * 4096, &[i as u8; 4096]);
        }
        assert_eq!(e.map.len(), 1);
        assert_eq!(e.bytes(), 4096 * 1000);
        assert!(e.overlaps(4096 * 999, 1));
        assert!(!e.overlaps(4096 * 1000, 10));
    }

    #[test]
    fn truncate_cuts_and_drops() {
        let mut e = Extents::default();
        e.insert(0, &[1; 10]);
        e.insert(20, &[2; 10]);
        e.truncate(5);
        assert_eq!(e.take(), vec![(0, vec![1; 5])]);
        assert_eq!(e.bytes(), 0);
        e.insert(20, &[2; 10]);
        e.truncate(20);
        assert!(e.is_empty());
        assert_eq!(e.bytes(), 0);
    }

    #[test]
    fn chunk_split_respects_boundaries() {
        let ranges = vec![(90u64, vec![7u8; 25])];
        let pieces = by_chunk(&ranges, 100);
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].0, pieces[0].1, pieces[0].2.len()), (0, 90, 10));
        assert_eq!((pieces[1].0, pieces[1].1, pieces[1].2.len()), (1, 0, 15));
    }
}
