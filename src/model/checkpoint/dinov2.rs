//! Hugging Face `Dinov2Model` folders: RAD-DINO (Pérez-García et al. 2024), a DINOv2 ViT-B/14
//! trained on chest X-rays without text.
//!
//! Image only: the embedding is `pooler_output` (the final-layer-normed CLS token), which serves
//! image-to-image search; the model has no text tower, so text queries are refused.

use std::path::Path;

use candle_core::Device;
use serde::Deserialize;

use super::clip::check_input_size;
use super::{hf_preprocess, parse, read_json, Parts, Weights};
use crate::model::config::{PreprocessConfig, Resample, ResizeMode};
use crate::model::dual::{ModelError, CONFIG_FILE};
use crate::model::encoders::{ImageEncoder, ImageTower, Projection};
use crate::model::prenorm_vit::{PreNormVit, PreNormVitConfig, VitNames};

/// `config.json` of a `Dinov2Model`, with transformers' defaults.
#[derive(Deserialize)]
#[serde(default)]
struct HfDinov2Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    mlp_ratio: f64,
    hidden_act: String,
    layer_norm_eps: f64,
    image_size: usize,
    patch_size: usize,
    num_channels: usize,
    use_swiglu_ffn: bool,
    qkv_bias: bool,
}

impl Default for HfDinov2Config {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4.0,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            image_size: 224,
            patch_size: 14,
            num_channels: 3,
            use_swiglu_ffn: false,
            qkv_bias: true,
        }
    }
}

pub(super) fn load(dir: &Path, device: &Device) -> Result<Parts, ModelError> {
    let config_path = dir.join(CONFIG_FILE);
    let cfg: HfDinov2Config = parse(read_json(&config_path)?, &config_path)?;
    if cfg.use_swiglu_ffn || cfg.hidden_act != "gelu" || !cfg.qkv_bias {
        return Err(ModelError::Unsupported {
            path: config_path,
            reason: format!(
                "DINOv2 with use_swiglu_ffn {}, hidden_act `{}`, qkv_bias {}: only the GELU MLP \
                 with qkv biases (DINOv2 ViT-S/B/L, RAD-DINO) is supported",
                cfg.use_swiglu_ffn, cfg.hidden_act, cfg.qkv_bias
            ),
        });
    }
    let weights = Weights::open(dir, &["model.safetensors", "pytorch_model.bin"], device)?;
    let tower_cfg = PreNormVitConfig {
        hidden_size: cfg.hidden_size,
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        mlp_hidden: (cfg.hidden_size as f64 * cfg.mlp_ratio) as usize,
        patch_size: cfg.patch_size,
        image_size: cfg.image_size,
        num_channels: cfg.num_channels,
        layer_norm_eps: cfg.layer_norm_eps,
        hidden_act: candle_nn::Activation::Gelu,
        qkv_bias: true,
        names: VitNames::HfDinov2,
    };
    let default = PreprocessConfig {
        image_size: cfg.image_size,
        channels: cfg.num_channels,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        resize: ResizeMode::ShortestSideCentreCrop,
        resample: Resample::PilBicubic,
        resize_to: None,
        crop_rounding: Default::default(),
    };
    let (preprocess, preprocessor_path) = hf_preprocess(dir, cfg.num_channels, default)?;
    check_input_size(dir, preprocess.image_size, cfg.image_size)?;
    let tower = PreNormVit::new(&tower_cfg, weights.vb.clone()).map_err(|e| weights.error(e))?;
    let mut files = vec![config_path, weights.path.clone()];
    files.extend(preprocessor_path);
    Ok(Parts {
        embed_dim: cfg.hidden_size,
        image: Some(ImageEncoder {
            tower: ImageTower::PreNorm(tower),
            projection: Projection::Identity,
            preprocess,
        }),
        text: None,
        files,
    })
}
