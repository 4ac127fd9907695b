//! 64-bit hashes of keys (document ids, values of a looked-up field) -> document ordinals.
//!
//! An index writer lives as long as an archive is indexed, and this table is one of the few
//! things it keeps per document, so its layout is chosen for size: one sorted run of
//! `(hash, ordinal)` pairs in two arrays (12 bytes per entry), and a hash map of the entries
//! added since the run was last merged, at most a sixteenth of the run and at most
//! [`RECENT_MAX`] entries. A hash map of every entry costs 20-40 bytes each (16-byte buckets
//! at most 7/8 full, doubled when it grows). A writer's run lives in a scratch file
//! ([`ScratchVec`]) once it passes a mebibyte, so only the bounded map stays on the heap.
//!
//! Entries are never removed: a deleted document's ordinal stays under its hash, and a hash
//! may name several ordinals (a 64-bit collision, or a key deleted and added again). A lookup
//! yields every candidate; the caller skips deleted ordinals and confirms the rest against the
//! stored record.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::scratch::ScratchVec;

/// The hash map is merged into the sorted run when it holds this many entries, or a sixteenth
/// of the run when that is more (up to [`RECENT_MAX`]). Each merge copies the run, so with the
/// limit growing with the run an entry is copied about 16 times in all (200 bytes of copying
/// per entry), where a fixed limit would copy the run `n / limit` times.
pub(crate) const RECENT_MIN: usize = 1 << 12;

/// The most entries the hash map holds (about 4 MiB), so that the heap a table holds stays
/// bounded: past 2 million entries merges come every 131,072 additions, each copying the run
/// (in its scratch file), which at 10 million entries adds about 4 GB of sequential copying
/// over the whole run, against hours of embedding.
pub(crate) const RECENT_MAX: usize = 1 << 17;

/// A fixed-key 64-bit hash of a key: the same key hashes alike in every process.
pub(crate) fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(key)
}

#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    /// The sorted run: `hashes[i]` names `ords[i]`, ordered by (hash, ordinal).
    hashes: ScratchVec<u64>,
    ords: ScratchVec<u32>,
    /// Where each range of hashes starts in the run: `buckets[b]` is the first entry whose
    /// top `bucket_bits` bits are `b` or more (and one past the end). Hashes are uniform, so a
    /// bucket holds about 8 entries and a lookup reads one or two cache lines of the run where
    /// a binary search over all of it would miss the cache a dozen times. 0.5 bytes per entry.
    buckets: ScratchVec<u32>,
    bucket_bits: u32,
    /// Entries since the last merge: the first ordinal under each hash in `recent`, the
    /// others (rare) in `recent_more`.
    recent: HashMap<u64, u32>,
    recent_more: Vec<(u64, u32)>,
}

impl KeyTable {
    /// A table whose arrays move into scratch files in `dir` past `at_bytes` each
    /// ([`SPILL_BYTES`](crate::scratch::SPILL_BYTES) for a writer's).
    pub(crate) fn spilling(dir: &Arc<Path>, at_bytes: usize) -> KeyTable {
        KeyTable {
            hashes: ScratchVec::spilling(dir.clone(), at_bytes),
            ords: ScratchVec::spilling(dir.clone(), at_bytes),
            buckets: ScratchVec::spilling(dir.clone(), at_bytes),
            ..KeyTable::default()
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len() + self.recent.len() + self.recent_more.len()
    }

    /// Makes room in the sorted run for `n` more entries: a table loaded from an index of
    /// known size is then merged in place, with no copy of the run left to the allocator.
    pub(crate) fn reserve(&mut self, n: usize) -> std::io::Result<()> {
        self.hashes.reserve_exact(n)?;
        self.ords.reserve_exact(n)
    }

    /// Adds `ord` under `hash`. Ordinals are added in increasing order. A merge that cannot
    /// grow the run (its scratch file's disk is full) leaves the entries in the map, where
    /// they are found as well, and is tried again at the next insertion; the writer's other
    /// arrays, which grow in the same folder, report the condition.
    pub(crate) fn insert(&mut self, hash: u64, ord: u32) {
        match self.recent.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.recent_more.push((hash, ord)),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ord);
            }
        }
        let recent = self.recent.len() + self.recent_more.len();
        if recent >= RECENT_MIN.max(self.hashes.len() / 16).min(RECENT_MAX) {
            let _deferred = self.merge();
        }
    }

    /// The ordinals under `hash`, in increasing order.
    pub(crate) fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let (lo, hi) = match self.bucket_bits {
            0 => (0, self.hashes.len()),
            bits => {
                let b = (hash >> (64 - bits)) as usize;
                (self.buckets[b] as usize, self.buckets[b + 1] as usize)
            }
        };
        let from = lo + self.hashes[lo..hi].partition_point(|&h| h < hash);
        let len = self.hashes[from..hi].partition_point(|&h| h == hash);
        // `recent` holds the newest ordinals, so they follow the run's; `recent_more`
        // follows the map's entry for the same hash.
        let first = self.recent.get(&hash).copied();
        let more = self.recent_more.iter().filter(move |(h, _)| *h == hash);
        self.ords[from..from + len]
            .iter()
            .copied()
            .chain(first)
            .chain(more.map(|&(_, ord)| ord))
    }

    /// Moves the recent entries into the sorted run: sorted, then merged from the back into
    /// the run grown in place, so that no second copy of the run is made. Nothing moves
    /// until both arrays have room, so an error leaves the entries in the map.
    fn merge(&mut self) -> std::io::Result<()> {
        if self.recent.is_empty() && self.recent_more.is_empty() {
            return Ok(());
        }
        let (old, added) = (
            self.hashes.len(),
            self.recent.len() + self.recent_more.len(),
        );
        self.hashes.reserve_exact(added)?;
        self.ords.reserve_exact(added)?;
        // Within the room just made: these cannot fail.
        self.hashes.resize(old + added, 0)?;
        self.ords.resize(old + added, 0)?;
        let mut recent: Vec<(u64, u32)> = self.recent.drain().collect();
        recent.append(&mut self.recent_more);
        recent.sort_unstable();
        // Plain slices for the loop, so that the arrays' storage is looked up once.
        let (hashes, ords): (&mut [u64], &mut [u32]) = (&mut self.hashes, &mut self.ords);
        let (mut i, mut k) = (old, old + added);
        for &(hash, ord) in recent.iter().rev() {
            while i > 0 && (hashes[i - 1], ords[i - 1]) > (hash, ord) {
                i -= 1;
                k -= 1;
                hashes[k] = hashes[i];
                ords[k] = ords[i];
            }
            k -= 1;
            hashes[k] = hash;
            ords[k] = ord;
        }
        self.index_buckets()
    }

    /// Rebuilds [`buckets`](Self::buckets) for the run as it now is.
    fn index_buckets(&mut self) -> std::io::Result<()> {
        let n = self.hashes.len();
        // Until the buckets are rebuilt, a lookup searches the whole run (correct, slower),
        // which is also what an error leaves.
        self.bucket_bits = 0;
        self.buckets.clear();
        // About 8 entries a bucket; none below 64 entries, where the run is one bucket.
        let bits = (n / 8).checked_ilog2().filter(|&b| b >= 3).unwrap_or(0);
        if bits == 0 {
            return Ok(());
        }
        let count = 1usize << bits;
        self.buckets.reserve_exact(count + 1)?;
        let hashes: &[u64] = &self.hashes;
        let mut at = 0usize;
        for b in 0..count {
            while at < n && ((hashes[at] >> (64 - bits)) as usize) < b {
                at += 1;
            }
            self.buckets.push(at as u32)?;
        }
        self.buckets.push(n as u32)?;
        self.bucket_bits = bits;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes drawn from a small range, so that runs, the map and its overflow all hold
    /// several ordinals under one hash.
    fn table_with(n: u32, hash_of: impl Fn(u32) -> u64) -> KeyTable {
        let mut table = KeyTable::default();
        for ord in 0..n {
            table.insert(hash_of(ord), ord);
        }
        table
    }

    #[test]
    fn candidates_are_every_ordinal_under_the_hash_in_order() {
        // Past many merges, with a remainder in the map.
        let n = 40 * RECENT_MIN as u32 + 1000;
        // 997 hashes spread over the whole range, so that they fall in many buckets.
        let hash_of =
            |ord: u32| u64::from(ord.wrapping_mul(2_654_435_761) % 997) * (u64::MAX / 997);
        let table = table_with(n, hash_of);
        assert_eq!(table.len(), n as usize);
        for hash in [0u64, 1, 500, 996].map(|h| h * (u64::MAX / 997)) {
            let expected: Vec<u32> = (0..n).filter(|&o| hash_of(o) == hash).collect();
            let found: Vec<u32> = table.candidates(hash).collect();
            assert_eq!(found, expected, "hash {hash}");
        }
        assert_eq!(table.candidates(1).count(), 0);
        assert_eq!(table.candidates(u64::MAX).count(), 0);
    }

    #[test]
    fn a_table_in_scratch_files_finds_what_one_on_the_heap_finds() {
        let dir = tempfile::tempdir().unwrap();
        let path: Arc<Path> = Arc::from(dir.path());
        let n = 20 * RECENT_MIN as u32 + 77;
        let hash_of = |ord: u32| key_hash(&format!("doc-{}", ord % 5000));
        let mut spilled = KeyTable::spilling(&path, 4096);
        for ord in 0..n {
            spilled.insert(hash_of(ord), ord);
        }
        assert!(spilled.hashes.is_mapped() && spilled.ords.is_mapped());
        assert!(spilled.buckets.is_mapped());
        let heap = table_with(n, hash_of);
        for key in [0u32, 1, 2500, 4999, 5000, 123_456] {
            let hash = key_hash(&format!("doc-{key}"));
            let expected: Vec<u32> = heap.candidates(hash).collect();
            assert_eq!(spilled.candidates(hash).collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn distinct_keys_find_only_themselves() {
        let n = RECENT_MIN as u32 + 10;
        let table = table_with(n, |ord| key_hash(&format!("doc-{ord}")));
        for ord in [0, 1, n / 2, n - 1] {
            let found: Vec<u32> = table.candidates(key_hash(&format!("doc-{ord}"))).collect();
            assert_eq!(found, vec![ord]);
        }
        assert_eq!(table.candidates(key_hash("absent")).count(), 0);
    }
}
