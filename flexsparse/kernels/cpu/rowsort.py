"""Sort the columns of every row of a CSR matrix in place (rows of a jumbled SpGEMM result).

Algorithm, per row of ``n`` entries (``keys`` = column ids, ``vals`` permuted alongside):

* ``n <= SMALL_ROW``: insertion sort;
* otherwise an LSD radix sort of ``key - min(key)`` with 8-bit digits -- as many passes
  as the row's column span needs (2 for a span below 65536) -- through a per-thread
  scratch of ``n`` keys and values, each pass a stable counting sort. O(n * passes).

Rows are independent: :func:`sort_csr_rows` runs them on all threads, split by
:func:`~flexsparse.kernels.cpu.partition.cost_partition` on the row lengths.

:func:`bucket_rows_kernel` is the counting sort that brings coordinate triples in any
order into CSR rows (duplicates kept, columns unordered) in O(nnz + n_rows).

Formats: CSR buffers (``indptr`` int64, ``indices`` int32/int64, any ``data`` dtype).
Rows must be duplicate-free for the result to be strictly increasing (duplicates stay
adjacent otherwise). Cost: O(nnz * passes + n_rows), O(longest row) scratch per thread.

>>> import numpy as np
>>> indptr = np.array([0, 3, 5]); indices = np.array([7, 1, 4, 2, 0], dtype=np.int32)
>>> data = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
>>> sort_csr_rows(indptr, indices, data)
>>> indices.tolist(), data.tolist()
([1, 4, 7, 0, 2], [2.0, 3.0, 1.0, 5.0, 4.0])
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.kernels.cpu.partition import check_threads, cost_split, thread_scope

__all__ = ["SMALL_ROW", "bucket_rows_kernel", "insertion_sort", "sort_csr_rows", "sort_csr_rows_kernel",
           "sort_row_pairs"]

#: Rows up to this many entries are insertion-sorted.
SMALL_ROW = 32
#: Below this many entries in all, the sort runs on the calling thread only.
_SERIAL_NNZ = 1 << 16


@njit(cache=True, inline="always")
def insertion_sort(keys, vals, lo, hi):
    for i in range(lo + 1, hi):
        k = keys[i]
        v = vals[i]
        j = i - 1
        while j >= lo and keys[j] > k:
            keys[j + 1] = keys[j]
            vals[j + 1] = vals[j]
            j -= 1
        keys[j + 1] = k
        vals[j + 1] = v


@njit(cache=True)
def sort_row_pairs(keys, vals, lo, hi, skeys, svals, counts):
    """Sort ``keys[lo:hi]`` ascending, permuting ``vals`` alongside (insertion sort for short
    rows, LSD radix sort with scratch ``skeys``/``svals`` of >= ``hi - lo`` slots and
    ``counts: int64[257]`` otherwise)."""
    n = hi - lo
    if n <= SMALL_ROW:
        insertion_sort(keys, vals, lo, hi)
        return
    kmin = keys[lo]
    kmax = keys[lo]
    for p in range(lo + 1, hi):
        kmin = min(kmin, keys[p])
        kmax = max(kmax, keys[p])
    span = np.uint64(kmax - kmin)
    shift = np.uint64(0)
    src_is_row = True
    eight = np.uint64(8)
    mask = np.uint64(255)
    while True:
        counts[:] = 0
        if src_is_row:
            for p in range(lo, hi):
                counts[((np.uint64(keys[p] - kmin) >> shift) & mask) + np.uint64(1)] += 1
        else:
            for p in range(n):
                counts[((np.uint64(skeys[p] - kmin) >> shift) & mask) + np.uint64(1)] += 1
        for d in range(256):
            counts[d + 1] += counts[d]
        if src_is_row:
            for p in range(lo, hi):
                d = (np.uint64(keys[p] - kmin) >> shift) & mask
                t = counts[d]
                counts[d] = t + 1
                skeys[t] = keys[p]
                svals[t] = vals[p]
        else:
            for p in range(n):
                d = (np.uint64(skeys[p] - kmin) >> shift) & mask
                t = counts[d]
                counts[d] = t + 1
                keys[lo + t] = skeys[p]
                vals[lo + t] = svals[p]
        src_is_row = not src_is_row
        shift += eight
        if shift >= np.uint64(64) or (span >> shift) == np.uint64(0):
            break
    if not src_is_row:  # the sorted row sits in the scratch
        for p in range(n):
            keys[lo + p] = skeys[p]
            vals[lo + p] = svals[p]


@njit(cache=True)
def _sort_range(r0, r1, indptr, indices, data):
    longest = 0
    for i in range(r0, r1):
        longest = max(longest, indptr[i + 1] - indptr[i])
    m = longest if longest > SMALL_ROW else 0
    skeys = np.empty(m, dtype=indices.dtype)
    svals = np.empty(m, dtype=data.dtype)
    counts = np.empty(257, dtype=np.int64)
    for i in range(r0, r1):
        n = indptr[i + 1] - indptr[i]
        if n > SMALL_ROW:
            sort_row_pairs(indices, data, indptr[i], indptr[i + 1], skeys, svals, counts)
        elif n > 1:  # inline: a call per row cost more than sorting a short row
            insertion_sort(indices, data, indptr[i], indptr[i + 1])


@njit(cache=True, parallel=True)
def sort_csr_rows_kernel(indptr, indices, data, bounds):
    """Sort every row of the CSR buffers in place; thread ``w`` takes rows
    ``bounds[w]:bounds[w+1]`` (``bounds: int64[n_workers + 1]``)."""
    for w in prange(bounds.shape[0] - 1):
        _sort_range(bounds[w], bounds[w + 1], indptr, indices, data)


def sort_csr_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                  threads: int | None = None) -> None:
    """Sort the column ids of every row in place, permuting ``data`` alongside.

    Args:
        indptr: ``int64[n_rows + 1]`` row pointers.
        indices: ``int32/int64[nnz]`` column ids (modified).
        data: ``[nnz]`` values (modified).
        threads: numba threads (``None``: numba's current setting).
    """
    check_threads(threads)
    n_rows = indptr.shape[0] - 1
    nnz = int(indptr[-1]) if n_rows >= 0 else 0
    if n_rows <= 0 or nnz == 0:
        return
    n_threads = 1 if nnz < _SERIAL_NNZ else (numba.get_num_threads() if threads is None else int(threads))
    if n_threads == 1:
        _sort_range(0, n_rows, indptr, indices, data)
        return
    with thread_scope(threads):
        part = cost_split(np.diff(indptr) + 1, n_threads, 1)
        sort_csr_rows_kernel(indptr, indices, data, part.bounds)


@njit(cache=True)
def bucket_rows_kernel(rows, cols, vals, n_rows, out_indptr, out_indices, out_data):
    """Counting sort of coordinate triples by row (stable; duplicates kept): fills the CSR
    ``out_indptr: int64[n_rows + 1]``, ``out_indices``, ``out_data`` (each ``[nnz]``).
    O(nnz + n_rows)."""
    out_indptr[:] = 0
    for p in range(rows.shape[0]):
        out_indptr[rows[p] + 1] += 1
    for i in range(n_rows):
        out_indptr[i + 1] += out_indptr[i]
    fill = out_indptr[:n_rows].copy()
    for p in range(rows.shape[0]):
        r = rows[p]
        q = fill[r]
        out_indices[q] = cols[p]
        out_data[q] = vals[p]
        fill[r] = q + 1
