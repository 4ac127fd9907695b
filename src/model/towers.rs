//! The image and text towers, built from candle-transformers' ViT and BERT.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{layer_norm, LayerNorm, VarBuilder};
use candle_transformers::models::{bert, vit};

/// ViT image tower in the Hugging Face `ViTModel` layout (`embeddings.*`, `encoder.layer.N.*`,
/// `layernorm.*`). Returns the layer-normed CLS token, the representation CLIP-style models
/// project into the shared space.
pub struct VitTower {
    embeddings: vit::Embeddings,
    encoder: vit::Encoder,
    layernorm: LayerNorm,
}

impl VitTower {
    pub fn new(cfg: &vit::Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            embeddings: vit::Embeddings::new(cfg, false, vb.pp("embeddings"))?,
            encoder: vit::Encoder::new(cfg, vb.pp("encoder"))?,
            layernorm: layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm"))?,
        })
    }

    /// `pixels`: `(batch, channels, size, size)`; returns `(batch, hidden)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let xs = self.embeddings.forward(pixels, None, false)?;
        let xs = self.encoder.forward(&xs)?;
        xs.i((.., 0, ..))?.apply(&self.layernorm)
    }

    /// The layer-normed patch tokens `(batch, patches, hidden)` of the last layer (CLS left
    /// out), row-major over the patch grid.
    pub fn patch_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let xs = self.embeddings.forward(pixels, None, false)?;
        let xs = self.encoder.forward(&xs)?;
        let n = xs.dim(1)?;
        xs.narrow(1, 1, n - 1)?.contiguous()?.apply(&self.layernorm)
    }
}

/// BERT text tower in the Hugging Face `BertModel` layout. Returns the last layer's CLS token.
pub struct BertTower {
    model: bert::BertModel,
}

impl BertTower {
    pub fn new(cfg: &bert::Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            model: bert::BertModel::load(vb, cfg)?,
        })
    }

    /// `ids`, `mask`: `(batch, seq)` u32; returns `(batch, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_tokens(ids, mask)?.i((.., 0, ..))
    }

    /// The last layer's state of every token, `(batch, seq, hidden)`; padding positions hold
    /// values that mean nothing and must be masked by the reader.
    pub fn forward_tokens(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let type_ids = ids.zeros_like()?;
        self.model.forward(ids, &type_ids, Some(mask))
    }
}
