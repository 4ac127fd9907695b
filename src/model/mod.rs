//! Encoders on candle: a dual encoder that maps chest X-rays and report text into one
//! L2-normalised space (CLIP, Radford et al. 2021; ELIXR-C, Xu et al. 2023).
//!
//! A model is a folder. The project's own: `config.json` (towers, dimensions, preprocessing),
//! `tokenizer.json` (a Hugging Face tokenizer) and `model.safetensors`. Public checkpoints are
//! read in their published layouts (`checkpoint/`: Hugging Face CLIP, SigLIP, DINOv2, BERT,
//! CXR-BERT; open_clip BiomedCLIP), each with its own preprocessing. The towers come from
//! candle-transformers where it has them (ViT, BERT, CLIP, SigLIP) and from `prenorm_vit` for
//! timm and HF DINOv2 names; this module adds the projections, the preprocessing and the
//! fingerprint that ties an index to the model that built it.

mod attention;
mod checkpoint;
pub mod cnn;
mod config;
mod dual;
mod encoders;
mod gelu;
mod init;
mod pil;
mod prenorm_vit;
mod preprocess;
pub mod threads;
mod towers;
mod triangle;

pub use checkpoint::ModelLayout;
pub use config::{
    CropRounding, ImageTowerConfig, ModelConfig, PreprocessConfig, Resample, ResizeMode,
    TextTowerConfig,
};
pub use dual::{DualEncoder, ModelError, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
pub use init::{init_random, InitOptions, Preset};
pub use preprocess::to_model_input;

/// Where `cxr` looks for its model when `--model` is not given: `$CXR_MODEL`, else the
/// `models/default` folder of the source tree it was built from.
pub fn default_model_dir() -> std::path::PathBuf {
    match std::env::var_os("CXR_MODEL") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default"),
    }
}

/// The device to run on: `cpu`, or `cuda`/`cuda:N` when built with the `cuda` feature.
pub fn device(name: &str) -> Result<candle_core::Device, ModelError> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal = n
                .strip_prefix("cuda:")
                .map(|i| i.parse::<usize>())
                .transpose()
                .map_err(|_| ModelError::Device(format!("bad device `{n}`")))?
                .unwrap_or(0);
            if !candle_core::utils::cuda_is_available() {
                return Err(ModelError::Device(
                    "this build has no CUDA support; rebuild with `--features cuda`".into(),
                ));
            }
            candle_core::Device::new_cuda(ordinal).map_err(|e| {
                // The error alone: candle attaches a backtrace when RUST_BACKTRACE is set.
                let e = match e {
                    candle_core::Error::WithBacktrace { inner, .. } => *inner,
                    e => e,
                };
                ModelError::Device(format!("cannot open CUDA device {ordinal}: {e}"))
            })
        }
        n => Err(ModelError::Device(format!(
            "unknown device `{n}` (expected cpu, cuda or cuda:N)"
        ))),
    }
}

/// What the towers' tests share: a random model of the small preset on disk, and the largest
/// difference between two tensors.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::{init_random, InitOptions, ModelConfig, Preset};

    /// A random `small` model (vocabulary from `corpus`): its folder, config and weights.
    pub(crate) fn small_model(
        seed: u64,
        corpus: &str,
    ) -> (tempfile::TempDir, ModelConfig, VarBuilder<'static>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            name: "tower-check".into(),
            preset: Preset::Small,
            seed,
            corpus: vec![corpus.into()],
        };
        init_random(dir.path(), &opts).unwrap();
        let config: ModelConfig =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
        (dir, config, vb)
    }

    /// max |a - b| over all elements (same shape asserted).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::device;

    /// `--device` names: a mistyped one, or CUDA asked of a build without it, is refused with
    /// what to do, before any model is read.
    #[test]
    fn device_names_are_checked() {
        assert!(device("cpu").unwrap().is_cpu());
        let message = |name: &str| {
            device(name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(message("tpu").contains("unknown device `tpu`"));
        assert!(message("cuda:x").contains("bad device `cuda:x`"));
        #[cfg(not(feature = "cuda"))]
        assert!(message("cuda").contains("rebuild with `--features cuda`"));
    }
}
