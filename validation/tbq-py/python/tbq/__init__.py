"""tbq — TurboQuant-style KV-cache blocks (tbq4_0, tbq3_0, …, and their 64-wide ``_64`` variants) for numpy.

Each row of ``128·k`` values (``64·k`` for a ``_64`` type) is stored as ``k`` blocks: a randomized Walsh-Hadamard rotation,
one Lloyd-Max code per coordinate and one corrected norm (an IEEE half). The numbers come from the
Rust crate's CPU reference — the definition the CUDA kernels and llama.cpp's CPU backend match
bit for bit.

>>> import numpy as np, tbq
>>> x = np.random.default_rng(0).standard_normal((4, 256), dtype=np.float32)
>>> q = tbq.quantize(x, "tbq4_0")          # uint8[4, 132]: 2 blocks of 66 bytes per row
>>> y = tbq.dequantize(q, "tbq4_0")        # float32[4, 256]
>>> float(((x - y) ** 2).sum() / (x ** 2).sum()) < 0.012
True
"""

from __future__ import annotations

import numpy as np

from . import _tbq

BLOCK: int = _tbq.BLOCK
"""Elements per block (one rotation group)."""

TYPES: tuple = tuple(_tbq.TYPES)
"""The tbq types, as llama.cpp names them."""

ABI_VERSION: int = _tbq.ABI_VERSION

__all__ = [
    "BLOCK", "TYPES", "ABI_VERSION", "quantize", "dequantize", "roundtrip", "rotate", "unrotate",
    "vec_dot", "codebook", "lloyd_max", "signs", "bits", "block_bytes", "bits_per_element",
]


def _rows(x, dtype):
    a = np.ascontiguousarray(x, dtype=dtype)
    if a.ndim == 1:
        return a[None, :], True
    if a.ndim != 2:
        raise ValueError(f"expected one row (1-D) or rows (2-D), got an array of shape {a.shape}")
    return a, False


def _out(a, one):
    return a[0] if one else a


def quantize(x, type: str = "tbq4_0", *, allow_nonfinite: bool = False) -> np.ndarray:
    """Quantize rows of ``n`` values (``n`` a multiple of the type's block, 128 or 64) to
    ``uint8[rows, n/block·block_bytes]``.

    ``x`` is converted to float32. A non-finite value raises ValueError unless
    ``allow_nonfinite``, in which case it reads as 0, as the format defines.
    """
    a, one = _rows(x, np.float32)
    return _out(_tbq.quantize(a, type, allow_nonfinite), one)


def dequantize(q, type: str = "tbq4_0") -> np.ndarray:
    """Dequantize ``uint8`` rows made by :func:`quantize` back to float32 rows."""
    a, one = _rows(q, np.uint8)
    return _out(_tbq.dequantize(a, type), one)


def roundtrip(x, type: str = "tbq4_0") -> np.ndarray:
    """``dequantize(quantize(x))``: what the cache hands attention for ``x``."""
    return dequantize(quantize(x, type), type)


def rotate(x, block: int = 128) -> np.ndarray:
    """``T(x) = H·D·x / sqrt(block)`` on each ``block``-element block of each row (orthogonal;
    ``block`` 128, or 64 for the ``_64`` types: the first 64 signs)."""
    a, one = _rows(x, np.float32)
    return _out(_tbq.rotate(a, block), one)


def unrotate(u, block: int = 128) -> np.ndarray:
    """``T⁻¹(u) = D·H·u / sqrt(block)`` on each ``block``-element block of each row."""
    a, one = _rows(u, np.float32)
    return _out(_tbq.unrotate(a, block), one)


def vec_dot(q, y, type: str = "tbq4_0") -> float:
    """``Σ y·dequantize(q)`` for one quantized row ``q``, scored in the rotated domain."""
    q = np.ascontiguousarray(q, dtype=np.uint8).reshape(-1)
    y = np.ascontiguousarray(y, dtype=np.float32).reshape(-1)
    return _tbq.vec_dot(q, y, type)


def codebook(type: str = "tbq4_0") -> np.ndarray:
    """All reconstruction levels of a type's codebook, ascending (float32[2^bits])."""
    return _tbq.codebook(type)


def lloyd_max(levels: int):
    """``(levels float64[n], mse)``: the Lloyd-Max quantizer of N(0, 1), derived by the crate."""
    return _tbq.lloyd_max(levels)


def signs() -> np.ndarray:
    """The rotation's fixed diagonal ``D`` (float32[128] of ±1)."""
    return _tbq.signs()


def bits(type: str) -> int:
    """Bits per code."""
    return _tbq.type_info(type)[0]


def block_bytes(type: str) -> int:
    """Bytes per 128-element block (2-byte norm + codes)."""
    return _tbq.type_info(type)[1]


def bits_per_element(type: str) -> float:
    """Storage cost per element, norm included (4.125 for tbq4_0, 3.125 for tbq3_0)."""
    return _tbq.type_info(type)[2]
