"""Initial masks for :func:`flexsparse.torch.finetune` (registered by name in :data:`INITS`).

* ``"magnitude"`` -- ``flexsparse.prune_mask(|W|)`` per layer; no data, ``O(M * K)`` each.
* ``"sparsegpt"`` -- layer-wise reconstruction on calibration batches, one layer at a time
  in the order the forward pass reaches them, so each layer also corrects the error of the
  layers already pruned before it:

  1. run the (partly pruned) student on the calibration batches up to the layer and
     capture its input ``X`` (rows = tokens; padded tokens are dropped when the batch is a
     mapping with an ``attention_mask`` matching the input's leading dims). Layers that
     receive the very same input tensor (query/key/value) share one capture;
  2. target ``Y``: the teacher's output of the same-named layer (captured for all layers in
     one teacher pass), or the layer's own dense output ``X @ W.T + b`` (``target="local"``,
     or when the teacher has no such layer);
  3. with ``X1 = [X, 1]`` (the bias as a constant input) and ``H = X1^T X1 + lambda I``
     (``lambda = damp * mean(diag)``), ``W* = Y^T X1 H^-1`` is the dense least-squares map;
  4. ``W*`` is pruned by the OBS sweep of SparseGPT (Frantar & Alistarh, 2023): columns
     left to right, each pruned weight's error is compensated on the columns to its right
     through the upper Cholesky factor ``U`` of ``H^-1``. N:M and HSS masks are chosen group
     by group during the sweep (``prune_mask`` on the group's columns, saliency
     ``w^2 / U_jj^2``); block masks, whose choice is global, up front from
     ``|w| / sqrt(diag(H^-1))`` (block norm = summed saliency).

  Cost per layer: ``O(N K^2)`` for ``H`` (``N`` tokens), ``O(K^3)`` for the inverse and
  the Cholesky factor, ``O(M K^2)`` for the sweep; plus one partial forward pass over the
  calibration set per input group (on average about half a full pass each).

The result of either is a 0/1 mask of exactly the pattern per layer (``sparsegpt`` also
rewrites the kept weights and the bias).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

try:
    import torch
    from torch import nn
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

from flexsparse.torch.finetune_methods import MaskedLinear, choose_mask

__all__ = ["INITS", "init_masks", "pattern_span"]

#: Initial mask choices by name (``finetune(init=...)``).
INITS = ("magnitude", "sparsegpt")

#: Columns per lazy-update block of the SparseGPT sweep (rounded up to a whole number of
#: pattern groups); 128 is SparseGPT's own choice (its paper: larger blocks do not help).
SWEEP_BLOCK = 128

#: N:M / HSS patterns whose groups span more columns than this are chosen up front.
MAX_ADAPTIVE_SPAN = 512


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted input is captured."""


def pattern_span(pattern: str) -> int | None:
    """Columns one group of an N:M / HSS pattern spans (``None`` for blocks and ``dense``).

    >>> pattern_span("2:4"), pattern_span("4:6->1:4"), pattern_span("block:32x32")
    (4, 24, None)
    """
    spec = pattern.strip().lower()
    if spec.startswith("block") or spec == "dense":
        return None
    from flexsparse.formats.hss import HSSPattern

    return math.prod(h for _, h in HSSPattern.parse(pattern).levels)


def call_model(model: nn.Module, batch: Any) -> Any:
    """``model(batch)``: a mapping is passed as keyword-free dict, a tuple/list unpacked."""
    if isinstance(batch, Mapping):
        return model(dict(batch))
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def token_rows(batch: Any, t: torch.Tensor) -> torch.Tensor:
    """Rows of ``t`` (``[..., F]``) flattened to ``[N, F]``, padded tokens dropped.

    A token is padding when ``batch`` is a mapping with an ``attention_mask`` whose shape is
    ``t``'s leading shape and whose entry is 0.
    """
    flat = t.reshape(-1, t.shape[-1])
    if isinstance(batch, Mapping):
        am = batch.get("attention_mask")
        if isinstance(am, torch.Tensor) and tuple(am.shape) == tuple(t.shape[:-1]):
            return flat[am.reshape(-1).to(torch.bool)]
    return flat


def init_masks(init: str, model: nn.Module, teacher: nn.Module | None, layers: dict[str, MaskedLinear],
               batches: list[Any], *, damp: float = 0.01, target: str = "teacher",
               on_layer: Callable[[str], None] | None = None) -> None:
    """Install the initial mask (and, for ``sparsegpt``, weights) of every layer in ``layers``.

    ``layers`` maps qualified names in ``model`` to its :class:`MaskedLinear` modules;
    ``batches`` are calibration batches (``sparsegpt`` only). ``on_layer`` is called with
    each layer name once done (progress).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
    if target not in ("teacher", "local"):
        raise ValueError(f"unknown target {target!r}; valid targets: teacher, local")
    if init == "magnitude":
        for name, layer in layers.items():
            layer.set_mask(choose_mask(layer.weight.abs(), layer.pattern, layer.density), zero_pruned=False)
            if on_layer:
                on_layer(name)
        return
    if not batches:
        raise ValueError("init='sparsegpt' needs calibration batches (calibration=... or data)")
    _sparsegpt(model, teacher, layers, batches, damp=damp, target=target, on_layer=on_layer)


def _teacher_outputs(teacher: nn.Module, names: list[str], batches: list[Any]) -> dict[str, list[torch.Tensor]]:
    """Each named linear's output rows on every batch, from one teacher pass."""
    mods = dict(teacher.named_modules())
    outs: dict[str, list[torch.Tensor]] = {n: [] for n in names if isinstance(mods.get(n), nn.Module)}
    cur: list[Any] = [None]
    hooks = [mods[n].register_forward_hook(
        lambda mod, args, out, n=n: outs[n].append(token_rows(cur[0], out.detach()).to(torch.float32)))
        for n in outs]
    try:
        with torch.no_grad():
            for b in batches:
                cur[0] = b
                call_model(teacher, b)
    finally:
        for h in hooks:
            h.remove()
    return {n: v for n, v in outs.items() if len(v) == len(batches)}


def _next_group(model: nn.Module, layers: dict[str, MaskedLinear], pending: list[str], batch: Any) -> list[str]:
    """The pending layers the forward pass reaches first that share one input tensor."""
    group: list[str] = []
    first: list[Any] = [None]

    def hook(mod, args, name):
        x = args[0]
        if first[0] is None:
            first[0] = x
        if x is not first[0]:
            raise _Stop
        group.append(name)

    hooks = [layers[n].register_forward_pre_hook(lambda mod, args, n=n: hook(mod, args, n)) for n in pending]
    try:
        with torch.no_grad():
            call_model(model, batch)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return group


def _capture_input(model: nn.Module, layer: nn.Module, batches: list[Any]) -> list[torch.Tensor]:
    rows: list[torch.Tensor] = []
    cur: list[Any] = [None]

    def hook(mod, args):
        rows.append(token_rows(cur[0], args[0].detach()).to(torch.float64))
        raise _Stop

    h = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for b in batches:
                cur[0] = b
                try:
                    call_model(model, b)
                except _Stop:
                    pass
    finally:
        h.remove()
    return rows


def _sparsegpt(model: nn.Module, teacher: nn.Module | None, layers: dict[str, MaskedLinear],
               batches: list[Any], *, damp: float, target: str, on_layer: Callable[[str], None] | None) -> None:
    names = list(layers)
    targets = _teacher_outputs(teacher, names, batches) if (teacher is not None and target == "teacher") else {}
    pending = list(names)
    while pending:
        group = _next_group(model, layers, pending, batches[0])
        if not group:  # the forward pass never reaches the rest: magnitude masks
            for n in pending:
                init_masks("magnitude", model, teacher, {n: layers[n]}, [], on_layer=on_layer)
            return
        X = torch.cat(_capture_input(model, layers[group[0]], batches))
        X1 = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)
        del X
        H = X1.T @ X1
        for name in group:
            layer = layers[name]
            _reconstruct(layer, H, X1, targets.get(name), damp)
            pending.remove(name)
            if on_layer:
                on_layer(name)


def _reconstruct(layer: MaskedLinear, H: torch.Tensor, X1: torch.Tensor, target: list[torch.Tensor] | None,
                 damp: float) -> None:
    """Least-squares target map, then the OBS sweep; installs weights, bias and mask."""
    W = layer.weight.detach().to("cpu", torch.float64)
    M, K = W.shape
    has_bias = layer.bias is not None
    b = layer.bias.detach().to("cpu", torch.float64) if has_bias else torch.zeros(M, dtype=torch.float64)
    cols = K + 1 if has_bias else K
    Hc = H[:cols, :cols].clone()
    lam = damp * float(torch.diagonal(Hc)[:K].mean()) if K else 0.0
    Hc.diagonal().add_(lam if lam > 0 else 1e-8)
    if target is not None:
        Y = torch.cat(target).to(torch.float64)
        C = Y.T @ X1[:, :cols]
        # dense least-squares map from these inputs to the teacher's outputs
        Wstar = torch.linalg.solve(Hc, C.T).T
    else:
        Wstar = torch.cat([W, b[:, None]], 1) if has_bias else W.clone()
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(Hc))
    U = torch.linalg.cholesky(Hinv, upper=True)
    span = pattern_span(layer.pattern)
    mask = torch.ones(M, cols, dtype=torch.float64)
    adaptive = span is not None and span <= MAX_ADAPTIVE_SPAN
    if not adaptive:
        score = Wstar[:, :K].abs() / torch.sqrt(torch.diagonal(Hinv)[:K])[None, :]
        mask[:, :K] = choose_mask(score, layer.pattern, layer.density)
        block = SWEEP_BLOCK
    else:
        block = span * max(1, -(-SWEEP_BLOCK // span))
    Wc = Wstar.clone()
    for i in range(0, cols, block):
        e = min(i + block, cols)
        W1, U1 = Wc[:, i:e].clone(), U[i:e, i:e]
        Q1, E1 = torch.zeros_like(W1), torch.zeros_like(W1)
        for j in range(e - i):
            col = i + j
            if adaptive and col < K and col % span == 0:
                g = min(span, K - col)
                sal = W1[:, j:j + g] ** 2 / torch.diagonal(U1)[j:j + g][None, :] ** 2
                mask[:, col:col + g] = choose_mask(sal, layer.pattern, None)
            w = W1[:, j]
            q = w * mask[:, col]
            err = (w - q) / U1[j, j]
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            Q1[:, j], E1[:, j] = q, err
        Wc[:, i:e] = Q1
        Wc[:, e:] -= E1 @ U[i:e, e:]
    with torch.no_grad():
        layer.weight.copy_(Wc[:, :K].to(layer.weight.dtype))
        if has_bias:
            layer.bias.copy_(Wc[:, K].to(layer.bias.dtype))
    layer.set_mask(mask[:, :K], zero_pruned=True)
