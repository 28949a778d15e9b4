"""flexsparse.distributed: sparse einsum whose sparse x sparse products run as tiles on dask.distributed.

* :func:`einsum` -- :func:`flexsparse.einsum` semantics; every sparse x sparse step is cut
  into tiles by the tiling strategies against the workers' memory and run on a cluster (an
  embedded ``LocalCluster`` of worker processes by default, ``client=`` or ``address=``
  otherwise); ``out=`` streams the result to disk tile by tile; ``as_dask=True`` returns a
  ``dask.array`` of flexsparse chunks.
* :func:`plan` -- the tiles, traffic, balance and task count of a contraction for a cluster of
  a given size, computed from statistics alone (nothing runs).
* :func:`write_shards` / :class:`Shards` -- a large tensor as a directory of files, each with
  its coordinate range; :func:`einsum` takes a :class:`Shards` operand and each task reads
  only its own shard.
* :func:`register_dask` -- flexsparse ``COO`` as a dask.array chunk type (done on import of
  this package's dask support; :func:`einsum` accepts dask arrays of flexsparse, pydata/sparse
  or SciPy sparse chunks).

Needs the ``dask`` extra (``pip install 'flexsparse[dask]'``). Importing this package imports
neither dask nor numba kernels (names resolve lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "einsum": "flexsparse.distributed.api",
    "plan": "flexsparse.distributed.api",
    "DistributedPlan": "flexsparse.distributed.stats_plan",
    "powerlaw_stats": "flexsparse.distributed.stats_plan",
    "DistributedReport": "flexsparse.distributed.runner",
    "TileError": "flexsparse.distributed._tasks",
    "connect": "flexsparse.distributed.cluster",
    "Shards": "flexsparse.distributed.shards",
    "write_shards": "flexsparse.distributed.shards",
    "register_dask": "flexsparse.distributed.chunks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexsparse.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
