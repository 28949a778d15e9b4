"""Numba CPU kernels for block-sparse (BSR-like) times dense.

Inputs are the raw :class:`~flexsparse.formats.block.BlockSparse` buffers: ``indptr:
int64[gm+1]``, ``indices: int32[nb]``, ``values: [nb, r, c]``, with the logical shape
``(M, K)`` (``gm = ceil(M/r)`` block rows; padding rows/columns of edge blocks hold 0).

* :func:`matmul_block_dense`: ``out[M, N] = W @ X`` for ``X: [K, N]``, read as column
  panels (:func:`pack_panels`: ``[ceil(N/w), K, w]``, ``w`` = two 64-byte registers of
  columns, zero-padded; one pass over ``X``), so the ``c x w`` slice that a block multiplies
  is one contiguous run. A register tile is 8 output rows x one panel (16 accumulators); it
  stays in registers over every stored block of the block row, so ``out`` is written once.
  Per column ``k`` of a block: two loads of the panel row serve 8 broadcast weights (16 FMAs
  per 2 loads + 8 broadcasts). Rows past the last multiple of 8 run one at a time.
* :func:`linear_block_dense`: ``out[B, M] = X @ W.T (+ bias)`` for ``X: [B, K]`` read in
  place, from the blocks transposed (``vt: [nb, c, r]``, cached by the format): a tile is 8
  batch rows x 128 bytes of one block row's outputs (then one masked register; single
  batch rows for the ragged end); per ``k``: two loads of ``vt`` serve 8 broadcast
  activations. ``dY @ W`` is the same kernel on ``W.T``'s structure
  (:func:`transpose_structure`), whose transposed blocks are ``W``'s own blocks read through
  the column order (no copy).
* ``W.T @ Y`` runs :func:`matmul_block_dense` on the transposed block structure
  (:func:`transpose_blocks`: a stable sort of the blocks by column, ``O(nb log nb)``, values
  transposed per block).
* :func:`sampled_block_dense`: ``grad[b] = dY[:, rows_b].T @ X[:, cols_b]`` (weight
  gradient on stored blocks only) from ``dY: [B, M]`` and ``X: [B, K]`` read in place: a
  tile is 8 block rows x 128 bytes of block columns, accumulated over the batch in passes of
  ``SAMPLED_BATCH_ROWS`` (per batch row: two loads of ``X`` serve 8 broadcast ``dY`` values);
  blocks split evenly over threads; ``O(nb * r * c * B)``.

Block rows are split over threads by estimated work (stored blocks + 1 per block row,
contiguous, equal cost; in ``linear`` a thread that is done takes the next thread's rows
from the back, so a thread that starts late loses no time); products under
``_limits.PARALLEL_MIN_MACS`` run serial twins, and so do ``linear`` products under
``_limits.LINEAR_PARALLEL_MIN_MACS`` (a second thread woken right after a torch op starts
milliseconds late, see there).
Cost ``O(nb * r * c * N)`` flops for every product. BLAS is not called per block: inside a
numba parallel region it collides with OpenBLAS's own threads, and a 32x32x256 product is
too small to amortise a call and its packing.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse import _limits
from flexsparse.kernels.cpu._twin import serial_twin
from flexsparse.kernels.cpu.partition import take_job
from flexsparse.kernels.cpu.simd import vadd, vfma, vload, vload_n, vsplat, vstore, vstore_n, vzeros

#: Batch rows per pass of the sampled-gradient kernel: a 32x32 block's activation and
#: output-gradient panels (160 bytes a row in float32) stay in L2 across its row tiles.
SAMPLED_BATCH_ROWS = 1024

__all__ = ["linear_block_dense", "matmul_block_dense", "pack_panels", "run_linear", "run_matmul",
           "run_linear_grad_input", "run_sampled", "run_tmatmul", "sampled_block_dense", "transpose_blocks",
           "transpose_structure"]


@njit(cache=True, fastmath=True, inline="always")
def _tile8x2(indptr, indices, values, xp, out, br, i0, jp, n, K, M):
    """Rows ``i0..i0+7`` of block row ``br`` x panel ``jp`` (``n`` of its columns are real)."""
    _, r, c = values.shape
    N = out.shape[1]
    w = xp.shape[2]
    lanes = w // 2
    a00 = vzeros(xp, 64)
    a01 = vzeros(xp, 64)
    a10 = vzeros(xp, 64)
    a11 = vzeros(xp, 64)
    a20 = vzeros(xp, 64)
    a21 = vzeros(xp, 64)
    a30 = vzeros(xp, 64)
    a31 = vzeros(xp, 64)
    a40 = vzeros(xp, 64)
    a41 = vzeros(xp, 64)
    a50 = vzeros(xp, 64)
    a51 = vzeros(xp, 64)
    a60 = vzeros(xp, 64)
    a61 = vzeros(xp, 64)
    a70 = vzeros(xp, 64)
    a71 = vzeros(xp, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (jp * K + k0) * w
        for k in range(min(c, K - k0)):
            x0 = vload(xp, off, 64)
            x1 = vload(xp, off + lanes, 64)
            off += w
            v = vsplat(values[b, i0 + 0, k], 64)
            a00 = vfma(a00, v, x0)
            a01 = vfma(a01, v, x1)
            v = vsplat(values[b, i0 + 1, k], 64)
            a10 = vfma(a10, v, x0)
            a11 = vfma(a11, v, x1)
            v = vsplat(values[b, i0 + 2, k], 64)
            a20 = vfma(a20, v, x0)
            a21 = vfma(a21, v, x1)
            v = vsplat(values[b, i0 + 3, k], 64)
            a30 = vfma(a30, v, x0)
            a31 = vfma(a31, v, x1)
            v = vsplat(values[b, i0 + 4, k], 64)
            a40 = vfma(a40, v, x0)
            a41 = vfma(a41, v, x1)
            v = vsplat(values[b, i0 + 5, k], 64)
            a50 = vfma(a50, v, x0)
            a51 = vfma(a51, v, x1)
            v = vsplat(values[b, i0 + 6, k], 64)
            a60 = vfma(a60, v, x0)
            a61 = vfma(a61, v, x1)
            v = vsplat(values[b, i0 + 7, k], 64)
            a70 = vfma(a70, v, x0)
            a71 = vfma(a71, v, x1)
    m = br * r + i0
    o = m * N + jp * w
    if n == w and m + 8 <= M:
        vstore(out, o + 0 * N, a00)
        vstore(out, o + 0 * N + lanes, a01)
        vstore(out, o + 1 * N, a10)
        vstore(out, o + 1 * N + lanes, a11)
        vstore(out, o + 2 * N, a20)
        vstore(out, o + 2 * N + lanes, a21)
        vstore(out, o + 3 * N, a30)
        vstore(out, o + 3 * N + lanes, a31)
        vstore(out, o + 4 * N, a40)
        vstore(out, o + 4 * N + lanes, a41)
        vstore(out, o + 5 * N, a50)
        vstore(out, o + 5 * N + lanes, a51)
        vstore(out, o + 6 * N, a60)
        vstore(out, o + 6 * N + lanes, a61)
        vstore(out, o + 7 * N, a70)
        vstore(out, o + 7 * N + lanes, a71)
    else:
        rows = min(8, M - m)
        n0 = min(n, lanes)
        if 0 < rows:
            vstore_n(out, o + 0 * N, a00, n0)
            vstore_n(out, o + 0 * N + lanes, a01, n - lanes)
        if 1 < rows:
            vstore_n(out, o + 1 * N, a10, n0)
            vstore_n(out, o + 1 * N + lanes, a11, n - lanes)
        if 2 < rows:
            vstore_n(out, o + 2 * N, a20, n0)
            vstore_n(out, o + 2 * N + lanes, a21, n - lanes)
        if 3 < rows:
            vstore_n(out, o + 3 * N, a30, n0)
            vstore_n(out, o + 3 * N + lanes, a31, n - lanes)
        if 4 < rows:
            vstore_n(out, o + 4 * N, a40, n0)
            vstore_n(out, o + 4 * N + lanes, a41, n - lanes)
        if 5 < rows:
            vstore_n(out, o + 5 * N, a50, n0)
            vstore_n(out, o + 5 * N + lanes, a51, n - lanes)
        if 6 < rows:
            vstore_n(out, o + 6 * N, a60, n0)
            vstore_n(out, o + 6 * N + lanes, a61, n - lanes)
        if 7 < rows:
            vstore_n(out, o + 7 * N, a70, n0)
            vstore_n(out, o + 7 * N + lanes, a71, n - lanes)


@njit(cache=True, fastmath=True, inline="always")
def _row1x2(indptr, indices, values, xp, out, br, i, jp, n, K, M):
    """Row ``i`` of block row ``br`` x panel ``jp`` (``n`` real columns)."""
    _, r, c = values.shape
    N = out.shape[1]
    w = xp.shape[2]
    lanes = w // 2
    a0 = vzeros(xp, 64)
    a1 = vzeros(xp, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (jp * K + k0) * w
        for k in range(min(c, K - k0)):
            v = vsplat(values[b, i, k], 64)
            a0 = vfma(a0, v, vload(xp, off, 64))
            a1 = vfma(a1, v, vload(xp, off + lanes, 64))
            off += w
    m = br * r + i
    if m < M:
        vstore_n(out, m * N + jp * w, a0, min(n, lanes))
        vstore_n(out, m * N + jp * w + lanes, a1, n - lanes)


@njit(parallel=True, cache=True, fastmath=True)
def matmul_block_dense(indptr, indices, values, xp, out, bounds):
    """``out = W @ X`` (``out: [M, N]`` fully written) from the column panels ``xp`` of ``X``
    (:func:`pack_panels`); thread ``p`` runs block rows ``bounds[p]:bounds[p+1]``."""
    _, r, _ = values.shape
    P, K, w = xp.shape
    M, N = out.shape
    for p in prange(bounds.shape[0] - 1):
        for br in range(bounds[p], bounds[p + 1]):
            for jp in range(P):
                n = min(w, N - jp * w)
                i0 = 0
                while i0 + 8 <= r:
                    _tile8x2(indptr, indices, values, xp, out, br, i0, jp, n, K, M)
                    i0 += 8
                while i0 < r:
                    _row1x2(indptr, indices, values, xp, out, br, i0, jp, n, K, M)
                    i0 += 1
    return out


@njit(parallel=True, cache=True)
def _pack_panels(X, xp):
    """``xp[p, k, j] = X[k, p*w + j]`` (0 past ``N``), rows in parallel."""
    K, N = X.shape
    P, _, w = xp.shape
    for k in prange(K):
        for p in range(P):
            j0 = p * w
            n = min(w, N - j0)
            for j in range(n):
                xp[p, k, j] = X[k, j0 + j]
            for j in range(n, w):
                xp[p, k, j] = 0
    return xp


@njit(cache=True, fastmath=True, inline="always")
def _lin_tile8x2(indptr, indices, order, vt, X, bias, out, br, i0, t0, K, M):
    """Batch rows ``t0..t0+7`` x outputs ``br*r + i0`` : 128 bytes on (all inside ``M``)."""
    _, c, r = vt.shape
    lanes = 64 // vt.itemsize
    a00 = vzeros(X, 64)
    a01 = vzeros(X, 64)
    a10 = vzeros(X, 64)
    a11 = vzeros(X, 64)
    a20 = vzeros(X, 64)
    a21 = vzeros(X, 64)
    a30 = vzeros(X, 64)
    a31 = vzeros(X, 64)
    a40 = vzeros(X, 64)
    a41 = vzeros(X, 64)
    a50 = vzeros(X, 64)
    a51 = vzeros(X, 64)
    a60 = vzeros(X, 64)
    a61 = vzeros(X, 64)
    a70 = vzeros(X, 64)
    a71 = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (order[b] if order.shape[0] else b) * c * r + i0
        for k in range(min(c, K - k0)):
            v0 = vload(vt, off, 64)
            v1 = vload(vt, off + lanes, 64)
            off += r
            x = vsplat(X[t0, k0 + k], 64)
            a00 = vfma(a00, x, v0)
            a01 = vfma(a01, x, v1)
            x = vsplat(X[t0 + 1, k0 + k], 64)
            a10 = vfma(a10, x, v0)
            a11 = vfma(a11, x, v1)
            x = vsplat(X[t0 + 2, k0 + k], 64)
            a20 = vfma(a20, x, v0)
            a21 = vfma(a21, x, v1)
            x = vsplat(X[t0 + 3, k0 + k], 64)
            a30 = vfma(a30, x, v0)
            a31 = vfma(a31, x, v1)
            x = vsplat(X[t0 + 4, k0 + k], 64)
            a40 = vfma(a40, x, v0)
            a41 = vfma(a41, x, v1)
            x = vsplat(X[t0 + 5, k0 + k], 64)
            a50 = vfma(a50, x, v0)
            a51 = vfma(a51, x, v1)
            x = vsplat(X[t0 + 6, k0 + k], 64)
            a60 = vfma(a60, x, v0)
            a61 = vfma(a61, x, v1)
            x = vsplat(X[t0 + 7, k0 + k], 64)
            a70 = vfma(a70, x, v0)
            a71 = vfma(a71, x, v1)
    m = br * r + i0
    if bias.shape[0]:
        b0 = vload(bias, m, 64)
        b1 = vload(bias, m + lanes, 64)
        a00, a01, a10, a11 = vadd(a00, b0), vadd(a01, b1), vadd(a10, b0), vadd(a11, b1)
        a20, a21, a30, a31 = vadd(a20, b0), vadd(a21, b1), vadd(a30, b0), vadd(a31, b1)
        a40, a41, a50, a51 = vadd(a40, b0), vadd(a41, b1), vadd(a50, b0), vadd(a51, b1)
        a60, a61, a70, a71 = vadd(a60, b0), vadd(a61, b1), vadd(a70, b0), vadd(a71, b1)
    o = t0 * M + m
    vstore(out, o, a00)
    vstore(out, o + lanes, a01)
    vstore(out, o + M, a10)
    vstore(out, o + M + lanes, a11)
    vstore(out, o + 2 * M, a20)
    vstore(out, o + 2 * M + lanes, a21)
    vstore(out, o + 3 * M, a30)
    vstore(out, o + 3 * M + lanes, a31)
    vstore(out, o + 4 * M, a40)
    vstore(out, o + 4 * M + lanes, a41)
    vstore(out, o + 5 * M, a50)
    vstore(out, o + 5 * M + lanes, a51)
    vstore(out, o + 6 * M, a60)
    vstore(out, o + 6 * M + lanes, a61)
    vstore(out, o + 7 * M, a70)
    vstore(out, o + 7 * M + lanes, a71)


@njit(cache=True, fastmath=True, inline="always")
def _lin_tile8x1(indptr, indices, order, vt, X, bias, out, br, i0, t0, n, K, M):
    """Batch rows ``t0..t0+7`` x ``n <= lanes`` outputs from ``br*r + i0`` (one masked register)."""
    _, c, r = vt.shape
    a0 = vzeros(X, 64)
    a1 = vzeros(X, 64)
    a2 = vzeros(X, 64)
    a3 = vzeros(X, 64)
    a4 = vzeros(X, 64)
    a5 = vzeros(X, 64)
    a6 = vzeros(X, 64)
    a7 = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (order[b] if order.shape[0] else b) * c * r + i0
        for k in range(min(c, K - k0)):
            v = vload_n(vt, off, 64, n)
            off += r
            a0 = vfma(a0, vsplat(X[t0 + 0, k0 + k], 64), v)
            a1 = vfma(a1, vsplat(X[t0 + 1, k0 + k], 64), v)
            a2 = vfma(a2, vsplat(X[t0 + 2, k0 + k], 64), v)
            a3 = vfma(a3, vsplat(X[t0 + 3, k0 + k], 64), v)
            a4 = vfma(a4, vsplat(X[t0 + 4, k0 + k], 64), v)
            a5 = vfma(a5, vsplat(X[t0 + 5, k0 + k], 64), v)
            a6 = vfma(a6, vsplat(X[t0 + 6, k0 + k], 64), v)
            a7 = vfma(a7, vsplat(X[t0 + 7, k0 + k], 64), v)
    m = br * r + i0
    if bias.shape[0]:
        bv = vload_n(bias, m, 64, n)
        a0 = vadd(a0, bv)
        a1 = vadd(a1, bv)
        a2 = vadd(a2, bv)
        a3 = vadd(a3, bv)
        a4 = vadd(a4, bv)
        a5 = vadd(a5, bv)
        a6 = vadd(a6, bv)
        a7 = vadd(a7, bv)
    o = t0 * M + m
    vstore_n(out, o + 0 * M, a0, n)
    vstore_n(out, o + 1 * M, a1, n)
    vstore_n(out, o + 2 * M, a2, n)
    vstore_n(out, o + 3 * M, a3, n)
    vstore_n(out, o + 4 * M, a4, n)
    vstore_n(out, o + 5 * M, a5, n)
    vstore_n(out, o + 6 * M, a6, n)
    vstore_n(out, o + 7 * M, a7, n)


@njit(cache=True, fastmath=True, inline="always")
def _lin_row1x2(indptr, indices, order, vt, X, bias, out, br, i0, t, K, M):
    """Batch row ``t`` x 128 bytes of outputs from ``br*r + i0`` (all inside ``M``): each
    cache line of ``vt`` is read once, two independent accumulator chains."""
    _, c, r = vt.shape
    lanes = 64 // vt.itemsize
    a0 = vzeros(X, 64)
    a1 = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (order[b] if order.shape[0] else b) * c * r + i0
        for k in range(min(c, K - k0)):
            x = vsplat(X[t, k0 + k], 64)
            a0 = vfma(a0, x, vload(vt, off, 64))
            a1 = vfma(a1, x, vload(vt, off + lanes, 64))
            off += r
    m = br * r + i0
    if bias.shape[0]:
        a0 = vadd(a0, vload(bias, m, 64))
        a1 = vadd(a1, vload(bias, m + lanes, 64))
    vstore(out, t * M + m, a0)
    vstore(out, t * M + m + lanes, a1)


@njit(cache=True, fastmath=True, inline="always")
def _lin_row1(indptr, indices, order, vt, X, bias, out, br, i0, t, n, K, M):
    """Batch row ``t`` x ``n <= lanes`` outputs from ``br*r + i0`` (one masked register)."""
    _, c, r = vt.shape
    a = vzeros(X, 64)
    for b in range(indptr[br], indptr[br + 1]):
        k0 = indices[b] * c
        off = (order[b] if order.shape[0] else b) * c * r + i0
        for k in range(min(c, K - k0)):
            a = vfma(a, vsplat(X[t, k0 + k], 64), vload_n(vt, off, 64, n))
            off += r
    m = br * r + i0
    if bias.shape[0]:
        a = vadd(a, vload_n(bias, m, 64, n))
    vstore_n(out, t * M + m, a, n)


@njit(cache=True, fastmath=True, inline="always")
def _lin_block_row(indptr, indices, order, vt, X, bias, out, br):
    """Every output of block row ``br`` (all batch rows): 8-row x 1-2 register tiles, then
    single batch rows for the ragged end."""
    _, _, r = vt.shape
    B, K = X.shape
    M = out.shape[1]
    lanes = 64 // X.itemsize
    m0 = br * r
    t0 = 0
    while t0 + 8 <= B:
        i0 = 0
        while i0 + 2 * lanes <= r and m0 + i0 + 2 * lanes <= M:
            _lin_tile8x2(indptr, indices, order, vt, X, bias, out, br, i0, t0, K, M)
            i0 += 2 * lanes
        while i0 < r and m0 + i0 < M:
            n = min(lanes, r - i0, M - m0 - i0)
            _lin_tile8x1(indptr, indices, order, vt, X, bias, out, br, i0, t0, n, K, M)
            i0 += lanes
        t0 += 8
    for t in range(t0, B):
        i0 = 0
        while i0 + 2 * lanes <= r and m0 + i0 + 2 * lanes <= M:
            _lin_row1x2(indptr, indices, order, vt, X, bias, out, br, i0, t, K, M)
            i0 += 2 * lanes
        while i0 < r and m0 + i0 < M:
            _lin_row1(indptr, indices, order, vt, X, bias, out, br, i0, t, min(lanes, r - i0, M - m0 - i0), K, M)
            i0 += lanes


@njit(parallel=True, cache=True, fastmath=True)
def linear_block_dense(indptr, indices, order, vt, X, bias, out, bounds, done):
    """``out = X @ W.T (+ bias)`` for ``X: [B, K]``, ``out: [B, M]`` fully written, from the
    transposed blocks ``vt: [nb, c, r]`` (block ``b`` of the structure is ``vt[order[b]]``, or
    ``vt[b]`` when ``order`` is empty).

    Thread ``p`` takes block rows with :func:`~flexsparse.kernels.cpu.partition.take_job`:
    ``bounds[p]:bounds[p+1]`` upwards, then the next thread's range downwards, each until
    it meets a row marked in ``done`` (``uint8[gm]``, zeroed by the caller): a thread that
    starts late (its core held by another runtime's spinning worker) finds its range taken
    from the back. A row taken by both at the meeting point is computed twice into the same
    outputs with the same values (every output is written, never accumulated), so the
    unsynchronised marks only cost duplicated work."""
    for p in prange(bounds.shape[0] - 1):
        br = take_job(done, bounds, p, -1)
        while br >= 0:
            _lin_block_row(indptr, indices, order, vt, X, bias, out, br)
            br = take_job(done, bounds, p, br)
    return out


@njit(cache=True, fastmath=True, inline="always")
def _sg_tile8x2(dY, X, grad, b, m, k, i0, j0, n, t0, t1):
    """``grad[b, i0:i0+8, j0:j0+n] += dY[t0:t1, m:m+8].T @ X[t0:t1, k:k+n]`` (``n <= 2 lanes``)
    on panels: ``dY`` row ``t`` of the block row at ``m + t * r``, ``X``'s at ``k + t * c``."""
    _, r, c = grad.shape
    lanes = 64 // X.itemsize
    K = c
    n0 = min(n, lanes)
    n1 = n - n0
    a00 = vzeros(X, 64)
    a01 = vzeros(X, 64)
    a10 = vzeros(X, 64)
    a11 = vzeros(X, 64)
    a20 = vzeros(X, 64)
    a21 = vzeros(X, 64)
    a30 = vzeros(X, 64)
    a31 = vzeros(X, 64)
    a40 = vzeros(X, 64)
    a41 = vzeros(X, 64)
    a50 = vzeros(X, 64)
    a51 = vzeros(X, 64)
    a60 = vzeros(X, 64)
    a61 = vzeros(X, 64)
    a70 = vzeros(X, 64)
    a71 = vzeros(X, 64)
    for t in range(t0, t1):
        x0 = vload_n(X, t * K + k, 64, n0)
        x1 = vload_n(X, t * K + k + lanes, 64, n1)
        d = vsplat(dY.flat[m + t * r + 0], 64)
        a00 = vfma(a00, d, x0)
        a01 = vfma(a01, d, x1)
        d = vsplat(dY.flat[m + t * r + 1], 64)
        a10 = vfma(a10, d, x0)
        a11 = vfma(a11, d, x1)
        d = vsplat(dY.flat[m + t * r + 2], 64)
        a20 = vfma(a20, d, x0)
        a21 = vfma(a21, d, x1)
        d = vsplat(dY.flat[m + t * r + 3], 64)
        a30 = vfma(a30, d, x0)
        a31 = vfma(a31, d, x1)
        d = vsplat(dY.flat[m + t * r + 4], 64)
        a40 = vfma(a40, d, x0)
        a41 = vfma(a41, d, x1)
        d = vsplat(dY.flat[m + t * r + 5], 64)
        a50 = vfma(a50, d, x0)
        a51 = vfma(a51, d, x1)
        d = vsplat(dY.flat[m + t * r + 6], 64)
        a60 = vfma(a60, d, x0)
        a61 = vfma(a61, d, x1)
        d = vsplat(dY.flat[m + t * r + 7], 64)
        a70 = vfma(a70, d, x0)
        a71 = vfma(a71, d, x1)
    g = (b * grad.shape[1] + i0) * c + j0
    o = g + 0 * c
    vstore_n(grad, o, vadd(a00, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a01, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 1 * c
    vstore_n(grad, o, vadd(a10, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a11, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 2 * c
    vstore_n(grad, o, vadd(a20, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a21, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 3 * c
    vstore_n(grad, o, vadd(a30, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a31, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 4 * c
    vstore_n(grad, o, vadd(a40, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a41, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 5 * c
    vstore_n(grad, o, vadd(a50, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a51, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 6 * c
    vstore_n(grad, o, vadd(a60, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a61, vload_n(grad, o + lanes, 64, n1)), n1)
    o = g + 7 * c
    vstore_n(grad, o, vadd(a70, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a71, vload_n(grad, o + lanes, 64, n1)), n1)


@njit(cache=True, fastmath=True, inline="always")
def _sg_row1x2(dY, X, grad, b, m, k, i, j0, n, t0, t1):
    """One row of :func:`_sg_tile8x2`."""
    _, r, c = grad.shape
    lanes = 64 // X.itemsize
    K = c
    n0 = min(n, lanes)
    n1 = n - n0
    a0 = vzeros(X, 64)
    a1 = vzeros(X, 64)
    for t in range(t0, t1):
        d = vsplat(dY.flat[m + t * r], 64)
        a0 = vfma(a0, d, vload_n(X, t * K + k, 64, n0))
        a1 = vfma(a1, d, vload_n(X, t * K + k + lanes, 64, n1))
    o = (b * grad.shape[1] + i) * c + j0
    vstore_n(grad, o, vadd(a0, vload_n(grad, o, 64, n0)), n0)
    vstore_n(grad, o + lanes, vadd(a1, vload_n(grad, o + lanes, 64, n1)), n1)


@njit(parallel=True, cache=True, fastmath=True)
def sampled_block_dense(brows, indices, dYp, Xp, grad, tb, bounds):
    """``grad[b] += dY[:, rows_b].T @ X[:, cols_b]`` from the block-row panels of ``dY``
    (``dYp: [gm, B, r]``) and block-column panels of ``X`` (``Xp: [gk, B, c]``, zero-padded;
    :func:`pack_panels`), so a block streams two contiguous panels. ``grad: [nb, r, c]`` is
    zeroed by the caller; padding slots stay 0. Tiles of 8 block rows x 128 bytes of block
    columns accumulate over ``tb`` batch rows at a time; thread ``p`` runs blocks
    ``bounds[p]:bounds[p+1]``."""
    _, r, c = grad.shape
    _, B, _ = Xp.shape
    w = 128 // Xp.itemsize
    for p in prange(bounds.shape[0] - 1):
        for b in range(bounds[p], bounds[p + 1]):
            m0 = brows[b] * B * r
            k0 = indices[b] * B * c
            for t0 in range(0, B, tb):
                t1 = min(B, t0 + tb)
                for j0 in range(0, c, w):
                    n = min(w, c - j0)
                    i0 = 0
                    while i0 + 8 <= r:
                        _sg_tile8x2(dYp, Xp, grad, b, m0 + i0, k0 + j0, i0, j0, n, t0, t1)
                        i0 += 8
                    while i0 < r:
                        _sg_row1x2(dYp, Xp, grad, b, m0 + i0, k0 + j0, i0, j0, n, t0, t1)
                        i0 += 1
    return grad


# serial twins (``prange`` runs as ``range``), cached apart from the threaded kernels
_matmul_serial = serial_twin(matmul_block_dense, fastmath=True)
_pack_serial = serial_twin(_pack_panels)
_linear_serial = serial_twin(linear_block_dense, fastmath=True)
_sampled_serial = serial_twin(sampled_block_dense, fastmath=True)


def _bounds(indptr: np.ndarray, serial: bool = False) -> np.ndarray:
    """Contiguous split of the block rows into equal estimated work (blocks + 1 per row):
    the prefix sums ``indptr[i] + i`` cut at the rows nearest to equal shares (the rule of
    :func:`~flexsparse.kernels.cpu.partition.cost_partition`, without its bookkeeping,
    which cost ~0.1 ms a call)."""
    gm = indptr.shape[0] - 1
    parts = 1 if serial else max(1, min(numba.get_num_threads(), gm))
    if parts == 1:
        return np.array([0, gm], dtype=np.int64)
    cum = indptr + np.arange(gm + 1)  # work before row i
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts)
    return np.concatenate(([0], cuts, [gm])).astype(np.int64)


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
    return kernel(indptr, indices, values, pack_panels(X, serial), out, _bounds(indptr, serial))


def pack_panels(X: np.ndarray, serial: bool = False, width: int | None = None) -> np.ndarray:
    """Column panels of ``X: [K, N]``: ``[ceil(N / w), K, w]`` with ``w = width`` columns
    (default: two 64-byte registers), zero-padded; a panel's rows for one block column are
    contiguous."""
    K, N = X.shape
    w = 128 // X.itemsize if width is None else width
    if N == w:
        return X.reshape(1, K, w)
    xp = np.empty((-(-N // w), K, w), dtype=X.dtype)
    return (_pack_serial if serial else _pack_panels)(X, xp)


def run_linear(indptr, indices, vt, X, shape, bias=None, order=None) -> np.ndarray:
    """``X @ W.T (+ bias)`` -> ``[B, M]`` from the transposed blocks ``vt: [nb, c, r]``
    (``X`` C-contiguous ``[B, K]`` in ``vt.dtype``; ``bias``: ``[M]`` or ``None``; ``order``:
    block ``b`` of the structure is ``vt[order[b]]``, identity when ``None``)."""
    M = shape[0]
    B = X.shape[0]
    out = np.empty((B, M), dtype=X.dtype)
    if out.size == 0:
        return out
    if vt.shape[0] == 0 or X.shape[1] == 0:
        out[:] = 0 if bias is None else bias
        return out
    bias = np.zeros(0, dtype=X.dtype) if bias is None else np.ascontiguousarray(bias, dtype=X.dtype)
    order = np.zeros(0, dtype=np.int64) if order is None else np.ascontiguousarray(order, dtype=np.int64)
    # one thread below the limit: the split saves at most half of a few milliseconds, while
    # the second thread may start several milliseconds late (another OpenMP runtime spinning)
    serial = vt.size * B < _limits.LINEAR_PARALLEL_MIN_MACS
    kernel = _linear_serial if serial else linear_block_dense
    done = np.zeros(indptr.shape[0] - 1, dtype=np.uint8)
    return kernel(indptr, indices, order, vt, X, bias, out, _bounds(indptr, serial), done)


def transpose_structure(indptr, indices, shape, block):
    """Block structure of ``W.T``: ``(indptr, indices, order)`` where block ``j`` of ``W.T`` is
    block ``order[j]`` of ``W`` transposed (a stable sort of the blocks by column, ``O(nb log nb)``)."""
    (M, K), (r, c) = shape, block
    gm, gk = -(-M // r), -(-K // c)
    brows = np.repeat(np.arange(gm, dtype=np.int32), np.diff(indptr))
    order = np.argsort(indices, kind="stable")
    t_indptr = np.zeros(gk + 1, dtype=np.int64)
    np.cumsum(np.bincount(indices, minlength=gk), out=t_indptr[1:])
    return t_indptr, brows[order], order


def transpose_blocks(indptr, indices, values, shape, block):
    """Block structure of ``W.T``: ``(indptr, indices, values, shape, block)`` (stable sort by column)."""
    t_indptr, t_indices, order = transpose_structure(indptr, indices, shape, block)
    t_values = np.ascontiguousarray(values[order].transpose(0, 2, 1))
    return t_indptr, t_indices, t_values, shape[::-1], block[::-1]


def run_linear_grad_input(indptr, indices, values, dY, shape, block) -> np.ndarray:
    """``dY @ W`` -> ``[B, K]`` for ``dY: [B, M]``: :func:`run_linear` of ``W.T``, whose
    transposed blocks are ``W``'s own blocks in column order (read through ``order``: no copy,
    no transposes)."""
    t_indptr, t_indices, order = transpose_structure(indptr, indices, shape, block)
    return run_linear(t_indptr, t_indices, values, dY, shape[::-1], order=order)


def run_tmatmul(indptr, indices, values, Y, shape, block) -> np.ndarray:
    """``W.T @ Y`` -> ``[K, N]`` (``Y`` C-contiguous ``[M, N]`` in ``values.dtype``)."""
    t = transpose_blocks(indptr, indices, values, shape, block)
    return run_matmul(t[0], t[1], t[2], Y, t[3], t[4])


def run_sampled(indptr, indices, dY, X, shape, block, dtype) -> np.ndarray:
    """Gradient on stored blocks, ``[nb, r, c]`` in ``dtype`` (padding slots get 0), from
    C-contiguous ``dY: [B, M]`` and ``X: [B, K]`` of one float dtype (packed into block
    panels first: one pass over each)."""
    (r, c) = block
    gm = -(-shape[0] // r)
    nb = indices.shape[0]
    grad = np.zeros((nb, r, c), dtype=dY.dtype)
    if nb and dY.shape[0]:
        brows = np.repeat(np.arange(gm, dtype=np.int64), np.diff(indptr))
        serial = grad.size * dY.shape[0] < _limits.PARALLEL_MIN_MACS
        parts = 1 if serial else max(1, min(numba.get_num_threads(), nb))
        bounds = np.linspace(0, nb, parts + 1).round().astype(np.int64)
        dYp = pack_panels(dY, serial, width=r)
        Xp = pack_panels(X, serial, width=c)
        (_sampled_serial if serial else sampled_block_dense)(brows, indices, dYp, Xp, grad, SAMPLED_BATCH_ROWS,
                                                             bounds)
    return grad.astype(dtype, copy=False)
