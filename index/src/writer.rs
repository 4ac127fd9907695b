//! The writing side: documents are validated and buffered in memory (records, vector rows, the
//! HNSW graph, tantivy's in-memory segment); `commit` makes them durable and visible.
//!
//! A commit writes the *new generation's* files (docs, vectors, graph dump) in full rather than
//! appending to the previous ones. Files a manifest names are therefore never modified, which
//! lets readers memory-map them without seeing them change, makes the length/CRC checks exact,
//! and makes crash recovery trivial (anything the manifest does not name is garbage). The cost
//! is that a commit rewrites all vectors; the graph dump is a full rewrite anyway (hnsw_rs has
//! no incremental dump), so commits should be batched (thousands of documents, or once at the
//! end), not issued per document.
//!
//! Commit order: tantivy commit -> new data files written and fsync'd -> folder fsync'd ->
//! manifest replaced atomically -> older generations' files deleted.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docs::{DocRecord, DocTable};
use crate::error::{IndexError, Result};
use crate::fsio;
use crate::graph::{HnswGraph, HnswParams};
use crate::layout;
use crate::manifest::{FileEntry, HnswFiles, IndexSpec, Manifest};
use crate::text::TextWriter;
use crate::vectors;

/// Vectors are inserted into the graph in batches of this size (in parallel).
const GRAPH_BATCH: usize = 1024;

/// A document to add to the index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// Unique id: DICOM SOPInstanceUID, file stem, or report id.
    pub id: String,
    /// Image embedding with the index's dimension; `None` for report-only documents. It need
    /// not be normalised: [`IndexWriter::add`] scales it to unit length.
    pub vector: Option<Vec<f32>>,
    /// Report text, searchable with BM25; `None` when there is no report.
    pub text: Option<String>,
    /// Stored metadata and report sections, returned with results.
    pub fields: BTreeMap<String, String>,
}

/// What a commit made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The generation now named by the manifest.
    pub generation: u64,
    /// Documents in the index after the commit.
    pub doc_count: usize,
    /// Documents with a vector after the commit.
    pub vector_count: usize,
    /// Documents this commit added.
    pub added: usize,
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

/// Adds documents to an index folder. Only one writer can hold an index at a time.
pub struct IndexWriter {
    dir: PathBuf,
    /// The last committed manifest.
    manifest: Manifest,
    docs: DocTable,
    /// All vector rows (committed and pending), unit-norm.
    vectors: Vec<f32>,
    graph: HnswGraph,
    /// (row, ordinal) of vectors not yet inserted into the graph.
    graph_pending: Vec<(usize, usize)>,
    text: TextWriter,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexWriter")
            .field("dir", &self.dir)
            .field("generation", &self.manifest.generation)
            .field("docs", &self.docs.records.len())
            .finish_non_exhaustive()
    }
}

impl IndexWriter {
    /// Creates a new, empty index in `dir` (created if missing; it must be empty) with
    /// default HNSW parameters. The empty index is committed at once, so the folder can be
    /// opened by readers and writers from the start.
    pub fn create(dir: impl AsRef<Path>, spec: IndexSpec) -> Result<IndexWriter> {
        IndexWriter::create_with(dir, spec, HnswParams::default())
    }

    /// [`IndexWriter::create`] with explicit HNSW construction parameters.
    pub fn create_with(
        dir: impl AsRef<Path>,
        spec: IndexSpec,
        params: HnswParams,
    ) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        params.validate()?;
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
        let manifest = Manifest::new(spec, params);
        manifest.write(dir)?;
        Ok(IndexWriter {
            dir: dir.to_path_buf(),
            graph: HnswGraph::new(&params, 0),
            manifest,
            docs: DocTable::default(),
            vectors: Vec::new(),
            graph_pending: Vec::new(),
            text,
        })
    }

    /// Reopens an existing index to append to it, keeping its spec and parameters. The HNSW
    /// graph is reloaded from its dump (not rebuilt); text documents and files left by an
    /// unfinished commit are discarded.
    pub fn open(dir: impl AsRef<Path>) -> Result<IndexWriter> {
        let dir = dir.as_ref();
        // Fail early with NotAnIndex before touching anything.
        let first = Manifest::read(dir)?;
        // Take tantivy's writer lock before reading the state we will build on, so no other
        // writer can commit between our read and our first commit.
        let mut text = TextWriter::open(&dir.join(&first.files.text_dir))?;
        let manifest = Manifest::read(dir)?;
        text.discard_from(manifest.doc_count)?;
        let docs = DocTable::load(dir, &manifest)?;
        let dim = manifest.spec.dim;
        let (vectors, graph) = match (&manifest.files.vectors, &manifest.files.hnsw) {
            (Some(entry), Some(hnsw)) => {
                let vectors = vectors::read_all(dir, entry, manifest.vector_count, dim)?;
                let graph = load_graph(dir, hnsw, manifest.vector_count, dim)?;
                (vectors, graph)
            }
            _ => (Vec::new(), HnswGraph::new(&manifest.hnsw, 0)),
        };
        let writer = IndexWriter {
            dir: dir.to_path_buf(),
            manifest,
            docs,
            vectors,
            graph,
            graph_pending: Vec::new(),
            text,
        };
        writer.remove_unreferenced_files();
        Ok(writer)
    }

    /// The folder of this index.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Dimension and model of the index.
    pub fn spec(&self) -> &IndexSpec {
        &self.manifest.spec
    }

    /// Number of documents, committed or not.
    pub fn len(&self) -> usize {
        self.docs.records.len()
    }

    /// True when the index holds no documents (committed or not).
    pub fn is_empty(&self) -> bool {
        self.docs.records.is_empty()
    }

    /// Number of documents added since the last commit.
    pub fn pending(&self) -> usize {
        self.docs.records.len() - self.manifest.doc_count as usize
    }

    /// True when a document with this id was added (committed or not).
    pub fn contains(&self, id: &str) -> bool {
        self.docs.by_id.contains_key(id)
    }

    /// The stored fields of the document with this id (committed or not), `None` when no
    /// such document was added. Lets a caller tell a re-run of the same source from a
    /// different source whose id clashes.
    pub fn doc_fields(&self, id: &str) -> Option<&BTreeMap<String, String>> {
        let ord = *self.docs.by_id.get(id)?;
        self.docs.records.get(ord as usize).map(|r| &r.fields)
    }

    /// The stored fields of every document added (committed or not), in ordinal order.
    pub fn fields(&self) -> impl Iterator<Item = &BTreeMap<String, String>> {
        self.docs.records.iter().map(|r| &r.fields)
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
            fields,
        } = doc;
        if id.is_empty() {
            return Err(IndexError::InvalidDocument {
                id,
                reason: "the id is empty".into(),
            });
        }
        if self.contains(&id) {
            return Err(IndexError::DuplicateId { id });
        }
        if self.docs.records.len() >= u32::MAX as usize {
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
                Some(v)
            }
            None => None,
        };
        let ord = self.docs.records.len() as u32;
        self.text.add(ord, &id, text.as_deref())?;
        let row = vector.map(|v| {
            let row = self.docs.row_to_ord.len();
            self.vectors.extend_from_slice(&v);
            self.graph_pending.push((row, ord as usize));
            row as u32
        });
        self.docs.push(DocRecord { id, fields, row });
        if self.graph_pending.len() >= GRAPH_BATCH {
            self.flush_graph();
        }
        Ok(ord)
    }

    fn flush_graph(&mut self) {
        if self.graph_pending.is_empty() {
            return;
        }
        let dim = self.manifest.spec.dim;
        let items: Vec<(&[f32], usize)> = self
            .graph_pending
            .iter()
            .map(|&(row, ord)| (&self.vectors[row * dim..(row + 1) * dim], ord))
            .collect();
        self.graph.insert(&items);
        self.graph_pending.clear();
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
        if added == 0 {
            return Ok(self.info(0));
        }
        self.flush_graph();
        self.text.commit()?;

        let dir = self.dir.clone();
        let gen = self.manifest.generation + 1;
        let dim = self.manifest.spec.dim;
        let vector_count = self.docs.row_to_ord.len();
        let mut next = self.manifest.clone();
        next.generation = gen;
        next.doc_count = self.docs.records.len() as u64;
        next.vector_count = vector_count as u64;
        next.files.docs = Some(self.docs.write(&dir, &layout::docs_file(gen))?);
        if vector_count > 0 {
            debug_assert_eq!(self.vectors.len(), vector_count * dim);
            next.files.vectors = Some(vectors::write(
                &dir,
                &layout::vectors_file(gen),
                &self.vectors,
            )?);
            let basename = self.graph.dump(&dir, &layout::hnsw_basename(gen))?;
            next.files.hnsw = Some(HnswFiles {
                graph: fsio::describe_and_sync(
                    &dir,
                    &format!("{basename}{}", layout::HNSW_GRAPH_SUFFIX),
                )?,
                data: fsio::describe_and_sync(
                    &dir,
                    &format!("{basename}{}", layout::HNSW_DATA_SUFFIX),
                )?,
                basename,
            });
        }
        next.updated = fsio::now_rfc3339();
        fsio::sync_dir(&dir)?;
        next.write(&dir)?;
        self.manifest = next;
        self.remove_unreferenced_files();
        Ok(self.info(added))
    }

    fn info(&self, added: usize) -> CommitInfo {
        CommitInfo {
            generation: self.manifest.generation,
            doc_count: self.manifest.doc_count as usize,
            vector_count: self.manifest.vector_count as usize,
            added,
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

/// Reloads and checks the graph dump named by the manifest.
pub(crate) fn load_graph(
    dir: &Path,
    files: &HnswFiles,
    rows: u64,
    dim: usize,
) -> Result<HnswGraph> {
    let check = |entry: &FileEntry| -> Result<()> { fsio::read_verified(dir, entry).map(|_| ()) };
    check(&files.graph)?;
    check(&files.data)?;
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
