//! The CPU hot path: the row operations ggml's CPU backend calls, with AVX2 where the machine has
//! it and the scalar [`crate::reference`] everywhere else.
//!
//! What each function promises against the reference:
//! - [`quantize_row`], [`rotate_in_place`], [`unrotate_in_place`], [`dequantize_row`]: the same bits. The SIMD code
//!   runs the reference's float operations in the reference's order (butterfly stages, the
//!   canonical lane sums, no fused multiply-add), so codes, norms and floats are identical;
//! - [`vec_dot_rotated`], [`vec_dot`], [`mad_rotated`]: equal within f32 rounding of a reordered sum (the
//!   SIMD code sums in 8 lanes and fuses multiply-adds); `tests/simd.rs` states the tolerance.
//!
//! The instruction set is chosen at run time (`is_x86_feature_detected!`, cached by std), so one
//! `libtbq.a` runs on every x86-64 machine. No NEON yet: the aarch64 path is the reference.

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::error::Error;
use crate::format::{TbqType, BLOCK_ELEMS};
use crate::reference::{self, check_bytes, check_len};

/// Whether the AVX2 + FMA path runs on this machine.
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// As [`reference::quantize_row`], bit for bit.
pub fn quantize_row(ty: TbqType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    check_len(x.len())?;
    check_bytes(ty.row_bytes(x.len()), out.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); lengths checked above.
        unsafe { avx2::quantize_row(ty, x, out) };
        return Ok(());
    }
    reference::quantize_row(ty, x, out)
}

/// As [`reference::dequantize_row`], bit for bit.
pub fn dequantize_row(ty: TbqType, src: &[u8], out: &mut [f32]) -> Result<(), Error> {
    check_len(out.len())?;
    check_bytes(ty.row_bytes(out.len()), src.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row.
        unsafe { avx2::dequantize_row(ty, src, out) };
        return Ok(());
    }
    reference::dequantize_row(ty, src, out)
}

/// As [`reference::rotate`], bit for bit; in place.
pub fn rotate_in_place(x: &mut [f32]) -> Result<(), Error> {
    check_len(x.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row.
        unsafe { avx2::rotate_in_place(x) };
        return Ok(());
    }
    for block in x.chunks_exact_mut(BLOCK_ELEMS) {
        crate::rotation::rotate_block(block.try_into().unwrap());
    }
    Ok(())
}

/// As [`reference::unrotate`], bit for bit; in place.
pub fn unrotate_in_place(x: &mut [f32]) -> Result<(), Error> {
    check_len(x.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row.
        unsafe { avx2::unrotate_in_place(x) };
        return Ok(());
    }
    for block in x.chunks_exact_mut(BLOCK_ELEMS) {
        crate::rotation::unrotate_block(block.try_into().unwrap());
    }
    Ok(())
}

/// As [`reference::vec_dot_rotated`], within f32 rounding.
pub fn vec_dot_rotated(ty: TbqType, x: &[u8], q_rot: &[f32]) -> Result<f32, Error> {
    check_len(q_rot.len())?;
    check_bytes(ty.row_bytes(q_rot.len()), x.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row.
        return Ok(unsafe { avx2::vec_dot_rotated(ty, x, q_rot) });
    }
    reference::vec_dot_rotated(ty, x, q_rot)
}

/// As [`reference::vec_dot`], within f32 rounding; equal to [`vec_dot_rotated`] of the rotated
/// query, bit for bit (both sum the blocks' dots in order).
pub fn vec_dot(ty: TbqType, x: &[u8], q: &[f32]) -> Result<f32, Error> {
    check_len(q.len())?;
    check_bytes(ty.row_bytes(q.len()), x.len())?;
    let mut sum = 0.0f32;
    for (xb, qb) in x
        .chunks_exact(ty.block_bytes())
        .zip(q.chunks_exact(BLOCK_ELEMS))
    {
        let mut q_rot = [0.0f32; BLOCK_ELEMS];
        q_rot.copy_from_slice(qb);
        rotate_in_place(&mut q_rot)?;
        sum += vec_dot_rotated(ty, xb, &q_rot)?;
    }
    Ok(sum)
}

/// As [`reference::mad_rotated`], within f32 rounding.
pub fn mad_rotated(ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) -> Result<(), Error> {
    check_len(acc.len())?;
    check_bytes(ty.row_bytes(acc.len()), x.len())?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row.
        unsafe { avx2::mad_rotated(ty, x, scale, acc) };
        return Ok(());
    }
    reference::mad_rotated(ty, x, scale, acc)
}
