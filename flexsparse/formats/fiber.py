"""CSF: compressed sparse fiber tensors (a tree of per-mode fibers) in any mode order.

Layout for ``d = ndim`` and mode order ``(m_0, ..., m_{d-1})`` (a permutation of the
modes; level ``l`` stores mode ``m_l``). Let ``n_l`` be the number of distinct
coordinate prefixes ``(i_{m_0}, ..., i_{m_l})`` -- the nodes of level ``l`` -- with
``n_{-1} = 1`` (the root) and ``n_{d-1} = nnz``. Then, enforced by :meth:`CSF.validate`::

    fptr[l]: [n_{l-1} + 1]  int64, fptr[l][0] = 0, fptr[l][-1] = n_l, strictly increasing
                            (children of node p of level l-1 are nodes fptr[l][p]:fptr[l][p+1])
    fids[l]: [n_l]          index_dtype_for(shape); coordinate in mode m_l of each node,
                            strictly increasing inside each fiber
    values:  [nnz]          numeric, one per leaf (level d-1)

A 0-D tensor has no levels and ``values: [nnz <= 1]``. The last level's fibers --
``(fids[d-1], values)`` segmented by ``fptr[d-1]`` -- are what a dot-product engine
intersects; :meth:`CSF.last_mode_fibers` returns them with the coordinates of the
leading modes (a CSR over the flattened leading modes, the FLAASH operand format).

Cost: :meth:`from_coo` sorts once (O(d * nnz log nnz), no linear key) and builds every
level with vectorised run detection (O(d * nnz)); :meth:`to_coo` expands the tree in
O(d * nnz). Memory: ``sum_l (n_{l-1} + 1) * 8 + n_l * itemsize`` bytes of index
metadata -- less than COO's ``d * nnz * itemsize`` when leading modes repeat.

>>> import numpy as np
>>> from flexsparse.formats.coo import COO
>>> t = COO([[0, 0, 1], [1, 2, 0]], [1.0, 2.0, 3.0], shape=(2, 3))
>>> c = CSF.from_coo(t)
>>> [p.tolist() for p in c.fptr], [f.tolist() for f in c.fids]
([[0, 2], [0, 2, 3]], [[0, 1], [1, 2, 0]])
>>> np.array_equal(c.todense(), t.todense())
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flexsparse._util import check_numeric_dtype, index_dtype_for
from flexsparse.formats.base import SparseArray
from flexsparse.formats.coo import COO, normalize_shape

__all__ = ["CSF", "LastModeFibers"]


class LastModeFibers(tuple):
    """``(fiber_ptr, leading_coords, last_idx, values)`` of a CSF's last level.

    ``fiber_ptr: [n_f + 1]`` int64, ``leading_coords: [d-1, n_f]`` (coordinates of modes
    ``m_0..m_{d-2}`` of each fiber, in mode order), ``last_idx: [nnz]`` (mode ``m_{d-1}``),
    ``values: [nnz]``. Fiber ``f`` holds entries ``fiber_ptr[f]:fiber_ptr[f+1]``.
    """

    __slots__ = ()

    def __new__(cls, fiber_ptr, leading_coords, last_idx, values):
        return super().__new__(cls, (fiber_ptr, leading_coords, last_idx, values))

    fiber_ptr = property(lambda self: self[0])
    leading_coords = property(lambda self: self[1])
    last_idx = property(lambda self: self[2])
    values = property(lambda self: self[3])


class CSF(SparseArray):
    """Compressed sparse fiber tensor; see the module docstring for the layout.

    Build with :meth:`CSF.from_coo`; the raw constructor takes the arrays and validates.

    Args:
        fptr: ``d`` pointer arrays (``fptr[l]: [n_{l-1} + 1]``).
        fids: ``d`` coordinate arrays (``fids[l]: [n_l]``).
        values: ``[nnz]`` numeric values.
        shape: extents in the ORIGINAL mode numbering.
        mode_order: level-to-mode permutation (default ``0..d-1``).
    """

    format = "csf"

    def __init__(self, fptr: Sequence, fids: Sequence, values, shape, mode_order=None):
        self.shape = normalize_shape(shape)
        d = len(self.shape)
        self.mode_order = tuple(range(d)) if mode_order is None else tuple(int(m) for m in mode_order)
        idt = index_dtype_for(self.shape)
        self.fptr = [np.asarray(p, dtype=np.int64) for p in fptr]
        self.fids = [np.asarray(f).astype(idt, copy=False) for f in fids]
        self.values = np.asarray(values)
        self.validate()

    # ------------------------------------------------------------------ layout
    def validate(self) -> None:
        """Enforce the layout formulas of the module docstring; raise ValueError/TypeError."""
        d = len(self.shape)
        if sorted(self.mode_order) != list(range(d)):
            raise ValueError(f"mode_order {self.mode_order} is not a permutation of range({d})")
        if len(self.fptr) != d or len(self.fids) != d:
            raise ValueError(f"need {d} fptr and fids arrays for shape {self.shape}, got "
                             f"{len(self.fptr)} and {len(self.fids)}")
        check_numeric_dtype(self.values.dtype, "values")
        if self.values.ndim != 1:
            raise ValueError(f"values must be 1-D [nnz], got shape {self.values.shape}")
        if d == 0:
            if self.values.shape[0] > 1:
                raise ValueError(f"a 0-D CSF holds at most one value, got {self.values.shape[0]}")
            return
        n_prev = 1
        for lvl in range(d):
            p, f = self.fptr[lvl], self.fids[lvl]
            mode = self.mode_order[lvl]
            if p.ndim != 1 or p.shape[0] != n_prev + 1:
                raise ValueError(f"fptr[{lvl}] must have shape [{n_prev + 1}], got {p.shape}")
            n_l = f.shape[0]
            if f.ndim != 1:
                raise ValueError(f"fids[{lvl}] must be 1-D, got shape {f.shape}")
            if p[0] != 0 or p[-1] != n_l:
                raise ValueError(f"fptr[{lvl}] must start at 0 and end at len(fids[{lvl}]) = {n_l}, "
                                 f"got {int(p[0])} .. {int(p[-1])}")
            # Empty fibers are only legal for the root of an empty tensor.
            steps = np.diff(p)
            if (steps < 0).any() or (lvl > 0 and (steps == 0).any()):
                raise ValueError(f"fptr[{lvl}] must be strictly increasing (no empty fibers)")
            if n_l:
                if f.min() < 0 or int(f.max()) >= self.shape[mode]:
                    bad = int(f[(f < 0) | (f >= self.shape[mode])][0])
                    raise ValueError(f"fids[{lvl}] has coordinate {bad} out of bounds for mode {mode} "
                                     f"with extent {self.shape[mode]}")
                # strictly increasing within a fiber: every non-fiber-start step must increase
                inner = np.ones(n_l, dtype=bool)
                inner[p[:-1][p[:-1] < n_l]] = False
                if (f[1:][inner[1:]] <= f[:-1][inner[1:]]).any():
                    raise ValueError(f"fids[{lvl}] is not strictly increasing inside a fiber")
            n_prev = n_l
        if self.values.shape[0] != n_prev:
            raise ValueError(f"values must have shape [nnz={n_prev}], got {self.values.shape}")

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of values plus all ``fptr``/``fids`` index arrays."""
        return int(self.values.nbytes + sum(p.nbytes for p in self.fptr) + sum(f.nbytes for f in self.fids))

    def _repr_extra(self) -> str:
        return f"mode_order={self.mode_order}"

    def _data(self) -> np.ndarray:
        return self.values

    def _with_data(self, data: np.ndarray) -> CSF:
        return CSF(self.fptr, self.fids, data, self.shape, self.mode_order)

    def _like(self, coo: COO) -> CSF:
        return CSF.from_coo(coo, self.mode_order if coo.ndim == self.ndim else None)

    def transpose(self, axes: Sequence[int] | None = None) -> CSF:
        """Permuted modes, sharing every array: only ``shape`` and ``mode_order`` change (O(ndim)).

        >>> t = CSF.from_coo(COO([[0, 1], [2, 0]], [1.0, 2.0], shape=(2, 3)))
        >>> t.T.shape, t.T.mode_order, t.T.todense().tolist() == t.todense().T.tolist()
        ((3, 2), (1, 0), True)
        """
        d = self.ndim
        axes = tuple(range(d))[::-1] if axes is None else tuple(int(a) for a in axes)
        if len(axes) != d or sorted(a % d for a in axes) != list(range(d)) or \
                any(not -d <= a < d for a in axes):
            raise ValueError(f"axes {axes} is not a permutation of the {d} modes of shape {self.shape}")
        axes = tuple(a % d for a in axes)
        return CSF(self.fptr, self.fids, self.values, tuple(self.shape[a] for a in axes),
                   tuple(axes.index(m) for m in self.mode_order))

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_coo(cls, coo: COO, mode_order: Sequence[int] | None = None) -> CSF:
        """Build a CSF with levels in ``mode_order`` (duplicates summed).

        >>> t = COO([[0, 1, 1], [2, 0, 2]], [1, 2, 3], shape=(2, 3))
        >>> c = CSF.from_coo(t, mode_order=(1, 0))
        >>> [f.tolist() for f in c.fids], c.values.tolist()
        ([[0, 2], [1, 0, 1]], [2, 1, 3])
        """
        if not isinstance(coo, COO):
            raise TypeError(f"CSF.from_coo expects a COO, got {type(coo).__name__}")
        d = coo.ndim
        order = tuple(range(d)) if mode_order is None else tuple(int(m) for m in mode_order)
        if sorted(order) != list(range(d)):
            raise ValueError(f"mode_order {order} is not a permutation of the {d} modes of shape {coo.shape}")
        # Permute so that level l is mode order[l], then canonicalise in that order.
        perm = coo.transpose(order).sum_duplicates() if d else coo.sum_duplicates()
        c, vals, nnz = perm.coords, perm.data, perm.nnz
        if d == 0:
            return cls([], [], vals, coo.shape, order)
        fptr, fids = [], []
        new_node = np.zeros(nnz, dtype=bool)  # True where a level-l prefix starts
        prev_starts = np.zeros(1, dtype=np.int64)  # root: one node starting at leaf 0
        for lvl in range(d):
            row = c[lvl]
            if nnz:
                new_node[0] = True
                new_node[1:] |= row[1:] != row[:-1]
            starts = np.flatnonzero(new_node)
            # index of each leaf's level-l node; parents start where their first child starts
            node_of = np.cumsum(new_node, dtype=np.int64) - 1
            if not nnz:  # empty tensor: the root has no children, deeper levels have no parents
                ptr = np.zeros(2 if lvl == 0 else 1, dtype=np.int64)
            else:
                ptr = np.empty(prev_starts.shape[0] + 1, dtype=np.int64)
                ptr[:-1] = node_of[prev_starts]
                ptr[-1] = starts.shape[0]
            fptr.append(ptr)
            fids.append(row[starts])
            prev_starts = starts
        return cls(fptr, fids, vals, coo.shape, order)

    def _leaf_coords(self) -> np.ndarray:
        """Coordinates ``[d, nnz]`` of every leaf, in LEVEL order."""
        d, nnz = self.ndim, self.nnz
        out = np.empty((d, nnz), dtype=index_dtype_for(self.shape))
        node = np.arange(nnz, dtype=np.int64)  # leaf's node index at the current level
        for lvl in range(d - 1, -1, -1):
            out[lvl] = self.fids[lvl][node]
            if lvl:
                # parent of node k of level lvl: the p with fptr[lvl][p] <= k < fptr[lvl][p+1]
                parent = np.repeat(np.arange(self.fptr[lvl].shape[0] - 1, dtype=np.int64),
                                   np.diff(self.fptr[lvl]))
                node = parent[node]
        return out

    def to_coo(self) -> COO:
        """COO in the original mode numbering (canonical when mode_order is the identity)."""
        lvl_coords = self._leaf_coords()
        coords = np.empty_like(lvl_coords)
        for lvl, mode in enumerate(self.mode_order):
            coords[mode] = lvl_coords[lvl]
        identity = self.mode_order == tuple(range(self.ndim))
        return COO(coords, self.values, self.shape, canonical=True if identity else None)

    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense array (size-guarded like :meth:`COO.todense`)."""
        return self.to_coo().todense(max_bytes=max_bytes)

    def last_mode_fibers(self) -> LastModeFibers:
        """The last level as a CSR over the flattened leading modes (FLAASH operand).

        Returns ``LastModeFibers(fiber_ptr [n_f+1], leading_coords [d-1, n_f], last_idx [nnz],
        values [nnz])``; ``n_f`` is the number of non-empty last-mode fibers.

        >>> t = COO([[0, 0, 1], [0, 1, 1], [3, 1, 2]], [1.0, 2.0, 3.0], shape=(2, 2, 4))
        >>> f = CSF.from_coo(t).last_mode_fibers()
        >>> f.fiber_ptr.tolist(), f.leading_coords.tolist(), f.last_idx.tolist()
        ([0, 1, 2, 3], [[0, 0, 1], [0, 1, 1]], [3, 1, 2])
        """
        d = self.ndim
        if d == 0:
            raise ValueError("a 0-D CSF has no fibers")
        n_f = self.fptr[d - 1].shape[0] - 1
        lead = np.empty((d - 1, n_f), dtype=index_dtype_for(self.shape))
        node = np.arange(n_f, dtype=np.int64)
        for lvl in range(d - 2, -1, -1):
            lead[lvl] = self.fids[lvl][node]
            if lvl:
                parent = np.repeat(np.arange(self.fptr[lvl].shape[0] - 1, dtype=np.int64),
                                   np.diff(self.fptr[lvl]))
                node = parent[node]
        return LastModeFibers(self.fptr[d - 1], lead, self.fids[d - 1], self.values)
