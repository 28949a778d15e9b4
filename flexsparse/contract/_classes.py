"""Class product of two dense-ish operands whose exact zeros fall in blocks: ``x[R, K] .
y[C, K]`` computed as one small dense GEMM per class of contracted columns.

Density-fitted integrals are the case in point: point-group symmetry makes ``(ab|Q)`` vanish
unless the irreducible representations of ``ab`` and ``Q`` match, and the files store most
of those zeros. The chemistry tensors in ``shared/data`` hold 41% (vv) and 30% (ov) nonzero
values, and the three products ``abQ,icQ->abic``, ``iaQ,jbQ->iajb``, ``abQ,cdQ->abcd`` need
16%, 17% and 19% of the dense multiply-adds.

Algorithm (:func:`class_product`, on operands already densified and reshaped to
``[R, K]`` and ``[C, K]``):

1. Keys (``kernels.cpu.colclass.column_keys``): per contracted column, a salted sum of the
   rows holding a nonzero, in ``x`` and in ``y``, and their counts; one pass over each
   operand that also finds any inf or nan (those take the full path: skipped zeros would
   hide ``0 * inf``). Columns with no nonzero in either operand drop out.
2. Classes: the columns of equal key pairs (one sort). More than
   ``_limits.CLASS_MAX_CLASSES`` classes: not block-structured, ``NOT_TAKEN`` (the zero-tail module's).
3. Plan (``colclass.merge_classes``, remembered per key set): each class's row sets as
   bitsets, merged greedily while the modelled time falls; taken when the merged classes
   are modelled faster than the plain GEMM by ``_limits.CLASS_FIXED_SECONDS``.
4. Execute: per merged class, gather its rows and columns of each operand
   (``colclass.gather_block``, which also counts the nonzeros gathered: a shortfall against
   the columns' counts means two row sets shared a key, and the plain product is taken),
   one GEMM (a SYRK for a self-product, as NumPy's ``a @ a.T``), and a scatter-add into the
   zeroed output (``densify.scatter_add_block``).

Where it runs: ``contract._dense`` takes it for a dense-enough COO times itself in the
zero-tail layout (``abQ,cdQ->abcd``) whose plain SYRK is modelled at
``_limits.CLASS_MIN_PLAIN_SECONDS`` or more; when the classes do not pay, that SYRK runs on
the dense form already made. Products of two operands keep the zero-tail path: there the
classes' GEMMs are narrow (14-71 columns for ``abQ,icQ->abic``) and ran no faster than the one
dense GEMM (2-vCPU Zen 4 guest: 359-565 us against 473-505 us, before the densify).

Formats: C-contiguous float or complex ``ndarray`` operands of one dtype; the result a
C-contiguous ``ndarray [R, C]``. Cost: O((R + C) K) for the keys, O(n^2) for the plan (n
classes, remembered), then per class its gather, GEMM and scatter (chemistry ``abQ,cdQ->abcd``:
4-6 SYRKs of 12-17M multiply-adds against one of 62M; 0.83-0.85x NumPy from COO, min of 200
interleaved calls, against 1.05-1.06x by the plain SYRK).
"""

from __future__ import annotations

import numpy as np

from flexsparse import _limits
from flexsparse._util import matmul_narrow_first
from flexsparse.contract._zero_tail import NOT_TAKEN, blas_threads, plan_model, remember

__all__ = ["class_product", "large_enough"]

_SALT: list = []
#: Plans by (keys, counts, shapes, model): the same operands' structure plans once. Read only.
_PLANS: dict = {}


def _salt(n: int) -> np.ndarray:
    """Random 64-bit salts of ``n`` rows (a fixed seed: keys repeat from call to call)."""
    if not _SALT or _SALT[0].shape[0] < n:
        size = max(n, 1024, 2 * _SALT[0].shape[0] if _SALT else 0)
        odd = np.random.default_rng(0x5EED).integers(0, 2**63, size=size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        _SALT[:] = [odd]
    return _SALT[0][:n]


def _bitsets(dense: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Row sets of the columns ``reps`` of ``dense`` as uint64 bitsets ``[len(reps), words]``."""
    mask = dense[:, reps].T != 0
    pad = (-mask.shape[1]) % 64
    if pad:
        mask = np.concatenate([mask, np.zeros((mask.shape[0], pad), dtype=bool)], axis=1)
    return np.packbits(mask, axis=1, bitorder="little").view(np.uint64)


def _plan(dx, dy, same, kx, ky, cols):
    """``(groups, rows_x, rows_y)`` of the merged classes (columns, then row indices per
    operand), or ``None`` when the classes do not pay; see the module."""
    from flexsparse.kernels.cpu import colclass
    from flexsparse.kernels.cpu.densify import _gemm_seconds

    model = plan_model(blas_threads())
    key = (kx.tobytes(), ky.tobytes(), cols.tobytes(), dx.shape, dy.shape, same, model.tobytes())
    if key in _PLANS:
        return _PLANS[key]
    order = np.lexsort((ky[cols], kx[cols]))
    sc = cols[order]
    brk = np.flatnonzero((np.diff(kx[sc]) != 0) | (np.diff(ky[sc]) != 0)) + 1
    starts = np.concatenate(([0], brk))
    plan = None
    if starts.shape[0] <= _limits.CLASS_MAX_CLASSES:
        reps = sc[starts]
        bits_x = _bitsets(dx, reps)
        bits_y = bits_x if same else _bitsets(dy, reps)
        sizes = np.diff(np.concatenate((starts, [sc.shape[0]]))).astype(np.int64)
        costs = np.array((_limits.CLASS_GATHER_CELL_SECONDS, _limits.ZERO_TAIL_SCATTER_CELL_SECONDS,
                          _limits.CLASS_STEP_SECONDS))
        group, seconds = colclass.merge_classes(bits_x, bits_y, sizes, model, same, costs)
        plain = _gemm_seconds(dx.shape[0], dy.shape[0], dx.shape[1], same, model)
        if seconds + _limits.CLASS_FIXED_SECONDS < plain:
            cls = np.repeat(group, sizes)  # merged group of every sorted column
            plan = []
            for g in np.unique(group):
                members = np.flatnonzero(group == g)
                gcols = np.sort(sc[cls == g])
                rx = np.flatnonzero(np.bitwise_or.reduce(
                    np.unpackbits(bits_x[members].view(np.uint8), axis=1, bitorder="little"), axis=0)[:dx.shape[0]])
                ry = rx if same else np.flatnonzero(np.bitwise_or.reduce(
                    np.unpackbits(bits_y[members].view(np.uint8), axis=1, bitorder="little"), axis=0)[:dy.shape[0]])
                plan.append((gcols, rx.astype(np.int64), ry.astype(np.int64)))
    remember(_PLANS, key, plan)
    return plan


def large_enough(n_rows: int, n_cols: int, k: int, same: bool) -> bool:
    """Whether the plain product of ``[n_rows, k]`` and ``[n_cols, k]`` is modelled to take at
    least ``_limits.CLASS_MIN_PLAIN_SECONDS`` (smaller ones lose more to the densify and the
    keys than their classes can save)."""
    from flexsparse.kernels.cpu.densify import _gemm_seconds

    model = plan_model(blas_threads())
    return _gemm_seconds(n_rows, n_cols, k, same, model) >= _limits.CLASS_MIN_PLAIN_SECONDS


def class_product(dx: np.ndarray, dy: np.ndarray, same: bool) -> np.ndarray | object | None:
    """``dx[R, K] @ dy[C, K]^T`` by the class GEMMs (see the module); ``NOT_TAKEN`` when
    the operands are not block-structured enough to pay; ``None`` when a value is inf or nan.
    ``same``: ``dy`` is ``dx`` (SYRK classes)."""
    from flexsparse.kernels.cpu import colclass
    from flexsparse.kernels.cpu.densify import scatter_add_block

    kx, cx, bad = colclass.column_keys(dx, _salt(dx.shape[0]))
    if bad:
        return None
    if same:
        ky, cy = kx, cx
    else:
        ky, cy, bad = colclass.column_keys(dy, _salt(dy.shape[0]))
        if bad:
            return None
    cols = np.flatnonzero((cx > 0) & (cy > 0))
    out = np.zeros((dx.shape[0], dy.shape[0]), dtype=np.result_type(dx.dtype, dy.dtype))
    if cols.shape[0] == 0:
        return out
    plan = _plan(dx, dy, same, kx, ky, cols)
    if plan is None:
        return NOT_TAKEN
    for gcols, rx, ry in plan:
        xs = np.empty((rx.shape[0], gcols.shape[0]), dtype=dx.dtype)
        if colclass.gather_block(dx, rx, gcols, xs) != cx[gcols].sum():
            return NOT_TAKEN  # two row sets shared a key: the classes are not exact
        if same:
            blk = xs @ xs.T
        else:
            ys = np.empty((ry.shape[0], gcols.shape[0]), dtype=dy.dtype)
            if colclass.gather_block(dy, ry, gcols, ys) != cy[gcols].sum():
                return NOT_TAKEN
            blk = matmul_narrow_first(xs, ys.T)
        scatter_add_block(out, rx, ry, blk)
    return out
