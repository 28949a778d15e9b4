"""Multiply-adds of every output row of a sparse product ``A @ B`` (CSR buffers).

Algorithm: ``flops[i] = sum_{k in A[i,:]} nnz(B[k,:])``, one pass over ``A``'s entries reading
``B``'s row pointers; from ``_PARALLEL_FLOPS_NNZ`` entries of ``A`` (and at least as many as
``B`` has rows) on all of the call's threads, each on an equal share of ``A``'s entries,
reading ``B``'s row lengths, computed first. It sizes the SpGEMM's partition and its output
room (:mod:`.spgemm`).

Formats: :class:`~flexsparse.formats.csr.CSR` operands (int32/int64 indices; a narrow copy
kept by an earlier product is read instead, half the index bytes).

Cost: O(nnz(A)) time (plus O(rows of B) for the lengths), memory-bound; the lengths take
``rows of B`` ints.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.partition import thread_scope

__all__ = ["count_flops"]

#: Products whose A has at least this many entries count their flops on all threads.
_PARALLEL_FLOPS_NNZ = 1 << 18
_INT32_MAX = 2**31 - 1


@njit(cache=True)
def _row_flops(a_indptr, a_indices, b_indptr, out_flops, r0, r1):
    """``out_flops[i] = sum_{k in A[i,:]} nnz(B[k,:])`` (multiply-adds of output row i) for
    rows ``r0:r1``; returns their sum. O(nnz(A[r0:r1])), memory-bound."""
    total = 0
    one = np.uint64(1)
    for i in range(r0, r1):
        s = 0
        for p in range(np.uint64(a_indptr[i]), np.uint64(a_indptr[i + 1])):
            k = np.uint64(a_indices[p])
            s += b_indptr[k + one] - b_indptr[k]
        out_flops[i] = s
        total += s
    return total


@njit(cache=True)
def _row_lengths(indptr, out):
    """``out[k] = indptr[k + 1] - indptr[k]``."""
    for k in range(out.shape[0]):
        out[k] = indptr[k + 1] - indptr[k]


@njit(cache=True)
def _row_flops_len(a_indptr, a_indices, b_len, out_flops, r0, r1):
    """:func:`_row_flops` from ``B``'s row lengths ``b_len`` (one gather per entry of ``A``
    instead of two row pointers, in half the bytes at ``int32``)."""
    total = 0
    for i in range(r0, r1):
        s = 0
        for p in range(np.uint64(a_indptr[i]), np.uint64(a_indptr[i + 1])):
            s += b_len[np.uint64(a_indices[p])]
        out_flops[i] = s
        total += s
    return total


@njit(cache=True, parallel=True)
def _row_flops_parallel(a_indptr, a_indices, b_len, out_flops, bounds):
    """:func:`_row_flops_len` with thread ``w`` on rows ``bounds[w]:bounds[w+1]``; returns the
    sum."""
    n = bounds.shape[0] - 1
    totals = np.zeros(n, dtype=np.int64)
    for w in prange(n):
        totals[w] = _row_flops_len(a_indptr, a_indices, b_len, out_flops, bounds[w], bounds[w + 1])
    return totals.sum()


def count_flops(a: CSR, b: CSR, threads: int | None = None) -> tuple[np.ndarray, int]:
    """``(flops, total)``: the multiply-adds of every output row of ``a @ b``
    (``int64[a.n_rows]``) and their sum; on all threads when ``a`` is large."""
    n_rows = a.shape[0]
    flops = np.empty(n_rows, dtype=np.int64)
    a = a.compacted()  # half the index bytes to read, where an earlier product narrowed them
    if a.indptr[-1] < max(_PARALLEL_FLOPS_NNZ, b.shape[0]):
        return flops, int(_row_flops(a.indptr, a.indices, b.indptr, flops, 0, n_rows))
    # B's row lengths first, in 4 bytes where they fit: one gather per entry of A instead of
    # two row pointers (one thread, A's 2.1M entries on uniform rows: 2.33 -> 1.62 ms; arrow,
    # 8.9M: 5.03 -> 3.41 ms; 3-D Poisson, whose gathers hit the cache: 0.80 -> 0.77 ms; the
    # lengths of B's 2^18-2^19 rows 20-50 us)
    b_len = np.empty(b.shape[0], dtype=np.int32 if b.indptr[-1] <= _INT32_MAX else np.int64)
    _row_lengths(b.indptr, b_len)
    n_threads = numba.get_num_threads() if threads is None else threads
    with thread_scope(threads):  # equal shares of A's entries
        bounds = np.searchsorted(a.indptr, np.linspace(0, a.indptr[-1], n_threads + 1)).astype(np.int64)
        bounds[0], bounds[-1] = 0, n_rows
        return flops, int(_row_flops_parallel(a.indptr, a.indices, b_len, flops, bounds))
