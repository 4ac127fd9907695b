//! Patient identity never reaches the index: no name, ID, birth date or accession number of the
//! test DICOMs appears in any file of the index folder.

mod common;

use std::path::{Path, PathBuf};

use common::{cxr, make_model};
use dicom_dictionary_std::tags;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_identifying_value_is_stored() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dicom");
    if !data.is_dir() {
        eprintln!("skipped: {} is absent", data.display());
        return;
    }
    let mut secrets: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        // Files without file meta cannot be opened this way; the others carry the identities.
        let Ok(obj) = dicom_object::open_file(&path) else {
            continue;
        };
        for tag in [
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::PATIENT_BIRTH_DATE,
            tags::ACCESSION_NUMBER,
        ] {
            let value = obj.element(tag).ok().and_then(|e| e.to_str().ok());
            if let Some(v) = value {
                let v = v.trim_end_matches(['\0', ' ']).to_string();
                if v.len() >= 4 && !secrets.contains(&v) {
                    secrets.push(v);
                }
            }
        }
    }
    assert!(
        secrets.iter().any(|s| s == "9RG1"),
        "the test data has identities to look for: {secrets:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    let idx = dir.path().join("idx");
    let o = cxr(&[
        "index",
        data.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    let mut files = Vec::new();
    files_under(&idx, &mut files);
    assert!(files.len() > 5);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds an identifying value", file.display());
        }
    }
    for secret in &secrets {
        assert!(
            !printed.contains(secret.as_str()),
            "printed an identifying value"
        );
    }
}

/// With `--deidentify`, UIDs, dates, file names and the patient identities are gone from every
/// file of the index, and the index still works: search, grouping by (pseudonymous) study,
/// idempotent re-runs, and a later run cannot switch the choice.
#[test]
fn deidentify_replaces_uids_paths_and_dates() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dicom");
    if !data.is_dir() {
        eprintln!("skipped: {} is absent", data.display());
        return;
    }
    let mut secrets: Vec<String> = Vec::new();
    let mut add = |v: String| {
        if v.len() >= 6 && !secrets.contains(&v) {
            secrets.push(v);
        }
    };
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        add(path.file_name().unwrap().to_string_lossy().into_owned());
        let Ok(obj) = dicom_object::open_file(&path) else {
            continue;
        };
        for tag in [
            tags::SOP_INSTANCE_UID,
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
            tags::STUDY_DATE,
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::ACCESSION_NUMBER,
        ] {
            if let Some(v) = obj.element(tag).ok().and_then(|e| e.to_str().ok()) {
                let v = v.trim_end_matches(['\0', ' ']).to_string();
                if tag == tags::STUDY_DATE && v.len() == 8 {
                    add(format!("{}-{}-{}", &v[..4], &v[4..6], &v[6..]));
                }
                add(v);
            }
        }
    }
    assert!(
        secrets.iter().any(|s| s.starts_with("1.3.6.1.4.1.5962")),
        "the test data has UIDs to look for: {secrets:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    let idx = dir.path().join("idx");
    let (d, i, m) = (
        data.to_str().unwrap(),
        idx.to_str().unwrap(),
        model.to_str().unwrap(),
    );
    let o = cxr(&[
        "index",
        d,
        "--out",
        i,
        "--model",
        m,
        "--deidentify",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["indexed"], 9);

    let mut files = Vec::new();
    files_under(&idx, &mut files);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for secret in &secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{} holds `{secret}`", file.display());
        }
    }

    // Re-runs recognise every file; the choice cannot be switched.
    let o = cxr(&["index", d, "--out", i, "--model", m, "--json"]);
    assert!(o.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (summary["indexed"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(9))
    );
    let o = cxr(&[
        "index",
        d,
        "--out",
        i,
        "--model",
        m,
        "--deidentify",
        "--retain-dates",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("never mixes"));

    // Search works; the five RG1 files share one (pseudonymous) study.
    let image = data.join("rg1-unci.dcm");
    let search = |extra: &[&str]| {
        let mut args = vec![
            "search",
            i,
            "--image",
            image.to_str().unwrap(),
            "--model",
            m,
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        let o = cxr(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["results"].as_array().unwrap().len()
    };
    assert_eq!(search(&[]), 9);
    assert!(search(&["--group-by", "study"]) < 9);
}
