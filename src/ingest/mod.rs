//! Ingest: walk an archive, decode DICOM/PNG/JPEG into display-ready grey pixels, read metadata,
//! attach reports.
//!
//! Every decoder returns a [`GreyImage`]: one channel, `f32` in `[0, 1]`, 0 = black, after the
//! Modality LUT, the VOI LUT or window (or a percentile window where the file has none) and
//! MONOCHROME1 inversion, at the file's full resolution. Resizing to the model's input is the
//! model's preprocessing, not ingest's; the one exception is a decoder that can produce a lower
//! resolution for less work ([`DecodeOptions::min_side`]).

pub mod alloc_ceiling;
pub mod dicom;
pub mod dicom_scan;
pub mod jpeg2000;
pub mod negation;
pub mod raster;
pub mod reports;
pub mod walk;
pub mod window;

use std::path::{Path, PathBuf};

/// A decoded image: one grey channel in `[0, 1]` (0 = black), row-major, full resolution unless
/// [`DecodeOptions::min_side`] allowed less.
#[derive(Debug, Clone)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// What an image file tells us besides its pixels. All fields optional: PNG/JPEG carry none.
///
/// Patient identity is never kept in clear: `patient_hash` is a salted SHA-256 of PatientID.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageMeta {
    pub sop_instance_uid: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub modality: Option<String>,
    pub view_position: Option<String>,
    pub body_part: Option<String>,
    pub patient_sex: Option<String>,
    /// Age in whole years at the time of the study.
    pub patient_age: Option<u32>,
    /// `YYYY-MM-DD`.
    pub study_date: Option<String>,
    pub patient_hash: Option<String>,
}

/// How files are decoded: limits that protect the process from hostile files, and the salt that
/// keeps patient hashes from being linked across indexes.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`; larger images are rejected before their pixels are
    /// decoded.
    pub max_pixels: u64,
    /// Secret mixed into [`ImageMeta::patient_hash`]; each index keeps its own.
    pub patient_salt: String,
    /// The shortest side, in pixels, that the consumer of the image needs (for the encoder:
    /// `PreprocessConfig::min_source_side`). Decoders that can stop at a lower resolution for
    /// less work, JPEG 2000's wavelet levels (see [`jpeg2000`]), stop at the coarsest one whose
    /// shorter side is still at least this. `None`: full resolution.
    pub min_side: Option<u32>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            // 64 Mpx: well above the largest clinical detector (43x43 cm at 0.1 mm is 18.5 Mpx).
            max_pixels: 64 * 1024 * 1024,
            patient_salt: String::new(),
            min_side: None,
        }
    }
}

/// Why one file could not be ingested. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a DICOM file: {reason}")]
    NotDicom { path: PathBuf, reason: String },
    /// Refused before parsing: its structure cannot be true (an element longer than the file,
    /// sequences nested without end, a deflate bomb); see [`dicom_scan`].
    #[error("{path}: corrupt DICOM: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: DICOM file has no pixel data (SOP class {sop_class})")]
    NoPixelData { path: PathBuf, sop_class: String },
    #[error("{path}: unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax {
        path: PathBuf,
        uid: String,
        name: String,
    },
    #[error("{path}: cannot decode pixel data: {reason}")]
    PixelData { path: PathBuf, reason: String },
    #[error("{path}: image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooLarge {
        path: PathBuf,
        width: u64,
        height: u64,
        limit: u64,
    },
    #[error("{path}: cannot decode image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: unsupported file type (not DICOM, PNG or JPEG)")]
    UnsupportedFile { path: PathBuf },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
}

/// A decoded image file: pixels and what its header says.
#[derive(Debug, Clone)]
pub struct DecodedFile {
    pub image: GreyImage,
    pub meta: ImageMeta,
}

/// Decodes one image file, choosing the decoder from its content (DICOM is recognised by its
/// preamble or, for files without one, by a parseable first element), not from its extension.
pub fn decode_file(path: &Path, opts: &DecodeOptions) -> Result<DecodedFile, IngestError> {
    let io = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() == 0 {
        return Err(IngestError::Empty {
            path: path.to_path_buf(),
        });
    }
    let kind = walk::sniff(path).map_err(io)?;
    match kind {
        walk::FileKind::Dicom => dicom::decode(path, opts),
        walk::FileKind::Png | walk::FileKind::Jpeg => {
            let image = raster::decode(path, opts)?;
            Ok(DecodedFile {
                image,
                meta: ImageMeta::default(),
            })
        }
        walk::FileKind::Other => Err(IngestError::UnsupportedFile {
            path: path.to_path_buf(),
        }),
    }
}

/// [`decode_file`] for a file already in memory; `name` only names it in errors.
pub fn decode_bytes(
    name: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<DecodedFile, IngestError> {
    if bytes.is_empty() {
        return Err(IngestError::Empty {
            path: name.to_path_buf(),
        });
    }
    match walk::classify(bytes) {
        walk::FileKind::Dicom => dicom::decode_bytes(name, bytes, opts),
        walk::FileKind::Png | walk::FileKind::Jpeg => {
            let image = raster::decode_bytes(name, bytes, opts)?;
            Ok(DecodedFile {
                image,
                meta: ImageMeta::default(),
            })
        }
        walk::FileKind::Other => Err(IngestError::UnsupportedFile {
            path: name.to_path_buf(),
        }),
    }
}

/// The message of a caught decoder panic (decoders of hostile files are run under
/// `catch_unwind`, and the panic becomes the file's error).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
