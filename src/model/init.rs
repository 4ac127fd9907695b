//! Creating a model folder with random weights and a WordPiece vocabulary learnt from report text.
//!
//! The starting point for training (`cxr train`), and a real, loadable model for tests and for a
//! fresh checkout before a trained model exists. Initialisation follows BERT and ViT: weights
//! normal(0, 0.02), LayerNorm scale 1, biases 0, drawn from a seeded generator so the same seed
//! gives the same file on every machine.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{bert, vit};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::config::{ImageTowerConfig, ModelConfig, PreprocessConfig, ResizeMode, TextTowerConfig};
use super::dual::{DualEncoder, ModelError, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

/// Model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// A few thousand parameters at 32 px: for tests, runs in milliseconds.
    Test,
    /// ViT-Tiny-like image tower (4 layers, 192 wide, 224 px, patch 16) and a 3-layer BERT;
    /// about 8M parameters, 30 MB in f32.
    Small,
    /// For 64 px archives and CPU training (`cxr train`): ViT with 4 layers, 128 wide, patch 8 at
    /// 64 px, and a 2-layer BERT 128 wide reading up to 64 tokens; about 2M parameters.
    Tiny64,
    /// The `tiny64` text tower with a small CNN image tower at 64 px (four stages of one 3x3
    /// convolution, 16-32-64-128 channels; 97k parameters in the image tower): what trains from
    /// a few hundred radiographs, where a ViT learns nothing, at a cost CPU training can pay.
    Cnn64,
    /// ViT-B/16 image tower (224 px, 86M parameters, 17.5 GMACs per image) with the `small`
    /// text tower: the size of CheXzero's and BiomedCLIP's image encoders, for GPUs.
    ///
    /// 12 layers, 768 wide, 12 heads, patch 16. `benches/gpu.sh` measures a GPU's images/s
    /// with it against the card's arithmetic limit.
    VitB16,
}

/// What `init_random` builds.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    pub preset: Preset,
    pub seed: u64,
    /// Texts the WordPiece vocabulary is learnt from (reports, notes).
    pub corpus: Vec<String>,
}

const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Writes `config.json`, `tokenizer.json` and `model.safetensors` into `dir` and returns the
/// loaded model.
pub fn init_random(dir: &Path, opts: &InitOptions) -> Result<DualEncoder, ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let vocab_target = match opts.preset {
        Preset::Test => 500,
        Preset::Small | Preset::VitB16 => 6000,
        Preset::Tiny64 | Preset::Cnn64 => 4000,
    };
    let tokenizer = train_tokenizer(&opts.corpus, vocab_target)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let config = preset_config(&opts.name, opts.preset, vocab_size);

    let tokenizer_path = dir.join(TOKENIZER_FILE);
    tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| ModelError::Tokenizer {
            path: tokenizer_path.clone(),
            reason: e.to_string(),
        })?;
    let config_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_vec_pretty(&config).map_err(|e| ModelError::Config {
        path: config_path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&config_path, json).map_err(io(&config_path))?;

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    // Building the model through the VarMap creates every variable with its shape.
    DualEncoder::from_var_builder(config, tokenizer, String::new(), vb, &device)?;
    reinitialise(&varmap, opts.seed)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    varmap
        .save(&weights_path)
        .map_err(|source| ModelError::Weights {
            path: weights_path.clone(),
            source,
        })?;
    DualEncoder::load(dir, &device)
}

fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<Tokenizer, ModelError> {
    let err = |e: tokenizers::Error| ModelError::Tokenize(e.to_string());
    let mut tokenizer = Tokenizer::new(WordPiece::default());
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(err)?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
    let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build()
        .into();
    tokenizer
        .train(&mut trainer, corpus.iter().map(String::as_str))
        .map_err(err)?;
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| ModelError::Tokenize(format!("trained vocabulary lacks {t}")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    Ok(tokenizer)
}

fn preset_config(name: &str, preset: Preset, vocab_size: usize) -> ModelConfig {
    let (image_size, patch, vit_hidden, vit_layers, vit_heads) = match preset {
        Preset::Test => (32, 8, 32, 1, 2),
        Preset::Small => (224, 16, 192, 4, 3),
        Preset::VitB16 => (224, 16, 768, 12, 12),
        Preset::Tiny64 | Preset::Cnn64 => (64, 8, 128, 4, 4),
    };
    let (bert_hidden, bert_layers, bert_heads, max_len, embed_dim) = match preset {
        Preset::Test => (32, 1, 2, 64, 32),
        Preset::Small => (256, 3, 4, 128, 256),
        Preset::VitB16 => (256, 3, 4, 128, 512),
        Preset::Tiny64 | Preset::Cnn64 => (128, 2, 4, 64, 128),
    };
    let preprocess = PreprocessConfig {
        image_size,
        channels: 1,
        mean: vec![0.5],
        std: vec![0.25],
        resize: ResizeMode::Squash,
        resample: Default::default(),
        resize_to: None,
        crop_rounding: Default::default(),
    };
    let image = match preset {
        Preset::Cnn64 => ImageTowerConfig::Cnn {
            config: super::cnn::CnnConfig {
                in_channels: 1,
                stage_channels: vec![16, 32, 64, 128],
                depth: 1,
            },
            preprocess,
        },
        _ => ImageTowerConfig::Vit {
            config: vit::Config {
                hidden_size: vit_hidden,
                num_hidden_layers: vit_layers,
                num_attention_heads: vit_heads,
                intermediate_size: 4 * vit_hidden,
                hidden_act: candle_nn::Activation::Gelu,
                layer_norm_eps: 1e-12,
                image_size,
                patch_size: patch,
                num_channels: 1,
                qkv_bias: true,
            },
            preprocess,
        },
    };
    ModelConfig {
        name: name.to_string(),
        embed_dim,
        image,
        text: TextTowerConfig::Bert {
            config: bert::Config {
                vocab_size,
                hidden_size: bert_hidden,
                num_hidden_layers: bert_layers,
                num_attention_heads: bert_heads,
                intermediate_size: 4 * bert_hidden,
                hidden_act: bert::HiddenAct::Gelu,
                hidden_dropout_prob: 0.1,
                max_position_embeddings: max_len,
                type_vocab_size: 2,
                initializer_range: 0.02,
                layer_norm_eps: 1e-12,
                pad_token_id: 0,
                model_type: Some("bert".into()),
                ..bert::Config::default()
            },
            max_len,
        },
    }
}

/// Overwrites every variable from a SplitMix64-driven normal generator, visiting names in sorted
/// order so the result does not depend on hash-map iteration.
fn reinitialise(varmap: &VarMap, seed: u64) -> Result<(), ModelError> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Device("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = SplitMix64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let lower = name.to_ascii_lowercase();
        let is_bn = lower.contains(".bn.");
        let values: Vec<f32> = if lower.ends_with("bias") || lower.ends_with("running_mean") {
            vec![0.0; n]
        } else if lower.contains("layernorm")
            || lower.contains("layer_norm")
            || lower.ends_with("running_var")
            || (is_bn && lower.ends_with("weight"))
        {
            vec![1.0; n]
        } else if lower.ends_with("conv.weight") {
            // He et al. 2015: std sqrt(2 / fan_in) keeps ReLU activations' scale.
            let fan_in: usize = shape.dims().iter().skip(1).product();
            let std = (2.0 / fan_in.max(1) as f32).sqrt();
            (0..n).map(|_| std * rng.normal()).collect()
        } else {
            (0..n).map(|_| 0.02 * rng.normal()).collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    /// Box-Muller.
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        [
            "small left pleural effusion",
            "no pneumothorax or pleural effusion",
            "heart size is normal",
            "cardiomegaly with pulmonary edema",
            "right lower lobe consolidation",
        ]
        .iter()
        .cycle()
        .take(50)
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn init_is_deterministic_and_embeds_unit_vectors() {
        let opts = InitOptions {
            name: "t".into(),
            preset: Preset::Test,
            seed: 7,
            corpus: corpus(),
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ma = init_random(a.path(), &opts).unwrap();
        let mb = init_random(b.path(), &opts).unwrap();
        assert_eq!(ma.fingerprint(), mb.fingerprint());

        let t = ma
            .embed_texts(&["small left pleural effusion", "cardiomegaly"])
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].len(), ma.dim());
        let norm: f32 = t[0].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_ne!(t[0], t[1]);

        let img = crate::ingest::GreyImage {
            width: 40,
            height: 50,
            pixels: (0..2000).map(|i| (i % 97) as f32 / 97.0).collect(),
        };
        let v = ma.embed_images(std::slice::from_ref(&img)).unwrap();
        let norm: f32 = v[0].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        // batching does not change an image's embedding
        let v2 = ma.embed_images(&[img.clone(), img]).unwrap();
        let diff: f32 = v[0].iter().zip(&v2[1]).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff < 1e-4);

        let other = InitOptions { seed: 8, ..opts };
        let c = tempfile::tempdir().unwrap();
        let mc = init_random(c.path(), &other).unwrap();
        assert_ne!(ma.fingerprint(), mc.fingerprint());
    }

    #[test]
    fn missing_files_name_the_folder_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = match DualEncoder::load(dir.path(), &Device::Cpu) {
            Err(e) => e,
            Ok(_) => panic!("an empty folder is not a model"),
        };
        assert!(err.to_string().contains("cxr model init"), "{err}");
    }
}
