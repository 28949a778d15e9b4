"""Counting-sort transpose of a CSR matrix (CSR of ``A.T``, i.e. the CSC of ``A``).

Algorithm: count entries per column, prefix-sum the counts into row pointers of the
result, then scatter every entry of ``A`` (rows visited in order) into its column's next
free slot. Formats: raw CSR buffers (``indptr`` int64, ``indices`` int32/int64, any
numeric ``data``). Cost: O(nnz + n_rows + n_cols) time, O(n_cols) scratch.
"""

from __future__ import annotations

from numba import njit

__all__ = ["transpose_csr"]


@njit(cache=True, nogil=True)
def transpose_csr(indptr, indices, data, n_cols, out_indptr, out_indices, out_data):
    """Counting-sort transpose kernel: fill the CSR of ``A.T`` (i.e. the CSC of ``A``).

    Args:
        indptr, indices, data: CSR buffers of ``A`` (``[n_rows+1]``, ``[nnz]``, ``[nnz]``).
        n_cols: number of columns of ``A`` (rows of the result).
        out_indptr: ``int64[n_cols + 1]``, overwritten.
        out_indices: ``[nnz]`` integer buffer for the row ids of ``A``, overwritten.
        out_data: ``[nnz]`` buffer, overwritten.

    Rows of ``A`` are visited in order, so each output row lists its column ids
    (rows of ``A``) in increasing order: the result is sorted whenever ``A`` has no
    duplicate entries. O(nnz + n_rows + n_cols) time.
    """
    n_rows = indptr.shape[0] - 1
    for k in range(n_cols + 1):
        out_indptr[k] = 0
    for p in range(indptr[n_rows]):
        out_indptr[indices[p] + 1] += 1
    for k in range(n_cols):
        out_indptr[k + 1] += out_indptr[k]
    # next free slot of every output row; reuses a scratch copy so out_indptr stays intact
    fill = out_indptr[:n_cols].copy()
    for i in range(n_rows):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            q = fill[j]
            out_indices[q] = i
            out_data[q] = data[p]
            fill[j] = q + 1
