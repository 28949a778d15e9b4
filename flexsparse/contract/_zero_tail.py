"""Zero-tail product of two dense-enough COO operands: rows along the contracted indices
that store only a prefix ("zero tails", as the auxiliary index of density-fitted integrals
does) skip the multiply-adds the tails make zero.

Algorithm (:func:`zero_tail_pair`), for ``x[R, K] . y[C, K]`` where ``K`` are the trailing
contracted modes of both operands (in the same order) and there is no batch index:

1. Analysis, per operand, folded into its densify: a sorted COO is walked by probes
   (``kernels.cpu.densify.support_sorted``: the previous run's length tried first, then
   galloping; O(runs) to O(runs log run) index reads, no value read) which records its runs
   and each row's support length (last stored cell + 1), and stops once the runs exceed a
   budget of ``nnz / _limits.DENSIFY_MIN_MEAN_RUN``; any other COO (or one in short runs) is
   added into a dense ``[R, K]`` by ``support_entries``, which finds the support in the same
   pass: run by run when its entries come in at most that many runs of consecutive cells in
   any order (a file stored in sorted pieces, with repeats), else entry by entry. An operand
   given twice is analysed once.
2. Plan (``zero_tail_plan``, compiled): a counting sort of the lengths into levels, and a
   dynamic programme over the levels with a GEMM time model (``_limits.ZERO_TAIL_*``): one
   GEMM over ``[0, c)`` for every row, tail steps ``[g_i, g_j)`` for the rows reaching past
   ``g_i``; or the plain GEMM when that is modelled faster (then the recorded runs are
   copied into a plain dense array, no second walk). The model runs on the BLAS threads in
   effect (:func:`blas_threads`; the scatter stays serial, small steps barely thread), and
   for an operand times itself every step and the plain product are SYRKs (BLAS computes
   one triangle: about half a GEMM's multiply-adds), as NumPy's own ``a @ a.T`` is.
3. Sorted operands are copied straight into the split layout (``split_sorted``: one copy per
   run piece, the zeros written in the same sweep): ``main[R, c]`` in the original row order
   and ``tail[Rt, Kt]`` with the tail rows grouped by level descending, so each step's rows
   are a prefix of the tail. Scattered operands use ``dense[:, :c]`` as their main part (a
   strided view BLAS reads in place) and gather their tail rows (``gather_tail``).
4. ``main_x @ main_y^T`` is the result in its final layout (no un-permute); each tail step's
   small product is scatter-added into it (``scatter_add_block``, O(rows x cols) of the step,
   a contiguous add per run of consecutive output columns).

Formats: COO operands of one float/complex dtype (the densify kernels' compiled types), the
result a C-contiguous ``ndarray [R, C]`` reshaped to the free modes. Cost: O(runs log run) +
O(nnz) + O(R c + Rt Kt) writes; sum over the GEMMs of their multiply-adds (chemistry
``abQ,icQ->abic``: 55% of the plain product's) plus the steps' scatter.

An inf or nan among the stored values (flagged by the densify pass) returns ``None``: the
full path reproduces NumPy's non-finite semantics, which skipped multiply-adds would break.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np

from flexsparse import _limits
from flexsparse._orient import matmul_oriented
from flexsparse._util import openblas_function
from flexsparse.contract._calls import parsed_spec
from flexsparse.formats.coo import COO, _row_major_strides

__all__ = ["NOT_TAKEN", "blas_threads", "plan_model", "plan_steps", "remember", "scatter_rows", "zero_tail_layout",
           "zero_tail_pair", "zero_tail_steps"]

#: Returned when the layout or the plan says the plain product is the better (or only) route.
NOT_TAKEN = object()

_KERNELS: list = []


def _kernels():
    if not _KERNELS:
        from flexsparse.kernels.cpu import densify
        from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES

        _KERNELS.append((densify, COMPILED_DTYPES))
    return _KERNELS[0]


_BLAS_THREADS: list = []


def blas_threads() -> int:
    """Threads NumPy's bundled OpenBLAS runs a GEMM on now (its ``get_num_threads``; ~1 us a
    call), or numba's thread count where that library is absent."""
    if not _BLAS_THREADS:
        _BLAS_THREADS.append(openblas_function(("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                                                "openblas_get_num_threads"), ctypes.c_int))
    fn = _BLAS_THREADS[0]
    if fn is None:
        import numba

        return int(numba.get_num_threads())
    return max(1, int(fn()))


@functools.lru_cache(maxsize=256)
def zero_tail_layout(subscripts: str, x_shape: tuple, y_shape: tuple) -> tuple | None:
    """``(R, C, K, x modes, y modes)`` when the contracted modes trail both operands in the
    same order and there is no batch index (each operand's modes: its row-major strides,
    int64, and its number of free modes), else ``None``; remembered per call shape."""
    from flexsparse.contract._dense import split_pair  # _dense imports this module

    spec = parsed_spec(subscripts, (x_shape, y_shape))
    if spec.n_operands != 2 or not spec.output:
        return None
    xi, yi = spec.inputs
    batch, contr, free_x, free_y = split_pair(xi, yi, spec.output)
    if batch or not contr or not xi.endswith(contr) or not yi.endswith(contr) or \
            len(set(xi)) != len(xi) or len(set(yi)) != len(yi):
        return None
    nk = len(contr)
    k = math.prod(x_shape[len(x_shape) - nk:])
    r = math.prod(x_shape[:len(x_shape) - nk])
    c = math.prod(y_shape[:len(y_shape) - nk])
    return r, c, k, (_row_major_strides(x_shape), len(x_shape) - nk), (_row_major_strides(y_shape), len(y_shape) - nk)


def _entry_rows(op: COO, full: np.ndarray, nf: int, k: int) -> tuple:
    """``(hi, lo, s, q)`` for the per-entry kernels: row ``hi * s + lo``, contracted offset ``q``.
    One free and one contracted mode, or two free and one contracted (3-mode integrals), pass
    coordinate rows as they are; other layouts form the row and offset once (int64)."""
    co = op.coords
    nd = co.shape[0]
    if nd - nf == 1 and nf in (1, 2):
        return co[0], co[nf - 1], (op.shape[1] if nf == 2 else 0), co[nd - 1]
    if nf == 0:
        rows = np.zeros(co.shape[1], dtype=np.int64)
    else:
        rows = (co[:nf].astype(np.int64) * (full[:nf] // k)[:, None]).sum(axis=0)
    q = (co[nf:].astype(np.int64) * full[nf:, None]).sum(axis=0)
    return rows, rows, 0, q


def _analyse(op: COO, full: np.ndarray, nf: int, k: int, n: int, dens) -> tuple:
    """``(support lengths, runs or None, dense [n, k] or None, inf/nan flag)`` of one operand:
    a sorted COO in long runs (at most ``nnz / _limits.DENSIFY_MIN_MEAN_RUN`` of them, counted
    by the walk itself) records its runs (its values are read later, once, by the split copy);
    any other is scattered into a dense ``[n, k]`` in the same pass that finds
    its support lengths, and its tail rows are gathered from that later."""
    if op.canonical and op.nnz > 0:  # the walk stops at the run budget (short runs: the scatter below)
        sup, runs = dens.support_sorted(op.coords, full, k, n, op.nnz // _limits.DENSIFY_MIN_MEAN_RUN)
        if runs.shape[0]:
            return sup, runs, None, False
    sup, dense, bad = scatter_rows(op, full, nf, k, n)
    return sup, None, dense, bad


def scatter_rows(op: COO, full: np.ndarray, nf: int, k: int, n: int) -> tuple:
    """``(support lengths, dense [n, k], inf/nan flag)`` of a COO in any order, added into a
    zeroed ``[n, k]`` by ``densify.support_entries`` (run by run where its entries come in
    long runs of consecutive cells, as a file stored in sorted pieces does, else entry by
    entry); ``full`` its row-major strides, ``nf`` its number of free modes."""
    dens = _kernels()[0]
    dense = np.zeros((n, k), dtype=op.dtype)
    sup, bad = dens.support_entries(*_entry_rows(op, full, nf, k), op.data, dense,
                                    op.nnz // _limits.DENSIFY_MIN_MEAN_RUN)
    return sup, dense, bool(bad)


def plan_model(threads: int) -> np.ndarray:
    """The time model of ``_limits.ZERO_TAIL_*`` as the array ``zero_tail_plan`` takes
    (fields ``densify.MODEL_FIELDS``) for ``threads`` BLAS threads."""
    return np.array((_limits.ZERO_TAIL_GEMM_MAC_SECONDS, _limits.ZERO_TAIL_GEMM_PACK_SECONDS,
                     _limits.ZERO_TAIL_GEMM_CALL_SECONDS, _limits.ZERO_TAIL_SCATTER_CELL_SECONDS,
                     _limits.ZERO_TAIL_FIXED_SECONDS, threads, _limits.ZERO_TAIL_SYRK_MAC_SECONDS,
                     _limits.ZERO_TAIL_SYRK_PACK_SECONDS, _limits.ZERO_TAIL_THREAD_EFF_SLOPE,
                     _limits.ZERO_TAIL_THREAD_GEMM_BASE_MACS, _limits.ZERO_TAIL_THREAD_GEMM_CAP,
                     _limits.ZERO_TAIL_THREAD_SYRK_BASE_MACS, _limits.ZERO_TAIL_THREAD_SYRK_CAP), dtype=np.float64)


#: Plans by (support lengths, k, self-product, model): the same operands' structure (a product
#: repeated, or one operand against several) plans once. The plan's arrays are shared: read only.
_PLANS: dict = {}


def remember(plans: dict, key, plan) -> None:
    """Store ``plan`` under ``key`` in a plan cache of at most
    ``_limits.ZERO_TAIL_PLAN_CACHE_ENTRIES`` entries, the oldest dropped first."""
    while len(plans) >= _limits.ZERO_TAIL_PLAN_CACHE_ENTRIES:
        plans.pop(next(iter(plans)))
    plans[key] = plan


def plan_steps(dens, sup_x: np.ndarray, sup_y: np.ndarray, k: int, same: bool, threads: int | None = None
               ) -> tuple:
    """``dens.zero_tail_plan`` with the time model on ``threads`` BLAS threads (``None``: those
    in effect); ``same``: the product of an operand with itself (SYRK steps). Remembered per exact support lengths (the
    key is their bytes: ~1 us against the compiled plan's 4-6 us warm, 8-17 us right after a
    NumPy call), at most ``_limits.ZERO_TAIL_PLAN_CACHE_ENTRIES`` plans, oldest dropped first."""
    model = plan_model(blas_threads() if threads is None else threads)
    key = (sup_x.tobytes(), b"" if same else sup_y.tobytes(), k, same, model.tobytes())
    plan = _PLANS.get(key)
    if plan is None:
        plan = dens.zero_tail_plan(sup_x, sup_y, k, _limits.ZERO_TAIL_LEVEL_MERGE, model, same)
        remember(_PLANS, key, plan)
    return plan


def zero_tail_pair(x: COO, y: COO, layout: tuple) -> np.ndarray | object | None:
    """``x[R, K] @ y[C, K]^T`` as ``ndarray [R, C]`` by the zero-tail GEMMs (see the module),
    or by one plain GEMM when the plan prefers it; :data:`NOT_TAKEN` when the dtype has no
    compiled kernel; ``None`` when a stored value is inf or nan (the caller takes the full
    path). Every stored value is checked by the pass that copies it."""
    dens, compiled = _kernels()
    if x.dtype not in compiled or x.dtype != y.dtype or x.dtype.kind not in "fc":
        return NOT_TAKEN
    n_rows, n_cols, k, (fx, nfx), (fy, nfy) = layout
    same = y is x
    ax = _analyse(x, fx, nfx, k, n_rows, dens)
    ay = ax if same else _analyse(y, fy, nfy, k, n_cols, dens)
    if ax[3] or ay[3]:
        return None
    return zero_tail_steps(x.data, y.data, ax, ay, k, same)


def zero_tail_steps(x_data: np.ndarray | None, y_data: np.ndarray | None, ax: tuple, ay: tuple, k: int,
                    same: bool) -> np.ndarray | None:
    """Steps 2-4 of :func:`zero_tail_pair` on analysed operands ``ax``/``ay`` (``(support
    lengths, runs or None, dense [n, k] or None, flag)``; ``x_data``/``y_data`` the stored
    values the runs index, ``None`` for a dense analysis); ``None`` when a copied value is
    inf or nan."""
    dens = _kernels()[0]
    n_rows, n_cols = ax[0].shape[0], ay[0].shape[0]
    dtype = (ax[2] if ax[1] is None else x_data).dtype
    threads = blas_threads()
    cuts, nx, ny, pos_x, rows_x, pos_y, rows_y = plan_steps(dens, ax[0], ay[0], k, same, threads)
    if cuts.shape[0] == 0:  # the plain GEMM on the analysed operands (every value checked)
        dense = []
        for data, an, n in ((x_data, ax, n_rows), (y_data, ay, n_cols)):
            if an[1] is None:
                dense.append(an[2])
                continue
            d = np.empty((n, k), dtype=dtype)  # the recorded runs, copied without probing again
            no_tail = np.full(n, -1, dtype=np.int64)
            if dens.split_sorted(an[1], data, k, no_tail, d, np.empty((0, 0), dtype=dtype)):
                return None
            dense.append(d)
            if same:
                break
        return matmul_oriented(dense[0], dense[0].T if same else dense[1].T, threads=threads)[0]
    c = int(cuts[0])
    kt = int(cuts[-1]) - c

    def split(data, an, pos, rows, n):
        tail = np.empty((rows.shape[0], kt), dtype=dtype)
        if an[1] is not None:
            main = np.empty((n, c), dtype=dtype)
            bad = dens.split_sorted(an[1], data, k, pos, main, tail)
            return main, tail, bad
        dens.gather_tail(an[2], rows, c, tail)
        return an[2][:, :c], tail, False

    xm, xt, bad = split(x_data, ax, pos_x, rows_x, n_rows)
    if bad:
        return None
    if same:
        ym, yt = xm, xt
    else:
        ym, yt, bad = split(y_data, ay, pos_y, rows_y, n_cols)
        if bad:
            return None
    # the steps add into the output in its memory order: out, or out.T with the sides swapped
    out, flip = matmul_oriented(xm, ym.T, threads=threads)
    for s in range(cuts.shape[0] - 1):
        a, b = int(cuts[s]) - c, int(cuts[s + 1]) - c
        mx, my = int(nx[s]), int(ny[s])
        if mx == 0 or my == 0:
            continue
        blk = matmul_oriented(xt[:mx, a:b], yt[:my, a:b].T, threads=threads)[0]
        if flip:
            dens.scatter_add_block(out.T, rows_y[:my], rows_x[:mx], blk.T)
        else:
            dens.scatter_add_block(out, rows_x[:mx], rows_y[:my], blk)
    return out
