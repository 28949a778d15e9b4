"""Run one matricised sparse x sparse product of an einsum as tiles on a dask cluster.

:class:`ProductRunner` is what :func:`flexsparse.distributed.einsum` installs as the einsum
engine's product runner (:data:`flexsparse.contract._bounded.PRODUCT_RUNNER`): every tiled
step ``C = A @ B`` of the plan comes here as two CSR matrices.

Algorithm:

1. Plan (:mod:`.tiles`): the registered strategy sizes the grid against the tile budget,
   rows are re-cut by work, groups (output blocks) are assigned to workers (LPT).
2. Data: every B panel is scattered once to all workers (``broadcast``: a lost worker leaves
   the other copies); each A block is scattered once to the worker its group is assigned to.
   Tasks reference these futures: no operand is embedded in a task graph.
3. Tasks: one :func:`._tasks.run_tile` per tile; a group's partial sums over id windows are
   added by a binary tree of :func:`._tasks.add_pieces`; with ``out=`` the root writes the
   group's tile file (:func:`._tasks.write_piece`) and only its manifest entry comes back.
4. Completion: results are taken as they finish (memory is released at once). A group that
   fails because a worker was lost (its A block went with it) is resubmitted with its blocks
   scattered again, up to :data:`MAX_GROUP_ATTEMPTS` times; a :class:`~._tasks.TileError`
   (bad data) cancels everything, removes the partial output and is raised. Ctrl-C cancels
   every future of the product and removes the partial output.

Cost: the strategy's sampling plus O(nnzA + nnzB) on the client to cut the blocks; the
products run in parallel on the workers; O(nnzC) to gather (none with ``out=``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import index_dtype_for, result_dtype
from flexsparse.distributed import _store, _tasks
from flexsparse.distributed.cluster import WorkerResources, tile_budget
from flexsparse.distributed.tiles import ProductPlan, build_plan, check_task_count, uniform_bounds

__all__ = ["DistributedReport", "ProductRunner", "MAX_GROUP_ATTEMPTS"]

#: Times a group is submitted before a lost-worker failure is given up on.
MAX_GROUP_ATTEMPTS = 6


@dataclass(frozen=True)
class DistributedReport:
    """Figures of one distributed product.

    Attributes:
        strategy: the tiling strategy that sized the grid.
        limit: the tile budget (bytes).
        shape: ``(m, k, n)`` of the matricised product.
        tiles, groups, tasks: tiles (products), output blocks, tasks submitted.
        bounded_tiles: tiles run with the bounded kernel (predicted over the budget).
        resubmitted: groups submitted again after a lost worker.
        workers: workers the groups were assigned to.
        balance: busiest worker's estimated work over the mean.
        received_bytes: bytes of result pieces gathered by the caller (0 with ``out=``).
        plan_seconds, assemble_seconds, total_seconds: planning, assembling the gathered pieces
            into one matrix, and the wall time of the product.
    """

    strategy: str
    limit: int
    shape: tuple[int, int, int]
    tiles: int
    groups: int
    tasks: int
    bounded_tiles: int
    resubmitted: int
    workers: int
    balance: float
    received_bytes: int
    plan_seconds: float
    assemble_seconds: float
    total_seconds: float

    def __str__(self) -> str:
        m, k, n = self.shape
        return (f"distributed product {m:,} x {k:,} x {n:,} ({self.strategy})\n"
                f"  tile budget         {self.limit:,} B\n"
                f"  tiles / groups      {self.tiles} / {self.groups} ({self.tasks} tasks, "
                f"{self.bounded_tiles} bounded)\n"
                f"  workers / balance   {self.workers} / {self.balance:.2f}\n"
                f"  resubmitted groups  {self.resubmitted}\n"
                f"  received            {self.received_bytes:,} B\n"
                f"  planning / assembly / total  {self.plan_seconds:.3f} s / {self.assemble_seconds:.3f} s / "
                f"{self.total_seconds:.3f} s")


def _block(x: Any, r0: int, r1: int, k0: int, k1: int) -> Any:
    """Rows ``[r0, r1)`` of CSR ``x`` restricted to columns ``[k0, k1)`` (columns rebased)."""
    from flexsparse.formats.csr import CSR

    lo, hi = int(x.indptr[r0]), int(x.indptr[r1])
    indptr = x.indptr[r0:r1 + 1] - lo
    indices, data = x.indices[lo:hi], x.data[lo:hi]
    if k0 > 0 or k1 < x.shape[1]:
        keep = (indices >= k0) & (indices < k1)
        kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr = kept[indptr]                     # entries kept before each row's start
        indices = indices[keep] - np.asarray(k0, dtype=indices.dtype)
        data = data[keep]
    else:
        indices, data = indices.copy(), data.copy()
    return CSR._trusted(np.ascontiguousarray(indptr, dtype=np.int64), indices, data,
                        (r1 - r0, k1 - k0), x.sorted_indices)


def _concatenate_rows(pieces: list[Any], m: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR buffers of full-width pieces over disjoint row ranges: one copy of each array (O(nnz))."""
    pieces = sorted(pieces, key=lambda p: p[0][0])
    indptr = np.zeros(m + 1, dtype=np.int64)
    base = 0
    for (r0, r1, _, _, _), ip, _, _ in pieces:
        indptr[r0 + 1:r1 + 1] = ip[1:] + base
        base += int(ip[-1])
    # rows no piece covers (none in a plan, but keep the pointers monotone) repeat the previous end
    np.maximum.accumulate(indptr, out=indptr)
    indices = np.concatenate([p[2] for p in pieces]) if pieces else np.zeros(0, np.int32)
    data = np.concatenate([p[3] for p in pieces]) if pieces else np.zeros(0)
    return indptr, indices, data


class ProductRunner:
    """Callable with :func:`flexsparse.tiling.tiled_spgemm`'s signature running the tiles on ``client``.

    Args:
        client: a ``distributed.Client``.
        resources: the workers (:func:`~flexsparse.distributed.cluster.worker_resources`).
        progress: show a progress bar over output blocks (rich).
        tile_memory: the tile budget in bytes; ``None`` derives it from the workers' memory.
    """

    def __init__(self, client: Any, resources: WorkerResources, progress: bool = False,
                 tile_memory: int | None = None) -> None:
        self.client = client
        self.resources = resources
        self.progress = progress
        self.tile_memory = tile_memory
        self.plans: list[ProductPlan] = []

    # ------------------------------------------------------------------ planning
    def plan(self, A: Any, B: Any, strategy: str, overbook: float) -> ProductPlan:
        """Tiles of ``A @ B`` (flexsparse CSR) for the attached workers."""
        from flexsparse.tiling import ByteModel, TileStatistics, get_strategy
        from flexsparse.tiling.engine import as_operand

        m, k = A.shape
        n = B.shape[1]
        dtype = result_dtype(A.dtype, B.dtype)
        bm = ByteModel.for_output(dtype, index_dtype_for((n,)))
        res = self.resources
        if self.tile_memory is not None:
            limit = int(self.tile_memory)
        else:
            resident = B.nbytes + A.nbytes // max(1, res.n_workers)
            limit = tile_budget(res.min_memory, max(res.threads), resident)
        stats = TileStatistics(as_operand(A, "a"), as_operand(B, "b"), bm)
        grid = get_strategy(strategy)(stats, limit, overbook=overbook, seed=0)
        k_bounds = uniform_bounds(k, grid.k_size) if k else np.array([0, 0])
        col_bounds = uniform_bounds(n, grid.col_size)
        n_c, n_k = len(col_bounds) - 1, len(k_bounds) - 1
        flops_rows = stats.flops(n_c).astype(np.float64) if m and n else np.zeros((m, max(1, n_c)))
        if k and n:
            per_b = stats.nnz_b_panels(n_c)
            nnz_b = np.add.reduceat(per_b, k_bounds[:-1], axis=0).astype(np.float64)
        else:
            nnz_b = np.zeros((max(1, n_k), max(1, n_c)))
        ratio = 1.0
        if m and n and k:
            rng = np.random.default_rng(0)
            rows = np.sort(rng.choice(m, size=min(m, max(64, m // 200)), replace=False))
            counted = float(stats.output_counts(rows, 1)[:, 0, 0].sum())
            ratio = counted / max(1.0, float(flops_rows[rows].sum()))
        pplan = build_plan(shape=(m, k, n), strategy=grid.strategy, limit=limit,
                           strategy_tiles=grid.n_tiles, row_size=grid.row_size, k_bounds=k_bounds,
                           col_bounds=col_bounds, flops_rows=flops_rows,
                           nnz_a_rows=stats.nnz_a_rows.astype(np.float64), nnz_b_panels=nnz_b,
                           ratio=ratio, elem=bm.elem, value_bytes=bm.value_bytes,
                           n_workers=res.n_workers, threads=res.total_threads)
        check_task_count(len(pplan.tiles), grid.strategy)
        return pplan

    # ------------------------------------------------------------------ running
    def __call__(self, a: Any, b: Any, *, memory_limit: Any = None, tiling: str = "overbook",
                 overbook: float = 0.10, out: Path | None = None, progress: bool = False,
                 out_shape: tuple[int, ...] | None = None, out_layout: Any = None,
                 out_dtype: Any = None, **_: Any) -> tuple[Any, DistributedReport]:
        """``a @ b`` on the cluster, with the call signature of :func:`flexsparse.tiling.tiled_spgemm`.

        ``memory_limit`` and ``reserved`` describe the calling process and are not used here: the
        tiles are planned against the workers' budget (``tile_memory`` or their memory limits).
        """
        from flexsparse.tiling.engine import as_operand
        from flexsparse.tiling.outfile import assemble

        t0 = time.perf_counter()
        A, B = as_operand(a, "a").csr, as_operand(b, "b").csr
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"shapes do not match for a @ b: {A.shape} and {B.shape}")
        plan = self.plan(A, B, tiling, float(overbook))
        self.plans.append(plan)
        t_plan = time.perf_counter() - t0
        m, _, n = plan.shape
        dtype = result_dtype(A.dtype, B.dtype)
        idx_dtype = index_dtype_for((n,))
        run = _Run(self, plan, A, B, out)
        try:
            results = run.execute()
        except BaseException:
            run.cancel()
            raise
        t_asm = time.perf_counter()
        received = 0
        if out is not None:
            from flexsparse.formats.store import MatrixLayout

            layout = out_layout if out_layout is not None else MatrixLayout.identity((m, n))
            store_dtype = dtype if out_dtype is None else np.dtype(out_dtype)  # the einsum result's
            result = _store.commit(Path(out), run.directory, results, out_shape or (m, n), store_dtype, layout)
        else:
            from flexsparse.formats.csr import CSR

            received = sum(int(p[1].nbytes + p[2].nbytes + p[3].nbytes) for p in results)
            ip, ix, d = _concatenate_rows(results, m, n) if plan.col_bounds == (0, n) else \
                assemble(results, (m, n), dtype, idx_dtype)
            # the buffers come from the kernels (sorted, in bounds): no second validation pass
            result = CSR._trusted(ip, ix.astype(idx_dtype, copy=False), d.astype(dtype, copy=False),
                                  (m, n), True)
        report = DistributedReport(plan.strategy, plan.limit, plan.shape, len(plan.tiles), plan.n_groups,
                                   plan.n_tasks, sum(t.bounded for t in plan.tiles), run.resubmitted,
                                   plan.n_workers, plan.balance, received, t_plan,
                                   time.perf_counter() - t_asm, time.perf_counter() - t0)
        return result, report


class _Run:
    """The futures of one product: submission, resubmission, collection, cancellation."""

    def __init__(self, runner: ProductRunner, plan: ProductPlan, A: Any, B: Any, out: Path | None) -> None:
        self.client, self.plan, self.A, self.B = runner.client, plan, A, B
        self.addresses = runner.resources.addresses
        self.progress = runner.progress
        self.out = out
        self.directory = _store.prepare(out) if out is not None else None
        self.token = uuid.uuid4().hex[:12]
        self.panels: dict[tuple[int, int], Any] = {}
        self.futures: dict[int, list[Any]] = {}
        self.attempts = np.zeros(plan.n_groups, dtype=np.int64)
        self._seen_workers = list(self.addresses)
        self.resubmitted = 0

    def _panel(self, ki: int, ci: int) -> Any:
        fut = self.panels.get((ki, ci))
        if fut is None or fut.status in ("lost", "error", "cancelled"):
            p = self.plan
            block = _block(self.B, p.k_bounds[ki], p.k_bounds[ki + 1], p.col_bounds[ci], p.col_bounds[ci + 1])
            try:
                fut = self.client.scatter(block, broadcast=True, hash=False)
            except (OSError, KeyError):  # a worker went away during the broadcast
                self._live()
                fut = self.client.scatter(block, broadcast=True, hash=False)
            self.panels[(ki, ci)] = fut
        return fut

    def _live(self) -> list[str]:
        """Addresses of the workers attached now (a restarted worker comes back on a new port)."""
        from flexsparse.distributed.cluster import worker_resources

        try:
            self.addresses = worker_resources(self.client).addresses
        except RuntimeError:  # every worker is restarting: wait for one to come back
            self.client.wait_for_workers(1, timeout=120)
            self.addresses = worker_resources(self.client).addresses
        return list(self.addresses)

    def _scatter_blocks(self, groups: list[int]) -> dict[int, list[Any]]:
        """A blocks of ``groups``, scattered in one call per worker; ``{group: [future per tile]}``."""
        p = self.plan
        by_worker: dict[str, list[tuple[int, Any]]] = {}
        for g in groups:
            addr = self.addresses[p.worker_of_group[g] % len(self.addresses)]
            for t in p.group_tiles(g):
                by_worker.setdefault(addr, []).append((g, _block(self.A, t.r0, t.r1, t.k0, t.k1)))
        out: dict[int, list[Any]] = {g: [] for g in groups}
        for addr, items in by_worker.items():
            try:
                futs = self.client.scatter([blk for _, blk in items], workers=[addr], hash=False)
            except (OSError, KeyError):  # that worker went away meanwhile: let the scheduler place them
                self._live()
                futs = self.client.scatter([blk for _, blk in items], hash=False)
            for (g, _), f in zip(items, futs):
                out[g].append(f)
        return out

    def submit(self, groups: list[int]) -> dict[Any, int]:
        """Submit the tiles, addition trees and writes of ``groups``; ``{final future: group}``."""
        c, p = self.client, self.plan
        blocks = self._scatter_blocks(groups)
        finals = {}
        for g in groups:
            attempt = int(self.attempts[g])
            self.attempts[g] += 1
            leaves = []
            for ki, (t, a_blk) in enumerate(zip(p.group_tiles(g), blocks[g])):
                b_pan = self._panel(ki, p.col_bounds.index(t.c0))
                meta = (t.r0, t.r1, t.c0, t.c1, int(p.n_k > 1))
                leaves.append(c.submit(_tasks.run_tile, a_blk, b_pan, meta, p.shape[2], p.limit, t.bounded,
                                       t.describe(), key=f"fs-tile-{self.token}-{t.tile}-{attempt}",
                                       pure=False))
            level, depth = leaves, 0
            while len(level) > 1:
                nxt = [c.submit(_tasks.add_pieces, level[i], level[i + 1], p.shape[2], f"group {g}",
                                key=f"fs-add-{self.token}-{g}-{depth}-{i}-{attempt}", pure=False)
                       for i in range(0, len(level) - 1, 2)]
                if len(level) % 2:
                    nxt.append(level[-1])
                level, depth = nxt, depth + 1
            root = level[0]
            if self.directory is not None:
                root = c.submit(_tasks.write_piece, root, str(self.directory), g, f"group {g}",
                                key=f"fs-write-{self.token}-{g}-{attempt}", pure=False)
            self.futures[g] = blocks[g] + leaves + [root]
            finals[root] = g
        return finals

    def execute(self) -> list[Any]:
        """Every group's piece (or manifest entry with ``out=``), in group order."""
        from distributed import as_completed

        p = self.plan
        if p.n_groups == 0:
            return []
        finals = self.submit(list(range(p.n_groups)))
        results: list[Any] = [None] * p.n_groups
        bar = task = None
        if self.progress:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("tiles", total=p.n_groups)
        try:
            pending = as_completed(list(finals))
            for fut in pending:
                g = finals.pop(fut)
                exc: BaseException | None = None
                try:
                    res = fut.result()          # raises what the task raised, or a lost/cancelled error
                except _tasks.TileError:
                    raise
                except Exception as e:  # noqa: BLE001 - a lost worker (its data went with it): resubmit
                    exc = e
                if exc is None:
                    results[g] = res if self.directory is not None else _tasks.finished(res)
                    self.futures.pop(g, None)
                    fut.release()
                    if bar is not None:
                        bar.advance(task)
                    continue
                if type(exc).__name__ == "KilledWorker":   # the task itself keeps killing workers
                    raise _tasks.TileError(f"group {g} (rows {p.group_tiles(g)[0].r0}:{p.group_tiles(g)[0].r1}) "
                                           f"killed its worker repeatedly: {exc}") from exc
                if self.attempts[g] >= MAX_GROUP_ATTEMPTS:
                    raise RuntimeError(f"group {g} of the product failed {int(self.attempts[g])} times "
                                       f"(workers lost; last status {fut.status!r}, {exc!r})")
                self.resubmitted += 1
                if self._live() != self._seen_workers:
                    # the cluster changed: B's copies may name a dead worker; scatter them afresh
                    self._seen_workers = list(self.addresses)
                    self.panels = {}
                new = self.submit([g])
                finals.update(new)
                pending.update(new)
        finally:
            if bar is not None:
                bar.stop()
        return results

    def cancel(self) -> None:
        """Cancel every future of the product and remove what it wrote."""
        futs = [f for fs in self.futures.values() for f in fs] + list(self.panels.values())
        if futs:
            self.client.cancel(futs)
        if self.directory is not None:
            _store.abort(Path(self.out), self.directory, list(range(self.plan.n_groups)))
