//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the regression tests
//! (`tests/fuzz_regressions.rs`), so that a stored input replays exactly what the fuzzer ran.
//!
//! Each function takes arbitrary bytes, drives one parser or decoder of the crate with them and
//! checks the invariants its output must keep. Rejecting the input with an error is a success;
//! a panic (including a failed invariant), an abort, a hang or an unbounded allocation is a bug.

use std::path::Path;

use crate::ingest::{self, dicom, raster, DecodeOptions, GreyImage};
use crate::search::filter::Filter;

/// The name inputs are decoded under in messages; fuzz inputs have no file.
const NAME: &str = "fuzz-input";

/// The pixel limit the image targets decode under: small, so that a fuzzed header declaring a
/// large image is refused as it would be in production, but the limit is reached quickly.
pub const FUZZ_MAX_PIXELS: u64 = 4 * 1024 * 1024;

fn fuzz_options() -> DecodeOptions {
    DecodeOptions {
        max_pixels: FUZZ_MAX_PIXELS,
        patient_salt: "fuzz".into(),
        // Small, so that JPEG 2000 inputs of a few hundred pixels also take the reduced decode.
        min_side: Some(64),
    }
}

/// A decoded image must be what ingest promises: the declared size, within the limit, every
/// pixel in `[0, 1]`.
fn check_image(image: &GreyImage) {
    assert_eq!(image.pixels.len(), image.width * image.height);
    assert!((image.width as u64) * (image.height as u64) <= FUZZ_MAX_PIXELS);
    for &v in &image.pixels {
        assert!((0.0..=1.0).contains(&v), "pixel {v} outside [0, 1]");
    }
}

/// DICOM bytes through the real decode path: the declared-length check, header, transfer
/// syntax and size checks, the full read, pixel decoding, the Modality LUT, VOI and
/// MONOCHROME1 steps. Also the header-only metadata read and the content sniffing of
/// [`ingest::decode_bytes`].
///
/// Returns what the decode came to, for the regression tests to print.
pub fn dicom_ingest(data: &[u8]) -> String {
    let name = Path::new(NAME);
    let opts = fuzz_options();
    let outcome = describe(dicom::decode_bytes(name, data, &opts).map(|d| d.image));
    let _ = dicom::read_meta_bytes(name, data, &opts);
    if let Ok(decoded) = ingest::decode_bytes(name, data, &opts) {
        check_image(&decoded.image);
    }
    outcome
}

/// Checks a decoded image and says what it is, or the error.
fn describe(result: Result<GreyImage, ingest::IngestError>) -> String {
    match result {
        Ok(image) => {
            check_image(&image);
            format!("decoded {}x{}", image.width, image.height)
        }
        Err(e) => format!("error: {e}"),
    }
}

/// PNG or JPEG bytes to a grey image under the pixel limit.
/// Returns what the decode came to, for the regression tests to print.
pub fn raster_ingest(data: &[u8]) -> String {
    describe(raster::decode_bytes(Path::new(NAME), data, &fuzz_options()))
}

/// Report text: sentence splitting, negation scopes and the asserted text; then the same bytes
/// as a JSONL and as a CSV report table, each report's text and asserted text.
pub fn report_parse(data: &[u8]) {
    use crate::ingest::negation;
    use crate::ingest::reports::{ReportTable, TableColumns, TableFormat};

    let text = String::from_utf8_lossy(data);
    check_report_text(&text);
    let name = Path::new(NAME);
    for format in [TableFormat::Jsonl, TableFormat::Csv] {
        for columns in [
            TableColumns::default(),
            TableColumns {
                key: Some("id".into()),
                text: Some(vec!["findings".into(), "impression".into()]),
            },
        ] {
            let Ok(table) = ReportTable::from_bytes(name, data, format, &columns) else {
                continue;
            };
            assert!(table.len() + table.duplicate_keys >= table.reports().len());
            for report in table.reports() {
                assert!(table.find(&report.key, None, None).is_some());
                if let Some(text) = report.text() {
                    check_report_text(&text);
                }
                if let Some(asserted) = report.asserted_text() {
                    assert!(!asserted.is_empty());
                }
                if let Some(denied) = report.negated_text() {
                    assert!(!denied.is_empty());
                }
            }
        }
    }

    fn check_report_text(text: &str) {
        // Sentences and their spans are in order, inside the text, on character boundaries.
        let mut end = 0;
        for sentence in negation::analyse(text) {
            assert!(end <= sentence.start && sentence.start <= sentence.end);
            assert!(sentence.end <= text.len());
            let _ = sentence.text(text);
            let mut span_end = sentence.start;
            for span in &sentence.spans {
                assert!(span_end <= span.start && span.start <= span.end);
                assert!(span.end <= sentence.end);
                assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
                span_end = span.end;
            }
            end = sentence.end;
        }
        let _ = negation::asserted_text(text);
        // Denied words are lower-cased words of the text (checked for ASCII words: lower-casing
        // a word alone and within the text differ only outside ASCII), never empty.
        let lower = text.to_lowercase().replace('\u{2019}', "'");
        for word in negation::negated_words(text) {
            assert!(!word.is_empty());
            if word.is_ascii() {
                assert!(
                    lower.contains(&word),
                    "denied word {word:?} is not in the text"
                );
            }
        }
    }
}

/// Query-side parsing: `--filter` expressions (one per line) and matching them against documents
/// built from the same lines; the query's split by polarity; the snippet chosen for a query;
/// query-set (JSONL), qrels and run files of `cxr eval`.
pub fn query_parse(data: &[u8]) {
    use std::collections::BTreeMap;

    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    if let Ok(filter) = Filter::parse(&lines) {
        assert_eq!(filter.is_empty(), lines.is_empty());
        let mut doc = BTreeMap::new();
        for line in &lines {
            if let Some((field, value)) = line.split_once('=') {
                doc.insert(field.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let _ = filter.matches(&doc);
        let _ = filter.matches(&BTreeMap::new());
    }
    for line in &lines {
        let _ = Filter::parse(&[line]);
    }

    let (query, report) = text.split_once('\n').unwrap_or((&text, ""));
    // A query read by polarity: a query that denies nothing is left as typed.
    let parsed = crate::search::ParsedQuery::parse(query);
    if !parsed.has_negation() {
        assert_eq!(parsed.asserted, query);
    }
    assert!(parsed.denied_findings.len() <= parsed.denied.len());
    for max_chars in [0, 1, 80] {
        let s = crate::search::snippet(report, query, max_chars);
        assert!(s.chars().count() <= max_chars.max(1), "snippet too long");
    }

    let _ = crate::eval::parse_queries(&text, Path::new("base"));
    let _ = crate::eval::Qrels::parse(&text);
    let _ = crate::eval::parse_run(&text);
}
