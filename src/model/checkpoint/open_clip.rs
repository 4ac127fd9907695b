//! open_clip folders whose image tower is a timm ViT and whose text tower is a Hugging Face
//! BERT: BiomedCLIP (Zhang et al. 2023; ViT-B/16 + PubMedBERT).
//!
//! The computation follows open_clip's `TimmModel` and `HFTextEncoder`:
//! - image: the timm trunk's final-normed CLS token (`timm_pool` "" keeps ViT's default "token"
//!   pooling), then `visual.head.proj` (linear, no bias);
//! - text: BERT with the attention mask `ids != pad`, the last layer's CLS token
//!   (`cls_last_hidden_state_pooler`), then `text.proj`: for `mlp` a linear to
//!   `(width + embed_dim) / 2`, exact GELU, a linear to `embed_dim`, no biases; for `linear` one
//!   linear without bias;
//! - preprocessing: torchvision `Resize(image_size, bicubic)` of the shorter side (Pillow), centre
//!   crop (offset rounded half to even), `ToTensor`, `Normalize(mean, std)` from `preprocess_cfg`.
//!
//! `open_clip_config.json` names the towers (a timm model name, a hub BERT name) rather than
//! describing them, so their sizes are read from the weights' shapes. The head count is not in
//! the shapes: it is taken as width / 64, the head width of every ViT and BERT that BiomedCLIP-
//! style models use (ViT-S/B/L, BERT-base/large).

use std::path::Path;

use candle_core::Device;
use candle_nn::{linear_b, linear_no_bias};
use candle_transformers::models::bert;
use serde::Deserialize;
use serde_json::Value;

use super::{parse, read_json, tokenizer, Parts, Weights, OPEN_CLIP_CONFIG_FILE};
use super::{OPENAI_MEAN, OPENAI_STD};
use crate::model::config::{CropRounding, PreprocessConfig, Resample, ResizeMode};
use crate::model::dual::ModelError;
use crate::model::encoders::{
    ImageEncoder, ImageTower, Padding, Projection, TextEncoder, TextTower,
};
use crate::model::prenorm_vit::{PreNormVit, PreNormVitConfig, VitNames};
use crate::model::towers::BertTower;

#[derive(Deserialize)]
struct OpenClipFile {
    model_cfg: ModelCfg,
    #[serde(default)]
    preprocess_cfg: PreprocessCfg,
}

#[derive(Deserialize)]
struct ModelCfg {
    embed_dim: usize,
    vision_cfg: VisionCfg,
    text_cfg: TextCfg,
}

#[derive(Deserialize)]
struct VisionCfg {
    timm_model_name: Option<String>,
    #[serde(default)]
    timm_pool: Option<String>,
    #[serde(default)]
    timm_proj: Option<String>,
    #[serde(default = "default_image_size")]
    image_size: Value,
}

fn default_image_size() -> Value {
    Value::from(224)
}

#[derive(Deserialize)]
struct TextCfg {
    hf_model_name: Option<String>,
    #[serde(default)]
    hf_proj_type: Option<String>,
    #[serde(default)]
    hf_pooler_type: Option<String>,
    #[serde(default = "default_context_length")]
    context_length: usize,
}

fn default_context_length() -> usize {
    77
}

#[derive(Deserialize, Default)]
struct PreprocessCfg {
    mean: Option<Vec<f32>>,
    std: Option<Vec<f32>>,
    interpolation: Option<String>,
    resize_mode: Option<String>,
}

const HEAD_WIDTH: usize = 64;
const VISUAL: &str = "visual.trunk.";
const TEXT: &str = "text.transformer.";

pub(super) fn load(dir: &Path, device: &Device) -> Result<Parts, ModelError> {
    let config_path = dir.join(OPEN_CLIP_CONFIG_FILE);
    let file: OpenClipFile = parse(read_json(&config_path)?, &config_path)?;
    let unsupported = |reason: String| ModelError::Unsupported {
        path: config_path.clone(),
        reason,
    };
    let (m, p) = (&file.model_cfg, &file.preprocess_cfg);
    if m.vision_cfg.timm_model_name.is_none() || m.text_cfg.hf_model_name.is_none() {
        return Err(unsupported(
            "only open_clip models with a timm image tower (timm_model_name) and a Hugging Face \
             text tower (hf_model_name) are supported, as BiomedCLIP has"
                .into(),
        ));
    }
    let pool = m.vision_cfg.timm_pool.as_deref().unwrap_or("");
    if !matches!(pool, "" | "token") {
        return Err(unsupported(format!(
            "timm_pool `{pool}`: only CLS-token pooling is supported"
        )));
    }
    let image_size = match &m.vision_cfg.image_size {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64().map(|n| n as usize),
        _ => None,
    }
    .ok_or_else(|| unsupported("vision_cfg.image_size must be one square size".into()))?;
    let pooler = m.text_cfg.hf_pooler_type.as_deref().unwrap_or("cls_pooler");
    if pooler != "cls_last_hidden_state_pooler" {
        return Err(unsupported(format!(
            "hf_pooler_type `{pooler}`: only cls_last_hidden_state_pooler is supported"
        )));
    }

    let weights = Weights::open(
        dir,
        &["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
        device,
    )?;
    for extra in ["norm_pre.weight", "fc_norm.weight", "reg_token"] {
        if weights.has(&format!("{VISUAL}{extra}")) {
            return Err(ModelError::Unsupported {
                path: weights.path.clone(),
                reason: format!("timm trunk with `{VISUAL}{extra}` is not supported"),
            });
        }
    }

    // Image tower, sized from its tensors.
    let width = weights.dim(&format!("{VISUAL}cls_token"), 2)?;
    let patch_w = format!("{VISUAL}patch_embed.proj.weight");
    let vit = PreNormVitConfig {
        hidden_size: width,
        num_layers: weights.count(&format!("{VISUAL}blocks."), ".norm1.weight"),
        num_heads: heads(&weights, width)?,
        mlp_hidden: weights.dim(&format!("{VISUAL}blocks.0.mlp.fc1.weight"), 0)?,
        patch_size: weights.dim(&patch_w, 2)?,
        image_size,
        num_channels: weights.dim(&patch_w, 1)?,
        layer_norm_eps: 1e-6,
        hidden_act: candle_nn::Activation::Gelu,
        qkv_bias: true,
        names: VitNames::Timm,
    };
    let positions = weights.dim(&format!("{VISUAL}pos_embed"), 1)?;
    let grid = image_size / vit.patch_size;
    if positions != grid * grid + 1 {
        return Err(ModelError::Unsupported {
            path: weights.path.clone(),
            reason: format!(
                "{positions} learnt positions do not fit a {image_size} px input in {} px \
                 patches; interpolating position embeddings is not supported",
                vit.patch_size
            ),
        });
    }
    let embed_dim = m.embed_dim;
    let vb = weights.vb.clone();
    let visual_proj = match m.vision_cfg.timm_proj.as_deref().unwrap_or("linear") {
        "linear" => {
            let bias = weights.has("visual.head.proj.bias");
            Projection::Linear(
                linear_b(width, embed_dim, bias, vb.pp("visual.head.proj"))
                    .map_err(|e| weights.error(e))?,
            )
        }
        other => {
            return Err(unsupported(format!(
                "timm_proj `{other}`: only linear is supported"
            )))
        }
    };
    let trunk = PreNormVit::new(&vit, vb.pp("visual.trunk")).map_err(|e| weights.error(e))?;

    // Text tower: BERT sized from its tensors.
    let word = format!("{TEXT}embeddings.word_embeddings.weight");
    let hidden = weights.dim(&word, 1)?;
    let bert_cfg = bert::Config {
        vocab_size: weights.dim(&word, 0)?,
        hidden_size: hidden,
        num_hidden_layers: weights.count(
            &format!("{TEXT}encoder.layer."),
            ".attention.self.query.weight",
        ),
        num_attention_heads: heads(&weights, hidden)?,
        intermediate_size: weights.dim(
            &format!("{TEXT}encoder.layer.0.intermediate.dense.weight"),
            0,
        )?,
        hidden_act: bert::HiddenAct::Gelu,
        max_position_embeddings: weights
            .dim(&format!("{TEXT}embeddings.position_embeddings.weight"), 0)?,
        type_vocab_size: weights
            .dim(&format!("{TEXT}embeddings.token_type_embeddings.weight"), 0)?,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        model_type: None,
        ..bert::Config::default()
    };
    let text_tower =
        BertTower::new(&bert_cfg, vb.pp("text.transformer")).map_err(|e| weights.error(e))?;
    let text_proj = match m.text_cfg.hf_proj_type.as_deref() {
        Some("mlp") => {
            let mid = (hidden + embed_dim) / 2;
            let build = || -> candle_core::Result<_> {
                Ok(Projection::Mlp {
                    fc1: linear_no_bias(hidden, mid, vb.pp("text.proj.0"))?,
                    fc2: linear_no_bias(mid, embed_dim, vb.pp("text.proj.2"))?,
                })
            };
            build().map_err(|e| weights.error(e))?
        }
        Some("linear") => Projection::Linear(
            linear_no_bias(hidden, embed_dim, vb.pp("text.proj")).map_err(|e| weights.error(e))?,
        ),
        None if hidden == embed_dim => Projection::Identity,
        other => {
            return Err(unsupported(format!(
                "hf_proj_type {other:?} with text width {hidden} and embed_dim {embed_dim}"
            )))
        }
    };

    let resize = match p.resize_mode.as_deref().unwrap_or("shortest") {
        "shortest" => ResizeMode::ShortestSideCentreCrop,
        "squash" => ResizeMode::Squash,
        other => {
            return Err(unsupported(format!(
                "preprocess_cfg.resize_mode `{other}`: only shortest and squash are supported"
            )))
        }
    };
    let resample = match p.interpolation.as_deref().unwrap_or("bicubic") {
        "bicubic" => Resample::PilBicubic,
        "bilinear" => Resample::PilBilinear,
        other => {
            return Err(unsupported(format!(
                "preprocess_cfg.interpolation `{other}`: only bicubic and bilinear are supported"
            )))
        }
    };
    let preprocess = PreprocessConfig {
        image_size,
        channels: vit.num_channels,
        mean: p.mean.clone().unwrap_or_else(|| OPENAI_MEAN.to_vec()),
        std: p.std.clone().unwrap_or_else(|| OPENAI_STD.to_vec()),
        resize,
        resample,
        resize_to: None,
        crop_rounding: CropRounding::HalfEven,
    };
    let max_len = m
        .text_cfg
        .context_length
        .min(bert_cfg.max_position_embeddings);
    let (tokenizer, tokenizer_path) = tokenizer(dir, max_len)?;
    Ok(Parts {
        embed_dim,
        image: Some(ImageEncoder {
            tower: ImageTower::PreNorm(trunk),
            projection: visual_proj,
            preprocess,
        }),
        text: Some(TextEncoder {
            tower: TextTower::Bert(text_tower),
            projection: text_proj,
            tokenizer,
            max_len,
            padding: Padding::Longest,
        }),
        files: vec![config_path, weights.path.clone(), tokenizer_path],
    })
}

fn heads(weights: &Weights, width: usize) -> Result<usize, ModelError> {
    if width.is_multiple_of(HEAD_WIDTH) {
        Ok(width / HEAD_WIDTH)
    } else {
        Err(ModelError::Unsupported {
            path: weights.path.clone(),
            reason: format!(
                "tower width {width} is not a multiple of {HEAD_WIDTH}; the head count cannot \
                 be inferred"
            ),
        })
    }
}
