//! The reranker: an ELIXR-B-style image-text matcher (Xu et al. 2023, arXiv:2308.01317) that
//! re-orders the first candidates of a text query.
//!
//! The first stage (vector search, maybe fused with BM25) compares one query vector with one
//! image vector: everything the image says has been pooled into 128 numbers before the query is
//! known. The reranker looks again with the query in hand: a small Q-Former ([`qformer`],
//! BLIP-2's design, Li et al. 2023) lets learned query tokens read the text's tokens and the
//! image tower's spatial feature map together and outputs a match probability (ITM). That costs a
//! forward pass per candidate, which is why it runs on the top `N` only.
//!
//! A reranker folder (by default `reranker/` inside the model folder) holds `config.json` (the
//! network's shape, the dual encoder it was trained against, how it was trained) and
//! `model.safetensors`. It reads the *frozen* dual encoder's towers, so it only works with the
//! exact model it was trained with: [`Reranker::load`] checks the model's fingerprint.

pub mod qformer;
pub mod train;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::model::{DualEncoder, ModelError};
pub use qformer::{QFormer, QFormerConfig};

/// Folder name of a model's reranker, inside the model folder.
pub const RERANKER_DIR: &str = "reranker";
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// What `config.json`'s `format` must say.
pub const FORMAT: &str = "cxr-reranker";

/// Why a reranker could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error(
        "{dir}: no reranker here ({CONFIG_FILE} is missing); train one with `cxr train-reranker \
         --model MODEL --out MODEL/reranker`, or pass --reranker DIR"
    )]
    NotFound { dir: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a reranker config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "{dir}: this reranker was trained for model {trained_name} ({trained_fingerprint}), not \
         for {model_name} ({model_fingerprint}); it reads that model's towers and cannot serve \
         another. Train one for this model with `cxr train-reranker`"
    )]
    ModelMismatch {
        dir: PathBuf,
        trained_name: String,
        trained_fingerprint: String,
        model_name: String,
        model_fingerprint: String,
    },
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The dual encoder a reranker was trained against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedFor {
    pub name: String,
    pub fingerprint: String,
}

/// A reranker's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankerConfig {
    /// Always [`FORMAT`]: a folder of another kind is named as such.
    pub format: String,
    pub qformer: QFormerConfig,
    pub dual_encoder: TrainedFor,
    /// How it was trained (options and per-epoch validation); informational.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// A loaded reranker over a loaded dual encoder.
pub struct Reranker<'a> {
    model: &'a DualEncoder,
    qformer: QFormer,
    config: RerankerConfig,
}

impl<'a> Reranker<'a> {
    /// Loads the reranker in `dir` for `model`, refusing one trained for another model.
    pub fn load(dir: &Path, model: &'a DualEncoder, device: &Device) -> Result<Self, RerankError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(RerankError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let bytes = std::fs::read(&config_path).map_err(|source| RerankError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: RerankerConfig =
            serde_json::from_slice(&bytes).map_err(|e| RerankError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        if config.format != FORMAT {
            return Err(RerankError::Config {
                path: config_path,
                reason: format!("format is `{}`, expected `{FORMAT}`", config.format),
            });
        }
        if config.dual_encoder.fingerprint != model.fingerprint() {
            return Err(RerankError::ModelMismatch {
                dir: dir.to_path_buf(),
                trained_name: config.dual_encoder.name.clone(),
                trained_fingerprint: config.dual_encoder.fingerprint.clone(),
                model_name: model.name().to_string(),
                model_fingerprint: model.fingerprint().to_string(),
            });
        }
        let weights = dir.join(WEIGHTS_FILE);
        let weights_err = |source| RerankError::Weights {
            path: weights.clone(),
            source,
        };
        if !weights.is_file() {
            return Err(RerankError::Io {
                path: weights.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        // SAFETY: read-only mapping of a file written once by `cxr train-reranker`.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .map_err(weights_err)?;
        let qformer = QFormer::new(&config.qformer, vb).map_err(weights_err)?;
        Ok(Self {
            model,
            qformer,
            config,
        })
    }

    /// Builds a reranker from parts (training, tests).
    pub fn from_parts(model: &'a DualEncoder, qformer: QFormer, config: RerankerConfig) -> Self {
        Self {
            model,
            qformer,
            config,
        }
    }

    pub fn config(&self) -> &RerankerConfig {
        &self.config
    }

    /// ITM match probability of `query` with each image (`images`: prepared inputs from
    /// [`DualEncoder::prepare_image`]), in order; in batches of at most 64 images, one batch
    /// per thread on the CPU.
    pub fn score(&self, query: &str, images: &[Vec<f32>]) -> Result<Vec<f32>, RerankError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let (states, mask) = self.model.text_token_states(&[query])?;
        // On the CPU a chunk per thread, as batch embedding does (`model::threads`).
        let parallel = self.model.device().is_cpu();
        crate::model::threads::map_chunks(images, parallel, 64, |chunk| {
            let pixels = self.model.input_tensor(chunk)?;
            let tokens = self.model.image_patch_tokens(&pixels)?;
            Ok(itm_probabilities(&self.qformer, &tokens, &states, &mask)?)
        })
    }
}

/// Match probabilities of every image token set `(b, cells, c)` with one text `(1, len, h)`.
pub(crate) fn itm_probabilities(
    qformer: &QFormer,
    tokens: &Tensor,
    states: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Vec<f32>> {
    let b = tokens.dim(0)?;
    let (_, len, h) = states.dims3()?;
    let states = states.broadcast_as((b, len, h))?.contiguous()?;
    let mask = mask.broadcast_as((b, len))?.contiguous()?;
    let logits = qformer.itm_logits(tokens, &states, &mask)?;
    candle_nn::ops::softmax(&logits, 1)?
        .i((.., 1))?
        .to_vec1::<f32>()
}

/// Where a model's reranker lives unless `--reranker` says otherwise.
pub fn default_dir(model_dir: &Path) -> PathBuf {
    model_dir.join(RERANKER_DIR)
}
