//! The BERT text tower (Devlin et al. 2019) in the Hugging Face `BertModel` layout. (The
//! project's ViT image tower is [`super::prenorm_vit::PreNormVit`] with HF ViT names.)
//!
//! It reads the same tensors as candle-transformers' `BertModel` and computes the same
//! function, which a test checks on shared weights; it exists because that model evaluates the
//! exact GELU with a scalar `erf` per element and its softmax in several passes, a measurable
//! share of a text batch (benches/README.md). Here the GELU is [`super::gelu`]'s and the
//! softmax candle's fused one.

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{self, HiddenAct};

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn new(cfg: &bert::Config, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let a = vb.pp("attention");
        Ok(Self {
            query: linear(h, h, a.pp("self.query"))?,
            key: linear(h, h, a.pp("self.key"))?,
            value: linear(h, h, a.pp("self.value"))?,
            attention_out: linear(h, h, a.pp("output.dense"))?,
            attention_norm: layer_norm(h, eps, a.pp("output.LayerNorm"))?,
            intermediate: linear(h, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
            output: linear(cfg.intermediate_size, h, vb.pp("output.dense"))?,
            output_norm: layer_norm(h, eps, vb.pp("output.LayerNorm"))?,
        })
    }

    /// Post-norm: `x = norm(x + attn(x))`, then `norm(x + mlp(x))`.
    fn forward(&self, x: &Tensor, mask: &Tensor, heads: usize, act: HiddenAct) -> Result<Tensor> {
        let (q, k, v) = (
            self.query.forward(x)?,
            self.key.forward(x)?,
            self.value.forward(x)?,
        );
        let ctx = super::attention::multi_head(&q, &k, &v, heads, Some(mask))?;
        let x = self
            .attention_norm
            .forward(&(self.attention_out.forward(&ctx)? + x)?)?;
        let y = self.intermediate.forward(&x)?;
        let y = match act {
            HiddenAct::Gelu => super::gelu::gelu_erf(&y)?,
            HiddenAct::GeluApproximate => y.gelu()?,
            HiddenAct::Relu => y.relu()?,
        };
        self.output_norm.forward(&(self.output.forward(&y)? + x)?)
    }
}

/// BERT text tower. Returns the last layer's CLS token.
pub struct BertTower {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    act: HiddenAct,
}

impl BertTower {
    pub fn new(cfg: &bert::Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!(
                "bad BERT shape: width {h}, {} heads",
                cfg.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, vb.pp("encoder.layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?,
            position: embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_type: embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: layer_norm(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
        })
    }

    /// `ids`, `mask`: `(batch, seq)` u32; returns `(batch, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_tokens(ids, mask)?.i((.., 0, ..))
    }

    /// The last layer's state of every token, `(batch, seq, hidden)`; padding positions hold
    /// values that mean nothing and must be masked by the reader.
    pub fn forward_tokens(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        // Every token is of type 0, absolute positions 0..n.
        let positions = Tensor::arange(0u32, n as u32, ids.device())?;
        let x = (self.word.forward(ids)? + self.token_type.forward(&ids.zeros_like()?)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mut x = self.norm.forward(&x)?;
        // Padding keys get the float minimum before the softmax, as `BertModel` adds it:
        // exactly zero attention.
        let mask = mask.to_dtype(x.dtype())?;
        let additive =
            ((mask.ones_like()? - &mask)? * f64::from(f32::MIN))?.reshape((b, 1, 1, n))?;
        for layer in &self.layers {
            x = layer.forward(&x, &additive, self.heads, self.act)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{max_abs_diff, small_model};
    use crate::model::TextTowerConfig;
    use candle_core::Device;

    /// The project's BERT through candle-transformers' `BertModel` and through [`BertTower`]
    /// with the same weights, on a padded batch.
    #[test]
    fn computes_what_candle_transformers_bert_computes() {
        let (_dir, config, vb) = small_model(5, "no pleural effusion or pneumothorax");
        let TextTowerConfig::Bert { config: c, .. } = &config.text;
        let device = Device::Cpu;
        let vb = vb.pp("text_model");
        let ours = BertTower::new(c, vb.clone()).unwrap();
        let reference = bert::BertModel::load(vb, c).unwrap();

        let ids = Tensor::new(&[[2u32, 17, 30, 3, 0, 0], [2, 9, 11, 12, 13, 3]], &device).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], &device).unwrap();
        let theirs = reference
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let mine = ours.forward_tokens(&ids, &mask).unwrap();
        // Padding positions mean nothing; compare the real tokens of each text.
        for (row, len) in [(0usize, 4usize), (1, 6)] {
            let a = mine.i((row, 0..len, ..)).unwrap();
            let b = theirs.i((row, 0..len, ..)).unwrap();
            let max = max_abs_diff(&a, &b);
            assert!(max < 1e-5, "text {row}: max abs diff {max}");
        }
    }
}
