//! DICOM files to display-ready grey pixels and metadata.
//!
//! # Pipeline
//!
//! [`decode`] turns the *first frame* of a DICOM image into a [`GreyImage`] in `[0, 1]`
//! (0 = black) through these steps, in this order, which is the order of the grayscale
//! pipeline of PS3.3 C.11 / PS3.4 N.2.1; a different order gives different pixels:
//!
//! 1. **Read the header only** (everything before Pixel Data) and reject what would be
//!    unsafe or pointless to read in full: Rows x Columns (and frames x samples) above
//!    [`DecodeOptions::max_pixels`], transfer syntaxes this build cannot decode.
//! 2. **Read the whole file and decode the stored values** of frame 0 with dicom-pixeldata
//!    (native, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE). A grey JPEG 2000
//!    frame is decoded at a reduced resolution first when [`DecodeOptions::min_side`] allows it
//!    ([`super::jpeg2000`]). 8 to 16 bits stored,
//!    signed or unsigned, Bits Stored < Bits Allocated are handled by dicom-pixeldata's
//!    lookup, which masks each sample to Bits Stored and sign-extends it.
//! 3. **Modality LUT** (PS3.3 C.11.1): the Modality LUT Sequence (0028,3000) when present,
//!    applied here because dicom-pixeldata ignores it, otherwise Rescale Slope/Intercept
//!    (applied by dicom-pixeldata, which also finds them in functional groups).
//! 4. **VOI** (PS3.3 C.11.2): the first VOI LUT Sequence item if present (as pydicom and
//!    dicom-pixeldata do, a table is preferred over a window when a file has both); else the
//!    first Window Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID);
//!    else, when the file gives neither (or an invalid window), the robust fallback: the
//!    0.5th..99.5th percentile window of the modality-LUT output. The VOI step is done here in
//!    `f32`, mapping straight to `[0, 1]`: dicom-pixeldata's own VOI maps to an integer range
//!    tied to Bits Stored and has no percentile fallback.
//! 5. **MONOCHROME1 inversion** `v -> 1 - v`, after VOI as PS3.3 C.7.6.3.1.2 requires (the
//!    window is defined on modality values, not on display values).
//!
//! Colour images (RGB, or YBR which the JPEG decoders return as RGB) skip steps 3 to 5, which
//! the standard defines for grayscale only: they become Rec. 601 luma scaled by the largest
//! stored value, `2^BitsStored - 1`. Native YBR_FULL keeps its Y channel, which is that luma.
//!
//! # Files without a preamble or file meta group
//!
//! A file with a file meta group but no 128-byte preamble is read as usual. A file with
//! neither (a bare data set, as old modalities and some PACS exports write it) is recognised
//! by its first element being in group 0008 and read as implicit VR little endian, the default
//! transfer syntax of PS3.5 section 10.1 (explicit VR little endian when the first element
//! carries a VR), by putting a minimal file meta group in front of it in memory.
//!
//! # Robustness
//!
//! A batch indexer runs this over millions of files, so nothing here may panic or abort on
//! bad input: every failure is an [`IngestError`] that names the file. Inputs known to trip
//! assertions inside dicom-pixeldata (Bits Stored 0, Bits Allocated other than 8/16) are
//! rejected first, and the pixel decode itself runs under [`std::panic::catch_unwind`] because
//! the codecs behind it (JPEG, JPEG-LS, JPEG 2000 ports) can panic on broken fragments instead
//! of returning an error. `catch_unwind` cannot stop an abort (allocation failure, stack
//! overflow), which the limits checked in step 1 are there to make unlikely.
//!
//! # Privacy
//!
//! Patient Name and Patient ID are never stored, logged or put in error messages: the only
//! trace of the patient is [`ImageMeta::patient_hash`], a salted SHA-256 of Patient ID.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dicom_core::{DicomValue, PrimitiveValue, Tag};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions, ReadError};
use dicom_pixeldata::{
    DecodedPixelData, Lut, PhotometricInterpretation, PixelDecoder, PixelRepresentation,
    PlanarConfiguration, Rescale, VoiLutFunction,
};
use sha2::{Digest, Sha256};

use super::window::{
    apply_linear_window, invert, percentile_window_of_counts, LookupTable, VoiFunction, VoiWindow,
};
use super::{
    alloc_ceiling, dicom_scan, jpeg2000, DecodeOptions, DecodedFile, GreyImage, ImageMeta,
    IngestError,
};

/// Decodes the first frame of a DICOM image and reads its metadata.
///
/// See the [module documentation](self) for the pipeline and its order.
pub fn decode(path: &Path, opts: &DecodeOptions) -> Result<DecodedFile, IngestError> {
    decode_from(path, Source::File(path), opts)
}

/// [`decode`] for a file already in memory; `name` only names it in errors.
pub fn decode_bytes(
    name: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<DecodedFile, IngestError> {
    decode_from(name, Source::Bytes(bytes), opts)
}

/// Header only (stops before PixelData): used for metadata without decoding pixels.
pub fn read_meta(path: &Path, opts: &DecodeOptions) -> Result<ImageMeta, IngestError> {
    let (header, _, _) = open_header(path, Source::File(path), opts)?;
    Ok(image_meta(&header, opts))
}

/// [`read_meta`] for a file already in memory; `name` only names it in errors.
pub fn read_meta_bytes(
    name: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<ImageMeta, IngestError> {
    let (header, _, _) = open_header(name, Source::Bytes(bytes), opts)?;
    Ok(image_meta(&header, opts))
}

fn decode_from(
    path: &Path,
    source: Source<'_>,
    opts: &DecodeOptions,
) -> Result<DecodedFile, IngestError> {
    let (header, layout, data_len) = open_header(path, source, opts)?;
    check_transfer_syntax(path, &header)?;
    check_size(path, &header, opts.max_pixels)?;
    let meta = image_meta(&header, opts);
    drop(header);

    let mut obj = read_object(source, layout, false, data_len)
        .map_err(|e| e.into_ingest_error(path, "cannot read the data set"))?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(IngestError::NoPixelData {
            path: path.to_path_buf(),
            sop_class: sop_class(&obj),
        });
    }
    // Again on the full object: these are the attributes the decoder will actually use.
    check_size(path, &obj, opts.max_pixels)?;
    check_pixel_module(path, &obj)?;
    check_rle_frame(path, &obj)?;
    if let Some(min_side) = opts.min_side {
        // Like every codec call here, under `catch_unwind`; a panic leaves `obj` as it was (it
        // is only changed after a successful decode), and the full decode reports the fault.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            jpeg2000::reduce_frame(&mut obj, min_side)
        }));
    }
    let image = decode_pixels(path, &obj)?;
    Ok(DecodedFile { image, meta })
}

/// Where a DICOM file's bytes come from. A file is opened afresh for each pass over it (header,
/// then the whole data set), so that nothing beyond the header is read for a file rejected
/// from its header.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

impl<'a> Source<'a> {
    fn open(self) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Source::File(path) => Box::new(BufReader::new(File::open(path)?)),
            Source::Bytes(bytes) => Box::new(bytes),
        })
    }

    fn len(self) -> std::io::Result<u64> {
        match self {
            Source::File(path) => Ok(std::fs::metadata(path)?.len()),
            Source::Bytes(bytes) => Ok(bytes.len() as u64),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// How a file's bytes are laid out before its data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// File meta group, with or without the 128-byte preamble (dicom-object detects which).
    Standard,
    /// A bare data set with no file meta group, in the given transfer syntax.
    Raw { explicit_vr: bool },
}

/// Why [`read_object`] failed: the file could not be opened, or dicom-object could not parse it.
enum ReadFailure {
    Io(std::io::Error),
    Dicom(ReadError),
    /// dicom-rs could not reserve the declared length of a value under the allocation ceiling:
    /// the file declares more than it holds.
    Refused {
        declared: u64,
        data_len: u64,
    },
}

impl ReadFailure {
    fn describe(&self) -> String {
        match self {
            ReadFailure::Io(e) => e.to_string(),
            ReadFailure::Dicom(e) => error_chain(e),
            ReadFailure::Refused { declared, data_len } => format!(
                "an element declares {declared} bytes, more than the {data_len}-byte data set \
                 holds (refused by the allocation ceiling)"
            ),
        }
    }

    /// The error for a caller: a refused reservation means a corrupt file, whatever was read.
    fn into_ingest_error(self, path: &Path, context: &str) -> IngestError {
        match self {
            ReadFailure::Io(source) => IngestError::Io {
                path: path.to_path_buf(),
                source,
            },
            refused @ ReadFailure::Refused { .. } => IngestError::Corrupt {
                path: path.to_path_buf(),
                reason: refused.describe(),
            },
            other => IngestError::PixelData {
                path: path.to_path_buf(),
                reason: format!("{context}: {}", other.describe()),
            },
        }
    }
}

/// The length dicom-rs failed to reserve, from its error chain. dicom-parser reports a failed
/// `try_reserve_exact` as "Could not reserve memory for data value (N bytes)" (its
/// `AllocateValueData`); `a_length_the_scan_cannot_see_is_refused_by_the_allocation_ceiling`
/// notices if that wording changes.
fn refused_reservation(error: &ReadError) -> Option<u64> {
    const MARK: &str = "Could not reserve memory for data value (";
    let chain = error_chain(error);
    let rest = &chain[chain.find(MARK)? + MARK.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads the header (all elements before Pixel Data), finding out how the file is laid out.
///
/// First the declared lengths are checked against the file's size (see [`super::dicom_scan`]):
/// dicom-rs allocates an element's declared length before reading it. Also returns how many
/// bytes of data set the file holds (its length, or inflated length), which bounds every
/// allocation of a later read.
fn open_header(
    path: &Path,
    source: Source<'_>,
    opts: &DecodeOptions,
) -> Result<(DefaultDicomObject, Layout, u64), IngestError> {
    let io = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The whole file is checked even for a header-only read: dicom-rs's reading of a broken
    // file can differ from the pass's (nested or stray delimiters), so where it stops is not
    // known in advance (found by fuzzing: a header read went past the Pixel Data the pass
    // stopped at and reserved 2.7 GB).
    let limits = dicom_scan::Limits {
        max_inflated: opts.max_pixels.saturating_mul(4).saturating_add(64 << 20),
    };
    let file_len = source.len().map_err(io)?;
    let bare = match sniff_raw_data_set(source).map_err(io)? {
        Some(Layout::Raw { explicit_vr }) => Some(explicit_vr),
        _ => None,
    };
    let data_len =
        dicom_scan::check(|| source.open(), file_len, bare, &limits).map_err(|e| match e {
            dicom_scan::ScanError::Io(source) => io(source),
            other => IngestError::Corrupt {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;

    let standard_err = match read_object(source, Layout::Standard, true, data_len) {
        Ok(obj) => return Ok((obj, Layout::Standard, data_len)),
        Err(ReadFailure::Dicom(e)) => e,
        Err(other) => return Err(other.into_ingest_error(path, "cannot read the header")),
    };
    match &standard_err {
        ReadError::ReadUnrecognizedTransferSyntax { uid, .. } => {
            return Err(unsupported_ts(path, uid))
        }
        ReadError::ReadUnsupportedTransferSyntax { uid, .. }
        | ReadError::ReadUnsupportedTransferSyntaxWithSuggestion { uid, .. } => {
            return Err(unsupported_ts(path, uid))
        }
        _ => {}
    }
    let raw = sniff_raw_data_set(source).map_err(io)?;
    match raw {
        Some(layout) => match read_object(source, layout, true, data_len) {
            Ok(obj) => Ok((obj, layout, data_len)),
            Err(refused @ ReadFailure::Refused { .. }) => {
                Err(refused.into_ingest_error(path, "cannot read the header"))
            }
            Err(raw_err) => Err(IngestError::NotDicom {
                path: path.to_path_buf(),
                reason: format!(
                    "{}; read as a bare data set: {}",
                    error_chain(&standard_err),
                    raw_err.describe()
                ),
            }),
        },
        None => Err(IngestError::NotDicom {
            path: path.to_path_buf(),
            reason: error_chain(&standard_err),
        }),
    }
}

/// Reads a file as `layout` says, either up to Pixel Data (`header_only`) or completely.
///
/// The parse runs under an allocation ceiling of twice the data set's length (`data_len`) plus
/// 1 MiB: no value can be longer than the data set, so a larger request can only come from a
/// declared length that the file does not back, and dicom-rs's reservation of it then fails
/// with an error (where `cxr` installs [`super::alloc_ceiling::CeilingAllocator`]).
fn read_object(
    source: Source<'_>,
    layout: Layout,
    header_only: bool,
    data_len: u64,
) -> Result<DefaultDicomObject, ReadFailure> {
    // Opened here, not by dicom-object, so that "cannot open" stays an I/O error.
    let file = source.open().map_err(ReadFailure::Io)?;
    let mut options = OpenFileOptions::new();
    if header_only {
        options = options.read_until(tags::PIXEL_DATA);
    }
    let ceiling =
        usize::try_from(data_len.saturating_mul(2).saturating_add(1 << 20)).unwrap_or(usize::MAX);
    let result = alloc_ceiling::with_ceiling(ceiling, || match layout {
        Layout::Standard => options.from_reader(file),
        Layout::Raw { explicit_vr } => {
            let ts = if explicit_vr {
                uids::EXPLICIT_VR_LITTLE_ENDIAN
            } else {
                uids::IMPLICIT_VR_LITTLE_ENDIAN
            };
            let source = Cursor::new(synthetic_file_meta(ts)).chain(file);
            options
                .read_preamble(ReadPreamble::Never)
                .from_reader(source)
        }
    });
    result.map_err(|e| match refused_reservation(&e) {
        Some(declared) => ReadFailure::Refused { declared, data_len },
        None => ReadFailure::Dicom(e),
    })
}

/// A minimal file meta group (PS3.10 7.1) naming only the transfer syntax, preceded by the
/// `DICM` magic: what dicom-object needs to read a bare data set. Media Storage SOP Class and
/// Instance UIDs are left out; dicom-object fills them from the data set.
fn synthetic_file_meta(transfer_syntax: &str) -> Vec<u8> {
    let mut uid = transfer_syntax.as_bytes().to_vec();
    if uid.len() % 2 == 1 {
        uid.push(0); // UI values are padded to even length with NUL
    }
    let ts_element_len = 8 + uid.len();
    let mut out = Vec::with_capacity(4 + 12 + ts_element_len);
    out.extend_from_slice(b"DICM");
    // (0002,0000) File Meta Information Group Length, UL, 4 bytes: the length of what follows.
    out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(ts_element_len as u32).to_le_bytes());
    // (0002,0010) Transfer Syntax UID, UI.
    out.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    out.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    out.extend_from_slice(&uid);
    out
}

/// Whether a file that is not a standard DICOM file looks like a bare data set: its first
/// element must be in group 0008 (Identifying, where every composite IOD's data set starts
/// once the meta group is gone) with a plausible length. Anything else is left as "not
/// DICOM", so that random files are not parsed as DICOM by accident.
fn sniff_raw_data_set(source: Source<'_>) -> std::io::Result<Option<Layout>> {
    let mut head = [0u8; 8];
    let mut file = source.open()?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    let group = u16::from_le_bytes([head[0], head[1]]);
    let element = u16::from_le_bytes([head[2], head[3]]);
    if group != 0x0008 || element > 0x0020 {
        return Ok(None);
    }
    let vr = [head[4], head[5]];
    if EXPLICIT_VRS.contains(&vr) {
        return Ok(Some(Layout::Raw { explicit_vr: true }));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let file_len = source.len()?;
    Ok((u64::from(len) < file_len && len < 1 << 16).then_some(Layout::Raw { explicit_vr: false }))
}

/// VR codes that may open group 0008 in explicit VR (CS, DA, TM, UI, UL, SH, LO...).
const EXPLICIT_VRS: [[u8; 2]; 8] = [
    *b"CS", *b"DA", *b"TM", *b"UI", *b"UL", *b"SH", *b"LO", *b"DT",
];

// ---------------------------------------------------------------------------------------------
// Checks before the pixel data is read

/// Transfer syntaxes whose pixel data this build decodes (dicom-pixeldata with the `native`,
/// `openjp2` and `charls` features), with their PS3.6 names for messages.
///
/// Checked from the header so that files that cannot be decoded (video, JPIP references,
/// JPEG XL...) are rejected before their pixel data is read into memory.
const DECODABLE_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    (
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
    ),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction",
    ),
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"),
    (
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.93",
        "JPEG 2000 Part 2 Multi-component Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.203",
        "High-Throughput JPEG 2000 Image Compression",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
];

/// Names of transfer syntaxes that are seen in archives but not decoded here.
const OTHER_TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2.4.94", "JPIP Referenced"),
    ("1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    ("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
    (
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
    ),
    (
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
    ),
    (
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
    ),
    ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    ("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"),
    ("1.2.840.10008.1.2.4.112", "JPEG XL"),
    ("1.2.840.10008.1.2.6.1", "RFC 2557 MIME encapsulation"),
    ("1.2.840.10008.1.2.6.2", "XML Encoding"),
];

fn transfer_syntax_name(uid: &str) -> &'static str {
    DECODABLE_TRANSFER_SYNTAXES
        .iter()
        .chain(OTHER_TRANSFER_SYNTAXES)
        .find(|(u, _)| *u == uid)
        .map_or("unknown transfer syntax", |(_, name)| name)
}

fn unsupported_ts(path: &Path, uid: &str) -> IngestError {
    let uid = trim_value(uid);
    IngestError::UnsupportedTransferSyntax {
        path: path.to_path_buf(),
        uid: uid.to_string(),
        name: transfer_syntax_name(uid).to_string(),
    }
}

fn check_transfer_syntax(path: &Path, obj: &DefaultDicomObject) -> Result<(), IngestError> {
    let uid = trim_value(obj.meta().transfer_syntax());
    if DECODABLE_TRANSFER_SYNTAXES.iter().any(|(u, _)| *u == uid) {
        Ok(())
    } else {
        Err(unsupported_ts(path, uid))
    }
}

/// Rejects images larger than `max_pixels` from their header, before any pixel is read.
///
/// Rows x Columns is the image size; a multi-frame or multi-sample image is additionally
/// checked as its frames and samples stacked vertically (all frames of native pixel data are
/// read into memory even though only the first is decoded), and reported so.
fn check_size(path: &Path, obj: &InMemDicomObject, max_pixels: u64) -> Result<(), IngestError> {
    let (Some(rows), Some(cols)) = (uint(obj, tags::ROWS), uint(obj, tags::COLUMNS)) else {
        return Ok(()); // no image attributes: decided once Pixel Data is known to be absent
    };
    let too_large = |width: u64, height: u64| IngestError::TooLarge {
        path: path.to_path_buf(),
        width,
        height,
        limit: max_pixels,
    };
    if rows.saturating_mul(cols) > max_pixels {
        return Err(too_large(cols, rows));
    }
    let frames = uint(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(1);
    let stacked = rows.saturating_mul(frames).saturating_mul(samples);
    if stacked.saturating_mul(cols) > max_pixels {
        return Err(too_large(cols, stacked));
    }
    Ok(())
}

/// Rejects image pixel modules that dicom-pixeldata would assert on (and so panic) or decode
/// into nonsense, with a message that says what is wrong.
fn check_pixel_module(path: &Path, obj: &InMemDicomObject) -> Result<(), IngestError> {
    let fail = |reason: String| {
        Err(IngestError::PixelData {
            path: path.to_path_buf(),
            reason,
        })
    };
    let (Some(rows), Some(cols)) = (uint(obj, tags::ROWS), uint(obj, tags::COLUMNS)) else {
        return fail("Rows or Columns missing".into());
    };
    if rows == 0 || cols == 0 {
        return fail(format!("empty image ({cols}x{rows})"));
    }
    let allocated = uint(obj, tags::BITS_ALLOCATED);
    let stored = uint(obj, tags::BITS_STORED).or(allocated);
    match (allocated, stored) {
        (Some(a @ (8 | 16)), Some(s)) if (1..=a).contains(&s) => Ok(()),
        (Some(a @ (8 | 16)), s) => {
            fail(format!("Bits Stored {s:?} invalid for Bits Allocated {a}"))
        }
        (a, _) => fail(format!("Bits Allocated {a:?} not supported (8 or 16 only)")),
    }
}

/// Checks frame 0 of RLE Lossless pixel data before dicom-rs decodes it.
///
/// dicom-transfer-syntax-registry indexes its RLE header and decoded segments without bounds
/// checks (a short fragment, a segment count past the fragment, or a segment that decodes to
/// fewer bytes than Rows x Columns all panic). `catch_unwind` in [`decode_pixels`] would stop
/// the panic, but a panic hook (a fuzzer's, an embedding application's) still sees it, and the
/// reason it would give is an index out of bounds; this names the fault instead.
fn check_rle_frame(path: &Path, obj: &DefaultDicomObject) -> Result<(), IngestError> {
    if trim_value(obj.meta().transfer_syntax()) != uids::RLE_LOSSLESS {
        return Ok(());
    }
    let fail = |reason: String| {
        Err(IngestError::PixelData {
            path: path.to_path_buf(),
            reason: format!("RLE Lossless: {reason}"),
        })
    };
    let Some(fragment) = obj
        .get(tags::PIXEL_DATA)
        .and_then(|e| e.value().fragments())
        .and_then(|f| f.first())
    else {
        return fail("pixel data is not encapsulated in fragments".into());
    };
    // check_pixel_module has accepted Rows, Columns and Bits Allocated (8 or 16).
    let plane = uint(obj, tags::ROWS)
        .unwrap_or(0)
        .saturating_mul(uint(obj, tags::COLUMNS).unwrap_or(0));
    let bytes_per_sample = uint(obj, tags::BITS_ALLOCATED).unwrap_or(8) / 8;
    let samples = uint(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let segments = samples.saturating_mul(bytes_per_sample);
    check_rle_fragment(fragment, segments, plane).or_else(fail)
}

/// Validates one RLE frame (DICOM PS3.5 annex G): a 64-byte header of a segment count (at most
/// 15) and the segments' offsets, then `segments` PackBits segments, each decoding to at least
/// `plane` bytes.
fn check_rle_fragment(fragment: &[u8], segments: u64, plane: u64) -> Result<(), String> {
    const HEADER: usize = 64;
    if fragment.len() < HEADER {
        return Err(format!(
            "frame of {} bytes is shorter than the 64-byte RLE header",
            fragment.len()
        ));
    }
    let word = |i: usize| {
        let b = &fragment[4 * i..4 * i + 4];
        u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let declared = word(0);
    if declared > 15 || declared < segments {
        return Err(format!(
            "header declares {declared} segments, the image needs {segments} (at most 15)"
        ));
    }
    let len = fragment.len() as u64;
    // Segment k runs from its offset to the next one's, the last to the end of the frame.
    let bounds: Vec<u64> = (1..=declared as usize).map(word).chain([len]).collect();
    for k in 0..segments as usize {
        let (start, end) = (bounds[k], bounds[k + 1]);
        if start < HEADER as u64 || start > end || end > len {
            return Err(format!(
                "segment {k} spans bytes {start}..{end} of a {len}-byte frame"
            ));
        }
        let decoded = packbits_len(&fragment[start as usize..end as usize]);
        if decoded < plane {
            return Err(format!(
                "segment {k} decodes to {decoded} bytes, the image needs {plane}"
            ));
        }
    }
    Ok(())
}

/// Bytes a PackBits segment decodes to, read the way dicom-rs reads it: a literal run cut
/// short by the end of the segment yields only the bytes present.
fn packbits_len(segment: &[u8]) -> u64 {
    let (mut at, mut out) = (0usize, 0u64);
    while at < segment.len() {
        let header = segment[at] as i8;
        at += 1;
        match header {
            -128 => {}
            -127..=-1 => {
                if at >= segment.len() {
                    break; // a replicate run without its byte: the decoder stops here too
                }
                out += 1 + u64::from(header.unsigned_abs());
                at += 1;
            }
            _ => {
                let run = (header as usize + 1).min(segment.len() - at);
                out += run as u64;
                at += run;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pixels

/// Decodes frame 0 and runs the grey pipeline. The dicom-pixeldata calls run under
/// `catch_unwind`: its codecs may panic on corrupt fragments, which must not kill a batch.
fn decode_pixels(path: &Path, obj: &DefaultDicomObject) -> Result<GreyImage, IngestError> {
    let pixel_error = |reason: String| IngestError::PixelData {
        path: path.to_path_buf(),
        reason,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<GreyImage, String> {
        let decoded = obj
            .decode_pixel_data_frame(0)
            .map_err(|e| error_chain(&e))?;
        convert_frame(obj, &decoded)
    }));
    match outcome {
        Ok(result) => result.map_err(pixel_error),
        Err(panic) => Err(pixel_error(format!(
            "decoder panicked: {}",
            super::panic_message(panic.as_ref())
        ))),
    }
}

/// Frame 0 through steps 3 to 5 of the pipeline (colour images: to luma).
///
/// A grey image's stored values are integers of at most 16 bits, so steps 3 to 5 are one
/// function of the stored value. It is evaluated once per possible value into a table (at most
/// 65,536 entries), and each pixel is then a single lookup: the per-pixel cost of the Modality
/// LUT, the window and the inversion no longer grows with their complexity, and no
/// intermediate full-resolution image is made. The table's entries are computed exactly as the
/// per-pixel steps would compute them (dicom-pixeldata's own rescale table, then the same
/// `f32` window arithmetic), so the pixels are the same bit for bit; the percentile window,
/// which depends on the image, comes from a histogram of the stored values.
fn convert_frame(obj: &InMemDicomObject, decoded: &DecodedPixelData) -> Result<GreyImage, String> {
    let width = decoded.columns() as usize;
    let height = decoded.rows() as usize;
    let n = width * height;
    let pi = decoded.photometric_interpretation();
    let spp = decoded.samples_per_pixel();

    if !pi.is_monochrome() {
        let pixels = colour_to_luma(decoded, n)?;
        return Ok(GreyImage {
            width,
            height,
            pixels,
        });
    }
    if spp != 1 {
        return Err(format!("{pi} with {spp} samples per pixel"));
    }
    let repr = decoded.pixel_representation();
    let bytes_per_sample = usize::from(decoded.bits_allocated().div_ceil(8));
    let data = decoded.frame_data(0).map_err(|e| error_chain(&e))?;
    if data.len() < n * bytes_per_sample {
        return Err(format!(
            "{} samples decoded for {width}x{height}",
            data.len() / bytes_per_sample
        ));
    }
    let data = &data[..n * bytes_per_sample];

    // Step 3. dicom-pixeldata's rescale table masks each sample to Bits Stored and sign-extends
    // it; with the identity rescale it yields the stored values, which the Modality LUT
    // Sequence then maps (the sequence replaces the rescale, PS3.3 C.11.1).
    let modality_lut = modality_lut_sequence(obj, repr)?;
    let rescale = match &modality_lut {
        Some(_) => Rescale::new(1.0, 0.0),
        None => decoded
            .rescale()
            .map_err(|e| error_chain(&e))?
            .first()
            .copied()
            .unwrap_or(Rescale::new(1.0, 0.0)),
    };
    let bits = decoded.bits_stored();
    let rescaled = Lut::<f32>::new_rescale(bits, repr == PixelRepresentation::Signed, rescale)
        .map_err(|e| error_chain(&e))?;
    let mask = (1u32 << bits) - 1;
    let mut table: Vec<f32> = (0..=mask).map(|code| rescaled.get(code)).collect();
    if let Some(lut) = &modality_lut {
        lut.apply(&mut table);
    }

    // Step 4: VOI LUT Sequence, else window, else the percentile window of this image.
    if let Some(lut) = voi_lut_sequence(obj, repr)? {
        lut.apply_voi(&mut table);
    } else if let Some(window) = first_window(decoded) {
        window.apply(&mut table);
    } else {
        let mut counts = vec![0u32; table.len()];
        for_each_code(data, bytes_per_sample, mask, |code| counts[code] += 1);
        let (lo, hi) = percentile_window_of_counts(&table, &counts);
        apply_linear_window(&mut table, lo, hi);
    }
    // Step 5.
    if *pi == PhotometricInterpretation::Monochrome1 {
        invert(&mut table);
    }
    let mut pixels = Vec::with_capacity(n);
    for_each_code(data, bytes_per_sample, mask, |code| {
        pixels.push(table[code])
    });
    Ok(GreyImage {
        width,
        height,
        pixels,
    })
}

/// Calls `f` with each sample of `data` masked to Bits Stored: one byte per sample, or two in
/// the machine's order (dicom-pixeldata's decoded layout).
fn for_each_code(data: &[u8], bytes_per_sample: usize, mask: u32, mut f: impl FnMut(usize)) {
    if bytes_per_sample == 1 {
        for &b in data {
            f((u32::from(b) & mask) as usize);
        }
    } else {
        for b in data.chunks_exact(2) {
            f((u32::from(u16::from_ne_bytes([b[0], b[1]])) & mask) as usize);
        }
    }
}

/// The first window of the object (dicom-pixeldata also finds it in the shared or per-frame
/// functional groups of enhanced multi-frame images), if it is a valid one.
fn first_window(decoded: &DecodedPixelData) -> Option<VoiWindow> {
    let window = *decoded.window().ok()??.first()?;
    let function = match decoded.voi_lut_function().ok().flatten() {
        Some(functions) => match functions.first() {
            Some(VoiLutFunction::Linear) | None => VoiFunction::Linear,
            Some(VoiLutFunction::LinearExact) => VoiFunction::LinearExact,
            Some(VoiLutFunction::Sigmoid) => VoiFunction::Sigmoid,
        },
        None => VoiFunction::Linear,
    };
    VoiWindow::new(window.center, window.width, function)
}

/// Rec. 601 luma of RGB (or the Y of native YBR_FULL), scaled to `[0, 1]` by the largest
/// stored value.
fn colour_to_luma(decoded: &DecodedPixelData, n: usize) -> Result<Vec<f32>, String> {
    let pi = decoded.photometric_interpretation();
    let spp = decoded.samples_per_pixel() as usize;
    if spp != 3 {
        return Err(format!("{pi} with {spp} samples per pixel"));
    }
    let bytes = decoded.bits_allocated().div_ceil(8) as usize;
    let data = decoded.data();
    if data.len() < n * 3 * bytes {
        return Err(format!("{} bytes decoded for {n} {pi} pixels", data.len()));
    }
    let sample = |i: usize| -> f32 {
        match bytes {
            1 => f32::from(data[i]),
            _ => f32::from(u16::from_ne_bytes([data[2 * i], data[2 * i + 1]])),
        }
    };
    // Standard layout: R G B R G B...; PixelFirst (planar configuration 1): all R, all G, all B.
    let planar = decoded.planar_configuration() == PlanarConfiguration::PixelFirst;
    let index = |p: usize, c: usize| if planar { c * n + p } else { p * 3 + c };
    let scale = 1.0 / (((1u32 << decoded.bits_stored().clamp(1, 16)) - 1) as f32);
    let luma: Vec<f32> = match pi {
        PhotometricInterpretation::Rgb => (0..n)
            .map(|p| {
                0.299 * sample(index(p, 0))
                    + 0.587 * sample(index(p, 1))
                    + 0.114 * sample(index(p, 2))
            })
            .collect(),
        PhotometricInterpretation::YbrFull => (0..n).map(|p| sample(index(p, 0))).collect(),
        other => return Err(format!("photometric interpretation {other} not supported")),
    };
    Ok(luma
        .into_iter()
        .map(|v| (v * scale).clamp(0.0, 1.0))
        .collect())
}

/// The first item of the Modality LUT Sequence (0028,3000), if any (PS3.3 C.11.1).
fn modality_lut_sequence(
    obj: &InMemDicomObject,
    repr: PixelRepresentation,
) -> Result<Option<LookupTable>, String> {
    lut_from_sequence(obj, tags::MODALITY_LUT_SEQUENCE, repr)
        .map_err(|e| format!("Modality LUT Sequence: {e}"))
}

/// The first item of the VOI LUT Sequence (0028,3010), if any (PS3.3 C.11.2.1.1).
fn voi_lut_sequence(
    obj: &InMemDicomObject,
    repr: PixelRepresentation,
) -> Result<Option<LookupTable>, String> {
    lut_from_sequence(obj, tags::VOILUT_SEQUENCE, repr)
        .map_err(|e| format!("VOI LUT Sequence: {e}"))
}

/// Reads LUT Descriptor (0028,3002) and LUT Data (0028,3006) from the first item of a LUT
/// sequence. An empty sequence counts as absent; an item that cannot be a LUT is an error.
fn lut_from_sequence(
    obj: &InMemDicomObject,
    sequence: Tag,
    repr: PixelRepresentation,
) -> Result<Option<LookupTable>, String> {
    let Some(item) = obj
        .get(sequence)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
    else {
        return Ok(None);
    };
    let descriptor: Vec<i64> = item
        .get(tags::LUT_DESCRIPTOR)
        .ok_or("LUT Descriptor missing")?
        .to_multi_int()
        .map_err(|e| format!("LUT Descriptor: {e}"))?;
    let [entries, first, bits] = descriptor[..] else {
        return Err(format!(
            "LUT Descriptor has {} values, not 3",
            descriptor.len()
        ));
    };
    // C.11.1.1: 0 entries means 65536; the first mapped value is US or SS following Pixel
    // Representation, so a signed image's -1 may arrive as 65535.
    let entries = if entries == 0 { 65536 } else { entries } as usize;
    let first = if repr == PixelRepresentation::Signed && first > 32767 {
        first - 65536
    } else {
        first
    };
    let bits = u32::try_from(bits).map_err(|_| format!("LUT Descriptor bits {bits}"))?;
    let DicomValue::Primitive(data) = item.get(tags::LUT_DATA).ok_or("LUT Data missing")?.value()
    else {
        return Err("LUT Data is not a primitive value".into());
    };
    let mut values = lut_entries(data, entries, bits)?;
    values.truncate(entries);
    LookupTable::new(first, values, bits)
        .map(Some)
        .ok_or_else(|| format!("unusable LUT ({entries} entries of {bits} bits)"))
}

/// LUT Data entries as `u16`, whatever VR the data came in: OW/US values, or bytes (OB, or OW
/// read as bytes), where 8-bit tables may hold one entry per byte (C.11.1.1.1).
fn lut_entries(value: &PrimitiveValue, entries: usize, bits: u32) -> Result<Vec<u16>, String> {
    let bytes_per_entry = |raw: Cow<[u8]>, le: bool| -> Vec<u16> {
        if bits <= 8 && raw.len() >= entries && raw.len() < 2 * entries {
            raw.iter().map(|&b| u16::from(b)).collect()
        } else {
            raw.chunks_exact(2)
                .map(|c| {
                    if le {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_ne_bytes([c[0], c[1]])
                    }
                })
                .collect()
        }
    };
    Ok(match value {
        PrimitiveValue::U16(v) if bits <= 8 && v.len() < entries => {
            // 8-bit entries packed two per OW word, low byte first.
            bytes_per_entry(value.to_bytes(), false)
        }
        PrimitiveValue::U16(v) => v.to_vec(),
        PrimitiveValue::I16(v) => v.iter().map(|&x| x as u16).collect(),
        PrimitiveValue::U8(v) => bytes_per_entry(Cow::Borrowed(&v[..]), true),
        other => other
            .to_multi_int::<u16>()
            .map_err(|e| format!("LUT Data: {e}"))?,
    })
}

// ---------------------------------------------------------------------------------------------
// Metadata

fn image_meta(obj: &InMemDicomObject, opts: &DecodeOptions) -> ImageMeta {
    let study_date = text(obj, tags::STUDY_DATE).and_then(|d| parse_date(&d));
    let age = text(obj, tags::PATIENT_AGE)
        .and_then(|a| parse_age(&a))
        .or_else(|| {
            let birth = text(obj, tags::PATIENT_BIRTH_DATE).and_then(|d| parse_date(&d))?;
            age_from_dates(birth, study_date?)
        });
    ImageMeta {
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(obj, tags::SERIES_INSTANCE_UID),
        modality: text(obj, tags::MODALITY),
        view_position: text(obj, tags::VIEW_POSITION),
        body_part: text(obj, tags::BODY_PART_EXAMINED),
        patient_sex: text(obj, tags::PATIENT_SEX),
        patient_age: age,
        study_date: study_date.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        patient_hash: text(obj, tags::PATIENT_ID).map(|id| patient_hash(&opts.patient_salt, &id)),
    }
}

/// Lowercase hex of the first 16 bytes of SHA-256(salt || Patient ID): stable within an index,
/// unlinkable across indexes with different salts, and not reversible to the ID.
pub fn patient_hash(salt: &str, patient_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(patient_id.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Patient Age (AS, PS3.5 6.2): `nnnD`, `nnnW`, `nnnM` or `nnnY`, in whole years (an infant
/// of 6 months is 0). Bare digits, which some writers use, are read as years.
pub fn parse_age(value: &str) -> Option<u32> {
    let value = trim_value(value);
    let (digits, unit) = match value.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_uppercase()),
        _ => (value, 'Y'),
    };
    let digits = digits.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    let years = match unit {
        'Y' => n,
        'M' => n / 12,
        'W' => n.saturating_mul(7) / 365,
        'D' => n / 365,
        _ => return None,
    };
    plausible_age(years)
}

/// Whole years between a birth date and a study date; `None` when the study precedes birth.
pub fn age_from_dates(birth: (i32, u32, u32), study: (i32, u32, u32)) -> Option<u32> {
    let mut years = study.0 - birth.0;
    if (study.1, study.2) < (birth.1, birth.2) {
        years -= 1;
    }
    u32::try_from(years).ok().and_then(plausible_age)
}

/// Ages above 150 are data-entry errors or placeholders, not ages.
fn plausible_age(years: u32) -> Option<u32> {
    (years <= 150).then_some(years)
}

/// A DA value (`YYYYMMDD`, or the ACR-NEMA `YYYY.MM.DD` still found in old files) as
/// `(year, month, day)`, validated.
pub fn parse_date(value: &str) -> Option<(i32, u32, u32)> {
    let value = trim_value(value);
    let digits: String = match value.len() {
        8 => value.to_string(),
        10 if value.as_bytes()[4] == b'.' && value.as_bytes()[7] == b'.' => value.replace('.', ""),
        _ => return None,
    };
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[0..4].parse().ok()?;
    let month: u32 = digits[4..6].parse().ok()?;
    let day: u32 = digits[6..8].parse().ok()?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&day).then_some((year, month, day))
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// DICOM pads values with trailing spaces (text) or NULs (UI); leading spaces are not
/// significant in any attribute read here.
fn trim_value(value: &str) -> &str {
    value.trim_end_matches([' ', '\0']).trim_start_matches(' ')
}

/// A text attribute, trimmed; `None` when absent, empty or not text.
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let value = trim_value(&value);
    (!value.is_empty()).then(|| value.to_string())
}

/// A numeric attribute (US, UL or IS) as `u64`.
fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u64> {
    obj.get(tag)?.to_int::<u64>().ok()
}

fn sop_class(obj: &DefaultDicomObject) -> String {
    text(obj, tags::SOP_CLASS_UID)
        .or_else(|| {
            let uid = trim_value(obj.meta().media_storage_sop_class_uid());
            (!uid.is_empty()).then(|| uid.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// An error and its sources, `: `-separated: dicom-rs errors say little at the top level.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, VR};
    use dicom_object::FileMetaTableBuilder;
    use std::path::PathBuf;

    fn shared_dicom(name: &str) -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/dicom")
            .join(name);
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping: {} not found", path.display());
            None
        }
    }

    /// A small native DICOM image written with dicom-object's in-memory API.
    fn write_image(
        dir: &Path,
        name: &str,
        rows: u16,
        cols: u16,
        pixels: Option<Vec<u16>>,
        extra: Vec<DataElement<InMemDicomObject>>,
    ) -> PathBuf {
        let mut elements = vec![
            DataElement::new(
                tags::SOP_CLASS_UID,
                VR::UI,
                uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
            ),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.1234"),
            DataElement::new(tags::MODALITY, VR::CS, "CR"),
            DataElement::new(tags::PATIENT_ID, VR::LO, "SECRET-ID-42"),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ),
        ];
        if let Some(pixels) = pixels {
            elements.push(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(pixels.into()),
            ));
        }
        let mut obj = InMemDicomObject::from_element_iter(elements);
        for e in extra {
            obj.put(e);
        }
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap();
        let path = dir.join(name);
        file.write_to_file(&path).unwrap();
        path
    }

    fn cs(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, vr, value)
    }

    #[test]
    fn age_strings_in_whole_years() {
        assert_eq!(parse_age("045Y"), Some(45));
        assert_eq!(parse_age("006M"), Some(0));
        assert_eq!(parse_age("018M"), Some(1));
        assert_eq!(parse_age("010W"), Some(0));
        assert_eq!(parse_age("104W"), Some(1));
        assert_eq!(parse_age("003D"), Some(0));
        assert_eq!(parse_age("62"), Some(62));
        assert_eq!(parse_age("062Y "), Some(62));
        assert_eq!(parse_age(""), None);
        assert_eq!(parse_age("Y"), None);
        assert_eq!(parse_age("abcY"), None);
        assert_eq!(parse_age("045X"), None);
        assert_eq!(parse_age("999Y"), None);
    }

    #[test]
    fn age_from_birth_and_study_dates() {
        assert_eq!(age_from_dates((1940, 3, 5), (2004, 8, 26)), Some(64));
        assert_eq!(age_from_dates((1940, 9, 5), (2004, 8, 26)), Some(63));
        assert_eq!(age_from_dates((1940, 8, 26), (2004, 8, 26)), Some(64));
        assert_eq!(age_from_dates((2005, 1, 1), (2004, 8, 26)), None);
    }

    #[test]
    fn dates_are_validated() {
        assert_eq!(parse_date("20040826"), Some((2004, 8, 26)));
        assert_eq!(parse_date("1995.07.20 "), Some((1995, 7, 20)));
        assert_eq!(parse_date("20000229"), Some((2000, 2, 29)));
        assert_eq!(parse_date("19000229"), None);
        assert_eq!(parse_date("20041301"), None);
        assert_eq!(parse_date("2004082"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn patient_hash_is_salted_and_truncated() {
        let a = patient_hash("salt-a", "123");
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, patient_hash("salt-b", "123"));
        // SHA-256("abc") starts ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(patient_hash("a", "bc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn synthetic_image_goes_through_rescale_window_and_monochrome1() {
        let dir = tempfile::tempdir().unwrap();
        // Stored 0..=4095 in 12 bits, with garbage in the unused high bits of one sample.
        let pixels = vec![0u16, 1000, 2000, 3000, 4095, 0xF000 | 2000];
        let extra = vec![
            cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"),
            cs(tags::RESCALE_SLOPE, VR::DS, "2"),
            cs(tags::RESCALE_INTERCEPT, VR::DS, "-1000"),
            cs(tags::WINDOW_CENTER, VR::DS, "3000\\100"),
            cs(tags::WINDOW_WIDTH, VR::DS, "4001\\10"),
            cs(tags::PATIENT_AGE, VR::AS, "006M"),
            cs(tags::STUDY_DATE, VR::DA, "20240131"),
        ];
        let path = write_image(dir.path(), "mono1.dcm", 2, 3, Some(pixels), extra);
        let opts = DecodeOptions {
            patient_salt: "s".into(),
            ..Default::default()
        };
        let out = decode(&path, &opts).unwrap();
        assert_eq!((out.image.width, out.image.height), (3, 2));
        // modality = 2 * stored - 1000; window 3000/4001 maps [999.5, 5000.5) linearly onto
        // [0, 1): y = (x - 2999.5) / 4000 + 0.5; then MONOCHROME1 flips it.
        let expected: Vec<f32> = [0.0f64, 1000.0, 2000.0, 3000.0, 4095.0, 2000.0]
            .iter()
            .map(|s| {
                let x = 2.0 * s - 1000.0;
                let y = if x <= 999.5 {
                    0.0
                } else if x > 4999.5 {
                    1.0
                } else {
                    (x - 2999.5) / 4000.0 + 0.5
                };
                (1.0 - y) as f32
            })
            .collect();
        for (got, want) in out.image.pixels.iter().zip(&expected) {
            assert!(
                (got - want).abs() < 1e-6,
                "{:?} vs {expected:?}",
                out.image.pixels
            );
        }
        assert_eq!(out.meta.patient_age, Some(0));
        assert_eq!(out.meta.study_date.as_deref(), Some("2024-01-31"));
        assert_eq!(out.meta.modality.as_deref(), Some("CR"));
        assert_eq!(
            out.meta.patient_hash.as_deref(),
            Some(patient_hash("s", "SECRET-ID-42").as_str())
        );
        let printed = format!("{:?}", out.meta);
        assert!(!printed.contains("SECRET-ID-42"));
    }

    #[test]
    fn missing_window_falls_back_to_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u16> = (0..1000).collect();
        let extra = vec![cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")];
        let path = write_image(dir.path(), "mono2.dcm", 10, 100, Some(pixels), extra);
        let out = decode(&path, &DecodeOptions::default()).unwrap();
        let (lo, hi) = (0.005 * 999.0, 0.995 * 999.0);
        for (i, v) in out.image.pixels.iter().enumerate() {
            let want = ((i as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) as f32;
            assert!((v - want).abs() < 1e-5, "pixel {i}: {v} vs {want}");
        }
    }

    #[test]
    fn modality_and_voi_lut_sequences_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let lut_item = |first: u16, data: Vec<u16>, bits: u16| {
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::LUT_DESCRIPTOR,
                    VR::US,
                    PrimitiveValue::U16(vec![data.len() as u16, first, bits].into()),
                ),
                DataElement::new(tags::LUT_DATA, VR::OW, PrimitiveValue::U16(data.into())),
            ])
        };
        let extra = vec![
            cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(
                tags::MODALITY_LUT_SEQUENCE,
                VR::SQ,
                DicomValue::new_sequence(
                    vec![lut_item(1, vec![10, 20, 30], 16)],
                    dicom_core::Length::UNDEFINED,
                ),
            ),
            DataElement::new(
                tags::VOILUT_SEQUENCE,
                VR::SQ,
                DicomValue::new_sequence(
                    vec![lut_item(
                        10,
                        vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 255],
                        8,
                    )],
                    dicom_core::Length::UNDEFINED,
                ),
            ),
            // A window too: the VOI LUT Sequence wins.
            cs(tags::WINDOW_CENTER, VR::DS, "0"),
            cs(tags::WINDOW_WIDTH, VR::DS, "2"),
        ];
        let path = write_image(dir.path(), "luts.dcm", 1, 4, Some(vec![0, 1, 2, 3]), extra);
        let out = decode(&path, &DecodeOptions::default()).unwrap();
        // stored 0,1,2,3 -> modality 10,10,20,30 (0 clamps to the first entry)
        // -> VOI entries 0,0,128,255 (30 clamps to the last) of an 8-bit table
        assert_eq!(out.image.pixels, vec![0.0, 0.0, 128.0 / 255.0, 1.0]);
    }

    #[test]
    fn max_pixels_is_checked_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        // Declares 60000 x 60000 but carries only 4 pixels: must be refused before decoding.
        let extra = vec![cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")];
        let path = write_image(
            dir.path(),
            "huge.dcm",
            60000,
            60000,
            Some(vec![0; 4]),
            extra,
        );
        match decode(&path, &DecodeOptions::default()) {
            Err(IngestError::TooLarge {
                width,
                height,
                limit,
                ..
            }) => {
                assert_eq!((width, height), (60000, 60000));
                assert_eq!(limit, DecodeOptions::default().max_pixels);
            }
            other => panic!("expected TooLarge, got {:?}", other.map(|d| d.meta)),
        }
        // Frames count towards the limit too.
        let extra = vec![
            cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            cs(tags::NUMBER_OF_FRAMES, VR::IS, "1000"),
        ];
        let path = write_image(
            dir.path(),
            "frames.dcm",
            1000,
            1000,
            Some(vec![0; 4]),
            extra,
        );
        let opts = DecodeOptions {
            max_pixels: 10_000_000,
            ..Default::default()
        };
        assert!(matches!(
            decode(&path, &opts),
            Err(IngestError::TooLarge { .. })
        ));
        // read_meta does not decode pixels, so it still works.
        assert!(read_meta(&path, &opts).is_ok());
    }

    #[test]
    fn non_image_dicom_reports_its_sop_class() {
        let dir = tempfile::tempdir().unwrap();
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::BASIC_TEXT_SR_STORAGE),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.99"),
            DataElement::new(tags::MODALITY, VR::CS, "SR"),
        ]);
        let path = dir.path().join("sr.dcm");
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_to_file(&path)
            .unwrap();
        match decode(&path, &DecodeOptions::default()) {
            Err(IngestError::NoPixelData { sop_class, .. }) => {
                assert_eq!(sop_class, uids::BASIC_TEXT_SR_STORAGE)
            }
            other => panic!("expected NoPixelData, got {:?}", other.map(|d| d.meta)),
        }
    }

    #[test]
    fn unsupported_transfer_syntax_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let extra = vec![cs(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2")];
        let path = write_image(dir.path(), "ts.dcm", 2, 2, Some(vec![0; 4]), extra);
        // Same length as "1.2.840.10008.1.2.1\0": swap in another 20-byte UI value.
        let bytes = std::fs::read(&path).unwrap();
        let needle = b"1.2.840.10008.1.2.1\0";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        for (uid, name) in [
            ("1.2.840.10008.1.2.4.94", "JPIP Referenced"),
            ("1.2.3.4.5.6.7.8.9.10.1", "unknown transfer syntax"),
        ] {
            let mut patched = bytes.clone();
            let mut value = uid.as_bytes().to_vec();
            value.resize(needle.len() + 2, 0);
            // Rewrite the element's length too (the UID is 22 bytes, not 20).
            let len_at = at - 2;
            patched[len_at..len_at + 2].copy_from_slice(&(value.len() as u16).to_le_bytes());
            patched.splice(at..at + needle.len(), value);
            // ... and the group length (0002,0000), the first element after DICM.
            let gl_at = 128 + 4 + 8;
            let gl = u32::from_le_bytes(patched[gl_at..gl_at + 4].try_into().unwrap()) + 2;
            patched[gl_at..gl_at + 4].copy_from_slice(&gl.to_le_bytes());
            let p = dir.path().join("patched.dcm");
            std::fs::write(&p, patched).unwrap();
            match decode(&p, &DecodeOptions::default()) {
                Err(IngestError::UnsupportedTransferSyntax {
                    uid: u, name: n, ..
                }) => {
                    assert_eq!((u.as_str(), n.as_str()), (uid, name))
                }
                other => panic!(
                    "expected UnsupportedTransferSyntax, got {:?}",
                    other.map(|d| d.meta)
                ),
            }
        }
    }

    #[test]
    fn non_dicom_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 4] = [
            (
                "text.dcm",
                b"hello, this is not a DICOM file at all, just some text\n",
            ),
            ("empty.dcm", b""),
            (
                "png.dcm",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0",
            ),
            ("short.dcm", b"\x08\x00"),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = decode(&path, &DecodeOptions::default()).err();
            assert!(
                matches!(err, Some(IngestError::NotDicom { .. })),
                "{name}: {err:?}"
            );
            assert!(read_meta(&path, &DecodeOptions::default()).is_err());
        }
        let missing = dir.path().join("missing.dcm");
        assert!(matches!(
            decode(&missing, &DecodeOptions::default()),
            Err(IngestError::Io { .. })
        ));
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "rg1-uncr.dcm",
            "cr-mono1-10bit-no-preamble.dcm",
            "rg1-j2kr.dcm",
            "rg1-jpegls-near-lossless.dcm",
            "siim-ptx-negative-jpeg-baseline.dcm",
            "cr-modality-lut-sequence.dcm",
        ] {
            let Some(src) = shared_dicom(name) else {
                return;
            };
            let bytes = std::fs::read(&src).unwrap();
            for fraction in [0.002, 0.5, 0.99] {
                let cut = (bytes.len() as f64 * fraction) as usize;
                let path = dir.path().join(format!("cut-{name}"));
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let result = decode(&path, &DecodeOptions::default());
                assert!(result.is_err(), "{name} cut at {cut} bytes decoded");
            }
        }
    }

    #[test]
    fn corrupt_compressed_fragments_do_not_escape_as_panics() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "rg1-j2kr.dcm",
            "rg1-j2ki.dcm",
            "rg1-jpegls-near-lossless.dcm",
            "siim-ptx-negative-jpeg-baseline.dcm",
            "cr-modality-lut-sequence.dcm",
        ] {
            let Some(src) = shared_dicom(name) else {
                return;
            };
            let mut bytes = std::fs::read(&src).unwrap();
            // Scribble over the middle of the compressed stream, keeping every length intact.
            let mid = bytes.len() / 2;
            let mut x = 0x1234_5678u32;
            for b in &mut bytes[mid - 2048..mid + 2048] {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let path = dir.path().join(format!("bad-{name}"));
            std::fs::write(&path, &bytes).unwrap();
            // Garbage pixels or an error are both fine; a panic is not. With `min_side`, the
            // JPEG 2000 files also go through the reduced decode first.
            for min_side in [None, Some(224)] {
                let opts = DecodeOptions {
                    min_side,
                    ..DecodeOptions::default()
                };
                if let Ok(out) = decode(&path, &opts) {
                    assert!(out.image.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
                }
            }
        }
    }

    /// Steps 3 to 5 pixel by pixel, as they were computed before the table of
    /// [`convert_frame`]: dicom-pixeldata's conversion to `f32` modality values, then the
    /// window (or percentile window) and the inversion over the whole image.
    fn reference_grey(obj: &DefaultDicomObject) -> Vec<f32> {
        use dicom_pixeldata::{ConvertOptions, ModalityLutOption, VoiLutOption};
        let decoded = obj.decode_pixel_data_frame(0).unwrap();
        let repr = decoded.pixel_representation();
        let modality_lut = modality_lut_sequence(obj, repr).unwrap();
        let modality = match &modality_lut {
            Some(_) => ModalityLutOption::Override(Rescale::new(1.0, 0.0)),
            None => ModalityLutOption::Default,
        };
        let options = ConvertOptions::new()
            .with_modality_lut(modality)
            .with_voi_lut(VoiLutOption::Identity);
        let mut pixels: Vec<f32> = decoded.to_vec_frame_with_options(0, &options).unwrap();
        pixels.truncate(decoded.rows() as usize * decoded.columns() as usize);
        if let Some(lut) = &modality_lut {
            lut.apply(&mut pixels);
        }
        if let Some(lut) = voi_lut_sequence(obj, repr).unwrap() {
            lut.apply_voi(&mut pixels);
        } else if let Some(window) = first_window(&decoded) {
            window.apply(&mut pixels);
        } else {
            let (lo, hi) = super::super::window::percentile_window(&pixels);
            apply_linear_window(&mut pixels, lo, hi);
        }
        if *decoded.photometric_interpretation() == PhotometricInterpretation::Monochrome1 {
            invert(&mut pixels);
        }
        pixels
    }

    fn assert_same_bits(name: &str, ours: &[f32], reference: &[f32]) {
        assert_eq!(ours.len(), reference.len(), "{name}");
        let first = ours
            .iter()
            .zip(reference)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        if let Some(i) = first {
            panic!("{name}: pixel {i} is {} against {}", ours[i], reference[i]);
        }
    }

    #[test]
    fn the_per_value_table_gives_the_per_pixel_pipelines_pixels() {
        let dir = tempfile::tempdir().unwrap();
        // 12 bits stored in 16, garbage in the high bits of one sample; with and without a
        // window, rescale, MONOCHROME1, signed values, 8 bits, and a Modality LUT Sequence.
        let mut pixels: Vec<u16> = (0..64u16).map(|i| i * 61 % 4096).collect();
        pixels[5] |= 0xF000;
        let with = |extra: Vec<(Tag, VR, &str)>| -> Vec<DataElement<InMemDicomObject>> {
            let mono2 = (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
            std::iter::once(mono2)
                .chain(extra)
                .map(|(t, vr, v)| cs(t, vr, v))
                .collect()
        };
        let cases: Vec<(&str, Vec<DataElement<InMemDicomObject>>)> = vec![
            ("percentile", with(vec![])),
            (
                "window-rescale-mono1",
                with(vec![
                    (tags::RESCALE_SLOPE, VR::DS, "0.5"),
                    (tags::RESCALE_INTERCEPT, VR::DS, "-100"),
                    (tags::WINDOW_CENTER, VR::DS, "700"),
                    (tags::WINDOW_WIDTH, VR::DS, "1501"),
                    (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"),
                ]),
            ),
            (
                "signed-sigmoid",
                with(vec![
                    (tags::WINDOW_CENTER, VR::DS, "0"),
                    (tags::WINDOW_WIDTH, VR::DS, "3000"),
                    (tags::VOILUT_FUNCTION, VR::CS, "SIGMOID"),
                ]),
            ),
            (
                "signed-percentile-rescale",
                with(vec![
                    (tags::RESCALE_SLOPE, VR::DS, "3"),
                    (tags::RESCALE_INTERCEPT, VR::DS, "7.25"),
                ]),
            ),
        ];
        for (name, mut extra) in cases {
            if name.starts_with("signed") {
                extra.push(DataElement::new(
                    tags::PIXEL_REPRESENTATION,
                    VR::US,
                    PrimitiveValue::from(1u16),
                ));
            }
            let path = write_image(dir.path(), name, 8, 8, Some(pixels.clone()), extra);
            let obj = OpenFileOptions::new().open_file(&path).unwrap();
            let ours = decode(&path, &DecodeOptions::default())
                .unwrap()
                .image
                .pixels;
            assert_same_bits(name, &ours, &reference_grey(&obj));
        }
        // Every grey file of the shared set: native, JPEG, JPEG-LS, JPEG 2000, a Modality LUT
        // Sequence, MONOCHROME1, no window.
        let Some(dicom_dir) = shared_dicom("") else {
            return;
        };
        let mut names: Vec<_> = std::fs::read_dir(&dicom_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        names.sort();
        let mut compared = 0;
        for path in names {
            let name = path.display().to_string();
            let opts = DecodeOptions::default();
            let (Ok(out), Ok((_, layout, len))) = (
                decode(&path, &opts),
                open_header(&path, Source::File(&path), &opts),
            ) else {
                continue;
            };
            let Ok(obj) = read_object(Source::File(&path), layout, false, len) else {
                continue;
            };
            let Ok(decoded) = obj.decode_pixel_data_frame(0) else {
                continue;
            };
            if !decoded.photometric_interpretation().is_monochrome() {
                continue;
            }
            assert_same_bits(&name, &out.image.pixels, &reference_grey(&obj));
            compared += 1;
        }
        assert!(compared >= 6, "only {compared} shared files compared");
    }

    /// `image` averaged over a `cells x cells` grid: what survives any resize to a small input.
    fn grid_means(image: &GreyImage, cells: usize) -> Vec<f32> {
        let mut sums = vec![(0f64, 0u32); cells * cells];
        for y in 0..image.height {
            for x in 0..image.width {
                let cell = (y * cells / image.height) * cells + x * cells / image.width;
                sums[cell].0 += f64::from(image.pixels[y * image.width + x]);
                sums[cell].1 += 1;
            }
        }
        sums.iter()
            .map(|(s, n)| (*s / f64::from(*n)) as f32)
            .collect()
    }

    #[test]
    fn jpeg2000_stops_at_the_coarsest_level_the_model_needs() {
        let reduced = DecodeOptions {
            min_side: Some(224),
            ..DecodeOptions::default()
        };
        for name in ["rg1-j2ki.dcm", "rg1-j2kr.dcm"] {
            let Some(path) = shared_dicom(name) else {
                return;
            };
            let full = decode(&path, &DecodeOptions::default()).unwrap().image;
            let small = decode(&path, &reduced).unwrap().image;
            let (short, small_short) = (full.width.min(full.height), small.width.min(small.height));
            assert!(
                (224..448).contains(&small_short),
                "{name}: {}x{} from {}x{}",
                small.width,
                small.height,
                full.width,
                full.height
            );
            assert!(small_short * 4 <= short, "{name}: not reduced");
            // The same picture: the same window, the same grey levels, region by region.
            let (a, b) = (grid_means(&full, 16), grid_means(&small, 16));
            let mean_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / 256.0;
            assert!(mean_diff < 0.01, "{name}: mean difference {mean_diff}");
        }
        // Other transfer syntaxes decode exactly as without `min_side`.
        let Some(path) = shared_dicom("rg1-uncr.dcm") else {
            return;
        };
        let full = decode(&path, &DecodeOptions::default()).unwrap().image;
        let same = decode(&path, &reduced).unwrap().image;
        assert_eq!((full.width, full.height), (same.width, same.height));
        assert_eq!(full.pixels, same.pixels);
    }

    #[test]
    fn bare_data_set_without_preamble_or_meta_is_read() {
        let Some(path) = shared_dicom("cr-mono1-10bit-no-preamble.dcm") else {
            return;
        };
        let meta = read_meta(&path, &DecodeOptions::default()).unwrap();
        assert_eq!(meta.view_position.as_deref(), Some("PA"));
        assert_eq!(meta.body_part.as_deref(), Some("CHEST"));
        assert_eq!(meta.patient_hash, None);
        let out = decode(&path, &DecodeOptions::default()).unwrap();
        assert_eq!((out.image.width, out.image.height), (440, 440));
    }

    #[test]
    fn metadata_of_a_real_file() {
        let Some(path) = shared_dicom("rg1-uncr.dcm") else {
            return;
        };
        let meta = read_meta(&path, &DecodeOptions::default()).unwrap();
        assert_eq!(meta.modality.as_deref(), Some("CR"));
        assert_eq!(meta.patient_sex.as_deref(), Some("F"));
        assert_eq!(meta.study_date.as_deref(), Some("2004-08-26"));
        assert_eq!(meta.patient_age, Some(64)); // born 1940-03-05
        assert!(meta.sop_instance_uid.is_some());
        assert!(meta.patient_hash.is_some());
    }

    /// An RLE frame: the header, then each segment as given.
    fn rle_frame(declared: u32, segments: &[&[u8]]) -> Vec<u8> {
        let mut frame = vec![0u8; 64];
        frame[..4].copy_from_slice(&declared.to_le_bytes());
        let mut offset = 64u32;
        for (k, segment) in segments.iter().enumerate() {
            frame[4 + 4 * k..8 + 4 * k].copy_from_slice(&offset.to_le_bytes());
            offset += segment.len() as u32;
        }
        for segment in segments {
            frame.extend_from_slice(segment);
        }
        frame
    }

    #[test]
    fn rle_frames_that_decode_in_full_pass() {
        // 6 bytes: a replicate run of 4 (0xFD = -3) then a literal run of 2.
        let segment: &[u8] = &[0xFD, 7, 0x01, 1, 2];
        assert_eq!(packbits_len(segment), 6);
        assert_eq!(check_rle_fragment(&rle_frame(1, &[segment]), 1, 6), Ok(()));
        // 16-bit: two segments, high bytes then low bytes.
        let frame = rle_frame(2, &[segment, segment]);
        assert_eq!(check_rle_fragment(&frame, 2, 6), Ok(()));
    }

    #[test]
    fn rle_frames_that_would_panic_dicom_rs_are_named() {
        let segment: &[u8] = &[0xFD, 7, 0x01, 1, 2];
        let err = |frame: &[u8], segments, plane| check_rle_fragment(frame, segments, plane);
        // Shorter than the header.
        assert!(err(&[1, 0, 0, 0], 1, 6).unwrap_err().contains("shorter"));
        // More segments declared than the header can hold.
        let mut frame = rle_frame(1, &[segment]);
        frame[..4].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(err(&frame, 1, 6).unwrap_err().contains("1000000 segments"));
        // Fewer segments than 16-bit samples need.
        assert!(err(&rle_frame(1, &[segment]), 2, 6)
            .unwrap_err()
            .contains("needs 2"));
        // An offset past the end of the frame.
        let mut frame = rle_frame(1, &[segment]);
        frame[4..8].copy_from_slice(&500u32.to_le_bytes());
        assert!(err(&frame, 1, 6).unwrap_err().contains("spans bytes 500"));
        // A segment that decodes short (the fuzz crash: dicom-rs indexes past its end).
        assert!(err(&rle_frame(1, &[segment]), 1, 7)
            .unwrap_err()
            .contains("decodes to 6 bytes"));
        // A literal run cut off by the end of the segment counts only the bytes present.
        assert_eq!(packbits_len(&[0x05, 1, 2]), 2);
        assert_eq!(packbits_len(&[0xFD]), 0);
    }
}
