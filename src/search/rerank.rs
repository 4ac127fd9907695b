//! The second stage of a text query: re-order the first `N` hits by the reranker's image-text
//! match probability (ITM), as ELIXR-B re-scores retrieval candidates.
//!
//! Each candidate's image is read again from its file: the index keeps one vector per image,
//! not the spatial features the reranker reads, and storing them would change the index format
//! and multiply its size. The stored `path` is relative to the folder the image was indexed
//! from, so the caller names those folders (`roots`). Candidates are decoded in parallel
//! (rayon) with the ingest decoders and prepared with the model's own preprocessing.
//!
//! What cannot be scored keeps its first-stage position: report-only documents (no image), and
//! images whose file is gone or unreadable (reported by document id). The scored candidates
//! fill the remaining top-`N` positions in order of match probability, ties broken by their
//! first-stage rank; hits below `N` are untouched.

use std::path::{Path, PathBuf};

use cxr_index::Index;
use rayon::prelude::*;

use super::{Hit, SearchError};
use crate::ingest::{self, DecodeOptions};
use crate::model::DualEncoder;
use crate::rerank::Reranker;

/// Stored field holding an image document's path relative to the folder it was indexed from.
pub const PATH_FIELD: &str = "path";

/// What the second stage could not do, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerankNotice {
    /// A candidate whose image could not be read; it kept its first-stage position. Names the
    /// document, never the patient.
    Unreadable { id: String, reason: String },
    /// Candidates without an image (report-only documents); they kept their positions.
    ReportOnly { count: usize },
}

/// What [`rerank`] did.
#[derive(Debug, Clone, Default)]
pub struct RerankOutcome {
    /// Candidates scored and re-ordered.
    pub scored: usize,
    pub notices: Vec<RerankNotice>,
}

/// Re-orders the first `depth` of `hits` (a text query's first-stage results) by `reranker`'s
/// match probability with `query`, setting [`Hit::rerank`] on each scored hit. `roots`: the
/// folders the index's images were indexed from.
pub fn rerank(
    index: &Index,
    model: &DualEncoder,
    reranker: &Reranker,
    query: &str,
    hits: &mut [Hit],
    depth: usize,
    roots: &[PathBuf],
) -> Result<RerankOutcome, SearchError> {
    let n = depth.min(hits.len());
    let mut report_only = 0usize;
    let mut candidates: Vec<(usize, String, String)> = Vec::new(); // (position, id, rel path)
    for (k, hit) in hits[..n].iter().enumerate() {
        match index
            .fields(hit.ord, &[PATH_FIELD])
            .and_then(|mut f| f.remove(PATH_FIELD))
        {
            Some(rel) => candidates.push((k, hit.id.clone(), rel)),
            None => report_only += 1,
        }
    }
    let decode = DecodeOptions::default();
    let prepared: Vec<Result<Vec<f32>, String>> = candidates
        .par_iter()
        .map(|(_, _, rel)| load(rel, roots, &decode).map(|img| model.prepare_image(&img)))
        .collect();
    let mut outcome = RerankOutcome::default();
    let mut positions = Vec::new();
    let mut inputs = Vec::new();
    for ((k, id, _), p) in candidates.into_iter().zip(prepared) {
        match p {
            Ok(input) => {
                positions.push(k);
                inputs.push(input);
            }
            Err(reason) => outcome
                .notices
                .push(RerankNotice::Unreadable { id, reason }),
        }
    }
    if report_only > 0 {
        outcome
            .notices
            .push(RerankNotice::ReportOnly { count: report_only });
    }
    let scores = reranker
        .score(query, &inputs)
        .map_err(|e| SearchError::Rerank(Box::new(e)))?;
    let mut scored: Vec<(usize, f32, Hit)> = positions
        .iter()
        .zip(&scores)
        .map(|(&k, &p)| {
            let mut h = hits[k].clone();
            h.rerank = Some(p);
            (k, p, h)
        })
        .collect();
    // Highest probability first; equal probabilities keep their first-stage order.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (&slot, (_, _, hit)) in positions.iter().zip(scored) {
        hits[slot] = hit;
    }
    outcome.scored = positions.len();
    Ok(outcome)
}

/// Decodes the image stored as `rel` under the first root that holds it; the error names no
/// path (the caller names the document).
fn load(rel: &str, roots: &[PathBuf], decode: &DecodeOptions) -> Result<ingest::GreyImage, String> {
    let Some(path) = roots.iter().map(|r| r.join(rel)).find(|p| p.is_file()) else {
        return Err("its image file is under none of the given image roots".into());
    };
    ingest::decode_file(&path, decode)
        .map(|d| d.image)
        .map_err(|e| strip_path(&path, &e.to_string()))
}

/// An ingest error's message without its leading `path: `.
fn strip_path(path: &Path, message: &str) -> String {
    let prefix = format!("{}: ", path.display());
    message.strip_prefix(&prefix).unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_their_path() {
        let p = Path::new("/x/y.png");
        assert_eq!(strip_path(p, "/x/y.png: empty file"), "empty file");
        assert_eq!(strip_path(p, "other"), "other");
    }
}
