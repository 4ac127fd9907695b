//! The dual encoder: image tower, text tower, linear projections into a shared space, and the
//! tokenizer, loaded from a model folder.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear_no_bias, Linear, VarBuilder};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::config::{ImageTowerConfig, ModelConfig, TextTowerConfig};
use super::preprocess::to_model_input;
use super::towers::{BertTower, VitTower};
use crate::ingest::GreyImage;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a model folder: {reason} (create one with `cxr model init DIR`)")]
    NotAModel { path: PathBuf, reason: String },
    #[error("{path}: bad config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: cannot load tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A loaded dual encoder, ready to embed images and text into the same normalised space.
pub struct DualEncoder {
    config: ModelConfig,
    image_tower: VitTower,
    text_tower: BertTower,
    visual_projection: Linear,
    text_projection: Linear,
    tokenizer: Tokenizer,
    fingerprint: String,
    device: Device,
}

impl DualEncoder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config_path = dir.join(CONFIG_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        for p in [&config_path, &weights_path, &tokenizer_path] {
            if !p.is_file() {
                return Err(ModelError::NotAModel {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "{} is missing",
                        p.file_name().unwrap_or_default().to_string_lossy()
                    ),
                });
            }
        }
        let config_bytes = std::fs::read(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: ModelConfig =
            serde_json::from_slice(&config_bytes).map_err(|e| ModelError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        let tok_err = |e: tokenizers::Error| ModelError::Tokenizer {
            path: tokenizer_path.clone(),
            reason: e.to_string(),
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(tok_err)?;
        // Long reports are cut to the text tower's positions, keeping [CLS] ... [SEP].
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: config.text.max_len(),
                ..Default::default()
            }))
            .map_err(tok_err)?;
        tokenizer.with_padding(None);
        let fingerprint = fingerprint(&config_bytes, &weights_path)?;
        // SAFETY: the weights file is memory-mapped read-only; it must not be modified while the
        // model is loaded (model folders are written once).
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, device) }
                .map_err(|source| ModelError::Weights {
                    path: weights_path.clone(),
                    source,
                })?;
        let weights_err = |source| ModelError::Weights {
            path: weights_path.clone(),
            source,
        };
        Self::from_var_builder(config, tokenizer, fingerprint, vb, device).map_err(weights_err)
    }

    /// Builds the model from any variable source (a checkpoint, or a `VarMap` for training and
    /// initialisation).
    pub fn from_var_builder(
        config: ModelConfig,
        tokenizer: Tokenizer,
        fingerprint: String,
        vb: VarBuilder,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let image_tower = match &config.image {
            ImageTowerConfig::Vit { config: c, .. } => VitTower::new(c, vb.pp("vision_model"))?,
        };
        let text_tower = match &config.text {
            TextTowerConfig::Bert { config: c, .. } => BertTower::new(c, vb.pp("text_model"))?,
        };
        let visual_projection = linear_no_bias(
            config.image.hidden_size(),
            config.embed_dim,
            vb.pp("visual_projection"),
        )?;
        let text_projection = linear_no_bias(
            config.text.hidden_size(),
            config.embed_dim,
            vb.pp("text_projection"),
        )?;
        Ok(Self {
            config,
            image_tower,
            text_tower,
            visual_projection,
            text_projection,
            tokenizer,
            fingerprint,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Identifies the exact weights and configuration; an index built by one model refuses
    /// queries embedded by another.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn dim(&self) -> usize {
        self.config.embed_dim
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Preprocesses one image on the CPU; the result feeds [`Self::embed_inputs`]. Kept separate
    /// so decode workers can prepare inputs while the device runs the previous batch.
    pub fn prepare_image(&self, image: &GreyImage) -> Vec<f32> {
        to_model_input(image, self.config.image.preprocess())
    }

    /// Embeds prepared images (each from [`Self::prepare_image`]); returns one unit vector each.
    pub fn embed_inputs(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.config.image.preprocess();
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let pixels = Tensor::from_vec(
            flat,
            (inputs.len(), p.channels, p.image_size, p.image_size),
            &self.device,
        )?;
        let embeddings = self.encode_pixels(&pixels)?;
        Ok(l2_normalise(&embeddings)?.to_vec2::<f32>()?)
    }

    /// Projected, *unnormalised* image embeddings of a `(batch, channels, size, size)` tensor of
    /// prepared pixels, as a tensor that stays on the autograd graph (for training).
    pub fn encode_pixels(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let features = self.image_tower.forward(pixels)?;
        self.visual_projection.forward(&features)
    }

    /// The tokenizer (truncating to the text tower's positions, no padding).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds decoded images; returns one unit vector each.
    pub fn embed_images(&self, images: &[GreyImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let inputs: Vec<Vec<f32>> = images.iter().map(|i| self.prepare_image(i)).collect();
        self.embed_inputs(&inputs)
    }

    /// Embeds texts (queries or report sentences); returns one unit vector each.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let embeddings = self.encode_texts(texts)?;
        Ok(l2_normalise(&embeddings)?.to_vec2::<f32>()?)
    }

    /// Projected, *unnormalised* text embeddings `(texts, dim)`, as a tensor that stays on the
    /// autograd graph (for training). `texts` must not be empty.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let (ids, mask) = self.tokenize(texts)?;
        let features = self.text_tower.forward(&ids, &mask)?;
        Ok(self.text_projection.forward(&features)?)
    }

    /// Token ids and attention mask, both `(texts, longest)` u32, padded with 0 after each text.
    pub fn tokenize(&self, texts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let max_len = self.config.text.max_len();
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len().min(max_len))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encodings {
            let n = e.get_ids().len().min(len);
            ids.extend_from_slice(&e.get_ids()[..n]);
            mask.extend(std::iter::repeat_n(1u32, n));
            ids.extend(std::iter::repeat_n(0u32, len - n));
            mask.extend(std::iter::repeat_n(0u32, len - n));
        }
        Ok((
            Tensor::from_vec(ids, (texts.len(), len), &self.device)?,
            Tensor::from_vec(mask, (texts.len(), len), &self.device)?,
        ))
    }
}

fn l2_normalise(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&(norm + 1e-12)?)
}

/// SHA-256 over the config and the weights, shortened to 16 hex digits.
fn fingerprint(config: &[u8], weights: &Path) -> Result<String, ModelError> {
    let mut hasher = Sha256::new();
    hasher.update(config);
    let mut file = std::fs::File::open(weights).map_err(|source| ModelError::Io {
        path: weights.to_path_buf(),
        source,
    })?;
    std::io::copy(&mut file, &mut hasher).map_err(|source| ModelError::Io {
        path: weights.to_path_buf(),
        source,
    })?;
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}
