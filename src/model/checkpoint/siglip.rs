//! Hugging Face `SiglipModel` folders (Zhai et al. 2023).
//!
//! Towers are candle-transformers' `siglip`. The image embedding is the vision tower's
//! attention-pooled output, the text embedding the head over the last position, as
//! `SiglipModel.get_image_features` / `get_text_features` compute; SigLIP was trained on texts
//! padded to `max_position_embeddings` with the pad id and no attention mask, so queries are
//! padded the same way. SigLIP publishes a SentencePiece model (`spiece.model`), read by
//! `sentencepiece.rs` when the folder has no `tokenizer.json`.

use std::path::Path;

use candle_core::Device;
use candle_transformers::models::siglip;

use super::clip::check_input_size;
use super::{hf_preprocess, parse, read_json, tokenizer, Parts, Weights};
use crate::model::config::{PreprocessConfig, Resample, ResizeMode};
use crate::model::dual::{ModelError, CONFIG_FILE};
use crate::model::encoders::{
    ImageEncoder, ImageTower, Padding, Projection, TextEncoder, TextTower,
};

pub(super) fn load(dir: &Path, device: &Device) -> Result<Parts, ModelError> {
    let config_path = dir.join(CONFIG_FILE);
    let mut json = read_json(&config_path)?;
    // transformers fills absent sub-configs with defaults; candle's Config needs the keys.
    for key in ["text_config", "vision_config"] {
        if let Some(obj) = json.as_object_mut() {
            obj.entry(key).or_insert_with(|| serde_json::json!({}));
        }
    }
    let cfg: siglip::Config = parse(json, &config_path)?;
    let (t, v) = (&cfg.text_config, &cfg.vision_config);
    if t.hidden_size != v.hidden_size {
        return Err(ModelError::Unsupported {
            path: config_path,
            reason: format!(
                "text width {} differs from image width {}: the towers share no space",
                t.hidden_size, v.hidden_size
            ),
        });
    }
    let weights = Weights::open(dir, &["model.safetensors", "pytorch_model.bin"], device)?;
    let vb = weights.vb.clone();
    let build = || -> candle_core::Result<_> {
        Ok((
            siglip::VisionModel::new(v, true, vb.pp("vision_model"))?,
            siglip::TextModel::new(t, vb.pp("text_model"))?,
        ))
    };
    let (vision, text) = build().map_err(|e| weights.error(e))?;
    let default = PreprocessConfig {
        image_size: v.image_size,
        channels: v.num_channels,
        mean: vec![0.5],
        std: vec![0.5],
        resize: ResizeMode::Squash,
        resample: Resample::PilBicubic,
        resize_to: None,
        crop_rounding: Default::default(),
    };
    let (preprocess, preprocessor_path) = hf_preprocess(dir, v.num_channels, default)?;
    check_input_size(dir, preprocess.image_size, v.image_size)?;
    let max_len = t.max_position_embeddings;
    let (tokenizer, tokenizer_path) = tokenizer(dir, max_len)?;
    let mut files = vec![config_path, weights.path.clone(), tokenizer_path];
    files.extend(preprocessor_path);
    Ok(Parts {
        embed_dim: v.hidden_size,
        image: Some(ImageEncoder {
            tower: ImageTower::Siglip(vision),
            projection: Projection::Identity,
            preprocess,
        }),
        text: Some(TextEncoder {
            tower: TextTower::Siglip(text),
            projection: Projection::Identity,
            tokenizer,
            max_len,
            padding: Padding::Fixed {
                length: max_len,
                pad_id: t.pad_token_id,
            },
        }),
        files,
    })
}
