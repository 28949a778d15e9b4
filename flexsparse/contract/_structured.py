"""Structured (BlockSparse, NM, HSS) x dense steps of :func:`~flexsparse.contract.execute.einsum`.

Algorithm: the structured matrix's own product reads the dense operand in place when its
(free..., contracted) view is row-major (``W.linear`` / ``W.linear_grad_input``), else after one
copy as ``[contracted, free]`` (``W.matmul`` / ``W.tmatmul``);
:func:`~flexsparse.contract.plan.structured_kernel` names which. A torch tensor on a CUDA device
runs the Triton kernels of :mod:`flexsparse.gpu` instead (:func:`structured_backend`), the
result staying on the device.

Formats: a :class:`~flexsparse.formats.block.StructuredMatrix` (2-D, float32/float64) and a
dense ``numpy.ndarray`` (or torch tensor) of any order.

Cost: the structured class's product (O(stored blocks x free columns), BLAS per block above its
crossover density) plus at most one copy of the dense operand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flexsparse.contract.parser import parse_einsum
from flexsparse.contract.plan import structured_kernel
from flexsparse.formats.block import StructuredMatrix

__all__ = ["einsum_on_device", "pair_structured", "structured_backend", "torch_structured"]


def _transpose_to(d: np.ndarray, idx: str, target: str) -> np.ndarray:
    return d if idx == target else d.transpose([idx.index(c) for c in target])


def structured_backend(x: Any) -> str:
    """Where a structured x dense product runs: ``"triton"`` for a tensor on a CUDA device
    (:mod:`flexsparse.gpu`), ``"numba"`` (the CPU kernels) for everything else.

    >>> import numpy as np
    >>> structured_backend(np.ones(3))
    'numba'
    """
    device = getattr(x, "device", None)
    return "triton" if getattr(device, "type", None) == "cuda" else "numba"


def pair_structured(w: StructuredMatrix, wi: str, d: np.ndarray, di: str, sizes: dict[str, int],
                     kernel: str) -> tuple[np.ndarray, str]:
    """Structured ``W[wi]`` x dense ``D[di]`` on the structured class's own product.

    ``kernel`` (from :func:`~flexsparse.contract.plan.structured_kernel`) names the contracted
    index: ``W``'s reduction index for ``"matmul"``, its row index for ``"tmatmul"``. ``D`` is
    read in place when its (free..., contracted) view is row-major (``W.linear`` /
    ``W.linear_grad_input``), else copied once as ``[contracted, free]`` (``W.matmul`` /
    ``W.tmatmul``).
    """
    c, kept = (wi[1], wi[0]) if kernel == "matmul" else (wi[0], wi[1])
    free = "".join(x for x in di if x != c)
    n_free = math.prod(sizes[x] for x in free)
    lead = _transpose_to(d, di, free + c)
    if lead.flags.c_contiguous:
        x2 = lead.reshape(n_free, sizes[c])
        res = w.linear(x2) if kernel == "matmul" else w.linear_grad_input(x2)
        idx = free + kept
    else:
        x2 = np.ascontiguousarray(_transpose_to(d, di, c + free)).reshape(sizes[c], n_free)
        res = w.matmul(x2) if kernel == "matmul" else w.tmatmul(x2)
        idx = kept + free
    return res.reshape(tuple(sizes[x] for x in idx)), idx


def torch_structured(w: StructuredMatrix, wi: str, t: Any, ti: str, out: str, kernel: str) -> Any:
    """:func:`pair_structured` for a torch tensor on a CUDA device: Triton, result on the device."""
    from flexsparse import gpu

    c, kept = (wi[1], wi[0]) if kernel == "matmul" else (wi[0], wi[1])
    free = "".join(x for x in ti if x != c)
    perm = [ti.index(x) for x in free + c]
    x2 = t.permute(*perm).reshape(-1, int(t.shape[ti.index(c)])).contiguous()
    res = gpu.linear(w, x2) if kernel == "matmul" else gpu.linear_grad_input(w, x2)
    shape = [int(t.shape[ti.index(x)]) for x in free] + [int(w.shape[wi.index(kept)])]
    idx = free + kept
    return res.reshape(shape).permute(*[idx.index(x) for x in out])


def einsum_on_device(subscripts: str, operands: Sequence[Any], format: str, out: Any) -> Any:
    """A structured matrix times a CUDA tensor, run by Triton; ``None`` for every other call."""
    if len(operands) != 2 or out is not None or format not in ("auto", "dense"):
        return None
    for k in (0, 1):
        w, t = operands[k], operands[1 - k]
        if isinstance(w, StructuredMatrix) and structured_backend(t) == "triton":
            spec = parse_einsum(subscripts, [tuple(w.shape), tuple(t.shape)])
            wi, ti = spec.inputs[k], spec.inputs[1 - k]
            kernel = structured_kernel(wi, ti, spec.output)
            if kernel is None or any(spec.broadcast) or len(set(ti)) < len(ti) or \
                    any(c not in spec.output and c not in wi for c in ti):
                return None
            return torch_structured(w, wi, t, ti, spec.output, kernel)
    return None
