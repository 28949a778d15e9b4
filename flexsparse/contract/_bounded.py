"""Bounded-memory glue between :func:`flexsparse.einsum` and :mod:`flexsparse.tiling`.

With ``memory_limit=``, every sparse x sparse step of an einsum plan is a matricised SpGEMM
``C[rows, cols] = A[rows, k] @ B[k, cols]`` (see :mod:`.execute`); this module runs it through
:func:`flexsparse.tiling.tiled_spgemm` (Swiftiles sizing, Tailors overflow absorption) and
collects the per-step :class:`~flexsparse.tiling.TilingReport`. With ``out=``, the final step
streams its tiles to disk -- a store of :mod:`flexsparse.formats.store` whose manifest decodes
tile indices into the einsum output's coordinates -- and the caller gets a
:class:`~flexsparse.formats.store.StoredTensor` (``.load()``, ``.tiles()``); a result computed
in memory is saved to the same format (:func:`save_result`).

Cost: that of the tiled SpGEMM; the options are validated before any work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import parse_bytes
from flexsparse.formats.store import MatrixLayout, StoredTensor, write_coo

__all__ = ["TilingOptions", "make_tiling_options", "tiled_product", "save_result"]


@dataclass
class TilingOptions:
    """Validated tiling settings plus the reports the steps append (mutable by design)."""

    limit: int
    strategy: str
    overbook: float
    progress: bool
    out: Path | None = None
    reports: list = field(default_factory=list)


def make_tiling_options(memory_limit: int | str, tiling: str, overbook: float, progress: bool,
                        out: str | os.PathLike | None = None) -> TilingOptions:
    """Validate everything up front so bad options fail before any work.

    >>> make_tiling_options("1MB", "overbook", 0.1, False).limit
    1000000
    >>> make_tiling_options("1MB", "guess", 0.1, False)
    Traceback (most recent call last):
    ...
    ValueError: unknown tiling strategy 'guess'; valid names: conservative, overbook, prescient
    """
    from flexsparse.tiling.strategies import get_strategy

    limit = parse_bytes(memory_limit)
    get_strategy(tiling)
    if isinstance(overbook, bool) or not isinstance(overbook, (int, float)) or not 0.0 <= overbook < 1.0:
        raise ValueError(f"overbook must be a fraction in [0, 1), got {overbook!r}")
    path = None
    if out is not None:
        from flexsparse.tiling.outfile import check_output_target

        path = check_output_target(out, 0)
    return TilingOptions(limit, tiling, float(overbook), bool(progress), path)


def tiled_product(a: Any, b: Any, opts: TilingOptions, out: Path | None = None,
                  out_shape: tuple[int, ...] | None = None, out_layout: MatrixLayout | None = None) -> Any:
    """``a @ b`` (flexsparse CSR operands) under ``opts.limit``; appends the step's report.

    With ``out``, the product is written as a store of the tensor ``out_shape`` whose ids
    decode through ``out_layout``, and a :class:`StoredTensor` of it is returned.
    """
    from flexsparse.tiling import tiled_spgemm

    result, report = tiled_spgemm(a, b, memory_limit=opts.limit, tiling=opts.strategy,
                                  overbook=opts.overbook, out=out, progress=opts.progress,
                                  out_shape=out_shape, out_layout=out_layout)
    opts.reports.append(report)
    return StoredTensor(out) if out is not None else result


def save_result(result: Any, path: Path) -> StoredTensor:
    """Save an in-memory result (COO or dense) atomically as a store at ``path``; return its handle."""
    from flexsparse.formats.coo import COO

    coo = result if isinstance(result, COO) else COO.from_numpy(np.asarray(result))
    write_coo(path, coo)
    return StoredTensor(path)
