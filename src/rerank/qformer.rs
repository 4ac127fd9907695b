//! A small Q-Former (BLIP-2, Li et al. 2023, arXiv:2301.12597; as ELIXR-B uses it, Xu et al.
//! 2023, arXiv:2308.01317) that scores whether an image and a text match.
//!
//! `M` learned query tokens of width `d` pass through `L` layers. Each layer (pre-LayerNorm):
//!
//! 1. self-attention over `[queries ; text tokens]`, bidirectional, with the tokenizer's mask on
//!    the text keys: the image-text matching (ITM) mode of BLIP-2, where queries and text see
//!    each other. Without text (the ITC mode) the queries attend only to themselves;
//! 2. cross-attention from the query tokens (only) to the image tokens;
//! 3. a feed-forward block (GELU), shared by queries and text tokens.
//!
//! Image tokens are the cells of the frozen image tower's last feature map, projected to `d`,
//! with a learned position embedding per cell; text tokens are the frozen text tower's
//! last-layer token states, projected to `d`. Heads: ITM is a linear layer on the mean of the
//! query outputs giving `[no match, match]` logits; ITC projects each query output and the text's
//! [CLS] state into a small space and takes the best query's cosine (BLIP-2's max over queries).
//!
//! Training needs gradients through every op: candle-nn's fused CPU LayerNorm has no backward
//! pass, so the norms are built by `candle_nn::layer_norm` (for their weights) and applied with
//! plain tensor ops; the attention softmax is candle-nn's generic (differentiable) one.
//! Weight names: `query_tokens`, `image_proj`, `image_pos`, `image_norm`, `text_proj`,
//! `text_norm`, `layers.{i}.{self_attn,cross_attn}.{q,k,v,o}`, `layers.{i}.{norm1,norm2,norm3}`,
//! `layers.{i}.ffn.{fc1,fc2}`, `final_norm`, `itm_head`, `itc_query`, `itc_text`,
//! `logit_scale`.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Shape of the network; saved in the reranker's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QFormerConfig {
    /// Learned query tokens (BLIP-2 uses 32 at width 768; 8 suffice for a 4x4 image map).
    pub num_queries: usize,
    /// Width `d` of queries and projected tokens.
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Channels of the image tower's feature map.
    pub image_hidden: usize,
    /// Cells of the image tower's feature map (position embeddings are learnt per cell).
    pub image_tokens: usize,
    /// Width of the text tower's token states.
    pub text_hidden: usize,
    /// Width of the ITC space.
    pub itc_dim: usize,
    pub layer_norm_eps: f64,
}

/// Additive attention bias for masked keys: far below any score, and finite, so a softmax row
/// with some masked keys never sees `inf - inf`.
const MASKED: f64 = -1e9;

fn norm(ln: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + ln.eps())?.sqrt()?)?;
    let out = normed.broadcast_mul(ln.weight())?;
    match ln.bias() {
        Some(b) => out.broadcast_add(b),
        None => Ok(out),
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Attention {
    fn new(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: linear(d, d, vb.pp("q"))?,
            k: linear(d, d, vb.pp("k"))?,
            v: linear(d, d, vb.pp("v"))?,
            o: linear(d, d, vb.pp("o"))?,
            heads,
        })
    }

    /// `x`: `(b, n, d)` queries; `ctx`: `(b, m, d)` keys and values; `bias`: additive
    /// `(b, 1, 1, m)` key mask or none. Returns `(b, n, d)`.
    fn forward(&self, x: &Tensor, ctx: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let m = ctx.dim(1)?;
        let hd = d / self.heads;
        let split = |t: Tensor, len: usize| -> Result<Tensor> {
            t.reshape((b, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?, n)?;
        let k = split(self.k.forward(ctx)?, m)?;
        let v = split(self.v.forward(ctx)?, m)?;
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let ctx = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, n, d))?;
        self.o.forward(&ctx)
    }
}

struct Layer {
    self_attn: Attention,
    cross_attn: Attention,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The network. Build with [`QFormer::new`] over any `VarBuilder` (a `VarMap` to train, the
/// saved safetensors to score).
pub struct QFormer {
    cfg: QFormerConfig,
    query_tokens: Tensor,
    image_proj: Linear,
    image_pos: Tensor,
    image_norm: LayerNorm,
    text_proj: Linear,
    text_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    itm_head: Linear,
    itc_query: Linear,
    itc_text: Linear,
    logit_scale: Tensor,
}

/// CLIP's initial ITC temperature, 0.07, as `ln(1 / 0.07)`.
pub const INIT_LOGIT_SCALE: f64 = 2.659_26;

impl QFormer {
    pub fn new(cfg: &QFormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        if cfg.num_heads == 0 || !d.is_multiple_of(cfg.num_heads) {
            candle_core::bail!(
                "hidden_size {d} is not a multiple of num_heads {}",
                cfg.num_heads
            );
        }
        if cfg.num_queries == 0 || cfg.num_layers == 0 {
            candle_core::bail!("a Q-Former needs at least one query token and one layer");
        }
        let eps = cfg.layer_norm_eps;
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let vb = vb.pp(format!("layers.{i}"));
            layers.push(Layer {
                self_attn: Attention::new(d, cfg.num_heads, vb.pp("self_attn"))?,
                cross_attn: Attention::new(d, cfg.num_heads, vb.pp("cross_attn"))?,
                norm1: layer_norm(d, eps, vb.pp("norm1"))?,
                norm2: layer_norm(d, eps, vb.pp("norm2"))?,
                norm3: layer_norm(d, eps, vb.pp("norm3"))?,
                fc1: linear(d, cfg.intermediate_size, vb.pp("ffn.fc1"))?,
                fc2: linear(cfg.intermediate_size, d, vb.pp("ffn.fc2"))?,
            });
        }
        Ok(Self {
            query_tokens: vb.get_with_hints((cfg.num_queries, d), "query_tokens", init)?,
            image_proj: linear(cfg.image_hidden, d, vb.pp("image_proj"))?,
            image_pos: vb.get_with_hints((cfg.image_tokens, d), "image_pos", init)?,
            image_norm: layer_norm(d, eps, vb.pp("image_norm"))?,
            text_proj: linear(cfg.text_hidden, d, vb.pp("text_proj"))?,
            text_norm: layer_norm(d, eps, vb.pp("text_norm"))?,
            layers,
            final_norm: layer_norm(d, eps, vb.pp("final_norm"))?,
            itm_head: linear(d, 2, vb.pp("itm_head"))?,
            itc_query: linear(d, cfg.itc_dim, vb.pp("itc_query"))?,
            itc_text: linear(cfg.text_hidden, cfg.itc_dim, vb.pp("itc_text"))?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                candle_nn::Init::Const(INIT_LOGIT_SCALE),
            )?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &QFormerConfig {
        &self.cfg
    }

    /// `exp(logit_scale)` as a scalar tensor (on the autograd graph when training).
    pub fn itc_scale(&self) -> Result<Tensor> {
        self.logit_scale.exp()
    }

    /// `(b, cells, image_hidden)` tower tokens -> `(b, cells, d)`.
    fn embed_image(&self, image: &Tensor) -> Result<Tensor> {
        let (_, cells, _) = image.dims3()?;
        if cells != self.cfg.image_tokens {
            candle_core::bail!(
                "the image tower gave {cells} tokens; this reranker was built for {}",
                self.cfg.image_tokens
            );
        }
        let x = self
            .image_proj
            .forward(image)?
            .broadcast_add(&self.image_pos)?;
        norm(&self.image_norm, &x)
    }

    /// Query outputs `(b, M, d)` after the final norm. With `text = Some((states, mask))` the
    /// text tokens join the self-attention (ITM mode), else the queries are alone (ITC mode).
    fn queries(&self, image: &Tensor, text: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
        let b = image.dim(0)?;
        let m = self.cfg.num_queries;
        let d = self.cfg.hidden_size;
        let image = self.embed_image(image)?;
        let queries = self.query_tokens.unsqueeze(0)?.broadcast_as((b, m, d))?;
        let (mut x, bias) = match text {
            Some((states, mask)) => {
                let n = states.dim(1)?;
                let t = norm(&self.text_norm, &self.text_proj.forward(states)?)?;
                // Keys: queries always visible, text tokens where the mask is 1.
                let visible = Tensor::cat(
                    &[
                        &Tensor::ones((b, m), candle_core::DType::F32, image.device())?,
                        &mask.to_dtype(candle_core::DType::F32)?,
                    ],
                    1,
                )?;
                let bias = ((visible - 1.0)? * -MASKED)?.reshape((b, 1, 1, m + n))?;
                (Tensor::cat(&[&queries, &t], 1)?, Some(bias))
            }
            None => (queries.contiguous()?, None),
        };
        let total = x.dim(1)?;
        for l in &self.layers {
            let h = norm(&l.norm1, &x)?;
            x = (&x + l.self_attn.forward(&h, &h, bias.as_ref())?)?;
            let q = x.narrow(1, 0, m)?;
            let q = (&q + l.cross_attn.forward(&norm(&l.norm2, &q)?, &image, None)?)?;
            x = if total > m {
                Tensor::cat(&[&q, &x.narrow(1, m, total - m)?], 1)?
            } else {
                q
            };
            let h = l
                .fc2
                .forward(&l.fc1.forward(&norm(&l.norm3, &x)?)?.gelu_erf()?)?;
            x = (x + h)?;
        }
        norm(&self.final_norm, &x.narrow(1, 0, m)?)
    }

    /// ITM logits `(b, 2)` (`[no match, match]`) of `b` image-text pairs: image tokens
    /// `(b, cells, image_hidden)`, text states `(b, len, text_hidden)`, mask `(b, len)` u32.
    pub fn itm_logits(&self, image: &Tensor, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = self.queries(image, Some((states, mask)))?;
        self.itm_head.forward(&q.mean(1)?)
    }

    /// ITC embeddings of the query outputs, `(b, M, itc_dim)`, unit length.
    pub fn itc_image(&self, image: &Tensor) -> Result<Tensor> {
        l2_normalise(&self.itc_query.forward(&self.queries(image, None)?)?)
    }

    /// ITC embedding of each text's [CLS] state (position 0), `(b, itc_dim)`, unit length.
    pub fn itc_text(&self, states: &Tensor) -> Result<Tensor> {
        l2_normalise(
            &self
                .itc_text
                .forward(&states.narrow(1, 0, 1)?.squeeze(1)?)?,
        )
    }

    /// `(images, texts)` similarities: for each pair the best query's cosine (BLIP-2).
    pub fn itc_similarity(&self, image_emb: &Tensor, text_emb: &Tensor) -> Result<Tensor> {
        let (bi, m, e) = image_emb.dims3()?;
        let bt = text_emb.dim(0)?;
        image_emb
            .reshape((bi * m, e))?
            .matmul(&text_emb.t()?)?
            .reshape((bi, m, bt))?
            .max(1)
    }
}

fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&(n + 1e-12)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device, IndexOp};
    use candle_nn::VarMap;

    pub(crate) fn tiny_config() -> QFormerConfig {
        QFormerConfig {
            num_queries: 4,
            hidden_size: 16,
            num_layers: 2,
            num_heads: 2,
            intermediate_size: 32,
            image_hidden: 8,
            image_tokens: 4,
            text_hidden: 12,
            itc_dim: 8,
            layer_norm_eps: 1e-5,
        }
    }

    fn build() -> (VarMap, QFormer) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let q = QFormer::new(&tiny_config(), vb).unwrap();
        // Random weights everywhere (a fresh VarMap gives zero biases and unit norms, which would
        // hide mistakes that only show with non-trivial values).
        for var in varmap.all_vars() {
            let t = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
        (varmap, q)
    }

    #[test]
    fn shapes() {
        let (_, q) = build();
        let image = Tensor::randn(0f32, 1.0, (3, 4, 8), &Device::Cpu).unwrap();
        let states = Tensor::randn(0f32, 1.0, (3, 5, 12), &Device::Cpu).unwrap();
        let mask = Tensor::ones((3, 5), DType::U32, &Device::Cpu).unwrap();
        assert_eq!(q.itm_logits(&image, &states, &mask).unwrap().dims(), [3, 2]);
        let ie = q.itc_image(&image).unwrap();
        assert_eq!(ie.dims(), [3, 4, 8]);
        let te = q.itc_text(&states).unwrap();
        assert_eq!(te.dims(), [3, 8]);
        let sim = q.itc_similarity(&ie, &te).unwrap();
        assert_eq!(sim.dims(), [3, 3]);
        let s = sim.to_vec2::<f32>().unwrap();
        assert!(s.iter().flatten().all(|v| v.abs() <= 1.0 + 1e-5));
        // The wrong number of image cells is refused, not broadcast.
        let wrong = Tensor::randn(0f32, 1.0, (3, 9, 8), &Device::Cpu).unwrap();
        assert!(q.itm_logits(&wrong, &states, &mask).is_err());
    }

    #[test]
    fn padding_does_not_change_the_itm_logits() {
        let (_, q) = build();
        let image = Tensor::randn(0f32, 1.0, (1, 4, 8), &Device::Cpu).unwrap();
        let states = Tensor::randn(0f32, 1.0, (1, 5, 12), &Device::Cpu).unwrap();
        let mask = Tensor::ones((1, 5), DType::U32, &Device::Cpu).unwrap();
        let plain = q.itm_logits(&image, &states, &mask).unwrap();
        // Three padding positions holding large garbage, masked out.
        let garbage = (Tensor::randn(0f32, 1.0, (1, 3, 12), &Device::Cpu).unwrap() * 50.0).unwrap();
        let padded = Tensor::cat(&[&states, &garbage], 1).unwrap();
        let pmask = Tensor::cat(
            &[
                &mask,
                &Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap(),
            ],
            1,
        )
        .unwrap();
        let with_pad = q.itm_logits(&image, &padded, &pmask).unwrap();
        let diff = (plain - &with_pad)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "padding moved the ITM logits by {diff}");
        // The mask matters: the same garbage left visible changes them.
        let visible = Tensor::ones((1, 8), DType::U32, &Device::Cpu).unwrap();
        let seen = q.itm_logits(&image, &padded, &visible).unwrap();
        let moved = (seen - &with_pad)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(moved > 1e-3, "unmasked garbage changed nothing ({moved})");
        // And the text matters: another text gives other logits.
        let other = Tensor::randn(0f32, 1.0, (1, 5, 12), &Device::Cpu).unwrap();
        let o = q.itm_logits(&image, &other, &mask).unwrap();
        let d = (o - &with_pad).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-3);
    }

    #[test]
    fn gradients_reach_every_weight() {
        let (varmap, q) = build();
        let image = Tensor::randn(0f32, 1.0, (2, 4, 8), &Device::Cpu).unwrap();
        let states = Tensor::randn(0f32, 1.0, (2, 5, 12), &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &Device::Cpu).unwrap();
        let itm = q.itm_logits(&image, &states, &mask).unwrap();
        let sim = q
            .itc_similarity(&q.itc_image(&image).unwrap(), &q.itc_text(&states).unwrap())
            .unwrap();
        let loss = (itm.i((.., 1)).unwrap().sum_all().unwrap()
            + sim
                .broadcast_mul(&q.itc_scale().unwrap())
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "no gradient for {name}");
        }
    }
}
