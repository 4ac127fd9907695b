//! One error type for the whole crate, so that callers (the CLI, the search layer) can match on
//! what went wrong and print a message that names the file and suggests a fix. Every variant
//! that involves a file carries its path; lower-level errors are kept as `source` rather than
//! pasted into the message, so an error chain printer shows each layer once.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Everything that can go wrong while writing, opening or searching an index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// An operating-system error on a file of the index.
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file of the index does not hold what the manifest says it should.
    #[error("index file {path} is corrupt: {reason}; rebuild the index with `cxr index`")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What check failed (length, checksum, parse error, ...).
        reason: String,
    },

    /// The manifest was written by a version of the format this build cannot read.
    #[error(
        "index format version {found} is not supported (this build reads versions \
         {oldest}..={supported}); rebuild the index with `cxr index` or use a matching cxr"
    )]
    FormatVersion {
        /// The version found in `manifest.json`.
        found: u32,
        /// The oldest version this build reads.
        oldest: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },

    /// The query was embedded by a different model than the one the index was built with.
    #[error(
        "model mismatch: the index was built with model `{index_model}` (fingerprint \
         {index_fingerprint}) but the query comes from a model with fingerprint \
         {query_fingerprint}; search with the index's model, or rebuild the index with \
         `cxr index --model ...`"
    )]
    ModelMismatch {
        /// Name of the model recorded in the index.
        index_model: String,
        /// Fingerprint recorded in the index.
        index_fingerprint: String,
        /// Fingerprint of the model that produced the query.
        query_fingerprint: String,
    },

    /// A vector (document or query) has the wrong number of components.
    #[error("vector has dimension {found}, the index expects {expected}")]
    WrongDimension {
        /// The dimension recorded in the index spec.
        expected: usize,
        /// The dimension received.
        found: usize,
    },

    /// A document vector cannot be stored (NaN/infinite components, zero norm).
    #[error("document `{id}` has an invalid vector: {reason}")]
    InvalidVector {
        /// Id of the rejected document.
        id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A query cannot be run (for example a query vector of zero norm).
    #[error("invalid query: {reason}")]
    InvalidQuery {
        /// What is wrong with it.
        reason: String,
    },

    /// A document was rejected before it touched the index (for example an empty id).
    #[error("invalid document `{id}`: {reason}")]
    InvalidDocument {
        /// Id of the rejected document.
        id: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A document with this id is already in the index.
    #[error("duplicate document id `{id}`: ids must be unique within an index")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },

    /// `IndexWriter::create` was pointed at a folder that already holds an index.
    #[error(
        "an index already exists at {path}; open it to append (IndexWriter::open) or \
         choose another folder"
    )]
    AlreadyExists {
        /// The index folder.
        path: PathBuf,
    },

    /// `IndexWriter::create` was pointed at a folder with unrelated files in it.
    #[error("{path} is not empty and holds no index; choose an empty or new folder")]
    DirectoryNotEmpty {
        /// The folder.
        path: PathBuf,
    },

    /// The folder holds no `manifest.json`.
    #[error("no index found at {path} (no manifest.json); build one with `cxr index ARCHIVE --out {path}`")]
    NotAnIndex {
        /// The folder that was opened.
        path: PathBuf,
    },

    /// Another writer has the index open.
    #[error("the index at {path} is being written by another process; wait for it to finish")]
    Locked {
        /// The index folder.
        path: PathBuf,
    },

    /// Invalid construction or search parameters.
    #[error("invalid index parameters: {reason}")]
    InvalidParams {
        /// Which parameter and why.
        reason: String,
    },

    /// An error from the tantivy text index.
    #[error("text index error in {path}")]
    Tantivy {
        /// The tantivy folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: tantivy::TantivyError,
    },

    /// An error from the HNSW graph (dump or reload).
    #[error("HNSW graph error on {path}: {reason}")]
    Hnsw {
        /// The graph dump (basename) involved.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl IndexError {
    /// Builds a closure that wraps an `io::Error` with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexError {
        let path = path.into();
        move |source| IndexError::Io { path, source }
    }

    /// Shorthand for [`IndexError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> IndexError {
        IndexError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Builds a closure that wraps a tantivy error with the text index path.
    pub(crate) fn tantivy(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(tantivy::TantivyError) -> IndexError {
        let path = path.into();
        move |source| match source {
            tantivy::TantivyError::LockFailure(..) => IndexError::Locked {
                path: path.parent().map(PathBuf::from).unwrap_or(path),
            },
            source => IndexError::Tantivy { path, source },
        }
    }

    /// True when this is an I/O "file not found" error (used to retry an open that raced a
    /// commit which removed the previous generation's files).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, IndexError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
