//! Fusing ranked lists from different signals (image vectors, report BM25) into one ranking.
//!
//! Two fusion functions:
//!
//! - **Reciprocal rank fusion** (Cormack, Clarke and Büttcher, SIGIR 2009): each list gives a
//!   document `1 / (60 + rank)`, summed over lists. It needs no calibration, but it weighs every
//!   list alike whatever its scores say: a list whose scores are nearly flat (a query the
//!   encoder does not understand: all cosines within a few hundredths) moves documents exactly as
//!   much as a list with a sharp BM25 peak.
//! - **Convex combination of normalised scores** ("TM2C2" in Bruch, Gai and Ingber, "An Analysis
//!   of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023): each list's scores are mapped to
//!   `[0, 1]` by `(s - theoretical_min) / (max_in_list - theoretical_min)`, with the theoretical
//!   minimum -1 for a cosine and 0 for BM25, and combined as
//!   `w * vector + (1 - w) * text`; a document missing from a list counts that list's
//!   theoretical minimum. Anchoring at the theoretical minimum (not the list's own minimum)
//!   keeps a flat list flat, so a weak signal cannot reorder a strong one. The paper finds it
//!   beats RRF in and out of domain and needs few queries to set `w`.
//!
//! With a single list its own score is kept: a cosine or a BM25 score says more than a fused
//! score, and the order is the same.

use std::collections::HashMap;

/// RRF's constant; 60 is the value of the original paper, robust across collections.
pub const RRF_K: f32 = 60.0;

/// Which signal a ranked list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Cosine similarity between the query and image vectors.
    Vector,
    /// BM25 over report text.
    Text,
}

impl Signal {
    /// The lowest score the signal can give, the anchor of score normalisation.
    fn theoretical_min(self) -> f32 {
        match self {
            Signal::Vector => -1.0,
            Signal::Text => 0.0,
        }
    }
}

/// How lists are fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with `k = 60`.
    Rrf,
    /// Convex combination of normalised scores, `vector_weight * vector + (1 - vector_weight) *
    /// text`.
    Convex { vector_weight: f32 },
}

impl Default for Fusion {
    /// Convex, equal weights: see the module notes and the README's fusion measurements.
    fn default() -> Self {
        Fusion::Convex { vector_weight: 0.5 }
    }
}

/// A document's fused score, with the rank (1-based) and raw score it had in each list.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub ord: u32,
    pub score: f32,
    pub vector: Option<(usize, f32)>,
    pub text: Option<(usize, f32)>,
}

impl Fused {
    fn best_rank(&self) -> usize {
        let v = self.vector.map_or(usize::MAX, |(r, _)| r);
        let t = self.text.map_or(usize::MAX, |(r, _)| r);
        v.min(t)
    }
}

/// Fuses ranked lists (each best first) into one ranking, best first. Ties are broken by the
/// best single-list rank, then by ordinal, so results are deterministic.
pub fn fuse(lists: &[(Signal, &[cxr_index::Hit])], fusion: Fusion) -> Vec<Fused> {
    let lists: Vec<_> = lists.iter().filter(|(_, h)| !h.is_empty()).collect();
    let single = lists.len() == 1;
    let mut fused: HashMap<u32, Fused> = HashMap::new();
    for (signal, hits) in &lists {
        let weight = match (fusion, signal) {
            (Fusion::Convex { vector_weight }, Signal::Vector) => vector_weight,
            (Fusion::Convex { vector_weight }, Signal::Text) => 1.0 - vector_weight,
            (Fusion::Rrf, _) => 1.0,
        };
        let lo = signal.theoretical_min();
        let hi = hits.iter().map(|h| h.score).fold(lo, f32::max);
        let span = hi - lo;
        for (i, h) in hits.iter().enumerate() {
            let rank = i + 1;
            let entry = fused.entry(h.ord).or_insert_with(|| Fused {
                ord: h.ord,
                score: 0.0,
                vector: None,
                text: None,
            });
            entry.score += if single {
                h.score
            } else {
                match fusion {
                    Fusion::Rrf => 1.0 / (RRF_K + rank as f32),
                    Fusion::Convex { .. } if span > 0.0 => weight * (h.score - lo) / span,
                    Fusion::Convex { .. } => 0.0,
                }
            };
            match signal {
                Signal::Vector => entry.vector = Some((rank, h.score)),
                Signal::Text => entry.text = Some((rank, h.score)),
            }
        }
    }
    let mut out: Vec<Fused> = fused.into_values().collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.best_rank().cmp(&b.best_rank()))
            .then_with(|| a.ord.cmp(&b.ord))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(scores: &[(u32, f32)]) -> Vec<cxr_index::Hit> {
        scores
            .iter()
            .map(|&(ord, score)| cxr_index::Hit { ord, score })
            .collect()
    }

    fn order(f: &[Fused]) -> Vec<u32> {
        f.iter().map(|h| h.ord).collect()
    }

    #[test]
    fn a_flat_vector_list_cannot_reorder_a_sharp_text_list() {
        // The vector list ranks 3 first but its cosines barely differ; BM25 clearly prefers 1.
        let vector = hits(&[(3, 0.31), (2, 0.305), (4, 0.30), (5, 0.299), (1, 0.29)]);
        let text = hits(&[(1, 9.0), (2, 2.0)]);
        let lists = [(Signal::Vector, &vector[..]), (Signal::Text, &text[..])];
        let convex = fuse(&lists, Fusion::default());
        assert_eq!(order(&convex), vec![1, 2, 3, 4, 5]);
        // RRF weighs the flat list like the sharp one: document 2 (ranked 2nd in both) wins.
        let rrf = fuse(&lists, Fusion::Rrf);
        assert_eq!(order(&rrf)[0], 2);
    }

    #[test]
    fn weights_choose_the_signal() {
        let vector = hits(&[(1, 0.9), (2, -0.5)]);
        let text = hits(&[(2, 5.0), (1, 1.0)]);
        let lists = [(Signal::Vector, &vector[..]), (Signal::Text, &text[..])];
        let v = fuse(&lists, Fusion::Convex { vector_weight: 1.0 });
        assert_eq!(order(&v), vec![1, 2]);
        let t = fuse(&lists, Fusion::Convex { vector_weight: 0.0 });
        assert_eq!(order(&t), vec![2, 1]);
        // Normalised scores: vector (s + 1) / 1.9, text s / 5.
        let even = fuse(&lists, Fusion::Convex { vector_weight: 0.5 });
        let one = even.iter().find(|f| f.ord == 1).expect("doc 1");
        assert!(
            (one.score - 0.5 * (1.0 + 0.2)).abs() < 1e-6,
            "{}",
            one.score
        );
        assert_eq!(one.vector, Some((1, 0.9)));
        assert_eq!(one.text, Some((2, 1.0)));
    }

    #[test]
    fn a_single_list_keeps_its_scores_and_order() {
        let text = hits(&[(4, 7.5), (9, 7.5), (2, 1.0)]);
        let empty = hits(&[]);
        let lists = [(Signal::Vector, &empty[..]), (Signal::Text, &text[..])];
        for fusion in [Fusion::Rrf, Fusion::default()] {
            let f = fuse(&lists, fusion);
            assert_eq!(order(&f), vec![4, 9, 2]);
            assert_eq!(f[0].score, 7.5);
        }
    }

    #[test]
    fn rrf_sums_reciprocal_ranks() {
        let vector = hits(&[(1, 0.5), (2, 0.4)]);
        let text = hits(&[(2, 3.0)]);
        let f = fuse(
            &[(Signal::Vector, &vector[..]), (Signal::Text, &text[..])],
            Fusion::Rrf,
        );
        assert_eq!(order(&f), vec![2, 1]);
        assert!((f[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
    }
}
