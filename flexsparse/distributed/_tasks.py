"""The functions dask runs on workers: one tile's product, partial sums, counting and placing pieces.

A *piece* is a CSR block of the matricised output: ``((r0, r1, c0, c1, partial), indptr
[r1-r0+1], indices [nnz] (global column ids), data [nnz])`` -- the unit the tiler's sinks and
:func:`flexsparse.tiling.outfile.assemble` use. Every piece has sorted column ids in each row,
except the pieces of a plain matrix product gathered in memory (``run_tile(sort=False)``:
first-touch order, as the in-process engine returns them).

* :func:`run_tile` -- ``A[r0:r1, k0:k1] @ B[k0:k1, c0:c1]`` with the fast SpGEMM
  (:func:`flexsparse.kernels.cpu.spgemm.spgemm`, one thread: dask runs one tile per worker
  thread), or with the bounded tiled kernel (:func:`flexsparse.tiling.tiled_spgemm`, Tailors
  absorption) when the plan predicted the tile over its budget. The A block is cut on the
  worker (:func:`block`) from what it was sent: the rows of its group, or the whole
  matrix when A is B (a self-product sends the matrix once). O(flops + nnz) per tile.
* :func:`run_tile_direct` -- the same product computed straight into the result's
  shared-memory file (:mod:`._direct`: at most two row blocks, written toward each other).
* :func:`add_pieces` -- the sum of two partial sums of one block (O(nnz log nnz)).
* :func:`count_piece` / :func:`place_piece` -- the two phases of gathering
  (:mod:`._gather`): a piece's entry count, then the piece written into the result's
  shared-memory buffer (or returned when this worker cannot open it).
* :func:`write_piece` -- the piece as one tile file of the result, atomically (write to a
  temporary, rename): a tile run twice (a retry after a lost worker) replaces its file, so
  no entry is ever stored twice.

Every failure is re-raised as :class:`TileError` naming the tile, so the caller sees which
part of the product hit bad data.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TileError", "add_pieces", "block", "count_piece", "place_piece", "run_tile", "run_tile_direct",
           "write_piece"]

Piece = tuple[tuple[int, int, int, int, int], np.ndarray, np.ndarray, np.ndarray]


class TileError(RuntimeError):
    """A tile of a distributed product failed; the message names the tile and the cause."""


def block(x: Any, r0: int, r1: int, k0: int, k1: int) -> Any:
    """Rows ``[r0, r1)`` of CSR ``x`` restricted to columns ``[k0, k1)`` (columns rebased).

    Zero-copy for the column ids and values when every column is kept (only the row pointers
    are rebased); one pass over the rows' entries otherwise.
    """
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
    return CSR._trusted(np.ascontiguousarray(indptr, dtype=np.int64), indices, data,
                        (r1 - r0, k1 - k0), x.sorted_indices)


def run_tile(a: Any, b: Any, meta: tuple[int, int, int, int, int], n_cols: int, limit: int,
             bounded: bool, what: str, a_cut: tuple[int, int, int, int] | None = None,
             b_cut: tuple[int, int] | None = None, sort: bool = True) -> Piece:
    """One tile's product as a piece (``meta`` = ``(r0, r1, c0, c1, partial)``).

    ``sort=False`` leaves the fast kernel's rows in first-touch column order (no duplicates),
    as the in-process engine returns a plain matrix product: sorting 24M entries of an
    R-MAT product cost more than computing them (0.29 s against 0.13 s, one thread).

    ``a_cut``: ``(r0, r1, k0, k1)`` of ``a`` to multiply (rows relative to ``a``), or ``None``
    when ``a`` is the tile's A block already. ``b_cut``: the columns ``[c0, c1)`` of ``b`` (relative
    to ``b``) to multiply -- a hub block's column sub-panel -- or ``None`` for all of them.
    """
    from flexsparse._util import index_dtype_for

    try:
        if a_cut is not None:
            a = block(a, *a_cut)
        if b_cut is not None:
            b = block(b, 0, b.shape[0], *b_cut)
        if bounded:
            from flexsparse.tiling import tiled_spgemm

            c, _ = tiled_spgemm(a, b, memory_limit=limit)
        else:
            from flexsparse.kernels.cpu._pool import keeping
            from flexsparse.kernels.cpu.spgemm import spgemm

            with keeping(False):   # the worker's memory limit counts what a kept buffer holds
                c = spgemm(a, b, threads=1, sort=sort)
        indices = c.indices.astype(index_dtype_for(n_cols), copy=False)
        if meta[2]:
            indices = indices + np.asarray(meta[2], dtype=indices.dtype)
        return (meta, c.indptr, indices, c.data)
    except Exception as exc:  # noqa: BLE001 - re-raised with the tile named
        raise TileError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def run_tile_direct(a: Any, b: Any, r0: int, what: str, a_cut: tuple[int, int, int, int] | None,
                    target: Any, offset: int, back: bool, room: int,
                    sort: bool) -> tuple[int, int, float] | None:
    """One tile (a whole output block) computed into ``target``'s shared-memory file
    (:func:`._direct.write_tile`): rows down to slot ``offset`` with ``back``, else up from it;
    returns the ``(start, end)`` slots it filled and the thread CPU seconds the block took (the
    caller balances the next product's blocks by them; -1 when the file was mapped afresh), or
    ``None`` when this worker cannot open the file (another host): the caller then gathers the
    product another way."""
    from flexsparse.distributed import _direct

    kept = _direct.kept(target)
    try:
        _direct.mapping(target)
    except OSError:
        return None
    try:
        if a_cut is not None:
            a = block(a, *a_cut)
        # a fresh mapping faults its pages in while the block runs: not a measure of its work
        return _direct.write_tile(a, b, target, r0, offset, back, room, sort, measure=kept)
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


def count_piece(piece: Piece, per_row: bool) -> Any:
    """The piece's entry count, or its entries per row (``int64[r1 - r0]``) with ``per_row``."""
    indptr = piece[1]
    return np.diff(indptr) if per_row else int(indptr[-1])


def place_piece(piece: Piece, target: Any, dst: Any, keys: Any, what: str) -> Any:
    """Write ``piece`` into the shared-memory buffer of ``target`` at ``dst`` (:func:`._gather.place`);
    ``None`` when written, the piece itself when this worker cannot open the buffer (another
    host): the caller then places it."""
    from flexsparse.distributed import _gather

    if target.path is None:
        return piece
    try:
        fd = os.open(target.path, os.O_RDWR)
    except OSError:
        return piece
    failure = None
    try:
        if os.fstat(fd).st_size != target.nbytes:
            raise TileError(f"{what}: {target.path} is not this product's result buffer")
        if np.isscalar(dst):
            _gather.place(_gather.FileSink(fd, target), target, piece, dst, keys)
        else:  # rows scattered between column panels: through a mapping
            _place_mapped(fd, target, piece, dst, keys)
    except TileError:
        raise
    except Exception as exc:  # noqa: BLE001
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        os.close(fd)
    if failure is not None:
        raise TileError(f"{what}: placing the result failed: {failure}")
    return None


def _place_mapped(fd: int, target: Any, piece: Piece, dst: Any, keys: Any) -> None:
    import mmap

    from flexsparse.distributed import _gather

    mm = mmap.mmap(fd, target.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    _gather.place(_gather.ArraySink(_gather.arrays(mm, target)), target, piece, dst, keys)
    # unmap now; a frame of place() still held elsewhere (dask's sampling profiler keeps
    # frames briefly) keeps views alive, and the mapping then goes with the last of them
    with contextlib.suppress(BufferError):
        mm.close()


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
