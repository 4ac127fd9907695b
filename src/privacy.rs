//! What an index may keep about a patient, and `--deidentify`.
//!
//! Always: Patient ID is stored only as a salted hash (see
//! [`patient_hash`](crate::ingest::dicom::patient_hash)); names, birth dates and accession
//! numbers are never read into the index. Each index has its own random salt, kept in the
//! index folder, so hashes cannot be joined across indexes or reversed by hashing candidate IDs
//! without the folder.
//!
//! With `--deidentify` the stored metadata follows the Basic Application Level Confidentiality
//! Profile of DICOM PS3.15 Annex E (Table E.1-1) as far as the index stores an attribute:
//!
//! | stored as            | attribute (tag)                               | basic profile | here |
//! |----------------------|-----------------------------------------------|---------------|------|
//! | document id          | SOP Instance UID (0008,0018)                  | U             | replaced by a salted-hash UID `2.25.N` |
//! | `study_uid`          | Study Instance UID (0020,000D)                | U             | replaced, consistently within the index |
//! | `series_uid`         | Series Instance UID (0020,000E)               | U             | replaced, consistently within the index |
//! | `patient`            | Patient ID (0010,0020)                        | Z             | salted hash (as always) |
//! | `sex`                | Patient's Sex (0010,0040)                     | Z             | dropped, unless retained |
//! | `age`                | Patient's Age (0010,1010)                     | X             | dropped, unless retained |
//! | `date`               | Study Date (0008,0020)                        | Z             | dropped, unless retained |
//! | `path`               | (file path, may embed names or IDs)           | -             | replaced by a salted hash |
//!
//! `--retain-patient-characteristics` keeps age and sex (PS3.15's Retain Patient
//! Characteristics Option) and `--retain-dates` keeps the study date (Retain Longitudinal
//! Temporal Information with Full Dates Option), for filters on them. Report tables lose the
//! same kinds of columns. Ids of files without a SOP Instance UID (PNG/JPEG: the file stem) and
//! of report-only documents are replaced too. Not covered: identities written in free report
//! text or burnt into pixels; de-identify those upstream.
//!
//! The choice is made when the index is created and kept in it (`privacy.json`); later runs
//! follow it, so one index never mixes identified and de-identified documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File of the index folder holding the salt (hex).
pub const SALT_FILE: &str = "patient-salt";
/// File of the index folder holding the de-identification settings.
pub const SETTINGS_FILE: &str = "privacy.json";

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Settings { path: PathBuf, reason: String },
    #[error(
        "{index}: {reason}; one index never mixes identified and de-identified documents \
         (build a new index for the other choice)"
    )]
    Conflict { index: PathBuf, reason: String },
}

/// `--deidentify` and its retain options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeidentifySettings {
    pub deidentify: bool,
    /// Keep age and sex.
    #[serde(default)]
    pub retain_patient_characteristics: bool,
    /// Keep the study date.
    #[serde(default)]
    pub retain_dates: bool,
}

/// The privacy state of one index: its salt and its de-identification settings.
#[derive(Clone, Debug)]
pub struct IndexPrivacy {
    salt: String,
    settings: DeidentifySettings,
}

/// The de-identification settings an index was created with, read without creating anything
/// (for readers such as `cxr search`); `None` when the index has no `privacy.json`.
pub fn read_settings(index_dir: &Path) -> Result<Option<DeidentifySettings>, PrivacyError> {
    let path = index_dir.join(SETTINGS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PrivacyError::Settings {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PrivacyError::Io { path, source }),
    }
}

impl IndexPrivacy {
    /// Reads the index's salt and settings, creating them for a new index. `requested` is what
    /// the command line asked for: `None` follows the index; a request that contradicts an
    /// existing index with documents is refused.
    pub fn load_or_create(
        index_dir: &Path,
        requested: Option<DeidentifySettings>,
        index_has_documents: bool,
    ) -> Result<IndexPrivacy, PrivacyError> {
        let salt = load_or_create_salt(index_dir)?;
        let path = index_dir.join(SETTINGS_FILE);
        let stored: Option<DeidentifySettings> = match std::fs::read(&path) {
            Ok(bytes) => {
                Some(
                    serde_json::from_slice(&bytes).map_err(|e| PrivacyError::Settings {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(PrivacyError::Io { path, source }),
        };
        // An index from before this file existed, with documents, is an identified one.
        let current = stored.or((index_has_documents).then(DeidentifySettings::default));
        let settings = match (current, requested) {
            (Some(current), Some(requested)) if current != requested => {
                return Err(PrivacyError::Conflict {
                    index: index_dir.to_path_buf(),
                    reason: format!(
                        "the index was built with {}, this run asks for {}",
                        describe(&current),
                        describe(&requested)
                    ),
                })
            }
            (Some(current), _) => current,
            (None, requested) => requested.unwrap_or_default(),
        };
        if stored.is_none() {
            let json =
                serde_json::to_vec_pretty(&settings).map_err(|e| PrivacyError::Settings {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            std::fs::write(&path, json).map_err(|source| PrivacyError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(IndexPrivacy { salt, settings })
    }

    /// An identified index's privacy state with this salt (for tests and library users that
    /// keep the salt themselves).
    pub fn new(salt: String, settings: DeidentifySettings) -> IndexPrivacy {
        IndexPrivacy { salt, settings }
    }

    pub fn salt(&self) -> &str {
        &self.salt
    }

    pub fn settings(&self) -> DeidentifySettings {
        self.settings
    }

    /// True when stored identifiers are replaced.
    pub fn deidentify(&self) -> bool {
        self.settings.deidentify
    }

    /// The document id to store for a natural id (SOP Instance UID, file stem, report key).
    pub fn stored_id(&self, id: &str) -> String {
        if self.settings.deidentify {
            self.hash_uid("id", id)
        } else {
            id.to_string()
        }
    }

    /// The relative path to store for a file.
    pub fn stored_path(&self, rel: &str) -> String {
        if self.settings.deidentify {
            format!("sha256:{}", hex(&self.digest("path", rel)[..16]))
        } else {
            rel.to_string()
        }
    }

    /// A value kept only to be compared for equality (a file's modification time, its content
    /// hash): as given, or a salted hash under `--deidentify`, since a file time can be the
    /// acquisition time and a content hash confirms that a given file was indexed.
    pub fn stored_token(&self, kind: &str, value: &str) -> String {
        if self.settings.deidentify {
            format!("sha256:{}", hex(&self.digest(kind, value)[..16]))
        } else {
            value.to_string()
        }
    }

    /// Applies the profile to a document's stored fields (image header and report table
    /// columns alike); `path` and the id are handled by the caller.
    pub fn clean_fields(&self, fields: &mut BTreeMap<String, String>) {
        if !self.settings.deidentify {
            return;
        }
        let retain_chars = self.settings.retain_patient_characteristics;
        let retain_dates = self.settings.retain_dates;
        fields.retain(|key, _| {
            let k = key.to_ascii_lowercase();
            if is_always_identifying(&k) {
                return false;
            }
            if is_patient_characteristic(&k) {
                return retain_chars;
            }
            if is_date(&k) {
                return retain_dates;
            }
            true
        });
        for key in ["study_uid", "series_uid"] {
            if let Some(v) = fields.get_mut(key) {
                *v = self.hash_uid(key, v);
            }
        }
    }

    /// A UID under the `2.25` root (PS3.5 B.2: a UUID-derived UID, here from 128 bits of a
    /// salted SHA-256), so replaced UIDs are still valid UIDs and equal inputs stay equal.
    fn hash_uid(&self, kind: &str, value: &str) -> String {
        let d = self.digest(kind, value);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&d[..16]);
        format!("2.25.{}", u128::from_be_bytes(bytes))
    }

    fn digest(&self, kind: &str, value: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update([0u8])
            .chain_update(kind.as_bytes())
            .chain_update([0u8])
            .chain_update(value.as_bytes())
            .finalize()
            .into()
    }
}

fn describe(s: &DeidentifySettings) -> String {
    if !s.deidentify {
        return "identifiers kept (no --deidentify)".into();
    }
    let mut out = String::from("--deidentify");
    if s.retain_patient_characteristics {
        out.push_str(" --retain-patient-characteristics");
    }
    if s.retain_dates {
        out.push_str(" --retain-dates");
    }
    out
}

/// Columns a report table may carry that name or number a person or a visit.
fn is_always_identifying(k: &str) -> bool {
    const WORDS: [&str; 10] = [
        "name",
        "patient_id",
        "patientid",
        "mrn",
        "accession",
        "birth",
        "dob",
        "address",
        "phone",
        "institution",
    ];
    WORDS.iter().any(|w| k.contains(w))
}

fn is_patient_characteristic(k: &str) -> bool {
    matches!(k, "age" | "sex" | "gender" | "patient_age" | "patient_sex")
}

fn is_date(k: &str) -> bool {
    k == "date" || k.ends_with("_date") || k.starts_with("date_") || k.contains("time")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_create_salt(index_dir: &Path) -> Result<String, PrivacyError> {
    let path = index_dir.join(SALT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(salt) => return Ok(salt.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(PrivacyError::Io { path, source }),
    }
    let mut bytes = [0u8; 32];
    let random = Path::new("/dev/urandom");
    std::fs::File::open(random)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|source| PrivacyError::Io {
            path: random.to_path_buf(),
            source,
        })?;
    let salt = hex(&bytes);
    std::fs::write(&path, &salt).map_err(|source| PrivacyError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deid(retain_chars: bool, retain_dates: bool) -> IndexPrivacy {
        IndexPrivacy::new(
            "salt".into(),
            DeidentifySettings {
                deidentify: true,
                retain_patient_characteristics: retain_chars,
                retain_dates,
            },
        )
    }

    #[test]
    fn identified_indexes_store_values_as_given() {
        let p = IndexPrivacy::new("salt".into(), DeidentifySettings::default());
        assert_eq!(p.stored_id("1.2.3"), "1.2.3");
        assert_eq!(p.stored_path("a/b.dcm"), "a/b.dcm");
        let mut f = BTreeMap::from([("age".to_string(), "61".to_string())]);
        p.clean_fields(&mut f);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn uids_become_consistent_valid_uids_and_differ_by_salt() {
        let p = deid(false, false);
        let a = p.stored_id("1.2.840.1");
        assert_eq!(a, p.stored_id("1.2.840.1"));
        assert_ne!(a, p.stored_id("1.2.840.2"));
        assert!(a.starts_with("2.25.") && a.len() <= 64, "{a}");
        assert!(a[5..].bytes().all(|b| b.is_ascii_digit()));
        let other = IndexPrivacy::new("pepper".into(), p.settings());
        assert_ne!(a, other.stored_id("1.2.840.1"));
        assert!(p.stored_path("Smith^John/img.dcm").starts_with("sha256:"));
    }

    #[test]
    fn the_basic_profile_drops_or_replaces_and_retain_options_keep() {
        let fields = || {
            BTreeMap::from(
                [
                    ("study_uid", "1.2.3"),
                    ("series_uid", "1.2.3.4"),
                    ("sex", "F"),
                    ("age", "61"),
                    ("date", "2019-01-02"),
                    ("view", "PA"),
                    ("patient", "0a1b"),
                    ("PatientName", "Doe^Jane"),
                    ("accession_number", "A123"),
                    ("findings", "No effusion."),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let mut f = fields();
        deid(false, false).clean_fields(&mut f);
        let keys: Vec<&str> = f.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["findings", "patient", "series_uid", "study_uid", "view"]
        );
        assert!(f["study_uid"].starts_with("2.25."));
        let mut f = fields();
        deid(true, true).clean_fields(&mut f);
        assert_eq!(f["age"], "61");
        assert_eq!(f["sex"], "F");
        assert_eq!(f["date"], "2019-01-02");
        assert!(!f.contains_key("PatientName") && !f.contains_key("accession_number"));
    }

    #[test]
    fn an_index_keeps_its_choice() {
        let dir = tempfile::tempdir().unwrap();
        let on = DeidentifySettings {
            deidentify: true,
            ..Default::default()
        };
        let p = IndexPrivacy::load_or_create(dir.path(), Some(on), false).unwrap();
        assert!(p.deidentify());
        // A later run without the flag follows the index; with another choice it is refused.
        let again = IndexPrivacy::load_or_create(dir.path(), None, true).unwrap();
        assert!(again.deidentify());
        assert_eq!(again.salt(), p.salt());
        let err =
            IndexPrivacy::load_or_create(dir.path(), Some(DeidentifySettings::default()), true)
                .unwrap_err();
        assert!(err.to_string().contains("never mixes"), "{err}");
        // An older identified index with documents refuses --deidentify.
        let old = tempfile::tempdir().unwrap();
        assert!(IndexPrivacy::load_or_create(old.path(), Some(on), true).is_err());
    }
}
