"""Sparsity-aware cost estimates of one pairwise contraction (statistics in, numbers out; no arrays).

Notation for a pairwise step ``C[K] = sum A[IA] * B[IB]``: ``S = IA & IB`` shared indices,
``T = S & K`` batch indices, ``Q = S - K`` contracted indices, ``FA = IA - IB`` and ``FB = IB - IA``
free indices (all kept: the planner sums private indices away beforehand, see
:func:`project_stats`). ``nA``, ``nB`` are the operands' entry counts (a dense operand counts
every cell), ``a_x[b]`` / ``b_x[b]`` their slice-count sketches along index ``x`` (exact
per-coordinate counts when ``size(x) <= SKETCH_WIDTH``; ``r_x[b]`` coordinates per bucket
otherwise), ``dA_x`` the number of non-empty slices.

Multiply-adds (``flops``), exact for one shared index with exact sketches::

    dot_x  = sum_b a_x[b] * b_x[b] / r_x[b]           # pairs of entries agreeing on x
    flops  = nA * nB * prod_{x in S} dot_x / (nA * nB)   # independence across shared indices
    flops <= min_{x in S} dot_x                          # agreeing on all implies on each

On uniform data ``dot_x = nA nB / size(x)``, the classic density model; on power-law data whose
hubs align (``X X^T``) ``dot_x = sum_c nnz(c)**2``, orders of magnitude larger.

Output entries (``nnz``): the candidate cells are ``cells_eff = rowsA * colsB * prod_{x in T}
overlap_x`` with ``rowsA = min(nA, prod_{x in FA} dA_x)`` (same for B) and ``overlap_x`` the
estimated number of coordinates non-empty in both operands; ``nq = prod_{x in Q} overlap_x``
coordinates can contribute to a cell. With ``mu = flops / cells_eff`` products per candidate
cell, each of the ``nq`` contracted coordinates hits independently with ``p = mu / nq``::

    nnz_global = cells_eff * (1 - (1 - p) ** nq)         # = 1 - prod (1 - pA pB) per cell

When ``T`` is empty and an operand has exactly one free index ``x`` (if both do: the one whose
slice counts along ``x`` are more skewed, ``OperandStats.skew``; say A), its rows are modelled
one by one instead (row model): a row holding ``e`` entries meets B's rows, each filled with
``p = flops / (nA * colsB)``, so ``nnz = sum_rows colsB * (1 - (1 - p) ** e)``, summed per sketch
bucket (``dA_x r_x / size(x)`` rows of ``a_x[b] / rows`` entries each). This is exact in
expectation when B is dense or uniform and corrects for A's skewed rows. Finally
``nnz <= flops`` and ``nnz <= cells = prod_{x in K} size(x)``; ``density = nnz / cells``.

Memory (bytes): COO ``nnz * (len(K) * index_bytes + itemsize)``, dense ``cells * itemsize``.

Work per engine (the planner's objective, :func:`method_cost`): ``dense`` = ``prod`` of every
index size (BLAS, plus densifying the operands and writing the output); ``spmm`` = ``flops +
nnz``; ``gustavson`` = ``flops + nnz + nA + nB``; ``dot`` (inner products) = ``cells_eff *
(nA / rowsA + nB / colsB) + nnz`` (one merge of two fibres per candidate cell).

All estimation is O(sum of sketch widths) per call.

Example:
    >>> import numpy as np
    >>> from flexsparse.contract.stats import dense_stats
    >>> a, b = dense_stats("ij", (20, 30)), dense_stats("jk", (30, 40))
    >>> e = estimate_pair(a, b, "ik")
    >>> e.flops, e.nnz, e.density, e.contracted, e.batch
    (24000.0, 800.0, 1.0, 'j', '')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flexsparse._util import index_dtype_for
from flexsparse.contract.parser import FrozenSizes
from flexsparse.contract.stats import SKETCH_WIDTH, OperandStats, dense_stats, rows_per_bucket

__all__ = [
    "METHODS",
    "PairEstimate",
    "coo_bytes",
    "estimate_pair",
    "method_cost",
    "project_stats",
    "result_stats",
    "squeeze_stats",
]

#: Engines a pairwise step may be assigned to (see ``plan.choose_method``).
METHODS = ("dense", "gustavson", "dot", "spmm", "block", "nm", "hss")


@dataclass(frozen=True)
class PairEstimate:
    """Estimated outcome of contracting two operands.

    Attributes:
        lhs_indices, rhs_indices, out_indices: the operands' and result's indices.
        contracted: shared indices summed over; ``batch``: shared indices kept.
        flops: estimated multiply-adds of nonzero pairs.
        dense_flops: multiply-adds of a dense contraction (product of every index size).
        nnz: estimated result entries; ``cells``: dense size of the result (``out_shape``);
            ``density = nnz / cells``.
        cells_eff: candidate output cells (non-empty rows x non-empty columns x batch overlap).
        coo_bytes, dense_bytes: result memory in COO and dense form.
        itemsize: bytes per result value.
        distinct: per kept index, estimated non-empty slices of the result.
        row_counts: per kept index, the estimated slice-count sketch of the result.
    """

    lhs_indices: str
    rhs_indices: str
    out_indices: str
    contracted: str
    batch: str
    flops: float
    dense_flops: int
    nnz: float
    cells: int
    out_shape: tuple[int, ...]
    density: float
    cells_eff: float
    coo_bytes: int
    dense_bytes: int
    itemsize: int
    distinct: FrozenSizes
    row_counts: dict


def coo_bytes(nnz: float, shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of a COO tensor: per-mode coordinates plus values."""
    ib = index_dtype_for(shape).itemsize if shape else 0
    return int(math.ceil(nnz * (len(shape) * ib + itemsize)))


def _overlap(a: OperandStats, b: OperandStats, x: str) -> float:
    """Estimated number of coordinates of ``x`` non-empty in both operands."""
    ca, cb = a.slice_counts(x), b.slice_counts(x)
    n = a.dim(x)
    if n == 0:
        return 0.0
    r = rows_per_bucket(n)
    both = (ca > 0) & (cb > 0)
    per = np.maximum(1.0, r * (a.n_distinct(x) / n) * (b.n_distinct(x) / n))
    return float(min(np.sum(per[both]), a.n_distinct(x), b.n_distinct(x)))


def _dot(a: OperandStats, b: OperandStats, x: str) -> float:
    r = rows_per_bucket(a.dim(x))
    return float(np.sum(a.slice_counts(x) * b.slice_counts(x) / r)) if r.size else 0.0


def _fill(p: np.ndarray | float, n: np.ndarray | float) -> np.ndarray | float:
    """``1 - (1 - p) ** n`` computed stably for tiny ``p`` and huge ``n`` (``p`` clipped to [0, 1])."""
    p_arr = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    n_arr = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.expm1(n_arr * np.log1p(-p_arr))
    out = np.where(p_arr >= 1.0, (n_arr > 0).astype(np.float64), out)
    return float(out) if out.ndim == 0 else out


def _row_model(s: OperandStats, x: str, cols: float, flops: float) -> tuple[float, np.ndarray]:
    """Row-model nnz when rows along ``x`` of ``s`` meet the other side's columns."""
    c = s.slice_counts(x)
    n = s.dim(x)
    r = rows_per_bucket(n)
    rows = np.clip(r * s.n_distinct(x) / n, 1.0, np.maximum(c, 1.0))
    e = c / rows
    p = min(1.0, flops / (s.nnz * cols)) if s.nnz and cols else 0.0
    per_bucket = np.where(c > 0, rows * cols * _fill(p, e), 0.0)
    return float(per_bucket.sum()), per_bucket


def estimate_pair(a: OperandStats, b: OperandStats, out_indices: str, same_source: bool = False) -> PairEstimate:
    """Estimate flops, nnz, density and memory of contracting ``a`` and ``b`` into ``out_indices``.

    Args:
        a, b: operand statistics (distinct indices each).
        out_indices: indices kept; must be a subset of ``a.indices + b.indices`` and contain every
            index found in only one operand.
        same_source: ``a`` and ``b`` are the same tensor, each shared index on the same mode of it
            (a self-contraction such as ``ijkl,mjkl->im``). The shared coordinates are then
            perfectly correlated rather than independent: an entry meets every entry of its
            fibre (the entries sharing its shared coordinates), itself included, so
            ``flops = sum_f c_f**2 >= nA**2 / dS`` (Cauchy-Schwarz over the ``dS`` non-empty
            fibres, estimated by :func:`project_stats`) -- at least ``nA``, where the
            independence product of several shared indices can fall far below it.

    Raises:
        ValueError: ``out_indices`` names an unknown index, repeats one, drops a private index,
            or the two operands disagree on a shared index's size.

    Example:
        >>> from flexsparse.contract.stats import dense_stats
        >>> estimate_pair(dense_stats("i", (5,)), dense_stats("i", (5,)), "").flops
        5.0
    """
    ia, ib = a.indices, b.indices
    if len(set(out_indices)) != len(out_indices):
        raise ValueError(f"out_indices {out_indices!r} repeat an index")
    for i in out_indices:
        if i not in ia and i not in ib:
            raise ValueError(f"out index {i!r} is in neither operand ({ia!r}, {ib!r})")
    for i in ia + ib:
        if (i in ia) != (i in ib) and i not in out_indices:
            raise ValueError(f"index {i!r} is in one operand only and not kept: sum it away first "
                             "(project_stats)")
    shared = [i for i in ia if i in ib]
    for i in shared:
        if a.dim(i) != b.dim(i):
            raise ValueError(f"index {i!r} has size {a.dim(i)} in lhs but {b.dim(i)} in rhs")
    batch = "".join(i for i in shared if i in out_indices)
    contracted = "".join(i for i in shared if i not in out_indices)
    fa = [i for i in ia if i not in ib]
    fb = [i for i in ib if i not in ia]
    size = {i: n for i, n in zip(ia, a.shape)} | {i: n for i, n in zip(ib, b.shape)}
    out_shape = tuple(size[i] for i in out_indices)
    cells = math.prod(out_shape)
    dense_flops = math.prod(size.values())
    itemsize = max(a.itemsize, b.itemsize)
    na, nb = float(a.nnz), float(b.nnz)

    if na == 0 or nb == 0 or cells == 0:
        flops = nnz = cells_eff = 0.0
        rows_a = rows_b = 0.0
    else:
        flops = na * nb
        if shared:
            dots = [_dot(a, b, x) for x in shared]
            for d in dots:
                flops *= d / (na * nb)
            flops = min(flops, min(dots))
            if same_source:
                fibres = max(1.0, float(project_stats(a, "".join(x for x in ia if x in shared)).nnz))
                flops = max(flops, min(na * na / fibres, min(dots)))
        rows_a = min(na, math.prod(float(a.n_distinct(x)) for x in fa))
        rows_b = min(nb, math.prod(float(b.n_distinct(x)) for x in fb))
        overlaps = {x: _overlap(a, b, x) for x in shared}
        cells_eff = min(float(cells), rows_a * rows_b * math.prod(overlaps[x] for x in batch))
        nq = math.prod(overlaps[x] for x in contracted)
        if flops <= 0 or cells_eff <= 0:
            nnz = 0.0
        elif nq <= 0:
            nnz = min(flops, cells_eff)
        else:
            nnz = cells_eff * _fill(min(1.0, flops / cells_eff / nq), nq)
    # Row model on the sparser side when it has one free index and there is no batch index.
    per_rows: dict[str, np.ndarray] = {}
    if nnz > 0 and not batch:
        sides = [(s.skew(f[0]), k, s, f[0], cols)
                 for k, (s, f, cols) in enumerate([(a, fa, rows_b), (b, fb, rows_a)]) if len(f) == 1]
        if sides:
            _, _, s, x, cols = max(sides)
            nnz, per_rows[x] = _row_model(s, x, cols, flops)
    nnz = float(min(nnz, flops, cells))

    # Result sketches: row-model buckets, else proportional to the side's counts (batch: product).
    row_counts: dict[str, np.ndarray] = {}
    distinct: dict[str, int] = {}
    for x in out_indices:
        n = size[x]
        if x in per_rows:
            c = per_rows[x]
        elif x in batch:
            c = a.slice_counts(x) * b.slice_counts(x) / np.maximum(rows_per_bucket(n), 1.0)
        else:
            c = (a if x in ia else b).slice_counts(x).astype(np.float64)
        tot = c.sum()
        c = c * (nnz / tot) if tot > 0 else np.zeros_like(c, dtype=np.float64)
        c = np.minimum(c, rows_per_bucket(n) * (cells / n if n else 0.0))
        c.setflags(write=False)
        row_counts[x] = c
        d = (_overlap(a, b, x) if x in batch else (a if x in ia else b).n_distinct(x))
        distinct[x] = int(min(d, math.ceil(nnz)))
    return PairEstimate(
        lhs_indices=ia, rhs_indices=ib, out_indices=out_indices, contracted=contracted, batch=batch,
        flops=float(flops), dense_flops=dense_flops, nnz=nnz, cells=cells, out_shape=out_shape,
        density=nnz / cells if cells else 0.0, cells_eff=float(cells_eff),
        coo_bytes=coo_bytes(nnz, out_shape, itemsize), dense_bytes=cells * itemsize,
        itemsize=itemsize, distinct=FrozenSizes(distinct), row_counts=row_counts)


def result_stats(est: PairEstimate, dense: bool) -> OperandStats:
    """Statistics of the estimated result (stored dense when ``dense``); marked ``exact=False``."""
    if dense:
        return dense_stats(est.out_indices, est.out_shape, est.itemsize, exact=False)
    return OperandStats(est.out_indices, est.out_shape, int(math.ceil(est.nnz)), False, est.itemsize,
                        est.distinct, dict(est.row_counts), exact=False)


def squeeze_stats(s: OperandStats, drop: str) -> OperandStats:
    """Remove size-1 indices ``drop`` (broadcast dimensions) from ``s``; exact."""
    for i in drop:
        if s.dim(i) != 1:
            raise ValueError(f"cannot squeeze index {i!r} of size {s.dim(i)} (must be 1)")
    keep = [k for k, i in enumerate(s.indices) if i not in drop]
    idx = "".join(s.indices[k] for k in keep)
    shape = tuple(s.shape[k] for k in keep)
    if s.is_dense:
        return dense_stats(idx, shape, s.itemsize, s.exact)
    return OperandStats(idx, shape, s.nnz, False, s.itemsize,
                        FrozenSizes({i: s.distinct[i] for i in idx if i in s.distinct}),
                        {i: s.counts.get(i) for i in idx}, s.exact)


def project_stats(s: OperandStats, keep: str) -> OperandStats:
    """Estimated statistics after summing ``s`` over every index not in ``keep``.

    Entries are thrown into the ``space = prod_{x in keep} distinct_x`` candidate cells:
    ``nnz = space * (1 - (1 - 1/space) ** nnz)``, clipped to ``[max distinct, nnz]``. Exact for a
    single kept index (``nnz = distinct``).
    """
    for i in keep:
        if i not in s.indices:
            raise ValueError(f"cannot keep index {i!r}: operand has indices {s.indices!r}")
    idx = "".join(i for i in s.indices if i in keep)
    shape = tuple(s.dim(i) for i in idx)
    if idx == s.indices:
        return s
    if s.is_dense:
        return dense_stats(idx, shape, s.itemsize, exact=False)
    if s.nnz == 0:
        return OperandStats(idx, shape, 0, False, s.itemsize, FrozenSizes({i: 0 for i in idx}),
                            {i: np.zeros(min(n, SKETCH_WIDTH)) for i, n in zip(idx, shape)},
                            exact=False)
    d = {i: s.n_distinct(i) for i in idx}
    if len(idx) == 1:
        nnz = float(d[idx])
    elif not idx:
        nnz = 1.0
    else:
        space = float(math.prod(d.values()))
        nnz = space * _fill(1.0 / space, float(s.nnz)) if space > 0 else 0.0
        nnz = min(float(s.nnz), max(nnz, float(max(d.values()))))
    counts = {}
    for i, n in zip(idx, shape):
        c = s.slice_counts(i).astype(np.float64)
        if len(idx) == 1:
            c = np.minimum(c, rows_per_bucket(n))
        else:
            c = c * (nnz / s.nnz)
            c = np.minimum(c, rows_per_bucket(n) * (math.prod(shape) / n))
        c.setflags(write=False)
        counts[i] = c
    return OperandStats(idx, shape, int(math.ceil(nnz)), False, s.itemsize, FrozenSizes(d), counts,
                        exact=False)


def method_cost(method: str, est: PairEstimate, a: OperandStats, b: OperandStats) -> float:
    """Work units of running the step with ``method`` (see the module docstring)."""
    if method == "dense":
        return float(est.dense_flops) + (0.0 if a.is_dense else a.size) + (0.0 if b.is_dense else b.size) \
            + float(est.cells)
    if method in ("spmm", "block", "nm", "hss"):  # sparse (or structured) x dense: one FMA per flop
        return est.flops + est.nnz
    if method == "gustavson":
        return est.flops + est.nnz + a.nnz + b.nnz
    if method == "dot":
        fa = [i for i in a.indices if i not in b.indices]
        fb = [i for i in b.indices if i not in a.indices]
        rows_a = max(1.0, min(float(a.nnz), math.prod(float(a.n_distinct(x)) for x in fa)))
        rows_b = max(1.0, min(float(b.nnz), math.prod(float(b.n_distinct(x)) for x in fb)))
        return est.cells_eff * (a.nnz / rows_a + b.nnz / rows_b) + est.nnz
    raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
