//! Row 4 (query side) of the peer comparison: index open time and text-query latency on a
//! large index.
//!
//! The index is built through cxr-index's API, not by `cxr index`, so the model is not the
//! bottleneck: `--n` documents, each with a vector from `benches/peers/vecdata.py`'s clustered
//! set and a report made of 2 to 6 sentences drawn (seeded) from the IU reports, a `view`
//! field, and the fingerprint of `--model`, so that the real query path works on it. Then:
//! `Index::open` (median of several, page cache warm), and per query text (the dev queries of
//! `../shared/bench`), p50 and p99 of: the full text query (`Searcher::search_text`: embed the
//! query, HNSW search, BM25, fusion), and its parts (embedding, BM25 alone, vector alone), and
//! the full text query with a filter that keeps half the documents (`view=PA`).
//!
//! With `--images DIR`, each document also gets a `path` field naming one of DIR's images (in
//! turn), as `cxr index` stores it, and the text query is measured again with the second stage
//! (`--rerank` of `cxr search`: `search::rerank` over the top `--rerank-depth` hits, which
//! decodes each candidate's image again and runs the image tower and the Q-Former on it). The
//! reranker is `--reranker DIR`, or else one of the shape `cxr train-reranker` trains by
//! default for `--model` with seeded, untrained weights (written next to the index): its cost
//! does not depend on what the weights learnt. With `--images` the process sets up its threads
//! as `cxr search --rerank` does (`model::threads::one_thread_per_product`), for both stages.
//!
//! `cargo bench --bench query -- --data-dir DIR --n N --model DIR --reports FILE
//!  --queries FILE --index-dir DIR [--reuse] [--images DIR [--reranker DIR]]`

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;
use cxr_index::{Document, Index, IndexSpec, IndexWriter};
use cxr_search::model::DualEncoder;
use cxr_search::rerank::train::{config_for, RerankTrainer};
use cxr_search::rerank::Reranker;
use cxr_search::search::rerank::PATH_FIELD;
use cxr_search::search::{self, SearchOptions, Searcher};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    #[arg(long)]
    model: PathBuf,
    /// IU reports (JSON lines with findings and impression): the sentence pool.
    #[arg(long)]
    reports: PathBuf,
    /// Query texts (JSON lines with a `text` field).
    #[arg(long)]
    queries: PathBuf,
    #[arg(long)]
    index_dir: PathBuf,
    /// Keep an existing index folder built for the same size and model.
    #[arg(long)]
    reuse: bool,
    /// Passes over the query set.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Folder of images the documents point to (`path` field), for the reranked query.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Reranker folder [default: a seeded, untrained one of the default shape].
    #[arg(long, requires = "images")]
    reranker: Option<PathBuf>,
    /// Hits reranked per query (`cxr search --rerank N`).
    #[arg(long, default_value_t = 20)]
    rerank_depth: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// SplitMix64: a small seeded generator, so every run builds the same index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn sentences(reports: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for line in reports.lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("parsing a report line")?;
        for key in ["findings", "impression"] {
            let text = v.get(key).and_then(|x| x.as_str()).unwrap_or("");
            out.extend(
                text.split(". ")
                    .map(|s| s.trim().trim_end_matches('.').to_string())
                    .filter(|s| s.len() > 3)
                    .map(|s| format!("{s}.")),
            );
        }
    }
    if out.is_empty() {
        bail!("no sentences in the reports");
    }
    Ok(out)
}

/// The image files of `dir` (PNG, JPEG, DICOM), sorted by name.
fn image_files(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let n = n.to_ascii_lowercase();
            [".png", ".jpg", ".jpeg", ".dcm"]
                .iter()
                .any(|x| n.ends_with(x))
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no images in {}", dir.display());
    }
    Ok(names)
}

fn build(args: &Args, model: &DualEncoder) -> Result<()> {
    if args.index_dir.exists() {
        std::fs::remove_dir_all(&args.index_dir)?;
    }
    let data = common::VectorData::load(&args.data_dir, args.n)?;
    let pool = sentences(&std::fs::read_to_string(&args.reports)?)?;
    let spec = IndexSpec {
        dim: data.dim,
        model_fingerprint: model.fingerprint().to_string(),
        model_name: model.name().to_string(),
    };
    let start = Instant::now();
    let mut writer = IndexWriter::create(&args.index_dir, spec)?;
    let mut rng = Rng(42);
    let views = ["PA", "AP", "LATERAL"];
    let images = match &args.images {
        Some(dir) => image_files(dir)?,
        None => Vec::new(),
    };
    for (i, v) in data.base.chunks_exact(data.dim).enumerate() {
        let count = 2 + rng.below(5);
        let text: Vec<&str> = (0..count)
            .map(|_| pool[rng.below(pool.len())].as_str())
            .collect();
        let mut fields = BTreeMap::new();
        fields.insert("view".to_string(), views[rng.below(3)].to_string());
        if !images.is_empty() {
            fields.insert(PATH_FIELD.to_string(), images[i % images.len()].clone());
        }
        writer.add(Document {
            id: format!("doc{i:07}"),
            vector: Some(v.to_vec()),
            text: Some(text.join(" ")),
            negated_text: None,
            fields,
        })?;
    }
    writer.commit()?;
    common::emit(
        json!({"row": "query", "impl": "ours", "what": "build", "n": args.n,
        "seconds": start.elapsed().as_secs_f64(), "threads": common::threads()}),
    );
    Ok(())
}

fn percentiles(name: &str, n: usize, mut ms: Vec<f64>) {
    let p50 = common::quantile(&mut ms, 0.50);
    let p99 = common::quantile(&mut ms, 0.99);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    eprintln!("{name}: p50 {p50:.2} ms, p99 {p99:.2} ms");
    common::emit(json!({"row": "query", "impl": "ours", "what": name, "n": n,
        "threads": common::threads(), "samples": ms.len(), "p50_ms": p50, "p99_ms": p99,
        "mean_ms": mean}));
}

/// `DIR.legacy/`: symbolic links to every entry of `dir` except the manifest, and a manifest
/// without the flat graph, so the index opens the way it did before flat graphs existed.
fn legacy_view(dir: &std::path::Path) -> Result<PathBuf> {
    let legacy = dir.with_extension("legacy");
    if legacy.exists() {
        std::fs::remove_dir_all(&legacy)?;
    }
    std::fs::create_dir_all(&legacy)?;
    let dir = std::fs::canonicalize(dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name() != "manifest.json" {
            std::os::unix::fs::symlink(entry.path(), legacy.join(entry.file_name()))?;
        }
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    if let Some(files) = manifest["files"].as_object_mut() {
        files.remove("flat_graph");
    }
    std::fs::write(legacy.join("manifest.json"), manifest.to_string())?;
    Ok(legacy)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.images.is_some() {
        // As `cxr search --rerank` sets up its threads (and so the first stage too, here).
        cxr_search::model::threads::one_thread_per_product();
    }
    let t = Instant::now();
    let model = DualEncoder::load(&args.model, &Device::Cpu)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let model_load = t.elapsed().as_secs_f64();
    let fresh = match Index::open(&args.index_dir) {
        Ok(index) => {
            let has_paths = index
                .doc(0)
                .is_some_and(|d| d.fields.contains_key(PATH_FIELD));
            !(args.reuse
                && index.len() == args.n
                && index.check_model(model.fingerprint()).is_ok()
                && has_paths == args.images.is_some())
        }
        Err(_) => true,
    };
    if fresh {
        build(&args, &model)?;
    }

    let mut opens = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let index = Index::open(&args.index_dir)?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        drop(index);
    }
    let first_open = opens[0];
    let p50_open = common::quantile(&mut opens, 0.5);
    let max_open = opens.iter().copied().fold(0.0, f64::max);
    eprintln!("open: median {p50_open:.1} ms (max {max_open:.1} ms); model load {model_load:.2}s");
    common::emit(
        json!({"row": "query", "impl": "ours", "what": "open", "n": args.n,
        "median_ms": p50_open, "max_ms": max_open, "first_ms": first_open,
        "model_load_s": model_load}),
    );

    // The same index as written before flat graphs: readers then rebuild hnsw_rs's graph from
    // its dump at open. A sibling folder links every file but a manifest without the flat graph.
    let legacy = legacy_view(&args.index_dir)?;
    let mut dump_opens = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let index = Index::open(&legacy)?;
        dump_opens.push(t.elapsed().as_secs_f64() * 1e3);
        drop(index);
    }
    let p50_dump = common::quantile(&mut dump_opens, 0.5);
    eprintln!("open through the hnsw_rs dump: median {p50_dump:.1} ms");
    common::emit(
        json!({"row": "query", "impl": "hnsw_rs-dump", "what": "open", "n": args.n,
        "median_ms": p50_dump, "max_ms": dump_opens.iter().copied().fold(0.0, f64::max)}),
    );

    let index = Index::open(&args.index_dir)?;
    let searcher = Searcher::new(&index, Some(&model))?;
    let queries: Vec<String> = std::fs::read_to_string(&args.queries)
        .with_context(|| format!("reading {}", args.queries.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .collect();
    if queries.is_empty() {
        bail!("no queries in {}", args.queries.display());
    }
    let opts = SearchOptions::top(10);
    let depth = opts.candidates;
    let embeddings = model.embed_texts(&queries.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Warm-up pass.
    for q in &queries {
        std::hint::black_box(searcher.search_text(q, &opts)?);
    }
    // A filter keeping half the documents (`view=PA`): every query reads the filtered field
    // of every document to build its allow-list, then searches inside it.
    let filtered = SearchOptions {
        filter: search::Filter::parse(&["view=PA"])?,
        ..SearchOptions::top(10)
    };
    let (mut full, mut embed, mut bm25, mut vector) = (vec![], vec![], vec![], vec![]);
    let mut with_filter = vec![];
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..args.rounds {
        for (q, e) in queries.iter().zip(&embeddings) {
            let t = Instant::now();
            std::hint::black_box(searcher.search_text(q, &opts)?);
            full.push(ms(t));
            let t = Instant::now();
            std::hint::black_box(model.embed_texts(&[q.as_str()])?);
            embed.push(ms(t));
            let t = Instant::now();
            std::hint::black_box(index.search_text(q, depth)?);
            bm25.push(ms(t));
            let t = Instant::now();
            std::hint::black_box(index.search_vector(e, depth)?);
            vector.push(ms(t));
            let t = Instant::now();
            std::hint::black_box(searcher.search_text(q, &filtered)?);
            with_filter.push(ms(t));
        }
    }
    percentiles("text_query", args.n, full);
    percentiles("embed_query", args.n, embed);
    percentiles("bm25", args.n, bm25);
    percentiles("vector", args.n, vector);
    percentiles("text_query_filtered", args.n, with_filter);
    if let Some(images) = &args.images {
        rerank_latency(&args, &index, &searcher, &model, &queries, images)?;
    }
    Ok(())
}

/// The text query with the second stage, as `cxr search --text Q --rerank N` runs it, and the
/// second stage alone.
fn rerank_latency(
    args: &Args,
    index: &Index,
    searcher: &Searcher,
    model: &DualEncoder,
    queries: &[String],
    images: &std::path::Path,
) -> Result<()> {
    let depth = args.rerank_depth;
    let dir = match &args.reranker {
        Some(dir) => dir.clone(),
        None => {
            let dir = args.index_dir.with_extension("reranker");
            // The shape `cxr train-reranker` trains by default: 8 query tokens, width 128,
            // 2 layers; seeded weights.
            let cfg = config_for(model, 8, 128, 2)?;
            RerankTrainer::new(model, &cfg, 0, true)?.save(
                &dir,
                json!({"untrained": "benches/query.rs, for latency only"}),
            )?;
            dir
        }
    };
    let reranker = Reranker::load(&dir, model, model.device())
        .with_context(|| format!("loading reranker {}", dir.display()))?;
    let roots = vec![images.to_path_buf()];
    let opts = SearchOptions::top(depth.max(10));
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let run = |q: &str| -> Result<(f64, f64, usize)> {
        let t = Instant::now();
        let mut hits = searcher.search_text(q, &opts)?;
        let first = ms(t);
        let outcome = search::rerank(index, model, &reranker, q, &mut hits, depth, &roots)?;
        std::hint::black_box(&hits);
        Ok((ms(t), ms(t) - first, outcome.scored))
    };
    for q in queries {
        run(q)?;
    }
    let (mut full, mut second, mut scored) = (vec![], vec![], 0usize);
    // Each pass decodes `depth` images per query: fewer rounds keep the row short.
    for _ in 0..args.rounds.div_ceil(4) {
        for q in queries {
            let (total, part, n) = run(q)?;
            full.push(total);
            second.push(part);
            scored += n;
        }
    }
    let per_query = scored as f64 / full.len().max(1) as f64;
    eprintln!("rerank: {per_query:.1} candidates scored per query (depth {depth})");
    percentiles(&format!("text_query_rerank{depth}"), args.n, full);
    percentiles(&format!("rerank{depth}"), args.n, second);
    Ok(())
}
