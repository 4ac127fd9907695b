//! `cxr model init`, `cxr train` and `cxr train-reranker`: making and training models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use cxr_search::ingest::reports::{ReportTable, TableColumns};
use cxr_search::model::{self, InitOptions, Preset};

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
pub(crate) struct TrainRerankerArgs {
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
pub(crate) struct TrainArgs {
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

#[derive(Subcommand)]
pub(crate) enum ModelCommand {
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

pub(crate) fn cmd_model_init(
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

pub(crate) fn cmd_train(args: TrainArgs) -> Result<ExitCode> {
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

pub(crate) fn cmd_train_reranker(args: TrainRerankerArgs) -> Result<ExitCode> {
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
