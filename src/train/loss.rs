//! The training objective: CLIP's symmetric InfoNCE (Radford et al. 2021) with a learnable
//! temperature, and MedCLIP-style label-aware soft targets (Wang et al. 2022).
//!
//! A batch holds `B` items, each with a text, a label vector over the finding vocabulary (empty
//! when none of its labels maps into the vocabulary: "unknown"), and for `N <= B` of them an
//! image. With `S[a][b]` the cosine similarity of the label vectors of items `a` and `b` (0 when
//! either is unknown) and `alpha` the weight of the item's own pair:
//!
//! - **image -> text** (`N` rows over all `B` texts): the target of image `a` is
//!   `alpha * onehot(a) + (1 - alpha) * S[a][.] / sum S[a][.]`, or `onehot(a)` when the sum is 0.
//!   Text-only items (IU reports) are therefore extra columns: positives for images with similar
//!   labels, negatives for the others.
//! - **text -> image** (`B` rows over the `N` images): the same construction restricted to the
//!   batch's images; a text-only row has no own pair, its target is the label part alone, and a
//!   row whose label similarity to every image is 0 is left out.
//! - **text -> text** (`B` rows over the other `B - 1` texts, weight `text_weight`): targets
//!   `S[a][b] / sum_b S[a][b]`, rows without a positive left out. This ties IU reports to the
//!   templated NIH sentences and COVID notes with the same findings.
//!
//! Each part is a soft cross-entropy `-sum_j t_ij log softmax_j(scale * cos_ij)` averaged over
//! the kept rows; the loss is `(i2t + t2i) / 2 + text_weight * t2t`. With all labels unknown and
//! `text_weight = 0` this is exactly CLIP's loss.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::log_softmax;

/// Label cosine similarity; 0 when either vector is all zero.
pub fn label_similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Soft target rows as described in the module docs. Returns `(i2t, t2i, t2t)`, each row-major
/// with a kept-row flag per row.
pub struct Targets {
    pub i2t: Vec<f32>,
    pub i2t_rows: Vec<bool>,
    pub t2i: Vec<f32>,
    pub t2i_rows: Vec<bool>,
    pub t2t: Vec<f32>,
    pub t2t_rows: Vec<bool>,
}

/// `image_items[r]`: the item (text column) of image row `r`; `labels[b]`: item `b`'s vector.
pub fn soft_targets(image_items: &[usize], labels: &[Vec<f32>], alpha: f32) -> Targets {
    let b = labels.len();
    let n = image_items.len();
    let sim: Vec<Vec<f32>> = labels
        .iter()
        .map(|x| {
            labels
                .iter()
                .map(|y| label_similarity(x, y).max(0.0))
                .collect()
        })
        .collect();
    let mix = |own: Option<usize>, label_part: &[f32], width: usize| -> Option<Vec<f32>> {
        let total: f32 = label_part.iter().sum();
        let mut row = vec![0.0; width];
        match (own, total > 0.0) {
            (Some(o), true) => {
                for (r, &s) in row.iter_mut().zip(label_part) {
                    *r = (1.0 - alpha) * s / total;
                }
                row[o] += alpha;
            }
            (Some(o), false) => row[o] = 1.0,
            (None, true) => {
                for (r, &s) in row.iter_mut().zip(label_part) {
                    *r = s / total;
                }
            }
            (None, false) => return None,
        }
        Some(row)
    };
    let mut out = Targets {
        i2t: Vec::with_capacity(n * b),
        i2t_rows: Vec::with_capacity(n),
        t2i: Vec::with_capacity(b * n),
        t2i_rows: Vec::with_capacity(b),
        t2t: Vec::with_capacity(b * b),
        t2t_rows: Vec::with_capacity(b),
    };
    let push = |data: &mut Vec<f32>, rows: &mut Vec<bool>, row: Option<Vec<f32>>, w| {
        rows.push(row.is_some());
        data.extend(row.unwrap_or_else(|| vec![0.0; w]));
    };
    for &a in image_items {
        let row = mix(Some(a), &sim[a], b);
        push(&mut out.i2t, &mut out.i2t_rows, row, b);
    }
    for (t, sim_t) in sim.iter().enumerate() {
        let own = image_items.iter().position(|&a| a == t);
        let part: Vec<f32> = image_items.iter().map(|&a| sim_t[a]).collect();
        let row = mix(own, &part, n);
        push(&mut out.t2i, &mut out.t2i_rows, row, n);
        let mut part: Vec<f32> = sim_t.clone();
        part[t] = 0.0;
        let row = mix(None, &part, b);
        push(&mut out.t2t, &mut out.t2t_rows, row, b);
    }
    out
}

pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    x.broadcast_div(&(norm + 1e-8)?)
}

/// `-sum t * log_softmax(logits)` over kept rows, divided by their number; `None` when no row is
/// kept.
fn soft_cross_entropy(logits: &Tensor, targets: &[f32], rows: &[bool]) -> Result<Option<Tensor>> {
    let kept = rows.iter().filter(|&&r| r).count();
    if kept == 0 {
        return Ok(None);
    }
    let t = Tensor::from_slice(targets, logits.shape(), logits.device())?;
    let ll = log_softmax(logits, D::Minus1)?;
    Ok(Some(((t * ll)?.sum_all()?.neg()? / kept as f64)?))
}

/// The parts of one batch's loss (for logging).
#[derive(Debug, Clone, Copy, Default)]
pub struct LossParts {
    pub i2t: f32,
    pub t2i: f32,
    pub t2t: f32,
}

/// `images`: `(N, d)`, `texts`: `(B, d)` embeddings (normalised here); `scale`: scalar tensor
/// (the exponentiated logit scale). Returns the total loss and its parts.
pub fn contrastive_loss(
    images: &Tensor,
    texts: &Tensor,
    scale: &Tensor,
    targets: &Targets,
    text_weight: f64,
) -> Result<(Tensor, LossParts)> {
    let img = l2_normalise(images)?;
    let txt = l2_normalise(texts)?;
    let b = txt.dim(0)?;
    let i2t_logits = img.matmul(&txt.t()?)?.broadcast_mul(scale)?;
    let t2i_logits = i2t_logits.t()?.contiguous()?;
    let mut parts = LossParts::default();
    let mut total: Option<Tensor> = None;
    let mut add = |t: Tensor, w: f64| -> Result<()> {
        let t = (t * w)?;
        total = Some(match total.take() {
            Some(acc) => (acc + t)?,
            None => t,
        });
        Ok(())
    };
    if let Some(l) = soft_cross_entropy(&i2t_logits, &targets.i2t, &targets.i2t_rows)? {
        parts.i2t = l.to_scalar::<f32>()?;
        add(l, 0.5)?;
    }
    if let Some(l) = soft_cross_entropy(&t2i_logits, &targets.t2i, &targets.t2i_rows)? {
        parts.t2i = l.to_scalar::<f32>()?;
        add(l, 0.5)?;
    }
    if text_weight > 0.0 && targets.t2t_rows.iter().any(|&r| r) {
        let mask: Vec<f32> = (0..b * b)
            .map(|k| if k / b == k % b { -1e4 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (b, b), txt.device())?;
        let t2t_logits = (txt.matmul(&txt.t()?)?.broadcast_mul(scale)? + mask)?;
        if let Some(l) = soft_cross_entropy(&t2t_logits, &targets.t2t, &targets.t2t_rows)? {
            parts.t2t = l.to_scalar::<f32>()?;
            add(l, text_weight)?;
        }
    }
    let total = match total {
        Some(t) => t,
        None => Tensor::new(0f32, images.device())?,
    };
    Ok((total, parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn eye() -> Tensor {
        Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap()
    }

    #[test]
    fn clip_case_by_hand() {
        // Two pairs with orthogonal embeddings, scale 1, unknown labels: every row is
        // -log(e / (e + 1)) = log(1 + 1/e) = 0.313262.
        let labels = vec![vec![0.0; 3], vec![0.0; 3]];
        let t = soft_targets(&[0, 1], &labels, 0.5);
        let scale = Tensor::new(1f32, &Device::Cpu).unwrap();
        let (loss, parts) = contrastive_loss(&eye(), &eye(), &scale, &t, 0.5).unwrap();
        let want = (1.0f32 + (-1.0f32).exp()).ln();
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        assert!((parts.i2t - want).abs() < 1e-5 && (parts.t2i - want).abs() < 1e-5);
        assert_eq!(parts.t2t, 0.0);
    }

    #[test]
    fn soft_targets_by_hand() {
        // Same labels: image rows target [0.75, 0.25] (alpha 0.5 on the own pair, 0.5 shared).
        // Row loss: 0.75 * log(1 + 1/e) + 0.25 * log(1 + e) = 0.234947 + 0.328315 = 0.563262.
        // Text-text: the only other text is the sole target, logits 0 vs -1e4 -> loss 0.
        let labels = vec![vec![1.0, 0.0, 1.0], vec![1.0, 0.0, 1.0]];
        let t = soft_targets(&[0, 1], &labels, 0.5);
        assert_eq!(&t.i2t, &[0.75, 0.25, 0.25, 0.75]);
        let scale = Tensor::new(1f32, &Device::Cpu).unwrap();
        let (loss, parts) = contrastive_loss(&eye(), &eye(), &scale, &t, 0.5).unwrap();
        let e = 1.0f32.exp();
        let want = 0.75 * (1.0 + 1.0 / e).ln() + 0.25 * (1.0 + e).ln();
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        assert!(parts.t2t.abs() < 1e-5);
    }

    #[test]
    fn text_only_items() {
        // Item 2 is a text-only report sharing item 0's label; item 1 is unknown.
        let labels = vec![vec![1.0, 0.0], vec![0.0, 0.0], vec![1.0, 0.0]];
        let t = soft_targets(&[0, 1], &labels, 0.5);
        // image 0: 0.5 own + 0.5 over {0, 2} by similarity -> [0.75, 0, 0.25]
        assert_eq!(&t.i2t[..3], &[0.75, 0.0, 0.25]);
        // image 1 (unknown): own only
        assert_eq!(&t.i2t[3..], &[0.0, 1.0, 0.0]);
        // text 2 has no image: its target is image 0
        assert_eq!(&t.t2i[4..], &[1.0, 0.0]);
        assert_eq!(t.t2i_rows, vec![true, true, true]);
        // text-text: 0 <-> 2, unknown text 1 left out
        assert_eq!(t.t2t_rows, vec![true, false, true]);
    }
}
