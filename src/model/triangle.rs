//! The triangle-filter resize of project models' preprocessing, on one grey `f32` plane.
//!
//! It computes what `image::imageops::resize(.., FilterType::Triangle)` computes for a
//! `Luma<f32>` image, bit for bit: the same taps and normalised weights, the vertical pass first,
//! the same summation order, the output clamped to `[0, 1]`. The models in `models/` were
//! trained on that function's output, so it is the definition; this is a faster evaluation of it.
//! The `image` crate widens every pixel to four channels and walks the full-resolution image
//! column by column in its vertical pass; here the vertical pass adds whole rows (contiguous,
//! vectorised) and the horizontal pass runs on the already short image. On a 2,000 px radiograph
//! resized to 224 px that is most of the preprocessing time.

/// Where one output sample reads its input: `weights.len()` samples from `start`.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// The taps of every output sample of a `src -> dst` resize along one axis: a triangle of
/// support 1, widened by the scale factor when shrinking, centred on the output sample's centre
/// mapped into the input, clipped to the input, its weights normalised to sum 1. Each step and
/// its `f32` rounding follow `image`'s `vertical_sample` and `horizontal_sample`.
fn taps(src: usize, dst: usize) -> Vec<Taps> {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio;
    (0..dst)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, src as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, src as i64);
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| triangle((i as f32 - centre) / sratio))
                .collect();
            let sum: f32 = weights.iter().fold(0.0, |s, w| s + w);
            for w in &mut weights {
                *w /= sum;
            }
            Taps {
                start: left as usize,
                weights,
            }
        })
        .collect()
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 {
        1.0 - x.abs()
    } else {
        0.0
    }
}

/// Resizes a `width x height` row-major plane to `new_width x new_height`. An empty input gives
/// zeros, an input of the requested size a copy, as `image` does.
pub(crate) fn resize(
    pixels: &[f32],
    width: usize,
    height: usize,
    new_width: usize,
    new_height: usize,
) -> Vec<f32> {
    debug_assert_eq!(pixels.len(), width * height);
    if width == 0 || height == 0 {
        return vec![0.0; new_width * new_height];
    }
    if (width, height) == (new_width, new_height) {
        return pixels.to_vec();
    }
    // Vertical pass: each output row is a weighted sum of whole input rows, unclamped.
    let mut tall = vec![0.0f32; width * new_height];
    for (row, t) in tall.chunks_exact_mut(width).zip(taps(height, new_height)) {
        for (k, &w) in t.weights.iter().enumerate() {
            let src = &pixels[(t.start + k) * width..][..width];
            for (acc, &v) in row.iter_mut().zip(src) {
                *acc += v * w;
            }
        }
    }
    // Horizontal pass on the `width x new_height` intermediate, clamped as `image` clamps a
    // float pixel (NaN passes through, as there).
    let columns = taps(width, new_width);
    let mut out = Vec::with_capacity(new_width * new_height);
    for row in tall.chunks_exact(width) {
        for t in &columns {
            let src = &row[t.start..t.start + t.weights.len()];
            let sum = src
                .iter()
                .zip(&t.weights)
                .fold(0.0f32, |acc, (&v, &w)| acc + v * w);
            out.push(sum.clamp(0.0, 1.0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops, ImageBuffer, Luma};

    fn reference(pixels: &[f32], w: usize, h: usize, nw: usize, nh: usize) -> Vec<f32> {
        let buf = ImageBuffer::<Luma<f32>, &[f32]>::from_raw(w as u32, h as u32, pixels).unwrap();
        imageops::resize(&buf, nw as u32, nh as u32, imageops::FilterType::Triangle).into_raw()
    }

    /// Deterministic values in `[-0.2, 1.2]`, so that the clamp is exercised too.
    fn plane(w: usize, h: usize, seed: u32) -> Vec<f32> {
        let mut x = seed | 1;
        (0..w * h)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 1401) as f32 / 1000.0 - 0.2
            })
            .collect()
    }

    #[test]
    fn equals_the_image_crates_triangle_resize_bit_for_bit() {
        let cases = [
            (2000, 1800, 224, 224), // the usual: a radiograph shrunk ~9x
            (1841, 1955, 64, 64),   // odd sizes, a large factor
            (300, 200, 224, 224),   // shrink one side, enlarge the other
            (50, 70, 224, 224),     // enlarge both
            (224, 300, 224, 224),   // one side unchanged
            (1, 1, 4, 4),
            (7, 1, 3, 5),
            (225, 225, 224, 224),
        ];
        for (i, &(w, h, nw, nh)) in cases.iter().enumerate() {
            let pixels = plane(w, h, i as u32 + 7);
            let ours = resize(&pixels, w, h, nw, nh);
            let theirs = reference(&pixels, w, h, nw, nh);
            assert_eq!(ours.len(), nw * nh);
            let first_difference = ours
                .iter()
                .zip(&theirs)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(first_difference, None, "{w}x{h} -> {nw}x{nh}");
        }
    }

    #[test]
    fn empty_and_same_size_inputs() {
        assert_eq!(resize(&[], 0, 5, 2, 2), vec![0.0; 4]);
        let pixels = plane(6, 4, 3);
        assert_eq!(resize(&pixels, 6, 4, 6, 4), pixels);
    }
}
