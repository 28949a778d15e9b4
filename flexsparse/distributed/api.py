"""The user-facing calls of :mod:`flexsparse.distributed`: :func:`einsum` and :func:`plan`.

:func:`einsum` runs :func:`flexsparse.einsum` itself -- the same parsing, unary pass,
sparsity-aware path, output format and dtype rules -- with the engine's product runner
(:data:`flexsparse.contract._bounded.PRODUCT_RUNNER`) set to a
:class:`~flexsparse.distributed.runner.ProductRunner`: every sparse x sparse step becomes
tiles on the cluster (the bounded engine converts dense operands of a sparse step to COO); a
dense x dense step that fits runs in the calling process with BLAS.
Operands that are :class:`~flexsparse.distributed.shards.Shards` or dask arrays take the
shard path of :mod:`flexsparse.distributed.shards` (one task per shard, partial results
added by a tree).

:func:`plan` computes, from statistics alone, what :func:`einsum` would do on a cluster of a
given size (see :mod:`flexsparse.distributed.stats_plan`).

Cost: that of :func:`flexsparse.einsum` with each sparse x sparse product's work spread over the
workers, plus moving the operand blocks out (each once) and the result pieces back (none
with ``out=``); starting an embedded cluster takes about a second per worker process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flexsparse._util import parse_bytes

if TYPE_CHECKING:
    from flexsparse.distributed.stats_plan import DistributedPlan

__all__ = ["einsum", "plan"]


def _tile_memory(tile_memory: Any) -> int | None:
    return None if tile_memory is None else parse_bytes(tile_memory)


def _small(subscripts: str, operands: Any, local_flops: int | None) -> bool:
    """Whether the multiply-adds of every sparse x sparse step together stay below ``local_flops``:
    counted exactly for two COO operands (:func:`~.stats_plan.pair_flops`), else estimated from
    statistics (:func:`~.stats_plan.sparse_flops`); operands neither can read are not small."""
    from flexsparse import _limits
    from flexsparse.distributed.stats_plan import pair_flops, sparse_flops

    limit = _limits.DISTRIBUTED_MIN_FLOPS if local_flops is None else local_flops
    if limit <= 0:
        return False
    try:
        flops = pair_flops(subscripts, *operands, stop=limit) if len(operands) == 2 else None
        return (sparse_flops(subscripts, *operands) if flops is None else flops) < limit
    except (TypeError, ValueError):  # the engine raises its own error for these
        return False


def einsum(subscripts: str, *operands: Any, client: Any = None, address: str | None = None,
           workers: int | None = None, worker_memory: int | str | None = None,
           out: str | os.PathLike | None = None, progress: bool = True, as_dask: bool = False,
           format: str = "auto", optimize: Any = "auto", tiling: str = "overbook",
           overbook: float = 0.10, tile_memory: int | str | None = None,
           local_flops: int | None = None, return_report: bool = False) -> Any:
    """:func:`flexsparse.einsum` with its sparse x sparse products run as tiles on dask.distributed.

    Args:
        subscripts, *operands: as :func:`flexsparse.einsum`; operands may also be
            :class:`~flexsparse.distributed.Shards` or dask arrays with flexsparse, pydata/sparse
            or SciPy sparse chunks.
        client: a ``distributed.Client`` to run on (left running).
        address: a scheduler address such as ``"tcp://host:8786"`` (a client is opened and closed).
        workers: worker processes of the embedded ``LocalCluster`` (default: one per core).
        worker_memory: memory limit of each embedded worker (bytes or ``"4GB"``; default: the
            available memory split evenly).
        out: a directory or ``.npz`` path: the result is written there tile by tile in the
            format ``flexsparse.load``/:class:`flexsparse.tiling.LazyResult` read, and a lazy
            handle is returned.
        progress: show a progress bar over tiles.
        as_dask: return a ``dask.array`` whose chunks are flexsparse ``COO`` tensors.
        format, optimize: as :func:`flexsparse.einsum`.
        tiling, overbook: the tiling strategy (registered name) and its overbooking fraction.
        tile_memory: the working-set budget of one tile (default: derived from each worker's
            memory limit, its threads and the operands resident on it).
        local_flops: sparse x sparse products of fewer multiply-adds run in the calling process,
            where they take less time than the round trips of sending them out (default
            :data:`flexsparse._limits.DISTRIBUTED_MIN_FLOPS`; ``0`` sends every product out). A
            call whose steps together are estimated below it (statistics only,
            :func:`~flexsparse.distributed.stats_plan.sparse_flops`) runs wholly in process,
            with the in-process engine's own kernels.
        return_report: also return the per-product reports (``(result, reports)``).

    Returns:
        What :func:`flexsparse.einsum` returns (a ``COO`` or NumPy array), a lazy on-disk handle
        with ``out=``, or a ``dask.array`` with ``as_dask=True``.

    Raises:
        ValueError: as :func:`flexsparse.einsum`; ``client`` together with ``address``; ``as_dask``
            together with ``out``.
        TileError: a tile failed on its data (the message names the tile).
        ImportError: dask.distributed is not installed.
    """
    from flexsparse.contract._bounded import PRODUCT_RUNNER
    from flexsparse.contract.execute import einsum as local_einsum
    from flexsparse.distributed.cluster import connect
    from flexsparse.distributed.runner import ProductRunner

    if as_dask and out is not None:
        raise ValueError("as_dask=True returns the result as a dask array; it cannot also go to out=")
    budget = _tile_memory(tile_memory)
    if local_flops is not None and (isinstance(local_flops, bool) or not isinstance(local_flops, int)
                                    or local_flops < 0):
        raise ValueError(f"local_flops must be a non-negative int, got {local_flops!r}")
    reports: list[Any] = []
    with connect(client, address, workers, worker_memory) as c:
        from flexsparse.distributed.shards import resolve_operands, shard_einsum

        ops, sharded = resolve_operands(operands, c)
        if sharded is not None:
            res = shard_einsum(c, subscripts, ops, sharded, format=format, optimize=optimize,
                               out=out, progress=progress, reports=reports)
        elif out is None and _small(subscripts, ops, local_flops):
            # the whole call is smaller than the round trips of sending one product out: the
            # in-process engine runs it, as flexsparse.einsum would
            res, reports = local_einsum(subscripts, *ops, format=format, optimize=optimize, return_report=True)
        else:
            from flexsparse.distributed.cluster import _available_memory

            runner = ProductRunner(c, progress=progress, tile_memory=budget, local_flops=local_flops)
            token = PRODUCT_RUNNER.set(runner)
            try:
                # memory_limit bounds what this process does itself (matricising, steps with a
                # dense result): the memory it has; the tiles are planned against the workers'
                res, reports = local_einsum(
                    subscripts, *ops, format=format, optimize=optimize,
                    memory_limit=_available_memory(), tiling=tiling,
                    overbook=overbook, out=out, progress=False, return_report=True)
            finally:
                PRODUCT_RUNNER.reset(token)
            reports = list(reports) + runner.plain_reports
    if as_dask:
        from flexsparse.distributed.chunks import to_dask

        res = to_dask(res)
    return (res, reports) if return_report else res


def plan(subscripts: str, *operands: Any, workers: int = 64, worker_memory: int | str = "16GB",
         threads_per_worker: int = 1, tiling: str = "overbook", overbook: float = 0.10,
         show: bool = True) -> DistributedPlan:
    """Plan a distributed contraction from statistics, without running it.

    See :func:`flexsparse.distributed.stats_plan.plan`.
    """
    from flexsparse.distributed.stats_plan import plan as _plan

    return _plan(subscripts, *operands, workers=workers, worker_memory=worker_memory,
                 threads_per_worker=threads_per_worker, tiling=tiling, overbook=overbook, show=show)
