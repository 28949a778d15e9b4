"""Writing a distributed product as a flexsparse store (:mod:`flexsparse.formats.store`) from many processes.

The format is the store's ``"csr"`` encoding (what ``einsum(out=...)`` writes in process and
``fs.load`` reads in any process); this module only splits its writing across processes:

* each output block is one tile ``tile-NNNNNN.npz`` named by its block id, written atomically by
  the worker that computed it, through :meth:`TileWriter.write_tile` (temporary + rename):
  writing a tile again -- a retry after a lost worker -- replaces it, never adds to it;
* the client writes the decode tables and ``manifest.json`` last (:meth:`TileWriter.commit`)
  once every tile is in; before that the store is refused as incomplete;
* a ``.npz`` target is built in a hidden sibling directory, then streamed into the zip one tile
  at a time by the client's writer, which renames the zip onto its final name only when complete;
* :func:`abort` removes what a failed or cancelled run wrote.

Cost: O(nnz) bytes written once (twice for a ``.npz`` target).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["abort", "commit", "prepare", "write_tile"]


def _is_zip(path: Path) -> bool:
    from flexsparse.formats.store import is_zip_target

    return is_zip_target(path)


def _name(tile_id: int) -> str:
    return f"tile-{int(tile_id):06d}"


def prepare(target: Path) -> Path:
    """The directory the workers write tiles into for ``target`` (created; a stale manifest removed)."""
    from flexsparse.formats.store import MANIFEST

    target = Path(target)
    if _is_zip(target):
        parent = target.parent if str(target.parent) else Path(".")
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tiles-", dir=parent))
    target.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (target / MANIFEST).unlink()
    return target


def _arrays(piece: Any) -> dict[str, np.ndarray]:
    meta, indptr, indices, data = piece
    return {"meta": np.array([meta], dtype=np.int64).reshape(-1, 5), "indptr_0": indptr,
            "indices_0": indices, "values_0": data}


def write_tile(directory: Path, tile_id: int, piece: Any) -> dict[str, Any]:
    """Write one piece as tile ``tile_id`` of the store being built in ``directory``; its manifest entry."""
    from flexsparse.formats.store import MatrixLayout, TileWriter

    (r0, r1, c0, c1, _), _, indices, data = piece
    # a directory writer writes each tile atomically on its own; only the client commits
    TileWriter(directory, (max(r1, 1), max(c1, 1)), data.dtype, "csr",
               layout=MatrixLayout.identity((max(r1, 1), max(c1, 1)))).write_tile(tile_id, _arrays(piece))
    return {"id": int(tile_id), "name": _name(tile_id), "nnz": int(indices.shape[0]), "pieces": 1}


def commit(target: Path, directory: Path, entries: list[dict[str, Any]], shape: tuple[int, ...],
           dtype: np.dtype, layout: Any) -> Any:
    """Write the manifest (directory target) or pack the zip (``.npz`` target); return the reader."""
    from flexsparse.formats.store import TileWriter

    target = Path(target)
    if not _is_zip(target):
        writer = TileWriter(target, shape, dtype, "csr", layout=layout)
        # adopt the tiles the workers wrote: the manifest lists them (sorted by id) on commit
        writer._tiles.update({int(e["id"]): dict(e) for e in entries})
        return writer.commit()
    with TileWriter(target, shape, dtype, "csr", layout=layout) as writer:
        for e in sorted(entries, key=lambda e: e["id"]):
            with np.load(directory / f"{e['name']}.npz", allow_pickle=False) as z:
                writer.write_tile(e["id"], {k[:-4] if k.endswith(".npy") else k: z[k] for k in z.files})
        stored = writer.commit()
    shutil.rmtree(directory, ignore_errors=True)
    return stored


def abort(target: Path, directory: Path, tile_ids: list[int]) -> None:
    """Remove the tiles a failed run wrote (and the hidden directory of a ``.npz`` target)."""
    if _is_zip(Path(target)):
        shutil.rmtree(directory, ignore_errors=True)
        return
    for t in tile_ids:
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / f"{_name(t)}.npz").unlink()
