//! From a decoded [`GreyImage`] to the tower's input: resize, channel layout, normalisation.

use super::config::{CropRounding, PreprocessConfig, Resample, ResizeMode};
use super::pil::{self, PilFilter};
use super::triangle;
use crate::ingest::GreyImage;

/// Returns the `(channels, size, size)` input of one image, flattened channel-major.
///
/// With [`Resample::Triangle`], resampling is a triangle (bilinear) filter whose support widens
/// with the scale factor, so a 2,000 px radiograph is averaged, not point-sampled, down to
/// 224 px. With the Pillow filters the image is first quantised to 8 bits, as the reference
/// pipelines of public checkpoints see it, and resized exactly as Pillow does.
pub fn to_model_input(image: &GreyImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let size = cfg.image_size;
    let plane = match cfg.resample {
        Resample::Triangle => fit_square(image, size, cfg.resize),
        Resample::PilBicubic => fit_square_pil(image, cfg, PilFilter::Bicubic),
        Resample::PilBilinear => fit_square_pil(image, cfg, PilFilter::Bilinear),
    };
    let mut out = Vec::with_capacity(cfg.channels * size * size);
    for c in 0..cfg.channels {
        let mean = cfg.mean.get(c).or(cfg.mean.first()).copied().unwrap_or(0.0);
        let std = cfg.std.get(c).or(cfg.std.first()).copied().unwrap_or(1.0);
        let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
        out.extend(plane.iter().map(|&v| (v - mean) * inv));
    }
    out
}

/// Pillow-exact path: 8-bit quantisation, resize with integer output sizes computed as the
/// Hugging Face processors and torchvision do (`int(size * long / short)`), crop or pad, then
/// back to `[0, 1]`.
fn fit_square_pil(image: &GreyImage, cfg: &PreprocessConfig, filter: PilFilter) -> Vec<f32> {
    let side = cfg.image_size;
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 || image.pixels.len() != w * h {
        return vec![0.0; side * side];
    }
    let bytes: Vec<u8> = image
        .pixels
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let to_unit = |v: &u8| f32::from(*v) / 255.0;
    match cfg.resize {
        ResizeMode::Squash => pil::resize(&bytes, w, h, side, side, filter)
            .iter()
            .map(to_unit)
            .collect(),
        ResizeMode::ShortestSideCentreCrop => {
            let target = cfg.resize_to.unwrap_or(side).max(side);
            let (short, long) = (w.min(h), w.max(h));
            let other = ((target * long) as f64 / short as f64) as usize;
            let (nw, nh) = if w <= h {
                (target, other)
            } else {
                (other, target)
            };
            let resized = pil::resize(&bytes, w, h, nw, nh, filter);
            let offset = |excess: usize| match cfg.crop_rounding {
                CropRounding::Floor => excess / 2,
                CropRounding::HalfEven => {
                    let half = excess / 2;
                    // excess / 2 has a fractional .5 when excess is odd: round to even.
                    if excess % 2 == 1 && half % 2 == 1 {
                        half + 1
                    } else {
                        half
                    }
                }
            };
            let (x0, y0) = (offset(nw - side), offset(nh - side));
            let mut out = Vec::with_capacity(side * side);
            for y in y0..y0 + side {
                out.extend(resized[y * nw + x0..y * nw + x0 + side].iter().map(to_unit));
            }
            out
        }
        ResizeMode::LongestSidePad => {
            let (long, short) = (w.max(h), w.min(h));
            let other = (((side * short) as f64 / long as f64) as usize).clamp(1, side);
            let (nw, nh) = if w >= h { (side, other) } else { (other, side) };
            let resized = pil::resize(&bytes, w, h, nw, nh, filter);
            let (x0, y0) = ((side - nw) / 2, (side - nh) / 2);
            let mut out = vec![0.0; side * side];
            for y in 0..nh {
                for x in 0..nw {
                    out[(y + y0) * side + x + x0] = to_unit(&resized[y * nw + x]);
                }
            }
            out
        }
    }
}

fn fit_square(image: &GreyImage, size: usize, mode: ResizeMode) -> Vec<f32> {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 || image.pixels.len() != w * h {
        // Pixel count and dimensions disagree: only a bug upstream can cause it; give black.
        return vec![0.0; size * size];
    }
    let resize = |nw: usize, nh: usize| triangle::resize(&image.pixels, w, h, nw, nh);
    match mode {
        ResizeMode::Squash => resize(size, size),
        ResizeMode::ShortestSideCentreCrop => {
            let scale = size as f32 / w.min(h) as f32;
            let (nw, nh) = (
                ((w as f32 * scale).round() as usize).max(size),
                ((h as f32 * scale).round() as usize).max(size),
            );
            let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
            let resized = resize(nw, nh);
            resized
                .chunks_exact(nw)
                .skip(y0)
                .take(size)
                .flat_map(|row| &row[x0..x0 + size])
                .copied()
                .collect()
        }
        ResizeMode::LongestSidePad => {
            let scale = size as f32 / w.max(h) as f32;
            let (nw, nh) = (
                ((w as f32 * scale).round() as usize).clamp(1, size),
                ((h as f32 * scale).round() as usize).clamp(1, size),
            );
            let resized = resize(nw, nh);
            let (x0, y0) = ((size - nw) / 2, (size - nh) / 2);
            let mut canvas = vec![0.0f32; size * size];
            for (row, src) in canvas
                .chunks_exact_mut(size)
                .skip(y0)
                .zip(resized.chunks_exact(nw))
            {
                row[x0..x0 + nw].copy_from_slice(src);
            }
            canvas
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: ResizeMode) -> PreprocessConfig {
        PreprocessConfig {
            image_size: 4,
            channels: 3,
            mean: vec![0.5],
            std: vec![0.25],
            resize: mode,
            resample: Resample::Triangle,
            resize_to: None,
            crop_rounding: CropRounding::Floor,
        }
    }

    #[test]
    fn project_configs_keep_their_json() {
        // Fields added for public checkpoints are not written when they hold their defaults, so
        // `cxr model init` writes the same config.json (and fingerprint) as before them.
        let json = serde_json::to_string(&cfg(ResizeMode::Squash)).unwrap();
        assert!(
            !json.contains("resample") && !json.contains("crop"),
            "{json}"
        );
        let back: PreprocessConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg(ResizeMode::Squash));
    }

    #[test]
    fn pil_path_crops_with_the_requested_rounding() {
        // A 7x4 image needs no resize for a 4 px input; the crop margin is 3 columns, so the
        // offset is 1.5: Hugging Face rounds it down, torchvision half to even (2).
        let img = GreyImage {
            width: 7,
            height: 4,
            pixels: (0..28).map(|i| (i % 7) as f32 / 255.0).collect(),
        };
        let mut c = cfg(ResizeMode::ShortestSideCentreCrop);
        c.channels = 1;
        c.mean = vec![0.0];
        c.std = vec![1.0];
        c.resample = Resample::PilBicubic;
        let floor = to_model_input(&img, &c);
        c.crop_rounding = CropRounding::HalfEven;
        let even = to_model_input(&img, &c);
        assert!((floor[0] * 255.0 - 1.0).abs() < 1e-4, "{floor:?}");
        assert!((even[0] * 255.0 - 2.0).abs() < 1e-4, "{even:?}");
    }

    #[test]
    fn normalises_and_repeats_channels() {
        let img = GreyImage {
            width: 4,
            height: 4,
            pixels: vec![0.75; 16],
        };
        let x = to_model_input(&img, &cfg(ResizeMode::Squash));
        assert_eq!(x.len(), 48);
        assert!(x.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn pad_keeps_aspect_and_fills_black() {
        let img = GreyImage {
            width: 8,
            height: 4,
            pixels: vec![1.0; 32],
        };
        let mut c = cfg(ResizeMode::LongestSidePad);
        c.channels = 1;
        c.mean = vec![0.0];
        c.std = vec![1.0];
        let x = to_model_input(&img, &c);
        // 8x4 -> 4x2 centred in a 4x4 canvas: rows 1 and 2 are image, rows 0 and 3 black.
        assert_eq!(&x[0..4], &[0.0; 4]);
        assert!(x[4..12].iter().all(|&v| (v - 1.0).abs() < 1e-5));
        assert_eq!(&x[12..16], &[0.0; 4]);
    }

    #[test]
    fn downscaling_averages() {
        let pixels = (0..64 * 64)
            .map(|i| if (i / 64 + i % 64) % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        let img = GreyImage {
            width: 64,
            height: 64,
            pixels,
        };
        let mut c = cfg(ResizeMode::Squash);
        c.channels = 1;
        c.mean = vec![0.0];
        c.std = vec![1.0];
        let x = to_model_input(&img, &c);
        assert!(x.iter().all(|&v| (v - 0.5).abs() < 0.1), "{x:?}");
    }
}
