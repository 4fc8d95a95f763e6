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

/// Thresholds between neighbouring positive levels of [`NORMAL_8`].
pub const NORMAL_8_BOUNDS: [f32; 3] = midpoints(NORMAL_8);

/// Thresholds between neighbouring positive levels of [`NORMAL_16`].
pub const NORMAL_16_BOUNDS: [f32; 7] = midpoints(NORMAL_16);

/// All 8 levels of the 3-bit codebook, ascending (code `c` reconstructs to `NORMAL_8_LEVELS[c]`).
pub const NORMAL_8_LEVELS: [f32; 8] = mirror(NORMAL_8);

/// All 16 levels of the 4-bit codebook, ascending.
pub const NORMAL_16_LEVELS: [f32; 16] = mirror(NORMAL_16);

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
