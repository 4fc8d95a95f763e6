//! The rotation is orthogonal, the normalized Hadamard transform is its own inverse, and the
//! packing round-trips every code.

mod common;

use common::gaussian;
use tbq::packing::{pack, unpack};
use tbq::rotation::{fwht, rotate_block, sign, unrotate_block, SIGNS};
use tbq::{TbqType, BLOCK_ELEMS};

fn basis(i: usize) -> [f32; BLOCK_ELEMS] {
    let mut e = [0.0; BLOCK_ELEMS];
    e[i] = 1.0;
    e
}

#[test]
fn rotation_is_orthogonal() {
    let cols: Vec<[f32; BLOCK_ELEMS]> = (0..BLOCK_ELEMS)
        .map(|i| {
            let mut e = basis(i);
            rotate_block(&mut e);
            e
        })
        .collect();
    for i in 0..BLOCK_ELEMS {
        for j in 0..BLOCK_ELEMS {
            let d: f64 = cols[i]
                .iter()
                .zip(&cols[j])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((d - want).abs() < 1e-6, "T^T T [{i},{j}] = {d}");
        }
    }
}

#[test]
fn normalized_hadamard_is_its_own_inverse() {
    let x = gaussian(11, BLOCK_ELEMS);
    let mut v: [f32; BLOCK_ELEMS] = x.clone().try_into().unwrap();
    fwht(&mut v);
    fwht(&mut v);
    for (a, b) in v.iter().zip(&x) {
        assert!((a / 128.0 - b).abs() < 1e-5);
    }
}

#[test]
fn unrotate_inverts_rotate() {
    let x = gaussian(12, 64 * BLOCK_ELEMS);
    for xb in x.chunks(BLOCK_ELEMS) {
        let mut v: [f32; BLOCK_ELEMS] = xb.try_into().unwrap();
        rotate_block(&mut v);
        assert_ne!(&v[..], xb);
        unrotate_block(&mut v);
        for (a, b) in v.iter().zip(xb) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

/// The 64-point rotation of the `_64` types: orthogonal (T^T T = I in f64), `H₆₄·H₆₄ = 64·I`,
/// the first 64 signs, and exactly the scale 1/8.
#[test]
fn the_64_point_rotation_is_orthogonal_and_uses_the_first_64_signs() {
    let n = 64;
    let cols: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut e = vec![0.0f32; n];
            e[i] = 1.0;
            rotate_block(&mut e);
            e
        })
        .collect();
    for i in 0..n {
        // column i is D_ii times row i of H / 8: entries ±1/8 exactly
        assert!(cols[i].iter().all(|&v| v.abs() == 0.125), "column {i}");
        assert_eq!(cols[i][0], 0.125 * sign(i), "column {i} carries sign {i}");
        for j in 0..n {
            let d: f64 = cols[i]
                .iter()
                .zip(&cols[j])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            assert_eq!(d, if i == j { 1.0 } else { 0.0 }, "T^T T [{i},{j}]");
        }
    }
    let x = gaussian(13, 16 * n);
    for xb in x.chunks(n) {
        let mut v = xb.to_vec();
        fwht(&mut v);
        fwht(&mut v);
        assert!(v.iter().zip(xb).all(|(a, b)| (a / 64.0 - b).abs() < 1e-5));
        let mut v = xb.to_vec();
        rotate_block(&mut v);
        unrotate_block(&mut v);
        assert!(v.iter().zip(xb).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}

#[test]
fn signs_are_the_format_constant() {
    assert_eq!(SIGNS, 0xde57_3c58_3fea_2df6_af21_e4f2_aa31_bcb4);
    assert_eq!((0..BLOCK_ELEMS).filter(|&i| sign(i) < 0.0).count(), 72);
    assert_eq!((sign(0), sign(2), sign(127)), (1.0, -1.0, -1.0));
}

#[test]
fn packing_round_trips_every_code() {
    for ty in TbqType::ALL {
        let spec = ty.spec();
        for seed in 0..64u32 {
            let mut codes = [0u8; BLOCK_ELEMS];
            for (i, c) in codes.iter_mut().enumerate() {
                *c = ((i as u32).wrapping_mul(2654435761u32).rotate_left(seed) >> 7) as u8
                    % spec.levels() as u8;
            }
            let mut packed = vec![0u8; spec.code_bytes()];
            pack(spec, &codes, &mut packed);
            let mut back = [0u8; BLOCK_ELEMS];
            unpack(spec, &packed, &mut back);
            let n = spec.block;
            assert_eq!(codes[..n], back[..n], "{ty}");
        }
    }
}

/// The documented layout, spelled out: tbq4_0 lane l owns bytes 2l..2l+2 (slot 0 in the low
/// nibble); tbq3_0 lane l owns byte l of the low plane and nibble l of the high plane.
#[test]
fn packing_layout_is_lane_major() {
    let mut codes = [0u8; BLOCK_ELEMS];
    codes[5] = 0xF; // lane 5, slot 0
    codes[5 + 96] = 0x3; // lane 5, slot 3
    let mut p4 = vec![0u8; 64];
    pack(TbqType::Tbq4_0.spec(), &codes, &mut p4);
    assert_eq!((p4[10], p4[11]), (0x0F, 0x30));
    assert_eq!(p4.iter().filter(|&&b| b != 0).count(), 2);

    let mut codes = [0u8; BLOCK_ELEMS];
    codes[7] = 0b111; // lane 7, slot 0: low bits 11, high bit 1
    codes[7 + 64] = 0b101; // lane 7, slot 2: low bits 01, high bit 1
    let mut p3 = vec![0u8; 48];
    pack(TbqType::Tbq3_0.spec(), &codes, &mut p3);
    assert_eq!(p3[7], 0b0001_0011);
    assert_eq!(p3[32 + 3], 0b0101_0000); // lane 7 = high nibble of byte 3
    assert_eq!(p3.iter().filter(|&&b| b != 0).count(), 2);
}

/// The 64-wide layout: two slots a lane. tbq4_0_64 lane l owns byte l (slot 0 low nibble);
/// tbq3_0_64 lane l owns nibble l of the 16-byte low plane and bits 2l..2l+2 of the 8-byte high
/// plane.
#[test]
fn packing_layout_of_the_64_wide_types() {
    let mut codes = [0u8; BLOCK_ELEMS];
    codes[5] = 0xF; // lane 5, slot 0
    codes[5 + 32] = 0x3; // lane 5, slot 1
    let mut p4 = vec![0u8; 32];
    pack(TbqType::Tbq4_0_64.spec(), &codes, &mut p4);
    assert_eq!(p4[5], 0x3F);
    assert_eq!(p4.iter().filter(|&&b| b != 0).count(), 1);

    let mut codes = [0u8; BLOCK_ELEMS];
    codes[7] = 0b111; // lane 7, slot 0: low bits 11, high bit 1
    codes[7 + 32] = 0b101; // lane 7, slot 1: low bits 01, high bit 1
    let mut p3 = vec![0u8; 24];
    pack(TbqType::Tbq3_0_64.spec(), &codes, &mut p3);
    assert_eq!(p3[3], 0b0111_0000); // lane 7 = high nibble of byte 3: slot 0 = 11, slot 1 = 01
    assert_eq!(p3[16 + 1], 0b1100_0000); // lane 7 = bits 6..8 of byte 1 of the high plane
    assert_eq!(p3.iter().filter(|&&b| b != 0).count(), 2);
}
