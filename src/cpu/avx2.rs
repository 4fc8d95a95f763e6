//! AVX2 + FMA versions of the hot loops (the parent module says what each promises).
//!
//! A block is 16 vectors of 8 floats: vector `4·s + j` holds coordinates `32·s + 8·j .. +8`, i.e.
//! slot `s` (= gain group `s`) of lanes `8·j .. 8·j+8` of the canonical layout. That makes the
//! canonical lane sums plain vector adds, and lets codes be unpacked a slot at a time (32 bytes)
//! straight from the lane-major planes. Levels are looked up with 8-entry permutes joined by a
//! blend tree over the code's high bits: every width runs the same code, driven by its
//! [`TypeSpec`] (planes, levels, bounds, gains).
//!
//! Every entry point is `unsafe` only because it needs AVX2 and FMA; the caller checks the CPU
//! and the buffer lengths.

use std::arch::x86_64::*;

use half::f16;

use crate::codebook::GAINS;
use crate::format::{TbqType, TypeSpec, BLOCK_ELEMS, D_BYTES, D_MAX, SLOTS};
use crate::packing::pack;
use crate::reference::group_scales;
use crate::rotation::{INV_SQRT_128, SIGNS, SQRT_128};

/// Vectors of 8 floats per block.
const VECS: usize = BLOCK_ELEMS / 8;

/// One block in registers (see the module comment for the layout).
type Vecs = [__m256; VECS];

/// The sign bit of `D` for each coordinate: `x ^ SIGN_BITS[i]` is `x · sign(i)`, exactly.
static SIGN_BITS: [u32; BLOCK_ELEMS] = {
    let mut t = [0u32; BLOCK_ELEMS];
    let mut i = 0;
    while i < BLOCK_ELEMS {
        if (SIGNS >> i) & 1 == 1 {
            t[i] = 0x8000_0000;
        }
        i += 1;
    }
    t
};

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load(s: &[f32]) -> __m256 {
    let s = &s[..8];
    // SAFETY: `s` holds 8 floats.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn store(s: &mut [f32], v: __m256) {
    let s = &mut s[..8];
    // SAFETY: `s` holds 8 floats.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load_block(x: &[f32]) -> Vecs {
    let mut v = [_mm256_setzero_ps(); VECS];
    for (k, vk) in v.iter_mut().enumerate() {
        *vk = load(&x[8 * k..]);
    }
    v
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn store_block(v: &Vecs, out: &mut [f32]) {
    for (k, vk) in v.iter().enumerate() {
        store(&mut out[8 * k..], *vk);
    }
}

/// `x · sign(i)` for the 8 coordinates of vector `k`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn apply_signs(x: __m256, k: usize) -> __m256 {
    let bits = &SIGN_BITS[8 * k..8 * k + 8];
    // SAFETY: `bits` holds 8 u32.
    let bits = unsafe { _mm256_loadu_si256(bits.as_ptr().cast()) };
    _mm256_xor_ps(x, _mm256_castsi256_ps(bits))
}

// ---- the rotation --------------------------------------------------------------------------------

/// [`crate::rotation::fwht`] of one block: the same stages (spans 1, 2, …, 64), each the same
/// `(a + b, a - b)` on the same operands, so the same bits. Spans 1–4 run inside a vector.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn fwht(v: &mut Vecs) {
    for x in v.iter_mut() {
        // span 1: partner [x1, x0, x3, x2, …]; even lanes keep a + b, odd lanes take a - b
        let p = _mm256_permute_ps::<0xB1>(*x);
        *x = _mm256_blend_ps::<0xAA>(_mm256_add_ps(*x, p), _mm256_sub_ps(p, *x));
        // span 2: partner [x2, x3, x0, x1, …]
        let p = _mm256_permute_ps::<0x4E>(*x);
        *x = _mm256_blend_ps::<0xCC>(_mm256_add_ps(*x, p), _mm256_sub_ps(p, *x));
        // span 4: partner = the other 128-bit half
        let p = _mm256_permute2f128_ps::<1>(*x, *x);
        *x = _mm256_blend_ps::<0xF0>(_mm256_add_ps(*x, p), _mm256_sub_ps(p, *x));
    }
    let mut h = 1;
    while h < VECS {
        for base in (0..VECS).step_by(2 * h) {
            for j in base..base + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = _mm256_add_ps(a, b);
                v[j + h] = _mm256_sub_ps(a, b);
            }
        }
        h *= 2;
    }
}

/// [`crate::rotation::unrotate_block`]: `sign(i) · (H·u)_i · (1/sqrt(128))`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unrotate_block(v: &mut Vecs) {
    fwht(v);
    let inv = _mm256_set1_ps(INV_SQRT_128);
    for (k, x) in v.iter_mut().enumerate() {
        *x = apply_signs(_mm256_mul_ps(*x, inv), k);
    }
}

/// # Safety
/// AVX2 and FMA; `x.len()` a multiple of 128.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rotate_in_place(x: &mut [f32]) {
    let inv = _mm256_set1_ps(INV_SQRT_128);
    for b in x.chunks_exact_mut(BLOCK_ELEMS) {
        let mut v = load_block(b);
        for (k, x) in v.iter_mut().enumerate() {
            *x = apply_signs(*x, k);
        }
        fwht(&mut v);
        for x in v.iter_mut() {
            *x = _mm256_mul_ps(*x, inv);
        }
        store_block(&v, b);
    }
}

/// # Safety
/// AVX2 and FMA; `x.len()` a multiple of 128.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn unrotate_in_place(x: &mut [f32]) {
    for b in x.chunks_exact_mut(BLOCK_ELEMS) {
        let mut v = load_block(b);
        unrotate_block(&mut v);
        store_block(&v, b);
    }
}

// ---- canonical sums ------------------------------------------------------------------------------

/// [`crate::rotation::warp_sum_canonical`] of 32 lanes held as 4 vectors (lanes 8j..8j+8): the
/// same xor butterfly (offsets 16, 8, 4, 2, 1), read off lane 0.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn warp_sum(l: [__m256; 4]) -> f32 {
    let c = _mm256_add_ps(_mm256_add_ps(l[0], l[2]), _mm256_add_ps(l[1], l[3]));
    let c = _mm256_add_ps(c, _mm256_permute2f128_ps::<1>(c, c));
    let c = _mm256_add_ps(c, _mm256_permute_ps::<0x4E>(c));
    let c = _mm256_add_ps(c, _mm256_permute_ps::<0xB1>(c));
    _mm256_cvtss_f32(c)
}

/// [`crate::rotation::sum_squares_canonical`]: per lane the squares of slots 0..3 in order
/// (a multiply, then an add: never fused), then the warp sum.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn sum_squares(v: &Vecs) -> f32 {
    let mut lanes = [_mm256_setzero_ps(); 4];
    for (j, lane) in lanes.iter_mut().enumerate() {
        *lane = _mm256_mul_ps(v[j], v[j]);
        for s in 1..SLOTS {
            *lane = _mm256_add_ps(*lane, _mm256_mul_ps(v[4 * s + j], v[4 * s + j]));
        }
    }
    warp_sum(lanes)
}

/// Sum of the 8 lanes (any order: only the f32-tolerance paths use it).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// ---- codes and levels ----------------------------------------------------------------------------

/// The levels of a width as 8-entry permute tables (at most 64 levels: 8 tables).
struct Levels {
    tables: [__m256; 8],
    count: usize,
}

impl Levels {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn new(spec: &TypeSpec) -> Levels {
        let count = spec.levels.len() / 8;
        let mut tables = [_mm256_setzero_ps(); 8];
        for (k, t) in tables.iter_mut().enumerate().take(count) {
            *t = load(&spec.levels[8 * k..]);
        }
        Levels { tables, count }
    }

    /// `levels[idx]` for 8 codes (i32 lanes): each table permuted by the low 3 bits, then a
    /// blend tree picks the table by bits 3, 4, 5.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn lookup(&self, idx: __m256i) -> __m256 {
        let mut v = [_mm256_setzero_ps(); 8];
        for (vk, t) in v.iter_mut().zip(&self.tables).take(self.count) {
            *vk = _mm256_permutevar8x32_ps(*t, idx);
        }
        let (mut n, mut bit) = (self.count, 3);
        while n > 1 {
            // the code's bit `bit` moved to the sign bit, which blendv reads
            let select = _mm256_castsi256_ps(_mm256_sll_epi32(idx, _mm_cvtsi32_si128(31 - bit)));
            for k in 0..n / 2 {
                v[k] = _mm256_blendv_ps(v[2 * k], v[2 * k + 1], select);
            }
            n /= 2;
            bit += 1;
        }
        v[0]
    }
}

/// The fields of a 4-bit plane (64 bytes): lane `l` owns bytes `2l` (slots 0, 1) and `2l + 1`
/// (slots 2, 3). Returns, per slot, 32 bytes: byte `l` = lane `l`'s 4-bit field of that slot.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn nibble_plane(plane: &[u8]) -> [__m256i; SLOTS] {
    let plane = &plane[..64];
    // SAFETY: `plane` holds 64 bytes.
    let (a, b) = unsafe {
        (
            _mm256_loadu_si256(plane.as_ptr().cast()),
            _mm256_loadu_si256(plane[32..].as_ptr().cast()),
        )
    };
    #[rustfmt::skip]
    let even_odd = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
    );
    // per source: [even bytes of lanes 0-7, 8-15 | odd bytes of lanes 0-7, 8-15]
    let a = _mm256_permute4x64_epi64::<0xD8>(_mm256_shuffle_epi8(a, even_odd));
    let b = _mm256_permute4x64_epi64::<0xD8>(_mm256_shuffle_epi8(b, even_odd));
    let low = _mm256_permute2x128_si256::<0x20>(a, b); // byte 2l of every lane
    let high = _mm256_permute2x128_si256::<0x31>(a, b); // byte 2l + 1
    let m = _mm256_set1_epi8(0x0F);
    [
        _mm256_and_si256(low, m),
        _mm256_and_si256(_mm256_srli_epi16::<4>(low), m),
        _mm256_and_si256(high, m),
        _mm256_and_si256(_mm256_srli_epi16::<4>(high), m),
    ]
}

/// As [`nibble_plane`] for a 2-bit plane (32 bytes): lane `l` owns byte `l`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pair_plane(plane: &[u8]) -> [__m256i; SLOTS] {
    let plane = &plane[..32];
    // SAFETY: `plane` holds 32 bytes.
    let v = unsafe { _mm256_loadu_si256(plane.as_ptr().cast()) };
    let m = _mm256_set1_epi8(3);
    [
        _mm256_and_si256(v, m),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), m),
        _mm256_and_si256(_mm256_srli_epi16::<4>(v), m),
        _mm256_and_si256(_mm256_srli_epi16::<6>(v), m),
    ]
}

/// As [`nibble_plane`] for a 1-bit plane (16 bytes): lane `l` owns nibble `l`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn bit_plane(plane: &[u8]) -> [__m256i; SLOTS] {
    let plane = &plane[..16];
    // SAFETY: `plane` holds 16 bytes.
    let x = unsafe { _mm_loadu_si128(plane.as_ptr().cast()) };
    let m = _mm_set1_epi8(0x0F);
    let (lo, hi) = (
        _mm_and_si128(x, m),
        _mm_and_si128(_mm_srli_epi16::<4>(x), m),
    );
    let v = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
    let one = _mm256_set1_epi8(1);
    [
        _mm256_and_si256(v, one),
        _mm256_and_si256(_mm256_srli_epi16::<1>(v), one),
        _mm256_and_si256(_mm256_srli_epi16::<2>(v), one),
        _mm256_and_si256(_mm256_srli_epi16::<3>(v), one),
    ]
}

/// The codes of one block, per slot: byte `l` of `codes[s]` is the code of coordinate `32s + l`.
/// The planes' fields are shifted into place (a code is at most 6 bits, so 16-bit shifts never
/// carry into the next byte).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unpack_slots(spec: &TypeSpec, qs: &[u8]) -> [__m256i; SLOTS] {
    let mut codes = [_mm256_setzero_si256(); SLOTS];
    let (mut base, mut shift) = (0usize, 0i32);
    for &p in spec.planes {
        let plane = &qs[base..];
        let fields = match p {
            4 => nibble_plane(plane),
            2 => pair_plane(plane),
            1 => bit_plane(plane),
            _ => unreachable!("planes are 1, 2 or 4 bits wide"),
        };
        let count = _mm_cvtsi32_si128(shift);
        for (c, f) in codes.iter_mut().zip(fields) {
            *c = _mm256_or_si256(*c, _mm256_sll_epi16(f, count));
        }
        base += 16 * p as usize;
        shift += p as i32;
    }
    codes
}

/// `C[c_i]` of one block's codes `qs`, in the block layout.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block_levels(spec: &TypeSpec, levels: &Levels, qs: &[u8]) -> Vecs {
    let mut out = [_mm256_setzero_ps(); VECS];
    for (s, codes) in unpack_slots(spec, qs).into_iter().enumerate() {
        let lo = _mm256_castsi256_si128(codes);
        let hi = _mm256_extracti128_si256::<1>(codes);
        let idx = [
            _mm256_cvtepu8_epi32(lo),
            _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo)),
            _mm256_cvtepu8_epi32(hi),
            _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi)),
        ];
        for (j, idx) in idx.into_iter().enumerate() {
            out[4 * s + j] = levels.lookup(idx);
        }
    }
    out
}

/// [`TypeSpec::encode`] of 8 values: `h + #{t : y > t}` above zero, `h - 1 - #{t : -y ≥ t}` else.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn encode(spec: &TypeSpec, y: __m256) -> __m256i {
    let h = spec.codebook_half.len() as i32;
    let a = _mm256_xor_ps(y, _mm256_set1_ps(-0.0));
    let (mut above, mut below) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for &t in spec.bounds_half {
        let t = _mm256_set1_ps(t);
        // a true comparison is -1 in every bit: subtracting it counts
        above = _mm256_sub_epi32(
            above,
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(y, t)),
        );
        below = _mm256_sub_epi32(
            below,
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(a, t)),
        );
    }
    let positive = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()));
    _mm256_blendv_epi8(
        _mm256_sub_epi32(_mm256_set1_epi32(h - 1), below),
        _mm256_add_epi32(_mm256_set1_epi32(h), above),
        positive,
    )
}

// ---- quantize ------------------------------------------------------------------------------------

/// [`crate::reference::quantize_block`], operation for operation.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn quantize_block(spec: &TypeSpec, levels: &Levels, x: &[f32], out: &mut [u8]) {
    let (header, qs) = out.split_at_mut(spec.header_bytes());

    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let inf = _mm256_set1_ps(f32::INFINITY);
    let mut w = load_block(x);
    for (k, wk) in w.iter_mut().enumerate() {
        let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(*wk, abs), inf);
        *wk = _mm256_and_ps(finite, apply_signs(*wk, k));
    }
    fwht(&mut w);
    let s = sum_squares(&w);
    if s == 0.0 || !s.is_finite() {
        header.fill(0);
        qs.fill(0);
        return;
    }

    let norm_w = s.sqrt();
    let k = _mm256_set1_ps(SQRT_128 / norm_w);
    let mut y = w;
    for yi in y.iter_mut() {
        *yi = _mm256_mul_ps(*yi, k);
    }
    let mut codes = [_mm256_setzero_si256(); VECS];
    let mut r = [_mm256_setzero_ps(); VECS];
    let gains = if spec.sub_scales {
        encode_groups(spec, levels, &y, &mut codes, &mut r)
    } else {
        for ((c, ri), yi) in codes.iter_mut().zip(r.iter_mut()).zip(&y) {
            *c = encode(spec, *yi);
            *ri = levels.lookup(*c);
        }
        0
    };
    let d = norm_w / (SQRT_128 * sum_squares(&r).sqrt());
    header[..D_BYTES].copy_from_slice(&f16::from_f32(d.min(D_MAX)).to_le_bytes());
    if spec.sub_scales {
        header[D_BYTES..].copy_from_slice(&gains.to_le_bytes());
    }

    let mut wide = [0i32; BLOCK_ELEMS];
    for (k, c) in codes.iter().enumerate() {
        let dst = &mut wide[8 * k..8 * k + 8];
        // SAFETY: `dst` holds 8 i32.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), *c) };
    }
    let mut bytes = [0u8; BLOCK_ELEMS];
    for (b, c) in bytes.iter_mut().zip(wide) {
        *b = c as u8;
    }
    pack(spec, &bytes, qs);
}

/// The reference's `encode_groups`: per group (= slot) the first gain with the least error
/// (summed as the warp sums it); codes and gained levels `r` of the winner; the gains word.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn encode_groups(
    spec: &TypeSpec,
    levels: &Levels,
    y: &Vecs,
    codes: &mut [__m256i; VECS],
    r: &mut Vecs,
) -> u16 {
    let mut word = 0u16;
    for s in 0..SLOTS {
        let group = 4 * s..4 * s + 4;
        let mut best = (f32::INFINITY, 0usize);
        for (k, &g) in GAINS.iter().enumerate() {
            let (inv, g) = (_mm256_set1_ps(GAINS[15 - k]), _mm256_set1_ps(g));
            let mut err = [_mm256_setzero_ps(); 4];
            for (e, &yi) in err.iter_mut().zip(&y[group.clone()]) {
                let ri = _mm256_mul_ps(g, levels.lookup(encode(spec, _mm256_mul_ps(yi, inv))));
                let diff = _mm256_sub_ps(yi, ri);
                *e = _mm256_mul_ps(diff, diff);
            }
            let err = warp_sum(err);
            if err < best.0 {
                best = (err, k);
            }
        }
        let (_, k) = best;
        let (inv, g) = (_mm256_set1_ps(GAINS[15 - k]), _mm256_set1_ps(GAINS[k]));
        for v in group {
            codes[v] = encode(spec, _mm256_mul_ps(y[v], inv));
            r[v] = _mm256_mul_ps(g, levels.lookup(codes[v]));
        }
        word |= (k as u16) << (4 * s);
    }
    word
}

/// # Safety
/// AVX2 and FMA; `x.len()` a multiple of 128, `out` holding `ty.row_bytes(x.len())` bytes.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_row(ty: TbqType, x: &[f32], out: &mut [u8]) {
    ty.with_spec(
        #[inline(always)]
        |spec| {
            let levels = Levels::new(spec);
            for (xb, ob) in x
                .chunks_exact(BLOCK_ELEMS)
                .zip(out.chunks_exact_mut(spec.block_bytes()))
            {
                quantize_block(spec, &levels, xb, ob);
            }
        },
    )
}

// ---- dequantize, dot, accumulate -----------------------------------------------------------------

/// Calls `f(block, scales, levels)` for each block of a row: the group scales `d·g_s` and
/// `C[c_i]` in the block layout.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn for_each_block(spec: &TypeSpec, x: &[u8], mut f: impl FnMut(usize, [f32; SLOTS], &Vecs)) {
    let levels = Levels::new(spec);
    for (b, xb) in x.chunks_exact(spec.block_bytes()).enumerate() {
        let c = block_levels(spec, &levels, &xb[spec.header_bytes()..]);
        f(b, group_scales(spec, xb), &c);
    }
}

/// # Safety
/// AVX2 and FMA; `out.len()` a multiple of 128, `src` holding its row.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dequantize_row(ty: TbqType, src: &[u8], out: &mut [f32]) {
    let src = &src[..ty.row_bytes(out.len())];
    ty.with_spec(
        #[inline(always)]
        |spec| {
            for_each_block(spec, src, |b, scales, c| {
                let mut v = *c;
                for (k, x) in v.iter_mut().enumerate() {
                    *x = _mm256_mul_ps(_mm256_set1_ps(scales[k / 4]), *x);
                }
                unrotate_block(&mut v);
                store_block(&v, &mut out[BLOCK_ELEMS * b..]);
            })
        },
    )
}

/// # Safety
/// AVX2 and FMA; `q_rot.len()` a multiple of 128, `x` holding its row.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn vec_dot_rotated(ty: TbqType, x: &[u8], q_rot: &[f32]) -> f32 {
    let x = &x[..ty.row_bytes(q_rot.len())];
    ty.with_spec(
        #[inline(always)]
        |spec| {
            // blocks summed one after the other, as the reference does, so that a row's dot is
            // the sum of its blocks' dots (tbq_vec_dot_f32 rotates and scores block by block)
            let mut sum = 0.0f32;
            for_each_block(spec, x, |b, scales, c| {
                let q = &q_rot[BLOCK_ELEMS * b..];
                let mut total = _mm256_setzero_ps();
                for (s, &scale) in scales.iter().enumerate() {
                    let mut acc = _mm256_mul_ps(load(&q[32 * s..]), c[4 * s]);
                    for j in 1..4 {
                        acc = _mm256_fmadd_ps(load(&q[32 * s + 8 * j..]), c[4 * s + j], acc);
                    }
                    total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale), total);
                }
                sum += hsum(total);
            });
            sum
        },
    )
}

/// # Safety
/// AVX2 and FMA; `acc.len()` a multiple of 128, `x` holding its row.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn mad_rotated(ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) {
    let x = &x[..ty.row_bytes(acc.len())];
    ty.with_spec(
        #[inline(always)]
        |spec| {
            for_each_block(spec, x, |b, scales, c| {
                let a = &mut acc[BLOCK_ELEMS * b..];
                for (s, &g) in scales.iter().enumerate() {
                    let w = _mm256_set1_ps(scale * g);
                    for j in 0..4 {
                        let a = &mut a[32 * s + 8 * j..];
                        store(a, _mm256_fmadd_ps(c[4 * s + j], w, load(a)));
                    }
                }
            })
        },
    )
}
