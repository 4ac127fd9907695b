//! Query answering: embed the query, search image vectors, search report text with BM25, and
//! fuse the ranked lists.
//!
//! Fusion is reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): each list gives
//! a document `1 / (60 + rank)`, summed over lists. It needs no score calibration between cosine
//! similarities and BM25, which live on unrelated scales. Every hit keeps the rank and score it
//! had in each list, so a result can say why it was ranked.

use cxr_index::Index;

use crate::ingest::GreyImage;
use crate::model::DualEncoder;

/// RRF's constant; 60 is the value of the original paper, robust across collections.
pub const RRF_K: f32 = 60.0;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] cxr_index::IndexError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("the index holds image vectors; a model is needed to embed the query")]
    NoModel,
}

/// One result with the evidence behind its rank.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    /// Position in the index; stable for the life of the index.
    #[serde(skip)]
    pub ord: u32,
    pub id: String,
    pub score: f32,
    /// Rank (1-based) and cosine similarity in the image-vector list, if the doc was in it.
    pub vector: Option<(usize, f32)>,
    /// Rank (1-based) and BM25 score in the report-text list, if the doc was in it.
    pub text: Option<(usize, f32)>,
}

/// Search parameters.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    /// Results returned.
    pub k: usize,
    /// Candidates taken from each list before fusion.
    pub candidates: usize,
}

impl SearchOptions {
    pub fn top(k: usize) -> Self {
        Self {
            k,
            candidates: (k * 20).max(100),
        }
    }
}

/// Answers queries against one index with the model that built it.
pub struct Searcher<'a> {
    index: &'a Index,
    model: Option<&'a DualEncoder>,
}

impl<'a> Searcher<'a> {
    /// `model` may be `None` for an index without image vectors (a report-only corpus); otherwise
    /// it must be the model that built the index.
    pub fn new(index: &'a Index, model: Option<&'a DualEncoder>) -> Result<Self, SearchError> {
        if let Some(m) = model {
            if index.manifest().vector_count > 0 {
                index.check_model(m.fingerprint())?;
            }
        }
        Ok(Self { index, model })
    }

    fn needs_model(&self) -> bool {
        self.index.manifest().vector_count > 0
    }

    /// Text query: vectors (query text embedded by the text tower) fused with BM25 over reports.
    pub fn search_text(&self, query: &str, opts: SearchOptions) -> Result<Vec<Hit>, SearchError> {
        let mut lists = Vec::with_capacity(2);
        if self.needs_model() {
            let model = self.model.ok_or(SearchError::NoModel)?;
            let q = model.embed_texts(&[query])?;
            if let Some(q) = q.first() {
                lists.push((
                    Signal::Vector,
                    self.index.search_vector(q, opts.candidates)?,
                ));
            }
        }
        lists.push((
            Signal::Text,
            self.index.search_text(query, opts.candidates)?,
        ));
        Ok(self.fuse(lists, opts.k))
    }

    /// Example-image query: nearest image vectors.
    pub fn search_image(
        &self,
        image: &GreyImage,
        opts: SearchOptions,
    ) -> Result<Vec<Hit>, SearchError> {
        let model = self.model.ok_or(SearchError::NoModel)?;
        let q = model.embed_images(std::slice::from_ref(image))?;
        let mut lists = Vec::new();
        if let Some(q) = q.first() {
            lists.push((
                Signal::Vector,
                self.index.search_vector(q, opts.candidates)?,
            ));
        }
        Ok(self.fuse(lists, opts.k))
    }

    /// Fuses ranked lists by RRF. When only one list takes part (an image query, or a text query
    /// on a report-only index) its own score is kept: a cosine or a BM25 score says more than
    /// `1 / (60 + rank)`, and the order is the same.
    fn fuse(&self, lists: Vec<(Signal, Vec<cxr_index::Hit>)>, k: usize) -> Vec<Hit> {
        let single = lists.len() == 1;
        let mut fused: std::collections::HashMap<u32, Hit> = std::collections::HashMap::new();
        for (signal, hits) in lists {
            for (i, h) in hits.iter().enumerate() {
                let rank = i + 1;
                let entry = fused.entry(h.ord).or_insert_with(|| Hit {
                    ord: h.ord,
                    id: String::new(),
                    score: 0.0,
                    vector: None,
                    text: None,
                });
                entry.score += if single {
                    h.score
                } else {
                    1.0 / (RRF_K + rank as f32)
                };
                match signal {
                    Signal::Vector => entry.vector = Some((rank, h.score)),
                    Signal::Text => entry.text = Some((rank, h.score)),
                }
            }
        }
        let mut hits: Vec<Hit> = fused.into_values().collect();
        // Ties (same fused score) are broken by the best single-list rank, then by ordinal, so
        // results are deterministic.
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| best_rank(a).cmp(&best_rank(b)))
                .then_with(|| a.ord.cmp(&b.ord))
        });
        hits.truncate(k);
        for h in &mut hits {
            if let Some(doc) = self.index.doc(h.ord) {
                h.id = doc.id.to_string();
            }
        }
        hits
    }
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Vector,
    Text,
}

fn best_rank(h: &Hit) -> usize {
    let v = h.vector.map_or(usize::MAX, |(r, _)| r);
    let t = h.text.map_or(usize::MAX, |(r, _)| r);
    v.min(t)
}

/// The sentence of a report that best matches the query (most shared word stems), cut to
/// `max_chars`; the first sentence when none matches.
pub fn snippet(report: &str, query: &str, max_chars: usize) -> String {
    let stems = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(|w| w.to_lowercase().chars().take(5).collect())
            .collect()
    };
    let q = stems(query);
    let sentences = report
        .split_inclusive(['.', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut best = ("", 0usize);
    for (i, s) in sentences.enumerate() {
        let overlap = stems(s).iter().filter(|w| q.contains(w)).count();
        if i == 0 || overlap > best.1 {
            best = (s, overlap);
        }
    }
    let s = best.0;
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_picks_the_matching_sentence() {
        let r = "Heart size normal. Small left pleural effusion. No pneumothorax.";
        assert_eq!(
            snippet(r, "pleural effusions", 80),
            "Small left pleural effusion."
        );
        assert_eq!(snippet(r, "fracture", 80), "Heart size normal.");
        assert_eq!(snippet(r, "effusion", 10), "Small lef…");
    }
}
