//! `manifest.json`, the single commit point of an index. Whatever it names is the index; files
//! it does not name are leftovers of an unfinished commit or of an older generation.
//!
//! The manifest must stay readable by later versions of this crate, so optional fields carry
//! `#[serde(default)]`, unknown fields are ignored, and the format version is read on its own
//! before the rest is parsed: a newer, unknown version becomes a typed
//! [`IndexError::FormatVersion`](crate::IndexError::FormatVersion) rather than a parse error.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};
use crate::fsio;
use crate::graph::HnswParams;
use crate::layout;
use crate::vectors::VectorStorage;

/// The format version this build writes.
///
/// Version 2 added deletion: tombstone records in the docs file and `deleted_count`. A version 1
/// folder is a version 2 folder without deletions, so it is read as is and upgraded in place by
/// the next commit. Version 3 added `vector_storage` (f16 vector files); versions 1 and 2 store
/// f32, which is what the field defaults to, so they are read as is too. Version 4 added sealed
/// vector segments (`files.sealed`, `segment_rows`); an older folder is one whose rows all lie
/// in the active segment, so it is read as is. Version 5 splits the docs file into parts
/// (`files.docs_parts`) so that a commit writes the new records, not all of them; an older
/// folder's single `files.docs` is read as the first part.
pub const FORMAT_VERSION: u32 = 5;

/// The active segment is sealed when it holds this many rows, unless the index was created
/// with another [`CreateOptions::segment_rows`](crate::CreateOptions). At dimension 128 the
/// writer holds about 2 KiB per active row (hnsw_rs's graph and copy of the vector), so about
/// 1 GiB at this size; an archive of a million images is searched as two or three graphs.
pub const DEFAULT_SEGMENT_ROWS: u64 = 500_000;
/// The oldest format version this build can still read.
pub const OLDEST_READABLE_FORMAT_VERSION: u32 = 1;

/// What every vector in an index must match: dimension and the model that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Number of components of every image embedding.
    pub dim: usize,
    /// Identifies the exact model weights and preprocessing; queries must come from the same.
    pub model_fingerprint: String,
    /// Human-readable model name, shown in error messages.
    pub model_name: String,
}

/// One data file named by the manifest, with what it must look like when read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name relative to the index folder.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// The two files of an hnsw_rs graph dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswFiles {
    /// The dump basename (hnsw_rs appends `.hnsw.graph` and `.hnsw.data`).
    pub basename: String,
    /// The graph file.
    pub graph: FileEntry,
    /// The data file (hnsw_rs keeps its own copy of the vectors).
    pub data: FileEntry,
}

/// A sealed vector segment: a run of consecutive vector rows with their own HNSW graph, written
/// once when the writer's active segment filled up and never rewritten after (until
/// [`IndexWriter::compact`](crate::IndexWriter::compact)). Segments keep the writer's memory
/// bounded by the segment size, not the archive, and spare each commit from copying every
/// row; readers search each segment's graph and merge the hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFiles {
    /// Rows in the segment. Its first row is the sum of the rows of the segments before it.
    pub rows: u64,
    /// The rows, encoded as `Manifest::vector_storage` says.
    pub vectors: FileEntry,
    /// The segment's graph as flat arrays (see `flat.rs`), rows local to the segment.
    pub flat_graph: FileEntry,
}

/// The data files of the current generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFiles {
    /// Per-document records, one JSON object per line, in ordinal order: the docs file of
    /// folders written before format 5 (see [`DataFiles::docs_parts`]). `None` in later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<FileEntry>,
    /// The docs file as consecutive parts: read one after the other, they give the records
    /// in ordinal order. A commit writes one new part with the records it adds, merged with
    /// the last parts while those are no larger (so parts grow geometrically, a record is
    /// rewritten about log2(commits) times, and an index has a few parts); a deletion
    /// rewrites the part holding the record and those after it. Empty while the index has
    /// no documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs_parts: Vec<FileEntry>,
    /// Sealed vector segments, in row order: rows `0..` of the index. Empty in indexes
    /// written before segments existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<SegmentFiles>,
    /// The active segment's vector rows (those after the sealed segments' rows),
    /// little-endian, as `Manifest::vector_storage` says. `None` while it is empty.
    #[serde(default)]
    pub vectors: Option<FileEntry>,
    /// The HNSW graph over the active segment's rows: the writer's copy, reloaded to append.
    /// `None` while the active segment is empty.
    #[serde(default)]
    pub hnsw: Option<HnswFiles>,
    /// The same graph as flat arrays, which readers map and search in place. Absent in
    /// indexes written before it existed: readers then convert the hnsw_rs dump at open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_graph: Option<FileEntry>,
    /// The tantivy folder. tantivy manages its own files and commits.
    #[serde(default = "default_text_dir")]
    pub text_dir: String,
}

impl Default for DataFiles {
    fn default() -> Self {
        DataFiles {
            docs: None,
            docs_parts: Vec::new(),
            sealed: Vec::new(),
            vectors: None,
            hnsw: None,
            flat_graph: None,
            text_dir: default_text_dir(),
        }
    }
}

fn default_segment_rows() -> u64 {
    DEFAULT_SEGMENT_ROWS
}

fn default_text_dir() -> String {
    layout::TEXT_DIR.to_string()
}

/// The content of `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the folder (see [`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Commit counter; data files carry it in their names. 0 for a freshly created index.
    pub generation: u64,
    /// Dimension and model of the vectors.
    pub spec: IndexSpec,
    /// HNSW construction parameters the graph was built with.
    #[serde(default)]
    pub hnsw: HnswParams,
    /// Number of document records, tombstones of deleted documents included (ordinals are
    /// `0..doc_count`).
    pub doc_count: u64,
    /// Number of those records that are tombstones; live documents are
    /// `doc_count - deleted_count`.
    #[serde(default)]
    pub deleted_count: u64,
    /// Number of documents with a vector: rows of the sealed segments and the active one.
    pub vector_count: u64,
    /// Rows at which the writer seals the active segment (see [`SegmentFiles`]).
    #[serde(default = "default_segment_rows")]
    pub segment_rows: u64,
    /// How the vector file stores components. Absent before format version 3: f32.
    #[serde(default)]
    pub vector_storage: VectorStorage,
    /// The current generation's files.
    #[serde(default)]
    pub files: DataFiles,
    /// When the index was created (RFC 3339, UTC).
    #[serde(default)]
    pub created: String,
    /// When the last commit happened (RFC 3339, UTC).
    #[serde(default)]
    pub updated: String,
}

impl Manifest {
    /// The manifest of a new, empty index.
    pub(crate) fn new(
        spec: IndexSpec,
        hnsw: HnswParams,
        vector_storage: VectorStorage,
        segment_rows: u64,
    ) -> Manifest {
        let now = fsio::now_rfc3339();
        Manifest {
            format_version: FORMAT_VERSION,
            generation: 0,
            spec,
            hnsw,
            doc_count: 0,
            deleted_count: 0,
            vector_count: 0,
            segment_rows,
            vector_storage,
            files: DataFiles::default(),
            created: now.clone(),
            updated: now,
        }
    }

    /// Rows of the sealed segments (the first rows of the index).
    pub fn sealed_rows(&self) -> u64 {
        self.files.sealed.iter().map(|s| s.rows).sum()
    }

    /// Rows of the active segment (the last rows of the index), which the hnsw_rs dump and
    /// `files.vectors` hold.
    pub fn active_rows(&self) -> u64 {
        self.vector_count.saturating_sub(self.sealed_rows())
    }

    /// The docs file's parts, in ordinal order (see [`DataFiles::docs_parts`]).
    pub fn docs_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.docs.iter().chain(&self.files.docs_parts)
    }

    /// Names of all generation files this manifest refers to (everything else of that kind
    /// in the folder may be deleted).
    pub(crate) fn referenced_files(&self) -> Vec<String> {
        let mut names = Vec::new();
        for segment in &self.files.sealed {
            names.push(segment.vectors.name.clone());
            names.push(segment.flat_graph.name.clone());
        }
        names.extend(self.docs_files().map(|docs| docs.name.clone()));
        if let Some(vectors) = &self.files.vectors {
            names.push(vectors.name.clone());
        }
        if let Some(hnsw) = &self.files.hnsw {
            names.push(hnsw.graph.name.clone());
            names.push(hnsw.data.name.clone());
        }
        if let Some(flat) = &self.files.flat_graph {
            names.push(flat.name.clone());
        }
        names
    }

    /// Reads and validates `dir/manifest.json`.
    pub(crate) fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(layout::MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IndexError::NotAnIndex {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(IndexError::io(&path)(e)),
        };
        Manifest::parse(&path, &bytes)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        #[derive(Deserialize)]
        struct VersionProbe {
            format_version: u32,
        }
        let probe: VersionProbe = serde_json::from_slice(bytes)
            .map_err(|e| IndexError::corrupt(path, format!("cannot read format_version: {e}")))?;
        if !(OLDEST_READABLE_FORMAT_VERSION..=FORMAT_VERSION).contains(&probe.format_version) {
            return Err(IndexError::FormatVersion {
                found: probe.format_version,
                oldest: OLDEST_READABLE_FORMAT_VERSION,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| IndexError::corrupt(path, format!("invalid manifest: {e}")))?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| Err(IndexError::corrupt(path, reason));
        if self.spec.dim == 0 {
            return bad("spec.dim is 0".into());
        }
        if self.vector_count > self.doc_count {
            return bad(format!(
                "vector_count {} exceeds doc_count {}",
                self.vector_count, self.doc_count
            ));
        }
        if self.deleted_count > self.doc_count {
            return Err(IndexError::corrupt(
                path,
                format!(
                    "deleted_count {} exceeds doc_count {}",
                    self.deleted_count, self.doc_count
                ),
            ));
        }
        if self.doc_count > u64::from(u32::MAX) {
            return bad(format!(
                "doc_count {} exceeds the u32 ordinal range",
                self.doc_count
            ));
        }
        if (self.doc_count > 0) != self.docs_files().next().is_some() {
            return bad("doc_count and the docs file disagree".into());
        }
        if self.segment_rows == 0 {
            return bad("segment_rows is 0".into());
        }
        if self.files.sealed.iter().any(|s| s.rows == 0) {
            return bad("a sealed segment has no rows".into());
        }
        let sealed: u64 = self.files.sealed.iter().map(|s| s.rows).sum();
        if sealed > self.vector_count {
            return bad(format!(
                "the sealed segments hold {sealed} rows, more than vector_count {}",
                self.vector_count
            ));
        }
        let has_active = self.vector_count > sealed;
        if has_active != self.files.vectors.is_some() || has_active != self.files.hnsw.is_some() {
            return bad("the active segment's rows and its vector/HNSW files disagree".into());
        }
        let text_dir = Path::new(&self.files.text_dir);
        let single_name = matches!(
            text_dir.components().collect::<Vec<_>>().as_slice(),
            [std::path::Component::Normal(_)]
        );
        if !single_name {
            return bad(format!(
                "text_dir `{}` is not a plain folder name",
                self.files.text_dir
            ));
        }
        for name in self.referenced_files() {
            if !layout::is_generation_file(&name) {
                return bad(format!("unexpected data file name `{name}`"));
            }
        }
        Ok(())
    }

    /// Commits this manifest: atomically replaces `dir/manifest.json`.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(layout::MANIFEST);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| IndexError::corrupt(&path, format!("cannot serialise manifest: {e}")))?;
        fsio::atomic_write(dir, layout::MANIFEST, layout::MANIFEST_TMP, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IndexSpec {
        IndexSpec {
            dim: 4,
            model_fingerprint: "fp".into(),
            model_name: "tiny".into(),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(
            spec(),
            HnswParams::default(),
            VectorStorage::F16,
            DEFAULT_SEGMENT_ROWS,
        );
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn newer_version_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut value = serde_json::to_value(Manifest::new(
            spec(),
            HnswParams::default(),
            VectorStorage::F16,
            DEFAULT_SEGMENT_ROWS,
        ))
        .unwrap();
        value["format_version"] = serde_json::json!(FORMAT_VERSION + 1);
        value["some_future_field"] = serde_json::json!({"x": 1});
        std::fs::write(dir.path().join(layout::MANIFEST), value.to_string()).unwrap();
        match Manifest::read(dir.path()) {
            Err(IndexError::FormatVersion {
                found, supported, ..
            }) => {
                assert_eq!(found, FORMAT_VERSION + 1);
                assert_eq!(supported, FORMAT_VERSION);
            }
            other => panic!("expected FormatVersion, got {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_default() {
        let json = r#"{"format_version":1,"generation":0,
            "spec":{"dim":4,"model_fingerprint":"fp","model_name":"tiny"},
            "doc_count":0,"vector_count":0,"added_later":[1,2]}"#;
        let m = Manifest::parse(Path::new("manifest.json"), json.as_bytes()).unwrap();
        assert_eq!(m.files.text_dir, layout::TEXT_DIR);
        assert_eq!(m.hnsw, HnswParams::default());
        assert_eq!(m.vector_storage, VectorStorage::F32);
        assert_eq!(m.segment_rows, DEFAULT_SEGMENT_ROWS);
        assert!(m.files.sealed.is_empty());
    }

    #[test]
    fn missing_manifest_is_not_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, IndexError::NotAnIndex { .. }));
        assert!(err.to_string().contains("cxr index"), "{err}");
    }

    #[test]
    fn garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(layout::MANIFEST), b"{not json").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    }
}
