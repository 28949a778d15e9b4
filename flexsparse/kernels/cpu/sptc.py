"""Gustavson sparse tensor contraction of matricised operands, emitted straight as COO.

A pairwise contraction of sparse tensors is matricised by :mod:`flexsparse.contract._keys`:
``C[r, c] = sum_k A[r, k] * B[k, c]`` where ``r``, ``k``, ``c`` are compact ids of the
output's row key (batch + free modes of A), the contracted key and the column key (batch +
free modes of B). Unlike :func:`flexsparse.kernels.cpu.spgemm.spgemm`, which returns CSR
column ids, these kernels write every output entry as its COO coordinates -- the row key's
modes from ``row_table[:, r]``, the column key's non-batch modes from ``col_table[col_skip:, c]``
-- and its value, in row-major ``(r, c)`` order. With order-preserving ids (all
:mod:`._keys` regimes) that order is canonical: no sort of the output, no intermediate CSR
column array and no second pass to decode it.

Two passes, as every sparse-output kernel here:

1. :func:`sptc_csr_csr_symbolic` counts the distinct columns of each output row;
2. :func:`sptc_csr_csr_numeric` accumulates each row (dense accumulator with a bitmap of
   touched columns, emitted in column order; or a linear-probing hash whose keys are
   sorted per row) and appends it to a per-thread scratch of column ids and values; when
   the scratch is full the rows in it are written to the output mode by mode (one
   sequential sweep per mode with a gather from that mode's column table), at the offsets
   the prefix sum of the counts gives. A row of ``A`` with a single entry is a scaled copy
   of one (sorted) row of ``B`` and skips the accumulator.

Accumulator per part of rows: dense when ``n_cols <= DENSE_SMALL_COLS`` or when the part's
flops per row reach ``n_cols / DENSE_FILL_RATIO``; hash otherwise. Rows are split over
threads by :func:`~flexsparse.kernels.cpu.partition.cost_partition` on their flops.

Formats: ``A``, ``B`` as CSR buffers (``B`` rows sorted); ``row_table``/``col_table``
``[n_modes, n_ids]`` in the output index dtype; output ``coords [n_out_modes, nnz]``,
``vals [nnz]``.

Cost: O(nnz(A) + flops) per pass plus, per output row of ``e`` entries, O(e * n_out_modes)
writes and O(min(span / 64, flops)) bitmap words (dense) or O(e log e) (hash);
O(threads * n_cols) dense workspace.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.kernels.cpu._spgemm_flops import _row_flops
from flexsparse.kernels.cpu.grouping import ctz

__all__ = ["DENSE_FILL_RATIO", "DENSE_SMALL_COLS", "PARALLEL_MIN_FLOPS", "sptc_csr_csr", "sptc_csr_csr_numeric",
           "sptc_csr_csr_serial", "sptc_csr_csr_symbolic"]

#: Dense accumulator up to this many output columns (values + bitmap stay in L2 at 2**18
#: float32 columns); the same cut-off as the 2-D SpGEMM kernel, measured there.
DENSE_SMALL_COLS = 1 << 18
#: Beyond it, dense when flops per row >= n_cols / DENSE_FILL_RATIO.
DENSE_FILL_RATIO = 256
_PARTS_PER_WORKER = 8
#: Products with fewer multiply-adds per thread than this run on the calling thread
#: (:func:`sptc_csr_csr_serial`): 2**20 multiply-adds take 3-5 ms on one core of the 2-core
#: test VM, while waking the second OpenMP thread took 0.1-3 ms there when the machine was busy.
PARALLEL_MIN_FLOPS = 1 << 20
#: Scratch entries per thread between two writes to the output (ids + values: 384 KiB at
#: float32, so a flush's gathers and the scratch stay in L2).
_SCRATCH = 1 << 15
_HASH_MUL = 2654435769
#: Hash rows up to this many entries are insertion-sorted in the loop instead of by a call to
#: numba's quicksort (a real call per row). One thread, 200K rows x 2**20 columns, rows of 6 /
#: 12 / 24 entries: 121 -> 87 ms, 284 -> 240 ms, 526 -> 444 ms (interleaved, same process).
_SHORT_SORT = 32
_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_SIX = np.uint64(6)
_LOW6 = np.uint64(63)


@njit(cache=True, inline="always")
def _table_size(flops, n_cols):
    need = 2 * min(flops, n_cols)
    size = 2
    while size < need:
        size *= 2
    return size


# ------------------------------------------------------------------ symbolic
@njit(cache=True)
def _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, n_cols, row_flops, bounds,
                     worker_bounds, use_dense, out_counts):
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    need_dense = False
    tsize = 0
    for part in range(p0, p1):
        need_dense |= use_dense[part]
        if not use_dense[part]:
            for i in range(bounds[part], bounds[part + 1]):
                tsize = max(tsize, _table_size(row_flops[i], n_cols))
    marker = np.full(n_cols if need_dense else 0, -1, dtype=np.int32)
    keys = np.full(tsize, -1, dtype=np.int64)
    for part in range(p0, p1):
        dense = use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            a0 = a_indptr[i]
            a1 = a_indptr[i + 1]
            if a1 - a0 == 1:
                k = a_indices[a0]
                out_counts[i] = b_indptr[k + 1] - b_indptr[k]
                continue
            if row_flops[i] == 0:
                out_counts[i] = 0
                continue
            cnt = 0
            if dense:
                for p in range(a0, a1):
                    k = np.uint64(a_indices[p])
                    for q in range(b_indptr[k], b_indptr[k + 1]):
                        c = np.uint64(b_indices[q])
                        cnt += marker[c] != i
                        marker[c] = i
            else:
                size = _table_size(row_flops[i], n_cols)
                mask = size - 1
                for p in range(a0, a1):
                    k = a_indices[p]
                    for q in range(b_indptr[k], b_indptr[k + 1]):
                        c = np.int64(b_indices[q])
                        h = (c * _HASH_MUL) & mask
                        while True:
                            key = keys[h]
                            if key == c:
                                break
                            if key == -1:
                                keys[h] = c
                                cnt += 1
                                break
                            h = (h + 1) & mask
                keys[:size] = -1
            out_counts[i] = cnt


@njit(cache=True, parallel=True)
def sptc_csr_csr_symbolic(a_indptr, a_indices, b_indptr, b_indices, n_cols, row_flops, bounds,
                          worker_bounds, use_dense, out_counts):
    """Fill ``out_counts[i]`` with the number of distinct columns of output row ``i``.

    ``bounds``/``worker_bounds``: a contiguous cost partition of the rows (parts per
    worker); ``use_dense[part]``: the accumulator of each part.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, n_cols, row_flops, bounds,
                         worker_bounds, use_dense, out_counts)


# ------------------------------------------------------------------ numeric
@njit(cache=True, inline="always")
def _emit_word(word, base, acc, ids, vals, cnt):
    """Append the columns of one bitmap word in increasing order, clearing their slots."""
    while word != _ZERO:
        c = base + ctz(word)
        word &= word - _ONE
        ids[cnt] = c
        vals[cnt] = acc[c]
        acc[c] = 0
        cnt += 1
    return cnt


@njit(cache=True, inline="always")
def _dense_walk(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, acc, bits, ids, vals, cnt):
    """Dense accumulation of a row with many products per bitmap word: every word of the
    touched span is read at emission. Returns the new scratch length."""
    cmin = n_cols
    cmax = -1
    for p in range(a0, a1):
        k = a_indices[p]
        av = a_data[p]
        q0 = b_indptr[k]
        q1 = b_indptr[k + 1]
        if q1 > q0:
            cmin = min(cmin, np.int64(b_indices[q0]))
            cmax = max(cmax, np.int64(b_indices[q1 - 1]))
        for q in range(q0, q1):
            c = np.uint64(b_indices[q])
            acc[c] += av * b_data[q]
            bits[c >> _SIX] |= _ONE << (c & _LOW6)
    for wi in range(cmin >> 6, (cmax >> 6) + 1):
        word = bits[wi]
        if word != _ZERO:
            bits[wi] = _ZERO
            cnt = _emit_word(word, wi << 6, acc, ids, vals, cnt)
    return cnt


@njit(cache=True, inline="always")
def _dense_fill(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, acc, bits, summary, ids,
                vals, cnt):
    """:func:`_dense_walk` for rows with few products per word: a summary bitmap (a bit per
    word) lets the emission visit only the non-zero words."""
    cmin = n_cols
    cmax = -1
    for p in range(a0, a1):
        k = a_indices[p]
        av = a_data[p]
        q0 = b_indptr[k]
        q1 = b_indptr[k + 1]
        if q1 > q0:
            cmin = min(cmin, np.int64(b_indices[q0]))
            cmax = max(cmax, np.int64(b_indices[q1 - 1]))
        for q in range(q0, q1):
            c = np.uint64(b_indices[q])
            acc[c] += av * b_data[q]
            wd = c >> _SIX
            bits[wd] |= _ONE << (c & _LOW6)
            summary[wd >> _SIX] |= _ONE << (wd & _LOW6)
    for si in range(cmin >> 12, (cmax >> 12) + 1):
        sword = summary[si]
        summary[si] = _ZERO
        while sword != _ZERO:
            wi = (si << 6) + ctz(sword)
            sword &= sword - _ONE
            word = bits[wi]
            bits[wi] = _ZERO
            cnt = _emit_word(word, wi << 6, acc, ids, vals, cnt)
    return cnt


@njit(cache=True)
def _flush(r0, r1, offsets, ids, vals, row_table, col_table, col_skip, coords, out_vals):
    """Write the scratch entries of rows ``r0:r1`` (contiguous in the output from
    ``offsets[r0]``) mode by mode: each mode is one sequential sweep with a gather from
    that mode's row of the column table, which stays in cache during the sweep."""
    base = offsets[r0]
    n = offsets[r1] - base
    nr = row_table.shape[0]
    for m in range(nr):
        key = row_table[m]
        out = coords[m]
        for r in range(r0, r1):
            v = key[r]
            for p in range(offsets[r], offsets[r + 1]):
                out[p] = v
    for m in range(col_table.shape[0] - col_skip):
        key = col_table[col_skip + m]
        out = coords[nr + m]
        for t in range(n):
            out[base + t] = key[ids[t]]
    for t in range(n):
        out_vals[base + t] = vals[t]


@njit(cache=True)
def _numeric_worker(w, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, row_flops,
                    bounds, worker_bounds, use_dense, offsets, row_table, col_table, col_skip, coords,
                    out_vals):
    p0 = worker_bounds[w]
    p1 = worker_bounds[w + 1]
    need_dense = False
    tsize = 0
    longest = 0
    for part in range(p0, p1):
        need_dense |= use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            longest = max(longest, offsets[i + 1] - offsets[i])
            if not use_dense[part]:
                tsize = max(tsize, _table_size(row_flops[i], n_cols))
    nd = n_cols if need_dense else 0
    nw = (nd + 63) >> 6
    acc = np.zeros(nd, dtype=out_vals.dtype)
    bits = np.zeros(nw, dtype=np.uint64)
    summary = np.zeros((nw + 63) >> 6, dtype=np.uint64)
    keys = np.full(tsize, -1, dtype=np.int64)
    hvals = np.empty(tsize, dtype=out_vals.dtype)
    cap = max(longest, _SCRATCH)
    ids = np.empty(cap, dtype=b_indices.dtype)
    vals = np.empty(cap, dtype=out_vals.dtype)
    walk = 8 * nw  # rows with >= 8 products per bitmap word walk every word of their span
    r_first = bounds[p0]
    for part in range(p0, p1):
        dense = use_dense[part]
        for i in range(bounds[part], bounds[part + 1]):
            if offsets[i + 1] - offsets[r_first] > cap:  # row i does not fit: write rows before it
                _flush(r_first, i, offsets, ids, vals, row_table, col_table, col_skip, coords, out_vals)
                r_first = i
            cnt = offsets[i] - offsets[r_first]  # scratch position of row i
            a0 = a_indptr[i]
            a1 = a_indptr[i + 1]
            if a1 - a0 == 1:  # a scaled copy of one sorted row of B
                k = a_indices[a0]
                av = a_data[a0]
                for q in range(b_indptr[k], b_indptr[k + 1]):
                    ids[cnt] = b_indices[q]
                    vals[cnt] = av * b_data[q]
                    cnt += 1
                continue
            if row_flops[i] == 0:
                continue
            if dense and row_flops[i] >= walk:
                cnt = _dense_walk(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, acc, bits,
                                  ids, vals, cnt)
            elif dense:
                cnt = _dense_fill(a0, a1, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, acc, bits,
                                  summary, ids, vals, cnt)
            else:
                size = _table_size(row_flops[i], n_cols)
                mask = size - 1
                for p in range(a0, a1):
                    k = a_indices[p]
                    av = a_data[p]
                    for q in range(b_indptr[k], b_indptr[k + 1]):
                        c = np.int64(b_indices[q])
                        h = (c * _HASH_MUL) & mask
                        while True:
                            key = keys[h]
                            if key == c:
                                hvals[h] += av * b_data[q]
                                break
                            if key == -1:
                                keys[h] = c
                                hvals[h] = av * b_data[q]
                                break
                            h = (h + 1) & mask
                start = cnt
                for h in range(size):
                    if keys[h] != -1:
                        ids[cnt] = keys[h]
                        cnt += 1
                if cnt - start <= _SHORT_SORT:  # insertion sort in the loop: no call per row
                    for t in range(start + 1, cnt):
                        c = ids[t]
                        j = t - 1
                        while j >= start and ids[j] > c:
                            ids[j + 1] = ids[j]
                            j -= 1
                        ids[j + 1] = c
                else:
                    ids[start:cnt].sort()
                for t in range(start, cnt):  # values in column order: probe again
                    c = ids[t]
                    h = (c * _HASH_MUL) & mask
                    while keys[h] != c:
                        h = (h + 1) & mask
                    vals[t] = hvals[h]
                keys[:size] = -1
    r_end = bounds[p1]
    if r_end > r_first:
        _flush(r_first, r_end, offsets, ids, vals, row_table, col_table, col_skip, coords, out_vals)


@njit(cache=True, parallel=True)
def sptc_csr_csr_numeric(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, row_flops,
                         bounds, worker_bounds, use_dense, offsets, row_table, col_table, col_skip,
                         coords, out_vals):
    """Write every output row at ``offsets[i]`` (the prefix sum of the symbolic counts) as COO.

    ``a_data``/``b_data`` are in the output dtype; ``coords``/``out_vals`` are preallocated.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        _numeric_worker(w, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols,
                        row_flops, bounds, worker_bounds, use_dense, offsets, row_table, col_table,
                        col_skip, coords, out_vals)


@njit(cache=True)
def sptc_csr_csr_serial(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, row_flops, bounds,
                        worker_bounds, use_dense, offsets, row_table, col_table, col_skip, coords, out_vals):
    """Both passes on the calling thread (one worker): no thread-team launch for small products.
    ``coords``/``out_vals`` are sized from ``offsets`` here, so the caller passes empty arrays."""
    _symbolic_worker(0, a_indptr, a_indices, b_indptr, b_indices, n_cols, row_flops, bounds, worker_bounds,
                     use_dense, offsets[1:])
    for i in range(offsets.shape[0] - 1):
        offsets[i + 1] += offsets[i]
    nnz = offsets[-1]
    coords = np.empty((coords.shape[0], nnz), dtype=coords.dtype)
    out_vals = np.empty(nnz, dtype=out_vals.dtype)
    _numeric_worker(0, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, row_flops, bounds,
                    worker_bounds, use_dense, offsets, row_table, col_table, col_skip, coords, out_vals)
    return coords, out_vals


def sptc_csr_csr(a_indptr: np.ndarray, a_indices: np.ndarray, a_data: np.ndarray, b_indptr: np.ndarray,
                 b_indices: np.ndarray, b_data: np.ndarray, n_cols: int, row_table: np.ndarray,
                 col_table: np.ndarray, col_skip: int, index_dtype: np.dtype, dtype: np.dtype
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(coords, vals)`` of the matricised product (layout in the module docstring).

    ``B``'s rows must hold strictly increasing column ids; ``a_data``/``b_data`` are cast to
    ``dtype`` (the accumulation dtype). Runs on numba's current thread count.
    """
    from flexsparse.kernels.cpu.partition import cost_split

    n_rows = a_indptr.shape[0] - 1
    n_out = row_table.shape[0] + col_table.shape[0] - col_skip
    flops = np.empty(n_rows, dtype=np.int64)
    total = _row_flops(a_indptr, a_indices, b_indptr, flops, 0, n_rows) if n_rows else 0
    if total == 0:
        return np.empty((n_out, 0), dtype=index_dtype), np.empty(0, dtype=dtype)
    n_threads = numba.get_num_threads()
    workers = max(1, min(n_threads, total // PARALLEL_MIN_FLOPS))
    part = cost_split(flops + 1, workers, _PARTS_PER_WORKER)
    bounds, worker_bounds = part.bounds, part.worker_bounds
    part_rows = np.maximum(np.diff(bounds), 1)
    part_flops = part.part_costs - np.diff(bounds)
    use_dense = (n_cols <= DENSE_SMALL_COLS) | (part_flops * DENSE_FILL_RATIO >= part_rows * float(n_cols))
    a_data = a_data.astype(dtype, copy=False)
    b_data = b_data.astype(dtype, copy=False)
    offsets = np.empty(n_rows + 1, dtype=np.int64)
    offsets[0] = 0
    if n_rows >= 2**31 - 1:  # the dense marker holds row ids as int32
        use_dense[:] = False
    if workers == 1:
        return sptc_csr_csr_serial(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, np.int64(n_cols),
                                   flops, bounds, worker_bounds, use_dense, offsets, row_table, col_table,
                                   np.int64(col_skip), np.empty((n_out, 0), dtype=index_dtype),
                                   np.empty(0, dtype=dtype))
    sptc_csr_csr_symbolic(a_indptr, a_indices, b_indptr, b_indices, np.int64(n_cols), flops, bounds,
                          worker_bounds, use_dense, offsets[1:])
    np.cumsum(offsets[1:], out=offsets[1:])
    nnz = int(offsets[-1])
    coords = np.empty((n_out, nnz), dtype=index_dtype)
    vals = np.empty(nnz, dtype=dtype)
    sptc_csr_csr_numeric(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, np.int64(n_cols), flops,
                         bounds, worker_bounds, use_dense, offsets, row_table, col_table, np.int64(col_skip),
                         coords, vals)
    return coords, vals
