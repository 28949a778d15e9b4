"""Where tiled products go: in memory, or on disk tile by tile with a manifest written last.

Layouts (``m x n`` output, tiles are CSR *pieces* covering rows ``[r0, r1)``, any
column window; pieces may repeat rows, repeated coordinates are summed on load):

* directory ``out/``: ``part-NNNNN.npz`` files, each holding ``meta: int64[n_pieces, 5]``
  (``r0, r1, c0, c1, partial`` per piece; ``partial`` = 1 for a partial sum over a window
  of the contracted ids) and ``indptr_j: int64[r1-r0+1]``, ``indices_j: [nnz_j]``,
  ``data_j: [nnz_j]``; then ``manifest.json``. Parts are written as
  ``part-NNNNN.npz.partial`` (each atomically), renamed when the run succeeds, and the
  manifest is written *last* (atomic rename). A directory without a manifest is an
  interrupted run and is refused by :class:`LazyResult`.
* file ``out.npz``: one zip (stored, no compression) with the same arrays as members
  ``pNNNNN_meta.npy``, ``pNNNNN_indptr_j.npy`` ... and ``manifest.json``, written to a
  hidden ``.partial`` temporary and renamed onto ``out.npz`` only when complete.

A disk sink buffers finished pieces up to ``flush_bytes`` (the executor passes 1/16 of
the memory limit) and writes larger pieces straight from the kernel's buffers, so the
output never accumulates in memory. Loading assembles the CSR (:func:`assemble`): O(nnz)
unless some pieces are partial sums (then O(nnz log nnz)).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import atomic_write
from flexsparse.tiling.engine import make_result

__all__ = ["DiskSink", "IncompleteResultError", "LazyResult", "MemorySink", "assemble",
           "check_output_target"]

MANIFEST = "manifest.json"
_PIECE_OVERHEAD = 512   # bytes of Python objects around one buffered piece (tuple, 3 arrays)
FORMAT = "flexsparse-tiled-csr"

# ((r0, r1, c0, c1, partial), indptr [r1-r0+1], indices [nnz], data [nnz]); partial = 1
# when the piece is a partial sum over a window of the contracted ids
Piece = tuple[tuple[int, int, int, int, int], np.ndarray, np.ndarray, np.ndarray]


class IncompleteResultError(ValueError):
    """The on-disk result has no complete manifest (an interrupted or foreign run)."""


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


def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    """Store ``arr`` as an ``.npy`` member without copying it (``np.save`` would copy in
    16 MiB chunks, doubling the memory of a large tile)."""
    arr = np.ascontiguousarray(arr)
    with zf.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
        if arr.size:
            fh.write(memoryview(arr.reshape(-1)).cast("B"))


def _is_npz(path: Path) -> bool:
    return path.suffix.lower() == ".npz"


def check_output_target(out: str | os.PathLike, estimated_bytes: int) -> Path:
    """Fail *before any work* if ``out`` cannot receive about ``estimated_bytes``.

    Raises:
        ValueError: ``out`` names an existing file that is not ``.npz`` / a non-directory.
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
    """Writes pieces to ``out`` (directory or ``.npz``) as they finish; use as a context.

    Leaving the ``with`` block by an exception deletes what was written; only a clean
    :meth:`commit` renames the parts and writes the manifest.
    """

    def __init__(self, out: str | os.PathLike, flush_bytes: int) -> None:
        self.path = Path(out)
        self.flush_bytes = max(0, int(flush_bytes))
        self._buf: list[Piece] = []
        self._buf_bytes = 0
        self._parts: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        self._zip: zipfile.ZipFile | None = None
        self._nnz = 0
        self._partial = False
        self.committed = False

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> DiskSink:
        if _is_npz(self.path):
            f = self._stack.enter_context(atomic_write(self.path, "wb"))
            self._zip = self._stack.enter_context(
                zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            # a stale manifest would make this directory look complete mid-run
            with contextlib.suppress(FileNotFoundError):
                (self.path / MANIFEST).unlink()
            for old in self.path.glob("part-*.npz*"):
                old.unlink()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and self._zip is None:
            for p in self.path.glob("part-*.npz.partial"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        self._stack.__exit__(exc_type, exc, tb)
        return False

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
        j = len(self._parts)
        arrays: dict[str, np.ndarray] = {
            "meta": np.array([p[0] for p in pieces], dtype=np.int64).reshape(-1, 5)}
        for i, (_, ip, ix, d) in enumerate(pieces):
            arrays[f"indptr_{i}"], arrays[f"indices_{i}"], arrays[f"data_{i}"] = ip, ix, d
        nnz = int(sum(p[2].size for p in pieces))
        self._nnz += nnz
        if self._zip is not None:
            for key, arr in arrays.items():
                _write_npy(self._zip, f"p{j:05d}_{key}.npy", arr)
            self._parts.append({"prefix": f"p{j:05d}", "pieces": len(pieces), "nnz": nnz})
        else:
            name = f"part-{j:05d}.npz"
            with atomic_write(self.path / (name + ".partial"), "wb") as fh, \
                    zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key, arr in arrays.items():
                    _write_npy(zf, key + ".npy", arr)
            self._parts.append({"file": name, "pieces": len(pieces), "nnz": nnz})
        self._partial = self._partial or any(p[0][4] for p in pieces)

    def commit(self, shape: tuple[int, int], dtype: np.dtype, index_dtype: np.dtype,
               family: str) -> LazyResult:
        """Flush, finalise the parts and write the manifest last; return the lazy handle."""
        self._flush()
        manifest = {"format": FORMAT, "version": 1, "shape": list(shape),
                    "dtype": np.dtype(dtype).str, "index_dtype": np.dtype(index_dtype).str,
                    "family": family, "stored": self._nnz, "partial_sums": self._partial,
                    "parts": self._parts, "complete": True}
        text = json.dumps(manifest, indent=1)
        if self._zip is not None:
            self._zip.writestr(MANIFEST, text)
            self._stack.close()   # closes the zip, fsyncs and renames onto the final name
        else:
            for part in self._parts:
                os.replace(self.path / (part["file"] + ".partial"), self.path / part["file"])
            with atomic_write(self.path / MANIFEST, "w") as fh:
                fh.write(text)
        self.committed = True
        return LazyResult(self.path)


class LazyResult:
    """Handle on a completed on-disk tiled product; :meth:`load` reads it into memory.

    Raises:
        IncompleteResultError: ``path`` has no complete manifest (interrupted run).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            if _is_npz(self.path):
                with zipfile.ZipFile(self.path) as zf:
                    text = zf.read(MANIFEST).decode()
            else:
                text = (self.path / MANIFEST).read_text()
            manifest = json.loads(text)
        except (FileNotFoundError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            raise IncompleteResultError(
                f"{self.path} is not a complete tiled result: no readable {MANIFEST} "
                "(the run that wrote it was interrupted, or it is not a flexsparse output)"
            ) from None
        if manifest.get("format") != FORMAT or not manifest.get("complete"):
            raise IncompleteResultError(f"{self.path}: manifest is not a complete {FORMAT}")
        self.manifest = manifest
        self.shape: tuple[int, int] = tuple(manifest["shape"])
        self._nnz: int | None = None if manifest["partial_sums"] else int(manifest["stored"])
        self.dtype = np.dtype(manifest["dtype"])
        self.index_dtype = np.dtype(manifest["index_dtype"])

    @property
    def nnz(self) -> int:
        """Stored entries of the product (read from the manifest; when the run wrote
        partial sums over id windows, counted once by assembling the result)."""
        if self._nnz is None:
            self._nnz = int(self.load().nnz)
        return self._nnz

    def __repr__(self) -> str:
        return f"LazyResult({str(self.path)!r}, shape={self.shape}, nnz={self.nnz}, dtype={self.dtype})"

    def _pieces(self) -> list[Piece]:
        pieces: list[Piece] = []
        if _is_npz(self.path):
            with zipfile.ZipFile(self.path) as zf:
                def get(name: str) -> np.ndarray:
                    with zf.open(name + ".npy") as fh:
                        return np.lib.format.read_array(fh, allow_pickle=False)
                for part in self.manifest["parts"]:
                    pre = part["prefix"]
                    meta = get(f"{pre}_meta")
                    for i, row in enumerate(meta):
                        pieces.append((tuple(int(x) for x in row), get(f"{pre}_indptr_{i}"),
                                       get(f"{pre}_indices_{i}"), get(f"{pre}_data_{i}")))
        else:
            for part in self.manifest["parts"]:
                f = self.path / part["file"]
                if not f.exists():
                    raise IncompleteResultError(f"{self.path}: part {part['file']} is missing")
                with np.load(f, allow_pickle=False) as z:
                    for i, row in enumerate(z["meta"]):
                        pieces.append((tuple(int(x) for x in row), z[f"indptr_{i}"],
                                       z[f"indices_{i}"], z[f"data_{i}"]))
        return pieces

    def load(self) -> Any:
        """The product in memory (flexsparse ``CSR`` or SciPy CSR, as the inputs were)."""
        ip, ix, d = assemble(self._pieces(), self.shape, self.dtype, self.index_dtype)
        return make_result(ip, ix, d, self.shape, self.manifest["family"])
