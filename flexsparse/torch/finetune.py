"""``finetune``: train a model with a sparsity pattern held, then swap in sparse layers.

One call takes any ``nn.Module`` with ``nn.Linear`` layers, a pattern (anything
:func:`flexsparse.prune` accepts: ``"2:4"``, HSS ``"4:6->1:4"``, ``"block:32x32"`` with
``density=``) and training batches, and:

1. copies the dense model as the frozen teacher (unless ``teacher=`` is given);
2. swaps the selected ``nn.Linear`` layers (``include`` / ``exclude`` as in
   :func:`flexsparse.torch.sparsify`) for :class:`~flexsparse.torch.finetune_methods.MaskedLinear`
   and installs their first masks (``init=``: magnitude, or SparseGPT-style layer-wise
   reconstruction on a few calibration batches, see :mod:`flexsparse.torch.finetune_init`);
3. trains with AdamW under a method (``method=``: ``"masked"`` fixed mask, ``"srste"``,
   ``"bdwp"``; see :mod:`flexsparse.torch.finetune_methods`) on a loss (``loss=``; default
   ``"distill"``: the student's output matched to the teacher's by cosine and normalised
   MSE, plus normalised MSE on the outputs of the ``hidden=`` modules -- e.g. every
   transformer block), for ``steps`` optimiser steps and/or ``max_time`` seconds (the
   learning rate warms up, then decays linearly to zero over whichever budget ends first);
4. swaps every trained layer for a :class:`~flexsparse.torch.SparseLinear` holding exactly
   the masked weight (``result="sparse"``, checked) or a plain ``nn.Linear`` with the
   pruned weights zero (``result="dense"``), and returns a :class:`FinetuneSummary`.

Batches are whatever the model takes: a tensor (``model(x)``), a tuple (``model(*b)``) or a
mapping (``model(dict(b))``, e.g. tokenizer features; its ``attention_mask`` excludes padded
tokens from the token-level losses and the calibration). A sequence of batches is revisited
in a new seeded order each epoch; any other iterable is consumed once.

Cost per step: one teacher forward (skipped with ``cache_teacher=True`` after the first
epoch) and one student forward + backward with dense BLAS on masked weights, plus
``O(params)`` for AdamW. Runs are deterministic for a given ``seed`` and step count
(``max_time`` makes the step count depend on the machine's speed).

>>> import torch
>>> torch.manual_seed(0) and None
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> data = [torch.randn(32, 8) for _ in range(4)]
>>> summary = finetune(model, "2:4", data, steps=20, lr=1e-2, progress=False)
>>> type(model[0]).__name__, summary.steps, summary.kept_fraction
('SparseLinear', 20, 0.5)
>>> summary.loss_end < summary.loss_start
True
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

from flexsparse.torch.finetune_init import INITS, call_model, init_masks, token_rows
from flexsparse.torch.finetune_methods import METHODS, MaskedLinear, Method, resolve_method
from flexsparse.torch.linear import SparseLinear
from flexsparse.torch.sparsify import LayerSummary, LayerTotals, Selector, _selectors

__all__ = ["FinetuneSummary", "LOSSES", "METHODS", "INITS", "RESULTS", "SCHEDULES", "finetune"]

#: What the trained layers become: sparse kernels, or dense nn.Linear with zeros.
RESULTS = ("sparse", "dense")
#: Learning-rate schedules after warm-up (the fraction of training done is the larger of
#: steps done / ``steps`` and time used / ``max_time``).
SCHEDULES = ("linear", "cosine", "constant")
#: Losses are averaged over at most this many recent steps for ``loss_start``/``loss_end``.
LOSS_WINDOW = 10
_EPS = 1e-12


# ----------------------------------------------------------------------------- losses
def _as_rows(batch: Any, t: torch.Tensor) -> torch.Tensor:
    return token_rows(batch, t) if t.dim() >= 2 else t.reshape(1, -1)


def _cosine_rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8).mean()


def _nmse_rows(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean squared error normalised by the teacher's variance (scale free)."""
    return (s - t).pow(2).mean() / (t.detach().var(unbiased=False) + _EPS)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor, batch: Any) -> torch.Tensor:
    """``1 - cos`` along the last dim, averaged over rows (padded tokens dropped)."""
    return _cosine_rows(_as_rows(batch, student), _as_rows(batch, teacher))


def mse_loss(student: torch.Tensor, teacher: torch.Tensor, batch: Any) -> torch.Tensor:
    """MSE over rows (padded tokens dropped) divided by the teacher's variance."""
    return _nmse_rows(_as_rows(batch, student), _as_rows(batch, teacher))


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, batch: Any) -> torch.Tensor:
    """``cosine_loss + mse_loss``: direction and scale of the teacher's output."""
    s, t = _as_rows(batch, student), _as_rows(batch, teacher)
    return _cosine_rows(s, t) + _nmse_rows(s, t)


#: Output losses by name: ``fn(student_out, teacher_out, batch) -> scalar tensor``.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]] = {
    "distill": distill_loss, "cosine": cosine_loss, "mse": mse_loss}


def _resolve_loss(loss: str | Callable) -> Callable:
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise ValueError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)} (or a callable)")


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        for key in ("sentence_embedding", "last_hidden_state", "logits"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
        for v in out.values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return v
    for attr in ("last_hidden_state", "logits"):
        if isinstance(getattr(out, attr, None), torch.Tensor):
            return getattr(out, attr)
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise TypeError(f"cannot find a tensor in the model output of type {type(out).__name__}; "
                    f"pass output= (a key or a callable)")


def _resolve_output(output: str | Callable | None) -> Callable[[Any], torch.Tensor]:
    """``output=``: None (the first float tensor, preferring the usual keys), a key, a callable."""
    if output is None:
        return _first_tensor
    if callable(output):
        return output
    if isinstance(output, str):
        def pick(out: Any) -> torch.Tensor:
            val = out[output] if isinstance(out, Mapping) else getattr(out, output, None)
            if not isinstance(val, torch.Tensor):
                raise KeyError(f"model output has no tensor {output!r}")
            return val
        return pick
    raise TypeError(f"output must be None, a key or a callable, not {type(output).__name__}")


# ---------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class FinetuneSummary(LayerTotals):
    """What :func:`finetune` did; ``str()`` is a plain report, ``__rich__`` a rich Table.

    ``seconds`` / ``cpu_seconds``: wall-clock and process CPU time of the whole call;
    ``init_seconds`` / ``init_cpu_seconds``: the part spent choosing the first masks
    (calibration), in ``clock`` units / process CPU seconds;
    ``stopped_by``: ``"steps"``, ``"time"`` or ``"data"``; ``losses``: one per step;
    ``layers``: per layer shapes, weights kept (``.density`` = kept fraction) and bytes.
    """

    pattern: str
    density: float | None
    method: str
    init: str
    result: str
    steps: int
    epochs: float
    seconds: float
    cpu_seconds: float
    init_seconds: float
    init_cpu_seconds: float
    stopped_by: str
    loss_start: float
    loss_end: float
    losses: tuple[float, ...]
    mask_refreshes: int
    layers: tuple[LayerSummary, ...]

    @property
    def train_cpu_per_step(self) -> float:
        """Process CPU seconds per optimiser step, mask choice excluded (nan without steps)."""
        return (self.cpu_seconds - self.init_cpu_seconds) / self.steps if self.steps else float("nan")

    @property
    def kept_fraction(self) -> float:
        """Kept fraction of the trained layers' weights (biases excluded)."""
        return self.weights_kept / self.weights_total if self.weights_total else 0.0

    def _rows(self) -> list[tuple[str, str]]:
        dens = f" density={self.density}" if self.density is not None else ""
        return [
            ("pattern", f"{self.pattern}{dens} ({len(self.layers)} layers, {self.kept_fraction:.3f} of weights kept)"),
            ("method / init / result", f"{self.method} / {self.init} / {self.result}"),
            ("steps", f"{self.steps} ({self.epochs:.2f} epochs; stopped by {self.stopped_by}; "
                      f"{self.mask_refreshes} mask refreshes)"),
            ("time", f"{self.seconds:.1f} s wall, {self.cpu_seconds:.1f} s CPU "
                     f"({self.init_seconds:.1f} s, {self.init_cpu_seconds:.1f} CPU-s choosing masks; "
                     f"{self.train_cpu_per_step:.3f} CPU-s per training step)"),
            ("loss", f"{self.loss_start:.4g} -> {self.loss_end:.4g} (mean of the first / last "
                     f"{min(LOSS_WINDOW, max(1, len(self.losses)))} steps)"),
            ("weights kept", f"{self.weights_kept:,} / {self.weights_total:,}"),
            ("bytes sparse / dense", f"{self.bytes_sparse:,} / {self.bytes_dense:,} (with biases)"),
        ]

    def __str__(self) -> str:
        rows = self._rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(["finetune"] + [f"  {k.ljust(width)}  {v}" for k, v in rows])

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title="finetune", show_header=False)
        table.add_column(justify="left")
        table.add_column(justify="left")
        for k, v in self._rows():
            table.add_row(k, v)
        return table


# ------------------------------------------------------------------------ data helpers
class _Batches:
    """Cycles a sequence in a new seeded order per epoch, or consumes an iterable once."""

    def __init__(self, data: Any, seed: int):
        self.seq = data if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) else None
        if self.seq is not None and len(self.seq) == 0:
            raise ValueError("data holds no batches")
        self.it = None if self.seq is not None else iter(data)
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0
        self.epochs_done = 0

    def next(self) -> tuple[int | None, Any] | None:
        if self.seq is None:
            try:
                return None, next(self.it)
            except StopIteration:
                return None
        if self.pos == len(self.order):
            if self.order:
                self.epochs_done += 1
            self.order = list(range(len(self.seq)))
            self.rng.shuffle(self.order)
            self.pos = 0
        i = self.order[self.pos]
        self.pos += 1
        return i, self.seq[i]

    def epochs(self) -> float:
        if self.seq is None or not self.order:
            return float(self.epochs_done)
        return self.epochs_done + self.pos / len(self.seq)


def _matching_modules(model: nn.Module, selectors: Selector, what: str) -> list[str]:
    sels = _selectors(selectors, what)
    if not sels:
        return []
    names = [n for n, _ in model.named_modules() if n and any(f(n) for f in sels)]
    if not names:
        raise ValueError(f"{what} {selectors!r} matches no module of the model")
    return names


def _hidden_hooks(model: nn.Module, names: list[str], store: dict[str, torch.Tensor]) -> list[Any]:
    mods = dict(model.named_modules())

    def hook(mod, args, out, name):
        store[name] = out[0] if isinstance(out, (tuple, list)) else out

    return [mods[n].register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]


def _check_pattern(pattern: str, density: float | None) -> None:
    """Raise the error ``flexsparse.prune`` would raise for a bad pattern, before any work."""
    from flexsparse.prune import prune_mask

    prune_mask(np.ones((2, 64), dtype=np.float32), pattern, density=density)


def _lr_factor(progress: float, warmup: float, schedule: str) -> float:
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    rest = (progress - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    rest = min(max(rest, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - rest
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    return 1.0


# ------------------------------------------------------------------------------- main
def finetune(model: nn.Module, pattern: str, data: Any, *, density: float | None = None,
             steps: int | None = None, max_time: float | None = None, method: str | Method = "masked",
             init: str = "magnitude", calibration: int | Sequence[Any] = 4, loss: str | Callable = "distill",
             teacher: nn.Module | None = None, output: str | Callable | None = None,
             hidden: Selector = None, hidden_weight: float = 1.0, lr: float = 1e-4,
             weight_decay: float = 0.0, warmup: float = 0.0, schedule: str = "linear",
             include: Selector = None, exclude: Selector = None, freeze: Selector = None,
             result: str = "sparse", dropout: bool = False, cache_teacher: bool = False,
             damp: float = 0.01, seed: int = 0, progress: bool = True,
             clock: Callable[[], float] = time.perf_counter, backend: str = "auto",
             dispatch: str = "auto") -> FinetuneSummary:
    """Fine-tune ``model`` in place with ``pattern`` held; see the module docstring.

    Args:
        model: any ``nn.Module``; its selected ``nn.Linear`` layers end up as
            ``SparseLinear`` (``result="sparse"``) or masked ``nn.Linear`` (``"dense"``).
        pattern, density: as :func:`flexsparse.prune` (``density`` for block patterns).
        data: training batches (a sequence is cycled through epochs).
        steps: optimiser steps; max_time: seconds of ``clock`` for the whole call. With
            neither, one pass over ``data``.
        method: ``"masked"``, ``"srste"``, ``"bdwp"`` or a :class:`Method` instance.
        init: first masks: ``"magnitude"`` or ``"sparsegpt"`` (layer-wise reconstruction).
        calibration: batches for ``init="sparsegpt"``: a sequence, or how many of the first
            batches of ``data`` (a sequence) to use.
        loss: a name in :data:`LOSSES` or ``fn(student_out, teacher_out, batch)``.
        teacher: the dense reference (default: a frozen copy of ``model`` taken first).
        output: picks the tensor the loss compares from the model output (key or callable).
        hidden: module selectors (globs / callables on qualified names) whose outputs are
            matched too (normalised MSE, averaged, times ``hidden_weight``); when they are
            sequential blocks (transformer layers) the calibration runs them one at a time.
        lr, weight_decay, warmup, schedule: AdamW and its learning-rate schedule
            (``warmup``: fraction of training).
        include, exclude: which ``nn.Linear`` layers to sparsify (as ``sparsify``).
        freeze: parameter-name selectors left untrained (e.g. ``"*word_embeddings*"``).
        result: ``"sparse"`` or ``"dense"`` (see :data:`RESULTS`).
        dropout: train the student in train mode (dropout on); default eval mode.
        cache_teacher: keep the teacher's outputs per batch of a sequence (memory for speed).
        damp: relative damping of the calibration least squares.
        seed: seeds batch order and torch's RNG (restored afterwards).
        progress: show a rich progress bar.
        clock: the clock of ``max_time`` (e.g. ``time.process_time`` on a shared machine).
        backend, dispatch: passed to ``SparseLinear``.

    Returns:
        :class:`FinetuneSummary`.
    """
    t_wall, t_cpu, t0 = time.perf_counter(), time.process_time(), clock()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise TypeError("model is itself an nn.Linear and cannot be replaced in place; wrap it in a module")
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string such as '2:4', '4:6->1:4' or 'block:32x32', "
                        f"not {type(pattern).__name__}")
    meth = resolve_method(method)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
    if result not in RESULTS:
        raise ValueError(f"unknown result {result!r}; valid results: {', '.join(RESULTS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    loss_fn, pick = _resolve_loss(loss), _resolve_output(output)
    if steps is not None and int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if max_time is not None and not float(max_time) > 0:
        raise ValueError(f"max_time must be > 0 seconds, got {max_time}")
    if not 0.0 <= float(warmup) < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup}")
    _check_pattern(pattern, density)
    batches = _Batches(data, seed)

    # -------- select layers and the teacher
    inc, exc = _selectors(include, "include"), _selectors(exclude, "exclude")
    linears = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not isinstance(m, (MaskedLinear, SparseLinear))]
    chosen = [(n, m) for n, m in linears
              if (inc is None or any(f(n) for f in inc)) and not (exc and any(f(n) for f in exc))]
    if not chosen:
        names = ", ".join(n for n, _ in linears[:20]) + (" ..." if len(linears) > 20 else "")
        raise ValueError(f"no nn.Linear layer selected (include={include!r}, exclude={exclude!r}); "
                         f"layers are: {names or '(none)'}")
    hidden_names = _matching_modules(model, hidden, "hidden")
    if teacher is None:
        teacher = copy.deepcopy(model)
    teacher_was_training = teacher.training
    teacher.eval()
    teacher_params = [(p, p.requires_grad) for p in teacher.parameters()]
    for p, _ in teacher_params:
        p.requires_grad_(False)
    was_training = model.training

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: dict[str, MaskedLinear] = {}
        for name, lin in chosen:
            ml = MaskedLinear(lin, pattern, density, meth)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, ml)
            layers[name] = ml

        # -------- first masks
        calib = list(calibration) if not isinstance(calibration, int) else (
            list(batches.seq[:calibration]) if batches.seq is not None else [])
        model.eval()
        init_masks(init, model, teacher, layers, calib if init == "sparsegpt" else [], damp=damp,
                   blocks=hidden_names)
        for ml in layers.values():
            meth.init_layer(ml)
        init_seconds = clock() - t0
        init_cpu = time.process_time() - t_cpu

        # -------- train
        model.train(dropout)
        freeze_sel = _selectors(freeze, "freeze")
        params = [p for n, p in model.named_parameters()
                  if p.requires_grad and not (freeze_sel and any(f(n) for f in freeze_sel))]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if params else None
        s_hidden: dict[str, torch.Tensor] = {}
        t_hidden: dict[str, torch.Tensor] = {}
        hooks = _hidden_hooks(model, hidden_names, s_hidden) + _hidden_hooks(teacher, hidden_names, t_hidden)
        cache: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        losses: list[float] = []
        step, stopped_by = 0, "data"
        t_train = clock()
        budget = None if max_time is None else float(max_time) - (t_train - t0)
        n_steps = int(steps) if steps is not None else (
            len(batches.seq) if (max_time is None and batches.seq is not None) else None)
        ordered = list(layers.values())
        bar = _progress_bar(progress, n_steps, budget)
        try:
            if bar is not None:
                bar.start()
                task = bar.add_task("fine-tuning", total=1000, loss=float("nan"), step=0)
            while True:
                frac_steps = step / n_steps if n_steps else 0.0
                frac_time = (clock() - t_train) / budget if budget else 0.0
                done = max(frac_steps, frac_time)
                if n_steps is not None and step >= n_steps:
                    stopped_by = "steps"
                    break
                if budget is not None and frac_time >= 1.0:
                    stopped_by = "time"
                    break
                nxt = batches.next()
                if nxt is None or opt is None:
                    stopped_by = "data"
                    break
                idx, batch = nxt
                for g in opt.param_groups:
                    g["lr"] = lr * _lr_factor(done, float(warmup), schedule)
                if cache_teacher and idx is not None and idx in cache:
                    t_out, t_hid = cache[idx]
                else:
                    t_hidden.clear()
                    with torch.no_grad():
                        t_out = pick(call_model(teacher, batch)).detach()
                    # token rows only (padding dropped): what the loss compares, and less to cache
                    t_hid = {n: _as_rows(batch, v.detach()) for n, v in t_hidden.items()}
                    if cache_teacher and idx is not None:
                        cache[idx] = (t_out, t_hid)
                s_hidden.clear()
                s_out = pick(call_model(model, batch))
                value = loss_fn(s_out, t_out, batch)
                if hidden_names:
                    hl = sum(_nmse_rows(_as_rows(batch, s_hidden[n]), t_hid[n]) for n in hidden_names)
                    value = value + hidden_weight * hl / len(hidden_names)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                step += 1
                losses.append(float(value.detach()))
                frac_steps = step / n_steps if n_steps else 0.0
                frac_time = (clock() - t_train) / budget if budget else 0.0
                meth.after_step(ordered, step, max(frac_steps, frac_time))
                if bar is not None:
                    bar.update(task, completed=int(1000 * min(1.0, max(frac_steps, frac_time))),
                               loss=losses[-1], step=step)
        finally:
            for h in hooks:
                h.remove()
            if bar is not None:
                bar.stop()
        meth.freeze(ordered)

        # -------- swap in the final layers
        summaries = []
        for name, ml in layers.items():
            final, summary = _finalise(name, ml, result, backend, dispatch)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, final)
            summaries.append(summary)
    model.train(was_training)
    for p, req in teacher_params:
        p.requires_grad_(req)
    teacher.train(teacher_was_training)
    window = max(1, min(LOSS_WINDOW, len(losses)))
    return FinetuneSummary(
        pattern=pattern, density=density, method=meth.name, init=init, result=result, steps=step,
        epochs=batches.epochs(), seconds=time.perf_counter() - t_wall, cpu_seconds=time.process_time() - t_cpu,
        init_seconds=init_seconds, init_cpu_seconds=init_cpu, stopped_by=stopped_by,
        loss_start=float(np.mean(losses[:window])) if losses else float("nan"),
        loss_end=float(np.mean(losses[-window:])) if losses else float("nan"),
        losses=tuple(losses), mask_refreshes=meth.refreshes, layers=tuple(summaries))


def _progress_bar(enabled: bool, n_steps: int | None, budget: float | None) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    what = " / ".join(x for x in (f"{n_steps} steps" if n_steps else "", f"{budget:.0f} s" if budget else "") if x)
    return Progress(TextColumn(f"[bold]{{task.description}}[/] ({what or 'one pass'})"), BarColumn(),
                    TextColumn("step {task.fields[step]}"), TextColumn("loss {task.fields[loss]:.4f}"),
                    TimeElapsedColumn(), TimeRemainingColumn())


def _finalise(name: str, ml: MaskedLinear, result: str, backend: str, dispatch: str) -> tuple[nn.Module, LayerSummary]:
    """The layer that replaces ``ml`` and its summary row; checks the sparse weight exactly."""
    dense = ml.to_linear()
    sparse = SparseLinear.from_linear(dense, ml.pattern, ml.density, backend=backend, dispatch=dispatch)
    back = sparse.to_dense_linear().weight.detach()
    if not torch.equal(back.to(dense.weight.dtype), dense.weight.detach()):
        raise RuntimeError(f"layer {name!r}: the SparseLinear weight differs from the trained masked "
                           f"weight (pattern {ml.pattern!r})")
    kept = int(ml.mask.sum().item())
    if kept != sparse.nnz:
        raise RuntimeError(f"layer {name!r}: the mask keeps {kept} weights but the pattern "
                           f"{ml.pattern!r} stores {sparse.nnz}")
    item = dense.weight.element_size()
    n_bias = dense.out_features if dense.bias is not None else 0
    summary = LayerSummary(
        name=name, in_features=dense.in_features, out_features=dense.out_features, pattern=ml.pattern,
        weight_kept=kept, weight_total=dense.in_features * dense.out_features, bias=n_bias,
        bytes_dense=(dense.in_features * dense.out_features + n_bias) * item,
        bytes_sparse=sparse.sparse_nbytes + n_bias * item)
    return (sparse if result == "sparse" else dense), summary
