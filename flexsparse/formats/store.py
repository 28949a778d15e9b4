"""The one on-disk format of flexsparse tensors and results: a self-describing tile store.

``fs.save("t.npz", x)``, ``einsum(..., out=...)`` and ``tiled_spgemm(..., out=...)`` all write
it, and ``fs.load`` / :class:`StoredTensor` read it in any later process (the manifest says
everything: shape, dtype, how to decode tile indices into coordinates).

Containers (same content, two packagings):

* a directory ``out/``: ``manifest.json``, one ``tile-NNNNNN.npz`` per tile, and
  ``decode.npz`` when a key table is needed;
* a single zip file ``out.npz`` (stored, uncompressed): members ``manifest.json``,
  ``tile-NNNNNN/<array>.npy`` and ``decode/<rows|cols>.npy`` (``np.load`` can list it).

Manifest (JSON)::

    {"format": "flexsparse", "version": 2, "complete": true,
     "shape": [...], "dtype": "<f8", "index_dtype": "<i4",
     "encoding": "coo" | "csr", "stored": <entries over all tiles>, "canonical": bool,
     "partial_sums": bool,            # tiles may hold several addends of one coordinate
     "matrix": {...},                 # "csr" only: see below
     "tiles": [{"id": 0, "name": "tile-000000", "nnz": ..., "pieces": ...}, ...]}

Tile encodings:

* ``"coo"``: arrays ``coords: [ndim, nnz]`` (``index_dtype``) and ``values: [nnz]``.
* ``"csr"``: CSR *pieces* of a matricised ``m x n`` product (what the tiler writes):
  ``meta: int64[n_pieces, 5]`` = ``(r0, r1, c0, c1, partial)`` per piece, then
  ``indptr_j: int64[r1-r0+1]``, ``indices_j: [nnz_j]`` (column ids), ``values_j: [nnz_j]``.
  ``manifest["matrix"] = {"shape": [m, n], "family": ..., "rows": K, "cols": K}`` where each
  key decoder ``K = {"axes": [...], "sizes": [...], "table": null | "rows" | "cols"}`` maps a
  row (column) id to coordinates of the stored tensor: mode ``t`` of the key has extent
  ``sizes[t]`` and fills tensor axis ``axes[t]`` (``-1``: dropped, a repeated batch mode);
  ids decode row-major over ``sizes`` (mixed radix), or through the key table
  ``decode/<table>: int64[len(sizes), n_ids]`` when the ids are ranks of sparse keys.

Guarantees: every file is written atomically (temporary + rename), the manifest last, so a
store without a complete manifest is refused (:class:`IncompleteResultError`). Tile writes are
idempotent: writing tile id ``t`` again replaces it (directory: the file is renamed over;
zip: the manifest points to the newest member), never duplicates it.

Reading: :meth:`StoredTensor.tiles` yields ``(coords [ndim, nnz], values [nnz])`` one tile at a
time (memory of one tile); :meth:`StoredTensor.load` concatenates them into a canonical COO
(duplicates from partial sums added): O(nnz log nnz) when tiles must be merged, else O(nnz).

>>> import tempfile, os, numpy as np
>>> from flexsparse.formats.coo import COO
>>> path = os.path.join(tempfile.mkdtemp(), "t.npz")
>>> write_coo(path, COO.from_numpy(np.eye(3)))
>>> s = StoredTensor(path)
>>> s
<StoredTensor shape=(3, 3) nnz=3 dtype=float64 encoding=coo tiles=1>
>>> [c.tolist() for c, _ in s.tiles()]
[[[0, 1, 2], [0, 1, 2]]]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse._util import atomic_write, index_dtype_for
from flexsparse.formats._npy import FileFormatError, read_member
from flexsparse.formats.coo import COO, normalize_shape

__all__ = ["FORMAT", "MANIFEST", "IncompleteResultError", "KeyDecoder", "MatrixLayout", "StoredTensor",
           "TileWriter", "check_store_directory", "is_store", "write_coo"]

FORMAT = "flexsparse"
VERSION = 2
MANIFEST = "manifest.json"
ENCODINGS = ("coo", "csr")


class IncompleteResultError(FileFormatError):
    """The store has no complete manifest (an interrupted run, or not a flexsparse store)."""


# ---------------------------------------------------------------------- index decoding
@dataclass(frozen=True, eq=False)
class KeyDecoder:
    """How one matricised id (a row or a column id) decodes into tensor coordinates.

    Attributes:
        axes: the tensor axis each key mode fills (``-1``: dropped).
        sizes: the key modes' extents (ids are row-major over them when ``table`` is None).
        table: ``int64[len(sizes), n_ids]`` coordinates of every id, or ``None``.
    """

    axes: tuple[int, ...]
    sizes: tuple[int, ...]
    table: np.ndarray | None = None

    def decode(self, ids: np.ndarray) -> list[np.ndarray]:
        """Per-mode coordinates (int64) of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.table is not None:
            return [row[ids] for row in self.table]
        out = []
        rest = ids
        for s in reversed(self.sizes[1:]):
            rest, c = np.divmod(rest, s)
            out.append(c)
        if self.sizes:
            out.append(rest)
        return out[::-1]

    def to_json(self, name: str) -> dict[str, Any]:
        return {"axes": list(self.axes), "sizes": [int(s) for s in self.sizes],
                "table": None if self.table is None else name}


@dataclass(frozen=True, eq=False)
class MatrixLayout:
    """The stored tensor as an ``m x n`` matrix: ``rows``/``cols`` decode ids to coordinates."""

    shape: tuple[int, int]
    rows: KeyDecoder
    cols: KeyDecoder

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> MatrixLayout:
        """A 2-D matrix stored as itself (row id = axis 0, column id = axis 1)."""
        m, n = (int(s) for s in shape)
        return cls((m, n), KeyDecoder((0,), (m,)), KeyDecoder((1,), (n,)))

    def coords(self, rows: np.ndarray, cols: np.ndarray, ndim: int, index_dtype: np.dtype) -> np.ndarray:
        """Tensor coordinates ``[ndim, nnz]`` of the matrix entries ``(rows, cols)``."""
        out = np.empty((ndim, rows.shape[0]), dtype=index_dtype)
        for dec, ids in ((self.rows, rows), (self.cols, cols)):
            for axis, c in zip(dec.axes, dec.decode(ids)):
                if axis >= 0:
                    out[axis] = c
        return out


# ---------------------------------------------------------------------- writing
def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    """Store ``arr`` as an ``.npy`` member without an extra copy of large arrays."""
    arr = np.ascontiguousarray(arr)
    with zf.open(name, "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
        if arr.size:
            fh.write(memoryview(arr.reshape(-1)).cast("B"))


def is_zip_target(path: str | os.PathLike) -> bool:
    """Whether ``path`` names the single-file (``.npz``) container."""
    return Path(path).suffix.lower() == ".npz"


def check_store_directory(path: str | os.PathLike) -> None:
    """Refuse to write a directory store where it would mix with other files: ``path`` must be
    new, empty, or already a store (whose manifest and tiles are then replaced).

    Raises:
        ValueError: ``path`` is the empty path, or an existing non-empty directory that is not
            a flexsparse store.
    """
    if not str(path):
        raise ValueError("the output path is empty")
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not is_store(path):
        raise ValueError(f"{path}: is a non-empty directory that is not a flexsparse store; refusing to "
                         "write tiles into it (name a new directory or a .npz file)")


class TileWriter:
    """Writes a store tile by tile; use as a context manager and finish with :meth:`commit`.

    Args:
        path: a directory (created) or a ``.npz`` file (written to a hidden temporary and renamed
            on commit).
        shape, dtype: of the stored tensor.
        encoding: ``"coo"`` or ``"csr"`` (then ``layout`` says how ids decode).
        layout: :class:`MatrixLayout` for ``"csr"`` tiles.
        family: what :class:`flexsparse.tiling.LazyResult` returns (``"flexsparse"``, ``"scipy-array"``,
            ``"scipy-matrix"``); recorded only.

    Leaving the ``with`` block by an exception deletes the tiles this writer wrote (and a
    previous manifest was already removed on entry), so nothing looks complete.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, encoding: str,
                 layout: MatrixLayout | None = None, family: str = "flexsparse") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown tile encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}")
        if encoding == "csr" and layout is None:
            raise ValueError("a 'csr' store needs a MatrixLayout")
        self.path = Path(path)
        self.shape = normalize_shape(shape)
        self.dtype = np.dtype(dtype)
        self.index_dtype = index_dtype_for(self.shape)
        self.encoding = encoding
        self.layout = layout
        self.family = family
        self._tiles: dict[int, dict[str, Any]] = {}
        self._members: set[str] = set()
        self._stack = contextlib.ExitStack()
        self._zip: zipfile.ZipFile | None = None
        self._partial = False
        self.committed = False

    def __enter__(self) -> TileWriter:
        if is_zip_target(self.path):
            f = self._stack.enter_context(atomic_write(self.path, "wb"))
            self._zip = self._stack.enter_context(
                zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True))
        else:
            check_store_directory(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # a stale manifest would look complete
                (self.path / MANIFEST).unlink()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and self._zip is None:
            for entry in self._tiles.values():
                with contextlib.suppress(FileNotFoundError):
                    (self.path / f"{entry['name']}.npz").unlink()
        self._stack.__exit__(exc_type, exc, tb)
        return False

    def _write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        """Write one group of arrays (a tile or the decode tables); returns the name used."""
        if self._zip is not None:
            version, unique = 0, name
            while unique in self._members:  # a rewritten tile: new members, newest one wins
                version += 1
                unique = f"{name}~{version}"
            for key, arr in arrays.items():
                _write_npy(self._zip, f"{unique}/{key}.npy", arr)
            self._members.add(unique)
            return unique
        with atomic_write(self.path / f"{name}.npz", "wb") as fh, \
                zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, arr in arrays.items():
                _write_npy(zf, f"{key}.npy", arr)
        return name

    def write_tile(self, tile_id: int, arrays: dict[str, np.ndarray]) -> None:
        """Write tile ``tile_id`` (replacing an earlier write of the same id).

        ``"coo"``: ``{"coords": [ndim, nnz], "values": [nnz]}``; ``"csr"``: ``{"meta": int64[p, 5],
        "indptr_j", "indices_j", "values_j" for j < p}``. Values are stored in the writer's
        ``dtype`` (a product computed in a wider type -- bool counts, float16 in float32 -- is
        cast per tile: partial sums of counts stay nonzero, so a bool result is exact).
        """
        tile_id = int(tile_id)
        if self.encoding == "coo":
            coords = np.asarray(arrays["coords"])
            values = np.asarray(arrays["values"])
            if coords.shape != (len(self.shape), values.shape[0]):
                raise ValueError(f"tile {tile_id}: coords must be [ndim={len(self.shape)}, nnz={values.shape[0]}], "
                                 f"got {coords.shape}")
            arrays = {"coords": coords.astype(self.index_dtype, copy=False),
                      "values": values.astype(self.dtype, copy=False)}
            nnz, pieces = int(values.shape[0]), 1
        else:
            meta = np.asarray(arrays["meta"], dtype=np.int64).reshape(-1, 5)
            pieces = meta.shape[0]
            nnz = int(sum(np.asarray(arrays[f"indices_{j}"]).shape[0] for j in range(pieces)))
            self._partial = self._partial or bool(meta[:, 4].any())
            arrays = dict(arrays, meta=meta)
            for j in range(pieces):  # the values are stored in the manifest's dtype
                arrays[f"values_{j}"] = np.asarray(arrays[f"values_{j}"]).astype(self.dtype, copy=False)
        name = self._write_arrays(f"tile-{tile_id:06d}", arrays)
        self._tiles[tile_id] = {"id": tile_id, "name": name, "nnz": nnz, "pieces": pieces}

    def commit(self, canonical: bool = False) -> StoredTensor:
        """Write the decode tables and then the manifest (last); return the reader."""
        matrix = None
        if self.encoding == "csr":
            lay = self.layout
            tables = {k: d.table for k, d in (("rows", lay.rows), ("cols", lay.cols)) if d.table is not None}
            if tables:
                self._write_arrays("decode", {k: np.asarray(t, dtype=np.int64) for k, t in tables.items()})
            matrix = {"shape": list(lay.shape), "family": self.family,
                      "rows": lay.rows.to_json("rows"), "cols": lay.cols.to_json("cols")}
        tiles = [self._tiles[k] for k in sorted(self._tiles)]
        manifest = {"format": FORMAT, "version": VERSION, "complete": True,
                    "shape": list(self.shape), "dtype": self.dtype.str,
                    "index_dtype": self.index_dtype.str, "encoding": self.encoding,
                    "stored": int(sum(t["nnz"] for t in tiles)), "canonical": bool(canonical),
                    "partial_sums": self._partial, "matrix": matrix, "tiles": tiles}
        text = json.dumps(manifest, indent=1)
        if self._zip is not None:
            self._zip.writestr(MANIFEST, text)
            self._stack.close()  # closes the zip, fsyncs and renames onto the final name
        else:
            with atomic_write(self.path / MANIFEST, "w") as fh:
                fh.write(text)
        self.committed = True
        return StoredTensor(self.path)


def write_coo(path: str | os.PathLike, coo: COO, tile_nnz: int | None = None) -> None:
    """Save a COO as a ``"coo"`` store (one tile, or tiles of ``tile_nnz`` entries)."""
    coo = coo.sum_duplicates() if not coo.canonical else coo
    step = max(1, int(tile_nnz)) if tile_nnz else max(1, coo.nnz)
    with TileWriter(path, coo.shape, coo.dtype, "coo") as w:
        for t, start in enumerate(range(0, max(coo.nnz, 1), step)):
            w.write_tile(t, {"coords": coo.coords[:, start:start + step], "values": coo.data[start:start + step]})
        w.commit(canonical=True)


# ---------------------------------------------------------------------- reading
#: Schema of the ``.npy`` members of a tile or decode group: name prefix -> (dtype kinds, ndim).
_MEMBER_SCHEMA = {"coords": ("iu", 2), "values": ("biufc", 1), "meta": ("iu", 2), "indptr": ("iu", 1),
                  "indices": ("iu", 1), "rows": ("iu", 2), "cols": ("iu", 2)}
_GROUP_NAME = re.compile(r"^(tile-\d{6}(~\d+)?|decode)$")
#: What a damaged container or member raises while it is read; reported as a FileFormatError.
_CONTENT_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError, AttributeError,
                   zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError, json.JSONDecodeError)


@contextlib.contextmanager
def _content_errors(path: Path) -> Iterator[None]:
    """Report any error about the content of the store at ``path`` as a :class:`FileFormatError`
    naming it (the loader contract: no other library's exception escapes a reader)."""
    try:
        yield
    except FileFormatError:
        raise
    except _CONTENT_ERRORS as exc:
        msg = str(exc)
        if msg.startswith(f"{path}:"):
            raise FileFormatError(msg) from None
        raise FileFormatError(f"{path}: {type(exc).__name__}: {msg}") from None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        if is_zip_target(path):
            with zipfile.ZipFile(path) as zf:
                text = zf.read(MANIFEST).decode()
        else:
            text = (path / MANIFEST).read_text()
        manifest = json.loads(text)
    except (FileNotFoundError, NotADirectoryError, KeyError, zipfile.BadZipFile, json.JSONDecodeError,
            UnicodeDecodeError, EOFError, zlib.error):
        raise IncompleteResultError(
            f"{path}: not a complete tiled result: no readable {MANIFEST} (the run that wrote it "
            "was interrupted, or it is not a flexsparse output)") from None
    if not isinstance(manifest, dict):
        raise FileFormatError(f"{path}: {MANIFEST} holds a JSON {type(manifest).__name__}, not an object")
    return manifest


def _is_int(x: Any, lo: int = 0) -> bool:
    """A JSON integer in ``[lo, 2**63)`` (``bool`` is not one)."""
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= _limits.INT64_MAX


def _check_manifest(path: Path, m: dict[str, Any]) -> None:
    """Validate every field of a complete manifest against the schema in the module docstring;
    a FileFormatError names the field (nothing is read from a tile that the manifest cannot
    describe)."""
    def bad(field: str, want: str) -> FileFormatError:
        return FileFormatError(f"{path}: {MANIFEST}: field {field!r} must be {want}, got {m.get(field)!r:.80}")

    shape = m.get("shape")
    if not isinstance(shape, list) or not all(_is_int(x) for x in shape):
        raise bad("shape", "a list of ints in [0, 2**63)")
    for field in ("dtype", "index_dtype"):
        try:
            dt = np.dtype(m.get(field)) if isinstance(m.get(field), str) else None
        except TypeError:
            dt = None
        if dt is None or dt.kind not in ("biufc" if field == "dtype" else "iu") or dt.fields is not None:
            raise bad(field, "a numeric dtype string" if field == "dtype" else "an integer dtype string")
    if m.get("encoding") not in ENCODINGS:
        raise bad("encoding", " or ".join(repr(e) for e in ENCODINGS))
    if not _is_int(m.get("stored")):
        raise bad("stored", "an int >= 0")
    for field in ("canonical", "partial_sums"):
        if not isinstance(m.get(field), bool):
            raise bad(field, "true or false")
    tiles = m.get("tiles")
    if not isinstance(tiles, list):
        raise bad("tiles", "a list")
    for t in tiles:
        if not (isinstance(t, dict) and _is_int(t.get("id")) and _is_int(t.get("nnz")) and _is_int(t.get("pieces"))
                and isinstance(t.get("name"), str) and _GROUP_NAME.match(t["name"])):
            raise FileFormatError(f"{path}: {MANIFEST}: malformed tile entry {t!r:.120} (expected id, "
                                  "name 'tile-NNNNNN', nnz and pieces)")
    if m["encoding"] == "coo":
        return
    mat = m.get("matrix")
    ndim = len(shape)
    if not isinstance(mat, dict) or not isinstance(mat.get("shape"), list) or len(mat["shape"]) != 2 or \
            not all(_is_int(x) for x in mat["shape"]):
        raise bad("matrix", "an object with a 2-int 'shape'")
    covered = []
    for key, n_ids in (("rows", mat["shape"][0]), ("cols", mat["shape"][1])):
        d = mat.get(key)
        ok = isinstance(d, dict) and isinstance(d.get("axes"), list) and isinstance(d.get("sizes"), list) \
            and len(d["axes"]) == len(d["sizes"]) and all(_is_int(a, -1) and a < ndim for a in d["axes"]) \
            and all(_is_int(x) for x in d["sizes"]) and d.get("table") in (None, "rows", "cols")
        if not ok:
            raise FileFormatError(f"{path}: {MANIFEST}: malformed matrix {key!r} decoder {d!r:.120}")
        for a, size in zip(d["axes"], d["sizes"]):
            if a >= 0:
                covered.append(a)
                if size > shape[a]:
                    raise FileFormatError(f"{path}: {MANIFEST}: matrix {key} mode of size {size} exceeds "
                                          f"the extent {shape[a]} of axis {a}")
        if d["table"] is None and n_ids > int(np.prod(d["sizes"], dtype=object)):
            raise FileFormatError(f"{path}: {MANIFEST}: matrix has {n_ids} {key} but its {key} decoder "
                                  f"spans only {int(np.prod(d['sizes'], dtype=object))} ids")
    if sorted(covered) != list(range(ndim)):
        raise FileFormatError(f"{path}: {MANIFEST}: the matrix decoders fill axes {sorted(covered)}; "
                              f"every axis of the {ndim}-D tensor must be filled exactly once")


def _check_bounds(path: Path, tile: str, coords: np.ndarray, shape: tuple[int, ...]) -> None:
    """Every coordinate of a tile lies inside ``shape`` (one min/max per mode)."""
    if coords.shape[1] == 0:
        return
    lo, hi = coords.min(axis=1), coords.max(axis=1)
    for mode, extent in enumerate(shape):
        if lo[mode] < 0 or hi[mode] >= extent:
            raise FileFormatError(f"{path}: {tile}: coordinate {int(lo[mode] if lo[mode] < 0 else hi[mode])} "
                                  f"out of bounds for mode {mode} with extent {extent}")


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory or zip holding a flexsparse manifest (complete or not);
    ``False`` for a file that is not a readable zip."""
    path = Path(path)
    if path.is_dir():
        return (path / MANIFEST).exists() or any(path.glob("tile-*.npz"))
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return MANIFEST in zf.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError, zlib.error, struct.error):
        return False
    return False


class StoredTensor:
    """Handle on a complete store: metadata from the manifest, data read on demand.

    Raises:
        IncompleteResultError: no complete manifest, or a tile file is missing.
        ValueError: a manifest of another format or a newer version.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        if manifest.get("format") == "flexsparse-tiled-csr":
            raise FileFormatError(f"{self.path}: written by an older flexsparse (flexsparse-tiled-csr v1, "
                                  "without index decoding); re-run the computation to write it again")
        if manifest.get("format") != FORMAT:
            raise FileFormatError(f"{self.path}: manifest format {manifest.get('format')!r:.80} is not {FORMAT!r}")
        if not _is_int(manifest.get("version")):
            raise FileFormatError(f"{self.path}: {MANIFEST}: field 'version' must be an int, "
                                  f"got {manifest.get('version')!r:.80}")
        if manifest["version"] > VERSION:
            raise FileFormatError(f"{self.path}: store version {manifest['version']} is newer than this "
                                  f"flexsparse reads ({VERSION})")
        if manifest.get("complete") is not True:
            raise IncompleteResultError(f"{self.path}: manifest is not marked complete")
        _check_manifest(self.path, manifest)
        self.manifest = manifest
        self.shape: tuple[int, ...] = tuple(manifest["shape"])
        self._stored_shape = self.shape  # the tensor the tiles decode to (LazyResult's shape differs)
        self.dtype = np.dtype(manifest["dtype"])
        self.index_dtype = np.dtype(manifest["index_dtype"])
        self.encoding: str = manifest["encoding"]
        self._nnz: int | None = None if manifest["partial_sums"] else int(manifest["stored"])
        self._layout: MatrixLayout | None = None
        self._members: dict[str, list[str]] | None = None

    # -- metadata ---------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def n_tiles(self) -> int:
        return len(self.manifest["tiles"])

    @property
    def nnz(self) -> int:
        """Entries of the tensor (from the manifest; counted once by loading when tiles hold
        partial sums of the same coordinates)."""
        if self._nnz is None:
            self._nnz = int(self.load().nnz)
        return self._nnz

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} shape={self.shape} nnz={self.nnz} dtype={self.dtype} "
                f"encoding={self.encoding} tiles={self.n_tiles}>")

    @property
    def layout(self) -> MatrixLayout | None:
        """The matricised layout of a ``"csr"`` store (key tables read on first use)."""
        if self._layout is None and self.encoding == "csr":
            mat = self.manifest["matrix"]
            with _content_errors(self.path):
                tables = self._read_group("decode") if any(mat[k]["table"] for k in ("rows", "cols")) else {}

            def dec(key: str, n_ids: int) -> KeyDecoder:
                spec = mat[key]
                table = None
                if spec["table"]:
                    table = tables.get(spec["table"])
                    if table is None or table.shape[0] != len(spec["sizes"]) or table.shape[1] < n_ids:
                        raise FileFormatError(f"{self.path}: decode table {spec['table']!r} is missing or does "
                                              f"not hold {len(spec['sizes'])} x {n_ids} coordinates")
                    for row, size in zip(table, spec["sizes"]):
                        if row.size and (row.min() < 0 or row.max() >= size):
                            raise FileFormatError(f"{self.path}: decode table {spec['table']!r} holds a "
                                                  f"coordinate outside [0, {size})")
                return KeyDecoder(tuple(spec["axes"]), tuple(spec["sizes"]), table)

            m, n = mat["shape"]
            self._layout = MatrixLayout((m, n), dec("rows", m), dec("cols", n))
        return self._layout

    # -- raw access -------------------------------------------------------------
    @contextlib.contextmanager
    def _opened(self) -> Iterator[zipfile.ZipFile | None]:
        """The zip container opened once for a series of reads (``None`` for a directory)."""
        if not is_zip_target(self.path):
            yield None
            return
        with zipfile.ZipFile(self.path) as zf:
            if self._members is None:  # group name -> its .npy members, from one pass
                index: dict[str, list[str]] = {}
                for member in zf.namelist():
                    group, sep, leaf = member.rpartition("/")
                    if sep and leaf.endswith(".npy"):
                        index.setdefault(group, []).append(member)
                self._members = index
            yield zf

    def _read_group(self, name: str, zf: zipfile.ZipFile | None = None) -> dict[str, np.ndarray]:
        if zf is None and is_zip_target(self.path):
            with self._opened() as opened:
                return self._read_group(name, opened)
        if zf is not None:
            out = {}
            for member in self._members.get(name, ()):  # headers checked before any array is made
                out[member[len(name) + 1:-4]] = self._member(zf, member, member[len(name) + 1:-4])
            if not out:
                raise IncompleteResultError(f"{self.path}: member group {name!r} is missing")
            return out
        f = self.path / f"{name}.npz"
        if not f.exists():
            raise IncompleteResultError(f"{self.path}: {f.name} is missing")
        with zipfile.ZipFile(f) as z:
            return {m[:-4]: self._member(z, m, m[:-4], f.name) for m in z.namelist() if m.endswith(".npy")}

    def _member(self, zf: zipfile.ZipFile, member: str, key: str, where: str = "") -> np.ndarray:
        """One ``.npy`` member, its header checked against :data:`_MEMBER_SCHEMA` first."""
        schema = _MEMBER_SCHEMA.get(key.rpartition("_")[0] if key[-1:].isdigit() else key)
        if schema is None:
            raise FileFormatError(f"{self.path}: unexpected member {member!r}{f' in {where}' if where else ''}")
        return read_member(zf, member, self.path, repr(f"{where}:{member}" if where else member), *schema)

    def _tile_arrays(self, tile: dict[str, Any], zf: zipfile.ZipFile | None) -> dict[str, np.ndarray]:
        arrays = self._read_group(tile["name"], zf)
        need = ("coords", "values") if self.encoding == "coo" else ("meta",)
        missing = [k for k in need if k not in arrays]
        if missing:
            raise FileFormatError(f"{self.path}: {tile['name']} lacks {', '.join(missing)}")
        return arrays

    def pieces(self, tile: dict[str, Any], zf: zipfile.ZipFile | None = None
               ) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
        """CSR pieces ``((r0, r1, c0, c1, partial), indptr, indices, values)`` of a ``"csr"`` tile,
        each checked: rows and columns inside the matrix, monotone row pointers that match the
        lengths of the column ids and values."""
        with _content_errors(self.path):
            return self._pieces(tile, zf)

    def _pieces(self, tile: dict[str, Any], zf: zipfile.ZipFile | None
                ) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]]:
        arrays = self._tile_arrays(tile, zf)
        name = tile["name"]
        meta = arrays["meta"]
        m, n = self.manifest["matrix"]["shape"]
        if meta.shape[1:] != (5,):
            raise FileFormatError(f"{self.path}: {name}: meta has shape {meta.shape}; expected [pieces, 5]")
        out = []
        for j, row in enumerate(meta.tolist()):
            r0, r1, c0, c1, _ = row
            parts = [arrays.get(f"{k}_{j}") for k in ("indptr", "indices", "values")]
            if any(p is None for p in parts):
                raise FileFormatError(f"{self.path}: {name}: piece {j} lacks its indptr/indices/values")
            ip, ix, vals = parts
            if not (0 <= r0 <= r1 <= m and 0 <= c0 <= c1 <= n):
                raise FileFormatError(f"{self.path}: {name}: piece {j} spans rows [{r0}, {r1}) and columns "
                                      f"[{c0}, {c1}) outside the {m} x {n} matrix")
            if ip.shape[0] != r1 - r0 + 1 or ip[0] != 0 or ip[-1] != ix.shape[0] or ix.shape != vals.shape \
                    or (ip.shape[0] > 1 and (np.diff(ip) < 0).any()):
                raise FileFormatError(f"{self.path}: {name}: piece {j} has inconsistent row pointers "
                                      f"({ip.shape[0]} pointers for {r1 - r0} rows, {ix.shape[0]} column ids, "
                                      f"{vals.shape[0]} values)")
            if ix.size and (ix.min() < 0 or ix.max() >= n):
                raise FileFormatError(f"{self.path}: {name}: piece {j} has a column id outside [0, {n})")
            out.append((tuple(row), ip, ix, vals))
        return out

    # -- tensor access ----------------------------------------------------------
    def tiles(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(coords [ndim, nnz], values [nnz])`` of each tile in turn (one tile in memory).

        Coordinates are those of the stored tensor; tiles of a result with partial sums may
        repeat a coordinate (their values add up).

        Raises:
            FileFormatError: a tile that is missing, damaged or inconsistent with the manifest
                (raised when that tile is reached).
        """
        lay = self.layout
        with _content_errors(self.path), self._opened() as zf:
            yield from self._tiles(zf, lay)

    def _tiles(self, zf: zipfile.ZipFile | None, lay: MatrixLayout | None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        shape = self._stored_shape
        for tile in self.manifest["tiles"]:
            if self.encoding == "coo":
                arrays = self._tile_arrays(tile, zf)
                coords, values = arrays["coords"], arrays["values"]
                if coords.shape != (len(shape), values.shape[0]):
                    raise FileFormatError(f"{self.path}: {tile['name']}: coords of shape {coords.shape} do not "
                                          f"match {values.shape[0]} values of a {len(shape)}-D tensor")
                _check_bounds(self.path, tile["name"], coords, shape)
                yield coords.astype(self.index_dtype, copy=False), values.astype(self.dtype, copy=False)
                continue
            parts = self._pieces(tile, zf)
            if not parts:
                yield np.zeros((len(shape), 0), self.index_dtype), np.zeros(0, self.dtype)
                continue
            rows = np.concatenate([np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(ip))
                                   for (r0, r1, *_), ip, _, _ in parts])
            cols = np.concatenate([ix for _, _, ix, _ in parts])
            vals = np.concatenate([v for *_, v in parts]).astype(self.dtype, copy=False)
            coords = lay.coords(rows, cols, len(shape), self.index_dtype)
            _check_bounds(self.path, tile["name"], coords, shape)
            yield coords, vals

    def load(self) -> COO:
        """The whole tensor as a canonical :class:`~flexsparse.formats.coo.COO`."""
        coords, values = [], []
        for c, v in self.tiles():
            coords.append(c)
            values.append(v)
        if coords:
            cat = np.concatenate(coords, axis=1) if len(coords) > 1 else coords[0]
            vals = np.concatenate(values) if len(values) > 1 else values[0]
        else:
            cat, vals = np.zeros((self.ndim, 0), self.index_dtype), np.zeros(0, self.dtype)
        canonical = True if self.manifest.get("canonical") else None
        with _content_errors(self.path):  # e.g. a canonical flag that the coordinates contradict
            return COO(cat, vals.astype(self.dtype, copy=False), self._stored_shape,
                       canonical=canonical).sum_duplicates()
