"""Reading and writing sparse tensors: FROSTT ``.tns``, Matrix Market ``.mtx``, the flexsparse store.

Formats (``load``/``save`` dispatch on the file extension, or ``format=``; a directory is a
store):

* ``.tns`` -- one nonzero per line, ``i_1 ... i_d value``. Two layouts exist: the
  published FROSTT one (1-based, no header) and a variant whose first line is the shape
  (one integer per mode) with 0-based indices. Rules, never a silent guess:

  - ``header``: ``True``/``False`` explicit; ``None`` -> a header is present iff the
    first non-blank line has exactly one field fewer than the second (data lines have
    ``ndim + 1`` fields, a header ``ndim``). A file with one line is ambiguous. A 0-D
    tensor's header is an empty line (recognised when the data lines have one field).
  - ``index_base``: ``0``/``1`` explicit; ``None`` -> decided by evidence only: a ``0``
    coordinate proves 0-based; a coordinate equal to its header/``shape`` extent proves
    1-based; both is an error; neither is *ambiguous* and raises ValueError asking
    for ``index_base=`` (a published FROSTT file needs ``index_base=1``).
  - ``shape=`` (explicit) wins over the header; otherwise header, otherwise
    ``max index + 1``. ``#`` lines and blank lines are skipped (line numbers still count them).

* ``.mtx`` -- Matrix Market (2-D). The ``coordinate`` format (real/integer/complex/pattern;
  general/symmetric/skew-symmetric/hermitian) is parsed here so errors carry line
  numbers, and so is the dense ``array`` format (column-major values; the lower triangle
  only for a declared symmetry). Written as ``coordinate general``.
* ``.npz`` or a directory -- the flexsparse store (:mod:`flexsparse.formats.store`), the one
  on-disk format of tensors and results: ``save`` writes it (one ``"coo"`` tile), and
  ``einsum(out=...)``/``tiled_spgemm(out=...)`` write it tile by tile; ``load`` reads any of
  them (``lazy=True`` returns the :class:`~flexsparse.formats.store.StoredTensor` handle).
  ``load`` also reads two older ``.npz`` layouts: flexsparse's first one, schema version 1
  (:data:`NPZ_SCHEMA`: ``format_version`` int scalar 1, ``shape`` 1-D ints >= 0, ``data`` 1-D
  numeric, ``coords_0 .. coords_{d-1}`` 1-D ints in bounds, ``canonical`` bool scalar,
  verified), and SciPy's ``scipy.sparse.save_npz`` files. Every ``.npy`` member's header is
  checked against its schema and its stored size before the array is read
  (:func:`~flexsparse.formats._npy.read_member`); nothing is unpickled.

The loader contract: every error about a file's content is a :class:`FileFormatError` (a
ValueError) whose message starts with ``path:`` -- ``path:line:`` for the text formats --
and no other library's exception (``BadZipFile``, ``EOFError``, unpickling errors...)
escapes. Bad arguments raise ValueError naming the path as well; only the operating
system's errors (a missing or unreadable file) stay ``OSError``. Integers are parsed as
integers, never through a float: indices, ``.mtx`` integer fields and ``.tns`` values read
with an integer ``dtype=``; a value outside the integer type's range is an error.

Parsing is vectorised: the file is read once into a byte array, tokens are located with
NumPy (token starts = non-space after space), numbers are parsed by ``np.fromstring`` in C,
and integer fields are checked digit by digit (a token of more than 15 digits, beyond
float64's exact range, is re-parsed with ``int``): O(file size) time, a few bytes of
temporaries per input byte. A malformed line is found by a per-line re-scan that runs only
on the error path. Every write goes through :func:`flexsparse._util.atomic_write` (the file
appears complete or not at all, with the umask's permissions).

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
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from flexsparse._util import atomic_write, check_numeric_dtype
from flexsparse.formats._npy import FileFormatError, read_member
from flexsparse.formats.coo import COO, normalize_shape
from flexsparse.formats.store import StoredTensor, is_store, write_coo

__all__ = ["FORMATS", "FileFormatError", "NPZ_SCHEMA", "SCIPY_NPZ_SCHEMA", "load", "save"]

#: Supported file extensions (a directory is read as a store).
FORMATS = (".tns", ".mtx", ".npz")
#: ``format_version`` of the first flexsparse ``.npz`` layout (still read, no longer written).
NPZ_VERSION = 1
#: ``.npz`` members: name -> (allowed dtype kinds, ndim); ``coords_<m>`` stands for every mode.
NPZ_SCHEMA = {"format_version": ("iu", 0), "shape": ("iu", 1), "data": ("biufc", 1),
              "coords_<m>": ("iu", 1), "canonical": ("b", 0)}
_MAX_EXTENT = 2**63 - 1
_EXACT_DIGITS = 15  # every integer of at most 15 digits is exact in float64


# ---------------------------------------------------------------------- text scanning
class _Text:
    """The whitespace-separated tokens of a text file: byte ranges and lines (vectorised)."""

    def __init__(self, raw: bytes, path) -> None:
        self.raw, self.path = raw, path
        buf = np.frombuffer(raw, dtype=np.uint8)
        self.buf = buf
        nl = buf == 10
        ws = nl | (buf == 32) | (buf == 9) | (buf == 13) | (buf == 11) | (buf == 12)
        start = ~ws
        start[1:] &= ws[:-1]
        end = ~ws
        end[:-1] &= ws[1:]
        self.starts = np.flatnonzero(start)
        self.ends = np.flatnonzero(end) + 1
        newlines = np.flatnonzero(nl)
        self.line_starts = np.concatenate([[0], newlines + 1])
        self.n_lines = newlines.size + 1
        self.tok_line = np.searchsorted(newlines, self.starts)   # 0-based line of each token
        self.counts = np.bincount(self.tok_line, minlength=self.n_lines)
        self._nondigit = np.flatnonzero(~ws & ((buf < 48) | (buf > 57)))

    def token(self, t: int) -> str:
        return self.raw[self.starts[t]:self.ends[t]].decode("latin-1")

    def line_text(self, ln: int) -> str:
        end = self.line_starts[ln + 1] - 1 if ln + 1 < self.line_starts.size else len(self.raw)
        return self.raw[self.line_starts[ln]:end].decode("latin-1")

    def fail(self, ln: int, msg: str) -> FileFormatError:
        return FileFormatError(f"{self.path}:{ln + 1}: {msg}")

    def line_tokens(self, ln: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.tok_line, [ln, ln + 1])
        return np.arange(lo, hi)

    def integer_tokens(self, toks: np.ndarray) -> np.ndarray:
        """Mask over ``toks``: the token is an integer literal ``[+-]?[0-9]+``."""
        ok = np.ones(toks.size, dtype=bool)
        if toks.size == 0:
            return ok
        owner = np.searchsorted(self.starts, self._nondigit, side="right") - 1
        at_start = self.starts[owner] == self._nondigit
        sign = np.isin(self.buf[self._nondigit], (43, 45)) & at_start
        sign &= self.ends[owner] - self.starts[owner] > 1
        bad_tokens = np.unique(owner[~sign])
        pos = np.searchsorted(bad_tokens, toks)
        hit = pos < bad_tokens.size
        hit[hit] = bad_tokens[pos[hit]] == toks[hit]
        ok &= ~hit
        return ok

    def digits(self, toks: np.ndarray) -> np.ndarray:
        """Number of digits of each integer token (its length without a sign)."""
        lengths = self.ends[toks] - self.starts[toks]
        first = self.buf[self.starts[toks]]
        return lengths - ((first == 43) | (first == 45))


def _integers(text: _Text, toks: np.ndarray, approx: np.ndarray, what: str, dtype: np.dtype,
              n_modes: int = 0) -> np.ndarray:
    """Exact integers of ``toks`` (validated as integer literals, range-checked for ``dtype``).

    ``approx`` holds the tokens' float64 parse: exact up to 15 digits; longer tokens are
    re-parsed with ``int``. With ``n_modes``, token ``i`` is named as mode ``i % n_modes``.
    """
    ok = text.integer_tokens(toks)
    if not ok.all():
        i = int(np.argmin(ok))
        t = int(toks[i])
        where = f" in mode {i % n_modes}" if n_modes else ""
        raise text.fail(int(text.tok_line[t]), f"{what} {text.token(t)}{where} is not an integer")
    info = np.iinfo(dtype)
    long_ = np.flatnonzero(text.digits(toks) > _EXACT_DIGITS)
    out = np.empty(toks.size, dtype=dtype)
    short = np.ones(toks.size, dtype=bool)
    short[long_] = False
    sv = approx[short]
    bad = (sv < info.min) | (sv > info.max)
    if bad.any():
        t = int(toks[np.flatnonzero(short)[np.argmax(bad)]])
        raise text.fail(int(text.tok_line[t]), f"{what} {text.token(t)} is out of the range of {np.dtype(dtype)}")
    out[short] = sv.astype(dtype)
    for i in long_:
        t = int(toks[i])
        v = int(text.token(t))
        if not info.min <= v <= info.max:
            raise text.fail(int(text.tok_line[t]), f"{what} {v} is out of the range of {np.dtype(dtype)}")
        out[i] = v
    return out


def _fromstring(text: str, count: int) -> np.ndarray | None:
    """``count`` float64 numbers of ``text`` (NumPy's C parser), or None if it holds anything else."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.fromstring only *warns* when it stops early on some versions
        try:
            vals = np.fromstring(text, dtype=np.float64, sep=" ")
        except (DeprecationWarning, ValueError):
            return None
    return vals if vals.size == count else None


def _parse_numbers(text: _Text, lines: np.ndarray, n_cols: int) -> np.ndarray:
    """float64 ``[len(lines), n_cols]`` of the listed lines (each holds ``n_cols`` tokens)."""
    if lines.size == 0:
        return np.zeros((0, n_cols))
    lo = int(text.line_starts[lines[0]])

    def upto(k: int) -> str:  # the text of the first k listed lines
        end = int(text.line_starts[lines[k - 1] + 1]) if lines[k - 1] + 1 < text.line_starts.size else None
        return text.raw[lo:end].decode("latin-1")

    vals = _fromstring(upto(lines.size), lines.size * n_cols)
    if vals is not None:
        return vals.reshape(lines.size, n_cols)
    # The error path: bisect for the first line NumPy's parser rejects, then its first bad token.
    good, bad = 0, lines.size
    while bad - good > 1:
        mid = (good + bad) // 2
        if _fromstring(upto(mid), mid * n_cols) is None:
            bad = mid
        else:
            good = mid
    ln = int(lines[bad - 1])
    for t in text.line_tokens(ln):
        if _fromstring(text.token(int(t)), 1) is None:
            raise text.fail(ln, f"cannot parse {text.token(int(t))!r} as a number")
    raise text.fail(ln, "malformed numeric data")


def _data_lines(text: _Text, first: int, n_cols: int, what: str) -> np.ndarray:
    """Indices of the non-blank lines from ``first`` on, checking each has ``n_cols`` fields."""
    lines = np.flatnonzero(text.counts)
    lines = lines[lines >= first]
    bad = lines[text.counts[lines] != n_cols]
    if bad.size:
        ln = int(bad[0])
        raise text.fail(ln, f"expected {n_cols} fields ({what}), found {int(text.counts[ln])}")
    return lines


def _strip_comments(raw: bytes, marker: bytes) -> bytes:
    """Blank out comment lines (keeping the newlines so line numbers stay right)."""
    if marker not in raw:
        return raw
    return re.sub(rb"(?m)^[ \t]*" + re.escape(marker) + rb"[^\n]*", b"", raw)


def _shape_line(text: _Text, ln: int, what: str) -> tuple[int, ...]:
    """A line of non-negative integers (a shape header or a size line)."""
    toks = text.line_tokens(ln)
    ok = text.integer_tokens(toks)
    if not ok.all():
        raise text.fail(ln, f"{what} must be integers, got {text.line_text(ln).strip()!r}")
    vals = tuple(int(text.token(int(t))) for t in toks)
    for m, v in enumerate(vals):
        if v < 0:
            raise text.fail(ln, f"{what}: negative value {v} in field {m}")
        if v > _MAX_EXTENT:
            raise text.fail(ln, f"{what}: value {v} in field {m} exceeds the int64 range (max {_MAX_EXTENT})")
    return vals


def _check_bounds(text: _Text, idx: np.ndarray, shape, lines: np.ndarray, base: int) -> None:
    for m, extent in enumerate(shape):
        col = idx[:, m]
        bad = (col < 0) | (col >= extent)
        if bad.any():
            r = int(np.argmax(bad))
            raise text.fail(int(lines[r]), f"index {int(col[r]) + base} in mode {m} is out of bounds for "
                            f"extent {extent} with index_base={base}")


# ---------------------------------------------------------------------- .tns
def _tns_header(text: _Text, header: bool | None, comments: np.ndarray) -> tuple[tuple[int, ...] | None, int]:
    """(header shape or None, first line after it); applies the header rules.

    ``comments`` are the (0-based) comment lines. The header is the first line that is not a
    comment; a blank one is the empty shape of a 0-D tensor when the data lines that follow
    have one field (a value and no index), and is otherwise skipped like any blank line.
    """
    nonblank = np.flatnonzero(text.counts)
    if header is None:
        if nonblank.size >= 2:
            header = bool(text.counts[nonblank[0]] == text.counts[nonblank[1]] - 1)
        elif nonblank.size == 1:
            raise text.fail(int(nonblank[0]), "a single line is ambiguous (shape header or one nonzero?); "
                            "pass header=")
        else:
            header = False
    if not header:
        return None, 0
    first = 0
    while first < text.n_lines and first in comments:
        first += 1
    if first == text.n_lines or (text.counts[first] == 0 and first == text.n_lines - 1 and not text.raw):
        raise FileFormatError(f"{text.path}:1: header=True but the file is empty")
    if text.counts[first] == 0 and (nonblank.size == 0 or text.counts[nonblank[0]] == 1):
        return (), first + 1
    if nonblank.size == 0:
        raise FileFormatError(f"{text.path}:1: header=True but the file holds no shape line")
    h = int(nonblank[0])
    return _shape_line(text, h, "shape header fields"), h + 1


def _load_tns(path, raw: bytes, index_base, header, shape, dtype) -> COO:
    text = _Text(_strip_comments(raw, b"#"), path)
    comments = np.searchsorted(text.line_starts, [m.start() for m in re.finditer(rb"(?m)^[ \t]*#", raw)],
                               side="right") - 1
    hdr_shape, skip = _tns_header(text, header, comments)
    ref_shape = shape if shape is not None else hdr_shape
    rest = np.flatnonzero(text.counts)
    rest = rest[rest >= skip]
    natural = np.float64 if dtype is None else dtype
    if rest.size == 0:
        if ref_shape is None:
            raise FileFormatError(f"{path}:1: no nonzeros and no shape; pass shape=")
        return COO.empty(ref_shape, natural)
    n_cols = int(text.counts[rest[0]]) if ref_shape is None else len(ref_shape) + 1
    ndim = n_cols - 1
    lines = _data_lines(text, skip, n_cols, f"{ndim} indices and a value")
    table = _parse_numbers(text, lines, n_cols)
    first_tok = int(np.searchsorted(text.tok_line, lines[0]))
    toks = np.arange(first_tok, first_tok + lines.size * n_cols).reshape(lines.size, n_cols)
    idx = _integers(text, toks[:, :ndim].ravel(), table[:, :ndim].ravel(), "index", np.int64,
                    ndim).reshape(lines.size, ndim)
    if natural is not None and np.dtype(natural).kind in "iu":
        vals = _integers(text, toks[:, ndim], table[:, ndim], "value", np.dtype(natural))
    else:
        vals = table[:, ndim].astype(natural)
    if index_base is None and ndim:
        has_zero = bool((idx == 0).any())
        at_extent = ref_shape is not None and bool((idx == np.asarray(ref_shape, dtype=np.int64)).any())
        if has_zero and at_extent:
            raise FileFormatError(f"{path}:{int(lines[0]) + 1}: indices contain 0 and also an index equal to its "
                                  f"extent {ref_shape}: neither 0- nor 1-based fits; check the file or pass shape=")
        if not (has_zero or at_extent):
            raise FileFormatError(
                f"{path}:{int(lines[0]) + 1}: cannot tell whether indices are 0- or 1-based (no 0 index"
                f"{'' if ref_shape is None else ' and none equal to its extent'}); pass index_base=1 for "
                "published FROSTT files or index_base=0")
        index_base = 0 if has_zero else 1
    base = 0 if index_base is None else index_base
    idx -= base
    if ref_shape is None:
        if (idx < 0).any():
            r, m = np.argwhere(idx < 0)[0]
            raise text.fail(int(lines[r]), f"index {int(idx[r, m]) + base} in mode {m} is below index_base={base}")
        ref_shape = tuple(int(x) + 1 for x in idx.max(axis=0)) if ndim else ()
    if len(ref_shape) != ndim:
        raise text.fail(int(lines[0]), f"shape {ref_shape} has {len(ref_shape)} modes but lines have {ndim} indices")
    for m in range(ndim):
        neg = idx[:, m] < 0
        if neg.any():
            r = int(np.argmax(neg))
            raise text.fail(int(lines[r]), f"index {int(idx[r, m]) + base} in mode {m} is below index_base={base}")
    _check_bounds(text, idx, ref_shape, lines, base)
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
    if t.nnz == 0:
        return
    cols = [(t.coords[m].astype(np.int64) + index_base).astype(str) for m in range(t.ndim)]
    cols.append(_value_strings(t.data))
    f.write(_format_columns(cols).encode())


# ---------------------------------------------------------------------- .mtx
_MM_FIELDS = {"real": 1, "double": 1, "integer": 1, "complex": 2, "pattern": 0}
_MM_SYMMETRY = ("general", "symmetric", "skew-symmetric", "hermitian")


def _load_mtx(path, raw: bytes, dtype) -> COO:
    first = raw.split(b"\n", 1)[0].decode("latin-1").strip()
    banner = first.lower().split()
    if len(banner) != 5 or banner[0] != "%%matrixmarket" or banner[1] != "matrix":
        raise FileFormatError(f"{path}:1: not a Matrix Market banner: {first!r} "
                              "(expected '%%MatrixMarket matrix <format> <field> <symmetry>')")
    fmt, field, sym = banner[2:]
    if field not in _MM_FIELDS:
        raise FileFormatError(f"{path}:1: unknown field {field!r}; valid: {', '.join(_MM_FIELDS)}")
    if sym not in _MM_SYMMETRY:
        raise FileFormatError(f"{path}:1: unknown symmetry {sym!r}; valid: {', '.join(_MM_SYMMETRY)}")
    if fmt not in ("coordinate", "array"):
        raise FileFormatError(f"{path}:1: unknown format {fmt!r}; valid: coordinate, array")
    body = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    text = _Text(b"\n" + _strip_comments(body, b"%"), path)  # keep the banner's line for numbering
    nonblank = np.flatnonzero(text.counts)
    if nonblank.size == 0:
        raise FileFormatError(f"{path}:{text.n_lines}: missing the 'rows cols nnz' size line")
    s = int(nonblank[0])
    size = _shape_line(text, s, "size line fields")
    if len(size) != (2 if fmt == "array" else 3):
        raise text.fail(s, f"size line must be {'rows cols' if fmt == 'array' else 'rows cols nnz'}, "
                        f"got {len(size)} fields")
    if fmt == "array":
        return _load_mtx_array(text, s, size, field, sym, dtype)
    n_rows, n_cols_m, nnz = size
    shape = (n_rows, n_cols_m)
    width = 2 + _MM_FIELDS[field]
    lines = _data_lines(text, s + 1, width, f"2 indices and {_MM_FIELDS[field]} value field(s)")
    if lines.size != nnz:
        raise text.fail(s, f"size line declares {nnz} entries but {lines.size} lines follow")
    natural = np.dtype({"complex": np.complex128, "integer": np.int64}.get(field, np.float64))
    if nnz == 0:
        return COO.empty(shape, natural if dtype is None else dtype)
    table = _parse_numbers(text, lines, width)
    first_tok = int(np.searchsorted(text.tok_line, lines[0]))
    toks = np.arange(first_tok, first_tok + nnz * width).reshape(nnz, width)
    idx = _integers(text, toks[:, :2].ravel(), table[:, :2].ravel(), "index", np.int64, 2).reshape(nnz, 2) - 1
    _check_bounds(text, idx, shape, lines, 1)
    if field == "pattern":
        vals = np.ones(nnz, dtype=np.float64)
    elif field == "complex":
        vals = np.empty(nnz, dtype=np.complex128)  # built by parts: 1j * inf would be nan+infj
        vals.real, vals.imag = table[:, 2], table[:, 3]
    elif field == "integer":
        want = np.dtype(dtype) if dtype is not None and np.dtype(dtype).kind in "iu" else natural
        vals = _integers(text, toks[:, 2], table[:, 2], "value", want)
    else:
        vals = table[:, 2]
    if sym != "general":
        off = idx[:, 0] != idx[:, 1]
        idx = np.vstack([idx, idx[off][:, ::-1]])
        vals = np.concatenate([vals, _mirrored(text, vals[off], sym, lines[off])])
    if dtype is not None:
        vals = vals.astype(dtype)
    return COO(idx.T.copy(), vals, shape)


def _mirrored(text: _Text, vals: np.ndarray, sym: str, lines: np.ndarray) -> np.ndarray:
    """The values a symmetric/skew-symmetric/hermitian file implies across the diagonal;
    negating the most negative integer (which has no positive counterpart) is an error."""
    if sym == "skew-symmetric":
        if vals.dtype.kind == "i" and (vals == np.iinfo(vals.dtype).min).any():
            ln = int(lines[np.argmax(vals == np.iinfo(vals.dtype).min)])
            raise text.fail(ln, f"skew-symmetric value {np.iinfo(vals.dtype).min} has no negation in "
                            f"{vals.dtype}")
        return -vals
    return np.conj(vals) if sym == "hermitian" else vals


def _load_mtx_array(text: _Text, size_line: int, size: tuple[int, ...], field: str, sym: str, dtype) -> COO:
    """The dense ``array`` format: one value per line, column by column (only the lower triangle,
    without the diagonal for skew-symmetric, when a symmetry is declared)."""
    n_rows, n_cols = size
    if field == "pattern":
        raise text.fail(0, "the 'array' format has no 'pattern' field")
    if sym != "general" and n_rows != n_cols:
        raise text.fail(size_line, f"a {sym} matrix must be square, got {n_rows} x {n_cols}")
    width = _MM_FIELDS[field]
    lines = _data_lines(text, size_line + 1, width, f"{width} value field(s)")
    if sym == "general":
        expected = n_rows * n_cols
    else:
        expected = n_rows * (n_rows - 1) // 2 + (n_rows if sym != "skew-symmetric" else 0)
    if lines.size != expected:
        raise text.fail(size_line, f"a {n_rows} x {n_cols} {sym} array holds {expected} values, but "
                        f"{lines.size} lines follow")
    table = _parse_numbers(text, lines, width)
    natural = np.dtype({"complex": np.complex128, "integer": np.int64}.get(field, np.float64))
    if field == "complex":
        vals = np.empty(lines.size, dtype=np.complex128)  # by parts: 1j * inf would be nan+infj
        vals.real, vals.imag = table[:, 0], table[:, 1]
    elif field == "integer":
        first_tok = int(np.searchsorted(text.tok_line, lines[0])) if lines.size else 0
        want = np.dtype(dtype) if dtype is not None and np.dtype(dtype).kind in "iu" else natural
        vals = _integers(text, np.arange(first_tok, first_tok + lines.size), table[:, 0], "value", want)
    else:
        vals = table[:, 0]
    if sym == "general":
        cols, rows = np.divmod(np.arange(expected, dtype=np.int64), n_rows) if n_rows else (
            np.zeros(0, np.int64), np.zeros(0, np.int64))
    else:  # column j lists rows j.. (j+1.. for skew-symmetric): the upper triangle of the transpose
        cols, rows = np.triu_indices(n_rows, k=1 if sym == "skew-symmetric" else 0)
        off = rows != cols
        cols, rows = np.concatenate([cols, rows[off]]), np.concatenate([rows, cols[off]])
        vals = np.concatenate([vals, _mirrored(text, vals[off], sym, lines[off])])
    keep = vals != 0
    vals = vals[keep] if dtype is None else vals[keep].astype(dtype)
    return COO(np.stack([rows[keep], cols[keep]]), vals, (n_rows, n_cols)).sum_duplicates()


def _save_mtx(f, t: COO) -> None:
    if t.ndim != 2:
        raise ValueError(f"Matrix Market stores 2-D matrices only, got shape {t.shape}; use .tns or .npz")
    kind = t.dtype.kind
    field = "complex" if kind == "c" else "integer" if kind in "iub" else "real"
    f.write(f"%%MatrixMarket matrix coordinate {field} general\n".encode())
    f.write(f"{t.shape[0]} {t.shape[1]} {t.nnz}\n".encode())
    if t.nnz == 0:
        return
    cols = [(t.coords[m].astype(np.int64) + 1).astype(str) for m in range(2)]
    if kind == "c":
        cols += [t.data.real.astype(str), t.data.imag.astype(str)]
    else:
        cols.append(_value_strings(t.data))
    f.write(_format_columns(cols).encode())


# ---------------------------------------------------------------------- .npz
def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path) -> np.ndarray:
    """One member of a first-layout ``.npz``, checked against :data:`NPZ_SCHEMA` before reading."""
    kinds, ndim = NPZ_SCHEMA["coords_<m>" if key.startswith("coords_") else key]
    return read_member(zf, info, path, repr(key), kinds, ndim)


def _load_npz(path) -> COO:
    """A ``.npz`` file: a flexsparse store, the first flexsparse layout, or SciPy's."""
    try:
        store = is_store(path)
    except (zipfile.BadZipFile, EOFError, ValueError):  # a damaged zip: reported below
        store = False
    if store:
        return StoredTensor(path).load()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(6)
        what = "an empty file" if not head else \
            "a single .npy array" if head.startswith(b"\x93NUMPY") else "not a zip archive"
        raise FileFormatError(f"{path}: not a flexsparse .npz ({what}: {exc})") from None
    with zf:
        members = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise FileFormatError(f"{path}: unexpected member {info.filename!r} (a flexsparse .npz holds .npy "
                                      "arrays only)")
            members[info.filename[:-4]] = info
        if "format_version" not in members and {"format", "shape", "data"} <= set(members):
            return _load_scipy_npz(path, zf, members)
        for key in ("format_version", "shape", "data"):
            if key not in members:
                raise FileFormatError(f"{path}: not a flexsparse .npz (missing {key!r}; has {sorted(members)})")
        version = _npz_member(zf, members["format_version"], "format_version", path)
        if int(version) != NPZ_VERSION:
            raise FileFormatError(f"{path}: unsupported flexsparse .npz format_version {int(version)} (this "
                                  f"version reads {NPZ_VERSION})")
        shape_arr = _npz_member(zf, members["shape"], "shape", path)
        if shape_arr.dtype.kind == "u" and (shape_arr > _MAX_EXTENT).any() or (shape_arr < 0).any():
            raise FileFormatError(f"{path}: shape {shape_arr.tolist()} has an extent outside [0, 2**63)")
        shape = tuple(int(s) for s in shape_arr)
        expected = {"format_version", "shape", "data", "canonical"} | {f"coords_{m}" for m in range(len(shape))}
        extra = sorted(set(members) - expected)
        if extra:
            raise FileFormatError(f"{path}: unexpected member(s) {extra} for shape {shape}")
        missing = sorted(expected - {"canonical"} - set(members))
        if missing:
            raise FileFormatError(f"{path}: missing {missing} for shape {shape}")
        data = _npz_member(zf, members["data"], "data", path)
        coords = np.zeros((len(shape), data.size), dtype=np.int64)
        for m in range(len(shape)):
            c = _npz_member(zf, members[f"coords_{m}"], f"coords_{m}", path)
            if c.size != data.size:
                raise FileFormatError(f"{path}: coords_{m} has {c.size} entries but data has {data.size}")
            if c.size and (c.dtype.kind == "u" and c.max() > _MAX_EXTENT):
                raise FileFormatError(f"{path}: coords_{m} holds a coordinate beyond the int64 range")
            coords[m] = c
        canonical = bool(_npz_member(zf, members["canonical"], "canonical", path)) if "canonical" in members else None
    if not shape and data.size > 1:
        raise FileFormatError(f"{path}: a 0-D tensor stores at most one value, got {data.size}")
    try:
        # the constructor checks bounds and verifies the stored canonical flag
        return COO(coords, data, shape, canonical=canonical if canonical else None)
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{path}: {exc}") from None


#: ``scipy.sparse.save_npz`` members: name -> (allowed dtype kinds, ndim or None for any).
SCIPY_NPZ_SCHEMA = {"format": ("SU", 0), "shape": ("iu", 1), "data": ("biufc", None), "indices": ("iu", 1),
                    "indptr": ("iu", 1), "row": ("iu", 1), "col": ("iu", 1), "coords": ("iu", 2),
                    "offsets": ("iu", 1), "_is_array": ("b", 0)}


def _load_scipy_npz(path, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> COO:
    """A ``scipy.sparse.save_npz`` file (any of its formats) as a COO; every member's header is
    checked against :data:`SCIPY_NPZ_SCHEMA` before SciPy reads the file."""
    import scipy.sparse as sp

    from flexsparse.formats.convert import from_scipy

    for key, info in members.items():
        if key not in SCIPY_NPZ_SCHEMA:
            raise FileFormatError(f"{path}: unexpected member {key!r} in a SciPy sparse .npz")
        read_member(zf, info, path, repr(key), *SCIPY_NPZ_SCHEMA[key])
    try:
        m = sp.load_npz(path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise FileFormatError(f"{path}: malformed SciPy sparse .npz: {exc}") from None
    return from_scipy(m)


def _save_npz(path, t: COO) -> None:
    write_coo(path, t)


# ---------------------------------------------------------------------- dispatch
def _format_of(path, format) -> str:
    if not os.fspath(path):
        raise ValueError("the path is empty")
    if not format and Path(path).is_dir():
        return "store"
    if format is not None and not isinstance(format, str):
        raise ValueError(f"{path}: format must be a str such as 'npz', not {type(format).__name__}")
    ext = ("." + format.lower().lstrip(".")) if format else Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unsupported file format {ext or '(no extension)'!r}; supported: "
                         f"{', '.join(FORMATS)} (or pass format=)")
    return ext


def _check_args(path, ext: str, index_base, header, shape, dtype):
    """Validate ``load``'s arguments before the file is read (ValueError naming ``path``)."""
    if index_base is not None and (isinstance(index_base, bool) or index_base not in (0, 1)):
        raise ValueError(f"{path}: index_base must be 0 or 1, got {index_base!r}")
    if ext == ".mtx" and index_base not in (None, 1):
        raise ValueError(f"{path}: Matrix Market indices are 1-based by definition; got index_base={index_base!r}")
    if header is not None and not isinstance(header, (bool, np.bool_)):
        raise ValueError(f"{path}: header must be True, False or None, got {header!r}")
    if shape is not None:
        try:
            shape = normalize_shape(shape)
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if any(s > _MAX_EXTENT for s in shape):
            raise ValueError(f"{path}: shape {shape} has an extent beyond the int64 range")
    if dtype is not None:
        try:
            dtype = check_numeric_dtype(dtype, "dtype")
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return shape, dtype


def load(path, *, index_base: int | None = None, header: bool | None = None, shape=None, dtype=None,
         format: str | None = None, lazy: bool = False) -> COO:
    """Read a sparse tensor from ``.tns``, ``.mtx``, ``.npz`` or a store directory (module docstring).

    Args:
        path: file to read; the extension picks the format unless ``format`` is given.
        index_base: 0 or 1 for ``.tns`` (``None``: only when the data proves it);
            ``.mtx`` is always 1-based.
        header: whether a ``.tns`` file starts with a shape line (``None``: detect by field count).
        shape: explicit shape (wins over a ``.tns`` header).
        dtype: the values' dtype (integer dtypes parse ``.tns`` values as integers).
        lazy: for a store (``.npz`` or directory), return its
            :class:`~flexsparse.formats.store.StoredTensor` handle (metadata now, tiles on demand)
            instead of the whole tensor.

    Raises:
        FileFormatError: (a ValueError) the content is malformed: ``path:line:`` for text files,
            ``path:`` for ``.npz`` and stores; an ambiguous index base; out-of-bounds or negative
            index.
        ValueError: an unknown extension or a bad argument (the message starts with ``path:``).
        OSError: the file cannot be read (missing, no permission).
    """
    ext = _format_of(path, format)
    shape, dtype = _check_args(path, ext, index_base, header, shape, dtype)
    if lazy:
        if ext not in (".npz", "store") or not _guarded(path, is_store, path):
            raise ValueError(f"{path}: lazy=True needs a flexsparse store (.npz or directory)")
        return _guarded(path, StoredTensor, path)
    if ext in (".npz", "store"):
        t = _guarded(path, _load_npz if ext == ".npz" else lambda p: StoredTensor(p).load(), path)
        if shape is not None and shape != t.shape:
            raise FileFormatError(f"{path}: stored shape {t.shape} != requested shape {shape}")
        return t if dtype is None else t.astype(dtype)
    with open(path, "rb") as f:
        raw = f.read()
    if ext == ".mtx":
        t = _guarded(path, _load_mtx, path, raw, dtype)
        if shape is not None and shape != t.shape:
            raise FileFormatError(f"{path}:1: stored shape {t.shape} != requested shape {shape}")
        return t
    return _guarded(path, _load_tns, path, raw, index_base, header, shape, dtype)


def _guarded(path, fn, *args):
    """Run a reader; any exception about the content that is not yet a :class:`FileFormatError`
    (another library's, or a constructor's check) becomes one, naming the file."""
    try:
        return fn(*args)
    except FileFormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError, UnicodeError, AttributeError,
            zipfile.BadZipFile, zlib.error, struct.error, NotImplementedError, RuntimeError) as exc:
        msg = str(exc)
        if msg.startswith(f"{path}:"):  # already names the file
            raise FileFormatError(msg) from None
        raise FileFormatError(f"{path}: {type(exc).__name__}: {msg}") from None
    except OSError as exc:
        if not os.path.exists(path):
            raise
        raise FileFormatError(f"{path}: unreadable content ({exc})") from None


def save(path, tensor, *, index_base: int = 1, header: bool = False, format: str | None = None) -> None:
    """Write ``tensor`` (anything :func:`~flexsparse.formats.convert.as_coo` accepts) atomically.

    ``.tns`` defaults to the published FROSTT layout (1-based, no header); pass
    ``index_base=0, header=True`` for the shape-header variant. ``.npz`` (or ``format="store"``
    for a directory) writes the flexsparse store (:mod:`flexsparse.formats.store`). An exception
    (or an interrupt) while writing leaves no file under ``path`` (or the previous one untouched)
    and no temporary file; a new file gets the permissions the umask allows.
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
