//! Flash-attention decode (ggml FLASH_ATTN_EXT with few query rows) on tbq caches.
//!
//! Launch configuration (kernels/fattn.cu): a thread block of 4 warps serves one KV head, one
//! split of the tokens and one group of R ≤ 8 rows (the query heads sharing that KV head times
//! the query positions): every K/V block is read once for all of them. Grid: (n_head_kv,
//! n_splits, n_seq · n_row_groups).
//!
//! tbq K with tbq V uses the tensor-core kernel `k_tbq_fattn_mma_*` (16-token tiles per warp,
//! mma.sync QK^T and PV, always 8 rows per block; splits of at least 128 tokens, multiples of
//! 64) at head sizes 128, 256 and 512 (128-wide types) and 64 (the 64-wide types: `_64`, `_64c`); f16 / q8_0
//! keys use the one-warp-per-token kernel below (head sizes 128 and 256).
//!
//! Split-K policy: one full wave — as many thread blocks as the GPU holds at once (SMs × the
//! kernel's resident blocks per SM, from the occupancy calculator), never more: a grid of 1.3
//! waves runs as two (measured on the H100: 512 blocks on 396 slots took 1.3× as long as 392
//! blocks of longer splits). Splits are never shorter than 256 tokens (128 for the tensor-core
//! kernel) and are multiples of the kernel's token step. With one split the kernel writes the output directly; otherwise each split writes
//! (max, sum, rotated accumulator) per row to scratch and `k_tbq_fattn_combine` merges them.
//!
//! Exact keys (`exact_k`, tbq keys only: f16 copies of the first `n_exact` keys): the tensor-core
//! kernel's tiles start after those tokens, it writes records even with one split, and
//! `k_tbq_fattn_combine_exact_*` adds them (scores from the f16 keys) while it merges. Nothing
//! changes in the tiles: a replacement of the first tile's scores cost the register-bound D 128
//! kernels spills in every tile (kernels/NOTES.md); the price is one more launch with one split.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys::{self, CUdevice_attribute as A};

use super::module::function;
use super::ops::{cdiv, kernel_name};
use super::{attribute, current, dtype, launch, pool, unsupported, CudaError, Stream, Tensor};
use crate::TbqType;

/// `tbq_fattn_args` of tbq.h (defined in [`crate::ffi`]).
pub use crate::ffi::TbqFattnArgs as FattnArgs;

/// Tuning knobs of one launch (the C ABI uses the defaults).
#[derive(Clone, Copy, Debug, Default)]
pub struct FattnOptions {
    /// Force this number of splits (clamped to what the cache length allows).
    pub splits: Option<u32>,
    /// Sparse-V threshold for this launch (default: the global [`set_sparse_v`] value).
    pub sparse_v: Option<f32>,
}

/// Query positions served (more: prefill, dequantize + upstream attention).
pub const MAX_Q: i64 = 8;
const MAX_ROWS: i64 = 8;
const WARPS: i64 = 4;
const TOKENS_PER_WARP_STEP: i64 = 4;
const MIN_SPLIT: i64 = 256;
/// Tokens per warp step of the tensor-core kernel, and its shortest split (2 tiles per warp).
const MMA_TILE: i64 = 16;
const MMA_MIN_SPLIT: i64 = 128;
/// Threads of `k_tbq_fattn_combine` (kernels/fattn.cu TBQ_COMBINE_WARPS × 32).
const COMBINE_THREADS: u32 = 256;
const MAX_SPLITS: i64 = 1024;

static SPARSE_V: AtomicU32 = AtomicU32::new(0);

/// Sparse V: skip a token's values when every row's softmax weight, relative to the running
/// maximum, is below `threshold` (0 = off, the default until measured).
pub fn set_sparse_v(threshold: f32) {
    SPARSE_V.store(threshold.max(0.0).to_bits(), Ordering::Relaxed);
}

/// `tbq_fattn_params` (kernels/fattn.cuh).
#[repr(C)]
struct Params {
    q: u64,
    k: u64,
    v: u64,
    mask: u64,
    sinks: u64,
    dst: u64,
    partial: u64,
    exact_k: u64,
    nbq: [i64; 3],
    nbk: [i64; 3],
    nbv: [i64; 3],
    nbm: [i64; 3],
    nbe: [i64; 3],
    n_q: i32,
    n_head: i32,
    n_seq: i32,
    n_kv: i32,
    n_head_kv: i32,
    n_seq_kv: i32,
    mask_ne2: i32,
    mask_ne3: i32,
    n_splits: i32,
    split_len: i32,
    n_row_groups: i32,
    n_head_log2: i32,
    n_exact: i32,
    scale: f32,
    max_bias: f32,
    softcap: f32,
    m0: f32,
    m1: f32,
    sparse_v: f32,
}

// 19 four-byte fields and the 4 bytes of padding that round the struct to 8 (the C struct's too).
const _: () = assert!(std::mem::size_of::<Params>() == 8 * 8 + 15 * 8 + 19 * 4 + 4);

/// Head sizes the tensor-core kernel serves: 64 with the `_64` types (one 64-wide block a head),
/// 128, 256 and 512 with the 128-wide ones. The per-token kernel: 128 and 256.
const MMA_HEAD_SIZES: [i64; 4] = [64, 128, 256, 512];
const TOKEN_HEAD_SIZES: [i64; 2] = [128, 256];

/// The tbq type of ABI value `t` whose blocks fit heads of `d` (`_64` types at 64, 128-wide ones
/// above): the kernels hold whole blocks of one width.
fn tbq_for(t: i32, d: i64) -> Option<TbqType> {
    let want = if d == 64 {
        crate::format::NARROW_BLOCK_ELEMS
    } else {
        crate::BLOCK_ELEMS
    };
    TbqType::from_abi(t).filter(|t| t.block_elems() == want)
}

/// Keys the kernels read at head size `d`: every tbq type of the head's block width
/// (tensor-core kernel), f16 and q8_0 (per-token kernel).
fn ktype_name(t: i32, d: i64) -> Option<&'static str> {
    match t {
        dtype::F16 => Some("f16"),
        dtype::Q8_0 => Some("q8_0"),
        _ => tbq_for(t, d).map(|t| t.spec().name),
    }
}

/// Values the tensor-core kernel pairs with every tbq key type (kernels/fattn.cu,
/// TBQ_FATTN_MMA_K); the per-token kernel (f16 / q8_0 keys) takes the first two only.
const MMA_V_TYPES: [TbqType; 4] = [
    TbqType::Tbq4_0,
    TbqType::Tbq3_0,
    TbqType::Tbq3_1,
    TbqType::Tbq4_1,
];
const TOKEN_V_TYPES: [TbqType; 2] = [TbqType::Tbq4_0, TbqType::Tbq3_0];

/// Values of type `t` at head size `d` with tensor-core (`mma`) or per-token keys: the types
/// above, or at `d` = 64 their 64-wide variants (the sub-scaled ones with either header: tbq3_1_64
/// and tbq3_1_64c, …; every 64-wide key type has a kernel with each).
fn vtype_name(t: i32, d: i64, mma: bool) -> Option<&'static str> {
    let allowed: &[TbqType] = if mma { &MMA_V_TYPES } else { &TOKEN_V_TYPES };
    tbq_for(t, d)
        .filter(|t| allowed.contains(&t.wide()))
        .map(|t| t.spec().name)
}

/// Whether keys of type `t` take the tensor-core kernel (tbq keys) or the per-token one.
fn is_mma(t: i32) -> bool {
    TbqType::from_abi(t).is_some()
}

/// Words of shared memory of the tensor-core kernel's tables (tbq_mma_smem in kernels/fattn.cu).
/// K tables of ≤ 256 entries (tbq3, tbq4 keys) are interleaved with the V table: 64 words per
/// entry of the larger of the two (32 K replicas, 32 V replicas). Larger K tables (tbq5: 1024
/// entries, tbq6: 4096) are replicated so that they stay at 32 KB, then the V table follows with
/// 32 replicas. A sub-scaled K or V adds 256 gain pairs, a compact-header one the 8 scale
/// mantissas.
fn mma_table_words(k: TbqType, v: TbqType) -> i64 {
    let entries = |t: TbqType| 1i64 << (2 * t.spec().bits);
    let tables = if entries(k) <= 256 {
        64 * entries(k).max(entries(v))
    } else {
        8192 + 32 * entries(v)
    };
    let gains = if k.spec().sub_scales || v.spec().sub_scales {
        256
    } else {
        0
    };
    let mantissas = if k.spec().compact || v.spec().compact {
        8
    } else {
        0
    };
    tables + gains + mantissas
}

/// Whether the tensor-core kernel stages this pair's tiles through shared memory
/// (tbq_mma_staged in kernels/fattn.cu): at D 128 pairs with gains or 5- and 6-bit keys, at D 256
/// pairs with gained values, at D 512 every pair, at D 64 (the `_64` types) none.
fn mma_staged(k: TbqType, v: TbqType, d: i64) -> bool {
    let (ks, vs) = (k.spec(), v.spec());
    if k.block_elems() != crate::BLOCK_ELEMS {
        return false;
    }
    match d / k.block_elems() as i64 {
        1 => ks.sub_scales || vs.sub_scales || ks.bits >= 5,
        2 => vs.sub_scales,
        _ => true,
    }
}

/// Words of shared memory of one warp's K and V staging areas in the tensor-core kernel
/// (tbq_mma_stage in kernels/fattn.cu): 16 tokens each of a head's span, as the 16-byte chunks
/// that cover its bytes from a 2-byte-aligned address; 0 for a pair that loads directly.
fn mma_stage_words(k: TbqType, v: TbqType, d: i64) -> i64 {
    if !mma_staged(k, v, d) {
        return 0;
    }
    let blocks = d / k.block_elems() as i64;
    let stride = |block_bytes: usize| 4 * ((blocks * block_bytes as i64 + 14 + 15) / 16);
    MMA_TILE * (stride(k.spec().block_bytes()) + stride(v.spec().block_bytes()))
}

/// Words of shared memory of the query's B fragments at D 512 (QF_WORDS in kernels/fattn.cu: a
/// uint4 per block, k-step and lane), 0 where they stay in registers.
fn mma_q_words(d: i64) -> i64 {
    if d > 256 {
        (d / 128) * 8 * 32 * 4
    } else {
        0
    }
}

/// Why `a` cannot run on these kernels, or `Ok` when it can.
pub fn fattn_supported(a: &FattnArgs) -> Result<(), CudaError> {
    let (q, k, v, dst) = (&a.q, &a.k, &a.v, &a.dst);
    for (t, n) in [(q, "q"), (k, "k"), (v, "v"), (dst, "dst")] {
        if !t.present() {
            return Err(CudaError::Null(n));
        }
        if t.ne.iter().any(|&x| x <= 0) {
            return unsupported(format!("{n}: empty or negative shape {:?}", t.ne));
        }
    }
    let d = q.ne[0];
    let mma = is_mma(k.type_);
    let sizes: &[i64] = if mma {
        &MMA_HEAD_SIZES
    } else {
        &TOKEN_HEAD_SIZES
    };
    if !sizes.contains(&d) {
        return unsupported(format!(
            "head size {d} (tbq keys: 64 with the _64 types, 128, 256 or 512; f16 / q8_0 keys: 128 \
             or 256; other sizes run through dequantize + ggml's own kernel)"
        ));
    }
    if ktype_name(k.type_, d).is_none() {
        return unsupported(format!(
            "K type {} at head size {d} (a tbq type of {}-element blocks, f16 or q8_0)",
            k.type_,
            if d == 64 { 64 } else { 128 }
        ));
    }
    if vtype_name(v.type_, d, mma).is_none() {
        let (keys, served): (&str, &[TbqType]) = if mma {
            ("tbq", &MMA_V_TYPES)
        } else {
            ("f16 / q8_0", &TOKEN_V_TYPES)
        };
        // at D 64 every 64-wide variant of those widths (tbq3_1_64 and tbq3_1_64c, …)
        let names: Vec<&str> = TbqType::ALL
            .iter()
            .filter(|t| t.block_elems() == 64 || d != 64)
            .filter(|t| served.contains(&t.wide()) && (d == 64 || served.contains(t)))
            .map(|t| t.spec().name)
            .collect();
        return unsupported(format!(
            "V type {} with {keys} keys at head size {d} ({})",
            v.type_,
            names.join(", ")
        ));
    }
    if q.type_ != dtype::F32 || dst.type_ != dtype::F32 {
        return unsupported("q and dst must be f32");
    }
    if k.ne[0] != d || v.ne[0] != d {
        return unsupported(format!(
            "K/V head sizes {}/{} differ from q's {d}",
            k.ne[0], v.ne[0]
        ));
    }
    if q.ne[1] > MAX_Q {
        return unsupported(format!(
            "{} query rows (decode path serves at most {MAX_Q}; prefill: dequantize)",
            q.ne[1]
        ));
    }
    if k.ne[1] != v.ne[1] || k.ne[2] != v.ne[2] || k.ne[3] != v.ne[3] {
        return unsupported("K and V shapes differ");
    }
    if q.ne[2] % k.ne[2] != 0 || q.ne[3] % k.ne[3] != 0 {
        return unsupported("query heads / sequences are not a multiple of K's");
    }
    if k.ne[1] > i32::MAX as i64 || q.ne[2] > 65535 || k.ne[2] > i32::MAX as i64 {
        return unsupported("too many tokens or heads");
    }
    if q.nb[0] != 4 || dst.nb[0] != 4 {
        return unsupported("q and dst rows must be contiguous");
    }
    let (ku, _) = super::unit_bytes(k.type_).unwrap();
    let (vu, _) = super::unit_bytes(v.type_).unwrap();
    if k.nb[0] != ku || v.nb[0] != vu {
        return unsupported("K/V rows must be contiguous");
    }
    if [k.nb[1], k.nb[2], k.nb[3], v.nb[1], v.nb[2], v.nb[3]]
        .iter()
        .any(|s| s % 2 != 0)
        || (k.data as usize) % 2 != 0
        || (v.data as usize) % 2 != 0
    {
        return unsupported("K/V strides and addresses must be 2-byte aligned");
    }
    if [q.nb[1], q.nb[2], q.nb[3]].iter().any(|s| s % 4 != 0) || (q.data as usize) % 4 != 0 {
        return unsupported("q must be 4-byte aligned");
    }
    let dst_ne = [d, q.ne[2], q.ne[1], q.ne[3]];
    if dst.ne != dst_ne {
        return unsupported(format!("dst shape {:?}, expected {:?}", dst.ne, dst_ne));
    }
    let n_rows = (d as usize) * 4;
    if dst.nb[1] != n_rows
        || dst.nb[2] != n_rows * q.ne[2] as usize
        || dst.nb[3] != dst.nb[2] * q.ne[1] as usize
    {
        return unsupported("dst must be contiguous");
    }
    if a.mask.present() {
        let m = &a.mask;
        if m.type_ != dtype::F16 || m.nb[0] != 2 {
            return unsupported("mask must be f16 with contiguous rows");
        }
        if m.ne[0] < k.ne[1] || m.ne[1] < q.ne[1] || m.ne[2] <= 0 || m.ne[3] <= 0 {
            return unsupported(format!(
                "mask shape {:?} too small for n_kv {} × n_q {}",
                m.ne, k.ne[1], q.ne[1]
            ));
        }
        if [m.nb[1], m.nb[2], m.nb[3]].iter().any(|s| s % 2 != 0) {
            return unsupported("mask strides must be 2-byte aligned");
        }
    }
    if a.sinks.present() && (a.sinks.type_ != dtype::F32 || a.sinks.ne[0] < q.ne[2]) {
        return unsupported("sinks must be f32 with one value per query head");
    }
    if a.exact_k.present() {
        exact_keys_supported(&a.exact_k, k, mma)?;
    }
    Ok(())
}

/// Why the exact keys `e` (f16 `[D, n_exact, n_head_kv, n_seq_kv]`) cannot stand in for the first
/// rows of `k`, or `Ok`.
fn exact_keys_supported(e: &Tensor, k: &Tensor, mma: bool) -> Result<(), CudaError> {
    if !mma {
        return unsupported(
            "exact keys with f16 / q8_0 keys (only the tensor-core kernel of tbq keys reads them)",
        );
    }
    if e.type_ != dtype::F16 || e.nb[0] != 2 {
        return unsupported("exact keys must be f16 with contiguous rows");
    }
    if e.ne[0] != k.ne[0] || e.ne[1] <= 0 || e.ne[2] != k.ne[2] || e.ne[3] != k.ne[3] {
        return unsupported(format!(
            "exact keys shape {:?}, expected [{}, n_exact >= 1, {}, {}] (K's head size, heads and \
             sequences)",
            e.ne, k.ne[0], k.ne[2], k.ne[3]
        ));
    }
    if [e.nb[1], e.nb[2], e.nb[3]].iter().any(|s| s % 2 != 0)
        || !(e.data as usize).is_multiple_of(2)
    {
        return unsupported("exact keys strides and address must be 2-byte aligned");
    }
    Ok(())
}

struct Plan {
    d: i64,
    row_groups: i64,
    splits: i64,
    split_len: i64,
    /// The decode kernel and its dynamic shared memory.
    kernel: &'static str,
    smem: u32,
    /// The kernel that merges the splits' records (and adds the exact keys' tokens), when the
    /// decode kernel writes records instead of the output.
    combine: Option<&'static str>,
}

fn sm_count() -> Result<i64, CudaError> {
    static SMS: OnceLock<Mutex<HashMap<i32, i64>>> = OnceLock::new();
    let (_, dev) = current()?;
    let mut m = SMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = m.get(&dev) {
        return Ok(n);
    }
    let n = attribute(dev, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as i64;
    m.insert(dev, n);
    Ok(n)
}

/// The decode kernel for `a` with `r` rows per block, and its dynamic shared memory in bytes.
fn kernel_for(a: &FattnArgs, mma: bool, d: i64, r: i64) -> (&'static str, u32) {
    if mma {
        let ds = format!("d{d}");
        let name = kernel_name(&[
            "k_tbq_fattn_mma",
            ktype_name(a.k.type_, d).unwrap(),
            vtype_name(a.v.type_, d, true).unwrap(),
            &ds,
        ]);
        let (k, v) = (TbqType::from_abi(a.k.type_), TbqType::from_abi(a.v.type_));
        let (k, v) = (k.unwrap(), v.unwrap());
        let tables = mma_table_words(k, v) + WARPS * mma_stage_words(k, v, d) + mma_q_words(d);
        let words = tables.max(WARPS * r * (d + 2)).max(r * d);
        (name, (words * 4) as u32)
    } else {
        let rs = format!("d{d}_r{r}");
        let name = kernel_name(&[
            "k_tbq_fattn",
            ktype_name(a.k.type_, d).unwrap(),
            vtype_name(a.v.type_, d, false).unwrap(),
            &rs,
        ]);
        (name, ((r * d).max(WARPS * r * (d + 2)) * 4) as u32)
    }
}

/// Thread blocks of `name` one SM holds at once (registers, shared memory, warps), cached.
fn resident_blocks(name: &'static str, smem: u32) -> Result<i64, CudaError> {
    static RES: OnceLock<Mutex<HashMap<(usize, u32), i64>>> = OnceLock::new();
    let f = function(name)?;
    let key = (f as usize, smem);
    if let Some(&n) = RES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(n);
    }
    if smem > 48 * 1024 {
        allow_smem(f, smem)?;
    }
    let mut n = 0;
    super::check("cuOccupancyMaxActiveBlocksPerMultiprocessor", unsafe {
        sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
            &mut n,
            f,
            (WARPS * 32) as i32,
            smem as usize,
        )
    })?;
    let n = (n as i64).max(1);
    RES.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, n);
    Ok(n)
}

fn plan(a: &FattnArgs, n_sm: i64, force_splits: Option<u32>) -> Result<Plan, CudaError> {
    let d = a.q.ne[0];
    let g = a.q.ne[2] / a.k.ne[2];
    let rows = g * a.q.ne[1];
    let mma = is_mma(a.k.type_);
    let r = if mma {
        MAX_ROWS
    } else {
        [1, 2, 4, 8]
            .into_iter()
            .find(|&r| r >= rows.min(MAX_ROWS))
            .unwrap()
    };
    let (kernel, smem) = kernel_for(a, mma, d, r);
    let row_groups = cdiv(rows, r);
    let n_kv = a.k.ne[1];
    let base = a.k.ne[2] * a.q.ne[3] * row_groups;
    let step = WARPS * if mma { MMA_TILE } else { TOKENS_PER_WARP_STEP };
    let min_split = if mma { MMA_MIN_SPLIT } else { MIN_SPLIT };
    let max_by_len = cdiv(n_kv, min_split).max(1);
    let want = match force_splits {
        Some(s) => (s as i64).clamp(1, cdiv(n_kv, step)),
        // one full wave: floor, so that the grid never spills into a second, mostly idle one
        None => (resident_blocks(kernel, smem)? * n_sm / base).clamp(1, max_by_len),
    }
    .min(MAX_SPLITS);
    // The kernels address a split with 32-bit byte offsets from its first token.
    let row_bytes = a.k.nb[1].max(a.v.nb[1]) as i64;
    let longest = (i32::MAX as i64 / row_bytes) / step * step;
    let want = want.max(cdiv(n_kv, longest.max(step)));
    if want > MAX_SPLITS {
        return unsupported(format!(
            "{n_kv} tokens of {row_bytes} bytes: a split would exceed 2 GiB"
        ));
    }
    let split_len = cdiv(cdiv(n_kv, want), step) * step;
    let splits = cdiv(n_kv, split_len);
    let combine = if a.exact_k.present() {
        let name = vtype_name(a.v.type_, d, mma).unwrap();
        Some(kernel_name(&[
            "k_tbq_fattn_combine_exact",
            name,
            &format!("d{d}"),
        ]))
    } else if splits > 1 {
        Some(match d {
            64 => "k_tbq_fattn_combine_d64",
            128 => "k_tbq_fattn_combine_d128",
            256 => "k_tbq_fattn_combine_d256",
            _ => "k_tbq_fattn_combine_d512",
        })
    } else {
        None
    };
    Ok(Plan {
        d,
        row_groups,
        splits,
        split_len,
        kernel,
        smem,
        combine,
    })
}

fn scratch_for(a: &FattnArgs, p: &Plan) -> usize {
    if p.combine.is_none() {
        return 0;
    }
    (a.q.ne[3] * a.q.ne[1] * a.q.ne[2] * p.splits * (p.d + 2)) as usize * 4
}

/// Scratch bytes a launch of `a` needs on the current device (0: none). Deterministic: the same
/// arguments on the same device give the same number, and the launch uses exactly this plan.
pub fn fattn_scratch_bytes(a: &FattnArgs) -> Result<usize, CudaError> {
    fattn_supported(a)?;
    Ok(scratch_for(a, &plan(a, sm_count()?, None)?))
}

/// FLASH_ATTN_EXT on `stream`. `scratch`: device memory of at least [`fattn_scratch_bytes`]
/// bytes, or `None` to use the crate's [`pool`] (which may allocate — not during a capture).
///
/// # Safety
/// The tensors must describe valid device memory of the current context; `scratch` too.
pub unsafe fn flash_attn_ext(
    a: &FattnArgs,
    scratch: Option<(u64, usize)>,
    stream: Stream,
) -> Result<(), CudaError> {
    flash_attn_ext_with(a, scratch, stream, FattnOptions::default())
}

/// [`flash_attn_ext`] with explicit options (tests and benchmarks).
///
/// # Safety
/// As [`flash_attn_ext`].
pub unsafe fn flash_attn_ext_with(
    a: &FattnArgs,
    scratch: Option<(u64, usize)>,
    stream: Stream,
    opt: FattnOptions,
) -> Result<(), CudaError> {
    fattn_supported(a)?;
    let pl = plan(a, sm_count()?, opt.splits)?;
    let need = scratch_for(a, &pl);
    let partial = if need == 0 {
        0
    } else {
        match scratch {
            Some((ptr, have)) => {
                if have < need || ptr == 0 {
                    return Err(CudaError::Scratch { need, have });
                }
                ptr
            }
            None => pool::scratch(stream, need)?,
        }
    };

    let n_head = a.q.ne[2] as u32;
    let n_head_log2 = 1u32 << (31 - n_head.leading_zeros());
    let mut scale = a.scale;
    if a.logit_softcap != 0.0 {
        scale /= a.logit_softcap;
    }
    let m0 = 2.0f32.powf(-a.max_bias / n_head_log2 as f32);
    let m1 = 2.0f32.powf(-(a.max_bias / 2.0) / n_head_log2 as f32);
    let (mask, mne2, mne3, nbm) = if a.mask.present() {
        let m = &a.mask;
        (
            m.ptr(),
            m.ne[2] as i32,
            m.ne[3] as i32,
            [m.nb[1] as i64, m.nb[2] as i64, m.nb[3] as i64],
        )
    } else {
        (0, 1, 1, [0; 3])
    };
    let nb3 = |t: &Tensor| [t.nb[1] as i64, t.nb[2] as i64, t.nb[3] as i64];
    // rows past the cache are never read: n_exact ≤ n_kv
    let (exact_k, nbe, n_exact) = if a.exact_k.present() {
        let e = &a.exact_k;
        (e.ptr(), nb3(e), e.ne[1].min(a.k.ne[1]) as i32)
    } else {
        (0, [0; 3], 0)
    };
    let p = Params {
        q: a.q.ptr(),
        k: a.k.ptr(),
        v: a.v.ptr(),
        mask,
        sinks: if a.sinks.present() { a.sinks.ptr() } else { 0 },
        dst: a.dst.ptr(),
        partial,
        exact_k,
        nbq: nb3(&a.q),
        nbk: nb3(&a.k),
        nbv: nb3(&a.v),
        nbm,
        nbe,
        n_q: a.q.ne[1] as i32,
        n_head: a.q.ne[2] as i32,
        n_seq: a.q.ne[3] as i32,
        n_kv: a.k.ne[1] as i32,
        n_head_kv: a.k.ne[2] as i32,
        n_seq_kv: a.k.ne[3] as i32,
        mask_ne2: mne2,
        mask_ne3: mne3,
        n_splits: pl.splits as i32,
        split_len: pl.split_len as i32,
        n_row_groups: pl.row_groups as i32,
        n_head_log2: n_head_log2 as i32,
        n_exact,
        scale,
        max_bias: a.max_bias,
        softcap: a.logit_softcap,
        m0,
        m1,
        sparse_v: opt
            .sparse_v
            .unwrap_or_else(|| f32::from_bits(SPARSE_V.load(Ordering::Relaxed))),
    };
    let (name, smem) = (pl.kernel, pl.smem);
    let f = function(name)?;
    if smem > 48 * 1024 {
        allow_smem(f, smem)?;
    }
    let grid = (
        a.k.ne[2] as u32,
        pl.splits as u32,
        (a.q.ne[3] * pl.row_groups) as u32,
    );
    launch(f, grid, (WARPS * 32) as u32, smem, stream, &p)?;
    if let Some(combine) = pl.combine {
        launch(
            function(combine)?,
            (a.q.ne[2] as u32, a.q.ne[1] as u32, a.q.ne[3] as u32),
            COMBINE_THREADS,
            0,
            stream,
            &p,
        )?;
    }
    Ok(())
}

/// Raises a kernel's dynamic shared-memory limit above the default 48 KB (once per function).
fn allow_smem(f: sys::CUfunction, bytes: u32) -> Result<(), CudaError> {
    static DONE: OnceLock<Mutex<HashMap<usize, u32>>> = OnceLock::new();
    let mut m = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if m.get(&(f as usize)).is_some_and(|&b| b >= bytes) {
        return Ok(());
    }
    super::check("cuFuncSetAttribute", unsafe {
        sys::cuFuncSetAttribute(
            f,
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    })?;
    m.insert(f as usize, bytes);
    Ok(())
}
