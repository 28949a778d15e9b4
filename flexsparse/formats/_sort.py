"""Lexicographic ordering of per-mode coordinates without overflowing linear keys.

Coordinates are ``coords: [ndim, nnz]`` (one row per mode). Ordering is lexicographic
by mode 0, then mode 1, ... (row-major order of the dense index space).

Algorithm: ``np.lexsort`` over the modes (O(ndim * nnz log nnz)). When the dense index
space is small enough to linearise, ``prod(shape) < 2**63`` (checked with Python ints,
so FROSTT-Flickr's 1.05e22 index space never takes this path), a single int64 key
``sum(c_m * stride_m)`` is built and sorted with a stable ``argsort`` instead, which is
several times faster than ``lexsort``. Duplicate detection compares neighbouring columns
mode by mode (O(ndim * nnz)), again with no linear key.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fits_int64", "linear_key", "lex_order", "group_starts", "is_lex_sorted"]

_INT64_LIMIT = 2**63


def fits_int64(shape: tuple[int, ...]) -> bool:
    """True when every linear index of ``shape`` fits a signed int64 (Python-int check).

    >>> fits_int64((320_000, 28_000_000, 1_600_000, 731))
    False
    >>> fits_int64((1000, 1000))
    True
    """
    return math.prod(int(s) for s in shape) < _INT64_LIMIT


def linear_key(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Row-major linear index ``[nnz]`` int64 of ``coords: [ndim, nnz]``.

    Raises:
        ValueError: if ``prod(shape) >= 2**63`` (the key would overflow).
    """
    if not fits_int64(shape):
        raise ValueError(f"shape {tuple(shape)} has {math.prod(shape)} elements: "
                         "a linear int64 key would overflow")
    key = np.zeros(coords.shape[1], dtype=np.int64)
    for m, extent in enumerate(shape):
        key *= np.int64(extent)
        key += coords[m]
    return key


def lex_order(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Stable permutation ``[nnz]`` sorting the columns of ``coords`` lexicographically.

    >>> lex_order(np.array([[1, 0, 1], [0, 2, 0]]), (2, 3)).tolist()
    [1, 0, 2]
    """
    ndim, nnz = coords.shape
    if ndim == 0 or nnz <= 1:
        return np.arange(nnz, dtype=np.intp)
    if ndim == 1:
        return np.argsort(coords[0], kind="stable")
    if fits_int64(shape):
        return np.argsort(linear_key(coords, shape), kind="stable")
    # np.lexsort sorts by the LAST key first, so pass modes in reverse order.
    return np.lexsort(coords[::-1])


def group_starts(sorted_coords: np.ndarray) -> np.ndarray:
    """Boolean ``[nnz]``: True where a column differs from its predecessor (first is True).

    ``sorted_coords: [ndim, nnz]`` must already be lexicographically sorted, so equal
    coordinates are adjacent. For ``ndim == 0`` all entries are the same (scalar) point.
    """
    ndim, nnz = sorted_coords.shape
    starts = np.zeros(nnz, dtype=bool)
    if nnz == 0:
        return starts
    starts[0] = True
    for m in range(ndim):
        row = sorted_coords[m]
        starts[1:] |= row[1:] != row[:-1]
    return starts


def is_lex_sorted(coords: np.ndarray, strict: bool = True) -> bool:
    """Whether columns of ``coords: [ndim, nnz]`` are (strictly) increasing lexicographically.

    Decided mode by mode: a pair of neighbours is settled at the first mode where they
    differ; ``strict`` additionally forbids equal neighbours (duplicates).

    >>> is_lex_sorted(np.array([[0, 0, 1], [2, 3, 0]]))
    True
    >>> is_lex_sorted(np.array([[0, 0], [2, 2]]))
    False
    """
    ndim, nnz = coords.shape
    if nnz <= 1:
        return True
    if ndim == 0:
        return not strict  # every entry is the same point
    undecided = np.ones(nnz - 1, dtype=bool)
    for m in range(ndim):
        a, b = coords[m, :-1], coords[m, 1:]
        if np.any(undecided & (b < a)):
            return False
        undecided &= a == b
        if not undecided.any():
            return True
    return not (strict and undecided.any())
