//! Reports and per-image metadata tables (JSONL or CSV) attached to the documents of an index.
//!
//! A table has one record per report (or per image). Each record is found by a key column whose
//! value is a document id, a file name, a path relative to the archive root, or a
//! StudyInstanceUID. Text columns (findings, impression, clinical notes...) become the searchable
//! report; a short list of recognised columns (view, sex, age, date, modality, body part) becomes
//! filterable metadata. Every other column is ignored: patient identifiers, free-form notes and the
//! dataset's labels are never copied into the index.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Why a report table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: no key column: none of {tried:?} is present; name one with --key")]
    NoKeyColumn { path: PathBuf, tried: Vec<String> },
    #[error("{path}: text column `{column}` does not exist (columns: {available})")]
    NoTextColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{path}: unknown table format (expected .jsonl, .json or .csv)")]
    Format { path: PathBuf },
}

/// One report: its key, its text sections in table order, and recognised metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub key: String,
    /// Searchable sections, e.g. `findings` and `impression`, in the order they were named.
    pub sections: Vec<(String, String)>,
    /// Canonical metadata fields (`view`, `sex`, `age`, `date`, `modality`, `body_part`).
    pub meta: BTreeMap<String, String>,
}

impl Report {
    /// The searchable text: the non-empty sections joined by blank lines; `None` when empty.
    pub fn text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .sections
            .iter()
            .map(|(_, text)| text.trim())
            .filter(|text| !text.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The searchable text without negated findings (see [`super::negation`]): each non-empty
    /// section's asserted and uncertain words, sections joined by blank lines. `None` when the
    /// report has no text or everything in it is negated ("No acute cardiopulmonary
    /// abnormality.").
    pub fn asserted_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .sections
            .iter()
            .map(|(_, text)| super::negation::asserted_text(text))
            .filter(|text| !text.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

impl Report {
    /// What the report denies, for the negated-findings field of the text index
    /// ([`super::negation::negated_words`]); `None` when it denies nothing.
    pub fn negated_text(&self) -> Option<String> {
        let words: Vec<String> = self
            .sections
            .iter()
            .flat_map(|(_, text)| super::negation::negated_words(text))
            .collect();
        (!words.is_empty()).then(|| words.join(" "))
    }
}

/// Which columns of a table to use. `None` means: detect from the usual names.
#[derive(Debug, Clone, Default)]
pub struct TableColumns {
    pub key: Option<String>,
    /// Columns holding report text; `Some(vec![])` means the table carries metadata only.
    pub text: Option<Vec<String>>,
}

const KEY_CANDIDATES: &[&str] = &[
    "id",
    "doc_id",
    "docid",
    "filename",
    "file",
    "path",
    "Image Index",
    "StudyInstanceUID",
    "study_uid",
];

/// Text columns tried in order when none are named; the first group with any present wins.
const TEXT_CANDIDATES: &[&[&str]] = &[
    &["findings", "impression"],
    &["report", "text"],
    &["clinical_notes"],
];

/// Recognised metadata columns and the canonical field each one fills.
const META_COLUMNS: &[(&str, &str)] = &[
    ("view", "view"),
    ("View Position", "view"),
    ("ViewPosition", "view"),
    ("sex", "sex"),
    ("Patient Gender", "sex"),
    ("PatientSex", "sex"),
    ("age", "age"),
    ("Patient Age", "age"),
    ("date", "date"),
    ("StudyDate", "date"),
    ("modality", "modality"),
    ("Modality", "modality"),
    ("body_part", "body_part"),
    ("BodyPartExamined", "body_part"),
];

/// How a report table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    Jsonl,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

impl TableFormat {
    /// The format a file name's extension says, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "json" | "ndjson") => Some(Self::Jsonl),
            Some("csv") => Some(Self::Csv),
            _ => None,
        }
    }
}

/// All reports of one table, findable by key.
#[derive(Debug, Default)]
pub struct ReportTable {
    /// The file the table was read from, for messages.
    pub source: PathBuf,
    reports: Vec<Report>,
    by_key: HashMap<String, usize>,
    /// Records whose key repeats an earlier one; the first record wins.
    pub duplicate_keys: usize,
}

/// A record as read from the file: column name to text value, in column order.
type Record = Vec<(String, String)>;

impl ReportTable {
    /// Reads a `.jsonl`/`.json` (one object per line) or `.csv` table.
    pub fn load(path: &Path, columns: &TableColumns) -> Result<Self, ReportError> {
        let format = TableFormat::from_path(path).ok_or_else(|| ReportError::Format {
            path: path.to_path_buf(),
        })?;
        let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes, format, columns)
    }

    /// Parses a table already in memory; `path` only names it in messages. [`Self::load`] reads
    /// the file and calls this.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        format: TableFormat,
        columns: &TableColumns,
    ) -> Result<Self, ReportError> {
        let records = match format {
            TableFormat::Jsonl => read_jsonl(path, bytes)?,
            TableFormat::Csv => read_csv(path, bytes)?,
        };
        Self::from_records(path, records, columns)
    }

    fn from_records(
        path: &Path,
        records: Vec<Record>,
        columns: &TableColumns,
    ) -> Result<Self, ReportError> {
        let mut table = ReportTable {
            source: path.to_path_buf(),
            ..ReportTable::default()
        };
        let Some(first) = records.first() else {
            return Ok(table);
        };
        let has = |name: &str| first.iter().any(|(k, _)| k == name);
        let key = match &columns.key {
            Some(k) if has(k) => k.clone(),
            Some(k) => {
                return Err(ReportError::NoKeyColumn {
                    path: path.to_path_buf(),
                    tried: vec![k.clone()],
                })
            }
            None => KEY_CANDIDATES
                .iter()
                .find(|k| has(k))
                .map(|k| k.to_string())
                .ok_or_else(|| ReportError::NoKeyColumn {
                    path: path.to_path_buf(),
                    tried: KEY_CANDIDATES.iter().map(|s| s.to_string()).collect(),
                })?,
        };
        let text_columns: Vec<String> = match &columns.text {
            Some(cols) => {
                for c in cols {
                    if !has(c) {
                        return Err(ReportError::NoTextColumn {
                            path: path.to_path_buf(),
                            column: c.clone(),
                            available: first
                                .iter()
                                .map(|(k, _)| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
                cols.clone()
            }
            None => TEXT_CANDIDATES
                .iter()
                .map(|group| {
                    group
                        .iter()
                        .filter(|c| has(c))
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                })
                .find(|found| !found.is_empty())
                .unwrap_or_default(),
        };
        for record in records {
            let get = |name: &str| {
                record
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.trim())
            };
            let Some(key_value) = get(&key).filter(|v| !v.is_empty()) else {
                continue;
            };
            let sections = text_columns
                .iter()
                .filter_map(|c| get(c).map(|v| (c.clone(), v.to_string())))
                .collect();
            let mut meta = BTreeMap::new();
            for (column, field) in META_COLUMNS {
                if let Some(v) = get(column).filter(|v| !v.is_empty()) {
                    meta.entry(field.to_string())
                        .or_insert_with(|| normalise_meta(field, v));
                }
            }
            let report = Report {
                key: key_value.to_string(),
                sections,
                meta,
            };
            table.insert(report);
        }
        Ok(table)
    }

    fn insert(&mut self, report: Report) {
        if self.by_key.contains_key(&report.key) {
            self.duplicate_keys += 1;
            return;
        }
        self.by_key.insert(report.key.clone(), self.reports.len());
        self.reports.push(report);
    }

    /// Finds the report of an image: by document id, file name, file stem, path relative to the
    /// archive root, or StudyInstanceUID, in that order.
    pub fn find(
        &self,
        doc_id: &str,
        rel_path: Option<&Path>,
        study_uid: Option<&str>,
    ) -> Option<&Report> {
        let mut keys: Vec<String> = vec![doc_id.to_string()];
        if let Some(rel) = rel_path {
            if let Some(name) = rel.file_name().and_then(|n| n.to_str()) {
                keys.push(name.to_string());
            }
            if let Some(stem) = rel.file_stem().and_then(|n| n.to_str()) {
                keys.push(stem.to_string());
            }
            keys.push(rel.to_string_lossy().replace('\\', "/"));
        }
        if let Some(uid) = study_uid {
            keys.push(uid.to_string());
        }
        keys.iter()
            .find_map(|k| self.by_key.get(k))
            .map(|&i| &self.reports[i])
    }

    pub fn reports(&self) -> &[Report] {
        &self.reports
    }

    pub fn len(&self) -> usize {
        self.reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

/// Puts metadata values into one vocabulary so filters can match them: sex as `M`/`F`, age as
/// whole years, view in upper case (`PA`, `AP`, `AP SUPINE`, `L`).
fn normalise_meta(field: &str, value: &str) -> String {
    match field {
        "sex" => match value.to_ascii_uppercase().as_str() {
            "M" | "MALE" => "M".into(),
            "F" | "FEMALE" => "F".into(),
            other => other.into(),
        },
        "view" | "modality" | "body_part" => value.to_ascii_uppercase(),
        "age" => value
            .trim_end_matches(['Y', 'y'])
            .parse::<f64>()
            .map(|a| format!("{}", a.floor() as i64))
            .unwrap_or_else(|_| value.to_string()),
        _ => value.to_string(),
    }
}

fn read_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, ReportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        ReportError::Parse {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            reason: "not valid UTF-8".into(),
        }
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| ReportError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })?;
        let serde_json::Value::Object(map) = value else {
            return Err(ReportError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: "expected a JSON object".into(),
            });
        };
        let record = map
            .into_iter()
            .filter_map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((k, text))
            })
            .collect();
        records.push(record);
    }
    Ok(records)
}

fn read_csv(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, ReportError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let parse_err = |line: usize, e: csv::Error| ReportError::Parse {
        path: path.to_path_buf(),
        line,
        reason: e.to_string(),
    };
    let headers = reader.byte_headers().map_err(|e| parse_err(1, e))?.clone();
    let headers: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    let mut records = Vec::new();
    for (i, row) in reader.byte_records().enumerate() {
        let row = row.map_err(|e| parse_err(i + 2, e))?;
        // Real-world tables are not always UTF-8 (the COVID collection has Windows-1252 quotes);
        // decode lossily rather than lose the record.
        let record = headers
            .iter()
            .zip(row.iter())
            .map(|(h, v)| (h.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn jsonl_with_detected_key_and_sections() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "r.jsonl",
            r#"{"id": "CXR1", "indication": "cough", "findings": "Small left effusion.", "impression": "", "mesh_major": ["Effusion"]}
{"id": "CXR2", "findings": "", "impression": "Normal chest."}
"#,
        );
        let t = ReportTable::load(&p, &TableColumns::default()).unwrap();
        assert_eq!(t.len(), 2);
        let r = t.find("CXR1", None, None).unwrap();
        assert_eq!(r.text().as_deref(), Some("Small left effusion."));
        assert_eq!(
            r.sections.len(),
            2,
            "indication is not searchable by default"
        );
        assert_eq!(
            t.find("CXR2", None, None).unwrap().text().as_deref(),
            Some("Normal chest.")
        );
    }

    #[test]
    fn csv_keyed_by_file_name_with_metadata_and_no_identifiers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "m.csv",
            "patientid,sex,age,view,clinical_notes,filename\n7,female,54,AP Supine,Fever and cough.,a.jpg\n",
        );
        let t = ReportTable::load(&p, &TableColumns::default()).unwrap();
        let r = t.find("a", Some(Path::new("sub/a.jpg")), None).unwrap();
        assert_eq!(r.text().as_deref(), Some("Fever and cough."));
        assert_eq!(r.meta["sex"], "F");
        assert_eq!(r.meta["age"], "54");
        assert_eq!(r.meta["view"], "AP SUPINE");
        assert!(!r.meta.values().any(|v| v == "7"), "patient id is not kept");
    }

    #[test]
    fn named_columns_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.csv", "name,notes\na,b\n");
        let err = ReportTable::load(&p, &TableColumns::default()).unwrap_err();
        assert!(err.to_string().contains("--key"), "{err}");
        let cols = TableColumns {
            key: Some("name".into()),
            text: Some(vec!["report".into()]),
        };
        let err = ReportTable::load(&p, &cols).unwrap_err();
        assert!(err.to_string().contains("`report`"), "{err}");
    }

    #[test]
    fn asserted_text_drops_denials_per_section() {
        let report = |findings: &str, impression: &str| Report {
            key: "k".into(),
            sections: vec![
                ("findings".into(), findings.into()),
                ("impression".into(), impression.into()),
            ],
            meta: BTreeMap::new(),
        };
        let r = report(
            "Heart size normal. No pneumothorax.",
            "Small left effusion. No consolidation.",
        );
        assert_eq!(
            r.asserted_text().as_deref(),
            Some("Heart size normal.\n\nSmall left effusion.")
        );
        let r = report("", "No acute cardiopulmonary abnormality.");
        assert_eq!(r.asserted_text(), None);
        assert!(r.text().is_some(), "the full text is still there");
        assert_eq!(report("", " ").asserted_text(), None);
    }

    #[test]
    fn bad_json_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "r.jsonl", "{\"id\": \"a\"}\n{oops\n");
        let err = ReportTable::load(&p, &TableColumns::default()).unwrap_err();
        assert!(err.to_string().contains("r.jsonl:2"), "{err}");
    }

    #[test]
    fn tables_parse_from_memory_and_bad_utf8_names_its_line() {
        let name = Path::new("mem.jsonl");
        let table = ReportTable::from_bytes(
            name,
            b"{\"id\": \"a\", \"report\": \"Clear lungs.\"}\n",
            TableFormat::Jsonl,
            &TableColumns::default(),
        )
        .unwrap();
        assert_eq!(table.len(), 1);
        let err = ReportTable::from_bytes(
            name,
            b"{\"id\": \"a\"}\n{\"id\": \"\xff\"}\n",
            TableFormat::Jsonl,
            &TableColumns::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "mem.jsonl:2: not valid UTF-8");
        let csv = ReportTable::from_bytes(
            Path::new("mem.csv"),
            b"id,report\nx,\xffno effusion\n",
            TableFormat::Csv,
            &TableColumns::default(),
        )
        .unwrap();
        assert_eq!(csv.len(), 1);
        assert_eq!(
            TableFormat::from_path(Path::new("a.NDJSON")),
            Some(TableFormat::Jsonl)
        );
        assert_eq!(TableFormat::from_path(Path::new("a.txt")), None);
    }
}
