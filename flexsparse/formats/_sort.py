"""Lexicographic ordering of per-mode coordinates without overflowing linear keys.

Coordinates are ``coords: [ndim, nnz]`` (one row per mode). Ordering is lexicographic
by mode 0, then mode 1, ... (row-major order of the dense index space).

Algorithm: runs of consecutive modes whose extents multiply to < 2**62 (checked with
Python ints) are packed into one int64 key each; several keys are folded into one
through dense ranks (a rank is < nnz, so rank * extent fits int64), and one stable
``argsort`` orders the columns (O(k * nnz log nnz) for k keys). When the whole index
space fits, ``prod(shape) < 2**62``, the single key is the row-major linear index.
FROSTT Flickr's 1.05e22-cell space packs into 2 keys and no key ever overflows.
Duplicate detection compares neighbouring columns mode by mode (O(ndim * nnz)).
"""

from __future__ import annotations

import math

import numpy as np

from flexsparse._limits import fits_int64

__all__ = ["linear_key", "packed_keys", "lex_order", "group_starts", "is_lex_sorted"]


def linear_key(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Row-major linear index ``[nnz]`` int64 of ``coords: [ndim, nnz]``.

    Raises:
        ValueError: if ``prod(shape)`` fails :func:`flexsparse._limits.fits_int64` (the key
            could overflow); a single mode is always its own key.
    """
    if len(shape) > 1 and not fits_int64(*shape):
        raise ValueError(f"shape {tuple(shape)} has {math.prod(shape)} elements: "
                         "a linear int64 key would overflow")
    key = np.zeros(coords.shape[1], dtype=np.int64)
    for m, extent in enumerate(shape):
        key *= np.int64(extent)
        key += coords[m]
    return key


def packed_keys(coords: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Pack runs of consecutive modes into as few int64 keys ``[nnz]`` as possible.

    Modes are grouped greedily from mode 0 while the group's product fits int64 (see
    :func:`flexsparse._limits.fits_int64`), so
    comparing the keys lexicographically equals comparing the coordinates. Flickr
    (320K x 28M x 1.6M x 731) packs into 2 keys: (320K * 28M) and (1.6M * 731).

    >>> [k.tolist() for k in packed_keys(np.array([[1, 0], [2, 3], [4, 5]]), (2, 3, 2**62))]
    [[5, 3], [4, 5]]
    """
    return [k for k, _ in _packed_keys_with_sizes(coords, shape)]


def _packed_keys_with_sizes(coords, shape):
    """``[(key [nnz] int64, group_size Python int), ...]`` -- see :func:`packed_keys`."""
    keys, start, prod = [], 0, 1
    ndim = len(shape)
    for m in range(ndim + 1):
        if m == ndim or (m > start and not fits_int64(prod, shape[m])):
            if m > start:
                keys.append((linear_key(coords[start:m], tuple(shape[start:m])), prod))
            start, prod = m, 1
        if m < ndim:
            prod *= int(shape[m])
    return keys


def _dense_rank(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank ``[nnz]`` int64 of each key among the distinct keys (order-preserving), and their count."""
    order = np.argsort(key, kind="stable")
    sk = key[order]
    new = np.empty(sk.shape[0], dtype=bool)
    new[:1] = True
    new[1:] = sk[1:] != sk[:-1]
    rank = np.empty(sk.shape[0], dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank, int(new.sum())


def lex_order(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Stable permutation ``[nnz]`` sorting the columns of ``coords`` lexicographically.

    Uses as few packed int64 keys as possible (:func:`packed_keys`), folded into a single
    int64 key through dense ranks when needed, then one stable ``argsort`` (NumPy's
    timsort/radix sort: merging two presorted runs is close to O(n)).

    >>> lex_order(np.array([[1, 0, 1], [0, 2, 0]]), (2, 3)).tolist()
    [1, 0, 2]
    """
    ndim, nnz = coords.shape
    if ndim == 0 or nnz <= 1:
        return np.arange(nnz, dtype=np.intp)
    if ndim == 1:
        return np.argsort(coords[0], kind="stable")
    keys = _packed_keys_with_sizes(coords, shape)
    # Fold the keys into one: append key k to the running key by mixed radix while the
    # product fits int64; otherwise replace the running key by its dense rank (< nnz)
    # first. Ranks preserve order, so the single key sorts exactly like the coordinates;
    # this costs one extra single-key sort per rank step and beats np.lexsort over
    # several keys (about 1.5x on a Flickr-shaped tensor).
    running, bound = keys[0]
    for key, size in keys[1:]:
        if not fits_int64(bound, size):
            running, bound = _dense_rank(running)
        if not fits_int64(bound, size):  # only when nnz * size overflows: rank this key too
            key, size = _dense_rank(key)
        running = running * np.int64(size) + key
        bound *= size
    return np.argsort(running, kind="stable")


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
