//! A corpus of malformed files: each gets a clear error line naming it, nothing panics or aborts,
//! and the good files of the same batch are indexed.

mod common;

use std::path::Path;

use common::{cxr, make_model};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// A 16-bit CR of `rows` x `cols`; pixel data only when `with_pixels`.
fn dicom(path: &Path, uid: &str, rows: u16, cols: u16, sop_class: &str, with_pixels: bool) {
    let mut elements = vec![
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, sop_class),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, uid),
        DataElement::new(tags::MODALITY, VR::CS, "CR"),
        DataElement::new(tags::PATIENT_ID, VR::LO, "P-0001"),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
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
    if with_pixels {
        let n = usize::from(rows) * usize::from(cols);
        let pixels: Vec<u16> = (0..n).map(|i| (i % 4096) as u16).collect();
        elements.push(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));
    }
    InMemDicomObject::from_element_iter(elements)
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

/// A PNG whose header declares `w` x `h` and whose data is a few bytes: a decoder that trusted
/// the header would allocate `w * h` bytes before finding out.
fn png_declaring(path: &Path, w: u32, h: u32) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32(kind);
        crc = crc32_update(crc, data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&(!crc).to_be_bytes());
    }
    fn crc32(data: &[u8]) -> u32 {
        crc32_update(0xFFFF_FFFF, data)
    }
    fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
    chunk(&mut out, b"IEND", &[]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn malformed_files_are_reported_and_the_rest_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    let cr = uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE;

    // Good files.
    dicom(&corpus.join("good.dcm"), "2.25.1", 64, 48, cr, true);
    image::GrayImage::from_fn(40, 40, |x, y| image::Luma([(x * y % 256) as u8]))
        .save(corpus.join("good.png"))
        .unwrap();

    // Bad files, each with the words its error must contain.
    let mut bad: Vec<(&str, &str)> = Vec::new();
    std::fs::write(corpus.join("empty.dcm"), b"").unwrap();
    bad.push(("empty.dcm", "empty file"));
    let good = std::fs::read(corpus.join("good.dcm")).unwrap();
    std::fs::write(corpus.join("truncated.dcm"), &good[..good.len() / 2]).unwrap();
    bad.push(("truncated.dcm", ""));
    // An element length far beyond the file: PatientID's 2-byte length set to 0xFFFF.
    let mut lengths = good.clone();
    let at = lengths
        .windows(6)
        .position(|w| w == [0x10, 0x00, 0x20, 0x00, b'L', b'O'])
        .expect("PatientID element");
    lengths[at + 6] = 0xFF;
    lengths[at + 7] = 0xFF;
    std::fs::write(corpus.join("bad-length.dcm"), &lengths).unwrap();
    bad.push(("bad-length.dcm", ""));
    // Pixel Data declaring 4 GiB in a file of a few KiB: refused from the lengths, before
    // dicom-rs would reserve (and zero) the 4 GiB.
    let mut declared = good.clone();
    let at = declared
        .windows(6)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00, b'O', b'W'])
        .expect("PixelData element");
    declared[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(corpus.join("declared-4gib.dcm"), &declared).unwrap();
    bad.push(("declared-4gib.dcm", "declares 4294967280 bytes"));
    dicom(&corpus.join("huge.dcm"), "2.25.2", 65535, 65535, cr, false);
    bad.push(("huge.dcm", ""));
    dicom(
        &corpus.join("report.dcm"),
        "2.25.3",
        0,
        0,
        uids::BASIC_TEXT_SR_STORAGE,
        false,
    );
    bad.push(("report.dcm", "pixel data"));
    png_declaring(&corpus.join("bomb.png"), 100_000, 100_000);
    bad.push(("bomb.png", "exceeds the limit"));
    std::fs::write(corpus.join("notes.jpg"), b"Impression: normal chest.\n").unwrap();
    bad.push(("notes.jpg", "unsupported file type"));
    std::fs::write(corpus.join("IM0001"), b"\x00\x01\x02\x03 random bytes").unwrap();
    bad.push(("IM0001", "unsupported file type"));

    // Encapsulated (JPEG baseline) pixel data cut inside its fragment.
    let siim = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/dicom/siim-ptx-negative-jpeg-baseline.dcm");
    if let Ok(bytes) = std::fs::read(&siim) {
        std::fs::write(
            corpus.join("broken-fragment.dcm"),
            &bytes[..bytes.len() * 3 / 5],
        )
        .unwrap();
        bad.push(("broken-fragment.dcm", ""));
    } else {
        eprintln!(
            "{} absent: the broken-fragment case is skipped",
            siim.display()
        );
    }

    let model = make_model(dir.path());
    let idx = dir.path().join("idx");
    let o = cxr(&[
        "index",
        corpus.to_str().unwrap(),
        "--out",
        idx.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--max-pixels",
        "40000000",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["indexed"], 2, "{stderr}");
    assert_eq!(summary["failed"], bad.len(), "{stderr}");
    for (name, words) in &bad {
        let line = stderr
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no error line for {name}:\n{stderr}"));
        assert!(line.starts_with("cxr: "), "{line}");
        assert!(line.contains(words), "{name}: `{line}` lacks `{words}`");
    }
    let errors = std::fs::read_to_string(idx.join("errors.jsonl")).unwrap();
    assert_eq!(errors.lines().count(), bad.len());
}
