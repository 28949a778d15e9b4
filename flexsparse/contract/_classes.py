"""Class product of two dense-ish operands whose exact zeros fall in blocks: ``x[R, K] .
y[C, K]`` computed as one small dense GEMM per class of contracted columns.

Density-fitted integrals are the case in point: point-group symmetry makes ``(ab|Q)`` vanish
unless the irreducible representations of ``ab`` and ``Q`` match, and the files store most
of those zeros. The chemistry tensors in ``shared/data`` hold 41% (vv) and 30% (ov) nonzero
values, and the three products ``abQ,icQ->abic``, ``iaQ,jbQ->iajb``, ``abQ,cdQ->abcd`` need
16%, 17% and 19% of the dense multiply-adds.

Algorithm (:func:`class_product`, on operands already densified and reshaped to
``[R, K]`` and ``[C, K]``):

1. Keys (``kernels.cpu.colclass``): per contracted column, a salted sum of the rows holding
   a nonzero, in ``x`` and in ``y``, and their counts, with a flag for any inf or nan (those
   take the full path: skipped zeros would hide ``0 * inf``). :func:`dense_keys` takes them
   inside the densify of a sorted COO (``densify.sorted_coo_to_dense`` with keys: no second
   read of the dense form), else by ``column_keys`` after it. Columns with no nonzero in
   either operand drop out.
2. Classes: the columns of equal key pairs (one sort). More than
   ``_limits.CLASS_MAX_CLASSES`` classes: not block-structured, ``NOT_TAKEN`` (the zero-tail module's).
3. Plan (``colclass.merge_classes``, remembered per key set and BLAS threads): each class's
   row sets as bitsets, merged greedily while the modelled time falls; taken when the merged
   classes are modelled faster than the plain GEMM by ``_limits.CLASS_FIXED_SECONDS``. Its
   index arrays are flat with per-class pointers (:func:`_flat`).
4. Execute: one compiled gather of every class's rows and columns of each operand into one
   buffer (``colclass.gather_classes``, which also counts the nonzeros gathered: a shortfall
   against the columns' counts means two row sets shared a key, and the plain product is
   taken), one GEMM per class on views of it (a SYRK for a self-product, as NumPy's
   ``a @ a.T``; each cross-product GEMM the way round ``_orient`` measured faster), and one compiled
   scatter-add of all blocks into the zeroed output (``colclass.scatter_classes``).

Where it runs: ``contract._dense`` takes it for two dense-enough COO operands in the
zero-tail layout (``abQ,icQ->abic``, ``abQ,cdQ->abcd``) whose plain GEMM or SYRK is modelled
at ``_limits.CLASS_MIN_PLAIN_SECONDS`` or more; when the classes do not pay, the zero-tail
steps run on the dense forms already made (one plain GEMM where the tails do not pay
either). ``abQ,icQ->abic`` from COO on a 2-vCPU Zen 5 guest: 344 us against 377 us by the
zero-tail path (NumPy 397 us); the classes' GEMMs there are narrow (14-71 columns), and
before the fused key pass and the one-call gathers (round 21, Zen 4) they lost to the
zero-tail path (1.174x NumPy).

Formats: C-contiguous float or complex ``ndarray`` operands of one dtype; the result a
C-contiguous ``ndarray [R, C]``. Cost: O((R + C) K) for the keys, O(n^2) for the plan (n
classes, remembered), then per class its gather, GEMM and scatter (chemistry ``abQ,cdQ->abcd``:
4-6 SYRKs of 12-17M multiply-adds against one of 62M; 0.83-0.85x NumPy from COO, min of 200
interleaved calls, against 1.05-1.06x by the plain SYRK).
"""

from __future__ import annotations

import numpy as np

from flexsparse import _limits
from flexsparse._orient import matmul_oriented
from flexsparse.contract._zero_tail import NOT_TAKEN, blas_threads, plan_model, remember, scatter_rows
from flexsparse.formats.coo import COO

__all__ = ["class_product", "dense_keys", "large_enough"]

_SALT: list = []
#: Plans by (keys, columns, shapes, BLAS threads): the same operands' structure plans once. Read only.
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


def _plan(dx, dy, same, kx, ky, cols, threads):
    """The merged classes as flat arrays (see :func:`_flat`), or ``None`` when the classes
    do not pay; see the module. ``threads``: the BLAS threads in effect."""
    from flexsparse.kernels.cpu import colclass
    from flexsparse.kernels.cpu.densify import _gemm_seconds

    key = (kx.tobytes(), ky.tobytes(), cols.tobytes(), dx.shape, dy.shape, same, threads)
    if key in _PLANS:
        return _PLANS[key]
    model = plan_model(threads)
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
            groups = []
            for g in np.unique(group):
                members = np.flatnonzero(group == g)
                rx = np.flatnonzero(np.bitwise_or.reduce(
                    np.unpackbits(bits_x[members].view(np.uint8), axis=1, bitorder="little"), axis=0)[:dx.shape[0]])
                ry = rx if same else np.flatnonzero(np.bitwise_or.reduce(
                    np.unpackbits(bits_y[members].view(np.uint8), axis=1, bitorder="little"), axis=0)[:dy.shape[0]])
                groups.append((np.sort(sc[cls == g]), rx, ry))
            plan = _flat(groups)
    remember(_PLANS, key, plan)
    return plan


def _flat(groups: list) -> tuple:
    """``(cols, col_ptr, rows_x, x_ptr, rows_y, y_ptr, steps)`` of the merged classes
    ``groups`` (``(columns, rows of x, rows of y)`` each): the index arrays concatenated with
    CSR-like pointers, and ``steps`` each class's ``(x offset, rows x, y offset, rows y,
    columns, block offset)`` in the gathered and product buffers."""
    def cat(parts):
        ptr = np.zeros(len(parts) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([p.shape[0] for p in parts])
        return np.concatenate(parts).astype(np.int64), ptr

    cols, col_ptr = cat([g[0] for g in groups])
    rows_x, x_ptr = cat([g[1] for g in groups])
    rows_y, y_ptr = cat([g[2] for g in groups])
    steps = []
    xo = yo = bo = 0
    for gc, rx, ry in groups:
        kg, mx, my = gc.shape[0], rx.shape[0], ry.shape[0]
        steps.append((xo, mx, yo, my, kg, bo))
        xo, yo, bo = xo + mx * kg, yo + my * kg, bo + mx * my
    return cols, col_ptr, rows_x, x_ptr, rows_y, y_ptr, tuple(steps)


def large_enough(n_rows: int, n_cols: int, k: int, same: bool) -> bool:
    """Whether the plain product of ``[n_rows, k]`` and ``[n_cols, k]`` is modelled to take at
    least ``_limits.CLASS_MIN_PLAIN_SECONDS`` (smaller ones lose more to the densify and the
    keys than their classes can save)."""
    from flexsparse.kernels.cpu.densify import _gemm_seconds

    model = plan_model(blas_threads())
    return _gemm_seconds(n_rows, n_cols, k, same, model) >= _limits.CLASS_MIN_PLAIN_SECONDS


def dense_keys(op: COO, n: int, k: int, full: np.ndarray, nf: int) -> tuple:
    """``(dense [n, k], keys, counts, support lengths, whether a value is inf or nan)`` of a
    COO whose trailing modes span ``k`` cells (``colclass.column_keys`` of its dense form, and
    each row's last stored cell + 1 as the zero-tail path counts it; ``full``: its row-major
    strides, ``nf``: its free modes): a sorted COO in long runs is densified and keyed in one
    pass (``densify.sorted_coo_to_dense`` with the keys), any other is added into a zeroed
    array (``_zero_tail.scatter_rows``: run by run where it can) and keyed after."""
    from flexsparse.kernels.cpu import colclass
    from flexsparse.kernels.cpu.densify import long_runs, sorted_coo_to_dense

    if op.canonical and op.nnz and long_runs(op.coords, full, _limits.DENSIFY_RUN_PROBES,
                                             _limits.DENSIFY_MIN_MEAN_RUN):
        flat = np.empty(n * k, dtype=op.dtype)
        keys, counts, sup = np.zeros(k, dtype=np.uint64), np.zeros(k, dtype=np.int64), np.zeros(n, dtype=np.int64)
        bad = sorted_coo_to_dense(op.coords, op.data, full, flat, True, _salt(n), keys, counts, sup)
        return flat.reshape(n, k), keys, counts, sup, bool(bad)
    sup, dense, flag = scatter_rows(op, full, nf, k, n)
    keys, counts, bad = colclass.column_keys(dense, _salt(n))
    return dense, keys, counts, sup, bool(bad) or flag


def class_product(dx: np.ndarray, dy: np.ndarray, same: bool, keys_x: tuple | None = None,
                  keys_y: tuple | None = None) -> np.ndarray | object | None:
    """``dx[R, K] @ dy[C, K]^T`` by the class GEMMs (see the module); ``NOT_TAKEN`` when
    the operands are not block-structured enough to pay; ``None`` when a value is inf or nan.
    ``same``: ``dy`` is ``dx`` (SYRK classes). ``keys_x``/``keys_y``: the operands'
    ``(keys, counts)`` when a fused densify took them (their values then checked already)."""
    from flexsparse.kernels.cpu import colclass

    def keyed(d, given):
        if given is not None:
            return given
        keys, counts, bad = colclass.column_keys(d, _salt(d.shape[0]))
        return None if bad else (keys, counts)

    kxc = keyed(dx, keys_x)
    kyc = kxc if same else keyed(dy, keys_y)
    if kxc is None or kyc is None:
        return None
    (kx, cx), (ky, cy) = kxc, kyc
    cols = np.flatnonzero((cx > 0) & (cy > 0))
    dtype = np.result_type(dx.dtype, dy.dtype)
    out = np.zeros((dx.shape[0], dy.shape[0]), dtype=dtype)
    if cols.shape[0] == 0:
        return out
    threads = blas_threads()
    plan = _plan(dx, dy, same, kx, ky, cols, threads)
    if plan is None:
        return NOT_TAKEN
    pcols, col_ptr, rows_x, x_ptr, rows_y, y_ptr, steps = plan
    last = steps[-1]
    xbuf = np.empty(last[0] + last[1] * last[4], dtype=dx.dtype)
    # a shortfall of the nonzeros gathered means two row sets shared a key: not exact
    if colclass.gather_classes(dx, rows_x, x_ptr, pcols, col_ptr, xbuf) != cx[pcols].sum():
        return NOT_TAKEN
    ybuf = xbuf
    if not same:
        ybuf = np.empty(last[2] + last[3] * last[4], dtype=dy.dtype)
        if colclass.gather_classes(dy, rows_y, y_ptr, pcols, col_ptr, ybuf) != cy[pcols].sum():
            return NOT_TAKEN
    blocks = np.empty(last[5] + last[1] * last[3], dtype=dtype)
    flip = np.zeros(len(steps), dtype=np.bool_)  # class g's block holds its product transposed
    for g, (xo, mx, yo, my, kg, bo) in enumerate(steps):
        xs = xbuf[xo:xo + mx * kg].reshape(mx, kg)
        ys = ybuf[yo:yo + my * kg].reshape(my, kg)
        block = blocks[bo:bo + mx * my]
        if same:  # a SYRK either way round
            np.matmul(xs, ys.T, out=block.reshape(mx, my))
        else:
            flip[g] = matmul_oriented(xs, ys.T, out=block, threads=threads)[1]
    colclass.scatter_classes(out, rows_x, x_ptr, rows_y, y_ptr, blocks, flip)
    return out
