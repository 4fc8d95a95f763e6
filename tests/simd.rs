//! The SIMD path (`tbq::cpu`) against the scalar reference, on fresh random rows every run (the
//! seed is printed, `TBQ_SEED=<n>` replays it) and on the golden vectors.
//!
//! Every instruction set this machine has runs ([`cpu::Isa::available`]: the AVX2 path and, where
//! the CPU has AVX-512 F + VL, the AVX-512 look-ups), on every type of both block widths: rows of
//! 64 (the `_64` types: one block, as SmolLM2's heads), 128 and 256 elements.
//!
//! Tolerances: quantize, dequantize, rotate and unrotate are bit-exact. `vec_dot_rotated` and
//! `mad_rotated` reorder and fuse the f32 sums, so they agree within `1e-5 · Σ|term|` (the sum of
//! the absolute values of the products summed; f32's epsilon is 6e-8, a 256-term sum in 8 lanes
//! rounds at most ~40 times).

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use tbq::{cpu, reference, TbqType, BLOCK_ELEMS};

const TOLERANCE: f32 = 1e-5;

/// Row lengths the tests run: one 64-wide block, and one and two 128-wide blocks.
const ROW_LENGTHS: [usize; 3] = [BLOCK_ELEMS / 2, BLOCK_ELEMS, 2 * BLOCK_ELEMS];

/// The types whose blocks tile a row of `n` elements (the `_64` types tile every length here).
fn types_for(n: usize) -> impl Iterator<Item = TbqType> {
    TbqType::ALL
        .into_iter()
        .filter(move |ty| n.is_multiple_of(ty.block_elems()))
}

fn seed() -> u64 {
    let seed = std::env::var("TBQ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!(
        "simd: seed {seed} (TBQ_SEED={seed} replays it); instruction sets: {:?}",
        cpu::Isa::available()
    );
    seed
}

/// `rows` rows of `n` floats: Gaussian, each row with its own scale over 12 decades, an
/// occasional outlier channel, never all zero.
fn random_rows(rng: &mut StdRng, rows: usize, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        let scale = 10f32.powf(rng.random_range(-6.0..6.0));
        let outlier = rng.random_range(0..n);
        for i in 0..n {
            let g: f32 = StandardNormal.sample(rng);
            x.push(if i == outlier && rng.random_bool(0.3) {
                40.0 * scale
            } else {
                g * scale
            });
        }
    }
    x
}

#[test]
fn quantize_and_dequantize_are_bit_exact() {
    let mut rng = StdRng::seed_from_u64(seed());
    for n in ROW_LENGTHS {
        let x = random_rows(&mut rng, 64, n);
        for ty in types_for(n) {
            let rb = ty.row_bytes(n);
            let (mut want, mut got) = (vec![0u8; 64 * rb], vec![0u8; 64 * rb]);
            for (xr, w) in x.chunks(n).zip(want.chunks_mut(rb)) {
                reference::quantize_row(ty, xr, w).unwrap();
            }
            for isa in cpu::Isa::available() {
                for (xr, g) in x.chunks(n).zip(got.chunks_mut(rb)) {
                    cpu::quantize_row_on(isa, ty, xr, g).unwrap();
                }
                assert_eq!(got, want, "{ty}, n = {n}, {isa:?}: quantized bytes");
            }

            let (mut want_y, mut got_y) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            for (p, w) in want.chunks(rb).zip(want_y.chunks_mut(n)) {
                reference::dequantize_row(ty, p, w).unwrap();
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for isa in cpu::Isa::available() {
                for (p, g) in want.chunks(rb).zip(got_y.chunks_mut(n)) {
                    cpu::dequantize_row_on(isa, ty, p, g).unwrap();
                }
                assert_eq!(
                    bits(&got_y),
                    bits(&want_y),
                    "{ty}, n = {n}, {isa:?}: dequantized floats"
                );
            }
        }
    }
}

#[test]
fn golden_vectors_through_the_simd_path() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let read_f32 = |name: &str| -> Vec<f32> {
        std::fs::read(dir.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let x = read_f32("input.f32");
    for (isa, ty) in cpu::Isa::available()
        .into_iter()
        .flat_map(|isa| TbqType::ALL.map(|ty| (isa, ty)))
    {
        let mut q = vec![0u8; ty.row_bytes(x.len())];
        cpu::quantize_row_on(isa, ty, &x, &mut q).unwrap();
        assert_eq!(
            q,
            std::fs::read(dir.join(format!("{ty}.bin"))).unwrap(),
            "{ty}, {isa:?}: golden bytes"
        );
        let mut y = vec![0.0f32; x.len()];
        cpu::dequantize_row_on(isa, ty, &q, &mut y).unwrap();
        let want = read_f32(&format!("{ty}.dequant.f32"));
        assert!(
            same_bits(&y, &want),
            "{ty}, {isa:?}: golden dequantized floats"
        );
    }
}

#[test]
fn rotations_are_bit_exact() {
    let mut rng = StdRng::seed_from_u64(seed());
    let x = random_rows(&mut rng, 8, 2 * BLOCK_ELEMS);
    for block in [BLOCK_ELEMS, BLOCK_ELEMS / 2] {
        let mut want = vec![0.0f32; x.len()];
        let mut got = x.clone();
        reference::rotate(&x, &mut want, block).unwrap();
        cpu::rotate_in_place(&mut got, block).unwrap();
        assert!(same_bits(&got, &want), "rotate, block {block}");
        reference::unrotate(&x, &mut want, block).unwrap();
        got.copy_from_slice(&x);
        cpu::unrotate_in_place(&mut got, block).unwrap();
        assert!(same_bits(&got, &want), "unrotate, block {block}");
    }
}

/// The decoded rotated block (`(d·g_s)·C[c_i]`), for the tolerance's `Σ|term|`.
fn decoded(ty: TbqType, row: &[u8], n: usize) -> Vec<f32> {
    let mut r = vec![0.0f32; n];
    for (b, rb) in row
        .chunks(ty.block_bytes())
        .zip(r.chunks_mut(ty.block_elems()))
    {
        reference::decode_rotated(ty, b, rb);
    }
    r
}

#[test]
fn vec_dot_rotated_within_tolerance() {
    let mut rng = StdRng::seed_from_u64(seed());
    for n in ROW_LENGTHS {
        let x = random_rows(&mut rng, 32, n);
        let q = random_rows(&mut rng, 1, n);
        for ty in types_for(n) {
            let mut q_rot = vec![0.0f32; n];
            reference::rotate(&q, &mut q_rot, ty.block_elems()).unwrap();
            let mut row = vec![0u8; ty.row_bytes(n)];
            for xr in x.chunks(n) {
                reference::quantize_row(ty, xr, &mut row).unwrap();
                let want = reference::vec_dot_rotated(ty, &row, &q_rot).unwrap();
                let abs: f32 = decoded(ty, &row, n)
                    .iter()
                    .zip(&q_rot)
                    .map(|(r, q)| (r * q).abs())
                    .sum();
                for isa in cpu::Isa::available() {
                    let got = cpu::vec_dot_rotated_on(isa, ty, &row, &q_rot).unwrap();
                    assert!(
                        (got - want).abs() <= TOLERANCE * abs,
                        "{ty}, n = {n}, {isa:?}: {got} vs reference {want} (Σ|term| {abs})"
                    );
                }
            }
        }
    }
}

#[test]
fn mad_rotated_within_tolerance() {
    let mut rng = StdRng::seed_from_u64(seed());
    for n in ROW_LENGTHS {
        // one attention row: 48 value rows with softmax-like weights
        let x = random_rows(&mut rng, 48, n);
        for (isa, ty) in cpu::Isa::available()
            .into_iter()
            .flat_map(|isa| types_for(n).map(move |ty| (isa, ty)))
        {
            let (mut want, mut got) = (vec![0.0f32; n], vec![0.0f32; n]);
            let mut abs = vec![0.0f32; n];
            let mut row = vec![0u8; ty.row_bytes(n)];
            for xr in x.chunks(n) {
                let p: f32 = rng.random_range(0.0..1.0);
                reference::quantize_row(ty, xr, &mut row).unwrap();
                reference::mad_rotated(ty, &row, p, &mut want).unwrap();
                cpu::mad_rotated_on(isa, ty, &row, p, &mut got).unwrap();
                for (a, r) in abs.iter_mut().zip(decoded(ty, &row, n)) {
                    *a += (p * r).abs();
                }
            }
            for i in 0..n {
                assert!(
                    (got[i] - want[i]).abs() <= TOLERANCE * abs[i],
                    "{ty}, n = {n}, {isa:?}, element {i}: {} vs reference {} (Σ|term| {})",
                    got[i],
                    want[i],
                    abs[i]
                );
            }
        }
    }
}

/// Accumulating in the rotated domain and unrotating once is the dequantized weighted sum.
#[test]
fn rotated_accumulation_unrotates_to_the_dequantized_sum() {
    let mut rng = StdRng::seed_from_u64(seed());
    let n = 2 * BLOCK_ELEMS;
    let x = random_rows(&mut rng, 16, n);
    for ty in TbqType::ALL {
        let (mut acc, mut want) = (vec![0.0f32; n], vec![0.0f64; n]);
        let mut row = vec![0u8; ty.row_bytes(n)];
        let mut y = vec![0.0f32; n];
        let mut scale = 0.0f64;
        for xr in x.chunks(n) {
            let p: f32 = rng.random_range(0.0..1.0);
            reference::quantize_row(ty, xr, &mut row).unwrap();
            cpu::mad_rotated(ty, &row, p, &mut acc).unwrap();
            reference::dequantize_row(ty, &row, &mut y).unwrap();
            for (w, v) in want.iter_mut().zip(&y) {
                *w += p as f64 * *v as f64;
            }
            scale += p as f64 * common::norm2(&y).sqrt();
        }
        cpu::unrotate_in_place(&mut acc, ty.block_elems()).unwrap();
        let err: f64 = acc
            .iter()
            .zip(&want)
            .map(|(a, w)| (*a as f64 - w).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            err <= 1e-5 * scale,
            "{ty}: |error| {err} vs Σ p·|v| {scale}"
        );
    }
}

/// Whether two float slices hold the same bits, element by element.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
