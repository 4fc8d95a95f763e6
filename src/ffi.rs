//! The C ABI of `ffi/include/tbq.h`, exported by `libtbq.a`.
//!
//! Every function checks its pointers and lengths, maps them onto the safe [`crate::cpu`]
//! functions (the reference's operations, with SIMD where the machine has it) and returns a `tbq_status` (0, or the negative code of an [`Error`]). Nothing here
//! panics on any input, and nothing is written when a call fails.

use std::ffi::{c_char, c_void, CStr};
use std::slice;

use half::f16;

use crate::error::Error;
use crate::format::TbqType;
use crate::{cpu, reference};

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

/// A row length from C: a positive multiple of `block` (a type's block, or a rotation width).
fn len(n: i64, block: usize) -> Result<usize, Error> {
    let n_usize = usize::try_from(n).map_err(|_| Error::Length { n, block })?;
    reference::check_len(n_usize, block)?;
    Ok(n_usize)
}

/// A type and a row length of it from C.
fn ty_len(t: i32, n: i64) -> Result<(TbqType, usize), Error> {
    let t = ty(t)?;
    Ok((t, len(n, t.block_elems())?))
}

/// A rotation width from C (128 or 64).
fn width(block: i32) -> Result<usize, Error> {
    let b = usize::try_from(block).map_err(|_| Error::BlockWidth { block: 0 })?;
    reference::check_block_width(b)?;
    Ok(b)
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
        -2 => c"n is not a positive multiple of the type's block (128, or 64 for a _64 type), or the block width is not 128 or 64",
        -3 => c"buffer too short for the row",
        -4 => c"not a tbq type",
        -5 => c"a block's norm is NaN or infinite",
        -6 => c"a CUDA driver call failed (tbq_cuda_last_error says which)",
        -7 => c"not supported by this build or for these types and shapes",
        -8 => c"no CUDA driver, device or current context",
        _ => c"unknown status",
    };
    s.as_ptr()
}

#[no_mangle]
pub extern "C" fn tbq_type_size(t: i32) -> usize {
    TbqType::from_abi(t).map_or(0, TbqType::block_bytes)
}

#[no_mangle]
pub extern "C" fn tbq_type_block_elems(t: i32) -> usize {
    TbqType::from_abi(t).map_or(0, TbqType::block_elems)
}

#[no_mangle]
pub extern "C" fn tbq_type_name(t: i32) -> *const c_char {
    match TbqType::from_abi(t) {
        // C strings of TypeSpec::name (the match is exhaustive: a new type must be named here).
        Some(TbqType::Tbq4_0) => c"tbq4_0".as_ptr(),
        Some(TbqType::Tbq3_0) => c"tbq3_0".as_ptr(),
        Some(TbqType::Tbq5_0) => c"tbq5_0".as_ptr(),
        Some(TbqType::Tbq6_0) => c"tbq6_0".as_ptr(),
        Some(TbqType::Tbq3_1) => c"tbq3_1".as_ptr(),
        Some(TbqType::Tbq4_1) => c"tbq4_1".as_ptr(),
        Some(TbqType::Tbq5_1) => c"tbq5_1".as_ptr(),
        Some(TbqType::Tbq4_0_64) => c"tbq4_0_64".as_ptr(),
        Some(TbqType::Tbq3_0_64) => c"tbq3_0_64".as_ptr(),
        Some(TbqType::Tbq5_0_64) => c"tbq5_0_64".as_ptr(),
        Some(TbqType::Tbq6_0_64) => c"tbq6_0_64".as_ptr(),
        Some(TbqType::Tbq3_1_64) => c"tbq3_1_64".as_ptr(),
        Some(TbqType::Tbq4_1_64) => c"tbq4_1_64".as_ptr(),
        Some(TbqType::Tbq5_1_64) => c"tbq5_1_64".as_ptr(),
        Some(TbqType::Tbq3_1_64c) => c"tbq3_1_64c".as_ptr(),
        Some(TbqType::Tbq4_1_64c) => c"tbq4_1_64c".as_ptr(),
        Some(TbqType::Tbq5_1_64c) => c"tbq5_1_64c".as_ptr(),
        None => std::ptr::null(),
    }
}

/// # Safety
/// `out_bytes` is NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_row_size(t: i32, n: i64, out_bytes: *mut usize) -> i32 {
    status((|| {
        non_null(out_bytes)?;
        let (t, n) = ty_len(t, n)?;
        let bytes = t.row_bytes(n);
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
        let (t, n) = ty_len(t, n)?;
        let need = row_bytes(t, n, dst_bytes)?;
        cpu::quantize_row(
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
        let (t, n) = ty_len(t, n)?;
        let need = row_bytes(t, n, dst_bytes)?;
        let src = slice::from_raw_parts(src.cast::<f16>(), n);
        let dst = slice::from_raw_parts_mut(dst.cast(), need);
        if cpu::sim::active(t).is_some() {
            let x: Vec<f32> = src.iter().map(|v| v.to_f32()).collect();
            return cpu::quantize_row(t, &x, dst);
        }
        reference::quantize_row_f16(t, src, dst)
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
        let (t, n) = ty_len(t, n)?;
        let need = row_bytes(t, n, src_bytes)?;
        cpu::dequantize_row(
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
        let (t, n) = ty_len(t, n)?;
        let need = row_bytes(t, n, src_bytes)?;
        let src = slice::from_raw_parts(src.cast(), need);
        let dst = slice::from_raw_parts_mut(dst.cast::<f16>(), n);
        if cpu::sim::active(t).is_some() {
            let mut x = vec![0f32; n];
            cpu::dequantize_row(t, src, &mut x)?;
            dst.iter_mut()
                .zip(x)
                .for_each(|(d, v)| *d = f16::from_f32(v));
            return Ok(());
        }
        reference::dequantize_row_f16(t, src, dst)
    })())
}

/// Copies `src` to `dst` (unless they are the same buffer), then applies `f` to `dst` in place,
/// so `src` may equal `dst`.
unsafe fn in_place(
    src: *const f32,
    dst: *mut f32,
    n: i64,
    block: i32,
    f: fn(&mut [f32], usize) -> Result<(), Error>,
) -> i32 {
    status((|| {
        non_null(src)?;
        non_null(dst)?;
        let block = width(block)?;
        let n = len(n, block)?;
        if !std::ptr::eq(src, dst) {
            std::ptr::copy(src, dst, n);
        }
        f(slice::from_raw_parts_mut(dst, n), block)
    })())
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `n` writes (may equal `src`).
#[no_mangle]
pub unsafe extern "C" fn tbq_rotate_f32(src: *const f32, dst: *mut f32, n: i64, block: i32) -> i32 {
    in_place(src, dst, n, block, cpu::rotate_in_place)
}

/// # Safety
/// `src` is NULL or valid for `n` reads; `dst` is NULL or valid for `n` writes (may equal `src`).
#[no_mangle]
pub unsafe extern "C" fn tbq_unrotate_f32(
    src: *const f32,
    dst: *mut f32,
    n: i64,
    block: i32,
) -> i32 {
    in_place(src, dst, n, block, cpu::unrotate_in_place)
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
        let (t, n) = ty_len(t, n)?;
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
    dot(t, x, x_bytes, q_rot, n, out, cpu::vec_dot_rotated)
}

/// # Safety
/// `x` is NULL or valid for `x_bytes` reads; `acc` NULL or valid for `n` reads and writes.
#[no_mangle]
pub unsafe extern "C" fn tbq_mad_rotated(
    t: i32,
    x: *const c_void,
    x_bytes: usize,
    scale: f32,
    acc: *mut f32,
    n: i64,
) -> i32 {
    status((|| {
        non_null(x)?;
        non_null(acc)?;
        let (t, n) = ty_len(t, n)?;
        let need = row_bytes(t, n, x_bytes)?;
        cpu::mad_rotated(
            t,
            slice::from_raw_parts(x.cast(), need),
            scale,
            slice::from_raw_parts_mut(acc, n),
        )
    })())
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
    dot(t, x, x_bytes, q, n, out, cpu::vec_dot)
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

// ---- CUDA (tbq.h "CUDA" section) --------------------------------------------------------------
//
// Always exported, so the header is one contract: built without the `cuda` feature every
// function returns TBQ_ERR_UNSUPPORTED (tbq_cuda_available returns 0).

/// `tbq_cuda_tensor`: a device tensor as ggml describes it. `data` is a device pointer (null:
/// absent, for optional operands); `type_` a `tbq_type` (0, 1) or a `tbq_dtype` (100..);
/// `ne` elements per dimension; `nb` byte strides (`nb[0]`: one element, or one block).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TbqCudaTensor {
    /// Device pointer to element (0, 0, 0, 0); null: absent.
    pub data: *mut c_void,
    /// A `tbq_type` or `tbq_dtype` value.
    pub type_: i32,
    /// Elements per dimension, ggml order (`ne[0]` innermost).
    pub ne: [i64; 4],
    /// Byte strides per dimension.
    pub nb: [usize; 4],
}

/// `tbq_fattn_args`: ggml FLASH_ATTN_EXT's operands and parameters (see tbq.h).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TbqFattnArgs {
    /// Queries, f32 `[D, n_q, n_head, n_seq]`.
    pub q: TbqCudaTensor,
    /// Keys `[D, n_kv, n_head_kv, n_seq_kv]`: any tbq type, f16 or q8_0.
    pub k: TbqCudaTensor,
    /// Values `[D, n_kv, n_head_kv, n_seq_kv]`: tbq4_0, tbq3_0, tbq3_1 or tbq4_1 with tbq keys,
    /// tbq4_0 or tbq3_0 with f16 / q8_0 keys.
    pub v: TbqCudaTensor,
    /// f16 mask `[>= n_kv, >= n_q, ne2, ne3]` or absent.
    pub mask: TbqCudaTensor,
    /// f32 sinks `[n_head]` or absent.
    pub sinks: TbqCudaTensor,
    /// Output f32 `[D, n_head, n_q, n_seq]`, contiguous.
    pub dst: TbqCudaTensor,
    /// f16 `[D, n_exact, n_head_kv, n_seq_kv]` (rows contiguous) or absent: exact copies of the
    /// first keys, read instead of K's quantized rows `t < min(n_exact, n_kv)` (tbq keys only).
    pub exact_k: TbqCudaTensor,
    /// KQ scale.
    pub scale: f32,
    /// ALiBi maximum bias (0: off).
    pub max_bias: f32,
    /// Logit soft-capping (0: off).
    pub logit_softcap: f32,
    /// Must be 0.
    pub reserved: i32,
}

#[cfg(not(feature = "cuda"))]
const TBQ_ERR_UNSUPPORTED: i32 = -7;

#[cfg(feature = "cuda")]
mod cuda_abi {
    use super::*;
    use crate::cuda::{self, CudaError};

    pub(super) fn run(f: impl FnOnce() -> Result<(), CudaError>) -> i32 {
        match f() {
            Ok(()) => TBQ_OK,
            Err(e) => cuda::record(&e),
        }
    }

    pub(super) unsafe fn opt<'a>(p: *const TbqCudaTensor) -> Option<&'a TbqCudaTensor> {
        p.as_ref().filter(|t| t.present())
    }

    pub(super) unsafe fn req<'a, T>(p: *const T, what: &'static str) -> Result<&'a T, CudaError> {
        p.as_ref().ok_or(CudaError::Null(what))
    }
}

/// 1 when built with CUDA and a driver with at least one device is present, else 0.
#[no_mangle]
pub extern "C" fn tbq_cuda_available() -> i32 {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::available() as i32
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// This thread's last CUDA error message ("" when none).
#[no_mangle]
pub extern "C" fn tbq_cuda_last_error() -> *const c_char {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::last_error()
    }
    #[cfg(not(feature = "cuda"))]
    {
        c"tbq was built without the cuda feature".as_ptr()
    }
}

/// # Safety
/// Tensor pointers are NULL or valid for one read; the tensors describe device memory of the
/// current context; `stream` is a stream of it or NULL.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_set_rows(
    src: *const TbqCudaTensor,
    idx: *const TbqCudaTensor,
    dst: *const TbqCudaTensor,
    stream: *mut c_void,
) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| {
            let (s, d) = (cuda_abi::req(src, "src")?, cuda_abi::req(dst, "dst")?);
            crate::cuda::set_rows(s, cuda_abi::opt(idx), d, stream.cast())
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (src, idx, dst, stream);
        TBQ_ERR_UNSUPPORTED
    }
}

/// # Safety
/// As [`tbq_cuda_set_rows`].
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_get_rows(
    src: *const TbqCudaTensor,
    idx: *const TbqCudaTensor,
    dst: *const TbqCudaTensor,
    stream: *mut c_void,
) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| {
            let (s, d) = (cuda_abi::req(src, "src")?, cuda_abi::req(dst, "dst")?);
            crate::cuda::get_rows(s, cuda_abi::opt(idx), d, stream.cast())
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (src, idx, dst, stream);
        TBQ_ERR_UNSUPPORTED
    }
}

/// # Safety
/// `args` NULL or valid for one read; `reason` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_fattn_supported(
    args: *const TbqFattnArgs,
    reason: *mut *const c_char,
) -> i32 {
    #[cfg(feature = "cuda")]
    let st = cuda_abi::run(|| crate::cuda::fattn_supported(cuda_abi::req(args, "args")?));
    #[cfg(not(feature = "cuda"))]
    let st = {
        let _ = args;
        TBQ_ERR_UNSUPPORTED
    };
    if !reason.is_null() {
        *reason = if st == TBQ_OK {
            c"".as_ptr()
        } else {
            tbq_cuda_last_error()
        };
    }
    st
}

/// # Safety
/// `args` NULL or valid for one read; `out_bytes` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_fattn_scratch_bytes(
    args: *const TbqFattnArgs,
    out_bytes: *mut usize,
) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| {
            let a = cuda_abi::req(args, "args")?;
            if out_bytes.is_null() {
                return Err(crate::cuda::CudaError::Null("out_bytes"));
            }
            *out_bytes = crate::cuda::fattn_scratch_bytes(a)?;
            Ok(())
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (args, out_bytes);
        TBQ_ERR_UNSUPPORTED
    }
}

/// # Safety
/// `args` NULL or valid for one read, its tensors valid device memory of the current context;
/// `scratch` NULL or device memory of `scratch_bytes` bytes; `stream` a stream of the context.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_flash_attn_ext(
    args: *const TbqFattnArgs,
    scratch: *mut c_void,
    scratch_bytes: usize,
    stream: *mut c_void,
) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| {
            let a = cuda_abi::req(args, "args")?;
            let s = (!scratch.is_null()).then_some((scratch as u64, scratch_bytes));
            crate::cuda::flash_attn_ext(a, s, stream.cast())
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (args, scratch, scratch_bytes, stream);
        TBQ_ERR_UNSUPPORTED
    }
}

/// Sparse-V threshold for later launches (0: off, the default). Errors: UNSUPPORTED.
#[no_mangle]
pub extern "C" fn tbq_cuda_set_sparse_v(threshold: f32) -> i32 {
    #[cfg(feature = "cuda")]
    {
        crate::cuda::set_sparse_v(threshold);
        TBQ_OK
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = threshold;
        TBQ_ERR_UNSUPPORTED
    }
}

/// # Safety
/// `out` NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_unified_memory(device: i32, out: *mut i32) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| {
            if out.is_null() {
                return Err(crate::cuda::CudaError::Null("out"));
            }
            *out = crate::cuda::unified_memory(device)? as i32;
            Ok(())
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (device, out);
        TBQ_ERR_UNSUPPORTED
    }
}

/// -1: detect; 0: force off; 1: force on. Errors: LENGTH (another value), UNSUPPORTED.
#[no_mangle]
pub extern "C" fn tbq_cuda_force_unified(mode: i32) -> i32 {
    #[cfg(feature = "cuda")]
    {
        match mode {
            -1 => crate::cuda::force_unified(None),
            0 => crate::cuda::force_unified(Some(false)),
            1 => crate::cuda::force_unified(Some(true)),
            _ => return -2,
        }
        TBQ_OK
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = mode;
        TBQ_ERR_UNSUPPORTED
    }
}

/// # Safety
/// `stream` a stream of the current context, or NULL.
#[no_mangle]
pub unsafe extern "C" fn tbq_cuda_pool_release(stream: *mut c_void) -> i32 {
    #[cfg(feature = "cuda")]
    {
        cuda_abi::run(|| crate::cuda::pool::release(stream.cast()))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = stream;
        TBQ_ERR_UNSUPPORTED
    }
}
