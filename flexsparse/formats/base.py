"""SparseArray: the one base class of every flexsparse format.

Every format -- :class:`~flexsparse.formats.coo.COO` and :class:`~flexsparse.formats.fiber.CSF`
(any order), :class:`~flexsparse.formats.csr.CSR` and :class:`~flexsparse.formats.csr.CSC`
(2-D), and the structured :class:`~flexsparse.formats.block.BlockSparse`,
:class:`~flexsparse.formats.nm.NM` and :class:`~flexsparse.formats.hss.HSS` (2-D) -- derives
from :class:`SparseArray`, which gives them one vocabulary:

* properties ``shape``, ``ndim``, ``dtype``, ``nnz``, ``size``, ``density``, ``nbytes``;
* ``todense()``, ``__array__`` (so ``np.asarray(x)`` works, size-guarded), ``astype``,
  ``T``/``transpose``, ``__repr__``;
* conversions ``to_coo()`` / ``Format.from_coo(coo)``, ``asformat(name)`` through the
  registry :data:`FORMATS`, ``to_scipy()`` for 2-D formats;
* the arithmetic and matrix-product operators, all delegated to ONE dispatch function
  (:mod:`flexsparse.contract.dispatch` installs it with :func:`register_dispatch`; ``formats``
  never imports the contraction engine, so the dependency runs one way: contract -> formats).

A subclass sets ``format`` (its registry name) and implements ``shape`` (attribute),
``dtype``, ``nnz``, ``nbytes``, ``validate``, ``todense``, ``to_coo`` and ``from_coo``; it may
override ``_with_data`` (same structure, new values: makes ``-x``, ``abs(x)``, ``2 * x`` and
``astype`` keep the format) and ``transpose`` (default: through COO).

Cost: the shared methods cost what the subclass's ``to_coo``/``todense`` cost (O(nnz) /
O(prod(shape))); nothing here loops over entries in Python.

>>> import numpy as np
>>> from flexsparse.formats.coo import COO
>>> x = COO.from_numpy(np.array([[0.0, 2.0], [3.0, 0.0]]))
>>> isinstance(x, SparseArray), x.ndim, x.density
(True, 2, 0.5)
>>> x.asformat("csr")
<CSR shape=(2, 2) nnz=2 density=50% dtype=float64>
>>> (2 * x).todense().tolist()
[[0.0, 4.0], [6.0, 0.0]]
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from flexsparse import _limits

__all__ = ["FORMATS", "DenseTooLargeError", "SparseArray", "dense_bytes_check", "format_class",
           "register_dispatch"]

#: Registry of format classes by name (``"coo"``, ``"csf"``, ``"csr"``, ``"csc"``, ``"block"``,
#: ``"nm"``, ``"hss"``); filled by :meth:`SparseArray.__init_subclass__` as the modules load
#: (:func:`format_class` loads the module of a shipped format on first use).
FORMATS: dict[str, type[SparseArray]] = {}
_SHIPPED = {"coo": "coo", "csf": "fiber", "csr": "csr", "csc": "csr", "block": "block", "nm": "nm",
            "hss": "hss"}

_dispatch: Callable[[str, Any, Any], Any] | None = None


def register_dispatch(fn: Callable[[str, Any, Any], Any]) -> None:
    """Install ``fn(op, a, b)``, the implementation of every binary operator of every format.

    ``op`` is one of ``"add"``, ``"sub"``, ``"mul"``, ``"truediv"``, ``"matmul"``; ``a`` is the
    left operand. :mod:`flexsparse.contract.dispatch` calls this when it is imported, which
    ``import flexsparse`` always does.
    """
    global _dispatch
    _dispatch = fn


class DenseTooLargeError(ValueError, MemoryError):
    """Raised instead of allocating an absurdly large dense array (a ValueError and a MemoryError)."""


def dense_bytes_check(shape: tuple[int, ...], dtype: Any, max_bytes: int | None) -> None:
    """Raise :class:`DenseTooLargeError` if a dense ``shape`` array of ``dtype`` exceeds
    ``max_bytes`` (default :data:`flexsparse._limits.TODENSE_MAX_BYTES`)."""
    limit = _limits.TODENSE_MAX_BYTES if max_bytes is None else int(max_bytes)
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > limit:
        raise DenseTooLargeError(
            f"refusing to densify a tensor of shape {tuple(shape)} and dtype {np.dtype(dtype)}: "
            f"it would take {size:.3e} bytes (limit {limit:.3e}; pass max_bytes= to raise it)")


def format_class(name: str) -> type[SparseArray]:
    """The format class registered as ``name``; raises ValueError listing the valid names."""
    if name not in FORMATS and name in _SHIPPED:
        importlib.import_module(f"flexsparse.formats.{_SHIPPED[name]}")
    cls = FORMATS.get(name)
    if cls is None:
        raise ValueError(f"unknown format {name!r}; valid formats: {', '.join(sorted(set(FORMATS) | set(_SHIPPED)))}")
    return cls


def is_identity_2d(axes) -> bool:
    """For a 2-D transpose: ``True`` for ``(0, 1)``, ``False`` for ``None`` or ``(1, 0)``; else ValueError."""
    if axes is None:
        return False
    norm = tuple(int(a) for a in axes)
    if len(norm) != 2 or any(not -2 <= a < 2 for a in norm) or sorted(a % 2 for a in norm) != [0, 1]:
        raise ValueError(f"axes {tuple(axes)} is not a permutation of the 2 modes of a matrix")
    return norm[0] % 2 == 0


def _binary(op: str, a: Any, b: Any) -> Any:
    if _dispatch is None:  # only reachable if flexsparse/__init__.py was bypassed
        raise RuntimeError("flexsparse operators are not installed; import flexsparse first")
    return _dispatch(op, a, b)


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (numbers.Number, np.number, np.bool_)) or (
        isinstance(x, np.ndarray) and x.ndim == 0)


class SparseArray:
    """Base of every flexsparse sparse format; see the module docstring for the contract."""

    #: registry name of the format (``FORMATS[format] is type(self)``)
    format: ClassVar[str] = ""
    #: formats whose layout holds any sparsity pattern of their shape (results of arithmetic
    #: keep such a format); structured formats hold only their pattern and give COO results
    general: ClassVar[bool] = True
    #: makes ``ndarray <op> x`` defer to ``x.__r<op>__`` (NumPy compares priorities)
    __array_priority__ = 20.0
    shape: tuple[int, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("format")
        if name:
            FORMATS[name] = cls

    # ------------------------------------------------------------------ required
    @property
    def dtype(self) -> np.dtype:
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        """Stored entries inside the logical shape (explicit zeros included)."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes of values plus index metadata."""
        raise NotImplementedError

    def validate(self) -> None:
        """Enforce the format's layout formula; raise ValueError/TypeError naming the problem."""
        raise NotImplementedError

    def todense(self, max_bytes: int | None = None) -> np.ndarray:
        """Dense NumPy array of the logical shape (size-guarded: see :meth:`COO.todense`)."""
        raise NotImplementedError

    def to_coo(self):
        """The same tensor as a :class:`~flexsparse.formats.coo.COO`."""
        raise NotImplementedError

    @classmethod
    def from_coo(cls, coo, **options: Any) -> SparseArray:
        """Build this format from a :class:`~flexsparse.formats.coo.COO` (format options as keywords)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared properties
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Cells of the dense index space (a Python int; may exceed 2**63)."""
        return math.prod(self.shape)

    @property
    def density(self) -> float:
        """``nnz / prod(shape)`` (0.0 for an empty index space)."""
        size = self.size
        return self.nnz / size if size else 0.0

    @property
    def T(self) -> SparseArray:
        return self.transpose()

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def _repr_extra(self) -> str:
        """Format-specific fields appended to the repr (e.g. ``block=(4, 4)``)."""
        return ""

    def __repr__(self) -> str:
        extra = self._repr_extra()
        return (f"<{type(self).__name__} shape={self.shape} nnz={self.nnz} "
                f"density={100 * self.density:.3g}% dtype={self.dtype}{' ' + extra if extra else ''}>")

    # ------------------------------------------------------------------ shared conversions
    def __array__(self, dtype=None, copy=None):
        # size-guarded through todense(): huge tensors raise instead of densifying silently
        out = self.todense()
        return out if dtype is None else out.astype(dtype, copy=False)

    def asformat(self, format: str, **options: Any) -> SparseArray:
        """This tensor in the registered format ``format`` (``options`` go to its ``from_coo``).

        >>> from flexsparse.formats.coo import COO
        >>> COO.empty((2, 2)).asformat("dia")
        Traceback (most recent call last):
        ...
        ValueError: unknown format 'dia'; valid formats: block, coo, csc, csf, csr, hss, nm
        """
        cls = format_class(format)
        if type(self) is cls and not options:
            return self
        return cls.from_coo(self.to_coo(), **options)

    def to_scipy(self, format: str = "csr"):
        """SciPy sparse array (2-D formats; ``format`` as in :func:`flexsparse.to_scipy`)."""
        from flexsparse.formats.convert import to_scipy

        return to_scipy(self.to_coo(), format)

    def _with_data(self, data: np.ndarray) -> SparseArray:
        """Same structure holding ``data`` (values in storage order). Default: through COO."""
        coo = self.to_coo()
        return self._like(coo._new(coo.coords, data, canonical=coo.canonical))

    def _data(self) -> np.ndarray:
        """Stored values in storage order (what :meth:`_with_data` replaces)."""
        return self.to_coo().data

    def _like(self, coo) -> SparseArray:
        """``coo`` in this tensor's format when the format can hold it, else ``coo`` itself."""
        if not self.general or type(self) is type(coo):
            return coo
        return type(self).from_coo(coo)

    def astype(self, dtype, copy: bool = True) -> SparseArray:
        """Values cast to ``dtype`` (same format; structured formats accept float32/float64 only)."""
        from flexsparse._util import check_numeric_dtype

        dtype = check_numeric_dtype(dtype, "astype target")
        if dtype == self.dtype and not copy:
            return self
        return self._with_data(self._data().astype(dtype))

    def transpose(self, axes=None) -> SparseArray:
        """Permute the modes (default: reverse them); the format is kept where its layout allows."""
        return self._like(self.to_coo().transpose(axes))

    def conj(self) -> SparseArray:
        return self._map_values(np.conj)

    # ------------------------------------------------------------------ operators
    def __neg__(self) -> SparseArray:
        return self._map_values(np.negative)

    def __pos__(self) -> SparseArray:
        return self

    def __abs__(self) -> SparseArray:
        return self._map_values(np.abs)

    def __add__(self, other):
        return _binary("add", self, other)

    def __radd__(self, other):
        return _binary("add", self, other)  # addition commutes

    def __sub__(self, other):
        return _binary("sub", self, other)

    def __rsub__(self, other):
        return _binary("add", -self, other)

    def __mul__(self, other):
        if _is_scalar(other):
            return self._scaled(other)
        return _binary("mul", self, other)

    def __rmul__(self, other):
        if _is_scalar(other):
            return self._scaled(other)
        return _binary("mul", self, other)  # the element-wise product commutes

    def __truediv__(self, other):
        if _is_scalar(other) and not isinstance(other, SparseArray):
            return self._map_values(lambda v: v / other)
        raise TypeError("a sparse tensor can only be divided by a scalar "
                        f"(dividing by {type(other).__name__} would fill the zeros with nan/inf)")

    def __matmul__(self, other):
        return _binary("matmul", self, other)

    def __rmatmul__(self, other):
        return _binary("rmatmul", self, other)

    def _scaled(self, scalar) -> SparseArray:
        return self._map_values(lambda v: v * scalar)

    def _map_values(self, fn: Callable[[np.ndarray], np.ndarray]) -> SparseArray:
        """``fn`` applied to the stored values; a COO when the format cannot hold the result's
        dtype (a structured format asked to hold complex values)."""
        try:
            return self._with_data(fn(self._data()))
        except TypeError:
            coo = self.to_coo()
            return coo._with_data(fn(coo.data))
