//! Inputs the fuzz targets (`fuzz/`) once crashed on, replayed through the same entry functions
//! (`cxr_search::fuzzing`), so that what was fixed stays fixed.
//!
//! Each stored input lives in `tests/fixtures/fuzz/<target>/`; every one must come back as a
//! clean `Ok` or `Err`, never a panic. To replay other inputs (a whole fuzz corpus, a fresh
//! crash) the same way, set `CXR_FUZZ_REPLAY` to a folder holding `<target>/` subfolders:
//!
//! ```sh
//! CXR_FUZZ_REPLAY=fuzz/corpus cargo test --test fuzz_regressions -- --nocapture
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cxr_search::fuzzing;
use cxr_search::ingest::alloc_ceiling::CeilingAllocator;

// As in `cxr`: dicom-rs's reservations are bounded by the data set's length while it parses.
#[global_allocator]
static ALLOCATOR: CeilingAllocator = CeilingAllocator::system();

type Entry = fn(&[u8]) -> String;

const TARGETS: &[(&str, Entry)] = &[
    ("dicom_ingest", fuzzing::dicom_ingest),
    ("raster_ingest", fuzzing::raster_ingest),
    ("report_parse", |d| {
        fuzzing::report_parse(d);
        "parsed".into()
    }),
    ("query_parse", |d| {
        fuzzing::query_parse(d);
        "parsed".into()
    }),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// Runs every input of `root/<target>/` through its entry function; returns the failures.
fn replay(root: &Path, target: &str, entry: Entry) -> Vec<String> {
    let mut failures = Vec::new();
    for path in inputs(&root.join(target)) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            Ok(outcome) => eprintln!("{target} {}: {outcome}", path.display()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                failures.push(format!("{}: panicked: {what}", path.display()));
            }
        }
    }
    failures
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

fn check(target: &str) {
    let (_, entry) = TARGETS.iter().find(|(t, _)| *t == target).expect("target");
    let failures = replay(&fixtures(), target, *entry);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dicom_ingest_regressions() {
    check("dicom_ingest");
}

#[test]
fn raster_ingest_regressions() {
    check("raster_ingest");
}

#[test]
fn report_parse_regressions() {
    check("report_parse");
}

#[test]
fn query_parse_regressions() {
    check("query_parse");
}

/// Replays `CXR_FUZZ_REPLAY/<target>/*` when that variable is set; passes trivially otherwise.
#[test]
fn replay_a_corpus_from_the_environment() {
    let Some(root) = std::env::var_os("CXR_FUZZ_REPLAY") else {
        return;
    };
    let failures: Vec<String> = TARGETS
        .iter()
        .flat_map(|(target, entry)| replay(Path::new(&root), target, *entry))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Peak resident memory of this process so far (`VmHWM`), in KiB; `None` off Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A 500-byte file whose Pixel Data declares 4 GiB: refused from its header lengths, naming
/// the element, without the 4 GiB that dicom-rs would reserve and zero before reading.
#[test]
fn a_declared_4_gib_element_is_refused_without_allocating_it() {
    use cxr_search::ingest::{dicom, DecodeOptions, IngestError};
    let path = fixtures().join("dicom_ingest/declared-4gib-pixel-data.dcm");
    let bytes = std::fs::read(&path).expect("fixture");
    assert!(bytes.len() < 1024);
    let before = peak_rss_kib();
    for result in [
        dicom::decode_bytes(&path, &bytes, &DecodeOptions::default()).map(|_| ()),
        dicom::decode(&path, &DecodeOptions::default()).map(|_| ()),
    ] {
        match result {
            Err(e @ IngestError::Corrupt { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("declared-4gib-pixel-data.dcm"),
                    "{message}"
                );
                assert!(
                    message.contains("(7FE0,0010)") && message.contains("declares 4294967280"),
                    "{message}"
                );
            }
            other => panic!("expected a corrupt-DICOM error, got {other:?}"),
        }
    }
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "peak RSS grew by {} MiB",
            (after - before) / 1024
        );
    }
    // A header-only read checks the whole file too, and refuses it the same way.
    let err = dicom::read_meta_bytes(&path, &bytes, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, IngestError::Corrupt { .. }), "{err}");
}

/// A 109-byte bare data set whose stray item header makes dicom-rs and the length pass read
/// different elements (found by fuzzing): the pass cannot see the 2.6 GB that dicom-rs's
/// reading declares, and the allocation ceiling turns its reservation into an error.
#[test]
fn a_length_the_scan_cannot_see_is_refused_by_the_allocation_ceiling() {
    use cxr_search::ingest::{dicom, DecodeOptions, IngestError};
    let path = fixtures().join("dicom_ingest/bare-stray-item-desyncs-the-scan-2-6gib-element.dcm");
    let bytes = std::fs::read(&path).expect("fixture");
    let before = peak_rss_kib();
    let err = dicom::decode_bytes(&path, &bytes, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(err, IngestError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("bare-stray-item"), "{message}");
    assert!(
        message.contains("declares 2795504762 bytes, more than the 109-byte data set"),
        "{message}"
    );
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "peak RSS grew by {} MiB",
            (after - before) / 1024
        );
    }
}
