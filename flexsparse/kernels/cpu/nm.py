"""N:M times dense on the CPU: the one-level case of the HSS kernels.

An N:M matrix stores ``values: [M, G, n]`` and ``positions: [M, G, n]`` (uint8) with
``G = ceil(K/m)``; slot ``(r, g, j)`` sits in column ``g*m + positions[r, g, j]``. These
wrappers turn that into the flat ``cols``/``vals`` rows of :mod:`flexsparse.kernels.cpu.hss`
(``inner = 1``: every slot is its own level-0 group, so zero slots are skipped) and run the
same numba kernels, so N:M and HSS share one kernel family. Costs as there:
``O(nnz * N)`` for the products, ``O(M * G * n * B)`` for the sampled gradient.

>>> import numpy as np
>>> vals = np.array([[[1.], [2.]]]); pos = np.array([[[3], [0]]], dtype=np.uint8)
>>> matmul_nm_dense(vals, pos, 4, 5, np.eye(5)).tolist()   # W = [[0, 0, 0, 1, 2]]
[[0.0, 0.0, 0.0, 1.0, 2.0]]
"""

from __future__ import annotations

import numpy as np

from flexsparse.kernels.cpu import hss as _hss

__all__ = ["matmul_nm_dense", "sddmm_nm_dense", "tmatmul_nm_dense"]


def _flat(values: np.ndarray, positions: np.ndarray, m: int):
    """``cols int32[M, G*n]``, ``vals [M, G*n]``, ``flags uint8[M, G*n]`` from the N:M layout."""
    M, G, n = values.shape
    cols = (np.arange(G, dtype=np.int64)[None, :, None] * m + positions).reshape(M, G * n)
    cols = cols.astype(np.int32 if G * m < 2**31 else np.int64)
    vals = np.ascontiguousarray(values.reshape(M, G * n))
    flags = np.ascontiguousarray(vals != 0).view(np.uint8)
    return cols, vals, flags


def matmul_nm_dense(values, positions, m: int, K: int, X) -> np.ndarray:
    """``W @ X`` for an N:M ``W`` of logical width ``K`` and dense ``X: [K, N]``."""
    X = np.ascontiguousarray(X, dtype=values.dtype)
    if X.ndim != 2 or X.shape[0] != K:
        raise ValueError(f"X must have shape ({K}, N), got {X.shape}")
    cols, vals, flags = _flat(values, positions, m)
    return _hss.run_matmul(cols, vals, flags, 1, X)


def tmatmul_nm_dense(values, positions, m: int, K: int, Y) -> np.ndarray:
    """``W.T @ Y`` for an N:M ``W`` of logical width ``K`` and dense ``Y: [M, N]``."""
    Y = np.ascontiguousarray(Y, dtype=values.dtype)
    if Y.ndim != 2 or Y.shape[0] != values.shape[0]:
        raise ValueError(f"Y must have shape ({values.shape[0]}, N), got {Y.shape}")
    cols, vals, flags = _flat(values, positions, m)
    return _hss.run_tmatmul(cols, vals, flags, 1, Y, K)


def sddmm_nm_dense(positions, m: int, K: int, dYT, XT) -> np.ndarray:
    """Gradient on kept slots: ``out[r, g, j] = dYT[r] . XT[g*m + positions[r, g, j]]``."""
    M, G, n = positions.shape
    dYT = np.ascontiguousarray(dYT)
    XT = np.ascontiguousarray(XT, dtype=dYT.dtype)
    if XT.shape[0] != K or dYT.shape[0] != M or dYT.shape[1] != XT.shape[1]:
        raise ValueError(f"dYT {dYT.shape} and XT {XT.shape} do not match W ({M}, {K})")
    cols = (np.arange(G, dtype=np.int64)[None, :, None] * m + positions).reshape(M, G * n)
    return _hss.run_sampled(cols.astype(np.int32), dYT, XT).reshape(M, G, n)
