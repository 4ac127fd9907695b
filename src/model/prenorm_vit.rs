//! A pre-norm Vision Transformer (Dosovitskiy et al. 2021) reading either timm's tensor names
//! (open_clip's timm trunks, e.g. BiomedCLIP's ViT-B/16) or Hugging Face DINOv2's
//! (`Dinov2Model`, e.g. RAD-DINO; Oquab et al. 2023).
//!
//! candle-transformers' `dinov2` follows Meta's original names with a fixed 518 px input and an
//! ImageNet head, and its ViT follows HF `ViTModel`; neither reads these two layouts, which
//! share one computation: patch embedding with a CLS token and learnt positions, blocks of
//! `x + ls1 * attn(norm1(x))`, `x + ls2 * mlp(norm2(x))`, then a final norm; the image
//! representation is the normed CLS token.

use candle_core::{IndexOp, Module, Result, Tensor, D};
use candle_nn::{layer_norm, Conv2dConfig, LayerNorm, Linear, VarBuilder};

/// Which checkpoint's names the tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitNames {
    /// timm `VisionTransformer`: `cls_token`, `pos_embed`, `patch_embed.proj`,
    /// `blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}`, `norm`.
    Timm,
    /// HF `Dinov2Model`: `embeddings.{cls_token,position_embeddings,patch_embeddings.projection}`,
    /// `encoder.layer.N.{norm1,attention.attention.{query,key,value},attention.output.dense,
    /// layer_scale1.lambda1,norm2,mlp.fc1,mlp.fc2,layer_scale2.lambda1}`, `layernorm`.
    HfDinov2,
}

/// Architecture of a [`PreNormVit`].
#[derive(Debug, Clone)]
pub struct PreNormVitConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub patch_size: usize,
    /// Input side in pixels; the learnt positions must cover exactly this grid.
    pub image_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
    pub names: VitNames,
}

enum Qkv {
    Fused(Linear),
    Separate { q: Linear, k: Linear, v: Linear },
}

struct Block {
    norm1: LayerNorm,
    qkv: Qkv,
    proj: Linear,
    ls1: Option<Tensor>,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ls2: Option<Tensor>,
    heads: usize,
}

fn optional(vb: &VarBuilder, size: usize, name: &str) -> Result<Option<Tensor>> {
    if vb.contains_tensor(name) {
        Ok(Some(vb.get(size, name)?))
    } else {
        Ok(None)
    }
}

impl Block {
    fn new(cfg: &PreNormVitConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let (qkv, proj, ls1, ls2) = match cfg.names {
            VitNames::Timm => (
                Qkv::Fused(candle_nn::linear(h, 3 * h, vb.pp("attn.qkv"))?),
                candle_nn::linear(h, h, vb.pp("attn.proj"))?,
                optional(&vb, h, "ls1.gamma")?,
                optional(&vb, h, "ls2.gamma")?,
            ),
            VitNames::HfDinov2 => {
                let a = vb.pp("attention.attention");
                (
                    Qkv::Separate {
                        q: candle_nn::linear(h, h, a.pp("query"))?,
                        k: candle_nn::linear(h, h, a.pp("key"))?,
                        v: candle_nn::linear(h, h, a.pp("value"))?,
                    },
                    candle_nn::linear(h, h, vb.pp("attention.output.dense"))?,
                    Some(vb.get(h, "layer_scale1.lambda1")?),
                    Some(vb.get(h, "layer_scale2.lambda1")?),
                )
            }
        };
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp("norm1"))?,
            qkv,
            proj,
            ls1,
            norm2: layer_norm(h, eps, vb.pp("norm2"))?,
            fc1: candle_nn::linear(h, cfg.mlp_hidden, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(cfg.mlp_hidden, h, vb.pp("mlp.fc2"))?,
            ls2,
            heads: cfg.num_heads,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, h) = x.dims3()?;
        let d = h / self.heads;
        let (q, k, v) = match &self.qkv {
            Qkv::Fused(l) => {
                let qkv = l.forward(x)?;
                (
                    qkv.narrow(D::Minus1, 0, h)?,
                    qkv.narrow(D::Minus1, h, h)?,
                    qkv.narrow(D::Minus1, 2 * h, h)?,
                )
            }
            Qkv::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
        };
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (d as f64).powf(-0.5))?;
        let ctx = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, n, h))?;
        self.proj.forward(&ctx)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = |y: Tensor, ls: &Option<Tensor>| match ls {
            Some(g) => y.broadcast_mul(g),
            None => Ok(y),
        };
        let a = scale(self.attention(&self.norm1.forward(x)?)?, &self.ls1)?;
        let x = (x + a)?;
        let m = self.fc2.forward(&super::gelu::gelu_erf(
            &self.fc1.forward(&self.norm2.forward(&x)?)?,
        )?)?;
        let m = scale(m, &self.ls2)?;
        x + m
    }
}

/// The tower; [`Self::forward`] returns the final-normed CLS token.
pub struct PreNormVit {
    patch: candle_nn::Conv2d,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl PreNormVit {
    pub fn new(cfg: &PreNormVitConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_heads == 0 || !h.is_multiple_of(cfg.num_heads) || cfg.patch_size == 0 {
            candle_core::bail!(
                "bad ViT shape: width {h}, {} heads, patch {}",
                cfg.num_heads,
                cfg.patch_size
            );
        }
        let grid = cfg.image_size / cfg.patch_size;
        let positions = grid * grid + 1;
        let (patch_vb, cls_name, pos_name, blocks_vb, norm_vb) = match cfg.names {
            VitNames::Timm => (
                vb.pp("patch_embed.proj"),
                "cls_token",
                "pos_embed",
                vb.pp("blocks"),
                vb.pp("norm"),
            ),
            VitNames::HfDinov2 => (
                vb.pp("embeddings.patch_embeddings.projection"),
                "embeddings.cls_token",
                "embeddings.position_embeddings",
                vb.pp("encoder.layer"),
                vb.pp("layernorm"),
            ),
        };
        let conv = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, blocks_vb.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch: candle_nn::conv2d(cfg.num_channels, h, cfg.patch_size, conv, patch_vb)?,
            cls: vb.get((1, 1, h), cls_name)?,
            pos: vb.get((1, positions, h), pos_name)?,
            blocks,
            norm: layer_norm(h, cfg.layer_norm_eps, norm_vb)?,
        })
    }

    /// `(batch, channels, size, size)` -> `(batch, hidden)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let h = self.cls.dim(2)?;
        let cls = self.cls.broadcast_as((b, 1, h))?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.pos)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.norm.forward(&x)?.i((.., 0, ..))
    }
}
