//! The C ABI of `ffi/include/tbq.h`, exported by `libtbq.a`.
//!
//! Every function checks its pointers and lengths, maps them onto the safe [`crate::reference`]
//! functions and returns a `tbq_status` (0, or the negative code of an [`Error`]). Nothing here
//! panics on any input, and nothing is written when a call fails.

use std::ffi::{c_char, c_void, CStr};
use std::slice;

use half::f16;

use crate::error::Error;
use crate::format::TbqType;
use crate::reference;

const TBQ_OK: i32 = 0;

fn status(r: Result<(), Error>) -> i32 {
    match r {
        Ok(()) => TBQ_OK,
        Err(e) => e.status(),
    }
}

fn ty(t: i32) -> Result<TbqType, Error> {
    TbqType::from_abi(t).ok_or(Error::Type(t))
}

/// A row length from C: a positive multiple of 128.
fn len(n: i64) -> Result<usize, Error> {
    let n_usize = usize::try_from(n).map_err(|_| Error::Length { n })?;
    reference::check_len(n_usize)?;
    Ok(n_usize)
}

fn non_null<T>(p: *const T) -> Result<(), Error> {
    if p.is_null() {
        Err(Error::Null)
    } else {
        Ok(())
    }
}

/// The row's bytes, after checking that the caller's buffer holds them.
fn row_bytes(t: TbqType, n: usize, have: usize) -> Result<usize, Error> {
    let need = t.row_bytes(n);
    if have < need {
        return Err(Error::Buffer { need, have });
    }
    Ok(need)
}

#[no_mangle]
pub extern "C" fn tbq_abi_version() -> u32 {
    crate::ABI_VERSION
}

#[no_mangle]
pub extern "C" fn tbq_status_str(status: i32) -> *const c_char {
    let s: &'static CStr = match status {
        0 => c"ok",
        -1 => c"a required pointer was NULL",
        -2 => c"n is not a positive multiple of 128 elements",
        -3 => c"buffer too short for the row",
        -4 => c"not a tbq type",
        -5 => c"a block's norm is NaN or infinite",
        _ => c"unknown status",
    };
    s.as_ptr()
}

#[no_mangle]
pub extern "C" fn tbq_type_size(t: i32) -> usize {
    TbqType::from_abi(t).map_or(0, TbqType::block_bytes)
}

#[no_mangle]
pub extern "C" fn tbq_type_name(t: i32) -> *const c_char {
    match TbqType::from_abi(t) {
        Some(TbqType::Tbq4_0) => c"tbq4_0".as_ptr(),
        Some(TbqType::Tbq3_0) => c"tbq3_0".as_ptr(),
        None => std::ptr::null(),
    }
}

/// # Safety
/// `out_bytes` is NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_row_size(t: i32, n: i64, out_bytes: *mut usize) -> i32 {
    status((|| {
        non_null(out_bytes)?;
        let bytes = ty(t)?.row_bytes(len(n)?);
        *out_bytes = bytes;
        Ok(())
    })())
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `dst_bytes` writes.
#[no_mangle]
pub unsafe extern "C" fn tbq_quantize_f32(
    t: i32,
    src: *const f32,
    n: i64,
    dst: *mut c_void,
    dst_bytes: usize,
) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let (t, n) = (ty(t)?, len(n)?);
        let need = row_bytes(t, n, dst_bytes)?;
        reference::quantize_row(
            t,
            slice::from_raw_parts(src, n),
            slice::from_raw_parts_mut(dst.cast(), need),
        )
    })())
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `dst_bytes` writes.
#[no_mangle]
pub unsafe extern "C" fn tbq_quantize_f16(
    t: i32,
    src: *const u16,
    n: i64,
    dst: *mut c_void,
    dst_bytes: usize,
) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let (t, n) = (ty(t)?, len(n)?);
        let need = row_bytes(t, n, dst_bytes)?;
        reference::quantize_row_f16(
            t,
            slice::from_raw_parts(src.cast::<f16>(), n),
            slice::from_raw_parts_mut(dst.cast(), need),
        )
    })())
}

/// # Safety
/// `src` is NULL or valid for `src_bytes` reads; `dst` is NULL or valid for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn tbq_dequantize_f32(
    t: i32,
    src: *const c_void,
    src_bytes: usize,
    dst: *mut f32,
    n: i64,
) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let (t, n) = (ty(t)?, len(n)?);
        let need = row_bytes(t, n, src_bytes)?;
        reference::dequantize_row(
            t,
            slice::from_raw_parts(src.cast(), need),
            slice::from_raw_parts_mut(dst, n),
        )
    })())
}

/// # Safety
/// `src` is NULL or valid for `src_bytes` reads; `dst` is NULL or valid for `n` writes.
#[no_mangle]
pub unsafe extern "C" fn tbq_dequantize_f16(
    t: i32,
    src: *const c_void,
    src_bytes: usize,
    dst: *mut u16,
    n: i64,
) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let (t, n) = (ty(t)?, len(n)?);
        let need = row_bytes(t, n, src_bytes)?;
        reference::dequantize_row_f16(
            t,
            slice::from_raw_parts(src.cast(), need),
            slice::from_raw_parts_mut(dst.cast::<f16>(), n),
        )
    })())
}

/// Rotates (or unrotates) through a stack copy of each block, so `src` may equal `dst`.
unsafe fn map_blocks(src: *const f32, dst: *mut f32, n: i64, f: fn(&mut [f32; 128])) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let n = len(n)?;
        for b in 0..n / 128 {
            let mut block = [0.0f32; 128];
            std::ptr::copy_nonoverlapping(src.add(b * 128), block.as_mut_ptr(), 128);
            f(&mut block);
            std::ptr::copy_nonoverlapping(block.as_ptr(), dst.add(b * 128), 128);
        }
        Ok(())
    })())
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `n` writes (may equal `src`).
#[no_mangle]
pub unsafe extern "C" fn tbq_rotate_f32(src: *const f32, dst: *mut f32, n: i64) -> i32 {
    map_blocks(src, dst, n, crate::rotation::rotate_block)
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `n` writes (may equal `src`).
#[no_mangle]
pub unsafe extern "C" fn tbq_unrotate_f32(src: *const f32, dst: *mut f32, n: i64) -> i32 {
    map_blocks(src, dst, n, crate::rotation::unrotate_block)
}

type DotFn = fn(TbqType, &[u8], &[f32]) -> Result<f32, Error>;

unsafe fn dot(
    t: i32,
    x: *const c_void,
    x_bytes: usize,
    q: *const f32,
    n: i64,
    out: *mut f32,
    f: DotFn,
) -> i32 {
    status((|| {
        non_null(x)?;
        non_null(q)?;
        non_null(out)?;
        let (t, n) = (ty(t)?, len(n)?);
        let need = row_bytes(t, n, x_bytes)?;
        *out = f(
            t,
            slice::from_raw_parts(x.cast(), need),
            slice::from_raw_parts(q, n),
        )?;
        Ok(())
    })())
}

/// # Safety
/// `x` is NULL or valid for `x_bytes` reads; `q_rot` NULL or valid for `n` reads; `out` NULL or
/// valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_vec_dot_rotated(
    t: i32,
    x: *const c_void,
    x_bytes: usize,
    q_rot: *const f32,
    n: i64,
    out: *mut f32,
) -> i32 {
    dot(t, x, x_bytes, q_rot, n, out, reference::vec_dot_rotated)
}

/// # Safety
/// As [`tbq_vec_dot_rotated`].
#[no_mangle]
pub unsafe extern "C" fn tbq_vec_dot_f32(
    t: i32,
    x: *const c_void,
    x_bytes: usize,
    q: *const f32,
    n: i64,
    out: *mut f32,
) -> i32 {
    dot(t, x, x_bytes, q, n, out, reference::vec_dot)
}

/// # Safety
/// `src` is NULL or valid for `src_bytes` reads.
#[no_mangle]
pub unsafe extern "C" fn tbq_validate(t: i32, src: *const c_void, src_bytes: usize) -> i32 {
    status((|| {
        non_null(src)?;
        reference::validate(ty(t)?, slice::from_raw_parts(src.cast(), src_bytes))
    })())
}
