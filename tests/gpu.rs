//! GPU tests (feature `cuda`): the kernels against the CPU reference, on fresh seeded random
//! inputs, outputs poisoned first and every element checked.
//!
//! Without a CUDA driver or device each GPU test prints `SKIP: ...` and passes; the tests that
//! need no device (clean errors, the unified-memory override) always run.
//! `cargo test --release --features cuda --test gpu -- --test-threads 1`

mod common;

use std::sync::{Arc, OnceLock};

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tbq::cuda::cudarc::driver::{sys, CudaContext};
use tbq::cuda::{self, dtype, FattnArgs, FattnOptions, Tensor};
use tbq::reference::{dequantize_row, quantize_row, quantize_row_f16};
use tbq::TbqType;

// ---- set-up ---------------------------------------------------------------------------------

fn gpu() -> Option<Arc<CudaContext>> {
    static CTX: OnceLock<Option<Arc<CudaContext>>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        if !cuda::available() {
            return None;
        }
        Some(CudaContext::new(0).expect("CUDA context"))
    });
    match ctx {
        Some(c) => {
            c.bind_to_thread().unwrap();
            Some(c.clone())
        }
        None => {
            eprintln!("SKIP: no CUDA driver or device (tbq::cuda::available() is false)");
            None
        }
    }
}

fn ok(r: sys::CUresult) {
    assert_eq!(r, sys::CUresult::CUDA_SUCCESS);
}

fn sync() {
    ok(unsafe { sys::cuCtxSynchronize() });
}

/// A raw device buffer.
struct Dev {
    ptr: u64,
    bytes: usize,
}

impl Dev {
    fn new(bytes: usize) -> Dev {
        let mut ptr = 0;
        ok(unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes.max(1)) });
        Dev { ptr, bytes }
    }
    fn upload<T: Copy>(data: &[T]) -> Dev {
        let bytes = std::mem::size_of_val(data);
        let d = Dev::new(bytes);
        ok(unsafe { sys::cuMemcpyHtoD_v2(d.ptr, data.as_ptr().cast(), bytes) });
        d
    }
    fn poison(&self, byte: u8) {
        ok(unsafe { sys::cuMemsetD8_v2(self.ptr, byte, self.bytes) });
    }
    fn download<T: Copy + Default>(&self) -> Vec<T> {
        sync();
        let mut v = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        ok(unsafe { sys::cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), self.ptr, self.bytes) });
        v
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        unsafe { sys::cuMemFree_v2(self.ptr) };
    }
}

fn null_stream() -> cuda::Stream {
    std::ptr::null_mut()
}

fn tbq_code(t: TbqType) -> i32 {
    t as i32
}

/// Rows of random data with the edge cases mixed in: NaN/Inf elements, zero rows, all-NaN rows,
/// huge (d saturates) and tiny rows.
fn rows_with_edges(seed: u64, n_rows: usize, n: usize) -> Vec<f32> {
    let mut x = common::gaussian(seed, n_rows * n);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for r in 0..n_rows {
        let row = &mut x[r * n..(r + 1) * n];
        match r % 7 {
            1 => row.iter_mut().for_each(|v| *v = 0.0),
            2 => {
                row[rng.random_range(0..n)] = f32::NAN;
                row[rng.random_range(0..n)] = f32::INFINITY;
                row[rng.random_range(0..n)] = f32::NEG_INFINITY;
            }
            3 => row.iter_mut().for_each(|v| *v *= 1.0e6),
            4 => row.iter_mut().for_each(|v| *v *= 1.0e-20),
            5 => row[..128].iter_mut().for_each(|v| *v = f32::NAN),
            _ => row
                .iter_mut()
                .for_each(|v| *v *= rng.random_range(0.01f32..10.0)),
        }
    }
    x
}

// ---- tests that need no device ---------------------------------------------------------------

#[test]
fn without_a_device_calls_fail_cleanly() {
    if cuda::available() {
        eprintln!("a device is present: the no-device path is not exercised here");
        return;
    }
    let t = Tensor::contiguous(0x1000, dtype::F32, [128, 1, 1, 1]);
    let d = Tensor::contiguous(0x2000, 0, [128, 1, 1, 1]);
    let e = unsafe { cuda::set_rows(&t, None, &d, null_stream()) }.unwrap_err();
    assert_eq!(e.status(), -8, "{e}");
    let st = unsafe { tbq::ffi::tbq_cuda_set_rows(&t, std::ptr::null(), &d, std::ptr::null_mut()) };
    assert_eq!(st, -8);
    assert_eq!(tbq::ffi::tbq_cuda_available(), 0);
    eprintln!("SKIP: no CUDA driver or device; no-device errors are clean ({e})");
}

#[test]
fn unified_memory_override() {
    cuda::force_unified(Some(true));
    assert_eq!(cuda::unified_memory(0), Ok(true));
    cuda::force_unified(Some(false));
    assert_eq!(cuda::unified_memory(0), Ok(false));
    let mut out = -1;
    assert_eq!(tbq::ffi::tbq_cuda_force_unified(1), 0);
    assert_eq!(unsafe { tbq::ffi::tbq_cuda_unified_memory(0, &mut out) }, 0);
    assert_eq!(out, 1);
    assert_eq!(tbq::ffi::tbq_cuda_force_unified(7), -2);
    cuda::force_unified(None);
    match cuda::unified_memory(0) {
        Ok(u) => eprintln!(
            "device 0 detected as {}",
            if u { "unified" } else { "discrete" }
        ),
        Err(e) => {
            assert!(!cuda::available());
            assert_eq!(e.status(), -8);
        }
    }
}

#[test]
fn fattn_refuses_what_it_does_not_handle() {
    let mk_types = |d: i64, n_q: i64, kt: i32, vt: i32| {
        let q = Tensor::contiguous(0x1000, dtype::F32, [d, n_q, 8, 1]);
        let k = Tensor::contiguous(0x1000, kt, [d, 100, 2, 1]);
        let v = Tensor::contiguous(0x1000, vt, [d, 100, 2, 1]);
        let dst = Tensor::contiguous(0x1000, dtype::F32, [d, 8, n_q, 1]);
        FattnArgs {
            q,
            k,
            v,
            mask: Tensor::NONE,
            sinks: Tensor::NONE,
            dst,
            exact_k: Tensor::NONE,
            scale: 1.0,
            max_bias: 0.0,
            logit_softcap: 0.0,
            reserved: 0,
        }
    };
    let mk = |d: i64, n_q: i64| mk_types(d, n_q, 0, 1);
    assert!(cuda::fattn_supported(&mk(128, 1)).is_ok());
    assert!(cuda::fattn_supported(&mk(256, 8)).is_ok());
    // value types outside the kernels' pairs: refused with the pairs that exist named
    for (kt, vt, ok) in [
        (TbqType::Tbq5_1 as i32, TbqType::Tbq3_1 as i32, true),
        (TbqType::Tbq6_0 as i32, TbqType::Tbq4_0 as i32, true),
        (TbqType::Tbq5_1 as i32, TbqType::Tbq4_1 as i32, true),
        (TbqType::Tbq5_1 as i32, TbqType::Tbq5_0 as i32, false),
        (TbqType::Tbq4_1 as i32, TbqType::Tbq5_1 as i32, false),
        (dtype::Q8_0, TbqType::Tbq4_1 as i32, false),
        (dtype::F16, TbqType::Tbq3_1 as i32, false),
        (dtype::Q8_0, TbqType::Tbq3_0 as i32, true),
    ] {
        let r = cuda::fattn_supported(&mk_types(128, 1, kt, vt));
        assert_eq!(r.is_ok(), ok, "K {kt} V {vt}: {r:?}");
    }
    // block widths: the _64 types at D 64 only, the 128-wide ones at D 128-512 only
    for (d, kt, vt, ok) in [
        (64, TbqType::Tbq4_0_64, TbqType::Tbq3_0_64, true),
        (64, TbqType::Tbq5_1_64, TbqType::Tbq4_1_64, true),
        (64, TbqType::Tbq4_1_64, TbqType::Tbq5_1_64, false),
        // the compact-header types: with every 64-wide type of the served widths, either header
        (64, TbqType::Tbq4_1_64c, TbqType::Tbq4_1_64c, true),
        (64, TbqType::Tbq4_1_64c, TbqType::Tbq3_1_64c, true),
        (64, TbqType::Tbq5_1_64c, TbqType::Tbq3_0_64, true),
        (64, TbqType::Tbq6_0_64, TbqType::Tbq4_1_64c, true),
        (64, TbqType::Tbq3_1_64, TbqType::Tbq3_1_64c, true),
        (64, TbqType::Tbq3_1_64c, TbqType::Tbq4_1_64, true),
        (64, TbqType::Tbq4_1_64c, TbqType::Tbq5_1_64c, false),
        (128, TbqType::Tbq4_1_64c, TbqType::Tbq4_1_64c, false),
        (128, TbqType::Tbq4_1, TbqType::Tbq3_1_64c, false),
        (512, TbqType::Tbq4_0, TbqType::Tbq3_0, true),
        (512, TbqType::Tbq6_0, TbqType::Tbq4_1, true),
        (64, TbqType::Tbq4_0, TbqType::Tbq3_0, false),
        (64, TbqType::Tbq4_0_64, TbqType::Tbq3_0, false),
        (128, TbqType::Tbq4_0_64, TbqType::Tbq3_0_64, false),
        (128, TbqType::Tbq4_0, TbqType::Tbq3_0_64, false),
        (128, TbqType::Tbq4_0_64, TbqType::Tbq3_0, false),
        (512, TbqType::Tbq4_0_64, TbqType::Tbq3_0_64, false),
    ] {
        let r = cuda::fattn_supported(&mk_types(d, 1, kt as i32, vt as i32));
        assert_eq!(r.is_ok(), ok, "D {d} K {kt} V {vt}: {r:?}");
    }
    // f16 / q8_0 keys (the per-token kernel): D 128 and 256 only
    for (d, kt) in [(64, dtype::F16), (512, dtype::Q8_0)] {
        let vt = if d == 64 {
            TbqType::Tbq3_0_64
        } else {
            TbqType::Tbq3_0
        };
        assert!(cuda::fattn_supported(&mk_types(d, 1, kt, vt as i32)).is_err());
    }
    // exact keys: f16 [D, n_exact, n_head_kv, n_seq_kv] with contiguous rows, beside tbq keys only
    let exact = |ty: i32, ne: [i64; 4]| Tensor::contiguous(0x1000, ty, ne);
    let keys = exact(dtype::F16, [128, 4, 2, 1]);
    let strided_rows = Tensor {
        nb: [4, 512, 2048, 4096],
        ..keys
    };
    let odd_stride = Tensor {
        nb: [2, 257, 1024, 2048],
        ..keys
    };
    let tbq4 = TbqType::Tbq4_0 as i32;
    for (kt, e, ok) in [
        (tbq4, keys, true),
        (tbq4, exact(dtype::F16, [128, 200, 2, 1]), true), // more than n_kv: the first n_kv
        (dtype::F16, keys, false),
        (dtype::Q8_0, keys, false),
        (tbq4, exact(dtype::F32, [128, 4, 2, 1]), false),
        (tbq4, exact(dtype::F16, [64, 4, 2, 1]), false),
        (tbq4, exact(dtype::F16, [128, 0, 2, 1]), false),
        (tbq4, exact(dtype::F16, [128, 4, 1, 1]), false),
        (tbq4, exact(dtype::F16, [128, 4, 2, 2]), false),
        (tbq4, strided_rows, false),
        (tbq4, odd_stride, false),
    ] {
        let plain = mk_types(128, 1, kt, TbqType::Tbq3_0 as i32);
        assert!(cuda::fattn_supported(&plain).is_ok());
        let a = FattnArgs {
            exact_k: e,
            ..plain
        };
        match cuda::fattn_supported(&a) {
            Ok(()) => assert!(ok, "K {kt}, exact keys {e:?}: accepted"),
            Err(err) => {
                assert!(!ok, "K {kt}, exact keys {e:?}: {err}");
                assert_eq!(err.status(), -7);
                assert!(err.to_string().contains("exact keys"), "{err}");
                eprintln!("K {kt}, exact keys {:?} {:?}: {err}", e.ne, e.nb);
            }
        }
    }
    for (d, n_q) in [(64, 1), (128, 9), (192, 1), (576, 1)] {
        let e = cuda::fattn_supported(&mk(d, n_q)).unwrap_err();
        assert_eq!(e.status(), -7, "{e}");
        let mut reason = std::ptr::null();
        let st = unsafe { tbq::ffi::tbq_cuda_fattn_supported(&mk(d, n_q), &mut reason) };
        assert_eq!(st, -7);
        let msg = unsafe { std::ffi::CStr::from_ptr(reason) }
            .to_string_lossy()
            .into_owned();
        assert!(!msg.is_empty());
        eprintln!("D={d} n_q={n_q}: {msg}");
    }
}

// ---- quantize / dequantize -------------------------------------------------------------------

#[test]
fn set_rows_is_bit_exact() {
    let Some(_ctx) = gpu() else { return };
    let (ne00, ne01, ne02, ne1) = (256usize, 9usize, 3usize, 20usize);
    for (seed, ty) in (1u64..).zip(TbqType::ALL) {
        for src_f16 in [false, true] {
            for idx64 in [true, false] {
                let x = rows_with_edges(seed * 10 + src_f16 as u64, ne01 * ne02, ne00);
                let mut rng = StdRng::seed_from_u64(seed + 77);
                let mut perm: Vec<usize> = (0..ne1).collect();
                for i in (1..ne1).rev() {
                    perm.swap(i, rng.random_range(0..=i));
                }
                let rows: Vec<usize> = perm[..ne01].to_vec();
                let rb = ty.row_bytes(ne00);
                // expected: poison, then each source row quantized into its destination row
                let mut want = vec![0xABu8; rb * ne1 * ne02];
                for i02 in 0..ne02 {
                    for i in 0..ne01 {
                        let src = &x[(i02 * ne01 + i) * ne00..][..ne00];
                        let out = &mut want[(i02 * ne1 + rows[i]) * rb..][..rb];
                        if src_f16 {
                            let h: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
                            quantize_row_f16(ty, &h, out).unwrap();
                        } else {
                            quantize_row(ty, src, out).unwrap();
                        }
                    }
                }
                let dsrc = if src_f16 {
                    Dev::upload(&x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>())
                } else {
                    Dev::upload(&x)
                };
                let didx = if idx64 {
                    Dev::upload(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>())
                } else {
                    Dev::upload(&rows.iter().map(|&r| r as i32).collect::<Vec<_>>())
                };
                let ddst = Dev::new(want.len());
                ddst.poison(0xAB);
                let st = if src_f16 { dtype::F16 } else { dtype::F32 };
                let src =
                    Tensor::contiguous(dsrc.ptr, st, [ne00 as i64, ne01 as i64, ne02 as i64, 1]);
                let it = if idx64 { dtype::I64 } else { dtype::I32 };
                let idx = Tensor::contiguous(didx.ptr, it, [ne01 as i64, 1, 1, 1]);
                let dst = Tensor::contiguous(
                    ddst.ptr,
                    tbq_code(ty),
                    [ne00 as i64, ne1 as i64, ne02 as i64, 1],
                );
                unsafe { cuda::set_rows(&src, Some(&idx), &dst, null_stream()) }.unwrap();
                let got: Vec<u8> = ddst.download();
                let bad = got.iter().zip(&want).position(|(a, b)| a != b);
                assert!(
                    bad.is_none(),
                    "{ty} f16={src_f16} i64={idx64}: first differing byte {bad:?}"
                );
            }
        }
    }
}

#[test]
fn golden_vectors_on_the_gpu() {
    let Some(_ctx) = gpu() else { return };
    // The compiled-in path, or (a copied test binary run elsewhere) the current directory's.
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    if !dir.is_dir() {
        dir = std::path::PathBuf::from("tests/data/golden");
    }
    let bytes = std::fs::read(dir.join("input.f32")).unwrap();
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let rows = x.len() / 128;
    for ty in TbqType::ALL {
        let want = std::fs::read(dir.join(format!("{ty}.bin"))).unwrap();
        let dsrc = Dev::upload(&x);
        let ddst = Dev::new(want.len());
        ddst.poison(0x5A);
        let src = Tensor::contiguous(dsrc.ptr, dtype::F32, [128, rows as i64, 1, 1]);
        let dst = Tensor::contiguous(ddst.ptr, tbq_code(ty), [128, rows as i64, 1, 1]);
        // through the C ABI, as ggml calls it (idx NULL: CPY)
        let st = unsafe {
            tbq::ffi::tbq_cuda_set_rows(&src, std::ptr::null(), &dst, std::ptr::null_mut())
        };
        assert_eq!(st, 0);
        assert_eq!(
            ddst.download::<u8>(),
            want,
            "{ty}: GPU bytes differ from the golden file"
        );
        // and back: dequantize equals the golden dequantized floats bit for bit
        let wantf = std::fs::read(dir.join(format!("{ty}.dequant.f32"))).unwrap();
        let dout = Dev::new(wantf.len());
        dout.poison(0xFF);
        let deq = Tensor::contiguous(dout.ptr, dtype::F32, [128, rows as i64, 1, 1]);
        unsafe { cuda::get_rows(&dst, None, &deq, null_stream()) }.unwrap();
        assert_eq!(
            dout.download::<u8>(),
            wantf,
            "{ty}: GPU dequantize differs from golden"
        );
    }
}

#[test]
fn get_rows_and_dequantize_are_exact() {
    let Some(_ctx) = gpu() else { return };
    let (d, n_kv, n_head) = (256usize, 41usize, 3usize);
    for (seed, ty) in (11u64..).zip(TbqType::ALL) {
        let x = rows_with_edges(seed, n_kv * n_head, d);
        let rb = ty.row_bytes(d);
        // cache layout: [d, n_kv, n_head] with heads inside a token (nb1 = n_head·rb, nb2 = rb)
        let mut cache = vec![0u8; rb * n_kv * n_head];
        let mut deq = vec![0f32; d * n_kv * n_head];
        for t in 0..n_kv {
            for h in 0..n_head {
                let r = (t * n_head + h) * rb;
                quantize_row(ty, &x[(t * n_head + h) * d..][..d], &mut cache[r..r + rb]).unwrap();
                dequantize_row(ty, &cache[r..r + rb], &mut deq[(h * n_kv + t) * d..][..d]).unwrap();
            }
        }
        let dc = Dev::upload(&cache);
        let src = Tensor {
            data: dc.ptr as *mut _,
            type_: tbq_code(ty),
            ne: [d as i64, n_kv as i64, n_head as i64, 1],
            nb: [ty.block_bytes(), n_head * rb, rb, n_head * rb * n_kv],
        };
        // whole-tensor strided conversion, f32 (exact) and f16 (rounded)
        for f16_out in [false, true] {
            let esz = if f16_out { 2 } else { 4 };
            let dout = Dev::new(d * n_kv * n_head * esz);
            dout.poison(0xFF);
            let ty_out = if f16_out { dtype::F16 } else { dtype::F32 };
            let dst =
                Tensor::contiguous(dout.ptr, ty_out, [d as i64, n_kv as i64, n_head as i64, 1]);
            unsafe { cuda::get_rows(&src, None, &dst, null_stream()) }.unwrap();
            if f16_out {
                let got: Vec<u16> = dout.download();
                for (i, (&g, &w)) in got.iter().zip(&deq).enumerate() {
                    assert_eq!(g, f16::from_f32(w).to_bits(), "{ty} f16 element {i}");
                }
            } else {
                let got: Vec<u32> = dout.download();
                for (i, (&g, &w)) in got.iter().zip(&deq).enumerate() {
                    assert_eq!(g, w.to_bits(), "{ty} f32 element {i}");
                }
            }
        }
        // GET_ROWS with an index tensor [n_rows, n_head]
        let n_rows = 17usize;
        let mut rng = StdRng::seed_from_u64(seed);
        let idx: Vec<i32> = (0..n_rows * n_head)
            .map(|_| rng.random_range(0..n_kv as i32))
            .collect();
        let di = Dev::upload(&idx);
        let it = Tensor::contiguous(di.ptr, dtype::I32, [n_rows as i64, n_head as i64, 1, 1]);
        let dout = Dev::new(d * n_rows * n_head * 4);
        dout.poison(0xFF);
        let dst = Tensor::contiguous(
            dout.ptr,
            dtype::F32,
            [d as i64, n_rows as i64, n_head as i64, 1],
        );
        unsafe { cuda::get_rows(&src, Some(&it), &dst, null_stream()) }.unwrap();
        let got: Vec<f32> = dout.download();
        for h in 0..n_head {
            for r in 0..n_rows {
                let t = idx[h * n_rows + r] as usize;
                let g = &got[(h * n_rows + r) * d..][..d];
                let w = &deq[(h * n_kv + t) * d..][..d];
                assert!(
                    g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty} row {r} head {h}"
                );
            }
        }
    }
}

// ---- flash attention ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Case {
    kt: i32,
    vt: i32,
    d: usize,
    n_q: usize,
    n_head: usize,
    n_head_kv: usize,
    n_kv: usize,
    mask: bool,
    sinks: bool,
    softcap: f32,
    max_bias: f32,
    splits: Option<u32>,
    /// Exact keys: f16 copies of the first `n_exact` keys of each KV head (0: none).
    n_exact: usize,
}

/// K or V of one layer in ggml's cache layout [d, n_kv, n_head_kv] (a token's heads adjacent),
/// as bytes for the GPU and as dequantized f32 [n_head_kv][n_kv][d] for the reference.
fn make_cache(
    ty: i32,
    seed: u64,
    d: usize,
    n_kv: usize,
    n_head_kv: usize,
) -> (Vec<u8>, Vec<f32>, usize) {
    let x = common::gaussian(seed, d * n_kv * n_head_kv);
    let (unit, per) = cuda::unit_bytes(ty).unwrap();
    let rb = d / per * unit;
    let mut bytes = vec![0u8; rb * n_kv * n_head_kv];
    let mut deq = vec![0f32; d * n_kv * n_head_kv];
    for t in 0..n_kv {
        for h in 0..n_head_kv {
            let src = &x[(t * n_head_kv + h) * d..][..d];
            let out = &mut bytes[(t * n_head_kv + h) * rb..][..rb];
            let dq = &mut deq[(h * n_kv + t) * d..][..d];
            match ty {
                _ if TbqType::from_abi(ty).is_some() => {
                    let tt = TbqType::from_abi(ty).unwrap();
                    quantize_row(tt, src, out).unwrap();
                    dequantize_row(tt, out, dq).unwrap();
                }
                dtype::F16 => {
                    for (i, &v) in src.iter().enumerate() {
                        let h16 = f16::from_f32(v);
                        out[2 * i..2 * i + 2].copy_from_slice(&h16.to_le_bytes());
                        dq[i] = h16.to_f32();
                    }
                }
                dtype::Q8_0 => {
                    for b in 0..d / 32 {
                        let xs = &src[b * 32..b * 32 + 32];
                        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let dd = f16::from_f32(amax / 127.0);
                        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                        let blk = &mut out[b * 34..b * 34 + 34];
                        blk[..2].copy_from_slice(&dd.to_le_bytes());
                        for i in 0..32 {
                            let q = (xs[i] * id).round().clamp(-127.0, 127.0) as i8;
                            blk[2 + i] = q as u8;
                            dq[b * 32 + i] = dd.to_f32() * q as f32;
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
    }
    (bytes, deq, rb)
}

fn alibi_slope(max_bias: f32, h: usize, n_head: usize) -> f64 {
    if max_bias <= 0.0 {
        return 1.0;
    }
    let n_log2 = 1usize << (usize::BITS - 1 - n_head.leading_zeros());
    let m0 = 2f64.powf(-(max_bias as f64) / n_log2 as f64);
    let m1 = 2f64.powf(-(max_bias as f64 / 2.0) / n_log2 as f64);
    if h < n_log2 {
        m0.powi(h as i32 + 1)
    } else {
        m1.powi(2 * (h - n_log2) as i32 + 1)
    }
}

fn run_case(c: Case, seed: u64) {
    let rel = case_error(c, seed);
    assert!(
        rel <= FA_TOLERANCE,
        "{c:?}: max abs err / max abs ref = {rel:e}"
    );
}

/// max |GPU − reference| / max |reference| of one case (the output must be written and finite).
fn case_error(c: Case, seed: u64) -> f64 {
    let (d, n_kv) = (c.d, c.n_kv);
    let mut rng = StdRng::seed_from_u64(seed);
    let q = common::gaussian(seed + 1, d * c.n_q * c.n_head);
    let (kb, kd, krb) = make_cache(c.kt, seed + 2, d, n_kv, c.n_head_kv);
    let (vb, vd, vrb) = make_cache(c.vt, seed + 3, d, n_kv, c.n_head_kv);
    let n_q_pad = c.n_q.next_multiple_of(8);
    let mask: Vec<f16> = (0..n_kv * n_q_pad)
        .map(|_| {
            if rng.random_range(0.0..1.0) < 0.2 {
                f16::NEG_INFINITY
            } else {
                f16::from_f32(rng.random_range(-2.0f32..0.0))
            }
        })
        .collect();
    let sinks: Vec<f32> = (0..c.n_head)
        .map(|_| rng.random_range(-1.0f32..4.0))
        .collect();
    let scale = 1.0 / (d as f32).sqrt();

    // Exact keys [n_exact][n_head_kv][d] (a token's heads adjacent, as in the cache), f16,
    // unrelated to K's first rows and drawing a large share of every row's weight, as an attention
    // sink's key does (so that reading either in place of the other shows): 3 × the sum of the
    // unit queries of the KV head's rows (a score near 3 for each), plus noise.
    let g = c.n_head / c.n_head_kv;
    let noise = common::gaussian(seed + 4, d * c.n_exact * c.n_head_kv);
    let mut exact = vec![f16::ZERO; noise.len()];
    for hk in 0..c.n_head_kv {
        let mut pull = vec![0f64; d];
        for qv in q[hk * g * c.n_q * d..][..g * c.n_q * d].chunks_exact(d) {
            let norm = common::norm2(qv).sqrt();
            pull.iter_mut()
                .zip(qv)
                .for_each(|(p, &x)| *p += x as f64 / norm);
        }
        for t in 0..c.n_exact {
            let row = (t * c.n_head_kv + hk) * d;
            for i in 0..d {
                exact[row + i] = f16::from_f64(3.0 * pull[i] + 0.5 * noise[row + i] as f64);
            }
        }
    }
    let exact_f32: Vec<f32> = exact.iter().map(|x| x.to_f32()).collect();
    let cache_key = |hk: usize, t: usize| &kd[(hk * n_kv + t) * d..][..d];
    let key = |hk: usize, t: usize| {
        if t < c.n_exact {
            &exact_f32[(t * c.n_head_kv + hk) * d..][..d]
        } else {
            cache_key(hk, t)
        }
    };
    let want = reference_attention(&c, &q, key, &vd, &mask, &sinks, scale);
    if exact_keys_matter(&c, &mask) {
        let without = reference_attention(&c, &q, cache_key, &vd, &mask, &sinks, scale);
        let rel = max_rel_diff(&without, &want);
        assert!(
            rel > 2.5 * FA_TOLERANCE,
            "{c:?}: the exact keys change the reference by only {rel:e}: this case cannot tell \
             them from K's rows"
        );
    }

    // GPU
    let dq = Dev::upload(&q);
    let dk = Dev::upload(&kb);
    let dv = Dev::upload(&vb);
    let mask_t = mask.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
    // the mask is [n_kv, n_q_pad]: store it padded to its ggml shape
    let mut mask_pad = vec![0u16; n_kv * n_q_pad];
    mask_pad.copy_from_slice(&mask_t);
    let dm = Dev::upload(&mask_pad);
    let ds = Dev::upload(&sinks);
    let de = (c.n_exact > 0)
        .then(|| Dev::upload(&exact.iter().map(|h| h.to_bits()).collect::<Vec<u16>>()));
    let dout = Dev::new(d * c.n_head * c.n_q * 4);
    dout.poison(0xFF); // NaN
    let (kunit, _) = cuda::unit_bytes(c.kt).unwrap();
    let (vunit, _) = cuda::unit_bytes(c.vt).unwrap();
    let cache = |ptr: u64, ty: i32, unit: usize, rb: usize| Tensor {
        data: ptr as *mut _,
        type_: ty,
        ne: [d as i64, n_kv as i64, c.n_head_kv as i64, 1],
        nb: [unit, c.n_head_kv * rb, rb, c.n_head_kv * rb * n_kv],
    };
    let args = FattnArgs {
        q: Tensor::contiguous(
            dq.ptr,
            dtype::F32,
            [d as i64, c.n_q as i64, c.n_head as i64, 1],
        ),
        k: cache(dk.ptr, c.kt, kunit, krb),
        v: cache(dv.ptr, c.vt, vunit, vrb),
        mask: if c.mask {
            Tensor::contiguous(dm.ptr, dtype::F16, [n_kv as i64, n_q_pad as i64, 1, 1])
        } else {
            Tensor::NONE
        },
        sinks: if c.sinks {
            Tensor::contiguous(ds.ptr, dtype::F32, [c.n_head as i64, 1, 1, 1])
        } else {
            Tensor::NONE
        },
        dst: Tensor::contiguous(
            dout.ptr,
            dtype::F32,
            [d as i64, c.n_head as i64, c.n_q as i64, 1],
        ),
        exact_k: match &de {
            Some(de) => {
                let hb = 2 * d; // bytes of one head's key
                Tensor {
                    data: de.ptr as *mut _,
                    type_: dtype::F16,
                    ne: [d as i64, c.n_exact as i64, c.n_head_kv as i64, 1],
                    nb: [2, c.n_head_kv * hb, hb, c.n_exact * c.n_head_kv * hb],
                }
            }
            None => Tensor::NONE,
        },
        scale,
        max_bias: c.max_bias,
        logit_softcap: c.softcap,
        reserved: 0,
    };
    // Note the q layout above is [d, n_q, n_head]: q row (iq1, h) is at (h*n_q + iq1)*d, as read.
    let opt = FattnOptions {
        splits: c.splits,
        sparse_v: Some(0.0),
    };
    unsafe { cuda::flash_attn_ext_with(&args, None, null_stream(), opt) }
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let got: Vec<f32> = dout.download();
    for (i, &g) in got.iter().enumerate() {
        assert!(
            g.is_finite(),
            "{c:?}: element {i} not written or not finite ({g})"
        );
    }
    let got: Vec<f64> = got.iter().map(|&g| g as f64).collect();
    max_rel_diff(&got, &want)
}

/// The flash-attention tests' bound on max |GPU - reference| / max |reference|: four unit
/// roundoffs of f16 (2^-11), as the tensor-core kernels round each product p·d_v (and the query's
/// low part) to f16 before the tensor cores sum them. Over the 426 cases of
/// `fattn_every_pair_head_size_and_gqa` (H100, 2026-12-07) the median was 3.9e-4, the largest
/// 1.63e-3 (tbq5_1/tbq4_1, D 128, n_kv 1000, with sinks) and the next 9.1e-4; a wrong code, scale,
/// gain or mask is off by far more.
const FA_TOLERANCE: f64 = 4.0 / 2048.0;

/// max |a - b| / max |b|.
fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let max_ref = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let max_err = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    max_err / max_ref
}

/// Whether exact keys can change the output of `c`: some row sees one of their tokens and
/// something to weigh it against (another token or the sink).
fn exact_keys_matter(c: &Case, mask: &[f16]) -> bool {
    let seen = |iq1: usize, t: usize| !c.mask || mask[iq1 * c.n_kv + t] != f16::NEG_INFINITY;
    (0..c.n_q).any(|iq1| {
        let weighed = (0..c.n_kv).filter(|&t| seen(iq1, t)).count() + c.sinks as usize;
        (0..c.n_exact.min(c.n_kv)).any(|t| seen(iq1, t)) && weighed >= 2
    })
}

/// ggml's FLASH_ATTN_EXT in f64, as the kernels must compute it: scores q·k·scale (soft-capped),
/// plus mask · ALiBi slope, softmax with the sink, weights times values. `key(hk, t)` is key row t
/// of KV head hk (K's dequantized row, or an exact key); `vd` the dequantized values
/// [n_head_kv][n_kv][d]; q [n_head][n_q][d]. Returns dst [n_q][n_head][d].
fn reference_attention<'a>(
    c: &Case,
    q: &[f32],
    key: impl Fn(usize, usize) -> &'a [f32],
    vd: &[f32],
    mask: &[f16],
    sinks: &[f32],
    scale: f32,
) -> Vec<f64> {
    let (d, n_kv) = (c.d, c.n_kv);
    let g = c.n_head / c.n_head_kv;
    let mut want = vec![0f64; d * c.n_head * c.n_q];
    for h in 0..c.n_head {
        let hk = h / g;
        let slope = alibi_slope(c.max_bias, h, c.n_head);
        for iq1 in 0..c.n_q {
            let qv = &q[(h * c.n_q + iq1) * d..][..d];
            let mut s = vec![f64::NEG_INFINITY; n_kv];
            for t in 0..n_kv {
                let mv = if c.mask {
                    slope * mask[iq1 * n_kv + t].to_f64()
                } else {
                    0.0
                };
                if mv == f64::NEG_INFINITY {
                    continue;
                }
                let mut x = common::dot(qv, key(hk, t)) * scale as f64;
                if c.softcap != 0.0 {
                    x = c.softcap as f64 * (x / c.softcap as f64).tanh();
                }
                s[t] = x + mv;
            }
            let mut m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if c.sinks {
                m = m.max(sinks[h] as f64);
            }
            let mut sum = if c.sinks {
                (sinks[h] as f64 - m).exp()
            } else {
                0.0
            };
            let out = &mut want[(iq1 * c.n_head + h) * d..][..d];
            for t in 0..n_kv {
                if s[t] == f64::NEG_INFINITY {
                    continue;
                }
                let p = (s[t] - m).exp();
                sum += p;
                let v = &vd[(hk * n_kv + t) * d..][..d];
                for i in 0..d {
                    out[i] += p * v[i] as f64;
                }
            }
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    want
}

/// Every K/V pair the kernels serve at head size `d`: each tbq key type with tbq4_0, tbq3_0,
/// tbq3_1 and tbq4_1 values (tensor-core kernel), f16 and q8_0 keys with tbq4_0 and tbq3_0 values
/// (per-token kernel, D 128 and 256). At D 64 the same pairs of 64-wide types: those a user gets
/// (`narrow`: the compact-header types for the sub-scaled widths), those of the first `_64`
/// sub-scaled types, and two mixing both headers (the kernels serve every such mix).
fn pairs(d: usize) -> Vec<(i32, i32)> {
    if d == 64 {
        let first_64 = |t: TbqType| match t {
            TbqType::Tbq3_1 => TbqType::Tbq3_1_64,
            TbqType::Tbq4_1 => TbqType::Tbq4_1_64,
            TbqType::Tbq5_1 => TbqType::Tbq5_1_64,
            t => t.narrow(),
        };
        let mut p: Vec<(i32, i32)> = Vec::new();
        for f in [TbqType::narrow, first_64] {
            for (k, v) in pairs(128) {
                if let (Some(k), Some(v)) = (TbqType::from_abi(k), TbqType::from_abi(v)) {
                    let kv = (f(k) as i32, f(v) as i32);
                    if !p.contains(&kv) {
                        p.push(kv);
                    }
                }
            }
        }
        p.push((TbqType::Tbq4_1_64 as i32, TbqType::Tbq4_1_64c as i32));
        p.push((TbqType::Tbq5_1_64c as i32, TbqType::Tbq3_1_64 as i32));
        return p;
    }
    let mut p = Vec::new();
    for k in TbqType::WIDE {
        for v in [
            TbqType::Tbq4_0,
            TbqType::Tbq3_0,
            TbqType::Tbq3_1,
            TbqType::Tbq4_1,
        ] {
            p.push((k as i32, v as i32));
        }
    }
    if d <= 256 {
        for k in [dtype::F16, dtype::Q8_0] {
            p.extend([(k, 0), (k, 1)]);
        }
    }
    p
}

#[test]
fn fattn_every_pair_head_size_and_gqa() {
    let Some(_ctx) = gpu() else { return };
    let mut seed = 1000;
    let mut errors = Vec::new();
    for d in [64, 128, 256, 512] {
        for (kt, vt) in pairs(d) {
            for (gqa, n_kv) in [(1, 37), (4, 1000), (8, 5003)] {
                seed += 1;
                let c = Case {
                    kt,
                    vt,
                    d,
                    n_q: 1,
                    n_head: 2 * gqa,
                    n_head_kv: 2,
                    n_kv,
                    mask: seed % 2 == 0,
                    sinks: seed % 3 == 0,
                    softcap: 0.0,
                    max_bias: 0.0,
                    splits: None,
                    n_exact: 0,
                };
                errors.push((case_error(c, seed), c));
            }
        }
    }
    // every case runs; the largest errors are printed, so a failure shows how far off the rest are
    errors.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = errors.len();
    for (rel, c) in errors.iter().take(12) {
        println!("{rel:.3e} {c:?}");
    }
    println!("median of {n} cases: {:.3e}", errors[n / 2].0);
    let bad: Vec<_> = errors
        .iter()
        .filter(|(rel, _)| *rel > FA_TOLERANCE)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {n} cases above {FA_TOLERANCE:e}: {bad:?}",
        bad.len()
    );
}

#[test]
fn fattn_lengths_splits_and_options() {
    let Some(_ctx) = gpu() else { return };
    let mut seed = 5000;
    for n_kv in [1, 2, 17, 37, 255, 1000, 5003] {
        for splits in [Some(1), None, Some(7), Some(64)] {
            for (n_q, gqa) in [(1, 4), (3, 1), (2, 8), (8, 2)] {
                seed += 1;
                // D 64 (the _64 types), 128, 256, 512 in turn
                let d = [128, 64, 256, 128, 512][seed as usize % 5];
                let narrow = |t: TbqType| if d == 64 { t.narrow() } else { t };
                let c = Case {
                    kt: narrow(TbqType::ALL[(seed % 2) as usize]) as i32,
                    vt: narrow(TbqType::ALL[((seed / 2) % 2) as usize]) as i32,
                    d,
                    n_q,
                    n_head: 2 * gqa,
                    n_head_kv: 2,
                    n_kv,
                    mask: true,
                    sinks: seed % 2 == 1,
                    softcap: if seed % 3 == 0 { 20.0 } else { 0.0 },
                    max_bias: if seed % 4 == 0 { 8.0 } else { 0.0 },
                    splits,
                    n_exact: 0,
                };
                run_case(c, seed);
            }
        }
    }
}

#[test]
fn fattn_fully_masked_rows_and_sinks() {
    let Some(_ctx) = gpu() else { return };
    // every position masked: output 0 (no sink) as ggml; with a sink: still 0 (no values)
    for sinks in [false, true] {
        let c = Case {
            kt: 0,
            vt: 1,
            d: 128,
            n_q: 1,
            n_head: 4,
            n_head_kv: 1,
            n_kv: 3,
            mask: true,
            sinks,
            softcap: 0.0,
            max_bias: 0.0,
            splits: None,
            n_exact: 0,
        };
        // run_case draws 20% -inf; with n_kv = 3 some seeds mask everything — try several
        for seed in 0..20 {
            run_case(c, 9000 + seed);
        }
    }
}

/// Exact keys in every pair of the tensor-core kernel (tbq keys) at every head size, one and four
/// of them, in one split and in three (300 tokens in splits of 128).
#[test]
fn fattn_exact_keys_every_pair_and_head_size() {
    let Some(_ctx) = gpu() else { return };
    let mut seed = 20000;
    for d in [64, 128, 256, 512] {
        for (kt, vt) in pairs(d)
            .into_iter()
            .filter(|&(k, _)| TbqType::from_abi(k).is_some())
        {
            for n_exact in [1, 4] {
                for splits in [Some(1), Some(3)] {
                    seed += 1;
                    // rows of a KV head: 4 query heads; 2 positions of 2 heads; 3 positions of 4
                    // heads (12 rows: a second, partial row group)
                    let (n_q, gqa) = [(1, 4), (2, 2), (3, 4)][seed as usize % 3];
                    let c = Case {
                        kt,
                        vt,
                        d,
                        n_q,
                        n_head: 2 * gqa,
                        n_head_kv: 2,
                        n_kv: 300,
                        mask: seed % 2 == 0,
                        sinks: seed % 3 == 0,
                        softcap: 0.0,
                        max_bias: 0.0,
                        splits,
                        n_exact,
                    };
                    run_case(c, seed);
                }
            }
        }
    }
}

/// Exact keys with caches shorter than, as long as and longer than them, a whole tile of them (16)
/// and more (20: the first tile of the second warp too), with softcap, ALiBi, sinks and splits.
#[test]
fn fattn_exact_keys_short_caches_and_options() {
    let Some(_ctx) = gpu() else { return };
    let mut seed = 30000;
    for n_kv in [1, 3, 16, 40, 700] {
        for n_exact in [1, 4, 16, 20] {
            for splits in [None, Some(1), Some(8)] {
                seed += 1;
                let d = [64, 128, 256, 512][seed as usize % 4];
                let narrow = |t: TbqType| if d == 64 { t.narrow() } else { t };
                let (n_q, gqa) = [(1, 4), (3, 1), (2, 8)][seed as usize / 4 % 3];
                let values = [
                    TbqType::Tbq4_0,
                    TbqType::Tbq3_0,
                    TbqType::Tbq3_1,
                    TbqType::Tbq4_1,
                ];
                let c = Case {
                    kt: narrow(TbqType::WIDE[seed as usize % TbqType::WIDE.len()]) as i32,
                    vt: narrow(values[seed as usize / 2 % 4]) as i32,
                    d,
                    n_q,
                    n_head: 2 * gqa,
                    n_head_kv: 2,
                    n_kv,
                    mask: true,
                    sinks: seed % 2 == 1,
                    softcap: if seed % 3 == 0 { 20.0 } else { 0.0 },
                    max_bias: if seed % 5 == 0 { 8.0 } else { 0.0 },
                    splits,
                    n_exact,
                };
                run_case(c, seed);
            }
        }
    }
}

#[test]
fn scratch_pool_reuse_and_caller_scratch() {
    let Some(ctx) = gpu() else { return };
    let stream = ctx.new_stream().unwrap();
    let s = stream.cu_stream();
    let a = cuda::pool::scratch(s, 1000).unwrap();
    let b = cuda::pool::scratch(s, 5000).unwrap();
    assert_eq!(a, b, "a smaller request reuses the buffer");
    assert_eq!(cuda::pool::pool_bytes(s), cuda::pool::MIN_BYTES);
    let c = cuda::pool::scratch(s, 3 << 20).unwrap();
    assert!(cuda::pool::pool_bytes(s) >= 3 << 20);
    let d = cuda::pool::scratch(s, 1 << 20).unwrap();
    assert_eq!(c, d);
    cuda::pool::release(s).unwrap();
    assert_eq!(cuda::pool::pool_bytes(s), 0);
    stream.synchronize().unwrap();

    // caller scratch: too small is refused, the right size works
    let (d_, n_kv) = (128usize, 4096usize);
    let (kb, _, rb) = make_cache(0, 1, d_, n_kv, 1);
    let dk = Dev::upload(&kb);
    let q = common::gaussian(3, d_ * 4);
    let dq = Dev::upload(&q);
    let dout = Dev::new(d_ * 4 * 4);
    let kv = Tensor {
        data: dk.ptr as *mut _,
        type_: 0,
        ne: [d_ as i64, n_kv as i64, 1, 1],
        nb: [66, rb, rb, rb * n_kv],
    };
    let args = FattnArgs {
        q: Tensor::contiguous(dq.ptr, dtype::F32, [d_ as i64, 1, 4, 1]),
        k: kv,
        v: kv,
        mask: Tensor::NONE,
        sinks: Tensor::NONE,
        dst: Tensor::contiguous(dout.ptr, dtype::F32, [d_ as i64, 4, 1, 1]),
        exact_k: Tensor::NONE,
        scale: 0.1,
        max_bias: 0.0,
        logit_softcap: 0.0,
        reserved: 0,
    };
    let need = cuda::fattn_scratch_bytes(&args).unwrap();
    eprintln!("scratch for n_kv {n_kv}: {need} bytes");
    if need > 0 {
        let sc = Dev::new(need);
        let e = unsafe { cuda::flash_attn_ext(&args, Some((sc.ptr, need - 4)), s) }.unwrap_err();
        assert_eq!(e.status(), -3);
        unsafe { cuda::flash_attn_ext(&args, Some((sc.ptr, need)), s) }.unwrap();
        stream.synchronize().unwrap();
        let with_caller: Vec<f32> = dout.download();
        dout.poison(0xFF);
        unsafe { cuda::flash_attn_ext(&args, None, s) }.unwrap();
        stream.synchronize().unwrap();
        assert!(cuda::pool::pool_bytes(s) >= need);
        let with_pool: Vec<f32> = dout.download();
        assert_eq!(with_caller, with_pool);
        cuda::pool::release(s).unwrap();
    }
    stream.synchronize().unwrap();
}

#[test]
fn ptxas_report_is_embedded() {
    assert!(
        cuda::module::PTXAS_REPORT_SM90.contains("k_tbq_fattn")
            || std::env::var_os("TBQ_CUDA_ARCHS").is_some()
    );
    assert!(cuda::module::module_names().contains(&"fattn"));
}

// ---- trellis codes (kernels/trellis.cu against src/trellis.rs) ------------------------------

/// The GPU's Viterbi is f32 and may leave the reference's path at a near-tie: it must reach the
/// reference's optimum (free start) or its two-pass heuristic (tail-biting) to within a hair, its
/// stream must hold its own path, its scale must be that path's least-squares scale, and the
/// decoder must reproduce `Trellis::dequantize` bit for bit. Random blocks at random scales, a zero
/// block and a NaN block; outputs poisoned first.
#[test]
fn trellis_encoder_and_decoder_match_the_reference() {
    use tbq::trellis::{Block, Start, Trellis};
    let Some(_ctx) = gpu() else { return };
    for &(l, k) in cuda::trellis::SHAPES {
        let t = Trellis::new(l, k);
        for (b, start) in [
            (128, Start::Free),
            (128, Start::TailBiting),
            (64, Start::TailBiting),
            (64, Start::Free),
        ] {
            let n = if l >= 12 { 20 } else { 48 };
            let seed = (l * 100 + k * 10 + b as u32) as u64 + (start == Start::Free) as u64;
            let mut y = common::gaussian(seed, n * b);
            let mut rng = StdRng::seed_from_u64(seed);
            for (i, blk) in y.chunks_mut(b).enumerate() {
                match i {
                    1 => blk.iter_mut().for_each(|v| *v = 0.0),
                    2 => blk[3] = f32::NAN,
                    _ => {
                        let s = rng.random_range(0.01f32..10.0);
                        blk.iter_mut().for_each(|v| *v *= s)
                    }
                }
            }
            let nw = t.stream_words(b, start);
            let (dy, dw, dd, dc, dout) = (
                Dev::upload(&y),
                Dev::new(n * nw * 4),
                Dev::new(n * 4),
                Dev::new(n * 4),
                Dev::new(n * b * 4),
            );
            for d in [&dw, &dd, &dc, &dout] {
                d.poison(0xff);
            }
            unsafe {
                cuda::trellis::encode(
                    &t,
                    start,
                    b,
                    n,
                    dy.ptr,
                    dw.ptr,
                    dd.ptr,
                    dc.ptr,
                    null_stream(),
                )
                .unwrap();
                cuda::trellis::decode(&t, start, b, n, dw.ptr, dd.ptr, dout.ptr, null_stream())
                    .unwrap();
            }
            let (words, d, cost, out) = (
                dw.download::<u32>(),
                dd.download::<f32>(),
                dc.download::<f32>(),
                dout.download::<f32>(),
            );
            let what = format!("L{l} k{k} b{b} {start:?}");
            let (mut sum_gpu, mut sum_ref, mut same) = (0f64, 0f64, 0);
            for (i, blk) in y.chunks(b).enumerate() {
                let gw = &words[i * nw..(i + 1) * nw];
                let gpu_block = Block {
                    d: d[i],
                    words: gw.to_vec(),
                };
                assert_eq!(
                    &out[i * b..(i + 1) * b],
                    &t.dequantize(&gpu_block, b, start)[..],
                    "{what}: decode of block {i}"
                );
                let rms = (blk.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / b as f64).sqrt();
                if !(rms.is_finite() && rms > 0.0) {
                    assert_eq!(d[i], 0.0, "{what}: block {i} has no scale");
                    continue;
                }
                let yn: Vec<f32> = blk.iter().map(|&v| (v as f64 / rms) as f32).collect();
                let gpu_path = t.unpack(gw, b, start);
                let ref_path = t.encode_states(&yn, start);
                let (cg, cr) = (t.path_cost(&yn, &gpu_path), t.path_cost(&yn, &ref_path));
                same += (gpu_path == ref_path) as usize;
                sum_gpu += cg;
                sum_ref += cr;
                let slack = if start == Start::Free { 2e-4 } else { 0.05 };
                assert!(
                    cg <= cr * (1.0 + slack) + 1e-6,
                    "{what}: block {i}: GPU path cost {cg}, reference {cr}"
                );
                assert!(
                    ((cost[i] as f64) - cg).abs() <= 1e-4 * cg + 1e-6,
                    "{what}: block {i}: cost {} vs {cg}",
                    cost[i]
                );
                let (yr, rr) = gpu_path
                    .iter()
                    .zip(blk)
                    .fold((0f64, 0f64), |(a, c), (&s, &v)| {
                        let r = t.code(s) as f64;
                        (a + v as f64 * r, c + r * r)
                    });
                let d_ls = yr / rr;
                assert!(
                    (d[i] as f64 - d_ls).abs() <= 1e-4 * d_ls.abs(),
                    "{what}: block {i}: d {} vs {d_ls}",
                    d[i]
                );
            }
            assert!(
                sum_gpu <= sum_ref * 1.002,
                "{what}: GPU costs {sum_gpu} vs reference {sum_ref}"
            );
            assert!(
                same * 2 >= n - 2,
                "{what}: only {same} of {} paths agree",
                n - 2
            );
            eprintln!(
                "{what}: {same}/{} paths identical, cost GPU/reference {:.6}",
                n - 2,
                sum_gpu / sum_ref
            );
        }
    }
}
