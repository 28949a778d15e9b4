"""Scatter a CSR matrix into a dense array (the dense result of a sparse product).

Algorithm: one pass over the stored entries, ``out[i, indices[p]] += data[p]`` for the rows
``i`` of ``indptr`` (duplicates add up, any column order). ``out`` comes zeroed from
``np.zeros`` (lazily zero pages), so the cost is O(nnz + touched pages) instead of the
O(n_rows * n_cols) write of a dense fill, with no ``int64[nnz]`` row-index temporary.

Formats: CSR buffers (``indptr`` int64, ``indices`` int32/int64, any numeric ``data``) and a
C-contiguous ``out[n_rows, n_cols]`` of the data's dtype.

>>> import numpy as np
>>> out = np.zeros((2, 3))
>>> csr_to_dense(np.array([0, 2, 3]), np.array([2, 2, 0], dtype=np.int32), np.array([1.0, 2.0, 4.0]), out)
>>> out.tolist()
[[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["csr_to_dense"]


@njit(cache=True)
def csr_to_dense(indptr, indices, data, out):
    """Add every stored entry of the CSR buffers into ``out`` (``[n_rows, n_cols]``, zeroed)."""
    for i in range(indptr.shape[0] - 1):
        row = out[i]
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            row[np.uint64(indices[p])] += data[p]
