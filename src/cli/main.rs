//! `cxr`: the command line of cxr-search. It parses flags into plain structs, then wires the
//! library's ingest, model, embed, index, search and eval layers together: one module per
//! command (`ranking` holds what `search` and `eval` share), this file the dispatch and what
//! every command shares (the model flags, opening an index for search).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cxr_index::Index;
use cxr_search::ingest::DecodeOptions;
use cxr_search::model::{self, DualEncoder};

mod classify;
mod embed;
mod eval;
mod index;
mod inspect;
mod maintenance;
mod ranking;
mod search;
mod train;

use classify::ClassifyArgs;
use embed::EmbedArgs;
use eval::EvalArgs;
use index::IndexArgs;
use search::SearchArgs;
use train::{ModelCommand, TrainArgs, TrainRerankerArgs};

/// mimalloc with a per-thread ceiling on single allocations, which DICOM parsing sets from the
/// file's length: a declared length the file does not back fails to reserve instead of taking
/// the memory (see `cxr_search::ingest::alloc_ceiling`).
///
/// mimalloc keeps freed pages for reuse, where glibc's malloc hands the full-resolution decode
/// buffers of each image back to the kernel and faults them in again for the next one: that
/// was over half of a native DICOM decode (benches/README.md, row 1).
#[global_allocator]
static ALLOCATOR: cxr_search::ingest::alloc_ceiling::CeilingAllocator<mimalloc::MiMalloc> =
    cxr_search::ingest::alloc_ceiling::CeilingAllocator::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "cxr",
    version,
    about = "Semantic search over chest X-ray archives"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Index DICOM/PNG/JPEG files (and reports) into an index folder; re-running resumes.
    Index(IndexArgs),
    /// Search an index by text or by example image.
    Search(SearchArgs),
    /// Score an index on a query set with graded relevance (NDCG@k, P@k, as trec_eval).
    Eval(EvalArgs),
    /// Verify an index: manifest, file checksums, counts, vectors, text index, HNSW graph
    /// (every point reachable); exits 1 when something is wrong.
    Check {
        /// Index folder.
        index: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete documents by id, or those whose file is gone; they leave every search at once.
    Delete(maintenance::DeleteArgs),
    /// Reclaim what deletions left: rewrite vectors, rebuild the graph, merge the text index.
    Compact(maintenance::CompactArgs),
    /// Show what an index holds.
    Info {
        /// Index folder.
        index: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Model folders.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Train the dual encoder contrastively (ELIXR-C / CLIP InfoNCE with MedCLIP-style
    /// label-aware soft targets) on NIH train/ images, COVID images + notes and IU reports.
    Train(TrainArgs),
    /// Zero-shot classification of images by positive/negative prompt pairs (ELIXR); with
    /// --labels, ROC AUC per finding.
    Classify(ClassifyArgs),
    /// Train the reranker (an ELIXR-B / BLIP-2 style Q-Former with ITC and ITM heads) over a
    /// frozen model, on NIH train/ images with templated reports.
    TrainReranker(TrainRerankerArgs),
    /// Print the model's unit embeddings of texts and images as JSON lines.
    Embed(EmbedArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model folder (config.json, tokenizer.json, model.safetensors) [default: $CXR_MODEL or
    /// models/default]
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Batch inference (indexing, classifying, reranking candidates): a chunk of the batch per
    // thread, each product on one thread (see `model::threads`). Still single-threaded here,
    // as that requires.
    let batch_work = match &cli.command {
        Command::Index(_) | Command::Classify(_) | Command::Embed(_) => true,
        Command::Search(args) => args.rerank.rerank.is_some(),
        Command::Eval(args) => args.rerank.rerank.is_some(),
        _ => false,
    };
    if batch_work {
        cxr_search::model::threads::one_thread_per_product();
    }
    let result = match cli.command {
        Command::Index(args) => index::cmd_index(args),
        Command::Search(args) => search::cmd_search(args),
        Command::Eval(args) => eval::cmd_eval(args),
        Command::Info { index, json } => inspect::cmd_info(&index, json),
        Command::Check { index, json } => inspect::cmd_check(&index, json),
        Command::Delete(args) => maintenance::cmd_delete(args),
        Command::Compact(args) => maintenance::cmd_compact(args),
        Command::Model(ModelCommand::Init {
            dir,
            preset,
            seed,
            vocab_from,
            name,
        }) => train::cmd_model_init(&dir, preset, seed, &vocab_from, name),
        Command::Train(args) => train::cmd_train(args),
        Command::Classify(args) => classify::cmd_classify(args),
        Command::TrainReranker(args) => train::cmd_train_reranker(args),
        Command::Embed(args) => embed::cmd_embed(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let mut shown = err.to_string();
            eprintln!("cxr: error: {shown}");
            // Library errors often quote their source already; print each cause once.
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !shown.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                    shown.push_str(&cause);
                }
            }
            ExitCode::from(2)
        }
    }
}

/// Decoding for images that `model` will embed: no finer than its preprocessing needs, so that
/// index and query images go through the same decode.
/// Walks `inputs` and embeds every image found, `batch_size` at a time, handing each batch's
/// files and unit embeddings to `each` as they come (`cxr classify`, `cxr embed`). A path that
/// cannot be walked or a file that cannot be decoded is reported on stderr and skipped;
/// returns how many were.
fn embed_files(
    model: &DualEncoder,
    inputs: &[PathBuf],
    batch_size: usize,
    mut each: impl FnMut(&[PathBuf], Vec<Vec<f32>>) -> Result<()>,
) -> Result<usize> {
    let mut failed = 0usize;
    let mut files = Vec::new();
    for item in cxr_search::ingest::walk::walk(inputs) {
        match item {
            Ok(path) => files.push(path),
            Err((path, reason)) => {
                eprintln!("cxr: {}: {reason}", path.display());
                failed += 1;
            }
        }
    }
    let decode_options = decode_options_for(Some(model));
    for chunk in files.chunks(batch_size.max(1)) {
        let mut inputs = Vec::new();
        let mut read = Vec::new();
        for path in chunk {
            match cxr_search::ingest::decode_file(path, &decode_options) {
                Ok(d) => {
                    inputs.push(model.prepare_image(&d.image));
                    read.push(path.clone());
                }
                Err(e) => {
                    // The error names the file.
                    eprintln!("cxr: {e}");
                    failed += 1;
                }
            }
        }
        each(&read, model.embed_inputs(&inputs)?)?;
    }
    Ok(failed)
}

fn decode_options_for(model: Option<&DualEncoder>) -> DecodeOptions {
    DecodeOptions {
        min_side: model
            .and_then(DualEncoder::preprocess_config)
            .map(|p| p.min_source_side()),
        ..DecodeOptions::default()
    }
}

fn load_model(args: &ModelArgs) -> Result<DualEncoder> {
    let dir = args.model.clone().unwrap_or_else(model::default_model_dir);
    let device = model::device(&args.device)?;
    DualEncoder::load(&dir, &device).with_context(|| format!("loading model {}", dir.display()))
}

/// Opens an index and, when it holds image vectors, the model that must embed its queries.
fn open_for_search(index_dir: &Path, args: &ModelArgs) -> Result<(Index, Option<DualEncoder>)> {
    let index =
        Index::open(index_dir).with_context(|| format!("opening index {}", index_dir.display()))?;
    let model = if index.manifest().vector_count > 0 {
        Some(load_model(args)?)
    } else {
        None
    };
    Ok((index, model))
}
