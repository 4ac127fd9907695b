//! Public checkpoint layouts, read from a local folder as their owners publish them.
//!
//! A folder is recognised by its files: `open_clip_config.json` means open_clip; otherwise
//! `config.json` is either the project's own (it has `embed_dim`, `image` and `text`) or a
//! Hugging Face config whose `model_type` picks the layout. Each layout's module reads its
//! configuration, its weights (`model.safetensors` or a torch `pytorch_model.bin`), its tokenizer
//! and the preprocessing its reference implementation applies, and returns the towers.

mod bert;
mod clip;
mod dinov2;
mod open_clip;
mod sentencepiece;
mod siglip;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::config::{CropRounding, PreprocessConfig, Resample, ResizeMode};
use super::dual::{ModelError, CONFIG_FILE, TOKENIZER_FILE};
use super::encoders::{ImageEncoder, TextEncoder};

/// The on-disk layouts `DualEncoder::load` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLayout {
    /// The project's own folder, written by `cxr model init` or `cxr train`.
    Project,
    /// Hugging Face `CLIPModel` (OpenAI CLIP; CheXzero once converted to this layout).
    HfClip,
    /// Hugging Face `SiglipModel`.
    HfSiglip,
    /// open_clip with a timm ViT image tower and a Hugging Face BERT text tower (BiomedCLIP).
    OpenClip,
    /// Hugging Face `Dinov2Model` (RAD-DINO): image only.
    HfDinov2,
    /// Hugging Face `BertModel`: text only, CLS token, no projection.
    HfBert,
    /// CXR-BERT-specialized (`model_type` `cxr-bert`): text only, CLS token through its
    /// projection head.
    CxrBert,
}

impl fmt::Display for ModelLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelLayout::Project => "cxr-search model",
            ModelLayout::HfClip => "Hugging Face CLIPModel",
            ModelLayout::HfSiglip => "Hugging Face SiglipModel",
            ModelLayout::OpenClip => "open_clip (timm ViT + HF BERT)",
            ModelLayout::HfDinov2 => "Hugging Face Dinov2Model",
            ModelLayout::HfBert => "Hugging Face BertModel",
            ModelLayout::CxrBert => "CXR-BERT",
        })
    }
}

pub(crate) const OPEN_CLIP_CONFIG_FILE: &str = "open_clip_config.json";
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// Which layout `dir` holds, from its files alone.
pub(crate) fn detect(dir: &Path) -> Result<ModelLayout, ModelError> {
    if dir.join(OPEN_CLIP_CONFIG_FILE).is_file() {
        return Ok(ModelLayout::OpenClip);
    }
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return Err(ModelError::NotAModel {
            path: dir.to_path_buf(),
            reason: format!("neither {CONFIG_FILE} nor {OPEN_CLIP_CONFIG_FILE} is there"),
        });
    }
    let config = read_json(&config_path)?;
    if ["embed_dim", "image", "text"]
        .iter()
        .all(|k| config.get(k).is_some())
    {
        return Ok(ModelLayout::Project);
    }
    match config.get("model_type").and_then(Value::as_str) {
        Some("clip") => Ok(ModelLayout::HfClip),
        Some("siglip") => Ok(ModelLayout::HfSiglip),
        Some("dinov2") => Ok(ModelLayout::HfDinov2),
        Some("bert") => Ok(ModelLayout::HfBert),
        Some("cxr-bert") => Ok(ModelLayout::CxrBert),
        other => Err(ModelError::Unsupported {
            path: config_path,
            reason: format!(
                "model_type {} is not one of the supported layouts (clip, siglip, dinov2, bert, \
                 cxr-bert; open_clip folders have {OPEN_CLIP_CONFIG_FILE}; project folders have \
                 embed_dim, image and text)",
                other.map_or("(none)".to_string(), |t| format!("`{t}`"))
            ),
        }),
    }
}

/// What a layout loader returns.
pub(crate) struct Parts {
    pub embed_dim: usize,
    pub image: Option<ImageEncoder>,
    pub text: Option<TextEncoder>,
    /// Files whose content defines the model, hashed into its fingerprint.
    pub files: Vec<PathBuf>,
}

/// Loads a public checkpoint folder of a known layout (not [`ModelLayout::Project`]).
pub(crate) fn load(dir: &Path, layout: ModelLayout, device: &Device) -> Result<Parts, ModelError> {
    match layout {
        ModelLayout::HfClip => clip::load(dir, device),
        ModelLayout::HfSiglip => siglip::load(dir, device),
        ModelLayout::OpenClip => open_clip::load(dir, device),
        ModelLayout::HfDinov2 => dinov2::load(dir, device),
        ModelLayout::HfBert => bert::load(dir, device, false),
        ModelLayout::CxrBert => bert::load(dir, device, true),
        ModelLayout::Project => Err(ModelError::Unsupported {
            path: dir.to_path_buf(),
            reason: "project folders are loaded by DualEncoder::load".into(),
        }),
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Deserialises a JSON value into a config type, naming the file on failure.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    value: Value,
    path: &Path,
) -> Result<T, ModelError> {
    serde_json::from_value(value).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A checkpoint's weights: the file, its tensors' shapes, and a variable source over it.
pub(crate) struct Weights {
    pub path: PathBuf,
    pub shapes: HashMap<String, Vec<usize>>,
    pub vb: VarBuilder<'static>,
}

impl Weights {
    /// Opens the first of `candidates` present in `dir`: safetensors (memory-mapped) or a torch
    /// zip pickle (`.bin`, `.pt`, `.pth`).
    pub fn open(dir: &Path, candidates: &[&str], device: &Device) -> Result<Self, ModelError> {
        let Some(path) = candidates.iter().map(|c| dir.join(c)).find(|p| p.is_file()) else {
            let sharded = dir.join("model.safetensors.index.json").is_file()
                || dir.join("pytorch_model.bin.index.json").is_file();
            return Err(ModelError::IncompleteCheckpoint {
                path: dir.to_path_buf(),
                reason: if sharded {
                    "weights split into shards are not supported; merge them into one \
                     model.safetensors"
                        .into()
                } else {
                    format!("no weights file (looked for {})", candidates.join(", "))
                },
            });
        };
        let err = |source| ModelError::Weights {
            path: path.clone(),
            source,
        };
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let (shapes, vb) = if is_safetensors {
            // SAFETY: memory-mapped read-only; checkpoint folders must not change while loaded.
            let st =
                unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }.map_err(err)?;
            let shapes = st
                .tensors()
                .into_iter()
                .map(|(name, view)| (name, view.shape().to_vec()))
                .collect();
            // SAFETY: as above.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, device) }
                .map_err(err)?;
            (shapes, vb)
        } else {
            let pth = candle_core::pickle::PthTensors::new(&path, None).map_err(err)?;
            let shapes = pth
                .tensor_infos()
                .iter()
                .map(|(name, info)| (name.clone(), info.layout.shape().dims().to_vec()))
                .collect();
            (
                shapes,
                VarBuilder::from_backend(Box::new(pth), DType::F32, device.clone()),
            )
        };
        Ok(Self { path, shapes, vb })
    }

    /// The shape of tensor `name`, or an error naming the file and the tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize], ModelError> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Dimension `i` of tensor `name`, checking its rank.
    pub fn dim(&self, name: &str, i: usize) -> Result<usize, ModelError> {
        let shape = self.shape(name)?;
        shape
            .get(i)
            .copied()
            .ok_or_else(|| ModelError::Unsupported {
                path: self.path.clone(),
                reason: format!("tensor {name} has shape {shape:?}, expected rank > {i}"),
            })
    }

    /// How many `{prefix}N{suffix}` tensors exist for N = 0, 1, 2, ... (layers of a tower).
    pub fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.shapes.contains_key(&format!("{prefix}{i}{suffix}")))
            .count()
    }

    pub fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Wraps a candle error from building a tower over these weights.
    pub fn error(&self, source: candle_core::Error) -> ModelError {
        ModelError::Weights {
            path: self.path.clone(),
            source,
        }
    }
}

const VOCAB_FILE: &str = "vocab.txt";

/// Loads `tokenizer.json`, or for BERT-style folders that publish only `vocab.txt` (CXR-BERT),
/// builds the WordPiece tokenizer transformers' `BertTokenizerFast` would build from it;
/// truncating to `max_len` tokens, without padding. Returns the file that defines it.
/// SigLIP's SentencePiece model, read when a SigLIP folder has no `tokenizer.json`.
const SPIECE_FILE: &str = "spiece.model";

pub(crate) fn tokenizer(dir: &Path, max_len: usize) -> Result<(Tokenizer, PathBuf), ModelError> {
    let path = dir.join(TOKENIZER_FILE);
    let vocab = dir.join(VOCAB_FILE);
    let spiece = dir.join(SPIECE_FILE);
    let (mut tok, path) = if path.is_file() {
        let tok = Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        (tok, path)
    } else if vocab.is_file() {
        (wordpiece_from_vocab(dir, &vocab)?, vocab)
    } else if spiece.is_file() && detect(dir).ok() == Some(ModelLayout::HfSiglip) {
        let config = tokenizer_config(dir)?;
        let lowercase = config
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let eos = special_token(&config, "eos_token").unwrap_or_else(|| "</s>".into());
        (
            sentencepiece::siglip_tokenizer(&spiece, lowercase, &eos)?,
            spiece,
        )
    } else {
        return Err(ModelError::IncompleteCheckpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "no tokenizer: {TOKENIZER_FILE} is missing (and there is no {VOCAB_FILE}, nor \
                 for SigLIP a {SPIECE_FILE})"
            ),
        });
    };
    let tok_err = |e: tokenizers::Error| ModelError::Tokenizer {
        path: path.clone(),
        reason: e.to_string(),
    };
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(tok_err)?;
    tok.with_padding(None);
    Ok((tok, path))
}

/// `tokenizer_config.json`, or `null` when the folder has none.
fn tokenizer_config(dir: &Path) -> Result<Value, ModelError> {
    let path = dir.join("tokenizer_config.json");
    if path.is_file() {
        read_json(&path)
    } else {
        Ok(Value::Null)
    }
}

/// A special token of `tokenizer_config.json`: a string, or an `AddedToken` object's `content`.
fn special_token(config: &Value, key: &str) -> Option<String> {
    let v = config.get(key)?;
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
        .map(str::to_string)
}

/// BERT's tokenizer from `vocab.txt` and `tokenizer_config.json` (`do_lower_case`,
/// `strip_accents`, `tokenize_chinese_chars`, special tokens), as transformers converts a
/// `BertTokenizer`: BERT normaliser, BERT pre-tokeniser, WordPiece with `##` continuations,
/// `[CLS] ... [SEP]` around each text.
fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer, ModelError> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    use tokenizers::AddedToken;

    let config = tokenizer_config(dir)?;
    let flag =
        |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
    let token = |key: &str, default: &str| {
        special_token(&config, key).unwrap_or_else(|| default.to_string())
    };
    let lowercase = flag("do_lower_case", true);
    let strip_accents = config.get("strip_accents").and_then(Value::as_bool);
    let (cls, sep, unk, pad, mask) = (
        token("cls_token", "[CLS]"),
        token("sep_token", "[SEP]"),
        token("unk_token", "[UNK]"),
        token("pad_token", "[PAD]"),
        token("mask_token", "[MASK]"),
    );
    let err = |reason: String| ModelError::Tokenizer {
        path: vocab.to_path_buf(),
        reason,
    };
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(unk.clone())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(
        true,
        flag("tokenize_chinese_chars", true),
        strip_accents,
        lowercase,
    )))
    .map_err(|e| err(e.to_string()))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| err(format!("the vocabulary lacks {t}")))
    };
    let (cls_id, sep_id) = (id(&cls)?, id(&sep)?);
    tok.with_post_processor(Some(BertProcessing::new(
        (sep.clone(), sep_id),
        (cls.clone(), cls_id),
    )));
    tok.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let specials: Vec<AddedToken> = [pad, unk, cls, sep, mask]
        .into_iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| err(e.to_string()))?;
    Ok(tok)
}

/// Reads a Hugging Face image processor config (`preprocessor_config.json`) into the engine's
/// preprocessing: Pillow resampling on 8-bit pixels, resize (shorter side, or both sides), centre
/// crop rounded down, rescale by 1/255, normalise. Without the file, `default` is used.
pub(crate) fn hf_preprocess(
    dir: &Path,
    channels: usize,
    default: PreprocessConfig,
) -> Result<(PreprocessConfig, Option<PathBuf>), ModelError> {
    let path = dir.join(PREPROCESSOR_FILE);
    if !path.is_file() {
        return Ok((default, None));
    }
    let v = read_json(&path)?;
    let bad = |reason: String| ModelError::Unsupported {
        path: path.clone(),
        reason,
    };
    let flag = |key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
    let processor = v
        .get("image_processor_type")
        .or_else(|| v.get("feature_extractor_type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    // size: {"shortest_edge": n} | {"height": h, "width": w} | n
    let square = |s: &Value, what: &str| -> Result<Option<usize>, ModelError> {
        match s {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(n.as_u64().map(|n| n as usize)),
            Value::Object(o) => {
                let (h, w) = (
                    o.get("height").and_then(Value::as_u64),
                    o.get("width").and_then(Value::as_u64),
                );
                match (h, w) {
                    (Some(h), Some(w)) if h == w => Ok(Some(h as usize)),
                    (Some(h), Some(w)) => Err(bad(format!(
                        "{what} {h}x{w} is not square; only square inputs are supported"
                    ))),
                    _ => Ok(None),
                }
            }
            _ => Ok(None),
        }
    };
    let size = v.get("size").cloned().unwrap_or(Value::Null);
    let shortest = size.get("shortest_edge").and_then(Value::as_u64);
    let do_crop = flag("do_center_crop", false);
    let crop = square(v.get("crop_size").unwrap_or(&Value::Null), "crop_size")?;
    let (resize, image_size, resize_to) = match (shortest, square(&size, "size")?) {
        (Some(edge), _) => {
            let crop = crop.filter(|_| do_crop).ok_or_else(|| {
                bad(
                    "resizing the shorter side without a centre crop gives non-square inputs; \
                     not supported"
                        .into(),
                )
            })?;
            (
                ResizeMode::ShortestSideCentreCrop,
                crop,
                Some(edge as usize),
            )
        }
        // An integer size with a crop is a shorter-side resize (older processor configs).
        (None, Some(n)) if do_crop && size.is_number() => (
            ResizeMode::ShortestSideCentreCrop,
            crop.unwrap_or(n),
            Some(n),
        ),
        // Both sides to n, then a crop: the same as the resize alone when nothing is cropped.
        (None, Some(n)) if do_crop && crop.is_some_and(|c| c != n) => {
            return Err(bad(format!(
                "resizing to {n}x{n} and then cropping to {0}x{0} is not supported",
                crop.unwrap_or(n)
            )))
        }
        (None, Some(n)) => (ResizeMode::Squash, n, None),
        (None, None) => (default.resize, default.image_size, default.resize_to),
    };
    if !flag("do_resize", true) {
        return Err(bad("do_resize false is not supported".into()));
    }
    let default_filter = if processor.starts_with("ViT") { 2 } else { 3 };
    let resample = match v
        .get("resample")
        .and_then(Value::as_u64)
        .unwrap_or(default_filter)
    {
        2 => Resample::PilBilinear,
        3 => Resample::PilBicubic,
        other => {
            return Err(bad(format!(
                "resample {other} (only 2 = bilinear and 3 = bicubic are supported)"
            )))
        }
    };
    if flag("do_rescale", true) {
        let factor = v
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0);
        if (factor - 1.0 / 255.0).abs() > 1e-9 {
            return Err(bad(format!(
                "rescale_factor {factor} (only 1/255 is supported)"
            )));
        }
    } else {
        return Err(bad("do_rescale false is not supported".into()));
    }
    let floats = |key: &str| -> Option<Vec<f32>> {
        v.get(key)?
            .as_array()?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect()
    };
    let (mean, std) = if flag("do_normalize", true) {
        (
            floats("image_mean").unwrap_or(default.mean),
            floats("image_std").unwrap_or(default.std),
        )
    } else {
        (vec![0.0], vec![1.0])
    };
    Ok((
        PreprocessConfig {
            image_size,
            channels,
            mean,
            std,
            resize,
            resample,
            resize_to,
            crop_rounding: CropRounding::Floor,
        },
        Some(path),
    ))
}

/// CLIP's normalisation constants (OpenAI), used by CLIP and BiomedCLIP.
pub(crate) const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub(crate) const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> PreprocessConfig {
        PreprocessConfig {
            image_size: 224,
            channels: 3,
            mean: vec![0.5],
            std: vec![0.5],
            resize: ResizeMode::Squash,
            resample: Resample::PilBicubic,
            resize_to: None,
            crop_rounding: CropRounding::Floor,
        }
    }

    fn read(json: &str) -> Result<PreprocessConfig, ModelError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PREPROCESSOR_FILE), json).unwrap();
        hf_preprocess(dir.path(), 3, default()).map(|(p, _)| p)
    }

    #[test]
    fn reads_rad_dino_style_processors() {
        let p = read(
            r#"{"image_processor_type": "BitImageProcessor", "do_center_crop": true,
                "crop_size": {"height": 518, "width": 518}, "size": {"shortest_edge": 518},
                "resample": 3, "image_mean": [0.5307, 0.5307, 0.5307],
                "image_std": [0.2583, 0.2583, 0.2583]}"#,
        )
        .unwrap();
        assert_eq!(p.resize, ResizeMode::ShortestSideCentreCrop);
        assert_eq!((p.image_size, p.resize_to), (518, Some(518)));
        assert_eq!(p.resample, Resample::PilBicubic);
        assert_eq!(p.mean, vec![0.5307; 3]);
    }

    #[test]
    fn reads_legacy_and_square_sizes_and_refuses_the_rest() {
        let p = read(r#"{"size": 256, "crop_size": 224, "do_center_crop": true}"#).unwrap();
        assert_eq!(p.resize, ResizeMode::ShortestSideCentreCrop);
        assert_eq!((p.image_size, p.resize_to), (224, Some(256)));
        let p = read(r#"{"size": {"height": 384, "width": 384}, "resample": 2}"#).unwrap();
        assert_eq!((p.resize, p.image_size), (ResizeMode::Squash, 384));
        assert_eq!(p.resample, Resample::PilBilinear);
        for bad in [
            r#"{"size": {"height": 256, "width": 256}, "do_center_crop": true, "crop_size": 224}"#,
            r#"{"size": {"shortest_edge": 224}}"#,
            r#"{"size": {"height": 224, "width": 200}}"#,
            r#"{"size": 224, "resample": 1}"#,
            r#"{"size": 224, "rescale_factor": 0.5}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
