//! CPU throughput, in rows per second, for the head sizes that matter (64: the `_64` types only,
//! as SmolLM2 stores them; 128 and 256: every type): quantize, dequantize, vec_dot and the rotated-domain value accumulate, each through the scalar
//! reference (`quantize`, …: the path before the SIMD one) and through `tbq::cpu`, the path the C
//! ABI runs (`quantize_simd`, …). `cargo bench --bench cpu`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tbq::cpu;
use tbq::reference::{dequantize_row, mad_rotated, quantize_row, rotate, vec_dot, vec_dot_rotated};
use tbq::TbqType;

const ROWS: usize = 256;

/// Deterministic pseudo-Gaussian data (sum of uniforms), so the bench needs no RNG crate.
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as f32 / u32::MAX as f32 - 0.5
    };
    (0..n).map(|_| (0..12).map(|_| uniform()).sum()).collect()
}

fn bench(c: &mut Criterion) {
    for head in [64usize, 128, 256] {
        let x = data(ROWS * head, 1);
        let q = data(head, 2);
        let mut group = c.benchmark_group(format!("d{head}"));
        group.throughput(Throughput::Elements(ROWS as u64));
        for ty in TbqType::ALL
            .into_iter()
            .filter(|t| head % t.block_elems() == 0)
        {
            let rb = ty.row_bytes(head);
            let mut packed = vec![0u8; ROWS * rb];
            group.bench_function(BenchmarkId::new("quantize", ty), |b| {
                b.iter(|| {
                    for (xr, pr) in x.chunks(head).zip(packed.chunks_mut(rb)) {
                        quantize_row(ty, black_box(xr), pr).unwrap();
                    }
                })
            });
            let mut out = vec![0.0f32; ROWS * head];
            group.bench_function(BenchmarkId::new("dequantize", ty), |b| {
                b.iter(|| {
                    for (pr, or) in packed.chunks(rb).zip(out.chunks_mut(head)) {
                        dequantize_row(ty, black_box(pr), or).unwrap();
                    }
                })
            });
            // Attention scoring: one query against every key row, the query rotated once.
            let mut q_rot = vec![0.0f32; head];
            rotate(&q, &mut q_rot, ty.block_elems()).unwrap();
            group.bench_function(BenchmarkId::new("vec_dot_rotated", ty), |b| {
                b.iter(|| {
                    packed
                        .chunks(rb)
                        .map(|pr| vec_dot_rotated(ty, black_box(pr), &q_rot).unwrap())
                        .sum::<f32>()
                })
            });
            group.bench_function(BenchmarkId::new("quantize_simd", ty), |b| {
                b.iter(|| {
                    for (xr, pr) in x.chunks(head).zip(packed.chunks_mut(rb)) {
                        cpu::quantize_row(ty, black_box(xr), pr).unwrap();
                    }
                })
            });
            group.bench_function(BenchmarkId::new("dequantize_simd", ty), |b| {
                b.iter(|| {
                    for (pr, or) in packed.chunks(rb).zip(out.chunks_mut(head)) {
                        cpu::dequantize_row(ty, black_box(pr), or).unwrap();
                    }
                })
            });
            group.bench_function(BenchmarkId::new("vec_dot_rotated_simd", ty), |b| {
                b.iter(|| {
                    packed
                        .chunks(rb)
                        .map(|pr| cpu::vec_dot_rotated(ty, black_box(pr), &q_rot).unwrap())
                        .sum::<f32>()
                })
            });
            // Value side of attention: every value row accumulated into one output row, rotated
            // domain (the unrotate at the end is once per output row, not measured here).
            let mut acc = vec![0.0f32; head];
            group.bench_function(BenchmarkId::new("mad_rotated", ty), |b| {
                b.iter(|| {
                    for pr in packed.chunks(rb) {
                        mad_rotated(ty, black_box(pr), 0.5, &mut acc).unwrap();
                    }
                })
            });
            group.bench_function(BenchmarkId::new("mad_rotated_simd", ty), |b| {
                b.iter(|| {
                    for pr in packed.chunks(rb) {
                        cpu::mad_rotated(ty, black_box(pr), 0.5, &mut acc).unwrap();
                    }
                })
            });
            group.bench_function(BenchmarkId::new("vec_dot", ty), |b| {
                b.iter(|| {
                    packed
                        .chunks(rb)
                        .map(|pr| vec_dot(ty, black_box(pr), &q).unwrap())
                        .sum::<f32>()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
