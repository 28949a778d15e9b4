"""Sparseloop-compatible analytical model of sparse tensor accelerators.

Reads Timeloop/Sparseloop inputs (architecture trees, problem with densities, mapping,
``sparse_optimizations``, ERT), runs Timeloop's dense loop-nest analysis and Sparseloop's
format/gating/skipping analysis, and reports cycles, energy and per-level actions. Validated
against the Sparseloop MICRO'22 artifact (``flexsparse model artifact``); see MODEL.md.

>>> from flexsparse.model.sparseloop import evaluate
>>> # ev = evaluate(["arch.yaml", "problem.yaml", "map.yaml", "ERT.yaml"]); ev.cycles, ev.energy_uJ

Modules: ``yamlio`` (inputs, line-aware errors), ``spec`` (architecture, ERT, problem),
``mapping``, ``nest`` (dense analysis), ``density``, ``formats`` (representation), ``saf``
(gating/skipping/compute), ``position`` (position skipping), ``actual`` (actual-data masks),
``engine`` (energy/cycles), ``mapper``, ``report``, ``reference`` (Timeloop report parser),
``artifact`` and ``tables`` (validation). Nothing is computed at import time.
"""

from flexsparse.model.sparseloop.engine import Evaluation, Spec, evaluate, load_spec
from flexsparse.model.sparseloop.yamlio import SpecError

__all__ = ["Evaluation", "Spec", "SpecError", "evaluate", "load_spec"]
