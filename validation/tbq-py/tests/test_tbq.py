"""Tests of the Python bindings against the Rust reference's behaviour and the frozen format.

The golden vectors (tests/data/golden of the crate) pin every byte the bindings produce; the
packing and reconstruction are re-derived here in numpy from the README's description, so the
bindings are checked against an independent reading of the format, not only against themselves.
"""

from pathlib import Path

import numpy as np
import pytest

import tbq

GOLDEN = Path(__file__).resolve().parents[3] / "tests" / "data" / "golden"

# The format's constants (DESIGN.md / README.md).
HALF = {
    "tbq3_0": [0.245094, 0.756005, 1.343909, 2.151946],
    "tbq4_0": [0.128395, 0.388048, 0.656759, 0.942340, 1.256231, 1.618046, 2.069017, 2.732590],
}
SIGNS = 0xDE573C583FEA2DF6AF21E4F2AA31BCB4
# Lloyd-Max mean squared error per coordinate for N(0, 1) (Max 1960).
LLOYD_MAX_MSE = {"tbq3_0": 0.03454, "tbq4_0": 0.009497}


def gaussian(rows, n, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32)


def hadamard(n=128):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def unpack_codes(q, type):
    """Codes of one block's qs, from the README: coordinate i is lane i % 32, slot i // 32; a
    plane of p bits gives lane l the 4p bits starting at bit 4p·l, slots from the low end;
    planes low bits first (4 bits: [4]; 3: [2, 1]; 5: [4, 1]; 6: [4, 2])."""
    planes = {4: [4], 3: [2, 1], 5: [4, 1], 6: [4, 2]}[tbq.bits(type)]
    bits = np.unpackbits(q, bitorder="little")
    codes = np.zeros(128, dtype=np.int64)
    off, shift = 0, 0
    for p in planes:
        for i in range(128):
            lane, slot = i % 32, i // 32
            start = off + 4 * p * lane + p * slot
            v = int(sum(int(bits[start + b]) << b for b in range(p)))
            codes[i] |= v << shift
        off += 128 * p
        shift += p
    return codes


WIDE = ("tbq4_0", "tbq3_0", "tbq5_0", "tbq6_0", "tbq3_1", "tbq4_1", "tbq5_1")


def test_types_and_sizes():
    assert tbq.TYPES == WIDE + tuple(t + "_64" for t in WIDE) + ("tbq3_1_64c", "tbq4_1_64c", "tbq5_1_64c")
    assert tbq.BLOCK == 128
    table = {t: (tbq.bits(t), tbq.block_bytes(t), tbq.bits_per_element(t)) for t in tbq.TYPES}
    # 128-wide: N-bit codes + a 2-byte norm (+ a 2-byte gains word for _1); the _64 variants the
    # same on 64 values: the norm (and gains word) cost twice the bits per element; the _64c types
    # hold the norm and the two gains in 2 bytes (an 8-bit log scale), as many bits as 128-wide _1
    assert table == {"tbq4_0": (4, 66, 4.125), "tbq3_0": (3, 50, 3.125), "tbq5_0": (5, 82, 5.125),
                     "tbq6_0": (6, 98, 6.125), "tbq3_1": (3, 52, 3.25), "tbq4_1": (4, 68, 4.25),
                     "tbq5_1": (5, 84, 5.25),
                     "tbq4_0_64": (4, 34, 4.25), "tbq3_0_64": (3, 26, 3.25), "tbq5_0_64": (5, 42, 5.25),
                     "tbq6_0_64": (6, 50, 6.25), "tbq3_1_64": (3, 28, 3.5), "tbq4_1_64": (4, 36, 4.5),
                     "tbq5_1_64": (5, 44, 5.5), "tbq3_1_64c": (3, 26, 3.25), "tbq4_1_64c": (4, 34, 4.25),
                     "tbq5_1_64c": (5, 42, 5.25)}
    assert tbq.quantize(gaussian(3, 384), "tbq4_0").shape == (3, 3 * 66)
    assert tbq.quantize(gaussian(1, 256)[0], "tbq3_0").shape == (100,)
    assert tbq.quantize(gaussian(3, 192), "tbq4_0_64").shape == (3, 3 * 34)
    assert tbq.dequantize(tbq.quantize(gaussian(2, 64), "tbq3_1_64"), "tbq3_1_64").shape == (2, 64)
    with pytest.raises(ValueError, match="64"):
        tbq.quantize(gaussian(1, 96), "tbq4_0_64")


def test_rotation_64_is_the_first_64_signs():
    eye = np.eye(64, dtype=np.float32)
    m = tbq.rotate(eye, block=64).T
    want = hadamard(64) @ np.diag(tbq.signs()[:64].astype(np.float64)) / np.sqrt(64)
    np.testing.assert_allclose(m, want, atol=1e-6)
    x = gaussian(3, 192, seed=4)
    np.testing.assert_allclose(tbq.unrotate(tbq.rotate(x, block=64), block=64), x, atol=1e-5)


@pytest.mark.parametrize("type", ["tbq4_0", "tbq3_0"])
def test_codebook_values(type):
    half = np.array(HALF[type], dtype=np.float32)
    cb = tbq.codebook(type)
    assert cb.dtype == np.float32
    np.testing.assert_array_equal(cb, np.concatenate([-half[::-1], half]))
    levels, mse = tbq.lloyd_max(len(cb))
    np.testing.assert_allclose(levels, cb, atol=1e-5)
    assert mse == pytest.approx(LLOYD_MAX_MSE[type], rel=2e-3)


def test_signs_constant():
    expect = np.array([-1.0 if (SIGNS >> i) & 1 else 1.0 for i in range(128)], dtype=np.float32)
    np.testing.assert_array_equal(tbq.signs(), expect)


def test_rotation_is_the_documented_orthogonal_matrix():
    eye = np.eye(128, dtype=np.float32)
    m = tbq.rotate(eye).T  # column j = T(e_j)
    want = hadamard() @ np.diag(tbq.signs().astype(np.float64)) / np.sqrt(128)
    np.testing.assert_allclose(m, want, atol=1e-6)
    np.testing.assert_allclose(m @ m.T, np.eye(128), atol=1e-5)
    x = gaussian(5, 512, seed=1)
    np.testing.assert_allclose(tbq.unrotate(tbq.rotate(x)), x, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(tbq.rotate(x), axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)


@pytest.mark.parametrize("type", tbq.TYPES)
def test_golden_vectors_bit_for_bit(type):
    x = np.fromfile(GOLDEN / "input.f32", dtype="<f4").reshape(-1, 128)
    want_q = np.fromfile(GOLDEN / f"{type}.bin", dtype=np.uint8).reshape(x.shape[0], -1)
    want_y = np.fromfile(GOLDEN / f"{type}.dequant.f32", dtype="<f4").reshape(x.shape)
    q = tbq.quantize(x, type, allow_nonfinite=True)
    np.testing.assert_array_equal(q, want_q)
    y = tbq.dequantize(q, type)
    np.testing.assert_array_equal(y.view(np.uint32), want_y.view(np.uint32))


@pytest.mark.parametrize("type", ["tbq4_0", "tbq3_0"])
def test_packing_and_reconstruction_from_the_readme(type):
    x = gaussian(6, 256, seed=2) * np.float32(3.0)
    q = tbq.quantize(x, type)
    y = tbq.dequantize(q, type)
    cb = tbq.codebook(type).astype(np.float64)
    bb = tbq.block_bytes(type)
    for r in range(x.shape[0]):
        for b in range(2):
            blk = q[r, b * bb:(b + 1) * bb]
            d = float(blk[:2].view("<f2")[0])
            codes = unpack_codes(blk[2:], type)
            # x̂ = T⁻¹(d·C[c]), and the codes are the nearest levels to sqrt(128)·T(x)/||x||.
            want = tbq.unrotate((d * cb[codes]).astype(np.float32)[None])[0]
            np.testing.assert_allclose(y[r, b * 128:(b + 1) * 128], want, atol=1e-5)
            xb = x[r, b * 128:(b + 1) * 128].astype(np.float64)
            u = tbq.rotate(xb.astype(np.float32)[None])[0] * np.sqrt(128) / np.linalg.norm(xb)
            nearest = np.abs(u[:, None] - cb[None, :]).argmin(axis=1)
            assert (codes == nearest).mean() > 0.99  # ties at float rounding aside
            # the norm correction keeps ||x̂|| = ||x|| (to the half precision of d)
            assert np.linalg.norm(want) == pytest.approx(np.linalg.norm(xb), rel=1e-3)


def test_sub_scaled_blocks_from_the_readme():
    """tbqN_1: after d, a u16 of four 4-bit gain indices (group s = rotated coordinates 32s..32s+31,
    bits 4s..4s+3), g_k = 2^((2k - 15)/24); x̂ = T⁻¹((d·g_s)·C[c]), codes packed as in tbqN_0."""
    gains = (2.0 ** ((2 * np.arange(16) - 15) / 24)).astype(np.float32)
    x = gaussian(4, 128, seed=7)
    for type in ("tbq3_1", "tbq4_1", "tbq5_1"):
        q = tbq.quantize(x, type)
        y = tbq.dequantize(q, type)
        cb = tbq.codebook(type)
        for r in range(x.shape[0]):
            d = q[r, :2].view("<f2")[0].astype(np.float32)
            word = int(q[r, 2:4].view("<u2")[0])
            g = gains[[(word >> (4 * s)) & 15 for s in range(4)]]
            codes = unpack_codes(q[r, 4:], type)
            scale = (d * g)[np.arange(128) // 32]
            want = tbq.unrotate((scale * cb[codes]).astype(np.float32)[None])[0]
            np.testing.assert_allclose(y[r], want, atol=1e-5)
        # the gains buy distortion: below the plain type of the same width
        plain = type.replace("_1", "_0")
        xs = gaussian(500, 128, seed=8)
        err = lambda t: float(((xs - tbq.roundtrip(xs, t)) ** 2).sum() / (xs ** 2).sum())
        assert err(type) < 0.8 * err(plain)


@pytest.mark.parametrize("type", ["tbq4_0", "tbq3_0"])
def test_roundtrip_error_at_lloyd_max_theory(type):
    x = gaussian(2000, 128, seed=3)
    y = tbq.roundtrip(x, type)
    rel = float(((x - y) ** 2).sum() / (x ** 2).sum())
    # README: 0.0092 (tbq4_0) and 0.034 (tbq3_0), at or below Lloyd-Max's figures.
    assert rel <= LLOYD_MAX_MSE[type] * 1.02
    assert rel >= LLOYD_MAX_MSE[type] * 0.85


def test_scale_invariance_and_zero_block():
    x = gaussian(4, 128, seed=4)
    a = tbq.roundtrip(x, "tbq4_0")
    b = tbq.roundtrip(x * np.float32(1024.0), "tbq4_0")
    np.testing.assert_allclose(b / 1024.0, a, rtol=2e-3, atol=1e-6)
    z = tbq.quantize(np.zeros((2, 256), np.float32), "tbq3_0")
    assert not z.any()
    assert not tbq.dequantize(z, "tbq3_0").any()


def test_float64_input_matches_float32():
    x = gaussian(3, 256, seed=5)
    np.testing.assert_array_equal(tbq.quantize(x.astype(np.float64), "tbq4_0"), tbq.quantize(x, "tbq4_0"))


@pytest.mark.parametrize("type", ["tbq4_0", "tbq3_0"])
def test_vec_dot_matches_dequantized_dot(type):
    x = gaussian(1, 512, seed=6)[0]
    y = gaussian(1, 512, seed=7)[0]
    q = tbq.quantize(x, type)
    want = float(np.dot(tbq.dequantize(q, type).astype(np.float64), y))
    assert tbq.vec_dot(q, y, type) == pytest.approx(want, rel=1e-4, abs=1e-3)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of 128"):
        tbq.quantize(np.ones((2, 100), np.float32))
    with pytest.raises(ValueError, match="multiple of 128"):
        tbq.quantize(np.ones((2, 0), np.float32))
    with pytest.raises(ValueError, match="1-D|2-D"):
        tbq.quantize(np.ones((2, 2, 128), np.float32))
    with pytest.raises(ValueError, match="multiple of 128"):
        tbq.rotate(np.ones(130, np.float32))
    with pytest.raises(ValueError, match="66-byte blocks"):
        tbq.dequantize(np.zeros((1, 65), np.uint8), "tbq4_0")
    with pytest.raises(ValueError):
        tbq.vec_dot(np.zeros(66, np.uint8), np.zeros(256, np.float32), "tbq4_0")
    with pytest.raises(TypeError, match="unknown tbq type"):
        tbq.quantize(np.ones((1, 128), np.float32), "q4_0")


def test_non_finite_input_is_refused_unless_allowed():
    x = gaussian(2, 256, seed=8)
    x[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"x\[1, 7\] = NaN is not finite"):
        tbq.quantize(x, "tbq4_0")
    x[1, 7] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        tbq.quantize(x, "tbq3_0")
    # allowed: the format reads a non-finite value as 0
    z = x.copy()
    z[1, 7] = 0.0
    np.testing.assert_array_equal(tbq.quantize(x, "tbq3_0", allow_nonfinite=True), tbq.quantize(z, "tbq3_0"))


def test_corrupt_norm_is_refused():
    q = tbq.quantize(gaussian(2, 128, seed=9), "tbq4_0")
    q[1, :2] = np.frombuffer(np.float16(np.nan).tobytes(), np.uint8)
    with pytest.raises(ValueError, match="row 1: block 0 has a non-finite norm"):
        tbq.dequantize(q, "tbq4_0")
