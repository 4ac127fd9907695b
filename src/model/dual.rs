//! The dual encoder: an image tower and a text tower (either may be absent), each with its head
//! into a shared space, its preprocessing or tokenizer, loaded from a model folder: the project's
//! own, or a public checkpoint layout (`checkpoint/`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{linear_no_bias, VarBuilder};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::checkpoint::{self, ModelLayout};
use super::cnn::CnnTower;
use super::config::{ImageTowerConfig, ModelConfig, TextTowerConfig};
use super::encoders::{ImageEncoder, ImageTower, Padding, Projection, TextEncoder, TextTower};
use super::prenorm_vit::{PreNormVit, PreNormVitConfig};
use super::preprocess::to_model_input;
use super::towers::BertTower;
use crate::ingest::GreyImage;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The most texts [`DualEncoder::embed_texts`] pads together on the CPU. Eight texts of a few
/// dozen tokens each are already a few hundred rows per product, enough for the matrix kernels;
/// smaller groups pad less.
const LENGTH_GROUP: usize = 8;

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
    #[error("{path}: incomplete checkpoint folder: {reason}")]
    IncompleteCheckpoint { path: PathBuf, reason: String },
    #[error("{path}: bad config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: cannot load tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: unsupported checkpoint: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error(
        "model {model} ({layout}) has no text tower: it embeds images only, so it serves \
         image-to-image search (`--image`), not text queries"
    )]
    NoTextTower { model: String, layout: ModelLayout },
    #[error("model {model} ({layout}) has no image tower: it embeds text only")]
    NoImageTower { model: String, layout: ModelLayout },
    #[error(
        "model {model} ({layout}): its {tower} tower exposes no per-token states; the reranker \
         needs the project's own image tower (CNN or ViT) and a BERT text tower"
    )]
    NoTokenStates {
        model: String,
        layout: ModelLayout,
        tower: &'static str,
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
    name: String,
    layout: ModelLayout,
    /// The project config, for project folders (training reads it).
    config: Option<ModelConfig>,
    embed_dim: usize,
    image: Option<ImageEncoder>,
    text: Option<TextEncoder>,
    fingerprint: String,
    device: Device,
}

impl DualEncoder {
    /// Loads a model folder: the project's own (`config.json` with `embed_dim`, `image`, `text`;
    /// `tokenizer.json`; `model.safetensors`) or a public checkpoint recognised by its files
    /// (see [`ModelLayout`]). The one entry point for indexing, search and classification.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let layout = checkpoint::detect(dir)?;
        if layout == ModelLayout::Project {
            return Self::load_project(dir, device);
        }
        let parts = checkpoint::load(dir, layout, device)?;
        let fingerprint = fingerprint_files(layout, &parts.files)?;
        let folder = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            name: folder,
            layout,
            config: None,
            embed_dim: parts.embed_dim,
            image: parts.image,
            text: parts.text,
            fingerprint,
            device: device.clone(),
        })
    }

    fn load_project(dir: &Path, device: &Device) -> Result<Self, ModelError> {
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

    /// Builds a project-format model from any variable source (a checkpoint, or a `VarMap` for
    /// training and initialisation).
    pub fn from_var_builder(
        config: ModelConfig,
        tokenizer: Tokenizer,
        fingerprint: String,
        vb: VarBuilder,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let image_tower = match &config.image {
            ImageTowerConfig::Vit { config: c, .. } => {
                let tower = PreNormVitConfig::hf_vit(c);
                ImageTower::Vit(PreNormVit::new(&tower, vb.pp("vision_model"))?)
            }
            ImageTowerConfig::Cnn { config: c, .. } => {
                ImageTower::Cnn(CnnTower::new(c, vb.pp("vision_model"))?)
            }
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
            name: config.name.clone(),
            layout: ModelLayout::Project,
            embed_dim: config.embed_dim,
            image: Some(ImageEncoder {
                tower: image_tower,
                projection: Projection::Linear(visual_projection),
                preprocess: config.image.preprocess().clone(),
            }),
            text: Some(TextEncoder {
                tower: TextTower::Bert(text_tower),
                projection: Projection::Linear(text_projection),
                tokenizer,
                max_len: config.text.max_len(),
                padding: Padding::Longest,
            }),
            config: Some(config),
            fingerprint,
            device: device.clone(),
        })
    }

    /// The project config, for models in the project's own format (`None` for public
    /// checkpoints, which keep their own configs).
    pub fn config(&self) -> Option<&ModelConfig> {
        self.config.as_ref()
    }

    /// Human-readable name recorded in every index the model builds: the project config's
    /// `name`, or a checkpoint's folder name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which on-disk layout the model was loaded from.
    pub fn layout(&self) -> ModelLayout {
        self.layout
    }

    /// Identifies the exact weights and configuration; an index built by one model refuses
    /// queries embedded by another.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn dim(&self) -> usize {
        self.embed_dim
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the model embeds images (all but text-only BERT models).
    pub fn has_image_tower(&self) -> bool {
        self.image.is_some()
    }

    /// Whether the model embeds text (all but image-only models such as RAD-DINO).
    pub fn has_text_tower(&self) -> bool {
        self.text.is_some()
    }

    fn image_encoder(&self) -> Result<&ImageEncoder, ModelError> {
        self.image.as_ref().ok_or_else(|| ModelError::NoImageTower {
            model: self.name.clone(),
            layout: self.layout,
        })
    }

    fn text_encoder(&self) -> Result<&TextEncoder, ModelError> {
        self.text.as_ref().ok_or_else(|| ModelError::NoTextTower {
            model: self.name.clone(),
            layout: self.layout,
        })
    }

    /// Preprocessing of the image tower; `None` for text-only models.
    pub fn preprocess_config(&self) -> Option<&super::PreprocessConfig> {
        self.image.as_ref().map(|i| &i.preprocess)
    }

    /// Preprocesses one image on the CPU; the result feeds [`Self::embed_inputs`]. Kept separate
    /// so decode workers can prepare inputs while the device runs the previous batch. Empty for
    /// text-only models (which [`Self::embed_inputs`] then refuses).
    pub fn prepare_image(&self, image: &GreyImage) -> Vec<f32> {
        match &self.image {
            Some(enc) => to_model_input(image, &enc.preprocess),
            None => Vec::new(),
        }
    }

    /// Embeds prepared images (each from [`Self::prepare_image`]); returns one unit vector each.
    pub fn embed_inputs(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.image_encoder()?;
        self.in_chunks(inputs, |chunk| self.embed_inputs_batch(chunk))
    }

    /// Runs `embed` over `items`: on the CPU a chunk per rayon thread (see
    /// [`super::threads`]), on a GPU whole.
    fn in_chunks<T: Sync>(
        &self,
        items: &[T],
        embed: impl Fn(&[T]) -> Result<Vec<Vec<f32>>, ModelError> + Sync,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        super::threads::map_chunks(items, self.device.is_cpu(), usize::MAX, embed)
    }

    fn embed_inputs_batch(&self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let enc = self.image_encoder()?;
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let p = &enc.preprocess;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        let pixels = Tensor::from_vec(
            flat,
            (inputs.len(), p.channels, p.image_size, p.image_size),
            &self.device,
        )?;
        let embeddings = enc.forward(&pixels)?;
        Ok(l2_normalise(&embeddings)?.to_vec2::<f32>()?)
    }

    /// Projected, *unnormalised* image embeddings of a `(batch, channels, size, size)` tensor of
    /// prepared pixels, as a tensor that stays on the autograd graph (for training).
    pub fn encode_pixels(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        match &self.image {
            Some(enc) => enc.forward(pixels),
            None => candle_core::bail!("model {} has no image tower", self.name),
        }
    }

    /// Prepared inputs (each from [`Self::prepare_image`]) as one `(batch, channels, size,
    /// size)` tensor on the model's device.
    pub fn input_tensor(&self, inputs: &[Vec<f32>]) -> Result<Tensor, ModelError> {
        let p = &self.image_encoder()?.preprocess;
        let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(
            flat,
            (inputs.len(), p.channels, p.image_size, p.image_size),
            &self.device,
        )?)
    }

    /// The linear heads into the shared space, `(visual, text)`, as `(embed_dim, hidden)` weight
    /// matrices, where both towers have a plain linear head (the project's own models); `None`
    /// otherwise. The reranker starts its token projections from them, so its image cells and
    /// text tokens begin in the space where the model already aligned images with text.
    pub fn projection_weights(&self) -> Option<(Tensor, Tensor)> {
        match (
            self.image.as_ref().map(|i| &i.projection),
            self.text.as_ref().map(|t| &t.projection),
        ) {
            (Some(Projection::Linear(v)), Some(Projection::Linear(t))) => {
                Some((v.weight().clone(), t.weight().clone()))
            }
            _ => None,
        }
    }

    /// The image tower's spatial tokens `(batch, cells, hidden)` of a `(batch, channels, size,
    /// size)` pixel tensor: the cells of the feature map the embedding is pooled from. The
    /// reranker's cross-attention reads them (ELIXR-B feeds the image encoder's patch tokens to
    /// its Q-Former). Inference mode; the embedding itself is unchanged.
    pub fn image_patch_tokens(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let enc = self.image_encoder()?;
        enc.tower
            .patch_tokens(pixels)?
            .ok_or_else(|| ModelError::NoTokenStates {
                model: self.name.clone(),
                layout: self.layout,
                tower: "image",
            })
    }

    /// The text tower's last-layer state of every token, `(texts, len, hidden)`, and the
    /// attention mask `(texts, len)` u32 of [`Self::tokenize`] (0 on padding, whose states mean
    /// nothing). Position 0 is the [CLS] token the text embedding is taken from.
    pub fn text_token_states(&self, texts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let enc = self.text_encoder()?;
        let (ids, mask) = self.tokenize(texts)?;
        let states =
            enc.tower
                .token_states(&ids, &mask)?
                .ok_or_else(|| ModelError::NoTokenStates {
                    model: self.name.clone(),
                    layout: self.layout,
                    tower: "text",
                })?;
        Ok((states, mask))
    }

    /// The tokenizer (truncating to the text tower's positions, no padding); `None` for
    /// image-only models.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.text.as_ref().map(|t| &t.tokenizer)
    }

    /// Embeds decoded images; returns one unit vector each.
    pub fn embed_images(&self, images: &[GreyImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.image_encoder()?;
        let inputs: Vec<Vec<f32>> = images.iter().map(|i| self.prepare_image(i)).collect();
        self.embed_inputs(&inputs)
    }

    /// Embeds texts (queries or report sentences); returns one unit vector each.
    ///
    /// On the CPU the texts run in groups of similar length, longest first, at most
    /// eight to a group (`LENGTH_GROUP`) and one group per rayon task: a batch padded to its longest
    /// text spends most of its products on padding when lengths vary (32 IU reports hold 1,554
    /// tokens, 4,096 once padded to the longest), and a group pads only to its own longest.
    /// Each text's embedding depends on its own tokens alone, so grouping changes no result
    /// beyond float rounding. On a GPU the batch runs whole.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let enc = self.text_encoder()?;
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.token_ids(texts)?;
        let group = if !self.device.is_cpu() {
            ids.len()
        } else {
            let per_thread = ids.len().div_ceil(rayon::current_num_threads().max(1));
            match enc.padding {
                // Every text is padded to the same length anyway: a chunk per thread.
                Padding::Fixed { .. } => per_thread,
                Padding::Longest => per_thread.min(LENGTH_GROUP),
            }
        };
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let groups: Vec<&[usize]> = order.chunks(group.max(1)).collect();
        let embed_group = |members: &&[usize]| -> Result<Vec<Vec<f32>>, ModelError> {
            let batch: Vec<&[u32]> = members.iter().map(|&i| ids[i].as_slice()).collect();
            let (t, mask) = self.pad(&batch)?;
            Ok(l2_normalise(&enc.forward(&t, &mask)?)?.to_vec2::<f32>()?)
        };
        let parts: Vec<Vec<Vec<f32>>> = if self.device.is_cpu() && groups.len() > 1 {
            use rayon::prelude::*;
            groups
                .par_iter()
                .map(embed_group)
                .collect::<Result<_, _>>()?
        } else {
            groups.iter().map(embed_group).collect::<Result<_, _>>()?
        };
        let mut out = vec![Vec::new(); ids.len()];
        for (members, part) in groups.iter().zip(parts) {
            for (&i, embedding) in members.iter().zip(part) {
                out[i] = embedding;
            }
        }
        Ok(out)
    }

    /// Projected, *unnormalised* text embeddings `(texts, dim)`, as a tensor that stays on the
    /// autograd graph (for training). `texts` must not be empty.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Tensor, ModelError> {
        let enc = self.text_encoder()?;
        let (ids, mask) = self.tokenize(texts)?;
        Ok(enc.forward(&ids, &mask)?)
    }

    /// Token ids and attention mask, both `(texts, len)` u32. Texts are padded after their end
    /// to the longest of the batch with id 0 and mask 0, or, for towers trained on fixed-length
    /// inputs (SigLIP), to that length with the model's pad id.
    pub fn tokenize(&self, texts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let ids = self.token_ids(texts)?;
        let batch: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.pad(&batch)
    }

    /// Each text's token ids, cut to the text tower's length.
    fn token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ModelError> {
        let enc = self.text_encoder()?;
        let encodings = enc
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(encodings
            .iter()
            .map(|e| {
                let ids = e.get_ids();
                ids[..ids.len().min(enc.max_len)].to_vec()
            })
            .collect())
    }

    /// Pads token ids into the `(texts, len)` ids and mask tensors [`Self::tokenize`] describes.
    fn pad(&self, batch: &[&[u32]]) -> Result<(Tensor, Tensor), ModelError> {
        let enc = self.text_encoder()?;
        let (len, pad_id) = match enc.padding {
            Padding::Longest => (
                batch.iter().map(|ids| ids.len()).max().unwrap_or(1).max(1),
                0,
            ),
            Padding::Fixed { length, pad_id } => (length, pad_id),
        };
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for text in batch {
            let n = text.len().min(len);
            ids.extend_from_slice(&text[..n]);
            mask.extend(std::iter::repeat_n(1u32, n));
            ids.extend(std::iter::repeat_n(pad_id, len - n));
            mask.extend(std::iter::repeat_n(0u32, len - n));
        }
        Ok((
            Tensor::from_vec(ids, (batch.len(), len), &self.device)?,
            Tensor::from_vec(mask, (batch.len(), len), &self.device)?,
        ))
    }
}

fn l2_normalise(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&(norm + 1e-12)?)
}

/// SHA-256 over the layout and the content of every file that defines a checkpoint (config,
/// preprocessing, tokenizer, weights), shortened to 16 hex digits.
fn fingerprint_files(layout: ModelLayout, files: &[PathBuf]) -> Result<String, ModelError> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{layout:?}").as_bytes());
    for path in files {
        let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        // Each file's length goes first so that content cannot shift between files.
        let len = file
            .metadata()
            .map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        hasher.update(len.to_le_bytes());
        std::io::copy(&mut file, &mut hasher).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::testing::small_model;

    /// Texts of many lengths, embedded in length groups on one thread and on three, give what
    /// one batch padded to the longest gives, each in its own place.
    #[test]
    fn length_groups_embed_as_one_padded_batch() {
        let words = "small left pleural effusion with no pneumothorax and mild cardiomegaly";
        let (dir, _, _) = small_model(7, words);
        let model = DualEncoder::load(dir.path(), &Device::Cpu).unwrap();
        let vocab: Vec<&str> = words.split(' ').collect();
        // Lengths 1 to 19 words, in no order, with two texts of equal length.
        let texts: Vec<String> = [7usize, 1, 19, 3, 12, 5, 16, 2, 9, 14, 4, 18, 6, 11, 8, 8]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (0..n)
                    .map(|j| vocab[(i + 3 * j) % vocab.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let whole = l2_normalise(&model.encode_texts(&refs).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let grouped = pool.install(|| model.embed_texts(&refs).unwrap());
            assert_eq!(grouped.len(), whole.len());
            for (i, (a, b)) in grouped.iter().zip(&whole).enumerate() {
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(
                    diff < 1e-5,
                    "text {i}, {threads} threads: max abs diff {diff}"
                );
            }
        }
        assert!(model.embed_texts(&[]).unwrap().is_empty());
    }
}
