"""flexsparse ``COO`` as a dask.array chunk type, and dask arrays in and out of :func:`~flexsparse.distributed.einsum`.

:func:`register_dask` (idempotent; run by every function here) tells dask about ``COO``:

* ``dask.array.register_chunk_type(COO)`` -- arithmetic between dask arrays and COO defers to
  dask, and dask accepts COO chunks;
* ``concatenate_lookup`` / ``tensordot_lookup`` -- the chunk functions dask calls when it
  assembles results (``.compute()``) and in ``da.tensordot``;
* ``dask.sizeof`` -- a chunk's size is its stored bytes (``COO.nbytes``), not its dense size,
  so the scheduler's memory accounting is right.

``COO`` itself implements basic ``__getitem__`` and ``__array_function__`` for what dask calls
(``np.concatenate``, ``np.stack``, ``np.sum``, ``np.tensordot``, ...): see
:mod:`flexsparse.formats.coo`.

:func:`to_dask` wraps an in-memory result as a dask array of COO chunks (row blocks of about
:data:`CHUNK_NNZ` entries); :func:`dask_shards` turns a dask array whose chunks are flexsparse,
pydata/sparse, SciPy sparse or NumPy blocks into shards (one per chunk, with its offset).

Cost: registration is O(1); :func:`to_dask` slices lazily (O(nnz) per chunk when computed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CHUNK_NNZ", "as_flexsparse_chunk", "dask_shards", "is_dask_array", "register_dask", "to_dask"]

#: Stored entries per chunk of the dask arrays :func:`to_dask` makes (about 12 MB of COO).
CHUNK_NNZ = 1_000_000

_registered = False


def register_dask() -> None:
    """Register flexsparse ``COO`` with dask.array (chunk type, concatenate, tensordot, sizeof)."""
    global _registered
    if _registered:
        return
    import dask.array as da
    from dask.array.dispatch import concatenate_lookup, tensordot_lookup
    from dask.sizeof import sizeof

    from flexsparse.formats.coo import COO

    da.register_chunk_type(COO)
    concatenate_lookup.register(COO, lambda arrays, axis=0: np.concatenate(arrays, axis=axis))
    tensordot_lookup.register(COO, lambda a, b, axes=2: np.tensordot(a, b, axes=axes))
    sizeof.register(COO, lambda x: int(x.nbytes) + 200)
    _registered = True


def is_dask_array(x: Any) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (without importing dask when it is not loaded)."""
    import sys

    if "dask.array" not in sys.modules:
        return False
    import dask.array as da

    return isinstance(x, da.Array)


def as_flexsparse_chunk(x: Any) -> Any:
    """A chunk as a flexsparse COO (flexsparse formats, pydata/sparse, SciPy sparse) or NumPy array."""
    from flexsparse.formats.base import SparseArray
    from flexsparse.formats.convert import as_coo

    if isinstance(x, SparseArray):
        return x.to_coo()
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    return as_coo(x)


def to_dask(result: Any, chunk_nnz: int = CHUNK_NNZ) -> Any:
    """``result`` (COO, NumPy, or a lazy on-disk handle) as a dask array of COO / NumPy chunks."""
    import dask.array as da

    from flexsparse.formats.coo import COO

    register_dask()
    if hasattr(result, "load") and not isinstance(result, (COO, np.ndarray)):
        result = result.load()
    if hasattr(result, "to_coo") and not isinstance(result, COO):
        result = result.to_coo()
    if not isinstance(result, COO):
        return da.from_array(np.asarray(result))
    if result.ndim == 0:
        return da.from_array(result, chunks=(), asarray=False)
    n_chunks = max(1, min(result.shape[0], math.ceil(result.nnz / max(1, chunk_nnz))))
    rows = max(1, math.ceil(result.shape[0] / n_chunks))
    chunks = (rows,) + tuple(result.shape[1:])
    meta = result[tuple(slice(0, 0) for _ in result.shape)]
    return da.from_array(result, chunks=chunks, asarray=False, meta=meta)


def dask_shards(x: Any, client: Any) -> list[tuple[Any, tuple[int, ...], tuple[int, ...]]]:
    """``[(future of the chunk, offset, extent)]`` for every chunk of dask array ``x`` (computed on ``client``)."""
    register_dask()
    starts = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in x.chunks]
    blocks = x.to_delayed().ravel()
    futures = client.compute(list(blocks))
    out = []
    for idx, fut in zip(np.ndindex(*x.numblocks), futures):
        offset = tuple(int(starts[m][i]) for m, i in enumerate(idx))
        extent = tuple(int(x.chunks[m][i]) for m, i in enumerate(idx))
        out.append((fut, offset, extent))
    return out
