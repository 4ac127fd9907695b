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
