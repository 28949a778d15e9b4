"""Sampled weight gradient of N:M / HSS weights on the lane-select tile order (AVX-512).

The backward partner of :mod:`flexsparse.kernels.cpu.lanes` (same plan, windows and packed
index ``pi: [T, NSG * SS, L]``):

:func:`sampled_hss_lanes` -- weight gradient on kept slots, in tile order:
  ``G[t, q, l] = sum_b dY[b, t*L + l] * X[b, col]``; per batch row one load of ``dY``
  (``L`` rows), one window load, then permute + FMA per slot (4 or 2 slots per tile).

Cost ``O(nnz * B)`` permute+FMA pairs; threads split the row tiles evenly, and batch rows
run in blocks whose activations fit ``_limits.LANES_L2_BLOCK_BYTES``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.kernels.cpu.lanes import L2_BLOCK_BYTES, LanePlan, aligned_empty, windows
from flexsparse.kernels.cpu.simd import vfma, vload, vload_n, vperm, vstore

__all__ = ["run_sampled", "sampled_hss_lanes"]


@njit(cache=True, fastmath=True, inline="always")
def _sampled4(pi, dY, X, G, t, q, col, full, bb0, bb1):
    """``G[t, q:q+4, :] += sum_b dY[b, tile rows] * X[b, window][pi]`` for 4 slots."""
    L = G.shape[2]
    M, K = dY.shape[1], X.shape[1]
    o = (t * G.shape[1] + q) * L
    i0 = vload(pi, o, 64)
    i1 = vload(pi, o + L, 64)
    i2 = vload(pi, o + 2 * L, 64)
    i3 = vload(pi, o + 3 * L, 64)
    a0 = vload(G, o, 64)
    a1 = vload(G, o + L, 64)
    a2 = vload(G, o + 2 * L, 64)
    a3 = vload(G, o + 3 * L, 64)
    m0 = t * L
    for b in range(bb0, bb1):
        if full:
            dy = vload(dY, b * M + m0, 64)
            x = vload(X, b * K + col, 64)
        else:
            dy = vload_n(dY, b * M + m0, 64, M - m0)
            x = vload_n(X, b * K + col, 64, K - col)
        a0 = vfma(a0, dy, vperm(x, i0))
        a1 = vfma(a1, dy, vperm(x, i1))
        a2 = vfma(a2, dy, vperm(x, i2))
        a3 = vfma(a3, dy, vperm(x, i3))
    vstore(G, o, a0)
    vstore(G, o + L, a1)
    vstore(G, o + 2 * L, a2)
    vstore(G, o + 3 * L, a3)


@njit(cache=True, fastmath=True, inline="always")
def _sampled2(pi, dY, X, G, t, q, col, full, bb0, bb1):
    """As :func:`_sampled4` for 2 slots (the windows of 4:6->1:4)."""
    L = G.shape[2]
    M, K = dY.shape[1], X.shape[1]
    o = (t * G.shape[1] + q) * L
    i0 = vload(pi, o, 64)
    i1 = vload(pi, o + L, 64)
    a0 = vload(G, o, 64)
    a1 = vload(G, o + L, 64)
    m0 = t * L
    for b in range(bb0, bb1):
        if full:
            dy = vload(dY, b * M + m0, 64)
            x = vload(X, b * K + col, 64)
        else:
            dy = vload_n(dY, b * M + m0, 64, M - m0)
            x = vload_n(X, b * K + col, 64, K - col)
        a0 = vfma(a0, dy, vperm(x, i0))
        a1 = vfma(a1, dy, vperm(x, i1))
    vstore(G, o, a0)
    vstore(G, o + L, a1)


@njit(cache=True, fastmath=True, inline="always")
def _sampled1(pi, dY, X, G, t, q, col, full, bb0, bb1):
    L = G.shape[2]
    M, K = dY.shape[1], X.shape[1]
    o = (t * G.shape[1] + q) * L
    ix = vload(pi, o, 64)
    a = vload(G, o, 64)
    m0 = t * L
    for b in range(bb0, bb1):
        if full:
            dy = vload(dY, b * M + m0, 64)
            x = vload(X, b * K + col, 64)
        else:
            dy = vload_n(dY, b * M + m0, 64, M - m0)
            x = vload_n(X, b * K + col, 64, K - col)
        a = vfma(a, dy, vperm(x, ix))
    vstore(G, o, a)


@njit(parallel=True, cache=True, fastmath=True)
def sampled_hss_lanes(pi, wcol, wq, dY, X, G, bblk, bounds):
    """Add ``dY.T @ X`` sampled on the kept slots into ``G`` (tile order, zero-filled).

    ``dY: [B, M]``, ``X: [B, K]`` C-contiguous; batch rows in blocks of ``bblk``.
    """
    L = G.shape[2]
    B, M = dY.shape
    K = X.shape[1]
    for p in prange(bounds.shape[0] - 1):
        for bb0 in range(0, B, bblk):
            bb1 = min(B, bb0 + bblk)
            for t in range(bounds[p], bounds[p + 1]):
                for w in range(wcol.shape[0]):
                    col = wcol[w]
                    full = t * L + L <= M and col + L <= K
                    q = wq[w]
                    while q + 4 <= wq[w + 1]:
                        _sampled4(pi, dY, X, G, t, q, col, full, bb0, bb1)
                        q += 4
                    if q + 2 <= wq[w + 1]:
                        _sampled2(pi, dY, X, G, t, q, col, full, bb0, bb1)
                        q += 2
                    if q < wq[w + 1]:
                        _sampled1(pi, dY, X, G, t, q, col, full, bb0, bb1)
    return G


def _bounds(T: int, serial: bool = False) -> np.ndarray:
    """Tile ranges of the threads: even boundaries, so the 2-tile register blocks pair up."""
    parts = 1 if serial else max(1, min(numba.get_num_threads(), T))
    return np.minimum(T, 2 * np.linspace(0, (T + 1) // 2, parts + 1).round().astype(np.int64))



def run_sampled(pi: np.ndarray, plan: LanePlan, S: int, dY: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Sampled gradient in tile order (shape of ``pi``): ``dY: [B, M]``, ``X: [B, K]``."""
    G = aligned_empty(pi.shape, dY.dtype)
    G[...] = 0
    if G.size == 0 or dY.shape[0] == 0:
        return G
    bblk = max(8, L2_BLOCK_BYTES // max(1, X.shape[1] * X.itemsize))
    wcol, wq, _ = windows(plan, S, X.shape[1])
    return sampled_hss_lanes(pi, wcol, wq, np.ascontiguousarray(dY), np.ascontiguousarray(X), G,
                             bblk, _bounds(pi.shape[0]))
