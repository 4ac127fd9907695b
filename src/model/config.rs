//! `config.json` of a model folder.
//!
//! Tower configurations keep the field names of the upstream (Hugging Face) configs so that the
//! towers of public checkpoints can be described without translation.

use candle_transformers::models::{bert, vit};
use serde::{Deserialize, Serialize};

/// The whole model: two towers, a shared embedding size, and how images are prepared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Short human-readable name, recorded in every index the model builds.
    pub name: String,
    /// Size of the shared image/text space.
    pub embed_dim: usize,
    pub image: ImageTowerConfig,
    pub text: TextTowerConfig,
}

/// Image tower architectures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ImageTowerConfig {
    /// A ViT (Dosovitskiy et al. 2021) in the Hugging Face `ViTModel` layout; the image embedding
    /// is the final-layer-normed CLS token.
    Vit {
        #[serde(with = "vit_config")]
        config: vit::Config,
        preprocess: PreprocessConfig,
    },
    /// A small CNN ([`super::cnn`]); the image embedding is the global average of the last
    /// stage. For training from scratch on little data.
    Cnn {
        config: super::cnn::CnnConfig,
        preprocess: PreprocessConfig,
    },
}

impl ImageTowerConfig {
    pub fn preprocess(&self) -> &PreprocessConfig {
        match self {
            ImageTowerConfig::Vit { preprocess, .. } | ImageTowerConfig::Cnn { preprocess, .. } => {
                preprocess
            }
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            ImageTowerConfig::Vit { config, .. } => config.hidden_size,
            ImageTowerConfig::Cnn { config, .. } => config.hidden_size(),
        }
    }
}

/// Text tower architectures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum TextTowerConfig {
    /// BERT (Devlin et al. 2019) in the Hugging Face `BertModel` layout; the text embedding is the
    /// CLS token of the last layer.
    Bert {
        #[serde(with = "bert_config")]
        config: bert::Config,
        /// Longest input in tokens; longer reports are truncated.
        max_len: usize,
    },
}

impl TextTowerConfig {
    pub fn hidden_size(&self) -> usize {
        match self {
            TextTowerConfig::Bert { config, .. } => config.hidden_size,
        }
    }

    pub fn max_len(&self) -> usize {
        match self {
            TextTowerConfig::Bert { max_len, .. } => *max_len,
        }
    }
}

/// How a decoded grey image becomes the tower's input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square input, in pixels.
    pub image_size: usize,
    /// 1 for grey towers; 3 repeats the grey channel for towers trained on RGB.
    pub channels: usize,
    /// Per-channel mean and standard deviation applied to `[0, 1]` pixels.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub resize: ResizeMode,
    /// The resampling filter. Project models use the float triangle filter (the default, not
    /// written); public checkpoints use Pillow's, as their reference preprocessing does.
    #[serde(default, skip_serializing_if = "Resample::is_default")]
    pub resample: Resample,
    /// With [`ResizeMode::ShortestSideCentreCrop`]: the shorter side after resizing, when it
    /// differs from `image_size` (resize to 256, crop 224). Absent: `image_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_to: Option<usize>,
    /// How the centre crop's offset is rounded when the margin is odd.
    #[serde(default, skip_serializing_if = "CropRounding::is_default")]
    pub crop_rounding: CropRounding,
}

impl PreprocessConfig {
    /// The shortest side a source image needs for the resize to shrink it, never enlarge it:
    /// the resized shorter side for [`ResizeMode::ShortestSideCentreCrop`], the input's side
    /// otherwise. Decoders may stop at any resolution at least this large
    /// (`DecodeOptions::min_side`), which the resize then averages down as it would the full
    /// image.
    pub fn min_source_side(&self) -> u32 {
        let side = match self.resize {
            ResizeMode::ShortestSideCentreCrop => self
                .resize_to
                .unwrap_or(self.image_size)
                .max(self.image_size),
            ResizeMode::Squash | ResizeMode::LongestSidePad => self.image_size,
        };
        u32::try_from(side).unwrap_or(u32::MAX)
    }
}

/// Resampling filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// A triangle filter on `f32` pixels (the `image` crate's), widened when downscaling.
    #[default]
    Triangle,
    /// Pillow's bicubic on 8-bit pixels, bit for bit (Hugging Face processors, open_clip).
    PilBicubic,
    /// Pillow's bilinear on 8-bit pixels, bit for bit.
    PilBilinear,
}

impl Resample {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Rounding of the centre crop's offset, `(resized - crop) / 2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropRounding {
    /// Round down (Hugging Face image processors).
    #[default]
    Floor,
    /// Round half to even (torchvision's `CenterCrop`, used by open_clip).
    HalfEven,
}

impl CropRounding {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How the image is fitted to the square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize both sides to `image_size`, ignoring the aspect ratio (CXRs are near-square).
    Squash,
    /// Resize the shorter side to `image_size`, then crop the centre (CLIP's preprocessing).
    ShortestSideCentreCrop,
    /// Resize the longer side to `image_size`, then pad the shorter one with black.
    LongestSidePad,
}

// candle-transformers' ViT and BERT configs derive `Deserialize` only; these shims serialise them
// with the same field names so a config written by `cxr model init` reads back.
mod vit_config {
    use super::*;

    #[derive(Serialize)]
    struct VitConfigOut {
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        hidden_act: candle_nn::Activation,
        layer_norm_eps: f64,
        image_size: usize,
        patch_size: usize,
        num_channels: usize,
        qkv_bias: bool,
    }

    pub fn serialize<S: serde::Serializer>(c: &vit::Config, s: S) -> Result<S::Ok, S::Error> {
        VitConfigOut {
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: c.hidden_act,
            layer_norm_eps: c.layer_norm_eps,
            image_size: c.image_size,
            patch_size: c.patch_size,
            num_channels: c.num_channels,
            qkv_bias: c.qkv_bias,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<vit::Config, D::Error> {
        vit::Config::deserialize(d)
    }
}

mod bert_config {
    use super::*;

    #[derive(Serialize)]
    struct BertConfigOut<'a> {
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
        hidden_act: &'a str,
        hidden_dropout_prob: f64,
        max_position_embeddings: usize,
        type_vocab_size: usize,
        initializer_range: f64,
        layer_norm_eps: f64,
        pad_token_id: usize,
        model_type: Option<&'a str>,
    }

    pub fn serialize<S: serde::Serializer>(c: &bert::Config, s: S) -> Result<S::Ok, S::Error> {
        BertConfigOut {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: match c.hidden_act {
                bert::HiddenAct::Gelu => "gelu",
                bert::HiddenAct::GeluApproximate => "geluapproximate",
                bert::HiddenAct::Relu => "relu",
            },
            hidden_dropout_prob: c.hidden_dropout_prob,
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
            initializer_range: c.initializer_range,
            layer_norm_eps: c.layer_norm_eps,
            pad_token_id: c.pad_token_id,
            model_type: c.model_type.as_deref(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bert::Config, D::Error> {
        bert::Config::deserialize(d)
    }
}
