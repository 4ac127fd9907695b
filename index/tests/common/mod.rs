//! What the index's integration tests share: a small seeded generator, so that they need no
//! `rand` and every run builds the same index.

// Each test binary uses a part of it.
#![allow(dead_code)]

/// splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `dim` components uniform in [-1, 1), not normalised.
    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next_f32()).collect()
    }

    /// A vector of `dim` components scaled to unit length.
    pub fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let v = self.vector(dim);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}
