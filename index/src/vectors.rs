//! Vector rows: how they are normalised, written, memory-mapped and scanned exactly.
//!
//! Rows are little-endian f32, `dim` per row, no header: the manifest records the row count
//! and the reader checks `len == rows * dim * 4` before mapping, so a truncated or padded file
//! is reported as corrupt instead of being read past its end. Every stored vector has unit L2
//! norm (the writer normalises), which makes the dot product the cosine similarity.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::manifest::FileEntry;

/// Scales `v` to unit L2 norm. Fails (leaving `v` unspecified) on non-finite components or a
/// zero norm, with the reason as text.
pub(crate) fn normalize(v: &mut [f32]) -> std::result::Result<(), String> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("component {i} is {}", v[i]));
    }
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(format!("norm is {norm}"));
    }
    let inv = 1.0 / norm;
    for x in v.iter_mut() {
        *x = (f64::from(*x) * inv) as f32;
    }
    Ok(())
}

/// Dot product. On x86-64 CPUs with AVX2 and FMA (checked once, at run time) an 8-wide fused
/// multiply-add loop; elsewhere a loop the compiler vectorises for the baseline instruction set
/// (SSE2). Every caller goes through this one function, so graph search, exact scans and the
/// graph build agree on scores to the bit.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { dot_avx2_fma(a, b) };
        }
    }
    dot_portable(a, b)
}

/// Eight independent accumulators, so the compiler vectorises the loop without reordering a
/// single sum.
#[inline]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not checked yet, 1: no, 2: yes.
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let yes = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            STATE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        state => state == 2,
    }
}

/// Four 8-wide accumulators (32 floats a step) with fused multiply-add; the compiler emits
/// `vfmadd` for `mul_add` under these target features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(*y, tail);
    }
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut lanes = [0f32; 8];
    for (i, v) in acc.iter().enumerate() {
        lanes[i % 8] += v;
    }
    lanes.iter().sum::<f32>() + tail
}

/// Asks the CPU to start loading `v` into cache: the graph walk prefetches a node's unvisited
/// neighbours before computing their distances, so the loads overlap (as hnswlib does).
#[inline]
pub(crate) fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // A cache line is 64 bytes (16 floats); the first few lines start the hardware
        // prefetcher on the rest.
        for line in v.chunks(16).take(4) {
            // SAFETY: prefetching is a hint and never faults; the pointer is to live data.
            unsafe { _mm_prefetch(line.as_ptr().cast::<i8>(), _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Writes `data` (rows * dim floats) as generation file `name`.
pub(crate) fn write(dir: &Path, name: &str, data: &[f32]) -> Result<FileEntry> {
    fsio::write_synced(dir, name, |out: &mut dyn Write| {
        let mut buf = Vec::with_capacity(4 * 4096);
        for chunk in data.chunks(4096) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            out.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Checks the file length against the expected row count; the error names the file.
fn check_len(path: &Path, found: u64, rows: u64, dim: usize) -> Result<()> {
    let expected = rows * dim as u64 * 4;
    if found != expected {
        return Err(IndexError::corrupt(
            path,
            format!(
                "vector file is {found} bytes, expected {expected} ({rows} rows x {dim} dims x 4 bytes)"
            ),
        ));
    }
    Ok(())
}

/// Reads a vector file whole into memory (the writer needs to own its rows to rewrite them).
pub(crate) fn read_all(dir: &Path, entry: &FileEntry, rows: u64, dim: usize) -> Result<Vec<f32>> {
    let path = dir.join(&entry.name);
    let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
    check_len(&path, bytes.len() as u64, rows, dim)?;
    fsio::verify(dir, entry, &bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Read-only, memory-mapped vector rows of one generation.
#[derive(Debug)]
pub(crate) struct VectorStore {
    map: Option<Mmap>,
    dim: usize,
    rows: usize,
}

impl VectorStore {
    /// No rows (an index without vectors has no vector file, and empty files cannot be mapped).
    pub(crate) fn empty(dim: usize) -> VectorStore {
        VectorStore {
            map: None,
            dim,
            rows: 0,
        }
    }

    /// Maps `entry` and checks its length and CRC-32 against the manifest.
    pub(crate) fn open(
        dir: &Path,
        entry: &FileEntry,
        rows: u64,
        dim: usize,
    ) -> Result<VectorStore> {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let len = file.metadata().map_err(IndexError::io(&path))?.len();
        check_len(&path, len, rows, dim)?;
        if rows == 0 {
            return Ok(VectorStore::empty(dim));
        }
        // SAFETY: generation files are written once and never modified afterwards (a commit
        // writes new files); the map is read-only. A foreign process truncating the file would
        // break this, as for any memory-mapped reader.
        let map = unsafe { Mmap::map(&file) }.map_err(IndexError::io(&path))?;
        fsio::verify(dir, entry, &map)?;
        if cfg!(target_endian = "big") {
            return Err(IndexError::corrupt(
                &path,
                "little-endian vector files are not supported on big-endian machines",
            ));
        }
        // SAFETY: any bit pattern is a valid f32; align_to only yields the aligned middle.
        let (head, _, _) = unsafe { map.align_to::<f32>() };
        if !head.is_empty() {
            return Err(IndexError::corrupt(
                &path,
                "memory map is not 4-byte aligned",
            ));
        }
        Ok(VectorStore {
            map: Some(map),
            dim,
            rows: rows as usize,
        })
    }

    /// All rows as one slice.
    pub(crate) fn as_slice(&self) -> &[f32] {
        match &self.map {
            // SAFETY: see `open`: alignment and length were checked there.
            Some(map) => unsafe { map.align_to::<f32>().1 },
            None => &[],
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn row(&self, row: usize) -> Option<&[f32]> {
        (row < self.rows).then(|| &self.as_slice()[row * self.dim..(row + 1) * self.dim])
    }
}

/// A (score, row) pair ordered so that a `BinaryHeap` of them pops the *worst* first: lower
/// score is "greater"; among equal scores the higher row is "greater". Keeping the k best in
/// such a heap gives a deterministic top-k.
#[derive(Clone, Copy, Debug)]
struct Worst(f32, u32);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// Exact top-k by dot product over `data` (rows of `dim`), restricted to rows for which `keep`
/// holds. Returns (row, score), best first.
pub(crate) fn top_k_exact(
    data: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    mut keep: impl FnMut(usize) -> bool,
) -> Vec<(usize, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    for (row, v) in data.chunks_exact(dim).enumerate() {
        if !keep(row) {
            continue;
        }
        let cand = Worst(dot(query, v), row as u32);
        if heap.len() < k {
            heap.push(cand);
        } else if heap.peek().is_some_and(|worst| cand < *worst) {
            heap.pop();
            heap.push(cand);
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|Worst(score, row)| (row as usize, score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_bad_vectors() {
        assert!(normalize(&mut [0.0, 0.0]).is_err());
        assert!(normalize(&mut [1.0, f32::NAN]).is_err());
        assert!(normalize(&mut [f32::INFINITY, 0.0]).is_err());
        let mut v = [3.0, 4.0];
        normalize(&mut v).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn dot_matches_naive() {
        for n in [0, 5, 37, 64, 100, 256] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.01).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4, "n {n}");
            assert!(
                (f64::from(dot_portable(&a, &b)) - naive).abs() < 1e-4,
                "n {n}"
            );
        }
    }

    #[test]
    fn top_k_is_sorted_and_deterministic() {
        // rows: scores against q=[1,0] are 0.5, 1.0, 0.5, -1.0
        let data = [0.5, 0.0, 1.0, 0.0, 0.5, 0.0, -1.0, 0.0];
        let got = top_k_exact(&data, 2, &[1.0, 0.0], 3, |_| true);
        assert_eq!(got, vec![(1, 1.0), (0, 0.5), (2, 0.5)]);
        let filtered = top_k_exact(&data, 2, &[1.0, 0.0], 10, |r| r != 1);
        assert_eq!(filtered, vec![(0, 0.5), (2, 0.5), (3, -1.0)]);
        assert!(top_k_exact(&data, 2, &[1.0, 0.0], 0, |_| true).is_empty());
    }

    #[test]
    fn write_then_map() {
        let dir = tempfile::tempdir().unwrap();
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let entry = write(dir.path(), "vectors-1.f32", &data).unwrap();
        let store = VectorStore::open(dir.path(), &entry, 2, 3).unwrap();
        assert_eq!(store.row(1), Some(&[4.0f32, 5.0, 6.0][..]));
        assert_eq!(store.row(2), None);
        assert_eq!(read_all(dir.path(), &entry, 2, 3).unwrap(), data);
        let err = VectorStore::open(dir.path(), &entry, 3, 3).unwrap_err();
        assert!(err.to_string().contains("vectors-1.f32"), "{err}");
    }
}
