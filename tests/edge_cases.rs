//! Bad input: non-finite values, degenerate blocks, wrong lengths, short buffers. Every case
//! has a documented, deterministic result and nothing spreads beyond its own block.

mod common;

use common::gaussian;
use tbq::reference::{
    dequantize_row, quantize_row, quantize_row_f16, rotate, validate, vec_dot, vec_dot_rotated,
};
use tbq::{Error, TbqType, BLOCK_ELEMS};

fn quantize(ty: TbqType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len())];
    quantize_row(ty, x, &mut q).unwrap();
    q
}

#[test]
fn non_finite_values_read_as_zero_and_stay_in_their_block() {
    for ty in TbqType::ALL {
        let n = ty.block_elems();
        let clean = gaussian(21, 3 * n);
        let mut dirty = clean.clone();
        dirty[n + 4] = f32::NAN;
        dirty[n + 9] = f32::INFINITY;
        dirty[n + 60] = f32::NEG_INFINITY;
        let (qc, qd) = (quantize(ty, &clean), quantize(ty, &dirty));
        let bb = ty.block_bytes();
        assert_eq!(qc[..bb], qd[..bb], "block before untouched");
        assert_eq!(qc[2 * bb..], qd[2 * bb..], "block after untouched");
        let mut zeroed = clean.clone();
        for i in [4, 9, 60] {
            zeroed[n + i] = 0.0;
        }
        assert_eq!(qd, quantize(ty, &zeroed), "non-finite elements read as 0");
        let mut y = vec![0.0f32; dirty.len()];
        dequantize_row(ty, &qd, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn zero_and_all_nan_blocks_are_the_zero_block() {
    for ty in TbqType::ALL {
        for x in [
            vec![0.0f32; BLOCK_ELEMS],
            vec![f32::NAN; BLOCK_ELEMS],
            vec![f32::INFINITY; BLOCK_ELEMS],
        ] {
            let q = quantize(ty, &x);
            assert!(q.iter().all(|&b| b == 0));
            let mut y = vec![1.0f32; BLOCK_ELEMS];
            dequantize_row(ty, &q, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0));
            assert_eq!(vec_dot(ty, &q, &gaussian(1, BLOCK_ELEMS)).unwrap(), 0.0);
        }
    }
}

#[test]
fn overflowing_rows_are_zero_blocks_and_huge_norms_saturate() {
    for ty in TbqType::ALL {
        let over: Vec<f32> = gaussian(22, BLOCK_ELEMS).iter().map(|v| v * 1e30).collect();
        assert!(
            quantize(ty, &over).iter().all(|&b| b == 0),
            "sum of squares overflows f32"
        );
        let huge: Vec<f32> = gaussian(22, BLOCK_ELEMS).iter().map(|v| v * 1e7).collect();
        let q = quantize(ty, &huge);
        let d = tbq::reference::block_d(ty.spec(), &q);
        let top = if ty.spec().compact {
            tbq::format::scale8_value(255)
        } else {
            65504.0
        };
        assert_eq!(d, top, "{ty}: the scale saturates");
        assert!(validate(ty, &q).is_ok());
    }
}

#[test]
fn f16_rows_quantize_like_their_f32_values() {
    for ty in TbqType::ALL {
        let x: Vec<half::f16> = gaussian(23, 4 * BLOCK_ELEMS)
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        let x32: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
        let mut q = vec![0u8; ty.row_bytes(x.len())];
        quantize_row_f16(ty, &x, &mut q).unwrap();
        assert_eq!(q, quantize(ty, &x32));
    }
}

#[test]
fn wrong_lengths_and_short_buffers_are_refused_without_writing() {
    let ty = TbqType::Tbq4_0;
    let x = gaussian(24, 2 * BLOCK_ELEMS);
    let mut q = vec![0xAAu8; ty.row_bytes(x.len())];
    assert_eq!(
        quantize_row(ty, &x[..200], &mut q),
        Err(Error::Length { n: 200, block: 128 })
    );
    assert_eq!(
        quantize_row(ty, &[], &mut q),
        Err(Error::Length { n: 0, block: 128 })
    );
    assert_eq!(
        quantize_row(ty, &x, &mut q[..100]),
        Err(Error::Buffer {
            need: 132,
            have: 100
        })
    );
    assert!(q.iter().all(|&b| b == 0xAA), "nothing written on error");
    quantize_row(ty, &x, &mut q).unwrap();
    let mut y = vec![0.0f32; 2 * BLOCK_ELEMS];
    assert!(matches!(
        dequantize_row(ty, &q[..131], &mut y),
        Err(Error::Buffer { .. })
    ));
    assert!(matches!(
        vec_dot(ty, &q[..66], &x),
        Err(Error::Buffer { .. })
    ));
    let mut r = vec![0.0f32; 100];
    assert!(matches!(
        rotate(&x, &mut r, BLOCK_ELEMS),
        Err(Error::Buffer { .. })
    ));
    assert!(matches!(
        vec_dot_rotated(ty, &q, &x[..130]),
        Err(Error::Length { n: 130, block: 128 })
    ));
}

#[test]
fn narrow_types_take_rows_of_64_and_refuse_other_widths() {
    let (wide, narrow) = (TbqType::Tbq4_0, TbqType::Tbq4_0_64);
    let x = gaussian(25, 3 * 64);
    let mut q = vec![0u8; narrow.row_bytes(x.len())];
    assert_eq!(q.len(), 3 * 34);
    quantize_row(narrow, &x, &mut q).unwrap();
    let mut big = vec![0u8; 4 * wide.block_bytes()];
    assert_eq!(
        quantize_row(wide, &x, &mut big),
        Err(Error::Length { n: 192, block: 128 })
    );
    assert_eq!(
        quantize_row(narrow, &x[..96], &mut q),
        Err(Error::Length { n: 96, block: 64 })
    );
    let mut r = vec![0.0f32; x.len()];
    rotate(&x, &mut r, 64).unwrap();
    assert_eq!(rotate(&x, &mut r, 96), Err(Error::BlockWidth { block: 96 }));
    assert_eq!(
        rotate(&x, &mut r, BLOCK_ELEMS),
        Err(Error::Length { n: 192, block: 128 })
    );
}

#[test]
fn validate_finds_corrupted_norms() {
    let ty = TbqType::Tbq3_0;
    let mut q = quantize(ty, &gaussian(25, 3 * BLOCK_ELEMS));
    assert_eq!(validate(ty, &q), Ok(()));
    q[2 * 50..2 * 50 + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    assert_eq!(validate(ty, &q), Err(Error::NonFinite { block: 2 }));
    assert!(matches!(validate(ty, &q[..70]), Err(Error::Buffer { .. })));
}
