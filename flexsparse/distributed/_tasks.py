"""The functions dask runs on workers: one tile's product, the sum of two partial sums, a tile write.

A *piece* is a CSR block of the matricised output: ``((r0, r1, c0, c1, partial), indptr
[r1-r0+1], indices [nnz] (global column ids), data [nnz])`` -- the unit the tiler's sinks and
:func:`flexsparse.tiling.outfile.assemble` use.

* :func:`run_tile` -- ``A[r0:r1, k0:k1] @ B[k0:k1, c0:c1]`` with the fast SpGEMM
  (:func:`flexsparse.kernels.cpu.spgemm.spgemm`, one thread: dask runs one tile per worker
  thread), or with the bounded tiled kernel (:func:`flexsparse.tiling.tiled_spgemm`, Tailors
  absorption) when the plan predicted the tile over its budget. O(flops + nnz) per tile.
* :func:`add_pieces` -- the sum of two partial sums of one block (O(nnz log nnz)).
* :func:`write_piece` -- the piece as one tile file of the result, atomically (write to a
  temporary, rename): a tile run twice (a retry after a lost worker) replaces its file, so
  no entry is ever stored twice.

Every failure is re-raised as :class:`TileError` naming the tile, so the caller sees which
part of the product hit bad data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TileError", "add_pieces", "run_tile", "write_piece"]

Piece = tuple[tuple[int, int, int, int, int], np.ndarray, np.ndarray, np.ndarray]


class TileError(RuntimeError):
    """A tile of a distributed product failed; the message names the tile and the cause."""


def run_tile(a: Any, b: Any, meta: tuple[int, int, int, int, int], n_cols: int, limit: int,
             bounded: bool, what: str) -> Piece:
    """One tile's product as a piece (``meta`` = ``(r0, r1, c0, c1, partial)``)."""
    from flexsparse._util import index_dtype_for

    try:
        if bounded:
            from flexsparse.tiling import tiled_spgemm

            c, _ = tiled_spgemm(a, b, memory_limit=limit)
        else:
            from flexsparse.kernels.cpu.spgemm import spgemm

            c = spgemm(a, b, threads=1)
        indices = c.indices.astype(index_dtype_for(n_cols), copy=False)
        if meta[2]:
            indices = indices + np.asarray(meta[2], dtype=indices.dtype)
        return (meta, c.indptr, indices, c.data)
    except Exception as exc:  # noqa: BLE001 - re-raised with the tile named
        raise TileError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def add_pieces(p: Piece, q: Piece, n_cols: int, what: str) -> Piece:
    """The sum of two partial sums over the same block (duplicates added, columns sorted)."""
    from flexsparse.tiling.outfile import assemble

    try:
        r0, r1, c0, c1, _ = p[0]
        rebased = [((0, r1 - r0, c0, c1, 1), x[1], x[2], x[3]) for x in (p, q)]
        dtype = np.result_type(p[3].dtype, q[3].dtype)
        indptr, indices, data = assemble(rebased, (r1 - r0, n_cols), dtype, p[2].dtype)
        return ((r0, r1, c0, c1, 0), indptr, indices, data)
    except Exception as exc:  # noqa: BLE001
        raise TileError(f"{what}: adding partial sums failed: {type(exc).__name__}: {exc}") from exc


def write_piece(piece: Piece, directory: str, tile_id: int, what: str) -> dict[str, Any]:
    """Write ``piece`` as tile ``tile_id`` of the result at ``directory``; return its manifest entry."""
    from flexsparse.distributed import _store

    try:
        return _store.write_tile(Path(directory), tile_id, piece)
    except Exception as exc:  # noqa: BLE001
        raise TileError(f"{what}: writing the tile failed: {type(exc).__name__}: {exc}") from exc


def finished(piece: Piece) -> Piece:
    """The piece marked complete (the root of a partial-sum tree, or a single-window tile)."""
    (r0, r1, c0, c1, _), indptr, indices, data = piece
    return ((r0, r1, c0, c1, 0), indptr, indices, data)
