"""Numba CPU kernels for block-sparse (BSR-like) times dense.

Inputs are the raw :class:`~flexsparse.formats.block.BlockSparse` buffers: ``indptr:
int64[gm+1]``, ``indices: int32[nb]``, ``values: [nb, r, c]``, with the logical shape
``(M, K)`` (``gm = ceil(M/r)`` block rows; padding rows/columns of edge blocks hold 0).

* :func:`matmul_block_dense`: ``out[M, N] = W @ X`` for ``X: [K, N]``. A register tile
  is 4 output rows x one slice of ``X``'s columns (64 float32 / 32 float64 = four 64-byte
  registers each, then one register, then a masked one for the ragged end); it stays in
  registers over every stored block of the block row, so ``out`` is written once. Per
  column ``k`` of a block: one load of ``X[k, slice]`` (4 registers) serves 4 broadcast
  weights (16 FMAs per 4 vector loads + 4 broadcasts; a dense GEMM micro-kernel with the
  block-column indirection outside the ``k`` loop). Block rows are split over threads by
  estimated work (stored blocks + 1 per block row, contiguous, equal cost).
  ``O(nb * r * c * N)``.
* ``W.T @ Y`` runs the same kernel on the transposed block structure
  (:func:`transpose_blocks`: a stable sort of the blocks by column, ``O(nb log nb)``,
  values transposed per block).
* :func:`sddmm_block_dense`: ``grad[b] = dYT[rows_b] @ XT[cols_b].T`` (weight gradient on
  stored blocks only), blocks in parallel; ``O(nb * r * c * B)``.

BLAS is not called per block: inside a numba parallel region it collides with OpenBLAS's
own threads, and a 32x32x256 product is too small to amortise a call and its packing.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse import _limits
from flexsparse.kernels.cpu.simd import vfma, vload, vload_n, vsplat, vstore, vstore_n, vzeros

__all__ = ["matmul_block_dense", "run_matmul", "run_sampled", "run_tmatmul", "sddmm_block_dense",
           "transpose_blocks"]


@njit(cache=True, fastmath=True, inline="always")
def _tile4_wide(indptr, indices, values, X, out, br, i0, j0, K, M):
    """Rows ``i0..i0+3`` of block row ``br`` x columns ``j0 : j0 + 256 bytes`` of ``X``."""
    _, r, c = values.shape
    N = X.shape[1]
    a0 = vzeros(X, 256)
    a1 = vzeros(X, 256)
    a2 = vzeros(X, 256)
    a3 = vzeros(X, 256)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        for k in range(min(c, K - k0)):
            x = vload(X, (k0 + k) * N + j0, 256)
            a0 = vfma(a0, vsplat(values[b, i0, k], 256), x)
            a1 = vfma(a1, vsplat(values[b, i0 + 1, k], 256), x)
            a2 = vfma(a2, vsplat(values[b, i0 + 2, k], 256), x)
            a3 = vfma(a3, vsplat(values[b, i0 + 3, k], 256), x)
    m = br * r + i0
    if m < M:
        vstore(out, m * N + j0, a0)
    if m + 1 < M:
        vstore(out, (m + 1) * N + j0, a1)
    if m + 2 < M:
        vstore(out, (m + 2) * N + j0, a2)
    if m + 3 < M:
        vstore(out, (m + 3) * N + j0, a3)


@njit(cache=True, fastmath=True, inline="always")
def _tile4_narrow(indptr, indices, values, X, out, br, i0, j0, K, M):
    """Rows ``i0..i0+3`` x one 64-byte register of columns from ``j0`` (masked at ``N``)."""
    _, r, c = values.shape
    N = X.shape[1]
    n = N - j0
    a0 = vzeros(X, 64)
    a1 = vzeros(X, 64)
    a2 = vzeros(X, 64)
    a3 = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        for k in range(min(c, K - k0)):
            x = vload_n(X, (k0 + k) * N + j0, 64, n)
            a0 = vfma(a0, vsplat(values[b, i0, k], 64), x)
            a1 = vfma(a1, vsplat(values[b, i0 + 1, k], 64), x)
            a2 = vfma(a2, vsplat(values[b, i0 + 2, k], 64), x)
            a3 = vfma(a3, vsplat(values[b, i0 + 3, k], 64), x)
    m = br * r + i0
    if m < M:
        vstore_n(out, m * N + j0, a0, n)
    if m + 1 < M:
        vstore_n(out, (m + 1) * N + j0, a1, n)
    if m + 2 < M:
        vstore_n(out, (m + 2) * N + j0, a2, n)
    if m + 3 < M:
        vstore_n(out, (m + 3) * N + j0, a3, n)


@njit(cache=True, fastmath=True, inline="always")
def _row1(indptr, indices, values, X, out, br, i, j0, K, M):
    """One row ``i`` of block row ``br`` x one 64-byte register of columns (masked)."""
    _, r, c = values.shape
    N = X.shape[1]
    n = N - j0
    a = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        for k in range(min(c, K - k0)):
            a = vfma(a, vsplat(values[b, i, k], 64), vload_n(X, (k0 + k) * N + j0, 64, n))
    m = br * r + i
    if m < M:
        vstore_n(out, m * N + j0, a, n)


@njit(parallel=True, cache=True, fastmath=True)
def matmul_block_dense(indptr, indices, values, X, out, bounds):
    """``out = W @ X`` (``out: [M, N]`` fully written); thread ``p`` runs block rows
    ``bounds[p]:bounds[p+1]``."""
    _, r, _ = values.shape
    K, N = X.shape
    M = out.shape[0]
    wide = 256 // X.itemsize
    lanes = 64 // X.itemsize
    for p in prange(bounds.shape[0] - 1):
        for br in range(bounds[p], bounds[p + 1]):
            j0 = 0
            while j0 + wide <= N:
                i0 = 0
                while i0 + 4 <= r:
                    _tile4_wide(indptr, indices, values, X, out, br, i0, j0, K, M)
                    i0 += 4
                while i0 < r:
                    for jj in range(j0, j0 + wide, lanes):
                        _row1(indptr, indices, values, X, out, br, i0, jj, K, M)
                    i0 += 1
                j0 += wide
            while j0 < N:
                i0 = 0
                while i0 + 4 <= r:
                    _tile4_narrow(indptr, indices, values, X, out, br, i0, j0, K, M)
                    i0 += 4
                while i0 < r:
                    _row1(indptr, indices, values, X, out, br, i0, j0, K, M)
                    i0 += 1
                j0 += lanes
    return out


@njit(parallel=True, cache=True, fastmath=True)
def sddmm_block_dense(brows, indices, dYT, XT, grad):
    nb, r, c = grad.shape
    B = dYT.shape[1]
    M, K = dYT.shape[0], XT.shape[0]
    for b in prange(nb):
        r0 = brows[b] * r
        c0 = indices[b] * c
        for i in range(min(r, M - r0)):
            dy = dYT[r0 + i]
            for k in range(min(c, K - c0)):
                x = XT[c0 + k]
                acc = dy[0] * 0
                for t in range(B):
                    acc += dy[t] * x[t]
                grad[b, i, k] = acc
    return grad


# serial twin (``prange`` runs as ``range``); a plain function when jit is off
_matmul_serial = njit(cache=True, fastmath=True)(
    getattr(matmul_block_dense, "py_func", matmul_block_dense))


def _bounds(indptr: np.ndarray, serial: bool = False) -> np.ndarray:
    """Contiguous split of the block rows into equal estimated work (blocks + 1 per row)."""
    from flexsparse.kernels.cpu.partition import cost_partition

    gm = indptr.shape[0] - 1
    parts = 1 if serial else max(1, min(numba.get_num_threads(), gm))
    return cost_partition(np.diff(indptr) + 1, parts).bounds


def run_matmul(indptr, indices, values, X, shape, block) -> np.ndarray:
    """``W @ X`` -> ``[M, N]`` (``X`` C-contiguous ``[K, N]`` in ``values.dtype``)."""
    M = shape[0]
    out = np.empty((M, X.shape[1]), dtype=X.dtype)
    if out.size == 0:
        return out
    if values.shape[0] == 0 or X.shape[0] == 0:
        out[:] = 0
        return out
    # too little work to pay for waking the thread team: run serially (a twin kernel)
    serial = values.size * X.shape[1] < _limits.PARALLEL_MIN_MACS
    kernel = _matmul_serial if serial else matmul_block_dense
    return kernel(indptr, indices, values, X, out, _bounds(indptr, serial))


def transpose_blocks(indptr, indices, values, shape, block):
    """Block structure of ``W.T``: ``(indptr, indices, values, shape, block)`` (stable sort by column)."""
    (M, K), (r, c) = shape, block
    gm, gk = -(-M // r), -(-K // c)
    brows = np.repeat(np.arange(gm, dtype=np.int32), np.diff(indptr))
    order = np.argsort(indices, kind="stable")
    t_indptr = np.zeros(gk + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=gk), out=t_indptr[1:])
    t_values = np.ascontiguousarray(values[order].transpose(0, 2, 1))
    return t_indptr, brows[order], t_values, (K, M), (c, r)


def run_tmatmul(indptr, indices, values, Y, shape, block) -> np.ndarray:
    """``W.T @ Y`` -> ``[K, N]`` (``Y`` C-contiguous ``[M, N]`` in ``values.dtype``)."""
    t = transpose_blocks(indptr, indices, values, shape, block)
    return run_matmul(t[0], t[1], t[2], Y, t[3], t[4])


def run_sampled(indptr, indices, dYT, XT, shape, block, dtype) -> np.ndarray:
    """Gradient on stored blocks, ``[nb, r, c]`` in ``dtype`` (padding slots get 0)."""
    (r, c) = block
    gm = -(-shape[0] // r)
    nb = indices.shape[0]
    grad = np.zeros((nb, r, c), dtype=dYT.dtype)
    if nb and dYT.shape[1]:
        brows = np.repeat(np.arange(gm, dtype=np.int64), np.diff(indptr))
        sddmm_block_dense(brows, indices, dYT, XT, grad)
    return grad.astype(dtype, copy=False)
