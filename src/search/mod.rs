//! Query answering: embed the query, search image vectors, search report text with BM25, and
//! fuse the ranked lists ([`fusion`]). Every hit keeps the rank and score it had in each list,
//! so a result can say why it was ranked.

pub mod filter;
pub mod findings;
pub mod fusion;
pub mod query;
pub mod rerank;
mod snippet;

use cxr_index::{Index, TextField};

pub use filter::{Filter, FilterError};
pub use findings::FindingAxes;
pub use fusion::{Fusion, Signal};
pub use query::ParsedQuery;
pub use rerank::{rerank, RerankNotice, RerankOutcome};
pub use snippet::snippet;

use crate::ingest::GreyImage;
use crate::model::DualEncoder;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] cxr_index::IndexError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("the index holds image vectors; a model is needed to embed the query")]
    NoModel,
    /// Boxed: the reranker's errors are large and rare.
    #[error(transparent)]
    Rerank(Box<crate::rerank::RerankError>),
}

/// One result with the evidence behind its rank.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    /// Position in the index; stable for the life of the index.
    #[serde(skip)]
    pub ord: u32,
    pub id: String,
    pub score: f32,
    /// Rank (1-based) and score in the image-vector list, if the doc was in it: the cosine
    /// similarity to the query's embedding, or for an image matched by findings the agreement
    /// of the two images' finding margins, scaled by the query's ([`findings`]).
    pub vector: Option<(usize, f32)>,
    /// Rank (1-based) and BM25 score in the report-text list, if the doc was in it.
    pub text: Option<(usize, f32)>,
    /// The reranker's image-text match probability, when the hit was among the reranked top
    /// `N` and its image could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<f32>,
}

/// Search parameters.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Results returned.
    pub k: usize,
    /// Candidates taken from each list before fusion.
    pub candidates: usize,
    /// Only documents whose metadata passes; applied inside each list's search, not after it.
    pub filter: Filter,
    /// One hit per study (the best-ranked image of it); documents without a study count alone.
    pub group_by_study: bool,
    /// How the vector and text lists are combined.
    pub fusion: Fusion,
    /// Which signals a text query uses; both by default. Turning one off measures the other
    /// alone on the same index.
    pub signals: Signals,
    /// How an example image is compared with the indexed ones.
    pub image_match: ImageMatch,
}

/// How an example-image query is compared with the indexed images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageMatch {
    /// By the model's zero-shot evidence for each finding of its vocabulary ([`findings`]):
    /// images with the same findings, whatever their view or exposure. A model without a
    /// text tower (RAD-DINO) has no findings to read and matches by appearance.
    #[default]
    Findings,
    /// By the whole embedding: images that look alike (near-duplicates, the same patient or
    /// view), findings or not.
    Appearance,
}

/// The answer to an example-image query, with what it was matched by.
#[derive(Debug, Clone)]
pub struct ImageAnswer {
    pub hits: Vec<Hit>,
    /// [`ImageMatch::Appearance`] also where findings were asked for but the model has no
    /// text tower, or the image no margin.
    pub matched_by: ImageMatch,
}

/// The signals a text query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    pub vector: bool,
    pub text: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            vector: true,
            text: true,
        }
    }
}

impl SearchOptions {
    pub fn top(k: usize) -> Self {
        Self {
            k,
            candidates: (k * 20).max(100),
            filter: Filter::default(),
            group_by_study: false,
            fusion: Fusion::default(),
            signals: Signals::default(),
            image_match: ImageMatch::default(),
        }
    }
}

/// Below this many matching documents a filtered vector search scans them exactly instead of
/// walking the graph: a graph search under a selective filter visits mostly rejected nodes and
/// can miss results, a scan of a few thousand vectors takes well under a millisecond per
/// thousand (qdrant plans filtered search the same way).
pub const EXACT_SCAN_BELOW: usize = 5_000;

/// Answers queries against one index with the model that built it.
pub struct Searcher<'a> {
    index: &'a Index,
    model: Option<&'a DualEncoder>,
    /// Embedded at the first image query matched by findings.
    axes: std::sync::OnceLock<FindingAxes>,
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
        Ok(Self {
            index,
            model,
            axes: std::sync::OnceLock::new(),
        })
    }

    fn needs_model(&self) -> bool {
        self.index.manifest().vector_count > 0
    }

    /// Text query: vectors (query text embedded by the text tower) fused with BM25 over reports.
    pub fn search_text(&self, query: &str, opts: &SearchOptions) -> Result<Vec<Hit>, SearchError> {
        let allowed = self.allowed(&opts.filter);
        let depth = self.depth(opts);
        let mut lists = Vec::with_capacity(2);
        if self.needs_model() && opts.signals.vector {
            let model = self.model.ok_or(SearchError::NoModel)?;
            let q = model.embed_texts(&[query])?;
            if let Some(q) = q.first() {
                lists.push((
                    Signal::Vector,
                    self.vector_list(q, depth, allowed.as_ref())?,
                ));
            }
        }
        if opts.signals.text {
            lists.push((
                Signal::Text,
                self.text_list(query, depth, allowed.as_ref())?,
            ));
        }
        Ok(self.fuse(lists, opts))
    }

    /// BM25 over reports, read by polarity ([`ParsedQuery`]): what the query asserts is
    /// searched in what reports assert; a query that only denies ("no pneumothorax") is
    /// searched in what reports deny; and reports asserting a finding the query denies are
    /// left out. The image-vector side embeds the query as typed: the text tower reads
    /// negation itself, as well as it was trained to.
    fn text_list(
        &self,
        query: &str,
        depth: usize,
        allowed: Option<&Allowed>,
    ) -> Result<Vec<cxr_index::Hit>, SearchError> {
        let parsed = ParsedQuery::parse(query);
        let mut excluded: Vec<u32> = Vec::new();
        for word in &parsed.denied_findings {
            excluded.extend(self.index.text_matches(TextField::Asserted, word)?);
        }
        excluded.sort_unstable();
        excluded.dedup();
        let allow = |ord: u32| {
            allowed.is_none_or(|a| a.allows(ord)) && excluded.binary_search(&ord).is_err()
        };
        let (field, terms) = if parsed.asserted.trim().is_empty() && parsed.has_negation() {
            (TextField::Negated, parsed.denied.join(" "))
        } else {
            (TextField::Asserted, parsed.asserted)
        };
        Ok(self.index.search_text_field(field, &terms, depth, &allow)?)
    }

    /// Example-image query: the images nearest by findings or by appearance
    /// ([`ImageMatch`]), and which of the two it was. An image whose embedding carries no
    /// evidence for any finding (all margins zero) is matched by appearance, the only thing
    /// left to compare.
    pub fn search_image(
        &self,
        image: &GreyImage,
        opts: &SearchOptions,
    ) -> Result<ImageAnswer, SearchError> {
        let model = self.model.ok_or(SearchError::NoModel)?;
        let allowed = self.allowed(&opts.filter);
        let Some(embedding) = model.embed_images(std::slice::from_ref(image))?.pop() else {
            return Ok(ImageAnswer {
                hits: Vec::new(),
                matched_by: ImageMatch::Appearance,
            });
        };
        let by_findings = match opts.image_match {
            ImageMatch::Findings if model.has_text_tower() => {
                self.finding_axes(model)?.query(&embedding)
            }
            _ => None,
        };
        let (q, matched_by) = match by_findings {
            Some(q) => (q, ImageMatch::Findings),
            None => (embedding, ImageMatch::Appearance),
        };
        let list = self.vector_list(&q, self.depth(opts), allowed.as_ref())?;
        Ok(ImageAnswer {
            hits: self.fuse(vec![(Signal::Vector, list)], opts),
            matched_by,
        })
    }

    fn finding_axes(&self, model: &DualEncoder) -> Result<&FindingAxes, SearchError> {
        if let Some(axes) = self.axes.get() {
            return Ok(axes);
        }
        let axes = FindingAxes::new(model)?;
        Ok(self.axes.get_or_init(|| axes))
    }

    /// Grouping by study needs deeper lists: several images of one study can fill the top.
    fn depth(&self, opts: &SearchOptions) -> usize {
        if opts.group_by_study {
            opts.candidates * 4
        } else {
            opts.candidates
        }
    }

    /// The documents a filter keeps, or `None` when there is no filter. Reads the filtered
    /// fields as columns (built at the first filtered query, kept by the index after).
    fn allowed(&self, filter: &Filter) -> Option<Allowed> {
        if filter.is_empty() {
            return None;
        }
        let columns = self.index.columns(&filter.field_names());
        let values: Vec<&[String]> = columns.iter().map(|c| c.values()).collect();
        let passing = filter.passing(&values);
        let n = self.index.ord_bound();
        let mut keep = vec![false; n as usize];
        let mut count = 0;
        for (ord, slot) in (0..n).zip(keep.iter_mut()) {
            let kept = columns
                .iter()
                .zip(&passing)
                .all(|(column, pass)| column.value_of(ord).is_some_and(|v| pass[v]));
            if kept {
                *slot = true;
                count += 1;
            }
        }
        Some(Allowed { keep, count })
    }

    fn vector_list(
        &self,
        q: &[f32],
        depth: usize,
        allowed: Option<&Allowed>,
    ) -> Result<Vec<cxr_index::Hit>, SearchError> {
        Ok(match allowed {
            None => self.index.search_vector(q, depth)?,
            Some(a) if a.count < EXACT_SCAN_BELOW => {
                self.index
                    .search_vector_exact_filtered(q, depth, |ord| a.allows(ord))?
            }
            Some(a) => self
                .index
                .search_vector_filtered(q, depth, &|ord| a.allows(ord))?,
        })
    }

    /// Fuses the lists (see [`fusion`]), groups by study if asked, and keeps the top k.
    fn fuse(&self, lists: Vec<(Signal, Vec<cxr_index::Hit>)>, opts: &SearchOptions) -> Vec<Hit> {
        let borrowed: Vec<(Signal, &[cxr_index::Hit])> =
            lists.iter().map(|(s, h)| (*s, h.as_slice())).collect();
        let mut hits: Vec<Hit> = fusion::fuse(&borrowed, opts.fusion)
            .into_iter()
            .map(|f| Hit {
                ord: f.ord,
                id: String::new(),
                score: f.score,
                vector: f.vector,
                text: f.text,
                rerank: None,
            })
            .collect();
        if opts.group_by_study {
            let mut studies = std::collections::HashSet::new();
            hits.retain(|h| {
                match self
                    .index
                    .fields(h.ord, &["study_uid"])
                    .and_then(|mut f| f.remove("study_uid"))
                {
                    Some(study) => studies.insert(study),
                    None => true,
                }
            });
        }
        hits.truncate(opts.k);
        for h in &mut hits {
            if let Some(id) = self.index.id(h.ord) {
                h.id = id.into_owned();
            }
        }
        hits
    }
}

/// The documents a filter keeps, as a bitmap over ordinals.
struct Allowed {
    keep: Vec<bool>,
    count: usize,
}

impl Allowed {
    fn allows(&self, ord: u32) -> bool {
        self.keep.get(ord as usize).copied().unwrap_or(false)
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
