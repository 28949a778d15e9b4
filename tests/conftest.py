"""Shared generators of the test suite (one copy each), importable as ``from ..conftest import ...``.

* :func:`rand_values` -- values of any dtype that are never zero (ints and floats of both signs,
  complex off-axis, bools all True), or strictly positive with ``positive=True`` (products
  never cancel).
* :func:`rand_csr` -- a random sparse matrix with exactly ``round(density * m * n)`` distinct
  entries (or Pareto row lengths with ``powerlaw=True``): a flexsparse ``CSR`` (default) or a
  SciPy ``csr_matrix`` (``scipy=True``). ``rng`` is a ``numpy.random.Generator`` or a seed.
* :func:`dense_with_density` -- a dense array whose nonzeros sit at ``round(density * size)``
  random positions, for checks against NumPy across densities.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from flexsparse.formats.csr import CSR


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def rand_values(rng, n: int, dtype, positive: bool = False) -> np.ndarray:
    """``n`` nonzero values of ``dtype`` (see the module docstring)."""
    rng, dtype = _rng(rng), np.dtype(dtype)
    if dtype == np.bool_:
        return np.ones(n, dtype=bool)
    if dtype.kind in "iu":
        v = rng.integers(1, 5, n)
        return (v if positive else v * rng.choice([-1, 1], n)).astype(dtype)
    v = rng.random(n) + 0.5 if positive else rng.standard_normal(n)
    if dtype.kind == "c":
        v = v * (1 + 0.5j) if positive else v + 1j * rng.standard_normal(n)
    return v.astype(dtype)


def rand_csr(rng, shape, density: float, dtype=np.float64, *, powerlaw: bool = False,
             positive: bool = False, scipy: bool = False):
    """Random ``shape`` sparse matrix; ``powerlaw`` draws row lengths from a Pareto law."""
    rng = _rng(rng)
    m, n = shape
    if powerlaw and m and n:
        lengths = np.minimum(n, (rng.pareto(1.2, m) * max(1.0, density * n)).astype(np.int64))
        rows = np.repeat(np.arange(m), lengths)
        cols = np.concatenate([rng.choice(n, k, replace=False) for k in lengths]) if lengths.sum() else \
            np.zeros(0, dtype=np.int64)
    else:
        total = int(round(density * m * n))
        flat = rng.choice(m * n, total, replace=False) if total else np.zeros(0, dtype=np.int64)
        rows, cols = flat // max(n, 1), flat % max(n, 1)
    vals = rand_values(rng, len(rows), dtype, positive)
    if scipy:
        out = sp.coo_matrix((vals, (rows, cols)), shape=shape).tocsr()
        out.sort_indices()
        return out
    return CSR.from_coo_arrays(rows, cols, vals, shape)


def dense_with_density(rng, shape, density: float, dtype=np.float64) -> np.ndarray:
    """Dense ``shape`` array with ``round(density * size)`` nonzeros at random positions."""
    rng = _rng(rng)
    size = int(np.prod(shape))
    out = np.zeros(size, dtype=dtype)
    k = int(round(density * size))
    if k:
        out[rng.choice(size, k, replace=False)] = rand_values(rng, k, dtype)
    return out.reshape(shape)
