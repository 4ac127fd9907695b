//! The BERT text tower, built from candle-transformers' BERT. (The project's ViT image tower is
//! [`super::prenorm_vit::PreNormVit`] with HF ViT names.)

use candle_core::{IndexOp, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert;

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
