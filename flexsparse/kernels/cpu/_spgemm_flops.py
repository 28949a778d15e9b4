"""Multiply-adds of every output row of a sparse product ``A @ B`` (CSR buffers).

Algorithm: ``flops[i] = sum_{k in A[i,:]} nnz(B[k,:])``, one pass over ``A``'s entries reading
``B``'s row pointers, in blocks of entries whose running sums each row ending there reads
(:func:`_row_flops_blocked`, no branch on the row lengths); from ``_PARALLEL_FLOPS_NNZ``
entries of ``A`` (and at least as many as ``B`` has rows) on all of the call's threads, each
on an equal share of ``A``'s entries, reading ``B``'s row lengths, computed first. It sizes the
SpGEMM's partition and its output room (:mod:`.spgemm`).

Formats: :class:`~flexsparse.formats.csr.CSR` operands (int32/int64 indices; a narrow copy
kept by an earlier product is read instead, half the index bytes).

:func:`count_flops_checked` also tells whether a value of either operand is inf or nan (the
scan einsum needs for NumPy's non-finite semantics) in the same parallel pass: each thread
scans the values of its share of ``A``'s entries and an equal share of ``B``'s, while the
flops count, bound by its gathers, leaves memory bandwidth to spare (3-D Poisson from
memory, two threads: count then separate scan 1.11-1.17 ms, fused 0.92-0.97 ms).

Cost: O(nnz(A)) time (plus O(rows of B) for the lengths, O(nnz(A) + nnz(B)) values for the
check), memory-bound; the lengths take ``rows of B`` ints.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse._util import nonfinite_by_sum
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu._spgemm_rows import _pf
from flexsparse.kernels.cpu.partition import thread_scope
from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES, has_nonfinite_values, nonfinite_kernel

__all__ = ["count_flops", "count_flops_checked"]

#: Products whose A has at least this many entries count their flops on all threads.
_PARALLEL_FLOPS_NNZ = 1 << 18
_INT32_MAX = 2**31 - 1
_NO_VALUES = np.zeros(0, dtype=np.float64)  # nothing to scan (one compiled specialisation)


#: Entries of ``A`` per block of :func:`_row_flops_blocked`: its running sums stay in L1.
_COUNT_BLOCK = 2048
#: The blocked count prefetches ``A``'s indices this many entries ahead (one prefetch per 64-byte
#: line of int32) and its row pointers this many rows ahead: between the two loops of a block
#: no load of the next block's entries is in flight otherwise (3-D Poisson from memory, one
#: thread, min of 20: 1.05 -> 0.84 ms; uniform 2^18 x 8 a row 2.10 -> 1.76 ms).
_COUNT_PREFETCH_ENTRIES = 4096
_COUNT_PREFETCH_ROWS = 512


# One pass over the entries, with no branch that depends on the row lengths: per block of
# ``_COUNT_BLOCK`` entries, a running sum of the gathered ``B`` row lengths goes to a local
# buffer, then every row that ends in the block takes the difference of the sums at its ends.
# Against a loop over each row's entries (one mispredicted exit a row on irregular rows), one
# thread, A read from memory, min of 15 (2026-12-01): R-MAT 18 ef 8 3.72 -> 2.45 ms, uniform
# 2^18 x 8 a row 4.22 -> 2.68 ms with the inf/nan scan; 3-D Poisson, whose 7-entry rows the
# branch predictor follows, 0.68 -> 0.84 ms without it (in cache 0.57 -> 0.61).
@njit(cache=True)
def _row_flops_blocked(a_indptr, a_indices, b, by_len, out_flops, r0, r1):
    """``out_flops[i] = sum_{k in A[i,:]} nnz(B[k,:])`` for rows ``r0:r1``, reading ``B``'s row
    lengths from ``b`` (``by_len``) or its row pointers; returns their sum."""
    one = np.uint64(1)
    line = np.uint64(15)  # int32 indices a 64-byte line, minus one
    ahead = np.uint64(_COUNT_PREFETCH_ENTRIES)
    buf = np.empty(_COUNT_BLOCK + 1, dtype=np.int64)
    p0 = np.uint64(a_indptr[r0])
    p_end = np.uint64(a_indptr[r1])
    n_entries = np.uint64(a_indices.shape[0])
    i = r0
    run = 0  # sum over the entries before the block
    prev = 0  # sum at the end of row i - 1
    while p0 < p_end:
        p1 = min(p0 + np.uint64(_COUNT_BLOCK), p_end)
        buf[0] = run
        j = one
        for p in range(p0, p1):
            if (p & line) == 0 and p + ahead < n_entries:
                _pf(a_indices, p + ahead)
            k = np.uint64(a_indices[p])
            run += b[k] if by_len else b[k + one] - b[k]  # the loop-invariant test is hoisted
            buf[j] = run
            j += one
        while i < r1 and np.uint64(a_indptr[i + 1]) <= p1:
            if (i & 7) == 0 and i + _COUNT_PREFETCH_ROWS <= r1:
                _pf(a_indptr, np.uint64(i + _COUNT_PREFETCH_ROWS))
            end = buf[np.uint64(a_indptr[i + 1]) - p0]
            out_flops[i] = end - prev
            prev = end
            i += 1
        p0 = p1
    while i < r1:  # rows without entries after the last entry
        out_flops[i] = 0
        i += 1
    return run


@njit(cache=True)
def _row_flops(a_indptr, a_indices, b_indptr, out_flops, r0, r1):
    """``out_flops[i] = sum_{k in A[i,:]} nnz(B[k,:])`` (multiply-adds of output row i) for
    rows ``r0:r1``; returns their sum. O(nnz(A[r0:r1])), memory-bound."""
    return _row_flops_blocked(a_indptr, a_indices, b_indptr, False, out_flops, r0, r1)


@njit(cache=True)
def _row_flops_checked(a_indptr, a_indices, b_indptr, out_flops, a_data, b_data):
    """:func:`_row_flops` over all rows, then whether ``a_data`` or ``b_data`` holds an inf or
    nan, in one compiled call (the small product of
    :func:`~flexsparse.kernels.cpu.spgemm.spgemm_csr_csr_counted`)."""
    total = _row_flops_blocked(a_indptr, a_indices, b_indptr, False, out_flops, 0, out_flops.shape[0])
    return total, nonfinite_kernel(a_data) or nonfinite_kernel(b_data)


@njit(cache=True)
def _row_lengths(indptr, out):
    """``out[k] = indptr[k + 1] - indptr[k]``."""
    for k in range(out.shape[0]):
        out[k] = indptr[k + 1] - indptr[k]


@njit(cache=True, parallel=True)
def _row_flops_parallel(a_indptr, a_indices, b_len, out_flops, bounds, a_data, b_data):
    """:func:`_row_flops_blocked` from ``B``'s row lengths ``b_len`` (one gather per entry of
    ``A`` instead of two row pointers, in half the bytes at ``int32``), thread ``w`` on rows
    ``bounds[w]:bounds[w+1]``; returns the sum and whether a value is inf or nan: of
    ``a_data`` (when it is not empty) over the thread's entries of ``A``, and of an equal share
    of ``b_data`` (may be empty)."""
    n = bounds.shape[0] - 1
    # np.empty and plain loops around the prange: np.zeros, .sum() and .any() in a parallel
    # function are parallel regions of their own, each waking the threads (see the package)
    totals = np.empty(n, dtype=np.int64)
    bad = np.empty(n, dtype=np.bool_)
    b_share = -(-b_data.shape[0] // n)
    for w in prange(n):
        totals[w] = _row_flops_blocked(a_indptr, a_indices, b_len, True, out_flops, bounds[w], bounds[w + 1])
        found = False
        if a_data.shape[0]:  # after the count, whose entries are then in cache
            found = nonfinite_kernel(a_data[a_indptr[bounds[w]]:a_indptr[bounds[w + 1]]])
        bad[w] = found | nonfinite_kernel(b_data[min(w * b_share, b_data.shape[0]):
                                                 min((w + 1) * b_share, b_data.shape[0])])
    total = 0
    any_bad = False
    for w in range(n):
        total += totals[w]
        any_bad |= bad[w]
    return total, any_bad


def count_flops(a: CSR, b: CSR, threads: int | None = None) -> tuple[np.ndarray, int]:
    """``(flops, total)``: the multiply-adds of every output row of ``a @ b``
    (``int64[a.n_rows]``) and their sum; on all threads when ``a`` is large."""
    flops, total, _ = _count(a, b, threads, False)
    return flops, total


def count_flops_checked(a: CSR, b: CSR, threads: int | None = None) -> tuple[np.ndarray, int, bool]:
    """:func:`count_flops` and whether a stored value of ``a`` or ``b`` is inf or nan (values
    of a compiled dtype scanned in the same parallel pass, others summed in float64/complex128:
    a sum that overflows to inf reads as non-finite, which only sends einsum to its exact
    non-finite path)."""
    return _count(a, b, threads, True)


def _scan_data(x: CSR) -> tuple[np.ndarray, bool]:
    """``(values the compiled scan reads, verdict on the others)``: a float/complex array of a
    compiled dtype is scanned by the kernel; others are decided here."""
    data = x.data
    if data.dtype.kind not in "fc" or data.shape[0] == 0:
        return _NO_VALUES, False
    if data.dtype in COMPILED_DTYPES:
        return data, False
    return _NO_VALUES, nonfinite_by_sum(data)


def _count(a: CSR, b: CSR, threads: int | None, check: bool) -> tuple[np.ndarray, int, bool]:
    n_rows = a.shape[0]
    flops = np.empty(n_rows, dtype=np.int64)
    bad = False
    if check:
        a_data, a_bad = _scan_data(a)
        b_data, b_bad = _scan_data(b) if b.data is not a.data else (_NO_VALUES, False)
        bad = a_bad or b_bad
    else:
        a_data = b_data = _NO_VALUES
    a = a.compacted()  # half the index bytes to read, where an earlier product narrowed them
    if a.indptr[-1] < max(_PARALLEL_FLOPS_NNZ, b.shape[0]):
        total = int(_row_flops(a.indptr, a.indices, b.indptr, flops, 0, n_rows))
        for data in (a_data, b_data):  # a large B on all threads (R-MAT 18's 2M values)
            if data.shape[0] and not bad:
                bad = has_nonfinite_values(data, threads)
        return flops, total, bad
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
        total, found = _row_flops_parallel(a.indptr, a.indices, b_len, flops, bounds, a_data, b_data)
    return flops, int(total), bad or bool(found)
