"""CSR and CSC: the 2-D compressed sparse row / column formats (the package's one CSR type).

The einsum executor reduces every pairwise sparse contraction to 2-D matrices and hands
the engines (:mod:`~flexsparse.kernels.cpu.spgemm`, :mod:`~flexsparse.kernels.cpu.dot`,
:mod:`~flexsparse.kernels.cpu.spmm`) and the tiler (:mod:`flexsparse.tiling`) raw CSR buffers
held by :class:`CSR`; SciPy operands are converted to it (:meth:`CSR.from_scipy`). Both
classes are :class:`~flexsparse.formats.base.SparseArray` formats (``"csr"``, ``"csc"``).

Layout of :class:`CSR` (``n_rows, n_cols = shape``, ``nnz = indptr[-1]``):

* ``indptr: int64[n_rows + 1]`` -- row ``i`` owns positions ``indptr[i]:indptr[i+1]``;
  ``indptr[0] == 0``, non-decreasing.
* ``indices: int32 | int64 [nnz]`` -- column of each stored entry, ``0 <= j < n_cols``.
  With ``sorted_indices=True`` (the default) they are strictly increasing within each
  row (sorted, no duplicates), which the dot-product engine requires.
* ``data: [nnz]`` -- any numeric dtype (bool, int, float, complex).

:class:`CSC` stores the same arrays for the transpose: ``indptr: int64[n_cols + 1]``,
``indices: [nnz]`` row ids, so ``CSC(indptr, indices, data, (m, n))`` is exactly
``CSR(indptr, indices, data, (n, m)).T`` and the two convert into each other's transpose
without copying (:meth:`CSC.T`, :meth:`CSR.tocsc`). Against a 2-D
:class:`~flexsparse.formats.fiber.CSF` (which lists only non-empty rows), CSR keeps a pointer
for every row, which is what row-parallel kernels index.

Entries are *structural*: a stored zero is an entry like any other (the engines never
skip a multiplication because of its value, so NaN/inf propagate as in NumPy).

Costs: :meth:`CSR.validate` is O(nnz + n_rows) vectorised NumPy;
:meth:`CSR.transpose` is a counting sort, O(nnz + n_rows + n_cols) time and
O(n_cols) extra memory (the numba kernel
:func:`flexsparse.kernels.cpu.transpose.transpose_csr`); :meth:`CSR.from_coo_arrays` sorts, so
O(nnz log nnz).

>>> import numpy as np
>>> m = CSR.from_coo_arrays(np.array([1, 0, 1]), np.array([2, 1, 2]), np.array([1.0, 2.0, 3.0]), (2, 3))
>>> m.indptr.tolist(), m.indices.tolist(), m.data.tolist()
([0, 1, 2], [1, 2], [2.0, 4.0])
>>> m.transpose().to_scipy().toarray().tolist()
[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from flexsparse._limits import fits_int64
from flexsparse._util import check_numeric_dtype, index_dtype_for
from flexsparse.formats.base import SparseArray, dense_bytes_check, is_identity_2d

__all__ = ["CSC", "CSR"]


def _as_index(arr: Any, what: str) -> np.ndarray:
    """Coerce to a 1-D int32/int64 array (narrower ints widen, uint32/uint64 go to int64)."""
    a = np.asarray(arr)
    if a.dtype.kind not in "iu":
        raise TypeError(f"CSR {what} must be an integer array, got dtype {a.dtype}")
    if a.dtype in (np.int32, np.int64):
        return a
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"CSR {what} has values beyond int64")
    small = a.dtype.itemsize < 4 or (a.dtype.kind == "i" and a.dtype.itemsize == 4)
    return a.astype(np.int32 if small else np.int64)


def _trusted_compressed(cls: type, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                        shape: tuple[int, int], sorted_indices: bool) -> Any:
    """A CSR or CSC built without validation, for buffers a kernel just produced correctly:
    the frozen fields set in one ``__dict__`` update (five ``object.__setattr__`` calls took
    ~2 us of a small product's ~30 us above its kernel)."""
    obj = object.__new__(cls)
    obj.__dict__.update(indptr=indptr, indices=indices, data=data, shape=(int(shape[0]), int(shape[1])),
                        sorted_indices=bool(sorted_indices))
    return obj


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CSR(SparseArray):
    """A 2-D sparse matrix in compressed-sparse-row form (see the module docstring).

    Attributes:
        indptr: ``int64[n_rows + 1]`` row pointers.
        indices: ``int32 | int64 [nnz]`` column ids.
        data: ``[nnz]`` numeric values.
        shape: ``(n_rows, n_cols)``.
        sorted_indices: whether column ids are strictly increasing in every row;
            checked by :meth:`validate` when ``True``.

    The constructor normalises index dtypes (``indptr`` to int64, ``indices`` to
    int32/int64) and runs :meth:`validate`.

    >>> CSR(np.array([0, 2]), np.array([1, 0]), np.ones(2), (1, 3))
    Traceback (most recent call last):
    ...
    ValueError: CSR indices of row 0 are not strictly increasing at position 1 (1 then 0); sort them ...
    """

    format = "csr"

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]
    sorted_indices: bool = True

    def __post_init__(self) -> None:
        shape = self.shape
        if not isinstance(shape, tuple) or len(shape) != 2:
            try:
                shape = tuple(int(s) for s in shape)
            except TypeError:
                raise TypeError(f"CSR shape must be a pair of ints, got {self.shape!r}") from None
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        indptr = _as_index(self.indptr, "indptr")
        object.__setattr__(self, "indptr", indptr.astype(np.int64, copy=False))
        object.__setattr__(self, "indices", _as_index(self.indices, "indices"))
        object.__setattr__(self, "data", np.asarray(self.data))
        object.__setattr__(self, "sorted_indices", bool(self.sorted_indices))
        self.validate()

    @classmethod
    def _trusted(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 shape: tuple[int, int], sorted_indices: bool) -> CSR:
        """Build without validation: only for buffers a kernel just produced correctly."""
        return _trusted_compressed(cls, indptr, indices, data, shape, sorted_indices)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check the layout; raise ``ValueError``/``TypeError`` naming the first problem."""
        if len(self.shape) != 2 or any(s < 0 for s in self.shape):
            raise ValueError(f"CSR shape must be two non-negative ints, got {self.shape}")
        n_rows, n_cols = self.shape
        ip, ix, d = self.indptr, self.indices, self.data
        if ip.ndim != 1 or ip.dtype != np.int64:
            raise TypeError(f"CSR indptr must be a 1-D int64 array, got {ip.ndim}-D {ip.dtype}")
        if ix.ndim != 1 or ix.dtype not in (np.int32, np.int64):
            raise TypeError(f"CSR indices must be a 1-D int32/int64 array, got {ix.ndim}-D {ix.dtype}")
        if d.ndim != 1:
            raise ValueError(f"CSR data must be 1-D, got shape {d.shape}")
        check_numeric_dtype(d.dtype, "CSR data")
        if ip.shape[0] != n_rows + 1:
            raise ValueError(f"CSR indptr must have length n_rows + 1 = {n_rows + 1}, got {ip.shape[0]}")
        if ip[0] != 0:
            raise ValueError(f"CSR indptr[0] must be 0, got {ip[0]}")
        steps = np.diff(ip)
        if steps.size and steps.min() < 0:
            row = int(np.argmax(steps < 0))
            raise ValueError(f"CSR indptr decreases at row {row} ({ip[row]} then {ip[row + 1]})")
        nnz = int(ip[-1])
        if ix.shape[0] != nnz or d.shape[0] != nnz:
            raise ValueError(f"CSR indptr[-1] = {nnz} but indices has {ix.shape[0]} and "
                             f"data has {d.shape[0]} entries")
        if nnz == 0:
            return
        lo, hi = int(ix.min()), int(ix.max())
        if lo < 0 or hi >= n_cols:
            bad = int(np.argmax((ix < 0) | (ix >= n_cols)))
            raise ValueError(f"CSR column index {int(ix[bad])} at position {bad} is out of range "
                             f"[0, {n_cols}) for shape {self.shape}")
        if self.sorted_indices and nnz > 1:
            # position p (p >= 1) must increase unless it starts a new row
            ok = ix[1:] > ix[:-1]
            starts = ip[1:-1]
            starts = starts[(starts > 0) & (starts < nnz)]
            ok[starts - 1] = True
            if not ok.all():
                p = int(np.argmax(~ok)) + 1
                row = int(np.searchsorted(ip, p, side="right")) - 1
                raise ValueError(
                    f"CSR indices of row {row} are not strictly increasing at position "
                    f"{p - int(ip[row])} ({int(ix[p - 1])} then {int(ix[p])}); sort them or "
                    f"pass sorted_indices=False")

    # ------------------------------------------------------------- properties
    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_cols(self) -> int:
        return self.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of ``data + indices + indptr``."""
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    def row_lengths(self) -> np.ndarray:
        """``int64[n_rows]`` number of stored entries per row."""
        return np.diff(self.indptr)

    def _repr_extra(self) -> str:
        return "" if self.sorted_indices else "sorted_indices=False"

    def _data(self) -> np.ndarray:
        return self.data

    def _with_data(self, data: np.ndarray) -> CSR:
        check_numeric_dtype(data.dtype, "CSR data")
        return CSR._trusted(self.indptr, self.indices, data, self.shape, self.sorted_indices)

    # ------------------------------------------------------------ conversions
    @classmethod
    def from_scipy(cls, m: Any) -> CSR:
        """Convert any SciPy sparse matrix/array (sums duplicates, sorts indices).

        >>> import scipy.sparse as sp
        >>> CSR.from_scipy(sp.csr_array(np.eye(2)))
        <CSR shape=(2, 2) nnz=2 density=50% dtype=float64>
        """
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise TypeError(f"from_scipy expects a scipy.sparse matrix or array, got {type(m).__name__}")
        if m.ndim != 2:
            raise ValueError(f"from_scipy expects a 2-D sparse array, got {m.ndim}-D")
        m = m.tocsr()
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        idx_dt = index_dtype_for(m.shape[1])
        return cls(m.indptr.astype(np.int64), m.indices.astype(idx_dt, copy=False), m.data, m.shape, True)

    def compact_indices(self) -> CSR:
        """This matrix with the narrowest column-index dtype its column count allows
        (:func:`~flexsparse._util.index_dtype_for`): ``self`` when already narrow, else a copy
        of ``indices`` (``indptr`` and ``data`` shared). O(nnz) for the copy, made once: the
        narrow matrix is kept on this one (as a COO keeps the coordinates it builds; the
        buffers of a CSR are not to be changed in place), so a product repeated on the same
        operands does not narrow them again (R-MAT scale 20, 8.2M entries: 2.6 ms a call, on
        one thread whatever the product's threads).

        >>> m = CSR(np.array([0, 1, 2]), np.array([1, 0], dtype=np.int64), np.ones(2), (2, 3))
        >>> m.compact_indices().indices.dtype
        dtype('int32')
        >>> m.compact_indices() is m.compact_indices()
        True
        """
        if self.indices.dtype.itemsize <= 4:  # already the narrowest (skips ~1 us a small product)
            return self
        narrow = index_dtype_for(self.shape[1])
        if self.indices.dtype.itemsize <= narrow.itemsize:
            return self
        kept = self.__dict__.get("_compact")
        if kept is None:
            kept = CSR._trusted(self.indptr, self.indices.astype(narrow), self.data, self.shape, self.sorted_indices)
            object.__setattr__(self, "_compact", kept)
        return kept

    def __getstate__(self) -> dict:
        # the kept narrow copy is rebuilt where needed, not shipped (distributed panels)
        return {k: v for k, v in self.__dict__.items() if k != "_compact"}

    def compacted(self) -> CSR:
        """The narrow matrix :meth:`compact_indices` kept, else ``self`` (no copy made)."""
        return self.__dict__.get("_compact", self)

    def to_scipy(self, format: str = "csr") -> Any:
        """A SciPy sparse array; ``"csr"`` (default) shares the buffers."""
        import scipy.sparse as sp

        out = sp.csr_array((self.data, self.indices, self.indptr), shape=self.shape)
        out.has_sorted_indices = self.sorted_indices
        return out if format == "csr" else super().to_scipy(format)

    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense ``[n_rows, n_cols]`` copy (duplicates are summed; size-guarded). One pass
        over the entries into lazily zeroed memory (:func:`~flexsparse.kernels.cpu.densify.csr_to_dense`)."""
        from flexsparse.kernels.cpu.densify import csr_to_dense
        from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES

        dense_bytes_check(self.shape, self.dtype, max_bytes)
        out = np.zeros(self.shape, dtype=self.dtype)
        if self.nnz and self.dtype in COMPILED_DTYPES:
            csr_to_dense(self.indptr, self.indices, self.data, out)
        elif self.nnz:  # value types numba lacks (bool, float16, longdouble): NumPy's scatter
            rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
            np.add.at(out, (rows, self.indices), self.data)
        return out

    def sorted(self, threads: int | None = None) -> CSR:
        """A copy with strictly increasing columns in every row (``self`` when already so).

        Rows are sorted independently (:func:`flexsparse.kernels.cpu.rowsort.sort_csr_rows`,
        O(nnz) radix passes, parallel), then any duplicate columns are summed (O(nnz)).

        >>> CSR(np.array([0, 3]), np.array([2, 0, 2]), np.array([1.0, 2.0, 3.0]), (1, 3),
        ...     sorted_indices=False).sorted().data.tolist()
        [2.0, 4.0]
        """
        if self.sorted_indices:
            return self
        from flexsparse.kernels.cpu.rowsort import sort_csr_rows

        indices, data = self.indices.copy(), self.data.copy()
        sort_csr_rows(self.indptr, indices, data, threads)
        dup = indices[1:] == indices[:-1]
        if dup.size:
            starts = self.indptr[1:-1]
            dup[starts[(starts > 0) & (starts < self.nnz)] - 1] = False  # a new row is never a duplicate
        if not dup.any():
            return CSR._trusted(self.indptr, indices, data, self.shape, True)
        first = np.flatnonzero(np.concatenate(([True], ~dup)))
        rows = np.repeat(np.arange(self.n_rows), self.row_lengths())[first]
        indptr = np.zeros(self.n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n_rows), out=indptr[1:])
        summed = np.add.reduceat(data, first) if data.dtype != np.bool_ else np.logical_or.reduceat(data, first)
        return CSR._trusted(indptr, indices[first], summed.astype(data.dtype, copy=False), self.shape, True)

    def toarray(self) -> np.ndarray:
        """Dense ``[n_rows, n_cols]`` copy (SciPy's name for :meth:`todense`)."""
        return self.todense()

    def row_ids(self) -> np.ndarray:
        """``int64[nnz]``: the row of every stored entry."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.row_lengths())

    def to_coo(self):
        """COO with the same entries, backed by this CSR (coordinates built when first read;
        canonical when indices are sorted; see :meth:`~flexsparse.formats.coo.COO.from_csr`)."""
        from flexsparse.formats.coo import COO

        return COO.from_csr(self)

    @classmethod
    def from_coo(cls, coo) -> CSR:
        """CSR of a 2-D COO (duplicates summed, indices sorted; a CSR-backed COO gives its
        CSR, sorted first when needed)."""
        if coo.ndim != 2:
            raise ValueError(f"CSR holds 2-D matrices, got a COO of shape {coo.shape}")
        return coo.to_csr(sort=True)

    def tocsc(self) -> CSC:
        """The same matrix as :class:`CSC` (a counting-sort transpose, O(nnz + n_rows + n_cols))."""
        t = self.transpose()
        return CSC._trusted(t.indptr, t.indices, t.data, self.shape, t.sorted_indices)

    @classmethod
    def from_coo_arrays(cls, rows: Any, cols: Any, vals: Any, shape: tuple[int, int],
                        sum_duplicates: bool = True) -> CSR:
        """Build from coordinate triples (vectorised; any input order).

        Args:
            rows, cols: integer coordinates ``[nnz]``.
            vals: values ``[nnz]``.
            shape: ``(n_rows, n_cols)``.
            sum_duplicates: add up repeated ``(row, col)`` pairs (result is sorted and
                duplicate-free). With ``False`` duplicates are kept (in input order) and
                ``sorted_indices`` is ``True`` only when none occur.

        >>> CSR.from_coo_arrays([0, 0], [1, 1], [1, 2], (1, 2), sum_duplicates=False).sorted_indices
        False
        """
        rows, cols, vals = np.asarray(rows), np.asarray(cols), np.asarray(vals)
        shape = (int(shape[0]), int(shape[1]))
        n_rows, n_cols = shape
        if rows.ndim != 1 or cols.shape != rows.shape or vals.shape != rows.shape:
            raise ValueError(f"rows, cols, vals must be 1-D of equal length, got shapes "
                             f"{rows.shape}, {cols.shape}, {vals.shape}")
        for name, a, extent in (("row", rows, n_rows), ("column", cols, n_cols)):
            if a.size and a.dtype.kind not in "iu":
                raise TypeError(f"{name} coordinates must be integers, got dtype {a.dtype}")
            if a.size and (int(a.min()) < 0 or int(a.max()) >= extent):
                bad = int(np.argmax((a < 0) | (a >= extent)))
                raise ValueError(f"{name} coordinate {int(a[bad])} at position {bad} is out of "
                                 f"range [0, {extent}) for shape {shape}")
        check_numeric_dtype(vals.dtype, "vals")
        rows = rows.astype(np.int64, copy=False)
        cols = cols.astype(np.int64, copy=False)
        if fits_int64(n_rows, n_cols):
            key = rows * n_cols + cols
            order = np.argsort(key, kind="stable")
            key = key[order]
            dup = key[1:] == key[:-1]
        else:  # the linear key would overflow int64: sort on the pair instead
            order = np.lexsort((cols, rows))
            dup = (rows[order][1:] == rows[order][:-1]) & (cols[order][1:] == cols[order][:-1])
        r, c, v = rows[order], cols[order], vals[order]
        has_dup = bool(dup.any())
        if sum_duplicates and has_dup:
            starts = np.flatnonzero(np.concatenate(([True], ~dup)))
            v = np.add.reduceat(v, starts).astype(vals.dtype, copy=False)
            r, c = r[starts], c[starts]
            has_dup = False
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        return cls(indptr, c.astype(index_dtype_for(n_cols)), v, shape, not has_dup)

    def transpose(self, axes=None) -> CSR:
        """CSR of the transpose (= CSC of ``self``) by a counting sort; see :func:`transpose_csr`."""
        if is_identity_2d(axes):
            return self
        n_rows, n_cols = self.shape
        out_indptr = np.empty(n_cols + 1, dtype=np.int64)
        out_indices = np.empty(self.nnz, dtype=index_dtype_for(n_rows))
        out_data = np.empty(self.nnz, dtype=self.dtype)
        from flexsparse.kernels.cpu.transpose import transpose_csr  # numba: compiled on first use

        transpose_csr(self.indptr, self.indices, self.data, n_cols, out_indptr, out_indices, out_data)
        return CSR._trusted(out_indptr, out_indices, out_data, (n_cols, n_rows), self.sorted_indices)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CSC(SparseArray):
    """A 2-D sparse matrix in compressed-sparse-column form (see the module docstring).

    Attributes:
        indptr: ``int64[n_cols + 1]`` column pointers.
        indices: ``int32 | int64 [nnz]`` row ids.
        data: ``[nnz]`` numeric values.
        shape: ``(n_rows, n_cols)``.
        sorted_indices: whether row ids are strictly increasing in every column.

    >>> m = CSC(np.array([0, 1, 1, 2]), np.array([1, 0]), np.array([5.0, 6.0]), (2, 3))
    >>> m.todense().tolist()
    [[0.0, 0.0, 6.0], [5.0, 0.0, 0.0]]
    >>> m.T
    <CSR shape=(3, 2) nnz=2 density=33.3% dtype=float64>
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]
    sorted_indices: bool = True

    format = "csc"

    def __post_init__(self) -> None:
        t = CSR(self.indptr, self.indices, self.data, tuple(self.shape)[::-1], self.sorted_indices)
        for name in ("indptr", "indices", "data", "sorted_indices"):
            object.__setattr__(self, name, getattr(t, name))
        object.__setattr__(self, "shape", t.shape[::-1])

    @classmethod
    def _trusted(cls, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 shape: tuple[int, int], sorted_indices: bool) -> CSC:
        return _trusted_compressed(cls, indptr, indices, data, shape, sorted_indices)

    def _csr_of_transpose(self) -> CSR:
        return CSR._trusted(self.indptr, self.indices, self.data, self.shape[::-1], self.sorted_indices)

    def validate(self) -> None:
        """The layout of the module docstring (the CSR checks on the transposed shape)."""
        self._csr_of_transpose().validate()

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    def _data(self) -> np.ndarray:
        return self.data

    def _with_data(self, data: np.ndarray) -> CSC:
        check_numeric_dtype(data.dtype, "CSC data")
        return CSC._trusted(self.indptr, self.indices, data, self.shape, self.sorted_indices)

    def transpose(self, axes=None) -> SparseArray:
        """The transpose as a :class:`CSR` sharing the arrays (no copy)."""
        if is_identity_2d(axes):
            return self
        return self._csr_of_transpose()

    def tocsr(self) -> CSR:
        """The same matrix as :class:`CSR` (a counting-sort transpose)."""
        return self._csr_of_transpose().transpose()

    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        return self._csr_of_transpose().todense(max_bytes).T.copy()

    def to_coo(self):
        return self._csr_of_transpose().to_coo().transpose()

    @classmethod
    def from_coo(cls, coo) -> CSC:
        """CSC of a 2-D COO (duplicates summed, indices sorted)."""
        if coo.ndim != 2:
            raise ValueError(f"CSC holds 2-D matrices, got a COO of shape {coo.shape}")
        t = CSR.from_coo(coo.transpose())
        return cls._trusted(t.indptr, t.indices, t.data, coo.shape, True)

    def to_scipy(self, format: str = "csc") -> Any:
        """A SciPy sparse array; ``"csc"`` (default) shares the buffers."""
        import scipy.sparse as sp

        out = sp.csc_array((self.data, self.indices, self.indptr), shape=self.shape)
        out.has_sorted_indices = self.sorted_indices
        return out if format == "csc" else super().to_scipy(format)

    @classmethod
    def from_scipy(cls, m: Any) -> CSC:
        """Convert any SciPy sparse matrix/array (sums duplicates, sorts indices)."""
        t = CSR.from_scipy(m.T if hasattr(m, "T") else m)
        return cls._trusted(t.indptr, t.indices, t.data, t.shape[::-1], True)
