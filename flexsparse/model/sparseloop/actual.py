"""Exact statistics from actual-data tensors (the ``actual-data`` density model).

With statistical density models, a condition tile is empty independently of the target and of
the other operands. With the real tensors this independence is false (zeros cluster by channel,
by pixel, by graph community), so the probabilities that decide gating, skipping and effectual
computes are counted on the data instead:

* ``saf_probabilities``: the operation space is cut into blocks of the condition tile's shape;
  a target access is ineffectual when some condition tensor's projection of its block is
  empty. The *local* probability (reads saved at the level) counts the target's stored
  elements, i.e. nonzeros when the target is compressed there; the *propagated* probability
  (work removed below, and computes) counts every block once.
* ``joint_nonzero``: how many computes have both operands nonzero, only one, or neither,
  among the computes left by the storage-level skipping (each filter: an operand's condition
  tile is nonempty), from per-index marginals along the dimension the operands share.

Both are sums over blocks of products of per-block tensors, valid when every rank of the tensors
involved is a single dimension with coefficient 1 (GEMMs, 1x1 convolutions). Dense masks use
``np.einsum``; tensors given by coordinates (too large for a mask) use the contraction of their
marginals over the one dimension all of them share (the GEMM's K), with complements taken
exactly. Other shapes fall back to the independent model. Cost: one pass over the nonzeros (or
the mask) per block shape, plus one contraction (linear in the blocks when the factors share one
dimension, an optimised einsum path otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["joint_nonzero", "saf_probabilities", "simple_dims"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def simple_dims(ds, bounds: list[int]) -> Optional[list[int]]:
    """Dimension of each rank when every rank is one dimension with coefficient 1 (terms over
    dimensions of bound 1 ignored), else None."""
    out = []
    for rank in ds.ranks:
        live = [(c, d) for c, d in rank if bounds[d] > 1 and c != 0]
        if not live:
            out.append(rank[0][1])
        elif len(live) == 1 and live[0][0] == 1:
            out.append(live[0][1])
        else:
            return None
    return out


@dataclass
class _Factor:
    """A per-block tensor over problem dimensions ``dims`` of a block grid.

    Either ``dense`` (ndarray over the grid of its dims) or sparse (``coords`` per dim and
    ``values`` of the nonzero blocks, everything else ``fill``); ``complement`` means 1 - tensor.
    """

    dims: list[int]
    grid: tuple[int, ...]
    dense: Optional[np.ndarray] = None
    coords: Optional[np.ndarray] = None
    values: Optional[np.ndarray] = None
    complement: bool = False
    const: Optional[float] = None        # every block holds this value (no array needed)

    def as_dense(self) -> Optional[np.ndarray]:
        if self.dense is not None:
            return 1.0 - self.dense if self.complement else self.dense
        if math.prod(self.grid) > (1 << 24):
            return None
        t = np.zeros(self.grid)
        t[tuple(self.coords)] = self.values
        return 1.0 - t if self.complement else t

    def marginal(self, dim: int) -> np.ndarray:
        """Sum over every other dimension, as a function of block index along ``dim``."""
        ax = self.dims.index(dim)
        others = math.prod(g for i, g in enumerate(self.grid) if i != ax)
        if self.dense is not None:
            t = 1.0 - self.dense if self.complement else self.dense
            return t.sum(axis=tuple(i for i in range(t.ndim) if i != ax))
        m = np.bincount(self.coords[ax], weights=self.values, minlength=self.grid[ax])
        return others - m if self.complement else m


def _factor(density, dims: list[int], blk: list[int], indicator: bool) -> _Factor:
    box = [max(1, blk[d]) for d in dims]
    coords, counts, grid = density.block_counts(tuple(box))
    vals = np.ones(counts.size) if indicator else counts.astype(np.float64)
    if math.prod(grid) <= (1 << 24):
        t = np.zeros(grid)
        t[tuple(coords)] = vals
        return _Factor(dims, grid, dense=t)
    return _Factor(dims, grid, coords=coords, values=vals)


def _contract(factors: list[_Factor], nblocks: list[int]) -> Optional[float]:
    """Sum over all blocks of the product of the factors (free dimensions multiply).

    When the factors share exactly one dimension and are otherwise disjoint (a GEMM's K), the sum
    factorises into the product of their marginals along it: O(blocks of each factor). Otherwise
    the dense tensors are contracted with an optimised ``np.einsum`` path."""
    scalar = math.prod(f.const for f in factors if f.const is not None)
    factors = [f for f in factors if f.const is None]
    used = sorted({d for f in factors for d in f.dims})
    free = math.prod(nblocks[d] for d in range(len(nblocks)) if d not in used) * scalar
    if not factors:
        return float(free)
    if len(factors) == 1:
        f = factors[0]
        return float(f.marginal(f.dims[0]).sum()) * free
    shared = set(factors[0].dims)
    for f in factors[1:]:
        shared &= set(f.dims)
    others = [set(f.dims) - shared for f in factors]
    if len(shared) == 1 and not any(a & b for i, a in enumerate(others) for b in others[i + 1:]):
        (k,) = shared
        prod = np.ones(nblocks[k])
        for f in factors:
            prod = prod * f.marginal(k)
        return float(prod.sum()) * free
    if not all(f.dense is not None or math.prod(f.grid) <= (1 << 24) for f in factors):
        return None
    dense = [f.as_dense() for f in factors]
    subs = ",".join("".join(_LETTERS[d] for d in f.dims) for f in factors)
    return float(np.einsum(subs + "->", *dense, optimize="greedy")) * free


def saf_probabilities(st, target: int, target_level: int, conds: list[int], blk: list[int],
                      cond_exts: dict[int, list[int]]) -> Optional[tuple[float, float]]:
    """(local, propagated) ineffectual-access probabilities counted on the data, or None when the
    projections are not simple or no condition tensor has actual data."""
    from flexsparse.model.sparseloop.density import ActualData
    problem = st.problem
    bounds = problem.bounds
    if not any(isinstance(problem.densities[c], ActualData) for c in conds):
        return None
    tds = problem.dataspaces[target]
    tdims = simple_dims(tds, bounds)
    if tdims is None or any(simple_dims(problem.dataspaces[c], bounds) is None for c in conds):
        return None
    nblocks = [max(1, math.ceil(bounds[d] / max(1, blk[d]))) for d in range(len(bounds))]
    tgrid = tuple(nblocks[d] for d in tdims)
    info = st.reps.get((target, target_level))
    tden = problem.densities[target]
    if info is not None and info.has_metadata and info.fmt.compressed and isinstance(tden, ActualData):
        w = _factor(tden, tdims, blk, indicator=False)
    else:
        size = float(tds.size([min(blk[d], bounds[d]) for d in range(len(bounds))]))
        w = _Factor(tdims, tgrid, const=size)
    ones = _Factor(tdims, tgrid, const=1.0)
    factors, scale = [], 1.0
    for c in conds:
        cd, cds = problem.densities[c], problem.dataspaces[c]
        cdims = simple_dims(cds, bounds)
        if not isinstance(cd, ActualData):
            scale *= 1 - st.p_empty(c, cond_exts.get(c, blk))
            continue
        ext = cond_exts.get(c, blk)
        if any(ext[d] != blk[d] for d in cdims):
            return None                           # condition box coarser than the block: not exact here
        factors.append(_factor(cd, cdims, blk, indicator=True))
    num, den = _contract([w] + factors, nblocks), _contract([w], nblocks)
    num_u, den_u = _contract([ones] + factors, nblocks), _contract([ones], nblocks)
    if None in (num, den, num_u, den_u):
        return None
    local = 1 - num * scale / den if den else 0.0
    prop = 1 - num_u * scale / den_u if den_u else 0.0
    return local, prop


def _side_marginal(density, dims: list[int], k: int, bounds: list[int], nonzero: bool,
                   boxes: list[list[int]]) -> Optional[np.ndarray]:
    """Per index along dimension ``k``: elements of one operand that are nonzero (``nonzero``) or
    zero, counting only elements whose tiles of every shape in ``boxes`` are nonempty."""
    ext = [bounds[d] for d in dims]
    ax = dims.index(k)
    if nonzero:                                  # a nonzero element lies in nonempty tiles of any shape
        return np.bincount(density.coords[ax], minlength=ext[ax]).astype(np.float64)
    if len(boxes) > 1:
        return None
    if not boxes:                                # every zero element
        others = math.prod(e for i, e in enumerate(ext) if i != ax)
        return others - np.bincount(density.coords[ax], minlength=ext[ax]).astype(np.float64)
    box = [max(1, min(int(boxes[0][d]), bounds[d])) for d in dims]
    blocks, _counts, _grid = density.block_counts(tuple(box))
    # Elements of each nonempty tile off dimension k (edge tiles are clipped).
    size = np.ones(blocks.shape[1])
    for i, (b, e) in enumerate(zip(box, ext)):
        if i != ax:
            size = size * np.minimum(b, e - blocks[i] * b)
    per_block_k = np.bincount(blocks[ax], weights=size, minlength=-(-ext[ax] // box[ax]))
    inside = np.repeat(per_block_k, box[ax])[: ext[ax]]
    return inside - np.bincount(density.coords[ax], minlength=ext[ax]).astype(np.float64)


def joint_nonzero(st, a: int, b: int, filters: list[tuple[int, list[int]]]
                  ) -> Optional[dict[tuple[bool, bool], float]]:
    """Fractions of computes with (A nonzero, B nonzero), among computes that pass ``filters``
    (each a data-space and its condition tile: the compute survives when that tile is nonempty),
    and under ``"computes"`` the number of computes that pass them;
    None unless both operands have actual data, simple projections sharing one dimension, and
    every filter is on an operand."""
    from flexsparse.model.sparseloop.density import ActualData
    problem = st.problem
    bounds = problem.bounds
    if not all(isinstance(problem.densities[x], ActualData) for x in (a, b)):
        return None
    da, db = simple_dims(problem.dataspaces[a], bounds), simple_dims(problem.dataspaces[b], bounds)
    if da is None or db is None or any(f not in (a, b) for f, _ in filters):
        return None
    if len(set(da)) != len(da) or len(set(db)) != len(db):
        return None
    shared = {d for d in set(da) & set(db) if bounds[d] > 1}     # dimensions of bound 1 do not couple
    if len(shared) > 1:
        return None
    free = math.prod(bounds[d] for d in range(len(bounds)) if d not in set(da) | set(db))
    boxes = {x: [list(e) for f, e in filters if f == x] for x in (a, b)}
    out, total = {}, 0.0
    for za in (True, False):
        for zb in (True, False):
            # Along the shared dimension, or (outer products) each side's total.
            ka = next(iter(shared)) if shared else da[0]
            kb = next(iter(shared)) if shared else db[0]
            ma = _side_marginal(problem.densities[a], da, ka, bounds, za, boxes[a])
            mb = _side_marginal(problem.densities[b], db, kb, bounds, zb, boxes[b])
            if ma is None or mb is None:
                return None
            v = (float(np.dot(ma, mb)) if shared else float(ma.sum()) * float(mb.sum())) * free
            out[(za, zb)] = v
            total += v
    if not total:
        return None
    res: dict = {key: v / total for key, v in out.items()}
    res["computes"] = total          # computes that pass the filters, counted on the data
    return res
