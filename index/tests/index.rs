//! Integration tests of cxr-index through its public API only: write, commit, reopen, append,
//! crash recovery, corruption, recall of the HNSW graph against exact search, BM25.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cxr_index::{
    read_failures, Bm25Params, CreateOptions, Document, Index, IndexError, IndexSpec, IndexWriter,
    SearchOptions, TextField, VectorStorage,
};

use common::SplitMix;

const DIM: usize = 16;

fn spec(dim: usize) -> IndexSpec {
    IndexSpec {
        dim,
        model_fingerprint: "fp-test-1".into(),
        model_name: "test-model".into(),
    }
}

fn doc(id: &str, vector: Option<Vec<f32>>, text: Option<&str>) -> Document {
    let mut fields = BTreeMap::new();
    fields.insert("source".to_string(), format!("{id}.dcm"));
    Document {
        id: id.to_string(),
        vector,
        text: text.map(str::to_string),
        negated_text: None,
        fields,
    }
}

/// Writes `n` documents with random vectors; every third has no vector, every second a text.
fn write_docs(writer: &mut IndexWriter, rng: &mut SplitMix, start: usize, n: usize) {
    for i in start..start + n {
        let vector = (i % 3 != 2).then(|| rng.unit_vector(DIM));
        let text = (i % 2 == 0).then(|| format!("report {i}: no pneumothorax"));
        writer
            .add(doc(&format!("doc-{i}"), vector, text.as_deref()))
            .unwrap();
    }
}

fn ids(index: &Index, hits: &[cxr_index::Hit]) -> Vec<String> {
    hits.iter()
        .map(|h| index.doc(h.ord).unwrap().id.to_string())
        .collect()
}

#[test]
fn write_commit_reopen_gives_back_the_same_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut rng = SplitMix(1);
    let mut writer = IndexWriter::create(&path, spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 30);
    // a vector that is not unit length is normalised by `add`
    writer
        .add(doc(
            "scaled",
            Some(vec![2.0; DIM]),
            Some("Large right pleural effusion."),
        ))
        .unwrap();
    let info = writer.commit().unwrap();
    assert_eq!((info.generation, info.doc_count, info.added), (1, 31, 31));
    assert_eq!(info.vector_count, 21);

    let index = Index::open(&path).unwrap();
    assert_eq!(index.len(), 31);
    assert_eq!(index.vector_count(), 21);
    let m = index.manifest();
    assert_eq!((m.doc_count, m.vector_count, m.generation), (31, 21, 1));
    assert_eq!(m.spec, spec(DIM));

    let ord = index.ord_of("doc-4").unwrap();
    let d = index.doc(ord).unwrap();
    assert_eq!((d.id.as_str(), d.has_vector), ("doc-4", true));
    assert_eq!(d.fields["source"], "doc-4.dcm");
    assert!(
        !index
            .doc(index.ord_of("doc-2").unwrap())
            .unwrap()
            .has_vector
    );
    assert_eq!(index.vector(index.ord_of("doc-2").unwrap()), None);
    assert_eq!(index.doc(31), None);

    let scaled = index.vector(index.ord_of("scaled").unwrap()).unwrap();
    let expected = 1.0 / (DIM as f32).sqrt();
    assert!(scaled.iter().all(|x| (x - expected).abs() < 1e-6));

    // a stored vector finds itself first, with cosine 1, by both search paths
    let q = index.vector(ord).unwrap().to_vec();
    for hits in [
        index.search_vector(&q, 5).unwrap(),
        index.search_vector_exact(&q, 5).unwrap(),
    ] {
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].ord, ord);
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    // reopening again gives identical results
    let again = Index::open(&path).unwrap();
    assert_eq!(
        again.search_vector(&q, 10).unwrap(),
        index.search_vector(&q, 10).unwrap()
    );
    assert_eq!(
        again.search_text("effusion", 10).unwrap(),
        index.search_text("effusion", 10).unwrap()
    );
}

#[test]
fn reopen_reloads_the_graph_instead_of_rebuilding() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(2);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 60);
    writer.commit().unwrap();
    let m = Index::open(dir.path()).unwrap().manifest().clone();
    let hnsw = m.files.hnsw.expect("graph dump recorded in the manifest");
    assert!(dir.path().join(&hnsw.graph.name).is_file());
    assert!(dir.path().join(&hnsw.data.name).is_file());

    // Reading never writes: the dump files are unchanged by opening and searching.
    let before = std::fs::read(dir.path().join(&hnsw.graph.name)).unwrap();
    let index = Index::open_with(
        dir.path(),
        SearchOptions {
            exact_threshold: 0,
            ..SearchOptions::default()
        },
    )
    .unwrap();
    let q = rng.unit_vector(DIM);
    assert_eq!(index.search_vector(&q, 3).unwrap().len(), 3);
    assert_eq!(
        std::fs::read(dir.path().join(&hnsw.graph.name)).unwrap(),
        before
    );

    // Readers search the flat copy and never load the dump; a writer reloads the dump (a dump
    // that does not load is reported, which shows it is used and not rebuilt).
    let flat = m
        .files
        .flat_graph
        .expect("flat graph recorded in the manifest");
    assert!(dir.path().join(&flat.name).is_file());
    std::fs::write(dir.path().join(&hnsw.graph.name), b"not a graph").unwrap();
    let reopened = Index::open_with(
        dir.path(),
        SearchOptions {
            exact_threshold: 0,
            ..SearchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        reopened.search_vector(&q, 3).unwrap(),
        index.search_vector(&q, 3).unwrap()
    );
    drop(writer);
    let err = IndexWriter::open(dir.path()).unwrap_err();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&hnsw.graph.name), "{err}");
}

#[test]
fn model_mismatch_is_reported_with_both_models() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    writer.add(doc("a", None, Some("x"))).unwrap();
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    index.check_model("fp-test-1").unwrap();
    let err = index.check_model("fp-other").unwrap_err();
    match &err {
        IndexError::ModelMismatch {
            index_model,
            index_fingerprint,
            query_fingerprint,
        } => {
            assert_eq!(index_model, "test-model");
            assert_eq!(index_fingerprint, "fp-test-1");
            assert_eq!(query_fingerprint, "fp-other");
        }
        other => panic!("expected ModelMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("test-model") && msg.contains("fp-other"),
        "{msg}"
    );
}

#[test]
fn wrong_dimension_and_invalid_vectors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    let err = writer
        .add(doc("a", Some(vec![1.0; DIM + 1]), None))
        .unwrap_err();
    assert!(
        matches!(err, IndexError::WrongDimension { expected: DIM, found } if found == DIM + 1),
        "{err}"
    );
    let mut nan = vec![1.0; DIM];
    nan[3] = f32::NAN;
    let err = writer.add(doc("b", Some(nan), None)).unwrap_err();
    assert!(matches!(err, IndexError::InvalidVector { .. }), "{err}");
    let err = writer
        .add(doc("c", Some(vec![0.0; DIM]), None))
        .unwrap_err();
    assert!(matches!(err, IndexError::InvalidVector { .. }), "{err}");
    let err = writer.add(doc("", None, Some("x"))).unwrap_err();
    assert!(matches!(err, IndexError::InvalidDocument { .. }), "{err}");
    // rejected documents left no trace
    assert_eq!(writer.len(), 0);
    assert!(!writer.contains("a").unwrap() && !writer.contains("b").unwrap());

    writer.add(doc("ok", Some(vec![1.0; DIM]), None)).unwrap();
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let err = index.search_vector(&[1.0; 3], 5).unwrap_err();
    assert!(
        matches!(
            err,
            IndexError::WrongDimension {
                expected: DIM,
                found: 3
            }
        ),
        "{err}"
    );
    let err = index.search_vector_exact(&[0.0; DIM], 5).unwrap_err();
    assert!(matches!(err, IndexError::InvalidQuery { .. }), "{err}");
    assert!(index.search_vector(&[1.0; DIM], 0).unwrap().is_empty());
}

#[test]
fn duplicate_ids_are_rejected_across_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    writer.add(doc("same", None, Some("a"))).unwrap();
    let err = writer.add(doc("same", None, Some("b"))).unwrap_err();
    assert!(
        matches!(&err, IndexError::DuplicateId { id } if id == "same"),
        "{err}"
    );
    writer.commit().unwrap();
    drop(writer);
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert!(writer.contains("same").unwrap());
    let err = writer.add(doc("same", None, None)).unwrap_err();
    assert!(matches!(err, IndexError::DuplicateId { .. }), "{err}");
}

#[test]
fn doc_fields_finds_committed_and_pending_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    writer.add(doc("committed", None, Some("a"))).unwrap();
    writer.commit().unwrap();
    drop(writer);
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    let mut bare = doc("pending", None, None);
    bare.fields.clear();
    writer.add(bare).unwrap();
    assert_eq!(
        writer.doc_fields("committed").unwrap().unwrap()["source"],
        "committed.dcm"
    );
    assert!(writer.doc_fields("pending").unwrap().unwrap().is_empty());
    assert_eq!(writer.doc_fields("absent").unwrap(), None);
    // a rejected duplicate leaves the first document's fields in place
    let mut clash = doc("committed", None, None);
    clash.fields.insert("source".into(), "other.dcm".into());
    assert!(writer.add(clash).is_err());
    assert_eq!(
        writer.doc_fields("committed").unwrap().unwrap()["source"],
        "committed.dcm"
    );
}

#[test]
fn a_tracked_field_finds_live_documents_by_value_across_commits_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    // Committed before tracking starts, so tracking reads them back from the docs file.
    for i in 0..5000 {
        let mut d = doc(&format!("old-{i}"), None, None);
        d.fields
            .insert("sha".into(), format!("content-{}", i % 2500));
        writer.add(d).unwrap();
    }
    writer.commit().unwrap();
    let untracked = writer.find_by_field("sha", "content-1").unwrap_err();
    assert!(untracked.to_string().contains("not tracked"), "{untracked}");
    writer.track_field("sha").unwrap();
    assert_eq!(writer.find_by_field("sha", "content-7").unwrap(), [7, 2507]);
    // Added after tracking started (pending, then committed), and deleted.
    let mut d = doc("new", None, None);
    d.fields.insert("sha".into(), "content-7".into());
    let new = writer.add(d).unwrap();
    assert_eq!(
        writer.find_by_field("sha", "content-7").unwrap(),
        [7, 2507, new]
    );
    assert!(writer.delete("old-7").unwrap());
    assert_eq!(
        writer.find_by_field("sha", "content-7").unwrap(),
        [2507, new]
    );
    writer.commit().unwrap();
    assert_eq!(
        writer.find_by_field("sha", "content-7").unwrap(),
        [2507, new]
    );
    assert!(writer
        .find_by_field("sha", "content-9999")
        .unwrap()
        .is_empty());
    // Another field's value, or a document without the field, is no match.
    assert!(writer.find_by_field("sha", "old-8.dcm").unwrap().is_empty());
    drop(writer);

    let mut writer = IndexWriter::open(dir.path()).unwrap();
    writer.track_field("sha").unwrap();
    writer.track_field("sha").unwrap();
    assert_eq!(
        writer.find_by_field("sha", "content-7").unwrap(),
        [2507, new]
    );
    assert_eq!(
        writer.find_by_field("sha", "content-2499").unwrap(),
        [2499, 4999]
    );
}

#[test]
fn create_refuses_existing_index_and_non_empty_folder_open_refuses_non_index() {
    let dir = tempfile::tempdir().unwrap();
    let writer = IndexWriter::create(dir.path().join("idx"), spec(DIM)).unwrap();
    drop(writer);
    let err = IndexWriter::create(dir.path().join("idx"), spec(DIM)).unwrap_err();
    assert!(matches!(err, IndexError::AlreadyExists { .. }), "{err}");

    std::fs::create_dir(dir.path().join("other")).unwrap();
    std::fs::write(dir.path().join("other/notes.txt"), b"hello").unwrap();
    let err = IndexWriter::create(dir.path().join("other"), spec(DIM)).unwrap_err();
    assert!(matches!(err, IndexError::DirectoryNotEmpty { .. }), "{err}");

    let err = Index::open(dir.path().join("other")).unwrap_err();
    assert!(matches!(err, IndexError::NotAnIndex { .. }), "{err}");
    assert!(err.to_string().contains("cxr index"), "{err}");
    let err = IndexWriter::open(dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, IndexError::NotAnIndex { .. }), "{err}");

    // a freshly created, never committed index opens as an empty index
    let index = Index::open(dir.path().join("idx")).unwrap();
    assert!(index.is_empty());
    assert!(index.search_vector(&[1.0; DIM], 3).unwrap().is_empty());
    assert!(index.search_text("effusion", 3).unwrap().is_empty());
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    let err = IndexWriter::open(dir.path()).unwrap_err();
    assert!(matches!(err, IndexError::Locked { .. }), "{err}");
}

#[test]
fn appending_after_reopen_continues_the_graph_and_text_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(3);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 40);
    writer.commit().unwrap();
    drop(writer);

    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert_eq!(writer.len(), 40);
    assert_eq!(writer.spec(), &spec(DIM));
    write_docs(&mut writer, &mut rng, 40, 40);
    writer
        .add(doc(
            "late",
            Some(rng.unit_vector(DIM)),
            Some("Cardiomegaly with effusions."),
        ))
        .unwrap();
    let info = writer.commit().unwrap();
    assert_eq!((info.generation, info.doc_count, info.added), (2, 81, 41));
    // a commit with nothing new changes nothing
    assert_eq!(writer.commit().unwrap().generation, 2);
    drop(writer);

    let index = Index::open_with(
        dir.path(),
        SearchOptions {
            exact_threshold: 0,
            ..SearchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(index.len(), 81);
    assert_eq!(index.vector_count(), 55);
    // every vector, old and new, is found by the (reloaded, then extended) graph
    for ord in 0..index.len() as u32 {
        if let Some(v) = index.vector(ord) {
            let hits = index.search_vector(&v, 1).unwrap();
            assert_eq!(hits[0].ord, ord, "vector {ord} not found by the graph");
        }
    }
    assert_eq!(
        ids(&index, &index.search_text("cardiomegaly", 5).unwrap()),
        ["late"]
    );
    assert_eq!(index.search_text("pneumothorax", 100).unwrap().len(), 40);

    // only the current generation's files remain
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "text")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "docs-2.jsonl",
            "graph-2.flat",
            "hnsw-2.hnsw.data",
            "hnsw-2.hnsw.graph",
            "manifest.json",
            "vectors-2.f32"
        ]
    );
}

/// Regression: a crash after some documents were added but before `commit` must leave exactly
/// the committed state, and the next writer must not see the lost documents either (their
/// ordinals are reused, so stale tantivy documents would otherwise alias new ones).
#[test]
fn crash_before_commit_keeps_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(4);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 10);
    writer.commit().unwrap();
    writer
        .add(doc(
            "lost",
            Some(rng.unit_vector(DIM)),
            Some("tension pneumothorax lost"),
        ))
        .unwrap();
    write_docs(&mut writer, &mut rng, 10, 5);
    drop(writer); // no commit: the "crash"

    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.len(), 10);
    assert_eq!(index.ord_of("lost"), None);
    assert!(index.search_text("tension", 10).unwrap().is_empty());
    drop(index);

    // The next writer starts from the commit and its new documents reuse the ordinals.
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert_eq!(writer.len(), 10);
    assert!(!writer.contains("lost").unwrap());
    writer
        .add(doc("new", None, Some("small effusion")))
        .unwrap();
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert!(index.search_text("tension", 10).unwrap().is_empty());
    assert_eq!(
        ids(&index, &index.search_text("effusion", 10).unwrap()),
        ["new"]
    );
}

/// Regression: tantivy commits before our manifest. If we die in between, tantivy holds
/// documents our manifest never committed; readers must not return them.
#[test]
fn crash_between_text_commit_and_manifest_hides_uncommitted_text_hits() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    writer
        .add(doc("kept", None, Some("left effusion")))
        .unwrap();
    writer.commit().unwrap();
    // Keep the committed state of generation 1 (the next commit deletes its docs file).
    let manifest_before = std::fs::read(dir.path().join("manifest.json")).unwrap();
    let docs_before = std::fs::read(dir.path().join("docs-1.jsonl")).unwrap();
    writer
        .add(doc("ghost", None, Some("right effusion ghost")))
        .unwrap();
    writer.commit().unwrap();
    drop(writer);
    // Put generation 1 back while tantivy keeps the ghost: the state after a crash between
    // tantivy's commit and the manifest rename.
    std::fs::write(dir.path().join("manifest.json"), manifest_before).unwrap();
    std::fs::write(dir.path().join("docs-1.jsonl"), docs_before).unwrap();

    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.len(), 1);
    let hits = index.search_text("effusion", 10).unwrap();
    assert_eq!(ids(&index, &hits), ["kept"]);
    assert!(index.search_text("ghost", 10).unwrap().is_empty());
    drop(index);

    // and a writer discards the ghost before reusing its ordinal
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    writer.add(doc("next", None, Some("no effusion"))).unwrap();
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert!(index.search_text("ghost", 10).unwrap().is_empty());
    assert_eq!(index.search_text("effusion", 10).unwrap().len(), 2);
}

fn current_vectors_file(dir: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    m["files"]["vectors"]["name"].as_str().unwrap().to_string()
}

#[test]
fn a_vector_file_of_the_wrong_length_is_corrupt_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(5);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 12);
    writer.commit().unwrap();
    drop(writer);
    let name = current_vectors_file(dir.path());
    let path = dir.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&path, &bytes).unwrap();

    let err = Index::open(dir.path()).unwrap_err();
    match &err {
        IndexError::Corrupt { path, reason } => {
            assert!(path.ends_with(&name), "{err}");
            assert!(reason.contains("bytes"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains(&name), "{err}");
    let err = IndexWriter::open(dir.path()).unwrap_err();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
}

#[test]
fn a_flipped_bit_in_the_vector_file_is_caught_by_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(6);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 12);
    writer.commit().unwrap();
    drop(writer);
    let path = dir.path().join(current_vectors_file(dir.path()));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[17] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, IndexError::Corrupt { reason, .. } if reason.contains("CRC")),
        "{err}"
    );
}

/// The writer does not hold committed rows: each commit copies them from the committed file.
/// Over several commits, a reopen and both storages, every stored row is the row added.
#[test]
fn commits_carry_every_committed_row_into_the_next_generation() {
    for storage in [VectorStorage::F32, VectorStorage::F16] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SplitMix(11);
        let options = CreateOptions {
            vector_storage: storage,
            ..CreateOptions::default()
        };
        let mut writer = IndexWriter::create_with(dir.path(), spec(DIM), options).unwrap();
        let mut added: Vec<(String, Vec<f32>)> = Vec::new();
        let mut add = |writer: &mut IndexWriter, rng: &mut SplitMix, n: usize| {
            for _ in 0..n {
                let id = format!("doc-{}", added.len());
                let v = rng.unit_vector(DIM);
                writer.add(doc(&id, Some(v.clone()), None)).unwrap();
                added.push((id, v));
            }
        };
        add(&mut writer, &mut rng, 30);
        writer.commit().unwrap();
        add(&mut writer, &mut rng, 25);
        writer.commit().unwrap();
        drop(writer);
        let mut writer = IndexWriter::open(dir.path()).unwrap();
        add(&mut writer, &mut rng, 20);
        writer.commit().unwrap();
        drop(writer);

        let index = Index::open(dir.path()).unwrap();
        assert_eq!(index.vector_count(), 75);
        // Rows are renormalised (f32 rounding) and, for f16, rounded to binary16 (relative
        // error <= 2^-11).
        let tolerance = match storage {
            VectorStorage::F32 => 0.0,
            VectorStorage::F16 => 1.0 / 2048.0,
        };
        for (ord, (id, v)) in added.iter().enumerate() {
            assert_eq!(index.doc(ord as u32).unwrap().id, id.as_str());
            let stored = index.vector(ord as u32).unwrap();
            for (a, b) in stored.iter().zip(v) {
                assert!(
                    (a - b).abs() <= tolerance * b.abs() + 1e-6,
                    "{storage} row {ord}: {a} against {b}"
                );
            }
        }
    }
}

/// A committed vector file damaged while a writer holds the index is not carried into the
/// next generation under a fresh checksum: the commit fails, naming the file, and the
/// manifest still names the damaged generation.
#[test]
fn a_commit_refuses_to_copy_a_damaged_vector_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(12);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 12);
    writer.commit().unwrap();
    let name = current_vectors_file(dir.path());
    let path = dir.path().join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    write_docs(&mut writer, &mut rng, 12, 6);
    let err = writer.commit().unwrap_err();
    assert!(
        matches!(&err, IndexError::Corrupt { path, reason }
            if path.ends_with(&name) && reason.contains("CRC")),
        "{err}"
    );
    drop(writer);
    assert_eq!(current_vectors_file(dir.path()), name);
    // A new writer refuses the index at once.
    let err = IndexWriter::open(dir.path()).unwrap_err();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err}");
}

#[test]
fn a_newer_format_version_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(IndexWriter::create(dir.path(), spec(DIM)).unwrap());
    let path = dir.path().join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["format_version"] = serde_json::json!(cxr_index::FORMAT_VERSION + 7);
    std::fs::write(&path, m.to_string()).unwrap();
    let err = Index::open(dir.path()).unwrap_err();
    assert!(matches!(err, IndexError::FormatVersion { .. }), "{err}");
}

#[test]
fn hnsw_recall_at_10_against_exact_search() {
    const N: usize = 5000;
    const D: usize = 64;
    const QUERIES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(0x5EED);
    let mut writer = IndexWriter::create(dir.path(), spec(D)).unwrap();
    for i in 0..N {
        writer
            .add(Document {
                id: format!("v{i}"),
                vector: Some(rng.unit_vector(D)),
                ..Default::default()
            })
            .unwrap();
    }
    writer.commit().unwrap();
    drop(writer);

    let index = Index::open(dir.path()).unwrap();
    let mut found = 0usize;
    for _ in 0..QUERIES {
        let q = rng.unit_vector(D);
        let approx = index.search_vector(&q, 10).unwrap();
        let exact = index.search_vector_exact(&q, 10).unwrap();
        assert_eq!(exact.len(), 10);
        found += exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.ord == e.ord))
            .count();
    }
    let recall = found as f64 / (QUERIES * 10) as f64;
    assert!(recall >= 0.95, "recall@10 = {recall:.3}");
}

#[test]
fn f16_storage_halves_the_vector_file_and_keeps_recall() {
    const N: usize = 4000;
    const D: usize = 64;
    const QUERIES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(0xF16);
    let originals: Vec<Vec<f32>> = (0..N).map(|_| rng.unit_vector(D)).collect();
    let options = CreateOptions {
        vector_storage: VectorStorage::F16,
        ..CreateOptions::default()
    };
    let add = |writer: &mut IndexWriter, range: std::ops::Range<usize>| {
        for i in range {
            writer
                .add(Document {
                    id: format!("v{i}"),
                    vector: Some(originals[i].clone()),
                    ..Default::default()
                })
                .unwrap();
        }
        writer.commit().unwrap();
    };
    let mut writer = IndexWriter::create_with(dir.path(), spec(D), options).unwrap();
    add(&mut writer, 0..N / 2);
    drop(writer);
    // A reopened writer keeps the storage it was created with.
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    assert_eq!(writer.vector_storage(), VectorStorage::F16);
    add(&mut writer, N / 2..N);
    drop(writer);

    let name = current_vectors_file(dir.path());
    assert!(name.ends_with(".f16"), "{name}");
    let len = std::fs::metadata(dir.path().join(&name)).unwrap().len();
    assert_eq!(len, (N * D * 2) as u64);
    let report = cxr_index::check(dir.path()).unwrap();
    assert!(report.ok(), "{report:?}");

    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.manifest().vector_storage, VectorStorage::F16);
    // Stored rows are the originals rounded to binary16: relative error at most 2^-11.
    let ord = index.ord_of("v123").unwrap();
    let stored = index.vector(ord).unwrap();
    for (s, o) in stored.iter().zip(&originals[123]) {
        assert!(
            (s - o).abs() <= o.abs() * 2f32.powi(-11) + 1e-7,
            "{s} vs {o}"
        );
    }
    // Recall@10 of the graph over f16 rows against an exact f32 scan of the originals.
    let mut found = 0usize;
    for _ in 0..QUERIES {
        let q = rng.unit_vector(D);
        let mut exact: Vec<(usize, f32)> = originals
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(&q).map(|(a, b)| a * b).sum()))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let approx = ids(&index, &index.search_vector(&q, 10).unwrap());
        found += exact[..10]
            .iter()
            .filter(|(i, _)| approx.contains(&format!("v{i}")))
            .count();
    }
    let recall = found as f64 / (QUERIES * 10) as f64;
    assert!(recall >= 0.95, "recall@10 = {recall:.3}");
    let kept = stored.to_vec();
    drop(index);

    // Deletion and compaction rewrite the rows in the same storage, unchanged.
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    for i in 0..100 {
        assert!(writer.delete(&format!("v{i}")).unwrap());
    }
    writer.compact().unwrap();
    drop(writer);
    let name = current_vectors_file(dir.path());
    assert!(name.ends_with(".f16"), "{name}");
    let len = std::fs::metadata(dir.path().join(&name)).unwrap().len();
    assert_eq!(len, ((N - 100) * D * 2) as u64);
    assert!(cxr_index::check(dir.path()).unwrap().ok());
    let index = Index::open(dir.path()).unwrap();
    let ord = index.ord_of("v123").unwrap();
    assert_eq!(index.vector(ord).unwrap().as_ref(), kept.as_slice());
}

#[test]
fn storage_is_recorded_and_older_manifests_read_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(8);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 12);
    writer.commit().unwrap();
    drop(writer);
    assert!(current_vectors_file(dir.path()).ends_with(".f32"));
    // A format version 2 manifest has no `vector_storage`: it is f32.
    let path = dir.path().join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["format_version"] = serde_json::json!(2);
    m.as_object_mut().unwrap().remove("vector_storage");
    std::fs::write(&path, m.to_string()).unwrap();
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.manifest().vector_storage, VectorStorage::F32);
    assert_eq!(index.len(), 12);
}

#[test]
fn exact_search_can_be_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix(7);
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    write_docs(&mut writer, &mut rng, 0, 30);
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let q = rng.unit_vector(DIM);
    let hits = index
        .search_vector_exact_filtered(&q, 100, |ord| ord % 2 == 0)
        .unwrap();
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.ord % 2 == 0));
    let all = index.search_vector_exact(&q, 100).unwrap();
    let expected: Vec<_> = all.into_iter().filter(|h| h.ord % 2 == 0).collect();
    assert_eq!(hits, expected);
}

#[test]
fn bm25_stems_and_accepts_any_user_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    let reports = [
        ("r1", "Small left pleural effusion. No pneumothorax."),
        ("r2", "Bilateral pleural effusions with cardiomegaly."),
        ("r3", "Clear lungs. Normal heart size."),
        ("r4", "Right upper lobe consolidation, likely pneumonia."),
    ];
    for (id, text) in reports {
        writer.add(doc(id, None, Some(text))).unwrap();
    }
    writer
        .add(doc("image-only", Some(vec![1.0; DIM]), None))
        .unwrap();
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();

    let mut hits = ids(&index, &index.search_text("effusions", 10).unwrap());
    hits.sort();
    assert_eq!(hits, ["r1", "r2"]);
    assert_eq!(
        ids(&index, &index.search_text("EFFUSION", 10).unwrap()).len(),
        2
    );
    let best = ids(
        &index,
        &index
            .search_text("small left pleural effusion", 10)
            .unwrap(),
    );
    assert_eq!(best[0], "r1");
    assert_eq!(
        ids(&index, &index.search_text("pneumonias", 10).unwrap()),
        ["r4"]
    );

    for odd in [
        "",
        "   ",
        "no pneumothorax?",
        "\"pleural effusion",
        "impression: effusion",
        "text:effusion",
        "-effusion",
        "effusion AND OR NOT (",
        "[1 TO *}",
        "?*:^~",
        "pneumo*",
        "é ü 肺",
    ] {
        let result = index.search_text(odd, 10);
        assert!(result.is_ok(), "query {odd:?} failed: {result:?}");
    }
    assert!(index.search_text("", 10).unwrap().is_empty());
    assert!(index.search_text("?*:^~", 10).unwrap().is_empty());
    assert_eq!(
        ids(
            &index,
            &index.search_text("impression: effusion", 10).unwrap()
        )
        .len(),
        2
    );
    assert!(index.search_text("effusion", 0).unwrap().is_empty());
    assert_eq!(index.search_text("effusion", 1).unwrap().len(), 1);
}

#[test]
fn bm25_parameters_are_set_at_open_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    let reports = [
        ("short", "Effusion."),
        (
            "long",
            "Effusion effusion effusion, with a long list of other findings here.",
        ),
        ("none", "Clear lungs."),
    ];
    for (id, text) in reports {
        writer.add(doc(id, None, Some(text))).unwrap();
    }
    writer.commit().unwrap();
    drop(writer);
    assert_eq!(
        SearchOptions::default().bm25,
        Bm25Params { k1: 0.9, b: 0.4 }
    );
    let open = |k1: f32, b: f32| {
        Index::open_with(
            dir.path(),
            SearchOptions {
                bm25: Bm25Params { k1, b },
                ..SearchOptions::default()
            },
        )
    };
    // k1 = 0: term frequency is ignored, both matching reports tie, the lower ordinal first.
    let index = open(0.0, 0.4).unwrap();
    let hits = index.search_text("effusion", 10).unwrap();
    assert_eq!(ids(&index, &hits), ["short", "long"]);
    assert_eq!(hits[0].score, hits[1].score);
    // b = 0: no length normalisation, the repeated term wins.
    let index = open(1.2, 0.0).unwrap();
    let hits = index.search_text("effusion", 10).unwrap();
    assert_eq!(ids(&index, &hits), ["long", "short"]);
    // full length normalisation with little saturation: the short report wins.
    let index = open(0.5, 1.0).unwrap();
    let hits = index.search_text("effusion", 10).unwrap();
    assert_eq!(ids(&index, &hits), ["short", "long"]);
    assert!(hits[0].score > hits[1].score);
    for (k1, b) in [(-1.0, 0.4), (f32::NAN, 0.4), (0.9, 1.01), (0.9, -0.5)] {
        let err = open(k1, b).unwrap_err();
        assert!(matches!(err, IndexError::InvalidParams { .. }), "{err}");
    }
}

#[test]
fn failures_are_appended_to_errors_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    writer
        .record_failure("a/b.dcm", "unsupported transfer syntax")
        .unwrap();
    writer
        .record_failure("c.png", "truncated \"file\"\nsecond line")
        .unwrap();
    drop(writer);
    let text = std::fs::read_to_string(dir.path().join("errors.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 2);
    let failures = read_failures(dir.path()).unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].path, "a/b.dcm");
    assert_eq!(failures[1].reason, "truncated \"file\"\nsecond line");
    assert!(failures[0].time.ends_with('Z'));
    // the log survives reopening and appends
    let mut writer = IndexWriter::open(dir.path()).unwrap();
    writer.record_failure("d.dcm", "x").unwrap();
    assert_eq!(read_failures(dir.path()).unwrap().len(), 3);
}

#[test]
fn asserted_and_denied_text_are_searched_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let mut writer = IndexWriter::create(&dir, spec(DIM)).unwrap();
    for (id, asserted, denied) in [
        ("a", "small left pleural effusion", Some("pneumothorax")),
        ("b", "large pneumothorax", None),
        ("c", "cardiomegaly", Some("pleural effusion pneumothorax")),
        ("d", "", Some("cardiomegaly")),
    ] {
        let mut d = doc(id, None, Some(asserted));
        d.negated_text = denied.map(str::to_string);
        writer.add(d).unwrap();
    }
    assert!(writer.delete("d").unwrap());
    writer.commit().unwrap();
    let index = Index::open(&dir).unwrap();
    assert!(index.has_text_field(TextField::Negated));
    let all = |_: u32| true;
    let search = |field, q: &str| {
        let hits = index.search_text_field(field, q, 10, &all).unwrap();
        ids(&index, &hits)
    };
    assert_eq!(search(TextField::Asserted, "pneumothorax"), ["b"]);
    let mut denied = search(TextField::Negated, "pneumothorax");
    denied.sort();
    assert_eq!(denied, ["a", "c"]);
    // The plain text search is the asserted one.
    assert_eq!(
        ids(&index, &index.search_text("effusion", 10).unwrap()),
        ["a"]
    );
    // Matches are every live document holding a term, deleted ones left out.
    let ord = |id: &str| (0..index.ord_bound()).find(|&o| index.doc(o).is_some_and(|d| d.id == id));
    assert_eq!(
        index
            .text_matches(TextField::Asserted, "effusions")
            .unwrap(),
        vec![ord("a").unwrap()]
    );
    assert!(index
        .text_matches(TextField::Negated, "cardiomegaly")
        .unwrap()
        .is_empty());
}

/// Columns give each live document's value of a field, each distinct value once, and
/// nothing for deleted documents or those without the field; a column asked for again is
/// the one kept.
#[test]
fn field_columns_give_each_documents_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = IndexWriter::create(dir.path(), spec(DIM)).unwrap();
    let views = [Some("PA"), Some("AP"), None, Some("PA"), Some("LL")];
    for (i, view) in views.iter().enumerate() {
        let mut d = doc(&format!("d{i}"), None, None);
        if let Some(v) = view {
            d.fields.insert("view".into(), v.to_string());
        }
        writer.add(d).unwrap();
    }
    writer.commit().unwrap();
    assert!(writer.delete("d4").unwrap());
    writer.commit().unwrap();
    let index = Index::open(dir.path()).unwrap();
    let columns = index.columns(&["view", "source", "absent"]);
    let value = |k: usize, ord: u32| {
        columns[k]
            .value_of(ord)
            .map(|v| columns[k].values()[v].as_str())
    };
    let views: Vec<_> = (0..6).map(|ord| value(0, ord)).collect();
    assert_eq!(
        views,
        [Some("PA"), Some("AP"), None, Some("PA"), None, None]
    );
    assert_eq!(columns[0].values(), ["PA", "AP"]);
    assert_eq!(value(1, 3), Some("d3.dcm"));
    assert!(columns[2].values().is_empty() && value(2, 0).is_none());
    let again = index.columns(&["view"]);
    assert!(std::sync::Arc::ptr_eq(&again[0], &columns[0]));
}
