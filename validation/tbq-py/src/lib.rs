//! `tbq._tbq`: the tbq crate's CPU reference for numpy. Thin: every number comes from the crate
//! (`tbq::reference`, `tbq::codebook`, `tbq::rotation`); this file only moves arrays and turns
//! the crate's errors into Python exceptions. `python/tbq/__init__.py` is the friendly face
//! (dtype conversion, 1-D rows, docstrings).

use numpy::ndarray::{Array1, Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use tbq::reference;
use tbq::{TbqType, BLOCK_ELEMS};

fn ty(name: &str) -> PyResult<TbqType> {
    TbqType::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = TbqType::ALL.iter().map(|t| t.spec().name).collect();
        PyTypeError::new_err(format!("unknown tbq type '{name}' (one of {names:?})"))
    })
}

fn err(e: tbq::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A row of `n` elements must be a whole number of `block`-element blocks (a type's block: 128,
/// or 64 for a `_64` type; or a rotation width).
fn check_row_len(n: usize, block: usize) -> PyResult<()> {
    reference::check_len(n, block).map_err(err)
}

/// Rows of a 2-D array as contiguous slices (copies only if the view is not C-contiguous).
fn rows_of<T: Copy, R>(
    a: ArrayView2<'_, T>,
    mut f: impl FnMut(usize, &[T]) -> PyResult<R>,
) -> PyResult<Vec<R>> {
    let mut out = Vec::with_capacity(a.nrows());
    for (i, row) in a.outer_iter().enumerate() {
        let r = match row.as_slice() {
            Some(s) => f(i, s)?,
            None => f(i, &row.to_vec())?,
        };
        out.push(r);
    }
    Ok(out)
}

/// quantize(x: float32[rows, n], type: str, allow_nonfinite: bool) -> uint8[rows, row_bytes]
#[pyfunction]
#[pyo3(signature = (x, r#type, allow_nonfinite = false))]
fn quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    r#type: &str,
    allow_nonfinite: bool,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let t = ty(r#type)?;
    let x = x.as_array();
    let (rows, n) = x.dim();
    check_row_len(n, t.block_elems())?;
    if !allow_nonfinite {
        if let Some((idx, v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "x[{}, {}] = {v} is not finite (the format reads non-finite values as 0; pass allow_nonfinite=True for that)",
                idx.0, idx.1
            )));
        }
    }
    let rb = t.row_bytes(n);
    let mut out = vec![0u8; rows * rb];
    rows_of(x, |i, row| {
        reference::quantize_row(t, row, &mut out[i * rb..(i + 1) * rb]).map_err(err)
    })?;
    Ok(Array2::from_shape_vec((rows, rb), out)
        .unwrap()
        .into_pyarray(py))
}

/// dequantize(q: uint8[rows, row_bytes], type: str) -> float32[rows, n]
#[pyfunction]
#[pyo3(signature = (q, r#type))]
fn dequantize<'py>(
    py: Python<'py>,
    q: PyReadonlyArray2<'py, u8>,
    r#type: &str,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let t = ty(r#type)?;
    let q = q.as_array();
    let (rows, rb) = q.dim();
    let bb = t.block_bytes();
    if rb == 0 || rb % bb != 0 {
        return Err(PyValueError::new_err(format!(
            "a {} row is a whole number of {bb}-byte blocks; got {rb} bytes",
            t.spec().name
        )));
    }
    let n = rb / bb * t.block_elems();
    let mut out = vec![0f32; rows * n];
    rows_of(q, |i, row| {
        reference::validate(t, row).map_err(|e| PyValueError::new_err(format!("row {i}: {e}")))?;
        reference::dequantize_row(t, row, &mut out[i * n..(i + 1) * n]).map_err(err)
    })?;
    Ok(Array2::from_shape_vec((rows, n), out)
        .unwrap()
        .into_pyarray(py))
}

fn map_rows<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    block: usize,
    f: fn(&[f32], &mut [f32], usize) -> Result<(), tbq::Error>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let x = x.as_array();
    let (rows, n) = x.dim();
    reference::check_block_width(block).map_err(err)?;
    check_row_len(n, block)?;
    let mut out = vec![0f32; rows * n];
    rows_of(x, |i, row| {
        f(row, &mut out[i * n..(i + 1) * n], block).map_err(err)
    })?;
    Ok(Array2::from_shape_vec((rows, n), out)
        .unwrap()
        .into_pyarray(py))
}

/// rotate(x: float32[rows, n], block=128) -> T(x) per block: H·D·x / sqrt(block) (block 64: the
/// `_64` types' rotation)
#[pyfunction]
#[pyo3(signature = (x, block = 128))]
fn rotate<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    block: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    map_rows(py, x, block, reference::rotate)
}

/// unrotate(u: float32[rows, n], block=128) -> T⁻¹(u) per block: D·H·u / sqrt(block)
#[pyfunction]
#[pyo3(signature = (x, block = 128))]
fn unrotate<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    block: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    map_rows(py, x, block, reference::unrotate)
}

/// vec_dot(q: uint8[row_bytes], y: float32[n], type) -> Σ y·dequantize(q), computed in the
/// rotated domain as the attention kernels do.
#[pyfunction]
#[pyo3(signature = (q, y, r#type))]
fn vec_dot(
    q: PyReadonlyArray1<'_, u8>,
    y: PyReadonlyArray1<'_, f32>,
    r#type: &str,
) -> PyResult<f32> {
    let t = ty(r#type)?;
    let (q, y) = (q.as_array(), y.as_array());
    let (q, y) = (q.to_vec(), y.to_vec());
    check_row_len(y.len(), t.block_elems())?;
    if q.len() != t.row_bytes(y.len()) {
        return Err(PyValueError::new_err(format!(
            "{} bytes do not hold one {}-element {} row ({} bytes)",
            q.len(),
            y.len(),
            t.spec().name,
            t.row_bytes(y.len())
        )));
    }
    reference::vec_dot(t, &q, &y).map_err(err)
}

/// codebook(type) -> float32[2^bits]: all reconstruction levels, ascending (code c → levels[c]).
#[pyfunction]
#[pyo3(signature = (r#type))]
fn codebook<'py>(py: Python<'py>, r#type: &str) -> PyResult<Bound<'py, PyArray1<f32>>> {
    Ok(Array1::from(ty(r#type)?.spec().levels.to_vec()).into_pyarray(py))
}

/// lloyd_max(levels) -> (float64[levels], mse): the Lloyd-Max quantizer of N(0, 1) computed
/// from first principles by the crate, and its mean squared error per coordinate.
#[pyfunction]
fn lloyd_max<'py>(py: Python<'py>, levels: usize) -> PyResult<(Bound<'py, PyArray1<f64>>, f64)> {
    if !(2..=1 << 12).contains(&levels) {
        return Err(PyValueError::new_err(format!(
            "levels must be in 2..=4096, got {levels}"
        )));
    }
    let lm = tbq::codebook::lloyd_max_normal(levels);
    Ok((Array1::from(lm.levels).into_pyarray(py), lm.mse))
}

/// signs() -> float32[128]: the diagonal D of the rotation (+1 keeps, -1 negates).
#[pyfunction]
fn signs(py: Python<'_>) -> Bound<'_, PyArray1<f32>> {
    Array1::from_iter((0..BLOCK_ELEMS).map(tbq::rotation::sign)).into_pyarray(py)
}

/// Per-type facts: (bits, block_bytes, bits_per_element).
#[pyfunction]
#[pyo3(signature = (r#type))]
fn type_info(r#type: &str) -> PyResult<(u32, usize, f64)> {
    let s = ty(r#type)?.spec();
    Ok((s.bits, s.block_bytes(), s.bits_per_element()))
}

#[pymodule]
fn _tbq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BLOCK", BLOCK_ELEMS)?;
    m.add(
        "TYPES",
        TbqType::ALL
            .iter()
            .map(|t| t.spec().name)
            .collect::<Vec<_>>(),
    )?;
    m.add("ABI_VERSION", tbq::ABI_VERSION)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(rotate, m)?)?;
    m.add_function(wrap_pyfunction!(unrotate, m)?)?;
    m.add_function(wrap_pyfunction!(vec_dot, m)?)?;
    m.add_function(wrap_pyfunction!(codebook, m)?)?;
    m.add_function(wrap_pyfunction!(lloyd_max, m)?)?;
    m.add_function(wrap_pyfunction!(signs, m)?)?;
    m.add_function(wrap_pyfunction!(type_info, m)?)?;
    Ok(())
}
