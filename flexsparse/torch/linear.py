"""``SparseLinear``: a drop-in ``nn.Linear`` whose weight is block-sparse, N:M or HSS.

The weight ``W: (out_features, in_features)`` is pruned once (``flexsparse.prune``) and its
structure stays fixed; only the kept values are a trainable ``nn.Parameter``:

* ``values``: ``nn.Parameter`` shaped like the format's ``values`` (``[n_blocks, r, c]`` for
  blocks, ``[M, ceil(K/m), n]`` for N:M, ``[M, n_top, G_0, ..., G_{L-1}]`` for HSS);
* structure buffers: ``indptr int64[ceil(M/r)+1]`` and ``indices int32[n_blocks]`` (blocks)
  or ``positions_0 .. positions_{L-1}`` uint8 (N:M / HSS), plus the format description
  (kind, shape, block / pattern, the user's pattern spec) in the module's extra state, so a
  ``state_dict`` round-trips into any ``SparseLinear`` with the same feature sizes.

Forward is :func:`flexsparse.torch.functional.sparse_linear`: ``O(nnz * batch)`` through
numba kernels on the CPU (or dense BLAS above the format's measured crossover density,
``dispatch="auto"``) and the Triton kernels on CUDA. Gradients flow to the input, the kept
values and the bias; pruned weights stay zero.

>>> import torch
>>> torch.manual_seed(0) and None
>>> dense = torch.nn.Linear(8, 4)
>>> layer = SparseLinear.from_linear(dense, "2:4")
>>> layer
SparseLinear(in_features=8, out_features=4, bias=True, pattern='2:4', density=0.500)
>>> x = torch.randn(3, 8)
>>> ref = torch.nn.functional.linear(x, layer.to_dense_linear().weight, dense.bias)
>>> torch.allclose(layer(x), ref, atol=1e-6)
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

from flexsparse.torch.functional import BACKENDS, sparse_linear

__all__ = ["SparseLinear", "DISPATCHES"]

#: CPU dispatch of the formats (``StructuredMatrix.backend``): sparse kernel below the
#: measured crossover density and cached dense BLAS above (``auto``), or forced.
DISPATCHES = ("auto", "sparse", "dense")


def _kind(W: Any) -> str:
    from flexsparse.formats.block import BlockSparse
    from flexsparse.formats.hss import HSS
    from flexsparse.formats.nm import NM

    if isinstance(W, BlockSparse):
        return "block"
    if isinstance(W, NM):
        return "nm"
    if isinstance(W, HSS):
        return "hss"
    raise TypeError(f"weight must be a BlockSparse, NM or HSS matrix, got {type(W).__name__}")


def _structure_arrays(W: Any, kind: str) -> dict[str, np.ndarray]:
    if kind == "block":
        return {"indptr": np.asarray(W.indptr, dtype=np.int64), "indices": np.asarray(W.indices, dtype=np.int32)}
    return {f"positions_{i}": np.asarray(p, dtype=np.uint8) for i, p in enumerate(W._positions)}


class SparseLinear(nn.Module):
    """``nn.Linear`` with a structured-sparse weight (block, N:M or HSS); see module docstring.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (the weight is initialised like
            ``nn.Linear``'s and then pruned to ``pattern``).
        pattern: ``"2:4"`` (N:M), ``"3:4->2:4"`` (HSS), ``"block:32x32"`` (blocks; needs
            ``density``); see ``flexsparse.prune``.
        density: fraction of blocks kept for block patterns.
        device, dtype: as ``nn.Linear``.
        backend: ``"auto"`` (Triton on CUDA, numba on CPU), ``"numba"`` or ``"triton"``.
        dispatch: CPU dispatch inside the format: ``"auto"``, ``"sparse"`` or ``"dense"``.
        weight: a ready structured matrix ``(out_features, in_features)`` to use instead of
            initialising and pruning (used by :meth:`from_linear` / :meth:`from_weight`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 pattern: str | None = None, density: float | None = None, device: Any = None,
                 dtype: Any = None, backend: str = "auto", dispatch: str = "auto",
                 weight: Any = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if dispatch not in DISPATCHES:
            raise ValueError(f"unknown dispatch {dispatch!r}; valid dispatches: {', '.join(DISPATCHES)}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.backend, self.dispatch = backend, dispatch
        dtype = dtype or torch.get_default_dtype()
        if weight is None:
            if pattern is None:
                raise ValueError("SparseLinear needs a pattern (e.g. '2:4', '3:4->2:4', 'block:32x32')")
            dense = torch.empty((self.out_features, self.in_features), dtype=torch.float64)
            nn.init.kaiming_uniform_(dense, a=math.sqrt(5))  # nn.Linear's initialisation
            from flexsparse.prune import prune

            weight = prune(dense.numpy(), pattern, density=density)
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight has shape {tuple(weight.shape)}; expected (out_features, in_features) "
                             f"= ({self.out_features}, {self.in_features})")
        self.pattern = str(pattern) if pattern is not None else self._describe(weight)
        self.density_arg = density
        self._install(weight, dtype=dtype, device=device)
        if bias:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            self.bias = nn.Parameter(torch.empty(self.out_features, dtype=dtype, device=device).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    # ------------------------------------------------------------ construction
    @staticmethod
    def _describe(W: Any) -> str:
        kind = _kind(W)
        if kind == "block":
            return f"block:{W.block[0]}x{W.block[1]}"
        return str(W.pattern)

    def _install(self, W: Any, dtype: Any = None, device: Any = None) -> None:
        """Register ``values`` and the structure buffers of the structured matrix ``W``."""
        kind = _kind(W)
        for name in list(self._buffers):
            if name in ("indptr", "indices") or name.startswith("positions_"):
                del self._buffers[name]
        for name, arr in _structure_arrays(W, kind).items():
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(arr)).to(device=device))
        vals = torch.from_numpy(np.ascontiguousarray(W.values)).to(dtype=dtype or torch.get_default_dtype(),
                                                                   device=device)
        self.values = nn.Parameter(vals)
        self._meta = self._meta_of(W, kind)
        self._skeleton_cache = None
        self._cpu_cache = None
        self._device_cache = {}

    @staticmethod
    def _meta_of(W: Any, kind: str) -> dict:
        meta = {"format": kind, "shape": tuple(int(s) for s in W.shape)}
        if kind == "block":
            meta["block"] = tuple(int(b) for b in W.block)
        elif kind == "nm":
            meta["n"], meta["m"] = int(W.n), int(W.m)
        else:
            meta["pattern"] = str(W.pattern)
        return meta

    @classmethod
    def from_weight(cls, weight: Any, bias: torch.Tensor | None = None, *, pattern: str | None = None,
                    backend: str = "auto", dispatch: str = "auto") -> SparseLinear:
        """Wrap a ready structured matrix ``(out, in)`` (and an optional bias tensor ``[out]``)."""
        M, K = (int(s) for s in weight.shape)
        values_dtype = torch.from_numpy(np.asarray(weight.values[:0])).dtype
        layer = cls(K, M, bias=bias is not None, pattern=pattern, dtype=values_dtype,
                    device=None if bias is None else bias.device, backend=backend, dispatch=dispatch,
                    weight=weight)
        if bias is not None:
            if tuple(bias.shape) != (M,):
                raise ValueError(f"bias must have shape ({M},) = (out_features,), got {tuple(bias.shape)}")
            with torch.no_grad():
                layer.bias.copy_(bias)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, pattern: str, density: float | None = None, *,
                    backend: str = "auto", dispatch: str = "auto") -> SparseLinear:
        """Prune ``linear.weight`` to ``pattern`` (``flexsparse.prune``) and wrap it.

        The kept values, the bias, the dtype and the device are taken from ``linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        from flexsparse.prune import prune

        w = linear.weight.detach()
        arr = w.to("cpu", torch.float64 if w.dtype == torch.float64 else torch.float32).numpy()
        W = prune(arr, pattern, density=density)
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    pattern=pattern, density=density, dtype=w.dtype, device=w.device,
                    backend=backend, dispatch=dispatch, weight=W)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias.detach())
        return layer

    # -------------------------------------------------------------- structure
    def _structure_numpy(self) -> dict[str, np.ndarray]:
        names = ("indptr", "indices") if self._meta["format"] == "block" else sorted(
            (n for n in self._buffers if n.startswith("positions_")), key=lambda n: int(n.split("_")[1]))
        return {n: self._buffers[n].detach().cpu().numpy() for n in names}

    def _build(self, values: np.ndarray) -> Any:
        meta, arrs = self._meta, self._structure_numpy()
        if meta["format"] == "block":
            from flexsparse.formats.block import BlockSparse
            W = BlockSparse(arrs["indptr"], arrs["indices"], values, meta["shape"], meta["block"])
        elif meta["format"] == "nm":
            from flexsparse.formats.nm import NM
            W = NM(values, arrs["positions_0"], meta["shape"], meta["n"], meta["m"])
        else:
            from flexsparse.formats.hss import HSS
            W = HSS(values, tuple(arrs.values()), meta["shape"], meta["pattern"])
        W.backend = self.dispatch
        return W

    def _buffer_key(self) -> tuple:
        return tuple((n, b.data_ptr(), b._version) for n, b in sorted(self._buffers.items()) if b is not None)

    def _skeleton(self) -> Any:
        """The structure as a flexsparse matrix with zero values (cached until buffers change)."""
        key = (self._buffer_key(), tuple(self.values.shape))
        if self._skeleton_cache is None or self._skeleton_cache[0] != key:
            vals = np.zeros(tuple(self.values.shape), dtype=np.float32)
            self._skeleton_cache = (key, self._build(vals))
        return self._skeleton_cache[1]

    def sparse_weight(self) -> Any:
        """The current weight as a flexsparse matrix (CPU; values copied to float32/float64)."""
        v = self.values.detach().cpu()
        if v.dtype not in (torch.float32, torch.float64):
            v = v.to(torch.float32)
        return self._build(v.numpy().copy())

    def _cpu_weight(self) -> Any:
        """Format object sharing memory with ``values`` (CPU float32/64); rebuilt when they change."""
        v = self.values
        key = (self._buffer_key(), v.data_ptr(), v._version, v.dtype, tuple(v.shape), self.dispatch)
        if self._cpu_cache is None or self._cpu_cache[0] != key:
            self._cpu_cache = (key, self._build(v.detach().numpy()))
        return self._cpu_cache[1]

    def _device_structure(self, device: torch.device) -> Any:
        from flexsparse.gpu import DeviceStructure

        key = (str(device), self._buffer_key(), tuple(self.values.shape))
        hit = self._device_cache.get(str(device))
        if hit is None or hit[0] != key:
            hit = (key, DeviceStructure.from_weight(self._skeleton(), device))
            self._device_cache[str(device)] = hit
        return hit[1]

    # ---------------------------------------------------------------- forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input @ W.T + bias`` for ``input: [..., in_features]``."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"input has {input.shape[-1] if input.dim() else 0} features (shape "
                             f"{tuple(input.shape)}) but SparseLinear expects in_features={self.in_features}")
        from flexsparse.torch.functional import resolve_backend

        name = resolve_backend(self.backend, input.device)
        if name == "triton":
            return sparse_linear(input, self._skeleton(), self.values, self.bias, backend="triton",
                                 structure=self._device_structure(input.device))
        if self.values.dtype in (torch.float32, torch.float64) and self.values.device.type == "cpu":
            W = self._cpu_weight()
            if W._use_dense() and not (torch.is_grad_enabled() and self.values.requires_grad):
                # above the format's crossover density with no values gradient wanted: torch's
                # own GEMM on the format's cached dense copy (shares memory, built once per
                # values version) beats a NumPy round trip; input gradients still flow
                dense = torch.from_numpy(W._dense())
                if input.dtype != dense.dtype:
                    raise TypeError(f"input dtype {input.dtype} does not match the weight values "
                                    f"dtype {dense.dtype}")
                return torch.nn.functional.linear(input, dense, self.bias)
        else:
            W = self._skeleton()
        return sparse_linear(input, W, self.values, self.bias, backend="numba")

    # ------------------------------------------------------------- conversion
    def to_dense_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the pruned weight densely (zeros where pruned)."""
        dense = torch.from_numpy(np.ascontiguousarray(self.sparse_weight().todense()))
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        dtype=self.values.dtype, device=self.values.device)
        with torch.no_grad():
            out.weight.copy_(dense.to(dtype=self.values.dtype, device=self.values.device))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    @property
    def density(self) -> float:
        """Kept fraction of the logical weight (stored slots / (out * in))."""
        return float(self._skeleton().density)

    @property
    def nnz(self) -> int:
        """Stored weight slots inside the logical shape."""
        return int(self._skeleton().nnz)

    @property
    def sparse_nbytes(self) -> int:
        """Bytes of the sparse weight at the parameter dtype (values + structure metadata)."""
        meta = sum(b.numel() * b.element_size() for n, b in self._buffers.items()
                   if n in ("indptr", "indices") or n.startswith("positions_"))
        return int(self.values.numel() * self.values.element_size() + meta)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, pattern='{self.pattern}', density={self.density:.3f}")

    # -------------------------------------------------------------- state dict
    def get_extra_state(self) -> dict:
        return {**self._meta, "spec": self.pattern, "density": self.density_arg}

    def set_extra_state(self, state: dict) -> None:
        self._meta = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state.items()
                      if k not in ("spec", "density")}
        self.pattern = state.get("spec", self.pattern)
        self.density_arg = state.get("density")
        self._skeleton_cache = None
        self._cpu_cache = None
        self._device_cache = {}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and "format" in extra:
            shape = tuple(extra["shape"])
            if shape != (self.out_features, self.in_features):
                error_msgs.append(f"size mismatch for {prefix}: saved SparseLinear has weight shape {shape}, "
                                  f"this one ({self.out_features}, {self.in_features})")
                return
            # re-shape structure buffers and values to the saved structure before copying
            names = ["indptr", "indices"] if extra["format"] == "block" else sorted(
                (k[len(prefix):] for k in state_dict if k.startswith(prefix + "positions_")),
                key=lambda n: int(n.split("_")[1]))
            for name in list(self._buffers):
                if name in ("indptr", "indices") or name.startswith("positions_"):
                    del self._buffers[name]
            for name in names:
                saved = state_dict.get(prefix + name)
                if saved is not None:
                    self.register_buffer(name, torch.empty_like(saved, device=self.values.device))
            saved_v = state_dict.get(prefix + "values")
            if saved_v is not None and tuple(saved_v.shape) != tuple(self.values.shape):
                self.values = nn.Parameter(torch.empty(tuple(saved_v.shape), dtype=self.values.dtype,
                                                       device=self.values.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
