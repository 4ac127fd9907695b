//! A pre-norm Vision Transformer (Dosovitskiy et al. 2021) reading timm's tensor names
//! (open_clip's timm trunks, e.g. BiomedCLIP's ViT-B/16), Hugging Face DINOv2's (`Dinov2Model`,
//! e.g. RAD-DINO; Oquab et al. 2023) or Hugging Face ViT's (`ViTModel`: the project's own
//! image tower).
//!
//! candle-transformers' `dinov2` follows Meta's original names with a fixed 518 px input and an
//! ImageNet head; neither it nor its ViT reads the first two layouts, and its ViT evaluates the
//! GELU with a scalar `erf` per element and the attention's softmax in several passes, which
//! was 10% and more of an image batch. All three layouts share one computation: patch
//! embedding with a CLS token and learnt positions, blocks of `x + ls1 * attn(norm1(x))`,
//! `x + ls2 * mlp(norm2(x))` (no layer scale in ViT's), then a final norm; the image
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
    /// HF `ViTModel` (no pooler): `embeddings.{cls_token,position_embeddings,
    /// patch_embeddings.projection}`, `encoder.layer.N.{layernorm_before,
    /// attention.attention.{query,key,value},attention.output.dense,layernorm_after,
    /// intermediate.dense,output.dense}`, `layernorm`.
    HfVit,
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
    /// The MLP's activation; [`candle_nn::Activation::Gelu`] (exact) in all three layouts'
    /// usual configs, and then vectorised ([`super::gelu`]).
    pub hidden_act: candle_nn::Activation,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    pub names: VitNames,
}

impl PreNormVitConfig {
    /// The project's image tower: a HF `ViTModel` config (candle-transformers' `vit::Config`).
    pub fn hf_vit(c: &candle_transformers::models::vit::Config) -> Self {
        Self {
            hidden_size: c.hidden_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            mlp_hidden: c.intermediate_size,
            patch_size: c.patch_size,
            image_size: c.image_size,
            num_channels: c.num_channels,
            layer_norm_eps: c.layer_norm_eps,
            hidden_act: c.hidden_act,
            qkv_bias: c.qkv_bias,
            names: VitNames::HfVit,
        }
    }
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
    act: candle_nn::Activation,
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
        let separate = |vb: &VarBuilder| -> Result<Qkv> {
            let a = vb.pp("attention.attention");
            Ok(Qkv::Separate {
                q: candle_nn::linear_b(h, h, cfg.qkv_bias, a.pp("query"))?,
                k: candle_nn::linear_b(h, h, cfg.qkv_bias, a.pp("key"))?,
                v: candle_nn::linear_b(h, h, cfg.qkv_bias, a.pp("value"))?,
            })
        };
        let (qkv, proj, ls1, ls2) = match cfg.names {
            VitNames::Timm => (
                Qkv::Fused(candle_nn::linear_b(
                    h,
                    3 * h,
                    cfg.qkv_bias,
                    vb.pp("attn.qkv"),
                )?),
                candle_nn::linear(h, h, vb.pp("attn.proj"))?,
                optional(&vb, h, "ls1.gamma")?,
                optional(&vb, h, "ls2.gamma")?,
            ),
            VitNames::HfDinov2 => (
                separate(&vb)?,
                candle_nn::linear(h, h, vb.pp("attention.output.dense"))?,
                Some(vb.get(h, "layer_scale1.lambda1")?),
                Some(vb.get(h, "layer_scale2.lambda1")?),
            ),
            VitNames::HfVit => (
                separate(&vb)?,
                candle_nn::linear(h, h, vb.pp("attention.output.dense"))?,
                None,
                None,
            ),
        };
        let (norm1, norm2, fc1, fc2) = match cfg.names {
            VitNames::Timm | VitNames::HfDinov2 => ("norm1", "norm2", "mlp.fc1", "mlp.fc2"),
            VitNames::HfVit => (
                "layernorm_before",
                "layernorm_after",
                "intermediate.dense",
                "output.dense",
            ),
        };
        Ok(Self {
            norm1: layer_norm(h, eps, vb.pp(norm1))?,
            qkv,
            proj,
            ls1,
            norm2: layer_norm(h, eps, vb.pp(norm2))?,
            fc1: candle_nn::linear(h, cfg.mlp_hidden, vb.pp(fc1))?,
            fc2: candle_nn::linear(cfg.mlp_hidden, h, vb.pp(fc2))?,
            ls2,
            heads: cfg.num_heads,
            act: cfg.hidden_act,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.dim(2)?;
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
        let ctx = super::attention::multi_head(&q, &k, &v, self.heads, None)?;
        self.proj.forward(&ctx)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = |y: Tensor, ls: &Option<Tensor>| match ls {
            Some(g) => y.broadcast_mul(g),
            None => Ok(y),
        };
        let a = scale(self.attention(&self.norm1.forward(x)?)?, &self.ls1)?;
        let x = (x + a)?;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let hidden = match self.act {
            candle_nn::Activation::Gelu => super::gelu::gelu_erf(&hidden)?,
            other => other.forward(&hidden)?,
        };
        let m = self.fc2.forward(&hidden)?;
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
            VitNames::HfDinov2 | VitNames::HfVit => (
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
        let cls = self.last_layer(pixels)?.i((.., 0..1, ..))?.contiguous()?;
        self.norm.forward(&cls)?.squeeze(1)
    }

    /// The final-normed patch tokens `(batch, patches, hidden)` of the last layer (CLS left
    /// out), row-major over the patch grid.
    pub fn patch_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let x = self.last_layer(pixels)?;
        let n = x.dim(1)?;
        self.norm.forward(&x.narrow(1, 1, n - 1)?.contiguous()?)
    }

    /// Every token's state after the last block, before the final norm.
    fn last_layer(&self, pixels: &Tensor) -> Result<Tensor> {
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
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{max_abs_diff, small_model};
    use candle_core::Device;
    use candle_transformers::models::vit;

    /// The project's ViT through candle-transformers' own `vit` modules (what the tower was
    /// before it moved here) and through [`PreNormVit`] with the same weights.
    #[test]
    fn hf_vit_names_compute_what_candle_transformers_vit_computes() {
        let (_dir, config, vb) = small_model(11, "small left pleural effusion");
        let crate::model::ImageTowerConfig::Vit { config: c, .. } = &config.image else {
            panic!("the small preset has a ViT image tower");
        };
        let device = Device::Cpu;
        let vb = vb.pp("vision_model");
        let ours = PreNormVit::new(&PreNormVitConfig::hf_vit(c), vb.clone()).unwrap();
        let embeddings = vit::Embeddings::new(c, false, vb.pp("embeddings")).unwrap();
        let encoder = vit::Encoder::new(c, vb.pp("encoder")).unwrap();
        let norm = layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("layernorm")).unwrap();

        let pixels = Tensor::randn(
            0f32,
            1.0,
            (2, c.num_channels, c.image_size, c.image_size),
            &device,
        )
        .unwrap();
        let states = encoder
            .forward(&embeddings.forward(&pixels, None, false).unwrap())
            .unwrap();
        let reference_cls = states.i((.., 0, ..)).unwrap().apply(&norm).unwrap();
        let n = states.dim(1).unwrap();
        let reference_patches = states
            .narrow(1, 1, n - 1)
            .unwrap()
            .contiguous()
            .unwrap()
            .apply(&norm)
            .unwrap();
        let cls = ours.forward(&pixels).unwrap();
        assert!(max_abs_diff(&cls, &reference_cls) < 1e-5);
        let patches = ours.patch_tokens(&pixels).unwrap();
        assert!(max_abs_diff(&patches, &reference_patches) < 1e-5);
    }
}
