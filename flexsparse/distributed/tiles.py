"""Tiles of one distributed ``C[m, n] = A[m, k] @ B[k, n]``: sized by a strategy, balanced by work.

Algorithm (no arrays are touched here beyond the count arrays of the statistics):

1. The registered tiling strategy (:mod:`flexsparse.tiling.strategies`; ``overbook`` by
   default) plans a uniform grid against the *tile budget* (a worker's memory share,
   :func:`flexsparse.distributed.cluster.tile_budget`). Its column panels and contracted-id
   windows are kept as they are; its row size gives the number of row tiles memory needs.
2. Rows are re-cut into ranges of equal estimated work (``flops + nnzA`` per row, exact
   counts), at least :data:`~flexsparse._limits.TILES_PER_THREAD` per worker thread when the
   product is large enough (:data:`~flexsparse._limits.MIN_TILE_FLOPS` per tile; the caller
   may cap them, ``max_balance_tiles``, and weight the first of two, ``first_weight``): on
   power-law matrices a uniform row size leaves one tile with the hubs and most of the work. A block
   still above :data:`~flexsparse._limits.HUB_SPLIT_FACTOR` times the mean block's work (a hub
   row, which no row cut splits) is cut into column sub-panels of about the mean work (its
   multiply-adds assumed even over its columns); the worker cuts them from its panel's copy.
3. Every tile's working set is predicted with the formula of
   :mod:`flexsparse.tiling.workingset` (output = sampled output/flops ratio x exact flops);
   a tile predicted over the budget runs on its worker with the bounded kernel (Tailors
   absorption), the others with the fast SpGEMM.
4. A *group* is one (row range, column panel) block of the output; its tiles over the
   contracted-id windows are partial sums, added by a binary tree of tasks. Blocks without
   a multiply-add (the off-diagonal blocks of a batch product, empty rows) get no group.
   Groups are assigned to workers by longest-processing-time first on their work.

:func:`rows_from_stats` gives the same per-row arrays from :class:`OperandStats` sketches
alone (for :func:`flexsparse.distributed.plan` at paper scale).

Cost: O(m + nnzA) for the counts (the strategy's own sampling cost aside), O(T log W) for
the assignment of T groups to W workers.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from flexsparse import _limits

__all__ = ["ProductPlan", "TileSpec", "assign_lpt", "balanced_bounds", "build_plan"]


@dataclass(frozen=True)
class TileSpec:
    """One task: output rows ``[r0, r1)``, contracted ids ``[k0, k1)``, columns ``[c0, c1)``.

    Attributes:
        tile: index of the tile (in :attr:`ProductPlan.tiles`).
        group: index of the output block it contributes to.
        flops: estimated multiply-adds (exact for one id window).
        nnz_a: entries of its A block.
        predicted_ws: predicted working set (bytes).
        bounded: run with the bounded kernel (the prediction exceeds the budget).
    """

    tile: int
    group: int
    r0: int
    r1: int
    k0: int
    k1: int
    c0: int
    c1: int
    flops: float
    nnz_a: float
    predicted_ws: float
    bounded: bool

    def describe(self) -> str:
        return f"tile {self.tile} (rows {self.r0}:{self.r1}, ids {self.k0}:{self.k1}, columns {self.c0}:{self.c1})"


@dataclass(frozen=True)
class ProductPlan:
    """The tiles of one product and where they run.

    Attributes:
        shape: ``(m, k, n)``.
        strategy: the strategy that sized the grid.
        limit: the tile budget (bytes) the tiles were planned against.
        strategy_tiles: tiles of the strategy's uniform grid.
        row_bounds, k_bounds, col_bounds: cut points of the three dimensions.
        tiles: every tile, groups in order, id windows innermost.
        worker_of_group: the worker index each group is assigned to.
        n_workers: workers planned for.
        ratio: output entries per multiply-add (sampled).
        a_bytes, b_bytes: bytes of A's blocks and B's panels.
        out_bytes: predicted bytes of the output pieces per group.
    """

    shape: tuple[int, int, int]
    strategy: str
    limit: int
    strategy_tiles: int
    row_bounds: tuple[int, ...]
    k_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    tiles: tuple[TileSpec, ...]
    worker_of_group: tuple[int, ...]
    n_workers: int
    ratio: float
    a_bytes: tuple[float, ...] = field(default=())
    b_panel_bytes: float = 0.0
    out_bytes: tuple[float, ...] = field(default=())

    @property
    def n_groups(self) -> int:
        return len(self.worker_of_group)

    @property
    def n_k(self) -> int:
        return max(1, len(self.k_bounds) - 1)

    @property
    def n_tasks(self) -> int:
        """Tasks of the graph: one per tile plus ``n_k - 1`` additions per group."""
        return len(self.tiles) + self.n_groups * (self.n_k - 1)

    def group_tiles(self, g: int) -> tuple[TileSpec, ...]:
        return self.tiles[g * self.n_k:(g + 1) * self.n_k]

    def work_per_worker(self) -> np.ndarray:
        """Estimated multiply-adds + A entries assigned to each worker."""
        work = np.zeros(self.n_workers)
        for t in self.tiles:
            work[self.worker_of_group[t.group]] += t.flops + t.nnz_a
        return work

    @property
    def balance(self) -> float:
        """Busiest worker's work over the mean (1.0 = perfect balance)."""
        w = self.work_per_worker()
        return float(w.max() / w.mean()) if w.size and w.mean() > 0 else 1.0

    def bytes_to_worker(self) -> np.ndarray:
        """Bytes sent to each worker: its A blocks plus every B panel (replicated)."""
        out = np.full(self.n_workers, self.b_panel_bytes, dtype=float)
        for g, w in enumerate(self.worker_of_group):
            out[w] += self.a_bytes[g] if self.a_bytes else 0.0
        return out

    def bytes_from_worker(self) -> np.ndarray:
        """Predicted bytes of output pieces each worker sends back (or writes)."""
        out = np.zeros(self.n_workers, dtype=float)
        for g, w in enumerate(self.worker_of_group):
            out[w] += self.out_bytes[g] if self.out_bytes else 0.0
        return out


def balanced_bounds(work: np.ndarray, n_parts: int) -> np.ndarray:
    """Cut points ``[0, ..., len(work)]`` of at most ``n_parts`` ranges of about equal work.

    A row heavier than a share becomes a range of its own; empty ranges are dropped.

    >>> balanced_bounds(np.array([1, 1, 1, 1, 8, 1, 1, 1, 1]), 3).tolist()
    [0, 4, 5, 9]
    """
    m = int(work.shape[0])
    if m == 0:
        return np.array([0, 0], dtype=np.int64)
    n_parts = max(1, min(int(n_parts), m))
    cum = np.cumsum(work, dtype=np.float64)
    total = cum[-1]
    if total <= 0:
        return np.unique(np.linspace(0, m, n_parts + 1).astype(np.int64))
    share = total / n_parts
    targets = share * np.arange(1, n_parts)
    idx = np.minimum(np.searchsorted(cum, targets, side="left"), m - 1)
    before = np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)
    # the cut nearest each target, before or after the row that crosses it; a row heavier than
    # a share (a hub) gets cuts on both sides, so it forms a range of its own
    nearest = np.where(cum[idx] - targets < targets - before, idx + 1, idx)
    hub = work[idx] > share
    cuts = np.concatenate([nearest, idx[hub], idx[hub] + 1])
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, m), [m]]).astype(np.int64))
    return bounds


def assign_lpt(work: np.ndarray, n_workers: int) -> np.ndarray:
    """Worker of each item: longest processing time first onto the least loaded worker.

    >>> assign_lpt(np.array([5.0, 4.0, 3.0, 3.0]), 2).tolist()
    [0, 1, 1, 0]
    """
    heap = [(0.0, w) for w in range(max(1, n_workers))]
    out = np.zeros(len(work), dtype=np.int64)
    for i in np.argsort(-np.asarray(work, dtype=float), kind="stable"):
        load, w = heapq.heappop(heap)
        out[i] = w
        heapq.heappush(heap, (load + float(work[i]), w))
    return out


def build_plan(*, shape: tuple[int, int, int], strategy: str, limit: int, strategy_tiles: int,
               row_size: int, k_bounds: np.ndarray, col_bounds: np.ndarray,
               flops_rows: np.ndarray, nnz_a_rows: np.ndarray, nnz_b_panels: np.ndarray,
               ratio: float, elem: int, value_bytes: int, n_workers: int, threads: int,
               ptr_bytes: int = 8, max_balance_tiles: int | None = None,
               first_weight: float = 1.0) -> ProductPlan:
    """The balanced, assigned tiles of one product from per-row counts.

    Args:
        shape: ``(m, k, n)``.
        row_size: the strategy's rows per tile (memory).
        k_bounds, col_bounds: cut points of the id windows and column panels.
        flops_rows: ``[m, n_panels]`` multiply-adds of each row in each column panel.
        nnz_a_rows: ``[m]`` entries of each A row (spread evenly over the id windows).
        nnz_b_panels: ``[n_k, n_panels]`` entries of B in each (id window, panel).
        ratio: output entries per multiply-add.
        elem, value_bytes, ptr_bytes: the byte model of the output.
        max_balance_tiles: at most this many row ranges for balance (memory may still ask more).
        first_weight: when the rows are cut in two, the first range's work counts this many
            times (its kernel writes rows down, moving each row once more: :mod:`._direct`).
    """
    m, k, n = shape
    n_c = max(1, len(col_bounds) - 1)
    n_k = max(1, len(k_bounds) - 1)
    work_rows = flops_rows.sum(axis=1) + nnz_a_rows if m else np.zeros(0)
    total_flops = float(flops_rows.sum())
    n_mem = -(-m // max(1, row_size)) if m else 1
    n_bal = max(1, min(_limits.TILES_PER_THREAD * max(1, threads),
                       int(total_flops // _limits.MIN_TILE_FLOPS)) // (n_c * n_k))
    if max_balance_tiles is not None:
        n_bal = max(1, min(n_bal, int(max_balance_tiles)))
    row_bounds = balanced_bounds(work_rows, max(n_mem, n_bal)) if m else np.array([0, 0])
    if len(row_bounds) == 3 and first_weight != 1.0:   # cut where first_weight * first = second
        cum = np.cumsum(work_rows, dtype=np.float64)
        cut = int(np.searchsorted(cum, cum[-1] / (1.0 + first_weight), side="left")) + 1
        if 0 < cut < m:
            row_bounds = np.array([0, cut, m], dtype=np.int64)
    cs_flops = np.vstack([np.zeros((1, n_c)), np.cumsum(flops_rows, axis=0)]) if m else np.zeros((1, n_c))
    cs_a = np.concatenate([[0.0], np.cumsum(nnz_a_rows, dtype=np.float64)])
    block_fl = np.diff(cs_flops[row_bounds], axis=0) if m else np.zeros((0, n_c))   # [ranges, n_c]
    block_na = np.diff(cs_a[row_bounds]) if m else np.zeros(0)
    busy = block_fl > 0
    mean_work = float(((block_fl + block_na[:, None]) * busy).sum() / max(1, int(busy.sum())))
    tiles: list[TileSpec] = []
    group_work, a_bytes, out_bytes = [], [], []
    g = 0
    for ci in range(n_c):
        c0, c1 = int(col_bounds[ci]), int(col_bounds[ci + 1])
        for ri in range(len(row_bounds) - 1):
            r0, r1 = int(row_bounds[ri]), int(row_bounds[ri + 1])
            fl, na = float(block_fl[ri, ci]), float(block_na[ri])
            if fl <= 0:      # no multiply-add lands in this block: no output, no task
                continue
            # a block far above the mean (a hub row, which row cuts cannot split) is cut into
            # column sub-panels, multiply-adds assumed even over its columns
            parts = 1
            if fl + na > _limits.HUB_SPLIT_FACTOR * mean_work and c1 - c0 > 1:
                parts = int(min(c1 - c0, math.ceil((fl + na) / mean_work)))
            cuts = np.unique(np.linspace(c0, c1, parts + 1).astype(np.int64))
            for s0, s1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                frac = (s1 - s0) / (c1 - c0)
                w = 0.0
                for ki in range(n_k):
                    k0, k1 = int(k_bounds[ki]), int(k_bounds[ki + 1])
                    f_t, na_t = fl * frac / n_k, na / n_k
                    nb = min(f_t, float(nnz_b_panels[ki, ci]) * frac)
                    ws = ((s1 - s0) * (value_bytes + 8) + (k1 - k0) * 8 + 3 * ptr_bytes
                          + 2 * ptr_bytes * (r1 - r0) + ptr_bytes * min(na_t, k1 - k0)
                          + (na_t + nb + ratio * f_t) * elem)
                    tiles.append(TileSpec(len(tiles), g, r0, r1, k0, k1, s0, s1, f_t, na_t, ws, ws > limit))
                    w += f_t + na_t
                group_work.append(w)
                a_bytes.append(na * elem + 8 * (r1 - r0 + 1) * n_k)
                out_bytes.append(ratio * fl * frac * elem + 8 * (r1 - r0 + 1))
                g += 1
    if max_balance_tiles is not None and len(group_work) <= n_workers:
        # one block per worker, in row order: the same worker takes the same block on every run
        # of a product (LPT by work would swap the two when a new cut flips which is larger, and
        # each worker would then write the result pages the other faulted in: 11-40 thousand page
        # faults, 20-37 ms of system time per block, R-MAT scale 15 on 2 workers)
        worker = np.arange(len(group_work), dtype=np.int64)
    else:
        worker = assign_lpt(np.asarray(group_work), n_workers)
    b_bytes = float(nnz_b_panels.sum()) * elem + 8 * (k + 1) * n_c
    return ProductPlan(shape, strategy, int(limit), int(strategy_tiles), tuple(int(x) for x in row_bounds),
                       tuple(int(x) for x in k_bounds), tuple(int(x) for x in col_bounds), tuple(tiles),
                       tuple(int(x) for x in worker), int(n_workers), float(ratio), tuple(a_bytes),
                       b_bytes, tuple(out_bytes))


def uniform_bounds(extent: int, size: int) -> np.ndarray:
    """Cut points of ``[0, extent)`` in steps of ``size`` (``[0, 0]`` for an empty extent).

    >>> uniform_bounds(10, 4).tolist()
    [0, 4, 8, 10]
    """
    if extent <= 0:
        return np.array([0, 0], dtype=np.int64)
    return np.append(np.arange(0, extent, max(1, size), dtype=np.int64), extent)


def check_task_count(n_tiles: int, strategy: str) -> None:
    """Refuse grids with more tiles than a scheduler handles well (a clear, early error)."""
    if n_tiles > _limits.MAX_DISTRIBUTED_TILES:
        raise ValueError(f"the {strategy!r} strategy cuts this product into {n_tiles:,} tiles, more than "
                         f"{_limits.MAX_DISTRIBUTED_TILES:,} tasks; raise worker_memory or use "
                         f"tiling='overbook'")
