"""``sparsify``: swap a model's ``nn.Linear`` layers for :class:`SparseLinear` in place.

Walks ``model.named_modules()``, selects the ``nn.Linear`` layers whose qualified name
passes ``include`` / ``exclude`` (shell-style glob patterns matched with ``fnmatch``, or
callables ``name -> bool``), prunes each with ``flexsparse.prune`` (magnitude, no
fine-tuning) and replaces it on its parent module. Cost: one prune per layer, ``O(M*K)``
(plus a sort per group). Returns a :class:`SparsifySummary` (frozen dataclass) with per
layer shapes, parameters kept and bytes (dense versus sparse, values + index metadata).

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> summary = sparsify(model, "2:4", exclude=["2"])
>>> type(model[0]).__name__, type(model[2]).__name__
('SparseLinear', 'Linear')
>>> summary.layers[0].weight_kept, summary.layers[0].weight_total
(64, 128)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Union

try:
    from torch import nn
except ImportError as exc:  # optional dependency
    raise ImportError("flexsparse.torch needs PyTorch: pip install flexsparse[torch]") from exc

from flexsparse.torch.linear import SparseLinear

__all__ = ["LayerSummary", "LayerTotals", "SparsifySummary", "sparsify"]

Selector = Union[str, Callable[[str], bool], Iterable[Union[str, Callable[[str], bool]]], None]


@dataclass(frozen=True)
class LayerSummary:
    """One replaced layer: name, shape, kept weights, bytes dense versus sparse (with bias)."""

    name: str
    in_features: int
    out_features: int
    pattern: str
    weight_kept: int
    weight_total: int
    bias: int
    bytes_dense: int
    bytes_sparse: int

    @property
    def density(self) -> float:
        return self.weight_kept / self.weight_total if self.weight_total else 0.0

    @property
    def params_dense(self) -> int:
        return self.weight_total + self.bias

    @property
    def params_kept(self) -> int:
        return self.weight_kept + self.bias


class LayerTotals:
    """Totals over the ``layers`` (a tuple of :class:`LayerSummary`) of a summary dataclass."""

    layers: tuple[LayerSummary, ...]

    @property
    def params_dense(self) -> int:
        return sum(layer.params_dense for layer in self.layers)

    @property
    def params_kept(self) -> int:
        return sum(layer.params_kept for layer in self.layers)

    @property
    def weights_kept(self) -> int:
        return sum(layer.weight_kept for layer in self.layers)

    @property
    def weights_total(self) -> int:
        return sum(layer.weight_total for layer in self.layers)

    @property
    def bytes_dense(self) -> int:
        return sum(layer.bytes_dense for layer in self.layers)

    @property
    def bytes_sparse(self) -> int:
        return sum(layer.bytes_sparse for layer in self.layers)


@dataclass(frozen=True)
class SparsifySummary(LayerTotals):
    """What :func:`sparsify` replaced; ``str()`` is a plain table, ``__rich__`` a rich Table."""

    pattern: str
    density: float | None
    layers: tuple[LayerSummary, ...]

    def _rows(self) -> list[tuple[str, ...]]:
        rows = [(layer.name, f"{layer.out_features}x{layer.in_features}", f"{layer.density:.3f}",
                 f"{layer.params_kept:,}/{layer.params_dense:,}", f"{layer.bytes_sparse:,}",
                 f"{layer.bytes_dense:,}") for layer in self.layers]
        ratio = self.params_kept / self.params_dense if self.params_dense else 0.0
        rows.append((f"total ({len(self.layers)} layers)", "", f"{ratio:.3f}",
                     f"{self.params_kept:,}/{self.params_dense:,}", f"{self.bytes_sparse:,}",
                     f"{self.bytes_dense:,}"))
        return rows

    _HEADER = ("layer", "out x in", "density", "params kept", "bytes sparse", "bytes dense")

    def __str__(self) -> str:
        rows = [self._HEADER] + self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [f"sparsify pattern={self.pattern!r}" + (f" density={self.density}" if self.density else "")]
        for k, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
            if k == 0 or k == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=f"sparsify {self.pattern}" + (f" density={self.density}" if self.density else ""))
        for i, h in enumerate(self._HEADER):
            table.add_column(h, justify="left" if i == 0 else "right")
        rows = self._rows()
        for k, r in enumerate(rows):
            table.add_row(*r, end_section=(k == len(rows) - 2))
        return table


def _selectors(sel: Selector, what: str) -> list[Callable[[str], bool]] | None:
    if sel is None:
        return None
    items = [sel] if isinstance(sel, str) or callable(sel) else list(sel)
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(lambda name, pat=item: fnmatch.fnmatchcase(name, pat))
        elif callable(item):
            out.append(item)
        else:
            raise TypeError(f"{what} entries must be glob strings or callables, got {type(item).__name__}")
    return out


def sparsify(model: nn.Module, pattern: str, density: float | None = None, include: Selector = None,
             exclude: Selector = None, *, backend: str = "auto", dispatch: str = "auto") -> SparsifySummary:
    """Replace the selected ``nn.Linear`` layers of ``model`` by pruned :class:`SparseLinear`.

    Args:
        model: any ``nn.Module``; modified in place (a bare ``nn.Linear`` root cannot be
            replaced in place: wrap it, or use ``SparseLinear.from_linear``).
        pattern: ``"2:4"``, ``"3:4->2:4"``, ``"block:32x32"``... (see ``flexsparse.prune``).
        density: fraction of blocks kept (block patterns).
        include: glob pattern(s) or callable(s) on qualified module names; default: every
            ``nn.Linear``. A layer is taken if ANY include matches.
        exclude: glob pattern(s) or callable(s); a layer is skipped if ANY matches.
        backend, dispatch: passed to :class:`SparseLinear`.

    Returns:
        A :class:`SparsifySummary`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or is itself an ``nn.Linear``.
        ValueError: ``include`` was given and matches no ``nn.Linear`` layer (the message
            lists the layer names), or the pattern is invalid.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise TypeError("model is itself an nn.Linear and cannot be replaced in place; "
                        "use SparseLinear.from_linear(model, pattern)")
    inc, exc = _selectors(include, "include"), _selectors(exclude, "exclude")
    linears = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and not isinstance(mod, SparseLinear)]
    chosen = [(n, m) for n, m in linears
              if (inc is None or any(f(n) for f in inc)) and not (exc and any(f(n) for f in exc))]
    if inc is not None and not any(any(f(n) for f in inc) for n, _ in linears):
        names = ", ".join(n for n, _ in linears[:20]) + (" ..." if len(linears) > 20 else "")
        raise ValueError(f"include {include!r} matches no nn.Linear layer; layers are: {names or '(none)'}")
    layers = []
    for name, lin in chosen:
        sparse = SparseLinear.from_linear(lin, pattern, density, backend=backend, dispatch=dispatch)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, sparse)
        item = lin.weight.element_size()
        n_bias = lin.out_features if lin.bias is not None else 0
        layers.append(LayerSummary(
            name=name, in_features=lin.in_features, out_features=lin.out_features, pattern=str(pattern),
            weight_kept=sparse.nnz, weight_total=lin.in_features * lin.out_features, bias=n_bias,
            bytes_dense=(lin.in_features * lin.out_features + n_bias) * item,
            bytes_sparse=sparse.sparse_nbytes + n_bias * item))
    return SparsifySummary(pattern=str(pattern), density=density, layers=tuple(layers))
