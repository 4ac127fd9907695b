//! `cxr train-reranker`: trains the Q-Former over a frozen dual encoder with BLIP-2's two
//! first-stage objectives (Li et al. 2023), as ELIXR-B does (Xu et al. 2023):
//!
//! - **ITC**: symmetric InfoNCE between the query outputs (alone, without the text) and the
//!   text's [CLS] state, the similarity being the best query's cosine, with a learnable
//!   temperature. Targets are label-aware: every in-batch pair whose label sets are equal is a
//!   positive (half the NIH images are "No Finding": one-hot targets would call most of their
//!   true pairs negatives).
//! - **ITM**: a binary match head over queries that read the text and the image together. Each
//!   image gets one negative text and each text one negative image, mined from the batch by the
//!   *frozen* dual encoder: among the items whose label set differs, one drawn with probability
//!   `softmax(mining_scale * cosine)` (BLIP's hard-negative sampling), so the head learns what
//!   the first stage confuses.
//!
//! Data: NIH `train/` images with a fresh templated report each time they are drawn
//! (`crate::train::data`), augmentation as in `cxr train`; NIH `valid/` is scored after every
//! epoch (ITM accuracy against hard negatives, and per-finding AUC of the match probability of
//! the finding's prompt, beside the dual encoder's own cosine AUC for the same prompt); `test/` is
//! never read. AdamW with linear warm-up and cosine decay (`crate::train::learning_rate`), seeded
//! initialisation, shuffling, templates, augmentation and mining.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::qformer::{QFormer, QFormerConfig, INIT_LOGIT_SCALE};
use super::{itm_probabilities, RerankerConfig, TrainedFor, CONFIG_FILE, FORMAT, WEIGHTS_FILE};
use crate::classify;
use crate::model::DualEncoder;
use crate::train::metrics::roc_auc;
use crate::train::rng::Rng;
use crate::train::{augment, data, learning_rate};

/// Default scale of the dual encoder's cosines when drawing hard negatives: about the default
/// model's learnt CLIP scale (14), so a negative twice as similar is far likelier, not certain.
/// 0 draws uniformly among the items with another label set.
pub const MINING_SCALE: f32 = 14.0;

/// One training batch: prepared images, their texts and label vectors (item `i` is image `i`
/// with text `i`).
#[derive(Debug, Clone, Default)]
pub struct RerankBatch {
    pub images: Vec<Vec<f32>>,
    pub texts: Vec<String>,
    pub labels: Vec<Vec<f32>>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StepLoss {
    pub loss: f32,
    pub itc: f32,
    pub itm: f32,
    /// Negatives the ITM head saw (at most two per item).
    pub negatives: usize,
}

/// The Q-Former's variables and optimisers over a frozen dual encoder.
pub struct RerankTrainer<'a> {
    model: &'a DualEncoder,
    varmap: VarMap,
    qformer: QFormer,
    decay: AdamW,
    plain: AdamW,
    /// Scale of the hard-negative draw ([`MINING_SCALE`] unless set).
    pub mining_scale: f32,
}

/// The shape of the Q-Former for `model`: the image side is read off the tower by running it
/// once on a blank input.
pub fn config_for(
    model: &DualEncoder,
    num_queries: usize,
    hidden_size: usize,
    num_layers: usize,
) -> Result<QFormerConfig> {
    let p = model
        .preprocess_config()
        .context("the reranker needs a model with an image tower")?;
    let blank = vec![vec![0f32; p.channels * p.image_size * p.image_size]];
    let tokens = model.image_patch_tokens(&model.input_tensor(&blank)?)?;
    let (_, cells, channels) = tokens.dims3()?;
    let (states, _) = model.text_token_states(&["x"])?;
    Ok(QFormerConfig {
        num_queries,
        hidden_size,
        num_layers,
        num_heads: (hidden_size / 32).max(1),
        intermediate_size: hidden_size * 2,
        image_hidden: channels,
        image_tokens: cells,
        text_hidden: states.dim(2)?,
        // The model's own space: the ITC text head can start as the model's text projection.
        itc_dim: model.dim(),
        layer_norm_eps: 1e-6,
    })
}

impl<'a> RerankTrainer<'a> {
    /// A fresh Q-Former with seeded weights: normal(0, 0.02) matrices, query tokens and position
    /// embeddings, zero biases, unit norm gains, CLIP's initial temperature. With `warm_start`,
    /// the image-token, text-token and ITC text projections start as the model's own heads into
    /// its shared space where the shapes allow (see [`DualEncoder::projection_weights`]): with
    /// 600 training images a projection learnt from scratch overfits before it aligns anything.
    pub fn new(
        model: &'a DualEncoder,
        cfg: &QFormerConfig,
        seed: u64,
        warm_start: bool,
    ) -> Result<Self> {
        let device = model.device().clone();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let qformer = QFormer::new(cfg, vb)?;
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_9f0e);
        let mut named: Vec<(String, candle_core::Var)> = {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
        };
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut decay, mut plain) = (Vec::new(), Vec::new());
        for (name, var) in named {
            let shape = var.shape().clone();
            let n = shape.elem_count();
            let is_norm = name.contains("norm");
            let values: Vec<f32> = if name == "logit_scale" {
                vec![INIT_LOGIT_SCALE as f32; n]
            } else if name.ends_with("bias") {
                vec![0.0; n]
            } else if is_norm {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * normal(&mut rng)).collect()
            };
            let warm = warm_start
                .then(|| model.projection_weights())
                .flatten()
                .and_then(|(visual, text)| match name.as_str() {
                    "image_proj.weight" => Some(visual),
                    "text_proj.weight" | "itc_text.weight" => Some(text),
                    _ => None,
                })
                .filter(|w| w.dims() == shape.dims());
            match warm {
                Some(w) => var.set(&w.to_dtype(DType::F32)?.to_device(&device)?)?,
                None => var.set(&Tensor::from_vec(values, shape, &device)?)?,
            }
            // Weight decay on matrices only, as in `cxr train`.
            if var.rank() >= 2 && !is_norm {
                decay.push(var);
            } else {
                plain.push(var);
            }
        }
        let params = ParamsAdamW {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.0,
        };
        Ok(Self {
            model,
            varmap,
            qformer,
            decay: AdamW::new(decay, params.clone())?,
            plain: AdamW::new(plain, params)?,
            mining_scale: MINING_SCALE,
        })
    }

    pub fn qformer(&self) -> &QFormer {
        &self.qformer
    }

    /// ITC + ITM loss of a batch; `rng` draws the hard negatives.
    pub fn loss(&self, batch: &RerankBatch, rng: &mut Rng) -> Result<(Tensor, StepLoss)> {
        let scale = self.mining_scale;
        let b = batch.images.len();
        if b < 2 || batch.texts.len() != b || batch.labels.len() != b {
            bail!("a reranker batch needs at least two images, each with a text and labels");
        }
        let m = self.model;
        let pixels = m.input_tensor(&batch.images)?;
        let tokens = m.image_patch_tokens(&pixels)?.detach();
        let texts: Vec<&str> = batch.texts.iter().map(String::as_str).collect();
        let (states, mask) = m.text_token_states(&texts)?;
        let states = states.detach();
        let device = tokens.device().clone();

        // ITC, label-aware targets.
        let same: Vec<Vec<bool>> = (0..b)
            .map(|i| (0..b).map(|j| batch.labels[i] == batch.labels[j]).collect())
            .collect();
        let target_rows: Vec<f32> = same
            .iter()
            .flat_map(|row| {
                let n = row.iter().filter(|&&s| s).count().max(1) as f32;
                row.iter().map(move |&s| if s { 1.0 / n } else { 0.0 })
            })
            .collect();
        let targets = Tensor::from_vec(target_rows, (b, b), &device)?;
        let sim = self.qformer.itc_similarity(
            &self.qformer.itc_image(&tokens)?,
            &self.qformer.itc_text(&states)?,
        )?;
        let logits = sim.broadcast_mul(&self.qformer.itc_scale()?)?;
        // `same` is symmetric, so the text->image targets are the same matrix.
        let itc = ((soft_cross_entropy(&logits, &targets)?
            + soft_cross_entropy(&logits.t()?.contiguous()?, &targets)?)?
            / 2.0)?;

        // ITM with negatives mined by the frozen dual encoder.
        let image_emb = m.embed_inputs(&batch.images)?;
        let text_emb = m.embed_texts(&texts)?;
        let cos = |i: usize, j: usize| -> f32 {
            image_emb[i]
                .iter()
                .zip(&text_emb[j])
                .map(|(a, b)| a * b)
                .sum()
        };
        let mut image_idx: Vec<u32> = (0..b as u32).collect();
        let mut text_idx: Vec<u32> = (0..b as u32).collect();
        let mut labels: Vec<u32> = vec![1; b];
        // Image i's negative text, then text j's negative image.
        for (i, row) in same.iter().enumerate() {
            let candidates: Vec<(usize, f32)> = (0..b)
                .filter(|&j| !row[j])
                .map(|j| (j, cos(i, j)))
                .collect();
            if let Some(j) = draw(&candidates, scale, rng) {
                image_idx.push(i as u32);
                text_idx.push(j as u32);
                labels.push(0);
            }
        }
        for (j, col) in same.iter().enumerate() {
            // `same` is symmetric: row j is column j.
            let candidates: Vec<(usize, f32)> = (0..b)
                .filter(|&i| !col[i])
                .map(|i| (i, cos(i, j)))
                .collect();
            if let Some(i) = draw(&candidates, scale, rng) {
                image_idx.push(i as u32);
                text_idx.push(j as u32);
                labels.push(0);
            }
        }
        let negatives = labels.len() - b;
        let n = labels.len();
        let ii = Tensor::from_vec(image_idx, n, &device)?;
        let ti = Tensor::from_vec(text_idx, n, &device)?;
        let itm_logits = self.qformer.itm_logits(
            &tokens.index_select(&ii, 0)?,
            &states.index_select(&ti, 0)?,
            &mask.index_select(&ti, 0)?,
        )?;
        let itm =
            candle_nn::loss::cross_entropy(&itm_logits, &Tensor::from_vec(labels, n, &device)?)?;
        let loss = (&itc + &itm)?;
        let parts = StepLoss {
            loss: loss.to_scalar::<f32>()?,
            itc: itc.to_scalar::<f32>()?,
            itm: itm.to_scalar::<f32>()?,
            negatives,
        };
        Ok((loss, parts))
    }

    /// One AdamW step with global gradient-norm clipping at `clip_norm` (0: none).
    pub fn step(
        &mut self,
        batch: &RerankBatch,
        rng: &mut Rng,
        lr: f64,
        weight_decay: f64,
        clip_norm: f64,
    ) -> Result<StepLoss> {
        let (loss, parts) = self.loss(batch, rng)?;
        let mut grads = loss.backward()?;
        let all = self.varmap.all_vars();
        let mut sq = 0f64;
        for var in &all {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if clip_norm > 0.0 && norm > clip_norm {
            let factor = clip_norm / (norm + 1e-6);
            for var in &all {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    grads.insert(var.as_tensor(), (g * factor)?);
                }
            }
        }
        let mut params = self.decay.params().clone();
        params.lr = lr;
        params.weight_decay = weight_decay;
        self.decay.set_params(params.clone());
        params.weight_decay = 0.0;
        self.plain.set_params(params);
        self.decay.step(&grads)?;
        self.plain.step(&grads)?;
        Ok(parts)
    }

    /// ITM match probabilities of one text with each prepared image.
    pub fn match_probabilities(&self, text: &str, images: &[Vec<f32>]) -> Result<Vec<f32>> {
        let (states, mask) = self.model.text_token_states(&[text])?;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(64) {
            let tokens = self
                .model
                .image_patch_tokens(&self.model.input_tensor(chunk)?)?;
            out.extend(itm_probabilities(&self.qformer, &tokens, &states, &mask)?);
        }
        Ok(out)
    }

    /// Writes `config.json` and `model.safetensors` (through a temporary file and a rename).
    pub fn save(&self, dir: &Path, training: serde_json::Value) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = RerankerConfig {
            format: FORMAT.to_string(),
            qformer: self.qformer.config().clone(),
            dual_encoder: TrainedFor {
                name: self.model.name().to_string(),
                fingerprint: self.model.fingerprint().to_string(),
            },
            training,
        };
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        self.varmap.save(&tmp)?;
        std::fs::rename(&tmp, dir.join(WEIGHTS_FILE))?;
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec_pretty(&config)?)?;
        Ok(())
    }
}

/// `-sum_j t_ij log softmax_j(logits_ij)`, averaged over rows.
fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (logp * targets)?.sum(D::Minus1)?.mean_all()?.neg()
}

/// Draws one candidate with probability `softmax(scale * cosine)`; `None` when there is none.
fn draw(candidates: &[(usize, f32)], scale: f32, rng: &mut Rng) -> Option<usize> {
    let max = candidates
        .iter()
        .map(|c| c.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = candidates
        .iter()
        .map(|c| (scale * (c.1 - max)).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    if candidates.is_empty() || total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut u = rng.uniform() * total;
    for (c, w) in candidates.iter().zip(&weights) {
        if u < *w {
            return Some(c.0);
        }
        u -= w;
    }
    candidates.last().map(|c| c.0)
}

/// Box-Muller over the seeded generator.
fn normal(rng: &mut Rng) -> f32 {
    let u1 = (rng.uniform() + 0.5 / (1u64 << 24) as f32).min(1.0);
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// `cxr train-reranker` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankTrainOptions {
    pub data: PathBuf,
    pub model: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming up.
    pub warmup: f64,
    pub clip_norm: f64,
    pub seed: u64,
    pub sources: String,
    pub augment: bool,
    pub num_queries: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// Start the token projections from the model's own heads (see [`RerankTrainer::new`]).
    pub warm_start: bool,
    /// Scale of the hard-negative draw (0: uniform among other label sets).
    pub mining_scale: f32,
    #[serde(skip)]
    pub progress: bool,
}

/// One epoch's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankEpoch {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f32,
    pub mean_itc: f32,
    pub mean_itm: f32,
    pub seconds: f64,
    pub itc_scale: f32,
    /// NIH valid: ITM accuracy over each image's own templated text and its hardest
    /// different-label text (threshold 0.5).
    pub valid_itm_accuracy: f64,
    /// NIH valid, per finding prompt: AUC of the reranker's match probability, and of the dual
    /// encoder's cosine with the same prompt (the first stage's ranking signal).
    pub valid_auc: Vec<FindingAuc>,
    pub valid_mean_auc: Option<f64>,
    pub valid_mean_dual_auc: Option<f64>,
}

/// One finding's validation AUCs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingAuc {
    pub finding: String,
    pub prompt: String,
    pub reranker: Option<f64>,
    pub dual_encoder: Option<f64>,
}

/// NIH valid, prepared once: inputs, labels, the ITM accuracy pairs.
struct Validation {
    inputs: Vec<Vec<f32>>,
    labels: Vec<Vec<String>>,
    /// Per image: its own templated text and its hardest different-label text.
    positive_texts: Vec<String>,
    negative_texts: Vec<String>,
    image_emb: Vec<Vec<f32>>,
    /// The frozen image tower's tokens of every valid image.
    tokens: Tensor,
}

impl Validation {
    fn new(data_dir: &Path, model: &DualEncoder) -> Result<Self> {
        let (inputs, records) = data::nih_split(data_dir, "valid", model)?;
        let mut rng = Rng::new(0x7a11d);
        let items: Vec<(String, Vec<f32>)> = records
            .iter()
            .map(|r| {
                let text = data::ItemText::NihTemplate(r.labels.clone()).draw(&mut rng);
                (text, label_vector(&r.labels))
            })
            .collect();
        let mut image_emb = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(64) {
            image_emb.extend(model.embed_inputs(chunk)?);
        }
        let texts: Vec<&str> = items.iter().map(|t| t.0.as_str()).collect();
        let mut text_emb = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            text_emb.extend(model.embed_texts(chunk)?);
        }
        let mut negative_texts = Vec::with_capacity(items.len());
        for (i, emb) in image_emb.iter().enumerate() {
            let hardest = (0..items.len())
                .filter(|&j| items[j].1 != items[i].1)
                .max_by(|&a, &b| dot(emb, &text_emb[a]).total_cmp(&dot(emb, &text_emb[b])))
                .context("NIH valid has one label set only: no negatives to validate with")?;
            negative_texts.push(items[hardest].0.clone());
        }
        let mut tokens = Vec::new();
        for chunk in inputs.chunks(64) {
            tokens.push(model.image_patch_tokens(&model.input_tensor(chunk)?)?);
        }
        Ok(Self {
            tokens: Tensor::cat(&tokens, 0)?,
            inputs,
            labels: records.into_iter().map(|r| r.labels).collect(),
            positive_texts: items.into_iter().map(|t| t.0).collect(),
            negative_texts,
            image_emb,
        })
    }

    /// Match probabilities of text `k` with image `k`, for every `k`.
    fn paired(&self, trainer: &RerankTrainer, texts: &[String]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len());
        for start in (0..texts.len()).step_by(64) {
            let len = (texts.len() - start).min(64);
            let chunk: Vec<&str> = texts[start..start + len]
                .iter()
                .map(String::as_str)
                .collect();
            let (states, mask) = trainer.model.text_token_states(&chunk)?;
            let logits =
                trainer
                    .qformer
                    .itm_logits(&self.tokens.narrow(0, start, len)?, &states, &mask)?;
            out.extend(
                candle_nn::ops::softmax(&logits, 1)?
                    .narrow(1, 1, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(out)
    }

    fn run(&self, trainer: &RerankTrainer) -> Result<(f64, Vec<FindingAuc>)> {
        let model = trainer.model;
        let pos = self.paired(trainer, &self.positive_texts)?;
        let neg = self.paired(trainer, &self.negative_texts)?;
        let correct =
            pos.iter().filter(|&&p| p > 0.5).count() + neg.iter().filter(|&&p| p <= 0.5).count();
        let accuracy = correct as f64 / (pos.len() + neg.len()).max(1) as f64;
        let prompts = classify::resolve_all(&classify::DEFAULT_FINDINGS)?;
        let mut aucs = Vec::new();
        for p in &prompts {
            let truth: Vec<bool> = self
                .labels
                .iter()
                .map(|l| classify::nih_positive(p.finding, l))
                .collect();
            let (states, mask) = model.text_token_states(&[p.phrase()])?;
            let probs = itm_probabilities(&trainer.qformer, &self.tokens, &states, &mask)?;
            let q = model.embed_texts(&[p.phrase()])?;
            let cos: Vec<f32> = self.image_emb.iter().map(|e| dot(e, &q[0])).collect();
            aucs.push(FindingAuc {
                finding: p.name.clone(),
                prompt: p.phrase().to_string(),
                reranker: roc_auc(&probs, &truth),
                dual_encoder: roc_auc(&cos, &truth),
            });
        }
        Ok((accuracy, aucs))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn label_vector(labels: &[String]) -> Vec<f32> {
    let findings: Vec<usize> = labels
        .iter()
        .flat_map(|l| crate::train::vocab::nih_findings(l).iter().copied())
        .collect();
    crate::train::vocab::multi_hot(&findings)
}

fn mean(xs: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The validation table printed after each epoch.
pub fn auc_table(aucs: &[FindingAuc]) -> String {
    let f = |a: Option<f64>| a.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "  {:<14} {:<38} {:>9} {:>13}\n",
        "finding", "prompt", "reranker", "dual encoder"
    );
    for a in aucs {
        s.push_str(&format!(
            "  {:<14} {:<38} {:>9} {:>13}\n",
            a.finding,
            a.prompt,
            f(a.reranker),
            f(a.dual_encoder)
        ));
    }
    s.push_str(&format!(
        "  {:<14} {:<38} {:>9} {:>13}\n",
        "mean",
        "",
        f(mean(aucs.iter().map(|a| a.reranker))),
        f(mean(aucs.iter().map(|a| a.dual_encoder)))
    ));
    s
}

/// Runs `cxr train-reranker`; returns the epochs' reports. Writes `--out` after every epoch.
pub fn train(opts: &RerankTrainOptions) -> Result<Vec<RerankEpoch>> {
    let device = Device::Cpu;
    if opts.out.join(WEIGHTS_FILE).exists() {
        bail!(
            "{} already holds a reranker; remove it or choose another --out",
            opts.out.display()
        );
    }
    let model = DualEncoder::load(&opts.model, &device)
        .with_context(|| format!("loading model {}", opts.model.display()))?;
    let cfg = config_for(&model, opts.num_queries, opts.hidden_size, opts.num_layers)?;
    let mut trainer = RerankTrainer::new(&model, &cfg, opts.seed, opts.warm_start)?;
    trainer.mining_scale = opts.mining_scale;
    let started = Instant::now();
    let sources = data::Sources::parse(&opts.sources)?;
    if sources.iu {
        bail!("--sources iu: IU reports have no images; the reranker trains on image-text pairs");
    }
    let (images, _) = data::training_data(&opts.data, sources, &model)?;
    if images.len() < 2 {
        bail!("fewer than two training images (sources: {})", opts.sources);
    }
    let validation = Validation::new(&opts.data, &model)?;
    eprintln!(
        "cxr: {} image-text pairs, {} validation images ({:.1}s to load); Q-Former: {} queries, \
         width {}, {} layers over {} image cells x {} channels",
        images.len(),
        validation.inputs.len(),
        started.elapsed().as_secs_f64(),
        cfg.num_queries,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.image_tokens,
        cfg.image_hidden
    );
    let size = model
        .preprocess_config()
        .map(|p| p.image_size)
        .unwrap_or_default();
    let batch_size = opts.batch_size.max(2);
    let steps_per_epoch = images.len().div_ceil(batch_size);
    let total_steps = steps_per_epoch * opts.epochs;
    let warmup = ((total_steps as f64 * opts.warmup).round() as usize).max(1);
    let mut step = 0usize;
    let mut history = Vec::new();
    let (accuracy, aucs) = validation.run(&trainer)?;
    eprintln!(
        "cxr: before training: ITM accuracy on NIH valid {accuracy:.3}; AUC of the match \
         probability per finding prompt:\n{}",
        auc_table(&aucs)
    );
    for epoch in 0..opts.epochs {
        let epoch_start = Instant::now();
        let mut rng = Rng::new(
            opts.seed
                .wrapping_mul(0x2000_0003)
                .wrapping_add(epoch as u64),
        );
        let mut order: Vec<usize> = (0..images.len()).collect();
        rng.shuffle(&mut order);
        let bar = if opts.progress {
            indicatif::ProgressBar::new(steps_per_epoch as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, opts.epochs));
        let (mut sum, mut sum_itc, mut sum_itm, mut n) = (0f64, 0f64, 0f64, 0usize);
        for chunk in order.chunks(batch_size) {
            if chunk.len() < 2 {
                continue;
            }
            let mut batch = RerankBatch::default();
            for &i in chunk {
                let item = &images[i];
                batch.images.push(if opts.augment {
                    augment(&item.input, size, &mut rng)
                } else {
                    item.input.clone()
                });
                batch.texts.push(item.text.draw(&mut rng));
                batch.labels.push(item.labels.clone());
            }
            let lr = learning_rate(opts.lr, step, warmup, total_steps);
            let r = trainer.step(&batch, &mut rng, lr, opts.weight_decay, opts.clip_norm)?;
            step += 1;
            n += 1;
            sum += r.loss as f64;
            sum_itc += r.itc as f64;
            sum_itm += r.itm as f64;
            let msg = format!(
                "loss {:.3} (itc {:.3} itm {:.3}) lr {lr:.1e}",
                r.loss, r.itc, r.itm
            );
            if opts.progress && bar.is_hidden() && n % 5 == 0 {
                eprintln!("cxr: epoch {} step {n}/{steps_per_epoch}: {msg}", epoch + 1);
            }
            bar.set_message(msg);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = epoch_start.elapsed().as_secs_f64();
        let (accuracy, aucs) = validation.run(&trainer)?;
        let scale = trainer
            .qformer
            .itc_scale()
            .and_then(|s| s.to_scalar::<f32>())
            .unwrap_or(f32::NAN);
        let report = RerankEpoch {
            epoch: epoch + 1,
            steps: n,
            mean_loss: (sum / n.max(1) as f64) as f32,
            mean_itc: (sum_itc / n.max(1) as f64) as f32,
            mean_itm: (sum_itm / n.max(1) as f64) as f32,
            seconds,
            itc_scale: scale,
            valid_itm_accuracy: accuracy,
            valid_mean_auc: mean(aucs.iter().map(|a| a.reranker)),
            valid_mean_dual_auc: mean(aucs.iter().map(|a| a.dual_encoder)),
            valid_auc: aucs,
        };
        eprintln!(
            "cxr: epoch {}/{}: loss {:.4} (itc {:.4}, itm {:.4}), {:.0}s; NIH valid: ITM accuracy \
             {:.3}, AUC of the match probability per finding prompt:\n{}",
            epoch + 1,
            opts.epochs,
            report.mean_loss,
            report.mean_itc,
            report.mean_itm,
            seconds,
            accuracy,
            auc_table(&report.valid_auc)
        );
        history.push(report);
        let training = serde_json::json!({
            "options": opts,
            "epochs_done": epoch + 1,
            "seconds": started.elapsed().as_secs_f64(),
            "history": history,
        });
        trainer.save(&opts.out, training)?;
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::GreyImage;
    use crate::model::{self, InitOptions, Preset};
    use crate::rerank::{RerankError, Reranker};
    use crate::train::vocab;

    const BRIGHT: &str = "pleural effusion.";
    const DARK: &str = "cardiomegaly.";

    fn tiny_model(dir: &Path, seed: u64) -> DualEncoder {
        let corpus: Vec<String> = [BRIGHT, DARK, "no acute cardiopulmonary abnormality."]
            .iter()
            .cycle()
            .take(60)
            .map(|s| s.to_string())
            .collect();
        model::init_random(
            dir,
            &InitOptions {
                name: format!("tiny{seed}"),
                preset: Preset::Test,
                seed,
                corpus,
            },
        )
        .unwrap();
        DualEncoder::load(dir, &Device::Cpu).unwrap()
    }

    /// A 32x32 image around `level` with seeded noise.
    fn image(model: &DualEncoder, level: f32, rng: &mut Rng) -> Vec<f32> {
        let pixels = (0..32 * 32)
            .map(|_| (level + 0.2 * (rng.uniform() - 0.5)).clamp(0.0, 1.0))
            .collect();
        model.prepare_image(&GreyImage {
            width: 32,
            height: 32,
            pixels,
        })
    }

    fn batch(model: &DualEncoder, rng: &mut Rng) -> RerankBatch {
        let mut b = RerankBatch::default();
        for k in 0..8 {
            let bright = k % 2 == 0;
            b.images
                .push(image(model, if bright { 0.85 } else { 0.15 }, rng));
            b.texts.push(if bright { BRIGHT } else { DARK }.to_string());
            b.labels
                .push(vocab::multi_hot(&[if bright { 1 } else { 2 }]));
        }
        b
    }

    /// Mean match probability of `text` with fresh bright (or dark) images.
    fn mean_match(t: &RerankTrainer, text: &str, level: f32, rng: &mut Rng) -> f32 {
        let imgs: Vec<Vec<f32>> = (0..6).map(|_| image(t.model, level, rng)).collect();
        let p = t.match_probabilities(text, &imgs).unwrap();
        p.iter().sum::<f32>() / p.len() as f32
    }

    #[test]
    fn a_briefly_trained_reranker_scores_matching_pairs_above_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path(), 1);
        let cfg = config_for(&model, 4, 32, 1).unwrap();
        let mut trainer = RerankTrainer::new(&model, &cfg, 0, false).unwrap();
        let mut rng = Rng::new(5);
        let steps = 200;
        let mut first = None;
        let mut last = 0.0;
        for step in 0..steps {
            let b = batch(&model, &mut rng);
            let lr = learning_rate(3e-3, step, 3, steps);
            let r = trainer.step(&b, &mut rng, lr, 0.0, 1.0).unwrap();
            assert_eq!(r.negatives, 16, "every item has a different-label partner");
            first.get_or_insert(r.loss);
            last = r.loss;
        }
        assert!(last < first.unwrap(), "loss {first:?} -> {last}");
        let mut rng = Rng::new(99);
        let bb = mean_match(&trainer, BRIGHT, 0.85, &mut rng);
        let bd = mean_match(&trainer, DARK, 0.85, &mut rng);
        let db = mean_match(&trainer, BRIGHT, 0.15, &mut rng);
        let dd = mean_match(&trainer, DARK, 0.15, &mut rng);
        assert!(
            bb > bd + 0.2 && dd > db + 0.2,
            "bright: own {bb:.3} other {bd:.3}; dark: own {dd:.3} other {db:.3}"
        );

        // Saved and loaded, it scores the same; another model is refused.
        let out = dir.path().join("reranker");
        trainer.save(&out, serde_json::json!({})).unwrap();
        let loaded = Reranker::load(&out, &model, &Device::Cpu).unwrap();
        let imgs: Vec<Vec<f32>> = (0..3).map(|_| image(&model, 0.85, &mut rng)).collect();
        let a = loaded.score(BRIGHT, &imgs).unwrap();
        let b = trainer.match_probabilities(BRIGHT, &imgs).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        let other_dir = tempfile::tempdir().unwrap();
        let other = tiny_model(other_dir.path(), 2);
        match Reranker::load(&out, &other, &Device::Cpu) {
            Err(e @ RerankError::ModelMismatch { .. }) => {
                assert!(e.to_string().contains("tiny1"), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a reranker loaded for another model"),
        }
        assert!(matches!(
            Reranker::load(
                other_dir.path().join("none").as_path(),
                &model,
                &Device::Cpu
            ),
            Err(RerankError::NotFound { .. })
        ));
        // A model folder is not a reranker folder, and says so.
        assert!(matches!(
            Reranker::load(dir.path(), &model, &Device::Cpu),
            Err(RerankError::Config { .. })
        ));
    }

    #[test]
    fn a_warm_start_copies_the_models_heads() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path(), 4);
        let (visual, text) = model.projection_weights().unwrap();
        // Width = the model's embedding size, so every head fits.
        let cfg = config_for(&model, 2, model.dim(), 1).unwrap();
        let warm = RerankTrainer::new(&model, &cfg, 0, true).unwrap();
        let cold = RerankTrainer::new(&model, &cfg, 0, false).unwrap();
        let get = |t: &RerankTrainer, name: &str| {
            t.varmap.data().lock().unwrap()[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let v = visual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let t = text.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(get(&warm, "image_proj.weight"), v);
        assert_eq!(get(&warm, "text_proj.weight"), t);
        assert_eq!(get(&warm, "itc_text.weight"), t);
        assert_ne!(get(&cold, "image_proj.weight"), v);
        // Everything else is the same seeded draw.
        assert_eq!(get(&warm, "query_tokens"), get(&cold, "query_tokens"));
    }

    #[test]
    fn padding_in_a_batch_of_texts_does_not_change_a_score() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path(), 3);
        let cfg = config_for(&model, 4, 32, 2).unwrap();
        let trainer = RerankTrainer::new(&model, &cfg, 1, false).unwrap();
        let img = image(&model, 0.5, &mut Rng::new(1));
        let tokens = model
            .image_patch_tokens(&model.input_tensor(&[img.clone(), img]).unwrap())
            .unwrap();
        // Alone, the short text has no padding; beside a longer one it is padded.
        let (s1, m1) = model.text_token_states(&[DARK]).unwrap();
        let alone = trainer
            .qformer
            .itm_logits(&tokens.narrow(0, 0, 1).unwrap(), &s1, &m1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let long = "pleural effusion. cardiomegaly. no acute cardiopulmonary abnormality.";
        let (s2, m2) = model.text_token_states(&[DARK, long]).unwrap();
        assert!(
            s2.dim(1).unwrap() > s1.dim(1).unwrap(),
            "no padding happened"
        );
        let padded = trainer
            .qformer
            .itm_logits(&tokens, &s2, &m2)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in alone[0].iter().zip(&padded[0]) {
            assert!((a - b).abs() < 1e-5, "{alone:?} vs {padded:?}");
        }
    }
}
