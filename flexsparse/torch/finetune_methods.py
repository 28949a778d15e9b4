"""Sparse training methods for :func:`flexsparse.torch.finetune` (registered by name).

During fine-tuning every selected ``nn.Linear`` is swapped for a :class:`MaskedLinear`: it
keeps the dense ``weight`` ``(M, K)`` and its ``bias`` (the very same ``nn.Parameter``
objects) plus a 0/1 ``mask`` of the pattern, and asks its :class:`Method` how to run
``Y = X @ W.T + b``. Masks always come from :func:`flexsparse.prune_mask` (any pattern
``flexsparse.prune`` accepts: N:M, HSS ``"4:6->1:4"``, ``"block:32x32"`` with a density), so
the kept fraction of every layer is exactly the pattern's at every step.

Methods (:data:`METHODS`):

* ``"masked"`` -- fixed mask. The pruned weights are zeroed once; forward uses ``W * mask``,
  and autograd of that product gives ``dW = (dY^T X) * mask``: gradients reach only the
  kept weights, the pruned ones stay exactly zero.
* ``"srste"`` -- SR-STE, the sparse-refined straight-through estimator (Zhou et al., ICLR
  2021). The weights stay dense; the forward uses ``W * M(W)`` where the mask is re-chosen
  from ``|W|`` every ``interval`` optimiser steps; the backward passes the gradient of the
  masked weight straight through to all of ``W`` and adds ``decay * (1 - M) * W``, which
  pulls the pruned weights towards zero so masks settle.
* ``"bdwp"`` -- bidirectional weight pruning (Fang et al., "Efficient N:M Sparse DNN
  Training Using Algorithm, Architecture, and Dataflow Co-Design", 2023): like SR-STE for
  the forward and the weight update, but the input gradient ``dX = dY @ (W * M_b)`` uses a
  second mask ``M_b`` of the same pattern chosen along the OUTPUT dimension
  (``prune_mask(W, pattern, axis=0)``), so the forward and the backward products are both
  structured-sparse; both masks are re-chosen on the same schedule.

Every method starts from the pruned weights (zeroed outside the first mask). SR-STE and
BDWP stop re-choosing masks after the fraction ``until`` of training and then train exactly
like ``"masked"`` (the pruned weights are zeroed at that point; the forward is unchanged),
so the final weights were trained with the final mask.

Cost per step: the dense ``nn.Linear`` products (BLAS) plus ``O(M * K)`` for the mask
product; a mask refresh costs one ``prune_mask`` per layer (``O(M * K)`` plus a sort per
group, about 25 ms for a 1536x384 weight).
"""

from __future__ import annotations

from typing import Any

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

__all__ = ["METHODS", "BDWP", "MaskedLinear", "Method", "Masked", "SRSTE", "StraightThroughLinear",
           "choose_mask", "resolve_method"]


def choose_mask(score: torch.Tensor, pattern: str, density: float | None, axis: int = -1) -> torch.Tensor:
    """0/1 mask (``score``'s dtype and device) of ``pattern`` kept by the largest ``score``.

    Thin wrapper over :func:`flexsparse.prune_mask` (computed on the CPU in float32/64).
    """
    from flexsparse.prune import prune_mask

    s = score.detach().to("cpu")
    if s.dtype not in (torch.float32, torch.float64):
        s = s.to(torch.float32)
    mask = prune_mask(s.numpy(), pattern, density=density, axis=axis)
    return torch.from_numpy(mask).to(dtype=score.dtype, device=score.device)


class StraightThroughLinear(torch.autograd.Function):
    """``Y = X @ (W * mask).T + b`` with a straight-through weight gradient.

    Backward (``dY: [..., M]``, ``X: [..., K]``):

    * ``dX = dY @ (W * mask_bwd)`` -- the exact input gradient when ``mask_bwd`` is
      ``mask`` (SR-STE), the sparse transposed product of BDWP otherwise;
    * ``dW = dY^T X + decay * (1 - mask) * W`` -- dense: the gradient of the masked weight
      goes straight through to every weight, plus SR-STE's decay of the pruned ones;
    * ``db = sum(dY)``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                mask: torch.Tensor, mask_bwd: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(x, weight, mask, mask_bwd)
        ctx.decay = float(decay)
        ctx.has_bias = bias is not None
        return F.linear(x, weight * mask, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        x, weight, mask, mask_bwd = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad_out @ (weight * mask_bwd)
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            gw = g2.T @ x.reshape(-1, x.shape[-1])
            if ctx.decay:
                gw = gw + ctx.decay * (1 - mask) * weight
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None, None, None


class MaskedLinear(nn.Linear):
    """An ``nn.Linear`` trained under a sparsity pattern by a :class:`Method`.

    ``weight`` and ``bias`` are the original layer's parameters (shared, not copied);
    ``mask`` (and ``mask_bwd`` for BDWP) are buffers. :meth:`masked_weight` is what the
    forward multiplies by; :meth:`to_linear` returns a plain ``nn.Linear`` holding it.
    """

    def __init__(self, linear: nn.Linear, pattern: str, density: float | None, method: Method):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.pattern, self.density = str(pattern), density
        self.method = method
        self.register_buffer("mask", torch.ones_like(linear.weight, requires_grad=False))

    def set_mask(self, mask: torch.Tensor, zero_pruned: bool) -> None:
        """Install ``mask`` (0/1, weight's shape); with ``zero_pruned`` zero the pruned weights."""
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, weight {tuple(self.weight.shape)}")
        self.mask = mask.to(dtype=self.weight.dtype, device=self.weight.device)
        if zero_pruned:
            with torch.no_grad():
                self.weight.mul_(self.mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def kept_fraction(self) -> float:
        return float(self.mask.sum().item()) / self.mask.numel() if self.mask.numel() else 0.0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.method.linear(self, input)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the masked weight (pruned entries exactly zero)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        dtype=self.weight.dtype, device=self.weight.device)
        with torch.no_grad():
            out.weight.copy_(self.masked_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, pattern='{self.pattern}', method='{self.method.name}', "
                f"kept={self.kept_fraction():.3f}")


class Method:
    """Base class: how a :class:`MaskedLinear` computes and when its masks change.

    ``interval``: optimiser steps between mask refreshes (``0``: never);
    ``until``: fraction of training after which masks are frozen (pruned weights zeroed).
    """

    name = "base"
    dynamic = False

    def __init__(self, interval: int = 0, until: float = 1.0):
        if int(interval) < 0:
            raise ValueError(f"interval must be >= 0 steps, got {interval}")
        if not 0.0 <= float(until) <= 1.0:
            raise ValueError(f"until must be a fraction in [0, 1], got {until}")
        self.interval, self.until = int(interval), float(until)
        self.frozen = not self.dynamic
        self.refreshes = 0

    def linear(self, layer: MaskedLinear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, layer.weight * layer.mask, layer.bias)

    def init_layer(self, layer: MaskedLinear) -> None:
        """Called once the initial mask is installed: zero the pruned weights.

        Dynamic methods start from the pruned weights too: a pruned weight re-enters only
        when the straight-through gradient grows it past a kept one (restoring the
        pre-pruning values would undo the adaptation of the kept weights at the first
        refresh).
        """
        with torch.no_grad():
            layer.weight.mul_(layer.mask)

    def refresh(self, layer: MaskedLinear) -> None:
        """Re-choose the layer's masks from its current weights."""
        layer.mask = choose_mask(layer.weight.abs(), layer.pattern, layer.density)

    def after_step(self, layers: list[MaskedLinear], step: int, progress: float) -> bool:
        """Called after optimiser step ``step`` (1-based) at ``progress`` in [0, 1].

        Returns True when the masks were re-chosen.
        """
        if self.frozen:
            return False
        if progress >= self.until:
            self.freeze(layers)
            return False
        if self.interval and step % self.interval == 0:
            for layer in layers:
                self.refresh(layer)
            self.refreshes += 1
            return True
        return False

    def freeze(self, layers: list[MaskedLinear]) -> None:
        """Fix the current masks and zero the pruned weights (the forward is unchanged)."""
        if self.frozen:
            return
        for layer in layers:
            with torch.no_grad():
                layer.weight.mul_(layer.mask)
        self.frozen = True


class Masked(Method):
    """Fixed mask: gradients reach only the kept weights (see the module docstring)."""

    name = "masked"

    def __init__(self):
        super().__init__(interval=0, until=1.0)


class SRSTE(Method):
    """SR-STE: masks re-chosen from ``|W|`` every ``interval`` steps, straight-through
    gradients plus ``decay * (1 - M) * W`` on the pruned weights."""

    name = "srste"
    dynamic = True

    def __init__(self, interval: int = 10, decay: float = 2e-4, until: float = 0.75):
        super().__init__(interval=interval, until=until)
        if float(decay) < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.decay = float(decay)

    def _mask_bwd(self, layer: MaskedLinear) -> torch.Tensor:
        return layer.mask

    def linear(self, layer: MaskedLinear, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return super().linear(layer, x)
        return StraightThroughLinear.apply(x, layer.weight, layer.bias, layer.mask, self._mask_bwd(layer),
                                           self.decay)


class BDWP(SRSTE):
    """BDWP: SR-STE plus a backward mask of the same pattern along the output dimension."""

    name = "bdwp"

    def init_layer(self, layer: MaskedLinear) -> None:
        super().init_layer(layer)
        layer.register_buffer("mask_bwd", choose_mask(layer.weight.abs(), layer.pattern, layer.density, axis=0))

    def refresh(self, layer: MaskedLinear) -> None:
        super().refresh(layer)
        layer.mask_bwd = choose_mask(layer.weight.abs(), layer.pattern, layer.density, axis=0)

    def _mask_bwd(self, layer: MaskedLinear) -> torch.Tensor:
        return layer.mask_bwd


#: Training methods by name (``finetune(method=...)``); values are the classes.
METHODS: dict[str, type[Method]] = {"masked": Masked, "srste": SRSTE, "bdwp": BDWP}


def resolve_method(method: str | Method) -> Method:
    """A fresh :class:`Method` for a registered name, or ``method`` itself if it is one.

    >>> resolve_method("srste").name
    'srste'
    >>> resolve_method("rigl")
    Traceback (most recent call last):
    ...
    ValueError: unknown method 'rigl'; valid methods: masked, srste, bdwp
    """
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]()
    raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
