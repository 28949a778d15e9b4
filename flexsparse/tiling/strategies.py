"""Tiling strategies for bounded-memory ``C = A @ B``: conservative, prescient, overbook.

Every strategy is registered by name and has the same signature::

    plan(stats: TileStatistics, limit: int, *, overbook: float, seed: int) -> TilePlan

It sees only sizes and *counts* (per-row nonzeros, per-row multiply counts, output counts
of the rows it asks for) through :class:`TileStatistics`, never values or indices, and
returns a frozen :class:`TilePlan`: a uniform grid of tiles of ``row_size`` output rows x
``col_size`` output columns x ``k_size`` contracted ids, the working sets it predicted,
and what choosing the grid cost. The working set of a tile is the formula of
:mod:`flexsparse.tiling.workingset`.

* ``conservative`` (ExTensor-N): sizes tiles as if both operands were dense; no counting,
  every tile fits, buffers are mostly empty. Its dense-sized tiles can number millions on a
  large sparse product; it estimates its run time and overbook's with the executor's cost
  model (:data:`TILE_SECONDS`, :data:`SCAN_SECONDS`, :data:`MULTIPLY_SECONDS`,
  :data:`PLAN_SECONDS`) and refuses up front (:class:`TilingRefusedError`, saying why) when
  it would take more than :data:`CONSERVATIVE_MAX_SLOWDOWN` times as long.
* ``prescient`` (ExTensor-P): one full symbolic pass counts every row's output nonzeros
  (O(flops) time -- charged as counting cost), then evaluates the exact working set of
  every tile at candidate row sizes ``m, m/2, m/4, ...`` (plus a bisection between the
  last fit and the first misfit) and keeps the largest size at which *all* tiles fit.
* ``overbook`` (Swiftiles, default): one sampling pass. It estimates the output/multiply
  ratio from a few random rows (symbolic counting only on those rows), starts from the
  row size whose expected working set equals the limit, samples ``n`` random tiles of
  that size, takes the ``(1 - overbook)`` quantile ``O`` of their working sets and scales
  the row size by ``(limit - fixed) / (O - fixed)`` (``fixed`` is the row-independent
  accumulator; occupancy is assumed linear in rows), so about ``overbook`` of the tiles
  overflow. Design choices of ours: a sampled tile's output term is the sampled ratio
  times its exact multiply count; its A and B terms are exact counts, re-evaluated at the
  rescaled size for up to 3 fixed-point steps (B rows touched grow sub-linearly); the
  symbolic counting stays one pass over ``max(64, m/200)`` rows. Overflow is absorbed at run time
  (Tailors, :mod:`flexsparse.tiling.executor`).

``prescient`` and ``overbook`` split columns only to keep the dense accumulator under
1/4 of the limit and contracted ids only to keep the first-touch stamps under 1/8
(design choices of ours, documented in the plan's ``col_size``/``k_size``).

>>> sorted(STRATEGIES)
['conservative', 'overbook', 'prescient']
>>> get_strategy("greedy")
Traceback (most recent call last):
...
ValueError: unknown tiling strategy 'greedy'; valid names: conservative, overbook, prescient
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from flexsparse import _limits
from flexsparse.tiling.engine import Operand
from flexsparse.tiling.kernels import (
    csr_row_window_counts,
    spgemm_csr_csr_flops,
    spgemm_csr_csr_flops_total,
    spgemm_csr_csr_symbolic,
    spgemm_csr_csr_touched,
)
from flexsparse.tiling.workingset import ByteModel, dense_tile_bytes, fixed_bytes, tile_bytes

__all__ = ["CONSERVATIVE_MAX_SLOWDOWN", "STRATEGIES", "Tile", "TilePlan", "TileStatistics",
           "TilingRefusedError", "conservative_estimates", "get_strategy", "register_strategy"]

# Cost model of the tile executor, fitted on this project's 2-vCPU AMD EPYC VM (2026-11-29) on
# power-law A @ A (n = 2K-20K, nnz = 8K-80K, limits 200 kB-8 MB, both strategies): it is
# within 2x of every measured time, enough to compare strategies that differ by orders of
# magnitude (command: python benchmarks/calibrate_tiling_model.py).
TILE_SECONDS = 20e-6        # per executed tile: the Python loop, the kernel call, the sink
SCAN_SECONDS = 25e-9        # per A or B entry the bounded kernel scans (windows filter by scanning)
MULTIPLY_SECONDS = 120e-9   # per multiply: accumulation, output emission and assembly
PLAN_SECONDS = 2e-3         # overbook's sampling and bookkeeping
#: ``conservative`` refuses when its estimated time exceeds this multiple of overbook's.
CONSERVATIVE_MAX_SLOWDOWN = _limits.CONSERVATIVE_MAX_SLOWDOWN


class TilingRefusedError(ValueError):
    """A strategy declines the product up front (the message says why and what to use)."""


@dataclass(frozen=True)
class Tile:
    """One window of the product: output rows ``[r0, r1)``, ids ``[k0, k1)``, columns ``[c0, c1)``."""

    r0: int
    r1: int
    k0: int
    k1: int
    c0: int
    c1: int


@dataclass(frozen=True)
class TilePlan:
    """A uniform tiling of ``C[m, n] = A[m, k] @ B[k, n]`` chosen by one strategy.

    Attributes:
        strategy: the strategy's registered name.
        shape: ``(m, k, n)``.
        limit: the byte limit the plan was made for.
        row_size, col_size, k_size: tile extents (output rows, output columns, ids).
        predicted_ws: predicted working sets (bytes) of the tiles the strategy evaluated.
        predicted_all: whether ``predicted_ws`` covers every tile in :meth:`tiles` order
            (``prescient``); ``overbook`` keeps its sampled tiles rescaled to ``row_size``,
            ``conservative`` the one dense bound of a full tile.
        sampling_seconds: time spent counting/sampling to choose the plan.
        sampled_rows: rows whose output was counted symbolically.
    """

    strategy: str
    shape: tuple[int, int, int]
    limit: int
    row_size: int
    col_size: int
    k_size: int
    predicted_ws: tuple[int, ...] = ()
    predicted_all: bool = False
    sampling_seconds: float = 0.0
    sampled_rows: int = 0

    @staticmethod
    def _bounds(extent: int, size: int) -> list[tuple[int, int]]:
        return [(s, min(s + size, extent)) for s in range(0, extent, size)]

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the grid."""
        m, k, n = self.shape
        if m == 0 or n == 0:
            return 0
        return (-(-m // self.row_size)) * (-(-n // self.col_size)) * max(1, -(-k // self.k_size))

    def tiles(self) -> Iterator[Tile]:
        """Tiles in execution order: column panels outermost, then rows, then ids."""
        m, k, n = self.shape
        ks = self._bounds(k, self.k_size) or [(0, 0)]
        for c0, c1 in self._bounds(n, self.col_size):
            for r0, r1 in self._bounds(m, self.row_size):
                for k0, k1 in ks:
                    yield Tile(r0, r1, k0, k1, c0, c1)


class TileStatistics:
    """Count-only view of the operands offered to strategies (an oracle over A and B).

    Free (O(m + k)): ``nnz_a_rows``, ``nnz_b_rows``. Vectorised O(nnzA * n_panels):
    :meth:`flops`. Charged to :attr:`seconds`: :meth:`output_counts` (symbolic SpGEMM of
    the listed rows), :meth:`touched` / :meth:`touched_tiles` (distinct B rows touched).
    """

    def __init__(self, a: Operand, b: Operand, bm: ByteModel, budget: int | None = None,
                 limit: int | None = None) -> None:
        self._a, self._b = a, b
        self.byte_model = bm
        self.shape = (a.shape[0], a.shape[1], b.shape[1])
        self.budget = budget   # bytes the statistics may hold at once (None: unbounded)
        self.limit = budget if limit is None else limit  # the caller's limit, for messages
        self.held = 0          # bytes of the arrays this object (and its strategy) keeps
        self.peak = 0          # largest held + transient bytes seen
        self._rows_a: np.ndarray | None = None
        self._rows_b: np.ndarray | None = None
        self.seconds = 0.0
        self.counted_rows = 0
        self._panel_cache: dict[int, np.ndarray] = {}
        self._flops_cache: dict[int, np.ndarray] = {}

    def reserve(self, nbytes: int, what: str, keep: bool = True) -> None:
        """Charge an allocation of the statistics to the budget (``keep``: it stays held).

        Raises:
            MemoryLimitError: the statistics would exceed the budget (``budget`` bytes).
        """
        nbytes = int(nbytes)
        self.peak = max(self.peak, self.held + nbytes)
        if self.budget is not None and self.held + nbytes > self.budget:
            from flexsparse.tiling.executor import MemoryLimitError

            need = self.held + nbytes
            raise MemoryLimitError(self.limit, self.limit - self.budget + need,
                                   f"the tiling statistics ({what}) need {need:,} bytes for a "
                                   f"{self.shape[0]:,} x {self.shape[1]:,} x {self.shape[2]:,} product, more "
                                   f"than the {self.budget:,} bytes left for them")
        if keep:
            self.held += nbytes

    @property
    def nnz_a_rows(self) -> np.ndarray:
        """``int64[m]``: entries of each row of A (made, and charged, on first use)."""
        if self._rows_a is None:
            self.reserve(8 * self.shape[0], "entries per row of A")
            self._rows_a = np.diff(self._a.indptr).astype(np.int64, copy=False)
        return self._rows_a

    @property
    def nnz_b_rows(self) -> np.ndarray:
        """``int64[k]``: entries of each row of B (made, and charged, on first use)."""
        if self._rows_b is None:
            self.reserve(8 * self.shape[1], "entries per row of B")
            self._rows_b = np.diff(self._b.indptr).astype(np.int64, copy=False)
        return self._rows_b

    def release(self, nbytes: int) -> None:
        """Give back bytes charged with :meth:`reserve` (the arrays were dropped)."""
        self.held = max(0, self.held - int(nbytes))

    def panel_width(self, n_panels: int) -> int:
        return max(1, -(-self.shape[2] // max(1, n_panels)))

    def nnz_b_panels(self, n_panels: int) -> np.ndarray:
        """``[k, n_panels]``: entries of each B row inside each column panel (int32 while
        every count fits, else int64)."""
        if n_panels not in self._panel_cache:
            k = self.shape[1]
            if n_panels == 1:
                res = self.nnz_b_rows.reshape(k, 1)
            else:
                dt = np.int32 if self._b.nnz < 2**31 else np.int64
                self.reserve(np.dtype(dt).itemsize * k * n_panels, "B entries per column panel")
                res = np.empty((k, n_panels), dtype=dt)
                csr_row_window_counts(self._b.indptr, self._b.indices, self.panel_width(n_panels), res)
            self._panel_cache[n_panels] = res
        return self._panel_cache[n_panels]

    def flops(self, n_panels: int) -> np.ndarray:
        """``int64[m, n_panels]``: multiplies of each output row inside each column panel."""
        if n_panels not in self._flops_cache:
            t0 = time.perf_counter()
            self.reserve(8 * self.shape[0] * n_panels, "multiplies per row and panel")
            out = np.empty((self.shape[0], n_panels), dtype=np.int64)
            spgemm_csr_csr_flops(self._a.indptr, self._a.indices, self.nnz_b_panels(n_panels), out)
            self._flops_cache[n_panels] = out
            self.seconds += time.perf_counter() - t0
        return self._flops_cache[n_panels]

    def n_windows(self, k_width: int) -> int:
        return max(1, -(-self.shape[1] // max(1, k_width)))

    def nnz_a_windows(self, k_width: int) -> np.ndarray:
        """``int64[m, n_windows]``: entries of each A row inside each contracted-id window."""
        m, k, _ = self.shape
        n_w = self.n_windows(k_width)
        if n_w == 1:
            return self.nnz_a_rows.reshape(m, 1)
        self.reserve(8 * m * n_w, "A entries per id window")
        out = np.empty((m, n_w), dtype=np.int64)
        csr_row_window_counts(self._a.indptr, self._a.indices, k_width, out)
        return out

    def output_counts(self, rows: np.ndarray, n_panels: int,
                      k_width: int | None = None) -> np.ndarray:
        """``int64[len(rows), n_windows, n_panels]``: exact output nonzeros (symbolic SpGEMM).

        With ``k_width`` the contracted ids are cut into windows of that width and each
        window's partial product is counted on its own (one window by default).
        """
        t0 = time.perf_counter()
        k_width = max(1, self.shape[1] if k_width is None else k_width)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.reserve(8 * rows.size * self.n_windows(k_width) * n_panels, "output counts")
        self.reserve(8 * self.shape[2], "column stamps", keep=False)
        out = np.zeros((rows.size, self.n_windows(k_width), n_panels), dtype=np.int64)
        if rows.size and self.shape[2]:
            mark = np.full(self.shape[2], -1, dtype=np.int64)
            spgemm_csr_csr_symbolic(self._a.indptr, self._a.indices, self._b.indptr,
                                    self._b.indices, rows, self.shape[2], n_panels, k_width,
                                    mark, out)
        self.counted_rows += int(rows.size)
        self.seconds += time.perf_counter() - t0
        return out

    def touched(self, r0: int, r1: int, n_panels: int) -> tuple[int, np.ndarray]:
        """Distinct B rows touched by A's rows ``[r0, r1)`` and their entries per panel."""
        t0 = time.perf_counter()
        k = self.shape[1]
        self.reserve(8 * k, "B row stamps", keep=False)
        u = np.zeros((1, 1), dtype=np.int64)
        nb = np.zeros((1, 1, n_panels), dtype=np.int64)
        if k and r1 > r0:
            stamp = np.full(k, -1, dtype=np.int64)
            spgemm_csr_csr_touched(self._a.indptr[r0:r1 + 1], self._a.indices, r1 - r0, k,
                                   self.nnz_b_panels(n_panels), stamp, u, nb)
        self.seconds += time.perf_counter() - t0
        return int(u[0, 0]), nb[0, 0]

    def touched_tiles(self, row_size: int, n_panels: int,
                      k_width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every row tile of ``row_size`` rows: ``(u [T, n_w], nnzB [T, n_w, n_panels])``.

        ``u`` counts the distinct B rows the tile touches in each id window, ``nnzB``
        their entries in each column panel.
        """
        t0 = time.perf_counter()
        m, k, _ = self.shape
        k_width = max(1, k if k_width is None else k_width)
        n_w = self.n_windows(k_width)
        n_t = -(-m // row_size)
        self.reserve(8 * (k + n_t * n_w * (1 + n_panels)), "B rows touched per tile", keep=False)
        u = np.zeros((n_t, n_w), dtype=np.int64)
        nb = np.zeros((n_t, n_w, n_panels), dtype=np.int64)
        if k:
            stamp = np.full(k, -1, dtype=np.int64)
            spgemm_csr_csr_touched(self._a.indptr, self._a.indices, row_size, k_width,
                                   self.nnz_b_panels(n_panels), stamp, u, nb)
        self.seconds += time.perf_counter() - t0
        return u, nb


Strategy = Callable[..., TilePlan]
STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator registering a strategy under ``name``."""
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn
    return deco


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; ``ValueError`` listing valid names otherwise."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown tiling strategy {name!r}; valid names: "
                         f"{', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Largest ``x`` in ``[lo, hi]`` with ``ok(x)`` (``ok`` monotone, ``ok(lo)`` assumed)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


@register_strategy("conservative")
def conservative(stats: TileStatistics, limit: int, *, overbook: float = 0.1,
                 seed: int = 0) -> TilePlan:
    """Largest near-cubic tile whose *dense* working set fits; no counting."""
    bm = stats.byte_model
    m, k, n = (max(1, d) for d in stats.shape)

    def fits(r: int, c: int, kw: int) -> bool:
        return dense_tile_bytes(bm, r, c, kw) <= limit

    s = _largest(1, max(m, n, k), lambda s: fits(min(s, m), min(s, n), min(s, k)))
    r, c, kw = min(s, m), min(s, n), min(s, k)
    r = _largest(r, m, lambda x: fits(x, c, kw))
    c = _largest(c, n, lambda x: fits(r, x, kw))
    kw = _largest(kw, k, lambda x: fits(r, c, x))
    plan = TilePlan("conservative", stats.shape, limit, r, c, kw,
                    (int(dense_tile_bytes(bm, r, c, kw)),), False)
    _check_conservative_time(stats, plan)
    # every full tile has the same dense bound (edge tiles less): one value, not one per tile
    return plan


def conservative_estimates(stats: TileStatistics, plan: TilePlan) -> tuple[float, float]:
    """``(conservative seconds, overbook seconds)`` by the executor's cost model, O(nnzA).

    Conservative: every tile costs :data:`TILE_SECONDS`; the kernel scans each A row once per
    (id window, column panel) and each B row once per column panel for every A entry that
    reaches it; every multiply costs :data:`MULTIPLY_SECONDS`. Overbook: its planning, the
    same scans over its own (few) panels and windows, the multiplies, and about
    ``max(panels x windows, total working set / limit)`` tiles.
    """
    m, k, n = plan.shape
    if m == 0 or n == 0 or k == 0:
        return 0.0, 0.0
    a, b, bm = stats._a, stats._b, stats.byte_model
    flops = int(spgemm_csr_csr_flops_total(a.indices, b.indptr))
    n_c, n_k = -(-n // plan.col_size), -(-k // plan.k_size)
    scan = flops * n_c + (m + a.nnz) * n_c * n_k
    cons = TILE_SECONDS * plan.n_tiles + SCAN_SECONDS * scan + MULTIPLY_SECONDS * flops
    ob_c, ob_cw, ob_k, ob_kw = _sparse_panels(stats, plan.limit)
    room = max(1, plan.limit - fixed_bytes(bm, ob_cw, ob_kw))   # per tile, for its rows
    rows_ws = 2 * bm.ptr_bytes * m * ob_c * ob_k + (a.nnz * ob_c + b.nnz + flops) * bm.elem
    ob_tiles = max(ob_c * ob_k, -(-rows_ws // room))
    ob_scan = flops * ob_c + (m + a.nnz) * ob_c * ob_k
    ob = PLAN_SECONDS + TILE_SECONDS * ob_tiles + SCAN_SECONDS * ob_scan + MULTIPLY_SECONDS * flops
    return cons, ob


def _check_conservative_time(stats: TileStatistics, plan: TilePlan) -> None:
    """Refuse a conservative plan the cost model puts beyond the allowed slowdown."""
    m, k, n = plan.shape
    cons, ob = conservative_estimates(stats, plan)
    if cons > CONSERVATIVE_MAX_SLOWDOWN * ob:
        raise TilingRefusedError(
            f"tiling='conservative' declines this {m:,} x {k:,} x {n:,} product: its dense-sized tiles "
            f"({plan.row_size} x {plan.col_size} x {plan.k_size}, sized for the {plan.limit:,} bytes left to "
            f"tiles) number {plan.n_tiles:,} and would take about {cons:.3g} s, more than "
            f"{CONSERVATIVE_MAX_SLOWDOWN}x the "
            f"{ob:.3g} s estimated for tiling='overbook' (which sizes tiles from the real sparsity); use "
            "'overbook' or 'prescient', or a larger memory_limit")


def _sparse_panels(stats: TileStatistics, limit: int) -> tuple[int, int, int, int]:
    """``(n_col_panels, col_size, n_k_panels, k_size)`` keeping acc <= limit/4, stamps <= limit/8."""
    bm = stats.byte_model
    _, k, n = stats.shape
    n_k = max(1, math.ceil(8 * k / max(1.0, limit / 8))) if k else 1
    n_k = min(n_k, max(k, 1))
    kw = max(1, -(-k // n_k))
    n_c = max(1, math.ceil(n * (bm.value_bytes + 8) / max(1.0, limit / 4))) if n else 1
    n_c = min(n_c, max(n, 1))
    cw = stats.panel_width(n_c)
    n_c = max(1, -(-n // cw))           # panels actually needed at that width
    n_k = max(1, -(-k // kw))
    return n_c, cw, n_k, kw


@register_strategy("overbook")
def overbook(stats: TileStatistics, limit: int, *, overbook: float = 0.1,
             seed: int = 0, n_tiles: int = 16) -> TilePlan:
    """Swiftiles: one sampling pass, row size set so ~``overbook`` of the tiles overflow."""
    t_start, c_start = stats.seconds, stats.counted_rows
    t0 = time.perf_counter()
    bm, e = stats.byte_model, stats.byte_model.elem
    m, k, n = stats.shape
    n_c, cw, n_k, kw = _sparse_panels(stats, limit)
    if m == 0 or n == 0:
        return TilePlan("overbook", stats.shape, limit, 1, cw, kw)
    fixed = fixed_bytes(bm, cw, kw)
    rng = np.random.default_rng(seed)
    flops = stats.flops(n_c)                                    # [m, n_c]
    # 1. output nonzeros per multiply, from a few random rows (ratio estimator)
    n_rows = min(m, max(64, m // 200))
    rows = np.sort(rng.choice(m, size=n_rows, replace=False))
    counted = stats.output_counts(rows, n_c)[:, 0, :]
    ratio = counted.sum() / max(1, int(flops[rows].sum()))
    # 2. row size whose expected working set equals the limit
    a_ptr = stats._a.indptr
    per_row = 2 * bm.ptr_bytes + (int(a_ptr[-1]) / m + ratio * flops.mean()) / n_k * e
    s0 = int(min(m, max(1, (limit - fixed) // max(per_row, 1e-9))))
    # 3. working sets of random tiles of that size; quantile; linear rescale. The output
    # term comes from the one sampling pass above (ratio * exact multiplies); the cheap
    # exact A and B terms are re-evaluated at the rescaled size (a few fixed-point steps,
    # because B rows touched grow sub-linearly with the tile).
    where = rng.random(n_tiles)
    panel = rng.integers(0, n_c, size=n_tiles)

    def sampled_ws(s: int) -> list[float]:
        out = []
        for w, q in zip(where, panel):
            r0 = int(w * (m - s + 1))
            u, nb = stats.touched(r0, r0 + s, n_c)
            na = int(a_ptr[r0 + s] - a_ptr[r0]) / n_k
            nc = ratio * flops[r0:r0 + s, q].sum() / n_k
            out.append(float(tile_bytes(bm, s, cw, kw, na, u / n_k, nb[q] / n_k, nc)))
        return out

    s1, seen_sizes = s0, set()
    for _ in range(3):
        ws = sampled_ws(s1)
        occ = float(np.quantile(ws, 1.0 - overbook))
        seen_sizes.add(s1)
        nxt = int(min(m, max(1, math.floor(s1 * (limit - fixed) / max(occ - fixed, 1e-9)))))
        if nxt in seen_sizes:
            break
        s1 = nxt
    if s1 not in seen_sizes:
        ws = sampled_ws(s1)
    pred = tuple(int(w) for w in ws)
    stats.seconds = t_start + (time.perf_counter() - t0)
    return TilePlan("overbook", stats.shape, limit, s1, cw, kw, pred, False,
                    stats.seconds - t_start, stats.counted_rows - c_start)


@register_strategy("prescient")
def prescient(stats: TileStatistics, limit: int, *, overbook: float = 0.1,
              seed: int = 0) -> TilePlan:
    """Exact counts of every row, then the largest row size at which every tile fits."""
    t_start, c_start = stats.seconds, stats.counted_rows
    t0 = time.perf_counter()
    bm = stats.byte_model
    m, k, n = stats.shape
    n_c, cw, n_k, kw = _sparse_panels(stats, limit)
    if m == 0 or n == 0:
        return TilePlan("prescient", stats.shape, limit, 1, cw, kw)
    n_w = stats.n_windows(kw)
    stats.reserve(8 * m, "row list", keep=False)
    counts = stats.output_counts(np.arange(m), n_c, kw)          # the full symbolic pass
    stats.reserve(16 * (m + 1) * n_w * n_c, "prefix sums of the output counts")
    cs_c = np.concatenate([np.zeros((1, n_w, n_c), np.int64), np.cumsum(counts, axis=0)])
    del counts
    stats.release(8 * m * n_w * n_c + 8 * (m + 1) * n_w * n_c)  # counts and the cumsum temporary
    if n_w == 1:  # the prefix sums of A's row counts are A's row pointers
        cs_a = stats._a.indptr.reshape(m + 1, 1)
    else:
        nnz_a = stats.nnz_a_windows(kw)
        stats.reserve(16 * (m + 1) * n_w, "prefix sums of A's entries")
        cs_a = np.concatenate([np.zeros((1, n_w), np.int64), np.cumsum(nnz_a, axis=0)])
        stats.release(8 * (m + 1) * n_w)                          # the cumsum temporary
    cws = np.minimum(cw, n - cw * np.arange(n_c))                 # [n_c] panel widths
    kws = np.minimum(kw, max(k, 1) - kw * np.arange(n_w))         # [n_w] window widths
    fixed = fixed_bytes(bm, cws[None, None, :], kws[None, :, None])
    cache: dict[int, np.ndarray] = {}

    def tile_ws(s: int) -> np.ndarray:                           # [T, n_w, n_c] exact bytes
        if s not in cache:
            cache.clear()                                         # only the latest size is kept
            starts = np.arange(0, m, s)
            # about ten [T, n_w, n_c] int64 temporaries while one size is evaluated
            stats.reserve(80 * starts.size * n_w * n_c, "per-tile working sets", keep=False)
            ends = np.minimum(starts + s, m)
            u, nb = stats.touched_tiles(s, n_c, kw)
            na = cs_a[ends] - cs_a[starts]
            nc = cs_c[ends] - cs_c[starts]
            rows = (ends - starts)[:, None, None]
            cache[s] = (fixed + 2 * bm.ptr_bytes * rows + bm.ptr_bytes * u[:, :, None]
                        + (na[:, :, None] + nb + nc) * bm.elem)
        return cache[s]

    def fits(s: int) -> bool:
        return int(tile_ws(s).max()) <= limit

    s = m
    while s > 1 and not fits(s):
        s = -(-s // 2)
    if s < m and fits(s):                                        # refine (s, 2s) a little
        hi = min(m, 2 * s) - 1
        for _ in range(3):
            if s >= hi:
                break
            mid = (s + hi + 1) // 2
            if fits(mid):
                s = mid
            else:
                hi = mid - 1
    pred = tile_ws(s)                                            # [T, n_c] -> tiles() order
    pred_t = tuple(int(x) for x in pred.transpose(2, 0, 1).ravel())  # tiles() order
    stats.seconds = t_start + (time.perf_counter() - t0)
    return TilePlan("prescient", stats.shape, limit, s, cw, kw, pred_t, True,
                    stats.seconds - t_start, stats.counted_rows - c_start)
