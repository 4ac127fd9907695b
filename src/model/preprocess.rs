//! From a decoded [`GreyImage`] to the tower's input: resize, channel layout, normalisation.

use image::{imageops, ImageBuffer, Luma};

use super::config::{PreprocessConfig, ResizeMode};
use crate::ingest::GreyImage;

/// Returns the `(channels, size, size)` input of one image, flattened channel-major.
///
/// Resampling is a triangle (bilinear) filter whose support widens with the scale factor, so a
/// 2,000 px radiograph is averaged, not point-sampled, down to 224 px.
pub fn to_model_input(image: &GreyImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let size = cfg.image_size;
    let plane = fit_square(image, size, cfg.resize);
    let mut out = Vec::with_capacity(cfg.channels * size * size);
    for c in 0..cfg.channels {
        let mean = cfg.mean.get(c).or(cfg.mean.first()).copied().unwrap_or(0.0);
        let std = cfg.std.get(c).or(cfg.std.first()).copied().unwrap_or(1.0);
        let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
        out.extend(plane.iter().map(|&v| (v - mean) * inv));
    }
    out
}

fn fit_square(image: &GreyImage, size: usize, mode: ResizeMode) -> Vec<f32> {
    let (w, h) = (image.width as u32, image.height as u32);
    let side = size as u32;
    let Some(buf) = ImageBuffer::<Luma<f32>, &[f32]>::from_raw(w, h, &image.pixels[..]) else {
        // Pixel count and dimensions disagree: only a bug upstream can cause it; give black.
        return vec![0.0; size * size];
    };
    if w == 0 || h == 0 {
        return vec![0.0; size * size];
    }
    let filter = imageops::FilterType::Triangle;
    match mode {
        ResizeMode::Squash => {
            if (w, h) == (side, side) {
                image.pixels.clone()
            } else {
                imageops::resize(&buf, side, side, filter).into_raw()
            }
        }
        ResizeMode::ShortestSideCentreCrop => {
            let scale = side as f32 / w.min(h) as f32;
            let (nw, nh) = (
                ((w as f32 * scale).round() as u32).max(side),
                ((h as f32 * scale).round() as u32).max(side),
            );
            let resized = imageops::resize(&buf, nw, nh, filter);
            let (x0, y0) = ((nw - side) / 2, (nh - side) / 2);
            imageops::crop_imm(&resized, x0, y0, side, side)
                .to_image()
                .into_raw()
        }
        ResizeMode::LongestSidePad => {
            let scale = side as f32 / w.max(h) as f32;
            let (nw, nh) = (
                ((w as f32 * scale).round() as u32).clamp(1, side),
                ((h as f32 * scale).round() as u32).clamp(1, side),
            );
            let resized = imageops::resize(&buf, nw, nh, filter);
            let mut canvas = ImageBuffer::<Luma<f32>, Vec<f32>>::new(side, side);
            imageops::replace(
                &mut canvas,
                &resized,
                ((side - nw) / 2).into(),
                ((side - nh) / 2).into(),
            );
            canvas.into_raw()
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
        }
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
