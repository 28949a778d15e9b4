"""Hierarchical structured sparsity (HSS, after HighLight, MICRO 2023) along the reduction axis.

A pattern such as ``"3:4->2:4"`` is written OUTER-FIRST: level ``i`` groups ``H_i``
consecutive sub-groups of level ``i+1`` (elements for the last level) and keeps at most
``G_i`` of them. ``span = prod(H_i)`` columns form one top-level group; a row of a logical
``(M, K)`` matrix has ``n_top = ceil(K/span)`` top-level groups (``K`` is padded with zeros to
``n_top * span``; the padding is never visible). Density is ``prod(G_i / H_i)``.

Layout of :class:`HSS` (``L`` levels, fixed-size storage, which is what makes it regular):

* ``values: [M, n_top, G_0, ..., G_{L-1}]`` float32/float64, outer-first;
* ``positions: tuple of L uint8 arrays``, ``positions[i]: [M, n_top, G_0, ..., G_i]`` = index
  of the kept sub-group/element within its parent group at level ``i`` (``0 <= p < H_i``),
  strictly increasing along the last axis.

The column of a stored element is ``t*span + sum_i positions[i] * stride_i`` with
``stride_i = prod(H_j for j > i)``. Kept slots that hold no nonzero store 0; slots whose
column falls in the padding must hold 0.

Storage: ``values`` plus one byte per kept entry per level (``nbytes``). ``metadata_bits`` is
the ideal cost ``ceil(log2(C(H_i, G_i)))`` bits per group per level (REFERENCES section 1),
used by the accelerator model.

Conversion (``from_dense``) keeps, at every level (innermost first), the sub-groups that
hold a nonzero, filling the remaining slots with the lowest-index empty ones; it is
``O(M * K * L)``. Products cost ``O(nnz * N)``: ``linear``, ``matmul`` and
``sampled_grad`` run the lane-select kernels of :mod:`flexsparse.kernels.cpu.lanes`
(values and column offsets packed once in tile order; needs AVX-512 and every kept
slot's column range within one register), otherwise, and for ``W.T`` products, the gather
kernels of :mod:`flexsparse.kernels.cpu.hss` (empty level-0 groups and zero slots skipped).

>>> import numpy as np
>>> p = HSSPattern.parse("3:4->2:4")
>>> p.span, p.density
(16, 0.375)
>>> W = np.zeros((2, 16)); W[0, [0, 2, 5]] = [1., 2., 3.]; W[1, 15] = 4.
>>> H = HSS.from_dense(W, p)
>>> H.values.shape, [q.shape for q in H.positions]
((2, 1, 3, 2), [(2, 1, 3), (2, 1, 3, 2)])
>>> np.array_equal(H.todense(), W)
True
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse.formats.block import StructuredMatrix, check_float_dtype

__all__ = ["HSS", "HSSPattern"]

_LEVEL_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class HSSPattern:
    """A hierarchy of G:H levels, outer first: ``levels = ((G_0, H_0), ..., (G_{L-1}, H_{L-1}))``.

    >>> HSSPattern.parse("4:6 -> 1:4")
    HSSPattern('4:6->1:4')
    >>> HSSPattern.parse("5:4")
    Traceback (most recent call last):
    ...
    ValueError: level 0 '5:4' keeps G=5 of H=4: need 1 <= G <= H
    """

    levels: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.levels, tuple) or not self.levels:
            raise ValueError("an HSS pattern needs at least one G:H level")
        for i, lv in enumerate(self.levels):
            if not (isinstance(lv, tuple) and len(lv) == 2):
                raise ValueError(f"level {i} must be a (G, H) pair, got {lv!r}")
            G, H = lv
            if not (isinstance(G, int) and isinstance(H, int)):
                raise ValueError(f"level {i} must hold ints, got {lv!r}")
            if G < 1 or H < 1 or G > H:
                raise ValueError(f"level {i} '{G}:{H}' keeps G={G} of H={H}: need 1 <= G <= H")
            if H > 255:
                raise ValueError(f"level {i} '{G}:{H}': H={H} > 255 does not fit the uint8 positions")

    @classmethod
    def parse(cls, spec: str | HSSPattern) -> HSSPattern:
        """Parse ``"G0:H0->G1:H1->..."`` (outer first); raises ``ValueError`` on bad syntax."""
        if isinstance(spec, HSSPattern):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"pattern must be a string such as '3:4->2:4', not {type(spec).__name__}")
        levels = []
        for i, part in enumerate(spec.split("->")):
            m = _LEVEL_RE.match(part)
            if not m:
                raise ValueError(f"malformed HSS pattern {spec!r}: level {i} {part.strip()!r} is not "
                                 "'G:H' (expected e.g. '2:4' or '3:4->2:4')")
            G, H = int(m.group(1)), int(m.group(2))
            if G < 1 or H < 1 or G > H:
                raise ValueError(f"level {i} '{G}:{H}' keeps G={G} of H={H}: need 1 <= G <= H")
            levels.append((G, H))
        return cls(tuple(levels))

    def __str__(self) -> str:
        return "->".join(f"{G}:{H}" for G, H in self.levels)

    def __repr__(self) -> str:
        return f"HSSPattern({str(self)!r})"

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def span(self) -> int:
        """Columns in one top-level group: ``prod(H_i)``."""
        return math.prod(H for _, H in self.levels)

    @property
    def kept(self) -> int:
        """Stored slots per top-level group: ``prod(G_i)``."""
        return math.prod(G for G, _ in self.levels)

    @property
    def density(self) -> float:
        """``prod(G_i / H_i)``."""
        return self.kept / self.span

    @property
    def strides(self) -> tuple[int, ...]:
        """``stride_i = prod(H_j for j > i)``."""
        Hs = [H for _, H in self.levels]
        return tuple(math.prod(Hs[i + 1:]) for i in range(len(Hs)))

    def n_top(self, K: int) -> int:
        """Top-level groups per row: ``ceil(K / span)``."""
        return -(-int(K) // self.span)

    def metadata_bits(self, M: int, K: int) -> int:
        """Ideal metadata of an ``(M, K)`` matrix: ``sum_i groups_i * ceil(log2(C(H_i, G_i)))``.

        ``groups_i = M * n_top * prod(G_j for j < i)`` (only kept groups carry metadata).

        >>> HSSPattern.parse("2:4").metadata_bits(1, 4)   # C(4,2)=6 -> 3 bits per group
        3
        """
        total, groups = 0, int(M) * self.n_top(K)
        for G, H in self.levels:
            total += groups * math.ceil(math.log2(math.comb(H, G))) if math.comb(H, G) > 1 else 0
            groups *= G
        return total

    def validate(self, matrix: Any) -> bool:
        """Whether every group of a dense ``(M, K)`` matrix respects G:H at every level.

        >>> HSSPattern.parse("2:4").validate(np.array([[1., 0., 2., 0.]]))
        True
        >>> HSSPattern.parse("1:4").validate(np.array([[1., 0., 2., 0.]]))
        False
        """
        A = np.asarray(matrix)
        if A.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got shape {A.shape}")
        nz = _grouped(A != 0, self)  # [M, n_top, H_0, ..., H_{L-1}]
        for i in reversed(range(self.n_levels)):
            if np.any(nz.sum(axis=-1) > self.levels[i][0]):
                return False
            nz = nz.any(axis=-1)
        return True


def _grouped(A: np.ndarray, pattern: HSSPattern) -> np.ndarray:
    """Pad ``A: [M, K]`` with zeros to ``n_top*span`` columns; view as ``[M, n_top, H_0, ...]``."""
    M, K = A.shape
    n_top = pattern.n_top(K)
    padded = np.zeros((M, n_top * pattern.span), dtype=A.dtype)
    padded[:, :K] = A
    return padded.reshape((M, n_top) + tuple(H for _, H in pattern.levels))


def select_hss(A: np.ndarray, pattern: HSSPattern, by: str = "nonzero"):
    """Choose the kept slots of a dense ``(M, K)`` matrix level by level, innermost first.

    ``by="nonzero"`` keeps sub-groups holding a nonzero (lowest index first for the rest);
    ``by="magnitude"`` keeps the largest ``|a|`` in each innermost group, then at each outer
    level the ``G_i`` sub-groups of largest L2 norm of what survived below (pruning).
    Ties go to the lower index (stable sort). Returns ``(values, positions)`` in the
    :class:`HSS` layout. Cost ``O(M * K * L)`` plus a sort of ``H_i`` items per group.
    """
    if by not in ("nonzero", "magnitude"):
        raise ValueError(f"unknown selection {by!r}; valid: magnitude, nonzero")
    vals = _grouped(A, pattern)
    L = pattern.n_levels
    pos: list[np.ndarray | None] = [None] * L
    for i in reversed(range(L)):
        G, _ = pattern.levels[i]
        ax = 2 + i
        red = tuple(range(ax + 1, vals.ndim))
        if by == "nonzero":
            score = (vals != 0).any(axis=red) if red else vals != 0
        else:
            sq = np.square(vals, dtype=np.float64)
            score = sq.sum(axis=red) if red else sq
        order = np.argsort(-score.astype(np.float64), axis=-1, kind="stable")[..., :G]
        sel = np.sort(order, axis=-1)  # [M, n_top, H_0..H_{i-1}, G_i]
        for j in range(i + 1, L):  # deeper positions follow their parent sub-group
            idx = sel.reshape(sel.shape + (1,) * (pos[j].ndim - sel.ndim))
            pos[j] = np.take_along_axis(pos[j], idx, axis=ax)
        idx = sel.reshape(sel.shape + (1,) * (vals.ndim - sel.ndim))
        vals = np.take_along_axis(vals, idx, axis=ax)
        pos[i] = sel.astype(np.uint8)
    return np.ascontiguousarray(vals), tuple(np.ascontiguousarray(p) for p in pos)


class HSS(StructuredMatrix):
    """Hierarchically structured sparse matrix; see the module docstring for the layout.

    Args:
        values: ``[M, n_top, G_0, ..., G_{L-1}]`` float32/float64.
        positions: ``L`` uint8 arrays, ``positions[i]: [M, n_top, G_0, ..., G_i]``.
        shape: logical ``(M, K)``.
        pattern: an :class:`HSSPattern` or its string form (``"3:4->2:4"``).
    """

    format = "hss"
    #: Density at which dense BLAS beats the HSS/N:M gather kernel (no AVX-512, or a
    #: pattern wider than a register) (the measurement is in
    #: :mod:`flexsparse._limits`).
    DENSE_CROSSOVER = _limits.HSS_DENSE_CROSSOVER
    #: Same, for patterns the lane-select kernels (:mod:`flexsparse.kernels.cpu.lanes`) run.
    LANES_CROSSOVER = _limits.HSS_LANES_DENSE_CROSSOVER

    def __init__(self, values: Any, positions: Any, shape: tuple[int, int], pattern: Any):
        self.pattern = HSSPattern.parse(pattern)
        self.shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
        values = np.asarray(values)
        check_float_dtype(values.dtype, "values")
        self.values = np.ascontiguousarray(values)
        if not isinstance(positions, (tuple, list)):
            raise TypeError("positions must be a tuple of uint8 arrays, one per level")
        self._positions = tuple(np.ascontiguousarray(p) for p in positions)
        self.validate()

    # ----------------------------------------------------------- structure
    @property
    def positions(self):
        """Tuple of ``L`` uint8 arrays, ``positions[i]: [M, n_top, G_0, ..., G_i]``."""
        return self._positions

    @property
    def n_top(self) -> int:
        return self.pattern.n_top(self.shape[1])

    def validate(self) -> None:
        """Check the layout; raise ``ValueError``/``TypeError`` naming the problem."""
        if len(self.shape) != 2 or min(self.shape) < 0:
            raise ValueError(f"shape must be two non-negative ints, got {self.shape}")
        M, K = self.shape
        p, n_top = self.pattern, self.n_top
        Gs = tuple(G for G, _ in p.levels)
        check_float_dtype(self.values.dtype, "values")
        want = (M, n_top) + Gs
        if self.values.shape != want:
            raise ValueError(f"values must have shape {want} = [M, n_top, G_0..G_L-1], "
                             f"got {self.values.shape}")
        if len(self._positions) != p.n_levels:
            raise ValueError(f"positions must hold {p.n_levels} arrays (one per level), "
                             f"got {len(self._positions)}")
        for i, (q, (_, H)) in enumerate(zip(self._positions, p.levels)):
            if q.dtype != np.uint8:
                raise TypeError(f"positions[{i}] must be uint8, got {q.dtype}")
            if q.shape != want[:3 + i]:
                raise ValueError(f"positions[{i}] must have shape {want[:3 + i]}, got {q.shape}")
            if q.size and q.max() >= H:
                raise ValueError(f"positions[{i}] holds {int(q.max())} >= H_{i} = {H}")
            if q.shape[-1] > 1 and np.any(np.diff(q.astype(np.int16), axis=-1) <= 0):
                raise ValueError(f"positions[{i}] must be strictly increasing along the last axis")
        if self.values.size and n_top * p.span > K:
            outside = self.columns() >= K
            if np.any(self.values.reshape(M, self.n_top * self.pattern.kept)[outside] != 0):
                raise ValueError("slots whose column lies in the padding (>= K) must hold 0")

    def columns(self) -> np.ndarray:
        """Column of every stored slot: ``int64[M, n_top * prod(G)]`` (cached; positions are fixed)."""
        cols = getattr(self, "_cols", None)
        if cols is None:
            M = self.shape[0]
            p = self.pattern
            L = p.n_levels
            cols = (np.arange(self.n_top, dtype=np.int64) * p.span).reshape((1, -1) + (1,) * L)
            for i, (q, stride) in enumerate(zip(self._positions, p.strides)):
                cols = cols + q.astype(np.int64).reshape(q.shape + (1,) * (L - 1 - i)) * stride
            cols = np.ascontiguousarray(np.broadcast_to(cols, self.values.shape).reshape(M, self.n_top * p.kept))
            self._cols = cols
        return cols

    @property
    def nnz(self) -> int:
        """Stored slots inside the logical shape (``M * n_top * prod(G)`` minus padding slots)."""
        nnz = getattr(self, "_nnz", None)
        if nnz is None:  # structure is immutable: count once (O(M * S)), reuse per product
            nnz = int(np.count_nonzero(self.columns() < self.shape[1])) if self.values.size else 0
            self._nnz = nnz
        return nnz

    @property
    def nbytes(self) -> int:
        """Bytes actually used: values + one uint8 per kept entry per level."""
        return int(self.values.nbytes + sum(q.nbytes for q in self._positions))

    @property
    def metadata_bits(self) -> int:
        """Ideal metadata bits, ``ceil(log2(C(H,G)))`` per kept group per level."""
        return self.pattern.metadata_bits(*self.shape)

    # -------------------------------------------------------- constructors
    @classmethod
    def from_dense(cls, W: Any, pattern: Any) -> HSS:
        """Build from a dense ``(M, K)`` matrix that already respects ``pattern``.

        Raises ``ValueError`` if a group holds too many nonzeros (use ``flexsparse.prune``).
        """
        pattern = HSSPattern.parse(pattern)
        W = np.asarray(W)
        check_float_dtype(W.dtype, "W")
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D, got shape {W.shape}")
        values, positions = select_hss(W, pattern, by="nonzero")
        if np.count_nonzero(values) != np.count_nonzero(W):
            raise ValueError(f"W does not satisfy the pattern {pattern}: some group holds too many "
                             "nonzeros (prune it first with flexsparse.prune)")
        return cls._build(values, positions, W.shape, pattern)

    @classmethod
    def _build(cls, values, positions, shape, pattern):
        return cls(values, positions, shape, pattern)

    def with_values(self, values: Any) -> HSS:
        """Same structure (and cached columns), new ``values`` (same shape as ``self.values``)."""
        values = np.asarray(values)
        check_float_dtype(values.dtype, "values")
        out = copy.copy(self)  # shares positions and the structure caches (_cols, _nnz)
        out.values = np.ascontiguousarray(values)
        out._dense_cache = None
        # share the packed index (structure), not the packed values
        out._lane_cache = {k: [e[0], e[1], None, None] for k, e in getattr(self, "_lane_cache", {}).items()}
        out.validate()
        return out

    def _repr_extra(self) -> str:
        return f"pattern='{self.pattern}'"

    @classmethod
    def from_coo(cls, coo, pattern: Any = "1:1") -> HSS:
        """Build from a 2-D COO that respects ``pattern`` (through its dense form: O(M * K))."""
        return cls.from_dense(coo.todense(), pattern)

    # ---------------------------------------------------------- conversion
    def _todense(self) -> np.ndarray:
        M, K = self.shape
        dense = np.zeros((M, self.n_top * self.pattern.span), dtype=self.dtype)
        if self.values.size:
            dense[np.arange(M)[:, None], self.columns()] = self.values.reshape(M, self.n_top * self.pattern.kept)
        return dense[:, :K].copy()

    def _coo_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        M, K = self.shape
        cols = self.columns()
        rows = np.broadcast_to(np.arange(M, dtype=np.int64)[:, None], cols.shape)
        inside = cols < K
        return rows[inside], cols[inside], self.values.reshape(M, self.n_top * self.pattern.kept)[inside]

    # -------------------------------------------------------------- kernels
    def _use_dense(self) -> bool:
        if self.backend != "auto":
            return self.backend == "dense"
        from flexsparse.kernels.cpu.lanes import lane_plan

        has_lanes = lane_plan(self.pattern.levels, self.dtype.itemsize) is not None
        return self.density >= (self.LANES_CROSSOVER if has_lanes else self.DENSE_CROSSOVER)

    def invalidate_cache(self) -> None:
        """Drop the cached dense copy and packed values; call it after writing to ``values``."""
        super().invalidate_cache()
        for entry in getattr(self, "_lane_cache", {}).values():
            entry[2] = entry[3] = None

    def _lanes(self, dt: np.dtype):
        """``(plan, pi, pv, S)`` of the lane-select kernels for dtype ``dt``, or ``None``.

        The tile-order index ``pi`` is built once per dtype (the structure is fixed); the
        tile-order values ``pv`` are re-packed when ``values`` is a different array.
        """
        from flexsparse.kernels.cpu import lanes

        dt = np.dtype(dt)
        cache = self.__dict__.setdefault("_lane_cache", {})
        entry = cache.get(dt.str)
        if entry is None:
            plan = lanes.lane_plan(self.pattern.levels, dt.itemsize)
            pi = None if plan is None else lanes.pack_index(self.columns(), plan, dt)
            entry = cache[dt.str] = [plan, pi, None, None]
        if entry[0] is None:
            return None
        M = self.shape[0]
        S = self.n_top * self.pattern.kept
        if entry[3] is not self.values:
            entry[2] = lanes.pack_values(self._vals(dt).reshape(M, S), entry[0])
            entry[3] = self.values
        return entry[0], entry[1], entry[2], S

    def _kernel_args(self, dt: np.dtype):
        """``(cols int32|int64 [M, S], vals [M, S], flags uint8 [M, S // inner], inner)``.

        ``flags[m, g]`` says whether kept level-0 group ``g`` of row ``m`` holds a nonzero.
        Recomputed per call (``O(values)``) because training may update ``values`` in place.
        """
        M = self.shape[0]
        cols = self.columns()
        if cols.size and cols.max() < 2**31 and cols.dtype != np.int32:
            cols = self._cols = cols.astype(np.int32)
        vals = self._vals(dt).reshape(M, self.n_top * self.pattern.kept)
        inner = self.pattern.kept // self.pattern.levels[0][0]
        flags = (vals.reshape(M, vals.shape[1] // inner, inner) != 0).any(axis=-1).view(np.uint8)
        return cols, vals, np.ascontiguousarray(flags), inner

    def _sparse_matmul(self, X: np.ndarray) -> np.ndarray:
        lane = self._lanes(X.dtype)
        if lane is not None:
            from flexsparse.kernels.cpu.lanes import run_linear

            plan, pi, pv, S = lane
            return run_linear(pv, pi, plan, S, X, self.shape[0], trans_in=True, trans_out=True)
        from flexsparse.kernels.cpu.hss import run_matmul

        return run_matmul(*self._kernel_args(X.dtype), X, self.pattern.span, self.pattern.kept)

    def _sparse_linear(self, X: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        lane = self._lanes(X.dtype)
        if lane is not None:
            from flexsparse.kernels.cpu.lanes import run_linear

            plan, pi, pv, S = lane
            return run_linear(pv, pi, plan, S, X, self.shape[0], bias=bias)
        return super()._sparse_linear(X, bias)

    def _sparse_tmatmul(self, Y: np.ndarray) -> np.ndarray:
        from flexsparse.kernels.cpu.hss import run_tmatmul_csr, transposed_csr

        tcsr = getattr(self, "_tcsr", None)
        if tcsr is None:  # structure only: built once, shared by with_values copies
            tcsr = self._tcsr = transposed_csr(self.columns(), self.shape[1])
        indptr, rows, order = tcsr
        return run_tmatmul_csr(indptr, rows, self._vals(Y.dtype).reshape(-1)[order], Y, self.shape[1])

    def _sparse_sampled(self, dY: np.ndarray, X: np.ndarray) -> np.ndarray:
        lane = self._lanes(dY.dtype)
        M = self.shape[0]
        if lane is not None:
            from flexsparse.kernels.cpu.lanes import unpack_values
            from flexsparse.kernels.cpu.lanes_sampled import run_sampled

            plan, pi, _, S = lane
            out = unpack_values(run_sampled(pi, plan, S, dY, X), M, S)
        else:
            from flexsparse.kernels.cpu.hss import run_sampled
            from flexsparse.kernels.cpu.lanes import transpose

            out = run_sampled(self._kernel_args(self.dtype)[0], transpose(dY), transpose(X))
        return out.astype(self.dtype, copy=False).reshape(self.values.shape)
