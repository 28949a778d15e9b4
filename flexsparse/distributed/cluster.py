"""Which dask cluster a distributed call runs on, and what each worker may hold.

:func:`connect` is a context manager yielding a ``distributed.Client``:

* ``client=`` -- the caller's client, used as is and left running;
* ``address="tcp://host:8786"`` -- a client of that scheduler, closed afterwards (the
  cluster itself keeps running);
* neither -- an embedded ``LocalCluster`` of worker *processes*, ``workers`` of them (one per
  core by default), each with one thread and an equal share of ``worker_memory`` (default:
  the machine's available memory split evenly), with fewer periodic callbacks than dask's
  defaults (:func:`local_cluster`); shut down afterwards.

:func:`worker_resources` reads the workers' memory limits and thread counts from the
scheduler; :func:`tile_budget` turns them into the working-set budget of one tile (what the
tiling strategies plan against), after the resident operands and the process baseline.

Cost: starting a LocalCluster takes about a second per worker process (imports); nothing
else here does work.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flexsparse import _limits
from flexsparse._util import parse_bytes

__all__ = ["WorkerResources", "connect", "local_cluster", "tile_budget", "worker_resources"]


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ImportError("flexsparse.distributed needs dask.distributed: "
                          "pip install 'flexsparse[dask]'") from None
    return distributed


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with distributed; keep a sane fallback anyway
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def _check_workers(workers: Any) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


@contextlib.contextmanager
def connect(client: Any = None, address: str | None = None, workers: int | None = None,
            worker_memory: int | str | None = None, processes: bool = True,
            announce: bool = True) -> Iterator[Any]:
    """Yield a ``distributed.Client`` (see the module docstring for the three cases).

    Raises:
        ValueError: both ``client`` and ``address``, a bad ``workers`` or ``worker_memory``.
        ImportError: dask.distributed is not installed.
    """
    distributed = _require_distributed()
    if client is not None and address is not None:
        raise ValueError("pass either client= or address=, not both")
    n = _check_workers(workers)
    memory = None if worker_memory is None else parse_bytes(worker_memory)
    if client is not None:
        if n is not None or memory is not None:
            raise ValueError("workers= and worker_memory= configure an embedded cluster; "
                             "they cannot change the cluster of a given client")
        yield client
        return
    if address is not None:
        if n is not None or memory is not None:
            raise ValueError("workers= and worker_memory= configure an embedded cluster; "
                             "they cannot change the cluster at address=")
        with distributed.Client(address) as c:
            _announce(c, announce)
            yield c
        return
    cluster = local_cluster(n, memory, processes)
    try:
        with distributed.Client(cluster) as c:
            _announce(c, announce)
            yield c
    finally:
        cluster.close()


def local_cluster(workers: int | None = None, worker_memory: int | str | None = None,
                  processes: bool = True, silence_logs: int = logging.ERROR) -> Any:
    """The embedded ``LocalCluster``: ``workers`` single-threaded workers (default one per core),
    each limited to ``worker_memory`` (default: the available memory split evenly), started with
    :data:`~flexsparse._limits.EMBEDDED_DASK_CONFIG` (no profiler or work stealing, fewer periodic
    callbacks: they compete with the tiles for the cores). The caller closes it."""
    import dask

    distributed = _require_distributed()
    n = _check_workers(workers) or os.cpu_count() or 1
    memory = max(1, _available_memory() // n) if worker_memory is None else parse_bytes(worker_memory)
    # the scheduler reads these when it starts, each nanny hands its worker a copy
    with dask.config.set(_limits.EMBEDDED_DASK_CONFIG):
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                           memory_limit=memory, dashboard_address=":0", silence_logs=silence_logs)
    return cluster


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _announce(client: Any, announce: bool) -> None:
    """Print the dashboard address when the scheduler serves one."""
    if not announce:
        return
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        print(f"flexsparse.distributed: dashboard at {client.dashboard_link}")


@dataclass(frozen=True)
class WorkerResources:
    """What the workers offer: their addresses, memory limits (bytes) and thread counts."""

    addresses: tuple[str, ...]
    memory: tuple[int, ...]
    threads: tuple[int, ...]

    @property
    def n_workers(self) -> int:
        return len(self.addresses)

    @property
    def total_threads(self) -> int:
        return int(sum(self.threads))

    @property
    def min_memory(self) -> int:
        """The smallest memory limit (bytes); 0 means unlimited workers."""
        return min(self.memory) if self.memory else 0


def worker_resources(client: Any, fresh: bool = False) -> WorkerResources:
    """Memory limits and threads of the workers currently attached to ``client``'s scheduler.

    A client of a cluster object (a ``LocalCluster``, the embedded default) reads them from the
    cluster's copy of the scheduler's worker table, which the scheduler keeps current by
    messages as workers come and go; asking the scheduler is a round trip through its event loop
    before every product (~1-3 ms on the 2-core VM). ``fresh`` (or a client without a cluster
    object, or an empty copy) asks the scheduler.

    Raises:
        RuntimeError: the scheduler has no worker.
    """
    info = None
    if not fresh:
        cached = getattr(getattr(client, "cluster", None), "scheduler_info", None)
        workers = cached.get("workers") if isinstance(cached, dict) else None
        if workers and all("memory_limit" in w and "nthreads" in w for w in workers.values()):
            info = dict(workers)
    if info is None:
        info = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else \
            client.scheduler_info()["workers"]
    if not info:
        raise RuntimeError("the dask scheduler has no workers to run tiles on")
    addrs = tuple(sorted(info))
    return WorkerResources(addrs, tuple(int(info[a].get("memory_limit") or 0) for a in addrs),
                           tuple(int(info[a].get("nthreads") or 1) for a in addrs))


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def tile_budget(worker_memory: int, threads: int, resident: int) -> int:
    """Working-set budget of one tile on a worker of ``worker_memory`` bytes.

    A worker holds the process baseline (:data:`~flexsparse._limits.WORKER_BASELINE_BYTES`),
    the operands resident on it (``resident`` bytes) and ``threads`` tiles at once; each
    tile's working set is charged :data:`~flexsparse._limits.TILE_MEMORY_FACTOR` times (the
    result is copied once when it is sent). The whole stays under
    :data:`~flexsparse._limits.WORKER_MEMORY_FRACTION` of the limit, below dask's own
    pause threshold. ``worker_memory=0`` (no limit) gives the in-process default budget.

    >>> tile_budget(2 * 2**30, 1, 0) > 100 * 2**20
    True
    """
    if worker_memory <= 0:
        return _limits.DISTRIBUTED_DEFAULT_TILE_BYTES
    free = worker_memory * _limits.WORKER_MEMORY_FRACTION - _limits.WORKER_BASELINE_BYTES - resident
    return int(max(_limits.DISTRIBUTED_MIN_TILE_BYTES,
                   free / max(1, threads) / _limits.TILE_MEMORY_FACTOR))
