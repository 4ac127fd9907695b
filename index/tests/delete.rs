//! Deletion and compaction through the public API: a deleted document disappears from all
//! three stores (records, vector search by graph and by scan, BM25), survives reopening and a
//! crash between the manifest and the text index, and compaction reclaims its vector and graph
//! point without changing any result for the documents that remain.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cxr_index::{check, Document, Index, IndexSpec, IndexWriter, SearchOptions};

use common::SplitMix;

const DIM: usize = 8;

fn spec() -> IndexSpec {
    IndexSpec {
        dim: DIM,
        model_fingerprint: "fp-delete".into(),
        model_name: "test".into(),
    }
}

/// `n` documents `d0..`; all have a vector and a report naming them ("effusion" in even ones).
fn build(dir: &Path, n: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix(7);
    let mut writer = IndexWriter::create(dir, spec()).unwrap();
    let mut vectors = Vec::new();
    for i in 0..n {
        let v = rng.vector(DIM);
        vectors.push(v.clone());
        let finding = if i % 2 == 0 { "effusion" } else { "clear" };
        let mut fields = BTreeMap::new();
        fields.insert("path".to_string(), format!("p/{i}.dcm"));
        writer
            .add(Document {
                id: format!("d{i}"),
                vector: Some(v),
                text: Some(format!("report of d{i}: {finding}")),
                negated_text: None,
                fields,
            })
            .unwrap();
    }
    writer.commit().unwrap();
    vectors
}

/// Every search path: the graph (threshold 0), the exact scan, BM25.
fn graph_options() -> SearchOptions {
    SearchOptions {
        exact_threshold: 0,
        ..SearchOptions::default()
    }
}

fn found_ids(index: &Index, hits: &[cxr_index::Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| index.doc(h.ord).expect("hits are live").id.to_string())
        .collect()
}

fn assert_gone(index: &Index, id: &str, vector: &[f32]) {
    assert!(index.ord_of(id).is_none(), "{id} still has an ordinal");
    assert!(!index.ids().any(|(_, i)| i == id));
    let n = index.ord_bound() as usize;
    for hits in [
        index.search_vector(vector, n).unwrap(),
        index.search_vector_exact(vector, n).unwrap(),
        index.search_text(id, n).unwrap(),
    ] {
        assert!(
            !found_ids(index, &hits).iter().any(|i| i == id),
            "{id} is still found"
        );
    }
}

/// The names of the active segment's files: rows, hnsw_rs's dump, the flat graph.
fn active_segment_files(dir: &Path) -> Vec<String> {
    let index = Index::open(dir).unwrap();
    let files = &index.manifest().files;
    let hnsw = files.hnsw.as_ref().expect("a graph dump");
    [
        files.vectors.as_ref().expect("a vector file"),
        &hnsw.graph,
        &hnsw.data,
        files.flat_graph.as_ref().expect("a flat graph"),
    ]
    .map(|f| f.name.clone())
    .to_vec()
}

#[test]
fn deleted_documents_leave_every_store_and_their_id_can_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = build(dir.path(), 50);
    let written = active_segment_files(dir.path());

    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert!(writer.delete("d3").unwrap());
    assert!(writer.delete("d10").unwrap());
    assert!(
        !writer.delete("d3").unwrap(),
        "a second delete finds nothing"
    );
    assert!(!writer.delete("nope").unwrap());
    assert_eq!(writer.len(), 48);
    assert!(!writer.contains("d3").unwrap());
    let info = writer.commit().unwrap();
    assert_eq!((info.doc_count, info.deleted, info.added), (48, 2, 0));
    drop(writer);
    // Deletions are tombstones: the writer neither loaded nor rewrote the vector segment.
    assert_eq!(active_segment_files(dir.path()), written);

    let index = Index::open_with(dir.path(), graph_options()).unwrap();
    assert_eq!(index.len(), 48);
    assert_eq!(index.ord_bound(), 50);
    assert_eq!(index.manifest().deleted_count, 2);
    assert!(index.doc(3).is_none() && index.vector(3).is_none());
    assert_gone(&index, "d3", &vectors[3]);
    assert_gone(&index, "d10", &vectors[10]);
    // The others are untouched: each is still its own nearest neighbour.
    let hits = index.search_vector(&vectors[4], 1).unwrap();
    assert_eq!(found_ids(&index, &hits), ["d4"]);
    assert_eq!(
        index.search_text("effusion", 100).unwrap().len(),
        24,
        "25 even documents minus d10"
    );
    let report = check(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    drop(index);

    // The id can be indexed again (a changed file), as a new document.
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    writer
        .add(Document {
            id: "d3".into(),
            vector: Some(vectors[3].clone()),
            text: Some("report of d3 again".into()),
            negated_text: None,
            fields: BTreeMap::new(),
        })
        .unwrap();
    writer.commit().unwrap();
    drop(writer);
    // A vector added: the graph was loaded from its dump and the segment written anew.
    let rewritten = active_segment_files(dir.path());
    assert!(
        rewritten.iter().all(|f| !written.contains(f)),
        "{rewritten:?}"
    );
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.ord_of("d3"), Some(50));
    let hits = index.search_vector(&vectors[3], 1).unwrap();
    assert_eq!(found_ids(&index, &hits), ["d3"]);
    assert_eq!(index.len(), 49);
    assert!(check(dir.path()).unwrap().ok());
}

#[test]
fn compaction_reclaims_deleted_vectors_and_keeps_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = build(dir.path(), 300);
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    for i in (0..300).step_by(3) {
        assert!(writer.delete(&format!("d{i}")).unwrap());
    }
    writer.commit().unwrap();
    let before = Index::open_with(dir.path(), graph_options()).unwrap();
    let queries: Vec<&Vec<f32>> = vectors.iter().step_by(7).collect();
    let exact_before: Vec<Vec<String>> = queries
        .iter()
        .map(|q| found_ids(&before, &before.search_vector_exact(q, 10).unwrap()))
        .collect();
    let text_before = found_ids(&before, &before.search_text("effusion d4", 20).unwrap());
    drop(before);

    let info = writer.compact().unwrap();
    assert_eq!(info.vectors_removed, 100);
    assert_eq!(info.vector_count, 200);
    assert!(info.bytes_after < info.bytes_before, "{info:?}");
    drop(writer);

    let report = check(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    let after = Index::open_with(dir.path(), graph_options()).unwrap();
    assert_eq!(after.vector_count(), 200);
    assert_eq!(after.len(), 200);
    for (q, expected) in queries.iter().zip(&exact_before) {
        let exact = found_ids(&after, &after.search_vector_exact(q, 10).unwrap());
        assert_eq!(&exact, expected, "exact results changed by compaction");
    }
    // The rebuilt graph finds what the scan finds (small, easy case: recall 1).
    for (i, v) in vectors.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        let hits = after.search_vector(v, 1).unwrap();
        assert_eq!(found_ids(&after, &hits), [format!("d{i}")]);
    }
    assert_eq!(
        found_ids(&after, &after.search_text("effusion d4", 20).unwrap()),
        text_before
    );
    for i in (0..300).step_by(3) {
        assert_gone(&after, &format!("d{i}"), &vectors[i]);
    }
}

/// The state a crash leaves between the manifest that records a deletion and tantivy's
/// deletion: readers must not see the document, `check` passes with a note, and the next
/// writer's commit drops it from tantivy.
#[test]
fn a_crash_before_tantivy_learns_of_a_deletion_loses_nothing_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let vectors = build(dir.path(), 20);
    let text = dir.path().join("text");
    let saved = dir.path().join("text-before-delete");
    copy_dir(&text, &saved);

    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert!(writer.delete("d2").unwrap());
    writer.commit().unwrap();
    drop(writer);
    // Put back tantivy as it was before it applied the deletion.
    std::fs::remove_dir_all(&text).unwrap();
    std::fs::rename(&saved, &text).unwrap();

    let index = Index::open(dir.path()).unwrap();
    assert_gone(&index, "d2", &vectors[2]);
    assert_eq!(index.search_text("effusion", 100).unwrap().len(), 9);
    drop(index);
    let report = check(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    let text_item = report.item("text").unwrap();
    assert!(
        text_item.detail.contains("not yet dropped"),
        "{text_item:?}"
    );

    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert!(writer.delete("d5").unwrap());
    writer.commit().unwrap();
    drop(writer);
    let report = check(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(!report
        .item("text")
        .unwrap()
        .detail
        .contains("not yet dropped"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
