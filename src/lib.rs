//! cxr-search: semantic search over chest X-ray archives.
//!
//! The crate follows ELIXR (Xu et al., 2023, arXiv:2308.01317): a language-aligned image encoder
//! embeds every image into a vector index, report text goes into a BM25 index, and queries by text
//! or by example image are answered from both. Data flows one way:
//! [`ingest`] (files to pixels, metadata and reports) -> [`model`] (pixels and text to vectors)
//! -> [`embed`] (the batch pipeline) -> `cxr_index` (storage) -> [`search`] -> [`eval`].

pub mod classify;
pub mod embed;
pub mod eval;
pub mod fuzzing;
pub mod ingest;
pub mod model;
pub mod privacy;
pub mod search;
pub mod train;
