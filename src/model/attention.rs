//! Multi-head scaled dot-product attention (Vaswani et al. 2017) over projected queries, keys
//! and values: the core shared by the project's ViT and BERT towers, with candle's fused
//! softmax over the last dimension.

use candle_core::{Result, Tensor};

/// `q`, `k`, `v`: `(batch, tokens, hidden)`, already projected; `mask`: additive, broadcast to
/// `(batch, heads, tokens, tokens)` (BERT's `(batch, 1, 1, tokens)`), or none. Returns the
/// heads' contexts concatenated, `(batch, tokens, hidden)`, before the output projection.
pub(crate) fn multi_head(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, n, h) = q.dims3()?;
    let d = h / heads;
    let split = |t: &Tensor| -> Result<Tensor> {
        t.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous()
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let mut scores = (q.matmul(&k.t()?.contiguous()?)? * (d as f64).powf(-0.5))?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let ctx = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
    ctx.transpose(1, 2)?.contiguous()?.reshape((b, n, h))
}
