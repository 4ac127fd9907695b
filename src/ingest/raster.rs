//! PNG and JPEG decoding (8 or 16 bit, grey or colour) into a [`GreyImage`].
//!
//! Public CXR sets ship as PNG/JPEG already windowed for display (NIH, COVID-19 collection,
//! MIMIC-CXR-JPG), so 8-bit files are taken as they are. 16-bit files usually hold raw detector
//! values; they get the same robust percentile window as a DICOM without VOI attributes.

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::window::{apply_linear_window, percentile_window};
use super::{DecodeOptions, GreyImage, IngestError};

/// Decodes a PNG or JPEG file, refusing images above `opts.max_pixels` before decoding them.
pub fn decode(path: &Path, opts: &DecodeOptions) -> Result<GreyImage, IngestError> {
    let file = std::fs::File::open(path).map_err(|source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_reader(path, BufReader::new(file), opts)
}

/// [`decode`] for a PNG or JPEG file already in memory; `name` only names it in errors.
pub fn decode_bytes(
    name: &Path,
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<GreyImage, IngestError> {
    decode_reader(name, Cursor::new(bytes), opts)
}

/// Checks what the decoders would panic on, then decodes under `catch_unwind`: the `png` and
/// `jpeg` decoders have panicked on malformed input (a palette whose length is not a whole
/// number of RGB entries, found by the raster_ingest fuzz target), and one bad file must not
/// end a batch.
fn decode_reader<R: BufRead + Seek>(
    path: &Path,
    mut source: R,
    opts: &DecodeOptions,
) -> Result<GreyImage, IngestError> {
    let image_err = |reason: String| IngestError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(reason) = check_png_chunks(&mut source).map_err(io)? {
        return Err(image_err(reason));
    }
    match catch_unwind(AssertUnwindSafe(|| decode_checked(path, source, opts))) {
        Ok(result) => result,
        Err(panic) => Err(image_err(format!(
            "decoder panicked: {}",
            super::panic_message(panic.as_ref())
        ))),
    }
}

/// The chunks of a PNG before its image data: a PLTE chunk must hold 1 to 256 RGB entries
/// (PNG 11.2.3); png 0.18 panics on one that does not. Returns why the file is refused, if it
/// is; anything else (not a PNG, a truncated chunk) is left to the decoder. Leaves `source`
/// where it was.
fn check_png_chunks<R: Read + Seek>(source: &mut R) -> std::io::Result<Option<String>> {
    let start = source.stream_position()?;
    let mut verdict = None;
    let mut signature = [0u8; 8];
    if source.read_exact(&mut signature).is_ok() && &signature == b"\x89PNG\r\n\x1a\n" {
        let mut header = [0u8; 8];
        while source.read_exact(&mut header).is_ok() {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            match &header[4..8] {
                b"PLTE" if len == 0 || len % 3 != 0 || len > 768 => {
                    verdict = Some(format!(
                        "PNG palette (PLTE) of {len} bytes is not 1 to 256 RGB entries"
                    ));
                    break;
                }
                b"IDAT" | b"IEND" => break,
                // Data and CRC.
                _ => {
                    source.seek(SeekFrom::Current(i64::from(len) + 4))?;
                }
            }
        }
    }
    source.seek(SeekFrom::Start(start))?;
    Ok(verdict)
}

fn decode_checked<R: BufRead + Seek>(
    path: &Path,
    source: R,
    opts: &DecodeOptions,
) -> Result<GreyImage, IngestError> {
    let image_err = |reason: String| IngestError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::new(source)
        .with_guessed_format()
        .map_err(|e| image_err(e.to_string()))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_err(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > opts.max_pixels {
        return Err(IngestError::TooLarge {
            path: path.to_path_buf(),
            width: width.into(),
            height: height.into(),
            limit: opts.max_pixels,
        });
    }
    // Also bound the decoder's own allocations (a PNG can declare small dimensions and still
    // inflate chunk data without end).
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(pixels.saturating_mul(8).max(1 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| image_err(e.to_string()))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| image_err(e.to_string()))?;
    Ok(to_grey(image))
}

/// Converts any decoded image to one grey `f32` channel in `[0, 1]`.
pub fn to_grey(image: DynamicImage) -> GreyImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let sixteen_bit = matches!(
        image,
        DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgba16(_)
    );
    if sixteen_bit {
        let luma = image.into_luma16();
        let mut pixels: Vec<f32> = luma.into_raw().into_iter().map(f32::from).collect();
        let (lo, hi) = percentile_window(&pixels);
        apply_linear_window(&mut pixels, lo, hi);
        GreyImage {
            width,
            height,
            pixels,
        }
    } else {
        let luma = image.into_luma8();
        let pixels = luma
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect();
        GreyImage {
            width,
            height,
            pixels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_grey_and_rgb_png_and_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let grey = image::GrayImage::from_fn(8, 4, |x, _| image::Luma([(x * 32) as u8]));
        grey.save(dir.path().join("g.png")).unwrap();
        let rgb = image::RgbImage::from_pixel(8, 4, image::Rgb([255, 255, 255]));
        rgb.save(dir.path().join("c.jpg")).unwrap();

        let g = decode(&dir.path().join("g.png"), &DecodeOptions::default()).unwrap();
        assert_eq!((g.width, g.height), (8, 4));
        assert!((g.pixels[1] - 32.0 / 255.0).abs() < 1e-6);
        let c = decode(&dir.path().join("c.jpg"), &DecodeOptions::default()).unwrap();
        assert!(c.pixels.iter().all(|&v| v > 0.95));
    }

    #[test]
    fn sixteen_bit_png_is_windowed() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(100, 10, |x, _| {
            image::Luma([1000 + x as u16 * 30])
        });
        img.save(dir.path().join("w.png")).unwrap();
        let g = decode(&dir.path().join("w.png"), &DecodeOptions::default()).unwrap();
        let (min, max) = g
            .pixels
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(
            min <= 0.01 && max >= 0.99,
            "window spans the range: {min} {max}"
        );
    }

    #[test]
    fn refuses_images_over_the_pixel_limit() {
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::new(100, 100)
            .save(dir.path().join("big.png"))
            .unwrap();
        let opts = DecodeOptions {
            max_pixels: 100 * 99,
            ..DecodeOptions::default()
        };
        let err = decode(&dir.path().join("big.png"), &opts).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("big.png"));
    }

    #[test]
    fn truncated_png_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.png");
        image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x ^ y) as u8]))
            .save(&path)
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = decode(&path, &DecodeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("cut.png"), "{err}");
    }
}
