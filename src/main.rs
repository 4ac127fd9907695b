//! `cxr`: the command line of cxr-search. It parses flags into plain structs, then wires the
//! library's ingest, model, embed, index, search and eval layers together.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cxr_index::{CreateOptions, Index, IndexSpec, IndexWriter, VectorStorage};
use cxr_search::embed::{self, IndexJob};
use cxr_search::eval;
use cxr_search::ingest::reports::{ReportTable, TableColumns};
use cxr_search::ingest::{self, walk, DecodeOptions};
use cxr_search::model::{self, DualEncoder, InitOptions, Preset};
use cxr_search::privacy::{self, DeidentifySettings, IndexPrivacy};
use cxr_search::rerank::{self, Reranker};
use cxr_search::search::{self, SearchOptions, Searcher};

mod maintenance;

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
}

/// `cxr train-reranker`: the dual encoder stays frozen; the Q-Former reads its image tower's
/// last feature map and its text tower's token states.
#[derive(Args)]
#[command(
    after_help = "Data: DATA/nih1000/labels.csv (train/ only; valid/ is scored after every \
epoch: ITM accuracy against hard negatives and, per finding prompt, AUC of the match probability \
beside the model's own cosine AUC; test/ is never read). Output: config.json (shape, the model's \
fingerprint, options, per-epoch figures) and model.safetensors in --out after every epoch. \
Example: cxr train-reranker --data ../shared/data --model models/default --out \
models/default/reranker"
)]
struct TrainRerankerArgs {
    /// The shared data folder (holding nih1000/).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// The (frozen) model the reranker reads [default: $CXR_MODEL or models/default]
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder [default: MODEL/reranker, where `cxr search --rerank` looks]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs. On the 600 NIH training images the match head's AUC on NIH valid peaks after
    /// about 5 and then falls as it overfits (see the model card).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Image-text pairs per batch (each brings up to two mined ITM negatives).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate (AdamW; linear warm-up, then cosine decay to 0).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// AdamW weight decay (matrices only).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Fraction of the steps spent warming up.
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip_norm: f64,
    /// Seed of the initial weights, shuffling, templates, augmentation and negative mining.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Comma-separated image sources among nih, covid.
    #[arg(long, default_value = "nih")]
    sources: String,
    /// No augmentation (shifts, contrast, brightness).
    #[arg(long)]
    no_augment: bool,
    /// Learned query tokens.
    #[arg(long, default_value_t = 8)]
    queries: usize,
    /// Width of the Q-Former.
    #[arg(long, default_value_t = 128)]
    width: usize,
    /// Q-Former layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Start every projection from random weights instead of the model's own heads into its
    /// shared space.
    #[arg(long)]
    cold_start: bool,
    /// ITM negatives are drawn among the batch items with another label set with probability
    /// softmax(SCALE x the model's cosine); 0 draws uniformly.
    #[arg(long, default_value_t = cxr_search::rerank::train::MINING_SCALE)]
    mining_scale: f32,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// `cxr train`: reads `DATA/nih1000/labels.csv` (train/ split only; valid/ is scored after every
/// epoch, test/ never read), `DATA/covid/metadata.csv` + `DATA/covid/images/`,
/// `DATA/iu-reports.jsonl`. Writes config.json, tokenizer.json, model.safetensors (with the learnt
/// `logit_scale`) and train_state.json into --out after every epoch.
#[derive(Args)]
#[command(
    after_help = "Data: DATA/nih1000/labels.csv (train/ only; valid/ is scored after every \
epoch with zero-shot AUC, test/ is never read), DATA/covid/metadata.csv + images/, \
DATA/iu-reports.jsonl (text only). Output: config.json, tokenizer.json, model.safetensors (with \
logit_scale) and train_state.json in --out after every epoch; --resume continues from the last \
one (AdamW moments restart). Example: cxr train --data ../shared/data --out models/NAME \
--epochs 6 --batch-size 32 --text-per-batch 16 --lr 1e-3 --warmup 0.05"
)]
struct TrainArgs {
    /// The shared data folder (holding nih1000/, covid/, iu-reports.jsonl).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Output model folder.
    #[arg(long)]
    out: PathBuf,
    /// Start from this model folder (its tokenizer and weights) instead of a fresh one.
    #[arg(long, conflicts_with = "preset")]
    init: Option<PathBuf>,
    /// Size of a fresh model (random weights, WordPiece vocabulary from the IU reports, COVID
    /// notes and the training templates).
    #[arg(long, value_enum, default_value = "tiny64")]
    preset: Preset,
    /// Name recorded in the model's config and in the indexes it builds.
    #[arg(long, default_value = "cxr-trained")]
    name: String,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Image-text pairs per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Text-only IU reports added to every batch.
    #[arg(long, default_value_t = 32)]
    text_per_batch: usize,
    /// Peak learning rate (AdamW; linear warm-up, then cosine decay to 0).
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// AdamW weight decay (matrices only).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Fraction of the steps spent warming up.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Weight of an item's own pair in the soft targets (the rest follows label similarity).
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// Weight of the text-text label-similarity term.
    #[arg(long, default_value_t = 0.5)]
    text_weight: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip_norm: f64,
    /// Seed of the fresh weights, shuffling, templates and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No augmentation (shifts, contrast, brightness).
    #[arg(long)]
    no_augment: bool,
    /// Comma-separated sources among nih, covid, iu.
    #[arg(long, default_value = "nih,covid,iu")]
    sources: String,
    /// Continue the run in --out from its last completed epoch.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Comma-separated findings [default: Effusion,Cardiomegaly,Atelectasis,Infiltration,No
    /// Finding]; NIH labels or vocabulary names (normal, nodule/mass, covid-19, ...).
    #[arg(long)]
    findings: Option<String>,
    /// NIH-style labels CSV (`Image Index` or `path`, `Finding Labels`): print AUC per finding.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    json: bool,
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

/// How a text query's signals are chosen and combined.
#[derive(Args)]
struct RankingArgs {
    /// How image-vector and report-text results are combined: `convex` (weighted sum of
    /// normalised scores) or `rrf` (reciprocal rank fusion).
    #[arg(long, value_enum, default_value_t = FusionKind::Convex)]
    fusion: FusionKind,
    /// Weight of the image-vector list in convex fusion; the report text gets 1 minus it.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    vector_weight: f32,
    /// Signals a text query uses: `vector`, `text`, or both.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "vector,text")]
    signals: Vec<SignalKind>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FusionKind {
    Convex,
    Rrf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum SignalKind {
    Vector,
    Text,
}

impl RankingArgs {
    fn apply(&self, opts: &mut SearchOptions) {
        opts.fusion = match self.fusion {
            FusionKind::Convex => search::Fusion::Convex {
                vector_weight: self.vector_weight,
            },
            FusionKind::Rrf => search::Fusion::Rrf,
        };
        opts.signals = search::Signals {
            vector: self.signals.contains(&SignalKind::Vector),
            text: self.signals.contains(&SignalKind::Text),
        };
    }
}

fn unit_interval(s: &str) -> Result<f32, String> {
    let w: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&w) {
        Ok(w)
    } else {
        Err(format!("{w} is not between 0 and 1"))
    }
}

#[derive(Args)]
struct IndexArgs {
    /// Files or folders to index (walked recursively). None: index the reports alone.
    inputs: Vec<PathBuf>,
    /// Index folder to create, or to add to.
    #[arg(long, short)]
    out: PathBuf,
    /// Reports or per-image metadata: .jsonl or .csv, one record per report.
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Column of the reports table that names the image, study or report [default: detected]
    #[arg(long)]
    key: Option<String>,
    /// Comma-separated report columns to search [default: findings,impression | report,text |
    /// clinical_notes]; `none` for metadata only.
    #[arg(long)]
    text: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Commit after this many new documents [default: 5000, or a tenth of the active vector
    /// segment's rows when that is more, as each commit rewrites that segment].
    #[arg(long)]
    commit_every: Option<usize>,
    /// Refuse images larger than this many pixels.
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    max_pixels: u64,
    /// How a new index stores vectors: f32, or f16 (half the vector file and the memory a
    /// search maps; see benches/README.md for the recall it costs) [default: f32]. Chosen when
    /// the index is created; later runs follow it.
    #[arg(long)]
    vector_storage: Option<VectorStorage>,
    /// Vectors per sealed segment of a new index: what bounds this command's memory (about
    /// 2 KiB per vector of the open segment at dimension 128); each segment costs a query one
    /// more graph search [default: 500000]. Chosen when the index is created.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    segment_rows: Option<u64>,
    /// HNSW links per node and layer (M) of a new index: more links, better recall at a given
    /// search effort, a larger graph and a slower build [default: 16]. Chosen when the index is
    /// created.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u16).range(2..=255))]
    hnsw_m: Option<u16>,
    /// Candidate list size while inserting into the HNSW graph of a new index: build time grows
    /// about in proportion, and so, up to a point, does the graph's quality (benches/README.md
    /// measures 100 against 200) [default: 200]. Chosen when the index is created.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    ef_construction: Option<u16>,
    /// Replace or drop identifying metadata (DICOM PS3.15 basic profile): UIDs and ids become
    /// salted-hash UIDs, paths are hashed, age, sex and dates are dropped. Chosen when the
    /// index is created; later runs follow it.
    #[arg(long)]
    deidentify: bool,
    /// With --deidentify: keep age and sex (for filters).
    #[arg(long, requires = "deidentify")]
    retain_patient_characteristics: bool,
    /// With --deidentify: keep study dates (for filters).
    #[arg(long, requires = "deidentify")]
    retain_dates: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// Index folder.
    index: PathBuf,
    /// Free-text query, e.g. "small left pleural effusion".
    #[arg(
        long,
        conflicts_with_all = ["image", "queries"],
        required_unless_present_any = ["image", "queries"]
    )]
    text: Option<String>,
    /// Example image (DICOM, PNG or JPEG).
    #[arg(long, conflicts_with = "queries")]
    image: Option<PathBuf>,
    /// Many queries, one per line, from FILE or `-` (stdin), each answered as it is read: a
    /// line of text is a text query; a JSON object gives `text` or `image` (a path) and an
    /// optional `id` to echo. The model and the index are loaded once. A bad line is reported
    /// and skipped.
    #[arg(long, value_name = "FILE")]
    queries: Option<PathBuf>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Keep only documents whose metadata matches, e.g. `view=PA`, `sex=F`, `age=40..60`,
    /// `date=2019-01-01..2019-12-31`, `modality=CR`, `body_part=CHEST`; repeat to combine.
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// One hit per study.
    #[arg(long, value_name = "study", value_parser = ["study"])]
    group_by: Option<String>,
    #[command(flatten)]
    ranking: RankingArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    rerank: RerankArgs,
    #[arg(long)]
    json: bool,
}

/// The second stage of text queries (`--rerank N`).
#[derive(Args)]
struct RerankArgs {
    /// Re-order the top N hits of a text query by the reranker's image-text match probability
    /// (reads each candidate's image again; needs --image-root).
    #[arg(long, value_name = "N")]
    rerank: Option<usize>,
    /// Reranker folder [default: reranker/ inside the model folder]
    #[arg(long, value_name = "DIR", requires = "rerank")]
    reranker: Option<PathBuf>,
    /// Folders the index's images were indexed from (stored paths are relative to them); the
    /// first that holds a candidate's file is used.
    #[arg(long = "image-root", value_name = "DIR", num_args = 1.., requires = "rerank")]
    image_roots: Vec<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Index folder.
    index: PathBuf,
    /// Queries (JSONL: id, corpus, group, text or image).
    #[arg(long)]
    queries: PathBuf,
    /// TREC qrels (qid 0 docid rel).
    #[arg(long)]
    qrels: PathBuf,
    /// Keep only the queries of this corpus.
    #[arg(long)]
    corpus: Option<String>,
    /// Cut-off of NDCG@k and P@k.
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Write the ranking as a TREC run file.
    #[arg(long)]
    run: Option<PathBuf>,
    #[command(flatten)]
    ranking: RankingArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    rerank: RerankArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Create a model folder with random weights and a vocabulary learnt from report text.
    Init {
        /// Folder to create.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "small")]
        preset: Preset,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Report tables (.jsonl/.csv) whose text the vocabulary is learnt from.
        #[arg(long = "vocab-from", required = true)]
        vocab_from: Vec<PathBuf>,
        /// Name recorded in the indexes the model builds.
        #[arg(long, default_value = "cxr-random")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Batch inference (indexing, classifying, reranking candidates): a chunk of the batch per
    // thread, each product on one thread (see `model::threads`). Still single-threaded here,
    // as that requires.
    let batch_work = match &cli.command {
        Command::Index(_) | Command::Classify(_) => true,
        Command::Search(args) => args.rerank.rerank.is_some(),
        Command::Eval(args) => args.rerank.rerank.is_some(),
        _ => false,
    };
    if batch_work {
        cxr_search::model::threads::one_thread_per_product();
    }
    let result = match cli.command {
        Command::Index(args) => cmd_index(args),
        Command::Search(args) => cmd_search(args),
        Command::Eval(args) => cmd_eval(args),
        Command::Info { index, json } => cmd_info(&index, json),
        Command::Check { index, json } => cmd_check(&index, json),
        Command::Delete(args) => maintenance::cmd_delete(args),
        Command::Compact(args) => maintenance::cmd_compact(args),
        Command::Model(ModelCommand::Init {
            dir,
            preset,
            seed,
            vocab_from,
            name,
        }) => cmd_model_init(&dir, preset, seed, &vocab_from, name),
        Command::Train(args) => cmd_train(args),
        Command::Classify(args) => cmd_classify(args),
        Command::TrainReranker(args) => cmd_train_reranker(args),
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

fn cmd_index(args: IndexArgs) -> Result<ExitCode> {
    if args.inputs.is_empty() && args.reports.is_none() {
        bail!("nothing to index: give image files or folders, or --reports");
    }
    for input in &args.inputs {
        if !input.exists() {
            bail!("{}: no such file or folder", input.display());
        }
    }
    let model = load_model(&args.model)?;
    if !args.inputs.is_empty() && !model.has_image_tower() {
        bail!(
            "model {} ({}) embeds text only and cannot index images; pass --model with an \
             image or dual model, or index reports alone with --reports",
            model.name(),
            model.layout()
        );
    }
    let reports = match &args.reports {
        Some(path) => {
            let columns = TableColumns {
                key: args.key.clone(),
                text: args.text.as_deref().map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty() && *c != "none")
                        .map(String::from)
                        .collect()
                }),
            };
            let table = ReportTable::load(path, &columns)?;
            if table.duplicate_keys > 0 {
                eprintln!(
                    "cxr: {}: {} records repeat an earlier key and were ignored",
                    path.display(),
                    table.duplicate_keys
                );
            }
            Some(table)
        }
        None => None,
    };

    let mut writer = if args.out.join(cxr_index::MANIFEST_FILE).exists() {
        let writer = IndexWriter::open(&args.out)
            .with_context(|| format!("opening index {}", args.out.display()))?;
        if writer.spec().model_fingerprint != model.fingerprint() {
            bail!(
                "{} was built by model {} ({}), not by {} ({}); pass --model with that model or \
                 choose another --out",
                args.out.display(),
                writer.spec().model_name,
                writer.spec().model_fingerprint,
                model.name(),
                model.fingerprint()
            );
        }
        if let Some(asked) = args.vector_storage {
            if asked != writer.vector_storage() {
                bail!(
                    "{} stores {} vectors, chosen when it was created; drop --vector-storage {asked} \
                     or choose another --out",
                    args.out.display(),
                    writer.vector_storage()
                );
            }
        }
        let hnsw = writer.hnsw_params();
        for (flag, asked, built) in [
            ("--hnsw-m", args.hnsw_m, hnsw.max_nb_connection),
            (
                "--ef-construction",
                args.ef_construction,
                hnsw.ef_construction,
            ),
        ] {
            if let Some(asked) = asked.filter(|&a| usize::from(a) != built) {
                bail!(
                    "{} was built with {flag} {built}, chosen when it was created; drop {flag} \
                     {asked} or choose another --out",
                    args.out.display()
                );
            }
        }
        if let Some(asked) = args.segment_rows {
            if asked != writer.segment_rows() {
                bail!(
                    "{} seals segments at {} vectors, chosen when it was created; drop \
                     --segment-rows {asked} or choose another --out",
                    args.out.display(),
                    writer.segment_rows()
                );
            }
        }
        writer
    } else {
        let spec = IndexSpec {
            dim: model.dim(),
            model_fingerprint: model.fingerprint().to_string(),
            model_name: model.name().to_string(),
        };
        let mut options = CreateOptions {
            vector_storage: args.vector_storage.unwrap_or_default(),
            ..CreateOptions::default()
        };
        if let Some(rows) = args.segment_rows {
            options.segment_rows = rows;
        }
        if let Some(m) = args.hnsw_m {
            options.hnsw.max_nb_connection = m.into();
        }
        if let Some(ef) = args.ef_construction {
            options.hnsw.ef_construction = ef.into();
        }
        IndexWriter::create_with(&args.out, spec, options)
            .with_context(|| format!("creating index {}", args.out.display()))?
    };
    let requested = args.deidentify.then_some(DeidentifySettings {
        deidentify: true,
        retain_patient_characteristics: args.retain_patient_characteristics,
        retain_dates: args.retain_dates,
    });
    let privacy = IndexPrivacy::load_or_create(&args.out, requested, !writer.is_empty())?;

    let mut files = Vec::new();
    let mut walk_failures = 0usize;
    let roots: Vec<std::sync::Arc<Path>> = args.inputs.iter().map(|r| r.as_path().into()).collect();
    let no_root: std::sync::Arc<Path> = Path::new("").into();
    for item in walk::walk(&args.inputs) {
        match item {
            Ok(path) => {
                let root = roots
                    .iter()
                    .find(|r| path.starts_with(r))
                    .unwrap_or(&no_root)
                    .clone();
                files.push((path, root));
            }
            Err((path, reason)) => {
                eprintln!("cxr: {}: {reason}", path.display());
                writer.record_failure(&privacy.stored_path(&path.to_string_lossy()), &reason)?;
                walk_failures += 1;
            }
        }
    }
    let job = IndexJob {
        files,
        reports: reports.as_ref(),
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            patient_salt: privacy.salt().to_string(),
            ..decode_options_for(Some(&model))
        },
        privacy: &privacy,
        batch_size: args.batch_size,
        commit_every: args.commit_every,
        progress: !args.quiet && !args.json,
    };
    let mut on_failure = |path: &Path, reason: &str| {
        eprintln!("cxr: {}: {reason}", path.display());
    };
    let mut on_notice = |path: &Path, note: &str| {
        eprintln!("cxr: {}: {note}", path.display());
    };
    let mut summary = embed::run(job, &model, &mut writer, &mut on_failure, &mut on_notice)?;
    summary.failed += walk_failures;
    let total = writer.len();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["documents"] = total.into();
        println!("{value}");
    } else {
        let rate = summary.indexed as f64 / summary.seconds.max(1e-9);
        println!(
            "indexed {} images ({rate:.1}/s) and {} report-only documents; skipped {} already \
             indexed; failed {}; {:.1}s; the index holds {total} documents",
            summary.indexed, summary.report_only, summary.skipped, summary.failed, summary.seconds
        );
        if summary.replaced > 0 {
            println!(
                "{} files had changed since they were indexed and were indexed again",
                summary.replaced
            );
        }
        if summary.duplicates > 0 {
            println!(
                "{} files were copies of indexed files and were skipped",
                summary.duplicates
            );
        }
        if summary.unmatched_reports > 0 {
            println!("{} reports matched no image", summary.unmatched_reports);
        }
        if summary.failed > 0 {
            println!(
                "failures are listed in {}",
                args.out.join(cxr_index::ERRORS_FILE).display()
            );
        }
    }
    let nothing = summary.indexed + summary.report_only + summary.skipped + summary.duplicates == 0;
    Ok(if nothing {
        eprintln!("cxr: nothing could be indexed");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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

/// A loaded reranker with what `--rerank` asked for.
struct RerankSetup<'a> {
    reranker: Reranker<'a>,
    depth: usize,
    roots: Vec<PathBuf>,
    dir: PathBuf,
}

/// Resolves `--rerank`: `None` when not asked for (or when the index has no images to score,
/// which is said); an error naming the fix when it cannot run.
fn open_reranker<'a>(
    args: &RerankArgs,
    index_dir: &Path,
    model_args: &ModelArgs,
    model: Option<&'a DualEncoder>,
) -> Result<Option<RerankSetup<'a>>> {
    let Some(depth) = args.rerank else {
        return Ok(None);
    };
    if depth == 0 {
        bail!("--rerank 0: give the number of top hits to rerank, e.g. --rerank 20");
    }
    if privacy::read_settings(index_dir)?.is_some_and(|s| s.deidentify) {
        bail!(
            "{} was built with --deidentify: it stores no image paths (only salted hashes of \
             them), so --rerank cannot read the candidates' images; search it without --rerank",
            index_dir.display()
        );
    }
    let Some(model) = model else {
        eprintln!(
            "cxr: {} holds no images (report-only documents): --rerank has nothing to score; \
             first-stage order kept",
            index_dir.display()
        );
        return Ok(None);
    };
    let model_dir = model_args
        .model
        .clone()
        .unwrap_or_else(model::default_model_dir);
    let dir = args
        .reranker
        .clone()
        .unwrap_or_else(|| rerank::default_dir(&model_dir));
    let reranker = Reranker::load(&dir, model, model.device())
        .with_context(|| format!("loading reranker {}", dir.display()))?;
    if args.image_roots.is_empty() {
        bail!(
            "--rerank reads each candidate's image again: give --image-root with the folder(s) \
             {} was built from (its stored paths are relative to them)",
            index_dir.display()
        );
    }
    for root in &args.image_roots {
        if !root.is_dir() {
            bail!("--image-root {}: not a folder", root.display());
        }
    }
    Ok(Some(RerankSetup {
        reranker,
        depth,
        roots: args.image_roots.clone(),
        dir,
    }))
}

/// Prints what the second stage could not do: each unreadable document once, report-only
/// documents once.
#[derive(Default)]
struct NoticePrinter {
    seen: std::collections::HashSet<String>,
    report_only_said: bool,
}

impl NoticePrinter {
    fn print(&mut self, notices: &[search::RerankNotice]) {
        for n in notices {
            match n {
                search::RerankNotice::Unreadable { id, reason } => {
                    if self.seen.insert(id.clone()) {
                        eprintln!(
                            "cxr: document {id}: not reranked ({reason}); kept at its \
                             first-stage rank"
                        );
                    }
                }
                search::RerankNotice::ReportOnly { .. } => {
                    if !self.report_only_said {
                        self.report_only_said = true;
                        eprintln!(
                            "cxr: report-only documents have no image to rerank; they keep \
                             their first-stage rank"
                        );
                    }
                }
            }
        }
    }
}

fn cmd_search(args: SearchArgs) -> Result<ExitCode> {
    if args.rerank.rerank.is_some() && args.image.is_some() {
        bail!(
            "--rerank scores image-text pairs (the reranker's match head): it applies to --text \
             queries, not to --image ones"
        );
    }
    let (index, model) = open_for_search(&args.index, &args.model)?;
    let searcher = Searcher::new(&index, model.as_ref())
        .with_context(|| format!("searching {}", args.index.display()))?;
    let setup = open_reranker(&args.rerank, &args.index, &args.model, model.as_ref())?;
    let depth = setup.as_ref().map_or(0, |s| s.depth);
    let mut opts = SearchOptions::top(args.k.max(depth));
    opts.filter = search::Filter::parse(&args.filters)?;
    opts.group_by_study = args.group_by.is_some();
    args.ranking.apply(&mut opts);
    let session = SearchSession {
        index: &index,
        model: model.as_ref(),
        searcher,
        setup,
        opts,
        k: args.k,
        json: args.json,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let Some(source) = &args.queries else {
        let query = match (&args.text, &args.image) {
            (Some(text), _) => BatchQuery::Text(text.clone()),
            (None, Some(path)) => BatchQuery::Image(path.clone()),
            (None, None) => bail!("give --text, --image or --queries"),
        };
        let found = session.answer(&query, None, &mut out)?;
        return Ok(if found {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    // One query per line, answered as it is read (and flushed), so that a program can keep
    // this process open on a pipe and pay for the model and the index once.
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if source.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(source)
                .with_context(|| format!("opening queries {}", source.display()))?,
        ))
    };
    let mut failed = 0usize;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading queries {}", source.display()))?;
        let answered = BatchQuery::parse(&line).and_then(|query| match query {
            Some((query, id)) => session.answer(&query, id.as_deref(), &mut out).map(|_| ()),
            None => Ok(()),
        });
        if let Err(e) = answered {
            failed += 1;
            let reason = format!("{e:#}");
            eprintln!("cxr: {} line {}: {reason}", source.display(), n + 1);
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": n + 1, "error": reason})
                )?;
            }
        }
        out.flush()?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One query of `cxr search`: from `--text` / `--image`, or a line of `--queries`.
enum BatchQuery {
    Text(String),
    Image(PathBuf),
}

impl BatchQuery {
    /// A line of `--queries`: plain text is a text query; a JSON object gives `text` or `image`
    /// (a file path) and an optional `id`, echoed in the answer. Blank lines are skipped (`None`).
    fn parse(line: &str) -> Result<Option<(BatchQuery, Option<String>)>> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        if !line.starts_with('{') {
            return Ok(Some((BatchQuery::Text(line.to_string()), None)));
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            id: Option<String>,
            text: Option<String>,
            image: Option<PathBuf>,
        }
        let parsed: Line = serde_json::from_str(line).context("not a query object")?;
        let query = match (parsed.text, parsed.image) {
            (Some(text), None) => BatchQuery::Text(text),
            (None, Some(image)) => BatchQuery::Image(image),
            _ => bail!("a query object needs exactly one of \"text\" and \"image\""),
        };
        Ok(Some((query, parsed.id)))
    }
}

/// What `cxr search` sets up once (index, model, reranker, options) and every query reuses.
struct SearchSession<'a> {
    index: &'a Index,
    model: Option<&'a DualEncoder>,
    searcher: Searcher<'a>,
    setup: Option<RerankSetup<'a>>,
    opts: SearchOptions,
    k: usize,
    json: bool,
}

impl SearchSession<'_> {
    /// Answers one query on `out`; returns whether anything was found.
    fn answer(&self, query: &BatchQuery, id: Option<&str>, out: &mut impl Write) -> Result<bool> {
        let index = self.index;
        let started = std::time::Instant::now();
        let (mut hits, query_text) = match query {
            BatchQuery::Text(text) => {
                warn_if_denials_unindexed(index, text);
                (self.searcher.search_text(text, &self.opts)?, text.clone())
            }
            BatchQuery::Image(path) => {
                if self.setup.is_some() {
                    bail!("--rerank applies to text queries, not to image ones");
                }
                let decoded = ingest::decode_file(path, &decode_options_for(self.model))?;
                (
                    self.searcher.search_image(&decoded.image, &self.opts)?,
                    String::new(),
                )
            }
        };
        let mut reranked = None;
        if let (Some(s), Some(m), BatchQuery::Text(text)) = (&self.setup, self.model, query) {
            let outcome =
                search::rerank(index, m, &s.reranker, text, &mut hits, s.depth, &s.roots)?;
            NoticePrinter::default().print(&outcome.notices);
            reranked = Some(outcome.scored);
        }
        hits.truncate(self.k);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        // The sentence shown is the one that matches what the query asks for, not what it denies.
        let parsed = search::ParsedQuery::parse(&query_text);
        let snippet_query = if parsed.asserted.trim().is_empty() {
            query_text.clone()
        } else {
            parsed.asserted.clone()
        };
        if self.json {
            let results: Vec<serde_json::Value> = hits
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let fields = index.doc(h.ord).map(|d| d.fields.clone());
                    let mut v = serde_json::to_value(h).unwrap_or_default();
                    v["rank"] = (i + 1).into();
                    v["fields"] = serde_json::to_value(fields).unwrap_or_default();
                    v
                })
                .collect();
            let mut value = serde_json::json!({"took_ms": millis, "results": results});
            if let Some(id) = id {
                value["id"] = id.into();
            }
            if let (Some(scored), Some(s)) = (reranked, &self.setup) {
                value["reranked"] = serde_json::json!({
                    "depth": s.depth,
                    "scored": scored,
                    "reranker": s.dir.display().to_string(),
                });
            }
            writeln!(out, "{value}")?;
            return Ok(!hits.is_empty());
        }
        if let Some(id) = id {
            writeln!(out, "# {id}")?;
        }
        for (i, h) in hits.iter().enumerate() {
            let doc = index.doc(h.ord);
            let field = |k: &str| {
                doc.as_ref()
                    .and_then(|d| d.fields.get(k))
                    .map(String::as_str)
                    .unwrap_or("-")
            };
            let report = doc
                .as_ref()
                .map(|d| report_text(&d.fields))
                .unwrap_or_default();
            let snip = search::snippet(&report, &snippet_query, 90);
            let second = match (reranked, h.rerank) {
                (None, _) => String::new(),
                (Some(_), Some(p)) => format!("rerank {p:.4}  "),
                (Some(_), None) => format!("{:<13}  ", "rerank -"),
            };
            writeln!(
                out,
                "{:>3}  {:<40}  {:.4}  {second}{:<9} {:<9} {}",
                i + 1,
                h.id,
                h.score,
                ranked_by(h),
                field("view"),
                snip
            )?;
        }
        if let (Some(scored), Some(s)) = (reranked, &self.setup) {
            writeln!(
                out,
                "reranked: the top {} first-stage hits ({scored} with an image) by image-text \
                 match probability ({})",
                s.depth,
                s.dir.display()
            )?;
        }
        Ok(!hits.is_empty())
    }
}

/// Indexes made before denied findings were indexed apart cannot answer "no pneumothorax".
fn warn_if_denials_unindexed(index: &Index, query: &str) {
    if search::ParsedQuery::parse(query).has_negation()
        && !index.has_text_field(cxr_index::TextField::Negated)
    {
        eprintln!(
            "cxr: warning: this index was built before denied findings were indexed; the \
             report text cannot answer what the query denies. Rebuild it to search them."
        );
    }
}

/// Which lists ranked a hit and where, e.g. `v3 t1` (vector rank 3, text rank 1).
fn ranked_by(h: &search::Hit) -> String {
    let mut parts = Vec::with_capacity(2);
    if let Some((rank, _)) = h.vector {
        parts.push(format!("v{rank}"));
    }
    if let Some((rank, _)) = h.text {
        parts.push(format!("t{rank}"));
    }
    parts.join(" ")
}

/// The report sections of a stored document, in reading order.
fn report_text(fields: &std::collections::BTreeMap<String, String>) -> String {
    let order = ["findings", "impression", "report", "text", "clinical_notes"];
    order
        .iter()
        .filter_map(|k| fields.get(*k))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cmd_eval(args: EvalArgs) -> Result<ExitCode> {
    let queries = eval::load_queries(&args.queries, args.corpus.as_deref())?;
    if queries.is_empty() {
        bail!(
            "{}: no queries{}",
            args.queries.display(),
            args.corpus
                .as_deref()
                .map(|c| format!(" of corpus `{c}`"))
                .unwrap_or_default()
        );
    }
    let qrels = eval::Qrels::load(&args.qrels)?;
    let (index, model) = open_for_search(&args.index, &args.model)?;
    let searcher = Searcher::new(&index, model.as_ref())?;
    let setup = open_reranker(&args.rerank, &args.index, &args.model, model.as_ref())?;
    // Rank deeper than k so the run file is useful beyond the cut-off.
    let mut opts = SearchOptions::top(args.k.max(100).max(setup.as_ref().map_or(0, |s| s.depth)));
    args.ranking.apply(&mut opts);
    let mut notices = NoticePrinter::default();
    let (mut rerank_seconds, mut reranked_queries, mut image_queries) = (0f64, 0usize, 0usize);
    let mut run_out = match &args.run {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut scores = Vec::new();
    for q in &queries {
        let Some(judged) = qrels.judgments(&q.id) else {
            eprintln!("cxr: query {} has no judgments in the qrels; skipped", q.id);
            continue;
        };
        let mut reranked = false;
        let hits = match &q.kind {
            eval::QueryKind::Text(text) => {
                let mut hits = searcher.search_text(text, &opts)?;
                if let (Some(s), Some(m)) = (&setup, model.as_ref()) {
                    let started = std::time::Instant::now();
                    let outcome =
                        search::rerank(&index, m, &s.reranker, text, &mut hits, s.depth, &s.roots)?;
                    rerank_seconds += started.elapsed().as_secs_f64();
                    reranked_queries += 1;
                    reranked = true;
                    notices.print(&outcome.notices);
                }
                hits
            }
            eval::QueryKind::Image(path) => {
                image_queries += 1;
                let decoded = ingest::decode_file(path, &decode_options_for(model.as_ref()))
                    .with_context(|| format!("query {}", q.id))?;
                searcher.search_image(&decoded.image, &opts)?
            }
        };
        // trec_eval orders a run by score; after reranking the first-stage scores no longer
        // follow the list's order, so a reranked list is scored by rank (n, n-1, ..., 1).
        let n = hits.len();
        let ranked: Vec<eval::Ranked> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| eval::Ranked {
                docid: h.id.clone(),
                score: if reranked { (n - i) as f32 } else { h.score },
            })
            .collect();
        if let Some(w) = run_out.as_mut() {
            eval::write_run(w, &q.id, &ranked, "cxr")?;
        }
        scores.push(eval::QueryScores {
            id: q.id.clone(),
            group: q.group.clone(),
            ndcg: eval::ndcg_at_k(&ranked, judged, args.k),
            p: eval::precision_at_k(&ranked, judged, args.k),
        });
    }
    if let Some(mut w) = run_out {
        w.flush()?;
    }
    if let Some(s) = &setup {
        if image_queries > 0 {
            eprintln!(
                "cxr: --rerank scores image-text pairs: {image_queries} image queries were ranked \
                 by the first stage alone"
            );
        }
        if reranked_queries > 0 {
            eprintln!(
                "cxr: reranked the top {} hits of {reranked_queries} text queries ({}): {:.1} ms \
                 per query for the second stage (image decoding and the reranker)",
                s.depth,
                s.dir.display(),
                rerank_seconds * 1000.0 / reranked_queries as f64
            );
        }
    }
    let report = eval::EvalReport::from_scores(args.k, scores);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        report.write_table(&mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(index_dir: &Path, json: bool) -> Result<ExitCode> {
    let report = cxr_index::check(index_dir)
        .with_context(|| format!("checking index {}", index_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
        println!(
            "{}: {}",
            index_dir.display(),
            if report.ok() { "ok" } else { "DAMAGED" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_info(index_dir: &Path, json: bool) -> Result<ExitCode> {
    let index =
        Index::open(index_dir).with_context(|| format!("opening index {}", index_dir.display()))?;
    let m = index.manifest();
    if json {
        println!("{}", serde_json::to_string(m)?);
    } else {
        println!("index      {}", index_dir.display());
        if m.deleted_count > 0 {
            println!(
                "documents  {} (and {} deleted, whose space `cxr compact` reclaims)",
                index.len(),
                m.deleted_count
            );
        } else {
            println!("documents  {}", index.len());
        }
        println!(
            "vectors    {} x {} ({})",
            m.vector_count, m.spec.dim, m.vector_storage
        );
        println!(
            "segments   {} sealed and the active one ({} vectors; sealed at {})",
            m.files.sealed.len(),
            m.active_rows(),
            m.segment_rows
        );
        println!(
            "graph      HNSW, M {}, ef_construction {}",
            m.hnsw.max_nb_connection, m.hnsw.ef_construction
        );
        println!(
            "model      {} ({})",
            m.spec.model_name, m.spec.model_fingerprint
        );
        println!("format     {}", m.format_version);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_model_init(
    dir: &Path,
    preset: Preset,
    seed: u64,
    vocab_from: &[PathBuf],
    name: String,
) -> Result<ExitCode> {
    if dir.join("model.safetensors").exists() {
        bail!("{}: already holds a model; remove it first", dir.display());
    }
    let mut corpus = Vec::new();
    for path in vocab_from {
        let table = ReportTable::load(path, &TableColumns::default())?;
        corpus.extend(table.reports().iter().filter_map(|r| r.text()));
    }
    if corpus.is_empty() {
        bail!("no report text found in --vocab-from tables");
    }
    let opts = InitOptions {
        name,
        preset,
        seed,
        corpus,
    };
    let model = model::init_random(dir, &opts)?;
    println!(
        "created {} ({}, embed dim {}, fingerprint {})",
        dir.display(),
        model.name(),
        model.dim(),
        model.fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_train(args: TrainArgs) -> Result<ExitCode> {
    let opts = cxr_search::train::TrainOptions {
        data: args.data,
        out: args.out,
        init: args.init,
        preset: args.preset,
        name: args.name,
        epochs: args.epochs,
        batch_size: args.batch_size,
        text_per_batch: args.text_per_batch,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup: args.warmup,
        alpha: args.alpha,
        text_weight: args.text_weight,
        clip_norm: args.clip_norm,
        seed: args.seed,
        augment: !args.no_augment,
        sources: args.sources,
        resume: args.resume,
        progress: !args.quiet,
    };
    let started = std::time::Instant::now();
    let reports = cxr_search::train::train(&opts)?;
    if let Some(last) = reports.last() {
        println!(
            "trained {} epochs into {} in {:.0}s; last epoch mean loss {:.4}, NIH valid mean \
             zero-shot AUC {}",
            reports.len(),
            opts.out.display(),
            started.elapsed().as_secs_f64(),
            last.mean_loss,
            last.valid_mean_auc
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_train_reranker(args: TrainRerankerArgs) -> Result<ExitCode> {
    use cxr_search::rerank;
    let model = args.model.unwrap_or_else(model::default_model_dir);
    let out = args.out.unwrap_or_else(|| rerank::default_dir(&model));
    let opts = rerank::train::RerankTrainOptions {
        data: args.data,
        model,
        out,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup: args.warmup,
        clip_norm: args.clip_norm,
        seed: args.seed,
        sources: args.sources,
        augment: !args.no_augment,
        num_queries: args.queries,
        hidden_size: args.width,
        num_layers: args.layers,
        warm_start: !args.cold_start,
        mining_scale: args.mining_scale,
        progress: !args.quiet,
    };
    let started = std::time::Instant::now();
    let history = rerank::train::train(&opts)?;
    if let Some(last) = history.last() {
        let f = |a: Option<f64>| a.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        println!(
            "trained the reranker for {} epochs into {} in {:.0}s; NIH valid: ITM accuracy {:.3}, \
             mean AUC of the match probability {} (the model's cosine: {})",
            history.len(),
            opts.out.display(),
            started.elapsed().as_secs_f64(),
            last.valid_itm_accuracy,
            f(last.valid_mean_auc),
            f(last.valid_mean_dual_auc)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_classify(args: ClassifyArgs) -> Result<ExitCode> {
    use cxr_search::classify;
    let names: Vec<String> = match &args.findings {
        Some(f) => f
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => classify::DEFAULT_FINDINGS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let prompts = classify::resolve_all(&names)?;
    let model_dir = args
        .model
        .model
        .clone()
        .unwrap_or_else(model::default_model_dir);
    let model = load_model(&args.model)?;
    let scale = classify::stored_scale(&model_dir).unwrap_or(classify::MAX_SCALE);
    let zs = classify::ZeroShot::new(&model, prompts.clone(), scale)?;

    let mut files = Vec::new();
    for item in walk::walk(&args.images) {
        match item {
            Ok(path) => files.push(path),
            Err((path, reason)) => eprintln!("cxr: {}: {reason}", path.display()),
        }
    }
    let decode_options = decode_options_for(Some(&model));
    let mut ids = Vec::new();
    let mut embeddings = Vec::new();
    let mut failed = 0usize;
    for chunk in files.chunks(args.batch_size.max(1)) {
        let mut inputs = Vec::new();
        for path in chunk {
            match ingest::decode_file(path, &decode_options) {
                Ok(d) => {
                    inputs.push(model.prepare_image(&d.image));
                    ids.push(path.clone());
                }
                Err(e) => {
                    eprintln!("cxr: {}: {e}", path.display());
                    failed += 1;
                }
            }
        }
        embeddings.extend(model.embed_inputs(&inputs)?);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match &args.labels {
        None => {
            if !args.json {
                write!(out, "{:<40}", "image")?;
                for p in &prompts {
                    write!(out, " {:>12}", p.name)?;
                }
                writeln!(out)?;
            }
            for (path, emb) in ids.iter().zip(&embeddings) {
                let scores = zs.score(emb);
                if args.json {
                    let map: serde_json::Map<String, serde_json::Value> = scores
                        .iter()
                        .map(|s| (s.finding.clone(), serde_json::json!(s.probability)))
                        .collect();
                    let v = serde_json::json!({"image": path.display().to_string(), "scores": map});
                    writeln!(out, "{v}")?;
                } else {
                    write!(out, "{:<40}", file_name(path))?;
                    for s in &scores {
                        write!(out, " {:>12.4}", s.probability)?;
                    }
                    writeln!(out)?;
                }
            }
        }
        Some(csv_path) => {
            let records = cxr_search::train::data::read_nih_labels(csv_path)?;
            let by_name: std::collections::HashMap<String, Vec<String>> = records
                .into_iter()
                .map(|r| (file_name(Path::new(&r.path)), r.labels))
                .collect();
            let mut kept_emb = Vec::new();
            let mut kept_labels = Vec::new();
            let mut unlabelled = 0usize;
            for (path, emb) in ids.iter().zip(&embeddings) {
                match by_name.get(&file_name(path)) {
                    Some(l) => {
                        kept_emb.push(emb.clone());
                        kept_labels.push(l.clone());
                    }
                    None => unlabelled += 1,
                }
            }
            if kept_emb.is_empty() {
                bail!("{}: labels no image given", csv_path.display());
            }
            if unlabelled > 0 {
                eprintln!(
                    "cxr: {unlabelled} images have no row in {}",
                    csv_path.display()
                );
            }
            let aucs = zs.auc(&kept_emb, &kept_labels);
            if args.json {
                let per: serde_json::Map<String, serde_json::Value> = prompts
                    .iter()
                    .zip(&aucs)
                    .map(|(p, a)| (p.name.clone(), serde_json::json!(a)))
                    .collect();
                let v = serde_json::json!({
                    "images": kept_emb.len(),
                    "scale": scale,
                    "auc": per,
                    "mean_auc": classify::mean_auc(&aucs),
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "zero-shot ROC AUC over {} images (scale {scale:.1}):",
                    kept_emb.len()
                )?;
                write!(out, "{}", classify::auc_table(&prompts, &aucs))?;
            }
        }
    }
    Ok(if embeddings.is_empty() {
        eprintln!("cxr: no image could be classified ({failed} failed)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
