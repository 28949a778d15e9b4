"""flexsparse.model: analytical models of sparse tensor accelerators.

Two parts: :mod:`flexsparse.model.sparseloop`, a Sparseloop-compatible engine (Sparseloop/
Timeloop inputs, validated against the Sparseloop MICRO'22 artifact, design studies with
sensitivity; see MODEL.md), and the quick single-buffer design models exported here, whose
checks are unit checks (:mod:`flexsparse.model.validation`).

Counts (reads, writes, MACs, metadata) come from a dataflow and the data or a density model;
time from bandwidth and compute limits; energy from counts x per-access energies
(Horowitz ISSCC 2014 45 nm defaults). Nothing is imported or computed at import time beyond
these small modules.

>>> from flexsparse.model import evaluate, MatmulWorkload, Structured
>>> r = evaluate("generic", MatmulWorkload("golden", 8, 8, 8, Structured(2, 8), Structured(4, 8)))
>>> r.algorithmic_macs, r.effectual_macs, r.cycles
(512.0, 64.0, 64.0)
"""

from flexsparse.model.arch import (
    Architecture,
    ComputeUnit,
    SparseFeature,
    StorageLevel,
    dump_architecture,
    list_presets,
    load_architecture,
    load_architecture_text,
)
from flexsparse.model.designs import DESIGNS, compare, evaluate, get_design, list_designs, register_design
from flexsparse.model.report import Report, combine, format_table, print_table
from flexsparse.model.workload import (
    HSS,
    Actual,
    Banded,
    ContractionWorkload,
    LayerList,
    MatmulWorkload,
    PowerLaw,
    Structured,
    Uniform,
    list_workloads,
    load_workload,
    with_operands,
)

__all__ = [
    "Architecture", "ComputeUnit", "SparseFeature", "StorageLevel", "dump_architecture", "list_presets",
    "load_architecture", "load_architecture_text", "DESIGNS", "compare", "evaluate", "get_design",
    "list_designs", "register_design", "Report", "combine", "format_table", "print_table", "HSS", "Actual",
    "Banded", "ContractionWorkload", "LayerList", "MatmulWorkload", "PowerLaw", "Structured", "Uniform",
    "list_workloads", "load_workload", "with_operands",
]
