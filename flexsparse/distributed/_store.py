"""Writing a distributed product in the tiled result format that :class:`flexsparse.tiling.LazyResult` reads.

The format is the one :mod:`flexsparse.tiling.outfile` defines (a directory of part files
plus ``manifest.json``, or the same arrays in one ``.npz`` zip); this module only writes it
from several processes at once:

* each tile is one part file ``part-NNNNN.npz`` named by its tile id, written atomically by
  the worker that computed it (temporary + rename): writing a tile again replaces it, never
  adds to it;
* the client writes ``manifest.json`` last (atomically) once every tile is in; before that
  the directory is refused by ``LazyResult`` as incomplete;
* a ``.npz`` target is built in a hidden sibling directory, packed into the zip (one tile
  in memory at a time) and renamed onto the final name only when complete;
* :func:`abort` removes what a failed or cancelled run wrote.

Cost: O(nnz) bytes written once (twice for a ``.npz`` target).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import atomic_write

__all__ = ["abort", "commit", "prepare", "write_tile"]

MANIFEST = "manifest.json"
FORMAT = "flexsparse-tiled-csr"


def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    with zf.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
        if arr.size:
            fh.write(memoryview(arr.reshape(-1)).cast("B"))


def _part_name(tile_id: int) -> str:
    return f"part-{int(tile_id):05d}.npz"


def prepare(target: Path) -> Path:
    """The directory the workers write tiles into for ``target`` (created; an old manifest removed)."""
    target = Path(target)
    if target.suffix.lower() == ".npz":
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tiles-", dir=target.parent or Path(".")))
    target.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (target / MANIFEST).unlink()
    return target


def write_tile(directory: Path, tile_id: int, piece: Any) -> dict[str, Any]:
    """Write one piece as tile ``tile_id`` (atomic, idempotent); return its manifest entry."""
    meta, indptr, indices, data = piece
    name = _part_name(tile_id)
    with atomic_write(Path(directory) / name, "wb") as fh, \
            zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_npy(zf, "meta.npy", np.array([meta], dtype=np.int64).reshape(-1, 5))
        _write_npy(zf, "indptr_0.npy", indptr)
        _write_npy(zf, "indices_0.npy", indices)
        _write_npy(zf, "data_0.npy", data)
    return {"file": name, "pieces": 1, "nnz": int(indices.shape[0]), "partial": int(meta[4])}


def commit(target: Path, directory: Path, entries: list[dict[str, Any]], shape: tuple[int, int],
           dtype: np.dtype, index_dtype: np.dtype, family: str) -> Path:
    """Write the manifest (directory target) or pack the zip (``.npz`` target); return ``target``."""
    target = Path(target)
    entries = sorted(entries, key=lambda e: e["file"])
    partial = any(e.get("partial") for e in entries)
    parts = [{k: e[k] for k in ("file", "pieces", "nnz")} for e in entries]
    manifest = {"format": FORMAT, "version": 1, "shape": [int(s) for s in shape],
                "dtype": np.dtype(dtype).str, "index_dtype": np.dtype(index_dtype).str,
                "family": family, "stored": int(sum(e["nnz"] for e in entries)),
                "partial_sums": partial, "parts": parts, "complete": True}
    if target.suffix.lower() != ".npz":
        with atomic_write(target / MANIFEST, "w") as fh:
            fh.write(json.dumps(manifest, indent=1))
        return target
    zparts = []
    with atomic_write(target, "wb") as f, \
            zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for j, part in enumerate(parts):
            prefix = f"p{j:05d}"
            with np.load(directory / part["file"], allow_pickle=False) as z:
                for key in z.files:
                    _write_npy(zf, f"{prefix}_{key}.npy", z[key])
            zparts.append({"prefix": prefix, "pieces": part["pieces"], "nnz": part["nnz"]})
        zf.writestr(MANIFEST, json.dumps(dict(manifest, parts=zparts), indent=1))
    shutil.rmtree(directory, ignore_errors=True)
    return target


def abort(target: Path, directory: Path, tile_ids: list[int]) -> None:
    """Remove the tiles a failed run wrote (and the hidden directory of a ``.npz`` target)."""
    if Path(target).suffix.lower() == ".npz":
        shutil.rmtree(directory, ignore_errors=True)
        return
    for t in tile_ids:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(directory) / _part_name(t))
