"""Numba CPU kernels for HSS (and N:M, its one-level case) times dense.

The wrapper flattens an HSS matrix to fixed-width rows: ``cols: int32[M, S]`` and
``vals: [M, S]`` with ``S = n_top * prod(G_i)`` slots per row (an ELL-like layout that the
hierarchy makes exactly regular), plus ``flags: uint8[M, S // inner]`` telling whether
each kept level-0 group (``inner = prod(G_i, i >= 1)`` slots) holds a nonzero.

* ``matmul_hss_dense``: ``out[M, N] = W @ X`` with ``X: [K, N]``. Rows in parallel. Per row
  the slots of non-empty level-0 groups that hold a nonzero are first compacted into a
  list (upper-level skipping), then consumed 8 at a time: one pass over the output row
  adds ``sum_q v_q * X[c_q, :]`` for 8 gathered rows of ``X`` (8 loads of ``X`` per load
  and store of ``out``; the ``N`` loop is contiguous and vectorises). ``O(nnz * N)``.
* ``tmatmul_hss_dense``: ``out[K, N] = W.T @ Y`` with ``Y: [M, N]`` (scatter-add into rows
  of ``out``); parallel over column tiles of ``N`` so no two threads write one element.
* ``sddmm_hss_dense``: ``out[m, s] = dot(dYT[m], XT[cols[m, s]])`` (sampled dense-dense
  product: the weight gradient on kept slots only; slots in the padding get 0).
  ``O(M * S * B)``.

Measured (benchmarks/bench_structured.py, 4096x4096 @ 4096x256 fp32, one core of an AMD
EPYC): the 8-way gather-axpy runs at ~27 GFLOP/s against ~100 GFLOP/s for BLAS sgemm, i.e.
the kernel is bound by gathering rows of ``X``; tiling ``N`` to keep ``X`` in L2 did not help.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["matmul_hss_dense", "run_matmul", "run_sampled", "run_tmatmul",
           "sddmm_hss_dense", "tmatmul_hss_dense"]


@njit(cache=True, fastmath=True)
def _active_slots(cols, vals, flags, inner, m, K, buf):
    """Write the slots of row ``m`` worth computing into ``buf``; return how many."""
    n = 0
    for g in range(flags.shape[1]):
        if flags[m, g] == 0:  # whole kept level-0 group is empty: skip it
            continue
        for s in range(g * inner, (g + 1) * inner):
            if vals[m, s] != 0 and cols[m, s] < K:
                buf[n] = s
                n += 1
    return n


@njit(parallel=True, cache=True, fastmath=True)
def matmul_hss_dense(cols, vals, flags, inner, X, out):
    M, S = vals.shape
    K, N = X.shape
    for m in prange(M):
        buf = np.empty(S, dtype=np.int64)
        n = _active_slots(cols, vals, flags, inner, m, K, buf)
        o = out[m]
        q = 0
        while q + 8 <= n:  # 8 gathered rows of X per pass over the output row
            s0, s1, s2, s3 = buf[q], buf[q + 1], buf[q + 2], buf[q + 3]
            s4, s5, s6, s7 = buf[q + 4], buf[q + 5], buf[q + 6], buf[q + 7]
            v0, v1, v2, v3 = vals[m, s0], vals[m, s1], vals[m, s2], vals[m, s3]
            v4, v5, v6, v7 = vals[m, s4], vals[m, s5], vals[m, s6], vals[m, s7]
            x0, x1, x2, x3 = X[cols[m, s0]], X[cols[m, s1]], X[cols[m, s2]], X[cols[m, s3]]
            x4, x5, x6, x7 = X[cols[m, s4]], X[cols[m, s5]], X[cols[m, s6]], X[cols[m, s7]]
            for j in range(N):
                o[j] += (v0 * x0[j] + v1 * x1[j] + v2 * x2[j] + v3 * x3[j]
                         + v4 * x4[j] + v5 * x5[j] + v6 * x6[j] + v7 * x7[j])
            q += 8
        while q < n:
            s = buf[q]
            v = vals[m, s]
            x = X[cols[m, s]]
            for j in range(N):
                o[j] += v * x[j]
            q += 1
    return out


@njit(parallel=True, cache=True, fastmath=True)
def tmatmul_hss_dense(cols, vals, flags, inner, Y, out, n_tile):
    M, S = vals.shape
    K, N = out.shape
    n_chunks = (N + n_tile - 1) // n_tile
    for ch in prange(n_chunks):
        j0 = ch * n_tile
        j1 = min(N, j0 + n_tile)
        buf = np.empty(S, dtype=np.int64)
        for m in range(M):
            n = _active_slots(cols, vals, flags, inner, m, K, buf)
            y = Y[m, j0:j1]
            for q in range(n):
                s = buf[q]
                v = vals[m, s]
                o = out[cols[m, s], j0:j1]
                for j in range(j1 - j0):
                    o[j] += v * y[j]
    return out


@njit(parallel=True, cache=True, fastmath=True)
def sddmm_hss_dense(cols, dYT, XT, out):
    M, S = cols.shape
    K, B = XT.shape
    for m in prange(M):
        dy = dYT[m]
        for s in range(S):
            c = cols[m, s]
            if c >= K:  # padding slot: gradient 0
                continue
            x = XT[c]
            acc = dy[0] * 0
            for b in range(B):
                acc += dy[b] * x[b]
            out[m, s] = acc
    return out


def run_matmul(cols, vals, flags, inner, X):
    """Allocate ``[M, N]`` and run :func:`matmul_hss_dense` (``X`` C-contiguous ``[K, N]``)."""
    out = np.zeros((vals.shape[0], X.shape[1]), dtype=X.dtype)
    if out.size and vals.size:
        matmul_hss_dense(cols, vals, flags, inner, X, out)
    return out


def run_tmatmul(cols, vals, flags, inner, Y, K):
    """Allocate ``[K, N]`` and run :func:`tmatmul_hss_dense` (``Y`` C-contiguous ``[M, N]``)."""
    out = np.zeros((K, Y.shape[1]), dtype=Y.dtype)
    if out.size and vals.size:
        # a few chunks per thread for balance, but at least 16 columns per chunk
        tile = max(16, -(-Y.shape[1] // 4))
        tmatmul_hss_dense(cols, vals, flags, inner, Y, out, tile)
    return out


def run_sampled(cols, dYT, XT):
    """Allocate ``[M, S]`` and run :func:`sddmm_hss_dense` (``dYT: [M, B]``, ``XT: [K, B]``)."""
    out = np.zeros(cols.shape, dtype=dYT.dtype)
    if out.size and dYT.shape[1]:
        sddmm_hss_dense(cols, dYT, XT, out)
    return out
