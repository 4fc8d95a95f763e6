//! The CPU reference: quantize, dequantize and dot products, row by row.
//!
//! This is the definition every other implementation (CUDA kernels, the C ABI) must match bit
//! for bit. It favours clarity over speed, but does no allocation and rotates a query once per
//! row.
//!
//! Quantizing one block `x` (128 floats; a `_64` type's block is 64, with `sqrt(64)` = 8 for
//! `sqrt(128)` and two gain groups):
//! 1. non-finite elements read as 0;
//! 2. `w = H·D·x` (unnormalized butterfly), `s = Σ w²` in the canonical lane order; if `s` is 0
//!    or overflows, the block is all-zero codes with `d = 0`;
//! 3. `y = w · (sqrt(128) / sqrt(s))` — i.e. `sqrt(128)·u/||x||` for `u = T(x)` — and
//!    `c_i = encode(y_i)`;
//! 4. `d = sqrt(s) / (sqrt(128) · ||C[c]||)` — i.e. `||x|| / ||C[c]||` — as an IEEE half, saturated
//!    to 65504.
//!
//! Sub-scaled types (`tbqN_1`) replace step 3 per group `s` of 32 coordinates (slot `s`): for each
//! gain `g_k` of [`GAINS`], `c_i = encode(y_i · g_(15-k))` (`g_(15-k)` is `1/g_k` exactly: the
//! ladder is symmetric in the exponent, and a multiply is far cheaper than a division on a GPU),
//! `r_i = g_k · C[c_i]` and the group error
//! `Σ (y_i - r_i)²` (summed as a warp's butterfly sums, [`warp_sum_canonical`]); the first `k`
//! with the least error wins. Step 4 then normalises the gained reconstruction `r`.
//!
//! Compact-header types (`tbqN_1_64c`) choose the scale first and fit the gains to it: step 3
//! becomes `k = scale8_code(s)` (the scale grid point nearest the coordinates' RMS `√s/64`),
//! `t = w · (1/(8·scale8_value(k)))` and the group search above on `t`; there is no step 4 (the
//! gains, steps of 2^(1/12), absorb the grid's 2^(1/8)). A block with `s` 0 or not finite is all
//! zero, as above.

use half::f16;

use crate::codebook::GAINS;
use crate::error::Error;
use crate::format::{
    scale8_value, TbqType, TypeSpec, BLOCK_ELEMS, D_BYTES, D_MAX, GROUP_ELEMS, LANES,
    SCALE8_MANTISSAS, SLOTS,
};
use crate::packing::{for_each_code, pack};
use crate::rotation::{
    fwht, rotate_block, sign, sqrt_n, sum_squares_canonical, unrotate_block, warp_sum_canonical,
};

/// Room for one block of any type; a type uses its first `block` elements.
type Block = [f32; BLOCK_ELEMS];

/// Quantizes one block (`ty.block_elems()` floats) into `out` (`ty.block_bytes()` bytes).
pub fn quantize_block(ty: TbqType, x: &[f32], out: &mut [u8]) {
    let (header, qs) = out.split_at_mut(ty.spec().header_bytes());
    let n = ty.block_elems();
    debug_assert_eq!(x.len(), n);

    let mut w_full = [0.0f32; BLOCK_ELEMS];
    let w = &mut w_full[..n];
    for (i, (wi, &xi)) in w.iter_mut().zip(x).enumerate() {
        *wi = if xi.is_finite() { xi * sign(i) } else { 0.0 };
    }
    fwht(w);
    let s = sum_squares_canonical(w);
    if s == 0.0 || !s.is_finite() {
        header.fill(0);
        qs.fill(0);
        return;
    }

    ty.with_spec(
        #[inline(always)]
        |spec| {
            // The coordinates the codes are chosen for: y = w·√n/||w|| (unit variance), or for a
            // compact header y = w/(8·d) with the scale d chosen first.
            let norm_w = s.sqrt();
            let code = if spec.compact { scale8_code(s) } else { 0 };
            let k = if spec.compact {
                scale8_inverse8(code)
            } else {
                sqrt_n(n) / norm_w
            };
            let mut y = [0.0f32; BLOCK_ELEMS];
            for (yi, wi) in y.iter_mut().zip(w.iter()) {
                *yi = wi * k;
            }
            let mut codes = [0u8; BLOCK_ELEMS];
            let mut r = [0.0f32; BLOCK_ELEMS];
            let gains = if spec.sub_scales {
                encode_groups(spec, &y, &mut codes, &mut r)
            } else {
                for i in 0..n {
                    codes[i] = spec.encode(y[i]);
                    r[i] = spec.level(codes[i]);
                }
                0
            };
            if spec.compact {
                header[0] = code;
                header[1] = gains as u8;
            } else {
                let d = norm_w / (sqrt_n(n) * sum_squares_canonical(&r[..n]).sqrt());
                header[..D_BYTES].copy_from_slice(&f16::from_f32(d.min(D_MAX)).to_le_bytes());
                if spec.sub_scales {
                    header[D_BYTES..].copy_from_slice(&gains.to_le_bytes());
                }
            }
            pack(spec, &codes[..n], qs);
        },
    );
}

/// Codes and gained reconstruction `r` of a sub-scaled type's block `y` (the normalised,
/// rotated coordinates); returns the gains word (gain index of group `s` in bits `4s..4s+4`).
#[inline(always)]
fn encode_groups(spec: &TypeSpec, y: &Block, codes: &mut [u8; BLOCK_ELEMS], r: &mut Block) -> u16 {
    let mut word = 0u16;
    for s in 0..spec.slots() {
        let group = GROUP_ELEMS * s..GROUP_ELEMS * (s + 1);
        let mut best = (f32::INFINITY, 0usize);
        for (k, &g) in GAINS.iter().enumerate() {
            let mut err = [0.0f32; LANES];
            for (e, &yi) in err.iter_mut().zip(&y[group.clone()]) {
                let ri = g * spec.level(spec.encode(yi * GAINS[15 - k]));
                let diff = yi - ri;
                *e = diff * diff;
            }
            let err = warp_sum_canonical(err);
            if err < best.0 {
                best = (err, k);
            }
        }
        let (_, k) = best;
        let g = GAINS[k];
        for i in group {
            codes[i] = spec.encode(y[i] * GAINS[15 - k]);
            r[i] = g * spec.level(codes[i]);
        }
        word |= (k as u16) << (4 * s);
    }
    word
}

/// The compact header's scale code of a 64-wide block whose butterfly `w = H·D·x` has
/// `Σ w² = s` (finite, > 0): the grid point of [`scale8_value`] nearest (in the log domain, ties
/// up) to the coordinates' RMS `ρ = √s/64`, clamped to 1..=255. Exact integer work on the bits
/// of `s` (`8·log2 ρ = 4·(log2 s − 12)`), so a GPU gets the same code.
#[inline]
pub fn scale8_code(s: f32) -> u8 {
    let bits = s.to_bits();
    let e = ((bits >> 23) & 0xff) as i32;
    if e == 0 {
        return 1; // subnormal: below the grid
    }
    let m = f32::from_bits((bits & 0x007f_ffff) | (127 << 23));
    let j = [1, 3, 5, 7]
        .into_iter()
        .filter(|&i| m >= SCALE8_MANTISSAS[i])
        .count() as i32;
    (4 * (e - 127) + j + 80).clamp(1, 255) as u8
}

/// `1/(8·scale8_value(k))` for `k` ≥ 1, exact: `scale8_value(256 − k) = 2^((128 − k)/8)`, over 8.
/// The encoder's `t = w · this` is `u/d` for `u = w/8`, the block's rotated coordinates.
#[inline]
pub fn scale8_inverse8(k: u8) -> f32 {
    scale8_value((256 - k as u16) as u8) * 0.125
}

/// The scale `d` of a block: the corrected norm (an IEEE half) or a compact header's scale.
#[inline]
pub fn block_d(spec: &TypeSpec, block: &[u8]) -> f32 {
    if spec.compact {
        scale8_value(block[0])
    } else {
        f16::from_le_bytes([block[0], block[1]]).to_f32()
    }
}

/// The scale of each group of a block: `d`, times the group's gain for a sub-scaled type
/// (`(d · g_s) · C[c_i]` is how every implementation reconstructs a coordinate).
#[inline]
pub fn group_scales(spec: &TypeSpec, block: &[u8]) -> [f32; SLOTS] {
    let d = block_d(spec, block);
    if !spec.sub_scales {
        return [d; SLOTS];
    }
    let word = if spec.compact {
        block[1] as u16
    } else {
        u16::from_le_bytes([block[D_BYTES], block[D_BYTES + 1]])
    };
    // A 64-wide block's groups 2 and 3 do not exist (their bits are zero): any value serves.
    std::array::from_fn(|s| d * GAINS[(word >> (4 * s)) as usize & 15])
}

/// `(d · g_s) · C[c_i]` for each coordinate (`out[..ty.block_elems()]`): the block in the
/// rotated domain, `T(x̂)`.
#[inline]
pub fn decode_rotated(ty: TbqType, block: &[u8], out: &mut [f32]) {
    ty.with_spec(
        #[inline(always)]
        |spec| {
            let scale = group_scales(spec, block);
            for_each_code(spec, &block[spec.header_bytes()..], |i, c| {
                out[i] = scale[i / GROUP_ELEMS] * spec.level(c)
            })
        },
    );
}

/// Dequantizes one block: `x̂ = T⁻¹(d·C[c])` (`out.len()` = `ty.block_elems()`).
pub fn dequantize_block(ty: TbqType, block: &[u8], out: &mut [f32]) {
    decode_rotated(ty, block, out);
    unrotate_block(out);
}

/// Checks that `n` is a positive multiple of `block` (a type's [`TbqType::block_elems`]).
pub fn check_len(n: usize, block: usize) -> Result<(), Error> {
    if n == 0 || !n.is_multiple_of(block) {
        return Err(Error::Length { n: n as i64, block });
    }
    Ok(())
}

/// Checks that a buffer of `have` bytes (or floats) holds the `need` a row takes.
pub fn check_bytes(need: usize, have: usize) -> Result<(), Error> {
    if have < need {
        return Err(Error::Buffer { need, have });
    }
    Ok(())
}

/// Quantizes a row of f32 into `out`. `x.len()` must be a multiple of the type's block
/// (128, or 64 for a `_64` type) and `out` must hold `ty.row_bytes(x.len())` bytes; nothing is
/// written on error.
pub fn quantize_row(ty: TbqType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    check_len(x.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(x.len()), out.len())?;
    for (xb, ob) in x
        .chunks_exact(ty.block_elems())
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        quantize_block(ty, xb, ob);
    }
    Ok(())
}

/// Quantizes a row of IEEE halves; identical to [`quantize_row`] of the same values as f32.
pub fn quantize_row_f16(ty: TbqType, x: &[f16], out: &mut [u8]) -> Result<(), Error> {
    let n = ty.block_elems();
    check_len(x.len(), n)?;
    check_bytes(ty.row_bytes(x.len()), out.len())?;
    for (xb, ob) in x
        .chunks_exact(n)
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        let mut b = [0.0f32; BLOCK_ELEMS];
        for (bi, h) in b.iter_mut().zip(xb) {
            *bi = h.to_f32();
        }
        quantize_block(ty, &b[..n], ob);
    }
    Ok(())
}

/// Dequantizes `out.len()` elements from `src`.
pub fn dequantize_row(ty: TbqType, src: &[u8], out: &mut [f32]) -> Result<(), Error> {
    check_len(out.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(out.len()), src.len())?;
    for (sb, ob) in src
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(ty.block_elems()))
    {
        dequantize_block(ty, sb, ob);
    }
    Ok(())
}

/// Dequantizes `out.len()` elements from `src` to IEEE halves (round to nearest even).
pub fn dequantize_row_f16(ty: TbqType, src: &[u8], out: &mut [f16]) -> Result<(), Error> {
    let n = ty.block_elems();
    check_len(out.len(), n)?;
    check_bytes(ty.row_bytes(out.len()), src.len())?;
    for (sb, ob) in src
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(n))
    {
        let mut b = [0.0f32; BLOCK_ELEMS];
        dequantize_block(ty, sb, &mut b[..n]);
        for (o, v) in ob.iter_mut().zip(b) {
            *o = f16::from_f32(v);
        }
    }
    Ok(())
}

/// `T` applied to each `block`-element block (128 or 64) of `x`, written to `out` (same
/// length).
pub fn rotate(x: &[f32], out: &mut [f32], block: usize) -> Result<(), Error> {
    map_blocks(x, out, block, rotate_block)
}

/// `T⁻¹` applied to each `block`-element block (128 or 64) of `x`, written to `out` (same
/// length).
pub fn unrotate(x: &[f32], out: &mut [f32], block: usize) -> Result<(), Error> {
    map_blocks(x, out, block, unrotate_block)
}

fn map_blocks(x: &[f32], out: &mut [f32], block: usize, f: fn(&mut [f32])) -> Result<(), Error> {
    check_block_width(block)?;
    check_len(x.len(), block)?;
    check_bytes(x.len(), out.len())?;
    for (xb, ob) in x.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
        ob.copy_from_slice(xb);
        f(ob);
    }
    Ok(())
}

/// Checks that `block` is a width of the family (128 or 64).
pub fn check_block_width(block: usize) -> Result<(), Error> {
    if block == BLOCK_ELEMS || block == crate::format::NARROW_BLOCK_ELEMS {
        Ok(())
    } else {
        Err(Error::BlockWidth { block })
    }
}

/// `Σ q·x̂` for a query already rotated by [`rotate`]: per block `d · Σ_i T(q)_i · C[c_i]`.
pub fn vec_dot_rotated(ty: TbqType, x: &[u8], q_rot: &[f32]) -> Result<f32, Error> {
    check_len(q_rot.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(q_rot.len()), x.len())?;
    let sum = ty.with_spec(
        #[inline(always)]
        |spec| {
            let mut sum = 0.0f32;
            let bb = spec.block_bytes();
            for (xb, qb) in x.chunks_exact(bb).zip(q_rot.chunks_exact(spec.block)) {
                let mut s = [0.0f32; SLOTS];
                for_each_code(spec, &xb[spec.header_bytes()..], |i, c| {
                    s[i / GROUP_ELEMS] += qb[i] * spec.level(c)
                });
                let scale = group_scales(spec, xb);
                sum += (0..spec.slots()).map(|g| scale[g] * s[g]).sum::<f32>();
            }
            sum
        },
    );
    Ok(sum)
}

/// `acc += scale · T(x̂)` over a row: the value side of flash attention in the rotated domain.
/// Accumulating `Σ_t p_t · T(v̂_t)` and applying [`unrotate`] once to the sum gives `Σ_t p_t · v̂_t`
/// (T⁻¹ is linear) without an inverse rotation per value row. `acc` holds `x`'s element count.
pub fn mad_rotated(ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) -> Result<(), Error> {
    let n = ty.block_elems();
    check_len(acc.len(), n)?;
    check_bytes(ty.row_bytes(acc.len()), x.len())?;
    for (xb, ab) in x
        .chunks_exact(ty.block_bytes())
        .zip(acc.chunks_exact_mut(n))
    {
        let mut r = [0.0f32; BLOCK_ELEMS];
        decode_rotated(ty, xb, &mut r[..n]);
        for (a, ri) in ab.iter_mut().zip(r) {
            *a += scale * ri;
        }
    }
    Ok(())
}

/// `Σ q·x̂` for a plain query: rotates each block of `q` once, then scores like
/// [`vec_dot_rotated`].
pub fn vec_dot(ty: TbqType, x: &[u8], q: &[f32]) -> Result<f32, Error> {
    vec_dot_by_blocks(ty, x, q, vec_dot_rotated)
}

/// `Σ q·x̂` block by block: each block of `q` rotated (bit for bit the same on every path), scored
/// by `dot_rotated` against its block of `x`, and the blocks' dots summed in order — so a row's
/// dot is the sum of its blocks' `vec_dot_rotated` whichever implementation scores them.
pub(crate) fn vec_dot_by_blocks(
    ty: TbqType,
    x: &[u8],
    q: &[f32],
    dot_rotated: impl Fn(TbqType, &[u8], &[f32]) -> Result<f32, Error>,
) -> Result<f32, Error> {
    let n = ty.block_elems();
    check_len(q.len(), n)?;
    check_bytes(ty.row_bytes(q.len()), x.len())?;
    let mut sum = 0.0f32;
    for (xb, qb) in x.chunks_exact(ty.block_bytes()).zip(q.chunks_exact(n)) {
        let mut q_rot: Block = [0.0; BLOCK_ELEMS];
        q_rot[..n].copy_from_slice(qb);
        rotate_block(&mut q_rot[..n]);
        sum += dot_rotated(ty, xb, &q_rot[..n])?;
    }
    Ok(sum)
}

/// Checks that every block's `d` is finite (a corrupted or foreign buffer otherwise).
pub fn validate(ty: TbqType, src: &[u8]) -> Result<(), Error> {
    let bb = ty.block_bytes();
    if !src.len().is_multiple_of(bb) {
        return Err(Error::Buffer {
            need: src.len().div_ceil(bb) * bb,
            have: src.len(),
        });
    }
    let spec = ty.spec();
    match src
        .chunks_exact(bb)
        .position(|b| !block_d(spec, b).is_finite())
    {
        Some(block) => Err(Error::NonFinite { block }),
        None => Ok(()),
    }
}
