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

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, Layout, Module, ModuleT, Result, Shape, Tensor,
};
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

impl ConvBn {
    /// Convolution and batch norm with its running statistics, for inference on the CPU: the
    /// norm folded into the kernel and a bias, and the 3x3 convolution as one matrix product
    /// per image over the nine shifted copies of the input ([`Im2Col3x3`]). candle's CPU
    /// convolution builds its im2col tiles one element at a time and allocates a zeroed tile per
    /// 512 outputs: it was over half of `cxr index`'s time with the default model (`perf`).
    /// Here the copies are whole rows and the product is one call per image; the result equals
    /// the convolution then the norm to float rounding (a test checks it against candle's).
    /// Training keeps candle's convolution and batch statistics.
    ///
    /// The ReLU, and with `pool` the 2x2 max pooling that ends a stage, are applied together
    /// with the bias in one pass over the product ([`BiasReluPool`]), instead of three passes
    /// that each allocate a full-size tensor.
    fn inference(&self, x: &Tensor, pool: bool) -> Result<Tensor> {
        let (b, c_in, h, w) = x.dims4()?;
        let kernel = self.conv.weight();
        let (c_out, k_in, kh, kw) = kernel.dims4()?;
        if (k_in, kh, kw) != (c_in, 3, 3) {
            candle_core::bail!("expected a 3x3 kernel over {c_in} channels, got {k_in}x{kh}x{kw}");
        }
        // Batch norm at inference: gamma * (y - mean) / sqrt(var + eps) + beta, per channel.
        let (mean, var) = (self.bn.running_mean(), self.bn.running_var());
        let mut scale = (var + self.bn.eps())?.sqrt()?.recip()?;
        let mut bias = mean.neg()?.broadcast_mul(&scale)?;
        if let Some((gamma, beta)) = self.bn.weight_and_bias() {
            scale = scale.broadcast_mul(gamma)?;
            bias = bias.broadcast_mul(gamma)?.broadcast_add(beta)?;
        }
        let kernel = kernel
            .reshape((c_out, c_in * 9))?
            .broadcast_mul(&scale.reshape((c_out, 1))?)?;
        let columns = x.contiguous()?.apply_op1_no_bwd(&Im2Col3x3)?;
        kernel
            .broadcast_left(b)?
            .matmul(&columns)?
            .reshape((b, c_out, h, w))?
            .apply_op2_no_bwd(&bias.contiguous()?, &BiasReluPool { pool })
    }
}

/// `relu(y + bias[channel])` over `(batch, channels, h, w)`, and with `pool` its 2x2 max
/// pooling with stride 2 (an odd last row or column dropped, as `Tensor::max_pool2d(2)` does):
/// the pooled value is `relu(max of the four + bias)`, since adding a constant and the ReLU
/// are both monotonic. One pass over `y`.
struct BiasReluPool {
    pool: bool,
}

impl CustomOp2 for BiasReluPool {
    fn name(&self) -> &'static str {
        "bias-relu-maxpool"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (
            CpuStorage::F32(y),
            Some((y_start, y_end)),
            CpuStorage::F32(bias),
            Some((b_start, b_end)),
        ) = (
            y,
            y_layout.contiguous_offsets(),
            bias,
            bias_layout.contiguous_offsets(),
        )
        else {
            candle_core::bail!("bias-relu-maxpool needs contiguous f32 tensors");
        };
        let (batch, c, h, w) = y_layout.shape().dims4()?;
        let bias = &bias[b_start..b_end];
        if bias.len() != c {
            candle_core::bail!("bias-relu-maxpool: {} biases for {c} channels", bias.len());
        }
        let (oh, ow) = if self.pool { (h / 2, w / 2) } else { (h, w) };
        let mut out = Vec::with_capacity(batch * c * oh * ow);
        let plane = h * w;
        if plane > 0 {
            for (p, src) in y[y_start..y_end].chunks_exact(plane).enumerate() {
                let add = bias[p % c];
                if !self.pool {
                    out.extend(src.iter().map(|&v| (v + add).max(0.0)));
                    continue;
                }
                for i in 0..oh {
                    let (top, bottom) = (&src[2 * i * w..][..w], &src[(2 * i + 1) * w..][..w]);
                    out.extend((0..ow).map(|j| {
                        let m = top[2 * j]
                            .max(top[2 * j + 1])
                            .max(bottom[2 * j])
                            .max(bottom[2 * j + 1]);
                        (m + add).max(0.0)
                    }));
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, c, oh, ow))))
    }
}

/// `(batch, channels, h, w)` -> `(batch, channels * 9, h * w)`: for each channel the nine
/// copies of its plane shifted by one pixel in each direction (zeros beyond the border, i.e.
/// padding 1), in the order of a 3x3 kernel's rows then columns. Each copy is written a row at
/// a time straight into place, so the columns cost one allocation and one pass.
struct Im2Col3x3;

impl CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "im2col-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("im2col-3x3 needs a contiguous f32 tensor");
        };
        let (b, c, h, w) = layout.shape().dims4()?;
        let plane = h * w;
        let mut out = vec![0f32; b * c * 9 * plane];
        if plane == 0 {
            return Ok((CpuStorage::F32(out), Shape::from((b, c * 9, plane))));
        }
        for (cols, src) in out
            .chunks_exact_mut(9 * plane)
            .zip(data[start..end].chunks_exact(plane))
        {
            for (tap, dst) in cols.chunks_exact_mut(plane).enumerate() {
                let (dy, dx) = (tap / 3, tap % 3);
                for y in 0..h {
                    // Source row y + dy - 1; outside the plane the row stays zero.
                    let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    let (row, dst) = (&src[sy * w..][..w], &mut dst[y * w..][..w]);
                    match dx {
                        0 => dst[1..].copy_from_slice(&row[..w - 1]),
                        1 => dst.copy_from_slice(row),
                        _ => dst[..w - 1].copy_from_slice(&row[1..]),
                    }
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c * 9, plane))))
    }
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
        let fused = !train && x.device().is_cpu();
        for stage in &self.stages {
            // Convolutions keep the spatial size, so whether the stage pools is known now.
            let (_, _, h, w) = x.dims4()?;
            let pool = h >= 2 && w >= 2;
            for (i, layer) in stage.iter().enumerate() {
                x = if fused {
                    layer.inference(&x, pool && i + 1 == stage.len())?
                } else {
                    layer
                        .bn
                        .forward_t(&layer.conv.forward(&x)?, train)?
                        .relu()?
                };
            }
            if pool && !fused {
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
    use crate::model::testing::max_abs_diff;
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

    /// The inference path (norm folded into the kernel, im2col product, bias, ReLU and pooling
    /// in one pass) gives what candle's convolution, batch norm, ReLU and max pooling give, with
    /// running statistics away from 0 and 1 and inputs whose sides are odd, even and 1.
    #[test]
    fn folded_inference_matches_convolution_then_norm() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = CnnConfig {
            in_channels: 3,
            stage_channels: vec![5],
            depth: 1,
        };
        let t = CnnTower::new(&cfg, vb).unwrap();
        let layer = &t.stages[0][0];
        // Move the running statistics and the affine weights off their initial values.
        let x = Tensor::randn(0.5f32, 2.0, (6, 3, 9, 7), &Device::Cpu).unwrap();
        for _ in 0..5 {
            layer
                .bn
                .forward_t(&layer.conv.forward(&x).unwrap(), true)
                .unwrap();
        }
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("bn.weight") || name.ends_with("bn.bias") {
                let n = var.as_tensor().elem_count();
                let v = Tensor::randn(0.3f32, 1.0, n, &Device::Cpu).unwrap();
                var.set(&v).unwrap();
            }
        }
        for dims in [(6, 3, 9, 7), (2, 3, 4, 4), (1, 3, 1, 1)] {
            let x = Tensor::randn(0f32, 1.0, dims, &Device::Cpu).unwrap();
            let activated = layer
                .bn
                .forward_t(&layer.conv.forward(&x).unwrap(), false)
                .unwrap()
                .relu()
                .unwrap();
            let diff = max_abs_diff(&layer.inference(&x, false).unwrap(), &activated);
            assert!(diff < 1e-4, "{dims:?}: max abs diff {diff}");
            if dims.2 >= 2 {
                let pooled = activated.max_pool2d(2).unwrap();
                let diff = max_abs_diff(&layer.inference(&x, true).unwrap(), &pooled);
                assert!(diff < 1e-4, "{dims:?}, pooled: max abs diff {diff}");
            }
        }
    }

    /// The whole tower's inference path against candle's layers one after another: stages of
    /// two convolutions, odd sides, and a last stage that shrinks to one cell.
    #[test]
    fn fused_tower_matches_the_layers_one_by_one() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = CnnConfig {
            in_channels: 1,
            stage_channels: vec![4, 8, 6],
            depth: 2,
        };
        let t = CnnTower::new(&cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 11, 13), &Device::Cpu).unwrap();
        // A few training passes move the running statistics.
        for _ in 0..3 {
            t.feature_map_t(&x, true).unwrap();
        }
        let mut reference = x.clone();
        for stage in &t.stages {
            for layer in stage {
                reference = layer
                    .bn
                    .forward_t(&layer.conv.forward(&reference).unwrap(), false)
                    .unwrap()
                    .relu()
                    .unwrap();
            }
            let (_, _, h, w) = reference.dims4().unwrap();
            if h >= 2 && w >= 2 {
                reference = reference.max_pool2d(2).unwrap();
            }
        }
        let fused = t.feature_map_t(&x, false).unwrap();
        assert_eq!(fused.dims(), [3, 6, 1, 1]);
        let diff = max_abs_diff(&fused, &reference);
        assert!(diff < 1e-4, "max abs diff {diff}");
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
