//! `cxr_index::check`: a healthy index passes every item; each kind of damage fails the item
//! that names it, with a detail that says what is wrong.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cxr_index::{
    check, CheckItem, CheckReport, Document, Index, IndexError, IndexSpec, IndexWriter,
};

use common::SplitMix;

const DIM: usize = 16;
const DOCS: usize = 300;

fn spec() -> IndexSpec {
    IndexSpec {
        dim: DIM,
        model_fingerprint: "fp-check".into(),
        model_name: "check-model".into(),
    }
}

/// A committed index of `DOCS` documents (every fifth without a vector, every other with a
/// report) in two commits, with one recorded failure.
fn good_index(with_vectors: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let mut rng = SplitMix(42);
    let mut writer = IndexWriter::create(&path, spec()).unwrap();
    for i in 0..DOCS {
        let vector = (with_vectors && i % 5 != 4).then(|| rng.unit_vector(DIM));
        let text = (i % 2 == 0 || !with_vectors).then(|| format!("report {i}: small effusion"));
        let mut fields = BTreeMap::new();
        fields.insert("source".to_string(), format!("{i}.dcm"));
        writer
            .add(Document {
                id: format!("doc-{i}"),
                vector,
                text,
                negated_text: None,
                fields,
            })
            .unwrap();
        if i == DOCS / 2 {
            writer.commit().unwrap();
        }
    }
    writer
        .record_failure("bad.dcm", "not a DICOM file")
        .unwrap();
    writer.commit().unwrap();
    (dir, path)
}

fn manifest(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path.join("manifest.json")).unwrap()).unwrap()
}

fn file_name(path: &Path, pointer: &str) -> String {
    manifest(path)
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap()
        .to_string()
}

fn item<'a>(report: &'a CheckReport, name: &str) -> &'a CheckItem {
    report
        .item(name)
        .unwrap_or_else(|| panic!("no `{name}` item in\n{report}"))
}

/// Asserts that exactly the items in `failing` failed, and returns the report.
fn assert_fails(path: &Path, failing: &[&str]) -> CheckReport {
    let report = check(path).unwrap();
    let failed: Vec<&str> = report.failures().map(|i| i.name.as_str()).collect();
    assert_eq!(failed, failing, "\n{report}");
    assert!(!report.ok());
    report
}

#[test]
fn a_healthy_index_passes_every_item() {
    let (_dir, path) = good_index(true);
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    let names: Vec<&str> = report.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            CheckItem::MANIFEST,
            CheckItem::FILES,
            CheckItem::DOCS,
            CheckItem::VECTORS,
            CheckItem::TEXT,
            CheckItem::HNSW,
            CheckItem::FLAT_GRAPH,
            CheckItem::SEGMENTS,
            CheckItem::ERRORS,
        ]
    );
    assert!(item(&report, CheckItem::FLAT_GRAPH)
        .detail
        .contains("240 points"));
    assert!(item(&report, CheckItem::DOCS)
        .detail
        .contains("300 records"));
    assert!(item(&report, CheckItem::VECTORS)
        .detail
        .contains("240 vectors"));
    assert!(item(&report, CheckItem::HNSW)
        .detail
        .contains("all reachable"));
    assert!(item(&report, CheckItem::ERRORS)
        .detail
        .contains("1 failures recorded"));

    // --json form and the text form
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["items"][0]["name"], "manifest");
    assert_eq!(json["items"].as_array().unwrap().len(), 9);
    let text = report.to_string();
    assert_eq!(text.lines().count(), 9);
    assert!(text.lines().all(|l| l.starts_with("ok ")), "{text}");
}

#[test]
fn a_report_only_index_passes() {
    let (_dir, path) = good_index(false);
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    assert_eq!(item(&report, CheckItem::VECTORS).detail, "no vectors");
    assert!(item(&report, CheckItem::HNSW).detail.contains("no graph"));
}

#[test]
fn a_fresh_empty_index_passes() {
    let dir = tempfile::tempdir().unwrap();
    drop(IndexWriter::create(dir.path(), spec()).unwrap());
    let report = check(dir.path()).unwrap();
    assert!(report.ok(), "\n{report}");
}

#[test]
fn a_folder_without_manifest_is_not_an_index() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        check(dir.path()),
        Err(IndexError::NotAnIndex { .. })
    ));
}

#[test]
fn a_flipped_byte_in_the_vector_file_fails_its_crc() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/vectors/name");
    let file = path.join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4 * DIM * 7 + 3] ^= 0x40; // row 7, component 0, exponent bits
    std::fs::write(&file, &bytes).unwrap();

    let report = assert_fails(&path, &[CheckItem::FILES, CheckItem::VECTORS]);
    let files = &item(&report, CheckItem::FILES).detail;
    assert!(files.contains(&name) && files.contains("CRC-32"), "{files}");
    // the vector check finds the damaged vector itself
    let vectors = &item(&report, CheckItem::VECTORS).detail;
    assert!(vectors.contains("row 7 "), "{vectors}");
}

#[test]
fn a_truncated_docs_file_is_named() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/docs_parts/0/name");
    let file = path.join(&name);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() * 2 / 3]).unwrap();

    let report = assert_fails(&path, &[CheckItem::FILES, CheckItem::DOCS]);
    let files = &item(&report, CheckItem::FILES).detail;
    assert!(files.contains(&name) && files.contains("length"), "{files}");
    let docs = &item(&report, CheckItem::DOCS).detail;
    assert!(
        docs.contains(&name) && docs.contains("the manifest says 300"),
        "{docs}"
    );
}

#[test]
fn a_deleted_graph_file_fails_files_and_hnsw() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/hnsw/graph/name");
    std::fs::remove_file(path.join(&name)).unwrap();

    let report = assert_fails(&path, &[CheckItem::FILES, CheckItem::HNSW]);
    for which in [CheckItem::FILES, CheckItem::HNSW] {
        let detail = &item(&report, which).detail;
        assert!(
            detail.contains(&name) && detail.contains("missing"),
            "{detail}"
        );
    }
}

#[test]
fn a_graph_dump_with_a_matching_crc_but_garbage_inside_fails_without_panicking() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/hnsw/graph/name");
    let garbage = vec![0xA5u8; 256];
    std::fs::write(path.join(&name), &garbage).unwrap();
    // Make the manifest agree with the garbage, so hnsw_rs itself gets to read it.
    let mut m = manifest(&path);
    m["files"]["hnsw"]["graph"]["len"] = serde_json::json!(garbage.len());
    m["files"]["hnsw"]["graph"]["crc32"] = serde_json::json!(crc32(&garbage));
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();

    let report = assert_fails(&path, &[CheckItem::HNSW]);
    let detail = &item(&report, CheckItem::HNSW).detail;
    assert!(detail.contains("reload"), "{detail}");
}

#[test]
fn a_newer_format_version_fails_the_manifest_item() {
    let (_dir, path) = good_index(true);
    let mut m = manifest(&path);
    m["format_version"] = serde_json::json!(cxr_index::FORMAT_VERSION + 1);
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();

    let report = assert_fails(&path, &[CheckItem::MANIFEST]);
    let detail = &item(&report, CheckItem::MANIFEST).detail;
    let expected = format!("format version {}", cxr_index::FORMAT_VERSION + 1);
    assert!(detail.contains(&expected), "{detail}");
    // nothing else can be trusted without a manifest; the failure log is still read
    let names: Vec<&str> = report.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [CheckItem::MANIFEST, CheckItem::ERRORS]);
}

#[test]
fn a_corrupt_manifest_fails_the_manifest_item() {
    let (_dir, path) = good_index(true);
    let file = path.join("manifest.json");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let report = assert_fails(&path, &[CheckItem::MANIFEST]);
    let detail = &item(&report, CheckItem::MANIFEST).detail;
    assert!(
        detail.contains("manifest.json") && detail.contains("corrupt"),
        "{detail}"
    );
}

#[test]
fn a_removed_text_folder_fails_the_text_item() {
    let (_dir, path) = good_index(true);
    std::fs::remove_dir_all(path.join("text")).unwrap();

    let report = assert_fails(&path, &[CheckItem::TEXT]);
    let detail = &item(&report, CheckItem::TEXT).detail;
    assert!(
        detail.contains("text") && detail.contains("meta.json"),
        "{detail}"
    );
}

#[test]
fn uncommitted_text_documents_are_a_warning_not_a_failure() {
    let (_dir, path) = good_index(true);
    // Keep generation 2, commit a third, then put generation 2 back: tantivy now holds
    // documents with ord >= doc_count, as after a crash before the manifest rename.
    let kept: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let mut writer = IndexWriter::open(&path).unwrap();
    for i in 0..3 {
        writer
            .add(Document {
                id: format!("ghost-{i}"),
                text: Some("ghost".into()),
                negated_text: None,
                ..Default::default()
            })
            .unwrap();
    }
    writer.commit().unwrap();
    drop(writer);
    for (p, bytes) in kept {
        std::fs::write(p, bytes).unwrap();
    }

    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    let detail = &item(&report, CheckItem::TEXT).detail;
    assert!(
        detail.contains("warning: 3 documents with ord >= 300"),
        "{detail}"
    );
    // ...and the leftovers of generation 3 are mentioned by the files item
    let files = &item(&report, CheckItem::FILES).detail;
    assert!(files.contains("leftover"), "{files}");
}

#[test]
fn a_non_unit_vector_is_named_by_row_and_ordinal() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/vectors/name");
    let file = path.join(&name);
    let mut bytes = std::fs::read(&file).unwrap();
    // Row 10 is document 12 (every fifth document has no vector): scale it by 2.
    for c in 0..DIM {
        let at = 4 * (DIM * 10 + c);
        let x = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) * 2.0;
        bytes[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&file, &bytes).unwrap();
    let mut m = manifest(&path);
    m["files"]["vectors"]["crc32"] = serde_json::json!(crc32(&bytes));
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();

    // The graph keeps its own copy of the vectors, which no longer matches.
    let report = assert_fails(&path, &[CheckItem::VECTORS, CheckItem::HNSW]);
    let vectors = &item(&report, CheckItem::VECTORS).detail;
    assert!(
        vectors.contains("1 a norm off")
            && vectors.contains("row 10 (document ordinal 12)")
            && vectors.contains("norm is 2"),
        "{vectors}"
    );
    let hnsw = &item(&report, CheckItem::HNSW).detail;
    assert!(
        hnsw.contains("different from the vector file (data ids 12)"),
        "{hnsw}"
    );
}

#[test]
fn a_damaged_failure_log_fails_only_in_the_middle() {
    let (_dir, path) = good_index(true);
    let log = path.join(cxr_index::ERRORS_FILE);
    let good = std::fs::read_to_string(&log).unwrap();
    // A torn last line (crash mid-append) is tolerated...
    std::fs::write(&log, format!("{good}{{\"path\":\"x.dcm\",\"rea")).unwrap();
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    assert!(item(&report, CheckItem::ERRORS).detail.contains("torn"));
    // ...a garbage line in the middle is not.
    std::fs::write(&log, format!("not json\n{good}")).unwrap();
    let report = assert_fails(&path, &[CheckItem::ERRORS]);
    assert!(item(&report, CheckItem::ERRORS).detail.contains("line 1"));
}

/// CRC-32 (IEEE), bitwise: the tests need no crc crate.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_flat_graph_that_differs_from_the_dump_is_named_and_refused_at_open() {
    let (_dir, path) = good_index(true);
    let name = file_name(&path, "/files/flat_graph/name");
    let mut bytes = std::fs::read(path.join(&name)).unwrap();
    // The last word is a layer-0 or upper-layer neighbour: point it elsewhere, in range.
    let at = bytes.len() - 4;
    let last = u32::from_le_bytes(bytes[at..].try_into().unwrap());
    bytes[at..].copy_from_slice(&(last ^ 1).to_le_bytes());
    std::fs::write(path.join(&name), &bytes).unwrap();

    // With the recorded CRC, the file item fails and the index refuses to open.
    let report = assert_fails(&path, &[CheckItem::FILES, CheckItem::FLAT_GRAPH]);
    assert!(item(&report, CheckItem::FLAT_GRAPH).detail.contains(&name));
    let err = Index::open(&path).unwrap_err().to_string();
    assert!(err.contains(&name), "{err}");

    // With a CRC that agrees, the comparison with the dump still finds it.
    let mut m = manifest(&path);
    m["files"]["flat_graph"]["crc32"] = serde_json::json!(crc32(&bytes));
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();
    let report = assert_fails(&path, &[CheckItem::FLAT_GRAPH]);
    let detail = &item(&report, CheckItem::FLAT_GRAPH).detail;
    assert!(detail.contains("does not match"), "{detail}");

    // Garbage with a matching CRC is a clear error, not a panic.
    let garbage = vec![0x5Au8; 64];
    std::fs::write(path.join(&name), &garbage).unwrap();
    m["files"]["flat_graph"]["len"] = serde_json::json!(garbage.len());
    m["files"]["flat_graph"]["crc32"] = serde_json::json!(crc32(&garbage));
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();
    let report = assert_fails(&path, &[CheckItem::FLAT_GRAPH]);
    assert!(item(&report, CheckItem::FLAT_GRAPH)
        .detail
        .contains("magic"));
    let err = Index::open(&path).unwrap_err().to_string();
    assert!(err.contains("magic"), "{err}");
}

#[test]
fn an_index_without_a_flat_graph_opens_and_searches_as_before() {
    let (_dir, path) = good_index(true);
    let index = Index::open(&path).unwrap();
    let query: Vec<f32> = (0..16).map(|i| (i as f32 * 0.3).sin()).collect();
    let before = index.search_vector(&query, 10).unwrap();
    drop(index);
    // An index written before flat graphs: no entry in the manifest, no file.
    let name = file_name(&path, "/files/flat_graph/name");
    std::fs::remove_file(path.join(&name)).unwrap();
    let mut m = manifest(&path);
    m["files"].as_object_mut().unwrap().remove("flat_graph");
    std::fs::write(path.join("manifest.json"), m.to_string()).unwrap();
    let report = check(&path).unwrap();
    assert!(report.ok(), "\n{report}");
    assert!(item(&report, CheckItem::FLAT_GRAPH)
        .detail
        .contains("written before"));
    let index = Index::open(&path).unwrap();
    assert_eq!(index.search_vector(&query, 10).unwrap(), before);
}
