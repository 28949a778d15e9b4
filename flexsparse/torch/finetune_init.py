"""Initial masks for :func:`flexsparse.torch.finetune` (registered by name in :data:`INITS`).

* ``"magnitude"`` -- ``flexsparse.prune_mask(|W|)`` per layer; no data, ``O(M * K)`` each.
* ``"sparsegpt"`` -- layer-wise reconstruction on calibration batches, one layer at a time
  in the order the forward pass reaches them, so each layer also corrects the error of the
  layers already pruned before it:

  1. run the (partly pruned) student up to the layer and capture its input ``X`` (rows =
     tokens; padded tokens are dropped when the batch is a mapping with an
     ``attention_mask`` matching the input's leading dims). Layers that receive the very
     same input tensor (query/key/value) share one capture. When ``blocks`` (e.g. the
     transformer layers) form a chain -- checked on the first batch: each block takes the
     previous block's output and the same side inputs -- a block runs alone on its cached
     inputs instead of the whole model from the start;
  2. target ``Y``: the teacher's output of the same-named layer on the same batch, or the
     layer's own dense output ``X @ W.T + b`` (``target="local"``, or no such teacher layer);
  3. with ``X1 = [X, 1]`` (the bias as a constant input), ``H = X1^T X1 + lambda I``
     (``lambda = damp * mean(diag)``) and ``C = Y^T X1`` summed over the batches (streamed:
     nothing per token is kept), ``W* = C H^-1`` is the dense least-squares map;
  4. ``W*`` is pruned by the OBS sweep of SparseGPT (Frantar & Alistarh, 2023): columns
     left to right, each pruned weight's error is compensated on the columns to its right
     through the upper Cholesky factor ``U`` of ``H^-1``. N:M and HSS masks are chosen group
     by group during the sweep (``prune_mask`` on the group's columns, saliency
     ``w^2 / U_jj^2``); block masks, whose choice is global, up front from
     ``|w| / sqrt(diag(H^-1))`` (block norm = summed saliency).
  5. when rows share their kept sets (blocks: one per block row, at most
     :data:`REFIT_MAX_SUPPORTS`), the kept weights are refit by exact least squares on the
     mask, ``w_S = H[S, S]^-1 C[i, S]``: one Cholesky factorisation per distinct kept set.

  Cost per layer: ``O(N K^2)`` for ``H`` (``N`` tokens), ``O(K^3)`` for the inverse and
  the Cholesky factor, ``O(M K^2)`` for the sweep; plus, per group of layers sharing an
  input, a partial forward pass of the student and the teacher over the calibration set
  (of one block when blocks chain, else of the model up to the layer). Memory: the cached
  block inputs (``N x hidden`` per model) and ``H``, ``C``.

The result of either is a 0/1 mask of exactly the pattern per layer (``sparsegpt`` also
rewrites the kept weights and the bias).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
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


#: Torch threads for the per-layer reconstruction (least squares, Cholesky factors, OBS sweep).
#: The sweep is thousands of small column updates; with 2 threads each op pays a parallel
#: region's hand-off, and on a shared 2-core machine a descheduled worker stalls every one
#: of them: a 384x1536 2:4 layer took 7.7 s wall / 6.9 s CPU with 2 threads against 0.61 s
#: with 1 (2026-11-29, load 3; 1536x384: 1.35 s vs 0.15 s). Larger products (``H``) keep
#: the caller's thread count.
RECONSTRUCT_THREADS = 1

#: Refit the kept weights by exact least squares after the sweep chose the mask.
REFIT = True

#: The refit costs one Cholesky factorisation per distinct kept set of a row, so it runs
#: only when rows share their kept sets (blocks: one set per block row). N:M and HSS give
#: every row its own set: on MiniLM that is 384 factorisations of 768x768 for each FFN
#: output layer, and the whole-model init had not finished after 8 CPU minutes (2 threads,
#: 2026-11-29) where the sweep alone takes seconds per layer.
REFIT_MAX_SUPPORTS = 64


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
               blocks: list[str] | None = None, on_layer: Callable[[str], None] | None = None) -> None:
    """Install the initial mask (and, for ``sparsegpt``, weights) of every layer in ``layers``.

    ``layers`` maps qualified names in ``model`` to its :class:`MaskedLinear` modules;
    ``batches`` are calibration batches (``sparsegpt`` only); ``blocks`` names sequential
    sub-modules (transformer layers, in order) that may run alone on cached inputs.
    ``on_layer`` is called with each layer name once done (progress).
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
    _sparsegpt(model, teacher, layers, batches, damp=damp, target=target, blocks=list(blocks or []),
               on_layer=on_layer)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (never more than the caller's)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, old)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _run(fn: Callable[[], Any]) -> None:
    try:
        with torch.no_grad():
            fn()
    except _Stop:
        pass


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except Exception:  # objects without a usable equality: not provably the same
        return False


class _Segment:
    """Runs the student or the teacher on calibration batch ``i``: the whole model, or one
    block alone on its cached inputs (``(args, kwargs)`` per batch)."""

    def __init__(self, model: nn.Module, teacher: nn.Module | None, batches: list[Any],
                 block: str | None = None, inputs: dict[str, list] | None = None):
        self.model, self.teacher, self.batches, self.block, self.inputs = model, teacher, batches, block, inputs

    def run(self, which: str, i: int) -> Any:
        net = self.model if which == "student" else self.teacher
        if self.block is None:
            return call_model(net, self.batches[i])
        args, kwargs = self.inputs[which][i]
        return net.get_submodule(self.block)(*args, **kwargs)


def _execution(model: nn.Module, names: list[str], blocks: list[str], batch: Any) -> tuple[list[str], dict]:
    """Order in which the named linears run on ``batch``, and each block's (args, kwargs, output)."""
    mods = dict(model.named_modules())
    order: list[str] = []
    seen: dict[str, list] = {b: [] for b in blocks}
    hooks = [mods[n].register_forward_pre_hook(lambda m, a, n=n: order.append(n)) for n in names]
    for b in blocks:
        hooks.append(mods[b].register_forward_pre_hook(
            lambda m, a, k, b=b: seen[b].append([a, k, None]) or order.append("<" + b), with_kwargs=True))
        hooks.append(mods[b].register_forward_hook(lambda m, a, o, b=b: seen[b][-1].__setitem__(2, o)))
    try:
        _run(lambda: call_model(model, batch))
    finally:
        for h in hooks:
            h.remove()
    return order, seen


def _is_chain(blocks: list[str], seen: dict) -> bool:
    """Each block ran once, and block ``b+1`` took block ``b``'s output with the same side inputs."""
    if not blocks or any(len(seen[b]) != 1 for b in blocks):
        return False
    for prev, nxt in zip(blocks, blocks[1:]):
        (a0, k0, out), (a1, k1, _) = seen[prev][0], seen[nxt][0]
        if not a1 or len(a1) != len(a0) or k1.keys() != k0.keys() or not _same(a1[0], _first(out)):
            return False
        if not all(_same(x, y) for x, y in zip(a1[1:], a0[1:])) or not all(_same(k1[k], k0[k]) for k in k0):
            return False
    return True


def _block_inputs(net: nn.Module, block: str, batches: list[Any]) -> list:
    """``(args, kwargs)`` of the first call of ``block`` on every batch (the pass stops there)."""
    got: list = []

    def hook(mod, args, kwargs):
        got.append((tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs)))
        raise _Stop

    h = net.get_submodule(block).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for b in batches:
            _run(lambda b=b: call_model(net, b))
    finally:
        h.remove()
    return got


def _next_group(seg: _Segment, layers: dict[str, MaskedLinear], pending: list[str]) -> list[str]:
    """The pending layers the segment reaches first that share one input tensor."""
    group: list[str] = []
    first: list[Any] = [None]

    def hook(name, args):
        if first[0] is None:
            first[0] = args[0]
        if args[0] is not first[0]:
            raise _Stop
        group.append(name)

    hooks = [layers[n].register_forward_pre_hook(lambda m, a, n=n: hook(n, a)) for n in pending]
    try:
        _run(lambda: seg.run("student", 0))
    finally:
        for h in hooks:
            h.remove()
    return group


def _accumulate(seg: _Segment, layers: dict[str, MaskedLinear], group: list[str],
                t_mods: dict[str, nn.Module]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``H = X1^T X1`` of the group's (shared) input and ``C_l = Y_l^T X1`` for every layer
    whose teacher output is the target, streamed batch by batch (float32 products, float64 sums)."""
    K = layers[group[0]].in_features
    H = torch.zeros(K + 1, K + 1, dtype=torch.float64)
    C = {n: torch.zeros(layers[n].out_features, K + 1, dtype=torch.float64) for n in group if n in t_mods}
    xs: list[torch.Tensor] = []
    ys: dict[str, torch.Tensor] = {}

    def grab(mod, args):
        xs.append(args[0].detach())
        raise _Stop

    def out_hook(name, out):
        ys[name] = out.detach()
        if len(ys) == len(C):
            raise _Stop

    for i, batch in enumerate(seg.batches):
        xs.clear()
        ys.clear()
        h = layers[group[0]].register_forward_pre_hook(grab)
        try:
            _run(lambda i=i: seg.run("student", i))
        finally:
            h.remove()
        X = token_rows(batch, xs[0]).to(torch.float32)
        X1 = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype)], 1)
        H += (X1.T @ X1).to(torch.float64)
        if C:
            hooks = [t_mods[n].register_forward_hook(lambda m, a, o, n=n: out_hook(n, o)) for n in C]
            try:
                _run(lambda i=i: seg.run("teacher", i))
            finally:
                for hk in hooks:
                    hk.remove()
            for n in C:
                C[n] += (token_rows(batch, ys[n]).to(torch.float32).T @ X1).to(torch.float64)
    return H, C


def _sparsegpt(model: nn.Module, teacher: nn.Module | None, layers: dict[str, MaskedLinear],
               batches: list[Any], *, damp: float, target: str, blocks: list[str],
               on_layer: Callable[[str], None] | None) -> None:
    names = list(layers)
    use_teacher = teacher is not None and target == "teacher"
    t_all = dict(teacher.named_modules()) if use_teacher else {}
    t_mods = {n: t_all[n] for n in names if isinstance(t_all.get(n), nn.Linear)}
    # blocks run alone on cached inputs when they form a chain in the student (and teacher)
    order, seen = _execution(model, names, blocks, batches[0])
    chain = _is_chain(blocks, seen)
    if chain and use_teacher:
        t_blocks = [b for b in blocks if b in t_all]
        chain = t_blocks == blocks and _is_chain(blocks, _execution(teacher, [], blocks, batches[0])[1])
    segments: list[tuple[str | None, list[str]]] = []
    if chain:
        start = order.index("<" + blocks[0])
        inside = {b: [n for n in names if n.startswith(b + ".")] for b in blocks}
        in_blocks = {n for v in inside.values() for n in v}
        before = [n for n in order[:start] if n in layers and n not in in_blocks]
        segments.append((None, before))
        segments += [(b, inside[b]) for b in blocks]
        segments.append((None, [n for n in names if n not in in_blocks and n not in before]))
    else:
        segments.append((None, names))
    inputs: dict[str, list] | None = None
    for block, members in segments:
        if block is not None and inputs is None:
            inputs = {"student": _block_inputs(model, block, batches)}
            if use_teacher:
                inputs["teacher"] = _block_inputs(teacher, block, batches)
        seg = _Segment(model, teacher, batches, block, inputs)
        pending = list(members)
        while pending:
            group = _next_group(seg, layers, pending)
            if not group:  # the forward pass never reaches the rest: magnitude masks
                for n in pending:
                    init_masks("magnitude", model, teacher, {n: layers[n]}, [], on_layer=on_layer)
                break
            H, C = _accumulate(seg, layers, group, t_mods)
            for name in group:
                with _torch_threads(RECONSTRUCT_THREADS):
                    _reconstruct(layers[name], H, C.get(name), damp)
                pending.remove(name)
                if on_layer:
                    on_layer(name)
        if block is not None:  # this block's outputs are the next block's inputs
            for which in list(inputs):
                net = model if which == "student" else teacher
                with torch.no_grad():
                    inputs[which] = [((_first(net.get_submodule(block)(*a, **k)).detach(),) + tuple(a[1:]), k)
                                     for a, k in inputs[which]]


def _refit(R: torch.Tensor, Hc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact least squares of every row on its kept columns: ``w_S = Hc[S, S]^-1 R[i, S]``.

    Rows with the same kept set share one Cholesky factorisation (block rows, for blocks).
    """
    out = torch.zeros_like(R)
    keep = mask.to(torch.bool)
    supports, which = torch.unique(keep, dim=0, return_inverse=True)
    for u in range(supports.shape[0]):
        rows = torch.nonzero(which == u).flatten()
        cols = torch.nonzero(supports[u]).flatten()
        if cols.numel() == 0:
            continue
        L = torch.linalg.cholesky(Hc[cols[:, None], cols[None, :]])
        rhs = R[rows[:, None], cols[None, :]].T
        out[rows[:, None], cols[None, :]] = torch.cholesky_solve(rhs, L).T
    return out


def _reconstruct(layer: MaskedLinear, H: torch.Tensor, C: torch.Tensor | None, damp: float,
                 refit: bool | None = None) -> None:
    """Least-squares target map from ``H`` and ``C`` (``None``: the layer's own weights), the
    OBS sweep that chooses the mask, then (``refit``; default: when at most
    :data:`REFIT_MAX_SUPPORTS` distinct kept sets) the exact least squares of the kept weights
    on that mask; installs weights, bias and mask."""
    W = layer.weight.detach().to("cpu", torch.float64)
    M, K = W.shape
    has_bias = layer.bias is not None
    b = layer.bias.detach().to("cpu", torch.float64) if has_bias else torch.zeros(M, dtype=torch.float64)
    cols = K + 1 if has_bias else K
    Hc = H[:cols, :cols].clone()
    lam = damp * float(torch.diagonal(Hc)[:K].mean()) if K else 0.0
    Hc.diagonal().add_(lam if lam > 0 else 1e-8)
    if C is not None:
        # dense least-squares map from the student's inputs to the teacher's outputs
        Wstar = torch.linalg.solve(Hc, C[:, :cols].T).T
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
    if refit is None:
        refit = REFIT and torch.unique(mask.to(torch.bool), dim=0).shape[0] <= REFIT_MAX_SUPPORTS
    if refit:
        Wc = _refit(Wstar @ Hc, Hc, mask)
    with torch.no_grad():
        layer.weight.copy_(Wc[:, :K].to(layer.weight.dtype))
        if has_bias:
            layer.bias.copy_(Wc[:, K].to(layer.bias.dtype))
    layer.set_mask(mask[:, :K], zero_pruned=True)
