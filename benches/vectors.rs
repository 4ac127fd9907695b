//! Rows 3 and 5 of the peer comparison: our index's HNSW path (hnsw_rs inside cxr-index) on the
//! clustered vectors written by `benches/peers/vecdata.py`.
//!
//! Build: `IndexWriter::create` (the index's default HNSW parameters), `add` of every vector
//! (graph inserts in parallel batches, rayon's global pool), `commit` (files written and
//! fsync'd, graph dumped); the time of each part. Then `Index::open` (timed) once per ef of
//! `--efs` with `SearchOptions { ef_search: ef, exact_threshold: 0 }`, all queries run one
//! after another on one thread through `Index::search_vector`, recall@10 against the exact
//! top-10; the first ef reaching `--target` is measured again with all threads (rayon).
//!
//! With `--storage f16` the index stores binary16 vectors; it also reports the recall@10 of an
//! exact scan over them (the cost of the rounding alone, without the graph). With
//! `--placement huge-pages` readers open the index with `VectorPlacement::HugePages` (the rows
//! read into memory on 2 MiB pages instead of mapped).
//!
//! `run.sh` builds with `--build-only --keep` and searches in a second process with `--reuse`,
//! as a reader would. Searching in the process that had just built the graph measured that
//! process's state too: at 1M vectors 2 threads ran slower than 1 there (673 against 1,158
//! q/s), and scaled normally in a fresh process; the likely cause is the build's millions of
//! objects, freed by another thread than the one that allocated them.
//!
//! `cargo bench --bench vectors -- --data-dir DIR --n N --index-dir DIR [--efs 16,32,...]
//! [--storage f16] [--placement huge-pages] [--build-only] [--keep] [--reuse]`

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use cxr_index::{
    CreateOptions, Document, Index, IndexSpec, IndexWriter, SearchOptions, VectorPlacement,
    VectorStorage,
};
use rayon::prelude::*;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    n: usize,
    /// Where the index is built (removed first).
    #[arg(long)]
    index_dir: PathBuf,
    #[arg(
        long,
        default_value = "16,20,24,28,32,40,48,56,64,72,80,96,112,128,160,192,224,256,320,384,512"
    )]
    efs: String,
    #[arg(long, default_value_t = 0.95)]
    target: f64,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// How the index stores vectors: f32 or f16.
    #[arg(long, default_value = "f32")]
    storage: VectorStorage,
    /// How readers keep the vector rows: mapped (the default) or huge-pages.
    #[arg(long, default_value = "mapped", value_parser = parse_placement)]
    placement: VectorPlacement,
    /// Build (and keep) the index, then stop: the searches run in a later `--reuse` process.
    #[arg(long)]
    build_only: bool,
    /// Keep the index folder afterwards.
    #[arg(long)]
    keep: bool,
    /// Search an index a previous `--keep` run left in `--index-dir` instead of building one
    /// (for profiling the query path alone).
    #[arg(long)]
    reuse: bool,
    /// Rows per sealed segment (the label gets `-seg<N>`) [default: no sealing: one graph, as
    /// each peer builds one].
    #[arg(long)]
    segment_rows: Option<u64>,
    /// HNSW candidate list while inserting (the label gets `-efc<N>`) [default: the index's
    /// default, 200, as the peers are built].
    #[arg(long)]
    ef_construction: Option<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = common::VectorData::load(&args.data_dir, args.n)?;
    let dim = data.dim;
    let threads = common::threads();
    let mut options = CreateOptions {
        vector_storage: args.storage,
        segment_rows: args.segment_rows.unwrap_or(u64::MAX),
        ..CreateOptions::default()
    };
    if let Some(ef) = args.ef_construction {
        options.hnsw.ef_construction = ef;
    }
    let params = options.hnsw;
    let label = label(&args);
    let base = json!({
        "row": "vectors", "impl": label, "n": args.n, "dim": dim,
        "m": params.max_nb_connection, "ef_construction": params.ef_construction,
    });
    let line = |extra: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        common::emit(v);
    };

    if !args.reuse {
        build(&args, &data, options, &line)?;
    }
    if args.build_only {
        return Ok(());
    }

    let queries: Vec<&[f32]> = (0..data.query_count()).map(|i| data.query(i)).collect();
    if args.storage == VectorStorage::F16 {
        // The rounding's own cost: an exact scan over the stored rows, no graph.
        let index = Index::open(&args.index_dir)?;
        let found = queries
            .iter()
            .map(|q| {
                let hits = index.search_vector_exact(q, args.k)?;
                Ok(hits.into_iter().map(|h| h.ord).collect())
            })
            .collect::<Result<Vec<Vec<u32>>>>()?;
        let recall = data.recall(&found, args.k);
        let bytes = index
            .manifest()
            .files
            .vectors
            .as_ref()
            .map_or(0, |entry| entry.len);
        line(json!({"what": "exact", "threads": 1, "recall": recall,
            "vector_file_bytes": bytes}));
        eprintln!("{label} n={}: exact-scan recall {recall:.4}", args.n);
    }

    let run = |index: &Index, q: &[f32]| -> Vec<u32> {
        index
            .search_vector(q, args.k)
            .map(|hits| hits.into_iter().map(|h| h.ord).collect())
            .unwrap_or_default()
    };
    let mut chosen: Option<(usize, Index)> = None;
    for ef in args
        .efs
        .split(',')
        .filter_map(|e| e.trim().parse::<usize>().ok())
    {
        let options = SearchOptions {
            ef_search: ef,
            exact_threshold: 0,
            vector_placement: args.placement,
            ..SearchOptions::default()
        };
        let t = Instant::now();
        let index = Index::open_with(&args.index_dir, options)?;
        let open_s = t.elapsed().as_secs_f64();
        for q in queries.iter().take(10) {
            std::hint::black_box(run(&index, q));
        }
        let t = Instant::now();
        let found: Vec<Vec<u32>> = queries.iter().map(|q| run(&index, q)).collect();
        let secs = t.elapsed().as_secs_f64();
        let recall = data.recall(&found, args.k);
        let qps = queries.len() as f64 / secs;
        line(json!({"what": "search", "threads": 1, "ef": ef,
            "ef_effective": ef.max(2 * args.k), "recall": recall, "qps": qps,
            "open_seconds": open_s}));
        eprintln!(
            "{label} n={} ef={ef}: recall {recall:.4}, {qps:.0} q/s",
            args.n
        );
        if recall >= args.target {
            chosen = Some((ef, index));
            break;
        }
    }
    if let (Some((ef, index)), true) = (&chosen, threads > 1) {
        let t = Instant::now();
        let found: Vec<Vec<u32>> = queries.par_iter().map(|q| run(index, q)).collect();
        let secs = t.elapsed().as_secs_f64();
        line(json!({"what": "search", "threads": threads, "ef": ef,
            "recall": data.recall(&found, args.k), "qps": queries.len() as f64 / secs}));
    }
    drop(chosen);
    if !args.keep {
        std::fs::remove_dir_all(&args.index_dir).ok();
    }
    Ok(())
}

/// Builds the index in `--index-dir` (removed first) and reports the time of each part.
fn build(
    args: &Args,
    data: &common::VectorData,
    options: CreateOptions,
    line: &dyn Fn(serde_json::Value),
) -> Result<()> {
    let dim = data.dim;
    let threads = common::threads();
    let label = label(args);
    if args.index_dir.exists() {
        std::fs::remove_dir_all(&args.index_dir)
            .with_context(|| format!("removing {}", args.index_dir.display()))?;
    }
    let spec = IndexSpec {
        dim,
        model_fingerprint: "bench".into(),
        model_name: "bench-vectors".into(),
    };
    let start = Instant::now();
    let mut writer = IndexWriter::create_with(&args.index_dir, spec, options)?;
    for (i, v) in data.base.chunks_exact(dim).enumerate() {
        writer.add(Document {
            id: i.to_string(),
            vector: Some(v.to_vec()),
            ..Default::default()
        })?;
    }
    let added = start.elapsed().as_secs_f64();
    writer.commit()?;
    let total = start.elapsed().as_secs_f64();
    drop(writer);
    line(
        json!({"what": "build", "threads": threads, "seconds": total,
        "add_seconds": added, "commit_seconds": total - added}),
    );
    eprintln!("{label} n={}: build {total:.1}s (add {added:.1}s)", args.n);

    Ok(())
}

fn label(args: &Args) -> String {
    let base = match (args.storage, args.placement) {
        (VectorStorage::F32, VectorPlacement::Mapped) => "ours",
        (VectorStorage::F32, VectorPlacement::HugePages) => "ours-huge",
        (VectorStorage::F16, VectorPlacement::Mapped) => "ours-f16",
        (VectorStorage::F16, VectorPlacement::HugePages) => "ours-f16-huge",
    };
    let mut label = base.to_string();
    if let Some(rows) = args.segment_rows {
        label += &format!("-seg{rows}");
    }
    if let Some(ef) = args.ef_construction {
        label += &format!("-efc{ef}");
    }
    label
}

fn parse_placement(s: &str) -> Result<VectorPlacement, String> {
    match s {
        "mapped" => Ok(VectorPlacement::Mapped),
        "huge-pages" => Ok(VectorPlacement::HugePages),
        _ => Err(format!("unknown placement {s:?} (mapped or huge-pages)")),
    }
}
