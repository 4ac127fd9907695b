//! The tantivy index over report text (sub-folder `text/`).
//!
//! Schema: `ord` (u64, indexed + fast: the document ordinal, used to map hits back and to
//! delete uncommitted documents), `id` (raw string, stored), `text` and `negated` (`en_stem`
//! analyser, with positions, not stored). `text` holds what a report asserts, `negated` what
//! it denies ("no pneumothorax"), so a query can ask for either ([`TextField`]). Indexes made
//! before `negated` existed have no such field; searching it finds nothing there. Every
//! document of the index gets a tantivy document, with or without text, so tantivy's document
//! count can be checked against the manifest.
//!
//! tantivy commits on its own, before our manifest is replaced. A crash between the two
//! leaves tantivy documents with `ord >= manifest.doc_count`: readers skip those hits, and a
//! writer reopening the index deletes them before it appends (their ordinals will be reused).
//!
//! User queries are never parsed as tantivy query syntax: the text is run through the field's
//! own analyser and the resulting terms are OR'ed, so quotes, colons, `?`, `-` or an empty
//! string cannot produce a syntax error, and `effusions` matches `effusion` by stemming.
//!
//! # Scoring
//!
//! tantivy's own BM25 hard-codes `k1 = 1.2, b = 0.75`. Report text is short and formulaic, so
//! the scoring here is a BM25 with configurable [`Bm25Params`] (default `k1 = 0.9, b = 0.4`,
//! the Anserini/Pyserini defaults), computed on top of tantivy's data structures rather than
//! through its query machinery:
//!
//! - terms: the query is analysed with the field's own `en_stem` pipeline, as at index time;
//! - `tf`: term frequencies from the inverted index postings (`read_postings(WithFreqs)`);
//! - document length: tantivy's fieldnorm, a one-byte lossy encoding of the token count
//!   (exact up to 40 tokens, then rounded *down* to a bucket of growing width). tantivy's
//!   own BM25 uses the same approximation; it shifts scores of long documents slightly;
//! - `N`: documents with at least one token in the field searched (Lucene's `docCount`), so
//!   image-only documents do not dilute the idf or the average length;
//! - `avgdl`: the exact total token count of the field / `N`;
//! - `df`: tantivy's document frequency over the snapshot.
//!
//! Like Lucene's statistics, `N`, `df` and the token total include deleted documents (and
//! uncommitted leftovers, see above) until segments are merged; those documents are never
//! returned. Then, with `idf = ln(1 + (N - df + 0.5) / (df + 0.5))` (Lucene's, always > 0):
//!
//! ```text
//! score(d, q) = sum over query tokens t: idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
//! ```
//!
//! Each query *token* contributes, so a term repeated in the query counts once per occurrence
//! (Anserini's bag-of-words query boosts a term by its query count; same result). Scores are
//! accumulated per segment, deleted documents and ordinals the manifest did not commit are
//! skipped, and the top k is kept with a heap; ties go to the lower ordinal.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::Postings;
use tantivy::query::{Query, RangeQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STORED,
    STRING,
};
use tantivy::{DocSet, IndexReader, ReloadPolicy, TantivyDocument, Term, TERMINATED};

use crate::error::{IndexError, Result};

const ORD: &str = "ord";
const ID: &str = "id";
const TEXT: &str = "text";
const NEGATED: &str = "negated";
const ANALYZER: &str = "en_stem";
/// Indexing memory budget of the tantivy writer (split over its threads).
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
struct Fields {
    ord: Field,
    id: Field,
    text: Field,
    /// Absent in indexes created before the field existed.
    negated: Option<Field>,
}

/// Which searchable text of a document a query runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextField {
    /// What the report asserts (or leaves uncertain): [`Document::text`](crate::Document).
    Asserted,
    /// What the report denies: [`Document::negated_text`](crate::Document).
    Negated,
}

impl Fields {
    fn get(&self, field: TextField) -> Option<Field> {
        match field {
            TextField::Asserted => Some(self.text),
            TextField::Negated => self.negated,
        }
    }
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(ORD, NumericOptions::default().set_indexed().set_fast());
    builder.add_text_field(ID, STRING | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    builder.add_text_field(
        TEXT,
        TextOptions::default().set_indexing_options(indexing.clone()),
    );
    builder.add_text_field(
        NEGATED,
        TextOptions::default().set_indexing_options(indexing),
    );
    builder.build()
}

fn fields(index: &tantivy::Index, path: &Path) -> Result<Fields> {
    let schema = index.schema();
    let get = |name: &str| {
        schema
            .get_field(name)
            .map_err(|_| IndexError::corrupt(path, format!("text index has no `{name}` field")))
    };
    Ok(Fields {
        ord: get(ORD)?,
        id: get(ID)?,
        text: get(TEXT)?,
        negated: schema.get_field(NEGATED).ok(),
    })
}

fn open_index(path: &Path) -> Result<tantivy::Index> {
    if !path.join("meta.json").is_file() {
        return Err(IndexError::corrupt(
            path,
            "the tantivy folder has no meta.json",
        ));
    }
    tantivy::Index::open_in_dir(path).map_err(IndexError::tantivy(path))
}

/// Deletes every document with `ord >= from`.
fn ord_at_least(fields: Fields, from: u64) -> Box<dyn Query> {
    Box::new(RangeQuery::new(
        Bound::Included(Term::from_field_u64(fields.ord, from)),
        Bound::Unbounded,
    ))
}

/// What the text index holds, for [`check`](crate::check): read without the writer lock.
#[derive(Debug, Default)]
pub(crate) struct TextCensus {
    /// Segments of the committed tantivy snapshot.
    pub segments: usize,
    /// Live (not deleted) documents.
    pub live_docs: u64,
    /// For each ordinal `< doc_count`, how many live documents carry it (saturating).
    pub per_ord: Vec<u8>,
    /// Live documents with `ord >= doc_count` (leftovers of an interrupted commit).
    pub beyond: u64,
    /// Live documents without an ordinal.
    pub without_ord: u64,
    /// Files tantivy's own checksums flag as damaged.
    pub damaged_files: Vec<String>,
}

/// A reader that sees the commit current when it opens and never reloads: the manifest, not
/// tantivy, decides what is committed.
fn manual_reader(index: &tantivy::Index, path: &Path) -> Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .map_err(IndexError::tantivy(path))
}

/// Opens the tantivy index in `path` read-only and counts its live documents by ordinal.
pub(crate) fn census(path: &Path, doc_count: u64) -> Result<TextCensus> {
    let index = open_index(path)?;
    fields(&index, path)?; // the schema has our fields
    let mut damaged_files: Vec<String> = index
        .validate_checksum()
        .map_err(IndexError::tantivy(path))?
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    damaged_files.sort();
    let reader = manual_reader(&index, path)?;
    let searcher = reader.searcher();
    let mut census = TextCensus {
        segments: searcher.segment_readers().len(),
        per_ord: vec![0; doc_count as usize],
        damaged_files,
        ..TextCensus::default()
    };
    for segment in searcher.segment_readers() {
        let ords = segment
            .fast_fields()
            .u64(ORD)
            .map_err(IndexError::tantivy(path))?;
        for doc in segment.doc_ids_alive() {
            census.live_docs += 1;
            match ords.first(doc) {
                Some(ord) if ord < doc_count => {
                    let slot = &mut census.per_ord[ord as usize];
                    *slot = slot.saturating_add(1);
                }
                Some(_) => census.beyond += 1,
                None => census.without_ord += 1,
            }
        }
    }
    Ok(census)
}

/// The writing side; holds tantivy's writer lock for as long as it lives.
pub(crate) struct TextWriter {
    path: PathBuf,
    fields: Fields,
    writer: tantivy::IndexWriter,
}

impl TextWriter {
    /// Creates a new tantivy index in `path` (which must not exist yet).
    pub(crate) fn create(path: &Path) -> Result<TextWriter> {
        std::fs::create_dir(path).map_err(IndexError::io(path))?;
        let index =
            tantivy::Index::create_in_dir(path, schema()).map_err(IndexError::tantivy(path))?;
        TextWriter::with_index(path, index)
    }

    /// Opens the tantivy index in `path`, taking its writer lock.
    pub(crate) fn open(path: &Path) -> Result<TextWriter> {
        TextWriter::with_index(path, open_index(path)?)
    }

    /// Deletes (and commits the deletion of) documents our manifest never committed:
    /// those with `ord >= committed`, left by a crash after tantivy's commit.
    pub(crate) fn discard_from(&mut self, committed: u64) -> Result<()> {
        self.writer
            .delete_query(ord_at_least(self.fields, committed))
            .map_err(IndexError::tantivy(&self.path))?;
        self.commit()
    }

    fn with_index(path: &Path, index: tantivy::Index) -> Result<TextWriter> {
        let fields = fields(&index, path)?;
        let writer: tantivy::IndexWriter = index
            .writer(WRITER_MEMORY)
            .map_err(IndexError::tantivy(path))?;
        // A writer killed between writing a file and tantivy's own commit leaves that file
        // behind; tantivy would later fail to create a file of the same name ("FileAlreadyExists",
        // seen with delete files after SIGKILL). Files the committed meta does not reference go
        // first.
        writer
            .garbage_collect_files()
            .wait()
            .map_err(IndexError::tantivy(path))?;
        Ok(TextWriter {
            path: path.to_path_buf(),
            fields,
            writer,
        })
    }

    pub(crate) fn add(
        &mut self,
        ord: u32,
        id: &str,
        text: Option<&str>,
        negated: Option<&str>,
    ) -> Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.ord, u64::from(ord));
        doc.add_text(self.fields.id, id);
        if let Some(text) = text {
            doc.add_text(self.fields.text, text);
        }
        // An index made before the field existed keeps its schema: the denied words are not
        // indexed there (readers say so through `has_field`).
        if let (Some(field), Some(negated)) = (self.fields.negated, negated) {
            doc.add_text(field, negated);
        }
        self.writer
            .add_document(doc)
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(())
    }

    /// Queues the deletion of the documents with these ordinals (applied by the next
    /// [`commit`](Self::commit)). Deleting an ordinal twice is harmless.
    pub(crate) fn delete_ords(&mut self, ords: impl IntoIterator<Item = u32>) {
        for ord in ords {
            self.writer
                .delete_term(Term::from_field_u64(self.fields.ord, u64::from(ord)));
        }
    }

    /// Merges all segments into one, which drops deleted documents from disk and from the
    /// collection statistics. Waits for the merge; the result is committed by tantivy itself.
    pub(crate) fn merge_all(&mut self) -> Result<()> {
        let segments = self
            .writer
            .index()
            .searchable_segment_ids()
            .map_err(IndexError::tantivy(&self.path))?;
        if segments.len() > 1 || self.has_deletes()? {
            self.writer
                .merge(&segments)
                .wait()
                .map_err(IndexError::tantivy(&self.path))?;
        }
        self.writer
            .garbage_collect_files()
            .wait()
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(())
    }

    fn has_deletes(&self) -> Result<bool> {
        let metas = self
            .writer
            .index()
            .searchable_segment_metas()
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(metas.iter().any(|m| m.has_deletes()))
    }

    /// tantivy's own durable commit.
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.writer
            .commit()
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(())
    }
}

/// BM25 parameters of text search (see the module documentation for the formula).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bm25Params {
    /// Term-frequency saturation: 0 ignores repetitions, larger values reward them longer.
    /// Finite and `>= 0`.
    pub k1: f32,
    /// Length normalisation: 0 ignores document length, 1 normalises fully. In `[0, 1]`.
    pub b: f32,
}

impl Default for Bm25Params {
    /// `k1 = 0.9, b = 0.4`: the Anserini/Pyserini defaults, tuned for short passages.
    fn default() -> Self {
        Bm25Params { k1: 0.9, b: 0.4 }
    }
}

impl Bm25Params {
    /// tantivy's (and Lucene's) built-in values, `k1 = 1.2, b = 0.75`.
    pub const TANTIVY: Bm25Params = Bm25Params { k1: 1.2, b: 0.75 };

    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.k1.is_finite() && self.k1 >= 0.0) {
            return Err(IndexError::InvalidParams {
                reason: format!("bm25 k1 must be finite and >= 0, got {}", self.k1),
            });
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(IndexError::InvalidParams {
                reason: format!("bm25 b must be in [0, 1], got {}", self.b),
            });
        }
        Ok(())
    }
}

/// Lucene's BM25 idf, `ln(1 + (N - df + 0.5) / (df + 0.5))`; positive for `df <= N`.
fn idf(doc_freq: u64, docs: u64) -> f32 {
    let docs = docs.max(doc_freq);
    let x = (docs - doc_freq) as f64 + 0.5;
    (1.0 + x / (doc_freq as f64 + 0.5)).ln() as f32
}

/// A top-k candidate; `Ord` puts better candidates higher (score, then lower ordinal).
#[derive(Clone, Copy, Debug)]
struct Candidate {
    score: f32,
    ord: u64,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.ord.cmp(&self.ord))
    }
}

/// The reading side: a snapshot of the tantivy index taken at open.
pub(crate) struct TextReader {
    path: PathBuf,
    index: tantivy::Index,
    fields: Fields,
    reader: IndexReader,
    /// Documents of the manifest; hits with a larger ordinal are uncommitted leftovers.
    doc_count: u64,
    asserted: FieldStats,
    negated: FieldStats,
}

/// Collection statistics of one field, fixed for the snapshot (the reader never reloads).
#[derive(Clone, Copy, Debug, Default)]
struct FieldStats {
    /// BM25 `N`: documents of the snapshot with at least one token in the field.
    docs_with_text: u64,
    /// Tokens in the field over the snapshot (exact, not from fieldnorms).
    total_tokens: u64,
}

impl FieldStats {
    fn collect(searcher: &tantivy::Searcher, field: Field, path: &Path) -> Result<FieldStats> {
        let mut stats = FieldStats::default();
        for segment in searcher.segment_readers() {
            stats.total_tokens += segment
                .inverted_index(field)
                .map_err(IndexError::tantivy(path))?
                .total_num_tokens();
            let norms = segment
                .get_fieldnorms_reader(field)
                .map_err(IndexError::tantivy(path))?;
            stats.docs_with_text += (0..segment.max_doc())
                .filter(|&doc| norms.fieldnorm_id(doc) != 0)
                .count() as u64;
        }
        Ok(stats)
    }
}

impl TextReader {
    /// Opens the committed snapshot; `doc_count` ordinals exist, `live` of them not deleted.
    pub(crate) fn open(path: &Path, doc_count: u64, live: u64) -> Result<TextReader> {
        let index = open_index(path)?;
        let fields = fields(&index, path)?;
        let reader = manual_reader(&index, path)?;
        let searcher = reader.searcher();
        let num_docs = searcher.num_docs();
        if num_docs < live {
            return Err(IndexError::corrupt(
                path,
                format!("text index holds {num_docs} documents, the manifest says {live}"),
            ));
        }
        let asserted = FieldStats::collect(&searcher, fields.text, path)?;
        let negated = match fields.negated {
            Some(field) => FieldStats::collect(&searcher, field, path)?,
            None => FieldStats::default(),
        };
        Ok(TextReader {
            path: path.to_path_buf(),
            index,
            fields,
            reader,
            doc_count,
            asserted,
            negated,
        })
    }

    /// Whether the index has the field at all (see the module notes).
    pub(crate) fn has_field(&self, field: TextField) -> bool {
        self.fields.get(field).is_some()
    }

    fn stats(&self, field: TextField) -> FieldStats {
        match field {
            TextField::Asserted => self.asserted,
            TextField::Negated => self.negated,
        }
    }

    /// Committed, live-or-not ordinals of the documents whose `field` holds any term of
    /// `query`, ascending. Deleted tantivy documents are skipped; the caller skips tombstones.
    pub(crate) fn matching(&self, field: TextField, query: &str) -> Result<Vec<u32>> {
        let Some(tantivy_field) = self.fields.get(field) else {
            return Ok(Vec::new());
        };
        let terms = self.terms(query)?;
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for segment in searcher.segment_readers() {
            let inverted = segment
                .inverted_index(tantivy_field)
                .map_err(IndexError::tantivy(&self.path))?;
            let alive = segment.alive_bitset();
            let ords = segment
                .fast_fields()
                .u64(ORD)
                .map_err(IndexError::tantivy(&self.path))?;
            for (text, _) in &terms {
                let term = Term::from_field_text(tantivy_field, text);
                let postings = inverted
                    .read_postings(&term, IndexRecordOption::Basic)
                    .map_err(IndexError::io(&self.path))?;
                let Some(mut postings) = postings else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if !alive.is_some_and(|a| a.is_deleted(doc)) {
                        if let Some(ord) = ords.first(doc).filter(|&o| o < self.doc_count) {
                            out.push(ord as u32);
                        }
                    }
                    doc = postings.advance();
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Distinct analysed terms of `query` (lower-cased, stemmed) in order of first
    /// occurrence, each with how many times it occurs in the query.
    fn terms(&self, query: &str) -> Result<Vec<(String, u32)>> {
        // Both searchable fields share the analyser.
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.fields.text)
            .map_err(IndexError::tantivy(&self.path))?;
        let mut stream = analyzer.token_stream(query);
        let mut terms: Vec<(String, u32)> = Vec::new();
        while stream.advance() {
            let text = &stream.token().text;
            match terms.iter_mut().find(|(t, _)| t == text) {
                Some((_, count)) => *count += 1,
                None => terms.push((text.clone(), 1)),
            }
        }
        Ok(terms)
    }

    /// BM25 top-k with `params` among the documents `allow` accepts: (ordinal, score), best
    /// first, ties to the lower ordinal. Every matching document is scored, so a filter never
    /// loses results the way filtering a fixed-size top list would.
    pub(crate) fn search(
        &self,
        field: TextField,
        query: &str,
        k: usize,
        params: Bm25Params,
        allow: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>> {
        let stats = self.stats(field);
        let Some(tantivy_field) = self.fields.get(field) else {
            return Ok(Vec::new());
        };
        if k == 0 || stats.docs_with_text == 0 {
            return Ok(Vec::new());
        }
        let terms = self.terms(query)?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let Bm25Params { k1, b } = params;

        // Per query term: its query weight count * idf * (k1 + 1).
        let mut weighted: Vec<(Term, f32)> = Vec::with_capacity(terms.len());
        for (text, count) in &terms {
            let term = Term::from_field_text(tantivy_field, text);
            let df = searcher
                .doc_freq(&term)
                .map_err(IndexError::tantivy(&self.path))?;
            if df > 0 {
                let weight = *count as f32 * idf(df, stats.docs_with_text) * (k1 + 1.0);
                weighted.push((term, weight));
            }
        }
        if weighted.is_empty() {
            return Ok(Vec::new());
        }
        // The length part of the denominator for each of the 256 fieldnorm codes.
        let avg_len = stats.total_tokens as f32 / stats.docs_with_text as f32;
        let mut length_norm = [0f32; 256];
        for (code, slot) in length_norm.iter_mut().enumerate() {
            let len = FieldNormReader::id_to_fieldnorm(code as u8) as f32;
            *slot = k1 * (1.0 - b + b * len / avg_len);
        }

        // Worst kept candidate on top.
        let mut top: BinaryHeap<Reverse<Candidate>> = BinaryHeap::with_capacity(k + 1);
        for segment in searcher.segment_readers() {
            let inverted = segment
                .inverted_index(tantivy_field)
                .map_err(IndexError::tantivy(&self.path))?;
            let norms = segment
                .get_fieldnorms_reader(tantivy_field)
                .map_err(IndexError::tantivy(&self.path))?;
            let mut scores = vec![0f32; segment.max_doc() as usize];
            // Every contribution is > 0, so a zero score marks an untouched document.
            let mut touched = Vec::new();
            for (term, weight) in &weighted {
                let postings = inverted
                    .read_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(IndexError::io(&self.path))?;
                let Some(mut postings) = postings else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    let tf = postings.term_freq() as f32;
                    let norm = length_norm[norms.fieldnorm_id(doc) as usize];
                    let slot = &mut scores[doc as usize];
                    if *slot == 0.0 {
                        touched.push(doc);
                    }
                    *slot += weight * tf / (tf + norm);
                    doc = postings.advance();
                }
            }
            if touched.is_empty() {
                continue;
            }
            let alive = segment.alive_bitset();
            let ords = segment
                .fast_fields()
                .u64(ORD)
                .map_err(IndexError::tantivy(&self.path))?;
            for doc in touched {
                if alive.is_some_and(|a| a.is_deleted(doc)) {
                    continue;
                }
                let ord = ords
                    .first(doc)
                    .ok_or_else(|| IndexError::corrupt(&self.path, "a text hit has no ordinal"))?;
                if ord >= self.doc_count || !allow(ord as u32) {
                    continue;
                }
                let candidate = Candidate {
                    score: scores[doc as usize],
                    ord,
                };
                if top.len() < k {
                    top.push(Reverse(candidate));
                } else if top.peek().is_some_and(|worst| candidate > worst.0) {
                    top.pop();
                    top.push(Reverse(candidate));
                }
            }
        }
        Ok(top
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(c)| (c.ord as u32, c.score))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tantivy::collector::TopDocs;
    use tantivy::query::{BooleanQuery, Occur, TermQuery};

    use super::*;

    /// Writes `batches` of texts (ordinals in order), committing after each batch so every
    /// batch becomes its own segment.
    fn write(dir: &Path, batches: &[&[Option<&str>]]) -> u64 {
        let mut writer = TextWriter::create(&dir.join("text")).unwrap();
        let mut ord = 0u32;
        for batch in batches {
            for text in *batch {
                writer.add(ord, &format!("doc-{ord}"), *text, None).unwrap();
                ord += 1;
            }
            writer.commit().unwrap();
        }
        u64::from(ord)
    }

    fn scores(hits: &[(u32, f32)]) -> HashMap<u32, f32> {
        hits.iter().copied().collect()
    }

    fn assert_close(found: f32, expected: f64) {
        assert!(
            (f64::from(found) - expected).abs() < 1e-4,
            "score {found}, expected {expected}"
        );
    }

    #[test]
    fn bm25_matches_a_hand_computation() {
        let dir = tempfile::tempdir().unwrap();
        // Analysed (en_stem) lengths: 2, 5, 3, 3, and a document without text, which does not
        // count in N or the average length (Lucene's docCount).
        let n = write(
            dir.path(),
            &[&[
                Some("pleural effusion"),
                Some("no pleural effusion or pneumothorax"),
                Some("heart size normal"),
                Some("effusion effusion small"),
                None,
            ]],
        );
        let reader = TextReader::open(&dir.path().join("text"), n, n).unwrap();
        assert_eq!(
            (reader.asserted.docs_with_text, reader.asserted.total_tokens),
            (4, 13)
        );
        let params = Bm25Params::default();

        // N = 4, avgdl = 13 / 4 = 3.25, k1 = 0.9, b = 0.4.
        // "effusion": df = 3, idf = ln(1 + (4 - 3 + 0.5) / (3 + 0.5)) = ln(1.428571) = 0.356675
        //   doc 3: tf 2, len 3: K = 0.9 * (0.6 + 0.4 * 3 / 3.25) = 0.872308
        //          0.356675 * 2 * 1.9 / (2 + 0.872308)            = 0.471873
        //   doc 0: tf 1, len 2: K = 0.9 * (0.6 + 0.4 * 2 / 3.25) = 0.761538
        //          0.356675 * 1.9 / (1 + 0.761538)                = 0.384711
        //   doc 1: tf 1, len 5: K = 0.9 * (0.6 + 0.4 * 5 / 3.25) = 1.093846
        //          0.356675 * 1.9 / (1 + 1.093846)                = 0.323654
        let hits = reader
            .search(TextField::Asserted, "effusions", 10, params, &|_| true)
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [3, 0, 1]);
        assert_close(hits[0].1, 0.471873);
        assert_close(hits[1].1, 0.384711);
        assert_close(hits[2].1, 0.323654);

        // "pleural pneumothorax": idf(pleural, df 2) = ln(1 + 2.5 / 2.5) = 0.693147,
        // idf(pneumothorax, df 1) = ln(1 + 3.5 / 1.5) = 1.203973.
        //   doc 1: 0.693147 * 1.9 / 2.093846 + 1.203973 * 1.9 / 2.093846 = 1.721487
        //   doc 0: 0.693147 * 1.9 / 1.761538                              = 0.747630
        let hits = reader
            .search(
                TextField::Asserted,
                "Pleural, pneumothorax?",
                10,
                params,
                &|_| true,
            )
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 0]);
        assert_close(hits[0].1, 1.721487);
        assert_close(hits[1].1, 0.747630);

        // A term repeated in the query counts once per occurrence.
        let once = scores(
            &reader
                .search(TextField::Asserted, "effusion", 10, params, &|_| true)
                .unwrap(),
        );
        let twice = scores(
            &reader
                .search(
                    TextField::Asserted,
                    "effusion effusions",
                    10,
                    params,
                    &|_| true,
                )
                .unwrap(),
        );
        assert_eq!(once.len(), twice.len());
        for (ord, score) in once {
            assert_close(twice[&ord], 2.0 * f64::from(score));
        }

        // Terms absent from the index, empty queries and k = 0 give nothing.
        assert!(reader
            .search(TextField::Asserted, "cardiomegaly", 10, params, &|_| true)
            .unwrap()
            .is_empty());
        assert!(reader
            .search(TextField::Asserted, " ?! ", 10, params, &|_| true)
            .unwrap()
            .is_empty());
        assert!(reader
            .search(TextField::Asserted, "effusion", 0, params, &|_| true)
            .unwrap()
            .is_empty());
        assert_eq!(
            reader
                .search(TextField::Asserted, "effusion", 2, params, &|_| true)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn with_tantivys_parameters_the_ranking_is_tantivys() {
        // Documents of 1 to 90 tokens (past 40, fieldnorms are quantised), in 3+ segments.
        let words = [
            "effusion",
            "pleural",
            "small",
            "left",
            "right",
            "pneumothorax",
            "heart",
            "normal",
            "size",
            "opacity",
            "basilar",
            "atelectasis",
            "lungs",
            "clear",
            "no",
            "acute",
        ];
        let texts: Vec<String> = (0..60usize)
            .map(|i| {
                let len = 1 + (i * 37) % 90;
                (0..len)
                    .map(|j| words[(i * 7 + j * j * 3 + j / 5) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let docs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
        let dir = tempfile::tempdir().unwrap();
        let n = write(dir.path(), &[&docs[..20], &docs[20..45], &docs[45..]]);
        let reader = TextReader::open(&dir.path().join("text"), n, n).unwrap();
        let searcher = reader.reader.searcher();
        assert!(searcher.segment_readers().len() >= 3);

        for query in [
            "effusion",
            "small left pleural effusion",
            "no pneumothorax basilar",
        ] {
            let ours = reader
                .search(
                    TextField::Asserted,
                    query,
                    100,
                    Bm25Params::TANTIVY,
                    &|_| true,
                )
                .unwrap();
            let clauses: Vec<(Occur, Box<dyn Query>)> = reader
                .terms(query)
                .unwrap()
                .into_iter()
                .map(|(t, _)| {
                    let term = Term::from_field_text(reader.fields.text, &t);
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                    (Occur::Should, q)
                })
                .collect();
            let theirs: HashMap<u32, f32> = searcher
                .search(
                    &BooleanQuery::new(clauses),
                    &TopDocs::with_limit(100).order_by_score(),
                )
                .unwrap()
                .into_iter()
                .map(|(score, addr)| {
                    let ords = searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .u64(ORD)
                        .unwrap();
                    (ords.first(addr.doc_id).unwrap() as u32, score)
                })
                .collect();
            assert!(ours.len() > 5, "{query}: too few hits for a test");
            assert_eq!(ours.len(), theirs.len(), "{query}");
            for (ord, score) in &ours {
                assert_close(*score, f64::from(theirs[ord]));
            }
            // Same order as tantivy's scores, up to float noise between equal scores.
            for pair in ours.windows(2) {
                assert!(theirs[&pair[0].0] >= theirs[&pair[1].0] - 1e-5, "{query}");
            }
        }
        // The defaults rank differently from tantivy's parameters on this corpus.
        let ours = reader
            .search(
                TextField::Asserted,
                "effusion",
                100,
                Bm25Params::default(),
                &|_| true,
            )
            .unwrap();
        let tantivys = reader
            .search(
                TextField::Asserted,
                "effusion",
                100,
                Bm25Params::TANTIVY,
                &|_| true,
            )
            .unwrap();
        assert_ne!(ours, tantivys);
    }

    #[test]
    fn ties_go_to_the_lower_ordinal_and_deleted_or_uncommitted_docs_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let same = Some("left pleural effusion");
        let n = write(dir.path(), &[&[same, same, same], &[same, same, same]]);
        let path = dir.path().join("text");
        let params = Bm25Params::default();

        let reader = TextReader::open(&path, n, n).unwrap();
        let hits = reader
            .search(TextField::Asserted, "effusion", 10, params, &|_| true)
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
        assert!(hits.windows(2).all(|w| w[0].1 == w[1].1));
        let top2 = reader
            .search(TextField::Asserted, "effusion", 2, params, &|_| true)
            .unwrap();
        assert_eq!(top2.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1]);

        // Leftovers of a crash (ord >= the manifest's count) are never returned...
        let reader = TextReader::open(&path, 4, 4).unwrap();
        let hits = reader
            .search(TextField::Asserted, "effusion", 10, params, &|_| true)
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        drop(reader);
        // ...nor once deleted (deleted documents still count in the statistics, as in Lucene).
        let mut writer = TextWriter::open(&path).unwrap();
        writer.discard_from(2).unwrap();
        drop(writer);
        assert!(matches!(
            TextReader::open(&path, 6, 6),
            Err(IndexError::Corrupt { .. })
        ));
        let reader = TextReader::open(&path, 2, 2).unwrap();
        let hits = reader
            .search(TextField::Asserted, "effusion", 10, params, &|_| true)
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn parameters_are_validated() {
        assert!(Bm25Params::default().validate().is_ok());
        assert!(Bm25Params::TANTIVY.validate().is_ok());
        assert!(Bm25Params { k1: 0.0, b: 0.0 }.validate().is_ok());
        assert!(Bm25Params { k1: 0.0, b: 1.0 }.validate().is_ok());
        for bad in [
            Bm25Params { k1: -0.1, b: 0.4 },
            Bm25Params {
                k1: f32::NAN,
                b: 0.4,
            },
            Bm25Params {
                k1: f32::INFINITY,
                b: 0.4,
            },
            Bm25Params { k1: 0.9, b: 1.5 },
            Bm25Params { k1: 0.9, b: -0.1 },
            Bm25Params {
                k1: 0.9,
                b: f32::NAN,
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(IndexError::InvalidParams { .. })),
                "{bad:?}"
            );
        }
    }
}
