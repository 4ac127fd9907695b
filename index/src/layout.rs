//! Every file name of the on-disk format lives here, so that the writer, the reader and the
//! clean-up of old generations agree on them, and a reader of this one file knows what can be
//! found in an index folder.
//!
//! Data files carry the generation (commit number) that wrote them. A commit never modifies a
//! file an earlier manifest points to: it writes new files and then replaces `manifest.json`.
//! That keeps the last committed state readable after a crash at any point, and lets readers
//! memory-map files that never change under them.

use crate::vectors::VectorStorage;

/// The commit point: names the current generation's files. Replaced atomically.
pub const MANIFEST: &str = "manifest.json";
/// Temporary name the next manifest is written under before the rename.
pub(crate) const MANIFEST_TMP: &str = "manifest.json.tmp";
/// Sub-folder holding the tantivy index over report text.
pub(crate) const TEXT_DIR: &str = "text";
/// Append-only log of files that could not be indexed (one JSON object per line).
pub const ERRORS: &str = "errors.jsonl";

const DOCS_PREFIX: &str = "docs-";
const DOCS_SUFFIX: &str = ".jsonl";
const VECTORS_PREFIX: &str = "vectors-";
/// The vector file's suffix names its encoding.
const VECTORS_SUFFIXES: [&str; 2] = [".f32", ".f16"];
const HNSW_PREFIX: &str = "hnsw-";
const FLAT_PREFIX: &str = "graph-";
const FLAT_SUFFIX: &str = ".flat";
const SEGMENT_PREFIX: &str = "segment-";
/// Suffixes hnsw_rs appends to a dump basename (fixed by hnsw_rs).
pub(crate) const HNSW_GRAPH_SUFFIX: &str = ".hnsw.graph";
pub(crate) const HNSW_DATA_SUFFIX: &str = ".hnsw.data";

/// Per-document records of generation `gen`.
pub(crate) fn docs_file(gen: u64) -> String {
    format!("{DOCS_PREFIX}{gen}{DOCS_SUFFIX}")
}

/// Little-endian rows of generation `gen`, stored as `storage` says.
pub(crate) fn vectors_file(gen: u64, storage: VectorStorage) -> String {
    format!("{VECTORS_PREFIX}{gen}{}", vectors_suffix(storage))
}

/// A vector file's suffix, which names its encoding.
fn vectors_suffix(storage: VectorStorage) -> &'static str {
    match storage {
        VectorStorage::F32 => VECTORS_SUFFIXES[0],
        VectorStorage::F16 => VECTORS_SUFFIXES[1],
    }
}

/// The flat (searchable in place) copy of generation `gen`'s graph.
pub(crate) fn flat_graph_file(gen: u64) -> String {
    format!("{FLAT_PREFIX}{gen}{FLAT_SUFFIX}")
}

/// The rows of the `k`-th segment sealed for generation `gen` (the commit that publishes it).
pub(crate) fn segment_vectors_file(gen: u64, k: usize, storage: VectorStorage) -> String {
    format!("{SEGMENT_PREFIX}{gen}-{k}{}", vectors_suffix(storage))
}

/// The flat graph of the `k`-th segment sealed for generation `gen`.
pub(crate) fn segment_graph_file(gen: u64, k: usize) -> String {
    format!("{SEGMENT_PREFIX}{gen}-{k}{FLAT_SUFFIX}")
}

/// Basename of the hnsw_rs dump of generation `gen` (hnsw_rs adds the suffixes).
pub(crate) fn hnsw_basename(gen: u64) -> String {
    format!("{HNSW_PREFIX}{gen}")
}

/// True for names that a commit of some generation writes (and a later commit may delete).
/// Anything else in the folder, the manifest, `text/` and `errors.jsonl` included, is left alone.
pub(crate) fn is_generation_file(name: &str) -> bool {
    let numbered = |rest: &str, suffix: &str| {
        rest.strip_suffix(suffix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(rest) = name.strip_prefix(DOCS_PREFIX) {
        return numbered(rest, DOCS_SUFFIX);
    }
    if let Some(rest) = name.strip_prefix(VECTORS_PREFIX) {
        return VECTORS_SUFFIXES.iter().any(|s| numbered(rest, s));
    }
    if let Some(rest) = name.strip_prefix(FLAT_PREFIX) {
        return numbered(rest, FLAT_SUFFIX);
    }
    if let Some(rest) = name.strip_prefix(SEGMENT_PREFIX) {
        // `<gen>-<k>` and a vector or graph suffix.
        let pair = |stem: &str| {
            stem.split_once('-').is_some_and(|(g, k)| {
                [g, k]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        };
        return VECTORS_SUFFIXES
            .iter()
            .chain([&FLAT_SUFFIX])
            .any(|s| rest.strip_suffix(s).is_some_and(pair));
    }
    if let Some(rest) = name.strip_prefix(HNSW_PREFIX) {
        // hnsw_rs may append `-<random>` to a basename it does not want to overwrite.
        let stem = rest
            .strip_suffix(HNSW_GRAPH_SUFFIX)
            .or_else(|| rest.strip_suffix(HNSW_DATA_SUFFIX));
        return stem
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_files_are_recognised() {
        assert!(is_generation_file(&docs_file(3)));
        assert!(is_generation_file(&vectors_file(12, VectorStorage::F32)));
        assert!(is_generation_file(&vectors_file(12, VectorStorage::F16)));
        assert!(is_generation_file(&flat_graph_file(5)));
        assert!(is_generation_file(&segment_vectors_file(
            4,
            0,
            VectorStorage::F32
        )));
        assert!(is_generation_file(&segment_vectors_file(
            4,
            2,
            VectorStorage::F16
        )));
        assert!(is_generation_file(&segment_graph_file(9, 1)));
        let hnsw = hnsw_basename(7);
        assert!(is_generation_file(&format!("{hnsw}{HNSW_GRAPH_SUFFIX}")));
        assert!(is_generation_file(&format!(
            "{hnsw}-4411{HNSW_DATA_SUFFIX}"
        )));
        for other in [
            MANIFEST,
            MANIFEST_TMP,
            TEXT_DIR,
            ERRORS,
            "docs-.jsonl",
            "vectors-1.f64",
            "segment-3.flat",
            "segment-3-.f32",
            "segment-3-1.hnsw.graph",
            "notes.txt",
        ] {
            assert!(!is_generation_file(other), "{other}");
        }
    }
}
