//! cxr-search: semantic search over chest X-ray archives.
//!
//! The crate follows ELIXR (Xu et al., 2023, arXiv:2308.01317): a language-aligned image encoder
//! embeds every image into a vector index, report text goes into a BM25 index, and queries by text
//! or by example image are answered from both. Data flows one way:
//! [`ingest`] (files to pixels, metadata and reports) -> [`model`] (pixels and text to vectors)
//! -> [`embed`] (the batch pipeline) -> `cxr_index` (storage) -> [`search`] -> [`eval`].
//!
//! Without the default `engine` feature only the parts with no model or index behind them are
//! built (ingest, eval, the query-side parsing of [`search`], [`fuzzing`]): what the fuzz
//! targets need, without candle, tokenizers or tantivy.

#[cfg(feature = "engine")]
pub mod classify;
#[cfg(feature = "engine")]
pub mod embed;
pub mod eval;
pub mod fuzzing;
pub mod ingest;
#[cfg(feature = "engine")]
pub mod model;
pub mod privacy;
#[cfg(feature = "engine")]
pub mod rerank;
#[cfg(feature = "engine")]
pub mod search;
#[cfg(feature = "engine")]
pub mod train;

/// Without the `engine` feature: filters, query polarity and snippets only.
#[cfg(not(feature = "engine"))]
pub mod search {
    pub mod filter;
    pub mod query;
    mod snippet;

    pub use filter::{Filter, FilterError};
    pub use query::ParsedQuery;
    pub use snippet::snippet;
}
