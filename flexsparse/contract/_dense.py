"""The all-dense pair of :func:`~flexsparse.contract.execute.einsum`: dense-ish operands
densified (with the inf/nan check taken from the densify pass), and a pair of dense operands
contracted as one batched GEMM.

Algorithm:

1. :func:`dense_enough` decides in O(1) whether an operand goes to BLAS: a dense array, or a
   COO at least :data:`~flexsparse.contract.plan.DENSE_THRESHOLD` full whose dense form fits
   :data:`flexsparse._limits.DENSE_OPERAND_MAX_BYTES` (chemistry integrals).
2. :func:`densify_checked` densifies each distinct COO once (``COO._todense_checked``: runs of
   consecutive cells copied as blocks, else a per-entry scatter) and takes the inf/nan flag
   from that pass; operands given dense are checked only when the product is not finite
   (:func:`dense_result_nonfinite`).
3. :func:`pair_dense` matricises both operands as ``[B, R, K]`` and ``[B, K, C]`` views
   (batch, free, contracted indices; :func:`dense_pair_layout`, remembered per indices and
   sizes) and runs ``np.matmul`` (one 2-D GEMM when there is no batch index), which BLAS
   reads in place when the stored layout allows, else after one copy.
4. :func:`dense_pair_fast` is the entry point for two float ndarrays of one dtype whose
   subscripts need no unary step: the whole plan is remembered per (subscripts, shapes,
   dtypes) and the call is the GEMM plus a finiteness check of the result;
   :func:`coo_pair_fast` is the same for two dense-enough COO operands (densify, GEMM); in
   the zero-tail layout (contracted modes trailing both) it takes the class product of
   :mod:`._classes` above its size gate (densify and column keys in one pass, per class a
   GEMM; operands without paying classes go on to the zero-tail steps on the dense forms),
   else the zero-tail product of :mod:`._zero_tail` straight from the COO operands.

Formats: dense ``numpy.ndarray`` of any numeric dtype (integer and bool products run
``numpy.einsum``'s loops: BLAS has no integer GEMM), COO inputs to the densify step.

Cost: densify O(nnz) (scatter) or O(runs log run + nnz) (run copy) plus O(size) zeros; the
product 2 * B * R * K * C flops in BLAS plus at most one copy of each operand; the fast
path skips the ~25 us of Python the full path spends around the same GEMM.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse._orient import matmul_oriented
from flexsparse._util import nonfinite_by_sum, result_dtype
from flexsparse.contract._calls import call_dtypes, hot, parsed_spec, reductions
from flexsparse.contract._classes import class_product, dense_keys, large_enough
from flexsparse.contract._zero_tail import NOT_TAKEN, blas_threads, zero_tail_layout, zero_tail_pair, zero_tail_steps
from flexsparse.contract.plan import DENSE_THRESHOLD, check_optimize
from flexsparse.formats.base import SparseArray
from flexsparse.formats.block import StructuredMatrix
from flexsparse.formats.coo import COO

__all__ = ["NONFINITE", "batched_gemm", "coo_pair_fast", "dense_enough", "dense_pair_fast", "dense_pair_layout",
           "dense_result_nonfinite", "densify_checked", "has_nonfinite", "memory_order", "pair_dense", "split_pair"]

#: What a product path that scanned the operands' values itself returns when one is inf or nan
#: (einsum then takes its exact non-finite path).
NONFINITE = object()


def split_pair(ai: str, bi: str, out: str) -> tuple[str, str, str, str]:
    """``(batch, contracted, free in a, free in b)`` indices of a pair ``ai, bi -> out``."""
    batch = "".join(c for c in ai if c in bi and c in out)
    contr = "".join(c for c in ai if c in bi and c not in out)
    free_a = "".join(c for c in ai if c not in bi)
    free_b = "".join(c for c in bi if c not in ai)
    return batch, contr, free_a, free_b


def _perm(idx: str, target: str) -> tuple[int, ...] | None:
    """The axes taking an operand over ``idx`` to ``target`` order (``None``: already there)."""
    return None if idx == target else tuple(idx.index(c) for c in target)


@functools.lru_cache(maxsize=256)
def dense_pair_layout(xi: str, yi: str, out: str, extents: tuple[int, ...]) -> tuple:
    """What :func:`pair_dense` needs about a pair, remembered per (indices, sizes) (its
    string work took ~15 us a call): per operand the axes and ``[B, R, C]`` shape of the
    (batch, rows, cols) order and of the (batch, cols, rows) order; the result's indices and
    shape. ``extents`` are the sizes of the indices of ``xi + yi``, in that order."""
    sizes = dict(zip(xi + yi, extents))
    batch, contr, free_x, free_y = split_pair(xi, yi, out)
    sz = lambda s: math.prod(sizes[c] for c in s)  # noqa: E731

    def layouts(idx: str, rows: str, cols: str) -> tuple:
        return (_perm(idx, batch + rows + cols), (sz(batch), sz(rows), sz(cols)),
                _perm(idx, batch + cols + rows), (sz(batch), sz(cols), sz(rows)))

    res_idx = batch + free_x + free_y
    return layouts(xi, free_x, contr), layouts(yi, contr, free_y), res_idx, tuple(sizes[c] for c in res_idx)


def _as_batched(op: np.ndarray, layout: tuple, dtype: np.dtype) -> np.ndarray:
    """``op`` as a ``[B, R, C]`` array (``[R, C]`` when ``B`` is 1), a view wherever its memory
    allows (else one copy).

    Tries the (batch, rows, cols) axis order and the (batch, cols, rows) order followed by a
    swap of the last two axes (``layout`` from :func:`dense_pair_layout`): either is a
    BLAS-ready view when it matches the stored layout.
    """
    perm, shape, perm_swapped, shape_swapped = layout
    if op.dtype != dtype:
        op = op.astype(dtype)
    if shape[0] == 1:  # one GEMM: the 2-D operand (a view less to make, and to index)
        shape, shape_swapped = shape[1:], shape_swapped[1:]
    direct = op if perm is None else op.transpose(perm)
    if direct.flags.c_contiguous:
        return direct.reshape(shape)
    swapped = op if perm_swapped is None else op.transpose(perm_swapped)
    if swapped.flags.c_contiguous:
        return swapped.reshape(shape_swapped).swapaxes(-1, -2)
    return np.ascontiguousarray(direct).reshape(shape)


def pair_dense(x: np.ndarray, xi: str, y: np.ndarray, yi: str, out: str, sizes: dict[str, int]
                ) -> tuple[np.ndarray, str]:
    """Dense x dense as one batched GEMM: [B, Fx, K] @ [B, K, Fy] (BLAS through ``np.matmul``).

    Skips ``numpy.einsum``'s per-call path search; indices private to one side were summed
    away by the unary pass, so every index is batch, contracted or free. Operands are passed
    as (possibly transposed) views, so BLAS reads them in place.
    """
    lx, ly, idx, shape = dense_pair_layout(xi, yi, out, tuple(sizes[c] for c in xi + yi))
    dtype = x.dtype if x.dtype == y.dtype and x.dtype.isnative else result_dtype(x.dtype, y.dtype)
    return batched_gemm(x, lx, y, ly, dtype).reshape(shape), idx


def batched_gemm(x: np.ndarray, lx: tuple, y: np.ndarray, ly: tuple, dtype: np.dtype) -> np.ndarray:
    """``[B, R, K] @ [B, K, C]`` of ``x`` and ``y`` in the layouts of :func:`dense_pair_layout`
    (one 2-D GEMM when ``B == 1``), the way round this machine runs faster
    (:func:`~flexsparse._orient.matmul_oriented`: a transposed view when swapped)."""
    xm = _as_batched(x, lx, dtype)
    ym = _as_batched(y, ly, dtype)
    if dtype.kind not in "fc":  # integer/bool GEMM has no BLAS; numpy.einsum's loops beat matmul's
        return np.einsum("...ik,...kj->...ij", xm, ym)
    return matmul_oriented(xm, ym, threads=blas_threads())[0]


@functools.lru_cache(maxsize=256)
def _dense_pair_plan(subscripts: str, x_shape: tuple, y_shape: tuple, x_dtype: np.dtype, y_dtype: np.dtype,
                     optimize: str) -> tuple | None:
    """``(x layout, y layout, result shape, permutation to the output, dtype)`` for a pair of
    float arrays of one dtype whose subscripts need no unary step (no broadcast, diagonal or
    private sum), remembered per call shape; ``None`` for everything else. Parsing errors
    raise here as in the full path."""
    spec = parsed_spec(subscripts, (x_shape, y_shape))
    check_optimize(optimize, spec.n_operands)
    dtype, work = call_dtypes((x_dtype, y_dtype))
    if spec.n_operands != 2 or not spec.output or not (x_dtype == y_dtype == dtype == work) or \
            dtype.kind not in "fc" or not dtype.isnative:
        return None
    if any(red.squeezed or red.diagonal or red.summed for red in reductions(spec)):
        return None
    xi, yi = spec.inputs
    lx, ly, idx, shape = dense_pair_layout(xi, yi, spec.output, tuple(x_shape) + tuple(y_shape))
    return lx, ly, shape, None if idx == spec.output else tuple(idx.index(c) for c in spec.output), dtype


def dense_pair_fast(subscripts: str, x: Any, y: Any, optimize: str) -> np.ndarray | None:
    """Two float ndarrays of one dtype: the dense product straight through BLAS, with the plan
    remembered per (subscripts, shapes, dtype); ``None`` sends the call down the full path.

    The full path's Python around the same GEMM (operand conversion, dtype rules, densify
    check, unary pass, format choice) cost ~25 us a call: 219 us against the GEMM's 193 us on
    the demo's chemistry row (576 x 375 x 16, one thread), where NumPy's ``tensordot`` takes
    200 us. A result holding an inf or nan goes down the full path, which reproduces NumPy's
    non-finite semantics exactly.
    """
    if type(x) is not np.ndarray or type(y) is not np.ndarray:
        return None
    plan = _dense_pair_plan(subscripts, x.shape, y.shape, x.dtype, y.dtype, optimize)
    if plan is None:
        return None
    lx, ly, shape, perm, dtype = plan
    res = batched_gemm(x, lx, y, ly, dtype).reshape(shape)
    if hot().nonfinite_kernel(memory_order(res).reshape(-1)):  # a view of the GEMM's output
        return None
    return res if perm is None else res.transpose(perm)


def coo_pair_fast(subscripts: str, x: Any, y: Any, optimize: str) -> np.ndarray | None:
    """Two COO operands of one float dtype, both :func:`dense_enough`, whose subscripts need
    no unary step: densified (:func:`densify_checked`) and multiplied by the plan of
    :func:`dense_pair_fast`; returns the dense product in output order (the caller applies
    the ``format`` rule), or ``None`` for the full path.

    The full path spends ~35-60 us of Python around the densify and the GEMM (operand
    conversion, dtype rules, unary pass, the plan's dense check twice), which is a third of
    NumPy's whole call for the chemistry ``iaQ,jbQ->iajb`` on two threads (~105 us). An
    operand whose densify found an inf or nan goes down the full path (NumPy's non-finite
    semantics); an operand densified without a check (a full COO copied as is) is checked
    only if the product is not finite, as in :func:`dense_result_nonfinite`.
    """
    if type(x) is not COO or type(y) is not COO:
        return None
    plan = _dense_pair_plan(subscripts, x.shape, y.shape, x.dtype, y.dtype, optimize)
    if plan is None or not (dense_enough(x) and dense_enough(y)):
        return None
    layout = zero_tail_layout(subscripts, x.shape, y.shape)
    if layout is not None:
        res = _class_pair(x, y, layout)
        if res is NOT_TAKEN:
            res = zero_tail_pair(x, y, layout)
        if res is None:
            return None
        if res is not NOT_TAKEN:
            lx, ly, shape, perm, dtype = plan
            res = res.reshape(shape)
            return res if perm is None else res.transpose(perm)
    (xd, yd), nonfinite, unchecked = densify_checked([x, y])
    if nonfinite:
        return None
    lx, ly, shape, perm, dtype = plan
    res = batched_gemm(xd, lx, yd, ly, dtype).reshape(shape)
    if dense_result_nonfinite(res, unchecked):
        return None
    return res if perm is None else res.transpose(perm)


def _class_pair(x: COO, y: COO, layout: tuple) -> np.ndarray | object | None:
    """``x[R, K] @ y[C, K]^T`` of COO operands in the zero-tail layout by the class product
    (:mod:`._classes`) on their dense forms (densified and keyed in one pass), or, when their
    zeros do not fall in blocks that pay, by the zero-tail steps on those dense forms (one
    plain GEMM, a SYRK for ``y is x``, where the tails do not pay either); ``None`` for an inf
    or nan (the full path), ``NOT_TAKEN`` for a product too small to pay for the key pass
    (``_classes.large_enough``) or a dtype without compiled kernels (those keep the zero-tail
    path from the COO operands)."""
    from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES

    n_rows, n_cols, k, (fx, nfx), (fy, nfy) = layout
    same = y is x
    if x.dtype not in COMPILED_DTYPES or x.dtype.kind not in "fc" or x.dtype != y.dtype or \
            not large_enough(n_rows, n_cols, k, same):
        return NOT_TAKEN
    dx, kx, cx, sx, bad = dense_keys(x, n_rows, k, fx, nfx)
    if bad:
        return None
    dy, ky, cy, sy = dx, kx, cx, sx
    if not same:
        dy, ky, cy, sy, bad = dense_keys(y, n_cols, k, fy, nfy)
        if bad:
            return None
    res = class_product(dx, dy, same, (kx, cx), (ky, cy))
    if res is NOT_TAKEN:
        ax = (sx, None, dx, False)
        return zero_tail_steps(None, None, ax, ax if same else (sy, None, dy, False), k, same)
    return res


def dense_enough(op: COO | np.ndarray) -> bool:
    """Dense arrays, and COO tensors >= 30% dense that densify within 256 MiB (O(1) check).

    Structured matrices never are: they run their own product, which picks BLAS itself above
    its measured crossover density.
    """
    if type(op) is not COO:  # a plain COO first: the isinstance checks took ~1 us of a small product
        if isinstance(op, StructuredMatrix):
            return False
        if not isinstance(op, COO):
            return True
    data = op.data
    size = math.prod(op.shape)
    return size > 0 and data.shape[0] / size >= DENSE_THRESHOLD and \
        size * data.dtype.itemsize <= _limits.DENSE_OPERAND_MAX_BYTES


def memory_order(a: np.ndarray) -> np.ndarray:
    """``a`` with its axes in memory order (largest stride first): a C-contiguous view when
    ``a`` is a transposed view of a contiguous array (a dense product whose output order is
    not the GEMM's), which compiled passes read in place instead of NumPy's strided loops
    (a count of the 55K-cell chemistry result: 90 us against 12 us)."""
    if a.ndim < 2 or a.flags.c_contiguous:
        return a
    return a.transpose(sorted(range(a.ndim), key=lambda m: -a.strides[m]))


def has_nonfinite(op: COO | np.ndarray, threads: int | None = 1) -> bool:
    """Whether ``op`` stores an inf or nan: one reduction, no temporary the size of ``op``.

    Contiguous values of a compiled dtype: one compiled pass (``v - v`` is non-zero only for
    inf and nan), on up to ``threads`` threads for millions of values
    (``kernels.cpu.scatter.has_nonfinite_values``). Others are summed in 64-bit precision:
    any inf or nan makes the sum non-finite; a finite sum that overflows float64 only sends
    the call to the exact non-finite evaluation, which is exact for finite values too.
    """
    vals = op._data() if isinstance(op, SparseArray) else op
    if vals.dtype.kind not in "fc" or vals.size == 0:
        return False
    kernels = hot()  # numba: on first use
    vals = memory_order(vals)  # a transposed view of a contiguous array reads in place
    if vals.flags.c_contiguous and vals.dtype in kernels.compiled_dtypes:
        return kernels.has_nonfinite_values(vals.reshape(-1), threads)  # 18 us against 35 us for the sum below (165K)
    return nonfinite_by_sum(vals)


def densify_checked(ops: list) -> tuple[list, bool, list]:
    """``(arrays, nonfinite, unchecked)``: dense arrays of dense-enough operands (one per
    distinct operand), whether the scatter that densified a COO found an inf or nan, and the
    distinct arrays no pass has checked (operands given dense, or densified by a copy).

    The unchecked ones are scanned only if the dense product's result is not finite (see
    :func:`dense_result_nonfinite`): an all-dense product sends every stored value into at
    least one output cell (it multiplies every entry along the other operands' indices), and
    inf or nan times anything, summed with anything, stays inf or nan. So a finite result
    proves finite operands, and the scan NumPy does not make leaves the common path
    (chemistry ``abQ,ijQ->abij`` on dense 24x24x375 operands: ~25 us of a 0.2 ms call)."""
    done: dict[int, tuple[np.ndarray, bool | None]] = {}
    for op in ops:
        if id(op) not in done:
            done[id(op)] = op._todense_checked() if isinstance(op, COO) else (op, None)
    return ([done[id(op)][0] for op in ops], any(flag for _, flag in done.values()),
            [arr for arr, flag in done.values() if flag is None])


def dense_result_nonfinite(res: Any, unchecked: list) -> bool:
    """Whether an unchecked operand of an all-dense product holds an inf or nan, given the
    product's result ``res`` (see :func:`densify_checked`): only a result that is not finite
    makes the operands worth scanning (a finite product that overflowed keeps its result)."""
    return bool(unchecked) and isinstance(res, (np.ndarray, np.generic)) and has_nonfinite(np.asarray(res)) \
        and any(has_nonfinite(arr) for arr in unchecked)
