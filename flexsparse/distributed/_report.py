"""What a distributed product shows: its figures (:class:`DistributedReport`, as
:class:`~flexsparse.distributed.runner.ProductRunner` reports them: a frozen record, no work) and
its progress bar over tiles (:func:`tile_bar`, rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DistributedReport", "tile_bar"]


@contextlib.contextmanager
def tile_bar(total: int, show: bool) -> Iterator[Any]:
    """A transient progress bar over ``total`` tiles while the block runs (``show``); yields the
    callable that advances it by one tile (a no-op without the bar)."""
    if not show:
        yield lambda: None
        return
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    task = bar.add_task("tiles", total=total)
    try:
        yield lambda: bar.advance(task)
    finally:
        bar.stop()


@dataclass(frozen=True)
class DistributedReport:
    """Figures of one distributed product.

    Attributes:
        strategy: the tiling strategy that sized the grid (``"local"``: run in the calling process).
        limit: the tile budget (bytes).
        shape: ``(m, k, n)`` of the matricised product.
        tiles, groups, tasks: tiles (products), output blocks, tasks submitted.
        bounded_tiles: tiles run with the bounded kernel (predicted over the budget).
        resubmitted: groups submitted again after a lost worker.
        workers: workers the groups were assigned to.
        balance: busiest worker's estimated work over the mean.
        gather: how the result came back: ``"shared memory"`` (written by the workers),
            ``"network"`` (pieces sent to the caller), ``"out="`` (tile files) or ``"local"``.
        received_bytes: bytes of result pieces the caller received over the network.
        shared_bytes: bytes the workers wrote into the result's shared-memory buffer.
        plan_seconds, assemble_seconds, total_seconds: planning, gathering the result (from
            the last product's end), and the wall time of the product.
        block_seconds: thread CPU seconds of each block computed straight into the result
            (:mod:`._direct`, in row order; -1 for a block not measured: one that faulted pages in
            for the first time); empty for other products.
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
    gather: str = "network"
    shared_bytes: int = 0
    block_seconds: tuple[float, ...] = ()

    def __str__(self) -> str:
        m, k, n = self.shape
        return (f"distributed product {m:,} x {k:,} x {n:,} ({self.strategy})\n"
                f"  tile budget         {self.limit:,} B\n"
                f"  tiles / groups      {self.tiles} / {self.groups} ({self.tasks} tasks, "
                f"{self.bounded_tiles} bounded)\n"
                f"  workers / balance   {self.workers} / {self.balance:.2f}\n"
                f"  resubmitted groups  {self.resubmitted}\n"
                f"  result gathered by  {self.gather} ({self.received_bytes:,} B received, "
                f"{self.shared_bytes:,} B written in shared memory)\n"
                f"  planning / gathering / total  {self.plan_seconds:.3f} s / {self.assemble_seconds:.3f} s / "
                f"{self.total_seconds:.3f} s")
