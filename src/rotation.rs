//! The randomized Walsh-Hadamard rotation `T(x) = H·D·x / sqrt(128)`.
//!
//! `D` is a fixed diagonal of ±1 signs ([`SIGNS`]), `H` the 128×128 Sylvester Hadamard matrix
//! applied as a 7-stage butterfly. `T` is orthogonal; its inverse is `D·H / sqrt(128)`. The
//! random signs spread any structure of a K/V vector over all coordinates, so each rotated
//! coordinate is close to Gaussian and one scalar codebook serves every block.
//!
//! A 64-wide block (the `_64` types) is rotated by the 64-point transform `H₆₄·D₆₄·x / 8`, with
//! `D₆₄` the first 64 signs: the same rule at half the width.
//!
//! Float order matters for bit-exact agreement with the CUDA kernels: the butterfly runs its
//! stages with spans 1, 2, 4, …, 64 (a warp does spans 1–16 across lanes with shuffles, 32 and
//! 64 inside each lane), and every stage computes `(a + b, a - b)`.

use crate::format::{LANES, NARROW_BLOCK_ELEMS};

/// The 128 signs of `D`: bit `i` set means coordinate `i` is negated. A constant of the format.
///
/// Written out, coordinate 0 first (`+` keeps, `-` negates): see [`sign`] and the README.
pub const SIGNS: u128 = 0xde57_3c58_3fea_2df6_af21_e4f2_aa31_bcb4;

/// `sqrt(128)` rounded to f32.
pub const SQRT_128: f32 = 11.313_708;

/// `1 / sqrt(128)` rounded to f32.
pub const INV_SQRT_128: f32 = 0.088_388_35;

/// `sqrt(n)` of a block of `n` (128 or 64) elements, as every implementation rounds it: the
/// f32 constant for 128, exactly 8 for 64.
#[inline(always)]
pub const fn sqrt_n(n: usize) -> f32 {
    if n == NARROW_BLOCK_ELEMS {
        8.0
    } else {
        SQRT_128
    }
}

/// `1 / sqrt(n)` of a block of `n` (128 or 64) elements: exactly 0.125 for 64.
#[inline(always)]
pub const fn inv_sqrt_n(n: usize) -> f32 {
    if n == NARROW_BLOCK_ELEMS {
        0.125
    } else {
        INV_SQRT_128
    }
}

/// The sign of `D` at coordinate `i`: `1.0` or `-1.0`.
#[inline(always)]
pub fn sign(i: usize) -> f32 {
    if (SIGNS >> i) & 1 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// In-place unnormalized fast Walsh-Hadamard transform of one block of `v.len()` (128 or 64)
/// elements: `v ← H·v`.
///
/// Applying it twice multiplies by the length (H·H = n·I).
#[inline]
pub fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for base in (0..n).step_by(2 * h) {
            for j in base..base + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
}

/// `T(x)` of one block (128 or 64 elements: `v.len()`), in place.
#[inline]
pub fn rotate_block(v: &mut [f32]) {
    for (i, x) in v.iter_mut().enumerate() {
        *x *= sign(i);
    }
    fwht(v);
    let inv = inv_sqrt_n(v.len());
    for x in v.iter_mut() {
        *x *= inv;
    }
}

/// `T⁻¹(u)` of one block (128 or 64 elements: `v.len()`), in place.
#[inline]
pub fn unrotate_block(v: &mut [f32]) {
    fwht(v);
    let inv = inv_sqrt_n(v.len());
    for (i, x) in v.iter_mut().enumerate() {
        *x = sign(i) * (*x * inv);
    }
}

/// Sum of squares of a block (128 or 64 elements) in the canonical 32-lane order (see
/// [`crate::format::LANES`]): each lane adds the squares of its slots in order, then lanes
/// combine in an xor butterfly over 16, 8, 4, 2, 1 — exactly a warp's `__shfl_xor_sync`
/// reduction.
#[inline]
pub fn sum_squares_canonical(v: &[f32]) -> f32 {
    let slots = v.len() / LANES;
    let mut lane = [0.0f32; LANES];
    for (l, acc) in lane.iter_mut().enumerate() {
        let mut s = v[l] * v[l];
        for slot in 1..slots {
            let x = v[l + LANES * slot];
            s += x * x;
        }
        *acc = s;
    }
    warp_sum_canonical(lane)
}

/// The sum of one value per lane as a warp's xor butterfly computes it (offsets 16, 8, 4, 2, 1:
/// `v[l] = v[l] + v[l ^ offset]`). Addition is commutative in IEEE arithmetic, so every lane
/// ends with the same value.
pub fn warp_sum_canonical(mut lane: [f32; crate::format::LANES]) -> f32 {
    let mut offset = lane.len() / 2;
    while offset > 0 {
        let prev = lane;
        for (l, acc) in lane.iter_mut().enumerate() {
            *acc = prev[l] + prev[l ^ offset];
        }
        offset /= 2;
    }
    lane[0]
}
