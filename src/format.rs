//! The tbq block format, version 1 — the one place it is defined.
//!
//! One block holds 128 consecutive elements of one head's K or V vector (one rotation group):
//! an IEEE half `d` (the corrected norm) followed by 128 codes of `bits` bits each. Everything a
//! width needs — its codebook, its bit planes, its size — is an entry of [`TbqType::spec`]; the
//! quantizer, packer and kernels are written once for all widths.
//!
//! The format is frozen: golden vectors under `tests/data/golden` pin every byte. A change is a
//! new type, never an edit of an existing one.

use crate::codebook;

/// Elements per block: one Walsh-Hadamard rotation group.
pub const BLOCK_ELEMS: usize = 128;

/// Lanes of the canonical 32-lane layout: coordinate `i` belongs to lane `i % 32`, slot `i / 32`.
///
/// This is how a CUDA warp holds a block (4 coordinates per lane), and the CPU reference follows
/// the same order wherever float rounding depends on it (norm sums), so GPU and CPU agree bit for
/// bit.
pub const LANES: usize = 32;

/// Coordinates per lane.
pub const SLOTS: usize = BLOCK_ELEMS / LANES;

/// Bytes of the block header: the half-precision corrected norm `d`.
pub const HEADER_BYTES: usize = 2;

/// The largest finite IEEE half; `d` saturates there instead of becoming infinite.
pub const D_MAX: f32 = 65504.0;

/// The tbq cache types. The discriminants are the C ABI's `tbq_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TbqType {
    /// 4-bit codes, 16 levels, 66 bytes per 128 elements (4.125 bits per element).
    Tbq4_0 = 0,
    /// 3-bit codes, 8 levels, 50 bytes per 128 elements (3.125 bits per element).
    Tbq3_0 = 1,
}

/// Everything that distinguishes one width of the family from another.
#[derive(Debug)]
pub struct TypeSpec {
    /// The name ggml and llama.cpp's `-ctk/-ctv` use.
    pub name: &'static str,
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
}

impl TypeSpec {
    /// Bytes per block.
    pub const fn block_bytes(&self) -> usize {
        HEADER_BYTES + BLOCK_ELEMS * self.bits as usize / 8
    }

    /// Bytes of codes per block.
    pub const fn code_bytes(&self) -> usize {
        BLOCK_ELEMS * self.bits as usize / 8
    }

    /// Number of code levels (2^bits).
    pub const fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Bits per element, including the norm.
    pub fn bits_per_element(&self) -> f64 {
        (self.block_bytes() * 8) as f64 / BLOCK_ELEMS as f64
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

const TBQ4_0: TypeSpec = TypeSpec {
    name: "tbq4_0",
    bits: 4,
    codebook_half: &codebook::NORMAL_16,
    levels: &codebook::NORMAL_16_LEVELS,
    bounds_half: &codebook::NORMAL_16_BOUNDS,
    planes: &[4],
};

const TBQ3_0: TypeSpec = TypeSpec {
    name: "tbq3_0",
    bits: 3,
    codebook_half: &codebook::NORMAL_8,
    levels: &codebook::NORMAL_8_LEVELS,
    bounds_half: &codebook::NORMAL_8_BOUNDS,
    planes: &[2, 1],
};

impl TbqType {
    /// Every type, in C ABI order.
    pub const ALL: [TbqType; 2] = [TbqType::Tbq4_0, TbqType::Tbq3_0];

    /// The table entry that defines this width.
    pub fn spec(self) -> &'static TypeSpec {
        match self {
            TbqType::Tbq4_0 => &TBQ4_0,
            TbqType::Tbq3_0 => &TBQ3_0,
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
            TbqType::Tbq3_0 => f(&TBQ3_0),
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.spec().block_bytes()
    }

    /// Bytes of a row of `n` elements (`n` a multiple of [`BLOCK_ELEMS`]).
    pub fn row_bytes(self, n: usize) -> usize {
        n / BLOCK_ELEMS * self.block_bytes()
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

const _: () = assert!(std::mem::size_of::<BlockTbq4_0>() == 66);
const _: () = assert!(std::mem::size_of::<BlockTbq3_0>() == 50);
const _: () = assert!(TBQ4_0.block_bytes() == std::mem::size_of::<BlockTbq4_0>());
const _: () = assert!(TBQ3_0.block_bytes() == std::mem::size_of::<BlockTbq3_0>());
