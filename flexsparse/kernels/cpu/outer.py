"""Outer-product sparse x sparse contraction into a cache-sized dense result, emitted as COO.

Algorithm: ``C = sum_k A[:, k] (x) B[k, :]``. Both operands are grouped by the contracted
key ``k`` (CSR over ``k``: ``at`` holds A's column fibres, ``b`` B's row fibres); every
thread takes a contiguous range of ``k`` of equal flops (``sum_k nnz(at[k]) * nnz(b[k])``)
and scatters its products into its own dense ``[n_rows * n_cols]`` accumulator and a
``uint8`` touched mask. Both operands are read once, sequentially, with no per-row
indirection: the right engine when the whole result fits in cache and ``k`` is long (for
example a self-contraction over all but one mode, whose Gustavson rows would each chase
thousands of one-entry fibres of ``B``). The thread results are summed and the touched
cells emitted row-major, which is canonical order when row and column ids ascend with
their keys; coordinates come from per-id tables (see
:func:`flexsparse.kernels.cpu.grouping.assemble_coo`). Touched cells are stored even when
their sum is zero (structural result, as the other sparse engines).

Formats: ``at``/``b`` as CSR buffers over ``k`` (ids int32/int64, any value dtype);
output ``[n_modes, nnz]`` coordinates in the requested index dtype and ``[nnz]`` values.

Cost: O(nnz(A) + nnz(B) + flops) for the scatter, O(threads * n_rows * n_cols) for the
reduction and emission (serial: the result is cache-sized and a second parallel region costs
more than it saves on a busy machine); O(threads * n_rows * n_cols * (itemsize + 1)) workspace.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["outer_csr_csr", "outer_csr_csr_kernel", "outer_csr_csr_serial", "outer_emit_kernel",
           "outer_workspace_bytes"]


def outer_workspace_bytes(n_rows: int, n_cols: int, itemsize: int, threads: int) -> int:
    """Bytes of the per-thread dense results (values + touched mask) of :func:`outer_csr_csr`."""
    return threads * n_rows * n_cols * (itemsize + 1)


@njit(cache=True, inline="always")
def _scatter_range(at_ptr, at_idx, at_val, b_ptr, b_idx, b_val, n_cols, k0, k1, a_w, m_w):
    for k in range(k0, k1):
        bs = b_ptr[k]
        be = b_ptr[k + 1]
        if bs == be:
            continue
        for p in range(at_ptr[k], at_ptr[k + 1]):
            base = np.int64(at_idx[p]) * n_cols
            av = at_val[p]
            for q in range(bs, be):
                c = base + b_idx[q]
                a_w[c] += av * b_val[q]
                m_w[c] = 1


@njit(cache=True, parallel=True)
def outer_csr_csr_kernel(at_ptr, at_idx, at_val, b_ptr, b_idx, b_val, n_cols, bounds, acc, mask):
    """Scatter ``at[k] (x) b[k]`` for ``k`` in ``bounds[w]:bounds[w+1]`` into ``acc[w]``/``mask[w]``."""
    for w in prange(bounds.shape[0] - 1):
        _scatter_range(at_ptr, at_idx, at_val, b_ptr, b_idx, b_val, n_cols, bounds[w], bounds[w + 1], acc[w],
                       mask[w])


@njit(cache=True)
def outer_csr_csr_serial(at_ptr, at_idx, at_val, b_ptr, b_idx, b_val, n_cols, acc, mask):
    """:func:`outer_csr_csr_kernel` for one worker, on the calling thread (no thread-team launch)."""
    _scatter_range(at_ptr, at_idx, at_val, b_ptr, b_idx, b_val, n_cols, 0, at_ptr.shape[0] - 1, acc[0], mask[0])


@njit(cache=True)
def outer_emit_kernel(acc, mask, n_cols, row_table, col_table, col_skip, row_bounds, row_nnz, coords, vals):
    """Sum the per-thread results and write the touched cells row-major as COO.

    ``row_nnz[r]`` must hold the start offset of row ``r`` in the output (filled by
    :func:`outer_csr_csr`).
    """
    n_t = acc.shape[0]
    nr = row_table.shape[0]
    nc = col_table.shape[0] - col_skip
    for part in range(row_bounds.shape[0] - 1):
        for r in range(row_bounds[part], row_bounds[part + 1]):
            pos = row_nnz[r]
            base = np.int64(r) * n_cols
            for j in range(n_cols):
                c = base + j
                hit = 0
                s = acc[0, c]
                hit |= mask[0, c]
                for t in range(1, n_t):
                    s += acc[t, c]
                    hit |= mask[t, c]
                if hit:
                    for m in range(nr):
                        coords[m, pos] = row_table[m, r]
                    for m in range(nc):
                        coords[nr + m, pos] = col_table[col_skip + m, j]
                    vals[pos] = s
                    pos += 1


@njit(cache=True)
def _row_counts(mask, n_cols, out):
    n_t = mask.shape[0]
    for r in range(out.shape[0]):
        base = np.int64(r) * n_cols
        cnt = 0
        for j in range(n_cols):
            hit = 0
            for t in range(n_t):
                hit |= mask[t, base + j]
            cnt += hit
        out[r] = cnt


@njit(cache=True)
def _k_bounds(at_ptr, b_ptr, workers, bounds):
    """Cut the ``k`` range into ``workers`` contiguous pieces of equal flops (+1 per key);
    returns the total flops. Two passes, no per-key array."""
    n_k = at_ptr.shape[0] - 1
    total = 0
    for k in range(n_k):
        total += (at_ptr[k + 1] - at_ptr[k]) * (b_ptr[k + 1] - b_ptr[k]) + 1
    bounds[0] = 0
    w = 1
    acc = 0
    for k in range(n_k):
        if w < workers and acc * workers >= total * w:
            bounds[w] = k
            w += 1
        acc += (at_ptr[k + 1] - at_ptr[k]) * (b_ptr[k + 1] - b_ptr[k]) + 1
    while w <= workers:
        bounds[w] = n_k
        w += 1
    return total - n_k


def outer_csr_csr(at_ptr: np.ndarray, at_idx: np.ndarray, at_val: np.ndarray, b_ptr: np.ndarray,
                  b_idx: np.ndarray, b_val: np.ndarray, n_rows: int, n_cols: int, row_table: np.ndarray,
                  col_table: np.ndarray, col_skip: int, index_dtype: np.dtype, dtype: np.dtype
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(coords, vals)`` of ``sum_k at[k] (x) b[k]`` (layout in the module docstring).

    ``row_table[:, r]``/``col_table[:, c]`` hold the output coordinates of row id ``r`` and
    column id ``c``; the first ``col_skip`` rows of ``col_table`` (batch modes repeated from
    the row key) are not emitted. Runs on numba's current thread count.
    """
    from flexsparse.kernels.cpu.sptc import PARALLEL_MIN_FLOPS

    n_threads = numba.get_num_threads()
    one = np.zeros(2, dtype=np.int64)
    total = _k_bounds(at_ptr, b_ptr, 1, one)
    workers = max(1, min(n_threads, total // PARALLEL_MIN_FLOPS))
    bounds = one if workers == 1 else np.zeros(workers + 1, dtype=np.int64)
    if workers > 1:
        _k_bounds(at_ptr, b_ptr, workers, bounds)
    cells = n_rows * n_cols
    acc = np.zeros((bounds.shape[0] - 1, cells), dtype=dtype)
    mask = np.zeros((bounds.shape[0] - 1, cells), dtype=np.uint8)
    if total and workers == 1:
        outer_csr_csr_serial(at_ptr, at_idx, at_val.astype(dtype, copy=False), b_ptr, b_idx,
                             b_val.astype(dtype, copy=False), np.int64(n_cols), acc, mask)
    elif total:
        outer_csr_csr_kernel(at_ptr, at_idx, at_val.astype(dtype, copy=False), b_ptr, b_idx,
                             b_val.astype(dtype, copy=False), np.int64(n_cols), bounds, acc, mask)
    counts = np.empty(n_rows, dtype=np.int64)
    _row_counts(mask, np.int64(n_cols), counts)
    starts = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    nnz = int(starts[-1])
    coords = np.empty((row_table.shape[0] + col_table.shape[0] - col_skip, nnz), dtype=index_dtype)
    vals = np.empty(nnz, dtype=dtype)
    row_bounds = np.array([0, n_rows], dtype=np.int64)
    outer_emit_kernel(acc, mask, np.int64(n_cols), row_table, col_table, col_skip, row_bounds, starts,
                      coords, vals)
    return coords, vals
