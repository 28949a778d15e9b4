"""Reading and writing sparse tensors: FROSTT ``.tns``, Matrix Market ``.mtx``, the flexsparse store.

Formats (``load``/``save`` dispatch on the file extension, or ``format=``; a directory is a
store):

* ``.tns`` -- one nonzero per line, ``i_1 ... i_d value``. Two layouts exist: the
  published FROSTT one (1-based, no header) and a variant whose first line is the shape
  (one integer per mode) with 0-based indices. Rules, never a silent guess:

  - ``header``: ``True``/``False`` explicit; ``None`` -> a header is present iff the
    first non-blank line has exactly one field fewer than the second (data lines have
    ``ndim + 1`` fields, a header ``ndim``). A file with one line is ambiguous.
  - ``index_base``: ``0``/``1`` explicit; ``None`` -> decided by evidence only: a ``0``
    coordinate proves 0-based; a coordinate equal to its header/``shape`` extent proves
    1-based; both is an error; neither is *ambiguous* and raises ValueError asking
    for ``index_base=`` (a published FROSTT file needs ``index_base=1``).
  - ``shape=`` (explicit) wins over the header; otherwise header, otherwise
    ``max index + 1``. ``#`` lines and blank lines are skipped (line numbers still count them).

* ``.mtx`` -- Matrix Market (2-D). The ``coordinate`` format (real/integer/complex/pattern;
  general/symmetric/skew-symmetric/hermitian) is parsed here so errors carry line
  numbers; the dense ``array`` format goes through ``scipy.io.mmread``. Written as
  ``coordinate general``.
* ``.npz`` or a directory -- the flexsparse store (:mod:`flexsparse.formats.store`), the one
  on-disk format of tensors and results: ``save`` writes it (one ``"coo"`` tile), and
  ``einsum(out=...)``/``tiled_spgemm(out=...)`` write it tile by tile; ``load`` reads any of
  them (``lazy=True`` returns the :class:`~flexsparse.formats.store.StoredTensor` handle).
  ``load`` also reads two older ``.npz`` layouts: flexsparse's first one (``format_version``
  = 1, ``shape``, ``data``, ``coords_0 .. coords_{d-1}``, ``canonical``) and SciPy's
  ``scipy.sparse.save_npz`` files. Always with ``allow_pickle=False``.

Parsing is vectorised: the file is read once into a byte array, fields per line are
counted with NumPy (token starts = non-space after space), and numbers are parsed by
``np.fromstring`` in C -- O(file size) time, about 10 bytes of temporaries per input
byte. A malformed line raises ValueError ``"<file>:<line>: ..."`` (found by a Python
re-scan that runs only on the error path). Every write goes through
:func:`flexsparse._util.atomic_write`.

>>> import tempfile, os, numpy as np
>>> from flexsparse.formats.coo import COO
>>> t = COO([[0, 2], [1, 0]], [1.5, -2.0], shape=(3, 2))
>>> p = os.path.join(tempfile.mkdtemp(), "t.tns")
>>> save(p, t)
>>> open(p).read()
'1 2 1.5\\n3 1 -2.0\\n'
>>> np.array_equal(load(p, index_base=1, shape=(3, 2)).todense(), t.todense())
True
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from flexsparse._util import atomic_write, check_numeric_dtype
from flexsparse.formats.coo import COO, normalize_shape
from flexsparse.formats.store import StoredTensor, is_store, write_coo

__all__ = ["load", "save", "FORMATS"]

#: Supported file extensions (a directory is read as a store).
FORMATS = (".tns", ".mtx", ".npz")
#: ``format_version`` of the first flexsparse ``.npz`` layout (still read, no longer written).
NPZ_VERSION = 1
_MAX_EXACT_INDEX = 2**53  # indices are parsed through float64


# ---------------------------------------------------------------------- text scanning
def _scan_lines(raw: bytes):
    """Fields per line of ``raw``: returns (counts [n_lines], line_start_byte [n_lines])."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    nl = buf == 10
    ws = nl | (buf == 32) | (buf == 9) | (buf == 13) | (buf == 11) | (buf == 12)
    tok_start = ~ws
    tok_start[1:] &= ws[:-1]
    line_of_byte = np.cumsum(nl) - nl  # a newline belongs to the line it ends
    n_lines = int(nl.sum()) + 1
    counts = np.bincount(line_of_byte[tok_start], minlength=n_lines)
    starts = np.concatenate([[0], np.flatnonzero(nl) + 1])
    return counts, starts


def _find_bad_line(raw: bytes, first_line: int, path, parse=float) -> str:
    """Slow path, only on error: the first line (1-based) whose fields do not parse."""
    for lineno, line in enumerate(raw.split(b"\n")[first_line:], start=first_line + 1):
        for tok in line.split():
            try:
                parse(tok.decode("latin-1"))
            except ValueError:
                return f"{path}:{lineno}: cannot parse {tok.decode('latin-1')!r} as a number"
    return f"{path}: malformed numeric data"


def _parse_block(raw: bytes, offset: int, n_rows: int, n_cols: int, path, first_line: int,
                 dtype=np.float64) -> np.ndarray:
    """Parse ``n_rows x n_cols`` whitespace-separated numbers of ``raw[offset:]``."""
    text = raw[offset:].decode("latin-1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.fromstring only *warns* when it stops early
        try:
            vals = np.fromstring(text, dtype=dtype, sep=" ")
        except (DeprecationWarning, ValueError):
            vals = None
    if vals is None or vals.size != n_rows * n_cols:
        raise ValueError(_find_bad_line(raw, first_line, path, float if dtype != np.int64 else int))
    return vals.reshape(n_rows, n_cols)


def _data_lines(counts: np.ndarray, skip: int, n_cols: int, path, what: str) -> np.ndarray:
    """Indices of the non-blank lines after ``skip``, checking each has ``n_cols`` fields."""
    lines = np.flatnonzero(counts)
    lines = lines[lines >= skip]
    bad = lines[counts[lines] != n_cols]
    if bad.size:
        ln = int(bad[0])
        raise ValueError(f"{path}:{ln + 1}: expected {n_cols} fields ({what}), found {int(counts[ln])}")
    return lines


def _strip_comments(raw: bytes, marker: bytes) -> bytes:
    """Blank out comment lines (keeping the newlines so line numbers stay right)."""
    if marker not in raw:
        return raw
    return re.sub(rb"(?m)^[ \t]*" + re.escape(marker) + rb"[^\n]*", b"", raw)


def _int_row(raw_line: bytes, path, lineno: int, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(tok) for tok in raw_line.split())
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} must be integers, got {raw_line.decode('latin-1').strip()!r}") \
            from None


def _check_indices(idx: np.ndarray, lines: np.ndarray, path) -> np.ndarray:
    """float64 index block [nnz, d] -> int64, rejecting non-integers and huge values."""
    bad = (idx != np.floor(idx)) | (np.abs(idx) > _MAX_EXACT_INDEX)
    if bad.any():
        r, m = np.argwhere(bad)[0]
        raise ValueError(f"{path}:{int(lines[r]) + 1}: index {float(idx[r, m])!r} in mode {m} is not an integer "
                         f"below 2**53")
    return idx.astype(np.int64)


def _check_bounds(idx: np.ndarray, shape, lines, path, base: int) -> None:
    for m, extent in enumerate(shape):
        col = idx[:, m]
        bad = (col < 0) | (col >= extent)
        if bad.any():
            r = int(np.argmax(bad))
            raise ValueError(f"{path}:{int(lines[r]) + 1}: index {int(col[r]) + base} in mode {m} is out of "
                             f"bounds for extent {extent} with index_base={base}")


# ---------------------------------------------------------------------- .tns
def _load_tns(path, raw: bytes, index_base, header, shape, dtype) -> COO:
    raw = _strip_comments(raw, b"#")
    counts, starts = _scan_lines(raw)
    nonblank = np.flatnonzero(counts)
    if header is None:
        if nonblank.size >= 2:
            header = bool(counts[nonblank[0]] == counts[nonblank[1]] - 1)
        elif nonblank.size == 1:
            raise ValueError(f"{path}: a single line is ambiguous (shape header or one nonzero?); pass header=")
        else:
            header = False
    hdr_shape = None
    skip = 0
    if header:
        if nonblank.size == 0:
            raise ValueError(f"{path}: header=True but the file is empty")
        h = int(nonblank[0])
        hdr_shape = _int_row(raw[starts[h]:starts[h + 1] if h + 1 < starts.size else None], path, h + 1,
                             "shape header fields")
        hdr_shape = normalize_shape(hdr_shape, f"{path}: header shape")
        skip = h + 1
    if shape is not None:
        shape = normalize_shape(shape)
    ref_shape = shape if shape is not None else hdr_shape
    rest = nonblank[nonblank >= skip]
    if rest.size == 0:
        if ref_shape is None:
            raise ValueError(f"{path}: no nonzeros and no shape; pass shape=")
        return COO.empty(ref_shape, np.float64 if dtype is None else dtype)
    n_cols = int(counts[rest[0]]) if ref_shape is None else len(ref_shape) + 1
    lines = _data_lines(counts, skip, n_cols, path, f"{n_cols - 1} indices and a value")
    table = _parse_block(raw, int(starts[skip]), lines.size, n_cols, path, skip)
    idx = _check_indices(table[:, :-1], lines, path)
    vals = table[:, -1]
    ndim = n_cols - 1
    if index_base is None:
        has_zero = bool((idx == 0).any())
        at_extent = ref_shape is not None and bool((idx == np.asarray(ref_shape, dtype=np.int64)).any())
        if has_zero and at_extent:
            raise ValueError(f"{path}: indices contain 0 and also an index equal to its extent "
                             f"{ref_shape}: neither 0- nor 1-based fits; check the file or pass shape=")
        if not (has_zero or at_extent):
            raise ValueError(f"{path}: cannot tell whether indices are 0- or 1-based (no 0 index"
                             f"{'' if ref_shape is None else ' and none equal to its extent'}); pass "
                             "index_base=1 for published FROSTT files or index_base=0")
        index_base = 0 if has_zero else 1
    if index_base not in (0, 1):
        raise ValueError(f"index_base must be 0 or 1, got {index_base!r}")
    idx -= index_base
    if ref_shape is None:
        if (idx < 0).any():
            r, m = np.argwhere(idx < 0)[0]
            raise ValueError(f"{path}:{int(lines[r]) + 1}: index {int(idx[r, m]) + index_base} in mode {m} is "
                             f"below index_base={index_base}")
        ref_shape = tuple(int(x) + 1 for x in idx.max(axis=0)) if ndim else ()
    _check_bounds(idx, ref_shape, lines, path, index_base)
    if len(ref_shape) != ndim:
        raise ValueError(f"{path}: shape {ref_shape} has {len(ref_shape)} modes but lines have {ndim} indices")
    if dtype is not None:
        vals = vals.astype(check_numeric_dtype(dtype, "dtype"))
    return COO(idx.T.copy(), vals, ref_shape)


def _format_columns(cols: list[np.ndarray]) -> str:
    """Join columns (already strings) with spaces and rows with newlines (vectorised)."""
    row = cols[0]
    for c in cols[1:]:
        row = np.char.add(np.char.add(row, " "), c)
    return "\n".join(row.tolist()) + ("\n" if row.size else "")


def _value_strings(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind == "b":
        data = data.astype(np.int64)
    # float -> str gives the shortest repr that round-trips (float32 too, after the cast back)
    return data.astype(str)


def _save_tns(f, t: COO, index_base: int, header: bool) -> None:
    if t.dtype.kind == "c":
        raise ValueError(".tns cannot store complex values; save as .npz or .mtx")
    if index_base not in (0, 1):
        raise ValueError(f"index_base must be 0 or 1, got {index_base!r}")
    if header:
        f.write((" ".join(str(s) for s in t.shape) + "\n").encode())
    cols = [(t.coords[m].astype(np.int64) + index_base).astype(str) for m in range(t.ndim)]
    cols.append(_value_strings(t.data))
    f.write(_format_columns(cols).encode())


# ---------------------------------------------------------------------- .mtx
_MM_FIELDS = {"real": 1, "double": 1, "integer": 1, "complex": 2, "pattern": 0}
_MM_SYMMETRY = ("general", "symmetric", "skew-symmetric", "hermitian")


def _load_mtx(path, raw: bytes, index_base, dtype) -> COO:
    if index_base not in (None, 1):
        raise ValueError(f"Matrix Market indices are 1-based by definition; got index_base={index_base!r}")
    first = raw.split(b"\n", 1)[0].decode("latin-1").strip()
    banner = first.lower().split()
    if len(banner) != 5 or banner[0] != "%%matrixmarket" or banner[1] != "matrix":
        raise ValueError(f"{path}:1: not a Matrix Market banner: {first!r} "
                         "(expected '%%MatrixMarket matrix <format> <field> <symmetry>')")
    fmt, field, sym = banner[2:]
    if field not in _MM_FIELDS:
        raise ValueError(f"{path}:1: unknown field {field!r}; valid: {', '.join(_MM_FIELDS)}")
    if sym not in _MM_SYMMETRY:
        raise ValueError(f"{path}:1: unknown symmetry {sym!r}; valid: {', '.join(_MM_SYMMETRY)}")
    if fmt == "array":
        import scipy.io

        try:
            dense = scipy.io.mmread(str(path))
        except Exception as exc:  # scipy's parser gives no line numbers; keep its message
            raise ValueError(f"{path}: malformed Matrix Market array file: {exc}") from exc
        out = COO.from_numpy(np.asarray(dense))
        return out if dtype is None else out.astype(dtype)
    if fmt != "coordinate":
        raise ValueError(f"{path}:1: unknown format {fmt!r}; valid: coordinate, array")
    body = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    body = b"\n" + _strip_comments(body, b"%")  # keep the banner's line so numbers match the file
    counts, starts = _scan_lines(body)
    nonblank = np.flatnonzero(counts)
    if nonblank.size == 0:
        raise ValueError(f"{path}: missing the 'rows cols nnz' size line")
    s = int(nonblank[0])
    size = _int_row(body[starts[s]:starts[s + 1] if s + 1 < starts.size else None], path, s + 1,
                    "size line fields")
    if len(size) != 3:
        raise ValueError(f"{path}:{s + 1}: size line must be 'rows cols nnz', got {len(size)} fields")
    n_rows, n_cols_m, nnz = size
    shape = normalize_shape((n_rows, n_cols_m), f"{path}: size line")
    width = 2 + _MM_FIELDS[field]
    lines = _data_lines(counts, s + 1, width, path, f"2 indices and {_MM_FIELDS[field]} value field(s)")
    if lines.size != nnz:
        raise ValueError(f"{path}: size line declares {nnz} entries but {lines.size} lines follow")
    if nnz == 0:
        natural = {"complex": np.complex128, "integer": np.int64}.get(field, np.float64)
        return COO.empty(shape, natural if dtype is None else dtype)
    int_field = field in ("integer", "pattern")
    table = _parse_block(body, int(starts[s + 1]), nnz, width, path, s + 1,
                         np.int64 if int_field else np.float64)
    idx = table[:, :2] if int_field else _check_indices(table[:, :2], lines, path)
    idx = idx - 1
    _check_bounds(idx, shape, lines, path, 1)
    if field == "pattern":
        vals = np.ones(nnz, dtype=np.float64)
    elif field == "complex":
        vals = table[:, 2] + 1j * table[:, 3]
    else:
        vals = table[:, 2]
    if sym != "general":
        off = idx[:, 0] != idx[:, 1]
        mirrored = {"symmetric": vals[off], "skew-symmetric": -vals[off], "hermitian": np.conj(vals[off])}[sym]
        idx = np.vstack([idx, idx[off][:, ::-1]])
        vals = np.concatenate([vals, mirrored])
    if dtype is not None:
        vals = vals.astype(check_numeric_dtype(dtype, "dtype"))
    return COO(idx.T.copy(), vals, shape)


def _save_mtx(f, t: COO) -> None:
    if t.ndim != 2:
        raise ValueError(f"Matrix Market stores 2-D matrices only, got shape {t.shape}; use .tns or .npz")
    kind = t.dtype.kind
    field = "complex" if kind == "c" else "integer" if kind in "iub" else "real"
    f.write(f"%%MatrixMarket matrix coordinate {field} general\n".encode())
    f.write(f"{t.shape[0]} {t.shape[1]} {t.nnz}\n".encode())
    cols = [(t.coords[m].astype(np.int64) + 1).astype(str) for m in range(2)]
    if kind == "c":
        cols += [t.data.real.astype(str), t.data.imag.astype(str)]
    else:
        cols.append(_value_strings(t.data))
    f.write(_format_columns(cols).encode())


# ---------------------------------------------------------------------- .npz
def _load_npz(path) -> COO:
    """A ``.npz`` file: a flexsparse store, the first flexsparse layout, or SciPy's."""
    if is_store(path):
        return StoredTensor(path).load()
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "format_version" not in keys and {"format", "shape", "data"} <= keys:
            return _load_scipy_npz(path)
        for key in ("format_version", "shape", "data"):
            if key not in keys:
                raise ValueError(f"{path}: not a flexsparse .npz (missing {key!r}; has {sorted(keys)})")
        version = int(z["format_version"])
        if version != NPZ_VERSION:
            raise ValueError(f"{path}: unsupported flexsparse .npz format_version {version} (this "
                             f"version reads {NPZ_VERSION})")
        shape = normalize_shape(z["shape"].tolist(), f"{path}: shape")
        missing = [f"coords_{m}" for m in range(len(shape)) if f"coords_{m}" not in keys]
        if missing:
            raise ValueError(f"{path}: missing {missing} for shape {shape}")
        data = z["data"]
        coords = np.vstack([z[f"coords_{m}"] for m in range(len(shape))]) if shape else \
            np.zeros((0, data.shape[0]), dtype=np.int64)
        canonical = bool(z["canonical"]) if "canonical" in keys else None
    # the constructor re-checks bounds and verifies the stored canonical flag
    return COO(coords, data, shape, canonical=canonical if canonical else None)


def _load_scipy_npz(path) -> COO:
    """A ``scipy.sparse.save_npz`` file (any of its formats) as a COO."""
    import scipy.sparse as sp

    from flexsparse.formats.convert import from_scipy

    try:
        m = sp.load_npz(path)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: malformed SciPy sparse .npz: {exc}") from exc
    return from_scipy(m)


def _save_npz(path, t: COO) -> None:
    write_coo(path, t)


# ---------------------------------------------------------------------- dispatch
def _format_of(path, format) -> str:
    if not format and Path(path).is_dir():
        return "store"
    ext = ("." + format.lower().lstrip(".")) if format else Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"unsupported file format {ext or '(no extension)'!r} for {path}; supported: "
                         f"{', '.join(FORMATS)} (or pass format=)")
    return ext


def load(path, *, index_base: int | None = None, header: bool | None = None, shape=None, dtype=None,
         format: str | None = None, lazy: bool = False) -> COO:
    """Read a sparse tensor from ``.tns``, ``.mtx``, ``.npz`` or a store directory (module docstring).

    Args:
        path: file to read; the extension picks the format unless ``format`` is given.
        index_base: 0 or 1 for ``.tns`` (``None``: only when the data proves it);
            ``.mtx`` is always 1-based.
        header: whether a ``.tns`` file starts with a shape line (``None``: detect by field count).
        shape: explicit shape (wins over a ``.tns`` header).
        dtype: cast values to this dtype.
        lazy: for a store (``.npz`` or directory), return its
            :class:`~flexsparse.formats.store.StoredTensor` handle (metadata now, tiles on demand)
            instead of the whole tensor.

    Raises:
        ValueError: unknown extension, malformed line (``file:line:`` prefix), ambiguous
            index base, out-of-bounds or negative index.
    """
    ext = _format_of(path, format)
    if lazy:
        if ext not in (".npz", "store") or not is_store(path):
            raise ValueError(f"lazy=True needs a flexsparse store (.npz or directory), got {path}")
        return StoredTensor(path)
    if ext == "store":
        t = StoredTensor(path).load()
        if shape is not None and normalize_shape(shape) != t.shape:
            raise ValueError(f"{path}: stored shape {t.shape} != requested shape {normalize_shape(shape)}")
        return t if dtype is None else t.astype(dtype)
    if ext == ".npz":
        t = _load_npz(path)
        if shape is not None and normalize_shape(shape) != t.shape:
            raise ValueError(f"{path}: stored shape {t.shape} != requested shape {normalize_shape(shape)}")
        return t if dtype is None else t.astype(dtype)
    with open(path, "rb") as f:
        raw = f.read()
    if ext == ".mtx":
        t = _load_mtx(path, raw, index_base, dtype)
        if shape is not None and normalize_shape(shape) != t.shape:
            raise ValueError(f"{path}: stored shape {t.shape} != requested shape {normalize_shape(shape)}")
        return t
    return _load_tns(path, raw, index_base, header, shape, dtype)


def save(path, tensor, *, index_base: int = 1, header: bool = False, format: str | None = None) -> None:
    """Write ``tensor`` (anything :func:`~flexsparse.formats.convert.as_coo` accepts) atomically.

    ``.tns`` defaults to the published FROSTT layout (1-based, no header); pass
    ``index_base=0, header=True`` for the shape-header variant. ``.npz`` (or ``format="store"``
    for a directory) writes the flexsparse store (:mod:`flexsparse.formats.store`). An
    exception while writing leaves no file under ``path`` (or the previous one untouched).
    """
    from flexsparse.formats.convert import as_coo

    ext = "store" if format == "store" else _format_of(path, format)
    t = as_coo(tensor)
    if ext in (".npz", "store"):
        _save_npz(path, t)
        return
    with atomic_write(os.fspath(path), "wb") as f:
        if ext == ".tns":
            _save_tns(f, t, index_base, header)
        else:
            _save_mtx(f, t)
