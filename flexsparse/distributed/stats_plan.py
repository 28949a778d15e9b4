"""Plan a distributed contraction from statistics alone: tiles, traffic, balance, tasks.

:func:`plan` never touches an entry: operands are :class:`~flexsparse.contract.stats.OperandStats`
(or arrays, reduced to them first), so a contraction of a FROSTT tensor with 140M entries is
planned for a 64-worker cluster in well under a second on a laptop. :func:`powerlaw_stats`
builds the statistics of a published tensor from its shape and nnz (slice counts following
``rank ** -alpha``, the usual shape of FROSTT modes).

Algorithm, per pairwise step of the planner's path (:func:`flexsparse.contract.plan.plan_einsum`,
intermediates estimated by :func:`flexsparse.contract.cost.result_stats`) whose operands are
both sparse:

* the step is matricised as :func:`flexsparse.distributed.einsum` does (rows: batch + free
  indices of the left operand; ids: the contracted indices; columns: the right operand's);
  the slice-count sketch of the leading row index gives the per-row entries (one planning
  row per sketch bucket), the flops are spread in proportion (the cost model's independence
  assumption), the output per multiply-add is the cost model's ``nnz / flops``; a step whose
  two operands are the same array over the same modes (a self-contraction such as
  ``ijkl,mjkl->im``) is estimated with ``same_source`` (every entry meets at least itself:
  :func:`~flexsparse.contract.cost.estimate_pair`);
* the tile budget is :func:`~flexsparse.distributed.cluster.tile_budget` of ``worker_memory``
  after the resident operands; column panels and id windows follow the strategies' rule
  (accumulator <= 1/4 of the budget, id stamps <= 1/8), the row count what the working sets
  need, and rows are re-cut by work and assigned to workers exactly as at run time
  (:func:`flexsparse.distributed.tiles.build_plan`).

Cost: O(sum of sketch widths) per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from flexsparse._util import index_dtype_for, parse_bytes
from flexsparse.distributed.tiles import ProductPlan, build_plan

__all__ = ["DistributedPlan", "StepPlan", "pair_flops", "plan", "powerlaw_stats", "sparse_flops"]


@dataclass(frozen=True)
class StepPlan:
    """One sparse x sparse step: its estimates and its :class:`ProductPlan` of tiles."""

    lhs_indices: str
    rhs_indices: str
    out_indices: str
    matrix_shape: tuple[int, int, int]
    est_flops: float
    est_nnz: float
    tiles: ProductPlan


@dataclass(frozen=True)
class DistributedPlan:
    """What :func:`flexsparse.distributed.einsum` would run, per sparse x sparse step.

    Attributes:
        spec: the einsum subscripts.
        workers, threads_per_worker: the cluster planned for.
        worker_memory: each worker's memory limit (bytes).
        steps: the sparse x sparse steps (others run in the calling process).
    """

    spec: str
    workers: int
    threads_per_worker: int
    worker_memory: int
    steps: tuple[StepPlan, ...]

    @property
    def n_tiles(self) -> int:
        return sum(len(s.tiles.tiles) for s in self.steps)

    @property
    def n_tasks(self) -> int:
        """Tasks of every step: products, partial-sum additions (one write each with ``out=``)."""
        return sum(s.tiles.n_tasks for s in self.steps)

    def bytes_to_workers(self) -> np.ndarray:
        return sum((s.tiles.bytes_to_worker() for s in self.steps), np.zeros(self.workers))

    def bytes_from_workers(self) -> np.ndarray:
        return sum((s.tiles.bytes_from_worker() for s in self.steps), np.zeros(self.workers))

    @property
    def balance(self) -> float:
        """Busiest worker's estimated work over the mean, over all steps."""
        work = sum((s.tiles.work_per_worker() for s in self.steps), np.zeros(self.workers))
        return float(work.max() / work.mean()) if work.mean() > 0 else 1.0

    def __str__(self) -> str:
        def gb(x: float) -> str:
            return f"{x / 1e9:,.3f} GB"

        lines = [f"distributed plan of {self.spec!r}: {self.workers} workers x {self.threads_per_worker} "
                 f"thread(s), {gb(self.worker_memory)} each"]
        for n, s in enumerate(self.steps):
            t = s.tiles
            m, k, nn = s.matrix_shape
            lines.append(f"  step {n}: {s.lhs_indices},{s.rhs_indices}->{s.out_indices}  "
                         f"({m:,} x {k:,} x {nn:,} matricised, ~{s.est_flops:.3g} flops, ~{s.est_nnz:.3g} out)")
            lines.append(f"    tile budget {t.limit:,} B ({t.strategy}); tiles {len(t.tiles):,} "
                         f"({len(t.row_bounds) - 1} row ranges x {len(t.col_bounds) - 1} column panels x "
                         f"{t.n_k} id windows); bounded tiles {sum(x.bounded for x in t.tiles):,}; "
                         f"tasks {t.n_tasks:,}; balance {t.balance:.3f}")
        to, fr = self.bytes_to_workers(), self.bytes_from_workers()
        lines.append(f"  tiles {self.n_tiles:,}; tasks {self.n_tasks:,}; work balance (max/mean) {self.balance:.3f}")
        lines.append(f"  bytes to each worker   min {gb(to.min())}  mean {gb(to.mean())}  max {gb(to.max())}")
        lines.append(f"  bytes from each worker min {gb(fr.min())}  mean {gb(fr.mean())}  max {gb(fr.max())}")
        return "\n".join(lines)


def powerlaw_stats(indices: str, shape: tuple[int, ...], nnz: int, alpha: float = 1.0,
                   itemsize: int = 8) -> Any:
    """Statistics of a tensor with power-law slice counts, from its shape and nnz only.

    Mode ``x`` of extent ``n`` gets slice counts proportional to ``rank ** -alpha`` over its
    sketch width (folded modulo :data:`~flexsparse.contract.stats.SKETCH_WIDTH` beyond it, as
    measured sketches are), scaled to ``nnz``; non-empty slices ``min(n, nnz)``.

    >>> s = powerlaw_stats("ijkl", (532_924, 17_262_471, 2_480_308, 1_443), 140_126_181)
    >>> s.nnz, s.shape[1], round(float(s.slice_counts("l").sum()))
    (140126181, 17262471, 140126181)
    """
    from flexsparse.contract.parser import FrozenSizes
    from flexsparse.contract.stats import SKETCH_WIDTH, OperandStats, rows_per_bucket

    counts, distinct = {}, {}
    for x, n in zip(indices, shape):
        w = min(int(n), SKETCH_WIDTH)
        per_row = np.arange(1, int(n) + 1, dtype=np.float64) ** -float(alpha) if n <= SKETCH_WIDTH else None
        if per_row is None:
            # bucket b holds ranks b, b + w, ...: its mass ~ integral of rank**-alpha over them;
            # with the rows spread evenly, each bucket gets its share of the first w ranks'
            # weights plus an even share of the tail
            head = np.arange(1, w + 1, dtype=np.float64) ** -float(alpha)
            tail = (n ** (1 - alpha) - w ** (1 - alpha)) / (1 - alpha) if alpha != 1 else math.log(n / w)
            per_row = head + max(tail, 0.0) / w * (rows_per_bucket(int(n)) - 1) / max(1.0, (n / w) - 1)
        c = per_row / per_row.sum() * float(nnz)
        c.setflags(write=False)
        counts[x] = c
        distinct[x] = int(min(int(n), int(nnz)))
    return OperandStats(indices, tuple(int(s) for s in shape), int(nnz), False, int(itemsize),
                        FrozenSizes(distinct), counts, exact=False)


def _same_source(x: Any, y: Any) -> bool:
    """Whether two step operands are the same array over the same modes, each shared index on the
    same mode of it (``ijkl,mjkl``: every entry then meets itself)."""
    if x is None or y is None or x[0] != y[0]:
        return False
    (_, mx), (_, my) = x, y
    return sorted(mx.values()) == sorted(my.values()) and all(my[c] == m for c, m in mx.items() if c in my)


def _relabel(s: Any, letters: str) -> Any:
    from flexsparse.contract.parser import FrozenSizes

    if s.indices == letters:
        return s
    if len(letters) != len(s.indices):
        raise ValueError(f"statistics over {s.indices!r} cannot stand for an operand indexed {letters!r}")
    m = dict(zip(s.indices, letters))
    return replace(s, indices=letters, distinct=FrozenSizes({m[k]: v for k, v in s.distinct.items()}),
                   counts={m[k]: v for k, v in s.counts.items()})


def _step_tiles(x: Any, y: Any, out: str, est: Any, limit_of: Any, workers: int, threads: int,
                overbook: float) -> tuple[tuple[int, int, int], ProductPlan]:
    from flexsparse.contract.stats import rows_per_bucket

    batch = "".join(c for c in x.indices if c in y.indices and c in out)
    contr = "".join(c for c in x.indices if c in y.indices and c not in out)
    free_a = "".join(c for c in x.indices if c not in y.indices)
    free_b = "".join(c for c in y.indices if c not in x.indices)

    def eff(s: Any, letters: str) -> int:
        return int(max(1, min(s.nnz, math.prod(s.n_distinct(c) for c in letters)))) if letters else 1

    m = eff(x, batch + free_a)
    k = max(1, min(eff(x, batch + contr), eff(y, batch + contr)))
    n = eff(y, batch + free_b)
    lead = (batch + free_a)[:1]
    profile = np.asarray(x.slice_counts(lead), dtype=np.float64) if lead else np.array([float(x.nnz)])
    rows_in_bucket = rows_per_bucket(x.dim(lead)) * (m / x.dim(lead)) if lead else np.array([1.0])
    w = profile.shape[0]
    value_bytes = max(x.itemsize, y.itemsize)
    elem = value_bytes + index_dtype_for((n,)).itemsize
    resident = y.nnz * elem + 8 * (k + 1) + (x.nnz * elem + 8 * (m + 1)) / max(1, workers)
    limit = limit_of(resident)
    n_c = max(1, min(n, math.ceil(n * (value_bytes + 8) / max(1.0, limit / 4))))
    n_k = max(1, min(k, math.ceil(8 * k / max(1.0, limit / 8))))
    col_bounds = np.linspace(0, n, n_c + 1).astype(np.int64)
    k_bounds = np.linspace(0, k, n_k + 1).astype(np.int64)
    share = profile / max(1.0, float(x.nnz))
    flops_rows = np.repeat((est.flops * share)[:, None] / n_c, n_c, axis=1)
    ratio = est.nnz / est.flops if est.flops > 0 else 1.0
    fixed = (n / n_c) * (value_bytes + 8) + (k / n_k) * 8 + 24
    per_row = (16 * rows_in_bucket.mean() + (x.nnz / w + ratio * est.flops / w) * elem / (n_k * n_c))
    row_size = int(max(1, min(w, (limit - fixed) * (1 - overbook) // max(per_row, 1e-9))))
    nnz_b = np.full((n_k, n_c), float(y.nnz) / (n_k * n_c))
    tiles = build_plan(shape=(w, k, n), strategy="overbook (statistics)", limit=limit,
                       strategy_tiles=(-(-w // row_size)) * n_c * n_k, row_size=row_size,
                       k_bounds=k_bounds, col_bounds=col_bounds, flops_rows=flops_rows,
                       nnz_a_rows=profile, nnz_b_panels=nnz_b, ratio=ratio, elem=elem,
                       value_bytes=value_bytes, n_workers=workers, threads=workers * threads)
    return (m, k, n), tiles


def plan(subscripts: str, *operands: Any, workers: int = 64, worker_memory: int | str = "16GB",
         threads_per_worker: int = 1, tiling: str = "overbook", overbook: float = 0.10,
         show: bool = True) -> DistributedPlan:
    """Tiles, bytes to and from each worker, work balance and task count -- without running.

    Args:
        subscripts: the einsum spec.
        *operands: arrays (any einsum operand; reduced to statistics) or
            :class:`~flexsparse.contract.stats.OperandStats` (e.g. :func:`powerlaw_stats`).
        workers, threads_per_worker, worker_memory: the cluster to plan for.
        tiling, overbook: the strategy whose sizing rule is applied (checked by name).
        show: print the plan.

    Raises:
        ValueError: bad spec, sizes, ``workers`` or ``worker_memory``; unknown ``tiling``.
    """
    from flexsparse.distributed.cluster import tile_budget
    from flexsparse.tiling.strategies import get_strategy

    get_strategy(tiling)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    memory = parse_bytes(worker_memory)

    def limit_of(resident: float) -> int:
        return tile_budget(memory, threads_per_worker, int(resident))

    steps = []
    for x, y, out_indices, est in _step_estimates(subscripts, operands):
        if not x.is_dense and not y.is_dense:
            shape, tiles = _step_tiles(x, y, out_indices, est, limit_of, workers, threads_per_worker, overbook)
            steps.append(StepPlan(x.indices, y.indices, out_indices, shape, est.flops, est.nnz, tiles))
    result = DistributedPlan(subscripts, workers, threads_per_worker, memory, tuple(steps))
    if show:
        print(result)
    return result


def _step_estimates(subscripts: str, operands: tuple[Any, ...]) -> Any:
    """``(lhs stats, rhs stats, output indices, PairEstimate)`` of every pairwise step of the
    in-process planner's path, from statistics only (operands: arrays or :class:`OperandStats`)."""
    from flexsparse.contract.cost import estimate_pair, project_stats, result_stats
    from flexsparse.contract.parser import parse_einsum
    from flexsparse.contract.plan import plan_einsum
    from flexsparse.contract.stats import OperandStats, operand_stats

    spec = parse_einsum(subscripts, [tuple(op.shape) for op in operands])
    stats = []
    for k, op in enumerate(operands):
        if isinstance(op, OperandStats):
            stats.append(_relabel(op, spec.inputs[k]))
        else:
            from flexsparse.contract.execute import _as_operand

            stats.append(operand_stats(spec.inputs[k], _as_operand(op, k)))
    keep = [""] * len(operands)
    if len(operands) == 2 and all(len(set(i)) == len(i) for i in spec.inputs) and not any(spec.broadcast):
        # one step, no path to search: each operand keeps what the other or the result needs
        (ia, ib), out = spec.inputs, spec.output
        keep = ["".join(c for c in ia if c in ib or c in out), "".join(c for c in ib if c in ia or c in out)]
    if all(keep):
        operand_indices, steps = keep, [SimpleNamespace(lhs=0, rhs=1, out_indices=spec.output, out_format=None)]
    else:
        eplan = plan_einsum(spec, stats, optimize="auto")
        operand_indices, steps = list(eplan.operand_indices), list(eplan.steps)
    work = [project_stats(s, idx) if s.indices != idx else s for s, idx in zip(stats, operand_indices)]
    # where each operand's indices sit in the array it came from (an intermediate: None)
    origin: list[Any] = [(id(op), {c: spec.inputs[k].index(c) for c in idx})
                         for k, (op, idx) in enumerate(zip(operands, operand_indices))]
    for step in steps:
        x, y = work[step.lhs], work[step.rhs]
        same = _same_source(origin[step.lhs], origin[step.rhs])
        for p in sorted((step.lhs, step.rhs), reverse=True):
            work.pop(p)
            origin.pop(p)
        est = estimate_pair(x, y, step.out_indices, same_source=same)
        yield x, y, step.out_indices, est
        work.append(result_stats(est, step.out_format == "dense"))
        origin.append(None)


def sparse_flops(subscripts: str, *operands: Any) -> float:
    """Estimated multiply-adds of the sparse x sparse steps of ``einsum(subscripts, *operands)``
    (statistics only, O(nnz) per operand; a self-contraction counts every entry meeting itself)."""
    return float(sum(est.flops for x, y, _, est in _step_estimates(subscripts, operands)
                     if not x.is_dense and not y.is_dense))


def pair_flops(subscripts: str, a: Any, b: Any, stop: int | None = None) -> int | None:
    """Multiply-adds of the one step of a two-operand einsum of flexsparse COO tensors, counted
    exactly: the entries of ``b`` per value of the shared indices (a bincount over their
    linearised coordinates), summed over the entries of ``a``. O(nnz + cells of the shared indices); ``None`` (count
    unavailable) for other operands, repeated or broadcast indices, or shared indices of more
    cells than four times the entries (and 2**18). An upper bound of the engine's own count, which first
    sums away indices the other operand and the result do not need. ``stop``: the count may end
    early, with a partial count of at least ``stop`` (what a comparison with ``stop`` needs: an
    R-MAT scale 15 ``A @ A`` far above it is decided from 1/16 of ``a``'s entries)."""
    from flexsparse.contract.parser import parse_einsum
    from flexsparse.formats.coo import COO

    if not (isinstance(a, COO) and isinstance(b, COO)):
        return None
    spec = parse_einsum(subscripts, [a.shape, b.shape])
    ia, ib = spec.inputs
    if len(set(ia)) != len(ia) or len(set(ib)) != len(ib) or any(spec.broadcast):
        return None
    shared = [c for c in ia if c in ib]
    if not shared:
        return a.nnz * b.nnz
    cells = math.prod(spec.sizes[c] for c in shared)
    if cells > max(4 * (a.nnz + b.nnz), 1 << 18):     # a bincount of 2**18 cells: ~0.1 ms
        return None

    def keys(t: Any, idx: str) -> np.ndarray:
        if len(shared) == 1:     # the coordinates themselves (a matrix product: 3x faster)
            return t.coords[idx.index(shared[0])]
        return np.ravel_multi_index(tuple(t.coords[idx.index(c)] for c in shared),
                                    tuple(spec.sizes[c] for c in shared))

    same = a is b and all(ia.index(c) == ib.index(c) for c in shared)     # a self-contraction
    csr = b._csr
    if len(shared) == 1 and ib.index(shared[0]) == 0 and csr is not None and csr.data is b.data:
        # a 2-D b backed by a CSR (COO.from_csr) has its entries per row already: its row lengths,
        # no pass over its coordinates (R-MAT scale 15: ~40 us against 430 us for the call)
        kb, per_cell = None, np.diff(csr.indptr)
    else:
        kb = keys(b, ib)
        per_cell = np.bincount(kb, minlength=cells)
    ka = kb if same and kb is not None else keys(a, ia)
    if stop is None:
        # each entry of a meets every entry of b with its shared coordinates
        return int(per_cell[ka].sum())
    total, step = 0, max(1, -(-ka.size // 16))
    for lo in range(0, ka.size, step):   # partial sums only grow
        total += int(per_cell[ka[lo:lo + step]].sum())
        if total >= stop:
            break
    return total
