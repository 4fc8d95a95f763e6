//! GPU microbenchmarks of the tbq kernels (feature `cuda`): device-to-device copy bandwidth (the
//! ceiling), set_rows, dequantize and flash-attention decode at D = 128 / 256, GQA 1 / 4 / 8,
//! n_kv 1K..128K (and D = 64 with the `_64` types, D = 512: GQA 4, 4K and 64K). Times with CUDA events around each launch behind a busy stream, so that only
//! GPU time is counted, as in llama.cpp's CUDA-graph replays (`Timer`; warm-up first, median of
//! many repetitions), rotating among input sets so that more than the 50 MB L2 is touched.
//!
//! `tbq-gpu-bench [--quick] [--json FILE]`: prints a table, writes JSON (default
//! tbq-gpu-bench.json). `--trellis`: the trellis encoder and decoder (kernels/trellis.cu, the
//! candidate codec of issue 12) beside tbq3_0's and tbq3_1's set_rows, instead of the tbq types and
//! flash attention.

use std::fmt::Write as _;

use tbq::cuda::cudarc::driver::{sys, CudaContext};
use tbq::cuda::{self, dtype, FattnArgs, FattnOptions, Tensor};
use tbq::TbqType;

fn ok(r: sys::CUresult, what: &str) {
    assert_eq!(r, sys::CUresult::CUDA_SUCCESS, "{what}");
}

struct Dev(u64);
impl Dev {
    fn new(bytes: usize) -> Dev {
        let mut p = 0;
        ok(
            unsafe { sys::cuMemAlloc_v2(&mut p, bytes.max(1)) },
            "cuMemAlloc",
        );
        Dev(p)
    }
    fn fill_random(&self, bytes: usize, seed: u64, fix: impl Fn(&mut [u8])) {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut v = vec![0u8; bytes];
        for c in v.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let b = s.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
        fix(&mut v);
        ok(
            unsafe { sys::cuMemcpyHtoD_v2(self.0, v.as_ptr().cast(), bytes) },
            "HtoD",
        );
    }
}
impl Drop for Dev {
    fn drop(&mut self) {
        unsafe { sys::cuMemFree_v2(self.0) };
    }
}

/// Event timing on one stream. The host's cost of a launch (argument checks, the launch call
/// itself: several µs) is not GPU time, and llama.cpp replays its decode graphs as CUDA graphs,
/// where that cost is gone: so `device` first keeps the stream busy with a copy long enough for
/// the host to enqueue `f`'s launches before the GPU reaches them, and the events then see only
/// what the GPU spends (launch gaps between `f`'s kernels included). `latency` times an idle
/// stream: one eager call, host overhead included.
struct Timer {
    stream: sys::CUstream,
    busy: (Dev, Dev),
}

/// Bytes of the copy that keeps the stream busy: 2 × 128 MiB of traffic, ~65 µs on an H200.
const BUSY_BYTES: usize = 1 << 27;

impl Timer {
    fn new(stream: sys::CUstream) -> Timer {
        Timer {
            stream,
            busy: (Dev::new(BUSY_BYTES), Dev::new(BUSY_BYTES)),
        }
    }

    /// Median GPU milliseconds of `f(rep)` over `reps` repetitions.
    fn device(&self, reps: usize, f: impl FnMut(usize)) -> f64 {
        self.median(reps, true, f)
    }

    /// Median milliseconds of `f(rep)` launched on an idle stream (host launch cost included).
    fn latency(&self, reps: usize, f: impl FnMut(usize)) -> f64 {
        self.median(reps, false, f)
    }

    fn median(&self, reps: usize, busy: bool, mut f: impl FnMut(usize)) -> f64 {
        let s = self.stream;
        let mut e0: sys::CUevent = std::ptr::null_mut();
        let mut e1: sys::CUevent = std::ptr::null_mut();
        unsafe {
            ok(sys::cuEventCreate(&mut e0, 0), "event");
            ok(sys::cuEventCreate(&mut e1, 0), "event");
        }
        for i in 0..5 {
            f(i);
        }
        ok(unsafe { sys::cuStreamSynchronize(s) }, "sync");
        let mut ts = Vec::with_capacity(reps);
        for i in 0..reps {
            unsafe {
                if busy {
                    let (a, b) = (&self.busy.0, &self.busy.1);
                    ok(
                        sys::cuMemcpyDtoDAsync_v2(b.0, a.0, BUSY_BYTES, s),
                        "busy copy",
                    );
                }
                ok(sys::cuEventRecord(e0, s), "record");
                f(i);
                ok(sys::cuEventRecord(e1, s), "record");
                ok(sys::cuEventSynchronize(e1), "event sync");
                let mut ms = 0f32;
                ok(sys::cuEventElapsedTime_v2(&mut ms, e0, e1), "elapsed");
                ts.push(ms as f64);
            }
        }
        unsafe {
            sys::cuEventDestroy_v2(e0);
            sys::cuEventDestroy_v2(e1);
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        ts[ts.len() / 2]
    }
}

/// Fixes every block's d of a random buffer of type `ty` (blocks of `bb` bytes) to 0.0625: a half
/// d, or a compact header's scale code 96 (2^((96 - 128)/8)), whose gains byte stays random.
fn fix_d(ty: i32, bb: usize) -> impl Fn(&mut [u8]) {
    let compact = TbqType::from_abi(ty).is_some_and(|t| t.spec().compact);
    move |v: &mut [u8]| {
        for b in v.chunks_mut(bb) {
            if compact {
                b[0] = 96;
            } else if b.len() >= 2 {
                b[0] = 0x00;
                b[1] = 0x2c;
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let trellis = args.iter().any(|a| a == "--trellis");
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "tbq-gpu-bench.json".into());
    // --shape D,GQA,N_KV: only that flash-attention shape (tbq4/tbq3), e.g. for a profiler
    let shape: Option<(usize, usize, usize)> = args
        .iter()
        .position(|a| a == "--shape")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            let n: Vec<usize> = v
                .split(',')
                .map(|x| x.parse().expect("--shape D,GQA,N_KV"))
                .collect();
            assert_eq!(n.len(), 3, "--shape D,GQA,N_KV");
            (n[0], n[1], n[2])
        });
    if !cuda::available() {
        eprintln!("tbq-gpu-bench: no CUDA driver or device");
        std::process::exit(2);
    }
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.new_stream().unwrap();
    let s = stream.cu_stream();
    let reps = if quick { 20 } else { 100 };
    let timer = Timer::new(s);
    let mut rows: Vec<String> = Vec::new();
    let mut table = String::new();

    // ---- copy bandwidth: the ceiling ----
    let cb = 1usize << 29;
    let (a, b) = (Dev::new(cb), Dev::new(cb));
    a.fill_random(cb, 1, |_| {});
    let ms = timer.device(reps, |_| {
        ok(
            unsafe { sys::cuMemcpyDtoDAsync_v2(b.0, a.0, cb, s) },
            "copy",
        )
    });
    let copy_gbs = 2.0 * cb as f64 / ms / 1e6;
    drop((a, b));
    let _ = writeln!(
        table,
        "copy 512 MiB D2D: {ms:.3} ms, {copy_gbs:.0} GB/s (read + write)"
    );
    rows.push(format!(
        "{{\"op\":\"copy\",\"bytes\":{cb},\"ms\":{ms:.6},\"gbs\":{copy_gbs:.1}}}"
    ));

    // ---- set_rows (quantize) and dequantize: 256K rows of 128 (8 heads × 32K tokens) ----
    let row_types: Vec<(i32, &str)> = if shape.is_some() {
        Vec::new()
    } else if trellis {
        [TbqType::Tbq3_0, TbqType::Tbq3_1]
            .iter()
            .map(|t| (*t as i32, t.spec().name))
            .collect()
    } else {
        TbqType::ALL
            .iter()
            .map(|t| (*t as i32, t.spec().name))
            .collect()
    };
    for &(ty, tn) in &row_types {
        let n_rows = if quick { 1 << 16 } else { 1 << 18 };
        // bytes of one row of 128 (one block, or two of a 64-wide type)
        let bb = TbqType::from_abi(ty).unwrap().row_bytes(128);
        let src = Dev::new(n_rows * 128 * 4);
        src.fill_random(n_rows * 128 * 4, 2, |v| {
            for c in v.chunks_mut(4) {
                c[3] = 0x3f & c[3]; // finite positive-ish floats
            }
        });
        let dst = Dev::new(n_rows * bb);
        let ts = Tensor::contiguous(src.0, dtype::F32, [128, n_rows as i64, 1, 1]);
        let td = Tensor::contiguous(dst.0, ty, [128, n_rows as i64, 1, 1]);
        let ms = timer.device(reps, |_| {
            unsafe { cuda::set_rows(&ts, None, &td, s) }.unwrap()
        });
        let bytes = n_rows * (128 * 4 + bb);
        let gbs = bytes as f64 / ms / 1e6;
        let _ = writeln!(
            table,
            "set_rows f32->{tn} {n_rows} rows: {:.1} us, {gbs:.0} GB/s ({:.0}% of copy)",
            ms * 1e3,
            100.0 * gbs / copy_gbs
        );
        rows.push(format!("{{\"op\":\"set_rows\",\"type\":\"{tn}\",\"rows\":{n_rows},\"ms\":{ms:.6},\"gbs\":{gbs:.1}}}"));
        // a decode step: one token of 8 KV heads (D 128: 8 blocks), one call as llama.cpp makes it
        let step_rows = 8usize;
        let tss = Tensor::contiguous(src.0, dtype::F32, [128, step_rows as i64, 1, 1]);
        let tds = Tensor::contiguous(dst.0, ty, [128, step_rows as i64, 1, 1]);
        let step = |_| unsafe { cuda::set_rows(&tss, None, &tds, s) }.unwrap();
        let step_ms = timer.device(reps, step);
        let step_lat_ms = timer.latency(reps, step);
        let _ = writeln!(
            table,
            "set_rows f32->{tn} decode step ({step_rows} rows): {:.1} us per call on the GPU ({:.1} us launched alone)",
            step_ms * 1e3,
            step_lat_ms * 1e3
        );
        rows.push(format!("{{\"op\":\"set_rows_step\",\"type\":\"{tn}\",\"rows\":{step_rows},\"ms\":{step_ms:.6},\"latency_ms\":{step_lat_ms:.6}}}"));
        let out = Dev::new(n_rows * 128 * 2);
        let to = Tensor::contiguous(out.0, dtype::F16, [128, n_rows as i64, 1, 1]);
        let ms = timer.device(reps, |_| {
            unsafe { cuda::get_rows(&td, None, &to, s) }.unwrap()
        });
        let bytes = n_rows * (128 * 2 + bb);
        let gbs = bytes as f64 / ms / 1e6;
        let _ = writeln!(
            table,
            "dequantize {tn}->f16 {n_rows} rows: {:.1} us, {gbs:.0} GB/s ({:.0}% of copy)",
            ms * 1e3,
            100.0 * gbs / copy_gbs
        );
        rows.push(format!("{{\"op\":\"dequantize\",\"type\":\"{tn}\",\"rows\":{n_rows},\"ms\":{ms:.6},\"gbs\":{gbs:.1}}}"));
    }

    if trellis {
        bench_trellis(&timer, s, reps, &mut table, &mut rows);
    }

    // ---- flash-attention decode ----
    if !trellis {
        let _ = writeln!(
            table,
            "\nFA decode, n_head_kv 8, n_q 1, mask on (K/V bytes; % of copy {copy_gbs:.0} GB/s)"
        );
        let _ = writeln!(
            table,
            "{:>13} {:>4} {:>4} {:>7} {:>10} {:>10} {:>9} {:>7}",
            "K/V", "D", "GQA", "n_kv", "splits", "us", "GB/s", "%copy"
        );
    }
    // (K, V, name, every GQA or GQA 4 only)
    let (t51, t50, t60, t31, t41, t41_64) = (
        TbqType::Tbq5_1 as i32,
        TbqType::Tbq5_0 as i32,
        TbqType::Tbq6_0 as i32,
        TbqType::Tbq3_1 as i32,
        TbqType::Tbq4_1 as i32,
        TbqType::Tbq4_1_64 as i32,
    );
    let pairs: &[(i32, i32, &str, bool)] = if trellis {
        &[]
    } else if quick || shape.is_some() {
        &[(0, 1, "tbq4/tbq3", true)]
    } else {
        &[
            (0, 1, "tbq4/tbq3", true),
            (0, 0, "tbq4/tbq4", true),
            (dtype::Q8_0, 1, "q8/tbq3", true),
            (t51, t31, "tbq5_1/tbq3_1", false),
            (t50, 1, "tbq5/tbq3", false),
            (t60, 0, "tbq6/tbq4", false),
            (t41, t41, "tbq4_1/tbq4_1", false),
            (t51, t41, "tbq5_1/tbq4_1", false),
            (t41, t31, "tbq4_1/tbq3_1", false),
            // D 64 only: the first _64 sub-scaled types beside the compact ones narrow() gives
            (t41_64, t41_64, "tbq4_1_64/tbq4_1_64", false),
        ]
    };
    let kvs: &[usize] = if quick && shape.is_none() {
        &[4096, 16384, 65536]
    } else {
        &[1024, 4096, 16384, 65536, 131072]
    };
    let n_head_kv = 8usize;
    // D 64 (the 64-wide variants a user gets for the pair, TbqType::narrow: tbq4_1 -> tbq4_1_64c)
    // and 512: tbq keys, GQA 4, two lengths (issue 14's head sizes; the bar's sweep is D 128 and
    // 256). A pair of 64-wide types runs at D 64 only.
    let narrow = |t: i32| TbqType::from_abi(t).map(|t| t.narrow() as i32);
    let is_narrow = |t: i32| TbqType::from_abi(t).is_some_and(|t| t.block_elems() == 64);
    for &(kt0, vt0, pn, every_gqa) in pairs {
        for d in [64usize, 128, 256, 512] {
            if d != 64 && is_narrow(kt0) {
                continue;
            }
            let (kt, vt) = match d {
                64 => match (narrow(kt0), narrow(vt0)) {
                    (Some(k), Some(v)) => (k, v),
                    _ => continue,
                },
                512 if TbqType::from_abi(kt0).is_none() => continue,
                _ => (kt0, vt0),
            };
            let side = d == 64 || d == 512;
            for gqa in [1usize, 4, 8] {
                if (!every_gqa || side) && gqa != 4 {
                    continue;
                }
                for &n_kv in kvs {
                    if shape.is_some_and(|sh| sh != (d, gqa, n_kv)) {
                        continue;
                    }
                    if side && shape.is_none() && n_kv != 4096 && n_kv != 65536 {
                        continue;
                    }
                    let (ku, kper) = cuda::unit_bytes(kt).unwrap();
                    let (vu, vper) = cuda::unit_bytes(vt).unwrap();
                    let krb = d / kper * ku;
                    let vrb = d / vper * vu;
                    let kbytes = krb * n_kv * n_head_kv;
                    let vbytes = vrb * n_kv * n_head_kv;
                    let set_bytes = kbytes + vbytes;
                    let sets = (200usize << 20).div_ceil(set_bytes).clamp(2, 16);
                    let mut bufs = Vec::new();
                    for i in 0..sets {
                        let k = Dev::new(kbytes);
                        k.fill_random(kbytes, 10 + i as u64, fix_d(kt, ku));
                        let v = Dev::new(vbytes);
                        v.fill_random(vbytes, 100 + i as u64, fix_d(vt, vu));
                        bufs.push((k, v));
                    }
                    let n_head = n_head_kv * gqa;
                    let q = Dev::new(d * n_head * 4);
                    q.fill_random(d * n_head * 4, 3, |v| {
                        for c in v.chunks_mut(4) {
                            c[3] = 0x3c | (c[3] & 0x80);
                        }
                    });
                    let mask = Dev::new(n_kv * 2);
                    mask.fill_random(n_kv * 2, 4, |v| {
                        for c in v.chunks_mut(2) {
                            c[0] = 0;
                            c[1] = 0x80; // -0.0
                        }
                    });
                    let out = Dev::new(d * n_head * 4);
                    let mk = |i: usize| {
                        let (k, v) = &bufs[i % sets];
                        let cache = |p: u64, ty: i32, unit: usize, rb: usize| Tensor {
                            data: p as *mut _,
                            type_: ty,
                            ne: [d as i64, n_kv as i64, n_head_kv as i64, 1],
                            nb: [unit, n_head_kv * rb, rb, n_head_kv * rb * n_kv],
                        };
                        FattnArgs {
                            q: Tensor::contiguous(q.0, dtype::F32, [d as i64, 1, n_head as i64, 1]),
                            k: cache(k.0, kt, ku, krb),
                            v: cache(v.0, vt, vu, vrb),
                            mask: Tensor::contiguous(mask.0, dtype::F16, [n_kv as i64, 1, 1, 1]),
                            sinks: Tensor::NONE,
                            dst: Tensor::contiguous(
                                out.0,
                                dtype::F32,
                                [d as i64, n_head as i64, 1, 1],
                            ),
                            exact_k: Tensor::NONE,
                            scale: 1.0 / (d as f32).sqrt(),
                            max_bias: 0.0,
                            logit_softcap: 0.0,
                            reserved: 0,
                        }
                    };
                    let scratch_bytes = cuda::fattn_scratch_bytes(&mk(0)).unwrap();
                    let scratch = Dev::new(scratch_bytes);
                    let splits = if scratch_bytes == 0 {
                        1
                    } else {
                        scratch_bytes / (n_head * (d + 2) * 4)
                    };
                    let ms = timer.device(reps, |i| {
                        unsafe {
                            cuda::flash_attn_ext_with(
                                &mk(i),
                                Some((scratch.0, scratch_bytes)),
                                s,
                                FattnOptions::default(),
                            )
                        }
                        .unwrap()
                    });
                    let gbs = set_bytes as f64 / ms / 1e6;
                    let pct = 100.0 * gbs / copy_gbs;
                    let _ = writeln!(table, "{pn:>13} {d:>4} {gqa:>4} {n_kv:>7} {splits:>10} {:>10.1} {gbs:>9.0} {pct:>6.0}%", ms * 1e3);
                    rows.push(format!(
                        "{{\"op\":\"fattn\",\"pair\":\"{pn}\",\"d\":{d},\"gqa\":{gqa},\"n_head_kv\":{n_head_kv},\"n_kv\":{n_kv},\"splits\":{splits},\"kv_bytes\":{set_bytes},\"ms\":{ms:.6},\"gbs\":{gbs:.1},\"pct_copy\":{pct:.1}}}"
                    ));
                }
            }
        }
    }
    ok(unsafe { sys::cuStreamSynchronize(s) }, "sync");
    let json = format!(
        "{{\"copy_gbs\":{copy_gbs:.1},\"results\":[\n{}\n]}}\n",
        rows.join(",\n")
    );
    std::fs::write(&json_path, json).unwrap();
    println!("{table}");
    println!("wrote {json_path}");
}

/// The trellis encoder (a Viterbi set_rows candidate) and decoder, kernels/trellis.cu, for every
/// instantiated (L, k), blocks of 128 and 64, free start and tail-biting: a decode step's call
/// (16 blocks: one token, 8 KV heads, K and V) and a prefill ubatch's (8192 blocks: 512 tokens),
/// and decoding 8192 blocks to f32.
fn bench_trellis(
    timer: &Timer,
    s: sys::CUstream,
    reps: usize,
    table: &mut String,
    rows: &mut Vec<String>,
) {
    use tbq::trellis::{Start, Trellis};
    let _ = writeln!(
        table,
        "\ntrellis codes (kernels/trellis.cu): encode = Viterbi (+ RMS scale, least-squares refit, packing)"
    );
    let _ = writeln!(
        table,
        "{:>3} {:>2} {:>4} {:>5} {:>6} {:>10} {:>11} {:>12} {:>10} {:>11}",
        "L",
        "k",
        "B",
        "start",
        "bits",
        "step us",
        "step alone",
        "8192 blk us",
        "ns/block",
        "decode us"
    );
    const STEP: usize = 16;
    const BULK: usize = 8192;
    for &(l, k) in cuda::trellis::SHAPES {
        let t = Trellis::new(l, k);
        for b in [128usize, 64] {
            for start in [Start::Free, Start::TailBiting] {
                let nw = t.stream_words(b, start);
                let y = Dev::new(BULK * b * 4);
                y.fill_random(BULK * b * 4, 7, |v| {
                    for c in v.chunks_mut(4) {
                        c[3] = 0x3f & c[3]; // finite floats
                    }
                });
                let (w, d, out) = (
                    Dev::new(BULK * nw * 4),
                    Dev::new(BULK * 4),
                    Dev::new(BULK * b * 4),
                );
                let enc = |n: usize| {
                    unsafe { cuda::trellis::encode(&t, start, b, n, y.0, w.0, d.0, 0, s) }.unwrap()
                };
                let step_ms = timer.device(reps, |_| enc(STEP));
                let step_lat = timer.latency(reps, |_| enc(STEP));
                let bulk_ms = timer.device(reps.min(20), |_| enc(BULK));
                let dec_ms = timer.device(reps, |_| {
                    unsafe { cuda::trellis::decode(&t, start, b, BULK, w.0, d.0, out.0, s) }
                        .unwrap()
                });
                let bits = t.stream_bits(b, start) as f64 / b as f64;
                let sn = if start == Start::Free { "free" } else { "tb" };
                let _ = writeln!(
                    table,
                    "{l:>3} {k:>2} {b:>4} {sn:>5} {bits:>6.3} {:>10.1} {:>11.1} {:>12.1} {:>10.1} {:>11.1}",
                    step_ms * 1e3,
                    step_lat * 1e3,
                    bulk_ms * 1e3,
                    bulk_ms * 1e6 / BULK as f64,
                    dec_ms * 1e3
                );
                rows.push(format!(
                    "{{\"op\":\"trellis\",\"l\":{l},\"k\":{k},\"b\":{b},\"start\":\"{sn}\",\"code_bits\":{bits:.4},\"step_blocks\":{STEP},\"step_ms\":{step_ms:.6},\"step_latency_ms\":{step_lat:.6},\"bulk_blocks\":{BULK},\"bulk_ms\":{bulk_ms:.6},\"decode_ms\":{dec_ms:.6}}}"
                ));
            }
        }
    }
}
