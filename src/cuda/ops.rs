//! SET_ROWS / CPY (quantize f32 or f16 rows into tbq blocks) and GET_ROWS / dequantize (tbq
//! blocks to f32 or f16). Launch configuration: one warp per block (128 or 64 elements), 8 warps per
//! thread block, a grid-stride loop over all blocks (grid capped at 2^20 thread blocks).

use cudarc::driver::sys;

use super::module::function;
use super::{dtype, launch, unsupported, CudaError, Stream, Tensor};
use crate::BLOCK_ELEMS;

/// `tbq_set_rows_params` (kernels/set-rows.cuh).
#[repr(C)]
struct SetRowsParams {
    src: u64,
    idx: u64,
    dst: u64,
    ne00: i64,
    ne01: i64,
    ne02: i64,
    ne03: i64,
    nb01: i64,
    nb02: i64,
    nb03: i64,
    ne11: i64,
    ne12: i64,
    nb10: i64,
    nb11: i64,
    nb12: i64,
    ne1: i64,
    nb1: i64,
    nb2: i64,
    nb3: i64,
}

/// `tbq_get_rows_params` (kernels/get-rows.cuh).
#[repr(C)]
struct GetRowsParams {
    src: u64,
    idx: u64,
    dst: u64,
    ne00: i64,
    ne01: i64,
    nb01: i64,
    nb02: i64,
    nb03: i64,
    ne10: i64,
    ne11: i64,
    ne12: i64,
    nb10: i64,
    nb11: i64,
    nb12: i64,
    nb1: i64,
    nb2: i64,
    nb3: i64,
}

const WARPS: i64 = 8;
/// set_rows calls of at most this many blocks get a thread block per warp (see [`set_rows`]).
const SET_ROWS_SPREAD_BLOCKS: i64 = 1024;

fn tbq_name(t: i32) -> Option<&'static str> {
    crate::TbqType::from_abi(t).map(|t| t.spec().name)
}

fn grid(blocks: i64) -> u32 {
    (cdiv(blocks, WARPS)).clamp(1, 1 << 20) as u32
}

/// Checks the shape of a row copy of the tbq type `tbq` (ABI value); returns its block width.
fn check_shape(t: &Tensor, tbq: i32, what: &str) -> Result<i64, CudaError> {
    if t.ne.iter().any(|&n| n < 0) {
        return unsupported(format!("{what}: negative dimension {:?}", t.ne));
    }
    let block = crate::TbqType::from_abi(tbq).map_or(BLOCK_ELEMS, |t| t.block_elems()) as i64;
    if t.ne[0] % block != 0 || t.ne[0] == 0 {
        return unsupported(format!(
            "{what}: ne[0] = {} is not a positive multiple of {block} (the type's block)",
            t.ne[0]
        ));
    }
    Ok(block)
}

/// Both tensors of a row copy must be present.
fn require_present(src: &Tensor, dst: &Tensor) -> Result<(), CudaError> {
    if !src.present() {
        return Err(CudaError::Null("src"));
    }
    if !dst.present() {
        return Err(CudaError::Null("dst"));
    }
    Ok(())
}

/// The kernel-name suffix and element size of the float side of a row copy (f32 or f16).
fn float_type(t: i32) -> Option<(&'static str, usize)> {
    match t {
        dtype::F32 => Some(("f32", 4)),
        dtype::F16 => Some(("f16", 2)),
        _ => None,
    }
}

/// ggml SET_ROWS: quantizes the f32/f16 rows of `src` into the tbq tensor `dst`, scattered by
/// `idx` (i64 or i32, `[ne01, ne11, ne12]`, broadcast over src dims 2 and 3 as ggml does);
/// `idx = None` copies row `i` to row `i` (CPY). Bit-identical to `reference::quantize_row`.
/// Asynchronous on `stream`; an index outside `[0, dst.ne[1])` writes nothing.
///
/// # Safety
/// The tensors must describe valid device memory of the current context, and `stream` a stream
/// of it (or null).
pub unsafe fn set_rows(
    src: &Tensor,
    idx: Option<&Tensor>,
    dst: &Tensor,
    stream: Stream,
) -> Result<(), CudaError> {
    require_present(src, dst)?;
    let Some(tn) = tbq_name(dst.type_) else {
        return unsupported(format!(
            "set_rows: dst type {} is not a tbq type",
            dst.type_
        ));
    };
    let Some((sn, esz)) = float_type(src.type_) else {
        return unsupported(format!("set_rows: src type {} (only f32, f16)", src.type_));
    };
    let block = check_shape(src, dst.type_, "set_rows src")?;
    if src.nb[0] != esz {
        return unsupported("set_rows: src rows must be contiguous");
    }
    if dst.ne[0] != src.ne[0] || dst.ne[2] != src.ne[2] || dst.ne[3] != src.ne[3] {
        return unsupported(format!(
            "set_rows: shapes differ: src {:?}, dst {:?}",
            src.ne, dst.ne
        ));
    }
    let (iname, ip, ine, inb) = match idx {
        Some(i) if i.present() => {
            let n = match i.type_ {
                dtype::I64 => "i64",
                dtype::I32 => "i32",
                t => return unsupported(format!("set_rows: index type {t} (only i32, i64)")),
            };
            if i.ne[0] != src.ne[1]
                || i.ne[1] <= 0
                || i.ne[2] <= 0
                || src.ne[2] % i.ne[1] != 0
                || src.ne[3] % i.ne[2] != 0
            {
                return unsupported(format!(
                    "set_rows: index shape {:?} does not fit src {:?}",
                    i.ne, src.ne
                ));
            }
            (n, i.ptr(), [i.ne[1], i.ne[2]], [i.nb[0], i.nb[1], i.nb[2]])
        }
        _ => {
            if dst.ne[1] < src.ne[1] {
                return unsupported("set_rows without index: dst has fewer rows than src");
            }
            ("i64", 0, [1, 1], [0, 0, 0])
        }
    };
    let p = SetRowsParams {
        src: src.ptr(),
        idx: ip,
        dst: dst.ptr(),
        ne00: src.ne[0],
        ne01: src.ne[1],
        ne02: src.ne[2],
        ne03: src.ne[3],
        nb01: src.nb[1] as i64,
        nb02: src.nb[2] as i64,
        nb03: src.nb[3] as i64,
        ne11: ine[0],
        ne12: ine[1],
        nb10: inb[0] as i64,
        nb11: inb[1] as i64,
        nb12: inb[2] as i64,
        ne1: dst.ne[1],
        nb1: dst.nb[1] as i64,
        nb2: dst.nb[2] as i64,
        nb3: dst.nb[3] as i64,
    };
    let blocks = src.ne[0] / block * src.ne[1] * src.ne[2] * src.ne[3];
    if blocks == 0 {
        return Ok(());
    }
    let name = kernel_name(&["k_tbq_set_rows", tn, sn, iname]);
    let f = function(name)?;
    // A decode step writes a few blocks per layer (one per KV head and block): one warp
    // per thread block spreads them over as many SMs. Eight to a thread block put them all on one
    // SM, two warps per scheduler, and the call took the time of all of them in a row.
    let warps = if blocks <= SET_ROWS_SPREAD_BLOCKS {
        1
    } else {
        WARPS
    };
    let grid = cdiv(blocks, warps).clamp(1, 1 << 20) as u32;
    launch(f, (grid, 1, 1), (warps * 32) as u32, 0, stream, &p)
}

/// ggml GET_ROWS: dequantizes the rows `idx` (i32 `[ne10, ne11, ne12]`) of the tbq tensor `src`
/// into `dst` (f32 or f16, `[ne00, ne10, ne11, ne12]`); `idx = None` dequantizes every row of
/// `src` (strides honoured) into `dst` of the same shape. Equal to `reference::dequantize_row`
/// (f32), or its round-to-nearest-even f16. Asynchronous on `stream`.
///
/// # Safety
/// As [`set_rows`].
pub unsafe fn get_rows(
    src: &Tensor,
    idx: Option<&Tensor>,
    dst: &Tensor,
    stream: Stream,
) -> Result<(), CudaError> {
    require_present(src, dst)?;
    let Some(tn) = tbq_name(src.type_) else {
        return unsupported(format!(
            "get_rows: src type {} is not a tbq type",
            src.type_
        ));
    };
    let Some((dn, esz)) = float_type(dst.type_) else {
        return unsupported(format!("get_rows: dst type {} (only f32, f16)", dst.type_));
    };
    let block = check_shape(src, src.type_, "get_rows src")?;
    if dst.nb[0] != esz || dst.ne[0] != src.ne[0] {
        return unsupported("get_rows: dst rows must be contiguous and as long as src rows");
    }
    let (ip, ne, inb) = match idx {
        Some(i) if i.present() => {
            if i.type_ != dtype::I32 {
                return unsupported("get_rows: index type must be i32");
            }
            if dst.ne[1] != i.ne[0]
                || dst.ne[2] != i.ne[1]
                || dst.ne[3] != i.ne[2]
                || i.ne[1] != src.ne[2]
                || i.ne[2] != src.ne[3]
            {
                return unsupported(format!(
                    "get_rows: index {:?}, src {:?}, dst {:?} do not fit",
                    i.ne, src.ne, dst.ne
                ));
            }
            (
                i.ptr(),
                [i.ne[0], i.ne[1], i.ne[2]],
                [i.nb[0], i.nb[1], i.nb[2]],
            )
        }
        _ => {
            if dst.ne[1] != src.ne[1] || dst.ne[2] != src.ne[2] || dst.ne[3] != src.ne[3] {
                return unsupported(format!(
                    "dequantize: shapes differ: src {:?}, dst {:?}",
                    src.ne, dst.ne
                ));
            }
            (0, [src.ne[1], src.ne[2], src.ne[3]], [0, 0, 0])
        }
    };
    let p = GetRowsParams {
        src: src.ptr(),
        idx: ip,
        dst: dst.ptr(),
        ne00: src.ne[0],
        ne01: src.ne[1],
        nb01: src.nb[1] as i64,
        nb02: src.nb[2] as i64,
        nb03: src.nb[3] as i64,
        ne10: ne[0],
        ne11: ne[1],
        ne12: ne[2],
        nb10: inb[0] as i64,
        nb11: inb[1] as i64,
        nb12: inb[2] as i64,
        nb1: dst.nb[1] as i64,
        nb2: dst.nb[2] as i64,
        nb3: dst.nb[3] as i64,
    };
    let blocks = src.ne[0] / block * ne[0] * ne[1] * ne[2];
    if blocks == 0 {
        return Ok(());
    }
    let name = kernel_name(&["k_tbq_get_rows", tn, dn]);
    let f = function(name)?;
    launch(f, (grid(blocks), 1, 1), (WARPS * 32) as u32, 0, stream, &p)
}

/// Interns a kernel name (a handful of distinct names; cached forever).
pub(crate) fn kernel_name(parts: &[&str]) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let s = parts.join("_");
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = set.get(s.as_str()) {
        return n;
    }
    let n: &'static str = Box::leak(s.into_boxed_str());
    set.insert(n);
    n
}

#[allow(dead_code)]
fn _assert_sizes() {
    // The parameter structs are plain 8-byte fields: C and Rust agree on their layout.
    const _: () = assert!(std::mem::size_of::<SetRowsParams>() == 19 * 8);
    const _: () = assert!(std::mem::size_of::<GetRowsParams>() == 17 * 8);
    let _ = sys::CUresult::CUDA_SUCCESS;
}

/// ceil(a / b) for positive i64.
pub(crate) fn cdiv(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}
