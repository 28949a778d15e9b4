"""Autograd for structured-sparse linear layers: ``Y = X @ W.T + b`` with W block/N:M/HSS.

The weight's structure (which blocks / which slots are kept) is fixed; only its kept
``values`` are a differentiable tensor. Forward and backward:

- forward ``Y = X @ W.T (+ b)`` -- ``W.linear`` (the bias is added by the kernel's final copy);
- input gradient ``dX = dY @ W`` -- ``W.linear_grad_input`` (the sparse transpose product);
- values gradient ``dV[slot(m, k)] = sum_b dY[b, m] * X[b, k]`` on kept slots only --
  ``W.sampled_grad`` (a sampled dense-dense product; the pruned positions get no gradient,
  so the structure never changes during training);
- bias gradient ``db = sum_b dY[b, :]``.

Each costs ``O(nnz * B)`` for a batch of ``B`` rows (``nnz`` = kept slots), against
``O(M * K * B)`` dense. Inputs may carry any leading batch dims (``[..., K]``), like
``nn.Linear``.

Backends (registered by name, see :data:`BACKENDS`):

- ``"numba"``: CPU tensors; runs the format's NumPy/numba methods on ``.detach().numpy()``
  views (float32/float64; float16/bfloat16 are computed in float32 and cast back);
- ``"triton"``: the Triton kernels of :mod:`flexsparse.gpu` (CUDA tensors; CPU tensors only
  under ``TRITON_INTERPRET=1``). Tested here under the interpreter only -- the CUDA
  launches are untested in this project's CI;
- ``"auto"``: ``"triton"`` for CUDA tensors, ``"numba"`` otherwise.

>>> import numpy as np, torch
>>> from flexsparse.formats.nm import NM
>>> W = NM.from_dense(np.array([[1., 0., 0., 2.], [0., 3., 4., 0.]]), 2, 4)
>>> values = torch.tensor(W.values, requires_grad=True)
>>> x = torch.tensor([[1., 1., 1., 1.]], dtype=torch.float64)
>>> y = sparse_linear(x, W, values)
>>> y.detach()
tensor([[3., 7.]], dtype=torch.float64)
>>> y.sum().backward(); values.grad.reshape(-1).tolist()
[1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

__all__ = ["BACKENDS", "StructuredLinearFunction", "padding_mask", "sparse_linear", "resolve_backend"]

#: Names accepted by ``backend=``.
BACKENDS = ("auto", "numba", "triton")

_NUMPY_DTYPES = (torch.float32, torch.float64)


def resolve_backend(name: str, device: Any) -> str:
    """Map ``"auto"`` to ``"triton"`` (CUDA) or ``"numba"`` (CPU); validate the name.

    >>> resolve_backend("auto", torch.device("cpu"))
    'numba'
    >>> resolve_backend("cuda-magic", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'cuda-magic'; valid backends: auto, numba, triton
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    if name == "auto":
        return "triton" if torch.device(device).type == "cuda" else "numba"
    if name == "numba" and torch.device(device).type != "cpu":
        raise ValueError(f"backend 'numba' runs on CPU tensors; got a tensor on {device}")
    return name


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy view (or float32 copy for half types) of a CPU tensor; any strides."""
    t = t.detach()
    if t.dtype not in _NUMPY_DTYPES:
        t = t.to(torch.float32)
    return t.resolve_conj().resolve_neg().numpy()


def padding_mask(weight: Any) -> np.ndarray | None:
    """Bool array shaped like ``weight.values``: slots lying outside the logical shape.

    The formats store whole blocks/groups and require those slots to hold 0; they are no
    part of the matrix, so the numba path zeroes them (gradcheck perturbs them, and their
    gradient is 0 either way). ``None`` when there is no padding. Cached on the weight.
    """
    cached = getattr(weight, "_flexsparse_padding_mask", False)
    if cached is not False:
        return cached
    M, K = (int(s) for s in weight.shape)
    if hasattr(weight, "columns"):  # HSS / N:M
        mask = (weight.columns() >= K).reshape(weight.values.shape)
    else:  # BlockSparse
        r, c = weight.block
        rows = np.asarray(weight.block_rows, dtype=np.int64)[:, None] * r + np.arange(r)
        cols = np.asarray(weight.indices, dtype=np.int64)[:, None] * c + np.arange(c)
        mask = (rows >= M)[:, :, None] | (cols >= K)[:, None, :]
    mask = mask if mask.any() else None
    weight._flexsparse_padding_mask = mask
    return mask


class _NumbaOps:
    """CPU: the format's own methods (numba kernels, or cached dense BLAS above its crossover)."""

    def __init__(self, weight: Any, values: torch.Tensor):
        v = _to_numpy(values)
        pad = padding_mask(weight)
        if pad is not None and np.any(v[pad] != 0):
            v = np.where(pad, 0, v)
        same = (v.dtype == weight.values.dtype and v.shape == weight.values.shape
                and v.strides == weight.values.strides
                and v.__array_interface__["data"][0] == weight.values.__array_interface__["data"][0])
        # ``weight`` already wraps these very values (SparseLinear's cache): skip re-validation
        if same:
            self.W = weight
        else:
            self.W = weight.with_values(v)
            self.W.backend = weight.backend  # keep the caller's sparse/dense dispatch

    def linear(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        b = None if bias is None else _to_numpy(bias)
        return torch.from_numpy(np.ascontiguousarray(self.W.linear(_to_numpy(x2), b)))

    def grad_input(self, dy: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.W.linear_grad_input(_to_numpy(dy))))

    def grad_values(self, dy: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.W.sampled_grad(_to_numpy(dy), _to_numpy(x2))))


class _TritonOps:
    """GPU (or the Triton interpreter): :mod:`flexsparse.gpu`."""

    def __init__(self, weight: Any, values: torch.Tensor, structure: Any):
        import flexsparse.gpu as gpu

        self.gpu, self.W = gpu, weight
        self.values = values.detach()
        self.structure = structure if structure is not None else gpu.DeviceStructure.from_weight(
            weight, values.device)

    def linear(self, x2, bias):
        y = self.gpu.linear(self.W, x2, values=self.values, structure=self.structure)
        return y if bias is None else y + bias

    def grad_input(self, dy):
        return self.gpu.linear_grad_input(self.W, dy, values=self.values, structure=self.structure)

    def grad_values(self, dy, x2):
        return self.gpu.sampled_grad(self.W, dy, x2, structure=self.structure)


class StructuredLinearFunction(torch.autograd.Function):
    """``Y = X @ W.T + b`` for a 2-D ``X: [B, K]``; see the module docstring for the gradients.

    ``apply(x2, values, bias, weight, backend, structure)``: ``weight`` is the structured
    matrix (its structure is used; its values are replaced by ``values``), ``backend`` a
    resolved name (``"numba"`` or ``"triton"``), ``structure`` an optional cached
    :class:`flexsparse.gpu.DeviceStructure` for the Triton backend.
    """

    @staticmethod
    def forward(ctx, x2, values, bias, weight, backend, structure):
        if backend == "numba":
            ops = _NumbaOps(weight, values)
        else:
            ops = _TritonOps(weight, values, structure)
        y = ops.linear(x2, bias).to(device=x2.device, dtype=x2.dtype)  # bias added inside
        ctx.ops = ops
        ctx.has_bias = bias is not None
        ctx.values_dtype = values.dtype
        ctx.save_for_backward(x2)
        return y

    @staticmethod
    def backward(ctx, dy):
        (x2,) = ctx.saved_tensors
        ops = ctx.ops
        grad_x = grad_v = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = ops.grad_input(dy).to(device=dy.device, dtype=x2.dtype)
        if ctx.needs_input_grad[1]:
            grad_v = ops.grad_values(dy, x2).to(device=dy.device, dtype=ctx.values_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = dy.sum(0)
        return grad_x, grad_v, grad_b, None, None, None


def sparse_linear(input: torch.Tensor, weight: Any, values: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, *, backend: str = "auto",
                  structure: Any = None) -> torch.Tensor:
    """``input @ W.T + bias`` with a structured weight, differentiable in input, values, bias.

    Args:
        input: ``[..., K]`` tensor (float32/float64; half types on CPU compute in float32).
        weight: :class:`~flexsparse.formats.block.BlockSparse`, ``NM`` or ``HSS`` of shape ``(M, K)``.
        values: tensor shaped like ``weight.values`` (the trainable kept values); default: a
            constant tensor made from ``weight.values``.
        bias: optional ``[M]`` tensor.
        backend: ``"auto"``, ``"numba"`` or ``"triton"`` (see :data:`BACKENDS`).
        structure: optional cached :class:`flexsparse.gpu.DeviceStructure` (Triton backend).

    Returns:
        ``[..., M]`` tensor.

    Raises:
        ValueError: wrong input width, values or bias shape, unknown backend.
        TypeError: input and values dtypes differ, or weight is not a structured matrix.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    shape = getattr(weight, "shape", None)
    if shape is None or not hasattr(weight, "with_values"):
        raise TypeError(f"weight must be a BlockSparse, NM or HSS matrix, got {type(weight).__name__}")
    M, K = (int(s) for s in shape)
    if input.dim() == 0 or input.shape[-1] != K:
        raise ValueError(f"input has {input.shape[-1] if input.dim() else 0} features (shape "
                         f"{tuple(input.shape)}) but the weight expects in_features={K}")
    if values is None:
        values = torch.as_tensor(np.asarray(weight.values), device=input.device)
    if tuple(values.shape) != tuple(weight.values.shape):
        raise ValueError(f"values must have shape {tuple(weight.values.shape)} (like weight.values), "
                         f"got {tuple(values.shape)}")
    if values.dtype != input.dtype:
        raise TypeError(f"input dtype {input.dtype} does not match the weight values dtype {values.dtype}")
    if bias is not None and tuple(bias.shape) != (M,):
        raise ValueError(f"bias must have shape ({M},) = (out_features,), got {tuple(bias.shape)}")
    name = resolve_backend(backend, input.device)
    lead = input.shape[:-1]
    x2 = input.reshape(-1, K)
    y = StructuredLinearFunction.apply(x2, values, bias, weight, name, structure)
    return y.reshape(*lead, M)
