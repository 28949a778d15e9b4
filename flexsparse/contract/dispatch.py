"""Operator dispatch: what ``a + b``, ``a - b``, ``a * b`` and ``a @ b`` run for every format.

Every :class:`~flexsparse.formats.base.SparseArray` operator calls :func:`apply_operator`
(installed into :mod:`flexsparse.formats.base` by :func:`~flexsparse.formats.base.register_dispatch`
when this module is imported, which ``import flexsparse`` does). The formats therefore never
import the contraction engine; the dependency runs one way, ``contract -> formats``.

Rules (first match wins):

* ``@`` with a structured operand (:class:`~flexsparse.formats.block.BlockSparse`,
  :class:`~flexsparse.formats.nm.NM`, :class:`~flexsparse.formats.hss.HSS`) and a dense 1-D or
  2-D operand (NumPy array, list, torch tensor): the structured product of the class --
  ``W @ X`` is ``W.matmul(X)``, ``X @ W`` is ``W.linear_grad_input(X)`` -- on the CPU numba
  kernels, or on Triton (:mod:`flexsparse.gpu`) when the tensor lives on a CUDA device
  (:func:`~flexsparse.contract.execute.structured_backend`); a torch tensor in gives a torch
  tensor out on the same device.
* every other ``@``: :func:`flexsparse.matmul` (the einsum engine, which applies the per-step
  format rule of :mod:`flexsparse.contract.plan`: structured x dense steps on the structured
  kernels, every other combination through COO).
* ``+``, ``-``, ``*`` (element-wise): both operands as COO (:mod:`flexsparse.formats._elementwise`);
  a sparse result keeps the left operand's format when that format can hold any pattern
  (COO, CSF, CSR, CSC), and is a COO otherwise (structured formats); a dense right operand
  gives what ``_elementwise`` gives (dense for ``+``, COO for ``*``). Scalar ``*``, ``/``,
  unary ``-`` and ``abs`` keep every format (they are value maps, see
  :class:`~flexsparse.formats.base.SparseArray`).

Cost: one ``to_coo`` per non-COO operand (O(nnz)) plus the operation's own cost.

>>> import numpy as np, flexsparse as fs
>>> a = fs.COO.from_numpy(np.eye(2))
>>> type(a.asformat("csr") + a).__name__, type(fs.prune(np.ones((2, 2)), "1:2") + a.asformat("csr")).__name__
('CSR', 'COO')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flexsparse.contract import execute
from flexsparse.formats import _elementwise
from flexsparse.formats.base import SparseArray, register_dispatch
from flexsparse.formats.block import StructuredMatrix
from flexsparse.formats.coo import register_array_function

__all__ = ["apply_operator"]

_OPS = ("add", "sub", "mul", "matmul", "rmatmul")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _dense_like(x: Any) -> bool:
    """A dense operand a structured product takes: ndarray, list/tuple, NumPy scalar, torch tensor."""
    if _is_torch(x):
        return str(getattr(x, "layout", "")) == "torch.strided"
    return isinstance(x, (np.ndarray, list, tuple))


def _torch_structured(W: StructuredMatrix, t: Any, right: bool) -> Any:
    """``W @ t`` (``right``) or ``t @ W`` for a torch tensor ``t``: Triton on CUDA, else numba."""
    import torch

    vec = t.dim() == 1
    if execute.structured_backend(t) == "triton":
        from flexsparse import gpu

        x = t.reshape(-1, 1) if vec and right else t.reshape(1, -1) if vec else t
        out = gpu.matmul(W, x) if right else gpu.linear_grad_input(W, x)
    else:
        arr = t.detach().cpu().numpy()
        x = arr.reshape(-1, 1) if vec and right else arr.reshape(1, -1) if vec else arr
        out = W.matmul(x) if right else W.linear_grad_input(x)
        out = torch.from_numpy(np.ascontiguousarray(out)).to(t.device)
    return out.reshape(-1) if vec else out


def _structured_matmul(W: StructuredMatrix, x: Any, right: bool) -> Any:
    """``W @ x`` (``right``) or ``x @ W`` for a dense 1-D/2-D ``x``; ``NotImplemented`` otherwise."""
    if _is_torch(x):
        if x.dim() not in (1, 2):
            return None
        return _torch_structured(W, x, right)
    arr = np.asarray(x)
    if arr.ndim == 1:
        return W.matmul(arr[:, None])[:, 0] if right else W.linear_grad_input(arr[None, :])[0]
    if arr.ndim == 2:
        return W.matmul(arr) if right else W.linear_grad_input(arr)
    return None


def _matmul(a: Any, b: Any) -> Any:
    if isinstance(a, StructuredMatrix) and _dense_like(b):
        out = _structured_matmul(a, b, right=True)
        if out is not None:
            return out
    if isinstance(b, StructuredMatrix) and _dense_like(a):
        out = _structured_matmul(b, a, right=False)
        if out is not None:
            return out
    return execute.matmul(a, b)


def _elementwise_op(op: str, a: SparseArray, b: Any) -> Any:
    if isinstance(b, SparseArray):
        other: Any = b.to_coo()
    elif isinstance(b, (np.ndarray, np.number, np.bool_, int, float, complex, bool)):
        other = b
    else:
        return NotImplemented  # lets Python try b's reflected operator
    x = a.to_coo()
    if op == "sub":
        other = -other if isinstance(other, SparseArray) else np.negative(other)
    res = _elementwise.multiply(x, other) if op == "mul" else _elementwise.add(x, other)
    if isinstance(res, SparseArray):
        return a._like(res)
    return res


def apply_operator(op: str, a: SparseArray, b: Any) -> Any:
    """Run operator ``op`` (``"add"``, ``"sub"``, ``"mul"``, ``"matmul"``, ``"rmatmul"``) with the
    format ``a`` on the left (``"rmatmul"``: ``b @ a``); see the module docstring for the rules."""
    if op == "matmul":
        return _matmul(a, b)
    if op == "rmatmul":
        return _matmul(b, a)
    if op in ("add", "sub", "mul"):
        return _elementwise_op(op, a, b)
    raise ValueError(f"unknown operator {op!r}; valid operators: {', '.join(_OPS)}")


register_dispatch(apply_operator)


def _np_tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    return execute.tensordot(a, b, axes=axes, format="coo")


def _np_einsum(*operands: Any, **kwargs: Any) -> Any:
    kwargs.pop("optimize", None)   # NumPy's path options; the planner chooses its own path
    return execute.einsum(*operands, **kwargs)


# np.tensordot / np.einsum on COO (what dask.array calls on COO chunks) run the sparse engine
register_array_function(np.tensordot, _np_tensordot)
register_array_function(np.einsum, _np_einsum)
