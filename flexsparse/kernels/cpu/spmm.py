"""Sparse x dense and dense x sparse matrix products (dense outputs), plus dense x dense.

* :func:`spmm_csr_dense` -- ``C[m, N] = A[m, K] (CSR) @ B[K, N] (dense)``: row ``i`` of
  ``C`` is ``sum_k A[i, k] * B[k, :]``; the inner loop runs over a contiguous row of
  ``B`` and of ``C`` (SIMD-friendly). Rows are split over threads in equal-nnz chunks
  (:func:`~flexsparse.kernels.cpu.partition.cost_partition` on ``nnz(A[i, :]) + 1``).
  O(nnz(A) * N) time, no workspace.
* :func:`spmm_dense_csr` -- ``C[M, N] = A[M, K] (dense) @ B[K, N] (CSR)``, computed as
  ``(B.T @ A.T).T``: ``B.T`` by a counting-sort transpose (O(nnz(B) + K + N)),
  ``A.T`` as a contiguous ``[K, M]`` copy, then :func:`spmm_csr_dense_numeric` gives
  ``C.T [N, M]``, returned as a C-contiguous ``[M, N]`` array. Chosen over a direct
  scatter kernel (``C[i, cols(B[k,:])] += A[i, k] * B[k, :]``, one row of ``A`` per
  job), which measured 1.1-4x slower on one thread (M = 16..512, K = N = 1000..5000,
  density 0.001..0.1) because its inner loop is an indexed scatter while the
  transposed form streams contiguous rows.
  O(nnz(B) * M + M * K + M * N) time, O(M * (K + N)) extra memory.
* :func:`dense_dense` -- ``np.matmul`` (BLAS), so the einsum executor has one place to
  call for every pair of formats.

Structural semantics: only stored entries of the sparse operand are multiplied, so a
NaN/inf in the dense operand reaches the output only through stored entries (as in
SciPy); every stored value is multiplied, zeros and NaN included. Dtypes are promoted
like NumPy (``np.result_type``; bool x bool is computed in int64 and returned as bool).

>>> import numpy as np, scipy.sparse as sp
>>> a = CSR.from_scipy(sp.random_array((5, 6), density=0.4, rng=0, format="csr"))
>>> b = np.arange(12.0).reshape(6, 2)
>>> bool(np.allclose(spmm_csr_dense(a, b), a.toarray() @ b))
True
>>> bool(np.allclose(spmm_dense_csr(b.T, a.transpose()), b.T @ a.toarray().T))
True
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flexsparse._util import check_numeric_dtype, result_dtype
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.partition import cost_partition, thread_scope

__all__ = ["dense_dense", "spmm_csr_dense", "spmm_csr_dense_numeric", "spmm_dense_csr"]

#: Parts per thread of the nnz-balanced row split.
PARTS_PER_WORKER = 4


@njit(cache=True, parallel=True)
def spmm_csr_dense_numeric(a_indptr, a_indices, a_data, b, bounds, worker_bounds, out):
    """``out[i, :] = sum_p a_data[p] * b[a_indices[p], :]`` over row ``i`` of ``A``.

    Args:
        a_indptr, a_indices, a_data: CSR of ``A`` ``[m, K]`` (any column order).
        b: C-contiguous ``[K, N]`` dense operand, of the output dtype.
        bounds, worker_bounds: a contiguous partition of the ``m`` rows.
        out: ``[m, N]`` zero-filled output.
    """
    n = b.shape[1]
    for w in prange(worker_bounds.shape[0] - 1):
        for i in range(bounds[worker_bounds[w]], bounds[worker_bounds[w + 1]]):
            orow = out[i]
            for p in range(a_indptr[i], a_indptr[i + 1]):
                av = a_data[p]
                brow = b[a_indices[p]]
                for j in range(n):
                    orow[j] += av * brow[j]


def _check_dense(x: object, name: str, op: str) -> np.ndarray:
    if isinstance(x, CSR):
        raise TypeError(f"{op}: {name} must be a dense ndarray, got a CSR")
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{op}: {name} must be 2-D, got shape {arr.shape}")
    check_numeric_dtype(arr.dtype, f"{op}: {name}")
    return arr


def spmm_csr_dense(a: CSR, b: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Sparse x dense product ``a @ b`` (see the module docstring).

    Args:
        a: ``[m, K]`` CSR.
        b: ``[K, N]`` dense array.
        threads: numba threads for this call (``None``: numba's current setting).

    Returns:
        C-contiguous ``[m, N]`` array of dtype ``np.result_type(a.dtype, b.dtype)``.

    Raises:
        TypeError: ``a`` is not a CSR, or ``b`` is not numeric.
        ValueError: ``b`` is not 2-D or the inner dimensions differ.
    """
    if not isinstance(a, CSR):
        raise TypeError(f"spmm_csr_dense: a must be a flexsparse CSR, got {type(a).__name__}")
    b = _check_dense(b, "b", "spmm_csr_dense")
    if a.n_cols != b.shape[0]:
        raise ValueError(f"spmm_csr_dense: inner dimensions differ: a has {a.n_cols} columns "
                         f"(shape {a.shape}) but b has {b.shape[0]} rows (shape {b.shape})")
    out_dtype = result_dtype(a.dtype, b.dtype)
    work = np.dtype(np.int64) if out_dtype == np.bool_ else out_dtype
    out = np.zeros((a.n_rows, b.shape[1]), dtype=work)
    if a.nnz and b.shape[1]:
        with thread_scope(threads) as n_threads:
            part = cost_partition(a.row_lengths() + 1, n_threads, PARTS_PER_WORKER)
            spmm_csr_dense_numeric(a.indptr, a.indices, a.data.astype(work, copy=False),
                                   np.ascontiguousarray(b, dtype=work), part.bounds,
                                   part.worker_bounds, out)
    return out.astype(out_dtype, copy=False)


def spmm_dense_csr(a: np.ndarray, b: CSR, *, threads: int | None = None) -> np.ndarray:
    """Dense x sparse product ``a @ b``, computed as ``(b.T @ a.T).T``.

    Args:
        a: ``[M, K]`` dense array.
        b: ``[K, N]`` CSR.
        threads: numba threads for this call.

    Returns:
        C-contiguous ``[M, N]`` array of dtype ``np.result_type(a.dtype, b.dtype)``.

    Raises:
        TypeError: ``b`` is not a CSR, or ``a`` is not numeric.
        ValueError: ``a`` is not 2-D or the inner dimensions differ.
    """
    if not isinstance(b, CSR):
        raise TypeError(f"spmm_dense_csr: b must be a flexsparse CSR, got {type(b).__name__}")
    a = _check_dense(a, "a", "spmm_dense_csr")
    if a.shape[1] != b.n_rows:
        raise ValueError(f"spmm_dense_csr: inner dimensions differ: a has {a.shape[1]} columns "
                         f"(shape {a.shape}) but b has {b.n_rows} rows (shape {b.shape})")
    out_t = spmm_csr_dense(b.transpose(), a.T, threads=threads)  # [N, M]
    return np.ascontiguousarray(out_t.T)


def dense_dense(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense x dense product by BLAS (``np.matmul``), checked like the sparse kernels.

    >>> dense_dense(np.ones((2, 3)), np.ones((4, 2)))
    Traceback (most recent call last):
    ...
    ValueError: dense_dense: inner dimensions differ: a has 3 columns (shape (2, 3)) but b has 4 rows (shape (4, 2))
    """
    a = _check_dense(a, "a", "dense_dense")
    b = _check_dense(b, "b", "dense_dense")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"dense_dense: inner dimensions differ: a has {a.shape[1]} columns "
                         f"(shape {a.shape}) but b has {b.shape[0]} rows (shape {b.shape})")
    return np.matmul(a, b)
