//! Vector rows: how they are normalised, written, memory-mapped and scanned exactly.
//!
//! Rows are little-endian f32 or IEEE binary16 ([`VectorStorage`]), `dim` per row, no header:
//! the manifest records the row count and the encoding, and the reader checks
//! `len == rows * dim * bytes` before mapping, so a truncated or padded file is reported as
//! corrupt instead of being read past its end. Every stored vector has unit L2 norm (the writer
//! normalises, then rounds to the storage precision), which makes the dot product the cosine
//! similarity.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use half::f16;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::manifest::FileEntry;

/// How vector components are stored: chosen when an index is created, fixed for its life.
///
/// `F16` halves the vector file, and so the memory a reader maps and touches per query, for
/// about three significant decimal digits per component (relative error at most 2^-11). Queries
/// stay f32; every score is computed in f32 from the widened components. The hnsw_rs graph dump
/// that writers reload keeps its own f32 copy of the (rounded) vectors, so the folder as a whole
/// shrinks by less than the vector file does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VectorStorage {
    /// 4 bytes a component.
    #[default]
    F32,
    /// 2 bytes a component (IEEE 754 binary16).
    F16,
}

impl VectorStorage {
    /// Bytes one component takes on disk.
    pub fn bytes_per_component(self) -> usize {
        match self {
            VectorStorage::F32 => 4,
            VectorStorage::F16 => 2,
        }
    }

    /// Rounds `v` to the values this storage holds, so that the writer's rows (from which it
    /// builds the graph) are exactly the rows readers will map.
    pub(crate) fn round(self, v: &mut [f32]) {
        if self == VectorStorage::F16 {
            for x in v {
                *x = f16::from_f32(*x).to_f32();
            }
        }
    }
}

impl std::fmt::Display for VectorStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VectorStorage::F32 => "f32",
            VectorStorage::F16 => "f16",
        })
    }
}

impl std::str::FromStr for VectorStorage {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "f32" => Ok(VectorStorage::F32),
            "f16" => Ok(VectorStorage::F16),
            other => Err(format!("unknown vector storage `{other}` (f32 or f16)")),
        }
    }
}

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

#[inline]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_portable_widened(a, b, |y| y)
}

/// Eight independent accumulators, so the compiler vectorises the loop without reordering a
/// single sum; `widen` turns a row component into f32 (the identity for f32 rows).
#[inline]
fn dot_portable_widened<T: Copy>(a: &[f32], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, &y)| x * widen(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * widen(y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Whether the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::atomic::AtomicU8;
    static STATE: AtomicU8 = AtomicU8::new(0);
    detected_once(&STATE, || {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    })
}

/// Whether the CPU has F16C (half-precision conversion).
#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    use std::sync::atomic::AtomicU8;
    static STATE: AtomicU8 = AtomicU8::new(0);
    detected_once(&STATE, || is_x86_feature_detected!("f16c"))
}

/// `detect()`, run once and remembered in `state` (0: not checked yet, 1: no, 2: yes), so the
/// dot product's dispatch costs one relaxed load.
#[cfg(target_arch = "x86_64")]
fn detected_once(state: &std::sync::atomic::AtomicU8, detect: impl FnOnce() -> bool) -> bool {
    use std::sync::atomic::Ordering;
    match state.load(Ordering::Relaxed) {
        0 => {
            let yes = detect();
            state.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        state => state == 2,
    }
}

/// The reduction both AVX2 kernels end with: the four accumulators added lane-wise (first to
/// last), the eight lanes summed in order, then the tail. One order, so f32 and f16 rows score
/// alike to the bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_accumulators(acc: [std::arch::x86_64::__m256; 4], tail: f32) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_storeu_ps};
    let folded = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), acc[2]), acc[3]);
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight floats; the store is unaligned.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), folded) };
    lanes.iter().sum::<f32>() + tail
}

/// Four 8-wide accumulators (32 floats a step) with fused multiply-add, written with
/// intrinsics: left to the auto-vectoriser, a `[f32; 32]` accumulator became sixteen 2-wide
/// registers and spills, four times the instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps};
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let mut tail = 0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(*y, tail);
    }
    let mut acc = [_mm256_setzero_ps(); 4];
    for (x, y) in ca.zip(cb) {
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `x` and `y` hold 32 floats, so each 8-wide load at 8 * i is in bounds;
            // the loads are unaligned.
            unsafe {
                let (xv, yv) = (
                    _mm256_loadu_ps(x.as_ptr().add(8 * i)),
                    _mm256_loadu_ps(y.as_ptr().add(8 * i)),
                );
                *acc = _mm256_fmadd_ps(xv, yv, *acc);
            }
        }
    }
    sum_accumulators(acc, tail)
}

/// Dot product of an f32 query with a binary16 row. The same arithmetic, in the same order, as
/// [`dot`] over the row widened to f32 (widening is exact), so an f16 index scores a pair
/// exactly as the writer did when it built the graph from the rounded rows.
#[inline]
pub(crate) fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() && has_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
            return unsafe { dot_f16_avx2_fma(a, b) };
        }
    }
    dot_f16_portable(a, b)
}

/// [`dot_portable`] with each row component widened from binary16.
#[inline]
fn dot_f16_portable(a: &[f32], b: &[u16]) -> f32 {
    dot_portable_widened(a, b, |h| f16::from_bits(h).to_f32())
}

/// [`dot_avx2_fma`] with each 8-wide block of row components widened by F16C (`vcvtph2ps`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2_fma(a: &[f32], b: &[u16]) -> f32 {
    use std::arch::x86_64::{
        __m128i, _mm256_cvtph_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm_loadu_si128,
    };
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let mut tail = 0f32;
    for (x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(f16::from_bits(y).to_f32(), tail);
    }
    let mut acc = [_mm256_setzero_ps(); 4];
    for (x, y) in ca.zip(cb) {
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `x` holds 32 floats and `y` 32 u16s, so each 8-wide load at 8 * i is in
            // bounds; the loads are unaligned.
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(8 * i));
                let halves = _mm_loadu_si128(y.as_ptr().add(8 * i).cast::<__m128i>());
                *acc = _mm256_fmadd_ps(xv, _mm256_cvtph_ps(halves), *acc);
            }
        }
    }
    sum_accumulators(acc, tail)
}

/// Asks the CPU to start loading `v` into cache: the graph walk prefetches a node's unvisited
/// neighbours before computing their distances, so the loads overlap (as hnswlib does).
#[inline]
pub(crate) fn prefetch<T>(v: &[T]) {
    prefetch_lines(v, 0, HEAD_LINES);
}

/// Cache lines of a row that [`prefetch`] asks for: the first few, enough to start the
/// hardware prefetcher on the rest without filling the line-fill buffers with every
/// neighbour's whole row.
const HEAD_LINES: usize = 4;

/// Lines `skip..skip + take` (of 64 bytes) of `v`.
#[inline]
fn prefetch_lines<T>(v: &[T], skip: usize, take: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let per_line = (64 / std::mem::size_of::<T>().max(1)).max(1);
        for line in v.chunks(per_line).skip(skip).take(take) {
            // SAFETY: prefetching is a hint and never faults; the pointer is to live data.
            unsafe { _mm_prefetch(line.as_ptr().cast::<i8>(), _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, skip, take);
}

/// Writes generation file `name`: the first `rows` rows of the committed vector file `entry`
/// (copied block by block, their CRC-32 checked against the manifest on the way, so a damaged
/// file is never carried into a new generation under a fresh checksum), then `pending` (rows
/// of `dim` floats, already rounded to `storage`).
pub(crate) fn write(
    dir: &Path,
    name: &str,
    prefix: Option<(&FileEntry, usize)>,
    pending: &[f32],
    dim: usize,
    storage: VectorStorage,
) -> Result<FileEntry> {
    let source = match prefix {
        Some((entry, rows)) => {
            let path = dir.join(&entry.name);
            check_len(&path, entry.len, rows as u64, dim, storage)?;
            Some((entry, path))
        }
        None => None,
    };
    // (length, CRC-32) of the bytes copied from `source`.
    let mut copied = None;
    let written = fsio::write_synced(dir, name, |out: &mut dyn Write| {
        if let Some((entry, path)) = &source {
            let file = File::open(path)?;
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file).take(entry.len);
            let mut tee = fsio::CrcWriter::new(&mut *out);
            let len = std::io::copy(&mut reader, &mut tee)?;
            copied = Some((len, tee.crc32()));
        }
        let mut buf = Vec::with_capacity(4 * 4096);
        for chunk in pending.chunks(4096) {
            buf.clear();
            match storage {
                VectorStorage::F32 => {
                    for x in chunk {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                }
                VectorStorage::F16 => {
                    for x in chunk {
                        buf.extend_from_slice(&f16::from_f32(*x).to_le_bytes());
                    }
                }
            }
            out.write_all(&buf)?;
        }
        Ok(())
    })?;
    if let (Some((entry, path)), Some((len, crc))) = (&source, copied) {
        // The new file is left unnamed by any manifest (and removed later) if this fails.
        fsio::check_entry(path, entry, len, crc)?;
    }
    Ok(written)
}

/// Checks a committed vector file's length and CRC-32 without holding it in memory.
pub(crate) fn check_file(
    dir: &Path,
    entry: &FileEntry,
    rows: u64,
    dim: usize,
    storage: VectorStorage,
) -> Result<()> {
    check_len(&dir.join(&entry.name), entry.len, rows, dim, storage)?;
    fsio::verify_file(dir, entry)
}

/// Decodes a whole vector file's bytes into f32 components (widening binary16 exactly).
pub(crate) fn decode(bytes: &[u8], storage: VectorStorage) -> Vec<f32> {
    match storage {
        VectorStorage::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        VectorStorage::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// Checks the file length against the expected row count; the error names the file.
fn check_len(path: &Path, found: u64, rows: u64, dim: usize, storage: VectorStorage) -> Result<()> {
    let bytes = storage.bytes_per_component() as u64;
    let expected = rows * dim as u64 * bytes;
    if found != expected {
        return Err(IndexError::corrupt(
            path,
            format!(
                "vector file is {found} bytes, expected {expected} ({rows} rows x {dim} dims x \
                 {bytes} bytes, {storage})"
            ),
        ));
    }
    Ok(())
}

/// Reads a vector file whole into memory (the writer needs to own its rows to rewrite them).
pub(crate) fn read_all(
    dir: &Path,
    entry: &FileEntry,
    rows: u64,
    dim: usize,
    storage: VectorStorage,
) -> Result<Vec<f32>> {
    let path = dir.join(&entry.name);
    let bytes = std::fs::read(&path).map_err(IndexError::io(&path))?;
    check_len(&path, bytes.len() as u64, rows, dim, storage)?;
    fsio::verify(dir, entry, &bytes)?;
    Ok(decode(&bytes, storage))
}

/// Rows of `dim` components, f32 or binary16, scored against f32 queries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowView<'a> {
    data: RowData<'a>,
    dim: usize,
}

#[derive(Clone, Copy, Debug)]
enum RowData<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl<'a> RowView<'a> {
    /// f32 rows held in memory.
    #[cfg(test)]
    pub(crate) fn f32(data: &'a [f32], dim: usize) -> RowView<'a> {
        RowView {
            data: RowData::F32(data),
            dim,
        }
    }

    /// Number of rows.
    pub(crate) fn rows(&self) -> usize {
        match self.data {
            RowData::F32(d) => d.len() / self.dim.max(1),
            RowData::F16(d) => d.len() / self.dim.max(1),
        }
    }

    /// `query` · row `row`. Panics if `row` is out of range (callers index rows they were
    /// given by the graph or by `0..rows()`).
    #[inline]
    pub(crate) fn dot(&self, query: &[f32], row: usize) -> f32 {
        let range = row * self.dim..(row + 1) * self.dim;
        match self.data {
            RowData::F32(d) => dot(query, &d[range]),
            RowData::F16(d) => dot_f16(query, &d[range]),
        }
    }

    #[inline]
    pub(crate) fn prefetch(&self, row: usize) {
        let range = row * self.dim..(row + 1) * self.dim;
        match self.data {
            RowData::F32(d) => prefetch(&d[range]),
            RowData::F16(d) => prefetch(&d[range]),
        }
    }

    /// The rest of a row after [`Self::prefetch`]'s first lines: asked for one row ahead of
    /// the distance that reads it.
    #[inline]
    pub(crate) fn prefetch_rest(&self, row: usize) {
        let range = row * self.dim..(row + 1) * self.dim;
        match self.data {
            RowData::F32(d) => prefetch_lines(&d[range], HEAD_LINES, usize::MAX),
            RowData::F16(d) => prefetch_lines(&d[range], HEAD_LINES, usize::MAX),
        }
    }

    /// Row `row` as f32 components (borrowed when stored as f32).
    pub(crate) fn row(&self, row: usize) -> Option<Cow<'a, [f32]>> {
        if row >= self.rows() {
            return None;
        }
        let range = row * self.dim..(row + 1) * self.dim;
        Some(match self.data {
            RowData::F32(d) => Cow::Borrowed(&d[range]),
            RowData::F16(d) => Cow::Owned(
                d[range]
                    .iter()
                    .map(|&h| f16::from_bits(h).to_f32())
                    .collect(),
            ),
        })
    }
}

/// Where a reader keeps the vector rows it searches.
///
/// A graph walk reads rows in no order, one or two per 4 KiB page of the file, so at a million
/// rows of dimension 256 (a 1 GB file) most distance computations also miss the TLB. Reading
/// the file into private memory on 2 MiB pages (Linux transparent huge pages, requested with
/// `madvise`) removes most of those misses: on the growth bench's 1M vectors it raised
/// single-thread queries/s by about a fifth, measured against the plain map in alternating
/// runs (`benches/README.md`). It costs the read at open (about a second per GB) and private
/// memory the size of the file, where the map shares the page cache; so it is for
/// long-running readers of large indexes, and the map stays the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VectorPlacement {
    /// Map the file: opens at once, shares the page cache.
    #[default]
    Mapped,
    /// Read the file into anonymous memory with huge pages requested (plain pages where the
    /// system has none to give).
    HugePages,
}

/// Reads the first `len` bytes of `file` into a fresh anonymous map, asking for huge pages
/// before any page is touched, and returns it read-only.
fn read_into_huge_pages(file: &File, len: u64) -> std::io::Result<Mmap> {
    use std::io::Read;
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut anon = memmap2::MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    {
        // Only a hint: without transparent huge pages the copy still works on small pages.
        let _ = anon.advise(memmap2::Advice::HugePage);
    }
    let mut reader = file;
    reader.read_exact(&mut anon)?;
    anon.make_read_only()
}

/// Read-only vector rows of one generation, memory-mapped or read into private memory.
#[derive(Debug)]
pub(crate) struct VectorStore {
    map: Option<Mmap>,
    dim: usize,
    rows: usize,
    storage: VectorStorage,
}

impl VectorStore {
    /// No rows (an index without vectors has no vector file, and empty files cannot be mapped).
    pub(crate) fn empty(dim: usize) -> VectorStore {
        VectorStore {
            map: None,
            dim,
            rows: 0,
            storage: VectorStorage::F32,
        }
    }

    /// Maps (or, for [`VectorPlacement::HugePages`], reads) `entry` and checks its length and
    /// CRC-32 against the manifest.
    pub(crate) fn open(
        dir: &Path,
        entry: &FileEntry,
        rows: u64,
        dim: usize,
        storage: VectorStorage,
        placement: VectorPlacement,
    ) -> Result<VectorStore> {
        let path = dir.join(&entry.name);
        let file = File::open(&path).map_err(IndexError::io(&path))?;
        let len = file.metadata().map_err(IndexError::io(&path))?.len();
        check_len(&path, len, rows, dim, storage)?;
        if rows == 0 {
            return Ok(VectorStore::empty(dim));
        }
        // SAFETY: generation files are written once and never modified afterwards (a commit
        // writes new files); the map is read-only. A foreign process truncating the file would
        // break this, as for any memory-mapped reader.
        let map = unsafe { Mmap::map(&file) }.map_err(IndexError::io(&path))?;
        let map = if placement == VectorPlacement::HugePages {
            read_into_huge_pages(&file, len).map_err(IndexError::io(&path))?
        } else {
            map
        };
        fsio::verify(dir, entry, &map)?;
        if cfg!(target_endian = "big") {
            return Err(IndexError::corrupt(
                &path,
                "little-endian vector files are not supported on big-endian machines",
            ));
        }
        // A page-aligned map is aligned for both encodings; checked all the same.
        if map.as_ptr().align_offset(4) != 0 {
            return Err(IndexError::corrupt(
                &path,
                "memory map is not 4-byte aligned",
            ));
        }
        Ok(VectorStore {
            map: Some(map),
            dim,
            rows: rows as usize,
            storage,
        })
    }

    /// All rows, for scoring.
    pub(crate) fn view(&self) -> RowView<'_> {
        let data = match (&self.map, self.storage) {
            // SAFETY: any bit pattern is a valid f32 or u16; `open` checked the alignment and
            // the length (a whole number of rows), so the aligned middle is the whole map.
            (Some(map), VectorStorage::F32) => RowData::F32(unsafe { map.align_to::<f32>().1 }),
            (Some(map), VectorStorage::F16) => RowData::F16(unsafe { map.align_to::<u16>().1 }),
            (None, _) => RowData::F32(&[]),
        };
        RowView {
            data,
            dim: self.dim,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
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

/// Exact top-k by dot product over the rows of `view`, restricted to rows for which `keep`
/// holds. Returns (row, score), best first.
pub(crate) fn top_k_exact(
    view: RowView<'_>,
    query: &[f32],
    k: usize,
    mut keep: impl FnMut(usize) -> bool,
) -> Vec<(usize, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    for row in 0..view.rows() {
        if !keep(row) {
            continue;
        }
        let cand = Worst(view.dot(query, row), row as u32);
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
        let view = RowView::f32(&data, 2);
        let got = top_k_exact(view, &[1.0, 0.0], 3, |_| true);
        assert_eq!(got, vec![(1, 1.0), (0, 0.5), (2, 0.5)]);
        let filtered = top_k_exact(view, &[1.0, 0.0], 10, |r| r != 1);
        assert_eq!(filtered, vec![(0, 0.5), (2, 0.5), (3, -1.0)]);
        assert!(top_k_exact(view, &[1.0, 0.0], 0, |_| true).is_empty());
    }

    #[test]
    fn write_then_map() {
        let dir = tempfile::tempdir().unwrap();
        let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let entry = write(
            dir.path(),
            "vectors-1.f32",
            None,
            &data,
            3,
            VectorStorage::F32,
        )
        .unwrap();
        let store = VectorStore::open(
            dir.path(),
            &entry,
            2,
            3,
            VectorStorage::F32,
            VectorPlacement::Mapped,
        )
        .unwrap();
        assert_eq!(
            store.view().row(1).as_deref(),
            Some(&[4.0f32, 5.0, 6.0][..])
        );
        assert_eq!(store.view().row(2), None);
        let read = read_all(dir.path(), &entry, 2, 3, VectorStorage::F32).unwrap();
        assert_eq!(read, data);
        let err = VectorStore::open(
            dir.path(),
            &entry,
            3,
            3,
            VectorStorage::F32,
            VectorPlacement::Mapped,
        )
        .unwrap_err();
        assert!(err.to_string().contains("vectors-1.f32"), "{err}");
    }

    #[test]
    fn rows_read_into_huge_pages_are_the_mapped_rows() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin()).collect();
        let entry = write(
            dir.path(),
            "vectors-1.f32",
            None,
            &data,
            30,
            VectorStorage::F32,
        )
        .unwrap();
        let open = |placement| {
            VectorStore::open(dir.path(), &entry, 100, 30, VectorStorage::F32, placement).unwrap()
        };
        let (mapped, read) = (
            open(VectorPlacement::Mapped),
            open(VectorPlacement::HugePages),
        );
        for row in [0, 1, 57, 99] {
            assert_eq!(mapped.view().row(row), read.view().row(row));
        }
        assert_eq!(read.view().row(100), None);
        // The copy is checked against the manifest like the map.
        let mut bytes = std::fs::read(dir.path().join("vectors-1.f32")).unwrap();
        bytes[40] ^= 1;
        std::fs::write(dir.path().join("vectors-1.f32"), bytes).unwrap();
        let err = VectorStore::open(
            dir.path(),
            &entry,
            100,
            30,
            VectorStorage::F32,
            VectorPlacement::HugePages,
        )
        .unwrap_err();
        assert!(err.to_string().contains("vectors-1.f32"), "{err}");
    }

    #[test]
    fn f16_rows_are_half_the_size_and_read_back_as_rounded() {
        let dir = tempfile::tempdir().unwrap();
        // 0.1 is not a binary16 value; 1.5 and -2.0 are.
        let mut data = [0.1f32, 1.5, -2.0, 3.0e-5, 0.333, 4.0];
        VectorStorage::F16.round(&mut data);
        assert_ne!(data[0], 0.1);
        assert!((data[0] - 0.1).abs() <= 0.1 * 2f32.powi(-11));
        assert_eq!(data[1..3], [1.5, -2.0]);
        let entry = write(
            dir.path(),
            "vectors-1.f16",
            None,
            &data,
            3,
            VectorStorage::F16,
        )
        .unwrap();
        assert_eq!(entry.len, 12);
        let store = VectorStore::open(
            dir.path(),
            &entry,
            2,
            3,
            VectorStorage::F16,
            VectorPlacement::HugePages,
        )
        .unwrap();
        assert_eq!(store.view().row(1).as_deref(), Some(&data[3..]));
        let read = read_all(dir.path(), &entry, 2, 3, VectorStorage::F16).unwrap();
        assert_eq!(read, data);
        // The same file read as f32 is the wrong length, and says so.
        let err = VectorStore::open(
            dir.path(),
            &entry,
            2,
            3,
            VectorStorage::F32,
            VectorPlacement::Mapped,
        )
        .unwrap_err();
        assert!(err.to_string().contains("f32"), "{err}");
    }

    #[test]
    fn f16_dot_equals_f32_dot_of_the_widened_row() {
        for n in [0, 5, 31, 32, 37, 64, 100, 128, 768] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let halves: Vec<u16> = (0..n)
                .map(|i| f16::from_f32((i as f32 * 0.11).cos()).to_bits())
                .collect();
            let wide: Vec<f32> = halves.iter().map(|&h| f16::from_bits(h).to_f32()).collect();
            // Bit for bit: an f16 index scores as the writer did on the rounded f32 rows.
            assert_eq!(
                dot_f16(&a, &halves).to_bits(),
                dot(&a, &wide).to_bits(),
                "n {n}"
            );
            assert_eq!(
                dot_f16_portable(&a, &halves).to_bits(),
                dot_portable(&a, &wide).to_bits(),
                "n {n}"
            );
        }
    }
}
