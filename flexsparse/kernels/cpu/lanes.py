"""Lane-select kernels for N:M and HSS weights (AVX-512): ``X @ W.T`` (``linear`` and ``matmul``).

Why: a gather kernel (``out[m, :] += w * X[col, :]``) loads one activation vector per kept
weight, so it runs at a quarter to a half of BLAS throughput. Here the vector axis is the
OUTPUT ROW instead: a register holds ``L`` rows of ``W`` (``L = 64 bytes / itemsize``: 16
float32, 8 float64) and one load of ``X[b, base : base + L]`` (an activation *window* of
``L`` consecutive columns) serves every kept weight of those ``L`` rows that falls in the
window; ``vpermps``/``vpermpd`` hands each lane its own column. Per kept weight and batch
row that is one permute and one FMA, and the window load is shared by all slots of the
window and the weight vectors by 8 batch rows.

Tile-order layout (:func:`lane_plan`, :func:`pack_index`, :func:`pack_values`): rows are
cut into tiles of ``L``; columns into *super-groups* of ``n_sg_top`` top-level groups
(``sg_span`` columns, ``sg_slots`` kept slots per row -- the same for every row, which is
what makes N:M/HSS regular). Slot ``q`` of a super-group can only hold a column in a fixed
range (the ``j``-th kept position of a level lies in ``[j, H - G + j]``), so the plan cuts
the slots into windows whose ranges fit in ``L`` columns (one window for 1:4 and 2:4, two
for 4:6->1:4); a pattern whose slot range is wider than ``L`` has no plan and uses the
gather kernels of :mod:`flexsparse.kernels.cpu.hss`.

* ``pv: [T, NSG, SS, L]`` -- values, ``pv[t, g, q, l] = W[t*L + l, slot g*SS + q]``;
* ``pi: [T, NSG, SS, L]`` int32 (float32) / int64 (float64) -- that slot's column minus its
  window's first column (``0 <= pi < L``); padding rows/slots hold value 0, index 0.

The activations are packed per window too (:func:`pack_x`, ``xp[bb, w, j, :] =
X[8*bb + j, window w]``; the windows of an HSS pattern overlap, 1.33x the bytes for
4:6->1:4), so a register tile reads one contiguous, aligned block per window. Packing
``X [K, N]`` this way is also the transpose that ``W @ X`` needs.

Kernels (``O(nnz * B)`` FMAs; ``linear`` splits chunks of ``_limits.LANES_CHUNK_TILES``
tiles evenly over threads, and a thread that is done takes the next thread's chunks from
the top (:func:`~flexsparse.kernels.cpu.partition.take_job`), so a thread that starts late
or runs slowed by another runtime's spinning worker costs its delay, not its share):

* :func:`linear_hss_lanes` -- ``Y = X @ W.T`` (or its transpose, so one kernel serves
  ``linear`` and ``matmul``); a register tile of 8 batch rows x ``2L`` output rows (two
  row tiles share each activation window: 16 accumulators, 8 windows, one value and one
  index register). With one row tile, 4:6->1:4 (2 slots per window) issued one window
  load per 2 permute+FMA pairs; two tiles halve that. Each thread walks its chunks (tile
  pairs) outermost, holding a pair's packed weights for all windows in L2
  (``_limits.LANES_L2_BLOCK_BYTES``) while the packed activations of
  ``_limits.LANES_BATCH_BLOCKS`` batch blocks stream past. For ``X @ W.T`` whose tiles
  cover the output (``B % 8 == 0``, ``M % L == 0``, all windows in one L2 block) each
  register tile adds the bias in registers and stores straight into ``out`` (64-byte
  aligned, like every packed array here, :func:`aligned_empty`); otherwise partial sums
  go to a per-thread scratch copied to the output (plus the bias) once per chunk and
  batch block. Threads split the tiles of each batch pass, or whole batch passes when
  ``X`` outweighs the packed weights (a 4096-token batch through a 384-wide layer).
  Activations of ``_limits.LANES_IN_PLACE_BYTES`` or more skip the packing pass: the
  tile loads its 8 windows from 8 rows of ``X`` directly.
* the sampled weight gradient on the same tile-order index: :mod:`flexsparse.kernels.cpu.lanes_sampled`.

Measured 2026-11-29 (one thread, CPU time, ``W @ X`` with W 4096x4096 and X 4096x256,
against OpenBLAS sgemm in the same run, ``benchmarks/bench_structured.py``): speed-up
2.4x (1:4), 1.4x (2:4), 3.4x (4:6->1:4), i.e. 57-70% of sgemm's FMA throughput per kept
weight; the register tile alone, its data in L1, sustains 2.5-2.6 G permute+FMA pairs/s
against 3.6 G FMA/s for an FMA-only loop. Measured 2026-11-30 (one thread, CPU time, 1:4,
``linear`` with B = 4096, kept multiply-adds per second): 384->384 29-31 G, 384->1536
33-34 G, 1536->384 37 G, against 37-38 G for 4096x4096 at B = 256 and ~50 G multiply-adds/s
for torch's dense GEMM at the same shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload

from flexsparse import _limits
from flexsparse.kernels.cpu._twin import serial_twin
from flexsparse.kernels.cpu.partition import take_job
from flexsparse.kernels.cpu.simd import has_avx512, vadd, vfma, vload, vperm, vstore, vzeros

__all__ = ["LanePlan", "L2_BLOCK_BYTES", "aligned_empty", "lane_plan", "linear_hss_lanes", "pack_index",
           "pack_values", "run_linear", "transpose",
           "unpack_values", "windows"]

#: Block sizes (the measurement is in :mod:`flexsparse._limits`).
L2_BLOCK_BYTES = _limits.LANES_L2_BLOCK_BYTES
BATCH_BLOCKS = _limits.LANES_BATCH_BLOCKS
LINEAR_CHUNK_TILES = _limits.LANES_CHUNK_TILES


@dataclass(frozen=True)
class LanePlan:
    """How one HSS/N:M pattern maps onto ``lanes``-wide registers (see module docstring).

    ``wslot[w]:wslot[w+1]`` are the slots of window ``w`` (of a super-group) and ``wbase[w]``
    its first column relative to the super-group's first column.
    """

    lanes: int
    n_sg_top: int
    sg_span: int
    sg_slots: int
    wslot: tuple[int, ...]
    wbase: tuple[int, ...]

    @property
    def n_windows(self) -> int:
        return len(self.wbase)


def lane_plan(levels: tuple[tuple[int, int], ...], itemsize: int) -> LanePlan | None:
    """Plan for the HSS ``levels`` (outer first) at ``itemsize`` bytes, or ``None``.

    ``None`` when the CPU lacks AVX-512 or some slot's column range is wider than a register.

    >>> lane_plan(((1, 4),), 4) if has_avx512() else LanePlan(16, 4, 16, 4, (0, 4), (0,))
    LanePlan(lanes=16, n_sg_top=4, sg_span=16, sg_slots=4, wslot=(0, 4), wbase=(0,))
    """
    if itemsize not in (4, 8) or not has_avx512():
        return None
    return _plan(tuple((int(G), int(H)) for G, H in levels), int(itemsize))


@functools.lru_cache(maxsize=256)
def _plan(levels: tuple[tuple[int, int], ...], itemsize: int) -> LanePlan | None:
    """The geometry of :func:`lane_plan` (cached: formats ask on every product)."""
    lanes = 64 // itemsize
    Gs = [G for G, _ in levels]
    Hs = [H for _, H in levels]
    span, kept = int(np.prod(Hs)), int(np.prod(Gs))
    strides = [int(np.prod(Hs[i + 1:])) for i in range(len(Hs))]
    n_sg_top = max(1, lanes // span)
    lo, hi = [], []
    for t in range(n_sg_top):
        for j in np.ndindex(*Gs):  # kept slots in storage (outer-first, column) order
            lo.append(t * span + sum(ji * s for ji, s in zip(j, strides)))
            hi.append(t * span + sum((H - G + ji) * s for ji, s, G, H in zip(j, strides, Gs, Hs)))
    if any(h - low >= lanes for low, h in zip(lo, hi)):
        return None
    wslot, wbase = [0], []
    for q in range(len(lo)):
        if q == wslot[-1]:
            wbase.append(lo[q])
        if q + 1 == len(lo) or hi[q + 1] >= wbase[-1] + lanes:
            wslot.append(q + 1)
    return LanePlan(lanes, n_sg_top, n_sg_top * span, n_sg_top * kept, tuple(wslot), tuple(wbase))


def windows(plan: LanePlan, S: int, K: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Windows of a whole row of ``S`` slots: ``(wcol int64[NW], wq int64[NW + 1], nfull)``.

    Window ``w`` starts at column ``wcol[w]`` and holds slots ``wq[w]:wq[w+1]`` (padded row
    of ``ceil(S / sg_slots) * sg_slots`` slots); the first ``nfull`` end inside ``K``.
    """
    NSG = -(-S // plan.sg_slots)
    wcol = (np.arange(NSG, dtype=np.int64)[:, None] * plan.sg_span
            + np.asarray(plan.wbase, dtype=np.int64)[None, :]).reshape(-1)
    wq = (np.arange(NSG, dtype=np.int64)[:, None] * plan.sg_slots
          + np.asarray(plan.wslot[:-1], dtype=np.int64)[None, :]).reshape(-1)
    wq = np.append(wq, NSG * plan.sg_slots)
    nfull = int(np.count_nonzero(wcol + plan.lanes <= K))
    return wcol, wq, nfull


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` starting on a 64-byte boundary (NumPy's own start 16 or 32 bytes in).

    The kernels move whole 64-byte registers at offsets that are multiples of 64 bytes
    from an array's start; from an unaligned start every such load or store spans two
    cache lines.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(n + 64, dtype=np.uint8)
    off = -buf.ctypes.data % 64
    return buf[off:off + n].view(dtype).reshape(shape)


def pack_index(cols: np.ndarray, plan: LanePlan, dtype: np.dtype) -> np.ndarray:
    """``pi`` (tile order, ``[T, NSG * SS, L]``) from the slot columns ``cols: [M, S]``.

    Raises ``ValueError`` if a column lies outside its window (the layout was not HSS).
    """
    M, S = cols.shape
    L, SS = plan.lanes, plan.sg_slots
    T, NSG = -(-M // L), -(-S // SS)
    wcol, wq, _ = windows(plan, S, 0)
    base = np.repeat(wcol, np.diff(wq))
    idx = np.zeros((T * L, NSG * SS), dtype=np.int64)
    idx[:M, :S] = cols - base[None, :S]
    if idx.size and (idx.min() < 0 or idx.max() >= L):
        raise ValueError("a kept column lies outside its lane window: not an HSS layout")
    itype = np.int32 if np.dtype(dtype).itemsize == 4 else np.int64
    pi = aligned_empty((T, NSG * SS, L), itype)
    pi[...] = idx.reshape(T, L, NSG * SS).transpose(0, 2, 1)
    return pi


@njit(parallel=True, cache=True)
def _pack_values(vals, pv):
    T, SS, L = pv.shape
    M, S = vals.shape
    for t in prange(T):
        for l in range(L):
            m = t * L + l
            for s in range(SS):
                pv[t, s, l] = vals[m, s] if m < M and s < S else 0
    return pv


@njit(parallel=True, cache=True)
def _unpack_values(pv, out):
    T, SS, L = pv.shape
    M, S = out.shape
    for t in prange(T):
        for l in range(L):
            m = t * L + l
            if m < M:
                for s in range(S):
                    out[m, s] = pv[t, s, l]
    return out


def pack_values(vals: np.ndarray, plan: LanePlan) -> np.ndarray:
    """``pv`` (tile order) from the flat values ``[M, S]``; ``O(M * S)``."""
    M, S = vals.shape
    L, SS = plan.lanes, plan.sg_slots
    pv = aligned_empty((-(-M // L), -(-S // SS) * SS, L), vals.dtype)
    return _pack_values(np.ascontiguousarray(vals), pv)


def unpack_values(pv: np.ndarray, M: int, S: int) -> np.ndarray:
    """Inverse of :func:`pack_values`: ``[M, S]``."""
    return _unpack_values(pv, np.empty((M, S), dtype=pv.dtype))


@njit(parallel=True, cache=True)
def _transpose8(A, out):
    """``out = A.T``, 8 source rows per task: each column's 8 values go out as one run."""
    R, C = A.shape
    for rb in prange((R + 7) // 8):
        r0 = rb * 8
        if r0 + 8 <= R:
            for c in range(C):
                for j in range(8):
                    out[c, r0 + j] = A[r0 + j, c]
        else:
            for c in range(C):
                for r in range(r0, R):
                    out[c, r] = A[r, c]
    return out


@njit(parallel=True, cache=True)
def _transpose16(A, out):
    """As :func:`_transpose8` with 16 source rows (one 64-byte run of float32 per column)."""
    R, C = A.shape
    for rb in prange((R + 15) // 16):
        r0 = rb * 16
        if r0 + 16 <= R:
            for c in range(C):
                for j in range(16):
                    out[c, r0 + j] = A[r0 + j, c]
        else:
            for c in range(C):
                for r in range(r0, R):
                    out[c, r] = A[r, c]
    return out


def transpose(A: np.ndarray) -> np.ndarray:
    """C-contiguous ``A.T`` (threaded copy; NumPy's copy is single-threaded).

    Tasks of 8 source rows (16 when ``A`` is at least as tall as wide) with compile-time
    inner loops, which LLVM turns into vector loads and in-register transposes. Measured
    2026-11-29 (float32, one thread, CPU time, ms; NumPy / 32x32 tiles / 8 rows / 16 rows):
    64x4096 0.75/0.67/0.08/0.19, 256x4096 3.0/2.8/0.46/0.77, 4096x64 0.19/0.23/0.16/0.08,
    4096x256 2.3/1.9/0.83/0.50, 4096x4096 130/45/18/14.5.
    """
    if A.size < 65536:
        return np.ascontiguousarray(A.T)
    out = np.empty(A.shape[::-1], dtype=A.dtype)
    return (_transpose16 if A.shape[0] >= A.shape[1] else _transpose8)(A, out)


# ------------------------------------------------------------------------ linear
@njit(parallel=True, cache=True)
def _pack_x(X, trans, wcol, xp):
    """``xp[bb, w, j, :] = X[bb*J + j, wcol[w] : wcol[w] + L]`` (``X.T`` when ``trans``), 0 outside."""
    nbb, NW, J, L = xp.shape
    if trans:
        K, B = X.shape
    else:
        B, K = X.shape
    for bb in prange(nbb):
        b0 = bb * J
        for w in range(NW):
            c0 = wcol[w]
            if c0 + L <= K and b0 + J <= B:  # whole window inside X
                if trans:
                    for j in range(J):
                        for l in range(L):
                            xp[bb, w, j, l] = X[c0 + l, b0 + j]
                else:
                    for j in range(J):
                        vstore(xp, ((bb * NW + w) * J + j) * L, vload(X, (b0 + j) * K + c0, 64))
                continue
            for j in range(J):
                b = b0 + j
                for l in range(L):
                    c = c0 + l
                    if b < B and c < K:
                        xp[bb, w, j, l] = X[c, b] if trans else X[b, c]
                    else:
                        xp[bb, w, j, l] = 0
    return xp


@njit(cache=True, fastmath=True, inline="always")
def _linear8(pv, pi, wq, wcol, xp, Ys, yo, t, bb, yb, w0, w1, bias, addb):
    """Register tile: batch block ``bb`` (8 rows) x ``L`` output rows of tile ``t``, windows ``w0:w1``.

    ``addb``: add ``bias[t*L : t*L + L]`` before the store (the tile's last window block,
    written straight into the output).
    """
    SS = pv.shape[1]
    L = 64 // pv.itemsize  # a compile-time constant: offsets fold into the addressing
    W = Ys.shape[1]
    y = yb * W + yo
    if w0 == 0:
        a0 = vzeros(Ys, 64)
        a1 = vzeros(Ys, 64)
        a2 = vzeros(Ys, 64)
        a3 = vzeros(Ys, 64)
        a4 = vzeros(Ys, 64)
        a5 = vzeros(Ys, 64)
        a6 = vzeros(Ys, 64)
        a7 = vzeros(Ys, 64)
    else:
        a0 = vload(Ys, y, 64)
        a1 = vload(Ys, y + 1 * W, 64)
        a2 = vload(Ys, y + 2 * W, 64)
        a3 = vload(Ys, y + 3 * W, 64)
        a4 = vload(Ys, y + 4 * W, 64)
        a5 = vload(Ys, y + 5 * W, 64)
        a6 = vload(Ys, y + 6 * W, 64)
        a7 = vload(Ys, y + 7 * W, 64)
    o = (t * SS + wq[w0]) * L
    rs = _xstride(xp)
    for w in range(w0, w1):
        xo = _xoff(xp, wcol, bb, w)
        x0 = vload(xp, xo, 64)
        x1 = vload(xp, xo + 1 * rs, 64)
        x2 = vload(xp, xo + 2 * rs, 64)
        x3 = vload(xp, xo + 3 * rs, 64)
        x4 = vload(xp, xo + 4 * rs, 64)
        x5 = vload(xp, xo + 5 * rs, 64)
        x6 = vload(xp, xo + 6 * rs, 64)
        x7 = vload(xp, xo + 7 * rs, 64)
        for _ in range(wq[w + 1] - wq[w]):
            v = vload(pv, o, 64)
            ix = vload(pi, o, 64)
            a0 = vfma(a0, v, vperm(x0, ix))
            a1 = vfma(a1, v, vperm(x1, ix))
            a2 = vfma(a2, v, vperm(x2, ix))
            a3 = vfma(a3, v, vperm(x3, ix))
            a4 = vfma(a4, v, vperm(x4, ix))
            a5 = vfma(a5, v, vperm(x5, ix))
            a6 = vfma(a6, v, vperm(x6, ix))
            a7 = vfma(a7, v, vperm(x7, ix))
            o += L
    if addb:
        bv = vload(bias, t * L, 64)
        a0 = vadd(a0, bv)
        a1 = vadd(a1, bv)
        a2 = vadd(a2, bv)
        a3 = vadd(a3, bv)
        a4 = vadd(a4, bv)
        a5 = vadd(a5, bv)
        a6 = vadd(a6, bv)
        a7 = vadd(a7, bv)
    vstore(Ys, y, a0)
    vstore(Ys, y + 1 * W, a1)
    vstore(Ys, y + 2 * W, a2)
    vstore(Ys, y + 3 * W, a3)
    vstore(Ys, y + 4 * W, a4)
    vstore(Ys, y + 5 * W, a5)
    vstore(Ys, y + 6 * W, a6)
    vstore(Ys, y + 7 * W, a7)


@njit(cache=True, fastmath=True, inline="always")
def _linear8x2(pv, pi, wq, wcol, xp, Ys, yo, t, bb, yb, w0, w1, bias, addb):
    """Register tile: batch block ``bb`` (8 rows) x ``2L`` output rows (tiles ``t``, ``t + 1``).

    Each activation window held in registers serves both tiles: per window and slot, 8
    window registers + 2 value/index loads feed 16 permute+FMA pairs, against 8 for
    :func:`_linear8` (16 accumulators, 8 windows, value, index, permute result: 27 of
    the 32 vector registers). 4:6->1:4 has 2 slots per window, so its window loads
    outnumber the FMAs otherwise.
    """
    SS = pv.shape[1]
    L = 64 // pv.itemsize  # a compile-time constant: offsets fold into the addressing
    W = Ys.shape[1]
    y = yb * W + yo
    if w0 == 0:
        a0 = vzeros(Ys, 64)
        a1 = vzeros(Ys, 64)
        a2 = vzeros(Ys, 64)
        a3 = vzeros(Ys, 64)
        a4 = vzeros(Ys, 64)
        a5 = vzeros(Ys, 64)
        a6 = vzeros(Ys, 64)
        a7 = vzeros(Ys, 64)
        c0 = vzeros(Ys, 64)
        c1 = vzeros(Ys, 64)
        c2 = vzeros(Ys, 64)
        c3 = vzeros(Ys, 64)
        c4 = vzeros(Ys, 64)
        c5 = vzeros(Ys, 64)
        c6 = vzeros(Ys, 64)
        c7 = vzeros(Ys, 64)
    else:
        a0 = vload(Ys, y, 64)
        a1 = vload(Ys, y + 1 * W, 64)
        a2 = vload(Ys, y + 2 * W, 64)
        a3 = vload(Ys, y + 3 * W, 64)
        a4 = vload(Ys, y + 4 * W, 64)
        a5 = vload(Ys, y + 5 * W, 64)
        a6 = vload(Ys, y + 6 * W, 64)
        a7 = vload(Ys, y + 7 * W, 64)
        c0 = vload(Ys, y + L, 64)
        c1 = vload(Ys, y + 1 * W + L, 64)
        c2 = vload(Ys, y + 2 * W + L, 64)
        c3 = vload(Ys, y + 3 * W + L, 64)
        c4 = vload(Ys, y + 4 * W + L, 64)
        c5 = vload(Ys, y + 5 * W + L, 64)
        c6 = vload(Ys, y + 6 * W + L, 64)
        c7 = vload(Ys, y + 7 * W + L, 64)
    o = (t * SS + wq[w0]) * L
    d = SS * L  # tile t + 1
    rs = _xstride(xp)
    for w in range(w0, w1):
        xo = _xoff(xp, wcol, bb, w)
        x0 = vload(xp, xo, 64)
        x1 = vload(xp, xo + 1 * rs, 64)
        x2 = vload(xp, xo + 2 * rs, 64)
        x3 = vload(xp, xo + 3 * rs, 64)
        x4 = vload(xp, xo + 4 * rs, 64)
        x5 = vload(xp, xo + 5 * rs, 64)
        x6 = vload(xp, xo + 6 * rs, 64)
        x7 = vload(xp, xo + 7 * rs, 64)
        for _ in range(wq[w + 1] - wq[w]):
            v = vload(pv, o, 64)
            ix = vload(pi, o, 64)
            a0 = vfma(a0, v, vperm(x0, ix))
            a1 = vfma(a1, v, vperm(x1, ix))
            a2 = vfma(a2, v, vperm(x2, ix))
            a3 = vfma(a3, v, vperm(x3, ix))
            a4 = vfma(a4, v, vperm(x4, ix))
            a5 = vfma(a5, v, vperm(x5, ix))
            a6 = vfma(a6, v, vperm(x6, ix))
            a7 = vfma(a7, v, vperm(x7, ix))
            v = vload(pv, o + d, 64)
            ix = vload(pi, o + d, 64)
            c0 = vfma(c0, v, vperm(x0, ix))
            c1 = vfma(c1, v, vperm(x1, ix))
            c2 = vfma(c2, v, vperm(x2, ix))
            c3 = vfma(c3, v, vperm(x3, ix))
            c4 = vfma(c4, v, vperm(x4, ix))
            c5 = vfma(c5, v, vperm(x5, ix))
            c6 = vfma(c6, v, vperm(x6, ix))
            c7 = vfma(c7, v, vperm(x7, ix))
            o += L
    if addb:
        bv = vload(bias, t * L, 64)
        a0 = vadd(a0, bv)
        a1 = vadd(a1, bv)
        a2 = vadd(a2, bv)
        a3 = vadd(a3, bv)
        a4 = vadd(a4, bv)
        a5 = vadd(a5, bv)
        a6 = vadd(a6, bv)
        a7 = vadd(a7, bv)
        bv = vload(bias, t * L + L, 64)
        c0 = vadd(c0, bv)
        c1 = vadd(c1, bv)
        c2 = vadd(c2, bv)
        c3 = vadd(c3, bv)
        c4 = vadd(c4, bv)
        c5 = vadd(c5, bv)
        c6 = vadd(c6, bv)
        c7 = vadd(c7, bv)
    vstore(Ys, y, a0)
    vstore(Ys, y + 1 * W, a1)
    vstore(Ys, y + 2 * W, a2)
    vstore(Ys, y + 3 * W, a3)
    vstore(Ys, y + 4 * W, a4)
    vstore(Ys, y + 5 * W, a5)
    vstore(Ys, y + 6 * W, a6)
    vstore(Ys, y + 7 * W, a7)
    vstore(Ys, y + L, c0)
    vstore(Ys, y + 1 * W + L, c1)
    vstore(Ys, y + 2 * W + L, c2)
    vstore(Ys, y + 3 * W + L, c3)
    vstore(Ys, y + 4 * W + L, c4)
    vstore(Ys, y + 5 * W + L, c5)
    vstore(Ys, y + 6 * W + L, c6)
    vstore(Ys, y + 7 * W + L, c7)


@njit(cache=True, fastmath=True, inline="always")
def _linear1(pv, pi, wq, xp, Ys, yo, t, bb, yb, w0, w1):
    """Register tile: batch block ``bb`` (1 row) x ``L`` output rows of tile ``t``, windows ``w0:w1``."""
    SS = pv.shape[1]
    L = 64 // pv.itemsize  # a compile-time constant: offsets fold into the addressing
    NW = xp.shape[1]
    W = Ys.shape[1]
    y = yb * W + yo
    if w0 == 0:
        a0 = vzeros(Ys, 64)
    else:
        a0 = vload(Ys, y, 64)
    xo = (bb * NW + w0) * L
    o = (t * SS + wq[w0]) * L
    for w in range(w0, w1):
        x0 = vload(xp, xo, 64)
        xo += 1 * L
        for _ in range(wq[w + 1] - wq[w]):
            v = vload(pv, o, 64)
            ix = vload(pi, o, 64)
            a0 = vfma(a0, v, vperm(x0, ix))
            o += L
    vstore(Ys, y, a0)


@njit(cache=True, fastmath=True, inline="always")
def _tile(pv, pi, wq, wcol, xp, Ys, J, t_lo, t_hi, t, bb, b0, w0, w1, direct, bias, addb):
    """Tiles ``t`` and ``t + 1`` (one if ``t + 1 == t_hi``) x batch block ``bb``, windows ``w0:w1``.

    ``direct``: ``Ys`` is the output ``[B, M]`` itself (rows and columns at their own
    offsets; ``addb`` adds the bias), else the thread's scratch (offsets from the chunk's
    first tile and the pass's first batch block).
    """
    L = pv.shape[2]
    if direct:
        if t + 1 < t_hi:
            _linear8x2(pv, pi, wq, wcol, xp, Ys, t * L, t, bb, bb * 8, w0, w1, bias, addb)
        else:
            _linear8(pv, pi, wq, wcol, xp, Ys, t * L, t, bb, bb * 8, w0, w1, bias, addb)
    elif J != 8:
        _linear1(pv, pi, wq, xp, Ys, (t - t_lo) * L, t, bb, bb - b0, w0, w1)
    elif t + 1 < t_hi:
        _linear8x2(pv, pi, wq, wcol, xp, Ys, (t - t_lo) * L, t, bb, (bb - b0) * 8, w0, w1, bias, False)
    else:
        _linear8(pv, pi, wq, wcol, xp, Ys, (t - t_lo) * L, t, bb, (bb - b0) * 8, w0, w1, bias, False)


def _xoff(xp, wcol, bb, w):
    """Flat offset of batch block ``bb``'s first row in window ``w``.

    ``xp`` is either the packed activations ``[nbb, NW, 8, L]`` or, read in place, a
    C-contiguous ``X [B, K]`` (rows of a batch block ``K`` apart, window ``w`` at column
    ``wcol[w]``); compiled code picks the formula by ``xp.ndim`` at typing time.
    """
    if xp.ndim == 4:
        return (bb * xp.shape[1] + w) * xp.shape[2] * xp.shape[3]
    return bb * 8 * xp.shape[1] + wcol[w]


def _xstride(xp):
    """Elements between the rows of a batch block: ``L`` (packed, a constant) or ``K``."""
    return 64 // xp.itemsize if xp.ndim == 4 else xp.shape[1]


@overload(_xoff, inline="always")
def _ov_xoff(xp, wcol, bb, w):
    if xp.ndim == 4:
        return lambda xp, wcol, bb, w: (bb * xp.shape[1] + w) * (512 // xp.itemsize)
    return lambda xp, wcol, bb, w: bb * 8 * xp.shape[1] + wcol[w]


def _xrows(xp):
    """Batch rows per block: ``J`` of the packed layout, 8 for ``X`` read in place."""
    return xp.shape[2] if xp.ndim == 4 else 8


@overload(_xrows, inline="always")
def _ov_xrows(xp):
    if xp.ndim == 4:
        return lambda xp: xp.shape[2]
    return lambda xp: 8


@overload(_xstride, inline="always")
def _ov_xstride(xp):
    if xp.ndim == 4:
        return lambda xp: 64 // xp.itemsize
    return lambda xp: xp.shape[1]


@njit(parallel=True, cache=True, fastmath=True)
def linear_hss_lanes(pv, pi, wq, wcol, xp, bias, out, trans, bbk, kb, ch, bounds, done, direct,
                     by_batch):
    """``out = X @ W.T`` (``trans=False``, ``out: [B, M]``) or its transpose (``out: [M, B]``).

    ``xp``: the activations packed per window (:func:`_pack_x`, ``J`` = 8 or 1 rows per
    batch block), or ``X [B, K]`` itself read in place (``B % 8 == 0``, every window
    inside ``K``); window ``w`` starts at column ``wcol[w]`` and holds slots
    ``wq[w]:wq[w+1]``. Jobs are chunks of ``ch`` tiles (even, so the 2-tile register
    blocks of ``J == 8`` pair up) within one pass of ``bbk`` batch blocks; a job runs its
    tiles over the pass's batch blocks in blocks of ``kb`` windows (the weights of a tile
    pair and window block stay in L2 while the block's packed activations stream past
    them), accumulating into a per-thread scratch ``[bbk * J, ch * L + L]`` that it then
    copies to ``out``, adding ``bias[m]`` (an ``[M]`` array, or ``[0]`` for none). In each
    pass thread ``p`` takes chunks with :func:`~flexsparse.kernels.cpu.partition.take_job`
    (its own ``bounds[p]:bounds[p+1]``, then the next thread's from the top) marking
    ``done[pass * n_chunks + chunk]`` (``uint8``, zeroed by the caller): a job met by two
    threads writes the same outputs twice, so a late or slowed thread costs only its
    arrival. ``by_batch``: the jobs of all passes form one range, pass-major, that
    ``bounds`` splits (threads then take whole batch passes: each reads its own rows of
    ``X`` and all of ``W``), instead of the chunks of each pass. ``direct`` (``out:
    [B, M]``, ``B % 8 == 0``, ``M % L == 0``, one window block, ``J == 8``): the register
    tiles store straight into ``out`` with the bias added, no scratch and no copy (each
    tile's store is final, so a job run twice still writes the same values).
    """
    L = pv.shape[2]
    T = pv.shape[0]
    M = out.shape[0] if trans else out.shape[1]
    B = out.shape[1] if trans else out.shape[0]
    NW = wcol.shape[0]
    J = _xrows(xp)
    nbb = (B + J - 1) // J
    tstep = 2 if J == 8 else 1
    nch = (T + ch - 1) // ch
    has_bias = bias.shape[0] > 0
    npass = (nbb + bbk - 1) // bbk
    for p in prange(bounds.shape[0] - 1):
        # one spare register per scratch row: rows 2^k bytes apart alias in L1 when the
        # transposed copy below walks down a column
        Ys = out if direct else np.zeros((bbk * J, ch * L + L), dtype=out.dtype)
        for s in range(1 if by_batch else npass):
            d = done if by_batch else done[s * nch:(s + 1) * nch]
            j = take_job(d, bounds, p, -1)
            while j >= 0:
                q = j // nch if by_batch else s
                c = j - q * nch if by_batch else j
                b0 = q * bbk
                b1 = min(nbb, b0 + bbk)
                r0 = b0 * J
                r1 = min(B, b1 * J)
                t_lo = c * ch
                t_hi = min(T, t_lo + ch)
                for w0 in range(0, NW, kb):
                    w1 = min(NW, w0 + kb)
                    for t in range(t_lo, t_hi, tstep):
                        for bb in range(b0, b1):
                            _tile(pv, pi, wq, wcol, xp, Ys, J, t_lo, t_hi, t, bb, b0, w0, w1,
                                  direct, bias, has_bias and w1 == NW)
                m0 = t_lo * L
                m1 = min(M, t_hi * L)
                if direct:
                    pass
                elif trans:  # column by column: contiguous writes; the L1 keeps an L-column strip
                    for m in range(m0, m1):
                        bm = bias[m] if has_bias else 0
                        for b in range(r0, r1):
                            out[m, b] = Ys[b - r0, m - m0] + bm
                elif has_bias:
                    for b in range(r0, r1):
                        for m in range(m0, m1):
                            out[b, m] = Ys[b - r0, m - m0] + bias[m]
                else:
                    for b in range(r0, r1):
                        for m in range(m0, m1):
                            out[b, m] = Ys[b - r0, m - m0]
                j = take_job(d, bounds, p, j)
    return out


# ---------------------------------------------------------------------- wrappers
# Serial twins (``prange`` runs as ``range``) for products too small to pay for waking
# the thread team (see ``_limits.PARALLEL_MIN_MACS``).
# Each twin is cached apart from its threaded kernel (:mod:`flexsparse.kernels.cpu._twin`).
_pack_x_serial = serial_twin(_pack_x)
_linear_serial = serial_twin(linear_hss_lanes, fastmath=True)


def _chunk_bounds(n_chunks: int, serial: bool = False) -> np.ndarray:
    """Chunk ranges of the threads for :func:`linear_hss_lanes` (even split)."""
    parts = 1 if serial else max(1, min(numba.get_num_threads(), n_chunks))
    return np.linspace(0, n_chunks, parts + 1).round().astype(np.int64)


def pack_x(X: np.ndarray, plan: LanePlan, S: int, trans: bool = False, serial: bool = False) -> np.ndarray:
    """Activations per window: ``[ceil(B/J), NW, J, L]`` from ``X: [B, K]`` (``[K, B]`` if ``trans``).

    ``J = 8`` batch rows per block (1 when ``B < 8``); zeros pad ``B`` and ``K``. Windows
    of HSS patterns overlap, so this holds up to ``L / (span of a window's slots)`` times
    the activations (1.33x for 4:6->1:4, 1x for N:M with ``m`` dividing 16).
    """
    B, K = X.shape[::-1] if trans else X.shape
    J = 8 if B >= 8 else 1
    wcol, _, _ = windows(plan, S, K)
    if trans and J == 8 and not serial:
        # ``W @ X``: a blocked transpose, then the row-wise pack (one vector load and
        # store per window row), beats gathering each window's column strip from ``X``
        # directly (8 x L scalar copies reading L rows 1 KiB apart). Measured 2026-11-30
        # (one thread, CPU time, min of 15; 4:6->1:4 windows of K=4096): N=256 2.58 ->
        # 1.47 ms (the transpose itself 0.86 ms), N=64 0.38 -> 0.21 ms.
        X, trans = transpose(X), False
    xp = aligned_empty((-(-B // J), wcol.shape[0], J, plan.lanes), X.dtype)
    return (_pack_x_serial if serial else _pack_x)(X, trans, wcol, xp)


def run_linear(pv: np.ndarray, pi: np.ndarray, plan: LanePlan, S: int, X: np.ndarray, M: int,
               trans_in: bool = False, trans_out: bool = False, bias: np.ndarray | None = None,
               in_place: bool | None = None) -> np.ndarray:
    """``X @ W.T (+ bias)``: ``[B, M]`` (``[M, B]`` with ``trans_out``) for ``X: [B, K]``
    (``[K, B]`` with ``trans_in``).

    ``S`` is the number of stored slots per row (before tile padding). ``W @ X`` for
    ``X: [K, N]`` is ``trans_in=trans_out=True``. ``bias``: optional ``[M]``, added to
    every output row (fused into the final copy). ``in_place``: read the windows straight
    from ``X`` instead of packing it (done only when ``X: [B, K]`` is C-contiguous, ``B``
    is a multiple of 8 and every window lies inside ``K``; ``None`` decides by size).
    """
    B = X.shape[1] if trans_in else X.shape[0]
    K = X.shape[0] if trans_in else X.shape[1]
    out = aligned_empty((M, B) if trans_out else (B, M), X.dtype)
    if out.size == 0:
        return out
    serial = M * S * B < _limits.PARALLEL_MIN_MACS
    wcol, wq, nfull = windows(plan, S, K)
    NW, L = wcol.shape[0], plan.lanes
    can = not trans_in and B % 8 == 0 and nfull == NW and X.flags.c_contiguous
    if in_place is None:  # packing writes 1-1.33x X's bytes that the kernel reads again
        in_place = X.nbytes >= _limits.LANES_IN_PLACE_BYTES
    in_place = in_place and can
    xp = np.ascontiguousarray(X) if in_place else pack_x(X, plan, S, trans_in, serial)
    J = 8 if in_place else xp.shape[2]
    nbb = -(-B // J)
    # Loop order and blocks measured 2026-11-29 (one thread, CPU time; 4096x4096 weight
    # with 256 and 64 rows, 1536x384 / 384x1536 with 4096 rows; 1:4, 2:4, 4:6->1:4):
    # the weights of a tile pair over all windows held in L2 while the packed
    # activations stream beat keeping a batch block's activations in L1 in every case
    # (4:6->1:4 W@X 23.3 ms vs 27.7 ms); 16 batch blocks per pass beat 8 and 32 by 3-13%.
    pair_window = 2 * 2 * X.itemsize * L * plan.sg_slots / plan.n_windows
    kb = max(1, min(NW, int(L2_BLOCK_BYTES // pair_window)))
    bbk = max(1, min(nbb, BATCH_BLOCKS))
    bias = np.zeros(0, dtype=X.dtype) if bias is None else np.ascontiguousarray(bias, dtype=X.dtype)
    kernel = _linear_serial if serial else linear_hss_lanes
    T = pv.shape[0]
    ch = LINEAR_CHUNK_TILES
    n_chunks = -(-T // ch)
    done = np.zeros(-(-nbb // bbk) * n_chunks, dtype=np.uint8)
    # straight into the output: the scratch copy cost as much as the kernel itself at
    # K = 384 (one thread, CPU time, 1:4, B = 4096: 384->384 7.5 ms with it, 4.0 ms
    # without; 384->1536 30.4 / 15.6 ms; 1536->384 19.6 / 15.4 ms)
    direct = not trans_out and J == 8 and B % 8 == 0 and M % L == 0 and kb >= NW
    # threads split the batch passes when the activations outweigh the packed weights
    # (each thread then reads half of X and all of W, not all of X and half of W).
    # Measured 2026-11-30 (quiet, two threads, 1:4, B = 4096): 384->384 scaled 1.53x
    # over one thread with the tiles split.
    npass = -(-nbb // bbk)
    threads = 1 if serial else numba.get_num_threads()
    by_batch = npass >= threads and X.nbytes > pv.nbytes + pi.nbytes
    bounds = _chunk_bounds(npass * n_chunks if by_batch else n_chunks, serial)
    return kernel(pv, pi, wq, wcol, xp, bias, out, trans_out, bbk, kb, ch, bounds, done, direct, by_batch)
