//! Filtered vector search against an exact filtered scan: recall@10 for filters keeping 50%, 10%
//! and 1% of the documents.

mod common;

use std::collections::BTreeMap;

use cxr_index::{Document, Index, IndexSpec, IndexWriter};

use common::SplitMix;

const N: usize = 8_000;
const DIM: usize = 32;

fn build(dir: &std::path::Path) -> Index {
    let mut rng = SplitMix(42);
    let spec = IndexSpec {
        dim: DIM,
        model_fingerprint: "f".into(),
        model_name: "test".into(),
    };
    let mut w = IndexWriter::create(dir, spec).unwrap();
    for i in 0..N {
        // Clustered data, as embeddings are: 40 centres plus noise.
        let centre = (rng.next_u64() % 40) as f32;
        let vector: Vec<f32> = (0..DIM)
            .map(|d| ((centre * 7.0 + d as f32).sin()) + 0.4 * rng.next_f32())
            .collect();
        w.add(Document {
            id: format!("d{i}"),
            vector: Some(vector),
            text: None,
            negated_text: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
    }
    w.commit().unwrap();
    Index::open(dir).unwrap()
}

/// Keeps a pseudo-random `percent` of ordinals.
fn keeps(ord: u32, percent: u64) -> bool {
    SplitMix(u64::from(ord) * 31 + 7).next_u64() % 100 < percent
}

#[test]
fn filtered_search_recall_against_exact_scan() {
    let dir = tempfile::tempdir().unwrap();
    let index = build(dir.path());
    let mut rng = SplitMix(7);
    for percent in [50u64, 10, 1] {
        let allow = |ord: u32| keeps(ord, percent);
        let (mut found, mut wanted) = (0usize, 0usize);
        for _ in 0..40 {
            let q: Vec<f32> = (0..DIM).map(|_| rng.next_f32()).collect();
            let exact = index.search_vector_exact_filtered(&q, 10, allow).unwrap();
            let approx = index.search_vector_filtered(&q, 10, &allow).unwrap();
            assert!(
                approx.iter().all(|h| allow(h.ord)),
                "a rejected doc was returned"
            );
            wanted += exact.len();
            found += exact
                .iter()
                .filter(|e| approx.iter().any(|a| a.ord == e.ord))
                .count();
        }
        let recall = found as f64 / wanted as f64;
        eprintln!("filter keeping {percent}%: recall@10 {recall:.3}");
        assert!(
            recall >= 0.95,
            "filter keeping {percent}%: recall@10 {recall:.3}"
        );
    }
}
