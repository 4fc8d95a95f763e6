//! `TBQ_SIM_TRELLIS`: an **experiment switch**, not a format. It stores trellis codes
//! ([`crate::trellis`]) in the bytes of an existing sub-scaled type, so that llama.cpp's CPU path
//! (set_rows, flash attention's dot products and value sums, dequantize) measures a trellis code's
//! end-to-end KL divergence with everything else of the tbq cache unchanged (key centring, exact
//! sink keys, per-layer types) before a trellis type exists. GPU kernels, RPC validation and saved
//! caches do not know it: use it with CPU-only runs (`tbq-validate ppl`) and nothing else.
//!
//! `TBQ_SIM_TRELLIS=tbq3_1=L10K3,tbq4_1=L10K4` codes every width of `tbq3_1` (`tbq3_1`,
//! `tbq3_1_64`, `tbq3_1_64c`) with a tail-biting L10 k3 trellis, `tbq4_1` with L10 k4. A block
//! holds `d` as f16 (bytes 0–1) and the stream (little-endian words) after it, in the same bytes
//! as the type it replaces (3.25 bits for k = 3: 16 bits of scale per 64 values, 1/8 bit more than
//! an 8-bit log scale on 128 would need); the switch refuses a trellis that does not fit.

use std::sync::OnceLock;

use half::f16;

use crate::rotation::{rotate_block, unrotate_block};
use crate::trellis::{Start, Trellis};
use crate::TbqType;

const START: Start = Start::TailBiting;

/// The trellis standing in for `ty`'s family, if the switch names it.
pub fn active(ty: TbqType) -> Option<&'static Trellis> {
    static TABLE: OnceLock<Vec<(TbqType, Trellis)>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            std::env::var("TBQ_SIM_TRELLIS")
                .map(|s| parse(&s))
                .unwrap_or_default()
        })
        .iter()
        .find(|(f, _)| *f == ty.wide())
        .map(|(_, t)| t)
}

fn parse(s: &str) -> Vec<(TbqType, Trellis)> {
    let bad = |what: &str| -> ! {
        panic!("TBQ_SIM_TRELLIS={s}: {what} (e.g. tbq3_1=L10K3,tbq4_1=L10K4)")
    };
    s.split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, lk) = e.split_once('=').unwrap_or_else(|| bad("no '='"));
            let ty = TbqType::ALL
                .iter()
                .copied()
                .find(|t| t.spec().name == name.trim())
                .unwrap_or_else(|| bad("unknown type"));
            let lk = lk.trim().to_ascii_uppercase();
            let (l, k) = lk
                .strip_prefix('L')
                .and_then(|r| r.split_once('K'))
                .and_then(|(l, k)| Some((l.parse().ok()?, k.parse().ok()?)))
                .unwrap_or_else(|| bad("not LxKy"));
            let t = Trellis::new(l, k);
            for w in [ty.wide(), ty.narrow()] {
                let b = w.block_elems();
                if 2 + 4 * t.stream_words(b, START) > w.block_bytes() {
                    bad(&format!(
                        "L{l} k{k} does not fit {}'s blocks",
                        w.spec().name
                    ));
                }
            }
            (ty.wide(), t)
        })
        .collect()
}

/// Encodes one block (`x`: its values, not rotated; `out`: the type's block bytes).
pub fn quantize_block(t: &Trellis, x: &[f32], out: &mut [u8]) {
    let mut y = x.to_vec();
    rotate_block(&mut y);
    let q = t.quantize(&y, START);
    out.fill(0);
    out[..2].copy_from_slice(&f16::from_f32(q.d).to_le_bytes());
    for (o, w) in out[2..].chunks_exact_mut(4).zip(&q.words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// One block in the rotated domain (`out`: `block_elems` values).
pub fn decode_rotated(t: &Trellis, ty: TbqType, block: &[u8], out: &mut [f32]) {
    let mut words = [0u32; 17];
    let n = t.stream_words(ty.block_elems(), START);
    for (i, w) in words[..n].iter_mut().enumerate() {
        *w = u32::from_le_bytes(block[2 + 4 * i..6 + 4 * i].try_into().unwrap());
    }
    let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
    let mut states = [0u32; 128];
    let states = &mut states[..out.len()];
    t.unpack_into(&words[..n], START, states);
    for (o, &s) in out.iter_mut().zip(states.iter()) {
        *o = d * t.code(s);
    }
}

/// [`super::quantize_row`] under the switch.
pub fn quantize_row(t: &Trellis, ty: TbqType, x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x
        .chunks_exact(ty.block_elems())
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        quantize_block(t, xb, ob);
    }
}

/// [`super::dequantize_row`] under the switch.
pub fn dequantize_row(t: &Trellis, ty: TbqType, src: &[u8], out: &mut [f32]) {
    for (sb, ob) in src
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(ty.block_elems()))
    {
        decode_rotated(t, ty, sb, ob);
        unrotate_block(ob);
    }
}

/// [`super::vec_dot_rotated`] under the switch.
pub fn vec_dot_rotated(t: &Trellis, ty: TbqType, x: &[u8], q_rot: &[f32]) -> f32 {
    let mut r = [0f32; 128];
    let r = &mut r[..ty.block_elems()];
    x.chunks_exact(ty.block_bytes())
        .zip(q_rot.chunks_exact(ty.block_elems()))
        .map(|(xb, qb)| {
            decode_rotated(t, ty, xb, r);
            r.iter().zip(qb).map(|(a, b)| a * b).sum::<f32>()
        })
        .sum()
}

/// [`super::mad_rotated`] under the switch.
pub fn mad_rotated(t: &Trellis, ty: TbqType, x: &[u8], scale: f32, acc: &mut [f32]) {
    let mut r = [0f32; 128];
    let r = &mut r[..ty.block_elems()];
    for (xb, ab) in x
        .chunks_exact(ty.block_bytes())
        .zip(acc.chunks_exact_mut(ty.block_elems()))
    {
        decode_rotated(t, ty, xb, r);
        for (a, v) in ab.iter_mut().zip(r.iter()) {
            *a += scale * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row through the switch's block layout comes back as the trellis reference decodes it,
    /// and the dot products and value sums agree with the dequantized row.
    #[test]
    fn blocks_round_trip_through_the_type_bytes() {
        for (ty, t) in [
            (TbqType::Tbq3_1, Trellis::new(8, 3)),
            (TbqType::Tbq3_1_64c, Trellis::new(8, 3)),
            (TbqType::Tbq4_1_64c, Trellis::new(8, 4)),
        ] {
            let n = 2 * ty.block_elems();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 40.0)
                .collect();
            let mut q = vec![0u8; ty.row_bytes(n)];
            quantize_row(&t, ty, &x, &mut q);
            let mut r = vec![0f32; n];
            dequantize_row(&t, ty, &q, &mut r);
            let err: f32 = x
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / x.iter().map(|a| a * a).sum::<f32>();
            let bound = if t.k == 3 { 0.05 } else { 0.015 };
            assert!(err < bound, "{}: relative error {err}", ty.spec().name);
            // the rotated-domain ops agree with the dequantized row
            let mut qr = x.clone();
            qr.chunks_exact_mut(ty.block_elems()).for_each(rotate_block);
            let dot = vec_dot_rotated(&t, ty, &q, &qr);
            let want: f32 = x.iter().zip(&r).map(|(a, b)| a * b).sum();
            assert!((dot - want).abs() <= 1e-3 * want.abs(), "{dot} vs {want}");
            let mut acc = vec![0f32; n];
            mad_rotated(&t, ty, &q, 2.0, &mut acc);
            acc.chunks_exact_mut(ty.block_elems())
                .for_each(unrotate_block);
            for (a, b) in acc.iter().zip(&r) {
                assert!((a - 2.0 * b).abs() < 1e-4, "{a} vs {}", 2.0 * b);
            }
        }
    }

    #[test]
    fn the_switch_refuses_what_does_not_fit() {
        assert_eq!(parse("tbq3_1=L10K3")[0].0, TbqType::Tbq3_1);
        assert!(std::panic::catch_unwind(|| parse("tbq3_1=L10K4")).is_err());
        assert!(std::panic::catch_unwind(|| parse("tbq9=L10K3")).is_err());
    }
}
