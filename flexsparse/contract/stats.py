"""Operand statistics for sparsity-aware einsum planning: the ONLY einsum module that reads arrays.

:func:`operand_stats` reduces one operand (a :class:`flexsparse.formats.coo.COO`, any COO-like
object with ``coords [ndim, nnz]`` and ``shape``, a SciPy sparse matrix, or a dense NumPy array /
scalar) to an :class:`OperandStats`: its nnz and, per index, the number of non-empty slices
(``distinct``) and a *slice-count sketch* (``counts``):

    counts[idx]: float64 [w],  w = min(size(idx), SKETCH_WIDTH),
    counts[idx][b] = number of stored entries whose coordinate c along idx has c % w == b.

When ``size(idx) <= SKETCH_WIDTH`` (the usual case: FROSTT modes of 6186, 14036 or 17 entries)
the sketch is the exact per-coordinate slice-nnz vector, so the flop count of contracting ``idx``
between A and B, ``sum_c nnzA(c) * nnzB(c)``, is exact; larger modes fold ``w`` coordinates per
bucket (``rows_per_bucket``) and :mod:`flexsparse.contract.cost` assumes uniformity inside a bucket.
The sketch is what lets the cost model see power-law skew (hub rows/columns) that a uniform
density model misses by orders of magnitude.

Repeated indices (``"ii"``) are resolved here: the statistics describe the diagonal, with indices
deduplicated in first-appearance order. Dense operands are summarised without reading data
(``is_dense=True``, ``nnz`` = number of cells, uniform slice counts, stored as ``counts=None``).

Cost: O(nnz * ndim) time, vectorised (one ``bincount`` per mode), plus O(size) for ``distinct`` of
a mode longer than the sketch (a boolean mark array; ``np.unique`` above 2**26); memory
O(sum of sketch widths). Sampling is not needed at this cost.

Example:
    >>> import numpy as np
    >>> s = operand_stats("ij", np.ones((3, 4)))
    >>> s.nnz, s.is_dense, s.density
    (12, True, 1.0)
    >>> s.slice_counts("i").tolist()
    [4.0, 4.0, 4.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse.contract.parser import FrozenSizes

__all__ = ["SKETCH_WIDTH", "OperandStats", "dense_stats", "operand_stats", "rows_per_bucket"]

#: Longest exact slice-count vector kept per index; longer modes are folded modulo this width.
SKETCH_WIDTH = 1 << 16


def rows_per_bucket(size: int, width: int | None = None) -> np.ndarray:
    """Number of coordinates ``c < size`` with ``c % width == b`` for each bucket ``b``.

    >>> rows_per_bucket(5, 2).tolist()
    [3.0, 2.0]
    """
    w = min(size, SKETCH_WIDTH) if width is None else width
    if w <= 0:
        return np.zeros(0)
    base, extra = divmod(size, w)
    r = np.full(w, float(base))
    r[:extra] += 1.0
    return r


@dataclass(frozen=True, eq=False)
class OperandStats:
    """Summary of one einsum operand (or an estimated intermediate), with distinct indices.

    Attributes:
        indices: the operand's indices, distinct letters (diagonals already taken).
        shape: sizes aligned with ``indices``.
        nnz: stored entries (dense: the number of cells).
        is_dense: the operand is (or will be stored as) a dense array.
        itemsize: bytes per value.
        distinct: per index, number of non-empty slices (coordinates holding an entry).
        counts: per index, the slice-count sketch ``float64 [min(size, SKETCH_WIDTH)]``
            (read-only); ``None`` means uniform (dense operands).
        exact: ``True`` when measured from data, ``False`` for planner estimates.
        format: the storage the executor receives: ``"dense"``, ``"coo"`` (every general
            sparse format is contracted as COO) or a structured format name (``"block"``,
            ``"nm"``, ``"hss"``) for an untransformed structured operand; derived statistics
            (projections, estimates) are ``"coo"`` or ``"dense"``.
    """

    indices: str
    shape: tuple[int, ...]
    nnz: int
    is_dense: bool
    itemsize: int = 8
    distinct: FrozenSizes = field(default_factory=FrozenSizes)
    counts: Mapping[str, np.ndarray | None] = field(default_factory=dict)
    exact: bool = True
    format: str = "coo"

    def __post_init__(self) -> None:
        if self.is_dense and self.format != "dense":
            object.__setattr__(self, "format", "dense")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"OperandStats indices must be distinct, got {self.indices!r}")
        if len(self.shape) != len(self.indices):
            raise ValueError(f"OperandStats shape {self.shape} does not match indices {self.indices!r}")
        if self.nnz < 0:
            raise ValueError(f"OperandStats nnz must be >= 0, got {self.nnz}")

    @property
    def ndim(self) -> int:
        """Number of indices."""
        return len(self.indices)

    @property
    def size(self) -> int:
        """Number of dense cells (Python int, never overflows)."""
        return math.prod(self.shape)

    @property
    def density(self) -> float:
        """``nnz / size`` (1.0 for an empty index space)."""
        return self.nnz / self.size if self.size else 1.0

    def dim(self, idx: str) -> int:
        """Size of index ``idx``."""
        return self.shape[self.indices.index(idx)]

    def n_distinct(self, idx: str) -> int:
        """Number of non-empty slices along ``idx``."""
        if idx in self.distinct:
            return self.distinct[idx]
        return self.dim(idx) if self.nnz else 0

    def slice_counts(self, idx: str) -> np.ndarray:
        """The slice-count sketch of ``idx`` (uniform for dense operands); sums to ``nnz``."""
        c = self.counts.get(idx)
        if c is not None:
            return c
        n = self.dim(idx)
        return rows_per_bucket(n) * (self.nnz / n) if n else np.zeros(0)

    def skew(self, idx: str) -> float:
        """``distinct * sum(count**2) / nnz**2``: 1 for equal non-empty slices, large for hubs."""
        c = self.slice_counts(idx)
        if not self.nnz:
            return 1.0
        r = rows_per_bucket(self.dim(idx))
        return float(self.n_distinct(idx) * np.sum(c * c / r) / self.nnz ** 2)

    def __repr__(self) -> str:
        kind = self.format
        return (f"OperandStats({self.indices!r}, shape={self.shape}, nnz={self.nnz}, {kind}, "
                f"density={self.density:.3g}{'' if self.exact else ', estimated'})")


def dense_stats(indices: str, shape: tuple[int, ...], itemsize: int = 8, exact: bool = True) -> OperandStats:
    """Statistics of a dense operand over ``indices`` (every cell counted as an entry)."""
    shape = tuple(int(n) for n in shape)
    nnz = math.prod(shape)
    distinct = FrozenSizes({i: (n if nnz else 0) for i, n in zip(indices, shape)})
    return OperandStats(indices, shape, nnz, True, itemsize, distinct, {}, exact)


def _sketch(coord: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Slice-count sketch and number of distinct coordinates of one mode's coordinates."""
    w = min(size, SKETCH_WIDTH)
    c = coord.astype(np.intp, copy=False)
    if size <= SKETCH_WIDTH:
        counts = np.bincount(c, minlength=w).astype(np.float64)
        distinct = int(np.count_nonzero(counts))
    else:
        counts = np.bincount(c % w, minlength=w).astype(np.float64)
        if size <= _limits.DISTINCT_MARK_MAX:
            mark = np.zeros(size, dtype=bool)
            mark[c] = True
            distinct = int(np.count_nonzero(mark))
        else:
            distinct = int(np.unique(c).size)
    counts.setflags(write=False)
    return counts, distinct


def _dedup(indices: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], list[int]]:
    """Distinct indices, their sizes, and the first axis of each; checks diagonal sizes."""
    first: dict[str, int] = {}
    for ax, (i, n) in enumerate(zip(indices, shape)):
        if i in first and shape[first[i]] != n:
            raise ValueError(
                f"index {i!r} is repeated in {indices!r} with different sizes ({shape[first[i]]} != {n})")
        first.setdefault(i, ax)
    axes = list(first.values())
    return "".join(first), tuple(shape[a] for a in axes), axes


def operand_stats(indices: str, tensor: Any) -> OperandStats:
    """Measure the statistics of ``tensor`` labelled by ``indices`` (may repeat: diagonal).

    Args:
        indices: one letter per axis of ``tensor`` (ellipsis already expanded).
        tensor: a ``COO`` (or any object with ``coords [ndim, nnz]``, ``data`` and ``shape``), a
            SciPy sparse matrix/array, or a dense array-like / scalar.

    Returns:
        The :class:`OperandStats` of the diagonal over the deduplicated indices.

    Raises:
        ValueError: ``len(indices)`` differs from the tensor's ndim, or a repeated index has
            unequal dimensions.
        TypeError: the tensor's dtype is not numeric.

    Example:
        >>> import numpy as np
        >>> from flexsparse.formats.coo import COO
        >>> a = COO.from_numpy(np.array([[1.0, 0, 2], [0, 0, 0], [0, 3, 0]]))
        >>> s = operand_stats("ij", a)
        >>> s.nnz, dict(s.distinct), s.slice_counts("j").tolist()
        (3, {'i': 2, 'j': 3}, [1.0, 1.0, 1.0])
        >>> operand_stats("ii", a).nnz   # the diagonal holds 1 and 0 and 0 -> entries (0,0)
        1
    """
    from flexsparse._util import check_numeric_dtype

    if not isinstance(indices, str):
        raise TypeError(f"indices must be a str, not {type(indices).__name__}")
    fmt = "coo"
    structured = getattr(tensor, "general", True) is False  # BlockSparse, NM, HSS
    if structured:
        fmt = tensor.format
    if hasattr(tensor, "to_coo") and not hasattr(tensor, "coords"):  # CSR, CSC, CSF, structured
        tensor = tensor.to_coo()
    if hasattr(tensor, "coords") and hasattr(tensor, "shape") and hasattr(tensor, "data"):
        coords = np.asarray(tensor.coords)
        shape = tuple(int(n) for n in tensor.shape)
        dtype = np.dtype(tensor.data.dtype)
        if coords.ndim != 2 or coords.shape[0] != len(shape):
            raise ValueError(f"COO coords must be [ndim={len(shape)}, nnz], got shape {coords.shape}")
    elif hasattr(tensor, "tocoo") and hasattr(tensor, "nnz") and hasattr(tensor, "shape"):
        m = tensor.tocoo()
        coords = np.vstack([np.asarray(m.row), np.asarray(m.col)])
        shape = tuple(int(n) for n in m.shape)
        dtype = np.dtype(m.dtype)
    else:
        arr = np.asarray(tensor)
        check_numeric_dtype(arr.dtype, "einsum operand")
        if len(indices) != arr.ndim:
            raise ValueError(f"indices {indices!r} name {len(indices)} axes but the operand has "
                             f"{arr.ndim} (shape {arr.shape})")
        idx, dshape, _ = _dedup(indices, tuple(arr.shape))
        return dense_stats(idx, dshape, arr.dtype.itemsize)
    check_numeric_dtype(dtype, "einsum operand")
    if len(indices) != len(shape):
        raise ValueError(f"indices {indices!r} name {len(indices)} axes but the operand has "
                         f"{len(shape)} (shape {shape})")
    idx, dshape, axes = _dedup(indices, shape)
    if len(axes) < len(indices):
        # Diagonal: keep entries whose coordinates agree on every repeated index.
        mask = np.ones(coords.shape[1], dtype=bool)
        for ax, i in enumerate(indices):
            first = axes[idx.index(i)]
            if ax != first:
                mask &= coords[ax] == coords[first]
        coords = coords[axes][:, mask]
    nnz = int(coords.shape[1])
    counts: dict[str, np.ndarray | None] = {}
    distinct: dict[str, int] = {}
    for m, (i, n) in enumerate(zip(idx, dshape)):
        counts[i], distinct[i] = _sketch(coords[m], n)
    if structured and len(axes) < len(indices):
        fmt = "coo"  # a diagonal of a structured matrix is contracted as COO
    return OperandStats(idx, dshape, nnz, False, dtype.itemsize, FrozenSizes(distinct), counts, True, fmt)
