//! `cxr-index`: the on-disk index of cxr-search. It stores documents (an id, an optional
//! unit-norm image embedding, optional report text, metadata fields), and answers nearest-
//! neighbour queries over the embeddings (HNSW, or an exact scan) and BM25 queries over the
//! text. It knows nothing about images, models or the CLI: it deals in ids, `&[f32]` and
//! strings.
//!
//! # Use
//!
//! ```no_run
//! use cxr_index::{Document, Index, IndexSpec, IndexWriter};
//! # fn main() -> cxr_index::Result<()> {
//! let spec = IndexSpec { dim: 3, model_fingerprint: "sha256:...".into(), model_name: "tiny".into() };
//! let mut writer = IndexWriter::create("idx", spec)?;
//! writer.add(Document {
//!     id: "1.2.840.1".into(),
//!     vector: Some(vec![0.1, 0.7, 0.2]),
//!     text: Some("Small left pleural effusion.".into()),
//!     negated_text: Some("pneumothorax".into()), // "No pneumothorax." in the report
//!     ..Default::default()
//! })?;
//! writer.commit()?;
//!
//! let index = Index::open("idx")?;
//! index.check_model("sha256:...")?;
//! for hit in index.search_text("pleural effusions", 10)? {
//!     println!("{} {:.3}", index.doc(hit.ord).unwrap().id, hit.score);
//! }
//! # Ok(()) }
//! ```
//!
//! # On-disk layout (format version 5)
//!
//! Vector rows are numbered in ordinal order and split into segments: sealed segments, each
//! `segment_rows` rows with its own graph, never rewritten, then the active segment, which
//! takes new rows and is rewritten by each commit until it fills up and is sealed in turn.
//!
//! ```text
//! manifest.json          the commit point (JSON): format_version, generation, spec (dim,
//!                        model_fingerprint, model_name), hnsw parameters, doc_count,
//!                        deleted_count, vector_count, vector_storage (f32 or f16),
//!                        segment_rows, the current files with length and CRC-32 (the sealed
//!                        segments' with their row counts), times
//! docs-<gen>.jsonl       one JSON object per document in ordinal order:
//!                        {"id", "fields" (omitted if empty), "row" (omitted if no vector)};
//!                        a deleted document leaves {"id":"","deleted":true} (+ "row" until
//!                        compaction), so ordinals never change. Stored as parts (one per
//!                        generation that wrote one), read back to back: a commit writes
//!                        its new records as a part, merged with the last parts while those
//!                        are no larger, so there are about log2(commits) parts
//! segment-<gen>-<k>.f32  a sealed segment's rows (`.f16` for f16 storage), sealed for
//!                        generation <gen> as its k-th
//! segment-<gen>-<k>.flat its graph as flat u32 arrays (rows local to the segment)
//! vectors-<gen>.f32      the active segment's rows: dim little-endian f32 each, unit L2
//!                        norm, no header
//! vectors-<gen>.f16      instead of .f32 when vector_storage is f16: IEEE binary16 rows
//! hnsw-<gen>.hnsw.graph  hnsw_rs dump of the active segment's graph (data id = document
//!                        ordinal): the writer's copy, reloaded to append
//! hnsw-<gen>.hnsw.data   hnsw_rs's copy of the active segment's vectors
//! graph-<gen>.flat       the same graph as flat u32 arrays, which readers map and search in
//!                        place (see `flat.rs`); absent in indexes written before it existed,
//!                        whose dump readers then convert at open
//! text/                  tantivy index: ord (u64, indexed, fast), id (string, stored),
//!                        text and negated (en_stem, positions, not stored): what a report
//!                        asserts and what it denies
//! errors.jsonl           append-only failure log: {"path", "reason", "time"} per line
//! ```
//!
//! An open writer also holds unlinked scratch files in the folder for its per-document tables
//! ([`scratch`]); they are unlinked as they are made, so they do not show in a listing and
//! vanish with the process.
//!
//! A commit writes the new generation's files, fsyncs them and the folder, then replaces
//! `manifest.json` atomically (temp file, fsync, rename, fsync folder) and deletes older
//! generations. A crash at any point leaves the last committed generation readable; files
//! the manifest does not name (segments sealed after the last commit among them) are removed
//! by the next writer. Documents without a vector have no row; an index without vectors has
//! no vector or graph files. Formats 1 to 3 had no segments: every row is in the active one.
//! Formats 1 to 4 had one docs file, read as the only part.
//!
//! [`IndexWriter::delete`] hides a document from every search at the next commit;
//! [`IndexWriter::compact`] then rewrites the vectors and graph without it and merges the text
//! index's segments. Format version 1 (no deletions) is read as is.
//!
//! [`check`] verifies all of this (lengths and CRC-32s, record counts, unit norms, the text
//! index's ordinals, the graph's data ids and reachability, the flat graph against the dump)
//! and names what is wrong.

mod check;
mod columns;
mod docs;
mod error;
mod flat;
mod fsio;
mod graph;
mod keys;
mod layout;
mod manifest;
mod reader;
pub mod scratch;
mod text;
mod vectors;
mod writer;

pub use check::{check, CheckItem, CheckReport};
pub use columns::FieldColumn;
pub use docs::StoredDoc;
pub use error::{IndexError, Result};
pub use graph::{HnswParams, SearchOptions};
pub use layout::{ERRORS as ERRORS_FILE, MANIFEST as MANIFEST_FILE};
pub use manifest::{
    DataFiles, FileEntry, HnswFiles, IndexSpec, Manifest, SegmentFiles, DEFAULT_SEGMENT_ROWS,
    FORMAT_VERSION, OLDEST_READABLE_FORMAT_VERSION,
};
pub use reader::{Hit, Index};
pub use text::{Bm25Params, TextField};
pub use vectors::{VectorPlacement, VectorStorage};
pub use writer::{
    read_failures, CommitInfo, CompactInfo, CreateOptions, Document, Failure, IndexWriter,
};

#[cfg(test)]
mod tests {
    #[test]
    fn public_types_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Index>();
        fn assert_send<T: Send>() {}
        assert_send::<crate::IndexWriter>();
        assert_send_sync::<crate::IndexError>();
    }
}
