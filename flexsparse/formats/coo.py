"""COO: the coordinate-list sparse tensor of any number of dimensions (0-D to n-D).

Layout (enforced by :meth:`COO.validate`)::

    coords: [ndim, nnz]  integer, dtype index_dtype_for(shape) (int32 if every extent < 2**31)
    data:   [nnz]        numeric (bool, int, float, complex)
    shape:  tuple of ndim non-negative Python ints

Coordinates are stored per mode, never as one linearised key, so index spaces larger
than 2**63 (FROSTT Flickr, 320K x 28M x 1.6M x 731 = 1.05e22 cells) are representable.
A tensor is *canonical* when its columns are strictly increasing lexicographically
(mode 0 slowest, i.e. row-major order) -- sorted with no duplicate coordinates. Explicit
zeros are allowed in canonical form (as in SciPy); :meth:`COO.eliminate_zeros` drops them.

A 2-D COO may be *backed by a CSR* (:meth:`COO.from_csr`, what a 2-D einsum product or a
SciPy CSR input gives): it keeps the CSR buffers (``data`` is the CSR's) and builds
``coords`` only when first read (O(nnz) then, never before). Such a COO is canonical when the
CSR rows are sorted; rows of a jumbled product are duplicate-free but unordered
(``canonical=False``), and :meth:`sum_duplicates` then sorts each row (O(nnz) radix passes,
parallel) instead of sorting all coordinates.

Cost: construction validates in O(ndim * nnz) vectorised NumPy; :meth:`sum_duplicates`
sorts in O(ndim * nnz log nnz) (a linear-key argsort when ``prod(shape) < 2**63``, else
``np.lexsort``) and sums runs with ``np.add.reduceat``. Element-wise ``+``/``-`` are a
concatenation plus ``sum_duplicates``; ``*`` is a sort-merge intersection
(see :mod:`flexsparse.formats._elementwise`). Nothing loops over nonzeros in Python.

>>> import numpy as np
>>> a = COO.from_numpy(np.array([[0.0, 1.0], [2.0, 0.0]]))
>>> a
<COO shape=(2, 2) nnz=2 density=50% dtype=float64>
>>> a.coords.tolist(), a.data.tolist()
([[0, 1], [1, 0]], [1.0, 2.0])
>>> (a + a.T).todense().tolist()
[[0.0, 3.0], [3.0, 0.0]]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from flexsparse import _limits
from flexsparse._util import check_numeric_dtype, index_dtype_for
from flexsparse.formats import _sort
from flexsparse.formats._elementwise import reshape_coords
from flexsparse.formats.base import DenseTooLargeError, SparseArray, dense_bytes_check

__all__ = ["COO", "DenseTooLargeError", "DENSE_LIMIT_BYTES", "normalize_shape"]

#: ``todense()`` refuses results larger than this many bytes unless ``max_bytes`` is raised
#: (kept under this name for compatibility; the value lives in :mod:`flexsparse._limits`).
DENSE_LIMIT_BYTES = _limits.TODENSE_MAX_BYTES
_MAX_EXTENT = _limits.INT64_MAX


class _DensifyKernels:
    """The compiled densify kernels, imported on first use (numba loads with them) and kept:
    a function-level import costs ~1 us per call even when the module is loaded."""

    def __init__(self) -> None:
        from flexsparse.kernels.cpu.densify import long_runs, sorted_coo_to_dense
        from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES

        self.COMPILED_DTYPES = COMPILED_DTYPES
        self.long_runs = long_runs
        self.sorted_coo_to_dense = sorted_coo_to_dense


_DENSIFY: list[_DensifyKernels] = []


def _scatter() -> _DensifyKernels:
    if not _DENSIFY:
        _DENSIFY.append(_DensifyKernels())
    return _DENSIFY[0]


def _row_major_strides(shape: tuple[int, ...]) -> np.ndarray:
    """C-order strides of ``shape`` in elements, int64 (the extents fit: the dense array exists)."""
    strides = np.ones(len(shape), dtype=np.int64)
    if len(shape) > 1:
        strides[:-1] = np.cumprod(shape[:0:-1], dtype=np.int64)[::-1]
    return strides


def normalize_shape(shape, what: str = "shape") -> tuple[int, ...]:
    """Return ``shape`` as a tuple of non-negative Python ints, or raise TypeError/ValueError.

    >>> normalize_shape([2, np.int64(3)])
    (2, 3)
    >>> normalize_shape((2, -1))
    Traceback (most recent call last):
    ...
    ValueError: shape has a negative extent -1 in mode 1: (2, -1)
    """
    if isinstance(shape, (numbers.Integral, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, not {type(shape).__name__}") from None
    out = []
    for m, s in enumerate(items):
        if isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer)):
            raise TypeError(f"{what} extent in mode {m} must be an int, not {type(s).__name__} ({s!r})")
        out.append(int(s))
    for m, s in enumerate(out):
        if s < 0:
            raise ValueError(f"{what} has a negative extent {s} in mode {m}: {tuple(out)}")
    return tuple(out)


def _check_extents(shape: tuple[int, ...]) -> None:
    for m, s in enumerate(shape):
        if s > _MAX_EXTENT:
            raise ValueError(f"extent {s} of mode {m} in shape {shape} exceeds the int64 coordinate "
                             f"range (max {_MAX_EXTENT})")


class COO(SparseArray):
    """Sparse tensor in coordinate format: ``coords: [ndim, nnz]``, ``data: [nnz]``.

    Args:
        coords: integer array-like ``[ndim, nnz]`` (a 1-D sequence is taken as ``[1, nnz]``
            when ``shape`` is 1-D). Converted to ``index_dtype_for(shape)``.
        data: numeric array-like ``[nnz]``, or a scalar broadcast to every coordinate.
        shape: extents; if ``None``, inferred as ``coords.max(axis=1) + 1`` (needs nnz > 0).
        canonical: ``None`` (detect), ``True`` (caller guarantees sorted/unique: still checked
            by ``validate``), or ``False`` (do not detect; treat as unsorted).
        copy: copy ``coords``/``data`` even when no conversion is needed.

    Raises:
        TypeError: non-integer coordinates or non-numeric data.
        ValueError: layout mismatch, negative or out-of-bounds coordinates.

    >>> t = COO([[0, 1, 1], [2, 0, 0]], [1.0, 2.0, 3.0], shape=(2, 3))
    >>> t.canonical
    False
    >>> t.sum_duplicates().data.tolist()
    [1.0, 5.0]
    """

    format = "coo"
    #: The CSR this 2-D COO was built from (:meth:`from_csr`), or None.
    _csr = None
    _coords = None

    @property
    def coords(self) -> np.ndarray:
        """``[ndim, nnz]`` coordinates (built from the backing CSR on first use, if any)."""
        coords = self._coords
        if coords is None:
            csr = self._csr
            coords = np.empty((2, csr.nnz), dtype=index_dtype_for(self.shape))
            coords[0] = np.repeat(np.arange(csr.n_rows, dtype=coords.dtype), np.diff(csr.indptr))
            coords[1] = csr.indices
            self._coords = coords
        return coords

    @coords.setter
    def coords(self, value: np.ndarray) -> None:
        self._coords = value

    @classmethod
    def from_csr(cls, csr) -> COO:
        """A 2-D COO sharing the buffers of a :class:`~flexsparse.formats.csr.CSR` (O(1)).

        Coordinates are built when first read; canonical when the CSR has sorted indices.

        >>> from flexsparse.formats.csr import CSR
        >>> t = COO.from_csr(CSR(np.array([0, 2, 3]), np.array([2, 0, 1]), np.ones(3), (2, 3),
        ...                      sorted_indices=False))
        >>> t.canonical, t.coords.tolist()
        (False, [[0, 0, 1], [2, 0, 1]])
        >>> t.sum_duplicates().coords.tolist()
        [[0, 0, 1], [0, 2, 1]]
        """
        out = object.__new__(cls)
        out.shape = (int(csr.shape[0]), int(csr.shape[1]))
        out.data = csr.data
        out._csr = csr
        out.canonical = bool(csr.sorted_indices)
        return out

    def to_csr(self, sort: bool = True):
        """This 2-D COO as a :class:`~flexsparse.formats.csr.CSR` with duplicates summed.

        Zero-copy for a CSR-backed COO whose order is acceptable (``sort=False`` accepts
        jumbled rows); O(nnz) for a canonical COO (``indptr`` by a row count, indices and
        values shared); a sort for other COOs, or with ``sort=False`` an O(nnz) counting
        sort by row that keeps duplicates and leaves the columns of a row unordered.
        """
        csr = self._csr  # set on 2-D COOs only
        if csr is not None and (csr.sorted_indices or not sort) and csr.data is self.data:
            return csr  # before the import below: ~1 us of a small product's fixed cost
        from flexsparse.formats.csr import CSR

        if self.ndim != 2:
            raise ValueError(f"to_csr needs a 2-D COO, got shape {self.shape}")
        if not sort and not self.canonical:
            from flexsparse.kernels.cpu.rowsort import bucket_rows_kernel

            idt = index_dtype_for(self.shape[1])
            indptr = np.empty(self.shape[0] + 1, dtype=np.int64)
            indices, data = np.empty(self.nnz, dtype=idt), np.empty(self.nnz, dtype=self.dtype)
            bucket_rows_kernel(self.coords[0], self.coords[1], self.data, self.shape[0], indptr, indices, data)
            return CSR._trusted(indptr, indices, data, self.shape, False)
        t = self.sum_duplicates()
        if t._csr is not None and t._csr.data is t.data:
            return t._csr
        indptr = np.zeros(t.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(t.coords[0], minlength=t.shape[0]), out=indptr[1:])
        return CSR._trusted(indptr, t.coords[1].astype(index_dtype_for(t.shape[1]), copy=False), t.data,
                            t.shape, True)

    def __init__(self, coords, data, shape=None, *, canonical: bool | None = None, copy: bool = False):
        coords = np.array(coords, copy=copy) if copy else np.asarray(coords)
        if shape is not None:
            shape = normalize_shape(shape)
            if coords.ndim == 1 and len(shape) == 1:
                coords = coords.reshape(1, -1)
            if coords.size == 0 and not (coords.ndim == 2 and coords.shape[0] == len(shape)):
                # e.g. [] for an empty tensor; a 0-D tensor takes its nnz from data
                coords = coords.reshape(len(shape), 0 if len(shape) else np.size(data))
        if coords.ndim != 2:
            raise ValueError(f"coords must be 2-D [ndim, nnz], got an array of shape {coords.shape}")
        if coords.dtype.kind not in "iu":
            if coords.size == 0 and coords.dtype.kind == "f":  # np.array([]) is float64
                coords = coords.astype(np.int64)
            else:
                raise TypeError(f"coords must be integers, got dtype {coords.dtype}")
        if shape is None:
            if coords.shape[1] == 0:
                raise ValueError("cannot infer shape from zero coordinates; pass shape=")
            if coords.shape[0] and coords.min() < 0:
                raise ValueError("coords has negative entries; cannot infer shape")
            shape = tuple(int(x) + 1 for x in coords.max(axis=1))
        nnz = coords.shape[1]
        data = np.array(data, copy=copy) if copy else np.asarray(data)
        if data.ndim == 0:
            data = np.full(nnz, data, dtype=data.dtype)
        check_numeric_dtype(data.dtype, "data")
        _check_extents(shape)
        self.shape: tuple[int, ...] = shape
        self.data: np.ndarray = data
        self.coords: np.ndarray = coords
        self._check_layout()
        self._check_bounds()
        idt = index_dtype_for(shape)
        if coords.dtype != idt:
            self.coords = coords.astype(idt)
        if canonical is None:
            canonical = _sort.is_lex_sorted(self.coords, strict=True)
        elif canonical and not _sort.is_lex_sorted(self.coords, strict=True):
            raise ValueError("canonical=True but coords are not strictly increasing lexicographically")
        self.canonical: bool = bool(canonical)

    # ------------------------------------------------------------------ validation
    def _check_layout(self) -> None:
        ndim = len(self.shape)
        if self.coords.ndim != 2 or self.coords.shape[0] != ndim:
            raise ValueError(f"coords must have shape [ndim={ndim}, nnz], got {self.coords.shape} "
                             f"for shape {self.shape}")
        if self.data.ndim != 1 or self.data.shape[0] != self.coords.shape[1]:
            raise ValueError(f"data must have shape [nnz={self.coords.shape[1]}], got {self.data.shape}")

    def _check_bounds(self) -> None:
        c = self.coords
        if c.shape[1] == 0 or c.shape[0] == 0:
            return
        mins = c.min(axis=1)
        maxs = c.max(axis=1)
        for m, extent in enumerate(self.shape):
            if mins[m] < 0:
                j = int(np.argmax(c[m] < 0))
                raise ValueError(f"negative coordinate {int(c[m, j])} in mode {m} at nonzero {j}")
            if int(maxs[m]) >= extent:
                j = int(np.argmax(c[m] >= extent))
                raise ValueError(f"coordinate {int(c[m, j])} out of bounds for mode {m} with extent "
                                 f"{extent} at nonzero {j}")

    def validate(self) -> None:
        """Check the layout formula, dtypes, bounds and the ``canonical`` flag; raise ValueError/TypeError."""
        self.shape = normalize_shape(self.shape)
        self._check_layout()
        if self.coords.dtype != index_dtype_for(self.shape):
            raise TypeError(f"coords dtype {self.coords.dtype} != index_dtype_for(shape) "
                            f"{index_dtype_for(self.shape)}")
        check_numeric_dtype(self.data.dtype, "data")
        self._check_bounds()
        if self.canonical and not _sort.is_lex_sorted(self.coords, strict=True):
            raise ValueError("canonical flag is set but coords are not sorted/unique")

    # ------------------------------------------------------------------ properties
    @property
    def nnz(self) -> int:
        """Number of stored entries (including explicit zeros)."""
        return int(self.data.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of values plus index metadata (``data.nbytes + coords.nbytes``; a CSR-backed
        COO without coordinates yet counts its CSR's ``indptr`` and ``indices``)."""
        if self._coords is None and self._csr is not None:
            return int(self.data.nbytes + self._csr.indices.nbytes + self._csr.indptr.nbytes)
        return int(self.data.nbytes + self.coords.nbytes)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_numpy(cls, arr) -> COO:
        """COO of the nonzeros of a dense array (canonical: ``np.nonzero`` is row-major).

        >>> COO.from_numpy(np.float32(3)).data.tolist()
        [3.0]
        >>> COO.from_numpy(np.eye(2, dtype=int)).coords.tolist()
        [[0, 1], [0, 1]]
        """
        arr = np.asarray(arr)
        check_numeric_dtype(arr.dtype, "array")
        if arr.ndim == 0:
            keep = arr != 0
            coords = np.zeros((0, int(keep)), dtype=np.int32)
            return cls(coords, arr.reshape(1)[: int(keep)], (), canonical=True)
        nz = np.nonzero(arr)
        coords = np.vstack(nz) if nz else np.zeros((0, 0), dtype=np.int64)
        return cls(coords.astype(index_dtype_for(arr.shape), copy=False), arr[nz], arr.shape, canonical=True)

    @classmethod
    def empty(cls, shape, dtype=np.float64) -> COO:
        """An all-zero tensor (nnz = 0) of ``shape`` and ``dtype``."""
        shape = normalize_shape(shape)
        return cls(np.zeros((len(shape), 0), dtype=index_dtype_for(shape)), np.zeros(0, dtype=dtype),
                   shape, canonical=True)

    @classmethod
    def from_coo(cls, coo: COO) -> COO:
        """``coo`` itself (the identity conversion of :class:`~flexsparse.formats.base.SparseArray`)."""
        if not isinstance(coo, COO):
            raise TypeError(f"COO.from_coo expects a COO, got {type(coo).__name__}")
        return coo

    def to_coo(self) -> COO:
        return self

    def copy(self) -> COO:
        return COO(self.coords.copy(), self.data.copy(), self.shape, canonical=self.canonical)

    def _data(self) -> np.ndarray:
        return self.data

    def _with_data(self, data: np.ndarray) -> COO:
        check_numeric_dtype(data.dtype, "data")
        csr = self._csr
        if csr is not None and self._coords is None and csr.data is self.data:
            return COO.from_csr(csr._with_data(data))  # keep the compressed layout
        return self._new(self.coords, data, canonical=self.canonical)

    def _new(self, coords, data, shape=None, canonical=False) -> COO:
        """Internal constructor that skips bounds checks (inputs known valid)."""
        out = object.__new__(COO)
        out.shape = self.shape if shape is None else shape
        idt = index_dtype_for(out.shape)
        out.coords = coords if coords.dtype == idt else coords.astype(idt)
        out.data = data
        out.canonical = bool(canonical)
        return out

    # ------------------------------------------------------------------ canonical form
    def sum_duplicates(self) -> COO:
        """Canonical copy: sorted lexicographically with duplicate coordinates summed.

        Returns ``self`` if already canonical. Cost O(ndim * nnz log nnz).
        """
        if self.canonical:
            return self
        csr = self._csr
        if csr is not None and self._coords is None and csr.data is self.data:
            return COO.from_csr(csr.sorted())
        order = _sort.lex_order(self.coords, self.shape)
        coords = self.coords[:, order]
        data = self.data[order]
        starts = _sort.group_starts(coords)
        if self.nnz and not starts.all():
            idx = np.flatnonzero(starts)
            # summed in the tensor's own dtype (as todense() does): np.add.reduceat would widen
            # small integers to int64; booleans OR, as np.add.at on a bool array does
            data = np.add.reduceat(data, idx, dtype=data.dtype) if data.dtype != bool else \
                np.logical_or.reduceat(data, idx)
            coords = coords[:, idx]
        return self._new(coords, data, canonical=True)

    def eliminate_zeros(self) -> COO:
        """Copy without explicitly stored zeros."""
        keep = self.data != 0
        if keep.all():
            return self
        return self._new(self.coords[:, keep], self.data[keep], canonical=self.canonical)

    # ------------------------------------------------------------------ dense
    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense NumPy array (duplicates summed).

        Raises:
            DenseTooLargeError: (a ValueError and MemoryError) if the array would exceed
                ``max_bytes`` (default :data:`DENSE_LIMIT_BYTES` = 4 GiB).
        """
        return self._todense_checked(max_bytes)[0]

    def _todense_checked(self, max_bytes: int | None = None) -> tuple[np.ndarray, bool | None]:
        """``(todense(), whether a stored value is inf or nan)``; the flag comes from the
        scatter's own pass (``None`` where no compiled pass ran: the caller checks itself)."""
        dense_bytes_check(self.shape, self.dtype, max_bytes)
        csr = self._csr
        if csr is not None and self._coords is None and csr.data is self.data:
            return csr.toarray(), None
        if self.canonical and self.ndim and self.nnz == self.size:
            # strictly increasing in-bounds coordinates covering every cell enumerate the
            # cells in C order, so the data already is the dense array: one memcpy instead
            # of a scatter (24x24x375 float64: 0.04 ms against 0.27 ms, 1 thread, 2026-11-29)
            return self.data.reshape(self.shape).copy(), None
        flag = None
        if self.nnz and self.ndim and self.canonical and self.dtype in _scatter().COMPILED_DTYPES:
            strides = _row_major_strides(self.shape)
            k = _scatter()
            if k.long_runs(self.coords, strides, _limits.DENSIFY_RUN_PROBES, _limits.DENSIFY_MIN_MEAN_RUN):
                # sorted entries in long runs of consecutive cells: one copy per run instead
                # of a store per entry (see kernels.cpu.densify); dense-ish tensors write the
                # zeros in the same sweep, sparser ones keep np.zeros' lazily zeroed pages
                fill = (self.nnz >= _limits.DENSIFY_FILL_MIN_DENSITY * self.size
                        and self.size * self.dtype.itemsize <= _limits.DENSIFY_FILL_MAX_BYTES)
                out = np.empty(self.shape, dtype=self.dtype) if fill else np.zeros(self.shape, dtype=self.dtype)
                return out, bool(k.sorted_coo_to_dense(self.coords, self.data, strides, out.reshape(-1), fill))
        out = np.zeros(self.shape, dtype=self.dtype)
        if self.nnz:
            from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES, scatter_coo_dense

            if self.ndim == 0:
                out[()] = self.data.sum(dtype=self.dtype)
            elif self.dtype in COMPILED_DTYPES:
                # one compiled pass, linear index computed on the fly (the dense array exists,
                # so it fits int64); duplicates of a non-canonical tensor accumulate in order.
                # Types numba lacks (float16, longdouble) take the NumPy scatter below
                flag = scatter_coo_dense(self.coords, self.data, out, self.canonical)
            elif self.canonical:
                out[tuple(self.coords)] = self.data  # unique coordinates: plain scatter
            else:
                np.add.at(out, tuple(self.coords), self.data)  # duplicates must accumulate
        else:
            flag = False
        return out, flag

    # ------------------------------------------------------------------ structure
    def transpose(self, axes: Sequence[int] | None = None) -> COO:
        """Permute modes (``axes`` as in ``np.transpose``; default reverses them)."""
        axes = tuple(range(self.ndim))[::-1] if axes is None else tuple(int(a) for a in axes)
        nd = self.ndim
        if len(axes) != nd or any(not -nd <= a < nd for a in axes) or len({a % nd for a in axes}) != nd:
            raise ValueError(f"axes {axes} is not a permutation of the {self.ndim} modes of shape {self.shape}")
        axes = tuple(a % self.ndim for a in axes)
        identity = axes == tuple(range(self.ndim))
        return self._new(self.coords[list(axes)], self.data, tuple(self.shape[a] for a in axes),
                         canonical=self.canonical and identity)

    def reshape(self, shape) -> COO:
        """Same entries viewed with a new shape of equal size (row-major, like ``np.reshape``).

        One extent may be ``-1``. Works when ``prod(shape) >= 2**63``: modes are split
        into groups whose products match (see :func:`flexsparse.formats._elementwise.reshape_coords`)
        and each group is re-indexed with int64 mixed-radix arithmetic, falling back to
        Python-int (object) arithmetic only for a group that itself exceeds int64.
        """
        if isinstance(shape, (numbers.Integral, np.integer)):
            shape = (shape,)
        shape = list(shape)
        if sum(1 for s in shape if s == -1) > 1:
            raise ValueError(f"can only specify one unknown (-1) extent in {tuple(shape)}")
        if -1 in shape:
            known = math.prod(int(s) for s in shape if s != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape tensor of size {self.size} into shape {tuple(shape)}")
            shape[shape.index(-1)] = self.size // known
        new_shape = normalize_shape(shape)
        _check_extents(new_shape)
        if math.prod(new_shape) != self.size:
            raise ValueError(f"cannot reshape tensor of shape {self.shape} (size {self.size}) into shape "
                             f"{new_shape} (size {math.prod(new_shape)})")
        coords = reshape_coords(self.coords, self.shape, new_shape)
        return self._new(coords, self.data, new_shape, canonical=self.canonical)

    def sum(self, axis=None, keepdims: bool = False):
        """Sum over ``axis`` (None, int or tuple), with NumPy's result dtype.

        ``axis=None`` returns a NumPy scalar; otherwise a COO (0-D when every mode is summed).
        """
        if axis is None and not keepdims:
            return self.data.sum()
        axes = tuple(range(self.ndim)) if axis is None else \
            (axis,) if isinstance(axis, (numbers.Integral, np.integer)) else tuple(axis)
        norm = []
        for a in axes:
            a = int(a)
            if not -self.ndim <= a < self.ndim:
                raise ValueError(f"axis {a} is out of bounds for a tensor with {self.ndim} modes")
            norm.append(a % self.ndim)
        if len(set(norm)) != len(norm):
            raise ValueError(f"duplicate value in axis {axis}")
        out_dtype = np.add.reduce(np.zeros(1, dtype=self.dtype)).dtype
        keep = [m for m in range(self.ndim) if m not in norm]
        if keepdims:
            coords = self.coords.copy()
            coords[norm] = 0
            shape = tuple(1 if m in norm else s for m, s in enumerate(self.shape))
        else:
            coords = self.coords[keep]
            shape = tuple(self.shape[m] for m in keep)
        # Keeping a prefix of modes of a canonical tensor preserves order but not uniqueness.
        res = self._new(np.ascontiguousarray(coords), self.data.astype(out_dtype), shape, canonical=False)
        return res.sum_duplicates()

    # ------------------------------------------------------------------ NumPy protocols (dask chunks)
    # One block: basic slicing and the NumPy functions dask.array calls on chunks
    # (concatenate, stack, sum, tensordot, ...), so a COO can be a dask.array chunk type.
    def __getitem__(self, key) -> COO:
        """Basic indexing: ints, slices (any step), ``...`` and ``None``; a COO of the selection.

        Cost O(ndim * nnz). Integer and boolean *arrays* (fancy indexing) are not supported.

        >>> t = COO.from_numpy(np.arange(12.0).reshape(3, 4))
        >>> t[1:, ::2].todense().tolist()
        [[4.0, 6.0], [8.0, 10.0]]
        >>> t[None, 2].shape
        (1, 4)
        """
        return _getitem(self, key)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, (COO, np.ndarray)) for t in types):
            return NotImplemented
        impl = _ARRAY_FUNCTIONS.get(func)
        if impl is None:
            # every other NumPy function sees the dense array, as before this protocol existed
            # (``__array__``, size-guarded)
            impl = getattr(func, "_implementation", None)
            if impl is None:
                return NotImplemented
        return impl(*args, **kwargs)


def _index_key(key, ndim: int) -> list:
    """``key`` expanded to one entry per output position (ints, slices, None), ``...`` filled."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, slice)
                or (isinstance(k, (numbers.Integral, np.integer)) and not isinstance(k, bool))):
            raise TypeError(f"COO supports basic indexing only (ints, slices, ..., None), got {type(k).__name__}")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_axes = sum(k is not None and k is not Ellipsis for k in key)
    if n_axes > ndim:
        raise IndexError(f"too many indices: tensor is {ndim}-dimensional, but {n_axes} were indexed")
    out = []
    for k in key:
        if k is Ellipsis:
            out.extend([slice(None)] * (ndim - n_axes))
        else:
            out.append(k)
    if Ellipsis not in key:
        out.extend([slice(None)] * (ndim - n_axes))
    return out


def _getitem(t: COO, key) -> COO:
    keep = np.ones(t.nnz, dtype=bool)
    coords, shape = [], []
    axis, ordered = 0, True
    for k in _index_key(key, t.ndim):
        if k is None:
            coords.append(None)
            shape.append(1)
            continue
        c, n = t.coords[axis], t.shape[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            size = len(range(start, stop, step))
            if step > 0:
                keep &= (c >= start) & (c < stop) & ((c - start) % step == 0)
                coords.append((c - start) // step)
            else:
                keep &= (c <= start) & (c > stop) & ((start - c) % (-step) == 0)
                coords.append((start - c) // (-step))
                ordered = ordered and size <= 1
            shape.append(size)
        else:
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            keep &= c == i % n
        axis += 1
    nnz = int(keep.sum())
    idt = index_dtype_for(tuple(shape))
    stacked = np.zeros((len(shape), nnz), dtype=idt)
    for m, c in enumerate(coords):
        if c is not None:
            stacked[m] = c[keep]
    return t._new(stacked, t.data[keep], tuple(shape), canonical=t.canonical and ordered)


def _as_coo(x) -> COO:
    return x if isinstance(x, COO) else COO.from_numpy(np.asarray(x))


def _concatenate(arrays, axis=0, out=None, dtype=None, **_) -> COO:
    """``np.concatenate`` of COO (or dense) tensors of equal ndim."""
    arrays = [_as_coo(a) for a in arrays]
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    ndim = arrays[0].ndim
    if axis is None:
        arrays, axis, ndim = [a.reshape(-1) for a in arrays], 0, 1
    axis = int(axis) % max(ndim, 1)
    for a in arrays:
        if a.ndim != ndim or any(s != arrays[0].shape[m] for m, s in enumerate(a.shape) if m != axis):
            raise ValueError(f"all input array dimensions except for the concatenation axis must match: "
                             f"{[x.shape for x in arrays]} along axis {axis}")
    offsets = np.cumsum([0] + [a.shape[axis] for a in arrays])
    shape = list(arrays[0].shape)
    shape[axis] = int(offsets[-1])
    idt = index_dtype_for(tuple(shape))
    coords = np.concatenate([a.coords.astype(idt) for a in arrays], axis=1) if arrays else None
    coords[axis] += np.repeat(offsets[:-1], [a.nnz for a in arrays]).astype(idt)
    vtype = np.result_type(*[a.dtype for a in arrays]) if dtype is None else np.dtype(dtype)
    data = np.concatenate([a.data.astype(vtype, copy=False) for a in arrays])
    canonical = axis == 0 and all(a.canonical for a in arrays)
    return COO._new(None, coords, data, tuple(shape), canonical)


def _stack(arrays, axis=0, out=None, **_) -> COO:
    arrays = [_as_coo(a) for a in arrays]
    ndim = arrays[0].ndim + 1
    axis = int(axis) % ndim
    expanded = [a[(slice(None),) * axis + (None,)] for a in arrays]
    return _concatenate(expanded, axis=axis)


def _sum(a, axis=None, dtype=None, out=None, keepdims=False, **_):
    res = _as_coo(a).sum(axis=axis, keepdims=keepdims)
    return res.astype(dtype) if dtype is not None else res


def _matmul(a, b, **_):
    return a @ b            # the operator dispatch (installed by flexsparse.contract.dispatch)


#: NumPy function -> implementation on COO; the contraction engine adds ``np.tensordot`` and
#: ``np.einsum`` (:func:`register_array_function`, from :mod:`flexsparse.contract.dispatch`:
#: formats never import the engine).
_ARRAY_FUNCTIONS = {
    np.concatenate: _concatenate,
    np.stack: _stack,
    np.sum: _sum,
    np.matmul: _matmul,
    np.dot: _matmul,
    np.transpose: lambda a, axes=None: _as_coo(a).transpose(axes),
    np.reshape: lambda a, shape=None, order="C", **kw: _as_coo(a).reshape(kw.get("newshape", shape)),
}


def register_array_function(func, impl) -> None:
    """Make ``func(...)`` (a NumPy function) run ``impl`` when a COO is among its arguments."""
    _ARRAY_FUNCTIONS[func] = impl
