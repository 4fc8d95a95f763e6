//! Code packing: lane-major bit planes.
//!
//! Coordinate `i` belongs to lane `i % 32`, slot `i / 32`. A code of `bits` bits is split into
//! planes of 1, 2 or 4 bits (low bits first, [`crate::format::TypeSpec::planes`]). A plane of
//! `p` bits is `16·p` bytes: lane `l` owns the `4·p` bits starting at bit `4·p·l`, holding the
//! `p`-bit fields of its slots 0, 1, 2, 3 from the low end up. A 64-wide block has two slots a
//! lane: its planes are `8·p` bytes and lane `l` owns the `2·p` bits at bit `2·p·l`.
//!
//! Why: in the CUDA kernels one warp handles one block and lane `l` handles coordinates
//! `l, l+32, l+64, l+96`. Per plane the warp then reads one contiguous run of `16·p` bytes,
//! each lane an aligned `4·p`-bit field (a u16 for tbq4_0, a byte and a nibble for tbq3_0), and
//! the Walsh-Hadamard stages of span 32 and 64 stay inside a lane. Widths 5 and 6 are planes of
//! 4+1 and 4+2 bits: no new packing code.

use crate::format::{TypeSpec, LANES};

/// Bytes of a plane of `p`-bit fields of a block with `slots` slots a lane.
const fn plane_bytes(p: u32, slots: usize) -> usize {
    LANES * slots * p as usize / 8
}

/// Lane `lane`'s `slots·p`-bit field of a plane. Fields span at most 2 bytes.
#[inline(always)]
fn read_field(plane: &[u8], p: u32, slots: usize, lane: usize) -> u32 {
    let width = slots * p as usize;
    let bit = width * lane;
    let (byte, shift) = (bit / 8, bit % 8);
    let span = (width + shift).div_ceil(8);
    let mut window = 0u32;
    for (k, &b) in plane[byte..byte + span].iter().enumerate() {
        window |= (b as u32) << (8 * k);
    }
    (window >> shift) & ((1u32 << width) - 1)
}

/// Writes lane `lane`'s field into a zeroed plane.
#[inline(always)]
fn write_field(plane: &mut [u8], p: u32, slots: usize, lane: usize, field: u32) {
    let width = slots * p as usize;
    let bit = width * lane;
    let (byte, shift) = (bit / 8, bit % 8);
    let window = field << shift;
    let span = (width + shift).div_ceil(8);
    for (k, b) in plane[byte..byte + span].iter_mut().enumerate() {
        *b |= (window >> (8 * k)) as u8;
    }
}

/// Packs a block's `spec.block` codes (`codes[..spec.block]`) into `out` (`spec.code_bytes()`
/// bytes).
pub fn pack(spec: &TypeSpec, codes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), spec.code_bytes());
    let slots = spec.slots();
    out.fill(0);
    let (mut shift, mut base) = (0, 0);
    for &p in spec.planes {
        let mask = (1u32 << p) - 1;
        let plane = &mut out[base..base + plane_bytes(p, slots)];
        for lane in 0..LANES {
            let mut field = 0u32;
            for slot in 0..slots {
                field |= ((codes[lane + LANES * slot] as u32 >> shift) & mask) << (p * slot as u32);
            }
            write_field(plane, p, slots, lane, field);
        }
        shift += p;
        base += plane_bytes(p, slots);
    }
}

/// Calls `f(i, code)` for each of the codes of a block, lane by lane (slots 0–3 of lane 0, then
/// of lane 1, …): every plane's field of a lane is read once.
#[inline(always)]
pub fn for_each_code(spec: &TypeSpec, src: &[u8], mut f: impl FnMut(usize, u8)) {
    debug_assert_eq!(src.len(), spec.code_bytes());
    const MAX_PLANES: usize = 3;
    debug_assert!(spec.planes.len() <= MAX_PLANES);
    let slots = spec.slots();
    for lane in 0..LANES {
        let mut fields = [0u32; MAX_PLANES];
        let mut base = 0;
        for (field, &p) in fields.iter_mut().zip(spec.planes) {
            *field = read_field(&src[base..base + plane_bytes(p, slots)], p, slots, lane);
            base += plane_bytes(p, slots);
        }
        for slot in 0..slots {
            let mut code = 0u32;
            let mut shift = 0;
            for (field, &p) in fields.iter().zip(spec.planes) {
                code |= ((field >> (p * slot as u32)) & ((1 << p) - 1)) << shift;
                shift += p;
            }
            f(lane + LANES * slot, code as u8);
        }
    }
}

/// Unpacks a block's codes from `src` (`spec.code_bytes()` bytes) into `codes[..spec.block]`.
pub fn unpack(spec: &TypeSpec, src: &[u8], codes: &mut [u8]) {
    for_each_code(spec, src, |i, c| codes[i] = c);
}
