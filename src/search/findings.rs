//! Example-image queries matched by findings: the query is compared with the indexed images
//! through the model's zero-shot margins, not through the whole embedding.
//!
//! An image embedding holds more than findings: view, exposure, body habitus, the scanner,
//! the patient. Nearest neighbours over the whole vector find images that *look* alike, and
//! on the dev set (`../shared/bench`, corpus `nih`) that was worse than a random ranking for
//! images with the same findings. The language-aligned part of the space is what the text
//! tower's prompts can see: for each finding `f` of the vocabulary, the direction
//! `d_f = t(pos_f) - t(neg_f)` between the embeddings of its positive and negative prompts
//! ("pleural effusion" / "no pleural effusion", as `cxr classify` uses them). An image's
//! margin `m_f(x) = d_f . x` is its zero-shot evidence for `f`.
//!
//! Two images are compared by the inner product of their margins, `sum_f m_f(q) m_f(x)`,
//! which is `q' . x` for `q' = sum_f m_f(q) d_f`: one vector per query, so the index's own
//! search (graph, filters, exact scans) ranks by it unchanged. Margins are not normalised:
//! an image with strong evidence for the query's findings ranks above one whose margins only
//! point the same way weakly (normalising lost a third of the NDCG in the measurement of
//! `tools/make_image_queries.py`'s 592 queries; see the README).

use crate::classify;
use crate::model::{DualEncoder, ModelError};
use crate::train::vocab;

/// The finding directions of a model, one per vocabulary finding.
#[derive(Debug, Clone)]
pub struct FindingAxes {
    axes: Vec<Vec<f32>>,
}

impl FindingAxes {
    /// Embeds the positive and negative prompts of every vocabulary finding (as `cxr classify`
    /// words and ensembles them); fails for models without a text tower.
    pub fn new(model: &DualEncoder) -> Result<Self, ModelError> {
        let prompts: Vec<classify::FindingPrompt> = vocab::FINDINGS
            .iter()
            .filter_map(|name| classify::resolve(name))
            .collect();
        let sides = classify::embed_prompts(model, &prompts)?;
        let axes = sides
            .positive
            .iter()
            .zip(&sides.negative)
            .map(|(p, n)| p.iter().zip(n).map(|(a, b)| a - b).collect())
            .collect();
        Ok(Self { axes })
    }

    /// The vector that ranks images by their margins' inner product with those of `image`
    /// (a unit embedding), scaled to unit length; `None` when the image has no margin on any
    /// axis (nothing to match by).
    pub fn query(&self, image: &[f32]) -> Option<Vec<f32>> {
        let mut q = vec![0f32; image.len()];
        for axis in &self.axes {
            let margin = classify::dot(axis, image);
            for (qi, ai) in q.iter_mut().zip(axis) {
                *qi += margin * ai;
            }
        }
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        (norm.is_finite() && norm > f32::EPSILON).then(|| q.iter().map(|v| v / norm).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::dot;

    fn axes(axes: Vec<Vec<f32>>) -> FindingAxes {
        FindingAxes { axes }
    }

    #[test]
    fn ranks_by_the_inner_product_of_margins() {
        let f = axes(vec![vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 0.5, 0.5, 0.0]]);
        let query = [0.6, 0.8, 0.0, 0.0];
        let q = f.query(&query).unwrap();
        let margins = |x: &[f32]| -> Vec<f32> { f.axes.iter().map(|a| dot(a, x)).collect() };
        let docs: [[f32; 4]; 4] = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.0, 0.6, 0.0, 0.8],
        ];
        // q' . x is proportional to sum_f m_f(q) m_f(x) for every document.
        let want: Vec<f32> = docs
            .iter()
            .map(|d| dot(&margins(&query), &margins(d)))
            .collect();
        let got: Vec<f32> = docs.iter().map(|d| dot(&q, d)).collect();
        let ratio = want[0] / got[0];
        for (w, g) in want.iter().zip(&got) {
            assert!((w - g * ratio).abs() < 1e-6, "{want:?} vs {got:?}");
        }
        // The dimension no finding reads (the 4th) plays no part, however alike it is.
        assert_eq!(got[2], 0.0);
        assert!((dot(&q, &q) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn an_image_without_margins_has_no_query() {
        let f = axes(vec![vec![1.0, 0.0], vec![0.0, 0.0]]);
        assert!(f.query(&[0.0, 1.0]).is_none());
        assert!(f.query(&[1.0, 0.0]).is_some());
    }
}
