"""Sparsity-aware einsum contraction planning: statistics in, a frozen :class:`EinsumPlan` out.

Pipeline (no arrays are read here except by :func:`einsum_path`, through ``stats.operand_stats``):

1. **Unary preprocessing** per operand (:class:`UnaryStep`): drop broadcast size-1 axes (exact:
   an operand constant along an index does not need it), take diagonals of repeated indices
   (``stats`` already describes the diagonal) and sum away indices found in no other operand and
   not in the output. A single-operand einsum is one unary step whose ``out_indices`` is the
   output, in output order.
2. **Pairwise steps** (:class:`ContractionStep`) in opt_einsum's convention: each step names two
   positions ``lhs < rhs`` of the current operand list; both are removed and the result appended.
   A step keeps the indices needed by the output or by a remaining operand (the last step keeps
   the output, in output order) and sums the other shared ones.
3. Each step gets an engine (:func:`choose_method`) and a storage format
   (:func:`choose_output_format`); its cost is :func:`flexsparse.contract.cost.method_cost`.

Optimizers (registered by name in :data:`OPTIMIZERS`, see :func:`register_optimizer`):

* ``"greedy"``: repeatedly contract the pair of operands sharing an index (outer products only
  when nothing shares one) with the lowest estimated work, ties by smaller result; O(n^3) pair
  estimates.
* ``"optimal"``: every path (depth-first with pruning) up to ``EXHAUSTIVE_MAX`` (5) operands,
  else dynamic programming over subsets (best split of every subset, at most 3^n pair
  estimates; splits sharing no index only where a subset has no other), at most
  ``OPTIMAL_MAX_OPERANDS`` (10) operands; the greedy path is also costed and kept if cheaper
  (estimates depend on the order that built an intermediate, so DP is not exact).
* ``"auto"``: ``"optimal"`` for up to ``AUTO_OPTIMAL_MAX`` operands, else ``"greedy"``.
* ``"left"``: left to right, ``((A B) C) D``: the baseline.

``optimize`` may also be an explicit path (``[(0, 1), (0, 1)]``, optionally headed by
``"einsum_path"`` as ``numpy.einsum_path`` returns it), ``True`` (``"auto"``) or ``False``
(``"left"``).

Engine rule (:func:`choose_method`), first match wins:

* ``"block"``, ``"nm"``, ``"hss"``: a structured operand (:class:`~flexsparse.BlockSparse`,
  :class:`~flexsparse.NM`, :class:`~flexsparse.HSS`, untransformed by the unary pass) times a
  dense one, when the step contracts exactly one of the structured matrix's two indices and
  keeps the other (:func:`structured_kernel`): the class's own product runs (numba kernels,
  or its cached dense copy and BLAS above its measured crossover density; Triton when the
  dense operand is a CUDA tensor). Any other step with a structured operand treats it as COO;
* ``"dense"``: both operands dense, or both densities above ``BLAS_MIN_DENSITY`` (0.3) and the
  densified operands plus the dense result fit in ``dense_limit`` (BLAS beats any sparse kernel);
* ``"spmm"``: exactly one operand dense (sparse x dense: each entry scales a dense fibre);
* ``"dot"``: the result is small, ``cells <= DOT_FACTOR * (nnzA + nnzB)`` (inner products of
  fibres: scalar and batched-dot results);
* ``"gustavson"``: otherwise (row-wise sparse accumulation, sparse result).

The format rule for operands: dense arrays stay dense; COO, CSF, CSR and CSC operands (and
SciPy, pydata/sparse, torch sparse) are contracted as COO; structured operands run their own
kernels in the steps above and are COO in every other step. ``dense_limit`` (default
``DENSE_STEP_MAX_BYTES``, 1 GiB) is the planner's dense cap; ``memory_limit`` is only ever the
tiling budget of :func:`flexsparse.einsum` (the planner's old ``memory_limit=`` keyword still
works, with a ``DeprecationWarning``).

A dense-ish result of a sparse x sparse step is not sent to ``"dot"`` (its cost grows with every
cell times the fibre length); :func:`choose_output_format` stores it dense instead.

Example:
    >>> import numpy as np
    >>> path, report = einsum_path("ij,jk,kl->il", np.ones((2, 3)), np.ones((3, 4)), np.ones((4, 5)))
    >>> path
    ['einsum_path', (0, 1), (0, 1)]
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flexsparse import _limits
from flexsparse._util import parse_bytes
from flexsparse.contract.cost import (
    PairEstimate,
    estimate_pair,
    method_cost,
    project_stats,
    result_stats,
    squeeze_stats,
)
from flexsparse.contract.parser import EinsumSpec, parse_einsum, parse_interleaved
from flexsparse.contract.stats import OperandStats, dense_stats

__all__ = [
    "AUTO_OPTIMAL_MAX",
    "DEFAULT_DENSE_LIMIT",
    "DEFAULT_MEMORY_LIMIT",
    "DENSE_THRESHOLD",
    "DOT_FACTOR",
    "OPTIMAL_MAX_OPERANDS",
    "OPTIMIZERS",
    "OUTPUT_DENSE_THRESHOLD",
    "ContractionStep",
    "EinsumPlan",
    "UnaryStep",
    "choose_method",
    "check_optimize",
    "choose_output_format",
    "einsum_path",
    "structured_kernel",
    "path_cost",
    "plan_einsum",
    "register_optimizer",
]

# The thresholds live in flexsparse._limits (with the measurements behind them); these are
# the planner's names for them.
DENSE_THRESHOLD = _limits.BLAS_MIN_DENSITY                  # both operands denser -> BLAS
OUTPUT_DENSE_THRESHOLD = _limits.DENSE_OUTPUT_MIN_DENSITY   # results denser are stored dense
DOT_FACTOR = _limits.DOT_CELLS_PER_NNZ   # cells <= DOT_FACTOR * (nnzA + nnzB) -> inner products
DEFAULT_DENSE_LIMIT = _limits.DENSE_STEP_MAX_BYTES  # bytes a dense step / dense result may take
#: Deprecated name of :data:`DEFAULT_DENSE_LIMIT` (``memory_limit`` now always means the tiling budget).
DEFAULT_MEMORY_LIMIT = DEFAULT_DENSE_LIMIT
STRUCTURED_METHODS = ("block", "nm", "hss")
AUTO_OPTIMAL_MAX = 6           # "auto" runs "optimal" up to this many operands
EXHAUSTIVE_MAX = 5             # "optimal" enumerates every path up to this many operands
OPTIMAL_MAX_OPERANDS = 10


def _dense_limit(dense_limit: int | str | None, memory_limit: int | str | None, where: str) -> int:
    """Resolve the planner's dense cap, accepting the deprecated ``memory_limit=`` keyword."""
    if memory_limit is not None:
        warnings.warn(f"{where}(memory_limit=) is deprecated: the planner's dense cap is now "
                      "dense_limit= (memory_limit means the tiling budget of einsum)",
                      DeprecationWarning, stacklevel=3)
        if dense_limit is None:
            dense_limit = memory_limit
    return DEFAULT_DENSE_LIMIT if dense_limit is None else parse_bytes(dense_limit)


def structured_kernel(w_indices: str, other_indices: str, out_indices: str) -> str | None:
    """The product a structured matrix ``W[w_indices]`` runs against a dense operand, or ``None``.

    ``W`` is ``(M, K)`` with ``K`` its reduction axis. The step must contract exactly one of
    ``W``'s two (distinct) indices and keep the other: contracting ``K`` is ``"matmul"``
    (``W @ D``, or ``D @ W.T`` through ``W.linear``), contracting ``M`` is ``"tmatmul"``
    (``W.T @ D``, or ``D @ W`` through ``W.linear_grad_input``). Anything else (a batch index
    shared with the output, both indices contracted, an outer product) returns ``None``: the
    step then treats ``W`` as COO.

    >>> structured_kernel("oi", "bi", "bo"), structured_kernel("ij", "ik", "jk")
    ('matmul', 'tmatmul')
    >>> structured_kernel("ij", "ij", ""), structured_kernel("ij", "jk", "ijk")
    (None, None)
    """
    if len(w_indices) != 2 or w_indices[0] == w_indices[1]:
        return None
    shared = [i for i in w_indices if i in other_indices]
    if len(shared) != 1 or shared[0] in out_indices:
        return None
    kept = w_indices[1] if shared[0] == w_indices[0] else w_indices[0]
    if kept not in out_indices:
        return None
    return "matmul" if shared[0] == w_indices[1] else "tmatmul"


def step_kernel(method: str, a: OperandStats, b: OperandStats, out_indices: str) -> str:
    """The kernel a step runs, as :func:`einsum_path` reports it (e.g. ``"HSS.matmul"``)."""
    if method in STRUCTURED_METHODS:
        w, d = (a, b) if a.format == method else (b, a)
        names = {"block": "BlockSparse", "nm": "NM", "hss": "HSS"}
        return f"{names[method]}.{structured_kernel(w.indices, d.indices, out_indices)}"
    return {"dense": "numpy.matmul", "gustavson": "spgemm", "dot": "dot_csr_csr",
            "spmm": "spmm_csr_dense"}.get(method, method)


def choose_output_format(est_density: float, dense_bytes: int, dense_limit: int | str | None = None,
                         *, memory_limit: int | str | None = None) -> str:
    """The ``format="auto"`` rule: ``"dense"`` if ``est_density > OUTPUT_DENSE_THRESHOLD`` (0.25)
    and ``dense_bytes <= dense_limit`` (default 1 GiB), else ``"coo"``.

    Above ~25% density a dense array is smaller than COO (coordinates cost at least as much as
    the value per entry) and far faster to accumulate into.

    >>> choose_output_format(0.5, 8_000), choose_output_format(0.01, 8_000)
    ('dense', 'coo')
    >>> choose_output_format(0.9, 10**12)   # too big to densify
    'coo'
    """
    limit = _dense_limit(dense_limit, memory_limit, "choose_output_format")
    return "dense" if est_density > OUTPUT_DENSE_THRESHOLD and dense_bytes <= limit else "coo"


def choose_method(a: OperandStats, b: OperandStats, est: PairEstimate, dense_limit: int) -> str:
    """Engine for one pairwise step (rule in the module docstring).

    >>> from flexsparse.contract.stats import dense_stats
    >>> a, b = dense_stats("ij", (4, 5)), dense_stats("jk", (5, 6))
    >>> choose_method(a, b, estimate_pair(a, b, "ik"), DEFAULT_DENSE_LIMIT)
    'dense'
    """
    if a.is_dense and b.is_dense:
        return "dense"
    for w, d in ((a, b), (b, a)):
        if w.format in STRUCTURED_METHODS and d.is_dense and \
                structured_kernel(w.indices, d.indices, est.out_indices) is not None:
            return w.format
    densified = (a.size + b.size + est.cells) * est.itemsize
    if min(a.density, b.density) > DENSE_THRESHOLD and densified <= dense_limit:
        return "dense"
    if a.is_dense or b.is_dense:
        return "spmm"
    # Inner products only pay when the result is small AND the fibre merges are cheaper than
    # Gustavson's flops (self-contractions over many modes merge long fibres for few products).
    if est.cells <= DOT_FACTOR * (a.nnz + b.nnz) and \
            method_cost("dot", est, a, b) < method_cost("gustavson", est, a, b):
        return "dot"
    return "gustavson"


@dataclass(frozen=True)
class UnaryStep:
    """Preprocessing of one operand before any pairwise step.

    Applied in this order: drop the ``squeezed`` size-1 axes, take the diagonal of every index in
    ``diagonal``, sum over ``summed``, then order axes as ``out_indices``.

    Attributes:
        operand: position of the operand in the einsum's argument list.
        in_indices: the operand's subscript (ellipsis expanded, may repeat letters).
        out_indices: indices of the preprocessed operand, in axis order.
        diagonal: indices repeated in ``in_indices``.
        squeezed: broadcast indices (size 1 in this operand, larger elsewhere) dropped.
        summed: indices summed away (in no other operand, not in the output).
        est_nnz: estimated entries after preprocessing.
    """

    operand: int
    in_indices: str
    out_indices: str
    diagonal: str
    squeezed: str
    summed: str
    est_nnz: float


@dataclass(frozen=True)
class ContractionStep:
    """One pairwise contraction ``out[out_indices] = sum lhs[lhs_indices] * rhs[rhs_indices]``.

    Attributes:
        lhs, rhs: positions (``lhs < rhs``) in the current operand list; both are removed and the
            result is appended.
        lhs_indices, rhs_indices, out_indices: axis orders of the operands and the result.
        contracted: shared indices summed; ``batch``: shared indices kept.
        est_flops: estimated multiply-adds of nonzero pairs.
        est_nnz, est_density: estimated result entries and density.
        est_cost: work of the chosen engine (the planner's objective).
        est_bytes: memory of the result in ``out_format``.
        method: ``"dense"``, ``"gustavson"``, ``"dot"``, ``"spmm"`` or a structured format
            (``"block"``, ``"nm"``, ``"hss"``).
        out_format: ``"coo"`` or ``"dense"``.
        kernel: the kernel that runs the step (:func:`step_kernel`), e.g. ``"spgemm"`` or
            ``"HSS.matmul"``.
    """

    lhs: int
    rhs: int
    lhs_indices: str
    rhs_indices: str
    out_indices: str
    contracted: str
    batch: str
    est_flops: float
    est_nnz: float
    est_density: float
    est_cost: float
    est_bytes: int
    method: str
    out_format: str
    kernel: str = ""

    @property
    def subscripts(self) -> str:
        """The step as an einsum spec, e.g. ``'ij,jk->ik'``."""
        return f"{self.lhs_indices},{self.rhs_indices}->{self.out_indices}"


@dataclass(frozen=True)
class EinsumPlan:
    """A complete plan: unary preprocessing, pairwise steps, final estimates.

    Attributes:
        spec: the parsed einsum.
        optimizer: the optimizer name, or ``"explicit"`` for a given path.
        unary: preprocessing steps (only for operands that need one).
        operand_indices: per original operand, its indices after preprocessing.
        steps: pairwise steps (``n_operands - 1`` of them).
        est_flops, est_cost: totals over ``steps``.
        est_nnz, est_density: of the final result.
        out_format: :func:`choose_output_format` of the final result (the ``format="auto"``
            choice).
        dense_limit: bytes allowed for dense steps and dense results.
    """

    spec: EinsumSpec
    optimizer: str
    unary: tuple[UnaryStep, ...]
    operand_indices: tuple[str, ...]
    steps: tuple[ContractionStep, ...]
    est_flops: float
    est_cost: float
    est_nnz: float
    est_density: float
    out_format: str
    dense_limit: int

    @property
    def memory_limit(self) -> int:
        """Deprecated name of :attr:`dense_limit`."""
        warnings.warn("EinsumPlan.memory_limit is deprecated; use dense_limit", DeprecationWarning,
                      stacklevel=2)
        return self.dense_limit

    @property
    def path(self) -> list[tuple[int, int]]:
        """The contraction path in opt_einsum / NumPy convention."""
        return [(s.lhs, s.rhs) for s in self.steps]

    @property
    def naive_flops(self) -> int:
        """Dense cost of evaluating the einsum in one loop nest (as ``numpy.einsum_path``)."""
        return self.spec.dense_size(self.spec.indices) * max(1, self.spec.n_operands - 1)

    def report(self) -> str:
        """Human-readable summary in the spirit of ``numpy.einsum_path``'s."""
        largest = max((s.est_nnz for s in self.steps[:-1]), default=0.0)
        speedup = f"{self.naive_flops / self.est_cost:.3e}" if self.est_cost else "n/a"
        lines = [
            f"  Complete contraction:  {self.spec.subscripts}",
            f"             Optimizer:  {self.optimizer}",
            f"     Naive dense FLOPs:  {self.naive_flops:.3e}",
            f" Est. sparse FLOPs/work: {self.est_flops:.3e} / {self.est_cost:.3e}",
            f"   Theoretical speedup:  {speedup}",
            f"  Largest intermediate:  {largest:.3e} nnz (est)",
            f"                Result:  {self.est_nnz:.3e} nnz (est), density {self.est_density:.3e}, "
            f"format {self.out_format}",
        ]
        rule = "-" * 84
        for u in self.unary:
            what = ", ".join(f"{k} {v}" for k, v in (("squeeze", u.squeezed), ("diagonal", u.diagonal),
                                                      ("sum", u.summed)) if v) or "transpose"
            lines.append(f"  unary operand {u.operand}: {u.in_indices}->{u.out_indices} ({what}), "
                         f"est nnz {u.est_nnz:.3e}")
        lines += [rule, f"{'step':>4}  {'contraction':<24}{'method':<11}{'est flops':>11}{'est nnz':>11}"
                        f"{'density':>11}  {'format':<7} kernel", rule]
        for k, s in enumerate(self.steps):
            lines.append(f"{k:>4}  {s.subscripts:<24}{s.method:<11}{s.est_flops:>11.3e}{s.est_nnz:>11.3e}"
                         f"{s.est_density:>11.3e}  {s.out_format:<7} {s.kernel}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


# --------------------------------------------------------------------------------------------
# Search machinery


@dataclass(frozen=True)
class _Pair:
    a: OperandStats
    b: OperandStats
    est: PairEstimate
    method: str
    out_format: str
    cost: float
    result: OperandStats


class _Search:
    """Pair estimates with a bounded LRU cache; shared by every optimizer.

    Entries hold their operands, so an id in a live key is never reused by another object; the
    bound keeps memory at ``CACHE_SIZE`` results (each carries its slice-count sketches).
    """

    CACHE_SIZE = 256

    def __init__(self, output: str, operands: list[OperandStats], dense_limit: int):
        self.output = output
        self.operands = operands
        self.dense_limit = dense_limit
        self._cache: OrderedDict[tuple[int, int, str], _Pair] = OrderedDict()

    def keep(self, a: OperandStats, b: OperandStats, outside: set[str], final: bool) -> str:
        """Indices the result of ``a`` x ``b`` keeps (output order for the final step)."""
        if final:
            return self.output
        needed = set(self.output) | outside
        return "".join(dict.fromkeys(i for i in a.indices + b.indices if i in needed))

    def pair(self, a: OperandStats, b: OperandStats, outside: set[str], final: bool) -> _Pair:
        """Estimate, engine, format, cost and result statistics of contracting ``a`` and ``b``."""
        keep = self.keep(a, b, outside, final)
        key = (id(a), id(b), keep)
        hit = self._cache.get(key)
        if hit is not None and hit.a is a and hit.b is b:
            self._cache.move_to_end(key)
            return hit
        est = estimate_pair(a, b, keep)
        method = choose_method(a, b, est, self.dense_limit)
        fmt = choose_output_format(est.density, est.dense_bytes, self.dense_limit)
        res = result_stats(est, dense=fmt == "dense")
        hit = _Pair(a, b, est, method, fmt, method_cost(method, est, a, b), res)
        self._cache[key] = hit
        if len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)
        return hit

    def path_cost(self, path: Sequence[tuple[int, int]]) -> float:
        """Total estimated work of a positional path."""
        ops = list(self.operands)
        total = 0.0
        for i, j in path:
            p = self.pair(ops[i], ops[j], _outside(ops, {i, j}), len(ops) == 2)
            total += p.cost
            ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [p.result]
        return total


def _outside(ops: Sequence[OperandStats], skip: set[int]) -> set[str]:
    return set().union(*(set(o.indices) for k, o in enumerate(ops) if k not in skip))


def _greedy(search: _Search, ops: list[OperandStats] | None = None) -> list[tuple[int, int]]:
    """Greedy from ``ops`` (default: the preprocessed operands); positions relative to ``ops``."""
    ops = list(search.operands if ops is None else ops)
    path = []
    while len(ops) > 1:
        best = None
        final = len(ops) == 2
        for i in range(len(ops)):
            for j in range(i + 1, len(ops)):
                p = search.pair(ops[i], ops[j], _outside(ops, {i, j}), final)
                connected = bool(set(ops[i].indices) & set(ops[j].indices))
                key = (not connected, p.cost, p.est.nnz, i, j)
                if best is None or key < best[0]:
                    best = (key, i, j, p)
        _, i, j, p = best
        path.append((i, j))
        ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [p.result]
    return path


def _left(search: _Search) -> list[tuple[int, int]]:
    n = len(search.operands)
    return [(0, 1)] + [(0, n - 1 - k) for k in range(1, n - 1)]


def _exhaustive(search: _Search) -> list[tuple[int, int]]:
    """Every positional path, depth first, pruned by the best total so far."""
    best: list[Any] = [math.inf, None]

    def rec(ops: list[OperandStats], cost: float, path: list[tuple[int, int]]) -> None:
        if cost >= best[0]:
            return
        if len(ops) == 1:
            best[0], best[1] = cost, list(path)
            return
        for i in range(len(ops)):
            for j in range(i + 1, len(ops)):
                p = search.pair(ops[i], ops[j], _outside(ops, {i, j}), len(ops) == 2)
                rest = [o for k, o in enumerate(ops) if k not in (i, j)] + [p.result]
                rec(rest, cost + p.cost, path + [(i, j)])

    rec(list(search.operands), 0.0, [])
    return best[1]


def _optimal(search: _Search) -> list[tuple[int, int]]:
    """Exhaustive search up to ``EXHAUSTIVE_MAX`` operands, else subset DP; never worse than greedy.

    Estimates depend on the path (an intermediate's estimated statistics differ with the order
    that built it), so subset DP's optimal substructure is approximate: the greedy path is
    evaluated too and the cheaper one kept.
    """
    n = len(search.operands)
    if n > OPTIMAL_MAX_OPERANDS:
        raise ValueError(f"optimize='optimal' searches 3^n splits and accepts at most "
                         f"{OPTIMAL_MAX_OPERANDS} operands, got {n}; use 'greedy'")
    found = _exhaustive(search) if n <= EXHAUSTIVE_MAX else _subset_dp(search)
    greedy = _greedy(search)
    return found if search.path_cost(found) <= search.path_cost(greedy) else greedy


def _subset_dp(search: _Search) -> list[tuple[int, int]]:
    """Best split of every connected subset of operands; components joined greedily."""
    ops = search.operands
    n = len(ops)
    full = (1 << n) - 1
    adj = [sum(1 << j for j in range(n) if j != k and set(ops[k].indices) & set(ops[j].indices))
           for k in range(n)]
    idx: list[set[str]] = [set() for _ in range(full + 1)]
    connected = [False] * (full + 1)
    for mask in range(1, full + 1):
        low = mask & -mask
        idx[mask] = idx[mask ^ low] | set(ops[low.bit_length() - 1].indices)
        seen, frontier = low, low
        while frontier:  # flood fill from the lowest operand inside mask
            k = frontier & -frontier
            frontier ^= k
            new = adj[k.bit_length() - 1] & mask & ~seen
            seen |= new
            frontier |= new
        connected[mask] = seen == mask
    # best[mask] = (cost, stats, split) with split = (sub, other), or None for a single operand.
    best: dict[int, tuple[float, OperandStats, tuple[int, int] | None]] = {
        1 << k: (0.0, ops[k], None) for k in range(n)}
    for mask in sorted((m for m in range(1, full + 1) if connected[m] and m & (m - 1)),
                       key=lambda m: (bin(m).count("1"), m)):
        outside, final, low = idx[full ^ mask], mask == full, mask & -mask
        cand = None
        sub = (mask - 1) & mask
        while sub:
            other = mask ^ sub
            # A connected mask split into two connected parts: they always share an index.
            if sub & low and connected[sub] and connected[other]:
                (cl, sl, _), (cr, sr, _) = best[sub], best[other]
                p = search.pair(sl, sr, outside, final)
                key = (cl + cr + p.cost, p.est.nnz)
                if cand is None or key < cand[0]:
                    cand = (key, p.result, (sub, other))
            sub = (sub - 1) & mask
        best[mask] = (cand[0][0], cand[1], cand[2])
    # Connected components (maximal connected masks), then SSA contractions in post-order.
    comps, rest = [], full
    while rest:
        low = rest & -rest
        comp = max((m for m in best if m & low and m & rest == m), key=lambda m: bin(m).count("1"))
        comps.append(comp)
        rest &= ~comp
    order: list[tuple[int, int, int]] = []

    def walk(mask: int) -> int:
        split = best[mask][2]
        if split is None:
            return mask.bit_length() - 1
        u, v = walk(split[0]), walk(split[1])
        order.append((u, v, n + len(order)))
        return order[-1][2]

    for c in comps:
        walk(c)
    cur = list(range(n))
    path = []
    for u, v, w in order:
        i, j = sorted((cur.index(u), cur.index(v)))
        path.append((i, j))
        cur = [c for k, c in enumerate(cur) if k not in (i, j)] + [w]
    if len(comps) > 1:
        # Replay to get the components' result statistics, then join them greedily.
        cur_ops = list(ops)
        for i, j in path:
            p = search.pair(cur_ops[i], cur_ops[j], _outside(cur_ops, {i, j}), len(cur_ops) == 2)
            cur_ops = [o for k, o in enumerate(cur_ops) if k not in (i, j)] + [p.result]
        path += _greedy(search, cur_ops)
    return path


def _auto(search: _Search) -> list[tuple[int, int]]:
    return (_optimal if len(search.operands) <= AUTO_OPTIMAL_MAX else _greedy)(search)


#: Registered optimizers: name -> function(search) -> positional path.
OPTIMIZERS: dict[str, Callable[[_Search], list[tuple[int, int]]]] = {
    "auto": _auto, "greedy": _greedy, "optimal": _optimal, "left": _left}


def register_optimizer(name: str, fn: Callable[[Any], list[tuple[int, int]]]) -> None:
    """Register ``fn(search) -> [(i, j), ...]`` under ``name``.

    ``search.operands`` are the preprocessed :class:`OperandStats`; ``search.pair(a, b, outside,
    final)`` returns the cached estimate (``.cost``, ``.result``) of contracting ``a`` and ``b``
    when ``outside`` holds the indices of every other operand.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("optimizer name must be a non-empty string")
    if not callable(fn):
        raise TypeError(f"optimizer {name!r} must be callable, got {type(fn).__name__}")
    OPTIMIZERS[name] = fn


# --------------------------------------------------------------------------------------------
# Planning


def _reorder(s: OperandStats, order: str) -> OperandStats:
    if s.indices == order:
        return s
    shape = tuple(s.dim(i) for i in order)
    if s.is_dense:
        return dense_stats(order, shape, s.itemsize, s.exact)
    return OperandStats(order, shape, s.nnz, False, s.itemsize, s.distinct, s.counts, s.exact)


def _check_stats(spec: EinsumSpec, stats: Sequence[OperandStats]) -> None:
    if len(stats) != spec.n_operands:
        raise ValueError(f"expected {spec.n_operands} operand stats for {spec.subscripts!r}, got {len(stats)}")
    for k, (s, term) in enumerate(zip(stats, spec.inputs)):
        if not isinstance(s, OperandStats):
            raise TypeError(f"stats[{k}] must be an OperandStats, not {type(s).__name__}")
        want = "".join(dict.fromkeys(term))
        if s.indices != want:
            raise ValueError(f"stats[{k}] has indices {s.indices!r} but operand {k} is {term!r} (expected {want!r})")
        shape = tuple(spec.shapes[k][term.index(i)] for i in want)
        if s.shape != shape:
            raise ValueError(f"stats[{k}] has shape {s.shape} but operand {k} has {shape} over {want!r}")


def _preprocess(spec: EinsumSpec, stats: Sequence[OperandStats]) -> tuple[list[OperandStats], list[UnaryStep]]:
    """Apply :meth:`EinsumSpec.reductions` (the one term normalisation) to the statistics."""
    n = spec.n_operands
    ops, unary = [], []
    for k, (s, red) in enumerate(zip(stats, spec.reductions())):
        out = spec.output if n == 1 else red.kept
        t = squeeze_stats(s, red.squeezed) if red.squeezed else s
        t = _reorder(project_stats(t, red.kept), out)
        if not red.is_identity or out != red.term:
            unary.append(UnaryStep(k, red.term, out, red.diagonal, red.squeezed, red.summed, float(t.nnz)))
        ops.append(t)
    return ops, unary


def _normalize_path(path: Any, n: int) -> list[tuple[int, int]]:
    steps = list(path)
    if steps and steps[0] == "einsum_path":
        steps = steps[1:]
    if n == 1 and steps in ([], [(0,)], [[0]]):
        return []
    if len(steps) != n - 1:
        raise ValueError(f"path has {len(steps)} step(s) but {n} operands need {n - 1}")
    out = []
    size = n
    for k, st in enumerate(steps):
        if isinstance(st, (str, bytes)) or not hasattr(st, "__len__") or len(st) != 2:
            raise ValueError(f"path step {k} must be a pair of positions, got {st!r}")
        i, j = (int(v) for v in st)
        if i == j or not (0 <= i < size and 0 <= j < size):
            raise ValueError(f"path step {k} {tuple(st)!r} must name two different positions in [0, {size})")
        out.append((min(i, j), max(i, j)))
        size -= 1
    return out


def _replay(spec: EinsumSpec, search: _Search, path: list[tuple[int, int]]) -> list[ContractionStep]:
    ops = list(search.operands)
    steps = []
    for i, j in path:
        a, b = ops[i], ops[j]
        p = search.pair(a, b, _outside(ops, {i, j}), len(ops) == 2)
        e = p.est
        nbytes = e.dense_bytes if p.out_format == "dense" else e.coo_bytes
        steps.append(ContractionStep(i, j, a.indices, b.indices, e.out_indices, e.contracted, e.batch,
                                     e.flops, e.nnz, e.density, p.cost, nbytes, p.method, p.out_format,
                                     step_kernel(p.method, a, b, e.out_indices)))
        ops = [o for k, o in enumerate(ops) if k not in (i, j)] + [p.result]
    return steps


def check_optimize(optimize: Any, n_operands: int) -> str:
    """Validate ``optimize`` for ``n_operands`` operands up front; return the optimizer's name.

    ``True``/``False`` name ``"auto"``/``"left"``; a string must be registered in
    :data:`OPTIMIZERS`; a sequence is an explicit path (``"explicit"``), checked step by step.

    >>> check_optimize(True, 3), check_optimize([(0, 1), (0, 1)], 3)
    ('auto', 'explicit')
    >>> check_optimize("fastest", 2)
    Traceback (most recent call last):
    ...
    ValueError: unknown optimizer 'fastest'; valid names: auto, greedy, left, optimal (or an explicit path)
    """
    if isinstance(optimize, bool):
        return "auto" if optimize else "left"
    if isinstance(optimize, str):
        if optimize not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimize!r}; valid names: {', '.join(sorted(OPTIMIZERS))} "
                             "(or an explicit path)")
        return optimize
    if isinstance(optimize, Sequence):
        _normalize_path(optimize, n_operands)
        return "explicit"
    raise TypeError(f"optimize must be an optimizer name, a bool or a path, not {type(optimize).__name__}")


def plan_einsum(spec: EinsumSpec, stats: Sequence[OperandStats], optimize: Any = "auto", *,
                dense_limit: int | str | None = None, memory_limit: int | str | None = None) -> EinsumPlan:
    """Plan ``spec`` from per-operand statistics.

    Args:
        spec: from :func:`flexsparse.contract.parser.parse_einsum`.
        stats: one :class:`OperandStats` per operand (``stats.operand_stats(spec.inputs[k], op)``).
        optimize: an optimizer name (:data:`OPTIMIZERS`), ``True``/``False``, or an explicit path.
        dense_limit: bytes (or ``"512MB"``) a dense step or dense result may use; default 1 GiB.
        memory_limit: deprecated name of ``dense_limit``.

    Returns:
        The frozen :class:`EinsumPlan`.

    Raises:
        ValueError: unknown optimizer (the message lists the valid names), malformed path, stats
            that do not match the spec.

    Example:
        >>> from flexsparse.contract.stats import dense_stats
        >>> spec = parse_einsum("ij,jk->ik", [(2, 3), (3, 4)])
        >>> plan = plan_einsum(spec, [dense_stats("ij", (2, 3)), dense_stats("jk", (3, 4))])
        >>> plan.path, plan.steps[0].method, plan.steps[0].est_flops, plan.out_format
        ([(0, 1)], 'dense', 24.0, 'dense')
        >>> plan_einsum(spec, [dense_stats("ij", (2, 3)), dense_stats("jk", (3, 4))], "fastest")
        Traceback (most recent call last):
        ...
        ValueError: unknown optimizer 'fastest'; valid names: auto, greedy, left, optimal (or an explicit path)
    """
    if not isinstance(spec, EinsumSpec):
        raise TypeError(f"spec must be an EinsumSpec (see parse_einsum), not {type(spec).__name__}")
    limit = _dense_limit(dense_limit, memory_limit, "plan_einsum")
    _check_stats(spec, stats)
    name = check_optimize(optimize, spec.n_operands)
    if isinstance(optimize, bool):
        optimize = "auto" if optimize else "left"
    ops, unary = _preprocess(spec, stats)
    search = _Search(spec.output, ops, limit)
    n = len(ops)
    if name == "explicit":
        path = _normalize_path(optimize, n)
    else:
        path = OPTIMIZERS[name](search) if n > 1 else []
        path = _normalize_path(path, n)
    steps = _replay(spec, search, path)
    if steps:
        last = steps[-1]
        nnz, density = last.est_nnz, last.est_density
    else:
        nnz = float(ops[0].nnz)
        density = ops[0].density if not ops[0].is_dense else 1.0
    cells = spec.dense_size(spec.output)
    itemsize = max(s.itemsize for s in stats)
    return EinsumPlan(
        spec=spec, optimizer=name, unary=tuple(unary), operand_indices=tuple(o.indices for o in ops),
        steps=tuple(steps), est_flops=float(sum(s.est_flops for s in steps)),
        est_cost=float(sum(s.est_cost for s in steps)), est_nnz=nnz, est_density=density,
        out_format=choose_output_format(density, cells * itemsize, limit), dense_limit=limit)


def path_cost(spec: EinsumSpec, stats: Sequence[OperandStats], path: Sequence[tuple[int, int]], *,
              dense_limit: int | str | None = None, memory_limit: int | str | None = None) -> float:
    """Estimated total work of ``path`` under ``stats`` (compare paths found under other stats)."""
    limit = _dense_limit(dense_limit, memory_limit, "path_cost")
    return plan_einsum(spec, stats, list(path), dense_limit=limit).est_cost


def _shape_of(op: Any) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(n) for n in (op.shape if hasattr(op, "shape") else np.shape(op)))


def einsum_path(*operands: Any, optimize: Any = "auto", dense_limit: int | str | None = None,
                memory_limit: int | str | None = None) -> tuple[list[Any], str]:
    """Plan an einsum on actual operands, returning ``(['einsum_path', (i, j), ...], report)``.

    Accepts ``einsum_path("ij,jk->ik", a, b)`` or NumPy's interleaved
    ``einsum_path(a, [0, 1], b, [1, 2], [0, 2])``; operands may be ``COO``, SciPy sparse or
    dense arrays, or any flexsparse format (structured steps report their kernel, e.g.
    ``HSS.matmul``). ``dense_limit`` is the planner's dense cap (``memory_limit`` is its deprecated
    name). The only function here that reads data (via ``stats.operand_stats``).

    Example:
        >>> import numpy as np
        >>> einsum_path(np.ones((2, 3)), [0, 1], np.ones((3, 4)), [1, 2])[0]
        ['einsum_path', (0, 1)]
        >>> einsum_path("ij->ji", np.ones((2, 3)))[0]
        ['einsum_path', (0,)]
    """
    from flexsparse.contract.stats import operand_stats

    if not operands:
        raise ValueError("einsum_path needs subscripts and at least one operand")
    if isinstance(operands[0], str):
        subscripts, ops = operands[0], list(operands[1:])
    else:
        subscripts, ops = parse_interleaved(operands)
    spec = parse_einsum(subscripts, [_shape_of(o) for o in ops])
    stats = [operand_stats(term, op) for term, op in zip(spec.inputs, ops)]
    plan = plan_einsum(spec, stats, optimize, dense_limit=_dense_limit(dense_limit, memory_limit, "einsum_path"))
    path: list[Any] = ["einsum_path", *plan.path] if plan.steps else ["einsum_path", (0,)]
    return path, plan.report()
