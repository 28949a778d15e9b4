"""Design registry: every modelled accelerator by name, and :func:`evaluate` / :func:`compare`.

A design is a function ``(architecture, one layer) -> Report``; :func:`evaluate` loads the
design's default preset (or takes an :class:`~flexsparse.model.arch.Architecture`), runs every
layer of the workload and adds the layers up. Unknown names raise ``ValueError`` listing the
valid ones. Cost: that of the design (O(1) statistical, O(nnz log nnz) on actual data).

>>> from flexsparse.model.workload import MatmulWorkload
>>> evaluate("dense", MatmulWorkload("g", 64, 64, 64)).algorithmic_macs
262144.0
>>> evaluate("tpu", MatmulWorkload("g", 8, 8, 8))
Traceback (most recent call last):
...
ValueError: unknown design 'tpu'; valid: dense, dstc, extensor-n, extensor-ob, extensor-p, ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flexsparse.model.arch import Architecture, load_architecture
from flexsparse.model.report import Report, combine
from flexsparse.model.workload import ContractionWorkload, Workload, load_workload

__all__ = ["Design", "DESIGNS", "get_design", "list_designs", "register_design", "evaluate", "compare"]


@dataclass(frozen=True)
class Design:
    """A registered design: its name, default preset and per-layer evaluator."""

    name: str
    preset: str
    run: Callable[..., Report]
    doc: str


DESIGNS: dict[str, Design] = {}


def register_design(name: str, preset: str, doc: str) -> Callable[[Callable[..., Report]], Callable[..., Report]]:
    """Decorator registering ``fn(arch, layer, **options) -> Report`` under ``name``."""
    def deco(fn: Callable[..., Report]) -> Callable[..., Report]:
        DESIGNS[name] = Design(name, preset, fn, doc)
        return fn
    return deco


def list_designs() -> list[str]:
    """Sorted registered names."""
    return sorted(DESIGNS)


def get_design(name: str) -> Design:
    """The design called ``name``."""
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r}; valid: {', '.join(list_designs())}")
    return DESIGNS[name]


def _gemm(name: str) -> Callable[..., Report]:
    def run(arch: Architecture, layer: Any, **_: Any) -> Report:
        from flexsparse.model.designs.dnn import evaluate_gemm
        if isinstance(layer, ContractionWorkload):
            layer = layer.as_matmul()
        rep = evaluate_gemm(name, arch, layer)
        return rep
    return run


for _name, _doc in (("generic", "Sparseloop-style: the architecture's own skip/gate features"),
                    ("dense", "no sparsity support"), ("stc", "NVIDIA sparse tensor core, 2:4 weights"),
                    ("dstc", "dual-side sparse tensor core, unstructured, outer product"),
                    ("highlight", "HighLight, hierarchical structured sparse (HSS) weights")):
    register_design(_name, "sparseloop-golden" if _name == "generic" else _name, _doc)(_gemm(_name))


def _extensor(strategy: str) -> Callable[..., Report]:
    def run(arch: Architecture, layer: Any, seed: int = 0, **_: Any) -> Report:
        from flexsparse.model.designs.extensor import evaluate_extensor
        if isinstance(layer, ContractionWorkload):
            layer = layer.as_matmul()
        return evaluate_extensor(strategy, arch, layer, seed=seed)
    return run


for _s, _doc in (("n", "tiles sized as if dense"), ("p", "prescient tiling, pre-processing charged"),
                 ("ob", "Swiftiles sizing + Tailors overbooking")):
    register_design(f"extensor-{_s}", "extensor", f"ExTensor SpMSpM, {_doc}")(_extensor(_s))


def _flaash(default: str) -> Callable[..., Report]:
    def run(arch: Architecture, layer: Any, distribution: str = default, seed: int = 0, **_: Any) -> Report:
        from flexsparse.model.designs.flaash import evaluate_flaash
        return evaluate_flaash(arch, layer, distribution=distribution, seed=seed)
    return run


register_design("flaash", "flaash", "FLAASH dot-product engines, round-robin jobs")(_flaash("round-robin"))
register_design("flaash-cb", "flaash", "FLAASH with cost-balanced job distribution")(_flaash("cost-balanced"))


def evaluate(design: str, workload: Workload | str, arch: Architecture | str | None = None, **options: Any) -> Report:
    """Evaluate ``design`` on ``workload`` (a workload object or a shipped workload name).

    ``arch`` defaults to the design's preset; ``options`` go to the design (``seed``,
    ``distribution`` for FLAASH).
    """
    d = get_design(design)
    if isinstance(workload, str):
        workload = load_workload(workload)
    if arch is None:
        arch = load_architecture(d.preset)
    elif not isinstance(arch, Architecture):
        arch = load_architecture(arch)
    layers = getattr(workload, "layers", None)
    if not layers:
        raise ValueError(f"workload {getattr(workload, 'name', workload)!r} has no layers")
    parts = [d.run(arch, layer, **options) for layer in layers]
    if len(parts) == 1 and parts[0].workload == workload.name:
        return parts[0]
    return combine(parts[0].design, workload.name, parts)


def compare(designs: Sequence[str], workload: Workload | str, archs: dict[str, Architecture] | None = None,
            **options: Any) -> list[Report]:
    """One report per design on the same workload (print them with ``report.print_table``)."""
    if not designs:
        raise ValueError("compare needs at least one design")
    return [evaluate(name, workload, (archs or {}).get(name), **options) for name in designs]


