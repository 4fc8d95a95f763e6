//! The tbq block format, version 1 — the one place it is defined.
//!
//! One block holds 128 consecutive elements of one head's K or V vector (one rotation group):
//! an IEEE half `d` (the corrected norm), for the sub-scaled types (`tbqN_1`) a u16 of four 4-bit
//! group gains, then 128 codes of `bits` bits each. Every width also exists for 64-element blocks
//! (`tbq4_0_64`, …: a 64-point rotation, two slots per lane, two gain groups in the low byte of
//! the gains word) for models whose heads are 64 wide; llama.cpp picks them for the user
//! ([`TbqType::for_head_dim`]). The sub-scaled 64-wide types also exist with a compact header
//! (`tbq4_1_64c`, …): one byte of log scale and one byte of the two gains instead of a half `d`
//! and a gains word, so they store `tbqN_1`'s 0.25 bits per element over the codes at both widths;
//! they are what a head_dim-64 model gets for `-ctk tbq4_1` ([`scale8_value`]). Everything a type needs — its codebook, its
//! bit planes, whether it has gains, its size — is an entry of [`TbqType::spec`]; the quantizer,
//! packer and kernels are written once for all of them.
//!
//! Sub-scales: coordinate `i` of the rotated block belongs to group `i / 32` (= its slot in the
//! canonical lane layout, so a warp lane holds one coordinate of every group). Group `s` is
//! reconstructed as `d · GAINS[g_s] · C[c_i]`, with the gain index `g_s` in bits `4s..4s+4` of the
//! gains word; the encoder picks each group's gain to minimise that group's squared error.
//!
//! The format is frozen: golden vectors under `tests/data/golden` pin every byte. A change is a
//! new type, never an edit of an existing one.

use crate::codebook;

/// Elements per block of the 128-wide types (the family's main width, and the largest block):
/// one Walsh-Hadamard rotation group. [`TypeSpec::block`] is a type's own width.
pub const BLOCK_ELEMS: usize = 128;

/// Elements per block of the 64-wide variants (`tbq4_0_64`, …), for heads 64 wide.
pub const NARROW_BLOCK_ELEMS: usize = 64;

/// Lanes of the canonical 32-lane layout: coordinate `i` belongs to lane `i % 32`, slot `i / 32`.
///
/// This is how a CUDA warp holds a block (4 coordinates per lane), and the CPU reference follows
/// the same order wherever float rounding depends on it (norm sums), so GPU and CPU agree bit for
/// bit.
pub const LANES: usize = 32;

/// Coordinates per lane of a 128-wide block (the most any type has; a 64-wide block has 2).
pub const SLOTS: usize = BLOCK_ELEMS / LANES;

/// Bytes of the corrected norm `d` (an IEEE half) that starts every block.
pub const D_BYTES: usize = 2;

/// Bytes of the gains word of the sub-scaled types (four 4-bit gain indices; a 64-wide block uses
/// the low two and keeps the word whole, so its codes stay 2-byte aligned as ggml's half-typed
/// blocks require).
pub const GAINS_BYTES: usize = 2;

/// Coordinates per gain group of the sub-scaled types: group `s` = slot `s`.
pub const GROUP_ELEMS: usize = 32;

/// The largest finite IEEE half; `d` saturates there instead of becoming infinite.
pub const D_MAX: f32 = 65504.0;

/// `2^(f/8)`, f = 0..7, as f32: the mantissas of the compact header's scale ([`scale8_value`]).
pub const SCALE8_MANTISSAS: [f32; 8] = [
    1.0,
    1.0905077,
    1.1892071,
    1.2968396,
    std::f32::consts::SQRT_2,
    1.5422108,
    1.6817929,
    1.8340081,
];

/// The scale a compact header's byte `k` stands for: 0 for `k = 0` (an all-zero block), else
/// `2^((k − 128)/8)` = `SCALE8_MANTISSAS[f] · 2^e` with `k − 128 = 8e + f` — exact in f32 (a
/// power of two times a table entry), so every implementation gets the same bits. The range,
/// `2^−15.9 … 2^15.9`, is an IEEE half's normal range; the step `2^(1/8)` is absorbed by the
/// gains, which the encoder fits after the scale is chosen ([`crate::reference`]).
#[inline]
pub fn scale8_value(k: u8) -> f32 {
    if k == 0 {
        return 0.0;
    }
    let q = k as i32 - 128;
    SCALE8_MANTISSAS[(q & 7) as usize] * f32::from_bits(((127 + (q >> 3)) as u32) << 23)
}

/// The tbq cache types. The discriminants are the C ABI's `tbq_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TbqType {
    /// 4-bit codes, 16 levels, 66 bytes per 128 elements (4.125 bits per element).
    Tbq4_0 = 0,
    /// 3-bit codes, 8 levels, 50 bytes per 128 elements (3.125 bits per element).
    Tbq3_0 = 1,
    /// 5-bit codes, 32 levels, 82 bytes per 128 elements (5.125 bits per element).
    Tbq5_0 = 2,
    /// 6-bit codes, 64 levels, 98 bytes per 128 elements (6.125 bits per element).
    Tbq6_0 = 3,
    /// 3-bit codes with per-32 gains, 52 bytes per 128 elements (3.25 bits per element).
    Tbq3_1 = 4,
    /// 4-bit codes with per-32 gains, 68 bytes per 128 elements (4.25 bits per element).
    Tbq4_1 = 5,
    /// 5-bit codes with per-32 gains, 84 bytes per 128 elements (5.25 bits per element).
    Tbq5_1 = 6,
    /// tbq4_0 for 64-wide heads: 34 bytes per 64 elements (4.25 bits per element).
    Tbq4_0_64 = 7,
    /// tbq3_0 for 64-wide heads: 26 bytes per 64 elements (3.25 bits per element).
    Tbq3_0_64 = 8,
    /// tbq5_0 for 64-wide heads: 42 bytes per 64 elements (5.25 bits per element).
    Tbq5_0_64 = 9,
    /// tbq6_0 for 64-wide heads: 50 bytes per 64 elements (6.25 bits per element).
    Tbq6_0_64 = 10,
    /// tbq3_1 for 64-wide heads: 28 bytes per 64 elements (3.5 bits per element).
    Tbq3_1_64 = 11,
    /// tbq4_1 for 64-wide heads: 36 bytes per 64 elements (4.5 bits per element).
    Tbq4_1_64 = 12,
    /// tbq5_1 for 64-wide heads: 44 bytes per 64 elements (5.5 bits per element).
    Tbq5_1_64 = 13,
    /// tbq3_1 for 64-wide heads with the compact header: 26 bytes per 64 elements (3.25 bits).
    Tbq3_1_64c = 14,
    /// tbq4_1 for 64-wide heads with the compact header: 34 bytes per 64 elements (4.25 bits).
    Tbq4_1_64c = 15,
    /// tbq5_1 for 64-wide heads with the compact header: 42 bytes per 64 elements (5.25 bits).
    Tbq5_1_64c = 16,
}

/// Everything that distinguishes one width of the family from another.
#[derive(Debug)]
pub struct TypeSpec {
    /// The name ggml and llama.cpp's `-ctk/-ctv` use.
    pub name: &'static str,
    /// Elements per block (one rotation group): 128, or 64 for the `_64` variants.
    pub block: usize,
    /// Bits per code.
    pub bits: u32,
    /// Positive half of the Lloyd-Max codebook for the standard normal, ascending; the
    /// negative half mirrors it.
    pub codebook_half: &'static [f32],
    /// All levels, ascending: code `c` reconstructs to `levels[c]`.
    pub levels: &'static [f32],
    /// Decision thresholds between neighbouring positive levels, ascending (midpoints).
    pub bounds_half: &'static [f32],
    /// Widths of the bit planes a code is split into, low bits first. Planes of 1, 2 or 4 bits
    /// keep every lane's field nibble-aligned, so a GPU lane reads its 4 codes of a plane with
    /// one aligned load of 4·p bits.
    pub planes: &'static [u32],
    /// Whether the block carries per-32 gains ([`codebook::GAINS`] indices) after `d`.
    pub sub_scales: bool,
    /// Whether the header is compact (64-wide sub-scaled types only): byte 0 the scale's code
    /// ([`scale8_value`]), byte 1 the two gains (group `s` in bits `4s..4s+4`), instead of a half
    /// `d` and a gains word.
    pub compact: bool,
}

impl TypeSpec {
    /// Bytes before the codes: `d`, and the gains word of a sub-scaled type.
    pub const fn header_bytes(&self) -> usize {
        if self.compact {
            2
        } else {
            D_BYTES + if self.sub_scales { GAINS_BYTES } else { 0 }
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(&self) -> usize {
        self.header_bytes() + self.code_bytes()
    }

    /// Bytes of codes per block.
    pub const fn code_bytes(&self) -> usize {
        self.block * self.bits as usize / 8
    }

    /// Coordinates per lane of the canonical layout (4, or 2 for a 64-wide block); also the
    /// number of gain groups of a sub-scaled type.
    pub const fn slots(&self) -> usize {
        self.block / LANES
    }

    /// Number of code levels (2^bits).
    pub const fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Bits per element, including the norm.
    pub fn bits_per_element(&self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block as f64
    }

    /// Reconstruction level of code `c` (0 = most negative level).
    #[inline(always)]
    pub fn level(&self, c: u8) -> f32 {
        self.levels[c as usize]
    }

    /// The code of the level nearest to `y`. A value exactly on a threshold, and zero, go to the
    /// lower level: `code = #{ thresholds t : y > t }` over the full, ascending threshold list.
    #[inline(always)]
    pub fn encode(&self, y: f32) -> u8 {
        let h = self.codebook_half.len() as u8;
        if y > 0.0 {
            h + self.bounds_half.iter().filter(|&&t| y > t).count() as u8
        } else {
            let a = -y;
            h - 1 - self.bounds_half.iter().filter(|&&t| a >= t).count() as u8
        }
    }
}

/// The spec of a width: its Lloyd-Max codebook and bit planes (planes of 1, 2 or 4 bits, low
/// bits first: 3 = 2+1, 5 = 4+1, 6 = 4+2).
macro_rules! spec {
    ($name:literal, $block:expr, $bits:literal, $half:ident, $levels:ident, $bounds:ident, $planes:expr, $sub:literal) => {
        spec!($name, $block, $bits, $half, $levels, $bounds, $planes, $sub, false)
    };
    ($name:literal, $block:expr, $bits:literal, $half:ident, $levels:ident, $bounds:ident, $planes:expr, $sub:literal, $compact:literal) => {
        TypeSpec {
            name: $name,
            block: $block,
            bits: $bits,
            codebook_half: &codebook::$half,
            levels: &codebook::$levels,
            bounds_half: &codebook::$bounds,
            planes: &$planes,
            sub_scales: $sub,
            compact: $compact,
        }
    };
}

// One line per type: the table a reader checks against the README and tbq.h.
#[rustfmt::skip]
const TBQ4_0: TypeSpec = spec!("tbq4_0", 128, 4, NORMAL_16, NORMAL_16_LEVELS, NORMAL_16_BOUNDS, [4], false);
#[rustfmt::skip]
const TBQ3_0: TypeSpec = spec!("tbq3_0", 128, 3, NORMAL_8, NORMAL_8_LEVELS, NORMAL_8_BOUNDS, [2, 1], false);
#[rustfmt::skip]
const TBQ5_0: TypeSpec = spec!("tbq5_0", 128, 5, NORMAL_32, NORMAL_32_LEVELS, NORMAL_32_BOUNDS, [4, 1], false);
#[rustfmt::skip]
const TBQ6_0: TypeSpec = spec!("tbq6_0", 128, 6, NORMAL_64, NORMAL_64_LEVELS, NORMAL_64_BOUNDS, [4, 2], false);
#[rustfmt::skip]
const TBQ3_1: TypeSpec = spec!("tbq3_1", 128, 3, NORMAL_8, NORMAL_8_LEVELS, NORMAL_8_BOUNDS, [2, 1], true);
#[rustfmt::skip]
const TBQ4_1: TypeSpec = spec!("tbq4_1", 128, 4, NORMAL_16, NORMAL_16_LEVELS, NORMAL_16_BOUNDS, [4], true);
#[rustfmt::skip]
const TBQ5_1: TypeSpec = spec!("tbq5_1", 128, 5, NORMAL_32, NORMAL_32_LEVELS, NORMAL_32_BOUNDS, [4, 1], true);
#[rustfmt::skip]
const TBQ4_0_64: TypeSpec = spec!("tbq4_0_64", 64, 4, NORMAL_16, NORMAL_16_LEVELS, NORMAL_16_BOUNDS, [4], false);
#[rustfmt::skip]
const TBQ3_0_64: TypeSpec = spec!("tbq3_0_64", 64, 3, NORMAL_8, NORMAL_8_LEVELS, NORMAL_8_BOUNDS, [2, 1], false);
#[rustfmt::skip]
const TBQ5_0_64: TypeSpec = spec!("tbq5_0_64", 64, 5, NORMAL_32, NORMAL_32_LEVELS, NORMAL_32_BOUNDS, [4, 1], false);
#[rustfmt::skip]
const TBQ6_0_64: TypeSpec = spec!("tbq6_0_64", 64, 6, NORMAL_64, NORMAL_64_LEVELS, NORMAL_64_BOUNDS, [4, 2], false);
#[rustfmt::skip]
const TBQ3_1_64: TypeSpec = spec!("tbq3_1_64", 64, 3, NORMAL_8, NORMAL_8_LEVELS, NORMAL_8_BOUNDS, [2, 1], true);
#[rustfmt::skip]
const TBQ4_1_64: TypeSpec = spec!("tbq4_1_64", 64, 4, NORMAL_16, NORMAL_16_LEVELS, NORMAL_16_BOUNDS, [4], true);
#[rustfmt::skip]
const TBQ5_1_64: TypeSpec = spec!("tbq5_1_64", 64, 5, NORMAL_32, NORMAL_32_LEVELS, NORMAL_32_BOUNDS, [4, 1], true);
#[rustfmt::skip]
const TBQ3_1_64C: TypeSpec = spec!("tbq3_1_64c", 64, 3, NORMAL_8, NORMAL_8_LEVELS, NORMAL_8_BOUNDS, [2, 1], true, true);
#[rustfmt::skip]
const TBQ4_1_64C: TypeSpec = spec!("tbq4_1_64c", 64, 4, NORMAL_16, NORMAL_16_LEVELS, NORMAL_16_BOUNDS, [4], true, true);
#[rustfmt::skip]
const TBQ5_1_64C: TypeSpec = spec!("tbq5_1_64c", 64, 5, NORMAL_32, NORMAL_32_LEVELS, NORMAL_32_BOUNDS, [4, 1], true, true);

impl TbqType {
    /// Every type, in C ABI order.
    pub const ALL: [TbqType; 17] = [
        TbqType::Tbq4_0,
        TbqType::Tbq3_0,
        TbqType::Tbq5_0,
        TbqType::Tbq6_0,
        TbqType::Tbq3_1,
        TbqType::Tbq4_1,
        TbqType::Tbq5_1,
        TbqType::Tbq4_0_64,
        TbqType::Tbq3_0_64,
        TbqType::Tbq5_0_64,
        TbqType::Tbq6_0_64,
        TbqType::Tbq3_1_64,
        TbqType::Tbq4_1_64,
        TbqType::Tbq5_1_64,
        TbqType::Tbq3_1_64c,
        TbqType::Tbq4_1_64c,
        TbqType::Tbq5_1_64c,
    ];

    /// The 128-wide types: the names a user writes (`-ctk tbq4_0`).
    pub const WIDE: [TbqType; 7] = [
        TbqType::Tbq4_0,
        TbqType::Tbq3_0,
        TbqType::Tbq5_0,
        TbqType::Tbq6_0,
        TbqType::Tbq3_1,
        TbqType::Tbq4_1,
        TbqType::Tbq5_1,
    ];

    /// The table entry that defines this width.
    pub const fn spec(self) -> &'static TypeSpec {
        match self {
            TbqType::Tbq4_0 => &TBQ4_0,
            TbqType::Tbq4_0_64 => &TBQ4_0_64,
            TbqType::Tbq3_0 => &TBQ3_0,
            TbqType::Tbq3_0_64 => &TBQ3_0_64,
            TbqType::Tbq5_0 => &TBQ5_0,
            TbqType::Tbq5_0_64 => &TBQ5_0_64,
            TbqType::Tbq6_0 => &TBQ6_0,
            TbqType::Tbq6_0_64 => &TBQ6_0_64,
            TbqType::Tbq3_1 => &TBQ3_1,
            TbqType::Tbq3_1_64 => &TBQ3_1_64,
            TbqType::Tbq4_1 => &TBQ4_1,
            TbqType::Tbq4_1_64 => &TBQ4_1_64,
            TbqType::Tbq5_1 => &TBQ5_1,
            TbqType::Tbq5_1_64 => &TBQ5_1_64,
            TbqType::Tbq3_1_64c => &TBQ3_1_64C,
            TbqType::Tbq4_1_64c => &TBQ4_1_64C,
            TbqType::Tbq5_1_64c => &TBQ5_1_64C,
        }
    }

    /// The type with C ABI value `v`, if any.
    pub fn from_abi(v: i32) -> Option<TbqType> {
        TbqType::ALL.into_iter().find(|t| *t as i32 == v)
    }

    /// The type ggml calls `name` (`"tbq4_0"`), if any.
    pub fn from_name(name: &str) -> Option<TbqType> {
        TbqType::ALL.into_iter().find(|t| t.spec().name == name)
    }

    /// Calls `f` with this type's table entry as a compile-time constant: each width's hot loop
    /// is compiled (and unrolled) for that width, from one generic body.
    #[inline(always)]
    pub fn with_spec<R>(self, f: impl FnOnce(&'static TypeSpec) -> R) -> R {
        match self {
            TbqType::Tbq4_0 => f(&TBQ4_0),
            TbqType::Tbq4_0_64 => f(&TBQ4_0_64),
            TbqType::Tbq3_0 => f(&TBQ3_0),
            TbqType::Tbq3_0_64 => f(&TBQ3_0_64),
            TbqType::Tbq5_0 => f(&TBQ5_0),
            TbqType::Tbq5_0_64 => f(&TBQ5_0_64),
            TbqType::Tbq6_0 => f(&TBQ6_0),
            TbqType::Tbq6_0_64 => f(&TBQ6_0_64),
            TbqType::Tbq3_1 => f(&TBQ3_1),
            TbqType::Tbq3_1_64 => f(&TBQ3_1_64),
            TbqType::Tbq4_1 => f(&TBQ4_1),
            TbqType::Tbq4_1_64 => f(&TBQ4_1_64),
            TbqType::Tbq5_1 => f(&TBQ5_1),
            TbqType::Tbq5_1_64 => f(&TBQ5_1_64),
            TbqType::Tbq3_1_64c => f(&TBQ3_1_64C),
            TbqType::Tbq4_1_64c => f(&TBQ4_1_64C),
            TbqType::Tbq5_1_64c => f(&TBQ5_1_64C),
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.spec().block_bytes()
    }

    /// Elements per block (128, or 64 for a `_64` variant).
    pub fn block_elems(self) -> usize {
        self.spec().block
    }

    /// Bytes of a row of `n` elements (`n` a multiple of [`TbqType::block_elems`]).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    /// The 128-wide type of the same width (itself for a 128-wide type): the name a user writes.
    pub fn wide(self) -> TbqType {
        use TbqType::*;
        match self {
            Tbq4_0 | Tbq4_0_64 => Tbq4_0,
            Tbq3_0 | Tbq3_0_64 => Tbq3_0,
            Tbq5_0 | Tbq5_0_64 => Tbq5_0,
            Tbq6_0 | Tbq6_0_64 => Tbq6_0,
            Tbq3_1 | Tbq3_1_64 | Tbq3_1_64c => Tbq3_1,
            Tbq4_1 | Tbq4_1_64 | Tbq4_1_64c => Tbq4_1,
            Tbq5_1 | Tbq5_1_64 | Tbq5_1_64c => Tbq5_1,
        }
    }

    /// The 64-wide variant a 64-wide head gets for this name (itself for a 64-wide type): the
    /// compact-header type of a sub-scaled width, which stores what the 128-wide one does per
    /// element (the first `_64` sub-scaled types, 0.25 bits more, stay for caches that use them).
    pub fn narrow(self) -> TbqType {
        use TbqType::*;
        match self {
            Tbq4_0 => Tbq4_0_64,
            Tbq3_0 => Tbq3_0_64,
            Tbq5_0 => Tbq5_0_64,
            Tbq6_0 => Tbq6_0_64,
            Tbq3_1 => Tbq3_1_64c,
            Tbq4_1 => Tbq4_1_64c,
            Tbq5_1 => Tbq5_1_64c,
            narrow => narrow,
        }
    }

    /// The variant that stores heads of `head_dim` elements: the 128-wide type when 128 divides
    /// the head, else the 64-wide one when 64 does, else `None` (the head cannot be blocked).
    pub fn for_head_dim(self, head_dim: usize) -> Option<TbqType> {
        if head_dim > 0 && head_dim.is_multiple_of(BLOCK_ELEMS) {
            Some(self.wide())
        } else if head_dim > 0 && head_dim.is_multiple_of(NARROW_BLOCK_ELEMS) {
            Some(self.narrow())
        } else {
            None
        }
    }
}

impl std::fmt::Display for TbqType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.spec().name)
    }
}

/// A tbq4_0 block as C sees it (`tbq4_0_block` in `tbq.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTbq4_0 {
    /// Corrected norm, IEEE half bits.
    pub d: u16,
    /// 128 4-bit codes, lane-major.
    pub qs: [u8; 64],
}

/// A tbq3_0 block as C sees it (`tbq3_0_block` in `tbq.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTbq3_0 {
    /// Corrected norm, IEEE half bits.
    pub d: u16,
    /// 32 bytes of low 2-bit fields, then 16 bytes of high bits, lane-major.
    pub qs: [u8; 48],
}

/// A block of a plain wider type (`tbq5_0`: N = 80, `tbq6_0`: N = 96) as C sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTbqWide<const N: usize> {
    /// Corrected norm, IEEE half bits.
    pub d: u16,
    /// 128 codes: a 64-byte 4-bit plane, then the 1-bit (N = 80) or 2-bit (N = 96) plane.
    pub qs: [u8; N],
}

/// A block of a sub-scaled type (`tbq3_1`: N = 48, `tbq4_1`: 64, `tbq5_1`: 80) as C sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTbqSub<const N: usize> {
    /// Corrected norm, IEEE half bits.
    pub d: u16,
    /// Gain index of group s (coordinates 32s..32s+31 of the rotated block) in bits 4s..4s+4.
    pub g: u16,
    /// 128 codes, planes as in the `_0` type of the same width.
    pub qs: [u8; N],
}

/// A block of a compact-header type (`tbq3_1_64c`: N = 24, `tbq4_1_64c`: 32, `tbq5_1_64c`: 40).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTbqCompact<const N: usize> {
    /// The scale's code ([`scale8_value`]).
    pub scale: u8,
    /// Gain index of group 0 in bits 0..4, of group 1 in bits 4..8.
    pub g: u8,
    /// 64 codes, planes as in the `_64` type of the same width.
    pub qs: [u8; N],
}

const _: () = assert!(std::mem::size_of::<BlockTbq4_0>() == 66);
const _: () = assert!(TBQ5_0.block_bytes() == std::mem::size_of::<BlockTbqWide<80>>());
const _: () = assert!(TBQ6_0.block_bytes() == std::mem::size_of::<BlockTbqWide<96>>());
const _: () = assert!(TBQ3_1.block_bytes() == std::mem::size_of::<BlockTbqSub<48>>());
const _: () = assert!(TBQ4_1.block_bytes() == std::mem::size_of::<BlockTbqSub<64>>());
const _: () = assert!(TBQ5_1.block_bytes() == std::mem::size_of::<BlockTbqSub<80>>());
const _: () = assert!(std::mem::size_of::<BlockTbq3_0>() == 50);
const _: () = assert!(TBQ4_0_64.block_bytes() == 34 && TBQ3_0_64.block_bytes() == 26);
const _: () = assert!(TBQ5_1_64.block_bytes() == 44 && TBQ3_1_64.block_bytes() == 28);
const _: () = assert!(TBQ3_1_64C.block_bytes() == 26 && TBQ4_1_64C.block_bytes() == 34);
const _: () = assert!(TBQ5_1_64C.block_bytes() == std::mem::size_of::<BlockTbqCompact<40>>());
const _: () = assert!(TBQ4_0.block_bytes() == std::mem::size_of::<BlockTbq4_0>());
const _: () = assert!(TBQ3_0.block_bytes() == std::mem::size_of::<BlockTbq3_0>());
