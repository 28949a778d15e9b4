"""Per-call caches of :func:`~flexsparse.contract.execute.einsum`: the parsed spec, the
result and compute dtypes, the unary reductions, and the compiled modules its hot path needs.

Algorithm: ``functools.lru_cache`` on the call's hashable description (subscripts, operand
shapes, dtypes; specs are frozen dataclasses), and one lazily built holder of imported
functions. Nothing here touches arrays.

Cost: a dictionary lookup per call on a hit (parsing and dtype rules took ~30 of ~70 us of a
small call's fixed cost before they were remembered); a miss costs one parse.
"""

from __future__ import annotations

import functools

import numpy as np

from flexsparse._util import compute_dtype, result_dtype
from flexsparse.contract.parser import EinsumSpec, TermReduction, parse_einsum

__all__ = ["HotImports", "call_dtypes", "hot", "parsed_spec", "reductions"]


@functools.lru_cache(maxsize=256)
def parsed_spec(subscripts: str, shapes: tuple[tuple[int, ...], ...]) -> EinsumSpec:
    """:func:`~flexsparse.contract.parser.parse_einsum`, remembered per (subscripts, shapes):
    the spec is frozen and hashable, and parsing plus :func:`reductions` took ~40% of the
    fixed cost of a call (about 30 of 70 us on one core of the 2-core test VM), which
    matters for sub-millisecond products such as the chemistry contractions. The shapes are
    the operands' own tuples (an extent equal to a Python int hashes as one, so the key is
    the same) and are made Python ints only on a miss."""
    return parse_einsum(subscripts, tuple(tuple(int(n) for n in shape) for shape in shapes))


@functools.lru_cache(maxsize=64)
def call_dtypes(dtypes: tuple[np.dtype, ...]) -> tuple[np.dtype, np.dtype]:
    """``(result dtype, compute dtype)`` of operands of ``dtypes`` (:func:`result_dtype`,
    :func:`compute_dtype`), remembered: the two took ~3 us of a call's ~30 us fixed cost."""
    dtype = result_dtype(*dtypes)
    return dtype, compute_dtype(dtype)


class HotImports:
    """Modules einsum's per-call path needs that cannot load with it (numba kernels, the 2-D
    product module, which imports :mod:`.execute`): imported on first use and kept, since a
    function-level ``from ... import`` costs ~1 us per call even when the module is loaded."""

    def __init__(self) -> None:
        from flexsparse.contract._matmul2d import matmul_2d, product_plan
        from flexsparse.kernels.cpu.nonzero import count_nonzero_upto
        from flexsparse.kernels.cpu.partition import check_threads
        from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES, has_nonfinite_values, nonfinite_kernel

        self.check_threads = check_threads
        self.count_nonzero_upto = count_nonzero_upto
        self.matmul_2d = matmul_2d
        self.product_plan = product_plan
        self.compiled_dtypes = COMPILED_DTYPES
        self.nonfinite_kernel = nonfinite_kernel
        self.has_nonfinite_values = has_nonfinite_values


_HOT: HotImports | None = None


def hot() -> HotImports:
    global _HOT
    if _HOT is None:
        _HOT = HotImports()
    return _HOT


@functools.lru_cache(maxsize=256)
def reductions(spec: EinsumSpec) -> tuple[TermReduction, ...]:
    """``spec.reductions()``, remembered per spec (see :func:`parsed_spec`)."""
    return spec.reductions()
