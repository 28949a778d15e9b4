"""Inner-product ("dot-product engine", FLAASH) sparse x sparse products.

``C[i, j] = A[i, :] . B[:, j]``: every output is one *job*, the sparse dot product of
two sorted fibers -- row ``i`` of ``A`` and row ``j`` of ``Bt = B.T`` (the columns of
``B``, given as a CSR whose rows are sorted). A job intersects the two index lists by a
two-pointer merge, or, when one fiber is more than ``GALLOP_RATIO`` times longer than
the other, by galloping (exponential then binary search) through the long one, and
multiply-accumulates the matches.

This dataflow pays when the output is small and dense, or when only some outputs are
wanted (a sampled / masked product, SDDMM-style); row-wise Gustavson
(:mod:`~flexsparse.kernels.cpu.spgemm`) is better for large sparse outputs.

* without ``mask``: dense output ``[a.n_rows, bt.n_rows]``
  (:func:`dot_csr_csr_dense_numeric`), jobs grouped by output row;
* with ``mask`` (a CSR pattern ``[a.n_rows, bt.n_rows]``, values ignored): only the
  requested entries (:func:`dot_csr_csr_masked_numeric`), CSR output. By default the
  output keeps the masked entries whose fibers intersect (the structural product
  restricted to the mask); ``keep_empty=True`` keeps the mask's full pattern.

Rows of jobs are split over threads by a registered schedule
(:data:`~flexsparse.kernels.cpu.partition.SCHEDULES`): ``"cost"`` balances the summed
fiber lengths, ``"round-robin"`` deals rows out ``i % threads`` as FLAASH's dispatcher.

Formats: :class:`~flexsparse.formats.csr.CSR` with ``sorted_indices=True`` for ``a``
and ``bt`` (required by the merge; otherwise ``ValueError``); values of any numeric dtype,
promoted like NumPy (bool x bool computed in int64, returned as bool). Stored zeros and
NaN/inf are multiplied like any value.

Cost: O(sum over jobs of (len(a_i) + len(bt_j))), or O(short * log(long)) per galloping
job; O(1) workspace per thread; output O(n_rows * n_cols) dense or O(nnz(mask)).

>>> import numpy as np, scipy.sparse as sp
>>> a = CSR.from_scipy(sp.random_array((4, 50), density=0.3, rng=0, format="csr"))
>>> b = CSR.from_scipy(sp.random_array((50, 3), density=0.3, rng=1, format="csr"))
>>> bool(np.allclose(dot_csr_csr(a, b.transpose()), a.toarray() @ b.toarray()))
True
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flexsparse._util import result_dtype
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.partition import get_schedule, thread_scope

__all__ = [
    "GALLOP_RATIO",
    "dot_csr_csr",
    "dot_csr_csr_dense_numeric",
    "dot_csr_csr_masked_numeric",
]

#: Gallop through the longer fiber when it is more than this many times the shorter.
GALLOP_RATIO = 16
#: Parts per thread for the ``"cost"`` schedule.
PARTS_PER_WORKER = 4


@njit(cache=True, inline="always")
def _gallop_dot(s_idx, s_data, s0, s1, l_idx, l_data, l0, l1, zero, short_is_a):
    """Dot product of a short and a long sorted fiber: for every short index, search
    forward in the long one (doubling steps, then bisection). Returns ``(sum, hit)``."""
    acc = zero
    hit = False
    pos = l0
    for p in range(s0, s1):
        if pos >= l1:
            break
        key = s_idx[p]
        if l_idx[pos] < key:
            lo = pos  # invariant: l_idx[lo] < key
            step = 1
            hi = pos + 1
            while hi < l1 and l_idx[hi] < key:
                lo = hi
                step *= 2
                hi = lo + step
            hi = min(hi, l1)
            while hi - lo > 1:  # first index in (lo, hi] with l_idx >= key
                mid = (lo + hi) >> 1
                if l_idx[mid] < key:
                    lo = mid
                else:
                    hi = mid
            pos = hi
        if pos < l1 and l_idx[pos] == key:
            if short_is_a:
                acc += s_data[p] * l_data[pos]
            else:
                acc += l_data[pos] * s_data[p]
            hit = True
            pos += 1
    return acc, hit


@njit(cache=True, inline="always")
def _fiber_dot(a_idx, a_data, a0, a1, b_idx, b_data, b0, b1, zero):
    """Sparse dot product of ``a[a0:a1]`` and ``b[b0:b1]`` (sorted index lists).

    Returns ``(sum, hit)`` where ``hit`` says whether any index matched.
    """
    la = a1 - a0
    lb = b1 - b0
    if la == 0 or lb == 0:
        return zero, False
    if la * GALLOP_RATIO < lb:
        return _gallop_dot(a_idx, a_data, a0, a1, b_idx, b_data, b0, b1, zero, True)
    if lb * GALLOP_RATIO < la:
        return _gallop_dot(b_idx, b_data, b0, b1, a_idx, a_data, a0, a1, zero, False)
    acc = zero
    hit = False
    p = a0
    q = b0
    while p < a1 and q < b1:
        x = a_idx[p]
        y = b_idx[q]
        if x == y:
            acc += a_data[p] * b_data[q]
            hit = True
            p += 1
            q += 1
        elif x < y:
            p += 1
        else:
            q += 1
    return acc, hit


@njit(cache=True, parallel=True)
def dot_csr_csr_dense_numeric(a_indptr, a_indices, a_data, bt_indptr, bt_indices, bt_data,
                              zero, order, bounds, worker_bounds, out):
    """All dot products ``out[i, j] = A[i, :] . Bt[j, :]`` into a dense buffer.

    Args:
        a_indptr, a_indices, a_data: sorted CSR of ``A`` ``[m, K]``.
        bt_indptr, bt_indices, bt_data: sorted CSR of ``Bt`` ``[n, K]``.
        zero: the zero of the output dtype (accumulator start).
        order, bounds, worker_bounds: a :class:`~flexsparse.kernels.cpu.partition.Partition`
            of the ``m`` output rows (jobs ``order[bounds[p]:bounds[p+1]]`` in part ``p``).
        out: ``[m, n]`` output, zero-filled by the caller; rows of ``A`` with no entries
            are skipped.
    """
    n = bt_indptr.shape[0] - 1
    for w in prange(worker_bounds.shape[0] - 1):
        for part in range(worker_bounds[w], worker_bounds[w + 1]):
            for t in range(bounds[part], bounds[part + 1]):
                i = order[t]
                a0 = a_indptr[i]
                a1 = a_indptr[i + 1]
                if a1 == a0:
                    continue
                for j in range(n):
                    v, hit = _fiber_dot(a_indices, a_data, a0, a1, bt_indices, bt_data,
                                        bt_indptr[j], bt_indptr[j + 1], zero)
                    if hit:
                        out[i, j] = v


@njit(cache=True, parallel=True)
def dot_csr_csr_masked_numeric(a_indptr, a_indices, a_data, bt_indptr, bt_indices, bt_data,
                               zero, m_indptr, m_indices, order, bounds, worker_bounds,
                               out_data, out_hit):
    """Dot products at the entries of a mask pattern (sampled product).

    Args:
        a_*, bt_*, zero, order, bounds, worker_bounds: as in
            :func:`dot_csr_csr_dense_numeric` (the jobs are the mask's rows).
        m_indptr, m_indices: CSR pattern of the mask ``[m, n]``.
        out_data: ``[nnz(mask)]`` filled with ``A[i, :] . Bt[j, :]`` per mask entry.
        out_hit: ``bool[nnz(mask)]`` filled with whether the fibers intersect.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        for part in range(worker_bounds[w], worker_bounds[w + 1]):
            for t in range(bounds[part], bounds[part + 1]):
                i = order[t]
                a0 = a_indptr[i]
                a1 = a_indptr[i + 1]
                for p in range(m_indptr[i], m_indptr[i + 1]):
                    j = m_indices[p]
                    v, hit = _fiber_dot(a_indices, a_data, a0, a1, bt_indices, bt_data,
                                        bt_indptr[j], bt_indptr[j + 1], zero)
                    out_data[p] = v
                    out_hit[p] = hit


def _check_operands(a: object, bt: object) -> None:
    for name, x in (("a", a), ("bt", bt)):
        if not isinstance(x, CSR):
            raise TypeError(f"dot_csr_csr: {name} must be a flexsparse CSR, got {type(x).__name__}")
        if not x.sorted_indices:
            raise ValueError(f"dot_csr_csr: {name} must have sorted indices (sorted_indices=True) for "
                             f"the fiber merge; rebuild it with CSR.from_coo_arrays or CSR.from_scipy")
    if a.n_cols != bt.n_cols:
        raise ValueError(f"dot_csr_csr: contracted dimensions differ: a has {a.n_cols} columns "
                         f"(shape {a.shape}) but bt has {bt.n_cols} columns (shape {bt.shape})")


def dot_csr_csr(a: CSR, bt: CSR, *, mask: CSR | None = None, schedule: str = "cost",
                threads: int | None = None, keep_empty: bool = False) -> np.ndarray | CSR:
    """Inner-product ``a @ bt.T`` by sparse fiber dot products (see the module docstring).

    Args:
        a: ``[m, K]`` CSR with sorted indices.
        bt: ``[n, K]`` CSR with sorted indices: ``B`` transposed (``B.transpose()``).
        mask: optional ``[m, n]`` CSR pattern of the outputs wanted (values ignored).
        schedule: a name in :data:`~flexsparse.kernels.cpu.partition.SCHEDULES`.
        threads: numba threads for this call (``None``: numba's current setting).
        keep_empty: with a mask, keep entries whose fibers do not intersect (as zeros).

    Returns:
        Dense ``[m, n]`` ndarray without a mask; a CSR ``[m, n]`` with a mask (sorted when
        the mask is). Dtype ``np.result_type(a.dtype, bt.dtype)``.

    Raises:
        TypeError: an operand or the mask is not a :class:`CSR`.
        ValueError: unsorted operands, contracted or mask sizes differ, unknown schedule.
    """
    _check_operands(a, bt)
    make_partition = get_schedule(schedule)
    m, n = a.n_rows, bt.n_rows
    out_dtype = result_dtype(a.dtype, bt.dtype)
    work = np.dtype(np.int64) if out_dtype == np.bool_ else out_dtype
    zero = np.zeros(1, dtype=work)[0]
    a_data = a.data.astype(work, copy=False)
    bt_data = bt.data.astype(work, copy=False)
    a_len = a.row_lengths()
    with thread_scope(threads) as n_threads:
        if mask is None:
            # job i merges row i with every fiber of bt: n * len(a_i) + nnz(bt), or 1 if empty
            cost = np.where(a_len > 0, n * a_len + bt.nnz, 0) + 1
            part = make_partition(cost, n_threads, PARTS_PER_WORKER)
            out = np.zeros((m, n), dtype=work)
            if m and n:
                dot_csr_csr_dense_numeric(a.indptr, a.indices, a_data, bt.indptr, bt.indices, bt_data,
                                          zero, part.order, part.bounds, part.worker_bounds, out)
            return out.astype(out_dtype, copy=False)
        if not isinstance(mask, CSR):
            raise TypeError(f"dot_csr_csr: mask must be a flexsparse CSR, got {type(mask).__name__}")
        if mask.shape != (m, n):
            raise ValueError(f"dot_csr_csr: mask has shape {mask.shape} but the output is ({m}, {n}) "
                             f"(a.n_rows, bt.n_rows)")
        # job i: every masked (i, j) merges row i with fiber j
        fib = bt.row_lengths()[mask.indices] if mask.nnz else np.zeros(0, dtype=np.int64)
        csum = np.concatenate(([0], np.cumsum(fib)))
        mlen = mask.row_lengths()
        cost = mlen * a_len + (csum[mask.indptr[1:]] - csum[mask.indptr[:-1]]) + 1
        part = make_partition(cost, n_threads, PARTS_PER_WORKER)
        vals = np.empty(mask.nnz, dtype=work)
        hit = np.empty(mask.nnz, dtype=np.bool_)
        if mask.nnz:
            dot_csr_csr_masked_numeric(a.indptr, a.indices, a_data, bt.indptr, bt.indices, bt_data,
                                       zero, mask.indptr, mask.indices, part.order, part.bounds,
                                       part.worker_bounds, vals, hit)
    vals = vals.astype(out_dtype, copy=False)
    if keep_empty:
        return CSR._trusted(mask.indptr.copy(), mask.indices.copy(), vals, (m, n), mask.sorted_indices)
    kept = np.concatenate(([0], np.cumsum(hit, dtype=np.int64)))
    return CSR._trusted(kept[mask.indptr], mask.indices[hit], vals[hit], (m, n), mask.sorted_indices)
