//! The writing side: documents are validated and buffered in memory (records, the vector rows
//! added since the last commit, the HNSW graph, tantivy's in-memory segment); `commit` makes
//! them durable and visible.
//!
//! Vector rows live in segments. The *active* segment takes new rows: hnsw_rs builds its graph
//! in memory, with its own copy of each vector. When it reaches the index's `segment_rows`,
//! the writer *seals* it: its rows and its graph (as flat arrays) are written to files of their
//! own, the in-memory graph is dropped, and a new active segment starts. Sealed segments are
//! never rewritten (until [`IndexWriter::compact`]), and readers search each segment's graph
//! and merge the hits. So the writer's memory for vectors is bounded by the segment size, not
//! by the archive.
//!
//! A commit writes the *new generation's* files rather than appending to the previous ones.
//! Files a manifest names are therefore never modified, which lets readers memory-map them
//! without seeing them change, makes the length/CRC checks exact, and makes crash recovery
//! trivial (anything the manifest does not name is garbage). For the active segment this
//! means a rewrite (its committed rows are copied from the previous file, not held in
//! memory; the graph dump is a full rewrite anyway, as hnsw_rs has no incremental dump), so
//! commits should be batched (thousands of documents, or once at the end), not issued per
//! document. A reopened writer reads the active segment's graph dump only when a vector is
//! added, and a commit that added none keeps the segment's files as they are: a re-run that
//! finds nothing new, or a deletion, neither holds the graph nor rewrites it. The docs file
//! is split into parts: a commit writes one new part with the records it adds, merged with the last parts while those are no larger, so a record is rewritten
//! about log2(commits) times instead of at every commit (see `docs::WriterDocs`). A segment
//! sealed between two commits is written at once but named by a manifest only at the next
//! commit.
//!
//! What grows with the index while a writer is open: per document an offset, its row, a
//! deletion bit and a 64-bit hash of its id in a sorted run (about 24 bytes), and 12 bytes per
//! tracked field ([`IndexWriter::track_field`]). Each of these arrays moves into an unlinked
//! scratch file in the index folder, memory-mapped, once it passes a mebibyte
//! ([`scratch`](crate::scratch)), so the heap a writer holds stays bounded whatever the
//! archive's size, and the rest is page cache the kernel can drop; committed records
//! themselves stay on disk and are read back when asked for.
//! `cargo bench --bench writer_memory` measures each part per document.
//!
//! Commit order: tantivy commit -> new data files written and fsync'd -> folder fsync'd ->
//! manifest replaced atomically -> older generations' files deleted -> tantivy deletions of the
//! documents this commit deleted.
//!
//! Deletion turns a record into a tombstone (see `docs`); the tombstone in the docs file is
//! the truth, readers skip tombstoned ordinals in every search. The text index learns of a
//! deletion only after the manifest that records it is durable, so a crash can never leave
//! tantivy missing a live document; a crash in between leaves tantivy documents for
//! tombstones, which readers ignore and the next writer deletes again. Vectors and graph
//! points of deleted documents stay until [`IndexWriter::compact`] rewrites them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docs::{DocRecord, StoredDoc, WriterDocs};
use crate::error::{IndexError, Result};
use crate::flat::FlatGraph;
use crate::fsio;
use crate::graph::{self, HnswGraph, HnswParams};
use crate::layout;
use crate::manifest::{HnswFiles, IndexSpec, Manifest, SegmentFiles, DEFAULT_SEGMENT_ROWS};
use crate::text::TextWriter;
use crate::vectors::{self, VectorStorage};

/// Vectors are inserted into the graph in batches of this size (in parallel).
const GRAPH_BATCH: usize = crate::graph::PARALLEL_INSERT_FROM;

/// A document to add to the index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// Unique id: DICOM SOPInstanceUID, file stem, or report id.
    pub id: String,
    /// Image embedding with the index's dimension; `None` for report-only documents. It need
    /// not be normalised: [`IndexWriter::add`] scales it to unit length.
    pub vector: Option<Vec<f32>>,
    /// Report text, searchable with BM25; `None` when there is no report. For reports, what
    /// the report asserts: denied findings belong in `negated_text`.
    pub text: Option<String>,
    /// What the report denies ("no pneumothorax" gives "pneumothorax"), searchable apart from
    /// `text` ([`TextField::Negated`](crate::TextField)); `None` when nothing is denied.
    pub negated_text: Option<String>,
    /// Stored metadata and report sections, returned with results.
    pub fields: BTreeMap<String, String>,
}

/// What a commit made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The generation now named by the manifest.
    pub generation: u64,
    /// Live documents in the index after the commit.
    pub doc_count: usize,
    /// Vector rows after the commit (those of deleted documents included until compaction).
    pub vector_count: usize,
    /// Documents this commit added.
    pub added: usize,
    /// Documents this commit deleted.
    pub deleted: usize,
}

/// What [`IndexWriter::compact`] reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactInfo {
    /// Vector rows (and graph points) of deleted documents removed.
    pub vectors_removed: usize,
    /// Vector rows left.
    pub vector_count: usize,
    /// Bytes of the index's data files before and after (the text index included).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// One line of `errors.jsonl`: a source file that could not be indexed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The file (as given by the caller).
    pub path: String,
    /// Why it failed.
    pub reason: String,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// Reads the failure log of the index in `dir` (empty if none was written).
pub fn read_failures(dir: impl AsRef<Path>) -> Result<Vec<Failure>> {
    let path = dir.as_ref().join(layout::ERRORS);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IndexError::io(&path)(e)),
    };
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut failures = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(failure) => failures.push(failure),
            // A crash mid-append can leave a torn last line: skip it rather than fail.
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(IndexError::corrupt(&path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(failures)
}

/// What is fixed when an index is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    /// HNSW construction parameters.
    pub hnsw: HnswParams,
    /// How vector components are stored.
    pub vector_storage: VectorStorage,
    /// Rows per sealed segment ([`DEFAULT_SEGMENT_ROWS`] by default): what bounds the
    /// writer's memory. Smaller segments cost queries a graph search each.
    pub segment_rows: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            hnsw: HnswParams::default(),
            vector_storage: VectorStorage::default(),
            segment_rows: DEFAULT_SEGMENT_ROWS,
        }
    }
}

/// Adds documents to an index folder. Only one writer can hold an index at a time.
pub struct IndexWriter {
    dir: PathBuf,
    /// The last committed manifest.
    manifest: Manifest,
    docs: WriterDocs,
    /// Sealed segments, committed or sealed since the last commit, in row order.
    sealed: Vec<SegmentFiles>,
    /// Their rows: the active segment's first row.
    sealed_rows: usize,
    /// Segments sealed since the last commit (they number the next sealed files).
    sealed_since_commit: usize,
    /// Rows at the start of the active segment's committed vector file that the next
    /// generation's file copies (0 after a seal or a compaction).
    committed_rows: usize,
    /// Active rows added since then (row `sealed_rows + committed_rows + i`), unit-norm and
    /// already rounded to the storage. Committed rows are not held: a commit copies them from
    /// the committed file block by block.
    pending_vectors: Vec<f32>,
    /// The active segment's graph; `None` while it is still only the committed dump, which is
    /// loaded when the first vector is added: a run that adds none (a re-run over an indexed
    /// archive, a deletion) neither reads it into memory nor rewrites it.
    graph: Option<HnswGraph>,
    /// (row, ordinal) of vectors not yet inserted into the graph.
    graph_pending: Vec<(usize, usize)>,
    /// Ordinals deleted since the last commit.
    deleted_pending: Vec<u32>,
    text: TextWriter,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("dir", &self.dir)
            .field("generation", &self.manifest.generation)
            .field("docs", &self.docs.len())
            .finish_non_exhaustive()
    }
}

impl IndexWriter {
    /// Creates a new, empty index in `dir` (created if missing; it must be empty) with
    /// default HNSW parameters. The empty index is committed at once, so the folder can be
    /// opened by readers and writers from the start.
    pub fn create(dir: impl AsRef<Path>, spec: IndexSpec) -> Result<IndexWriter> {
        IndexWriter::create_with(dir, spec, CreateOptions::default())
    }

    /// [`IndexWriter::create`] with explicit HNSW construction parameters and vector storage,
    /// both fixed for the life of the index.
    pub fn create_with(
        dir: impl AsRef<Path>,
        spec: IndexSpec,
        options: CreateOptions,
    ) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        let CreateOptions {
            hnsw: params,
            vector_storage,
            segment_rows,
        } = options;
        params.validate()?;
        if segment_rows == 0 {
            return Err(IndexError::InvalidParams {
                reason: "segment_rows must be positive".into(),
            });
        }
        if spec.dim == 0 {
            return Err(IndexError::InvalidParams {
                reason: "spec.dim must be positive".into(),
            });
        }
        if dir.join(layout::MANIFEST).exists() {
            return Err(IndexError::AlreadyExists {
                path: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(IndexError::io(dir))?;
        let mut entries = std::fs::read_dir(dir).map_err(IndexError::io(dir))?;
        if entries.next().is_some() {
            return Err(IndexError::DirectoryNotEmpty {
                path: dir.to_path_buf(),
            });
        }
        let text = TextWriter::create(&dir.join(layout::TEXT_DIR))?;
        let manifest = Manifest::new(spec, params, vector_storage, segment_rows);
        manifest.write(dir)?;
        Ok(IndexWriter {
            dir: dir.to_path_buf(),
            graph: Some(HnswGraph::new(&params, 0)),
            manifest,
            docs: WriterDocs::new(dir),
            sealed: Vec::new(),
            sealed_rows: 0,
            sealed_since_commit: 0,
            committed_rows: 0,
            pending_vectors: Vec::new(),
            graph_pending: Vec::new(),
            deleted_pending: Vec::new(),
            text,
        })
    }

    /// Reopens an existing index to append to it, keeping its spec and parameters. The HNSW
    /// graph is reloaded from its dump (not rebuilt) when the first vector is added; text
    /// documents and files left by an unfinished commit are discarded.
    pub fn open(dir: impl AsRef<Path>) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        // Fail early with NotAnIndex before touching anything.
        let first = Manifest::read(dir)?;
        // Take tantivy's writer lock before reading the state we will build on, so no other
        // writer can commit between our read and our first commit.
        let mut text = TextWriter::open(&dir.join(&first.files.text_dir))?;
        let manifest = Manifest::read(dir)?;
        text.discard_from(manifest.doc_count)?;
        let docs = WriterDocs::load(dir, &manifest)?;
        // Deletions a crash kept from reaching tantivy (see the module documentation); for
        // tombstones tantivy already dropped this is a no-op at the next commit.
        text.delete_ords((0..docs.len() as u32).filter(|&ord| !docs.ords.is_live(ord)));
        let dim = manifest.spec.dim;
        let active = manifest.active_rows();
        let graph = match (&manifest.files.vectors, &manifest.files.hnsw) {
            (Some(entry), Some(hnsw)) => {
                // Checked now, not at the first commit that copies them, so that a damaged
                // index is refused before anything is added to it. Sealed segments are
                // only read again by a compaction, which checks them then.
                vectors::check_file(dir, entry, active, dim, manifest.vector_storage)?;
                verify_graph_files(dir, hnsw)?;
                None
            }
            _ => Some(HnswGraph::new(&manifest.hnsw, 0)),
        };
        let writer = IndexWriter {
            dir: dir.to_path_buf(),
            sealed: manifest.files.sealed.clone(),
            sealed_rows: manifest.sealed_rows() as usize,
            sealed_since_commit: 0,
            committed_rows: active as usize,
            manifest,
            docs,
            pending_vectors: Vec::new(),
            graph,
            graph_pending: Vec::new(),
            deleted_pending: Vec::new(),
            text,
        };
        writer.remove_unreferenced_files();
        Ok(writer)
    }

    /// How this index stores its vectors (set when it was created).
    pub fn vector_storage(&self) -> VectorStorage {
        self.manifest.vector_storage
    }

    /// The HNSW construction parameters (set when the index was created).
    pub fn hnsw_params(&self) -> HnswParams {
        self.manifest.hnsw
    }

    /// Rows at which the active segment is sealed (set when the index was created).
    pub fn segment_rows(&self) -> u64 {
        self.manifest.segment_rows
    }

    /// The folder of this index.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Dimension and model of the index.
    pub fn spec(&self) -> &IndexSpec {
        &self.manifest.spec
    }

    /// Number of live documents, committed or not.
    pub fn len(&self) -> usize {
        self.docs.ords.live()
    }

    /// True when the index holds no live documents (committed or not).
    pub fn is_empty(&self) -> bool {
        self.docs.ords.live() == 0
    }

    /// Number of documents added since the last commit.
    pub fn pending(&self) -> usize {
        self.docs.len() - self.manifest.doc_count as usize
    }

    /// True when a live document with this id was added (committed or not). Errors when a
    /// committed record cannot be read back from its file.
    pub fn contains(&self, id: &str) -> Result<bool> {
        Ok(self.docs.ord_of(id)?.is_some())
    }

    /// Keeps a table of the values of stored field `name` from now on, so that
    /// [`find_by_field`](Self::find_by_field) answers without a scan: 12 bytes per document
    /// holding the field, where a map of the values would hold the values themselves. Reads
    /// every record once; tracking a field twice does nothing.
    pub fn track_field(&mut self, name: &str) -> Result<()> {
        self.docs.track_field(name)
    }

    /// The ordinals of the live documents (committed or not) whose stored field `name` equals
    /// `value`, in ordinal order. Errors unless [`track_field`](Self::track_field) was
    /// called for `name`, or when a record cannot be read back.
    pub fn find_by_field(&self, name: &str, value: &str) -> Result<Vec<u32>> {
        self.docs
            .find_by_field(name, value)?
            .ok_or_else(|| IndexError::InvalidQuery {
                reason: format!("field `{name}` is not tracked by this writer (track_field)"),
            })
    }

    /// Ids of the live documents (committed or not), in ordinal order, read back from the
    /// docs file as the walk goes.
    pub fn ids(&self) -> impl Iterator<Item = Result<String>> + '_ {
        self.docs.live_records().map(|r| r.map(|doc| doc.id))
    }

    /// Deletes the document with this id from all three stores: it disappears from every
    /// search at the next [`commit`](Self::commit); its id may then be added again. Returns
    /// false when no live document has this id. Its vector and graph point stay on disk until
    /// [`compact`](Self::compact).
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        let Some(ord) = self.docs.ord_of(id)? else {
            return Ok(false);
        };
        let deleted = self.docs.delete(ord)?;
        if deleted {
            self.deleted_pending.push(ord);
        }
        Ok(deleted)
    }

    /// The stored fields of the document with this id (committed or not), `None` when no
    /// such document was added. Lets a caller tell a re-run of the same source from a
    /// different source whose id clashes.
    pub fn doc_fields(&self, id: &str) -> Result<Option<BTreeMap<String, String>>> {
        let Some(ord) = self.docs.ord_of(id)? else {
            return Ok(None);
        };
        Ok(self.docs.record(ord as usize)?.map(|doc| doc.fields))
    }

    /// The live document with ordinal `ord` (committed or not), `None` when there is none
    /// (deleted, or never added).
    pub fn record(&self, ord: u32) -> Result<Option<StoredDoc>> {
        if ord as usize >= self.docs.len() {
            return Ok(None);
        }
        self.docs.record(ord as usize)
    }

    /// Every live document (committed or not), in ordinal order. Committed records are read
    /// back from the docs file as the walk goes: walk it once.
    pub fn records(&self) -> impl Iterator<Item = Result<StoredDoc>> + '_ {
        self.docs.live_records()
    }

    /// Adds a document and returns its ordinal. Nothing is durable or visible to readers
    /// before [`commit`](Self::commit).
    ///
    /// Errors (and the index is unchanged) on an empty or duplicate id, a vector of the wrong
    /// dimension, or a vector with NaN/infinite components or zero norm. Vectors are scaled
    /// to unit L2 norm, so search scores are cosine similarities.
    pub fn add(&mut self, doc: Document) -> Result<u32> {
        let Document {
            id,
            vector,
            text,
            negated_text,
            fields,
        } = doc;
        if id.is_empty() {
            return Err(IndexError::InvalidDocument {
                id,
                reason: "the id is empty".into(),
            });
        }
        if self.contains(&id)? {
            return Err(IndexError::DuplicateId { id });
        }
        if self.docs.len() >= u32::MAX as usize {
            return Err(IndexError::InvalidDocument {
                id,
                reason: "the index is full (u32 ordinals)".into(),
            });
        }
        let vector = match vector {
            Some(mut v) => {
                let expected = self.manifest.spec.dim;
                if v.len() != expected {
                    return Err(IndexError::WrongDimension {
                        expected,
                        found: v.len(),
                    });
                }
                if let Err(reason) = vectors::normalize(&mut v) {
                    return Err(IndexError::InvalidVector { id, reason });
                }
                self.manifest.vector_storage.round(&mut v);
                Some(v)
            }
            None => None,
        };
        // Loaded and sealed before anything changes, so that a failure leaves the index as it
        // was.
        if vector.is_some() {
            self.ensure_graph_loaded()?;
            if self.active_full() {
                self.seal()?;
            }
        }
        let ord = self.docs.len() as u32;
        self.text
            .add(ord, &id, text.as_deref(), negated_text.as_deref())?;
        let row = vector.map(|v| {
            let row = self.docs.ords.row_to_ord().len();
            self.pending_vectors.extend_from_slice(&v);
            self.graph_pending.push((row, ord as usize));
            row as u32
        });
        self.docs.push(DocRecord {
            id,
            fields,
            row,
            deleted: false,
        })?;
        if self.graph_pending.len() >= GRAPH_BATCH {
            self.flush_graph()?;
        }
        Ok(ord)
    }

    /// Vector rows of the active segment, committed or not: what each commit rewrites (its
    /// rows, and its graph as hnsw_rs's dump and as flat arrays), so a caller can space its
    /// commits in proportion.
    pub fn active_rows(&self) -> usize {
        self.committed_rows + self.pending_vectors.len() / self.manifest.spec.dim
    }

    fn active_full(&self) -> bool {
        self.active_rows() as u64 >= self.manifest.segment_rows
    }

    /// The committed part of the active segment that its next file copies.
    fn committed_prefix(&self) -> Result<Option<(&crate::manifest::FileEntry, usize)>> {
        match (self.committed_rows, &self.manifest.files.vectors) {
            (0, _) => Ok(None),
            (rows, Some(entry)) => Ok(Some((entry, rows))),
            (rows, None) => Err(IndexError::corrupt(
                self.dir.join(layout::MANIFEST),
                format!("{rows} vectors are committed but no vector file is named"),
            )),
        }
    }

    /// Writes the active segment's rows and graph as a sealed segment and starts an empty
    /// active segment. The files are named by the next commit's manifest; until then they
    /// are leftovers that a writer opening the folder removes.
    fn seal(&mut self) -> Result<()> {
        self.ensure_graph_loaded()?;
        self.flush_graph()?;
        let rows = self.active_rows();
        if rows == 0 {
            return Ok(());
        }
        let dim = self.manifest.spec.dim;
        let storage = self.manifest.vector_storage;
        let gen = self.manifest.generation + 1;
        let k = self.sealed_since_commit;
        let vectors = vectors::write(
            &self.dir,
            &layout::segment_vectors_file(gen, k, storage),
            self.committed_prefix()?,
            &self.pending_vectors,
            dim,
            storage,
        )?;
        // hnsw_rs keeps its entry point to itself without a dump; any point of the top layer
        // is as good a start (see `FlatGraph::encode`).
        let flat_graph = self.write_flat_graph(None, &layout::segment_graph_file(gen, k))?;
        self.sealed.push(SegmentFiles {
            rows: rows as u64,
            vectors,
            flat_graph,
        });
        self.sealed_rows += rows;
        self.sealed_since_commit += 1;
        self.committed_rows = 0;
        self.pending_vectors = Vec::new();
        self.graph = Some(HnswGraph::new(&self.manifest.hnsw, 0));
        Ok(())
    }

    /// Writes the active segment's graph as flat file `name` (see [`crate::flat`]).
    fn write_flat_graph(
        &self,
        entry: Option<(usize, u8, i32)>,
        name: &str,
    ) -> Result<crate::manifest::FileEntry> {
        let words = flat_words(
            self.loaded_graph()?,
            entry,
            &|ord| self.docs.ords.row(ord),
            self.sealed_rows,
        )
        .map_err(|reason| IndexError::Hnsw {
            path: self.dir.join(name),
            reason,
        })?;
        FlatGraph::write(&self.dir, name, &words)
    }

    /// Reads the committed graph dump into memory, once: before a vector joins it. Its
    /// checksums were verified when the writer opened.
    fn ensure_graph_loaded(&mut self) -> Result<()> {
        if self.graph.is_none() {
            let graph = match &self.manifest.files.hnsw {
                Some(files) => read_graph(
                    &self.dir,
                    files,
                    self.committed_rows as u64,
                    self.manifest.spec.dim,
                )?,
                None => HnswGraph::new(&self.manifest.hnsw, 0),
            };
            self.graph = Some(graph);
        }
        Ok(())
    }

    /// The active segment's graph, which [`Self::ensure_graph_loaded`] must have read.
    fn loaded_graph(&self) -> Result<&HnswGraph> {
        self.graph
            .as_ref()
            .ok_or_else(|| graph_not_loaded(&self.dir))
    }

    fn flush_graph(&mut self) -> Result<()> {
        if self.graph_pending.is_empty() {
            return Ok(());
        }
        self.ensure_graph_loaded()?;
        let Some(graph) = self.graph.as_mut() else {
            return Err(graph_not_loaded(&self.dir));
        };
        let dim = self.manifest.spec.dim;
        let base = self.sealed_rows + self.committed_rows;
        // Rows waiting for the graph are pending rows (added since the last commit).
        let items: Vec<(&[f32], usize)> = self
            .graph_pending
            .iter()
            .map(|&(row, ord)| {
                let at = (row - base) * dim;
                (&self.pending_vectors[at..at + dim], ord)
            })
            .collect();
        graph.insert(&items);
        self.graph_pending.clear();
        Ok(())
    }

    /// Appends a line `{"path", "reason", "time"}` to `errors.jsonl` in the index folder, at
    /// once (not tied to commits): a file that failed stays reported even if the run dies.
    pub fn record_failure(&mut self, path: &str, reason: &str) -> Result<()> {
        let log = self.dir.join(layout::ERRORS);
        let failure = Failure {
            path: path.to_string(),
            reason: reason.to_string(),
            time: fsio::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&failure)
            .map_err(|e| IndexError::corrupt(&log, format!("cannot serialise failure: {e}")))?;
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(&line))
            .map_err(IndexError::io(&log))
    }

    /// Makes everything added so far durable and visible to readers opened afterwards.
    /// A no-op when nothing was added since the last commit. On error the previous commit
    /// stays intact and the added documents stay pending, so `commit` can be retried.
    pub fn commit(&mut self) -> Result<CommitInfo> {
        let added = self.pending();
        let deleted = self.deleted_pending.len();
        if added == 0 && deleted == 0 {
            return Ok(self.info(0, 0));
        }
        self.flush_graph()?;
        if self.active_full() {
            self.seal()?;
        }
        self.text.commit()?;
        self.write_generation()?;
        // The tombstones are durable: now tantivy may forget those documents. Best effort: a
        // failure here leaves tantivy documents that readers skip and the next writer deletes.
        let ords = std::mem::take(&mut self.deleted_pending);
        self.text.delete_ords(ords);
        let _ = self.text.commit();
        Ok(self.info(added, deleted))
    }

    /// Rewrites what deletions left behind: the vector rows and graph points of deleted
    /// documents (every segment's graph is rebuilt from the live vectors, which takes about as
    /// long as building them did; segments are refilled to the index's segment size), and the
    /// text index's deleted documents (its segments are merged into one). Commits anything
    /// pending first. Ordinals do not change, so tombstone records stay (a few bytes each).
    /// Readers opened before keep their snapshot. Memory stays bounded by one segment: the old
    /// segments are read one at a time.
    pub fn compact(&mut self) -> Result<CompactInfo> {
        self.commit()?;
        let bytes_before = self.data_bytes();
        let dead_rows = (0..self.docs.len())
            .filter(|&ord| !self.docs.ords.is_live(ord as u32) && self.docs.ords.row(ord).is_some())
            .count();
        if dead_rows == 0 {
            self.text.merge_all()?;
            return Ok(CompactInfo {
                vectors_removed: 0,
                vector_count: self.docs.ords.row_to_ord().len(),
                bytes_before,
                bytes_after: self.data_bytes(),
            });
        }
        let dim = self.manifest.spec.dim;
        let storage = self.manifest.vector_storage;
        // The committed segments, in row order (everything is committed, above).
        let mut sources: Vec<(crate::manifest::FileEntry, u64)> = self
            .manifest
            .files
            .sealed
            .iter()
            .map(|s| (s.vectors.clone(), s.rows))
            .collect();
        if let Some(entry) = &self.manifest.files.vectors {
            sources.push((entry.clone(), self.manifest.active_rows()));
        }
        let old_rows = self.docs.ords.row_to_ord().to_vec();
        let removed = self.docs.renumber_rows();
        // The next generation holds the live rows alone, in new segments.
        self.sealed = Vec::new();
        self.sealed_rows = 0;
        self.sealed_since_commit = 0;
        self.committed_rows = 0;
        self.pending_vectors = Vec::new();
        let live_rows = self.docs.ords.row_to_ord().len();
        let capacity = live_rows.min(self.manifest.segment_rows as usize);
        self.graph = Some(HnswGraph::new(&self.manifest.hnsw, capacity));
        self.graph_pending.clear();
        let mut old_row = 0usize;
        let mut new_row = 0usize;
        for (entry, rows) in sources {
            let data = vectors::read_all(&self.dir, &entry, rows, dim, storage)?;
            for v in data.chunks_exact(dim) {
                let ord = old_rows.get(old_row).copied().ok_or_else(|| {
                    IndexError::corrupt(
                        self.dir.join(&entry.name),
                        format!("row {old_row} belongs to no document"),
                    )
                })?;
                old_row += 1;
                if !self.docs.ords.is_live(ord) {
                    continue;
                }
                if self.active_full() {
                    self.seal()?;
                }
                self.pending_vectors.extend_from_slice(v);
                self.graph_pending.push((new_row, ord as usize));
                new_row += 1;
                if self.graph_pending.len() >= GRAPH_BATCH {
                    self.flush_graph()?;
                }
            }
        }
        self.flush_graph()?;
        self.text.merge_all()?;
        self.write_generation()?;
        Ok(CompactInfo {
            vectors_removed: removed,
            vector_count: live_rows,
            bytes_before,
            bytes_after: self.data_bytes(),
        })
    }

    /// Total size of the files of the committed generation and of the text folder.
    fn data_bytes(&self) -> u64 {
        let files = &self.manifest.files;
        let mut total: u64 = self
            .manifest
            .docs_files()
            .chain(files.vectors.as_ref())
            .chain(files.hnsw.iter().flat_map(|h| [&h.graph, &h.data]))
            .chain(files.flat_graph.iter())
            .chain(
                files
                    .sealed
                    .iter()
                    .flat_map(|s| [&s.vectors, &s.flat_graph]),
            )
            .map(|e| e.len)
            .sum();
        if let Ok(entries) = std::fs::read_dir(self.dir.join(&files.text_dir)) {
            total += entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>();
        }
        total
    }

    /// Writes the in-memory state as the next generation and replaces the manifest.
    fn write_generation(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let gen = self.manifest.generation + 1;
        let dim = self.manifest.spec.dim;
        let vector_count = self.docs.ords.row_to_ord().len();
        let active = vector_count - self.sealed_rows;
        debug_assert_eq!(self.active_rows(), active);
        let mut next = self.manifest.clone();
        next.format_version = crate::manifest::FORMAT_VERSION;
        next.generation = gen;
        next.doc_count = self.docs.len() as u64;
        next.deleted_count = self.docs.ords.deleted() as u64;
        next.vector_count = vector_count as u64;
        let current_docs: Vec<_> = self.manifest.docs_files().cloned().collect();
        let staged_docs = self.docs.write_part(&layout::docs_file(gen))?;
        next.files.docs = None;
        next.files.docs_parts = staged_docs.files(&current_docs);
        next.files.sealed = self.sealed.clone();
        if active > 0 && self.graph.is_none() {
            // No vector joined the active segment since it was committed (its graph was never
            // loaded): its files stand as they are.
            next.files.vectors = self.manifest.files.vectors.clone();
            next.files.hnsw = self.manifest.files.hnsw.clone();
            next.files.flat_graph = self.manifest.files.flat_graph.clone();
        } else if active > 0 {
            let storage = self.manifest.vector_storage;
            next.files.vectors = Some(vectors::write(
                &dir,
                &layout::vectors_file(gen, storage),
                self.committed_prefix()?,
                &self.pending_vectors,
                dim,
                storage,
            )?);
            let basename = self
                .loaded_graph()?
                .dump(&dir, &layout::hnsw_basename(gen))?;
            next.files.hnsw = Some(HnswFiles {
                graph: fsio::describe_and_sync(
                    &dir,
                    &format!("{basename}{}", layout::HNSW_GRAPH_SUFFIX),
                )?,
                data: fsio::describe_and_sync(
                    &dir,
                    &format!("{basename}{}", layout::HNSW_DATA_SUFFIX),
                )?,
                basename: basename.clone(),
            });
            let entry = graph::dump_entry_point(
                &dir.join(format!("{basename}{}", layout::HNSW_GRAPH_SUFFIX)),
            );
            next.files.flat_graph =
                Some(self.write_flat_graph(entry, &layout::flat_graph_file(gen))?);
        } else {
            next.files.vectors = None;
            next.files.hnsw = None;
            next.files.flat_graph = None;
        }
        next.updated = fsio::now_rfc3339();
        fsio::sync_dir(&dir)?;
        next.write(&dir)?;
        self.manifest = next;
        self.docs.committed(staged_docs);
        self.committed_rows = active;
        self.pending_vectors = Vec::new();
        self.sealed_since_commit = 0;
        self.remove_unreferenced_files();
        Ok(())
    }

    fn info(&self, added: usize, deleted: usize) -> CommitInfo {
        CommitInfo {
            generation: self.manifest.generation,
            doc_count: (self.manifest.doc_count - self.manifest.deleted_count) as usize,
            vector_count: self.manifest.vector_count as usize,
            added,
            deleted,
        }
    }

    /// Deletes generation files the committed manifest does not name (older generations and
    /// leftovers of a failed commit). Best effort: a file that cannot be deleted now (e.g.
    /// still mapped on a platform that forbids it) is retried at the next commit.
    fn remove_unreferenced_files(&self) {
        let keep = self.manifest.referenced_files();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if layout::is_generation_file(name) && !keep.iter().any(|k| k == name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The flat encoding of an hnsw_rs graph (see [`crate::flat`]) over a segment whose first
/// row is `first_row`: node rows are local to the segment. `row_of(ord)`: a document's row.
pub(crate) fn flat_words(
    graph: &HnswGraph,
    entry: Option<(usize, u8, i32)>,
    row_of: &dyn Fn(usize) -> Option<u32>,
    first_row: usize,
) -> std::result::Result<Vec<u32>, String> {
    let snapshot = graph.snapshot(|_, _| {})?;
    FlatGraph::encode(&snapshot, entry, |ord| {
        row_of(ord)?.checked_sub(u32::try_from(first_row).ok()?)
    })
}

/// A writer's own logic error, named rather than panicking.
fn graph_not_loaded(dir: &Path) -> IndexError {
    IndexError::Hnsw {
        path: dir.to_path_buf(),
        reason: "the active segment's graph was used before it was loaded".into(),
    }
}

/// Reloads and checks the graph dump named by the manifest.
pub(crate) fn load_graph(
    dir: &Path,
    files: &HnswFiles,
    rows: u64,
    dim: usize,
) -> Result<HnswGraph> {
    verify_graph_files(dir, files)?;
    read_graph(dir, files, rows, dim)
}

/// The dump's files against the lengths and CRC-32s the manifest records.
fn verify_graph_files(dir: &Path, files: &HnswFiles) -> Result<()> {
    fsio::verify_file(dir, &files.graph)?;
    fsio::verify_file(dir, &files.data)
}

/// Reads a dump whose files were verified, and checks its size against the manifest's.
fn read_graph(dir: &Path, files: &HnswFiles, rows: u64, dim: usize) -> Result<HnswGraph> {
    let graph = HnswGraph::load(dir, &files.basename)?;
    let path = dir.join(&files.graph.name);
    if graph.len() as u64 != rows || graph.dim() != dim {
        return Err(IndexError::corrupt(
            path,
            format!(
                "graph holds {} points of dimension {}, expected {rows} of dimension {dim}",
                graph.len(),
                graph.dim()
            ),
        ));
    }
    Ok(graph)
}
