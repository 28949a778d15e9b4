"""Numba CPU gather kernels for HSS (and N:M, its one-level case) times dense.

``W.T @ Y`` always runs here; ``W @ X``, ``X @ W.T`` and the sampled gradient run here only
where the lane-select kernels of :mod:`flexsparse.kernels.cpu.lanes` do not apply (no
AVX-512, or a pattern whose kept slots span more columns than one register holds).

The wrapper flattens an HSS matrix to fixed-width rows: ``cols: int32[M, S]`` and
``vals: [M, S]`` with ``S = n_top * prod(G_i)`` slots per row (an ELL-like layout that the
hierarchy makes exactly regular), plus ``flags: uint8[M, S // inner]`` telling whether
each kept level-0 group (``inner = prod(G_i, i >= 1)`` slots) holds a nonzero.

* ``matmul_hss_dense``: ``out[M, N] = W @ X`` with ``X: [K, N]``. Parallel over blocks of
  ``ROWS_PER_TASK`` output rows; inside a task the row's slots are walked in K-blocks (the
  top-level groups whose rows of ``X`` fill ~``X_BLOCK_BYTES``, kept in L2 while the task's
  rows stream through it: without this every output row re-reads ``density * K`` rows of
  ``X`` from L3). Per (row, K-block) the slots of non-empty level-0 groups that hold a
  nonzero are compacted into a list (upper-level skipping), then consumed 8 at a time: one
  pass over the output row adds ``sum_q v_q * X[c_q, :]`` for 8 gathered rows of ``X``
  (8 loads of ``X`` per load and store of ``out``; the ``N`` loop is contiguous and
  vectorises). ``O(nnz * N)`` flops.
* ``tmatmul_csr_dense``: ``out[K, N] = W.T @ Y`` with ``Y: [M, N]`` on the column-major
  (transposed CSR) order of the kept slots, which the format builds once (a stable sort
  of the slot columns, ``O(nnz log nnz)``): row ``k`` of ``out`` gathers ``v * Y[m, :]``
  over the slots of column ``k``; a register tile of 64 float32 (32 float64) columns,
  two accumulator sets for two slots in flight; rows split over threads by slot count, a
  thread that is done taking the next thread's rows from the top
  (:func:`~flexsparse.kernels.cpu.partition.take_job`).
* ``tmatmul_hss_dense``: the same by scatter-add into rows of ``out`` (parallel over column
  tiles of ``N``); kept for reference and the tests.
* ``sddmm_hss_dense``: ``out[m, s] = dot(dYT[m], XT[cols[m, s]])`` (sampled dense-dense
  product: the weight gradient on kept slots only; slots in the padding get 0).
  ``O(M * S * B)``.

Measured (benchmarks/bench_structured.py, 4096x4096 @ 4096x256 fp32, 2 heavily shared
cores, before the lane-select kernels existed): the gather-axpy runs at roughly a quarter
of BLAS sgemm throughput per kept value (time / ideal 3.4-5.3), so N:M 1:8 and HSS
4:7->1:4 beat dense by 1.2-1.5x while 1:4 only breaks even; each kept value costs one load
of ``X`` per FMA, where sgemm reuses a loaded value from registers many times.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.kernels.cpu.partition import cost_partition, take_job
from flexsparse.kernels.cpu.simd import vadd, vfma, vload, vload_n, vsplat, vstore, vstore_n, vzeros

__all__ = ["matmul_hss_dense", "run_matmul", "run_sampled", "run_tmatmul", "run_tmatmul_csr",
           "sddmm_hss_dense", "tmatmul_csr_dense", "tmatmul_hss_dense", "transposed_csr"]


@njit(cache=True, fastmath=True)
def _active_slots(cols, vals, flags, inner, m, s0, s1, K, buf):
    """Write the slots in ``[s0, s1)`` of row ``m`` worth computing into ``buf``; return how many.

    ``s0`` and ``s1`` are multiples of ``inner`` (whole level-0 groups).
    """
    n = 0
    for g in range(s0 // inner, s1 // inner):
        if flags[m, g] == 0:  # whole kept level-0 group is empty: skip it
            continue
        for s in range(g * inner, (g + 1) * inner):
            if vals[m, s] != 0 and cols[m, s] < K:
                buf[n] = s
                n += 1
    return n


@njit(cache=True, fastmath=True)
def _gather_axpy(o, X, cols, vals, m, buf, n):
    """``o += sum_q vals[m, buf[q]] * X[cols[m, buf[q]]]``, 8 gathered rows per pass over ``o``."""
    N = o.shape[0]
    q = 0
    while q + 8 <= n:
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


@njit(parallel=True, cache=True, fastmath=True)
def matmul_hss_dense(cols, vals, flags, inner, k_slots, m_rows, X, out):
    M, S = vals.shape
    K, N = X.shape
    n_row_blocks = (M + m_rows - 1) // m_rows
    for rb in prange(n_row_blocks):
        buf = np.empty(k_slots, dtype=np.int64)
        m0 = rb * m_rows
        m1 = min(M, m0 + m_rows)
        # K-blocks outer, rows inner: the rows of X one K-block touches (~256 KiB) stay in
        # L2 while the block's m_rows output rows stream through it.
        for s0 in range(0, S, k_slots):
            s1 = min(S, s0 + k_slots)
            for m in range(m0, m1):
                n = _active_slots(cols, vals, flags, inner, m, s0, s1, K, buf)
                _gather_axpy(out[m], X, cols, vals, m, buf, n)
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
            n = _active_slots(cols, vals, flags, inner, m, 0, S, K, buf)
            y = Y[m, j0:j1]
            for q in range(n):
                s = buf[q]
                v = vals[m, s]
                o = out[cols[m, s], j0:j1]
                for j in range(j1 - j0):
                    o[j] += v * y[j]
    return out


@njit(parallel=True, cache=True, fastmath=True)
def tmatmul_csr_dense(indptr, rows, vals, Y, out, bounds, done):
    """``out[k, :] = sum_p vals[p] * Y[rows[p], :]`` over ``p`` in ``indptr[k]:indptr[k+1]``;
    ``out`` fully written (each row stored once from registers). Thread ``q`` takes rows with
    :func:`~flexsparse.kernels.cpu.partition.take_job` (its own ``bounds[q]:bounds[q+1]``,
    then the next thread's from the top; ``done: uint8[K]`` zeroed), so a late thread's rows
    are taken over."""
    N = Y.shape[1]
    wide = 256 // Y.itemsize
    for q in prange(bounds.shape[0] - 1):
        k = take_job(done, bounds, q, -1)
        while k >= 0:
            p0, p1 = indptr[k], indptr[k + 1]
            j0 = 0
            while j0 + wide <= N:
                a = vzeros(Y, 256)
                b = vzeros(Y, 256)
                p = p0
                while p + 2 <= p1:
                    a = vfma(a, vsplat(vals[p], 256), vload(Y, rows[p] * N + j0, 256))
                    b = vfma(b, vsplat(vals[p + 1], 256), vload(Y, rows[p + 1] * N + j0, 256))
                    p += 2
                if p < p1:
                    a = vfma(a, vsplat(vals[p], 256), vload(Y, rows[p] * N + j0, 256))
                vstore(out, k * N + j0, vadd(a, b))
                j0 += wide
            while j0 < N:
                n = N - j0
                a = vzeros(Y, 64)
                for p in range(p0, p1):
                    a = vfma(a, vsplat(vals[p], 64), vload_n(Y, rows[p] * N + j0, 64, n))
                vstore_n(out, k * N + j0, a, n)
                j0 += 64 // Y.itemsize
            k = take_job(done, bounds, q, k)
    return out


def transposed_csr(cols: np.ndarray, K: int):
    """Column-major order of the kept slots: ``(indptr int64[K+1], rows int32[n], order int64[n])``.

    ``cols: [M, S]`` slot columns; slots in the padding (``>= K``) are left out; ``order``
    indexes the flattened ``[M, S]`` values. ``O(M S log(M S))``.
    """
    M, S = cols.shape
    flat = cols.reshape(-1)
    keep = np.flatnonzero(flat < K)
    order = keep[np.argsort(flat[keep], kind="stable")]
    indptr = np.zeros(K + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat[keep], minlength=K), out=indptr[1:])
    rows = (order // max(S, 1)).astype(np.int32 if M < 2**31 else np.int64)
    return indptr, rows, order


def run_tmatmul_csr(indptr, rows, vals_t, Y, K):
    """``W.T @ Y`` -> ``[K, N]`` from :func:`transposed_csr` and the values in that order."""
    out = np.empty((K, Y.shape[1]), dtype=Y.dtype)
    if out.size == 0:
        return out
    parts = max(1, min(numba.get_num_threads(), K))
    bounds = cost_partition(np.diff(indptr) + 1, parts).bounds
    return tmatmul_csr_dense(indptr, rows, np.ascontiguousarray(vals_t, dtype=Y.dtype),
                             np.ascontiguousarray(Y), out, bounds, np.zeros(K, dtype=np.uint8))


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


#: Bytes of ``X`` rows one K-block may touch (kept in L2 while row blocks stream through).
X_BLOCK_BYTES = 256 * 1024
#: Output rows per parallel task (their ``out`` rows stay in L2 across the K-blocks).
ROWS_PER_TASK = 256


def run_matmul(cols, vals, flags, inner, X, span=None, kept=None):
    """Allocate ``[M, N]`` and run :func:`matmul_hss_dense` (``X`` C-contiguous ``[K, N]``).

    ``span``/``kept`` (columns and slots per top-level group) size the K-blocks; without
    them one K-block covers the whole row.
    """
    M, S = vals.shape
    out = np.zeros((M, X.shape[1]), dtype=X.dtype)
    if out.size and vals.size:
        if span and kept:
            row_bytes = max(1, X.shape[1] * X.itemsize)
            groups = max(1, X_BLOCK_BYTES // (span * row_bytes))
            k_slots = min(S, groups * kept)
        else:
            k_slots = S
        k_slots = max(inner, k_slots // inner * inner)
        rows = max(1, min(ROWS_PER_TASK, -(-M // 8)))  # >= 8 tasks for balance on small M
        matmul_hss_dense(cols, vals, flags, inner, k_slots, rows, X, out)
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
