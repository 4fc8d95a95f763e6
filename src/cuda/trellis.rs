//! Launches of the trellis encoder and decoder (kernels/trellis.cu) over raw device arrays: the
//! GPU side of [`crate::trellis`], for its tests and for measuring a trellis set_rows before a
//! format is frozen (no ggml type uses these yet).

use cudarc::driver::sys;

use super::module::function;
use super::ops::kernel_name;
use super::{check, launch, unsupported, CudaError, Stream};
use crate::trellis::{Start, Trellis, MAD_STD};

/// The (L, k) pairs kernels/trellis.cu instantiates.
pub const SHAPES: &[(u32, u32)] = &[(8, 3), (9, 3), (10, 3), (12, 3), (10, 4), (12, 4)];

/// `tbq_trellis_shape` (kernels/trellis.cu): what the encoder and decoder both need.
#[repr(C)]
struct Shape {
    n_blocks: i64,
    b: i32,
    n_words: i32,
    tail_biting: i32,
    code_mul: f32,
}

/// `tbq_trellis_params` (kernels/trellis.cu).
#[repr(C)]
struct EncodeParams {
    y: u64,
    words: u64,
    d: u64,
    cost: u64,
    shape: Shape,
}

/// `tbq_trellis_decode_params` (kernels/trellis.cu).
#[repr(C)]
struct DecodeParams {
    words: u64,
    d: u64,
    out: u64,
    shape: Shape,
}

/// Checks a launch of `n_blocks` blocks of `b` values; `None` when there is nothing to do.
fn shape(t: &Trellis, start: Start, b: usize, n_blocks: usize) -> Result<Option<Shape>, CudaError> {
    check_shape(t, b, start)?;
    Ok((n_blocks > 0).then(|| Shape {
        n_blocks: n_blocks as i64,
        b: b as i32,
        n_words: t.stream_words(b, start) as i32,
        tail_biting: (start == Start::TailBiting) as i32,
        code_mul: t.code_scale / MAD_STD,
    }))
}

fn check_shape(t: &Trellis, b: usize, start: Start) -> Result<(), CudaError> {
    if !SHAPES.contains(&(t.l, t.k)) {
        return unsupported(format!(
            "trellis L = {}, k = {}: kernels exist for {SHAPES:?}",
            t.l, t.k
        ));
    }
    if b < 2 || b > 256 || b % 2 != 0 {
        return unsupported(format!("trellis block of {b} values (even, 2..256)"));
    }
    if start == Start::TailBiting && (b * t.k as usize) % 32 != 0 {
        return unsupported(format!(
            "tail-biting trellis: b·k = {} is not a whole number of words",
            b * t.k as usize
        ));
    }
    Ok(())
}

fn name(what: &str, t: &Trellis) -> &'static str {
    kernel_name(&[what, &format!("L{}", t.l), &format!("K{}", t.k)])
}

/// Dynamic shared memory of one encoder thread block (mirrors `tr_encode`'s layout).
pub fn encode_smem_bytes(t: &Trellis, b: usize, start: Start) -> usize {
    let (s, g) = (t.states(), 1usize << (t.l - t.k));
    let n_words = t.stream_words(b, start);
    8 * s + 4 * ((b + 1) & !1) + 8 * 32 + 4 * ((n_words + 1) & !1) + 2 * ((b + 3) & !3) + b * g
}

/// Encodes `n_blocks` blocks of `b` f32 values at `y` into streams at `words`
/// ([`Trellis::stream_words`] each), scales at `d` and, unless 0, path costs (of `y / rms`) at
/// `cost`: [`Trellis::quantize`] on the GPU, up to near-ties of the f32 path costs. One thread
/// block of 2^(L−k) threads per block of values. Asynchronous on `stream`.
///
/// # Safety
/// The pointers must be device memory of the current context of the sizes above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encode(
    t: &Trellis,
    start: Start,
    b: usize,
    n_blocks: usize,
    y: u64,
    words: u64,
    d: u64,
    cost: u64,
    stream: Stream,
) -> Result<(), CudaError> {
    let Some(shape) = shape(t, start, b, n_blocks)? else {
        return Ok(());
    };
    let f = function(name("k_tbq_trellis_encode", t))?;
    let smem = encode_smem_bytes(t, b, start) as i32;
    check(
        "cuFuncSetAttribute",
        sys::cuFuncSetAttribute(
            f,
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem,
        ),
    )?;
    let p = EncodeParams {
        y,
        words,
        d,
        cost,
        shape,
    };
    let grid = (n_blocks.min(1 << 20) as u32, 1, 1);
    launch(f, grid, 1 << (t.l - t.k), smem as u32, stream, &p)
}

/// Decodes `n_blocks` streams (and scales) into f32 values at `out`: [`Trellis::dequantize`] on
/// the GPU (bit-exact). One thread per value. Asynchronous on `stream`.
///
/// # Safety
/// As [`encode`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn decode(
    t: &Trellis,
    start: Start,
    b: usize,
    n_blocks: usize,
    words: u64,
    d: u64,
    out: u64,
    stream: Stream,
) -> Result<(), CudaError> {
    let Some(shape) = shape(t, start, b, n_blocks)? else {
        return Ok(());
    };
    let f = function(name("k_tbq_trellis_decode", t))?;
    let p = DecodeParams {
        words,
        d,
        out,
        shape,
    };
    let grid = ((n_blocks * b).div_ceil(256).min(1 << 20) as u32, 1, 1);
    launch(f, grid, 256, 0, stream, &p)
}

// The parameter structs match kernels/trellis.cu's: 8-byte pointers, then the shape (24 bytes).
const _: () = assert!(std::mem::size_of::<Shape>() == 24);
const _: () = assert!(std::mem::size_of::<EncodeParams>() == 56);
const _: () = assert!(std::mem::size_of::<DecodeParams>() == 48);
