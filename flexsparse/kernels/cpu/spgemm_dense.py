"""Sparse x sparse matrix product with a dense result, ``C = A @ B`` on CSR buffers.

Algorithm: Gustavson row by row, with the output row itself as the accumulator:
``C[i, :] += A[i, k] * B[k, :]`` for every entry ``A[i, k]``. No stamps, positions or
emission pass, so a multiply-add is one load of ``B`` and one read-modify-write of a row that
stays in cache; and no sparse intermediate, so the memory is the output alone. Threads own
contiguous blocks of output rows of equal flops
(:func:`~flexsparse.kernels.cpu.partition.cost_partition`), so no two write the same row.

This is the kernel of products whose result is dense anyway (``format="dense"``, or
``"auto"`` above the dense-output density): computing the sparse result first and
scattering it took the sparse result's bytes on top of the dense one (pyamg bar, 600 x 600,
29 % dense: peak RSS growth 2.0x inputs + output), and its stamps and positions.

Formats: CSR buffers (``indptr`` int64, ``indices`` int32/int64, any row order, duplicates
summed), values of one numeric dtype; ``out`` a zeroed C-contiguous ``[n_rows, n_cols]`` of
that dtype (``np.zeros`` hands out lazily zeroed pages, so untouched rows cost nothing).
Entries that cancel leave a zero, as in a dense product.

Cost: O(nnz(A) + flops) time plus the touched pages of ``out``; no workspace.

>>> import numpy as np, scipy.sparse as sp
>>> from flexsparse.formats.csr import CSR
>>> a = CSR.from_scipy(sp.random_array((30, 20), density=0.3, rng=0, format="csr"))
>>> b = CSR.from_scipy(sp.random_array((20, 10), density=0.3, rng=1, format="csr"))
>>> bool(np.allclose(spgemm_dense(a, b), a.toarray() @ b.toarray()))
True
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu._spgemm_output import estimate_nnz
from flexsparse.kernels.cpu.partition import check_threads, cost_split, thread_scope
from flexsparse.kernels.cpu.spgemm import check_operands, count_flops

__all__ = ["estimate_nnz", "spgemm_csr_csr_dense", "spgemm_csr_csr_dense_rows", "spgemm_dense", "spgemm_dense_trusted"]

#: Products below this many multiply-adds run on one thread (a parallel launch costs more).
_PARALLEL_MIN_FLOPS = 1 << 16


@njit(cache=True)
def spgemm_csr_csr_dense_rows(r0, r1, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, out):
    """Add rows ``r0:r1`` of ``A @ B`` into ``out`` (zeroed ``[n_rows, n_cols]``), one thread."""
    one = np.uint64(1)
    for i in range(r0, r1):
        row = out[i]
        for p in range(np.uint64(a_indptr[i]), np.uint64(a_indptr[i + 1])):
            k = np.uint64(a_indices[p])
            av = a_data[p]
            for q in range(np.uint64(b_indptr[k]), np.uint64(b_indptr[k + one])):
                row[np.uint64(b_indices[q])] += av * b_data[q]


@njit(cache=True, parallel=True)
def spgemm_csr_csr_dense(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, bounds, out):
    """:func:`spgemm_csr_csr_dense_rows` with thread ``w`` on rows ``bounds[w]:bounds[w+1]``
    (``bounds: int64[n_workers + 1]``)."""
    for w in prange(bounds.shape[0] - 1):
        spgemm_csr_csr_dense_rows(bounds[w], bounds[w + 1], a_indptr, a_indices, a_data, b_indptr, b_indices,
                                  b_data, out)


def spgemm_dense(a: CSR, b: CSR, threads: int | None = None) -> np.ndarray:
    """Dense ``a @ b`` of two CSR matrices (see the module docstring).

    Returns:
        ``[a.n_rows, b.n_cols]`` array of dtype ``np.result_type(a.dtype, b.dtype)``
        (booleans as "any").

    Raises:
        TypeError: an operand is not a :class:`CSR`.
        ValueError: inner dimensions differ, or bad ``threads``.
    """
    check_operands(a, b, "spgemm_dense")
    check_threads(threads)
    out_dtype = np.result_type(a.data.dtype, b.data.dtype)
    work = np.dtype(np.int64) if out_dtype == np.bool_ else out_dtype
    flops, _ = count_flops(a, b, threads)
    c = spgemm_dense_trusted(a, b, flops, work, threads)
    return c if work == out_dtype else c.astype(out_dtype)


def spgemm_dense_trusted(a: CSR, b: CSR, flops: np.ndarray, work: np.dtype, threads: int | None
                         ) -> np.ndarray:
    """:func:`spgemm_dense` for checked operands, with the row flops known, in dtype ``work``."""
    out = np.zeros((a.n_rows, b.n_cols), dtype=work)
    if out.size == 0 or a.indptr[-1] == 0 or b.indptr[-1] == 0:
        return out
    a_data = a.data.astype(work, copy=False)
    b_data = b.data.astype(work, copy=False)
    total = int(flops.sum())
    n_threads = 1 if total < _PARALLEL_MIN_FLOPS else (numba.get_num_threads() if threads is None else threads)
    if n_threads == 1:  # no parallel launch
        spgemm_csr_csr_dense_rows(0, a.n_rows, a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, out)
        return out
    bounds = cost_split(flops + 1, n_threads, 1).bounds
    with thread_scope(threads):
        spgemm_csr_csr_dense(a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, bounds, out)
    return out
