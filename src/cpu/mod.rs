//! The CPU hot path: the row operations ggml's CPU backend calls, with AVX2 where the machine has
//! it (and AVX-512 F + VL table look-ups where it has those) and the scalar [`crate::reference`]
//! everywhere else.
//!
//! What each function promises against the reference:
//! - [`quantize_row`], [`rotate_in_place`], [`unrotate_in_place`], [`dequantize_row`]: the same bits. The SIMD code
//!   runs the reference's float operations in the reference's order (butterfly stages, the
//!   canonical lane sums, no fused multiply-add), so codes, norms and floats are identical;
//! - [`vec_dot_rotated`], [`vec_dot`], [`mad_rotated`]: equal within f32 rounding of a reordered sum (the
//!   SIMD code sums in 8 lanes and fuses multiply-adds); `tests/simd.rs` states the tolerance.
//!
//! Unless the experiment switch `TBQ_SIM_TRELLIS` ([`sim`]) names the type: then these four run
//! trellis codes in the type's bytes (a measurement aid, off by default).
//!
//! The instruction set is chosen at run time ([`Isa::detected`]), so one `libtbq.a` runs on every
//! x86-64 machine; the `*_on` functions run a given one (tests and benches compare them). No NEON
//! yet: the aarch64 path is the reference. Both block widths run the same SIMD code: a 64-wide
//! block (`tbq4_0_64`, …, the types of head-64 models) is the first two slots of the canonical
//! lane layout, 8 vectors of 8 where a 128-wide block has 16.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod sim;

use std::sync::OnceLock;

use crate::error::Error;
use crate::format::{TbqType, BLOCK_ELEMS, NARROW_BLOCK_ELEMS};
use crate::reference::{self, check_bytes, check_len};

/// An instruction set the CPU path can run, from the least to the most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// The scalar reference.
    Scalar,
    /// AVX2 + FMA: 8-lane vectors, look-ups by 8-entry permutes.
    Avx2,
    /// AVX2 + FMA with AVX-512 F + VL's two-source permutes for the look-ups (16 and 32 entries
    /// per instruction): the 5- and 6-bit levels and the 5- and 6-bit encoder's buckets. Vectors
    /// stay 8 lanes wide.
    Avx512,
}

impl Isa {
    /// The instruction sets this machine has, from [`Isa::Scalar`] up.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// What the CPU path runs: the most this machine has, or less where `TBQ_CPU_ISA` (`scalar`,
    /// `avx2`, `avx512`) asks for less (read once).
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = match std::env::var("TBQ_CPU_ISA").as_deref() {
                Ok("scalar") => Isa::Scalar,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Avx512,
            };
            Isa::best().min(cap)
        })
    }

    /// The most this machine has (cached: every row operation asks).
    fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| *Isa::available().last().unwrap())
    }

    /// `self`, or the most this machine has below it (each set includes the ones below).
    #[inline]
    fn supported(self) -> Isa {
        self.min(Isa::best())
    }
}

/// Whether the AVX2 + FMA path runs on this machine.
#[inline]
pub fn has_avx2() -> bool {
    Isa::detected() >= Isa::Avx2
}

/// Runs `$f` of the instruction set `$isa` (a supported one), the reference `$scalar` for `Scalar`.
macro_rules! dispatch {
    ($isa:expr, $f:ident, ($($a:expr),*), $scalar:expr) => {{
        #[cfg(target_arch = "x86_64")]
        match $isa {
            // SAFETY: the CPU has the instruction set (`Isa::supported`, or `Isa::detected`);
            // the caller checked the lengths.
            Isa::Avx512 => return Ok(unsafe { avx2::isa_avx512::$f($($a),*) }),
            Isa::Avx2 => return Ok(unsafe { avx2::isa_avx2::$f($($a),*) }),
            Isa::Scalar => {}
        }
        $scalar
    }};
}

/// As [`reference::quantize_row`], bit for bit.
pub fn quantize_row(ty: TbqType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    quantize_row_on(Isa::detected(), ty, x, out)
}

/// [`quantize_row`] with `isa` (or the most this machine has below it).
pub fn quantize_row_on(isa: Isa, ty: TbqType, x: &[f32], out: &mut [u8]) -> Result<(), Error> {
    check_len(x.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(x.len()), out.len())?;
    if let Some(t) = sim::active(ty) {
        sim::quantize_row(t, ty, x, out);
        return Ok(());
    }
    dispatch!(isa.supported(), quantize_row, (ty, x, out), {
        reference::quantize_row(ty, x, out)
    })
}

/// As [`reference::dequantize_row`], bit for bit.
pub fn dequantize_row(ty: TbqType, src: &[u8], out: &mut [f32]) -> Result<(), Error> {
    dequantize_row_on(Isa::detected(), ty, src, out)
}

/// [`dequantize_row`] with `isa` (or the most this machine has below it).
pub fn dequantize_row_on(isa: Isa, ty: TbqType, src: &[u8], out: &mut [f32]) -> Result<(), Error> {
    check_len(out.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(out.len()), src.len())?;
    if let Some(t) = sim::active(ty) {
        sim::dequantize_row(t, ty, src, out);
        return Ok(());
    }
    dispatch!(isa.supported(), dequantize_row, (ty, src, out), {
        reference::dequantize_row(ty, src, out)
    })
}

/// As [`reference::rotate`] with blocks of `block` (128 or 64) elements, bit for bit; in place.
pub fn rotate_in_place(x: &mut [f32], block: usize) -> Result<(), Error> {
    reference::check_block_width(block)?;
    check_len(x.len(), block)?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row. `block` is 128 or 64 (check_block_width).
        match block {
            BLOCK_ELEMS => unsafe { avx2::rotate_in_place::<BLOCK_ELEMS>(x) },
            _ => unsafe { avx2::rotate_in_place::<NARROW_BLOCK_ELEMS>(x) },
        }
        return Ok(());
    }
    x.chunks_exact_mut(block)
        .for_each(crate::rotation::rotate_block);
    Ok(())
}

/// As [`reference::unrotate`] with blocks of `block` (128 or 64) elements, bit for bit; in
/// place.
pub fn unrotate_in_place(x: &mut [f32], block: usize) -> Result<(), Error> {
    reference::check_block_width(block)?;
    check_len(x.len(), block)?;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in quantize_row. `block` is 128 or 64 (check_block_width).
        match block {
            BLOCK_ELEMS => unsafe { avx2::unrotate_in_place::<BLOCK_ELEMS>(x) },
            _ => unsafe { avx2::unrotate_in_place::<NARROW_BLOCK_ELEMS>(x) },
        }
        return Ok(());
    }
    x.chunks_exact_mut(block)
        .for_each(crate::rotation::unrotate_block);
    Ok(())
}

/// As [`reference::vec_dot_rotated`], within f32 rounding.
pub fn vec_dot_rotated(ty: TbqType, x: &[u8], q_rot: &[f32]) -> Result<f32, Error> {
    vec_dot_rotated_on(Isa::detected(), ty, x, q_rot)
}

/// [`vec_dot_rotated`] with `isa` (or the most this machine has below it).
pub fn vec_dot_rotated_on(isa: Isa, ty: TbqType, x: &[u8], q_rot: &[f32]) -> Result<f32, Error> {
    check_len(q_rot.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(q_rot.len()), x.len())?;
    if let Some(t) = sim::active(ty) {
        return Ok(sim::vec_dot_rotated(t, ty, x, q_rot));
    }
    dispatch!(isa.supported(), vec_dot_rotated, (ty, x, q_rot), {
        reference::vec_dot_rotated(ty, x, q_rot)
    })
}

/// As [`reference::vec_dot`], within f32 rounding; equal to [`vec_dot_rotated`] of the rotated
/// query, bit for bit (both sum the blocks' dots in order).
pub fn vec_dot(ty: TbqType, x: &[u8], q: &[f32]) -> Result<f32, Error> {
    reference::vec_dot_by_blocks(ty, x, q, vec_dot_rotated)
}

/// As [`reference::mad_rotated`], within f32 rounding.
pub fn mad_rotated(ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) -> Result<(), Error> {
    mad_rotated_on(Isa::detected(), ty, x, scale, acc)
}

/// [`mad_rotated`] with `isa` (or the most this machine has below it).
pub fn mad_rotated_on(
    isa: Isa,
    ty: TbqType,
    x: &[u8],
    scale: f32,
    acc: &mut [f32],
) -> Result<(), Error> {
    check_len(acc.len(), ty.block_elems())?;
    check_bytes(ty.row_bytes(acc.len()), x.len())?;
    if let Some(t) = sim::active(ty) {
        sim::mad_rotated(t, ty, x, scale, acc);
        return Ok(());
    }
    dispatch!(isa.supported(), mad_rotated, (ty, x, scale, acc), {
        reference::mad_rotated(ty, x, scale, acc)
    })
}
