//! 64-bit hashes of keys (document ids, values of a looked-up field) -> document ordinals.
//!
//! An index writer lives as long as an archive is indexed, and this table is one of the few
//! things it keeps per document, so its layout is chosen for size: one sorted run of
//! `(hash, ordinal)` pairs in two arrays (12 bytes per entry), and a hash map of the entries
//! added since the run was last merged, at most a sixteenth of the run (under 2.5 bytes per
//! entry). A hash map of every entry costs 20-40 bytes each (16-byte buckets at most 7/8 full,
//! doubled when it grows).
//!
//! Entries are never removed: a deleted document's ordinal stays under its hash, and a hash
//! may name several ordinals (a 64-bit collision, or a key deleted and added again). A lookup
//! yields every candidate; the caller skips deleted ordinals and confirms the rest against the
//! stored record.

use std::collections::HashMap;

/// The hash map is merged into the sorted run when it holds this many entries, or a sixteenth
/// of the run when that is more. Each merge copies the run, so with the limit growing with the
/// run an entry is copied about 16 times in all (200 bytes of copying per entry), where a
/// fixed limit would copy the run `n / limit` times.
pub(crate) const RECENT_MIN: usize = 1 << 12;

/// A fixed-key 64-bit hash of a key: the same key hashes alike in every process.
pub(crate) fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(key)
}

#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    /// The sorted run: `hashes[i]` names `ords[i]`, ordered by (hash, ordinal).
    hashes: Vec<u64>,
    ords: Vec<u32>,
    /// Where each range of hashes starts in the run: `buckets[b]` is the first entry whose
    /// top `bucket_bits` bits are `b` or more (and one past the end). Hashes are uniform, so a
    /// bucket holds about 8 entries and a lookup reads one or two cache lines of the run where
    /// a binary search over all of it would miss the cache a dozen times. 0.5 bytes per entry.
    buckets: Vec<u32>,
    bucket_bits: u32,
    /// Entries since the last merge: the first ordinal under each hash in `recent`, the
    /// others (rare) in `recent_more`.
    recent: HashMap<u64, u32>,
    recent_more: Vec<(u64, u32)>,
}

impl KeyTable {
    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.hashes.len() + self.recent.len() + self.recent_more.len()
    }

    /// Makes room in the sorted run for `n` more entries: a table loaded from an index of
    /// known size is then merged in place, with no copy of the run left to the allocator.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.hashes.reserve_exact(n);
        self.ords.reserve_exact(n);
    }

    /// Adds `ord` under `hash`. Ordinals are added in increasing order.
    pub(crate) fn insert(&mut self, hash: u64, ord: u32) {
        match self.recent.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.recent_more.push((hash, ord)),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(ord);
            }
        }
        let recent = self.recent.len() + self.recent_more.len();
        if recent >= RECENT_MIN.max(self.hashes.len() / 16) {
            self.merge();
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
    /// the run grown in place, so that no second copy of the run is made.
    fn merge(&mut self) {
        let mut recent: Vec<(u64, u32)> = self.recent.drain().collect();
        recent.append(&mut self.recent_more);
        if recent.is_empty() {
            return;
        }
        recent.sort_unstable();
        let (old, added) = (self.hashes.len(), recent.len());
        self.hashes.reserve_exact(added);
        self.ords.reserve_exact(added);
        self.hashes.resize(old + added, 0);
        self.ords.resize(old + added, 0);
        let (mut i, mut k) = (old, old + added);
        for &(hash, ord) in recent.iter().rev() {
            while i > 0 && (self.hashes[i - 1], self.ords[i - 1]) > (hash, ord) {
                i -= 1;
                k -= 1;
                self.hashes[k] = self.hashes[i];
                self.ords[k] = self.ords[i];
            }
            k -= 1;
            self.hashes[k] = hash;
            self.ords[k] = ord;
        }
        self.index_buckets();
    }

    /// Rebuilds [`buckets`](Self::buckets) for the run as it now is.
    fn index_buckets(&mut self) {
        let n = self.hashes.len();
        // About 8 entries a bucket; none below 64 entries, where the run is one bucket.
        self.bucket_bits = (n / 8).checked_ilog2().filter(|&b| b >= 3).unwrap_or(0);
        self.buckets.clear();
        if self.bucket_bits == 0 {
            return;
        }
        let count = 1usize << self.bucket_bits;
        self.buckets.reserve_exact(count + 1);
        let mut at = 0usize;
        for b in 0..count {
            while at < n && ((self.hashes[at] >> (64 - self.bucket_bits)) as usize) < b {
                at += 1;
            }
            self.buckets.push(at as u32);
        }
        self.buckets.push(n as u32);
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
