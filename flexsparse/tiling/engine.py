"""The one adapter between the tiler and the rest of flexsparse (operands, results, reference).

* :func:`as_operand` accepts any 2-D flexsparse format (:class:`~flexsparse.formats.csr.CSR`
  as is; CSC, COO, CSF, structured converted, O(nnz)) or any SciPy sparse matrix/array
  (through :meth:`CSR.from_scipy`): every operand is the package's one CSR type.
* :func:`make_result` builds the output in the caller's family: a flexsparse ``CSR``
  when an operand was one, else a SciPy ``csr_array``/``csr_matrix``.
* :func:`reference_spgemm` is the *untiled* product (the flexsparse engine
  :func:`flexsparse.kernels.cpu.spgemm.spgemm`), used by the benchmarks and tests as the
  unbounded run.

The tiled executor itself computes with the capacity-bounded kernel of
:mod:`flexsparse.tiling.kernels`, because Tailors needs a kernel that stops when its
buffer is full; no other module of the tiler touches another package's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsparse._util import check_numeric_dtype
from flexsparse.formats.base import SparseArray
from flexsparse.formats.csr import CSC, CSR

__all__ = ["Operand", "as_operand", "make_result", "reference_spgemm"]


@dataclass(frozen=True)
class Operand:
    """One operand of the tiler: its :class:`CSR` and the family its result is returned in."""

    csr: CSR
    family: str  # "flexsparse" | "scipy-array" | "scipy-matrix"

    indptr = property(lambda self: self.csr.indptr)
    indices = property(lambda self: self.csr.indices)
    data = property(lambda self: self.csr.data)
    shape = property(lambda self: self.csr.shape)
    nnz = property(lambda self: self.csr.nnz)


def _is_scipy(x: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # scipy is a hard dependency; keep the message useful anyway
        return False
    return sp.issparse(x)


def as_operand(x: Any, name: str) -> Operand:
    """``x`` (a 2-D flexsparse format or SciPy sparse) as a :class:`CSR`; ``name`` is for errors."""
    if _is_scipy(x):
        import scipy.sparse as sp
        if len(x.shape) != 2:
            raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
        check_numeric_dtype(x.dtype, name)
        family = "scipy-array" if isinstance(x, sp.sparray) else "scipy-matrix"
        return Operand(CSR.from_scipy(x), family)
    if isinstance(x, SparseArray):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
        csr = x if isinstance(x, CSR) else x.tocsr() if isinstance(x, CSC) else CSR.from_coo(x.to_coo())
        return Operand(csr, "flexsparse")
    raise TypeError(f"{name} must be a 2-D flexsparse format (CSR, CSC, COO, ...) or a SciPy sparse "
                    f"matrix, got {type(x).__name__}")


def make_result(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                shape: tuple[int, int], family: str) -> Any:
    """The product in the caller's family; ``indices`` must be sorted within rows."""
    if family == "flexsparse":
        return CSR(indptr, indices, data, shape)
    import scipy.sparse as sp
    cls = sp.csr_array if family == "scipy-array" else sp.csr_matrix
    out = cls((data, indices, indptr), shape=shape)
    out.has_sorted_indices = True
    return out


def reference_spgemm(a: Any, b: Any, threads: int | None = None) -> Any:
    """Untiled ``a @ b`` (a :class:`CSR`) with the flexsparse engine on ``threads`` threads."""
    from flexsparse.kernels.cpu.spgemm import spgemm

    return spgemm(as_operand(a, "a").csr, as_operand(b, "b").csr, threads=threads)
