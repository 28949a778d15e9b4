"""Exact statistics from actual-data masks (the ``actual-data`` density model).

With statistical density models, a condition tile is empty independently of the target and of
the other operands. With masks of the real tensors this independence is false (zeros cluster
by channel, by pixel), so the probabilities that decide gating, skipping and effectual computes
are counted on the data instead:

* ``saf_probabilities``: the operation space is cut into blocks of the condition tile's shape;
  a target access is ineffectual when some condition tensor's projection of its block is
  empty. The *local* probability (reads saved at the level) counts the target's stored
  elements, i.e. nonzeros when the target is compressed there; the *propagated* probability
  (work removed below, and computes) counts every block once.
* ``joint_nonzero``: how many computes have both operands nonzero, only one, or neither,
  optionally restricted to computes whose filter tensors are nonzero.

Both are tensor contractions of per-block nonzero counts (``np.einsum`` over the problem's
dimensions), valid when every rank of the tensors involved is a single dimension with
coefficient 1 (GEMMs and 1x1 convolutions); other projections fall back to the independent
model. Cost: one reshape-and-sum of each mask plus one ``einsum`` per query.
"""

from __future__ import annotations

import math
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


def _block_counts(density, ds, dims: list[int], blk: list[int], bounds: list[int]) -> np.ndarray:
    """Nonzeros of the tensor in each block (tensor indexed by block number per rank)."""
    t = density.tensor
    shape = []
    for r, d in enumerate(dims):
        b = max(1, min(blk[d], bounds[d]))
        if t.shape[r] % b:
            t = np.pad(t, [(0, (-t.shape[r]) % b) if i == r else (0, 0) for i in range(t.ndim)])
        shape += [t.shape[r] // b, b]
    return t.reshape(shape).sum(axis=tuple(range(1, 2 * len(dims), 2)))


def _contract(problem, tensors: list[tuple[np.ndarray, list[int]]], nblocks: list[int]) -> float:
    """Sum over all blocks of the product of per-dataspace tensors (broadcast over free dims)."""
    used: set[int] = set()
    ops, subs = [], []
    for arr, dims in tensors:
        # Merge repeated dimensions (a rank listed twice) by taking the diagonal.
        ops.append(arr.astype(np.float64))
        subs.append("".join(_LETTERS[d] for d in dims))
        used |= set(dims)
    total = float(np.einsum(",".join(subs) + "->", *ops)) if ops else 1.0
    free = math.prod(nblocks[d] for d in range(len(nblocks)) if d not in used)
    return total * free


def saf_probabilities(st, target: int, target_level: int, conds: list[int], blk: list[int],
                      cond_exts: dict[int, list[int]]) -> Optional[tuple[float, float]]:
    """(local, propagated) ineffectual-access probabilities counted on the masks, or None when
    the projections are not simple or no condition tensor has a mask."""
    from flexsparse.model.sparseloop.density import ActualData
    problem = st.problem
    if not any(isinstance(problem.densities[c], ActualData) for c in conds):
        return None
    tds = problem.dataspaces[target]
    tdims = simple_dims(tds, problem.bounds)
    if tdims is None or any(simple_dims(problem.dataspaces[c], problem.bounds) is None for c in conds):
        return None
    bounds = problem.bounds
    nblocks = [max(1, math.ceil(bounds[d] / max(1, blk[d]))) for d in range(len(bounds))]
    # Weight of a block: target elements stored for it.
    info = st.reps.get((target, target_level))
    tden = problem.densities[target]
    if info is not None and info.has_metadata and info.fmt.compressed and isinstance(tden, ActualData):
        w = _block_counts(tden, tds, tdims, blk, bounds).astype(np.float64)
    else:
        w = np.full([nblocks[d] for d in tdims], float(tds.size([min(blk[d], bounds[d]) for d in range(len(bounds))])))
    factors, scale = [], 1.0
    for c in conds:
        cd = problem.densities[c]
        cds = problem.dataspaces[c]
        if isinstance(cd, ActualData):
            cnt = _block_counts(cd, cds, simple_dims(cds, bounds), cond_exts.get(c, blk), bounds)
            # The condition box may be coarser than the block: repeat it over the blocks it covers.
            for r, d in enumerate(simple_dims(cds, bounds)):
                rep = nblocks[d] // cnt.shape[r] if cnt.shape[r] else 1
                if rep > 1:
                    cnt = np.repeat(cnt, rep, axis=r)
                cnt = cnt.take(np.arange(nblocks[d]), axis=r, mode="clip")
            factors.append(((cnt > 0).astype(np.float64), simple_dims(cds, bounds)))
        else:
            scale *= 1 - st.p_empty(c, cond_exts.get(c, blk))
    num = _contract(problem, [(w, tdims)] + factors, nblocks) * scale
    den = _contract(problem, [(w, tdims)], nblocks)
    ones = np.ones([nblocks[d] for d in tdims])
    num_u = _contract(problem, [(ones, tdims)] + factors, nblocks) * scale
    den_u = _contract(problem, [(ones, tdims)], nblocks)
    local = 1 - num / den if den else 0.0
    prop = 1 - num_u / den_u if den_u else 0.0
    return local, prop


def joint_nonzero(st, a: int, b: int, filters: list[int]) -> Optional[dict[tuple[bool, bool], float]]:
    """Fractions of computes with (A nonzero, B nonzero), among computes whose ``filters`` are
    nonzero; None unless both operands have masks and simple projections."""
    from flexsparse.model.sparseloop.density import ActualData
    problem = st.problem
    bounds = problem.bounds
    involved = [a, b] + [f for f in filters if f not in (a, b)]
    if not all(isinstance(problem.densities[x], ActualData) and simple_dims(problem.dataspaces[x], bounds) for x in involved):
        return None
    unit = [1] * len(bounds)
    nz = {x: ((_block_counts(problem.densities[x], problem.dataspaces[x], simple_dims(problem.dataspaces[x], bounds), unit,
                             bounds) > 0).astype(np.float64), simple_dims(problem.dataspaces[x], bounds)) for x in involved}
    filt = [nz[f] for f in filters if f not in (a, b)]
    need_a, need_b = a in filters, b in filters
    out = {}
    total = 0.0
    for za in (True, False):
        for zb in (True, False):
            if (need_a and not za) or (need_b and not zb):
                out[(za, zb)] = 0.0
                continue
            ta = nz[a] if za else (1 - nz[a][0], nz[a][1])
            tb = nz[b] if zb else (1 - nz[b][0], nz[b][1])
            out[(za, zb)] = _contract(problem, [ta, tb] + filt, bounds)
            total += out[(za, zb)]
    return {k: v / total for k, v in out.items()} if total else None
