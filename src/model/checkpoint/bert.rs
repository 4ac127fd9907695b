//! BERT text towers (Devlin et al. 2019) in the Hugging Face layout: a plain `BertModel`, and
//! CXR-BERT-specialized (Boecking et al. 2022, `microsoft/BiomedVLP-CXR-BERT-specialized`).
//!
//! Text only. A plain BERT's embedding is the last layer's CLS token, unprojected. CXR-BERT's
//! checkpoint is a `BertForMaskedLM` (`bert.*`) plus `cls_projection_head`
//! (`dense_to_hidden` -> activation -> `LayerNorm` -> `dense_to_output`, `projection_size` wide)
//! over that CLS token, as its `get_projected_text_embeddings` computes; the MLM head is unused.

use std::path::Path;

use candle_core::Device;
use candle_nn::{layer_norm, linear};
use candle_transformers::models::bert;

use super::{parse, read_json, tokenizer, Parts, Weights};
use crate::model::dual::{ModelError, CONFIG_FILE};
use crate::model::encoders::{Padding, Projection, TextEncoder, TextTower};
use crate::model::towers::BertTower;

pub(super) fn load(dir: &Path, device: &Device, cxr_bert: bool) -> Result<Parts, ModelError> {
    let config_path = dir.join(CONFIG_FILE);
    let json = read_json(&config_path)?;
    let projection_size = json
        .get("projection_size")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(128) as usize;
    let mut cfg: bert::Config = parse(json, &config_path)?;
    if !matches!(cfg.hidden_act, bert::HiddenAct::Gelu) {
        return Err(ModelError::Unsupported {
            path: config_path,
            reason: "only hidden_act `gelu` is supported for BERT".into(),
        });
    }
    let weights = Weights::open(dir, &["model.safetensors", "pytorch_model.bin"], device)?;
    // Checkpoints saved from a BertModel have `embeddings.*`; from a pre-training or MLM model,
    // `bert.embeddings.*`.
    let vb = if weights.has("embeddings.word_embeddings.weight") {
        weights.vb.clone()
    } else {
        weights.vb.pp("bert")
    };
    weights.shape(if weights.has("embeddings.word_embeddings.weight") {
        "embeddings.word_embeddings.weight"
    } else {
        "bert.embeddings.word_embeddings.weight"
    })?;
    // candle retries under `{model_type}.`; the prefix is resolved above already.
    cfg.model_type = None;
    let tower = BertTower::new(&cfg, vb).map_err(|e| weights.error(e))?;
    let (embed_dim, projection) = if cxr_bert {
        let head = weights.vb.pp("cls_projection_head");
        let build = || -> candle_core::Result<_> {
            Ok(Projection::CxrBert {
                dense_to_hidden: linear(
                    cfg.hidden_size,
                    projection_size,
                    head.pp("dense_to_hidden"),
                )?,
                norm: layer_norm(projection_size, 1e-12, head.pp("LayerNorm"))?,
                dense_to_output: linear(
                    projection_size,
                    projection_size,
                    head.pp("dense_to_output"),
                )?,
            })
        };
        (projection_size, build().map_err(|e| weights.error(e))?)
    } else {
        (cfg.hidden_size, Projection::Identity)
    };
    let max_len = cfg.max_position_embeddings;
    let (tokenizer, tokenizer_path) = tokenizer(dir, max_len)?;
    Ok(Parts {
        embed_dim,
        image: None,
        text: Some(TextEncoder {
            tower: TextTower::Bert(tower),
            projection,
            tokenizer,
            max_len,
            padding: Padding::Longest,
        }),
        files: vec![config_path, weights.path.clone(), tokenizer_path],
    })
}
