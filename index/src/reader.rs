//! The read side: a consistent snapshot of one committed generation.
//!
//! `Index::open` reads the manifest, then the files it names; every file is checked against
//! the manifest's length and CRC-32 (cheap next to the I/O) so a damaged index fails at open
//! with the file's name instead of returning wrong results later. Each vector segment (the
//! sealed ones and the active one) is searched through its own flat graph, memory-mapped, and
//! the hits are merged. A writer committing meanwhile may delete the files of the generation
//! we just read about; open then retries with the new manifest.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::columns::{self, FieldColumn};
use crate::docs::{DocTable, StoredDoc};
use crate::error::{IndexError, Result};
use crate::flat::FlatGraph;
use crate::graph::{dump_entry_point, SearchOptions};
use crate::manifest::Manifest;
use crate::text::{TextField, TextReader};
use crate::vectors::{self, VectorStore};
use crate::writer::{flat_words, load_graph};

/// How often `open` re-reads the manifest after racing a commit.
const OPEN_ATTEMPTS: usize = 3;

/// A search result: document ordinal and score (higher is better).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Document ordinal, see [`Index::doc`].
    pub ord: u32,
    /// Cosine similarity for vector search, BM25 score for text search.
    pub score: f32,
}

/// One vector segment as readers search it: its rows and its graph.
#[derive(Debug)]
struct Segment {
    /// The segment's first row in the index's row numbering.
    first_row: usize,
    vectors: VectorStore,
    graph: FlatGraph,
}

/// A committed index, opened read-only. Cheap to query from many threads (`Send + Sync`).
pub struct Index {
    dir: PathBuf,
    /// Field columns built for filters so far (see [`Index::columns`]).
    columns: Mutex<HashMap<String, Arc<FieldColumn>>>,
    manifest: Manifest,
    docs: DocTable,
    /// Sealed segments, then the active one, in row order.
    segments: Vec<Segment>,
    text: TextReader,
    options: SearchOptions,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("generation", &self.manifest.generation)
            .field("docs", &self.manifest.doc_count)
            .field("vectors", &self.manifest.vector_count)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens the last committed state of the index in `dir` with default search options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Index> {
        Index::open_with(dir, SearchOptions::default())
    }

    /// [`Index::open`] with explicit search options.
    /// Fails with [`IndexError::InvalidParams`] on BM25 parameters out of range.
    pub fn open_with(dir: impl AsRef<Path>, options: SearchOptions) -> Result<Index> {
        options.bm25.validate()?;
        let dir = dir.as_ref();
        let mut attempt = 0;
        loop {
            let manifest = Manifest::read(dir)?;
            let generation = manifest.generation;
            match Index::load(dir, manifest, options) {
                Err(e) if e.is_not_found() && attempt + 1 < OPEN_ATTEMPTS => {
                    // A commit may have replaced the manifest and deleted our files.
                    if Manifest::read(dir)?.generation == generation {
                        return Err(e);
                    }
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn load(dir: &Path, manifest: Manifest, options: SearchOptions) -> Result<Index> {
        let dim = manifest.spec.dim;
        let docs = DocTable::load(dir, &manifest)?;
        let storage = manifest.vector_storage;
        let placement = options.vector_placement;
        let mut segments = Vec::with_capacity(manifest.files.sealed.len() + 1);
        let mut first_row = 0usize;
        for sealed in &manifest.files.sealed {
            let rows = sealed.rows;
            segments.push(Segment {
                first_row,
                vectors: VectorStore::open(dir, &sealed.vectors, rows, dim, storage, placement)?,
                graph: FlatGraph::open(dir, &sealed.flat_graph, rows, rows)?,
            });
            first_row += rows as usize;
        }
        if let (Some(entry), Some(hnsw)) = (&manifest.files.vectors, &manifest.files.hnsw) {
            let rows = manifest.active_rows();
            let vectors = VectorStore::open(dir, entry, rows, dim, storage, placement)?;
            let graph = match &manifest.files.flat_graph {
                Some(flat) => FlatGraph::open(dir, flat, rows, rows)?,
                // Written before the flat file existed: convert the hnsw_rs dump (slow, as
                // opening was then; the next commit writes the flat file).
                None => {
                    let loaded = load_graph(dir, hnsw, rows, dim)?;
                    let path = dir.join(&hnsw.graph.name);
                    let row_of = |ord: usize| docs.ords.row(ord);
                    flat_words(&loaded, dump_entry_point(&path), &row_of, first_row)
                        .and_then(|words| FlatGraph::from_words(words, rows, rows))
                        .map_err(|e| IndexError::corrupt(path, e))?
                }
            };
            segments.push(Segment {
                first_row,
                vectors,
                graph,
            });
        }
        let text = TextReader::open(
            &dir.join(&manifest.files.text_dir),
            manifest.doc_count,
            manifest.doc_count - manifest.deleted_count,
        )?;
        Ok(Index {
            dir: dir.to_path_buf(),
            columns: Mutex::default(),
            manifest,
            docs,
            segments,
            text,
            options,
        })
    }

    /// The folder of this index.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The manifest of the opened generation.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of live documents (deleted ones are not counted).
    pub fn len(&self) -> usize {
        self.docs.ords.live()
    }

    /// True when the index holds no live documents.
    pub fn is_empty(&self) -> bool {
        self.docs.ords.live() == 0
    }

    /// One past the highest ordinal: ordinals of live documents lie in `0..ord_bound()`, with
    /// gaps where documents were deleted. Size per-ordinal tables with it.
    pub fn ord_bound(&self) -> u32 {
        self.docs.ords.len() as u32
    }

    /// Ids of the live documents, in ordinal order (each parsed from its record).
    pub fn ids(&self) -> impl Iterator<Item = (u32, Cow<'_, str>)> {
        (0..self.ord_bound()).filter_map(|ord| self.docs.id(ord).map(|id| (ord, id)))
    }

    /// Number of documents with a vector.
    pub fn vector_count(&self) -> usize {
        self.segments.iter().map(|s| s.vectors.rows()).sum()
    }

    /// Number of vector segments a search walks (sealed ones and the active one).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The stored document with ordinal `ord`; `None` past the end and for deleted documents.
    /// Its fields are parsed from the record on each call.
    pub fn doc(&self, ord: u32) -> Option<StoredDoc> {
        self.docs.doc(ord)
    }

    /// The fields of document `ord` named in `names` (those it has): cheaper than
    /// [`Index::doc`] when a filter or a grouping reads a few fields of many documents, as
    /// the others are skipped without being built. `None` for a deleted document.
    pub fn fields(&self, ord: u32, names: &[&str]) -> Option<BTreeMap<String, String>> {
        self.docs.fields(ord, names)
    }

    /// The columns of the stored fields `names` (see [`FieldColumn`]), in that order: built
    /// in one pass over the documents the first time a field is asked for, then kept for
    /// the life of this `Index`.
    pub fn columns(&self, names: &[&str]) -> Vec<Arc<FieldColumn>> {
        let mut cache = self
            .columns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !cache.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            let built = columns::build(&missing, self.ord_bound(), |ord, names| {
                self.docs.fields(ord, names)
            });
            for (name, column) in missing.iter().zip(built) {
                cache.insert(name.to_string(), Arc::new(column));
            }
        }
        names
            .iter()
            .map(|n| cache.get(*n).cloned().unwrap_or_default())
            .collect()
    }

    /// The id of document `ord` alone, which is cheaper than [`Index::doc`].
    pub fn id(&self, ord: u32) -> Option<Cow<'_, str>> {
        self.docs.id(ord)
    }

    /// The ordinal of the document with this id.
    pub fn ord_of(&self, id: &str) -> Option<u32> {
        self.docs.ord_of(id)
    }

    /// The (unit-norm) vector of document `ord`, read from the memory-mapped vector file:
    /// borrowed from the map for f32 storage, widened into a new vector for f16.
    pub fn vector(&self, ord: u32) -> Option<Cow<'_, [f32]>> {
        if !self.docs.ords.is_live(ord) {
            return None;
        }
        let row = self.docs.ords.row(ord as usize)? as usize;
        let at = self.segments.partition_point(|s| s.first_row <= row);
        let segment = self.segments.get(at.checked_sub(1)?)?;
        segment.vectors.view().row(row - segment.first_row)
    }

    /// Fails with [`IndexError::ModelMismatch`] unless `fingerprint` is the index's model.
    pub fn check_model(&self, fingerprint: &str) -> Result<()> {
        let spec = &self.manifest.spec;
        if spec.model_fingerprint == fingerprint {
            return Ok(());
        }
        Err(IndexError::ModelMismatch {
            index_model: spec.model_name.clone(),
            index_fingerprint: spec.model_fingerprint.clone(),
            query_fingerprint: fingerprint.to_string(),
        })
    }

    fn normalized_query(&self, query: &[f32]) -> Result<Vec<f32>> {
        let expected = self.manifest.spec.dim;
        if query.len() != expected {
            return Err(IndexError::WrongDimension {
                expected,
                found: query.len(),
            });
        }
        let mut q = query.to_vec();
        vectors::normalize(&mut q).map_err(|reason| IndexError::InvalidQuery {
            reason: format!("query vector: {reason}"),
        })?;
        Ok(q)
    }

    /// Approximate nearest neighbours by cosine similarity (the query is normalised here),
    /// best first. With at most [`SearchOptions::exact_threshold`] vectors this is an exact
    /// scan; above it the HNSW graph is searched with `ef = max(ef_search, 2k)`.
    pub fn search_vector(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.graph_search(query, k, None)
    }

    /// Approximate nearest neighbours among the documents for which `allow(ord)` holds, by
    /// the HNSW graph with the filter applied during the walk (hnsw_rs `search_filter`). For
    /// filters that keep many documents; selective filters are better served by
    /// [`Self::search_vector_exact_filtered`].
    pub fn search_vector_filtered(
        &self,
        query: &[f32],
        k: usize,
        allow: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>> {
        self.graph_search(query, k, Some(allow))
    }

    fn graph_search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Result<Vec<Hit>> {
        let q = self.normalized_query(query)?;
        let allows = |ord: u32| allow.is_none_or(|a| a(ord));
        if self.vector_count() <= self.options.exact_threshold {
            return Ok(self.exact(&q, k, allows));
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let ef = self.options.ef_search.max(2 * k);
        // Points of deleted documents stay in the graph until compaction: they still route
        // the walk but are never returned.
        let live_and_allowed = |ord: u32| self.docs.ords.is_live(ord) && allows(ord);
        let filter: Option<&dyn Fn(u32) -> bool> = match (allow, self.docs.ords.deleted()) {
            (None, 0) => None,
            _ => Some(&live_and_allowed),
        };
        // Each segment gives its own top k; the best k of those are the index's.
        let mut hits: Vec<Hit> = Vec::with_capacity(k * self.segments.len());
        for segment in &self.segments {
            let found = segment
                .graph
                .search(&q, k, ef, segment.vectors.view(), filter);
            hits.extend(found.into_iter().map(|(ord, score)| Hit { ord, score }));
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.ord.cmp(&b.ord)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Exact nearest neighbours: a scan of every vector. For evaluation and small indexes.
    pub fn search_vector_exact(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let q = self.normalized_query(query)?;
        Ok(self.exact(&q, k, |_| true))
    }

    /// Exact nearest neighbours among the documents for which `filter(ord)` holds: the plan
    /// for filters that keep few documents, where a graph walk would mostly visit rejects.
    pub fn search_vector_exact_filtered(
        &self,
        query: &[f32],
        k: usize,
        filter: impl Fn(u32) -> bool,
    ) -> Result<Vec<Hit>> {
        let q = self.normalized_query(query)?;
        Ok(self.exact(&q, k, filter))
    }

    fn exact(&self, q: &[f32], k: usize, filter: impl Fn(u32) -> bool) -> Vec<Hit> {
        let ords = self.docs.ords.row_to_ord();
        let mut hits = Vec::new();
        for segment in &self.segments {
            let ords = &ords[segment.first_row..];
            let found = vectors::top_k_exact(segment.vectors.view(), q, k, |row| {
                self.docs.ords.is_live(ords[row]) && filter(ords[row])
            });
            hits.extend(found.into_iter().map(|(row, score)| Hit {
                ord: ords[row],
                score,
            }));
        }
        // Rows follow ordinals, so this is the order of a single scan: best first, then the
        // lower ordinal.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.ord.cmp(&b.ord)));
        hits.truncate(k);
        hits
    }

    /// BM25 search over report text with English stemming, best first (ties: lower ordinal
    /// first), with the [`Bm25Params`](crate::Bm25Params) of [`SearchOptions::bm25`]. The
    /// query is plain text, never query syntax: it is split and stemmed like the reports and
    /// its terms are OR'ed (a term repeated in the query weighs once per occurrence), so any
    /// input (quotes, colons, `?`, `-`, empty) is accepted; an empty or all-punctuation query
    /// returns no hits.
    pub fn search_text(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        self.search_text_filtered(query, k, &|_| true)
    }

    /// [`Self::search_text_filtered`] over one of the searchable fields: what reports assert
    /// (the default of the other text searches) or what they deny.
    pub fn search_text_field(
        &self,
        field: TextField,
        query: &str,
        k: usize,
        allow: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>> {
        let live_and_allowed = |ord: u32| self.docs.ords.is_live(ord) && allow(ord);
        Ok(self
            .text
            .search(field, query, k, self.options.bm25, &live_and_allowed)?
            .into_iter()
            .map(|(ord, score)| Hit { ord, score })
            .collect())
    }

    /// Ordinals of the live documents whose `field` contains any term of `query` (analysed as
    /// in search), ascending: for excluding documents that assert a finding the query denies.
    pub fn text_matches(&self, field: TextField, query: &str) -> Result<Vec<u32>> {
        let mut ords = self.text.matching(field, query)?;
        ords.retain(|&ord| self.docs.ords.is_live(ord));
        Ok(ords)
    }

    /// Whether this index has the field; indexes made before denied findings were indexed
    /// apart lack [`TextField::Negated`].
    pub fn has_text_field(&self, field: TextField) -> bool {
        self.text.has_field(field)
    }

    /// [`Self::search_text`] among the documents for which `allow(ord)` holds.
    pub fn search_text_filtered(
        &self,
        query: &str,
        k: usize,
        allow: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>> {
        self.search_text_field(TextField::Asserted, query, k, allow)
    }
}
