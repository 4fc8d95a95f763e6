//! Lloyd-Max codebooks for the standard normal distribution.
//!
//! After the rotation, each coordinate of a block scaled by `sqrt(128)/||x||` is close to a
//! standard normal variable, so the scalar quantizer that minimises the mean squared error for
//! N(0, 1) is the right one. The constants are the format; [`lloyd_max_normal`] recomputes them
//! from first principles (tests check they agree to 1e-5).

/// Positive half of the 8-level (3-bit) codebook, ascending.
pub const NORMAL_8: [f32; 4] = [0.245094, 0.756005, 1.343909, 2.151946];

/// Positive half of the 16-level (4-bit) codebook, ascending.
pub const NORMAL_16: [f32; 8] = [
    0.128395, 0.388048, 0.656759, 0.942340, 1.256231, 1.618046, 2.069017, 2.73259,
];

/// Positive half of the 32-level (5-bit) codebook, ascending.
pub const NORMAL_32: [f32; 16] = [
    0.065890, 0.198052, 0.331378, 0.466700, 0.604934, 0.747136, 0.894565, 1.048783, 1.211804,
    1.38634, 1.576228, 1.787233, 2.028728, 2.317739, 2.69112, 3.260732,
];

/// Positive half of the 64-level (6-bit) codebook, ascending.
pub const NORMAL_64: [f32; 32] = [
    0.033410, 0.100278, 0.167297, 0.234567, 0.302193, 0.370283, 0.438950, 0.508314, 0.578503,
    0.649656, 0.721922, 0.795468, 0.870477, 0.947155, 1.025736, 1.106488, 1.18972, 1.275794,
    1.365141, 1.458276, 1.555831, 1.658589, 1.767542, 1.883977, 2.009611, 2.14681, 2.298981,
    2.471305, 2.672274, 2.917407, 3.240437, 3.744101,
];

/// The 16 group gains of the sub-scaled types (`tbqN_1`): `g_k = 2^((2k - 15) / 24)`, a
/// log-spaced ladder of step 2^(1/12) centred on 1 (0.648 … 1.542), rounded to f32.
///
/// After the rotation every group of 32 coordinates of a block has, in expectation, the same
/// spread, but a real block's group RMS varies (a chi variable with 32 degrees of freedom: ±12%
/// at one sigma). The encoder tries every gain per group and keeps the one with the least
/// squared error; the step 2^(1/12) minimised the distortion at 3, 4 and 5 bits among the steps
/// tried (2^0.04 … 2^0.1) on exactly distributed rotated rows.
pub const GAINS: [f32; 16] = [
    0.6484198, 0.68697685, 0.7278266, 0.7711054, 0.8169577, 0.8655366, 0.91700405, 0.9715319,
    1.0293022, 1.0905077, 1.1553527, 1.2240535, 1.2968396, 1.3739537, 1.4556532, 1.5422108,
];

/// Thresholds between neighbouring positive levels of [`NORMAL_8`].
pub const NORMAL_8_BOUNDS: [f32; 3] = midpoints(NORMAL_8);

/// Thresholds between neighbouring positive levels of [`NORMAL_16`].
pub const NORMAL_16_BOUNDS: [f32; 7] = midpoints(NORMAL_16);

/// Thresholds between neighbouring positive levels of [`NORMAL_32`].
pub const NORMAL_32_BOUNDS: [f32; 15] = midpoints(NORMAL_32);

/// Thresholds between neighbouring positive levels of [`NORMAL_64`].
pub const NORMAL_64_BOUNDS: [f32; 31] = midpoints(NORMAL_64);

/// All 8 levels of the 3-bit codebook, ascending (code `c` reconstructs to `NORMAL_8_LEVELS[c]`).
pub const NORMAL_8_LEVELS: [f32; 8] = mirror(NORMAL_8);

/// All 16 levels of the 4-bit codebook, ascending.
pub const NORMAL_16_LEVELS: [f32; 16] = mirror(NORMAL_16);

/// All 32 levels of the 5-bit codebook, ascending.
pub const NORMAL_32_LEVELS: [f32; 32] = mirror(NORMAL_32);

/// All 64 levels of the 6-bit codebook, ascending.
pub const NORMAL_64_LEVELS: [f32; 64] = mirror(NORMAL_64);

/// The full, ascending codebook from its positive half: `-p[H-1], …, -p[0], p[0], …, p[H-1]`.
const fn mirror<const H: usize, const N: usize>(p: [f32; H]) -> [f32; N] {
    assert!(N == 2 * H);
    let mut l = [0.0f32; N];
    let mut k = 0;
    while k < H {
        l[H + k] = p[k];
        l[H - 1 - k] = -p[k];
        k += 1;
    }
    l
}

/// `(p[k] + p[k+1]) * 0.5` in f32 — the nearest-level thresholds, computed the way the CUDA
/// kernels compute theirs.
const fn midpoints<const N: usize, const M: usize>(p: [f32; N]) -> [f32; M] {
    assert!(M + 1 == N);
    let mut b = [0.0f32; M];
    let mut k = 0;
    while k < M {
        b[k] = (p[k] + p[k + 1]) * 0.5;
        k += 1;
    }
    b
}

/// Standard normal density.
fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Standard normal distribution function, accurate in the tails.
fn cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// A codebook computed by Lloyd-Max iteration, with its theoretical distortion.
#[derive(Clone, Debug)]
pub struct LloydMax {
    /// All levels, ascending.
    pub levels: Vec<f64>,
    /// Mean squared error per coordinate for a standard normal input.
    pub mse: f64,
}

/// The `levels`-level Lloyd-Max quantizer of N(0, 1), iterated until no level moves by more
/// than 1e-13.
///
/// Each step puts the thresholds at the midpoints of neighbouring levels, then moves every level
/// to the conditional mean of its cell: `(pdf(a) - pdf(b)) / (cdf(b) - cdf(a))`.
pub fn lloyd_max_normal(levels: usize) -> LloydMax {
    assert!(levels >= 2, "a codebook needs at least two levels");
    // Start from the quantiles' cell centres: evenly spread, inside the bulk of the density.
    let mut c: Vec<f64> = (0..levels)
        .map(|k| 3.0 * (2.0 * (k as f64 + 0.5) / levels as f64 - 1.0))
        .collect();
    for _ in 0..100_000 {
        let t: Vec<f64> = c.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        let mut moved = 0.0f64;
        for k in 0..levels {
            let a = if k == 0 { f64::NEG_INFINITY } else { t[k - 1] };
            let b = if k == levels - 1 { f64::INFINITY } else { t[k] };
            let next = (pdf(a) - pdf(b)) / (cdf(b) - cdf(a));
            moved = moved.max((next - c[k]).abs());
            c[k] = next;
        }
        if moved < 1e-13 {
            break;
        }
    }
    // With every level at its cell's mean, MSE = E[X^2] - sum_k c_k^2 P(cell k).
    let t: Vec<f64> = c.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let explained: f64 = (0..levels)
        .map(|k| {
            let a = if k == 0 { f64::NEG_INFINITY } else { t[k - 1] };
            let b = if k == levels - 1 { f64::INFINITY } else { t[k] };
            c[k] * c[k] * (cdf(b) - cdf(a))
        })
        .sum();
    LloydMax {
        levels: c,
        mse: 1.0 - explained,
    }
}
