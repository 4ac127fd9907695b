//! Growable arrays of plain values that move into a memory-mapped scratch file once they pass a
//! size.
//!
//! An index writer lives as long as an archive is indexed and keeps a few numbers per
//! document (line offsets, vector rows, id hashes). On the heap those grow with the archive
//! and stay resident. In a shared mapping of a scratch file they are page cache instead: the
//! kernel writes dirty pages out and drops them under memory pressure, so the memory a writer
//! needs no longer grows with the archive, while lookups stay memory reads when memory is
//! plentiful (the way tantivy and qdrant keep their on-disk structures).
//!
//! The scratch file is unlinked from the start (`tempfile`), so nothing is left behind by a
//! crash and nothing in the index folder changes: it is a cache of what the docs parts hold.

use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use memmap2::MmapMut;

/// A value that is its bytes: any bit pattern of its size (all zeros included) is a valid
/// value, and it has no padding, so it can live in a mapped file as it is.
///
/// # Safety
///
/// Implement only for `Copy` types without padding bytes, without pointers or references,
/// for which every bit pattern is a valid value, and whose alignment divides the page size.
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

// SAFETY: primitive integers: no padding, every bit pattern valid.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}

/// An array spills to its file past this many bytes (1 MiB): below it the heap costs less
/// than a file and a mapping, above it the heap would grow with the archive.
pub const SPILL_BYTES: usize = 1 << 20;

/// A `Vec<T>` that moves into an unlinked, memory-mapped scratch file in a given folder once
/// it holds more than a given number of bytes. It dereferences to `[T]`; what can grow
/// (`push`, `resize`, `reserve_exact`) returns an I/O error where the file cannot grow.
pub struct ScratchVec<T: Plain> {
    store: Store<T>,
    /// Where to spill, and past how many bytes; `None`: the heap only.
    spill: Option<(Arc<Path>, usize)>,
}

enum Store<T> {
    Heap(Vec<T>),
    Mapped {
        /// Kept open for growth; the mapping does not need it otherwise.
        file: File,
        /// `None` until the file has a byte (an empty file cannot be mapped everywhere).
        map: Option<MmapMut>,
        len: usize,
        /// Values the file holds room for.
        cap: usize,
        _values: PhantomData<T>,
    },
}

impl<T: Plain> Default for ScratchVec<T> {
    fn default() -> Self {
        ScratchVec::new()
    }
}

impl<T: Plain> fmt::Debug for ScratchVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScratchVec")
            .field("len", &self.len())
            .field("mapped", &matches!(self.store, Store::Mapped { .. }))
            .finish()
    }
}

impl<T: Plain> ScratchVec<T> {
    /// An array that stays on the heap.
    pub fn new() -> ScratchVec<T> {
        ScratchVec {
            store: Store::Heap(Vec::new()),
            spill: None,
        }
    }

    /// An array that moves into a scratch file in `dir` once it would hold more than
    /// `at_bytes` bytes ([`SPILL_BYTES`] for the index's own tables).
    pub fn spilling(dir: Arc<Path>, at_bytes: usize) -> ScratchVec<T> {
        ScratchVec {
            store: Store::Heap(Vec::new()),
            spill: Some((dir, at_bytes)),
        }
    }

    /// Whether the values live in the scratch file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    /// Appends `value`, growing the array by doubling.
    pub fn push(&mut self, value: T) -> std::io::Result<()> {
        let len = self.len();
        self.grow_to(len + 1, true)?;
        if let Store::Heap(values) = &mut self.store {
            values.push(value);
        } else {
            self.set_len(len + 1);
            self[len] = value;
        }
        Ok(())
    }

    /// Makes room for `additional` more values, growing by doubling as `push` does, so that
    /// what follows within that room cannot fail.
    pub fn reserve(&mut self, additional: usize) -> std::io::Result<()> {
        self.grow_to(self.len() + additional, true)
    }

    /// Makes room for exactly `additional` more values, so that an array whose final size
    /// is known is allocated (or its file sized) once.
    pub fn reserve_exact(&mut self, additional: usize) -> std::io::Result<()> {
        self.grow_to(self.len() + additional, false)
    }

    /// Grows or shrinks the array to `new_len` values, new ones set to `value`.
    pub fn resize(&mut self, new_len: usize, value: T) -> std::io::Result<()> {
        let len = self.len();
        if new_len <= len {
            self.truncate(new_len);
            return Ok(());
        }
        self.grow_to(new_len, true)?;
        if let Store::Heap(values) = &mut self.store {
            values.resize(new_len, value);
        } else {
            self.set_len(new_len);
            self[len..].fill(value);
        }
        Ok(())
    }

    /// Keeps the first `len` values (no effect if there are fewer). The file keeps its size.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.set_len(len);
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the values for which `keep` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut kept = 0;
        for i in 0..self.len() {
            let value = self[i];
            if keep(&value) {
                self[kept] = value;
                kept += 1;
            }
        }
        self.truncate(kept);
    }

    /// Sets the length: on the heap only shorter (growth there is `Vec`'s own), in the file
    /// within its room, whose values are initialised (zeros, or written before).
    fn set_len(&mut self, new_len: usize) {
        match &mut self.store {
            Store::Heap(values) => values.truncate(new_len),
            Store::Mapped { len, cap, .. } => {
                debug_assert!(new_len <= *cap);
                *len = new_len;
            }
        }
    }

    /// Makes room for `need` values: on the heap until that passes the spill size, then in
    /// the file. With `double`, room grows to at least twice the current capacity.
    fn grow_to(&mut self, need: usize, double: bool) -> std::io::Result<()> {
        let bytes = need.saturating_mul(size_of::<T>());
        match &mut self.store {
            Store::Heap(values) => {
                let spill_dir = match &self.spill {
                    Some((dir, at)) if bytes > *at => dir.clone(),
                    _ => {
                        if need > values.capacity() {
                            let additional = need - values.len();
                            if double {
                                values.reserve(additional);
                            } else {
                                values.reserve_exact(additional);
                            }
                        }
                        return Ok(());
                    }
                };
                let cap = if double {
                    need.max(values.capacity() * 2)
                } else {
                    need
                };
                let file = tempfile::tempfile_in(&*spill_dir)?;
                let mut store = Store::Mapped {
                    file,
                    map: None,
                    len: 0,
                    cap: 0,
                    _values: PhantomData,
                };
                map_with_room(&mut store, cap)?;
                let old = std::mem::replace(&mut self.store, store);
                if let Store::Heap(values) = old {
                    self.set_len(values.len());
                    self.copy_from_slice(&values);
                }
                Ok(())
            }
            Store::Mapped { cap, .. } => {
                if need <= *cap {
                    return Ok(());
                }
                let room = if double { need.max(*cap * 2) } else { need };
                map_with_room(&mut self.store, room)
            }
        }
    }
}

/// Sizes a mapped store's file for `room` values and maps it again. The new bytes are written
/// (zeros), not left as a hole: blocks are allocated now, so a full disk is an error here
/// rather than a fault when a page of the mapping is first written.
fn map_with_room<T: Plain>(store: &mut Store<T>, room: usize) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let Store::Mapped { file, map, cap, .. } = store else {
        return Ok(());
    };
    let bytes = room
        .checked_mul(size_of::<T>())
        .ok_or_else(|| std::io::Error::other("scratch array too large"))?;
    let old = file.metadata()?.len();
    if (bytes as u64) > old {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        file.seek(SeekFrom::Start(old))?;
        let mut left = bytes as u64 - old;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            if let Err(e) = file.write_all(&ZEROS[..n]) {
                // Back to the size the mapping knows, so that a later try starts clean.
                file.set_len(old)?;
                return Err(e);
            }
            left -= n as u64;
        }
    }
    if bytes > 0 {
        // SAFETY: the file is unlinked and private to this value: nothing else maps or
        // changes it while the mappings live. The file only grew, so the new mapping holds
        // the old one's values; the old one is dropped once the new one exists.
        *map = Some(unsafe { MmapMut::map_mut(&*file)? });
    }
    *cap = room;
    Ok(())
}

impl<T: Plain> Deref for ScratchVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.store {
            Store::Heap(values) => values,
            Store::Mapped { map: None, .. } => &[],
            Store::Mapped {
                map: Some(map),
                len,
                ..
            } => {
                // SAFETY: the mapping is page-aligned (so aligned for `T`), holds `cap >= len`
                // values, and every bit pattern is a valid `T`.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<T>(), *len) }
            }
        }
    }
}

impl<T: Plain> DerefMut for ScratchVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.store {
            Store::Heap(values) => values,
            Store::Mapped { map: None, .. } => &mut [],
            Store::Mapped {
                map: Some(map),
                len,
                ..
            } => {
                // SAFETY: as in `deref`, and the mapping is borrowed mutably through `self`.
                unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<T>(), *len) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Arc<Path>) {
        let dir = tempfile::tempdir().unwrap();
        let path: Arc<Path> = Arc::from(dir.path());
        (dir, path)
    }

    #[test]
    fn spills_past_its_size_and_keeps_every_value() {
        let (_keep, path) = dir();
        let mut values = ScratchVec::<u64>::spilling(path.clone(), 64);
        for i in 0..8u64 {
            values.push(i * 3).unwrap();
        }
        assert!(!values.is_mapped(), "64 bytes fit on the heap");
        for i in 8..10_000u64 {
            values.push(i * 3).unwrap();
        }
        assert!(values.is_mapped());
        assert_eq!(values.len(), 10_000);
        assert!(values.iter().enumerate().all(|(i, &v)| v == i as u64 * 3));
        // The scratch file is unlinked: the folder stays empty.
        assert_eq!(std::fs::read_dir(&*path).unwrap().count(), 0);
    }

    #[test]
    fn resize_retain_and_reserve_behave_as_vec() {
        let (_keep, path) = dir();
        for spill_at in [0usize, 40, usize::MAX] {
            let mut ours = ScratchVec::<u32>::spilling(path.clone(), spill_at);
            let mut reference = Vec::new();
            ours.reserve_exact(5).unwrap();
            for i in 0..30u32 {
                ours.push(i).unwrap();
                reference.push(i);
            }
            ours.resize(50, 7).unwrap();
            reference.resize(50, 7);
            ours[3] = 99;
            reference[3] = 99;
            ours.retain(|&v| v % 2 == 1);
            reference.retain(|&v| v % 2 == 1);
            assert_eq!(&ours[..], &reference[..], "spill at {spill_at}");
            ours.resize(4, 0).unwrap();
            reference.truncate(4);
            assert_eq!(&ours[..], &reference[..]);
            ours.clear();
            assert!(ours.is_empty());
            ours.push(5).unwrap();
            assert_eq!(&ours[..], &[5]);
        }
    }

    #[test]
    fn a_missing_folder_is_an_error_not_a_panic() {
        let mut values = ScratchVec::<u64>::spilling(Arc::from(Path::new("no/such/dir")), 8);
        values.push(1).unwrap();
        assert!(values.push(2).is_err());
        assert_eq!(&values[..], &[1], "what was held is kept");
    }
}
