"""GPU (Triton) products for the structured formats: BlockSparse, N:M and HSS weights.

Entry points take a structured weight (:class:`~flexsparse.formats.block.BlockSparse`,
:class:`~flexsparse.formats.nm.NM` or :class:`~flexsparse.formats.hss.HSS`) and torch
tensors on a CUDA device (or CPU tensors when Triton runs in its interpreter,
``TRITON_INTERPRET=1`` set before ``triton`` is imported; that is how CI tests them):

- :func:`matmul` ``W @ X`` (``X: [K, N]``), :func:`linear` ``X @ W.T`` (``X: [B, K]``),
  :func:`linear_grad_input` ``dY @ W``, :func:`sampled_grad` (``dY^T X`` on kept slots only,
  shaped like ``W.values``).
- :class:`DeviceStructure` holds the weight's index arrays on the device plus its
  transposed structure (built once, ``O(nnz)``), so repeated calls with new values (training)
  move only values. Pass ``structure=`` to reuse it; :class:`flexsparse.torch.SparseLinear`
  caches one per device.

Kernels (:mod:`flexsparse.kernels.triton.block`, :mod:`flexsparse.kernels.triton.hss`):
block-sparse ``tl.dot`` over each block row (cost ``2*n_blocks*r*c*N`` flops) and an HSS/N:M
gather-FMA kernel (cost ``2*M*S*N`` flops with ``S`` kept slots per row). See those modules
for tiling and limits (blocks smaller than 16 are padded to 16 for ``tl.dot``).

Importing this module without Triton raises ``ImportError`` (``pip install flexsparse[gpu]``).
These paths are tested under Triton's interpreter only; the CUDA launches have not been run
in this project's CI (no GPU there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:
    import triton  # noqa: F401  (availability check only; kernels import it themselves)
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.gpu needs Triton: pip install flexsparse[gpu]") from exc

import numpy as np

__all__ = ["DeviceStructure", "matmul", "linear", "linear_grad_input", "sampled_grad"]


def _kind(W: Any) -> str:
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.hss import HSS

    if isinstance(W, BlockSparse):
        return "block"
    if isinstance(W, HSS):  # NM is a one-level HSS
        return "hss"
    raise TypeError(f"expected a BlockSparse, NM or HSS weight, got {type(W).__name__}")


@dataclass(frozen=True, eq=False)
class DeviceStructure:
    """Index arrays of a structured weight on one device (values are passed separately).

    Block weights: ``indptr int64[gm+1]``, ``indices int32[nb]``, ``block_rows int32[nb]`` and
    the transposed BSR ``t_indptr int64[gk+1]``, ``t_indices int32[nb]`` (block rows, in
    column order), ``t_perm int64[nb]``. HSS/N:M weights: ``cols int32[M, S]`` and the
    transposed CSR ``t_indptr int64[K+1]``, ``t_indices int32[nnz]`` (rows), ``t_perm
    int64[nnz]`` into the flattened ``[M*S]`` values.
    """

    kind: str
    shape: tuple[int, int]
    values_shape: tuple[int, ...]
    device: Any
    block: tuple[int, int] | None
    indptr: Any
    indices: Any
    block_rows: Any
    cols: Any
    t_indptr: Any
    t_indices: Any
    t_perm: Any

    @classmethod
    def from_weight(cls, W: Any, device: Any) -> DeviceStructure:
        """Move ``W``'s structure to ``device`` and build its transpose (``O(nnz)``, once)."""
        import torch

        kind = _kind(W)
        M, K = (int(s) for s in W.shape)
        if kind == "block":
            rows = np.asarray(W.block_rows, dtype=np.int64)
            indices = np.asarray(W.indices, dtype=np.int64)
            # stable sort by block column keeps block rows ascending inside a column
            perm = np.argsort(indices, kind="stable")
            gk = W.grid[1]
            t_indptr = np.zeros(gk + 1, dtype=np.int64)
            np.cumsum(np.bincount(indices, minlength=gk), out=t_indptr[1:])

            def dev(a, dt):
                return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)

            return cls("block", (M, K), tuple(W.values.shape), torch.device(device), tuple(W.block),
                       dev(W.indptr, torch.int64), dev(indices, torch.int32), dev(rows, torch.int32),
                       None, dev(t_indptr, torch.int64), dev(rows[perm], torch.int32),
                       dev(perm, torch.int64))
        from flexsparse.kernels.triton.hss import transpose_structure

        cols = torch.as_tensor(np.ascontiguousarray(W.columns(), dtype=np.int32), device=device)
        cols = cols.reshape(M, -1)
        t_indptr, t_rows, t_perm = transpose_structure(cols, K)
        return cls("hss", (M, K), tuple(W.values.shape), torch.device(device), None,
                   None, None, None, cols, t_indptr, t_rows, t_perm)


def _prepare(W: Any, values: Any, like: Any, structure: DeviceStructure | None):
    """Resolve ``(structure, values)`` on ``like``'s device; check dtype and shape."""
    import torch

    if structure is None:
        structure = DeviceStructure.from_weight(W, like.device)
    elif structure.device != like.device and not (
            structure.device.type == like.device.type == "cuda" and structure.device.index is None):
        raise ValueError(f"structure lives on {structure.device} but the operand on {like.device}")
    if values is None:
        values = torch.as_tensor(np.asarray(W.values), device=like.device)
    if tuple(values.shape) != structure.values_shape:
        raise ValueError(f"values must have shape {structure.values_shape}, got {tuple(values.shape)}")
    if values.dtype != like.dtype:
        raise TypeError(f"values dtype {values.dtype} differs from operand dtype {like.dtype}")
    return structure, values.contiguous()


def _check_2d(t: Any, name: str, axis: int, want: int, op: str) -> None:
    if t.dim() != 2 or t.shape[axis] != want:
        raise ValueError(f"{op}: {name} must be 2-D with {want} on axis {axis}, got {tuple(t.shape)}")


def matmul(W: Any, X: Any, *, values: Any = None, structure: DeviceStructure | None = None) -> Any:
    """``W @ X`` for ``X: [K, N]`` on the GPU -> ``[M, N]``.

    Args:
        W: BlockSparse / NM / HSS weight (its structure; its values unless ``values``).
        X: torch tensor ``[K, N]`` (CUDA, or CPU under the interpreter).
        values: optional torch tensor shaped like ``W.values`` on X's device.
        structure: optional :class:`DeviceStructure` from ``DeviceStructure.from_weight``.
    """
    M, K = (int(s) for s in W.shape)
    _check_2d(X, "X", 0, K, "matmul")
    s, v = _prepare(W, values, X, structure)
    if s.kind == "block":
        from flexsparse.kernels.triton.block import matmul_block_dense
        return matmul_block_dense(s.indptr, s.indices, v, s.shape, X)
    from flexsparse.kernels.triton.hss import matmul_hss_dense
    return matmul_hss_dense(v.reshape(M, -1), s.cols, s.shape, X.contiguous())


def linear(W: Any, X: Any, *, values: Any = None, structure: DeviceStructure | None = None) -> Any:
    """``X @ W.T`` for ``X: [B, K]`` on the GPU -> ``[B, M]`` (``nn.Linear`` without bias)."""
    import torch

    M, K = (int(s) for s in W.shape)
    _check_2d(X, "X", 1, K, "linear")
    s, v = _prepare(W, values, X, structure)
    Y = torch.empty((int(X.shape[0]), M), dtype=X.dtype, device=X.device)
    if s.kind == "block":
        from flexsparse.kernels.triton.block import matmul_block_dense
        # Y^T = W @ X^T through transposed views: no copies
        matmul_block_dense(s.indptr, s.indices, v, s.shape, X.t(), out=Y.t())
    else:
        from flexsparse.kernels.triton.hss import matmul_hss_dense
        # the gather reads rows of X^T: make them contiguous along the batch axis
        matmul_hss_dense(v.reshape(M, -1), s.cols, s.shape, X.t().contiguous(), out=Y.t())
    return Y


def linear_grad_input(W: Any, dY: Any, *, values: Any = None,
                      structure: DeviceStructure | None = None) -> Any:
    """``dY @ W`` for ``dY: [B, M]`` on the GPU -> ``[B, K]`` (input gradient of ``linear``)."""
    import torch

    M, K = (int(s) for s in W.shape)
    _check_2d(dY, "dY", 1, M, "linear_grad_input")
    s, v = _prepare(W, values, dY, structure)
    dX = torch.empty((int(dY.shape[0]), K), dtype=dY.dtype, device=dY.device)
    if s.kind == "block":
        from flexsparse.kernels.triton.block import matmul_block_dense
        # dX^T = W^T @ dY^T: W^T is BSR with (c, r) blocks read through t_perm, transposed
        matmul_block_dense(s.t_indptr, s.t_indices, v, (K, M), dY.t(), out=dX.t(),
                           perm=s.t_perm, transpose_blocks=True)
    else:
        from flexsparse.kernels.triton.hss import tmatmul_hss_dense
        out = tmatmul_hss_dense(s.t_indptr, s.t_indices, s.t_perm, v.reshape(M, -1), s.shape,
                                dY.t().contiguous())
        dX.copy_(out.t())
    return dX


def sampled_grad(W: Any, dY: Any, X: Any, *, structure: DeviceStructure | None = None) -> Any:
    """Weight gradient on kept slots only, shaped like ``W.values``: slot ``(m, k)`` gets
    ``sum_b dY[b, m] * X[b, k]`` (0 on padding slots). ``dY: [B, M]``, ``X: [B, K]``."""
    M, K = (int(s) for s in W.shape)
    _check_2d(dY, "dY", 1, M, "sampled_grad")
    _check_2d(X, "X", 1, K, "sampled_grad")
    if dY.shape[0] != X.shape[0]:
        raise ValueError(f"sampled_grad: batch sizes differ: dY {tuple(dY.shape)} vs X {tuple(X.shape)}")
    if dY.dtype != X.dtype:
        raise TypeError(f"sampled_grad: dY dtype {dY.dtype} differs from X dtype {X.dtype}")
    s = structure if structure is not None else DeviceStructure.from_weight(W, X.device)
    if s.kind == "block":
        from flexsparse.kernels.triton.block import sampled_dense_dense_block
        return sampled_dense_dense_block(s.block_rows, s.indices, dY, X, s.block, s.shape)
    from flexsparse.kernels.triton.hss import sampled_dense_dense_hss
    return sampled_dense_dense_hss(s.cols, dY, X, s.shape).reshape(s.values_shape)
