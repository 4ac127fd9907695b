//! Sealed vector segments: a writer whose active segment fills up seals it (its rows and graph
//! go to files of their own) and starts another; readers search every segment and merge, so
//! the index answers as one. Deletion, compaction, reopening and `check` work across them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cxr_index::{
    check, CheckItem, CreateOptions, Document, Index, IndexSpec, IndexWriter, Manifest,
    SearchOptions,
};

use common::SplitMix;

const DIM: usize = 16;
const SEGMENT: u64 = 100;

fn options() -> CreateOptions {
    CreateOptions {
        segment_rows: SEGMENT,
        ..CreateOptions::default()
    }
}

fn spec() -> IndexSpec {
    IndexSpec {
        dim: DIM,
        model_fingerprint: "fp-seg".into(),
        model_name: "seg-model".into(),
    }
}

/// Graph search everywhere (no exact fallback), wide enough to be exhaustive on 100 points.
fn graph_search() -> SearchOptions {
    SearchOptions {
        ef_search: 64,
        exact_threshold: 0,
        ..SearchOptions::default()
    }
}

/// Adds documents `start..start + n` (every seventh without a vector), committing every 90;
/// returns (id, vector) of those with one.
fn add(
    writer: &mut IndexWriter,
    rng: &mut SplitMix,
    start: usize,
    n: usize,
) -> Vec<(String, Vec<f32>)> {
    let mut with_vectors = Vec::new();
    for i in start..start + n {
        let id = format!("doc-{i}");
        let vector = (i % 7 != 6).then(|| rng.unit_vector(DIM));
        if let Some(v) = &vector {
            with_vectors.push((id.clone(), v.clone()));
        }
        writer
            .add(Document {
                id,
                vector,
                text: Some(format!("report {i}")),
                negated_text: None,
                fields: BTreeMap::new(),
            })
            .unwrap();
        if (i + 1) % 90 == 0 {
            writer.commit().unwrap();
        }
    }
    writer.commit().unwrap();
    with_vectors
}

/// Every vector finds its own document first, `Index::vector` gives it back, and the graph's
/// top 10 agree with an exact scan.
fn assert_searchable(index: &Index, docs: &[(String, Vec<f32>)]) {
    let mut agree = 0usize;
    for (id, v) in docs {
        let hits = index.search_vector(v, 10).unwrap();
        let top = index.doc(hits[0].ord).unwrap();
        assert_eq!(&top.id, id, "{id} is not its own nearest neighbour");
        let stored = index.vector(hits[0].ord).unwrap();
        assert!(stored.iter().zip(v).all(|(a, b)| (a - b).abs() < 1e-6));
        let exact = index.search_vector_exact(v, 10).unwrap();
        agree += hits
            .iter()
            .filter(|h| exact.iter().any(|e| e.ord == h.ord))
            .count();
    }
    let recall = agree as f64 / (10 * docs.len()) as f64;
    assert!(recall >= 0.95, "recall@10 against the exact scan: {recall}");
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.starts_with("segment-"))
        .collect();
    names.sort();
    names
}

fn manifest(dir: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_full_active_segment_is_sealed_and_searched_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut writer = IndexWriter::create_with(&path, spec(), options()).unwrap();
    let mut rng = SplitMix(7);
    let docs = add(&mut writer, &mut rng, 0, 430);
    drop(writer);

    let m = manifest(&path);
    assert_eq!(m.vector_count as usize, docs.len());
    // 369 rows: three full segments sealed, the rest active.
    assert_eq!(m.files.sealed.len(), 3);
    assert!(m.files.sealed.iter().all(|s| s.rows == SEGMENT));
    assert_eq!(m.active_rows(), m.vector_count - 3 * SEGMENT);
    assert_eq!(segment_files(&path).len(), 6);

    let index = Index::open_with(&path, graph_search()).unwrap();
    assert_eq!(index.segment_count(), 4);
    assert_eq!(index.vector_count(), docs.len());
    assert_searchable(&index, &docs);
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    assert!(report
        .item(CheckItem::SEGMENTS)
        .unwrap()
        .detail
        .contains("3 sealed segments, 300 points"));
}

#[test]
fn deletion_and_compaction_work_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut writer = IndexWriter::create_with(&path, spec(), options()).unwrap();
    let mut rng = SplitMix(11);
    let mut docs = add(&mut writer, &mut rng, 0, 250);
    drop(writer);

    // A later writer appends (sealing again), then deletes from sealed and active segments.
    let mut writer = IndexWriter::open(&path).unwrap();
    docs.extend(add(&mut writer, &mut rng, 250, 150));
    let deleted: Vec<(String, Vec<f32>)> = docs.iter().step_by(4).cloned().collect();
    for (id, _) in &deleted {
        assert!(writer.delete(id).unwrap());
    }
    writer.commit().unwrap();
    let live: Vec<(String, Vec<f32>)> = docs
        .iter()
        .filter(|(id, _)| !deleted.iter().any(|(d, _)| d == id))
        .cloned()
        .collect();
    {
        let index = Index::open_with(&path, graph_search()).unwrap();
        assert_eq!(index.segment_count(), 4);
        assert_searchable(&index, &live);
        for (id, v) in &deleted {
            let hits = index.search_vector(v, 5).unwrap();
            assert!(hits.iter().all(|h| index.doc(h.ord).unwrap().id != *id));
        }
    }

    let info = writer.compact().unwrap();
    assert_eq!(info.vectors_removed, deleted.len());
    assert_eq!(info.vector_count, live.len());
    drop(writer);
    let m = manifest(&path);
    assert_eq!(m.vector_count as usize, live.len());
    assert_eq!(m.files.sealed.len(), live.len() / SEGMENT as usize);
    // Only the new segments' files are left.
    assert_eq!(segment_files(&path).len(), 2 * m.files.sealed.len());
    let index = Index::open_with(&path, graph_search()).unwrap();
    assert_searchable(&index, &live);
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
}

#[test]
fn segments_sealed_but_not_committed_are_dropped_and_nothing_committed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut writer = IndexWriter::create_with(&path, spec(), options()).unwrap();
    let mut rng = SplitMix(3);
    let committed = add(&mut writer, &mut rng, 0, 60);
    // Enough rows to seal twice, and no commit: the writer dies with them.
    for i in 60..300 {
        writer
            .add(Document {
                id: format!("doc-{i}"),
                vector: Some(rng.unit_vector(DIM)),
                ..Document::default()
            })
            .unwrap();
    }
    assert_eq!(segment_files(&path).len(), 4);
    drop(writer);

    let index = Index::open_with(&path, graph_search()).unwrap();
    assert_eq!(index.len(), 60);
    assert_searchable(&index, &committed);
    drop(index);
    // The next writer removes the unnamed files; the index is whole.
    let writer = IndexWriter::open(&path).unwrap();
    assert!(segment_files(&path).is_empty());
    assert_eq!(writer.len(), 60);
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
}

#[test]
fn a_damaged_sealed_graph_is_named_by_check_and_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut writer = IndexWriter::create_with(&path, spec(), options()).unwrap();
    let mut rng = SplitMix(5);
    add(&mut writer, &mut rng, 0, 250);
    drop(writer);
    let name = manifest(&path).files.sealed[1].flat_graph.name.clone();
    let file = path.join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let report = check(&path).unwrap();
    let failed: Vec<&str> = report.failures().map(|i| i.name.as_str()).collect();
    assert_eq!(
        failed,
        [CheckItem::FILES, CheckItem::SEGMENTS],
        "\n{report}"
    );
    assert!(report
        .item(CheckItem::SEGMENTS)
        .unwrap()
        .detail
        .contains(&name));
    let err = Index::open(&path).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");
}
