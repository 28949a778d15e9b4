"""Compact ids for multi-mode coordinate keys, without a linearised key that could overflow.

The executor matricises every pairwise contraction: the coordinates of a group of modes
(say A's free modes ``(i, j)``) become one row id. Three regimes, chosen per key:

* ``direct``: the key's index space ``prod(sizes)`` is small (<= ``max(4 * n, 2**20)``): the
  row-major linear index is itself the id (no sort; ids are in lexicographic key order);
* ``unique``: the space fits int64 but is large: ids = ranks of the distinct linear keys,
  from a bitmap over the space or an LSD radix sort (:mod:`flexsparse.kernels.cpu.grouping`);
  the id space shrinks to the keys that occur;
* ``lexsort``: ``prod(sizes)`` fails :func:`flexsparse._limits.fits_int64` (FROSTT Flickr,
  ~1e22 cells): rank the key tuples with
  ``np.lexsort`` over the modes, never forming a linear key.

In every regime ids increase with the lexicographic order of the key tuples, so sorted ids
decode to canonically sorted coordinates. Keys are read straight from a COO's
``[ndim, nnz]`` coordinate array (any integer dtype; no per-mode int64 copies).
Cost: O(k * n) for ``direct``, O(k * n + n * ceil(bits / 11)) (radix) or
O(k * n + space / 64) (bitmap) for ``unique``, O(k * n log n) for ``lexsort``, for n
coordinates of k modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flexsparse._limits import fits_int64

__all__ = ["KeySpace", "group_keys", "split_groups"]



@dataclass(frozen=True, eq=False)
class KeySpace:
    """Decoder from compact ids back to per-mode coordinates.

    Attributes:
        sizes: extent of each mode of the key.
        n_ids: number of ids (the matricised dimension's size).
        regime: ``"direct"``, ``"unique"`` or ``"lexsort"``.
        table: for ``unique``, ``int64 [n_ids]`` linear key of every id (``None`` for the
            contracted keys of :func:`split_groups`, which are never decoded); for ``lexsort``,
            ``[n_modes, n_ids]`` coordinates of every id; ``None`` for ``direct``
            (:attr:`id_table` gives coordinates in every regime).
    """

    sizes: tuple[int, ...]
    n_ids: int
    regime: str
    table: np.ndarray | None
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    def decode(self, ids: np.ndarray) -> list[np.ndarray]:
        """Per-mode coordinates of the keys with the given ids.

        >>> ks, ids = group_keys(np.array([[1, 0, 1], [2, 0, 2]]), [0, 1], (2, 3))
        >>> [c.tolist() for c in ks.decode(ids)]
        [[1, 0, 1], [2, 0, 2]]
        """
        ids = np.asarray(ids, dtype=np.int64)
        if not self.sizes:
            return []
        if self.regime == "lexsort":
            return [row[ids] for row in self.table]
        if len(self.sizes) == 1 and self.regime == "direct":  # a one-mode direct key is its own coordinate
            return [ids]
        tab = self.coord_table(np.dtype(np.int64))
        return [row[ids] for row in tab]

    @property
    def id_table(self) -> np.ndarray | None:
        """``int64 [n_modes, n_ids]`` coordinates of every id, or ``None`` when ids are
        row-major linear keys over ``sizes`` (the ``direct`` regime)."""
        return None if self.regime == "direct" else self.coord_table(np.dtype(np.int64))

    def coord_table(self, dtype: np.dtype) -> np.ndarray:
        """``[n_modes, n_ids]`` coordinates of every id in ``dtype`` (computed once per dtype)."""
        dtype = np.dtype(dtype)
        tab = self._tables.get(dtype)
        if tab is not None:
            return tab
        from flexsparse.kernels.cpu import grouping

        k = len(self.sizes)
        if self.regime == "unique" and self.table is None:
            raise ValueError("this key space keeps no table of its keys (a contracted key): it cannot be decoded")
        if self.regime == "lexsort":
            tab = np.ascontiguousarray(self.table, dtype=dtype)
        else:
            tab = np.empty((k, self.n_ids), dtype=dtype)
            sizes = np.asarray(self.sizes, dtype=np.int64)
            if self.n_ids and k:
                if self.regime == "direct":
                    grouping.decode_direct_kernel(sizes, 1 << 16, tab)
                else:
                    grouping.decode_table_kernel(self.table, sizes, tab)
        self._tables[dtype] = tab
        return tab


def _direct_limit(n: int) -> int:
    return max(4 * n, 2**20)


def group_keys(coords: np.ndarray, modes: list[int], sizes: tuple[int, ...]
               ) -> tuple[KeySpace, np.ndarray]:
    """Assign each coordinate tuple ``coords[modes, t]`` a compact id.

    Args:
        coords: ``[ndim, n]`` integer coordinates (a COO's ``coords``).
        modes: the rows of ``coords`` that form the key (possibly empty: one key).
        sizes: the extents of those modes.

    Returns:
        ``(keyspace, ids)`` with integer ``ids [n]`` in ``[0, keyspace.n_ids)`` (int64, or the
        coordinates' own row for a one-mode direct key).

    >>> ks, ids = group_keys(np.array([[5, 2, 5]]), [0], (10**12,))
    >>> ks.regime, ids.tolist(), ks.n_ids
    ('unique', [1, 0, 1], 2)
    """
    from flexsparse.kernels.cpu import grouping

    sizes = tuple(int(s) for s in sizes)
    n = coords.shape[1]
    if not modes:
        return KeySpace((), 1, "direct", None), np.zeros(n, dtype=np.int64)
    total = math.prod(sizes)
    if fits_int64(*sizes):
        if total <= _direct_limit(n):
            if len(modes) == 1:
                return KeySpace(sizes, total, "direct", None), coords[modes[0]]
            return KeySpace(sizes, total, "direct", None), grouping.linear_key(coords, modes, sizes)
        (ids,), uniq, n_ids = grouping.rank_coords([(coords, list(modes))], sizes, True)
        return KeySpace(sizes, n_ids, "unique", uniq), ids
    return _lexsort_keys([coords[m] for m in modes], sizes, n)


def _lexsort_keys(cols: list[np.ndarray], sizes: tuple[int, ...], n: int) -> tuple[KeySpace, np.ndarray]:
    """Index space beyond int64: rank the tuples by a lexicographic sort over the modes."""
    if n == 0:
        return KeySpace(sizes, 0, "lexsort", np.zeros((len(cols), 0), np.int64)), np.zeros(0, np.int64)
    order = np.lexsort(tuple(c for c in reversed(cols)))
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


def split_groups(coords_a: np.ndarray, modes_a: list[int], coords_b: np.ndarray, modes_b: list[int],
                 sizes: tuple[int, ...]) -> tuple[KeySpace, np.ndarray, np.ndarray]:
    """Joint ids for the same key appearing in two operands (the contracted modes).

    The same coordinates and modes on both sides (``X x X``) are grouped once.

    >>> ks, ia, ib = split_groups(np.array([[7, 3]]), [0], np.array([[3, 9]]), [0], (10**19,))
    >>> ia.tolist(), ib.tolist(), ks.n_ids
    ([1, 0], [0, 2], 3)
    """
    from flexsparse.kernels.cpu import grouping

    sizes = tuple(int(s) for s in sizes)
    na, nb = coords_a.shape[1], coords_b.shape[1]
    if not modes_a:
        return KeySpace((), 1, "direct", None), np.zeros(na, np.int64), np.zeros(nb, np.int64)
    if coords_a is coords_b and list(modes_a) == list(modes_b):
        if fits_int64(*sizes) and math.prod(sizes) > _direct_limit(na):
            (ids,), _, n_ids = grouping.rank_coords([(coords_a, list(modes_a))], sizes, False)
            return KeySpace(sizes, n_ids, "unique", None), ids, ids
        ks, ids = group_keys(coords_a, modes_a, sizes)
        return ks, ids, ids
    total = math.prod(sizes)
    if fits_int64(*sizes):
        if total <= _direct_limit(na + nb):
            ks = KeySpace(sizes, total, "direct", None)
            if len(modes_a) == 1:
                return ks, coords_a[modes_a[0]], coords_b[modes_b[0]]
            return ks, grouping.linear_key(coords_a, modes_a, sizes), grouping.linear_key(coords_b, modes_b, sizes)
        # contracted keys are never decoded: no table of distinct keys
        (ia, ib), _, n_ids = grouping.rank_coords([(coords_a, list(modes_a)), (coords_b, list(modes_b))],
                                                  sizes, False)
        return KeySpace(sizes, n_ids, "unique", None), ia, ib
    joint = [np.concatenate([coords_a[ma].astype(np.int64, copy=False), coords_b[mb].astype(np.int64, copy=False)])
             for ma, mb in zip(modes_a, modes_b)]
    ks, ids = _lexsort_keys(joint, sizes, na + nb)
    return ks, ids[:na], ids[na:]
