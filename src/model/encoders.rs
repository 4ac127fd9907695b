//! The towers a [`super::DualEncoder`] can hold, over every supported architecture, and the
//! heads that map a tower's pooled output into the shared space.
//!
//! Each variant names the architecture and where its pooled representation comes from; the
//! per-layout loaders in `checkpoint/` build them from the checkpoint's own tensor names.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear};
use candle_transformers::models::{clip, siglip};
use tokenizers::Tokenizer;

use super::config::PreprocessConfig;
use super::gelu::gelu_erf;
use super::prenorm_vit::PreNormVit;
use super::towers::BertTower;

/// Image towers; each returns one pooled vector per image, before any projection.
pub(crate) enum ImageTower {
    /// The project's own ViT (HF `ViTModel` names): layer-normed CLS token.
    Vit(PreNormVit),
    /// CLIP's vision transformer (HF `CLIPVisionModel`): post-layer-normed CLS token.
    Clip(clip::vision_model::ClipVisionTransformer),
    /// SigLIP's vision transformer with its attention-pooling head (`pooler_output`).
    Siglip(siglip::VisionModel),
    /// Pre-norm ViT in timm's or HF DINOv2's names: final-normed CLS token.
    PreNorm(PreNormVit),
    /// The project's small CNN: global average of the last stage.
    Cnn(super::cnn::CnnTower),
}

impl ImageTower {
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        match self {
            ImageTower::Vit(t) => t.forward(pixels),
            ImageTower::Clip(t) => t.forward(pixels),
            ImageTower::Siglip(t) => t.forward(pixels),
            ImageTower::PreNorm(t) => t.forward(pixels),
            ImageTower::Cnn(t) => t.forward(pixels),
        }
    }

    /// Spatial tokens `(batch, cells, hidden)`, row-major over the cells, for the project's own
    /// towers: the CNN's last feature map, the ViT's last-layer patch tokens; `None` for the
    /// others.
    pub(crate) fn patch_tokens(&self, pixels: &Tensor) -> Result<Option<Tensor>> {
        match self {
            ImageTower::Vit(t) => t.patch_tokens(pixels).map(Some),
            ImageTower::Cnn(t) => {
                let map = t.feature_map_t(pixels, false)?;
                let (b, c, h, w) = map.dims4()?;
                Ok(Some(
                    map.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?,
                ))
            }
            _ => Ok(None),
        }
    }
}

/// Text towers; each returns one pooled vector per text, before any projection.
pub(crate) enum TextTower {
    /// BERT (HF `BertModel` names): the last layer's CLS token.
    Bert(BertTower),
    /// CLIP's causal text transformer: the final-normed state at the end-of-text token (the
    /// highest id in the sequence, as in the original CLIP).
    Clip(clip::text_model::ClipTextTransformer),
    /// SigLIP's text transformer: the last position through its head. Inputs must be padded to
    /// the length the model was trained with (see [`Padding::Fixed`]).
    Siglip(siglip::TextModel),
}

impl TextTower {
    /// `ids`, `mask`: `(batch, seq)` u32.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            TextTower::Bert(t) => t.forward(ids, mask),
            TextTower::Clip(t) => t.forward(ids),
            TextTower::Siglip(t) => t.forward(ids),
        }
    }

    /// Every token's last-layer state `(batch, seq, hidden)` for the towers that expose them
    /// (BERT); `None` for the others.
    pub(crate) fn token_states(&self, ids: &Tensor, mask: &Tensor) -> Result<Option<Tensor>> {
        match self {
            TextTower::Bert(t) => t.forward_tokens(ids, mask).map(Some),
            _ => Ok(None),
        }
    }
}

/// From a tower's pooled output to the shared space.
pub(crate) enum Projection {
    /// The pooled output is the embedding (RAD-DINO, plain BERT, SigLIP's built-in heads).
    Identity,
    Linear(Linear),
    /// open_clip's `mlp` text projection: linear, exact GELU, linear, no biases.
    Mlp {
        fc1: Linear,
        fc2: Linear,
    },
    /// CXR-BERT's `cls_projection_head`: linear, GELU, LayerNorm, linear.
    CxrBert {
        dense_to_hidden: Linear,
        norm: LayerNorm,
        dense_to_output: Linear,
    },
}

impl Projection {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Projection::Identity => Ok(x.clone()),
            Projection::Linear(l) => l.forward(x),
            Projection::Mlp { fc1, fc2 } => fc2.forward(&gelu_erf(&fc1.forward(x)?)?),
            Projection::CxrBert {
                dense_to_hidden,
                norm,
                dense_to_output,
            } => dense_to_output.forward(&norm.forward(&gelu_erf(&dense_to_hidden.forward(x)?)?)?),
        }
    }
}

/// How token sequences of one batch are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// To the longest text of the batch, with id 0 and a zero attention mask (BERT, CLIP).
    Longest,
    /// Always to `length` with `pad_id` (SigLIP, which reads the last position).
    Fixed { length: usize, pad_id: u32 },
}

/// An image tower with its head and its preprocessing.
pub(crate) struct ImageEncoder {
    pub tower: ImageTower,
    pub projection: Projection,
    pub preprocess: PreprocessConfig,
}

impl ImageEncoder {
    pub(crate) fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.projection.forward(&self.tower.forward(pixels)?)
    }
}

/// A text tower with its head, its tokenizer and how inputs are cut and padded.
pub(crate) struct TextEncoder {
    pub tower: TextTower,
    pub projection: Projection,
    pub tokenizer: Tokenizer,
    pub max_len: usize,
    pub padding: Padding,
}

impl TextEncoder {
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.projection.forward(&self.tower.forward(ids, mask)?)
    }
}
