"""Dense loop-nest analysis: tile sizes, fills, reads, updates and multicast per level.

Algorithm (Timeloop's semantics, computed in closed form per loop rather than by visiting
every iteration):

* The tile of storage level ``l`` for a data-space is the box the problem projection gives to
  all loops of levels ``<= l``; its size is the product of the per-rank extents
  (``sum(coef * (extent - 1)) + 1``).
* Fills of level ``l - 1`` (accesses to ``l`` on its behalf) are the *deltas* of ``l - 1``'s
  tile over the temporal loops above it, per instance. Timeloop evaluates a loop of bound
  ``n`` by running iteration 0 and one representative iteration weighted ``n - 1``; the
  tile moves by a translation vector, and the delta is the set difference with the previous
  tile when the translation repeats the previous one (or follows a reset), and the whole tile
  when the translation changes ("reset on stride change"). This walk is evaluated
  recursively over the loops, memoised on (loop, relative state), so its cost is a handful
  of states per loop instead of one step per iteration.
* A spatial fanout at level ``l`` compares the deltas of its children: children whose tiles
  differ by a zero translation receive the same data, which is read once and multicast.
  Reads of ``l`` count one per multicast group.
* Bypassed levels pass their children's demand up to the next level that keeps the
  data-space, rescaled by that level's multicast pattern; read-write data-spaces elide the
  first read of each element (``reads = accesses - partition size``); the outermost level has
  no fills.

Cost: ``O(levels * data-spaces * loops)`` memoised recursion steps plus one ``np.unique`` over
the spatial children of each fanout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flexsparse.model.sparseloop.mapping import TIME, Mapping
from flexsparse.model.sparseloop.spec import Arch, Problem

__all__ = ["DenseTile", "NestResult", "analyze"]


@dataclass
class DenseTile:
    """Per (data-space, storage level) dense statistics, per instance of the level."""

    size: int                     # tile shape (elements)
    keep: bool
    partition_size: float = 0.0
    stats: dict[int, float] = field(default_factory=dict)   # multicast factor -> accesses (content)
    fanout: int = 1
    replication: int = 1          # utilized instances of this level
    x_expansion: int = 1
    y_expansion: int = 1
    content_accesses: float = 0.0
    parent_access_share: float = 0.0
    reads: float = 0.0
    fills: float = 0.0
    updates: float = 0.0
    temporal_reductions: float = 0.0
    box: tuple[int, ...] = ()     # per-rank extents of the tile
    max_x: float = 0.0            # utilized X / Y expansion after spatial skipping
    max_y: float = 0.0
    avg_replication: float = 0.0  # average utilized instances after sparse effects
    passthrough: float = 0.0      # accesses of a bypassed but streamed data-space
    raw_stats: dict[int, float] = field(default_factory=dict)   # stats before bypass handling

    @property
    def weighted(self) -> float:
        """Accesses times multicast factor (what all children receive)."""
        return sum(m * a for m, a in self.stats.items())

    @property
    def total(self) -> float:
        """Accesses counting each multicast once."""
        return sum(self.stats.values())


@dataclass
class NestResult:
    """Dense analysis of one mapping."""

    tiles: list[list[DenseTile]]          # [data-space][level]
    macs_per_instance: float              # temporal iterations per compute instance
    compute_replication: int              # utilized compute instances
    compute_x: int
    compute_y: int
    op_extents: list[list[int]]           # [level] operation-space box per level (tile of loops <= level)

    @property
    def algorithmic_computes(self) -> float:
        """All MACs of the problem."""
        return self.macs_per_instance * self.compute_replication


def _box_at(mapping: Mapping, upto: int, ndim: int) -> list[int]:
    ext = [1] * ndim
    for lp in mapping.nest[: upto + 1]:
        ext[lp.dim] *= lp.end
    return ext


def _delta_total(ds, tile_ext: tuple[int, ...], loops: list[tuple[tuple[int, ...], int]]) -> float:
    """Weighted sum of deltas of a tile of per-rank extents ``tile_ext`` over ``loops``.

    ``loops`` lists (translation vector in data-space coordinates, bound), outermost first.
    """
    size = math.prod(tile_ext)
    nrank = len(tile_ext)
    zero = (0,) * nrank
    memo: dict = {}

    def leaf(state):
        rel_prev, trans = state
        if rel_prev is None:
            return float(size), (zero, None)
        tau = tuple(-x for x in rel_prev)
        if trans is None or tau == trans:
            overlap = 1
            for e, t in zip(tile_ext, tau):
                overlap *= max(0, e - abs(t))
            return float(size - overlap), (zero, tau if trans is None else trans)
        return float(size), (zero, None)

    def walk(k, state):
        key = (k, state)
        if key in memo:
            return memo[key]
        if k == len(loops):
            res = leaf(state)
        else:
            t, n = loops[k]
            d0, s0 = walk(k + 1, state)
            if n <= 1:
                res = (d0, s0)
            else:
                rel, tr = s0
                s0b = (None if rel is None else tuple(a - b for a, b in zip(rel, t)), tr)
                d1, s1 = walk(k + 1, s0b)
                rel1, tr1 = s1
                out = (None if rel1 is None else tuple(a + b for a, b in zip(rel1, t)), tr1)
                res = (d0 + (n - 1) * d1, out)
        memo[key] = res
        return res

    return walk(0, (None, None))[0]


def _multicast_groups(translations: list[tuple[tuple[int, ...], int]]) -> dict[int, int]:
    """{group size: number of groups} for children at sum_s i_s * t_s, i_s < n_s."""
    if not translations:
        return {1: 1}
    nr = len(translations[0][0])
    grids = np.meshgrid(*[np.arange(n) for _, n in translations], indexing="ij")
    pos = np.zeros((grids[0].size, nr), dtype=np.int64)
    for (t, _), g in zip(translations, grids):
        pos += np.outer(g.ravel(), np.asarray(t, dtype=np.int64))
    if not pos.any():
        return {pos.shape[0]: 1}
    _, counts = np.unique(pos, axis=0, return_counts=True)
    sizes, groups = np.unique(counts, return_counts=True)
    return {int(s): int(g) for s, g in zip(sizes, groups)}


def analyze(problem: Problem, arch: Arch, mapping: Mapping) -> NestResult:
    """Dense per-level, per-data-space statistics of ``mapping``."""
    nest, bnd = mapping.nest, mapping.boundary
    nlv, ndim = len(arch.storage), len(problem.dims)
    # Vector stride of each loop: product of inner loops' bounds of the same dimension.
    stride, seen = [], [1] * ndim
    for lp in nest:
        stride.append(seen[lp.dim])
        seen[lp.dim] *= lp.end
    op_ext = [_box_at(mapping, bnd[lv], ndim) for lv in range(nlv)]
    temporal_total = math.prod(lp.end for lp in nest if lp.spatial == TIME)
    spatial_above = []          # utilized instances of each level: spatial loops of levels above
    xy_above = []
    for lv in range(nlv):
        sp = [lp for lp in nest[bnd[lv] + 1:] if lp.spatial != TIME]
        spatial_above.append(math.prod(lp.end for lp in sp))
        xy_above.append((math.prod(lp.end for lp in sp if lp.spatial == 1),
                         math.prod(lp.end for lp in sp if lp.spatial == 2)))
    comp_sp = [lp for lp in nest if lp.spatial != TIME]
    comp_repl = math.prod(lp.end for lp in comp_sp)
    comp_x = math.prod(lp.end for lp in comp_sp if lp.spatial == 1)
    comp_y = math.prod(lp.end for lp in comp_sp if lp.spatial == 2)

    tiles: list[list[DenseTile]] = []
    for pv, ds in enumerate(problem.dataspaces):
        row = []
        for lv in range(nlv):
            box = ds.extents(op_ext[lv])
            t = DenseTile(size=math.prod(box), keep=mapping.keep[lv][pv], box=box,
                          replication=spatial_above[lv], x_expansion=xy_above[lv][0], y_expansion=xy_above[lv][1],
                          max_x=xy_above[lv][0], max_y=xy_above[lv][1], avg_replication=spatial_above[lv])
            lo = bnd[lv - 1] + 1 if lv > 0 else 0
            own = nest[lo: bnd[lv] + 1]
            fan = [lp for lp in own if lp.spatial != TIME]
            t.fanout = math.prod(lp.end for lp in fan)
            # Per-child demand over the whole run.
            if lv == 0:
                per_child = float(temporal_total)
            else:
                child_box = ds.extents(op_ext[lv - 1])
                above = [(ds.offset(_shift(lp.dim, stride[i], ndim)), lp.end)
                         for i, lp in enumerate(nest) if i > bnd[lv - 1] and lp.spatial == TIME]
                per_child = _delta_total(ds, child_box, above[::-1])
            if fan:
                idx0 = lo
                trans = [(ds.offset(_shift(lp.dim, stride[idx0 + j], ndim)), lp.end) for j, lp in enumerate(fan)]
                groups = _multicast_groups(trans)
                t.stats = {m: per_child * g for m, g in groups.items()}
            else:
                t.stats = {1: per_child}
            t.raw_stats = dict(t.stats)
            row.append(t)
        tiles.append(row)
        _collapse(row, ds.read_write, mapping, nest, bnd, op_ext, ds, [mapping.stream[lv][pv] if mapping.stream
                                                                         else False for lv in range(nlv)])
    return NestResult(tiles, float(temporal_total), comp_repl, comp_x, comp_y, op_ext)


def _shift(dim: int, amount: int, ndim: int) -> list[int]:
    v = [0] * ndim
    v[dim] = amount
    return v


def _collapse(row: list[DenseTile], rw: bool, mapping: Mapping, nest, bnd, op_ext, ds, stream) -> None:
    """Partition sizes, parent shares, bypass, and reads/fills/updates (Timeloop's tiling step)."""
    nlv = len(row)
    for t in row:
        t.content_accesses = t.total
    # Partition size: distinct elements one instance holds over the run.
    part = row[-1].size
    row[-1].partition_size = part
    for lv in range(nlv - 2, -1, -1):
        lo = bnd[lv] + 1
        fan = [lp for lp in nest[lo: bnd[lv + 1] + 1] if lp.spatial != TIME]
        if fan:
            ext = _box_at(mapping, lo + len(fan) - 1, len(op_ext[0]))
            pfd = ds.size(ext)
        else:
            pfd = row[lv].size
        if pfd:
            part = (part * row[lv].size) // pfd
        row[lv].partition_size = part
    for lv in range(nlv - 1):
        outer = row[lv + 1]
        row[lv].parent_access_share = outer.weighted / outer.fanout if outer.fanout else 0.0
    # Bypass: a level that does not keep the data-space hands its children's demand upwards.
    for lv in range(nlv):
        t = row[lv]
        if t.keep or t.size == 0:
            continue
        outer = next((j for j in range(lv + 1, nlv) if row[j].size), None)
        if outer is None:
            _zero(t)
            break
        if stream[lv]:
            t.passthrough = t.content_accesses
        o = row[outer]
        w = o.weighted
        if w > 0:
            ctf = t.content_accesses * o.fanout / w
            o.stats = {m: a * ctf for m, a in o.stats.items()}
        o.content_accesses = o.total
        _zero(t)
    for lv in range(nlv - 1, -1, -1):
        if not row[lv].keep:
            _zero(row[lv])
        else:
            row[lv].parent_access_share = 0.0
            break
    for t in row:
        if t.size == 0:
            t.reads = t.updates = t.fills = t.temporal_reductions = 0.0
            if t.passthrough:
                # Streamed through: every element is written on its way in and read on its way out.
                t.reads = t.fills = round(t.passthrough)
                if rw:
                    t.updates = t.temporal_reductions = t.reads
            continue
        if rw:
            t.reads = round(t.content_accesses - t.partition_size)
            t.temporal_reductions = t.reads
            t.updates = round(t.content_accesses)
            t.fills = t.parent_access_share
        else:
            t.reads = round(t.content_accesses)
            t.updates = 0.0
            t.fills = t.parent_access_share


def _zero(t: DenseTile) -> None:
    t.size = 0
    t.partition_size = 0
    t.content_accesses = 0.0
    t.parent_access_share = 0.0
    t.stats = {}
