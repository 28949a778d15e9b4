"""Run one matricised sparse x sparse product of an einsum as tiles on a dask cluster.

:class:`ProductRunner` is what :func:`flexsparse.distributed.einsum` installs as the einsum
engine's product runner (:data:`flexsparse.contract._bounded.PRODUCT_RUNNER`): every tiled
step ``C = A @ B`` of the plan comes here as two CSR matrices, with the key spaces that
decode the product's row and column ids into the einsum result's coordinates.

Algorithm:

0. A product of fewer than ``local_flops`` multiply-adds
   (:data:`~flexsparse._limits.DISTRIBUTED_MIN_FLOPS` by default) runs in the calling
   process: it would take less time than the scheduler round trips of one distributed call.
1. Plan (:mod:`.tiles`): the registered strategy sizes the grid against the tile budget,
   rows are re-cut by work, groups (output blocks) are assigned to workers (LPT). A product
   run again on the same client (B's contents, A's structure, the workers and the settings
   unchanged: B hashed once, which the kept panels need anyway) reuses its plan.
2. Data, each sent once: every B panel is scattered to all workers (``broadcast``: a lost
   worker leaves the other copies); each group's rows of A go to the worker its group is
   assigned to as a zero-copy row slice (the tiles cut their contracted-id windows on the
   worker). When A is B (a self-product ``X @ X``) and B is one panel, A is not sent at all:
   the tiles cut their rows from the broadcast copy. No operand is embedded in a task graph.
   Panels up to :data:`~flexsparse._limits.DISTRIBUTED_KEEP_PANEL_BYTES` stay on the workers
   after the product; the next product of the same client with the same panel (its contents
   hashed) reuses them instead of sending them again.
3. Tasks: one :func:`._tasks.run_tile` per tile, placed on the worker its group is assigned to
   (a loose restriction: another worker takes it when that one is gone); a group's partial
   sums over id windows are added by a binary tree of :func:`._tasks.add_pieces`.
4. Result, never copied or decoded by the calling process when its workers share its host. A
   plain CSR result of at most :data:`~flexsparse._limits.DIRECT_GATHER_MAX_GROUPS` whole row
   blocks (one id window, one column panel; what a cluster of at most two threads gets for a
   product gathered in memory) is computed by the workers straight into the shared-memory
   result, the two blocks written toward each other (:mod:`._direct`): one task per block, both
   sent in one graph, each reading B (and a self-product's A) from its worker's own copy; no
   copy of the result, no second round trip, and no task result fetched (each block's span is
   its row pointers in the file, its CPU seconds are noted in the file's margin). The cut
   between the two blocks weights the first (written down, costlier) by the median of the
   factors measured on the client's earlier runs of the same product
   (:func:`._direct.back_factor`). Otherwise (:mod:`._gather`) each group's entry count comes
   back, the calling process allocates the result once in shared memory, and each worker writes its
   pieces there in the final layout (the einsum's COO coordinates, or CSR); a worker on another
   host sends its piece (compact CSR) instead. Small results (below
   :data:`~flexsparse._limits.GATHER_SHM_MIN_BYTES`) come back over the network in one phase.
   When a result is freed its shared-memory file is kept for the next one (:mod:`._gather`). A
   plain 2-D product (``ij,jk->ik`` and its transposes, through
   :meth:`ProductRunner.plain_product`) keeps each row in the kernel's first-touch column order,
   as the in-process engine does; a COO result is canonical. With ``out=`` each group's root
   writes its tile file (:func:`._tasks.write_piece`) and only its manifest entry comes back.
5. Completion: results are taken as they finish. A group that fails because a worker was
   lost (its data went with it) is resubmitted with its blocks scattered again, up to
   :data:`MAX_GROUP_ATTEMPTS` times (its pieces are deterministic, so counts taken before
   the loss stay valid); a :class:`~._tasks.TileError` (bad data) cancels everything, removes
   the partial output and is raised. Ctrl-C cancels every future of the product and removes
   the partial output.

Cost on the calling process: the strategy's sampling and O(m + nnzA) for the exact row
flops; O(m) to cut row slices; O(1) per group to place the result through shared memory
(O(nnz) for pieces that come over the network). The products, partial sums and result
layout run in parallel on the workers.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse._util import index_dtype_for, result_dtype
from flexsparse.distributed import _cache, _direct, _gather, _store, _tasks
from flexsparse.distributed._cache import same_matrix
from flexsparse.distributed._report import DistributedReport, tile_bar
from flexsparse.distributed.cluster import WorkerResources, tile_budget
from flexsparse.distributed.tiles import ProductPlan, build_plan, check_task_count, uniform_bounds

__all__ = ["DistributedReport", "ProductRunner", "MAX_GROUP_ATTEMPTS"]

#: Times a group is submitted before a lost-worker failure is given up on.
MAX_GROUP_ATTEMPTS = 6


def _coo_layout(decode: Any) -> tuple[str, Any]:
    """``(layout, keys)`` for a result the engine decodes with ``decode`` = ``(row key space,
    column key space, batch modes, result shape)``: a plain 2-D product (one-mode direct keys,
    no batch) is gathered as CSR when a COO can be backed by a CSR (``COO.from_csr``), else
    as COO coordinates."""
    from flexsparse.formats.coo import COO

    row_ks, col_ks, n_batch, shape = decode
    plain = (n_batch == 0 and len(shape) == 2 and row_ks.table is None and col_ks.table is None
             and len(row_ks.sizes) == 1 and len(col_ks.sizes) == 1)
    if plain and hasattr(COO, "from_csr"):
        return "csr", None
    return "coo", (row_ks, col_ks, n_batch)


class ProductRunner:
    """Callable with :func:`flexsparse.tiling.tiled_spgemm`'s signature running the tiles on ``client``.

    Args:
        client: a ``distributed.Client``.
        resources: the workers (:func:`~flexsparse.distributed.cluster.worker_resources`); ``None``:
            asked from the scheduler when the first product is planned (a call whose products
            all run locally never asks).
        progress: show a progress bar over output blocks (rich).
        tile_memory: the tile budget in bytes; ``None`` derives it from the workers' memory.
        local_flops: products with fewer multiply-adds run in the calling process (``None``:
            :data:`~flexsparse._limits.DISTRIBUTED_MIN_FLOPS`; 0 sends every product to the cluster).
    """

    #: :func:`flexsparse.contract._bounded.bounded_pair` passes ``decode=`` (the key spaces of the
    #: step): the result comes back as the step's COO, laid out by the workers.
    decodes = True

    def __init__(self, client: Any, resources: WorkerResources | None = None, progress: bool = False,
                 tile_memory: int | None = None, local_flops: int | None = None) -> None:
        self.client = client
        self._resources = resources
        self.progress = progress
        self.tile_memory = tile_memory
        self.local_flops = _limits.DISTRIBUTED_MIN_FLOPS if local_flops is None else int(local_flops)
        self.plans: list[ProductPlan] = []
        #: reports of the plain products run through :meth:`plain_product`
        self.plain_reports: list[DistributedReport] = []

    # ------------------------------------------------------------------ planning
    @property
    def resources(self) -> WorkerResources:
        if self._resources is None:
            from flexsparse.distributed.cluster import worker_resources

            self._resources = worker_resources(self.client)
        return self._resources

    @staticmethod
    def statistics(A: Any, B: Any) -> Any:
        """The count-only statistics of ``A @ B`` the plan is made from."""
        from flexsparse.tiling import ByteModel, TileStatistics
        from flexsparse.tiling.engine import as_operand

        bm = ByteModel.for_output(result_dtype(A.dtype, B.dtype), index_dtype_for((B.shape[1],)))
        return TileStatistics(as_operand(A, "a"), as_operand(B, "b"), bm)

    def plan(self, A: Any, B: Any, strategy: str, overbook: float, stats: Any = None,
             direct: bool = False) -> ProductPlan:
        """Tiles of ``A @ B`` (flexsparse CSR) for the attached workers.

        ``direct``: the result is gathered in memory, so a cluster of at most
        :data:`~flexsparse._limits.DIRECT_GATHER_MAX_GROUPS` threads takes one tile per thread
        (blocks that the workers can compute straight into the result, :mod:`._direct`), the
        first weighted by :func:`._direct.back_factor` (measured on the workers by earlier such products,
        :data:`~flexsparse._limits.DIRECT_BACK_WORK_FACTOR` before).

        When even the whole product's working set, with every multiply-add counted as an
        output entry, fits the tile budget, the grid is one tile without asking the strategy
        (its sampling is serial work in the calling process); otherwise the strategy sizes it.
        """
        from flexsparse.tiling import TilePlan, get_strategy
        from flexsparse.tiling.workingset import tile_bytes

        m, k = A.shape
        n = B.shape[1]
        stats = self.statistics(A, B) if stats is None else stats
        bm = stats.byte_model
        res = self.resources
        if self.tile_memory is not None:
            limit = int(self.tile_memory)
        else:
            resident = B.nbytes + A.nbytes // max(1, res.n_workers)
            limit = tile_budget(res.min_memory, max(res.threads), resident)
        get_strategy(strategy)
        whole = tile_bytes(bm, m, n, k, A.nnz, k, B.nnz, float(stats.flops(1).sum())) if m and n else 0
        if whole <= limit:
            grid = TilePlan(strategy, (m, k, n), limit, max(1, m), max(1, n), max(1, k))
        else:
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
        # output entries per multiply-add, sampled (a symbolic product of m/200 rows: ~1 ms of
        # the calling process on R-MAT scale 15); when the whole product fits one tile's budget
        # with every multiply-add an entry, no tile can exceed it and 1.0 (an upper bound) only
        # sizes the predicted result
        ratio = 1.0
        if m and n and k and whole > limit:
            rng = np.random.default_rng(0)
            rows = np.sort(rng.choice(m, size=min(m, max(64, m // 200)), replace=False))
            counted = float(stats.output_counts(rows, 1)[:, 0, 0].sum())
            ratio = counted / max(1.0, float(flops_rows[rows].sum()))
        # results gathered in memory on at most two threads: one tile per thread, computed
        # straight into the result (the first written down, costlier: :mod:`._direct`)
        few = direct and res.total_threads <= _limits.DIRECT_GATHER_MAX_GROUPS
        pplan = build_plan(shape=(m, k, n), strategy=grid.strategy, limit=limit,
                           strategy_tiles=grid.n_tiles, row_size=grid.row_size, k_bounds=k_bounds,
                           col_bounds=col_bounds, flops_rows=flops_rows,
                           nnz_a_rows=stats.nnz_a_rows.astype(np.float64), nnz_b_panels=nnz_b,
                           ratio=ratio, elem=bm.elem, value_bytes=bm.value_bytes,
                           n_workers=res.n_workers, threads=res.total_threads,
                           max_balance_tiles=res.total_threads if few else None,
                           first_weight=_direct.back_factor(self.client, A, B) if few else 1.0)
        check_task_count(len(pplan.tiles), grid.strategy)
        return pplan

    # ------------------------------------------------------------------ running
    def __call__(self, a: Any, b: Any, *, memory_limit: Any = None, tiling: str = "overbook",
                 overbook: float = 0.10, out: Path | None = None, progress: bool = False,
                 out_shape: tuple[int, ...] | None = None, out_layout: Any = None, decode: Any = None,
                 out_dtype: Any = None, sort: bool = True, **_: Any) -> tuple[Any, DistributedReport]:
        """``a @ b`` on the cluster, with the call signature of :func:`flexsparse.tiling.tiled_spgemm`.

        ``memory_limit`` and ``reserved`` describe the calling process and are not used here: the
        tiles are planned against the workers' budget (``tile_memory`` or their memory limits).
        ``decode``: ``(row KeySpace, column KeySpace, batch modes, result shape)`` of the einsum
        step (:attr:`decodes`); the result is then that step's COO, laid out by the workers.
        Without it (or for a product run locally) the result is the CSR product. ``out_dtype``:
        the dtype a store written with ``out=`` records (the einsum result's; default the product's).
        ``sort=False`` (a CSR result only) leaves each row's columns in the kernel's first-touch
        order, as the in-process engine returns a plain product.
        """
        from flexsparse.tiling.engine import as_operand

        t0 = time.perf_counter()
        A, B = as_operand(a, "a").csr, as_operand(b, "b").csr
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"shapes do not match for a @ b: {A.shape} and {B.shape}")
        # a product planned before on this client (same contents, workers and settings) reuses
        # its plan: statistics and planning are ~2 ms of the calling process before any task
        digests, content = _cache.content_key(A, B)
        plans = _cache.plans(self.client)
        seen = plans.get(content) if content is not None else None
        stats = None
        if seen is None:
            stats = self.statistics(A, B)
            seen = (float(stats.flops(1).sum()) if A.shape[0] else 0.0, {})
        if content is not None:   # most recently run last
            plans.pop(content, None)
            plans[content] = seen
            while len(plans) > _limits.DIRECT_BACK_PRODUCTS_KEPT:
                plans.pop(next(iter(plans)))
        if out is None and (A.shape[0] == 0 or seen[0] < self.local_flops):
            return self._local(A, B, t0, sort)
        direct = out is None
        setting = (tiling, float(overbook), direct, self.resources, self.tile_memory,
                   _direct.back_factor(self.client, A, B))
        plan = seen[1].get(setting)
        if plan is None:
            plan = self.plan(A, B, tiling, float(overbook), stats, direct=direct)
            if content is not None:
                seen[1].clear()   # one plan per product: the last settings
                seen[1][setting] = plan
        self.plans.append(plan)
        t_plan = time.perf_counter() - t0
        m, _, n = plan.shape
        dtype = result_dtype(A.dtype, B.dtype)
        run = _Run(self, plan, A, B, out)
        run._digests.update(digests)
        try:
            if out is not None:
                from flexsparse.formats.store import MatrixLayout

                entries: dict[int, Any] = {}
                run.collect(run.submit(list(range(plan.n_groups)), "write"), "write", entries.__setitem__)
                t_asm = time.perf_counter()
                layout = out_layout if out_layout is not None else MatrixLayout.identity((m, n))
                store_dtype = dtype if out_dtype is None else np.dtype(out_dtype)  # the einsum result's
                result = _store.commit(Path(out), run.directory, [entries[g] for g in sorted(entries)],
                                       out_shape or (m, n), store_dtype, layout)
                gather = "out="
            else:
                result, t_asm = run.gather(dtype, decode, sort)
                gather = "shared memory" if run.path is not None else "network"
        except BaseException:
            run.cancel()
            raise
        finally:
            run.close()
        run.keep_panels()
        report = DistributedReport(plan.strategy, plan.limit, plan.shape, len(plan.tiles), plan.n_groups,
                                   run.n_tasks, sum(t.bounded for t in plan.tiles), run.resubmitted,
                                   plan.n_workers, plan.balance, run.received, t_plan,
                                   time.perf_counter() - t_asm, time.perf_counter() - t0, gather, run.shared,
                                   run.block_seconds)
        return result, report

    def plain_product(self, a: Any, b: Any, sort: bool) -> Any:
        """``a @ b`` (CSR) for the einsum engine's plain 2-D product path
        (:func:`flexsparse.contract._matmul2d.matmul_2d`): rows sorted only when ``sort`` asks,
        as the in-process engine computes it; the report goes to :attr:`plain_reports`."""
        c, report = self(a, b, sort=sort)
        self.plain_reports.append(report)
        return c

    def _local(self, A: Any, B: Any, t0: float, sort: bool = True) -> tuple[Any, DistributedReport]:
        """A product too small for the cluster, run here (as the in-process engine would)."""
        from flexsparse.kernels.cpu.spgemm import spgemm

        c = spgemm(A, B, sort=sort)
        m, k = A.shape
        report = DistributedReport("local", 0, (m, k, B.shape[1]), 0, 0, 0, 0, 0, 0, 1.0, 0, 0.0, 0.0,
                                   time.perf_counter() - t0, "local", 0)
        return c, report


_GONE = ("lost", "error", "cancelled")


class _Run:
    """The futures of one product: submission, resubmission, collection, gathering, cancellation."""

    def __init__(self, runner: ProductRunner, plan: ProductPlan, A: Any, B: Any, out: Path | None) -> None:
        self.client, self.plan, self.A, self.B = runner.client, plan, A, B
        self.addresses = runner.resources.addresses
        self.progress = runner.progress
        self.out = out
        self.directory = _store.prepare(out) if out is not None else None
        self.token = uuid.uuid4().hex[:12]
        self.panels: dict[tuple[int, int, int, int, str | None], Any] = {}   # (..., worker or None)
        self._digests: dict[tuple[int, int, int, int], str] = {}
        self.kept: dict[tuple[str, str | None], Any] = {}   # panels small enough to keep for the next product
        self.futures: dict[int, list[Any]] = {}
        self.roots: dict[int, Any] = {}
        self.attempts = np.zeros(plan.n_groups, dtype=np.int64)
        self._seen_workers = list(self.addresses)
        self.resubmitted = 0
        self.n_tasks = 0
        # A is B and B is sent whole: the tiles cut A's rows from B's broadcast copy
        n = plan.shape[2]
        self.self_product = plan.n_k == 1 and len(plan.col_bounds) == 2 and same_matrix(A, B)
        # a row's entries are split over column panels (or a hub row's column sub-panels)
        self.per_row = any(t.c0 != 0 or t.c1 != n for t in plan.tiles)
        # gathering state (set by gather)
        self.path: str | None = None
        self.target: _gather.Target | None = None
        self.dst: dict[int, Any] = {}
        self.keys: Any = None
        self.direct: dict[int, tuple[int, bool, int]] = {}   # group -> (offset, back, room)
        self.extra: list[Any] = []
        self.received = 0
        self.shared = 0
        self.block_seconds: tuple[float, ...] = ()   # each direct block's thread CPU seconds
        self.gathered = False
        # pieces with rows in sorted column order (gather clears it for a plain product)
        self.sort = True

    # ------------------------------------------------------------------ data
    def _panel(self, k0: int, k1: int, c0: int, c1: int, addr: str | None = None) -> Any:
        """Future of B's rows ``[k0, k1)`` and columns ``[c0, c1)``, scattered to every worker once
        (``addr``: a copy of its own on that worker only).

        A panel of at most :data:`~flexsparse._limits.DISTRIBUTED_KEEP_PANEL_BYTES` stays on the
        workers after the product (the last product's panels, per client): the next product with
        the same panel (its contents hashed) reuses it instead of sending it again. A broadcast
        panel kept between products may lose its copies but one (dask's active memory manager
        drops replicas no task waits for, every 2 s), so a task elsewhere first fetches it (4 ms
        for 3.2 MB); a copy of a worker's own is a key of one replica, which it keeps.
        """
        slot = (k0, k1, c0, c1, addr)
        fut = self.panels.get(slot)
        if fut is None or fut.status in _GONE:
            block = _tasks.block(self.B, k0, k1, c0, c1)
            token = None
            if block.nbytes <= _limits.DISTRIBUTED_KEEP_PANEL_BYTES:
                from dask.base import tokenize

                digest = self._digests.get(slot[:4])
                if digest is None:   # hashed once per panel, whichever workers get a copy
                    digest = self._digests[slot[:4]] = tokenize(block.indptr, block.indices, block.data,
                                                                block.shape, block.sorted_indices)
                token = (digest, addr)
                fut = _cache.kept_panels(self.client).get(token)
            if fut is None or fut.status in _GONE:
                where = {"broadcast": True} if addr is None else {"workers": [addr]}
                try:
                    fut = self.client.scatter(block, hash=False, **where)
                except (OSError, KeyError, TimeoutError):  # a worker went away during the scatter
                    self._live()
                    fut = self.client.scatter(block, broadcast=True, hash=False)
            if token is not None:
                self.kept[token] = fut
            self.panels[slot] = fut
        return fut

    def keep_panels(self) -> None:
        """Keep this product's small panels on the workers for the next product (and only them)."""
        kept = _cache.kept_panels(self.client)
        kept.clear()
        kept.update({t: f for t, f in self.kept.items() if f.status not in _GONE})

    def _live(self) -> list[str]:
        """Addresses of the workers attached now (a restarted worker comes back on a new port)."""
        from flexsparse.distributed.cluster import worker_resources

        try:
            self.addresses = worker_resources(self.client, fresh=True).addresses
        except RuntimeError:  # every worker is restarting: wait for one to come back
            self.client.wait_for_workers(1, timeout=120)
            self.addresses = worker_resources(self.client, fresh=True).addresses
        return list(self.addresses)

    def _a_sources(self, groups: list[int], own: bool = False) -> dict[int, tuple[Any, int, bool]]:
        """``{group: (future of the CSR its tiles cut A from, first row in it, scattered for it)}``.

        A group's rows are a zero-copy row slice of A (only the row pointers are new), sent in
        one call per worker; a self-product sends nothing (the rows are cut from B's copy).
        """
        p = self.plan
        if self.self_product:
            if own:
                return {g: (self._panel(0, p.shape[1], 0, p.shape[2], self._where(g)), 0, False) for g in groups}
            whole = self._panel(0, p.shape[1], 0, p.shape[2])
            return {g: (whole, 0, False) for g in groups}   # rows cut at their own index
        by_worker: dict[str, list[tuple[int, Any]]] = {}
        k = p.shape[1]
        for g in groups:
            t = p.group_tiles(g)[0]
            addr = self.addresses[p.worker_of_group[g] % len(self.addresses)]
            by_worker.setdefault(addr, []).append((g, _tasks.block(self.A, t.r0, t.r1, 0, k)))
        out: dict[int, tuple[Any, int, bool]] = {}
        for addr, items in by_worker.items():
            try:
                futs = self.client.scatter([blk for _, blk in items], workers=[addr], hash=False)
            except (OSError, KeyError):  # that worker went away meanwhile: let the scheduler place them
                self._live()
                futs = self.client.scatter([blk for _, blk in items], hash=False)
            for (g, _), f in zip(items, futs):
                out[g] = (f, p.group_tiles(g)[0].r0, True)
        return out

    # ------------------------------------------------------------------ tasks
    def _place(self, g: int) -> dict[str, Any]:
        """Where group ``g``'s tiles run: the worker the plan assigned it to, as a loose restriction
        (another worker takes them when that one is gone). Left to itself the scheduler may queue
        both blocks of a two-block product on one worker when the B panel is on both (seen on 2
        workers, R-MAT scale 15: 0.169 s, the blocks one after the other, against 0.09-0.10 s)."""
        return {"workers": [self._where(g)], "allow_other_workers": True}

    def _where(self, g: int) -> str:
        """Address of the worker group ``g`` is assigned to (among the live ones)."""
        return self.addresses[self.plan.worker_of_group[g] % len(self.addresses)]

    def _stage_task(self, g: int, root: Any, stage: str) -> Any:
        """The task after group ``g``'s root for ``stage`` (``piece``: the root itself)."""
        c, attempt = self.client, int(self.attempts[g]) - 1
        key = f"fs-{stage}-{self.token}-{g}-{attempt}"
        if stage == "piece":
            return root
        self.n_tasks += 1
        if stage == "count":
            return c.submit(_tasks.count_piece, root, self.per_row, key=key, pure=False)
        if stage == "place":
            return c.submit(_tasks.place_piece, root, self.target, self.dst[g], self.keys, f"group {g}",
                            key=key, pure=False)
        return c.submit(_tasks.write_piece, root, str(self.directory), g, f"group {g}", key=key, pure=False)

    def submit(self, groups: list[int], stage: str) -> dict[Any, int]:
        """Submit the tiles, addition trees and ``stage`` task of ``groups``; ``{final future: group}``."""
        c, p = self.client, self.plan
        sources = self._a_sources(groups, own=stage == "direct")
        if stage == "direct":
            return self._submit_direct(groups, sources)
        finals = {}
        for g in groups:
            attempt = int(self.attempts[g])
            self.attempts[g] += 1
            src, row0, scattered = sources[g]
            leaves = []
            for t in p.group_tiles(g):
                # a hub block's column sub-panel is cut on the worker from its panel's copy
                ci = int(np.searchsorted(p.col_bounds, t.c0, side="right")) - 1
                pc0, pc1 = int(p.col_bounds[ci]), int(p.col_bounds[ci + 1])
                b_pan = self._panel(t.k0, t.k1, pc0, pc1)
                b_cut = None if (t.c0, t.c1) == (pc0, pc1) else (t.c0 - pc0, t.c1 - pc0)
                meta = (t.r0, t.r1, t.c0, t.c1, int(p.n_k > 1))
                cut = None if (scattered and p.n_k == 1) else (t.r0 - row0, t.r1 - row0, t.k0, t.k1)
                leaves.append(c.submit(_tasks.run_tile, src, b_pan, meta, p.shape[2], p.limit, t.bounded,
                                       t.describe(), cut, b_cut, self.sort,
                                       key=f"fs-tile-{self.token}-{t.tile}-{attempt}", pure=False,
                                       **self._place(g)))
            level, depth, adds = leaves, 0, []
            while len(level) > 1:
                nxt = [c.submit(_tasks.add_pieces, level[i], level[i + 1], p.shape[2], f"group {g}",
                                key=f"fs-add-{self.token}-{g}-{depth}-{i}-{attempt}", pure=False)
                       for i in range(0, len(level) - 1, 2)]
                adds += nxt
                if len(level) % 2:
                    nxt.append(level[-1])
                level, depth = nxt, depth + 1
            root = level[0]
            self.n_tasks += len(leaves) + len(adds)
            self.roots[g] = root
            final = self._stage_task(g, root, stage)
            self.futures[g] = ([src] if scattered else []) + leaves + adds + [final]
            finals[final] = g
        return finals

    def _submit_direct(self, groups: list[int], sources: dict[int, tuple[Any, int, bool]]) -> dict[Any, int]:
        """One task per group computing its block into the result's file (:mod:`._direct`), all sent
        in one graph: the client's stream to the scheduler holds a message sent within 10 ms of
        the previous one, so a second ``submit`` started its block ~10 ms after the first
        (2 workers, R-MAT scale 15). Each task is placed on its group's worker
        (:meth:`_place`, here as a per-key annotation of the one graph), with B from that worker's
        own copy (:meth:`_panel`)."""
        import dask

        p = self.plan
        keys, args, where = [], [], {}
        for g in groups:
            attempt = int(self.attempts[g])
            self.attempts[g] += 1
            src, row0, scattered = sources[g]
            t = p.group_tiles(g)[0]
            offset, back, room = self.direct[g]
            cut = None if scattered else (t.r0 - row0, t.r1 - row0, 0, p.shape[1])
            keys.append(f"fs-direct-{self.token}-{g}-{attempt}")
            # B from the group's worker's own copy (a self-product's A is that copy too)
            args.append((src, self._panel(0, p.shape[1], 0, p.shape[2], self._where(g)), t.r0, t.describe(), cut,
                         self.target, offset, back, room, self.sort))
            where[keys[-1]] = [self._where(g)]
        # a builtin bound method, so that a scheduler without flexsparse can unpickle it
        with dask.annotate(workers=where.get, allow_other_workers=True):
            futs = self.client.map(_tasks.run_tile_direct, *map(list, zip(*args)), key=keys, pure=False)
        finals = {}
        for g, fut in zip(groups, futs):
            src, _, scattered = sources[g]
            self.n_tasks += 1
            self.futures[g] = ([src] if scattered else []) + [fut]
            finals[fut] = g
        return finals

    def advance(self, groups: list[int], stage: str) -> dict[Any, int]:
        """The ``stage`` task of each group, after the root computed in an earlier stage."""
        finals = {}
        for g in groups:
            final = self._stage_task(g, self.roots[g], stage)
            self.futures[g] = [self.roots[g], final]
            finals[final] = g
        return finals

    def collect(self, finals: dict[Any, int], stage: str, on_result: Any) -> None:
        """Wait for ``finals`` (``{future: group}``), passing each result to ``on_result(group, value)``;
        groups whose worker was lost are resubmitted (their whole chain, data scattered again)."""
        from distributed import as_completed

        p = self.plan
        if not finals:
            return
        with tile_bar(len(finals), self.progress and stage != "place") as advance:
            # on this client's event loop: as_completed otherwise waits on the loop of the process's
            # default client (the last one made), and a product on another client's cluster then
            # learnt of its tasks' ends ~20 ms late (two embedded clusters, R-MAT scale 15)
            pending = as_completed(list(finals), loop=self.client.loop)
            for fut in pending:
                g = finals.pop(fut)
                exc: BaseException | None = None
                try:
                    # a direct block's outcome is in the result's file (read by gather_direct):
                    # fetching its result would be one more round trip to its worker
                    res = None if (stage == "direct" and fut.status == "finished") else fut.result()
                except _tasks.TileError:
                    raise
                except Exception as e:  # noqa: BLE001 - a lost worker (its data went with it): resubmit
                    exc = e
                if exc is None:
                    on_result(g, res)
                    if stage == "count":      # the root stays for the placing stage
                        self.futures[g] = [self.roots[g]]
                    else:
                        self.futures.pop(g, None)
                        self.roots.pop(g, None)
                    fut.release()
                    advance()
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
                new = self.submit([g], stage)
                finals.update(new)
                pending.update(new)

    def _await_marks(self, finals: dict[Any, int], marked: Any) -> bool:
        """Wait for the direct blocks ``finals`` by their end marks in the result file
        (:func:`._direct.await_marks`); True when every block marked its end (their futures are
        released), False when a task ended without (:meth:`collect` takes over)."""
        with tile_bar(len(finals), self.progress) as advance:
            if not _direct.await_marks(finals, marked, _direct.expected_wait(self.client, self.A, self.B), advance):
                return False
        for fut, g in finals.items():   # the scheduler forgets them; their workers drop the returns
            self.futures.pop(g, None)
            fut.release()
        return True

    # ------------------------------------------------------------------ gathering
    def _destinations(self, counts: dict[int, Any]) -> tuple[dict[int, Any], int, np.ndarray | None]:
        """``(dst per group, total entries, row pointers or None)`` in row-major order.

        One column panel: groups are whole row ranges, each placed contiguously (``dst`` an int).
        Several: a row's entries are its panels' in column order (``dst`` the row starts of a
        group's rows; the row pointers come from the per-row counts).
        """
        p = self.plan
        order = sorted(counts, key=lambda g: (p.group_tiles(g)[0].c0, p.group_tiles(g)[0].r0))
        if not self.per_row:
            dst, pos = {}, 0
            for g in order:
                dst[g] = pos
                pos += int(counts[g])
            return dst, pos, None
        m = p.shape[0]
        per_row = np.zeros(m, dtype=np.int64)
        for g in order:
            t = p.group_tiles(g)[0]
            per_row[t.r0:t.r1] += counts[g]
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(per_row, out=indptr[1:])
        running = indptr[:-1].copy()
        dst = {}
        for g in order:
            t = p.group_tiles(g)[0]
            dst[g] = running[t.r0:t.r1].copy()
            running[t.r0:t.r1] += counts[g]
        return dst, int(indptr[-1]), indptr

    def _fill_uncovered(self, indptr: np.ndarray, dst: dict[int, Any], counts: dict[int, Any]) -> None:
        """Row pointers of the rows no group covers (rows without a multiply-add): each
        repeats the end of the block before it."""
        p = self.plan
        end_row, offset = 0, 0
        indptr[0] = 0
        for g in sorted(dst, key=lambda g: p.group_tiles(g)[0].r0):
            t = p.group_tiles(g)[0]
            if t.r0 > end_row:
                indptr[end_row + 1:t.r0 + 1] = offset
            end_row, offset = t.r1, int(dst[g]) + int(counts[g])
        if end_row < p.shape[0]:
            indptr[end_row + 1:] = offset

    def _keys_arg(self, keys: Any) -> Any:
        """The key spaces as a task argument: inline when small, else scattered once to every worker."""
        if keys is None:
            return None
        size = sum(getattr(ks.table, "nbytes", 0) + sum(getattr(c, "nbytes", 0)
                                                        for c in vars(ks).get("_direct_table", []))
                   for ks in keys[:2])
        if size <= _limits.GATHER_INLINE_KEY_BYTES:
            return keys
        fut = self.client.scatter(keys, broadcast=True, hash=False)
        self.extra.append(fut)
        return fut

    def gather(self, dtype: np.dtype, decode: Any, sort: bool = True) -> tuple[Any, float]:
        """The product (a CSR, or with ``decode`` the einsum step's COO) and when gathering began;
        ``sort=False``: a CSR result keeps its rows in first-touch column order."""
        from flexsparse.formats.coo import COO
        from flexsparse.formats.csr import CSR

        p = self.plan
        m, _, n = p.shape
        layout, keys = ("csr", None) if decode is None else _coo_layout(decode)
        shape = (m, n) if decode is None else tuple(decode[3])
        idt = index_dtype_for((n,)) if layout == "csr" else index_dtype_for(shape)
        groups = list(range(p.n_groups))
        # a CSR result may keep the kernel's first-touch column order when asked (partial sums
        # are added sorted; a COO result is canonical: its rows are sorted)
        self.sort = sort or layout != "csr" or p.n_k > 1
        predicted = float(sum(p.out_bytes))
        if (layout == "csr" and predicted >= _limits.GATHER_SHM_MIN_BYTES and self.direct_plan()
                and _direct.direct_capable(self.A.dtype, self.B.dtype)):
            got = self.gather_direct(dtype, idt)
            if got is not None:
                csr, t_asm = got
                return (csr if decode is None else COO.from_csr(csr)), t_asm
        two_phase = predicted >= _limits.GATHER_SHM_MIN_BYTES and _gather.shm_free() >= 2 * predicted
        counts: dict[int, Any] = {}
        pieces: dict[int, Any] = {}
        if two_phase:
            self.collect(self.submit(groups, "count"), "count", counts.__setitem__)
        else:
            self.collect(self.submit(groups, "piece"), "piece", pieces.__setitem__)
            for g, piece in pieces.items():
                counts[g] = np.diff(piece[1]) if self.per_row else int(piece[1][-1])
                self.received += sum(int(x.nbytes) for x in piece[1:])
        t_asm = time.perf_counter()
        dst, nnz, indptr = self._destinations(counts)
        target = _gather.Target(None, layout, m, nnz, len(shape), idt.str, np.dtype(dtype).str)
        self.path = _gather.create(target.nbytes) if two_phase else None
        if self.path is not None:
            target = _gather.Target(self.path, layout, m, nnz, len(shape), idt.str, np.dtype(dtype).str)
            buffer: Any = _gather.map_target(target, keep=True)
        else:
            buffer = np.empty(target.nbytes, dtype=np.uint8)
        out = _gather.arrays(buffer, target)
        sink = _gather.ArraySink(out)
        if layout == "csr":
            if indptr is None:  # one panel: each group writes its rows' pointers, here the others
                self._fill_uncovered(out["indptr"], dst, counts)
            else:
                out["indptr"][:] = indptr
        if two_phase:
            self.target, self.dst, self.keys = target, dst, self._keys_arg(keys)

            def placed(g: int, piece: Any) -> None:
                if piece is None:
                    self.shared += sum(int(v) for v in _piece_bytes(counts[g], target))
                    return
                self.received += sum(int(x.nbytes) for x in piece[1:])
                _gather.place(sink, target, piece, dst[g], keys)

            self.collect(self.advance(groups, "place"), "place", placed)
        else:
            for g, piece in pieces.items():
                _gather.place(sink, target, piece, dst[g], keys)
            pieces.clear()
        self.gathered = True   # the file now lives with the result (kept for reuse when it is freed)
        if layout == "csr":
            csr = CSR._trusted(out["indptr"], out["indices"], out["data"], (m, n), self.sort)
            return (csr if decode is None else COO.from_csr(csr)), t_asm
        return COO._new(None, out["coords"], out["data"], shape, True), t_asm

    def direct_plan(self) -> bool:
        """Whether the product's blocks can be computed straight into the result (:mod:`._direct`):
        at most two whole row blocks (one id window, one column panel), none bounded."""
        p = self.plan
        return (1 <= p.n_groups <= _limits.DIRECT_GATHER_MAX_GROUPS and p.n_k == 1 and not self.per_row
                and all(len(p.group_tiles(g)) == 1 and not p.group_tiles(g)[0].bounded for g in range(p.n_groups)))

    def gather_direct(self, dtype: np.dtype, idt: np.dtype) -> tuple[Any, float] | None:
        """The CSR product computed by the workers straight into one shared-memory file (the
        first block's rows written down to its multiply-adds' end, the second's up from there;
        :mod:`._direct`), and when gathering began; ``None`` when no such file can be made or a
        worker cannot open it (another host): the product is then gathered in two phases."""
        from flexsparse.formats.csr import CSR

        p = self.plan
        m, _, n = p.shape
        order = sorted(range(p.n_groups), key=lambda g: p.group_tiles(g)[0].r0)
        # room of each block: its exact multiply-adds (float sums of integers), plus a margin
        rooms = [int(round(p.group_tiles(g)[0].flops)) + _direct.MARGIN for g in order]
        cap = _direct.capacity(sum(rooms) - _direct.MARGIN * len(rooms))
        if len(order) == 1:
            direct = {order[0]: (0, False, cap)}
        else:   # the two blocks meet at a slot kept for the product, moved only when one outgrows it
            meet = _direct.meeting_slot(self.client, self.A, self.B, rooms, cap)
            direct = {order[0]: (meet, True, meet), order[1]: (meet, False, cap - meet)}
        target = _gather.Target(None, "csr", m, cap, 2, idt.str, np.dtype(dtype).str)
        self.path = _gather.create(target.nbytes)
        if self.path is None:
            return None
        self.target = target = _gather.Target(self.path, "csr", m, cap, 2, idt.str, np.dtype(dtype).str)
        self.direct = direct
        out = _gather.arrays(_gather.map_target(target, keep=True), target)
        backs = {g: self.direct[g][1] for g in order}
        for back in set(backs.values()):   # marks a block overwrites with its CPU seconds
            _direct.note_seconds(out["indices"], back, float("nan"))
        finals = self.submit(order, "direct")
        if not self._await_marks(finals, lambda g: not np.isnan(_direct.noted_seconds(out["indices"], backs[g]))):
            self.collect(finals, "direct", lambda g, res: None)
        t_asm = time.perf_counter()
        indptr = out["indptr"]
        # each block wrote its rows' pointers, so its first and last are its (start, end)
        spans = {g: (int(indptr[p.group_tiles(g)[0].r0]), int(indptr[p.group_tiles(g)[0].r1]),
                     _direct.noted_seconds(out["indices"], backs[g])) for g in order}
        if any(np.isnan(span[2]) for span in spans.values()):   # a worker could not open the file
            del out, indptr
            _gather.release(self.path)
            self.path, self.target, self.direct = None, None, {}
            return None
        if len(order) == 2:
            _direct.record_back_factor(self.client, self.A, self.B, p, order, spans)
        self.block_seconds = tuple(spans[g][2] for g in order)
        if min(self.block_seconds) > 0:   # every block measured (no fresh pages)
            _direct.record_wait(self.client, self.A, self.B, max(span[2] for span in spans.values()))
        for g0, g1 in zip(order, order[1:]):
            if spans[g0][1] != spans[g1][0]:
                raise RuntimeError(f"blocks {g0} and {g1} of the result do not meet: {spans[g0]} {spans[g1]}")
        start, end = spans[order[0]][0], spans[order[-1]][1]
        # rows no block covers (no multiply-add) repeat the end of the block before them
        row, pos = 0, start
        for g in order:
            t = p.group_tiles(g)[0]
            indptr[row:t.r0 + 1] = pos
            row, pos = t.r1, spans[g][1]
        indptr[row:] = pos
        if start:
            indptr -= start
        self.shared += (end - start) * (np.dtype(idt).itemsize + np.dtype(dtype).itemsize)
        self.gathered = True
        return CSR._trusted(indptr, out["indices"][start:end], out["data"][start:end], (m, n), self.sort), t_asm

    # ------------------------------------------------------------------ ending
    def close(self) -> None:
        """Remove the shared-memory file of a product that failed; a gathered result's file
        lives with its arrays and is kept for reuse when they are freed (:mod:`._gather`)."""
        if not self.gathered:
            _gather.release(self.path)

    def cancel(self) -> None:
        """Cancel every future of the product and remove what it wrote."""
        futs = [f for fs in self.futures.values() for f in fs] + list(self.panels.values()) + self.extra
        if futs:
            self.client.cancel(futs)
        if self.directory is not None:
            _store.abort(Path(self.out), self.directory, list(range(self.plan.n_groups)))


def _piece_bytes(count: Any, target: _gather.Target) -> tuple[int, int]:
    """Bytes a piece of ``count`` entries (or per-row counts) fills in ``target`` (index, values)."""
    nnz = int(np.sum(count))
    idx = np.dtype(target.index_dtype).itemsize * (target.ndim if target.layout == "coo" else 1)
    return nnz * idx, nnz * np.dtype(target.value_dtype).itemsize
