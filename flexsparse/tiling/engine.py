"""The one adapter between the tiler and the rest of flexsparse (operands, results, reference).

* :func:`as_operand` accepts a :class:`flexsparse.formats.csr.CSR` or any SciPy
  sparse matrix/array (converted to CSR, O(nnz)) and exposes its raw buffers.
* :func:`make_result` builds the output in the caller's family: a flexsparse ``CSR``
  when an operand was one, else a SciPy ``csr_array``/``csr_matrix``.
* :func:`reference_spgemm` is the *untiled* product (the flexsparse engine
  :func:`flexsparse.kernels.cpu.spgemm.spgemm` when importable, else SciPy), used by the
  benchmarks and tests as the unbounded run.

The tiled executor itself computes with the capacity-bounded kernel of
:mod:`flexsparse.tiling.kernels`, because Tailors needs a kernel that stops when its
buffer is full; no other module of the tiler touches another package's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsparse._util import check_numeric_dtype

__all__ = ["Operand", "as_operand", "make_result", "reference_spgemm"]


@dataclass(frozen=True)
class Operand:
    """Raw CSR buffers of one operand: ``indptr [n+1]``, ``indices [nnz]``, ``data [nnz]``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]
    family: str  # "flexsparse" | "scipy-array" | "scipy-matrix"

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1]) if self.indptr.size else 0


def _is_scipy(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # scipy is a hard dependency; keep the message useful anyway
        return False
    return sp.issparse(x)


def as_operand(x: Any, name: str) -> Operand:
    """Raw CSR buffers of ``x`` (flexsparse ``CSR`` or SciPy sparse); ``name`` is for errors."""
    if _is_scipy(x):
        import scipy.sparse as sp
        if len(x.shape) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
        m = x.tocsr()
        check_numeric_dtype(m.dtype, name)
        family = "scipy-array" if isinstance(x, sp.sparray) else "scipy-matrix"
        return Operand(m.indptr.astype(np.int64, copy=False), m.indices, m.data,
                       (int(m.shape[0]), int(m.shape[1])), family)
    if all(hasattr(x, f) for f in ("indptr", "indices", "data", "shape")):
        shape = tuple(int(s) for s in x.shape)
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {shape}")
        indptr = np.asarray(x.indptr)
        if indptr.shape != (shape[0] + 1,):
            raise ValueError(f"{name}.indptr has shape {indptr.shape}, expected ({shape[0] + 1},)")
        data = np.asarray(x.data)
        check_numeric_dtype(data.dtype, name)
        return Operand(indptr.astype(np.int64, copy=False), np.asarray(x.indices), data,
                       (shape[0], shape[1]), "flexsparse")
    raise TypeError(f"{name} must be a flexsparse CSR or a SciPy sparse matrix, "
                    f"got {type(x).__name__}")


def make_result(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                shape: tuple[int, int], family: str) -> Any:
    """The product in the caller's family; ``indices`` must be sorted within rows."""
    if family == "flexsparse":
        from flexsparse.formats.csr import CSR
        return CSR(indptr, indices, data, shape)
    import scipy.sparse as sp
    cls = sp.csr_array if family == "scipy-array" else sp.csr_matrix
    out = cls((data, indices, indptr), shape=shape)
    out.has_sorted_indices = True
    return out


def reference_spgemm(a: Any, b: Any, threads: int | None = None) -> Any:
    """Untiled ``a @ b`` with the flexsparse engine when available, else SciPy.

    ``threads`` is passed to the engine (SciPy is single-threaded anyway).
    """
    try:
        from flexsparse.formats.csr import CSR
        from flexsparse.kernels.cpu.spgemm import spgemm
    except ImportError:
        spgemm = None
    if spgemm is not None:
        ca = a if isinstance(a, CSR) else CSR.from_scipy(a)
        cb = b if isinstance(b, CSR) else CSR.from_scipy(b)
        return spgemm(ca, cb, threads=threads)
    sa = a if _is_scipy(a) else a.to_scipy()
    sb = b if _is_scipy(b) else b.to_scipy()
    return sa.tocsr() @ sb.tocsr()
