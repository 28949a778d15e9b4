"""Bounded-memory ``C = A @ B``: plan tiles (a strategy), run them with Tailors overbooking.

Algorithm. A strategy (:mod:`flexsparse.tiling.strategies`) picks a uniform grid of
tiles (output rows x output columns x contracted ids). The executor runs the tiles in
order with :func:`~flexsparse.tiling.kernels.spgemm_csr_csr_bounded`, a row-wise
Gustavson kernel that reads the operands in place and writes into one preallocated output
buffer, charging every row its working-set bytes (:mod:`flexsparse.tiling.workingset`).
When a tile's working set would exceed the limit (an *overbooked* tile), the rows that fit
are kept and the remaining ("bumped") rows are queued for an extra pass -- neither an
error nor a re-plan (Tailors). A single row that alone does not fit is split into column
halves, then into contracted-id halves (partial sums, added on assembly). The result is
the unbounded product, entry for entry (structural nonzeros, sorted column indices).

Memory: the limit is spent in two phases that never overlap (the first phase's arrays are
freed before the second starts). (1) Statistics and planning: every array the strategy
gathers is charged as it is made (:meth:`TileStatistics.reserve`) against the limit minus
``reserved`` (what the caller holds for this product, e.g. its operands' conversion), and
a plan that would need more is refused with :class:`MemoryLimitError`. (2) Tiles: their
working sets fit ``limit - reserved``, with ``out=`` less ``limit / 16 + limit / 8`` (a
sixteenth buffers finished tiles; an eighth,
:data:`~flexsparse._limits.TILING_UNTRACKED_SHARE`, is left to what no charge covers). The
kernel's workspace is the dense accumulator (one value + one int64
stamp per column of the widest panel), one int64 stamp per contracted id of the widest id
window, and an output buffer of at most ``limit / e`` entries whose touched pages never
exceed the largest executed tile's output; the operands are read in place. Bookkeeping is
charged against ``max(limit, SMALL_BYTES)`` (:func:`~.workingset.accounted_limit`). With
``out=`` the process thus stays within the limit; without it the assembled result is held
in memory as well (O(nnz C): it is the return value).

Cost: O(flops) for the products, plus what the strategy spends choosing the grid (reported
as the sampling/counting cost), plus the work of bumped rows' first attempt.

>>> import scipy.sparse as sp
>>> a = sp.random(60, 50, density=0.1, format="csr", random_state=0)
>>> b = sp.random(50, 40, density=0.1, format="csr", random_state=1)
>>> c, report = tiled_spgemm(a, b, memory_limit="8KiB")
>>> bool(abs(c - a @ b).max() < 1e-12), report.tiles >= 2, report.peak_ws_bytes <= 8192
(True, True, True)
>>> tiled_spgemm(a, b, memory_limit=50)
Traceback (most recent call last):
...
flexsparse.tiling.executor.MemoryLimitError: memory_limit=50 bytes is too small for one row of work: the minimum ...
"""

from __future__ import annotations

import dataclasses
import os
import time
import tracemalloc
from collections import deque
from typing import Any

import numpy as np

from flexsparse._limits import TILING_UNTRACKED_SHARE as UNTRACKED_SHARE
from flexsparse._rss import peak_bytes
from flexsparse._util import index_dtype_for, parse_bytes, result_dtype
from flexsparse.kernels.cpu._spgemm_output import small_pages_empty
from flexsparse.tiling.engine import as_operand
from flexsparse.tiling.kernels import spgemm_csr_csr_bounded, spgemm_csr_csr_flops_total
from flexsparse.tiling.outfile import DiskSink, MemorySink, check_output_target
from flexsparse.tiling.report import TilingReport
from flexsparse.tiling.strategies import TileStatistics, get_strategy
from flexsparse.tiling.workingset import ByteModel, accounted_limit, fixed_bytes, minimum_limit

__all__ = ["MemoryLimitError", "tiled_spgemm"]


class MemoryLimitError(MemoryError):
    """The memory limit cannot hold the work; ``minimum`` is the smallest limit that can.

    ``detail`` says what does not fit (by default: one row of work).
    """

    def __init__(self, limit: int, minimum: int, detail: str = "") -> None:
        self.limit, self.minimum = limit, minimum
        why = detail or "too small for one row of work"
        super().__init__(f"memory_limit={limit} bytes is {why}: the minimum workable limit is "
                         f"{minimum} bytes" if not detail else
                         f"memory_limit={limit} bytes cannot hold the work: {why} "
                         f"(the minimum workable limit is about {minimum} bytes)")


def _family(a_fam: str, b_fam: str) -> str:
    if "flexsparse" in (a_fam, b_fam):
        return "flexsparse"
    return "scipy-array" if "scipy-array" in (a_fam, b_fam) else "scipy-matrix"


def tiled_spgemm(a: Any, b: Any, *, memory_limit: int | str, tiling: str = "overbook",
                 overbook: float = 0.10, out: str | os.PathLike | None = None, seed: int = 0,
                 progress: bool = False, trace_memory: bool = False, reserved: int = 0,
                 out_shape: tuple[int, ...] | None = None, out_layout: Any = None,
                 out_dtype: Any = None) -> tuple[Any, TilingReport]:
    """``a @ b`` computed tile by tile so that no tile's working set exceeds ``memory_limit``.

    Args:
        a: ``[m, k]`` flexsparse ``CSR`` or SciPy sparse matrix.
        b: ``[k, n]`` flexsparse ``CSR`` or SciPy sparse matrix.
        memory_limit: bytes (int) or a size string (``"64MiB"``).
        tiling: strategy name: ``"overbook"`` (default), ``"conservative"``, ``"prescient"``.
        overbook: target fraction of tiles that overflow (``overbook`` strategy), in [0, 1).
        out: ``None`` (result in memory), a directory, or a ``.npz`` path: the product is
            then written tile by tile and a :class:`LazyResult` is returned.
        seed: seed of the sampling.
        progress: show a ``rich`` progress bar over tiles.
        trace_memory: also measure the ``tracemalloc`` peak (slower).
        reserved: bytes the caller already holds for this product (its operands' conversion,
            other live results), charged to ``memory_limit`` before anything else.
        out_shape, out_layout: with ``out``, the shape of the tensor the product stores and the
            :class:`~flexsparse.formats.store.MatrixLayout` decoding its row/column ids into that
            tensor's coordinates (how ``einsum(out=...)`` stores its result); default: the
            ``m x n`` matrix itself.
        out_dtype: with ``out``, the dtype the store records, each tile's values cast to it as
            it is written (``einsum`` computes bool as counts and float16 in float32, and stores
            its result dtype); default: the product's dtype.

    Returns:
        ``(result, report)``: the product (flexsparse ``CSR`` if an operand was one, else
        SciPy CSR; or a :class:`LazyResult` with ``out``) and a :class:`TilingReport`.

    Raises:
        ValueError: malformed ``memory_limit``, bad ``overbook``, unknown ``tiling``,
            mismatched shapes, bad ``out``.
        TypeError: operands of the wrong type or non-numeric dtype.
        MemoryLimitError: ``memory_limit`` below the minimum workable limit (stated).
        PermissionError / OSError: ``out`` not writable or too little free space (raised
            before any work).
    """
    t_start = time.perf_counter()
    rss0 = peak_bytes()
    limit = parse_bytes(memory_limit)
    if not isinstance(tiling, str):
        raise TypeError(f"tiling must be a strategy name (str), not {type(tiling).__name__}")
    strategy = get_strategy(tiling)
    if not isinstance(overbook, (int, float)) or isinstance(overbook, bool) or \
            not 0.0 <= float(overbook) < 1.0:
        raise ValueError(f"overbook must be a fraction in [0, 1), got {overbook!r}")
    A, B = as_operand(a, "a"), as_operand(b, "b")
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"shapes do not match for a @ b: a is {A.shape[0]}x{A.shape[1]} "
                         f"(k={A.shape[1]}) but b is {B.shape[0]}x{B.shape[1]} (k={B.shape[0]})")
    m, k = A.shape
    n = B.shape[1]
    dtype = result_dtype(A.data.dtype, B.data.dtype)
    idx_dtype = index_dtype_for((n,))
    bm = ByteModel.for_output(dtype, idx_dtype)
    # The budget, phase by phase (freed arrays go back to the system, so phases do not add):
    # statistics and planning get what the caller does not hold; the tiles get that minus
    # the disk sink's buffer (1/16 of the limit), and never more than the limit itself.
    # Below SMALL_BYTES the bookkeeping is not charged (accounted_limit).
    reserved = max(0, int(reserved))
    sink_bytes = limit // 16 if out is not None else 0
    minimum = minimum_limit(bm)
    # with out=, where the process's growth is what the limit promises, a share is left to what
    # no charge covers (the allocator's slack between phases, Python objects)
    untracked = limit // UNTRACKED_SHARE if out is not None else 0
    ws_limit = min(limit, accounted_limit(limit) - reserved - sink_bytes - untracked)
    if ws_limit < minimum:
        if reserved:
            raise MemoryLimitError(limit, minimum + reserved + sink_bytes + untracked,
                                   f"{reserved:,} bytes are held by the operands' conversion and other live "
                                   f"results, leaving less than one row of work ({minimum} bytes)")
        raise MemoryLimitError(limit, minimum + sink_bytes + untracked)
    family = _family(A.family, B.family)
    stats_budget = accounted_limit(limit) - reserved
    if out is not None:
        # upper bound of the output size: every multiply a distinct entry (O(nnzA), no workspace)
        flops_total = int(spgemm_csr_csr_flops_total(A.indices, B.indptr)) if k and A.nnz else 0
        check_output_target(out, min(m * n, flops_total) * bm.elem + (m + 1) * bm.ptr_bytes)
    started_tracing = trace_memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    if trace_memory:
        tracemalloc.reset_peak()
    try:
        stats = TileStatistics(A, B, bm, budget=stats_budget, limit=limit)
        plan = strategy(stats, ws_limit, overbook=float(overbook), seed=seed)
        # the tiles need neither the statistics nor the plan's predictions: free them first
        stats_peak = stats.peak
        del stats
        plan = dataclasses.replace(plan, predicted_ws=())
        if out is None:
            sink = MemorySink()
            figures = _execute(A, B, plan, bm, ws_limit, dtype, idx_dtype, sink, progress)
            result = sink.finish((m, n), dtype, idx_dtype, family)
        else:
            store_dtype = dtype if out_dtype is None else np.dtype(out_dtype)
            with DiskSink(out, sink_bytes, (m, n), store_dtype, family, out_layout, out_shape) as dsink:
                figures = _execute(A, B, plan, bm, ws_limit, dtype, idx_dtype, dsink, progress)
                result = dsink.commit()
        traced = tracemalloc.get_traced_memory()[1] if trace_memory else None
    finally:
        if started_tracing:
            tracemalloc.stop()
    total = time.perf_counter() - t_start
    report = TilingReport(
        strategy=plan.strategy, limit=limit, planned_tiles=plan.n_tiles, tiles=figures["tiles"],
        row_size=plan.row_size, col_size=plan.col_size, k_size=plan.k_size,
        sampling_seconds=plan.sampling_seconds, total_seconds=total,
        overbooked_tiles=figures["overbooked"], bumped_bytes=figures["bumped"],
        passes=figures["passes"], mean_utilisation=figures["util"],
        peak_ws_bytes=figures["peak"], rss_growth_bytes=max(0, peak_bytes() - rss0),
        traced_peak_bytes=traced, sampled_rows=plan.sampled_rows, reserved_bytes=reserved,
        statistics_bytes=stats_peak)
    return result, report


def _execute(A, B, plan, bm: ByteModel, limit: int, dtype: np.dtype, idx_dtype: np.dtype,
             sink: MemorySink | DiskSink, progress: bool) -> dict[str, Any]:
    """Run the plan's tiles with Tailors overbooking; return the run's figures."""
    m, k, n = plan.shape
    e, p = bm.elem, bm.ptr_bytes
    work_dtype = np.dtype(np.int64) if dtype == np.bool_ else dtype  # bool sums as counts
    max_cw, max_kw = max(1, min(plan.col_size, n)), max(1, min(plan.k_size, k))
    seen = np.zeros(max_kw, dtype=np.int64)       # stamps start at 1: 0 = never touched
    mark = np.zeros(max_cw, dtype=np.int64)
    spa = np.zeros(max_cw, dtype=work_dtype)
    # output entries one tile can hold: the budget left after the smallest fixed part
    cap = max(0, (limit - fixed_bytes(bm, 1, 1) - 2 * p) // e)
    out_indices = small_pages_empty(cap, idx_dtype)   # resident as written (no 2 MiB rounding)
    out_data = small_pages_empty(cap, work_dtype)
    totals = np.zeros(6, dtype=np.int64)
    stamp = 1
    figs = {"tiles": 0, "overbooked": 0, "bumped": 0, "passes": 0, "util": 0.0, "peak": 0}
    util_sum = 0.0

    bar = None
    if progress:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task("tiles", total=plan.n_tiles)
    # pass 1 streams the plan's tiles (never materialised: conservative plans have many);
    # runtime splits go to the front of ``queue``, bumped remainders to the next pass
    planned = ((t.r0, t.r1, t.k0, t.k1, t.c0, t.c1, False) for t in plan.tiles())
    queue: deque = deque()
    full_k = (0, k)
    try:
        while True:
            if not queue and planned is None:
                break
            figs["passes"] += 1
            bumped: deque = deque()
            while True:
                if queue:
                    r0, r1, k0, k1, c0, c1, again = queue.popleft()
                elif planned is not None:
                    nxt = next(planned, None)
                    if nxt is None:
                        planned = None
                        break
                    r0, r1, k0, k1, c0, c1, again = nxt
                else:
                    break
                if r0 >= r1:
                    continue
                cw, kw = c1 - c0, k1 - k0
                fixed = fixed_bytes(bm, cw, kw)
                out_indptr = np.empty(r1 - r0 + 1, dtype=np.int64)
                stamp = spgemm_csr_csr_bounded(
                    A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
                    r0, r1, k0, k1, c0, c1, limit, fixed, e, p, stamp,
                    seen, mark, spa, out_indptr, out_indices, out_data, totals)
                done, nnz, _, _, _, ws = (int(x) for x in totals)
                if bar is not None:
                    bar.advance(task_id)
                if done == 0:
                    # one row alone overflows: split its columns, then its ids (partial sums)
                    figs["overbooked"] += 1
                    if cw > 1:
                        mid = c0 + cw // 2
                        halves = [(r0, r0 + 1, k0, k1, c0, mid, True),
                                  (r0, r0 + 1, k0, k1, mid, c1, True)]
                    elif kw > 1:
                        mid = k0 + kw // 2
                        halves = [(r0, r0 + 1, k0, mid, c0, c1, True),
                                  (r0, r0 + 1, mid, k1, c0, c1, True)]
                    else:  # unreachable when limit >= minimum_limit: 1x1x1 always fits
                        raise RuntimeError(f"row {r0} does not fit a 1x1x1 tile under {limit} bytes")
                    queue.appendleft((r0 + 1, r1, k0, k1, c0, c1, again))
                    queue.extendleft(reversed(halves))
                    if bar is not None:
                        bar.update(task_id, total=bar.tasks[0].total + 3)
                    continue
                figs["tiles"] += 1
                util_sum += ws / limit
                figs["peak"] = max(figs["peak"], ws)
                if again:
                    figs["bumped"] += ws - fixed
                if nnz:
                    data = out_data[:nnz]
                    if data.dtype != dtype:
                        data = data.astype(dtype)
                    sink.add((r0, r0 + done, c0, c1, int((k0, k1) != full_k)),
                             out_indptr[:done + 1], out_indices[:nnz], data)
                if r0 + done < r1:
                    figs["overbooked"] += 1
                    bumped.append((r0 + done, r1, k0, k1, c0, c1, True))
                    if bar is not None:
                        bar.update(task_id, total=bar.tasks[0].total + 1)
            queue = bumped
            if not queue:
                break
    finally:
        if bar is not None:
            bar.stop()
    figs["util"] = util_sum / figs["tiles"] if figs["tiles"] else 0.0
    return figs
