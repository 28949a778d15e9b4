"""COO -> dense: scatter every stored entry to its row-major linear index, computed on the fly.

Algorithm: ``out.flat[sum_m coords[m, t] * strides[m]] (+)= data[t]``, one pass over the
entries with no int64 index array materialised (NumPy's ``ravel_multi_index`` + ``bincount``
builds two). Coordinates that may repeat (a non-canonical COO) are summed serially in input
order, as ``bincount`` does; unique coordinates are stored by a parallel loop once there are
enough of them to pay for the thread launch.

The same pass reports whether a stored value is inf or nan, so a caller that densifies
needs no separate scan of the values (:func:`flexsparse.contract.execute.einsum`).

Formats: ``coords [ndim, nnz]`` of any integer dtype, ``data [nnz]`` numeric (bool is
excluded by the caller); ``out`` a zeroed C-contiguous array viewed flat.

Cost: O(nnz * ndim) time, no workspace. Coordinates must be in bounds (non-negative: the
loops index with unsigned integers).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from flexsparse import _limits

__all__ = ["COMPILED_DTYPES", "PARALLEL_MIN_NNZ", "has_nonfinite_values", "nonfinite_kernel", "nonfinite_parallel",
           "scatter_add_kernel", "scatter_coo_dense", "scatter_unique_kernel"]

#: Value types the compiled scatter takes: numba has no float16 or longdouble type.
COMPILED_DTYPES = frozenset(np.dtype(t) for t in (
    np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float32, np.float64, np.complex64, np.complex128))

#: Unique coordinates are scattered by a parallel loop from this many entries. The scatter is
#: bound by memory traffic (~1.4 ns per entry on one core of the 2-core test VM: 165K
#: chemistry integrals in 0.23 ms). On that machine a parallel scatter of those 165K entries
#: made the BLAS call that follows 20x slower (22 ms instead of 0.6 ms, numba's OpenMP
#: threads and OpenBLAS's competing for the two cores), so only scatters of millions of
#: entries, which take milliseconds themselves, run in parallel.
PARALLEL_MIN_NNZ = 1 << 22


@njit(cache=True)
def scatter_add_kernel(coords, data, strides, out):
    """``out[lin(t)] += data[t]`` for every entry, in order (duplicates accumulate).

    Returns whether a stored value is inf or nan, found in the same pass: ``v * 0`` is 0 for
    every finite value and nan otherwise, summed into ``bad``. That sum costs nothing next to
    the scatter (165K float64 entries, one thread: 196 us with it, 205 us without, plus 35 us
    for a separate ``sum``); a boolean ``bad |= v - v != 0`` made the loop slower (256 us).
    Indices are unsigned (coordinates are in bounds), so no negative-index wrap-around is
    compiled into the loop: 211 -> 169 us on the same entries.
    """
    k = coords.shape[0]
    bad = np.zeros(1, dtype=data.dtype)[0]
    if k == 3:  # the common tensor order, with the strides in registers
        s0 = np.uint64(strides[0])
        s1 = np.uint64(strides[1])
        c0 = coords[0]
        c1 = coords[1]
        c2 = coords[2]
        for t in range(np.uint64(data.shape[0])):
            v = data[t]
            out[np.uint64(c0[t]) * s0 + np.uint64(c1[t]) * s1 + np.uint64(c2[t])] += v
            bad += v * 0
        return bad != 0
    for t in range(np.uint64(data.shape[0])):
        lin = np.uint64(0)
        for m in range(k):
            lin += np.uint64(coords[m, t]) * np.uint64(strides[m])
        v = data[t]
        out[lin] += v
        bad += v * 0
    return bad != 0


@njit(cache=True, parallel=True)
def scatter_unique_kernel(coords, data, strides, chunk, out):
    """``out[lin(t)] = data[t]`` for unique coordinates, in parallel chunks of entries; returns
    whether a value is inf or nan (as :func:`scatter_add_kernel`)."""
    k = coords.shape[0]
    n = data.shape[0]
    n_bad = 0
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(n, lo + chunk)
        bad = np.zeros(1, dtype=data.dtype)[0]
        if k == 3:
            s0 = np.uint64(strides[0])
            s1 = np.uint64(strides[1])
            c0 = coords[0]
            c1 = coords[1]
            c2 = coords[2]
            for t in range(np.uint64(lo), np.uint64(hi)):
                v = data[t]
                out[np.uint64(c0[t]) * s0 + np.uint64(c1[t]) * s1 + np.uint64(c2[t])] = v
                bad += v * 0
        else:
            for t in range(np.uint64(lo), np.uint64(hi)):
                lin = np.uint64(0)
                for m in range(k):
                    lin += np.uint64(coords[m, t]) * np.uint64(strides[m])
                v = data[t]
                out[lin] = v
                bad += v * 0
        n_bad += bad != 0
    return n_bad > 0


@njit(cache=True)
def nonfinite_kernel(data):
    """Whether ``data`` holds an inf or nan: ``v - v`` is non-zero (nan) only for those; an
    integer OR per value, no early exit, so the loop vectorises (165K float64, one thread:
    17 us against 35 us for NumPy's ``sum`` with the floating-point state saved and restored)."""
    bad = False
    for t in range(data.shape[0]):
        v = data[t]
        bad |= (v - v) != 0
    return bad


@njit(cache=True, parallel=True)
def nonfinite_parallel(data, n_blocks):
    """:func:`nonfinite_kernel` over ``n_blocks`` equal blocks of ``data``, one per thread."""
    size = -(-data.shape[0] // n_blocks)
    flags = np.empty(n_blocks, dtype=np.bool_)  # np.zeros: a parallel region of its own (see the package)
    for b in prange(n_blocks):
        flags[b] = nonfinite_kernel(data[b * size:min((b + 1) * size, data.shape[0])])
    found = False
    for b in range(n_blocks):
        found |= flags[b]
    return found


def has_nonfinite_values(data: np.ndarray, threads: int | None) -> bool:
    """Whether the flat ``data`` (a dtype of :data:`COMPILED_DTYPES`) holds an inf or nan, on
    up to ``threads`` threads (``None``: numba's setting) from
    :data:`~flexsparse._limits.NONFINITE_PARALLEL_MIN_VALUES` values, else on one."""
    if data.shape[0] >= _limits.NONFINITE_PARALLEL_MIN_VALUES:
        n = numba.get_num_threads() if threads is None else min(int(threads), numba.get_num_threads())
        if n > 1:
            return bool(nonfinite_parallel(data, n))
    return bool(nonfinite_kernel(data))


def scatter_coo_dense(coords: np.ndarray, data: np.ndarray, out: np.ndarray, unique: bool) -> bool:
    """Scatter a COO's entries into the zeroed C-contiguous ``out`` (its shape gives the strides);
    returns whether a stored value is inf or nan (checked in the same pass).

    Raises:
        TypeError: values of a type outside :data:`COMPILED_DTYPES`.
    """
    if data.dtype not in COMPILED_DTYPES or out.dtype != data.dtype:
        raise TypeError(f"scatter_coo_dense takes values of one of {sorted(str(d) for d in COMPILED_DTYPES)} "
                        f"matching out; got {data.dtype} into {out.dtype}")
    # per-call Python kept small: strides from the C-contiguous layout (one array, no loop),
    # the thread count asked only for parallel-sized inputs (it re-checks numba's thread
    # pool each time): 6-8 -> 4-5 us per call on a 3x3x5 tensor, one thread
    strides = np.array(out.strides, dtype=np.int64) // out.itemsize
    flat = out.reshape(-1)
    if unique and data.shape[0] >= PARALLEL_MIN_NNZ:
        threads = numba.get_num_threads()
        if threads > 1:
            return bool(scatter_unique_kernel(coords, data, strides, np.int64(-(-data.shape[0] // threads)), flat))
    return bool(scatter_add_kernel(coords, data, strides, flat))
