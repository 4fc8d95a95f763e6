//! Golden vectors: committed inputs and the exact bytes (and dequantized floats) they must give.
//! They freeze format version 1 — the CUDA kernels and the C ABI test check the same files.
//!
//! `TBQ_BLESS=1 cargo test --test golden` writes them anew; only ever do that for a new type (and
//! check that `git status` shows no existing file changed). The 64-wide types quantize the same
//! input as 64-element blocks: golden block `b` of 128 is their blocks `2b` and `2b + 1`.

mod common;

use std::path::PathBuf;

use tbq::reference::{dequantize_row, quantize_row};
use tbq::{TbqType, BLOCK_ELEMS};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

fn blessing() -> bool {
    std::env::var_os("TBQ_BLESS").is_some()
}

/// The golden inputs: ordinary, scaled, sparse, outlier and degenerate blocks.
fn make_inputs() -> Vec<f32> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, scale) in [1.0f32, 1.0, 1.0, 1.0, 0.01, 100.0, 3.0e-3, 7.0]
        .into_iter()
        .enumerate()
    {
        rows.push(
            common::gaussian(100 + i as u64, BLOCK_ELEMS)
                .iter()
                .map(|v| v * scale)
                .collect(),
        );
    }
    let g = common::gaussian(200, BLOCK_ELEMS);
    rows.push(vec![0.0; BLOCK_ELEMS]); // zero block: d = 0, codes 0
    rows.push(vec![1.0; BLOCK_ELEMS]); // constant: all energy in one rotated coordinate
    let mut spike = vec![0.0; BLOCK_ELEMS];
    spike[77] = -2.5;
    rows.push(spike);
    let mut outlier = g.clone();
    outlier[5] = 60.0; // a K-cache outlier channel
    rows.push(outlier);
    let mut nan = g.clone();
    nan[3] = f32::NAN; // read as 0
    rows.push(nan);
    let mut inf = g.clone();
    inf[0] = f32::INFINITY;
    inf[127] = f32::NEG_INFINITY;
    rows.push(inf);
    rows.push(vec![f32::NAN; BLOCK_ELEMS]); // nothing finite: zero block
    rows.push(g.iter().map(|v| v * 1.0e6).collect()); // d saturates at 65504
    rows.push(g.iter().map(|v| v * 1.0e-20).collect()); // subnormal squares; d underflows to 0
    rows.push(g.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect()); // f16-exact
    rows.concat()
}

fn read_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(dir().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e} (TBQ_BLESS=1 writes the golden files)"));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn write_f32(name: &str, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(dir().join(name), bytes).unwrap();
}

/// The committed inputs (written once per process when blessing, so tests may run in parallel).
fn inputs() -> Vec<f32> {
    static BLESSED: std::sync::Once = std::sync::Once::new();
    if blessing() {
        BLESSED.call_once(|| {
            std::fs::create_dir_all(dir()).unwrap();
            write_f32("input.f32", &make_inputs());
        });
    }
    read_f32("input.f32")
}

#[test]
fn golden_bytes_and_dequantized_values() {
    let x = inputs();
    assert_eq!(x.len() % BLOCK_ELEMS, 0);
    for ty in TbqType::ALL {
        let mut q = vec![0u8; ty.row_bytes(x.len())];
        quantize_row(ty, &x, &mut q).unwrap();
        let mut y = vec![0.0f32; x.len()];
        dequantize_row(ty, &q, &mut y).unwrap();
        let (qname, yname) = (format!("{ty}.bin"), format!("{ty}.dequant.f32"));
        if blessing() {
            std::fs::write(dir().join(&qname), &q).unwrap();
            write_f32(&yname, &y);
        }
        let want = std::fs::read(dir().join(&qname)).unwrap();
        let bb = ty.block_bytes();
        for (b, (got, want)) in q.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(got, want, "{ty}: block {b} differs from the golden bytes");
        }
        assert_eq!(q.len(), want.len());
        let want_y = read_f32(&yname);
        assert_eq!(y.len(), want_y.len());
        for (i, (a, b)) in y.iter().zip(&want_y).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{ty}: dequantized element {i}");
        }
    }
}

/// The degenerate blocks behave as documented.
#[test]
fn golden_degenerate_blocks() {
    let x = inputs();
    for ty in TbqType::ALL {
        let mut q = vec![0u8; ty.row_bytes(x.len())];
        quantize_row(ty, &x, &mut q).unwrap();
        // Input row `row` (128 elements) is `per_row` blocks of this type.
        let per_row = BLOCK_ELEMS / ty.block_elems();
        let bb = ty.block_bytes();
        let blocks =
            |row: usize| (row * per_row..(row + 1) * per_row).map(|b| &q[b * bb..(b + 1) * bb]);
        for b in blocks(8) {
            assert!(
                b.iter().all(|&v| v == 0),
                "{ty}: zero row is the zero block"
            );
        }
        for b in blocks(14) {
            assert!(
                b.iter().all(|&v| v == 0),
                "{ty}: all-NaN row is the zero block"
            );
        }
        let compact = ty.spec().compact;
        for b in blocks(15) {
            if compact {
                assert_eq!(
                    b[0], 255,
                    "{ty}: the scale saturates at the top of its grid"
                );
            } else {
                assert_eq!(
                    &b[..2],
                    &half::f16::from_f32(65504.0).to_le_bytes(),
                    "{ty}: d saturates"
                );
            }
        }
        for b in blocks(16) {
            if compact {
                assert_eq!(b[0], 1, "{ty}: a tiny norm takes the grid's least scale");
            } else {
                assert_eq!(
                    &b[..2],
                    &[0, 0],
                    "{ty}: a norm below f16's range underflows to d = 0"
                );
            }
            assert!(
                b[2..].iter().any(|&v| v != 0),
                "{ty}: codes are still computed"
            );
        }
    }
}
