//! Pillow's 8-bit resampling, reproduced exactly.
//!
//! Public checkpoints were trained on images resized by Pillow (`Image.resize`, through the
//! Hugging Face image processors and torchvision), on 8-bit images, with fixed-point filter
//! coefficients. Embeddings match the reference only if the resize does too, to the last grey
//! level; a float resampler differs by up to one level per pixel, enough to move embeddings by
//! more than 1e-4. This follows the algorithm of Pillow's `libImaging/Resample.c`: separable,
//! horizontal pass first (rounded to 8 bits), then vertical, each output pixel a window of input
//! pixels weighted by the filter scaled to the reduction factor.

/// Pillow's resampling filters that the supported processors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BILINEAR` (triangle, support 1).
    Bilinear,
    /// `Image.BICUBIC` (Keys cubic with a = -0.5, support 2).
    Bicubic,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            PilFilter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            PilFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output position: the first input index, and the fixed-point weights.
struct Coefficients {
    windows: Vec<(usize, Vec<i32>)>,
}

fn coefficients(in_size: usize, out_size: usize, filter: PilFilter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let mut windows = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow rounds by adding 0.5 and truncating toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut weights: Vec<f64> = (0..count)
            .map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = weights.iter().sum();
        if total != 0.0 {
            for w in &mut weights {
                *w /= total;
            }
        }
        let one = f64::from(1u32 << PRECISION_BITS);
        let fixed = weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * one) as i32
                } else {
                    (0.5 + w * one) as i32
                }
            })
            .collect();
        windows.push((xmin, fixed));
    }
    Coefficients { windows }
}

fn clip8(acc: i64) -> u8 {
    if acc >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Resizes an 8-bit grey image (`width * height`, row-major) to `out_w * out_h` as Pillow's
/// `Image.resize((out_w, out_h), filter)` does.
pub fn resize(
    pixels: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: PilFilter,
) -> Vec<u8> {
    if (width, height) == (out_w, out_h) || width == 0 || height == 0 {
        return pixels.to_vec();
    }
    let horiz = coefficients(width, out_w, filter);
    let vert = coefficients(height, out_h, filter);
    let half = 1i64 << (PRECISION_BITS - 1);

    // Horizontal pass over only the rows the vertical pass reads.
    let (first_row, rows) = if out_h != height {
        let first = vert.windows.first().map_or(0, |w| w.0);
        let last = vert.windows.last().map_or(height, |w| w.0 + w.1.len());
        (first, last - first)
    } else {
        (0, height)
    };
    let temp: Vec<u8> = if out_w != width {
        let mut temp = Vec::with_capacity(out_w * rows);
        for y in first_row..first_row + rows {
            let row = &pixels[y * width..(y + 1) * width];
            for (xmin, k) in &horiz.windows {
                let acc = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                    acc + i64::from(row[xmin + i]) * i64::from(w)
                });
                temp.push(clip8(acc));
            }
        }
        temp
    } else {
        pixels[first_row * width..(first_row + rows) * width].to_vec()
    };
    if out_h == height {
        return temp;
    }
    let mut out = Vec::with_capacity(out_w * out_h);
    for (ymin, k) in &vert.windows {
        let y0 = ymin - first_row;
        for x in 0..out_w {
            let acc = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                acc + i64::from(temp[(y0 + i) * out_w + x]) * i64::from(w)
            });
            out.push(clip8(acc));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant() {
        let img = vec![77u8; 50 * 40];
        for filter in [PilFilter::Bilinear, PilFilter::Bicubic] {
            let out = resize(&img, 50, 40, 17, 23, filter);
            assert_eq!(out.len(), 17 * 23);
            assert!(out.iter().all(|&v| v == 77), "{filter:?}");
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img: Vec<u8> = (0..=255).collect();
        assert_eq!(resize(&img, 16, 16, 16, 16, PilFilter::Bicubic), img);
    }
}
