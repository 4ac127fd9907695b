//! Value-of-interest (VOI) windowing: the step that turns modality values (Hounsfield units,
//! detector counts, 8-bit photo values) into display grey levels in `[0, 1]`.
//!
//! Shared by the DICOM decoder ([`super::dicom`]) and the PNG/JPEG decoder ([`super::raster`]).
//! All functions map to `[0, 1]` directly instead of to an output bit depth, because every
//! decoder in this crate produces `f32` grey levels in `[0, 1]` ([`super::GreyImage`]).
//!
//! What is here, in the order a grey image goes through it:
//! 1. a window chosen by the file ([`VoiWindow`], PS3.3 C.11.2.1.2 and C.11.2.1.3) or a lookup
//!    table ([`LookupTable`], PS3.3 C.11.1.1 and C.11.2.1.1), or, when the file gives neither,
//!    the robust [`percentile_window`] applied with [`apply_linear_window`];
//! 2. [`invert`] for MONOCHROME1 images (PS3.3 C.7.6.3.1.2: minimum value is white).

/// Lower percentile of the fallback window: ignores the darkest 0.5% (collimator edges, dead
/// pixels) so that a few outliers cannot compress the whole image into a narrow grey band.
pub const FALLBACK_LOW_PERCENTILE: f64 = 0.5;
/// Upper percentile of the fallback window: ignores the brightest 0.5% (burnt-in markers, lead
/// letters, implants) for the same reason.
pub const FALLBACK_HIGH_PERCENTILE: f64 = 99.5;

/// The robust fallback window: the 0.5th and 99.5th percentiles of `values`.
///
/// Used when a file says nothing about how to display it. Percentiles are computed like
/// numpy's default (`method="linear"`): rank `p/100 * (n-1)`, linearly interpolated between
/// the two neighbouring order statistics, so the reference fixtures made with numpy agree.
/// Non-finite values are ignored; with no finite value the window is `(0, 0)`.
pub fn percentile_window(values: &[f32]) -> (f32, f32) {
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 0.0);
    }
    let lo = percentile_in_place(&mut finite, FALLBACK_LOW_PERCENTILE);
    let hi = percentile_in_place(&mut finite, FALLBACK_HIGH_PERCENTILE);
    (lo, hi)
}

/// [`percentile_window`] of the values in which `values[i]` occurs `counts[i]` times, without
/// expanding them: for integer images, whose pixels take one of at most 65,536 values.
/// The same order statistics and interpolation, so the same window, bit for bit.
pub fn percentile_window_of_counts(values: &[f32], counts: &[u32]) -> (f32, f32) {
    let mut present: Vec<(f32, u64)> = values
        .iter()
        .zip(counts)
        .filter(|(v, c)| v.is_finite() && **c > 0)
        .map(|(v, c)| (*v, u64::from(*c)))
        .collect();
    let n: u64 = present.iter().map(|(_, c)| c).sum();
    if n == 0 {
        return (0.0, 0.0);
    }
    present.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    // The k-th smallest (from 0) of the expanded values.
    let order_statistic = |k: u64| -> f32 {
        let mut seen = 0;
        for &(v, c) in &present {
            seen += c;
            if k < seen {
                return v;
            }
        }
        present[present.len() - 1].0
    };
    let percentile = |p: f64| -> f32 {
        let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
        let below = rank.floor() as u64;
        let frac = rank - below as f64;
        let a = f64::from(order_statistic(below));
        if frac == 0.0 || below + 1 >= n {
            return a as f32;
        }
        let b = f64::from(order_statistic(below + 1));
        (a + (b - a) * frac) as f32
    };
    (
        percentile(FALLBACK_LOW_PERCENTILE),
        percentile(FALLBACK_HIGH_PERCENTILE),
    )
}

/// The `p`th percentile (0..=100) of non-empty, finite `values`, reordering them.
///
/// Selection instead of a full sort: O(n) on average, which matters for 20-Mpx detectors.
fn percentile_in_place(values: &mut [f32], p: f64) -> f32 {
    let n = values.len();
    debug_assert!(n > 0);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let below = rank.floor() as usize;
    let frac = rank - below as f64;
    let (_, at, above) = values.select_nth_unstable_by(below, f32::total_cmp);
    let a = f64::from(*at);
    if frac == 0.0 || above.is_empty() {
        return a as f32;
    }
    // Everything after the selected element is >= it, so its minimum is the next order statistic.
    let b = above.iter().copied().fold(f32::INFINITY, f32::min);
    (a + (f64::from(b) - a) * frac) as f32
}

/// Maps `[lo, hi]` linearly onto `[0, 1]`, clamping values outside it.
///
/// A degenerate window (`hi <= lo`, e.g. a constant image) becomes a threshold at `lo`
/// (values above it are 1, the rest 0) instead of dividing by zero. NaN becomes 0.
pub fn apply_linear_window(values: &mut [f32], lo: f32, hi: f32) {
    if hi > lo {
        let (lo, scale) = (f64::from(lo), 1.0 / (f64::from(hi) - f64::from(lo)));
        for v in values.iter_mut() {
            *v = finite_unit((f64::from(*v) - lo) * scale);
        }
    } else {
        for v in values.iter_mut() {
            *v = if *v > lo { 1.0 } else { 0.0 };
        }
    }
}

/// MONOCHROME1 stores white as the minimum (PS3.3 C.7.6.3.1.2); every image this crate produces
/// has 0 = black, so MONOCHROME1 grey levels are flipped *after* the VOI step: `v -> 1 - v`.
pub fn invert(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = 1.0 - *v;
    }
}

/// VOI LUT Function (0028,1056): the shape of the window curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiFunction {
    /// PS3.3 C.11.2.1.2.1, the default: the historical "width - 1" linear ramp.
    #[default]
    Linear,
    /// PS3.3 C.11.2.1.3.2: a ramp exactly `width` wide.
    LinearExact,
    /// PS3.3 C.11.2.1.3.1: a logistic curve; `center` maps to 0.5 and nothing is clipped.
    Sigmoid,
}

impl VoiFunction {
    /// Parses a VOI LUT Function value (case-insensitive, padding ignored); `None` for values
    /// the standard does not define.
    pub fn parse(value: &str) -> Option<Self> {
        match value
            .trim_matches([' ', '\0'])
            .to_ascii_uppercase()
            .as_str()
        {
            "LINEAR" | "" => Some(Self::Linear),
            "LINEAR_EXACT" => Some(Self::LinearExact),
            "SIGMOID" => Some(Self::Sigmoid),
            _ => None,
        }
    }
}

/// A window from Window Center (0028,1050) / Window Width (0028,1051) and its VOI LUT Function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiWindow {
    center: f64,
    width: f64,
    function: VoiFunction,
}

impl VoiWindow {
    /// Validates a window: `None` when the values cannot describe a window (non-finite, or a
    /// width below what PS3.3 C.11.2.1.2 allows: >= 1 for LINEAR, > 0 for the others). The
    /// caller then falls back to the percentile window rather than showing a blank image.
    pub fn new(center: f64, width: f64, function: VoiFunction) -> Option<Self> {
        let valid_width = match function {
            VoiFunction::Linear => width >= 1.0,
            VoiFunction::LinearExact | VoiFunction::Sigmoid => width > 0.0,
        };
        (center.is_finite() && width.is_finite() && valid_width).then_some(Self {
            center,
            width,
            function,
        })
    }

    pub fn center(&self) -> f64 {
        self.center
    }

    pub fn width(&self) -> f64 {
        self.width
    }

    pub fn function(&self) -> VoiFunction {
        self.function
    }

    /// The grey level in `[0, 1]` for modality value `x` (the standard's formulas with
    /// `y_min = 0`, `y_max = 1`).
    pub fn map(&self, x: f64) -> f64 {
        let (c, w) = (self.center, self.width);
        match self.function {
            VoiFunction::Linear => {
                // C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> ymin; x > c - 0.5 + (w-1)/2 -> ymax;
                // else ((x - (c - 0.5)) / (w-1) + 0.5) * (ymax - ymin) + ymin.
                let half = (w - 1.0) / 2.0;
                if x <= c - 0.5 - half {
                    0.0
                } else if x > c - 0.5 + half {
                    1.0
                } else {
                    (x - (c - 0.5)) / (w - 1.0) + 0.5
                }
            }
            VoiFunction::LinearExact => {
                // C.11.2.1.3.2: x <= c - w/2 -> ymin; x > c + w/2 -> ymax; else (x - c)/w + 0.5.
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            // C.11.2.1.3.1: y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin.
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        }
    }

    /// Applies the window to every value in place. NaN becomes 0.
    ///
    /// The linear functions run as one multiply-add and two selects per value, without the
    /// division and branches of [`Self::map`], so that the loop vectorises: it touches every
    /// pixel of a full-resolution radiograph.
    pub fn apply(&self, values: &mut [f32]) {
        let (c, w) = (self.center, self.width);
        let (origin, scale, lo, hi) = match self.function {
            VoiFunction::Linear => {
                let half = (w - 1.0) / 2.0;
                (c - 0.5, 1.0 / (w - 1.0), c - 0.5 - half, c - 0.5 + half)
            }
            VoiFunction::LinearExact => (c, 1.0 / w, c - w / 2.0, c + w / 2.0),
            VoiFunction::Sigmoid => {
                for v in values.iter_mut() {
                    *v = finite_unit(self.map(f64::from(*v)));
                }
                return;
            }
        };
        for v in values.iter_mut() {
            let x = f64::from(*v);
            let y = (x - origin) * scale + 0.5;
            let y = if x <= lo {
                0.0
            } else if x > hi {
                1.0
            } else {
                y
            };
            *v = finite_unit(y);
        }
    }
}

/// `y` in `[0, 1]` as `f32`; NaN, which `clamp` keeps, becomes 0: it must not reach the model.
#[inline]
fn finite_unit(y: f64) -> f32 {
    if y.is_nan() {
        0.0
    } else {
        y.clamp(0.0, 1.0) as f32
    }
}

/// A Modality LUT or VOI LUT from a LUT Descriptor (0028,3002) and LUT Data (0028,3006)
/// (PS3.3 C.11.1.1 and C.11.2.1.1): input values below the first mapped value take the first
/// entry, values past the last entry take the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupTable {
    first_mapped: i64,
    entries: Vec<u16>,
    bits: u32,
}

impl LookupTable {
    /// `first_mapped` is the input value of `entries[0]`; `bits` the descriptor's bits per entry.
    /// `None` when there are no entries or `bits` is outside 1..=16.
    pub fn new(first_mapped: i64, entries: Vec<u16>, bits: u32) -> Option<Self> {
        (!entries.is_empty() && (1..=16).contains(&bits)).then_some(Self {
            first_mapped,
            entries,
            bits,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for input `x` (rounded to the nearest integer input first).
    pub fn lookup(&self, x: f32) -> u16 {
        let last = self.entries.len() - 1;
        let offset = if x.is_nan() {
            0
        } else {
            // Saturating float-to-int casts keep absurd inputs in range.
            (x.round() as i64).saturating_sub(self.first_mapped)
        };
        self.entries[offset.clamp(0, last as i64) as usize]
    }

    /// Replaces each value by its entry: the Modality LUT step, whose output feeds the VOI step.
    pub fn apply(&self, values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = f32::from(self.lookup(*v));
        }
    }

    /// The largest output a VOI LUT can mean, used to scale it to `[0, 1]`: `2^b - 1`, where `b`
    /// is the number of bits the largest entry needs (the descriptor's bits per entry when all
    /// entries are 0). Not the descriptor's value itself: some writers declare 16 bits for
    /// 12-bit tables (the ambiguity noted in PS3.3 C.11.2.1.1), which taken literally shows
    /// those images almost black, and an entry larger than the declared range must not
    /// overflow. dicom-pixeldata resolves the ambiguity the same way.
    pub fn output_max(&self) -> f64 {
        let max = self.entries.iter().copied().max().unwrap_or(0);
        let used_bits = u16::BITS - max.leading_zeros();
        let bits = if used_bits == 0 { self.bits } else { used_bits };
        f64::from((1u32 << bits) - 1)
    }

    /// Applies the table as a VOI LUT: each value becomes its entry scaled to `[0, 1]`.
    pub fn apply_voi(&self, values: &mut [f32]) {
        let scale = 1.0 / self.output_max();
        for v in values.iter_mut() {
            *v = (f64::from(self.lookup(*v)) * scale).min(1.0) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_window_matches_numpy_linear_interpolation() {
        // numpy: np.percentile(np.arange(1001), [0.5, 99.5]) == [5.0, 995.0]
        let values: Vec<f32> = (0..=1000).rev().map(|v| v as f32).collect();
        assert_eq!(percentile_window(&values), (5.0, 995.0));
        // numpy: np.percentile(np.arange(10), [0.5, 99.5]) == [0.045, 8.955]
        let values: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let (lo, hi) = percentile_window(&values);
        assert!((lo - 0.045).abs() < 1e-6, "{lo}");
        assert!((hi - 8.955).abs() < 1e-5, "{hi}");
    }

    #[test]
    fn percentile_window_of_counts_is_the_window_of_the_expanded_values() {
        let mut x = 0x2545_f491u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for (codes, pixels) in [(1, 1), (2, 5), (16, 3), (4096, 10_000), (300, 200_001)] {
            let mut values: Vec<f32> = (0..codes)
                .map(|_| (next() % 2000) as f32 * 0.37 - 50.0)
                .collect();
            if codes > 2 {
                values[1] = f32::NAN;
                values[2] = f32::INFINITY;
            }
            let mut counts = vec![0u32; codes];
            let mut expanded = Vec::new();
            for _ in 0..pixels {
                let code = next() as usize % codes;
                counts[code] += 1;
                expanded.push(values[code]);
            }
            let (a, b) = (
                percentile_window_of_counts(&values, &counts),
                percentile_window(&expanded),
            );
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "{codes} codes"
            );
        }
        assert_eq!(percentile_window_of_counts(&[f32::NAN], &[3]), (0.0, 0.0));
        assert_eq!(
            percentile_window_of_counts(&[1.0, 2.0], &[0, 0]),
            (0.0, 0.0)
        );
    }

    #[test]
    fn percentile_window_ignores_outliers_and_non_finite_values() {
        let mut values = vec![100.0f32; 1000];
        values[0] = -1.0e6;
        values[1] = 1.0e6;
        values[2] = f32::NAN;
        values[3] = f32::INFINITY;
        assert_eq!(percentile_window(&values), (100.0, 100.0));
        assert_eq!(percentile_window(&[]), (0.0, 0.0));
        assert_eq!(percentile_window(&[7.0]), (7.0, 7.0));
    }

    #[test]
    fn linear_window_clamps_and_handles_degenerate_windows() {
        let mut v = [0.0, 10.0, 15.0, 20.0, 30.0, f32::NAN];
        apply_linear_window(&mut v, 10.0, 20.0);
        assert_eq!(v, [0.0, 0.0, 0.5, 1.0, 1.0, 0.0]);
        let mut v = [4.0, 5.0, 6.0];
        apply_linear_window(&mut v, 5.0, 5.0);
        assert_eq!(v, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn monochrome1_inversion_flips_grey_levels() {
        let mut v = [0.0, 0.25, 1.0];
        invert(&mut v);
        assert_eq!(v, [1.0, 0.75, 0.0]);
    }

    #[test]
    fn linear_window_follows_c_11_2_1_2_1() {
        // Window 2048/4096: x <= 0 -> 0, x > 4095 -> 1, between ((x - 2047.5) / 4095 + 0.5).
        let w = VoiWindow::new(2048.0, 4096.0, VoiFunction::Linear).unwrap();
        assert_eq!(w.map(0.0), 0.0);
        assert_eq!(w.map(-5.0), 0.0);
        assert_eq!(w.map(4095.5), 1.0);
        assert!((w.map(1024.0) - ((1024.0 - 2047.5) / 4095.0 + 0.5)).abs() < 1e-12);
        // Width 1 is a threshold at center - 0.5.
        let t = VoiWindow::new(100.0, 1.0, VoiFunction::Linear).unwrap();
        assert_eq!((t.map(99.0), t.map(99.5), t.map(100.0)), (0.0, 0.0, 1.0));
    }

    #[test]
    fn linear_exact_and_sigmoid_windows() {
        let w = VoiWindow::new(100.0, 50.0, VoiFunction::LinearExact).unwrap();
        assert_eq!((w.map(75.0), w.map(100.0), w.map(125.0)), (0.0, 0.5, 1.0));
        let s = VoiWindow::new(100.0, 50.0, VoiFunction::Sigmoid).unwrap();
        assert_eq!(s.map(100.0), 0.5);
        assert!((s.map(150.0) - 1.0 / (1.0 + (-4.0f64).exp())).abs() < 1e-12);
        assert!(s.map(-1e9) >= 0.0 && s.map(1e9) <= 1.0);
    }

    #[test]
    fn invalid_windows_are_rejected() {
        assert!(VoiWindow::new(0.0, 0.5, VoiFunction::Linear).is_none());
        assert!(VoiWindow::new(0.0, 0.5, VoiFunction::LinearExact).is_some());
        assert!(VoiWindow::new(0.0, 0.0, VoiFunction::Sigmoid).is_none());
        assert!(VoiWindow::new(f64::NAN, 10.0, VoiFunction::Linear).is_none());
        assert_eq!(VoiFunction::parse("sigmoid "), Some(VoiFunction::Sigmoid));
        assert_eq!(VoiFunction::parse("GAMMA"), None);
    }

    #[test]
    fn lookup_table_clamps_to_first_and_last_entries() {
        let lut = LookupTable::new(10, vec![100, 200, 300], 16).unwrap();
        let mut v = [0.0, 10.0, 11.4, 12.0, 1.0e9, f32::NAN];
        lut.apply(&mut v);
        assert_eq!(v, [100.0, 100.0, 200.0, 300.0, 300.0, 100.0]);
        assert!(LookupTable::new(0, vec![], 16).is_none());
        assert!(LookupTable::new(0, vec![1], 0).is_none());
    }

    #[test]
    fn voi_lookup_table_scales_by_the_bits_its_entries_use() {
        // Declared 16 bits, 12-bit content: scaled by 4095, not 65535.
        let lut = LookupTable::new(0, vec![0, 2048, 4095], 16).unwrap();
        assert_eq!(lut.output_max(), 4095.0);
        let mut v = [0.0, 1.0, 2.0];
        lut.apply_voi(&mut v);
        assert_eq!(v, [0.0, 2048.0 / 4095.0, 1.0]);
        // Declared 8 bits with 16-bit content: widened instead of overflowing.
        let wide = LookupTable::new(0, vec![0, 60000], 8).unwrap();
        assert_eq!(wide.output_max(), 65535.0);
    }
}
