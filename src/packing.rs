//! Code packing: lane-major bit planes.
//!
//! Coordinate `i` belongs to lane `i % 32`, slot `i / 32`. A code of `bits` bits is split into
//! planes of 1, 2 or 4 bits (low bits first, [`crate::format::TypeSpec::planes`]). A plane of
//! `p` bits is `16·p` bytes: lane `l` owns the `4·p` bits starting at bit `4·p·l`, holding the
//! `p`-bit fields of its slots 0, 1, 2, 3 from the low end up.
//!
//! Why: in the CUDA kernels one warp handles one block and lane `l` handles coordinates
//! `l, l+32, l+64, l+96`. Per plane the warp then reads one contiguous run of `16·p` bytes,
//! each lane an aligned `4·p`-bit field (a u16 for tbq4_0, a byte and a nibble for tbq3_0), and
//! the Walsh-Hadamard stages of span 32 and 64 stay inside a lane. Widths 5 and 6 are planes of
//! 4+1 and 4+2 bits: no new packing code.

use crate::format::{TypeSpec, BLOCK_ELEMS, LANES, SLOTS};

/// Packs 128 codes into `out` (`spec.code_bytes()` bytes).
pub fn pack(spec: &TypeSpec, codes: &[u8; BLOCK_ELEMS], out: &mut [u8]) {
    debug_assert_eq!(out.len(), spec.code_bytes());
    out.fill(0);
    let mut shift = 0;
    let mut base = 0;
    for &p in spec.planes {
        let mask = (1u32 << p) - 1;
        for lane in 0..LANES {
            let mut field = 0u32;
            for slot in 0..SLOTS {
                field |= ((codes[lane + LANES * slot] as u32 >> shift) & mask) << (p * slot as u32);
            }
            // The field is 4·p bits at a nibble-aligned bit offset: write it a nibble at a time.
            for nib in 0..p {
                let bit = 4 * p * lane as u32 + 4 * nib;
                out[base + (bit / 8) as usize] |= (((field >> (4 * nib)) & 0xF) << (bit % 8)) as u8;
            }
        }
        shift += p;
        base += 16 * p as usize;
    }
}

/// Unpacks 128 codes from `src` (`spec.code_bytes()` bytes).
pub fn unpack(spec: &TypeSpec, src: &[u8], codes: &mut [u8; BLOCK_ELEMS]) {
    debug_assert_eq!(src.len(), spec.code_bytes());
    codes.fill(0);
    let mut shift = 0;
    let mut base = 0;
    for &p in spec.planes {
        let mask = (1u32 << p) - 1;
        for lane in 0..LANES {
            let mut field = 0u32;
            for nib in 0..p {
                let bit = 4 * p * lane as u32 + 4 * nib;
                field |= ((src[base + (bit / 8) as usize] as u32 >> (bit % 8)) & 0xF) << (4 * nib);
            }
            for slot in 0..SLOTS {
                codes[lane + LANES * slot] |=
                    (((field >> (p * slot as u32)) & mask) << shift) as u8;
            }
        }
        shift += p;
        base += 16 * p as usize;
    }
}
