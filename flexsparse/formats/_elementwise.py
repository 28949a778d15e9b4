"""Element-wise COO arithmetic, broadcasting and reshape index arithmetic.

Algorithms (all vectorised NumPy, nothing per nonzero in Python):

* ``add`` (union): broadcast both operands to the common shape, concatenate
  ``coords: [ndim, nnz_a + nnz_b]``, then ``sum_duplicates`` -- O(n log n), n = nnz_a + nnz_b.
* ``multiply`` (intersection): canonicalise both, concatenate A then B and stable-sort;
  since each side is duplicate-free, a coordinate present in both appears as an adjacent
  (A, B) pair -- O(n log n), no linear key so Flickr-sized index spaces work.
* broadcasting of size-1 modes replicates entries: ``nnz_out = nnz * prod(expansions)``.
* ``reshape_coords``: split old/new shapes into groups with equal products (as NumPy
  does for views), then per group build a mixed-radix linear index and re-split it. The
  index is int64 when the group's product fits (:func:`flexsparse._limits.fits_int64`), else Python ints in an object
  array (correct for any size, ~50x slower; only hit when one group itself overflows).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from flexsparse._limits import fits_int64
from flexsparse._util import index_dtype_for
from flexsparse.formats import _sort

__all__ = ["add", "multiply", "broadcast_to", "reshape_coords", "reshape_groups"]


def reshape_groups(old: tuple[int, ...], new: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Pair up runs of modes with equal products: ``[(i0, i1, j0, j1), ...]``.

    Both shapes must have the same non-zero product.

    >>> reshape_groups((2, 3, 4), (6, 2, 2))
    [(0, 2, 0, 1), (2, 3, 1, 3)]
    """
    groups = []
    i = j = 0
    while i < len(old) or j < len(new):
        i0, j0 = i, j
        po = pn = 1
        if i < len(old):
            po *= old[i]
            i += 1
        if j < len(new):
            pn *= new[j]
            j += 1
        while po != pn:
            if po < pn:
                po *= old[i]
                i += 1
            else:
                pn *= new[j]
                j += 1
        groups.append((i0, i, j0, j))
    return groups


def reshape_coords(coords: np.ndarray, old: tuple[int, ...], new: tuple[int, ...]) -> np.ndarray:
    """Coordinates ``[len(new), nnz]`` of the same row-major positions under shape ``new``.

    >>> reshape_coords(np.array([[1], [2]]), (2, 3), (3, 2)).ravel().tolist()
    [2, 1]
    """
    nnz = coords.shape[1]
    out = np.zeros((len(new), nnz), dtype=index_dtype_for(new))
    if nnz == 0 or math.prod(old) == 0:
        return out
    for i0, i1, j0, j1 in reshape_groups(old, new):
        group_size = math.prod(old[i0:i1])
        if i1 - i0 == 1 and j1 - j0 == 1:
            out[j0] = coords[i0]
            continue
        big = not fits_int64(group_size)
        lin = np.zeros(nnz, dtype=object if big else np.int64)
        for m in range(i0, i1):
            # lin = lin * extent + c   (mixed radix, mode i1-1 fastest)
            c = coords[m].astype(object) if big else coords[m].astype(np.int64)
            lin = lin * old[m] + c
        for m in range(j1 - 1, j0 - 1, -1):
            rem = lin % new[m]
            lin = lin // new[m]
            out[m] = rem.astype(np.int64) if big else rem
    return out


def broadcast_to(a, shape: tuple[int, ...]):
    """Broadcast COO ``a`` to ``shape`` (NumPy rules), replicating entries along size-1 modes."""
    from flexsparse.formats.coo import COO

    shape = tuple(shape)
    if a.shape == shape:
        return a
    lead = len(shape) - a.ndim
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {a.shape} to fewer modes {shape}")
    coords = np.vstack([np.zeros((lead, a.nnz), dtype=np.int64), a.coords.astype(np.int64)])
    data = a.data
    for m in range(len(shape)):
        src = 1 if m < lead else a.shape[m - lead]
        if src == shape[m]:
            continue
        if src != 1:
            raise ValueError(f"cannot broadcast shape {a.shape} to {shape}: mode {m - lead} has extent "
                             f"{src}, expected 1 or {shape[m]}")
        k = shape[m]
        n = coords.shape[1]
        coords = np.repeat(coords, k, axis=1)
        coords[m] = np.tile(np.arange(k, dtype=np.int64), n)
        data = np.repeat(data, k)
    return COO(coords.astype(index_dtype_for(shape)), data, shape)


def _common_shape(a_shape, b_shape) -> tuple[int, ...]:
    """NumPy broadcasting rules on Python ints (np.broadcast_shapes rejects sizes >= 2**63)."""
    n = max(len(a_shape), len(b_shape))
    a = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b = (1,) * (n - len(b_shape)) + tuple(b_shape)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"operands could not be broadcast together with shapes {a_shape} and {b_shape}")
        out.append(y if x == 1 else x)
    return tuple(out)


def _is_scalar(x) -> bool:
    # Python and NumPy scalars only: a 0-d ndarray is treated as a dense array (dense result for +)
    return isinstance(x, (numbers.Number, np.number, np.bool_))


def add(a, b):
    """``a + b`` for COO ``a``; ``b`` a COO (sparse result), a zero scalar, or a dense array (dense result)."""
    from flexsparse.formats.coo import COO

    if isinstance(b, COO):
        shape = _common_shape(a.shape, b.shape)
        a2, b2 = broadcast_to(a, shape), broadcast_to(b, shape)
        dtype = np.result_type(a.dtype, b.dtype)
        coords = np.concatenate([a2.coords, b2.coords], axis=1)
        data = np.concatenate([a2.data.astype(dtype, copy=False), b2.data.astype(dtype, copy=False)])
        return COO(coords, data, shape, canonical=False).sum_duplicates()
    if _is_scalar(b):
        if b != 0:
            raise ValueError(f"adding the nonzero scalar {b!r} to a sparse tensor would make it dense; "
                             "use t.todense() + value")
        data = a.data + b  # keeps NumPy's scalar promotion
        return a._new(a.coords, data, canonical=a.canonical)
    if isinstance(b, np.ndarray):
        return a.todense() + b
    return NotImplemented


def _intersect(a, b):
    """Positions ``(ia, ib)`` of coordinates present in both canonical COO ``a`` and ``b``."""
    coords = np.concatenate([a.coords, b.coords], axis=1)
    order = _sort.lex_order(coords, a.shape)  # stable: for equal coords the A entry comes first
    sorted_coords = coords[:, order]
    dup = ~_sort.group_starts(sorted_coords)  # True at the B entry of each (A, B) pair
    pos = np.flatnonzero(dup)
    return order[pos - 1], order[pos] - a.nnz, sorted_coords[:, pos]


def multiply(a, b):
    """``a * b`` for COO ``a``; ``b`` a scalar, a dense array, or a COO -- always a COO result."""
    from flexsparse.formats.coo import COO

    if _is_scalar(b):
        return a._new(a.coords, a.data * b, canonical=a.canonical)
    if isinstance(b, COO):
        shape = _common_shape(a.shape, b.shape)
        a2 = broadcast_to(a, shape).sum_duplicates()
        b2 = broadcast_to(b, shape).sum_duplicates()
        ia, ib, coords = _intersect(a2, b2)
        return COO(coords, a2.data[ia] * b2.data[ib], shape, canonical=True)
    if isinstance(b, np.ndarray):
        shape = _common_shape(a.shape, b.shape)
        a2 = broadcast_to(a, shape)
        vals = np.broadcast_to(b, shape)[tuple(a2.coords)] if a2.ndim else b.reshape(())[()]
        return a2._new(a2.coords, a2.data * vals, canonical=a2.canonical)
    return NotImplemented
