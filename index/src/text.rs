//! The tantivy index over report text (sub-folder `text/`).
//!
//! Schema: `ord` (u64, indexed + fast: the document ordinal, used to map hits back and to
//! delete uncommitted documents), `id` (raw string, stored), `text` (`en_stem` analyser, with
//! positions, not stored). Every document of the index gets a tantivy document, with or
//! without text, so tantivy's document count can be checked against the manifest.
//!
//! tantivy commits on its own, before our manifest is replaced. A crash between the two
//! leaves tantivy documents with `ord >= manifest.doc_count`: readers skip those hits (they
//! ask tantivy for that many extra hits, so a top-k is still k long), and a writer reopening
//! the index deletes them before it appends (their ordinals will be reused).
//!
//! User queries are never parsed as tantivy query syntax: the text is run through the field's
//! own analyser and the resulting terms are OR'ed, so quotes, colons, `?`, `-` or an empty
//! string cannot produce a syntax error, and `effusions` matches `effusion` by stemming.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STORED,
    STRING,
};
use tantivy::{IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::error::{IndexError, Result};

const ORD: &str = "ord";
const ID: &str = "id";
const TEXT: &str = "text";
const ANALYZER: &str = "en_stem";
/// Indexing memory budget of the tantivy writer (split over its threads).
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
struct Fields {
    ord: Field,
    id: Field,
    text: Field,
}

fn schema() -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(ORD, NumericOptions::default().set_indexed().set_fast());
    builder.add_text_field(ID, STRING | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    builder.add_text_field(TEXT, TextOptions::default().set_indexing_options(indexing));
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
        let writer = index
            .writer(WRITER_MEMORY)
            .map_err(IndexError::tantivy(path))?;
        Ok(TextWriter {
            path: path.to_path_buf(),
            fields,
            writer,
        })
    }

    pub(crate) fn add(&mut self, ord: u32, id: &str, text: Option<&str>) -> Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_u64(self.fields.ord, u64::from(ord));
        doc.add_text(self.fields.id, id);
        if let Some(text) = text {
            doc.add_text(self.fields.text, text);
        }
        self.writer
            .add_document(doc)
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(())
    }

    /// tantivy's own durable commit.
    pub(crate) fn commit(&mut self) -> Result<()> {
        self.writer
            .commit()
            .map_err(IndexError::tantivy(&self.path))?;
        Ok(())
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
    /// How many leftover documents the snapshot holds (extra hits to ask for).
    excess: usize,
}

impl TextReader {
    pub(crate) fn open(path: &Path, doc_count: u64) -> Result<TextReader> {
        let index = open_index(path)?;
        let fields = fields(&index, path)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(IndexError::tantivy(path))?;
        let num_docs = reader.searcher().num_docs();
        if num_docs < doc_count {
            return Err(IndexError::corrupt(
                path,
                format!("text index holds {num_docs} documents, the manifest says {doc_count}"),
            ));
        }
        Ok(TextReader {
            path: path.to_path_buf(),
            index,
            fields,
            reader,
            doc_count,
            excess: (num_docs - doc_count) as usize,
        })
    }

    /// Distinct analysed terms of `query` (lower-cased, stemmed).
    fn terms(&self, query: &str) -> Result<Vec<String>> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.fields.text)
            .map_err(IndexError::tantivy(&self.path))?;
        let mut stream = analyzer.token_stream(query);
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        while stream.advance() {
            let text = &stream.token().text;
            if seen.insert(text.clone()) {
                terms.push(text.clone());
            }
        }
        Ok(terms)
    }

    /// BM25 top-k: (ordinal, score), best first.
    pub(crate) fn search(&self, query: &str, k: usize) -> Result<Vec<(u32, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let terms = self.terms(query)?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let term = Term::from_field_text(self.fields.text, t);
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let limit = k.saturating_add(self.excess);
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(IndexError::tantivy(&self.path))?;
        let mut columns = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            columns.push(
                segment
                    .fast_fields()
                    .u64(ORD)
                    .map_err(IndexError::tantivy(&self.path))?,
            );
        }
        let mut hits = Vec::with_capacity(k);
        for (score, addr) in top {
            let ord = columns
                .get(addr.segment_ord as usize)
                .and_then(|c| c.first(addr.doc_id))
                .ok_or_else(|| IndexError::corrupt(&self.path, "a text hit has no ordinal"))?;
            if ord < self.doc_count {
                hits.push((ord as u32, score));
                if hits.len() == k {
                    break;
                }
            }
        }
        Ok(hits)
    }
}
