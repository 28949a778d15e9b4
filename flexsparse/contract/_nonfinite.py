"""Exact einsum over operands holding inf or nan: NumPy's value in every output cell.

NumPy defines ``out[c] = sum over the summed indices of prod_k x_k[...]``, each product
formed left to right in operand order. A sparse engine skips every product with an implicit
zero: exact for finite values (the product is 0), wrong for inf and nan (``0 * inf`` is
nan). So when an operand stores an inf or nan, :func:`evaluate_nonfinite` runs one of two
tiers instead of the plain plan:

1. **Dense reference.** When the densified operands and the result fit the memory budget
   (``memory_limit=``, at least :data:`~flexsparse._limits.SMALL_BYTES`, else
   :data:`~flexsparse._limits.NONFINITE_DENSE_MAX_BYTES`) and the loop nest has at most
   :data:`~flexsparse._limits.NONFINITE_DENSE_LOOPS` products, ``numpy.einsum`` runs on the
   densified operands with the caller's subscripts: NumPy's answer bit for bit, including its
   loop-order-dependent cases (its inner loop factors an operand that is constant along the
   innermost axis out of the sum, so ``"ip,i->i"`` gives ``y * sum_p x``, inf where the
   term-by-term definition gives nan).
2. **By terms, at sparse cost.** Split each operand into its finite stored values ``F_k`` and
   its non-finite stored values ``N_k``. Then ``out = S + T``, with nan (``nan+nanj``) on the
   cells ``Z``, where

   * ``S`` is the ordinary sparse einsum of the ``F_k`` (all products finite: the engines'
     early sums and re-association are exact there);
   * ``T`` sums the terms that touch a non-finite value and have every factor stored, each
     product formed left to right as NumPy forms it. They are enumerated by joins anchored at
     the non-finite entries (a term belongs to the anchor of its first non-finite factor, so
     none is counted twice);
   * ``Z`` holds the cells having a term that multiplies a non-finite value by an implicit
     zero: such a product is nan (both components, for complex values), and so is the sum.
     An anchor ``e`` of operand ``k`` reaches the cells that agree with it on ``k``'s output
     indices; it has ``prod(sizes of the other summed indices)`` terms per cell, and the cell
     is in ``Z`` when fewer of them are fully stored.

   Broadcast (size-1) axes and diagonals are applied first (exact); private indices are
   not summed early. Cost: that of ``S``, plus O(terms touching a non-finite value), plus
   O(|N| x the output cells each non-finite value reaches); memory is checked against the
   budget before each join step (:class:`NonFiniteBudgetError` otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse.contract._keys import split_groups
from flexsparse.formats.base import SparseArray
from flexsparse.formats.coo import COO
from flexsparse.tiling.workingset import accounted_limit

__all__ = ["NonFiniteBudgetError", "evaluate_nonfinite"]


class NonFiniteBudgetError(ValueError, MemoryError):
    """The terms touched by the operands' inf/nan values do not fit the memory budget."""


def evaluate_nonfinite(subscripts: str, spec: Any, ops: Sequence[COO | np.ndarray], work: np.dtype,
                       run: Callable[[list], tuple[Any, str]], limit: int | None) -> tuple[Any, str]:
    """The einsum ``spec`` of ``ops`` (original dtypes) with NumPy's inf/nan values.

    Args:
        subscripts: the caller's subscripts (the dense tier hands them to NumPy unchanged).
        spec: the parsed :class:`~flexsparse.contract.parser.EinsumSpec`.
        ops: COO tensors and ndarrays, as given.
        work: the compute dtype.
        run: evaluates the plain plan on operands in ``work`` (finite values only).
        limit: ``memory_limit`` in bytes, or None.

    Returns:
        ``(result, indices)``: an ndarray or a COO over ``spec.output``.
    """
    budget = _limits.NONFINITE_DENSE_MAX_BYTES if limit is None else accounted_limit(limit)
    dense_bytes = sum(op.size * op.dtype.itemsize for op in ops if isinstance(op, SparseArray))
    dense_bytes += math.prod(spec.output_shape) * work.itemsize
    if dense_bytes <= budget and spec.dense_size(spec.indices) <= _limits.NONFINITE_DENSE_LOOPS:
        dense = [op.todense() if isinstance(op, SparseArray) else op for op in ops]
        with np.errstate(invalid="ignore", over="ignore"):
            return np.asarray(np.einsum(subscripts, *dense)), spec.output
    return _by_terms(spec, ops, work, run, budget)


# ----------------------------------------------------------------------------- tier 2
def _finite_part(op: COO | np.ndarray) -> COO | np.ndarray:
    if isinstance(op, COO):
        keep = np.isfinite(op.data)
        return COO._new(op, op.coords[:, keep], op.data[keep], op.shape, op.canonical)
    return np.where(np.isfinite(op), op, np.zeros((), op.dtype))


def _nonfinite_entries(op: COO | np.ndarray, idx: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Coordinates (per index) and values of the stored inf/nan entries of one operand."""
    if isinstance(op, COO):
        bad = ~np.isfinite(op.data)
        return ({c: op.coords[m][bad].astype(np.int64) for m, c in enumerate(idx)}, op.data[bad])
    bad = ~np.isfinite(op)
    if op.ndim == 0:
        return {}, op.reshape(1)[bad.reshape(1)]
    where = np.nonzero(bad)
    return {c: w.astype(np.int64) for c, w in zip(idx, where)}, op[bad]


class _Join:
    """Rows = partial terms: one int64 coordinate column per bound index, one value column per
    joined operand, and the anchor entry each row grew from."""

    def __init__(self, cols: dict[str, np.ndarray], k: int, vals: np.ndarray, budget: int, n_ops: int):
        self.cols = cols
        self.vals = {k: vals}
        self.anchor = np.arange(vals.size, dtype=np.int64)
        self.budget = budget
        self.n_ops = n_ops

    @property
    def n_rows(self) -> int:
        return int(self.anchor.size)

    def _guard(self, rows: int, n_cols: int, itemsize: int) -> None:
        need = rows * (8 * (n_cols + 1) + itemsize * self.n_ops)
        if need > self.budget:
            raise NonFiniteBudgetError(
                f"the operands' inf/nan values touch {rows:,} product terms ({need:,} bytes to enumerate), "
                f"more than the memory budget of {self.budget:,} bytes; raise memory_limit= or replace "
                "the non-finite values")

    def _take(self, rows: np.ndarray) -> None:
        self.cols = {c: v[rows] for c, v in self.cols.items()}
        self.vals = {p: v[rows] for p, v in self.vals.items()}
        self.anchor = self.anchor[rows]

    def add(self, j: int, op: COO | np.ndarray, idx: str, sizes: dict[str, int]) -> None:
        """Extend every row by the stored entries of operand ``j`` that agree with it."""
        bound = [c for c in idx if c in self.cols]
        new = [c for c in idx if c not in self.cols]
        n_cols = len(self.cols) + len(new)
        if isinstance(op, np.ndarray):  # every cell is stored: expand over the new indices
            reps = math.prod(sizes[c] for c in new)
            n = self.n_rows
            self._guard(n * reps, n_cols, op.dtype.itemsize)
            self._take(np.repeat(np.arange(n), reps))
            if new:
                grid = np.indices([sizes[c] for c in new], dtype=np.int64).reshape(len(new), -1)
                for m, c in enumerate(new):
                    self.cols[c] = np.tile(grid[m], n)
            self.vals[j] = op[tuple(self.cols[c] for c in idx)] if idx else np.repeat(op.reshape(1), self.n_rows)
            return
        n = self.n_rows
        if bound:
            _, ids_t, ids_j = split_groups([self.cols[c] for c in bound],
                                           [op.coords[idx.index(c)] for c in bound],
                                           tuple(sizes[c] for c in bound), n, op.nnz)
        else:
            ids_t, ids_j = np.zeros(n, np.int64), np.zeros(op.nnz, np.int64)
        order = np.argsort(ids_j, kind="stable")
        srt = ids_j[order]
        lo = np.searchsorted(srt, ids_t, "left")
        counts = np.searchsorted(srt, ids_t, "right") - lo
        total = int(counts.sum())
        self._guard(total, n_cols, op.dtype.itemsize)
        rows = np.repeat(np.arange(n), counts)
        starts = np.cumsum(counts) - counts
        entry = order[lo[rows] + (np.arange(total) - starts[rows])]
        self._take(rows)
        for c in new:
            self.cols[c] = op.coords[idx.index(c)][entry].astype(np.int64)
        self.vals[j] = op.data[entry]


def _anchor(terms: list[tuple[COO | np.ndarray, str]], k: int, out: str, sizes: dict[str, int],
            budget: int, work: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The terms anchored at operand ``k``'s non-finite entries.

    Returns ``(t_coords [len(out), n], t_vals [n], z_coords [len(out), z])``: the output cells
    and left-to-right products of the fully stored terms that are not anchored at an earlier
    operand, and the cells where some anchored term meets an implicit zero.
    """
    op, idx = terms[k]
    cols, vals = _nonfinite_entries(op, idx)
    anchors = {c: v.copy() for c, v in cols.items()}
    n_anchor = vals.size
    join = _Join(cols, k, vals, budget, len(terms))
    rest = [j for j in range(len(terms)) if j != k]
    while rest:  # join the operand sharing the most bound indices next (keeps the rows few)
        j = max(rest, key=lambda j: (sum(c in join.cols for c in terms[j][1]),
                                     isinstance(terms[j][0], COO)))
        rest.remove(j)
        join.add(j, terms[j][0], terms[j][1], sizes)
    # T: every factor stored; a term touching an earlier operand's inf/nan belongs to that anchor.
    keep = np.ones(join.n_rows, dtype=bool)
    for j in range(k):
        keep &= np.isfinite(join.vals[j])
    prod = join.vals[0].astype(work, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(1, len(terms)):
            prod = prod * join.vals[j].astype(work, copy=False)
    t_vals = prod[keep]
    t_coords = np.empty((len(out), t_vals.size), dtype=np.int64)
    for m, c in enumerate(out):
        t_coords[m] = join.cols[c][keep]
    # Z: cells where fewer than all of an anchor's terms are stored (an implicit zero factor).
    letters = set("".join(t for _, t in terms))
    per_cell = math.prod(sizes[c] for c in letters if c not in idx and c not in out)
    free = [c for c in out if c not in idx]
    grid = math.prod(sizes[c] for c in free)
    if per_cell == 0 or grid == 0 or n_anchor == 0:
        return t_coords, t_vals, np.zeros((len(out), 0), np.int64)
    join._guard(n_anchor * grid, len(out), 8)
    key = join.anchor * grid
    if free:
        key = key + np.ravel_multi_index(tuple(join.cols[c] for c in free), tuple(sizes[c] for c in free))
    counts = np.bincount(key, minlength=n_anchor * grid)
    z = np.flatnonzero(counts < per_cell)
    a, g = np.divmod(z, grid)
    gcoords = np.unravel_index(g, tuple(sizes[c] for c in free)) if free else ()
    z_coords = np.empty((len(out), z.size), dtype=np.int64)
    for m, c in enumerate(out):
        z_coords[m] = anchors[c][a] if c in idx else gcoords[free.index(c)]
    return t_coords, t_vals, z_coords


def _nan(dtype: np.dtype) -> Any:
    return complex(np.nan, np.nan) if dtype.kind == "c" else np.nan


def _by_terms(spec: Any, ops: Sequence[COO | np.ndarray], work: np.dtype,
              run: Callable[[list], tuple[Any, str]], budget: int) -> tuple[Any, str]:
    from flexsparse.contract.execute import _promote, _transpose_to, _unary

    ops = [_promote(op.to_coo() if isinstance(op, SparseArray) else op, work) for op in ops]
    ops = [op.sum_duplicates() if isinstance(op, COO) else op for op in ops]
    s_res, s_idx = run([_finite_part(op) for op in ops])
    s_res = _transpose_to(s_res, s_idx, spec.output)
    terms = [_unary(op, red, work, sum_private=False) for op, red in zip(ops, spec.reductions())]
    sizes, out = dict(spec.sizes), spec.output
    parts = [_anchor(terms, k, out, sizes, budget, work) for k in range(len(terms))
             if _stores_nonfinite(terms[k][0])]
    t_coords = np.hstack([p[0] for p in parts]) if parts else np.zeros((len(out), 0), np.int64)
    t_vals = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, work)
    z_coords = np.hstack([p[2] for p in parts]) if parts else np.zeros((len(out), 0), np.int64)
    nan = _nan(work)
    if isinstance(s_res, COO):
        coords = np.hstack([s_res.coords.astype(np.int64), t_coords, z_coords])
        data = np.concatenate([s_res.data.astype(work, copy=False), t_vals.astype(work, copy=False),
                               np.full(z_coords.shape[1], nan, dtype=work)])
        return COO(coords, data, s_res.shape).sum_duplicates(), out
    res = np.array(s_res, dtype=work)  # a copy: the sums below write into it
    with np.errstate(invalid="ignore", over="ignore"):
        if res.ndim == 0:
            res = res + t_vals.sum(dtype=work)
            if z_coords.shape[1]:
                res = np.asarray(nan, dtype=work)
            return np.asarray(res), out
        np.add.at(res, tuple(t_coords), t_vals)
    res[tuple(z_coords)] = nan
    return res, out


def _stores_nonfinite(op: COO | np.ndarray) -> bool:
    vals = op.data if isinstance(op, COO) else op
    return vals.dtype.kind in "fc" and vals.size > 0 and not bool(np.isfinite(vals).all())
