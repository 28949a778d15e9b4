"""Compact ids for multi-mode coordinate keys, without a linearised key that could overflow.

The executor matricises every pairwise contraction: the coordinates of a group of modes
(say A's free modes ``(i, j)``) become one row id. Three regimes, chosen per key:

* ``direct``: the key's index space ``prod(sizes)`` is small (<= ``max(4 * n, 2**20)``): the
  row-major linear index is itself the id (no sort; ids are in lexicographic key order);
* ``unique``: the space fits int64 but is large: ids = ranks of the distinct linear keys;
  the id space shrinks to the keys that occur;
* ``lexsort``: ``prod(sizes)`` fails :func:`flexsparse._limits.fits_int64` (FROSTT Flickr,
  ~1e22 cells): rank the key tuples with ``np.lexsort`` over the modes, never forming a
  linear key.

In every regime ids increase with the lexicographic order of the key tuples, so sorted ids
decode to canonically sorted coordinates.

Two entry points:

* :func:`group_modes` / :func:`split_modes` (the in-memory engine): keys read straight from a
  COO's ``[ndim, nnz]`` coordinate array (any integer dtype, no per-mode int64 copies);
  ``unique`` ranks come from a bitmap over the space or an LSD radix sort
  (:mod:`flexsparse.kernels.cpu.grouping`), ids are int32 when they fit, and an operand
  contracted with itself is grouped once. O(k * n) for ``direct``, O(k * n + space / 64)
  (bitmap) or O(k * n + n * ceil(bits / 11)) (radix) for ``unique``.
* :func:`group_keys` / :func:`split_groups`: the same regimes from per-mode coordinate lists,
  ``np.unique`` for ``unique`` (O(n log n)), with a settable ``direct`` floor (the bounded-memory
  path charges every id). O(k * n log n) for ``lexsort`` in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from flexsparse._limits import fits_int64

__all__ = ["KeySpace", "group_keys", "group_modes", "is_direct", "split_groups", "split_modes"]



@dataclass(frozen=True, eq=False)
class KeySpace:
    """Decoder from compact ids back to per-mode coordinates.

    Attributes:
        sizes: extent of each mode of the key.
        n_ids: number of ids (the matricised dimension's size).
        regime: ``"direct"``, ``"unique"`` or ``"lexsort"``.
        table: for ``unique``/``lexsort``, ``[n_modes, n_ids]`` coordinates of every id;
            ``None`` for ``direct`` (and for the contracted keys of :func:`split_modes`, which
            are never decoded).
    """

    sizes: tuple[int, ...]
    n_ids: int
    regime: str
    table: np.ndarray | None
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def id_table(self) -> np.ndarray | None:
        """``int64 [n_modes, n_ids]`` coordinates of every id, or ``None`` when ids are
        row-major linear keys over ``sizes`` (the ``direct`` regime)."""
        return self.table

    def coord_table(self, dtype: np.dtype) -> np.ndarray:
        """``[n_modes, n_ids]`` coordinates of every id in ``dtype`` (computed once per dtype).

        >>> ks, ids = group_modes(np.array([[1, 0, 1], [2, 0, 2]]), [0, 1], (2, 3))
        >>> ks.coord_table(np.dtype(np.int32))[:, ids].tolist()
        [[1, 0, 1], [2, 0, 2]]
        """
        dtype = np.dtype(dtype)
        tab = self._tables.get(dtype)
        if tab is not None:
            return tab
        if self.regime == "direct":
            from flexsparse.kernels.cpu import grouping

            tab = np.empty((len(self.sizes), self.n_ids), dtype=dtype)
            if self.n_ids and self.sizes:
                grouping.decode_direct_kernel(np.asarray(self.sizes, dtype=np.int64), 1 << 16, tab)
        elif self.table is None:
            raise ValueError("this key space keeps no table of its keys (a contracted key): it cannot be decoded")
        else:
            tab = np.ascontiguousarray(self.table, dtype=dtype)
        self._tables[dtype] = tab
        return tab

    def decode(self, ids: np.ndarray) -> list[np.ndarray]:
        """Per-mode coordinates (int64) of the keys with the given ids.

        >>> ks, ids = group_keys([np.array([1, 0, 1]), np.array([2, 0, 2])], (2, 3))
        >>> [c.tolist() for c in ks.decode(ids)]
        [[1, 0, 1], [2, 0, 2]]
        """
        ids = np.asarray(ids, dtype=np.int64)
        if self.table is not None:
            return [row[ids] for row in self.table]
        if len(self.sizes) == 1:  # a one-mode direct key is its own coordinate
            return [ids]
        if self.n_ids <= 4 * ids.size:  # a gather from a decoded table beats a divmod per id
            return [row[ids] for row in self._direct_table]
        return self._divmod(ids)

    @cached_property
    def _direct_table(self) -> list[np.ndarray]:
        """Every id's coordinates ``[n_modes][n_ids]`` in the smallest index dtype (direct regime)."""
        from flexsparse._util import index_dtype_for

        idt = index_dtype_for(self.sizes)
        return [c.astype(idt) for c in self._divmod(np.arange(self.n_ids, dtype=np.int64))]

    def _divmod(self, ids: np.ndarray) -> list[np.ndarray]:
        out = []
        rest = ids
        for s in reversed(self.sizes):
            rest, c = np.divmod(rest, s)
            out.append(c)
        return out[::-1]


def _linear(cols: list[np.ndarray], sizes: tuple[int, ...], n: int) -> np.ndarray:
    lin = np.zeros(n, dtype=np.int64)
    for c, s in zip(cols, sizes):
        lin *= s
        lin += c
    return lin


def is_direct(space: int, n: int, floor: int = 2**20) -> bool:
    """Whether a key of ``space`` cells over ``n`` coordinates takes the ``direct`` regime.

    ``floor``: spaces up to this size are direct whatever ``n`` (fast for small spaces); the
    bounded-memory path passes 0, as every id costs it charged bytes.
    """
    return space <= max(4 * n, floor)


def group_keys(cols: list[np.ndarray], sizes: tuple[int, ...], n: int | None = None, floor: int = 2**20
               ) -> tuple[KeySpace, np.ndarray]:
    """Assign each coordinate tuple ``(cols[0][t], cols[1][t], ...)`` a compact id.

    Args:
        cols: per-mode coordinate arrays of equal length n (possibly empty list: one key).
        sizes: the modes' extents.
        n: number of coordinates (needed only when ``cols`` is empty).
        floor: see :func:`is_direct`.

    Returns:
        ``(keyspace, ids)`` with ``ids: int64 [n]`` in ``[0, keyspace.n_ids)``.

    >>> ks, ids = group_keys([np.array([5, 2, 5])], (10**12,))
    >>> ks.regime, ids.tolist(), ks.n_ids
    ('unique', [1, 0, 1], 2)
    """
    sizes = tuple(int(s) for s in sizes)
    if not cols:
        return KeySpace((), 1, "direct", None), np.zeros(n or 0, dtype=np.int64)
    n = len(cols[0])
    total = math.prod(sizes)
    if fits_int64(*sizes) and all(fits_int64(s) for s in sizes):
        if len(cols) == 1:
            lin = cols[0].astype(np.int64, copy=False)
        else:
            lin = _linear(cols, sizes, n)
        if is_direct(total, n, floor):
            return KeySpace(sizes, total, "direct", None), lin
        uniq, inv = np.unique(lin, return_inverse=True)
        table = np.empty((len(sizes), len(uniq)), dtype=np.int64)
        rest = uniq
        for m in range(len(sizes) - 1, -1, -1):
            rest, table[m] = np.divmod(rest, sizes[m])
        return KeySpace(sizes, len(uniq), "unique", table), inv.astype(np.int64, copy=False).reshape(-1)
    # Index space beyond int64: rank the tuples by a lexicographic sort over the modes.
    order = np.lexsort(tuple(c for c in reversed(cols)))
    if n == 0:
        return KeySpace(sizes, 0, "lexsort", np.zeros((len(cols), 0), np.int64)), np.zeros(0, np.int64)
    srt = [c[order] for c in cols]
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for c in srt:
        new[1:] |= c[1:] != c[:-1]
    rank_sorted = np.cumsum(new) - 1
    ids = np.empty(n, dtype=np.int64)
    ids[order] = rank_sorted
    table = np.stack([c[new].astype(np.int64) for c in srt])
    return KeySpace(sizes, int(rank_sorted[-1]) + 1, "lexsort", table), ids


def split_groups(cols_a: list[np.ndarray], cols_b: list[np.ndarray], sizes: tuple[int, ...],
                 na: int, nb: int, floor: int = 2**20) -> tuple[KeySpace, np.ndarray, np.ndarray]:
    """Joint ids for the same key appearing in two operands (the contracted modes).

    >>> ks, ia, ib = split_groups([np.array([7, 3])], [np.array([3, 9])], (10**19,), 2, 2)
    >>> ia.tolist(), ib.tolist(), ks.n_ids
    ([1, 0], [0, 2], 3)
    """
    if not cols_a:
        return KeySpace((), 1, "direct", None), np.zeros(na, np.int64), np.zeros(nb, np.int64)
    joint = [np.concatenate([a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)])
             for a, b in zip(cols_a, cols_b)]
    ks, ids = group_keys(joint, sizes, floor=floor)
    return ks, ids[:na], ids[na:]


# ---------------------------------------------------------------------- from coordinate arrays
def group_modes(coords: np.ndarray, modes: list[int], sizes: tuple[int, ...]
                ) -> tuple[KeySpace, np.ndarray]:
    """Assign each coordinate tuple ``coords[modes, t]`` a compact id (see the module docstring).

    Args:
        coords: ``[ndim, n]`` integer coordinates (a COO's ``coords``).
        modes: the rows of ``coords`` that form the key (possibly empty: one key).
        sizes: the extents of those modes.

    Returns:
        ``(keyspace, ids)``: integer ``ids [n]`` in ``[0, keyspace.n_ids)`` (the coordinates' own
        row for a one-mode direct key, int32 ranks when they fit, else int64).

    >>> ks, ids = group_modes(np.array([[5, 2, 5]]), [0], (10**12,))
    >>> ks.regime, ids.tolist(), ks.n_ids
    ('unique', [1, 0, 1], 2)
    """
    from flexsparse.kernels.cpu import grouping

    sizes = tuple(int(s) for s in sizes)
    n = coords.shape[1]
    if not modes:
        return KeySpace((), 1, "direct", None), np.zeros(n, dtype=np.int64)
    if not fits_int64(*sizes):
        return group_keys([coords[m] for m in modes], sizes, n)
    total = math.prod(sizes)
    if is_direct(total, n):
        if len(modes) == 1:
            return KeySpace(sizes, total, "direct", None), coords[modes[0]]
        return KeySpace(sizes, total, "direct", None), grouping.linear_key(coords, modes, sizes)
    (ids,), keys, n_ids = grouping.rank_coords([(coords, list(modes))], sizes, True)
    table = np.empty((len(sizes), n_ids), dtype=np.int64)
    grouping.decode_table_kernel(keys, np.asarray(sizes, dtype=np.int64), table)
    return KeySpace(sizes, n_ids, "unique", table), ids


def split_modes(coords_a: np.ndarray, modes_a: list[int], coords_b: np.ndarray, modes_b: list[int],
                sizes: tuple[int, ...]) -> tuple[KeySpace, np.ndarray, np.ndarray]:
    """Joint ids of the key ``coords_a[modes_a]`` / ``coords_b[modes_b]`` (the contracted modes).

    The ids are never decoded, so ``unique`` keys keep no table. The same coordinates and
    modes on both sides (``X x X``) are grouped once and share one id array.

    >>> ks, ia, ib = split_modes(np.array([[7, 3]]), [0], np.array([[3, 9]]), [0], (10**18,))
    >>> ia.tolist(), ib.tolist(), ks.n_ids
    ([1, 0], [0, 2], 3)
    """
    from flexsparse.kernels.cpu import grouping

    sizes = tuple(int(s) for s in sizes)
    na, nb = coords_a.shape[1], coords_b.shape[1]
    if not modes_a:
        return KeySpace((), 1, "direct", None), np.zeros(na, np.int64), np.zeros(nb, np.int64)
    same = coords_a is coords_b and list(modes_a) == list(modes_b)
    if not fits_int64(*sizes):
        if same:
            ks, ids = group_keys([coords_a[m] for m in modes_a], sizes, na)
            return ks, ids, ids
        return split_groups([coords_a[m] for m in modes_a], [coords_b[m] for m in modes_b], sizes, na, nb)
    total = math.prod(sizes)
    if is_direct(total, na if same else na + nb):
        ks = KeySpace(sizes, total, "direct", None)
        if same:
            ids = coords_a[modes_a[0]] if len(modes_a) == 1 else grouping.linear_key(coords_a, modes_a, sizes)
            return ks, ids, ids
        if len(modes_a) == 1:
            return ks, coords_a[modes_a[0]], coords_b[modes_b[0]]
        return ks, grouping.linear_key(coords_a, modes_a, sizes), grouping.linear_key(coords_b, modes_b, sizes)
    parts = [(coords_a, list(modes_a))] if same else [(coords_a, list(modes_a)), (coords_b, list(modes_b))]
    ids, _, n_ids = grouping.rank_coords(parts, sizes, False)
    ks = KeySpace(sizes, n_ids, "unique", None)
    return (ks, ids[0], ids[0]) if same else (ks, ids[0], ids[1])
