"""Compact ids for multi-mode coordinate keys, without a linearised key that could overflow.

The executor matricises every pairwise contraction: the coordinates of a group of modes
(say A's free modes ``(i, j)``) become one row id. Three regimes, chosen per key:

* ``direct``: the key's index space ``prod(sizes)`` is small (<= ``max(4 * n, 2**20)``): the
  row-major linear index is itself the id (no sort; ids are in lexicographic key order);
* ``unique``: the space fits int64 but is large: ids = ranks of the distinct linear keys
  (``np.unique``, O(n log n)); the id space shrinks to the keys that occur;
* ``lexsort``: ``prod(sizes)`` fails :func:`flexsparse._limits.fits_int64` (FROSTT Flickr,
  ~1e22 cells): rank the key tuples with
  ``np.lexsort`` over the modes, never forming a linear key.

In every regime ids increase with the lexicographic order of the key tuples, so sorted ids
decode to canonically sorted coordinates. Cost: O(k * n) for ``direct``, O(k * n log n) else,
for n coordinates of k modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from flexsparse._limits import fits_int64

__all__ = ["KeySpace", "group_keys", "is_direct", "split_groups"]



@dataclass(frozen=True, eq=False)
class KeySpace:
    """Decoder from compact ids back to per-mode coordinates.

    Attributes:
        sizes: extent of each mode of the key.
        n_ids: number of ids (the matricised dimension's size).
        regime: ``"direct"``, ``"unique"`` or ``"lexsort"``.
        table: for ``unique``/``lexsort``, ``[n_modes, n_ids]`` coordinates of every id;
            ``None`` for ``direct``.
    """

    sizes: tuple[int, ...]
    n_ids: int
    regime: str
    table: np.ndarray | None

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
