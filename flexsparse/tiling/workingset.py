"""The working-set model of one tile of ``C = A @ B``: the bytes a tile must hold at once.

A tile is a window of the product: output rows ``[r0, r1)`` (``r`` rows), contracted
ids ``[k0, k1)`` (``kw`` ids) and output columns ``[c0, c1)`` (``cw`` columns). With

* ``e`` -- bytes of one stored entry: ``value_bytes + index_bytes`` of the *output*
  (operands are charged at the output's element size),
* ``p`` -- bytes of one row pointer (``ptr_bytes``, 8),
* ``nnzA`` -- entries of ``A[r0:r1, k0:k1]``,
* ``u``, ``nnzB`` -- distinct rows of ``B`` touched by those entries, and their
  entries inside the column window (``B``'s rows touched),
* ``nnzC`` -- structural nonzeros of the output tile,

the working set is::

    WS = acc(cw, kw)                      # accumulator workspace
       + (r + 1) * p + nnzA * e           # A operand tile (CSR)
       + (u + 1) * p + nnzB * e           # B rows touched (CSR)
       + (r + 1) * p + nnzC * e           # output tile (CSR)

    acc(cw, kw) = cw * (value_bytes + 8)  # dense accumulator: one value + one int64 stamp per column
                + kw * 8                  # one int64 first-touch stamp per contracted id

Everything but ``acc`` and the three leading pointers grows row by row, so the
working set of a prefix of a tile's rows is a running sum -- what the Tailors executor
checks row by row. If the operands were dense (``conservative`` sizing):
``nnzA = r*kw``, ``u = kw``, ``nnzB = kw*cw``, ``nnzC = r*cw``.

All functions here are O(1) arithmetic on Python ints (or vectorised over NumPy count
arrays).

>>> bm = ByteModel(value_bytes=8, index_bytes=4)
>>> tile_bytes(bm, rows=2, cw=3, kw=3, nnz_a=2, b_rows=2, nnz_b=2, nnz_c=2)  # a 2-row diagonal tile
216
>>> dense_tile_bytes(bm, rows=2, cw=3, kw=3)
404
>>> minimum_limit(bm)
108
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexsparse import _limits

__all__ = ["ByteModel", "SMALL_BYTES", "accounted_limit", "accumulator_bytes", "dense_tile_bytes",
           "fixed_bytes", "minimum_limit", "row_bytes", "tile_bytes"]

#: Bookkeeping allocations are checked against ``max(limit, SMALL_BYTES)`` (see
#: :data:`flexsparse._limits.SMALL_BYTES`); tile working sets always fit the limit itself.
SMALL_BYTES = _limits.SMALL_BYTES


@dataclass(frozen=True)
class ByteModel:
    """Byte sizes the working-set formula uses.

    Attributes:
        value_bytes: itemsize of the output values.
        index_bytes: itemsize of the output column indices.
        ptr_bytes: itemsize of one row pointer (int64: 8).
    """

    value_bytes: int
    index_bytes: int
    ptr_bytes: int = 8

    def __post_init__(self) -> None:
        for name in ("value_bytes", "index_bytes", "ptr_bytes"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"ByteModel.{name} must be a positive int, got {v!r}")

    @property
    def elem(self) -> int:
        """Bytes of one stored entry (value + column index): ``e``."""
        return int(self.value_bytes + self.index_bytes)

    @classmethod
    def for_output(cls, dtype: np.dtype, index_dtype: np.dtype) -> ByteModel:
        """The model for an output of value dtype ``dtype`` and index dtype ``index_dtype``."""
        return cls(int(np.dtype(dtype).itemsize), int(np.dtype(index_dtype).itemsize))


def accumulator_bytes(bm: ByteModel, cw: int, kw: int) -> int:
    """``acc(cw, kw) = cw * (value_bytes + 8) + kw * 8`` (ints or broadcasting arrays)."""
    return cw * (bm.value_bytes + 8) + kw * 8


def fixed_bytes(bm: ByteModel, cw: int, kw: int) -> int:
    """Row-independent part of a tile's working set: ``acc(cw, kw) + 3 * p``."""
    return accumulator_bytes(bm, cw, kw) + 3 * bm.ptr_bytes


def row_bytes(bm: ByteModel, nnz_a, b_rows, nnz_b, nnz_c):
    """Bytes one row adds: ``2p + (nnzA + nnzB + nnzC) * e + u_new * p`` (arrays broadcast)."""
    return 2 * bm.ptr_bytes + (nnz_a + nnz_b + nnz_c) * bm.elem + b_rows * bm.ptr_bytes


def tile_bytes(bm: ByteModel, rows: int, cw: int, kw: int, nnz_a, b_rows, nnz_b, nnz_c):
    """The working set ``WS`` of a tile from its counts (see the module docstring)."""
    return (fixed_bytes(bm, cw, kw) + 2 * bm.ptr_bytes * rows
            + (nnz_a + nnz_b + nnz_c) * bm.elem + b_rows * bm.ptr_bytes)


def dense_tile_bytes(bm: ByteModel, rows: int, cw: int, kw: int) -> int:
    """``WS`` of a ``rows x kw x cw`` tile if both operands were dense (no zeros)."""
    return int(tile_bytes(bm, rows, cw, kw, nnz_a=rows * kw, b_rows=kw, nnz_b=kw * cw,
                          nnz_c=rows * cw))


def accounted_limit(limit: int) -> int:
    """The budget bookkeeping allocations are checked against: ``max(limit, SMALL_BYTES)``."""
    return max(int(limit), SMALL_BYTES)


def minimum_limit(bm: ByteModel) -> int:
    """Smallest workable limit: a 1-row x 1-id x 1-column tile of a dense product.

    Any product can be computed under this limit (the executor splits a row that does not
    fit down to single columns and single contracted ids), so a smaller limit is an error.
    """
    return dense_tile_bytes(bm, 1, 1, 1)
