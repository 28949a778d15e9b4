"""Where tiled products go: in memory, or on disk tile by tile in the flexsparse store format.

On disk the product is a ``"csr"`` store of :mod:`flexsparse.formats.store` (the one on-disk
format of the package; read back by ``fs.load`` in any process): each tile holds CSR *pieces*
covering rows ``[r0, r1)`` and a column window (``meta`` = ``r0, r1, c0, c1, partial`` per
piece; ``partial`` = 1 for a partial sum over a window of the contracted ids; repeated
coordinates are summed on load), and the manifest -- written last, atomically -- records the
shape, dtype and how row/column ids decode into the coordinates of the stored tensor (the
identity for a plain ``a @ b``; the einsum output's key tables for ``einsum(out=...)``). A
store without a complete manifest is an interrupted run and is refused.

A disk sink buffers finished pieces up to ``flush_bytes`` (the executor passes 1/16 of
the memory limit) and writes larger pieces straight from the kernel's buffers, so the
output never accumulates in memory. Loading assembles the CSR (:func:`assemble`): O(nnz)
unless some pieces are partial sums (then O(nnz log nnz)).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import index_dtype_for
from flexsparse.formats.store import (
    IncompleteResultError,
    MatrixLayout,
    StoredTensor,
    TileWriter,
    check_store_directory,
    is_zip_target,
)
from flexsparse.tiling.engine import make_result

__all__ = ["DiskSink", "IncompleteResultError", "LazyResult", "MemorySink", "assemble",
           "check_output_target"]

_PIECE_OVERHEAD = 512   # bytes of Python objects around one buffered piece (tuple, 3 arrays)

# ((r0, r1, c0, c1, partial), indptr [r1-r0+1], indices [nnz], data [nnz]); partial = 1
# when the piece is a partial sum over a window of the contracted ids
Piece = tuple[tuple[int, int, int, int, int], np.ndarray, np.ndarray, np.ndarray]


def assemble(pieces: list[Piece], shape: tuple[int, int], dtype: np.dtype,
             index_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR buffers ``(indptr, indices, data)`` of the sum of ``pieces`` (sorted indices).

    Pieces with disjoint (rows x column window) blocks are merged in O(nnz): rows are
    laid out by counting, and each piece's row segments are copied in increasing column
    window order (so every row stays sorted). Partial sums over id windows overlap and go
    through one COO-to-CSR conversion that adds duplicates (O(nnz log nnz)).
    """
    m, n = shape
    if any(p[0][4] for p in pieces):
        import scipy.sparse as sp
        rows = np.concatenate([np.repeat(np.arange(p[0][0], p[0][1], dtype=np.int64),
                                         np.diff(p[1])) for p in pieces] or [np.zeros(0, np.int64)])
        cols = np.concatenate([p[2] for p in pieces])
        vals = np.concatenate([p[3] for p in pieces]).astype(dtype, copy=False)
        c = sp.coo_array((vals, (rows, cols)), shape=(m, n)).tocsr()
        c.sum_duplicates()
        c.sort_indices()
        return (c.indptr.astype(np.int64), c.indices.astype(index_dtype, copy=False),
                c.data.astype(dtype, copy=False))
    indptr = np.zeros(m + 1, dtype=np.int64)
    for (r0, r1, _, _, _), ip, _, _ in pieces:
        indptr[r0 + 1:r1 + 1] += np.diff(ip)
    np.cumsum(indptr, out=indptr)
    nnz = int(indptr[-1])
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz, dtype=dtype)
    cursor = indptr[:-1].copy()
    for (r0, r1, _, _, _), ip, ix, d in sorted(pieces, key=lambda p: (p[0][2], p[0][0])):
        lens = np.diff(ip)
        dest = np.repeat(cursor[r0:r1] - ip[:-1], lens) + np.arange(ip[0], ip[-1])
        indices[dest] = ix
        data[dest] = d
        cursor[r0:r1] += lens
    return indptr, indices, data


class MemorySink:
    """Keeps every piece (copied out of the kernel's reused buffers) in memory."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []

    def add(self, meta: tuple[int, int, int, int, int], indptr: np.ndarray,
            indices: np.ndarray, data: np.ndarray) -> None:
        self.pieces.append((meta, indptr.copy(), indices.copy(), data.copy()))

    def finish(self, shape: tuple[int, int], dtype: np.dtype, index_dtype: np.dtype,
               family: str) -> Any:
        ip, ix, d = assemble(self.pieces, shape, dtype, index_dtype)
        self.pieces = []
        return make_result(ip, ix, d, shape, family)


def _is_npz(path: Path) -> bool:
    return is_zip_target(path)


def check_output_target(out: str | os.PathLike, estimated_bytes: int) -> Path:
    """Fail *before any work* if ``out`` cannot receive about ``estimated_bytes``.

    Raises:
        ValueError: ``out`` names an existing file that is not ``.npz`` / a non-directory, or
            a non-empty directory that is not a store.
        PermissionError: the target directory is not writable.
        OSError: (``ENOSPC``) the file system has less free space than the estimate.
    """
    path = Path(out)
    if _is_npz(path):
        directory = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ValueError(f"out={str(path)!r} ends in .npz but is a directory")
        if not directory.is_dir():
            raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    else:
        if path.exists() and not path.is_dir():
            raise ValueError(f"out={str(path)!r} exists and is neither a directory nor a .npz file")
        check_store_directory(out)
        directory = path
        probe = path
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise PermissionError(f"cannot write tiled output to {path}: {probe} is not writable")
        path.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"cannot write tiled output to {path}: {directory} is not writable")
    free = shutil.disk_usage(directory).free
    if free < estimated_bytes:
        raise OSError(errno.ENOSPC, f"not enough space for the tiled output {path}: about "
                      f"{estimated_bytes:,} bytes needed, {free:,} bytes free")
    return path


class DiskSink:
    """Writes pieces to the store ``out`` (directory or ``.npz``) as they finish; use as a context.

    Each flush of the buffer is one tile of the store. Leaving the ``with`` block by an
    exception deletes what was written; only a clean :meth:`commit` writes the manifest.
    """

    def __init__(self, out: str | os.PathLike, flush_bytes: int, shape: tuple[int, int],
                 dtype: np.dtype, family: str, layout: MatrixLayout | None = None,
                 tensor_shape: tuple[int, ...] | None = None) -> None:
        self.path = Path(out)
        self.flush_bytes = max(0, int(flush_bytes))
        self._buf: list[Piece] = []
        self._buf_bytes = 0
        self._n_tiles = 0
        layout = MatrixLayout.identity(shape) if layout is None else layout
        self._writer = TileWriter(out, shape if tensor_shape is None else tensor_shape, dtype, "csr",
                                  layout=layout, family=family)
        self.committed = False

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> DiskSink:
        self._writer.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._writer.__exit__(exc_type, exc, tb)

    # -- writing ---------------------------------------------------------------
    def add(self, meta: tuple[int, int, int, int, int], indptr: np.ndarray,
            indices: np.ndarray, data: np.ndarray) -> None:
        # charge each buffered piece its Python object overhead too: tiny tiles (the
        # conservative strategy makes ~10-entry pieces) are mostly overhead
        nbytes = indptr.nbytes + indices.nbytes + data.nbytes + _PIECE_OVERHEAD
        if nbytes > self.flush_bytes:
            self._flush()
            self._write_part([(meta, indptr, indices, data)])
            return
        if self._buf_bytes + nbytes > self.flush_bytes:
            self._flush()
        self._buf.append((meta, indptr.copy(), indices.copy(), data.copy()))
        self._buf_bytes += nbytes

    def _flush(self) -> None:
        if self._buf:
            self._write_part(self._buf)
            self._buf, self._buf_bytes = [], 0

    def _write_part(self, pieces: list[Piece]) -> None:
        arrays: dict[str, np.ndarray] = {
            "meta": np.array([p[0] for p in pieces], dtype=np.int64).reshape(-1, 5)}
        for i, (_, ip, ix, d) in enumerate(pieces):
            arrays[f"indptr_{i}"], arrays[f"indices_{i}"], arrays[f"values_{i}"] = ip, ix, d
        self._writer.write_tile(self._n_tiles, arrays)
        self._n_tiles += 1

    def commit(self) -> LazyResult:
        """Flush and write the manifest last; return the lazy handle."""
        self._flush()
        self._writer.commit()
        self.committed = True
        return LazyResult(self.path)


class LazyResult(StoredTensor):
    """Handle on a completed on-disk tiled product; :meth:`load` reads it into memory.

    It is a :class:`~flexsparse.formats.store.StoredTensor` whose :meth:`load` returns the
    matricised product in the caller's family (flexsparse ``CSR`` or SciPy CSR);
    ``fs.load(path)`` reads the same store as a COO of the stored tensor.

    Raises:
        IncompleteResultError: ``path`` has no complete manifest (interrupted run).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        if self.encoding != "csr":
            raise ValueError(f"{self.path} holds a {self.encoding!r} store, not a tiled product; "
                             "read it with flexsparse.load")
        mat = self.manifest["matrix"]
        self.shape = tuple(int(s) for s in mat["shape"])  # type: ignore[assignment]
        self.index_dtype = index_dtype_for((self.shape[1],))

    def __repr__(self) -> str:
        return f"LazyResult({str(self.path)!r}, shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"

    def _all_pieces(self) -> list[Piece]:
        with self._opened() as zf:
            return [p for tile in self.manifest["tiles"] for p in self.pieces(tile, zf)]

    def load(self) -> Any:
        """The product in memory (flexsparse ``CSR`` or SciPy CSR, as the inputs were)."""
        ip, ix, d = assemble(self._all_pieces(), self.shape, self.dtype, self.index_dtype)
        return make_result(ip, ix, d, self.shape, self.manifest["matrix"]["family"])

    @property
    def nnz(self) -> int:
        if self._nnz is None:
            self._nnz = int(self.load().nnz)
        return self._nnz

    def load_tensor(self) -> Any:
        """The stored tensor as a COO (what ``fs.load`` returns)."""
        return StoredTensor.load(self)
