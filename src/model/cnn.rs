//! A small convolutional image tower, for training from scratch on little data.
//!
//! A ViT learns its spatial priors from data; with a few hundred radiographs it learns almost
//! none (the `tiny64` ViT stayed at chance, see the model card). Convolutions bring locality
//! and translation equivariance for free, which is why the supervised baseline of
//! `tools/nih_ceiling.py` and most small-data CXR work use them.
//!
//! Layout (VGG-style stages, He et al. 2016's batch-norm placement without the residuals, which
//! bring little at this depth): per stage, `depth` times conv 3x3 (no bias) -> batch norm ->
//! ReLU, then 2x2 max pooling; global average pooling of the last stage gives the embedding.
//! Weight names: `stages.{s}.{i}.conv.weight`, `stages.{s}.{i}.bn.{weight,bias,running_mean,
//! running_var}`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig};
use serde::{Deserialize, Serialize};

/// Shape of the tower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Input channels (1 for grey).
    pub in_channels: usize,
    /// Output channels of each stage; the embedding has the last one's size.
    pub stage_channels: Vec<usize>,
    /// Convolutions per stage.
    pub depth: usize,
}

impl CnnConfig {
    pub fn hidden_size(&self) -> usize {
        self.stage_channels
            .last()
            .copied()
            .unwrap_or(self.in_channels)
    }
}

struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

/// The tower. `forward_t(x, true)` normalises with batch statistics and updates the running
/// ones (training); `forward` uses the running statistics (inference).
pub struct CnnTower {
    stages: Vec<Vec<ConvBn>>,
}

impl CnnTower {
    pub fn new(cfg: &CnnConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.stage_channels.is_empty() || cfg.depth == 0 {
            candle_core::bail!("a CNN tower needs at least one stage of depth >= 1");
        }
        let conv_cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let bn_cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        let mut stages = Vec::with_capacity(cfg.stage_channels.len());
        let mut channels = cfg.in_channels;
        for (s, &out) in cfg.stage_channels.iter().enumerate() {
            let vb = vb.pp(format!("stages.{s}"));
            let mut layers = Vec::with_capacity(cfg.depth);
            for i in 0..cfg.depth {
                let vb = vb.pp(i.to_string());
                layers.push(ConvBn {
                    conv: conv2d_no_bias(channels, out, 3, conv_cfg, vb.pp("conv"))?,
                    bn: batch_norm(out, bn_cfg, vb.pp("bn"))?,
                });
                channels = out;
            }
            stages.push(layers);
        }
        Ok(Self { stages })
    }

    /// `(batch, channels, h, w)` pixels -> `(batch, hidden)` pooled features.
    pub fn forward_t(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        self.feature_map_t(pixels, train)?.mean((2, 3))
    }

    /// The last stage's spatial feature map `(batch, hidden, h', w')`, the one [`Self::forward_t`]
    /// averages: the reranker cross-attends to its cells as image tokens (a 64 px input gives a
    /// 4x4 map), where the pooled vector has lost where a finding is.
    pub fn feature_map_t(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = pixels.clone();
        for stage in &self.stages {
            for layer in stage {
                x = layer
                    .bn
                    .forward_t(&layer.conv.forward(&x)?, train)?
                    .relu()?;
            }
            let (_, _, h, w) = x.dims4()?;
            if h >= 2 && w >= 2 {
                x = x.max_pool2d(2)?;
            }
        }
        Ok(x)
    }

    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.forward_t(pixels, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Optimizer, VarMap};

    fn tower(varmap: &VarMap) -> CnnTower {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
        let cfg = CnnConfig {
            in_channels: 1,
            stage_channels: vec![4, 8],
            depth: 1,
        };
        CnnTower::new(&cfg, vb).unwrap()
    }

    #[test]
    fn shapes_and_gradients_reach_every_weight() {
        let varmap = VarMap::new();
        let t = tower(&varmap);
        let x = Tensor::randn(0f32, 1.0, (3, 1, 16, 16), &Device::Cpu).unwrap();
        let y = t.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), [3, 8]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if name.contains("running") {
                continue;
            }
            assert!(
                grads.get(var.as_tensor()).is_some(),
                "no gradient for {name}"
            );
        }
    }

    #[test]
    fn training_updates_running_statistics_and_inference_uses_them() {
        let varmap = VarMap::new();
        let t = tower(&varmap);
        let x = (Tensor::randn(0f32, 1.0, (8, 1, 8, 8), &Device::Cpu).unwrap() * 3.0).unwrap();
        let before = t.forward(&x).unwrap();
        for _ in 0..20 {
            t.forward_t(&x, true).unwrap();
        }
        let after = t.forward(&x).unwrap();
        let diff = (before - &after).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() > 1e-3);
        // One optimiser step changes the output: the tower is trainable end to end.
        let mut opt = candle_nn::SGD::new(varmap.all_vars(), 0.1).unwrap();
        let loss = t.forward_t(&x, true).unwrap().sum_all().unwrap();
        opt.backward_step(&loss).unwrap();
        let moved = (t.forward(&x).unwrap() - &after)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(moved.to_scalar::<f32>().unwrap() > 1e-4);
    }
}
