//! The codebook constants are the Lloyd-Max quantizers of N(0, 1); the thresholds are their
//! midpoints; encoding picks the nearest level.

use tbq::codebook::{lloyd_max_normal, GAINS, NORMAL_16, NORMAL_32, NORMAL_64, NORMAL_8};
use tbq::TbqType;

fn check(half: &[f32], levels: usize, mse: f64) {
    let lm = lloyd_max_normal(levels);
    let positive = &lm.levels[levels / 2..];
    for (k, (&c, &want)) in half.iter().zip(positive).enumerate() {
        assert!(
            (c as f64 - want).abs() < 1e-5,
            "level {k} of {levels}: {c} vs Lloyd-Max {want}"
        );
    }
    // Symmetry of the computed codebook (the format stores only the positive half).
    for k in 0..levels / 2 {
        assert!((lm.levels[k] + lm.levels[levels - 1 - k]).abs() < 1e-9);
    }
    assert!(
        (lm.mse - mse).abs() < 1e-5,
        "{levels} levels: mse {} vs {mse}",
        lm.mse
    );
}

#[test]
fn three_bit_codebook_is_lloyd_max() {
    check(&NORMAL_8, 8, 0.03455);
}

#[test]
fn four_bit_codebook_is_lloyd_max() {
    check(&NORMAL_16, 16, 0.009501);
}

#[test]
fn five_bit_codebook_is_lloyd_max() {
    check(&NORMAL_32, 32, 0.0025047);
}

#[test]
fn six_bit_codebook_is_lloyd_max() {
    check(&NORMAL_64, 64, 0.00064424);
}

/// The gains are 2^((2k - 15)/24) rounded to f32, ascending, and 1.0 lies between the middle two.
#[test]
fn gains_are_the_documented_ladder() {
    for (k, &g) in GAINS.iter().enumerate() {
        let want = 2f64.powf((2.0 * k as f64 - 15.0) / 24.0);
        assert_eq!(g, want as f32, "gain {k}");
        // the encoders multiply by GAINS[15 - k] for a division by g_k: the same f32 as 1/g_k
        assert_eq!(GAINS[15 - k], (1.0 / want) as f32, "1/gain {k}");
    }
    assert!(GAINS[7] < 1.0 && GAINS[8] > 1.0);
}

#[test]
fn encode_picks_the_nearest_level_ties_down() {
    for ty in TbqType::ALL {
        let spec = ty.spec();
        let levels = spec.levels;
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "levels ascending");
        let mut y = -4.0f32;
        while y < 4.0 {
            let c = spec.encode(y) as usize;
            let best = levels
                .iter()
                .map(|&l| (l - y).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((levels[c] - y).abs(), best, "{ty}: y = {y} coded {c}");
            y += 0.0007;
        }
        // Exactly on a threshold, and at zero, the lower level wins.
        for (k, &t) in spec.bounds_half.iter().enumerate() {
            let h = spec.codebook_half.len();
            assert_eq!(spec.encode(t) as usize, h + k, "{ty}: +threshold {k}");
            assert_eq!(spec.encode(-t) as usize, h - 2 - k, "{ty}: -threshold {k}");
        }
        assert_eq!(spec.encode(0.0) as usize, spec.codebook_half.len() - 1);
        assert_eq!(spec.encode(-0.0) as usize, spec.codebook_half.len() - 1);
        assert_eq!(spec.encode(f32::MAX) as usize, spec.levels() - 1);
        assert_eq!(spec.encode(f32::MIN) as usize, 0);
    }
}

#[test]
fn type_table() {
    let t4 = TbqType::Tbq4_0.spec();
    let t3 = TbqType::Tbq3_0.spec();
    assert_eq!((t4.block_bytes(), t3.block_bytes()), (66, 50));
    assert_eq!(
        (t4.bits_per_element(), t3.bits_per_element()),
        (4.125, 3.125)
    );
    assert_eq!(TbqType::from_name("tbq3_0"), Some(TbqType::Tbq3_0));
    assert_eq!(TbqType::from_abi(1), Some(TbqType::Tbq3_0));
    assert_eq!(TbqType::from_abi(7), Some(TbqType::Tbq4_0_64));
    assert_eq!(TbqType::from_abi(15), Some(TbqType::Tbq4_1_64c));
    assert_eq!(TbqType::from_abi(17), None);
    assert_eq!(TbqType::Tbq4_0.row_bytes(256), 132);
    // name, bytes per block, bits per element of every type
    let table: Vec<(&str, usize, f64)> = TbqType::ALL
        .iter()
        .map(|t| (t.spec().name, t.block_bytes(), t.spec().bits_per_element()))
        .collect();
    assert_eq!(
        table,
        [
            ("tbq4_0", 66, 4.125),
            ("tbq3_0", 50, 3.125),
            ("tbq5_0", 82, 5.125),
            ("tbq6_0", 98, 6.125),
            ("tbq3_1", 52, 3.25),
            ("tbq4_1", 68, 4.25),
            ("tbq5_1", 84, 5.25),
            ("tbq4_0_64", 34, 4.25),
            ("tbq3_0_64", 26, 3.25),
            ("tbq5_0_64", 42, 5.25),
            ("tbq6_0_64", 50, 6.25),
            ("tbq3_1_64", 28, 3.5),
            ("tbq4_1_64", 36, 4.5),
            ("tbq5_1_64", 44, 5.5),
            ("tbq3_1_64c", 26, 3.25),
            ("tbq4_1_64c", 34, 4.25),
            ("tbq5_1_64c", 42, 5.25),
        ]
    );
    for t in TbqType::ALL {
        assert_eq!(TbqType::from_name(t.spec().name), Some(t));
        assert_eq!(TbqType::from_abi(t as i32), Some(t));
        // the two widths of one type: same codebook and planes, other block
        let (w, n) = (t.wide(), t.narrow());
        assert_eq!((w.block_elems(), n.block_elems()), (128, 64));
        assert_eq!(w.spec().levels, n.spec().levels);
        assert_eq!(w.spec().planes, n.spec().planes);
        assert_eq!(w.spec().sub_scales, n.spec().sub_scales);
        assert!(format!("{n}").starts_with(&format!("{w}_64")), "{n} of {w}");
        // what a 64-wide head gets stores what the 128-wide type does per element
        if t == w {
            assert_eq!(
                n.spec().bits_per_element(),
                w.spec().bits_per_element() + if w.spec().sub_scales { 0.0 } else { 0.125 },
                "{n}"
            );
        }
    }
}

/// The compact header's scale grid: exact powers 2^((k − 128)/8), and the encoder's code is the
/// grid point nearest the block's coordinate RMS in the log domain.
#[test]
fn compact_scale_grid() {
    use tbq::format::{scale8_value, SCALE8_MANTISSAS};
    use tbq::reference::{scale8_code, scale8_inverse8};
    for (f, m) in SCALE8_MANTISSAS.iter().enumerate() {
        assert_eq!(*m, 2f64.powf(f as f64 / 8.0) as f32, "mantissa {f}");
    }
    assert_eq!(scale8_value(0), 0.0);
    assert_eq!(scale8_value(128), 1.0);
    for k in 1..=255u8 {
        let want = 2f64.powf((k as f64 - 128.0) / 8.0);
        assert!((scale8_value(k) as f64 / want - 1.0).abs() < 1e-7, "k {k}");
        assert!((scale8_value(k) as f64 * 8.0 * scale8_inverse8(k) as f64 - 1.0).abs() < 2e-7);
    }
    // s = Σ w² of a 64-point butterfly; ρ = √s/64
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let s = 2f32.powf((rng % 100_000) as f32 / 100_000.0 * 60.0 - 10.0);
        let rho = (s as f64).sqrt() / 64.0;
        let k = scale8_code(s);
        let exact = (8.0 * rho.log2() + 128.0).clamp(1.0, 255.0);
        assert!(
            (k as f64 - exact).abs() <= 0.5 + 1e-5,
            "s {s}: code {k}, exact {exact}"
        );
    }
    assert_eq!(scale8_code(f32::MAX), 255);
    assert_eq!(scale8_code(f32::from_bits(1)), 1);
    assert_eq!(scale8_code(4096.0), 128);
}

#[test]
fn the_variant_for_a_head_size() {
    let t = TbqType::Tbq4_1;
    assert_eq!(t.for_head_dim(128), Some(TbqType::Tbq4_1));
    assert_eq!(t.for_head_dim(256), Some(TbqType::Tbq4_1));
    assert_eq!(t.for_head_dim(64), Some(TbqType::Tbq4_1_64c));
    assert_eq!(t.for_head_dim(192), Some(TbqType::Tbq4_1_64c));
    assert_eq!(TbqType::Tbq4_0.for_head_dim(64), Some(TbqType::Tbq4_0_64));
    assert_eq!(TbqType::Tbq4_1_64.for_head_dim(128), Some(TbqType::Tbq4_1));
    assert_eq!(TbqType::Tbq4_1_64c.for_head_dim(128), Some(TbqType::Tbq4_1));
    // a named 64-wide type is kept (the first, 4.5-bit tbq4_1_64 too)
    assert_eq!(
        TbqType::Tbq4_1_64.for_head_dim(64),
        Some(TbqType::Tbq4_1_64)
    );
    for bad in [0, 32, 80, 96, 100] {
        assert_eq!(t.for_head_dim(bad), None, "head {bad}");
    }
}
