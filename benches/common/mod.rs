//! Helpers shared by the bench programs of the peer comparison harness: timing, JSON lines,
//! and the raw little-endian `.f32` / `.i32` files the Rust and Python sides exchange.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The allocator `cxr` runs with (src/cli/main.rs), so that the benches measure what users run,
/// counting the heap it holds once a bench asks ([`count_heap`]).
#[global_allocator]
static ALLOCATOR: Counting<
    cxr_search::ingest::alloc_ceiling::CeilingAllocator<mimalloc::MiMalloc>,
> = Counting(cxr_search::ingest::alloc_ceiling::CeilingAllocator::new(
    mimalloc::MiMalloc,
));

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// An allocator that, while [`count_heap`] is on, adds the bytes it allocates to a counter and
/// takes away those it frees: the heap a structure holds, exactly, where the RSS moves by
/// megabytes with what the allocator caches. Off, it costs one relaxed load per call.
pub struct Counting<A>(A);

impl<A> Counting<A> {
    fn count(&self, bytes: usize, sign: isize) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(sign * bytes as isize, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call goes to the inner allocator unchanged; the counter is a side effect.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            self.count(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        self.count(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.count(new_size, 1);
            self.count(layout.size(), -1);
        }
        p
    }
}

/// Starts (or stops) counting the heap. Frees of blocks allocated before counting started are
/// counted too, so read [`live_heap_bytes`] as a difference between two points after it.
pub fn count_heap(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

/// The bytes allocated and not freed while counting was on.
pub fn live_heap_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Prints one JSON object as a line on stdout (what `benches/collect.py` reads).
pub fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// Runs `f` repeatedly until at least `min` has passed and at least `min_iters` calls were
/// made; returns (calls, elapsed seconds).
pub fn repeat_for(min: Duration, min_iters: usize, mut f: impl FnMut()) -> (usize, f64) {
    let start = Instant::now();
    let mut n = 0;
    while n < min_iters || start.elapsed() < min {
        f();
        n += 1;
    }
    (n, start.elapsed().as_secs_f64())
}

/// Reads a headerless little-endian f32 file.
pub fn read_f32(path: &Path) -> Result<Vec<f32>> {
    Ok(read_words(path)?
        .into_iter()
        .map(f32::from_le_bytes)
        .collect())
}

/// Reads a headerless little-endian i32 file.
pub fn read_i32(path: &Path) -> Result<Vec<i32>> {
    Ok(read_words(path)?
        .into_iter()
        .map(i32::from_le_bytes)
        .collect())
}

/// The 4-byte words of a headerless file.
fn read_words(path: &Path) -> Result<Vec<[u8; 4]>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() % 4 != 0 {
        bail!(
            "{}: length {} is not a multiple of 4",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect())
}

/// Writes a headerless little-endian f32 file.
pub fn write_f32(path: &Path, values: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The `q`-quantile (0..=1) of `values` (sorted here), nearest rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Threads of rayon's global pool (set with RAYON_NUM_THREADS by `benches/run.sh`).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Reads the first `count` values of a headerless little-endian f32 file.
pub fn read_f32_prefix(path: &Path, count: usize) -> Result<Vec<f32>> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = vec![0u8; count * 4];
    file.read_exact(&mut bytes)
        .with_context(|| format!("{}: fewer than {count} values", path.display()))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The vector data written by `benches/peers/vecdata.py`.
pub struct VectorData {
    pub dim: usize,
    pub base: Vec<f32>,
    pub queries: Vec<f32>,
    /// Exact top-k ids per query, `k` per row.
    pub truth: Vec<i32>,
    pub k: usize,
}

impl VectorData {
    pub fn load(dir: &Path, n: usize) -> Result<VectorData> {
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("meta.json")).context("reading meta.json")?,
        )?;
        let dim = meta["dim"].as_u64().context("meta.json: dim")? as usize;
        let k = meta["k"].as_u64().context("meta.json: k")? as usize;
        let base = read_f32_prefix(&dir.join("base.f32"), n * dim)?;
        let queries = read_f32(&dir.join("queries.f32"))?;
        let truth = read_i32(&dir.join(format!("gt-{n}.i32")))?;
        if truth.len() != queries.len() / dim * k {
            bail!("gt-{n}.i32 does not match queries.f32");
        }
        Ok(VectorData {
            dim,
            base,
            queries,
            truth,
            k,
        })
    }

    pub fn query_count(&self) -> usize {
        self.queries.len() / self.dim
    }

    pub fn query(&self, i: usize) -> &[f32] {
        &self.queries[i * self.dim..(i + 1) * self.dim]
    }

    /// recall@k of `found[i]` (ids) against the exact top-k, over all queries.
    pub fn recall(&self, found: &[Vec<u32>], k: usize) -> f64 {
        let mut hits = 0usize;
        for (i, f) in found.iter().enumerate() {
            let truth = &self.truth[i * self.k..i * self.k + k];
            hits += f.iter().filter(|id| truth.contains(&(**id as i32))).count();
        }
        hits as f64 / (found.len() * k) as f64
    }
}
