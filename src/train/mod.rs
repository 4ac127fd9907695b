//! Contrastive training of the dual encoder (`cxr train`): ELIXR-C / CLIP symmetric InfoNCE with a
//! learnable temperature, MedCLIP-style label-aware soft targets (see [`loss`]), AdamW with linear
//! warm-up and cosine decay, global-norm gradient clipping, seeded shuffling, templating and
//! augmentation, a checkpoint every epoch and zero-shot AUC on NIH `valid/` after each.

pub mod data;
pub mod loss;
pub mod metrics;
pub mod rng;
pub mod towers;
pub mod vocab;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::classify::{self, ZeroShot, LOGIT_SCALE_TENSOR, MAX_SCALE};
use crate::model::{
    self, DualEncoder, InitOptions, ModelConfig, Preset, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};
use loss::LossParts;
use rng::Rng;

/// CLIP's initial temperature 0.07.
pub const INIT_LOGIT_SCALE: f32 = 2.659_26; // ln(1 / 0.07)

/// File in the output folder recording where training stands.
pub const STATE_FILE: &str = "train_state.json";

/// One training batch: `N` images (flattened prepared inputs) and `B >= N` texts; image `r`
/// belongs to item `image_items[r]`.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub image_items: Vec<usize>,
    pub texts: Vec<String>,
    pub labels: Vec<Vec<f32>>,
}

/// Hyper-parameters of one optimisation step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StepParams {
    pub lr: f64,
    pub weight_decay: f64,
    /// Weight of the own pair in the soft targets.
    pub alpha: f32,
    /// Weight of the text-text term.
    pub text_weight: f64,
    /// Global gradient-norm limit (0: none).
    pub clip_norm: f64,
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepResult {
    pub loss: f32,
    pub parts: LossParts,
    pub grad_norm: f32,
    pub scale: f32,
}

/// The model's variables, the model built over them, the temperature and the optimisers.
pub struct Trainer {
    varmap: VarMap,
    model: DualEncoder,
    towers: towers::TrainTowers,
    logit_scale: Var,
    decay: AdamW,
    plain: AdamW,
    config: ModelConfig,
    tokenizer_json: Vec<u8>,
    pub optimizer_steps: usize,
}

impl Trainer {
    /// Loads a model folder (any folder `DualEncoder::load` reads) as the starting point; its
    /// `logit_scale`, when present, is kept.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config: ModelConfig = serde_json::from_slice(
            &std::fs::read(dir.join(CONFIG_FILE))
                .with_context(|| format!("reading {}", dir.join(CONFIG_FILE).display()))?,
        )
        .with_context(|| format!("parsing {}", dir.join(CONFIG_FILE).display()))?;
        let tokenizer_json = std::fs::read(dir.join(TOKENIZER_FILE))
            .with_context(|| format!("reading {}", dir.join(TOKENIZER_FILE).display()))?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_json)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(TOKENIZER_FILE).display()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.text.max_len(),
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        tokenizer.with_padding(None);

        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = DualEncoder::from_var_builder(
            config.clone(),
            tokenizer,
            String::new(),
            vb.clone(),
            device,
        )?;
        let towers = towers::TrainTowers::new(&config, vb.clone())?;
        vb.get_with_hints(
            (),
            LOGIT_SCALE_TENSOR,
            candle_nn::Init::Const(INIT_LOGIT_SCALE as f64),
        )?;
        let weights = dir.join(WEIGHTS_FILE);
        let stored = candle_core::safetensors::load(&weights, device)
            .with_context(|| format!("reading {}", weights.display()))?;
        let (vars, logit_scale) = {
            let data = varmap.data().lock().expect("variable map lock");
            let mut missing = Vec::new();
            for (name, var) in data.iter() {
                match stored.get(name) {
                    Some(t) => var
                        .set(&t.to_dtype(DType::F32)?)
                        .with_context(|| format!("{}: {name}", weights.display()))?,
                    None if name == LOGIT_SCALE_TENSOR => {}
                    None => missing.push(name.clone()),
                }
            }
            if !missing.is_empty() {
                missing.sort();
                bail!(
                    "{}: lacks {} tensors the model needs, e.g. {}",
                    weights.display(),
                    missing.len(),
                    missing[0]
                );
            }
            let mut named: Vec<(String, Var)> =
                data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            (named, data[LOGIT_SCALE_TENSOR].clone())
        };
        // Weight decay on matrices only (CLIP): not on biases, LayerNorm gains, the temperature.
        let (mut decay, mut plain) = (Vec::new(), Vec::new());
        for (name, var) in vars {
            if var.rank() >= 2 && !name.contains("LayerNorm") && !name.contains("layernorm") {
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
            decay: AdamW::new(decay, params.clone())?,
            plain: AdamW::new(plain, params)?,
            varmap,
            model,
            towers,
            logit_scale,
            config,
            tokenizer_json,
            optimizer_steps: 0,
        })
    }

    /// The model over the current weights (for validation and embedding).
    pub fn model(&self) -> &DualEncoder {
        &self.model
    }

    /// `exp(logit_scale)`.
    pub fn scale(&self) -> f32 {
        self.logit_scale
            .as_tensor()
            .to_scalar::<f32>()
            .map(f32::exp)
            .unwrap_or(MAX_SCALE)
    }

    /// The loss of a batch without updating anything.
    pub fn loss(&self, batch: &Batch, alpha: f32, text_weight: f64) -> Result<(Tensor, LossParts)> {
        if batch.texts.is_empty() || batch.image_items.is_empty() {
            bail!("a batch needs at least one image and one text");
        }
        let p = self.config.image.preprocess();
        let device = self.model.device();
        let pixels = Tensor::from_slice(
            &batch.pixels,
            (
                batch.image_items.len(),
                p.channels,
                p.image_size,
                p.image_size,
            ),
            device,
        )?;
        let images = self.towers.images(&pixels)?;
        let texts: Vec<&str> = batch.texts.iter().map(String::as_str).collect();
        let (ids, mask) = self.model.tokenize(&texts)?;
        let texts = self.towers.texts(&ids, &mask)?;
        let targets = loss::soft_targets(&batch.image_items, &batch.labels, alpha);
        let scale = self.logit_scale.as_tensor().exp()?;
        Ok(loss::contrastive_loss(
            &images,
            &texts,
            &scale,
            &targets,
            text_weight,
        )?)
    }

    /// One AdamW step on a batch.
    pub fn step(&mut self, batch: &Batch, hp: &StepParams) -> Result<StepResult> {
        let (loss, parts) = self.loss(batch, hp.alpha, hp.text_weight)?;
        let mut grads = loss.backward()?;
        let all = self.varmap.all_vars();
        let mut sq = 0f64;
        for var in &all {
            if let Some(g) = grads.get(var.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let grad_norm = sq.sqrt();
        if hp.clip_norm > 0.0 && grad_norm > hp.clip_norm {
            let factor = hp.clip_norm / (grad_norm + 1e-6);
            for var in &all {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    grads.insert(var.as_tensor(), (g * factor)?);
                }
            }
        }
        let mut params = self.decay.params().clone();
        params.lr = hp.lr;
        params.weight_decay = hp.weight_decay;
        self.decay.set_params(params.clone());
        params.weight_decay = 0.0;
        self.plain.set_params(params);
        self.decay.step(&grads)?;
        self.plain.step(&grads)?;
        // CLIP clips the temperature parameter at ln(100).
        let max = MAX_SCALE.ln();
        if self.logit_scale.as_tensor().to_scalar::<f32>()? > max {
            self.logit_scale
                .set(&Tensor::new(max, self.model.device())?)?;
        }
        self.optimizer_steps += 1;
        Ok(StepResult {
            loss: loss.to_scalar::<f32>()?,
            parts,
            grad_norm: grad_norm as f32,
            scale: self.scale(),
        })
    }

    /// Writes `config.json`, `tokenizer.json` and `model.safetensors` (with `logit_scale`) into
    /// `dir`; the weights go through a temporary file and a rename.
    pub fn save(&self, dir: &Path, name: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut config = self.config.clone();
        if let Some(n) = name {
            config.name = n.to_string();
        }
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec_pretty(&config)?)?;
        std::fs::write(dir.join(TOKENIZER_FILE), &self.tokenizer_json)?;
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        self.varmap.save(&tmp)?;
        std::fs::rename(&tmp, dir.join(WEIGHTS_FILE))?;
        Ok(())
    }
}

/// `cxr train` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub init: Option<PathBuf>,
    #[serde(skip, default = "default_preset")]
    pub preset: Preset,
    pub name: String,
    pub epochs: usize,
    /// Image items per batch.
    pub batch_size: usize,
    /// Text-only (IU) items added to each batch.
    pub text_per_batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming up.
    pub warmup: f64,
    pub alpha: f32,
    pub text_weight: f64,
    pub clip_norm: f64,
    pub seed: u64,
    pub augment: bool,
    pub sources: String,
    pub resume: bool,
    pub progress: bool,
}

fn default_preset() -> Preset {
    Preset::Tiny64
}

/// What `train_state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps completed (the learning-rate schedule's position).
    pub step: usize,
    /// AdamW updates applied in this run (moments restart on resume).
    pub optimizer_steps: usize,
    pub total_steps: usize,
    pub logit_scale: f32,
    pub options: TrainOptions,
    pub history: Vec<EpochReport>,
}

/// One epoch's summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f32,
    pub seconds: f64,
    pub items_per_second: f64,
    /// Zero-shot AUC on NIH `valid/`, per default finding, and their mean.
    pub valid_auc: Vec<(String, Option<f64>)>,
    pub valid_mean_auc: Option<f64>,
}

/// Linear warm-up to `base`, then cosine decay to 0.
pub fn learning_rate(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Small seeded augmentation of a prepared `(1, s, s)` input: a shift of up to `s/16` pixels
/// with edge replication, contrast x[0.9, 1.1] and brightness +-0.1 (in normalised units). No
/// flips: laterality matters on a chest radiograph.
pub fn augment(input: &[f32], size: usize, rng: &mut Rng) -> Vec<f32> {
    let channels = input.len() / (size * size).max(1);
    let max_shift = (size / 16).max(1) as i64;
    let dx = rng.below(2 * max_shift as usize + 1) as i64 - max_shift;
    let dy = rng.below(2 * max_shift as usize + 1) as i64 - max_shift;
    let contrast = 0.9 + 0.2 * rng.uniform();
    let bright = 0.2 * rng.uniform() - 0.1;
    let s = size as i64;
    let mut out = Vec::with_capacity(input.len());
    for c in 0..channels {
        let plane = &input[c * size * size..(c + 1) * size * size];
        for y in 0..s {
            let sy = (y - dy).clamp(0, s - 1);
            for x in 0..s {
                let sx = (x - dx).clamp(0, s - 1);
                out.push(plane[(sy * s + sx) as usize] * contrast + bright);
            }
        }
    }
    out
}

/// Per-finding AUCs, their mean, and a printable table.
type Validation = (Vec<(String, Option<f64>)>, Option<f64>, String);

/// Zero-shot AUC of the trainer's model on NIH `valid/` inputs.
fn validate(trainer: &Trainer, inputs: &[Vec<f32>], labels: &[Vec<String>]) -> Result<Validation> {
    let prompts = classify::resolve_all(&classify::DEFAULT_FINDINGS)?;
    let zs = ZeroShot::new(trainer.model(), prompts.clone(), trainer.scale())?;
    let mut emb = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(64) {
        emb.extend(trainer.model().embed_inputs(chunk)?);
    }
    let aucs = zs.auc(&emb, labels);
    let table = classify::auc_table(&prompts, &aucs);
    let named = prompts
        .iter()
        .map(|p| p.name.clone())
        .zip(aucs.iter().copied())
        .collect();
    Ok((named, classify::mean_auc(&aucs), table))
}

/// Runs `cxr train`; returns the reports of the epochs run now.
pub fn train(opts: &TrainOptions) -> Result<Vec<EpochReport>> {
    let device = Device::Cpu;
    let weights = opts.out.join(WEIGHTS_FILE);
    let state_path = opts.out.join(STATE_FILE);
    let mut state: Option<TrainState> = None;
    let mut trainer = if opts.resume {
        let text = std::fs::read_to_string(&state_path).with_context(|| {
            format!(
                "--resume: reading {} (run without --resume first)",
                state_path.display()
            )
        })?;
        state = Some(serde_json::from_str(&text)?);
        Trainer::from_dir(&opts.out, &device)?
    } else {
        if weights.exists() {
            bail!(
                "{} already holds a model; pass --resume to continue it, or choose another --out",
                opts.out.display()
            );
        }
        match &opts.init {
            Some(dir) => Trainer::from_dir(dir, &device)?,
            None => {
                let corpus = data::vocabulary_corpus(&opts.data)?;
                model::init_random(
                    &opts.out,
                    &InitOptions {
                        name: opts.name.clone(),
                        preset: opts.preset,
                        seed: opts.seed,
                        corpus,
                    },
                )?;
                Trainer::from_dir(&opts.out, &device)?
            }
        }
    };

    let sources = data::Sources::parse(&opts.sources)?;
    let started = Instant::now();
    let (images, texts) = data::training_data(&opts.data, sources, trainer.model())?;
    if images.is_empty() {
        bail!("no training images (sources: {})", opts.sources);
    }
    let (valid_inputs, valid_records) = data::nih_split(&opts.data, "valid", trainer.model())?;
    let valid_labels: Vec<Vec<String>> = valid_records.into_iter().map(|r| r.labels).collect();
    eprintln!(
        "cxr: {} image-text pairs, {} text-only reports, {} validation images ({:.1}s to load)",
        images.len(),
        texts.len(),
        valid_labels.len(),
        started.elapsed().as_secs_f64()
    );

    let batch_size = opts.batch_size.max(2);
    let steps_per_epoch = images.len().div_ceil(batch_size);
    let total_steps = steps_per_epoch * opts.epochs;
    let warmup = ((total_steps as f64 * opts.warmup).round() as usize).max(1);
    let (first_epoch, mut step, mut history) = match &state {
        Some(s) => (s.epoch, s.step, s.history.clone()),
        None => (0, 0, Vec::new()),
    };
    if first_epoch >= opts.epochs {
        eprintln!("cxr: {} epochs already done", first_epoch);
        return Ok(Vec::new());
    }
    let size = trainer.config.image.preprocess().image_size;
    let mut reports = Vec::new();
    if first_epoch == 0 {
        let (_, mean, table) = validate(&trainer, &valid_inputs, &valid_labels)?;
        eprintln!(
            "cxr: before training: zero-shot AUC on NIH valid (mean {})\n{table}",
            mean.map(|m| format!("{m:.3}")).unwrap_or("-".into())
        );
    }
    for epoch in first_epoch..opts.epochs {
        let epoch_start = Instant::now();
        let mut rng = Rng::new(
            opts.seed
                .wrapping_mul(0x1000_0001)
                .wrapping_add(epoch as u64),
        );
        let mut order: Vec<usize> = (0..images.len()).collect();
        rng.shuffle(&mut order);
        let mut text_order: Vec<usize> = (0..texts.len()).collect();
        rng.shuffle(&mut text_order);
        let mut text_cursor = 0;
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
        let (mut loss_sum, mut loss_n, mut items) = (0f64, 0usize, 0usize);
        for chunk in order.chunks(batch_size) {
            let mut batch = Batch::default();
            for &i in chunk {
                let item = &images[i];
                let input = if opts.augment {
                    augment(&item.input, size, &mut rng)
                } else {
                    item.input.clone()
                };
                batch.pixels.extend(input);
                batch.image_items.push(batch.texts.len());
                batch.texts.push(item.text.draw(&mut rng));
                batch.labels.push(item.labels.clone());
            }
            for _ in 0..opts.text_per_batch.min(texts.len()) {
                let t = &texts[text_order[text_cursor % text_order.len()]];
                text_cursor += 1;
                batch.texts.push(t.text.clone());
                batch.labels.push(t.labels.clone());
            }
            let hp = StepParams {
                lr: learning_rate(opts.lr, step, warmup, total_steps),
                weight_decay: opts.weight_decay,
                alpha: opts.alpha,
                text_weight: opts.text_weight,
                clip_norm: opts.clip_norm,
            };
            let r = trainer.step(&batch, &hp)?;
            step += 1;
            loss_sum += r.loss as f64;
            loss_n += 1;
            items += batch.texts.len();
            let rate = items as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            let msg = format!(
                "loss {:.3} (i2t {:.3} t2i {:.3} t2t {:.3}) scale {:.1} lr {:.1e} {rate:.1} items/s",
                r.loss, r.parts.i2t, r.parts.t2i, r.parts.t2t, r.scale, hp.lr
            );
            // Without a terminal the bar is hidden: log a line every 5 steps instead.
            if opts.progress && bar.is_hidden() && loss_n % 5 == 0 {
                eprintln!(
                    "cxr: epoch {} step {loss_n}/{steps_per_epoch}: {msg}",
                    epoch + 1
                );
            }
            bar.set_message(msg);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = epoch_start.elapsed().as_secs_f64();
        let (valid_auc, valid_mean_auc, table) = validate(&trainer, &valid_inputs, &valid_labels)?;
        let report = EpochReport {
            epoch: epoch + 1,
            steps: loss_n,
            mean_loss: (loss_sum / loss_n.max(1) as f64) as f32,
            seconds,
            items_per_second: items as f64 / seconds.max(1e-9),
            valid_auc,
            valid_mean_auc,
        };
        eprintln!(
            "cxr: epoch {}/{}: mean loss {:.4}, {:.0}s, {:.1} items/s, scale {:.2}; zero-shot AUC on NIH valid:\n{table}",
            epoch + 1,
            opts.epochs,
            report.mean_loss,
            seconds,
            report.items_per_second,
            trainer.scale()
        );
        history.push(report.clone());
        reports.push(report);
        trainer.save(&opts.out, Some(&opts.name))?;
        let st = TrainState {
            epoch: epoch + 1,
            step,
            optimizer_steps: trainer.optimizer_steps,
            total_steps,
            logit_scale: trainer.scale().ln(),
            options: opts.clone(),
            history: history.clone(),
        };
        std::fs::write(&state_path, serde_json::to_vec_pretty(&st)?)?;
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        assert!((learning_rate(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(learning_rate(1.0, 100, 10, 100).abs() < 1e-12);
    }

    #[test]
    fn augment_keeps_shape_and_is_seeded() {
        let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let a = augment(&x, 8, &mut Rng::new(1));
        let b = augment(&x, 8, &mut Rng::new(1));
        assert_eq!(a.len(), 64);
        assert_eq!(a, b);
    }

    /// A fixed tiny data set: 4 generated images (bright/dark, stripes) and 6 texts.
    fn tiny_batch(size: usize) -> Batch {
        let mut batch = Batch::default();
        let findings = [vec![1usize], vec![2], vec![1], vec![0]];
        let texts = [
            "chest x-ray showing pleural effusion.",
            "chest x-ray showing cardiomegaly.",
            "small left pleural effusion.",
            "no acute cardiopulmonary abnormality.",
        ];
        for (k, f) in findings.iter().enumerate() {
            let pixels: Vec<f32> = (0..size * size)
                .map(|i| {
                    let (y, x) = (i / size, i % size);
                    match k {
                        0 => (y as f32 / size as f32) * 2.0 - 1.0,
                        1 => (x as f32 / size as f32) * 2.0 - 1.0,
                        2 => ((x + y) % 4) as f32 / 2.0 - 0.75,
                        _ => 0.5,
                    }
                })
                .collect();
            batch.pixels.extend(pixels);
            batch.image_items.push(k);
            batch.texts.push(texts[k].to_string());
            batch.labels.push(vocab::multi_hot(f));
        }
        batch.texts.push("cardiomegaly with pulmonary edema".into());
        batch.labels.push(vocab::multi_hot(&[2, 7]));
        batch
            .texts
            .push("no pneumothorax or pleural effusion".into());
        batch.labels.push(vocab::multi_hot(&[0]));
        batch
    }

    #[test]
    fn two_steps_decrease_the_loss_and_the_checkpoint_reloads() {
        let init = tempfile::tempdir().unwrap();
        let corpus: Vec<String> = tiny_batch(4)
            .texts
            .iter()
            .cycle()
            .take(60)
            .cloned()
            .collect();
        model::init_random(
            init.path(),
            &InitOptions {
                name: "t".into(),
                preset: Preset::Test,
                seed: 3,
                corpus,
            },
        )
        .unwrap();
        let mut trainer = Trainer::from_dir(init.path(), &Device::Cpu).unwrap();
        assert!((trainer.scale() - 1.0 / 0.07).abs() < 1e-3);
        let size = trainer.config.image.preprocess().image_size;
        let batch = tiny_batch(size);

        // The differentiable towers compute what the inference towers compute.
        let pixels = Tensor::from_slice(&batch.pixels, (4, 1, size, size), &Device::Cpu).unwrap();
        let ours = loss::l2_normalise(&trainer.towers.images(&pixels).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let inputs: Vec<Vec<f32>> = batch
            .pixels
            .chunks(size * size)
            .map(<[f32]>::to_vec)
            .collect();
        let theirs = trainer.model().embed_inputs(&inputs).unwrap();
        let texts: Vec<&str> = batch.texts.iter().map(String::as_str).collect();
        let (ids, mask) = trainer.model().tokenize(&texts).unwrap();
        let ours_t = loss::l2_normalise(&trainer.towers.texts(&ids, &mask).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let theirs_t = trainer.model().embed_texts(&texts).unwrap();
        for (a, b) in ours.iter().zip(&theirs).chain(ours_t.iter().zip(&theirs_t)) {
            let diff: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
            assert!(
                diff < 1e-3,
                "training and inference towers differ by {diff}"
            );
        }
        let hp = StepParams {
            lr: 1e-4,
            weight_decay: 0.01,
            alpha: 0.5,
            text_weight: 0.5,
            clip_norm: 1.0,
        };
        let first = trainer.step(&batch, &hp).unwrap();
        let second = trainer.step(&batch, &hp).unwrap();
        let (after, _) = trainer.loss(&batch, 0.5, 0.5).unwrap();
        let after = after.to_scalar::<f32>().unwrap();
        assert!(first.loss.is_finite() && first.grad_norm > 0.0);
        assert!(
            second.loss < first.loss && after < second.loss,
            "{} {} {after}",
            first.loss,
            second.loss
        );

        let out = tempfile::tempdir().unwrap();
        trainer.save(out.path(), Some("trained")).unwrap();
        let loaded = DualEncoder::load(out.path(), &Device::Cpu).unwrap();
        assert_eq!(loaded.name(), "trained");
        let a = loaded.embed_texts(&["pleural effusion"]).unwrap();
        let b = trainer.model().embed_texts(&["pleural effusion"]).unwrap();
        let diff: f32 = a[0].iter().zip(&b[0]).map(|(x, y)| (x - y).abs()).sum();
        assert!(diff < 1e-4, "{diff}");
        let scale = classify::stored_scale(out.path()).unwrap();
        assert!((scale - trainer.scale()).abs() < 1e-3);
        // Resuming from the checkpoint gives the same loss as the live trainer.
        let again = Trainer::from_dir(out.path(), &Device::Cpu).unwrap();
        let (l, _) = again.loss(&batch, 0.5, 0.5).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - after).abs() < 1e-4);
    }
}
