//! JPEG 2000 frames decoded at the coarsest resolution the model still needs.
//!
//! A JPEG 2000 codestream is a wavelet pyramid. Resolution level `r` from the top is the image at
//! `1 / 2^r` of its size, and a decoder that stops there skips the code blocks and the inverse
//! transforms of every finer level (ISO/IEC 15444-1 Annex F and B.5; OpenJPEG's `cp_reduce`).
//! Most of a decode's time goes to those finer levels, yet a 2,500 px radiograph that the model
//! sees at 224 px uses none of their detail: the resize that follows averages it away.
//!
//! [`reduce_frame`] therefore decodes frame 0 of a single-frame grey JPEG 2000 image at the
//! largest `r` whose shorter side is still at least [`DecodeOptions::min_side`], and puts the
//! result back into the data set as native pixel data of the reduced size, so that every later
//! step of the grey pipeline (Modality LUT, VOI, MONOCHROME1) runs unchanged. The low-pass band
//! of the 5/3 and 9/7 wavelets keeps the DC gain of 1, so its samples are in the units of the
//! stored values and the file's rescale and window still apply to them.
//!
//! It is an optimisation only: anything it does not handle (colour, several frames, a
//! codestream it cannot read, a tile header with fewer levels than the main header declares)
//! leaves the data set untouched, and the ordinary full-resolution decode runs, with its own
//! error messages.
//!
//! [`DecodeOptions::min_side`]: super::DecodeOptions::min_side

use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;
use jpeg2k::{DecodeParameters, Image};

/// Transfer syntaxes whose codestreams are plain JPEG 2000 Part 1 or HTJ2K. Part 2
/// (multi-component) is left to the full decode.
const REDUCIBLE: &[&str] = &[
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
];

/// Replaces frame 0's JPEG 2000 pixel data with native pixel data decoded at a reduced
/// resolution whose shorter side is at least `min_side`. Returns the levels dropped, or 0
/// when the data set was left as it was (see the [module documentation](self)).
pub(super) fn reduce_frame(obj: &mut DefaultDicomObject, min_side: u32) -> u32 {
    let Some((codestream, rows, cols, bits_allocated)) = reducible(obj) else {
        return 0;
    };
    let Some(levels) = decomposition_levels(&codestream) else {
        return 0;
    };
    let r = levels_to_drop(rows.min(cols), min_side, levels);
    if r == 0 {
        return 0;
    }
    let params = DecodeParameters::new().reduce(r);
    let Ok(image) = Image::from_bytes_with(&codestream, params) else {
        return 0;
    };
    let [component] = image.components() else {
        return 0;
    };
    let (width, height) = (component.width(), component.height());
    let samples = component.data();
    if width == 0 || height == 0 || samples.len() != width as usize * height as usize {
        return 0;
    }
    let (Ok(rows16), Ok(cols16)) = (u16::try_from(height), u16::try_from(width)) else {
        return 0;
    };
    let bytes_per_sample = usize::from(bits_allocated / 8);
    let mut bytes = Vec::with_capacity(samples.len() * bytes_per_sample);
    for sample in samples {
        bytes.extend_from_slice(&sample.to_le_bytes()[..bytes_per_sample]);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(bytes.into()),
    ));
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(rows16),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(cols16),
    ));
    obj.update_meta(|meta| {
        meta.transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string();
        meta.update_information_group_length();
    });
    r
}

/// Frame 0's codestream with Rows, Columns and Bits Allocated, for the images this module
/// handles: a reducible transfer syntax, one frame, one sample per pixel, 8 or 16 bits.
fn reducible(obj: &DefaultDicomObject) -> Option<(Vec<u8>, u32, u32, u16)> {
    let ts = obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    if !REDUCIBLE.contains(&ts) {
        return None;
    }
    let uint = |tag| obj.get(tag)?.to_int::<u32>().ok();
    if uint(tags::NUMBER_OF_FRAMES).unwrap_or(1) != 1 || uint(tags::SAMPLES_PER_PIXEL)? != 1 {
        return None;
    }
    let (rows, cols) = (uint(tags::ROWS)?, uint(tags::COLUMNS)?);
    let bits_allocated = u16::try_from(uint(tags::BITS_ALLOCATED)?).ok()?;
    if bits_allocated != 8 && bits_allocated != 16 {
        return None;
    }
    let Value::PixelSequence(sequence) = obj.get(tags::PIXEL_DATA)?.value() else {
        return None;
    };
    // One frame: its codestream is every fragment, in order (PS3.5 A.4).
    let codestream: Vec<u8> = sequence.fragments().iter().flatten().copied().collect();
    Some((codestream, rows, cols, bits_allocated))
}

/// The number of wavelet decompositions of the codestream's components: the smallest that its
/// main header's COD and COC segments declare (ISO/IEC 15444-1 A.6.1, A.6.2). `None` when the
/// main header cannot be read.
fn decomposition_levels(codestream: &[u8]) -> Option<u32> {
    const SOC: u16 = 0xFF4F;
    const SIZ: u16 = 0xFF51;
    const COD: u16 = 0xFF52;
    const COC: u16 = 0xFF53;
    const SOT: u16 = 0xFF90;
    let be16 = |at: usize| -> Option<u16> {
        let b = codestream.get(at..at + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    };
    if be16(0)? != SOC {
        return None;
    }
    let mut components = 0u16;
    let mut levels: Option<u32> = None;
    let mut at = 2;
    loop {
        let marker = be16(at)?;
        if marker == SOT {
            return levels;
        }
        let length = usize::from(be16(at + 2)?);
        let segment = codestream.get(at + 4..at + 2 + length)?;
        match marker {
            // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, then Csiz.
            SIZ => components = u16::from_be_bytes([*segment.get(34)?, *segment.get(35)?]),
            // Scod, SGcod (4 bytes), then SPcod starting with the decomposition levels.
            COD => {
                let cod_levels = u32::from(*segment.get(5)?);
                levels = Some(levels.map_or(cod_levels, |l| l.min(cod_levels)));
            }
            // Ccoc (1 byte, 2 when Csiz > 256), Scoc, then SPcoc.
            COC => {
                let at_levels = if components > 256 { 3 } else { 2 };
                let coc_levels = u32::from(*segment.get(at_levels)?);
                levels = Some(levels.map_or(coc_levels, |l| l.min(coc_levels)));
            }
            _ => {}
        }
        at += 2 + length;
    }
}

/// The largest `r < levels + 1` that keeps `short_side / 2^r` (rounded up, as the decoder
/// does) at or above `min_side`.
fn levels_to_drop(short_side: u32, min_side: u32, levels: u32) -> u32 {
    let mut r = 0;
    while r < levels && short_side.div_ceil(1 << (r + 1)) >= min_side.max(1) {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_the_shorter_side_at_or_above_the_need() {
        assert_eq!(levels_to_drop(2000, 224, 5), 3); // 250 px
        assert_eq!(levels_to_drop(2000, 250, 5), 3);
        assert_eq!(levels_to_drop(2000, 251, 5), 2); // 500 px
        assert_eq!(levels_to_drop(2000, 224, 2), 2); // the codestream has two levels only
        assert_eq!(levels_to_drop(200, 224, 5), 0); // already smaller than the need
        assert_eq!(levels_to_drop(449, 224, 5), 1); // 225 px
        assert_eq!(levels_to_drop(4000, 0, 5), 5);
    }

    fn codestream(segments: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0xFF, 0x4F];
        for (marker, body) in segments {
            out.extend_from_slice(&marker.to_be_bytes());
            out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(body);
        }
        out.extend_from_slice(&[0xFF, 0x90, 0, 10]);
        out
    }

    fn siz(components: u16) -> Vec<u8> {
        let mut body = vec![0u8; 36];
        body[34..36].copy_from_slice(&components.to_be_bytes());
        body.extend(std::iter::repeat_n([7u8, 1, 1], usize::from(components)).flatten());
        body
    }

    #[test]
    fn levels_come_from_cod_and_the_smallest_coc() {
        let cod = vec![0, 0, 0, 1, 0, 5, 4, 4, 0, 0];
        assert_eq!(
            decomposition_levels(&codestream(&[(0xFF51, siz(1)), (0xFF52, cod.clone())])),
            Some(5)
        );
        let coc = vec![0, 0, 3, 4, 4, 0, 0];
        assert_eq!(
            decomposition_levels(&codestream(&[
                (0xFF51, siz(1)),
                (0xFF52, cod),
                (0xFF53, coc)
            ])),
            Some(3)
        );
        assert_eq!(decomposition_levels(&codestream(&[(0xFF51, siz(1))])), None);
        assert_eq!(decomposition_levels(&[0xFF, 0x4F, 0xFF]), None);
        assert_eq!(decomposition_levels(b"not a codestream"), None);
    }
}
