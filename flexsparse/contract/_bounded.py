"""Bounded-memory glue between :func:`flexsparse.einsum` and :mod:`flexsparse.tiling`.

With ``memory_limit=``, every sparse x sparse step of an einsum plan is a matricised SpGEMM
``C[rows, cols] = A[rows, k] @ B[k, cols]`` (see :mod:`.execute`); this module runs it through
:func:`flexsparse.tiling.tiled_spgemm` (Swiftiles sizing, Tailors overflow absorption) and
collects the per-step :class:`~flexsparse.tiling.TilingReport`. With ``out=``, the final step
streams its tiles to disk and the caller gets a :class:`LazyEinsumResult`.

Where the product runs is pluggable: :data:`PRODUCT_RUNNER` (a context variable, unset by
default) may hold a callable with the signature of :func:`tiled_product` that returns
``(result, report)``; :mod:`flexsparse.distributed` sets it for the duration of one call so
the same einsum semantics run with each product's tiles spread over a cluster.

Cost: that of the tiled SpGEMM; the options are validated before any work.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import parse_bytes

__all__ = ["PRODUCT_RUNNER", "TilingOptions", "make_tiling_options", "tiled_product", "LazyEinsumResult",
           "save_result"]

#: ``runner(a, b, opts, out=None) -> (result, report)`` replacing the in-process tiled SpGEMM of
#: :func:`tiled_product` in the current context; ``None`` (the default) runs it here.
PRODUCT_RUNNER: contextvars.ContextVar = contextvars.ContextVar("flexsparse_product_runner", default=None)


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


def tiled_product(a: Any, b: Any, opts: TilingOptions, out: Path | None = None) -> Any:
    """``a @ b`` (flexsparse CSR operands) under ``opts.limit``; appends the step's report."""
    runner = PRODUCT_RUNNER.get()
    if runner is not None:
        result, report = runner(a, b, opts, out=out)
    else:
        from flexsparse.tiling import tiled_spgemm

        result, report = tiled_spgemm(a, b, memory_limit=opts.limit, tiling=opts.strategy,
                                      overbook=opts.overbook, out=out, progress=opts.progress)
    opts.reports.append(report)
    return result


@dataclass
class LazyEinsumResult:
    """An einsum result written to disk tile by tile; :meth:`load` reads it as a COO.

    Attributes:
        matrix: the on-disk matricised product (:class:`flexsparse.tiling.LazyResult`).
        shape: the einsum output's shape.
        path: where the tiles live.
    """

    matrix: Any
    decode: Any = field(repr=False)
    shape: tuple[int, ...]
    path: Path

    @property
    def nnz(self) -> int:
        """Stored entries of the result."""
        return int(self.matrix.nnz)

    def load(self) -> Any:
        """Read every tile and return the result as a canonical :class:`~flexsparse.COO`."""
        return self.decode(self.matrix.load())

    def __repr__(self) -> str:
        return f"<LazyEinsumResult shape={self.shape} nnz={self.nnz} path={str(self.path)!r}>"


@dataclass
class SavedResult:
    """A result that was computed in memory (no sparse x sparse final step) and saved atomically."""

    path: Path
    nnz: int

    def load(self) -> Any:
        from flexsparse.formats.io import load

        return load(self.path)


def save_result(result: Any, path: Path) -> LazyEinsumResult:
    """Save an in-memory result atomically under ``path`` and hand back the same lazy handle."""
    from flexsparse.formats.coo import COO
    from flexsparse.formats.io import save

    coo = result if isinstance(result, COO) else COO.from_numpy(np.asarray(result))
    target = path / "result.npz" if path.is_dir() or not path.suffix else path
    save(target, coo)
    return LazyEinsumResult(SavedResult(target, coo.nnz), lambda x: x, coo.shape, target)
