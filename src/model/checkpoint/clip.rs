//! Hugging Face `CLIPModel` folders (Radford et al. 2021): OpenAI CLIP, and CheXzero (Tiu et al.
//! 2022, a fine-tuned CLIP ViT-B/32) once converted to this layout.
//!
//! Towers are candle-transformers' `clip`; the image embedding is `visual_projection` of the
//! post-layer-normed CLS token, the text embedding `text_projection` of the final-normed state
//! at the end-of-text token, as `CLIPModel.get_image_features` / `get_text_features` compute.

use std::path::Path;

use candle_core::Device;
use candle_nn::linear_no_bias;
use candle_transformers::models::clip::{
    text_model::{Activation, ClipTextConfig, ClipTextTransformer},
    vision_model::{ClipVisionConfig, ClipVisionTransformer},
};
use serde::Deserialize;

use super::{hf_preprocess, parse, read_json, tokenizer, Parts, Weights, OPENAI_MEAN, OPENAI_STD};
use crate::model::config::{PreprocessConfig, ResizeMode};
use crate::model::dual::{ModelError, CONFIG_FILE};
use crate::model::encoders::{
    ImageEncoder, ImageTower, Padding, Projection, TextEncoder, TextTower,
};

/// `config.json` of a `CLIPModel`, with transformers' defaults (ViT-B/32).
#[derive(Deserialize)]
struct HfClipConfig {
    #[serde(default = "default_projection_dim")]
    projection_dim: usize,
    #[serde(default)]
    text_config: TextCfg,
    #[serde(default)]
    vision_config: VisionCfg,
}

fn default_projection_dim() -> usize {
    512
}

#[derive(Deserialize)]
#[serde(default)]
struct TextCfg {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for TextCfg {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct VisionCfg {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for VisionCfg {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

pub(super) fn load(dir: &Path, device: &Device) -> Result<Parts, ModelError> {
    let config_path = dir.join(CONFIG_FILE);
    let cfg: HfClipConfig = parse(read_json(&config_path)?, &config_path)?;
    // candle's CLIP towers implement quick GELU and LayerNorm eps 1e-5, OpenAI CLIP's choices.
    for (tower, act, eps) in [
        (
            "text",
            &cfg.text_config.hidden_act,
            cfg.text_config.layer_norm_eps,
        ),
        (
            "vision",
            &cfg.vision_config.hidden_act,
            cfg.vision_config.layer_norm_eps,
        ),
    ] {
        if act != "quick_gelu" || (eps - 1e-5).abs() > 1e-12 {
            return Err(ModelError::Unsupported {
                path: config_path,
                reason: format!(
                    "{tower} tower with hidden_act `{act}` and layer_norm_eps {eps}: only OpenAI \
                     CLIP's quick_gelu with 1e-5 is supported"
                ),
            });
        }
    }
    let weights = Weights::open(dir, &["model.safetensors", "pytorch_model.bin"], device)?;
    let t = &cfg.text_config;
    let v = &cfg.vision_config;
    let text_config = ClipTextConfig {
        vocab_size: t.vocab_size,
        embed_dim: t.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: t.intermediate_size,
        max_position_embeddings: t.max_position_embeddings,
        pad_with: None,
        num_hidden_layers: t.num_hidden_layers,
        num_attention_heads: t.num_attention_heads,
        projection_dim: cfg.projection_dim,
    };
    let vision_config = ClipVisionConfig {
        embed_dim: v.hidden_size,
        activation: Activation::QuickGelu,
        intermediate_size: v.intermediate_size,
        num_hidden_layers: v.num_hidden_layers,
        num_attention_heads: v.num_attention_heads,
        projection_dim: cfg.projection_dim,
        num_channels: v.num_channels,
        image_size: v.image_size,
        patch_size: v.patch_size,
    };
    let vb = weights.vb.clone();
    // candle draws a random CLS embedding when the tensor is absent: refuse that instead.
    weights.shape("vision_model.embeddings.class_embedding")?;
    let build = || -> candle_core::Result<_> {
        Ok((
            ClipVisionTransformer::new(vb.pp("vision_model"), &vision_config)?,
            linear_no_bias(
                v.hidden_size,
                cfg.projection_dim,
                vb.pp("visual_projection"),
            )?,
            ClipTextTransformer::new(vb.pp("text_model"), &text_config)?,
            linear_no_bias(t.hidden_size, cfg.projection_dim, vb.pp("text_projection"))?,
        ))
    };
    let (vision, visual_projection, text, text_projection) =
        build().map_err(|e| weights.error(e))?;

    let default = PreprocessConfig {
        image_size: v.image_size,
        channels: v.num_channels,
        mean: OPENAI_MEAN.to_vec(),
        std: OPENAI_STD.to_vec(),
        resize: ResizeMode::ShortestSideCentreCrop,
        resample: crate::model::config::Resample::PilBicubic,
        resize_to: None,
        crop_rounding: Default::default(),
    };
    let (preprocess, preprocessor_path) = hf_preprocess(dir, v.num_channels, default)?;
    check_input_size(dir, preprocess.image_size, v.image_size)?;
    let (tokenizer, tokenizer_path) = tokenizer(dir, t.max_position_embeddings)?;
    let mut files = vec![config_path, weights.path.clone(), tokenizer_path];
    files.extend(preprocessor_path);
    Ok(Parts {
        embed_dim: cfg.projection_dim,
        image: Some(ImageEncoder {
            tower: ImageTower::Clip(vision),
            projection: Projection::Linear(visual_projection),
            preprocess,
        }),
        text: Some(TextEncoder {
            tower: TextTower::Clip(text),
            projection: Projection::Linear(text_projection),
            tokenizer,
            max_len: t.max_position_embeddings,
            padding: Padding::Longest,
        }),
        files,
    })
}

/// The towers' learnt positions cover one input size; other sizes would need interpolation,
/// which is not implemented.
pub(super) fn check_input_size(dir: &Path, input: usize, model: usize) -> Result<(), ModelError> {
    if input == model {
        Ok(())
    } else {
        Err(ModelError::Unsupported {
            path: dir.to_path_buf(),
            reason: format!(
                "the preprocessor makes {input} px inputs but the model's positions are for \
                 {model} px; interpolating position embeddings is not supported"
            ),
        })
    }
}
