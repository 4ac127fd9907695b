//! Differentiable re-implementations of the two towers' forward passes, for training.
//!
//! candle-nn 0.11's fused CPU LayerNorm (`ops::layer_norm`, taken by `LayerNorm::forward` on
//! contiguous input) and `softmax_last_dim` have no backward pass: gradients stop at them, so
//! training through candle-transformers' ViT and BERT would only ever update the projections.
//! These modules read the *same variables* (same names, same `VarMap`) and compute the same
//! function with plain differentiable ops; a test checks that they agree with the inference
//! towers to float precision.

use candle_core::{IndexOp, Module, Result, Tensor, D};
use candle_nn::{linear, linear_no_bias, Linear, VarBuilder};

use crate::model::cnn::CnnTower;
use crate::model::{ImageTowerConfig, ModelConfig, TextTowerConfig};

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

fn softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// `x`: `(b, n, h)`; `mask`: additive `(b, 1, 1, n)` or none.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let ctx = softmax(&scores)?.matmul(&v)?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, n, h))?;
        self.out.forward(&ctx)
    }
}

struct VitLayer {
    attention: Attention,
    before: Norm,
    after: Norm,
    intermediate: Linear,
    output: Linear,
}

/// ViT (HF `ViTModel` layout), returning the layer-normed CLS token like the inference tower
/// (`PreNormVit` with HF ViT names).
pub struct TrainVit {
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls: Tensor,
    pos: Tensor,
    layers: Vec<VitLayer>,
    norm: Norm,
    patch: usize,
    hidden: usize,
}

impl TrainVit {
    pub fn new(cfg: &candle_transformers::models::vit::Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let p = cfg.patch_size;
        let c = cfg.num_channels;
        let n = (cfg.image_size / p) * (cfg.image_size / p);
        let e = vb.pp("embeddings");
        let proj = e.pp("patch_embeddings").pp("projection");
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder").pp("layer").pp(i);
            let a = l.pp("attention");
            let lin = |vb: VarBuilder, i, o| {
                if cfg.qkv_bias {
                    linear(i, o, vb)
                } else {
                    linear_no_bias(i, o, vb)
                }
            };
            layers.push(VitLayer {
                attention: Attention {
                    query: lin(a.pp("attention").pp("query"), h, h)?,
                    key: lin(a.pp("attention").pp("key"), h, h)?,
                    value: lin(a.pp("attention").pp("value"), h, h)?,
                    out: linear(h, h, a.pp("output").pp("dense"))?,
                    heads: cfg.num_attention_heads,
                },
                before: Norm::new(h, cfg.layer_norm_eps, l.pp("layernorm_before"))?,
                after: Norm::new(h, cfg.layer_norm_eps, l.pp("layernorm_after"))?,
                intermediate: linear(h, cfg.intermediate_size, l.pp("intermediate").pp("dense"))?,
                output: linear(cfg.intermediate_size, h, l.pp("output").pp("dense"))?,
            });
        }
        Ok(Self {
            patch_weight: proj.get((h, c, p, p), "weight")?.reshape((h, c * p * p))?,
            patch_bias: proj.get(h, "bias")?,
            cls: e.get((1, 1, h), "cls_token")?,
            pos: e.get((1, n + 1, h), "position_embeddings")?,
            layers,
            norm: Norm::new(h, cfg.layer_norm_eps, vb.pp("layernorm"))?,
            patch: p,
            hidden: h,
        })
    }

    /// `(b, c, s, s)` -> `(b, hidden)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, s, _) = pixels.dims4()?;
        let p = self.patch;
        let g = s / p;
        // A stride-p convolution with a p x p kernel is a matmul over unfolded patches.
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, g * g, c * p * p))?;
        let emb = patches
            .broadcast_matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?;
        let cls = self.cls.broadcast_as((b, 1, self.hidden))?;
        let mut x = Tensor::cat(&[&cls, &emb], 1)?.broadcast_add(&self.pos)?;
        for l in &self.layers {
            let a = l.attention.forward(&l.before.forward(&x)?, None)?;
            x = (x + a)?;
            let y = l
                .output
                .forward(&l.intermediate.forward(&l.after.forward(&x)?)?.gelu_erf()?)?;
            x = (x + y)?;
        }
        self.norm.forward(&x.i((.., 0, ..))?)
    }
}

struct BertLayer {
    attention: Attention,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// BERT (HF `BertModel` layout), returning the last layer's CLS token like `BertTower`.
pub struct TrainBert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: Norm,
    layers: Vec<BertLayer>,
    act_erf: bool,
}

impl TrainBert {
    pub fn new(cfg: &candle_transformers::models::bert::Config, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder").pp("layer").pp(i);
            let a = l.pp("attention");
            layers.push(BertLayer {
                attention: Attention {
                    query: linear(h, h, a.pp("self").pp("query"))?,
                    key: linear(h, h, a.pp("self").pp("key"))?,
                    value: linear(h, h, a.pp("self").pp("value"))?,
                    out: linear(h, h, a.pp("output").pp("dense"))?,
                    heads: cfg.num_attention_heads,
                },
                attention_norm: Norm::new(h, cfg.layer_norm_eps, a.pp("output").pp("LayerNorm"))?,
                intermediate: linear(h, cfg.intermediate_size, l.pp("intermediate").pp("dense"))?,
                output: linear(cfg.intermediate_size, h, l.pp("output").pp("dense"))?,
                output_norm: Norm::new(h, cfg.layer_norm_eps, l.pp("output").pp("LayerNorm"))?,
            });
        }
        Ok(Self {
            word: e.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position: e.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type: e.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?,
            norm: Norm::new(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
            act_erf: matches!(
                cfg.hidden_act,
                candle_transformers::models::bert::HiddenAct::Gelu
            ),
        })
    }

    /// `ids`, `mask`: `(b, n)` u32 -> `(b, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let h = self.word.dim(1)?;
        let words = self
            .word
            .embedding(&ids.flatten_all()?)?
            .reshape((b, n, h))?;
        let x = words
            .broadcast_add(&self.token_type.i(0)?)?
            .broadcast_add(&self.position.narrow(0, 0, n)?)?;
        let mut x = self.norm.forward(&x)?;
        // Padding positions get -1e4 before the softmax (BERT adds the float minimum; both give
        // exactly zero attention in f32).
        let additive = ((mask.to_dtype(x.dtype())? - 1.0)? * 1e4)?.reshape((b, 1, 1, n))?;
        for l in &self.layers {
            let a = l.attention.forward(&x, Some(&additive))?;
            x = l.attention_norm.forward(&(a + &x)?)?;
            let y = l.intermediate.forward(&x)?;
            let y = if self.act_erf {
                y.gelu_erf()?
            } else {
                y.gelu()?
            };
            let y = l.output.forward(&y)?;
            x = l.output_norm.forward(&(y + &x)?)?;
        }
        x.i((.., 0, ..))
    }
}

/// The image tower as trained.
pub enum TrainImage {
    Vit(TrainVit),
    Cnn(CnnTower),
}

/// Both towers and the projections over one variable source.
pub struct TrainTowers {
    pub image: TrainImage,
    pub bert: TrainBert,
    pub visual_projection: Linear,
    pub text_projection: Linear,
}

impl TrainTowers {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let image = match &config.image {
            ImageTowerConfig::Vit { config: c, .. } => {
                TrainImage::Vit(TrainVit::new(c, vb.pp("vision_model"))?)
            }
            // Plain convolutions, batch norm and pooling all have backward passes in candle:
            // the inference tower trains as it is, with batch statistics.
            ImageTowerConfig::Cnn { config: c, .. } => {
                TrainImage::Cnn(CnnTower::new(c, vb.pp("vision_model"))?)
            }
        };
        let bert = match &config.text {
            TextTowerConfig::Bert { config: c, .. } => TrainBert::new(c, vb.pp("text_model"))?,
        };
        Ok(Self {
            image,
            bert,
            visual_projection: linear_no_bias(
                config.image.hidden_size(),
                config.embed_dim,
                vb.pp("visual_projection"),
            )?,
            text_projection: linear_no_bias(
                config.text.hidden_size(),
                config.embed_dim,
                vb.pp("text_projection"),
            )?,
        })
    }

    /// Unnormalised image embeddings.
    pub fn images(&self, pixels: &Tensor) -> Result<Tensor> {
        let pooled = match &self.image {
            TrainImage::Vit(vit) => vit.forward(pixels)?,
            TrainImage::Cnn(cnn) => cnn.forward_t(pixels, true)?,
        };
        self.visual_projection.forward(&pooled)
    }

    /// Unnormalised text embeddings.
    pub fn texts(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.text_projection.forward(&self.bert.forward(ids, mask)?)
    }
}
