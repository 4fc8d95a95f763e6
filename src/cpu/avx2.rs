//! AVX2 + FMA versions of the hot loops (the parent module says what each promises), and the same
//! loops with AVX-512 F + VL table look-ups (`isa_avx512`).
//!
//! A block of `n` elements (128, or 64 for the `_64` types) is `n / 8` vectors of 8 floats: vector
//! `4·s + j` holds coordinates `32·s + 8·j .. +8`, i.e. slot `s` (= gain group `s`) of lanes
//! `8·j .. 8·j+8` of the canonical layout. A 64-wide block is the first two slots of that layout
//! (its lane `l` holds coordinates `l` and `l + 32`), so both widths run the same code with the
//! slot count `n / 32` as a parameter. That makes the canonical lane sums plain vector adds, and
//! lets codes be unpacked a slot at a time (32 bytes) straight from the lane-major planes. Levels, and the encoder's buckets, are [`Table`]s: 8-entry
//! permutes joined by a blend tree over the index's high bits (AVX2), or two-source permutes of
//! 16 or 32 entries (AVX-512). Every type runs the same code, specialised per type (`by_type!`)
//! and driven by its [`TypeSpec`] (planes, levels, bounds, gains); the block width `N` is a const
//! generic of its own, so the rotation's loops are unrolled for it even where LLVM does not
//! inline them into a type's loop (it did not, with the width as a run-time value: 128-wide
//! dequantize lost a fifth).
//!
//! Every entry point is `unsafe` only because it needs its instruction set; the caller checks the
//! CPU and the buffer lengths.

use std::arch::x86_64::*;

use half::f16;

use crate::codebook::{self, GAINS};
use crate::format::{
    TbqType, TypeSpec, BLOCK_ELEMS, D_BYTES, D_MAX, LANES, NARROW_BLOCK_ELEMS, SLOTS,
};
use crate::packing::pack;
use crate::reference::{group_scales, scale8_code, scale8_inverse8};
use crate::rotation::{inv_sqrt_n, sqrt_n, SIGNS};

/// Vectors of 8 floats in the largest block.
const VECS: usize = BLOCK_ELEMS / 8;

/// One block in registers (see the module comment for the layout); a block of `n` elements uses
/// the first `n / 8` vectors.
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

/// A block of `N` elements.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn load_block<const N: usize>(x: &[f32]) -> Vecs {
    let mut v = [_mm256_setzero_ps(); VECS];
    for (k, vk) in v.iter_mut().enumerate().take(N / 8) {
        *vk = load(&x[8 * k..]);
    }
    v
}

/// Stores a block of `N` elements.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store_block<const N: usize>(v: &Vecs, out: &mut [f32]) {
    for (k, vk) in v.iter().enumerate().take(N / 8) {
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

/// [`crate::rotation::fwht`] of one block of `N` elements: the same stages (spans 1, 2, …, N/2),
/// each the same `(a + b, a - b)` on the same operands, so the same bits. Spans 1–4 run inside a
/// vector, the others between vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn fwht<const N: usize>(v: &mut Vecs) {
    let vecs = N / 8;
    for x in v.iter_mut().take(vecs) {
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
    while h < vecs {
        for base in (0..vecs).step_by(2 * h) {
            for j in base..base + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = _mm256_add_ps(a, b);
                v[j + h] = _mm256_sub_ps(a, b);
            }
        }
        h *= 2;
    }
}

/// [`crate::rotation::unrotate_block`] of `N` elements: `sign(i) · (H·u)_i · (1/sqrt(N))`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unrotate_block<const N: usize>(v: &mut Vecs) {
    fwht::<N>(v);
    let inv = _mm256_set1_ps(inv_sqrt_n(N));
    for (k, x) in v.iter_mut().enumerate().take(N / 8) {
        *x = apply_signs(_mm256_mul_ps(*x, inv), k);
    }
}

/// [`crate::rotation::rotate_block`] of each `N`-element block (128 or 64) of `x`.
///
/// # Safety
/// AVX2 and FMA; `x.len()` a multiple of `N`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rotate_in_place<const N: usize>(x: &mut [f32]) {
    let inv = _mm256_set1_ps(inv_sqrt_n(N));
    for b in x.chunks_exact_mut(N) {
        let mut v = load_block::<N>(b);
        for (k, x) in v.iter_mut().enumerate().take(N / 8) {
            *x = apply_signs(*x, k);
        }
        fwht::<N>(&mut v);
        for x in v.iter_mut().take(N / 8) {
            *x = _mm256_mul_ps(*x, inv);
        }
        store_block::<N>(&v, b);
    }
}

/// [`crate::rotation::unrotate_block`] of each `N`-element block (128 or 64) of `x`.
///
/// # Safety
/// AVX2 and FMA; `x.len()` a multiple of `N`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn unrotate_in_place<const N: usize>(x: &mut [f32]) {
    for b in x.chunks_exact_mut(N) {
        let mut v = load_block::<N>(b);
        unrotate_block::<N>(&mut v);
        store_block::<N>(&v, b);
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

/// [`crate::rotation::sum_squares_canonical`] of `N` elements: per lane the squares of its
/// `N / 32` slots in order (a multiply, then an add: never fused), then the warp sum.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn sum_squares<const N: usize>(v: &Vecs) -> f32 {
    let mut lanes = [_mm256_setzero_ps(); 4];
    for (j, lane) in lanes.iter_mut().enumerate() {
        *lane = _mm256_mul_ps(v[j], v[j]);
        for s in 1..N / LANES {
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

// ---- tables --------------------------------------------------------------------------------------

/// Up to 64 entries of a table, padded, aligned for AVX-512 loads.
#[repr(C, align(64))]
struct Flat([f32; 64]);

/// `src` padded to 64 entries.
const fn flat<const N: usize>(src: [f32; N]) -> Flat {
    let mut f = [0.0f32; 64];
    let mut i = 0;
    while i < N {
        f[i] = src[i];
        i += 1;
    }
    Flat(f)
}

/// A table of up to 64 f32 (or i32 bit patterns) looked up by 8 i32 indices below its size.
///
/// AVX2: 8-entry permutes, one per 8 entries, joined by a blend tree over the index's bits 3, 4,
/// 5. AVX-512 (F + VL, the `W` paths): one two-source permute per 16 (`vpermt2ps` ymm) or 32
/// entries (zmm, of which the low 8 lanes are used), and one blend for 64.
struct Table {
    v: [__m256; 8],
    flat: &'static Flat,
    /// Entries / 8: 1, 2, 4 or 8.
    pieces: usize,
}

impl Table {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn new(flat: &'static Flat, entries: usize) -> Table {
        let pieces = entries.div_ceil(8).next_power_of_two();
        debug_assert!(pieces <= 8);
        let mut v = [_mm256_setzero_ps(); 8];
        for (k, vk) in v.iter_mut().enumerate().take(pieces) {
            *vk = load(&flat.0[8 * k..]);
        }
        Table { v, flat, pieces }
    }
}

/// The levels of each width (3, 4, 5, 6 bits), as look-up tables.
static LEVELS: [Flat; 4] = [
    flat(codebook::NORMAL_8_LEVELS),
    flat(codebook::NORMAL_16_LEVELS),
    flat(codebook::NORMAL_32_LEVELS),
    flat(codebook::NORMAL_64_LEVELS),
];

/// The levels of a width as a [`Table`].
#[target_feature(enable = "avx2,fma")]
#[inline]
fn levels(spec: &TypeSpec) -> Table {
    Table::new(&LEVELS[spec.bits as usize - 3], spec.levels.len())
}

// ---- the encoder ---------------------------------------------------------------------------------
//
// [`TypeSpec::encode`] in a constant number of instructions, whatever the width (the idea of
// kernels/common.cuh's `tbq_encode_bucketed`, with per-width bucket sizes that fit a permute).
//
// Both of the reference's branches count thresholds: `y > 0` gives `h + #{t : y > t}`, `y <= 0`
// gives `h - 1 - #{t : -y >= t}`, and `-y >= t` is `succ(-y) > t` (the next float up; thresholds
// are positive and finite). So with `z = |y|`, plus one ulp where `y <= 0`, every code is
// `n = #{t : z > t}` on the side of its sign: `h + n = n ^ h` or `h - 1 - n = n ^ (h - 1)`
// (`h` is a power of two, `n < h`).
//
// `n` is counted with buckets: `b = trunc(min(z · S, B - 1))` is monotone in `z`, so a threshold
// whose bucket (the same f32 operations on `t`) is below `z`'s is below `z`, one above is above,
// and with at most one threshold per bucket (checked when the tables are built, at compile time)
// `n = below[b] + [z > inside[b]]`. `S` and `B` per width: 2 and 4 (tbq3: thresholds 0.50, 1.05,
// 1.75), 3 and 8 (tbq4: the gaps are ≥ 0.26, the last threshold 2.40 alone above 7/3), 8 and 32
// (tbq5: gaps ≥ 0.13, the last 2.98 in bucket 23), 16 and 64 (tbq6: gaps ≥ 0.067, as CUDA's).
// `|level| = half[n]`, a table of `h` entries.

/// The bucket tables of a width: `below[b]` (i32 bits) and `inside[b]` (+inf if none).
struct Buckets {
    scale: f32,
    count: usize,
    below: Flat,
    inside: Flat,
}

const fn buckets<const N: usize>(bounds: [f32; N], scale: f32, count: usize) -> Buckets {
    let mut below = [0.0f32; 64];
    let mut inside = [f32::INFINITY; 64];
    let mut b = 0;
    while b < count {
        let (mut n, mut k) = (0u32, 0);
        while k < N {
            let tb = bucket(bounds[k], scale, count);
            if tb < b {
                n += 1;
            } else if tb == b {
                assert!(inside[b] == f32::INFINITY, "two thresholds in one bucket");
                inside[b] = bounds[k];
            }
            k += 1;
        }
        below[b] = f32::from_bits(n);
        b += 1;
    }
    Buckets {
        scale,
        count,
        below: Flat(below),
        inside: Flat(inside),
    }
}

/// The bucket of `z`, as the SIMD code computes it (a minimum, then `cvttps2dq`).
const fn bucket(z: f32, scale: f32, count: usize) -> usize {
    let (b, last) = (z * scale, (count - 1) as f32);
    (if b < last { b } else { last }) as usize
}

/// Each width's bucket tables (3, 4, 5, 6 bits).
static BUCKETS: [Buckets; 4] = [
    buckets(codebook::NORMAL_8_BOUNDS, 2.0, 4),
    buckets(codebook::NORMAL_16_BOUNDS, 3.0, 8),
    buckets(codebook::NORMAL_32_BOUNDS, 8.0, 32),
    buckets(codebook::NORMAL_64_BOUNDS, 16.0, 64),
];

/// Each width's positive half codebook (`|level|` of `n`).
static HALVES: [Flat; 4] = [
    flat(codebook::NORMAL_8),
    flat(codebook::NORMAL_16),
    flat(codebook::NORMAL_32),
    flat(codebook::NORMAL_64),
];

/// A width's encoder in registers (see above).
struct Encoder {
    scale: __m256,
    /// `B - 1`, as a float.
    last: __m256,
    below: Table,
    inside: Table,
    half: Table,
    /// `h - 1`.
    h1: __m256i,
}

impl Encoder {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn new(spec: &TypeSpec) -> Encoder {
        let w = spec.bits as usize - 3;
        let b = &BUCKETS[w];
        let h = spec.codebook_half.len();
        Encoder {
            scale: _mm256_set1_ps(b.scale),
            last: _mm256_set1_ps((b.count - 1) as f32),
            below: Table::new(&b.below, b.count),
            inside: Table::new(&b.inside, b.count),
            half: Table::new(&HALVES[w], h),
            h1: _mm256_set1_epi32(h as i32 - 1),
        }
    }
}

/// `+1` (as i32) where `y <= 0`, `0` above: the ulp that turns `-y >= t` into `z > t`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tie_ulp(y: __m256) -> __m256i {
    let nonpos = _mm256_cmp_ps::<_CMP_LE_OQ>(y, _mm256_setzero_ps());
    _mm256_and_si256(_mm256_castps_si256(nonpos), _mm256_set1_epi32(1))
}

/// `|y|`, one ulp up where `y <= 0`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tie_magnitude(y: __m256) -> __m256 {
    let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), y);
    _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(a), tie_ulp(y)))
}

// ---- unpacking -----------------------------------------------------------------------------------
//
// A plane of `p`-bit fields gives lane `l` the `w = slots · p` bits at bit `w · l`
// ([`crate::packing`]): 16 bits (a 128-wide block's 4-bit plane), 8 (its 2-bit plane; a 64-wide
// block's 4-bit plane), 4 (a 128-wide 1-bit plane; a 64-wide 2-bit plane) or 2 (a 64-wide 1-bit
// plane). A plane is spread to one byte per lane (two vectors for 16 bits), then split into its
// slots' fields: per slot 32 bytes, byte `l` = lane `l`'s field.

/// A plane whose lanes own one byte each (32 bytes): byte `l` is lane `l`'s already.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn byte_per_lane(plane: &[u8]) -> __m256i {
    let plane = &plane[..32];
    // SAFETY: `plane` holds 32 bytes.
    unsafe { _mm256_loadu_si256(plane.as_ptr().cast()) }
}

/// A plane whose lanes own a nibble each (16 bytes), spread to byte `l` = lane `l`'s nibble.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn nibble_per_lane(plane: &[u8]) -> __m256i {
    let plane = &plane[..16];
    // SAFETY: `plane` holds 16 bytes.
    let x = unsafe { _mm_loadu_si128(plane.as_ptr().cast()) };
    let m = _mm_set1_epi8(0x0F);
    let (lo, hi) = (
        _mm_and_si128(x, m),
        _mm_and_si128(_mm_srli_epi16::<4>(x), m),
    );
    _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi))
}

/// A plane whose lanes own two bytes each (64 bytes): lane `l`'s bytes `2l` (slots 0, 1) and
/// `2l + 1` (slots 2, 3), spread to byte `l` of two vectors.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn two_bytes_per_lane(plane: &[u8]) -> [__m256i; 2] {
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
    [
        _mm256_permute2x128_si256::<0x20>(a, b), // byte 2l of every lane
        _mm256_permute2x128_si256::<0x31>(a, b), // byte 2l + 1
    ]
}

/// A 64-wide block's 1-bit plane (8 bytes): lane `l` owns bits `2l` (slot 0) and `2l + 1`
/// (slot 1). Returns the two slots' fields. No byte belongs to one lane here, so each lane gets a
/// copy of its byte (`l / 4`) and tests its own bit.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn bit_pairs(plane: &[u8]) -> [__m256i; 2] {
    let bits = u64::from_le_bytes(plane[..8].try_into().unwrap());
    // every 128-bit half holds the 8 bytes; byte `l` of the result takes byte `l / 4`
    #[rustfmt::skip]
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi64x(bits as i64),
        _mm256_setr_epi8(
            0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
            4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7,
        ),
    );
    let one = _mm256_set1_epi8(1);
    // byte `l`'s bit of slot `s` is `1 << (2·(l % 4) + s)`: bytes 01 04 10 40, then 02 08 20 80
    let field = |mask: i32| {
        let m = _mm256_set1_epi32(mask);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, m), m);
        _mm256_and_si256(set, one)
    };
    [field(0x4010_0401), field(0x8020_0802_u32 as i32)]
}

/// Splits bytes holding `slots.len()` fields of `p` bits (slot `s` at bit `p·s`) into one vector
/// per slot. A byte holds all of its fields, so 16-bit shifts never bring in a neighbour's bits
/// that the mask keeps.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn split_fields(v: __m256i, p: u32, slots: &mut [__m256i]) {
    let m = _mm256_set1_epi8((1u8 << p).wrapping_sub(1) as i8);
    for (s, f) in slots.iter_mut().enumerate() {
        let shift = _mm_cvtsi32_si128(p as i32 * s as i32);
        *f = _mm256_and_si256(_mm256_srl_epi16(v, shift), m);
    }
}

/// The `p`-bit fields of one plane of a block with `slots` slots a lane, per slot (the first
/// `slots` entries).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn plane_fields(plane: &[u8], p: u32, slots: usize) -> [__m256i; SLOTS] {
    let mut fields = [_mm256_setzero_si256(); SLOTS];
    match slots * p as usize {
        16 => {
            let [low, high] = two_bytes_per_lane(plane);
            let (a, b) = fields.split_at_mut(slots / 2);
            split_fields(low, p, a);
            split_fields(high, p, b);
        }
        8 => split_fields(byte_per_lane(plane), p, &mut fields[..slots]),
        4 => split_fields(nibble_per_lane(plane), p, &mut fields[..slots]),
        2 => fields[..2].copy_from_slice(&bit_pairs(plane)),
        _ => unreachable!("a lane owns 2, 4, 8 or 16 bits of a plane"),
    }
    fields
}

/// The codes of one block, per slot (the first `spec.slots()`): byte `l` of `codes[s]` is the code
/// of coordinate `32s + l`. The planes' fields are shifted into place (a code is at most 6 bits,
/// so 16-bit shifts never carry into the next byte).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unpack_slots<const T: usize>(qs: &[u8]) -> [__m256i; SLOTS] {
    let spec = const { spec_of(T) };
    let slots = spec.slots();
    let mut codes = [_mm256_setzero_si256(); SLOTS];
    let (mut base, mut shift) = (0usize, 0i32);
    for &p in spec.planes {
        let fields = plane_fields(&qs[base..], p, slots);
        let count = _mm_cvtsi32_si128(shift);
        for (c, f) in codes.iter_mut().zip(fields).take(slots) {
            *c = _mm256_or_si256(*c, _mm256_sll_epi16(f, count));
        }
        base += LANES * slots * p as usize / 8;
        shift += p as i32;
    }
    codes
}

// ---- everything that looks up a table, once per instruction set -------------------------------------
//
// A function inlines only callees whose target features it has, so a look-up with AVX-512's
// permutes must sit in functions that enable AVX-512 all the way up to the entry point. The
// macro stamps these functions once per instruction set: `isa_avx2` (AVX2 + FMA) and `isa_avx512` (the
// same code with AVX-512 F + VL enabled, whose `W` look-ups use the two-source permutes).

/// The spec of the type with C ABI value `t`, for the functions specialised per type.
const fn spec_of(t: usize) -> &'static TypeSpec {
    TbqType::ALL[t].spec()
}

/// [`spec_of`] of a type specialised with its block width `N` (`by_type!`): checks, at compile
/// time, that the two agree.
const fn width_of<const T: usize, const N: usize>() -> &'static TypeSpec {
    let spec = spec_of(T);
    assert!(spec.block == N, "a type's loops run at its own block width");
    spec
}

/// `f::<T, N>(args)` with `T` the C ABI value of `ty` and `N` its block width: each type's loops
/// compiled for that type (`TbqType::with_spec` does the same through a closure, which the
/// functions here cannot take: they are too large to be inlined into it).
macro_rules! by_type {
    ($ty:expr, $f:ident($($a:expr),*)) => {
        match $ty {
            TbqType::Tbq4_0 => $f::<0, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq3_0 => $f::<1, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq5_0 => $f::<2, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq6_0 => $f::<3, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq3_1 => $f::<4, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq4_1 => $f::<5, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq5_1 => $f::<6, BLOCK_ELEMS>($($a),*),
            TbqType::Tbq4_0_64 => $f::<7, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq3_0_64 => $f::<8, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq5_0_64 => $f::<9, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq6_0_64 => $f::<10, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq3_1_64 => $f::<11, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq4_1_64 => $f::<12, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq5_1_64 => $f::<13, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq3_1_64c => $f::<14, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq4_1_64c => $f::<15, NARROW_BLOCK_ELEMS>($($a),*),
            TbqType::Tbq5_1_64c => $f::<16, NARROW_BLOCK_ELEMS>($($a),*),
        }
    };
}

macro_rules! lookups {
    ($name:ident, $feat:literal, $w:literal) => {
        pub(crate) mod $name {
            use super::*;

            /// Whether look-ups use AVX-512's permutes.
            const W: bool = $w;

            /// `table[idx]` for 8 indices (i32 lanes); `W`: with AVX-512 F + VL (the caller's promise).
            #[target_feature(enable = $feat)]
            #[inline]
            fn lookup(t: &Table, idx: __m256i) -> __m256 {
                if W && t.pieces > 1 {
                    // SAFETY: `W` is set only under entry points that enable AVX-512 F + VL, whose CPU
                    // check the caller made.
                    return unsafe { lookup512(t, idx) };
                }
                let mut v = [_mm256_setzero_ps(); 8];
                for (vk, tk) in v.iter_mut().zip(&t.v).take(t.pieces) {
                    *vk = _mm256_permutevar8x32_ps(*tk, idx);
                }
                let (mut n, mut bit) = (t.pieces, 3);
                while n > 1 {
                    // the index's bit `bit` moved to the sign bit, which blendv reads
                    let select =
                        _mm256_castsi256_ps(_mm256_sll_epi32(idx, _mm_cvtsi32_si128(31 - bit)));
                    for k in 0..n / 2 {
                        v[k] = _mm256_blendv_ps(v[2 * k], v[2 * k + 1], select);
                    }
                    n /= 2;
                    bit += 1;
                }
                v[0]
            }

            /// # Safety
            /// AVX-512 F + VL.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn lookup512(t: &Table, idx: __m256i) -> __m256 {
                if t.pieces == 2 {
                    return _mm256_permutex2var_ps(t.v[0], idx, t.v[1]);
                }
                let p = t.flat.0.as_ptr();
                // SAFETY: `flat` holds 64 floats, 64-byte aligned.
                let z = |k: usize| unsafe { _mm512_load_ps(p.add(16 * k)) };
                // the upper 8 index lanes are whatever the cast leaves: their results are dropped
                let i = _mm512_castsi256_si512(idx);
                let lo = _mm512_castps512_ps256(_mm512_permutex2var_ps(z(0), i, z(1)));
                if t.pieces == 4 {
                    return lo;
                }
                let hi = _mm512_castps512_ps256(_mm512_permutex2var_ps(z(2), i, z(3)));
                let upper = _mm256_test_epi32_mask(idx, _mm256_set1_epi32(32));
                _mm256_mask_blend_ps(upper, lo, hi)
            }

            /// `#{t : z > t}` for 8 magnitudes `z ≥ 0`.
            #[target_feature(enable = $feat)]
            #[inline]
            fn count(enc: &Encoder, z: __m256) -> __m256i {
                let b = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_mul_ps(z, enc.scale), enc.last));
                let below = _mm256_castps_si256(lookup(&enc.below, b));
                let above = _mm256_cmp_ps::<_CMP_GT_OQ>(z, lookup(&enc.inside, b));
                // a true comparison is -1 in every bit: subtracting it counts
                _mm256_sub_epi32(below, _mm256_castps_si256(above))
            }

            /// The code and `|level|` of 8 values: [`TypeSpec::encode`] and [`TypeSpec::level`].
            #[target_feature(enable = $feat)]
            #[inline]
            fn encode(enc: &Encoder, y: __m256) -> (__m256i, __m256) {
                let zero = _mm256_setzero_ps();
                let pos = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(y, zero));
                let n = count(enc, tie_magnitude(y));
                // h ^ n above zero, (h - 1) ^ n else
                (
                    _mm256_xor_si256(n, _mm256_sub_epi32(enc.h1, pos)),
                    lookup(&enc.half, n),
                )
            }

            /// `C[c_i]` of one block's codes `qs`, in the block layout.
            #[target_feature(enable = $feat)]
            #[inline]
            fn block_levels<const T: usize>(levels: &Table, qs: &[u8]) -> Vecs {
                let slots = const { spec_of(T).slots() };
                let mut out = [_mm256_setzero_ps(); VECS];
                for (s, codes) in unpack_slots::<T>(qs).into_iter().enumerate().take(slots) {
                    let lo = _mm256_castsi256_si128(codes);
                    let hi = _mm256_extracti128_si256::<1>(codes);
                    let idx = [
                        _mm256_cvtepu8_epi32(lo),
                        _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(lo)),
                        _mm256_cvtepu8_epi32(hi),
                        _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(hi)),
                    ];
                    for (j, idx) in idx.into_iter().enumerate() {
                        out[4 * s + j] = lookup(&levels, idx);
                    }
                }
                out
            }

            // ---- quantize ------------------------------------------------------------------------------------

            /// [`crate::reference::quantize_block`], operation for operation.
            #[target_feature(enable = $feat)]
            #[inline]
            fn quantize_block<const T: usize, const N: usize>(
                enc: &Encoder,
                x: &[f32],
                out: &mut [u8],
            ) {
                let spec = const { spec_of(T) };
                let vecs = N / 8;
                let (header, qs) = out.split_at_mut(spec.header_bytes());

                let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
                let inf = _mm256_set1_ps(f32::INFINITY);
                let mut w = load_block::<N>(x);
                for (k, wk) in w.iter_mut().enumerate().take(vecs) {
                    let finite = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(*wk, abs), inf);
                    *wk = _mm256_and_ps(finite, apply_signs(*wk, k));
                }
                fwht::<N>(&mut w);
                let s = sum_squares::<N>(&w);
                if s == 0.0 || !s.is_finite() {
                    header.fill(0);
                    qs.fill(0);
                    return;
                }

                // y = w·√N/||w||, or for a compact header w/(8·d) with the scale d chosen first
                // (reference::quantize_block)
                let norm_w = s.sqrt();
                let code = if spec.compact { scale8_code(s) } else { 0 };
                let k = _mm256_set1_ps(if spec.compact {
                    scale8_inverse8(code)
                } else {
                    sqrt_n(N) / norm_w
                });
                let mut y = w;
                for yi in y.iter_mut().take(vecs) {
                    *yi = _mm256_mul_ps(*yi, k);
                }
                // `r` holds |r_i|: only its squares are used (the norm below)
                let mut codes = [_mm256_setzero_si256(); VECS];
                let mut r = [_mm256_setzero_ps(); VECS];
                let gains = if spec.sub_scales {
                    encode_groups::<T>(enc, &y, &mut codes, &mut r)
                } else {
                    for ((c, ri), yi) in codes.iter_mut().zip(r.iter_mut()).zip(&y).take(vecs) {
                        (*c, *ri) = encode(enc, *yi);
                    }
                    0
                };
                if spec.compact {
                    header[0] = code;
                    header[1] = gains as u8;
                } else {
                    let d = norm_w / (sqrt_n(N) * sum_squares::<N>(&r).sqrt());
                    header[..D_BYTES].copy_from_slice(&f16::from_f32(d.min(D_MAX)).to_le_bytes());
                    if spec.sub_scales {
                        header[D_BYTES..].copy_from_slice(&gains.to_le_bytes());
                    }
                }

                let mut wide = [0i32; BLOCK_ELEMS];
                for (k, c) in codes.iter().enumerate().take(vecs) {
                    let dst = &mut wide[8 * k..8 * k + 8];
                    // SAFETY: `dst` holds 8 i32.
                    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), *c) };
                }
                let mut bytes = [0u8; BLOCK_ELEMS];
                for (b, c) in bytes.iter_mut().zip(wide) {
                    *b = c as u8;
                }
                pack(spec, &bytes[..N], qs);
            }

            /// The reference's `encode_groups`: per group (= slot) the first gain with the least error
            /// (summed as the warp sums it); codes and `|r|` of the winner; the gains word.
            ///
            /// A trial needs only `|y_i|` and `n = #{t : z > t}` of `|y_i| · g_(15-k)`: the level has the
            /// sign of `y_i`, so `(y_i - g_k · C[c_i])² = (|y_i| - g_k · half[n])²` bit for bit (IEEE
            /// negation is exact). Where `y_i · g_(15-k)` underflows to 0 for a tiny positive `y_i` the
            /// reference's level is negative, but `|y_i| ± g_k · half[0]` then rounds to `±g_k · half[0]`
            /// alike. Every group's 16 errors are summed in the warp's order, so the chosen gain is the
            /// reference's.
            #[target_feature(enable = $feat)]
            #[inline]
            fn encode_groups<const T: usize>(
                enc: &Encoder,
                y: &Vecs,
                codes: &mut [__m256i; VECS],
                r: &mut Vecs,
            ) -> u16 {
                let slots = const { spec_of(T).slots() };
                let sign = _mm256_set1_ps(-0.0);
                let mut a = [_mm256_setzero_ps(); VECS];
                let mut ulp = [_mm256_setzero_si256(); VECS];
                for v in 0..4 * slots {
                    a[v] = _mm256_andnot_ps(sign, y[v]);
                    ulp[v] = tie_ulp(y[v]);
                }
                let mut err = [[0.0f32; 16]; SLOTS];
                for (k, &g) in GAINS.iter().enumerate() {
                    let (inv, g) = (_mm256_set1_ps(GAINS[15 - k]), _mm256_set1_ps(g));
                    for (s, err) in err.iter_mut().enumerate().take(slots) {
                        let mut e = [_mm256_setzero_ps(); 4];
                        for (j, e) in e.iter_mut().enumerate() {
                            let v = 4 * s + j;
                            let z = _mm256_add_epi32(
                                _mm256_castps_si256(_mm256_mul_ps(a[v], inv)),
                                ulp[v],
                            );
                            let m = lookup(&enc.half, count(enc, _mm256_castsi256_ps(z)));
                            let diff = _mm256_sub_ps(a[v], _mm256_mul_ps(g, m));
                            *e = _mm256_mul_ps(diff, diff);
                        }
                        err[k] = warp_sum(e);
                    }
                }
                let mut word = 0u16;
                for (s, err) in err.iter().enumerate().take(slots) {
                    let mut best = (f32::INFINITY, 0usize);
                    for (k, &e) in err.iter().enumerate() {
                        if e < best.0 {
                            best = (e, k);
                        }
                    }
                    let (_, k) = best;
                    let (inv, g) = (_mm256_set1_ps(GAINS[15 - k]), _mm256_set1_ps(GAINS[k]));
                    for v in 4 * s..4 * s + 4 {
                        let (c, m) = encode(enc, _mm256_mul_ps(y[v], inv));
                        codes[v] = c;
                        r[v] = _mm256_mul_ps(g, m);
                    }
                    word |= (k as u16) << (4 * s);
                }
                word
            }

            /// Quantizes a row (the parent module says what it promises).
            ///
            /// # Safety
            /// The instruction set of this module; the lengths `crate::cpu` checks.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn quantize_row(ty: TbqType, x: &[f32], out: &mut [u8]) {
                by_type!(ty, quantize_row_t(x, out))
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn quantize_row_t<const T: usize, const N: usize>(x: &[f32], out: &mut [u8]) {
                let spec = const { width_of::<T, N>() };
                let enc = Encoder::new(spec);
                for (xb, ob) in x
                    .chunks_exact(N)
                    .zip(out.chunks_exact_mut(spec.block_bytes()))
                {
                    quantize_block::<T, N>(&enc, xb, ob);
                }
            }

            // ---- dequantize, dot, accumulate -----------------------------------------------------------------

            /// Calls `f(block, scales, levels)` for each block of a row: the group scales `d·g_s` and
            /// `C[c_i]` in the block layout.
            #[target_feature(enable = $feat)]
            #[inline]
            fn for_each_block<const T: usize>(
                x: &[u8],
                mut f: impl FnMut(usize, [f32; SLOTS], &Vecs),
            ) {
                let spec = const { spec_of(T) };
                let levels = levels(spec);
                for (b, xb) in x.chunks_exact(spec.block_bytes()).enumerate() {
                    let c = block_levels::<T>(&levels, &xb[spec.header_bytes()..]);
                    f(b, group_scales(spec, xb), &c);
                }
            }

            /// Dequantizes a row (the parent module says what it promises).
            ///
            /// # Safety
            /// The instruction set of this module; the lengths `crate::cpu` checks.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn dequantize_row(ty: TbqType, src: &[u8], out: &mut [f32]) {
                by_type!(ty, dequantize_row_t(src, out))
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn dequantize_row_t<const T: usize, const N: usize>(src: &[u8], out: &mut [f32]) {
                let spec = const { width_of::<T, N>() };
                let src = &src[..spec.block_bytes() * (out.len() / N)];
                for_each_block::<T>(src, |b, scales, c| {
                    let mut v = *c;
                    for (k, x) in v.iter_mut().enumerate().take(N / 8) {
                        *x = _mm256_mul_ps(_mm256_set1_ps(scales[k / 4]), *x);
                    }
                    unrotate_block::<N>(&mut v);
                    store_block::<N>(&v, &mut out[N * b..]);
                })
            }

            /// `Σ q·x̂` for a rotated query (the parent module says what it promises).
            ///
            /// # Safety
            /// The instruction set of this module; the lengths `crate::cpu` checks.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn vec_dot_rotated(ty: TbqType, x: &[u8], q_rot: &[f32]) -> f32 {
                by_type!(ty, vec_dot_rotated_t(x, q_rot))
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn vec_dot_rotated_t<const T: usize, const N: usize>(x: &[u8], q_rot: &[f32]) -> f32 {
                let spec = const { width_of::<T, N>() };
                let x = &x[..spec.block_bytes() * (q_rot.len() / N)];
                // blocks summed one after the other, as the reference does, so that a row's dot is
                // the sum of its blocks' dots (tbq_vec_dot_f32 rotates and scores block by block)
                let mut sum = 0.0f32;
                for_each_block::<T>(x, |b, scales, c| {
                    let q = &q_rot[N * b..];
                    let mut total = _mm256_setzero_ps();
                    for (s, &scale) in scales.iter().enumerate().take(N / LANES) {
                        let mut acc = _mm256_mul_ps(load(&q[32 * s..]), c[4 * s]);
                        for j in 1..4 {
                            acc = _mm256_fmadd_ps(load(&q[32 * s + 8 * j..]), c[4 * s + j], acc);
                        }
                        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale), total);
                    }
                    sum += hsum(total);
                });
                sum
            }

            /// `acc += scale · T(x̂)` (the parent module says what it promises).
            ///
            /// # Safety
            /// The instruction set of this module; the lengths `crate::cpu` checks.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(crate) unsafe fn mad_rotated(ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) {
                by_type!(ty, mad_rotated_t(x, scale, acc))
            }

            #[target_feature(enable = $feat)]
            #[inline]
            fn mad_rotated_t<const T: usize, const N: usize>(
                x: &[u8],
                scale: f32,
                acc: &mut [f32],
            ) {
                let spec = const { width_of::<T, N>() };
                let x = &x[..spec.block_bytes() * (acc.len() / N)];
                for_each_block::<T>(x, |b, scales, c| {
                    let a = &mut acc[N * b..];
                    for (s, &g) in scales.iter().enumerate().take(N / LANES) {
                        let w = _mm256_set1_ps(scale * g);
                        for j in 0..4 {
                            let a = &mut a[32 * s + 8 * j..];
                            store(a, _mm256_fmadd_ps(c[4 * s + j], w, load(a)));
                        }
                    }
                })
            }

            /// [`TypeSpec::encode`] and `|level|` of `y` (a multiple of 8 values), for the tests.
            ///
            /// # Safety
            /// The instruction set of this module.
            #[cfg(test)]
            #[target_feature(enable = $feat)]
            pub(crate) unsafe fn encode_values(
                spec: &TypeSpec,
                y: &[f32],
                codes: &mut [i32],
                mags: &mut [f32],
            ) {
                let enc = Encoder::new(spec);
                for ((y, c), m) in y
                    .chunks_exact(8)
                    .zip(codes.chunks_exact_mut(8))
                    .zip(mags.chunks_exact_mut(8))
                {
                    let (cv, mv) = encode(&enc, load(y));
                    // SAFETY: `c` holds 8 i32.
                    unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), cv) };
                    store(m, mv);
                }
            }
        }
    };
}

lookups!(isa_avx2, "avx2,fma", false);
lookups!(isa_avx512, "avx512f,avx512vl,avx2,fma", true);

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucketed encoder against [`TypeSpec::encode`] where it is hardest: on every threshold,
    /// one ulp either side, at ±0, denormals, beyond the last bucket, and at the threshold over
    /// every gain (the values the sub-scaled trials meet).
    #[test]
    fn bucketed_encode_is_the_reference_encode() {
        let mut isas = vec![];
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            isas.push(false);
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                isas.push(true);
            }
        }
        for ty in TbqType::ALL {
            let spec = ty.spec();
            let up = |v: f32| f32::from_bits(v.to_bits() + 1);
            let down = |v: f32| f32::from_bits(v.to_bits() - 1);
            let mut y = vec![0.0, -0.0, 1e-45, -1e-45, 1e-38, 17.5, -17.5, 3.9, 1e30];
            for &t in spec.bounds_half {
                for v in [t, up(t), down(t)] {
                    y.push(v);
                    for g in GAINS {
                        y.extend([v * g, down(v * g), up(v * g)]);
                    }
                }
            }
            for b in 0..=64 * 16 {
                y.push(b as f32 / 256.0);
            }
            let neg: Vec<f32> = y.iter().map(|v| -v).collect();
            y.extend(neg);
            y.resize(y.len().next_multiple_of(8), 0.0);
            for &wide in &isas {
                let (mut codes, mut mags) = (vec![0i32; y.len()], vec![0.0f32; y.len()]);
                // SAFETY: the CPU has the instruction set (checked above).
                unsafe {
                    if wide {
                        isa_avx512::encode_values(spec, &y, &mut codes, &mut mags);
                    } else {
                        isa_avx2::encode_values(spec, &y, &mut codes, &mut mags);
                    }
                }
                for ((&v, &c), &m) in y.iter().zip(&codes).zip(&mags) {
                    let want = spec.encode(v);
                    assert_eq!(c, want as i32, "{ty}, avx512 {wide}: code of {v:e}");
                    assert_eq!(
                        m,
                        spec.level(want).abs(),
                        "{ty}, avx512 {wide}: |level| of {v:e}"
                    );
                }
            }
        }
    }
}
